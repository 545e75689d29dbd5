import {tf} from './setup.js';
import {test} from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import {mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, truncateSync, writeFileSync} from 'node:fs';
import {spawnSync} from 'node:child_process';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import * as tfl from '@tensorflow/tfjs-layers';
import {fileSystem, joinWeightData, writeFileAtomic} from '../src/io/file_system.js';

function tmpDir(t: {after: (fn: () => void) => void}): string {
  const dir = mkdtempSync(join(tmpdir(), 'tda-fs-'));
  t.after(() => rmSync(dir, {recursive: true, force: true}));
  return dir;
}

function sequentialModel(seed: number): tfl.Sequential {
  const model = tfl.sequential({
    layers: [
      tfl.layers.dense({inputShape: [6], units: 5, activation: 'relu', kernelInitializer: tfl.initializers.glorotUniform({seed})}),
      tfl.layers.dense({units: 3, activation: 'softmax', kernelInitializer: tfl.initializers.glorotUniform({seed: seed + 1})}),
    ],
  });
  model.compile({optimizer: tf.train.adam(0.01), loss: 'categoricalCrossentropy', metrics: ['accuracy']});
  return model;
}

function residualModel(): tfl.LayersModel {
  const input = tfl.input({shape: [6]});
  const h = tfl.layers.dense({units: 6, activation: 'tanh', name: 'inner'}).apply(input) as tfl.SymbolicTensor;
  const sum = tfl.layers.add({name: 'residual'}).apply([input, h]) as tfl.SymbolicTensor;
  const out = tfl.layers.dense({units: 3, activation: 'softmax'}).apply(sum) as tfl.SymbolicTensor;
  const model = tfl.model({inputs: input, outputs: out});
  model.compile({optimizer: tf.train.adam(0.01), loss: 'categoricalCrossentropy'});
  return model;
}

/** Max |a - b| of the two models' predictions on a fixed input. */
function maxPredictionDiff(a: tfl.LayersModel, b: tfl.LayersModel): number {
  return tf.tidy(() => {
    const x = tf.randomNormal([4, 6], 0, 1, 'float32', 7);
    const d = tf.max(tf.abs(tf.sub(a.predict(x) as tf.Tensor, b.predict(x) as tf.Tensor)));
    return d.dataSync()[0];
  });
}

test('sequential model: save, load, same predictions, tfjs-node layout', async (t) => {
  const dir = join(tmpDir(t), 'nested', 'seq');  // created recursively
  const model = sequentialModel(1);
  const result = await model.save(fileSystem(dir));
  assert.equal(result.modelArtifactsInfo.modelTopologyType, 'JSON');
  assert.equal(result.modelArtifactsInfo.weightDataBytes, (6 * 5 + 5 + 5 * 3 + 3) * 4);

  assert.deepEqual(readdirSync(dir).sort(), ['model.json', 'weights.bin']);  // no temp files left
  const json = JSON.parse(readFileSync(join(dir, 'model.json'), 'utf8'));
  assert.equal(json.format, 'layers-model');
  assert.match(json.generatedBy, /TensorFlow\.js tfjs-layers/);
  assert.ok('convertedBy' in json);
  assert.ok(json.modelTopology?.config, 'modelTopology present');
  assert.equal(json.trainingConfig, undefined, 'no trainingConfig without includeOptimizer');
  assert.equal(json.weightsManifest.length, 1);
  assert.deepEqual(json.weightsManifest[0].paths, ['weights.bin']);
  assert.equal(json.weightsManifest[0].weights.length, 4);
  assert.equal(statSync(join(dir, 'weights.bin')).size, result.modelArtifactsInfo.weightDataBytes);

  const loaded = await tfl.loadLayersModel(fileSystem(dir));
  assert.ok(maxPredictionDiff(model, loaded) <= 1e-6);
  // a model.json path works too
  const loaded2 = await tfl.loadLayersModel(fileSystem(join(dir, 'model.json')));
  assert.ok(maxPredictionDiff(model, loaded2) <= 1e-6);
  model.dispose();
  loaded.dispose();
  loaded2.dispose();
});

