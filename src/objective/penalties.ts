/**
 * Penalties ρℓ(dℓ) of eq. 8 (seed §3), as pure tensor functions.
 *
 * Every function here works on a batch: `d` has shape `[B, ...units]` and the
 * result is per example, shape `[B]`. Penalties are *non-positive* (they are
 * added to the loss that the attacker maximises).
 *
 * Kinds (sums run over one example's units):
 * - `quadratic`: ρ(d) = −λ Σᵢ dᵢ²                      (eq. 5 with ρ = −λ‖d‖²)
 * - `linf`:      ρ(d) = −λ Σᵢ relu(|dᵢ| − ε)²          (≈ log I{‖d‖∞ ≤ ε})
 * - `l2`:        ρ(d) = −λ relu(‖d‖₂ − ε)²             (≈ log I{‖d‖₂ ≤ ε})
 * - `l1`:        ρ(d) = −λ relu(‖d‖₁ − ε)²             (≈ log I{‖d‖₁ ≤ ε})
 * - optional `box: [lo, hi]` on the neurons n = (layer input) + d:
 *   adds −λ_box Σᵢ (relu(lo − nᵢ)² + relu(nᵢ − hi)²).
 *
 * The last three kinds and the box approximate hard constraints the way the
 * seed suggests (ρ = log I_D ≈ −λ relu(g(d))²). Their λ defaults to
 * {@link DEFAULT_CONSTRAINT_LAMBDA}.
 */
import * as tf from '@tensorflow/tfjs-core';

/**
 * Default λ for the constraint-style penalties (`linf`, `l2`, `l1`, `box`).
 *
 * At a maximiser, a coordinate that violates its bound by δ balances the loss
 * gradient gᵢ: 2λδ = gᵢ, so δ = gᵢ / (2λ). With λ = 100 a unit loss gradient
 * leaves a violation of 0.005 — small against typical budgets (ε ≥ 0.05) —
 * while the objective stays well enough conditioned for CG to converge in a few
 * iterations. Pass `project: true` to the attack to make the budget exact.
 */
export const DEFAULT_CONSTRAINT_LAMBDA = 100;

/** Box constraint on the neurons of a layer: every unit must lie in [lo, hi]. */
export type Box = [number, number];

/** ρ(d) = −λ‖d‖² (optionally with a box on the neurons). */
export interface QuadraticPenalty {
  kind: 'quadratic';
  /** λ ≥ 0; larger means smaller disturbances. */
  lambda: number;
  /** Optional box on the neurons n = f(·) + d. */
  box?: Box;
  /** λ of the box term; defaults to {@link DEFAULT_CONSTRAINT_LAMBDA}. */
  boxLambda?: number;
}

/** Soft norm-ball budget ‖d‖_p ≤ ε, approximated by −λ relu(g(d))². */
export interface NormBallPenalty {
  kind: 'linf' | 'l2' | 'l1';
  /** Radius ε ≥ 0 of the ball. */
  epsilon: number;
  /** λ ≥ 0 of the relu² approximation; defaults to {@link DEFAULT_CONSTRAINT_LAMBDA}. */
  lambda?: number;
  /** Optional box on the neurons n = f(·) + d (for ℓ = 0: the valid input range). */
  box?: Box;
  /** λ of the box term; defaults to `lambda`. */
  boxLambda?: number;
}

/** Penalty specification carried by a Disturbance layer (serialised in its config). */
export type PenaltyConfig = QuadraticPenalty | NormBallPenalty;

/** The penalty a Disturbance layer gets when none is given: ρ(d) = −‖d‖². */
export const DEFAULT_PENALTY: PenaltyConfig = Object.freeze({kind: 'quadratic', lambda: 1}) as PenaltyConfig;

const KINDS = ['quadratic', 'linf', 'l2', 'l1'] as const;

function checkNumber(value: unknown, field: string, where: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    throw new Error(`${where}: penalty field '${field}' must be a finite number, got ${String(value)}.`);
  }
  if (value < 0) {
    throw new Error(`${where}: penalty field '${field}' must be >= 0, got ${value}.`);
  }
  return value;
}

/**
 * Validates a penalty specification and returns a normalised copy (defaults
 * filled in, unknown fields dropped). Throws an error naming the bad field.
 *
 * @param config The penalty as given by the user (may come from JSON).
 * @param where  Context for the error message, e.g. the layer name.
 */
