import {tf} from './setup.js';
import * as tfl from '@tensorflow/tfjs-layers';
import {test} from 'node:test';
import assert from 'node:assert/strict';
import {disturbanceLayers, disturbanceSites, instrument, PenaltyConfig, penaltyValue, perExampleLoss, projectDisturbance, violationPerExample} from '../src/index.js';
import {disposeAddResult, forwardAdd, neuronObjective} from '../src/objective/neuron_space.js';
import {mlp, residual} from './fixtures/models.js';

const PENALTIES: PenaltyConfig[] = [
  {kind: 'quadratic', lambda: 0.7},
  {kind: 'linf', epsilon: 0.05, lambda: 3},
  {kind: 'l2', epsilon: 0.1, lambda: 3},
  {kind: 'l1', epsilon: 0.2, lambda: 3},
  {kind: 'quadratic', lambda: 0.5, box: [-0.3, 0.3], boxLambda: 2},
];

/** Random neurons: a forward pass in add mode with sizeable random disturbances (so penalties are active). */
function randomNeurons(model: tfl.LayersModel, x: tf.Tensor, seed: number): tf.Tensor[] {
  const sites = disturbanceSites(model);
  // |dᵢ| in [0.1, 0.3] with random signs: every L∞/L1 kink (|dᵢ| = ε, dᵢ = 0) is at least 0.05 away,
  // so central differences see a smooth function.
  const ds = sites.map((s, i) =>
    tf.tidy(() => {
      const shape = [x.shape[0], ...(s.inputShape.slice(1) as number[])];
      const u = tf.randomUniform(shape, -1, 1, 'float32', seed + i);
      return tf.mul(tf.sign(u), tf.add(0.1, tf.mul(0.2, tf.abs(u))));
    }),
  );
  const r = forwardAdd(model, sites.map((s) => s.layer), x, ds);
  const ns = r.neurons.map((n) => tf.clone(n));
  disposeAddResult(r);
  tf.dispose(ds);
  return ns;
}

/** Central finite differences of Σ_b J_b along random directions v, one per layer at a time, vs the analytic g·v. */
function checkGradient(model: tfl.LayersModel, x: tf.Tensor, y: tf.Tensor, seed: number): void {
  const loss = perExampleLoss(model, 'categoricalCrossentropy');
  const layers = disturbanceLayers(model);
  const f = neuronObjective(model, layers, x, y, loss);
  const ns = randomNeurons(model, x, seed);
  const grads = tf.grads((...args: tf.Tensor[]) => tf.sum(f(args)))(ns);
  const jScale = tf.tidy(() => tf.sum(tf.abs(f(ns))).dataSync()[0]);
  const h = 1e-3;
  for (let l = 0; l < ns.length; l++) {
    for (let trial = 0; trial < 2; trial++) {
      const [analytic, numeric] = tf.tidy(() => {
        const v = tf.randomNormal(ns[l].shape, 0, 1, 'float32', seed * 31 + l * 7 + trial);
        const plus = ns.map((n, i) => (i === l ? tf.add(n, tf.mul(h, v)) : n));
        const minus = ns.map((n, i) => (i === l ? tf.sub(n, tf.mul(h, v)) : n));
        const fd = (tf.sum(f(plus)).dataSync()[0] - tf.sum(f(minus)).dataSync()[0]) / (2 * h);
        return [tf.sum(tf.mul(grads[l], v)).dataSync()[0], fd];
      });
      // Truncation error of the central difference plus float32 rounding of J (a few ulps of |ΣJ|, divided by 2h).
      const tol = 3e-3 * Math.max(1, Math.abs(analytic)) + (8 * 2 ** -23 * jScale) / (2 * h);
      assert.ok(
        Math.abs(analytic - numeric) <= tol,
        `layer ${layers[l].name} (${layers[l].penalty.kind}): analytic ${analytic} vs finite difference ${numeric}`,
      );
    }
  }
  tf.dispose([...ns, ...grads]);
}

