/**
 * One attack contract and the registry of input-space attacks.
 *
 * Every attack is an {@link AttackDefinition}: its option names, and a
 * `prepare(where, options)` that validates the options and fills in the
 * defaults ONCE, returning a {@link PreparedAttack} whose `run(model, x, y,
 * ctx)` attacks one batch. `evaluateRobustness`, `adversarialStep` /
 * `adversarialCallback` and the CLI's `eval` all go through it, so adding an
 * attack is one file plus one line in {@link ATTACKS}.
 *
 * `run` never re-validates: per batch only the radius (`ctx.epsilon`, for an
 * ε sweep or a training schedule — step sizes scale with it) and the seed
 * change.
 *
 * The deep attack (which also disturbs hidden layers) is a different threat
 * model and keeps its own entry point (`deepAttack`, `attacks/deep.ts`); see
 * {@link ThreatModel}.
 *
 * @packageDocumentation
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';

import type {LossFn} from '../objective/loss.js';
import {describeValue} from '../util/options.js';
import {ApgdOptions, resolveApgdOptions, runApgdResolved} from './apgd.js';
import {AutoAttackOptions, AutoAttackStageResult, resolveAutoAttackOptions, runAutoAttackResolved} from './autoattack.js';
import type {InputNorm} from './ball.js';
import {FgsmOptions} from './fgsm.js';
import {checkCommonOptions, PGD_KEYS, PgdOptions, resolvePgdOptions, ResolvedPgdOptions, runPgd} from './pgd.js';
import {resolveSquareOptions, runSquareResolved, SquareOptions} from './square.js';
import {checkKnownKeys} from '../util/options.js';
import {deepAttack, DeepAttackOptions, DeepAttackResult, resolveDeepAttackOptions} from './deep.js';
import type {Tensors} from '../objective/loss.js';

/**
 * What an attack may change: `'input'` — the input only, inside an ε-ball and
 * the clip box; `'deep'` — the input and every hidden layer (the deep threat
 * of this package), which no input attack can reproduce. Results of the two are
 * never mixed: the worst case over attacks is taken over input attacks only.
 */
export type ThreatModel = 'input' | 'deep';

/** Per-batch context of {@link PreparedAttack.run}. */
export interface AttackRunContext {
  /** Radius to run at instead of the prepared one (step sizes scale with it). */
  epsilon?: number;
  /** Seed of this run. */
  seed?: number;
  /** Also return the per-example objective at the result (when the attack has one). */
  wantObjective?: boolean;
}

/** What one run returns; the caller disposes the tensors. */
export interface AttackRunResult {
  /** The adversarial inputs (float32, x's shape), inside the ball and the clip box. */
  adversarial: tf.Tensor;
  /** Per-example objective at the result (PGD/FGSM with `wantObjective`), else null. */
  objective: tf.Tensor1D | null;
  /** Batched gradient evaluations. */
  gradientEvaluations: number;
  /** Batched forward-only passes (score-based attacks). */
  forwardEvaluations: number;
  /** Iterations (steps × restarts for PGD). */
  iterations: number;
  /** AutoAttack: the cascade's stages on this batch. */
  stages?: AutoAttackStageResult[];
}

/** An attack whose options were validated once. */
export interface PreparedAttack {
  kind: InputAttackKind;
  threat: 'input';
  norm: InputNorm;
  /** The prepared radius (a run may override it). */
  epsilon: number;
  /** Default name in results, e.g. `'PGD-40×2 L∞'`. */
  label: string;
  /** True for attacks that use gradients (all but Square). */
  usesGradients: boolean;
  /** The resolved options, defaults filled in (plain JSON, for results files). */
  settings: Record<string, unknown>;
  /** Attacks one batch. */
  run(model: tfl.LayersModel, x: tf.Tensor, y: tf.Tensor, ctx?: AttackRunContext): AttackRunResult;
}

/** An entry of the registry. */
export interface AttackDefinition<O> {
  kind: InputAttackKind;
  /** One line for help texts. */
  summary: string;
  /** Validates `options` (naming `where` in errors) and fills in the defaults. */
  prepare(where: string, options: O): PreparedAttack;
}

