// Run by scripts/compat.mjs inside a fresh project that installed `@tensorflow/tfjs@<version>` and
// the packed tfjs-deep-adversarial tarball (it is copied there; it is not part of the package).
// Exercises the paths that touch tfjs-layers internals (src/model/internals.ts): instrument on a
// Sequential and a functional residual model, deep adversarial training through model.fit and
// model.fitDataset, strip, save/load with the package's fileSystem handler (with and without
// Disturbance layers), evaluateRobustness with its per-layer profile. Prints one JSON line.
import * as tf from '@tensorflow/tfjs';
import {
  instrument, strip, adversarialCallback, evaluateRobustness, deepAttack, isDisturbance,
} from 'tfjs-deep-adversarial';
import {fileSystem} from 'tfjs-deep-adversarial/node';
import {mkdtempSync, rmSync} from 'node:fs';
import {tmpdir} from 'node:os';
import {join} from 'node:path';

function check(cond, msg) {
  if (!cond) throw new Error(`compat smoke: ${msg}`);
}
const finite = (xs) => Array.isArray(xs) && xs.length > 0 && xs.every((v) => Number.isFinite(v));
const maxAbsDiff = (a, b) => tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]);

await tf.setBackend('cpu');
await tf.ready();
const t0 = Date.now();

// Deterministic data: 3 classes given by a fixed linear teacher on 20 features in [0, 1].
const [xs, ys] = tf.tidy(() => {
  const x = tf.randomUniform([192, 20], 0, 1, 'float32', 7);
  const w = tf.randomNormal([20, 3], 0, 1, 'float32', 8);
  return [x, tf.oneHot(tf.argMax(tf.matMul(tf.sub(x, 0.5), w), 1), 3).toFloat()];
});

// 1. Deep adversarial training of a Sequential model through model.fit.
const model = tf.sequential({layers: [
  tf.layers.dense({inputShape: [20], units: 16, activation: 'relu', kernelInitializer: tf.initializers.glorotUniform({seed: 1})}),
  tf.layers.dense({units: 3, activation: 'softmax', kernelInitializer: tf.initializers.glorotUniform({seed: 2})}),
]});
model.compile({optimizer: tf.train.adam(0.01), loss: 'categoricalCrossentropy', metrics: ['accuracy']});
const adv = instrument(model, {input: {kind: 'linf', epsilon: 0.1, box: [0, 1]}, hidden: {kind: 'quadratic', lambda: 1}});
check(adv.layers.filter(isDisturbance).length === 2, `instrument inserted ${adv.layers.filter(isDisturbance).length} Disturbance layers, expected 2`);
const w0 = model.getWeights().map((w) => w.dataSync().slice());
const fitArgs = (epochs, seed) => ({epochs, batchSize: 32, verbose: 0,
  callbacks: [adversarialCallback({method: 'deep', maxGradientEvaluations: 3, seed})]});
const h = await adv.fit(xs, ys, fitArgs(2, 1));
check(finite(h.history.loss), `fit loss not finite: ${JSON.stringify(h.history.loss)}`);
check(finite(h.history.adv_objective), `adv_objective not finite: ${JSON.stringify(h.history.adv_objective)}`);
check(model.getWeights().some((w, i) => w.dataSync().some((v, j) => v !== w0[i][j])), 'fit did not change the shared weights');
// The first fit created the optimizer's slots; a second one must not add tensors.
const before = tf.memory().numTensors;
await adv.fit(xs, ys, fitArgs(1, 2));
check(tf.memory().numTensors === before, `a second fit left ${tf.memory().numTensors - before} more tensors`);

// 2. fitDataset with the same callback (the train-function hook on the dataset path).
const ds = tf.data.zip({xs: tf.data.array(xs.unstack()), ys: tf.data.array(ys.unstack())}).batch(64);
const hd = await adv.fitDataset(ds, {epochs: 1, verbose: 0,
  callbacks: [adversarialCallback({method: 'deep', maxGradientEvaluations: 2, seed: 2})]});
check(finite(hd.history.loss), `fitDataset loss not finite: ${JSON.stringify(hd.history.loss)}`);