export function validatePenalty(config: unknown, where = 'penalty'): PenaltyConfig {
  if (config == null || typeof config !== 'object' || Array.isArray(config)) {
    throw new Error(`${where}: a penalty must be an object such as {kind: 'quadratic', lambda: 1}, got ${JSON.stringify(config)}.`);
  }
  const c = config as Record<string, unknown>;
  const kind = c.kind;
  if (!KINDS.includes(kind as (typeof KINDS)[number])) {
    throw new Error(`${where}: penalty field 'kind' must be one of ${KINDS.map((k) => `'${k}'`).join(', ')}, got ${JSON.stringify(kind)}.`);
  }
  let box: Box | undefined;
  if (c.box !== undefined && c.box !== null) {
    if (!Array.isArray(c.box) || c.box.length !== 2) {
      throw new Error(`${where}: penalty field 'box' must be [lo, hi], got ${JSON.stringify(c.box)}.`);
    }
    const [lo, hi] = c.box as unknown[];
    if (typeof lo !== 'number' || typeof hi !== 'number' || Number.isNaN(lo) || Number.isNaN(hi) || !(lo <= hi)) {
      throw new Error(`${where}: penalty field 'box' must be [lo, hi] with lo <= hi, got ${JSON.stringify(c.box)}.`);
    }
    box = [lo, hi];
  }
  if (kind === 'quadratic') {
    const out: QuadraticPenalty = {kind, lambda: checkNumber(c.lambda, 'lambda', where)};
    if (box) {
      out.box = box;
      out.boxLambda = c.boxLambda === undefined ? DEFAULT_CONSTRAINT_LAMBDA : checkNumber(c.boxLambda, 'boxLambda', where);
    }
    return out;
  }
  const lambda = c.lambda === undefined ? DEFAULT_CONSTRAINT_LAMBDA : checkNumber(c.lambda, 'lambda', where);
  const out: NormBallPenalty = {kind: kind as NormBallPenalty['kind'], epsilon: checkNumber(c.epsilon, 'epsilon', where), lambda};
  if (box) {
    out.box = box;
    out.boxLambda = c.boxLambda === undefined ? lambda : checkNumber(c.boxLambda, 'boxLambda', where);
  }
  return out;
}

/** Sums every axis but the first: `[B, ...] → [B]`. */
export function sumPerExample(t: tf.Tensor): tf.Tensor1D {
  if (t.rank === 1) return t as tf.Tensor1D;
  const axes = [];
  for (let i = 1; i < t.rank; i++) axes.push(i);
  return tf.sum(t, axes) as tf.Tensor1D;
}

/** Max over every axis but the first: `[B, ...] → [B]`. */
function maxPerExample(t: tf.Tensor): tf.Tensor1D {
  if (t.rank === 1) return t as tf.Tensor1D;
  const axes = [];
  for (let i = 1; i < t.rank; i++) axes.push(i);
  return tf.max(t, axes) as tf.Tensor1D;
}

/** Per-example ‖d‖ of the penalty's norm (L∞, L2 or L1); for `quadratic`, L2. */
export function normPerExample(d: tf.Tensor, kind: PenaltyConfig['kind']): tf.Tensor1D {
  return tf.tidy(() => {
    switch (kind) {
      case 'linf':
        return maxPerExample(tf.abs(d));
      case 'l1':
        return sumPerExample(tf.abs(d));
      default:
        return tf.sqrt(sumPerExample(tf.square(d))) as tf.Tensor1D;
    }
  });
}

/**
 * ρ(d) per example (≤ 0), eq. 8. `base` is the layer input f(·) (for ℓ = 0 the
 * clean input x); it is only needed when the penalty has a box, since the box
 * constrains the neurons n = base + d.
 */
export function penaltyValue(config: PenaltyConfig, d: tf.Tensor, base?: tf.Tensor): tf.Tensor1D {
  return tf.tidy(() => {
    let rho: tf.Tensor1D;
    if (config.kind === 'quadratic') {
      rho = tf.mul(-config.lambda, sumPerExample(tf.square(d)));
    } else {
      const lambda = config.lambda ?? DEFAULT_CONSTRAINT_LAMBDA;
      const eps = config.epsilon;
      let excess: tf.Tensor;
      if (config.kind === 'linf') {
        excess = sumPerExample(tf.square(tf.relu(tf.sub(tf.abs(d), eps))));
      } else if (config.kind === 'l2') {
        // sqrt is not differentiable at 0; the tiny floor keeps the gradient finite at d = 0.
        const norm = tf.sqrt(tf.add(sumPerExample(tf.square(d)), 1e-20));
        excess = tf.square(tf.relu(tf.sub(norm, eps)));
      } else {
        excess = tf.square(tf.relu(tf.sub(sumPerExample(tf.abs(d)), eps)));
      }
      rho = tf.mul(-lambda, excess);
    }
    if (config.box) {
      if (!base) throw new Error('penaltyValue: a box penalty needs the layer input (base).');
      const n = tf.add(base, d);
      const [lo, hi] = config.box;
      const boxLambda = config.boxLambda ?? DEFAULT_CONSTRAINT_LAMBDA;
      const out = tf.add(tf.square(tf.relu(tf.sub(lo, n))), tf.square(tf.relu(tf.sub(n, hi))));
      rho = tf.sub(rho, tf.mul(boxLambda, sumPerExample(out)));
    }
    return rho;
  });
}

