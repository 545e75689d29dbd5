/**
 * `report`: one or more run directories → a self-contained `report.html`
 * with inline SVG charts (rendered by Vega in Node) and summary tables.
 */
import {existsSync, readdirSync, readFileSync, realpathSync, statSync} from 'node:fs';
import {basename, dirname, join, relative, resolve, sep} from 'node:path';

import {writeFileAtomic} from 'tfjs-deep-adversarial/node';
import {accuracyChart, Chart, convergenceChart, disturbanceChart, layerChart, renderSvg, trainingChart} from './charts.js';
import {checkpointDir} from './checkpoint.js';
import {pct, readJson, UsageError} from './common.js';
import type {ConvergenceFile, EvalFile} from './eval.js';
import type {RunMetadata} from './run_metadata.js';
import type {PerturbationResult} from 'tfjs-deep-adversarial';

/** Options of the `report` command. */
export interface ReportCommandOptions {
  runs: string[];
  out?: string;
  title?: string;
}

/** The files of one run directory. */
interface Run {
  dir: string;
  label: string;
  run?: RunMetadata;
  evalFile?: EvalFile;
  convergence?: ConvergenceFile;
  penaltyKinds: Record<string, string>;
  /** Name of the input Disturbance layer, if known. */
  inputLayer?: string;
  /**
   * The per-layer profile to chart: from `profile/eval.json` when the run has one (a profile
   * re-measured on its own, e.g. after a fix, replaces the one in eval.json), else from eval.json.
   */
  layerProfile?: {profile: NonNullable<EvalFile['result']['layerProfile']>; source: 'eval.json' | 'profile/eval.json'};
}

function isRunDir(dir: string): boolean {
  return ['run.json', 'eval.json', 'convergence.json'].some((f) => existsSync(join(dir, f)));
}

/** Run directories named by the arguments: each argument is a run, or a folder whose sub-folders are runs. */
export function discoverRuns(args: string[]): string[] {
  const dirs: string[] = [];
  for (const a of args) {
    const p = resolve(a);
    if (!existsSync(p) || !statSync(p).isDirectory()) throw new UsageError(`report: ${a} is not a directory.`);
    if (isRunDir(p)) {
      dirs.push(p);
      continue;
    }
    const subs = readdirSync(p)
      .map((s) => join(p, s))
      .filter((s) => statSync(s).isDirectory() && isRunDir(s))
      .sort();
    if (subs.length === 0) throw new UsageError(`report: ${a} holds no run (no run.json / eval.json there or in its sub-folders).`);
    dirs.push(...subs);
  }
  return [...new Set(dirs)];
}

/** True when `path`, symbolic links resolved, is a regular file (not a FIFO or device, which could block) inside `root`. */
function regularFileInside(path: string, root: string): boolean {
  try {
    const real = realpathSync(path);
    return real.startsWith(realpathSync(root) + sep) && statSync(real).isFile();
  } catch {
    return false;
  }
}

/**
 * Penalty kind of each Disturbance layer, read from the run's saved model.json, else from the model of
 * run.json's `latestCheckpoint` — only when that names a checkpoint directory of this run
 * (`checkpointDir`, the check `train --resume` and `eval` use), and only from regular files that, symbolic
 * links resolved, lie inside the run (its checkpoints directory for the checkpoint).
 */
