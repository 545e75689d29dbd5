/**
 * Square attack (Andriushchenko, Croce, Flammarion & Hein, ECCV 2020): a
 * score-based random search that uses no gradients — only the model's
 * outputs — so it is the standard check that a defence does not merely hide
 * its gradients (gradient masking).
 *
 * Per example, minimise the logit margin m = z_y − max_{j≠y} z_j (the example
 * is fooled when m < 0... precisely when m ≤ 0 and the argmax changes) by
 * random square-shaped updates, accepting an update only when it lowers the
 * margin:
 *
 * - **L∞**: start at x + ε·(random ±1 per vertical stripe); each query picks a
 *   random s×s window and sets δ there to ±ε per channel (a random sign,
 *   redrawn until it differs from the current value), then projects.
 * - **L2**: start from a grid of ±"pseudo-Gaussian" blocks scaled to ‖δ‖₂ = ε;
 *   each query moves mass between two random s×s windows, replacing the first
 *   by a fresh pseudo-Gaussian block (keeping ‖δ‖₂ = ε), then clips.
 * - The square side s follows the published schedule: the fraction p of
 *   pixels changed starts at `pInit` (0.8) and halves at 10, 50, 200, 500,
 *   1000, 2000, 4000, 6000 and 8000 of 10,000 iterations (rescaled to
 *   `queries`); s = round(√(p·h·w)) (L2: ≥ 3 and odd).
 *
 * Image layout: inputs `[B, h, w, c]` are images; a flat input `[B, d]` is
 * treated as a square single-channel image when d is a perfect square (e.g.
 * 784 = 28²), else as a 1 × d strip; give `imageShape` to override. All
 * randomness comes from a seeded JS generator; only forward passes run on the
 * backend (one per query, on the examples not yet fooled).
 *
 * @packageDocumentation
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';

import {checkKnownKeys, describeValue} from '../util/options.js';
import {checkBallOptions} from './apgd.js';
import {enforceBall, InputNorm, prng} from './ball.js';
import {labelIndices, LogitFunction, logitFunction} from './logits.js';
import {checkAttackInputs} from './validate.js';

/** Options of {@link squareAttack}. */
export interface SquareOptions {
  /** Radius ε; finite, ≥ 0. */
  epsilon: number;
  /** Threat model; default `'linf'`. */
  norm?: InputNorm;
  /** Queries (forward passes) per example; integer ≥ 1, default 5000. */
  queries?: number;
  /** Initial fraction of pixels changed per query; in (0, 1], default 0.8. */
  pInit?: number;
  /** Valid input range `[lo, hi]`. */
  clip?: [number, number];
  /** Seed (same seed → same result). */
  seed?: number;
  /** `[h, w, c]` layout of one input (default: see the module documentation). */
  imageShape?: [number, number, number];
}

const SQUARE_KEYS = ['epsilon', 'norm', 'queries', 'pInit', 'clip', 'seed', 'imageShape'] as const;

/** Validated Square options (internal). */
export interface ResolvedSquareOptions {
  epsilon: number;
  norm: InputNorm;
  queries: number;
  pInit: number;
  clip?: [number, number];
  seed?: number;
  imageShape?: [number, number, number];
}

/** Result of {@link squareAttackWithInfo}. */
export interface SquareResult {
  /** Adversarial inputs (float32, shape of x, inside the ball and box); the caller disposes it. */
  adversarial: tf.Tensor;
  /** 1 where a point with margin ≤ 0 (misclassified) was found. */
  fooled: Uint8Array;
  /** Batched forward passes spent (1 for the start + 1 per query iteration that still had examples to attack). */
  forwardEvaluations: number;
  /** Queries per example summed over the examples (each example stops once fooled). */
  exampleQueries: number;
}

/** Validates Square options. @internal */
export function resolveSquareOptions(where: string, options: SquareOptions): ResolvedSquareOptions {
  if (options === null || typeof options !== 'object') throw new Error(`${where}: options must be an object with at least {epsilon}; got ${describeValue(options)}.`);
  checkKnownKeys(options, SQUARE_KEYS, where);
  const base = checkBallOptions(where, options);
  const bad = (f: string, want: string, got: unknown) => new Error(`${where}: options.${f} must be ${want}; got ${describeValue(got)}.`);
  const queries = options.queries ?? 5000;
  if (typeof queries !== 'number' || !Number.isInteger(queries) || queries < 1) throw bad('queries', 'an integer >= 1', options.queries);
  const pInit = options.pInit ?? 0.8;
  if (typeof pInit !== 'number' || !(pInit > 0 && pInit <= 1)) throw bad('pInit', 'a number in (0, 1]', options.pInit);
  const s = options.imageShape;
  if (s !== undefined && (!Array.isArray(s) || s.length !== 3 || s.some((v) => typeof v !== 'number' || !Number.isInteger(v) || v < 1))) {
    throw bad('imageShape', 'three positive integers [h, w, c]', s);
  }
  return {...base, queries, pInit, imageShape: s};
}

