// Keras-style models like the official tfjs examples (text CNN / LSTM, ACGAN discriminator and a two-input
// generator-like model, GRU regressor, BatchNorm DQN CNN, boston-housing MLP), tiny sizes: for each,
// instrument + one short deep fit + one PGD fit with finite losses, strip + save/load, evaluateRobustness.
import {tf} from './setup.js';
import {rand} from './fixtures/random.js';
import * as tfl from '@tensorflow/tfjs-layers';
import assert from 'node:assert/strict';
import {describe, it} from 'node:test';
import {mkdtempSync, rmSync} from 'node:fs';
import {tmpdir} from 'node:os';
import {join} from 'node:path';

import {adversarialCallback, adversarialStep, disturbanceLayers, evaluateRobustness, instrument, strip} from '../src/index.js';
import {fileSystem} from '../src/io/file_system.js';

// The test set-up loads tfjs-core without its chained ops, which the default (orthogonal) recurrent
// initializer needs; '@tensorflow/tfjs' registers them. Use glorotUniform here.
const rec = {recurrentInitializer: 'glorotUniform' as const};

interface Case {
  name: string;
  build: () => tfl.LayersModel;
  data: () => {x: tf.Tensor | tf.Tensor[]; y: tf.Tensor | tf.Tensor[]};
  /** Regression loss (evaluateRobustness reports worst-case loss instead of accuracy). */
  regression?: boolean;
}

const N = 8;
const tokens = (seed: number) => tf.tensor2d(rand(N * 10, seed, 0, 20).map(Math.floor), [N, 10]);
const binary = (seed: number) => tf.tensor2d(rand(N, seed, 0, 1).map((v) => (v > 0.5 ? 1 : 0)), [N, 1]);

function textCnn(): tfl.LayersModel {
  const m = tfl.sequential({
    layers: [
      tfl.layers.embedding({inputDim: 20, outputDim: 8, inputLength: 10}),
      tfl.layers.conv1d({filters: 6, kernelSize: 3, activation: 'relu'}),
      tfl.layers.globalMaxPooling1d({}),
      tfl.layers.dense({units: 1, activation: 'sigmoid'}),
    ],
  });
  m.compile({optimizer: 'adam', loss: 'binaryCrossentropy', metrics: ['acc']});
  return m;
}

function textLstm(): tfl.LayersModel {
  const m = tfl.sequential({
    layers: [
      tfl.layers.embedding({inputDim: 20, outputDim: 8, inputLength: 10}),
      tfl.layers.lstm({units: 4, ...rec}),
      tfl.layers.dense({units: 1, activation: 'sigmoid'}),
    ],
  });
  m.compile({optimizer: 'adam', loss: 'binaryCrossentropy', metrics: ['acc']});
  return m;
}

function discriminator(): tfl.LayersModel {
  const image = tfl.input({shape: [8, 8, 1]});
  let h = tfl.layers.conv2d({filters: 4, kernelSize: 3, strides: 2, padding: 'same'}).apply(image) as tfl.SymbolicTensor;
  h = tfl.layers.leakyReLU({alpha: 0.2}).apply(h) as tfl.SymbolicTensor;
  h = tfl.layers.flatten().apply(h) as tfl.SymbolicTensor;
  const validity = tfl.layers.dense({units: 1, activation: 'sigmoid', name: 'validity'}).apply(h) as tfl.SymbolicTensor;
  const cls = tfl.layers.dense({units: 3, activation: 'softmax', name: 'cls'}).apply(h) as tfl.SymbolicTensor;
  const m = tfl.model({inputs: image, outputs: [validity, cls]});
  m.compile({optimizer: tf.train.adam(0.001), loss: ['binaryCrossentropy', 'sparseCategoricalCrossentropy']});
  return m;
}

function twoInput(): tfl.LayersModel {
  const latent = tfl.input({shape: [4], name: 'latent'});
  const label = tfl.input({shape: [1], dtype: 'int32', name: 'label'});
  const e = tfl.layers.flatten().apply(tfl.layers.embedding({inputDim: 3, outputDim: 4}).apply(label)) as tfl.SymbolicTensor;
  let h = tfl.layers.multiply().apply([latent, e]) as tfl.SymbolicTensor;
  h = tfl.layers.dense({units: 8, activation: 'relu'}).apply(h) as tfl.SymbolicTensor;
  const out = tfl.layers.dense({units: 3, activation: 'softmax'}).apply(h) as tfl.SymbolicTensor;
  const m = tfl.model({inputs: [latent, label], outputs: out});
  m.compile({optimizer: 'adam', loss: 'sparseCategoricalCrossentropy', metrics: ['acc']});
  return m;
}

