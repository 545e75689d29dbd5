/**
 * Preconditioned ascent: the disturbance-space solver of the deep attack.
 *
 * @packageDocumentation
 */
import * as tf from '@tensorflow/tfjs-core';
import type {BatchObjective, SolverOptions, SolverResult} from './types.js';
import {axpy, backendSign, batchDot, checkBatch, expandAs, gradientTest, hostSelect, rowSelector, select, stepRows, TINY, whereRows} from './batched.js';
import {acceptance, BaseState, runSolver, selectRows, tolerances, type HostStepResult, type StepContext, type StepResult} from './driver.js';

let hostDecisions = true;

/**
 * Turns the host-decision iteration of {@link preconditionedAscent} off (`false`: every
 * per-example decision as tensor ops, the path PR+ always takes) or back on. Both give the same
 * iterates; for tests and A/B measurements. @internal
 */
export function setPreconditionedHostDecisions(on: boolean): void {
  hostDecisions = on;
}

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
  /**
   * The point the first step extrapolates from. `'start'` (default): the first candidate is
   * x0 + α·D0. `'origin'`: α·(x0 + D0), on the line from x = 0 through the direction's unit step
   * x0 + D0 (the same point when α = 1): with a random start and a first step α ≫ 1 it extrapolates
   * the local maximiser T(x0) = x0 + D0 from the origin instead of amplifying the random x0.
   */
  initialStepFrom?: 'start' | 'origin';
  /** Largest step reached by growing after accepted steps. Default 1. */
  maxStep?: number;
  /** After an accepted step α ← min(maxStep, growFactor·α). Default 2. */
  growFactor?: number;
  /** After a rejected step α ← shrinkFactor·α. Default 0.3. */
  shrinkFactor?: number;
  /** An example rejected this many times in a row is frozen as stalled. Default 8. */
  maxConsecutiveRejections?: number;
  /**
   * Annealed non-monotone phase (default off). An example stays on the monotone rule above until a
   * step α ≤ `maxStep` is rejected — the sign that it has reached a kink (ReLU, max-pooling) or a
   * ridge where the local model stops predicting the objective. From then on it moves to every
   * finite candidate, also downhill, with a step that decays as a cosine from that rejected α to
   * `floor`·α at the last iteration the budget allows, and the solver keeps (and returns) the best
   * point met; PR+ is not used in this phase. Requires a finite `maxGradientEvaluations` or
   * `maxIterations` (the schedule ends there). `true` = `{}`.
   */
  anneal?: boolean | AnnealOptions;
}

/** The annealed phase of {@link preconditionedAscent}. */
export interface AnnealOptions {
  /** Last step of the schedule as a fraction of its first. Default 0.02. */
  floor?: number;
  /** Rejected steps α ≤ `maxStep` (counted over the whole run) that switch an example to the annealed phase. Default 1. */
  after?: number;
  /** First step of the annealed phase. Default: the rejected step α that switched the example. */
  start?: number;
  /**
   * An example switches only while at least this many iterations of the schedule remain (after
   * that it stays on the monotone rule): a shorter annealed schedule costs more than it finds.
   * Default 0.
   */
  minRemaining?: number;
  /**
   * One factor per tensor of the list on the annealed step (over-relaxation: > 1 where the
   * direction's unit step is known to fall short, e.g. a quadratic penalty whose curvature the
   * loss partly offsets). Default 1 for every tensor.
   */
  scale?: number[];
  /**
   * Per tensor of the list: in the annealed phase, step along sign(p)·mean|p| (mean over the
   * example's entries of that tensor) instead of p — the steepest-ascent step of an L∞ geometry,
   * as PGD's sign steps. Default false for every tensor.
   */
  sign?: boolean[];
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
  const fromOrigin = options.initialStepFrom ?? 'start';
  if (fromOrigin !== 'start' && fromOrigin !== 'origin') {
    throw new Error(`preconditionedAscent: initialStepFrom must be 'start' or 'origin', got ${String(options.initialStepFrom)}`);
  }
  /** The first candidate from the origin: xn + (α − 1)·x0 = α·(x0 + D0) where xn = x0 + α·D0 (0 for frozen rows). */
  const shiftFirst = (xn: tf.Tensor[], x: tf.Tensor[], step: tf.Tensor1D): tf.Tensor[] =>
    iteration === 1 && fromOrigin === 'origin' ? axpy(xn, select(tf.greater(step, 0), tf.sub(step, 1), tf.zerosLike(step)) as tf.Tensor1D, x) : xn;
  const dirOf = (x: tf.Tensor[], g: tf.Tensor[]) => {
    const D = direction(x, g);
    if (D.length !== x.length) throw new Error(`preconditionedAscent: direction returned ${D.length} tensors for ${x.length}`);
    return D.map((d, i) => (d.dtype === 'float32' ? d : tf.cast(d, 'float32')));
  };

