/**
 * Robustness evaluation: clean accuracy, robust accuracy per attack and per ε,
 * the worst case over all attacks per example, and a per-layer vulnerability
 * profile under the deep attack.
 *
 * Conventions used throughout (and in the JSON results):
 *
 * - An example is **correct** when the model's predicted class equals its
 *   label: `argmax` of the output for outputs with several units (labels either
 *   one-hot/probabilities of the same shape, or class indices `[B]`/`[B, 1]`),
 *   `output > 0.5` vs `label > 0.5` for a single output unit.
 * - An example is **robust** to an attack at ε when it is correct on the clean
 *   input *and* correct on the attacked input (as RobustBench/AutoAttack
 *   count it), so robust accuracy never exceeds clean accuracy.
 * - The **input worst case** at (norm, ε) counts an example as robust only if
 *   it is robust to every *input-space* attack evaluated at that norm and ε
 *   (FGSM, PGD, APGD, Square, AutoAttack). Attacks of different norms are never
 *   mixed (an L2 ε and an L∞ ε are different threat models).
 * - The **deep threat** (the deep attack, which also disturbs every hidden
 *   layer) is a different, stronger threat model: it is reported on its own
 *   (`threat: 'deep'`) and never enters the input worst case.
 * - **Gradient-masking checks** (`checks`, `warnings`): Square (no gradients)
 *   breaking examples the gradient attacks left robust, FGSM beating an
 *   iterative attack, accuracy not falling to ≈ 0 at a large L∞ ε.
 *
 * @packageDocumentation
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';

import {deepAttack, DeepAttackOptions, predictDisturbed} from '../attacks/deep.js';
import type {AutoAttackStageResult, AutoAttackVersion} from '../attacks/autoattack.js';
import type {LogitLoss} from '../attacks/logits.js';
import {AttackNorm} from '../attacks/pgd.js';
import {prepareAttack, prepareDeepAttack, PreparedAttack as RegistryAttack, ThreatModel} from '../attacks/registry.js';
import {checkKnownKeys, describeValue} from '../util/options.js';
import {Disturbance} from '../layers/disturbance.js';
import {DEFAULT_HIDDEN_PENALTY, DEFAULT_INPUT_PENALTY, disturbanceSites, instrument} from '../model/instrument.js';
import {assertCompatibleXY, batchSizeOf, LossFn, outputTasks, OutputTask, Tensors} from '../objective/loss.js';
import {attackSites, attackView, hasTokenInput, runSitePgd} from '../attacks/site_pgd.js';
import type {ResolvedPgdOptions} from '../attacks/pgd.js';
import {withModes} from '../objective/neuron_space.js';
import {forwardAdd, disposeAddResult} from '../objective/neuron_space.js';
import {PenaltyConfig, validatePenalty} from '../objective/penalties.js';

/** FGSM (or FGSM-RS with `randomStart`) at every ε of the list; L∞ threat model. */
export interface FgsmAttackSpec {
  kind: 'fgsm';
  /** Name in the results (unique). Default `'FGSM'` / `'FGSM-RS'`. */
  name?: string;
  /** L∞ radii. Default: {@link RobustnessOptions.epsilons}. */
  epsilons?: number[];
  /** FGSM-RS of Wong et al. (random start, step `alpha`). Default false. */
  randomStart?: boolean;
  /** Step of FGSM-RS; default 1.25 ε. */
  alpha?: number;
  /** Attack the output of this layer (see `PgdAttackSpec.layer`). */
  layer?: string;
  /** Count this attack in the worst case (default true). */
  includeInWorstCase?: boolean;
}

/** PGD-k (Madry et al.) with random restarts at every ε of the list. */
export interface PgdAttackSpec {
  kind: 'pgd';
  /** Name in the results (unique). Default e.g. `'PGD-10 L∞'`, `'PGD-20×3 L2'`. */
  name?: string;
  /** Radii. Default: {@link RobustnessOptions.epsilons}. */
  epsilons?: number[];
  /** Threat model; default `'linf'`. */
  norm?: AttackNorm;
  /** Gradient steps per restart; default 10. */
  steps?: number;
  /** Random restarts (per example the highest-loss run is kept); default 1. */
  restarts?: number;
  /** Step length as a fraction of ε; default 2.5 / steps (Madry et al.). */
  relativeStepSize?: number;
  /** Random start in the ε-ball; default true. */
  randomStart?: boolean;
  /** Loss: `'ce'`, `'cw'` (CW margin), `'dlr'` on the logits; default the evaluation's loss (the model's). */
  loss?: LogitLoss;
  /** Count this attack in the worst case (default true). */
  includeInWorstCase?: boolean;
  /**
   * Attack the output of this layer instead of the input: a Disturbance layer, or the layer one
   * follows (e.g. an Embedding of an instrumented text model). Models whose input feeds an Embedding
   * (or with several inputs) are attacked on their embedding outputs and float inputs by default,
   * through a temporary instrumented view sharing the weights; ε then is a radius in embedding space.
   */
  layer?: string;
}

/** APGD (Croce & Hein 2020) at every ε of the list: APGD-CE, APGD-DLR, or APGD-T with `targeted`. */
export interface ApgdAttackSpec {
  kind: 'apgd';
  /** Name in the results (unique). Default e.g. `'APGD-CE L∞'`, `'APGD-T L∞'`. */
  name?: string;
  epsilons?: number[];
  norm?: AttackNorm;
  /** Iterations per run; default 100. */
  steps?: number;
  restarts?: number;
  /** Default `'ce'` (untargeted) / `'dlr'` (targeted). */
  loss?: LogitLoss;
  targeted?: boolean;
  /** Target classes of APGD-T; default 9 (at most K − 1). */
  targetClasses?: number;
  includeInWorstCase?: boolean;
}

/** Square attack (score-based, no gradients) at every ε of the list. */
export interface SquareAttackSpec {
  kind: 'square';
  name?: string;
  epsilons?: number[];
  norm?: AttackNorm;
  /** Queries per example; default 5000. */
  queries?: number;
  pInit?: number;
  imageShape?: [number, number, number];
  includeInWorstCase?: boolean;
}

/** AutoAttack (the cascade; see `autoAttack`) at every ε of the list. */
export interface AutoAttackSpec {
  kind: 'autoattack';
  name?: string;
  epsilons?: number[];
  norm?: AttackNorm;
  /** `'standard'` (default) or `'fast'`. */
  version?: AutoAttackVersion;
  includeInWorstCase?: boolean;
}

/**
 * The deep attack: batched CG on eq. 11 over every Disturbance layer, d* then
 * projected exactly onto each layer's ball/box (`project: true`).
 *
 * Two ways to set the budgets:
 * - `epsilons` (or {@link RobustnessOptions.epsilons}): a sweep over the
 *   *input* budget. At each ε the input disturbance d₀ gets
 *   `{kind: norm, epsilon: ε, box: clip}` and every hidden disturbance gets
 *   `hidden` (default: the layer's own penalty; `null` switches hidden layers
 *   off, leaving a CG input attack).
 * - `penalties` (no sweep): the penalties exactly as {@link deepAttack} takes
 *   them; the result has one point with `epsilon: null`. With neither
 *   `penalties` nor any ε list, the model's own penalties are used.
 *
 * A model without Disturbance layers is instrumented on the fly with
 * `instrument` (input disturbance, plus `hidden` — default
 * {@link DEFAULT_HIDDEN_PENALTY} — after every neuron block). The instrumented
 * copy shares the model's weights; the model itself is not changed.
 */