export function penaltyKinds(dir: string, run?: RunMetadata): Record<string, string> {
  const candidates: [string, string][] = [[join(dir, 'model', 'model.json'), dir]];
  const ck = run ? checkpointDir(dir, run.latestCheckpoint) : null;
  if (ck) candidates.push([join(ck, 'model', 'model.json'), join(dir, 'checkpoints')]);
  for (const [c, root] of candidates) {
    if (!regularFileInside(c, root)) continue;
    try {
      const text = readFileSync(c, 'utf8');
      const out: Record<string, string> = {};
      const walk = (v: unknown): void => {
        if (Array.isArray(v)) return v.forEach(walk);
        if (v && typeof v === 'object') {
          const o = v as Record<string, unknown>;
          const cfg = o.config as Record<string, unknown> | undefined;
          if (typeof o.class_name === 'string' && o.class_name.endsWith('Disturbance') && cfg && typeof cfg.name === 'string') {
            out[cfg.name] = String((cfg.penalty as {kind?: string} | undefined)?.kind ?? 'quadratic');
          }
          Object.values(o).forEach(walk);
        }
      };
      walk(JSON.parse(text));
      return out;
    } catch {
      // ignore: labels fall back to the plain layer name
    }
  }
  return {};
}

/** Short human description of a penalty given on the command line (JSON or `none`). */
function penaltyText(json: string | undefined, fallback: string): string {
  if (json === undefined) return fallback;
  if (json === 'none') return 'off';
  try {
    const p = JSON.parse(json) as {kind: string; epsilon?: number; lambda?: number; box?: number[]};
    const core = p.kind === 'quadratic' ? `quadratic λ=${p.lambda}` : `${p.kind} ε=${p.epsilon}`;
    return p.box ? `${core} in [${p.box.join(', ')}]` : core;
  } catch {
    return json;
  }
}

/** What a run trained with, e.g. `pgd (ε=0.3, 7 steps, warm-up 2 epochs)`, honouring --input/--hidden-penalty. */
function trainingSummary(o: RunMetadata['options']): string {
  if (o.method === 'none') return 'plain';
  const warm = o.warmup > 0 ? `, warm-up ${o.warmup} epochs` : (o.warmupSteps ?? 0) > 0 ? `, warm-up ${o.warmupSteps} steps` : '';
  if (o.method === 'deep') {
    const input = penaltyText(o.inputPenalty, `${o.norm} ε=${o.epsilon}`);
    const hidden = penaltyText(o.hiddenPenalty, `quadratic λ=${o.lambda}`);
    return `deep (input ${input}; hidden ${hidden}${warm})`;
  }
  return `${o.method} (ε=${o.epsilon}${o.method === 'pgd' ? `, ${o.steps} steps` : ''}${warm})`;
}

function describeRun(dir: string, run?: RunMetadata): string {
  const name = basename(dir);
  if (!run) return name;
  return `${name} — ${run.options.model} · ${trainingSummary(run.options)}`;
}

function loadRun(dir: string): Run {
  const run = readJson<RunMetadata>(join(dir, 'run.json'));
  const evalFile = readJson<EvalFile>(join(dir, 'eval.json'));
  const own = readJson<EvalFile>(join(dir, 'profile', 'eval.json'))?.result.layerProfile;
  const layerProfile = own
    ? {profile: own, source: 'profile/eval.json' as const}
    : evalFile?.result.layerProfile
      ? {profile: evalFile.result.layerProfile, source: 'eval.json' as const}
      : undefined;
  return {
    dir,
    label: describeRun(dir, run),
    run,
    evalFile,
    convergence: readJson<ConvergenceFile>(join(dir, 'convergence.json')),
    penaltyKinds: penaltyKinds(dir, run),
    inputLayer: layerProfile?.profile.layers.find((l) => l.isInput)?.name ?? run?.model.disturbanceLayers[0],
    layerProfile,
  };
}

/** `dense1_disturbance` → `after dense1`; the input disturbance → `input`. */
function shortLayer(name: string, inputLayer?: string): string {
  if (name === 'input' || name === inputLayer) return 'input';
  return `after ${name.replace(/_disturbance(_\d+)?$/, '')}`;
}

const NORM_SUFFIX: Record<string, string> = {linf: '‖d‖∞', l1: '‖d‖₁', l2: '‖d‖₂', quadratic: '‖d‖₂'};

type EvalAttack = EvalFile['result']['attacks'][number];

