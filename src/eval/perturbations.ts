/**
 * Robustness to perturbations that hit hidden activations and weights in practice (not adversarially):
 * Gaussian noise on every hidden activation, uniform quantisation of every hidden activation, and
 * Gaussian noise on every kernel and bias. Clean vs perturbed accuracy of a classifier.
 *
 * The hidden activation sites are the ones the deep attack disturbs: the model's own hidden
 * Disturbance layers, or — for a model without any — the places {@link instrument} puts them (after
 * the end of every neuron block, never after an output), reached through a temporary instrumented
 * view that shares the model's weights. The input disturbance d₀ (model input or embedding output)
 * is never perturbed here.
 *
 * @packageDocumentation
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';

import {Disturbance} from '../layers/disturbance.js';
import {disturbanceSites, instrument} from '../model/instrument.js';
import {batchSizeOf, LossFn, outputTasks, Tensors} from '../objective/loss.js';
import {disposeAddResult, forwardAdd, neuronInputs, withModes} from '../objective/neuron_space.js';
import {checkKnownKeys, describeValue} from '../util/options.js';
import {batches, checkInputs, correctPredictions, isInputSite, listOf, nonFiniteRows, pointSeed, sliceBatch} from './robustness.js';

/** Settings of the activation-noise and weight-noise parts of {@link evaluatePerturbations}. */
export interface NoisePerturbationOptions {
  /** Noise levels σ_rel (σ relative to the layer's RMS activation, or to the weight tensor's std). */
  relativeSigmas?: number[];
  /** Independent random draws per level (mean and sd over draws are reported); default 5. */
  draws?: number;
}

/** Settings of the activation-quantisation part of {@link evaluatePerturbations}. */
export interface QuantizationPerturbationOptions {
  /** Bit widths (integers 1–16); default `[8, 4]`. */
  bits?: number[];
}

/** A progress report of {@link evaluatePerturbations}. */
export interface PerturbationProgress {
  stage: 'clean' | 'activation-noise' | 'activation-quantization' | 'weight-noise';
  /** σ_rel (noise stages) or bits (quantisation). */
  level?: number;
  /** Draw index (noise stages). */
  draw?: number;
  /** Work units (batch passes) finished so far, and in total. */
  done: number;
  total: number;
}

/** Options of {@link evaluatePerturbations}. */
export interface PerturbationOptions {
  /**
   * Gaussian noise on every hidden activation site at once; `false` to skip. Default
   * `{relativeSigmas: [0.1, 0.25, 0.5], draws: 5}`.
   */
  activationNoise?: boolean | NoisePerturbationOptions;
  /** Uniform quantisation of every hidden activation site; `false` to skip. Default `{bits: [8, 4]}`. */
  activationQuantization?: boolean | QuantizationPerturbationOptions;
  /** Gaussian noise on every kernel and bias; `false` to skip. Default `{relativeSigmas: [0.05, 0.1, 0.2], draws: 5}`. */
  weightNoise?: boolean | NoisePerturbationOptions;
  /** Examples per batch; default 256. */
  batchSize?: number;
  /**
   * Seed of all noise draws (same seed and batch size → identical results); default 0. Draw d uses the
   * same standard normal numbers at every σ_rel (common random numbers), so a level's result does not
   * depend on which other levels are listed.
   */
  seed?: number;
  /**
   * Loss used only to tell classification from regression outputs of an uncompiled model
   * (regression outputs are refused: this evaluation reports accuracies).
   */
  loss?: string | LossFn;
  /** Called after every batch pass. */
  onProgress?: (p: PerturbationProgress) => void;
}

/** One noise level: mean accuracy over the draws and its sample standard deviation. */
export interface NoisePoint {
  relativeSigma: number;
  /** Mean over draws of the fraction of examples classified correctly under the perturbation. */
  accuracy: number;
  /** Sample standard deviation (n − 1) of the per-draw accuracies; 0 for one draw. */
  sd: number;
  draws: number;
}

/** One bit width: accuracy of the quantised network. */
export interface QuantizationPoint {
  bits: number;
  accuracy: number;
}