  const ann = options.anneal ? (options.anneal === true ? {} : options.anneal) : null;
  let lastIteration = Infinity;
  if (ann) {
    const floor = ann.floor ?? 0.02;
    if (!(floor >= 0 && floor <= 1)) throw new Error(`preconditionedAscent: anneal.floor must be in [0, 1], got ${String(ann.floor)}`);
    if (ann.scale !== undefined && (ann.scale.length !== x0.length || ann.scale.some((v) => !(v > 0 && Number.isFinite(v))))) {
      throw new Error(`preconditionedAscent: anneal.scale must hold ${x0.length} positive numbers (one per tensor), got ${JSON.stringify(ann.scale)}`);
    }
    lastIteration = Math.min(options.maxIterations ?? 40, (options.maxGradientEvaluations ?? Infinity) - 1);
    if (!Number.isFinite(lastIteration)) throw new Error('preconditionedAscent: anneal needs a finite maxGradientEvaluations or maxIterations (its schedule ends there)');
  }
  const annFloor = ann?.floor ?? 0.02;
  const annAfter = ann?.after ?? 1;
  const annStart = ann?.start;
  const annMinRemaining = ann?.minRemaining ?? 0;
  if (ann && !(Number.isInteger(annMinRemaining) && annMinRemaining >= 0)) {
    throw new Error(`preconditionedAscent: anneal.minRemaining must be an integer >= 0, got ${String(ann.minRemaining)}`);
  }
  if (annStart !== undefined && !(annStart > 0 && Number.isFinite(annStart))) throw new Error(`preconditionedAscent: anneal.start must be a positive number, got ${String(annStart)}`);
  if (ann && !(Number.isInteger(annAfter) && annAfter >= 1)) throw new Error(`preconditionedAscent: anneal.after must be an integer >= 1, got ${String(ann.after)}`);
  const annScale = ann?.scale;
  const annSign = ann?.sign;
  if (annSign !== undefined && (annSign.length !== x0.length || annSign.some((v) => typeof v !== 'boolean'))) {
    throw new Error(`preconditionedAscent: anneal.sign must hold ${x0.length} booleans (one per tensor), got ${JSON.stringify(annSign)}`);
  }
  let iteration = 0;
  if (hostDecisions && !options.conjugate) {
    return runSolver(f, x0, options, hostSpec());
  }

