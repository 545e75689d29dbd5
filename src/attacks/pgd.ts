/**
 * Projected gradient descent (PGD) on the input, Madry et al. (2018),
 * "Towards Deep Learning Models Resistant to Adversarial Attacks".
 *
 * Maximises Σ_b c(y_b, f(x'_b)) over the ε-ball around x (L∞ or L2), optionally
 * intersected with a box `clip = [lo, hi]`, by `steps` steps of
 *   x' ← Π(x' + stepSize · s(∇ₓ' Σ_b c)),
 * where s is the sign (L∞) or the per-example L2-normalised gradient (L2) and
 * Π projects each example onto its ε-ball and then clips to the box. Each
 * example's loss depends only on its own input (the model runs in inference
 * mode), so the gradient of the sum is every example's own gradient.
 *
 * @packageDocumentation
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';

import {assertCompatibleXY, LossFn, perExampleLoss, Tensors} from '../objective/loss.js';
import {checkKnownKeys} from '../util/options.js';
import {checkAttackInputs} from './validate.js';
import {ascentDirection, deriveSeed, exampleNorm, projectBall} from './ball.js';
import {isLogitLoss, labelIndices, logitFunction, logitLoss, LogitLoss} from './logits.js';
import {hasTokenInput} from './site_pgd.js';

/** Norm of the threat model: L∞ (box of half-width ε) or L2 (Euclidean ball of radius ε). */
export type AttackNorm = 'linf' | 'l2';

/** Options of {@link pgdAttack} and {@link pgdAttackWithInfo}. */
export interface PgdOptions {
  /** Radius of the perturbation ball; finite, ≥ 0. */
  epsilon: number;
  /** Threat-model norm; default `'linf'`. */
  norm?: AttackNorm;
  /** Number of gradient steps per restart; integer ≥ 1, default 10. */
  steps?: number;
  /** Step length (L∞: per coordinate; L2: Euclidean length); finite, ≥ 0; default `2.5 * epsilon / steps`. */
  stepSize?: number;
  /** Start from a uniformly random point of the ε-ball (default `true`); otherwise from x. */
  randomStart?: boolean;
  /** Number of independent runs; per example the result with the highest loss is kept. Integer ≥ 1, default 1. */
  restarts?: number;
  /** Valid input range `[lo, hi]`; each iterate is clipped to it after the ε-ball projection. */
  clip?: [number, number];
  /** Seed for the random start; the same seed gives identical results. Restart r uses a seed derived from (seed, r). */
  seed?: number;
  /**
   * Loss to maximise: `'ce'` (cross-entropy on the logits), `'cw'` (Carlini–Wagner margin on the logits),
   * `'dlr'` (difference of logits ratio, Croce & Hein 2020) — see `logits.ts` — or instead of the model's
   * compiled loss (the default) any loss name or function accepted by {@link perExampleLoss}.
   */
  loss?: LogitLoss | string | LossFn;
}

/** The option names of {@link PgdOptions}. */
export const PGD_KEYS = ['epsilon', 'norm', 'steps', 'stepSize', 'randomStart', 'restarts', 'clip', 'seed', 'loss'] as const;

/** Result of {@link pgdAttackWithInfo}. The caller owns (and must dispose) both tensors. */
export interface PgdResult {
  /** The adversarial inputs, same shape as x, dtype float32. */
  adversarial: tf.Tensor;
  /** Per-example loss c(y_b, f(adversarial_b)), shape `[B]`. */
  loss: tf.Tensor1D;
  /** Number of input-gradient evaluations (batched backward passes): `restarts × steps`. */
  gradientEvaluations: number;
}

/** Validated options with defaults filled in (internal). */
export interface ResolvedPgdOptions {
  epsilon: number;
  norm: AttackNorm;
  steps: number;
  stepSize: number;
  randomStart: boolean;
  restarts: number;
  clip?: [number, number];
  seed?: number;
  loss?: string | LossFn;
}

/**
 * Checks attack options shared by PGD and FGSM. Throws an `Error` whose
 * message names the offending field, e.g. `pgdAttack: options.epsilon must be …`.
 * @internal
 */
