// The fused SIMD kernels of src/kernels/simd.ts (wasm) against the tfjs ops they replace, bit for
// bit: the search direction (linearisedDirection's equal-curvature L∞ + box branch, with and
// without the evaluation's excesses) and the L∞ + box penalty's elementwise part (value, gradient,
// excesses) and the solver step x + a·p (sign rows included), on saturated pixels, zero gradients, points inside and outside the ball and box; the
// fallback for sizes that are not multiples of 4; no tensor kept. (The row reductions' SIMD path is
// checked in row_kernels.test.ts.)
import {tf} from './setup.js';
import '@tensorflow/tfjs-backend-wasm';
import assert from 'node:assert/strict';
import {after, before, test} from 'node:test';
import {setHostKernelsEnabled} from '../src/kernels/rows.js';
import {LINF_BOX_DIRECTION, LINF_BOX_PENALTY, simdKernelsAvailable, STEP_ROWS} from '../src/kernels/simd.js';
import {stepRows} from '../src/solvers/batched.js';
import {linearisedDirection, penaltyValueAndGradient, type PenaltyConfig} from '../src/objective/penalties.js';
import {rand} from './fixtures/random.js';

before(async () => {
  await tf.setBackend('wasm');
});
after(async () => {
  setHostKernelsEnabled(true);
  await tf.setBackend('cpu');
});

/** Values with exact zeros and repeated entries mixed in (ties at the kinks). */
function data(n: number, seed: number, lo: number, hi: number, zeros = 0.2): number[] {
  const r = rand(n, seed, lo, hi);
  const u = rand(n, seed + 99, 0, 1);
  return r.map((v, i) => (u[i] < zeros ? 0 : u[i] > 0.95 ? Math.round(v * 10) / 10 : v));
}

test('SIMD L∞ + box direction equals the tfjs ops bit for bit (wasm)', async () => {
  await tf.setBackend('wasm');
  assert.equal(simdKernelsAvailable(), true, 'the SIMD module instantiates on the wasm backend');
  const configs: [PenaltyConfig, number[]][] = [
    [{kind: 'linf', epsilon: 0.1, lambda: 100, box: [0, 1]}, [6, 28]],
    [{kind: 'linf', epsilon: 0.3, lambda: 7, box: [-1, 2], boxLambda: 7}, [5, 4, 4]],
  ];
  const before = tf.memory().numTensors;
  for (const [cfg, shape] of configs) {
    const n = shape.reduce((a, b) => a * b, 1);
    const [lo, hi] = cfg.box as [number, number];
    const base = tf.tensor(data(n, 1, lo - 0.1, hi + 0.1, 0.3).map((v) => Math.min(hi, Math.max(lo, v))), shape);
    const d = tf.tensor(data(n, 2, -0.5, 0.5), shape);
    const g = tf.tensor(data(n, 3, -4, 4, 0.15), shape);
    const dir = linearisedDirection(cfg, base);
    for (const withExcess of [true, false]) {
      const run = (simd: boolean) => {
        setHostKernelsEnabled(simd);
        try {
          return tf.tidy(() => {
            const excess = withExcess ? penaltyValueAndGradient(cfg, d, base).excess : undefined;
            return Array.from(dir.direction(g, d, excess).dataSync());
          });
        } finally {
          setHostKernelsEnabled(true);
        }
      };
      const got = run(true);
      const want = run(false);
      got.forEach((v, i) => assert.ok(Object.is(v, want[i]), `${JSON.stringify(cfg)} excess=${withExcess} [${i}]: ${v} vs ${want[i]}`));
    }
    const profile = await tf.profile(() => tf.tidy(() => void dir.direction(g, d)));
    assert.ok(profile.kernels.some((k) => k.name === LINF_BOX_DIRECTION), 'the fused kernel ran');
    assert.ok(profile.kernels.length <= 6, `${profile.kernels.length} kernels instead of ≈ 29`);
    dir.dispose();
    tf.dispose([base, d, g]);
  }
  // a size that is not a multiple of 4 falls back to the tfjs ops
  const cfg: PenaltyConfig = {kind: 'linf', epsilon: 0.1, lambda: 100, box: [0, 1]};
  const base = tf.tensor2d(data(15, 4, 0, 1), [3, 5]);
  const d = tf.tensor2d(data(15, 5, -0.3, 0.3), [3, 5]);
  const g = tf.tensor2d(data(15, 6, -2, 2), [3, 5]);
  const dir = linearisedDirection(cfg, base);
  const profile = await tf.profile(() => tf.tidy(() => void dir.direction(g, d)));
  assert.ok(!profile.kernels.some((k) => k.name === LINF_BOX_DIRECTION), 'no fused kernel for 15 entries');
  dir.dispose();
  tf.dispose([base, d, g]);
  assert.equal(tf.memory().numTensors, before, 'tensors kept');
});