  // annealing state (with `anneal` only): per example the phase flag, the iteration and step at the
  // switch, and the current iterate xc/Jc (x/J are then the best point met)
  type Anneal = {on: tf.Tensor1D; rej: tf.Tensor1D; s0: tf.Tensor1D; a0: tf.Tensor1D; xc: tf.Tensor[]; Jc: tf.Tensor1D};
  type State = BaseState & {D: tf.Tensor[]; p: tf.Tensor[]; gD: tf.Tensor1D; alpha: tf.Tensor1D; an?: Anneal};
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
      const an = ann
        ? {on: tf.cast(tf.zeros([B]), 'bool') as tf.Tensor1D, rej: tf.zeros([B]) as tf.Tensor1D, s0: tf.zeros([B]) as tf.Tensor1D, a0: tf.zeros([B]) as tf.Tensor1D, xc: s.x.map((t) => tf.add(t, 0)), Jc: tf.add(s.J, 0) as tf.Tensor1D}
        : undefined;
      return {...s, g: [], D, p: options.conjugate ? D.map((d) => tf.clone(d)) : [], gD, alpha, an};
    },
    step: (old, ctx) => {
      iteration++;
      if (old.an) return annealedStep(old, old.an, ctx);
      const step = select(ctx.active, old.alpha, tf.zerosLike(old.alpha)) as tf.Tensor1D;
      const xn = shiftFirst(axpy(old.x, step, options.conjugate ? old.p : old.D), old.x, step);
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

  /**
   * One iteration with `anneal`: monotone examples follow the rule of `step`; an example whose
   * step α ≤ maxStep is rejected switches to the annealed phase, moving to that candidate anyway;
   * annealing examples always move (when finite) with α = a0·(floor + (1 − floor)·½(1 + cos πτ)),
   * τ = (k − s0)/(K − s0) from their switch to the last iteration K. x/J hold the best point met.
   */
  function annealedStep(old: State, an: Anneal, ctx: StepContext): StepResult<State> {
    const on = an.on;
    const tau = tf.clipByValue(tf.div(tf.sub(iteration - 1, an.s0), tf.maximum(tf.sub(lastIteration - 1, an.s0), 1)), 0, 1);
    const cosine = tf.add(annFloor, tf.mul((1 - annFloor) / 2, tf.add(1, tf.cos(tf.mul(Math.PI, tau)))));
    const alpha = select(ctx.active, select(on, tf.mul(an.a0, cosine), old.alpha), tf.zerosLike(old.alpha)) as tf.Tensor1D;
    const p = (options.conjugate ? old.p : old.D).map((d, i) => {
      if (!annSign?.[i]) return d;
      const mag = tf.mean(tf.abs(tf.reshape(d, [B, -1])), 1);
      return whereRows(on, tf.mul(backendSign(d), expandAs(mag, d)), d);
    });
    const xn = shiftFirst(
      an.xc.map((x, i) => {
        const a = annScale && annScale[i] !== 1 ? (select(on, tf.mul(alpha, annScale[i]), alpha) as tf.Tensor1D) : alpha;
        return tf.add(x, tf.mul(expandAs(a, p[i]), p[i]));
      }),
      an.xc,
      alpha,
    );
    const e = ctx.evaluate(xn);
    // against the current iterate (monotone examples: current = best)
    const a = acceptance({...old, J: an.Jc}, {J: e.value, g: e.grads, finite: e.finite}, ctx.active, B, t);
    const D = dirOf(xn, e.grads);
    const gD = batchDot(e.grads, D, B);
    const big = tf.greater(old.alpha, maxStep);
    // a rejected step α ≤ maxStep of a monotone example: switch, and move there
    const small = tf.logicalAnd(tf.logicalAnd(a.reject, tf.logicalNot(on)), tf.logicalNot(big));
    const rej = tf.add(an.rej, tf.cast(small, 'float32')) as tf.Tensor1D;
    const switchNow = (lastIteration - iteration >= annMinRemaining ? tf.logicalAnd(small, tf.greaterEqual(rej, annAfter)) : tf.zerosLike(small)) as tf.Tensor1D;
    const onNext = tf.logicalOr(on, switchNow) as tf.Tensor1D;
    const ok = tf.logicalAnd(ctx.active, e.finite);
    const move = tf.logicalAnd(ok, tf.logicalOr(a.accept, onNext)) as tf.Tensor1D;
    const improve = tf.logicalAnd(ok, tf.greaterEqual(e.value, old.J)) as tf.Tensor1D;
    let p2: tf.Tensor[] = [];
    let restarted = tf.onesLike(move) as tf.Tensor1D;
    if (options.conjugate) {
      // PR+ in the monotone phase only (as in `step`); plain D once annealing
      const beta = tf.relu(tf.div(tf.sub(gD, batchDot(e.grads, old.D, B)), tf.maximum(old.gD, TINY)));
      const pc = axpy(D, beta as tf.Tensor1D, old.p);
      const gp = batchDot(e.grads, pc, B);
      const useConj = tf.logicalAnd(tf.logicalNot(onNext), tf.logicalAnd(tf.greater(beta, 0), tf.logicalAnd(tf.isFinite(gp), tf.greater(gp, 0)))) as tf.Tensor1D;
      p2 = selectRows(move, selectRows(useConj, pc, D), old.D);
      restarted = tf.logicalNot(useConj) as tf.Tensor1D;
    }
    const selMove = rowSelector(move, xn);
    const selBest = rowSelector(improve, xn);
    const alphaAcc = tf.minimum(tf.maximum(maxStep, old.alpha), tf.mul(grow, old.alpha));
    const alphaRej = select(big, tf.onesLike(old.alpha), tf.mul(shrink, old.alpha));
    const state: State = {
      x: selBest(xn, old.x),
      J: select(improve, e.value, old.J) as tf.Tensor1D,
      g: [],
      gg: select(move, a.gg, old.gg) as tf.Tensor1D,
      D: selMove(D, old.D),
      p: p2,
      gD: select(move, gD, old.gD) as tf.Tensor1D,
      alpha: select(a.accept, alphaAcc, select(a.reject, alphaRej, old.alpha)) as tf.Tensor1D,
      an: {
        on: onNext,
        rej,
        s0: select(switchNow, tf.fill([B], iteration - 1), an.s0) as tf.Tensor1D,
        a0: select(switchNow, annStart != null ? tf.fill([B], annStart) : old.alpha, an.a0) as tf.Tensor1D,
        xc: selMove(xn, an.xc),
        Jc: select(move, e.value, an.Jc) as tf.Tensor1D,
      },
    };
    // the value test means nothing for a non-monotone move: annealing examples stop on the gradient test only
    // (bool operands: logical ops, not Select — the wasm Select kernel writes 4-byte elements)
    const converged = tf.logicalOr(
      tf.logicalAnd(on, tf.logicalAnd(improve, gradientTest(a.gg, e.value, t.gtol))),
      tf.logicalAnd(tf.logicalNot(on), a.converged),
    ) as tf.Tensor1D;
    return {state, accept: move, nonFinite: a.nonFinite, converged, restarted};
  }
  /**
   * The iteration without PR+, with every per-example decision made on the host: the driver's
   * `evaluateHost` reads back J_b, the finiteness flags and ‖g_b‖² of the candidate (the
   * iteration's one read-back) and the rules of `step`/`annealedStep` above run as plain loops over
   * B numbers, in float32 arithmetic (`Math.fround` after every operation the tensor ops round)
   * so that the decisions and step sizes are the same. The device then runs only the row-wise
   * work: the step x + α·p (one fused kernel per tensor on wasm/cpu), the evaluation, the direction
   * and the row selects by host masks (skipped when a mask is all ones or all zeros). Measured on
   * the wasm MLP of `bench/deep_cost.ts`: it replaces about 100 small kernels per iteration.
   */
  function hostSpec() {
    type HState = BaseState & {D: tf.Tensor[]; xc: tf.Tensor[]};
    const fr = Math.fround;
    const maxStepF = fr(maxStep);
    const growF = fr(grow);
    const shrinkF = fr(shrink);
    const tolF = fr(t.tol);
    const gtolF = fr(t.gtol);
    const floorF = fr(annFloor);
    const halfF = fr((1 - annFloor) / 2);
    const piF = fr(Math.PI);
    const scaleF = x0.map((_, i) => fr(annScale?.[i] ?? 1));
    // the last iteration the iteration limit and the budget allow (its direction is never used)
    const finalIteration = Math.min(options.maxIterations ?? 40, (options.maxGradientEvaluations ?? Infinity) - 1);
    const startF = annStart != null ? fr(annStart) : undefined;
    // per example: best J, current J (the annealed iterate), step, phase flag, rejection count, switch iteration and step
    const Jbest = new Float32Array(B);
    const Jc = new Float32Array(B);
    const gg = new Float32Array(B);
    const alpha = new Float32Array(B);
    const on = new Uint8Array(B);
    const rej = new Float32Array(B);
    const s0 = new Float32Array(B);
    const a0 = new Float32Array(B);
    const gradOk = (ggb: number, J: number) => t.gtol >= 0 && fr(Math.sqrt(ggb)) <= fr(gtolF * Math.max(1, Math.abs(J)));
    const startStep = (J: tf.Tensor1D) => tf.cast(typeof init === 'function' ? init(J) : Array.isArray(init) ? tf.tensor1d(init) : tf.fill([B], init), 'float32');
    return {
      maxIterations: options.maxIterations ?? 40,
      restartEvery: Infinity,
      maxConsecutiveRejections: options.maxConsecutiveRejections ?? 8,
      evalsForIteration: (remaining: number) => (remaining >= 1 ? 1 : 0),
      init: (s: BaseState): HState => {
        const D = dirOf(s.x, s.g);
        s.g.forEach((g) => g.dispose());
        // xc is the same tensors as x until the first annealed move
        return {...s, g: [], D, xc: s.x};
      },
      startValues: (s: HState) => tf.concat([startStep(s.J), s.gg]),
      hostStartValues: (J: tf.Tensor1D) => startStep(J),
      onStart: (J: Float32Array, v: Float32Array | undefined) => {
        Jbest.set(J);
        Jc.set(J);
        alpha.set((v as Float32Array).subarray(0, B));
        gg.set((v as Float32Array).subarray(B, 2 * B));
      },
      step: (old: HState, ctx: StepContext): HostStepResult<HState> => {
        iteration++;
        const act = ctx.activeHost;
        // 1. the step of every example (0 when frozen) and, per tensor, its scaled/signed variant;
        // annealing examples: a0·(floor + (1 − floor)·½(1 + cos πτ)) with the cosine on the device
        // (the wasm Cos kernel is not correctly rounded: the host's Math.cos would change the steps)
        const a = new Float32Array(B);
        const onAct = new Uint8Array(B);
        const piTau = new Float32Array(B);
        let anyOn = false;
        for (let b = 0; b < B; b++) {
          if (act[b] !== 1) continue;
          if (on[b] === 1) {
            anyOn = true;
            onAct[b] = 1;
            const tau = Math.min(1, Math.max(0, fr(fr(fr(iteration - 1) - s0[b]) / Math.max(fr(fr(lastIteration - 1) - s0[b]), 1))));
            piTau[b] = fr(piF * tau);
          } else {
            a[b] = alpha[b];
          }
        }
        let aT = tf.tensor1d(a);
        // masks that are all ones select nothing: then no select kernel (null)
        const allOn = on.every((v) => v === 1);
        const onMask = anyOn && !allOn ? tf.tensor1d(on.slice(), 'bool') : null;
        if (anyOn) {
          const cosine = tf.add(floorF, tf.mul(halfF, tf.add(1, tf.cos(tf.tensor1d(piTau)))));
          const aOn = tf.mul(tf.tensor1d(a0.slice()), cosine) as tf.Tensor1D;
          aT = onAct.every((v) => v === 1) ? aOn : (select(tf.tensor1d(onAct, 'bool'), aOn, aT) as tf.Tensor1D);
        }
        // the first candidate from the origin: (x0 + α·D0) + (α − 1)·x0 (0 for frozen examples)
        const shift = iteration === 1 && fromOrigin === 'origin' && a.some((v) => v !== 0 && v !== 1) ? tf.tensor1d(a.map((v) => (v > 0 ? fr(v - 1) : 0))) : null;
        const xn = old.xc.map((x, i) => {
          if (shift) return stepRows(stepRows(x, aT, old.D[i]), shift, x);
          let ai = aT;
          if (anyOn && scaleF[i] !== 1) ai = (onMask ? select(onMask, tf.mul(aT, scaleF[i]), aT) : tf.mul(aT, scaleF[i])) as tf.Tensor1D;
          const d = old.D[i];
          const signRows = anyOn && annSign?.[i] ? {mask: onMask, mag: tf.mean(tf.abs(tf.reshape(d, [B, -1])), 1) as tf.Tensor1D} : undefined;
          return stepRows(x, ai, d, signRows);
        });
        // 2. the evaluation (the read-back) and the next direction (not after the last iteration
        // the budget allows: it would never be used)
        const e = ctx.evaluateHost(xn);
        const D = iteration < finalIteration ? dirOf(xn, e.grads) : old.D;
        // 3. per-example decisions (the rules of `annealedStep`, or of `step` when no example anneals)
        const move = new Uint8Array(B);
        const improve = new Uint8Array(B);
        const nonFinite = new Uint8Array(B);
        const converged = new Uint8Array(B);
        for (let b = 0; b < B; b++) {
          if (act[b] !== 1) continue;
          if (e.finiteHost[b] !== 1) {
            nonFinite[b] = 1;
            continue;
          }
          const J = e.J[b];
          const accept = J >= Jc[b];
          const big = alpha[b] > maxStepF;
          const wasOn = on[b] === 1;
          let switchNow = false;
          if (!accept && !wasOn && !big && ann) {
            rej[b] += 1;
            switchNow = rej[b] >= annAfter && finalIteration - iteration >= annMinRemaining;
          }
          const moves = accept || wasOn || switchNow;
          const better = J >= Jbest[b];
          if (wasOn) {
            converged[b] = better && gradOk(e.gg[b], J) ? 1 : 0;
          } else if (accept) {
            const dJ = fr(J - Jc[b]);
            const valueConv = t.tol >= 0 && dJ >= 0 && dJ <= fr(tolF * Math.max(1, Math.abs(Jc[b])));
            converged[b] = valueConv || gradOk(e.gg[b], J) ? 1 : 0;
          }
          if (switchNow) {
            on[b] = 1;
            s0[b] = iteration - 1;
            a0[b] = startF ?? alpha[b];
          }
          alpha[b] = accept ? fr(Math.min(Math.max(maxStepF, alpha[b]), fr(growF * alpha[b]))) : big ? 1 : fr(shrinkF * alpha[b]);
          if (moves) {
            move[b] = 1;
            Jc[b] = J;
            gg[b] = e.gg[b];
          }
          if (better) {
            improve[b] = 1;
            Jbest[b] = J;
          }
        }
        // 4. row selects by the host masks (x and xc are the same tensors while no example has
        // annealed apart from its best point: then one select serves both)
        const x = hostSelect(improve, xn, old.x);
        const sameMasks = move.every((v, b) => v === improve[b]);
        const state: HState = {
          x,
          J: tf.tensor1d(Jbest.slice()),
          g: [],
          gg: tf.tensor1d(gg.slice()),
          D: hostSelect(move, D, old.D),
          xc: !ann || (old.xc === old.x && sameMasks) ? x : hostSelect(move, xn, old.xc),
        };
        return {state, host: {J: Jbest.slice(), accept: move, nonFinite, converged}};
      },
    };
  }
}

