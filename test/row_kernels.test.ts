// The fused per-example kernels of src/kernels/rows.ts (row dots, rows finite, row stats, row select) against
// the unfused tfjs ops on the cpu backend (the reference), the same kernels on wasm against cpu,
// the fallback while a gradient tape records, and the analytic-gradient penalty term against the
// taped penalty. Every check also asserts that no tensor is kept.
import {tf} from './setup.js';
import '@tensorflow/tfjs-backend-wasm';
import assert from 'node:assert/strict';
import {after, before, test} from 'node:test';
import {rowDotsKernel, rowKernelsAvailable, rowsFiniteKernel, rowStatsKernel, selectRowsKernel} from '../src/kernels/rows.js';
import {batchDot, finitePerExample, select, whereRows} from '../src/solvers/batched.js';
import {penaltyValue, penaltyValueAnalyticGrad, type PenaltyConfig} from '../src/objective/penalties.js';

before(async () => {
  await tf.setBackend('wasm');
  await tf.setBackend('cpu');
});
after(async () => {
  await tf.setBackend('cpu');
});

/** A deterministic [B, ...] float tensor with values in [−1, 1). */
function data(shape: number[], seed: number): tf.Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const v = new Float32Array(n);
  let s = seed * 7919 + 1;
  for (let i = 0; i < n; i++) {
    s = (s * 16807) % 2147483647;
    v[i] = (s / 2147483647) * 2 - 1;
  }
  return tf.tensor(v, shape);
}

/** Runs fn (its intermediates tidied) and returns its outputs as arrays; asserts numTensors is unchanged afterwards. */
function run(fn: () => tf.Tensor[]): number[][] {
  const n0 = tf.memory().numTensors;
  const ids0 = tf.engine().backend.numDataIds();
  const out = tf.tidy(fn);
  const vals = out.map((t) => Array.from(t.dataSync()));
  tf.dispose(out);
  assert.equal(tf.memory().numTensors, n0, 'tensors kept');
  assert.equal(tf.engine().backend.numDataIds(), ids0, 'backend data kept');
  return vals;
}

function close(a: number[], b: number[], tol: number, what: string): void {
  assert.equal(a.length, b.length, `${what}: lengths`);
  a.forEach((v, i) => assert.ok(Math.abs(v - b[i]) <= tol * Math.max(1, Math.abs(b[i])), `${what}[${i}]: ${v} vs ${b[i]}`));
}

const shapes = [[5], [5, 7], [5, 3, 4], [5, 2, 2, 3]];

for (const backend of ['cpu', 'wasm']) {
  test(`row kernels on ${backend} equal the unfused tfjs ops on cpu (dots, finite, select; NaN/Inf; int and bool rows)`, async () => {
    await tf.setBackend('cpu');
    const mk = () => ({
      as: shapes.map((s, i) => data(s, i + 1)),
      bs: shapes.map((s, i) => data(s, i + 11)),
    });
    // reference: tfjs ops on cpu
    const ref = (() => {
      const {as, bs} = mk();
      const out = run(() => {
        const dot = tf.addN(as.map((a, i) => tf.sum(tf.reshape(tf.mul(a, bs[i]), [5, -1]), 1)));
        return [dot];
      });
      tf.dispose([...as, ...bs]);
      return out[0];
    })();
    await tf.setBackend(backend);
    assert.equal(rowKernelsAvailable(), true);
    const {as, bs} = mk();
    const [dot] = run(() => [rowDotsKernel(as, bs)]);
    close(dot, ref, 1e-6, `${backend} rowDots`);
    // batchDot goes through the kernel here and gives the same
    close(run(() => [batchDot(as, bs, 5)])[0], ref, 1e-6, `${backend} batchDot`);

    // finite: one non-finite entry per chosen row, in different tensors
    const bad = as.map((a, i) => {
      const v = a.dataSync().slice();
      const m = v.length / 5;
      if (i === 1) v[1 * m + m - 1] = NaN; // row 1, last entry
      if (i === 2) v[3 * m] = Infinity; // row 3, first entry
      if (i === 3) v[4 * m + 2] = -Infinity; // row 4
      return tf.tensor(v, a.shape);
    });
    const [fin] = run(() => [rowsFiniteKernel(bad)]);
    assert.deepEqual(fin, [1, 0, 1, 0, 0]);
    const [fin2] = run(() => [finitePerExample(bad[0] as tf.Tensor1D, bad.slice(1, 3), bad.slice(3), 5)]);
    assert.deepEqual(fin2, [1, 0, 1, 0, 0]);

    // row stats: [finite flags, ‖g‖²] = rowsFinite of everything and rowDots of the gradients with themselves
    for (const [gs, others] of [[as, bs], [bad.slice(0, 2), bad.slice(2)], [bad.slice(2), as]] as const) {
      const [stats] = run(() => [rowStatsKernel([...gs], [...others])]);
      const [f] = run(() => [rowsFiniteKernel([...gs, ...others])]);
      assert.deepEqual(stats.slice(0, 5), f, `${backend} rowStats flags`);
      const [gg] = run(() => [rowDotsKernel([...gs], [...gs])]);
      stats.slice(5).forEach((v, r) => assert.ok(Object.is(v, gg[r]) || (f[r] === 0 && !Number.isFinite(v)), `${backend} rowStats ‖g‖² row ${r}: ${v} vs ${gg[r]}`));
    }

    // select rows: values copied bit for bit, NaN of the unselected operand does not leak
    const mask = tf.tensor1d([1, 0, 0, 1, 1], 'bool');
    for (let i = 0; i < shapes.length; i++) {
      const [got] = run(() => [selectRowsKernel(mask, bad[i], bs[i])]);
      const [want] = run(() => [tf.where(tf.reshape(mask, [5, ...shapes[i].slice(1).map(() => 1)]), bad[i], bs[i])]);
      assert.deepEqual(got, want, `${backend} selectRows shape ${shapes[i]}`);
      assert.deepEqual(run(() => [whereRows(mask, bad[i], bs[i])])[0], want);
    }
    const ints = [tf.tensor2d([[1, 2], [3, 4], [5, 6], [7, 8], [9, 10]], undefined, 'int32'), tf.zeros([5, 2], 'int32')];
    assert.deepEqual(run(() => [selectRowsKernel(mask, ints[0], ints[1])])[0], [1, 2, 0, 0, 0, 0, 7, 8, 9, 10]);
    const bools = [tf.ones([5, 3], 'bool'), tf.zeros([5, 3], 'bool')];
    assert.deepEqual(run(() => [selectRowsKernel(mask, bools[0], bools[1])])[0], [1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1]);
    tf.dispose([...as, ...bs, ...bad, mask, ...ints, ...bools]);
    await tf.setBackend('cpu');
  });
}

