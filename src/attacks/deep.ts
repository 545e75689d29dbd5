/**
 * The deep adversarial attack (seed §3, Algorithm 1 lines 5–8): the disturbances d* maximising
 * eq. 9, J(d) = c(y, h(w, x, d)) + Σℓ ρℓ(dℓ), for a batch (each example independently).
 *
 * Two formulations (`space`):
 * - `'disturbance'` (default): maximise eq. 9 over the dℓ directly with {@link preconditionedAscent}.
 *   One backward pass carries the loss to every layer, and each layer's search direction is the
 *   maximiser of the linearised loss plus its exact penalty (`linearisedMaximiser`): for a
 *   quadratic penalty the preconditioned fixed point d = ∇_d c / (2λ), for an L∞ ball the corner
 *   ε·sign(g) plus the soft overshoot. Monotone per example until an example's steps keep being
 *   rejected (a kink: ReLU, max-pooling), then non-monotone with a cosine-annealed step, keeping the
 *   best point (`anneal`). Measured with `npm run bench:solver` against an independent multi-start
 *   Adam reference: see the README's solver table (neuron-space CG closes far less at 20 evaluations).
 * - `'neuron'`: the seed's eq. 11, batched nonlinear CG (or gradient ascent) over the neurons
 *   nℓ = fℓ(·) + dℓ from a random start and one linearised step; d* by eq. 6.
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import {Disturbance} from '../layers/disturbance.js';
import {disturbanceSites} from '../model/instrument.js';
import {assertCompatibleXY, attackLoss, batchSizeOf, LossFn, Tensors} from '../objective/loss.js';
import {
  disposeAddResult,
  disturbanceObjective,
  disturbedObjective,
  forwardAdd,
  neuronInputs,
  neuronObjective,
  withModes,
} from '../objective/neuron_space.js';
import {
  linearisedDirection,
  PenaltyConfig,
  type PenaltyExcess,
  penaltyValue,
  projectDisturbance,
  sumPerExample,
  validatePenalty,
  violationPerExample,
} from '../objective/penalties.js';
import {expandAs, select} from '../solvers/batched.js';
import {conjugateGradient} from '../solvers/cg.js';
import {gradientAscent} from '../solvers/gradient_ascent.js';
import {preconditionedAscent} from '../solvers/preconditioned.js';
import type {IterationInfo, SolverResult} from '../solvers/types.js';
import {checkKnownKeys, describeValue} from '../util/options.js';
import {randomUniform} from '../util/random.js';

/** Where the deep attack maximises: over the disturbances (eq. 9) or over the neurons (eq. 11). */
export type DeepAttackSpace = 'disturbance' | 'neuron';
/** The inner solver of the deep attack. */
export type DeepAttackSolver = 'preconditioned' | 'cg' | 'gradient-ascent';