/** Result of {@link evaluatePerturbations} (plain JSON). A part that was switched off is `null`. */
export interface PerturbationResult {
  examples: number;
  /** Fraction classified correctly without perturbation. */
  cleanAccuracy: number;
  activationNoise: {
    /** The noise rule, in words. */
    rule: string;
    /** Per hidden site: its name and the RMS of its clean activation (σ = σ_rel × rms). */
    sites: {name: string; rms: number}[];
    points: NoisePoint[];
  } | null;
  activationQuantization: {
    /** The quantisation scheme, in words. */
    scheme: string;
    /** Per hidden site: its name and the calibrated range [lo, hi] (0 included). */
    sites: {name: string; lo: number; hi: number}[];
    points: QuantizationPoint[];
  } | null;
  weightNoise: {
    /** The noise rule, in words. */
    rule: string;
    /** Per perturbed weight tensor: its name and std. */
    tensors: {name: string; std: number}[];
    points: NoisePoint[];
  } | null;
  /** True when the model had no hidden Disturbance layers and a temporary instrumented view was used. */
  instrumented: boolean;
  seed: number;
  batchSize: number;
  /** Wall-clock seconds. */
  seconds: number;
}

const WHO = 'evaluatePerturbations';
const KEYS = ['activationNoise', 'activationQuantization', 'weightNoise', 'batchSize', 'seed', 'loss', 'onProgress'] as const;
const NOISE_KEYS = ['relativeSigmas', 'draws'] as const;
const DEFAULT_ACTIVATION_SIGMAS = [0.1, 0.25, 0.5];
const DEFAULT_WEIGHT_SIGMAS = [0.05, 0.1, 0.2];
const DEFAULT_BITS = [8, 4];
const DEFAULT_DRAWS = 5;

const ACTIVATION_NOISE_RULE =
  'every hidden activation site at once (input excluded): a_ℓ + σ_ℓ·N(0, 1) elementwise, σ_ℓ = σ_rel · RMS of the clean a_ℓ ' +
  'over the evaluated examples; fresh noise per draw and batch, the same N(0, 1) numbers at every σ_rel of a draw';
const QUANTIZATION_SCHEME =
  'per-tensor asymmetric min–max uniform quantisation of every hidden activation site (input excluded), static ranges: ' +
  '[lo, hi] = [min(0, min a_ℓ), max(0, max a_ℓ)] of the clean float activation over the evaluated examples, ' +
  'scale = (hi − lo)/(2^bits − 1), integer zero point z = round(−lo/scale), q(a) = (clamp(round(a/scale) + z, 0, 2^bits − 1) − z)·scale ' +
  '(0 is exact); applied sequentially: each site quantises its activation computed from the already-quantised earlier sites';
const WEIGHT_NOISE_RULE =
  'every kernel and bias tensor w (names ending in kernel or bias; not BatchNorm/embedding weights) at once: ' +
  'w + σ_rel · std(w) · N(0, 1) elementwise, std over that tensor (population); one draw = one perturbed network ' +
  'evaluated on every example (the same N(0, 1) numbers at every σ_rel of a draw); weights restored bit-identically afterwards';

function checkList(v: unknown, what: string, check: (e: number) => boolean, rule: string): number[] {
  if (!Array.isArray(v) || v.length === 0) throw new Error(`${WHO}: ${what} must be a non-empty array of ${rule}; got ${describeValue(v)}.`);
  for (const e of v) {
    if (typeof e !== 'number' || !check(e)) throw new Error(`${WHO}: ${what} must hold ${rule}; got ${describeValue(e)}.`);
  }
  return [...v];
}

function checkInt(v: unknown, what: string, min: number, fallback: number): number {
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) throw new Error(`${WHO}: ${what} must be an integer >= ${min}; got ${describeValue(v)}.`);
  return v;
}

/** A part's options: `null` when switched off, else the object with defaults to fill. */
function partOptions<T extends object>(v: unknown, what: string, keys: readonly string[]): Partial<T> | null {
  if (v === false) return null;
  if (v === undefined || v === true) return {};
  if (v === null || typeof v !== 'object' || Array.isArray(v)) {
    throw new Error(`${WHO}: options.${what} must be true, false or an object {${keys.join(', ')}}; got ${describeValue(v)}.`);
  }
  checkKnownKeys(v, keys, `${WHO}: options.${what}`);
  return v as Partial<T>;
}

