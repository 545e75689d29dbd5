/**
 * Checks shared by every attack and by the evaluation: what the model, x and y
 * must be before an attack may run. Each check throws one clear message naming
 * the function, the argument and what was expected, before any tensor is made.
 *
 * The single-output rule lives in {@link assertSingleOutput} only, so that
 * multi-output support can replace it in one place.
 *
 * @packageDocumentation
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';

import {isDisturbance} from '../layers/disturbance.js';
import {inputLayersOf, outboundLayers} from '../model/internals.js';
import {assertCompatibleXY} from '../objective/loss.js';
import {describeValue} from '../util/options.js';

/** Throws unless `model` is a tfjs-layers model. */
export function assertLayersModel(where: string, model: unknown): asserts model is tfl.LayersModel {
  if (!(model instanceof tfl.LayersModel)) {
    throw new Error(`${where}: model must be a tfjs-layers LayersModel (tf.sequential / tf.model); got ${describeValue(model)}.`);
  }
}

/**
 * Throws unless the model has exactly one output. The message is the one
 * `instrument` and the training callback give for the same model.
 */
export function assertSingleOutput(where: string, model: tfl.LayersModel): void {
  const outs = model.outputs?.length ?? 1;
  const ins = model.inputs?.length ?? 1;
  if (ins !== 1 || outs !== 1) {
    throw new Error(
      `${where}: model '${model.name}' has ${ins} input(s) and ${outs} output(s); attacks and robustness evaluation support one input and one output.`,
    );
  }
}

/** Layers that consume model input `index`, looking through Disturbance layers. */
function inputConsumers(model: tfl.LayersModel, index = 0): tfl.layers.Layer[] {
  const inModel = new Set(model.layers);
  const out: tfl.layers.Layer[] = [];
  const visit = (layer: tfl.layers.Layer, depth: number) => {
    for (const next of outboundLayers(layer)) {
      if (!inModel.has(next)) continue;
      if (isDisturbance(next) && depth < 8) visit(next, depth + 1);
      else out.push(next);
    }
  };
  const inputLayer = inputLayersOf(model)[index];
  if (inputLayer) visit(inputLayer, 0);
  // A Sequential exposes its inner functional model's layers; its first layer reads the input.
  if (out.length === 0 && index === 0 && model instanceof tfl.Sequential && model.layers.length > 0) {
    const first = model.layers.find((l) => !isDisturbance(l));
    if (first) out.push(first);
  }
  return out;
}

/**
 * Why model input `index` cannot be perturbed (an integer input, or an input
 * that feeds an Embedding layer: token indices have no gradient), or null.
 */
export function undisturbableInput(model: tfl.LayersModel, index = 0): string | null {
  const input = model.inputs[index];
  if (input.dtype !== 'float32') return `its input '${input.name}' has dtype ${input.dtype}`;
  const emb = inputConsumers(model, index).find((l) => l.getClassName() === 'Embedding');
  if (emb) return `its input '${input.name}' feeds the Embedding layer '${emb.name}' (token indices cannot be perturbed)`;
  return null;
}

/**
 * Checks model, x and y of an input-space attack or evaluation: a LayersModel
 * with one input and one output whose input can be perturbed, tensors x and y
 * (not disposed), at least one row, matching batch sizes and input shape.
 */
export function checkAttackInputs(where: string, model: unknown, x: unknown, y: unknown, opts: {perturbsInput?: boolean} = {}): void {
  assertLayersModel(where, model);
  if (!(x instanceof tf.Tensor)) throw new Error(`${where}: x must be a tf.Tensor of inputs [B, ...inputShape]; got ${describeValue(x)}.`);
  if (!(y instanceof tf.Tensor)) throw new Error(`${where}: y must be a tf.Tensor of labels [B, ...]; got ${describeValue(y)}.`);
  if (x.isDisposed || y.isDisposed) throw new Error(`${where}: ${x.isDisposed ? 'x' : 'y'} was already disposed.`);
  assertSingleOutput(where, model);
  if (opts.perturbsInput ?? true) {
    const why = undisturbableInput(model);
    if (why) throw new Error(`${where}: model '${model.name}' cannot be attacked in input space: ${why}.`);
  }
  if (x.rank < 1 || x.shape[0] === 0) {
    throw new Error(`${where}: x has no examples (shape [${x.shape.join(', ')}]); give at least one row.`);
  }
  try {
    assertCompatibleXY(model, x, y);
  } catch (e) {
    throw new Error(`${where}: ${(e as Error).message}`);
  }
}
