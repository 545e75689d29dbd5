import {tf} from './setup.js';
import * as tfl from '@tensorflow/tfjs-layers';
import {test} from 'node:test';
import assert from 'node:assert/strict';
import {conjugateGradient, deepAttack, disturbanceLayers, disturbedObjective, instrument, perExampleLoss, type DeepAttackOptions} from '../src/index.js';
import {neuronObjective} from '../src/objective/neuron_space.js';
import {mlp, residual} from './fixtures/models.js';

/** Solves A z = r by Gaussian elimination with partial pivoting, in float64. */
function solve(A: number[][], r: number[]): number[] {
  const n = r.length;
  const M = A.map((row, i) => [...row, r[i]]);
  for (let c = 0; c < n; c++) {
    let p = c;
    for (let i = c + 1; i < n; i++) if (Math.abs(M[i][c]) > Math.abs(M[p][c])) p = i;
    [M[c], M[p]] = [M[p], M[c]];
    for (let i = c + 1; i < n; i++) {
      const f = M[i][c] / M[c][c];
      for (let k = c; k <= n; k++) M[i][k] -= f * M[c][k];
    }
  }
  const z = new Array<number>(n).fill(0);
  for (let i = n - 1; i >= 0; i--) {
    let s = M[i][n];
    for (let k = i + 1; k < n; k++) s -= M[i][k] * z[k];
    z[i] = s / M[i][i];
  }
  return z;
}

/** True when the symmetric matrix is positive definite (Cholesky succeeds). */
function isPositiveDefinite(A: number[][]): boolean {
  const n = A.length;
  const L = A.map(() => new Array<number>(n).fill(0));
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      let s = A[i][j];
      for (let k = 0; k < j; k++) s -= L[i][k] * L[j][k];
      if (i === j) {
        if (s <= 0) return false;
        L[i][i] = Math.sqrt(s);
      } else L[i][j] = s / L[j][j];
    }
  }
  return true;
}

const matrix = (t: tf.Tensor): number[][] => t.arraySync() as number[][];

/**
 * Linear net x(3) → dense(4, linear) → dense(2, linear), MSE, quadratic penalties λ0 on the input
 * disturbance and λ1 on the hidden one. J is a concave quadratic in z = (n0, n1) ∈ R⁷; its maximiser
 * solves H z = r (derived by hand from ∇J = 0; see the comments), computed here in float64.
 */
