/**
 * Evidence v2 (issue 13): standard training vs PGD-AT vs FGSM-RS vs deep adversarial training on
 * MNIST, MLP and small CNN, 3 seeds each, trained and evaluated with the package's own CLI.
 *
 *   npm run experiment                          # everything, resumable (finished runs are reused)
 *   npm run experiment -- --only mlp-0.1        # one group (mlp-0.1, cnn-0.1, cnn-0.3)
 *   npm run experiment -- --stage train         # train only (evaluate later with --stage eval)
 *   npm run experiment -- --render              # only rewrite the tables from the finished runs
 *   npm run experiment -- --quick --out /tmp/q  # smoke run: tiny subsets, one seed, minutes
 *
 * Every (group, row, seed) is one run directory `<out>/runs/<group>/<row>/s<seed>` holding the
 * CLI's `run.json` (training) and `eval.json` (evaluation). A run whose `run.json` says
 * `complete` is not retrained, one whose `eval.json` (attacks) or `perturbations/eval.json` (random
 * perturbations of hidden activations and weights) exists is not re-evaluated; an interrupted training continues from its checkpoint (`train --resume`). Runs are
 * processed in priority order (MLP seed 1 first, then the other MLP seeds, then the CNN), so a
 * partial run still fills the most important cells. The tables between the `<!-- results:… -->`
 * markers of docs/RESULTS.md are then rewritten (mean ± sd over the seeds found; cells of runs not
 * done yet say so) and `report` renders seed 1 of every row into one HTML file per group.
 */
import {spawn, spawnSync} from 'node:child_process';
import {existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync} from 'node:fs';
import {cpus, totalmem} from 'node:os';
import {dirname, join, relative, resolve} from 'node:path';
import {parseArgs} from 'node:util';

const {values: flags} = parseArgs({
  options: {
    quick: {type: 'boolean', default: false},
    jobs: {type: 'string', default: '1'},
    out: {type: 'string', default: 'docs/results'},
    backend: {type: 'string', default: 'wasm'},
    only: {type: 'string'},
    rows: {type: 'string'},
    seeds: {type: 'string'},
    stage: {type: 'string', default: 'all'},
    render: {type: 'boolean', default: false},
    results: {type: 'string', default: 'docs/RESULTS.md'},
  },
});

const quick = flags.quick;
const K = 7; // gradient evaluations per step for the attack of PGD-AT (steps) and deep AT (budget)
const outDir = resolve(flags.out);
const runsDir = join(outDir, 'runs');
const seeds = (flags.seeds ?? (quick ? '1' : '1,2,3')).split(',').map(Number);
if (!['all', 'train', 'eval'].includes(flags.stage)) throw new Error(`--stage must be all, train or eval (got ${flags.stage})`);

/** One block of the table: an architecture at one training/evaluation budget ε. */
interface Group {
  id: string;
  title: string;
  model: 'mlp' | 'cnn';
  epsilon: number;
  epochs: number;
  /**
   * Linear ramp of the attack strength over the first N optimizer steps (`train --warmup-steps`) for
   * every adversarial row (0: none). The CNN needs it: deep AT with hidden L∞ budgets from a random
   * initialisation kills every conv2 ReLU within ~40 batches (see RESULTS); PGD-AT and FGSM-RS get
   * the same ramp so the rows differ only in the attack.
   */
  warmupSteps: number;
  /** L∞ radii of the evaluation (AutoAttack, PGD, FGSM, deep threat); no 0: clean accuracy is measured apart, and attacking at ε = 0 costs a full AutoAttack run for nothing. */
  epsilons: number[];
  testLimit: number;
  rows: Row[];
}
interface Row {
  id: string;
  label: string;
  args: string[];
}

