// Run directories under careless use and failure: existing runs, --resume keeping the recorded
// options, runs killed before their first checkpoint, hostile/damaged checkpoints, and user errors
// that must exit 2 with one line (issue 14, items 5–8 and 14).
import {tf} from './setup.js';
import assert from 'node:assert/strict';
import {spawn, spawnSync} from 'node:child_process';
import {createHash} from 'node:crypto';
import * as fs from 'node:fs';
import {cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync} from 'node:fs';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import {after, before, describe, it} from 'node:test';

import {loadLatestCheckpoint} from '../cli/src/checkpoint.js';
import {resolveModelDir} from '../cli/src/common.js';
import {penaltyKinds} from '../cli/src/report.js';
import {runCli} from './fixtures/cli.js';

const ROOT = join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..');

let tmp = '';
before(() => {
  tmp = mkdtempSync(join(tmpdir(), 'tfjs-da-clirel-'));
});
after(() => {
  if (tmp) rmSync(tmp, {recursive: true, force: true});
});

/** Asserts exit code 2 and exactly one stderr line `error: …` matching `re`, without a stack trace. */
function assertUserError(r: {code: number; stderr: string}, re: RegExp, what: string): void {
  assert.equal(r.code, 2, `${what}: exit code ${r.code}\n${r.stderr}`);
  const lines = r.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, `${what}: one line expected, got:\n${r.stderr}`);
  assert.match(lines[0], /^error: /, what);
  assert.match(lines[0], re, what);
  assert.ok(!/\bat .+:\d+:\d+/.test(r.stderr), `${what}: no stack trace`);
}

/** Tiny and fast: deep training, 2 batches of 32, no validation, cpu backend. */
const TINY = ['--limit', '64', '--batch-size', '32', '--val-limit', '0', '--max-iterations', '1', '--backend', 'cpu', '--progress', 'off', '--seed', '3'];

function readRun(dir: string): {status: string; epochsDone: number; options: Record<string, unknown>; history: unknown[]; createdAt: string; error?: string} {
  return JSON.parse(readFileSync(join(dir, 'run.json'), 'utf8'));
}

function modelWeights(modelDir: string): Buffer {
  const json = JSON.parse(readFileSync(join(modelDir, 'model.json'), 'utf8')) as {weightsManifest: {paths: string[]}[]};
  return Buffer.concat(json.weightsManifest.flatMap((g) => g.paths).map((p) => readFileSync(join(modelDir, p))));
}

/** Rewrites a checkpoint's checksums.json after a deliberate edit (as another tool would write it). */
function resum(ckDir: string): void {
  const path = join(ckDir, 'checksums.json');
  const sums = JSON.parse(readFileSync(path, 'utf8')) as {files: Record<string, string>};
  for (const f of Object.keys(sums.files)) sums.files[f] = createHash('sha256').update(readFileSync(join(ckDir, f))).digest('hex');
  writeFileSync(path, JSON.stringify(sums));
}

let reference = '';
/** A complete 1-epoch run (trained once, copied by the tests that damage it). */
async function referenceRun(): Promise<string> {
  if (!reference) {
    const dir = join(tmp, 'reference');
    const r = await runCli(['train', ...TINY, '--epochs', '1', '--out', dir]);
    assert.equal(r.code, 0, r.stderr);
    reference = dir;
  }
  return reference;
}

function copyRun(name: string, from: string): string {
  const dir = join(tmp, name);
  cpSync(from, dir, {recursive: true});
  return dir;
}