test('closed form: CG reaches the maximiser of a concave quadratic J within (free neurons) iterations; GA needs more', (t) => {
  const lambda0 = 4;
  const lambda1 = 1;
  const base = tfl.sequential({
    layers: [
      tfl.layers.dense({units: 4, inputShape: [3], kernelInitializer: tfl.initializers.randomNormal({stddev: 0.8, seed: 1}), biasInitializer: 'ones'}),
      tfl.layers.dense({units: 2, kernelInitializer: tfl.initializers.randomNormal({stddev: 0.4, seed: 2})}),
    ],
  });
  base.compile({optimizer: 'sgd', loss: 'meanSquaredError'});
  // The squared loss itself (the default attack loss would take its root, see attackLoss).
  const model = instrument(base, {input: {kind: 'quadratic', lambda: lambda0}, hidden: {kind: 'quadratic', lambda: lambda1}});
  assert.equal(disturbanceLayers(model).length, 2);
  const W1 = matrix(base.layers[0].getWeights()[0]); // [3, 4]
  const b1 = Array.from(base.layers[0].getWeights()[1].dataSync());
  const W2 = matrix(base.layers[1].getWeights()[0]); // [4, 2]
  const b2 = Array.from(base.layers[1].getWeights()[1].dataSync());
  const K = 2;
  const B = 3;
  const xs = [[0.2, -0.5, 1.0], [1.5, 0.3, -0.7], [-1.0, 0.8, 0.1]];
  const ys = [[1.0, -2.0], [0.5, 0.5], [-1.5, 2.5]];
  // H = [[λ0 I + λ1 W1 W1ᵀ, −λ1 W1], [−λ1 W1ᵀ, λ1 I − (1/K) W2 W2ᵀ]]  (−½ Hessian of J)
  const H: number[][] = Array.from({length: 7}, () => new Array<number>(7).fill(0));
  for (let i = 0; i < 3; i++) {
    H[i][i] += lambda0;
    for (let j = 0; j < 3; j++) for (let k = 0; k < 4; k++) H[i][j] += lambda1 * W1[i][k] * W1[j][k];
    for (let k = 0; k < 4; k++) {
      H[i][3 + k] = -lambda1 * W1[i][k];
      H[3 + k][i] = -lambda1 * W1[i][k];
    }
  }
  for (let k = 0; k < 4; k++) {
    H[3 + k][3 + k] += lambda1;
    for (let m = 0; m < 4; m++) for (let o = 0; o < K; o++) H[3 + k][3 + m] -= (W2[k][o] * W2[m][o]) / K;
  }
  assert.ok(isPositiveDefinite(H), 'the test problem must be concave');
  const jStar = xs.map((x, b) => {
    const y = ys[b];
    // r = [λ0 x − λ1 W1 b1 ; λ1 b1 − (1/K) W2 (y − b2)]
    const r = [
      ...x.map((xi, i) => lambda0 * xi - lambda1 * W1[i].reduce((s, w, k) => s + w * b1[k], 0)),
      ...b1.map((bk, k) => lambda1 * bk - W2[k].reduce((s, w, o) => s + w * (y[o] - b2[o]), 0) / K),
    ];
    const z = solve(H, r);
    const n0 = z.slice(0, 3);
    const n1 = z.slice(3);
    const f1 = b1.map((bk, k) => bk + n0.reduce((s, v, i) => s + v * W1[i][k], 0));
    const yHat = b2.map((bo, o) => bo + n1.reduce((s, v, k) => s + v * W2[k][o], 0));
    const c = yHat.reduce((s, v, o) => s + (y[o] - v) ** 2, 0) / K;
    const rho0 = -lambda0 * n0.reduce((s, v, i) => s + (v - x[i]) ** 2, 0);
    const rho1 = -lambda1 * n1.reduce((s, v, k) => s + (v - f1[k]) ** 2, 0);
    return c + rho0 + rho1;
  });
  const x = tf.tensor2d(xs);
  const y = tf.tensor2d(ys);
  const rel = (got: ArrayLike<number>) => Math.max(...jStar.map((j, b) => Math.abs(got[b] - j) / Math.abs(j)));

  const cg = deepAttack(model, x, y, {solver: 'cg', maxIterations: 7, tolerance: -1, init: 'zero', loss: 'meanSquaredError'});
  const cgGap = rel(cg.objective.dataSync());
  assert.ok(cgGap <= 1e-4, `CG relative gap ${cgGap} after ${cg.iterations} iterations`);
  assert.ok(cg.iterations <= 7);
  // Gradient ascent with the best fixed step of a grid, given the same number of gradient evaluations, falls short.
  let bestGa = Infinity;
  for (const stepSize of [0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0]) {
    const ga = deepAttack(model, x, y, {solver: 'gradient-ascent', stepSize, maxIterations: 1000, maxGradientEvaluations: cg.gradientEvaluations, tolerance: -1, init: 'zero', loss: 'meanSquaredError'});
    const gap = rel(ga.objective.dataSync());
    if (Number.isFinite(gap)) bestGa = Math.min(bestGa, gap);
    tf.dispose([...ga.disturbances, ga.objective]);
  }
  t.diagnostic(`CG: gap ${cgGap.toExponential(2)} in ${cg.iterations} iterations / ${cg.gradientEvaluations} gradient evaluations; best GA at that budget: ${bestGa.toExponential(2)}`);
  assert.ok(bestGa > 1e-4, `gradient ascent reached ${bestGa} with ${cg.gradientEvaluations} gradient evaluations`);
  // …and it needs more gradient evaluations than CG to get to 1e-4.
  tf.dispose([x, y, ...cg.disturbances, cg.objective]);
  void B;
});

function classification(seed: number, batch: number, dim: number) {
  const x = tf.randomUniform([batch, dim], -1, 1, 'float32', seed);
  const y = tf.tidy(() => tf.oneHot(tf.cast(tf.mul(tf.randomUniform([batch], 0, 2.999, 'float32', seed + 1), 1), 'int32'), 3));
  return {x, y};
}

test('at the result, eq. 11 equals eq. 9 evaluated by a forward pass in add mode with d* (MLP and residual net)', () => {
  for (const [name, build, dim] of [['mlp', () => mlp(), 6], ['residual', () => residual(), 5]] as const) {
    const base = build();
    base.compile({optimizer: 'sgd', loss: 'categoricalCrossentropy'});
    const model = instrument(base, {input: {kind: 'linf', epsilon: 0.1}, hidden: {kind: 'quadratic', lambda: 2}});
    const {x, y} = classification(21, 5, dim);
    const r = deepAttack(model, x, y, {seed: 3, maxIterations: 8});
    const eq9 = disturbedObjective(model, disturbanceLayers(model), x, y, r.disturbances, perExampleLoss(model));
    const a = r.objective.dataSync();
    const b = eq9.dataSync();
    a.forEach((v, i) => assert.ok(Math.abs(v - b[i]) <= 1e-4 * Math.max(1, Math.abs(b[i])), `${name}: eq.11 ${v} vs eq.9 ${b[i]}`));
    assert.ok(r.history[r.history.length - 1] > r.history[0], `${name}: the attack increased J`);
    tf.dispose([x, y, eq9, r.objective, ...r.disturbances]);
  }
});