export interface DeepAttackSpec {
  kind: 'deep';
  /** Name in the results (unique). Default `'Deep threat (input + hidden layers)'`. */
  name?: string;
  /** Input budgets to sweep. Default: {@link RobustnessOptions.epsilons} unless `penalties` is given. */
  epsilons?: number[];
  /** Norm of the input budget in the sweep; default `'linf'`. */
  norm?: 'linf' | 'l2' | 'l1';
  /** Penalty of every hidden disturbance in the sweep (`null`: hidden layers off). Default: each layer's own. */
  hidden?: PenaltyConfig | null;
  /** Fixed penalties (one per Disturbance layer, or a function), as in {@link DeepAttackOptions.penalties}; no sweep. */
  penalties?: DeepAttackOptions['penalties'];
  /** Solver; default `'cg'`. */
  solver?: DeepAttackOptions['solver'];
  /** Solver iterations; default: deepAttack's. */
  maxIterations?: number;
  /** Budget of batched gradient evaluations per batch. */
  maxGradientEvaluations?: number;
  /**
   * Must be false or absent: the deep attack also moves hidden layers, a different threat model,
   * so it is reported on its own (`threat: 'deep'`) and never enters the input worst case.
   */
  includeInWorstCase?: false;
}

/** An attack of {@link evaluateRobustness}. */
export type RobustnessAttack = FgsmAttackSpec | PgdAttackSpec | ApgdAttackSpec | SquareAttackSpec | AutoAttackSpec | DeepAttackSpec;

/** A progress report of {@link evaluateRobustness} and {@link layerVulnerability}. */
export interface RobustnessProgress {
  /** What is running. */
  stage: 'clean' | 'attack' | 'layer-profile';
  /** Attack name (stage `attack`) or layer name (stage `layer-profile`). */
  name?: string;
  /** ε (absolute; relative for the layer profile). */
  epsilon?: number | null;
  /** Work units finished so far, and in total. */
  done: number;
  total: number;
}

/** Options of {@link evaluateRobustness}. */
export interface RobustnessOptions {
  /** Attacks to run. An empty list gives the clean accuracy only. */
  attacks: RobustnessAttack[];
  /** Examples per batch; default 256. Results do not depend on it except through the random starts. */
  batchSize?: number;
  /** Default ε list of the attacks that give none. */
  epsilons?: number[];
  /** Valid input range `[lo, hi]` (e.g. `[0, 1]` for images): every attack stays inside it. */
  clip?: [number, number];
  /** Loss the attacks maximise; default the model's compiled loss. */
  loss?: string | LossFn;
  /** Seed of the random starts (same seed and batch size → identical results). Default 0. */
  seed?: number;
  /** Also compute the per-layer vulnerability profile ({@link layerVulnerability}); `true` for defaults. */
  layerProfile?: boolean | LayerProfileOptions;
  /** Include per-example outcomes (0/1 lists) in the result; default false. */
  perExample?: boolean;
  /** Called after every unit of work. */
  onProgress?: (p: RobustnessProgress) => void;
}

/** One (attack, ε) result. */
export interface AttackPoint {
  /** Radius (`null` for a deep attack with fixed penalties). */
  epsilon: number | null;
  /** Fraction of examples robust to this attack at this ε (see the module notes); NaN for a model without classification output. */
  accuracy: number;
  /** Number of robust examples. */
  robust: number;
  /** Regression outputs: mean over examples of the (summed) per-example loss at the attacked point. */
  loss?: number;
  /** Models with several outputs: per output, robust accuracy (classification) or mean loss under attack (regression). */
  outputs?: number[];
  /** Batched gradient evaluations spent, summed over batches. */
  gradientEvaluations: number;
  /** Batched forward-only passes (Square queries), summed over batches. */
  forwardEvaluations?: number;
  /** Examples whose prediction on the attacked input had a NaN/Inf value (counted as not robust). */
  nonFinitePredictions?: number;
  /** AutoAttack: the cascade's stages, summed over batches (robust accuracy after each stage). */
  stages?: AutoAttackStageResult[];
  /** Wall-clock seconds. */
  seconds: number;
}

/** Results of one attack over its ε list. */
export interface AttackResult {
  name: string;
  kind: RobustnessAttack['kind'];
  /** `'input'`: an input-space attack; `'deep'`: the deep threat (input and hidden layers), never in the input worst case. */
  threat: ThreatModel;
  /** Norm of the threat model (for the deep attack: of its input budget). */
  norm: 'linf' | 'l2' | 'l1';
  /** The attack's settings, defaults filled in (JSON). */
  settings: Record<string, unknown>;
  includeInWorstCase: boolean;
  points: AttackPoint[];
}

/** Input worst case over the input attacks at one (norm, ε). */
export interface WorstCasePoint {
  /** Always `'input'`: the deep attack never takes part. */
  threat?: 'input';
  norm: 'linf' | 'l2' | 'l1';
  epsilon: number;
  /** Fraction of examples robust to every attack listed in `attacks` (NaN without classification output). */
  accuracy: number;
  robust: number;
  /** Regression outputs: mean over examples of the largest loss any listed attack reached (worst-case error within ε). */
  loss?: number;
  /** Names of the attacks evaluated at this (norm, ε). */
  attacks: string[];
}

/** Result of {@link evaluateRobustness}: a plain JSON-serialisable object. */
export interface RobustnessResult {
  /** Number of evaluated examples. */
  examples: number;
  /**
   * Fraction classified correctly without attack (on every classification output). NaN when the
   * model has no classification output: regression models are measured by {@link cleanLoss} and
   * the attacks' `loss` (the worst-case error within ε), never by an accuracy.
   */
  cleanAccuracy: number;
  /** `'classification'`, `'regression'` (every output has a regression loss) or `'mixed'`. */
  task: 'classification' | 'regression' | 'mixed';
  /** Regression outputs: mean clean per-example loss (summed over regression outputs). */
  cleanLoss?: number;
  /** Models with several outputs: per output its name, task and clean accuracy (classification) or mean loss (regression). */
  outputs?: {name: string; task: 'classification' | 'regression'; clean: number}[];
  /** The `clip` box used, or null. */
  clip: [number, number] | null;
  seed: number;
  batchSize: number;
  attacks: AttackResult[];
  /** Input worst case per (norm, ε), over the input attacks only, sorted by norm then ε. */
  worstCase: WorstCasePoint[];
  /** Gradient-masking checks, and whether each could be run. */
  checks: MaskingCheck[];
  /** Human-readable warnings: failed masking checks and NaN predictions. */
  warnings: string[];
  /** Examples whose clean prediction had a NaN/Inf value (counted as misclassified). */
  nonFiniteCleanPredictions: number;
  /** Per-layer vulnerability profile, when requested. */
  layerProfile?: LayerProfile;
  /** Per-example 0/1 outcomes, when requested: `attacks[name][String(ε)]`. */
  perExample?: {clean: number[]; attacks: Record<string, Record<string, number[]>>};
  /** Wall-clock seconds of the whole evaluation. */
  seconds: number;
}

/** One gradient-masking check of {@link evaluateRobustness}. */
export interface MaskingCheck {
  /**
   * `square-vs-gradient`: the gradient-free Square attack broke more than 0.5 % of the examples that every
   * gradient attack at the same (norm, ε) left robust; `fgsm-vs-iterative`: FGSM's accuracy is more than
   * 0.5 point below an iterative gradient attack's (PGD, APGD, AutoAttack) at the same ε; `large-epsilon`:
   * at an L∞ ε of at least half the clip range (every input can then be moved to the mid-grey image) the
   * input worst case stays above 2 %.
   */
  check: 'square-vs-gradient' | 'fgsm-vs-iterative' | 'large-epsilon';
  /** `warning`: the symptom was found; `ok`: checked, not found; `not-run`: the attacks/ε it needs were not evaluated. */
  status: 'ok' | 'warning' | 'not-run';
  /** What was compared, with the numbers. */
  detail: string;
}

/** Options of {@link layerVulnerability}. */
export interface LayerProfileOptions {
  /** Relative budgets ε_rel (see {@link layerVulnerability}); default `[0.1]`. */
  relativeEpsilons?: number[];
  /** Examples per batch; default 256. */
  batchSize?: number;
  /** Valid input range: the input layer's disturbed input stays inside it. */
  clip?: [number, number];
  /** CG iterations; default 10. */
  maxIterations?: number;
  /** Loss to maximise; default the model's compiled loss. */
  loss?: string | LossFn;
  /** Seed of the random start of the deep attack; default 0. */
  seed?: number;
  /** Progress callback. */
  onProgress?: (p: RobustnessProgress) => void;
}

