/**
 * Logits of a classifier and the attack losses defined on them: cross-entropy,
 * the Carlini–Wagner margin and the difference-of-logits-ratio (DLR) of
 * Croce & Hein (2020), untargeted and targeted.
 *
 * Margin losses must see logits, not probabilities: a softmax output that
 * underflows to 0 in float32 has no usable log, and tfjs' cross-entropy clips
 * probabilities to [1e-7, 1 − 1e-7], which zeroes the gradient of confidently
 * classified examples (a form of gradient masking built into the loss).
 * {@link logitFunction} therefore evaluates the model with its final softmax
 * switched off (the output layer's activation is swapped for the identity
 * during the synchronous forward pass and restored in a `finally`), so that
 * z = logits and softmax(z) is the model's output. For a model whose output is
 * already linear the output is used as is; for any other output (a custom
 * layer, a nested model) the log of the clipped probabilities is used — equal
 * to the logits up to a per-example constant, which the margin and DLR losses
 * ignore.
 *
 * A single sigmoid unit is treated as two classes with logits [0, z].
 *
 * @packageDocumentation
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import {layerActivation, linearActivation, setLayerActivation} from '../model/internals.js';

/** How {@link logitFunction} obtained the logits. */
export type LogitSource = 'softmax-removed' | 'linear-output' | 'sigmoid-removed' | 'log-probabilities';

/** Batched logits `[B, K]` (K ≥ 2) of a classifier, differentiable w.r.t. the input. */
export interface LogitFunction {
  (x: tf.Tensor): tf.Tensor2D;
  /** How the logits were obtained. */
  source: LogitSource;
  /** Number of classes K (2 for a single sigmoid/probability unit). */
  classes: number;
}

function outputLayer(model: tfl.LayersModel): tfl.layers.Layer | undefined {
  const out = model.outputs?.[0] as unknown as {sourceLayer?: tfl.layers.Layer} | undefined;
  return out?.sourceLayer;
}

/**
 * The logits of a single-output classifier, in inference mode (see the module
 * documentation for how they are obtained).
 */
export function logitFunction(model: tfl.LayersModel): LogitFunction {
  const layer = outputLayer(model);
  const act = layer ? layerActivation(layer)?.getClassName() : undefined;
  const outShape = model.outputs[0].shape;
  const units = (outShape[outShape.length - 1] as number | null) ?? 0;
  let source: LogitSource;
  if (act === 'softmax' && units >= 2) source = 'softmax-removed';
  else if (act === 'sigmoid' && units === 1) source = 'sigmoid-removed';
  else if (act === 'linear' && units >= 2) source = 'linear-output';
  else source = 'log-probabilities';
  const raw = (x: tf.Tensor): tf.Tensor => {
    if (source === 'softmax-removed' || source === 'sigmoid-removed') {
      const l = layer as tfl.layers.Layer;
      const saved = setLayerActivation(l, linearActivation());
      try {
        return model.apply(x, {training: false}) as tf.Tensor;
      } finally {
        setLayerActivation(l, saved);
      }
    }
    return model.apply(x, {training: false}) as tf.Tensor;
  };
  const fn = ((x: tf.Tensor): tf.Tensor2D =>
    tf.tidy(() => {
      const b = x.shape[0];
      let z = raw(x);
      if (Array.isArray(z)) throw new Error('logitFunction: the model has several outputs.');
      z = tf.reshape(z, [b, -1]);
      if (source === 'sigmoid-removed') return tf.concat([tf.zerosLike(z), z], 1) as tf.Tensor2D;
      if (source === 'log-probabilities') {
        if (z.shape[1] === 1) {
          const p = tf.clipByValue(z, 1e-30, 1 - 1e-7);
          return tf.concat([tf.log(tf.sub(1, p)), tf.log(p)], 1) as tf.Tensor2D;
        }
        return tf.log(tf.clipByValue(z, 1e-30, 1)) as tf.Tensor2D;
      }
      return z as tf.Tensor2D;
    })) as LogitFunction;
  fn.source = source;
  fn.classes = units === 1 ? 2 : units;
  return fn;
}

/**
 * Class indices `[B]` (int32) from labels: one-hot/probabilities `[B, K]`
 * (argmax), class indices `[B]` / `[B, 1]`, or 0/1 for a single output unit.
 */
export function labelIndices(y: tf.Tensor, classes: number, where: string): tf.Tensor1D {
  const b = y.shape[0];
  return tf.tidy(() => {
    if (y.rank >= 2 && y.shape[y.rank - 1] === classes && classes >= 2 && y.size === b * classes) {
      return tf.cast(tf.argMax(tf.reshape(y, [b, classes]), -1), 'int32') as tf.Tensor1D;
    }
    if (y.size === b) {
      const flat = tf.reshape(y, [b]);
      return tf.cast(classes === 2 && y.dtype === 'float32' ? tf.greater(flat, 0.5) : tf.round(flat), 'int32') as tf.Tensor1D;
    }
    throw new Error(
      `${where}: labels of shape [${y.shape.join(', ')}] do not fit a classifier with ${classes} classes: ` +
        'expected one-hot labels [B, K] or class indices [B] / [B, 1].',
    );
  });
}

/** z_y per example. */
function picked(z: tf.Tensor2D, labels: tf.Tensor1D): tf.Tensor1D {
  return tf.sum(tf.mul(z, tf.oneHot(labels, z.shape[1])), 1) as tf.Tensor1D;
}

