/**
 * Line searches shared by the solvers. Every function here works per example (a step α_b per
 * row) and spends its evaluations through the driver's {@link StepContext}.
 *
 * @packageDocumentation
 */
import * as tf from '@tensorflow/tfjs-core';
import {axpy, batchDot, select, TINY, whereRows} from './batched.js';
import type {Evaluation, StepContext} from './driver.js';

/** The point a line search proposes (not yet accepted). */
export interface LineSearchResult {
  x: tf.Tensor[];
  J: tf.Tensor1D;
  g: tf.Tensor[];
  finite: tf.Tensor1D;
  /** step α_b taken along p. */
  step: tf.Tensor1D;
  /** φ′(0) − φ′(σ) along p (σ·(−φ″) for a quadratic), measured at the trial point. */
  denom: tf.Tensor1D;
}

/** Options of {@link secantLineSearch}. */
export interface SecantOptions {
  /** cap of the secant step relative to the trial step: α ≤ maxStepGrowth·σ. */
  maxStepGrowth: number;
  /** step used when J is not concave along p: α = extrapolationFactor·σ. */
  extrapolationFactor: number;
}

/** The trial point replaces the secant point only if its J is higher by this much (relative): float32 noise. */
const TRIAL_MARGIN = 1e-6;

/**
 * Secant line search on the directional derivative φ′(t) = ∇J(x + t·p)ᵀp (exact for a quadratic),
 * 2 evaluations (1 when `ctx.evals` is 1: the trial point only):
 * 1. J, ∇J at the trial point x + σ·p;
 * 2. if φ′(0) − φ′(σ) > 0, α = σ·φ′(0)/(φ′(0) − φ′(σ)) capped at maxStepGrowth·σ, else α = extrapolationFactor·σ;
 * 3. J, ∇J at x + α·p; the better of the two points is proposed (the secant point unless the
 *    trial point is higher by a float32 margin, which keeps CG's conjugacy on near-quadratics).
 *
 * @param d0 φ′(0) = gᵀp per example.
 */
export function secantLineSearch(
  ctx: StepContext,
  x: tf.Tensor[],
  p: tf.Tensor[],
  sigma: tf.Tensor1D,
  d0: tf.Tensor1D,
  o: SecantOptions,
): LineSearchResult {
  const B = ctx.B;
  const xt = axpy(x, sigma, p);
  const T: Evaluation = ctx.evaluate(xt);
  const d1 = batchDot(T.grads, p, B);
  const denom = tf.sub(d0, d1) as tf.Tensor1D;
  if (ctx.evals < 2) return {x: xt, J: T.value, g: T.grads, finite: T.finite, step: sigma, denom};
  const ratio = tf.div(d0, tf.maximum(denom, TINY));
  const factor = select(tf.greater(denom, 0), tf.minimum(ratio, o.maxStepGrowth), tf.fill([B], o.extrapolationFactor));
  const alpha = tf.mul(sigma, factor) as tf.Tensor1D;
  const xn = axpy(x, alpha, p);
  const N = ctx.evaluate(xn);
  const margin = tf.mul(TRIAL_MARGIN, tf.maximum(1, tf.abs(N.value)));
  const useTrial = tf.greater(T.value, tf.add(N.value, margin));
  const sel = (a: tf.Tensor, b: tf.Tensor) => whereRows(useTrial, a, b);
  return {
    x: xn.map((xi, i) => sel(xt[i], xi)),
    J: sel(T.value, N.value) as tf.Tensor1D,
    g: N.grads.map((gi, i) => sel(T.grads[i], gi)),
    finite: tf.logicalAnd(T.finite, N.finite) as tf.Tensor1D,
    step: sel(sigma, alpha) as tf.Tensor1D,
    denom,
  };
}

/**
 * Next trial step of a secant line search: the predicted line maximum from the curvature
 * measured along the previous direction, κ = (φ′(0) − φ′(σ)) / (σ‖p‖²) per unit displacement²,
 * σ_next = (gᵀp_new) / (κ‖p_new‖²); when the previous line was not concave, the displacement
 * length just taken. Capped at maxStepGrowth × that length.
 */
export function predictTrialStep(
  prev: {p: tf.Tensor[]; sigma: tf.Tensor1D; step: tf.Tensor1D; denom: tf.Tensor1D},
  next: {p: tf.Tensor[]; d0: tf.Tensor1D},
  B: number,
  maxStepGrowth: number,
): tf.Tensor1D {
  const pp = batchDot(prev.p, prev.p, B);
  const pdpd = batchDot(next.p, next.p, B);
  const pDirNorm = tf.maximum(tf.sqrt(pdpd), TINY);
  const lastLen = tf.mul(prev.step, tf.sqrt(pp));
  const kappa = tf.div(prev.denom, tf.maximum(tf.mul(prev.sigma, pp), TINY));
  const predicted = tf.div(next.d0, tf.maximum(tf.mul(kappa, pdpd), TINY));
  const keepLen = tf.div(lastLen, pDirNorm);
  const cap = tf.div(tf.mul(maxStepGrowth, lastLen), pDirNorm);
  let s = select(tf.logicalAnd(tf.greater(prev.denom, 0), tf.greater(prev.sigma, 0)), tf.minimum(predicted, cap), keepLen);
  s = select(tf.logicalAnd(tf.isFinite(s), tf.greater(s, 0)), s, keepLen);
  return s as tf.Tensor1D;
}
