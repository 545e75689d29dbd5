/**
 * A fused SIMD kernel on the wasm backend: the deep attack's search direction for an L∞ ball with a
 * box (equal curvatures, the default input threat), in one pass instead of 24 tfjs kernels.
 *
 * On the wasm backend every elementwise tfjs kernel on a 128×784 tensor costs ≈ 25–40 µs whatever
 * it computes (dispatch, allocation, memory traffic) and JavaScript loops are 5–10× slower than
 * the backend's SIMD code, so the direction's 24 kernels took ≈ 0.8 ms per solver iteration. This
 * module assembles a small WebAssembly module (≈ 350 bytes, SIMD128) at run time that imports the
 * wasm backend's own memory and computes the same float32 operations in the same order, lane by
 * lane, on the tensors where they live (measured 0.17 ms, bit for bit the same values; tested
 * against the tfjs ops in `test/simd_direction.test.ts`). It is registered as a tfjs kernel of the
 * wasm backend, so the engine allocates and tracks its output as usual.
 *
 * Used only when the active backend is wasm, no gradient tape records, the host kernels are
 * enabled, the tensor sizes are multiples of 4, and the module instantiates (WebAssembly SIMD; an
 * unshared memory — with threads the backend's memory is shared and this falls back). Otherwise
 * the callers use the tfjs ops.
 *
 * @packageDocumentation
 */
import * as tf from '@tensorflow/tfjs-core';
import {hostKernelsEnabled} from './rows.js';

/** Kernel names (prefixed: not tfjs kernels). */
export const LINF_BOX_DIRECTION = 'TfjsDeepAdversarialLinfBoxDirection';
export const LINF_BOX_PENALTY = 'TfjsDeepAdversarialLinfBoxPenalty';
export const STEP_ROWS = 'TfjsDeepAdversarialStepRows';
// (renamed when its attributes change, so that a bench's baseline copy of the package can run beside it)
export const PENALTY_TERMS = 'TfjsDeepAdversarialPenaltyTermsStats';

// --- a minimal WebAssembly binary encoder (only what the kernel below needs) ---
const uleb = (n: number): number[] => {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n !== 0) b |= 0x80;
    out.push(b);
  } while (n !== 0);
  return out;
};
const sleb = (n: number): number[] => {
  const out: number[] = [];
  for (;;) {
    const b = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (b & 0x40) === 0) || (n === -1 && (b & 0x40) !== 0)) {
      out.push(b);
      return out;
    }
    out.push(b | 0x80);
  }
};
const name = (s: string): number[] => [...uleb(s.length), ...Array.from(new TextEncoder().encode(s))];
const section = (id: number, body: number[]): number[] => [id, ...uleb(body.length), ...body];
const vec = (items: number[][]): number[] => [...uleb(items.length), ...items.flat()];
const I32 = 0x7f;
const F32 = 0x7d;
const F64 = 0x7c;
const V128 = 0x7b;
const get = (i: number): number[] => [0x20, ...uleb(i)];
const set = (i: number): number[] => [0x21, ...uleb(i)];
const simd = (op: number, ...imm: number[]): number[] => [0xfd, ...uleb(op), ...imm];
const op = {
  load: simd(0x00, 0x00, 0x00), // v128.load align=1 offset=0
  store: simd(0x0b, 0x00, 0x00), // v128.store
  splat: simd(0x13), // f32x4.splat
  gt: simd(0x44), // f32x4.gt
  bitselect: simd(0x52), // v128.bitselect
  abs: simd(0xe0), // f32x4.abs
  neg: simd(0xe1), // f32x4.neg
  add: simd(0xe4), // f32x4.add
  sub: simd(0xe5), // f32x4.sub
  mul: simd(0xe6), // f32x4.mul
  div: simd(0xe7), // f32x4.div
  min: simd(0xe8), // f32x4.min
  load64zero: simd(0x5d, 0x00, 0x08), // v128.load64_zero offset=8
  promote: simd(0x5f), // f64x2.promote_low_f32x4
  f64x2add: simd(0xf0),
  f64x2mul: simd(0xf2),
  f64lane: (lane: number): number[] => simd(0x21, lane), // f64x2.extract_lane
  high: simd(0x0d, 8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15), // i8x16.shuffle: lanes 2, 3 → 0, 1
  eq: simd(0x41), // f32x4.eq
  lt: simd(0x43), // f32x4.lt
  and: simd(0x4e), // v128.and
  allTrue: simd(0xa3), // i32x4.all_true
  max: simd(0xe9), // f32x4.max
  // pmin(a, b) = b < a ? b : a, pmax(a, b) = a < b ? b : a: one instruction each on x64 (min/max
  // are ≈ 7, for their NaN and signed-zero rules); XNNPACK's clamp, the wasm backend's
  // ClipByValue, is pmin(hi, pmax(lo, x))
  pmin: simd(0xea), // f32x4.pmin
  pmax: simd(0xeb), // f32x4.pmax
  lane: (l: number): number[] => simd(0x1f, l), // f32x4.extract_lane
  f32add: [0x92],
  f32sub: [0x93],
  f32mul: [0x94],
  f32load: [0x2a, 0x02, 0x00],
  f32store: [0x38, 0x02, 0x00],
  f64load: [0x2b, 0x03, 0x00],
  f64store: [0x39, 0x03, 0x00],
  f64add: [0xa0],
  i32load: [0x28, 0x02, 0x00],
  i32store: [0x36, 0x02, 0x00],
  i32and: [0x71],
  i32add: [0x6a],
  i32ltU: [0x49],
  i32eqz: [0x45],
  i32const: (n: number): number[] => [0x41, ...sleb(n)],
  f32const: (x: number): number[] => [0x43, ...Array.from(new Uint8Array(new Float32Array([x]).buffer))],
};

/**
 * The module: `dir(g, d, A, C, k1Up, k1Down, k2Up, k2Down, out, bytes, twoLambda)` (byte offsets
 * into the imported memory; `bytes` a multiple of 16), per lane the operations of
 * `linearisedDirection`'s equal-curvature L∞ + box branch in their order:
 * gc = g + 2λ·(A − C); up = step(gc); down = step(−gc); k1 = up·k1Up + down·k1Down;
 * k2 = up·k2Up + down·k2Down; v1 = k1 + |gc|/(2λ); v = v1 − 0.5·relu(v1 − k2);
 * out = (up − down)·v − (up + down)·d.
 */
