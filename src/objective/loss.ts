/**
 * Per-example loss c(y_b, ŷ_b), resolved from a compiled tfjs-layers model.
 *
 * tfjs-layers computes a training loss in two stages: the loss function (e.g.
 * `meanSquaredError`) returns one value per example (or per example and
 * position for outputs of rank > 2), and the training loop then takes
 * `tf.mean` over everything. Attacks need the first stage only: the gradient
 * of `Σ_b c(y_b, ŷ_b)` w.r.t. the input gives every example its own gradient,
 * unscaled by the batch size.
 *
 * How the compiled loss is reached (tfjs-layers 4.22): `model.compile(...)`
 * stores the user's argument in `model.loss` and the resolved functions in
 * `model.lossFunctions` (public field of `LayersModel`, one per output). A
 * `Sequential` forwards `compile` to an inner `LayersModel` kept in
 * `sequential.model`, so there `lossFunctions` lives one level down
 * (`sequential.lossFunctions` is `undefined`). Both places are checked.
 *
 * The internal `losses` module of tfjs-layers is not importable from Node
 * (the package has no `exports` map and its ESM files use extension-less
 * imports); the public `tfl.metrics` namespace re-exports the exact loss
 * implementations for `meanSquaredError`, `meanAbsoluteError`,
 * `meanAbsolutePercentageError`, `binaryCrossentropy`,
 * `categoricalCrossentropy` and `cosineProximity`. The remaining losses are
 * re-implemented below line by line from tfjs-layers' `losses.ts`.
 *
 * @packageDocumentation
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import {compileArguments, compiledLossFunctions, sequentialInnerModel} from '../model/internals.js';

/**
 * A loss function in tfjs-layers' convention: `(yTrue, yPred)` → a tensor
 * whose first axis is the batch (values *before* batch averaging). A function
 * returning a scalar is rejected by {@link perExampleLoss}, since the
 * per-example values cannot be recovered from it.
 */
export type LossFn = (yTrue: tf.Tensor, yPred: tf.Tensor) => tf.Tensor;

/** The function returned by {@link perExampleLoss}: one loss value per example, shape `[B]`. */
export type PerExampleLossFn = (yTrue: tf.Tensor | tf.Tensor[], yPred: tf.Tensor | tf.Tensor[]) => tf.Tensor1D;

/** tfjs-layers' fuzz factor (`epsilon()` in its backend/common), i.e. the backend's epsilon. */
function eps(): number {
  return tf.backend().epsilon();
}

function sparseCategoricalCrossentropy(yTrue: tf.Tensor, yPred: tf.Tensor): tf.Tensor {
  // Same as tfjs-layers' losses.sparseCategoricalCrossentropy (fromLogits = false).
  return tf.tidy(() => {
    const flatTarget = tf.cast(tf.floor(tf.reshape(yTrue, [yTrue.size])), 'int32') as tf.Tensor1D;
    const output = tf.clipByValue(yPred, eps(), 1 - eps());
    const outputShape = output.shape;
    const oneHot = tf.reshape(tf.oneHot(flatTarget, outputShape[outputShape.length - 1]), outputShape);
    return tfl.metrics.categoricalCrossentropy(oneHot, output);
  });
}

function meanSquaredLogarithmicError(yTrue: tf.Tensor, yPred: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const firstLog = tf.log(tf.add(1, tf.clipByValue(yPred, eps(), Number.MAX_VALUE)));
    const secondLog = tf.log(tf.add(1, tf.clipByValue(yTrue, eps(), Number.MAX_VALUE)));
    return tf.mean(tf.square(tf.sub(firstLog, secondLog)), -1);
  });
}

function squaredHinge(yTrue: tf.Tensor, yPred: tf.Tensor): tf.Tensor {
  return tf.tidy(() =>
    tf.mean(tf.square(tf.maximum(0, tf.sub(1, tf.mul(yTrue, yPred)))), -1));
}

function hinge(yTrue: tf.Tensor, yPred: tf.Tensor): tf.Tensor {
  return tf.tidy(() => tf.mean(tf.maximum(0, tf.sub(1, tf.mul(yTrue, yPred))), -1));
}