/** Robust accuracy of one layer under the one-layer deep attack. */
export interface LayerVulnerability {
  /** Name of the Disturbance layer (in the possibly instrumented model). */
  name: string;
  /** ℓ: position among the Disturbance layers, 0 nearest the input. */
  index: number;
  /** True for the disturbance of the model input (d₀). */
  isInput: boolean;
  /** Shape of the disturbed activation without the batch axis. */
  shape: number[];
  /** Number of units of that activation. */
  units: number;
  /** mean_b ‖a_ℓ(x_b)‖₂ of the clean activation over the evaluated examples. */
  meanActivationNorm: number;
  /** One point per relative budget: absolute L2 radius ε_ℓ = ε_rel · meanActivationNorm and robust accuracy. */
  points: {relativeEpsilon: number; epsilon: number; accuracy: number; robust: number}[];
}

/** Result of {@link layerVulnerability} (plain JSON). */
export interface LayerProfile {
  /** The budget rule, in words. */
  budget: string;
  relativeEpsilons: number[];
  examples: number;
  cleanAccuracy: number;
  /** True when the model had no Disturbance layers and a temporary instrumented copy was used. */
  instrumented: boolean;
  layers: LayerVulnerability[];
  seconds: number;
}

/** Outcome of one attack at one ε, per example (1 = robust), used by {@link worstCaseAccuracy}. */
export interface AttackOutcome {
  attack: string;
  norm: 'linf' | 'l2' | 'l1';
  epsilon: number;
  /** 1 (or true) where the example survived this attack. */
  correct: ArrayLike<number | boolean>;
}

const WHO = 'evaluateRobustness';
const ROBUSTNESS_KEYS = ['attacks', 'batchSize', 'epsilons', 'clip', 'loss', 'seed', 'layerProfile', 'perExample', 'onProgress'] as const;
const NORM_ORDER = {linf: 0, l2: 1, l1: 2} as const;

/**
 * Worst case over attacks per example: at each (norm, ε), an example is robust
 * only if it is correct on the clean input and survives every attack evaluated
 * at that (norm, ε). Pure function on 0/1 lists; used by
 * {@link evaluateRobustness}.
 *
 * @param clean 1 (or true) where the clean prediction is correct; length N.
 * @param outcomes Per attack and ε, 1 where the example survived (length N each).
 * @returns One point per distinct (norm, ε), sorted by norm (L∞, L2, L1) then ε.
 */
export function worstCaseAccuracy(clean: ArrayLike<number | boolean>, outcomes: AttackOutcome[]): WorstCasePoint[] {
  const n = clean.length;
  const groups = new Map<string, {norm: AttackOutcome['norm']; epsilon: number; alive: Uint8Array; attacks: string[]}>();
  for (const o of outcomes) {
    if (o.correct.length !== n) {
      throw new Error(`worstCaseAccuracy: outcome of '${o.attack}' at ε=${o.epsilon} has ${o.correct.length} entries, expected ${n}.`);
    }
    const key = `${o.norm}:${o.epsilon}`;
    let g = groups.get(key);
    if (!g) {
      const alive = new Uint8Array(n);
      for (let i = 0; i < n; i++) alive[i] = clean[i] ? 1 : 0;
      g = {norm: o.norm, epsilon: o.epsilon, alive, attacks: []};
      groups.set(key, g);
    }
    if (!g.attacks.includes(o.attack)) g.attacks.push(o.attack);
    for (let i = 0; i < n; i++) if (!o.correct[i]) g.alive[i] = 0;
  }
  return [...groups.values()]
    .sort((a, b) => NORM_ORDER[a.norm] - NORM_ORDER[b.norm] || a.epsilon - b.epsilon)
    .map((g) => {
      const robust = g.alive.reduce((s, v) => s + v, 0);
      return {norm: g.norm, epsilon: g.epsilon, accuracy: n === 0 ? 0 : robust / n, robust, attacks: g.attacks};
    });
}

/**
 * Per-example correctness (1/0) of predictions `yPred` against labels `yTrue`,
 * with the conventions of this module (argmax for several output units,
 * threshold 0.5 for one).
 */
export function correctPredictions(yTrue: tf.Tensor, yPred: tf.Tensor): Uint8Array {
  const b = yPred.shape[0];
  const flags = tf.tidy(() => {
    const units = yPred.rank >= 2 ? yPred.shape[yPred.rank - 1] : 1;
    if (units === 1) {
      return tf.equal(tf.greater(tf.reshape(yPred, [b]), 0.5), tf.greater(tf.reshape(yTrue, [b]), 0.5));
    }
    const pred = tf.argMax(yPred, -1);
    let label: tf.Tensor;
    if (tf.util.arraysEqual(yTrue.shape, yPred.shape)) label = tf.argMax(yTrue, -1);
    else if (yTrue.size === b) label = tf.cast(tf.round(tf.reshape(yTrue, [b])), 'int32');
    else {
      throw new Error(
        `labels of shape [${yTrue.shape.join(', ')}] do not match predictions of shape [${yPred.shape.join(', ')}]: ` +
          'expected one-hot labels of the same shape or class indices [B] / [B, 1].',
      );
    }
    return tf.equal(tf.reshape(pred, [b]), tf.reshape(label, [b]));
  });
  const out = Uint8Array.from(flags.dataSync());
  flags.dispose();
  return out;
}

function checkNumberList(v: unknown, what: string, min = 0): number[] {
  if (!Array.isArray(v) || v.length === 0) throw new Error(`${WHO}: ${what} must be a non-empty array of numbers, got ${JSON.stringify(v)}.`);
  for (const e of v) {
    if (typeof e !== 'number' || !Number.isFinite(e) || e < min) {
      throw new Error(`${WHO}: ${what} must hold finite numbers >= ${min}, got ${JSON.stringify(e)}.`);
    }
  }
  return [...v];
}

function checkInt(v: unknown, what: string, min: number, fallback: number): number {
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) throw new Error(`${WHO}: ${what} must be an integer >= ${min}, got ${String(v)}.`);
  return v;
}

function checkClip(clip: unknown, who: string): [number, number] | undefined {
  if (clip === undefined || clip === null) return undefined;
  if (!Array.isArray(clip) || clip.length !== 2 || clip.some((c) => typeof c !== 'number' || Number.isNaN(c)) || !(clip[0] <= clip[1])) {
    throw new Error(`${who}: options.clip must be [lo, hi] with lo <= hi, got ${JSON.stringify(clip)}.`);
  }
  return [clip[0], clip[1]];
}

const NORM_LABEL = {linf: 'L∞', l2: 'L2', l1: 'L1'} as const;

/** An attack spec with defaults filled in, and how to run it on one batch. */
interface PreparedAttack {
  name: string;
  kind: RobustnessAttack['kind'];
  /** `'input'` or `'deep'` (never in the input worst case). */
  threat: ThreatModel;
  /** Whether the attack uses gradients (all but Square). */
  usesGradients: boolean;
  norm: 'linf' | 'l2' | 'l1';
  epsilons: (number | null)[];
  includeInWorstCase: boolean;
  settings: Record<string, unknown>;
  /** Runs the attack at ε on a batch; returns the predictions on the attacked batch and the cost. */
  run(x: Tensors, y: Tensors, epsilon: number | null, seed: number): {pred: Tensors; gradientEvaluations: number; forwardEvaluations?: number; stages?: AutoAttackStageResult[]};
}

