/**
 * Batched nonlinear conjugate gradient (Polak–Ribière+) for the inner maximisation of eq. 11.
 *
 * @packageDocumentation
 */
import * as tf from '@tensorflow/tfjs-core';
import type {BatchObjective, SolverOptions, SolverResult} from './types.js';
import {axpy, batchDot, checkBatch, freeDims, select, TINY, toFloatCopy} from './batched.js';
import {acceptance, BaseState, runSolver, selectRows, tolerances} from './driver.js';
import {predictTrialStep, secantLineSearch} from './line_search.js';

/** Options of {@link conjugateGradient}. */
export interface CgOptions extends SolverOptions {
  /**
   * Force a steepest-ascent restart (β = 0) after this many consecutive conjugate steps of an
   * example. Default: `min(2n, 50)`, n = number of free scalars per example (sum over the list).
   * Not the textbook n: in float32 CG loses its finite termination on ill-conditioned quadratics and
   * needs a few more than n steps; a restart at exactly n throws away the conjugacy that was about to
   * finish the job (measured: n = 10, condition 100, relative error 1e-3 after n steps, 6e-5 after
   * n+4 with a restart at n versus 5e-7 without).
   */
  restartEvery?: number;
  /**
   * Euclidean length (over all tensors of the list) of the FIRST trial displacement σ·p of each
   * example. Default `0.1 · max(1, ‖x0_b‖)`. Later trial steps come from the curvature measured
   * by the previous line search.
   */
  initialStepLength?: number;
  /** Cap of the secant step relative to the trial step: α ≤ maxStepGrowth·σ. Default 100. */
  maxStepGrowth?: number;
  /** Step used when J is not concave along p (φ′(0) − φ′(σ) ≤ 0): α = extrapolationFactor·σ. Default 4. */
  extrapolationFactor?: number;
  /** After a rejected step the next trial displacement is shrinkFactor × the rejected trial's. Default 0.25. */
  shrinkFactor?: number;
  /** An example whose step is rejected this many times in a row is frozen as "stalled". Default 6. */
  maxConsecutiveRejections?: number;
}

/**
 * Batched nonlinear conjugate-gradient ASCENT: maximises every J_b of `f` independently, with one
 * batched computation per evaluation (per-example step α_b, per-example β_b, per-example
 * restarts and stopping).
 *
 * **Direction.** p ← g + β·p with Polak–Ribière+
 * β_b = max(0, g_newᵀ(g_new − g_old) / g_oldᵀg_old), where every dot product is per example and
 * sums over the non-batch axes of EVERY tensor of the list. β = 0 (steepest ascent) every
 * `restartEvery` steps, after a rejected step, and whenever the new direction is not an ascent
 * direction (gᵀp ≤ 0 or non-finite).
 *
 * **Line search (2 gradient evaluations per iteration).** J is close to quadratic (seed, §3), so
 * the maximiser along p is found by a secant on the directional derivative φ′(t) = ∇J(x+tp)ᵀp:
 * 1. evaluate J and ∇J at the trial point x + σ_b·p (σ_b from the previous line search's measured
 *    curvature, or `initialStepLength/‖p‖` on the first iteration);
 * 2. if φ′(0) − φ′(σ) > 0 (concave along p) take α_b = σ_b·φ′(0)/(φ′(0) − φ′(σ)) — exact for a
 *    quadratic — capped at `maxStepGrowth`·σ_b; otherwise extrapolate α_b = `extrapolationFactor`·σ_b;
 * 3. evaluate J and ∇J at x + α_b·p; this gradient is the next iteration's gradient;
 * 4. the candidate is whichever of the trial and secant points has the larger J_b.
 * When only one evaluation is left in the budget, a last "trial-only" iteration is made.
 *
 * **Guarantees.**
 * - Monotone per example: a candidate is accepted only if it is finite and J_b(new) ≥ J_b(old);
 *   otherwise example b keeps its old point, value and gradient (a per-example `tf.where`), its
 *   direction restarts at steepest ascent and its trial displacement shrinks by `shrinkFactor` —
 *   no extra evaluation is spent. Hence `exampleHistory[k][b]` is non-decreasing in k.
 * - A NaN/±Inf met by example b (value, gradient or point) freezes b at its last finite point and
 *   counts it in `nonFinite`; the other examples are unaffected. The returned xs are finite
 *   wherever x0 and f(x0) were.
 * - Frozen examples (converged, stalled, non-finite) get α_b = 0; they are still part of the
 *   batched evaluations (no compaction), so their cost is not saved.
 * - Budget: `gradientEvaluations ≤ maxGradientEvaluations` (the initial evaluation counts as 1).
 * - At most one host read-back per iteration (plus one at the start); every iteration runs in a
 *   `tf.tidy`; after the call only the returned tensors are new; `x0` is neither modified nor
 *   disposed.
 *
 * For a strictly concave quadratic the secant is exact, and the method is linear CG: it reaches
 * the maximiser (to float32 accuracy) in at most n iterations, n = free scalars per example.
 *
 * @param f per-example objective to MAXIMISE (see {@link BatchObjective}).
 * @param x0 start point, a list of tensors of shape [B, ...] (not modified, not disposed).
 * @param options see {@link CgOptions} and, for the stopping rules, {@link SolverOptions}.
 * @returns the maximiser found and the solve statistics; `xs` and `objective` are owned by the caller.
 */