function directionModule(): Uint8Array {
  const P = {g: 0, d: 1, A: 2, C: 3, k1u: 4, k1d: 5, k2u: 6, k2d: 7, out: 8, bytes: 9, lam: 10};
  const L = {i: 11, gc: 12, up: 13, down: 14, k1: 15, k2: 16, v1: 17, v: 18, lam: 19, one: 20, zero: 21, half: 22};
  const at = (p: number): number[] => [...get(p), ...get(L.i), ...op.i32add, ...op.load];
  const step = (x: number[]): number[] => [...get(L.one), ...get(L.zero), ...x, ...get(L.zero), ...op.gt, ...op.bitselect];
  const body = [
    ...get(P.lam), ...op.splat, ...set(L.lam),
    ...op.f32const(1), ...op.splat, ...set(L.one),
    ...op.f32const(0), ...op.splat, ...set(L.zero),
    ...op.f32const(0.5), ...op.splat, ...set(L.half),
    0x02, 0x40, // block
    0x03, 0x40, // loop
    ...get(L.i), ...get(P.bytes), ...op.i32ltU, ...op.i32eqz, 0x0d, 0x01, // exit when i ≥ bytes
    ...at(P.g), ...get(L.lam), ...at(P.A), ...at(P.C), ...op.sub, ...op.mul, ...op.add, ...set(L.gc),
    ...step(get(L.gc)), ...set(L.up),
    ...step([...get(L.gc), ...op.neg]), ...set(L.down),
    ...get(L.up), ...at(P.k1u), ...op.mul, ...get(L.down), ...at(P.k1d), ...op.mul, ...op.add, ...set(L.k1),
    ...get(L.up), ...at(P.k2u), ...op.mul, ...get(L.down), ...at(P.k2d), ...op.mul, ...op.add, ...set(L.k2),
    ...get(L.k1), ...get(L.gc), ...op.abs, ...get(L.lam), ...op.div, ...op.add, ...set(L.v1),
    ...get(L.v1), ...get(L.half), ...get(L.v1), ...get(L.k2), ...op.sub, ...get(L.zero), ...op.max, ...op.mul, ...op.sub, ...set(L.v),
    ...get(P.out), ...get(L.i), ...op.i32add,
    ...get(L.up), ...get(L.down), ...op.sub, ...get(L.v), ...op.mul,
    ...get(L.up), ...get(L.down), ...op.add, ...at(P.d), ...op.mul, ...op.sub,
    ...op.store,
    ...get(L.i), ...op.i32const(16), ...op.i32add, ...set(L.i),
    0x0c, 0x00, // continue
    0x0b, // end loop
    0x0b, // end block
    0x0b, // end function
  ];
  const func = [...vec([[...uleb(1), I32], [...uleb(11), V128]]), ...body];
  const pen = penaltyBody();
  const sq = squaresBody();
  const fin = finiteBody();
  const stp = stepBody();
  const pq = quadraticTermsBody();
  const pl = linfBoxTermsBody();
  const add = addBody();
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(
      1,
      vec([
        [0x60, ...vec([...Array<number[]>(10).fill([I32]), [F32]]), ...vec([])],
        [0x60, ...vec([...Array<number[]>(8).fill([I32]), [F32], [F32], [F32], [F32], [F32]]), ...vec([])],
        [0x60, ...vec([[I32], [I32]]), ...vec([[F64]])],
        [0x60, ...vec([[I32], [I32]]), ...vec([[I32]])],
        [0x60, ...vec([...Array<number[]>(10).fill([I32]), [F32]]), ...vec([])],
        [0x60, ...vec([...Array<number[]>(12).fill([I32]), ...Array<number[]>(3).fill([F32])]), ...vec([])],
        [0x60, ...vec([...Array<number[]>(16).fill([I32]), ...Array<number[]>(8).fill([F32])]), ...vec([])],
        [0x60, ...vec(Array<number[]>(4).fill([I32])), ...vec([])],
      ]),
    ),
    ...section(2, vec([[...name('env'), ...name('memory'), 0x02, 0x00, 0x00]])),
    ...section(3, vec([uleb(0), uleb(1), uleb(2), uleb(3), uleb(4), uleb(5), uleb(6), uleb(7)])),
    ...section(
      7,
      vec([
        [...name('dir'), 0x00, ...uleb(0)],
        [...name('pen'), 0x00, ...uleb(1)],
        [...name('sq'), 0x00, ...uleb(2)],
        [...name('fin'), 0x00, ...uleb(3)],
        [...name('step'), 0x00, ...uleb(4)],
        [...name('pq'), 0x00, ...uleb(5)],
        [...name('pl'), 0x00, ...uleb(6)],
        [...name('add'), 0x00, ...uleb(7)],
      ]),
    ),
    ...section(
      10,
      vec([func, pen, sq, fin, stp, pq, pl, add].map((b) => [...uleb(b.length), ...b])),
    ),
  ]);
}

/**
 * `pen(d, base, ball, box, grad, ballSq, boxSq, bytes, ε, lo, hi, −2λ, 2λ_box)`: per lane the
 * elementwise part of `penaltyValueAndGradient` for an L∞ ball with a box, in its order:
 * ball = d − clip(d, −ε, ε); n = base + d; box = clip(n, lo, hi) − n;
 * grad = (−2λ)·ball + (2λ_box)·box; and ball², box² (the row sums stay with the tfjs `Sum`).
 */
/**
 * `sq(ptr, bytes)`: Σ v[j]² over a row of float32 (bytes a multiple of 16) in float64, with the
 * four partial sums of `rows.ts`' `dotRange` (lane j mod 4), added as ((s0 + s1) + s2) + s3: the
 * same float64 value as that JavaScript loop.
 */
function squaresBody(): number[] {
  const P = {ptr: 0, bytes: 1};
  const L = {end: 2, a01: 3, a23: 4, t: 5};
  const body = [
    ...get(P.ptr), ...get(P.bytes), ...op.i32add, ...set(L.end),
    0x02, 0x40,
    0x03, 0x40,
    ...get(P.ptr), ...get(L.end), ...op.i32ltU, ...op.i32eqz, 0x0d, 0x01,
    ...get(L.a01), ...get(P.ptr), ...op.load, ...op.promote, 0x22, ...uleb(L.t), ...get(L.t), ...op.f64x2mul, ...op.f64x2add, ...set(L.a01),
    ...get(L.a23), ...get(P.ptr), ...op.load64zero, ...op.promote, 0x22, ...uleb(L.t), ...get(L.t), ...op.f64x2mul, ...op.f64x2add, ...set(L.a23),
    ...get(P.ptr), ...op.i32const(16), ...op.i32add, ...set(P.ptr),
    0x0c, 0x00,
    0x0b,
    0x0b,
    ...get(L.a01), ...op.f64lane(0), ...get(L.a01), ...op.f64lane(1), 0xa0 /* f64.add */,
    ...get(L.a23), ...op.f64lane(0), 0xa0, ...get(L.a23), ...op.f64lane(1), 0xa0,
    0x0b,
  ];
  return [...vec([[...uleb(1), I32], [...uleb(3), V128]]), ...body];
}

/** `fin(ptr, bytes)`: 1 when every float32 of the row is finite (Σ v·0 per lane stays 0), else 0. */
function finiteBody(): number[] {
  const P = {ptr: 0, bytes: 1};
  const L = {end: 2, acc: 3, zero: 4};
  const body = [
    ...get(P.ptr), ...get(P.bytes), ...op.i32add, ...set(L.end),
    ...op.f32const(0), ...op.splat, ...set(L.zero),
    ...get(L.zero), ...set(L.acc),
    0x02, 0x40,
    0x03, 0x40,
    ...get(P.ptr), ...get(L.end), ...op.i32ltU, ...op.i32eqz, 0x0d, 0x01,
    ...get(L.acc), ...get(P.ptr), ...op.load, ...get(L.zero), ...op.mul, ...op.add, ...set(L.acc),
    ...get(P.ptr), ...op.i32const(16), ...op.i32add, ...set(P.ptr),
    0x0c, 0x00,
    0x0b,
    0x0b,
    ...get(L.acc), ...get(L.zero), ...op.eq, ...op.allTrue,
    0x0b,
  ];
  return [...vec([[...uleb(1), I32], [...uleb(2), V128]]), ...body];
}

