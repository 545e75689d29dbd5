/**
 * Where a deep-attack evaluation's time goes, next to PGD's (not a test):
 *
 *   npx tsx bench/deep_cost.ts [--backend wasm] [--rounds 12] [--reps 20] [--hidden 256] [--batch 128]
 *
 * MNIST MLP 784-H-H-10 (H = `--hidden`), batch `--batch`, the bench:train threat (input L∞ 0.1 + box [0, 1], hidden
 * quadratic λ = 10). Times, in PROCESS CPU ms (less sensitive than wall time to other processes on
 * a shared machine), the median over `rounds` interleaved rounds of `reps` calls each:
 * - one gradient evaluation of the deep objective as the solver runs it (eq. 9: forward + backward,
 *   penalties included; on wasm the fused kernel also gives each layer's search direction and the
 *   read-back [J, finiteness, ‖g‖²], read back here) vs PGD's input gradient of the same network;
 * - the solver's per-iteration bookkeeping pieces: the search direction of every layer computed
 *   apart (the path without the fused kernel), the step x + αD, the row selects of accepted points;
 * - one whole attack, deep (10 evaluations) vs PGD-10, and deep with 1 evaluation (its set-up, the
 *   start evaluation and the result: (T10 − T1)/9 is the cost of one solver iteration);
 * single kernels on a 128×784 tensor (some are scalar loops on wasm, 10–30× an Add);
 * and the number of kernels of each attack (`tf.profile`).
 */
import * as tf from '@tensorflow/tfjs-core';
import {parseArgs} from 'node:util';
import {selectBackend} from '../src/backend.js';
import {loadMnist} from '../src/data/mnist.js';
import {instrument, disturbanceSites} from '../src/model/instrument.js';
import {disturbanceObjective} from '../src/objective/neuron_space.js';
import {attackLoss, perExampleLoss} from '../src/objective/loss.js';
import {axpy, evaluate, rowSelector, select} from '../src/solvers/batched.js';
import {linearisedDirection, type PenaltyExcess} from '../src/objective/penalties.js';
import {rowKernelsAvailable, rowStatsKernel} from '../src/kernels/rows.js';
import {deepAttack} from '../src/attacks/deep.js';
import {pgdAttackWithInfo} from '../src/attacks/pgd.js';
import {BENCH_THREAT, benchMlp} from './mlp.js';

