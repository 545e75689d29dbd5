/**
 * Auto-PGD (APGD) of Croce & Hein (2020), "Reliable evaluation of adversarial
 * robustness with an ensemble of diverse parameter-free attacks": PGD with
 * momentum and a step size that adapts itself, so it needs no tuning.
 *
 * Per example, with N iterations:
 * - start at a random point of the ε-ball (L∞: x + ε·t/‖t‖∞, t ~ U[−1,1]ⁿ;
 *   L2: x + ε·g/‖g‖₂, g Gaussian), step size η = 2ε;
 * - z = P(x_k + η·s(∇L(x_k))), x_{k+1} = P(x_k + α(z − x_k) + (1 − α)(x_k − x_{k−1}))
 *   with α = 0.75 (α = 1 at the first step), s = sign (L∞) or ∇/‖∇‖₂ (L2),
 *   P the projection onto the ε-ball ∩ clip box;
 * - checkpoints: the first after ⌊0.22N⌋ iterations, then every
 *   max(previous − ⌊0.03N⌋, ⌊0.06N⌋) iterations. At a checkpoint η is halved
 *   and the iterate restarts from the best point found (highest loss, with its
 *   gradient) when (1) the loss increased in at most ρ = 75 % of the steps
 *   since the last checkpoint, or (2) η was not reduced at the last checkpoint
 *   and the best loss has not improved since;
 * - the result per example is the first misclassified point found, else the
 *   highest-loss point.
 *
 * Losses on the logits (see `logits.ts`): cross-entropy (`'ce'`, APGD-CE), the
 * DLR loss (`'dlr'`, APGD-DLR), the CW margin (`'cw'`). `targeted: true` is
 * APGD-T: one run per target class, the classes ranked 2nd, 3rd, … by the
 * clean logits (top-k, `targetClasses`), each run only on the examples not yet
 * misclassified, with the targeted loss (DLR-T by default).
 *
 * Counting: one gradient evaluation = one batched forward + backward pass;
 * a run of N iterations costs N + 1 of them (the start point's gradient too).
 *
 * @packageDocumentation
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';

import {checkKnownKeys, describeValue} from '../util/options.js';
import {apgdStart, ascentDirection, deriveSeed, enforceBall, InputNorm, projectBall} from './ball.js';
import {isLogitLoss, labelIndices, LogitFunction, logitFunction, LogitLoss, logitLoss} from './logits.js';
import {checkAttackInputs} from './validate.js';

/** Options of {@link apgdAttack}. */
export interface ApgdOptions {
  /** Radius ε of the ball; finite, ≥ 0. */
  epsilon: number;
  /** Threat model; default `'linf'`. */
  norm?: InputNorm;
  /** Iterations N per run; integer ≥ 1, default 100. */
  steps?: number;
  /** Random restarts (each only on examples not yet misclassified); default 1. */
  restarts?: number;
  /** Loss on the logits: `'ce'` (default untargeted), `'dlr'` (default targeted), `'cw'`. */
  loss?: LogitLoss;
  /** APGD-T: targeted runs towards the top-k other classes. Default false. */
  targeted?: boolean;
  /** Number k of target classes of APGD-T (ranked 2nd … (k+1)th by the clean logits); default min(9, K − 1). */
  targetClasses?: number;
  /** Valid input range `[lo, hi]`; x should lie inside it. */
  clip?: [number, number];
  /** Seed of the random starts (same seed → same result). */
  seed?: number;
  /** Momentum α; default 0.75. */
  momentum?: number;
  /** Oscillation threshold ρ of the step-size rule; default 0.75. */
  rho?: number;
}

const APGD_KEYS = ['epsilon', 'norm', 'steps', 'restarts', 'loss', 'targeted', 'targetClasses', 'clip', 'seed', 'momentum', 'rho'] as const;

/** Validated APGD options (internal). */
export interface ResolvedApgdOptions {
  epsilon: number;
  norm: InputNorm;
  steps: number;
  restarts: number;
  loss: LogitLoss;
  targeted: boolean;
  targetClasses?: number;
  clip?: [number, number];
  seed?: number;
  momentum: number;
  rho: number;
}

