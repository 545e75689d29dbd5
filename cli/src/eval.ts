/**
 * `eval`: robustness of a saved model on MNIST test data → a table on stdout,
 * `eval.json` (and `convergence.json`) in the run directory.
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import {existsSync} from 'node:fs';
import {basename, dirname, join, resolve} from 'node:path';

import {writeFileAtomic} from 'tfjs-deep-adversarial/node';
import {disturbanceLayers, instrument} from 'tfjs-deep-adversarial';
import {PenaltyConfig} from 'tfjs-deep-adversarial';
import {ConvergenceResult, solverConvergence} from 'tfjs-deep-adversarial';
import {evaluateRobustness, RobustnessAttack, RobustnessResult} from 'tfjs-deep-adversarial';
import {evaluatePerturbations, PerturbationResult} from 'tfjs-deep-adversarial';
import {loadData, loadModel, pct, readJson, resolveModelDir, table, toModelInput, useBackend} from './common.js';
import {createProgress} from './progress.js';
import type {BackendChoice} from 'tfjs-deep-adversarial/node';
import type {RunMetadata} from './run_metadata.js';

/** Attack names accepted by `--attacks`. */
export const EVAL_ATTACKS = ['fgsm', 'pgd', 'pgd-l2', 'apgd-ce', 'apgd-t', 'square', 'autoattack', 'autoattack-fast', 'deep'] as const;

/** Options of the `eval` command (after parsing). */
export interface EvalCommandOptions {
  target: string;
  attacks: (typeof EVAL_ATTACKS)[number][];
  epsilons: number[];
  l2Epsilons: number[];
  pgdSteps: number;
  restarts: number;
  deepIterations: number;
  deepLambda?: number;
  limit: number;
  batchSize: number;
  layerProfile: number[] | false;
  convergence: boolean;
  convergenceExamples: number;
  convergenceEvals: number;
  /** Robustness to random perturbations of hidden activations and weights (evaluatePerturbations); default true. */
  perturbations?: boolean;
  /** σ_rel of the activation noise; default [0.1, 0.25, 0.5]. */
  activationNoise?: number[];
  /** Bit widths of the activation quantisation; default [8, 4]. */
  quantBits?: number[];
  /** σ_rel of the weight noise; default [0.05, 0.1, 0.2]. */
  weightNoise?: number[];
  /** Random draws per noise level; default 5. */
  perturbationDraws?: number;
  seed: number;
  backend: BackendChoice;
  data?: string;
  out?: string;
  progress: 'auto' | 'bar' | 'lines' | 'off';
}

/** What `eval.json` holds. */
export interface EvalFile {
  tool: 'tfjs-deep-adversarial';
  command: 'eval';
  modelDir: string;
  evaluatedAt: string;
  backend: string;
  data: {source: string; split: 'test'; examples: number};
  options: Omit<EvalCommandOptions, 'target' | 'out' | 'progress' | 'backend'>;
  /** The robustness result, plus `perturbations` (evaluatePerturbations) unless `--no-perturbations`. */
  result: RobustnessResult & {perturbations?: PerturbationResult};
}

/** What `convergence.json` holds. */
export interface ConvergenceFile {
  tool: 'tfjs-deep-adversarial';
  command: 'eval';
  modelDir: string;
  penalties: (PenaltyConfig | null)[];
  result: ConvergenceResult;
}

function fmtEps(e: number | null): string {
  return e === null ? 'own' : `ε=${e}`;
}

const NORM_NAME = {linf: 'L∞', l2: 'L2', l1: 'L1'} as const;

/** Human-readable tables of a robustness result: input attacks with their worst case, the deep threat apart, masking checks. */
export function formatResult(r: RobustnessResult): string {
  const lines: string[] = [];
  for (const norm of ['linf', 'l2', 'l1'] as const) {
    for (const threat of ['input', 'deep'] as const) {
      const attacks = r.attacks.filter((a) => a.norm === norm && (a.threat ?? (a.kind === 'deep' ? 'deep' : 'input')) === threat);
      if (attacks.length === 0) continue;
      const eps = [...new Set(attacks.flatMap((a) => a.points.map((p) => p.epsilon)))].sort((a, b) => (a ?? -1) - (b ?? -1));
      const rows = attacks.map((a) => [a.name, ...eps.map((e) => pct(a.points.find((p) => p.epsilon === e)?.accuracy))]);
      for (const a of attacks) {
        const stageNames = a.points.find((p) => p.stages)?.stages?.map((g) => g.name) ?? [];
        for (const name of stageNames) {
          rows.push([`  ${a.name}: after ${name}`, ...eps.map((e) => pct(a.points.find((p) => p.epsilon === e)?.stages?.find((g) => g.name === name)?.robustAccuracy))]);
        }
      }
      if (threat === 'input') {
        const worst = r.worstCase.filter((w) => w.norm === norm);
        if (worst.length) rows.push([`input worst case (${NORM_NAME[norm]})`, ...eps.map((e) => pct(worst.find((w) => w.epsilon === e)?.accuracy))]);
      }
      const title = threat === 'input' ? `robust accuracy, ${NORM_NAME[norm]} (input attacks)` : `deep threat (input ${NORM_NAME[norm]} ε + hidden layers; not an input attack)`;
      lines.push(table([title, ...eps.map(fmtEps)], rows), '');
    }
  }
  if (r.checks?.length) {
    lines.push('gradient-masking checks:');
    for (const c of r.checks) lines.push(`  ${c.status === 'warning' ? 'WARNING' : c.status === 'ok' ? 'ok     ' : 'not run'} ${c.check}: ${c.detail}`);
    lines.push('');
  }
  for (const w of r.warnings ?? []) if (!w.startsWith('possible gradient masking')) lines.push(`warning: ${w}`);
  if (r.layerProfile) {
    const lp = r.layerProfile;
    lines.push(
      table(
        ['layer (one at a time)', 'units', 'mean ‖a‖₂', ...lp.relativeEpsilons.map((e) => `ε_rel=${e}`)],
        lp.layers.map((l) => [`${l.name}${l.isInput ? ' (input)' : ''}`, String(l.units), l.meanActivationNorm.toFixed(2), ...l.points.map((p) => pct(p.accuracy))]),
      ),
      `  budget: ${lp.budget}`,
      '',
    );
  }
  return lines.join('\n');
}

