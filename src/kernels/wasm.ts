/**
 * Opt-in training kernels for the tfjs wasm backend: {@link registerWasmKernels} /
 * {@link unregisterWasmKernels}.
 *
 * The wasm backend (`@tensorflow/tfjs-backend-wasm`, an optional peer of this package) cannot
 * train convolutional or text models out of the box: it has no `Conv2DBackpropFilter`, no
 * depthwise gradients and no `UnsortedSegmentSum` (the gradient of Embedding), its `MaxPoolGrad`
 * drops the gradient of windows whose values are all ≤ 0, and its `Conv2DBackpropInput` and
 * transposed `BatchMatMul` are slow scalar loops. The kernels registered here fix that, composed
 * from the backend's own XNNPACK kernels. They work for any tfjs program, with or without the rest
 * of this package.
 *
 * This module never imports the wasm package: it finds the backend's kernels in tfjs' kernel
 * registry at run time.
 *
 * @packageDocumentation
 */
import * as tf from '@tensorflow/tfjs-core';
import {checkKnownKeys} from '../util/options.js';
import {
  conv2DBackpropFilter,
  conv2DBackpropInput,
  depthwiseConv2dNativeBackpropFilter,
  depthwiseConv2dNativeBackpropInput,
  makeBatchMatMul,
  maxPoolGrad,
  unsortedSegmentSum,
  type WasmKernelFunc,
} from './wasm_kernels.js';

/**
 * Which kernels {@link registerWasmKernels} installs; each defaults to `true`. Set one to `false`
 * to keep the wasm backend's own kernel (or, for kernels wasm lacks, to leave it missing).
 */
export interface WasmKernelOptions {
  /** `Conv2DBackpropFilter` (missing on wasm): conv2d / separableConv2d / conv2dTranspose training. */
  conv2dBackpropFilter?: boolean;
  /** `Conv2DBackpropInput` (wasm's is a slow scalar loop): input gradient of conv2d, forward of conv2dTranspose. */
  conv2dBackpropInput?: boolean;
  /** `DepthwiseConv2dNativeBackpropFilter` (missing on wasm). */
  depthwiseConv2dBackpropFilter?: boolean;
  /** `DepthwiseConv2dNativeBackpropInput` (missing on wasm). */
  depthwiseConv2dBackpropInput?: boolean;
  /** `MaxPoolGrad` (wasm's gives no gradient to windows whose values are all ≤ 0). */
  maxPoolGrad?: boolean;
  /** `BatchMatMul` with `transposeA`/`transposeB` (wasm's falls back to a slow scalar loop): dense-layer gradients. */
  batchMatMul?: boolean;
  /** `UnsortedSegmentSum` (missing on wasm): gradient of gather / Embedding. */
  unsortedSegmentSum?: boolean;
}

type OptionKey = keyof WasmKernelOptions;

/** Option name → tfjs kernel name. */
const KERNELS: Record<OptionKey, string> = {
  conv2dBackpropFilter: 'Conv2DBackpropFilter',
  conv2dBackpropInput: 'Conv2DBackpropInput',
  depthwiseConv2dBackpropFilter: 'DepthwiseConv2dNativeBackpropFilter',
  depthwiseConv2dBackpropInput: 'DepthwiseConv2dNativeBackpropInput',
  maxPoolGrad: 'MaxPoolGrad',
  batchMatMul: 'BatchMatMul',
  unsortedSegmentSum: 'UnsortedSegmentSum',
};

const OPTION_KEYS = Object.keys(KERNELS) as OptionKey[];

/** Kernels installed by this module → the wasm backend's original config (`null`: it had none). */
const installed = new Map<string, tf.KernelConfig | null>();

