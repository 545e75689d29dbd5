// src/model/internals.ts: each accessor of non-public tfjs-layers state, checked against what the
// public API shows of the same thing (fit's History, predict, the compiled optimizer), so that a
// tfjs-layers release that renames a field fails here by name. Also adversarialCallback's
// public `initialStep` (replaces the CLI's write of the callback's private step counter).
import {tf} from './setup.js';
import {rand} from './fixtures/random.js';
import * as tfl from '@tensorflow/tfjs-layers';
import assert from 'node:assert/strict';
import {describe, it} from 'node:test';

import {
  compileArguments, compiledLossFunctions, compiledOptimizer, dedupedMetricsNames, fitHistory, inboundInputTensors,
  inputLayersOf, isTraining, layerActivation, linearActivation, modelMakeTrainFunction, nodesByDepth, outboundLayers,
  prototypeMakeTrainFunction, sequentialInnerModel, setLayerActivation,
} from '../src/model/internals.js';
import {instrument} from '../src/model/instrument.js';
import {adversarialCallback} from '../src/training/callback.js';

function compiledMlp(seed: number): tfl.Sequential {
  const m = tfl.sequential({layers: [
    tfl.layers.dense({units: 5, inputShape: [4], activation: 'relu'}),
    tfl.layers.dense({units: 3, activation: 'softmax'}),
  ]});
  m.setWeights(m.getWeights().map((w, i) => tf.tensor(rand(w.size, seed + 31 * i, -0.8, 0.8), w.shape)));
  m.compile({optimizer: tf.train.adam(0.05), loss: 'categoricalCrossentropy', metrics: ['accuracy']});
  return m;
}

function data(n: number, seed: number): [tf.Tensor2D, tf.Tensor2D] {
  const x = tf.tensor2d(rand(n * 4, seed, 0, 1), [n, 4]);
  const y = tf.tidy(() => tf.cast(tf.oneHot(tf.tensor1d(rand(n, seed + 1, 0, 2.999).map(Math.floor), 'int32'), 3), 'float32')) as tf.Tensor2D;
  return [x, y];
}