/** Fraction p of changed pixels at iteration `it` of `queries` (the published schedule, rescaled to 10,000 iterations). */
export function squareP(pInit: number, it: number, queries: number): number {
  const i = Math.floor((it / queries) * 10000);
  const cuts = [10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000];
  let p = pInit;
  for (const c of cuts) if (i > c) p /= 2;
  return p;
}

function layoutOf(shape: number[], given?: [number, number, number]): [number, number, number] {
  const d = shape.slice(1).reduce((a, b) => a * b, 1);
  if (given) {
    if (given[0] * given[1] * given[2] !== d) throw new Error(`squareAttack: options.imageShape [${given.join(', ')}] has ${given[0] * given[1] * given[2]} values but one input has ${d}.`);
    return given;
  }
  if (shape.length === 4) return [shape[1], shape[2], shape[3]];
  if (shape.length === 3) return [shape[1], shape[2], 1];
  const r = Math.round(Math.sqrt(d));
  if (r * r === d) return [r, r, 1];
  return [1, d, 1];
}

/** The pseudo-Gaussian s×s block of the L2 attack (two rectangles of opposite sign, unit L2 norm), maybe transposed. */
function pseudoGaussian(s: number, rnd: () => number): Float64Array {
  const rect = (h: number, w: number): Float64Array => {
    const out = new Float64Array(h * w);
    const ch = Math.floor(h / 2) + 1;
    const cw = Math.floor(w / 2) + 1;
    let r0 = ch - 1;
    let c0 = cw - 1;
    for (let k = 0; k < Math.max(ch, cw); k++) {
      const r1 = Math.min(r0 + 2 * k + 1, h);
      const c1 = Math.min(c0 + 2 * k + 1, w);
      for (let r = Math.max(r0, 0); r < r1; r++) for (let c = Math.max(c0, 0); c < c1; c++) out[r * w + c] += 1 / (k + 1) ** 2;
      r0--;
      c0--;
    }
    let n = 0;
    for (const v of out) n += v * v;
    n = Math.sqrt(n) || 1;
    for (let i = 0; i < out.length; i++) out[i] /= n;
    return out;
  };
  const top = Math.floor(s / 2);
  const a = rect(top, s);
  const b = rect(s - top, s);
  const block = new Float64Array(s * s);
  block.set(a, 0);
  for (let i = 0; i < b.length; i++) block[top * s + i] = -b[i];
  let n = 0;
  for (const v of block) n += v * v;
  n = Math.sqrt(n) || 1;
  for (let i = 0; i < block.length; i++) block[i] /= n;
  if (rnd() > 0.5) {
    const t = new Float64Array(s * s);
    for (let r = 0; r < s; r++) for (let c = 0; c < s; c++) t[c * s + r] = block[r * s + c];
    return t;
  }
  return block;
}

/** Logit margins z_y − max_{j≠y} z_j of the rows `rows` of `data` (row-major [n, d]). */
function margins(logits: LogitFunction, data: Float32Array, rowShape: number[], labels: Int32Array): Float32Array {
  const n = labels.length;
  const m = tf.tidy(() => {
    const z = logits(tf.tensor(data, [n, ...rowShape], 'float32'));
    const mask = tf.oneHot(tf.tensor1d(labels, 'int32'), z.shape[1]);
    const zy = tf.sum(tf.mul(z, mask), 1);
    const other = tf.max(tf.sub(z, tf.mul(mask, 1e30)), 1);
    return tf.sub(zy, other);
  });
  const out = Float32Array.from(m.dataSync());
  m.dispose();
  return out;
}

/**
 * Runs the Square attack on all rows of `xData` (row-major [B, d]) whose
 * `fooled` flag is 0; writes results into `adv` and `fooled`. @internal
 */
