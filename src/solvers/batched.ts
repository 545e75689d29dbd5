/**
 * Per-example ("batched") tensor helpers shared by the solvers, the attacks and training.
 *
 * Every solver treats a list of tensors of shape `[B, ...]` as B independent problems: dot
 * products, norms and selections are per example (per row), summed over the non-batch axes of
 * EVERY tensor of the list. These are the only copies of those helpers in the package.
 *
 * @packageDocumentation
 */
import * as tf from '@tensorflow/tfjs-core';
import type {BatchObjective, SolverResult} from './types.js';
import {rowDotsKernel, rowKernelsAvailable, rowsFiniteKernel, selectRowsKernel} from '../kernels/rows.js';
import {simdKernelsAvailable, stepRowsKernel} from '../kernels/simd.js';

/** Smallest positive divisor used to guard float32 divisions. */
export const TINY = 1e-30;

/**
 * Checks that `xs` is a non-empty list of tensors of rank ≥ 1 sharing their first dimension.
 * @returns the batch size B.
 */
export function checkBatch(xs: tf.Tensor[]): number {
  if (!Array.isArray(xs) || xs.length === 0) throw new Error('solver: x0 must contain at least one tensor');
  const B = xs[0].shape[0];
  for (const x of xs) {
    if (x.rank < 1 || x.shape[0] !== B) {
      throw new Error(
        `solver: every tensor of x0 must have shape [B, ...] with the same B; got ${xs
          .map((t) => `[${t.shape.join(',')}]`)
          .join(', ')}`,
      );
    }
  }
  return B;
}

/** Free scalars per example, summed over the list. */
export function freeDims(xs: tf.Tensor[], B: number): number {
  return xs.reduce((acc, x) => acc + (B > 0 ? x.size / B : 0), 0);
}

/** float32 copy (a cheap clone sharing the buffer when already float32). */
export function toFloatCopy(x: tf.Tensor): tf.Tensor {
  return x.dtype === 'float32' ? tf.clone(x) : tf.cast(x, 'float32');
}

/** Reshapes a per-example tensor [B] to [B, 1, ..., 1] so that it broadcasts against `t`. */
export function expandAs(v: tf.Tensor, t: tf.Tensor): tf.Tensor {
  if (t.rank <= 1) return v;
  return tf.reshape(v, [v.shape[0], ...new Array<number>(t.rank - 1).fill(1)]);
}

/** Sums every axis but the first: `[B, ...] → [B]`. */
export function sumPerExample(t: tf.Tensor): tf.Tensor1D {
  if (t.rank <= 1) return t as tf.Tensor1D;
  return tf.sum(tf.reshape(t, [t.shape[0], -1]), 1) as tf.Tensor1D;
}

/** Max over every axis but the first: `[B, ...] → [B]`. */
export function maxPerExample(t: tf.Tensor): tf.Tensor1D {
  if (t.rank <= 1) return t as tf.Tensor1D;
  return tf.max(tf.reshape(t, [t.shape[0], -1]), 1) as tf.Tensor1D;
}

/** Per-row "all finite" over every non-batch axis: `[B, ...] → [B]` (bool). */
export function rowsFinite(t: tf.Tensor): tf.Tensor1D {
  const f = tf.isFinite(t);
  if (t.rank <= 1) return f as tf.Tensor1D;
  return tf.all(tf.reshape(f, [t.shape[0], -1]), 1) as tf.Tensor1D;
}

/** Per-row "all finite" over every tensor of a list sharing the batch size B: `[B]` (bool); one fused kernel on wasm/cpu. */
export function rowsFiniteAll(ts: tf.Tensor[], B: number): tf.Tensor1D {
  if (ts.length > 0 && rowKernelsAvailable()) return rowsFiniteKernel(ts);
  let ok = tf.cast(tf.ones([B]), 'bool') as tf.Tensor1D;
  for (const t of ts) ok = tf.logicalAnd(ok, rowsFinite(t)) as tf.Tensor1D;
  return ok;
}

/** Per-example Euclidean norm of one tensor: `[B, ...] → [B]`. */
export function normPerRow(t: tf.Tensor): tf.Tensor1D {
  return tf.sqrt(sumPerExample(tf.square(t))) as tf.Tensor1D;
}

/**
 * Row-wise select: `a` where the per-example `mask` ([B], bool) is true, else `b` (same shapes).
 * The mask is broadcast with a multiply instead of letting `tf.where` broadcast it: tfjs
 * implements the latter with a `Tile` kernel, which on the wasm backend cost about as much as
 * the network's matrix products (measured: 87 Tile kernels took 263 ms of a 10-evaluation attack,
 * the 60 BatchMatMuls 368 ms). NaN/Inf in the unselected operand do not leak through.
 */
