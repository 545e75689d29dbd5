/**
 * Every read or write of tfjs-layers state that is not part of its documented API, in one place.
 *
 * tfjs-layers exposes no public way to hook a model's per-batch training step, to walk its
 * functional graph, or to read what `compile` resolved; this package needs all three. Each
 * accessor below names the field it touches and the tfjs-layers versions it was checked against:
 * the declarations (`dist/engine/*.d.ts`, `dist/models.d.ts`, `dist/layers/core.d.ts`) are
 * identical in 4.10.0 and 4.22.0, and `npm run test:compat` (scripts/compat.mjs) runs instrument,
 * deep adversarial `fit`/`fitDataset`, `strip`, save/load and `evaluateRobustness` — which go through
 * these accessors — against @tensorflow/tfjs 4.10.0 and the newest 4.x. When a future tfjs-layers
 * renames one of these fields, this is the only file to change; each accessor fails loudly (or
 * returns `undefined` where its callers have a documented fallback) rather than guessing.
 *
 * @internal
 * @packageDocumentation
 */
import type * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';

type Layer = tfl.layers.Layer;
type SymbolicTensor = tfl.SymbolicTensor;

/** tfjs-layers versions whose internals this module was checked against. */
export const CHECKED_TFJS_LAYERS_VERSIONS = ['4.10.0', '4.22.0'] as const;

/** One step of a model's training loop: what `makeTrainFunction()` returns. */
export type TrainFunction = (data: tf.Tensor[]) => tf.Tensor[];
/** `LayersModel.prototype.makeTrainFunction`. */
export type MakeTrainFunction = (this: tfl.LayersModel) => TrainFunction;

/**
 * A node of a functional graph (tfjs-layers' `Node` class, which the package index does not export):
 * `outboundLayer` applied to `inputTensors` with `callArgs` gave `outputTensors`.
 * Fields checked: tfjs-layers 4.10.0, 4.22.0 (`dist/engine/topology.d.ts`, class `Node`).
 */
export interface GraphNode {
  outboundLayer: Layer;
  inputTensors: SymbolicTensor[];
  outputTensors: SymbolicTensor[];
  callArgs?: Record<string, unknown>;
}

// ---------------------------------------------------------------------------------------------
// Training step: the protected `makeTrainFunction`.

interface HasMakeTrainFunction {
  makeTrainFunction?: MakeTrainFunction;
}

/**
 * `tfl.LayersModel.prototype.makeTrainFunction` (protected; builds the per-batch step that `fit` and
 * `fitDataset` call). Checked: tfjs-layers 4.10.0, 4.22.0 (`dist/engine/training.d.ts`:
 * `protected makeTrainFunction(): (data: Tensor[]) => Scalar[]`, called once per fit).
 */
export function prototypeMakeTrainFunction(): MakeTrainFunction | undefined {
  const fn = (tfl.LayersModel.prototype as unknown as HasMakeTrainFunction).makeTrainFunction;
  return typeof fn === 'function' ? fn : undefined;
}

/** Replaces `tfl.LayersModel.prototype.makeTrainFunction` (see {@link prototypeMakeTrainFunction}). */
export function setPrototypeMakeTrainFunction(fn: MakeTrainFunction): void {
  (tfl.LayersModel.prototype as unknown as HasMakeTrainFunction).makeTrainFunction = fn;
}

/** `model.makeTrainFunction` as `model` sees it (its own or the prototype's). Same field as above. */
export function modelMakeTrainFunction(model: tfl.LayersModel): MakeTrainFunction | undefined {
  const fn = (model as unknown as HasMakeTrainFunction).makeTrainFunction;
  return typeof fn === 'function' ? fn : undefined;
}

// ---------------------------------------------------------------------------------------------
// Sequential and graph structure.

/**
 * A Sequential's inner functional model (`private model` of `Sequential`, created when the first
 * layer with a known input shape is added; it owns the compiled loss, optimizer and train function).
 * `undefined` for other models or an unbuilt Sequential. Checked: tfjs-layers 4.10.0, 4.22.0
 * (`dist/models.d.ts`: `private model;`).
 */
