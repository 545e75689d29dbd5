/**
 * PGD / FGSM on the neurons of chosen Disturbance layers instead of the model
 * input: the embedding-space attack of text models (Miyato, Dai & Goodfellow,
 * ICLR 2017), and the input attack of models with several inputs.
 *
 * The attacked tensors are the disturbances dₛ of the chosen "sites"
 * (Disturbance layers in `add` mode, every other Disturbance layer off); each
 * site has its own ε-ball (L∞ or L2 per example), and a site that disturbs a
 * model input also keeps x + dₛ inside `clip`. The steps are exactly those of
 * input PGD (sign or L2-normalised gradient, projection after every step).
 *
 * @packageDocumentation
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';

import {Disturbance} from '../layers/disturbance.js';
import {disturbanceSites, instrument} from '../model/instrument.js';
import {inboundInputTensors, inputLayersOf, outboundLayers} from '../model/internals.js';
import {assertCompatibleXY, batchSizeOf, perExampleLoss, Tensors} from '../objective/loss.js';
import {withModes} from '../objective/neuron_space.js';
import type {ResolvedPgdOptions} from './pgd.js';
import {deriveSeed, exampleNorm} from './ball.js';

/** A Disturbance layer attacked by {@link runSitePgd}, with the model input it disturbs (if any). */
export interface AttackSite {
  layer: Disturbance;
  /** Index of the model input this layer disturbs directly, or -1 (e.g. an Embedding output). */
  inputIndex: number;
  /** Static shape of the disturbed tensor, batch axis first (`null`). */
  shape: (number | null)[];
}

function inboundOf(layer: tfl.layers.Layer, model: tfl.LayersModel): {producer: tfl.layers.Layer | null; tensor: tfl.SymbolicTensor} | null {
  const inModel = new Set(model.layers);
  for (const inputs of inboundInputTensors(layer)) {
    const t = inputs[0];
    if (t && (t.sourceLayer == null || inModel.has(t.sourceLayer as tfl.layers.Layer))) {
      return {producer: (t.sourceLayer as tfl.layers.Layer) ?? null, tensor: t};
    }
  }
  return null;
}

/** Whether `model` takes token indices: an integer input, or an input that feeds an Embedding layer. */
export function hasTokenInput(model: tfl.LayersModel): boolean {
  const inputLayers = inputLayersOf(model);
  return model.inputs.some((t, i) => {
    if (t.dtype !== 'float32') return true;
    // Consumers of the input, looking through (hand-placed) Disturbance layers.
    const feeds = (layer: tfl.layers.Layer | undefined, depth: number): boolean =>
      (layer ? outboundLayers(layer) : []).some((next) => {
        return next.getClassName() === 'Embedding' || (depth < 8 && next.getClassName() === 'Disturbance' && feeds(next, depth + 1));
      });
    return feeds(inputLayers[i], 0);
  });
}

/**
 * The sites an input-space attack uses on `model`: with `layer`, the
 * Disturbance layer of that name or the one right after the layer of that
 * name; otherwise every Disturbance layer that disturbs a float model input or
 * an Embedding output. Throws naming the fix when the model lacks them.
 */
