/**
 * Batched nonlinear conjugate gradient (Polak–Ribière+) for the inner maximisation of eq. 11.
 *
 * @packageDocumentation
 */
import * as tf from '@tensorflow/tfjs-core';
import type {BatchObjective, SolverOptions, SolverResult} from './types.js';

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

/** Smallest positive divisor used to guard float32 divisions. */
const TINY = 1e-30;
/** The trial point replaces the secant point only if its J is higher by this much (relative): float32 noise. */
const TRIAL_MARGIN = 1e-6;

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
  const maxIterations = options.maxIterations ?? 20;
  const tol = options.tolerance ?? 1e-6;
  const gtol = options.gradientTolerance ?? 1e-6;
  const budget = options.maxGradientEvaluations ?? Infinity;
  const restartEvery = Math.max(1, Math.floor(options.restartEvery ?? Math.min(2 * n, 50)));
  const maxGrow = options.maxStepGrowth ?? 100;
  const extrap = options.extrapolationFactor ?? 4;
  const shrink = options.shrinkFactor ?? 0.25;
  const maxRejections = options.maxConsecutiveRejections ?? 6;
  const initialStepLength = options.initialStepLength;

  const history: number[] = [];
  const exampleHistory: number[][] = [];
  let gradientEvaluations = 0;

  if (!(budget >= 1)) {
    return forwardOnlyResult(f, x0, B);
  }

  type State = {
    x: tf.Tensor[];
    J: tf.Tensor1D;
    g: tf.Tensor[];
    p: tf.Tensor[];
    gg: tf.Tensor1D; // gᵀg
    d0: tf.Tensor1D; // gᵀp = φ′(0)
    sigma: tf.Tensor1D; // next trial step along p
  };

  let state: State | null = null;
  try {
    // ---- start point: one gradient evaluation, one read-back --------------------------------
    const init = tf.tidy(() => {
      const x = x0.map(toFloatCopy);
      const e = evaluate(f, x, B);
      gradientEvaluations++;
      const fin = finitePerExample(e.value, e.grads, x, B);
      const g = e.grads.map((gi) => whereRows(fin, gi, tf.zerosLike(gi)));
      const p = g.map((gi) => tf.clone(gi));
      const gg = batchDot(g, g, B);
      const s0 =
        initialStepLength != null
          ? tf.fill([B], initialStepLength)
          : tf.mul(0.1, tf.maximum(1, tf.sqrt(batchDot(x, x, B))));
      const sigma = tf.div(s0, tf.maximum(tf.sqrt(gg), TINY)) as tf.Tensor1D;
      const gradConv = gradientTest(gg, e.value, gtol);
      const packed = tf.concat([e.value, tf.cast(fin, 'float32'), tf.cast(gradConv, 'float32')]);
      const s: State = {x, J: e.value, g, p, gg, d0: tf.clone(gg), sigma};
      return {s, packed};
    });
    state = init.s;
    const v0 = init.packed.dataSync();
    init.packed.dispose();

    const active = new Uint8Array(B); // 1 = still iterating
    const sinceRestart = new Int32Array(B);
    const rejections = new Int32Array(B);
    let nonFinite = 0;
    let converged = 0;
    let stalled = 0;
    const J0 = Array.from(v0.subarray(0, B));
    for (let b = 0; b < B; b++) {
      if (v0[B + b] !== 1) {
        nonFinite++;
      } else if (v0[2 * B + b] === 1) {
        converged++;
      } else {
        active[b] = 1;
      }
    }
    recordValues(J0, history, exampleHistory);

    let iterations = 0;
    while (iterations < maxIterations) {
      if (!active.some((a) => a === 1)) break;
      const remaining = budget - gradientEvaluations;
      if (remaining < 1) break;
      const twoEvals = remaining >= 2;
      const due = new Uint8Array(B);
      for (let b = 0; b < B; b++) due[b] = sinceRestart[b] + 1 >= restartEvery ? 1 : 0;

      const old: State = state;
      const next = tf.tidy(() => {
        const act = tf.tensor1d(active, 'bool');
        const restartDue = tf.tensor1d(due, 'bool');
        const okSigma = tf.logicalAnd(
          act,
          tf.logicalAnd(tf.isFinite(old.sigma), tf.greater(old.sigma, 0)),
        );
        const sig = tf.where(okSigma, old.sigma, tf.zerosLike(old.sigma)) as tf.Tensor1D;

        // (1) trial point x + σp
        const xt = axpy(old.x, sig, old.p);
        const T = evaluate(f, xt, B);
        gradientEvaluations++;
        const finT = finitePerExample(T.value, T.grads, xt, B);
        const d1 = batchDot(T.grads, old.p, B);
        const denom = tf.sub(old.d0, d1); // φ′(0) − φ′(σ) = σ·(−φ″) for a quadratic

        let candX = xt;
        let candJ = T.value;
        let candG = T.grads;
        let step: tf.Tensor1D = sig;
        let fin = finT;
        if (twoEvals) {
          // (2) secant on φ′, capped; extrapolate when not concave along p
          const ratio = tf.div(old.d0, tf.maximum(denom, TINY));
          const factor = tf.where(
            tf.greater(denom, 0),
            tf.minimum(ratio, maxGrow),
            tf.fill([B], extrap),
          );
          const alpha = tf.mul(sig, factor) as tf.Tensor1D;
          // (3) secant point: its gradient becomes the next gradient
          const xn = axpy(old.x, alpha, old.p);
          const N = evaluate(f, xn, B);
          gradientEvaluations++;
          const finN = finitePerExample(N.value, N.grads, xn, B);
          fin = tf.logicalAnd(finT, finN);
          // (4) keep the better of trial and secant points
          // (the margin keeps float32 noise from picking a slightly-off trial point on a
          // near-quadratic J, which would spoil conjugacy)
          const margin = tf.mul(TRIAL_MARGIN, tf.maximum(1, tf.abs(N.value)));
          const useTrial = tf.greater(T.value, tf.add(N.value, margin));
          candJ = tf.where(useTrial, T.value, N.value) as tf.Tensor1D;
          candX = xn.map((xi, i) => whereRows(useTrial, xt[i], xi));
          candG = N.grads.map((gi, i) => whereRows(useTrial, T.grads[i], gi));
          step = tf.where(useTrial, sig, alpha) as tf.Tensor1D;
        }

        const nonFin = tf.logicalAnd(act, tf.logicalNot(fin));
        const ok = tf.logicalAnd(act, fin);
        const accept = tf.logicalAnd(ok, tf.greaterEqual(candJ, old.J));
        const reject = tf.logicalAnd(ok, tf.logicalNot(accept));

        // stopping tests at the accepted point
        const gcc = batchDot(candG, candG, B);
        const dJ = tf.sub(candJ, old.J);
        const valueConv =
          tol >= 0
            ? tf.lessEqual(dJ, tf.mul(tol, tf.maximum(1, tf.abs(old.J))))
            : tf.cast(tf.zerosLike(dJ), 'bool');
        const conv = tf.logicalAnd(accept, tf.logicalOr(valueConv, gradientTest(gcc, candJ, gtol)));

        // new direction: Polak–Ribière+ with restarts
        const gcg = batchDot(candG, old.g, B);
        const betaPR = tf.relu(tf.div(tf.sub(gcc, gcg), tf.maximum(old.gg, TINY)));
        const beta = tf.where(restartDue, tf.zerosLike(betaPR), betaPR) as tf.Tensor1D;
        const pConj = axpy(candG, beta, old.p);
        const dConj = batchDot(candG, pConj, B);
        const useConj = tf.logicalAnd(
          tf.greater(beta, 0),
          tf.logicalAnd(tf.isFinite(dConj), tf.greater(dConj, 0)),
        );
        const pDir = pConj.map((pi, i) => whereRows(useConj, pi, candG[i]));
        const dDir = tf.where(useConj, dConj, gcc) as tf.Tensor1D;

        // next trial step: predicted line maximum from the measured curvature along p,
        // κ = (φ′(0) − φ′(σ)) / (σ‖p‖²) per unit displacement², σ_next = dDir / (κ‖pDir‖²);
        // if not concave, keep the displacement length just taken. Capped at maxGrow × that length.
        const pp = batchDot(old.p, old.p, B);
        const pdpd = batchDot(pDir, pDir, B);
        const pNorm = tf.sqrt(pp);
        const pDirNorm = tf.maximum(tf.sqrt(pdpd), TINY);
        const lastLen = tf.mul(step, pNorm); // displacement just taken
        const kappa = tf.div(denom, tf.maximum(tf.mul(sig, pp), TINY));
        const predicted = tf.div(dDir, tf.maximum(tf.mul(kappa, pdpd), TINY));
        const keepLen = tf.div(lastLen, pDirNorm);
        const cap = tf.div(tf.mul(maxGrow, lastLen), pDirNorm);
        let sigmaAcc = tf.where(
          tf.logicalAnd(tf.greater(denom, 0), tf.greater(sig, 0)),
          tf.minimum(predicted, cap),
          keepLen,
        );
        sigmaAcc = tf.where(
          tf.logicalAnd(tf.isFinite(sigmaAcc), tf.greater(sigmaAcc, 0)),
          sigmaAcc,
          keepLen,
        );
        // after a rejection: steepest ascent from the old point, shorter trial displacement
        const sigmaRej = tf.div(
          tf.mul(shrink, tf.mul(sig, pNorm)),
          tf.maximum(tf.sqrt(old.gg), TINY),
        );

        const sel = (a: tf.Tensor, b: tf.Tensor, m: tf.Tensor): tf.Tensor =>
          whereRows(m, a, b);
        const x = candX.map((ci, i) => sel(ci, old.x[i], accept));
        const J = sel(candJ, old.J, accept) as tf.Tensor1D;
        const g = candG.map((ci, i) => sel(ci, old.g[i], accept));
        const gg = sel(gcc, old.gg, accept) as tf.Tensor1D;
        const p = pDir.map((pi, i) => sel(pi, sel(old.g[i], old.p[i], reject), accept));
        const d0 = sel(dDir, sel(old.gg, old.d0, reject), accept) as tf.Tensor1D;
        const sigma = sel(sigmaAcc, sel(sigmaRej, old.sigma, reject), accept) as tf.Tensor1D;

        const packed = tf.concat([
          J,
          tf.cast(accept, 'float32'),
          tf.cast(nonFin, 'float32'),
          tf.cast(conv, 'float32'),
          tf.cast(tf.logicalNot(useConj), 'float32'),
        ]);
        const s: State = {x, J, g, p, gg, d0, sigma};
        return {s, packed};
      });
      state = next.s;
      disposeStateExcept(old, state);
      const v = next.packed.dataSync();
      next.packed.dispose();
      iterations++;

      // ---- host bookkeeping (no device access) ------------------------------------------
      for (let b = 0; b < B; b++) {
        if (active[b] !== 1) continue;
        if (v[2 * B + b] === 1) {
          nonFinite++;
          active[b] = 0;
        } else if (v[B + b] === 1) {
          rejections[b] = 0;
          sinceRestart[b] = v[4 * B + b] === 1 ? 0 : sinceRestart[b] + 1;
          if (v[3 * B + b] === 1) {
            converged++;
            active[b] = 0;
          }
        } else {
          rejections[b]++;
          sinceRestart[b] = 0;
          if (rejections[b] >= maxRejections) {
            stalled++;
            active[b] = 0;
          }
        }
      }
      const m = recordValues(Array.from(v.subarray(0, B)), history, exampleHistory);
      options.onIteration?.({iteration: iterations, meanObjective: m, gradientEvaluations});
    }

    const result: SolverResult = {
      xs: state.x,
      objective: state.J,
      iterations,
      gradientEvaluations,
      functionEvaluations: 0,
      history,
      exampleHistory,
      nonFinite,
      converged,
      stalled,
    };
    const done = state;
    state = null;
    tf.dispose([done.g, done.p, done.gg, done.d0, done.sigma]);
    return result;
  } finally {
    if (state != null) {
      // an exception escaped: free the carried state
      tf.dispose([state.x, state.J, state.g, state.p, state.gg, state.d0, state.sigma]);
    }
  }
}