export function whereRows(mask: tf.Tensor, a: tf.Tensor, b: tf.Tensor): tf.Tensor {
  if (fusedRowSelect(mask, a, b)) return selectRowsKernel(mask, a, b);
  if (a.rank <= 1) return select(mask, a, b);
  return select(rowMask(mask, a), a, b);
}

/** The fused row select applies: host backend, no tape, bool mask [B], operands of one shape and dtype. */
function fusedRowSelect(mask: tf.Tensor, a: tf.Tensor, b: tf.Tensor): boolean {
  return (
    mask.dtype === 'bool' &&
    mask.rank === 1 &&
    a.rank >= 1 &&
    mask.shape[0] === a.shape[0] &&
    a.dtype === b.dtype &&
    tf.util.arraysEqual(a.shape, b.shape) &&
    rowKernelsAvailable()
  );
}

/**
 * A row-wise select of several pairs of lists by ONE per-example mask: `sel(a, b)[i]` is
 * `whereRows(mask, a[i], b[i])`. Without the fused kernel, the full-shape mask of each tensor of
 * `like` is built once and shared by every call.
 */
export function rowSelector(mask: tf.Tensor, like: tf.Tensor[]): (a: tf.Tensor[], b: tf.Tensor[]) => tf.Tensor[] {
  if (like.every((t) => fusedRowSelect(mask, t, t))) return (a, b) => a.map((ai, i) => selectRowsKernel(mask, ai, b[i]));
  const masks = like.map((t) => rowMask(mask, t));
  return (a, b) => a.map((ai, i) => select(masks[i], ai, b[i]));
}

/** The per-example mask [B] (bool) broadcast to the shape of `like` (bool), for {@link select}. */
export function rowMask(mask: tf.Tensor, like: tf.Tensor): tf.Tensor {
  if (like.rank <= 1) return mask;
  return tf.cast(tf.mul(tf.onesLike(like), expandAs(tf.cast(mask, 'float32'), like)), 'bool');
}

/**
 * `tf.where(cond, a, b)` for operands of one shape and dtype: the `Select` kernel called directly.
 * `tf.where` first passes all three operands through `broadcastTo`, which clones each of them
 * even when no broadcast is needed, and on the wasm backend a clone is a full copy (measured:
 * three copies per select, a third of a deep-attack iteration's kernels). Same values and
 * gradient (the kernel's registered one); anything else goes to `tf.where`.
 */
export function select(cond: tf.Tensor, a: tf.Tensor, b: tf.Tensor): tf.Tensor {
  // The wasm backend's Select (also behind tf.where) writes 4-byte results into a bool output: wrong
  // values and writes past the end of the output buffer. Bool operands go through logical ops.
  if (a.dtype === 'bool' && b.dtype === 'bool') {
    const c = cond.dtype === 'bool' ? cond : tf.notEqual(cond, 0);
    return tf.logicalOr(tf.logicalAnd(c, a), tf.logicalAnd(tf.logicalNot(c), b));
  }
  if (
    cond.dtype === 'bool' &&
    a.dtype === b.dtype &&
    tf.util.arraysEqual(cond.shape, a.shape) &&
    tf.util.arraysEqual(a.shape, b.shape)
  ) {
    return tf.engine().runKernel('Select', {condition: cond, t: a, e: b} as unknown as tf.NamedTensorMap) as tf.Tensor;
  }
  return tf.where(cond, a, b);
}

/** Per-example dot product over ALL tensors of the lists: Σ_i Σ_{non-batch axes} a_i·b_i → [B]. */
export function batchDot(as: tf.Tensor[], bs: tf.Tensor[], B: number): tf.Tensor1D {
  if (as.length > 0 && as.every((a, i) => a.dtype === 'float32' && bs[i].dtype === 'float32' && a.rank >= 1) && rowKernelsAvailable()) {
    return rowDotsKernel(as, bs);
  }
  const parts = as.map((a, i) => {
    const prod = tf.mul(a, bs[i]);
    return a.rank <= 1 ? prod : tf.sum(tf.reshape(prod, [B, -1]), 1);
  });
  return (parts.length === 1 ? parts[0] : tf.addN(parts)) as tf.Tensor1D;
}

/** xs[i] + a·ps[i] with a per-example scalar a of shape [B]. */
export function axpy(xs: tf.Tensor[], a: tf.Tensor1D, ps: tf.Tensor[]): tf.Tensor[] {
  return xs.map((x, i) => tf.add(x, tf.mul(expandAs(a, ps[i]), ps[i])));
}

