/**
 * One adversarial training step (Algorithm 1, lines 3–10 of the seed) on a
 * compiled tfjs-layers model: attack the batch, then let the model's own
 * compiled loss, optimizer and metrics do the update at h(w, x, d*).
 *
 * The same step serves `model.fit`/`fitDataset` (through the train-function
 * hook and {@link adversarialCallback}) and custom loops ({@link adversarialStep}).
 *
 * Order of a step:
 * 1. check the batch: x/y batch sizes, and every value finite — otherwise an
 *    error, before anything runs (the weights are untouched);
 * 2. attack with `training: false` (BatchNorm uses, and does not update, its
 *    moving statistics; Dropout is off). The attack never writes weights;
 * 3. sanitise: an example whose attack met a non-finite value keeps its last
 *    finite point (deep: CG's fallback; PGD/FGSM: the clean input) and is
 *    counted; the disturbance handed to the update is always finite;
 * 4. update: the ORIGINAL tfjs train function, with the Disturbance layers in
 *    `add` mode (deep) or the adversarial x in place of x (PGD/FGSM). The
 *    optimizer's `applyGradients` is guarded: a non-finite gradient skips the
 *    update (weights and optimizer state unchanged) and is counted.
 *
 * ## cleanWeight α
 * The loss minimised is α·mean_b c(y_b, h(w, x_b)) + (1 − α)·mean_b c(y_b, h(w, x_b, d*_b)).
 * - α = 0 (default): eq. 7; the step trains on the adversarial batch only.
 * - α = 1: plain training; no attack is run at all (bit-identical to tfjs).
 * - 0 < α < 1: the clean and the adversarial batch are concatenated (2B
 *   examples) and tfjs' own per-example sample weights are set to 2α (clean
 *   half) and 2(1 − α) (adversarial half); tfjs computes mean(w·c) over the 2B
 *   rows, which is exactly the mixture above (class weights, if given to fit,
 *   multiply in). Consequences: BatchNorm (training mode) normalises the 2B
 *   rows together, the compiled metrics are unweighted over the 2B rows, and
 *   the logged `adv_loss`/`adv_clean_loss` come from one extra inference-mode
 *   forward pass of the 2B rows.
 *
 * @packageDocumentation
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import {deepAttackImpl, DeepAttackOptions, DEEP_ATTACK_OPTION_KEYS, pickDeepAttackOptions, resolveDeepAttackOptions} from '../attacks/deep.js';
import {PGD_KEYS, PgdOptions, resolvePgdOptions, ResolvedPgdOptions} from '../attacks/pgd.js';
import {AttackSite, attackSites, hasTokenInput, runSitePgd} from '../attacks/site_pgd.js';
import {FGSM_KEYS, prepareAttack, PreparedAttack} from '../attacks/registry.js';
import {undisturbableInput} from '../attacks/validate.js';
import {checkKnownKeys} from '../util/options.js';
import {rowsFinite, rowsFiniteAll, whereRows} from '../solvers/batched.js';
import {Disturbance} from '../layers/disturbance.js';
import {disturbanceLayers, DisturbanceSite, disturbanceSites} from '../model/instrument.js';
import {compiledLossFunctions, compiledOptimizer, dedupedMetricsNames, inboundInputTensors} from '../model/internals.js';
import {assertCompatibleXY, hasQuadraticLoss, LossFn, perExampleLoss, PerExampleLossFn, Tensors} from '../objective/loss.js';
import {disposeAddResult, forwardAdd, withModes} from '../objective/neuron_space.js';
import {normPerExample, PenaltyConfig, validatePenalty} from '../objective/penalties.js';
import {originalTrainFunction, TrainFunction, trainingModel} from './hook.js';
import {checkStrength, scalePenalty, scaleRadius} from './schedules.js';
// Circular at module level but used only at call time (callback.ts imports this module).
import {CALLBACK_ONLY_KEYS} from './callback.js';

/** Options shared by every method. */
export interface CommonTrainingOptions {
  /**
   * α in [0, 1]: the update minimises α·clean + (1 − α)·adversarial loss.
   * Default 0 (eq. 7). See the module documentation for how 0 < α < 1 is done.
   */
  cleanWeight?: number;
  /**
   * Seed of the attack's random initialisation. The callback derives a
   * different seed for every step from it (same seed → same run); in
   * {@link adversarialStep} it is used as given.
   */
  seed?: number;
  /** Loss the attack maximises instead of the model's compiled loss (the update always uses the compiled loss). */
  loss?: string | LossFn;
  /**
   * Skip (and count in `adv_skipped_updates`) an update whose gradient has a
   * non-finite value, so that weights and optimizer state never receive NaN.
   * Default true.
   */
  skipNonFiniteUpdates?: boolean;
}

/**
 * `'deep'`: Algorithm 1 — the deep attack (eq. 9/11, batched CG) with each
 * Disturbance layer's penalty. Every option of `deepAttack` except `seed` and
 * `loss` passes through (`maxIterations`, `maxGradientEvaluations`, `init`,
 * `project`, `penalties`, …). With hidden disturbances switched off
 * (`penalties` returning `null` for them) and a quadratic input penalty this is eq. 5.
 */
export interface DeepTrainingOptions extends CommonTrainingOptions, Omit<DeepAttackOptions, 'seed' | 'loss' | 'onIteration'> {
  method: 'deep';
}

/** `'pgd'`: Madry et al. — PGD on the input in an L∞/L2 ε-ball, `steps` steps, random start by default. */
export interface PgdTrainingOptions extends CommonTrainingOptions, Omit<PgdOptions, 'seed' | 'loss'> {
  method: 'pgd';
  /**
   * Attack the output of this layer instead of the model input: the name of a Disturbance
   * layer, or of the layer it follows (e.g. an Embedding layer of an instrumented text model).
   * Default: the input; for a model whose input feeds an Embedding layer (or with several
   * inputs), every Disturbance layer on a float input or an Embedding output — the
   * embedding-space attack of Miyato et al. (2017). ε then applies per site in embedding space.
   */
  layer?: string;
  /** Also compute the loss at the adversarial point for the `adv_objective` log (one extra forward pass). Default true. */
  logObjective?: boolean;
}

