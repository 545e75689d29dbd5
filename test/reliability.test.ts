// Careless use of the library API (issue 14): infinite box bounds that must survive a save (item 4),
// one callback instance in two concurrent fits (item 9), misspelled option names (item 10), nested
// Sequential models that instrument cannot see into (item 11, warning).
import {tf} from './setup.js';
import * as tfl from '@tensorflow/tfjs-layers';
import assert from 'node:assert/strict';
import {mkdtempSync, rmSync} from 'node:fs';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import {describe, it} from 'node:test';

import {selectBackend} from '../src/backend.js';
import {loadMnist} from '../src/data/mnist.js';
import {fileSystem} from '../src/io/file_system.js';
import {disturbance} from '../src/layers/disturbance.js';
import {disturbanceLayers, instrument, strip} from '../src/model/instrument.js';
import {adversarialCallback} from '../src/training/callback.js';
import {rand} from './fixtures/random.js';

/** Sequential MLP 4-6-3 with deterministic weights. */
function mlp(seed: number, compile = true): tfl.Sequential {
  const m = tfl.sequential({
    layers: [tfl.layers.dense({units: 6, inputShape: [4], activation: 'relu'}), tfl.layers.dense({units: 3, activation: 'softmax'})],
  });
  m.setWeights(m.getWeights().map((w, i) => tf.tensor(rand(w.size, seed + 17 * i, -0.8, 0.8), w.shape)));
  if (compile) m.compile({optimizer: tf.train.sgd(0.1), loss: 'categoricalCrossentropy'});
  return m;
}

function data(n: number, seed: number): {x: tf.Tensor2D; y: tf.Tensor2D} {
  const x = tf.tensor2d(rand(n * 4, seed, 0, 1), [n, 4]);
  const y = tf.oneHot(tf.tensor1d(Array.from({length: n}, (_, i) => i % 3), 'int32'), 3) as tf.Tensor2D;
  return {x, y};
}

/** Captures console.warn while `fn` runs. */
function warnings<T>(fn: () => T): {result: T; warned: string[]} {
  const warned: string[] = [];
  const orig = console.warn;
  console.warn = (...a: unknown[]) => void warned.push(a.map(String).join(' '));
  try {
    return {result: fn(), warned};
  } finally {
    console.warn = orig;
  }
}

