// The host-decision iteration of preconditionedAscent (per-example acceptance, annealing schedule
// and step sizes decided on the host from the one read-back of each iteration) against the
// tensor-op iteration it replaces (still used for PR+), bit for bit, on cpu and wasm; and
// `backendSign` (the fast-kernel sign used by the annealed L∞ steps) against `tf.sign`.
import {tf} from './setup.js';
import '@tensorflow/tfjs-backend-wasm';
import assert from 'node:assert/strict';
import {after, before, test} from 'node:test';
import {preconditionedAscent, setPreconditionedHostDecisions, type PreconditionedAscentOptions} from '../src/solvers/preconditioned.js';
import {backendSign} from '../src/solvers/batched.js';
import type {BatchObjective, SolverResult} from '../src/solvers/types.js';

before(async () => {
  await tf.setBackend('wasm');
  await tf.setBackend('cpu');
});
after(async () => {
  setPreconditionedHostDecisions(true);
  await tf.setBackend('cpu');
});

/**
 * Two tensors per example: x [B, 3] on a kinked ridge (−10·Σ|xᵢ − xᵢ₊₁| + s − 0.05 s², s = Σxᵢ,
 * maximum at xᵢ = 10/3) that turns NaN past x₀ = 3 (0·log(3 − x₀)), and y [B, 2, 2] under a
 * concave quadratic with a kink (−Σ(y − c)² − |y₀₀|).
 */
const f: BatchObjective = (xs) =>
  tf.tidy(() => {
    const [x, y] = xs;
    const x0 = tf.slice(x, [0, 0], [-1, 1]);
    const x1 = tf.slice(x, [0, 1], [-1, 1]);
    const x2 = tf.slice(x, [0, 2], [-1, 1]);
    const s = tf.sum(x, 1);
    const ridge = tf.sub(tf.sub(s, tf.mul(0.05, tf.square(s))), tf.mul(10, tf.reshape(tf.add(tf.abs(tf.sub(x0, x1)), tf.abs(tf.sub(x1, x2))), [-1])));
    const nan = tf.reshape(tf.mul(0, tf.log(tf.sub(3, x0))), [-1]);
    const yf = tf.reshape(y, [y.shape[0], -1]);
    const c = tf.tensor1d([0.5, -1, 2, 0.25]);
    const quad = tf.neg(tf.add(tf.sum(tf.square(tf.sub(yf, c)), 1), tf.abs(tf.reshape(tf.slice(yf, [0, 0], [-1, 1]), [-1]))));
    return tf.add(tf.add(ridge, nan), quad) as tf.Tensor1D;
  });

const X0 = [
  [0, 0.3, -0.2],
  [1, -1, 0.5],
  [-2, 0, 0],
  [2.5, 2.9, 2.8],
  [0.1, 0.1, 0.1],
  [-1, 3, 1],
  [3.2, 0, 0], // NaN at the start (frozen there; its gradient rows are zeroed at the start)
];
const Y0 = X0.map((r, b) => [[r[0] * 0.1, b * 0.2], [-0.3, 0.5 * b]]);

function run(options: PreconditionedAscentOptions, host: boolean): {r: SolverResult; xs: number[][]; J: number[]} {
  setPreconditionedHostDecisions(host);
  const x0 = [tf.tensor2d(X0), tf.tensor3d(Y0)];
  const before = tf.memory().numTensors;
  const r = preconditionedAscent(f, x0, {direction: (_x, g) => g.map((gi) => tf.mul(gi, 0.05)), ...options});
  const xs = r.xs.map((t) => Array.from(t.dataSync()));
  const J = Array.from(r.objective.dataSync());
  tf.dispose([...r.xs, r.objective]);
  assert.equal(tf.memory().numTensors, before, `host=${host}: ${tf.memory().numTensors - before} tensors leaked`);
  tf.dispose(x0);
  return {r, xs, J};
}

