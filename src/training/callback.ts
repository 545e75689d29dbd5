/**
 * `adversarialCallback(options)`: adversarial training through the ordinary
 * `model.fit(x, y, {callbacks: [cb]})` and `model.fitDataset(ds, {callbacks: [cb]})`.
 *
 * How it works: importing this package wraps tfjs-layers' per-batch train
 * function once (see `hook.ts`). In `onTrainBegin` the callback validates the
 * model and options and attaches its state to the model being trained; from
 * then on every batch runs {@link runAdversarialStep} (attack in inference
 * mode, then the model's own compiled update at the adversarial point). The
 * state is removed in `onTrainEnd`, when a step throws, and is ignored (and
 * removed) if it is found outside the `fit` that attached it.
 *
 * Logs (numbers), per batch in the batch logs that every callback's
 * `onBatchEnd` sees, and per epoch in the epoch logs and `history.history`:
 *
 * | key                     | per batch                                        | per epoch              |
 * |-------------------------|--------------------------------------------------|------------------------|
 * | `adv_strength`          | schedule strength s                              | s                      |
 * | `adv_objective`         | mean attack objective J (deep eq. 11; PGD/FGSM: loss at x_adv) | mean (by examples) |
 * | `adv_loss`              | adversarial loss of the update                   | mean (by examples)     |
 * | `adv_clean_loss`        | clean loss (only when 0 < cleanWeight < 1)       | mean (by examples)     |
 * | `adv_iterations`        | CG iterations (PGD/FGSM: steps)                  | mean per batch         |
 * | `adv_grad_evals`        | batched gradient evaluations of the attack       | mean per batch         |
 * | `adv_norm_<layer>`      | mean ‖dℓ‖ of that Disturbance layer (`adv_norm_input` for PGD/FGSM) | mean (by examples) |
 * | `adv_epsilon`           | PGD/FGSM radius used                             | value                  |
 * | `adv_nonfinite`         | examples whose attack met NaN/Inf (fell back)    | **sum** over the epoch |
 * | `adv_skipped_updates`   | 1 if the update was skipped (non-finite gradient)| **sum** over the epoch |
 * | `val_adv_acc`           | —                                                | PGD accuracy on `validateAdversarial` data |
 * | `fgsm_guard_pgd_acc`    | —                                                | PGD accuracy of the FGSM guard |
 * | `fgsm_guard_collapsed`  | —                                                | 1 when the guard fired |
 *
 * Callbacks listed *before* this one in `callbacks` see the batch keys too
 * (they are written during the step, before any `onBatchEnd`); only callbacks
 * after it see the epoch keys, and tfjs' History always does.
 *
 * @packageDocumentation
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import {AttackNorm, pgdAttack} from '../attacks/pgd.js';
import {assertCompatibleXY} from '../objective/loss.js';
import {fitHistory, isTraining} from '../model/internals.js';
import {attachState, detachState, isHooked, TrainFunction, TrainHookState} from './hook.js';
import {scheduleFunction, StrengthSchedule, strengthAt} from './schedules.js';
import {
  AdversarialTrainingOptions,
  deadDisturbanceLayers,
  FgsmTrainingOptions,
  PreparedTraining,
  prepareAdversarialTraining,
  runAdversarialStep,
  statsToLogs,
} from './train_step.js';
import type {DeepTrainingOptions, PgdTrainingOptions} from './train_step.js';
import {checkKnownKeys} from '../util/options.js';

/** Adversarial validation at the end of every epoch: PGD accuracy at ε on the given data. */
export interface ValidateAdversarialOptions {
  /** Validation inputs (not disposed; `fit`'s validationData does not reach callbacks, so pass it here). */
  x: tf.Tensor;
  /** Validation targets (one-hot, sparse indices, or binary). */
  y: tf.Tensor;
  /** PGD radius ε ≥ 0 (full ε, independent of the schedule). */
  epsilon: number;
  /** Threat model. Default `'linf'`. */
  norm?: AttackNorm;
  /** PGD steps. Default 10. */
  steps?: number;
  /** PGD step size. Default 2.5·ε/steps. */
  stepSize?: number;
  /** Random restarts. Default 1. */
  restarts?: number;
  /** Valid input range. */
  clip?: [number, number];
  /** Seed of the random starts (the same every epoch). */
  seed?: number;
  /** Batch size of the evaluation. Default 128. */
  batchSize?: number;
}