const NORM_LABEL: Record<InputNorm, string> = {linf: 'L∞', l2: 'L2'};

function checkRunEpsilon(where: string, e: number | undefined): void {
  if (e !== undefined && (typeof e !== 'number' || !Number.isFinite(e) || e < 0)) throw new Error(`${where}: epsilon must be a finite number >= 0; got ${describeValue(e)}.`);
}

/** PGD-like run with resolved options (shared by the pgd and fgsm entries). */
function pgdRun(o: ResolvedPgdOptions, relStep: number | null) {
  return (model: tfl.LayersModel, x: tf.Tensor, y: tf.Tensor, ctx: AttackRunContext = {}): AttackRunResult => {
    const epsilon = ctx.epsilon ?? o.epsilon;
    const stepSize = ctx.epsilon === undefined || relStep === null ? o.stepSize : relStep * epsilon;
    const r = runPgd(model, x, y, {...o, epsilon, stepSize, seed: ctx.seed ?? o.seed}, ctx.wantObjective ?? false);
    return {adversarial: r.adversarial, objective: r.loss, gradientEvaluations: r.gradientEvaluations, forwardEvaluations: 0, iterations: o.steps * o.restarts};
  };
}

/** PGD (Madry et al.) with a selectable loss. */
const pgd: AttackDefinition<PgdOptions> = {
  kind: 'pgd',
  summary: 'PGD-k with random start and restarts; loss: the model\'s, or ce / cw / dlr on the logits',
  prepare(where, options) {
    checkKnownKeys(options, PGD_KEYS, where);
    const o = resolvePgdOptions(where, options);
    // The step size as a fraction of ε, so that a run at another radius keeps the same schedule.
    const rel = options.stepSize === undefined ? 2.5 / o.steps : o.epsilon > 0 ? o.stepSize / o.epsilon : null;
    const lossName = typeof o.loss === 'function' ? 'custom' : o.loss ?? 'model';
    return {
      kind: 'pgd',
      threat: 'input',
      norm: o.norm,
      epsilon: o.epsilon,
      label: `PGD-${o.steps}${o.restarts > 1 ? `×${o.restarts}` : ''}${lossName === 'model' ? '' : ` ${String(lossName).toUpperCase()}`} ${NORM_LABEL[o.norm]}`,
      usesGradients: true,
      settings: {norm: o.norm, steps: o.steps, restarts: o.restarts, ...(rel === null ? {stepSize: o.stepSize} : {relativeStepSize: rel}), randomStart: o.randomStart, loss: lossName},
      run: pgdRun(o, rel),
    };
  },
};

/** Option names of the fgsm entry. */
export const FGSM_KEYS = ['epsilon', 'clip', 'randomStart', 'alpha', 'seed', 'loss'] as const;

/** FGSM / FGSM-RS. */
const fgsm: AttackDefinition<FgsmOptions> = {
  kind: 'fgsm',
  summary: 'FGSM (one signed-gradient step), or FGSM-RS with randomStart',
  prepare(where, options) {
    if (options === null || typeof options !== 'object') throw new Error(`${where}: options must be an object with at least {epsilon}; got ${describeValue(options)}.`);
    checkKnownKeys(options, FGSM_KEYS, where);
    checkCommonOptions(where, options);
    const randomStart = options.randomStart ?? false;
    const alpha = options.alpha ?? 1.25 * options.epsilon;
    if (typeof alpha !== 'number' || !Number.isFinite(alpha) || alpha < 0) throw new Error(`${where}: options.alpha must be a finite number >= 0; got ${describeValue(options.alpha)}.`);
    const o: ResolvedPgdOptions = {
      epsilon: options.epsilon, norm: 'linf', steps: 1, stepSize: randomStart ? alpha : options.epsilon, randomStart, restarts: 1, clip: options.clip, seed: options.seed, loss: options.loss,
    };
    const rel = randomStart ? (options.alpha === undefined ? 1.25 : options.epsilon > 0 ? alpha / options.epsilon : null) : 1;
    return {
      kind: 'fgsm',
      threat: 'input',
      norm: 'linf',
      epsilon: options.epsilon,
      label: randomStart ? 'FGSM-RS' : 'FGSM',
      usesGradients: true,
      settings: {randomStart, alpha: randomStart ? (rel === null ? alpha : `${rel}ε`) : null},
      run: pgdRun(o, rel),
    };
  },
};

