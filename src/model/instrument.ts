/**
 * Inserting and removing Disturbance layers in an existing model. This is the
 * only module that walks a model's layer graph.
 *
 * Both operations rebuild the functional graph by calling the *same* layer
 * objects again on new symbolic tensors, so the new model shares every layer
 * and weight with the original (no copies): training one trains the other.
 */
import * as tfl from '@tensorflow/tfjs-layers';
import {Disturbance, isDisturbance} from '../layers/disturbance.js';
import {PenaltyConfig, validatePenalty} from '../objective/penalties.js';

type Layer = tfl.layers.Layer;
type SymbolicTensor = tfl.SymbolicTensor;

/** Penalty given to the input disturbance d₀ when {@link InstrumentOptions.input} is omitted. */
export const DEFAULT_INPUT_PENALTY: PenaltyConfig = Object.freeze({kind: 'quadratic', lambda: 1}) as PenaltyConfig;
/** Penalty given to hidden disturbances when {@link InstrumentOptions.hidden} is omitted. */
export const DEFAULT_HIDDEN_PENALTY: PenaltyConfig = Object.freeze({kind: 'quadratic', lambda: 1}) as PenaltyConfig;

/** Options of {@link instrument}. */
export interface InstrumentOptions {
  /** Penalty of the input disturbance d₀; `null` inserts none. Default {@link DEFAULT_INPUT_PENALTY}. */
  input?: PenaltyConfig | null;
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
]);

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
interface GraphNode {
  outboundLayer: Layer;
  inputTensors: SymbolicTensor[];
  outputTensors: SymbolicTensor[];
  callArgs?: Record<string, unknown>;
}

/** The functional graph behind a model: its inputs, outputs and nodes in topological order. */
interface Graph {
  inputs: SymbolicTensor[];
  outputs: SymbolicTensor[];
  nodes: GraphNode[];
}

