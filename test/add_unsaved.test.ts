// addUnsaved (the Disturbance layers' x + d without the tape's input copies) against tf.add:
// values and gradients bit for bit on cpu and wasm, fewer kernels under a tape, the tf.add
// fallback for broadcasting, and no tensor kept.
import {tf} from './setup.js';
import '@tensorflow/tfjs-backend-wasm';
import assert from 'node:assert/strict';
import {after, before, test} from 'node:test';
import {addUnsaved} from '../src/kernels/add_unsaved.js';
import {simdAddFor} from '../src/kernels/simd.js';
import {rand} from './fixtures/random.js';

before(async () => {
  await tf.setBackend('wasm');
  await tf.setBackend('cpu');
});
after(async () => {
  await tf.setBackend('cpu');
});

for (const backend of ['cpu', 'wasm']) {
  test(`addUnsaved: same value and gradients as tf.add, without the tape's copies (${backend})`, async () => {
    await tf.setBackend(backend);
    try {
      const x = tf.tensor2d(rand(12, 1), [3, 4]);
      const d = tf.tensor2d(rand(12, 2), [3, 4]);
      const w = tf.tensor2d(rand(20, 3), [4, 5]);
      const before = tf.memory().numTensors;
      // a nonlinear function of x + d so that the gradient w.r.t. both inputs is not trivial
      const g = (add: (a: tf.Tensor, b: tf.Tensor) => tf.Tensor) => (a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.tanh(tf.matMul(tf.square(add(tf.mul(a, 1.5), b)), w))) as tf.Scalar;
      const [ours, ref] = [addUnsaved, tf.add].map((add) => tf.tidy(() => {
        const {value, grads} = tf.valueAndGrads(g(add as (a: tf.Tensor, b: tf.Tensor) => tf.Tensor))([x, d]);
        return [value, ...grads].map((t) => Array.from(t.dataSync()));
      }));
      assert.deepEqual(ours, ref, 'value and gradients');
      const values = (fn: () => tf.Tensor) => {
        const t = fn();
        const v = Array.from(t.dataSync());
        t.dispose();
        return v;
      };
      assert.deepEqual(values(() => addUnsaved(x, d)), values(() => tf.add(x, d)));
      // under a tape tf.add keeps copies of its two inputs (Identity kernels); addUnsaved keeps none
      const kernels = async (add: (a: tf.Tensor, b: tf.Tensor) => tf.Tensor) =>
        (await tf.profile(() => tf.tidy(() => void tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(add(a, b)))([x, d])))).kernels.filter((k) => k.name === 'Identity').length;
      assert.ok((await kernels(addUnsaved)) + 2 <= (await kernels(tf.add)), 'two input copies fewer');
      // broadcasting falls back to tf.add
      const row = tf.tensor1d([1, 2, 3, 4]);
      assert.deepEqual(values(() => addUnsaved(x, row)), values(() => tf.add(x, row)));
      tf.dispose(row);
      assert.equal(tf.memory().numTensors, before, 'tensors kept');
      tf.dispose([x, d, w]);
    } finally {
      await tf.setBackend('cpu');
    }
  });
}

test('addUnsaved on wasm: the SIMD sum equals tf.add bit for bit (−0, subnormals, ±Inf, NaN; sizes not a multiple of 4 fall back)', async () => {
  await tf.setBackend('wasm');
  try {
    assert.ok(simdAddFor(tf.backend()), 'the SIMD add runs on the wasm backend');
    const before = tf.memory().numTensors;
    const special = [-0, 0, 1e-40, -1e-40, 3.4e38, Infinity, -Infinity, NaN, 1, -1];
    for (const shape of [[5, 8], [128, 784], [3, 3]]) {
      const n = shape.reduce((a, b) => a * b, 1);
      const r1 = rand(n, 7, -2, 2);
      const r2 = rand(n, 8, -2, 2);
      const a = tf.tensor(r1.map((v, i) => (i % 13 === 0 ? special[(i / 13) % special.length] : v)), shape);
      const b = tf.tensor(r2.map((v, i) => (i % 7 === 0 ? special[(i / 7) % special.length] : i % 5 === 0 ? -r1[i] : v)), shape);
      const got = tf.tidy(() => Array.from(addUnsaved(a, b).dataSync()));
      const want = tf.tidy(() => Array.from(tf.add(a, b).dataSync()));
      got.forEach((v, i) => assert.ok(Object.is(v, want[i]) || (Number.isNaN(v) && Number.isNaN(want[i])), `[${shape}] entry ${i}: ${v} vs ${want[i]}`));
      tf.dispose([a, b]);
    }
    assert.equal(tf.memory().numTensors, before, 'tensors kept');
  } finally {
    await tf.setBackend('cpu');
  }
});