const quad = (lambda: number, box = false) => JSON.stringify({kind: 'quadratic', lambda, ...(box ? {box: [0, 1]} : {})});
const linf = (epsilon: number, box = false) => JSON.stringify({kind: 'linf', epsilon, ...(box ? {box: [0, 1]} : {})});
const deepArgs = (input: string, hidden: string) => ['--method', 'deep', '--input-penalty', input, '--hidden-penalty', hidden, '--max-grad-evals', `${K}`, '--max-iterations', '50'];
/** Hidden L∞ budgets of the sweep (absolute; the hidden ReLU activations' p99 |a| is ≈ 2–3, see RESULTS). */
const HIDDEN = [0.01, 0.05, 0.1];

function rowsFor(eps: number, warm: boolean): Row[] {
  const w = warm ? ' (ε warm-up)' : '';
  const rows: Row[] = [
    {id: 'plain', label: 'Standard training', args: ['--method', 'none']},
    {id: 'pgd', label: `PGD-AT L∞ ε=${eps}, k=${K}${w}`, args: ['--method', 'pgd', '--epsilon', `${eps}`, '--steps', `${K}`]},
    {id: 'fgsm-rs', label: `FGSM-RS ε=${eps}${w}`, args: ['--method', 'fgsm', '--epsilon', `${eps}`]},
    {id: 'deep-quad', label: `Deep AT quadratic λ=1 (input and hidden), k=${K}${w}`, args: deepArgs(quad(1, true), quad(1))},
    ...HIDDEN.map((h) => ({id: `deep-linf-h${h}`, label: `Deep AT input L∞ ε=${eps} + hidden L∞ ε=${h}, k=${K}${w}`, args: deepArgs(linf(eps, true), linf(h))})),
  ];
  // At ε = 0.3 only the rows that train against that budget are new (standard training is ε-free).
  return warm ? rows.filter((r) => r.id === 'pgd' || r.id === 'deep-linf-h0.01') : rows;
}

/** Optimizer steps per epoch (batch 64). */
const STEPS_PER_EPOCH = Math.ceil((quick ? 512 : 59000) / 64);
const GROUPS: Group[] = quick
  ? [{id: 'mlp-0.1', title: 'MLP 784-256-256-10, ε = 0.1 (quick)', model: 'mlp', epsilon: 0.1, epochs: 1, warmupSteps: 0, epsilons: [0.1, 0.3], testLimit: 100, rows: rowsFor(0.1, false)}]
  : [
      {id: 'mlp-0.1', title: 'MLP 784-256-256-10, ε = 0.1', model: 'mlp', epsilon: 0.1, epochs: 4, warmupSteps: 0, epsilons: [0.1, 0.3, 0.5], testLimit: 1000, rows: rowsFor(0.1, false)},
      {id: 'cnn-0.1', title: 'Small CNN, ε = 0.1', model: 'cnn', epsilon: 0.1, epochs: 2, warmupSteps: 300, epsilons: [0.1, 0.3, 0.5], testLimit: 1000, rows: rowsFor(0.1, false)},
      {id: 'cnn-0.3', title: 'Small CNN, ε = 0.3', model: 'cnn', epsilon: 0.3, epochs: 4, warmupSteps: 2 * STEPS_PER_EPOCH, epsilons: [0.1, 0.3, 0.5], testLimit: 1000, rows: rowsFor(0.3, true)},
    ];
const TRAIN_LIMIT = quick ? 512 : 59000;
const VAL_LIMIT = quick ? 100 : 1000;
const PGD_STEPS = quick ? 10 : 40;
const RESTARTS = quick ? 1 : 2;
const DEEP_EVALS = 20;
/** Levels of the random perturbations: wide enough to separate the models (at σ_rel ≤ 0.25, 8 bits and weight σ_rel ≤ 0.2 every MNIST model here stays within 0.5 point of clean). */
const PERTURB = {activationNoise: '0.5,1,2', bits: '8,4,2', weightNoise: '0.2,0.5,1'};

const CLI = ['--import', 'tsx', 'cli/src/run.ts'];

