import {tf} from './setup.js';
import {rand} from './fixtures/random.js';
import * as tfl from '@tensorflow/tfjs-layers';
import assert from 'node:assert/strict';
import {describe, it} from 'node:test';

import {assertCompatibleXY, perExampleLoss} from '../src/objective/loss.js';
import {fgsmAttack} from '../src/attacks/fgsm.js';
import {pgdAttack, pgdAttackWithInfo} from '../src/attacks/pgd.js';

// ---------------------------------------------------------------- helpers


function denseModel(inputShape: number[], units: number, activation: 'linear' | 'softmax' | 'sigmoid', seed: number) {
  const m = tfl.sequential({layers: [tfl.layers.dense({units, inputShape, activation})]});
  const d = inputShape[inputShape.length - 1];
  m.layers[0].setWeights([tf.tensor2d(rand(d * units, seed), [d, units]), tf.tensor1d(rand(units, seed + 1, -0.2, 0.2))]);
  return m;
}

function mlp(seed: number) {
  const m = tfl.sequential({
    layers: [
      tfl.layers.dense({units: 8, inputShape: [4], activation: 'relu'}),
      tfl.layers.dense({units: 3, activation: 'softmax'}),
    ],
  });
  m.setWeights([
    tf.tensor2d(rand(32, seed), [4, 8]),
    tf.tensor1d(rand(8, seed + 1, -0.1, 0.1)),
    tf.tensor2d(rand(24, seed + 2, -2, 2), [8, 3]),
    tf.tensor1d(rand(3, seed + 3, -0.1, 0.1)),
  ]);
  m.compile({optimizer: 'sgd', loss: 'categoricalCrossentropy'});
  return m;
}

function oneHot(labels: number[], k: number): tf.Tensor2D {
  return tf.tidy(() => tf.cast(tf.oneHot(tf.tensor1d(labels, 'int32'), k), 'float32') as tf.Tensor2D);
}

const softplus = (z: number): number => (z > 0 ? z + Math.log1p(Math.exp(-z)) : Math.log1p(Math.exp(z)));

function assertClose(actual: number[], expected: number[], rtol: number, atol: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < actual.length; i++) {
    const tol = atol + rtol * Math.abs(expected[i]);
    assert.ok(
      Math.abs(actual[i] - expected[i]) <= tol,
      `${what}[${i}]: got ${actual[i]}, expected ${expected[i]} (tol ${tol})`,
    );
  }
}

async function evaluateLoss(model: tfl.LayersModel, x: tf.Tensor, y: tf.Tensor): Promise<number> {
  const r = model.evaluate(x, y, {batchSize: x.shape[0]});
  const s = Array.isArray(r) ? r[0] : r;
  const v = (await s.data())[0];
  tf.dispose(r);
  return v;
}

/** Per-example loss sum, compared to tfjs's batch loss × B. */
async function checkSumMatchesEvaluate(model: tfl.LayersModel, x: tf.Tensor, y: tf.Tensor): Promise<void> {
  const batchLoss = await evaluateLoss(model, x, y);
  const per = tf.tidy(() => perExampleLoss(model)(y, model.predict(x) as tf.Tensor));
  assert.deepEqual(per.shape, [x.shape[0]]);
  const sum = (await tf.sum(per).data())[0];
  per.dispose();
  assertClose([sum], [batchLoss * x.shape[0]], 1e-5, 1e-6, 'sum of per-example losses');
}

// ---------------------------------------------------------------- (a) per-example loss