/** max_{j ≠ y} z_j per example. */
function bestOther(z: tf.Tensor2D, labels: tf.Tensor1D): tf.Tensor1D {
  const mask = tf.oneHot(labels, z.shape[1]);
  return tf.max(tf.sub(z, tf.mul(mask, 1e30)), 1) as tf.Tensor1D;
}

/** Margin z_y − max_{j≠y} z_j: negative exactly when the example is misclassified (ties aside). */
export function logitMargin(z: tf.Tensor2D, labels: tf.Tensor1D): tf.Tensor1D {
  return tf.tidy(() => tf.sub(picked(z, labels), bestOther(z, labels)) as tf.Tensor1D);
}

/** Cross-entropy −log softmax(z)_y (numerically stable), per example. */
export function crossEntropyLoss(z: tf.Tensor2D, labels: tf.Tensor1D): tf.Tensor1D {
  return tf.tidy(() => tf.neg(picked(tf.logSoftmax(z) as tf.Tensor2D, labels)) as tf.Tensor1D);
}

/** Carlini–Wagner margin loss max_{j≠y} z_j − z_y (to maximise), per example. */
export function cwLoss(z: tf.Tensor2D, labels: tf.Tensor1D): tf.Tensor1D {
  return tf.tidy(() => tf.neg(logitMargin(z, labels)) as tf.Tensor1D);
}

/** The 1st … k-th largest logits per example, `[B]` each (k = 1: the largest). */
function largest(z: tf.Tensor2D, k: number): tf.Tensor1D[] {
  // TopK has no gradient in tfjs: sort a copy made from the values (not on the gradient tape, one read
  // for all k) and pick the values from z by one-hot products, which are differentiable.
  const {indices} = tf.topk(tf.tensor2d(z.dataSync() as Float32Array, z.shape), k);
  return Array.from({length: k}, (_, j) => picked(z, tf.squeeze(tf.slice(indices, [0, j], [-1, 1]), [1]) as tf.Tensor1D));
}

/**
 * Untargeted DLR loss of Croce & Hein (2020), to maximise:
 * −(z_y − max_{j≠y} z_j) / (z_π1 − z_π3 + 1e-12), π the logits sorted in
 * decreasing order. Needs K ≥ 3 classes.
 */
export function dlrLoss(z: tf.Tensor2D, labels: tf.Tensor1D): tf.Tensor1D {
  if (z.shape[1] < 3) throw new Error(`The DLR loss needs at least 3 classes; the model has ${z.shape[1]}. Use the CW margin loss ('cw').`);
  return tf.tidy(() => {
    const [z1, , z3] = largest(z, 3);
    return tf.div(tf.neg(logitMargin(z, labels)), tf.add(tf.sub(z1, z3), 1e-12)) as tf.Tensor1D;
  });
}

/**
 * Targeted DLR loss of Croce & Hein (2020), to maximise:
 * −(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2 + 1e-12). Needs K ≥ 4 classes.
 */
export function dlrTargetedLoss(z: tf.Tensor2D, labels: tf.Tensor1D, targets: tf.Tensor1D): tf.Tensor1D {
  if (z.shape[1] < 4) throw new Error(`The targeted DLR loss needs at least 4 classes; the model has ${z.shape[1]}. Use the CW margin loss ('cw').`);
  return tf.tidy(() => {
    const num = tf.sub(picked(z, labels), picked(z, targets));
    const [z1, , z3, z4] = largest(z, 4);
    const den = tf.add(tf.sub(z1, tf.mul(0.5, tf.add(z3, z4))), 1e-12);
    return tf.neg(tf.div(num, den)) as tf.Tensor1D;
  });
}

/** Targeted CW margin z_t − z_y (to maximise). */
export function cwTargetedLoss(z: tf.Tensor2D, labels: tf.Tensor1D, targets: tf.Tensor1D): tf.Tensor1D {
  return tf.tidy(() => tf.sub(picked(z, targets), picked(z, labels)) as tf.Tensor1D);
}

/** Names of the logit losses the input attacks accept. */
export const LOGIT_LOSSES = ['ce', 'cw', 'dlr'] as const;
/** A logit loss: `'ce'` cross-entropy, `'cw'` Carlini–Wagner margin, `'dlr'` difference of logits ratio. */
export type LogitLoss = (typeof LOGIT_LOSSES)[number];

/** True for `'ce'`, `'cw'`, `'dlr'`. */
export function isLogitLoss(v: unknown): v is LogitLoss {
  return typeof v === 'string' && (LOGIT_LOSSES as readonly string[]).includes(v);
}

/**
 * Per-example attack loss on logits; with `targets`, the targeted version
 * (CE: −CE towards the target; CW: z_t − z_y; DLR: targeted DLR).
 */
export function logitLoss(kind: LogitLoss, z: tf.Tensor2D, labels: tf.Tensor1D, targets?: tf.Tensor1D): tf.Tensor1D {
  if (targets) {
    if (kind === 'ce') return tf.tidy(() => tf.neg(crossEntropyLoss(z, targets)));
    if (kind === 'cw') return cwTargetedLoss(z, labels, targets);
    return dlrTargetedLoss(z, labels, targets);
  }
  if (kind === 'ce') return crossEntropyLoss(z, labels);
  if (kind === 'cw') return cwLoss(z, labels);
  return dlrLoss(z, labels);
}