function noiseOptions(v: unknown, what: string, defaults: number[]): {sigmas: number[]; draws: number} | null {
  const o = partOptions<NoisePerturbationOptions>(v, what, NOISE_KEYS);
  if (o === null) return null;
  const sigmas = o.relativeSigmas === undefined ? defaults : checkList(o.relativeSigmas, `options.${what}.relativeSigmas`, (e) => Number.isFinite(e) && e >= 0, 'finite numbers >= 0');
  return {sigmas, draws: checkInt(o.draws, `options.${what}.draws`, 1, DEFAULT_DRAWS)};
}

/** Mean and sample standard deviation. */
function meanSd(v: number[]): {mean: number; sd: number} {
  const mean = v.reduce((s, e) => s + e, 0) / v.length;
  if (v.length < 2) return {mean, sd: 0};
  return {mean, sd: Math.sqrt(v.reduce((s, e) => s + (e - mean) ** 2, 0) / (v.length - 1))};
}

/** Weight tensors perturbed by the weight-noise part: kernels and biases (each variable once). */
function kernelsAndBiases(model: tfl.LayersModel): tfl.LayerVariable[] {
  const seen = new Set<number>();
  const out: tfl.LayerVariable[] = [];
  for (const w of model.weights) {
    const last = w.name.split('/').pop() ?? w.name;
    if (!/(kernel|bias)(_\d+)?$/.test(last) || w.dtype !== 'float32') continue;
    const v = w.read();
    if (seen.has(v.id)) continue;
    seen.add(v.id);
    out.push(w);
  }
  return out;
}

/**
 * The hidden activation sites: the model's own hidden Disturbance layers, or those of a temporary
 * instrumented view (sharing every weight) when it has none.
 */
function hiddenSites(model: tfl.LayersModel): {view: tfl.LayersModel; layers: Disturbance[]; shapes: number[][]; instrumented: boolean} {
  const pick = (m: tfl.LayersModel) => disturbanceSites(m).filter((s) => !isInputSite(m, s.layer));
  let view = model;
  let sites = pick(model);
  let instrumented = false;
  if (sites.length === 0) {
    try {
      view = instrument(model, {input: null, embedding: null, name: `${model.name}_perturbation_view`});
    } catch (e) {
      throw new Error(`${WHO}: model '${model.name}' has no hidden activation site to perturb (${(e as Error).message})`);
    }
    instrumented = true;
    sites = pick(view);
    if (sites.length === 0) throw new Error(`${WHO}: model '${model.name}' has no hidden activation site to perturb (no neuron block before the output).`);
  }
  const shapes = sites.map((s) => {
    const shape = s.inputShape.slice(1);
    if (shape.some((d) => d == null)) {
      throw new Error(`${WHO}: hidden site '${s.layer.name}' has an activation of unknown shape [${s.inputShape.map(String).join(', ')}]; give the model input a fixed shape.`);
    }
    return shape as number[];
  });
  return {view, layers: sites.map((s) => s.layer), shapes, instrumented};
}

/** Per example 1 when every output's prediction is correct and finite. */
function correctRows(y: Tensors, pred: Tensors): Uint8Array {
  const ys = listOf(y);
  const ps = listOf(pred);
  const ok = new Uint8Array(ps[0].shape[0]).fill(1);
  ps.forEach((p, o) => correctPredictions(ys[o], p).forEach((e, i) => (ok[i] &= e)));
  nonFiniteRows(pred).forEach((bad, i) => {
    if (bad) ok[i] = 0;
  });
  return ok;
}

function countOnes(f: Uint8Array): number {
  return f.reduce((s, v) => s + v, 0);
}

/** Asymmetric uniform quantiser of one site at one bit width (see QUANTIZATION_SCHEME). */
function quantizer(lo: number, hi: number, bits: number): (a: tf.Tensor) => tf.Tensor {
  const l = Math.min(0, lo);
  const h = Math.max(0, hi);
  const levels = 2 ** bits - 1;
  const scale = (h - l) / levels;
  if (!(scale > 0)) return (a) => tf.zerosLike(a);
  const zero = Math.round(-l / scale);
  return (a) => tf.tidy(() => tf.mul(tf.sub(tf.clipByValue(tf.add(tf.round(tf.div(a, scale)), zero), 0, levels), zero), scale));
}