export function squareCascade(
  logits: LogitFunction,
  xData: Float32Array,
  rowShape: number[],
  labels: Int32Array,
  o: ResolvedSquareOptions,
  adv: Float32Array,
  fooled: Uint8Array,
  seed: number | undefined,
): {forwardEvaluations: number; exampleQueries: number} {
  const B = labels.length;
  const d = rowShape.reduce((a, b) => a * b, 1);
  const [h, w, c] = layoutOf([B, ...rowShape], o.imageShape);
  const rnd = prng(seed);
  const rows: number[] = [];
  for (let e = 0; e < B; e++) if (!fooled[e]) rows.push(e);
  if (rows.length === 0 || o.epsilon === 0) return {forwardEvaluations: 0, exampleQueries: 0};
  const lo = o.clip ? o.clip[0] : -Infinity;
  const hi = o.clip ? o.clip[1] : Infinity;
  const eps = o.epsilon;
  const idx = (r: number, col: number, ch: number) => (r * w + col) * c + ch;
  const n = rows.length;
  // Per attacked example: clean x, current best point, best margin.
  const xs = new Float32Array(n * d);
  rows.forEach((e, j) => xs.set(xData.subarray(e * d, (e + 1) * d), j * d));
  const ys = Int32Array.from(rows, (e) => labels[e]);
  const best = new Float32Array(n * d);
  const clampBox = (v: number) => Math.min(Math.max(v, lo), hi);

  if (o.norm === 'linf') {
    for (let j = 0; j < n; j++) {
      for (let col = 0; col < w; col++) {
        for (let ch = 0; ch < c; ch++) {
          const sign = rnd() < 0.5 ? -1 : 1;
          for (let r = 0; r < h; r++) {
            const i = j * d + idx(r, col, ch);
            best[i] = clampBox(xs[i] + sign * eps);
          }
        }
      }
    }
  } else {
    const s0 = Math.max(Math.floor(h / 5), 1);
    const start = Math.floor((h - s0 * 5) / 2);
    for (let j = 0; j < n; j++) {
      const delta = new Float64Array(d);
      for (let vh = h === 1 ? 0 : Math.max(start, 0); vh + s0 <= h; vh += s0) {
        for (let vw = h === 1 ? 0 : Math.max(start, 0); vw + s0 <= w; vw += s0) {
          const block = pseudoGaussian(s0, rnd);
          for (let ch = 0; ch < c; ch++) {
            const sign = rnd() < 0.5 ? -1 : 1;
            for (let r = 0; r < s0; r++) for (let q = 0; q < s0; q++) delta[idx(vh + r, vw + q, ch)] += sign * block[r * s0 + q];
          }
        }
      }
      let nrm = 0;
      for (const v of delta) nrm += v * v;
      nrm = Math.sqrt(nrm) || 1;
      for (let i = 0; i < d; i++) best[j * d + i] = clampBox(xs[j * d + i] + (eps * delta[i]) / nrm);
    }
  }
  const margin = margins(logits, best, rowShape, ys);
  let forwardEvaluations = 1;
  let exampleQueries = n;
  const done = new Uint8Array(n);
  for (let j = 0; j < n; j++) if (margin[j] <= 0) done[j] = 1;

  for (let it = 0; it < o.queries; it++) {
    const active: number[] = [];
    for (let j = 0; j < n; j++) if (!done[j]) active.push(j);
    if (active.length === 0) break;
    const p = squareP(o.pInit, it, o.queries);
    let s = Math.max(Math.round(Math.sqrt((p * d) / c)), 1);
    if (o.norm === 'l2') {
      s = Math.max(s, 3);
      if (s % 2 === 0) s++;
    }
    const sh = Math.min(s, h);
    const sw = Math.min(s, w);
    const cand = new Float32Array(active.length * d);
    active.forEach((j, a) => {
      const base = j * d;
      const out = a * d;
      cand.set(best.subarray(base, base + d), out);
      const vh = Math.floor(rnd() * (h - sh + 1));
      const vw = Math.floor(rnd() * (w - sw + 1));
      if (o.norm === 'linf') {
        for (let ch = 0; ch < c; ch++) {
          // A new sign per channel for the window; redraw until the window changes (at most a few tries).
          for (let tries = 0; tries < 10; tries++) {
            const sign = rnd() < 0.5 ? -1 : 1;
            let changed = false;
            for (let r = vh; r < vh + sh; r++) {
              for (let q = vw; q < vw + sw; q++) {
                const i = idx(r, q, ch);
                const target = clampBox(xs[base + i] + sign * eps);
                if (Math.fround(target) !== best[base + i]) changed = true;
                cand[out + i] = target;
              }
            }
            if (changed) break;
          }
        }
      } else {
        const vh2 = Math.floor(rnd() * (h - sh + 1));
        const vw2 = Math.floor(rnd() * (w - sw + 1));
        const delta = new Float64Array(d);
        for (let i = 0; i < d; i++) delta[i] = best[base + i] - xs[base + i];
        let normImage = 0;
        for (const v of delta) normImage += v * v;
        const inWin = (r: number, q: number, r0: number, q0: number) => r >= r0 && r < r0 + sh && q >= q0 && q < q0 + sw;
        let normWindows = 0;
        for (let r = 0; r < h; r++) {
          for (let q = 0; q < w; q++) {
            if (!inWin(r, q, vh, vw) && !inWin(r, q, vh2, vw2)) continue;
            for (let ch = 0; ch < c; ch++) normWindows += delta[idx(r, q, ch)] ** 2;
          }
        }
        const block = sh === sw ? pseudoGaussian(sh, rnd) : new Float64Array(0);
        for (let ch = 0; ch < c; ch++) {
          let nw1 = 0;
          for (let r = vh; r < vh + sh; r++) for (let q = vw; q < vw + sw; q++) nw1 += delta[idx(r, q, ch)] ** 2;
          nw1 = Math.sqrt(nw1);
          const sign = rnd() < 0.5 ? -1 : 1;
          const nd = new Float64Array(sh * sw);
          let nn = 0;
          for (let r = 0; r < sh; r++) {
            for (let q = 0; q < sw; q++) {
              const bv = sh === sw ? block[r * sw + q] : 1 / Math.sqrt(sh * sw);
              const v = sign * bv + delta[idx(vh + r, vw + q, ch)] / (1e-12 + nw1);
              nd[r * sw + q] = v;
              nn += v * v;
            }
          }
          const scale = Math.sqrt(Math.max(eps * eps - normImage, 0) / c + normWindows) / (1e-12 + Math.sqrt(nn));
          for (let r = 0; r < sh; r++) for (let q = 0; q < sw; q++) delta[idx(vh2 + r, vw2 + q, ch)] = 0;
          for (let r = 0; r < sh; r++) for (let q = 0; q < sw; q++) delta[idx(vh + r, vw + q, ch)] = nd[r * sw + q] * scale;
        }
        let nrm = 0;
        for (const v of delta) nrm += v * v;
        nrm = Math.sqrt(nrm);
        const f = nrm > 0 ? eps / nrm : 0;
        for (let i = 0; i < d; i++) cand[out + i] = clampBox(xs[base + i] + delta[i] * f);
      }
    });
    const m = margins(logits, cand, rowShape, Int32Array.from(active, (j) => ys[j]));
    forwardEvaluations++;
    exampleQueries += active.length;
    active.forEach((j, a) => {
      if (m[a] < margin[j] || m[a] <= 0) {
        margin[j] = m[a];
        best.set(cand.subarray(a * d, (a + 1) * d), j * d);
        if (m[a] <= 0) done[j] = 1;
      }
    });
  }
  rows.forEach((e, j) => {
    if (done[j]) {
      fooled[e] = 1;
      adv.set(best.subarray(j * d, (j + 1) * d), e * d);
    }
  });
  return {forwardEvaluations, exampleQueries};
}

