/**
 * The iteration driver shared by every solver: per-example freezing, acceptance and stopping
 * tests, the gradient-evaluation budget, the histories, and exactly one host read-back per
 * iteration. A solver supplies only its state and one `step` (direction + line search).
 *
 * @packageDocumentation
 */
import * as tf from '@tensorflow/tfjs-core';
import type {BatchObjective, SolverOptions, SolverResult} from './types.js';
import {
  batchDot,
  checkBatch,
  disposeAll,
  disposeStateExcept,
  evaluate,
  finitePerExample,
  forwardOnlyResult,
  gradientTest,
  recordValues,
  selectRows,
  toFloatCopy,
  whereRows,
} from './batched.js';
import {rowKernelsAvailable, rowStatsKernel} from '../kernels/rows.js';

/** What every solver state carries: the current point, its J_b and gradient (rows of frozen examples never change). */
export interface BaseState {
  x: tf.Tensor[];
  J: tf.Tensor1D;
  g: tf.Tensor[];
  /** ‖g_b‖², per example. */
  gg: tf.Tensor1D;
}

/** One batched evaluation as the driver hands it to a step. */
export interface Evaluation {
  value: tf.Tensor1D;
  grads: tf.Tensor[];
  /** per example: value, gradient and point finite. */
  finite: tf.Tensor1D;
}

/** One batched evaluation with its per-example scalars read back to the host (see {@link StepContext.evaluateHost}). */
export interface HostEvaluation extends Evaluation {
  /** ∇J evaluated at these points, J_b read back (float32 values). */
  J: Float32Array;
  /** 1 where value, gradient and point are finite. */
  finiteHost: Uint8Array;
  /** ‖g_b‖² per example (the value `batchDot(grads, grads)` gives), read back. */
  gg: Float32Array;
}

/** What a step gets from the driver (all tensors owned by the driver's tidy). */
export interface StepContext {
  B: number;
  /** bool [B]: examples still iterating (frozen ones must keep their rows). */
  active: tf.Tensor1D;
  /** the same flags on the host (1: iterating); read only. */
  activeHost: Uint8Array;
  /** bool [B]: examples whose direction must restart at steepest ascent now (`restartEvery`). */
  restartDue: tf.Tensor1D;
  /** evaluations this iteration may spend (≥ 1; every call of `evaluate` spends one). */
  evals: number;
  /** one batched gradient evaluation at `xs` (counted). */
  evaluate(xs: tf.Tensor[]): Evaluation;
  /**
   * One batched gradient evaluation at `xs` (counted) whose J_b, finiteness flags and ‖g_b‖² are
   * read back to the host at once: THE read-back of this iteration. A step that calls it decides
   * per example on the host and returns a {@link HostStepResult} (no second read-back).
   */
  evaluateHost(xs: tf.Tensor[]): HostEvaluation;
}

/** What a step returns: the next state and per-example flags (bool [B]). */
export interface StepResult<S extends BaseState> {
  state: S;
  /** active, finite and accepted (the point moved). */
  accept: tf.Tensor1D;
  /** active and met a non-finite value (frozen at its last finite point). */
  nonFinite: tf.Tensor1D;
  /** accepted and met the value or gradient tolerance. */
  converged: tf.Tensor1D;
  /** the direction was reset to steepest ascent (restart counter back to 0). Default: every example. */
  restarted?: tf.Tensor1D;
}

/**
 * What a step that decided on the host returns (after {@link StepContext.evaluateHost}): the next
 * state and the per-example outcome as host arrays, so the driver reads nothing back.
 */
export interface HostStepResult<S extends BaseState> {
  state: S;
  host: {
    /** J_b of the returned state. */
    J: Float32Array;
    /** 1: active, finite and accepted (the point moved). */
    accept: Uint8Array;
    /** 1: active and met a non-finite value. */
    nonFinite: Uint8Array;
    /** 1: accepted and met the value or gradient tolerance. */
    converged: Uint8Array;
    /** 1: the direction was reset to steepest ascent. Default: every example. */
    restarted?: Uint8Array;
  };
}