function categoricalHinge(yTrue: tf.Tensor, yPred: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const pos = tf.sum(tf.mul(yTrue, yPred), -1);
    const neg = tf.max(tf.mul(tf.sub(1, yTrue), yPred), -1);
    return tf.maximum(0, tf.add(1, tf.sub(neg, pos)));
  });
}

function logcosh(yTrue: tf.Tensor, yPred: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const d = tf.sub(yPred, yTrue);
    return tf.mean(tf.sub(tf.add(d, tf.softplus(tf.mul(-2, d))), Math.log(2)), -1);
  });
}

function kullbackLeiblerDivergence(yTrue: tf.Tensor, yPred: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const t = tf.clipByValue(yTrue, eps(), 1);
    const p = tf.clipByValue(yPred, eps(), 1);
    return tf.sum(tf.mul(yTrue, tf.log(tf.div(t, p))), -1);
  });
}

function poisson(yTrue: tf.Tensor, yPred: tf.Tensor): tf.Tensor {
  return tf.tidy(() =>
    tf.mean(tf.sub(yPred, tf.mul(yTrue, tf.log(tf.add(eps(), yPred)))), -1));
}

/**
 * Loss names accepted by {@link perExampleLoss}, keyed by their normalised
 * form (lower case, underscores removed), so that `categoricalCrossentropy`,
 * `categorical_crossentropy` and `CATEGORICAL_CROSSENTROPY` all resolve.
 */
const LOSSES: Record<string, LossFn> = {
  meansquarederror: tfl.metrics.meanSquaredError,
  mse: tfl.metrics.meanSquaredError,
  meanabsoluteerror: tfl.metrics.meanAbsoluteError,
  mae: tfl.metrics.meanAbsoluteError,
  meanabsolutepercentageerror: tfl.metrics.meanAbsolutePercentageError,
  mape: tfl.metrics.meanAbsolutePercentageError,
  meansquaredlogarithmicerror: meanSquaredLogarithmicError,
  msle: meanSquaredLogarithmicError,
  squaredhinge: squaredHinge,
  hinge,
  categoricalhinge: categoricalHinge,
  logcosh,
  categoricalcrossentropy: tfl.metrics.categoricalCrossentropy,
  sparsecategoricalcrossentropy: sparseCategoricalCrossentropy,
  binarycrossentropy: tfl.metrics.binaryCrossentropy,
  kullbackleiblerdivergence: kullbackLeiblerDivergence,
  kld: kullbackLeiblerDivergence,
  poisson,
  cosineproximity: tfl.metrics.cosineProximity,
  cosine: tfl.metrics.cosineProximity,
};

/**
 * Resolves a loss name as tfjs-layers (camelCase) or Keras (snake_case) spells
 * it, e.g. `'categoricalCrossentropy'`, `'sparse_categorical_crossentropy'`,
 * `'mse'`.
 *
 * @param name The loss name.
 * @returns The tfjs loss function (values per example, before batch averaging).
 * @throws Error naming the unknown loss and listing the accepted names.
 */
export function lossByName(name: string): LossFn {
  const key = name.replace(/_/g, '').toLowerCase();
  const fn = LOSSES[key];
  if (fn === undefined) {
    throw new Error(
      `Unknown loss "${name}". Known losses: categoricalCrossentropy, ` +
        `sparseCategoricalCrossentropy, binaryCrossentropy, meanSquaredError (mse), ` +
        `meanAbsoluteError (mae), meanAbsolutePercentageError (mape), ` +
        `meanSquaredLogarithmicError (msle), hinge, squaredHinge, categoricalHinge, ` +
        `logcosh, kullbackLeiblerDivergence (kld), poisson, cosineProximity ` +
        `(snake_case spellings are accepted too), or pass a loss function.`);
  }
  return fn;
}

/** The model and, for a Sequential, its inner functional model (which holds the compiled state). */
function compiledHolders(model: tfl.LayersModel): tfl.LayersModel[] {
  const inner = sequentialInnerModel(model);
  return inner ? [model, inner] : [model];
}