/** A small table of a perturbation result: clean, then accuracy (± sd over draws) per perturbation and level. */
export function formatPerturbations(p: PerturbationResult): string {
  const sd = (v: number, draws: number) => (draws > 1 ? ` ± ${(100 * v).toFixed(1)}` : '');
  const rows: string[][] = [['clean', '', pct(p.cleanAccuracy)]];
  for (const q of p.activationNoise?.points ?? []) rows.push(['activation noise (all hidden sites)', `σ_rel=${q.relativeSigma}`, `${pct(q.accuracy)}${sd(q.sd, q.draws)}`]);
  for (const q of p.activationQuantization?.points ?? []) rows.push(['activation quantisation (all hidden sites)', `${q.bits} bits`, pct(q.accuracy)]);
  for (const q of p.weightNoise?.points ?? []) rows.push(['weight noise (kernels, biases)', `σ_rel=${q.relativeSigma}`, `${pct(q.accuracy)}${sd(q.sd, q.draws)}`]);
  const draws = p.activationNoise?.points[0]?.draws ?? p.weightNoise?.points[0]?.draws;
  return [
    table([`random perturbations (${p.examples} examples)`, 'level', 'accuracy'], rows),
    `  σ of activation noise relative to each hidden site's RMS activation, of weight noise to each tensor's std; ` +
      `${draws ? `mean ± sd over ${draws} draws; ` : ''}per-tensor asymmetric min–max quantisation, applied layer by layer`,
  ].join('\n');
}

