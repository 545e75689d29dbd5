/**
 * The Disturbance layer: nℓ = fℓ(wℓ nℓ₋₁) + dℓ (eq. 6 of the seed).
 *
 * In inference and in plain training it is the identity. The attack engine of
 * this package switches it, at run time, into one of two other modes (the
 * mode is never serialised):
 *
 * | mode      | output                    | used for                                      |
 * |-----------|---------------------------|-----------------------------------------------|
 * | `off`     | x                         | predict, plain fit                            |
 * | `add`     | x + dℓ, dℓ a fixed tensor | eq. 6: the update at d*, evaluating an attack |
 * | `neuron`  | nℓ, a free tensor         | eq. 11: the neuron-space objective            |
 *
 * In `neuron` mode the layer records the residual rℓ = nℓ − x, so one forward
 * pass of the whole model yields every term ρℓ(nℓ − fℓ(nℓ₋₁)) of eq. 11.
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import {DEFAULT_PENALTY, PenaltyConfig, projectDisturbance, validatePenalty} from '../objective/penalties.js';
import {checkKnownKeys} from '../util/options.js';
import {addUnsaved} from '../kernels/add_unsaved.js';

/** Constructor arguments of {@link Disturbance}. */
export interface DisturbanceArgs {
  /** Penalty ρℓ of this layer's disturbance; defaults to {@link DEFAULT_PENALTY} (−‖d‖²). */
  penalty?: PenaltyConfig;
  /** Layer name (unique within a model). */
  name?: string;
  /** Input shape without the batch axis, when this is the first layer of a Sequential model. */
  inputShape?: number[];
  /** Batch input shape, when this is the first layer of a Sequential model. */
  batchInputShape?: (number | null)[];
  /** Whether the layer takes part in training (it has no weights either way). */
  trainable?: boolean;
  /** dtype of the layer's output. */
  dtype?: tf.DataType;
}

/** Keys {@link disturbance} accepts: `penalty` and the generic tfjs layer arguments. */
const DISTURBANCE_ARG_KEYS = ['penalty', 'name', 'inputShape', 'batchInputShape', 'batchSize', 'trainable', 'dtype', 'inputDType', 'weights'];

/** Run-time mode of a {@link Disturbance} layer. Set by the library only. */
export type DisturbanceMode = 'off' | 'add' | 'neuron';

/** What a layer records during one forward pass, when asked to. */
interface Recording {
  /** The layer input x = fℓ(·) (kept; owned by the engine). */
  input?: tf.Tensor;
  /** The layer output (kept; owned by the engine). */
  output?: tf.Tensor;
}

/**
 * JSON has no ±Infinity: a saved box such as `[0, Infinity]` reads back as `[0, null]`. A `null`
 * bound of a serialised box therefore means "unbounded on that side" (−∞ for lo, +∞ for hi), so
 * that a model with an infinite box bound loads as it was saved.
 */
function infiniteBoxFromJson(penalty: PenaltyConfig): PenaltyConfig {
  const box = (penalty as {box?: unknown} | null)?.box;
  if (!Array.isArray(box) || box.length !== 2 || (box[0] !== null && box[1] !== null)) return penalty;
  return {...penalty, box: [box[0] ?? -Infinity, box[1] ?? Infinity]} as PenaltyConfig;
}

function shapeString(shape: readonly (number | null)[]): string {
  return `[${shape.map((s) => (s == null ? 'null' : String(s))).join(', ')}]`;
}

/**
 * A weight-free layer that carries the disturbance dℓ of eq. 6. Create it with
 * {@link disturbance} (or let {@link instrument} insert it).
 */
export class Disturbance extends tfl.layers.Layer {
  /** @nocollapse */
  static className = 'Disturbance';

  /** The penalty ρℓ of this layer (validated, defaults filled in). */
  readonly penalty: PenaltyConfig;

  private modeValue: DisturbanceMode = 'off';
  private tensorValue: tf.Tensor | null = null;
  private projectOnAdd = false;
  private projectPenalty: PenaltyConfig | null = null;
  private recordNext = false;
  private recording: Recording | null = null;

  constructor(args: DisturbanceArgs = {}) {
    super(args as ConstructorParameters<typeof tfl.layers.Layer>[0]);
    this.penalty = validatePenalty(infiniteBoxFromJson(args.penalty ?? DEFAULT_PENALTY), `Disturbance layer '${this.name}'`);
    this.supportsMasking = true;
    this.trainable = false;
  }

  /** Current run-time mode (`off` unless the attack engine is running). */
  get mode(): DisturbanceMode {
    return this.modeValue;
  }

