/**
 * Preconditioned ascent: the disturbance-space solver of the deep attack.
 *
 * @packageDocumentation
 */
import * as tf from '@tensorflow/tfjs-core';
import type {BatchObjective, SolverOptions, SolverResult} from './types.js';
import {axpy, batchDot, checkBatch, rowSelector, select, TINY} from './batched.js';
import {acceptance, BaseState, runSolver, selectRows, tolerances} from './driver.js';

/** Options of {@link preconditionedAscent}. */
export interface PreconditionedAscentOptions extends SolverOptions {
  /**
   * The search direction at a point: `D = direction(xs, grads)`, one tensor per tensor of the list,
   * where `grads` is ∇J at `xs`. It must be an ascent direction (Σ gᵀD ≥ 0 per example) in which a
   * step of 1 is natural — e.g. `P·g` for a preconditioner P approximating (−∇²J)⁻¹, or `T(x) − x` for
   * the maximiser T of a local model (the deep attack passes the per-layer maximiser of the
   * linearised loss plus the exact penalty, see `linearisedMaximiser`). Default: the gradient.
   */
  direction?: (xs: tf.Tensor[], grads: tf.Tensor[]) => tf.Tensor[];
  /**
   * Polak–Ribière+ on the preconditioned directions (β = gₖᵀ(Dₖ − Dₖ₋₁)/(gₖ₋₁ᵀDₖ₋₁), reset when
   * not an ascent direction) instead of stepping along D alone. Default false.
   */
  conjugate?: boolean;
  /**
   * First step α_b along the direction: one number, one per example, or a function of the
   * objective at the start (J_b → α_b, called inside a tidy). Default 1. A first step
   * larger than `maxStep` that is rejected falls back to α = 1 (no shrinking ladder); accepted, it
   * is kept for the next iteration.
   */
  initialStep?: number | number[] | ((J: tf.Tensor1D) => tf.Tensor1D);
  /** Largest step reached by growing after accepted steps. Default 1. */
  maxStep?: number;
  /** After an accepted step α ← min(maxStep, growFactor·α). Default 2. */
  growFactor?: number;
  /** After a rejected step α ← shrinkFactor·α. Default 0.3. */
  shrinkFactor?: number;
  /** An example rejected this many times in a row is frozen as stalled. Default 8. */
  maxConsecutiveRejections?: number;
}

/**
 * Batched monotone ascent along a preconditioned direction with a per-example step: ONE gradient
 * evaluation per iteration (plus one at the start), no line search. Each iteration tries
 * x + α_b·p_b (p = D, or the PR+ combination with `conjugate`), accepts it for example b when
 * J_b does not decrease (else b keeps its point and α_b shrinks), and grows α_b after a success.
 *
 * With a direction whose unit step is the maximiser of a good local model, the step is 1 most of
 * the time and the method is a damped fixed-point iteration x ← x + α(T(x) − x); for a quadratic
 * penalty and a locally linear loss T is exact, so it converges in one step where the loss is
 * linear, which is what eq. 9 looks like on piecewise-linear networks away from the softmax.
 *
 * Same contract as {@link conjugateGradient}: monotone per example; per-example stopping by
 * `tolerance`/`gradientTolerance`; NaN/Inf freeze an example at its last finite point;
 * `gradientEvaluations ≤ maxGradientEvaluations`; one read-back per iteration; no tensor leaks.
 */