describe('reliability of the library API', () => {
  it('item 4: infinite box bounds survive save and load (JSON null = unbounded side)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tda-inf-'));
    try {
      const base = mlp(1, false);
      const model = instrument(base, {input: {kind: 'linf', epsilon: 0.1, box: [0, Infinity]}, hidden: {kind: 'quadratic', lambda: 2, box: [-Infinity, 5]}});
      await model.save(fileSystem(dir));
      const loaded = await tfl.loadLayersModel(fileSystem(dir));
      const boxes = (m: tfl.LayersModel) => disturbanceLayers(m).map((d) => d.penalty.box);
      assert.deepEqual(boxes(model), [[0, Infinity], [-Infinity, 5]]);
      assert.deepEqual(boxes(loaded), boxes(model));
      // The loaded model predicts like the saved one, and saves/loads again.
      const x = tf.tensor2d(rand(8, 3, 0, 1), [2, 4]);
      const d = tf.tidy(() => tf.max(tf.abs(tf.sub(model.predict(x) as tf.Tensor, loaded.predict(x) as tf.Tensor))).dataSync()[0]);
      assert.ok(d <= 1e-7, `prediction difference ${d}`);
      await loaded.save(fileSystem(dir));
      const again = await tfl.loadLayersModel(fileSystem(dir));
      assert.deepEqual(boxes(again), [[0, Infinity], [-Infinity, 5]]);
      // Explicit nulls in a Disturbance config mean the same; NaN bounds are still refused.
      assert.deepEqual(disturbance({penalty: {kind: 'quadratic', lambda: 1, box: [null, 1] as unknown as [number, number]}}).penalty.box, [-Infinity, 1]);
      assert.throws(() => disturbance({penalty: {kind: 'quadratic', lambda: 1, box: [NaN, 1]}}), /box/);
      tf.dispose(x);
      for (const m of [model, loaded, again]) m.dispose();
    } finally {
      rmSync(dir, {recursive: true, force: true});
    }
  });

  it('item 9: one adversarialCallback instance in two concurrent fits: the second is refused, the first trains adversarially', async () => {
    const m1 = mlp(2);
    const m2 = mlp(3);
    const {x, y} = data(16, 5);
    const cb = adversarialCallback({method: 'pgd', epsilon: 0.1, steps: 2, seed: 1});
    const w2 = m2.getWeights().map((w) => w.dataSync().slice());
    const fit1 = m1.fit(x, y, {epochs: 2, batchSize: 8, verbose: 0, callbacks: [cb]});
    const fit2 = m2.fit(x, y, {epochs: 2, batchSize: 8, verbose: 0, callbacks: [cb]});
    const [r1, r2] = await Promise.allSettled([fit1, fit2]);
    assert.equal(r2.status, 'rejected');
    assert.match(String((r2 as PromiseRejectedResult).reason?.message), /already in use by the running fit of model '.+'; create one callback per fit/);
    assert.equal(r1.status, 'fulfilled', String((r1 as PromiseRejectedResult).reason));
    const h1 = (r1 as PromiseFulfilledResult<tfl.History>).value.history;
    assert.equal(h1.adv_objective?.length, 2, `model 1 trained adversarially: ${Object.keys(h1).join(', ')}`);
    m2.getWeights().forEach((w, i) => assert.deepEqual(w.dataSync(), w2[i], 'model 2 untouched'));
    // After the first fit ends the instance may be reused.
    const h2 = await m2.fit(x, y, {epochs: 1, batchSize: 8, verbose: 0, callbacks: [cb]});
    assert.equal(h2.history.adv_objective?.length, 1);
    tf.dispose([x, y]);
    m1.dispose();
    m2.dispose();
  });

  it('item 10: unknown option names are refused, naming the key and the closest valid one', async () => {
    const base = mlp(4, false);
    const cases: [string, () => unknown, RegExp][] = [
      ['instrument', () => instrument(base, {inputs: null} as never), /Error: instrument: unknown option 'inputs' \(did you mean 'input'\?\)/],
      ['instrument', () => instrument(base, {hiden: {kind: 'quadratic', lambda: 1}} as never), /unknown option 'hiden' \(did you mean 'hidden'\?\)/],
      ['strip', () => strip(base, {nmae: 'x'} as never), /Error: strip: unknown option 'nmae' \(did you mean 'name'\?\)/],
      ['layers.disturbance', () => disturbance({penality: {kind: 'quadratic', lambda: 1}} as never), /Error: layers\.disturbance: unknown option 'penality' \(did you mean 'penalty'\?\)/],
      ['validateAdversarial', () => adversarialCallback({method: 'pgd', epsilon: 0.1, validateAdversarial: {x: tf.zeros([1, 4]), y: tf.zeros([1, 3]), epsilon: 0.1, step: 3}} as never), /options\.validateAdversarial: unknown option 'step' \(did you mean 'steps'\?\)/],
      ['fgsmGuard', () => adversarialCallback({method: 'fgsm', epsilon: 0.1, fgsmGuard: {x: tf.zeros([1, 4]), y: tf.zeros([1, 3]), maxDrp: 0.1}} as never), /options\.fgsmGuard: unknown option 'maxDrp' \(did you mean 'maxDrop'\?\)/],
      ['schedule', () => adversarialCallback({method: 'pgd', epsilon: 0.1, schedule: {warmup: 2}} as never), /options\.schedule: unknown option 'warmup' \(did you mean 'warmup(Epochs|Steps)'\?\).* Valid options: start, warmupEpochs, warmupSteps/],
      ['callback deep', () => adversarialCallback({method: 'deep', maxGradientEvals: 2} as never), /adversarialCallback \(method 'deep'\): unknown option 'maxGradientEvals' \(did you mean 'maxGradientEvaluations'\?\)/],
      ['callback pgd', () => adversarialCallback({method: 'pgd', epsilon: 0.1, step: 3} as never), /adversarialCallback \(method 'pgd'\): unknown option 'step' \(did you mean 'steps'\?\)/],
      ['callback fgsm', () => adversarialCallback({method: 'fgsm', epsilon: 0.1, steps: 3} as never), /adversarialCallback \(method 'fgsm'\): unknown option 'steps'/],
      ['fileSystem', () => fileSystem({dir: '/tmp'} as never), /fileSystem: expected a directory path .*no options object.*got \{"dir":"\/tmp"\}/],
    ];
    for (const [what, fn, re] of cases) assert.throws(fn, re, what);
    await assert.rejects(() => loadMnist({split: 'test', limt: 5} as never), /^Error: loadMnist: unknown option 'limt' \(did you mean 'limit'\?\)/);
    await assert.rejects(() => selectBackend({backnd: 'cpu'} as never), /^Error: selectBackend: unknown option 'backnd' \(did you mean 'backend'\?\)/);
    // The correctly spelled options still work.
    const ok = strip(instrument(base, {input: null, hidden: {kind: 'quadratic', lambda: 1}}), {name: 'plain'});
    assert.equal(ok.name, 'plain');
    const mn = await loadMnist({split: 'test', limit: 2});
    assert.deepEqual(mn.xs.shape, [2, 784]);
    tf.dispose([mn.xs, mn.ys]);
    assert.equal((await selectBackend({backend: 'cpu', quiet: true})).name, 'cpu');
  });

  it('item 11: instrument warns when layers inside a nested Sequential get no Disturbance layers', () => {
    const inner = tfl.sequential({name: 'block', layers: [tfl.layers.dense({units: 5, inputShape: [4], activation: 'relu'}), tfl.layers.dense({units: 5, activation: 'relu'})]});
    const input = tfl.input({shape: [4]});
    const h = inner.apply(input) as tfl.SymbolicTensor;
    const out = tfl.layers.dense({units: 3, activation: 'softmax'}).apply(h) as tfl.SymbolicTensor;
    const model = tfl.model({inputs: input, outputs: out, name: 'outer'});
    const {result, warned} = warnings(() => instrument(model));
    assert.equal(warned.length, 1, warned.join('\n'));
    assert.match(warned[0], /instrument: layer 'block' of model 'outer' is a nested Sequential model; the 2 layers inside it get no Disturbance layers/);
    assert.equal(disturbanceLayers(result).length, 1, 'only the input disturbance');
    // A flat model: no warning.
    assert.deepEqual(warnings(() => instrument(mlp(5, false))).warned, []);
  });
});