/** Options of {@link deepAttack}. */
export interface DeepAttackOptions {
  /**
   * `'disturbance'` (default): eq. 9 over the dℓ; `'neuron'`: the seed's eq. 11 over the neurons
   * (its CG needed 2–4× more gradient evaluations for the same objective; kept for comparison).
   */
  space?: DeepAttackSpace;
  /**
   * `'preconditioned'` (default in disturbance space; disturbance space only): monotone ascent
   * along each layer's linearised maximiser, 1 gradient evaluation per iteration.
   * `'cg'` (default in neuron space): batched nonlinear CG (PR+, secant line search, 2 per iteration),
   * unpreconditioned. `'gradient-ascent'`: fixed-step gradient ascent (baseline; see `stepSize`).
   */
  solver?: DeepAttackSolver;
  /** `'preconditioned'` only: Polak–Ribière+ on the preconditioned directions. Default false (measured no better). */
  conjugate?: boolean;
  /**
   * `'preconditioned'` only: the first step along the linearised maximiser. `'saturated'`:
   * α = 1/(1 − e^(−c)) per example (capped at 1000), the step that a cross-entropy in its
   * saturated (linear-in-logits) regime calls for — it lets confidently classified examples leave
   * the local maximum at d ≈ 0 (measured: +17 % of the gap on an MNIST MLP with quadratic penalties);
   * rejected, it costs that example one evaluation and falls back to α = 1. `'unit'`: α = 1.
   * From a random start d0, c is the loss at d0 (without the penalties) and the step extrapolates
   * the linearised maximiser T(d0) from the clean point, α·T(d0), instead of amplifying d0.
   * Default: `'unit'` when an attacked layer has an L∞ ball (its maximiser already lies on the
   * ball whatever the gradient's size, so the example leaves d ≈ 0 anyway, and amplifying the other
   * layers' step gets it rejected: measured on a small CNN, 90 of 96 examples), else `'saturated'`.
   */
  firstStep?: 'saturated' | 'unit';
  /**
   * `'preconditioned'` only: once an example has had `after` steps α ≤ 1 rejected (it sits at a kink
   * — ReLU, max-pooling — or on a ridge where the monotone rule keeps shrinking its step), continue
   * it non-monotonically to the end of the budget with a cosine-annealed step, keeping the best
   * point met (see `preconditionedAscent`'s `anneal`). Default on (`{}`); `false`: the monotone
   * rule throughout. Needs a finite budget (`maxGradientEvaluations` or `maxIterations`).
   */
  anneal?: boolean | DeepAnnealOptions;
  /** Maximum solver iterations. Default: 10 for neuron-space CG, 20 for gradient ascent, none (the budget decides) for `'preconditioned'`. */
  maxIterations?: number;
  /**
   * Hard budget of batched gradient evaluations (start, line searches and the initial linearised
   * step included). Default: 20 for `'preconditioned'` when `maxIterations` is not given either;
   * otherwise none.
   */
  maxGradientEvaluations?: number;
  /** Relative tolerance of the solver's stopping test (see `SolverOptions`). Default 1e-6. */
  tolerance?: number;
  /**
   * Initial disturbances: `'random'` (uniform, see `initScale`), `'zero'`, or `'gradient'`: from
   * the random start, one gradient of eq. 9 w.r.t. every dℓ (counted as a gradient evaluation) and
   * each layer jumps to the maximiser of its linearised objective, then is projected onto its
   * ball/box. Default `'gradient'` in neuron space; `'random'` in disturbance space, where the
   * solver's first step IS that linearised step (there `'gradient'` means `'random'`). The random
   * start (as PGD's) makes the first gradient see the network a little away from the clean point:
   * measured with `npm run bench:solver` (batch 32 and `--batch 96`) against `'zero'` (the default
   * of 0.1.0), +0.2 to +0.5 points of the gap at 20 evaluations on a small CNN and +0.6 to +1.4 on an
   * MLP with an L∞ input, up to +1.4 at 10; 0 to −0.6 on an all-quadratic MLP; see the README.
   * Pass `seed` for a reproducible attack.
   */
  init?: 'random' | 'zero' | 'gradient';
  /**
   * Half-width of the uniform random initialisation. Default per layer: ε/2 for
   * `linf`, ε/(2√units) for `l2`, ε/(2·units) for `l1`, 0.01 for `quadratic`.
   */
  initScale?: number;
  /** Seed of the random initialisation (layer ℓ uses seed + ℓ). */
  seed?: number;
  /**
   * After the solve, project each dℓ exactly onto its ball/box (the budget then
   * holds exactly); the reported objective is eq. 9 after projection.
   */
  project?: boolean;
  /** Step size of gradient ascent (ignored by the other solvers). Default 0.01. */
  stepSize?: number;
  /**
   * Loss to attack instead of the model's compiled loss (one per output, or a list). Default: the
   * compiled loss through `attackLoss` (the root of a meanSquaredError/squaredHinge output, so that
   * the inner maximisation stays bounded; see `attackLoss`).
   */
  loss?: string | LossFn | (string | LossFn)[];
  /**
   * Penalties to use instead of the layers' own: an array with one entry per
   * Disturbance layer (model order) or a function of the layer and its index.
   * `null` switches that layer's disturbance off (dℓ = 0, not attacked);
   * `undefined` (from the function) keeps the layer's own penalty.
   */
  penalties?: (PenaltyConfig | null)[] | ((layer: Disturbance, index: number) => PenaltyConfig | null | undefined);
  /**
   * Called after every solver iteration with the iteration number (1-based), the batched gradient
   * evaluations spent so far (the linearised initial step included) and the mean over the batch of
   * the solver's objective J_b (eq. 9 in disturbance space — with the annealed default, the best J_b
   * met so far; eq. 11 in neuron space). For convergence curves from one run, progress display or
   * early diagnostics; it must not dispose or modify tensors of the attack.
   */
  onIteration?: (info: IterationInfo) => void;
}

/** The annealed phase of the deep attack's default solver (see {@link DeepAttackOptions.anneal}). */
export interface DeepAnnealOptions {
  /**
   * Rejected steps α ≤ 1 (over the run) before an example switches. Default 3 when an attacked
   * layer has an L∞ ball, 2 otherwise. Measured with `npm run bench:solver` (batch 96, two model
   * initialisations): on the small CNN with all-quadratic penalties 2 instead of 3 closes 97.5 / 99.0 %
   * (97.0 / 98.7 % on the second model) of the gap to the independent reference at 20 / 40 evaluations
   * instead of 96.7 / 98.0 % (96.0 / 97.5 %); with an L∞ input it loses 0.3–0.5 points at 20; on the
   * MLP either is within ±0.3. L1/L2 balls are not measured and get 2.
   */
  after?: number;
  /** First annealed step. Default: the rejected step α that switched the example. */
  start?: number;
  /**
   * An example switches only while at least this many iterations of the budget remain (later it
   * stays monotone). Default 5.
   */
  minRemaining?: number;
  /** Last annealed step as a fraction of the first. Default 0.02. */
  floor?: number;
  /**
   * Factor on the annealed step of layers with a quadratic penalty (no box): over-relaxation, since
   * there the loss's own positive curvature offsets the penalty's and the fixed point d = ∇c/(2λ)
   * lies beyond the unit step. Default 1.5; 1 = none.
   */
  quadraticScale?: number;
  /**
   * Annealed steps of layers with an L∞ ball along sign(p)·mean|p| (PGD-like) instead of p.
   * Default true (measured, `npm run bench:solver`: MNIST CNN, L∞ input + hidden quadratic, 95.3 → 96.8 %
   * of the gap to the independent reference at 20 evaluations and 97.5 → 99.0 % at 40).
   */
  linfSign?: boolean;
}

