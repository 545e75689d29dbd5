/**
 * Deep adversarial training of an MNIST MLP with `model.fit` and one callback.
 *
 *   npx tsx examples/mnist_deep_training.ts [--backend auto|wasm|cpu|tensorflow] [--train 8192] [--test 1000]
 *
 * Instruments a 784-128-128-10 MLP (input disturbance: L∞ ball ε = 0.1 inside the pixel box [0, 1];
 * hidden disturbances: quadratic penalty λ = 10), trains ONE epoch on a subset of MNIST with
 * `adversarialCallback({method: 'deep', maxGradientEvaluations: 10, project: true})` (the input
 * disturbance is projected exactly onto its ball and box), and prints clean and PGD-10 (ε = 0.1)
 * test accuracy next to the same network trained one epoch without the callback. About a minute on
 * the wasm backend; a few minutes on cpu.
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import {parseArgs} from 'node:util';
import {pgdAttack} from '../src/attacks/pgd.js';
import {selectBackend, type BackendChoice} from '../src/backend.js';
import {loadMnist} from '../src/data/mnist.js';
import {instrument} from '../src/model/instrument.js';
import {adversarialCallback} from '../src/training/callback.js';

const {values: args} = parseArgs({
  options: {
    backend: {type: 'string', default: 'auto'},
    train: {type: 'string', default: '8192'},
    test: {type: 'string', default: '1000'},
  },
});

/** The same MLP every time (seeded initialisers). */
function mlp(): tfl.Sequential {
  return tfl.sequential({
    layers: [
      tfl.layers.dense({inputShape: [784], units: 128, activation: 'relu', kernelInitializer: tfl.initializers.glorotUniform({seed: 1})}),
      tfl.layers.dense({units: 128, activation: 'relu', kernelInitializer: tfl.initializers.glorotUniform({seed: 2})}),
      tfl.layers.dense({units: 10, activation: 'softmax', kernelInitializer: tfl.initializers.glorotUniform({seed: 3})}),
    ],
  });
}

/** Clean and PGD accuracy on (x, y), in batches. */
function accuracy(model: tfl.LayersModel, x: tf.Tensor, y: tf.Tensor, epsilon: number): {clean: number; pgd: number} {
  let clean = 0;
  let robust = 0;
  const n = x.shape[0];
  for (let start = 0; start < n; start += 250) {
    const size = Math.min(250, n - start);
    const [c, r] = tf.tidy(() => {
      const xb = tf.slice(x, start, size);
      const yb = tf.slice(y, start, size);
      const labels = tf.argMax(yb, 1);
      const hits = (input: tf.Tensor) => tf.sum(tf.cast(tf.equal(tf.argMax(model.predict(input) as tf.Tensor, 1), labels), 'float32'));
      const adv = pgdAttack(model, xb, yb, {epsilon, steps: 10, clip: [0, 1], seed: 7});
      return [hits(xb).dataSync()[0], hits(adv).dataSync()[0]];
    });
    clean += c;
    robust += r;
  }
  return {clean: clean / n, pgd: robust / n};
}

async function main(): Promise<void> {
  await selectBackend({backend: args.backend as BackendChoice});
  const train = await loadMnist({split: 'train', limit: Number(args.train)});
  const test = await loadMnist({split: 'test', limit: Number(args.test)});
  const epsilon = 0.1;

  // 1. Plain training, for comparison.
  const plain = mlp();
  plain.compile({optimizer: tf.train.adam(1e-3), loss: 'categoricalCrossentropy', metrics: ['accuracy']});
  let t0 = performance.now();
  await plain.fit(train.xs, train.ys, {epochs: 1, batchSize: 64, verbose: 0});
  const plainSeconds = (performance.now() - t0) / 1000;

  // 2. Deep adversarial training: instrument, compile, one callback.
  const model = instrument(mlp(), {
    input: {kind: 'linf', epsilon, box: [0, 1]},
    hidden: {kind: 'quadratic', lambda: 10},
  });
  model.compile({optimizer: tf.train.adam(1e-3), loss: 'categoricalCrossentropy', metrics: ['accuracy']});
  t0 = performance.now();
  const history = await model.fit(train.xs, train.ys, {
    epochs: 1,
    batchSize: 64,
    verbose: 0,
    callbacks: [
      adversarialCallback({method: 'deep', maxGradientEvaluations: 10, project: true, seed: 1}),
      new tfl.CustomCallback({
        onBatchEnd: async (batch, logs) => {
          if (batch % 32 === 0) {
            const l = logs ?? {};
            console.log(
              `batch ${String(batch).padStart(4)}  loss ${Number(l.loss).toFixed(3)}  J ${Number(l.adv_objective).toFixed(3)}  ` +
                `grad evals ${l.adv_grad_evals}  non-finite ${l.adv_nonfinite}`,
            );
          }
        },
      }),
    ],
  });
  const advSeconds = (performance.now() - t0) / 1000;
  const h = history.history;
  const norms = Object.keys(h)
    .filter((k) => k.startsWith('adv_norm_'))
    .map((k) => `${k.slice('adv_norm_'.length)} ${(h[k][0] as number).toFixed(3)}`);
  console.log(`epoch: loss ${(h.loss[0] as number).toFixed(3)}, attack objective ${(h.adv_objective[0] as number).toFixed(3)}, mean ‖d‖: ${norms.join(', ')}`);

  const a = accuracy(plain, test.xs, test.ys, epsilon);
  const b = accuracy(model, test.xs, test.ys, epsilon);
  console.log(`\n${train.count} training images, 1 epoch; ${test.count} test images; PGD-10, L∞ ε = ${epsilon}`);
  console.log(`plain training        ${plainSeconds.toFixed(1).padStart(6)} s   clean ${(100 * a.clean).toFixed(1)} %   PGD ${(100 * a.pgd).toFixed(1)} %`);
  console.log(`deep adversarial      ${advSeconds.toFixed(1).padStart(6)} s   clean ${(100 * b.clean).toFixed(1)} %   PGD ${(100 * b.pgd).toFixed(1)} %`);
  tf.dispose([train.xs, train.ys, test.xs, test.ys]);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
