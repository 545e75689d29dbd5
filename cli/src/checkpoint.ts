/**
 * Training checkpoints: model + optimizer state + run state, written atomically.
 *
 * Layout inside a run directory:
 *
 * ```
 * checkpoints/
 *   epoch-0002/            complete checkpoint after 2 epochs
 *     model/model.json, model/weights.bin
 *     optimizer.json       class, config, weight specs (+ Adam's β-power accumulators)
 *     optimizer.bin        optimizer weights (optimizer.getWeights()), concatenated
 *     state.json           epoch, position, history, ...
 *     checksums.json       written last: SHA-256 of every other file of the checkpoint
 *   epoch-0003-b0012/      a mid-epoch checkpoint (Ctrl-C after 12 batches of epoch 3)
 *   latest                 name of the newest checkpoint directory
 * ```
 *
 * Loading verifies every file against `checksums.json` (a damaged file of the right size is
 * refused, naming it), accepts only checkpoint directories of this run (`latest` must name an
 * `epoch-…` directory inside `checkpoints/`, not a symbolic link or a path leading elsewhere).
 *
 * A checkpoint is written into a hidden temporary directory, every file
 * fsync'ed, and only then renamed to its final name (a directory rename is
 * atomic); `latest` is then replaced atomically. A process killed at any point
 * therefore leaves either the previous checkpoint or the new one, both
 * complete; a stray `.tmp-*` directory is ignored and removed by the next save.
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import {createHash, randomBytes} from 'node:crypto';
import {promises as fsp} from 'node:fs';
import {join} from 'node:path';

import {fileSystem, fsyncDir, namedFsError, writeFileAtomic} from 'tfjs-deep-adversarial/node';
import 'tfjs-deep-adversarial'; // registers the Disturbance class, so checkpoints of instrumented models load

/** Where a run stands. */
export interface CheckpointState {
  version: 1;
  /** Epochs fully completed. */
  epochsDone: number;
  /** Batches completed inside epoch `epochsDone` (0 at an epoch boundary). */
  batchesDone: number;
  /** Epoch logs of the completed epochs (training and validation metrics). */
  history: Record<string, number>[];
  /** Aggregates of the batches done in the interrupted epoch (mid-epoch checkpoints only). */
  partial?: PartialEpoch;
  /** ISO time of the save. */
  savedAt: string;
}

/** Batch-log aggregates of a partly done epoch, so that its epoch logs can be completed on resume. */
export interface PartialEpoch {
  /** Per key: sum of value × weight, and the weight (examples, batches, or 1 for summed keys). */
  sums: Record<string, number>;
  weights: Record<string, number>;
  examples: number;
  batches: number;
  seconds: number;
}

/** A loaded checkpoint. The caller owns the model. */
export interface LoadedCheckpoint {
  dir: string;
  name: string;
  model: tfl.LayersModel;
  state: CheckpointState;
  optimizer: SavedOptimizer;
  /** False for a checkpoint without `checksums.json` (written by a version before 0.2); its files were not verified. */
  verified: boolean;
  /** Newer checkpoints that could not be loaded (name: reason), skipped in favour of this one. */
  skipped: string[];
}

/** Thrown by {@link loadLatestCheckpoint} when a run has no checkpoint at all (as opposed to damaged ones). */
export class NoCheckpointError extends Error {}

/** File written last into a checkpoint: the SHA-256 of every other file. */
export const CHECKSUMS_FILENAME = 'checksums.json';

/** Names of checkpoint directories: `epoch-0002`, `epoch-0003-b00012`. */
export const CHECKPOINT_NAME = /^epoch-\d+(-b\d+)?$/;

/**
 * The directory of checkpoint `name` of the run in `runDir`, or null when `name` is not the name of a
 * checkpoint directory ({@link CHECKPOINT_NAME}: no separator, no `..`, not absolute), so that a name read
 * from a file of the run (`checkpoints/latest`, run.json's `latestCheckpoint`) never leads outside
 * `runDir/checkpoints`. `train --resume`, `eval` and `report` all go through this check.
 */