export function checkCommonOptions(
  fnName: string,
  o: {epsilon?: unknown; clip?: unknown; seed?: unknown; loss?: unknown; randomStart?: unknown},
): void {
  const bad = (field: string, want: string, got: unknown): Error =>
    new Error(`${fnName}: options.${field} must be ${want}; got ${describe(got)}.`);
  if (typeof o.epsilon !== 'number' || !Number.isFinite(o.epsilon) || o.epsilon < 0) {
    throw bad('epsilon', 'a finite number >= 0', o.epsilon);
  }
  if (o.clip !== undefined) {
    const c = o.clip;
    if (
      !Array.isArray(c) || c.length !== 2 ||
      typeof c[0] !== 'number' || typeof c[1] !== 'number' ||
      Number.isNaN(c[0]) || Number.isNaN(c[1]) || !(c[0] <= c[1])
    ) {
      throw bad('clip', 'a pair [lo, hi] of numbers with lo <= hi', c);
    }
  }
  if (o.seed !== undefined && (typeof o.seed !== 'number' || !Number.isFinite(o.seed))) {
    throw bad('seed', 'a finite number', o.seed);
  }
  if (o.randomStart !== undefined && typeof o.randomStart !== 'boolean') {
    throw bad('randomStart', 'a boolean', o.randomStart);
  }
  if (o.loss !== undefined && typeof o.loss !== 'string' && typeof o.loss !== 'function') {
    throw bad('loss', 'a loss name or a function (yTrue, yPred) => Tensor', o.loss);
  }
}