/**
 * The "catastrophic overfitting" guard of FGSM training (Wong et al. 2020):
 * at every epoch end a small PGD attack measures robust accuracy on a few
 * examples; when it drops by `maxDrop` or more below the best value seen in
 * this `fit`, the guard warns (`console.warn`), logs `fgsm_guard_collapsed = 1`
 * and, with `stopTraining`, stops training.
 */
export interface FgsmGuardOptions {
  /** Guard inputs; default: `validateAdversarial.x`. */
  x?: tf.Tensor;
  /** Guard targets; default: `validateAdversarial.y`. */
  y?: tf.Tensor;
  /** Use only the first `examples` rows. Default 512. */
  examples?: number;
  /** PGD radius; default the training ε (full strength, not scheduled). */
  epsilon?: number;
  /** PGD steps. Default 10. */
  steps?: number;
  /** Absolute drop of PGD accuracy (vs the best so far) that counts as a collapse. Default 0.2. */
  maxDrop?: number;
  /** Stop training (model.stopTraining = true) on collapse. Default false. */
  stopTraining?: boolean;
  /** Seed of the PGD random start (the same every epoch). */
  seed?: number;
}

/** Options of {@link adversarialCallback}: a method's options plus schedule, validation and guard. */
export type AdversarialCallbackOptions = AdversarialTrainingOptions & {
  /**
   * Strength schedule (ε / λ warm-up), see `schedules.ts`: `{warmupEpochs: N}` (one strength per
   * epoch), `{warmupSteps: N}` (ramped every batch over the first N optimizer steps of the fit,
   * counted from `initialStep`), or a function `(epoch, step) => s`. Default: full strength.
   */
  schedule?: StrengthSchedule;
  /** Adversarial validation accuracy (`val_adv_acc`) at every epoch end. */
  validateAdversarial?: ValidateAdversarialOptions;
  /** FGSM catastrophic-overfitting guard (method `'fgsm'` only). `true` uses the defaults and the validateAdversarial data. */
  fgsmGuard?: boolean | FgsmGuardOptions;
  /**
   * Number of the first training step of each `fit` in the attack's random stream (an integer ≥ 0;
   * default 0). With `seed`, step k of a fit draws its random start from the stream of step
   * `initialStep + k`; a run interrupted after b batches of an epoch and resumed with a fit over the
   * remaining batches and `initialStep: b` therefore draws exactly the random starts of an
   * uninterrupted epoch. It is also the first step a `schedule` sees (`{warmupSteps}` or a
   * function `(epoch, step) => s`): a fit resumed at step b continues the warm-up where it stopped.
   */
  initialStep?: number;
};

/** Top-level keys of {@link AdversarialCallbackOptions} that belong to the callback, not to the attack method. */
export const CALLBACK_ONLY_KEYS = Object.freeze(['schedule', 'validateAdversarial', 'fgsmGuard', 'initialStep'] as const);

