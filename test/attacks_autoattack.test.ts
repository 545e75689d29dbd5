import {tf} from './setup.js';
import {mulberry32 as rng} from './fixtures/random.js';
import {linearData} from './fixtures/linear.js';
import * as tfl from '@tensorflow/tfjs-layers';
import assert from 'node:assert/strict';
import {describe, it} from 'node:test';

import {apgdAttack, apgdAttackWithInfo, apgdCheckpoints} from '../src/attacks/apgd.js';
import {autoAttack} from '../src/attacks/autoattack.js';
import {crossEntropyLoss, cwLoss, dlrLoss, dlrTargetedLoss, logitFunction} from '../src/attacks/logits.js';
import {pgdAttack} from '../src/attacks/pgd.js';
import {squareAttackWithInfo, squareP} from '../src/attacks/square.js';
import {fgsmAttack} from '../src/attacks/fgsm.js';

// ---------------------------------------------------------------- fixtures

const D = 6;
const K = 4;

/** Fixed weights of a linear K-class classifier on D inputs. */
function weights(seed: number): {W: number[][]; b: number[]} {
  const r = rng(seed);
  const W = Array.from({length: D}, () => Array.from({length: K}, () => 2 * r() - 1));
  const b = Array.from({length: K}, () => 0.2 * r() - 0.1);
  return {W, b};
}

/** Linear softmax classifier logits = xW + b. */
function linearModel(seed = 3, activation: 'softmax' | 'linear' = 'softmax'): {model: tfl.LayersModel; W: number[][]; b: number[]} {
  const {W, b} = weights(seed);
  const model = tfl.sequential({layers: [tfl.layers.dense({units: K, inputShape: [D], activation})]});
  model.setWeights([tf.tensor2d(W), tf.tensor1d(b)]);
  model.compile({optimizer: 'sgd', loss: 'categoricalCrossentropy'});
  return {model, W, b};
}

/**
 * Exact worst case of a linear classifier without box: the example is robust iff for every j ≠ y
 * m_j − ε‖w_y − w_j‖_* > 0, with m_j = (w_y − w_j)·x + b_y − b_j and ‖·‖_* the dual norm (L1 for L∞, L2 for L2).
 */
function exactRobust(xs: number[][], labels: number[], W: number[][], b: number[], eps: number, norm: 'linf' | 'l2'): boolean[] {
  return xs.map((x, i) => {
    const y = labels[i];
    for (let j = 0; j < K; j++) {
      if (j === y) continue;
      const dw = W.map((row) => row[y] - row[j]);
      const m = x.reduce((s, v, c) => s + v * dw[c], 0) + b[y] - b[j];
      const dual = norm === 'linf' ? dw.reduce((s, v) => s + Math.abs(v), 0) : Math.sqrt(dw.reduce((s, v) => s + v * v, 0));
      if (m - eps * dual <= 0) return false;
    }
    return true;
  });
}

function predicted(model: tfl.LayersModel, x: tf.Tensor): number[] {
  return tf.tidy(() => Array.from(tf.argMax(model.predict(x) as tf.Tensor, -1).dataSync()));
}

function maxDist(a: tf.Tensor, x: tf.Tensor, norm: 'linf' | 'l2'): number {
  const av = a.dataSync();
  const xv = x.dataSync();
  const d = x.shape[1] as number;
  let worst = 0;
  for (let r = 0; r < x.shape[0]; r++) {
    let acc = 0;
    for (let i = r * d; i < (r + 1) * d; i++) acc = norm === 'linf' ? Math.max(acc, Math.abs(av[i] - xv[i])) : acc + (av[i] - xv[i]) ** 2;
    worst = Math.max(worst, norm === 'linf' ? acc : Math.sqrt(acc));
  }
  return worst;
}

// ---------------------------------------------------------------- tests

