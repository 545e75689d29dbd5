// The deep attack's split gradient evaluation (the loss taped, the penalties' closed-form value
// and gradient added untaped; `SplitObjective`) against the whole objective taped with its
// custom-gradient penalties, bit for bit, on cpu and wasm; penaltyValueAndGradient against
// penaltyValue / penaltyGradient; the direction from the shared excesses against the direction
// that recomputes them. Every check asserts that no tensor is kept.
import {tf} from './setup.js';
import '@tensorflow/tfjs-backend-wasm';
import assert from 'node:assert/strict';
import {after, before, test} from 'node:test';
import {deepAttack, instrument, perExampleLoss} from '../src/index.js';
import {deepAttackImpl} from '../src/attacks/deep.js';
import {disturbanceSites} from '../src/model/instrument.js';
import {disturbanceObjective} from '../src/objective/neuron_space.js';
import {
  linearisedDirection,
  penaltyGradient,
  penaltyValue,
  penaltyValueAndGradient,
  type PenaltyConfig,
  type PenaltyExcess,
} from '../src/objective/penalties.js';
import {evaluate} from '../src/solvers/batched.js';
import type {BatchObjective} from '../src/solvers/types.js';
import {mlp} from './fixtures/models.js';
import {rand} from './fixtures/random.js';

before(async () => {
  await tf.setBackend('wasm');
  await tf.setBackend('cpu');
});
after(async () => {
  await tf.setBackend('cpu');
});

const B = 5;
const same = (a: ArrayLike<number>, b: ArrayLike<number>, what: string) =>
  assert.deepEqual(Array.from(a), Array.from(b), `${what} differs`);