function resolveLossSpec(spec: unknown): LossFn | undefined {
  if (typeof spec === 'function') return spec as LossFn;
  if (typeof spec === 'string') return lossByName(spec);
  if (Array.isArray(spec) && spec.length === 1) return resolveLossSpec(spec[0]);
  if (spec !== null && typeof spec === 'object' && !Array.isArray(spec)) {
    const values = Object.values(spec as Record<string, unknown>);
    if (values.length === 1) return resolveLossSpec(values[0]);
  }
  return undefined;
}

/** The loss functions the model was compiled with, one per output, or `undefined` if it was not compiled. */
function compiledLosses(model: tfl.LayersModel, nOut: number): LossFn[] | undefined {
  // LayersModel keeps the resolved functions; Sequential delegates to its inner model.
  for (const holder of compiledHolders(model)) {
    const fns = compiledLossFunctions(holder);
    if (Array.isArray(fns) && fns.length === nOut && fns.every((f) => typeof f === 'function')) {
      return fns as LossFn[];
    }
  }
  // Fallback: the raw compile argument (string | string[] | dict | fn).
  if (nOut === 1) {
    for (const holder of compiledHolders(model)) {
      const spec = compileArguments(holder).loss;
      if (spec !== undefined && spec !== null) {
        const fn = resolveLossSpec(spec);
        if (fn !== undefined) return [fn];
      }
    }
  }
  return undefined;
}

/** The raw compile argument of the loss for output `i` (a name, when it was given as one). */
function compiledLossName(model: tfl.LayersModel, i: number, outputNames: string[]): string | undefined {
  for (const holder of compiledHolders(model)) {
    const spec = compileArguments(holder).loss;
    if (typeof spec === 'string') return spec;
    if (Array.isArray(spec) && typeof spec[i] === 'string') return spec[i] as string;
    if (spec != null && typeof spec === 'object' && !Array.isArray(spec)) {
      const v = (spec as Record<string, unknown>)[outputNames[i]];
      if (typeof v === 'string') return v;
    }
  }
  return undefined;
}

/** Reduces a loss tensor of shape `[B, ...]` to `[B]` by averaging the non-batch axes. */
function toPerExample(loss: tf.Tensor, batch: number, what: string): tf.Tensor1D {
  if (loss.rank === 0) {
    throw new Error(
      `${what} returned a scalar; perExampleLoss needs one value per example ` +
        `(shape [${batch}] or [${batch}, ...]), i.e. the loss before batch averaging.`);
  }
  if (loss.shape[0] !== batch) {
    throw new Error(
      `${what} returned shape [${loss.shape.join(', ')}]; expected the batch size ` +
        `${batch} as first dimension.`);
  }
  if (loss.rank === 1) return loss as tf.Tensor1D;
  const axes: number[] = [];
  for (let a = 1; a < loss.rank; a++) axes.push(a);
  return tf.mean(loss, axes) as tf.Tensor1D;
}

/** One tensor or one per model output. */
export type Tensors = tf.Tensor | tf.Tensor[];

/** The i-th tensor of a list, or the tensor itself for a single-output model. */
function pick(t: Tensors, i: number, n: number, what: string): tf.Tensor {
  if (Array.isArray(t)) {
    if (t.length !== n) throw new Error(`${what}: expected ${n} tensor(s), one per model output, got ${t.length}.`);
    return t[i];
  }
  if (n !== 1) throw new Error(`${what}: the model has ${n} outputs; pass a list of ${n} tensors (one per output).`);
  return t;
}

/** Losses whose value grows quadratically in the output (see {@link attackLoss}). */
const QUADRATIC_GROWTH = new Set(['meansquarederror', 'mse', 'squaredhinge']);

/** The normalised name (lower case, no underscores) of a loss function or loss name. */
function lossKey(fnOrName: unknown): string | undefined {
  if (typeof fnOrName === 'string') return fnOrName.replace(/_/g, '').toLowerCase();
  if (typeof fnOrName === 'function' && fnOrName.name) return fnOrName.name.replace(/_/g, '').toLowerCase();
  return undefined;
}