/**
 * `step(x, p, a, mag, mask, out, B, rowBytes, signed, allSigned, c)`: per row r (a, mag float32 [B],
 * mask bool [B]) out = x + a_r·q with q = p, or, in signed rows (`signed` and (`allSigned` or
 * mask[r])), q = sign(p)·mag_r where sign(p) = [p > c] − [p < −c] — the operations of `stepRows`
 * with `backendSign` on wasm (c its dead zone), in their order.
 */
function stepBody(): number[] {
  const P = {x: 0, p: 1, a: 2, mag: 3, mask: 4, out: 5, B: 6, rowBytes: 7, signed: 8, all: 9, c: 10};
  const L = {r: 11, j: 12, end: 13, sg: 14, ar: 15, mr: 16, C: 17, NC: 18, one: 19, pv: 20};
  const rowScalar = (base: number): number[] => [...get(base), ...get(L.r), ...op.i32const(2), 0x74 /* i32.shl */, ...op.i32add, 0x2a, 0x02, 0x00 /* f32.load */, ...op.splat];
  const body = [
    ...get(P.c), ...op.splat, ...set(L.C),
    ...get(P.c), 0x8c /* f32.neg */, ...op.splat, ...set(L.NC),
    ...op.f32const(1), ...op.splat, ...set(L.one),
    0x02, 0x40, // block rows
    0x03, 0x40, // loop rows
    ...get(L.r), ...get(P.B), ...op.i32ltU, ...op.i32eqz, 0x0d, 0x01,
    ...rowScalar(P.a), ...set(L.ar),
    // sg = signed && (allSigned || mask[r] != 0)
    ...get(P.signed), 0x04, I32, ...get(P.all), 0x04, I32, ...op.i32const(1), 0x05, ...get(P.mask), ...get(L.r), ...op.i32add, 0x2d, 0x00, 0x00 /* i32.load8_u */, ...op.i32const(0), 0x47 /* i32.ne */, 0x0b, 0x05, ...op.i32const(0), 0x0b, ...set(L.sg),
    ...get(L.sg), 0x04, 0x40, ...rowScalar(P.mag), ...set(L.mr), 0x0b,
    ...get(L.r), ...get(P.rowBytes), 0x6c /* i32.mul */, ...set(L.j),
    ...get(L.j), ...get(P.rowBytes), ...op.i32add, ...set(L.end),
    0x02, 0x40, // block cols
    0x03, 0x40, // loop cols
    ...get(L.j), ...get(L.end), ...op.i32ltU, ...op.i32eqz, 0x0d, 0x01,
    ...get(P.p), ...get(L.j), ...op.i32add, ...op.load, ...set(L.pv),
    ...get(P.out), ...get(L.j), ...op.i32add,
    ...get(P.x), ...get(L.j), ...op.i32add, ...op.load,
    ...get(L.ar),
    ...get(L.sg), 0x04, V128,
    ...get(L.pv), ...get(L.C), ...op.gt, ...get(L.one), ...op.and,
    ...get(L.pv), ...get(L.NC), ...op.lt, ...get(L.one), ...op.and,
    ...op.sub, ...get(L.mr), ...op.mul,
    0x05,
    ...get(L.pv),
    0x0b,
    ...op.mul, ...op.add, ...op.store,
    ...get(L.j), ...op.i32const(16), ...op.i32add, ...set(L.j),
    0x0c, 0x00,
    0x0b, // end loop cols
    0x0b, // end block cols
    ...get(L.r), ...op.i32const(1), ...op.i32add, ...set(L.r),
    0x0c, 0x00,
    0x0b, // end loop rows
    0x0b, // end block rows
    0x0b,
  ];
  return [...vec([[...uleb(4), I32], [...uleb(6), V128]]), ...body];
}

/**
 * A row sum in the order of the wasm backend's `Sum` kernel (a float32 accumulator from 0, entries
 * added one by one): the four lanes of the vector in local `v`, added in lane order to the f32 local `s`.
 */
const laneSum = (s: number, v: number): number[] => [
  ...get(s),
  ...[0, 1, 2, 3].flatMap((l) => [...get(v), ...op.lane(l), ...op.f32add]),
  ...set(s),
];

/**
 * The read-back statistics of a row, accumulated per vector of a gradient `g` (local) and of the
 * point `x` (local) by {@link statsVector} and stored per row by {@link statsRow}: the float64 sum
 * of squares of `rows.ts`' `rowStats` / the `sq` function (lanes 0, 1 in `a01`, lanes 2, 3 in
 * `a23`, squared in float64, added as ((s0 + s1) + s2) + s3 at the end of the row, then added to
 * acc[r] (float64) as `rowStats` adds layer after layer) and the finiteness of x (Σ x·0 per lane
 * stays 0, as the `fin` function; fin[r] (int32) ← fin[r] AND that).
 */
const statsVector = (L: {g: number; x: number; a01: number; a23: number; facc: number; tmp: number; zero: number}): number[] => [
  ...get(L.a01), ...get(L.g), ...op.promote, 0x22, ...uleb(L.tmp), ...get(L.tmp), ...op.f64x2mul, ...op.f64x2add, ...set(L.a01),
  ...get(L.a23), ...get(L.g), ...get(L.g), ...op.high, ...op.promote, 0x22, ...uleb(L.tmp), ...get(L.tmp), ...op.f64x2mul, ...op.f64x2add, ...set(L.a23),
  ...get(L.facc), ...get(L.x), ...get(L.zero), ...op.mul, ...op.add, ...set(L.facc),
];
const statsRow = (P: {acc: number; fin: number}, L: {r: number; addr: number; a01: number; a23: number; facc: number; zero: number}): number[] => [
  ...get(P.acc), ...get(L.r), ...op.i32const(3), 0x74 /* i32.shl */, ...op.i32add, ...set(L.addr),
  ...get(L.addr), ...get(L.addr), ...op.f64load,
  ...get(L.a01), ...op.f64lane(0), ...get(L.a01), ...op.f64lane(1), ...op.f64add,
  ...get(L.a23), ...op.f64lane(0), ...op.f64add, ...get(L.a23), ...op.f64lane(1), ...op.f64add,
  ...op.f64add, ...op.f64store,
  ...get(P.fin), ...get(L.r), ...op.i32const(2), 0x74 /* i32.shl */, ...op.i32add, ...set(L.addr),
  ...get(L.addr), ...get(L.addr), ...op.i32load, ...get(L.facc), ...get(L.zero), ...op.eq, ...op.allTrue, ...op.i32and, ...op.i32store,
];
/** Zeroes the row accumulators of {@link statsVector}. */
const statsReset = (L: {a01: number; a23: number; facc: number; zero: number}): number[] => [...get(L.zero), ...set(L.a01), ...get(L.zero), ...set(L.a23), ...get(L.zero), ...set(L.facc)];

/**
 * `pq(d, gt, gOut, j, B, rowBytes, hasGt, hasDir, dOut, hasStats, acc, fin, −λ, −2λ, 2λ)`: a quadratic penalty's terms of one evaluation,
 * per row r: s = Σ d² (float32, in the order of the `Sum` kernel), j[r] ← j[r] + (−λ)·s, and per
 * entry gOut = gt + (−2λ)·d (gOut = (−2λ)·d when `hasGt` is 0) — the tfjs ops of
 * `penaltyValueAndGradient` (quadratic) and of the solvers' `evaluate` (taped + closed-form
 * gradient), in their order; with `hasDir`, also the search direction dOut = gOut / (2λ) (the
 * `RealDiv` of `linearisedDirection` for a quadratic penalty); with `hasStats`, the read-back
 * statistics of gOut and d ({@link statsVector}).
 */
