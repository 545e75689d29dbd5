/**
 * Threat-model geometry shared by the input attacks: per-example norms,
 * projection onto the ε-ball ∩ clip box, seeded random starts, and an exact
 * final check that every returned point lies inside the ball and the box in
 * float32 (rounding of x + δ can otherwise overshoot ε by one ulp).
 *
 * @packageDocumentation
 */
import * as tf from '@tensorflow/tfjs-core';
import {expandAs, normPerRow} from '../solvers/batched.js';

/** Norm of an input threat model. */
export type InputNorm = 'linf' | 'l2';

/** Per-example L2 norm of a `[B, ...]` tensor, shaped `[B, 1, …, 1]`. */
export function exampleNorm(t: tf.Tensor): tf.Tensor {
  return expandAs(normPerRow(t), t);
}

/** `v [B]` reshaped to broadcast against `t [B, ...]`. */
export function perExample(v: tf.Tensor, t: tf.Tensor): tf.Tensor {
  return expandAs(v, t);
}

/** Projection of `adv` onto the ε-ball around `x` (per example), then onto the clip box. */
export function projectBall(adv: tf.Tensor, x: tf.Tensor, norm: InputNorm, epsilon: number, clip?: [number, number]): tf.Tensor {
  return tf.tidy(() => {
    let delta = tf.sub(adv, x);
    if (norm === 'linf') delta = tf.clipByValue(delta, -epsilon, epsilon);
    else delta = tf.mul(delta, tf.minimum(1, tf.div(epsilon, tf.maximum(exampleNorm(delta), 1e-12))));
    let out = tf.add(x, delta);
    if (clip) out = tf.clipByValue(out, clip[0], clip[1]);
    return out;
  });
}

/** Steepest-ascent direction: sign(g) for L∞, g/‖g‖₂ per example for L2. */
export function ascentDirection(g: tf.Tensor, norm: InputNorm): tf.Tensor {
  return tf.tidy(() => (norm === 'linf' ? tf.sign(g) : tf.div(g, tf.maximum(exampleNorm(g), 1e-12))));
}

/** 32-bit seed from a user seed and indices (FNV-1a over the decimal spellings); undefined stays undefined. */
export function deriveSeed(seed: number | undefined, ...idx: (number | string)[]): number | undefined {
  if (seed === undefined) return undefined;
  const s = [seed, ...idx].join('/');
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

/** A small seeded PRNG (mulberry32) for the JS-side randomness of the score-based attacks. */
export function prng(seed: number | undefined): () => number {
  let a = (seed ?? Math.floor(Math.random() * 2 ** 32)) >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Random start of APGD (Croce & Hein): L∞ — x + ε·t/‖t‖∞ with t uniform in
 * [−1, 1]ⁿ (so one coordinate sits on the boundary); L2 — x + ε·g/‖g‖₂ with g
 * Gaussian (on the sphere). Then the clip box.
 */
export function apgdStart(x: tf.Tensor, norm: InputNorm, epsilon: number, clip: [number, number] | undefined, seed: number | undefined): tf.Tensor {
  return tf.tidy(() => {
    const b = x.shape[0];
    let t: tf.Tensor;
    if (norm === 'linf') {
      t = tf.randomUniform(x.shape, -1, 1, 'float32', seed);
      const m = perExample(tf.max(tf.abs(tf.reshape(t, [b, -1])), 1), x);
      t = tf.div(t, tf.maximum(m, 1e-12));
    } else {
      t = tf.randomNormal(x.shape, 0, 1, 'float32', seed);
      t = tf.div(t, tf.maximum(exampleNorm(t), 1e-12));
    }
    return projectBall(tf.add(x, tf.mul(epsilon, t)), x, norm, epsilon, clip);
  });
}

function nextToward(v: number, target: number): number {
  // The float32 neighbour of v in the direction of target.
  const buf = new Float32Array([v]);
  const bits = new Int32Array(buf.buffer);
  if (v === target) return v;
  if (v === 0) {
    bits[0] = 1;
    return target > 0 ? buf[0] : -buf[0];
  }
  if (v < target === v > 0) bits[0] += 1;
  else bits[0] -= 1;
  return buf[0];
}

/**
 * Makes the points `adv` (float32 values, row-major `[B, d]`) lie exactly inside
 * the ε-ball around `x` and the clip box, as checked in double precision on
 * the float32 values: coordinates are clamped and nudged by one ulp where
 * rounding overshot; an L2 row whose norm exceeds ε is scaled down (by a factor
 * a little below ε/‖δ‖) until it does not. Returns the number of rows changed by
 * more than rounding (should be 0 for a correct attack; counted for tests).
 */
export function enforceBall(adv: Float32Array, x: Float32Array | Int32Array | Uint8Array, rows: number, norm: InputNorm, epsilon: number, clip?: [number, number]): number {
  const d = rows === 0 ? 0 : adv.length / rows;
  let changed = 0;
  const lo = clip ? clip[0] : -Infinity;
  const hi = clip ? clip[1] : Infinity;
  for (let r = 0; r < rows; r++) {
    const o = r * d;
    let rowChanged = false;
    if (norm === 'linf') {
      for (let i = o; i < o + d; i++) {
        const xi = x[i];
        const a = Math.max(xi - epsilon, lo);
        const b = Math.min(xi + epsilon, hi);
        let v = adv[i];
        if (Number.isNaN(v)) v = xi;
        if (v < a - 1e-6 || v > b + 1e-6) rowChanged = true;
        v = Math.min(Math.max(v, a), b);
        let f = Math.fround(v);
        while (f > b && f > xi) f = nextToward(f, xi);
        while (f < a && f < xi) f = nextToward(f, xi);
        adv[i] = f;
      }
    } else {
      for (let i = o; i < o + d; i++) {
        let v = adv[i];
        if (Number.isNaN(v)) v = x[i];
        const c = Math.fround(Math.min(Math.max(v, lo), hi));
        if (c !== adv[i]) rowChanged = true;
        adv[i] = c;
      }
      for (let attempt = 0; attempt < 60; attempt++) {
        let s = 0;
        for (let i = o; i < o + d; i++) s += (adv[i] - x[i]) ** 2;
        const n = Math.sqrt(s);
        if (n <= epsilon) break;
        if (n > epsilon * (1 + 1e-5)) rowChanged = true;
        const f = (epsilon / n) * (1 - 1e-6 * 2 ** attempt);
        // Shrinking towards x keeps every coordinate inside the box (x is inside it).
        for (let i = o; i < o + d; i++) adv[i] = Math.fround(x[i] + (adv[i] - x[i]) * f);
      }
    }
    if (rowChanged) changed++;
  }
  return changed;
}

/** Largest per-example distance ‖adv − x‖ (L∞ or L2) in double precision over float32 values. */
export function maxDistance(adv: ArrayLike<number>, x: ArrayLike<number>, rows: number, norm: InputNorm): number {
  const d = rows === 0 ? 0 : adv.length / rows;
  let worst = 0;
  for (let r = 0; r < rows; r++) {
    let acc = 0;
    for (let i = r * d; i < (r + 1) * d; i++) {
      const v = Math.abs(adv[i] - x[i]);
      acc = norm === 'linf' ? Math.max(acc, v) : acc + v * v;
    }
    worst = Math.max(worst, norm === 'linf' ? acc : Math.sqrt(acc));
  }
  return worst;
}
