// The fused SIMD kernels of src/kernels/simd.ts (wasm) against the tfjs ops they replace, bit for
// bit: the search direction (linearisedDirection's equal-curvature L∞ + box branch, with and
// without the evaluation's excesses) and the L∞ + box penalty's elementwise part (value, gradient,
// excesses) and the solver step x + a·p (sign rows included), on saturated pixels, zero gradients, points inside and outside the ball and box; the
// penalty terms of a whole split evaluation (J = c + Σ ρ, full gradients, excesses, search directions) in one kernel against the ops
// of the split evaluation and the whole taped objective; the fallback for sizes that are not multiples of 4; no tensor kept. (The row reductions' SIMD path is
// checked in row_kernels.test.ts.)
import {tf} from './setup.js';
import '@tensorflow/tfjs-backend-wasm';
import assert from 'node:assert/strict';
import {after, before, test} from 'node:test';
import {rowStatsKernel, setHostKernelsEnabled} from '../src/kernels/rows.js';
import {LINF_BOX_DIRECTION, LINF_BOX_PENALTY, simdKernelsAvailable, STEP_ROWS} from '../src/kernels/simd.js';
import {evaluate, stepRows} from '../src/solvers/batched.js';
import {linearisedDirection, penaltyTermsFused, penaltyValueAndGradient, type PenaltyConfig, type PenaltyExcess} from '../src/objective/penalties.js';
import {PENALTY_TERMS} from '../src/kernels/simd.js';
import {instrument, perExampleLoss} from '../src/index.js';
import {disturbanceSites} from '../src/model/instrument.js';
import {disturbanceObjective} from '../src/objective/neuron_space.js';
import type {BatchObjective} from '../src/solvers/types.js';
import {mlp} from './fixtures/models.js';
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

