/**
 * Is a speed change bit for bit? The deep attack of the working tree against the package's source
 * at a git ref, on the same trained weights, same batch and seed (not a test; a check to run before
 * landing a change that must not change results):
 *
 *   npx tsx bench/same_attack.ts --baseline <git ref> [--backends cpu,wasm] [--evals 10,20,40] [--batch 32]
 *
 * Model: MNIST MLP 784-128-128-10 (seeded Glorot initialisation) trained by plain `fit` for 2 epochs
 * on 512 images (so that the attack meets saturated examples, rejections and the annealed phase),
 * instrumented by each version with (a) the bench:train threat — input L∞ ε = 0.1 with box [0, 1],
 * hidden quadratic λ = 10 — and (b) the issue's all-quadratic threat (input and hidden λ = 1).
 * Attacks: the default (preconditioned, annealed), the monotone rule (`anneal: false`), PR+
 * (`conjugate: true`), the seed's neuron-space CG (`space: 'neuron'`) and the default with
 * `project: true`, each at every budget of `--evals`. Printed per case: max |ΔJ|, max |Δd| over
 * every layer, and whether every float32 of J and d has the same bits (NaN and −0 included).
 * Exit code 1 when any case differs. `src/` of the ref is extracted to scratch/baseline/<commit>/.
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import {extractBaseline} from './baseline.js';
import {parseArgs} from 'node:util';
import {selectBackend} from '../src/backend.js';
import {loadMnist} from '../src/data/mnist.js';
import {instrument} from '../src/model/instrument.js';
import {deepAttack} from '../src/attacks/deep.js';

const {values: args} = parseArgs({
  options: {
    baseline: {type: 'string'},
    backends: {type: 'string', default: 'cpu,wasm'},
    evals: {type: 'string', default: '10,20,40'},
    batch: {type: 'string', default: '32'},
  },
});
if (!args.baseline) throw new Error('--baseline <git ref> is required');

interface Lib {
  instrument: typeof instrument;
  deepAttack: typeof deepAttack;
}

async function loadBaseline(ref: string): Promise<{lib: Lib; commit: string}> {
  const {dir, commit} = extractBaseline(ref);
  const [inst, deep] = await Promise.all([import(`${dir}/src/model/instrument.ts`), import(`${dir}/src/attacks/deep.ts`)]);
  return {lib: {instrument: inst.instrument, deepAttack: deep.deepAttack}, commit};
}

const own: Lib = {instrument, deepAttack};
const base = await loadBaseline(String(args.baseline));
const B = Number(args.batch);
const budgets = String(args.evals).split(',').map(Number);
const threats = {
  'linf+quad10': {input: {kind: 'linf', epsilon: 0.1, box: [0, 1]}, hidden: {kind: 'quadratic', lambda: 10}},
  'all-quad1': {input: {kind: 'quadratic', lambda: 1}, hidden: {kind: 'quadratic', lambda: 1}},
} as const;
const variants: Record<string, object> = {
  default: {},
  monotone: {anneal: false},
  'PR+': {conjugate: true},
  'neuron CG': {space: 'neuron'},
  'default, project': {project: true},
};

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (d > m || Number.isNaN(d)) m = Number.isNaN(d) && !(Number.isNaN(a[i]) && Number.isNaN(b[i])) ? Infinity : Math.max(m, Number.isNaN(d) ? 0 : d);
  }
  return m;
}
function sameBits(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}

let differ = 0;
for (const backend of String(args.backends).split(',')) {
  await selectBackend({backend: backend as 'wasm', quiet: true});
  const data = await loadMnist({split: 'train', limit: 512});
  const model = tfl.sequential({
    layers: [
      tfl.layers.dense({inputShape: [784], units: 128, activation: 'relu', kernelInitializer: tfl.initializers.glorotUniform({seed: 1})}),
      tfl.layers.dense({units: 128, activation: 'relu', kernelInitializer: tfl.initializers.glorotUniform({seed: 2})}),
      tfl.layers.dense({units: 10, activation: 'softmax', kernelInitializer: tfl.initializers.glorotUniform({seed: 3})}),
    ],
  });
  model.compile({optimizer: tf.train.adam(1e-3), loss: 'categoricalCrossentropy'});
  await model.fit(data.xs, data.ys, {batchSize: 64, epochs: 2, shuffle: false, verbose: 0});
  const x = tf.slice(data.xs, [0, 0], [B, 784]);
  const y = tf.slice(data.ys, [0, 0], [B, 10]);
  console.log(`\n${backend} (tfjs backend '${tf.getBackend()}'), batch ${B}, working tree vs ${base.commit}`);
  for (const [tname, threat] of Object.entries(threats)) {
    const nets = [own, base.lib].map((lib) => {
      const net = lib.instrument(model, threat as never);
      net.compile({optimizer: 'adam', loss: 'categoricalCrossentropy'});
      return net;
    });
    for (const [vname, opts] of Object.entries(variants)) {
      for (const k of budgets) {
        const before = tf.memory().numTensors;
        const res = [own, base.lib].map((lib, i) => {
          const r = lib.deepAttack(nets[i], x, y, {...opts, maxGradientEvaluations: k, seed: 1});
          const out = {J: r.objective.dataSync() as Float32Array, d: r.disturbances.map((t) => t.dataSync() as Float32Array), evals: r.gradientEvaluations, it: r.iterations};
          tf.dispose([r.objective, ...r.disturbances]);
          return out;
        });
        const leaked = tf.memory().numTensors - before;
        const dJ = maxAbsDiff(res[0].J, res[1].J);
        const dd = res[0].d.map((d, i) => maxAbsDiff(d, res[1].d[i]));
        const same = sameBits(res[0].J, res[1].J) && res[0].d.every((d, i) => sameBits(d, res[1].d[i])) && res[0].evals === res[1].evals && res[0].it === res[1].it;
        if (!same || leaked !== 0) differ++;
        console.log(
          `${tname.padEnd(12)} ${vname.padEnd(17)} ${String(k).padStart(3)} evals: max|ΔJ| ${dJ.toExponential(2)}, max|Δd| ${Math.max(...dd).toExponential(2)}` +
            `, ${same ? 'bit-identical' : 'DIFFERENT'} (evals ${res[0].evals}/${res[1].evals}, iterations ${res[0].it}/${res[1].it})${leaked !== 0 ? `, ${leaked} tensors left` : ''}`,
        );
      }
    }
    // nets share the model's layers: nothing of the model to dispose
  }
  tf.dispose([x, y, data.xs, data.ys]);
}
console.log(differ === 0 ? '\nall cases bit-identical' : `\n${differ} case(s) differ`);
process.exit(differ === 0 ? 0 : 1);