/** Result of {@link apgdAttackWithInfo}; the caller disposes `adversarial`. */
export interface ApgdResult {
  /** Adversarial inputs, float32, shape of x, inside the ball and the clip box. */
  adversarial: tf.Tensor;
  /** 1 where the attack found a misclassified point (by the logits' argmax). */
  fooled: Uint8Array;
  /** Batched gradient evaluations (each on the examples still attacked). */
  gradientEvaluations: number;
  /** Per-example gradient evaluations summed over examples (cost that scales with the batch). */
  exampleGradientEvaluations: number;
}

/** Checks epsilon/norm/clip/seed shared by the input attacks. @internal */
export function checkBallOptions(where: string, o: {epsilon?: unknown; norm?: unknown; clip?: unknown; seed?: unknown}): {epsilon: number; norm: InputNorm; clip?: [number, number]; seed?: number} {
  const bad = (f: string, want: string, got: unknown) => new Error(`${where}: options.${f} must be ${want}; got ${describeValue(got)}.`);
  if (typeof o.epsilon !== 'number' || !Number.isFinite(o.epsilon) || o.epsilon < 0) throw bad('epsilon', 'a finite number >= 0', o.epsilon);
  const norm = o.norm ?? 'linf';
  if (norm !== 'linf' && norm !== 'l2') throw bad('norm', "'linf' or 'l2'", norm);
  let clip: [number, number] | undefined;
  if (o.clip !== undefined && o.clip !== null) {
    const c = o.clip as unknown[];
    if (!Array.isArray(c) || c.length !== 2 || typeof c[0] !== 'number' || typeof c[1] !== 'number' || Number.isNaN(c[0]) || Number.isNaN(c[1]) || !(c[0] <= c[1])) {
      throw bad('clip', 'a pair [lo, hi] of numbers with lo <= hi', o.clip);
    }
    clip = [c[0], c[1]];
  }
  if (o.seed !== undefined && (typeof o.seed !== 'number' || !Number.isFinite(o.seed))) throw bad('seed', 'a finite number', o.seed);
  return {epsilon: o.epsilon, norm, clip, seed: o.seed as number | undefined};
}

/** Validates APGD options and fills in defaults. @internal */
export function resolveApgdOptions(where: string, options: ApgdOptions): ResolvedApgdOptions {
  if (options === null || typeof options !== 'object') throw new Error(`${where}: options must be an object with at least {epsilon}; got ${describeValue(options)}.`);
  checkKnownKeys(options, APGD_KEYS, where);
  const base = checkBallOptions(where, options);
  const bad = (f: string, want: string, got: unknown) => new Error(`${where}: options.${f} must be ${want}; got ${describeValue(got)}.`);
  const int = (f: 'steps' | 'restarts' | 'targetClasses', v: unknown, dflt: number | undefined) => {
    if (v === undefined) return dflt;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) throw bad(f, 'an integer >= 1', v);
    return v;
  };
  const targeted = options.targeted ?? false;
  if (typeof targeted !== 'boolean') throw bad('targeted', 'a boolean', options.targeted);
  const loss = options.loss ?? (targeted ? 'dlr' : 'ce');
  if (!isLogitLoss(loss)) throw bad('loss', "'ce', 'cw' or 'dlr'", options.loss);
  const frac = (f: 'momentum' | 'rho', v: unknown, dflt: number) => {
    if (v === undefined) return dflt;
    if (typeof v !== 'number' || !(v > 0 && v <= 1)) throw bad(f, 'a number in (0, 1]', v);
    return v;
  };
  return {
    ...base,
    steps: int('steps', options.steps, 100) as number,
    restarts: int('restarts', options.restarts, 1) as number,
    loss,
    targeted,
    targetClasses: int('targetClasses', options.targetClasses, undefined),
    momentum: frac('momentum', options.momentum, 0.75),
    rho: frac('rho', options.rho, 0.75),
  };
}

/** The checkpoints w_j of the step-size rule for N iterations (iteration counts after which the rule is checked). */
export function apgdCheckpoints(steps: number): number[] {
  const first = Math.max(Math.floor(0.22 * steps), 1);
  const decrease = Math.max(Math.floor(0.03 * steps), 1);
  const minimum = Math.max(Math.floor(0.06 * steps), 1);
  const out: number[] = [];
  let k = first;
  let at = k;
  while (at <= steps) {
    out.push(at);
    k = Math.max(k - decrease, minimum);
    at += k;
  }
  return out;
}

