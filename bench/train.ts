/**
 * Benchmark of adversarial training through `model.fit` (issue 4, "Benchmark"; not a test).
 *
 *   npx tsx bench/train.ts [--models mlp,cnn] [--mlp-backend auto|wasm|cpu|tensorflow] [--cnn-backend auto|wasm|cpu|tensorflow]
 *                          [--mlp-batch 128] [--mlp-steps 12] [--cnn-batch 16] [--cnn-steps 3] [--warmup 2]
 *                          [--variants plain,fgsm,pgd5,pgd10,deep5,deep10] [--repeat 2]
 *
 * For each model (MNIST MLP 784-256-256-10; a small CNN conv8-pool-conv16-pool-dense10) and each
 * variant, ONE CHILD PROCESS trains `warmup + steps` batches of real MNIST with `model.fit`
 * (same batch size, same backend, Adam, shuffle off) and reports:
 * - time per step: median of the wall time between consecutive `onBatchEnd`s after the warm-up batches;
 * - tensors per step: (numTensors after the last batch − after the first measured batch) / steps;
 * - peak RSS: `process.resourceUsage().maxRSS` of that child (the whole process: runtime, backend,
 *   data and training), and the peak increase over the RSS measured just before `fit`.
 * With `--repeat R`, the whole set of variants runs R times round-robin (so that load from other
 * processes hits every variant alike) and each figure is the minimum over the R runs (time: the
 * least-disturbed run; RSS: varies little).
 *
 * Variants: `plain` (no callback), `fgsm` (FGSM-RS, ε = 0.1), `pgdK` (PGD-K, L∞ ε = 0.1, random
 * start), `deepK` (deep attack with `maxGradientEvaluations: K` on the instrumented model: input L∞
 * ε = 0.1 with box [0, 1], hidden quadratic λ = 10). Plain/FGSM/PGD train the base model, deep the
 * instrumented one (the same layers plus Disturbance layers). PGD/FGSM log the attack objective,
 * which costs one extra forward pass, as deep's recovery pass does.
 *
 * Ratios printed: deepK / ((K+1)·plain) (target ≤ 1.15), deepK / pgdK at equal gradient
 * evaluations (target ≤ 1.1), peak RSS / plain (target ≤ 1.5), tensors per step (target 0).
 * On wasm (the `auto` choice here) the CNN trains with this package's wasm training kernels
 * (`registerWasmKernels`, registered by `selectBackend`); `--cnn-backend cpu` gives the old cpu figures.
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import {spawnSync} from 'node:child_process';
import {performance} from 'node:perf_hooks';
import {parseArgs} from 'node:util';
import {selectBackend} from '../src/backend.js';
import {loadMnist} from '../src/data/mnist.js';
import {instrument} from '../src/model/instrument.js';
import {adversarialCallback} from '../src/training/callback.js';

const {values: args} = parseArgs({
  options: {
    models: {type: 'string', default: 'mlp,cnn'},
    variants: {type: 'string', default: 'plain,fgsm,pgd5,pgd10,deep5,deep10'},
    'mlp-backend': {type: 'string', default: 'auto'},
    'cnn-backend': {type: 'string', default: 'auto'},
    'mlp-batch': {type: 'string', default: '128'},
    'mlp-steps': {type: 'string', default: '12'},
    'cnn-batch': {type: 'string', default: '16'},
    'cnn-steps': {type: 'string', default: '3'},
    warmup: {type: 'string', default: '2'},
    repeat: {type: 'string', default: '2'},
    // internal: run one variant in this process and print its result as JSON
    child: {type: 'string'},
  },
});

interface Result {
  model: string;
  variant: string;
  backend: string;
  batch: number;
  steps: number;
  stepMs: number;
  tensorsPerStep: number;
  maxRssMB: number;
  rssBeforeFitMB: number;
  gradEvals: number;
}

function int(name: keyof typeof args): number {
  const v = Number(args[name]);
  if (!Number.isInteger(v) || v < 0) throw new Error(`--${String(name)} must be an integer >= 0, got ${String(args[name])}`);
  return v;
}

async function runChild(spec: string): Promise<void> {
  const [model, variant] = spec.split(':');
  const backend = model === 'cnn' ? args['cnn-backend'] : args['mlp-backend'];
  const sel = await selectBackend({backend: backend as 'auto', needsConvTraining: model === 'cnn', quiet: true});
  const batch = int(model === 'cnn' ? 'cnn-batch' : 'mlp-batch');
  const steps = int(model === 'cnn' ? 'cnn-steps' : 'mlp-steps');
  const warmup = int('warmup');
  const n = batch * (warmup + steps);
  const data = await loadMnist({split: 'train', limit: n});
  const x = model === 'cnn' ? tf.reshape(data.xs, [n, 28, 28, 1]) : data.xs;

  let base: tfl.LayersModel;
  if (model === 'cnn') {
    base = tfl.sequential({
      layers: [
        tfl.layers.conv2d({inputShape: [28, 28, 1], filters: 8, kernelSize: 3, activation: 'relu', kernelInitializer: tfl.initializers.glorotUniform({seed: 1})}),
        tfl.layers.maxPooling2d({poolSize: 2}),
        tfl.layers.conv2d({filters: 16, kernelSize: 3, activation: 'relu', kernelInitializer: tfl.initializers.glorotUniform({seed: 2})}),
        tfl.layers.maxPooling2d({poolSize: 2}),
        tfl.layers.flatten(),
        tfl.layers.dense({units: 10, activation: 'softmax', kernelInitializer: tfl.initializers.glorotUniform({seed: 3})}),
      ],
    });
  } else {
    base = tfl.sequential({
      layers: [
        tfl.layers.dense({inputShape: [784], units: 256, activation: 'relu', kernelInitializer: tfl.initializers.glorotUniform({seed: 1})}),
        tfl.layers.dense({units: 256, activation: 'relu', kernelInitializer: tfl.initializers.glorotUniform({seed: 2})}),
        tfl.layers.dense({units: 10, activation: 'softmax', kernelInitializer: tfl.initializers.glorotUniform({seed: 3})}),
      ],
    });
  }
  const k = Number(variant.replace(/^\D+/, '')) || 0;
  const isDeep = variant.startsWith('deep');
  const net = isDeep
    ? instrument(base, {input: {kind: 'linf', epsilon: 0.1, box: [0, 1]}, hidden: {kind: 'quadratic', lambda: 10}})
    : base;
  net.compile({optimizer: tf.train.adam(1e-3), loss: 'categoricalCrossentropy', metrics: ['accuracy']});

  const callbacks: (tfl.Callback | tfl.CustomCallback)[] = [];
  if (variant === 'fgsm') callbacks.push(adversarialCallback({method: 'fgsm', epsilon: 0.1, clip: [0, 1], seed: 1}));
  else if (variant.startsWith('pgd')) callbacks.push(adversarialCallback({method: 'pgd', epsilon: 0.1, steps: k, clip: [0, 1], seed: 1}));
  else if (isDeep) callbacks.push(adversarialCallback({method: 'deep', maxGradientEvaluations: k, maxIterations: 50, seed: 1}));
  else if (variant !== 'plain') throw new Error(`unknown variant ${variant}`);

  const times: number[] = [];
  const tensors: number[] = [];
  let gradEvals = 0;
  callbacks.push(
    new tfl.CustomCallback({
      onBatchEnd: async (_b, logs) => {
        times.push(performance.now());
        tensors.push(tf.memory().numTensors);
        gradEvals += Number(logs?.adv_grad_evals ?? 0);
      },
    }),
  );
  const rssBefore = process.memoryUsage().rss;
  await net.fit(x, data.ys, {batchSize: batch, epochs: 1, shuffle: false, verbose: 0, callbacks});
  // interval i = end of batch i−1 → end of batch i, for the batches after the warm-up
  const w = Math.max(1, warmup);
  const measured = times.slice(w).map((t, i) => t - times[w - 1 + i]).sort((a, b) => a - b);
  const result: Result = {
    model,
    variant,
    backend: sel.name,
    batch,
    steps,
    stepMs: measured[Math.floor(measured.length / 2)],
    tensorsPerStep: (tensors[tensors.length - 1] - tensors[w - 1]) / Math.max(1, tensors.length - w),
    maxRssMB: process.resourceUsage().maxRSS / 1024,
    rssBeforeFitMB: rssBefore / 2 ** 20,
    gradEvals: gradEvals / times.length,
  };
  process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
}

function pad(s: string, n: number): string {
  return s.length >= n ? s : s + ' '.repeat(n - s.length);
}

function fmt(v: number, d = 2): string {
  return Number.isFinite(v) ? v.toFixed(d) : '—';
}

async function main(): Promise<void> {
  if (args.child) return runChild(args.child);
  const models = String(args.models).split(',').filter(Boolean);
  const variants = String(args.variants).split(',').filter(Boolean);
  const passThrough = ['mlp-backend', 'cnn-backend', 'mlp-batch', 'mlp-steps', 'cnn-batch', 'cnn-steps', 'warmup', 'repeat'].flatMap((k) => [`--${k}`, String(args[k as keyof typeof args])]);
  const runs = new Map<string, Result[]>();
  for (let rep = 0; rep < Math.max(1, int('repeat')); rep++) {
    for (const model of models) {
      for (const variant of variants) {
        const t0 = performance.now();
        const r = spawnSync(process.execPath, [...process.execArgv, process.argv[1], '--child', `${model}:${variant}`, ...passThrough], {
          encoding: 'utf8',
          maxBuffer: 1 << 24,
        });
        const line = (r.stdout ?? '').split('\n').find((l) => l.startsWith('RESULT '));
        if (r.status !== 0 || !line) {
          process.stderr.write(`${model}:${variant} failed (exit ${r.status}):\n${r.stderr}\n`);
          continue;
        }
        const res = JSON.parse(line.slice(7)) as Result;
        const key = `${model}:${variant}`;
        runs.set(key, [...(runs.get(key) ?? []), res]);
        process.stderr.write(`[${rep + 1}] ${key} on ${res.backend}: ${fmt(res.stepMs, 1)} ms/step (${((performance.now() - t0) / 1000).toFixed(1)} s)\n`);
      }
    }
  }
  const results: Result[] = [...runs.values()].map((rs) => ({
    ...rs[0],
    stepMs: Math.min(...rs.map((r) => r.stepMs)),
    tensorsPerStep: Math.max(...rs.map((r) => r.tensorsPerStep)),
    maxRssMB: Math.min(...rs.map((r) => r.maxRssMB)),
    rssBeforeFitMB: Math.min(...rs.map((r) => r.rssBeforeFitMB)),
  }));

  const header = ['model', 'backend', 'batch', 'variant', 'grad evals', 'ms/step', '× plain', 'tensors/step', 'peak RSS MB', 'RSS / plain', 'Δ RSS in fit MB'];
  const rows: string[][] = [];
  const ratioRows: string[][] = [];
  for (const model of models) {
    const of = (v: string) => results.find((r) => r.model === model && r.variant === v);
    const plain = of('plain');
    for (const r of results.filter((x) => x.model === model)) {
      rows.push([
        r.model,
        r.backend,
        String(r.batch),
        r.variant,
        fmt(r.gradEvals, 1),
        fmt(r.stepMs, 1),
        plain ? fmt(r.stepMs / plain.stepMs) : '—',
        fmt(r.tensorsPerStep, 1),
        fmt(r.maxRssMB, 0),
        plain ? fmt(r.maxRssMB / plain.maxRssMB) : '—',
        fmt(r.maxRssMB - r.rssBeforeFitMB, 0),
      ]);
    }
    for (const k of [5, 10]) {
      const deep = of(`deep${k}`);
      const pgd = of(`pgd${k}`);
      if (deep && plain) ratioRows.push([model, `deep${k} / (${k + 1}·plain)`, fmt(deep.stepMs / ((k + 1) * plain.stepMs)), '≤ 1.15']);
      if (deep && pgd) ratioRows.push([model, `deep${k} / pgd${k}`, fmt(deep.stepMs / pgd.stepMs), '≤ 1.10']);
    }
    for (const r of results.filter((x) => x.model === model && x.variant !== 'plain')) {
      if (plain) ratioRows.push([model, `peak RSS ${r.variant} / plain`, fmt(r.maxRssMB / plain.maxRssMB), '≤ 1.5']);
    }
  }
  const print = (h: string[], body: string[][]) => {
    const w = h.map((c, i) => Math.max(c.length, ...body.map((r) => r[i].length)));
    console.log(`| ${h.map((c, i) => pad(c, w[i])).join(' | ')} |`);
    console.log(`|${w.map((n) => '-'.repeat(n + 2)).join('|')}|`);
    for (const r of body) console.log(`| ${r.map((c, i) => pad(c, w[i])).join(' | ')} |`);
  };
  console.log(`\nadversarial training step cost (Adam, MNIST; ${int('warmup')} warm-up batches; each variant in its own process; min over ${int('repeat')} round-robin runs)\n`);
  print(header, rows);
  console.log('');
  print(['model', 'ratio', 'value', 'target'], ratioRows);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