/** The top-level option names of each method (TypeScript checks below that they cover every declared option). */
const METHOD_KEYS = {
  deep: ['method', 'cleanWeight', 'seed', 'loss', 'skipNonFiniteUpdates', 'solver', 'maxIterations', 'maxGradientEvaluations', 'tolerance', 'init', 'initScale', 'project', 'stepSize', 'penalties', 'conjugate', 'space', 'firstStep', 'anneal'],
  pgd: ['method', 'cleanWeight', 'seed', 'loss', 'skipNonFiniteUpdates', 'layer', 'logObjective', 'epsilon', 'norm', 'steps', 'stepSize', 'randomStart', 'restarts', 'clip'],
  fgsm: ['method', 'cleanWeight', 'seed', 'loss', 'skipNonFiniteUpdates', 'layer', 'epsilon', 'clip', 'randomStart', 'alpha', 'logObjective'],
} as const;
/** Compile-time check: a new option of a training method must be added to METHOD_KEYS (else it would be refused). */
type Covers<T, L extends readonly string[]> = [Exclude<keyof T, L[number]>] extends [never] ? true : Exclude<keyof T, L[number]>;
type CallbackOnlyOptions = Record<Exclude<keyof AdversarialCallbackOptions, 'method' | 'cleanWeight' | 'seed' | 'loss' | 'skipNonFiniteUpdates'>, unknown>;
const METHOD_KEYS_COVER_EVERY_OPTION: [
  Covers<DeepTrainingOptions, typeof METHOD_KEYS.deep>,
  Covers<PgdTrainingOptions, typeof METHOD_KEYS.pgd>,
  Covers<FgsmTrainingOptions, typeof METHOD_KEYS.fgsm>,
  Covers<CallbackOnlyOptions, typeof CALLBACK_ONLY_KEYS>,
] = [true, true, true, true];
void METHOD_KEYS_COVER_EVERY_OPTION;
const VALIDATE_ADVERSARIAL_KEYS = ['x', 'y', 'epsilon', 'norm', 'steps', 'stepSize', 'restarts', 'clip', 'seed', 'batchSize'];
const FGSM_GUARD_KEYS = ['x', 'y', 'examples', 'epsilon', 'steps', 'maxDrop', 'stopTraining', 'seed'];

/** 32-bit seed from a user seed and a step counter (FNV-1a), so each step gets its own reproducible stream. */
function deriveSeed(seed: number, step: number): number {
  const s = `${seed}/${step}`;
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

/** Deep training checks for dead Disturbance-layer inputs every this many optimizer steps (one clean forward pass). */
const DEAD_CHECK_EVERY = 25;

/** Keys summed (not averaged) over an epoch. */
const SUM_KEYS = new Set(['adv_nonfinite', 'adv_skipped_updates']);
/** Keys averaged per batch (not weighted by batch size). */
const PER_BATCH_KEYS = new Set(['adv_iterations', 'adv_grad_evals']);

/** Running epoch aggregates of the batch logs. */
class EpochAccumulator {
  private sums = new Map<string, number>();
  private weights = new Map<string, number>();
  private order: string[] = [];

  add(logs: Record<string, number>, batchSize: number): void {
    for (const [k, v] of Object.entries(logs)) {
      if (!this.sums.has(k)) {
        this.sums.set(k, 0);
        this.weights.set(k, 0);
        this.order.push(k);
      }
      if (SUM_KEYS.has(k)) {
        this.sums.set(k, (this.sums.get(k) as number) + v);
        continue;
      }
      if (!Number.isFinite(v)) continue; // not measured in this batch
      const w = PER_BATCH_KEYS.has(k) ? 1 : batchSize;
      this.sums.set(k, (this.sums.get(k) as number) + v * w);
      this.weights.set(k, (this.weights.get(k) as number) + w);
    }
  }

  result(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const k of this.order) {
      const s = this.sums.get(k) as number;
      out[k] = SUM_KEYS.has(k) ? s : (this.weights.get(k) as number) > 0 ? s / (this.weights.get(k) as number) : NaN;
    }
    return out;
  }
}

/** Number of correct predictions: argmax for one-hot/sparse multi-class targets, threshold 0.5 for one output unit. */
function correct(yTrue: tf.Tensor, yPred: tf.Tensor): tf.Scalar {
  return tf.tidy(() => {
    const k = yPred.shape[yPred.rank - 1];
    let hits: tf.Tensor;
    if (yPred.rank >= 2 && k > 1) {
      const pred = tf.argMax(yPred, -1);
      const truth =
        yTrue.rank === yPred.rank && yTrue.shape[yTrue.rank - 1] === k ? tf.argMax(yTrue, -1) : tf.cast(tf.reshape(yTrue, pred.shape), 'int32');
      hits = tf.equal(pred, truth);
    } else {
      hits = tf.equal(tf.greater(tf.reshape(yPred, [-1]), 0.5), tf.greater(tf.reshape(yTrue, [-1]), 0.5));
    }
    return tf.sum(tf.cast(hits, 'float32')) as tf.Scalar;
  });
}

