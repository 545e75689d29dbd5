/**
 * x + d for the Disturbance layers' `add` mode, without the tape's copies of x and d.
 *
 * Under a gradient tape, tfjs keeps a clone of both inputs of every `Add` (its gradient needs
 * their shapes to undo broadcasting), and on the wasm backend a clone is a full copy: two copies
 * of the layer's input per Disturbance site and per taped forward pass (measured on the wasm MLP
 * of `bench/deep_cost.ts`: 6 of the ≈ 175 kernels of a deep-attack iteration). For operands of
 * one shape no broadcasting is undone, so this kernel — the active backend's own `Add`,
 * registered under this package's name with a gradient that keeps nothing — gives the same
 * values and the same gradient (dy, reshaped, for both inputs) without the copies. On wasm the
 * sum itself runs as one SIMD pass over float32 operands whose size is a multiple of 4
 * (`simdAddFor`: the backend's `Add` is a scalar broadcasting loop, ≈ 100 µs on a 128×784 input,
 * ≈ 4× the SIMD pass); IEEE float32 sums either way.
 *
 * @packageDocumentation
 */
import * as tf from '@tensorflow/tfjs-core';
import {simdAddFor} from './simd.js';

/**
 * Kernel name (prefixed: not a tfjs kernel; renamed when its implementation changed, so that a
 * bench's baseline copy of the package, registering the old one, runs its own).
 */
export const ADD_UNSAVED = 'TfjsDeepAdversarialAddUnsavedSimd';

/**
 * `tf.add(a, b)` for float32 operands of one shape, as the backend's `Add` kernel under the name
 * {@link ADD_UNSAVED} (registered for the active backend on first use) whose gradient keeps no
 * inputs. Anything else (other dtypes, broadcasting, a backend without `Add`): `tf.add`.
 */
export function addUnsaved(a: tf.Tensor, b: tf.Tensor): tf.Tensor {
  if (a.dtype !== 'float32' || b.dtype !== 'float32' || !tf.util.arraysEqual(a.shape, b.shape)) return tf.add(a, b);
  const backend = tf.getBackend();
  if (tf.getKernel(ADD_UNSAVED, backend) == null) {
    const add = tf.getKernel('Add', backend);
    if (add == null) return tf.add(a, b);
    // on wasm: float32 sums in one SIMD pass when the size allows (the same values as the backend's
    // scalar `Add` loop, src/kernels/simd.ts), else the backend's own Add
    tf.registerKernel({
      kernelName: ADD_UNSAVED,
      backendName: backend,
      kernelFunc: (args) => {
        const {a: x, b: y} = args.inputs as {a: tf.TensorInfo; b: tf.TensorInfo};
        const simd = backend === 'wasm' && x.dtype === 'float32' && y.dtype === 'float32' && tf.util.sizeFromShape(x.shape) % 4 === 0 ? simdAddFor(args.backend) : null;
        return simd ? simd(x, y) : add.kernelFunc({...args, attrs: {}});
      },
    });
  }
  if (tf.getGradient(ADD_UNSAVED) == null) {
    tf.registerGradient({
      kernelName: ADD_UNSAVED,
      gradFunc: (dy: tf.Tensor | tf.Tensor[]) => {
        const g = dy as tf.Tensor;
        return {a: () => tf.reshape(g, g.shape), b: () => tf.reshape(g, g.shape)};
      },
    });
  }
  return tf.engine().runKernel(ADD_UNSAVED, {a, b} as unknown as tf.NamedTensorMap) as tf.Tensor;
}
