import {tf} from './setup.js';
import {mulberry32 as rng} from './fixtures/random.js';
import {linearData} from './fixtures/linear.js';
import * as tfl from '@tensorflow/tfjs-layers';
import assert from 'node:assert/strict';
import {describe, it} from 'node:test';

import {evaluateRobustness} from '../src/eval/robustness.js';
import {adversarialStep} from '../src/training/train_step.js';
import {prepareAttack} from '../src/attacks/registry.js';
import {formatResult} from '../cli/src/eval.js';
import {maskingChecksOf} from '../cli/src/report.js';

const D = 6;
const K = 4;

function linear(seed: number): {model: tfl.LayersModel; W: number[][]; b: number[]} {
  const r = rng(seed);
  const W = Array.from({length: D}, () => Array.from({length: K}, () => 2 * r() - 1));
  const b = Array.from({length: K}, () => 0.2 * r() - 0.1);
  const model = tfl.sequential({layers: [tfl.layers.dense({units: K, inputShape: [D], activation: 'softmax'})]});
  model.setWeights([tf.tensor2d(W), tf.tensor1d(b)]);
  model.compile({optimizer: 'sgd', loss: 'categoricalCrossentropy'});
  return {model, W, b};
}

function exactRobustCount(xs: number[][], labels: number[], W: number[][], b: number[], eps: number): number {
  return xs.filter((x, i) => {
    const y = labels[i];
    for (let j = 0; j < K; j++) {
      if (j === y) continue;
      const dw = W.map((row) => row[y] - row[j]);
      if (x.reduce((s, v, c) => s + v * dw[c], 0) + b[y] - b[j] - eps * dw.reduce((s, v) => s + Math.abs(v), 0) <= 0) return false;
    }
    return true;
  }).length;
}