describe('logit losses', () => {
  it('logitFunction removes the softmax (logits = xW + b) and restores the layer', () => {
    const {model, W, b} = linearModel();
    const x = tf.tensor2d([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]]);
    const f = logitFunction(model);
    assert.equal(f.source, 'softmax-removed');
    const z = f(x).dataSync();
    for (let k = 0; k < K; k++) {
      const want = b[k] + [0.1, 0.2, 0.3, 0.4, 0.5, 0.6].reduce((s, v, j) => s + v * W[j][k], 0);
      assert.ok(Math.abs(z[k] - want) < 1e-5, `z[${k}] ${z[k]} vs ${want}`);
    }
    const p = (model.predict(x) as tf.Tensor).dataSync();
    assert.ok(Math.abs(Array.from(p).reduce((s, v) => s + v, 0) - 1) < 1e-5, 'the softmax is back after the call');
  });

  it('CE, CW margin and DLR (untargeted, targeted) match their closed forms', () => {
    const z = tf.tensor2d([[3, 1, 0.5, -1], [0, 2, 1, 0.5]]);
    const y = tf.tensor1d([0, 0], 'int32');
    const t = tf.tensor1d([2, 1], 'int32');
    const ce = crossEntropyLoss(z, y).dataSync();
    const lse = (r: number[]) => Math.log(r.reduce((s, v) => s + Math.exp(v), 0));
    assert.ok(Math.abs(ce[0] - (lse([3, 1, 0.5, -1]) - 3)) < 1e-5);
    assert.deepEqual(Array.from(cwLoss(z, y).dataSync()), [1 - 3, 2 - 0]);
    const dlr = dlrLoss(z, y).dataSync();
    assert.ok(Math.abs(dlr[0] - -(3 - 1) / (3 - 0.5)) < 1e-6); // sorted 3,1,0.5,-1
    assert.ok(Math.abs(dlr[1] - -(0 - 2) / (2 - 0.5)) < 1e-6); // sorted 2,1,0.5,0
    const dt = dlrTargetedLoss(z, y, t).dataSync();
    assert.ok(Math.abs(dt[0] - -(3 - 0.5) / (3 - (0.5 + -1) / 2)) < 1e-6);
    assert.ok(Math.abs(dt[1] - -(0 - 2) / (2 - (0.5 + 0) / 2)) < 1e-6);
  });
});

describe('APGD', () => {
  it('checkpoints follow the published schedule p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06) (N = 100)', () => {
    assert.deepEqual(apgdCheckpoints(100), [22, 41, 57, 70, 80, 87, 93, 99]);
  });

  for (const [norm, eps] of [['linf', 0.08], ['l2', 0.15]] as const) {
    for (const loss of ['ce', 'dlr', 'cw'] as const) {
      it(`APGD-${loss} ${norm} finds exactly the examples breakable on a linear classifier, inside the ball`, () => {
        const {model, W, b} = linearModel();
        const {x, y, xs, labels} = linearData(40, 5, W, b);
        const before = tf.memory().numTensors;
        const r = apgdAttackWithInfo(model, x, y, {epsilon: eps, norm, steps: 50, loss, seed: 1});
        const exact = exactRobust(xs, labels, W, b, eps, norm);
        const pred = predicted(model, r.adversarial);
        const robust = pred.map((p, i) => p === labels[i]);
        assert.deepEqual(robust, exact, `robust flags vs the exact worst case (${exact.filter(Boolean).length} robust)`);
        assert.ok(exact.some(Boolean) && exact.some((v) => !v), 'the ε is chosen so that some but not all examples are robust');
        assert.ok(maxDist(r.adversarial, x, norm) <= eps, 'inside the ball');
        r.adversarial.dispose();
        assert.equal(tf.memory().numTensors, before, 'no tensor left behind');
      });
    }
  }

  it('APGD-T (targeted DLR over the top-3 classes) is exact on a linear classifier too', () => {
    const {model, W, b} = linearModel(7);
    const {x, y, xs, labels} = linearData(40, 9, W, b);
    const r = apgdAttackWithInfo(model, x, y, {epsilon: 0.08, targeted: true, targetClasses: 3, steps: 30, seed: 2, clip: [0, 1]});
    const exact = exactRobust(xs, labels, W, b, 0.08, 'linf');
    assert.deepEqual(predicted(model, r.adversarial).map((p, i) => p === labels[i]), exact);
    r.adversarial.dispose();
  });

  it('is reproducible with a seed and refuses unknown or bad options by name', () => {
    const {model, W, b} = linearModel();
    const {x, y} = linearData(8, 1, W, b);
    const a1 = apgdAttack(model, x, y, {epsilon: 0.05, steps: 10, seed: 4});
    const a2 = apgdAttack(model, x, y, {epsilon: 0.05, steps: 10, seed: 4});
    assert.deepEqual(Array.from(a1.dataSync()), Array.from(a2.dataSync()));
    tf.dispose([a1, a2]);
    assert.throws(() => apgdAttack(model, x, y, {epsilon: 0.05, step: 10} as never), /unknown option 'step' \(did you mean 'steps'\?\)/);
    assert.throws(() => apgdAttack(model, x, y, {epsilon: 0.05, loss: 'hinge'} as never), /options\.loss must be 'ce', 'cw' or 'dlr'/);
    assert.throws(() => apgdAttack(model, x, y, {epsilon: -1}), /options\.epsilon must be a finite number >= 0/);
  });
});

