/**
 * `tf.randomUniform(shape, lo, hi, 'float32', seed)` with a seed, bit for bit, without its per-value
 * overhead: tfjs draws from seedrandom's Alea generator (J. Baagøe's algorithm, seeded by its Mash
 * hash of `String(seed)`) through a closure call per value and a generic buffer (≈ 3.3 ms for
 * 128×784 values on this machine); the same double-precision arithmetic as one tight loop takes a
 * fraction of that. Without a seed, `tf.randomUniform` itself runs (its seed is `Math.random()`).
 *
 * @packageDocumentation
 */
import * as tf from '@tensorflow/tfjs-core';

/** Alea's seeding hash (Mash): successive calls continue from the state of the previous ones. */
function mash(): (data: string) => number {
  let n = 0xefc8249d;
  return (data: string) => {
    for (let i = 0; i < data.length; i++) {
      n += data.charCodeAt(i);
      let h = 0.02519603282416938 * n;
      n = h >>> 0;
      h -= n;
      h *= n;
      n = h >>> 0;
      h -= n;
      n += h * 0x100000000; // 2^32
    }
    return (n >>> 0) * 2.3283064365386963e-10; // 2^-32
  };
}

/**
 * The float32 values of `tf.randomUniform(shape, lo, hi, 'float32', seed)`: lo + (hi − lo)·u with u
 * from Alea seeded by `String(seed)`, in row-major order.
 */
export function seededUniformValues(size: number, lo: number, hi: number, seed: number): Float32Array {
  const m = mash();
  let s0 = m(' ');
  let s1 = m(' ');
  let s2 = m(' ');
  const key = String(seed);
  s0 -= m(key);
  if (s0 < 0) s0 += 1;
  s1 -= m(key);
  if (s1 < 0) s1 += 1;
  s2 -= m(key);
  if (s2 < 0) s2 += 1;
  let c = 1;
  const range = hi - lo;
  const out = new Float32Array(size);
  for (let i = 0; i < size; i++) {
    const t = 2091639 * s0 + c * 2.3283064365386963e-10; // 2^-32
    s0 = s1;
    s1 = s2;
    c = t | 0;
    s2 = t - c;
    out[i] = lo + range * s2;
  }
  return out;
}

/** `tf.randomUniform(shape, lo, hi, 'float32', seed)`, bit for bit; the fast loop when `seed` is given. */
export function randomUniform(shape: number[], lo: number, hi: number, seed: number | undefined): tf.Tensor {
  if (seed === undefined) return tf.randomUniform(shape, lo, hi, 'float32');
  return tf.tensor(seededUniformValues(shape.reduce((a, b) => a * b, 1), lo, hi, seed), shape, 'float32');
}