/** `'fgsm'`: FGSM with random start ("fast" adversarial training, Wong et al. 2020). */
export interface FgsmTrainingOptions extends CommonTrainingOptions {
  method: 'fgsm';
  /** Attack the output of this layer instead of the input (see {@link PgdTrainingOptions.layer}). */
  layer?: string;
  /** L∞ radius ε ≥ 0. */
  epsilon: number;
  /** Valid input range `[lo, hi]`. */
  clip?: [number, number];
  /** Random start in the ε-box (FGSM-RS). Default **true** for training. */
  randomStart?: boolean;
  /** Step length with random start; default 1.25·ε. */
  alpha?: number;
  /** Also compute the loss at the adversarial point for the `adv_objective` log (one extra forward pass). Default true. */
  logObjective?: boolean;
}

/** Options of an adversarial training step: one of the three methods. */
export type AdversarialTrainingOptions = DeepTrainingOptions | PgdTrainingOptions | FgsmTrainingOptions;

/** Options of {@link adversarialStep}: a method's options plus the strength of this step. */
export type AdversarialStepOptions = AdversarialTrainingOptions & {
  /** Strength s ≥ 0 of the attack for this step (see `schedules.ts`): ε·s, quadratic λ/s; 0 = plain step. Default 1. */
  strength?: number;
};

/** What one adversarial step measured. */
export interface AttackStats {
  /** Strength s the attack ran at (0: no attack). */
  strength: number;
  /** Examples in the batch. */
  batchSize: number;
  /** Whether an attack ran (false for s = 0 or α = 1). */
  attacked: boolean;
  /** Mean over the batch of the attack objective J_b (deep: eq. 11; PGD/FGSM: the loss at x_adv). NaN if not measured. */
  objective: number;
  /** Solver iterations (deep: CG iterations; PGD/FGSM: steps × restarts). */
  iterations: number;
  /** Batched gradient evaluations of the attack. */
  gradientEvaluations: number;
  /** Mean ‖dℓ‖ per Disturbance layer, by layer name (the penalty's norm; L2 for quadratic). PGD/FGSM: `input`. */
  norms: Record<string, number>;
  /** Examples whose attack met a non-finite value (they fell back to their last finite point). */
  nonFinite: number;
  /** True when the update was skipped because its gradient was non-finite. */
  skippedUpdate: boolean;
  /** Mean adversarial loss c(y, h(w, x, d*)): for α = 0 the compiled training loss of the update; see module docs for 0 < α < 1. NaN if no attack. */
  adversarialLoss: number;
  /** Mean clean loss (only for 0 < α < 1, inference mode). */
  cleanLoss?: number;
  /** PGD/FGSM: the radius ε used (after the strength). */
  epsilon?: number;
}

/** Result of {@link adversarialStep}; plain numbers, no tensors. */
export interface AdversarialStepResult {
  /** The compiled training loss of the update (α-mixed when 0 < α < 1), as `trainOnBatch` reports it. */
  loss: number;
  /** The compiled metrics of the update, by name (e.g. `acc`). */
  metrics: Record<string, number>;
  /** Attack statistics. */
  attack: AttackStats;
  /** The same numbers under the log keys `fit` uses (`adv_objective`, `adv_norm_<layer>`, …). */
  logs: Record<string, number>;
}

/** Validated, per-fit preparation of a model and options (internal). */
export interface PreparedTraining {
  /** The LayersModel whose train function runs (inner model of a Sequential). */
  model: tfl.LayersModel;
  /** The model the user passed. */
  userModel: tfl.LayersModel;
  options: AdversarialTrainingOptions;
  method: AdversarialTrainingOptions['method'];
  alpha: number;
  lossFn: PerExampleLossFn;
  /** deep: every Disturbance layer in model order, and its base penalty (null = off). */
  layers: Disturbance[];
  basePenalties: (PenaltyConfig | null)[];
  /** Rank of the per-example loss tensor tfjs computes, per output (output rank − 1, at least 1). */
  lossRanks: number[];
  /** Number of model inputs and outputs (the train function gets [...inputs, ...targets, ...sampleWeights]). */
  nIn: number;
  nOut: number;
  metricNames: string[];
  skipNonFinite: boolean;
  logObjective: boolean;
  /** PGD/FGSM on Disturbance layers (embedding space, several inputs) instead of the input; null for input PGD. */
  sites: AttackSite[] | null;
  /** PGD/FGSM: the options, validated and resolved once per fit (each batch only scales ε and the step by the strength). */
  pgdBase: ResolvedPgdOptions | null;
  /** PGD/FGSM on the input: the attack from the registry, prepared once per fit. */
  inputAttack: PreparedAttack | null;
}

const METHODS = ['deep', 'pgd', 'fgsm'] as const;

/** Option names every method shares ({@link CommonTrainingOptions} plus `method`). */
const COMMON_TRAINING_KEYS = ['method', 'cleanWeight', 'seed', 'loss', 'skipNonFiniteUpdates'] as const;
/** Options of PGD/FGSM training beyond the attack's own. */
const SITE_TRAINING_KEYS = ['layer', 'logObjective'] as const;

/**
 * The top-level option names of a training method: the common ones plus the attack's own option
 * names, taken from the attack modules (deep: `DEEP_ATTACK_OPTION_KEYS`, the list
 * `resolveDeepAttackOptions` checks; pgd/fgsm: the registry entries' lists), so a new attack option
 * is accepted here without a second list.
 */
export function trainingOptionKeys(method: AdversarialTrainingOptions['method']): string[] {
  const own = method === 'deep' ? DEEP_ATTACK_OPTION_KEYS : method === 'pgd' ? [...PGD_KEYS, ...SITE_TRAINING_KEYS] : [...FGSM_KEYS, ...SITE_TRAINING_KEYS];
  return [...new Set<string>([...COMMON_TRAINING_KEYS, ...own])];
}