// ------------------------------------------------------------------------------------------------
// Helpers shared with gradient_ascent.ts (internal; not re-exported by the package index).
// ------------------------------------------------------------------------------------------------

/**
 * Checks that `xs` is a non-empty list of tensors of rank ≥ 1 sharing their first dimension.
 * @returns the batch size B.
 * @internal
 */
export function checkBatch(xs: tf.Tensor[]): number {
  if (xs.length === 0) throw new Error('solver: x0 must contain at least one tensor');
  const B = xs[0].shape[0];
  for (const x of xs) {
    if (x.rank < 1 || x.shape[0] !== B) {
      throw new Error(
        `solver: every tensor of x0 must have shape [B, ...] with the same B; got ${xs
          .map((t) => `[${t.shape.join(',')}]`)
          .join(', ')}`,
      );
    }
  }
  return B;
}

/** Free scalars per example, summed over the list. @internal */
export function freeDims(xs: tf.Tensor[], B: number): number {
  return xs.reduce((acc, x) => acc + (B > 0 ? x.size / B : 0), 0);
}

/** float32 copy (a cheap clone sharing the buffer when already float32). @internal */
export function toFloatCopy(x: tf.Tensor): tf.Tensor {
  return x.dtype === 'float32' ? tf.clone(x) : tf.cast(x, 'float32');
}