test('per-example J never decreases along the CG iterations; examples are independent', () => {
  const base = mlp();
  base.compile({optimizer: 'sgd', loss: 'categoricalCrossentropy'});
  const model = instrument(base, {input: {kind: 'l2', epsilon: 0.3}, hidden: {kind: 'quadratic', lambda: 1}});
  const layers = disturbanceLayers(model);
  const {x, y} = classification(31, 6, 6);
  const f = neuronObjective(model, layers, x, y, perExampleLoss(model));
  const start = deepAttack(model, x, y, {maxIterations: 0, seed: 4});
  // Neurons for the start point: n = f(·) + d via the zero-iteration attack's disturbances.
  const n0 = tf.tidy(() => {
    // a forward pass in add mode gives the neurons
    const out: tf.Tensor[] = [];
    layers.forEach((l, i) => l.setMode('add', start.disturbances[i], {record: true}));
    try {
      tf.dispose(model.apply(x, {training: false}) as tf.Tensor);
      for (const l of layers) {
        const rec = l.takeRecording()!;
        out.push(tf.keep(tf.clone(rec.output!)));
        rec.input!.dispose();
        rec.output!.dispose();
      }
    } finally {
      layers.forEach((l) => l.reset());
    }
    return out;
  });
  const res = conjugateGradient(f, n0, {maxIterations: 12, tolerance: -1});
  for (let it = 1; it < res.exampleHistory.length; it++) {
    res.exampleHistory[it].forEach((v, b) =>
      assert.ok(v >= res.exampleHistory[it - 1][b] - 1e-6 * Math.abs(v), `example ${b} decreased at iteration ${it}: ${res.exampleHistory[it - 1][b]} → ${v}`),
    );
  }
  tf.dispose([...n0, ...res.xs, res.objective, ...start.disturbances, start.objective]);

  // Independence: batch result = one-example results (zero init so the start does not depend on the batch).
  const batch = deepAttack(model, x, y, {init: 'zero', maxIterations: 6, tolerance: -1});
  const whole = batch.objective.dataSync();
  for (let b = 0; b < 6; b++) {
    const xb = tf.slice(x, [b, 0], [1, -1]);
    const yb = tf.slice(y, [b, 0], [1, -1]);
    const one = deepAttack(model, xb, yb, {init: 'zero', maxIterations: 6, tolerance: -1});
    const v = one.objective.dataSync()[0];
    assert.ok(Math.abs(v - whole[b]) <= 1e-4 * Math.max(1, Math.abs(v)), `example ${b}: alone ${v}, in batch ${whole[b]}`);
    tf.dispose([xb, yb, one.objective, ...one.disturbances]);
  }
  tf.dispose([x, y, batch.objective, ...batch.disturbances]);
});

test('project: true puts every dℓ exactly within its budget and box; violation is reported per layer', () => {
  const base = mlp({activation: 'relu'});
  base.compile({optimizer: 'sgd', loss: 'categoricalCrossentropy'});
  const model = instrument(base, {
    input: {kind: 'linf', epsilon: 0.05, lambda: 1, box: [-1, 1]},
    hidden: {kind: 'l2', epsilon: 0.2, lambda: 1},
  });
  const {x, y} = classification(41, 8, 6);
  const loose = deepAttack(model, x, y, {seed: 5, maxIterations: 6});
  assert.ok(Math.max(...loose.violation) > 1e-3, `with a small λ the soft budget is exceeded: ${loose.violation}`);
  const exact = deepAttack(model, x, y, {seed: 5, maxIterations: 6, project: true});
  assert.equal(exact.violation.length, 3);
  exact.violation.forEach((v) => assert.ok(v <= 1e-6, `violation after projection ${v}`));
  const [d0, d1, d2] = exact.disturbances;
  assert.ok(tf.max(tf.abs(d0)).dataSync()[0] <= 0.05 + 1e-6);
  for (const d of [d1, d2]) tf.sqrt(tf.sum(tf.square(d), 1)).dataSync().forEach((n) => assert.ok(n <= 0.2 + 1e-5, `L2 norm ${n}`));
  const n0 = tf.add(x, d0);
  assert.ok(tf.min(n0).dataSync()[0] >= -1 - 1e-6 && tf.max(n0).dataSync()[0] <= 1 + 1e-6);
  // The objective reported after projection is eq. 9 at the projected disturbances.
  const eq9 = disturbedObjective(model, disturbanceLayers(model), x, y, exact.disturbances, perExampleLoss(model)).dataSync();
  exact.objective.dataSync().forEach((v, i) => assert.ok(Math.abs(v - eq9[i]) <= 1e-5 * Math.max(1, Math.abs(v))));
  tf.dispose([x, y, n0, loose.objective, ...loose.disturbances, exact.objective, ...exact.disturbances]);
});