interface ResolvedLosses {
  fns: LossFn[];
  whats: string[];
  /** Per output: the loss grows quadratically in the output (meanSquaredError, squaredHinge). */
  quadratic: boolean[];
}

function resolveLosses(model: tfl.LayersModel, lossOverride: string | LossFn | (string | LossFn)[] | undefined, who: string): ResolvedLosses {
  const nOut = model.outputs?.length ?? 1;
  const outputNames = (model.outputs ?? []).map((t, i) => t.sourceLayer?.name ?? `output ${i}`);
  const one = (spec: unknown, i: number): {fn: LossFn; what: string; key?: string} => {
    const where = nOut > 1 ? ` (output '${outputNames[i]}')` : '';
    if (typeof spec === 'string') return {fn: lossByName(spec), what: `Loss "${spec}"${where}`, key: lossKey(spec)};
    if (typeof spec === 'function') return {fn: spec as LossFn, what: `The loss function${where}`, key: lossKey(spec)};
    throw new Error(`loss must be a loss name or a function (yTrue, yPred) => Tensor; got ${typeof spec}.`);
  };
  let parts: {fn: LossFn; what: string; key?: string}[];
  if (lossOverride !== undefined && lossOverride !== null) {
    if (Array.isArray(lossOverride)) {
      if (lossOverride.length !== nOut) {
        throw new Error(`${who}: loss has ${lossOverride.length} entries but the model has ${nOut} output(s) (${outputNames.join(', ')}).`);
      }
      parts = lossOverride.map((l, i) => one(l, i));
    } else {
      parts = outputNames.map((_, i) => one(lossOverride, i));
    }
  } else {
    const fns = compiledLosses(model, nOut);
    if (fns === undefined) {
      throw new Error(
        'The model has no loss: call model.compile({optimizer, loss}) before ' +
          'computing per-example losses or running an attack, or pass a loss explicitly.');
    }
    parts = fns.map((fn, i) => ({
      fn,
      what: `The model's compiled loss${nOut > 1 ? ` (output '${outputNames[i]}')` : ''}`,
      key: lossKey(compiledLossName(model, i, outputNames)) ?? lossKey(fn),
    }));
  }
  return {fns: parts.map((p) => p.fn), whats: parts.map((p) => p.what), quadratic: parts.map((p) => p.key != null && QUADRATIC_GROWTH.has(p.key))};
}

function combine(r: ResolvedLosses, nOut: number, transform?: (i: number, l: tf.Tensor1D) => tf.Tensor1D): PerExampleLossFn {
  return (yTrue: Tensors, yPred: Tensors): tf.Tensor1D =>
    tf.tidy(() => {
      let total: tf.Tensor1D | null = null;
      for (let i = 0; i < nOut; i++) {
        const yp = pick(yPred, i, nOut, 'predictions');
        const yt = pick(yTrue, i, nOut, 'targets');
        let l = toPerExample(r.fns[i](yt, yp), yp.shape[0], r.whats[i]);
        if (transform) l = transform(i, l);
        total = total === null ? l : (tf.add(total, l) as tf.Tensor1D);
      }
      return total as tf.Tensor1D;
    });
}

/**
 * Returns the model's loss per example, c(y_b, ŷ_b), *before* batch averaging.
 *
 * The values are exactly those tfjs-layers computes inside `fit`/`evaluate`
 * before it takes the mean over the batch (e.g. `meanSquaredError` averages
 * over the last axis, `categoricalCrossentropy` sums over classes after
 * normalising and clipping the predictions to [ε, 1−ε]). For outputs of rank
 * > 2 the remaining non-batch axes are averaged, so that
 * `mean(perExample) == ` tfjs's batch loss (without sample weights) and
 * `sum(perExample) == B × ` batch loss.
 *
 * Models with several outputs: the total loss tfjs minimises, Σ_o c_o(y_o, ŷ_o)
 * (one compiled loss per output; tfjs-layers 4.x has no `lossWeights`, every
 * output counts once), and the returned function takes lists of targets and
 * predictions, one per output.
 *
 * @param model A `LayersModel` (or `Sequential`). It must have been compiled
 *   unless `lossOverride` is given.
 * @param lossOverride Optional loss to use instead of the compiled one: a name
 *   (camelCase as in tfjs, or snake_case/short aliases as in Keras: `'mse'`,
 *   `'categorical_crossentropy'`, …) or a function `(yTrue, yPred) => Tensor`
 *   returning per-example values with the batch as first axis; for several
 *   outputs one loss for all, or a list with one per output.
 * @returns `(yTrue, yPred) => Tensor1D` of shape `[B]`. The returned function
 *   does not dispose its arguments and leaves no intermediate tensors.
 * @throws If the model is not compiled (and no override is given), the loss
 *   name is unknown or a loss list has the wrong length.
 */