/** Reshapes a per-example tensor [B] to [B, 1, ..., 1] so that it broadcasts against `t`. @internal */
/** Appends one iteration's per-example values and their mean to the histories; returns the mean. @internal */
export function recordValues(values: number[], history: number[], exampleHistory: number[][]): number {
  const m = mean(values);
  exampleHistory.push(values);
  history.push(m);
  return m;
}

export function expandAs(v: tf.Tensor, t: tf.Tensor): tf.Tensor {
  if (t.rank <= 1) return v;
  return tf.reshape(v, [v.shape[0], ...new Array<number>(t.rank - 1).fill(1)]);
}

/**
 * Row-wise select: `a` where the per-example `mask` ([B], bool) is true, else `b` (same shapes).
 * The mask is broadcast with a multiply instead of letting `tf.where` broadcast it: tfjs
 * implements the latter with a `Tile` kernel, which on the wasm backend cost about as much as
 * the network's matrix products (measured: 87 Tile kernels took 263 ms of a 10-evaluation attack,
 * the 60 BatchMatMuls 368 ms). NaN/Inf in the unselected operand do not leak through.
 * @internal
 */
export function whereRows(mask: tf.Tensor, a: tf.Tensor, b: tf.Tensor): tf.Tensor {
  if (a.rank <= 1) return tf.where(mask, a, b);
  const full = tf.cast(tf.mul(tf.onesLike(a), expandAs(tf.cast(mask, 'float32'), a)), 'bool');
  return tf.where(full, a, b);
}

