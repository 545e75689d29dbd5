import {tf} from './setup.js';
import {rand} from './fixtures/random.js';
import * as tfl from '@tensorflow/tfjs-layers';
import * as tfd from '@tensorflow/tfjs-data';
import assert from 'node:assert/strict';
import {describe, it} from 'node:test';

import {deepAttack} from '../src/attacks/deep.js';
import {fgsmAttack} from '../src/attacks/fgsm.js';
import {pgdAttack} from '../src/attacks/pgd.js';
import {disturbance} from '../src/layers/disturbance.js';
import {disturbanceLayers, instrument} from '../src/model/instrument.js';
import {adversarialCallback} from '../src/training/callback.js';
import {attachedState, installTrainHook, originalMakeTrainFunction, originalTrainFunction, trainingModel} from '../src/training/hook.js';
import {linearWarmup, linearWarmupSteps, scalePenalty, strengthAt} from '../src/training/schedules.js';
import {
  adversarialStep,
  AdversarialTrainingOptions,
  prepareAdversarialTraining,
  runAdversarialStep,
} from '../src/training/train_step.js';
import {cnn} from './fixtures/models.js';

// ---------------------------------------------------------------- helpers


/** Sequential MLP 4-8(-BN)-3 with deterministic weights, compiled. */
function mlp(seed: number, o: {bn?: boolean; optimizer?: string | tf.Optimizer; loss?: string} = {}): tfl.Sequential {
  const layers: tfl.layers.Layer[] = [tfl.layers.dense({units: 8, inputShape: [4], activation: 'tanh'})];
  if (o.bn) layers.push(tfl.layers.batchNormalization());
  layers.push(tfl.layers.dense({units: 3, activation: 'softmax'}));
  const m = tfl.sequential({layers});
  m.setWeights(m.getWeights().map((w, i) => tf.tensor(rand(w.size, seed + 17 * i, -0.8, 0.8), w.shape)));
  m.compile({optimizer: o.optimizer ?? tf.train.sgd(0.1), loss: o.loss ?? 'categoricalCrossentropy', metrics: ['accuracy']});
  return m;
}

/** Instrumented MLP (input L∞ ball, hidden quadratic) with deterministic weights, compiled with `optimizer`. */
function deepMlp(seed: number, optimizer: string | tf.Optimizer = tf.train.sgd(0.1)): tfl.LayersModel {
  const base = mlp(seed);
  const m = instrument(base, {input: {kind: 'linf', epsilon: 0.1}, hidden: {kind: 'quadratic', lambda: 5}});
  m.compile({optimizer, loss: 'categoricalCrossentropy', metrics: ['accuracy']});
  return m;
}

function data(n: number, seed: number): {x: tf.Tensor2D; y: tf.Tensor2D} {
  const x = tf.tensor2d(rand(n * 4, seed), [n, 4]);
  const labels = rand(n, seed + 1, 0, 3).map((v) => Math.floor(v));
  const y = tf.tidy(() => tf.cast(tf.oneHot(tf.tensor1d(labels, 'int32'), 3), 'float32') as tf.Tensor2D);
  return {x, y};
}

/** All weights (trainable and not, e.g. BN moving statistics) as raw bytes. */
function snapshot(model: tfl.LayersModel): Buffer[] {
  return model.getWeights().map((w) => Buffer.from((w.dataSync() as Float32Array).slice().buffer));
}

function assertSameBits(a: Buffer[], b: Buffer[], what: string): void {
  assert.equal(a.length, b.length, `${what}: number of weight tensors`);
  a.forEach((buf, i) => assert.ok(buf.equals(b[i]), `${what}: weight tensor ${i} differs`));
}

function allFinite(model: tfl.LayersModel): boolean {
  return model.getWeights().every((w) => (w.dataSync() as Float32Array).every(Number.isFinite));
}

/** A callback recording tf.memory().numTensors after every batch. */
function tensorProbe(): {cb: tfl.CustomCallback; counts: number[]} {
  const counts: number[] = [];
  const cb = new tfl.CustomCallback({onBatchEnd: async () => void counts.push(tf.memory().numTensors)});
  return {cb, counts};
}

/** Makes `seq` train with the unpatched tfjs train function (the reference for pass-through tests). */
function unpatched(seq: tfl.LayersModel): void {
  (trainingModel(seq) as unknown as {makeTrainFunction: unknown}).makeTrainFunction = originalMakeTrainFunction();
}

async function rejects(p: Promise<unknown>, re: RegExp, what: string): Promise<void> {
  await assert.rejects(p, (e: Error) => {
    assert.match(e.message, re, `${what}: ${e.message}`);
    return true;
  });
}

// ---------------------------------------------------------------- the hook