/**
 * PGD accuracy of `model` on (x, y): the fraction of examples still classified
 * correctly after a PGD attack. Batched; leaves no tensors behind.
 */
async function pgdAccuracy(
  model: tfl.LayersModel,
  x: tf.Tensor,
  y: tf.Tensor,
  o: {epsilon: number; norm?: AttackNorm; steps?: number; stepSize?: number; restarts?: number; clip?: [number, number]; seed?: number; batchSize?: number; limit?: number},
): Promise<number> {
  const n = Math.min(x.shape[0], o.limit ?? Infinity);
  const bs = o.batchSize ?? 128;
  let hits = 0;
  for (let start = 0; start < n; start += bs) {
    const size = Math.min(bs, n - start);
    const h = tf.tidy(() => {
      const xb = tf.slice(x, start, size);
      const yb = tf.slice(y, start, size);
      const adv = pgdAttack(model, xb, yb, {
        epsilon: o.epsilon,
        norm: o.norm,
        steps: o.steps ?? 10,
        stepSize: o.stepSize,
        restarts: o.restarts,
        clip: o.clip,
        seed: o.seed,
      });
      return correct(yb, model.apply(adv, {training: false}) as tf.Tensor);
    });
    hits += (await h.data())[0];
    h.dispose();
  }
  return n > 0 ? hits / n : NaN;
}

function describe(v: unknown): string {
  if (typeof v === 'function') return 'a function';
  if (v instanceof tf.Tensor) return `a tensor of shape [${v.shape.join(', ')}]`;
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
}

/**
 * A tfjs `Callback` that turns `model.fit` / `model.fitDataset` into
 * adversarial training. Create it with {@link adversarialCallback}.
 *
 * Pass it in an array of `tf.Callback` objects (`[cb]`, or `[cb, new
 * tf.CustomCallback({...})]`): tfjs converts plain-object callbacks only when
 * the first element of the array is a plain object, in which case class-based
 * callbacks in the same array are not called properly. One instance serves
 * one `fit` at a time (it may be reused for later fits).
 */
export class AdversarialCallback extends tfl.Callback {
  /** The options this callback was created with. */
  readonly options: AdversarialCallbackOptions;
  private readonly strengthOf: (epoch: number, step: number) => number;
  private prep: PreparedTraining | null = null;
  private trainingModelRef: tfl.LayersModel | null = null;
  /** The model of the fit that called setModel and has not reached onTrainBegin yet. */
  private pendingModel: tfl.LayersModel | null = null;
  private historyRef: unknown = null;
  private epoch = 0;
  private batch = 0;
  private globalStep = 0;
  private strength = 1;
  /** Optimizer steps of the current fit, and whether the dead-layer warning was given in it. */
  private fitSteps = 0;
  private deadWarned = false;
  private batchLogs: Record<string, unknown> | null = null;
  private accumulator = new EpochAccumulator();
  private bestGuardAccuracy = -Infinity;
  private readonly hookState: TrainHookState;