/**
 * Row-wise select of two lists by a HOST mask (1: the row of `a`, 0: the row of `b`). When the mask
 * is all ones or all zeros the list itself is returned (no kernel, no copy: the caller must not
 * dispose it separately from the other list's owner).
 */
export function hostSelect(mask: Uint8Array, a: tf.Tensor[], b: tf.Tensor[]): tf.Tensor[] {
  let ones = 0;
  for (let i = 0; i < mask.length; i++) ones += mask[i];
  if (ones === mask.length) return a;
  if (ones === 0) return b;
  return selectRows(tf.tensor1d(mask, 'bool'), a, b);
}

/** Row-wise select of a whole list by one per-example mask (bool [B]). */
export function selectRows(mask: tf.Tensor, a: tf.Tensor[], b: tf.Tensor[]): tf.Tensor[] {
  return rowSelector(mask, a)(a, b);
}

/**
 * The step x + a_b·q per example (a float32 [B]): q = p, or q = sign(p)·mag_b in the rows where
 * `signRows.mask` (bool [B]; null: every row) is set, with the active backend's `Sign` ({@link backendSign}).
 * (A fused JavaScript kernel for this was measured 5–7× slower than these wasm kernels.)
 */
export function stepRows(x: tf.Tensor, a: tf.Tensor1D, p: tf.Tensor, signRows?: {mask: tf.Tensor1D | null; mag: tf.Tensor1D}): tf.Tensor {
  if (
    x.dtype === 'float32' &&
    p.dtype === 'float32' &&
    x.rank >= 2 &&
    tf.util.arraysEqual(x.shape, p.shape) &&
    (x.size / x.shape[0]) % 4 === 0 &&
    simdKernelsAvailable()
  ) {
    // one SIMD pass on wasm (src/kernels/simd.ts), bit for bit the ops below
    return stepRowsKernel(x, a, p, SIGN_DEAD_ZONE.wasm, signRows);
  }
  let q = p;
  if (signRows) {
    const signed = tf.mul(backendSign(p), expandAs(signRows.mag, p));
    q = signRows.mask ? whereRows(signRows.mask, signed, p) : signed;
  }
  return tf.add(x, tf.mul(expandAs(a, q), q));
}

/**
 * Per backend, the largest float32 magnitude its `Sign` kernel maps to 0 (measured: the wasm
 * backend's `Sign` returns 0 for |x| < 2⁻²³ = FLT_EPSILON, the cpu backend's only for ±0).
 */
const SIGN_DEAD_ZONE: Record<string, number> = {wasm: Math.fround(2 ** -23 * (1 - 2 ** -24)), cpu: 0};

/**
 * `tf.sign(p)` with the values of the active backend's `Sign` kernel, for finite p, from fast
 * kernels: on wasm `Sign` is a scalar loop (0.6–1.2 ms on 128×784, 30× an `Add`), while
 * step(p − c) − step(−p − c) = [p > c] − [p < −c] (the float32 difference has the sign of the
 * comparison) takes four fast ones; c is the backend's dead zone ({@link SIGN_DEAD_ZONE}). Other
 * backends: `tf.sign`.
 */
export function backendSign(p: tf.Tensor): tf.Tensor {
  const c = SIGN_DEAD_ZONE[tf.getBackend()];
  if (c === undefined) return tf.sign(p);
  if (c === 0) return tf.sub(tf.step(p), tf.step(tf.neg(p)));
  return tf.sub(tf.step(tf.sub(p, c)), tf.step(tf.sub(tf.neg(p), c)));
}

/** Per-example flag [B] (bool): J_b, its gradient and the point are all finite. */
export function finitePerExample(J: tf.Tensor1D, grads: tf.Tensor[], xs: tf.Tensor[], B: number): tf.Tensor1D {
  if (rowKernelsAvailable()) return rowsFiniteKernel([J, ...grads, ...xs]);
  let fin = tf.isFinite(J);
  for (const t of [...grads, ...xs]) {
    const f = tf.isFinite(t);
    fin = tf.logicalAnd(fin, t.rank <= 1 ? f : tf.all(tf.reshape(f, [B, -1]), 1));
  }
  return fin as tf.Tensor1D;
}