test('memory: only the returned tensors remain; weights are never written; penalties override switches layers off', () => {
  const base = residual();
  base.compile({optimizer: 'sgd', loss: 'categoricalCrossentropy'});
  const model = instrument(base);
  const {x, y} = classification(51, 4, 5);
  const weightsBefore = model.getWeights().map((w) => w.dataSync().slice());
  const run = () => deepAttack(model, x, y, {seed: 6, maxIterations: 5, project: true});
  const warm = run();
  tf.dispose([warm.objective, ...warm.disturbances]);
  for (let i = 0; i < 3; i++) {
    const before = tf.memory().numTensors;
    const r = run();
    assert.equal(tf.memory().numTensors, before + r.disturbances.length + 1);
    tf.dispose([r.objective, ...r.disturbances]);
    assert.equal(tf.memory().numTensors, before);
  }
  model.getWeights().forEach((w, i) => assert.deepEqual(w.dataSync(), weightsBefore[i]));
  const layers = disturbanceLayers(model);
  const inputOnly = deepAttack(model, x, y, {seed: 6, maxIterations: 4, penalties: (_l, i) => (i === 0 ? {kind: 'linf', epsilon: 0.1} : null)});
  assert.equal(inputOnly.disturbances.length, layers.length);
  inputOnly.disturbances.slice(1).forEach((d) => assert.equal(tf.max(tf.abs(d)).dataSync()[0], 0));
  assert.ok(tf.max(tf.abs(inputOnly.disturbances[0])).dataSync()[0] > 0);
  tf.dispose([inputOnly.objective, ...inputOnly.disturbances]);
  assert.throws(() => deepAttack(base, x, y), /no Disturbance layers.*instrument/);
  assert.throws(() => deepAttack(model, x, y, {penalties: [null]}), /penalties has 1 entries but the model has 6/);
  assert.throws(() => deepAttack(model, x, y, {solver: 'newton' as never}), /option 'solver'/);
  const yBad = tf.zeros([3, 3]);
  assert.throws(() => deepAttack(model, x, yBad), /same batch size/);
  tf.dispose([x, y, yBad]);
});

test("init 'gradient': on logistic regression the linearised start is the exact L∞ worst case (FGSM), and it counts one gradient evaluation", () => {
  const base = tfl.sequential({layers: [tfl.layers.dense({units: 1, inputShape: [4], activation: 'sigmoid', kernelInitializer: tfl.initializers.randomNormal({seed: 9})})]});
  base.compile({optimizer: 'sgd', loss: 'binaryCrossentropy'});
  const model = instrument(base, {input: {kind: 'linf', epsilon: 0.2}, hidden: null});
  const x = tf.tensor2d([[0.1, -0.3, 0.5, 0.2], [1, 0.4, -0.2, 0.0], [-0.5, -0.5, 0.5, 0.5]]);
  const y = tf.tensor2d([[1], [0], [1]]);
  const w = Array.from(base.layers[0].getWeights()[0].dataSync());
  const b = base.layers[0].getWeights()[1].dataSync()[0];
  const xs = x.arraySync() as number[][];
  const ys = [1, 0, 1];
  const worst = xs.map((row, i) => {
    const s = 2 * ys[i] - 1;
    const z = row.reduce((acc, v, k) => acc + (v - 0.2 * s * Math.sign(w[k])) * w[k], b);
    return Math.log1p(Math.exp(-s * z)); // binary cross-entropy at the worst point
  });
  const r = deepAttack(model, x, y, {space: 'neuron', maxIterations: 0, project: true, seed: 2});
  assert.equal(r.gradientEvaluations, 2, 'the linearised step plus the solver start');
  // disturbance space: the solver's first step from d = 0 is the same linearised maximiser
  const ds = deepAttack(model, x, y, {maxIterations: 1, firstStep: 'unit', project: true});
  assert.equal(ds.gradientEvaluations, 2, 'the start plus one step');
  ds.objective.dataSync().forEach((v, i) => assert.ok(Math.abs(v - worst[i]) <= 1e-4 * Math.max(1, worst[i]), `d-space example ${i}: ${v} vs closed form ${worst[i]}`));
  tf.dispose([ds.objective, ...ds.disturbances]);
  r.objective.dataSync().forEach((v, i) => assert.ok(Math.abs(v - worst[i]) <= 1e-4 * Math.max(1, worst[i]), `example ${i}: ${v} vs closed form ${worst[i]}`));
  const rnd = deepAttack(model, x, y, {space: 'neuron', maxIterations: 0, project: true, seed: 2, init: 'random'});
  rnd.objective.dataSync().forEach((v, i) => assert.ok(v < worst[i] - 1e-3, `random start ${v} is below the worst case ${worst[i]}`));
  tf.dispose([x, y, r.objective, ...r.disturbances, rnd.objective, ...rnd.disturbances]);
});

// ---------------------------------------------------------------------------------------------
// The default (disturbance-space) solver against a long independent maximiser
// ---------------------------------------------------------------------------------------------
import {rand} from './fixtures/random.js';
import {adversarialStep} from '../src/index.js';
import {resolveDeepAttackOptions} from '../src/attacks/deep.js';