test('SIMD penalty terms of a split evaluation (J, full gradients, excesses, directions) equal the tfjs ops bit for bit (wasm)', async () => {
  await tf.setBackend('wasm');
  const before = tf.memory().numTensors;
  const B = 6;
  // rows of 28 and 8 (L∞ + box), 12 and 8 (quadratic); d with −0, zeros, entries inside and outside the ball and
  // box; layer inputs with −0 (base − lo = −0: relu gives +0) and entries on the box bounds
  const linf: PenaltyConfig = {kind: 'linf', epsilon: 0.1, lambda: 100, box: [0, 1], boxLambda: 100};
  const penalties: PenaltyConfig[] = [
    linf,
    {kind: 'quadratic', lambda: 10},
    {kind: 'linf', epsilon: 0.2, lambda: 30, box: [-1, 1], boxLambda: 7},
    {kind: 'quadratic', lambda: 0.3},
    {kind: 'linf', epsilon: 0.3, lambda: 7, box: [-1, 2], boxLambda: 7},
  ];
  const shapes = [[B, 28], [B, 12], [B, 2, 4], [B, 8], [B, 8]];
  const ds = shapes.map((sh, i) => tf.tensor(data(sh.reduce((a, b) => a * b, 1), 20 + i, -0.4, 0.4).map((v, k) => (k % 11 === 5 ? -0 : v)), sh));
  const bases: (tf.Tensor | undefined)[] = [
    tf.tensor(data(B * 28, 30, -0.1, 1.1, 0.3).map((v, k) => (k % 7 === 3 ? -0 : Math.min(1, Math.max(0, v)))), [B, 28]),
    undefined,
    tf.tensor(data(B * 8, 31, -1, 1), [B, 2, 4]),
    undefined,
    tf.tensor(data(B * 8, 33, -1.2, 2.2, 0.3).map((v, k) => (k % 5 === 1 ? -0 : Math.min(2, Math.max(-1, v)))), [B, 8]),
  ];
  const c = tf.tensor1d(rand(B, 32, 0, 5));
  // the search directions at d: fused for the quadratic layers and the equal-curvature L∞ + box layers, not for
  // the L∞ + box layer with λ_box ≠ λ (linearisedDirection's tfjs ops)
  const dirs = penalties.map((p, i) => linearisedDirection(p, bases[i]));
  assert.deepEqual(dirs.map((d) => d.fusable != null), [true, true, false, true, true]);
  for (const nullAt of [-1, 1, 2]) {
    // a null taped gradient: the loss does not depend on that layer (the gradient is the penalty's alone)
    const taped = shapes.map((sh, i) => (i === nullAt ? null : tf.tensor(data(sh.reduce((a, b) => a * b, 1), 40 + i, -40, 40, 0.1), sh)));
    tf.tidy(() => {
      const got = penaltyTermsFused(c, penalties, ds, bases, taped, dirs, {stats: true});
      assert.ok(got, 'the fused kernel applies');
      assert.deepEqual(got.directions.map((d) => d != null), [true, true, false, true, true], 'fused directions');
      // the solvers' read-back in the same pass: the values of [J, rowStats(gradients, [J, ...d])]
      assert.ok(got.stats, 'stats');
      const stats = Array.from(got.stats.dataSync());
      const rows = Array.from(tf.concat([got.value, rowStatsKernel(got.grads, [got.value, ...ds])]).dataSync());
      rows.forEach((v, k) => assert.ok(Object.is(v, stats[k]), `null taped at ${nullAt}: stats[${k}]: ${stats[k]} vs row kernel ${v}`));
      let j: tf.Tensor = c;
      const want = penalties.map((p, i) => {
        const r = penaltyValueAndGradient(p, ds[i], bases[i]);
        j = tf.add(j, r.value);
        return {grad: taped[i] ? tf.add(taped[i] as tf.Tensor, r.grad) : r.grad, excess: r.excess};
      });
      const eq = (a: tf.Tensor, b: tf.Tensor, what: string) => {
        assert.deepEqual(a.shape, b.shape, `${what}: shape`);
        const x = a.dataSync();
        const y = b.dataSync();
        x.forEach((v, k) => assert.ok(Object.is(v, y[k]), `null taped at ${nullAt}: ${what}[${k}]: ${v} vs ${y[k]}`));
      };
      eq(got.value, j, 'J');
      want.forEach((w, i) => {
        eq(got.grads[i], w.grad, `gradient ${i}`);
        // the excesses only for the direction computed apart (the L∞ + box layer without a fused direction)
        assert.equal(got.excess[i] != null, w.excess != null && got.directions[i] == null, `excess ${i} present`);
        if (got.excess[i] && w.excess) {
          eq((got.excess[i] as PenaltyExcess).ball, w.excess.ball, `ball excess ${i}`);
          eq((got.excess[i] as PenaltyExcess).box as tf.Tensor, w.excess.box as tf.Tensor, `box excess ${i}`);
        }
        if (got.directions[i]) {
          // the tfjs ops of linearisedDirection (no SIMD kernel) on the full gradient at d
          setHostKernelsEnabled(false);
          try {
            eq(got.directions[i] as tf.Tensor, dirs[i].direction(w.grad, ds[i]), `direction ${i}`);
          } finally {
            setHostKernelsEnabled(true);
          }
        }
      });
    });
    tf.dispose(taped.filter((t): t is tf.Tensor => t != null));
  }
  // the read-back flags of non-finite rows: an Inf in a taped gradient (row 2), a NaN in a disturbance (row 4)
  tf.tidy(() => {
    const bad = (t: tf.Tensor, row: number, v: number) => {
      const a = Array.from(t.dataSync());
      a[row * (t.size / B) + 3] = v;
      return tf.tensor(a, t.shape);
    };
    const taped = shapes.map((sh, i) => (i === 1 ? bad(tf.ones(sh), 2, Infinity) : tf.ones(sh)));
    const d2 = ds.map((d, i) => (i === 4 ? bad(d, 4, NaN) : d));
    const got = penaltyTermsFused(c, penalties, d2, bases, taped, dirs, {stats: true});
    assert.ok(got?.stats);
    const stats = Array.from(got.stats.dataSync());
    const rows = Array.from(tf.concat([got.value, rowStatsKernel(got.grads, [got.value, ...d2])]).dataSync());
    assert.deepEqual(stats.slice(B, 2 * B), [1, 1, 0, 1, 0, 1], 'finiteness flags');
    rows.forEach((v, k) => assert.ok(Object.is(v, stats[k]), `non-finite rows: stats[${k}]: ${stats[k]} vs row kernel ${v}`));
  });
  // the direction is not fused (its kernel's single-instruction clips assume finite constants) for a layer
  // input with a NaN or a box with an infinite bound
  tf.tidy(() => {
    const nanBase = tf.tensor2d([NaN, 0.5, 0.5, 0.5], [1, 4]);
    const d1 = linearisedDirection(linf, nanBase);
    const d2 = linearisedDirection({...linf, box: [0, Infinity]}, bases[0]);
    assert.equal(d1.fusable, undefined, 'NaN in the layer input');
    assert.equal(d2.fusable, undefined, 'infinite box bound');
    d1.dispose();
    d2.dispose();
  });
  // not applicable: rows not a multiple of 4, L∞ without box, quadratic with box, L2, no base, off the SIMD path
  tf.tidy(() => {
    const g = [null, null];
    const d6 = tf.zeros([B, 6]);
    assert.equal(penaltyTermsFused(c, [linf, {kind: 'quadratic', lambda: 1}], [ds[0], d6], [bases[0], undefined], g), null, '6 entries per row');
    assert.equal(penaltyTermsFused(c, [{kind: 'linf', epsilon: 0.1}], [ds[0]], [bases[0]], [null]), null, 'L∞ without box');
    assert.equal(penaltyTermsFused(c, [{kind: 'quadratic', lambda: 1, box: [0, 1]}], [ds[0]], [bases[0]], [null]), null, 'quadratic with box');
    assert.equal(penaltyTermsFused(c, [{kind: 'l2', epsilon: 1}], [ds[0]], [bases[0]], [null]), null, 'L2');
    assert.equal(penaltyTermsFused(c, [linf], [ds[0]], [undefined], [null]), null, 'no layer input for the box');
    assert.equal(penaltyTermsFused(c, [{...linf, epsilon: 0}], [ds[0]], [bases[0]], [null]), null, 'ε = 0 (tfjs fills clip(d, −0, 0) with −0)');
    setHostKernelsEnabled(false);
    try {
      assert.equal(penaltyTermsFused(c, [linf], [ds[0]], [bases[0]], [null]), null, 'host kernels off');
    } finally {
      setHostKernelsEnabled(true);
    }
  });
  dirs.forEach((d) => d.dispose());
  tf.dispose([...ds, ...bases.filter((t): t is tf.Tensor => t != null), c]);
  assert.equal(tf.memory().numTensors, before, 'tensors kept');

  // through the solvers' evaluation of eq. 9 on an instrumented MLP (8 inputs, hidden 8, 8): fused vs split ops vs the whole taped objective
  const model = instrument(mlp({activation: 'relu', inputDim: 8}), {input: {kind: 'linf', epsilon: 0.1, box: [0, 1]}, hidden: {kind: 'quadratic', lambda: 3}});
  model.compile({optimizer: 'sgd', loss: 'categoricalCrossentropy'});
  const layers = disturbanceSites(model).map((s) => s.layer);
  const withModel = tf.memory().numTensors; // the model's weights
  const x = tf.tensor2d(rand(B * 8, 50, 0, 1), [B, 8]);
  const y = tf.tidy(() => tf.oneHot(tf.tensor1d([0, 1, 2, 1, 0, 2], 'int32'), 3));
  const xs = [tf.tensor2d(rand(B * 8, 51, -0.25, 0.25), [B, 8]), tf.tensor2d(rand(B * 8, 52, -0.3, 0.3), [B, 8]), tf.tensor2d(rand(B * 8, 53, -0.3, 0.3), [B, 8])];
  const excess = new Map<tf.Tensor, PenaltyExcess>();
  const f = disturbanceObjective(model, layers, x, y, perExampleLoss(model), layers.map((l) => l.penalty), [x, undefined, undefined], excess);
  const whole: BatchObjective = (v) => f(v);
  const run = (obj: BatchObjective, simd: boolean) => {
    setHostKernelsEnabled(simd);
    try {
      return tf.tidy(() => {
        const e = evaluate(obj, xs, B);
        const ex = excess.get(xs[0]);
        const out = [e.value, ...e.grads].map((t) => Array.from(t.dataSync()));
        return obj === f ? [...out, ...[ex?.ball, ex?.box].map((t) => Array.from((t as tf.Tensor).dataSync()))] : out;
      });
    } finally {
      setHostKernelsEnabled(true);
    }
  };
  const fused = run(f, true);
  const split = run(f, false);
  const taped = run(whole, true);
  fused.forEach((a, k) => a.forEach((v, i) => assert.ok(Object.is(v, split[k][i]), `evaluate, output ${k} [${i}]: fused ${v} vs split ops ${split[k][i]}`)));
  taped.forEach((a, k) => a.forEach((v, i) => assert.ok(Object.is(v, fused[k][i]), `evaluate, output ${k} [${i}]: fused ${fused[k][i]} vs whole taped ${v}`)));
  const profile = await tf.profile(() => tf.tidy(() => void evaluate(f, xs, B)));
  assert.ok(profile.kernels.some((k) => k.name === PENALTY_TERMS), 'the fused kernel ran');
  excess.clear();
  tf.dispose([x, y, ...xs]);
  assert.equal(tf.memory().numTensors, withModel, 'tensors kept by the evaluations');
});
