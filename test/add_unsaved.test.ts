// addUnsaved (the Disturbance layers' x + d without the tape's input copies) against tf.add:
// values and gradients bit for bit on cpu and wasm, fewer kernels under a tape, the tf.add
// fallback for broadcasting, and no tensor kept.
import {tf} from './setup.js';
import '@tensorflow/tfjs-backend-wasm';
import assert from 'node:assert/strict';
import {after, before, test} from 'node:test';
import {addUnsaved} from '../src/kernels/add_unsaved.js';
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