for (const penalty of PENALTIES) {
  const label = `${penalty.kind}${penalty.box ? '+box' : ''}`;
  test(`∂J/∂nℓ matches central finite differences: tanh MLP, ${label}`, () => {
    const model = instrument(mlp(), {input: penalty, hidden: penalty});
    const x = tf.randomUniform([4, 6], -1, 1, 'float32', 11);
    const y = tf.oneHot(tf.tensor1d([0, 1, 2, 1], 'int32'), 3);
    checkGradient(model, x, y, 100);
    tf.dispose([x, y]);
  });
  test(`∂J/∂nℓ matches central finite differences: residual net, ${label}`, () => {
    const model = instrument(residual(), {input: penalty, hidden: penalty});
    const x = tf.randomUniform([3, 5], -1, 1, 'float32', 12);
    const y = tf.oneHot(tf.tensor1d([2, 0, 1], 'int32'), 3);
    checkGradient(model, x, y, 200);
    tf.dispose([x, y]);
  });
}

test('eq. 11 through the layer modes equals the same formula written out by hand with the weights', () => {
  const base = mlp();
  const penalties: PenaltyConfig[] = [
    {kind: 'linf', epsilon: 0.05, lambda: 3, box: [-1, 1]},
    {kind: 'quadratic', lambda: 0.4},
    {kind: 'l2', epsilon: 0.1, lambda: 2},
  ];
  const model = instrument(base, {layers: (l) => l === base.layers[0] || l === base.layers[1], hidden: penalties[1]});
  const layers = disturbanceLayers(model);
  // give each layer its own penalty through a fresh instrumented model with per-layer choices
  assert.equal(layers.length, 3);
  const x = tf.randomUniform([5, 6], 0, 1, 'float32', 13);
  const y = tf.oneHot(tf.tensor1d([0, 1, 2, 1, 0], 'int32'), 3);
  const ns = randomNeurons(model, x, 300);
  const loss = perExampleLoss(model, 'categoricalCrossentropy');
  const viaModes = neuronObjective(model, layers, x, y, loss)(ns);
  const byHand = tf.tidy(() => {
    const [w1, b1] = base.layers[0].getWeights();
    const [w2, b2] = base.layers[1].getWeights();
    const [w3, b3] = base.layers[2].getWeights();
    const f1 = tf.tanh(tf.add(tf.matMul(ns[0], w1), b1));
    const f2 = tf.tanh(tf.add(tf.matMul(ns[1], w2), b2));
    const p = tf.softmax(tf.add(tf.matMul(ns[2], w3), b3));
    const ce = tf.neg(tf.sum(tf.mul(y, tf.log(tf.clipByValue(p, 1e-7, 1 - 1e-7))), 1));
    const rho = (pen: PenaltyConfig, d: tf.Tensor, baseT: tf.Tensor) => penaltyValue(pen, d, baseT);
    return tf.addN([
      ce,
      rho(layers[0].penalty, tf.sub(ns[0], x), x),
      rho(layers[1].penalty, tf.sub(ns[1], f1), f1),
      rho(layers[2].penalty, tf.sub(ns[2], f2), f2),
    ]);
  });
  const a = viaModes.dataSync();
  const b = byHand.dataSync();
  a.forEach((v, i) => assert.ok(Math.abs(v - b[i]) <= 1e-5 * Math.max(1, Math.abs(b[i])), `${v} vs ${b[i]}`));
  tf.dispose([x, y, viaModes, byHand, ...ns]);
  void penalties;
});

