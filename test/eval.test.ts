import {tf} from './setup.js';
import {mulberry32 as rng} from './fixtures/random.js';
import * as tfl from '@tensorflow/tfjs-layers';
import assert from 'node:assert/strict';
import {describe, it} from 'node:test';

import {evaluateRobustness, layerVulnerability, worstCaseAccuracy} from '../src/eval/robustness.js';
import {solverConvergence} from '../src/eval/convergence.js';
import {disturbanceSites, instrument} from '../src/model/instrument.js';


const D = 4;
const W = [
  [1.0, -0.5],
  [-0.8, 0.6],
  [0.3, 0.9],
  [-0.2, -0.7],
]; // [D, 2]
const B = [0.05, -0.05];

/** Linear 2-class softmax classifier with fixed weights: logits = xW + b. */
function linearModel(): tfl.LayersModel {
  const m = tfl.sequential({layers: [tfl.layers.dense({units: 2, inputShape: [D], activation: 'softmax'})]});
  m.setWeights([tf.tensor2d(W), tf.tensor1d(B)]);
  m.compile({optimizer: 'sgd', loss: 'categoricalCrossentropy'});
  return m;
}

/** Data in [0.3, 0.7]^D (so a clip box [0, 1] is inactive for ε ≤ 0.3), random labels. */
function linearData(n: number, seed: number) {
  const r = rng(seed);
  const xs: number[][] = [];
  const labels: number[] = [];
  for (let i = 0; i < n; i++) {
    xs.push(Array.from({length: D}, () => 0.3 + 0.4 * r()));
    labels.push(r() < 0.5 ? 0 : 1);
  }
  return {xs, labels};
}

/** Margin of the true class: (w_y − w_o)·x + (b_y − b_o). */
function margin(x: number[], y: number): number {
  const o = 1 - y;
  return x.reduce((s, v, j) => s + v * (W[j][y] - W[j][o]), 0) + B[y] - B[o];
}

const dw = W.map((row) => row[0] - row[1]);
const dwL1 = dw.reduce((s, v) => s + Math.abs(v), 0);
const dwL2 = Math.sqrt(dw.reduce((s, v) => s + v * v, 0));

function expectedRobust(xs: number[][], labels: number[], reduction: number): number {
  return xs.filter((x, i) => margin(x, labels[i]) > reduction).length;
}