/** PGD/FGSM on Disturbance layers (embedding outputs, several inputs) when the input itself cannot be attacked. */
function siteRunner(model: tfl.LayersModel, layer: string | undefined, name: string, resolve: (epsilon: number, seed: number) => ResolvedPgdOptions) {
  if (layer === undefined && model.inputs.length === 1 && model.outputs.length === 1 && !hasTokenInput(model)) return null;
  const view = layer === undefined ? attackView(model) : model;
  const sites = attackSites(view, layer, `${WHO}: attack '${name}'`);
  const layers = sites.map((site) => site.layer);
  return (x: Tensors, y: Tensors, epsilon: number | null, seed: number) => {
    const o = resolve(epsilon as number, seed);
    const r = runSitePgd(view, sites, x, y, o, false);
    try {
      return {pred: withModes(layers, 'add', r.disturbances, () => view.apply(x, {training: false}) as Tensors), gradientEvaluations: r.gradientEvaluations};
    } finally {
      tf.dispose(r.disturbances);
    }
  };
}

/** True when the Disturbance layer carries d₀: it reads a float model input directly, or an Embedding output. */
export function isInputSite(model: tfl.LayersModel, layer: Disturbance): boolean {
  try {
    return attackSites(model, undefined, WHO).some((s) => s.layer === layer);
  } catch {
    return false;
  }
}

/** True when the Disturbance layer reads a float model input directly (the clip box applies to it; not to embeddings). */
function isModelInputSite(model: tfl.LayersModel, layer: Disturbance): boolean {
  try {
    return attackSites(model, undefined, WHO).some((s) => s.layer === layer && s.inputIndex >= 0);
  } catch {
    return false;
  }
}

const DEEP_SPEC_KEYS = ['kind', 'name', 'epsilons', 'norm', 'hidden', 'penalties', 'solver', 'maxIterations', 'maxGradientEvaluations', 'includeInWorstCase'] as const;

function prepareDeep(model: tfl.LayersModel, spec: DeepAttackSpec, o: {epsilons?: number[]; clip?: [number, number]; loss?: string | LossFn}): PreparedAttack {
  const where = `${WHO}: attack '${spec.name ?? 'deep'}'`;
  checkKnownKeys(spec, DEEP_SPEC_KEYS, where);
  if (spec.includeInWorstCase) {
    throw new Error(
      `${where}: includeInWorstCase must be false for the deep attack: it also disturbs hidden layers (the deep threat), ` +
        'so it is reported on its own and never mixed into the input worst case.',
    );
  }
  if (spec.penalties !== undefined && spec.epsilons !== undefined) {
    throw new Error(`${where}: give either 'penalties' (fixed budgets) or 'epsilons' (a sweep of the input budget), not both.`);
  }
  const norm = spec.norm ?? 'linf';
  if (!(norm in NORM_LABEL)) throw new Error(`${where}: 'norm' must be 'linf', 'l2' or 'l1', got ${JSON.stringify(norm)}.`);
  const hidden = spec.hidden === undefined || spec.hidden === null ? spec.hidden : validatePenalty(spec.hidden, `${where}: 'hidden'`);
  const sweep = spec.penalties === undefined ? (spec.epsilons ?? o.epsilons) : undefined;
  const epsilons: (number | null)[] = sweep ? checkNumberList(sweep, `attack '${spec.name ?? 'deep'}' epsilons`) : [null];

  // The model to attack: the model itself, or an instrumented copy sharing its weights.
  let attacked = model;
  let instrumented = false;
  const sites = disturbanceSites(model);
  if (sites.length === 0) {
    attacked = instrument(model, {
      input: sweep ? {kind: norm, epsilon: 0} : DEFAULT_INPUT_PENALTY,
      embedding: sweep ? {kind: norm, epsilon: 0} : undefined,
      hidden: hidden === undefined ? DEFAULT_HIDDEN_PENALTY : hidden,
      name: `${model.name}_eval_instrumented`,
    });
    instrumented = true;
  } else if (sweep && !sites.some((s) => isInputSite(model, s.layer))) {
    attacked = instrument(model, {input: {kind: norm, epsilon: 0}, embedding: {kind: norm, epsilon: 0}, hidden: null, name: `${model.name}_eval_instrumented`});
    instrumented = true;
  }
  const layers = disturbanceSites(attacked).map((s) => s.layer);
  const inputFlags = layers.map((l) => isInputSite(attacked, l));
  const boxFlags = layers.map((l) => isModelInputSite(attacked, l));
  // Validated once here, through the attack registry's deep entry (deepAttack's own option rules).
  const deep = prepareDeepAttack(where, {
    project: true,
    solver: spec.solver,
    maxIterations: spec.maxIterations,
    maxGradientEvaluations: spec.maxGradientEvaluations,
    loss: o.loss,
  });
  const settings: Record<string, unknown> = {
    ...deep.settings,
    project: true,
    instrumented,
    layers: layers.map((l) => l.name),
  };
  if (sweep) {
    settings.inputNorm = norm;
    settings.hidden = hidden === undefined ? 'own' : hidden;
  } else {
    settings.penalties = typeof spec.penalties === 'function' ? 'custom function' : spec.penalties ?? 'own';
  }
  return {
    name: spec.name ?? 'Deep threat (input + hidden layers)',
    kind: 'deep',
    threat: 'deep',
    usesGradients: true,
    norm,
    epsilons,
    includeInWorstCase: false,
    settings,
    run(x, y, epsilon, seed) {
      let penalties: DeepAttackOptions['penalties'] = spec.penalties;
      if (epsilon !== null) {
        const input: PenaltyConfig = {kind: norm, epsilon};
        const boxed: PenaltyConfig = o.clip ? {kind: norm, epsilon, box: o.clip} : input;
        penalties = layers.map((l, i) => (inputFlags[i] ? (boxFlags[i] ? boxed : input) : hidden === undefined ? l.penalty : hidden));
      }
      const r = deep.run(attacked, x, y, {seed, penalties});
      try {
        return {pred: predictDisturbed(attacked, x, r.disturbances), gradientEvaluations: r.gradientEvaluations};
      } finally {
        tf.dispose([...r.disturbances, r.objective]);
      }
    },
  };
}

const SPEC_KEYS = {
  fgsm: ['randomStart', 'alpha', 'layer'],
  pgd: ['norm', 'steps', 'restarts', 'relativeStepSize', 'randomStart', 'loss', 'layer'],
  apgd: ['norm', 'steps', 'restarts', 'loss', 'targeted', 'targetClasses'],
  square: ['norm', 'queries', 'pInit', 'imageShape'],
  autoattack: ['norm', 'version'],
} as const;

/**
 * An input attack spec → one prepared registry attack per ε (options validated once, here). FGSM and PGD
 * on models whose input cannot be perturbed directly (token inputs, several inputs) or with `layer` run
 * on Disturbance sites instead (embedding space).
 */