/** Mask `[B]` (JS) → float tensor broadcastable to `shape`. */
function maskTensor(m: ArrayLike<number>, shape: number[]): tf.Tensor {
  return tf.reshape(tf.tensor1d(Array.from(m), 'float32'), [shape[0], ...shape.slice(1).map(() => 1)]);
}

/** `m ? a : b` per example (m ∈ {0, 1}). */
function select(m: ArrayLike<number>, a: tf.Tensor, b: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const mt = tf.cast(tf.broadcastTo(maskTensor(m, a.shape), a.shape), 'bool');
    return tf.where(mt, a, b);
  });
}

/** Loss, logits and input gradient at `xx` from one forward + backward pass. */
function lossAndGrad(logits: LogitFunction, lossOf: (z: tf.Tensor2D) => tf.Tensor1D, xx: tf.Tensor): {loss: tf.Tensor1D; z: tf.Tensor2D; grad: tf.Tensor} {
  let loss: tf.Tensor1D | null = null;
  let z: tf.Tensor2D | null = null;
  const grad = tf.tidy(() => {
    const g = tf.grad((v: tf.Tensor) => {
      const zz = logits(v);
      const l = lossOf(zz);
      loss = tf.keep(tf.clone(l));
      z = tf.keep(tf.clone(zz));
      return tf.sum(l) as tf.Scalar;
    })(xx);
    return tf.where(tf.isFinite(g), g, tf.zerosLike(g));
  });
  return {loss: loss as unknown as tf.Tensor1D, z: z as unknown as tf.Tensor2D, grad};
}

/** 1 where argmax(z) ≠ label. */
function misclassified(z: tf.Tensor2D, labels: tf.Tensor1D): Uint8Array {
  const t = tf.tidy(() => tf.notEqual(tf.cast(tf.argMax(z, -1), 'int32'), labels));
  const out = Uint8Array.from(t.dataSync());
  t.dispose();
  return out;
}

/**
 * One APGD run on a batch (all examples attacked). Returns the per-example
 * result point (first misclassified point, else highest loss), which examples
 * were fooled, and the highest loss.
 * @internal
 */
