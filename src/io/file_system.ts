/**
 * Save and load models on the local disk without `@tensorflow/tfjs-node` (Node only).
 *
 * The layout is the one of tfjs-node's `file://` handler: a directory with `model.json`
 * (topology + weights manifest) and `weights.bin`, so models saved here load with
 * `tf.loadLayersModel('file://…')` under tfjs-node and vice versa.
 */
import * as tf from '@tensorflow/tfjs-core';
import {describeValue} from '../util/options.js';
import {randomBytes} from 'node:crypto';
import {constants as fsConstants, promises as fsp} from 'node:fs';
import {basename, dirname, isAbsolute, join, posix, resolve, sep} from 'node:path';

/** File name of the model topology + weights manifest. */
export const MODEL_JSON_FILENAME = 'model.json';
/**
 * File name of the concatenated weights. A save that replaces a model whose model.json already names
 * `weights.bin` writes `weights-<8 hex digits>.bin` instead (see {@link fileSystem}); model.json
 * always names the file that belongs to it.
 */
export const WEIGHTS_BIN_FILENAME = 'weights.bin';

/** Weight file names this handler writes (and may delete once no model.json of its own names them). */
const OWN_WEIGHTS_NAME = /^weights(-[0-9a-f]{8})?\.bin$/;

/** An IOHandler whose `save` and `load` are both present. */
export type FileSystemHandler = tf.io.IOHandler & Required<Pick<tf.io.IOHandler, 'save' | 'load'>>;

function errnoCode(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | null)?.code;
}

function toBytes(data: string | Uint8Array | ArrayBuffer): Uint8Array | string {
  return data instanceof ArrayBuffer ? new Uint8Array(data) : data;
}

/**
 * Writes a file atomically: the data goes to a temporary file in the same directory,
 * which is fsync'ed and then renamed over `path` (the directory is fsync'ed afterwards,
 * best effort). Readers see either the old file or the complete new one, never a
 * partial write; a crash can only leave a stray hidden `.<name>.<pid>.<random>.tmp` file.
 * Creates the parent directory recursively.
 */