/** Every option name of {@link deepAttack}. */
export const DEEP_ATTACK_OPTION_KEYS: readonly string[] = Object.freeze([
  'space',
  'solver',
  'conjugate',
  'firstStep',
  'anneal',
  'maxIterations',
  'maxGradientEvaluations',
  'tolerance',
  'init',
  'initScale',
  'seed',
  'project',
  'stepSize',
  'loss',
  'penalties',
  'onIteration',
]);

/**
 * The deep-attack options contained in a larger options object (e.g. training options, which add
 * `method`, `cleanWeight`, schedules, …): a new object with only the keys of
 * {@link DEEP_ATTACK_OPTION_KEYS} that are present, minus `omit`.
 */
export function pickDeepAttackOptions(options: object | null | undefined, omit: readonly string[] = []): DeepAttackOptions {
  const out: Record<string, unknown> = {};
  if (options == null) return out as DeepAttackOptions;
  for (const k of DEEP_ATTACK_OPTION_KEYS) {
    if (!omit.includes(k) && Object.prototype.hasOwnProperty.call(options, k)) out[k] = (options as Record<string, unknown>)[k];
  }
  return out as DeepAttackOptions;
}

/** {@link DeepAttackOptions} after validation, with every default filled in. */
export interface ResolvedDeepAttackOptions {
  space: DeepAttackSpace;
  solver: DeepAttackSolver;
  conjugate: boolean;
  /** undefined: the threat-dependent default (resolved where the penalties are known, `threatDefaults`). */
  firstStep: 'saturated' | 'unit' | undefined;
  /** null: off. */
  anneal: (Required<Omit<DeepAnnealOptions, 'start' | 'after'>> & {start: number | undefined; after: number | undefined}) | null;
  /** iterations (Infinity: the budget decides). */
  maxIterations: number;
  /** gradient-evaluation budget (Infinity: none). */
  maxGradientEvaluations: number;
  tolerance: number | undefined;
  onIteration: ((info: IterationInfo) => void) | undefined;
  init: 'random' | 'zero' | 'gradient';
  initScale: number | undefined;
  seed: number | undefined;
  project: boolean;
  stepSize: number;
  loss: DeepAttackOptions['loss'];
  penalties: DeepAttackOptions['penalties'];
}

/**
 * Validates deep-attack options ONCE for every caller (`deepAttack`, adversarial training, the
 * CLI) and fills in the defaults. Unknown keys are refused with the closest valid name; pass
 * `extraKeys` for the keys a caller adds on top (e.g. training's `method`, `cleanWeight`).
 *
 * @param where the public function name for error messages, e.g. `'adversarialStep'`.
 * @throws naming the option, the value and what is allowed.
 */