function quadraticTermsBody(): number[] {
  const P = {d: 0, gt: 1, gOut: 2, j: 3, B: 4, rowBytes: 5, hasGt: 6, hasDir: 7, dOut: 8, hasStats: 9, acc: 10, fin: 11, negLam: 12, neg2Lam: 13, twoLam: 14};
  const L = {r: 15, p: 16, end: 17, addr: 18, s: 19, v: 20, sq: 21, n2: 22, g: 23, l2: 24, a01: 25, a23: 26, facc: 27, tmp: 28, zero: 29};
  const at = (base: number): number[] => [...get(base), ...get(L.p), ...op.i32add];
  const body = [
    ...get(P.neg2Lam), ...op.splat, ...set(L.n2),
    ...get(P.twoLam), ...op.splat, ...set(L.l2),
    ...op.f32const(0), ...op.splat, ...set(L.zero),
    0x02, 0x40, // block rows
    0x03, 0x40, // loop rows
    ...get(L.r), ...get(P.B), ...op.i32ltU, ...op.i32eqz, 0x0d, 0x01,
    ...get(L.p), ...get(P.rowBytes), ...op.i32add, ...set(L.end),
    ...op.f32const(0), ...set(L.s),
    ...statsReset(L),
    0x02, 0x40, // block cols
    0x03, 0x40, // loop cols
    ...get(L.p), ...get(L.end), ...op.i32ltU, ...op.i32eqz, 0x0d, 0x01,
    ...at(P.d), ...op.load, ...set(L.v),
    ...get(L.v), ...get(L.v), ...op.mul, ...set(L.sq),
    ...laneSum(L.s, L.sq),
    ...get(L.n2), ...get(L.v), ...op.mul, ...set(L.g),
    ...get(P.hasGt), 0x04, 0x40, ...at(P.gt), ...op.load, ...get(L.g), ...op.add, ...set(L.g), 0x0b,
    ...at(P.gOut), ...get(L.g), ...op.store,
    ...get(P.hasDir), 0x04, 0x40, ...at(P.dOut), ...get(L.g), ...get(L.l2), ...op.div, ...op.store, 0x0b,
    ...get(P.hasStats), 0x04, 0x40, ...statsVector({...L, g: L.g, x: L.v}), 0x0b,
    ...get(L.p), ...op.i32const(16), ...op.i32add, ...set(L.p),
    0x0c, 0x00,
    0x0b, // end loop cols
    0x0b, // end block cols
    ...get(P.j), ...get(L.r), ...op.i32const(2), 0x74 /* i32.shl */, ...op.i32add, ...set(L.addr),
    ...get(L.addr), ...get(L.addr), ...op.f32load, ...get(P.negLam), ...get(L.s), ...op.f32mul, ...op.f32add, ...op.f32store,
    ...get(P.hasStats), 0x04, 0x40, ...statsRow(P, L), 0x0b,
    ...get(L.r), ...op.i32const(1), ...op.i32add, ...set(L.r),
    0x0c, 0x00,
    0x0b, // end loop rows
    0x0b, // end block rows
    0x0b,
  ];
  return [...vec([[...uleb(4), I32], [...uleb(1), F32], [...uleb(10), V128]]), ...body];
}

/**
 * `pl(d, base, gt, ball, box, gOut, j, B, rowBytes, hasGt, hasDir, hasExcess, dOut, hasStats, acc, fin, ε, lo, hi, −2λ, 2λ_box, −λ, λ_box, 2λ_dir)`:
 * an L∞ + box penalty's terms of one evaluation, per entry the operations of the `pen` kernel
 * (ball = d − clip(d, −ε, ε); n = base + d; box = clip(n, lo, hi) − n; grad = (−2λ)·ball +
 * (2λ_box)·box) with gOut = gt + grad (grad when `hasGt` is 0), and per row r the row sums of
 * ball² and box² in the `Sum` kernel's order and j[r] ← j[r] + ((−λ)·Σball² − λ_box·Σbox²): the
 * tfjs ops of `penaltyValueAndGradient` (L∞ + box) and of `evaluate`, in their order. With
 * `hasExcess`, the excesses ball and box are written out. With `hasDir`, the search direction
 * dOut at d (the `dir` kernel's operations with g = gOut, A = ball, C = box), its constants from
 * the finite base as `linearisedDirection` computes them: relu(hi − base) and relu(base − lo)
 * clamped to [0, ε] (k1) and [ε, ∞) (k2). With `hasStats`, the read-back statistics of gOut and d.
 */
