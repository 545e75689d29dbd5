/**
 * Set-up and per-iteration cost of the deep attack next to PGD's (not a test):
 *
 *   npx tsx bench/attack_phases.ts [--hidden 256] [--batch 128] [--pairs 60]
 *
 * The MLP 784-H-H-10 of bench:train after 40 deep-AT steps (as bench/attack_ab.ts), one batch;
 * deep attacks with 1 and 10 gradient evaluations and PGD with 1 and 10 steps (ε = 0.1, clip
 * [0, 1]) run back to back (order alternating) `pairs` times. Printed: process-CPU ms per attack
 * (median), the per-pair ratios deep-10/PGD-10 and deep-1/PGD-1 (set-up plus one evaluation; PGD-1
 * also computes its final loss), and per iteration (T10 − T1)/9 of each.
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import {parseArgs} from 'node:util';
import {selectBackend} from '../src/backend.js';
import {loadMnist} from '../src/data/mnist.js';
import {instrument} from '../src/model/instrument.js';
import {deepAttackImpl} from '../src/attacks/deep.js';
import {pgdAttackWithInfo} from '../src/attacks/pgd.js';
import {adversarialCallback} from '../src/training/callback.js';
const {values: args} = parseArgs({options: {hidden: {type: 'string', default: '256'}, batch: {type: 'string', default: '128'}, pairs: {type: 'string', default: '60'}}});
await selectBackend({backend: 'wasm', quiet: true});
const B = Number(args.batch), H = Number(args.hidden);
const data = await loadMnist({split: 'train', limit: B * 8});
const mlp = () => tfl.sequential({layers: [
  tfl.layers.dense({inputShape: [784], units: H, activation: 'relu', kernelInitializer: tfl.initializers.glorotUniform({seed: 1})}),
  tfl.layers.dense({units: H, activation: 'relu', kernelInitializer: tfl.initializers.glorotUniform({seed: 2})}),
  tfl.layers.dense({units: 10, activation: 'softmax', kernelInitializer: tfl.initializers.glorotUniform({seed: 3})}),
]});
const threat = {input: {kind: 'linf', epsilon: 0.1, box: [0, 1]}, hidden: {kind: 'quadratic', lambda: 10}} as const;
const base = mlp();
base.compile({optimizer: 'adam', loss: 'categoricalCrossentropy'});
const net = instrument(base, threat as never);
net.compile({optimizer: tf.train.adam(1e-3), loss: 'categoricalCrossentropy'});
const cb = adversarialCallback({method: 'deep', maxGradientEvaluations: 10, maxIterations: 50, seed: 1});
for (let e = 0; e < 5; e++) await net.fit(data.xs, data.ys, {batchSize: B, epochs: 1, shuffle: false, verbose: 0, callbacks: [cb]});
const x = tf.slice(data.xs, [B, 0], [B, 784]);
const y = tf.slice(data.ys, [B, 0], [B, 10]);
const deep = (k: number) => () => { const r = deepAttackImpl(net, x, y, {maxGradientEvaluations: k, maxIterations: 50, seed: 7}, {violation: false}); tf.dispose([r.objective, ...r.disturbances]); };
const pgd = (k: number) => () => { const r = pgdAttackWithInfo(base, x as tf.Tensor2D, y, {epsilon: 0.1, steps: k, clip: [0, 1], seed: 1}); tf.dispose([r.adversarial, r.loss]); };
const cases: [string, () => void][] = [['deep1', deep(1)], ['deep10', deep(10)], ['pgd1', pgd(1)], ['pgd10', pgd(10)]];
for (let i = 0; i < 3; i++) for (const [, f] of cases) f();
const t: Record<string, number[]> = Object.fromEntries(cases.map(([n]) => [n, []]));
for (let i = 0; i < Number(args.pairs); i++) {
  const order = i % 2 ? cases : [...cases].reverse();
  for (const [n, f] of order) { const c0 = process.cpuUsage(); f(); const c = process.cpuUsage(c0); t[n].push((c.user + c.system) / 1000); }
}
console.log(`wasm, MLP 784-${H}-${H}-10, batch ${B}, ${args.pairs} pairs; process CPU ms per attack (median)`);
const med = (a: number[]) => [...a].sort((p, q) => p - q)[a.length >> 1];
for (const n of Object.keys(t)) console.log(n, med(t[n]).toFixed(2));
const r = (a: string, b: string) => med(t[a].map((v, i) => v / t[b][i]));
console.log('deep10/pgd10', r('deep10', 'pgd10').toFixed(3), 'deep1/pgd1', r('deep1', 'pgd1').toFixed(3));
const it = (n: string) => med(t[`${n}10`].map((v, i) => (v - t[`${n}1`][i]) / 9));
console.log('per-iteration deep', it('deep').toFixed(2), 'pgd', it('pgd').toFixed(2));

