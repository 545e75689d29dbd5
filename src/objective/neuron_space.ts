/**
 * The deep-attack objective over the neurons themselves (eq. 11 of the seed),
 * evaluated with one ordinary forward pass by switching the model's
 * Disturbance layers into `neuron` mode.
 *
 * For a batch, per example b, with Disturbance layers ℓ = 0..L−1 in model
 * order (ℓ = 0 right after the input):
 *
 *   J_b(n) = c(y_b, ŷ_b) + Σℓ ρℓ(nℓ,b − fℓ(wℓ, nℓ₋₁,b))
 *
 * where fℓ is everything between the previous disturbances and layer ℓ (for
 * ℓ = 0, f₀ = x) and ŷ is computed from the free neurons of the last layers.
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import {Disturbance} from '../layers/disturbance.js';
import {hasAnalyticGradient, type LinearisedDirection, PenaltyConfig, PenaltyExcess, penaltyTermsFused, penaltyValue, penaltyValueAnalyticGrad, penaltyValueAndGradient} from './penalties.js';
import type {BatchObjective} from '../solvers/types.js';

/** Per-example loss c(y_b, ŷ_b): `[B, ...] × [B, ...] → [B]` (lists of tensors for a model with several outputs). */
export type PerExampleLoss = (yTrue: tf.Tensor | tf.Tensor[], yPred: tf.Tensor | tf.Tensor[]) => tf.Tensor1D;

/** One tensor, or one per model input/output. */
type Tensors = tf.Tensor | tf.Tensor[];

/** Runs `fn` with the layers in the given mode and always returns them to `off` (disposing any recording). */
export function withModes<T>(
  layers: Disturbance[],
  mode: 'add' | 'neuron',
  tensors: tf.Tensor[],
  fn: () => T,
  options: {record?: boolean; project?: boolean; penalties?: PenaltyConfig[]} = {},
): T {
  if (tensors.length !== layers.length) {
    throw new Error(`Expected ${layers.length} ${mode === 'add' ? 'disturbance' : 'neuron'} tensors (one per Disturbance layer), got ${tensors.length}.`);
  }
  try {
    layers.forEach((layer, i) =>
      layer.setMode(mode, tensors[i], {record: options.record, project: options.project, penalty: options.penalties?.[i]}),
    );
    return fn();
  } finally {
    for (const layer of layers) layer.reset();
  }
}

/** Inference-mode forward pass; one tensor per output for a model with several outputs. */
function forward(model: tfl.LayersModel, x: Tensors): Tensors {
  return model.apply(x, {training: false}) as Tensors;
}

function takeInputs(layers: Disturbance[]): tf.Tensor[] {
  return layers.map((layer) => {
    const rec = layer.takeRecording();
    if (!rec?.input) {
      throw new Error(
        `Disturbance layer '${layer.name}' was not reached by the forward pass of the model: ` +
          `it must belong to the model being attacked.`,
      );
    }
    rec.output?.dispose();
    return rec.input;
  });
}

/**
 * Builds J(n) of eq. 11 for one batch as a per-example objective over the list
 * of neuron tensors (one per Disturbance layer, each shaped like that layer's
 * input, batch axis included). The model runs in inference mode
 * (`training: false`): BatchNorm uses its moving statistics and does not update
 * them, Dropout is off. `penalties[ℓ]` overrides the penalty of `layers[ℓ]`
 * (default: the layer's own). Disturbance layers of the model that are not in
 * `layers` stay off (dℓ = 0).
 */
export function neuronObjective(
  model: tfl.LayersModel,
  layers: Disturbance[],
  x: Tensors,
  y: Tensors,
  loss: PerExampleLoss,
  penalties: PenaltyConfig[] = layers.map((l) => l.penalty),
): (ns: tf.Tensor[]) => tf.Tensor1D {
  return (ns: tf.Tensor[]) =>
    withModes(
      layers,
      'neuron',
      ns,
      () => {
        const yPred = forward(model, x);
        const inputs = takeInputs(layers);
        try {
          let j = loss(y, yPred);
          layers.forEach((_, i) => {
            j = tf.add(j, penaltyValue(penalties[i], tf.sub(ns[i], inputs[i]), inputs[i]));
          });
          return j;
        } finally {
          for (const t of inputs) t.dispose();
        }
      },
      {record: true},
    );
}

