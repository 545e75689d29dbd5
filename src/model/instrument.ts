/**
 * Inserting and removing Disturbance layers in an existing model. This is the
 * only module that walks a model's layer graph.
 *
 * Both operations rebuild the functional graph by calling the *same* layer
 * objects again on new symbolic tensors, so the new model shares every layer
 * and weight with the original (no copies): training one trains the other.
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import {checkKnownKeys} from '../util/options.js';
import {Disturbance, isDisturbance} from '../layers/disturbance.js';
import {compileArguments, GraphNode, nodesByDepth, sequentialInnerModel} from './internals.js';
import {PenaltyConfig, validatePenalty} from '../objective/penalties.js';

type Layer = tfl.layers.Layer;
type SymbolicTensor = tfl.SymbolicTensor;

/** Penalty given to the input disturbance d₀ when {@link InstrumentOptions.input} is omitted. */
export const DEFAULT_INPUT_PENALTY: PenaltyConfig = Object.freeze({kind: 'quadratic', lambda: 1}) as PenaltyConfig;
/** Penalty given to hidden disturbances when {@link InstrumentOptions.hidden} is omitted. */
export const DEFAULT_HIDDEN_PENALTY: PenaltyConfig = Object.freeze({kind: 'quadratic', lambda: 1}) as PenaltyConfig;

/**
 * Budget of an embedding disturbance relative to the embedding vectors: an L2
 * ball per example of radius ε = relativeEpsilon · r̄ · √T, where r̄ is the mean
 * L2 norm of the rows of the Embedding's weight matrix (measured when
 * {@link instrument} runs) and T the number of tokens per example. A
 * disturbance spread evenly over the tokens then moves each token by
 * relativeEpsilon · r̄ (e.g. 0.25 = a quarter of a typical embedding vector).
 */
export interface RelativeEmbeddingBudget {
  relativeEpsilon: number;
}

/** Default relative budget of embedding disturbances (see {@link RelativeEmbeddingBudget}). */
export const DEFAULT_EMBEDDING_BUDGET: RelativeEmbeddingBudget = Object.freeze({relativeEpsilon: 0.25});

/** Options of {@link instrument}. */
export interface InstrumentOptions {
  /**
   * Penalty of the input disturbance d₀ of every float32 model input that does
   * not feed an Embedding layer; `null` inserts none. Default
   * {@link DEFAULT_INPUT_PENALTY}. Integer inputs are never disturbed; an input
   * that feeds an Embedding gets its disturbance on the embedding output
   * instead (see `embedding`).
   */
  input?: PenaltyConfig | null;
  /**
   * Penalty of the disturbance placed on the output of every Embedding layer
   * (token vectors, as in Miyato et al., ICLR 2017): a penalty, a budget
   * relative to the embedding norm ({@link RelativeEmbeddingBudget}), or
   * `null` for none. Default {@link DEFAULT_EMBEDDING_BUDGET}.
   */
  embedding?: PenaltyConfig | RelativeEmbeddingBudget | null;
  /** Penalty of every hidden disturbance; `null` inserts none. Default {@link DEFAULT_HIDDEN_PENALTY}. */
  hidden?: PenaltyConfig | null;
  /**
   * Where to put hidden disturbances: a list of layer names, or a predicate on
   * the layer. Default: {@link isNeuronLayer} — after every layer that ends a
   * neuron block of eq. 2, never after the output.
   */
  layers?: string[] | ((layer: Layer) => boolean);
  /** Name of the returned model. Default `<name>_instrumented`. */
  name?: string;
}