for (const backend of ['cpu', 'wasm']) {
  test(`split evaluation of eq. 9 equals the taped one bit for bit (${backend}; L∞ + box input, quadratic and quadratic + box hidden)`, async () => {
    await tf.setBackend(backend);
    try {
      const model = instrument(mlp({activation: 'relu'}), {input: {kind: 'linf', epsilon: 0.1, box: [0, 1]}, hidden: {kind: 'quadratic', lambda: 3}});
      model.compile({optimizer: 'sgd', loss: 'categoricalCrossentropy'});
      const layers = disturbanceSites(model).map((s) => s.layer);
      const x = tf.tensor2d(rand(B * 6, 1, 0, 1), [B, 6]);
      const y = tf.oneHot(tf.tensor1d([0, 1, 2, 1, 0], 'int32'), 3);
      const loss = perExampleLoss(model);
      // hidden layers: one plain quadratic, one with a box given a constant base (the split covers both)
      const hb = tf.tensor2d(rand(B * 8, 2, -1, 1), [B, 8]);
      const penalties: PenaltyConfig[] = [layers[0].penalty, {kind: 'quadratic', lambda: 3}, {kind: 'quadratic', lambda: 2, box: [-0.5, 0.5], boxLambda: 7}];
      const bases = [x, undefined, hb];
      const ds = [tf.tensor2d(rand(B * 6, 3, -0.25, 0.25), [B, 6]), tf.tensor2d(rand(B * 8, 4, -0.3, 0.3), [B, 8]), tf.tensor2d(rand(B * 8, 5, -0.3, 0.3), [B, 8])];
      const excess = new Map<tf.Tensor, PenaltyExcess>();
      const f = disturbanceObjective(model, layers, x, y, loss, penalties, bases, excess);
      assert.ok(f.split, 'the objective offers the split evaluation');
      const whole: BatchObjective = (xs) => f(xs); // the same function without `split`
      const before = tf.memory().numTensors;
      tf.tidy(() => {
        const a = evaluate(f, ds, B);
        assert.equal(excess.size, 1, 'the input layer left its excesses');
        const b = evaluate(whole, ds, B);
        same(a.value.dataSync(), b.value.dataSync(), 'J');
        a.grads.forEach((g, i) => same(g.dataSync(), b.grads[i].dataSync(), `gradient of layer ${i}`));
        same(a.value.dataSync(), f(ds).dataSync(), 'J vs the forward-only objective');
        // the direction from the shared excesses equals the one that recomputes them
        const dir = linearisedDirection(penalties[0], x);
        same(dir.direction(a.grads[0], ds[0], excess.get(ds[0])).dataSync(), dir.direction(a.grads[0], ds[0]).dataSync(), 'direction');
        dir.dispose();
      });
      excess.clear();
      assert.equal(tf.memory().numTensors, before, 'tensors kept');
      tf.dispose([x, y, hb, ...ds]);
      // a box on a hidden layer without a constant base: no split (its layer input moves with d)
      const g = disturbanceObjective(model, layers, x, y, loss, [penalties[0], penalties[1], {kind: 'quadratic', lambda: 1, box: [-1, 1]}], [x, undefined, undefined]);
      assert.equal(g.split, undefined);
    } finally {
      await tf.setBackend('cpu');
    }
  });

  test(`penaltyValueAndGradient equals penaltyValue and penaltyGradient bit for bit (${backend})`, async () => {
    await tf.setBackend(backend);
    try {
      const d = tf.tensor2d(rand(B * 7, 6, -0.4, 0.4), [B, 7]);
      const base = tf.tensor2d(rand(B * 7, 7, -0.2, 1.2), [B, 7]);
      const configs: PenaltyConfig[] = [
        {kind: 'quadratic', lambda: 2.5},
        {kind: 'quadratic', lambda: 2.5, box: [0, 1], boxLambda: 30},
        {kind: 'linf', epsilon: 0.15, lambda: 100},
        {kind: 'linf', epsilon: 0.15, lambda: 100, box: [0, 1], boxLambda: 100},
        {kind: 'linf', epsilon: 0.05, lambda: 40, box: [0, 1], boxLambda: 9},
      ];
      const before = tf.memory().numTensors;
      for (const c of configs) {
        tf.tidy(() => {
          const r = penaltyValueAndGradient(c, d, base);
          same(r.value.dataSync(), penaltyValue(c, d, base).dataSync(), `${JSON.stringify(c)}: value`);
          same(r.grad.dataSync(), penaltyGradient(c, d, base).dataSync(), `${JSON.stringify(c)}: gradient`);
          assert.equal(r.excess != null, c.kind === 'linf');
          assert.equal(r.excess?.box != null, c.kind === 'linf' && c.box != null);
        });
      }
      assert.equal(tf.memory().numTensors, before, 'tensors kept');
      assert.throws(() => penaltyValueAndGradient({kind: 'l2', epsilon: 1}, d), /needs a quadratic or linf penalty/);
      assert.throws(() => penaltyValueAndGradient({kind: 'linf', epsilon: 1, box: [0, 1]}, d), /and the layer input for a box/);
      assert.equal(tf.memory().numTensors, before, 'tensors kept on the error paths');
      tf.dispose([d, base]);
    } finally {
      await tf.setBackend('cpu');
    }
  });
}

test('deepAttackImpl without the violation: the same attack, NaN violations, no recording pass, no tensor kept', () => {
  const model = instrument(mlp({activation: 'relu'}), {input: {kind: 'linf', epsilon: 0.1, box: [0, 1]}, hidden: {kind: 'quadratic', lambda: 2, box: [-1, 1]}});
  model.compile({optimizer: 'sgd', loss: 'categoricalCrossentropy'});
  const x = tf.tensor2d(rand(B * 6, 9, 0, 1), [B, 6]);
  const y = tf.oneHot(tf.tensor1d([2, 1, 0, 1, 2], 'int32'), 3);
  const before = tf.memory().numTensors;
  const full = deepAttack(model, x, y, {maxGradientEvaluations: 6, seed: 3});
  const lean = deepAttackImpl(model, x, y, {maxGradientEvaluations: 6, seed: 3}, {violation: false});
  same(lean.objective.dataSync(), full.objective.dataSync(), 'objective');
  lean.disturbances.forEach((d, i) => same(d.dataSync(), full.disturbances[i].dataSync(), `disturbance ${i}`));
  assert.ok(full.violation.every(Number.isFinite));
  assert.ok(lean.violation.length === full.violation.length && lean.violation.every(Number.isNaN));
  // the full attack recorded the hidden layers' inputs for their box violation; the lean one did not
  assert.equal(lean.functionEvaluations, full.functionEvaluations - 1);
  tf.dispose([full.objective, ...full.disturbances, lean.objective, ...lean.disturbances]);
  assert.equal(tf.memory().numTensors, before, 'tensors kept');
  tf.dispose([x, y]);
});
