/**
 * Acceptance check of `autoAttack` against an independent attacker, and its cost relative to
 * PGD-40×2, side by side in one run (issue 10). Not a test.
 *
 *   npx tsx bench/autoattack.ts --model DIR [--epsilon 0.1] [--examples 1000] [--restarts 5]
 *                               [--versions standard,fast] [--backend wasm|cpu|auto] [--seed 0] [--skip-independent]
 *
 * DIR is a saved MNIST MLP (e.g. a run's `model/` from `npm run cli -- train --method pgd ...`).
 *
 * Independent attacker (written here from scratch, sharing no code with src/attacks): the model's
 * Dense layers are re-implemented with plain tfjs ops from `getWeights()` (so the logits come
 * without the softmax, independently of `logits.ts`); PGD L∞ with a cross-entropy loss and with
 * the Carlini–Wagner margin loss, 100 steps each, `--restarts` random starts each, step size
 * 0.25ε for steps 0–49, 0.05ε for 50–79, 0.01ε for 80–99 (step decay), inside [0, 1]. An example
 * counts as broken when ANY iterate of ANY run is misclassified (checked every step); its first
 * such point is kept and re-checked with `model.predict`. Robust accuracy = fraction of examples
 * correctly classified clean and never broken.
 *
 * Printed: clean accuracy, PGD-40×2 (the package's pgdAttack, as `eval --attacks pgd` runs it),
 * the independent attacker, autoAttack per version (robust accuracy, per stage, max perturbation,
 * wall time) and the ratios autoAttack / PGD-40×2 in wall time and in per-example gradient/forward
 * evaluations. Acceptance: autoAttack('standard') ≤ independent + 0.5 point.
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import {performance} from 'node:perf_hooks';
import {parseArgs} from 'node:util';

import {autoAttack, AutoAttackVersion} from '../src/attacks/autoattack.js';
import {pgdAttack} from '../src/attacks/pgd.js';
import {loadData, loadModel, toModelInput, useBackend} from '../cli/src/common.js';

const {values: args} = parseArgs({
  options: {
    model: {type: 'string'},
    epsilon: {type: 'string', default: '0.1'},
    examples: {type: 'string', default: '1000'},
    restarts: {type: 'string', default: '5'},
    versions: {type: 'string', default: 'standard,fast'},
    backend: {type: 'string', default: 'wasm'},
    seed: {type: 'string', default: '0'},
    'batch-size': {type: 'string', default: '500'},
    'skip-independent': {type: 'boolean', default: false},
  },
});
if (!args.model) throw new Error('give --model DIR (a saved MNIST MLP)');
const eps = Number(args.epsilon);
const N = Number(args.examples);
const R = Number(args.restarts);
const seed = Number(args.seed);
const BS = Number(args['batch-size']);

await useBackend(args.backend as 'wasm', false);
const model = await loadModel(args.model);
model.compile({optimizer: 'sgd', loss: 'categoricalCrossentropy'});
const data = await loadData('test', {limit: N});
const x = toModelInput(model, data.xs);
const y = data.ys;
const labels = Int32Array.from(tf.tidy(() => tf.argMax(y, -1)).dataSync());

function predict(m: tfl.LayersModel, xs: tf.Tensor): Int32Array {
  const out = new Int32Array(xs.shape[0]);
  for (let s = 0; s < xs.shape[0]; s += BS) {
    const n = Math.min(BS, xs.shape[0] - s);
    const p = tf.tidy(() => tf.argMax(m.predict(tf.slice(xs, [s], [n])) as tf.Tensor, -1));
    out.set(p.dataSync(), s);
    p.dispose();
  }
  return out;
}
const clean = predict(model, x);
const cleanOk = Uint8Array.from(clean, (c, i) => (c === labels[i] ? 1 : 0));
const pct = (v: number) => (100 * v).toFixed(1);
const count = (a: ArrayLike<number>) => Array.from(a).reduce((s, v) => s + v, 0);
console.log(`model ${args.model}, ${N} MNIST test images, ε = ${eps} (L∞, [0, 1]), backend ${tf.getBackend()}`);
console.log(`clean accuracy ${pct(count(cleanOk) / N)} %`);

// ------------------------------------------------------------ independent attacker
// Dense layers re-implemented from the weights: logits without the final softmax.
const dense = model.layers.filter((l) => l.getClassName() === 'Dense');
if (dense.length !== model.layers.length) throw new Error('the independent attacker re-implements Dense-only MLPs');
const params = dense.map((l) => {
  const [w, b] = l.getWeights();
  return {w, b, act: (l.getConfig().activation as string) ?? 'linear'};
});
function logitsIndep(xs: tf.Tensor): tf.Tensor2D {
  let h: tf.Tensor = xs;
  params.forEach((p, i) => {
    h = tf.add(tf.matMul(h as tf.Tensor2D, p.w as tf.Tensor2D), p.b);
    const last = i === params.length - 1;
    if (!last && p.act === 'relu') h = tf.relu(h);
    else if (!last && p.act !== 'linear') throw new Error(`unsupported hidden activation ${p.act}`);
  });
  return h as tf.Tensor2D; // the last layer's softmax is left out
}
function indepLoss(kind: 'ce' | 'cw', z: tf.Tensor2D, onehot: tf.Tensor2D): tf.Tensor {
  if (kind === 'ce') return tf.neg(tf.sum(tf.mul(onehot, tf.logSoftmax(z)), 1));
  const zy = tf.sum(tf.mul(onehot, z), 1);
  const other = tf.max(tf.add(z, tf.mul(onehot, -1e9)), 1);
  return tf.sub(other, zy);
}
function independent(): {ok: Uint8Array; seconds: number} {
  const t0 = performance.now();
  const broken = new Uint8Array(N);
  const found = new Float32Array(x.size);
  const xData = x.dataSync();
  const d = x.size / N;
  let run = 0;
  for (const kind of ['ce', 'cw'] as const) {
    for (let r = 0; r < R; r++, run++) {
      for (let s = 0; s < N; s += BS) {
        const n = Math.min(BS, N - s);
        const xb = tf.slice(x, [s], [n]);
        const yb = tf.slice(y, [s], [n]) as tf.Tensor2D;
        const lb = tf.tensor1d(labels.subarray(s, s + n), 'int32');
        let adv = tf.tidy(() => tf.clipByValue(tf.add(xb, tf.randomUniform(xb.shape, -eps, eps, 'float32', 7919 * run + s + seed)), 0, 1));
        const grad = tf.grad((v: tf.Tensor) => tf.sum(indepLoss(kind, logitsIndep(v), yb)));
        for (let t = 0; t <= 100; t++) {
          // check the current iterate
          const wrong = tf.tidy(() => tf.notEqual(tf.cast(tf.argMax(logitsIndep(adv), -1), 'int32'), lb)).dataSync();
          const a = adv.dataSync();
          for (let i = 0; i < n; i++) {
            if (wrong[i] && !broken[s + i] && cleanOk[s + i]) {
              broken[s + i] = 1;
              found.set(a.subarray(i * d, (i + 1) * d), (s + i) * d);
            }
          }
          if (t === 100) break;
          const alpha = t < 50 ? 0.25 * eps : t < 80 ? 0.05 * eps : 0.01 * eps;
          const cur = adv;
          adv = tf.tidy(() => {
            const g = grad(cur);
            const moved = tf.add(cur, tf.mul(alpha, tf.sign(g)));
            return tf.clipByValue(tf.minimum(tf.maximum(moved, tf.sub(xb, eps)), tf.add(xb, eps)), 0, 1);
          });
          cur.dispose();
        }
        tf.dispose([adv, xb, yb, lb]);
      }
    }
  }
  // Re-check every found point with the model itself (and its distance).
  for (let i = 0; i < N; i++) {
    if (!broken[i]) found.set(xData.subarray(i * d, (i + 1) * d), i * d);
    else {
      for (let j = i * d; j < (i + 1) * d; j++) {
        if (Math.abs(found[j] - xData[j]) > eps + 1e-6 || found[j] < 0 || found[j] > 1) throw new Error('independent attacker left the ball');
      }
    }
  }
  const ft = tf.tensor(found, x.shape);
  const p = predict(model, ft);
  ft.dispose();
  const ok = Uint8Array.from(p, (c, i) => (c === labels[i] && cleanOk[i] ? 1 : 0));
  return {ok, seconds: (performance.now() - t0) / 1000};
}

// ------------------------------------------------------------ PGD-40×2 (the package's, as eval runs it)
function pgd40x2(): {acc: number; seconds: number} {
  const t0 = performance.now();
  let ok = 0;
  for (let s = 0; s < N; s += BS) {
    const n = Math.min(BS, N - s);
    const xb = tf.slice(x, [s], [n]);
    const yb = tf.slice(y, [s], [n]);
    const adv = pgdAttack(model, xb, yb, {epsilon: eps, steps: 40, restarts: 2, stepSize: (2.5 * eps) / 40, clip: [0, 1], seed: seed + s});
    const p = predict(model, adv);
    for (let i = 0; i < n; i++) ok += p[i] === labels[s + i] && cleanOk[s + i] ? 1 : 0;
    tf.dispose([xb, yb, adv]);
  }
  return {acc: ok / N, seconds: (performance.now() - t0) / 1000};
}

const pgd = pgd40x2();
console.log(`PGD-40×2 (package): ${pct(pgd.acc)} %  (${pgd.seconds.toFixed(1)} s; ${N * 80} example-gradient evaluations)`);
let indAcc = NaN;
if (!args['skip-independent']) {
  const ind = independent();
  indAcc = count(ind.ok) / N;
  console.log(`independent PGD (CE + CW, 100 steps × ${R} restarts each, step decay): ${pct(indAcc)} %  (${ind.seconds.toFixed(1)} s)`);
}

for (const v of args.versions.split(',') as AutoAttackVersion[]) {
  const t0 = performance.now();
  const r = autoAttack(model, x, y, {norm: 'linf', epsilon: eps, clip: [0, 1], version: v, seed, batchSize: BS});
  const seconds = (performance.now() - t0) / 1000;
  // Independent re-checks of the contract: accuracy on the returned tensor, ball and box.
  const p = predict(model, r.adversarial);
  const accOn = count(Uint8Array.from(p, (c, i) => (c === labels[i] ? 1 : 0))) / N;
  const a = r.adversarial.dataSync();
  const xd = x.dataSync();
  let maxd = 0;
  let outside = 0;
  for (let j = 0; j < a.length; j++) {
    maxd = Math.max(maxd, Math.abs(a[j] - xd[j]));
    if (a[j] < 0 || a[j] > 1) outside++;
  }
  r.adversarial.dispose();
  const grads = r.perAttack.reduce((s, st) => s + st.exampleGradientEvaluations, 0);
  const fwd = r.perAttack.reduce((s, st) => s + st.exampleQueries, 0);
  console.log(`autoAttack '${v}': ${pct(r.robustAccuracy)} %  (accuracy re-measured on the returned tensor: ${pct(accOn)} %; max |δ|∞ = ${maxd} ≤ ε: ${maxd <= eps}; values outside [0, 1]: ${outside})`);
  for (const st of r.perAttack) {
    console.log(`   after ${st.name.padEnd(8)} ${pct(st.robustAccuracy)} %  (ran on ${st.attacked}, broke ${st.broken}; ${st.seconds.toFixed(1)} s)`);
  }
  console.log(
    `   cost: ${seconds.toFixed(1)} s = ${(seconds / pgd.seconds).toFixed(1)}× PGD-40×2 wall time; ` +
      `${grads} example-gradient + ${fwd} example-forward evaluations = ${(grads / (N * 80)).toFixed(1)}× + ${(fwd / (N * 80)).toFixed(1)}× PGD-40×2's gradients`,
  );
  if (v === 'standard' && Number.isFinite(indAcc)) {
    const gap = 100 * (r.robustAccuracy - indAcc);
    console.log(`   acceptance (autoAttack ≤ independent + 0.5 point): ${gap <= 0.5 ? 'PASS' : 'FAIL'} (difference ${gap.toFixed(1)} points)`);
  }
}