describe('train-function hook', () => {
  it('fit without the callback is bit-identical to unpatched tfjs (Adam, BN, 2 epochs), and installing twice is a no-op', async () => {
    const before = tfl.LayersModel.prototype['makeTrainFunction' as keyof tfl.LayersModel];
    installTrainHook();
    assert.equal(tfl.LayersModel.prototype['makeTrainFunction' as keyof tfl.LayersModel], before, 'second install re-wrapped');
    const {x, y} = data(24, 5);
    const a = mlp(3, {bn: true, optimizer: tf.train.adam(0.05)});
    const b = mlp(3, {bn: true, optimizer: tf.train.adam(0.05)});
    unpatched(b);
    await a.fit(x, y, {epochs: 2, batchSize: 8, shuffle: false, verbose: 0});
    await b.fit(x, y, {epochs: 2, batchSize: 8, shuffle: false, verbose: 0});
    assertSameBits(snapshot(a), snapshot(b), 'patched vs unpatched');
    // and the check can fail: one more epoch on one model only breaks equality
    await a.fit(x, y, {epochs: 1, batchSize: 8, shuffle: false, verbose: 0});
    assert.ok(!snapshot(a).every((buf, i) => buf.equals(snapshot(b)[i])), 'one more epoch changes the weights');
    tf.dispose([x, y]);
  });

  it('the state lands on the inner model of a Sequential during fit and is removed afterwards; cleanWeight 1 equals plain training', async () => {
    const {x, y} = data(16, 7);
    const a = mlp(4);
    const b = mlp(4);
    unpatched(b);
    const seen: boolean[] = [];
    const probe = new tfl.CustomCallback({onBatchEnd: async () => void seen.push(attachedState(trainingModel(a)) != null)});
    const h = await a.fit(x, y, {
      epochs: 2,
      batchSize: 8,
      shuffle: false,
      verbose: 0,
      callbacks: [adversarialCallback({method: 'pgd', epsilon: 0.2, cleanWeight: 1}), probe],
    });
    await b.fit(x, y, {epochs: 2, batchSize: 8, shuffle: false, verbose: 0});
    assert.deepEqual(seen, [true, true, true, true]);
    assert.equal(attachedState(trainingModel(a)), undefined);
    assertSameBits(snapshot(a), snapshot(b), 'cleanWeight 1 vs plain fit');
    assert.deepEqual(h.history.adv_skipped_updates, [0, 0]);
    tf.dispose([x, y]);
  });

  it('a state left behind by a fit that failed in another callback is ignored by the next plain fit', async () => {
    const {x, y} = data(16, 8);
    const a = mlp(6);
    const b = mlp(6);
    unpatched(b);
    const thrower = new tfl.CustomCallback({
      onBatchEnd: async () => {
        throw new Error('boom');
      },
    });
    await rejects(a.fit(x, y, {epochs: 1, batchSize: 8, verbose: 0, callbacks: [adversarialCallback({method: 'fgsm', epsilon: 0.1}), thrower]}), /boom/, 'thrower');
    assert.notEqual(attachedState(trainingModel(a)), undefined, 'state is still attached (onTrainEnd never ran)');
    b.setWeights(a.getWeights());
    await a.fit(x, y, {epochs: 1, batchSize: 8, shuffle: false, verbose: 0});
    await b.fit(x, y, {epochs: 1, batchSize: 8, shuffle: false, verbose: 0});
    assertSameBits(snapshot(a), snapshot(b), 'plain fit after the failed adversarial fit');
    assert.equal(attachedState(trainingModel(a)), undefined);
    tf.dispose([x, y]);
  });
});

// ---------------------------------------------------------------- semantics