function describe(v: unknown): string {
  if (typeof v === 'function') return 'a function';
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
}

function isCompiled(model: tfl.LayersModel): boolean {
  const fns = compiledLossFunctions(model);
  return compiledOptimizer(model) != null && fns != null && fns.length > 0;
}

/** Disturbance layers whose input is model input `index` (d₀ of that input). */
function inputDisturbances(model: tfl.LayersModel, layers: Disturbance[], index = 0): Disturbance[] {
  const input = model.inputs[index];
  return layers.filter((l) =>
    inboundInputTensors(l).some((inputs) => inputs[0] === input),
  );
}

function resolveBasePenalties(layers: Disturbance[], given: DeepAttackOptions['penalties'], where: string): (PenaltyConfig | null)[] {
  if (given === undefined) return layers.map((l) => l.penalty);
  if (Array.isArray(given)) {
    if (given.length !== layers.length) {
      throw new Error(`${where}: options.penalties has ${given.length} entries but the model has ${layers.length} Disturbance layers (${layers.map((l) => l.name).join(', ')}).`);
    }
    return given.map((p, i) => (p == null ? null : validatePenalty(p, `${where}: options.penalties[${i}] (layer '${layers[i].name}')`)));
  }
  if (typeof given === 'function') {
    return layers.map((layer, i) => {
      const p = given(layer, i);
      if (p === undefined) return layer.penalty;
      return p === null ? null : validatePenalty(p, `${where}: options.penalties for layer '${layer.name}'`);
    });
  }
  throw new Error(`${where}: options.penalties must be an array or a function (layer, index) => penalty | null.`);
}

function pgdLikeOptions(prep: PreparedTraining, s: number, seed: number | undefined, where: string): ResolvedPgdOptions {
  const o = prep.options;
  if (o.method === 'pgd') {
    const {layer: _layer, ...rest} = o;
    const r = resolvePgdOptions(where, {...rest, seed, loss: o.loss} as PgdOptions);
    return {
      ...r,
      epsilon: scaleRadius(r.epsilon, s),
      stepSize: scaleRadius(r.stepSize, s),
    };
  }
  const f = o as FgsmTrainingOptions;
  const randomStart = f.randomStart ?? true;
  const r = resolvePgdOptions(where, {epsilon: f.epsilon, clip: f.clip, seed, loss: f.loss, randomStart, steps: 1});
  const alpha = f.alpha ?? 1.25 * f.epsilon;
  if (typeof alpha !== 'number' || !Number.isFinite(alpha) || alpha < 0) {
    throw new Error(`${where}: options.alpha must be a finite number >= 0; got ${describe(f.alpha)}.`);
  }
  return {
    ...r,
    epsilon: scaleRadius(f.epsilon, s),
    steps: 1,
    restarts: 1,
    stepSize: scaleRadius(randomStart ? alpha : f.epsilon, s),
    randomStart,
  };
}

/** The once-resolved PGD/FGSM options at strength `s`, with this batch's seed. */
function scaledPgd(prep: PreparedTraining, s: number, seed: number | undefined): ResolvedPgdOptions {
  const base = prep.pgdBase as ResolvedPgdOptions;
  return {...base, epsilon: scaleRadius(base.epsilon, s), stepSize: scaleRadius(base.stepSize, s), seed};
}

/** The input PGD/FGSM attack of a training run, from the attack registry (validated once). */
function prepareInputAttack(options: PgdTrainingOptions | FgsmTrainingOptions, where: string): PreparedAttack {
  if (options.method === 'pgd') {
    const o = options;
    return prepareAttack('pgd', where, {
      epsilon: o.epsilon, norm: o.norm, steps: o.steps, stepSize: o.stepSize, randomStart: o.randomStart, restarts: o.restarts, clip: o.clip, loss: o.loss,
    } as PgdOptions);
  }
  const f = options;
  // FGSM training uses the random start (FGSM-RS, Wong et al.) unless told otherwise.
  return prepareAttack('fgsm', where, {epsilon: f.epsilon, clip: f.clip, randomStart: f.randomStart ?? true, alpha: f.alpha, loss: f.loss});
}

/**
 * Validates a model and training options once (per `fit`, or per
 * {@link adversarialStep} call), before any weight can change.
 *
 * @internal
 */
