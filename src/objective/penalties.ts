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
import {expandAs, maxPerExample, select, sumPerExample} from '../solvers/batched.js';
import {linfBoxDirectionKernel, linfBoxPenaltyKernel, penaltyTermsKernel, type PenaltyTermsLayer, simdKernelsAvailable} from '../kernels/simd.js';
import {rowKernelsAvailable, rowsFiniteKernel} from '../kernels/rows.js';

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
  /** λ > 0 (0, negative or non-finite values are refused); larger means smaller disturbances. */
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
  /** λ > 0 of the relu² approximation; defaults to {@link DEFAULT_CONSTRAINT_LAMBDA}. */
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

function checkNumber(value: unknown, field: string, where: string, positive = false): number {
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    throw new Error(`${where}: penalty field '${field}' must be a finite number, got ${String(value)}.`);
  }
  if (positive && !(value > 0)) {
    throw new Error(
      `${where}: penalty field '${field}' must be > 0, got ${value}: with ${field} = 0 nothing bounds the disturbance ` +
        `(the attack would only stop at the loss's clip ceiling). Use a small positive value for a weak penalty, ` +
        `or switch the layer off (penalty null).`,
    );
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
    const out: QuadraticPenalty = {kind, lambda: checkNumber(c.lambda, 'lambda', where, true)};
    if (box) {
      out.box = box;
      out.boxLambda = c.boxLambda === undefined ? DEFAULT_CONSTRAINT_LAMBDA : checkNumber(c.boxLambda, 'boxLambda', where, true);
    }
    return out;
  }
  const lambda = c.lambda === undefined ? DEFAULT_CONSTRAINT_LAMBDA : checkNumber(c.lambda, 'lambda', where, true);
  const out: NormBallPenalty = {kind: kind as NormBallPenalty['kind'], epsilon: checkNumber(c.epsilon, 'epsilon', where), lambda};
  if (box) {
    out.box = box;
    out.boxLambda = c.boxLambda === undefined ? lambda : checkNumber(c.boxLambda, 'boxLambda', where, true);
  }
  return out;
}

export {sumPerExample};

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
  return penaltyValueImpl(config, d, base, false);
}

/**
 * {@link penaltyValue}; with `clipForm` (for untaped use) the L∞ and box excesses are computed as
 * d − clip(d, −ε, ε) and n − clip(n, lo, hi), whose squares equal relu(|d| − ε)² and
 * relu(lo − n)² + relu(n − hi)² bit for bit (lo ≤ hi) with 5 fewer kernels; the relu form is kept
 * under a tape, where clip's gradient costs wasm's slow comparisons.
 */
