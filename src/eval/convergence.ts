/**
 * Convergence of the inner maximisation (eq. 9/11): the deep attack's default
 * solver (preconditioned ascent in disturbance space) against neuron-space CG
 * and plain gradient ascent, as the mean objective J versus the number of
 * batched gradient evaluations — the cost unit that matters (one forward + one
 * backward pass of the whole batch each, line-search evaluations included).
 * J is the same function in both spaces (dℓ = nℓ − fℓ(nℓ₋₁)), and every run
 * starts at d = 0, the clean neurons.
 *
 * @packageDocumentation
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';

import {deepAttack, DeepAttackOptions} from '../attacks/deep.js';
import {disturbanceSites, instrument} from '../model/instrument.js';
import {assertCompatibleXY, LossFn, perExampleLoss} from '../objective/loss.js';
import {disposeAddResult, forwardAdd, neuronObjective} from '../objective/neuron_space.js';
import {PenaltyConfig, validatePenalty} from '../objective/penalties.js';
import {conjugateGradient} from '../solvers/cg.js';
import {gradientAscent} from '../solvers/gradient_ascent.js';
import type {IterationInfo, SolverResult} from '../solvers/types.js';

/** Options of {@link solverConvergence}. */
export interface ConvergenceOptions {
  /** Budget of batched gradient evaluations per solver (start included); default 40. */
  maxGradientEvaluations?: number;
  /** Fixed step sizes of the gradient-ascent runs (one run each); default `[0.01, 0.03]`. */
  stepSizes?: number[];
  /** Penalties instead of the layers' own (as in {@link DeepAttackOptions.penalties}, array form). */
  penalties?: (PenaltyConfig | null)[];
  /** Loss; default the model's compiled loss. */
  loss?: string | LossFn;
  /** Seed of the default solver's random start (the same start at every budget). Default 0. */
  seed?: number;
}

/** One point of a convergence curve. */
export interface ConvergencePoint {
  /** Batched gradient evaluations spent so far (the start point costs 1). */
  gradientEvaluations: number;
  /** Mean over the batch of J_b (eq. 11). */
  objective: number;
}

/** One solver run. */
export interface ConvergenceRun {
  /**
   * `'preconditioned'`: `deepAttack` with its default options (disturbance space, random start of `seed`), run once
   * per budget of a doubling grid, so each point is exactly what a user gets at that
   * `maxGradientEvaluations`; `'cg'`, `'gradient-ascent'`: one neuron-space run, a point per iteration.
   */
  solver: 'preconditioned' | 'cg' | 'gradient-ascent';
  /** Human-readable label, e.g. `'preconditioned (deepAttack default)'`, `'CG'`, `'gradient ascent η=0.01'`. */
  label: string;
  /** Step size (gradient ascent only). */
  stepSize: number | null;
  points: ConvergencePoint[];
  /** True when the run ended below its start value or at a non-finite value (a too large fixed step). */
  diverged: boolean;
}

/** Result of {@link solverConvergence} (plain JSON). */
export interface ConvergenceResult {
  examples: number;
  /** Disturbance layers attacked. */
  layers: string[];
  /** True when the model had no Disturbance layers and a temporary instrumented copy was used. */
  instrumented: boolean;
  runs: ConvergenceRun[];
}

/**
 * Runs the deep attack's default solver (see {@link ConvergenceRun.solver}), CG and fixed-step
 * gradient ascent on eq. 11 for one batch, from the same start (every dℓ = 0, i.e. the clean
 * neurons), and records the mean objective against the gradient evaluations spent. The default
 * solver costs about twice the budget (one run per budget 1, 2, 4, …, budget).
 * A model without Disturbance layers is instrumented on the fly (sharing its
 * weights; the model is not changed). Every tensor created is disposed.
 *
 * @param model A compiled model (or pass `options.loss`).
 * @param x A batch of inputs.
 * @param y Its targets.
 */