describe('perExampleLoss', () => {
  it('sums to B × tfjs batch loss for meanSquaredError', async () => {
    const m = denseModel([4], 3, 'linear', 1);
    m.compile({optimizer: 'sgd', loss: 'meanSquaredError'});
    const x = tf.tensor2d(rand(20, 2), [5, 4]);
    const y = tf.tensor2d(rand(15, 3), [5, 3]);
    await checkSumMatchesEvaluate(m, x, y);
    // mse averages over the last axis: check one example by hand.
    const per = await tf.tidy(() => perExampleLoss(m)(y, m.predict(x) as tf.Tensor)).array();
    const p = (await (m.predict(x) as tf.Tensor).array()) as number[][];
    const yy = (await y.array()) as number[][];
    const hand = p.map((row, b) => row.reduce((s, v, j) => s + (v - yy[b][j]) ** 2, 0) / 3);
    assertClose(per as number[], hand, 1e-5, 1e-7, 'mse per example');
    tf.dispose([x, y]);
  });

  it('sums to B × tfjs batch loss for categoricalCrossentropy', async () => {
    const m = denseModel([4], 3, 'softmax', 3);
    m.compile({optimizer: 'sgd', loss: 'categoricalCrossentropy'});
    const x = tf.tensor2d(rand(24, 4), [6, 4]);
    const y = oneHot([0, 1, 2, 2, 1, 0], 3);
    await checkSumMatchesEvaluate(m, x, y);
    tf.dispose([x, y]);
  });

  it('sums to B × tfjs batch loss for sparseCategoricalCrossentropy', async () => {
    const m = denseModel([4], 3, 'softmax', 5);
    m.compile({optimizer: 'sgd', loss: 'sparseCategoricalCrossentropy'});
    const x = tf.tensor2d(rand(24, 6), [6, 4]);
    const y = tf.tensor2d([0, 1, 2, 2, 1, 0], [6, 1]);
    await checkSumMatchesEvaluate(m, x, y);
    // Same values as categorical cross-entropy on one-hot targets.
    const yOne = oneHot([0, 1, 2, 2, 1, 0], 3);
    const a = await tf.tidy(() => perExampleLoss(m)(y, m.predict(x) as tf.Tensor)).data();
    const b = await tf.tidy(() => perExampleLoss(m, 'categoricalCrossentropy')(yOne, m.predict(x) as tf.Tensor)).data();
    assertClose(Array.from(a), Array.from(b), 1e-6, 1e-7, 'sparse vs categorical');
    tf.dispose([x, y, yOne]);
  });

  it('binaryCrossentropy and outputs of rank 3 (mean over the extra axes)', async () => {
    const m1 = denseModel([4], 2, 'sigmoid', 7);
    m1.compile({optimizer: 'sgd', loss: 'binaryCrossentropy'});
    const x1 = tf.tensor2d(rand(20, 8), [5, 4]);
    const y1 = tf.tensor2d([0, 1, 1, 0, 1, 1, 0, 0, 1, 0], [5, 2]);
    await checkSumMatchesEvaluate(m1, x1, y1);

    const m3 = denseModel([2, 4], 3, 'linear', 9);
    m3.compile({optimizer: 'sgd', loss: 'meanSquaredError'});
    const x3 = tf.tensor3d(rand(40, 10), [5, 2, 4]);
    const y3 = tf.tensor3d(rand(30, 11), [5, 2, 3]);
    await checkSumMatchesEvaluate(m3, x3, y3);
    tf.dispose([x1, y1, x3, y3]);
  });

  it('accepts snake_case / short names and functions as override', async () => {
    const m = denseModel([4], 3, 'softmax', 12);
    m.compile({optimizer: 'sgd', loss: 'categoricalCrossentropy'});
    const x = tf.tensor2d(rand(12, 13), [3, 4]);
    const y = oneHot([2, 0, 1], 3);
    const p = m.predict(x) as tf.Tensor;
    const ref = await tf.tidy(() => perExampleLoss(m)(y, p)).data();
    const snake = await tf.tidy(() => perExampleLoss(m, 'categorical_crossentropy')(y, p)).data();
    assert.deepEqual(Array.from(snake), Array.from(ref));
    const mse = await tf.tidy(() => perExampleLoss(m, 'mse')(y, p)).data();
    const mse2 = await tf.tidy(() => perExampleLoss(m, 'mean_squared_error')(y, p)).data();
    assert.deepEqual(Array.from(mse), Array.from(mse2));
    const custom = await tf.tidy(() => perExampleLoss(m, (a, b) => tf.sum(tf.abs(tf.sub(a, b)), -1))(y, p)).data();
    assert.equal(custom.length, 3);
    assert.throws(() => perExampleLoss(m, 'notALoss'), /Unknown loss "notALoss"/);
    assert.throws(() => tf.tidy(() => perExampleLoss(m, (a, b) => tf.sum(tf.sub(a, b)))(y, p)), /scalar/);
    tf.dispose([x, y, p]);
  });

  it('errors: not compiled; several outputs take lists and sum the per-output losses', () => {
    const m = denseModel([4], 3, 'softmax', 14);
    assert.throws(() => perExampleLoss(m), /call model\.compile\(/);
    const inp = tfl.input({shape: [4]});
    const o1 = tfl.layers.dense({units: 2}).apply(inp) as tfl.SymbolicTensor;
    const o2 = tfl.layers.dense({units: 3}).apply(inp) as tfl.SymbolicTensor;
    const two = tfl.model({inputs: inp, outputs: [o1, o2]});
    two.compile({optimizer: 'sgd', loss: 'meanSquaredError'});
    const xi = tf.randomNormal([2, 4], 0, 1, 'float32', 15);
    const [p1, p2] = two.predict(xi) as tf.Tensor[];
    const t1 = tf.zeros([2, 2]);
    const t2 = tf.ones([2, 3]);
    const got = tf.tidy(() => perExampleLoss(two)([t1, t2], [p1, p2]).arraySync());
    const a1 = p1.arraySync() as number[][];
    const a2 = p2.arraySync() as number[][];
    const want = a1.map((r, b) => r.reduce((s, v) => s + v * v, 0) / 2 + a2[b].reduce((s, v) => s + (v - 1) ** 2, 0) / 3);
    got.forEach((v, b) => assert.ok(Math.abs(v - want[b]) < 1e-5, `${v} vs ${want[b]}`));
    assert.throws(() => tf.tidy(() => perExampleLoss(two)(t1, p1)), /2 outputs; pass a list of 2 tensors/);
    tf.dispose([xi, p1, p2, t1, t2]);
  });

  it('assertCompatibleXY names both shapes', () => {
    const m = mlp(20);
    const x = tf.zeros([3, 4]);
    const xBad = tf.zeros([3, 5]);
    const y = tf.zeros([3, 3]);
    const yBad = tf.zeros([2, 3]);
    assertCompatibleXY(m, x, y);
    assert.throws(() => assertCompatibleXY(m, xBad, y), /\[3, 5\].*\[null, 4\]/);
    assert.throws(() => assertCompatibleXY(m, x, yBad), /\[3, 4\].*\[2, 3\]/);
    assert.throws(() => pgdAttack(m, xBad, y, {epsilon: 0.1}), /\[3, 5\].*\[null, 4\]/);
    tf.dispose([x, xBad, y, yBad]);
  });
});

// ---------------------------------------------------------------- (b) closed form

describe('closed-form optimum of logistic regression', () => {
  const d = 6;
  const B = 8;
  const w = rand(d, 30, -1.5, 1.5);
  const bias = 0.1;
  const xs = rand(B * d, 31, -1, 1);
  const ys = [0, 1, 1, 0, 1, 0, 0, 1];
  const eps = 0.1;

  function logreg(): tfl.LayersModel {
    const m = tfl.sequential({layers: [tfl.layers.dense({units: 1, inputShape: [d], activation: 'sigmoid'})]});
    m.layers[0].setWeights([tf.tensor2d(w, [d, 1]), tf.tensor1d([bias])]);
    m.compile({optimizer: 'sgd', loss: 'binaryCrossentropy'});
    return m;
  }
  const z = (b: number): number => xs.slice(b * d, b * d + d).reduce((s, v, j) => s + v * w[j], bias);
  const l1 = w.reduce((s, v) => s + Math.abs(v), 0);
  const l2 = Math.sqrt(w.reduce((s, v) => s + v * v, 0));
  const pm = (b: number): number => 2 * ys[b] - 1;
  const linfX = xs.map((v, i) => v - eps * Math.sign(w[i % d]) * pm(Math.floor(i / d)));
  const linfLoss = ys.map((_, b) => softplus(-pm(b) * z(b) + eps * l1));
  const l2X = xs.map((v, i) => v - (eps * w[i % d] * pm(Math.floor(i / d))) / l2);
  const l2Loss = ys.map((_, b) => softplus(-pm(b) * z(b) + eps * l2));

  it('FGSM is exactly the L∞ worst case', async () => {
    const m = logreg();
    const x = tf.tensor2d(xs, [B, d]);
    const y = tf.tensor2d(ys, [B, 1]);
    const adv = fgsmAttack(m, x, y, {epsilon: eps});
    assertClose(Array.from(await adv.data()), linfX, 0, 1e-6, 'fgsm x');
    const loss = await tf.tidy(() => perExampleLoss(m)(y, m.predict(adv) as tf.Tensor)).data();
    assertClose(Array.from(loss), linfLoss, 1e-5, 0, 'fgsm loss');
    tf.dispose([x, y, adv]);
  });

  it('PGD L∞ from a random start reaches the closed-form loss', async () => {
    const m = logreg();
    const x = tf.tensor2d(xs, [B, d]);
    const y = tf.tensor2d(ys, [B, 1]);
    const r = pgdAttackWithInfo(m, x, y, {epsilon: eps, steps: 20, seed: 1});
    assert.equal(r.gradientEvaluations, 20);
    assertClose(Array.from(await r.loss.data()), linfLoss, 1e-4, 0, 'pgd linf loss');
    assertClose(Array.from(await r.adversarial.data()), linfX, 0, 1e-6, 'pgd linf x');
    tf.dispose([x, y, r.adversarial, r.loss]);
  });

  it('PGD L2 reaches the closed-form loss', async () => {
    const m = logreg();
    const x = tf.tensor2d(xs, [B, d]);
    const y = tf.tensor2d(ys, [B, 1]);
    const r = pgdAttackWithInfo(m, x, y, {epsilon: eps, norm: 'l2', steps: 10, randomStart: false});
    assertClose(Array.from(await r.loss.data()), l2Loss, 1e-4, 0, 'pgd l2 loss');
    assertClose(Array.from(await r.adversarial.data()), l2X, 0, 1e-6, 'pgd l2 x');
    // From a random start the L2 iterate approaches the optimum more slowly; still close.
    const r2 = pgdAttackWithInfo(m, x, y, {epsilon: eps, norm: 'l2', steps: 50, seed: 3});
    assertClose(Array.from(await r2.loss.data()), l2Loss, 1e-2, 0, 'pgd l2 loss (random start)');
    tf.dispose([x, y, r.adversarial, r.loss, r2.adversarial, r2.loss]);
  });
});

// ---------------------------------------------------------------- (c) constraints

function linfDist(a: Float32Array | Int32Array | Uint8Array, b: Float32Array | Int32Array | Uint8Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

function l2Dists(a: ArrayLike<number>, b: ArrayLike<number>, batch: number): number[] {
  const n = a.length / batch;
  const out: number[] = [];
  for (let e = 0; e < batch; e++) {
    let s = 0;
    for (let i = e * n; i < (e + 1) * n; i++) s += (a[i] - b[i]) ** 2;
    out.push(Math.sqrt(s));
  }
  return out;
}

describe('constraints', () => {
  const B = 16;
  const xs = rand(B * 4, 40, 0, 1);
  const labels = Array.from({length: B}, (_, i) => i % 3);

  it('L∞ attacks stay in the ε-ball and the clip box', async () => {
    const m = mlp(41);
    const x = tf.tensor2d(xs, [B, 4]);
    const y = oneHot(labels, 3);
    const eps = 0.3;
    const advs = [
      pgdAttack(m, x, y, {epsilon: eps, clip: [0, 1], seed: 1}),
      pgdAttack(m, x, y, {epsilon: eps, clip: [0, 1], seed: 2, restarts: 3, stepSize: 0.2}),
      fgsmAttack(m, x, y, {epsilon: eps, clip: [0, 1]}),
      fgsmAttack(m, x, y, {epsilon: eps, clip: [0, 1], randomStart: true, seed: 4}),
    ];
    const xv = await x.data();
    for (const adv of advs) {
      const av = await adv.data();
      assert.ok(linfDist(av, xv) <= eps + 1e-6, `L∞ distance ${linfDist(av, xv)}`);
      for (const v of av) assert.ok(v >= 0 && v <= 1, `outside clip box: ${v}`);
      assert.deepEqual(adv.shape, x.shape);
    }
    tf.dispose([x, y, ...advs]);
  });

  it('L2 attacks stay in the ε-ball and the clip box', async () => {
    const m = mlp(42);
    const x = tf.tensor2d(xs, [B, 4]);
    const y = oneHot(labels, 3);
    const eps = 0.5;
    const advs = [
      pgdAttack(m, x, y, {epsilon: eps, norm: 'l2', clip: [0, 1], seed: 1}),
      pgdAttack(m, x, y, {epsilon: eps, norm: 'l2', seed: 5, steps: 7, restarts: 2}),
      pgdAttack(m, x, y, {epsilon: eps, norm: 'l2', steps: 1, stepSize: 10, randomStart: false}),
    ];
    const xv = await x.data();
    for (const [k, adv] of advs.entries()) {
      const av = await adv.data();
      for (const dist of l2Dists(av, xv, B)) assert.ok(dist <= eps + 1e-6, `L2 distance ${dist}`);
      if (k === 0) for (const v of av) assert.ok(v >= 0 && v <= 1, `outside clip box: ${v}`);
    }
    // The large single step lands on the sphere.
    for (const dist of l2Dists(await advs[2].data(), xv, B)) assert.ok(Math.abs(dist - eps) < 1e-5);
    tf.dispose([x, y, ...advs]);
  });

  it('inputs and outputs of rank 3 (per-example L2 norm over all non-batch axes)', async () => {
    const m = denseModel([2, 4], 3, 'linear', 44);
    m.compile({optimizer: 'sgd', loss: 'meanSquaredError'});
    const x = tf.tensor3d(rand(40, 45), [5, 2, 4]);
    const y = tf.tensor3d(rand(30, 46), [5, 2, 3]);
    const adv = pgdAttack(m, x, y, {epsilon: 0.25, norm: 'l2', steps: 5, seed: 1});
    assert.deepEqual(adv.shape, [5, 2, 4]);
    for (const dist of l2Dists(await adv.data(), await x.data(), 5)) assert.ok(dist <= 0.25 + 1e-6);
    tf.dispose([x, y, adv]);
  });

  it('attacks increase the loss and leave x, y untouched', async () => {
    const m = mlp(43);
    const x = tf.tensor2d(xs, [B, 4]);
    const y = oneHot(labels, 3);
    const before = Array.from(await x.data());
    const clean = await tf.tidy(() => tf.sum(perExampleLoss(m)(y, m.predict(x) as tf.Tensor))).data();
    const r = pgdAttackWithInfo(m, x, y, {epsilon: 0.2, seed: 7});
    assert.ok((await tf.sum(r.loss).data())[0] > clean[0]);
    assert.deepEqual(Array.from(await x.data()), before);
    assert.ok(!x.isDisposed && !y.isDisposed);
    // epsilon = 0 returns (a copy of) x.
    const same = pgdAttack(m, x, y, {epsilon: 0});
    assert.deepEqual(Array.from(await same.data()), before);
    tf.dispose([x, y, r.adversarial, r.loss, same]);
  });
});

// ---------------------------------------------------------------- (d) restarts, (e) seeds

describe('restarts and seeds', () => {
  const B = 24;
  const xs = rand(B * 4, 50, 0, 1);
  const labels = Array.from({length: B}, (_, i) => (i * 7) % 3);

  it('restarts never lower the per-example loss of the first run', async () => {
    const m = mlp(51);
    const x = tf.tensor2d(xs, [B, 4]);
    const y = oneHot(labels, 3);
    for (const norm of ['linf', 'l2'] as const) {
      const one = pgdAttackWithInfo(m, x, y, {epsilon: 0.4, norm, steps: 3, seed: 9});
      const many = pgdAttackWithInfo(m, x, y, {epsilon: 0.4, norm, steps: 3, seed: 9, restarts: 5});
      assert.equal(many.gradientEvaluations, 15);
      const a = await one.loss.data();
      const b = await many.loss.data();
      for (let i = 0; i < B; i++) assert.ok(b[i] >= a[i], `${norm} example ${i}: ${b[i]} < ${a[i]}`);
      // The reported loss is the loss at the returned point.
      const check = await tf.tidy(() => perExampleLoss(m)(y, m.predict(many.adversarial) as tf.Tensor)).data();
      assertClose(Array.from(b), Array.from(check), 1e-6, 1e-7, 'reported loss');
      tf.dispose([one.adversarial, one.loss, many.adversarial, many.loss]);
    }
    tf.dispose([x, y]);
  });

  it('same seed gives identical outputs; another seed differs', async () => {
    const m = mlp(52);
    const x = tf.tensor2d(xs, [B, 4]);
    const y = oneHot(labels, 3);
    const runs = (seed: number) => [
      pgdAttack(m, x, y, {epsilon: 0.3, steps: 2, seed, restarts: 2}),
      pgdAttack(m, x, y, {epsilon: 0.3, norm: 'l2', steps: 2, seed}),
      fgsmAttack(m, x, y, {epsilon: 0.3, randomStart: true, seed}),
    ];
    const a = runs(123);
    const b = runs(123);
    const c = runs(124);
    for (let k = 0; k < a.length; k++) {
      assert.deepEqual(Array.from(await a[k].data()), Array.from(await b[k].data()));
      assert.notDeepEqual(Array.from(await a[k].data()), Array.from(await c[k].data()));
    }
    tf.dispose([x, y, ...a, ...b, ...c]);
  });
});

// ---------------------------------------------------------------- (f) memory

describe('memory', () => {
  it('leaves exactly the returned tensors over repeated calls', () => {
    const m = mlp(60);
    const x = tf.tensor2d(rand(32, 61, 0, 1), [8, 4]);
    const y = tf.tensor2d([0, 1, 2, 0, 1, 2, 0, 1], [8, 1]);
    const yOne = oneHot([0, 1, 2, 0, 1, 2, 0, 1], 3);
    const mSparse = mlp(60);
    mSparse.compile({optimizer: 'sgd', loss: 'sparseCategoricalCrossentropy'});
    const calls: Array<() => tf.Tensor[]> = [
      () => [pgdAttack(mSparse, x, y, {epsilon: 0.1, steps: 3, seed: 1})],
      () => [pgdAttack(mSparse, x, y, {epsilon: 0.1, norm: 'l2', steps: 3, restarts: 3, clip: [0, 1]})],
      () => [fgsmAttack(mSparse, x, y, {epsilon: 0.1})],
      () => [fgsmAttack(mSparse, x, y, {epsilon: 0.1, randomStart: true, clip: [0, 1], seed: 2})],
      () => {
        const r = pgdAttackWithInfo(mSparse, x, y, {epsilon: 0.1, steps: 2, restarts: 2});
        return [r.adversarial, r.loss];
      },
      () => [pgdAttack(m, x, yOne, {epsilon: 0.1, steps: 2})],
    ];
    for (const [k, call] of calls.entries()) {
      for (let rep = 0; rep < 3; rep++) {
        const before = tf.memory().numTensors;
        const out = call();
        assert.equal(tf.memory().numTensors, before + out.length, `call ${k} rep ${rep}`);
        tf.dispose(out);
        assert.equal(tf.memory().numTensors, before, `call ${k} rep ${rep} after dispose`);
      }
    }
    tf.dispose([x, y, yOne]);
  });
});

// ---------------------------------------------------------------- (g) validation

describe('validation', () => {
  const m = mlp(70);
  const x = tf.zeros([2, 4]);
  const y = tf.zeros([2, 3]);

  const badPgd: Array<[Record<string, unknown>, RegExp]> = [
    [{epsilon: -1}, /options\.epsilon/],
    [{epsilon: NaN}, /options\.epsilon/],
    [{epsilon: Infinity}, /options\.epsilon/],
    [{}, /options\.epsilon/],
    [{epsilon: 0.1, steps: 0}, /options\.steps/],
    [{epsilon: 0.1, steps: 2.5}, /options\.steps/],
    [{epsilon: 0.1, restarts: 0}, /options\.restarts/],
    [{epsilon: 0.1, norm: 'l3'}, /options\.norm/],
    [{epsilon: 0.1, stepSize: -0.1}, /options\.stepSize/],
    [{epsilon: 0.1, clip: [1, 0]}, /options\.clip/],
    [{epsilon: 0.1, clip: [0]}, /options\.clip/],
    [{epsilon: 0.1, seed: NaN}, /options\.seed/],
    [{epsilon: 0.1, randomStart: 'yes'}, /options\.randomStart/],
    [{epsilon: 0.1, loss: 3}, /options\.loss/],
  ];

  it('bad PGD options name the field', () => {
    for (const [opts, re] of badPgd) {
      const n = tf.memory().numTensors;
      assert.throws(() => pgdAttack(m, x, y, opts as never), re, JSON.stringify(opts));
      assert.throws(() => pgdAttackWithInfo(m, x, y, opts as never), re);
      assert.equal(tf.memory().numTensors, n);
    }
  });

  it('bad FGSM options name the field', () => {
    assert.throws(() => fgsmAttack(m, x, y, {epsilon: -0.1}), /fgsmAttack: options\.epsilon/);
    assert.throws(() => fgsmAttack(m, x, y, {epsilon: 0.1, alpha: -1}), /options\.alpha/);
    assert.throws(() => fgsmAttack(m, x, y, {epsilon: 0.1, clip: [2, 1]}), /options\.clip/);
    assert.throws(() => fgsmAttack(m, x, y, {epsilon: 0.1, loss: 'nope'}), /Unknown loss "nope"/);
  });

  it('uncompiled model: clear error unless a loss is given', async () => {
    const raw = tfl.sequential({layers: [tfl.layers.dense({units: 3, inputShape: [4], activation: 'softmax'})]});
    const n = tf.memory().numTensors;
    assert.throws(() => pgdAttack(raw, x, y, {epsilon: 0.1}), /call model\.compile\(/);
    assert.throws(() => fgsmAttack(raw, x, y, {epsilon: 0.1}), /call model\.compile\(/);
    assert.equal(tf.memory().numTensors, n);
    const adv = fgsmAttack(raw, x, y, {epsilon: 0.1, loss: 'categorical_crossentropy'});
    assert.deepEqual(adv.shape, [2, 4]);
    adv.dispose();
  });
});
