/**
 * Fused per-example ("row") kernels for the solvers' bookkeeping on the wasm and cpu backends:
 * per-example dot products over a list of tensors, per-example "all finite" over a list, and a
 * row-wise select. Each replaces 4–25 tfjs kernels per call (reshapes, casts, sums, `IsFinite`,
 * `All`, a full-shape mask and `Select`), several of which are slow scalar loops on wasm
 * (measured on a 128×784 tensor: `Select` 0.3 ms, a float→bool `Cast` 0.3 ms, an `Add` 0.05 ms).
 *
 * They are plain loops over the backend's typed arrays (the wasm heap, or the cpu backend's
 * buffers), registered under this package's own kernel names the first time they are needed, and
 * used only where no gradient is taped (the solvers' state updates). On any other backend, or
 * while a gradient tape is recording, the callers in `solvers/batched.ts` use the equivalent tfjs
 * ops. Values: the row select copies rows bit for bit; the dot products accumulate in float64 and
 * round once (tfjs' `Sum` accumulates in float32), so they agree with the tfjs ops to float32
 * rounding.
 *
 * @packageDocumentation
 */
import * as tf from '@tensorflow/tfjs-core';
import {simdRowReductions} from './simd.js';

type TensorInfo = tf.TensorInfo;
export type Arr = Float32Array | Int32Array | Uint8Array;

/** Kernel names (prefixed: they are not tfjs kernels). */
export const ROW_DOTS = 'TfjsDeepAdversarialRowDots';
export const ROWS_FINITE = 'TfjsDeepAdversarialRowsFinite';
export const SELECT_ROWS = 'TfjsDeepAdversarialSelectRows';
export const ROW_STATS = 'TfjsDeepAdversarialRowStats';

/** Reading and allocating on a backend whose data are host-visible typed arrays. */
export interface HostIO {
  /** allocates every output first (wasm: allocation may grow the heap and detach earlier views). */
  alloc(shape: number[], dtype: tf.DataType): TensorInfo;
  view(t: TensorInfo): Arr;
}

interface WasmLike {
  makeOutput(shape: number[], dtype: tf.DataType): TensorInfo;
  typedArrayFromHeap(t: TensorInfo): Arr;
}
interface CpuLike {
  data: {get(id: object): {values?: unknown}};
  makeTensorInfo(shape: number[], dtype: tf.DataType, values?: Arr): TensorInfo;
}

export function hostIO(backend: unknown): HostIO {
  const w = backend as WasmLike;
  if (typeof w.typedArrayFromHeap === 'function' && typeof w.makeOutput === 'function') {
    return {alloc: (shape, dtype) => w.makeOutput(shape, dtype), view: (t) => w.typedArrayFromHeap(t)};
  }
  const c = backend as CpuLike;
  return {
    alloc: (shape, dtype) => {
      const size = shape.reduce((a, b) => a * b, 1);
      const values = dtype === 'float32' ? new Float32Array(size) : dtype === 'int32' ? new Int32Array(size) : new Uint8Array(size);
      return c.makeTensorInfo(shape, dtype, values);
    },
    view: (t) => {
      const v = c.data.get(t.dataId).values;
      if (!(v instanceof Float32Array || v instanceof Int32Array || v instanceof Uint8Array)) {
        throw new Error(`row kernels: unsupported cpu buffer for dtype ${t.dtype}`);
      }
      return v;
    },
  };
}

/** The inputs t0, t1, … of a list kernel, in order. */
function listInputs(inputs: tf.NamedTensorInfoMap, n: number, prefix = 't'): TensorInfo[] {
  const out: TensorInfo[] = [];
  for (let i = 0; i < n; i++) {
    const t = inputs[`${prefix}${i}`];
    if (t == null) throw new Error(`row kernels: missing input ${prefix}${i}`);
    out.push(t);
  }
  return out;
}