/** ‖g_b‖ ≤ gtol·max(1, |J_b|) from gg = ‖g_b‖² (false when gtol < 0). */
export function gradientTest(gg: tf.Tensor1D, J: tf.Tensor1D, gtol: number): tf.Tensor1D {
  if (gtol < 0) return tf.cast(tf.zerosLike(gg), 'bool') as tf.Tensor1D;
  return tf.lessEqual(tf.sqrt(gg), tf.mul(gtol, tf.maximum(1, tf.abs(J)))) as tf.Tensor1D;
}

/**
 * One batched gradient evaluation: J = f(xs) (shape [B]) and ∇ Σ_b J_b w.r.t. every xs[i]
 * (= the per-example gradients, examples being independent). Tensors of the list that J does not
 * depend on get a zero gradient. Must be called inside a tidy. With `wantStats`, a fused split
 * evaluation may also return the solvers' read-back `stats` (see `SplitObjective.fused`).
 */
export function evaluate(f: BatchObjective, xs: tf.Tensor[], B: number, wantStats = false): {value: tf.Tensor1D; grads: tf.Tensor[]; stats?: tf.Tensor1D} {
  const split = f.split != null && !(tf.engine() as unknown as {isTapeOn(): boolean}).isTapeOn() ? f.split : null;
  const res = tf.engine().gradients(() => (split ? split.taped(xs) : f(xs)), xs, undefined, true);
  let value = res.value as tf.Tensor1D;
  if (value.rank !== 1 || value.shape[0] !== B) {
    throw new Error(`solver: the objective must return shape [${B}], got [${value.shape.join(',')}]`);
  }
  // the terms with closed-form gradients: their sum with the taped gradient is what the tape's own
  // accumulation would give (the terms' cotangent is 1; addition commutes), in fewer kernels
  if (split?.fused && value.dtype === 'float32') {
    const r = split.fused(xs, value, xs.map((_, i) => res.grads[i] ?? null), wantStats);
    if (r) return r;
  }
  let extra: (tf.Tensor | null)[] = [];
  if (split) ({value, grads: extra} = split.untaped(xs, value));
  const grads = xs.map((x, i) => {
    const gt = res.grads[i];
    const ge = extra[i] ?? null;
    const gi = gt == null ? ge : ge == null ? gt : tf.add(gt, ge);
    return gi == null ? tf.zerosLike(x) : gi.dtype === 'float32' ? gi : tf.cast(gi, 'float32');
  });
  return {value: value.dtype === 'float32' ? value : (tf.cast(value, 'float32') as tf.Tensor1D), grads};
}

/** Result when the gradient budget is < 1: the start point and one forward pass. */
export function forwardOnlyResult(f: BatchObjective, x0: tf.Tensor[], B: number): SolverResult {
  const out = tf.tidy(() => {
    const xs = x0.map(toFloatCopy);
    const J = f(xs);
    if (J.rank !== 1 || J.shape[0] !== B) {
      throw new Error(`solver: the objective must return shape [${B}], got [${J.shape.join(',')}]`);
    }
    return {xs, J: tf.cast(J, 'float32') as tf.Tensor1D};
  });
  const J0 = Array.from(out.J.dataSync());
  return {
    xs: out.xs,
    objective: out.J,
    iterations: 0,
    gradientEvaluations: 0,
    functionEvaluations: 1,
    history: [mean(J0)],
    exampleHistory: [J0],
    nonFinite: J0.filter((v) => !Number.isFinite(v)).length,
    converged: 0,
    stalled: 0,
  };
}

/** Disposes every tensor of `old` that is not also in `keep`. */
export function disposeStateExcept(old: object, keep: object): void {
  const keepIds = new Set<number>();
  collect(keep, (t) => keepIds.add(t.id));
  collect(old, (t) => {
    if (!keepIds.has(t.id) && !t.isDisposed) t.dispose();
  });
}

/** Disposes every tensor reachable from `v` (objects and arrays). */
export function disposeAll(v: unknown): void {
  collect(v, (t) => {
    if (!t.isDisposed) t.dispose();
  });
}

function collect(v: unknown, fn: (t: tf.Tensor) => void): void {
  if (v instanceof tf.Tensor) fn(v);
  else if (Array.isArray(v)) v.forEach((e) => collect(e, fn));
  else if (v != null && typeof v === 'object') Object.values(v).forEach((e) => collect(e, fn));
}

/** Arithmetic mean of a host array (NaN if empty). */
export function mean(a: number[]): number {
  return a.reduce((s, v) => s + v, 0) / a.length;
}

/** Appends one iteration's per-example values and their mean to the histories; returns the mean. */
export function recordValues(values: number[], history: number[], exampleHistory: number[][]): number {
  const m = mean(values);
  exampleHistory.push(values);
  history.push(m);
  return m;
}