export async function writeFileAtomic(path: string, data: string | Uint8Array | ArrayBuffer): Promise<void> {
  const dir = dirname(path);
  await fsp.mkdir(dir, {recursive: true});
  const tmp = join(dir, `.${basename(path)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  let renamed = false;
  try {
    const fh = await fsp.open(tmp, 'w');
    try {
      await fh.writeFile(toBytes(data));
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fsp.rename(tmp, path);
    renamed = true;
    await fsyncDir(dir);
  } catch (e) {
    throw namedFsError(e, `cannot write ${path}`);
  } finally {
    if (!renamed) await fsp.rm(tmp, {force: true}).catch(() => undefined);
  }
}

/**
 * Wraps a Node file-system error so that its message names the file (`what`, e.g. `cannot write /a/b`)
 * and the cause (`ENOSPC: no space left on device`), keeping its `code` for callers that test it.
 */
export function namedFsError(e: unknown, what: string): Error {
  const err = e as NodeJS.ErrnoException;
  if (err instanceof Error && err.message.startsWith(what)) return err;
  const cause = err instanceof Error ? err.message.replace(/, (open|write|rename|fsync|close) '.*'$/, '') : String(e);
  const out = new Error(`${what}: ${cause}`) as NodeJS.ErrnoException;
  if (err?.code !== undefined) out.code = err.code;
  return out;
}

/** fsync a directory so a rename in it is durable; ignored where unsupported (e.g. Windows). */
export async function fsyncDir(dir: string): Promise<void> {
  let fh: fsp.FileHandle | undefined;
  try {
    fh = await fsp.open(dir, 'r');
    await fh.sync();
  } catch {
    // not supported on this platform / file system
  } finally {
    await fh?.close().catch(() => undefined);
  }
}

/** Joins `WeightData` (an ArrayBuffer or, in tfjs ≥ 4.10, possibly a list of them) into one ArrayBuffer. */
export function joinWeightData(data: tf.io.WeightData | undefined): ArrayBuffer {
  if (data == null) return new ArrayBuffer(0);
  if (data instanceof ArrayBuffer) return data;
  const CAB = (tf.io as {CompositeArrayBuffer?: {join(b: ArrayBuffer[] | ArrayBuffer): ArrayBuffer}})
      .CompositeArrayBuffer;
  if (CAB && typeof CAB.join === 'function') return CAB.join(data);
  const total = data.reduce((s, b) => s + b.byteLength, 0);
  const out = new Uint8Array(total);
  let offset = 0;
  for (const b of data) {
    out.set(new Uint8Array(b), offset);
    offset += b.byteLength;
  }
  return out.buffer;
}

const DTYPE_BYTES: Record<string, number> = {
  float32: 4, int32: 4, bool: 1, complex64: 8, uint8: 1, uint16: 2, float16: 2,
};

/** Byte size the specs describe, or undefined if it cannot be known (string weights). */
function expectedWeightBytes(specs: tf.io.WeightsManifestEntry[]): number | undefined {
  let total = 0;
  for (const spec of specs) {
    const dtype = spec.quantization?.dtype ?? spec.dtype;
    const bytes = DTYPE_BYTES[dtype];
    if (bytes === undefined) return undefined;
    total += spec.shape.reduce((a, b) => a * b, 1) * bytes;
  }
  return total;
}

async function statOrUndefined(path: string) {
  try {
    return await fsp.stat(path);
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return undefined;
    throw e;
  }
}

/** True when `path` is `base` or lies below it (both absolute and normalised). */
function isInside(base: string, path: string): boolean {
  return path === base || path.startsWith(base.endsWith(sep) ? base : base + sep);
}

/** Flags for reading untrusted paths: never block on a FIFO, never follow a final symbolic link. */
const SAFE_READ_FLAGS = fsConstants.O_RDONLY | (fsConstants.O_NONBLOCK ?? 0) | (fsConstants.O_NOFOLLOW ?? 0);

/**
 * Reads a regular file whose size was checked before: opens it without blocking or following a
 * symbolic link, checks again that it is a regular file of `size` bytes, and reads exactly that many.
 */
async function readRegularFile(path: string, size: number, shown: string): Promise<Uint8Array> {
  const fh = await fsp.open(path, SAFE_READ_FLAGS);
  try {
    const st = await fh.stat();
    if (!st.isFile() || st.size !== size) throw new Error(`fileSystem: ${shown} changed while being read`);
    const out = new Uint8Array(size);
    let offset = 0;
    while (offset < size) {
      const {bytesRead} = await fh.read(out, offset, size - offset, offset);
      if (bytesRead === 0) throw new Error(`fileSystem: ${shown} changed while being read (it is shorter than ${size} bytes)`);
      offset += bytesRead;
    }
    return out;
  } finally {
    await fh.close();
  }
}

/**
 * Names (relative to `dir`) of the weight files the existing `dir/model.json` points at and that
 * this handler wrote (`weights.bin`, `weights-<hex>.bin`); [] when there is no readable model.json.
 */
async function ownWeightFiles(dir: string): Promise<string[]> {
  try {
    const path = join(dir, MODEL_JSON_FILENAME);
    const st = await fsp.stat(path);
    if (!st.isFile()) return [];
    const json = JSON.parse(Buffer.from(await readRegularFile(path, st.size, path)).toString('utf8')) as tf.io.ModelJSON;
    const names = (Array.isArray(json?.weightsManifest) ? json.weightsManifest : [])
        .flatMap((g) => (Array.isArray(g?.paths) ? g.paths : []))
        .map((p) => (typeof p === 'string' ? posix.normalize(p) : ''));
    return [...new Set(names.filter((n) => OWN_WEIGHTS_NAME.test(n)))];
  } catch {
    return [];
  }
}

/**
 * An `IOHandler` that saves a model to / loads it from the directory `dir` on disk,
 * in the layout of tfjs-node's `file://` handler (`model.json` + `weights.bin`):
 *
 * ```ts
 * await model.save(fileSystem('./my-model'));
 * const loaded = await tfl.loadLayersModel(fileSystem('./my-model'));
 * ```
 *
 * `save` creates `dir` recursively and is atomic as a whole: the weights go to a file that the
 * current model.json does not name (`weights.bin`, or `weights-<hex>.bin` when replacing a model
 * that uses `weights.bin`), then `model.json` is replaced — each through a temp file + fsync +
 * rename — and only then is the old weights file deleted. A save that fails or is killed at any
 * point leaves the complete old model or the complete new one.
 *
 * `load` also accepts the path of a `model.json` file; it reads every file in every
 * `weightsManifest` group (relative to the model.json), and its errors name the offending path
 * (missing file, invalid JSON, no `modelTopology`, weight bytes not matching the manifest).
 * Weights are read only from regular files inside the model directory: a manifest path that leads
 * outside it (`../…`, an absolute path, a symbolic link pointing elsewhere) or names a device, FIFO
 * or directory is refused without touching it, and no file is read beyond the size its regular-file
 * status reports, which must match the size the manifest declares.
 */
export function fileSystem(dir: string): FileSystemHandler {
  if (typeof dir !== 'string' || dir.length === 0) {
    throw new Error(`fileSystem: expected a directory path (a non-empty string; fileSystem takes no options object); got ${describeValue(dir)}.`);
  }

  async function save(artifacts: tf.io.ModelArtifacts): Promise<tf.io.SaveResult> {
    if (artifacts.modelTopology instanceof ArrayBuffer) {
      throw new Error('fileSystem: saving a binary (ArrayBuffer) model topology is not supported; expected JSON');
    }
    const st = await statOrUndefined(dir);
    if (st && !st.isDirectory()) {
      throw new Error(`fileSystem: cannot save to ${dir}: it exists and is not a directory`);
    }
    await fsp.mkdir(dir, {recursive: true});
    const weights = joinWeightData(artifacts.weightData);
    const modelJSON: tf.io.ModelJSON = {
      modelTopology: artifacts.modelTopology as object,
      format: artifacts.format,
      generatedBy: artifacts.generatedBy,
      convertedBy: artifacts.convertedBy,
      weightsManifest: [{paths: [WEIGHTS_BIN_FILENAME], weights: artifacts.weightSpecs ?? []}],
    };
    if (artifacts.trainingConfig != null) modelJSON.trainingConfig = artifacts.trainingConfig;
    if (artifacts.signature != null) modelJSON.signature = artifacts.signature;
    if (artifacts.userDefinedMetadata != null) modelJSON.userDefinedMetadata = artifacts.userDefinedMetadata;
    if (artifacts.modelInitializer != null) modelJSON.modelInitializer = artifacts.modelInitializer;
    if (artifacts.initializerSignature != null) modelJSON.initializerSignature = artifacts.initializerSignature;

    // The new weights go to a file the current model.json does not name; model.json is replaced
    // next (the commit point); the old weights are deleted last. At every point the directory holds
    // a complete model: the old one until model.json is renamed into place, the new one after.
    const previous = await ownWeightFiles(dir);
    const weightsName = previous.includes(WEIGHTS_BIN_FILENAME) ? `weights-${randomBytes(4).toString('hex')}.bin` : WEIGHTS_BIN_FILENAME;
    modelJSON.weightsManifest[0].paths = [weightsName];
    const weightsPath = join(dir, weightsName);
    await writeFileAtomic(weightsPath, weights);
    try {
      await writeFileAtomic(join(dir, MODEL_JSON_FILENAME), JSON.stringify(modelJSON));
    } catch (e) {
      await fsp.rm(weightsPath, {force: true}).catch(() => undefined);
      throw e;
    }
    // Old weights of ours that the new model.json does not name: the previous model's, and new-style
    // files left by saves that were killed before their model.json was in place.
    const stale = new Set(previous);
    for (const f of await fsp.readdir(dir).catch(() => [] as string[])) if (/^weights-[0-9a-f]{8}\.bin$/.test(f)) stale.add(f);
    stale.delete(weightsName);
    for (const f of stale) await fsp.rm(join(dir, f), {force: true}).catch(() => undefined);
    return {modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(artifacts)};
  }

  async function load(): Promise<tf.io.ModelArtifacts> {
    const st = await statOrUndefined(dir);
    if (st === undefined) throw new Error(`fileSystem: model directory not found: ${dir}`);
    const modelJSONPath = st.isDirectory() ? join(dir, MODEL_JSON_FILENAME) : dir;
    const baseDir = dirname(modelJSONPath);

    let text: string;
    try {
      const jst = await fsp.stat(modelJSONPath);
      if (!jst.isFile()) throw new Error(`fileSystem: ${modelJSONPath} is not a regular file`);
      text = Buffer.from(await readRegularFile(modelJSONPath, jst.size, modelJSONPath)).toString('utf8');
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') throw new Error(`fileSystem: model.json not found: ${modelJSONPath}`);
      if ((e as Error).message?.startsWith('fileSystem:')) throw e;
      throw new Error(`fileSystem: cannot read ${modelJSONPath}: ${(e as Error).message}`);
    }
    let modelJSON: tf.io.ModelJSON;
    try {
      modelJSON = JSON.parse(text) as tf.io.ModelJSON;
    } catch (e) {
      throw new Error(`fileSystem: ${modelJSONPath} is not valid JSON (${(e as Error).message})`);
    }
    if (modelJSON === null || typeof modelJSON !== 'object' || Array.isArray(modelJSON)) {
      throw new Error(`fileSystem: ${modelJSONPath} does not hold a JSON object`);
    }
    if (modelJSON.modelTopology == null) {
      throw new Error(`fileSystem: ${modelJSONPath} has no modelTopology`);
    }
    if (modelJSON.weightsManifest != null && !Array.isArray(modelJSON.weightsManifest)) {
      throw new Error(`fileSystem: ${modelJSONPath} has a weightsManifest that is not a list`);
    }

    const loadWeights = async(manifest: tf.io.WeightsManifestConfig):
        Promise<[tf.io.WeightsManifestEntry[], ArrayBuffer]> => {
      const specs: tf.io.WeightsManifestEntry[] = [];
      const listed: string[] = [];
      for (const group of manifest) {
        if (!Array.isArray(group?.paths) || !Array.isArray(group?.weights)) {
          throw new Error(`fileSystem: ${modelJSONPath} has a weightsManifest group without paths/weights`);
        }
        specs.push(...group.weights);
        listed.push(...group.paths);
      }
      // Resolve and check every path before reading any: inside the model directory, a regular file.
      const base = resolve(baseDir);
      const realBase = await fsp.realpath(base);
      const files: {path: string; real: string; size: number}[] = [];
      for (const p of listed) {
        const outside = () => new Error(
            `fileSystem: ${modelJSONPath} lists the weights path ${JSON.stringify(String(p).slice(0, 200))}, which leads outside ` +
            'the model directory; weights are only read from files inside it');
        if (typeof p !== 'string' || p === '' || p.includes('\0')) {
          throw new Error(`fileSystem: ${modelJSONPath} lists an invalid weights path ${JSON.stringify(p)}`);
        }
        const path = resolve(base, p);
        if (isAbsolute(p) || !isInside(base, path) || path === base) throw outside();
        let real: string;
        try {
          real = await fsp.realpath(path);
        } catch (e) {
          if (errnoCode(e) !== 'ENOENT') throw new Error(`fileSystem: cannot read weights file ${path}: ${(e as Error).message}`);
          const link = await fsp.lstat(path).catch(() => undefined);
          if (link?.isSymbolicLink()) throw outside();
          throw new Error(`fileSystem: weights file not found: ${path} (listed in ${modelJSONPath})`);
        }
        if (!isInside(realBase, real)) throw outside();
        const st = await fsp.stat(real);
        if (!st.isFile()) {
          throw new Error(`fileSystem: weights path ${path} (listed in ${modelJSONPath}) is not a regular file (a device, FIFO or directory); refusing to read it`);
        }
        files.push({path, real, size: st.size});
      }
      const total = files.reduce((s, f) => s + f.size, 0);
      const expected = expectedWeightBytes(specs);
      if (expected !== undefined && expected !== total) {
        throw new Error(
            `fileSystem: weights file size mismatch: ${files.map((f) => f.path).join(', ')} hold ${total} bytes but the ` +
            `weightsManifest in ${modelJSONPath} specifies ${expected} bytes (corrupt or mismatched files)`);
      }
      const out = new Uint8Array(total);
      let offset = 0;
      for (const f of files) {
        out.set(await readRegularFile(f.real, f.size, f.path), offset);
        offset += f.size;
      }
      return [specs, out.buffer];
    };
    return tf.io.getModelArtifactsForJSON(modelJSON, loadWeights);
  }

  return {save, load};
}