export function checkpointDir(runDir: string, name: unknown): string | null {
  return typeof name === 'string' && CHECKPOINT_NAME.test(name) ? join(runDir, 'checkpoints', name) : null;
}

/** Reads a checkpoint file that must be a regular file (never a FIFO, device or symbolic link, which could block or lead elsewhere). */
async function readRegular(path: string): Promise<Buffer> {
  const st = await fsp.lstat(path);
  if (!st.isFile()) throw Object.assign(new Error(`${path} is not a regular file`), {code: 'ENOTREG'});
  return fsp.readFile(path);
}

function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Relative paths (with '/') of the regular files under `dir`, sorted. */
async function listFiles(dir: string, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  for (const e of await fsp.readdir(join(dir, prefix), {withFileTypes: true})) {
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...(await listFiles(dir, rel)));
    else if (e.isFile()) out.push(rel);
  }
  return out.sort();
}

/** Serialised optimizer state. */
export interface SavedOptimizer {
  className: string;
  config: Record<string, unknown>;
  weights: {name: string; shape: number[]; dtype: tf.DataType; offset: number; byteLength: number}[];
  /** Private scalar state not covered by getWeights (Adam's β₁ᵗ, β₂ᵗ), restored bit-exactly. */
  extras: Record<string, number>;
  data: ArrayBuffer;
}

/** Name of the checkpoint directory for a position. */
export function checkpointName(epochsDone: number, batchesDone: number): string {
  const e = `epoch-${String(epochsDone).padStart(4, '0')}`;
  return batchesDone > 0 ? `${e}-b${String(batchesDone).padStart(5, '0')}` : e;
}

/** Private scalar variables of tfjs optimizers that `getWeights()` does not return. */
const EXTRA_SCALARS = ['accBeta1', 'accBeta2'];

/**
 * Saves a checkpoint of `model` (with its compiled optimizer) and `state` under
 * `runDir/checkpoints/`, atomically; keeps the newest `keep` checkpoints.
 * Returns the checkpoint directory.
 */
export async function saveCheckpoint(runDir: string, model: tfl.LayersModel, state: CheckpointState, keep = 2): Promise<string> {
  const root = join(runDir, 'checkpoints');
  await fsp.mkdir(root, {recursive: true});
  const name = checkpointName(state.epochsDone, state.batchesDone);
  const tmp = join(root, `.tmp-${name}-${process.pid}-${randomBytes(4).toString('hex')}`);
  await fsp.mkdir(tmp);
  try {
    await model.save(fileSystem(join(tmp, 'model')));
    const opt = model.optimizer as tf.Optimizer & Record<string, unknown>;
    const named = await opt.getWeights();
    const specs: SavedOptimizer['weights'] = [];
    const chunks: Uint8Array[] = [];
    let offset = 0;
    for (const {name: wName, tensor} of named) {
      const values = tensor.dtype === 'float32' ? (tensor.dataSync() as Float32Array) : Int32Array.from(tensor.dataSync() as Int32Array);
      const bytes = new Uint8Array(values.buffer.slice(values.byteOffset, values.byteOffset + values.byteLength));
      specs.push({name: wName, shape: tensor.shape, dtype: tensor.dtype, offset, byteLength: bytes.byteLength});
      chunks.push(bytes);
      offset += bytes.byteLength;
    }
    const extras: Record<string, number> = {};
    for (const key of EXTRA_SCALARS) {
      const v = opt[key];
      if (v instanceof tf.Tensor && v.size === 1) extras[key] = v.dataSync()[0];
    }
    const bin = new Uint8Array(offset);
    let o = 0;
    for (const c of chunks) {
      bin.set(c, o);
      o += c.byteLength;
    }
    const className = (opt.getClassName as () => string)();
    await writeFileAtomic(join(tmp, 'optimizer.bin'), bin);
    await writeFileAtomic(join(tmp, 'optimizer.json'), JSON.stringify({className, config: opt.getConfig(), weights: specs, extras}, null, 1));
    await writeFileAtomic(join(tmp, 'state.json'), JSON.stringify(state, null, 1));
    const files: Record<string, string> = {};
    for (const rel of await listFiles(tmp)) files[rel] = sha256(await fsp.readFile(join(tmp, rel)));
    await writeFileAtomic(join(tmp, CHECKSUMS_FILENAME), JSON.stringify({algorithm: 'sha256', files}, null, 1));
    await fsyncDir(tmp);
    const final = join(root, name);
    await fsp.rm(final, {recursive: true, force: true});
    await fsp.rename(tmp, final);
    await fsyncDir(root);
    await writeFileAtomic(join(root, 'latest'), `${name}\n`);
  } catch (e) {
    await fsp.rm(tmp, {recursive: true, force: true}).catch(() => undefined);
    throw (e as NodeJS.ErrnoException).code !== undefined ? namedFsError(e, `cannot save checkpoint ${join(root, name)}`) : e;
  }
  // Prune: older checkpoints beyond `keep`, and temporaries of dead processes.
  const entries = await fsp.readdir(root);
  const done = entries.filter((e) => CHECKPOINT_NAME.test(e)).sort();
  for (const old of done.slice(0, Math.max(0, done.length - keep))) await fsp.rm(join(root, old), {recursive: true, force: true});
  for (const t of entries.filter((e) => e.startsWith('.tmp-') && !e.includes(`-${process.pid}-`))) {
    await fsp.rm(join(root, t), {recursive: true, force: true}).catch(() => undefined);
  }
  return join(root, name);
}