export function attackSites(model: tfl.LayersModel, layer: string | undefined, who: string): AttackSite[] {
  const all = disturbanceSites(model);
  const describe = (d: Disturbance, shape: (number | null)[]): AttackSite => {
    const src = inboundOf(d, model);
    const inputIndex = src == null ? -1 : model.inputs.findIndex((t) => t === src.tensor);
    return {layer: d, inputIndex, shape};
  };
  if (layer !== undefined) {
    if (typeof layer !== 'string') throw new Error(`${who}: options.layer must be a layer name, got ${typeof layer}.`);
    const own = all.find((s) => s.layer.name === layer);
    if (own) return [describe(own.layer, own.inputShape)];
    const after = all.find((s) => inboundOf(s.layer, model)?.producer?.name === layer);
    if (after) return [describe(after.layer, after.inputShape)];
    const exists = model.layers.some((l) => l.name === layer);
    throw new Error(
      exists
        ? `${who}: options.layer names '${layer}', but no Disturbance layer follows it in model '${model.name}'; ` +
            `attack an instrumented model (instrument(model) puts one after every Embedding layer), or instrument it with {layers: ['${layer}']}.`
        : `${who}: options.layer names '${layer}', which is not a layer of model '${model.name}' ` +
            `(layers: ${model.layers.map((l) => l.name).join(', ')}).`,
    );
  }
  const sites = all
    .map((s) => {
      const src = inboundOf(s.layer, model);
      const inputIndex = src == null ? -1 : model.inputs.findIndex((t) => t === src.tensor);
      const isEmbedding = src?.producer?.getClassName() === 'Embedding';
      // An input site must carry float values that do not go on into an Embedding (token indices).
      const feedsEmbedding = outboundLayers(s.layer).some((next) => next.getClassName() === 'Embedding');
      const floatInput = inputIndex >= 0 && model.inputs[inputIndex].dtype === 'float32' && !feedsEmbedding;
      return floatInput || isEmbedding ? {layer: s.layer, inputIndex, shape: s.inputShape} : null;
    })
    .filter((s): s is AttackSite => s != null);
  if (sites.length === 0) {
    throw new Error(
      `${who}: model '${model.name}' takes token indices (or several inputs) and has no Disturbance layer on its float inputs or ` +
        `Embedding outputs to attack; call instrument(model) first (it puts one after every Embedding layer), or name the layer to ` +
        `attack with options.layer.`,
    );
  }
  return sites;
}

const views = new WeakMap<tfl.LayersModel, tfl.LayersModel>();

/**
 * `model` itself when it has Disturbance layers on its inputs/Embedding outputs,
 * else a cached instrumented view (input + embedding disturbances only) that
 * shares every weight with it. Used by evaluation, which never modifies the model.
 */
export function attackView(model: tfl.LayersModel): tfl.LayersModel {
  try {
    attackSites(model, undefined, 'attackView');
    return model;
  } catch {
    let view = views.get(model);
    if (!view) {
      view = instrument(model, {hidden: null, name: `${model.name}_attack_view`});
      views.set(model, view);
    }
    return view;
  }
}

/** Result of {@link runSitePgd}; the caller owns the tensors. */
export interface SitePgdResult {
  /** One disturbance per site, inside its ball (and the clip box for input sites). */
  disturbances: tf.Tensor[];
  /** Per-example loss at the result (with `wantLoss` or restarts > 1), else null. */
  loss: tf.Tensor1D | null;
  gradientEvaluations: number;
}

/**
 * PGD (or FGSM: one step) over the disturbances of `sites`, maximising
 * Σ_b c(y_b, h(x_b, d_b)) with the model in inference mode. Every ball is
 * `o.epsilon` in `o.norm` per example and site. Leaves no tensors behind
 * besides the result.
 *
 * @internal
 */