export function sequentialInnerModel(model: tfl.LayersModel): tfl.LayersModel | undefined {
  if (!(model instanceof tfl.Sequential || model.getClassName() === 'Sequential')) return undefined;
  const inner = (model as unknown as {model?: tfl.LayersModel}).model;
  return inner ?? undefined;
}

/**
 * The graph's nodes keyed by depth (`Container.nodesByDepth`: depth 0 holds the output nodes).
 * `undefined` when `container` has none (e.g. an unbuilt Sequential). Checked: tfjs-layers 4.10.0,
 * 4.22.0 (`dist/engine/container.d.ts`: `nodesByDepth: {[depth: string]: Node[]}`).
 */
export function nodesByDepth(container: tfl.LayersModel): Record<string, GraphNode[]> | undefined {
  return (container as unknown as {nodesByDepth?: Record<string, GraphNode[]>}).nodesByDepth ?? undefined;
}

/**
 * The model's input layers (`Container.inputLayers`). Checked: tfjs-layers 4.10.0, 4.22.0
 * (`dist/engine/container.d.ts`: `inputLayers: Layer[]`).
 */
export function inputLayersOf(model: tfl.LayersModel): Layer[] {
  return (model as unknown as {inputLayers?: Layer[]}).inputLayers ?? [];
}

/**
 * The layers that `layer`'s outputs feed (`layer.outboundNodes[i].outboundLayer`), in node order;
 * they may belong to other models that share `layer`. Checked: tfjs-layers 4.10.0, 4.22.0
 * (`dist/engine/topology.d.ts`: `Layer.outboundNodes: Node[]`, `Node.outboundLayer: Layer`).
 */
export function outboundLayers(layer: Layer): Layer[] {
  const nodes = (layer as unknown as {outboundNodes?: {outboundLayer: Layer}[]}).outboundNodes ?? [];
  return nodes.map((n) => n.outboundLayer);
}

/**
 * The input tensors of each call of `layer` (`layer.inboundNodes[i].inputTensors`), one list per
 * inbound node, in node order. Checked: tfjs-layers 4.10.0, 4.22.0 (`dist/engine/topology.d.ts`:
 * `Layer.inboundNodes: Node[]`, `Node.inputTensors: SymbolicTensor[]`).
 */
export function inboundInputTensors(layer: Layer): SymbolicTensor[][] {
  const nodes = (layer as unknown as {inboundNodes?: {inputTensors?: SymbolicTensor[]}[]}).inboundNodes ?? [];
  return nodes.map((n) => n.inputTensors ?? []);
}

// ---------------------------------------------------------------------------------------------
// What `compile` resolved.

/**
 * The compiled optimizer (`LayersModel.optimizer_`, protected; the public `optimizer` getter reads
 * it). `undefined` when not compiled. Checked: tfjs-layers 4.10.0, 4.22.0
 * (`dist/engine/training.d.ts`: `protected optimizer_: Optimizer`).
 */
export function compiledOptimizer(model: tfl.LayersModel): tf.Optimizer | undefined {
  return (model as unknown as {optimizer_?: tf.Optimizer}).optimizer_ ?? undefined;
}

/**
 * The loss functions `compile` resolved, one per output (`LayersModel.lossFunctions`), or
 * `undefined`. Checked: tfjs-layers 4.10.0, 4.22.0 (`dist/engine/training.d.ts`:
 * `lossFunctions: LossOrMetricFn[]`).
 */
export function compiledLossFunctions(model: tfl.LayersModel): unknown[] | undefined {
  const fns = (model as unknown as {lossFunctions?: unknown}).lossFunctions;
  return Array.isArray(fns) ? fns : undefined;
}