/**
 * Per-example constraint violation of d (≥ 0): how far d lies outside its
 * ball, and n = base + d outside its box (the larger of the two). 0 for a
 * quadratic penalty without a box.
 */
export function violationPerExample(config: PenaltyConfig, d: tf.Tensor, base?: tf.Tensor): tf.Tensor1D {
  return tf.tidy(() => {
    let v: tf.Tensor1D =
      config.kind === 'quadratic' ? tf.zeros([d.shape[0]]) : (tf.relu(tf.sub(normPerExample(d, config.kind), config.epsilon)) as tf.Tensor1D);
    if (config.box && base) {
      const n = tf.add(base, d);
      const [lo, hi] = config.box;
      const out = maxPerExample(tf.maximum(tf.relu(tf.sub(lo, n)), tf.relu(tf.sub(n, hi))));
      v = tf.maximum(v, out) as tf.Tensor1D;
    }
    return v;
  });
}

/** Euclidean projection of each example's row onto the L1 ball of radius eps (Duchi et al., 2008). */
function projectL1(d: tf.Tensor, eps: number): tf.Tensor {
  return tf.tidy(() => {
    const batch = d.shape[0];
    const flat = tf.reshape(d, [batch, -1]) as tf.Tensor2D;
    const n = flat.shape[1];
    const a = tf.abs(flat);
    const inside = tf.lessEqual(tf.sum(a, 1), eps); // [B]
    if (eps === 0) return tf.zerosLike(d);
    const sorted = tf.topk(a, n, true).values; // descending
    const cums = tf.cumsum(sorted, 1);
    const ks = tf.range(1, n + 1, 1, 'float32');
    // θ_k = (cumsum_k − ε)/k; ρ = max{k : sorted_k > θ_k}
    const thetas = tf.div(tf.sub(cums, eps), ks);
    const cond = tf.cast(tf.greater(sorted, thetas), 'float32');
    const rhoIdx = tf.sub(tf.sum(cond, 1), 1); // number of true − 1 (cond is a prefix)
    const theta = tf.gather(thetas, tf.cast(tf.maximum(rhoIdx, 0), 'int32'), 1, 1) as tf.Tensor1D; // [B]
    const shrunk = tf.mul(tf.sign(flat), tf.relu(tf.sub(a, tf.expandDims(theta, 1))));
    const projected = tf.where(tf.expandDims(inside, 1), flat, shrunk);
    return tf.reshape(projected, d.shape);
  });
}

/**
 * Exact projection of d onto the penalty's ball, then of n = base + d onto the
 * box (when given). When base lies inside the box, clipping n only moves each
 * coordinate of d towards 0, so the result lies in both sets. Quadratic
 * penalties have no ball; only their box is applied.
 */
export function projectDisturbance(config: PenaltyConfig, d: tf.Tensor, base?: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    let p: tf.Tensor = d;
    if (config.kind === 'linf') {
      p = tf.clipByValue(d, -config.epsilon, config.epsilon);
    } else if (config.kind === 'l2') {
      const norm = tf.sqrt(sumPerExample(tf.square(d)));
      const scale = tf.minimum(1, tf.div(config.epsilon, tf.maximum(norm, 1e-12)));
      p = tf.mul(d, tf.reshape(scale, [d.shape[0], ...d.shape.slice(1).map(() => 1)]));
    } else if (config.kind === 'l1') {
      p = projectL1(d, config.epsilon);
    }
    if (config.box && base) {
      const [lo, hi] = config.box;
      p = tf.sub(tf.clipByValue(tf.add(base, p), lo, hi), base);
    }
    return p === d ? tf.clone(d) : p;
  });
}
