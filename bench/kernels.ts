/**
 * Benchmark of the wasm training kernels (`registerWasmKernels`, src/kernels) — not a test.
 *
 *   npm run bench:kernels [-- --rounds 5 --models small,madry,mlp --batch 64 --cpu-madry-batch 8 --warmup 1]
 *
 * Time of one training step (forward + backward + Adam update, `optimizer.minimize`) per batch
 * of 64 random 28×28 images, for three models:
 * - small CNN: conv8 3×3 relu → maxPool 2 → conv16 3×3 relu → maxPool 2 → dense 10 (as bench/train.ts);
 * - Madry MNIST CNN: conv32 5×5 same relu → maxPool 2 → conv64 5×5 same relu → maxPool 2 → dense 1024 relu → dense 10;
 * - MLP 784-256-256-10 (relu).
 * Configurations, all in ONE process and interleaved step by step (round r runs every model on every
 * configuration once), so that load from other processes hits all alike; each figure is the median
 * over all measured steps (a configuration whose warm-up step took under 250 ms runs up to 5
 * consecutive steps per round, each measured):
 * - `cpu`: the tfjs cpu backend;
 * - `wasm`: the plain wasm backend (CNNs cannot train there: no Conv2DBackpropFilter);
 * - `wasm+missing`: only the missing/wrong kernels (Conv2DBackpropFilter, depthwise, MaxPoolGrad, UnsortedSegmentSum);
 * - `wasm+kernels`: everything `registerWasmKernels()` installs (also Conv2DBackpropInput and transposed BatchMatMul).
 * The cpu step of the Madry CNN (≈100 s at batch 64) is measured at `--cpu-madry-batch` images and
 * scaled linearly to the batch (printed as such); `--cpu-madry-batch 64` measures it directly.
 */
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import '@tensorflow/tfjs-backend-wasm';
import * as tfl from '@tensorflow/tfjs-layers';
import {performance} from 'node:perf_hooks';
import {parseArgs} from 'node:util';
import {registerWasmKernels, unregisterWasmKernels} from '../src/kernels/wasm.js';

const {values: args} = parseArgs({
  options: {
    rounds: {type: 'string', default: '5'},
    models: {type: 'string', default: 'small,madry,mlp'},
    batch: {type: 'string', default: '64'},
    'cpu-madry-batch': {type: 'string', default: '8'},
    warmup: {type: 'string', default: '1'},
  },
});

function int(name: keyof typeof args): number {
  const v = Number(args[name]);
  if (!Number.isInteger(v) || v < 1) throw new Error(`--${String(name)} must be an integer >= 1, got ${String(args[name])}`);
  return v;
}
const rounds = int('rounds');
const batch = int('batch');
const cpuMadryBatch = Math.min(int('cpu-madry-batch'), batch);
const warmup = int('warmup');

type ModelName = 'small' | 'madry' | 'mlp';
const MODEL_LABELS: Record<ModelName, string> = {
  small: 'small CNN c8-p-c16-p-d10',
  madry: 'Madry CNN c32(5×5)-p-c64(5×5)-p-d1024-d10',
  mlp: 'MLP 784-256-256-10',
};
const models = (args.models as string).split(',').map((s) => s.trim()) as ModelName[];
for (const m of models) if (!(m in MODEL_LABELS)) throw new Error(`--models: unknown model '${m}' (small, madry, mlp)`);

type Config = 'cpu' | 'wasm' | 'wasm+missing' | 'wasm+kernels';
const CONFIGS: Config[] = ['cpu', 'wasm', 'wasm+missing', 'wasm+kernels'];

function build(name: ModelName): tfl.LayersModel {
  const init = (seed: number) => tfl.initializers.glorotUniform({seed});
  if (name === 'mlp') {
    return tfl.sequential({layers: [
      tfl.layers.dense({inputShape: [784], units: 256, activation: 'relu', kernelInitializer: init(1)}),
      tfl.layers.dense({units: 256, activation: 'relu', kernelInitializer: init(2)}),
      tfl.layers.dense({units: 10, kernelInitializer: init(3)}),
    ]});
  }
  if (name === 'small') {
    return tfl.sequential({layers: [
      tfl.layers.conv2d({inputShape: [28, 28, 1], filters: 8, kernelSize: 3, activation: 'relu', kernelInitializer: init(1)}),
      tfl.layers.maxPooling2d({poolSize: 2}),
      tfl.layers.conv2d({filters: 16, kernelSize: 3, activation: 'relu', kernelInitializer: init(2)}),
      tfl.layers.maxPooling2d({poolSize: 2}),
      tfl.layers.flatten(),
      tfl.layers.dense({units: 10, kernelInitializer: init(3)}),
    ]});
  }
  return tfl.sequential({layers: [
    tfl.layers.conv2d({inputShape: [28, 28, 1], filters: 32, kernelSize: 5, padding: 'same', activation: 'relu', kernelInitializer: init(1)}),
    tfl.layers.maxPooling2d({poolSize: 2}),
    tfl.layers.conv2d({filters: 64, kernelSize: 5, padding: 'same', activation: 'relu', kernelInitializer: init(2)}),
    tfl.layers.maxPooling2d({poolSize: 2}),
    tfl.layers.flatten(),
    tfl.layers.dense({units: 1024, activation: 'relu', kernelInitializer: init(3)}),
    tfl.layers.dense({units: 10, kernelInitializer: init(4)}),
  ]});
}