function gruRegressor(): tfl.LayersModel {
  const m = tfl.sequential({
    layers: [tfl.layers.gru({units: 4, inputShape: [6, 3], ...rec}), tfl.layers.dense({units: 1})],
  });
  m.compile({optimizer: tf.train.rmsprop(0.01), loss: 'meanAbsoluteError'});
  return m;
}

function dqn(): tfl.LayersModel {
  const m = tfl.sequential({
    layers: [
      tfl.layers.conv2d({filters: 4, kernelSize: 3, padding: 'same', activation: 'relu', inputShape: [6, 6, 2]}),
      tfl.layers.batchNormalization(),
      tfl.layers.conv2d({filters: 4, kernelSize: 3, padding: 'same', activation: 'relu'}),
      tfl.layers.batchNormalization(),
      tfl.layers.flatten(),
      tfl.layers.dense({units: 8, activation: 'relu'}),
      tfl.layers.dropout({rate: 0.25}),
      tfl.layers.dense({units: 3}),
    ],
  });
  m.compile({optimizer: tf.train.adam(0.001), loss: 'meanSquaredError'});
  return m;
}

const cases: Case[] = [
  {name: 'text CNN (Embedding → Conv1D → GlobalMaxPooling1D → Dense)', build: textCnn, data: () => ({x: tokens(1), y: binary(2)})},
  {name: 'text LSTM (Embedding → LSTM → Dense)', build: textLstm, data: () => ({x: tokens(3), y: binary(4)})},
  {
    name: 'two-output discriminator (ACGAN)',
    build: discriminator,
    data: () => ({
      x: tf.tensor4d(rand(N * 64, 5), [N, 8, 8, 1]),
      y: [binary(6), tf.tensor1d(rand(N, 7, 0, 3).map(Math.floor))],
    }),
  },
  {
    name: 'two-input model (float latent + integer label → Embedding)',
    build: twoInput,
    data: () => ({x: [tf.tensor2d(rand(N * 4, 8), [N, 4]), tf.tensor2d(rand(N, 9, 0, 3).map(Math.floor), [N, 1], 'int32')], y: tf.tensor1d(rand(N, 10, 0, 3).map(Math.floor))}),
  },
  {name: 'GRU regressor (meanAbsoluteError)', build: gruRegressor, data: () => ({x: tf.tensor3d(rand(N * 18, 11), [N, 6, 3]), y: tf.tensor2d(rand(N, 12, 0, 5), [N, 1])}), regression: true},
  {name: 'BatchNorm DQN CNN (meanSquaredError)', build: dqn, data: () => ({x: tf.tensor4d(rand(N * 72, 13, 0, 1), [N, 6, 6, 2]), y: tf.tensor2d(rand(N * 3, 14, -1, 1), [N, 3])}), regression: true},
];

function allFinite(model: tfl.LayersModel): boolean {
  return model.getWeights().every((w) => tf.tidy(() => tf.all(tf.isFinite(w)).dataSync()[0] === 1));
}

function predictions(model: tfl.LayersModel, x: tf.Tensor | tf.Tensor[]): number[] {
  return tf.tidy(() => {
    const p = model.predict(x) as tf.Tensor | tf.Tensor[];
    return (Array.isArray(p) ? p : [p]).flatMap((t) => Array.from(t.dataSync()));
  });
}