/** The deep attack (input + hidden layers): a separate threat model (older eval.json files have no `threat`). */
function isDeep(a: EvalAttack): boolean {
  return (a.threat ?? (a.kind === 'deep' ? 'deep' : 'input')) === 'deep';
}

function deepLabel(name: string): string {
  return /deep threat/i.test(name) ? name : `${name} — deep threat (input + hidden layers)`;
}

/** A masking check as the report shows it. */
interface ReportCheck {
  check: string;
  status: 'ok' | 'warning' | 'not-run';
  detail: string;
}

/**
 * The gradient-masking checks of an evaluation: those stored in eval.json, or (older files) the two that
 * can be recomputed from the stored accuracies — FGSM vs the iterative attacks, and accuracy at a large L∞ ε.
 */
export function maskingChecksOf(res: EvalFile['result']): ReportCheck[] {
  if (res.checks) return res.checks;
  const out: ReportCheck[] = [];
  const pctS = (v: number) => `${(100 * v).toFixed(1)} %`;
  const fg = res.attacks.filter((a) => a.kind === 'fgsm');
  const it = res.attacks.filter((a) => a.norm === 'linf' && ['pgd', 'apgd', 'autoattack'].includes(a.kind));
  const bad: string[] = [];
  let ran = false;
  for (const f of fg) {
    for (const p of f.points) {
      for (const a of it) {
        const q = a.points.find((x) => x.epsilon === p.epsilon);
        if (!q) continue;
        ran = true;
        if (p.accuracy < q.accuracy - 0.005) bad.push(`ε=${p.epsilon}: ${f.name} ${pctS(p.accuracy)} < ${a.name} ${pctS(q.accuracy)}`);
      }
    }
  }
  out.push({check: 'fgsm-vs-iterative', status: !ran ? 'not-run' : bad.length ? 'warning' : 'ok', detail: bad.length ? bad.join('; ') : ran ? 'FGSM never more than 0.5 point below an iterative attack' : 'needs FGSM and PGD at the same ε'});
  const large = res.clip ? (res.clip[1] - res.clip[0]) / 2 : Infinity;
  const big = res.worstCase.filter((w) => w.norm === 'linf' && w.epsilon >= large);
  const stuck = big.filter((w) => w.accuracy > 0.02);
  out.push({
    check: 'large-epsilon',
    status: big.length === 0 ? 'not-run' : stuck.length ? 'warning' : 'ok',
    detail: big.length === 0 ? `needs an L∞ ε ≥ ${large}` : big.map((w) => `input worst case at L∞ ε=${w.epsilon}: ${pctS(w.accuracy)}${w.accuracy > 0.02 ? ' (should be ≈ 0: a near-constant classifier or masked gradients)' : ''}`).join('; '),
  });
  out.push({check: 'square-vs-gradient', status: 'not-run', detail: 'needs Square or AutoAttack (eval --attacks autoattack)'});
  return out;
}

function checksHtml(runs: Run[]): string {
  const items: string[] = [];
  for (const r of runs) {
    const res = r.evalFile?.result;
    if (!res) continue;
    const checks = maskingChecksOf(res);
    const warn = checks.filter((c) => c.status === 'warning');
    const text = warn.length
      ? `<strong>possible gradient masking</strong>: ${warn.map((c) => `${esc(c.check)} — ${esc(c.detail)}`).join('; ')}`
      : `no masking symptom found (${checks.map((c) => `${esc(c.check)}: ${esc(c.status)}`).join(', ')})`;
    items.push(`<li${warn.length ? ' class="warn"' : ''}><code>${esc(basename(r.dir))}</code>: ${text}</li>`);
  }
  if (items.length === 0) return '';
  return (
    '<h2>Gradient-masking checks</h2>\n<p class="meta">Square (no gradients) breaking examples the gradient attacks left robust; FGSM beating an iterative attack; ' +
    'accuracy above 2 % at an L∞ ε of half the input range (where every image can be moved to the same grey image). A warning means the robust ' +
    `accuracy of that model is not trustworthy.</p>\n<ul class="checks">${items.join('')}</ul>`
  );
}

