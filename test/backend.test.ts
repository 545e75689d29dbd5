import {tf} from './setup.js';
import {after, test} from 'node:test';
import assert from 'node:assert/strict';
import {selectBackend} from '../src/backend.js';
import {registeredWasmKernels, unregisterWasmKernels} from '../src/kernels/wasm.js';

after(async () => {
  unregisterWasmKernels();
  await tf.setBackend('cpu');
});

/** Captures what `fn` writes to stderr. */
async function captureStderr<T>(fn: () => Promise<T>): Promise<{result: T, text: string}> {
  const original = process.stderr.write.bind(process.stderr);
  let text = '';
  process.stderr.write = ((chunk: string | Uint8Array) => {
    text += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString();
    return true;
  }) as typeof process.stderr.write;
  try {
    return {result: await fn(), text};
  } finally {
    process.stderr.write = original;
  }
}

test("explicit 'cpu' works, reports cpu and prints one stderr line", async () => {
  const {result, text} = await captureStderr(() => selectBackend({backend: 'cpu'}));
  assert.equal(result.name, 'cpu');
  assert.equal(tf.getBackend(), 'cpu');
  assert.match(result.reason, /explicit/);
  // (tfjs-backend-cpu may add its own "Hi, looks like you are running TensorFlow.js in Node.js" banner)
  assert.deepEqual(text.split('\n').filter((l) => l.startsWith('backend:')), [`backend: cpu (${result.reason})`]);
});

test("'auto' picks wasm here (no tfjs-node) and reports why; quiet prints nothing", async () => {
  const {result, text} = await captureStderr(() => selectBackend({backend: 'auto', quiet: true}));
  assert.equal(text, '');
  assert.equal(result.name, 'wasm');
  assert.equal(tf.getBackend(), 'wasm');
  assert.match(result.reason, /@tensorflow\/tfjs-node not installed/);
  // the selected backend computes
  const s = tf.sum(tf.tensor1d([1, 2, 3.5]));
  assert.equal(s.dataSync()[0], 6.5);
  s.dispose();
});

test("'auto' with needsConvTraining picks wasm and registers its training kernels", async () => {
  unregisterWasmKernels();
  const result = await selectBackend({needsConvTraining: true, quiet: true});
  assert.equal(result.name, 'wasm');
  assert.equal(tf.getBackend(), 'wasm');
  assert.match(result.reason, /training kernels registered/);
  assert.ok(registeredWasmKernels().includes('Conv2DBackpropFilter'));
  // a conv filter gradient now runs on wasm
  const g = tf.tidy(() => tf.grad((f: tf.Tensor) => tf.sum(tf.conv2d(tf.ones([1, 3, 3, 1]) as tf.Tensor4D, f as tf.Tensor4D, 1, 'valid')))(tf.ones([2, 2, 1, 1])));
  assert.deepEqual(Array.from(g.dataSync()), [4, 4, 4, 4]);
  g.dispose();
});

test("'auto' with needsConvTraining and wasmKernels: false skips wasm and picks cpu", async () => {
  unregisterWasmKernels();
  const result = await selectBackend({needsConvTraining: true, wasmKernels: false, quiet: true});
  assert.equal(result.name, 'cpu');
  assert.equal(tf.getBackend(), 'cpu');
  assert.match(result.reason, /Conv2DBackpropFilter/);
  assert.deepEqual(registeredWasmKernels(), []);
});

test("explicit 'wasm' registers the training kernels unless wasmKernels: false (then conv training gets a warning)", async () => {
  const plain = await selectBackend({backend: 'wasm', needsConvTraining: true, wasmKernels: false, quiet: true});
  assert.equal(plain.name, 'wasm');
  assert.match(plain.reason, /warning.*Conv2DBackpropFilter/);
  const result = await selectBackend({backend: 'wasm', needsConvTraining: true, quiet: true});
  assert.equal(result.name, 'wasm');
  assert.equal(tf.getBackend(), 'wasm');
  assert.match(result.reason, /training kernels registered/);
  assert.ok(registeredWasmKernels().includes('MaxPoolGrad'));
});

test("explicit 'tensorflow' fails naming @tensorflow/tfjs-node; backend unchanged", async () => {
  await tf.setBackend('cpu');
  await assert.rejects(
      () => selectBackend({backend: 'tensorflow', quiet: true}),
      /requested backend 'tensorflow' is unavailable.*npm install @tensorflow\/tfjs-node/);
  assert.equal(tf.getBackend(), 'cpu');
});

test('unknown backend name is rejected', async () => {
  await assert.rejects(
      () => selectBackend({backend: 'webgl' as unknown as 'cpu', quiet: true}), /unknown backend 'webgl'/);
});