/** A tiny tanh MLP 6-8-8-3 trained on a synthetic 3-class problem (deterministic). */
async function tinyTrained(): Promise<{model: tfl.LayersModel; x: tf.Tensor2D; y: tf.Tensor2D}> {
  const n = 96;
  const x = tf.tensor2d(rand(n * 6, 11), [n, 6]);
  const W = tf.tensor2d(rand(18, 12), [6, 3]);
  const y = tf.tidy(() => tf.cast(tf.oneHot(tf.argMax(tf.matMul(x, W), 1) as tf.Tensor1D, 3), 'float32')) as tf.Tensor2D;
  W.dispose();
  const model = tfl.sequential({
    layers: [
      tfl.layers.dense({units: 8, inputShape: [6], activation: 'tanh', kernelInitializer: tfl.initializers.glorotUniform({seed: 1})}),
      tfl.layers.dense({units: 8, activation: 'tanh', kernelInitializer: tfl.initializers.glorotUniform({seed: 2})}),
      tfl.layers.dense({units: 3, activation: 'softmax', kernelInitializer: tfl.initializers.glorotUniform({seed: 3})}),
    ],
  });
  model.compile({optimizer: tf.train.adam(0.05), loss: 'categoricalCrossentropy'});
  await model.fit(x, y, {epochs: 40, batchSize: 32, shuffle: false, verbose: 0});
  return {model, x, y};
}

/** Eq. 9 by hand (own forward pass from the weights, own penalties, tfjs's clipped cross-entropy). */
function handJ(model: tfl.LayersModel, x: tf.Tensor, y: tf.Tensor, ds: tf.Tensor[], linf: boolean): tf.Tensor1D {
  const w = model.getWeights();
  const h0 = tf.add(x, ds[0]);
  const h1 = tf.add(tf.tanh(tf.add(tf.matMul(h0 as tf.Tensor2D, w[0] as tf.Tensor2D), w[1])), ds[1]);
  const h2 = tf.add(tf.tanh(tf.add(tf.matMul(h1 as tf.Tensor2D, w[2] as tf.Tensor2D), w[3])), ds[2]);
  const p = tf.clipByValue(tf.softmax(tf.add(tf.matMul(h2 as tf.Tensor2D, w[4] as tf.Tensor2D), w[5])), 1e-7, 1 - 1e-7);
  let j: tf.Tensor = tf.neg(tf.sum(tf.mul(y, tf.log(p)), 1));
  const sq = (t: tf.Tensor) => tf.sum(tf.square(t), 1);
  j = tf.sub(j, linf ? tf.mul(100, sq(tf.relu(tf.sub(tf.abs(ds[0]), 0.1)))) : sq(ds[0]));
  return tf.sub(tf.sub(j, sq(ds[1])), sq(ds[2])) as tf.Tensor1D;
}

/**
 * Long Adam runs on eq. 9 from d = 0 (two step sizes, per-example best): the independent reference.
 * (Random starts of scale ~1 find other, higher local maxima on this tanh net that no local method
 * reaches from d = 0 — see README, solver benchmark — so they are not part of this unit test.)
 */
function referenceBest(model: tfl.LayersModel, x: tf.Tensor2D, y: tf.Tensor2D, linf: boolean): number[] {
  const B = x.shape[0];
  const shapes = [[B, 6], [B, 8], [B, 8]];
  let best = new Array<number>(B).fill(-Infinity);
  for (const [scale, lr] of [[0, 0.02], [0, 0.05]] as const) {
    const vars = shapes.map((s, i) => tf.variable(tf.randomUniform(s, -scale * (i === 0 && linf ? 0.1 : 1), scale * (i === 0 && linf ? 0.1 : 1), 'float32', 5 + i)));
    const opt = tf.train.adam(lr);
    for (let it = 0; it < 400; it++) {
      opt.minimize(() => tf.neg(tf.sum(handJ(model, x, y, vars, linf))) as tf.Scalar, false, vars);
      if (it % 20 === 19) {
        const J = tf.tidy(() => handJ(model, x, y, vars, linf).arraySync());
        best = best.map((b, i) => Math.max(b, J[i]));
      }
    }
    opt.dispose();
    tf.dispose(vars);
  }
  return best;
}