/**
 * Clean vs perturbed accuracy of a classifier under perturbations that hit its hidden activations and
 * weights in practice — the question behind deep adversarial training's claim of being "prepared
 * against a stronger attacker": does a network trained against hidden-layer disturbances also
 * tolerate random ones?
 *
 * - **Activation noise** (`activationNoise`): Gaussian noise added to every hidden activation site at
 *   once (the sites of the deep attack; the input is excluded), σ_ℓ = σ_rel × RMS of site ℓ's clean
 *   activation over the evaluated examples; `draws` seeded draws per σ_rel → mean accuracy and sd.
 * - **Activation quantisation** (`activationQuantization`): every hidden site quantised to `bits` with
 *   per-tensor asymmetric min–max uniform quantisation, static ranges calibrated on the clean float
 *   activations of the evaluated examples (extended to include 0, integer zero point, so 0 is exact;
 *   values outside the range are clamped). Applied sequentially, as a quantised network runs: the
 *   activation at site ℓ is computed from the already-quantised sites before it, then quantised.
 * - **Weight noise** (`weightNoise`): every kernel and bias tensor w ← w + σ_rel × std(w) × N(0, 1)
 *   (std over that tensor; a tensor of equal values, such as zero biases, gets none); one draw is one
 *   perturbed network. The weights are restored bit-identically afterwards, also when an error is
 *   thrown (e.g. by `onProgress`).
 *
 * ```ts
 * const r = evaluatePerturbations(model, xTest, yTest, {activationNoise: {relativeSigmas: [0.25], draws: 3}, weightNoise: false});
 * console.log(r.cleanAccuracy, r.activationNoise?.points, r.activationQuantization?.points);
 * ```
 *
 * The model runs in inference mode (`training: false`). A model without hidden Disturbance layers is
 * reached through a temporary instrumented view sharing its weights; the model is not changed. Every
 * tensor created is disposed; `x` and `y` are not.
 *
 * @param model A classifier (`tf.sequential` / `tf.model`), plain or instrumented; every output a classification output.
 * @param x Inputs `[N, ...inputShape]` (a list for several inputs).
 * @param y Labels: one-hot `[N, K]`, class indices `[N]`/`[N, 1]`, or 0/1 for one output unit (a list for several outputs).
 * @returns A plain JSON-serialisable {@link PerturbationResult}.
 * @throws On unknown or invalid options (naming the option), mismatched x/y, regression outputs, a model without hidden sites.
 */