describe('model/internals', () => {
  it('reads the graph of a Sequential through its inner model', () => {
    const m = compiledMlp(1);
    const inner = sequentialInnerModel(m);
    assert.ok(inner instanceof tfl.LayersModel, 'a compiled Sequential has an inner LayersModel');
    assert.equal(sequentialInnerModel(inner), undefined, 'a functional model has none');
    const byDepth = nodesByDepth(inner);
    assert.ok(byDepth, 'nodesByDepth');
    // input → dense → dense: three nodes, depth 0 = the output layer's node.
    assert.deepEqual(Object.keys(byDepth).map(Number).sort(), [0, 1, 2]);
    assert.equal(byDepth['0'][0].outboundLayer, m.layers[1]);
    assert.equal(byDepth['1'][0].inputTensors[0], inner.inputs[0]);
    const [inputLayer] = inputLayersOf(inner);
    assert.equal(inputLayer.getClassName(), 'InputLayer');
    assert.ok(outboundLayers(inputLayer).includes(m.layers[0]), 'the input layer feeds the first Dense');
    assert.equal(inboundInputTensors(m.layers[1])[0][0], m.layers[0].output, 'the second Dense reads the first one\'s output');
  });

  it('reads what compile resolved', () => {
    const m = compiledMlp(2);
    const inner = sequentialInnerModel(m)!;
    assert.equal(compiledOptimizer(inner), m.optimizer, 'optimizer_ is the public optimizer');
    const fns = compiledLossFunctions(inner);
    assert.equal(fns?.length, 1);
    const [x, y] = data(8, 3);
    // The resolved loss function gives tfjs' own categorical cross-entropy.
    const own = tf.tidy(() => tf.mean((fns![0] as (a: tf.Tensor, b: tf.Tensor) => tf.Tensor)(y, m.predict(x) as tf.Tensor)).dataSync()[0]);
    const ref = tf.tidy(() => tf.mean(tfl.metrics.categoricalCrossentropy(y, m.predict(x) as tf.Tensor)).dataSync()[0]);
    assert.ok(Math.abs(own - ref) < 1e-6, `${own} vs ${ref}`);
    assert.equal(compileArguments(m).loss, 'categoricalCrossentropy');
    assert.deepEqual(compileArguments(m).metrics, ['accuracy']);
    assert.equal(compiledOptimizer(compiledMlp(3).layers[0] as unknown as tfl.LayersModel), undefined);
    tf.dispose([x, y]);
  });

  it('follows a running fit: History, isTraining and the metric names of the step', async () => {
    const m = compiledMlp(4);
    const inner = sequentialInnerModel(m)!;
    const [x, y] = data(16, 5);
    const seen: {training: boolean; names: string[]}[] = [];
    assert.equal(isTraining(inner), false);
    const h = await m.fit(x, y, {epochs: 1, batchSize: 8, verbose: 0, callbacks: [new tfl.CustomCallback({
      onBatchEnd: async () => { seen.push({training: isTraining(inner), names: dedupedMetricsNames(inner)}); },
    })]});
    assert.equal(seen.length, 2);
    assert.ok(seen.every((s) => s.training), 'isTraining inside fit');
    assert.equal(isTraining(inner), false, 'not after fit');
    assert.deepEqual(seen[0].names, Object.keys(h.history), 'step outputs are named like the History keys');
    assert.equal(fitHistory(inner), h, 'model.history is the History fit returned');
    tf.dispose([x, y]);
  });

  it('reads and swaps a layer activation (predict before the output softmax = logits)', () => {
    const m = compiledMlp(6);
    const out = m.layers[1];
    assert.equal(layerActivation(out)?.getClassName(), 'softmax');
    assert.equal(layerActivation(m.layers[0])?.getClassName(), 'relu');
    const [x] = data(4, 7);
    const logits = tf.tidy(() => {
      const [k0, b0, k1, b1] = m.getWeights();
      return tf.add(tf.matMul(tf.relu(tf.add(tf.matMul(x, k0), b0)), k1), b1);
    });
    const saved = setLayerActivation(out, linearActivation());
    let z: tf.Tensor;
    try {
      z = m.predict(x) as tf.Tensor;
    } finally {
      setLayerActivation(out, saved);
    }
    assert.equal(layerActivation(out)?.getClassName(), 'softmax', 'restored');
    assert.ok(tf.max(tf.abs(tf.sub(z, logits))).dataSync()[0] < 1e-5);
    tf.dispose([x, logits, z]);
  });

  it('sees the hooked makeTrainFunction on the prototype and on a model', () => {
    const proto = prototypeMakeTrainFunction();
    assert.equal(typeof proto, 'function');
    assert.equal(modelMakeTrainFunction(compiledMlp(8)), proto);
  });
});

describe('adversarialCallback initialStep', () => {
  /** Deep adversarial training with a random start: the weights depend on every step's seed. */
  async function train(batches: number[][], initialSteps: number[]): Promise<Float32Array[]> {
    const m = compiledMlp(9);
    const adv = instrument(m, {input: {kind: 'linf', epsilon: 0.2}, hidden: {kind: 'quadratic', lambda: 1}});
    const [x, y] = data(24, 11);
    for (let i = 0; i < batches.length; i++) {
      const idx = tf.tensor1d(batches[i], 'int32');
      const xs = tf.gather(x, idx);
      const ys = tf.gather(y, idx);
      await adv.fit(xs, ys, {epochs: 1, batchSize: 8, shuffle: false, verbose: 0,
        callbacks: [adversarialCallback({method: 'deep', init: 'random', maxGradientEvaluations: 2, seed: 5, initialStep: initialSteps[i]})]});
      tf.dispose([idx, xs, ys]);
    }
    tf.dispose([x, y]);
    return m.getWeights().map((w) => w.dataSync() as Float32Array);
  }
  const all = Array.from({length: 24}, (_, i) => i);

  it('a fit resumed after b batches with initialStep b equals the uninterrupted fit', async () => {
    const whole = await train([all], [0]);
    const resumed = await train([all.slice(0, 8), all.slice(8)], [0, 1]);
    const restarted = await train([all.slice(0, 8), all.slice(8)], [0, 0]);
    const same = (a: Float32Array[], b: Float32Array[]) => a.every((w, i) => w.every((v, j) => v === b[i][j]));
    assert.ok(same(whole, resumed), 'initialStep 1 continues the seed stream');
    assert.ok(!same(whole, restarted), 'control: without initialStep the second fit repeats step 0\'s random start');
  });

  it('refuses a bad initialStep', () => {
    for (const bad of [-1, 1.5, Number.NaN, '2']) {
      assert.throws(() => adversarialCallback({method: 'deep', initialStep: bad as number}), /options\.initialStep must be an integer >= 0/);
    }
  });
});