export function preconditionedAscent(f: BatchObjective, x0: tf.Tensor[], options: PreconditionedAscentOptions = {}): SolverResult {
  const B = checkBatch(x0);
  const t = tolerances(options);
  const direction = options.direction ?? ((_x: tf.Tensor[], g: tf.Tensor[]) => g.map((gi) => tf.clone(gi)));
  const maxStep = options.maxStep ?? 1;
  const grow = options.growFactor ?? 2;
  const shrink = options.shrinkFactor ?? 0.3;
  const init = options.initialStep ?? 1;
  if (
    typeof init !== 'function' &&
    (Array.isArray(init) ? init.length !== B || init.some((v) => !(v > 0) || !Number.isFinite(v)) : !(init > 0 && Number.isFinite(init)))
  ) {
    throw new Error(`preconditionedAscent: initialStep must be a positive number or ${B} positive numbers, got ${String(init)}`);
  }
  const dirOf = (x: tf.Tensor[], g: tf.Tensor[]) => {
    const D = direction(x, g);
    if (D.length !== x.length) throw new Error(`preconditionedAscent: direction returned ${D.length} tensors for ${x.length}`);
    return D.map((d, i) => (d.dtype === 'float32' ? d : tf.cast(d, 'float32')));
  };

  type State = BaseState & {D: tf.Tensor[]; p: tf.Tensor[]; gD: tf.Tensor1D; alpha: tf.Tensor1D};
  return runSolver<State>(f, x0, options, {
    maxIterations: options.maxIterations ?? 40,
    restartEvery: Infinity,
    maxConsecutiveRejections: options.maxConsecutiveRejections ?? 8,
    evalsForIteration: (remaining) => (remaining >= 1 ? 1 : 0),
    init: (s) => {
      const D = dirOf(s.x, s.g);
      const alpha = (typeof init === 'function' ? init(s.J) : Array.isArray(init) ? tf.tensor1d(init) : tf.fill([B], init)) as tf.Tensor1D;
      // the gradient itself is not carried (D and gᵀD are all a step needs); p only with PR+
      const gD = batchDot(s.g, D, B);
      s.g.forEach((t) => t.dispose());
      return {...s, g: [], D, p: options.conjugate ? D.map((d) => tf.clone(d)) : [], gD, alpha};
    },
    step: (old, ctx) => {
      const step = select(ctx.active, old.alpha, tf.zerosLike(old.alpha)) as tf.Tensor1D;
      const xn = axpy(old.x, step, options.conjugate ? old.p : old.D);
      const e = ctx.evaluate(xn);
      const a = acceptance(old, {J: e.value, g: e.grads, finite: e.finite}, ctx.active, B, t);
      const D = dirOf(xn, e.grads);
      // gᵀD is only needed by PR+ (β)
      const gD = options.conjugate ? batchDot(e.grads, D, B) : old.gD;
      let p = D;
      let restarted = tf.onesLike(a.accept) as tf.Tensor1D;
      if (options.conjugate) {
        const beta = tf.relu(tf.div(tf.sub(gD, batchDot(e.grads, old.D, B)), tf.maximum(old.gD, TINY)));
        const pc = axpy(D, beta as tf.Tensor1D, old.p);
        const gp = batchDot(e.grads, pc, B);
        const useConj = tf.logicalAnd(tf.greater(beta, 0), tf.logicalAnd(tf.isFinite(gp), tf.greater(gp, 0))) as tf.Tensor1D;
        p = selectRows(useConj, pc, D);
        restarted = tf.logicalNot(useConj) as tf.Tensor1D;
      }
      const acc = a.accept;
      // one row-wise selector by the acceptance mask, shared by every select below
      const sel = rowSelector(acc, xn);
      const big = tf.greater(old.alpha, maxStep);
      const alphaAcc = tf.minimum(tf.maximum(maxStep, old.alpha), tf.mul(grow, old.alpha));
      const alphaRej = select(big, tf.onesLike(old.alpha), tf.mul(shrink, old.alpha));
      const state: State = {
        x: sel(xn, old.x),
        J: select(acc, e.value, old.J) as tf.Tensor1D,
        g: [],
        gg: select(acc, a.gg, old.gg) as tf.Tensor1D,
        D: sel(D, old.D),
        // after a rejection: back to the plain direction at the old point
        p: options.conjugate ? sel(p, old.D) : [],
        gD: select(acc, gD, old.gD) as tf.Tensor1D,
        alpha: select(acc, alphaAcc, select(a.reject, alphaRej, old.alpha)) as tf.Tensor1D,
      };
      return {state, accept: acc, nonFinite: a.nonFinite, converged: a.converged, restarted};
    },
  });
}