const variants: [string, PreconditionedAscentOptions][] = [
  ['anneal with scale, sign and a saturated first step', {anneal: {scale: [1.5, 1], sign: [true, false]}, initialStep: (J) => tf.clipByValue(tf.add(tf.abs(J), 1), 1, 4) as tf.Tensor1D, maxStep: 2, maxGradientEvaluations: 25}],
  ['anneal after 2 rejections from a fixed start step, sign on both tensors', {anneal: {after: 2, start: 0.5, floor: 0.1, sign: [true, true]}, maxGradientEvaluations: 15, growFactor: 3, shrinkFactor: 0.5}],
  ['monotone with a loose tolerance (examples converge)', {maxGradientEvaluations: 12, tolerance: 0.05, gradientTolerance: 0.05, initialStep: [1, 2, 0.5, 1, 8, 1, 2]}],
  ['anneal bounded by maxIterations only', {anneal: true, maxIterations: 9}],
  ['monotone, frozen after 2 rejections', {maxGradientEvaluations: 20, maxConsecutiveRejections: 2, initialStep: 5, maxStep: 5}],
  ['first step from the origin, anneal only while 4 iterations remain', {initialStepFrom: 'origin', initialStep: [3, 1, 0.5, 2, 8, 1, 2], anneal: {after: 1, minRemaining: 4}, maxGradientEvaluations: 14}],
];

for (const backend of ['cpu', 'wasm']) {
  test(`preconditionedAscent: host decisions give the tensor-op iteration's iterates bit for bit (${backend})`, async () => {
    await tf.setBackend(backend);
    try {
      for (const [name, options] of variants) {
        const h = run(options, true);
        const d = run(options, false);
        assert.deepEqual(h.xs, d.xs, `${name}: points`);
        assert.deepEqual(h.J, d.J, `${name}: objective`);
        assert.deepEqual(h.r.exampleHistory, d.r.exampleHistory, `${name}: per-example history`);
        for (const k of ['iterations', 'gradientEvaluations', 'nonFinite', 'converged', 'stalled'] as const) {
          assert.equal(h.r[k], d.r[k], `${name}: ${k}`);
        }
      }
      // the variants exercise what they should: a non-finite example, converged and stalled ones
      const all = variants.map(([, o]) => run(o, true).r);
      assert.ok(all.some((r) => r.nonFinite > 0), 'some example met NaN');
      assert.ok(all.some((r) => r.converged > 0), 'some example converged');
      assert.ok(all.some((r) => r.stalled > 0), 'some example stalled');
    } finally {
      setPreconditionedHostDecisions(true);
      await tf.setBackend('cpu');
    }
  });

  test(`backendSign equals tf.sign on ${backend} (dead zone of the backend's Sign included)`, async () => {
    await tf.setBackend(backend);
    try {
      const e = 2 ** -23;
      const v: number[] = [0, -0, 1, -1, 3.5, -1e-3, 1e-7, -1e-7, 1e-30, -1e-38, 1e-45, 3e38, -3e38, e, -e, e * (1 - 2 ** -24), -e * (1 - 2 ** -24), e * (1 + 2 ** -23), 2 * e, 0.5 * e];
      for (let i = 0; i < 200; i++) v.push(Math.fround(Math.sin(i * 12.9898) * 10 ** ((i % 16) - 12)));
      const before = tf.memory().numTensors;
      const [got, want] = tf.tidy(() => {
        const t = tf.tensor1d(v);
        return [Array.from(backendSign(t).dataSync()), Array.from(tf.sign(t).dataSync())];
      });
      v.forEach((x, i) => assert.ok(Object.is(got[i] + 0, want[i] + 0), `sign(${x}): ${got[i]} vs tf.sign ${want[i]}`));
      assert.equal(tf.memory().numTensors, before, 'tensors leaked');
    } finally {
      await tf.setBackend('cpu');
    }
  });
}