function prepareInput(spec: Exclude<RobustnessAttack, DeepAttackSpec>, o: {epsilons?: number[]; clip?: [number, number]; loss?: string | LossFn}, model: tfl.LayersModel): PreparedAttack {
  const kind = spec.kind;
  const defaultLabel = {fgsm: spec.kind === 'fgsm' && spec.randomStart ? 'FGSM-RS' : 'FGSM', pgd: 'PGD', apgd: 'APGD', square: 'Square', autoattack: 'AutoAttack'}[kind];
  const label = spec.name ?? defaultLabel;
  const where = `${WHO}: attack '${label}'`;
  checkKnownKeys(spec, ['kind', 'name', 'epsilons', 'includeInWorstCase', ...SPEC_KEYS[kind]], where);
  if (spec.includeInWorstCase !== undefined && typeof spec.includeInWorstCase !== 'boolean') {
    throw new Error(`${where}: includeInWorstCase must be a boolean; got ${describeValue(spec.includeInWorstCase)}.`);
  }
  const eps = spec.epsilons ?? o.epsilons;
  if (eps === undefined) throw new Error(`${where} has no epsilons; give attack.epsilons or options.epsilons.`);
  const epsilons = checkNumberList(eps, `attack '${label}' epsilons`);
  let rel: number | undefined;
  const at = (epsilon: number): RegistryAttack => {
    switch (spec.kind) {
      case 'fgsm':
        return prepareAttack('fgsm', where, {epsilon, clip: o.clip, randomStart: spec.randomStart, alpha: spec.alpha, loss: o.loss});
      case 'pgd': {
        const steps = spec.steps ?? 10;
        rel = spec.relativeStepSize ?? (typeof steps === 'number' && steps > 0 ? 2.5 / steps : undefined);
        if (rel !== undefined && (typeof rel !== 'number' || !Number.isFinite(rel) || rel < 0)) {
          throw new Error(`${where}: 'relativeStepSize' must be a finite number >= 0, got ${describeValue(rel)}.`);
        }
        return prepareAttack('pgd', where, {
          epsilon, norm: spec.norm, steps: spec.steps, restarts: spec.restarts, stepSize: rel === undefined ? undefined : rel * epsilon,
          randomStart: spec.randomStart, clip: o.clip, loss: spec.loss ?? o.loss,
        });
      }
      case 'apgd':
        return prepareAttack('apgd', where, {epsilon, norm: spec.norm, steps: spec.steps, restarts: spec.restarts, loss: spec.loss, targeted: spec.targeted, targetClasses: spec.targetClasses, clip: o.clip});
      case 'square':
        return prepareAttack('square', where, {epsilon, norm: spec.norm, queries: spec.queries, pInit: spec.pInit, imageShape: spec.imageShape, clip: o.clip});
      case 'autoattack':
        return prepareAttack('autoattack', where, {epsilon, norm: spec.norm, version: spec.version, clip: o.clip});
      default:
        throw new Error(`${where}: unknown kind.`);
    }
  };
  const perEps = epsilons.map(at);
  const first = perEps[0];
  let site: ReturnType<typeof siteRunner> = null;
  if (spec.kind === 'fgsm') {
    site = siteRunner(model, spec.layer, label, (epsilon, seed) => ({
      epsilon, norm: 'linf', steps: 1, restarts: 1, randomStart: spec.randomStart ?? false,
      stepSize: spec.randomStart ? spec.alpha ?? 1.25 * epsilon : epsilon, clip: o.clip, seed, loss: o.loss,
    }));
  } else if (spec.kind === 'pgd') {
    const steps = first.settings.steps as number;
    const restarts = first.settings.restarts as number;
    const norm = first.norm;
    const r = rel ?? 2.5 / steps;
    site = siteRunner(model, spec.layer, label, (e, seed) => ({
      epsilon: e, norm, steps, restarts, stepSize: r * e, randomStart: spec.randomStart ?? true, clip: o.clip, seed, loss: spec.loss ?? o.loss,
    }));
  } else if (model.inputs.length !== 1 || model.outputs.length !== 1 || hasTokenInput(model)) {
    throw new Error(
      `${where}: ${kind} attacks the input of a single-input, single-output classifier; model '${model.name}' has ` +
        `${model.inputs.length} input(s) and ${model.outputs.length} output(s)${hasTokenInput(model) ? ' and token inputs' : ''}. Use 'pgd' or 'fgsm' (they run in embedding space).`,
    );
  }
  return {
    name: spec.name ?? first.label,
    kind,
    threat: 'input',
    usesGradients: first.usesGradients,
    norm: first.norm,
    epsilons,
    includeInWorstCase: spec.includeInWorstCase ?? true,
    settings: {...first.settings, ...(site ? {space: 'disturbance sites (embedding / several inputs)'} : {})},
    run:
      site ??
      function (x, y, epsilon, seed) {
        const r = perEps[epsilons.indexOf(epsilon as number)].run(model, x as tf.Tensor, y as tf.Tensor, {seed});
        try {
          return {pred: model.predict(r.adversarial) as tf.Tensor, gradientEvaluations: r.gradientEvaluations, forwardEvaluations: r.forwardEvaluations, stages: r.stages};
        } finally {
          tf.dispose(r.objective ? [r.adversarial, r.objective] : [r.adversarial]);
        }
      },
  };
}

function prepare(model: tfl.LayersModel, spec: RobustnessAttack, o: {epsilons?: number[]; clip?: [number, number]; loss?: string | LossFn}): PreparedAttack {
  if (spec === null || typeof spec !== 'object') throw new Error(`${WHO}: every entry of options.attacks must be an object with a 'kind'; got ${describeValue(spec)}.`);
  switch (spec.kind) {
    case 'fgsm':
    case 'pgd':
    case 'apgd':
    case 'square':
    case 'autoattack':
      return prepareInput(spec, o, model);
    case 'deep':
      return prepareDeep(model, spec, o);
    default:
      throw new Error(
        `${WHO}: unknown attack kind ${JSON.stringify((spec as {kind?: unknown}).kind)}; expected 'fgsm', 'pgd', 'apgd', 'square', 'autoattack' or 'deep'.`,
      );
  }
}

export function batches(n: number, batchSize: number): [number, number][] {
  const out: [number, number][] = [];
  for (let s = 0; s < n; s += batchSize) out.push([s, Math.min(batchSize, n - s)]);
  return out;
}

export function sliceBatch(t: tf.Tensor, start: number, size: number): tf.Tensor;
export function sliceBatch(t: Tensors, start: number, size: number): Tensors;
export function sliceBatch(t: Tensors, start: number, size: number): Tensors {
  return Array.isArray(t) ? t.map((u) => tf.slice(u, [start], [size])) : tf.slice(t, [start], [size]);
}

export function listOf(t: Tensors): tf.Tensor[] {
  return Array.isArray(t) ? t : [t];
}

/** The model's output tasks (compiled losses; the override only for an uncompiled model). */
function tasksOf(model: tfl.LayersModel, loss: string | LossFn | undefined): OutputTask[] {
  try {
    return outputTasks(model);
  } catch {
    return outputTasks(model, loss);
  }
}

/** How a batch of predictions scores: per example all classification outputs correct, per output correctness or loss. */
interface Score {
  ok: Uint8Array;
  perOutput: (Uint8Array | Float32Array)[];
  /** Σ over regression outputs of the per-example loss. */
  loss: Float32Array;
}

function scoreBatch(tasks: OutputTask[], y: Tensors, pred: Tensors): Score {
  const ys = listOf(y);
  const ps = listOf(pred);
  const size = ps[0].shape[0];
  const ok = new Uint8Array(size).fill(1);
  const loss = new Float32Array(size);
  const perOutput = tasks.map((task, o) => {
    if (task.regression) {
      const l = task.loss(ys[o], ps[o]);
      const v = Float32Array.from(l.dataSync());
      l.dispose();
      v.forEach((e, i) => (loss[i] += e));
      return v;
    }
    const c = correctPredictions(ys[o], ps[o]);
    c.forEach((e, i) => (ok[i] &= e));
    return c;
  });
  return {ok, perOutput, loss};
}

/** Seed for batch `b` of point `p` of attack `a`, from the user seed. */
export function pointSeed(seed: number, a: number, p: number, b: number): number {
  return (((seed * 1000003) ^ (a * 7919 + p * 104729 + b * 1299709)) >>> 0) % 2147483647;
}

export function checkInputs(model: tfl.LayersModel, x: Tensors, y: Tensors, who: string): void {
  if (!(model instanceof tfl.LayersModel)) throw new Error(`${who}: model must be a tfjs-layers LayersModel (tf.sequential / tf.model).`);
  if (!listOf(x).every((t) => t instanceof tf.Tensor)) throw new Error(`${who}: x must be a tf.Tensor (or a list of tensors, one per model input); got ${describeValue(x)}.`);
  if (!listOf(y).every((t) => t instanceof tf.Tensor)) throw new Error(`${who}: y must be a tf.Tensor (or a list of tensors, one per model output); got ${describeValue(y)}.`);
  if ([...listOf(x), ...listOf(y)].some((t) => t.isDisposed)) throw new Error(`${who}: x or y was already disposed.`);
  const first = listOf(x)[0];
  if (first === undefined || first.rank < 1 || first.shape[0] === 0) throw new Error(`${who}: x has no examples${first ? ` (shape [${first.shape.join(', ')}])` : ''}; give at least one row.`);
  try {
    assertCompatibleXY(model, x, y);
  } catch (e) {
    throw new Error(`${who}: ${(e as Error).message}`);
  }
}