function penaltyValueImpl(config: PenaltyConfig, d: tf.Tensor, base: tf.Tensor | undefined, clipForm: boolean): tf.Tensor1D {
  return tf.tidy(() => {
    let rho: tf.Tensor1D;
    if (config.kind === 'quadratic') {
      rho = tf.mul(-config.lambda, sumPerExample(tf.square(d)));
    } else {
      const lambda = config.lambda ?? DEFAULT_CONSTRAINT_LAMBDA;
      const eps = config.epsilon;
      let excess: tf.Tensor;
      if (config.kind === 'linf') {
        excess = sumPerExample(tf.square(clipForm ? tf.sub(d, tf.clipByValue(d, -eps, eps)) : tf.relu(tf.sub(tf.abs(d), eps))));
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
      const out = clipForm
        ? tf.square(tf.sub(n, tf.clipByValue(n, lo, hi)))
        : tf.add(tf.square(tf.relu(tf.sub(lo, n))), tf.square(tf.relu(tf.sub(n, hi))));
      rho = tf.sub(rho, tf.mul(boxLambda, sumPerExample(out)));
    }
    return rho;
  });
}

/**
 * ρ(d) per example as {@link penaltyValue}, for use inside a gradient tape, with its gradient
 * w.r.t. `d` given analytically ({@link penaltyGradient}) instead of taped: the value's kernels
 * run once with the tape off (same values, bit for bit), and backpropagation runs the handful of
 * kernels of ∂ρ/∂d instead of the gradients of every kernel of ρ (and the copies the tape keeps of
 * their inputs). (Fused JavaScript kernels for the value and gradient were tried and measured
 * slower than these tfjs ops on wasm.) For `quadratic` and `linf` penalties (with or without box); the others are
 * taped as usual. `base` must be a constant of the tape (e.g. the model input): no gradient flows
 * to it. `d` must stay alive until the gradient is computed.
 */
export function penaltyValueAnalyticGrad(config: PenaltyConfig, d: tf.Tensor, base?: tf.Tensor): tf.Tensor1D {
  if (config.kind !== 'quadratic' && config.kind !== 'linf') return penaltyValue(config, d, base);
  if (config.box && !base) throw new Error('penaltyValue: a box penalty needs the layer input (base).');
  const f = tf.customGrad(((x: tf.Tensor) => ({
    value: penaltyValueImpl(config, x, base, true),
    gradFunc: (dy: tf.Tensor) => tf.tidy(() => tf.mul(penaltyGradient(config, d, base), expandAs(dy, d))),
  })) as unknown as Parameters<typeof tf.customGrad>[0]);
  return f(d) as tf.Tensor1D;
}

/** The excesses of an L∞ penalty (and of its box) at d, shared by its value, gradient and search direction. */
export interface PenaltyExcess {
  /** d − clip(d, −ε, ε) (= sign(d)·relu(|d| − ε)). */
  ball: tf.Tensor;
  /** clip(n, lo, hi) − n, n = base + d (= relu(lo − n) − relu(n − hi)); with a box only. */
  box?: tf.Tensor;
}

/** Whether {@link penaltyValueAndGradient} applies: quadratic or L∞, and the layer input given when there is a box. */
export function hasAnalyticGradient(config: PenaltyConfig, base?: tf.Tensor): boolean {
  return (config.kind === 'quadratic' || config.kind === 'linf') && (!config.box || base != null);
}

/**
 * ρ(d) per example and ∂ρ/∂d, untaped, for the solvers' split evaluation (`SplitObjective`):
 * the same values, bit for bit, as {@link penaltyValue} (its clip form) and
 * {@link penaltyGradient}, with the excesses d − clip(d, −ε, ε) and clip(n, lo, hi) − n computed
 * once for both ((clip(n) − n)² = (n − clip(n))² bit for bit). For `linf`, the excesses are
 * returned too, for {@link LinearisedDirection.direction} at the same d. Quadratic and L∞ penalties only (see
 * {@link hasAnalyticGradient}); `base` is the layer input, a constant.
 */
export function penaltyValueAndGradient(config: PenaltyConfig, d: tf.Tensor, base?: tf.Tensor): {value: tf.Tensor1D; grad: tf.Tensor; excess?: PenaltyExcess} {
  if (!hasAnalyticGradient(config, base)) {
    throw new Error(`penaltyValueAndGradient: needs a quadratic or linf penalty (and the layer input for a box), got ${JSON.stringify(config)}`);
  }
  return tf.tidy(() => {
    let value: tf.Tensor1D;
    let grad: tf.Tensor;
    let ball: tf.Tensor | undefined;
    if (config.kind === 'quadratic') {
      value = tf.mul(-config.lambda, sumPerExample(tf.square(d)));
      grad = tf.mul(-2 * config.lambda, d);
    } else if (
      config.box &&
      base &&
      d.dtype === 'float32' &&
      base.dtype === 'float32' &&
      tf.util.arraysEqual(d.shape, base.shape) &&
      d.size % 4 === 0 &&
      simdKernelsAvailable()
    ) {
      // the same elementwise operations in one SIMD pass on wasm (src/kernels/simd.ts), bit for bit
      const lambda = config.lambda ?? DEFAULT_CONSTRAINT_LAMBDA;
      const boxLambda = config.boxLambda ?? DEFAULT_CONSTRAINT_LAMBDA;
      const [lo, hi] = config.box;
      const [b, x, gr, b2, x2] = linfBoxPenaltyKernel(d, base, {epsilon: config.epsilon, lo, hi, lambda, boxLambda});
      value = tf.sub(tf.mul(-lambda, sumPerExample(b2)), tf.mul(boxLambda, sumPerExample(x2)));
      return {value, grad: gr, excess: {ball: b, box: x}};
    } else {
      const lambda = (config as NormBallPenalty).lambda ?? DEFAULT_CONSTRAINT_LAMBDA;
      const eps = (config as NormBallPenalty).epsilon;
      ball = tf.sub(d, tf.clipByValue(d, -eps, eps));
      value = tf.mul(-lambda, sumPerExample(tf.square(ball)));
      grad = tf.mul(-2 * lambda, ball);
    }
    let box: tf.Tensor | undefined;
    if (config.box && base) {
      const [lo, hi] = config.box;
      const boxLambda = config.boxLambda ?? DEFAULT_CONSTRAINT_LAMBDA;
      const n = tf.add(base, d);
      box = tf.sub(tf.clipByValue(n, lo, hi), n);
      value = tf.sub(value, tf.mul(boxLambda, sumPerExample(tf.square(box))));
      grad = tf.add(grad, tf.mul(2 * boxLambda, box));
    }
    return ball ? {value, grad, excess: box ? {ball, box} : {ball}} : {value, grad};
  });
}

/**
 * J = c + Σℓ ρℓ(dℓ) per example and the full gradients (`taped[ℓ]` + ∂ρℓ/∂dℓ) of a split
 * evaluation in one fused SIMD kernel on wasm (`penaltyTermsKernel`), with the excesses of the L∞
 * layers whose direction is not fused (`directions[ℓ].fusable`) and the fused directions: the same
 * values, bit for bit, as {@link penaltyValueAndGradient} per layer (added to c in
 * layer order) followed by the additions of the solvers' `evaluate`. With `options.stats`, also the
 * solvers' read-back [J, finiteness flags, ‖g‖²] (see `penaltyTermsKernel`). Null (the caller then uses those
 * ops) unless the kernel applies: SIMD kernels available (wasm, no tape), c float32 [B], every
 * penalty quadratic without box or L∞ with a box and its layer input `bases[ℓ]` given, every d
 * (base, taped gradient) float32 [B, ...] of one shape with rows of a multiple of 4 entries.
 */
export function penaltyTermsFused(
  c: tf.Tensor1D,
  penalties: PenaltyConfig[],
  ds: tf.Tensor[],
  bases: (tf.Tensor | undefined)[],
  taped: (tf.Tensor | null)[],
  directions: (LinearisedDirection | undefined)[] = [],
  options: {stats?: boolean} = {},
): {value: tf.Tensor1D; grads: tf.Tensor[]; excess: (PenaltyExcess | undefined)[]; directions: (tf.Tensor | undefined)[]; stats?: tf.Tensor1D} | null {
  const B = c.shape[0];
  if (c.dtype !== 'float32' || c.rank !== 1 || ds.length !== penalties.length || ds.length === 0) return null;
  const layers: PenaltyTermsLayer[] = [];
  for (let i = 0; i < ds.length; i++) {
    const d = ds[i];
    const p = penalties[i];
    const g = taped[i] ?? null;
    const m = d.rank >= 2 ? d.size / B : 0;
    if (d.dtype !== 'float32' || d.rank < 2 || d.shape[0] !== B || m === 0 || m % 4 !== 0) return null;
    if (g != null && (g.dtype !== 'float32' || !tf.util.arraysEqual(g.shape, d.shape))) return null;
    const fusable = directions[i]?.fusable;
    if (p.kind === 'quadratic' && !p.box) {
      layers.push({kind: 'quadratic', d, taped: g, lambda: p.lambda, direction: fusable && !fusable.linfBox ? {twoLambda: fusable.twoLambda} : undefined});
      continue;
    }
    const base = bases[i];
    if (p.kind !== 'linf' || !p.box || base == null || base.dtype !== 'float32' || !tf.util.arraysEqual(base.shape, d.shape)) return null;
    // the kernel clips as the wasm ClipByValue does for lo < hi; tfjs fills a clip(d, −0, 0) with −0 instead
    if (!(p.epsilon > 0)) return null;
    layers.push({
      kind: 'linfBox',
      d,
      base,
      taped: g,
      epsilon: p.epsilon,
      lo: p.box[0],
      hi: p.box[1],
      lambda: p.lambda ?? DEFAULT_CONSTRAINT_LAMBDA,
      boxLambda: p.boxLambda ?? DEFAULT_CONSTRAINT_LAMBDA,
      // (the kernel computes the direction's constants from this base: the one it was built with)
      direction: fusable?.linfBox === base ? {twoLambda: fusable.twoLambda} : undefined,
    });
  }
  if (!simdKernelsAvailable()) return null;
  return penaltyTermsKernel(c, layers, options);
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
      // max(relu(lo − n), relu(n − hi)) as a sum (at most one is > 0 since lo ≤ hi; wasm's Maximum is slow)
      const out = maxPerExample(tf.add(tf.relu(tf.sub(lo, n)), tf.relu(tf.sub(n, hi))));
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
    const projected = select(tf.expandDims(inside, 1), flat, shrunk);
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
      p = tf.mul(d, expandAs(scale, d));
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

/**
 * ∂ρ/∂d per coordinate, the partial derivative at fixed layer input (the sign convention of ρ:
 * ≤ 0 curvature, so this pulls d back into its ball/box). `base` (the layer input) is needed for
 * the box term; without it the box term is left out (callers then treat it as part of the smooth
 * remainder, whose gradient comes from backpropagation).
 */
export function penaltyGradient(config: PenaltyConfig, d: tf.Tensor, base?: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    let g: tf.Tensor;
    if (config.kind === 'quadratic') {
      g = tf.mul(-2 * config.lambda, d);
    } else {
      const lambda = config.lambda ?? DEFAULT_CONSTRAINT_LAMBDA;
      const eps = config.epsilon;
      if (config.kind === 'linf') {
        // sign(d)·relu(|d| − ε) = d − clip(d, −ε, ε), bit for bit (and without wasm's slow Sign)
        g = tf.mul(-2 * lambda, tf.sub(d, tf.clipByValue(d, -eps, eps)));
      } else if (config.kind === 'l2') {
        const norm = tf.sqrt(tf.add(sumPerExample(tf.square(d)), 1e-20));
        const f = tf.div(tf.mul(-2 * lambda, tf.relu(tf.sub(norm, eps))), norm);
        g = tf.mul(d, expandAs(f, d));
      } else {
        const f = tf.mul(-2 * lambda, tf.relu(tf.sub(sumPerExample(tf.abs(d)), eps)));
        g = tf.mul(tf.sign(d), expandAs(f, d));
      }
    }
    if (config.box && base) {
      const n = tf.add(base, d);
      const [lo, hi] = config.box;
      const lb = 2 * (config.boxLambda ?? DEFAULT_CONSTRAINT_LAMBDA);
      // relu(lo − n) − relu(n − hi) = clip(n, lo, hi) − n, bit for bit
      g = tf.add(g, tf.mul(lb, tf.sub(tf.clipByValue(n, lo, hi), n)));
    }
    return g;
  });
}