describe('step semantics', () => {
  it('attacks alone (deep, PGD, FGSM) leave every weight, BatchNorm moving statistics included, bit-identical', () => {
    const base = cnn();
    base.compile({optimizer: 'sgd', loss: 'categoricalCrossentropy'});
    const model = instrument(base, {input: {kind: 'linf', epsilon: 0.1}, hidden: {kind: 'quadratic', lambda: 1}});
    const x = tf.randomUniform([4, 6, 6, 1], 0, 1, 'float32', 3);
    const y = tf.tidy(() => tf.cast(tf.oneHot(tf.tensor1d([0, 1, 2, 1], 'int32'), 3), 'float32'));
    const before = snapshot(model);
    const r = deepAttack(model, x, y, {maxGradientEvaluations: 5, seed: 1});
    tf.dispose([...r.disturbances, r.objective]);
    tf.dispose([pgdAttack(model, x, y, {epsilon: 0.1, steps: 3, seed: 2}), fgsmAttack(model, x, y, {epsilon: 0.1, randomStart: true, seed: 3})]);
    assertSameBits(snapshot(model), before, 'after attacks');
    tf.dispose([x, y]);
  });

  for (const method of ['deep', 'pgd', 'fgsm'] as const) {
    it(`${method}: inside a step the weights are unchanged until the update, and the update changes them`, () => {
      const base = cnn();
      base.compile({optimizer: tf.train.sgd(0.1), loss: 'categoricalCrossentropy'});
      const model = method === 'deep' ? instrument(base, {input: {kind: 'linf', epsilon: 0.1}}) : base;
      if (method === 'deep') model.compile({optimizer: tf.train.sgd(0.1), loss: 'categoricalCrossentropy'});
      const x = tf.randomUniform([4, 6, 6, 1], 0, 1, 'float32', 4);
      const y = tf.tidy(() => tf.cast(tf.oneHot(tf.tensor1d([0, 1, 2, 0], 'int32'), 3), 'float32'));
      const options: AdversarialTrainingOptions =
        method === 'deep' ? {method, maxGradientEvaluations: 4, seed: 1} : {method, epsilon: 0.1, steps: 2, seed: 1};
      const prep = prepareAdversarialTraining(model, options, 'test');
      const before = snapshot(model);
      let atUpdate: Buffer[] | null = null;
      const real = originalTrainFunction(prep.model);
      const {outs, stats} = runAdversarialStep(
        prep,
        [x, y],
        (d) => {
          atUpdate = snapshot(model);
          return real(d);
        },
        {strength: 1, seed: 5, where: 'test'},
      );
      tf.dispose(outs);
      assert.ok(stats.attacked, 'the attack ran');
      assert.ok(atUpdate, 'the original step ran');
      assertSameBits(atUpdate as unknown as Buffer[], before, 'weights when the update starts');
      assert.ok(!snapshot(model).every((b, i) => b.equals(before[i])), 'the update changed the weights');
      tf.dispose([x, y]);
    });
  }

  it('deep: the update is computed at h(w, x, d*): its loss exceeds the clean loss and the attack objective', () => {
    const {x, y} = data(16, 91);
    const m = deepMlp(6);
    const clean = tf.tidy(() => tf.mean(tfl.metrics.categoricalCrossentropy(y, m.predict(x) as tf.Tensor)).dataSync()[0]);
    const r = adversarialStep(m, x, y, {method: 'deep', maxGradientEvaluations: 7, seed: 2});
    assert.ok(r.loss > clean + 1e-3, `update loss ${r.loss} vs clean loss ${clean}`);
    assert.ok(r.loss >= r.attack.objective - 1e-5, `update loss ${r.loss} vs mean J ${r.attack.objective} (J = c + Σρ, ρ ≤ 0)`);
    tf.dispose([x, y]);
  });

  it('reproducible: the same seed gives bit-identical weights after two 2-epoch runs (deep and PGD, Adam)', async () => {
    const {x, y} = data(32, 11);
    const run = async (opts: AdversarialTrainingOptions, seed: number) => {
      const m = opts.method === 'deep' ? deepMlp(9, tf.train.adam(0.02)) : mlp(9, {optimizer: tf.train.adam(0.02)});
      await m.fit(x, y, {epochs: 2, batchSize: 8, shuffle: false, verbose: 0, callbacks: [adversarialCallback({...opts, seed})]});
      return snapshot(m);
    };
    for (const opts of [{method: 'deep', maxGradientEvaluations: 5, init: 'random'} as const, {method: 'pgd', epsilon: 0.2, steps: 3} as const]) {
      const a = await run(opts, 42);
      const b = await run(opts, 42);
      assertSameBits(a, b, `${opts.method} same seed`);
      const c = await run(opts, 43);
      assert.ok(!a.every((buf, i) => buf.equals(c[i])), `${opts.method}: a different seed gives different weights`);
    }
    tf.dispose([x, y]);
  });

  it('no tensor leak: tf.memory().numTensors is constant after every batch over 60 batches (fit: deep; fit: PGD α=0.5; fitDataset: deep)', async () => {
    const {x, y} = data(240, 13);
    const check = (counts: number[], what: string) => {
      assert.ok(counts.length >= 50, `${what}: ${counts.length} batches`);
      const warm = counts.slice(3);
      assert.ok(warm.every((c) => c === warm[0]), `${what}: tensor counts ${JSON.stringify(counts)}`);
    };
    const m1 = deepMlp(2, tf.train.adam(0.01));
    const p1 = tensorProbe();
    await m1.fit(x, y, {epochs: 1, batchSize: 4, verbose: 0, callbacks: [adversarialCallback({method: 'deep', maxGradientEvaluations: 3, seed: 1}), p1.cb]});
    check(p1.counts, 'fit deep');

    const m2 = mlp(2, {bn: true, optimizer: tf.train.adam(0.01)});
    const p2 = tensorProbe();
    await m2.fit(x, y, {epochs: 1, batchSize: 4, verbose: 0, callbacks: [adversarialCallback({method: 'pgd', epsilon: 0.1, steps: 2, cleanWeight: 0.5}), p2.cb]});
    check(p2.counts, 'fit pgd mixed');

    const xs = x.arraySync();
    const ys = y.arraySync();
    const ds = tfd.zip({xs: tfd.array(xs), ys: tfd.array(ys)}).batch(4);
    const m3 = deepMlp(2, tf.train.adam(0.01));
    const p3 = tensorProbe();
    const h = await m3.fitDataset(ds, {epochs: 1, verbose: 0, callbacks: [adversarialCallback({method: 'deep', maxGradientEvaluations: 3, seed: 1}), p3.cb]});
    check(p3.counts, 'fitDataset deep');
    assert.equal(h.history.adv_grad_evals.length, 1);
    assert.ok((h.history.adv_objective[0] as number) > 0, `adv_objective ${h.history.adv_objective}`);
    tf.dispose([x, y]);
  });

  it('examples whose attack hits non-finite values fall back and are counted; weights stay finite', () => {
    // Attack loss −log(ŷ₀ − y₀): it grows without bound as ŷ₀ → y₀ and is NaN beyond, so the attack runs into NaN.
    const trap = (yt: tf.Tensor, yp: tf.Tensor) =>
      tf.reshape(tf.neg(tf.log(tf.sub(tf.slice(yp, [0, 0], [-1, 1]), tf.slice(yt, [0, 0], [-1, 1])))), [-1]) as tf.Tensor1D;
    const {x} = data(8, 21);
    for (const method of ['deep', 'pgd'] as const) {
      const model = method === 'deep' ? deepMlp(5) : mlp(5);
      const yt = tf.tidy(() => {
        const p = model.predict(x) as tf.Tensor;
        return tf.concat([tf.sub(tf.slice(p, [0, 0], [-1, 1]), 0.02), tf.slice(p, [0, 1], [-1, 2])], 1);
      });
      const options: AdversarialTrainingOptions =
        method === 'deep'
          ? {method, loss: trap, maxGradientEvaluations: 20, seed: 1}
          : {method, loss: trap, epsilon: 0.5, steps: 1, stepSize: 0.5, randomStart: false};
      const r = adversarialStep(model, x, yt, options);
      assert.ok(r.attack.nonFinite > 0, `${method}: nonFinite = ${r.attack.nonFinite}`);
      assert.equal(r.logs.adv_nonfinite, r.attack.nonFinite);
      for (const v of Object.values(r.attack.norms)) assert.ok(Number.isFinite(v), `${method}: disturbance norms finite`);
      assert.ok(Number.isFinite(r.loss) && allFinite(model), `${method}: update finite`);
      yt.dispose();
    }
    x.dispose();
  });

  it('a non-finite gradient skips the update: weights and optimizer state unchanged, counted', () => {
    const model = tfl.sequential({layers: [tfl.layers.dense({units: 1, inputShape: [2], kernelInitializer: 'ones'})]});
    // sqrt(ŷ − y) is NaN (and so is its gradient) when ŷ < y.
    model.compile({optimizer: tf.train.adam(0.1), loss: (yt: tf.Tensor, yp: tf.Tensor) => tf.reshape(tf.sqrt(tf.sub(yp, yt)), [-1])});
    const x = tf.tensor2d([[1, 1], [2, 2]]);
    const y = tf.tensor2d([[100], [0]]);
    const before = snapshot(model);
    const r = adversarialStep(model, x, y, {method: 'pgd', epsilon: 0.1, steps: 1});
    assert.equal(r.attack.skippedUpdate, true);
    assert.equal(r.logs.adv_skipped_updates, 1);
    assertSameBits(snapshot(model), before, 'weights after the skipped update');
    assert.equal((model.optimizer as unknown as {iterations: number}).iterations, 0);
    tf.dispose([x, y]);
  });
});