/** Rows of predictions `[B, ...]` holding a NaN or ±Infinity (1 = non-finite). */
export function nonFiniteRows(pred: Tensors): Uint8Array {
  const ps = listOf(pred);
  const t = tf.tidy(() => {
    const flags = ps.map((p) => tf.any(tf.logicalNot(tf.isFinite(tf.reshape(p, [p.shape[0], -1]))), 1));
    return flags.reduce((a, b) => tf.logicalOr(a, b));
  });
  const out = Uint8Array.from(t.dataSync());
  t.dispose();
  return out;
}

const RELEVANT = 0.005;

/** The gradient-masking checks of {@link evaluateRobustness} (see {@link MaskingCheck}). */
function maskingChecks(
  n: number,
  clean: Uint8Array,
  prepared: PreparedAttack[],
  outcomes: Uint8Array[][],
  points: AttackPoint[][],
  worst: WorstCasePoint[],
  clip: [number, number] | undefined,
): MaskingCheck[] {
  const pct = (v: number) => `${(100 * v).toFixed(1)} %`;
  const checks: MaskingCheck[] = [];
  const input = prepared.map((p, a) => ({p, a})).filter(({p}) => p.threat === 'input');
  // 1. Square vs the gradient attacks, per (norm, ε).
  const sq: string[] = [];
  let sqWarn = false;
  let sqRun = false;
  for (const {p, a} of input) {
    p.epsilons.forEach((eps, k) => {
      if (eps === null) return;
      // Inside AutoAttack: the Square stage runs only on what APGD-CE and APGD-T left robust.
      const stage = points[a][k].stages?.find((st) => st.name === 'Square');
      if (stage) {
        sqRun = true;
        const bad = stage.broken > RELEVANT * n;
        sqWarn ||= bad;
        sq.push(`${p.name} ε=${eps}: Square broke ${stage.broken} of the ${stage.attacked} examples APGD-CE and APGD-T left robust${bad ? ' (!)' : ''}`);
      }
      if (p.kind !== 'square') return;
      const grads = input.filter(({p: q}) => q.usesGradients && q.norm === p.norm && q.epsilons.includes(eps));
      if (grads.length === 0) return;
      sqRun = true;
      let count = 0;
      for (let i = 0; i < n; i++) {
        const gradRobust = clean[i] && grads.every(({p: q, a: qa}) => outcomes[qa][q.epsilons.indexOf(eps)][i]);
        if (gradRobust && !outcomes[a][k][i]) count++;
      }
      const bad = count > RELEVANT * n;
      sqWarn ||= bad;
      sq.push(`${p.name} ε=${eps}: broke ${count} examples that ${grads.map(({p: q}) => q.name).join(', ')} left robust${bad ? ' (!)' : ''}`);
    });
  }
  checks.push({
    check: 'square-vs-gradient',
    status: !sqRun ? 'not-run' : sqWarn ? 'warning' : 'ok',
    detail: sqRun ? sq.join('; ') : 'needs Square (or AutoAttack) and a gradient attack at the same norm and ε',
  });
  // 2. FGSM vs the iterative gradient attacks.
  const fg: string[] = [];
  let fgWarn = false;
  let fgRun = false;
  for (const {p, a} of input.filter(({p}) => p.kind === 'fgsm')) {
    p.epsilons.forEach((eps, k) => {
      for (const {p: q, a: qa} of input.filter(({p: q}) => ['pgd', 'apgd', 'autoattack'].includes(q.kind) && q.norm === 'linf')) {
        const j = q.epsilons.indexOf(eps);
        if (j < 0) continue;
        fgRun = true;
        const f = points[a][k].accuracy;
        const g = points[qa][j].accuracy;
        if (f < g - RELEVANT) {
          fgWarn = true;
          fg.push(`ε=${eps}: ${p.name} ${pct(f)} < ${q.name} ${pct(g)} (!)`);
        }
      }
    });
  }
  checks.push({
    check: 'fgsm-vs-iterative',
    status: !fgRun ? 'not-run' : fgWarn ? 'warning' : 'ok',
    detail: !fgRun ? 'needs FGSM and PGD/APGD/AutoAttack (L∞) at the same ε' : fgWarn ? fg.join('; ') : 'FGSM never more than 0.5 point below an iterative attack',
  });
  // 3. Large ε.
  const large = clip ? (clip[1] - clip[0]) / 2 : Infinity;
  const big = worst.filter((w) => w.norm === 'linf' && w.epsilon >= large);
  const stuck = big.filter((w) => w.accuracy > 0.02);
  checks.push({
    check: 'large-epsilon',
    status: big.length === 0 ? 'not-run' : stuck.length ? 'warning' : 'ok',
    detail:
      big.length === 0
        ? clip
          ? `needs an L∞ ε ≥ ${large} (half the clip range), where every input can be moved to the same point`
          : 'needs options.clip (the largest meaningful ε depends on the input range)'
        : big.map((w) => `input worst case at L∞ ε=${w.epsilon}: ${pct(w.accuracy)}${w.accuracy > 0.02 ? ' (should be ≈ 0; a near-constant classifier or masked gradients)' : ''}`).join('; '),
  });
  return checks;
}

/**
 * Evaluates a classifier's robustness: clean accuracy; for every attack and
 * every ε, robust accuracy; the input worst case over all input attacks per
 * example (an example counts as robust only if it survives every input attack
 * at that norm and ε, as AutoAttack reports); the deep threat on its own;
 * gradient-masking checks (`checks`, `warnings`). Optionally the per-layer
 * vulnerability profile ({@link layerVulnerability}).
 *
 * ```ts
 * const r = evaluateRobustness(model, xTest, yTest, {
 *   epsilons: [0.05, 0.1, 0.5], clip: [0, 1],
 *   attacks: [{kind: 'fgsm'}, {kind: 'pgd', steps: 40, restarts: 2}, {kind: 'autoattack'}, {kind: 'deep', hidden: {kind: 'quadratic', lambda: 10}}],
 * });
 * console.log(r.cleanAccuracy, r.worstCase, r.warnings);
 * ```
 *
 * Warnings (NaN predictions, failed masking checks) are returned in
 * `warnings` and also printed with `console.warn`.
 *
 * The model runs in inference mode and is never modified: a model without
 * Disturbance layers is attacked through a temporary instrumented copy sharing
 * its weights. Every tensor created is disposed; `x` and `y` are not.
 *
 * @param model A compiled single-input, single-output classifier (or pass `options.loss`).
 * @param x Inputs `[N, ...inputShape]`.
 * @param y Labels: one-hot `[N, K]`, class indices `[N]`/`[N, 1]`, or 0/1 for one output unit.
 * @returns A plain JSON-serialisable {@link RobustnessResult}.
 * @throws Errors naming the bad option or attack field, mismatched shapes, a model without loss.
 */