/**
 * The Square attack; see the module documentation. Returns the adversarial
 * inputs (the clean input for examples not fooled) and which were fooled.
 *
 * @param model A single-input, single-output classifier.
 * @param x Clean inputs `[B, ...inputShape]`, inside `options.clip` if given.
 * @param y Labels (one-hot or class indices).
 * @param options See {@link SquareOptions}.
 */
export function squareAttackWithInfo(model: tfl.LayersModel, x: tf.Tensor, y: tf.Tensor, options: SquareOptions): SquareResult {
  const where = 'squareAttack';
  const o = resolveSquareOptions(where, options);
  checkAttackInputs(where, model, x, y);
  return runSquareResolved(where, model, x, y, o);
}

/** Square with resolved options (the registry's entry point). @internal */
export function runSquareResolved(where: string, model: tfl.LayersModel, x: tf.Tensor, y: tf.Tensor, o: ResolvedSquareOptions): SquareResult {
  const logits = logitFunction(model);
  const b = x.shape[0];
  const labelsT = labelIndices(y, logits.classes, where);
  const labels = Int32Array.from(labelsT.dataSync());
  labelsT.dispose();
  const xData = Float32Array.from(x.dataSync());
  const adv = Float32Array.from(xData);
  const fooled = new Uint8Array(b);
  const cost = squareCascade(logits, xData, x.shape.slice(1), labels, o, adv, fooled, o.seed);
  enforceBall(adv, xData, b, o.norm, o.epsilon, o.clip);
  return {adversarial: tf.tensor(adv, x.shape, 'float32'), fooled, ...cost};
}

/** {@link squareAttackWithInfo} returning only the adversarial inputs. */
export function squareAttack(model: tfl.LayersModel, x: tf.Tensor, y: tf.Tensor, options: SquareOptions): tf.Tensor {
  return squareAttackWithInfo(model, x, y, options).adversarial;
}