/** A solver as the driver runs it. */
export interface SolverSpec<S extends BaseState> {
  /** Maximum number of iterations (after the defaults of the solver). */
  maxIterations: number;
  /** restart period (β = 0 every that many consecutive non-restarted steps); Infinity = never. */
  restartEvery: number;
  /** an example rejected this many times in a row is frozen as stalled (Infinity: never). */
  maxConsecutiveRejections: number;
  /** evaluations the next iteration spends given what is left of the budget (0: stop). */
  evalsForIteration(remaining: number): number;
  /** the solver state at the start point, from the driver's base state (inside a tidy). */
  init(base: BaseState, B: number): S;
  /** one iteration (inside a tidy). */
  step(old: S, ctx: StepContext): StepResult<S> | HostStepResult<S>;
  /**
   * Optional: per-example values of the start state the step needs on the host, as one float
   * tensor (inside the start tidy); read back with the driver's start read-back and handed to
   * {@link SolverSpec.onStart}.
   */
  startValues?(s: S, B: number): tf.Tensor;
  /** Optional: called once after the start read-back with J_b at x0 and the values of `startValues`. */
  onStart?(J: Float32Array, values: Float32Array | undefined, active: Uint8Array): void;
  /**
   * Optional, for a solver whose `startValues` are [v(J), ‖g_b‖²] with v depending on J at x0 alone:
   * v(J) as one float tensor (inside the start tidy). With it (and the row kernels of wasm/cpu), the
   * driver starts with ONE fused row kernel for the finiteness flags and ‖g_b‖² of the start (the
   * iterations' `evaluateHost` kernel) instead of the per-example tensor ops and row selects, zeroes
   * the gradient rows of non-finite examples only when there are any, and hands `onStart` the same
   * values: the same start state. (The gradient test runs on the host in float32 arithmetic.)
   */
  hostStartValues?(J: tf.Tensor1D, B: number): tf.Tensor;
}

/** Resolved stopping tolerances. */
export interface Tolerances {
  tol: number;
  gtol: number;
}

export function tolerances(options: SolverOptions): Tolerances {
  return {tol: options.tolerance ?? 1e-6, gtol: options.gradientTolerance ?? 1e-6};
}

/**
 * The standard per-example acceptance of a candidate point: finite, and (when `monotone`)
 * J_new ≥ J_old. Returns the flags and `select(a, b)`, a row-wise select of accepted rows.
 * The value test (`tolerance`) counts accepted steps with 0 ≤ ΔJ ≤ tol·max(1, |J_old|).
 */
export function acceptance(
  old: BaseState,
  cand: {J: tf.Tensor1D; g: tf.Tensor[]; finite: tf.Tensor1D},
  active: tf.Tensor1D,
  B: number,
  t: Tolerances,
  monotone = true,
): {accept: tf.Tensor1D; reject: tf.Tensor1D; nonFinite: tf.Tensor1D; converged: tf.Tensor1D; gg: tf.Tensor1D} {
  const nonFinite = tf.logicalAnd(active, tf.logicalNot(cand.finite)) as tf.Tensor1D;
  const ok = tf.logicalAnd(active, cand.finite);
  const accept = (monotone ? tf.logicalAnd(ok, tf.greaterEqual(cand.J, old.J)) : ok) as tf.Tensor1D;
  const reject = tf.logicalAnd(ok, tf.logicalNot(accept)) as tf.Tensor1D;
  const gg = batchDot(cand.g, cand.g, B);
  const dJ = tf.sub(cand.J, old.J);
  const valueConv =
    t.tol >= 0
      ? tf.logicalAnd(tf.greaterEqual(dJ, 0), tf.lessEqual(dJ, tf.mul(t.tol, tf.maximum(1, tf.abs(old.J)))))
      : tf.cast(tf.zerosLike(dJ), 'bool');
  const converged = tf.logicalAnd(accept, tf.logicalOr(valueConv, gradientTest(gg, cand.J, t.gtol))) as tf.Tensor1D;
  return {accept, reject, nonFinite, converged, gg};
}

export {selectRows};

/**
 * Runs a solver: one evaluation at x0, then iterations until every example is frozen, the
 * iteration limit, or the budget. Guarantees (for every solver built on it): at most one host
 * read-back per iteration (plus one at the start); every iteration in a `tf.tidy`; only the
 * returned tensors survive; `x0` is neither modified nor disposed; `gradientEvaluations ≤
 * maxGradientEvaluations`.
 */