export function conjugateGradient(
  f: BatchObjective,
  x0: tf.Tensor[],
  options: CgOptions = {},
): SolverResult {
  const B = checkBatch(x0);
  const n = freeDims(x0, B);
  const t = tolerances(options);
  const maxGrow = options.maxStepGrowth ?? 100;
  const ls = {maxStepGrowth: maxGrow, extrapolationFactor: options.extrapolationFactor ?? 4};
  const shrink = options.shrinkFactor ?? 0.25;
  const initialStepLength = options.initialStepLength;

  type State = BaseState & {
    p: tf.Tensor[];
    d0: tf.Tensor1D; // gᵀp = φ′(0)
    sigma: tf.Tensor1D; // next trial step along p
  };

  return runSolver<State>(f, x0, options, {
    maxIterations: options.maxIterations ?? 20,
    restartEvery: Math.max(1, Math.floor(options.restartEvery ?? Math.min(2 * n, 50))),
    maxConsecutiveRejections: options.maxConsecutiveRejections ?? 6,
    evalsForIteration: (remaining) => (remaining >= 2 ? 2 : remaining >= 1 ? 1 : 0),
    init: (s) => {
      const s0 =
        initialStepLength != null
          ? tf.fill([B], initialStepLength)
          : tf.mul(0.1, tf.maximum(1, tf.sqrt(batchDot(s.x, s.x, B))));
      const sigma = tf.div(s0, tf.maximum(tf.sqrt(s.gg), TINY)) as tf.Tensor1D;
      return {...s, p: s.g.map((gi) => tf.clone(gi)), d0: tf.clone(s.gg), sigma};
    },
    step: (old, ctx) => {
      const okSigma = tf.logicalAnd(ctx.active, tf.logicalAnd(tf.isFinite(old.sigma), tf.greater(old.sigma, 0)));
      const sig = select(okSigma, old.sigma, tf.zerosLike(old.sigma)) as tf.Tensor1D;
      const cand = secantLineSearch(ctx, old.x, old.p, sig, old.d0, ls);
      const a = acceptance(old, cand, ctx.active, B, t);

      // the direction update (the only CG-specific part): Polak–Ribière+ with restarts
      const gcg = batchDot(cand.g, old.g, B);
      const betaPR = tf.relu(tf.div(tf.sub(a.gg, gcg), tf.maximum(old.gg, TINY)));
      const beta = select(ctx.restartDue, tf.zerosLike(betaPR), betaPR) as tf.Tensor1D;
      const pConj = axpy(cand.g, beta, old.p);
      const dConj = batchDot(cand.g, pConj, B);
      const useConj = tf.logicalAnd(tf.greater(beta, 0), tf.logicalAnd(tf.isFinite(dConj), tf.greater(dConj, 0)));
      const pDir = selectRows(useConj, pConj, cand.g);
      const dDir = select(useConj, dConj, a.gg) as tf.Tensor1D;

      const sigmaAcc = predictTrialStep({p: old.p, sigma: sig, step: cand.step, denom: cand.denom}, {p: pDir, d0: dDir}, B, maxGrow);
      // after a rejection: steepest ascent from the old point, shorter trial displacement
      const sigmaRej = tf.div(tf.mul(shrink, tf.mul(sig, tf.sqrt(batchDot(old.p, old.p, B)))), tf.maximum(tf.sqrt(old.gg), TINY));

      const acc = a.accept;
      const rej = a.reject;
      const sel1 = (x: tf.Tensor, y: tf.Tensor, m: tf.Tensor) => select(m, x, y) as tf.Tensor1D;
      const state: State = {
        x: selectRows(acc, cand.x, old.x),
        J: sel1(cand.J, old.J, acc),
        g: selectRows(acc, cand.g, old.g),
        gg: sel1(a.gg, old.gg, acc),
        p: selectRows(acc, pDir, selectRows(rej, old.g, old.p)),
        d0: sel1(dDir, sel1(old.gg, old.d0, rej), acc),
        sigma: sel1(sigmaAcc, sel1(sigmaRej, old.sigma, rej), acc),
      };
      return {state, accept: acc, nonFinite: a.nonFinite, converged: a.converged, restarted: tf.logicalNot(useConj) as tf.Tensor1D};
    },
  });
}