/**
 * The raw arguments `compile` stored: `optimizer` (the public getter), `loss` and `metrics` as given.
 * Checked: tfjs-layers 4.10.0, 4.22.0 (`dist/engine/training.d.ts`: `loss: string | string[] |
 * {[outputName: string]: string} | LossOrMetricFn | …`, `metrics: string | LossOrMetricFn | …`).
 */
export function compileArguments(model: tfl.LayersModel): {optimizer?: tfl.LayersModel['optimizer']; loss?: unknown; metrics?: unknown} {
  const m = model as unknown as {optimizer?: tfl.LayersModel['optimizer']; loss?: unknown; metrics?: unknown};
  return {optimizer: m.optimizer ?? undefined, loss: m.loss ?? undefined, metrics: m.metrics ?? undefined};
}

/**
 * The names of the values a train step returns, in order (`loss`, then metrics: the protected
 * `getDedupedMetricsNames()`, falling back to the field `metricsNames`, then `['loss']`). Checked:
 * tfjs-layers 4.10.0, 4.22.0 (`dist/engine/training.d.ts`: `protected getDedupedMetricsNames():
 * string[]`, `metricsNames: string[]`).
 */
export function dedupedMetricsNames(model: tfl.LayersModel): string[] {
  const m = model as unknown as {getDedupedMetricsNames?: () => string[]; metricsNames?: string[]};
  return (typeof m.getDedupedMetricsNames === 'function' ? m.getDedupedMetricsNames() : undefined) ?? m.metricsNames ?? ['loss'];
}

// ---------------------------------------------------------------------------------------------
// The running fit.

/**
 * The `History` object of the current (or last) `fit` (`LayersModel.history`, replaced at the start
 * of every fit), used to tell one fit from the next. Checked: tfjs-layers 4.10.0, 4.22.0
 * (`dist/engine/training.d.ts`: `history: History`).
 */
export function fitHistory(model: tfl.LayersModel): unknown {
  return (model as unknown as {history?: unknown}).history;
}

/**
 * True while `fit`/`fitDataset` runs on `model` (`LayersModel.isTraining`, protected). Checked:
 * tfjs-layers 4.10.0, 4.22.0 (`dist/engine/training.d.ts`: `protected isTraining: boolean`).
 */
export function isTraining(model: tfl.LayersModel): boolean {
  return (model as unknown as {isTraining?: boolean}).isTraining === true;
}

// ---------------------------------------------------------------------------------------------
// Layer activations.

/** An activation function object (tfjs-layers' `Activation` class, not exported by the package index). */
export interface ActivationFn {
  getClassName(): string;
  apply(x: tf.Tensor): tf.Tensor;
}

/**
 * The activation function object of a layer with a built-in activation (Dense, Conv*, Activation:
 * the field `activation`), or `undefined`. Checked: tfjs-layers 4.10.0, 4.22.0 (`dist/layers/core.d.ts`:
 * `Activation.activation: ActivationFn`; Dense and the conv layers keep theirs in the same field).
 */
export function layerActivation(layer: Layer): ActivationFn | undefined {
  const a = (layer as unknown as {activation?: ActivationFn | null}).activation;
  return a != null && typeof a === 'object' && typeof a.getClassName === 'function' ? a : undefined;
}

/** Replaces `layer`'s activation function object (see {@link layerActivation}); returns the previous one. */
export function setLayerActivation(layer: Layer, activation: ActivationFn | undefined): ActivationFn | undefined {
  const l = layer as unknown as {activation?: ActivationFn};
  const previous = l.activation;
  l.activation = activation;
  return previous;
}

let linear: ActivationFn | undefined;
/** tfjs-layers' identity activation object (taken from an `Activation` layer; see {@link layerActivation}). */
export function linearActivation(): ActivationFn {
  if (!linear) linear = layerActivation(tfl.layers.activation({activation: 'linear'}));
  if (!linear) throw new Error('tfjs-deep-adversarial: cannot read the linear activation of a tfjs-layers Activation layer (unsupported tfjs-layers version).');
  return linear;
}