function cli(args: string[], logFile: string): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [...CLI, ...args], {stdio: ['ignore', 'pipe', 'pipe']});
    const chunks: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => chunks.push(c));
    child.stderr.on('data', (c: Buffer) => chunks.push(c));
    child.on('close', (code) => {
      writeFileSync(logFile, Buffer.concat(chunks));
      if (code === 0) resolvePromise();
      else reject(new Error(`${args.slice(0, 2).join(' ')} exited with ${code}; see ${logFile}`));
    });
  });
}

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const readJson = (p: string): Json => JSON.parse(readFileSync(p, 'utf8')) as Json;
const tryJson = (p: string): Json | undefined => (existsSync(p) ? readJson(p) : undefined);
const runDir = (g: Group, r: Row, seed: number) => join(runsDir, g.id, r.id, `s${seed}`);
/** The last commit that changed the package or the CLI (stable when only scripts/docs move on). */
const commit = (() => {
  const r = spawnSync('git', ['log', '-1', '--format=%h', '--', 'src', 'cli', 'package.json'], {encoding: 'utf8'});
  return r.status === 0 ? r.stdout.trim() : 'unknown';
})();

async function job(g: Group, r: Row, seed: number): Promise<void> {
  const dir = runDir(g, r, seed);
  const tag = `[${g.id}/${r.id}/s${seed}]`;
  mkdirSync(dir, {recursive: true});
  let meta = tryJson(join(dir, 'run.json'));
  // A run recorded as complete whose weights are gone (a fresh clone: only the JSON records are
  // committed) and that was never evaluated cannot be evaluated: train it again from scratch.
  if (meta?.status === 'complete' && !existsSync(join(dir, 'model', 'model.json')) && !existsSync(join(dir, 'eval.json'))) {
    rmSync(join(dir, 'run.json'));
    meta = undefined;
  }
  // A run trained with another warm-up than the recipe's is not this row: keep it aside (nothing is
  // deleted) and train the row again.
  const wantWarmup = r.id === 'plain' ? 0 : g.warmupSteps;
  if (meta && ((meta.options?.warmupSteps ?? 0) !== wantWarmup || (meta.options?.warmup ?? 0) !== 0)) {
    let k = 1;
    while (existsSync(`${dir}.stale-${k}`)) k++;
    renameSync(dir, `${dir}.stale-${k}`);
    console.log(`${tag} trained with another warm-up (--warmup ${meta.options?.warmup ?? 0}, --warmup-steps ${meta.options?.warmupSteps ?? 0}; the recipe has --warmup-steps ${wantWarmup}): moved to ${dir}.stale-${k}, training again`);
    mkdirSync(dir, {recursive: true});
    meta = undefined;
  }
  const trained = meta?.status === 'complete';
  if (!trained && flags.stage !== 'eval') {
    const t0 = Date.now();
    console.log(`${tag} train${meta ? ' (resume)' : ''} …`);
    const common = ['--epochs', `${g.epochs}`, '--backend', flags.backend, '--progress', 'lines', '--out', dir];
    const args = meta
      ? ['train', '--resume', ...common]
      : ['train', '--overwrite', '--model', g.model, ...r.args, ...(g.warmupSteps && r.id !== 'plain' ? ['--warmup-steps', `${g.warmupSteps}`] : []), '--limit', `${TRAIN_LIMIT}`, '--val-limit', `${VAL_LIMIT}`, '--batch-size', '64', '--seed', `${seed}`, ...common];
    await cli(args, join(dir, 'train.log'));
    writeFileSync(join(dir, 'code.json'), JSON.stringify({commit, trainedAt: new Date().toISOString()}, null, 1));
    console.log(`${tag} trained in ${((Date.now() - t0) / 60000).toFixed(1)} min`);
  }
  const ready = tryJson(join(dir, 'run.json'))?.status === 'complete' && existsSync(join(dir, 'model', 'model.json'));
  if (flags.stage === 'train' || !ready) return;
  // Random perturbations of hidden activations and weights: their own small eval (≈ 10 s for the MLP),
  // so that their levels can change without redoing the attacks.
  if (!existsSync(join(dir, 'perturbations', 'eval.json'))) {
    console.log(`${tag} perturbations …`);
    await cli(
      ['eval', dir, '--attacks', 'fgsm', '--epsilons', `${g.epsilon}`, '--no-layer-profile', '--no-convergence', '--activation-noise', PERTURB.activationNoise, '--quant-bits', PERTURB.bits,
        '--weight-noise', PERTURB.weightNoise, '--perturbation-draws', '5', '--limit', `${g.testLimit}`, '--seed', '0', '--backend', flags.backend, '--progress', 'lines', '--out', join(dir, 'perturbations')],
      join(dir, 'perturbations.log'),
    );
  }
  if (!existsSync(join(dir, 'eval.json'))) {
    const t0 = Date.now();
    console.log(`${tag} eval …`);
    const l2 = '2';
    await cli(
      ['eval', dir, '--attacks', 'fgsm,pgd,pgd-l2,autoattack,deep', '--epsilons', g.epsilons.join(','), '--l2-epsilons', l2, '--pgd-steps', `${PGD_STEPS}`, '--restarts', `${RESTARTS}`,
        '--deep-iterations', `${DEEP_EVALS}`, '--deep-lambda', '1', '--limit', `${g.testLimit}`, '--seed', '0', '--backend', flags.backend, '--progress', 'lines',
        '--no-perturbations', ...(seed === seeds[0] && !quick ? [] : ['--no-convergence'])],
      join(dir, 'eval.log'),
    );
    writeFileSync(join(dir, 'eval-code.json'), JSON.stringify({commit, evaluatedAt: new Date().toISOString()}, null, 1));
    console.log(`${tag} evaluated in ${((Date.now() - t0) / 60000).toFixed(1)} min`);
  }
}