/** APGD-CE / APGD-DLR / APGD-T. */
const apgd: AttackDefinition<ApgdOptions> = {
  kind: 'apgd',
  summary: 'Auto-PGD (Croce & Hein 2020): loss ce / dlr / cw, untargeted or targeted over the top-k classes',
  prepare(where, options) {
    const o = resolveApgdOptions(where, options);
    const name = o.targeted ? 'APGD-T' : `APGD-${o.loss.toUpperCase()}`;
    return {
      kind: 'apgd',
      threat: 'input',
      norm: o.norm,
      epsilon: o.epsilon,
      label: `${name} ${NORM_LABEL[o.norm]}`,
      usesGradients: true,
      settings: {norm: o.norm, steps: o.steps, restarts: o.restarts, loss: o.loss, targeted: o.targeted, targetClasses: o.targeted ? (o.targetClasses ?? 9) : null, momentum: o.momentum, rho: o.rho},
      run(model, x, y, ctx = {}) {
        checkRunEpsilon(where, ctx.epsilon);
        const r = runApgdResolved(where, model, x, y, {...o, epsilon: ctx.epsilon ?? o.epsilon, seed: ctx.seed ?? o.seed});
        return {adversarial: r.adversarial, objective: null, gradientEvaluations: r.gradientEvaluations, forwardEvaluations: 0, iterations: r.gradientEvaluations};
      },
    };
  },
};

/** Square (score-based). */
const square: AttackDefinition<SquareOptions> = {
  kind: 'square',
  summary: 'Square attack (Andriushchenko et al. 2020): random search on the outputs, no gradients',
  prepare(where, options) {
    const o = resolveSquareOptions(where, options);
    return {
      kind: 'square',
      threat: 'input',
      norm: o.norm,
      epsilon: o.epsilon,
      label: `Square-${o.queries} ${NORM_LABEL[o.norm]}`,
      usesGradients: false,
      settings: {norm: o.norm, queries: o.queries, pInit: o.pInit, imageShape: o.imageShape ?? 'inferred'},
      run(model, x, y, ctx = {}) {
        checkRunEpsilon(where, ctx.epsilon);
        const r = runSquareResolved(where, model, x, y, {...o, epsilon: ctx.epsilon ?? o.epsilon, seed: ctx.seed ?? o.seed});
        return {adversarial: r.adversarial, objective: null, gradientEvaluations: 0, forwardEvaluations: r.forwardEvaluations, iterations: r.forwardEvaluations};
      },
    };
  },
};

/** AutoAttack (the cascade). */
const autoattack: AttackDefinition<AutoAttackOptions> = {
  kind: 'autoattack',
  summary: "AutoAttack: APGD-CE → APGD-T → Square on still-robust examples ('standard'; FAB-T not implemented) or the cheaper 'fast' cascade",
  prepare(where, options) {
    const o = resolveAutoAttackOptions(where, options);
    return {
      kind: 'autoattack',
      threat: 'input',
      norm: o.norm,
      epsilon: o.epsilon,
      label: `AutoAttack${o.version === 'standard' ? '' : ` (${o.version})`} ${NORM_LABEL[o.norm]}`,
      usesGradients: true,
      settings: {norm: o.norm, version: o.version, stages: o.stages.map((s) => s.name)},
      run(model, x, y, ctx = {}) {
        checkRunEpsilon(where, ctx.epsilon);
        const eps = ctx.epsilon ?? o.epsilon;
        const r = runAutoAttackResolved(where, model, x, y, {
          ...o,
          epsilon: eps,
          seed: ctx.seed ?? o.seed,
          stages: o.stages.map((s) => ({...s, apgd: s.apgd && {...s.apgd, epsilon: eps}, square: s.square && {...s.square, epsilon: eps}})),
          batchSize: Math.max(o.batchSize, x.shape[0]),
          onProgress: undefined,
        });
        const grads = r.perAttack.reduce((s, st) => s + st.gradientEvaluations, 0);
        const fwd = r.perAttack.reduce((s, st) => s + st.forwardEvaluations, 0);
        return {adversarial: r.adversarial, objective: null, gradientEvaluations: grads, forwardEvaluations: fwd, iterations: grads + fwd, stages: r.perAttack};
      },
    };
  },
};