for (const linf of [true, false]) {
  test(`default deepAttack closes ≥ ${linf ? 95 : 80} % of the gap to long independent Adam runs in 20 evaluations, more than neuron CG (tiny trained tanh MLP, ${linf ? 'input L∞ + hidden quadratic' : 'all quadratic'})`, async () => {
    const {model, x, y} = await tinyTrained();
    const adv = instrument(model, {input: linf ? {kind: 'linf', epsilon: 0.1} : {kind: 'quadratic', lambda: 1}, hidden: {kind: 'quadratic', lambda: 1}});
    const ref = referenceBest(model, x, y, linf);
    const J0 = tf.tidy(() => handJ(model, x, y, [tf.zerosLike(x), tf.zeros([x.shape[0], 8]), tf.zeros([x.shape[0], 8])], linf).arraySync());
    const before = tf.memory().numTensors;
    const shares: Record<string, number> = {};
    for (const [name, opts] of [
      ['default', {seed: 1}],
      ...(process.env.DIAG ? ([['d40', {maxGradientEvaluations: 40}], ['d200', {maxGradientEvaluations: 200}], ['unit', {firstStep: 'unit'}], ['pr', {conjugate: true}], ['rand', {init: 'random', seed: 3}], ['monotone', {anneal: false}], ['anneal after 1', {anneal: {after: 1}}], ['no sign', {anneal: {linfSign: false}}]] as const) : []),
      ['neuron CG', {space: 'neuron' as const, maxGradientEvaluations: 20, maxIterations: 100}],
    ] as const) {
      const r = deepAttack(adv, x, y, opts);
      const J = tf.tidy(() => handJ(model, x, y, r.disturbances, linf).arraySync());
      const reported = r.objective.arraySync();
      J.forEach((v, i) => assert.ok(Math.abs(v - reported[i]) <= 1e-4 * Math.max(1, Math.abs(v)), `${name}: reported J ${reported[i]} = eq. 9 by hand ${v}`));
      assert.ok(r.gradientEvaluations <= (name.startsWith('d') && name !== 'default' ? 200 : 20), `${name}: ${r.gradientEvaluations} evaluations`);
      const mean = (a: number[]) => a.reduce((s, v) => s + v, 0) / a.length;
      const best = ref.map((b, i) => Math.max(b, J[i]));
      shares[name] = (mean(J) - mean(J0)) / (mean(best) - mean(J0));
      tf.dispose([...r.disturbances, r.objective]);
    }
    assert.equal(tf.memory().numTensors, before, 'no tensor leaked');
    console.log(`  ${linf ? 'L∞' : 'quadratic'}: share of the gap at 20 evaluations: ${Object.entries(shares).map(([k, v]) => `${k} ${(100 * v).toFixed(1)} %`).join(', ')}`);
    // all-quadratic on this tanh net: Adam's larger normalised steps leave the local maximum near
    // d = 0 for some examples where no descent-free local method does (measured 86 % at 20 and at
    // 200 evaluations); the L∞ case is near-local (measured 97.7 %).
    assert.ok(shares.default >= (linf ? 0.95 : 0.8), `default solver closed ${(100 * shares.default).toFixed(1)} % of the gap`);
    assert.ok(shares.default > shares['neuron CG'], 'better than neuron-space CG at the same budget');
    tf.dispose([x, y]);
  });
}

test('every (space, solver) respects its gradient-evaluation budget exactly; J equals eq. 9 at the returned d; no leaks', () => {
  const base = mlp();
  base.compile({optimizer: 'sgd', loss: 'categoricalCrossentropy'});
  const model = instrument(base, {input: {kind: 'linf', epsilon: 0.1, box: [-1, 1]}, hidden: {kind: 'quadratic', lambda: 1, box: [-2, 2]}});
  const x = tf.tensor2d(rand(5 * 6, 3), [5, 6]);
  const y = tf.cast(tf.oneHot(tf.tensor1d([0, 1, 2, 1, 0], 'int32'), 3), 'float32');
  const layers = disturbanceLayers(model);
  const loss = perExampleLoss(model);
  const combos = [
    {space: 'disturbance', solver: 'preconditioned'},
    {space: 'disturbance', solver: 'preconditioned', conjugate: true},
    {space: 'disturbance', solver: 'preconditioned', anneal: false},
    {space: 'disturbance', solver: 'preconditioned', anneal: {after: 1, start: 0.5, floor: 0, quadraticScale: 2}},
    {space: 'disturbance', solver: 'preconditioned', anneal: {after: 1, linfSign: false}},
    {space: 'disturbance', solver: 'cg'},
    {space: 'disturbance', solver: 'gradient-ascent'},
    {space: 'neuron', solver: 'cg'},
    {space: 'neuron', solver: 'gradient-ascent'},
  ] as const;
  for (const c of combos) {
    for (const k of [3, 8]) {
      const before = tf.memory().numTensors;
      const seen: {iteration: number; gradientEvaluations: number; meanObjective: number}[] = [];
      const r = deepAttack(model, x, y, {...c, maxGradientEvaluations: k, maxIterations: 100, tolerance: -1, seed: 4, onIteration: (i) => void seen.push(i)});
      assert.equal(r.gradientEvaluations, k, `${JSON.stringify(c)}: budget ${k}`);
      // onIteration: once per iteration, 1-based, the total evaluations (initial step included), the solver's history
      assert.deepEqual(seen.map((i) => i.iteration), Array.from({length: r.iterations}, (_, i) => i + 1), `${JSON.stringify(c)}: iterations`);
      assert.equal(seen[seen.length - 1].gradientEvaluations, k, `${JSON.stringify(c)}: last hook evaluations`);
      seen.forEach((i, n) => assert.ok(n === 0 || i.gradientEvaluations > seen[n - 1].gradientEvaluations, `${JSON.stringify(c)}: evaluations increase`));
      seen.forEach((i) => assert.ok(Math.abs(i.meanObjective - r.history[i.iteration]) <= 1e-12, `${JSON.stringify(c)}: hook J ${i.meanObjective} vs history ${r.history[i.iteration]}`));
      const J = disturbedObjective(model, layers, x, y, r.disturbances, loss);
      const a = J.arraySync();
      r.objective.arraySync().forEach((v, i) => assert.ok(Math.abs(v - a[i]) <= 1e-4 * Math.max(1, Math.abs(v)), `${JSON.stringify(c)}: reported ${v} vs eq. 9 ${a[i]}`));
      tf.dispose([J, ...r.disturbances, r.objective]);
      assert.equal(tf.memory().numTensors, before, `${JSON.stringify(c)}: leaked`);
    }
  }
  tf.dispose([x, y]);
});

