/**
 * Training kernels for the tfjs wasm backend, composed from kernels that backend already has
 * (XNNPACK convolutions, transposes, pads, sums) or written as plain loops over the wasm heap.
 *
 * Nothing here imports `@tensorflow/tfjs-backend-wasm`: the backend's kernels are looked up at run
 * time with `tf.getKernel(name, 'wasm')`, and the backend object is only used through the small
 * {@link WasmBackendLike} surface below. Registration lives in `./wasm.ts`.
 *
 * Every intermediate is a `TensorInfo` owned by the kernel and released with
 * `backend.disposeData` before returning (tf.memory() does not see kernel temporaries).
 *
 * @packageDocumentation
 */
import * as tf from '@tensorflow/tfjs-core';
import {backend_util, util} from '@tensorflow/tfjs-core';

type TensorInfo = tf.TensorInfo;
type Attrs = tf.NamedAttrMap;

/** The parts of tfjs-backend-wasm's `BackendWasm` that these kernels use. */
export interface WasmBackendLike {
  makeOutput(shape: number[], dtype: tf.DataType): TensorInfo;
  typedArrayFromHeap(t: TensorInfo): Float32Array | Int32Array | Uint8Array;
  disposeData(dataId: object, force?: boolean): boolean;
  numDataIds(): number;
}

/** Arguments a kernel function receives from the engine. */
export interface KernelArgs {
  inputs: tf.NamedTensorInfoMap;
  backend: unknown;
  attrs?: Attrs;
}

/** A kernel function returning one output. */
export type WasmKernelFunc = (args: KernelArgs) => TensorInfo;

/** Calls the wasm backend's kernel `name` (as registered now) with the same backend object. */
function call(name: string, backend: unknown, inputs: tf.NamedTensorInfoMap, attrs: Attrs = {}): TensorInfo {
  const k = tf.getKernel(name, 'wasm');
  if (k == null) throw new Error(`wasm training kernels: the wasm backend has no '${name}' kernel (is @tensorflow/tfjs-backend-wasm loaded?)`);
  const out = k.kernelFunc({inputs, backend: backend as tf.KernelBackend, attrs});
  if (Array.isArray(out)) throw new Error(`wasm training kernels: kernel '${name}' returned ${out.length} outputs, expected 1`);
  return out;
}

/** Releases kernel temporaries (skipping `keep`). */
function release(backend: WasmBackendLike, ...ts: Array<TensorInfo | null | undefined>): void {
  for (const t of ts) if (t != null) backend.disposeData(t.dataId);
}

/** A reshaped view sharing `t`'s data (no new data id, no ref count: use only as a kernel input or hand over ownership). */
function view(t: TensorInfo, shape: number[]): TensorInfo {
  if (util.sizeFromShape(shape) !== util.sizeFromShape(t.shape)) {
    throw new Error(`wasm training kernels: cannot view shape [${t.shape}] as [${shape}]`);
  }
  return {dataId: t.dataId, shape, dtype: t.dtype};
}

function transpose(backend: unknown, x: TensorInfo, perm: number[]): TensorInfo {
  return call('Transpose', backend, {x}, {perm});
}

/**
 * Removes `[cropTop, cropBottom]` rows and `[cropLeft, cropRight]` columns from an NHWC tensor
 * (all values ≥ 0); returns `null` when nothing is to be cropped.
 */
function crop(backend: unknown, x: TensorInfo, rows: [number, number], cols: [number, number]): TensorInfo | null {
  if (rows[0] === 0 && rows[1] === 0 && cols[0] === 0 && cols[1] === 0) return null;
  const [b, h, w, c] = x.shape;
  return call('Slice', backend, {x}, {begin: [0, rows[0], cols[0], 0], size: [b, h - rows[0] - rows[1], w - cols[0] - cols[1], c]});
}

/**
 * Inserts `s − 1` zeros after every row / column of NHWC `dy` (so the result is
 * `[B, OH·sh, OW·sw, C]`, the last `s − 1` rows/columns being zeros). Returns `null` for stride 1.
 */
function zeroInsert(backend: unknown, dy: TensorInfo, sh: number, sw: number): TensorInfo | null {
  if (sh === 1 && sw === 1) return null;
  const [b, oh, ow, c] = dy.shape;
  const padded = call('PadV2', backend, {x: view(dy, [b, oh, 1, ow, 1, c])},
      {paddings: [[0, 0], [0, 0], [0, sh - 1], [0, 0], [0, sw - 1], [0, 0]], constantValue: 0});
  return view(padded, [b, oh * sh, ow * sw, c]);
}