export function perExampleLoss(
  model: tfl.LayersModel,
  lossOverride?: string | LossFn | (string | LossFn)[],
): PerExampleLossFn {
  return combine(resolveLosses(model, lossOverride, 'perExampleLoss'), model.outputs?.length ?? 1);
}

/**
 * The per-example loss an attack maximises by default: {@link perExampleLoss},
 * except that an output compiled with a loss that grows *quadratically* in the
 * output (`meanSquaredError`, `squaredHinge`) enters through its root,
 * √(c + 10⁻¹²), which grows linearly. Why: with c = ‖y − ŷ‖² and a quadratic
 * penalty −λ‖d‖², the inner maximisation c + ρ is unbounded as soon as the
 * network's gain along some direction exceeds √λ (the boston-housing MLP
 * reached an objective of 4.7·10¹⁴); with √c it stays bounded for every λ > 0
 * on networks that grow at most linearly in their neurons (ReLU/tanh/sigmoid
 * layers). The root is monotone, so it ranks disturbances the way c does; only
 * the trade-off against the penalty changes. The update of adversarial
 * training always uses the compiled loss itself. An explicit `lossOverride`
 * is used exactly as given (no root).
 */
export function attackLoss(model: tfl.LayersModel, lossOverride?: string | LossFn | (string | LossFn)[]): PerExampleLossFn {
  const r = resolveLosses(model, lossOverride, 'attackLoss');
  const n = model.outputs?.length ?? 1;
  if (lossOverride != null || !r.quadratic.some(Boolean)) return combine(r, n);
  return combine(r, n, (i, l) => (r.quadratic[i] ? (tf.sqrt(tf.add(l, 1e-12)) as tf.Tensor1D) : l));
}

/** True when the model's compiled loss (some output's) grows quadratically, i.e. {@link attackLoss} takes its root. */
export function hasQuadraticLoss(model: tfl.LayersModel): boolean {
  try {
    return resolveLosses(model, undefined, 'hasQuadraticLoss').quadratic.some(Boolean);
  } catch {
    return false;
  }
}

/** Number of examples in `x` (one tensor or a list of input tensors). */
export function batchSizeOf(x: Tensors): number {
  const t = Array.isArray(x) ? x[0] : x;
  return t == null || t.rank < 1 ? NaN : t.shape[0];
}

/**
 * Checks that `x` and `y` can be fed to `model` together: one tensor (or a
 * list with one tensor per model input / output), every tensor with the same
 * batch size, and each input's non-batch shape equal to the model's input
 * shape (`null` entries of the model's shape match any size).
 *
 * @param model The model.
 * @param x Inputs, `[B, ...inputShape]`, or a list of them for a model with several inputs.
 * @param y Targets, `[B, ...]`, or a list of them for a model with several outputs.
 * @throws Error giving the shapes when they do not match, or the expected type.
 */