/** The charts of a set of runs. */
export function buildCharts(runs: Run[]): Chart[] {
  const charts: Chart[] = [];
  const short = (r: Run) => basename(r.dir);
  // 1. Accuracy vs ε per model (one curve per attack + worst case), per norm.
  for (const r of runs) {
    const res = r.evalFile?.result;
    if (!res) continue;
    for (const norm of ['linf', 'l2', 'l1'] as const) {
      const rows: {epsilon: number; accuracy: number; attack: string}[] = [];
      for (const a of res.attacks.filter((x) => x.norm === norm)) {
        const label = isDeep(a) ? deepLabel(a.name) : a.name;
        for (const p of a.points) if (p.epsilon !== null) rows.push({epsilon: p.epsilon, accuracy: p.accuracy, attack: label});
      }
      if (rows.length === 0) continue;
      const worst = res.worstCase.filter((w) => w.norm === norm);
      const attacksInWorst = new Set(worst.flatMap((w) => w.attacks));
      const worstLabel = `input worst case (per example, over ${[...attacksInWorst].join(', ')})`;
      if (attacksInWorst.size > 1) for (const w of worst) rows.push({epsilon: w.epsilon, accuracy: w.accuracy, attack: worstLabel});
      const c = accuracyChart(`acc-${short(r)}-${norm}`, `Accuracy vs ε — ${r.label}`, norm, rows, worstLabel);
      const deep = res.attacks.find((a) => isDeep(a) && a.norm === norm);
      if (deep) {
        const h = deep.settings.hidden as {kind?: string; lambda?: number} | string | null | undefined;
        const hidden = h && typeof h === 'object' ? `a quadratic penalty λ=${h.lambda}` : h === 'own' ? 'the model\'s own hidden penalties' : null;
        if (hidden) c.caption += ` “${deepLabel(deep.name)}” also disturbs every hidden layer (${hidden}) on top of the input budget ε, so it lies below the clean accuracy even at ε = 0; it is not part of the input worst case.`;
      }
      charts.push(c);
    }
  }
  // 1b. Worst case of every model on one chart, when several models were evaluated.
  const evaluated = runs.filter((r) => r.evalFile?.result.worstCase.some((w) => w.norm === 'linf'));
  if (evaluated.length > 1) {
    const rows = evaluated.flatMap((r) =>
      (r.evalFile as EvalFile).result.worstCase.filter((w) => w.norm === 'linf').map((w) => ({epsilon: w.epsilon, accuracy: w.accuracy, attack: short(r)})),
    );
    const c = accuracyChart('acc-compare-linf', 'Worst-case L∞ robust accuracy — all models', 'linf', rows, '', 'model');
    c.caption = 'Input worst case (per example over all L∞ input-space attacks of each model\'s evaluation; the deep threat excluded), one curve per model.';
    charts.push(c);
  }
  // 2. Training curves.
  for (const r of runs) {
    const h = r.run?.history ?? [];
    if (h.length === 0) continue;
    const method = r.run?.options.method ?? 'none';
    const trainLabel = method === 'none' ? 'training (clean)' : 'training (adversarial)';
    const eps = r.run?.options.epsilon;
    const rows: {epoch: number; series: string; kind: 'loss' | 'accuracy'; value: number}[] = [];
    const push = (e: number, series: string, kind: 'loss' | 'accuracy', v: number | undefined) => {
      if (v !== undefined && Number.isFinite(v)) rows.push({epoch: e, series, kind, value: v});
    };
    for (const rec of h) {
      push(rec.epoch, trainLabel, 'loss', rec.loss);
      push(rec.epoch, trainLabel, 'accuracy', rec.acc);
      push(rec.epoch, 'training, clean part', 'loss', rec.adv_clean_loss);
      push(rec.epoch, 'validation, clean', 'loss', rec.val_loss);
      push(rec.epoch, 'validation, clean', 'accuracy', rec.val_acc);
      push(rec.epoch, `validation, PGD-10 ε=${eps}`, 'loss', rec.val_pgd_loss);
      push(rec.epoch, `validation, PGD-10 ε=${eps}`, 'accuracy', rec.val_pgd_acc);
    }
    charts.push(trainingChart(`train-${short(r)}`, `Training curves — ${r.label}`, rows));
  }
  // 3. Mean ‖dℓ‖ per layer over training.
  for (const r of runs) {
    const h = r.run?.history ?? [];
    const rows: {epoch: number; layer: string; norm: number}[] = [];
    for (const rec of h) {
      for (const [k, v] of Object.entries(rec)) {
        if (!k.startsWith('adv_norm_') || !Number.isFinite(v)) continue;
        const layer = k.slice('adv_norm_'.length);
        const kind = r.penaltyKinds[layer] ?? (layer === 'input' ? 'linf' : 'l2');
        rows.push({epoch: rec.epoch, layer: `${shortLayer(layer, r.inputLayer)} (${NORM_SUFFIX[kind] ?? '‖d‖'})`, norm: v});
      }
    }
    if (rows.length) charts.push(disturbanceChart(`dnorm-${short(r)}`, `Mean disturbance norm per layer during training — ${r.label}`, rows));
  }
  // 4. The default deep solver vs CG and gradient ascent.
  for (const r of runs) {
    const c = r.convergence?.result;
    if (!c) continue;
    const rows = c.runs.flatMap((run) =>
      run.points.map((p) => ({gradientEvaluations: p.gradientEvaluations, objective: p.objective, solver: `${run.label}${run.diverged ? ' (diverged)' : ''}`})),
    );
    charts.push(convergenceChart(`conv-${short(r)}`, `Deep attack solvers: default (preconditioned) vs CG vs gradient ascent — ${r.label}`, rows, c.examples));
  }
  // 5. Per-layer vulnerability.
  for (const r of runs) {
    if (!r.layerProfile) continue;
    const lp = r.layerProfile.profile;
    const rows = lp.layers.flatMap((l) =>
      l.points.map((p) => ({layer: l.isInput ? 'input' : shortLayer(l.name), index: l.index, relativeEpsilon: String(p.relativeEpsilon), accuracy: p.accuracy})),
    );
    const from = r.layerProfile.source === 'eval.json' ? '' : ` (${r.layerProfile.source})`;
    charts.push(layerChart(`layers-${short(r)}`, `Per-layer vulnerability — ${r.label}${from}`, rows, lp.cleanAccuracy));
  }
  return charts;
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function summaryTable(runs: Run[]): string {
  const epsSet = new Set<number>();
  for (const r of runs) for (const w of r.evalFile?.result.worstCase ?? []) if (w.norm === 'linf') epsSet.add(w.epsilon);
  const eps = [...epsSet].sort((a, b) => a - b);
  const aaEps = new Set<number>();
  for (const r of runs) for (const a of r.evalFile?.result.attacks ?? []) if (a.kind === 'autoattack' && a.norm === 'linf') for (const p of a.points) if (p.epsilon !== null) aaEps.add(p.epsilon);
  const aa = [...aaEps].sort((a, b) => a - b);
  const head = [
    'run', 'model', 'training', 'epochs', 'train examples', 'clean test acc.', ...aa.map((e) => `AutoAttack L∞ acc. ε=${e}`), ...eps.map((e) => `input worst-case L∞ acc. ε=${e}`), 'masking checks', 'test examples',
  ];
  const rows = runs.map((r) => {
    const o = r.run?.options;
    const res = r.evalFile?.result;
    return [
      basename(r.dir),
      o?.model ?? '—',
      o ? trainingSummary(o) : '—',
      r.run ? `${r.run.epochsDone}${r.run.status !== 'complete' ? ` (${r.run.status})` : ''}` : '—',
      r.run ? String(r.run.data.trainExamples) : '—',
      res ? pct(res.cleanAccuracy) : '—',
      ...aa.map((e) => {
        const at = res?.attacks.find((a) => a.kind === 'autoattack' && a.norm === 'linf');
        const v = pct(at?.points.find((p) => p.epsilon === e)?.accuracy);
        return at?.settings.version === 'fast' ? `${v} (fast version)` : v;
      }),
      ...eps.map((e) => pct(res?.worstCase.find((w) => w.norm === 'linf' && w.epsilon === e)?.accuracy)),
      res ? (maskingChecksOf(res).some((c) => c.status === 'warning') ? 'WARNING' : 'ok') : '—',
      res ? String(res.examples) : '—',
    ];
  });
  return `<table><thead><tr>${head.map((h) => `<th>${esc(h)}</th>`).join('')}</tr></thead><tbody>${rows
    .map((r) => `<tr>${r.map((c, i) => `<td${i >= 3 ? ' class="num"' : ''}>${esc(c)}</td>`).join('')}</tr>`)
    .join('')}</tbody></table>`;
}

/** Per run: clean accuracy and accuracy under random activation noise, activation quantisation and weight noise (eval.json result.perturbations). */
function perturbationTable(runs: Run[]): string {
  const withP = runs.filter((r) => r.evalFile?.result.perturbations);
  if (withP.length === 0) return '';
  const levels = <T,>(get: (p: PerturbationResult) => T[] | undefined) => [...new Set(withP.flatMap((r) => get(r.evalFile!.result.perturbations!) ?? []))].sort((a, b) => Number(a) - Number(b));
  const an = levels((p) => p.activationNoise?.points.map((q) => q.relativeSigma));
  const bits = levels((p) => p.activationQuantization?.points.map((q) => q.bits)).reverse();
  const wn = levels((p) => p.weightNoise?.points.map((q) => q.relativeSigma));
  const withSd = (q?: {accuracy: number; sd: number; draws: number}) => (q ? `${pct(q.accuracy)}${q.draws > 1 ? ` ± ${(100 * q.sd).toFixed(1)}` : ''}` : '—');
  const head = ['run', 'clean', ...an.map((e) => `activation noise σ_rel=${e}`), ...bits.map((b) => `activations ${b}-bit`), ...wn.map((e) => `weight noise σ_rel=${e}`), 'examples'];
  const rows = withP.map((r) => {
    const p = r.evalFile!.result.perturbations!;
    return [
      basename(r.dir),
      pct(p.cleanAccuracy),
      ...an.map((e) => withSd(p.activationNoise?.points.find((q) => q.relativeSigma === e))),
      ...bits.map((b) => pct(p.activationQuantization?.points.find((q) => q.bits === b)?.accuracy)),
      ...wn.map((e) => withSd(p.weightNoise?.points.find((q) => q.relativeSigma === e))),
      String(p.examples),
    ];
  });
  return (
    '<h2>Random perturbations of hidden activations and weights</h2>\n<p class="meta">Accuracy (mean ± sd over the random draws) with Gaussian noise on every hidden activation ' +
    '(σ relative to each layer\'s RMS activation; the input is not perturbed), with every hidden activation quantised (per-tensor asymmetric min–max, layer by layer), ' +
    'and with Gaussian noise on every kernel and bias (σ relative to each tensor\'s std).</p>\n' +
    `<table><thead><tr>${head.map((h) => `<th>${esc(h)}</th>`).join('')}</tr></thead><tbody>${rows
      .map((row) => `<tr>${row.map((c, i) => `<td${i >= 1 ? ' class="num"' : ''}>${esc(c)}</td>`).join('')}</tr>`)
      .join('')}</tbody></table>`
  );
}

const SECTIONS: [string, string][] = [
  ['acc-', 'Robust accuracy vs ε'],
  ['train-', 'Training curves'],
  ['dnorm-', 'Disturbances during training'],
  ['conv-', 'Solving the inner maximisation (eq. 11)'],
  ['layers-', 'Per-layer vulnerability'],
];

/** Builds the HTML document of a report. */
export async function buildReportHtml(runs: Run[], title: string, baseDir?: string): Promise<{html: string; charts: number}> {
  const charts = buildCharts(runs);
  const svgs = await Promise.all(charts.map((c) => renderSvg(c)));
  const parts: string[] = [];
  for (const [prefix, heading] of SECTIONS) {
    const idx = charts.map((c, i) => (c.id.startsWith(prefix) ? i : -1)).filter((i) => i >= 0);
    if (idx.length === 0) continue;
    parts.push(`<h2>${esc(heading)}</h2>`);
    for (const i of idx) {
      parts.push(
        `<figure id="${esc(charts[i].id)}"><figcaption><strong>${esc(charts[i].title)}</strong><br>${esc(charts[i].caption)}</figcaption>\n${svgs[i]}\n</figure>`,
      );
    }
  }
  const generated = new Date().toISOString();
  const html = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="tfjs-deep-adversarial report">
<title>${esc(title)}</title>
<style>
body { font-family: Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
p.meta { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
td.num { text-align: right; }
th { background: #f3f3f3; }
figure { margin: 1.5em 0; }
figcaption { font-size: 0.9em; color: #444; max-width: 900px; margin-bottom: 0.5em; }
svg { max-width: 100%; height: auto; }
ul.runs { font-size: 0.9em; }
li.warn { color: #a40000; }
</style>
</head>
<body>
<h1>${esc(title)}</h1>
<p class="meta">Generated ${esc(generated)} by tfjs-deep-adversarial from ${runs.length} run${runs.length === 1 ? '' : 's'}. Accuracies are on MNIST test examples; “robust” means correct on the clean and on the attacked input.</p>
<ul class="runs">${runs.map((r) => `<li>${esc(r.label)} <code>${esc(baseDir ? relative(baseDir, r.dir) || '.' : r.dir)}</code></li>`).join('')}</ul>
<h2>Summary</h2>
${summaryTable(runs)}
<p class="meta">Headline: AutoAttack (APGD-CE → APGD-T → Square, FAB-T not implemented) where evaluated; the input worst case is per example over every input-space attack run (AutoAttack included); the deep threat, which also disturbs hidden layers, is reported separately and is not part of it.</p>
${checksHtml(runs)}
${perturbationTable(runs)}
${parts.join('\n')}
</body>
</html>
`;
  return {html, charts: charts.length};
}

/** Runs the `report` command. */
export async function reportCommand(o: ReportCommandOptions, log: (s: string) => void = (s) => process.stdout.write(`${s}\n`)): Promise<{path: string; charts: number}> {
  if (o.runs.length === 0) throw new UsageError('report: give at least one run directory.');
  const dirs = discoverRuns(o.runs);
  const runs = dirs.map(loadRun);
  let out = o.out;
  if (!out) {
    const base = o.runs.length === 1 ? resolve(o.runs[0]) : commonParent(dirs);
    out = join(base, 'report.html');
  }
  const {html, charts} = await buildReportHtml(runs, o.title ?? 'tfjs-deep-adversarial report', dirname(resolve(out)));
  await writeFileAtomic(resolve(out), html);
  log(`report: ${charts} charts from ${runs.length} run(s) → ${resolve(out)}`);
  return {path: resolve(out), charts};
}

function commonParent(dirs: string[]): string {
  const split = dirs.map((d) => dirname(d).split(sep));
  const first = split[0];
  let k = first.length;
  for (const s of split) {
    let i = 0;
    while (i < k && i < s.length && s[i] === first[i]) i++;
    k = i;
  }
  const p = first.slice(0, k).join(sep);
  return p === '' ? sep : relative('', p) === '' ? '.' : p;
}