export function resolveDeepAttackOptions(where: string, options: DeepAttackOptions = {}, extraKeys: readonly string[] = []): ResolvedDeepAttackOptions {
  checkKnownKeys(options, [...DEEP_ATTACK_OPTION_KEYS, ...extraKeys], where);
  const o = (options ?? {}) as DeepAttackOptions;
  const bad = (name: string, what: string, v: unknown): never => {
    throw new Error(`${where}: option '${name}' must be ${what}, got ${describeValue(v)}.`);
  };
  const num = (name: keyof DeepAttackOptions, test: (v: number) => boolean, what: string): number | undefined => {
    const v = o[name];
    if (v === undefined) return undefined;
    if (typeof v !== 'number' || !Number.isFinite(v) || !test(v)) bad(name, what, v);
    return v as number;
  };
  const oneOf = <T extends string, F extends T | undefined>(name: keyof DeepAttackOptions, allowed: readonly T[], fallback: F): T | F => {
    const v = o[name];
    if (v === undefined) return fallback;
    if (!allowed.includes(v as T)) bad(name, `one of ${allowed.map((a) => `'${a}'`).join(', ')}`, v);
    return v as T;
  };
  const bool = (name: keyof DeepAttackOptions, fallback = false): boolean => {
    const v = o[name];
    if (v !== undefined && typeof v !== 'boolean') bad(name, 'true or false', v);
    return v === undefined ? fallback : v === true;
  };
  const space = oneOf('space', ['disturbance', 'neuron'] as const, 'disturbance');
  const solver = oneOf('solver', ['preconditioned', 'cg', 'gradient-ascent'] as const, space === 'disturbance' ? 'preconditioned' : 'cg');
  if (space === 'neuron' && solver === 'preconditioned') {
    throw new Error(`${where}: solver 'preconditioned' works in disturbance space (eq. 9) only; use space 'disturbance' or solver 'cg'/'gradient-ascent'.`);
  }
  const maxIterations = num('maxIterations', (v) => Number.isInteger(v) && v >= 0, 'an integer >= 0');
  const given = num('maxGradientEvaluations', (v) => v >= 0, 'a number >= 0');
  const tolerance = num('tolerance', () => true, 'a finite number');
  const initScale = num('initScale', (v) => v >= 0, 'a number >= 0');
  const stepSize = num('stepSize', (v) => v > 0, 'a number > 0');
  const seed = num('seed', () => true, 'a finite number');
  const init = oneOf('init', ['random', 'zero', 'gradient'] as const, space === 'disturbance' ? 'random' : 'gradient');
  const firstStep = oneOf('firstStep', ['saturated', 'unit'] as const, undefined);
  const conjugate = bool('conjugate');
  const anneal = resolveAnneal(o.anneal, bad);
  const project = bool('project');
  const lossOk = (l: unknown) => typeof l === 'string' || typeof l === 'function';
  if (o.loss !== undefined && !(lossOk(o.loss) || (Array.isArray(o.loss) && o.loss.every(lossOk)))) {
    bad('loss', 'a loss name, a function (yTrue, yPred) => Tensor, or a list of them (one per output)', o.loss);
  }
  if (o.penalties !== undefined && !Array.isArray(o.penalties) && typeof o.penalties !== 'function') {
    bad('penalties', 'an array (one penalty or null per Disturbance layer) or a function (layer, index) => penalty | null', o.penalties);
  }
  if (o.onIteration !== undefined && typeof o.onIteration !== 'function') bad('onIteration', 'a function ({iteration, gradientEvaluations, meanObjective}) => void', o.onIteration);
  const defaultIterations = solver === 'preconditioned' ? Infinity : solver === 'cg' ? 10 : 20;
  const budget = given ?? (solver === 'preconditioned' && maxIterations === undefined ? 20 : Infinity);
  return {
    space,
    solver,
    conjugate,
    firstStep,
    anneal,
    maxIterations: maxIterations ?? defaultIterations,
    maxGradientEvaluations: budget,
    tolerance,
    onIteration: o.onIteration,
    init,
    initScale,
    seed,
    project,
    stepSize: stepSize ?? 0.01,
    loss: o.loss,
    penalties: o.penalties,
  };
}

/**
 * The defaults that depend on the attacked layers' penalties: with an L∞ ball,
 * {@link DeepAnnealOptions.after} 3 and {@link DeepAttackOptions.firstStep} `'unit'`; otherwise 2
 * and `'saturated'` (see those options for the measurements).
 */
function threatDefaults(penalties: readonly PenaltyConfig[]): {annealAfter: number; firstStep: 'saturated' | 'unit'} {
  return penalties.some((p) => p.kind === 'linf') ? {annealAfter: 3, firstStep: 'unit'} : {annealAfter: 2, firstStep: 'saturated'};
}

const ANNEAL_KEYS = ['after', 'start', 'minRemaining', 'floor', 'quadraticScale', 'linfSign'] as const;

function resolveAnneal(v: DeepAttackOptions['anneal'], bad: (name: string, what: string, v: unknown) => never): ResolvedDeepAttackOptions['anneal'] {
  if (v === false) return null;
  if (v !== undefined && v !== true && (typeof v !== 'object' || v === null || Array.isArray(v))) bad('anneal', 'true, false or an object {after, start, minRemaining, floor, quadraticScale, linfSign}', v);
  const a = (v === undefined || v === true ? {} : v) as Record<string, unknown>;
  for (const k of Object.keys(a)) if (!(ANNEAL_KEYS as readonly string[]).includes(k)) bad('anneal', `an object with keys ${ANNEAL_KEYS.join(', ')} (unknown key '${k}')`, v);
  const num = <F extends number | undefined>(k: (typeof ANNEAL_KEYS)[number], ok: (x: number) => boolean, what: string, fallback: F): number | F => {
    const x = a[k];
    if (x === undefined) return fallback;
    if (typeof x !== 'number' || !Number.isFinite(x) || !ok(x)) bad(`anneal.${k}`, what, x);
    return x as number;
  };
  return {
    // undefined: per attack, 3 with an L∞-ball layer, 2 otherwise (see DeepAnnealOptions.after)
    after: num('after', (x) => Number.isInteger(x) && x >= 1, 'an integer >= 1', undefined),
    start: num('start', (x) => x > 0, 'a number > 0', undefined),
    minRemaining: num('minRemaining', (x) => Number.isInteger(x) && x >= 0, 'an integer >= 0', 5),
    floor: num('floor', (x) => x >= 0 && x <= 1, 'a number in [0, 1]', 0.02),
    quadraticScale: num('quadraticScale', (x) => x > 0, 'a number > 0', 1.5),
    linfSign: a.linfSign === undefined ? true : typeof a.linfSign === 'boolean' ? a.linfSign : bad('anneal.linfSign', 'true or false', a.linfSign),
  };
}

