import {tf} from './setup.js';
import * as tfl from '@tensorflow/tfjs-layers';
import {test} from 'node:test';
import assert from 'node:assert/strict';
import {execFileSync} from 'node:child_process';
import {mkdtempSync, readFileSync, rmSync} from 'node:fs';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import {Disturbance, disturbanceLayers, instrument, layers as advLayers, strip} from '../src/index.js';
import {fileSystem} from '../src/io/file_system.js';
import {cnn, mlp, residual} from './fixtures/models.js';

function maxAbsDiff(a: tf.Tensor, b: tf.Tensor): number {
  return tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]);
}

function predictDiff(m1: tfl.LayersModel, m2: tfl.LayersModel, x: tf.Tensor): number {
  return tf.tidy(() => maxAbsDiff(m1.predict(x) as tf.Tensor, m2.predict(x) as tf.Tensor));
}

function classNames(model: tfl.LayersModel): string[] {
  return model.layers.map((l) => l.getClassName());
}

test('instrumented Sequential MLP predicts like the original and has the expected disturbances', () => {
  const model = mlp();
  const adv = instrument(model);
  // input + after each hidden dense; never after the output layer
  assert.deepEqual(classNames(adv), ['InputLayer', 'Disturbance', 'Dense', 'Disturbance', 'Dense', 'Disturbance', 'Dense']);
  const x = tf.randomNormal([7, 6], 0, 1, 'float32', 1);
  assert.ok(predictDiff(model, adv, x) <= 1e-6);
  x.dispose();
});

test('instrumented CNN: one disturbance per conv block (after the pooling), none after flatten/dropout/output', () => {
  const model = cnn();
  const adv = instrument(model);
  assert.deepEqual(classNames(adv), [
    'InputLayer', 'Disturbance', 'Conv2D', 'BatchNormalization', 'Activation', 'MaxPooling2D', 'Disturbance', 'Flatten', 'Dropout', 'Dense',
  ]);
  const x = tf.randomNormal([4, 6, 6, 1], 0, 1, 'float32', 2);
  assert.ok(predictDiff(model, adv, x) <= 1e-6);
  x.dispose();
});

test('instrumented residual functional net predicts like the original; merges get disturbances', () => {
  const model = residual();
  const adv = instrument(model);
  const names = classNames(adv);
  assert.equal(names.filter((n) => n === 'Disturbance').length, 1 + 3 + 2); // input, 3 hidden dense, add + concatenate
  const x = tf.randomNormal([5, 5], 0, 1, 'float32', 3);
  assert.ok(predictDiff(model, adv, x) <= 1e-6);
  x.dispose();
});

test('layers option (names / predicate), input:null and hidden:null choose the places', () => {
  const model = mlp();
  const [d1, d2] = model.layers;
  const byName = instrument(model, {layers: [d2.name], input: null});
  assert.deepEqual(classNames(byName), ['InputLayer', 'Dense', 'Dense', 'Disturbance', 'Dense']);
  const byPredicate = instrument(model, {layers: (l) => l.name === d1.name, hidden: {kind: 'linf', epsilon: 0.5}});
  const ds = disturbanceLayers(byPredicate);
  assert.equal(ds.length, 2);
  assert.deepEqual(ds[1].penalty, {kind: 'linf', epsilon: 0.5, lambda: 100});
  const noHidden = instrument(model, {hidden: null});
  assert.deepEqual(classNames(noHidden), ['InputLayer', 'Disturbance', 'Dense', 'Dense', 'Dense']);
  assert.throws(() => instrument(model, {layers: ['nope']}), /options\.layers names 'nope'/);
  assert.throws(() => instrument(model, {hidden: {kind: 'linf', epsilon: -1}}), /options\.hidden.*'epsilon' must be >= 0/);
});

test('instrument is idempotent and keeps hand-placed Disturbance layers', () => {
  const model = mlp();
  const once = instrument(model);
  const twice = instrument(once);
  assert.deepEqual(classNames(twice), classNames(once));
  assert.deepEqual(disturbanceLayers(twice), disturbanceLayers(once)); // the same layer objects
  const hand = tfl.sequential({
    layers: [
      advLayers.disturbance({inputShape: [4], penalty: {kind: 'l2', epsilon: 0.3}}),
      tfl.layers.dense({units: 5, activation: 'relu'}),
      tfl.layers.dense({units: 2}),
    ],
  });
  const inst = instrument(hand);
  assert.deepEqual(classNames(inst), ['InputLayer', 'Disturbance', 'Dense', 'Disturbance', 'Dense']);
  assert.equal(disturbanceLayers(inst)[0], hand.layers[0]);
});