test('functional residual model, trained, saved with includeOptimizer: round trip', async (t) => {
  const dir = tmpDir(t);
  const model = residualModel();
  const x = tf.randomNormal([8, 6], 0, 1, 'float32', 3);
  const y = tf.oneHot(tf.tensor1d([0, 1, 2, 0, 1, 2, 0, 1], 'int32'), 3);
  await model.fit(x, y, {epochs: 1, verbose: 0});
  model.setUserDefinedMetadata({note: 'residual', eps: 0.1});
  await model.save(fileSystem(dir), {includeOptimizer: true});

  const json = JSON.parse(readFileSync(join(dir, 'model.json'), 'utf8'));
  assert.equal(json.trainingConfig.optimizer_config.class_name, 'Adam');
  assert.deepEqual(json.userDefinedMetadata, {note: 'residual', eps: 0.1});
  const specs = json.weightsManifest[0].weights as Array<{name: string, group?: string}>;
  assert.ok(specs.some((s) => s.group === 'optimizer'), 'optimizer weights saved');

  const loaded = await tfl.loadLayersModel(fileSystem(dir));
  assert.deepEqual(loaded.getUserDefinedMetadata(), {note: 'residual', eps: 0.1});
  assert.equal(loaded.getLayer('residual').getClassName(), 'Add');
  assert.ok(maxPredictionDiff(model, loaded) <= 1e-6);
  // compiled from trainingConfig, with the Adam state (moments, iteration count) restored:
  // one more step matches (with a fresh Adam the predictions then differ by ~6e-5)
  await model.fit(x, y, {epochs: 1, verbose: 0});
  await loaded.fit(x, y, {epochs: 1, verbose: 0});
  assert.ok(maxPredictionDiff(model, loaded) <= 1e-6);
  tf.dispose([x, y]);
  model.dispose();
  loaded.dispose();
});

test('saving twice into the same dir overwrites (the second save\'s weights get their own file name)', async (t) => {
  const dir = tmpDir(t);
  const a = sequentialModel(10);
  const b = sequentialModel(20);
  assert.ok(maxPredictionDiff(a, b) > 1e-3, 'the two models differ');
  await a.save(fileSystem(dir));
  await b.save(fileSystem(dir));
  const files = readdirSync(dir).sort();
  assert.equal(files.length, 2, files.join(', '));
  assert.equal(files[0], 'model.json');
  assert.match(files[1], /^weights-[0-9a-f]{8}\.bin$/);
  assert.deepEqual(JSON.parse(readFileSync(join(dir, 'model.json'), 'utf8')).weightsManifest[0].paths, [files[1]]);
  const loaded = await tfl.loadLayersModel(fileSystem(dir));
  assert.ok(maxPredictionDiff(b, loaded) <= 1e-6);
  assert.ok(maxPredictionDiff(a, loaded) > 1e-3);
  a.dispose();
  b.dispose();
  loaded.dispose();
});

test('leftover temp files from a crashed save do not break loading the previous model', async (t) => {
  const dir = tmpDir(t);
  const model = sequentialModel(3);
  await model.save(fileSystem(dir));
  // a crash mid-save leaves only temp files (same naming as writeFileAtomic's)
  writeFileSync(join(dir, `.weights.bin.${process.pid}.0123456789ab.tmp`), new Uint8Array(17));
  writeFileSync(join(dir, `.model.json.${process.pid}.ba9876543210.tmp`), '{"modelTopology": {"class_na');
  const loaded = await tfl.loadLayersModel(fileSystem(dir));
  assert.ok(maxPredictionDiff(model, loaded) <= 1e-6);
  // and a later save still works
  await model.save(fileSystem(dir));
  const again = await tfl.loadLayersModel(fileSystem(dir));
  assert.ok(maxPredictionDiff(model, again) <= 1e-6);
  model.dispose();
  loaded.dispose();
  again.dispose();
});