test('while a gradient tape records, the row helpers use differentiable tfjs ops (gradient of whereRows and batchDot)', () => {
  const a = data([4, 3], 1);
  const b = data([4, 3], 2);
  const mask = tf.tensor1d([1, 0, 1, 0], 'bool');
  const n0 = tf.memory().numTensors;
  const [ga, gb] = tf.grads((x: tf.Tensor, y: tf.Tensor) => tf.add(tf.sum(whereRows(mask, x, y)), tf.sum(batchDot([x], [y], 4))))([a, b]);
  // d/dx = mask + y, d/dy = (1 − mask) + x
  const m = [1, 1, 1, 0, 0, 0, 1, 1, 1, 0, 0, 0];
  close(Array.from(ga.dataSync()), Array.from(b.dataSync()).map((v, i) => v + m[i]), 1e-6, 'd/dx');
  close(Array.from(gb.dataSync()), Array.from(a.dataSync()).map((v, i) => v + 1 - m[i]), 1e-6, 'd/dy');
  tf.dispose([ga, gb]);
  assert.equal(tf.memory().numTensors, n0);
  tf.dispose([a, b, mask]);
});

test('penaltyValueAnalyticGrad: same value as penaltyValue, same gradient as the taped one, no tensors kept', () => {
  const base = tf.tidy(() => tf.add(tf.mul(data([3, 8], 5), 0.6), 0.5)); // in [−0.1, 1.1): partly outside the box
  const d = tf.tidy(() => tf.mul(data([3, 8], 6), 0.3)); // inside and outside ε = 0.1
  const configs: PenaltyConfig[] = [
    {kind: 'quadratic', lambda: 3},
    {kind: 'quadratic', lambda: 3, box: [0, 1], boxLambda: 50},
    {kind: 'linf', epsilon: 0.1, lambda: 100},
    {kind: 'linf', epsilon: 0.1, lambda: 100, box: [0, 1], boxLambda: 100},
    {kind: 'linf', epsilon: 0.1, lambda: 100, box: [0, 1], boxLambda: 30},
    {kind: 'l2', epsilon: 0.2, lambda: 100},
  ];
  for (const c of configs) {
    const w = tf.tensor1d([1, 2, -0.5]); // per-example weights of the upstream gradient
    const n0 = tf.memory().numTensors;
    const taped = tf.grad((x: tf.Tensor) => tf.sum(tf.mul(penaltyValue(c, x, base), w)))(d);
    const ours = tf.grad((x: tf.Tensor) => tf.sum(tf.mul(penaltyValueAnalyticGrad(c, x, base), w)))(d);
    const v1 = penaltyValue(c, d, base);
    const v2 = penaltyValueAnalyticGrad(c, d, base);
    assert.deepEqual(Array.from(v2.dataSync()), Array.from(v1.dataSync()), `${JSON.stringify(c)} value`);
    const t = Array.from(taped.dataSync());
    assert.ok(t.some((v) => v !== 0), `${JSON.stringify(c)}: the test point must have a non-zero penalty gradient`);
    close(Array.from(ours.dataSync()), t, 1e-6, `${JSON.stringify(c)} gradient`);
    tf.dispose([taped, ours, v1, v2]);
    assert.equal(tf.memory().numTensors, n0, `${JSON.stringify(c)}: tensors kept`);
    w.dispose();
  }
  tf.dispose([base, d]);
});


test('select / whereRows with bool operands give the logical select on cpu and wasm (wasm Select writes 4-byte results into bool outputs)', async () => {
  for (const backend of ['cpu', 'wasm']) {
    await tf.setBackend(backend);
    const n = 37;
    const want = Array.from({length: n}, (_, i) => ((i % 3 === 0 ? i % 2 === 0 : i % 5 === 0) ? 1 : 0));
    const got = run(() => {
      const c = tf.tensor1d(Array.from({length: n}, (_, i) => i % 3 === 0), 'bool');
      const a = tf.tensor1d(Array.from({length: n}, (_, i) => i % 2 === 0), 'bool');
      const b = tf.tensor1d(Array.from({length: n}, (_, i) => i % 5 === 0), 'bool');
      // rank 2 rows: the mask broadcast over 4 columns
      const a2 = tf.tile(tf.reshape(a, [n, 1]), [1, 4]);
      const b2 = tf.tile(tf.reshape(b, [n, 1]), [1, 4]);
      const r = [select(c, a, b), whereRows(c, a2, b2)];
      assert.deepEqual(r.map((t) => t.dtype), ['bool', 'bool']);
      return r;
    });
    assert.deepEqual(got[0], want, `${backend}: select`);
    assert.deepEqual(got[1], want.flatMap((v) => [v, v, v, v]), `${backend}: whereRows`);
  }
  await tf.setBackend('cpu');
});
