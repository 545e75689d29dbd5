/**
 * Shared types of the inner-maximisation solvers (`conjugateGradient`, `gradientAscent`).
 *
 * The solvers are pure numerical routines over a list of tensors: they know nothing about
 * networks. The attack engine hands them `f(xs)`, the per-example objective J_b of eq. 11
 * evaluated by one forward pass, and the starting neurons `x0`.
 *
 * @packageDocumentation
 */
import * as tf from '@tensorflow/tfjs-core';

/**
 * Per-example objective to be MAXIMISED.
 *
 * `xs[i]` has shape `[B, ...]` (the same `B` for every tensor of the list); the function returns
 * `J` of shape `[B]`. Examples must be independent: `J_b` may depend only on row `b` of each
 * `xs[i]` (so the gradient of `sum_b J_b` w.r.t. row `b` is the gradient of `J_b` alone).
 * It must be differentiable with `tf.grads` (it is called inside a gradient tape), must not
 * dispose its inputs, and should not keep the tensors it creates (the solver tidies them).
 * Tensors of the list that `J` does not depend on get a zero gradient.
 */
export type BatchObjective = ((xs: tf.Tensor[]) => tf.Tensor1D) & {
  /** Optional: the same J split into a taped part and terms with closed-form gradients (see {@link SplitObjective}). */
  split?: SplitObjective;
};

/**
 * J(xs) = terms(xs, c(xs)): a part `c` whose gradient is taped, and terms added to it whose
 * gradients are known in closed form. The solvers' gradient evaluations then tape only `c` and
 * add the terms' gradients to its gradient; the function itself must return the same J (it is
 * what forward-only evaluations call). For the deep attack: c = the loss through the network,
 * the terms = the layers' penalties ρℓ(dℓ) (whose gradients do not depend on the network).
 */
export interface SplitObjective {
  /** c(xs) per example, [B] (called under a gradient tape). */
  taped(xs: tf.Tensor[]): tf.Tensor1D;
  /**
   * With the tape off: J from c (same value as the whole objective, bit for bit: add the terms to
   * `c` in the objective's own order) and, per tensor of the list, the terms' gradient (null: none).
   */
  untaped(xs: tf.Tensor[], c: tf.Tensor1D): {value: tf.Tensor1D; grads: (tf.Tensor | null)[]};
  /**
   * Optional, with the tape off: J and the FULL gradient (the taped gradient `taped[i]` of c —
   * null when c does not depend on xs[i] — plus the terms' gradient) at once, the same values bit
   * for bit as `untaped` followed by the additions of `evaluate` (e.g. one fused kernel); null when
   * it does not apply to these tensors (then `untaped` is used). With `wantStats`, it may also
   * return `stats`: float32 [3B] = [J, 1/0 every entry of the gradients, of J and of xs finite,
   * Σᵢ ‖gradᵢ row‖²] with the values of `[J, rowStatsKernel(grads, [J, ...xs])]` (the solvers'
   * read-back, then without a pass of its own).
   */
  fused?(xs: tf.Tensor[], c: tf.Tensor1D, taped: (tf.Tensor | null)[], wantStats?: boolean): {value: tf.Tensor1D; grads: tf.Tensor[]; stats?: tf.Tensor1D} | null;
}

/** Information passed to {@link SolverOptions.onIteration} after every iteration. */
export interface IterationInfo {
  /** 1-based number of the iteration just finished. */
  iteration: number;
  /** mean over ALL examples (frozen ones included) of J_b after this iteration. */
  meanObjective: number;
  /** batched gradient evaluations spent so far (line search included). */
  gradientEvaluations: number;
}

/**
 * Options common to every solver.
 *
 * Stopping rules (per example; a stopped example is "frozen": it no longer moves, its step is 0):
 * - value test: an ACCEPTED step with `0 <= J_new - J_old <= tolerance * max(1, |J_old|)`;
 * - gradient test: `||g_b|| <= gradientTolerance * max(1, |J_b|)` at the current point, where
 *   `||g_b||` is the Euclidean norm over all tensors of the list (checked at the start too);
 * - a non-finite value (NaN/±Inf in J_b, in its gradient, or in the candidate point) freezes
 *   example b at its last finite point and counts it in {@link SolverResult.nonFinite}.
 * The whole solve stops when every example is frozen, after `maxIterations`, or when the next
 * iteration would exceed `maxGradientEvaluations`.
 */
export interface SolverOptions {
  /** Maximum number of iterations. Default 20 for CG, 50 for gradient ascent. */
  maxIterations?: number;
  /** Relative value tolerance of the value test above. Default 1e-6. `0` still stops on an exactly flat accepted step. Negative disables the test. */
  tolerance?: number;
  /** Relative gradient-norm tolerance of the gradient test above. Default 1e-6. Negative disables the test. */
  gradientTolerance?: number;
  /**
   * Hard budget of batched gradient evaluations, line-search evaluations and the initial
   * evaluation included. The solver never exceeds it; with a budget < 1 only a forward pass
   * is made (the start point is returned). Default: unlimited.
   */
  maxGradientEvaluations?: number;
  /** Called after every iteration (the host values are already read back; no extra sync). */
  onIteration?: (info: IterationInfo) => void;
}

/** What every solver returns. All tensors are new and owned by the caller. */
export interface SolverResult {
  /** the maximiser found, one tensor per input tensor, same shapes (float32). Always finite where x0 was. */
  xs: tf.Tensor[];
  /** J_b at `xs`, shape [B]. */
  objective: tf.Tensor1D;
  /** iterations performed. */
  iterations: number;
  /** batched gradient computations (each = 1 forward + 1 backward of the whole batch), line search and initial evaluation INCLUDED. */
  gradientEvaluations: number;
  /** batched forward-only evaluations (only used when the gradient budget is < 1). */
  functionEvaluations: number;
  /** mean_b J_b after each iteration; `history[0]` is at the start point. */
  history: number[];
  /** per iteration, the B per-example values J_b; `exampleHistory[0]` is at the start point. */
  exampleHistory: number[][];
  /** number of examples frozen because a non-finite value was met. */
  nonFinite: number;
  /** number of examples that met the value or the gradient tolerance. */
  converged: number;
  /**
   * number of examples frozen because they could not make progress (CG: too many consecutive
   * rejected steps, i.e. J cannot be increased any more at float32 resolution; gradient ascent
   * in monotone mode: same). 0 for plain gradient ascent.
   */
  stalled: number;
}