/**
 * One forward pass in `neuron` mode with the neurons `ns`, returning the layer
 * inputs fℓ(nℓ₋₁) it recorded (caller owns them), e.g. to recover d* = n − fℓ(·) by eq. 6.
 */
export function neuronInputs(model: tfl.LayersModel, layers: Disturbance[], x: Tensors, ns: tf.Tensor[]): tf.Tensor[] {
  return withModes(
    layers,
    'neuron',
    ns,
    () => {
      tf.dispose(forward(model, x));
      return takeInputs(layers);
    },
    {record: true},
  );
}

/**
 * Result of a forward pass in `add` mode (eq. 6). All tensors are owned by the
 * caller, who must release them with {@link disposeAddResult} (some are kept, so
 * an enclosing `tf.tidy` does not release them).
 */
export interface AddModeResult {
  /** The neurons nℓ = fℓ(·) + dℓ of every Disturbance layer. */
  neurons: tf.Tensor[];
  /** The layer inputs fℓ(·). */
  inputs: tf.Tensor[];
  /** The disturbances actually applied (projected ones when `project` was set). */
  disturbances: tf.Tensor[];
  /** The model output ŷ (one tensor per output for a model with several outputs). */
  output: tf.Tensor | tf.Tensor[];
}

/**
 * One forward pass with every Disturbance layer adding its dℓ (eq. 6),
 * recording the neurons and layer inputs. With `project`, each dℓ is first
 * projected exactly onto its layer's ball/box, using the actual layer input.
 */
export function forwardAdd(
  model: tfl.LayersModel,
  layers: Disturbance[],
  x: Tensors,
  ds: tf.Tensor[],
  options: {project?: boolean; penalties?: PenaltyConfig[]} = {},
): AddModeResult {
  return withModes(
    layers,
    'add',
    ds,
    () => {
      const output = forward(model, x);
      const neurons: tf.Tensor[] = [];
      const inputs: tf.Tensor[] = [];
      for (const layer of layers) {
        const rec = layer.takeRecording();
        if (!rec?.input || !rec.output) {
          tf.dispose([...(Array.isArray(output) ? output : [output]), ...neurons, ...inputs]);
          throw new Error(`Disturbance layer '${layer.name}' was not reached by the forward pass of model '${model.name}'.`);
        }
        inputs.push(rec.input);
        neurons.push(rec.output);
      }
      const disturbances = options.project ? neurons.map((n, i) => tf.sub(n, inputs[i])) : ds.map((d) => tf.clone(d));
      return {neurons, inputs, disturbances, output};
    },
    {record: true, project: options.project, penalties: options.penalties},
  );
}

/**
 * Eq. 9 per example: c(y, h(w, x, d)) + Σℓ ρℓ(dℓ), by one forward pass in
 * `add` mode. Returns a new tensor `[B]`. `penalties[ℓ]` overrides the
 * penalty of `layers[ℓ]`.
 */
export function disturbedObjective(
  model: tfl.LayersModel,
  layers: Disturbance[],
  x: Tensors,
  y: Tensors,
  ds: tf.Tensor[],
  loss: PerExampleLoss,
  penalties: PenaltyConfig[] = layers.map((l) => l.penalty),
): tf.Tensor1D {
  const r = forwardAdd(model, layers, x, ds);
  try {
    return tf.tidy(() => {
      let j = loss(y, r.output);
      layers.forEach((_, i) => {
        j = tf.add(j, penaltyValue(penalties[i], r.disturbances[i], r.inputs[i]));
      });
      return j;
    });
  } finally {
    disposeAddResult(r);
  }
}

/** Disposes every tensor of an {@link AddModeResult}. */
export function disposeAddResult(r: AddModeResult): void {
  tf.dispose([...r.neurons, ...r.inputs, ...r.disturbances, ...(Array.isArray(r.output) ? r.output : [r.output])]);
}