function linfBoxTermsBody(): number[] {
  const P = {d: 0, base: 1, gt: 2, ball: 3, box: 4, gOut: 5, j: 6, B: 7, rowBytes: 8, hasGt: 9, hasDir: 10, hasExcess: 11, dOut: 12, hasStats: 13, acc: 14, fin: 15, eps: 16, lo: 17, hi: 18, m2l: 19, lb2: 20, negLam: 21, boxLam: 22, lamDir: 23};
  const L = {r: 24, p: 25, end: 26, addr: 27, sb: 28, sx: 29, x: 30, a: 31, n: 32, c: 33, t: 34, eps: 35, neps: 36, lo: 37, hi: 38, m2l: 39, lb2: 40, gc: 41, up: 42, down: 43, k1: 44, k2: 45, v1: 46, v: 47, lamD: 48, one: 49, zero: 50, half: 51, bv: 52, ku: 53, kd: 54, a01: 55, a23: 56, facc: 57, tmp: 58};
  const step = (x: number[]): number[] => [...get(L.one), ...get(L.zero), ...x, ...get(L.zero), ...op.gt, ...op.bitselect];
  const at = (base: number): number[] => [...get(base), ...get(L.p), ...op.i32add];
  const splatParam = (p: number, l: number): number[] => [...get(p), ...op.splat, ...set(l)];
  const body = [
    ...splatParam(P.eps, L.eps),
    ...get(P.eps), 0x8c /* f32.neg */, ...op.splat, ...set(L.neps),
    ...splatParam(P.lo, L.lo),
    ...splatParam(P.hi, L.hi),
    ...splatParam(P.m2l, L.m2l),
    ...splatParam(P.lb2, L.lb2),
    ...splatParam(P.lamDir, L.lamD),
    ...op.f32const(1), ...op.splat, ...set(L.one),
    ...op.f32const(0), ...op.splat, ...set(L.zero),
    ...op.f32const(0.5), ...op.splat, ...set(L.half),
    0x02, 0x40, // block rows
    0x03, 0x40, // loop rows
    ...get(L.r), ...get(P.B), ...op.i32ltU, ...op.i32eqz, 0x0d, 0x01,
    ...get(L.p), ...get(P.rowBytes), ...op.i32add, ...set(L.end),
    ...op.f32const(0), ...set(L.sb),
    ...op.f32const(0), ...set(L.sx),
    ...statsReset(L),
    0x02, 0x40, // block cols
    0x03, 0x40, // loop cols
    ...get(L.p), ...get(L.end), ...op.i32ltU, ...op.i32eqz, 0x0d, 0x01,
    ...at(P.d), ...op.load, ...set(L.x),
    // ball = d − clip(d, −ε, ε)
    ...get(L.x), ...get(L.eps), ...get(L.neps), ...get(L.x), ...op.pmax, ...op.pmin, ...op.sub, ...set(L.a),
    ...get(P.hasExcess), 0x04, 0x40, ...at(P.ball), ...get(L.a), ...op.store, 0x0b,
    ...get(L.a), ...get(L.a), ...op.mul, ...set(L.t),
    ...laneSum(L.sb, L.t),
    // box = clip(n, lo, hi) − n, n = base + d
    ...at(P.base), ...op.load, ...set(L.bv),
    ...get(L.bv), ...get(L.x), ...op.add, ...set(L.n),
    ...get(L.hi), ...get(L.lo), ...get(L.n), ...op.pmax, ...op.pmin, ...get(L.n), ...op.sub, ...set(L.c),
    ...get(P.hasExcess), 0x04, 0x40, ...at(P.box), ...get(L.c), ...op.store, 0x0b,
    ...get(L.c), ...get(L.c), ...op.mul, ...set(L.t),
    ...laneSum(L.sx, L.t),
    // grad = (−2λ)·ball + (2λ_box)·box, plus the taped gradient
    ...get(L.m2l), ...get(L.a), ...op.mul, ...get(L.lb2), ...get(L.c), ...op.mul, ...op.add, ...set(L.t),
    ...get(P.hasGt), 0x04, 0x40, ...at(P.gt), ...op.load, ...get(L.t), ...op.add, ...set(L.t), 0x0b,
    ...at(P.gOut), ...get(L.t), ...op.store,
    // the search direction at this point (the `dir` kernel's operations, with g = t, A = ball, C = box)
    ...get(P.hasDir), 0x04, 0x40,
    ...get(L.t), ...get(L.lamD), ...get(L.a), ...get(L.c), ...op.sub, ...op.mul, ...op.add, ...set(L.gc),
    ...step(get(L.gc)), ...set(L.up),
    ...step([...get(L.gc), ...op.neg]), ...set(L.down),
    // the constants: ku = relu(hi − base), kd = relu(base − lo) (pmax(0, ·): relu for non-NaN, −0 → +0);
    // k1 = clip(k, 0, ε) = pmin(ε, pmax(0, k)) = pmin(ε, k), k2 = clip(k, ε, ∞) = pmax(ε, k) for the finite k ≥ +0
    ...get(L.zero), ...get(L.hi), ...get(L.bv), ...op.sub, ...op.pmax, ...set(L.ku),
    ...get(L.zero), ...get(L.bv), ...get(L.lo), ...op.sub, ...op.pmax, ...set(L.kd),
    ...get(L.up), ...get(L.eps), ...get(L.ku), ...op.pmin, ...op.mul, ...get(L.down), ...get(L.eps), ...get(L.kd), ...op.pmin, ...op.mul, ...op.add, ...set(L.k1),
    ...get(L.up), ...get(L.eps), ...get(L.ku), ...op.pmax, ...op.mul, ...get(L.down), ...get(L.eps), ...get(L.kd), ...op.pmax, ...op.mul, ...op.add, ...set(L.k2),
    ...get(L.k1), ...get(L.gc), ...op.abs, ...get(L.lamD), ...op.div, ...op.add, ...set(L.v1),
    // relu(v1 − k2) as pmax(0, ·): the same for every non-NaN value (NaN only in rows whose gradient is not finite)
    ...get(L.v1), ...get(L.half), ...get(L.zero), ...get(L.v1), ...get(L.k2), ...op.sub, ...op.pmax, ...op.mul, ...op.sub, ...set(L.v),
    ...at(P.dOut),
    ...get(L.up), ...get(L.down), ...op.sub, ...get(L.v), ...op.mul,
    ...get(L.up), ...get(L.down), ...op.add, ...get(L.x), ...op.mul, ...op.sub,
    ...op.store,
    0x0b,
    ...get(P.hasStats), 0x04, 0x40, ...statsVector({...L, g: L.t, x: L.x}), 0x0b,
    ...get(L.p), ...op.i32const(16), ...op.i32add, ...set(L.p),
    0x0c, 0x00,
    0x0b, // end loop cols
    0x0b, // end block cols
    ...get(P.j), ...get(L.r), ...op.i32const(2), 0x74 /* i32.shl */, ...op.i32add, ...set(L.addr),
    ...get(L.addr), ...get(L.addr), ...op.f32load,
    ...get(P.negLam), ...get(L.sb), ...op.f32mul, ...get(P.boxLam), ...get(L.sx), ...op.f32mul, ...op.f32sub,
    ...op.f32add, ...op.f32store,
    ...get(P.hasStats), 0x04, 0x40, ...statsRow(P, L), 0x0b,
    ...get(L.r), ...op.i32const(1), ...op.i32add, ...set(L.r),
    0x0c, 0x00,
    0x0b, // end loop rows
    0x0b, // end block rows
    0x0b,
  ];
  return [...vec([[...uleb(4), I32], [...uleb(2), F32], [...uleb(29), V128]]), ...body];
}

/** `add(a, b, out, bytes)`: out = a + b, four lanes at a time (bytes a multiple of 16). */
function addBody(): number[] {
  const P = {a: 0, b: 1, out: 2, bytes: 3};
  const L = {i: 4};
  const at = (p: number): number[] => [...get(p), ...get(L.i), ...op.i32add];
  const body = [
    0x02, 0x40,
    0x03, 0x40,
    ...get(L.i), ...get(P.bytes), ...op.i32ltU, ...op.i32eqz, 0x0d, 0x01,
    ...at(P.out), ...at(P.a), ...op.load, ...at(P.b), ...op.load, ...op.add, ...op.store,
    ...get(L.i), ...op.i32const(16), ...op.i32add, ...set(L.i),
    0x0c, 0x00,
    0x0b,
    0x0b,
    0x0b,
  ];
  return [...vec([[...uleb(1), I32]]), ...body];
}

function penaltyBody(): number[] {
  const P = {d: 0, base: 1, ball: 2, box: 3, grad: 4, ballSq: 5, boxSq: 6, bytes: 7, eps: 8, lo: 9, hi: 10, m2l: 11, lb2: 12};
  const L = {i: 13, x: 14, a: 15, n: 16, c: 17, eps: 18, neps: 19, lo: 20, hi: 21, m2l: 22, lb2: 23};
  const at = (p: number): number[] => [...get(p), ...get(L.i), ...op.i32add, ...op.load];
  const to = (p: number): number[] => [...get(p), ...get(L.i), ...op.i32add];
  const splatParam = (p: number, l: number): number[] => [...get(p), ...op.splat, ...set(l)];
  const body = [
    ...splatParam(P.eps, L.eps),
    ...get(P.eps), 0x8c /* f32.neg */, ...op.splat, ...set(L.neps),
    ...splatParam(P.lo, L.lo),
    ...splatParam(P.hi, L.hi),
    ...splatParam(P.m2l, L.m2l),
    ...splatParam(P.lb2, L.lb2),
    0x02, 0x40,
    0x03, 0x40,
    ...get(L.i), ...get(P.bytes), ...op.i32ltU, ...op.i32eqz, 0x0d, 0x01,
    ...at(P.d), ...set(L.x),
    // ball = d − clip(d, −ε, ε)
    ...get(L.x), ...get(L.x), ...get(L.neps), ...op.max, ...get(L.eps), ...op.min, ...op.sub, ...set(L.a),
    ...to(P.ball), ...get(L.a), ...op.store,
    ...to(P.ballSq), ...get(L.a), ...get(L.a), ...op.mul, ...op.store,
    // box = clip(n, lo, hi) − n, n = base + d
    ...at(P.base), ...get(L.x), ...op.add, ...set(L.n),
    ...get(L.n), ...get(L.lo), ...op.max, ...get(L.hi), ...op.min, ...get(L.n), ...op.sub, ...set(L.c),
    ...to(P.box), ...get(L.c), ...op.store,
    ...to(P.boxSq), ...get(L.c), ...get(L.c), ...op.mul, ...op.store,
    // grad = (−2λ)·ball + (2λ_box)·box
    ...to(P.grad), ...get(L.m2l), ...get(L.a), ...op.mul, ...get(L.lb2), ...get(L.c), ...op.mul, ...op.add, ...op.store,
    ...get(L.i), ...op.i32const(16), ...op.i32add, ...set(L.i),
    0x0c, 0x00,
    0x0b,
    0x0b,
    0x0b,
  ];
  return [...vec([[...uleb(1), I32], [...uleb(10), V128]]), ...body];
}

