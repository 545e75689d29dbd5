/**
 * The hook that lets an adversarial callback change what `model.fit`,
 * `model.fitDataset` and `model.trainOnBatch` do per batch.
 *
 * tfjs-layers builds its per-batch step with the protected
 * `LayersModel.makeTrainFunction()` and calls the returned function once per
 * batch with `[...inputs, ...targets, ...sampleWeights]`. `fit` calls
 * `makeTrainFunction()` *before* callbacks get `setModel`/`onTrainBegin`, so a
 * callback cannot wrap the function itself. Instead, this module wraps
 * `tfl.LayersModel.prototype.makeTrainFunction` once, at module load:
 *
 * - the wrapped function looks, on every batch, for a {@link TrainHookState}
 *   attached to the model (by the adversarial callback in `onTrainBegin`,
 *   removed in `onTrainEnd` and on error);
 * - without one it calls the original step directly: a pure pass-through, so
 *   plain training is bit-identical to unpatched tfjs;
 * - with one it hands the batch and the original step to the state, which runs
 *   the attack and then calls the original step on the adversarial batch.
 *
 * The patch is idempotent and guarded by global symbols (`Symbol.for`), so two
 * copies of this package in one process do not wrap twice and share the
 * state key. `Sequential.fit` delegates to an inner `LayersModel`
 * (`sequential.model`); the callback receives that inner model in `setModel`,
 * which is also the `this` of the train function, so the state is found.
 *
 * @packageDocumentation
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import {modelMakeTrainFunction, prototypeMakeTrainFunction, sequentialInnerModel, setPrototypeMakeTrainFunction} from '../model/internals.js';

/** The per-batch step built by tfjs-layers: `[...inputs, ...targets, ...sampleWeights] → [loss, ...metrics]`. */
export type TrainFunction = (data: tf.Tensor[]) => tf.Tensor[];

/**
 * What an adversarial callback attaches to a model while it trains it.
 * Kept minimal and version-tagged because a second copy of this package may
 * read a state attached by the first.
 */
export interface TrainHookState {
  /** Interface version of this object (1). */
  readonly version: 1;
  /**
   * Runs one training step on `data`. Must call `original` (the unwrapped
   * tfjs step) at most once and return its outputs; must not throw after
   * `original` has updated the weights.
   */
  step(model: tfl.LayersModel, data: tf.Tensor[], original: TrainFunction): tf.Tensor[];
  /**
   * True when this state no longer belongs to a running `fit` of `model`
   * (e.g. that fit failed before `onTrainEnd`); a new callback may then replace it.
   */
  isStale(model: tfl.LayersModel): boolean;
}

/** Global keys (shared between copies of this package). */
const ORIGINAL_KEY = Symbol.for('tfjs-deep-adversarial/makeTrainFunction/original/v1');
const WRAPPED_KEY = Symbol.for('tfjs-deep-adversarial/makeTrainFunction/wrapped/v1');
const STATE_KEY = Symbol.for('tfjs-deep-adversarial/trainHookState/v1');

type MakeTrainFunction = (this: tfl.LayersModel) => TrainFunction;

/** Our own (symbol-keyed) bookkeeping on the prototype; the tfjs method itself goes through ../model/internals. */
interface PatchableProto {
  [ORIGINAL_KEY]?: MakeTrainFunction;
}

type Wrapped = MakeTrainFunction & {[WRAPPED_KEY]?: true};

interface WithState {
  [STATE_KEY]?: TrainHookState;
}

function proto(): PatchableProto {
  return tfl.LayersModel.prototype as unknown as PatchableProto;
}

/**
 * Wraps `tfl.LayersModel.prototype.makeTrainFunction` (idempotent; runs at
 * module load). Exported for tests and for the rare case where another
 * library replaced the method after this module loaded.
 *
 * @internal
 */
export function installTrainHook(): void {
  const p = proto();
  const current = prototypeMakeTrainFunction() as Wrapped | undefined;
  if (current?.[WRAPPED_KEY]) return;
  const original = current;
  if (typeof original !== 'function') {
    throw new Error(
      'tfjs-deep-adversarial: tfl.LayersModel.prototype.makeTrainFunction is missing; this tfjs-layers version is not supported (4.x expected).',
    );
  }
  p[ORIGINAL_KEY] = original;
  const wrapped = function makeTrainFunction(this: tfl.LayersModel): TrainFunction {
    const step = original.call(this);
    const model = this;
    return (data: tf.Tensor[]) => {
      const state = (model as unknown as WithState)[STATE_KEY];
      if (state == null) return step(data);
      return state.step(model, data, step);
    };
  } as Wrapped;
  wrapped[WRAPPED_KEY] = true;
  setPrototypeMakeTrainFunction(wrapped);
}

installTrainHook();

const CALLBACKS_KEY = Symbol.for('tfjs-deep-adversarial/fitCallbacks/wrapped/v1');

/** A tfjs callback object (has `setParams`), as opposed to a plain `{onBatchEnd}` config object. */
function isCallbackObject(c: unknown): boolean {
  return c != null && typeof (c as {setParams?: unknown}).setParams === 'function';
}