test('penalty values match their closed forms', () => {
  const d = tf.tensor2d([[0.3, -0.1, 0.02], [0, 0, 0]]);
  const base = tf.tensor2d([[0.9, 0.05, 0.5], [0.2, 0.2, 0.2]]);
  const v = (p: PenaltyConfig) => Array.from(penaltyValue(p, d, base).dataSync());
  const close = (got: number[], want: number[]) => got.forEach((g, i) => assert.ok(Math.abs(g - want[i]) < 1e-6, `${got} vs ${want}`));
  close(v({kind: 'quadratic', lambda: 2}), [-2 * (0.09 + 0.01 + 0.0004), 0]);
  close(v({kind: 'linf', epsilon: 0.05, lambda: 10}), [-10 * (0.25 ** 2 + 0.05 ** 2), 0]);
  const n2 = Math.sqrt(0.09 + 0.01 + 0.0004);
  close(v({kind: 'l2', epsilon: 0.2, lambda: 10}), [-10 * (n2 - 0.2) ** 2, 0]);
  close(v({kind: 'l1', epsilon: 0.3, lambda: 10}), [-10 * (0.42 - 0.3) ** 2, 0]);
  // box [0, 1] on n = base + d = [1.2, -0.05, 0.52]: violations 0.2 and 0.05
  close(v({kind: 'quadratic', lambda: 0, box: [0, 1], boxLambda: 5}), [-5 * (0.04 + 0.0025), 0]);
  tf.dispose([d, base]);
});

test('projection lands exactly on the budget (L∞, L2, L1, box) and violation reports the excess', () => {
  const d = tf.randomNormal([6, 10], 0, 1, 'float32', 14);
  const base = tf.randomUniform([6, 10], 0, 1, 'float32', 15);
  for (const p of [
    {kind: 'linf', epsilon: 0.1},
    {kind: 'l2', epsilon: 0.5},
    {kind: 'l1', epsilon: 0.7},
    {kind: 'l1', epsilon: 100},
  ] as PenaltyConfig[]) {
    const before = Array.from(violationPerExample(p, d, base).dataSync());
    const proj = projectDisturbance({...p, box: [0, 1]} as PenaltyConfig, d, base);
    const after = violationPerExample({...p, box: [0, 1]} as PenaltyConfig, proj, base).dataSync();
    after.forEach((v) => assert.ok(v <= 1e-6, `${p.kind}: violation after projection ${v}`));
    if (p.kind !== 'l1' || p.epsilon < 10) assert.ok(Math.max(...before) > 0.1, `${p.kind}: the test disturbance violates the ball`);
    if (p.kind === 'l1' && p.epsilon < 10) {
      // Euclidean projection onto the L1 ball lands on its surface when the point is outside.
      const norms = tf.sum(tf.abs(projectDisturbance(p, d)), 1).dataSync();
      norms.forEach((n) => assert.ok(Math.abs(n - 0.7) < 1e-4, `L1 norm after projection ${n}`));
    }
    if (p.kind === 'l1' && p.epsilon >= 10) {
      assert.ok(tf.max(tf.abs(tf.sub(projectDisturbance(p, d), d))).dataSync()[0] === 0, 'inside the ball: unchanged');
    }
    proj.dispose();
  }
  tf.dispose([d, base]);
});

test('a penalty with lambda <= 0 or non-finite is refused with a clear error', async () => {
  const {validatePenalty} = await import('../src/objective/penalties.js');
  for (const bad of [0, -1, NaN, Infinity]) {
    assert.throws(() => validatePenalty({kind: 'quadratic', lambda: bad}, 'layer d1'), /layer d1: penalty field 'lambda' must be (> 0|a finite number)/);
    assert.throws(() => validatePenalty({kind: 'linf', epsilon: 0.1, lambda: bad}, 'layer d0'), /layer d0: penalty field 'lambda' must be (> 0|a finite number)/);
  }
  assert.throws(() => validatePenalty({kind: 'quadratic', lambda: 0}, 'x'), /nothing bounds the disturbance/);
  assert.throws(() => validatePenalty({kind: 'quadratic', lambda: 1, box: [0, 1], boxLambda: 0}, 'x'), /'boxLambda' must be > 0/);
  assert.equal(validatePenalty({kind: 'quadratic', lambda: 1e-6}, 'x').kind, 'quadratic');
});