// 3. strip: no Disturbance layer left, same predictions as the original model.
const stripped = strip(adv);
check(stripped.layers.every((l) => !isDisturbance(l)), 'strip left a Disturbance layer');
const p0 = model.predict(xs);
const p1 = stripped.predict(xs);
check(maxAbsDiff(p0, p1) === 0, 'strip(adv) predicts differently from the original model');

// 4. Save/load with the package's fileSystem handler, stripped and instrumented.
const dir = mkdtempSync(join(tmpdir(), 'tfjs-da-compat-'));
try {
  await stripped.save(fileSystem(join(dir, 'stripped')));
  const loaded = await tf.loadLayersModel(fileSystem(join(dir, 'stripped')));
  const p2 = loaded.predict(xs);
  check(maxAbsDiff(p0, p2) === 0, 'the stripped model predicts differently after save/load');
  await adv.save(fileSystem(join(dir, 'adv')));
  const loadedAdv = await tf.loadLayersModel(fileSystem(join(dir, 'adv')));
  check(loadedAdv.layers.filter(isDisturbance).length === 2, 'Disturbance layers lost in save/load (serialization registry of another tfjs-core?)');
  const p3 = loadedAdv.predict(xs);
  check(maxAbsDiff(p0, p3) < 1e-6, 'the instrumented model predicts differently after save/load');
  tf.dispose([p2, p3]);
} finally {
  rmSync(dir, {recursive: true, force: true});
}

// 5. evaluateRobustness, including the per-layer profile (instruments internally).
const report = evaluateRobustness(model, xs.slice(0, 64), ys.slice(0, 64), {clip: [0, 1], epsilons: [0.05, 0.1], seed: 1,
  attacks: [{kind: 'fgsm'}, {kind: 'pgd', steps: 5}, {kind: 'deep', maxGradientEvaluations: 3}], layerProfile: true});
check(report.cleanAccuracy >= 0 && report.cleanAccuracy <= 1, `cleanAccuracy ${report.cleanAccuracy}`);
check(report.worstCase.length > 0 && report.worstCase.every((p) => p.accuracy <= report.cleanAccuracy), 'worst case above clean accuracy');
check(report.layerProfile && report.layerProfile.layers.length > 0, 'no layer profile');

// 6. A functional residual model (inbound/outbound nodes, nodesByDepth) and a deep attack on it.
const inp = tf.input({shape: [20]});
const a = tf.layers.dense({units: 20, activation: 'relu', kernelInitializer: tf.initializers.glorotUniform({seed: 3})}).apply(inp);
const r = tf.layers.add().apply([inp, a]);
const out = tf.layers.dense({units: 3, activation: 'softmax', kernelInitializer: tf.initializers.glorotUniform({seed: 4})}).apply(r);
const res = tf.model({inputs: inp, outputs: out});
res.compile({optimizer: 'sgd', loss: 'categoricalCrossentropy'});
const resAdv = instrument(res, {hidden: {kind: 'quadratic', lambda: 1}});
const atk = deepAttack(resAdv, xs.slice(0, 16), ys.slice(0, 16), {maxIterations: 3});
check(atk.disturbances.length === resAdv.layers.filter(isDisturbance).length, 'deepAttack returned one disturbance per Disturbance layer');
check(Number.isFinite(tf.tidy(() => tf.sum(atk.disturbances[0]).dataSync()[0])), 'deepAttack disturbance not finite');
tf.dispose([...atk.disturbances, atk.objective]);
tf.dispose([p0, p1, xs, ys]);

console.log(JSON.stringify({
  ok: true,
  tfjsCore: tf.version_core,
  tfjsLayers: tf.version_layers,
  loss: h.history.loss.map((v) => +v.toFixed(4)),
  advObjective: h.history.adv_objective.map((v) => +v.toFixed(4)),
  cleanAccuracy: report.cleanAccuracy,
  worstCase: report.worstCase.map((p) => [p.norm, p.epsilon, p.accuracy]),
  seconds: (Date.now() - t0) / 1000,
}));