export function runSitePgd(
  model: tfl.LayersModel,
  sites: AttackSite[],
  x: Tensors,
  y: Tensors,
  o: ResolvedPgdOptions,
  wantLoss: boolean,
): SitePgdResult {
  assertCompatibleXY(model, x, y);
  const loss = perExampleLoss(model, o.loss);
  const b = batchSizeOf(x);
  const xs = Array.isArray(x) ? x : [x];
  const layers = sites.map((s) => s.layer);
  const shapes = sites.map((s) => {
    if (s.shape.slice(1).some((d) => d == null)) throw new Error(`PGD: Disturbance layer '${s.layer.name}' has an input of unknown shape.`);
    return [b, ...(s.shape.slice(1) as number[])];
  });
  const project = (ds: tf.Tensor[]): tf.Tensor[] =>
    ds.map((d, i) => {
      let p = o.norm === 'linf' ? tf.clipByValue(d, -o.epsilon, o.epsilon) : tf.mul(d, tf.minimum(1, tf.div(o.epsilon, tf.maximum(exampleNorm(d), 1e-12))));
      const k = sites[i].inputIndex;
      if (o.clip && k >= 0) {
        const base = xs[k].dtype === 'float32' ? xs[k] : tf.cast(xs[k], 'float32');
        p = tf.sub(tf.clipByValue(tf.add(base, p), o.clip[0], o.clip[1]), base);
      }
      return p;
    });
  const objective = (...ds: tf.Tensor[]) =>
    withModes(layers, 'add', ds, () => tf.sum(loss(y, model.apply(x, {training: false}) as Tensors)) as tf.Scalar);
  const gradFn = tf.grads(objective);
  const lossAt = (ds: tf.Tensor[]) => withModes(layers, 'add', ds, () => loss(y, model.apply(x, {training: false}) as Tensors));
  const needLoss = wantLoss || o.restarts > 1;
  let best: tf.Tensor[] | null = null;
  let bestLoss: tf.Tensor1D | null = null;
  let evals = 0;
  for (let r = 0; r < o.restarts; r++) {
    let ds = tf.tidy(() =>
      project(
        shapes.map((shape, i) => {
          if (!o.randomStart || o.epsilon === 0) return tf.zeros(shape);
          if (o.norm === 'linf') return tf.randomUniform(shape, -o.epsilon, o.epsilon, 'float32', deriveSeed(o.seed, r, i, 0));
          const g = tf.randomNormal(shape, 0, 1, 'float32', deriveSeed(o.seed, r, i, 1));
          const u = tf.randomUniform([b], 0, 1, 'float32', deriveSeed(o.seed, r, i, 2));
          const units = shape.slice(1).reduce((a, c) => a * c, 1);
          const radius = tf.reshape(tf.mul(o.epsilon, tf.pow(u, 1 / Math.max(units, 1))), [b, ...shape.slice(1).map(() => 1)]);
          return tf.mul(tf.div(g, tf.maximum(exampleNorm(g), 1e-12)), radius);
        }),
      ),
    );
    for (let t = 0; t < o.steps; t++) {
      const cur = ds;
      ds = tf.tidy(() => {
        const gs = gradFn(cur);
        evals++;
        return project(
          cur.map((d, i) => {
            const g = tf.where(tf.isFinite(gs[i]), gs[i], tf.zerosLike(gs[i]));
            const dir = o.norm === 'linf' ? tf.sign(g) : tf.div(g, tf.maximum(exampleNorm(g), 1e-12));
            return tf.add(d, tf.mul(o.stepSize, dir));
          }),
        );
      });
      tf.dispose(cur);
    }
    if (!needLoss) {
      best = ds;
      continue;
    }
    const l = tf.tidy(() => lossAt(ds));
    if (best === null || bestLoss === null) {
      best = ds;
      bestLoss = l;
    } else {
      const prev: tf.Tensor[] = best;
      const prevLoss: tf.Tensor1D = bestLoss;
      const cur: tf.Tensor[] = ds;
      const merged: tf.Tensor[] = tf.tidy(() => {
        const better = tf.greater(l, prevLoss);
        const keep = cur.map((d, i) => tf.where(tf.broadcastTo(tf.reshape(better, [b, ...d.shape.slice(1).map(() => 1)]), d.shape), d, prev[i]));
        return [...keep, tf.where(better, l, prevLoss)];
      });
      tf.dispose([...prev, prevLoss, ...cur, l]);
      bestLoss = merged.pop() as tf.Tensor1D;
      best = merged;
    }
  }
  if (!wantLoss && bestLoss) {
    bestLoss.dispose();
    bestLoss = null;
  }
  return {disturbances: best as tf.Tensor[], loss: bestLoss, gradientEvaluations: evals};
}