function selectedGroups(): Group[] {
  const only = flags.only?.split(',');
  return GROUPS.filter((g) => !only || only.includes(g.id));
}
function selectedRows(g: Group): Row[] {
  const only = flags.rows?.split(',');
  return g.rows.filter((r) => !only || only.includes(r.id));
}

/** Priority order: MLP seed 1, MLP other seeds, then each CNN group seed 1, CNN other seeds. */
function queue(): [Group, Row, number][] {
  const q: [Group, Row, number][] = [];
  for (const g of selectedGroups()) {
    for (const s of seeds) for (const r of selectedRows(g)) q.push([g, r, s]);
  }
  const rank = ([g, , s]: [Group, Row, number]) => (g.model === 'mlp' ? 0 : 10) + (s === seeds[0] ? 0 : 5) + GROUPS.indexOf(g);
  return q.sort((a, b) => rank(a) - rank(b));
}

async function pool(jobs: number): Promise<void> {
  const q = queue();
  const failures: Error[] = [];
  await Promise.all(
    Array.from({length: jobs}, async () => {
      for (let j = q.shift(); j; j = q.shift()) await job(...j).catch((e: Error) => { console.error(e.message); failures.push(e); });
    }),
  );
  if (failures.length) console.error(`${failures.length} job(s) failed:\n${failures.map((e) => e.message).join('\n')}`);
}