export function prepareAdversarialTraining(userModel: tfl.LayersModel, options: AdversarialTrainingOptions, where: string): PreparedTraining {
  if (options == null || typeof options !== 'object') {
    throw new Error(`${where}: options must be an object such as {method: 'pgd', epsilon: 0.1}; got ${describe(options)}.`);
  }
  if (!METHODS.includes(options.method as (typeof METHODS)[number])) {
    throw new Error(`${where}: options.method must be one of 'deep', 'pgd', 'fgsm'; got ${describe(options.method)}.`);
  }
  if (userModel == null || typeof (userModel as {apply?: unknown}).apply !== 'function') {
    throw new Error(`${where}: the first argument must be a tfjs-layers model; got ${describe(userModel)}.`);
  }
  let model: tfl.LayersModel;
  try {
    model = trainingModel(userModel);
  } catch (e) {
    throw new Error(`${where}: model '${userModel.name}' is not compiled: ${(e as Error).message}`);
  }
  if (!isCompiled(model)) {
    throw new Error(`${where}: model '${userModel.name}' is not compiled; call model.compile({optimizer, loss}) before training.`);
  }
  const alpha = options.cleanWeight ?? 0;
  if (typeof alpha !== 'number' || !Number.isFinite(alpha) || alpha < 0 || alpha > 1) {
    throw new Error(`${where}: options.cleanWeight must be a number in [0, 1]; got ${describe(options.cleanWeight)}.`);
  }
  if (options.seed !== undefined && (typeof options.seed !== 'number' || !Number.isFinite(options.seed))) {
    throw new Error(`${where}: options.seed must be a finite number; got ${describe(options.seed)}.`);
  }
  let lossFn: PerExampleLossFn;
  try {
    lossFn = perExampleLoss(model, options.loss);
  } catch (e) {
    throw new Error(`${where}: ${(e as Error).message}`);
  }
  let layers: Disturbance[] = [];
  let basePenalties: (PenaltyConfig | null)[] = [];
  if (options.method === 'deep') {
    layers = disturbanceLayers(model);
    if (layers.length === 0) {
      throw new Error(
        `${where}: method 'deep' needs Disturbance layers, but model '${userModel.name}' has none; ` +
          `add them with instrument(model) or layers.disturbance(), or use method 'pgd'/'fgsm'.`,
      );
    }
    basePenalties = resolveBasePenalties(layers, options.penalties, where);
    if (basePenalties.every((p) => p == null)) {
      throw new Error(`${where}: options.penalties switches every Disturbance layer off; nothing to attack.`);
    }
    for (let i = 0; i < model.inputs.length; i++) {
      const d0 = inputDisturbances(model, layers, i).filter((l) => basePenalties[layers.indexOf(l)] != null);
      const why = d0.length > 0 ? undisturbableInput(model, i) : null;
      if (why) {
        throw new Error(
          `${where}: Disturbance layer '${d0[0].name}' disturbs the input of model '${userModel.name}', but ${why}. ` +
            `Build the model without that hand-placed layer and call instrument(model): it puts the disturbance on the ` +
            `Embedding output instead. Or switch it off with options.penalties.`,
        );
      }
    }
    for (const l of layers) {
      const t = inboundInputTensors(l)[0]?.[0];
      if (t && t.dtype !== 'float32' && basePenalties[layers.indexOf(l)] != null) {
        throw new Error(`${where}: Disturbance layer '${l.name}' receives a ${t.dtype} tensor; disturbances need float32 neurons.`);
      }
    }
  }
  let sites: AttackSite[] | null = null;
  if (options.method !== 'deep') {
    const layerOption = (options as PgdTrainingOptions | FgsmTrainingOptions).layer;
    if (layerOption !== undefined || model.inputs.length > 1 || hasTokenInput(model)) {
      try {
        sites = attackSites(model, layerOption, where);
      } catch (e) {
        const why = undisturbableInput(model);
        throw new Error(`${(e as Error).message}${why ? ` (model '${userModel.name}': ${why}.)` : ''}`);
      }
    }
  }
  const prep: PreparedTraining = {
    model,
    userModel,
    options,
    method: options.method,
    alpha,
    lossFn,
    layers,
    basePenalties,
    lossRanks: model.outputs.map((o) => Math.max(1, (o.shape?.length ?? 2) - 1)),
    nIn: model.inputs.length,
    nOut: model.outputs.length,
    metricNames: metricNamesOf(model),
    skipNonFinite: options.skipNonFiniteUpdates ?? true,
    logObjective: options.method === 'deep' ? true : ((options as PgdTrainingOptions).logObjective ?? true),
    sites,
    pgdBase: null,
    inputAttack: null,
  };
  if (options.method !== 'deep') {
    prep.pgdBase = pgdLikeOptions(prep, 1, undefined, where); // validates epsilon, steps, … once
    if (!prep.sites) prep.inputAttack = prepareInputAttack(options, where);
  }
  else validateDeepOptions(options, where);
  return prep;
}

function validateDeepOptions(o: DeepTrainingOptions, where: string): void {
  // one validation for every deep-attack option (seed: per step; penalties: resolved above)
  resolveDeepAttackOptions(where, pickDeepAttackOptions(o, ['seed', 'penalties', 'onIteration']));
}

function metricNamesOf(model: tfl.LayersModel): string[] {
  return dedupedMetricsNames(model);
}

/** Sum of `v` over rows where `ok` (NaN-safe). */
function maskedSum(v: tf.Tensor1D, ok: tf.Tensor1D): tf.Scalar {
  return tf.sum(tf.where(ok, v, tf.zerosLike(v))) as tf.Scalar;
}

/** Mean of `v` over rows where `ok`, NaN if none. */
function maskedMean(v: tf.Tensor1D, ok: tf.Tensor1D): tf.Scalar {
  return tf.div(maskedSum(v, ok), tf.sum(tf.cast(ok, 'float32'))) as tf.Scalar;
}

/** A batch split as the train function receives it: [...inputs, ...targets, ...sampleWeights]. */
interface SplitBatch {
  xs: tf.Tensor[];
  ys: tf.Tensor[];
  rest: tf.Tensor[];
  /** Inputs / targets as the model takes them: one tensor, or a list for several inputs / outputs. */
  x: Tensors;
  y: Tensors;
}

