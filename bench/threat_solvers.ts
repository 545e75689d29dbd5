/**
 * How much the deep-threat accuracy of a trained model depends on the deep attack's solver (issue 9
 * → issue 13): the deep threat of `eval` (input L∞ ε with box [0, 1], projected, + every hidden
 * Disturbance layer quadratic λ = 1; `maxIterations` 20, as the experiment's `eval --deep-iterations
 * 20`) re-run on the same test digits with the solver of the experiment runs (zero start, saturated
 * first step, `anneal: {after: 3, minRemaining: 0}`) and with the current default, side by side.
 * The first column should reproduce the run's recorded deep-threat accuracy (its eval.json): that
 * checks the replica; the second says how the reported figure moves with the stronger solver.
 *
 *   npx tsx bench/threat_solvers.ts RUN_DIR... [--limit 1000] [--batch 250] [--epsilon 0.1] [--backend wasm]
 *
 * A model saved with its own Disturbance layers (deep AT) is attacked as it is, its first site
 * (the input) with the L∞ ball and the others with the quadratic penalty, as `eval` does.
 *
 * RUN_DIR is a `train` run directory (with model/ and eval.json), e.g. docs/results/runs/cnn-0.1/pgd/s1
 * (the model itself is not in docs/: point at the experiment's output directory).
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import {existsSync, readFileSync} from 'node:fs';
import {join} from 'node:path';
import {parseArgs} from 'node:util';
import {deepAttack, disturbanceLayers, instrument, predictDisturbed, type DeepAttackOptions, type PenaltyConfig} from '../src/index.js';
import {fileSystem, loadMnist, selectBackend} from '../src/node.js';

const {values: args, positionals: dirs} = parseArgs({
  allowPositionals: true,
  options: {
    limit: {type: 'string', default: '1000'},
    batch: {type: 'string', default: '250'},
    epsilon: {type: 'string', default: '0.1'},
    backend: {type: 'string', default: 'wasm'},
  },
});
if (dirs.length === 0) throw new Error('give one or more run directories (each with model/model.json)');
await selectBackend({backend: args.backend as 'wasm', quiet: true});
const limit = Number(args.limit);
const B = Number(args.batch);
const eps = Number(args.epsilon);
const test = await loadMnist({split: 'test', limit});

const SOLVERS: [string, DeepAttackOptions][] = [
  ['runs’ solver (zero start, saturated, after 3)', {init: 'zero', firstStep: 'saturated', anneal: {after: 3, minRemaining: 0}}],
  ['current default', {}],
];

/** The run's recorded deep-threat accuracy at ε (eval.json), if any. */
function recorded(dir: string): number | undefined {
  const f = join(dir, 'eval.json');
  if (!existsSync(f)) return undefined;
  const r = JSON.parse(readFileSync(f, 'utf8')) as {result: {attacks: {threat?: string; points: {epsilon: number; accuracy: number}[]}[]}};
  return r.result.attacks.find((a) => a.threat === 'deep')?.points.find((p) => Math.abs(p.epsilon - eps) < 1e-9)?.accuracy;
}

console.log(`deep threat: input L∞ ε = ${eps} + box [0, 1] (projected), hidden quadratic λ = 1, maxIterations 20; ${limit} test digits, batch ${B}, ${tf.getBackend()}\n`);
console.log(`| run | recorded (eval.json) | ${SOLVERS.map((s) => s[0]).join(' | ')} | change |`);
console.log(`|---|---|${SOLVERS.map(() => '---').join('|')}|---|`);
for (const dir of dirs) {
  const model = await tfl.loadLayersModel(fileSystem(join(dir, 'model')));
  const conv = model.inputs[0].shape.length === 4;
  const x = conv ? tf.reshape(test.xs, [limit, 28, 28, 1]) : test.xs;
  const input: PenaltyConfig = {kind: 'linf', epsilon: eps, box: [0, 1]};
  const hidden: PenaltyConfig = {kind: 'quadratic', lambda: 1};
  // a deep-AT model is saved with its Disturbance layers (input site first): attack it as it is, as
  // `eval` does, with the threat's penalties in place of its training ones; otherwise instrument it
  const own = disturbanceLayers(model).length > 0;
  const adv = own ? model : instrument(model, {input, hidden});
  const penalties = own ? (_l: unknown, i: number) => (i === 0 ? input : hidden) : undefined;
  adv.compile({optimizer: 'sgd', loss: 'categoricalCrossentropy'});
  const acc: number[] = [];
  for (const [, opts] of SOLVERS) {
    let correct = 0;
    for (let s = 0, k = 0; s < limit; s += B, k++) {
      const n = Math.min(B, limit - s);
      const xb = tf.slice(x, [s], [n]);
      const yb = tf.slice(test.ys, [s], [n]);
      const r = deepAttack(adv, xb, yb, {project: true, maxIterations: 20, seed: k, ...(penalties ? {penalties} : {}), ...opts});
      correct += tf.tidy(() => tf.sum(tf.cast(tf.equal(tf.argMax(predictDisturbed(adv, xb, r.disturbances), 1), tf.argMax(yb, 1)), 'int32')).dataSync()[0]);
      tf.dispose([xb, yb, r.objective, ...r.disturbances]);
    }
    acc.push(correct / limit);
  }
  const rec = recorded(dir);
  const pct = (v: number) => (100 * v).toFixed(1);
  console.log(`| ${dir} | ${rec === undefined ? '–' : pct(rec)} | ${acc.map(pct).join(' | ')} | ${(100 * (acc[1] - acc[0])).toFixed(1)} |`);
  if (x !== test.xs) x.dispose();
  model.dispose();
}