describe('Square attack', () => {
  it('breaks a linear classifier at large ε without gradients and stays in the L∞ ball and the box', () => {
    const {model, W, b} = linearModel();
    const {x, y, xs, labels} = linearData(20, 4, W, b);
    const eps = 0.3;
    const r = squareAttackWithInfo(model, x, y, {epsilon: eps, queries: 300, seed: 1, clip: [0, 1]});
    const exact = exactRobust(xs, labels, W, b, eps, 'linf');
    const pred = predicted(model, r.adversarial);
    // Every example it reports fooled is misclassified; it never beats the exact optimum.
    r.fooled.forEach((f, i) => {
      if (f) assert.notEqual(pred[i], labels[i]);
      if (exact[i]) assert.equal(f, 0, 'cannot break an exactly robust example');
    });
    assert.ok(Array.from(r.fooled).filter(Boolean).length >= exact.filter((v) => !v).length - 1, 'finds (nearly) all breakable examples');
    assert.ok(maxDist(r.adversarial, x, 'linf') <= eps);
    const a = r.adversarial.dataSync();
    assert.ok(a.every((v) => v >= 0 && v <= 1));
    r.adversarial.dispose();
  });

  it('L2: stays inside the ball, and finds adversarials at a large radius', () => {
    const {model, W, b} = linearModel();
    const {x, y} = linearData(10, 6, W, b);
    const r = squareAttackWithInfo(model, x, y, {epsilon: 1.5, norm: 'l2', queries: 200, seed: 2, clip: [0, 1]});
    assert.ok(maxDist(r.adversarial, x, 'l2') <= 1.5);
    assert.ok(Array.from(r.fooled).filter(Boolean).length >= 5);
    r.adversarial.dispose();
  });

  it('p schedule halves at the published iteration counts', () => {
    assert.equal(squareP(0.8, 0, 10000), 0.8);
    assert.equal(squareP(0.8, 11, 10000), 0.4);
    assert.equal(squareP(0.8, 51, 10000), 0.2);
    assert.equal(squareP(0.8, 8001, 10000), 0.8 / 512);
    assert.equal(squareP(0.8, 101, 1000), 0.8 / 32); // rescaled: 1010 of 10,000
  });
});

