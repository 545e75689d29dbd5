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
 *
 * `--interleave [--baseline <git ref>]`: ONE process, MLP only, the variants interleaved so that load
 * from other processes hits them alike: each round trains `--mlp-steps` batches of every variant in
 * turn (each variant keeps its own model across rounds; the first round also runs the warm-up) and
 * takes the median step time of that round; `--repeat` rounds. Printed: per variant the median over
 * rounds (min–max), and per round the ratios deep/PGD at equal evaluations and deep/(K+1)·plain, with
 * their median and range. `--baseline REF` adds `deepK@REF`: the same deep variant run by the
 * package's source at git REF (extracted to scratch/baseline/<commit>/src and imported next to the
 * working tree's, sharing one tfjs), the ratio new/old per round, and first a check that both give the
 * same attack: one `deepAttack` (maxGradientEvaluations K, seed 1) on the first batch, max |ΔJ| and
 * max |Δd| printed.
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import {spawnSync} from 'node:child_process';
import {extractBaseline} from './baseline.js';
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
    // one process, variants interleaved step by step (see the header)
    interleave: {type: 'boolean', default: false},
    baseline: {type: 'string'},
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

/** The parts of the package a variant needs, from the working tree or from a baseline commit. */
interface Lib {
  instrument: typeof instrument;
  adversarialCallback: typeof adversarialCallback;
  deepAttack: typeof import('../src/attacks/deep.js').deepAttack;
}