/** Σ a[j]·b[j] for j in [start, end), in float64 with four independent partial sums (no dependency chain). */
function dotRange(a: Float32Array, b: Float32Array, start: number, end: number): number {
  let s0 = 0;
  let s1 = 0;
  let s2 = 0;
  let s3 = 0;
  let j = start;
  for (; j + 3 < end; j += 4) {
    s0 += a[j] * b[j];
    s1 += a[j + 1] * b[j + 1];
    s2 += a[j + 2] * b[j + 2];
    s3 += a[j + 3] * b[j + 3];
  }
  for (; j < end; j++) s0 += a[j] * b[j];
  return s0 + s1 + s2 + s3;
}

/** Σ v[j]² for j in [start, end), in float64 with four independent partial sums (each entry read once). */
function squaresRange(v: Float32Array, start: number, end: number): number {
  let s0 = 0;
  let s1 = 0;
  let s2 = 0;
  let s3 = 0;
  let j = start;
  for (; j + 3 < end; j += 4) {
    const x0 = v[j];
    const x1 = v[j + 1];
    const x2 = v[j + 2];
    const x3 = v[j + 3];
    s0 += x0 * x0;
    s1 += x1 * x1;
    s2 += x2 * x2;
    s3 += x3 * x3;
  }
  for (; j < end; j++) s0 += v[j] * v[j];
  return s0 + s1 + s2 + s3;
}

/** Every v[j], j in [start, end), is finite (x·0 is 0 for finite x, NaN for ±Inf and NaN; four partial sums). */
function finiteRange(v: Float32Array, start: number, end: number): boolean {
  let s0 = 0;
  let s1 = 0;
  let s2 = 0;
  let s3 = 0;
  let j = start;
  for (; j + 3 < end; j += 4) {
    s0 += v[j] * 0;
    s1 += v[j + 1] * 0;
    s2 += v[j + 2] * 0;
    s3 += v[j + 3] * 0;
  }
  for (; j < end; j++) s0 += v[j] * 0;
  return s0 + s1 + s2 + s3 === 0;
}

/** Σ over the non-batch axes of Σ_i a_i·b_i, per row: inputs a0, b0, a1, b1, … (float32), attr n (pairs). */
function rowDots({inputs, backend, attrs}: {inputs: tf.NamedTensorInfoMap; backend: unknown; attrs?: tf.NamedAttrMap}): TensorInfo {
  const n = Number(attrs?.n);
  const as = listInputs(inputs, n, 'a');
  const bs = listInputs(inputs, n, 'b');
  const B = as[0].shape[0] ?? 1;
  const io = hostIO(backend);
  const out = io.alloc([B], 'float32');
  const acc = new Float64Array(B);
  for (let i = 0; i < n; i++) {
    const a = io.view(as[i]);
    const b = io.view(bs[i]);
    const m = a.length / B;
    for (let r = 0; r < B; r++) acc[r] += dotRange(a as Float32Array, b as Float32Array, r * m, (r + 1) * m);
  }
  (io.view(out) as Float32Array).set(acc);
  return out;
}

/** Per row: every entry of every input t0, t1, … is finite (bool [B]); attr n. */
function rowsFinite({inputs, backend, attrs}: {inputs: tf.NamedTensorInfoMap; backend: unknown; attrs?: tf.NamedAttrMap}): TensorInfo {
  const n = Number(attrs?.n);
  const ts = listInputs(inputs, n);
  const B = ts[0].shape[0] ?? 1;
  const io = hostIO(backend);
  const out = io.alloc([B], 'bool');
  const ok = new Uint8Array(B).fill(1);
  const simd = simdRowReductions(backend); // on wasm: the same test as SIMD code on the backend's memory
  for (const t of ts) {
    if (t.dtype !== 'float32') continue; // integers and bools are always finite
    const m = t.shape.slice(1).reduce((a, c) => a * c, 1);
    if (simd && m % 4 === 0) {
      for (let r = 0; r < B; r++) if (ok[r] === 1 && !simd.finite(t, r, m)) ok[r] = 0;
      continue;
    }
    const v = io.view(t);
    for (let r = 0; r < B; r++) if (ok[r] === 1 && !finiteRange(v as Float32Array, r * m, (r + 1) * m)) ok[r] = 0;
  }
  io.view(out).set(ok);
  return out;
}