describe('autoAttack', () => {
  it('robust accuracy equals the exact worst case of a linear classifier and the accuracy on `adversarial`; ball and box hold exactly', () => {
    const {model, W, b} = linearModel();
    const {x, y, xs, labels} = linearData(40, 8, W, b);
    const eps = 0.08;
    const before = tf.memory().numTensors;
    const r = autoAttack(model, x, y, {epsilon: eps, clip: [0, 1], version: 'fast', seed: 3, batchSize: 16});
    const exact = exactRobust(xs, labels, W, b, eps, 'linf').filter(Boolean).length / 40;
    assert.equal(r.robustAccuracy, exact);
    const pred = predicted(model, r.adversarial);
    assert.equal(pred.filter((p, i) => p === labels[i]).length / 40, r.robustAccuracy);
    assert.ok(maxDist(r.adversarial, x, 'linf') <= eps);
    assert.ok(r.maxPerturbation <= eps);
    assert.ok(r.adversarial.dataSync().every((v) => v >= 0 && v <= 1));
    assert.deepEqual(r.perAttack.map((s) => s.name), ['APGD-CE', 'APGD-T', 'Square']);
    assert.equal(r.perAttack[2].robustAccuracy, r.robustAccuracy);
    // Each stage runs only on what is still robust.
    assert.equal(r.perAttack[1].attacked, r.perAttack[0].attacked - r.perAttack[0].broken);
    r.adversarial.dispose();
    assert.equal(tf.memory().numTensors, before);
  });

  it('Square breaks a model whose gradient is masked (zero), which APGD cannot', () => {
    const {model, W, b} = linearModel();
    const {x, y, xs, labels} = linearData(20, 2, W, b);
    const masked = maskedModel(model);
    const eps = 0.15;
    const r = autoAttack(masked, x, y, {epsilon: eps, clip: [0, 1], version: 'fast', seed: 1});
    const breakable = exactRobust(xs, labels, W, b, eps, 'linf').filter((v) => !v).length;
    assert.ok(breakable >= 5);
    assert.ok(r.perAttack[2].broken >= Math.floor(breakable / 2), `Square broke ${r.perAttack[2].broken} of ${breakable}`);
    r.adversarial.dispose();
  });

  it('refuses bad inputs with clear messages and leaks nothing', () => {
    const {model, W, b} = linearModel();
    const {x, y} = linearData(4, 1, W, b);
    const three = tfl.sequential({layers: [tfl.layers.dense({units: 3, inputShape: [D], activation: 'softmax'})]});
    const y3 = tf.zeros([4, 3]);
    const before = tf.memory().numTensors;
    assert.throws(() => autoAttack(model, [[1, 2]] as never, y, {epsilon: 0.1}), /autoAttack: x must be a tf\.Tensor .*got \[\[1, 2\]\]/);
    assert.throws(() => autoAttack(model, x, y, {epsilon: 0.1, versoin: 'fast'} as never), /unknown option 'versoin' \(did you mean 'version'\?\)/);
    const empty = tf.zeros([0, D]);
    const emptyY = tf.zeros([0, K]);
    assert.throws(() => autoAttack(model, empty, emptyY, {epsilon: 0.1}), /x has no examples/);
    tf.dispose([empty, emptyY]);
    assert.throws(() => autoAttack(three, x, y3, {epsilon: 0.1}), /needs at least 4 classes/);
    assert.equal(tf.memory().numTensors, before);
    y3.dispose();
  });

  it('refuses models whose input feeds an Embedding and two-output models (every attack)', () => {
    const emb = tfl.sequential({layers: [tfl.layers.embedding({inputDim: 10, outputDim: 3, inputLength: 5}), tfl.layers.flatten(), tfl.layers.dense({units: 4, activation: 'softmax'})]});
    emb.compile({optimizer: 'sgd', loss: 'categoricalCrossentropy'});
    const xi = tf.zeros([2, 5]);
    const yi = tf.zeros([2, 4]);
    const inp = tfl.input({shape: [D]});
    const o1 = tfl.layers.dense({units: 4, activation: 'softmax'}).apply(inp) as tfl.SymbolicTensor;
    const o2 = tfl.layers.dense({units: 1, activation: 'sigmoid'}).apply(inp) as tfl.SymbolicTensor;
    const two = tfl.model({inputs: inp, outputs: [o1, o2]});
    const x2 = tf.zeros([2, D]);
    const before = tf.memory().numTensors;
    for (const run of [
      () => autoAttack(emb, xi, yi, {epsilon: 0.1}),
      () => pgdAttack(emb, xi, yi, {epsilon: 0.1}),
      () => fgsmAttack(emb, xi, yi, {epsilon: 0.1}),
      () => apgdAttack(emb, xi, yi, {epsilon: 0.1}),
    ]) {
      assert.throws(run, /cannot be attacked in input space: its input '.*' feeds the Embedding layer/);
    }
    assert.throws(() => pgdAttack(two, x2, yi, {epsilon: 0.1}), /has 1 input\(s\) and 2 output\(s\)/);
    assert.equal(tf.memory().numTensors, before);
    tf.dispose([xi, yi, x2]);
  });
});

/** A copy of `model` behind a layer whose gradient is zero (the forward pass is unchanged): gradient masking. */
function maskedModel(model: tfl.LayersModel): tfl.LayersModel {
  class ZeroGrad extends tfl.layers.Layer {
    static className = 'ZeroGradTest';
    override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
      const t = Array.isArray(inputs) ? inputs[0] : inputs;
      const f = tf.customGrad(((v: tf.Tensor) => ({value: tf.clone(v), gradFunc: (dy: tf.Tensor) => tf.zerosLike(dy)})) as never);
      return f(t) as tf.Tensor;
    }
  }
  const inp = tfl.input({shape: [D]});
  const h = new ZeroGrad({}).apply(inp) as tfl.SymbolicTensor;
  const out = model.layers[0].apply(h) as tfl.SymbolicTensor;
  const m = tfl.model({inputs: inp, outputs: out});
  m.compile({optimizer: 'sgd', loss: 'categoricalCrossentropy'});
  return m;
}
