/**
 * AutoAttack (Croce & Hein, ICML 2020): a fixed, parameter-free cascade of
 * diverse attacks whose per-example worst case is the robustness number
 * RobustBench reports.
 *
 * Versions (`version`):
 * - `'standard'`: APGD-CE (100 iterations) → APGD-T (DLR-T, 9 target classes
 *   × 100 iterations) → Square (5,000 queries). This is the published standard
 *   cascade **without FAB-T**, which this package does not implement; in the
 *   published evaluations FAB-T rarely breaks an example the other three did
 *   not (Croce & Hein 2020, Table 2 and their appendix).
 * - `'fast'`: APGD-CE (50) → APGD-T (3 targets × 50) → Square (1,000 queries),
 *   a documented cheaper cascade for quick checks (e.g. during development);
 *   it is not the standard and numbers from it should be labelled as such.
 *
 * Every stage runs only on the examples still classified correctly (the clean
 * misclassified ones are never attacked). The result holds, per example, the
 * first adversarial point found (else the highest-loss point of APGD-CE),
 * projected exactly into the ε-ball and the clip box, and `robustAccuracy` is
 * the model's accuracy on exactly that tensor (measured by `model.predict` on
 * it, batch by batch).
 *
 * @packageDocumentation
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';

import {checkKnownKeys, describeValue} from '../util/options.js';
import {apgdCascade, checkBallOptions, ResolvedApgdOptions} from './apgd.js';
import {deriveSeed, enforceBall, InputNorm, maxDistance} from './ball.js';
import {labelIndices, logitFunction} from './logits.js';
import {ResolvedSquareOptions, squareCascade} from './square.js';
import {checkAttackInputs} from './validate.js';

/** Cascade version of {@link autoAttack}. */
export type AutoAttackVersion = 'standard' | 'fast';

/** Options of {@link autoAttack}. */
export interface AutoAttackOptions {
  /** Radius ε; finite, ≥ 0. */
  epsilon: number;
  /** Threat model; default `'linf'`. */
  norm?: InputNorm;
  /** Valid input range `[lo, hi]` (e.g. `[0, 1]`); x should lie inside it. */
  clip?: [number, number];
  /** `'standard'` (default) or `'fast'`; see the module documentation. */
  version?: AutoAttackVersion;
  /** Seed of every random choice (default 0: the same call gives the same result). */
  seed?: number;
  /** Examples per batch; default 500. */
  batchSize?: number;
  /** Called after every stage of every batch. */
  onProgress?: (p: {stage: string; batch: number; batches: number}) => void;
}

const AUTOATTACK_KEYS = ['epsilon', 'norm', 'clip', 'version', 'seed', 'batchSize', 'onProgress'] as const;

/** One stage of the cascade. */
export interface AutoAttackStage {
  name: 'APGD-CE' | 'APGD-T' | 'Square';
  /** `apgd` or `square` options of the stage. */
  apgd?: ResolvedApgdOptions;
  square?: ResolvedSquareOptions;
}

/** What one stage did. */
export interface AutoAttackStageResult {
  name: string;
  /** Fraction of all examples still robust after this stage (cumulative). */
  robustAccuracy: number;
  /** Examples this stage ran on (still robust before it). */
  attacked: number;
  /** Examples this stage broke. */
  broken: number;
  /** Batched gradient evaluations (APGD) summed over batches. */
  gradientEvaluations: number;
  /** Gradient evaluations × examples they ran on. */
  exampleGradientEvaluations: number;
  /** Batched forward-only passes (Square queries) summed over batches. */
  forwardEvaluations: number;
  /** Queries × examples (Square). */
  exampleQueries: number;
  seconds: number;
}

/** Result of {@link autoAttack}. The caller disposes `adversarial`. */
export interface AutoAttackResult {
  /** Per example the worst point found, float32 of x's shape, inside the ε-ball and the clip box. */
  adversarial: tf.Tensor;
  /** The model's accuracy on `adversarial` (clean-misclassified examples count as not robust). */
  robustAccuracy: number;
  /** The model's accuracy on x. */
  cleanAccuracy: number;
  /** Per example, 1 when the model classifies `adversarial` correctly. */
  robust: Uint8Array;
  /** The cascade, stage by stage. */
  perAttack: AutoAttackStageResult[];
  /** Largest ‖adversarial − x‖ (norm of the threat model), measured on the float32 values. */
  maxPerturbation: number;
  examples: number;
  version: AutoAttackVersion;
  norm: InputNorm;
  epsilon: number;
  clip: [number, number] | null;
  seed: number;
  seconds: number;
}