  constructor(options: AdversarialCallbackOptions) {
    super();
    if (options == null || typeof options !== 'object') {
      throw new Error(`adversarialCallback: options must be an object such as {method: 'pgd', epsilon: 0.1}; got ${describe(options)}.`);
    }
    if (!['deep', 'pgd', 'fgsm'].includes(options.method)) {
      throw new Error(`adversarialCallback: options.method must be one of 'deep', 'pgd', 'fgsm'; got ${describe(options.method)}.`);
    }
    this.options = options;
    checkKnownKeys(options, [...METHOD_KEYS[options.method], ...CALLBACK_ONLY_KEYS], `adversarialCallback (method '${options.method}')`);
    if (options.schedule != null && typeof options.schedule === 'object') checkKnownKeys(options.schedule, ['warmupEpochs', 'warmupSteps', 'start'], 'adversarialCallback: options.schedule');
    if (options.validateAdversarial != null) checkKnownKeys(options.validateAdversarial, VALIDATE_ADVERSARIAL_KEYS, 'adversarialCallback: options.validateAdversarial');
    if (options.fgsmGuard != null && typeof options.fgsmGuard === 'object') checkKnownKeys(options.fgsmGuard, FGSM_GUARD_KEYS, 'adversarialCallback: options.fgsmGuard');
    this.strengthOf = scheduleFunction(options.schedule, 'adversarialCallback: options.schedule');
    const v = options.validateAdversarial;
    if (v !== undefined) {
      if (v == null || !(v.x instanceof tf.Tensor) || !(v.y instanceof tf.Tensor)) {
        throw new Error('adversarialCallback: options.validateAdversarial needs tensors x and y (the validation data).');
      }
      if (typeof v.epsilon !== 'number' || !Number.isFinite(v.epsilon) || v.epsilon < 0) {
        throw new Error(`adversarialCallback: options.validateAdversarial.epsilon must be a finite number >= 0; got ${describe(v.epsilon)}.`);
      }
    }
    if (options.initialStep !== undefined && !(Number.isInteger(options.initialStep) && options.initialStep >= 0)) {
      throw new Error(`adversarialCallback: options.initialStep must be an integer >= 0 (the number of the first step); got ${describe(options.initialStep)}.`);
    }
    if (options.fgsmGuard !== undefined && options.fgsmGuard !== false) {
      if (options.method !== 'fgsm') {
        throw new Error(`adversarialCallback: options.fgsmGuard guards FGSM training; it needs method 'fgsm', got '${options.method}'.`);
      }
      const g = options.fgsmGuard === true ? {} : options.fgsmGuard;
      const gx = g.x ?? v?.x;
      const gy = g.y ?? v?.y;
      if (!(gx instanceof tf.Tensor) || !(gy instanceof tf.Tensor)) {
        throw new Error('adversarialCallback: options.fgsmGuard needs data: give fgsmGuard.x/y or validateAdversarial.x/y.');
      }
      const drop = g.maxDrop ?? 0.2;
      if (typeof drop !== 'number' || !(drop > 0 && drop <= 1)) {
        throw new Error(`adversarialCallback: options.fgsmGuard.maxDrop must be a number in (0, 1]; got ${describe(g.maxDrop)}.`);
      }
    }
    this.hookState = {
      version: 1,
      step: (model, data, original) => this.step(model, data, original),
      isStale: (model) => this.isStale(model),
    };
  }

  /**
   * Called by `fit` before training starts. One instance serves one fit at a time: while another
   * model's fit that uses this instance is running (or about to start), this throws, so that the
   * second fit fails at once instead of silently taking over the callback from the first.
   */
  override setModel(model: tfl.LayersModel): void {
    const owner = this.trainingModelRef ?? this.pendingModel;
    if (owner != null && owner !== model && (owner as unknown as {isTraining?: boolean}).isTraining === true) {
      throw new Error(
        `adversarialCallback: this callback instance is already in use by the running fit of model '${owner.name}'; ` +
          `create one callback per fit (adversarialCallback(options) again) to train model '${model.name}' at the same time.`,
      );
    }
    this.pendingModel = model;
    super.setModel(model);
  }

  /** The strength s of the schedule at `epoch` and optimizer `step` (validated). */
  strengthAt(epoch: number, step = 0): number {
    return strengthAt((e: number, t: number) => this.strengthOf(e, t), epoch, 'adversarialCallback: options.schedule', step);
  }

  /** True unless this callback is attached to `model` within the fit that is running now. */
  private isStale(model: tfl.LayersModel): boolean {
    return this.prep == null || model !== this.trainingModelRef || fitHistory(model) !== this.historyRef || !isTraining(model);
  }

