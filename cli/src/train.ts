/**
 * `train`: (adversarial) training of an MNIST model through `model.fit` with
 * the package's `adversarialCallback`, with a checkpoint after every epoch,
 * exact `--resume`, and Ctrl-C handling.
 *
 * Reproducibility: every random choice is seeded from `--seed`: the initial
 * weights, the order of the training examples in every epoch (our own
 * seeded permutation; `fit` runs with `shuffle: false`), and the attacks'
 * random starts (the callback's seed, one per epoch, and the step counter
 * inside the epoch). With the same seed on the cpu backend, a run resumed
 * from any checkpoint gives the same weights as an uninterrupted run.
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import {existsSync, promises as fsp, readFileSync, renameSync, statSync, writeFileSync} from 'node:fs';
import {join, resolve} from 'node:path';

import {pgdAttack} from 'tfjs-deep-adversarial';
import {fileSystem, writeFileAtomic} from 'tfjs-deep-adversarial/node';
import {disturbanceLayers, instrument} from 'tfjs-deep-adversarial';
import {perExampleLoss} from 'tfjs-deep-adversarial';
import {PenaltyConfig, validatePenalty} from 'tfjs-deep-adversarial';
import {adversarialCallback, AdversarialCallbackOptions} from 'tfjs-deep-adversarial';
import {correctPredictions} from 'tfjs-deep-adversarial';
import type {BackendChoice} from 'tfjs-deep-adversarial/node';
import {registeredWasmKernels} from 'tfjs-deep-adversarial';
import {linearWarmupSteps} from 'tfjs-deep-adversarial';
import {CheckpointState, LoadedCheckpoint, loadLatestCheckpoint, NoCheckpointError, PartialEpoch, restoreOptimizer, saveCheckpoint} from './checkpoint.js';
import {asUsageError, BACKENDS, buildModel, Dataset, hasConv, loadData, loadModel, readJson, resolveModelDir, timestamp, toModelInput, UsageError, useBackend} from './common.js';
import {createProgress, Progress} from './progress.js';
import type {RunMetadata, TrainCommandOptions} from './run_metadata.js';

export type {RunMetadata, TrainCommandOptions} from './run_metadata.js';

/** mulberry32: a small, well-mixed 32-bit PRNG. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** 32-bit FNV-1a of the decimal spellings, joined by '/'. */
export function hashSeed(...parts: number[]): number {
  const s = parts.join('/');
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

/** Seeded Fisher–Yates permutation of 0..n−1. */
export function seededPermutation(n: number, seed: number): Int32Array {
  const p = new Int32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  const r = mulberry32(seed);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    const t = p[i];
    p[i] = p[j];
    p[j] = t;
  }
  return p;
}

/** Keys of the batch logs summed over an epoch (the rest are averaged). */
const SUM_KEYS = new Set(['adv_nonfinite', 'adv_skipped_updates']);
/** Keys averaged per batch rather than per example. */
const PER_BATCH_KEYS = new Set(['adv_iterations', 'adv_grad_evals']);

function emptyPartial(): PartialEpoch {
  return {sums: {}, weights: {}, examples: 0, batches: 0, seconds: 0};
}

function addBatch(p: PartialEpoch, logs: Record<string, number>, size: number): void {
  for (const [k, v] of Object.entries(logs)) {
    if (k === 'batch' || k === 'size' || !Number.isFinite(v)) continue;
    const w = SUM_KEYS.has(k) ? 1 : PER_BATCH_KEYS.has(k) ? 1 : size;
    p.sums[k] = (p.sums[k] ?? 0) + (SUM_KEYS.has(k) ? v : v * w);
    p.weights[k] = (p.weights[k] ?? 0) + w;
  }
  p.examples += size;
  p.batches += 1;
}

function epochLogs(p: PartialEpoch): Record<string, number> {
  const out: Record<string, number> = {};
  for (const k of Object.keys(p.sums)) out[k] = SUM_KEYS.has(k) ? p.sums[k] : p.sums[k] / p.weights[k];
  return out;
}

