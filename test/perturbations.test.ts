import {tf} from './setup.js';
import {rand} from './fixtures/random.js';
import * as tfl from '@tensorflow/tfjs-layers';
import assert from 'node:assert/strict';
import {describe, it} from 'node:test';

import {evaluatePerturbations} from '../src/index.js';
import {disturbanceLayers, instrument} from '../src/model/instrument.js';

/** Standard normal CDF (Abramowitz–Stegun 7.1.26 erf, |error| < 1.5e-7). */
function phi(z: number): number {
  const x = Math.abs(z) / Math.SQRT2;
  const t = 1 / (1 + 0.3275911 * x);
  const erf = 1 - (((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t) * Math.exp(-x * x);
  return z >= 0 ? 0.5 * (1 + erf) : 0.5 * (1 - erf);
}

/** x → Dense(1, k=1) → Dense(1, k=2) → Dense(1, k=0.5) → output (one unit, linear): two hidden sites. */
function linearChain(): tfl.LayersModel {
  const m = tfl.sequential({
    layers: [
      tfl.layers.dense({units: 1, inputShape: [1], useBias: false, name: 'd1'}),
      tfl.layers.dense({units: 1, useBias: false, name: 'd2'}),
      tfl.layers.dense({units: 1, useBias: false, name: 'd3'}),
    ],
  });
  m.setWeights([tf.tensor2d([[1]]), tf.tensor2d([[2]]), tf.tensor2d([[0.5]])]);
  return m;
}

/** A small softmax MLP with fixed pseudo-random weights: [4] → 6 relu → 5 tanh → 3. */
const MLP_SHAPES: [number, number][] = [
  [4, 6],
  [6, 5],
  [5, 3],
];
function mlpWeights(): {k: number[][][]; b: number[][]} {
  const k = MLP_SHAPES.map(([i, o], l) => {
    const v = rand(i * o, 11 + l, -1, 1);
    return Array.from({length: i}, (_, r) => v.slice(r * o, (r + 1) * o));
  });
  const b = MLP_SHAPES.map(([, o], l) => rand(o, 31 + l, -0.3, 0.3));
  return {k, b};
}
function mlp(): tfl.LayersModel {
  const {k, b} = mlpWeights();
  const m = tfl.sequential({
    layers: [
      tfl.layers.dense({units: 6, inputShape: [4], activation: 'relu'}),
      tfl.layers.dense({units: 5, activation: 'tanh'}),
      tfl.layers.dense({units: 3, activation: 'softmax'}),
    ],
  });
  m.setWeights(k.flatMap((kk, l) => [tf.tensor2d(kk), tf.tensor1d(b[l])]));
  m.compile({optimizer: 'sgd', loss: 'categoricalCrossentropy'});
  return m;
}
function mlpData(n: number): number[][] {
  const v = rand(4 * n, 5, -2, 2);
  return Array.from({length: n}, (_, i) => v.slice(4 * i, 4 * i + 4));
}

// ---- An independent, hand-written forward pass of the MLP (float64), with optional quantisation.
const ACTS = [(v: number) => Math.max(0, v), Math.tanh, (v: number) => v]; // the softmax is left out (argmax of the logits)
function dense(x: number[], k: number[][], b: number[], act: (v: number) => number): number[] {
  return b.map((bj, j) => act(x.reduce((s, xi, i) => s + xi * k[i][j], bj)));
}
/** TFLite-style asymmetric quantiser: range extended to include 0, integer zero point, clamp. */
function quantise(v: number, lo: number, hi: number, bits: number): number {
  const l = Math.min(0, lo);
  const h = Math.max(0, hi);
  const levels = 2 ** bits - 1;
  const scale = (h - l) / levels;
  const z = Math.round(-l / scale);
  return (Math.min(levels, Math.max(0, Math.round(v / scale) + z)) - z) * scale;
}
/** Hidden activations and logits; `q` quantises hidden site l (0: after the relu layer, 1: after the tanh layer). */
function handForward(x: number[], q?: (v: number, l: number) => number): {hidden: number[][]; logits: number[]} {
  const {k, b} = mlpWeights();
  const hidden: number[][] = [];
  let a = x;
  for (let l = 0; l < 2; l++) {
    a = dense(a, k[l], b[l], ACTS[l]);
    if (q) a = a.map((v) => q(v, l));
    hidden.push(a);
  }
  return {hidden, logits: dense(a, k[2], b[2], ACTS[2])};
}
const argmax = (v: number[]) => v.indexOf(Math.max(...v));
const oneHot = (labels: number[], k: number) => tf.tidy(() => tf.cast(tf.oneHot(tf.tensor1d(labels, 'int32'), k), 'float32'));

function weightBytes(model: tfl.LayersModel): Uint8Array[] {
  return model.weights.map((w) => new Uint8Array(Float32Array.from(w.read().dataSync()).buffer));
}

describe('evaluatePerturbations', () => {
  it('activation noise: σ_ℓ = σ_rel · RMS(a_ℓ) on every hidden site at once (input excluded) — closed form on a linear chain', () => {
    const model = linearChain();
    const n = 2000;
    const xs = Array.from({length: n}, (_, i) => (i % 2 === 0 ? 1 : 3));
    const x = tf.tensor2d(xs, [n, 1]);
    const y = tf.ones([n, 1]);
    const r = evaluatePerturbations(model, x, y, {activationNoise: {relativeSigmas: [0.25, 0.5], draws: 20}, activationQuantization: false, weightNoise: false, batchSize: 500});
    tf.dispose([x, y]);
    assert.equal(r.cleanAccuracy, 1);
    assert.equal(r.instrumented, true);
    const an = r.activationNoise!;
    // Site 1 carries x (RMS √5), site 2 carries 2x (RMS 2√5).
    assert.equal(an.sites.length, 2);
    assert.ok(Math.abs(an.sites[0].rms - Math.sqrt(5)) < 1e-5, `rms ${an.sites[0].rms}`);
    assert.ok(Math.abs(an.sites[1].rms - 2 * Math.sqrt(5)) < 1e-5, `rms ${an.sites[1].rms}`);
    for (const p of an.points) {
      // out = x + σ₁z₁ + 0.5·σ₂z₂, σ₁ = r√5, σ₂ = 2r√5 → std r√10; correct iff out > 0.5.
      const s = p.relativeSigma * Math.sqrt(10);
      const p1 = phi(0.5 / s);
      const p3 = phi(2.5 / s);
      const expected = (p1 + p3) / 2;
      assert.ok(Math.abs(p.accuracy - expected) < 0.012, `σ_rel=${p.relativeSigma}: accuracy ${p.accuracy} vs closed form ${expected}`);
      // The per-draw accuracy is a mean of n independent Bernoulli outcomes.
      const sdExpected = Math.sqrt((p1 * (1 - p1) + p3 * (1 - p3)) / 2 / n);
      assert.ok(p.sd > 0.6 * sdExpected && p.sd < 1.4 * sdExpected, `σ_rel=${p.relativeSigma}: sd ${p.sd} vs ${sdExpected}`);
      assert.equal(p.draws, 20);
    }
  });

  it('an instrumented model: its own hidden Disturbance layers are the sites, its input disturbance is left alone', () => {
    const inst = instrument(linearChain(), {input: {kind: 'linf', epsilon: 0.1}, hidden: {kind: 'quadratic', lambda: 1}});
    const names = disturbanceLayers(inst).map((l) => l.name);
    assert.equal(names.length, 3);
    const n = 1000;
    const x = tf.tensor2d(Array.from({length: n}, (_, i) => (i % 2 === 0 ? 1 : 3)), [n, 1]);
    const y = tf.ones([n, 1]);
    const r = evaluatePerturbations(inst, x, y, {activationNoise: {relativeSigmas: [0.5], draws: 10}, activationQuantization: false, weightNoise: false});
    tf.dispose([x, y]);
    assert.equal(r.instrumented, false);
    assert.deepEqual(r.activationNoise!.sites.map((s) => s.name), names.slice(1));
    const s = 0.5 * Math.sqrt(10);
    const expected = (phi(0.5 / s) + phi(2.5 / s)) / 2;
    assert.ok(Math.abs(r.activationNoise!.points[0].accuracy - expected) < 0.015, `${r.activationNoise!.points[0].accuracy} vs ${expected}`);
  });

  it('a model instrumented with an input disturbance only: the hidden sites come from a view, the input stays unperturbed', () => {
    const inputOnly = instrument(linearChain(), {input: {kind: 'linf', epsilon: 0.1}, hidden: null});
    assert.equal(disturbanceLayers(inputOnly).length, 1);
    const n = 1000;
    const x = tf.tensor2d(Array.from({length: n}, (_, i) => (i % 2 === 0 ? 1 : 3)), [n, 1]);
    const y = tf.ones([n, 1]);
    const tensors = tf.memory().numTensors;
    const r = evaluatePerturbations(inputOnly, x, y, {activationNoise: {relativeSigmas: [0.5], draws: 10}, activationQuantization: false, weightNoise: false});
    assert.equal(tf.memory().numTensors, tensors);
    tf.dispose([x, y]);
    assert.equal(r.instrumented, true);
    assert.equal(r.activationNoise!.sites.length, 2);
    assert.ok(Math.abs(r.activationNoise!.sites[0].rms - Math.sqrt(5)) < 1e-5);
    const s = 0.5 * Math.sqrt(10);
    const expected = (phi(0.5 / s) + phi(2.5 / s)) / 2;
    assert.ok(Math.abs(r.activationNoise!.points[0].accuracy - expected) < 0.015, `${r.activationNoise!.points[0].accuracy} vs ${expected}`);
    assert.equal(disturbanceLayers(inputOnly).length, 1, 'the model itself is not changed');
  });

  it('σ_rel = 0 gives the clean accuracy exactly (activations and weights), and the clean accuracy is model.predict’s', () => {
    const model = mlp();
    const n = 200;
    const xs = mlpData(n);
    const labels = xs.map((_, i) => i % 3);
    const x = tf.tensor2d(xs);
    const y = oneHot(labels, 3);
    const pred = model.predict(x) as tf.Tensor;
    const predicted = Array.from(tf.argMax(pred, -1).dataSync());
    pred.dispose();
    const cleanExpected = predicted.filter((p, i) => p === labels[i]).length / n;
    const r = evaluatePerturbations(model, x, y, {activationNoise: {relativeSigmas: [0, 0.5], draws: 3}, weightNoise: {relativeSigmas: [0, 0.5], draws: 3}, activationQuantization: false, batchSize: 64});
    tf.dispose([x, y]);
    assert.equal(r.cleanAccuracy, cleanExpected);
    assert.ok(cleanExpected > 0.2 && cleanExpected < 0.6, `clean accuracy ${cleanExpected} (the labels must not all agree with the model)`);
    assert.deepEqual(r.activationNoise!.points[0], {relativeSigma: 0, accuracy: cleanExpected, sd: 0, draws: 3});
    assert.deepEqual(r.weightNoise!.points[0], {relativeSigma: 0, accuracy: cleanExpected, sd: 0, draws: 3});
    // and σ_rel = 0.5 does change something (the test above could fail)
    assert.ok(r.activationNoise!.points[1].sd > 0 && r.weightNoise!.points[1].sd > 0);
  });

  it('activation quantisation equals an independent hand-written sequential quantised forward pass (8 and 3 bits)', () => {
    const model = mlp();
    const n = 300;
    const xs = mlpData(n);
    // Static ranges from the clean float activations of the evaluated examples.
    const floatHidden = xs.map((v) => handForward(v).hidden);
    const lo = [0, 1].map((l) => Math.min(...floatHidden.flatMap((h) => h[l])));
    const hi = [0, 1].map((l) => Math.max(...floatHidden.flatMap((h) => h[l])));
    const seqLabels = (bits: number) => xs.map((v) => argmax(handForward(v, (a, l) => quantise(a, lo[l], hi[l], bits)).logits));
    // A non-sequential variant (each site's error computed from the float network) for contrast.
    const nonSeqLabels = (bits: number) =>
      xs.map((v, i) => {
        const {k, b} = mlpWeights();
        const h1 = floatHidden[i][0].map((a) => quantise(a, lo[0], hi[0], bits));
        const h2 = dense(h1, k[1], b[1], ACTS[1]).map((a, j) => a + quantise(floatHidden[i][1][j], lo[1], hi[1], bits) - floatHidden[i][1][j]);
        return argmax(dense(h2, k[2], b[2], ACTS[2]));
      });
    const x = tf.tensor2d(xs);
    for (const bits of [8, 3]) {
      const labels = seqLabels(bits);
      const floatLabels = xs.map((v) => argmax(handForward(v).logits));
      const y = oneHot(labels, 3);
      const r = evaluatePerturbations(model, x, y, {activationNoise: false, weightNoise: false, activationQuantization: {bits: [bits]}, batchSize: 64});
      const r1 = evaluatePerturbations(model, x, y, {activationNoise: false, weightNoise: false, activationQuantization: {bits: [bits]}, batchSize: 7});
      y.dispose();
      const q = r.activationQuantization!;
      assert.deepEqual(q.points, [{bits, accuracy: 1}], `${bits} bits: the library's quantised network disagrees with the hand-written one`);
      assert.deepEqual(r1.activationQuantization!.points, q.points, 'the result depends on the batch size');
      assert.equal(r.cleanAccuracy, floatLabels.filter((p, i) => p === labels[i]).length / n);
      q.sites.forEach((s, l) => {
        assert.ok(Math.abs(s.lo - Math.min(0, lo[l])) < 1e-5 && Math.abs(s.hi - Math.max(0, hi[l])) < 1e-5, `site ${l} range [${s.lo}, ${s.hi}] vs [${lo[l]}, ${hi[l]}]`);
      });
      if (bits === 3) {
        // The comparison discriminates: at 3 bits the float network and a non-sequential quantiser disagree somewhere.
        assert.ok(r.cleanAccuracy < 0.97, `3-bit quantisation should change some predictions (clean agreement ${r.cleanAccuracy})`);
        const nonSeq = nonSeqLabels(bits);
        assert.ok(nonSeq.some((p, i) => p !== labels[i]), 'sequential and non-sequential 3-bit quantisation agree everywhere; the test would not tell them apart');
      }
    }
    x.dispose();
  });

  it('weight noise: w + σ_rel·std(w)·N(0,1) per tensor (a one-value bias gets none) — closed form', () => {
    // Example i is the one-hot e_i, so out_i = w_i + σ_rel·std(w)·z_i + b: every example has its own noise entry.
    // w alternates 1 and 3 (std 1), b = 0 (one value, std 0); correct iff out_i > 0.5.
    const m = 200;
    const model = tfl.sequential({layers: [tfl.layers.dense({units: 1, inputShape: [m], name: 'lin'})]});
    model.setWeights([tf.tensor2d(Array.from({length: m}, (_, i) => [i % 2 === 0 ? 1 : 3])), tf.tensor1d([0])]);
    const x = tf.eye(m);
    const y = tf.ones([m, 1]);
    const r = evaluatePerturbations(model, x, y, {activationNoise: false, activationQuantization: false, weightNoise: {relativeSigmas: [1], draws: 20}});
    tf.dispose([x, y]);
    const w = r.weightNoise!;
    assert.deepEqual(w.tensors.map((t) => t.name), ['lin/kernel', 'lin/bias']);
    assert.ok(Math.abs(w.tensors[0].std - 1) < 1e-6 && w.tensors[1].std === 0, JSON.stringify(w.tensors));
    const p1 = phi(0.5);
    const p3 = phi(2.5);
    const expected = (p1 + p3) / 2;
    const p = w.points[0];
    // (σ relative to the RMS of w, √5, would give ≈ 0.73)
    assert.ok(Math.abs(p.accuracy - expected) < 0.02, `accuracy ${p.accuracy} vs closed form ${expected}`);
    const sdExpected = Math.sqrt((p1 * (1 - p1) + p3 * (1 - p3)) / 2 / m);
    assert.ok(p.sd > 0.6 * sdExpected && p.sd < 1.4 * sdExpected, `sd ${p.sd} vs ${sdExpected}`);
  });

  it('restores the weights bit-identically, after a run and after an error thrown mid-run', () => {
    const model = mlp();
    const before = weightBytes(model);
    const x = tf.tensor2d(mlpData(40));
    const y = oneHot(Array.from({length: 40}, (_, i) => i % 3), 3);
    evaluatePerturbations(model, x, y, {activationNoise: false, activationQuantization: false, weightNoise: {relativeSigmas: [0.1, 0.3], draws: 2}, batchSize: 16});
    assert.deepEqual(weightBytes(model), before);
    const tensors = tf.memory().numTensors;
    let sawPerturbed = false;
    assert.throws(
      () =>
        evaluatePerturbations(model, x, y, {
          activationNoise: false,
          activationQuantization: false,
          weightNoise: {relativeSigmas: [0.3], draws: 2},
          batchSize: 16,
          onProgress: (p) => {
            if (p.stage === 'weight-noise' && p.done === 6) {
              sawPerturbed = weightBytes(model).some((b, i) => !Buffer.from(b).equals(Buffer.from(before[i])));
              throw new Error('stop here');
            }
          },
        }),
      /stop here/,
    );
    assert.ok(sawPerturbed, 'the weights were not perturbed when the error was thrown; the test would prove nothing');
    assert.deepEqual(weightBytes(model), before);
    assert.equal(tf.memory().numTensors, tensors);
    tf.dispose([x, y]);
  });

  it('is seeded: same seed → identical result, another seed → other draws', () => {
    const model = mlp();
    const x = tf.tensor2d(mlpData(60));
    const y = oneHot(Array.from({length: 60}, (_, i) => i % 3), 3);
    const o = {activationNoise: {relativeSigmas: [0.5], draws: 3}, weightNoise: {relativeSigmas: [0.5], draws: 3}, activationQuantization: {bits: [2]}, batchSize: 32};
    const strip = (r: ReturnType<typeof evaluatePerturbations>) => ({...r, seconds: 0});
    const a = strip(evaluatePerturbations(model, x, y, {...o, seed: 1}));
    const b = strip(evaluatePerturbations(model, x, y, {...o, seed: 1}));
    const c = strip(evaluatePerturbations(model, x, y, {...o, seed: 2}));
    tf.dispose([x, y]);
    assert.deepEqual(a, b);
    assert.notDeepEqual(a.activationNoise!.points, c.activationNoise!.points);
    assert.notDeepEqual(a.weightNoise!.points, c.weightNoise!.points);
    assert.deepEqual(a.activationQuantization, c.activationQuantization);
    // Common random numbers: a level's result does not depend on the other levels listed.
    const x2 = tf.tensor2d(mlpData(60));
    const y2 = oneHot(Array.from({length: 60}, (_, i) => i % 3), 3);
    const one = evaluatePerturbations(model, x2, y2, {...o, activationNoise: {relativeSigmas: [0.1, 0.5], draws: 3}, weightNoise: {relativeSigmas: [0.5, 0.05], draws: 3}, seed: 1});
    tf.dispose([x2, y2]);
    assert.deepEqual(one.activationNoise!.points[1], a.activationNoise!.points[0]);
    assert.deepEqual(one.weightNoise!.points[0], a.weightNoise!.points[0]);
  });

  it('defaults, switched-off parts and the result shape', () => {
    const model = mlp();
    const x = tf.tensor2d(mlpData(20));
    const y = oneHot(Array.from({length: 20}, (_, i) => i % 3), 3);
    const r = evaluatePerturbations(model, x, y, {activationNoise: {draws: 1}, weightNoise: {draws: 1}});
    const off = evaluatePerturbations(model, x, y, {activationNoise: false, activationQuantization: false, weightNoise: false});
    tf.dispose([x, y]);
    assert.equal(r.examples, 20);
    assert.deepEqual(r.activationNoise!.points.map((p) => p.relativeSigma), [0.1, 0.25, 0.5]);
    assert.deepEqual(r.activationQuantization!.points.map((p) => p.bits), [8, 4]);
    assert.deepEqual(r.weightNoise!.points.map((p) => p.relativeSigma), [0.05, 0.1, 0.2]);
    assert.equal(JSON.parse(JSON.stringify(r)).activationNoise.points.length, 3);
    assert.deepEqual([off.activationNoise, off.activationQuantization, off.weightNoise], [null, null, null]);
    assert.equal(off.cleanAccuracy, r.cleanAccuracy);
  });

  it('refuses unknown and invalid options with errors naming them', () => {
    const model = mlp();
    const x = tf.tensor2d(mlpData(4));
    const y = oneHot([0, 1, 2, 0], 3);
    const tensors = tf.memory().numTensors;
    const cases: [unknown, RegExp][] = [
      [{batchsize: 4}, /evaluatePerturbations: unknown option 'batchsize' \(did you mean 'batchSize'\?\)/],
      [{weightNoise: {sigmas: [0.1]}}, /evaluatePerturbations: options\.weightNoise: unknown option 'sigmas'/],
      [{activationQuantization: {bit: [8]}}, /options\.activationQuantization: unknown option 'bit' \(did you mean 'bits'\?\)/],
      [{activationQuantization: {bits: [0]}}, /options\.activationQuantization\.bits must hold integers from 1 to 16; got 0/],
      [{activationNoise: {draws: 0}}, /options\.activationNoise\.draws must be an integer >= 1; got 0/],
      [{activationNoise: {relativeSigmas: [-0.1]}}, /options\.activationNoise\.relativeSigmas must hold finite numbers >= 0; got -0\.1/],
      [{weightNoise: 'yes'}, /options\.weightNoise must be true, false or an object/],
      [{batchSize: 0}, /options\.batchSize must be an integer >= 1/],
      [[1, 2], /evaluatePerturbations: options must be an object/],
    ];
    for (const [opts, re] of cases) {
      assert.throws(() => evaluatePerturbations(model, x, y, opts as never), re);
    }
    const y3 = tf.zeros([3, 3]);
    assert.throws(() => evaluatePerturbations(model, x, y3, {}), /evaluatePerturbations: .*batch size/);
    tf.dispose(y3);
    assert.equal(tf.memory().numTensors, tensors);
    const reg = tfl.sequential({layers: [tfl.layers.dense({units: 2, inputShape: [4]}), tfl.layers.dense({units: 1})]});
    reg.compile({optimizer: 'sgd', loss: 'meanSquaredError'});
    const yr = tf.zeros([4, 1]);
    const withReg = tf.memory().numTensors;
    assert.throws(() => evaluatePerturbations(reg, x, yr, {}), /output\(s\) 'dense_Dense\d+' of model '.*' have a regression loss/);
    assert.equal(tf.memory().numTensors, withReg);
    tf.dispose([x, y, yr]);
  });

  it('a small CNN (conv → pool sites of rank 4): every part runs, σ_rel = 0 is clean, 16-bit quantisation keeps the predictions', () => {
    const model = tfl.sequential({
      layers: [
        tfl.layers.conv2d({inputShape: [8, 8, 1], filters: 3, kernelSize: 3, activation: 'relu', kernelInitializer: tfl.initializers.glorotUniform({seed: 1})}),
        tfl.layers.maxPooling2d({poolSize: 2}),
        tfl.layers.flatten(),
        tfl.layers.dense({units: 4, activation: 'softmax', kernelInitializer: tfl.initializers.glorotUniform({seed: 2})}),
      ],
    });
    model.compile({optimizer: 'sgd', loss: 'categoricalCrossentropy'});
    const x = tf.tensor4d(rand(24 * 64, 9, 0, 1), [24, 8, 8, 1]);
    const pred = model.predict(x) as tf.Tensor;
    const y = tf.tidy(() => tf.cast(tf.oneHot(tf.argMax(pred, -1) as tf.Tensor1D, 4), 'float32'));
    pred.dispose();
    const tensors = tf.memory().numTensors;
    const r = evaluatePerturbations(model, x, y, {activationNoise: {relativeSigmas: [0, 1], draws: 2}, activationQuantization: {bits: [16, 1]}, weightNoise: {relativeSigmas: [0], draws: 1}, batchSize: 10});
    assert.equal(tf.memory().numTensors, tensors);
    tf.dispose([x, y]);
    assert.equal(r.cleanAccuracy, 1);
    assert.deepEqual(r.activationNoise!.sites.map((s) => s.name.split('_')[0]), ['max']); // after the pool (conv → pool is one block)
    assert.equal(r.activationNoise!.points[0].accuracy, 1);
    assert.equal(r.activationQuantization!.points[0].accuracy, 1);
    assert.ok(r.activationQuantization!.points[1].accuracy < 1, '1-bit activations should change some prediction');
    assert.equal(r.weightNoise!.points[0].accuracy, 1);
    assert.deepEqual(r.weightNoise!.tensors.map((t) => t.name.split('/')[1]), ['kernel', 'bias', 'kernel', 'bias']);
  });

  it('a token model (Embedding) and a two-output model: hidden sites after the embedding, embeddings not weight-perturbed, every output scored', () => {
    const tokens = tfl.input({shape: [5], dtype: 'int32'});
    const e = tfl.layers.embedding({inputDim: 20, outputDim: 4, inputLength: 5, embeddingsInitializer: tfl.initializers.randomUniform({minval: -1, maxval: 1, seed: 3})}).apply(tokens) as tfl.SymbolicTensor;
    const pooled = tfl.layers.globalAveragePooling1d({name: 'pool'}).apply(e) as tfl.SymbolicTensor;
    const h = tfl.layers.dense({units: 6, activation: 'relu', name: 'h', kernelInitializer: tfl.initializers.glorotUniform({seed: 4})}).apply(pooled) as tfl.SymbolicTensor;
    const outA = tfl.layers.dense({units: 3, activation: 'softmax', name: 'a', kernelInitializer: tfl.initializers.glorotUniform({seed: 5})}).apply(h) as tfl.SymbolicTensor;
    const outB = tfl.layers.dense({units: 2, activation: 'softmax', name: 'b', kernelInitializer: tfl.initializers.glorotUniform({seed: 6})}).apply(h) as tfl.SymbolicTensor;
    const model = tfl.model({inputs: tokens, outputs: [outA, outB]});
    const n = 30;
    const x = tf.tensor2d(rand(n * 5, 13, 0, 20).map(Math.floor), [n, 5], 'int32');
    const [pa, pb] = model.predict(x) as tf.Tensor[];
    const la = Array.from(tf.argMax(pa, -1).dataSync());
    const lb = Array.from(tf.argMax(pb, -1).dataSync());
    tf.dispose([pa, pb]);
    // Output a: labels as predicted; output b: labels flipped on the first 10 examples → clean accuracy 20/30.
    const ya = oneHot(la, 3);
    const yb = oneHot(lb.map((v, i) => (i < 10 ? 1 - v : v)), 2);
    const tensors = tf.memory().numTensors;
    const r = evaluatePerturbations(model, x, [ya, yb], {activationNoise: {relativeSigmas: [0, 0.5], draws: 2}, activationQuantization: {bits: [16]}, weightNoise: {relativeSigmas: [0], draws: 1}, batchSize: 8});
    assert.equal(tf.memory().numTensors, tensors);
    tf.dispose([x, ya, yb]);
    assert.equal(r.cleanAccuracy, 20 / 30);
    assert.deepEqual(r.activationNoise!.sites.map((s) => s.name), ['pool_disturbance', 'h_disturbance']);
    assert.equal(r.activationNoise!.points[0].accuracy, 20 / 30);
    assert.equal(r.activationQuantization!.points[0].accuracy, 20 / 30);
    assert.deepEqual(r.weightNoise!.tensors.map((t) => t.name), ['h/kernel', 'h/bias', 'a/kernel', 'a/bias', 'b/kernel', 'b/bias']);
  });

  it('leaks no tensor, over repeated calls and on errors thrown in every stage', () => {
    const model = mlp();
    const x = tf.tensor2d(mlpData(30));
    const y = oneHot(Array.from({length: 30}, (_, i) => i % 3), 3);
    const o = {activationNoise: {relativeSigmas: [0.2], draws: 2}, weightNoise: {relativeSigmas: [0.2], draws: 2}, activationQuantization: {bits: [4]}, batchSize: 16};
    evaluatePerturbations(model, x, y, o); // warm-up (lazily created tensors of the backend)
    const tensors = tf.memory().numTensors;
    evaluatePerturbations(model, x, y, o);
    evaluatePerturbations(instrument(model), x, y, o);
    assert.equal(tf.memory().numTensors, tensors);
    for (const stage of ['clean', 'activation-noise', 'activation-quantization', 'weight-noise']) {
      assert.throws(
        () =>
          evaluatePerturbations(model, x, y, {
            ...o,
            onProgress: (p) => {
              if (p.stage === stage) throw new Error(`stop in ${stage}`);
            },
          }),
        new RegExp(`stop in ${stage}`),
      );
      assert.equal(tf.memory().numTensors, tensors, `leak after an error in stage ${stage}`);
    }
    tf.dispose([x, y]);
  });
});