test('deep-attack options are validated in one place: unknown keys get the closest name; training accepts init gradient', () => {
  assert.throws(() => resolveDeepAttackOptions('deepAttack', {maxGradientEvals: 5} as never), /unknown option 'maxGradientEvals' \(did you mean 'maxGradientEvaluations'\?\)/);
  assert.throws(() => resolveDeepAttackOptions('deepAttack', {solver: 'lbfgs'} as never), /option 'solver' must be one of 'preconditioned', 'cg', 'gradient-ascent', got "lbfgs"/);
  assert.throws(() => resolveDeepAttackOptions('deepAttack', {space: 'neuron', solver: 'preconditioned'}), /disturbance space/);
  assert.throws(() => resolveDeepAttackOptions('deepAttack', {onIteration: 3} as never), /option 'onIteration' must be a function/);
  const r = resolveDeepAttackOptions('deepAttack', {});
  assert.equal(r.space, 'disturbance');
  assert.equal(r.solver, 'preconditioned');
  assert.equal(r.maxGradientEvaluations, 20);
  const base = mlp();
  base.compile({optimizer: 'sgd', loss: 'categoricalCrossentropy'});
  const model = instrument(base);
  model.compile({optimizer: 'sgd', loss: 'categoricalCrossentropy'});
  const x = tf.tensor2d(rand(4 * 6, 9), [4, 6]);
  const y = tf.cast(tf.oneHot(tf.tensor1d([0, 1, 2, 1], 'int32'), 3), 'float32');
  for (const opts of [{space: 'neuron' as const, init: 'gradient' as const}, {init: 'gradient' as const}]) {
    const s = adversarialStep(model, x, y, {method: 'deep', ...opts, maxGradientEvaluations: 4, seed: 1});
    assert.ok(Number.isFinite(s.loss) && s.attack.gradientEvaluations === 4, JSON.stringify(s.attack));
  }
  assert.throws(() => adversarialStep(model, x, y, {method: 'deep', init: 'gaussian'} as never), /adversarialStep: option 'init' must be one of 'random', 'zero', 'gradient'/);
  // anneal: one object, validated here too (training passes it through)
  assert.deepEqual(resolveDeepAttackOptions('deepAttack', {}).anneal, {after: undefined, start: undefined, minRemaining: 5, floor: 0.02, quadraticScale: 1.5, linfSign: true});
  assert.throws(() => resolveDeepAttackOptions('deepAttack', {anneal: {minRemaining: 1.5}}), /option 'anneal\.minRemaining' must be an integer >= 0, got 1\.5/);
  assert.throws(() => resolveDeepAttackOptions('deepAttack', {anneal: {linfSign: 1}} as never), /option 'anneal\.linfSign' must be true or false, got 1/);
  assert.equal(resolveDeepAttackOptions('deepAttack', {anneal: false}).anneal, null);
  assert.equal(resolveDeepAttackOptions('deepAttack', {anneal: {after: 1}}).anneal?.after, 1);
  assert.throws(() => resolveDeepAttackOptions('deepAttack', {anneal: {after: 0}}), /deepAttack: option 'anneal\.after' must be an integer >= 1, got 0/);
  assert.throws(() => resolveDeepAttackOptions('deepAttack', {anneal: {steps: 3}} as never), /option 'anneal' must be an object with keys after, start, minRemaining, floor, quadraticScale, linfSign \(unknown key 'steps'\)/);
  assert.throws(() => resolveDeepAttackOptions('deepAttack', {anneal: 'yes'} as never), /option 'anneal' must be true, false or an object/);
  assert.throws(() => adversarialStep(model, x, y, {method: 'deep', anneal: {floor: 2}}), /adversarialStep: option 'anneal\.floor' must be a number in \[0, 1\], got 2/);
  tf.dispose([x, y]);
});

test('bad inputs get a clear error and leave no tensors: 0 rows, a plain array', () => {
  const model = instrument(mlp());
  const x0 = tf.zeros([0, 6]);
  const y0 = tf.zeros([0, 3]);
  const y1 = tf.oneHot(tf.tensor1d([1], 'int32'), 3);
  const before = tf.memory().numTensors;
  assert.throws(() => deepAttack(model, x0, y0, {loss: 'categoricalCrossentropy'}), /deepAttack: x has no examples \(shape \[0, 6\]\)/);
  assert.throws(() => deepAttack(model, [[1, 2, 3, 4, 5, 6]] as unknown as tf.Tensor, y1, {loss: 'categoricalCrossentropy'}), /x must be a tf\.Tensor; got an array/);
  assert.equal(tf.memory().numTensors, before);
  tf.dispose([x0, y0, y1]);
});