export function evaluateRobustness(model: tfl.LayersModel, x: Tensors, y: Tensors, options: RobustnessOptions): RobustnessResult {
  const t0 = Date.now();
  if (options === null || typeof options !== 'object') throw new Error(`${WHO}: options must be an object {attacks, batchSize, ...}; got ${describeValue(options)}.`);
  checkKnownKeys(options, ROBUSTNESS_KEYS, WHO);
  if (!Array.isArray(options.attacks)) {
    throw new Error(`${WHO}: options.attacks must be an array of attacks ({kind: 'fgsm' | 'pgd' | 'apgd' | 'square' | 'autoattack' | 'deep', ...}); got ${describeValue(options.attacks)}.`);
  }
  checkInputs(model, x, y, WHO);
  const batchSize = checkInt(options.batchSize, 'options.batchSize', 1, 256);
  const seed = options.seed ?? 0;
  if (typeof seed !== 'number' || !Number.isFinite(seed)) throw new Error(`${WHO}: options.seed must be a finite number, got ${String(seed)}.`);
  const clip = checkClip(options.clip, WHO);
  const epsilons = options.epsilons === undefined ? undefined : checkNumberList(options.epsilons, 'options.epsilons');
  const prepared = options.attacks.map((a) => prepare(model, a, {epsilons, clip, loss: options.loss}));
  const names = new Set<string>();
  for (const p of prepared) {
    if (names.has(p.name)) throw new Error(`${WHO}: two attacks are named '${p.name}'; give them distinct 'name's.`);
    names.add(p.name);
  }

  const n = batchSizeOf(x);
  const tasks = tasksOf(model, typeof options.loss === 'string' || typeof options.loss === 'function' ? options.loss : undefined);
  const hasClassification = tasks.some((t) => !t.regression);
  const hasRegression = tasks.some((t) => t.regression);
  const parts = batches(n, batchSize);
  const clean = new Uint8Array(n);
  const cleanLoss = new Float32Array(n);
  const cleanPer = tasks.map(() => new Float64Array(1)); // per output: correct count or loss sum
  const outcomes = prepared.map((p) => p.epsilons.map(() => new Uint8Array(n)));
  const pointLoss = prepared.map((p) => p.epsilons.map(() => new Float32Array(n)));
  const pointPer = prepared.map((p) => p.epsilons.map(() => new Float64Array(tasks.length)));
  const stats = prepared.map((p) =>
    p.epsilons.map(() => ({gradientEvaluations: 0, forwardEvaluations: 0, nonFinite: 0, seconds: 0, stages: null as AutoAttackStageResult[] | null})),
  );
  const total = parts.length * (1 + prepared.reduce((s, p) => s + p.epsilons.length, 0));
  let done = 0;
  let cleanNonFinite = 0;
  const report = (stage: RobustnessProgress['stage'], name?: string, epsilon?: number | null) =>
    options.onProgress?.({stage, name, epsilon, done: ++done, total});

  parts.forEach(([start, size], b) => {
    const xb = sliceBatch(x, start, size);
    const yb = sliceBatch(y, start, size);
    try {
      const pred = model.predict(xb) as Tensors;
      let sc: Score;
      let bad: Uint8Array;
      try {
        sc = scoreBatch(tasks, yb, pred);
        bad = nonFiniteRows(pred);
      } finally {
        tf.dispose(pred);
      }
      // A NaN prediction's argmax is meaningless: count it as misclassified, and say so.
      for (let i = 0; i < size; i++) {
        if (bad[i]) {
          sc.ok[i] = 0;
          cleanNonFinite++;
        }
      }
      clean.set(sc.ok, start);
      cleanLoss.set(sc.loss, start);
      sc.perOutput.forEach((v, o) => {
        for (let i = 0; i < v.length; i++) cleanPer[o][0] += v[i];
      });
      report('clean');
      prepared.forEach((p, a) => {
        p.epsilons.forEach((eps, k) => {
          const t = Date.now();
          const r = p.run(xb, yb, eps, pointSeed(seed, a, k, b));
          let at: Score;
          let badAt: Uint8Array;
          try {
            at = scoreBatch(tasks, yb, r.pred);
            badAt = nonFiniteRows(r.pred);
          } finally {
            tf.dispose(r.pred);
          }
          const st = stats[a][k];
          for (let i = 0; i < size; i++) {
            outcomes[a][k][start + i] = badAt[i] ? 0 : at.ok[i] & clean[start + i];
            if (badAt[i] && clean[start + i]) st.nonFinite++;
          }
          st.forwardEvaluations += r.forwardEvaluations ?? 0;
          if (r.stages) {
            if (!st.stages) st.stages = r.stages.map((g) => ({...g, robustAccuracy: 0}));
            else {
              r.stages.forEach((g, i) => {
                const acc = (st.stages as AutoAttackStageResult[])[i];
                for (const key of ['attacked', 'broken', 'gradientEvaluations', 'exampleGradientEvaluations', 'forwardEvaluations', 'exampleQueries', 'seconds'] as const) acc[key] += g[key];
              });
            }
          }
          pointLoss[a][k].set(at.loss, start);
          at.perOutput.forEach((v, o) => {
            const before = sc.perOutput[o];
            for (let i = 0; i < size; i++) pointPer[a][k][o] += tasks[o].regression ? v[i] : v[i] & before[i];
          });
          stats[a][k].gradientEvaluations += r.gradientEvaluations;
          stats[a][k].seconds += (Date.now() - t) / 1000;
          report('attack', p.name, eps);
        });
      });
    } finally {
      tf.dispose([...listOf(xb), ...listOf(yb)]);
    }
  });

  const count = (f: Uint8Array) => f.reduce((s, v) => s + v, 0);
  const mean = (f: Float32Array) => (n === 0 ? NaN : f.reduce((s, v) => s + v, 0) / n);
  const accuracyOf = (f: Uint8Array) => (!hasClassification ? NaN : n === 0 ? 0 : count(f) / n);
  const cleanCount = count(clean);
  const attacks: AttackResult[] = prepared.map((p, a) => ({
    name: p.name,
    kind: p.kind,
    threat: p.threat,
    norm: p.norm,
    settings: p.settings,
    includeInWorstCase: p.includeInWorstCase,
    points: p.epsilons.map((eps, k) => {
      const point: AttackPoint = {
        epsilon: eps,
        accuracy: accuracyOf(outcomes[a][k]),
        robust: count(outcomes[a][k]),
        gradientEvaluations: stats[a][k].gradientEvaluations,
        seconds: round(stats[a][k].seconds),
      };
      if (hasRegression) point.loss = mean(pointLoss[a][k]);
      if (tasks.length > 1) point.outputs = Array.from(pointPer[a][k], (v) => (n === 0 ? NaN : v / n));
      const st = stats[a][k];
      if (st.forwardEvaluations > 0) point.forwardEvaluations = st.forwardEvaluations;
      if (st.nonFinite > 0) point.nonFinitePredictions = st.nonFinite;
      if (st.stages) {
        let alive = cleanCount;
        point.stages = st.stages.map((g) => {
          alive -= g.broken;
          return {...g, robustAccuracy: alive / n, seconds: round(g.seconds)};
        });
      }
      return point;
    }),
  }));
  const forWorst: AttackOutcome[] = [];
  const worstLoss = new Map<string, Float32Array>();
  prepared.forEach((p, a) => {
    if (!p.includeInWorstCase || p.threat !== 'input') return;
    p.epsilons.forEach((eps, k) => {
      if (eps === null) return;
      forWorst.push({attack: p.name, norm: p.norm, epsilon: eps, correct: outcomes[a][k]});
      const key = `${p.norm}:${eps}`;
      const w = worstLoss.get(key) ?? Float32Array.from(cleanLoss);
      pointLoss[a][k].forEach((v, i) => (w[i] = Math.max(w[i], v)));
      worstLoss.set(key, w);
    });
  });
  const worstCase = worstCaseAccuracy(clean, forWorst).map((w) => {
    const out: WorstCasePoint = {threat: 'input', ...w, accuracy: hasClassification ? w.accuracy : NaN};
    if (hasRegression) out.loss = mean(worstLoss.get(`${w.norm}:${w.epsilon}`) as Float32Array);
    return out;
  });
  const checks = hasClassification ? maskingChecks(n, clean, prepared, outcomes, attacks.map((x) => x.points), worstCase, clip) : [];
  const warnings: string[] = [];
  if (cleanNonFinite > 0) {
    warnings.push(`${cleanNonFinite} of ${n} examples have NaN/Infinity in the model's clean prediction; they are counted as misclassified.`);
  }
  attacks.forEach((x) =>
    x.points.forEach((pt) => {
      if (pt.nonFinitePredictions) warnings.push(`${x.name} at ε=${pt.epsilon}: ${pt.nonFinitePredictions} attacked examples have NaN/Infinity predictions; counted as not robust.`);
    }),
  );
  for (const c of checks) if (c.status === 'warning') warnings.push(`possible gradient masking (${c.check}): ${c.detail}`);
  for (const w of warnings) console.warn(`${WHO}: ${w}`);
  const result: RobustnessResult = {
    examples: n,
    cleanAccuracy: accuracyOf(clean),
    task: !hasRegression ? 'classification' : !hasClassification ? 'regression' : 'mixed',
    clip: clip ?? null,
    seed,
    batchSize,
    attacks,
    worstCase,
    checks,
    warnings,
    nonFiniteCleanPredictions: cleanNonFinite,
    seconds: 0,
  };
  if (hasRegression) result.cleanLoss = mean(cleanLoss);
  if (tasks.length > 1) {
    result.outputs = tasks.map((t, o) => ({name: t.name, task: t.regression ? 'regression' : 'classification', clean: n === 0 ? NaN : cleanPer[o][0] / n}));
  }
  if (options.perExample) {
    const per: Record<string, Record<string, number[]>> = {};
    prepared.forEach((p, a) => {
      per[p.name] = {};
      p.epsilons.forEach((eps, k) => (per[p.name][String(eps)] = Array.from(outcomes[a][k])));
    });
    result.perExample = {clean: Array.from(clean), attacks: per};
  }
  if (options.layerProfile) {
    const lp = options.layerProfile === true ? {} : options.layerProfile;
    result.layerProfile = layerVulnerability(model, x, y, {
      batchSize,
      clip,
      loss: options.loss,
      seed,
      onProgress: options.onProgress,
      ...lp,
    });
  }
  result.seconds = round((Date.now() - t0) / 1000);
  return result;
}