describe('evaluateRobustness', () => {
  it('matches the known L∞/L2 optimum of a linear classifier (margin vs ε‖Δw‖₁ / ε‖Δw‖₂)', () => {
    const model = linearModel();
    const {xs, labels} = linearData(64, 2);
    const epsilons = [0, 0.02, 0.05, 0.1];
    // The ε grid must not sit on a threshold (ties would make the expectation ambiguous).
    for (const e of epsilons) {
      for (let i = 0; i < xs.length; i++) {
        assert.ok(Math.abs(margin(xs[i], labels[i]) - e * dwL1) > 2e-3, 'L∞ threshold tie');
        assert.ok(Math.abs(margin(xs[i], labels[i]) - e * dwL2) > 2e-3, 'L2 threshold tie');
      }
    }
    const x = tf.tensor2d(xs);
    const y = tf.oneHot(tf.tensor1d(labels, 'int32'), 2);
    const before = tf.memory().numTensors;
    const r = evaluateRobustness(model, x, y, {
      epsilons,
      clip: [0, 1],
      batchSize: 24, // three batches of unequal size
      attacks: [
        {kind: 'fgsm'},
        {kind: 'pgd', steps: 10, restarts: 2},
        {kind: 'pgd', norm: 'l2', steps: 10},
        {kind: 'deep', maxIterations: 20},
      ],
    });
    assert.equal(tf.memory().numTensors, before, 'no tensor left behind');
    const n = xs.length;
    assert.equal(r.examples, n);
    assert.equal(r.cleanAccuracy, expectedRobust(xs, labels, 0) / n);
    const byName = Object.fromEntries(r.attacks.map((a) => [a.name, a]));
    const deepName = 'Deep threat (input + hidden layers)';
    assert.deepEqual(Object.keys(byName), ['FGSM', 'PGD-10×2 L∞', 'PGD-10 L2', deepName]);
    for (const name of ['FGSM', 'PGD-10×2 L∞', deepName]) {
      const got = byName[name].points.map((p) => p.robust);
      const want = epsilons.map((e) => expectedRobust(xs, labels, e * dwL1));
      assert.deepEqual(got, want, `${name}: robust counts ${got} vs known optimum ${want}`);
    }
    const l2 = byName['PGD-10 L2'].points.map((p) => p.robust);
    assert.deepEqual(l2, epsilons.map((e) => expectedRobust(xs, labels, e * dwL2)));
    // The known answer is not trivial: accuracy falls with ε but not to 0 at once.
    const pgd = byName['PGD-10×2 L∞'].points.map((p) => p.accuracy);
    assert.ok(pgd[0] > pgd[2] && pgd[2] > 0, `PGD accuracies ${pgd}`);
    // Worst case over L∞ attacks = the same known optimum; L2 is kept apart.
    const linf = r.worstCase.filter((w) => w.norm === 'linf');
    assert.deepEqual(linf.map((w) => w.epsilon), epsilons);
    assert.deepEqual(linf.map((w) => w.robust), epsilons.map((e) => expectedRobust(xs, labels, e * dwL1)));
    // The deep threat is reported apart, never in the input worst case.
    assert.deepEqual(linf[1].attacks, ['FGSM', 'PGD-10×2 L∞']);
    assert.equal(byName[deepName].threat, 'deep');
    assert.deepEqual(r.worstCase.filter((w) => w.norm === 'l2').map((w) => w.attacks), epsilons.map(() => ['PGD-10 L2']));
    // JSON-serialisable as is.
    assert.deepEqual(JSON.parse(JSON.stringify(r)), r);
    tf.dispose([x, y]);
  });

  it('worst case = per-example AND over attacks (not the min of the accuracies)', () => {
    const clean = [1, 1, 1, 1, 0, 1];
    const w = worstCaseAccuracy(clean, [
      {attack: 'A', norm: 'linf', epsilon: 0.1, correct: [1, 0, 1, 1, 1, 1]},
      {attack: 'B', norm: 'linf', epsilon: 0.1, correct: [1, 1, 0, 1, 1, 1]},
      {attack: 'A', norm: 'linf', epsilon: 0.2, correct: [0, 0, 1, 1, 1, 0]},
      {attack: 'C', norm: 'l2', epsilon: 0.1, correct: [0, 0, 0, 0, 0, 0]},
    ]);
    assert.deepEqual(w, [
      // A alone 5/6, B alone 5/6 (example 4 is wrong on clean input): together 3/6.
      {norm: 'linf', epsilon: 0.1, accuracy: 3 / 6, robust: 3, attacks: ['A', 'B']},
      {norm: 'linf', epsilon: 0.2, accuracy: 2 / 6, robust: 2, attacks: ['A']},
      {norm: 'l2', epsilon: 0.1, accuracy: 0, robust: 0, attacks: ['C']},
    ]);
    assert.throws(() => worstCaseAccuracy([1, 1], [{attack: 'A', norm: 'linf', epsilon: 0, correct: [1]}]), /'A'.*1 entries, expected 2/);
  });

  it('worst case in evaluateRobustness equals the AND of the per-example outcomes; includeInWorstCase: false leaves an attack out', () => {
    const model = tfl.sequential({
      layers: [tfl.layers.dense({units: 8, inputShape: [D], activation: 'tanh', kernelInitializer: tfl.initializers.glorotUniform({seed: 3})}),
        tfl.layers.dense({units: 3, activation: 'softmax', kernelInitializer: tfl.initializers.glorotUniform({seed: 4})})],
    });
    model.compile({optimizer: 'sgd', loss: 'sparseCategoricalCrossentropy'});
    const r0 = rng(5);
    const x = tf.tensor2d(Array.from({length: 40}, () => Array.from({length: D}, () => r0())));
    const pred = tf.tidy(() => tf.argMax(model.predict(x) as tf.Tensor, 1));
    const yArr = Array.from(pred.dataSync()).map((c, i) => (i % 5 === 0 ? (c + 1) % 3 : c)); // a few clean errors
    pred.dispose();
    const y = tf.tensor2d(yArr, [40, 1]);
    const r = evaluateRobustness(model, x, y, {
      epsilons: [0.3, 0.6],
      perExample: true,
      attacks: [{kind: 'fgsm', randomStart: true}, {kind: 'pgd', steps: 3}, {kind: 'pgd', steps: 1, name: 'weak', includeInWorstCase: false}],
    });
    const per = r.perExample!;
    for (const w of r.worstCase) {
      const k = String(w.epsilon);
      const alive = per.clean.map((c, i) => c & per.attacks['FGSM-RS'][k][i] & per.attacks['PGD-3 L∞'][k][i]);
      assert.equal(w.robust, alive.reduce((s, v) => s + v, 0));
      assert.deepEqual(w.attacks, ['FGSM-RS', 'PGD-3 L∞']);
      for (const a of r.attacks) assert.ok(w.accuracy <= a.points.find((p) => p.epsilon === w.epsilon)!.accuracy + (a.includeInWorstCase ? 0 : 1));
    }
    assert.equal(r.cleanAccuracy, per.clean.reduce((s, v) => s + v, 0) / 40);
    assert.ok(r.cleanAccuracy < 1 && r.cleanAccuracy >= 0.75);
    tf.dispose([x, y]);
  });

  it('attacks an uninstrumented model through a temporary copy and leaves the model unchanged', () => {
    const model = tfl.sequential({
      layers: [tfl.layers.dense({units: 6, inputShape: [D], activation: 'relu', kernelInitializer: tfl.initializers.glorotUniform({seed: 1})}),
        tfl.layers.dense({units: 2, activation: 'softmax', kernelInitializer: tfl.initializers.glorotUniform({seed: 2})})],
    });
    model.compile({optimizer: 'adam', loss: 'categoricalCrossentropy'});
    const {xs, labels} = linearData(20, 2);
    const x = tf.tensor2d(xs);
    const y = tf.oneHot(tf.tensor1d(labels, 'int32'), 2);
    const json = JSON.stringify(model.toJSON(null, false));
    const weights = model.getWeights().map((w) => Array.from(w.dataSync()));
    const p0 = model.predict(x) as tf.Tensor;
    const before = tf.memory().numTensors;
    const r = evaluateRobustness(model, x, y, {
      epsilons: [0.1],
      attacks: [{kind: 'deep', hidden: {kind: 'quadratic', lambda: 5}}, {kind: 'deep', name: 'deep own'}],
      layerProfile: {relativeEpsilons: [0, 0.5]},
    });
    assert.equal(tf.memory().numTensors, before);
    assert.equal(JSON.stringify(model.toJSON(null, false)), json);
    assert.equal(model.layers.length, 2);
    assert.equal(disturbanceSites(model).length, 0);
    model.getWeights().forEach((w, i) => assert.deepEqual(Array.from(w.dataSync()), weights[i]));
    const p1 = model.predict(x) as tf.Tensor;
    assert.deepEqual(Array.from(p1.dataSync()), Array.from(p0.dataSync()));
    assert.equal(r.attacks[0].settings.instrumented, true);
    assert.equal((r.attacks[0].settings.layers as string[]).length, 2, 'input + one hidden disturbance');
    // Hidden disturbances make the deep attack at least as strong as an input-only attack.
    assert.ok(r.attacks[0].points[0].accuracy <= r.cleanAccuracy);
    const lp = r.layerProfile!;
    assert.equal(lp.instrumented, true);
    assert.deepEqual(lp.layers.map((l) => l.isInput), [true, false]);
    assert.deepEqual(lp.layers.map((l) => l.units), [D, 6]);
    for (const l of lp.layers) {
      assert.equal(l.points[0].accuracy, lp.cleanAccuracy, 'ε_rel = 0 leaves the clean accuracy');
      assert.ok(l.points[1].accuracy <= lp.cleanAccuracy);
      assert.ok(Math.abs(l.points[1].epsilon - 0.5 * l.meanActivationNorm) < 1e-9);
    }
    const meanNorm = xs.reduce((s, v) => s + Math.hypot(...v), 0) / xs.length;
    assert.ok(Math.abs(lp.layers[0].meanActivationNorm - meanNorm) < 1e-5);
    tf.dispose([x, y, p0, p1]);
  });

  it('layer profile on a linear classifier matches the known L2 optimum at the input', () => {
    const model = instrument(linearModel(), {input: {kind: 'quadratic', lambda: 1}, hidden: null});
    const {xs, labels} = linearData(48, 7);
    const x = tf.tensor2d(xs);
    const y = tf.oneHot(tf.tensor1d(labels, 'int32'), 2);
    const lp = layerVulnerability(model, x, y, {relativeEpsilons: [0.05, 0.15], clip: [0, 1], maxIterations: 20});
    assert.equal(lp.instrumented, false);
    assert.equal(lp.layers.length, 1);
    const meanNorm = xs.reduce((s, v) => s + Math.hypot(...v), 0) / xs.length;
    lp.layers[0].points.forEach((p, k) => {
      const eps = [0.05, 0.15][k] * meanNorm;
      assert.ok(Math.abs(p.epsilon - eps) < 1e-5);
      assert.equal(p.robust, expectedRobust(xs, labels, eps * dwL2), `ε_rel ${p.relativeEpsilon}`);
    });
    tf.dispose([x, y]);
  });

  it('rejects bad options with errors naming them', () => {
    const model = linearModel();
    const x = tf.zeros([2, D]);
    const y = tf.oneHot(tf.tensor1d([0, 1], 'int32'), 2);
    assert.throws(() => evaluateRobustness(model, x, y, {attacks: [{kind: 'fgsm'}]}), /'FGSM' has no epsilons/);
    assert.throws(() => evaluateRobustness(model, x, y, {attacks: [{kind: 'pgd', steps: 0}], epsilons: [0.1]}), /steps must be an integer >= 1/);
    assert.throws(() => evaluateRobustness(model, x, y, {attacks: [], batchSize: 0}), /options\.batchSize/);
    assert.throws(() => evaluateRobustness(model, x, y, {attacks: [], epsilons: [-1]}), /options\.epsilons/);
    assert.throws(() => evaluateRobustness(model, x, y, {attacks: [{kind: 'nope'} as never]}), /unknown attack kind "nope"/);
    assert.throws(() => evaluateRobustness(model, x, y, {attacks: [{kind: 'fgsm'}, {kind: 'fgsm'}], epsilons: [0]}), /two attacks are named 'FGSM'/);
    assert.throws(() => evaluateRobustness(model, x, y, {attacks: [], clip: [1, 0]}), /options\.clip/);
    assert.throws(() => evaluateRobustness(model, tf.zeros([2, 3]), y, {attacks: []}), /evaluateRobustness: x shape \[2, 3\]/);
    tf.dispose([x, y]);
  });
});