describe('models like the official tfjs examples', () => {
  for (const c of cases) {
    it(c.name, async () => {
      const base = c.build();
      const {x, y} = c.data();
      const adv = instrument(base);
      const layers = disturbanceLayers(adv);
      assert.ok(layers.length >= 2, `${layers.length} Disturbance layers`);
      const deepFit = () => adv.fit(x, y, {
        epochs: 1,
        batchSize: N,
        verbose: 0,
        callbacks: [adversarialCallback({method: 'deep', maxIterations: 2, seed: 1})],
      });
      await deepFit(); // creates the optimizer state
      const before = tf.memory().numTensors;
      const deep = await deepFit();
      const deepLoss = deep.history.loss[0] as number;
      assert.ok(Number.isFinite(deepLoss), `deep loss ${deepLoss}`);
      assert.ok(Number.isFinite(deep.history.adv_objective[0] as number), `deep objective ${deep.history.adv_objective}`);
      const pgd = await adv.fit(x, y, {
        epochs: 1,
        batchSize: N,
        verbose: 0,
        callbacks: [adversarialCallback({method: 'pgd', epsilon: 0.05, steps: 2, seed: 2})],
      });
      assert.ok(Number.isFinite(pgd.history.loss[0] as number), `pgd loss ${pgd.history.loss}`);
      assert.ok(Number.isFinite(pgd.history.adv_objective[0] as number), `pgd objective ${pgd.history.adv_objective}`);
      assert.ok(allFinite(base), 'weights finite');
      assert.equal(tf.memory().numTensors, before, 'no tensors left by the two fits');

      // strip + save/load: the loaded plain model predicts like the instrumented one.
      const dir = mkdtempSync(join(tmpdir(), 'tda-models-'));
      try {
        await strip(adv).save(fileSystem(dir));
        const loaded = await tfl.loadLayersModel(fileSystem(dir));
        const want = predictions(adv, x);
        const got = predictions(loaded, x);
        assert.equal(got.length, want.length);
        got.forEach((v, i) => assert.ok(Math.abs(v - want[i]) <= 1e-5, `prediction ${i}: ${v} vs ${want[i]}`));
        loaded.dispose();
      } finally {
        rmSync(dir, {recursive: true, force: true});
      }

      // evaluateRobustness on the plain model (embedding-space / per-input attacks through a view sharing its weights).
      const attacks = [{kind: 'pgd' as const, steps: 2, epsilons: [0.05]}, {kind: 'fgsm' as const, epsilons: [0.05]}, {kind: 'deep' as const, maxIterations: 2, epsilons: [0.05]}];
      evaluateRobustness(base, x, y, {attacks}); // warm-up (caches the attack view)
      const memory = tf.memory().numTensors;
      const r = evaluateRobustness(base, x, y, {attacks, seed: 1});
      assert.equal(tf.memory().numTensors, memory, 'evaluateRobustness leaves no tensors');
      assert.equal(r.examples, N);
      const outputs = Array.isArray(y) ? y.length : 1;
      if (c.regression) {
        assert.equal(r.task, 'regression');
        assert.ok(Number.isNaN(r.cleanAccuracy), 'no accuracy for a regression model');
        // Independent: tfjs' own evaluate gives the mean clean loss.
        const ev = tf.tidy(() => (base.evaluate(x, y, {batchSize: N}) as tf.Scalar).dataSync()[0]);
        assert.ok(Math.abs((r.cleanLoss as number) - ev) <= 1e-4 * Math.max(1, ev), `clean loss ${r.cleanLoss} vs evaluate ${ev}`);
        for (const w of r.worstCase) assert.ok((w.loss as number) >= (r.cleanLoss as number) - 1e-6, `worst-case loss ${w.loss} < clean ${r.cleanLoss}`);
        for (const a of r.attacks) assert.ok(Number.isFinite(a.points[0].loss as number), `${a.name} loss`);
      } else {
        assert.equal(r.task, 'classification');
        for (const a of r.attacks) assert.ok(a.points[0].accuracy <= r.cleanAccuracy && a.points[0].accuracy >= 0, `${a.name}: ${a.points[0].accuracy}`);
      }
      if (outputs > 1) {
        assert.equal(r.outputs?.length, outputs);
        for (const a of r.attacks) assert.equal(a.points[0].outputs?.length, outputs);
      }
      tf.dispose((Array.isArray(x) ? x : [x]).concat(Array.isArray(y) ? y : [y]));
    });
  }
});

/** The boston-housing example's MLP (two sigmoid hidden layers of 50, meanSquaredError, SGD 0.01) on boston-like data. */
function boston(): {model: tfl.LayersModel; x: tf.Tensor2D; y: tf.Tensor2D} {
  const model = tfl.sequential({
    layers: [
      tfl.layers.dense({units: 50, activation: 'sigmoid', inputShape: [13], kernelInitializer: tfl.initializers.glorotNormal({seed: 1})}),
      tfl.layers.dense({units: 50, activation: 'sigmoid', kernelInitializer: tfl.initializers.glorotNormal({seed: 2})}),
      tfl.layers.dense({units: 1, kernelInitializer: tfl.initializers.glorotNormal({seed: 3})}),
    ],
  });
  model.compile({optimizer: tf.train.sgd(0.01), loss: 'meanSquaredError'});
  const n = 32;
  const x = tf.tensor2d(rand(n * 13, 21, -2, 2), [n, 13]); // normalised features, as the example feeds them
  const y = tf.tensor2d(rand(n, 22, 5, 50), [n, 1]); // prices in k$
  return {model, x, y};
}