/** Runs the `eval` command; returns the paths written. */
export async function evalCommand(o: EvalCommandOptions, log: (s: string) => void = (s) => process.stdout.write(`${s}\n`)): Promise<{evalPath: string; convergencePath?: string}> {
  const modelDir = resolveModelDir(o.target, 'eval: model');
  // Results go next to the model: into the run directory when the model is a run's model/ or a checkpoint.
  const target = resolve(o.target);
  const outDir = resolve(o.out ?? (existsSync(join(target, 'run.json')) ? target : basename(modelDir) === 'model' && existsSync(join(dirname(modelDir), 'run.json')) ? dirname(modelDir) : modelDir));
  const run = readJson<RunMetadata>(join(outDir, 'run.json'));
  const backend = await useBackend(o.backend, false);
  const model = await loadModel(modelDir);
  model.compile({optimizer: 'sgd', loss: 'categoricalCrossentropy'});
  const test = await loadData('test', {dir: o.data, limit: o.limit});
  const x = toModelInput(model, test.xs);
  tf.dispose(test.xs);
  const own = disturbanceLayers(model);
  const hidden: PenaltyConfig | undefined = o.deepLambda !== undefined ? {kind: 'quadratic', lambda: o.deepLambda} : own.length === 0 ? {kind: 'quadratic', lambda: 1} : undefined;
  const attacks: RobustnessAttack[] = [];
  for (const a of o.attacks) {
    if (a === 'fgsm') attacks.push({kind: 'fgsm'});
    if (a === 'pgd') attacks.push({kind: 'pgd', steps: o.pgdSteps, restarts: o.restarts});
    if (a === 'pgd-l2') attacks.push({kind: 'pgd', norm: 'l2', steps: o.pgdSteps, restarts: o.restarts, epsilons: o.l2Epsilons});
    if (a === 'apgd-ce') attacks.push({kind: 'apgd', loss: 'ce'});
    if (a === 'apgd-t') attacks.push({kind: 'apgd', targeted: true});
    if (a === 'square') attacks.push({kind: 'square'});
    if (a === 'autoattack') attacks.push({kind: 'autoattack'});
    if (a === 'autoattack-fast') attacks.push({kind: 'autoattack', version: 'fast'});
    // The deep attack also disturbs hidden layers: a stronger threat model than any input attack,
    // so it is reported on its own ("deep threat") and never enters the input worst case.
    if (a === 'deep') attacks.push({kind: 'deep', maxIterations: o.deepIterations, hidden});
  }
  log(`evaluating ${modelDir} on ${test.count} MNIST test examples (${backend} backend)`);
  const progress = createProgress(o.progress);
  progress.start('eval', 1);
  let result: RobustnessResult;
  try {
    result = evaluateRobustness(model, x, test.ys, {
      attacks,
      epsilons: o.epsilons,
      clip: [0, 1],
      batchSize: o.batchSize,
      seed: o.seed,
      layerProfile: o.layerProfile === false ? false : {relativeEpsilons: o.layerProfile, maxIterations: o.deepIterations},
      onProgress: (p) => {
        if (p.done === 1 && p.stage === 'clean') progress.start('eval', p.total);
        if (p.stage === 'layer-profile' && p.done === 1) progress.start('layer profile', p.total);
        progress.update(p.done, {step: `${p.stage}${p.name ? ` ${p.name}` : ''}${p.epsilon != null ? ` ε=${p.epsilon}` : ''}`});
      },
    });
  } finally {
    progress.stop();
  }
  let perturbations: PerturbationResult | undefined;
  if (o.perturbations !== false) {
    const draws = o.perturbationDraws ?? 5;
    progress.start('perturbations', 1);
    try {
      perturbations = evaluatePerturbations(model, x, test.ys, {
        activationNoise: {relativeSigmas: o.activationNoise ?? [0.1, 0.25, 0.5], draws},
        activationQuantization: {bits: o.quantBits ?? [8, 4]},
        weightNoise: {relativeSigmas: o.weightNoise ?? [0.05, 0.1, 0.2], draws},
        batchSize: o.batchSize,
        seed: o.seed,
        onProgress: (p) => {
          if (p.done === 1) progress.start('perturbations', p.total);
          progress.update(p.done, {step: `${p.stage}${p.level !== undefined ? ` ${p.stage === 'activation-quantization' ? `${p.level} bits` : `σ_rel=${p.level}`}` : ''}`});
        },
      });
    } finally {
      progress.stop();
    }
  }
  const file: EvalFile = {
    tool: 'tfjs-deep-adversarial',
    command: 'eval',
    modelDir,
    evaluatedAt: new Date().toISOString(),
    backend,
    data: {source: test.source, split: 'test', examples: test.count},
    options: (({target: _t, out: _o, progress: _p, backend: _b, ...rest}) => rest)(o),
    result: perturbations ? {...result, perturbations} : result,
  };
  const evalPath = join(outDir, 'eval.json');
  await writeFileAtomic(evalPath, JSON.stringify(file, null, 1));
  log('');
  log(`${run ? `run ${run.name}: ` : ''}clean accuracy ${pct(result.cleanAccuracy)} on ${result.examples} examples (${result.seconds.toFixed(1)} s)`);
  log('');
  log(formatResult(result));
  if (perturbations) {
    log(formatPerturbations(perturbations));
    log('');
  }

  let convergencePath: string | undefined;
  if (o.convergence) {
    const k = Math.min(o.convergenceExamples, test.count);
    const xb = tf.slice(x, [0], [k]);
    const yb = tf.slice(test.ys, [0], [k]);
    try {
      const eps = o.epsilons.filter((e) => e > 0);
      const inputEps = run?.options.epsilon ?? (eps.length ? eps[Math.floor(eps.length / 2)] : 0.1);
      const attacked: tfl.LayersModel = own.length > 0 ? model : instrument(model, {input: {kind: 'linf', epsilon: inputEps, box: [0, 1]}, hidden: hidden ?? {kind: 'quadratic', lambda: 1}});
      const layers = disturbanceLayers(attacked);
      const penalties = layers.map((l) => (hidden && l !== layers[0] ? hidden : l.penalty));
      const conv = solverConvergence(attacked, xb, yb, {maxGradientEvaluations: o.convergenceEvals, penalties, seed: o.seed});
      const cf: ConvergenceFile = {tool: 'tfjs-deep-adversarial', command: 'eval', modelDir, penalties, result: conv};
      convergencePath = join(outDir, 'convergence.json');
      await writeFileAtomic(convergencePath, JSON.stringify(cf, null, 1));
      log(
        table(
          ['solver (eq. 11, ' + k + ' examples)', 'J at start', `J after ≤${o.convergenceEvals} grad. evals`],
          conv.runs.map((r) => [r.label, r.points[0].objective.toFixed(4), r.points[r.points.length - 1].objective.toFixed(4)]),
        ),
      );
      log('');
    } finally {
      tf.dispose([xb, yb]);
    }
  }
  tf.dispose([x, test.ys]);
  log(`wrote ${evalPath}${convergencePath ? ` and ${convergencePath}` : ''}`);
  return {evalPath, convergencePath};
}