test('the random start lies in every ball and box, projected in closed form (no hidden box) or by a recording forward pass (hidden box)', () => {
  const base = mlp();
  base.compile({optimizer: 'sgd', loss: 'categoricalCrossentropy'});
  const x = tf.tensor2d(rand(4 * 6, 21).map((v) => (v + 1) / 2), [4, 6]); // inside the box [0, 1]
  const y = tf.cast(tf.oneHot(tf.tensor1d([0, 1, 2, 1], 'int32'), 3), 'float32');
  const input = {kind: 'linf' as const, epsilon: 0.1, box: [0, 1] as [number, number]};
  for (const hidden of [{kind: 'l2' as const, epsilon: 0.05}, {kind: 'quadratic' as const, lambda: 1, box: [-0.5, 0.5] as [number, number]}]) {
    const model = instrument(base, {input, hidden});
    const before = tf.memory().numTensors;
    // budget 1: the solver's start only, so the returned disturbances are the projected random start
    const r = deepAttack(model, x, y, {init: 'random', initScale: 5, maxGradientEvaluations: 1, seed: 3});
    assert.equal(r.gradientEvaluations, 1);
    const d0 = r.disturbances[0].arraySync() as number[][];
    const xs = x.arraySync();
    d0.forEach((row, b) => row.forEach((v, i) => {
      assert.ok(Math.abs(v) <= 0.1 + 1e-7, `${hidden.kind}: input d = ${v} outside the L∞ ball`);
      assert.ok(xs[b][i] + v >= -1e-7 && xs[b][i] + v <= 1 + 1e-7, `${hidden.kind}: x + d = ${xs[b][i] + v} outside [0, 1]`);
    }));
    // uniform ±5 clipped to ±0.1 then into the box: most coordinates sit on a face
    assert.ok(d0.flat().filter((v) => Math.abs(Math.abs(v) - 0.1) < 1e-6).length > 6, 'clipped to the ball');
    // every ball and box, hidden ones included (the hidden box needs the layer inputs of the disturbed pass)
    r.violation.forEach((v, l) => assert.ok(v <= 1e-6, `${hidden.kind}: layer ${r.layerNames[l]} violates its ball/box by ${v}`));
    if (hidden.kind === 'l2') {
      for (const d of r.disturbances.slice(1)) {
        (d.arraySync() as number[][]).forEach((row) => assert.ok(Math.hypot(...row) <= 0.05 + 1e-6, `hidden ‖d‖ = ${Math.hypot(...row)} > 0.05`));
      }
    }
    tf.dispose([...r.disturbances, r.objective]);
    assert.equal(tf.memory().numTensors, before, `${hidden.kind}: no tensor leaked`);
  }
  tf.dispose([x, y]);
});

test('threat-dependent defaults: with an L∞ ball anneal.after 3 and firstStep unit, otherwise 2 and saturated (the same iterates as passing them)', async () => {
  const {model, x, y} = await tinyTrained();
  const run = (adv: tfl.LayersModel, o: DeepAttackOptions = {}) => {
    const r = deepAttack(adv, x, y, {seed: 1, maxGradientEvaluations: 20, ...o});
    const out = {J: r.objective.arraySync(), d: r.disturbances.map((t) => Array.from(t.dataSync()))};
    tf.dispose([...r.disturbances, r.objective]);
    return out;
  };
  const before = tf.memory().numTensors;
  for (const linf of [true, false]) {
    const name = linf ? 'L∞' : 'all quadratic';
    const adv = instrument(model, {input: linf ? {kind: 'linf', epsilon: 0.1} : {kind: 'quadratic', lambda: 1}, hidden: {kind: 'quadratic', lambda: 1}});
    const [after, otherAfter] = linf ? [3, 2] : [2, 3];
    const [first, otherFirst] = (linf ? ['unit', 'saturated'] : ['saturated', 'unit']) as ('unit' | 'saturated')[];
    const def = run(adv);
    assert.deepEqual(def, run(adv, {anneal: {after}, firstStep: first}), `${name}: default = after ${after}, firstStep '${first}'`);
    // each of the other settings moves different iterates on this net, so the equality above means something
    assert.notDeepEqual(def.J, run(adv, {anneal: {after: otherAfter}, firstStep: first}).J, `${name}: after 2 and 3 differ here`);
    assert.notDeepEqual(def.J, run(adv, {anneal: {after}, firstStep: otherFirst}).J, `${name}: the two first steps differ here`);
  }
  assert.equal(tf.memory().numTensors, before, 'no tensor leaked');
  tf.dispose([x, y]);
});