test('weights are shared between the original and the instrumented model', () => {
  const model = mlp();
  const adv = instrument(model);
  const w = adv.layers.find((l) => l.getClassName() === 'Dense')!;
  const original = model.layers[0];
  assert.equal(w, original);
  const x = tf.randomNormal([3, 6], 0, 1, 'float32', 4);
  const before = model.predict(x) as tf.Tensor;
  const newKernel = tf.mul(original.getWeights()[0], 2);
  w.setWeights([newKernel, original.getWeights()[1]]); // change through the instrumented model
  assert.ok(predictDiff(model, adv, x) <= 1e-6);
  assert.ok(maxAbsDiff(before, model.predict(x) as tf.Tensor) > 1e-3); // the original saw the change
  tf.dispose([x, before, newKernel]);
});

test('the instrumented model compiles like the original and trains with plain fit', async () => {
  const model = mlp();
  model.compile({optimizer: 'sgd', loss: 'categoricalCrossentropy', metrics: ['accuracy']});
  const adv = instrument(model);
  const x = tf.randomNormal([16, 6], 0, 1, 'float32', 5);
  const y = tf.oneHot(tf.tensor1d([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0], 'int32'), 3);
  const kernelBefore = model.layers[0].getWeights()[0].dataSync().slice();
  const h = await adv.fit(x, y, {epochs: 2, batchSize: 8, verbose: 0});
  assert.ok(Number.isFinite(h.history.loss[1] as number));
  assert.ok('acc' in h.history || 'accuracy' in h.history);
  const kernelAfter = model.layers[0].getWeights()[0].dataSync();
  assert.ok(kernelAfter.some((v, i) => v !== kernelBefore[i]), 'training the instrumented model trains the shared weights');
  tf.dispose([x, y]);
});

test('strip removes every Disturbance and predicts like the original', () => {
  const model = residual();
  const adv = instrument(model);
  const stripped = strip(adv);
  assert.ok(!classNames(stripped).includes('Disturbance'));
  assert.ok(!JSON.stringify(stripped.toJSON(null, false)).includes('Disturbance'));
  assert.ok(JSON.stringify(adv.toJSON(null, false)).includes('Disturbance'));
  const x = tf.randomNormal([4, 5], 0, 1, 'float32', 6);
  assert.ok(predictDiff(model, stripped, x) <= 1e-6);
  x.dispose();
});

test('Disturbance config (penalty) round-trips through getConfig/fromConfig', () => {
  const layer = advLayers.disturbance({name: 'd_round', penalty: {kind: 'l1', epsilon: 2, lambda: 7, box: [0, 1]}});
  const config = layer.getConfig();
  const copy = tf.serialization.SerializationMap.getMap().classNameMap[
    Object.keys(tf.serialization.SerializationMap.getMap().classNameMap).find((k) => k.endsWith('Disturbance'))!
  ][1](Disturbance, config) as Disturbance;
  assert.deepEqual(copy.penalty, {kind: 'l1', epsilon: 2, lambda: 7, box: [0, 1], boxLambda: 7});
  assert.equal(copy.name, 'd_round');
  assert.throws(() => advLayers.disturbance({penalty: {kind: 'cubic', lambda: 1} as never}), /'kind' must be one of/);
  assert.throws(() => advLayers.disturbance({penalty: {kind: 'quadratic', lambda: NaN}}), /'lambda' must be a finite number/);
});