function readGraph(model: tfl.LayersModel, what: string): Graph {
  let container = model as unknown as {inputs?: SymbolicTensor[]; outputs?: SymbolicTensor[]; nodesByDepth?: Record<string, GraphNode[]>};
  if (model instanceof tfl.Sequential || model.getClassName() === 'Sequential') {
    let inner = (model as unknown as {model?: typeof container}).model;
    if ((inner == null || inner.nodesByDepth == null) && model.inputs?.length > 0 && model.outputs?.length > 0) {
      // Not built yet (build happens lazily on compile/predict): a read-only functional view of the same nodes.
      inner = tfl.model({inputs: model.inputs, outputs: model.outputs}) as unknown as typeof container;
    }
    if (inner == null || inner.nodesByDepth == null) {
      throw new Error(
        `${what}: the Sequential model '${model.name}' has no layers with a known input shape yet; ` +
          `give its first layer an inputShape before ${what}().`,
      );
    }
    container = inner;
  }
  const {inputs, outputs, nodesByDepth} = container;
  if (!inputs || !outputs || !nodesByDepth) {
    throw new Error(`${what}: '${model.name}' is not a built tfjs-layers model (no inputs/outputs).`);
  }
  if (inputs.length !== 1 || outputs.length !== 1) {
    throw new Error(
      `${what}: model '${model.name}' has ${inputs.length} input(s) and ${outputs.length} output(s); ` +
        `tfjs-deep-adversarial supports Sequential and functional models with exactly one input and one output.`,
    );
  }
  const depths = Object.keys(nodesByDepth)
    .map((k) => Number(k))
    .sort((a, b) => b - a);
  const nodes: GraphNode[] = [];
  for (const depth of depths) nodes.push(...nodesByDepth[String(depth)]);
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

/** Compiles `target` like `source` (same optimizer object, loss and metrics) if `source` was compiled. */
function copyCompile(source: tfl.LayersModel, target: tfl.LayersModel): void {
  const s = source as unknown as {optimizer?: tfl.LayersModel['optimizer']; loss?: unknown; metrics?: unknown};
  if (s.optimizer == null || s.loss == null) return;
  target.compile({
    optimizer: s.optimizer,
    loss: s.loss as Parameters<tfl.LayersModel['compile']>[0]['loss'],
    metrics: s.metrics as Parameters<tfl.LayersModel['compile']>[0]['metrics'],
  });
}

/**
 * Returns a model with {@link Disturbance} layers inserted after the input
 * (d₀, eq. 6 with ℓ = 0) and after each chosen hidden layer, sharing every
 * layer and weight with `model` (no copies). If `model` is compiled, the result
 * is compiled with the same optimizer object, loss and metrics, so it can be
 * passed straight to `fit`. `model` itself is not modified.
 *
 * Works for `tf.sequential` models and functional `tf.model` graphs with
 * branches and `add`/`concatenate` merges (one input, one output). Places that
 * are already followed by a Disturbance layer are left alone, so instrumenting
 * twice gives the same layers.
 *
 * ```ts
 * const adv = instrument(model, {input: {kind: 'linf', epsilon: 0.1, box: [0, 1]},
 *                                hidden: {kind: 'quadratic', lambda: 10}});
 * ```
 *
 * @throws if the model has several inputs/outputs, is not built, a name in
 *   `options.layers` does not exist, a penalty is invalid, or an input
 *   disturbance is requested on a non-float input.
 */
export function instrument(model: tfl.LayersModel, options: InstrumentOptions = {}): tfl.LayersModel {
  const graph = readGraph(model, 'instrument');
  const inputPenalty = options.input === undefined ? DEFAULT_INPUT_PENALTY : options.input;
  const hiddenPenalty = options.hidden === undefined ? DEFAULT_HIDDEN_PENALTY : options.hidden;
  const input = inputPenalty == null ? null : validatePenalty(inputPenalty, 'instrument: options.input');
  const hidden = hiddenPenalty == null ? null : validatePenalty(hiddenPenalty, 'instrument: options.hidden');

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
  const original = graph.inputs[0];
  let inputTensor: SymbolicTensor | null = null;
  for (const node of graph.nodes) {
    const layer = node.outboundLayer;
    if (isInputLayer(layer)) {
      inputTensor = newInput(node.outputTensors[0]);
      let t = inputTensor;
      if (input && !alreadyDisturbed(node.outputTensors[0])) {
        if (original.dtype !== 'float32') {
          throw new Error(
            `instrument: model input '${layer.name}' has dtype ${original.dtype}; an input disturbance needs float32 inputs ` +
              `(integer/embedding inputs cannot be disturbed). Pass {input: null} to disturb only hidden layers.`,
          );
        }
        t = new Disturbance({penalty: input, name: uniqueName(`${layer.name}_disturbance`)}).apply(t) as SymbolicTensor;
      }
      map.set(node.outputTensors[0].id, t);
      continue;
    }
    const inputs = node.inputTensors.map((t) => {
      const mapped = map.get(t.id);
      if (!mapped) throw new Error(`instrument: internal error: layer '${layer.name}' reads a tensor that was not built yet.`);
      return mapped;
    });
    const outputs = applyLayer(layer, inputs, node.callArgs);
    node.outputTensors.forEach((orig, i) => {
      let out = outputs[i];
      const wanted =
        hidden != null &&
        !isDisturbance(layer) &&
        node.outputTensors.length === 1 &&
        !outputIds.has(orig.id) &&
        !alreadyDisturbed(orig) &&
        choose(layer) &&
        (!useContinuationRule || !(consumers.get(orig.id) ?? []).every((c) => CONTINUATION_CLASSES.has(c.getClassName())));
      if (wanted) {
        out = new Disturbance({penalty: hidden, name: uniqueName(`${layer.name}_disturbance`)}).apply(out) as SymbolicTensor;
      }
      map.set(orig.id, out);
    });
  }
  const output = map.get(graph.outputs[0].id);
  if (!inputTensor || !output) throw new Error(`instrument: internal error: could not rebuild model '${model.name}'.`);
  const result = tfl.model({inputs: inputTensor, outputs: output, name: options.name ?? `${model.name}_instrumented`});
  copyCompile(model, result);
  return result;
}

/**
 * Returns a model without any {@link Disturbance} layer, sharing every other
 * layer and weight with `model`. Its saved model.json names no Disturbance
 * class, so it loads in a process that never imports this package. If `model`
 * is compiled, the result is compiled with the same optimizer, loss and metrics.
 */
export function strip(model: tfl.LayersModel, options: {name?: string} = {}): tfl.LayersModel {
  const graph = readGraph(model, 'strip');
  const map = new Map<number, SymbolicTensor>();
  let inputTensor: SymbolicTensor | null = null;
  for (const node of graph.nodes) {
    const layer = node.outboundLayer;
    if (isInputLayer(layer)) {
      inputTensor = newInput(node.outputTensors[0]);
      map.set(node.outputTensors[0].id, inputTensor);
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
  const output = map.get(graph.outputs[0].id);
  if (!inputTensor || !output) throw new Error(`strip: internal error: could not rebuild model '${model.name}'.`);
  if (output === inputTensor) throw new Error(`strip: model '${model.name}' has no layer other than Disturbance layers.`);
  const result = tfl.model({inputs: inputTensor, outputs: output, name: options.name ?? model.name.replace(/_instrumented$/, '')});
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
