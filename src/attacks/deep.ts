/**
 * The deep adversarial attack (seed §3, Algorithm 1 lines 5–8):
 *
 * 1. initialise every dℓ randomly (by default followed by one linearised step, `init: 'gradient'`);
 * 2. one forward pass in `add` mode initialises the neurons nℓ = fℓ(·) + dℓ;
 * 3. maximise J(n) of eq. 11 over the neurons with batched nonlinear CG
 *    (or gradient ascent, the baseline);
 * 4. recover d* by eq. 6: dℓ* = nℓ* − fℓ(wℓ, nℓ₋₁*), the last residuals.
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import {Disturbance} from '../layers/disturbance.js';
import {disturbanceSites} from '../model/instrument.js';
import {assertCompatibleXY, attackLoss, batchSizeOf, LossFn, Tensors} from '../objective/loss.js';
import {disposeAddResult, disturbedObjective, forwardAdd, neuronInputs, neuronObjective, withModes} from '../objective/neuron_space.js';
import {PenaltyConfig, penaltyValue, sumPerExample, validatePenalty, violationPerExample} from '../objective/penalties.js';
import {conjugateGradient} from '../solvers/cg.js';
import {gradientAscent} from '../solvers/gradient_ascent.js';
import type {SolverResult} from '../solvers/types.js';

/** Options of {@link deepAttack}. */
export interface DeepAttackOptions {
  /** `'cg'` (default): batched nonlinear CG; `'gradient-ascent'`: fixed-step gradient ascent (baseline). */
  solver?: 'cg' | 'gradient-ascent';
  /** Maximum solver iterations. Default 10 for CG, 20 for gradient ascent. */
  maxIterations?: number;
  /** Hard budget of batched gradient evaluations (line search included). Default: none. */
  maxGradientEvaluations?: number;
  /** Relative tolerance of the solver's stopping test (see `SolverOptions`). Default 1e-6. */
  tolerance?: number;
  /**
   * Initial disturbances: `'random'` (uniform, see `initScale`), `'zero'`, or
   * `'gradient'` (default): from the random start, one gradient of eq. 9 w.r.t. every dℓ (through the
   * network, counted as a gradient evaluation) and each layer jumps to the maximiser of its
   * linearised objective — ε·sign(g) for L∞, ε·g/‖g‖₂ for L2/L1, g_c/(2λ) for quadratic —
   * then is projected onto its ball/box. Like an FGSM step on every layer at once; it helps
   * most for input budgets, whose eq. 11 gradient only reaches the input through the penalties.
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
  /** Step size of gradient ascent (ignored by CG). Default 0.01. */
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
}