/** Splits a signed padding into (crop, pad) parts. */
function split(p: number): [number, number] {
  return p < 0 ? [-p, 0] : [0, p];
}

function checkNHWC(kernel: string, dataFormat: unknown): void {
  if (dataFormat != null && dataFormat !== 'NHWC' && dataFormat !== 'channelsLast') {
    throw new Error(`wasm ${kernel}: dataFormat '${String(dataFormat)}' is not supported; only NHWC (channelsLast)`);
  }
}

function checkUnitDilations(kernel: string, dilations: unknown): void {
  if (dilations == null) return;
  const d = typeof dilations === 'number' ? [dilations, dilations] : dilations as number[];
  if (d.some((v) => v !== 1)) throw new Error(`wasm ${kernel}: dilations [${d}] are not supported (only 1, as in tfjs gradients)`);
}

/**
 * Runs a stride-1 convolution (regular or depthwise) of `x` with `filter`, dilation `dil`, and signed
 * paddings: negative values crop `x` first, positive ones are passed to the convolution as
 * explicit padding.
 */
function convSigned(backend: WasmBackendLike, depthwise: boolean, x: TensorInfo, filter: TensorInfo,
    dil: [number, number], top: number, bottom: number, left: number, right: number): TensorInfo {
  const [ct, pt] = split(top);
  const [cb, pb] = split(bottom);
  const [cl, pl] = split(left);
  const [cr, pr] = split(right);
  const cropped = crop(backend, x, [ct, cb], [cl, cr]);
  const input = cropped ?? x;
  try {
    const attrs = {strides: [1, 1], pad: [[0, 0], [pt, pb], [pl, pr], [0, 0]], dilations: dil, dataFormat: 'NHWC', dimRoundingMode: undefined} as unknown as Attrs;
    return call(depthwise ? 'DepthwiseConv2dNative' : 'Conv2D', backend, {x: input, filter}, attrs);
  } finally {
    release(backend, cropped);
  }
}

// ---------------------------------------------------------------------------------------------
// Conv2D gradients

/**
 * `Conv2DBackpropFilter` (NHWC): the filter gradient as one convolution of x (batch and channels
 * swapped) with dy (as the filter) at dilation = forward stride, transposed back to `[KH,KW,Ci,Co]`.
 */
export function conv2DBackpropFilter({inputs, backend, attrs}: KernelArgs): TensorInfo {
  const b = backend as WasmBackendLike;
  const {x, dy} = inputs as {x: TensorInfo, dy: TensorInfo};
  const {strides, pad, dataFormat, dimRoundingMode, filterShape} = attrs as unknown as tf.Conv2DBackpropFilterAttrs;
  if (dataFormat === 'NCHW') {
    // Same filter layout either way: move x and dy to NHWC and reuse the NHWC path.
    const xs = transpose(b, x, [0, 2, 3, 1]);
    let dys: TensorInfo | undefined;
    try {
      dys = transpose(b, dy, [0, 2, 3, 1]);
      return conv2DBackpropFilter({inputs: {x: xs, dy: dys}, backend, attrs: {...attrs, dataFormat: 'NHWC'}});
    } finally {
      release(b, xs, dys);
    }
  }
  checkNHWC('Conv2DBackpropFilter', dataFormat);
  const info = backend_util.computeConv2DInfo(x.shape as [number, number, number, number], filterShape, strides, 1, pad, dimRoundingMode, false, 'channelsLast');
  const [, h, w] = x.shape;
  const [, oh, ow] = dy.shape;
  const {filterHeight: kh, filterWidth: kw, strideHeight: sh, strideWidth: sw} = info;
  const {top, left} = info.padInfo;
  const bottom = (oh - 1) * sh + kh - top - h;
  const right = (ow - 1) * sw + kw - left - w;
  const temps: TensorInfo[] = [];
  try {
    const xT = transpose(b, x, [3, 1, 2, 0]); // [Ci, H, W, B]
    temps.push(xT);
    const dyT = transpose(b, dy, [1, 2, 0, 3]); // [OH, OW, B, Co]
    temps.push(dyT);
    const g = convSigned(b, false, xT, dyT, [sh, sw], top, bottom, left, right); // [Ci, KH, KW, Co]
    temps.push(g);
    return transpose(b, g, [1, 2, 0, 3]);
  } finally {
    release(b, ...temps);
  }
}