export function evaluatePerturbations(model: tfl.LayersModel, x: Tensors, y: Tensors, options: PerturbationOptions = {}): PerturbationResult {
  const t0 = Date.now();
  checkKnownKeys(options, KEYS, WHO);
  const o = options ?? {};
  checkInputs(model, x, y, WHO);
  const batchSize = checkInt(o.batchSize, 'options.batchSize', 1, 256);
  const seed = o.seed ?? 0;
  if (typeof seed !== 'number' || !Number.isFinite(seed)) throw new Error(`${WHO}: options.seed must be a finite number; got ${describeValue(seed)}.`);
  if (o.onProgress !== undefined && typeof o.onProgress !== 'function') throw new Error(`${WHO}: options.onProgress must be a function; got ${describeValue(o.onProgress)}.`);
  const actNoise = noiseOptions(o.activationNoise, 'activationNoise', DEFAULT_ACTIVATION_SIGMAS);
  const weightNoise = noiseOptions(o.weightNoise, 'weightNoise', DEFAULT_WEIGHT_SIGMAS);
  const quantOpts = partOptions<QuantizationPerturbationOptions>(o.activationQuantization, 'activationQuantization', ['bits']);
  const bitsList = quantOpts === null ? null : quantOpts.bits === undefined ? DEFAULT_BITS : checkList(quantOpts.bits, 'options.activationQuantization.bits', (e) => Number.isInteger(e) && e >= 1 && e <= 16, 'integers from 1 to 16');
  let tasks: {name: string; regression: boolean}[] | null = null;
  try {
    tasks = outputTasks(model, o.loss);
  } catch {
    // Uncompiled and no loss given: every output is scored as a classifier.
  }
  const regression = tasks?.filter((t) => t.regression) ?? [];
  if (regression.length > 0) {
    throw new Error(`${WHO}: output(s) ${regression.map((t) => `'${t.name}'`).join(', ')} of model '${model.name}' have a regression loss; this evaluation reports accuracies of classifiers only.`);
  }

  const needSites = actNoise !== null || bitsList !== null;
  const {view, layers, shapes, instrumented} = needSites ? hiddenSites(model) : {view: model, layers: [] as Disturbance[], shapes: [] as number[][], instrumented: false};
  const weights = weightNoise ? kernelsAndBiases(model) : [];
  if (weightNoise && weights.length === 0) throw new Error(`${WHO}: model '${model.name}' has no kernel or bias weights for weightNoise.`);
  const n = batchSizeOf(x);
  const parts = batches(n, batchSize);
  const total =
    parts.length *
    (1 + (actNoise ? actNoise.sigmas.length * actNoise.draws : 0) + (bitsList ? bitsList.length : 0) + (weightNoise ? weightNoise.sigmas.length * weightNoise.draws : 0));
  let done = 0;
  const report = (stage: PerturbationProgress['stage'], level?: number, draw?: number) => o.onProgress?.({stage, level, draw, done: ++done, total});

  /** Runs `fn` on every batch (sliced x, y and the batch's start/size/index) and disposes the slices. */
  const eachBatch = (fn: (xb: Tensors, yb: Tensors, start: number, size: number, b: number) => void) => {
    parts.forEach(([start, size], b) => {
      const xb = sliceBatch(x, start, size);
      const yb = sliceBatch(y, start, size);
      try {
        fn(xb, yb, start, size, b);
      } finally {
        tf.dispose([...listOf(xb), ...listOf(yb)]);
      }
    });
  };
  const zerosFor = (size: number) => shapes.map((s) => tf.zeros([size, ...s]));

  // Pass 1: clean correctness and, per hidden site, Σa², min and max of the clean activation.
  const clean = new Uint8Array(n);
  const sumSq = new Float64Array(layers.length);
  const lo = new Array<number>(layers.length).fill(Infinity);
  const hi = new Array<number>(layers.length).fill(-Infinity);
  eachBatch((xb, yb, start, size) => {
    if (layers.length === 0) {
      const pred = view.apply(xb, {training: false}) as Tensors;
      try {
        clean.set(correctRows(yb, pred), start);
      } finally {
        tf.dispose(pred);
      }
    } else {
      const zeros = zerosFor(size);
      try {
        const r = forwardAdd(view, layers, xb, zeros);
        try {
          clean.set(correctRows(yb, r.output), start);
          const stats = tf.tidy(() => tf.stack(r.inputs.map((a) => tf.stack([tf.sum(tf.square(a)), tf.min(a), tf.max(a)]))));
          const s = stats.dataSync();
          stats.dispose();
          layers.forEach((_, l) => {
            sumSq[l] += s[3 * l];
            lo[l] = Math.min(lo[l], s[3 * l + 1]);
            hi[l] = Math.max(hi[l], s[3 * l + 2]);
          });
        } finally {
          disposeAddResult(r);
        }
      } finally {
        tf.dispose(zeros);
      }
    }
    report('clean');
  });
  const units = shapes.map((s) => s.reduce((a, b) => a * b, 1));
  const rms = layers.map((_, l) => Math.sqrt(sumSq[l] / (n * units[l])));
  const cleanCount = countOnes(clean);

  const result: PerturbationResult = {
    examples: n,
    cleanAccuracy: cleanCount / n,
    activationNoise: null,
    activationQuantization: null,
    weightNoise: null,
    instrumented,
    seed,
    batchSize,
    seconds: 0,
  };

  // Activation noise: all hidden sites at once, in `add` mode.
  if (actNoise) {
    const points = actNoise.sigmas.map((rel) => {
      const accs: number[] = [];
      for (let d = 0; d < actNoise.draws; d++) {
        let correct = 0;
        eachBatch((xb, yb, _start, size, b) => {
          const noise = shapes.map((s, l) => tf.randomNormal([size, ...s], 0, rel * rms[l], 'float32', pointSeed(seed, 1000 + l, d, b)));
          try {
            const pred = withModes(layers, 'add', noise, () => view.apply(xb, {training: false}) as Tensors);
            try {
              correct += countOnes(correctRows(yb, pred));
            } finally {
              tf.dispose(pred);
            }
          } finally {
            tf.dispose(noise);
          }
          report('activation-noise', rel, d);
        });
        accs.push(correct / n);
      }
      const {mean, sd} = meanSd(accs);
      return {relativeSigma: rel, accuracy: mean, sd, draws: actNoise.draws};
    });
    result.activationNoise = {rule: ACTIVATION_NOISE_RULE, sites: layers.map((l, i) => ({name: l.name, rms: rms[i]})), points};
  }

  // Activation quantisation: site by site in `neuron` mode (the neurons of site ℓ are q(aℓ), aℓ computed
  // from the quantised sites before it), then one forward pass with every site quantised.
  if (bitsList) {
    const points = bitsList.map((bits) => {
      const q = layers.map((_, l) => quantizer(lo[l], hi[l], bits));
      let correct = 0;
      eachBatch((xb, yb, _start, size) => {
        const quantised: tf.Tensor[] = [];
        try {
          for (let l = 0; l < layers.length; l++) {
            const placeholder = tf.zeros([size, ...shapes[l]]);
            let inputs: tf.Tensor[] = [];
            try {
              inputs = neuronInputs(view, layers.slice(0, l + 1), xb, [...quantised, placeholder]);
              quantised.push(q[l](inputs[l]));
            } finally {
              tf.dispose([placeholder, ...inputs]);
            }
          }
          const pred = withModes(layers, 'neuron', quantised, () => view.apply(xb, {training: false}) as Tensors);
          try {
            correct += countOnes(correctRows(yb, pred));
          } finally {
            tf.dispose(pred);
          }
        } finally {
          tf.dispose(quantised);
        }
        report('activation-quantization', bits);
      });
      return {bits, accuracy: correct / n};
    });
    result.activationQuantization = {scheme: QUANTIZATION_SCHEME, sites: layers.map((l, i) => ({name: l.name, lo: Math.min(0, lo[i]), hi: Math.max(0, hi[i])})), points};
  }

  // Weight noise: perturb every kernel and bias, evaluate, restore exactly (also on errors).
  if (weightNoise) {
    const variables = weights.map((w) => w.read() as tf.Variable);
    const stds = variables.map((v) =>
      tf.tidy(() => {
        const m = tf.moments(tf.reshape(v, [-1]));
        return Math.sqrt(Math.max(0, m.variance.dataSync()[0]));
      }),
    );
    const originals = variables.map((v) => tf.clone(v));
    try {
      const points = weightNoise.sigmas.map((rel) => {
        const accs: number[] = [];
        for (let d = 0; d < weightNoise.draws; d++) {
          try {
            variables.forEach((v, i) => {
              const noisy = tf.tidy(() => tf.add(originals[i], tf.randomNormal(v.shape, 0, rel * stds[i], 'float32', pointSeed(seed, 2000 + i, d, 0))));
              v.assign(noisy);
              noisy.dispose();
            });
            let correct = 0;
            eachBatch((xb, yb) => {
              const pred = model.apply(xb, {training: false}) as Tensors;
              try {
                correct += countOnes(correctRows(yb, pred));
              } finally {
                tf.dispose(pred);
              }
              report('weight-noise', rel, d);
            });
            accs.push(correct / n);
          } finally {
            variables.forEach((v, i) => v.assign(originals[i]));
          }
        }
        const {mean, sd} = meanSd(accs);
        return {relativeSigma: rel, accuracy: mean, sd, draws: weightNoise.draws};
      });
      result.weightNoise = {rule: WEIGHT_NOISE_RULE, tensors: weights.map((w, i) => ({name: w.name, std: stds[i]})), points};
    } finally {
      variables.forEach((v, i) => v.assign(originals[i]));
      tf.dispose(originals);
    }
  }

  result.seconds = Math.round(Date.now() - t0) / 1000;
  return result;
}