/** Layers that compute neurons nℓ = fℓ(wℓ nℓ₋₁) (or a merge of neurons). */
const NEURON_CLASSES = new Set([
  'Dense', 'Conv1D', 'Conv2D', 'Conv3D', 'Conv2DTranspose', 'Conv3DTranspose', 'SeparableConv2D', 'DepthwiseConv2D',
  'Activation', 'ReLU', 'LeakyReLU', 'ELU', 'PReLU', 'ThresholdedReLU', 'Softmax',
  'MaxPooling1D', 'MaxPooling2D', 'MaxPooling3D', 'AveragePooling1D', 'AveragePooling2D', 'AveragePooling3D',
  'GlobalAveragePooling1D', 'GlobalAveragePooling2D', 'GlobalMaxPooling1D', 'GlobalMaxPooling2D',
  'BatchNormalization', 'LayerNormalization',
  'Add', 'Concatenate', 'Average', 'Maximum', 'Minimum', 'Multiply',
  // Recurrent layers: their output (the whole sequence, or the last state) is a block of neurons.
  'LSTM', 'GRU', 'SimpleRNN', 'RNN', 'Bidirectional', 'ConvLSTM2D', 'TimeDistributed',
]);

/** Recurrent layer classes (documented in the README: their single output gets a disturbance). */
export const RECURRENT_CLASSES: readonly string[] = Object.freeze(['LSTM', 'GRU', 'SimpleRNN', 'RNN', 'Bidirectional', 'ConvLSTM2D']);

/**
 * Layers that continue the block fℓ of the layer before them (activation,
 * normalisation, pooling): a neuron layer consumed only by these is not the
 * end of its block, so the disturbance goes after them instead (e.g.
 * Conv → BatchNorm → ReLU → MaxPool gets one disturbance, after MaxPool).
 */
const CONTINUATION_CLASSES = new Set([
  'Activation', 'ReLU', 'LeakyReLU', 'ELU', 'PReLU', 'ThresholdedReLU', 'Softmax',
  'MaxPooling1D', 'MaxPooling2D', 'MaxPooling3D', 'AveragePooling1D', 'AveragePooling2D', 'AveragePooling3D',
  'GlobalAveragePooling1D', 'GlobalAveragePooling2D', 'GlobalMaxPooling1D', 'GlobalMaxPooling2D',
  'BatchNormalization', 'LayerNormalization',
]);

/** True for layer classes whose output is a layer of neurons in the sense of eq. 2. */
export function isNeuronLayer(layer: Layer): boolean {
  return NEURON_CLASSES.has(layer.getClassName());
}

/** A node of the model graph as tfjs-layers stores it (internal fields used read-only). */

/** The functional graph behind a model: its inputs, outputs and nodes in topological order. */
interface Graph {
  inputs: SymbolicTensor[];
  outputs: SymbolicTensor[];
  nodes: GraphNode[];
}

function readGraph(model: tfl.LayersModel, what: string): Graph {
  let container: tfl.LayersModel = model;
  if (model instanceof tfl.Sequential || model.getClassName() === 'Sequential') {
    let inner = sequentialInnerModel(model);
    if ((inner == null || nodesByDepth(inner) == null) && model.inputs?.length > 0 && model.outputs?.length > 0) {
      // Not built yet (build happens lazily on compile/predict): a read-only functional view of the same nodes.
      inner = tfl.model({inputs: model.inputs, outputs: model.outputs});
    }
    if (inner == null || nodesByDepth(inner) == null) {
      throw new Error(
        `${what}: the Sequential model '${model.name}' has no layers with a known input shape yet; ` +
          `give its first layer an inputShape before ${what}().`,
      );
    }
    container = inner;
  }
  const {inputs, outputs} = container;
  const byDepth = nodesByDepth(container);
  if (!inputs || !outputs || !byDepth) {
    throw new Error(`${what}: '${model.name}' is not a built tfjs-layers model (no inputs/outputs).`);
  }
  const depths = Object.keys(byDepth)
    .map((k) => Number(k))
    .sort((a, b) => b - a);
  const nodes: GraphNode[] = [];
  for (const depth of depths) nodes.push(...byDepth[String(depth)]);
  return {inputs, outputs, nodes};
}

function isInputLayer(layer: Layer): boolean {
  return layer.getClassName() === 'InputLayer';
}