/**
 * The maximiser u of the linearised objective gᵀu + ρ(u), per example: where the deep attack's
 * disturbance-space solver aims (its search direction is u − d). `g` is the gradient of the rest
 * of the objective (the loss) w.r.t. d. Exact, coordinate by coordinate, for:
 * - `quadratic`: u = g / (2λ); with a box (and `base`), the piecewise-quadratic maximiser that
 *   lets n = base + u exceed the box by g/(2(λ + λ_box)) scaled accordingly;
 * - `linf`: u = ±(ε + |g|/(2λ)) — the corner of the ball plus the overshoot the soft penalty
 *   allows; with a box (and `base`, assumed inside the box), the kink at the box edge too.
 *   Coordinates with g = 0 keep d;
 * - `l2`: u = (ε + ‖g‖/(2λ))·g/‖g‖; with a box (and `base`), g restricted to the coordinates that
 *   can move along it (not at the box edge it points past) and u clipped to the box;
 * - `l1`: no closed form used: u = d + (g + ∂ρ/∂d)/(2λ), a preconditioned gradient step.
 * This is, for a quadratic penalty, exactly the preconditioned fixed point d = ∇_d c / (2λ).
 */
export function linearisedMaximiser(config: PenaltyConfig, g: tf.Tensor, d: tf.Tensor, base?: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const box = base ? config.box : undefined;
    const lb = config.boxLambda ?? DEFAULT_CONSTRAINT_LAMBDA;
    if (config.kind === 'quadratic') {
      const lam = config.lambda;
      const u = tf.div(g, 2 * lam);
      if (!box || !base) return u;
      const [lo, hi] = box;
      const n = tf.add(base, u);
      const above = tf.div(tf.add(g, tf.mul(2 * lb, tf.sub(hi, base))), 2 * (lam + lb));
      const below = tf.div(tf.add(g, tf.mul(2 * lb, tf.sub(lo, base))), 2 * (lam + lb));
      return select(tf.greater(n, hi), above, select(tf.less(n, lo), below, u));
    }
    const lam = config.lambda ?? DEFAULT_CONSTRAINT_LAMBDA;
    const eps = config.epsilon;
    if (config.kind === 'linf') {
      const pos = tf.greater(g, 0);
      const ag = tf.abs(g);
      let v: tf.Tensor;
      if (box && base) {
        const [lo, hi] = box;
        // kink of the box along the sign of g (clamped at 0 when base lies outside the box)
        const bk = tf.relu(select(pos, tf.sub(hi, base), tf.sub(base, lo)));
        const k1 = tf.minimum(bk, eps);
        const k2 = tf.maximum(bk, eps);
        if (lb === lam) {
          // equal curvatures (the default): fewer kernels
          const v1 = tf.add(k1, tf.div(ag, 2 * lam));
          v = tf.minimum(v1, tf.mul(0.5, tf.add(v1, k2)));
        } else {
          const boxFirst = tf.less(bk, eps);
          const l1 = select(boxFirst, tf.fill(g.shape, lb), tf.fill(g.shape, lam));
          const l2 = select(boxFirst, tf.fill(g.shape, lam), tf.fill(g.shape, lb));
          const v1 = tf.add(k1, tf.div(ag, tf.mul(2, l1)));
          const v2 = tf.div(tf.add(ag, tf.add(tf.mul(tf.mul(2, l1), k1), tf.mul(tf.mul(2, l2), k2))), tf.mul(2, tf.add(l1, l2)));
          v = select(tf.lessEqual(v1, k2), v1, v2);
        }
      } else {
        v = tf.add(eps, tf.div(ag, 2 * lam));
      }
      return select(tf.equal(g, 0), d, select(pos, v, tf.neg(v)));
    }
    if (config.kind === 'l2') {
      // With a box, coordinates that cannot move along g (base already at the edge g points past)
      // take no share of the radius, and the step is clipped to the box: without this the budget
      // went mostly to MNIST's saturated pixels, every step was rejected by the box penalty, and the
      // attack barely moved (96.5 % accuracy left where PGD-L2 leaves 3.5 %).
      const gm = box && base ? tf.mul(g, tf.add(tf.mul(tf.step(g), tf.step(tf.sub(box[1], base))), tf.mul(tf.step(tf.neg(g)), tf.step(tf.sub(base, box[0]))))) : g;
      const norm = tf.sqrt(sumPerExample(tf.square(gm)));
      const len = tf.add(eps, tf.div(norm, 2 * lam));
      let u = tf.mul(gm, expandAs(tf.div(len, tf.maximum(norm, 1e-30)), gm));
      if (box && base) u = tf.sub(tf.clipByValue(tf.add(base, u), box[0], box[1]), base);
      return select(tf.equal(expandAs(norm, g), 0), d, u);
    }
    return tf.add(d, tf.div(tf.add(g, penaltyGradient(config, d)), 2 * lam));
  });
}