/**
 * `Conv2DBackpropInput` (NHWC): zero-insert dy for strides > 1, then one stride-1 convolution with
 * the spatially flipped filter whose in/out channels are swapped.
 */
export function conv2DBackpropInput({inputs, backend, attrs}: KernelArgs): TensorInfo {
  const b = backend as WasmBackendLike;
  const {dy, filter} = inputs as {dy: TensorInfo, filter: TensorInfo};
  const {inputShape, strides, pad, dataFormat, dimRoundingMode} = attrs as unknown as tf.Conv2DBackpropInputAttrs;
  checkNHWC('Conv2DBackpropInput', dataFormat);
  const info = backend_util.computeConv2DInfo(inputShape, filter.shape as [number, number, number, number], strides, 1, pad, dimRoundingMode, false, 'channelsLast');
  return inputGradient(b, false, dy, filter, inputShape, info);
}

function inputGradient(b: WasmBackendLike, depthwise: boolean, dy: TensorInfo, filter: TensorInfo,
    inputShape: number[], info: backend_util.Conv2DInfo): TensorInfo {
  const [batch, h, w, c] = inputShape;
  const [, oh, ow] = dy.shape;
  const [kh, kw, , m] = filter.shape;
  const {strideHeight: sh, strideWidth: sw} = info;
  const {top, left} = info.padInfo;
  const temps: TensorInfo[] = [];
  try {
    const dyZ = zeroInsert(b, dy, sh, sw);
    if (dyZ) temps.push(dyZ);
    const flipped = call('Reverse', b, {x: filter}, {dims: [0, 1]});
    temps.push(flipped);
    let f: TensorInfo;
    if (depthwise) {
      f = view(flipped, [kh, kw, c * m, 1]);
    } else {
      f = transpose(b, flipped, [0, 1, 3, 2]); // [KH, KW, Co, Ci]
      temps.push(f);
    }
    const pt = kh - 1 - top;
    const pl = kw - 1 - left;
    const pb = h - oh * sh + top;
    const pr = w - ow * sw + left;
    const g = convSigned(b, depthwise, dyZ ?? dy, f, [1, 1], pt, pb, pl, pr);
    if (!depthwise || m === 1) return view(g, [batch, h, w, c]);
    temps.push(g);
    return call('Sum', b, {x: view(g, [batch, h, w, c, m])}, {axis: [4], keepDims: false});
  } finally {
    release(b, ...temps);
  }
}

// ---------------------------------------------------------------------------------------------
// Depthwise gradients

/**
 * `DepthwiseConv2dNativeBackpropFilter`: batch folded into channels, one depthwise convolution at
 * dilation = stride, then a sum over the batch.
 */
export function depthwiseConv2dNativeBackpropFilter({inputs, backend, attrs}: KernelArgs): TensorInfo {
  const b = backend as WasmBackendLike;
  const {x, dy} = inputs as {x: TensorInfo, dy: TensorInfo};
  const {strides, dilations, pad, dimRoundingMode, filterShape} = attrs as unknown as tf.DepthwiseConv2dNativeBackpropFilterAttrs;
  checkUnitDilations('DepthwiseConv2dNativeBackpropFilter', dilations);
  const info = backend_util.computeConv2DInfo(x.shape as [number, number, number, number], filterShape, strides, 1, pad, dimRoundingMode, true);
  const [batch, h, w, c] = x.shape;
  const [, oh, ow] = dy.shape;
  const [kh, kw, , m] = filterShape;
  const {strideHeight: sh, strideWidth: sw} = info;
  const {top, left} = info.padInfo;
  const bottom = (oh - 1) * sh + kh - top - h;
  const right = (ow - 1) * sw + kw - left - w;
  const temps: TensorInfo[] = [];
  try {
    const xT = transpose(b, x, [1, 2, 0, 3]); // [H, W, B, C]
    temps.push(xT);
    const dyT = transpose(b, view(dy, [batch, oh, ow, c, m]), [1, 2, 0, 3, 4]); // [OH, OW, B, C, M]
    temps.push(dyT);
    const g = convSigned(b, true, view(xT, [1, h, w, batch * c]), view(dyT, [oh, ow, batch * c, m]), [sh, sw], top, bottom, left, right);
    if (batch === 1) return view(g, [kh, kw, c, m]);
    temps.push(g);
    const s = call('Sum', b, {x: view(g, [kh, kw, batch, c * m])}, {axis: [2], keepDims: false});
    return view(s, [kh, kw, c, m]);
  } finally {
    release(b, ...temps);
  }
}