/** Result of {@link deepAttack}. The caller owns (and must dispose) `disturbances` and `objective`. */
export interface DeepAttackResult {
  /** d*ℓ, one per Disturbance layer in model order, each shaped like that layer's input. */
  disturbances: tf.Tensor[];
  /** Names of the Disturbance layers, in the same order. */
  layerNames: string[];
  /** J_b at the result, shape [B]: eq. 9 at the returned disturbances (after projection with `project`). */
  objective: tf.Tensor1D;
  /** Solver iterations. */
  iterations: number;
  /** Batched gradient evaluations (each one forward + one backward pass), line search and initial step included. */
  gradientEvaluations: number;
  /** Batched forward-only passes (initialisation, recovery of d*, projection). */
  functionEvaluations: number;
  /** Mean J per iteration; `history[0]` is at the start point. */
  history: number[];
  /** Per Disturbance layer, the largest constraint violation over the batch (0 for quadratic penalties without box). */
  violation: number[];
  /** Examples whose solve met a non-finite value and stopped at their last finite point. */
  nonFinite: number;
}

function defaultInitScale(penalty: PenaltyConfig, units: number): number {
  switch (penalty.kind) {
    case 'linf':
      return penalty.epsilon / 2;
    case 'l2':
      return penalty.epsilon / (2 * Math.sqrt(units));
    case 'l1':
      return penalty.epsilon / (2 * units);
    default:
      return 0.01;
  }
}

/**
 * Finds the worst-case deep disturbances of eq. 9 for a batch by maximising
 * eq. 11 over the neurons (Algorithm 1, lines 5–8). Each example is attacked
 * independently. The model runs with `training: false`; its weights are never
 * written.
 *
 * @param model A model with Disturbance layers (see `instrument`), compiled
 *   (or pass `options.loss`).
 * @param x Inputs `[B, ...inputShape]` (a list, one per input, for a model with several inputs).
 * @param y Targets `[B, ...]` in the format of the model's loss (a list, one per output, for several outputs).
 */
export function deepAttack(model: tfl.LayersModel, x: Tensors, y: Tensors, options: DeepAttackOptions = {}): DeepAttackResult {
  return deepAttackImpl(model, x, y, options, {violation: true});
}

/**
 * {@link deepAttack} with internal switches: `violation: false` skips the per-layer constraint
 * violation (its result is then NaN for every layer), which adversarial training does not use
 * (≈ 20 kernels and a read-back per attack). @internal
 */
