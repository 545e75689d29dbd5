/**
 * The bench MLP 784-H-H-10 (ReLU, seeded Glorot initialisation) and its deep-AT-trained variant
 * shared by bench/attack_ab.ts, bench/attack_phases.ts and bench/deep_cost.ts. Call `selectBackend`
 * first.
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import {loadMnist} from '../src/data/mnist.js';
import {instrument} from '../src/model/instrument.js';
import {adversarialCallback} from '../src/training/callback.js';

/** The threat of these benches: input L∞ ε = 0.1 inside [0, 1], hidden quadratic λ = 10. */
export const BENCH_THREAT = {input: {kind: 'linf', epsilon: 0.1, box: [0, 1]}, hidden: {kind: 'quadratic', lambda: 10}} as const;

/** MLP 784-H-H-10 with seeded initialisation (seeds 1, 2, 3), uncompiled. */
export function benchMlp(hidden: number): tfl.Sequential {
  return tfl.sequential({layers: [
    tfl.layers.dense({inputShape: [784], units: hidden, activation: 'relu', kernelInitializer: tfl.initializers.glorotUniform({seed: 1})}),
    tfl.layers.dense({units: hidden, activation: 'relu', kernelInitializer: tfl.initializers.glorotUniform({seed: 2})}),
    tfl.layers.dense({units: 10, activation: 'softmax', kernelInitializer: tfl.initializers.glorotUniform({seed: 3})}),
  ]});
}

/**
 * `benchMlp(hidden)` instrumented with {@link BENCH_THREAT} after 40 steps of deep adversarial
 * training (10 gradient evaluations, batch `batch`, 5 passes over 8 batches of MNIST), so that the
 * attack anneals, rejects and saturates as in training; `x`/`y` is the second batch.
 * `base` is the plain model sharing the trained weights.
 */
export async function trainedDeepMlp(hidden: number, batch: number): Promise<{base: tfl.Sequential; net: tfl.LayersModel; x: tf.Tensor; y: tf.Tensor}> {
  const data = await loadMnist({split: 'train', limit: batch * 8});
  const base = benchMlp(hidden);
  base.compile({optimizer: 'adam', loss: 'categoricalCrossentropy'});
  const net = instrument(base, BENCH_THREAT as never);
  net.compile({optimizer: tf.train.adam(1e-3), loss: 'categoricalCrossentropy'});
  const cb = adversarialCallback({method: 'deep', maxGradientEvaluations: 10, maxIterations: 50, seed: 1});
  for (let e = 0; e < 5; e++) await net.fit(data.xs, data.ys, {batchSize: batch, epochs: 1, shuffle: false, verbose: 0, callbacks: [cb]});
  const x = tf.slice(data.xs, [batch, 0], [batch, 784]);
  const y = tf.slice(data.ys, [batch, 0], [batch, 10]);
  tf.dispose([data.xs, data.ys]);
  return {base, net, x, y};
}