/** Result of {@link deepAttack}. The caller owns (and must dispose) `disturbances` and `objective`. */
export interface DeepAttackResult {
  /** d*ℓ, one per Disturbance layer in model order, each shaped like that layer's input. */
  disturbances: tf.Tensor[];
  /** Names of the Disturbance layers, in the same order. */
  layerNames: string[];
  /** J_b at the result, shape [B] (eq. 11 = eq. 9 at d*; after projection with `project`). */
  objective: tf.Tensor1D;
  /** Solver iterations. */
  iterations: number;
  /** Batched gradient evaluations (each one forward + one backward pass), line search included. */
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

function checkOption(value: unknown, name: string, test: (v: number) => boolean, what: string): void {
  if (value === undefined) return;
  if (typeof value !== 'number' || !Number.isFinite(value) || !test(value)) {
    throw new Error(`deepAttack: option '${name}' must be ${what}, got ${String(value)}.`);
  }
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
  const solverName = options.solver ?? 'cg';
  if (solverName !== 'cg' && solverName !== 'gradient-ascent') {
    throw new Error(`deepAttack: option 'solver' must be 'cg' or 'gradient-ascent', got ${JSON.stringify(solverName)}.`);
  }
  checkOption(options.maxIterations, 'maxIterations', (v) => Number.isInteger(v) && v >= 0, 'an integer >= 0');
  checkOption(options.maxGradientEvaluations, 'maxGradientEvaluations', (v) => v >= 0, 'a number >= 0');
  checkOption(options.tolerance, 'tolerance', () => true, 'a finite number');
  checkOption(options.initScale, 'initScale', (v) => v >= 0, 'a number >= 0');
  checkOption(options.stepSize, 'stepSize', (v) => v > 0, 'a number > 0');
  checkOption(options.seed, 'seed', () => true, 'a finite number');
  const init = options.init ?? 'gradient';
  if (init !== 'random' && init !== 'zero' && init !== 'gradient') {
    throw new Error(`deepAttack: option 'init' must be 'random', 'zero' or 'gradient', got ${JSON.stringify(init)}.`);
  }
  const allSites = disturbanceSites(model);
  if (allSites.length === 0) {
    throw new Error(
      `deepAttack: model '${model.name}' has no Disturbance layers; add them with instrument(model) or layers.disturbance().`,
    );
  }
  const penaltyOf = resolvePenalties(allSites.map((s) => s.layer), options.penalties);
  const active = allSites.map((_, i) => i).filter((i) => penaltyOf[i] != null);
  if (active.length === 0) {
    throw new Error('deepAttack: options.penalties switches every Disturbance layer off; nothing to attack.');
  }
  const layers = active.map((i) => allSites[i].layer);
  const penalties = active.map((i) => penaltyOf[i] as PenaltyConfig);
  assertCompatibleXY(model, x, y);
  const loss = attackLoss(model, options.loss);
  const batch = batchSizeOf(x);
  const allShapes = allSites.map(({layer, inputShape}) => {
    if (inputShape.slice(1).some((s) => s == null)) {
      throw new Error(`deepAttack: Disturbance layer '${layer.name}' has an input of unknown shape ${JSON.stringify(inputShape)}.`);
    }
    return [batch, ...(inputShape.slice(1) as number[])];
  });
  const shapes = active.map((i) => allShapes[i]);

  let functionEvaluations = 0;
  let initGradientEvaluations = 0;
  // 1–2. Random disturbances, one forward pass in add mode → initial neurons.
  let d0 = tf.tidy(() =>
    shapes.map((shape, i) => {
      if (init === 'zero') return tf.zeros(shape);
      const units = shape.slice(1).reduce((a, b) => a * b, 1);
      const s = options.initScale ?? defaultInitScale(penalties[i], units);
      return tf.randomUniform(shape, -s, s, 'float32', options.seed === undefined ? undefined : options.seed + i);
    }),
  );
  if (init === 'gradient' && !(options.maxGradientEvaluations !== undefined && options.maxGradientEvaluations < 2)) {
    const stepped = linearisedStep(model, layers, penalties, x, y, loss, d0);
    tf.dispose(d0);
    d0 = stepped;
    initGradientEvaluations = 1;
  }
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
  let result: SolverResult;
  try {
    const common = {
      maxIterations: options.maxIterations,
      maxGradientEvaluations:
        options.maxGradientEvaluations === undefined ? undefined : options.maxGradientEvaluations - initGradientEvaluations,
      tolerance: options.tolerance,
    };
    result =
      solverName === 'cg'
        ? conjugateGradient(objective, n0, {...common, maxIterations: options.maxIterations ?? 10})
        : gradientAscent(objective, n0, {...common, maxIterations: options.maxIterations ?? 20, stepSize: options.stepSize ?? 0.01});
  } finally {
    tf.dispose(n0);
  }
  functionEvaluations += result.functionEvaluations;

  // 4. d* by eq. 6: the residuals nℓ* − fℓ(nℓ₋₁*), from one recording forward pass.
  let disturbances: tf.Tensor[];
  let inputs: tf.Tensor[];
  try {
    inputs = neuronInputs(model, layers, x, result.xs);
    functionEvaluations++;
    disturbances = result.xs.map((n, i) => tf.sub(n, inputs[i]));
  } finally {
    tf.dispose(result.xs);
  }
  let finalObjective = result.objective;
  if (options.project) {
    tf.dispose(inputs);
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
  const violationTensor = tf.tidy(() =>
    tf.stack(layers.map((_, i) => tf.max(violationPerExample(penalties[i], disturbances[i], inputs[i])))),
  );
  const activeViolation = Array.from(violationTensor.dataSync());
  violationTensor.dispose();
  tf.dispose(inputs);
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
      const g = tf.where(tf.isFinite(g0), g0, tf.zerosLike(g0));
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