// ---------------------------------------------------------------- bad input

describe('bad input: a clear error before any weight changes', () => {
  it('adversarialStep refuses unknown option names (closest valid name), callback-only options, and accepts every method option', () => {
    const m = mlp(4);
    const dm = deepMlp(4);
    const {x, y} = data(4, 5);
    const before = snapshot(m);
    const n0 = tf.memory().numTensors;
    assert.throws(() => adversarialStep(m, x, y, {method: 'pgd', epsilon: 0.1, step: 3} as never), /adversarialStep \(method 'pgd'\): unknown option 'step' \(did you mean 'steps'\?\)/);
    assert.throws(() => adversarialStep(m, x, y, {method: 'fgsm', epsilon: 0.1, alfa: 0.1} as never), /unknown option 'alfa' \(did you mean 'alpha'\?\)/);
    // a pgd-only option is not an fgsm option
    assert.throws(() => adversarialStep(m, x, y, {method: 'fgsm', epsilon: 0.1, restarts: 2} as never), /method 'fgsm'\): unknown option 'restarts'/);
    assert.throws(() => adversarialStep(dm, x, y, {method: 'deep', maxGradientEvals: 3} as never), /method 'deep'\): unknown option 'maxGradientEvals' \(did you mean 'maxGradientEvaluations'\?\)/);
    assert.throws(() => adversarialStep(dm, x, y, {method: 'deep', epsilon: 0.1} as never), /method 'deep'\): unknown option 'epsilon'/);
    assert.throws(() => adversarialStep(m, x, y, {method: 'pgd', epsilon: 0.1, strenght: 0.5} as never), /unknown option 'strenght' \(did you mean 'strength'\?\)/);
    assert.throws(() => adversarialStep(m, x, y, {method: 'pgd', epsilon: 0.1, schedule: 'linear'} as never), /option 'schedule' belongs to adversarialCallback.*'strength'/);
    assert.equal(tf.memory().numTensors, n0, 'no tensor left by the refusals');
    assertSameBits(snapshot(m), before, 'refused options');
    // every documented option of each method (the lists come from the attack modules) is accepted
    const pgd = adversarialStep(m, x, y, {method: 'pgd', epsilon: 0.1, norm: 'linf', steps: 2, stepSize: 0.05, randomStart: true, restarts: 1, clip: [-5, 5], seed: 1, loss: 'categoricalCrossentropy', cleanWeight: 0, skipNonFiniteUpdates: true, logObjective: false, strength: 1});
    const fgsm = adversarialStep(m, x, y, {method: 'fgsm', epsilon: 0.1, clip: [-5, 5], randomStart: false, alpha: 0.1, seed: 1, logObjective: true});
    const deep = adversarialStep(dm, x, y, {method: 'deep', solver: 'preconditioned', space: 'disturbance', maxGradientEvaluations: 3, init: 'zero', project: false, firstStep: 'saturated', conjugate: false, seed: 2, strength: 1});
    for (const r of [pgd, fgsm, deep]) assert.ok(Number.isFinite(r.loss), `loss ${r.loss}`);
    tf.dispose([x, y]);
  });

  it('uncompiled model', async () => {
    const m = tfl.sequential({layers: [tfl.layers.dense({units: 3, inputShape: [4], activation: 'softmax'})]});
    const {x, y} = data(8, 1);
    const before = snapshot(m);
    assert.throws(() => adversarialStep(m, x, y, {method: 'pgd', epsilon: 0.1}), /not compiled.*compile/);
    await assert.rejects(m.fit(x, y, {epochs: 1, verbose: 0, callbacks: [adversarialCallback({method: 'pgd', epsilon: 0.1})]}), /compiled/);
    assertSameBits(snapshot(m), before, 'uncompiled');
    tf.dispose([x, y]);
  });

  it("'deep' without Disturbance layers", async () => {
    const m = mlp(1);
    const {x, y} = data(8, 1);
    const before = snapshot(m);
    await rejects(m.fit(x, y, {epochs: 1, verbose: 0, callbacks: [adversarialCallback({method: 'deep'})]}), /'deep' needs Disturbance layers.*instrument/, 'deep');
    assert.throws(() => adversarialStep(m, x, y, {method: 'deep'}), /needs Disturbance layers/);
    assertSameBits(snapshot(m), before, 'deep without disturbances');
    assert.equal(attachedState(trainingModel(m)), undefined);
    tf.dispose([x, y]);
  });

  it('an input disturbance on an embedding input (and PGD on it)', async () => {
    const input = tfl.input({shape: [5]});
    let h = disturbance({name: 'd0'}).apply(input) as tfl.SymbolicTensor;
    h = tfl.layers.embedding({inputDim: 10, outputDim: 3, name: 'emb'}).apply(h) as tfl.SymbolicTensor;
    h = tfl.layers.flatten().apply(h) as tfl.SymbolicTensor;
    h = disturbance({name: 'd1'}).apply(h) as tfl.SymbolicTensor;
    const out = tfl.layers.dense({units: 2, activation: 'softmax'}).apply(h) as tfl.SymbolicTensor;
    const m = tfl.model({inputs: input, outputs: out});
    m.compile({optimizer: 'sgd', loss: 'categoricalCrossentropy'});
    const x = tf.tensor2d([[1, 2, 3, 4, 5], [0, 1, 2, 3, 9]]);
    const y = tf.tensor2d([[1, 0], [0, 1]]);
    const before = snapshot(m);
    await rejects(m.fit(x, y, {epochs: 1, verbose: 0, callbacks: [adversarialCallback({method: 'deep'})]}), /'d0' disturbs the input.*Embedding layer 'emb'/, 'deep');
    await rejects(m.fit(x, y, {epochs: 1, verbose: 0, callbacks: [adversarialCallback({method: 'pgd', epsilon: 0.1})]}), /token indices.*instrument\(model\).*Embedding layer 'emb'/, 'pgd');
    assertSameBits(snapshot(m), before, 'embedding');
    // switching the input disturbance off makes 'deep' legal (hidden disturbance only)
    const r = adversarialStep(m, x, y, {method: 'deep', penalties: (l) => (l.name === 'd0' ? null : undefined), maxGradientEvaluations: 3});
    assert.ok(Number.isFinite(r.loss), `loss ${r.loss}`);
    tf.dispose([x, y]);
  });

  it('mismatched x/y (adversarialStep, fitDataset) and non-finite values in a batch (fit, fitDataset, adversarialStep)', async () => {
    const m = mlp(2);
    const before = snapshot(m);
    const {x, y} = data(8, 3);
    const y7 = tf.slice(y, 0, 7);
    assert.throws(() => adversarialStep(m, x, y7, {method: 'fgsm', epsilon: 0.1}), /same batch size.*\[8, 4\].*\[7, 3\]/);
    const bad = tfd.zip({xs: tfd.array([[1, 2, 3, 4]]).batch(1), ys: tfd.array([[1, 0, 0], [0, 1, 0]]).batch(2)});
    await rejects(m.fitDataset(bad, {epochs: 1, verbose: 0, callbacks: [adversarialCallback({method: 'fgsm', epsilon: 0.1})]}), /[Bb]atch size mismatch|x has batch size 1.*y has batch size 2/, 'fitDataset mismatch');

    const xNaN = tf.tidy(() => tf.concat([tf.fill([1, 4], NaN), tf.slice(x, 1, 7)]));
    await rejects(
      m.fit(xNaN, y, {epochs: 1, batchSize: 4, shuffle: false, verbose: 0, callbacks: [adversarialCallback({method: 'pgd', epsilon: 0.1})]}),
      /non-finite values.*in x \(4 values\).*weights were not changed/,
      'fit NaN',
    );
    assert.equal(attachedState(trainingModel(m)), undefined, 'state removed after the error');
    const yInf = tf.tidy(() => tf.concat([tf.fill([1, 3], Infinity), tf.slice(y, 1, 7)]));
    assert.throws(() => adversarialStep(m, x, yInf, {method: 'pgd', epsilon: 0.1}), /non-finite values.*in y/);
    const dsNaN = tfd.zip({xs: tfd.array([[NaN, 0, 0, 0], [1, 1, 1, 1]]), ys: tfd.array([[1, 0, 0], [0, 1, 0]])}).batch(2);
    await rejects(m.fitDataset(dsNaN, {epochs: 1, verbose: 0, callbacks: [adversarialCallback({method: 'fgsm', epsilon: 0.1})]}), /non-finite/, 'fitDataset NaN');
    assertSameBits(snapshot(m), before, 'bad batches');
    assert.throws(() => adversarialStep(m, x, y, {method: 'fgsm', epsilon: 0.1, cleanWeight: 2}), /cleanWeight must be a number in \[0, 1\]/);
    assert.throws(() => adversarialCallback({method: 'pgd', epsilon: 0.1, fgsmGuard: true}), /fgsmGuard.*needs method 'fgsm'/);
    tf.dispose([x, y, y7, xNaN, yInf]);
  });
});