export function apgdRun(
  logits: LogitFunction,
  x: tf.Tensor,
  labels: tf.Tensor1D,
  targets: tf.Tensor1D | null,
  o: Pick<ResolvedApgdOptions, 'epsilon' | 'norm' | 'steps' | 'loss' | 'clip' | 'momentum' | 'rho'>,
  seed: number | undefined,
): {adversarial: tf.Tensor; fooled: Uint8Array; bestLoss: Float32Array; gradientEvaluations: number} {
  const b = x.shape[0];
  const n = o.steps;
  const lossOf = (z: tf.Tensor2D) => logitLoss(o.loss, z, labels, targets ?? undefined);
  const first = Math.max(Math.floor(0.22 * n), 1);
  const decrease = Math.max(Math.floor(0.03 * n), 1);
  const minimum = Math.max(Math.floor(0.06 * n), 1);

  const live: tf.Tensor[] = [];
  const track = <T extends tf.Tensor>(t: T): T => (live.push(t), t);
  const drop = (t: tf.Tensor | null) => {
    if (!t) return;
    const i = live.indexOf(t);
    if (i >= 0) live.splice(i, 1);
    t.dispose();
  };
  try {
    let xAdv = track(apgdStart(x, o.norm, o.epsilon, o.clip, seed));
    let xPrev = track(tf.clone(xAdv));
    let r = lossAndGrad(logits, lossOf, xAdv);
    let grad = track(r.grad);
    let gradientEvaluations = 1;
    let lossNow = Float32Array.from(r.loss.dataSync());
    const fooled = misclassified(r.z, labels);
    tf.dispose([r.loss, r.z]);
    let xBestAdv = track(select(fooled, xAdv, x));
    let xBest = track(tf.clone(xAdv));
    let gradBest = track(tf.clone(grad));
    const bestLoss = Float32Array.from(lossNow, (v) => (Number.isFinite(v) ? v : -Infinity));
    const step = new Float32Array(b).fill(2 * o.epsilon);
    let prevLoss = lossNow;
    const increases = new Int32Array(b);
    const reducedLast = new Uint8Array(b);
    const bestAtLastCheck = Float32Array.from(bestLoss);
    let sinceCheck = 0;
    let k = first;

    for (let i = 0; i < n; i++) {
      const a = i === 0 ? 1 : o.momentum;
      const cur = xAdv;
      const prev = xPrev;
      const g = grad;
      const next = tf.tidy(() => {
        const eta = maskTensor(step, cur.shape);
        const z1 = projectBall(tf.add(cur, tf.mul(eta, ascentDirection(g, o.norm))), x, o.norm, o.epsilon, o.clip);
        const moved = tf.add(tf.add(cur, tf.mul(a, tf.sub(z1, cur))), tf.mul(1 - a, tf.sub(cur, prev)));
        return projectBall(moved, x, o.norm, o.epsilon, o.clip);
      });
      drop(prev);
      xPrev = cur;
      xAdv = track(next);
      r = lossAndGrad(logits, lossOf, xAdv);
      drop(g);
      grad = track(r.grad);
      gradientEvaluations++;
      lossNow = Float32Array.from(r.loss.dataSync());
      const foolNow = misclassified(r.z, labels);
      tf.dispose([r.loss, r.z]);
      const newly = new Uint8Array(b);
      const improved = new Uint8Array(b);
      let anyNew = false;
      let anyImproved = false;
      for (let e = 0; e < b; e++) {
        if (foolNow[e] && !fooled[e]) {
          newly[e] = 1;
          fooled[e] = 1;
          anyNew = true;
        }
        if (lossNow[e] > prevLoss[e]) increases[e]++;
        if (lossNow[e] > bestLoss[e]) {
          improved[e] = 1;
          bestLoss[e] = lossNow[e];
          anyImproved = true;
        }
      }
      prevLoss = lossNow;
      if (anyNew) {
        const old = xBestAdv;
        xBestAdv = track(select(newly, xAdv, old));
        drop(old);
      }
      if (anyImproved) {
        const ob = xBest;
        const og = gradBest;
        xBest = track(select(improved, xAdv, ob));
        gradBest = track(select(improved, grad, og));
        drop(ob);
        drop(og);
      }
      sinceCheck++;
      if (sinceCheck === k) {
        const reduce = new Uint8Array(b);
        let any = false;
        for (let e = 0; e < b; e++) {
          const oscillating = increases[e] <= k * o.rho;
          const noProgress = !reducedLast[e] && bestAtLastCheck[e] >= bestLoss[e];
          reduce[e] = oscillating || noProgress ? 1 : 0;
          reducedLast[e] = reduce[e];
          bestAtLastCheck[e] = bestLoss[e];
          increases[e] = 0;
          if (reduce[e]) {
            step[e] /= 2;
            any = true;
          }
        }
        if (any) {
          const ox = xAdv;
          const og = grad;
          xAdv = track(select(reduce, xBest, ox));
          grad = track(select(reduce, gradBest, og));
          drop(ox);
          drop(og);
        }
        sinceCheck = 0;
        k = Math.max(k - decrease, minimum);
      }
    }
    const adversarial = select(fooled, xBestAdv, xBest);
    for (const t of live.splice(0)) t.dispose();
    return {adversarial, fooled, bestLoss, gradientEvaluations};
  } catch (e) {
    for (const t of live.splice(0)) t.dispose();
    throw e;
  }
}

/** Indices of the k classes ranked 2nd … (k+1)th by the logits z at the clean inputs, one `[B]` tensor per rank. */
export function targetRanks(logits: LogitFunction, x: tf.Tensor, k: number): tf.Tensor1D[] {
  return tf.tidy(() => {
    const z = logits(x);
    const {indices} = tf.topk(z, k + 1);
    return Array.from({length: k}, (_, j) => tf.squeeze(tf.slice(indices, [0, j + 1], [-1, 1]), [1]) as tf.Tensor1D);
  });
}

/**
 * Runs APGD on the rows of `x` in `rows` (JS indices), the runs given by
 * `plan` (restarts × targets), each only on rows not yet fooled; writes the
 * results into `adv` (float32, row-major) and `fooled`. Used by
 * {@link apgdAttackWithInfo} and `autoAttack`.
 * @internal
 */
