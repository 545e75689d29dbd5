/**
 * Whole attacks side by side, call by call (not a test): the deep attack of the working tree, the
 * same deep attack by the package's source at a git ref, and PGD-10 (the bench:train PGD, ε = 0.1,
 * clip [0, 1]), on one batch of 128 MNIST digits, on the wasm MLP 784-256-256-10 of bench:train after 40
 * steps of deep adversarial training (so that the attack anneals, rejects and saturates as in
 * training), 10 gradient evaluations each:
 *
 *   npx tsx bench/attack_ab.ts --baseline <git ref> [--pairs 200]
 *
 * Each pair runs the three attacks back to back (order alternating), so neighbouring calls see the
 * same load from other processes; printed: process-CPU ms per attack (median, 25th percentile,
 * min) and the per-pair ratios new/old, new/PGD, old/PGD (median and interquartile range), the
 * ratio of the sums and of the 25th percentiles. First, a check that new and old give the same
 * attack on that batch (max |ΔJ|, max |Δd| per layer, bit-identical or not). `src/` of the ref is extracted to
 * scratch/baseline/<commit>/ (as bench:train --baseline does).
 */
import * as tf from '@tensorflow/tfjs-core';
import {extractBaseline} from './baseline.js';
import {BENCH_THREAT, trainedDeepMlp} from './mlp.js';
import {selectBackend} from '../src/backend.js';
import {instrument} from '../src/model/instrument.js';
import {deepAttackImpl} from '../src/attacks/deep.js';
import {pgdAttackWithInfo} from '../src/attacks/pgd.js';
import {parseArgs} from 'node:util';
const {values: args} = parseArgs({options: {baseline: {type: 'string'}, pairs: {type: 'string', default: '200'}}});
if (!args.baseline) throw new Error('--baseline <git ref> is required');
const ref = String(args.baseline);
const pairs = Number(args.pairs);
const {dir, commit} = extractBaseline(ref);
const baseDeep = (await import(`${dir}/src/attacks/deep.ts`)).deepAttackImpl as typeof deepAttackImpl;
const baseInst = (await import(`${dir}/src/model/instrument.ts`)).instrument as typeof instrument;
await selectBackend({backend: 'wasm', quiet: true});
const B = 128;
const {base, net, x, y} = await trainedDeepMlp(256, B);
const netB = baseInst(base, BENCH_THREAT as never);
netB.compile({optimizer: 'adam', loss: 'categoricalCrossentropy'});
const opts = {maxGradientEvaluations: 10, maxIterations: 50, seed: 7};
const cases: [string, () => void][] = [
  ['new', () => { const r = deepAttackImpl(net, x, y, opts, {violation: false}); tf.dispose([r.objective, ...r.disturbances]); }],
  ['old', () => { const r = baseDeep(netB, x, y, opts, {violation: false}); tf.dispose([r.objective, ...r.disturbances]); }],
  ['pgd', () => { const r = pgdAttackWithInfo(base, x as tf.Tensor2D, y, {epsilon: 0.1, steps: 10, clip: [0, 1], seed: 1}); tf.dispose([r.adversarial, r.loss]); }],
];
// same attack: new and old on this batch (the trained net anneals, rejects and saturates), bit for bit
{
  const a = deepAttackImpl(net, x, y, opts, {violation: false});
  const b = baseDeep(netB, x, y, opts, {violation: false});
  const diff = (p: tf.Tensor, q: tf.Tensor) => { const u = p.dataSync(); const v = q.dataSync(); let m = 0; let bits = true; u.forEach((w, i) => { m = Math.max(m, Math.abs(w - v[i])); bits &&= Object.is(w, v[i]); }); return {m, bits}; };
  const dj = diff(a.objective, b.objective);
  const dd = a.disturbances.map((d, i) => diff(d, b.disturbances[i]));
  console.log(`same attack (new vs old, this batch): max|ΔJ| ${dj.m.toExponential(2)}, max|Δd| per layer ${dd.map((r) => r.m.toExponential(2)).join(', ')}, ${dj.bits && dd.every((r) => r.bits) ? 'bit-identical' : 'NOT bit-identical'}`);
  tf.dispose([a.objective, ...a.disturbances, b.objective, ...b.disturbances]);
}
for (let i = 0; i < 3; i++) for (const [, f] of cases) f();
const t: Record<string, number[]> = {new: [], old: [], pgd: []};
for (let i = 0; i < pairs; i++) {
  const order = i % 2 ? cases : [...cases].reverse();
  for (const [n, f] of order) { const c0 = process.cpuUsage(); f(); const c = process.cpuUsage(c0); t[n].push((c.user + c.system) / 1000); }
}
const med = (a: number[]) => { const s = [...a].sort((p, q) => p - q); return s[s.length >> 1]; };
const q = (a: number[], f: number) => { const s = [...a].sort((p, q) => p - q); return s[Math.floor(f * (s.length - 1))]; };
const ratio = (a: string, b: string) => t[a].map((v, i) => v / t[b][i]);
for (const n of Object.keys(t)) console.log(n, 'median', med(t[n]).toFixed(2), 'ms, p25', q(t[n], 0.25).toFixed(2), 'min', Math.min(...t[n]).toFixed(2));
console.log(`\nwasm, batch ${B}, ${pairs} pairs; new = working tree, old = ${commit}; process CPU ms per attack`);
for (const [a, b] of [['new', 'old'], ['new', 'pgd'], ['old', 'pgd']]) { const r = ratio(a, b); console.log(`${a}/${b}: median ${med(r).toFixed(3)} (IQR ${q(r, 0.25).toFixed(3)}–${q(r, 0.75).toFixed(3)}), ratio of sums ${(t[a].reduce((p, v) => p + v) / t[b].reduce((p, v) => p + v)).toFixed(3)}, ratio of p25 ${(q(t[a], 0.25) / q(t[b], 0.25)).toFixed(3)}`); }