/** Consumers of every symbolic tensor (by id) inside the graph. */
function consumersOf(graph: Graph): Map<number, Layer[]> {
  const consumers = new Map<number, Layer[]>();
  for (const node of graph.nodes) {
    for (const t of node.inputTensors) {
      const list = consumers.get(t.id) ?? [];
      list.push(node.outboundLayer);
      consumers.set(t.id, list);
    }
  }
  return consumers;
}

function applyLayer(layer: Layer, inputs: SymbolicTensor[], callArgs: Record<string, unknown> | undefined): SymbolicTensor[] {
  const kwargs = {...(callArgs ?? {})};
  delete kwargs.mask;
  const out = layer.apply(inputs.length === 1 ? inputs[0] : inputs, kwargs) as SymbolicTensor | SymbolicTensor[];
  return Array.isArray(out) ? out : [out];
}

function newInput(original: SymbolicTensor): SymbolicTensor {
  return tfl.input({batchShape: original.shape, dtype: original.dtype, name: original.sourceLayer?.name});
}

/** Compiles `target` like `source` (same optimizer object, loss(es) and metrics) if `source` was compiled. */
function copyCompile(source: tfl.LayersModel, target: tfl.LayersModel): void {
  const s = compileArguments(source);
  if (s.optimizer == null || s.loss == null) return;
  let loss = s.loss;
  // A loss dictionary keyed by output names: the rebuilt model has the same output layers, so the same names.
  if (Array.isArray(loss) && loss.length === 0) return;
  if (loss != null && typeof loss === 'object' && !Array.isArray(loss)) loss = {...(loss as Record<string, unknown>)};
  target.compile({
    optimizer: s.optimizer,
    loss: loss as Parameters<tfl.LayersModel['compile']>[0]['loss'],
    metrics: s.metrics as Parameters<tfl.LayersModel['compile']>[0]['metrics'],
  });
}

function isBudget(v: unknown): v is RelativeEmbeddingBudget {
  return v != null && typeof v === 'object' && !('kind' in (v as object)) && 'relativeEpsilon' in (v as object);
}

/** Mean L2 norm of the rows of an Embedding layer's weight matrix. */
function meanEmbeddingNorm(layer: Layer): number {
  const weights = layer.getWeights();
  if (weights.length === 0) throw new Error(`instrument: Embedding layer '${layer.name}' has no weights yet (it is not built).`);
  return tf.tidy(() => tf.mean(tf.norm(weights[0], 'euclidean', 1)).dataSync()[0]);
}

/** The penalty of the disturbance after Embedding layer `layer` whose output has static shape `shape`. */
function embeddingPenalty(spec: PenaltyConfig | RelativeEmbeddingBudget, layer: Layer, shape: (number | null)[]): PenaltyConfig {
  if (!isBudget(spec)) return validatePenalty(spec, `instrument: options.embedding (layer '${layer.name}')`);
  const rel = spec.relativeEpsilon;
  if (typeof rel !== 'number' || !Number.isFinite(rel) || rel < 0) {
    throw new Error(`instrument: options.embedding.relativeEpsilon must be a finite number >= 0, got ${String(rel)}.`);
  }
  const tokens = shape.slice(1, -1).reduce<number>((a, b) => a * (b ?? NaN), 1);
  if (!Number.isFinite(tokens)) {
    throw new Error(
      `instrument: the Embedding layer '${layer.name}' has output shape [${shape.map(String).join(', ')}] with an unknown ` +
        `sequence length; give it an inputLength (or the model input a fixed shape), or pass options.embedding as a penalty ` +
        `such as {kind: 'l2', epsilon: 0.5}.`,
    );
  }
  const norm = meanEmbeddingNorm(layer);
  return validatePenalty({kind: 'l2', epsilon: rel * norm * Math.sqrt(tokens)}, `instrument: embedding budget of '${layer.name}'`);
}

