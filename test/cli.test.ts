import {tf} from './setup.js';
import assert from 'node:assert/strict';
import {spawn, spawnSync} from 'node:child_process';
import {existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync} from 'node:fs';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import {after, before, describe, it} from 'node:test';

import {loadLatestCheckpoint} from '../cli/src/checkpoint.js';
import {runCli} from './fixtures/cli.js';
import {seededPermutation} from '../cli/src/train.js';

const ROOT = join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..');
const RUN = ['--import', 'tsx', join(ROOT, 'cli', 'src', 'run.ts')];

let tmp = '';
before(() => {
  tmp = mkdtempSync(join(tmpdir(), 'tfjs-da-cli-'));
});
after(() => {
  if (tmp) rmSync(tmp, {recursive: true, force: true});
});

/** Runs the CLI to completion. */
function cli(args: string[]): {code: number | null; stdout: string; stderr: string} {
  const r = spawnSync(process.execPath, [...RUN, ...args], {cwd: ROOT, encoding: 'utf8', env: {...process.env, FORCE_COLOR: '0'}});
  return {code: r.status, stdout: r.stdout, stderr: r.stderr};
}

/** Tiny, fast training settings (cpu backend, deterministic). */
// 3 batches per epoch; the attack strength ramps over the first 4 steps (across the epoch boundary, also on --resume)
const TINY = ['--limit', '96', '--batch-size', '32', '--val-limit', '32', '--max-iterations', '2', '--backend', 'cpu', '--progress', 'lines', '--seed', '5', '--warmup-steps', '4'];

/** Spawns the CLI, calls `onLine` for every stdout line; resolves with the exit code and output. */
function spawnCli(args: string[], onLine: (line: string, child: ReturnType<typeof spawn>) => void): Promise<{code: number | null; signal: string | null; stdout: string; stderr: string}> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...RUN, ...args], {cwd: ROOT, env: {...process.env, FORCE_COLOR: '0'}});
    let stdout = '';
    let stderr = '';
    let buf = '';
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (d: string) => {
      stdout += d;
      buf += d;
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        onLine(line, child);
      }
    });
    child.stderr.on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({code, signal, stdout, stderr}));
  });
}

let fullRunOutput = '';
/** The uninterrupted 2-epoch reference run (trained once, shared by the tests). */
function fullRun(): string {
  const dir = join(tmp, 'full');
  if (!existsSync(join(dir, 'run.json'))) {
    const t = cli(['train', ...TINY, '--epochs', '2', '--out', dir]);
    assert.equal(t.code, 0, t.stderr);
    fullRunOutput = t.stdout;
  }
  return dir;
}

/** The weight bytes of a run's final model, from the files its model.json names. */
function weightsOf(runDir: string): Buffer {
  const dir = join(runDir, 'model');
  const json = JSON.parse(readFileSync(join(dir, 'model.json'), 'utf8')) as {weightsManifest: {paths: string[]}[]};
  return Buffer.concat(json.weightsManifest.flatMap((g) => g.paths).map((p) => readFileSync(join(dir, p))));
}

function historyOf(runDir: string): Record<string, number>[] {
  const run = JSON.parse(readFileSync(join(runDir, 'run.json'), 'utf8')) as {history: Record<string, number>[]};
  return run.history.map(({seconds: _s, ...rest}) => rest);
}

