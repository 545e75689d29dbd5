/**
 * Plain fixed-step gradient ascent: the baseline the conjugate-gradient solver is benchmarked against.
 *
 * @packageDocumentation
 */
import * as tf from '@tensorflow/tfjs-core';
import type {BatchObjective, SolverOptions, SolverResult} from './types.js';
import {
  axpy,
  batchDot,
  checkBatch,
  disposeStateExcept,
  evaluate,
  expandAs,
  whereRows,
  recordValues,
  finitePerExample,
  forwardOnlyResult,
  gradientTest,
  mean,
  toFloatCopy,
} from './cg.js';

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
  const eta = options.stepSize;
  if (!(Number.isFinite(eta) && eta > 0)) {
    throw new Error(`gradientAscent: stepSize must be a positive number, got ${eta}`);
  }
  const maxIterations = options.maxIterations ?? 50;
  const tol = options.tolerance ?? 1e-6;
  const gtol = options.gradientTolerance ?? 1e-6;
  const budget = options.maxGradientEvaluations ?? Infinity;
  const normalize = options.normalize ?? 'none';
  const monotone = options.monotone ?? false;
  const maxRejections = options.maxConsecutiveRejections ?? 6;

  if (!(budget >= 1)) return forwardOnlyResult(f, x0, B);

  type State = {x: tf.Tensor[]; J: tf.Tensor1D; g: tf.Tensor[]; gg: tf.Tensor1D; scale: tf.Tensor1D};
  const history: number[] = [];
  const exampleHistory: number[][] = [];
  let gradientEvaluations = 0;
  let state: State | null = null;
  try {
    const init = tf.tidy(() => {
      const x = x0.map(toFloatCopy);
      const e = evaluate(f, x, B);
      gradientEvaluations++;
      const fin = finitePerExample(e.value, e.grads, x, B);
      const g = e.grads.map((gi) => whereRows(fin, gi, tf.zerosLike(gi)));
      const gg = batchDot(g, g, B);
      const packed = tf.concat([
        e.value,
        tf.cast(fin, 'float32'),
        tf.cast(gradientTest(gg, e.value, gtol), 'float32'),
      ]);
      const s: State = {x, J: e.value, g, gg, scale: tf.ones([B]) as tf.Tensor1D};
      return {s, packed};
    });
    state = init.s;
    const v0 = init.packed.dataSync();
    init.packed.dispose();

    const active = new Uint8Array(B);
    const rejections = new Int32Array(B);
    let nonFinite = 0;
    let converged = 0;
    let stalled = 0;
    const J0 = Array.from(v0.subarray(0, B));
    for (let b = 0; b < B; b++) {
      if (v0[B + b] !== 1) nonFinite++;
      else if (v0[2 * B + b] === 1) converged++;
      else active[b] = 1;
    }
    recordValues(J0, history, exampleHistory);

    let iterations = 0;
    while (iterations < maxIterations && active.some((a) => a === 1)) {
      if (budget - gradientEvaluations < 1) break;
      const old: State = state;
      const next = tf.tidy(() => {
        const act = tf.tensor1d(active, 'bool');
        let step = tf.where(act, tf.mul(eta, old.scale), tf.zerosLike(old.scale)) as tf.Tensor1D;
        if (normalize === 'l2') {
          step = tf.div(step, tf.maximum(tf.sqrt(old.gg), 1e-30)) as tf.Tensor1D;
        }
        const xn = axpy(old.x, step, old.g);
        const N = evaluate(f, xn, B);
        gradientEvaluations++;
        const fin = finitePerExample(N.value, N.grads, xn, B);
        const nonFin = tf.logicalAnd(act, tf.logicalNot(fin));
        const ok = tf.logicalAnd(act, fin);
        const accept = monotone ? tf.logicalAnd(ok, tf.greaterEqual(N.value, old.J)) : ok;
        const reject = tf.logicalAnd(ok, tf.logicalNot(accept));

        const gg = batchDot(N.grads, N.grads, B);
        const dJ = tf.sub(N.value, old.J);
        const valueConv =
          tol >= 0
            ? tf.logicalAnd(
                tf.greaterEqual(dJ, 0),
                tf.lessEqual(dJ, tf.mul(tol, tf.maximum(1, tf.abs(old.J)))),
              )
            : tf.cast(tf.zerosLike(dJ), 'bool');
        const conv = tf.logicalAnd(accept, tf.logicalOr(valueConv, gradientTest(gg, N.value, gtol)));

        const sel = (a: tf.Tensor, b: tf.Tensor, m: tf.Tensor): tf.Tensor =>
          whereRows(m, a, b);
        const s: State = {
          x: xn.map((xi, i) => sel(xi, old.x[i], accept)),
          J: sel(N.value, old.J, accept) as tf.Tensor1D,
          g: N.grads.map((gi, i) => sel(gi, old.g[i], accept)),
          gg: sel(gg, old.gg, accept) as tf.Tensor1D,
          scale: sel(tf.mul(0.5, old.scale), old.scale, reject) as tf.Tensor1D,
        };
        const packed = tf.concat([
          s.J,
          tf.cast(accept, 'float32'),
          tf.cast(nonFin, 'float32'),
          tf.cast(conv, 'float32'),
        ]);
        return {s, packed};
      });
      state = next.s;
      disposeStateExcept(old, state);
      const v = next.packed.dataSync();
      next.packed.dispose();
      iterations++;

      for (let b = 0; b < B; b++) {
        if (active[b] !== 1) continue;
        if (v[2 * B + b] === 1) {
          nonFinite++;
          active[b] = 0;
        } else if (v[B + b] === 1) {
          rejections[b] = 0;
          if (v[3 * B + b] === 1) {
            converged++;
            active[b] = 0;
          }
        } else if (++rejections[b] >= maxRejections) {
          stalled++;
          active[b] = 0;
        }
      }
      const m = recordValues(Array.from(v.subarray(0, B)), history, exampleHistory);
      options.onIteration?.({iteration: iterations, meanObjective: m, gradientEvaluations});
    }

    const done = state;
    state = null;
    tf.dispose([done.g, done.gg, done.scale]);
    return {
      xs: done.x,
      objective: done.J,
      iterations,
      gradientEvaluations,
      functionEvaluations: 0,
      history,
      exampleHistory,
      nonFinite,
      converged,
      stalled,
    };
  } finally {
    if (state != null) tf.dispose([state.x, state.J, state.g, state.gg, state.scale]);
  }
}