/** A model, its optimizer and a fixed batch, all on one backend. */
interface Trainer {
  step(): void;
  n: number;
}

function trainer(name: ModelName, n: number): Trainer {
  const model = build(name);
  const opt = tf.train.adam(1e-3);
  let s = 12345;
  const rnd = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
  const x = name === 'mlp' ? tf.tensor2d(Float32Array.from({length: n * 784}, rnd), [n, 784])
    : tf.tensor4d(Float32Array.from({length: n * 784}, rnd), [n, 28, 28, 1]);
  const y = tf.oneHot(tf.tensor1d(Array.from({length: n}, (_, i) => i % 10), 'int32'), 10);
  const vars = model.trainableWeights.map((w) => w.read() as tf.Variable);
  return {
    n,
    step: () => tf.tidy(() => {
      const loss = opt.minimize(() => tf.losses.softmaxCrossEntropy(y, model.apply(x, {training: true}) as tf.Tensor) as tf.Scalar, true, vars);
      loss!.dataSync();
    }),
  };
}

async function use(config: Config): Promise<void> {
  if (config === 'cpu') {
    await tf.setBackend('cpu');
    return;
  }
  await tf.setBackend('wasm');
  if (config === 'wasm') unregisterWasmKernels();
  else if (config === 'wasm+missing') registerWasmKernels({conv2dBackpropInput: false, batchMatMul: false});
  else registerWasmKernels();
}

const median = (v: number[]) => {
  const s = [...v].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

// One trainer per (model, backend): the wasm configurations share the wasm one (same weights, no data moves).
const trainers = new Map<string, Trainer>();
const times = new Map<string, number[]>();
const failed = new Map<string, string>();
const repsOf = new Map<string, number>();
for (const m of models) {
  await tf.setBackend('cpu');
  trainers.set(`${m}/cpu`, trainer(m, m === 'madry' ? cpuMadryBatch : batch));
  await tf.setBackend('wasm');
  trainers.set(`${m}/wasm`, trainer(m, batch));
}

process.stderr.write(`bench:kernels — batch ${batch}, ${rounds} rounds (+${warmup} warm-up), tfjs-core ${tf.version_core}\n`);
for (let r = -warmup; r < rounds; r++) {
  for (const m of models) {
    for (const c of CONFIGS) {
      const key = `${m}/${c}`;
      if (failed.has(key)) continue;
      await use(c);
      const t = trainers.get(`${m}/${c === 'cpu' ? 'cpu' : 'wasm'}`)!;
      const reps = r < 0 ? 1 : repsOf.get(key) ?? 1;
      for (let k = 0; k < reps; k++) {
        const t0 = performance.now();
        try {
          t.step();
        } catch (e) {
          failed.set(key, (e as Error).message.split('\n')[0]);
          break;
        }
        const ms = (performance.now() - t0) * (batch / t.n);
        if (r >= 0) (times.get(key) ?? times.set(key, []).get(key)!).push(ms);
        else repsOf.set(key, Math.max(1, Math.min(5, Math.round(250 / ms))));
        process.stderr.write(`  round ${r + 1}/${rounds} ${key}: ${ms.toFixed(1)} ms${t.n !== batch ? ` (scaled from batch ${t.n})` : ''}\n`);
      }
    }
  }
}
unregisterWasmKernels();
await tf.setBackend('cpu');

const fmt = (ms: number | undefined) => ms === undefined ? '—' : ms >= 10000 ? `${(ms / 1000).toFixed(1)} s` : ms >= 100 ? `${ms.toFixed(0)} ms` : `${ms.toFixed(1)} ms`;
const ratio = (a: number | undefined, b: number | undefined) => a === undefined || b === undefined ? '—' : `${(a / b).toFixed(a / b >= 10 ? 0 : 1)}×`;
const lines = [
  `| model (batch ${batch}) | cpu | plain wasm | wasm + missing kernels | wasm + all kernels | cpu / all | plain wasm / all |`,
  '|---|---|---|---|---|---|---|',
];
for (const m of models) {
  const med = (c: Config) => times.has(`${m}/${c}`) ? median(times.get(`${m}/${c}`)!) : undefined;
  const cell = (c: Config) => failed.has(`${m}/${c}`) ? 'fails¹' : fmt(med(c)) + (c === 'cpu' && m === 'madry' && cpuMadryBatch !== batch ? '²' : '');
  lines.push(`| ${MODEL_LABELS[m]} | ${cell('cpu')} | ${cell('wasm')} | ${cell('wasm+missing')} | ${cell('wasm+kernels')} | ${ratio(med('cpu'), med('wasm+kernels'))} | ${ratio(med('wasm'), med('wasm+kernels'))} |`);
}
console.log(`\nTraining step (forward + backward + Adam) per batch of ${batch}, medians over ${rounds} interleaved rounds:\n`);
console.log(lines.join('\n'));
const notes: string[] = [];
for (const [key, msg] of failed) notes.push(`¹ ${key}: ${msg}`);
if (models.includes('madry') && cpuMadryBatch !== batch) notes.push(`² measured at batch ${cpuMadryBatch}, scaled ×${batch / cpuMadryBatch}`);
if (notes.length) console.log('\n' + [...new Set(notes)].join('\n'));