/** Names of the input attacks in the registry. */
export type InputAttackKind = 'fgsm' | 'pgd' | 'apgd' | 'square' | 'autoattack';

/** The registry: one line per input attack. */
export const ATTACKS: {[K in InputAttackKind]: AttackDefinition<never>} = {
  fgsm: fgsm as AttackDefinition<never>,
  pgd: pgd as AttackDefinition<never>,
  apgd: apgd as AttackDefinition<never>,
  square: square as AttackDefinition<never>,
  autoattack: autoattack as AttackDefinition<never>,
};

/** Options of each registered attack, by kind. */
export interface AttackOptionsByKind {
  fgsm: FgsmOptions;
  pgd: PgdOptions;
  apgd: ApgdOptions;
  square: SquareOptions;
  autoattack: AutoAttackOptions;
}

/** True when `kind` names a registered input attack. */
export function isInputAttackKind(kind: unknown): kind is InputAttackKind {
  return typeof kind === 'string' && Object.prototype.hasOwnProperty.call(ATTACKS, kind);
}

/**
 * Validates `options` of attack `kind` once and returns the prepared attack.
 * @throws naming `where`, the attack and the bad option; for an unknown kind, the registered ones.
 */
export function prepareAttack<K extends InputAttackKind>(kind: K, where: string, options: AttackOptionsByKind[K]): PreparedAttack {
  if (!isInputAttackKind(kind)) {
    throw new Error(`${where}: unknown attack ${describeValue(kind)}; registered input attacks: ${Object.keys(ATTACKS).join(', ')} (and 'deep').`);
  }
  return (ATTACKS[kind] as unknown as AttackDefinition<AttackOptionsByKind[K]>).prepare(where, options);
}

/** The deep attack (threat model `'deep'`), prepared once: its options validated by `resolveDeepAttackOptions`. */
export interface PreparedDeepAttack {
  kind: 'deep';
  threat: 'deep';
  /** The resolved options (plain JSON; penalties summarised). */
  settings: Record<string, unknown>;
  /** Runs `deepAttack` on one batch with this batch's seed and penalties; the caller disposes the result's tensors. */
  run(model: tfl.LayersModel, x: Tensors, y: Tensors, ctx?: {seed?: number; penalties?: DeepAttackOptions['penalties']}): DeepAttackResult;
}

/**
 * The registry's entry for the deep attack: validates `options` once (unknown keys refused with the
 * closest valid name, every value checked) and returns a runner. Per batch only the seed and the
 * penalties (an ε sweep, a training schedule) change.
 */
export function prepareDeepAttack(where: string, options: DeepAttackOptions = {}): PreparedDeepAttack {
  const r = resolveDeepAttackOptions(where, options);
  return {
    kind: 'deep',
    threat: 'deep',
    settings: {
      solver: r.solver,
      maxIterations: Number.isFinite(r.maxIterations) ? r.maxIterations : null,
      maxGradientEvaluations: Number.isFinite(r.maxGradientEvaluations) ? r.maxGradientEvaluations : null,
      init: r.init,
      project: r.project,
    },
    run(model, x, y, ctx = {}) {
      return deepAttack(model, x, y, {...options, seed: ctx.seed ?? options.seed, penalties: ctx.penalties ?? options.penalties});
    },
  };
}

export type {LossFn};