function round(s: number): number {
  return Math.round(s * 1000) / 1000;
}

/**
 * Per-layer vulnerability profile: robust accuracy under a deep attack that
 * disturbs **one layer at a time**, with the same relative budget for every
 * layer, so that the layers can be compared.
 *
 * Budget rule (precisely): for Disturbance layer ℓ with clean activation
 * aℓ(x) (the layer's input, i.e. fℓ(wℓ, nℓ₋₁) on the undisturbed network),
 *
 *   ε_ℓ = ε_rel · mean_b ‖aℓ(x_b)‖₂,
 *
 * the mean over all evaluated examples (one radius per layer, independent of
 * the batching). Only dℓ is attacked, with the L2 ball ‖dℓ‖₂ ≤ ε_ℓ
 * (per example) as its penalty; every other disturbance is 0. CG maximises
 * eq. 11 and d*ℓ is then projected exactly onto the ball (`project: true`),
 * so the budget holds exactly. For the input disturbance d₀, the disturbed
 * input is also kept inside `clip` when given. So ε_rel = 0.1 means "noise
 * with 10 % of the layer's typical signal energy (in L2)", at every layer.
 *
 * Which layers: the model's Disturbance layers; a model without any is
 * instrumented on the fly (input + after every neuron block, see
 * `instrument`) through a copy sharing its weights. The model is not changed.
 *
 * @returns A plain JSON {@link LayerProfile}: per layer its mean activation
 *   norm, the absolute radius and the robust accuracy at each ε_rel.
 */
export function layerVulnerability(model: tfl.LayersModel, x: Tensors, y: Tensors, options: LayerProfileOptions = {}): LayerProfile {
  const who = 'layerVulnerability';
  const t0 = Date.now();
  checkInputs(model, x, y, who);
  const rel = options.relativeEpsilons === undefined ? [0.1] : checkNumberList(options.relativeEpsilons, 'layerProfile.relativeEpsilons');
  const batchSize = checkInt(options.batchSize, 'layerProfile.batchSize', 1, 256);
  const clip = checkClip(options.clip, who);
  const seed = options.seed ?? 0;

  let attacked = model;
  let instrumented = false;
  if (disturbanceSites(model).length === 0) {
    attacked = instrument(model, {name: `${model.name}_profile_instrumented`});
    instrumented = true;
  }
  const sites = disturbanceSites(attacked);
  const layers = sites.map((s) => s.layer);
  const inputFlags = layers.map((l) => isInputSite(attacked, l));
  const boxFlags = layers.map((l) => isModelInputSite(attacked, l));
  const shapes = sites.map((s) => s.inputShape.slice(1) as number[]);
  const n = batchSizeOf(x);
  const tasks = tasksOf(model, typeof options.loss === 'string' || typeof options.loss === 'function' ? options.loss : undefined);
  const parts = batches(n, batchSize);
  let done = 0;
  const total = parts.length * (1 + layers.length * rel.length);

  // Pass 1: clean correctness and Σ_b ‖aℓ(x_b)‖₂ per layer.
  const clean = new Uint8Array(n);
  const normSums = new Float64Array(layers.length);
  for (const [start, size] of parts) {
    const xb = sliceBatch(x, start, size);
    const yb = sliceBatch(y, start, size);
    const zeros = shapes.map((s) => tf.zeros([size, ...s]));
    try {
      const r = forwardAdd(attacked, layers, xb, zeros);
      try {
        clean.set(scoreBatch(tasks, yb, r.output).ok, start);
        const sums = tf.tidy(() => tf.stack(r.inputs.map((a) => tf.sum(tf.sqrt(tf.sum(tf.square(tf.reshape(a, [size, -1])), 1))))));
        const s = sums.dataSync();
        sums.dispose();
        s.forEach((v, i) => (normSums[i] += v));
      } finally {
        disposeAddResult(r);
      }
    } finally {
      tf.dispose([...listOf(xb), ...listOf(yb), ...zeros]);
    }
    options.onProgress?.({stage: 'layer-profile', name: 'clean activations', done: ++done, total});
  }
  const meanNorms = Array.from(normSums, (s) => (n === 0 ? 0 : s / n));

  // Pass 2: one layer at a time.
  const robust = layers.map(() => rel.map(() => new Uint8Array(n)));
  parts.forEach(([start, size], b) => {
    const xb = sliceBatch(x, start, size);
    const yb = sliceBatch(y, start, size);
    try {
      layers.forEach((layer, l) => {
        rel.forEach((er, k) => {
          const epsilon = er * meanNorms[l];
          const own: PenaltyConfig = boxFlags[l] && clip ? {kind: 'l2', epsilon, box: clip} : {kind: 'l2', epsilon};
          const r = deepAttack(attacked, xb, yb, {
            penalties: layers.map((_, j) => (j === l ? own : null)),
            project: true,
            maxIterations: options.maxIterations,
            seed: pointSeed(seed, l, k, b),
            loss: options.loss,
          });
          try {
            const pred = predictDisturbed(attacked, xb as Tensors, r.disturbances);
            const ok = scoreBatch(tasks, yb, pred).ok;
            tf.dispose(pred);
            for (let i = 0; i < size; i++) robust[l][k][start + i] = ok[i] & clean[start + i];
          } finally {
            tf.dispose([...r.disturbances, r.objective]);
          }
          options.onProgress?.({stage: 'layer-profile', name: layer.name, epsilon: er, done: ++done, total});
        });
      });
    } finally {
      tf.dispose([...listOf(xb), ...listOf(yb)]);
    }
  });

  const count = (f: Uint8Array) => f.reduce((s, v) => s + v, 0);
  return {
    budget:
      'one layer disturbed at a time; L2 ball of radius ε_ℓ = ε_rel · mean_b ‖a_ℓ(x_b)‖₂ (mean L2 norm of the clean activation ' +
      'entering the layer over the evaluated examples), exact projection; the input stays inside the clip box when given',
    relativeEpsilons: rel,
    examples: n,
    cleanAccuracy: n === 0 ? 0 : count(clean) / n,
    instrumented,
    layers: layers.map((layer, l) => ({
      name: layer.name,
      index: l,
      isInput: inputFlags[l],
      shape: shapes[l],
      units: shapes[l].reduce((a, c) => a * c, 1),
      meanActivationNorm: meanNorms[l],
      points: rel.map((er, k) => ({
        relativeEpsilon: er,
        epsilon: er * meanNorms[l],
        accuracy: n === 0 ? 0 : count(robust[l][k]) / n,
        robust: count(robust[l][k]),
      })),
    })),
    seconds: round((Date.now() - t0) / 1000),
  };
}