test('save → load in a fresh process gives the same predictions; stripped model loads without the package', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tda-instrument-'));
  const x = tf.randomUniform([3, 5], 0, 1, 'float32', 7);
  try {
    const model = residual();
    const adv = instrument(model, {input: {kind: 'linf', epsilon: 0.1, box: [0, 1]}});
    const expected = Array.from((adv.predict(x) as tf.Tensor).dataSync());
    const input = JSON.stringify({shape: x.shape, values: Array.from(x.dataSync())});
    await adv.save(fileSystem(join(dir, 'inst')));
    await strip(adv).save(fileSystem(join(dir, 'plain')));
    assert.ok(readFileSync(join(dir, 'inst', 'model.json'), 'utf8').includes('Disturbance'));
    assert.ok(!readFileSync(join(dir, 'plain', 'model.json'), 'utf8').includes('Disturbance'));
    const run = (sub: string, flag: string) =>
      JSON.parse(
        execFileSync(process.execPath, ['--import', 'tsx', 'test/fixtures/load_predict.ts', join(dir, sub), input, flag], {
          encoding: 'utf8',
          stdio: ['ignore', 'pipe', 'pipe'],
        }),
      ) as {values: number[]; layers: string[]};
    for (const [sub, flag] of [['inst', '--with-package'], ['plain', '--without-package']]) {
      const got = run(sub, flag);
      assert.equal(got.values.length, expected.length);
      got.values.forEach((v, i) => assert.ok(Math.abs(v - expected[i]) <= 1e-6, `${sub}: ${v} vs ${expected[i]}`));
      assert.equal(got.layers.includes('Disturbance'), sub === 'inst');
    }
    // Without the package the instrumented model cannot load (the class is unknown).
    assert.throws(() => run('inst', '--without-package'), /Disturbance/);
  } finally {
    x.dispose();
    rmSync(dir, {recursive: true, force: true});
  }
});

test('clear errors: unbuilt Sequential, no place for a disturbance, wrong disturbance shape', () => {
  assert.throws(() => instrument(tfl.sequential()), /no layers with a known input shape/);
  // Integer input that feeds no Embedding, no hidden layer before the output: nothing to disturb, said so.
  const ids = tfl.input({shape: [4], dtype: 'int32'});
  const lone = tfl.model({inputs: ids, outputs: tfl.layers.dense({units: 2}).apply(ids) as tfl.SymbolicTensor});
  assert.throws(() => instrument(lone), /found no place for a Disturbance layer.*dtype int32 \(integer inputs are not disturbed\)/);
  const floatIn = tfl.input({shape: [3]});
  const small = tfl.model({inputs: floatIn, outputs: tfl.layers.dense({units: 2}).apply(floatIn) as tfl.SymbolicTensor});
  assert.throws(() => instrument(small, {input: null}), /found no place.*options\.input is null.*no layer ends a neuron block/);
  assert.throws(() => instrument(small, {hidden: null, input: null}), /options\.hidden is null/);

  const adv = instrument(mlp());
  const [d0] = disturbanceLayers(adv);
  const x = tf.zeros([4, 6]);
  const wrong = tf.zeros([3, 6]);
  d0.setMode('add', wrong);
  try {
    assert.throws(() => adv.predict(x), /shape \[3, 6\] but the layer input has shape \[4, 6\]/);
  } finally {
    d0.reset();
  }
  assert.ok(predictDiff(adv, adv, x) === 0); // back to normal after reset
  tf.dispose([x, wrong]);
});

test('no tensor leak across repeated predict and across add-mode predict', () => {
  const adv = instrument(residual());
  const x = tf.randomNormal([2, 5]);
  const d = tf.randomNormal([2, 5]);
  const [d0] = disturbanceLayers(adv);
  tf.tidy(() => adv.predict(x)); // warm-up
  const before = tf.memory().numTensors;
  for (let i = 0; i < 5; i++) {
    tf.dispose(adv.predict(x) as tf.Tensor);
    d0.setMode('add', d);
    tf.dispose(adv.predict(x) as tf.Tensor);
    d0.reset();
  }
  assert.equal(tf.memory().numTensors, before);
  tf.dispose([x, d]);
});