/** Row b of `a` where mask[b], else row b of `b` (same shape and dtype; mask bool [B]). */
function selectRows({inputs, backend}: {inputs: tf.NamedTensorInfoMap; backend: unknown}): TensorInfo {
  const {mask, a, b} = inputs as Record<string, TensorInfo>;
  const io = hostIO(backend);
  const out = io.alloc(a.shape, a.dtype);
  const mv = io.view(mask);
  const av = io.view(a);
  const bv = io.view(b);
  const ov = io.view(out);
  const B = mv.length;
  const m = av.length / Math.max(1, B);
  // one block copy per run of rows taken from the same operand (masks are mostly long runs;
  // a copy per row cost ≈ 0.5 ms per solver iteration on the 128-row MLP of bench/deep_cost.ts)
  for (let r = 0; r < B; ) {
    const fromA = mv[r] !== 0;
    let end = r + 1;
    while (end < B && (mv[end] !== 0) === fromA) end++;
    ov.set((fromA ? av : bv).subarray(r * m, end * m), r * m);
    r = end;
  }
  return out;
}

/**
 * Per row, in one float32 output [2B]: [0, B) 1 where every entry of the gradients g0, g1, … and
 * of the other inputs t0, t1, … is finite, else 0; [B, 2B) Σ_i ‖g_i row‖² (as {@link rowDots} of
 * the gradients with themselves: the same float64 sums, rounded once). Attrs n (gradients), m
 * (others). The gradients are read once: their float64 sum of squares is finite exactly when every
 * entry is (a finite float32 squares to at most ≈ 1.2e77).
 */
function rowStats({inputs, backend, attrs}: HostKernelArgs): TensorInfo {
  const n = Number(attrs?.n);
  const gs = listInputs(inputs, n, 'g');
  const ts = listInputs(inputs, Number(attrs?.m), 't');
  const B = gs[0].shape[0] ?? 1;
  const io = hostIO(backend);
  const out = io.alloc([2 * B], 'float32');
  const acc = new Float64Array(B);
  // on wasm, the same reductions as SIMD code on the backend's memory (src/kernels/simd.ts)
  const simd = simdRowReductions(backend);
  const rowLength = (t: TensorInfo) => t.shape.slice(1).reduce((a, c) => a * c, 1);
  for (const g of gs) {
    const k = rowLength(g);
    if (simd && k % 4 === 0) {
      for (let r = 0; r < B; r++) acc[r] += simd.squares(g, r, k);
      continue;
    }
    const v = io.view(g) as Float32Array;
    for (let r = 0; r < B; r++) acc[r] += squaresRange(v, r * k, (r + 1) * k); // = dotRange(v, v, …), bit for bit
  }
  const ok = new Uint8Array(B);
  for (let r = 0; r < B; r++) ok[r] = Number.isFinite(acc[r]) ? 1 : 0;
  for (const t of ts) {
    if (t.dtype !== 'float32') continue;
    const k = rowLength(t);
    if (simd && k % 4 === 0) {
      for (let r = 0; r < B; r++) if (ok[r] === 1 && !simd.finite(t, r, k)) ok[r] = 0;
      continue;
    }
    const v = io.view(t) as Float32Array;
    for (let r = 0; r < B; r++) if (ok[r] === 1 && !finiteRange(v, r * k, (r + 1) * k)) ok[r] = 0;
  }
  const ov = io.view(out) as Float32Array;
  for (let r = 0; r < B; r++) {
    ov[r] = ok[r];
    ov[B + r] = acc[r];
  }
  return out;
}

/** Arguments a host kernel receives. */
export interface HostKernelArgs {
  inputs: tf.NamedTensorInfoMap;
  backend: unknown;
  attrs?: tf.NamedAttrMap;
}