/** A per-layer search direction with its constants precomputed (see {@link linearisedDirection}). */
export interface LinearisedDirection {
  /**
   * T(d) − d for the full gradient `g` of eq. 9 w.r.t. d (penalty included). Call inside a tidy.
   * `excess`: the penalty's excesses at this d, when already computed (by
   * {@link penaltyValueAndGradient}); same result.
   */
  direction(g: tf.Tensor, d: tf.Tensor, excess?: PenaltyExcess): tf.Tensor;
  /** Frees the precomputed constants. */
  dispose(): void;
  /**
   * When a fused evaluation (`penaltyTermsFused`) can compute this direction itself, bit for bit:
   * 2λ of the quadratic direction g/(2λ), or 2λ of the equal-curvature L∞ + box direction and
   * (`linfBox`) the layer input it was built with, whose constants the kernel computes from it
   * (only when that input is finite). Undefined otherwise.
   */
  fusable?: {twoLambda: number; linfBox?: tf.Tensor};
}

/** Every entry of `t` (float32 [B, ...]) finite: one row kernel and a read-back of B flags. */
function allFinite(t: tf.Tensor): boolean {
  if (!rowKernelsAvailable()) return tf.tidy(() => tf.all(tf.isFinite(t)).dataSync()[0] === 1);
  const f = rowsFiniteKernel([t]);
  const v = f.dataSync();
  f.dispose();
  return v.every((x) => x === 1);
}