test('SIMD L∞ + box penalty value, gradient and excesses equal the tfjs ops bit for bit (wasm)', async () => {
  await tf.setBackend('wasm');
  const configs: [PenaltyConfig, number[]][] = [
    [{kind: 'linf', epsilon: 0.1, lambda: 100, box: [0, 1]}, [6, 28]],
    [{kind: 'linf', epsilon: 0.25, lambda: 30, box: [-1, 2], boxLambda: 9}, [5, 4, 4]],
  ];
  const before = tf.memory().numTensors;
  for (const [cfg, shape] of configs) {
    const n = shape.reduce((a, b) => a * b, 1);
    const [lo, hi] = cfg.box as [number, number];
    const base = tf.tensor(data(n, 7, lo - 0.2, hi + 0.2, 0.3).map((v) => Math.min(hi, Math.max(lo, v))), shape);
    const d = tf.tensor(data(n, 8, -0.6, 0.6), shape);
    const run = (simd: boolean) => {
      setHostKernelsEnabled(simd);
      try {
        return tf.tidy(() => {
          const r = penaltyValueAndGradient(cfg, d, base);
          return [r.value, r.grad, r.excess?.ball as tf.Tensor, r.excess?.box as tf.Tensor].map((t) => Array.from(t.dataSync()));
        });
      } finally {
        setHostKernelsEnabled(true);
      }
    };
    const got = run(true);
    const want = run(false);
    ['value', 'gradient', 'ball excess', 'box excess'].forEach((what, k) =>
      got[k].forEach((v, i) => assert.ok(Object.is(v, want[k][i]), `${JSON.stringify(cfg)} ${what}[${i}]: ${v} vs ${want[k][i]}`)),
    );
    const profile = await tf.profile(() => tf.tidy(() => void penaltyValueAndGradient(cfg, d, base)));
    assert.ok(profile.kernels.some((k) => k.name === LINF_BOX_PENALTY), 'the fused kernel ran');
    tf.dispose([base, d]);
  }
  assert.equal(tf.memory().numTensors, before, 'tensors kept');
});

test('SIMD step rows (x + a·p, sign rows with the wasm Sign dead zone) equal the tfjs ops bit for bit (wasm)', async () => {
  await tf.setBackend('wasm');
  const before = tf.memory().numTensors;
  const e = 2 ** -23;
  for (const shape of [[6, 8], [4, 2, 14]]) {
    const n = shape.reduce((a, b) => a * b, 1);
    const B = shape[0];
    const x = tf.tensor(data(n, 11, -1, 1), shape);
    // p with exact zeros and values at the edge of the dead zone
    const pv = data(n, 12, -0.5, 0.5).map((v, i) => (i % 7 === 0 ? [e, -e, e / 2, -e / 2, 3 * e][i % 5] : v));
    const p = tf.tensor(pv, shape);
    const a = tf.tensor1d(rand(B, 13, 0, 3));
    const mag = tf.tensor1d(rand(B, 14, 0, 0.2));
    const masks = [null, tf.tensor1d(rand(B, 15, 0, 1).map((u) => (u > 0.5 ? 1 : 0)), 'bool')];
    for (const sign of [false, true]) {
      for (const mask of sign ? masks : [null]) {
        const run = (simd: boolean) => {
          setHostKernelsEnabled(simd);
          try {
            return tf.tidy(() => Array.from(stepRows(x, a as tf.Tensor1D, p, sign ? {mask: mask as tf.Tensor1D | null, mag: mag as tf.Tensor1D} : undefined).dataSync()));
          } finally {
            setHostKernelsEnabled(true);
          }
        };
        const got = run(true);
        const want = run(false);
        got.forEach((v, i) => assert.ok(Object.is(v, want[i]), `shape ${shape} sign=${sign} mask=${mask != null} [${i}]: ${v} vs ${want[i]}`));
      }
    }
    const profile = await tf.profile(() => tf.tidy(() => void stepRows(x, a as tf.Tensor1D, p, {mask: null, mag: mag as tf.Tensor1D})));
    assert.ok(profile.kernels.some((k) => k.name === STEP_ROWS), 'the fused kernel ran');
    tf.dispose([x, p, a, mag, ...masks.filter((m): m is tf.Tensor1D => m != null)]);
  }
  assert.equal(tf.memory().numTensors, before, 'tensors kept');
});
