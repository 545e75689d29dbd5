// `npm run experiment -- --quick` end to end on one row: trains, evaluates, renders the tables, and a
// second invocation reuses the finished run instead of redoing it (the resumability the docs rely on).
import assert from 'node:assert/strict';
import {spawnSync} from 'node:child_process';
import {existsSync, mkdtempSync, readFileSync, rmSync} from 'node:fs';
import {tmpdir} from 'node:os';
import {join, resolve} from 'node:path';
import {test} from 'node:test';

const ROOT = resolve(import.meta.dirname, '..');

function experiment(args: string[]): {code: number | null; out: string} {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'scripts/experiment.ts', ...args], {cwd: ROOT, encoding: 'utf8', timeout: 300_000});
  return {code: r.status, out: `${r.stdout}${r.stderr}`};
}

test('experiment --quick: one row trained + evaluated, table rendered, second run reuses it', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tda-experiment-'));
  try {
    const results = join(dir, 'RESULTS.md');
    const args = ['--quick', '--rows', 'plain', '--out', dir, '--results', results];
    const first = experiment(args);
    assert.equal(first.code, 0, first.out);
    assert.match(first.out, /\[mlp-0\.1\/plain\/s1\] train/);
    assert.match(first.out, /\[mlp-0\.1\/plain\/s1\] eval/);
    assert.match(first.out, /\[mlp-0\.1\/plain\/s1\] perturbations/);
    const run = join(dir, 'runs', 'mlp-0.1', 'plain', 's1');
    const ev = JSON.parse(readFileSync(join(run, 'eval.json'), 'utf8'));
    assert.equal(ev.result.examples, 100);
    const pert = JSON.parse(readFileSync(join(run, 'perturbations', 'eval.json'), 'utf8'));
    assert.deepEqual(pert.result.perturbations.activationNoise.points.map((p: {relativeSigma: number}) => p.relativeSigma), [0.5, 1, 2]);
    assert.deepEqual(pert.result.perturbations.activationQuantization.points.map((p: {bits: number}) => p.bits), [8, 4, 2]);
    assert.ok(existsSync(join(dir, 'report-mlp-0.1.html')));
    const md = readFileSync(results, 'utf8');
    // The finished row has a value for clean accuracy equal to eval.json's; the others say they are missing.
    const clean = (100 * ev.result.cleanAccuracy).toFixed(1);
    assert.match(md, new RegExp(`\\| Standard training \\| 1 \\| ${clean.replace('.', '\\.')} \\|`));
    assert.match(md, /\| PGD-AT L∞ ε=0\.1, k=7 \| 0 \| \(not run yet\) \|/);
    assert.match(md, /<!-- results:begin[\s\S]*<!-- results:end -->/);

    const second = experiment(args);
    assert.equal(second.code, 0, second.out);
    assert.doesNotMatch(second.out, /\] (train|eval|perturbations)/, 'the finished run is reused, not redone');
    assert.equal(readFileSync(results, 'utf8').replace(/Machine:.*\n/, ''), md.replace(/Machine:.*\n/, ''));
  } finally {
    rmSync(dir, {recursive: true, force: true});
  }
});