describe('CLI', () => {
  it('bad flags exit with code 2 and a message naming the flag', async () => {
    // Two real processes for the exit code…
    for (const [args, re] of [[['train', '--epochs', '0'], /option '--epochs <n>' argument '0' is invalid/], [['train', '--resume'], /--resume needs --out/]] as const) {
      const r = cli([...args]);
      assert.equal(r.code, 2, `${args.join(' ')}: exit code ${r.code}\n${r.stderr}`);
      assert.match(r.stderr, re);
    }
    // …and the rest in-process (same code path: main() returns the exit code).
    const cases: [string[], RegExp][] = [
      [['train', '--method', 'magic'], /--method/],
      [['train', '--epsilon', 'abc'], /--epsilon/],
      [['train', '--batch-size', '2.5'], /--batch-size/],
      [['train', '--backend', 'gpu'], /--backend/],
      [['train', '--no-such-flag'], /--no-such-flag/],
      [['train', '--input-penalty', '{"kind":"linf"}'], /--input-penalty.*epsilon/],
      [['train', '--warmup', '1', '--warmup-steps', '10'], /--warmup 1 \(epochs\) and --warmup-steps 10: give one warm-up, not both/],
      [['eval', 'x', '--attacks', 'pgd,cw'], /--attacks.*cw/s],
      [['eval', 'x', '--epsilons', '0,-1'], /--epsilons/],
      [['eval', 'x', '--quant-bits', '8,0'], /--quant-bits.*integers from 1 to 16/s],
      [['eval'], /missing required argument 'model'/],
      [['report'], /missing required argument 'runs'/],
      [['eval', join(tmp, 'nowhere')], /no such file or directory/],
      [['report', join(tmp, 'nowhere')], /not a directory/],
      [['frobnicate'], /unknown command 'frobnicate'/],
    ];
    for (const [args, re] of cases) {
      const r = await runCli(args);
      assert.equal(r.code, 2, `${args.join(' ')}: exit code ${r.code}\n${r.stderr}`);
      assert.match(r.stderr, re, `${args.join(' ')}: ${r.stderr}`);
    }
    for (const cmd of ['train', 'eval', 'report', 'bench', 'start']) {
      const h = await runCli([cmd, '--help']);
      assert.equal(h.code, 0, cmd);
      assert.match(h.stdout, /Usage: tfjs-deep-adversarial/);
    }
  });

  it('train → eval → report end to end on a tiny run (report: one SVG per chart, well-formed HTML)', () => {
    const run = fullRun();
    assert.match(fullRunOutput, /epoch 2\/2 .*checkpoint saved/);
    for (const f of ['run.json', 'model/model.json', 'checkpoints/latest']) assert.ok(existsSync(join(run, f)), f);
    const meta = JSON.parse(readFileSync(join(run, 'run.json'), 'utf8'));
    assert.equal(meta.status, 'complete');
    assert.equal(meta.history.length, 2);
    assert.ok(Object.keys(meta.history[0]).some((k) => k.startsWith('adv_norm_')), 'per-layer disturbance norms logged');
    assert.ok(meta.history[1].val_pgd_acc >= 0 && meta.history[1].val_acc >= 0);
    // --warmup-steps 4 over 3 batches per epoch: strengths 0, ¼, ½ | ¾, 1, 1 (epoch means 0.25, 0.9167)
    assert.equal(meta.options.warmupSteps, 4);
    assert.ok(Math.abs(meta.history[0].adv_strength - 0.25) < 1e-9 && Math.abs(meta.history[1].adv_strength - 11 / 12) < 1e-9, `adv_strength ${meta.history.map((h: {adv_strength: number}) => h.adv_strength)}`);

    const e = cli(['eval', run, '--limit', '40', '--epsilons', '0,0.1', '--pgd-steps', '3', '--deep-iterations', '2', '--layer-profile', '0.1',
      '--convergence-examples', '8', '--convergence-evals', '6', '--backend', 'cpu', '--progress', 'off', '--batch-size', '20',
      '--activation-noise', '0,0.5', '--quant-bits', '2', '--perturbation-draws', '2']);
    assert.equal(e.code, 0, e.stderr);
    assert.match(e.stdout, /robust accuracy, L∞/);
    assert.match(e.stdout, /worst case \(L∞\)/);
    const ev = JSON.parse(readFileSync(join(run, 'eval.json'), 'utf8'));
    assert.equal(ev.result.examples, 40);
    assert.deepEqual(ev.result.attacks.map((a: {name: string}) => a.name), ['FGSM', 'PGD-3 L∞', 'Deep threat (input + hidden layers)']);
    assert.equal(ev.result.layerProfile.layers.length, 3, 'input + two hidden disturbances of the MLP');
    assert.ok(existsSync(join(run, 'convergence.json')));
    const pt = ev.result.perturbations;
    assert.equal(pt.examples, 40);
    assert.equal(pt.cleanAccuracy, ev.result.cleanAccuracy);
    assert.deepEqual(pt.activationNoise.points.map((q: {relativeSigma: number; draws: number}) => [q.relativeSigma, q.draws]), [[0, 2], [0.5, 2]]);
    assert.equal(pt.activationNoise.points[0].accuracy, pt.cleanAccuracy, 'σ_rel = 0 is the clean accuracy');
    assert.deepEqual(pt.activationQuantization.points.map((q: {bits: number}) => q.bits), [2]);
    assert.deepEqual(pt.weightNoise.points.map((q: {relativeSigma: number}) => q.relativeSigma), [0.05, 0.1, 0.2]);
    assert.equal(pt.activationNoise.sites.length, 2, 'the two hidden disturbances of the MLP (not the input)');
    assert.match(e.stdout, /random perturbations \(40 examples\)[\s\S]*activation quantisation \(all hidden sites\) +2 bits/);
    const off = cli(['eval', run, '--attacks', 'fgsm', '--limit', '10', '--epsilons', '0.1', '--no-layer-profile', '--no-convergence', '--no-perturbations',
      '--backend', 'cpu', '--progress', 'off', '--out', join(tmp, 'no-perturbations')]);
    assert.equal(off.code, 0, off.stderr);
    assert.equal(JSON.parse(readFileSync(join(tmp, 'no-perturbations', 'eval.json'), 'utf8')).result.perturbations, undefined);
    assert.doesNotMatch(off.stdout, /random perturbations/);

    const r = cli(['report', run]);
    assert.equal(r.code, 0, r.stderr);
    const m = /report: (\d+) charts/.exec(r.stdout);
    assert.ok(m, r.stdout);
    const charts = Number(m[1]);
    assert.equal(charts, 5, 'accuracy vs ε, training curves, ‖dℓ‖, convergence, per-layer bars');
    const html = readFileSync(join(run, 'report.html'), 'utf8');
    assert.equal((html.match(/<figure /g) ?? []).length, charts);
    assert.equal((html.match(/<svg[\s>]/g) ?? []).length, charts, 'one SVG per chart');
    assert.equal((html.match(/<\/svg>/g) ?? []).length, charts);
    assert.match(html, /^<!DOCTYPE html>\n<html lang="en">/);
    assert.match(html, /<meta charset="utf-8">/);
    assert.match(html, /<title>[^<]+<\/title>/);
    assert.ok(!/<script/i.test(html) && !/\b(src|href)="https?:/i.test(html), 'self-contained: no scripts, no external resources');
    // Well-formed: every non-void element outside the SVGs is closed in order.
    const outside = html.replace(/<svg[\s\S]*?<\/svg>/g, '');
    const voids = new Set(['meta', 'br', 'link', 'img', 'hr', 'input']);
    const stack: string[] = [];
    for (const tag of outside.matchAll(/<(\/?)([a-zA-Z][a-zA-Z0-9]*)[^>]*>/g)) {
      const name = tag[2].toLowerCase();
      if (voids.has(name)) continue;
      if (tag[1] === '') stack.push(name);
      else assert.equal(stack.pop(), name, `unbalanced </${name}>`);
    }
    assert.deepEqual(stack, []);
    // Axis titles carry units.
    assert.match(html, /ε — L∞ radius \(max change per pixel, intensity scale \[0, 1\]\)/);
    assert.match(html, /batched gradient evaluations \(count\)/);
    assert.match(html, /<h2>Random perturbations of hidden activations and weights<\/h2>[\s\S]*<th>activation noise σ_rel=0.5<\/th><th>activations 2-bit<\/th>/);
    assert.doesNotMatch(html, /Per-layer vulnerability[^<]*\(profile\/eval\.json\)/);
    // a per-layer profile re-measured on its own (profile/eval.json) is the one charted
    mkdirSync(join(run, 'profile'), {recursive: true});
    const reprofiled = {...ev, result: {...ev.result, layerProfile: {...ev.result.layerProfile, layers: ev.result.layerProfile.layers.slice(0, 2)}}};
    writeFileSync(join(run, 'profile', 'eval.json'), JSON.stringify(reprofiled));
    const r2 = cli(['report', run, '--out', join(tmp, 'report-reprofiled.html')]);
    assert.equal(r2.code, 0, r2.stderr);
    const html2 = readFileSync(join(tmp, 'report-reprofiled.html'), 'utf8');
    assert.match(html2, /Per-layer vulnerability[^<]*\(profile\/eval\.json\)/);
    rmSync(join(run, 'profile'), {recursive: true});
    tf.dispose([]);
  });

  it('--resume gives the same weights and history as an uninterrupted run (epoch boundary and Ctrl-C mid-epoch)', async () => {
    const full = fullRun();

    // Stop after epoch 1, then resume to 2 epochs.
    const split = join(tmp, 'split');
    assert.equal(cli(['train', ...TINY, '--epochs', '1', '--out', split]).code, 0);
    const res = cli(['train', '--resume', '--out', split, '--epochs', '2', '--backend', 'cpu', '--progress', 'lines']);
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stdout, /resuming .* from checkpoint epoch-0001/);
    assert.ok(weightsOf(split).equals(weightsOf(full)), 'weights identical after resume at an epoch boundary');
    assert.deepEqual(historyOf(split), historyOf(full));

    // Ctrl-C during epoch 2: a mid-epoch checkpoint, exit code 130; resuming finishes identically.
    const intr = join(tmp, 'interrupted');
    let sent = false;
    const r = await spawnCli(['train', ...TINY, '--epochs', '2', '--out', intr], (line, child) => {
      if (!sent && /epoch 1\/2 .*checkpoint saved/.test(line)) {
        sent = true;
        child.kill('SIGINT');
      }
    });
    assert.ok(sent);
    assert.equal(r.code, 130, `${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, /interrupted: checkpoint saved: .*epoch-0001-b0000\d/);
    const meta = JSON.parse(readFileSync(join(intr, 'run.json'), 'utf8'));
    assert.equal(meta.status, 'interrupted');
    const res2 = cli(['train', '--resume', '--out', intr, '--backend', 'cpu', '--epochs', '2', '--progress', 'lines']);
    assert.equal(res2.code, 0, res2.stderr);
    assert.ok(weightsOf(intr).equals(weightsOf(full)), 'weights identical after a mid-epoch resume');
    const h1 = historyOf(intr);
    const h0 = historyOf(full);
    assert.equal(h1.length, h0.length);
    h1.forEach((rec, i) => {
      for (const [k, v] of Object.entries(h0[i])) assert.ok(Math.abs(rec[k] - v) <= 1e-6 * Math.max(1, Math.abs(v)), `epoch ${i + 1} ${k}: ${rec[k]} vs ${v}`);
    });
  });

  it('a train killed with SIGKILL leaves a loadable checkpoint', async () => {
    const run = join(tmp, 'killed');
    let killed = false;
    const r = await spawnCli(['train', ...TINY, '--epochs', '20', '--out', run], (line, child) => {
      if (!killed && /checkpoint saved/.test(line)) {
        killed = true;
        child.kill('SIGKILL');
      }
    });
    assert.ok(killed);
    assert.equal(r.signal, 'SIGKILL');
    const ck = await loadLatestCheckpoint(run);
    assert.ok(ck.state.epochsDone >= 1);
    const x = tf.zeros([2, 784]);
    const y = ck.model.predict(x) as tf.Tensor;
    assert.deepEqual(y.shape, [2, 10]);
    const sums = tf.sum(y, 1);
    for (const s of sums.dataSync()) assert.ok(Math.abs(s - 1) < 1e-5);
    tf.dispose([x, y, sums]);
    ck.model.dispose();
    // It can be resumed, too.
    const res = cli(['train', '--resume', '--out', run, '--epochs', String(ck.state.epochsDone + 1), '--backend', 'cpu', '--progress', 'off']);
    assert.equal(res.code, 0, res.stderr);
  });

  it('seededPermutation is a deterministic permutation', () => {
    const a = seededPermutation(50, 3);
    assert.deepEqual(Array.from(a).sort((p, q) => p - q), Array.from({length: 50}, (_, i) => i));
    assert.deepEqual(Array.from(seededPermutation(50, 3)), Array.from(a));
    assert.notDeepEqual(Array.from(seededPermutation(50, 4)), Array.from(a));
  });
});