interface WasmBackendLike {
  wasm?: {asm?: {memory?: unknown}};
  dataIdMap: {get(id: object): {memoryOffset: number} | undefined};
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  typedArrayFromHeap(t: tf.TensorInfo): Float32Array | Int32Array | Uint8Array;
  disposeData(dataId: object, force?: boolean): boolean;
}

type DirectionFn = (...args: number[]) => void;
interface SimdFns {
  dir: DirectionFn;
  pen: DirectionFn;
  sq: (ptr: number, bytes: number) => number;
  fin: (ptr: number, bytes: number) => number;
  step: DirectionFn;
  pq: DirectionFn;
  pl: DirectionFn;
  add: DirectionFn;
}
const instances = new WeakMap<object, SimdFns | null>();

/** The part of the WebAssembly JavaScript API used here (the package's TypeScript lib has no DOM/wasm types). */
interface WasmApi {
  Memory: abstract new (...args: never[]) => object;
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => {exports: Record<string, unknown>};
}
const WASM = (globalThis as unknown as {WebAssembly?: WasmApi}).WebAssembly;

/** The kernel function for the memory of `backend` (null when it cannot be instantiated there). */
function simdFor(backend: WasmBackendLike): SimdFns | null {
  const memory = backend.wasm?.asm?.memory;
  if (WASM == null || !(memory instanceof WASM.Memory)) return null;
  if (!instances.has(memory)) {
    let fns: SimdFns | null = null;
    try {
      const inst = new WASM.Instance(new WASM.Module(directionModule()), {env: {memory}});
      const e = inst.exports as Record<string, unknown>;
      fns = {
        dir: e.dir as DirectionFn,
        pen: e.pen as DirectionFn,
        sq: e.sq as SimdFns['sq'],
        fin: e.fin as SimdFns['fin'],
        step: e.step as DirectionFn,
        pq: e.pq as DirectionFn,
        pl: e.pl as DirectionFn,
        add: e.add as DirectionFn,
      };
    } catch {
      fns = null; // no SIMD, or a shared (threaded) memory
    }
    instances.set(memory, fns);
  }
  return instances.get(memory) ?? null;
}

function linfBoxDirection({inputs, backend, attrs}: {inputs: tf.NamedTensorInfoMap; backend: unknown; attrs?: tf.NamedAttrMap}): tf.TensorInfo {
  const b = backend as WasmBackendLike;
  const fn = simdFor(b)?.dir;
  if (fn == null) throw new Error(`${LINF_BOX_DIRECTION}: the SIMD module is not available on this backend`);
  const t = inputs as Record<string, tf.TensorInfo>;
  const out = b.makeOutput(t.g.shape, 'float32');
  const ptr = (x: tf.TensorInfo) => (b.dataIdMap.get(x.dataId) as {memoryOffset: number}).memoryOffset;
  const size = t.g.shape.reduce((a, c) => a * c, 1);
  fn(ptr(t.g), ptr(t.d), ptr(t.A), ptr(t.C), ptr(t.k1Up), ptr(t.k1Down), ptr(t.k2Up), ptr(t.k2Down), ptr(out), size * 4, Number(attrs?.twoLambda));
  return out;
}

/**
 * True when {@link linfBoxDirectionKernel} can run now: wasm backend, host kernels enabled, no
 * gradient tape recording, and the SIMD module instantiates on the backend's memory (registering
 * the kernel on first use).
 */
export function simdKernelsAvailable(): boolean {
  if (!hostKernelsEnabled()) return false;
  if ((tf.engine() as unknown as {isTapeOn(): boolean}).isTapeOn()) return false;
  if (tf.getBackend() !== 'wasm') return false;
  if (simdFor(tf.backend() as unknown as WasmBackendLike) == null) return false;
  if (tf.getKernel(LINF_BOX_DIRECTION, 'wasm') == null) {
    tf.registerKernel({kernelName: LINF_BOX_DIRECTION, backendName: 'wasm', kernelFunc: linfBoxDirection as unknown as tf.KernelFunc});
  }
  if (tf.getKernel(LINF_BOX_PENALTY, 'wasm') == null) {
    tf.registerKernel({kernelName: LINF_BOX_PENALTY, backendName: 'wasm', kernelFunc: linfBoxPenalty as unknown as tf.KernelFunc});
  }
  if (tf.getKernel(STEP_ROWS, 'wasm') == null) {
    tf.registerKernel({kernelName: STEP_ROWS, backendName: 'wasm', kernelFunc: stepRowsSimd as unknown as tf.KernelFunc});
  }
  if (tf.getKernel(PENALTY_TERMS, 'wasm') == null) {
    tf.registerKernel({kernelName: PENALTY_TERMS, backendName: 'wasm', kernelFunc: penaltyTerms as unknown as tf.KernelFunc});
  }
  return true;
}

/**
 * The L∞ + box direction (equal curvatures) in one SIMD pass; same values, bit for bit, as the
 * tfjs ops of `linearisedDirection`. All inputs float32 of one shape whose size is a multiple of 4;
 * call only when {@link simdKernelsAvailable}.
 */
export function linfBoxDirectionKernel(
  g: tf.Tensor,
  d: tf.Tensor,
  A: tf.Tensor,
  C: tf.Tensor,
  k: {k1Up: tf.Tensor; k1Down: tf.Tensor; k2Up: tf.Tensor; k2Down: tf.Tensor},
  twoLambda: number,
): tf.Tensor {
  return tf.engine().runKernel(LINF_BOX_DIRECTION, {g, d, A, C, ...k} as unknown as tf.NamedTensorMap, {twoLambda}) as tf.Tensor;
}

function linfBoxPenalty({inputs, backend, attrs}: {inputs: tf.NamedTensorInfoMap; backend: unknown; attrs?: tf.NamedAttrMap}): tf.TensorInfo[] {
  const b = backend as WasmBackendLike;
  const fn = simdFor(b)?.pen;
  if (fn == null) throw new Error(`${LINF_BOX_PENALTY}: the SIMD module is not available on this backend`);
  const {d, base} = inputs as Record<string, tf.TensorInfo>;
  const outs = [0, 1, 2, 3, 4].map(() => b.makeOutput(d.shape, 'float32'));
  const ptr = (x: tf.TensorInfo) => (b.dataIdMap.get(x.dataId) as {memoryOffset: number}).memoryOffset;
  const size = d.shape.reduce((a, c) => a * c, 1);
  const a = attrs as Record<string, number>;
  fn(ptr(d), ptr(base), ...outs.map(ptr), size * 4, a.epsilon, a.lo, a.hi, a.minusTwoLambda, a.twoBoxLambda);
  return outs;
}

