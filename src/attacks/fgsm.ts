/**
 * Fast gradient sign method (Goodfellow et al., 2015) and its random-start
 * variant "FGSM-RS" (Wong, Rice & Kolter, 2020, "Fast is better than free").
 *
 * @packageDocumentation
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';

import type {LossFn} from '../objective/loss.js';
import {checkKnownKeys} from '../util/options.js';
import {checkCommonOptions, runPgd} from './pgd.js';
import {checkAttackInputs} from './validate.js';

/** Options of {@link fgsmAttack}. */
export interface FgsmOptions {
  /** L∞ radius of the perturbation; finite, ≥ 0. */
  epsilon: number;
  /** Valid input range `[lo, hi]`; the result is clipped to it. */
  clip?: [number, number];
  /**
   * FGSM-RS (Wong et al.): start from a uniform random point of the ε-box,
   * step `alpha`, project back to the ε-box. Default `false` (plain FGSM).
   */
  randomStart?: boolean;
  /** Step length with `randomStart`; finite, ≥ 0; default `1.25 * epsilon`. Ignored without random start. */
  alpha?: number;
  /** Seed of the random start (same seed → identical result). */
  seed?: number;
  /** Loss: `'ce'`, `'cw'`, `'dlr'` on the logits, or a loss name/function instead of the model's compiled loss. */
  loss?: string | LossFn;
}

/**
 * Fast gradient sign method: `x' = clip(x + ε · sign(∇ₓ Σ_b c(y_b, f(x_b))))`,
 * with c the model's per-example loss and f evaluated in inference mode.
 *
 * With `randomStart: true` this is FGSM-RS of Wong et al.: δ₀ ~ U[−ε, ε]ⁿ,
 * `x' = clip(x + Π_ε(δ₀ + α · sign(∇ c(x + δ₀))))` with α = 1.25 ε by default,
 * Π_ε the projection onto the ε-box (and the start point clipped to the box too).
 *
 * For a model that is linear in its input before a monotone loss (e.g.
 * logistic regression), plain FGSM is the exact L∞ worst case.
 *
 * Beware "catastrophic overfitting" when *training* with FGSM(-RS): PGD
 * robust accuracy can collapse while FGSM accuracy stays high; check with PGD.
 *
 * @param model A compiled single-input, single-output model (or pass `options.loss`).
 * @param x Clean inputs `[B, ...inputShape]` (not modified or disposed).
 * @param y Targets in the format the loss expects.
 * @param options See {@link FgsmOptions}; `epsilon` is required.
 * @returns A new float32 tensor shaped like x; no other tensors are left behind.
 * @throws On invalid options (the message names the field), shape mismatch,
 *   an uncompiled model without `options.loss`, or a multi-output model.
 */
export function fgsmAttack(model: tfl.LayersModel, x: tf.Tensor, y: tf.Tensor, options: FgsmOptions): tf.Tensor {
  if (options === null || typeof options !== 'object') {
    throw new Error(`fgsmAttack: options must be an object with at least {epsilon}; got ${String(options)}.`);
  }
  checkKnownKeys(options, ['epsilon', 'clip', 'randomStart', 'alpha', 'seed', 'loss'], 'fgsmAttack');
  checkCommonOptions('fgsmAttack', options);
  checkAttackInputs('fgsmAttack', model, x, y);
  const randomStart = options.randomStart ?? false;
  const alpha = options.alpha ?? 1.25 * options.epsilon;
  if (typeof alpha !== 'number' || !Number.isFinite(alpha) || alpha < 0) {
    throw new Error(`fgsmAttack: options.alpha must be a finite number >= 0; got ${String(alpha)}.`);
  }
  // One L∞ PGD step: without random start the ε-box projection is a no-op.
  return runPgd(
    model,
    x,
    y,
    {
      epsilon: options.epsilon,
      norm: 'linf',
      steps: 1,
      stepSize: randomStart ? alpha : options.epsilon,
      randomStart,
      restarts: 1,
      clip: options.clip,
      seed: options.seed,
      loss: options.loss,
    },
    false,
  ).adversarial;
}