export function runSolver<S extends BaseState>(
  f: BatchObjective,
  x0: tf.Tensor[],
  options: SolverOptions,
  spec: SolverSpec<S>,
): SolverResult {
  const B = checkBatch(x0);
  const t = tolerances(options);
  const budget = options.maxGradientEvaluations ?? Infinity;
  if (!(budget >= 1)) return forwardOnlyResult(f, x0, B);
  const restartEvery = spec.restartEvery;

  const history: number[] = [];
  const exampleHistory: number[][] = [];
  let gradientEvaluations = 0;
  let state: S | null = null;
  try {
    const fastStart = hostStart(f, x0, B, t, spec);
    const init = fastStart ? {s: fastStart.s, packed: undefined} : tidyState(() => {
      const x = x0.map(toFloatCopy);
      const e = evaluate(f, x, B);
      gradientEvaluations++;
      const fin = finitePerExample(e.value, e.grads, x, B);
      const g = e.grads.map((gi) => whereRows(fin, gi, tf.zerosLike(gi)));
      const gg = batchDot(g, g, B);
      const s = spec.init({x, J: e.value, g, gg}, B);
      const extra = spec.startValues ? [tf.reshape(spec.startValues(s, B), [-1])] : [];
      const packed = tf.concat([e.value, tf.cast(fin, 'float32'), tf.cast(gradientTest(gg, e.value, t.gtol), 'float32'), ...extra]);
      return {s, packed};
    });
    state = init.s;
    let v0: Float32Array;
    if (fastStart) {
      v0 = fastStart.v0;
      gradientEvaluations++;
    } else {
      v0 = (init.packed as tf.Tensor).dataSync() as Float32Array;
      (init.packed as tf.Tensor).dispose();
    }

    const active = new Uint8Array(B);
    const sinceRestart = new Int32Array(B);
    const rejections = new Int32Array(B);
    let nonFinite = 0;
    let converged = 0;
    let stalled = 0;
    for (let b = 0; b < B; b++) {
      if (v0[B + b] !== 1) nonFinite++;
      else if (v0[2 * B + b] === 1) converged++;
      else active[b] = 1;
    }
    recordValues(Array.from(v0.subarray(0, B)), history, exampleHistory);
    spec.onStart?.(v0.slice(0, B), spec.startValues ? v0.slice(3 * B) : undefined, active);

    let iterations = 0;
    while (iterations < spec.maxIterations && active.some((a) => a === 1)) {
      const evals = spec.evalsForIteration(budget - gradientEvaluations);
      if (evals < 1) break;
      const due = new Uint8Array(B);
      for (let b = 0; b < B; b++) due[b] = sinceRestart[b] + 1 >= restartEvery ? 1 : 0;
      const old = state as S;
      // host results leave the tidy by this variable: returned through it, tf.tidy would walk
      // every element of the typed arrays looking for tensors
      let hostOut: HostStepResult<S>['host'] | undefined;
      const next = tidyState(() => {
        const ctx: StepContext = {
          B,
          active: tf.tensor1d(active, 'bool'),
          activeHost: active,
          restartDue: tf.tensor1d(due, 'bool'),
          evals,
          evaluate: (xs: tf.Tensor[]) => {
            const e = evaluate(f, xs, B);
            gradientEvaluations++;
            return {...e, finite: finitePerExample(e.value, e.grads, xs, B)};
          },
          evaluateHost: (xs: tf.Tensor[]) => {
            const e = evaluate(f, xs, B, true);
            gradientEvaluations++;
            // [J, finite flags, ‖g‖²] in one read-back (finiteness and ‖g‖² in one kernel on wasm/cpu,
            // or computed by the fused evaluation itself)
            const fused = e.grads.every((g) => g.dtype === 'float32' && g.rank >= 1) && rowKernelsAvailable();
            const packed = e.stats
              ? e.stats
              : fused
                ? tf.concat([e.value, rowStatsKernel(e.grads, [e.value, ...xs])])
                : tf.concat([e.value, tf.cast(finitePerExample(e.value, e.grads, xs, B), 'float32'), batchDot(e.grads, e.grads, B)]);
            const v = packed.dataSync() as Float32Array;
            packed.dispose();
            const fin = new Uint8Array(B);
            for (let b = 0; b < B; b++) fin[b] = v[B + b] === 1 ? 1 : 0;
            return {...e, finite: tf.tensor1d(fin.slice(), 'bool'), J: v.slice(0, B), finiteHost: fin, gg: v.slice(2 * B, 3 * B)};
          },
        };
        const r = spec.step(old, ctx);
        if ('host' in r) {
          hostOut = r.host;
          return {s: r.state};
        }
        const restarted = r.restarted ?? tf.onesLike(r.accept);
        const packed = tf.concat([
          r.state.J,
          tf.cast(r.accept, 'float32'),
          tf.cast(r.nonFinite, 'float32'),
          tf.cast(r.converged, 'float32'),
          tf.cast(restarted, 'float32'),
        ]);
        return {s: r.state, packed};
      });
      state = next.s;
      disposeStateExcept(old, state);
      let out: {J: ArrayLike<number>; accept: ArrayLike<number>; nonFinite: ArrayLike<number>; converged: ArrayLike<number>; restarted?: ArrayLike<number>};
      if (hostOut) {
        out = hostOut;
      } else {
        const v = (next.packed as tf.Tensor).dataSync();
        (next.packed as tf.Tensor).dispose();
        out = {J: v.subarray(0, B), accept: v.subarray(B, 2 * B), nonFinite: v.subarray(2 * B, 3 * B), converged: v.subarray(3 * B, 4 * B), restarted: v.subarray(4 * B)};
      }
      iterations++;

      for (let b = 0; b < B; b++) {
        if (active[b] !== 1) continue;
        if (out.nonFinite[b] === 1) {
          nonFinite++;
          active[b] = 0;
        } else if (out.accept[b] === 1) {
          rejections[b] = 0;
          sinceRestart[b] = (out.restarted?.[b] ?? 1) === 1 ? 0 : sinceRestart[b] + 1;
          if (out.converged[b] === 1) {
            converged++;
            active[b] = 0;
          }
        } else {
          rejections[b]++;
          sinceRestart[b] = 0;
          if (rejections[b] >= spec.maxConsecutiveRejections) {
            stalled++;
            active[b] = 0;
          }
        }
      }
      const m = recordValues(Array.from(out.J), history, exampleHistory);
      options.onIteration?.({iteration: iterations, meanObjective: m, gradientEvaluations});
    }

    const done = state;
    state = null;
    disposeStateExcept(done, {x: done.x, J: done.J});
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
    if (state != null) disposeAll(state);
  }
}