/** Checks the batch before anything runs. Throws naming what is wrong. */
function checkBatch(data: tf.Tensor[], prep: PreparedTraining, where: string): SplitBatch {
  const {nIn, nOut} = prep;
  if (data.length < nIn + nOut) {
    throw new Error(`${where}: expected [${nIn > 1 ? `${nIn} inputs` : 'x'}, ${nOut > 1 ? `${nOut} targets` : 'y'}, ...sampleWeights], got ${data.length} tensor(s).`);
  }
  const xs = data.slice(0, nIn);
  const ys = data.slice(nIn, nIn + nOut);
  const rest = data.slice(nIn + nOut);
  const b = xs[0].shape[0];
  if (xs[0].rank < 1 || b === 0) throw new Error(`${where}: the batch has no examples (x shape [${xs[0].shape.join(', ')}]); give at least one row.`);
  for (const [i, t] of [...xs, ...ys].entries()) {
    if (t.shape[0] !== b) {
      const what = i < nIn ? (nIn > 1 ? `input ${i}` : 'x') : nOut > 1 ? `target ${i - nIn}` : 'y';
      throw new Error(`${where}: ${nIn > 1 ? 'input 0' : 'x'} has batch size ${b} (shape [${xs[0].shape.join(', ')}]) but ${what} has batch size ${t.shape[0]} (shape [${t.shape.join(', ')}]).`);
    }
  }
  for (let i = 0; i < rest.length; i++) {
    if (rest[i] != null && rest[i].shape[0] !== b) {
      throw new Error(`${where}: sample weights have ${rest[i].shape[0]} rows but the batch has ${b} examples.`);
    }
  }
  const all = [...xs, ...ys];
  const counts = tf.tidy(() =>
    tf.stack(all.map((t) => (t.dtype === 'float32' ? tf.sum(tf.cast(tf.logicalNot(tf.isFinite(t)), 'float32')) : tf.scalar(0)))).dataSync(),
  );
  const bad = all.map((_, i) => i).filter((i) => counts[i] > 0);
  if (bad.length > 0) {
    const label = (i: number) => (i < nIn ? (nIn > 1 ? `input ${i}` : 'x') : nOut > 1 ? `target ${i - nIn}` : 'y');
    const parts = bad.map((i) => `${label(i)} (${counts[i]} values)`);
    throw new Error(
      `${where}: the batch has non-finite values (NaN or ±Infinity) in ${parts.join(' and ')}; refusing to train on it (the weights were not changed). ` +
        `Clean the data, e.g. check tf.isFinite on your inputs.`,
    );
  }
  return {xs, ys, rest, x: nIn === 1 ? xs[0] : xs, y: nOut === 1 ? ys[0] : ys};
}

/** Runs `fn` with the optimizer's applyGradients refusing non-finite gradients. */
function guardGradients<T>(model: tfl.LayersModel, enabled: boolean, fn: () => T): {result: T; skipped: boolean} {
  if (!enabled) return {result: fn(), skipped: false};
  const opt = model.optimizer as unknown as {applyGradients: (g: unknown) => void};
  const hadOwn = Object.prototype.hasOwnProperty.call(opt, 'applyGradients');
  const prev = opt.applyGradients;
  let skipped = false;
  opt.applyGradients = function (this: unknown, grads: unknown) {
    const list: tf.Tensor[] = Array.isArray(grads)
      ? (grads as {tensor: tf.Tensor | null}[]).map((g) => g.tensor).filter((t): t is tf.Tensor => t != null)
      : Object.values(grads as Record<string, tf.Tensor | null>).filter((t): t is tf.Tensor => t != null);
    const ok = list.length === 0 || tf.tidy(() => tf.all(tf.stack(list.map((g) => tf.all(tf.isFinite(g))))).dataSync()[0] === 1);
    if (!ok) {
      skipped = true;
      return;
    }
    return prev.call(this, grads);
  };
  try {
    const result = fn();
    return {result, skipped};
  } finally {
    if (hadOwn) opt.applyGradients = prev;
    else delete (opt as {applyGradients?: unknown}).applyGradients;
  }
}

/** Sample weights of output `o` for the α-mixed 2B batch: [2α·w; 2(1−α)·w], shaped for that output's loss rank. */
function mixedWeights(prep: PreparedTraining, b: number, classWeights: tf.Tensor | undefined, o = 0): tf.Tensor {
  const a = prep.alpha;
  let w: tf.Tensor = tf.concat([tf.fill([b], 2 * a), tf.fill([b], 2 * (1 - a))]);
  if (classWeights != null) {
    const cw = tf.reshape(tf.cast(classWeights, 'float32'), [b]);
    w = tf.mul(w, tf.concat([cw, cw]));
  }
  const rank = prep.lossRanks[o];
  return rank > 1 ? tf.reshape(w, [2 * b, ...Array(rank - 1).fill(1)]) : w;
}

/** [...inputs, ...targets, ...one weight per output] of the α-mixed 2B batch. */
function mixedData(prep: PreparedTraining, batch: SplitBatch, advXs: tf.Tensor[]): tf.Tensor[] {
  const b = batch.xs[0].shape[0];
  const x2 = batch.xs.map((x, i) => tf.concat([x, advXs[i]]));
  const y2 = batch.ys.map((y) => tf.concat([y, y]));
  const w = batch.ys.map((_, o) => mixedWeights(prep, b, batch.rest[o], o));
  return [...x2, ...y2, ...w];
}

/**
 * The deep attack's inner maximisation counts as unbounded when its objective grew by more than
 * this factor during the solve (from the start point to the result, J > factor · max(1, |J₀|)).
 */
export const UNBOUNDED_OBJECTIVE_GROWTH = 1e4;
/** … or when a layer's mean disturbance norm exceeds this (or is not finite). */
export const UNBOUNDED_DISTURBANCE_NORM = 1e6;

/**
 * Refuses a deep attack whose inner maximisation exploded (Issue: regression losses with a
 * quadratic penalty): throws BEFORE the update, naming the layer whose disturbance grew most
 * relative to its clean activation, so the weights stay as they were.
 */