/**
 * Returns a model with {@link Disturbance} layers inserted after the model
 * inputs (d₀, eq. 6 with ℓ = 0), after every Embedding layer and after each
 * chosen hidden layer, sharing every layer and weight with `model` (no
 * copies). If `model` is compiled, the result is compiled with the same
 * optimizer object, loss(es) and metrics, so it can be passed straight to
 * `fit`. `model` itself is not modified.
 *
 * Where disturbances go:
 * - every float32 model input that does not feed an Embedding layer gets one
 *   (`options.input`); integer inputs never do;
 * - every Embedding layer's output gets one (`options.embedding`; default an L2
 *   budget relative to the embedding vectors, {@link DEFAULT_EMBEDDING_BUDGET}),
 *   so text models are attacked in embedding space (Miyato et al., 2017);
 * - after the end of every neuron block (`options.hidden`): dense,
 *   convolutional, pooling, normalisation, merge and recurrent layers (LSTM,
 *   GRU, SimpleRNN, Bidirectional: their output, the sequence or the last
 *   state, is a block of neurons), never after a model output.
 *
 * Works for `tf.sequential` models and functional `tf.model` graphs with
 * branches, merges, several inputs and several outputs. Places that are
 * already followed by a Disturbance layer are left alone, so instrumenting
 * twice gives the same layers.
 *
 * ```ts
 * const adv = instrument(model, {input: {kind: 'linf', epsilon: 0.1, box: [0, 1]},
 *                                hidden: {kind: 'quadratic', lambda: 10}});
 * ```
 *
 * @throws if the model is not built, a name in `options.layers` does not
 *   exist, a penalty is invalid, or no place for a disturbance is found (the
 *   message says why, e.g. integer inputs with `hidden: null`).
 */