test('Embedding inputs: no disturbance on token indices; one on the embedding output with an L2 budget relative to the embedding norm', () => {
  const ids = tfl.input({shape: [4], dtype: 'int32'});
  const embLayer = tfl.layers.embedding({inputDim: 10, outputDim: 3});
  const emb = tfl.layers.flatten().apply(embLayer.apply(ids)) as tfl.SymbolicTensor;
  const model = tfl.model({inputs: ids, outputs: tfl.layers.dense({units: 2}).apply(emb) as tfl.SymbolicTensor});
  const adv = instrument(model, {embedding: {relativeEpsilon: 0.5}});
  assert.deepEqual(classNames(adv), ['InputLayer', 'Embedding', 'Disturbance', 'Flatten', 'Dense']);
  // Independent computation of the budget: 0.5 · mean row norm · √(4 tokens).
  const w = embLayer.getWeights()[0].arraySync() as number[][];
  const meanNorm = w.reduce((s, row) => s + Math.hypot(...row), 0) / w.length;
  const [d] = disturbanceLayers(adv);
  assert.equal(d.penalty.kind, 'l2');
  assert.ok(Math.abs((d.penalty as {epsilon: number}).epsilon - 0.5 * meanNorm * 2) < 1e-6);
  // An explicit penalty is used as given; null leaves the embedding alone.
  const fixed = instrument(model, {embedding: {kind: 'linf', epsilon: 0.2}});
  assert.deepEqual(disturbanceLayers(fixed)[0].penalty, {kind: 'linf', epsilon: 0.2, lambda: 100});
  assert.throws(() => instrument(model, {embedding: null, hidden: null}), /no place.*feeds an Embedding.*options\.embedding is null/);
  assert.throws(() => instrument(model, {embedding: {relativeEpsilon: -1}}), /relativeEpsilon must be a finite number >= 0/);
  const x = tf.tensor2d([[1, 2, 3, 4], [0, 9, 9, 1]], [2, 4], 'int32');
  assert.ok(predictDiff(model, adv, x) <= 1e-6);
  x.dispose();
});

test('recurrent layers: the output of an LSTM/GRU (sequence or last state) gets a disturbance', () => {
  const seq = tfl.sequential({
    layers: [
      tfl.layers.gru({units: 4, returnSequences: true, inputShape: [5, 2], recurrentInitializer: 'glorotUniform'}),
      tfl.layers.lstm({units: 3, recurrentInitializer: 'glorotUniform'}),
      tfl.layers.dense({units: 1}),
    ],
  });
  const adv = instrument(seq);
  assert.deepEqual(classNames(adv), ['InputLayer', 'Disturbance', 'GRU', 'Disturbance', 'LSTM', 'Disturbance', 'Dense']);
  const x = tf.randomNormal([3, 5, 2], 0, 1, 'float32', 9);
  assert.ok(predictDiff(seq, adv, x) <= 1e-6);
  x.dispose();
});

test('multi-input / multi-output functional models: a disturbance per float input, none after any output; strip and compile round-trip', () => {
  const a = tfl.input({shape: [3], name: 'features'});
  const b = tfl.input({shape: [1], dtype: 'int32', name: 'label'});
  const e = tfl.layers.flatten().apply(tfl.layers.embedding({inputDim: 4, outputDim: 3}).apply(b)) as tfl.SymbolicTensor;
  const h = tfl.layers.dense({units: 5, activation: 'relu'}).apply(tfl.layers.multiply().apply([a, e])) as tfl.SymbolicTensor;
  const o1 = tfl.layers.dense({units: 1, activation: 'sigmoid', name: 'validity'}).apply(h) as tfl.SymbolicTensor;
  const o2 = tfl.layers.dense({units: 3, activation: 'softmax', name: 'cls'}).apply(h) as tfl.SymbolicTensor;
  const model = tfl.model({inputs: [a, b], outputs: [o1, o2]});
  model.compile({optimizer: 'sgd', loss: ['binaryCrossentropy', 'sparseCategoricalCrossentropy']});
  const adv = instrument(model);
  assert.equal(adv.inputs.length, 2);
  assert.equal(adv.outputs.length, 2);
  const names = disturbanceLayers(adv).map((l) => l.name);
  // features input, embedding output, multiply, hidden dense: 4 (none after the two outputs).
  assert.equal(names.length, 4, names.join(', '));
  assert.deepEqual((adv as unknown as {loss: unknown}).loss, ['binaryCrossentropy', 'sparseCategoricalCrossentropy']);
  const xa = tf.randomNormal([2, 3], 0, 1, 'float32', 10);
  const xb = tf.tensor2d([[1], [3]], [2, 1], 'int32');
  const p0 = model.predict([xa, xb]) as tf.Tensor[];
  const p1 = adv.predict([xa, xb]) as tf.Tensor[];
  const p2 = strip(adv).predict([xa, xb]) as tf.Tensor[];
  for (let i = 0; i < 2; i++) {
    assert.ok(maxAbsDiff(p0[i], p1[i]) <= 1e-6);
    assert.ok(maxAbsDiff(p0[i], p2[i]) <= 1e-6);
  }
  assert.ok(!classNames(strip(adv)).includes('Disturbance'));
  tf.dispose([xa, xb, ...p0, ...p1, ...p2]);
});