export function deepAttackImpl(model: tfl.LayersModel, x: Tensors, y: Tensors, options: DeepAttackOptions, internal: {violation: boolean}): DeepAttackResult {
  const o = resolveDeepAttackOptions('deepAttack', options);
  const allSites = disturbanceSites(model);
  if (allSites.length === 0) {
    throw new Error(
      `deepAttack: model '${model.name}' has no Disturbance layers; add them with instrument(model) or layers.disturbance().`,
    );
  }
  const penaltyOf = resolvePenalties(allSites.map((s) => s.layer), o.penalties);
  const active = allSites.map((_, i) => i).filter((i) => penaltyOf[i] != null);
  if (active.length === 0) {
    throw new Error('deepAttack: options.penalties switches every Disturbance layer off; nothing to attack.');
  }
  const layers = active.map((i) => allSites[i].layer);
  const penalties = active.map((i) => penaltyOf[i] as PenaltyConfig);
  assertCompatibleXY(model, x, y);
  const loss = attackLoss(model, o.loss);
  const batch = batchSizeOf(x);
  if (!(batch >= 1)) {
    const first = Array.isArray(x) ? x[0] : x;
    throw new Error(`deepAttack: x has no examples (shape [${first.shape.join(', ')}]); give at least one row.`);
  }
  const allShapes = allSites.map(({layer, inputShape}) => {
    if (inputShape.slice(1).some((s) => s == null)) {
      throw new Error(`deepAttack: Disturbance layer '${layer.name}' has an input of unknown shape ${JSON.stringify(inputShape)}.`);
    }
    return [batch, ...(inputShape.slice(1) as number[])];
  });
  const shapes = active.map((i) => allShapes[i]);
  const budget = o.maxGradientEvaluations;
  const init = o.space === 'disturbance' && o.init === 'gradient' ? 'random' : o.init;

  let functionEvaluations = 0;
  let initGradientEvaluations = 0;
  // 1. Initial disturbances.
  let d0 = tf.tidy(() =>
    shapes.map((shape, i) => {
      if (init === 'zero') return tf.zeros(shape);
      const units = shape.slice(1).reduce((a, b) => a * b, 1);
      const s = o.initScale ?? defaultInitScale(penalties[i], units);
      // tf.randomUniform's values, bit for bit, without its per-value overhead when seeded (src/util/random.ts)
      return randomUniform(shape, -s, s, o.seed === undefined ? undefined : o.seed + i);
    }),
  );
  if (init === 'gradient' && !(budget < 2)) {
    const stepped = linearisedStep(model, layers, penalties, x, y, loss, d0);
    tf.dispose(d0);
    d0 = stepped;
    initGradientEvaluations = 1;
  }
  const common = {
    maxIterations: o.maxIterations,
    maxGradientEvaluations: budget === Infinity ? undefined : budget - initGradientEvaluations,
    tolerance: o.tolerance,
    onIteration: o.onIteration
      ? (info: IterationInfo) => (o.onIteration as (i: IterationInfo) => void)({...info, gradientEvaluations: info.gradientEvaluations + initGradientEvaluations})
      : undefined,
  };

  let result: SolverResult;
  let disturbances: tf.Tensor[];
  let inputs: (tf.Tensor | undefined)[];
  if (o.space === 'disturbance') {
    // 2–3. Maximise eq. 9 over the disturbances, from a start inside every ball and box.
    const bases = inputBases(model, layers, x);
    // From a random start: its projection onto every ball and box, and (for the saturated first step)
    // the loss c there. When every box has a known layer input (`bases`: no hidden-layer box) the
    // projection is closed form and c = J − Σρ comes from the solver's own start evaluation;
    // otherwise one recording forward pass projects and gives c.
    let startLoss: tf.Tensor1D | undefined;
    let startPenalty: tf.Tensor1D | undefined;
    const defaults = threatDefaults(penalties);
    const saturated = o.solver === 'preconditioned' && (o.firstStep ?? defaults.firstStep) === 'saturated';
    if (init !== 'zero') {
      try {
        if (penalties.every((p, i) => p.box == null || bases[i] != null)) {
          const projected = tf.tidy(() => d0.map((d, i) => projectDisturbance(penalties[i], d, bases[i])));
          tf.dispose(d0);
          d0 = projected;
          if (saturated) startPenalty = tf.tidy(() => d0.map((d, i) => penaltyValue(penalties[i], d, bases[i])).reduce((a, b) => tf.add(a, b)) as tf.Tensor1D);
        } else {
          const r = forwardAdd(model, layers, x, d0, {penalties, project: true});
          functionEvaluations++;
          try {
            if (saturated) startLoss = tf.tidy(() => loss(y, r.output) as tf.Tensor1D);
            const projected = r.disturbances.map((d) => tf.clone(d));
            tf.dispose(d0);
            d0 = projected;
          } finally {
            disposeAddResult(r);
          }
        }
      } catch (e) {
        tf.dispose([...d0, ...(startPenalty ? [startPenalty] : [])]);
        throw e;
      }
    }
    // the L∞ excesses of the last evaluation, reused by the direction at the same point
    const excess = new Map<tf.Tensor, PenaltyExcess>();
    // per layer: T(dℓ) − dℓ with T the maximiser of the linearised loss plus the exact penalty
    // (`linearisedMaximiser`); the loss gradient is the gradient of eq. 9 minus the penalty's own
    // partial derivative (the box term of hidden layers, whose layer input moves with the earlier
    // disturbances, stays with the loss). Constants of the fixed layer inputs are computed once.
    const directions = o.solver === 'preconditioned' ? penalties.map((p, i) => linearisedDirection(p, bases[i])) : [];
    // directions the fused evaluation (wasm) computed at the point it evaluated, keyed by its gradient
    const computed = new Map<tf.Tensor, tf.Tensor>();
    const f = disturbanceObjective(model, layers, x, y, loss, penalties, bases, excess, directions.length > 0 ? {directions, out: computed} : undefined);
    try {
      result =
        o.solver === 'preconditioned'
          ? preconditionedAscent(f, d0, {
              ...common,
              direction: (ds, grads) => ds.map((d, i) => computed.get(grads[i]) ?? directions[i].direction(grads[i], d, excess.get(d))),
              conjugate: o.conjugate,
              // from a random start the saturated step extrapolates T(d0) from the origin, α·T(d0),
              // with α from the loss at d0 (d0 + α(T − d0) would amplify the random d0)
              initialStep: !saturated
                ? 1
                : startLoss
                  ? () => saturatedStep(startLoss as tf.Tensor1D)
                  : startPenalty
                    ? (J: tf.Tensor1D) => saturatedStep(tf.sub(J, startPenalty as tf.Tensor1D) as tf.Tensor1D)
                    : saturatedStep,
              initialStepFrom: init === 'zero' ? 'start' : 'origin',
              anneal:
                o.anneal && Number.isFinite(Math.min(o.maxIterations, common.maxGradientEvaluations ?? Infinity))
                  ? {
                      after: o.anneal.after ?? defaults.annealAfter,
                      start: o.anneal.start,
                      minRemaining: o.anneal.minRemaining,
                      floor: o.anneal.floor,
                      scale: penalties.map((p) => (p.kind === 'quadratic' && p.box == null ? (o.anneal as {quadraticScale: number}).quadraticScale : 1)),
                      sign: penalties.map((p) => p.kind === 'linf' && (o.anneal as {linfSign: boolean}).linfSign),
                    }
                  : false,
            })
          : o.solver === 'cg'
            ? conjugateGradient(f, d0, common)
            : gradientAscent(f, d0, {...common, stepSize: o.stepSize});
    } finally {
      tf.dispose(d0);
      startLoss?.dispose();
      startPenalty?.dispose();
      directions.forEach((dir) => dir.dispose());
      excess.clear();
      computed.clear();
    }
    functionEvaluations += result.functionEvaluations;
    disturbances = result.xs;
    // layer inputs (for the violation only): known for input sites (x); one recording pass only if
    // a hidden layer has a box
    if (!internal.violation) {
      inputs = [];
    } else if (penalties.some((p, i) => p.box != null && bases[i] == null)) {
      const r = forwardAdd(model, layers, x, disturbances);
      functionEvaluations++;
      inputs = r.inputs.map((t) => tf.clone(t));
      disposeAddResult(r);
    } else {
      inputs = bases.map((b) => (b == null ? undefined : tf.clone(b)));
    }
  } else {
    let n0: tf.Tensor[];
    try {
      // Projected so that the start point respects every ball and box (e.g. valid pixel range).
      const r = forwardAdd(model, layers, x, d0, {penalties, project: true});
      functionEvaluations++;
      n0 = r.neurons.map((n) => tf.clone(n));
      disposeAddResult(r);
    } finally {
      tf.dispose(d0);
    }
    // 3. Maximise eq. 11 over the neurons.
    const objective = neuronObjective(model, layers, x, y, loss, penalties);
    try {
      result =
        o.solver === 'cg'
          ? conjugateGradient(objective, n0, common)
          : gradientAscent(objective, n0, {...common, stepSize: o.stepSize});
    } finally {
      tf.dispose(n0);
    }
    functionEvaluations += result.functionEvaluations;
    // 4. d* by eq. 6: the residuals nℓ* − fℓ(nℓ₋₁*), from one recording forward pass.
    try {
      const recorded = neuronInputs(model, layers, x, result.xs);
      functionEvaluations++;
      disturbances = result.xs.map((n, i) => tf.sub(n, recorded[i]));
      inputs = recorded;
    } finally {
      tf.dispose(result.xs);
    }
  }
  let finalObjective = result.objective;
  if (o.project) {
    tf.dispose(inputs.filter((t): t is tf.Tensor => t != null));
    const r = forwardAdd(model, layers, x, disturbances, {project: true, penalties});
    functionEvaluations++;
    tf.dispose(disturbances);
    disturbances = r.disturbances.map((d) => tf.clone(d));
    inputs = r.inputs.map((t) => tf.clone(t));
    disposeAddResult(r);
    result.objective.dispose();
    finalObjective = disturbedObjective(model, layers, x, y, disturbances, loss, penalties);
    functionEvaluations++;
  }
  let activeViolation = layers.map(() => NaN);
  if (internal.violation) {
    const violationTensor = tf.tidy(() =>
      tf.stack(layers.map((_, i) => tf.max(violationPerExample(penalties[i], disturbances[i], inputs[i])))),
    );
    activeViolation = Array.from(violationTensor.dataSync());
    violationTensor.dispose();
  }
  tf.dispose(inputs.filter((t): t is tf.Tensor => t != null));
  // One entry per Disturbance layer of the model: layers switched off get d = 0.
  const all = allSites.map((_, i) => {
    const k = active.indexOf(i);
    return k >= 0 ? {d: disturbances[k], v: activeViolation[k]} : {d: tf.zeros(allShapes[i]), v: 0};
  });
  return {
    disturbances: all.map((a) => a.d),
    layerNames: allSites.map((s) => s.layer.name),
    violation: all.map((a) => a.v),
    objective: finalObjective,
    iterations: result.iterations,
    gradientEvaluations: result.gradientEvaluations + initGradientEvaluations,
    functionEvaluations,
    history: result.history,
    nonFinite: result.nonFinite,
  };
}