/**
 * Eq. 9 per example as a differentiable function of the disturbances, for the solvers:
 * `ds ↦ c(y, h(w, x, d)) + Σℓ ρℓ(dℓ)` by one forward pass in `add` mode (the disturbance-space
 * counterpart of {@link neuronObjective}; its gradient reaches every dℓ through the network in
 * one backward pass). Box penalties use the actual layer input: `bases[i]` when given (e.g. the
 * model input x for a layer that disturbs it directly; it must be what the layer receives), else
 * recorded by the forward pass (only when some penalty has a box). Intermediate tensors are left to the caller's tidy.
 */
export function disturbanceObjective(
  model: tfl.LayersModel,
  layers: Disturbance[],
  x: Tensors,
  y: Tensors,
  loss: PerExampleLoss,
  penalties: PenaltyConfig[] = layers.map((l) => l.penalty),
  bases?: (tf.Tensor | undefined)[],
  excessOut?: Map<tf.Tensor, PenaltyExcess>,
  directionsOut?: {directions: LinearisedDirection[]; out: Map<tf.Tensor, tf.Tensor>},
): BatchObjective {
  // the layer inputs are recorded only when a box penalty's input is not given in `bases`
  // (recording clones every layer's input and output at every evaluation)
  const record = penalties.some((p, i) => p.box != null && bases?.[i] == null);
  const f: BatchObjective = (ds: tf.Tensor[]) =>
    withModes(
      layers,
      'add',
      ds,
      () => {
        const yPred = forward(model, x);
        const recs = record ? layers.map((l) => l.takeRecording()) : [];
        try {
          let j = loss(y, yPred);
          layers.forEach((layer, i) => {
            const base = bases?.[i] ?? recs[i]?.input;
            if (record && penalties[i].box && !base) {
              throw new Error(`Disturbance layer '${layer.name}' was not reached by the forward pass of model '${model.name}'.`);
            }
            // gradient of ρ analytic (not taped) unless its box uses a recorded layer input,
            // which depends on the earlier disturbances
            const constantBase = !penalties[i].box || bases?.[i] != null;
            j = tf.add(j, constantBase ? penaltyValueAnalyticGrad(penalties[i], ds[i], base) : penaltyValue(penalties[i], ds[i], base));
          });
          return j;
        } finally {
          for (const r of recs) {
            r?.input?.dispose();
            r?.output?.dispose();
          }
        }
      },
      {record},
    );
  if (!record && penalties.every((p, i) => hasAnalyticGradient(p, bases?.[i]))) {
    // The solvers' evaluations tape only the loss and add the penalties' closed-form gradients:
    // same J and gradient, bit for bit, without the penalties' custom-gradient nodes (and, with
    // `excessOut`, the L∞ excesses are handed to the search direction at the same point).
    f.split = {
      taped: (ds) => withModes(layers, 'add', ds, () => loss(y, forward(model, x))),
      untaped: (ds, c) => {
        let j = c;
        excessOut?.clear();
        const grads = layers.map((_, i) => {
          const r = penaltyValueAndGradient(penalties[i], ds[i], bases?.[i]);
          j = tf.add(j, r.value);
          if (r.excess) excessOut?.set(ds[i], r.excess);
          return r.grad;
        });
        return {value: j as tf.Tensor1D, grads};
      },
      // on wasm: the same values in one SIMD kernel (src/kernels/simd.ts) when every penalty allows
      fused: (ds, c, taped, wantStats) => {
        const r = penaltyTermsFused(c, penalties, ds, bases ?? [], taped, directionsOut?.directions, {stats: wantStats});
        if (r == null) return null;
        excessOut?.clear();
        r.excess.forEach((e, i) => e && excessOut?.set(ds[i], e));
        // the search directions at ds, keyed by the gradient they were computed from
        directionsOut?.out.clear();
        r.directions.forEach((D, i) => D && directionsOut?.out.set(r.grads[i], D));
        return {value: r.value, grads: r.grads, stats: r.stats};
      },
    };
  }
  return f;
}