/**
 * The elementwise part of an L∞ + box penalty's value and gradient in one SIMD pass: [ball, box,
 * grad, ball², box²] with ball = d − clip(d, −ε, ε), box = clip(base + d, lo, hi) − (base + d),
 * grad = (−2λ)·ball + (2λ_box)·box — bit for bit the tfjs ops of `penaltyValueAndGradient`.
 * d and base float32 of one shape whose size is a multiple of 4; call only when
 * {@link simdKernelsAvailable}.
 */
export function linfBoxPenaltyKernel(
  d: tf.Tensor,
  base: tf.Tensor,
  c: {epsilon: number; lo: number; hi: number; lambda: number; boxLambda: number},
): [tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor] {
  const attrs = {epsilon: c.epsilon, lo: c.lo, hi: c.hi, minusTwoLambda: -2 * c.lambda, twoBoxLambda: 2 * c.boxLambda};
  return tf.engine().runKernel(LINF_BOX_PENALTY, {d, base} as unknown as tf.NamedTensorMap, attrs) as unknown as [tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor];
}

/**
 * Row reductions on the wasm backend's memory for the host row kernels (`rows.ts`): `squares(t, r)`
 * = Σ over row r of t² (the float64 value of `dotRange(v, v, …)`), `finite(t, r)` = every entry of
 * row r finite. Null unless the SIMD module runs on this backend and the host kernels are enabled.
 * Rows must hold a multiple of 4 entries (the caller checks). @internal
 */
export function simdRowReductions(backend: unknown): {squares(t: tf.TensorInfo, row: number, m: number): number; finite(t: tf.TensorInfo, row: number, m: number): boolean} | null {
  if (!hostKernelsEnabled()) return null;
  const b = backend as WasmBackendLike;
  if (typeof b.makeOutput !== 'function' || b.dataIdMap == null) return null;
  const fns = simdFor(b);
  if (fns == null) return null;
  const ptr = (x: tf.TensorInfo) => (b.dataIdMap.get(x.dataId) as {memoryOffset: number}).memoryOffset;
  return {
    squares: (t, row, m) => fns.sq(ptr(t) + row * m * 4, m * 4),
    finite: (t, row, m) => fns.fin(ptr(t) + row * m * 4, m * 4) === 1,
  };
}

/**
 * A kernel function computing a + b (float32, one shape, size a multiple of 4) in one SIMD pass
 * on the wasm backend's memory — the IEEE float32 sums of the backend's `Add` (which runs a scalar
 * broadcasting loop, ≈ 4× slower on a 128×784 tensor) — or null when the SIMD module does not run
 * on `backend` or the host kernels are disabled. For the Disturbance sites' `addUnsaved`, which
 * also runs under a gradient tape (it has its own gradient). @internal
 */
export function simdAddFor(backend: unknown): ((a: tf.TensorInfo, b: tf.TensorInfo) => tf.TensorInfo) | null {
  if (!hostKernelsEnabled()) return null;
  const b = backend as WasmBackendLike;
  if (typeof b.makeOutput !== 'function' || b.dataIdMap == null) return null;
  const fn = simdFor(b)?.add;
  if (fn == null) return null;
  return (x, y) => {
    const out = b.makeOutput(x.shape, 'float32');
    const ptr = (v: tf.TensorInfo) => (b.dataIdMap.get(v.dataId) as {memoryOffset: number}).memoryOffset;
    fn(ptr(x), ptr(y), ptr(out), x.shape.reduce((p, c) => p * c, 1) * 4);
    return out;
  };
}

function stepRowsSimd({inputs, backend, attrs}: {inputs: tf.NamedTensorInfoMap; backend: unknown; attrs?: tf.NamedAttrMap}): tf.TensorInfo {
  const b = backend as WasmBackendLike;
  const fn = simdFor(b)?.step;
  if (fn == null) throw new Error(`${STEP_ROWS}: the SIMD module is not available on this backend`);
  const t = inputs as Record<string, tf.TensorInfo | undefined>;
  const x = t.x as tf.TensorInfo;
  const out = b.makeOutput(x.shape, 'float32');
  const ptr = (v: tf.TensorInfo | undefined) => (v == null ? 0 : (b.dataIdMap.get(v.dataId) as {memoryOffset: number}).memoryOffset);
  const B = x.shape[0] ?? 1;
  const m = x.shape.slice(1).reduce((a, c) => a * c, 1);
  const signed = t.mag != null;
  fn(ptr(x), ptr(t.p), ptr(t.a), ptr(t.mag), ptr(t.mask), ptr(out), B, m * 4, signed ? 1 : 0, signed && t.mask == null ? 1 : 0, Number(attrs?.c ?? 0));
  return out;
}

/**
 * `stepRows` on wasm in one SIMD pass: x + a_r·q per row (q = p, or sign(p)·mag_r in the rows of
 * `signRows.mask`, every row when it is null, with the wasm `Sign`'s dead zone `c`), bit for bit the
 * tfjs ops. x, p float32 [B, ...] of one shape with rows of a multiple of 4 entries; call only when
 * {@link simdKernelsAvailable}.
 */
export function stepRowsKernel(x: tf.Tensor, a: tf.Tensor1D, p: tf.Tensor, c: number, signRows?: {mask: tf.Tensor1D | null; mag: tf.Tensor1D}): tf.Tensor {
  const inputs: Record<string, tf.Tensor> = {x, p, a};
  if (signRows) {
    inputs.mag = signRows.mag;
    if (signRows.mask) inputs.mask = signRows.mask;
  }
  return tf.engine().runKernel(STEP_ROWS, inputs as unknown as tf.NamedTensorMap, {c}) as tf.Tensor;
}

/**
 * One layer's penalty in {@link penaltyTermsKernel}; with `direction`, the kernel also computes the
 * layer's search direction at d from the full gradient: g/(2λ) for a quadratic penalty
 * (`twoLambda` = 2λ), the L∞ + box direction of the `dir` kernel (`twoLambda` = 2λ; its constants
 * from `base`, which must then be finite) for an L∞ ball with a box. An L∞ + box layer without
 * `direction` also returns its excesses (ball, box) for the direction computed apart.
 */
export type PenaltyTermsLayer =
  | {kind: 'quadratic'; d: tf.Tensor; taped: tf.Tensor | null; lambda: number; direction?: {twoLambda: number}}
  | {
      kind: 'linfBox';
      d: tf.Tensor;
      base: tf.Tensor;
      taped: tf.Tensor | null;
      epsilon: number;
      lo: number;
      hi: number;
      lambda: number;
      boxLambda: number;
      direction?: {twoLambda: number};
    };

/** Numbers per layer in the kernel's `params` attribute. */
const TERMS_PARAMS = 6;