/** First step of the saturated rule: α_b = 1/(1 − e^(−J_b)), in [1, 1000] (see `DeepAttackOptions.firstStep`). */
function saturatedStep(J: tf.Tensor1D): tf.Tensor1D {
  return tf.tidy(() => {
    const q = tf.sub(1, tf.exp(tf.neg(tf.maximum(J, 0))));
    const a = tf.div(1, tf.maximum(q, 1e-3));
    return select(tf.isFinite(a), tf.clipByValue(a, 1, 1000), tf.onesLike(a)) as tf.Tensor1D;
  });
}

/** Per active layer: the model input x when the layer disturbs the model input directly, else undefined. */
function inputBases(model: tfl.LayersModel, layers: Disturbance[], x: Tensors): (tf.Tensor | undefined)[] {
  const inputs = model.inputs ?? [];
  const xs = Array.isArray(x) ? x : [x];
  return layers.map((l) => {
    for (const n of l.inboundNodes) {
      const t = (n as unknown as {inputTensors?: tfl.SymbolicTensor[]}).inputTensors?.[0];
      const k = t == null ? -1 : inputs.indexOf(t);
      if (k >= 0 && xs[k] != null && xs[k].rank === inputs[k].shape.length && xs[k].dtype === 'float32') return xs[k];
    }
    return undefined;
  });
}