function checkBounded(
  prep: PreparedTraining,
  history: number[],
  stats: AttackStats,
  x: Tensors,
  penalties: (PenaltyConfig | null)[],
  where: string,
): void {
  const j0 = history[0];
  const j = stats.objective;
  const norms = prep.layers.map((l) => stats.norms[l.name]);
  const grew = Number.isFinite(j0) && (Number.isFinite(j) ? j > UNBOUNDED_OBJECTIVE_GROWTH * Math.max(1, Math.abs(j0)) : stats.nonFinite >= stats.batchSize);
  const huge = norms.some((n, i) => penalties[i] != null && (!Number.isFinite(n) || n > UNBOUNDED_DISTURBANCE_NORM));
  if (!grew && !huge) return;
  // Only on this error path: one clean forward pass for the activation norms, to name the layer.
  const active = prep.layers.map((_, i) => i).filter((i) => penalties[i] != null);
  let worst = active[0];
  let ratio = NaN;
  try {
    const shapes = active.map((i) => [stats.batchSize, ...(disturbanceSites(prep.model).find((site) => site.layer === prep.layers[i])?.inputShape.slice(1) as number[])]);
    const zeros = shapes.map((sh) => tf.zeros(sh));
    const r = forwardAdd(prep.model, active.map((i) => prep.layers[i]), x, zeros);
    const act = tf.tidy(() => tf.stack(r.inputs.map((a) => tf.mean(normPerExample(a, 'l2')))).dataSync());
    disposeAddResult(r);
    tf.dispose(zeros);
    let best = -Infinity;
    active.forEach((i, k) => {
      const q = !Number.isFinite(norms[i]) ? Infinity : norms[i] / Math.max(act[k], 1e-12);
      if (q > best) {
        best = q;
        worst = i;
      }
    });
    ratio = best;
  } catch {
    worst = active.reduce((a, i) => (!(norms[i] <= norms[a]) ? i : a), active[0]);
  }
  const layer = prep.layers[worst];
  const p = penalties[worst] as PenaltyConfig;
  const lambda = p.kind === 'quadratic' ? p.lambda : (p.lambda ?? 100);
  const quadraticLoss = prep.options.loss === undefined && hasQuadraticLoss(prep.model);
  throw new Error(
    `${where}: the inner maximisation of the deep attack looks unbounded: its objective grew from ${fmt(j0)} to ${fmt(j)} ` +
      `and the disturbance of layer '${layer.name}' reached a mean norm of ${fmt(norms[worst])}` +
      (Number.isFinite(ratio) ? ` (${fmt(ratio)}× its clean activation)` : '') +
      `. No update was applied; the weights are as they were before this batch. The loss grows faster along '${layer.name}' ` +
      `than its penalty (${p.kind}, λ = ${lambda}) can bound: give it a larger λ (e.g. {kind: 'quadratic', lambda: ${lambda * 10}}) ` +
      `or a ball budget (e.g. {kind: 'l2', epsilon: 0.1} with project: true), via instrument(model, {...}) or options.penalties` +
      (prep.options.loss !== undefined && !quadraticLoss ? ', or drop options.loss (the default attack loss takes the root of a squared error)' : '') +
      '.',
  );
}

function fmt(v: number): string {
  return Number.isFinite(v) ? (Math.abs(v) >= 1e4 || (Math.abs(v) < 1e-3 && v !== 0) ? v.toExponential(2) : String(Math.round(v * 1000) / 1000)) : String(v);
}

/**
 * The Disturbance layers of a deep-trained model whose input — the activation they disturb — is 0
 * in all but a fraction `maxActive` (default 0.001) of its entries over the batch (one clean
 * forward pass), with that fraction: the units before them have died (e.g. every ReLU of a layer
 * with a negative bias), so almost nothing upstream can learn any more and the model is nearly a
 * constant function of its input there. Layers that disturb a model input, and layers switched off
 * (penalty null), are not checked. Empty for PGD/FGSM. @internal
 */
export function deadDisturbanceLayers(prep: PreparedTraining, data: tf.Tensor[], where: string, maxActive = 1e-3): {layer: Disturbance; active: number}[] {
  if (prep.method !== 'deep') return [];
  const checked = prep.layers.filter((l, i) => prep.basePenalties[i] != null && !disturbsModelInput(l));
  if (checked.length === 0) return [];
  const {x, xs} = checkBatch(data, prep, where);
  const b = xs[0].shape[0];
  const sites = disturbanceSites(prep.model);
  const zeros = checked.map((l) => tf.zeros([b, ...((sites.find((s) => s.layer === l) as DisturbanceSite).inputShape.slice(1) as number[])]));
  let active: Float32Array | Int32Array | Uint8Array;
  try {
    const r = forwardAdd(prep.model, checked, x, zeros);
    active = tf.tidy(() => tf.stack(r.inputs.map((a) => tf.mean(tf.cast(tf.notEqual(a, 0), 'float32')))).dataSync());
    disposeAddResult(r);
  } finally {
    tf.dispose(zeros);
  }
  return checked.map((layer, i) => ({layer, active: active[i]})).filter((d) => d.active <= maxActive);
}

/** True when the layer's input is a model input (an InputLayer's output). */
function disturbsModelInput(layer: Disturbance): boolean {
  const node = layer.inboundNodes[0];
  return node != null && node.inboundLayers.length > 0 && node.inboundLayers[0].getClassName() === 'InputLayer';
}

/** Options of {@link runAdversarialStep}. @internal */
export interface StepContext {
  strength: number;
  seed?: number;
  where: string;
}

function emptyStats(prep: PreparedTraining, b: number, s: number): AttackStats {
  const norms: Record<string, number> = {};
  if (prep.method === 'deep') for (const l of prep.layers) norms[l.name] = 0;
  else norms.input = 0;
  const stats: AttackStats = {
    strength: s,
    batchSize: b,
    attacked: false,
    objective: NaN,
    iterations: 0,
    gradientEvaluations: 0,
    norms,
    nonFinite: 0,
    skippedUpdate: false,
    adversarialLoss: NaN,
  };
  if (prep.alpha > 0 && prep.alpha < 1) stats.cleanLoss = NaN;
  if (prep.method !== 'deep') stats.epsilon = 0;
  return stats;
}

/**
 * One adversarial step on `data = [x, y, ...sampleWeights]`: checks the batch,
 * attacks, sanitises and calls `original` on the adversarial batch. Returns
 * the outputs of `original` (owned by the caller) and the statistics. Every
 * other tensor is disposed.
 *
 * @internal
 */