  /**
   * Sets the run-time mode. `tensor` is dℓ for `add` and nℓ for `neuron`; the
   * caller keeps ownership of it. With `project`, `add` mode first projects
   * dℓ onto this layer's ball/box (using the actual layer input) and records
   * the projected disturbance as its output minus input; `penalty` overrides
   * the layer's own penalty for that projection.
   *
   * @internal Used by the attack and training engines of this package.
   */
  setMode(
    mode: DisturbanceMode,
    tensor: tf.Tensor | null = null,
    options: {record?: boolean; project?: boolean; penalty?: PenaltyConfig} = {},
  ): void {
    if (mode !== 'off' && tensor == null) {
      throw new Error(`Disturbance layer '${this.name}': mode '${mode}' needs a tensor.`);
    }
    if (tensor != null && tensor.isDisposed) {
      throw new Error(`Disturbance layer '${this.name}': the ${mode === 'add' ? 'disturbance' : 'neuron'} tensor was already disposed.`);
    }
    this.modeValue = mode;
    this.tensorValue = mode === 'off' ? null : tensor;
    this.projectOnAdd = mode === 'add' && options.project === true;
    this.projectPenalty = options.penalty ?? this.penalty;
    this.recordNext = options.record === true;
    this.recording = null;
  }

  /**
   * Returns (and forgets) what the last forward pass recorded, if recording was
   * requested: the layer input x and the output n. The caller owns (and must
   * dispose) the returned tensors.
   *
   * @internal
   */
  takeRecording(): Recording | null {
    const r = this.recording;
    this.recording = null;
    return r;
  }

  /** Disposes anything recorded and returns the layer to `off` mode. @internal */
  reset(): void {
    if (this.recording) {
      this.recording.input?.dispose();
      this.recording.output?.dispose();
    }
    this.recording = null;
    this.modeValue = 'off';
    this.tensorValue = null;
    this.projectOnAdd = false;
    this.projectPenalty = null;
    this.recordNext = false;
  }

  override computeOutputShape(inputShape: tfl.Shape | tfl.Shape[]): tfl.Shape | tfl.Shape[] {
    return inputShape;
  }

  override call(inputs: tf.Tensor | tf.Tensor[], kwargs: {[key: string]: unknown}): tf.Tensor {
    const x = Array.isArray(inputs) ? inputs[0] : inputs;
    if (Array.isArray(inputs) && inputs.length !== 1) {
      throw new Error(`Disturbance layer '${this.name}' expects exactly one input, got ${inputs.length}.`);
    }
    void kwargs;
    if (this.modeValue === 'off') return x;
    const t = this.tensorValue as tf.Tensor;
    if (!tf.util.arraysEqual(t.shape, x.shape)) {
      throw new Error(
        `Disturbance layer '${this.name}': the ${this.modeValue === 'add' ? 'disturbance' : 'neuron'} tensor has shape ` +
          `${shapeString(t.shape)} but the layer input has shape ${shapeString(x.shape)} (batch axis included).`,
      );
    }
    let out: tf.Tensor;
    if (this.modeValue === 'add') {
      // x + d without the tape's copies of x and d (same values and gradient as tf.add)
      out = addUnsaved(x, this.projectOnAdd ? projectDisturbance(this.projectPenalty ?? this.penalty, t, x) : t);
    } else {
      // A clone (sharing data): tfjs-layers' executor disposes intermediate outputs after use,
      // and `t` belongs to the engine.
      out = tf.clone(t);
    }
    if (this.recordNext) {
      // Clones (sharing data, so cheap) kept so that neither the enclosing model scope nor the
      // engine's later dispose() touches tensors it does not own (x may be the caller's input).
      this.recording = {input: tf.keep(tf.clone(x)), output: this.modeValue === 'add' ? tf.keep(tf.clone(out)) : undefined};
    }
    return out;
  }

  override getConfig(): tf.serialization.ConfigDict {
    const base = super.getConfig();
    const penalty = {...this.penalty} as unknown as tf.serialization.ConfigDictValue;
    return {...base, penalty};
  }

  /** Builds a layer from its serialised config (used by `tf.loadLayersModel`). */
  static override fromConfig<T extends tf.serialization.Serializable>(
    cls: tf.serialization.SerializableConstructor<T>,
    config: tf.serialization.ConfigDict,
  ): T {
    return new cls(config);
  }
}

tf.serialization.registerClass(Disturbance);

/** True when `layer` is a {@link Disturbance} layer (also across duplicated module instances, by class name). */
export function isDisturbance(layer: unknown): layer is Disturbance {
  return (
    layer instanceof Disturbance ||
    (layer != null && (layer as {getClassName?: () => string}).getClassName?.() === Disturbance.className && 'setMode' in (layer as object))
  );
}

/**
 * Creates a {@link Disturbance} layer, in the style of `tf.layers.*`.
 *
 * ```ts
 * const model = tf.sequential({layers: [
 *   disturbance({inputShape: [784], penalty: {kind: 'linf', epsilon: 0.1, box: [0, 1]}}),
 *   tf.layers.dense({units: 64, activation: 'relu'}),
 *   disturbance({penalty: {kind: 'quadratic', lambda: 10}}),
 *   tf.layers.dense({units: 10, activation: 'softmax'}),
 * ]});
 * ```
 */
export function disturbance(config: DisturbanceArgs = {}): Disturbance {
  checkKnownKeys(config, DISTURBANCE_ARG_KEYS, 'layers.disturbance');
  return new Disturbance(config);
}
