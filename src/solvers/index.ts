/**
 * Solvers for the inner maximisation of eq. 11: pure functions over a list of tensors.
 *
 * - {@link conjugateGradient}: batched nonlinear CG (Polak–Ribière+) with a secant line search,
 *   2 gradient evaluations per iteration, monotone per example.
 * - {@link gradientAscent}: fixed-step gradient ascent, 1 gradient evaluation per iteration (baseline).
 *
 * @packageDocumentation
 */
export {conjugateGradient} from './cg.js';
export type {CgOptions} from './cg.js';
export {gradientAscent} from './gradient_ascent.js';
export type {GradientAscentOptions} from './gradient_ascent.js';
export type {BatchObjective, IterationInfo, SolverOptions, SolverResult} from './types.js';