describe('solverConvergence', () => {
  it('records objective vs gradient evaluations for the default deep solver, CG and gradient ascent from the same start', () => {
    const model = instrument(linearModel(), {input: {kind: 'quadratic', lambda: 2}, hidden: null});
    const {xs, labels} = linearData(16, 3);
    const x = tf.tensor2d(xs);
    const y = tf.oneHot(tf.tensor1d(labels, 'int32'), 2);
    const before = tf.memory().numTensors;
    const c = solverConvergence(model, x, y, {maxGradientEvaluations: 12, stepSizes: [0.05]});
    assert.equal(tf.memory().numTensors, before);
    assert.deepEqual(c.runs.map((r) => r.solver), ['preconditioned', 'cg', 'gradient-ascent']);
    for (const run of c.runs) {
      assert.equal(run.points[0].gradientEvaluations, 1);
      assert.ok(run.points.at(-1)!.gradientEvaluations <= 12);
      for (let i = 1; i < run.points.length; i++) {
        assert.ok(run.points[i].gradientEvaluations > run.points[i - 1].gradientEvaluations);
      }
      assert.equal(run.diverged, false, run.label);
    }
    const [pre, cg, ga] = c.runs;
    // the default solver's points are at the budgets 1, 2, 4, 8, 12 (fewer if it stopped early)
    assert.ok(pre.points.every((p) => [1, 2, 4, 8, 12].includes(p.gradientEvaluations)), JSON.stringify(pre.points));
    // CG and gradient ascent start at d = 0 (the clean neurons); the default solver at its random start
    // (uniform ±0.01 per input: J moves by about |∇J|·0.01 from J(0)), the same one at every budget (seed 0)
    assert.ok(Math.abs(pre.points[0].objective - cg.points[0].objective) <= 0.02, `${pre.points[0].objective} vs ${cg.points[0].objective}`);
    const again = solverConvergence(model, x, y, {maxGradientEvaluations: 12, stepSizes: [0.05]});
    assert.deepEqual(again.runs[0].points, pre.points, 'seeded: the same curve again');
    assert.notDeepEqual(solverConvergence(model, x, y, {maxGradientEvaluations: 12, stepSizes: [0.05], seed: 5}).runs[0].points[0], pre.points[0], 'another seed, another start');
    assert.equal(cg.points[0].objective, ga.points[0].objective, 'same start point');
    // On this concave quadratic-like objective CG gets at least as high as gradient ascent.
    assert.ok(cg.points.at(-1)!.objective >= ga.points.at(-1)!.objective - 1e-6);
    // Against an independent long run (gradient ascent, 300 evaluations): the default solver's point is
    // feasible-valued (not above the maximum) and has closed 99.9% of the gap by 12 evaluations.
    const long = solverConvergence(model, x, y, {maxGradientEvaluations: 300, stepSizes: [0.05]}).runs[2];
    const max = long.points.at(-1)!.objective;
    const start = pre.points[0].objective;
    const reached = pre.points.at(-1)!.objective;
    assert.ok(reached <= max + 1e-5, `${reached} > max ${max}`);
    assert.ok(reached - start >= 0.999 * (max - start), `closed ${(reached - start) / (max - start)} of the gap`);
    assert.ok(reached > ga.points.at(-1)!.objective, 'above fixed-step gradient ascent at equal budget');
    assert.deepEqual(JSON.parse(JSON.stringify(c)), c);
    tf.dispose([x, y]);
  });
});