export function instrument(model: tfl.LayersModel, options: InstrumentOptions = {}): tfl.LayersModel {
  checkKnownKeys(options, ['input', 'embedding', 'hidden', 'layers', 'name'], 'instrument');
  const graph = readGraph(model, 'instrument');
  warnNestedModels(graph, model.name);
  const inputPenalty = options.input === undefined ? DEFAULT_INPUT_PENALTY : options.input;
  const hiddenPenalty = options.hidden === undefined ? DEFAULT_HIDDEN_PENALTY : options.hidden;
  const input = inputPenalty == null ? null : validatePenalty(inputPenalty, 'instrument: options.input');
  const hidden = hiddenPenalty == null ? null : validatePenalty(hiddenPenalty, 'instrument: options.hidden');
  const embeddingSpec = options.embedding === undefined ? DEFAULT_EMBEDDING_BUDGET : options.embedding;
  if (embeddingSpec != null && !isBudget(embeddingSpec)) validatePenalty(embeddingSpec, 'instrument: options.embedding');

  const layerNames = new Set(graph.nodes.map((n) => n.outboundLayer.name));
  let choose: (layer: Layer) => boolean = isNeuronLayer;
  let useContinuationRule = true;
  if (Array.isArray(options.layers)) {
    const wanted = new Set(options.layers);
    for (const name of wanted) {
      if (!layerNames.has(name)) {
        throw new Error(`instrument: options.layers names '${name}', which is not a layer of model '${model.name}' (layers: ${[...layerNames].join(', ')}).`);
      }
    }
    choose = (layer) => wanted.has(layer.name);
    useContinuationRule = false;
  } else if (typeof options.layers === 'function') {
    choose = options.layers;
    useContinuationRule = false;
  } else if (options.layers !== undefined) {
    throw new Error('instrument: options.layers must be an array of layer names or a predicate (layer) => boolean.');
  }

  const consumers = consumersOf(graph);
  const outputIds = new Set(graph.outputs.map((t) => t.id));
  const alreadyDisturbed = (t: SymbolicTensor) => (consumers.get(t.id) ?? []).some(isDisturbance);
  const usedNames = new Set(layerNames);
  const uniqueName = (base: string) => {
    let name = base;
    for (let i = 1; usedNames.has(name); i++) name = `${base}_${i}`;
    usedNames.add(name);
    return name;
  };

  const map = new Map<number, SymbolicTensor>();
  const newInputs = new Map<number, SymbolicTensor>();
  const notes: string[] = [];
  let count = 0;
  for (const node of graph.nodes) {
    const layer = node.outboundLayer;
    if (isInputLayer(layer)) {
      const orig = node.outputTensors[0];
      const fresh = newInput(orig);
      newInputs.set(orig.id, fresh);
      let t = fresh;
      const uses = consumers.get(orig.id) ?? [];
      const feedsEmbedding = uses.some((c) => c.getClassName() === 'Embedding');
      if (alreadyDisturbed(orig)) {
        count++;
      } else if (feedsEmbedding) {
        notes.push(`input '${layer.name}' feeds an Embedding layer (it is disturbed in embedding space)`);
      } else if (orig.dtype !== 'float32') {
        notes.push(`input '${layer.name}' has dtype ${orig.dtype} (integer inputs are not disturbed)`);
      } else if (input) {
        t = new Disturbance({penalty: input, name: uniqueName(`${layer.name}_disturbance`)}).apply(t) as SymbolicTensor;
        count++;
      } else {
        notes.push(`options.input is null`);
      }
      map.set(orig.id, t);
      continue;
    }
    const inputs = node.inputTensors.map((t) => {
      const mapped = map.get(t.id);
      if (!mapped) throw new Error(`instrument: internal error: layer '${layer.name}' reads a tensor that was not built yet.`);
      return mapped;
    });
    const outputs = applyLayer(layer, inputs, node.callArgs);
    if (isDisturbance(layer)) count++;
    const isEmbedding = layer.getClassName() === 'Embedding';
    node.outputTensors.forEach((orig, i) => {
      let out = outputs[i];
      const free = node.outputTensors.length === 1 && !outputIds.has(orig.id) && !alreadyDisturbed(orig) && !isDisturbance(layer);
      if (isEmbedding) {
        if (free && embeddingSpec != null) {
          const penalty = embeddingPenalty(embeddingSpec, layer, orig.shape);
          out = new Disturbance({penalty, name: uniqueName(`${layer.name}_disturbance`)}).apply(out) as SymbolicTensor;
          count++;
        } else if (embeddingSpec == null) {
          notes.push(`options.embedding is null (Embedding layer '${layer.name}')`);
        }
        map.set(orig.id, out);
        return;
      }
      const wanted =
        hidden != null &&
        free &&
        choose(layer) &&
        (!useContinuationRule || !(consumers.get(orig.id) ?? []).every((c) => CONTINUATION_CLASSES.has(c.getClassName())));
      if (wanted) {
        out = new Disturbance({penalty: hidden, name: uniqueName(`${layer.name}_disturbance`)}).apply(out) as SymbolicTensor;
        count++;
      }
      map.set(orig.id, out);
    });
  }
  if (count === 0) {
    if (hidden == null) notes.push('options.hidden is null');
    else notes.push(options.layers === undefined ? 'no layer ends a neuron block before the output' : 'options.layers chose no layer before the output');
    throw new Error(
      `instrument: found no place for a Disturbance layer in model '${model.name}': ${[...new Set(notes)].join('; ')}. ` +
        `Give float inputs an input penalty, keep the default embedding/hidden penalties, or name layers in options.layers.`,
    );
  }
  const rebuiltInputs = graph.inputs.map((t) => newInputs.get(t.id));
  const rebuiltOutputs = graph.outputs.map((t) => map.get(t.id));
  if (rebuiltInputs.some((t) => t == null) || rebuiltOutputs.some((t) => t == null)) {
    throw new Error(`instrument: internal error: could not rebuild model '${model.name}'.`);
  }
  const result = tfl.model({
    inputs: unwrapOne(rebuiltInputs as SymbolicTensor[]),
    outputs: unwrapOne(rebuiltOutputs as SymbolicTensor[]),
    name: options.name ?? `${model.name}_instrumented`,
  });
  copyCompile(model, result);
  return result;
}

/**
 * Warns (console.warn) about models used as layers (a Sequential inside a model): instrument does not
 * look inside them, so their layers get no Disturbance layers.
 */