const {values: args} = parseArgs({options: {backend: {type: 'string', default: 'wasm'}, rounds: {type: 'string', default: '12'}, reps: {type: 'string', default: '20'}, hidden: {type: 'string', default: '256'}, batch: {type: 'string', default: '128'}}});
const sel = await selectBackend({backend: args.backend as 'wasm', quiet: true});
const B = Number(args.batch);
const H = Number(args.hidden);
rowKernelsAvailable(); // registers the fused row kernels on this backend
const data = await loadMnist({split: 'train', limit: B});
const base = benchMlp(H);
base.compile({optimizer: 'adam', loss: 'categoricalCrossentropy'});
const net = instrument(benchMlp(H), BENCH_THREAT as never);
net.compile({optimizer: 'adam', loss: 'categoricalCrossentropy'});
const layers = disturbanceSites(net).map((s) => s.layer);
const penalties = layers.map((l) => l.penalty);
const bases = [data.xs, undefined, undefined];
const excess = new Map<tf.Tensor, PenaltyExcess>();
const ds = [tf.randomUniform([B, 784], -0.05, 0.05, 'float32', 1), tf.randomUniform([B, H], -0.01, 0.01, 'float32', 2), tf.randomUniform([B, H], -0.01, 0.01, 'float32', 3)];
const dirs = penalties.map((p, i) => linearisedDirection(p, bases[i]));
// as the deep attack builds it: with the directions the fused evaluation computes (wasm)
const computed = new Map<tf.Tensor, tf.Tensor>();
const f = disturbanceObjective(net, layers, data.xs, data.ys, attackLoss(net), penalties, bases, excess, {directions: dirs, out: computed});
const e = tf.tidy(() => evaluate(f, ds, B));
const e2 = evaluate(f, ds, B); // its excesses stay alive (not in a tidy) for the direction below
const D0 = tf.tidy(() => ds.map((d, i) => dirs[i].direction(e.grads[i], d)));
const fin = tf.tensor1d(new Uint8Array(B).fill(1), 'bool');
const active = tf.ones([B], 'bool') as tf.Tensor1D;
const alpha = tf.ones([B]) as tf.Tensor1D;
const lossFn = perExampleLoss(base);
const pgdGrad = tf.grad((x: tf.Tensor) => tf.sum(lossFn(data.ys, base.apply(x, {training: false}) as tf.Tensor)));
const runDeep = () => {
  const r = deepAttack(net, data.xs, data.ys, {maxGradientEvaluations: 10, seed: 1});
  tf.dispose([r.objective, ...r.disturbances]);
};
const runPgd = () => {
  const r = pgdAttackWithInfo(base, data.xs as tf.Tensor2D, data.ys, {epsilon: 0.1, steps: 10, clip: [0, 1], seed: 1});
  tf.dispose([r.adversarial, r.loss].filter((t): t is tf.Tensor => t != null));
};
const cases: [string, () => void, number][] = [
  ['deep: one evaluation + read-back', () => {
    const r = evaluate(f, ds, B, true);
    void (r.stats ?? tf.concat([r.value, rowStatsKernel(r.grads, [r.value, ...ds])])).dataSync();
  }, 1],
  ['PGD: one input gradient', () => void pgdGrad(data.xs), 1],
  ['deep: search direction apart, all layers', () => void ds.map((d, i) => dirs[i].direction(e2.grads[i], d, excess.get(d))), 1],
  ['deep: step x + αD', () => void axpy(ds, select(active, alpha, tf.zerosLike(alpha)) as tf.Tensor1D, D0), 1],
  ['deep: row selects of x and D', () => {
    const s = rowSelector(fin, ds);
    s(ds, D0);
    s(D0, ds);
  }, 1],
  ['PGD: sign-and-clip step', () => void tf.clipByValue(tf.add(data.xs, tf.mul(0.01, tf.sign(e.grads[0]))), 0, 1), 1],
  // single kernels on one 128×784 tensor: which ones the per-evaluation code must avoid on wasm
  ...((): [string, () => void, number][] => {
    const a = ds[0];
    const b = e.grads[0];
    const m = tf.greater(b, 0);
    return [
      [`kernel ${B}×784: Add`, () => void tf.add(a, b), 1],
      [`kernel ${B}×784: ClipByValue`, () => void tf.clipByValue(a, -0.1, 0.1), 1],
      [`kernel ${B}×784: Relu`, () => void tf.relu(a), 1],
      [`kernel ${B}×784: Step`, () => void tf.step(a), 1],
      [`kernel ${B}×784: Minimum`, () => void tf.minimum(a, b), 1],
      [`kernel ${B}×784: Greater`, () => void tf.greater(a, b), 1],
      [`kernel ${B}×784: Sign`, () => void tf.sign(a), 1],
      [`kernel ${B}×784: Select`, () => void tf.engine().runKernel('Select', {condition: m, t: a, e: b}), 1],
    ];
  })(),
  ['deep attack, 1 evaluation (set-up + start)', () => {
    const r = deepAttack(net, data.xs, data.ys, {maxGradientEvaluations: 1, seed: 1});
    tf.dispose([r.objective, ...r.disturbances]);
  }, 0.2],
  ['deep attack, 10 evaluations', runDeep, 0.05],
  ['PGD-10 attack', runPgd, 0.05],
];
const cpu = new Map<string, number[]>();
const rounds = Number(args.rounds);
const reps = Number(args.reps);
for (let r = 0; r < rounds + 2; r++) {
  for (const [name, fn, w] of cases) {
    const n = Math.max(1, Math.round(reps * w));
    const c0 = process.cpuUsage();
    for (let i = 0; i < n; i++) tf.tidy(fn);
    const c = process.cpuUsage(c0);
    if (r >= 2) cpu.set(name, [...(cpu.get(name) ?? []), (c.user + c.system) / 1000 / n]); // 2 warm-up rounds
  }
}
const med = (a: number[]) => [...a].sort((x, y) => x - y)[a.length >> 1];
console.log(`\nprocess CPU ms per call (${sel.name}, MNIST MLP 784-${H}-${H}-10, batch ${B}; median of ${rounds} interleaved rounds, min–max)\n`);
for (const [name, a] of cpu) console.log(`${name.padEnd(42)} ${med(a).toFixed(2).padStart(8)}  (${Math.min(...a).toFixed(2)}–${Math.max(...a).toFixed(2)})`);
for (const [name, fn] of [['deep attack, 10 evaluations', runDeep], ['PGD-10 attack', runPgd]] as const) {
  const p = await tf.profile(fn);
  console.log(`${name}: ${p.kernels.length} kernels`);
}
const d = med(cpu.get('deep attack, 10 evaluations')!);
const g = med(cpu.get('PGD-10 attack')!);
const d1 = med(cpu.get('deep attack, 1 evaluation (set-up + start)')!);
console.log(`attack deep/PGD (CPU medians): ${(d / g).toFixed(2)}; one deep solver iteration ≈ (T10 − T1)/9 = ${((d - d1) / 9).toFixed(2)} ms, PGD step ≈ T/10 = ${(g / 10).toFixed(2)} ms`);