/**
 * tfjs wraps plain-object callbacks (`{onBatchEnd}`) in `tf.CustomCallback` only when the FIRST
 * element of the list is a plain object, and then wraps every element, so a list that mixes them
 * with callback objects such as `adversarialCallback(...)` fails ("no model was set",
 * "callback.setParams is not a function"). This wraps `fit` / `fitDataset` once (idempotent, shared
 * between copies of this package) so that, in a mixed list only, each plain object is wrapped as
 * tfjs wraps it when alone (`new tf.CustomCallback(obj, yieldEvery)`); every other list is passed
 * through unchanged.
 *
 * @internal
 */
export function installCallbackListFix(): void {
  const p = tfl.LayersModel.prototype as unknown as Record<string, ((...a: unknown[]) => unknown) & {[CALLBACKS_KEY]?: true}>;
  for (const method of ['fit', 'fitDataset'] as const) {
    const original = p[method];
    if (typeof original !== 'function' || original[CALLBACKS_KEY]) continue;
    const argIndex = method === 'fit' ? 2 : 1;
    const wrapped = function (this: unknown, ...args: unknown[]) {
      const a = args[argIndex] as {callbacks?: unknown; yieldEvery?: unknown} | undefined;
      const list = a?.callbacks;
      if (Array.isArray(list) && list.some(isCallbackObject) && list.some((c) => !isCallbackObject(c))) {
        const fixed = list.map((c) =>
          isCallbackObject(c) ? c : new tfl.CustomCallback(c as tfl.CustomCallbackArgs, a?.yieldEvery as undefined),
        );
        args = [...args];
        args[argIndex] = {...a, callbacks: fixed};
      }
      return original.apply(this, args);
    } as ((...a: unknown[]) => unknown) & {[CALLBACKS_KEY]?: true};
    wrapped[CALLBACKS_KEY] = true;
    p[method] = wrapped;
  }
}

installCallbackListFix();

/** True when `model.makeTrainFunction` is the wrapped one (false e.g. for a model from another tfjs-layers copy). @internal */
export function isHooked(model: tfl.LayersModel): boolean {
  const fn = modelMakeTrainFunction(model) as Wrapped | undefined;
  return typeof fn === 'function' && fn[WRAPPED_KEY] === true;
}

/**
 * The unwrapped tfjs step of `model` (what plain tfjs would run per batch).
 * `model` must be the `LayersModel` that owns the compiled loss (for a
 * `Sequential`, its inner `model`; see {@link trainingModel}).
 *
 * @internal
 */
export function originalTrainFunction(model: tfl.LayersModel): TrainFunction {
  const original = proto()[ORIGINAL_KEY] ?? prototypeMakeTrainFunction();
  if (original == null) throw new Error('tfjs-deep-adversarial: tfl.LayersModel.prototype.makeTrainFunction is missing; this tfjs-layers version is not supported (4.x expected).');
  return original.call(model);
}

/** The original (unwrapped) `makeTrainFunction`, e.g. to build an unpatched reference model in tests. @internal */
export function originalMakeTrainFunction(): MakeTrainFunction {
  const original = proto()[ORIGINAL_KEY];
  if (original == null) throw new Error('tfjs-deep-adversarial: the train hook is not installed.');
  return original;
}

/** Attaches `state` to `model`; per batch, the wrapped train function then delegates to it. @internal */
export function attachState(model: tfl.LayersModel, state: TrainHookState): void {
  const m = model as unknown as WithState;
  const current = m[STATE_KEY];
  if (current != null && current !== state && !(typeof current.isStale === 'function' && current.isStale(model))) {
    throw new Error(
      `adversarialCallback: model '${model.name}' is already being trained by another adversarial callback; ` +
        'pass only one adversarial callback to fit().',
    );
  }
  m[STATE_KEY] = state;
}

/** Removes `state` from `model` (no-op if another state, or none, is attached). @internal */
export function detachState(model: tfl.LayersModel, state: TrainHookState): void {
  const m = model as unknown as WithState;
  if (m[STATE_KEY] === state) delete m[STATE_KEY];
}

/** The state attached to `model`, if any. @internal */
export function attachedState(model: tfl.LayersModel): TrainHookState | undefined {
  return (model as unknown as WithState)[STATE_KEY];
}

/**
 * The `LayersModel` whose train function runs during `fit`: the model itself,
 * or for a `Sequential` its inner functional model (`sequential.model`, built
 * on compile). Throws if a Sequential is not built.
 *
 * @internal
 */
export function trainingModel(model: tfl.LayersModel): tfl.LayersModel {
  if (model instanceof tfl.Sequential || model.getClassName() === 'Sequential') {
    const inner = sequentialInnerModel(model);
    if (inner == null) {
      throw new Error(
        `Sequential model '${model.name}' is not built: give its first layer an inputShape and call model.compile(...) first.`,
      );
    }
    return inner;
  }
  return model;
}