// ---------------------------------------------------------------- the tables
/** mean ± sample sd of percentages over the seeds that finished (the bare value for a single seed). */
function stat(values: (number | undefined)[]): string {
  const v = values.filter((x): x is number => x !== undefined && Number.isFinite(x)).map((x) => 100 * x);
  if (v.length === 0) return '–';
  const m = v.reduce((a, b) => a + b, 0) / v.length;
  if (v.length === 1) return m.toFixed(1); // one seed: no spread to show (the seeds column says which)
  const sd = Math.sqrt(v.reduce((a, b) => a + (b - m) ** 2, 0) / (v.length - 1));
  return `${m.toFixed(1)} ± ${sd.toFixed(1)}`;
}
function point(res: Json, kind: string, norm: string, eps: number): number | undefined {
  const a = (res.attacks as Json[]).find((x) => x.kind === kind && x.norm === norm);
  return (a?.points as Json[] | undefined)?.find((p) => p.epsilon === eps)?.accuracy;
}
function worst(res: Json, eps: number): number | undefined {
  return (res.worstCase as Json[]).find((w) => w.norm === 'linf' && w.epsilon === eps)?.accuracy;
}
/** Accuracy of the per-layer profile at ε_rel = 0.25: input site, and the weakest hidden site. */
function profile(res: Json): {input?: number; hidden?: number} {
  const layers = (res.layerProfile?.layers as Json[] | undefined) ?? [];
  const at = (l: Json) => (l.points as Json[]).find((p) => p.relativeEpsilon === 0.25)?.accuracy as number | undefined;
  const hidden = layers.filter((l) => !l.isInput).map(at).filter((x): x is number => x !== undefined);
  return {input: at(layers.find((l) => l.isInput) ?? {points: []}), hidden: hidden.length ? Math.min(...hidden) : undefined};
}
function perturbation(res: Json | undefined, part: string, key: string, value: number): number | undefined {
  return (res?.perturbations?.[part]?.points as Json[] | undefined)?.find((p) => p[key] === value)?.accuracy;
}

interface Done {
  seed: number;
  res: Json;
  meta: Json;
  /** `result` of the perturbations-only eval (undefined until it ran). */
  perturb: Json | undefined;
}
function finished(g: Group, r: Row): Done[] {
  const out: Done[] = [];
  for (const seed of seeds) {
    const dir = runDir(g, r, seed);
    const ev = tryJson(join(dir, 'eval.json'));
    const meta = tryJson(join(dir, 'run.json'));
    // A per-layer profile re-measured on its own (profile/eval.json) replaces the one in eval.json:
    // the runs evaluated before the L2-ball + box fix of the deep attack had a too weak input site.
    const profile = tryJson(join(dir, 'profile', 'eval.json'))?.result?.layerProfile as Json | undefined;
    if (ev && meta) out.push({seed, res: {...(ev.result as Json), ...(profile ? {layerProfile: profile} : {})}, meta, perturb: tryJson(join(dir, 'perturbations', 'eval.json'))?.result as Json | undefined});
  }
  return out;
}
function secondsPerEpoch(meta: Json): number | undefined {
  const s = (meta.history as Json[]).map((h) => h.seconds as number).filter((x) => Number.isFinite(x));
  return s.length ? s.reduce((a, b) => a + b, 0) / s.length : undefined;
}
function evalsPerStep(meta: Json): string {
  const o = meta.options as Json;
  if (o.method === 'none') return '1';
  if (o.method === 'fgsm') return '2';
  if (o.method === 'pgd') return `${Number(o.steps) + 1}`;
  const e = (meta.history as Json[]).at(-1)?.adv_grad_evals;
  return e === undefined ? '–' : (Number(e) + 1).toFixed(1);
}
function maskingSummary(done: Done[]): string {
  const warn = new Set<string>();
  let ran = 0;
  for (const d of done) {
    const checks = (d.res.checks as Json[] | undefined) ?? [];
    if (checks.length) ran++;
    for (const c of checks) if (c.status === 'warning') warn.add(c.check as string);
  }
  if (!ran) return '–';
  return warn.size ? `WARNING: ${[...warn].join(', ')}` : `ok (${ran}/${done.length})`;
}
const mean = (v: (number | undefined)[]) => {
  const f = v.filter((x): x is number => x !== undefined);
  return f.length ? f.reduce((a, b) => a + b, 0) / f.length : undefined;
};