function resolvePenalties(layers: Disturbance[], given: DeepAttackOptions['penalties']): (PenaltyConfig | null)[] {
  if (given === undefined) return layers.map((l) => l.penalty);
  if (Array.isArray(given)) {
    if (given.length !== layers.length) {
      throw new Error(`deepAttack: options.penalties has ${given.length} entries but the model has ${layers.length} Disturbance layers.`);
    }
    return given.map((p, i) => (p == null ? null : validatePenalty(p, `deepAttack: options.penalties[${i}] (layer '${layers[i].name}')`)));
  }
  if (typeof given === 'function') {
    return layers.map((layer, i) => {
      const p = given(layer, i);
      if (p === undefined) return layer.penalty;
      return p === null ? null : validatePenalty(p, `deepAttack: options.penalties for layer '${layer.name}'`);
    });
  }
  throw new Error('deepAttack: options.penalties must be an array or a function (layer, index) => penalty | null.');
}

/**
 * The model's output with every Disturbance layer adding its dℓ (eq. 6), in
 * inference mode — e.g. to measure accuracy under a disturbance found by
 * {@link deepAttack}. `disturbances` has one tensor per Disturbance layer in
 * model order (as `deepAttack` returns them), each with the batch size of `x`.
 * Returns a new tensor; nothing else is left behind.
 */
export function predictDisturbed(model: tfl.LayersModel, x: tf.Tensor, disturbances: tf.Tensor[]): tf.Tensor;
/** With a list of inputs: the output, or one tensor per output for a model with several outputs. */
export function predictDisturbed(model: tfl.LayersModel, x: Tensors, disturbances: tf.Tensor[]): Tensors;
export function predictDisturbed(model: tfl.LayersModel, x: Tensors, disturbances: tf.Tensor[]): Tensors {
  const layers = disturbanceSites(model).map((s) => s.layer);
  if (disturbances.length !== layers.length) {
    throw new Error(`predictDisturbed: got ${disturbances.length} disturbances but model '${model.name}' has ${layers.length} Disturbance layers.`);
  }
  return withModes(layers, 'add', disturbances, () => model.apply(x, {training: false}) as Tensors);
}

/**
 * One gradient of eq. 9, Σ_b c(y_b, h(w, x_b, d_b)) + Σℓ ρℓ(dℓ,b), w.r.t. every dℓ (through the
 * network, in add mode), then per layer the maximiser of the linearised objective (see
 * `DeepAttackOptions.init`). Box terms are left to the projection that follows.
 */
function linearisedStep(
  model: tfl.LayersModel,
  layers: Disturbance[],
  penalties: PenaltyConfig[],
  x: Tensors,
  y: Tensors,
  loss: (yTrue: Tensors, yPred: Tensors) => tf.Tensor1D,
  ds: tf.Tensor[],
): tf.Tensor[] {
  return tf.tidy(() => {
    const noBox = penalties.map((p) => ({...p, box: undefined}) as PenaltyConfig);
    const grads = tf.grads((...d: tf.Tensor[]) =>
      withModes(layers, 'add', d, () => {
        let j: tf.Tensor = tf.sum(loss(y, model.apply(x, {training: false}) as Tensors));
        d.forEach((di, i) => (j = tf.add(j, tf.sum(penaltyValue(noBox[i], di)))));
        return j as tf.Scalar;
      }),
    )(ds);
    return grads.map((g0, i) => {
      const p = penalties[i];
      const g = select(tf.isFinite(g0), g0, tf.zerosLike(g0));
      const perExample = (t: tf.Tensor) => tf.reshape(t, [g.shape[0], ...g.shape.slice(1).map(() => 1)]);
      if (p.kind === 'linf') return tf.mul(p.epsilon, tf.sign(g));
      if (p.kind === 'l2' || p.kind === 'l1') {
        const norm = tf.sqrt(sumPerExample(tf.square(g)));
        return tf.mul(g, perExample(tf.div(p.epsilon, tf.maximum(norm, 1e-12))));
      }
      const lambda = p.kind === 'quadratic' ? p.lambda : 0;
      if (lambda > 0) return tf.add(ds[i], tf.div(g, 2 * lambda));
      return tf.clone(ds[i]);
    });
  });
}