/** `DepthwiseConv2dNativeBackpropInput`: zero-insert dy, flip the filter, depthwise conv, sum over the multiplier. */
export function depthwiseConv2dNativeBackpropInput({inputs, backend, attrs}: KernelArgs): TensorInfo {
  const b = backend as WasmBackendLike;
  const {dy, filter} = inputs as {dy: TensorInfo, filter: TensorInfo};
  const {strides, dilations, pad, dimRoundingMode, inputShape} = attrs as unknown as tf.DepthwiseConv2dNativeBackpropInputAttrs;
  checkUnitDilations('DepthwiseConv2dNativeBackpropInput', dilations);
  const info = backend_util.computeConv2DInfo(inputShape, filter.shape as [number, number, number, number], strides, 1, pad, dimRoundingMode, true);
  return inputGradient(b, true, dy, filter, inputShape, info);
}

// ---------------------------------------------------------------------------------------------
// MaxPoolGrad

/**
 * `MaxPoolGrad`: each output's gradient goes to the first maximum of its window (row-major, as
 * the cpu backend does), the running maximum starting at −∞ so all-negative windows are handled.
 */
export function maxPoolGrad({inputs, backend, attrs}: KernelArgs): TensorInfo {
  const b = backend as WasmBackendLike;
  const {dy, input} = inputs as {dy: TensorInfo, input: TensorInfo};
  const {filterSize, strides, pad, dimRoundingMode} = attrs as unknown as tf.MaxPoolGradAttrs;
  const info = backend_util.computePool2DInfo(input.shape as [number, number, number, number], filterSize, strides, 1, pad, dimRoundingMode);
  const {batchSize, inHeight: h, inWidth: w, inChannels: c, outHeight: oh, outWidth: ow,
    strideHeight: sh, strideWidth: sw, effectiveFilterHeight: fh, effectiveFilterWidth: fw} = info;
  const {top, left} = info.padInfo;
  const out = b.makeOutput(input.shape, 'float32');
  // Heap views only after makeOutput (allocation may grow and move the heap).
  const dx = b.typedArrayFromHeap(out) as Float32Array;
  const xv = b.typedArrayFromHeap(input) as Float32Array;
  const dyv = b.typedArrayFromHeap(dy) as Float32Array;
  dx.fill(0);
  const best = new Float32Array(c);
  const pos = new Int32Array(c);
  for (let n = 0; n < batchSize; n++) {
    const xBase = n * h * w * c;
    for (let r = 0; r < oh; r++) {
      const r0 = r * sh - top;
      const rMin = Math.max(0, r0);
      const rMax = Math.min(h, r0 + fh);
      for (let q = 0; q < ow; q++) {
        const q0 = q * sw - left;
        const qMin = Math.max(0, q0);
        const qMax = Math.min(w, q0 + fw);
        best.fill(-Infinity);
        pos.fill(-1);
        for (let i = rMin; i < rMax; i++) {
          for (let j = qMin; j < qMax; j++) {
            const off = xBase + (i * w + j) * c;
            for (let d = 0; d < c; d++) {
              const v = xv[off + d];
              if (v > best[d]) {
                best[d] = v;
                pos[d] = off + d;
              }
            }
          }
        }
        const dyOff = ((n * oh + r) * ow + q) * c;
        for (let d = 0; d < c; d++) {
          if (pos[d] >= 0) dx[pos[d]] += dyv[dyOff + d];
        }
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// BatchMatMul with transposes

/**
 * Returns a `BatchMatMul` kernel that takes the wasm backend's fast (XNNPACK) path for transposed
 * products: the operands are transposed explicitly, either as `op(A)·op(B)` or as `(op(B)ᵀ·op(A)ᵀ)ᵀ`,
 * whichever moves fewer elements. Untransposed products go straight to `original`.
 */
export function makeBatchMatMul(original: WasmKernelFunc): WasmKernelFunc {
  return (args: KernelArgs): TensorInfo => {
    const {a, b: bIn} = args.inputs as {a: TensorInfo, b: TensorInfo};
    const {transposeA = false, transposeB = false} = (args.attrs ?? {}) as {transposeA?: boolean, transposeB?: boolean};
    if ((!transposeA && !transposeB) || a.dtype !== 'float32' || bIn.dtype !== 'float32' || a.shape.length < 2 || bIn.shape.length < 2) {
      return original(args);
    }
    const be = args.backend as WasmBackendLike;
    const ra = a.shape.length;
    const rb = bIn.shape.length;
    const batchA = util.sizeFromShape(a.shape.slice(0, -2));
    const batchB = util.sizeFromShape(bIn.shape.slice(0, -2));
    const m = transposeA ? a.shape[ra - 1] : a.shape[ra - 2];
    const k = transposeA ? a.shape[ra - 2] : a.shape[ra - 1];
    const n = transposeB ? bIn.shape[rb - 2] : bIn.shape[rb - 1];
    const swapLast = (r: number): number[] => [...Array.from({length: r - 2}, (_, i) => i), r - 1, r - 2];
    // Elements copied: transposes of the inputs, plus the output transpose for the swapped form.
    const direct = (transposeA ? batchA * m * k : 0) + (transposeB ? batchB * k * n : 0);
    const swapped = (transposeB ? 0 : batchB * k * n) + (transposeA ? 0 : batchA * m * k) + Math.max(batchA, batchB) * m * n;
    const temps: TensorInfo[] = [];
    try {
      if (direct <= swapped) {
        let aa = a;
        let bb = bIn;
        if (transposeA) temps.push(aa = transpose(be, a, swapLast(ra)));
        if (transposeB) temps.push(bb = transpose(be, bIn, swapLast(rb)));
        return original({inputs: {a: aa, b: bb}, backend: be, attrs: {transposeA: false, transposeB: false}});
      }
      // C = (op(B)ᵀ · op(A)ᵀ)ᵀ ; op(B)ᵀ is B itself when transposeB, op(A)ᵀ is A itself when transposeA.
      let left = bIn;
      let right = a;
      if (!transposeB) temps.push(left = transpose(be, bIn, swapLast(rb)));
      if (!transposeA) temps.push(right = transpose(be, a, swapLast(ra)));
      const ct = original({inputs: {a: left, b: right}, backend: be, attrs: {transposeA: false, transposeB: false}});
      temps.push(ct);
      return transpose(be, ct, swapLast(ct.shape.length));
    } finally {
      release(be, ...temps);
    }
  };
}

// ---------------------------------------------------------------------------------------------
// UnsortedSegmentSum

/**
 * `UnsortedSegmentSum` (the gradient of gather / Embedding): one pass over x on the wasm heap;
 * ids outside `[0, numSegments)` are ignored, as on the cpu backend.
 */
export function unsortedSegmentSum({inputs, backend, attrs}: KernelArgs): TensorInfo {
  const b = backend as WasmBackendLike;
  const {x, segmentIds} = inputs as {x: TensorInfo, segmentIds: TensorInfo};
  const {numSegments} = attrs as unknown as tf.UnsortedSegmentSumAttrs;
  if (x.dtype !== 'float32' && x.dtype !== 'int32') {
    throw new Error(`wasm UnsortedSegmentSum: x must be float32 or int32, got ${x.dtype}`);
  }
  if (segmentIds.dtype !== 'int32') throw new Error(`wasm UnsortedSegmentSum: segmentIds must be int32, got ${segmentIds.dtype}`);
  const idsRank = segmentIds.shape.length;
  if (x.shape.slice(0, idsRank).some((d, i) => d !== segmentIds.shape[i])) {
    throw new Error(`wasm UnsortedSegmentSum: segmentIds shape [${segmentIds.shape}] must be a prefix of x shape [${x.shape}]`);
  }
  const innerShape = x.shape.slice(idsRank);
  const inner = util.sizeFromShape(innerShape);
  const count = util.sizeFromShape(segmentIds.shape);
  const out = b.makeOutput([numSegments, ...innerShape], x.dtype);
  const o = b.typedArrayFromHeap(out) as Float32Array | Int32Array;
  const xv = b.typedArrayFromHeap(x) as Float32Array | Int32Array;
  const ids = b.typedArrayFromHeap(segmentIds) as Int32Array;
  o.fill(0);
  for (let i = 0; i < count; i++) {
    const s = ids[i];
    if (s < 0 || s >= numSegments) continue;
    const src = i * inner;
    const dst = s * inner;
    for (let j = 0; j < inner; j++) o[dst + j] += xv[src + j];
  }
  return out;
}