function penaltyTerms({inputs, backend, attrs}: {inputs: tf.NamedTensorInfoMap; backend: unknown; attrs?: tf.NamedAttrMap}): tf.TensorInfo[] {
  const b = backend as WasmBackendLike;
  const fns = simdFor(b);
  if (fns == null) throw new Error(`${PENALTY_TERMS}: the SIMD module is not available on this backend`);
  const t = inputs as Record<string, tf.TensorInfo | undefined>;
  const a = attrs as unknown as {kinds: number[]; taped: number[]; dir: number[]; stats: number; params: number[]};
  const c = t.c as tf.TensorInfo;
  const B = c.shape[0] ?? 1;
  const withStats = a.stats === 1;
  // every output and temporary first (allocating may grow the heap)
  const J = b.makeOutput([B], 'float32');
  const grads = a.kinds.map((_, i) => b.makeOutput((t[`d${i}`] as tf.TensorInfo).shape, 'float32'));
  const excess = a.kinds.map((k, i) => (k === 1 && a.dir[i] !== 1 ? [0, 1].map(() => b.makeOutput((t[`d${i}`] as tf.TensorInfo).shape, 'float32')) : []));
  const dirs = a.kinds.map((_, i) => (a.dir[i] === 1 ? b.makeOutput((t[`d${i}`] as tf.TensorInfo).shape, 'float32') : undefined));
  const stats = withStats ? b.makeOutput([3 * B], 'float32') : undefined;
  // float64 sums of squares and int32 finiteness flags per row (temporaries)
  const acc = withStats ? b.makeOutput([2 * B], 'float32') : undefined;
  const fin = withStats ? b.makeOutput([B], 'int32') : undefined;
  (b.typedArrayFromHeap(J) as Float32Array).set(b.typedArrayFromHeap(c) as Float32Array);
  const ptr = (v: tf.TensorInfo | undefined) => (v == null ? 0 : (b.dataIdMap.get(v.dataId) as {memoryOffset: number}).memoryOffset);
  if (acc && fin) {
    new Float64Array((b.typedArrayFromHeap(acc) as Float32Array).buffer, ptr(acc), B).fill(0);
    (b.typedArrayFromHeap(fin) as Int32Array).fill(1);
  }
  const s = withStats ? 1 : 0;
  a.kinds.forEach((kind, i) => {
    const d = t[`d${i}`] as tf.TensorInfo;
    const rowBytes = (d.shape.slice(1).reduce((x, y) => x * y, 1)) * 4;
    const q = a.params.slice(i * TERMS_PARAMS, (i + 1) * TERMS_PARAMS);
    const gt = a.taped[i] === 1 ? t[`g${i}`] : undefined;
    const D = dirs[i];
    if (kind === 0) {
      fns.pq(ptr(d), ptr(gt), ptr(grads[i]), ptr(J), B, rowBytes, gt ? 1 : 0, D ? 1 : 0, ptr(D), s, ptr(acc), ptr(fin), -q[0], -2 * q[0], q[5]);
    } else {
      const [ball, box] = excess[i];
      const [eps, lo, hi, lam, boxLam, lamDir] = q;
      fns.pl(ptr(d), ptr(t[`b${i}`]), ptr(gt), ptr(ball), ptr(box), ptr(grads[i]), ptr(J), B, rowBytes, gt ? 1 : 0, D ? 1 : 0, ball ? 1 : 0, ptr(D), s, ptr(acc), ptr(fin), eps, lo, hi, -2 * lam, 2 * boxLam, -lam, boxLam, lamDir);
    }
  });
  if (stats && acc && fin) {
    // [J, flags, Σ‖g‖²] as `rowStats` of the gradients and [J, ...d] gives them after `J`
    const sv = b.typedArrayFromHeap(stats) as Float32Array;
    const jv = b.typedArrayFromHeap(J) as Float32Array;
    const av = new Float64Array((b.typedArrayFromHeap(acc) as Float32Array).buffer, ptr(acc), B);
    const fv = b.typedArrayFromHeap(fin) as Int32Array;
    for (let r = 0; r < B; r++) {
      sv[r] = jv[r];
      sv[B + r] = fv[r] === 1 && Number.isFinite(av[r]) && Number.isFinite(jv[r]) ? 1 : 0;
      sv[2 * B + r] = av[r];
    }
    b.disposeData(acc.dataId);
    b.disposeData(fin.dataId);
  }
  return [J, ...grads, ...excess.flat(), ...dirs.filter((v): v is tf.TensorInfo => v != null), ...(stats ? [stats] : [])];
}

/**
 * The penalty terms of one deep-attack gradient evaluation in ONE SIMD pass on wasm: from the
 * taped loss c [B] and, per layer, its disturbance d, the taped gradient of c w.r.t. d (null: c
 * does not depend on d) and its penalty — quadratic (no box), or L∞ with a box on base + d —
 * returns J = c + Σℓ ρℓ(dℓ) per example, the full gradients (taped + closed form) and, per L∞ layer
 * without a fused direction, its excesses {ball, box}. The same float32 operations in the same order as
 * `penaltyValueAndGradient` (with the `pen` kernel), the `Sum` kernel's row sums and `evaluate`'s
 * additions: bit for bit the ≈ 25 tfjs kernels it replaces. Every d (and base, taped gradient)
 * float32 of one shape per layer, rows of a multiple of 4 entries, c float32 [B]; call only when
 * {@link simdKernelsAvailable}. With a layer's `direction`, its search direction at d too
 * (`directions[ℓ]`; bit for bit `linearisedDirection`'s `RealDiv` or `dir` kernel on the full gradient
 * and the excesses). With `stats`, also the solvers' read-back of this point in the same pass:
 * float32 [3B] = [J, 1/0 every entry of the gradients, of J and of every d finite, Σℓ ‖gℓ row‖²],
 * the values of `[J, rowStatsKernel(grads, [J, ...ds])]` (the squares summed in float64 in the
 * order of the `rowStats` kernel), so that no second pass over the gradients is needed.
 */
export function penaltyTermsKernel(
  c: tf.Tensor1D,
  layers: PenaltyTermsLayer[],
  options: {stats?: boolean} = {},
): {value: tf.Tensor1D; grads: tf.Tensor[]; excess: ({ball: tf.Tensor; box: tf.Tensor} | undefined)[]; directions: (tf.Tensor | undefined)[]; stats?: tf.Tensor1D} {
  const inputs: Record<string, tf.Tensor> = {c};
  const params: number[] = [];
  layers.forEach((l, i) => {
    inputs[`d${i}`] = l.d;
    if (l.taped) inputs[`g${i}`] = l.taped;
    if (l.kind === 'linfBox') {
      inputs[`b${i}`] = l.base;
      params.push(l.epsilon, l.lo, l.hi, l.lambda, l.boxLambda, l.direction?.twoLambda ?? 0);
    } else {
      params.push(l.lambda, 0, 0, 0, 0, l.direction?.twoLambda ?? 0);
    }
  });
  const attrs = {
    kinds: layers.map((l) => (l.kind === 'quadratic' ? 0 : 1)),
    taped: layers.map((l) => (l.taped ? 1 : 0)),
    dir: layers.map((l) => (l.direction ? 1 : 0)),
    stats: options.stats ? 1 : 0,
    params,
  };
  const out = tf.engine().runKernel(PENALTY_TERMS, inputs as unknown as tf.NamedTensorMap, attrs as unknown as tf.NamedAttrMap) as unknown as tf.Tensor[];
  const L = layers.length;
  let k = 1 + L;
  const excess = layers.map((l) => (l.kind === 'linfBox' && !l.direction ? {ball: out[k++], box: out[k++]} : undefined));
  const directions = layers.map((l) => (l.direction ? out[k++] : undefined));
  const stats = options.stats ? (out[k++] as tf.Tensor1D) : undefined;
  return {value: out[0] as tf.Tensor1D, grads: out.slice(1, 1 + L), excess, directions, stats};
}