function warnNestedModels(graph: Graph, modelName: string): void {
  for (const node of graph.nodes) {
    const layer = node.outboundLayer as Layer & {layers?: unknown};
    if (!(layer instanceof tfl.LayersModel) && !Array.isArray(layer.layers)) continue;
    const inner = Array.isArray(layer.layers) ? (layer.layers as Layer[]).filter((l) => !isInputLayer(l)).length : 0;
    console.warn(
      `instrument: layer '${layer.name}' of model '${modelName}' is a nested ${layer.getClassName()} model; the ${inner} layers inside it ` +
        'get no Disturbance layers (nor does its output). To disturb them, build the model from those layers directly (flatten it).',
    );
  }
}

/** A single tensor as itself (so single-input/output models stay that way), several as a list. */
function unwrapOne(ts: SymbolicTensor[]): SymbolicTensor | SymbolicTensor[] {
  return ts.length === 1 ? ts[0] : ts;
}

/**
 * Returns a model without any {@link Disturbance} layer, sharing every other
 * layer and weight with `model`. Its saved model.json names no Disturbance
 * class, so it loads in a process that never imports this package. If `model`
 * is compiled, the result is compiled with the same optimizer, loss(es) and metrics.
 */
export function strip(model: tfl.LayersModel, options: {name?: string} = {}): tfl.LayersModel {
  checkKnownKeys(options, ['name'], 'strip');
  const graph = readGraph(model, 'strip');
  const map = new Map<number, SymbolicTensor>();
  const newInputs = new Map<number, SymbolicTensor>();
  for (const node of graph.nodes) {
    const layer = node.outboundLayer;
    if (isInputLayer(layer)) {
      const fresh = newInput(node.outputTensors[0]);
      newInputs.set(node.outputTensors[0].id, fresh);
      map.set(node.outputTensors[0].id, fresh);
      continue;
    }
    const inputs = node.inputTensors.map((t) => map.get(t.id) as SymbolicTensor);
    if (isDisturbance(layer)) {
      map.set(node.outputTensors[0].id, inputs[0]);
      continue;
    }
    const outputs = applyLayer(layer, inputs, node.callArgs);
    node.outputTensors.forEach((orig, i) => map.set(orig.id, outputs[i]));
  }
  const inputs = graph.inputs.map((t) => newInputs.get(t.id));
  const outputs = graph.outputs.map((t) => map.get(t.id));
  if (inputs.some((t) => t == null) || outputs.some((t) => t == null)) {
    throw new Error(`strip: internal error: could not rebuild model '${model.name}'.`);
  }
  if (outputs.some((t) => inputs.includes(t))) throw new Error(`strip: model '${model.name}' has no layer other than Disturbance layers.`);
  const result = tfl.model({
    inputs: unwrapOne(inputs as SymbolicTensor[]),
    outputs: unwrapOne(outputs as SymbolicTensor[]),
    name: options.name ?? model.name.replace(/_instrumented$/, ''),
  });
  copyCompile(model, result);
  return result;
}

/** A Disturbance layer of a model and the static shape of its input (batch axis `null`). */
export interface DisturbanceSite {
  layer: Disturbance;
  inputShape: (number | null)[];
}

/**
 * The Disturbance layers of a model in model order (topological order of the
 * graph: ℓ = 0 is the one nearest the input), with their input shapes.
 */
export function disturbanceSites(model: tfl.LayersModel): DisturbanceSite[] {
  const graph = readGraph(model, 'disturbanceLayers');
  const found: DisturbanceSite[] = [];
  for (const node of graph.nodes) {
    const layer = node.outboundLayer;
    if (!isDisturbance(layer)) continue;
    if (found.some((s) => s.layer === layer)) {
      throw new Error(`Disturbance layer '${layer.name}' is used twice in model '${model.name}'; each place needs its own layer.`);
    }
    found.push({layer, inputShape: node.inputTensors[0].shape});
  }
  return found;
}

/** The Disturbance layers of a model in model order (ℓ = 0 nearest the input). */
export function disturbanceLayers(model: tfl.LayersModel): Disturbance[] {
  return disturbanceSites(model).map((s) => s.layer);
}