// ---------------------------------------------------------------- features

describe('features', () => {
  it('adversarialStep in a custom loop: PGD training lowers the adversarial loss; numbers out, no tensors left', () => {
    const {x, y} = data(32, 31);
    const m = mlp(8, {optimizer: tf.train.adam(0.05)});
    const start = tf.memory().numTensors;
    const losses: number[] = [];
    for (let step = 0; step < 40; step++) {
      const r = adversarialStep(m, x, y, {method: 'pgd', epsilon: 0.05, steps: 3, seed: step});
      losses.push(r.loss);
      assert.equal(typeof r.metrics.acc, 'number');
      assert.equal(r.loss, r.attack.adversarialLoss);
    }
    assert.ok(losses[39] < losses[0] - 0.05, `loss ${losses[0]} → ${losses[39]}`);
    // Adam creates 2 slots per trainable weight on its first step
    assert.equal(tf.memory().numTensors - start, 2 * m.trainableWeights.length);
    tf.dispose([x, y]);
  });

  it('cleanWeight α mixes α·clean + (1−α)·adversarial loss exactly (vs a hand-computed SGD step)', () => {
    const {x, y} = data(8, 41);
    const alpha = 0.3;
    const lr = 0.5;
    const a = mlp(12, {optimizer: tf.train.sgd(lr)});
    const b = mlp(12, {optimizer: tf.train.sgd(lr)});
    const pgd = {epsilon: 0.3, steps: 2, seed: 7};
    // The same attack on the same weights (PGD is deterministic given its seed).
    const xAdv = pgdAttack(b, x, y, pgd);
    const r = adversarialStep(a, x, y, {method: 'pgd', ...pgd, cleanWeight: alpha});
    tf.tidy(() => {
      const loss = (xx: tf.Tensor) => tf.mean(tfl.metrics.categoricalCrossentropy(y, b.apply(xx, {training: true}) as tf.Tensor));
      const {grads} = tf.variableGrads(() => tf.add(tf.mul(alpha, loss(x)), tf.mul(1 - alpha, loss(xAdv))) as tf.Scalar);
      for (const w of b.trainableWeights) {
        const v = (w as unknown as {val: tf.Variable}).val;
        v.assign(tf.sub(v, tf.mul(lr, grads[v.name])));
      }
    });
    const wa = a.getWeights().map((t) => Array.from(t.dataSync()));
    const wb = b.getWeights().map((t) => Array.from(t.dataSync()));
    wa.forEach((arr, i) => arr.forEach((v, j) => assert.ok(Math.abs(v - wb[i][j]) < 2e-6, `weight ${i}[${j}]: ${v} vs ${wb[i][j]}`)));
    // the reported mixture is consistent with the logged parts
    const mix = alpha * (r.attack.cleanLoss as number) + (1 - alpha) * r.attack.adversarialLoss;
    assert.ok(Math.abs(r.loss - mix) < 1e-5, `reported loss ${r.loss} vs α·clean + (1−α)·adv = ${mix}`);
    tf.dispose([x, y, xAdv]);
  });

  it('schedules: linear warm-up gives s = 0, ½, 1; ε and the mean ‖d‖ grow accordingly; s = 0 trains clean', async () => {
    assert.deepEqual([0, 1, 2, 3].map(linearWarmup(2)), [0, 0.5, 1, 1]);
    assert.deepEqual([0, 1, 2].map(linearWarmup(2, 0.5)), [0.5, 0.75, 1]);
    assert.equal(strengthAt(undefined, 7), 1);
    assert.throws(() => strengthAt(() => -1, 3, 'sched'), /sched returned -1 for epoch 3/);
    assert.deepEqual(scalePenalty({kind: 'quadratic', lambda: 4}, 0.5), {kind: 'quadratic', lambda: 8});
    assert.deepEqual(scalePenalty({kind: 'linf', epsilon: 0.2, lambda: 100, box: [0, 1]}, 0.5), {kind: 'linf', epsilon: 0.1, lambda: 100, box: [0, 1]});
    assert.equal(scalePenalty({kind: 'l2', epsilon: 1}, 0), null);

    const {x, y} = data(16, 51);
    const deep = deepMlp(3);
    const hd = await deep.fit(x, y, {
      epochs: 3,
      batchSize: 8,
      shuffle: false,
      verbose: 0,
      callbacks: [adversarialCallback({method: 'deep', maxGradientEvaluations: 7, seed: 1, schedule: {warmupEpochs: 2}})],
    });
    assert.deepEqual(hd.history.adv_strength, [0, 0.5, 1]);
    const hidden = hd.history[Object.keys(hd.history).find((k) => k.startsWith('adv_norm_') && !k.includes('input')) as string] as number[];
    const input = hd.history[Object.keys(hd.history).find((k) => k.startsWith('adv_norm_') && k.includes('input')) as string] as number[];
    assert.equal(hidden[0], 0);
    assert.equal(input[0], 0);
    assert.ok(hidden[1] > 0 && hidden[2] > 1.5 * hidden[1], `hidden ‖d‖ ${hidden}`);
    assert.ok(input[1] > 0 && input[2] > 1.5 * input[1], `input ‖d‖ ${input}`);
    assert.deepEqual(hd.history.adv_grad_evals.slice(0, 1), [0]);

    const p = mlp(3);
    const hp = await p.fit(x, y, {
      epochs: 3,
      batchSize: 8,
      shuffle: false,
      verbose: 0,
      callbacks: [adversarialCallback({method: 'pgd', epsilon: 0.2, steps: 2, schedule: (e) => [0, 0.25, 1][e]})],
    });
    assert.deepEqual(hp.history.adv_epsilon, [0, 0.05, 0.2]);
    const norms = hp.history.adv_norm_input as number[];
    assert.ok(Math.abs(norms[1] - 0.05) < 1e-6 && Math.abs(norms[2] - 0.2) < 1e-6, `PGD ‖δ‖∞ ${norms}`);
    tf.dispose([x, y]);
  });

  it('schedules: {warmupSteps} ramps the strength every batch, across epochs, from initialStep; PGD ε follows it', async () => {
    assert.deepEqual([0, 1, 2, 3, 4, 5].map(linearWarmupSteps(4)), [0, 0.25, 0.5, 0.75, 1, 1]);
    assert.deepEqual([0, 2, 4].map(linearWarmupSteps(4, 0.5)), [0.5, 0.75, 1]);
    assert.equal(strengthAt({warmupSteps: 10}, 3, 'sched', 5), 0.5);
    assert.equal(strengthAt({warmupSteps: 0}, 0, 'sched', 0), 1);
    assert.throws(() => strengthAt({warmupSteps: 2, warmupEpochs: 1} as never, 0, 'sched'), /sched: give warmupEpochs or warmupSteps, not both/);
    assert.throws(() => strengthAt({warmupSteps: 1.5}, 0, 'sched'), /sched: linearWarmupSteps: warmupSteps must be an integer >= 0, got 1.5/);
    assert.throws(() => strengthAt((e, t) => (t > 1 ? NaN : 1), 0, 'sched', 2), /sched returned NaN for epoch 0 \(step 2\)/);

    const {x, y} = data(16, 52);
    const run = async (initialStep?: number) => {
      const m = mlp(3);
      const seen: {eps: number; s: number}[] = [];
      const rec = new tfl.CustomCallback({onBatchEnd: async (_b, logs) => void seen.push({eps: logs?.adv_epsilon as number, s: logs?.adv_strength as number})});
      const h = await m.fit(x, y, {
        epochs: 2,
        batchSize: 4,
        shuffle: false,
        verbose: 0,
        callbacks: [rec, adversarialCallback({method: 'pgd', epsilon: 0.2, steps: 2, seed: 1, schedule: {warmupSteps: 6}, initialStep})],
      });
      m.dispose();
      return {seen, h};
    };
    // 4 batches per epoch, 8 steps: s = t/6 for t = 0..5, then 1 (the ramp crosses the epoch boundary)
    const a = await run();
    const want = [0, 1, 2, 3, 4, 5, 6, 7].map((t) => Math.min(1, t / 6));
    a.seen.forEach((r, t) => {
      assert.ok(Math.abs(r.s - want[t]) < 1e-12, `step ${t}: strength ${r.s}, want ${want[t]}`);
      assert.ok(Math.abs(r.eps - 0.2 * want[t]) < 1e-9, `step ${t}: ε ${r.eps}, want ${0.2 * want[t]}`);
    });
    // the epoch logs are the mean over the epoch's batches
    const epochMeans = [want.slice(0, 4), want.slice(4)].map((v) => v.reduce((p, q) => p + q, 0) / 4);
    (a.h.history.adv_strength as number[]).forEach((v, e) => assert.ok(Math.abs(v - epochMeans[e]) < 1e-9, `epoch ${e}: ${v} vs ${epochMeans[e]}`));
    // a fit resumed at step 3 continues the ramp there
    const b = await run(3);
    b.seen.forEach((r, t) => assert.ok(Math.abs(r.s - Math.min(1, (t + 3) / 6)) < 1e-12, `resumed step ${t}: ${r.s}`));
    tf.dispose([x, y]);
  });

  it('warns once when the units before a hidden Disturbance layer have died (constant model), not for a healthy one', async () => {
    const {x, y} = data(100, 53);
    const run = async (bias: number) => {
      const base = tfl.sequential({layers: [tfl.layers.dense({units: 8, inputShape: [4], activation: 'relu', name: 'hid'}), tfl.layers.dense({units: 3, activation: 'softmax', name: 'out'})]});
      base.setWeights(base.getWeights().map((w, i) => (i === 1 ? tf.fill(w.shape, bias) : tf.tensor(rand(w.size, 5 + i, -0.8, 0.8), w.shape))));
      const m = instrument(base, {input: {kind: 'linf', epsilon: 0.1}, hidden: {kind: 'linf', epsilon: 0.05}});
      m.compile({optimizer: tf.train.sgd(0.1), loss: 'categoricalCrossentropy'});
      const warnings: string[] = [];
      const warn = console.warn;
      console.warn = (msg: string) => void warnings.push(msg);
      const before = tf.memory().numTensors;
      try {
        // 100 examples, batch 4: 25 steps per epoch; the check runs every 25 steps
        await m.fit(x, y, {epochs: 2, batchSize: 4, shuffle: false, verbose: 0, callbacks: [adversarialCallback({method: 'deep', maxGradientEvaluations: 2, seed: 1})]});
      } finally {
        console.warn = warn;
      }
      assert.equal(tf.memory().numTensors, before, 'no tensors left by the check');
      const hidden = disturbanceLayers(m).map((l) => l.name).filter((n) => !n.includes('input'));
      m.dispose();
      return {warnings, hidden};
    };
    const dead = await run(-100);
    assert.equal(dead.warnings.length, 1, `one warning per fit: ${dead.warnings}`);
    assert.match(dead.warnings[0], /epoch 0, batch 24\).*Disturbance layer '.*' \(0\.0 % nonzero\) are 0 in \(almost\) every entry.*warmupSteps/s);
    assert.ok(dead.warnings[0].includes(`'${dead.hidden[0]}'`), `names ${dead.hidden[0]}: ${dead.warnings[0]}`);
    assert.ok(!/input/.test(dead.warnings[0].split('are 0')[0]), 'the input site is not reported');
    const healthy = await run(0.1);
    assert.deepEqual(healthy.warnings, []);
    tf.dispose([x, y]);
  });

  it('logs per batch (seen by callbacks listed before it) and per epoch into history; validateAdversarial adds val_adv_acc', async () => {
    const {x, y} = data(16, 61);
    const m = deepMlp(4);
    const batchKeys: string[][] = [];
    const early = new tfl.CustomCallback({onBatchEnd: async (_b, logs) => void batchKeys.push(Object.keys(logs ?? {}))});
    const h = await m.fit(x, y, {
      epochs: 2,
      batchSize: 8,
      verbose: 0,
      callbacks: [early, adversarialCallback({method: 'deep', maxGradientEvaluations: 5, seed: 3, validateAdversarial: {x, y, epsilon: 0, steps: 1}})],
    });
    const names = ['adv_objective', 'adv_loss', 'adv_iterations', 'adv_grad_evals', 'adv_nonfinite', 'adv_skipped_updates', 'adv_strength'];
    for (const k of names) assert.ok(batchKeys[0].includes(k), `batch log ${k}: ${batchKeys[0]}`);
    for (const k of [...names, 'val_adv_acc']) assert.equal((h.history[k] ?? []).length, 2, `history ${k}`);
    const normKeys = Object.keys(h.history).filter((k) => k.startsWith('adv_norm_'));
    assert.deepEqual(normKeys.sort(), disturbanceLayers(m).map((l) => `adv_norm_${l.name}`).sort());
    // ε = 0: the adversarial accuracy is the clean accuracy of the model at the end of the epoch
    const clean = tf.tidy(() => tf.mean(tf.cast(tf.equal(tf.argMax(m.predict(x) as tf.Tensor, 1), tf.argMax(y, 1)), 'float32')).dataSync()[0]);
    assert.ok(Math.abs((h.history.val_adv_acc[1] as number) - clean) < 1e-6, `val_adv_acc ${h.history.val_adv_acc} vs clean ${clean}`);
    tf.dispose([x, y]);
  });

  it('FGSM guard: logs PGD accuracy each epoch; warns, flags and stops training when it collapses', async () => {
    const {x, y} = data(32, 71);
    const m = mlp(5);
    // Accurate labels for the guard: the model's own predictions (PGD accuracy starts high).
    const yGuard = tf.tidy(() => tf.cast(tf.oneHot(tf.argMax(m.predict(x) as tf.Tensor, 1), 3), 'float32'));
    const cb = adversarialCallback({method: 'fgsm', epsilon: 0.05, fgsmGuard: {x, y: yGuard, steps: 3, maxDrop: 0.3, stopTraining: true}});
    const inner = trainingModel(m);
    cb.setModel(inner);
    await cb.onTrainBegin();
    const logs0: Record<string, number> = {};
    await cb.onEpochBegin(0);
    await cb.onEpochEnd(0, logs0);
    assert.ok(logs0.fgsm_guard_pgd_acc > 0.5, `guard accuracy ${logs0.fgsm_guard_pgd_acc}`);
    assert.equal(logs0.fgsm_guard_collapsed, 0);
    // Simulate a collapse: scramble the output layer.
    const last = m.layers[m.layers.length - 1];
    last.setWeights(last.getWeights().map((w) => tf.neg(w)));
    const warnings: string[] = [];
    const warn = console.warn;
    console.warn = (msg: string) => void warnings.push(msg);
    const logs1: Record<string, number> = {};
    try {
      await cb.onEpochBegin(1);
      await cb.onEpochEnd(1, logs1);
    } finally {
      console.warn = warn;
      await cb.onTrainEnd();
    }
    assert.equal(logs1.fgsm_guard_collapsed, 1);
    assert.match(warnings.join('\n'), /catastrophic overfitting/);
    assert.equal(inner.stopTraining, true);
    assert.equal(attachedState(inner), undefined);
    // and in fit, the keys reach history
    const m2 = mlp(5);
    const h = await m2.fit(x, y, {epochs: 2, batchSize: 8, verbose: 0, callbacks: [adversarialCallback({method: 'fgsm', epsilon: 0.05, fgsmGuard: {x, y: yGuard, steps: 2}})]});
    assert.equal(h.history.fgsm_guard_pgd_acc.length, 2);
    tf.dispose([x, y, yGuard]);
  });
});