test('load errors name the path: bad JSON, no topology, missing/short weights, missing dir', async (t) => {
  const dir = tmpDir(t);
  const model = sequentialModel(4);
  await model.save(fileSystem(dir));
  model.dispose();
  const jsonPath = join(dir, 'model.json');
  const weightsPath = join(dir, 'weights.bin');
  const good = readFileSync(jsonPath, 'utf8');
  const names = (path: string, problem: RegExp) => (err: Error) => {
    assert.ok(err.message.includes(path), `message should name ${path}: ${err.message}`);
    assert.match(err.message, problem);
    return true;
  };

  const goodWeights = readFileSync(weightsPath);
  truncateSync(weightsPath, goodWeights.length - 4);
  await assert.rejects(() => tfl.loadLayersModel(fileSystem(dir)), names(weightsPath, /size mismatch.*hold 208 bytes.*specifies 212 bytes/));
  rmSync(weightsPath);
  await assert.rejects(() => tfl.loadLayersModel(fileSystem(dir)), names(weightsPath, /not found/));
  writeFileSync(weightsPath, goodWeights);

  writeFileSync(jsonPath, good.slice(0, good.length / 2));
  await assert.rejects(() => tfl.loadLayersModel(fileSystem(dir)), names(jsonPath, /not valid JSON/));
  writeFileSync(jsonPath, JSON.stringify({...JSON.parse(good), modelTopology: undefined}));
  await assert.rejects(() => tfl.loadLayersModel(fileSystem(dir)), names(jsonPath, /no modelTopology/));
  rmSync(jsonPath);
  await assert.rejects(() => tfl.loadLayersModel(fileSystem(dir)), names(jsonPath, /not found/));
  const nowhere = join(dir, 'does-not-exist');
  await assert.rejects(() => tfl.loadLayersModel(fileSystem(nowhere)), names(nowhere, /not found/));

  // restoring the good files makes it load again (the checks above were not spurious)
  writeFileSync(jsonPath, good);
  const ok = await tfl.loadLayersModel(fileSystem(dir));
  ok.dispose();
});

test('no tensor leak across save/load', async (t) => {
  const dir = tmpDir(t);
  const model = residualModel();
  await model.save(fileSystem(dir));  // warm-up (lazy one-time allocations, if any)
  const baseline = tf.memory().numTensors;
  await model.save(fileSystem(dir));
  assert.equal(tf.memory().numTensors, baseline, 'save leaks no tensor');
  const loaded = await tfl.loadLayersModel(fileSystem(dir));
  assert.ok(tf.memory().numTensors > baseline, 'loaded weights are tensors');
  tf.tidy(() => {
    loaded.predict(tf.ones([2, 6]));
  });
  loaded.dispose();
  assert.equal(tf.memory().numTensors, baseline, 'back to baseline after disposing the loaded model');
  model.dispose();
});

test('no tensor leak with includeOptimizer (beyond tfjs-layers\' own)', async (t) => {
  const dir = tmpDir(t);
  const model = sequentialModel(5);
  const [x, y] = [tf.ones([4, 6]), tf.oneHot(tf.tensor1d([0, 1, 2, 0], 'int32'), 3)];
  await model.fit(x, y, {epochs: 1, verbose: 0});
  await model.save(fileSystem(dir), {includeOptimizer: true});
  const baseline = tf.memory().numTensors;
  await model.save(fileSystem(dir), {includeOptimizer: true});
  // tfjs-layers 4.22 leaks the `iter` scalar of optimizer.getWeights() in save: allow that one
  assert.ok(tf.memory().numTensors <= baseline + 1, `save leaked ${tf.memory().numTensors - baseline}`);
  const afterSave = tf.memory().numTensors;
  const loaded = await tfl.loadLayersModel(fileSystem(dir));
  // the optimizer deserialised from trainingConfig is not owned by the model: dispose it too
  loaded.optimizer.dispose();
  loaded.dispose();
  assert.equal(tf.memory().numTensors, afterSave);
  tf.dispose([x, y]);
  model.dispose();
});

test('writeFileAtomic: creates parents, overwrites, leaves no temp file', async (t) => {
  const dir = tmpDir(t);
  const path = join(dir, 'a', 'b', 'ckpt.bin');
  await writeFileAtomic(path, new Uint8Array([1, 2, 3]).buffer);
  assert.deepEqual(Array.from(readFileSync(path)), [1, 2, 3]);
  await writeFileAtomic(path, 'hello');
  assert.equal(readFileSync(path, 'utf8'), 'hello');
  await writeFileAtomic(path, new Uint8Array([9]));
  assert.deepEqual(Array.from(readFileSync(path)), [9]);
  assert.deepEqual(readdirSync(join(dir, 'a', 'b')), ['ckpt.bin']);
  // a failing write (target is a directory) cleans up its temp file
  await assert.rejects(() => writeFileAtomic(join(dir, 'a'), 'x'));
  assert.deepEqual(readdirSync(dir), ['a']);
});

