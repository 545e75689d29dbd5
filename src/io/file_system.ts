/**
 * Save and load models on the local disk without `@tensorflow/tfjs-node` (Node only).
 *
 * The layout is the one of tfjs-node's `file://` handler: a directory with `model.json`
 * (topology + weights manifest) and `weights.bin`, so models saved here load with
 * `tf.loadLayersModel('file://…')` under tfjs-node and vice versa.
 */
import * as tf from '@tensorflow/tfjs-core';
import {randomBytes} from 'node:crypto';
import {promises as fsp} from 'node:fs';
import {basename, dirname, join} from 'node:path';

/** File name of the model topology + weights manifest. */
export const MODEL_JSON_FILENAME = 'model.json';
/** File name of the concatenated weights. */
export const WEIGHTS_BIN_FILENAME = 'weights.bin';

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

/**
 * An `IOHandler` that saves a model to / loads it from the directory `dir` on disk,
 * in the layout of tfjs-node's `file://` handler (`model.json` + `weights.bin`):
 *
 * ```ts
 * await model.save(fileSystem('./my-model'));
 * const loaded = await tfl.loadLayersModel(fileSystem('./my-model'));
 * ```
 *
 * `save` creates `dir` recursively and writes atomically: `weights.bin` first, then
 * `model.json`, each through a temp file + fsync + rename, so an interrupted save never
 * leaves a partially written file in place. `load` also accepts the path of a `model.json`
 * file; it reads every file in every `weightsManifest` group (relative to the model.json),
 * and its errors name the offending path (missing file, invalid JSON, no `modelTopology`,
 * weight bytes not matching the manifest).
 */
export function fileSystem(dir: string): FileSystemHandler {
  if (typeof dir !== 'string' || dir.length === 0) {
    throw new Error('fileSystem: expected a directory path');
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

    // Weights first, model.json last: model.json only ever points at complete weights.
    await writeFileAtomic(join(dir, WEIGHTS_BIN_FILENAME), weights);
    await writeFileAtomic(join(dir, MODEL_JSON_FILENAME), JSON.stringify(modelJSON));
    return {modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(artifacts)};
  }

  async function load(): Promise<tf.io.ModelArtifacts> {
    const st = await statOrUndefined(dir);
    if (st === undefined) throw new Error(`fileSystem: model directory not found: ${dir}`);
    const modelJSONPath = st.isDirectory() ? join(dir, MODEL_JSON_FILENAME) : dir;
    const baseDir = dirname(modelJSONPath);

    let text: string;
    try {
      text = await fsp.readFile(modelJSONPath, 'utf8');
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') throw new Error(`fileSystem: model.json not found: ${modelJSONPath}`);
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
      const paths: string[] = [];
      for (const group of manifest) {
        if (!Array.isArray(group.paths) || !Array.isArray(group.weights)) {
          throw new Error(`fileSystem: ${modelJSONPath} has a weightsManifest group without paths/weights`);
        }
        specs.push(...group.weights);
        paths.push(...group.paths.map((p) => join(baseDir, p)));
      }
      const buffers: Uint8Array[] = [];
      for (const p of paths) {
        try {
          buffers.push(await fsp.readFile(p));
        } catch (e) {
          if (errnoCode(e) === 'ENOENT') {
            throw new Error(`fileSystem: weights file not found: ${p} (listed in ${modelJSONPath})`);
          }
          throw new Error(`fileSystem: cannot read weights file ${p}: ${(e as Error).message}`);
        }
      }
      const total = buffers.reduce((s, b) => s + b.byteLength, 0);
      const expected = expectedWeightBytes(specs);
      if (expected !== undefined && expected !== total) {
        throw new Error(
            `fileSystem: weights file size mismatch: ${paths.join(', ')} hold ${total} bytes but the ` +
            `weightsManifest in ${modelJSONPath} specifies ${expected} bytes (corrupt or mismatched files)`);
      }
      const out = new Uint8Array(total);
      let offset = 0;
      for (const b of buffers) {
        out.set(b, offset);
        offset += b.byteLength;
      }
      return [specs, out.buffer];
    };
    return tf.io.getModelArtifactsForJSON(modelJSON, loadWeights);
  }

  return {save, load};
}