describe('CLI run directories', () => {
  it("report reads run.json's latestCheckpoint only inside the run's checkpoints directory (no '..', no symbolic link)", async () => {
    const base = join(tmp, 'report-latest');
    const dir = join(base, 'run');
    /** A model.json with one Disturbance layer 'd0' of penalty kind `kind`. */
    const modelJson = (at: string, kind: string) => {
      mkdirSync(join(at, 'model'), {recursive: true});
      writeFileSync(join(at, 'model', 'model.json'), JSON.stringify({modelTopology: {config: {layers: [{class_name: 'Disturbance', config: {name: 'd0', penalty: {kind}}}]}}}));
    };
    modelJson(join(dir, 'checkpoints', 'epoch-0001'), 'l1');
    modelJson(join(base, 'outside'), 'linf');
    const meta = (latestCheckpoint: string) => ({latestCheckpoint}) as never;
    // the run's own checkpoint is read (so the refusals below are not a reader that never reads)
    assert.deepEqual(penaltyKinds(dir, meta('epoch-0001')), {d0: 'l1'});
    // a name leading outside the run is not followed
    for (const hostile of ['../../outside', '../outside', join(base, 'outside'), 'epoch-0001/../../../outside']) {
      assert.deepEqual(penaltyKinds(dir, meta(hostile)), {}, hostile);
    }
    // a checkpoint directory that is a symbolic link to somewhere else is not followed either
    symlinkSync(join(base, 'outside'), join(dir, 'checkpoints', 'epoch-0002'));
    assert.deepEqual(penaltyKinds(dir, meta('epoch-0002')), {});
    // a FIFO in place of model.json is skipped (reading it would block)
    mkdirSync(join(dir, 'checkpoints', 'epoch-0003', 'model'), {recursive: true});
    if (spawnSync('mkfifo', [join(dir, 'checkpoints', 'epoch-0003', 'model', 'model.json')]).status === 0) {
      assert.deepEqual(penaltyKinds(dir, meta('epoch-0003')), {});
    }
    // the whole report command runs on such a run
    writeFileSync(join(dir, 'run.json'), readFileSync(join(await referenceRun(), 'run.json'), 'utf8').replace(/"latestCheckpoint":\s*("[^"]*"|null)/, '"latestCheckpoint": "../../outside"'));
    const r = await runCli(['report', dir, '--out', join(base, 'report')]);
    assert.equal(r.code, 0, r.stderr);
  });

  it('item 6: train --out on an existing run refuses (exit 2, says --resume / --overwrite); --overwrite starts over', async () => {
    const ref = await referenceRun();
    const dir = copyRun('existing', ref);
    const before = readFileSync(join(dir, 'run.json'), 'utf8');
    const r = await runCli(['train', ...TINY, '--epochs', '1', '--out', dir]);
    assertUserError(r, /already holds a run \(complete, 1\/1 epochs\); continue it with `train --resume --out .*`, or start over in a new directory or with --overwrite/, 'existing run');
    assert.equal(readFileSync(join(dir, 'run.json'), 'utf8'), before, 'run.json untouched');

    assertUserError(await runCli(['train', '--resume', '--overwrite', '--out', dir]), /give only one of them/, '--resume --overwrite');

    writeFileSync(join(dir, 'notes.txt'), 'mine');
    const o = await runCli(['train', ...TINY, '--epochs', '1', '--seed', '4', '--out', dir, '--overwrite']);
    assert.equal(o.code, 0, o.stderr);
    const meta = readRun(dir);
    assert.equal(meta.options.seed, 4);
    assert.notEqual(meta.createdAt, JSON.parse(before).createdAt, 'a new run');
    assert.equal(readFileSync(join(dir, 'notes.txt'), 'utf8'), 'mine', 'files that are not the run\'s are kept');
    assert.ok(!modelWeights(join(dir, 'model')).equals(modelWeights(join(ref, 'model'))), 'new weights (another seed)');
  });

  it('item 5: --resume keeps the recorded options (epochs included) unless a flag overrides them', async () => {
    const ref = await referenceRun();
    // A finished run: resuming without --epochs does nothing.
    const done = copyRun('finished', ref);
    const before = readFileSync(join(done, 'run.json'), 'utf8');
    const r = await runCli(['train', '--resume', '--out', done, '--progress', 'off']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /is complete \(1\/1 epochs\); nothing to do/);
    assert.equal(readFileSync(join(done, 'run.json'), 'utf8'), before, 'no third epoch, nothing rewritten');
    // A flag that would change the run is refused, naming the recorded value.
    assertUserError(await runCli(['train', '--resume', '--out', done, '--lambda', '3', '--epochs', '2']), /--lambda 3 differs from the run's recorded 1/, 'changed --lambda');
    assertUserError(await runCli(['train', '--resume', '--out', done, '--epochs', '2', '--limit', '96']), /--limit 96 differs from the run's recorded 64/, 'changed --limit');
    // The same value as recorded is fine; --epochs extends.
    const ext = await runCli(['train', '--resume', '--out', done, '--epochs', '2', '--seed', '3', '--progress', 'off']);
    assert.equal(ext.code, 0, ext.stderr);
    assert.equal(readRun(done).history.length, 2);
    assert.equal(readRun(done).options.epochs, 2);

    // A 2-epoch run killed after its first epoch: resuming without --epochs finishes at 2 (not the default 3).
    const killed = copyRun('killed-after-1', ref);
    const meta = readRun(killed);
    meta.options.epochs = 2;
    meta.status = 'running';
    writeFileSync(join(killed, 'run.json'), JSON.stringify(meta));
    rmSync(join(killed, 'model'), {recursive: true});
    const k = await runCli(['train', '--resume', '--out', killed, '--progress', 'off']);
    assert.equal(k.code, 0, k.stderr);
    assert.equal(readRun(killed).status, 'complete');
    assert.equal(readRun(killed).history.length, 2);
    assert.equal(readRun(killed).epochsDone, 2);
    // …and ends where the uninterrupted extension above ended (same seed and options).
    assert.ok(modelWeights(join(killed, 'model')).equals(modelWeights(join(done, 'model'))), 'same weights as the run extended to 2 epochs');
  });

  it('item 7: a run killed before its first checkpoint is resumed from scratch (same result as an uninterrupted run)', async () => {
    const ref = await referenceRun();
    const dir = join(tmp, 'killed-early');
    // A real process, SIGKILLed as soon as it starts training (run.json written, no checkpoint yet).
    const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'cli', 'src', 'run.ts'), 'train', ...TINY, '--epochs', '1', '--progress', 'lines', '--out', dir], {cwd: ROOT});
    let killed = false;
    let output = '';
    await new Promise<void>((resolve, reject) => {
      child.stdout.setEncoding('utf8');
      child.stdout.on('data', (d: string) => {
        output += d;
        if (!killed && /^training /m.test(output)) {
          killed = true;
          child.kill('SIGKILL');
        }
      });
      child.on('error', reject);
      child.on('close', () => resolve());
    });
    assert.ok(killed, output);
    assert.equal(readRun(dir).status, 'running');
    assert.ok(!existsSync(join(dir, 'checkpoints', 'latest')), 'killed before the first checkpoint');
    const r = await runCli(['train', '--resume', '--out', dir, '--progress', 'off']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /has no checkpoint yet .*: starting it from scratch with its recorded options/);
    assert.equal(readRun(dir).status, 'complete');
    assert.ok(modelWeights(join(dir, 'model')).equals(modelWeights(join(ref, 'model'))), 'identical to the uninterrupted run');
  });

  it('item 8: checkpoints/latest leading outside the run is refused; a damaged checkpoint file of the right size is detected', async () => {
    const ref = await referenceRun();
    const out = copyRun('hostile-latest', ref);
    rmSync(join(out, 'model'), {recursive: true});
    cpSync(join(out, 'checkpoints', 'epoch-0001'), join(tmp, 'elsewhere'), {recursive: true});
    writeFileSync(join(out, 'checkpoints', 'latest'), '../../elsewhere\n');
    assertUserError(await runCli(['train', '--resume', '--out', out, '--epochs', '2']), /latest names "..\/..\/elsewhere", which is not a checkpoint directory of this run/, 'latest ../');
    assert.throws(() => resolveModelDir(out, 'eval: model'), /not a checkpoint directory of this run/);
    // A checkpoint directory that is a symbolic link to somewhere else is not followed either.
    rmSync(join(out, 'checkpoints', 'epoch-0001'), {recursive: true});
    symlinkSync(join(tmp, 'elsewhere'), join(out, 'checkpoints', 'epoch-0001'));
    writeFileSync(join(out, 'checkpoints', 'latest'), 'epoch-0001\n');
    await assert.rejects(() => loadLatestCheckpoint(out), /epoch-0001: .* is not a directory \(a symbolic link; checkpoints must lie inside the run\)/);
    assert.throws(() => resolveModelDir(out, 'eval: model'), /missing or not a directory/);

    // A FIFO as checkpoints/latest is refused at once (reading it would block).
    rmSync(join(out, 'checkpoints', 'latest'));
    if (spawnSync('mkfifo', [join(out, 'checkpoints', 'latest')]).status === 0) {
      assertUserError(await runCli(['train', '--resume', '--out', out, '--epochs', '2']), /latest is not a regular file; refusing to follow it/, 'FIFO latest');
      assert.throws(() => resolveModelDir(out, 'eval: model'), /latest is not a regular file/);
    }

    // Flipped bytes, same size: refused by the checksum, naming the file.
    const bad = copyRun('flipped', ref);
    const w = join(bad, 'checkpoints', 'epoch-0001', 'model', 'weights.bin');
    const bytes = readFileSync(w);
    bytes[100] ^= 0x40;
    writeFileSync(w, bytes);
    assertUserError(await runCli(['train', '--resume', '--out', bad, '--epochs', '2']), /model\/weights\.bin does not match its SHA-256/, 'flipped weights');
    const s = join(bad, 'checkpoints', 'epoch-0001', 'state.json');
    bytes[100] ^= 0x40;
    writeFileSync(w, bytes);
    writeFileSync(s, readFileSync(s, 'utf8').replace('"epochsDone": 1', '"epochsDone": 0'));
    await assert.rejects(() => loadLatestCheckpoint(bad), /state\.json does not match its SHA-256/);
    tf.dispose([]);
  });

  it('item 14: user errors exit 2 with one line naming the cause; a failed run is marked failed in run.json', async () => {
    assertUserError(await runCli(['train', ...TINY, '--backend', 'tensorflow', '--out', join(tmp, 'tf')]), /--backend tensorflow: .*@tensorflow\/tfjs-node/, '--backend tensorflow');
    const file = join(tmp, 'a-file');
    writeFileSync(file, 'x');
    assertUserError(await runCli(['train', ...TINY, '--out', file]), /--out .*a-file: exists and is not a directory/, '--out file');
    const none = join(tmp, 'none-none');
    assertUserError(await runCli(['train', ...TINY, '--input-penalty', 'none', '--hidden-penalty', 'none', '--out', none]), /nothing to disturb.*--method none/, 'both penalties none');
    assert.ok(!existsSync(join(none, 'run.json')), 'refused before anything was written');

    const ref = await referenceRun();
    const trunc = copyRun('truncated', ref);
    const text = readFileSync(join(trunc, 'run.json'), 'utf8');
    writeFileSync(join(trunc, 'run.json'), text.slice(0, text.length >> 1));
    assertUserError(await runCli(['train', '--resume', '--out', trunc, '--epochs', '2']), /run\.json is damaged \(not valid JSON/, 'truncated run.json');

    const opt = copyRun('optimizer', ref);
    const ck = join(opt, 'checkpoints', 'epoch-0001');
    const oj = JSON.parse(readFileSync(join(ck, 'optimizer.json'), 'utf8'));
    oj.className = 'SGD';
    writeFileSync(join(ck, 'optimizer.json'), JSON.stringify(oj));
    resum(ck);
    assertUserError(await runCli(['train', '--resume', '--out', opt, '--epochs', '2']), /checkpoint epoch-0001: checkpoint optimizer is SGD, the model's is Adam/, 'optimizer mismatch');

    // ENOSPC while writing a checkpoint file (mocked: the disk fills up at optimizer.bin).
    const full = join(tmp, 'disk-full');
    const fsp = fs.promises as unknown as {open: (...a: unknown[]) => Promise<unknown>};
    const realOpen = fsp.open;
    fsp.open = async (...a: unknown[]) => {
      if (String(a[0]).includes('optimizer.bin')) throw Object.assign(new Error(`ENOSPC: no space left on device, open '${String(a[0])}'`), {code: 'ENOSPC'});
      return realOpen.apply(fs.promises, a);
    };
    let r;
    try {
      r = await runCli(['train', ...TINY, '--epochs', '1', '--out', full]);
    } finally {
      fsp.open = realOpen;
    }
    assertUserError(r, /cannot save checkpoint .*epoch-0001: cannot write .*optimizer\.bin: ENOSPC: no space left on device/, 'ENOSPC');
    const meta = readRun(full);
    assert.equal(meta.status, 'failed', 'run.json not left "running"');
    assert.match(meta.error ?? '', /ENOSPC/);
    assert.ok(!existsSync(join(full, 'checkpoints', 'latest')), 'no half checkpoint');
    // The failed run (no checkpoint yet) resumes from scratch.
    const res = await runCli(['train', '--resume', '--out', full, '--progress', 'off']);
    assert.equal(res.code, 0, res.stderr);
    assert.equal(readRun(full).status, 'complete');
  });
});