/**
 * The deep attack's disturbance-space direction for one layer, T(d) − d with T =
 * {@link linearisedMaximiser} applied to the loss gradient gc = g − ∂ρ/∂d (the penalty's own
 * partial derivative, box included when `base` is given, is taken out of the full gradient g).
 *
 * Same values as `linearisedMaximiser(config, g − penaltyGradient(config, d, base), d, base) − d`
 * (bit for bit on the paths below), with fewer kernels per call: the terms that depend only on the
 * fixed layer input `base` (the box kinks hi − base, base − lo clamped and compared with ε) are
 * computed once, and for `linf` the penalty derivative uses d − clip(d, −ε, ε) and clip(n, lo, hi) − n
 * (equal to sign(d)·relu(|d| − ε) and relu(lo − n) − relu(n − hi)). `base` must stay alive while
 * the direction is used.
 */
export function linearisedDirection(config: PenaltyConfig, base?: tf.Tensor): LinearisedDirection {
  const none = {dispose: () => undefined};
  if (config.kind === 'quadratic' && !config.box) {
    // T − d = (g + 2λd)/(2λ) − d = g/(2λ), the preconditioned gradient
    const lam2 = 2 * config.lambda;
    return {...none, direction: (g) => tf.div(g, lam2), fusable: {twoLambda: lam2}};
  }
  const box = base ? config.box : undefined;
  const lb = config.boxLambda ?? DEFAULT_CONSTRAINT_LAMBDA;
  if (config.kind === 'linf' && box && base && lb === (config.lambda ?? DEFAULT_CONSTRAINT_LAMBDA)) {
    const lam = lb;
    const eps = config.epsilon;
    const [lo, hi] = box;
    // kinks of the box along +g and −g (clamped at 0 when base lies outside the box), and their
    // order against ε: constant while base is fixed; computed on first use (a fused evaluation
    // computes them itself), kept out of the caller's tidy until `dispose`
    let k: tf.Tensor[] | null = null;
    const constants = (): tf.Tensor[] => {
      if (k == null) {
        k = tf.tidy(() => {
          const up = tf.relu(tf.sub(hi, base));
          const down = tf.relu(tf.sub(base, lo));
          // min/max with ε as clips (same values; wasm's Minimum/Maximum with a broadcast scalar take ≈1 ms on 128×784)
          return [tf.clipByValue(up, 0, eps), tf.clipByValue(down, 0, eps), tf.clipByValue(up, eps, Infinity), tf.clipByValue(down, eps, Infinity)];
        });
        k.forEach((t) => tf.keep(t));
      }
      return k;
    };
    // the fused evaluation's kernel computes the constants from base as above (same float32 values
    // where base is finite; with a non-finite entry it is not offered)
    // (and finite box bounds and ε > 0: then every value is finite wherever the gradient is, and its
    // relu/clip steps can use the kernel's single-instruction pmin/pmax)
    const fusable =
      simdKernelsAvailable() && eps > 0 && Number.isFinite(lo) && Number.isFinite(hi) && base.dtype === 'float32' && base.rank >= 2 && base.size % 4 === 0 && allFinite(base)
        ? {twoLambda: 2 * lam, linfBox: base}
        : undefined;
    return {
      direction: (g, d, excess) => {
        if (
          g.dtype === 'float32' &&
          d.dtype === 'float32' &&
          tf.util.arraysEqual(g.shape, d.shape) &&
          tf.util.arraysEqual(d.shape, base.shape) &&
          d.size % 4 === 0 &&
          simdKernelsAvailable()
        ) {
          // the same operations as below in one SIMD pass on wasm (src/kernels/simd.ts), bit for bit
          const fresh = excess?.box && !excess.ball.isDisposed && !excess.box.isDisposed;
          const A = fresh ? (excess as PenaltyExcess).ball : tf.sub(d, tf.clipByValue(d, -eps, eps));
          let C = fresh ? (excess as PenaltyExcess).box : undefined;
          if (C == null) {
            const n = tf.add(base, d);
            C = tf.sub(tf.clipByValue(n, lo, hi), n);
          }
          const [k1Up, k1Down, k2Up, k2Down] = constants();
          return linfBoxDirectionKernel(g, d, A, C, {k1Up, k1Down, k2Up, k2Down}, 2 * lam);
        }
        // Only kernels that are fast on every backend (add/mul/clip/relu/step/abs): on wasm the
        // comparisons, Minimum, Select and a float→bool Cast are scalar loops, 10–40× slower than
        // an Add on the 784-wide input. Same values as the select form up to float32 rounding.
        // ∂ρ/∂d = −2λ·sign(d)·relu(|d| − ε) + 2λ_box·(relu(lo − n) − relu(n − hi)), n = base + d,
        // = −2λ·((d − clip(d, −ε, ε)) + (n − clip(n, lo, hi))) since λ_box = λ here
        let out: tf.Tensor;
        if (excess?.box && !excess.ball.isDisposed && !excess.box.isDisposed) {
          // (d − clip(d)) − (clip(n) − n): the same bits as the sum below (a float difference
          // negates exactly, and d − clip(d) is never −0, so no signed zero differs)
          out = tf.sub(excess.ball, excess.box);
        } else {
          const n = tf.add(base, d);
          out = tf.add(tf.sub(d, tf.clipByValue(d, -eps, eps)), tf.sub(n, tf.clipByValue(n, lo, hi)));
        }
        const gc = tf.add(g, tf.mul(2 * lam, out));
        // indicators of gc > 0 and gc < 0 (both 0 where gc = 0: there T(d) = d)
        const up = tf.step(gc);
        const down = tf.step(tf.neg(gc));
        const [k1Up, k1Down, k2Up, k2Down] = constants();
        const k1 = tf.add(tf.mul(up, k1Up), tf.mul(down, k1Down));
        const k2 = tf.add(tf.mul(up, k2Up), tf.mul(down, k2Down));
        const v1 = tf.add(k1, tf.div(tf.abs(gc), 2 * lam));
        // min(v1, (v1 + k2)/2) = v1 − relu(v1 − k2)/2
        const v = tf.sub(v1, tf.mul(0.5, tf.relu(tf.sub(v1, k2))));
        // T(d) − d = ±v − d where gc ≠ 0, else 0
        return tf.sub(tf.mul(tf.sub(up, down), v), tf.mul(tf.add(up, down), d));
      },
      dispose: () => {
        if (k) tf.dispose(k);
        k = null;
      },
      fusable,
    };
  }
  return {
    ...none,
    direction: (g, d) => tf.sub(linearisedMaximiser(config, tf.sub(g, penaltyGradient(config, d, base)), d, base), d),
  };
}