  private step(model: tfl.LayersModel, data: tf.Tensor[], original: TrainFunction): tf.Tensor[] {
    const prep = this.prep;
    if (prep == null || this.isStale(model)) {
      // Left over from a fit that ended without onTrainEnd (another callback threw): not ours any more.
      detachState(model, this.hookState);
      return original(data);
    }
    const where = `adversarialCallback (epoch ${this.epoch}, batch ${this.batch})`;
    try {
      const seed = this.options.seed === undefined ? undefined : deriveSeed(this.options.seed, this.globalStep);
      this.strength = this.strengthAt(this.epoch, this.globalStep);
      const {outs, stats} = runAdversarialStep(prep, data, original, {strength: this.strength, seed, where});
      this.globalStep++;
      this.fitSteps++;
      if (!this.deadWarned && this.fitSteps % DEAD_CHECK_EVERY === 0) this.checkDead(prep, data, where);
      const logs = statsToLogs(stats);
      this.accumulator.add(logs, stats.batchSize);
      if (this.batchLogs) Object.assign(this.batchLogs, logs);
      return outs;
    } catch (e) {
      this.release();
      throw e;
    }
  }

  /** Warns (once per fit) when a Disturbance layer's input has become (almost) all 0 over the batch. */
  private checkDead(prep: PreparedTraining, data: tf.Tensor[], where: string): void {
    let dead: ReturnType<typeof deadDisturbanceLayers>;
    try {
      dead = deadDisturbanceLayers(prep, data, where);
    } catch {
      return; // a diagnostic: it must never stop the training it watches
    }
    if (dead.length === 0) return;
    this.deadWarned = true;
    const names = dead.map((d) => `'${d.layer.name}' (${(100 * d.active).toPrecision(2)} % nonzero)`).join(', ');
    console.warn(
      `${where}: the activations entering Disturbance layer${dead.length > 1 ? 's' : ''} ${names} are 0 in (almost) every entry over this batch: ` +
        'the units before them have died (e.g. every ReLU of the layer below has a negative pre-activation), so the model hardly depends on its input ' +
        'there and training will not recover. Deep adversarial training with hidden L∞/L2 budgets from a random initialisation can do this; ' +
        "ramp the attack up, e.g. schedule: {warmupSteps: 300} (CLI: --warmup-steps 300), or mix in the clean loss (cleanWeight: 0.5), and start again from the initial weights.",
    );
  }

  private release(): void {
    if (this.trainingModelRef) detachState(this.trainingModelRef, this.hookState);
    this.prep = null;
    this.trainingModelRef = null;
    this.historyRef = null;
    this.batchLogs = null;
  }

  override async onTrainBegin(): Promise<void> {
    const model = this.model;
    if (model == null) throw new Error('adversarialCallback: no model was set; pass the callback to model.fit() or model.fitDataset().');
    this.pendingModel = null;
    if (!isHooked(model)) {
      throw new Error(
        `adversarialCallback: model '${model.name}' comes from a different copy of @tensorflow/tfjs-layers than the one ` +
          'tfjs-deep-adversarial imports, so its train function is not hooked. Deduplicate @tensorflow/tfjs-layers (npm ls @tensorflow/tfjs-layers).',
      );
    }
    const prep = prepareAdversarialTraining(model, this.options, 'adversarialCallback');
    const v = this.options.validateAdversarial;
    try {
      if (v) assertCompatibleXY(prep.model, v.x, v.y);
      const g = this.guardOptions();
      if (g) assertCompatibleXY(prep.model, g.x, g.y);
    } catch (e) {
      throw new Error(`adversarialCallback: validation/guard data: ${(e as Error).message}`);
    }
    this.strengthAt(0, this.options.initialStep ?? 0); // fail now on a broken schedule
    this.prep = prep;
    this.trainingModelRef = model;
    this.historyRef = fitHistory(model);
    this.globalStep = this.options.initialStep ?? 0;
    this.fitSteps = 0;
    this.deadWarned = false;
    this.bestGuardAccuracy = -Infinity;
    attachState(model, this.hookState);
  }

  override async onEpochBegin(epoch: number): Promise<void> {
    this.epoch = epoch;
    this.accumulator = new EpochAccumulator();
  }

  override async onBatchBegin(batch: number, logs?: tfl.Logs): Promise<void> {
    this.batch = batch;
    this.batchLogs = (logs as Record<string, unknown> | undefined) ?? null;
  }

  override async onBatchEnd(): Promise<void> {
    this.batchLogs = null;
  }

