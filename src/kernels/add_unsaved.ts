/**
 * x + d for the Disturbance layers' `add` mode, without the tape's copies of x and d.
 *
 * Under a gradient tape, tfjs keeps a clone of both inputs of every `Add` (its gradient needs
 * their shapes to undo broadcasting), and on the wasm backend a clone is a full copy: two copies
 * of the layer's input per Disturbance site and per taped forward pass (measured on the wasm MLP
 * of `bench/deep_cost.ts`: 6 of the ≈ 175 kernels of a deep-attack iteration). For operands of
 * one shape no broadcasting is undone, so this kernel — the active backend's own `Add`,
 * registered under this package's name with a gradient that keeps nothing — gives the same
 * values and the same gradient (dy, reshaped, for both inputs) without the copies.
 *
 * @packageDocumentation
 */
import * as tf from '@tensorflow/tfjs-core';

/** Kernel name (prefixed: not a tfjs kernel). */
export const ADD_UNSAVED = 'TfjsDeepAdversarialAddUnsaved';

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
    tf.registerKernel({kernelName: ADD_UNSAVED, backendName: backend, kernelFunc: (args) => add.kernelFunc({...args, attrs: {}})});
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