/** The resolved options of a cascade. @internal */
export interface ResolvedAutoAttack {
  epsilon: number;
  norm: InputNorm;
  clip?: [number, number];
  version: AutoAttackVersion;
  seed: number;
  batchSize: number;
  stages: AutoAttackStage[];
  onProgress?: AutoAttackOptions['onProgress'];
}

/** The stages of a version at (norm, ε, clip). */
export function autoAttackStages(version: AutoAttackVersion, norm: InputNorm, epsilon: number, clip?: [number, number]): AutoAttackStage[] {
  const fast = version === 'fast';
  const steps = fast ? 50 : 100;
  const apgd = (loss: 'ce' | 'dlr', targeted: boolean): ResolvedApgdOptions => ({
    epsilon, norm, clip, steps, restarts: 1, loss, targeted, targetClasses: targeted ? (fast ? 3 : 9) : undefined, momentum: 0.75, rho: 0.75,
  });
  return [
    {name: 'APGD-CE', apgd: apgd('ce', false)},
    {name: 'APGD-T', apgd: apgd('dlr', true)},
    {name: 'Square', square: {epsilon, norm, clip, queries: fast ? 1000 : 5000, pInit: 0.8}},
  ];
}

/** Validates the options of {@link autoAttack}. @internal */
export function resolveAutoAttackOptions(where: string, options: AutoAttackOptions): ResolvedAutoAttack {
  if (options === null || typeof options !== 'object') throw new Error(`${where}: options must be an object with at least {epsilon}; got ${describeValue(options)}.`);
  checkKnownKeys(options, AUTOATTACK_KEYS, where);
  const base = checkBallOptions(where, options);
  const version = options.version ?? 'standard';
  if (version !== 'standard' && version !== 'fast') throw new Error(`${where}: options.version must be 'standard' or 'fast'; got ${describeValue(options.version)}.`);
  const batchSize = options.batchSize ?? 500;
  if (typeof batchSize !== 'number' || !Number.isInteger(batchSize) || batchSize < 1) throw new Error(`${where}: options.batchSize must be an integer >= 1; got ${describeValue(options.batchSize)}.`);
  if (options.onProgress !== undefined && typeof options.onProgress !== 'function') throw new Error(`${where}: options.onProgress must be a function; got ${describeValue(options.onProgress)}.`);
  return {
    epsilon: base.epsilon,
    norm: base.norm,
    clip: base.clip,
    version,
    seed: base.seed ?? 0,
    batchSize,
    stages: autoAttackStages(version, base.norm, base.epsilon, base.clip),
    onProgress: options.onProgress,
  };
}

/** Predicted classes of `model` on `x` (argmax; a single unit: p > 0.5), in inference mode. */
export function predictClasses(model: tfl.LayersModel, x: tf.Tensor): Int32Array {
  const t = tf.tidy(() => {
    const p = model.predict(x) as tf.Tensor;
    const b = x.shape[0];
    const k = p.shape[p.rank - 1];
    return p.rank >= 2 && k > 1 ? tf.cast(tf.argMax(tf.reshape(p, [b, k]), -1), 'int32') : tf.cast(tf.greater(tf.reshape(p, [b]), 0.5), 'int32');
  });
  const out = Int32Array.from(t.dataSync());
  t.dispose();
  return out;
}

/**
 * Runs a resolved cascade on (x, y), batch by batch. @internal
 */