function groupTables(g: Group): string {
  const e = g.epsilon;
  const headA = ['training', 'seeds', 'clean', `AutoAttack ε=${e} (headline)`, ...(g.epsilon !== 0.3 ? [`AutoAttack ε=0.3`] : []), `input worst case ε=${e}`, 'PGD-L2 ε=2', `deep threat ε=${e}`, 'gradient-masking checks', 's/epoch', 'grad evals/step'];
  const headB = ['training', 'per-layer: input (ε_rel=0.25)', 'per-layer: weakest hidden (ε_rel=0.25)', 'act. noise σ_rel=0.5', 'act. noise σ_rel=1', 'act. noise σ_rel=2', 'act. int8', 'act. int4', 'act. 2-bit', 'weight noise σ_rel=0.2', 'weight noise σ_rel=0.5', 'weight noise σ_rel=1'];
  const a = [`| ${headA.join(' | ')} |`, `|${headA.map(() => '---').join('|')}|`];
  const b = [`| ${headB.join(' | ')} |`, `|${headB.map(() => '---').join('|')}|`];
  let examples = 0;
  for (const r of g.rows) {
    const done = finished(g, r);
    if (done.length === 0) {
      a.push(`| ${r.label} | 0 | (not run yet) |`);
      b.push(`| ${r.label} | (not run yet) |`);
      continue;
    }
    examples = done[0].res.examples as number;
    const col = (f: (res: Json) => number | undefined) => stat(done.map((d) => f(d.res)));
    const sec = mean(done.map((d) => secondsPerEpoch(d.meta)));
    a.push(
      `| ${r.label} | ${done.map((d) => d.seed).join(',')} | ${col((x) => x.cleanAccuracy)} | ${col((x) => point(x, 'autoattack', 'linf', e))} | ` +
        `${g.epsilon !== 0.3 ? `${col((x) => point(x, 'autoattack', 'linf', 0.3))} | ` : ''}${col((x) => worst(x, e))} | ${col((x) => point(x, 'pgd', 'l2', 2))} | ` +
        `${col((x) => point(x, 'deep', 'linf', e))} | ${maskingSummary(done)} | ${sec === undefined ? '–' : sec.toFixed(0)} | ${evalsPerStep(done[0].meta)} |`,
    );
    const pcol = (part: string, key: string, v: number) => stat(done.map((d) => perturbation(d.perturb, part, key, v)));
    b.push(
      `| ${r.label} | ${col((x) => profile(x).input)} | ${col((x) => profile(x).hidden)} | ` +
        [0.5, 1, 2].map((v) => pcol('activationNoise', 'relativeSigma', v)).join(' | ') + ' | ' +
        [8, 4, 2].map((v) => pcol('activationQuantization', 'bits', v)).join(' | ') + ' | ' +
        [0.2, 0.5, 1].map((v) => pcol('weightNoise', 'relativeSigma', v)).join(' | ') + ' |',
    );
  }
  return [
    `### ${g.title}`,
    '',
    `Training: ${TRAIN_LIMIT} images (the next ${VAL_LIMIT} for validation), ${g.epochs} epochs${g.warmupSteps ? ` (adversarial rows: attack strength ramped linearly over the first ${g.warmupSteps} of ${g.epochs * STEPS_PER_EPOCH} steps)` : ''}, batch 64, Adam 1e-3; ` +
      `accuracies in % (mean ± sample sd over the seeds listed; a bare value is a single seed) on the first ${examples || g.testLimit} MNIST test images.`,
    '',
    ...a,
    '',
    'Hidden-layer perturbations (the same runs):',
    '',
    ...b,
  ].join('\n');
}