function median(a: number[]): number {
  const s = [...a].sort((x, y) => x - y);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Extracts `src/` of git `ref` under scratch/baseline/<commit>/ (once) and imports the package's parts from there. */
async function loadBaseline(ref: string): Promise<{lib: Lib; commit: string}> {
  const {dir, commit} = extractBaseline(ref);
  const [inst, cb, deep] = await Promise.all([
    import(`${dir}/src/model/instrument.ts`),
    import(`${dir}/src/training/callback.ts`),
    import(`${dir}/src/attacks/deep.ts`),
  ]);
  return {lib: {instrument: inst.instrument, adversarialCallback: cb.adversarialCallback, deepAttack: deep.deepAttack}, commit};
}

function mlp(): tfl.LayersModel {
  return tfl.sequential({
    layers: [
      tfl.layers.dense({inputShape: [784], units: 256, activation: 'relu', kernelInitializer: tfl.initializers.glorotUniform({seed: 1})}),
      tfl.layers.dense({units: 256, activation: 'relu', kernelInitializer: tfl.initializers.glorotUniform({seed: 2})}),
      tfl.layers.dense({units: 10, activation: 'softmax', kernelInitializer: tfl.initializers.glorotUniform({seed: 3})}),
    ],
  });
}

const DEEP_THREAT = {input: {kind: 'linf', epsilon: 0.1, box: [0, 1]}, hidden: {kind: 'quadratic', lambda: 10}} as const;

async function runInterleaved(): Promise<void> {
  const sel = await selectBackend({backend: args['mlp-backend'] as 'auto', quiet: true});
  const batch = int('mlp-batch');
  const steps = Math.max(2, int('mlp-steps'));
  const warmup = int('warmup');
  const rounds = Math.max(1, int('repeat'));
  const variants = String(args.variants).split(',').filter(Boolean);
  const own: Lib = {instrument, adversarialCallback, deepAttack: (await import('../src/attacks/deep.js')).deepAttack};
  const base = args.baseline ? await loadBaseline(String(args.baseline)) : null;
  const n = batch * (warmup + steps);
  const data = await loadMnist({split: 'train', limit: n});

  interface Runner {
    name: string;
    k: number;
    /** median wall and process-CPU ms per step of one round */
    round(first: boolean): Promise<{wall: number; cpu: number}>;
  }
  const makeRunner = (variant: string, lib: Lib, name: string): Runner => {
    const k = Number(variant.replace(/^\D+/, '')) || 0;
    const isDeep = variant.startsWith('deep');
    const net = isDeep ? lib.instrument(mlp(), DEEP_THREAT as never) : mlp();
    net.compile({optimizer: tf.train.adam(1e-3), loss: 'categoricalCrossentropy', metrics: ['accuracy']});
    let cb: tfl.Callback | null = null;
    if (variant === 'fgsm') cb = lib.adversarialCallback({method: 'fgsm', epsilon: 0.1, clip: [0, 1], seed: 1});
    else if (variant.startsWith('pgd')) cb = lib.adversarialCallback({method: 'pgd', epsilon: 0.1, steps: k, clip: [0, 1], seed: 1});
    else if (isDeep) cb = lib.adversarialCallback({method: 'deep', maxGradientEvaluations: k, maxIterations: 50, seed: 1});
    else if (variant !== 'plain') throw new Error(`unknown variant ${variant}`);
    return {
      name,
      k,
      round: async (first) => {
        const nb = (first ? warmup : 0) + steps;
        const xs = tf.slice(data.xs, [0, 0], [nb * batch, 784]);
        const ys = tf.slice(data.ys, [0, 0], [nb * batch, 10]);
        const times: number[] = [];
        const cpu: number[] = [];
        const timer = new tfl.CustomCallback({
          onBatchEnd: async () => {
            times.push(performance.now());
            const c = process.cpuUsage();
            cpu.push((c.user + c.system) / 1000);
          },
        });
        await net.fit(xs, ys, {batchSize: batch, epochs: 1, shuffle: false, verbose: 0, callbacks: (cb ? [cb, timer] : [timer]) as tfl.CustomCallback[]});
        tf.dispose([xs, ys]);
        const skip = first ? Math.max(1, warmup) : 1; // the first batch of a fit call includes fit's set-up
        const per = (a: number[]) => median(a.slice(skip).map((t, i) => t - a[skip - 1 + i]));
        return {wall: per(times), cpu: per(cpu)};
      },
    };
  };
  const runners: Runner[] = variants.map((v) => makeRunner(v, own, v));
  if (base) {
    for (const v of variants.filter((x) => x.startsWith('deep'))) runners.push(makeRunner(v, base.lib, `${v}@${base.commit}`));
    // same attack before and after: one deepAttack on the first batch, same weights and seed
    const x0 = tf.slice(data.xs, [0, 0], [batch, 784]);
    const y0 = tf.slice(data.ys, [0, 0], [batch, 10]);
    for (const v of variants.filter((x) => x.startsWith('deep'))) {
      const k = Number(v.replace(/^\D+/, ''));
      const res = [own, base.lib].map((lib) => {
        const net = lib.instrument(mlp(), DEEP_THREAT as never);
        net.compile({optimizer: tf.train.adam(1e-3), loss: 'categoricalCrossentropy'});
        const r = lib.deepAttack(net, x0, y0, {maxGradientEvaluations: k, seed: 1});
        const out = {J: r.objective.dataSync(), d: r.disturbances.map((d) => d.dataSync()), evals: r.gradientEvaluations};
        tf.dispose([r.objective, ...r.disturbances]);
        return out;
      });
      const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
        let m = 0;
        for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
        return m;
      };
      const jScale = Math.max(...Array.from(res[1].J, Math.abs));
      console.log(
        `same attack (${v}, batch ${batch}, seed 1): max|ΔJ| = ${maxDiff(res[0].J, res[1].J).toExponential(2)} (max |J| ${jScale.toFixed(3)}), ` +
          `max|Δd| per layer = ${res[0].d.map((d, i) => maxDiff(d, res[1].d[i]).toExponential(2)).join(', ')}, evals ${res[0].evals} vs ${res[1].evals}`,
      );
    }
    tf.dispose([x0, y0]);
  }

  const perRound = new Map<string, number[]>(runners.map((r) => [r.name, []]));
  const cpuRound = new Map<string, number[]>(runners.map((r) => [r.name, []]));
  for (let rd = 0; rd < rounds; rd++) {
    // rotate the order every round so that no variant always runs right after the same one
    const order = runners.map((_, i) => runners[(i + rd) % runners.length]);
    for (const r of order) {
      const t = await r.round(rd === 0);
      perRound.get(r.name)!.push(t.wall);
      cpuRound.get(r.name)!.push(t.cpu);
    }
    process.stderr.write(`[round ${rd + 1}/${rounds}] ${runners.map((r) => `${r.name} ${fmt(perRound.get(r.name)![rd], 1)}`).join(', ')} ms/step\n`);
  }
  const spread = (a: number[], d = 2) => `${fmt(median(a), d)} (${fmt(Math.min(...a), d)}–${fmt(Math.max(...a), d)})`;
  console.log(`\nadversarial training step cost, one process, interleaved (${sel.name}, MNIST MLP 784-256-256-10, batch ${batch}, Adam; ` +
    `${rounds} rounds of ${steps} steps per variant, ${warmup} warm-up; median over rounds (min–max); ` +
    `wall time and this process's CPU time (less sensitive to other processes' load))\n`);
  for (const r of runners) {
    console.log(`${pad(r.name, 16)} wall ${spread(perRound.get(r.name)!, 1)} ms/step, cpu ${spread(cpuRound.get(r.name)!, 1)} ms/step`);
  }
  console.log('');
  const ratio = (m: Map<string, number[]>, a: string, b: string, scale = 1) => m.get(a)!.map((v, i) => v / (scale * m.get(b)![i]));
  const both = (a: string, b: string, scale = 1) =>
    `wall ${spread(ratio(perRound, a, b, scale))}, cpu ${spread(ratio(cpuRound, a, b, scale))}`;
  for (const r of runners.filter((x) => x.name.startsWith('deep'))) {
    const pgd = `pgd${r.k}`;
    if (perRound.has(pgd)) console.log(`${pad(`${r.name} / ${pgd}`, 28)} ${both(r.name, pgd)}   (target ≤ 1.10)`);
    if (perRound.has('plain')) console.log(`${pad(`${r.name} / (${r.k + 1}·plain)`, 28)} ${both(r.name, 'plain', r.k + 1)}   (target ≤ 1.15)`);
    const old = base ? `${r.name}@${base.commit}` : '';
    if (base && !r.name.includes('@') && perRound.has(old)) console.log(`${pad(`${r.name} / ${old}`, 28)} ${both(r.name, old)}   (new / old)`);
  }
}

async function main(): Promise<void> {
  if (args.child) return runChild(args.child);
  if (args.interleave) return runInterleaved();
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
