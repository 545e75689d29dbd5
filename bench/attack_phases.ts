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
import {parseArgs} from 'node:util';
import {selectBackend} from '../src/backend.js';
import {deepAttackImpl} from '../src/attacks/deep.js';
import {pgdAttackWithInfo} from '../src/attacks/pgd.js';
import {trainedDeepMlp} from './mlp.js';
const {values: args} = parseArgs({options: {hidden: {type: 'string', default: '256'}, batch: {type: 'string', default: '128'}, pairs: {type: 'string', default: '60'}}});
await selectBackend({backend: 'wasm', quiet: true});
const B = Number(args.batch), H = Number(args.hidden);
const {base, net, x, y} = await trainedDeepMlp(H, B);
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