export function apgdCascade(
  logits: LogitFunction,
  x: tf.Tensor,
  labels: tf.Tensor1D,
  o: ResolvedApgdOptions,
  adv: Float32Array,
  fooled: Uint8Array,
  seed: number | undefined,
): {gradientEvaluations: number; exampleGradientEvaluations: number} {
  const b = x.shape[0];
  const d = b === 0 ? 0 : x.size / b;
  const k = o.targeted ? Math.min(o.targetClasses ?? 9, logits.classes - 1) : 1;
  if (o.targeted && k < 1) throw new Error('APGD-T needs at least 2 classes.');
  let gradientEvaluations = 0;
  let exampleGradientEvaluations = 0;
  let firstRun = true;
  for (let t = 0; t < k; t++) {
    for (let rs = 0; rs < o.restarts; rs++) {
      const rows: number[] = [];
      for (let e = 0; e < b; e++) if (!fooled[e]) rows.push(e);
      if (rows.length === 0) return {gradientEvaluations, exampleGradientEvaluations};
      const idx = tf.tensor1d(rows, 'int32');
      const xs = tf.gather(x, idx);
      const ls = tf.gather(labels, idx) as tf.Tensor1D;
      let targets: tf.Tensor1D | null = null;
      try {
        if (o.targeted) {
          const ranks = targetRanks(logits, xs, t + 1);
          targets = ranks[t];
          tf.dispose(ranks.slice(0, t));
        }
        const r = apgdRun(logits, xs, ls, targets, o, deriveSeed(seed, 'apgd', t, rs));
        gradientEvaluations += r.gradientEvaluations;
        exampleGradientEvaluations += r.gradientEvaluations * rows.length;
        const data = r.adversarial.dataSync();
        r.adversarial.dispose();
        rows.forEach((e, j) => {
          // Unfooled rows keep the first run's highest-loss point; a fooled row its misclassified point.
          if (r.fooled[j] || firstRun) adv.set(data.subarray(j * d, (j + 1) * d), e * d);
          if (r.fooled[j]) fooled[e] = 1;
        });
        firstRun = false;
      } finally {
        tf.dispose([idx, xs, ls]);
        targets?.dispose();
      }
    }
  }
  return {gradientEvaluations, exampleGradientEvaluations};
}

/**
 * APGD (Croce & Hein 2020) with the loss and threat model of `options`; see
 * the module documentation. Returns the adversarial inputs and which examples
 * were fooled. `x` and `y` are not modified or disposed.
 *
 * @param model A single-input, single-output classifier (softmax, logits or sigmoid output).
 * @param x Clean inputs `[B, ...inputShape]`, inside `options.clip` if given.
 * @param y Labels: one-hot `[B, K]` or class indices `[B]` / `[B, 1]`.
 * @param options See {@link ApgdOptions}; `epsilon` is required.
 */
export function apgdAttackWithInfo(model: tfl.LayersModel, x: tf.Tensor, y: tf.Tensor, options: ApgdOptions): ApgdResult {
  const where = 'apgdAttack';
  const o = resolveApgdOptions(where, options);
  checkAttackInputs(where, model, x, y);
  return runApgdResolved(where, model, x, y, o);
}

/** APGD with already-resolved options (the registry's entry point). @internal */
export function runApgdResolved(where: string, model: tfl.LayersModel, x: tf.Tensor, y: tf.Tensor, o: ResolvedApgdOptions): ApgdResult {
  const logits = logitFunction(model);
  if (o.loss === 'dlr' && logits.classes < (o.targeted ? 4 : 3)) {
    throw new Error(`${where}: the ${o.targeted ? 'targeted ' : ''}DLR loss needs at least ${o.targeted ? 4 : 3} classes; model '${model.name}' has ${logits.classes}. Use loss 'cw'.`);
  }
  const b = x.shape[0];
  const xf = x.dtype === 'float32' ? x : tf.cast(x, 'float32');
  const labels = labelIndices(y, logits.classes, where);
  try {
    const xData = xf.dataSync() as Float32Array;
    const adv = Float32Array.from(xData);
    const fooled = new Uint8Array(b);
    const cost = apgdCascade(logits, xf, labels, o, adv, fooled, o.seed);
    enforceBall(adv, xData, b, o.norm, o.epsilon, o.clip);
    return {adversarial: tf.tensor(adv, xf.shape, 'float32'), fooled, ...cost};
  } finally {
    labels.dispose();
    if (xf !== x) xf.dispose();
  }
}

/** {@link apgdAttackWithInfo} returning only the adversarial inputs (the caller disposes them). */
export function apgdAttack(model: tfl.LayersModel, x: tf.Tensor, y: tf.Tensor, options: ApgdOptions): tf.Tensor {
  return apgdAttackWithInfo(model, x, y, options).adversarial;
}