export function assertCompatibleXY(model: tfl.LayersModel, x: Tensors, y: Tensors): void {
  const fmt = (s: ReadonlyArray<number | null>): string =>
    `[${s.map((d) => (d === null ? 'null' : String(d))).join(', ')}]`;
  const nIn = model.inputs?.length ?? 1;
  const nOut = model.outputs?.length ?? 1;
  const list = (v: unknown, n: number, what: string, names: string): tf.Tensor[] => {
    const arr = Array.isArray(v) ? v : [v];
    if (arr.length !== n) {
      throw new Error(`${what} must be ${n === 1 ? 'a tensor' : `a list of ${n} tensors (${names})`}; got ${Array.isArray(v) ? `a list of ${arr.length}` : 'one tensor'}.`);
    }
    arr.forEach((t, i) => {
      if (!(t instanceof tf.Tensor)) {
        const got = t === null ? 'null' : Array.isArray(t) ? 'an array' : typeof t;
        throw new Error(`${what}${n > 1 ? `[${i}]` : ''} must be a tf.Tensor; got ${got} (convert arrays with tf.tensor(...)).`);
      }
    });
    return arr as tf.Tensor[];
  };
  const inNames = (model.inputs ?? []).map((t) => t.name).join(', ');
  const outNames = (model.outputs ?? []).map((t) => t.sourceLayer?.name ?? t.name).join(', ');
  const xs = list(x, nIn, 'x', `inputs ${inNames}`);
  const ys = list(y, nOut, 'y', `targets of outputs ${outNames}`);
  const b = xs[0].rank >= 1 ? xs[0].shape[0] : -1;
  for (const t of xs) {
    if (t.rank < 1) throw new Error(`x must have a batch dimension; got shape ${fmt(t.shape)}.`);
  }
  for (const t of [...xs, ...ys]) {
    if (t.rank < 1 || t.shape[0] !== b) {
      throw new Error(
        `x and y must have the same batch size; got x shape ${xs.map((u) => fmt(u.shape)).join(' + ')} and y shape ${ys.map((u) => fmt(u.shape)).join(' + ')}.`);
    }
  }
  xs.forEach((t, i) => {
    const inputShape = model.inputs[i].shape;
    const want = inputShape.slice(1);
    const got = t.shape.slice(1);
    const ok = want.length === got.length && want.every((d, k) => d === null || d === got[k]);
    if (!ok) {
      throw new Error(
        `x${nIn > 1 ? `[${i}]` : ''} shape ${fmt(t.shape)} does not match the model's input shape ${fmt(inputShape)}${nIn > 1 ? ` (input '${model.inputs[i].name}')` : ''}.`);
    }
  });
}

/** Losses of regression outputs: robustness is then measured by the loss, not by an accuracy. */
const REGRESSION = new Set([
  'meansquarederror', 'mse', 'meanabsoluteerror', 'mae', 'meanabsolutepercentageerror', 'mape',
  'meansquaredlogarithmicerror', 'msle', 'logcosh', 'poisson', 'cosineproximity', 'cosine',
]);

/** One model output as evaluation sees it. */
export interface OutputTask {
  /** Name of the layer that produces the output. */
  name: string;
  /** True when the output's compiled loss is a regression loss (meanSquaredError, meanAbsoluteError, …). */
  regression: boolean;
  /** The output's own per-example loss `(yTrue, yPred) → [B]`. */
  loss: (yTrue: tf.Tensor, yPred: tf.Tensor) => tf.Tensor1D;
}

/**
 * Per model output: its name, whether its compiled loss is a regression loss
 * (then accuracy is undefined and evaluation reports the loss), and its own
 * per-example loss. A model compiled with a custom loss function counts as a
 * classifier unless the function's name is that of a regression loss.
 */
export function outputTasks(model: tfl.LayersModel, lossOverride?: string | LossFn | (string | LossFn)[]): OutputTask[] {
  const outputNames = (model.outputs ?? []).map((t, i) => t.sourceLayer?.name ?? `output ${i}`);
  const r = resolveLosses(model, lossOverride, 'outputTasks');
  return outputNames.map((name, i) => {
    const key = lossKey(compiledLossName(model, i, outputNames)) ?? lossKey(r.fns[i]);
    return {
      name,
      regression: key != null && REGRESSION.has(key),
      loss: (yTrue: tf.Tensor, yPred: tf.Tensor) => tf.tidy(() => toPerExample(r.fns[i](yTrue, yPred), yPred.shape[0], r.whats[i])),
    };
  });
}