function footnotes(): string {
  return [
    `AutoAttack: the standard cascade APGD-CE → APGD-T (9 targets) → Square 5000 (FAB-T not implemented), L∞ inside [0, 1]. ` +
      `Input worst case: per example over FGSM, PGD-${PGD_STEPS} (${RESTARTS} restarts, CE and the eval defaults) and AutoAttack. PGD-L2: PGD-${PGD_STEPS} at L2 radius 2. ` +
      `Deep threat: the deep attack (default solver, ${DEEP_EVALS} gradient evaluations) with the input L∞ budget ε inside [0, 1] plus a quadratic penalty λ = 1 on every hidden layer — the same threat for every model, plain models instrumented on the fly. ` +
      `Gradient-masking checks: Square breaking what the gradient attacks did not, FGSM beating an iterative attack, accuracy above 2 % at ε = 0.5 (see README); "ok (n/m)" = checks ran and passed on n of m seeds. ` +
      `Per-layer profile: one site disturbed at a time (deep attack, L2 radius ε_rel × the site's mean clean activation norm). ` +
      `Random perturbations (\`evaluatePerturbations\`, a separate eval per run): Gaussian noise on every hidden activation at once, σ = σ_rel × the site's RMS clean activation; ` +
      `activation int8/int4/2-bit: per-tensor asymmetric min–max quantisation of every hidden activation, applied site by site; weight noise: every kernel and bias w ← w + σ_rel·std(w)·N(0, 1); noise levels averaged over 5 draws per seed. ` +
      `Gradient evaluations per step include the weight update (PGD-k: k + 1; FGSM-RS: 2; deep: the solver's measured mean + 1). s/epoch: wall time per epoch on the 2-core machine, one run at a time but with other work on the second core.`,
  ].join('\n');
}

function render(): void {
  const path = resolve(flags.results);
  mkdirSync(dirname(path), {recursive: true});
  const begin = '<!-- results:begin (generated by `npm run experiment`) -->';
  const end = '<!-- results:end -->';
  const machine = `${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}`;
  const commits = new Set<string>();
  const evalCommits = new Set<string>();
  for (const g of GROUPS) for (const r of g.rows) for (const s of seeds) {
    const c = tryJson(join(runDir(g, r, s), 'code.json'));
    if (c) commits.add(c.commit as string);
    const e = tryJson(join(runDir(g, r, s), 'eval-code.json'));
    if (e) evalCommits.add(e.commit as string);
  }
  const body = [
    `Machine: ${machine}. Command: \`npm run experiment${quick ? ' -- --quick' : ''}\` (resumable; see scripts/experiment.ts). Backend: ${flags.backend}. ` +
      `Trained at package commit(s): ${[...commits].join(', ') || '–'}; evaluated at: ${[...evalCommits].join(', ') || '–'} (per run in code.json / eval-code.json).`,
    '',
    ...GROUPS.map(groupTables),
    '',
    footnotes(),
  ].join('\n\n');
  const generated = `${begin}\n\n${body}\n\n${end}`;
  const current = existsSync(path) ? readFileSync(path, 'utf8') : `# Results\n\n${begin}\n${end}\n`;
  const i = current.indexOf(begin);
  const j = current.indexOf(end);
  const next = i >= 0 && j > i ? current.slice(0, i) + generated + current.slice(j + end.length) : `${current}\n${generated}\n`;
  writeFileSync(path, next);
  console.log(`wrote ${relative(process.cwd(), path)}`);
}

async function reports(): Promise<void> {
  for (const g of selectedGroups()) {
    const dirs = g.rows.map((r) => runDir(g, r, seeds[0])).filter((d) => existsSync(join(d, 'eval.json')) && existsSync(join(d, 'model', 'model.json')));
    if (dirs.length === 0) continue;
    const file = join(outDir, `report-${g.id}.html`);
    await cli(['report', ...dirs, '--out', file, '--title', `${g.title} — seed ${seeds[0]}`], join(outDir, `report-${g.id}.log`));
    console.log(`wrote ${relative(process.cwd(), file)}`);
  }
}

const t0 = Date.now();
mkdirSync(outDir, {recursive: true});
if (!flags.render) await pool(Math.max(1, Number(flags.jobs)));
if (flags.stage !== 'train') await reports().catch((e: Error) => console.error(`report: ${e.message}`));
render();
console.log(`experiment finished in ${((Date.now() - t0) / 60000).toFixed(1)} min`);