/**
 * Per-example dot product over ALL tensors of the lists: Σ_i Σ_{non-batch axes} a_i·b_i → [B].
 * @internal
 */
export function batchDot(as: tf.Tensor[], bs: tf.Tensor[], B: number): tf.Tensor1D {
  const parts = as.map((a, i) => {
    const prod = tf.mul(a, bs[i]);
    return a.rank <= 1 ? prod : tf.sum(tf.reshape(prod, [B, -1]), 1);
  });
  return (parts.length === 1 ? parts[0] : tf.addN(parts)) as tf.Tensor1D;
}

/** xs[i] + a·ps[i] with a per-example scalar a of shape [B]. @internal */
export function axpy(xs: tf.Tensor[], a: tf.Tensor1D, ps: tf.Tensor[]): tf.Tensor[] {
  return xs.map((x, i) => tf.add(x, tf.mul(expandAs(a, ps[i]), ps[i])));
}

/** Per-example flag [B] (bool): J_b, its gradient and the point are all finite. @internal */
export function finitePerExample(
  J: tf.Tensor1D,
  grads: tf.Tensor[],
  xs: tf.Tensor[],
  B: number,
): tf.Tensor1D {
  let fin = tf.isFinite(J);
  for (const t of [...grads, ...xs]) {
    const f = tf.isFinite(t);
    fin = tf.logicalAnd(fin, t.rank <= 1 ? f : tf.all(tf.reshape(f, [B, -1]), 1));
  }
  return fin as tf.Tensor1D;
}

