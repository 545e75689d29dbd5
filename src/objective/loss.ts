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

/**
 * A loss function in tfjs-layers' convention: `(yTrue, yPred)` → a tensor
 * whose first axis is the batch (values *before* batch averaging). A function
 * returning a scalar is rejected by {@link perExampleLoss}, since the
 * per-example values cannot be recovered from it.
 */
export type LossFn = (yTrue: tf.Tensor, yPred: tf.Tensor) => tf.Tensor;

/** The function returned by {@link perExampleLoss}: one loss value per example, shape `[B]`. */
export type PerExampleLossFn = (yTrue: tf.Tensor, yPred: tf.Tensor) => tf.Tensor1D;

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

/** Fields of a compiled model that tfjs-layers does not type as public API everywhere. */
interface CompiledFields {
  loss?: unknown;
  lossFunctions?: unknown;
  model?: CompiledFields;
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

/** Finds the loss the model was compiled with, or `undefined` if it was not compiled. */
function compiledLoss(model: tfl.LayersModel): LossFn | undefined {
  const m = model as unknown as CompiledFields;
  // LayersModel keeps the resolved functions; Sequential delegates to `.model`.
  for (const holder of [m, m.model]) {
    const fns = holder?.lossFunctions;
    if (Array.isArray(fns) && fns.length >= 1 && typeof fns[0] === 'function') {
      return fns[0] as LossFn;
    }
  }
  // Fallback: the raw compile argument (string | string[] | dict | fn).
  for (const holder of [m, m.model]) {
    const spec = holder?.loss;
    if (spec !== undefined && spec !== null) {
      const fn = resolveLossSpec(spec);
      if (fn !== undefined) return fn;
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
 * @param model A single-output `LayersModel` (or `Sequential`). It must have
 *   been compiled unless `lossOverride` is given.
 * @param lossOverride Optional loss to use instead of the compiled one: a name
 *   (camelCase as in tfjs, or snake_case/short aliases as in Keras: `'mse'`,
 *   `'categorical_crossentropy'`, …) or a function `(yTrue, yPred) => Tensor`
 *   returning per-example values with the batch as first axis.
 * @returns `(yTrue, yPred) => Tensor1D` of shape `[B]`. The returned function
 *   does not dispose its arguments and leaves no intermediate tensors.
 * @throws If the model has more than one output, is not compiled (and no
 *   override is given), or the loss name is unknown.
 */
export function perExampleLoss(
  model: tfl.LayersModel,
  lossOverride?: string | LossFn,
): PerExampleLossFn {
  const nOut = model.outputs?.length ?? 1;
  if (nOut !== 1) {
    throw new Error(`perExampleLoss supports one output; got ${nOut} outputs.`);
  }
  let fn: LossFn | undefined;
  let what: string;
  if (lossOverride !== undefined && lossOverride !== null) {
    if (typeof lossOverride === 'string') {
      fn = lossByName(lossOverride);
      what = `Loss "${lossOverride}"`;
    } else if (typeof lossOverride === 'function') {
      fn = lossOverride;
      what = 'The loss function';
    } else {
      throw new Error(
        `loss must be a loss name or a function (yTrue, yPred) => Tensor; got ${typeof lossOverride}.`);
    }
  } else {
    fn = compiledLoss(model);
    what = "The model's compiled loss";
    if (fn === undefined) {
      throw new Error(
        'The model has no loss: call model.compile({optimizer, loss}) before ' +
          'computing per-example losses or running an attack, or pass a loss explicitly.');
    }
  }
  const lossFn = fn;
  return (yTrue: tf.Tensor, yPred: tf.Tensor): tf.Tensor1D =>
    tf.tidy(() => toPerExample(lossFn(yTrue, yPred), yPred.shape[0], what));
}

/**
 * Checks that `x` and `y` can be fed to `model` together: same batch size, and
 * `x`'s non-batch shape equal to the model's input shape (`null` entries of
 * the model's shape match any size).
 *
 * @param model A single-input model.
 * @param x Inputs, shape `[B, ...inputShape]`.
 * @param y Targets, shape `[B, ...]`.
 * @throws Error giving both shapes when they do not match.
 */
export function assertCompatibleXY(model: tfl.LayersModel, x: tf.Tensor, y: tf.Tensor): void {
  const nIn = model.inputs?.length ?? 1;
  if (nIn !== 1) {
    throw new Error(`Attacks support models with one input; got ${nIn} inputs.`);
  }
  const fmt = (s: ReadonlyArray<number | null>): string =>
    `[${s.map((d) => (d === null ? 'null' : String(d))).join(', ')}]`;
  if (x.rank < 1) {
    throw new Error(`x must have a batch dimension; got shape ${fmt(x.shape)}.`);
  }
  if (y.rank < 1 || y.shape[0] !== x.shape[0]) {
    throw new Error(
      `x and y must have the same batch size; got x shape ${fmt(x.shape)} and y shape ${fmt(y.shape)}.`);
  }
  const inputShape = model.inputs[0].shape;
  const want = inputShape.slice(1);
  const got = x.shape.slice(1);
  const ok = want.length === got.length && want.every((d, i) => d === null || d === got[i]);
  if (!ok) {
    throw new Error(
      `x shape ${fmt(x.shape)} does not match the model's input shape ${fmt(inputShape)}.`);
  }
}
