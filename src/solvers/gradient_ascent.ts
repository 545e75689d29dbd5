/**
 * Plain fixed-step gradient ascent: the baseline the conjugate-gradient solver is benchmarked against.
 *
 * @packageDocumentation
 */
import * as tf from '@tensorflow/tfjs-core';
import type {BatchObjective, SolverOptions, SolverResult} from './types.js';
import {axpy, checkBatch, select, TINY} from './batched.js';
import {acceptance, BaseState, runSolver, selectRows, tolerances} from './driver.js';

/** Options of {@link gradientAscent}. */
export interface GradientAscentOptions extends SolverOptions {
  /** Fixed step η (required). With `normalize: 'l2'` it is the Euclidean length of each step. */
  stepSize: number;
  /**
   * `'none'` (default): x ← x + η·g. `'l2'`: x ← x + η·g/‖g_b‖, the norm taken per example over
   * all tensors of the list (a fixed-length step, as in L2 PGD without projection).
   */
  normalize?: 'none' | 'l2';
  /**
   * Default `false`: every step is taken, J_b may decrease (plain gradient ascent, the textbook
   * baseline). `true`: a step that does not increase J_b is rejected for that example (it keeps
   * its point and gradient, no extra evaluation) and that example's step is halved; an example
   * rejected `maxConsecutiveRejections` (default 6) times in a row is frozen as stalled.
   */
  monotone?: boolean;
  /** See `monotone`. Default 6. */
  maxConsecutiveRejections?: number;
}

/**
 * Fixed-step gradient ASCENT on every J_b of `f`, batched: x_b ← x_b + η_b·d_b with d_b = ∇J_b
 * (or ∇J_b/‖∇J_b‖ for `normalize: 'l2'`). One batched gradient evaluation per iteration (the value
 * and gradient at the new point), plus one at the start.
 *
 * **No acceptance test by default**: with a too large η, J_b can decrease or diverge; this is the
 * plain baseline. `monotone: true` adds a per-example acceptance test (reject + halve η_b).
 *
 * Same contract as {@link conjugateGradient}: per-example stopping by `tolerance` (an accepted step
 * with 0 ≤ ΔJ_b ≤ tolerance·max(1,|J_b|)) or `gradientTolerance` (‖g_b‖ ≤ gradientTolerance·max(1,|J_b|));
 * a non-finite value (J, gradient or point) freezes example b at its last finite point and counts it in
 * `nonFinite`; `gradientEvaluations ≤ maxGradientEvaluations`; one host read-back per iteration;
 * one `tf.tidy` per iteration; only the returned tensors survive; `x0` is untouched.
 *
 * @param f per-example objective to MAXIMISE (see {@link BatchObjective}).
 * @param x0 start point, a list of tensors of shape [B, ...] (not modified, not disposed).
 * @param options `stepSize` is required; `maxIterations` defaults to 50.
 * @returns the last (accepted) point and the solve statistics; `xs` and `objective` are owned by the caller.
 */
export function gradientAscent(
  f: BatchObjective,
  x0: tf.Tensor[],
  options: GradientAscentOptions,
): SolverResult {
  const B = checkBatch(x0);
  const eta = options?.stepSize;
  if (!(typeof eta === 'number' && Number.isFinite(eta) && eta > 0)) {
    throw new Error(`gradientAscent: stepSize must be a positive number, got ${eta}`);
  }
  const t = tolerances(options);
  const normalize = options.normalize ?? 'none';
  const monotone = options.monotone ?? false;

  type State = BaseState & {scale: tf.Tensor1D};
  return runSolver<State>(f, x0, options, {
    maxIterations: options.maxIterations ?? 50,
    restartEvery: Infinity,
    maxConsecutiveRejections: monotone ? (options.maxConsecutiveRejections ?? 6) : Infinity,
    evalsForIteration: (remaining) => (remaining >= 1 ? 1 : 0),
    init: (s) => ({...s, scale: tf.ones([B]) as tf.Tensor1D}),
    step: (old, ctx) => {
      let step = select(ctx.active, tf.mul(eta, old.scale), tf.zerosLike(old.scale)) as tf.Tensor1D;
      if (normalize === 'l2') step = tf.div(step, tf.maximum(tf.sqrt(old.gg), TINY)) as tf.Tensor1D;
      const xn = axpy(old.x, step, old.g);
      const e = ctx.evaluate(xn);
      const a = acceptance(old, {J: e.value, g: e.grads, finite: e.finite}, ctx.active, B, t, monotone);
      const state: State = {
        x: selectRows(a.accept, xn, old.x),
        J: select(a.accept, e.value, old.J) as tf.Tensor1D,
        g: selectRows(a.accept, e.grads, old.g),
        gg: select(a.accept, a.gg, old.gg) as tf.Tensor1D,
        scale: select(a.reject, tf.mul(0.5, old.scale), old.scale) as tf.Tensor1D,
      };
      return {state, accept: a.accept, nonFinite: a.nonFinite, converged: a.converged};
    },
  });
}