/**
 * The start of {@link runSolver} for a spec with `hostStartValues`, when the fused row kernels run:
 * one evaluation at a float32 copy of x0, ONE read-back of [J, finiteness flags, ‖g_b‖², v(J)]
 * (flags and squared norms by the `rowStats` kernel, as in `evaluateHost`), the gradient test on
 * the host (float32 arithmetic: the values of `gradientTest`), and the spec's `init` with the
 * gradient rows of non-finite examples zeroed (only when there are any). Returns the start state
 * and the host values laid out as the generic start's read-back ([J, flags, converged, values]),
 * or null when it does not apply (the generic start runs). Leaves no tensor but the state.
 */
function hostStart<S extends BaseState>(f: BatchObjective, x0: tf.Tensor[], B: number, t: Tolerances, spec: SolverSpec<S>): {s: S; v0: Float32Array} | null {
  const startValues = spec.hostStartValues?.bind(spec);
  if (startValues == null || !rowKernelsAvailable()) return null;
  let v0: Float32Array | null = null;
  // one tidy for the evaluation, the read-back and `init` (whose direction may be one the evaluation made)
  const s = tf.tidy((() => {
    const x = x0.map(toFloatCopy);
    const e = evaluate(f, x, B, true);
    if (!e.grads.every((g) => g.dtype === 'float32' && g.rank >= 1)) return undefined; // (not seen: the generic start runs)
    const vs = tf.reshape(tf.cast(startValues(e.value, B), 'float32'), [-1]);
    const v = tf.concat(e.stats ? [e.stats, vs] : [e.value, rowStatsKernel(e.grads, [e.value, ...x]), vs]).dataSync() as Float32Array;
    const fr = Math.fround;
    const fin = new Uint8Array(B);
    let allFinite = true;
    const host = new Float32Array(v.length + B);
    for (let b = 0; b < B; b++) {
      const J = v[b];
      fin[b] = v[B + b] === 1 ? 1 : 0;
      if (fin[b] !== 1) allFinite = false;
      // gradientTest(gg, J, gtol): √gg ≤ gtol·max(1, |J|) in float32
      const conv = t.gtol >= 0 && fr(Math.sqrt(v[2 * B + b])) <= fr(fr(t.gtol) * Math.max(1, Math.abs(J)));
      host[b] = J;
      host[B + b] = fin[b];
      host[2 * B + b] = conv ? 1 : 0;
    }
    // the spec's values: v(J), then ‖g_b‖²
    host.set(v.subarray(3 * B), 3 * B);
    host.set(v.subarray(2 * B, 3 * B), v.length);
    v0 = host;
    const g = allFinite ? e.grads : e.grads.map((gi) => whereRows(tf.tensor1d(fin, 'bool'), gi, tf.zerosLike(gi)));
    return spec.init({x, J: e.value, g, gg: tf.tensor1d(v.slice(2 * B, 3 * B))}, B) as unknown as tf.TensorContainer;
  }) as () => tf.TensorContainer) as unknown as S | undefined;
  return s == null || v0 == null ? null : {s, v0};
}

/** `tf.tidy` for a solver state plus one packed read-back tensor or host values (the state type is not a TensorContainer for TypeScript). */
function tidyState<S, H = never>(fn: () => {s: S; packed?: tf.Tensor; host?: H}): {s: S; packed?: tf.Tensor; host?: H} {
  return tf.tidy(fn as unknown as () => tf.TensorContainer) as unknown as {s: S; packed?: tf.Tensor; host?: H};
}