describe('evaluateRobustness with the attack registry', () => {
  it('AutoAttack, APGD and Square points; the input worst case equals the exact optimum; the deep threat stays apart', () => {
    const {model, W, b} = linear(11);
    const {x, y, xs, labels} = linearData(32, 3, W, b);
    const before = tf.memory().numTensors;
    const r = evaluateRobustness(model, x, y, {
      epsilons: [0.05, 0.5],
      clip: [0, 1],
      attacks: [
        {kind: 'fgsm'},
        {kind: 'pgd', steps: 10, loss: 'cw'},
        {kind: 'apgd', targeted: true, targetClasses: 2, steps: 20},
        {kind: 'square', queries: 100},
        {kind: 'autoattack', version: 'fast'},
        {kind: 'deep', maxIterations: 2, hidden: {kind: 'quadratic', lambda: 10}},
      ],
    });
    assert.equal(tf.memory().numTensors, before, 'no tensors left');
    const aa = r.attacks.find((a) => a.kind === 'autoattack')!;
    assert.equal(aa.name, 'AutoAttack (fast) L∞');
    assert.equal(aa.points[0].robust, exactRobustCount(xs, labels, W, b, 0.05));
    assert.deepEqual(aa.points[0].stages!.map((s) => s.name), ['APGD-CE', 'APGD-T', 'Square']);
    assert.equal(aa.points[0].stages![2].robustAccuracy, aa.points[0].accuracy);
    const w = r.worstCase.find((p) => p.epsilon === 0.05)!;
    assert.equal(w.robust, exactRobustCount(xs, labels, W, b, 0.05));
    assert.equal(w.threat, 'input');
    const deep = r.attacks.find((a) => a.kind === 'deep')!;
    assert.equal(deep.threat, 'deep');
    assert.ok(!w.attacks.includes(deep.name), 'the deep threat is not in the input worst case');
    assert.match(deep.name, /Deep threat/);
    // The large-ε check ran (ε = 0.5 is half of [0, 1]) and passed: a linear model goes to 0.
    assert.equal(r.checks.find((c) => c.check === 'large-epsilon')!.status, 'ok');
    assert.equal(r.checks.find((c) => c.check === 'fgsm-vs-iterative')!.status, 'ok');
    const text = formatResult(r);
    assert.match(text, /input worst case \(L∞\)/);
    assert.match(text, /deep threat \(input L∞ ε \+ hidden layers; not an input attack\)/);
    assert.match(text, /AutoAttack \(fast\) L∞: after Square/);
    tf.dispose([x, y]);
  });

  it('flags gradient masking: Square breaks what the gradient attacks could not, and accuracy stays high at a large ε', () => {
    const {model, W, b} = linear(5);
    const {x, y} = linearData(24, 2, W, b);
    const masked = zeroGradient(model);
    const warn = console.warn;
    const seen: string[] = [];
    console.warn = (m: string) => seen.push(m);
    try {
      const r = evaluateRobustness(masked, x, y, {
        epsilons: [0.15, 0.5],
        clip: [0, 1],
        attacks: [{kind: 'pgd', steps: 5, randomStart: false}, {kind: 'square', queries: 300}],
      });
      assert.equal(r.checks.find((c) => c.check === 'square-vs-gradient')!.status, 'warning');
      assert.equal(r.checks.find((c) => c.check === 'large-epsilon')!.status, 'ok', 'Square still brings it to 0 at ε = 0.5');
      assert.ok(r.warnings.some((m) => /possible gradient masking \(square-vs-gradient\)/.test(m)));
      assert.ok(seen.some((m) => /possible gradient masking/.test(m)), 'printed with console.warn');
      const r2 = evaluateRobustness(masked, x, y, {epsilons: [0.5], clip: [0, 1], attacks: [{kind: 'pgd', steps: 5, randomStart: false}]});
      assert.equal(r2.checks.find((c) => c.check === 'large-epsilon')!.status, 'warning');
      assert.equal(maskingChecksOf(r2).find((c) => c.check === 'large-epsilon')!.status, 'warning');
    } finally {
      console.warn = warn;
      tf.dispose([x, y]);
    }
  });

  it('the report recomputes the FGSM and large-ε checks for older eval.json files (the collapsed ε = 0.3 row)', () => {
    const old = {
      examples: 1000, cleanAccuracy: 0.126, clip: [0, 1] as [number, number], seed: 0, batchSize: 250, seconds: 1,
      attacks: [
        {name: 'FGSM', kind: 'fgsm' as const, norm: 'linf' as const, settings: {}, includeInWorstCase: true, points: [{epsilon: 0.5, accuracy: 0.125, robust: 125, gradientEvaluations: 4, seconds: 1}]},
        {name: 'PGD-40×2 L∞', kind: 'pgd' as const, norm: 'linf' as const, settings: {}, includeInWorstCase: true, points: [{epsilon: 0.5, accuracy: 0.125, robust: 125, gradientEvaluations: 320, seconds: 1}]},
      ],
      worstCase: [{norm: 'linf' as const, epsilon: 0.5, accuracy: 0.125, robust: 125, attacks: ['FGSM', 'PGD-40×2 L∞']}],
    };
    const checks = maskingChecksOf(old as never);
    assert.equal(checks.find((c) => c.check === 'large-epsilon')!.status, 'warning');
    assert.equal(checks.find((c) => c.check === 'fgsm-vs-iterative')!.status, 'ok');
  });

  it('warns about NaN predictions; refuses 0 examples, non-tensors, unknown keys; APGD/Square/AutoAttack need one float input and one output', () => {
    const {model, W, b} = linear(2);
    const {x, y} = linearData(6, 1, W, b);
    const nanModel = tfl.sequential({layers: [tfl.layers.dense({units: K, inputShape: [D], activation: 'softmax'})]});
    nanModel.setWeights([tf.fill([D, K], NaN), tf.zeros([K])]);
    nanModel.compile({optimizer: 'sgd', loss: 'categoricalCrossentropy'});
    const inp = tfl.input({shape: [D]});
    const two = tfl.model({inputs: inp, outputs: [tfl.layers.dense({units: K}).apply(inp) as tfl.SymbolicTensor, tfl.layers.dense({units: 1}).apply(inp) as tfl.SymbolicTensor]});
    two.compile({optimizer: 'sgd', loss: ['categoricalCrossentropy', 'meanSquaredError']});
    const emb = tfl.sequential({layers: [tfl.layers.embedding({inputDim: 10, outputDim: 2, inputLength: D}), tfl.layers.flatten(), tfl.layers.dense({units: K, activation: 'softmax'})]});
    emb.compile({optimizer: 'sgd', loss: 'categoricalCrossentropy'});
    const empty = tf.zeros([0, D]);
    const emptyY = tf.zeros([0, K]);
    const y2 = tf.zeros([6, 1]);
    const before = tf.memory().numTensors;
    const warn = console.warn;
    const seen: string[] = [];
    console.warn = (m: string) => seen.push(m);
    try {
      const r = evaluateRobustness(nanModel, x, y, {attacks: []});
      assert.equal(r.cleanAccuracy, 0);
      assert.equal(r.nonFiniteCleanPredictions, 6);
      assert.match(r.warnings[0], /6 of 6 examples have NaN\/Infinity in the model's clean prediction/);
      assert.ok(seen.some((m) => /NaN\/Infinity/.test(m)));
    } finally {
      console.warn = warn;
    }
    assert.throws(() => evaluateRobustness(model, empty, emptyY, {attacks: []}), /evaluateRobustness: x has no examples/);
    assert.throws(() => evaluateRobustness(model, [[0.1]] as never, y, {attacks: []}), /evaluateRobustness: x must be a tf\.Tensor.*got \[\[0\.1\]\]/);
    assert.throws(() => evaluateRobustness(model, x, y, {attacks: [], epsilon: [0.1]} as never), /unknown option 'epsilon' \(did you mean 'epsilons'\?\)/);
    assert.throws(() => evaluateRobustness(model, x, y, {epsilons: [0.1], attacks: [{kind: 'pgd', step: 3}]} as never), /attack 'PGD': unknown option 'step' \(did you mean 'steps'\?\)/);
    assert.throws(() => evaluateRobustness(model, x, y, {epsilons: [0.1], attacks: [{kind: 'deep', includeInWorstCase: true}]} as never), /includeInWorstCase must be false for the deep attack/);
    // The deep entry of the registry validates deepAttack's options once, at preparation.
    assert.throws(() => evaluateRobustness(model, x, y, {epsilons: [0.1], attacks: [{kind: 'deep', solver: 'newton'}]} as never), /attack 'deep'.*option 'solver' must be one of/);
    // Two outputs and Embedding inputs are evaluated (per output / in embedding space, test/models.test.ts);
    // the attacks that need one float input say so.
    const xi = tf.zeros([2, D]);
    const yi = tf.zeros([2, K]);
    assert.throws(() => evaluateRobustness(emb, xi, yi, {epsilons: [0.1], attacks: [{kind: 'autoattack'}]}), /autoattack attacks the input of a single-input, single-output classifier.*token inputs/);
    assert.throws(() => evaluateRobustness(two, x, [y, y2], {epsilons: [0.1], attacks: [{kind: 'square'}]}), /2 output\(s\)/);
    tf.dispose([xi, yi]);
    assert.equal(tf.memory().numTensors, before, 'nothing leaked on the error paths');
    tf.dispose([x, y, y2, empty, emptyY]);
  });
});

describe('attack registry', () => {
  it('prepares once: a run at another ε scales the step size with ε (the relative step is kept)', () => {
    const p = prepareAttack('pgd', 'test', {epsilon: 0.1, steps: 4});
    assert.equal(p.settings.relativeStepSize, 2.5 / 4);
    assert.equal(p.label, 'PGD-4 L∞');
    assert.throws(() => prepareAttack('pgd', 'test', {epsilon: 0.1, stpes: 4} as never), /test: unknown option 'stpes' \(did you mean 'steps'\?\)/);
    assert.throws(() => prepareAttack('nope' as never, 'test', {} as never), /unknown attack "nope"; registered input attacks: fgsm, pgd, apgd, square, autoattack/);
  });

  it('adversarialStep (PGD) goes through the registry and refuses a 0-row batch clearly, leaking nothing', () => {
    const {model} = linear(1);
    model.compile({optimizer: tf.train.sgd(0.1), loss: 'categoricalCrossentropy'});
    const x = tf.zeros([0, D]);
    const y = tf.zeros([0, K]);
    const before = tf.memory().numTensors;
    assert.throws(() => adversarialStep(model, x, y, {method: 'pgd', epsilon: 0.1}), /adversarialStep: (x has no examples|the batch has no examples)/);
    assert.equal(tf.memory().numTensors, before);
    tf.dispose([x, y]);
    const x1 = tf.fill([2, D], 0.5);
    const y1 = tf.cast(tf.oneHot(tf.tensor1d([0, 1], 'int32'), K), 'float32');
    const r = adversarialStep(model, x1, y1, {method: 'pgd', epsilon: 0.1, steps: 3, seed: 1, strength: 0.5});
    assert.equal(r.attack.epsilon, 0.05);
    assert.equal(r.attack.gradientEvaluations, 3);
    assert.ok(r.attack.norms.input <= 0.05 + 1e-7);
    tf.dispose([x1, y1]);
  });
});

/** `model` behind a layer with a zero gradient (same forward pass). */
function zeroGradient(model: tfl.LayersModel): tfl.LayersModel {
  class ZeroGrad extends tfl.layers.Layer {
    static className = 'ZeroGradEval';
    override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
      const t = Array.isArray(inputs) ? inputs[0] : inputs;
      return tf.customGrad(((v: tf.Tensor) => ({value: tf.clone(v), gradFunc: (dy: tf.Tensor) => tf.zerosLike(dy)})) as never)(t) as tf.Tensor;
    }
  }
  const inp = tfl.input({shape: [D]});
  const out = model.layers[0].apply(new ZeroGrad({}).apply(inp)) as tfl.SymbolicTensor;
  const m = tfl.model({inputs: inp, outputs: out});
  m.compile({optimizer: 'sgd', loss: 'categoricalCrossentropy'});
  return m;
}