export function runAutoAttackResolved(where: string, model: tfl.LayersModel, x: tf.Tensor, y: tf.Tensor, o: ResolvedAutoAttack): AutoAttackResult {
  const t0 = Date.now();
  const logits = logitFunction(model);
  if (logits.classes < 4) {
    throw new Error(`${where}: AutoAttack's APGD-T stage uses the targeted DLR loss, which needs at least 4 classes; model '${model.name}' has ${logits.classes}. Use APGD/PGD with loss 'cw' instead.`);
  }
  const n = x.shape[0];
  const rowShape = x.shape.slice(1);
  const d = rowShape.reduce((a, b) => a * b, 1);
  const xf = x.dtype === 'float32' ? x : tf.cast(x, 'float32');
  const labelsT = labelIndices(y, logits.classes, where);
  const labels = Int32Array.from(labelsT.dataSync());
  labelsT.dispose();
  const xAll = Float32Array.from(xf.dataSync());
  const adv = Float32Array.from(xAll);
  const fooled = new Uint8Array(n);
  let cleanCorrect = 0;
  const stats: AutoAttackStageResult[] = o.stages.map((s) => ({
    name: s.name, robustAccuracy: 0, attacked: 0, broken: 0, gradientEvaluations: 0, exampleGradientEvaluations: 0, forwardEvaluations: 0, exampleQueries: 0, seconds: 0,
  }));
  const batches = Math.ceil(n / o.batchSize);
  try {
    for (let bi = 0; bi < batches; bi++) {
      const start = bi * o.batchSize;
      const size = Math.min(o.batchSize, n - start);
      const xb = tf.slice(xf, [start], [size]);
      const lb = tf.tensor1d(labels.subarray(start, start + size), 'int32');
      try {
        const pred = predictClasses(model, xb);
        const f = new Uint8Array(size);
        for (let i = 0; i < size; i++) {
          f[i] = pred[i] === labels[start + i] ? 0 : 1;
          if (!f[i]) cleanCorrect++;
        }
        const a = adv.subarray(start * d, (start + size) * d);
        o.stages.forEach((stage, si) => {
          const ts = Date.now();
          const before = f.reduce((s, v) => s + v, 0);
          stats[si].attacked += size - before;
          const seed = deriveSeed(o.seed, stage.name, bi);
          if (stage.apgd) {
            const c = apgdCascade(logits, xb, lb, stage.apgd, a, f, seed);
            stats[si].gradientEvaluations += c.gradientEvaluations;
            stats[si].exampleGradientEvaluations += c.exampleGradientEvaluations;
          } else if (stage.square) {
            const c = squareCascade(logits, xAll.subarray(start * d, (start + size) * d), rowShape, labels.subarray(start, start + size), stage.square, a, f, seed);
            stats[si].forwardEvaluations += c.forwardEvaluations;
            stats[si].exampleQueries += c.exampleQueries;
          }
          stats[si].broken += f.reduce((s, v) => s + v, 0) - before;
          stats[si].seconds += (Date.now() - ts) / 1000;
          o.onProgress?.({stage: stage.name, batch: bi + 1, batches});
        });
        fooled.set(f, start);
      } finally {
        tf.dispose([xb, lb]);
      }
    }
  } finally {
    if (xf !== x) xf.dispose();
  }
  enforceBall(adv, xAll, n, o.norm, o.epsilon, o.clip);
  const adversarial = tf.tensor(adv, x.shape, 'float32');
  // The headline number: the model's accuracy on exactly the returned tensor.
  const robust = new Uint8Array(n);
  try {
    for (let start = 0; start < n; start += o.batchSize) {
      const size = Math.min(o.batchSize, n - start);
      const ab = tf.slice(adversarial, [start], [size]);
      const pred = predictClasses(model, ab);
      ab.dispose();
      for (let i = 0; i < size; i++) robust[start + i] = pred[i] === labels[start + i] ? 1 : 0;
    }
  } catch (e) {
    adversarial.dispose();
    throw e;
  }
  let alive = cleanCorrect;
  for (const s of stats) {
    alive -= s.broken;
    s.robustAccuracy = alive / n;
    s.seconds = Math.round(s.seconds * 1000) / 1000;
  }
  const robustCount = robust.reduce((s, v) => s + v, 0);
  return {
    adversarial,
    robustAccuracy: robustCount / n,
    cleanAccuracy: cleanCorrect / n,
    robust,
    perAttack: stats,
    maxPerturbation: maxDistance(adv, xAll, n, o.norm),
    examples: n,
    version: o.version,
    norm: o.norm,
    epsilon: o.epsilon,
    clip: o.clip ?? null,
    seed: o.seed,
    seconds: Math.round(Date.now() - t0) / 1000,
  };
}

/**
 * AutoAttack: the standard cascade APGD-CE → APGD-T → Square (FAB-T not
 * implemented), or the cheaper `'fast'` version; see the module
 * documentation.
 *
 * ```ts
 * const r = autoAttack(model, xTest, yTest, {norm: 'linf', epsilon: 0.1, clip: [0, 1]});
 * console.log(r.robustAccuracy, r.perAttack.map((s) => [s.name, s.robustAccuracy]));
 * r.adversarial.dispose();
 * ```
 *
 * @param model A single-input, single-output classifier with at least 4 classes.
 * @param x Clean inputs `[N, ...inputShape]` (inside `clip` if given); not disposed.
 * @param y Labels: one-hot `[N, K]` or class indices `[N]` / `[N, 1]`.
 * @returns `adversarial` (owned by the caller), `robustAccuracy` = accuracy on it, per-stage statistics.
 */
export function autoAttack(model: tfl.LayersModel, x: tf.Tensor, y: tf.Tensor, options: AutoAttackOptions): AutoAttackResult {
  const where = 'autoAttack';
  const o = resolveAutoAttackOptions(where, options);
  checkAttackInputs(where, model, x, y);
  return runAutoAttackResolved(where, model, x, y, o);
}