test('joinWeightData joins a list of buffers in order', () => {
  const joined = joinWeightData([new Uint8Array([1, 2]).buffer, new Uint8Array([]).buffer, new Uint8Array([3]).buffer]);
  assert.deepEqual(Array.from(new Uint8Array(joined)), [1, 2, 3]);
  const single = new Uint8Array([4, 5]).buffer;
  assert.equal(joinWeightData(single), single);
  assert.equal(joinWeightData(undefined).byteLength, 0);
});

/** Points the model's manifest at `paths` (a hostile or broken model.json). */
function setManifestPaths(dir: string, paths: string[]): void {
  const json = JSON.parse(readFileSync(join(dir, 'model.json'), 'utf8'));
  json.weightsManifest[0].paths = paths;
  writeFileSync(join(dir, 'model.json'), JSON.stringify(json));
}

/** Rejects within `ms` (a load that reads without end or blocks fails the test instead of hanging it). */
function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: still running after ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

test('load reads weights only from files inside the model directory, and discloses nothing about others', async (t) => {
  const root = tmpDir(t);
  const dir = join(root, 'model');
  const model = sequentialModel(6);
  await model.save(fileSystem(dir));
  model.dispose();
  const bytes = statSync(join(dir, 'weights.bin')).size;
  // An outside file of exactly the right size: if it were read, the model would load with its bytes.
  mkdirSync(join(root, 'outside'));
  const secret = join(root, 'outside', 'secret.bin');
  writeFileSync(secret, new Uint8Array(bytes).fill(7));
  const numTensors = tf.memory().numTensors;
  const refused = (err: Error) => {
    assert.match(err.message, /leads outside the model directory/);
    assert.ok(!err.message.includes(String(bytes)) && !/\d+ bytes/.test(err.message), `no size disclosed: ${err.message}`);
    return true;
  };
  for (const p of ['../outside/secret.bin', secret, 'sub/../../outside/secret.bin', '/etc/passwd']) {
    setManifestPaths(dir, [p]);
    await assert.rejects(() => tfl.loadLayersModel(fileSystem(dir)), refused, p);
  }
  // A symbolic link inside the directory that leads outside it (to a file, or to nothing).
  symlinkSync(secret, join(dir, 'link.bin'));
  symlinkSync(join(root, 'outside', 'missing.bin'), join(dir, 'dangling.bin'));
  for (const p of ['link.bin', 'dangling.bin']) {
    setManifestPaths(dir, [p]);
    await assert.rejects(() => tfl.loadLayersModel(fileSystem(dir)), refused, p);
  }
  // A symbolic link that stays inside is fine.
  mkdirSync(join(dir, 'store'));
  fs.renameSync(join(dir, 'weights.bin'), join(dir, 'store', 'w.bin'));
  symlinkSync(join(dir, 'store', 'w.bin'), join(dir, 'inside.bin'));
  setManifestPaths(dir, ['inside.bin']);
  const ok = await tfl.loadLayersModel(fileSystem(dir));
  ok.dispose();
  assert.equal(tf.memory().numTensors, numTensors, 'no tensors left by the refused loads');
});