function cleanLoss(model: tfl.LayersModel, x: tf.Tensor, y: tf.Tensor): number {
  return tf.tidy(() => (model.evaluate(x, y, {batchSize: 32}) as tf.Scalar).dataSync()[0]);
}

describe('regression losses and unbounded inner problems', () => {
  it('boston MLP with the defaults: the attack maximises √MSE, stays bounded, and training lowers the clean loss', async () => {
    const {model, x, y} = boston();
    const adv = instrument(model);
    const before = cleanLoss(model, x, y);
    const h = await adv.fit(x, y, {epochs: 5, batchSize: 16, verbose: 0, callbacks: [adversarialCallback({method: 'deep', seed: 3})]});
    const after = cleanLoss(model, x, y);
    const objective = h.history.adv_objective as number[];
    const loss = h.history.loss as number[];
    console.log(`  boston defaults: clean loss ${before.toFixed(1)} -> ${after.toFixed(1)}; adv_objective ${objective.map((v) => v.toFixed(2)).join(', ')}; adv loss ${loss.map((v) => v.toFixed(1)).join(', ')}; skipped ${h.history.adv_skipped_updates}`);
    assert.ok(objective.every(Number.isFinite) && loss.every(Number.isFinite));
    assert.deepEqual(h.history.adv_skipped_updates, [0, 0, 0, 0, 0]);
    assert.ok(after < before, `clean loss ${before} -> ${after}`);
    // √MSE objective: of the order of the error, not of 1e14.
    assert.ok(Math.max(...objective) < 10 * Math.sqrt(before) + 10, `objective ${objective}`);
    tf.dispose([x, y]);
  });

  it('attacking the squared loss itself (the old default) is detected: clear error naming the layer, weights unchanged', async () => {
    const {model, x, y} = boston();
    const adv = instrument(model);
    const weights = model.getWeights().map((w) => Array.from(w.dataSync()));
    // The step itself leaves nothing behind on this error path (a failed tfjs fit keeps 1 tensor of its own).
    const before = tf.memory().numTensors;
    assert.throws(() => adversarialStep(adv, x, y, {method: 'deep', loss: 'meanSquaredError', seed: 3}), /looks unbounded/);
    assert.equal(tf.memory().numTensors, before, 'no tensors left on the error path');
    await assert.rejects(
      adv.fit(x, y, {epochs: 1, batchSize: 32, verbose: 0, callbacks: [adversarialCallback({method: 'deep', loss: 'meanSquaredError', seed: 3})]}),
      (e: Error) => {
        console.log(`  ${e.message}`);
        return /looks unbounded.*layer '.*_disturbance'.*No update was applied.*larger λ.*ball budget/.test(e.message);
      },
    );
    model.getWeights().forEach((w, i) => assert.deepEqual(Array.from(w.dataSync()), weights[i]));
    tf.dispose([x, y]);
  });
});

describe('callbacks', () => {
  it('plain-object callbacks ({onBatchEnd}) mixed with adversarialCallback in one list, in either order', async () => {
    const model = textCnn();
    const adv = instrument(model);
    const x = tokens(31);
    const y = binary(32);
    for (const order of ['ours first', 'plain first'] as const) {
      const seen: number[] = [];
      const plain = {onBatchEnd: async (_batch: number, logs?: tfl.Logs) => void seen.push(logs?.adv_objective as number)};
      const ours = adversarialCallback({method: 'deep', maxIterations: 1, seed: 1});
      const callbacks = (order === 'ours first' ? [ours, plain] : [plain, ours]) as unknown as tfl.CustomCallbackArgs[];
      const h = await adv.fit(x, y, {epochs: 1, batchSize: 4, verbose: 0, callbacks});
      assert.equal(seen.length, 2, `${order}: onBatchEnd called per batch`);
      assert.ok(Number.isFinite(h.history.adv_objective[0] as number), `${order}: the adversarial callback ran`);
      // The plain callback sees the batch keys when it is called after the attack step.
      assert.ok(seen.every(Number.isFinite), `${order}: ${seen}`);
    }
    tf.dispose([x, y]);
  });
});