test('linearisedDirection equals linearisedMaximiser(g − ∂ρ/∂d) − d (exactly, or to float32 rounding for the quadratic closed form and the fast-kernel L∞ + box form), and keeps no tensors', async () => {
  const {linearisedDirection, linearisedMaximiser, penaltyGradient} = await import('../src/objective/penalties.js');
  const base = tf.tensor2d([[0, 0.05, 0.5, 0.97, 1, 1.2, -0.1, 0.3]]);
  // d inside, on and outside the ε ball; n = base + d inside and outside the box; g of both signs and 0
  const d = tf.tensor2d([[0.2, -0.02, 0.1, 0.05, -0.3, 0, 0.15, -0.1]]);
  const g = tf.tensor2d([[1.5, -0.7, 0, 3, -2, 0.4, -0.01, 10]]);
  const configs: PenaltyConfig[] = [
    {kind: 'linf', epsilon: 0.1, lambda: 100, box: [0, 1], boxLambda: 100},
    {kind: 'linf', epsilon: 0.1, lambda: 100, box: [0, 1], boxLambda: 30},
    {kind: 'linf', epsilon: 0.1, lambda: 100},
    {kind: 'quadratic', lambda: 10},
    {kind: 'quadratic', lambda: 10, box: [0, 1], boxLambda: 100},
    {kind: 'l2', epsilon: 0.3, lambda: 100},
  ];
  for (const c of configs) {
    const n0 = tf.memory().numTensors;
    const dir = linearisedDirection(c, base);
    const got = tf.tidy(() => dir.direction(g, d));
    dir.dispose();
    assert.equal(tf.memory().numTensors, n0 + 1, `tensors kept for ${JSON.stringify(c)}`);
    const want = tf.tidy(() => tf.sub(linearisedMaximiser(c, tf.sub(g, penaltyGradient(c, d, base)), d, base), d));
    const a = Array.from(got.dataSync());
    const b = Array.from(want.dataSync());
    if ((c.kind === 'quadratic' && !c.box) || (c.kind === 'linf' && c.box && c.boxLambda === c.lambda)) {
      // closed form g/(2λ): equal up to float rounding of (g + 2λd)/(2λ) − d; L∞ + box with equal λ:
      // min/select rewritten with relu/step (rounding of v1 − relu(v1 − k2)/2 vs (v1 + k2)/2)
      a.forEach((v, i) => assert.ok(Math.abs(v - b[i]) < 1e-6, `${JSON.stringify(c)}[${i}]: ${v} vs ${b[i]}`));
    } else {
      assert.deepEqual(a, b, JSON.stringify(c));
    }
    tf.dispose([got, want]);
  }
  tf.dispose([base, d, g]);
});

test('linearisedMaximiser, L2 ball with a box: coordinates at the edge g points past get no share of ε, and the step stays in the box (closed form)', async () => {
  const {linearisedMaximiser} = await import('../src/objective/penalties.js');
  const before = tf.memory().numTensors;
  // λ large: u ≈ ε·g_free/‖g_free‖. Coordinates 0 (at 0, g < 0) and 2 (at 1, g > 0) cannot move.
  const base = tf.tensor2d([[0, 0.5, 1, 0.5], [0.97, 0.5, 0.5, 0.5]]);
  const g = tf.tensor2d([[-1, 1, 1, -1], [1, 0, 0, 0]]);
  const d = tf.zerosLike(g);
  const u = linearisedMaximiser({kind: 'l2', epsilon: 0.1, lambda: 1e9, box: [0, 1]}, g, d, base);
  const s = 0.1 / Math.SQRT2;
  const got = Array.from(u.dataSync());
  // row 2: the full radius 0.1 along +x₀, clipped at the box edge 1 − 0.97 = 0.03
  const want = [0, s, 0, -s, 0.03, 0, 0, 0];
  got.forEach((v, i) => assert.ok(Math.abs(v - want[i]) < 1e-6, `u[${i}] = ${v}, want ${want[i]}`));
  tf.dispose([base, g, d, u]);
  assert.equal(tf.memory().numTensors, before);
});
