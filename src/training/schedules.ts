/**
 * Attack-strength schedules (ε / λ warm-up) for adversarial training.
 *
 * A schedule maps the epoch (0-based) — or the optimizer step — to a **strength** s ≥ 0. The attack is
 * then run with every budget scaled by s:
 *
 * | attack / penalty                      | at strength s                                     |
 * |---------------------------------------|---------------------------------------------------|
 * | `pgd`, `fgsm`: radius ε               | ε·s (an explicit `stepSize` / `alpha` also ×s)    |
 * | `linf` / `l2` / `l1` ball: radius ε   | ε·s (its relu² weight λ is unchanged)             |
 * | `quadratic`: ρ(d) = −λ‖d‖²            | λ/s, so the optimal d ≈ ∇c/(2λ) grows linearly in s |
 * | `box` on the neurons                  | unchanged (it is a validity constraint, not a budget) |
 * | s = 0                                 | no attack: the batch trains clean (plain step)    |
 *
 * s = 1 is the configured attack; s > 1 is allowed and strengthens it.
 *
 * @packageDocumentation
 */
import type {PenaltyConfig} from '../objective/penalties.js';

/**
 * Strength schedule: a function of the 0-based epoch (and of the 0-based optimizer step, counted
 * over the whole `fit` from the callback's `initialStep`) returning s ≥ 0; a linear warm-up over
 * epochs `{warmupEpochs: N, start?: s0}` (constant within an epoch, see {@link linearWarmup}); or a
 * linear warm-up over optimizer steps `{warmupSteps: N, start?: s0}` (a new strength every batch,
 * see {@link linearWarmupSteps}).
 *
 * A per-step ramp is the usual remedy when training from a random initialisation against the full
 * attack stalls: e.g. deep adversarial training of a small CNN with hidden L∞ budgets from scratch
 * drives every ReLU of the second convolution to zero within a few dozen batches (a constant
 * classifier that can never recover), while a ramp over the first few hundred steps trains normally.
 */
export type StrengthSchedule =
  | ((epoch: number, step: number) => number)
  | {warmupEpochs: number; start?: number}
  | {warmupSteps: number; start?: number};

/**
 * Linear warm-up over `epochs` epochs: s(e) = min(1, start + (1 − start)·e/epochs).
 * With the default `start = 0`, epoch 0 trains clean, epoch `epochs` and later
 * use the full attack; e.g. `linearWarmup(2)` gives 0, 0.5, 1, 1, …
 * `epochs = 0` means full strength from the start.
 *
 * @param epochs Number of warm-up epochs, an integer ≥ 0.
 * @param start Strength at epoch 0, in [0, 1]. Default 0.
 */
export function linearWarmup(epochs: number, start = 0): (epoch: number) => number {
  return linearRamp('linearWarmup', 'warmupEpochs', epochs, start);
}

/**
 * Linear warm-up over optimizer steps: s(t) = min(1, start + (1 − start)·t/steps) at the 0-based
 * step t. With the default `start = 0` the first batch trains clean and step `steps` and later use
 * the full attack; e.g. `linearWarmupSteps(4)` gives 0, ¼, ½, ¾, 1, 1, … `steps = 0` means full
 * strength from the start.
 *
 * @param steps Number of warm-up steps (batches), an integer ≥ 0.
 * @param start Strength at step 0, in [0, 1]. Default 0.
 */
export function linearWarmupSteps(steps: number, start = 0): (step: number) => number {
  return linearRamp('linearWarmupSteps', 'warmupSteps', steps, start);
}

/** s(t) = min(1, start + (1 − start)·t/n) (1 for n = 0), n and start validated; errors name `fn` and `key`. */
function linearRamp(fn: string, key: string, n: number, start: number): (t: number) => number {
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 0) {
    throw new Error(`${fn}: ${key} must be an integer >= 0, got ${String(n)}.`);
  }
  if (typeof start !== 'number' || !Number.isFinite(start) || start < 0 || start > 1) {
    throw new Error(`${fn}: start must be a number in [0, 1], got ${String(start)}.`);
  }
  return (t: number) => (n === 0 ? 1 : Math.min(1, start + ((1 - start) * Math.max(0, t)) / n));
}

/** Normalises a {@link StrengthSchedule} (validating it) into a function of the epoch and the step. */
export function scheduleFunction(schedule: StrengthSchedule | undefined, where = 'schedule'): (epoch: number, step: number) => number {
  if (schedule === undefined || schedule === null) return () => 1;
  if (typeof schedule === 'function') return schedule;
  if (typeof schedule === 'object') {
    const hasEpochs = 'warmupEpochs' in schedule;
    const hasSteps = 'warmupSteps' in schedule;
    if (hasEpochs && hasSteps) throw new Error(`${where}: give warmupEpochs or warmupSteps, not both; got ${JSON.stringify(schedule)}.`);
    try {
      if (hasEpochs) {
        const f = linearWarmup(schedule.warmupEpochs, schedule.start ?? 0);
        return (epoch: number) => f(epoch);
      }
      if (hasSteps) {
        const f = linearWarmupSteps(schedule.warmupSteps, schedule.start ?? 0);
        return (_epoch: number, step: number) => f(step);
      }
    } catch (e) {
      throw new Error(`${where}: ${(e as Error).message}`);
    }
  }
  throw new Error(`${where} must be a function (epoch, step) => strength, {warmupEpochs, start?} or {warmupSteps, start?}, got ${JSON.stringify(schedule)}.`);
}

/**
 * The strength at `epoch` (and optimizer `step`, default 0), checked to be a finite number ≥ 0.
 *
 * @throws Error naming the epoch, the step and the value when the schedule returns something else.
 */
export function strengthAt(schedule: StrengthSchedule | undefined, epoch: number, where = 'schedule', step = 0): number {
  const s = scheduleFunction(schedule, where)(epoch, step);
  if (typeof s !== 'number' || !Number.isFinite(s) || s < 0) {
    throw new Error(`${where} returned ${String(s)} for epoch ${epoch}${step ? ` (step ${step})` : ''}; a strength must be a finite number >= 0.`);
  }
  return s;
}

/** Checks a strength value (finite, ≥ 0). */
export function checkStrength(s: unknown, where: string): number {
  if (typeof s !== 'number' || !Number.isFinite(s) || s < 0) {
    throw new Error(`${where}: strength must be a finite number >= 0, got ${String(s)}.`);
  }
  return s;
}

/**
 * A penalty at strength s (table above): balls get ε·s, quadratic penalties
 * λ/s, boxes are unchanged. Returns `null` (layer off, d = 0) for s = 0.
 */
export function scalePenalty(penalty: PenaltyConfig, s: number): PenaltyConfig | null {
  if (s === 0) return null;
  if (s === 1) return penalty;
  if (penalty.kind === 'quadratic') return {...penalty, lambda: penalty.lambda / s};
  return {...penalty, epsilon: penalty.epsilon * s};
}

/** An input-space radius (PGD/FGSM ε, step sizes) at strength s: value·s. */
export function scaleRadius(value: number, s: number): number {
  return value * s;
}
