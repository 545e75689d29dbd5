/**
 * Training effect of the deep attack's solver (issue 9, item 3): short deep adversarial training
 * runs of the same MNIST MLP 784-128-128-10 from the same initial weights, same data order and the
 * SAME attack budget (`maxGradientEvaluations`), one per solver — the seed's neuron-space CG
 * (`space: 'neuron'`), the 0.1.0 default (zero start), the earlier default (random start,
 * saturated first step) and the current default; then clean accuracy and robust accuracy under
 * PGD-40 (L∞ ε = 0.1, box [0, 1], step 0.01, one random restart) on held-out test digits.
 *
 *   npx tsx bench/train_effect.ts [--train 4096] [--epochs 2] [--evals 10] [--test 1000] [--backend wasm]
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import {parseArgs} from 'node:util';
import {performance} from 'node:perf_hooks';
import {adversarialCallback, instrument, pgdAttack, type DeepAttackOptions} from '../src/index.js';
import {loadMnist, selectBackend} from '../src/node.js';

const {values: args} = parseArgs({
  options: {
    train: {type: 'string', default: '4096'},
    epochs: {type: 'string', default: '2'},
    evals: {type: 'string', default: '10'},
    test: {type: 'string', default: '1000'},
    backend: {type: 'string', default: 'wasm'},
  },
});
await selectBackend({backend: args.backend as 'wasm', quiet: true});
const nTrain = Number(args.train);
const nTest = Number(args.test);
const budget = Number(args.evals);
const train = await loadMnist({split: 'train', limit: nTrain});
const test = await loadMnist({split: 'test', limit: nTest});

function build(): tfl.LayersModel {
  const init = (k: number) => tfl.initializers.glorotUniform({seed: 2000 + k});
  return tfl.sequential({layers: [
    tfl.layers.dense({inputShape: [784], units: 128, activation: 'relu', kernelInitializer: init(1)}),
    tfl.layers.dense({units: 128, activation: 'relu', kernelInitializer: init(2)}),
    tfl.layers.dense({units: 10, activation: 'softmax', kernelInitializer: init(3)}),
  ]});
}
function accuracy(model: tfl.LayersModel, x: tf.Tensor): number {
  return tf.tidy(() => tf.mean(tf.cast(tf.equal(tf.argMax(model.predict(x) as tf.Tensor, 1), tf.argMax(test.ys, 1)), 'float32')).dataSync()[0]);
}

const rows: string[] = [];
for (const [name, opts] of [
  ['old default: neuron-space CG', {space: 'neuron'}],
  ['0.1.0 default: disturbance-space preconditioned, zero start', {init: 'zero', firstStep: 'saturated', anneal: {minRemaining: 0, after: 3}}],
  ['earlier default: random start, saturated first step', {firstStep: 'saturated'}],
  ['default: disturbance-space preconditioned, random start (unit first step with this L∞ threat)', {}],
] as [string, Omit<DeepAttackOptions, 'loss'>][]) {
  const base = build();
  base.compile({optimizer: tf.train.adam(1e-3), loss: 'categoricalCrossentropy', metrics: ['accuracy']});
  const adv = instrument(base, {input: {kind: 'linf', epsilon: 0.1, box: [0, 1]}, hidden: {kind: 'quadratic', lambda: 1}});
  const t0 = performance.now();
  const objectives: number[] = [];
  await adv.fit(train.xs, train.ys, {
    epochs: Number(args.epochs),
    batchSize: 128,
    shuffle: false,
    verbose: 0,
    callbacks: [
      adversarialCallback({method: 'deep', ...opts, maxGradientEvaluations: budget, seed: 1}),
      new tfl.CustomCallback({onBatchEnd: async (_b: number, logs?: Record<string, unknown>) => void objectives.push(Number(logs?.adv_objective))}),
    ],
  });
  const secs = (performance.now() - t0) / 1000;
  const clean = accuracy(base, test.xs);
  const xAdv = pgdAttack(base, test.xs, test.ys, {epsilon: 0.1, steps: 40, stepSize: 0.01, clip: [0, 1], seed: 3});
  const robust = accuracy(base, xAdv);
  xAdv.dispose();
  const meanObj = objectives.slice(-10).reduce((s, v) => s + v, 0) / Math.min(10, objectives.length);
  rows.push(`| ${name} | ${budget} | ${(100 * clean).toFixed(1)} | ${(100 * robust).toFixed(1)} | ${meanObj.toFixed(2)} | ${secs.toFixed(0)} |`);
  console.log(rows[rows.length - 1]);
}
console.log(`\nDeep AT of an MNIST MLP 784-128-128-10, ${nTrain} training images × ${args.epochs} epochs, batch 128, Adam 1e-3, input L∞ 0.1 + box [0, 1] (λ = 100), hidden quadratic λ = 1; evaluated on ${nTest} held-out test digits:\n`);
console.log('| attack solver in training | grad. evals / step | clean acc. % | PGD-40 acc. % (ε = 0.1) | attack objective, last 10 steps | train s |');
console.log('|---|---|---|---|---|---|');
for (const r of rows) console.log(r);