test('load refuses device files and FIFOs (no endless read, no hang)', async (t) => {
  const dir = tmpDir(t);
  const model = sequentialModel(7);
  await model.save(fileSystem(dir));
  model.dispose();
  if (fs.existsSync('/dev/zero')) {
    symlinkSync('/dev/zero', join(dir, 'zero.bin'));
    setManifestPaths(dir, ['zero.bin']);
    await withTimeout(assert.rejects(() => tfl.loadLayersModel(fileSystem(dir)), /leads outside the model directory/), 5000, '/dev/zero');
  } else {
    t.diagnostic('skipped the /dev/zero case: this platform has no /dev/zero');
  }
  const fifo = join(dir, 'fifo.bin');
  const mk = spawnSync('mkfifo', [fifo]);
  if (mk.status === 0) {
    setManifestPaths(dir, ['fifo.bin']);
    await withTimeout(assert.rejects(() => tfl.loadLayersModel(fileSystem(dir)), /fifo\.bin .*is not a regular file/), 5000, 'FIFO');
    // model.json itself as a FIFO
    await withTimeout(assert.rejects(() => tfl.loadLayersModel(fileSystem(fifo)), /is not a regular file/), 5000, 'FIFO model.json');
  } else {
    t.diagnostic(`skipped the FIFO case: mkfifo is not available here (${mk.error?.message ?? mk.stderr})`);
  }
  // A directory named as weights file.
  mkdirSync(join(dir, 'adir'));
  setManifestPaths(dir, ['adir']);
  await assert.rejects(() => tfl.loadLayersModel(fileSystem(dir)), /adir .*is not a regular file/);
  // A weights file larger than declared is refused before it is read.
  writeFileSync(join(dir, 'big.bin'), new Uint8Array(1 << 20));
  setManifestPaths(dir, ['big.bin']);
  await assert.rejects(() => tfl.loadLayersModel(fileSystem(dir)), /size mismatch.*1048576 bytes/);
});

/** Makes `fs.promises[name]` fail with ENOSPC for paths matching `re` while `fn` runs. */
async function failing<T>(name: 'open' | 'rename', re: RegExp, fn: () => Promise<T>): Promise<T> {
  const p = fs.promises as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>;
  const real = p[name];
  p[name] = async (...a: unknown[]) => {
    const target = String(name === 'rename' ? a[1] : a[0]);
    if (re.test(target)) throw Object.assign(new Error(`ENOSPC: no space left on device, ${name} '${target}'`), {code: 'ENOSPC'});
    return real.apply(fs.promises, a);
  };
  try {
    return await fn();
  } finally {
    p[name] = real;
  }
}

test('save is atomic as a whole: a failure between the files leaves the complete old model', async (t) => {
  const dir = tmpDir(t);
  const a = sequentialModel(30);
  const b = sequentialModel(40);
  assert.ok(maxPredictionDiff(a, b) > 1e-3);
  await a.save(fileSystem(dir));
  const stillA = async (what: string) => {
    const m = await tfl.loadLayersModel(fileSystem(dir));
    assert.ok(maxPredictionDiff(a, m) <= 1e-6, `${what}: the old model loads`);
    m.dispose();
    assert.deepEqual(readdirSync(dir).sort(), ['model.json', 'weights.bin'], `${what}: no stray files`);
  };
  // 1. The new weights are written, then model.json fails (the old weights.bin was renamed over first
  //    before this fix, so the directory no longer loaded).
  await assert.rejects(() => failing('rename', /model\.json$/, () => b.save(fileSystem(dir))), (e: Error) => {
    assert.match(e.message, /cannot write .*model\.json: ENOSPC/);
    return true;
  });
  await stillA('model.json failed');
  // 2. The weights file fails.
  await assert.rejects(() => failing('open', /weights/, () => b.save(fileSystem(dir))), /cannot write .*weights-[0-9a-f]{8}\.bin: ENOSPC/);
  await stillA('weights failed');
  // 3. A killed save (new weights file written, model.json not yet replaced) leaves the old model; the
  //    next save cleans the orphan up.
  writeFileSync(join(dir, 'weights-0badc0de.bin'), new Uint8Array(12));
  const m = await tfl.loadLayersModel(fileSystem(dir));
  assert.ok(maxPredictionDiff(a, m) <= 1e-6);
  m.dispose();
  // 4. A save that succeeds switches to the new model and deletes the old weights.
  await b.save(fileSystem(dir));
  const files = readdirSync(dir).sort();
  assert.equal(files.length, 2, files.join(', '));
  const nb = await tfl.loadLayersModel(fileSystem(dir));
  assert.ok(maxPredictionDiff(b, nb) <= 1e-6);
  nb.dispose();
  // …and the one after goes back to weights.bin.
  await a.save(fileSystem(dir));
  await stillA('third save');
  a.dispose();
  b.dispose();
});