function scalarValue(v: unknown): number {
  if (typeof v === 'number') return v;
  if (v instanceof tf.Tensor) return v.dataSync()[0];
  return NaN;
}

/** Clean and PGD metrics on the validation set. */
function validate(model: tfl.LayersModel, val: {x: tf.Tensor; y: tf.Tensor}, epsilon: number, seed: number): Record<string, number> {
  const n = val.x.shape[0];
  if (n === 0) return {};
  const loss = perExampleLoss(model);
  const bs = 256;
  let lossSum = 0;
  let hits = 0;
  let advLossSum = 0;
  let advHits = 0;
  for (let s = 0; s < n; s += bs) {
    const size = Math.min(bs, n - s);
    const xb = tf.slice(val.x, [s], [size]);
    const yb = tf.slice(val.y, [s], [size]);
    const pred = model.predict(xb) as tf.Tensor;
    const l = tf.tidy(() => tf.sum(loss(yb, pred)));
    lossSum += l.dataSync()[0];
    hits += correctPredictions(yb, pred).reduce((a, b) => a + b, 0);
    const adv = pgdAttack(model, xb, yb, {epsilon, steps: 10, clip: [0, 1], seed: hashSeed(seed, s)});
    const advPred = model.predict(adv) as tf.Tensor;
    const al = tf.tidy(() => tf.sum(loss(yb, advPred)));
    advLossSum += al.dataSync()[0];
    advHits += correctPredictions(yb, advPred).reduce((a, b) => a + b, 0);
    tf.dispose([xb, yb, pred, l, adv, advPred, al]);
  }
  return {val_loss: lossSum / n, val_acc: hits / n, val_pgd_loss: advLossSum / n, val_pgd_acc: advHits / n};
}