export function runAdversarialStep(
  prep: PreparedTraining,
  data: tf.Tensor[],
  original: TrainFunction,
  ctx: StepContext,
): {outs: tf.Tensor[]; stats: AttackStats} {
  const batch = checkBatch(data, prep, ctx.where);
  const s = ctx.strength;
  const {x, y, xs, ys, rest} = batch;
  const b = xs[0].shape[0];
  const stats = emptyStats(prep, b, s);
  const model = prep.model;
  const asInputs = (ts: tf.Tensor[]): Tensors => (ts.length === 1 ? ts[0] : ts);

  if (s === 0 || prep.alpha === 1) {
    // No attack: exactly the plain tfjs step.
    const {result, skipped} = guardGradients(model, prep.skipNonFinite && prep.alpha !== 1, () => original(data));
    stats.skippedUpdate = skipped;
    if (prep.alpha !== 1) stats.adversarialLoss = result[0].dataSync()[0];
    return {outs: result, stats};
  }
  const pgdNow = prep.pgdBase ? scaledPgd(prep, s, ctx.seed) : null;
  if (pgdNow) stats.epsilon = pgdNow.epsilon;

  const mixed = prep.alpha > 0;
  const outs = tf.tidy(() => {
    let update: () => tf.Tensor[];
    let splitLosses: (() => tf.Tensor1D) | null = null; // per-example losses of the 2B mixed batch (inference mode)
    /** Update with the given Disturbance layers adding `ds` (deep, and PGD/FGSM on sites). */
    const disturbedUpdate = (layers: Disturbance[], ds: tf.Tensor[]) => {
      if (!mixed) {
        update = () => withModes(layers, 'add', ds, () => original(data));
      } else {
        const dMix = ds.map((d) => tf.concat([tf.zerosLike(d), d]));
        const mixData = mixedData(prep, batch, xs);
        update = () => withModes(layers, 'add', dMix, () => original(mixData));
        splitLosses = () =>
          withModes(layers, 'add', dMix, () =>
            prep.lossFn(asInputs(mixData.slice(prep.nIn, prep.nIn + prep.nOut)), model.apply(asInputs(mixData.slice(0, prep.nIn)), {training: false}) as Tensors),
          );
      }
    };
    if (prep.method === 'deep') {
      const o = prep.options as DeepTrainingOptions;
      const penalties = prep.basePenalties.map((p) => (p == null ? null : scalePenalty(p, s)));
      // Every deepAttack option passes through, except those the step owns.
      // the per-layer violation is not used here: not computed
      const r = deepAttackImpl(model, x, y, {...pickDeepAttackOptions(o, ['seed', 'penalties', 'onIteration']), penalties, seed: ctx.seed}, {violation: false});
      stats.iterations = r.iterations;
      stats.gradientEvaluations = r.gradientEvaluations;
      // Sanitise: rows with a non-finite disturbance (should not happen: CG falls back) get d = 0.
      const ok = rowsFiniteAll(r.disturbances, b);
      const jOk = tf.logicalAnd(ok, tf.isFinite(r.objective)) as tf.Tensor1D;
      // Mean ‖dℓ‖ with a bad row counted as 0 (what the update will use).
      const normTensors = r.disturbances.map((d, i) =>
        tf.div(maskedSum(normPerExample(d, penalties[i]?.kind ?? prep.layers[i].penalty.kind), ok), b),
      );
      const read = tf.stack([maskedMean(r.objective, jOk), tf.sub(b, tf.sum(tf.cast(ok, 'float32'))), ...normTensors]).dataSync();
      stats.objective = read[0];
      stats.nonFinite = r.nonFinite + read[1];
      prep.layers.forEach((l, i) => (stats.norms[l.name] = read[2 + i]));
      stats.attacked = true;
      checkBounded(prep, r.history, stats, x, penalties, ctx.where);
      // Only when needed (rare): a row select per layer.
      const ds = read[1] > 0 ? r.disturbances.map((d) => whereRows(ok, d, tf.zerosLike(d))) : r.disturbances;
      disturbedUpdate(prep.layers, ds);
    } else if (prep.sites) {
      const o = pgdNow as ResolvedPgdOptions;
      const r = runSitePgd(model, prep.sites, x, y, o, prep.logObjective);
      stats.iterations = o.steps * o.restarts;
      stats.gradientEvaluations = r.gradientEvaluations;
      let ok = tf.cast(tf.ones([b]), 'bool') as tf.Tensor1D;
      for (const d of r.disturbances) ok = tf.logicalAnd(ok, rowsFinite(d)) as tf.Tensor1D;
      if (r.loss) ok = tf.logicalAnd(ok, tf.isFinite(r.loss)) as tf.Tensor1D;
      const norms = r.disturbances.map((d) => tf.div(maskedSum(normPerExample(d, o.norm === 'l2' ? 'l2' : 'linf'), ok), b));
      const objective = r.loss ? maskedMean(r.loss, ok) : tf.scalar(NaN);
      const read = tf.stack([objective, tf.sub(b, tf.sum(tf.cast(ok, 'float32'))), ...norms]).dataSync();
      stats.objective = read[0];
      stats.nonFinite = read[1];
      delete stats.norms.input;
      prep.sites.forEach((site, i) => (stats.norms[site.layer.name] = read[2 + i]));
      stats.attacked = true;
      const ds = read[1] > 0 ? r.disturbances.map((d) => whereRows(ok, d, tf.zerosLike(d))) : r.disturbances;
      disturbedUpdate(prep.sites.map((site) => site.layer), ds);
    } else {
      const attack = prep.inputAttack as PreparedAttack;
      const r = attack.run(model, x as tf.Tensor, y as tf.Tensor, {epsilon: stats.epsilon, seed: ctx.seed, wantObjective: prep.logObjective});
      stats.iterations = r.iterations;
      stats.gradientEvaluations = r.gradientEvaluations;
      let ok = rowsFinite(r.adversarial);
      if (r.objective) ok = tf.logicalAnd(ok, tf.isFinite(r.objective)) as tf.Tensor1D;
      const x0 = xs[0];
      const xf = x0.dtype === 'float32' ? x0 : tf.cast(x0, 'float32');
      const norm = tf.div(maskedSum(normPerExample(tf.sub(r.adversarial, xf), attack.norm === 'l2' ? 'l2' : 'linf'), ok), b);
      const objective = r.objective ? maskedMean(r.objective, ok) : tf.scalar(NaN);
      const read = tf.stack([objective, tf.sub(b, tf.sum(tf.cast(ok, 'float32'))), norm]).dataSync();
      stats.objective = read[0];
      stats.nonFinite = read[1];
      stats.norms.input = read[2];
      stats.attacked = true;
      // A bad row falls back to the clean input (only computed when needed).
      const adv = read[1] > 0 ? whereRows(ok, r.adversarial, xf) : r.adversarial;
      if (!mixed) {
        update = () => original([adv, ...ys, ...rest]);
      } else {
        const mixData = mixedData(prep, {...batch, xs: [xf]}, [adv]);
        update = () => original(mixData);
        splitLosses = () => prep.lossFn(asInputs(mixData.slice(1, 1 + prep.nOut)), model.apply(mixData[0], {training: false}) as Tensors);
      }
    }
    const runUpdate = update!;
    if (splitLosses) {
      // Before the update, i.e. at the weights the update's loss is computed at.
      const fn = splitLosses as () => tf.Tensor1D;
      const l = tf.tidy(() => {
        const per = fn();
        return tf.stack([tf.mean(tf.slice(per, [0], [b])), tf.mean(tf.slice(per, [b], [b]))]).dataSync();
      });
      stats.cleanLoss = l[0];
      stats.adversarialLoss = l[1];
    }
    const {result, skipped} = guardGradients(model, prep.skipNonFinite, runUpdate);
    stats.skippedUpdate = skipped;
    if (!splitLosses) stats.adversarialLoss = result[0].dataSync()[0];
    return result;
  });
  return {outs, stats};
}