export function solverConvergence(model: tfl.LayersModel, x: tf.Tensor, y: tf.Tensor, options: ConvergenceOptions = {}): ConvergenceResult {
  const who = 'solverConvergence';
  assertCompatibleXY(model, x, y);
  const budget = options.maxGradientEvaluations ?? 40;
  if (typeof budget !== 'number' || !Number.isInteger(budget) || budget < 1) {
    throw new Error(`${who}: options.maxGradientEvaluations must be an integer >= 1, got ${String(budget)}.`);
  }
  const stepSizes = options.stepSizes ?? [0.01, 0.03];
  if (!Array.isArray(stepSizes) || stepSizes.some((s) => typeof s !== 'number' || !(s > 0) || !Number.isFinite(s))) {
    throw new Error(`${who}: options.stepSizes must be an array of positive numbers, got ${JSON.stringify(stepSizes)}.`);
  }
  const seed = options.seed ?? 0;
  if (typeof seed !== 'number' || !Number.isFinite(seed)) throw new Error(`${who}: options.seed must be a finite number, got ${String(options.seed)}.`);
  let attacked = model;
  let instrumented = false;
  if (disturbanceSites(model).length === 0) {
    attacked = instrument(model, {name: `${model.name}_convergence_instrumented`});
    instrumented = true;
  }
  const sites = disturbanceSites(attacked);
  let penalties: (PenaltyConfig | null)[] = sites.map((s) => s.layer.penalty);
  if (options.penalties !== undefined) {
    if (!Array.isArray(options.penalties) || options.penalties.length !== sites.length) {
      throw new Error(`${who}: options.penalties must have one entry per Disturbance layer (${sites.length}).`);
    }
    penalties = options.penalties.map((p, i) => (p == null ? null : validatePenalty(p, `${who}: options.penalties[${i}]`)));
  }
  const active = sites.map((_, i) => i).filter((i) => penalties[i] != null);
  if (active.length === 0) throw new Error(`${who}: options.penalties switches every Disturbance layer off.`);
  const layers = active.map((i) => sites[i].layer);
  const activePenalties = active.map((i) => penalties[i] as PenaltyConfig);
  const loss = perExampleLoss(attacked, options.loss);
  const B = x.shape[0];

  // Start: the clean neurons (every dℓ = 0).
  const zeros = active.map((i) => tf.zeros([B, ...(sites[i].inputShape.slice(1) as number[])]));
  let n0: tf.Tensor[];
  try {
    const r = forwardAdd(attacked, layers, x, zeros);
    n0 = r.neurons.map((t) => tf.clone(t));
    disposeAddResult(r);
  } finally {
    tf.dispose(zeros);
  }
  const f = neuronObjective(attacked, layers, x, y, loss, activePenalties);
  const runs: ConvergenceRun[] = [];
  const record = (solver: ConvergenceRun['solver'], label: string, stepSize: number | null, solve: (cb: (i: IterationInfo) => void) => SolverResult) => {
    const points: ConvergencePoint[] = [];
    const res = solve((i) => points.push({gradientEvaluations: i.gradientEvaluations, objective: i.meanObjective}));
    points.unshift({gradientEvaluations: 1, objective: res.history[0]});
    tf.dispose([...res.xs, res.objective]);
    const last = points[points.length - 1].objective;
    const diverged = !Number.isFinite(last) || last < points[0].objective;
    // JSON has no Infinity/NaN: keep such values out of the points.
    runs.push({solver, label, stepSize, points: points.filter((p) => Number.isFinite(p.objective)), diverged});
  };
  try {
    runs.push(defaultSolverRun(attacked, x, y, budget, penalties, options.loss, seed));
    record('cg', 'CG', null, (onIteration) =>
      conjugateGradient(f, n0, {maxIterations: budget, maxGradientEvaluations: budget, tolerance: -1, gradientTolerance: -1, onIteration}),
    );
    for (const eta of stepSizes) {
      record('gradient-ascent', `gradient ascent η=${eta}`, eta, (onIteration) =>
        gradientAscent(f, n0, {stepSize: eta, maxIterations: budget, maxGradientEvaluations: budget, tolerance: -1, gradientTolerance: -1, onIteration}),
      );
    }
  } finally {
    tf.dispose(n0);
  }
  return {examples: B, layers: layers.map((l) => l.name), instrumented, runs};
}

/**
 * `deepAttack` with its default options at budgets 1, 2, 4, …, `budget`: J after at most k batched
 * gradient evaluations, as a user gets it with `maxGradientEvaluations: k`. A budget the solver does not
 * use up (it stopped early) adds no point.
 */
function defaultSolverRun(model: tfl.LayersModel, x: tf.Tensor, y: tf.Tensor, budget: number, penalties: (PenaltyConfig | null)[], loss: ConvergenceOptions['loss'], seed: number): ConvergenceRun {
  const budgets: number[] = [];
  for (let k = 1; k < budget; k *= 2) budgets.push(k);
  budgets.push(budget);
  const points: ConvergencePoint[] = [];
  for (const k of budgets) {
    const r = deepAttack(model, x, y, {maxGradientEvaluations: k, penalties, loss, seed});
    tf.dispose([...r.disturbances, r.objective]);
    if (points.length === 0) points.push({gradientEvaluations: 1, objective: r.history[0]});
    const last = points[points.length - 1];
    const J = r.history[r.history.length - 1];
    if (r.gradientEvaluations > last.gradientEvaluations) points.push({gradientEvaluations: r.gradientEvaluations, objective: J});
  }
  const last = points[points.length - 1].objective;
  return {
    solver: 'preconditioned',
    label: 'preconditioned (deepAttack default)',
    stepSize: null,
    points: points.filter((p) => Number.isFinite(p.objective)),
    diverged: !Number.isFinite(last) || last < points[0].objective,
  };
}