/** ‖g_b‖ ≤ gtol·max(1, |J_b|) from gg = ‖g_b‖² (false when gtol < 0). @internal */
export function gradientTest(gg: tf.Tensor1D, J: tf.Tensor1D, gtol: number): tf.Tensor1D {
  if (gtol < 0) return tf.cast(tf.zerosLike(gg), 'bool') as tf.Tensor1D;
  return tf.lessEqual(tf.sqrt(gg), tf.mul(gtol, tf.maximum(1, tf.abs(J)))) as tf.Tensor1D;
}

/**
 * One batched gradient evaluation: J = f(xs) (shape [B]) and ∇ Σ_b J_b w.r.t. every xs[i]
 * (= the per-example gradients, examples being independent). Tensors of the list that J does not
 * depend on get a zero gradient. Must be called inside a tidy.
 * @internal
 */
export function evaluate(
  f: BatchObjective,
  xs: tf.Tensor[],
  B: number,
): {value: tf.Tensor1D; grads: tf.Tensor[]} {
  const res = tf.engine().gradients(() => f(xs), xs, undefined, true);
  const value = res.value as tf.Tensor1D;
  if (value.rank !== 1 || value.shape[0] !== B) {
    throw new Error(`solver: the objective must return shape [${B}], got [${value.shape.join(',')}]`);
  }
  const grads = xs.map((x, i) => {
    const gi = res.grads[i];
    return gi == null ? tf.zerosLike(x) : gi.dtype === 'float32' ? gi : tf.cast(gi, 'float32');
  });
  return {value: value.dtype === 'float32' ? value : (tf.cast(value, 'float32') as tf.Tensor1D), grads};
}

/** Result when the gradient budget is < 1: the start point and one forward pass. @internal */
export function forwardOnlyResult(f: BatchObjective, x0: tf.Tensor[], B: number): SolverResult {
  const out = tf.tidy(() => {
    const xs = x0.map(toFloatCopy);
    const J = f(xs);
    if (J.rank !== 1 || J.shape[0] !== B) {
      throw new Error(`solver: the objective must return shape [${B}], got [${J.shape.join(',')}]`);
    }
    return {xs, J: tf.cast(J, 'float32') as tf.Tensor1D};
  });
  const J0 = Array.from(out.J.dataSync());
  return {
    xs: out.xs,
    objective: out.J,
    iterations: 0,
    gradientEvaluations: 0,
    functionEvaluations: 1,
    history: [mean(J0)],
    exampleHistory: [J0],
    nonFinite: J0.filter((v) => !Number.isFinite(v)).length,
    converged: 0,
    stalled: 0,
  };
}

/** Disposes every tensor of `old` that is not also in `keep`. @internal */
export function disposeStateExcept(old: object, keep: object): void {
  const keepIds = new Set<number>();
  collect(keep, (t) => keepIds.add(t.id));
  collect(old, (t) => {
    if (!keepIds.has(t.id) && !t.isDisposed) t.dispose();
  });
}

function collect(v: unknown, fn: (t: tf.Tensor) => void): void {
  if (v instanceof tf.Tensor) fn(v);
  else if (Array.isArray(v)) v.forEach((e) => collect(e, fn));
  else if (v != null && typeof v === 'object') Object.values(v).forEach((e) => collect(e, fn));
}

/** Arithmetic mean of a host array (NaN if empty). @internal */
export function mean(a: number[]): number {
  return a.reduce((s, v) => s + v, 0) / a.length;
}