function describe(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(describe).join(', ')}]`;
  if (typeof v === 'function') return 'a function';
  return String(v);
}

function isInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v);
}

/**
 * Validates PGD options and fills in defaults.
 * @internal
 */
export function resolvePgdOptions(fnName: string, options: PgdOptions): ResolvedPgdOptions {
  if (options === null || typeof options !== 'object') {
    throw new Error(`${fnName}: options must be an object with at least {epsilon}; got ${describe(options)}.`);
  }
  checkCommonOptions(fnName, options);
  const bad = (field: string, want: string, got: unknown): Error =>
    new Error(`${fnName}: options.${field} must be ${want}; got ${describe(got)}.`);
  const norm = options.norm ?? 'linf';
  if (norm !== 'linf' && norm !== 'l2') throw bad('norm', "'linf' or 'l2'", norm);
  const steps = options.steps ?? 10;
  if (!isInt(steps) || steps < 1) throw bad('steps', 'an integer >= 1', steps);
  const restarts = options.restarts ?? 1;
  if (!isInt(restarts) || restarts < 1) throw bad('restarts', 'an integer >= 1', restarts);
  const stepSize = options.stepSize ?? (2.5 * options.epsilon) / steps;
  if (typeof stepSize !== 'number' || !Number.isFinite(stepSize) || stepSize < 0) {
    throw bad('stepSize', 'a finite number >= 0', stepSize);
  }
  return {
    epsilon: options.epsilon,
    norm,
    steps,
    stepSize,
    randomStart: options.randomStart ?? true,
    restarts,
    clip: options.clip,
    seed: options.seed,
    loss: options.loss,
  };
}

/** Projection of `adv` onto the ε-ball around `x`, then onto the clip box. */
function project(adv: tf.Tensor, x: tf.Tensor, o: ResolvedPgdOptions): tf.Tensor {
  return projectBall(adv, x, o.norm, o.epsilon, o.clip);
}

/** Random start: uniform in the L∞ box, or uniform in the L2 ball (Gaussian direction, radius ε·u^{1/d}). */
function randomStartPoint(x: tf.Tensor, o: ResolvedPgdOptions, restart: number): tf.Tensor {
  let delta: tf.Tensor;
  if (o.norm === 'linf') {
    delta = tf.randomUniform(x.shape, -o.epsilon, o.epsilon, 'float32', deriveSeed(o.seed, restart, 0));
  } else {
    const b = x.shape[0];
    const d = x.size / Math.max(b, 1);
    const g = tf.randomNormal(x.shape, 0, 1, 'float32', deriveSeed(o.seed, restart, 1));
    const dir = tf.div(g, tf.maximum(exampleNorm(g), 1e-12));
    const u = tf.randomUniform([b], 0, 1, 'float32', deriveSeed(o.seed, restart, 2));
    const r = tf.mul(o.epsilon, tf.pow(u, 1 / Math.max(d, 1)));
    delta = tf.mul(dir, tf.reshape(r, [b, ...x.shape.slice(1).map(() => 1)]));
  }
  return project(tf.add(x, delta), x, o);
}

/** One ascent step from `adv` along gradient `g`, followed by the projection. */
function ascentStep(adv: tf.Tensor, g: tf.Tensor, x: tf.Tensor, o: ResolvedPgdOptions): tf.Tensor {
  return project(tf.add(adv, tf.mul(o.stepSize, ascentDirection(g, o.norm))), x, o);
}

/** Differentiable inference-mode forward pass (one tensor per output for a model with several outputs). */
function forward(model: tfl.LayersModel, x: tf.Tensor): Tensors {
  const out = model.apply(x, {training: false}) as Tensors;
  return Array.isArray(out) && out.length === 1 ? out[0] : out;
}

/**
 * The PGD engine shared by {@link pgdAttack}, {@link pgdAttackWithInfo} and
 * FGSM. `wantLoss` forces the final per-example loss to be computed even with
 * one restart.
 * @internal
 */
export function runPgd(
  model: tfl.LayersModel,
  x: tf.Tensor,
  y: Tensors,
  o: ResolvedPgdOptions,
  wantLoss: boolean,
): {adversarial: tf.Tensor; loss: tf.Tensor1D | null; gradientEvaluations: number} {
  assertCompatibleXY(model, x, y);
  if (hasTokenInput(model)) {
    throw new Error(
      `PGD/FGSM: model '${model.name}' takes token indices (its input feeds an Embedding layer, or is an integer tensor), which ` +
        `cannot be perturbed; attack the embeddings instead: instrument(model) and train with adversarialCallback({method: 'pgd', ` +
        `epsilon, layer: '<Embedding layer name>'}) (the default for such models), or evaluate with evaluateRobustness, which does so.`,
    );
  }
  let lossOf: (xx: tf.Tensor) => tf.Tensor1D;
  let labels: tf.Tensor1D | null = null;
  if (isLogitLoss(o.loss)) {
    const kind = o.loss;
    const logits = logitFunction(model);
    if (Array.isArray(y)) throw new Error(`pgdAttack: loss '${kind}' works on the logits of a single-output classifier; model '${model.name}' has ${y.length} outputs.`);
    labels = labelIndices(y, logits.classes, 'pgdAttack');
    const lab = labels;
    lossOf = (xx) => logitLoss(kind, logits(xx), lab);
  } else {
    const lossFn = perExampleLoss(model, o.loss);
    lossOf = (xx) => lossFn(y, forward(model, xx));
  }
  const objective = (xx: tf.Tensor): tf.Scalar => tf.sum(lossOf(xx));
  const gradFn = tf.grad(objective);
  const needLoss = wantLoss || o.restarts > 1;

  const ownsX = x.dtype !== 'float32';
  const xf = ownsX ? tf.cast(x, 'float32') : x;
  const rank1 = [x.shape[0], ...x.shape.slice(1).map(() => 1)];
  let best: tf.Tensor | null = null;
  let bestLoss: tf.Tensor1D | null = null;
  let adv: tf.Tensor | null = null;
  let gradientEvaluations = 0;
  try {
    for (let r = 0; r < o.restarts; r++) {
      adv = tf.tidy(() =>
        o.randomStart && o.epsilon > 0 ? randomStartPoint(xf, o, r) : project(tf.clone(xf), xf, o));
      for (let t = 0; t < o.steps; t++) {
        const cur: tf.Tensor = adv;
        const next: tf.Tensor = tf.tidy(() => ascentStep(cur, gradFn(cur), xf, o));
        gradientEvaluations++;
        cur.dispose();
        adv = next;
      }
      if (!needLoss) {
        best = adv;
        adv = null;
        continue;
      }
      const finalAdv: tf.Tensor = adv;
      const l = tf.tidy(() => lossOf(finalAdv));
      if (best === null || bestLoss === null) {
        best = finalAdv;
        bestLoss = l;
      } else {
        const prevBest: tf.Tensor = best;
        const prevLoss: tf.Tensor1D = bestLoss;
        // Per example keep the run with the strictly higher loss (ties keep the earlier run).
        const [nb, nl] = tf.tidy(() => {
          const better = tf.greater(l, prevLoss);
          return [
            tf.where(tf.broadcastTo(tf.reshape(better, rank1), finalAdv.shape), finalAdv, prevBest),
            tf.where(better, l, prevLoss) as tf.Tensor1D,
          ];
        });
        prevBest.dispose();
        prevLoss.dispose();
        finalAdv.dispose();
        l.dispose();
        best = nb;
        bestLoss = nl as tf.Tensor1D;
      }
      adv = null;
    }
  } catch (e) {
    adv?.dispose();
    best?.dispose();
    bestLoss?.dispose();
    if (ownsX) xf.dispose();
    labels?.dispose();
    throw e;
  }
  if (ownsX) xf.dispose();
  labels?.dispose();
  if (!wantLoss && bestLoss !== null) {
    bestLoss.dispose();
    bestLoss = null;
  }
  return {adversarial: best as tf.Tensor, loss: bestLoss, gradientEvaluations};
}

/**
 * Projected gradient descent (Madry et al.): the L∞ or L2 adversarial example
 * of each input within distance `epsilon`, maximising the model's loss.
 *
 * Each restart starts (by default) at a uniformly random point of the ε-ball,
 * takes `steps` steps and returns its last iterate, as in Madry et al. With
 * `restarts > 1`, each example keeps the run whose final iterate has the
 * highest per-example loss (ties keep the earlier run). This is a max-loss
 * criterion; it does not separately prefer misclassified points, which for
 * cross-entropy losses nearly always coincide with the highest-loss ones.
 *
 * The model runs in inference mode (`model.apply(x, {training: false})`), so
 * dropout is off and batch normalisation uses its moving statistics. `x` and
 * `y` are not modified or disposed; every intermediate tensor is disposed
 * step by step.
 *
 * @param model A compiled single-input, single-output model (or pass `options.loss`).
 * @param x Clean inputs `[B, ...inputShape]`; should lie inside `options.clip` if given.
 * @param y Targets in the format the loss expects (one-hot, sparse indices, …).
 * @param options See {@link PgdOptions}; `epsilon` is required.
 * @returns A new float32 tensor of x's shape, inside the ε-ball around x and the clip box.
 * @throws On invalid options (the message names the field), shape mismatch,
 *   an uncompiled model without `options.loss`, or a multi-output model.
 */
export function pgdAttack(model: tfl.LayersModel, x: tf.Tensor, y: tf.Tensor, options: PgdOptions): tf.Tensor {
  checkKnownKeys(options, PGD_KEYS, 'pgdAttack');
  const o = resolvePgdOptions('pgdAttack', options);
  checkAttackInputs('pgdAttack', model, x, y);
  return runPgd(model, x, y, o, false).adversarial;
}

/**
 * Like {@link pgdAttack}, but also returns the per-example loss at the result
 * and the number of gradient evaluations spent (`restarts × steps`; the final
 * loss costs one extra forward pass per restart, not counted).
 *
 * @param model A compiled single-input, single-output model (or pass `options.loss`).
 * @param x Clean inputs `[B, ...inputShape]`.
 * @param y Targets.
 * @param options See {@link PgdOptions}.
 * @returns `{adversarial, loss, gradientEvaluations}`; the caller disposes both tensors.
 */
export function pgdAttackWithInfo(
  model: tfl.LayersModel,
  x: tf.Tensor,
  y: tf.Tensor,
  options: PgdOptions,
): PgdResult {
  checkKnownKeys(options, PGD_KEYS, 'pgdAttackWithInfo');
  const o = resolvePgdOptions('pgdAttackWithInfo', options);
  checkAttackInputs('pgdAttackWithInfo', model, x, y);
  const r = runPgd(model, x, y, o, true);
  return {adversarial: r.adversarial, loss: r.loss as tf.Tensor1D, gradientEvaluations: r.gradientEvaluations};
}
