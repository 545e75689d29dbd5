/**
 * `start` (what `npm start` runs): the main job on the embedded default.
 *
 * 1. deep adversarial training of an MNIST MLP (784-256-256-10) on a subset:
 *    input disturbance in the L∞ ball ε (pixels kept in [0, 1]) and a
 *    quadratic penalty λ on every hidden disturbance, CG on eq. 11 per batch;
 * 2. the same MLP (same seed, data and order) trained plainly;
 * 3. both evaluated on MNIST test examples (FGSM, PGD-20, deep attack; worst
 *    case; per-layer profile; CG vs gradient ascent);
 * 4. `report.html` comparing them.
 */
import {join, resolve} from 'node:path';

import type {BackendChoice} from 'tfjs-deep-adversarial/node';
import {timestamp} from './common.js';
import {evalCommand} from './eval.js';
import {reportCommand} from './report.js';
import {trainCommand, TrainCommandOptions} from './train.js';

/** Options of the `start` command. */
export interface StartCommandOptions {
  limit: number;
  epochs: number;
  testLimit: number;
  epsilon: number;
  lambda: number;
  seed: number;
  backend: BackendChoice;
  data?: string;
  out?: string;
  progress: 'auto' | 'bar' | 'lines' | 'off';
}

/** Runs the default job; returns the exit code. */
export async function startCommand(o: StartCommandOptions, log: (s: string) => void = (s) => process.stdout.write(`${s}\n`)): Promise<number> {
  const t0 = Date.now();
  const root = resolve(o.out ?? join('runs', timestamp()));
  log(`tfjs-deep-adversarial: deep adversarial training of an MNIST MLP vs a plainly trained twin → ${root}`);
  const common: Omit<TrainCommandOptions, 'method' | 'out'> = {
    model: 'mlp',
    epsilon: o.epsilon,
    norm: 'linf',
    lambda: o.lambda,
    steps: 7,
    maxIterations: 5,
    cleanWeight: 0,
    warmup: 0,
    epochs: o.epochs,
    batchSize: 64,
    learningRate: 0.001,
    limit: o.limit,
    valLimit: 500,
    seed: o.seed,
    backend: o.backend,
    data: o.data,
    resume: false,
    progress: o.progress,
  };
  const runs: {dir: string; what: string}[] = [
    {dir: join(root, 'deep'), what: 'deep adversarial training'},
    {dir: join(root, 'plain'), what: 'plain training (the twin)'},
  ];
  log(`\n[1/4] ${runs[0].what}`);
  const deep = await trainCommand({...common, method: 'deep', out: runs[0].dir}, log);
  if (deep.exitCode !== 0) return deep.exitCode;
  log(`\n[2/4] ${runs[1].what}`);
  const plain = await trainCommand({...common, method: 'none', out: runs[1].dir}, log);
  if (plain.exitCode !== 0) return plain.exitCode;
  log('\n[3/4] evaluation of both models');
  for (const r of runs) {
    await evalCommand(
      {
        target: r.dir,
        attacks: ['fgsm', 'pgd', 'deep'],
        epsilons: [0, 0.05, 0.1, 0.2, 0.3],
        l2Epsilons: [],
        pgdSteps: 20,
        restarts: 1,
        deepIterations: 10,
        deepLambda: o.lambda,
        limit: o.testLimit,
        batchSize: 250,
        layerProfile: [0.1, 0.25],
        convergence: true,
        convergenceExamples: 64,
        convergenceEvals: 40,
        seed: o.seed,
        backend: o.backend,
        data: o.data,
        progress: o.progress,
      },
      log,
    );
  }
  log('\n[4/4] report');
  const rep = await reportCommand({runs: [root], out: join(root, 'report.html'), title: 'Deep adversarial training vs plain training — MNIST MLP'}, log);
  log(`\ndone in ${((Date.now() - t0) / 60000).toFixed(1)} min. Wrote:`);
  const width = Math.max(...runs.map((r) => r.dir.length + 1), rep.path.length) + 2;
  for (const r of runs) {
    log(`  ${`${r.dir}/`.padEnd(width)}${r.what}: model/ (final model), checkpoints/, run.json (options + per-epoch history), eval.json, convergence.json`);
  }
  log(`  ${rep.path.padEnd(width)}the report (${rep.charts} SVG charts; open it in a browser)`);
  return 0;
}