const KERNELS: [string, (args: HostKernelArgs) => TensorInfo | TensorInfo[]][] = [
  [ROW_DOTS, rowDots],
  [ROWS_FINITE, rowsFinite],
  [SELECT_ROWS, selectRows],
  [ROW_STATS, rowStats],
];

/** Backends whose tensors live in host typed arrays (the row kernels run there). */
const HOST_BACKENDS = ['wasm', 'cpu'];
const registered = new Set<string>();
let enabled = true;

/**
 * Turns the fused host kernels off (`false`: every caller uses its tfjs-op fallback) or back on.
 * For tests and A/B measurements. @internal
 */
export function setHostKernelsEnabled(on: boolean): void {
  enabled = on;
}

/** Whether the host (and SIMD) kernels are enabled (see {@link setHostKernelsEnabled}). @internal */
export function hostKernelsEnabled(): boolean {
  return enabled;
}

/**
 * True when the fused row kernels can run now: the active backend is wasm or cpu (registering the
 * kernels for it on first use) and no gradient tape is recording (they have no gradients).
 */
export function rowKernelsAvailable(): boolean {
  if (!enabled) return false;
  if ((tf.engine() as unknown as {isTapeOn(): boolean}).isTapeOn()) return false;
  const name = tf.getBackend();
  if (!HOST_BACKENDS.includes(name)) return false;
  if (!registered.has(name)) {
    for (const [kernelName, kernelFunc] of KERNELS) {
      if (tf.getKernel(kernelName, name) == null) tf.registerKernel({kernelName, backendName: name, kernelFunc: kernelFunc as unknown as tf.KernelFunc});
    }
    registered.add(name);
  }
  return true;
}

/** Per-example Σ_i Σ a_i·b_i (float32 tensors, same shapes pairwise, one batch size) as one kernel. */
export function rowDotsKernel(as: tf.Tensor[], bs: tf.Tensor[]): tf.Tensor1D {
  const inputs: Record<string, tf.Tensor> = {};
  as.forEach((a, i) => {
    inputs[`a${i}`] = a;
    inputs[`b${i}`] = bs[i];
  });
  return tf.engine().runKernel(ROW_DOTS, inputs as unknown as tf.NamedTensorMap, {n: as.length}) as tf.Tensor1D;
}

/** Per-example "every entry finite" over a list of tensors sharing the batch size, as one kernel. */
export function rowsFiniteKernel(ts: tf.Tensor[]): tf.Tensor1D {
  const inputs: Record<string, tf.Tensor> = {};
  ts.forEach((t, i) => (inputs[`t${i}`] = t));
  return tf.engine().runKernel(ROWS_FINITE, inputs as unknown as tf.NamedTensorMap, {n: ts.length}) as tf.Tensor1D;
}

/** Row-wise select (mask bool [B]; a, b same shape and dtype) as one kernel. */
export function selectRowsKernel(mask: tf.Tensor, a: tf.Tensor, b: tf.Tensor): tf.Tensor {
  return tf.engine().runKernel(SELECT_ROWS, {mask, a, b} as unknown as tf.NamedTensorMap) as tf.Tensor;
}

/**
 * Per-example finiteness of `grads` and `others` together, and Σ_i ‖grads_i row‖², as one kernel:
 * float32 [2B] = [flags (1/0), squared norms] (see the kernel `rowStats`). All tensors share the
 * batch size B; the gradients are float32.
 */
export function rowStatsKernel(grads: tf.Tensor[], others: tf.Tensor[]): tf.Tensor1D {
  const inputs: Record<string, tf.Tensor> = {};
  grads.forEach((g, i) => (inputs[`g${i}`] = g));
  others.forEach((t, i) => (inputs[`t${i}`] = t));
  return tf.engine().runKernel(ROW_STATS, inputs as unknown as tf.NamedTensorMap, {n: grads.length, m: others.length}) as tf.Tensor1D;
}