/**
 * Verifies the files of checkpoint `dir` against its `checksums.json`. Returns false for a legacy
 * checkpoint without checksums; throws naming the first missing, extra or damaged file.
 */
async function verifyChecksums(dir: string): Promise<boolean> {
  let text: string;
  try {
    text = (await readRegular(join(dir, CHECKSUMS_FILENAME))).toString('utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
  let sums: {algorithm?: string; files?: Record<string, string>};
  try {
    sums = JSON.parse(text) as typeof sums;
  } catch {
    throw new Error(`${CHECKSUMS_FILENAME} is damaged (not valid JSON)`);
  }
  if (sums?.algorithm !== 'sha256' || sums.files == null || typeof sums.files !== 'object') {
    throw new Error(`${CHECKSUMS_FILENAME} is damaged (no sha256 file list)`);
  }
  const listed = Object.keys(sums.files).sort();
  const present = (await listFiles(dir)).filter((f) => f !== CHECKSUMS_FILENAME);
  for (const f of ['state.json', 'optimizer.json', 'optimizer.bin', 'model/model.json']) {
    if (!listed.includes(f)) throw new Error(`${CHECKSUMS_FILENAME} does not cover ${f}`);
  }
  for (const f of listed) {
    if (!present.includes(f)) throw new Error(`${f} is missing (listed in ${CHECKSUMS_FILENAME})`);
    if (sha256(await fsp.readFile(join(dir, f))) !== sums.files[f]) {
      throw new Error(`${f} does not match its SHA-256 in ${CHECKSUMS_FILENAME} (the file is damaged)`);
    }
  }
  return true;
}

async function loadOne(root: string, name: string): Promise<LoadedCheckpoint> {
  const dir = join(root, name);
  const st = await fsp.lstat(dir);
  if (!st.isDirectory()) throw new Error(`${dir} is not a directory${st.isSymbolicLink() ? ' (a symbolic link; checkpoints must lie inside the run)' : ''}`);
  const verified = await verifyChecksums(dir);
  let state: CheckpointState;
  try {
    state = JSON.parse((await readRegular(join(dir, 'state.json'))).toString('utf8')) as CheckpointState;
  } catch (e) {
    throw new Error(`state.json: ${(e as Error).message}`);
  }
  if (state?.version !== 1 || !Number.isInteger(state.epochsDone) || !Number.isInteger(state.batchesDone) || !Array.isArray(state.history)) {
    throw new Error('state.json: unknown format');
  }
  const meta = JSON.parse((await readRegular(join(dir, 'optimizer.json'))).toString('utf8')) as Omit<SavedOptimizer, 'data'>;
  const buf = await readRegular(join(dir, 'optimizer.bin'));
  const total = meta.weights.reduce((s, w) => s + w.byteLength, 0);
  if (buf.byteLength !== total) throw new Error(`optimizer.bin holds ${buf.byteLength} bytes, optimizer.json expects ${total}`);
  const model = await tfl.loadLayersModel(fileSystem(join(dir, 'model')));
  const data = buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength) as ArrayBuffer;
  return {dir, name, model, state, optimizer: {...meta, data}, verified, skipped: []};
}

/**
 * Loads the newest loadable checkpoint of a run: the one named in `latest`,
 * else (if that one is missing or damaged) the newest other complete one; the
 * ones skipped are listed in `skipped`. Throws {@link NoCheckpointError} if the
 * run has no checkpoint at all, an Error if `latest` names anything but a
 * checkpoint directory of this run, or if no checkpoint loads.
 */
export async function loadLatestCheckpoint(runDir: string): Promise<LoadedCheckpoint> {
  const root = join(runDir, 'checkpoints');
  let names: string[] = [];
  try {
    names = (await fsp.readdir(root)).filter((e) => CHECKPOINT_NAME.test(e)).sort().reverse();
  } catch {
    throw new NoCheckpointError(`no checkpoints in ${runDir} (missing ${root})`);
  }
  let latest: string | undefined;
  try {
    latest = (await readRegular(join(root, 'latest'))).toString('utf8').trim();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOTREG') throw new Error(`${(e as Error).message}; refusing to follow it`);
    latest = undefined;
  }
  if (latest !== undefined && checkpointDir(runDir, latest) === null) {
    throw new Error(`${join(root, 'latest')} names ${JSON.stringify(latest.slice(0, 80))}, which is not a checkpoint directory of this run (expected epoch-NNNN[-bNNNNN]); refusing to follow it`);
  }
  if (names.length === 0 && latest === undefined) throw new NoCheckpointError(`no checkpoints in ${root}`);
  const order = latest ? [latest, ...names.filter((n) => n !== latest)] : names;
  const errors: string[] = [];
  for (const name of order) {
    try {
      const ck = await loadOne(root, name);
      ck.skipped = errors;
      return ck;
    } catch (e) {
      errors.push(`${name}: ${(e as Error).message}`);
    }
  }
  throw new Error(`no loadable checkpoint in ${root} (${errors.join('; ')})`);
}

/**
 * Restores a saved optimizer state into `optimizer` (which must be of the same
 * class and already attached to the model by `compile`). Exact: the weights
 * come from their raw bytes, Adam's β-power accumulators are restored too.
 */
export async function restoreOptimizer(optimizer: tf.Optimizer, saved: SavedOptimizer): Promise<void> {
  const opt = optimizer as tf.Optimizer & Record<string, unknown>;
  const className = (opt.getClassName as () => string)();
  if (className !== saved.className) throw new Error(`checkpoint optimizer is ${saved.className}, the model's is ${className}`);
  const named = saved.weights.map((w) => {
    const bytes = saved.data.slice(w.offset, w.offset + w.byteLength);
    const values = w.dtype === 'int32' ? new Int32Array(bytes) : new Float32Array(bytes);
    return {name: w.name, tensor: tf.tensor(values, w.shape, w.dtype)};
  });
  await optimizer.setWeights(named);
  for (const [key, value] of Object.entries(saved.extras ?? {})) {
    const v = opt[key];
    if (v instanceof tf.Variable) tf.tidy(() => v.assign(tf.scalar(value, v.dtype)));
  }
  for (const n of named) if (!n.tensor.isDisposed) n.tensor.dispose();
}