/** Flat log keys of a step's statistics, as written into `fit`'s logs. */
export function statsToLogs(stats: AttackStats): Record<string, number> {
  const logs: Record<string, number> = {
    adv_strength: stats.strength,
    adv_objective: stats.objective,
    adv_loss: stats.adversarialLoss,
    adv_iterations: stats.iterations,
    adv_grad_evals: stats.gradientEvaluations,
    adv_nonfinite: stats.nonFinite,
    adv_skipped_updates: stats.skippedUpdate ? 1 : 0,
  };
  if (stats.cleanLoss !== undefined) logs.adv_clean_loss = stats.cleanLoss;
  if (stats.epsilon !== undefined) logs.adv_epsilon = stats.epsilon;
  for (const [name, v] of Object.entries(stats.norms)) logs[`adv_norm_${name}`] = v;
  return logs;
}

/**
 * Refuses an option name `adversarialStep` does not know, naming the closest valid one. A callback-only
 * option (`schedule`, …) gets its own message: in a custom loop the caller passes `strength` instead.
 */
function checkStepKeys(options: AdversarialStepOptions, where: string): void {
  if (options == null || typeof options !== 'object' || !METHODS.includes(options.method as (typeof METHODS)[number])) return; // prepare explains
  const callbackOnly = Object.keys(options).find((k) => (CALLBACK_ONLY_KEYS as readonly string[]).includes(k));
  if (callbackOnly !== undefined) {
    throw new Error(`${where}: option '${callbackOnly}' belongs to adversarialCallback (fit); in a custom loop with adversarialStep, pass the step's 'strength' (see schedules: strengthAt) instead.`);
  }
  checkKnownKeys(options, [...trainingOptionKeys(options.method), 'strength'], `${where} (method '${options.method}')`);
}

/**
 * One adversarial training step for custom training loops: attacks the batch
 * (inference mode, weights untouched), then performs ONE update with the
 * model's compiled loss, optimizer and metrics at the adversarial point —
 * exactly what `model.fit` with {@link adversarialCallback} does per batch.
 *
 * ```ts
 * for (const [xb, yb] of batches) {
 *   const r = adversarialStep(model, xb, yb, {method: 'pgd', epsilon: 0.1, steps: 7, seed: step++});
 *   console.log(r.loss, r.metrics.acc, r.attack.objective);
 * }
 * ```
 *
 * @param model A compiled single-input, single-output model (`tf.sequential`
 *   or `tf.model`); for `'deep'` it needs Disturbance layers (see `instrument`).
 * @param x Inputs `[B, ...inputShape]` (not disposed).
 * @param y Targets `[B, ...]` in the format of the compiled loss (not disposed).
 * @param options Method and options; `strength` scales the attack (default 1);
 *   `seed` is used as given, so pass a different one per step for fresh random starts.
 * @returns Plain numbers: the training loss and metrics of the update and the attack statistics.
 * @throws Before any weight changes: uncompiled model, invalid options, `deep`
 *   without Disturbance layers, a disturbed integer/embedding input, x/y shape
 *   mismatch, non-finite values in x or y, an unknown option name (with the
 *   closest valid one).
 */
export function adversarialStep(model: tfl.LayersModel, x: tf.Tensor, y: tf.Tensor, options: AdversarialStepOptions): AdversarialStepResult {
  const where = 'adversarialStep';
  checkStepKeys(options, where);
  const prep = prepareAdversarialTraining(model, options, where);
  if (!(x instanceof tf.Tensor) || !(y instanceof tf.Tensor)) {
    throw new Error(`${where}: x and y must be tensors; got ${typeof x} and ${typeof y}.`);
  }
  try {
    assertCompatibleXY(prep.model, x, y);
  } catch (e) {
    throw new Error(`${where}: ${(e as Error).message}`);
  }
  const strength = checkStrength(options.strength ?? 1, where);
  const original = originalTrainFunction(prep.model);
  const {outs, stats} = runAdversarialStep(prep, [x, y], original, {strength, seed: options.seed, where});
  try {
    const values = outs.map((t) => t.dataSync()[0]);
    const metrics: Record<string, number> = {};
    prep.metricNames.slice(1).forEach((name, i) => {
      if (i + 1 < values.length) metrics[name] = values[i + 1];
    });
    return {loss: values[0], metrics, attack: stats, logs: statsToLogs(stats)};
  } finally {
    tf.dispose(outs);
  }
}