  override async onEpochEnd(epoch: number, logs?: tfl.Logs): Promise<void> {
    const out = (logs ?? {}) as Record<string, number>;
    Object.assign(out, this.accumulator.result());
    const model = this.trainingModelRef ?? this.model;
    const v = this.options.validateAdversarial;
    if (v && model) {
      out.val_adv_acc = await pgdAccuracy(model, v.x, v.y, v);
    }
    const g = this.guardOptions();
    if (g && model) {
      const acc = await pgdAccuracy(model, g.x, g.y, {epsilon: g.epsilon, steps: g.steps, seed: g.seed, clip: g.clip, limit: g.examples});
      const collapsed = this.bestGuardAccuracy - acc >= g.maxDrop;
      this.bestGuardAccuracy = Math.max(this.bestGuardAccuracy, acc);
      out.fgsm_guard_pgd_acc = acc;
      out.fgsm_guard_collapsed = collapsed ? 1 : 0;
      if (collapsed) {
        console.warn(
          `adversarialCallback: possible catastrophic overfitting of FGSM training at epoch ${epoch}: PGD-${g.steps} accuracy ` +
            `at eps=${g.epsilon} fell to ${acc.toFixed(3)} from ${this.bestGuardAccuracy.toFixed(3)}. ` +
            'Consider a smaller FGSM step (alpha), PGD training, or early stopping' + (g.stopTraining ? '; stopping training.' : '.'),
        );
        if (g.stopTraining) model.stopTraining = true;
      }
    }
  }

  override async onTrainEnd(): Promise<void> {
    this.release();
  }

  private guardOptions():
    | {x: tf.Tensor; y: tf.Tensor; epsilon: number; steps: number; examples: number; maxDrop: number; stopTraining: boolean; seed?: number; clip?: [number, number]}
    | null {
    const opt = this.options.fgsmGuard;
    if (opt === undefined || opt === false) return null;
    const g = opt === true ? {} : opt;
    const f = this.options as FgsmTrainingOptions;
    const v = this.options.validateAdversarial;
    return {
      x: (g.x ?? v?.x) as tf.Tensor,
      y: (g.y ?? v?.y) as tf.Tensor,
      epsilon: g.epsilon ?? f.epsilon,
      steps: g.steps ?? 10,
      examples: g.examples ?? 512,
      maxDrop: g.maxDrop ?? 0.2,
      stopTraining: g.stopTraining ?? false,
      seed: g.seed,
      clip: f.clip,
    };
  }
}

/**
 * Creates a callback that makes `model.fit` / `model.fitDataset` train
 * adversarially: before every optimizer update the attack runs on that batch
 * (inference mode; weights untouched), and the update is the model's own
 * compiled loss/optimizer/metrics at h(w, x, d*) (Algorithm 1, line 10).
 *
 * ```ts
 * const model = instrument(base, {input: {kind: 'linf', epsilon: 0.1, box: [0, 1]}, hidden: {kind: 'quadratic', lambda: 10}});
 * model.compile({optimizer: 'adam', loss: 'categoricalCrossentropy', metrics: ['accuracy']});
 * const history = await model.fit(x, y, {
 *   epochs: 5, batchSize: 64,
 *   callbacks: [adversarialCallback({method: 'deep', maxGradientEvaluations: 6, schedule: {warmupEpochs: 2}, seed: 1})],
 * });
 * history.history.adv_objective; // per epoch
 * ```
 *
 * Set-up errors (uncompiled model, `deep` without Disturbance layers, a
 * disturbed integer/embedding input, bad options, incompatible validation
 * data) are thrown from `onTrainBegin`, i.e. at the start of `fit`, before any
 * weight changes; a batch with mismatched x/y or non-finite values is refused
 * with an error before its step. Methods and options: see
 * {@link AdversarialTrainingOptions}; logs: see this module's documentation.
 *
 * @param options Method (`'deep'`, `'pgd'`, `'fgsm'`) and its options, plus
 *   `schedule`, `validateAdversarial`, `fgsmGuard`, `cleanWeight`, `seed`, `initialStep`.
 */
export function adversarialCallback(options: AdversarialCallbackOptions): AdversarialCallback {
  return new AdversarialCallback(options);
}