function implementation(key: OptionKey, original: tf.KernelConfig | undefined): WasmKernelFunc {
  switch (key) {
    case 'conv2dBackpropFilter': return conv2DBackpropFilter;
    case 'conv2dBackpropInput': {
      // Only NHWC is composed here; anything else keeps the backend's own kernel.
      const orig = original?.kernelFunc;
      return (args) => orig != null && args.attrs?.dataFormat === 'NCHW'
        ? orig(args as Parameters<tf.KernelFunc>[0]) as tf.TensorInfo
        : conv2DBackpropInput(args);
    }
    case 'depthwiseConv2dBackpropFilter': return depthwiseConv2dNativeBackpropFilter;
    case 'depthwiseConv2dBackpropInput': return depthwiseConv2dNativeBackpropInput;
    case 'maxPoolGrad': return maxPoolGrad;
    case 'unsortedSegmentSum': return unsortedSegmentSum;
    case 'batchMatMul': {
      if (original == null) throw new Error("registerWasmKernels: the wasm backend has no 'BatchMatMul' kernel to speed up");
      const orig = original.kernelFunc;
      return makeBatchMatMul((args) => orig(args as Parameters<tf.KernelFunc>[0]) as tf.TensorInfo);
    }
  }
}

/**
 * Registers training kernels for the `'wasm'` backend of tfjs: the missing
 * `Conv2DBackpropFilter`, `DepthwiseConv2dNativeBackpropFilter`/`Input` and `UnsortedSegmentSum`,
 * a correct `MaxPoolGrad`, and faster `Conv2DBackpropInput` and transposed `BatchMatMul`.
 * Afterwards conv, depthwise/separable, pooling and Embedding models train on wasm, with
 * gradients equal to the cpu backend's up to float32 rounding.
 *
 * Call it after `@tensorflow/tfjs-backend-wasm` has been imported (before or after
 * `tf.setBackend('wasm')`). Idempotent: calling it again (with other options) first restores the
 * originals. Kernels of other backends are not touched.
 *
 * ```js
 * import * as tf from '@tensorflow/tfjs';
 * import '@tensorflow/tfjs-backend-wasm';
 * import {registerWasmKernels} from 'tfjs-deep-adversarial';
 * registerWasmKernels();
 * await tf.setBackend('wasm');
 * ```
 *
 * @param options turn individual kernels off (all default to on).
 * @returns the names of the kernels now registered by this function.
 * @throws when the wasm backend package is not loaded, or on unknown option names.
 */
export function registerWasmKernels(options: WasmKernelOptions = {}): string[] {
  checkKnownKeys(options, OPTION_KEYS, 'registerWasmKernels');
  for (const key of OPTION_KEYS) {
    const v = options[key];
    if (v !== undefined && typeof v !== 'boolean') {
      throw new Error(`registerWasmKernels: option '${key}' must be a boolean; got ${typeof v}`);
    }
  }
  if (tf.getKernel('Conv2D', 'wasm') == null) {
    throw new Error(
        "registerWasmKernels: the wasm backend is not registered; import '@tensorflow/tfjs-backend-wasm' " +
        '(npm install @tensorflow/tfjs-backend-wasm) before calling it');
  }
  unregisterWasmKernels();
  const names: string[] = [];
  for (const key of OPTION_KEYS) {
    if (options[key] === false) continue;
    const name = KERNELS[key];
    const original = tf.getKernel(name, 'wasm');
    const kernelFunc = implementation(key, original);
    if (original != null) tf.unregisterKernel(name, 'wasm');
    installed.set(name, original ?? null);
    tf.registerKernel({
      kernelName: name,
      backendName: 'wasm',
      // Keep the original's set-up: it must still run if the backend initialises later, since
      // the replacement may call the original kernel.
      setupFunc: original?.setupFunc,
      disposeFunc: original?.disposeFunc,
      kernelFunc: kernelFunc as unknown as tf.KernelFunc,
    });
    names.push(name);
  }
  return names;
}

/**
 * Removes the kernels installed by {@link registerWasmKernels} and restores the wasm backend's
 * originals. Does nothing when none are installed.
 */
export function unregisterWasmKernels(): void {
  for (const [name, original] of installed) {
    if (tf.getKernel(name, 'wasm') != null) tf.unregisterKernel(name, 'wasm');
    if (original != null) tf.registerKernel(original);
  }
  installed.clear();
}

/** Names of the wasm kernels currently installed by {@link registerWasmKernels} (empty when none). */
export function registeredWasmKernels(): string[] {
  return [...installed.keys()];
}