function parsePenalty(json: string | undefined, flag: string): PenaltyConfig | null | undefined {
  if (json === undefined) return undefined;
  if (json === 'none' || json === 'null') return null;
  let v: unknown;
  try {
    v = JSON.parse(json);
  } catch (e) {
    throw new UsageError(`${flag}: not valid JSON (${(e as Error).message}); e.g. '{"kind":"linf","epsilon":0.1,"box":[0,1]}' or none.`);
  }
  try {
    return validatePenalty(v, flag);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

function adversarialOptions(o: TrainCommandOptions, epoch: number, batchesPerEpoch: number): AdversarialCallbackOptions | null {
  const warmupSteps = o.warmupSteps ?? 0;
  // One callback (and fit) per epoch: its step counter starts at the batch within the epoch, so the
  // warm-up over optimizer steps counts the earlier epochs' batches itself.
  const ramp = warmupSteps > 0 ? linearWarmupSteps(warmupSteps) : null;
  const common = {
    seed: hashSeed(o.seed, 7919, epoch),
    cleanWeight: o.cleanWeight,
    schedule: o.warmup > 0 ? {warmupEpochs: o.warmup} : ramp ? (e: number, step: number) => ramp(e * batchesPerEpoch + step) : undefined,
  };
  switch (o.method) {
    case 'deep':
      return {method: 'deep', ...common, maxIterations: o.maxIterations, maxGradientEvaluations: o.maxGradEvals, project: true};
    case 'pgd':
      return {method: 'pgd', ...common, epsilon: o.epsilon, norm: o.norm, steps: o.steps, clip: [0, 1]};
    case 'fgsm':
      return {method: 'fgsm', ...common, epsilon: o.epsilon, clip: [0, 1], randomStart: true};
    default:
      return null;
  }
}

function countParams(model: tfl.LayersModel): number {
  return model.trainableWeights.reduce((s, w) => s + (w.shape as number[]).reduce((a, b) => a * b, 1), 0);
}

async function writeRun(out: string, meta: RunMetadata): Promise<void> {
  meta.updatedAt = new Date().toISOString();
  await writeFileAtomic(join(out, 'run.json'), JSON.stringify(meta, null, 1));
}

/** Synchronous {@link writeRun}, for the moment before `process.exit` (best effort). */
function writeRunSync(out: string, meta: RunMetadata): void {
  try {
    meta.updatedAt = new Date().toISOString();
    const tmp = join(out, `.run.json.${process.pid}.exit.tmp`);
    writeFileSync(tmp, JSON.stringify(meta, null, 1));
    renameSync(tmp, join(out, 'run.json'));
  } catch {
    // the process is exiting; run.json keeps its previous state
  }
}

/** Options that `--resume` takes from the command line; every other option keeps the run's recorded value. */
const RESUME_OVERRIDABLE = new Set(['epochs', 'backend', 'progress', 'data', 'out', 'resume', 'explicit']);

/** What a run writes into its directory (what `--overwrite` deletes; nothing else in the directory is touched). */
const RUN_FILES = ['run.json', 'checkpoints', 'model', 'eval.json', 'convergence.json', 'report.html'];

/** `maxGradEvals` → `--max-grad-evals`. */
function flagName(key: string): string {
  return `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
}

/** Reads and sanity-checks the `run.json` of a run to resume; every problem is a {@link UsageError} naming the file. */
function readRunMetadata(out: string, shown: string): RunMetadata {
  const path = join(out, 'run.json');
  const meta = readJson<RunMetadata>(path);
  if (!meta) throw new UsageError(`--resume: ${join(shown, 'run.json')} not found; is ${shown} a run directory made by \`train\`?`);
  const o = meta.options as Partial<TrainCommandOptions> | undefined;
  const ok = o != null && typeof o === 'object' && typeof o.model === 'string' && ['deep', 'pgd', 'fgsm', 'none'].includes(o.method as string) &&
    [o.epochs, o.batchSize, o.seed, o.limit, meta.epochsDone].every((v) => Number.isInteger(v)) && typeof o.learningRate === 'number';
  if (!ok) throw new UsageError(`--resume: ${path} is damaged (its options or progress fields are missing or invalid).`);
  return meta;
}

/**
 * Checks the `--out` of a new run: refuses a file, and a directory that already holds a run unless
 * `overwrite` (then the run's files are deleted later, by {@link clearRun}). Returns whether it holds a run.
 */
function checkFreshOut(out: string, shown: string, overwrite: boolean): boolean {
  const st = statSync(out, {throwIfNoEntry: false});
  if (!st) return false;
  if (!st.isDirectory()) throw new UsageError(`--out ${shown}: exists and is not a directory.`);
  if (!['run.json', 'checkpoints', 'model'].some((f) => existsSync(join(out, f)))) return false;
  if (!overwrite) {
    let what = '';
    try {
      const m = readJson<RunMetadata>(join(out, 'run.json'));
      if (m?.status) what = ` (${m.status}, ${m.epochsDone}/${m.options?.epochs} epochs)`;
    } catch {
      what = ' (with a damaged run.json)';
    }
    throw new UsageError(`--out ${shown} already holds a run${what}; continue it with \`train --resume --out ${shown}\`, or start over in a new directory or with --overwrite.`);
  }
  return true;
}

/** Deletes the files a run wrote into `out` (see {@link RUN_FILES}). */
async function clearRun(out: string): Promise<void> {
  for (const f of RUN_FILES) await fsp.rm(join(out, f), {recursive: true, force: true});
}

/** Result of {@link trainCommand}. */
export interface TrainResult {
  out: string;
  status: RunMetadata['status'];
  exitCode: number;
}

/**
 * Runs the `train` command. Returns the exit code (0 done, 130 interrupted by
 * Ctrl-C after saving a checkpoint).
 */
export async function trainCommand(opts: TrainCommandOptions, log: (s: string) => void = (s) => process.stdout.write(`${s}\n`)): Promise<TrainResult> {
  const t0 = Date.now();
  let o = opts;
  let out: string;
  let meta: RunMetadata | undefined;
  let clearFirst = false;
  if (opts.resume) {
    if (!opts.out) throw new UsageError('--resume needs --out DIR (the run directory to continue).');
    if (opts.overwrite) throw new UsageError('--resume continues the run in --out, --overwrite starts it over: give only one of them.');
    out = resolve(opts.out);
    meta = readRunMetadata(out, opts.out);
    // The recorded options rule; only --epochs (to extend a run), --backend, --data and --progress may change.
    const recorded = meta.options as unknown as Record<string, unknown>;
    const given = opts as unknown as Record<string, unknown>;
    const explicit = new Set(opts.explicit ?? ['epochs', 'backend', 'progress']);
    for (const key of explicit) {
      if (RESUME_OVERRIDABLE.has(key) || key === 'overwrite' || given[key] === undefined) continue;
      if (JSON.stringify(given[key]) !== JSON.stringify(recorded[key])) {
        throw new UsageError(`--resume: ${flagName(key)} ${String(given[key])} differs from the run's recorded ${recorded[key] === undefined ? '(unset)' : String(recorded[key])}; a resumed run keeps its options (start a new run to change them).`);
      }
    }
    const recordedBackend = (BACKENDS as readonly string[]).includes(meta.backend) ? (meta.backend as BackendChoice) : 'auto';
    o = {
      ...meta.options,
      epochs: explicit.has('epochs') ? opts.epochs : meta.options.epochs,
      backend: explicit.has('backend') ? opts.backend : recordedBackend,
      data: explicit.has('data') ? opts.data : meta.options.data,
      progress: opts.progress,
      out: opts.out,
      resume: true,
    };
    if (o.epochs < meta.epochsDone) throw new UsageError(`--resume: --epochs ${o.epochs} is fewer than the ${meta.epochsDone} epochs ${opts.out} has done.`);
    if (meta.status === 'complete' && o.epochs <= meta.epochsDone) {
      log(`${opts.out} is complete (${meta.epochsDone}/${meta.options.epochs} epochs); nothing to do (pass --epochs N with N > ${meta.epochsDone} to train further).`);
      return {out, status: 'complete', exitCode: 0};
    }
  } else {
    out = resolve(opts.out ?? join('runs', `${timestamp()}-${opts.method}`));
    clearFirst = checkFreshOut(out, opts.out ?? out, opts.overwrite === true);
  }
  const shown = opts.out ?? out;

  // Model (built, loaded, or from the checkpoint) → backend.
  const builtin = o.model === 'mlp' || o.model === 'cnn';
  const inputPenalty = parsePenalty(o.inputPenalty, '--input-penalty');
  const hiddenPenalty = parsePenalty(o.hiddenPenalty, '--hidden-penalty');
  if (o.warmup > 0 && (o.warmupSteps ?? 0) > 0) throw new UsageError(`--warmup ${o.warmup} (epochs) and --warmup-steps ${o.warmupSteps}: give one warm-up, not both.`);
  if (o.method === 'deep' && inputPenalty === null && hiddenPenalty === null) {
    throw new UsageError('--input-penalty none with --hidden-penalty none leaves deep training nothing to disturb; give one of them a penalty, or use --method none for plain training.');
  }
  // Plain wasm cannot train convolutions; selectBackend registers our wasm training kernels (model.json is read before loading).
  const convJson = (dir: string) =>
    statSync(join(dir, 'model.json')).isFile() && /"class_name":\s*"(Conv|SeparableConv|DepthwiseConv)/.test(readFileSync(join(dir, 'model.json'), 'utf8'));
  const convName = /^(Conv|SeparableConv|DepthwiseConv)/;
  const needsConv = o.model === 'cnn' || (opts.resume
    ? (meta?.model?.layers ?? []).some((l) => convName.test(l))
    : !builtin && convJson(resolveModelDir(o.model, '--model')));
  const backendName = await useBackend(o.backend, needsConv);

  let checkpoint: LoadedCheckpoint | undefined;
  let model: tfl.LayersModel;
  if (opts.resume) {
    try {
      checkpoint = await loadLatestCheckpoint(out);
    } catch (e) {
      if (!(e instanceof NoCheckpointError && meta && meta.epochsDone === 0 && !meta.latestCheckpoint)) {
        throw new UsageError(`--resume: ${(e as Error).message}`);
      }
      log(`${shown} has no checkpoint yet (it stopped before the end of its first epoch): starting it from scratch with its recorded options`);
    }
  }
  if (checkpoint) {
    model = checkpoint.model;
    if (o.epochs < checkpoint.state.epochsDone) {
      model.dispose();
      throw new UsageError(`--resume: --epochs ${o.epochs} is fewer than the ${checkpoint.state.epochsDone} epochs of its latest checkpoint.`);
    }
    for (const s of checkpoint.skipped) log(`warning: skipped the damaged checkpoint ${s}`);
    if (!checkpoint.verified) log(`warning: checkpoint ${checkpoint.name} has no checksums (written by an older version); its files could not be verified`);
    log(`resuming ${out} from checkpoint ${checkpoint.name} (${checkpoint.state.epochsDone} epochs${checkpoint.state.batchesDone ? ` + ${checkpoint.state.batchesDone} batches` : ''} done)`);
  } else {
    let base: tfl.LayersModel;
    if (builtin) base = buildModel(o.model as 'mlp' | 'cnn', o.seed);
    else base = await loadModel(resolveModelDir(o.model, '--model'));
    if (o.method === 'deep' && disturbanceLayers(base).length === 0) {
      const input = inputPenalty !== undefined ? inputPenalty : {kind: o.norm, epsilon: o.epsilon, box: [0, 1]} as PenaltyConfig;
      const hidden = hiddenPenalty !== undefined ? hiddenPenalty : ({kind: 'quadratic', lambda: o.lambda} as PenaltyConfig);
      try {
        model = instrument(base, {input, hidden, name: `${base.name}_deep`});
      } catch (e) {
        throw new UsageError(`cannot add Disturbance layers to the model: ${(e as Error).message.split('\n')[0]}`);
      }
    } else {
      model = base;
    }
  }
  if (hasConv(model) && backendName === 'wasm' && !registeredWasmKernels().includes('Conv2DBackpropFilter')) log('warning: the wasm backend cannot train conv layers (no Conv2DBackpropFilter); use --backend cpu');
  const optimizer = tf.train.adam(o.learningRate);
  model.compile({optimizer, loss: 'categoricalCrossentropy', metrics: ['accuracy']});
  if (checkpoint) {
    try {
      await restoreOptimizer(optimizer, checkpoint.optimizer);
    } catch (e) {
      throw new UsageError(`--resume: checkpoint ${checkpoint.name}: ${(e as Error).message}`);
    }
  }

  // Data: the first --limit training examples; validation: the next --val-limit ones.
  const train = await loadData('train', {dir: o.data, limit: o.limit});
  let val: Dataset | null = null;
  if (o.valLimit > 0) val = await loadData('train', {dir: o.data, limit: o.valLimit, offset: train.count});
  const xTrain = toModelInput(model, train.xs);
  const valX = val ? toModelInput(model, val.xs) : null;
  tf.dispose(train.xs);
  if (val) tf.dispose(val.xs);

  const layerNames = model.layers.map((l) => `${l.getClassName()}(${l.name})`);
  if (!meta) {
    meta = {
      tool: 'tfjs-deep-adversarial',
      command: 'train',
      name: out.split(/[\\/]/).pop() as string,
      status: 'running',
      options: (({resume: _r, progress: _p, out: _o, backend: _b, ...rest}) => rest)(o),
      backend: backendName,
      createdAt: new Date().toISOString(),
      updatedAt: '',
      data: {source: train.source, trainExamples: train.count, valExamples: val?.count ?? 0, valOffset: train.count},
      model: {name: model.name, layers: layerNames, disturbanceLayers: disturbanceLayers(model).map((l) => l.name), parameters: countParams(model)},
      epochsDone: 0,
      batchesDone: 0,
      history: [],
      latestCheckpoint: null,
      seconds: 0,
    };
  }
  meta.options.epochs = o.epochs;
  meta.backend = backendName;
  meta.status = 'running';
  delete meta.error;
  try {
    if (clearFirst) await clearRun(out);
    await fsp.mkdir(out, {recursive: true});
    await writeRun(out, meta);
  } catch (e) {
    throw asUsageError(e, `--out ${shown}`);
  }
  const runMeta = meta;

  let history: Record<string, number>[] = checkpoint?.state.history ?? [];
  const startEpoch = checkpoint?.state.epochsDone ?? 0;
  let skipBatches = checkpoint?.state.batchesDone ?? 0;
  let carried: PartialEpoch | undefined = checkpoint?.state.partial;
  if (!checkpoint && !opts.resume) log(`training ${model.name} (${meta.model.parameters} parameters; ${o.method === 'none' ? 'plain' : `${o.method} adversarial`} training) on ${train.count} examples, ${backendName} backend → ${out}`);

  const progress: Progress = createProgress(o.progress);
  let interrupted = false;
  let hardStop = false;
  const onSignal = (sig: NodeJS.Signals) => {
    if (interrupted) {
      hardStop = true;
      progress.log(`${sig} again: exiting now; the last checkpoint (${runMeta.latestCheckpoint ?? 'none'}) is intact.`);
      runMeta.status = 'interrupted';
      writeRunSync(out, runMeta);
      process.exit(130);
    }
    interrupted = true;
    progress.log(`${sig}: finishing the current batch, then saving a checkpoint (press Ctrl-C again to quit at once)`);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const n = train.count;
  const batchesPerEpoch = Math.ceil(n / o.batchSize);
  let exitCode = 0;
  try {
    for (let epoch = startEpoch; epoch < o.epochs && !interrupted; epoch++) {
      const te = Date.now();
      const order = seededPermutation(n, hashSeed(o.seed, epoch));
      const startRow = Math.min(n, skipBatches * o.batchSize);
      const idx = tf.tensor1d(order.subarray(startRow), 'int32');
      const xs = tf.gather(xTrain, idx);
      const ys = tf.gather(train.ys, idx);
      idx.dispose();
      const partial = carried ?? emptyPartial();
      const baseBatch = skipBatches;
      carried = undefined;
      skipBatches = 0;
      const advOptions = adversarialOptions(o, epoch, batchesPerEpoch);
      // Continue the attack's per-step seed stream where the interrupted epoch stopped.
      const adv = advOptions ? adversarialCallback({...advOptions, initialStep: baseBatch}) : null;
      let batchesDone = baseBatch;
      const tb = Date.now();
      const control = new tfl.CustomCallback({
        onBatchEnd: async (_batch, logs) => {
          const size = Math.min(o.batchSize, n - batchesDone * o.batchSize);
          const values: Record<string, number> = {};
          for (const [k, v] of Object.entries(logs ?? {})) values[k] = scalarValue(v);
          addBatch(partial, values, size);
          batchesDone++;
          const cur = epochLogs(partial);
          const info: Record<string, number | string> = {[o.method === 'none' ? 'loss' : 'adv. loss']: cur.loss ?? NaN};
          if (cur.acc !== undefined) info.acc = `${(100 * cur.acc).toFixed(1)} %`;
          if (cur.adv_iterations !== undefined) info['attack iters'] = Number(cur.adv_iterations.toFixed(1));
          progress.update(batchesDone, info);
          // Let signal handlers run between batches (fit only awaits microtasks).
          await new Promise((r) => setImmediate(r));
          if (interrupted) model.stopTraining = true;
        },
      });
      progress.start(`epoch ${epoch + 1}/${o.epochs}`, batchesPerEpoch);
      progress.update(baseBatch);
      try {
        await model.fit(xs, ys, {
          epochs: epoch + 1,
          initialEpoch: epoch,
          batchSize: o.batchSize,
          shuffle: false,
          verbose: 0,
          callbacks: adv ? [adv, control] : [control],
        });
      } finally {
        tf.dispose([xs, ys]);
        progress.stop();
      }
      partial.seconds += (Date.now() - tb) / 1000;
      if (batchesDone < batchesPerEpoch) {
        // Interrupted mid-epoch: save the exact position.
        const state: CheckpointState = {version: 1, epochsDone: epoch, batchesDone, history, partial, savedAt: new Date().toISOString()};
        const dir = await saveCheckpoint(out, model, state);
        meta.latestCheckpoint = dir.split(/[\\/]/).pop() as string;
        meta.epochsDone = epoch;
        meta.batchesDone = batchesDone;
        meta.status = 'interrupted';
        meta.seconds += (Date.now() - t0) / 1000;
        await writeRun(out, meta);
        log(`interrupted: checkpoint saved: ${dir} (epoch ${epoch + 1}, ${batchesDone}/${batchesPerEpoch} batches); continue with --resume --out ${opts.out ?? out}`);
        exitCode = 130;
        break;
      }
      const logs = epochLogs(partial);
      const record: Record<string, number> = {epoch: epoch + 1, ...logs};
      if (val && valX) Object.assign(record, validate(model, {x: valX, y: val.ys}, o.epsilon, o.seed));
      record.seconds = partial.seconds;
      history = [...history, record];
      const state: CheckpointState = {version: 1, epochsDone: epoch + 1, batchesDone: 0, history, savedAt: new Date().toISOString()};
      const dir = await saveCheckpoint(out, model, state);
      meta.history = history;
      meta.epochsDone = epoch + 1;
      meta.batchesDone = 0;
      meta.latestCheckpoint = dir.split(/[\\/]/).pop() as string;
      await writeRun(out, meta);
      const parts = [`epoch ${epoch + 1}/${o.epochs}`, `loss ${logs.loss?.toFixed(4)}`];
      if (logs.acc !== undefined) parts.push(`acc ${(100 * logs.acc).toFixed(1)} %`);
      if (record.val_acc !== undefined) parts.push(`val acc ${(100 * record.val_acc).toFixed(1)} %`, `val PGD acc (ε=${o.epsilon}) ${(100 * record.val_pgd_acc).toFixed(1)} %`);
      parts.push(`${((Date.now() - te) / 1000).toFixed(1)} s`, `checkpoint saved: ${dir}`);
      log(parts.join(' | '));
      if (interrupted) {
        meta.status = 'interrupted';
        await writeRun(out, meta);
        log(`interrupted after epoch ${epoch + 1}; continue with --resume --out ${opts.out ?? out}`);
        exitCode = 130;
      }
    }
    if (exitCode === 0) {
      await model.save(fileSystem(join(out, 'model')));
      meta.status = 'complete';
      meta.seconds += (Date.now() - t0) / 1000;
      await writeRun(out, meta);
      log(`model saved: ${join(out, 'model')}  (run metadata: ${join(out, 'run.json')})`);
    }
  } catch (e) {
    // Never leave run.json saying "running" after an error: record it (best effort: the disk may be full).
    runMeta.status = 'failed';
    runMeta.error = (e as Error)?.message?.split('\n')[0] ?? String(e);
    await writeRun(out, runMeta).catch(() => undefined);
    throw asUsageError(e, 'train');
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    if (!hardStop) tf.dispose([xTrain, train.ys, ...(valX ? [valX, (val as Dataset).ys] : [])]);
  }
  return {out, status: meta.status, exitCode};
}
