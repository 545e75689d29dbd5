/**
 * The fused penalty kernel of one deep-attack evaluation on wasm, working tree against the
 * package's source at a git ref (not a test):
 *
 *   npx tsx bench/penalty_kernel_ab.ts --baseline <git ref>
 *
 * On the bench:train shapes (batch 128; an L∞ + box input layer of 784 and two quadratic hidden
 * layers of 256; disturbances partly outside the ball, MNIST digits as the layer input), with the
 * fused search directions as the deep attack requests them: `new (stats)` = the kernel with the
 * solver's read-back [J, finiteness, ‖g‖²] and its read-back; `old + rowStats` = the ref's kernel,
 * then the row-stats kernel and the read-back (what an iteration did at the ref); and both kernels
 * alone. Interleaved calls, process-CPU medians.
 */
import * as tf from '@tensorflow/tfjs-core';
import {selectBackend} from '../src/backend.js';
import {loadMnist} from '../src/data/mnist.js';
import * as P from '../src/objective/penalties.js';
import {rowStatsKernel, rowKernelsAvailable} from '../src/kernels/rows.js';
import {extractBaseline} from './baseline.js';
import {parseArgs} from 'node:util';
const {values: args} = parseArgs({options: {baseline: {type: 'string'}}});
if (!args.baseline) throw new Error('--baseline <git ref> is required');
const {dir, commit} = extractBaseline(String(args.baseline));
const O = await import(`${dir}/src/objective/penalties.ts`) as typeof P;
await selectBackend({backend: 'wasm', quiet: true});
rowKernelsAvailable();
const B = 128;
const data = await loadMnist({split: 'train', limit: B});
const penalties: P.PenaltyConfig[] = [{kind: 'linf', epsilon: 0.1, box: [0, 1]}, {kind: 'quadratic', lambda: 10}, {kind: 'quadratic', lambda: 10}];
const bases = [data.xs, undefined, undefined];
const ds = [tf.randomUniform([B, 784], -0.15, 0.15, 'float32', 1), tf.randomUniform([B, 256], -0.01, 0.01, 'float32', 2), tf.randomUniform([B, 256], -0.01, 0.01, 'float32', 3)];
const gt = [tf.randomUniform([B, 784], -1, 1, 'float32', 4), tf.randomUniform([B, 256], -1, 1, 'float32', 5), tf.randomUniform([B, 256], -1, 1, 'float32', 6)];
const c = tf.randomUniform([B], 0, 3, 'float32', 7) as tf.Tensor1D;
const dn = penalties.map((p, i) => P.linearisedDirection(p, bases[i]));
const dOld = penalties.map((p, i) => O.linearisedDirection(p, bases[i]));
const cases: [string, () => void][] = [
  ['new (stats)', () => { const r = P.penaltyTermsFused(c, penalties, ds, bases, gt, dn, {stats: true})!; r.stats!.dataSync(); }],
  ['old + rowStats', () => { const r = O.penaltyTermsFused(c, penalties, ds, bases, gt, dOld)!; tf.concat([r.value, rowStatsKernel(r.grads, [r.value, ...ds])]).dataSync(); }],
  ['new no stats', () => { P.penaltyTermsFused(c, penalties, ds, bases, gt, dn); }],
  ['old only', () => { O.penaltyTermsFused(c, penalties, ds, bases, gt, dOld); }],
];
const t: Record<string, number[]> = Object.fromEntries(cases.map(([n]) => [n, []]));
for (let i = 0; i < 300; i++) for (const [n, fn] of cases) { const c0 = process.cpuUsage(); tf.tidy(fn); const c1 = process.cpuUsage(c0); if (i > 20) t[n].push((c1.user + c1.system) / 1000); }
const med = (a: number[]) => [...a].sort((p, q) => p - q)[a.length >> 1];
console.log(`wasm, batch ${B}, layers 784 (L∞ + box) and 2 × 256 (quadratic λ = 10); old = ${commit}; process CPU ms per call (median of 280)`);
for (const n of Object.keys(t)) console.log(n.padEnd(16), med(t[n]).toFixed(3), 'ms');
