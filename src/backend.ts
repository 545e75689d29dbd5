/**
 * Run-time backend selection for the CLI, examples and benchmarks (Node).
 * The core library never calls this and never imports a backend itself.
 *
 * Preference in `'auto'` mode: `@tensorflow/tfjs-node` (native, optional peer; fastest),
 * then `@tensorflow/tfjs-backend-wasm` (with this package's training kernels registered, see
 * `registerWasmKernels`: 50–350× faster than cpu for CNNs, ≈19× for dense nets),
 * then `@tensorflow/tfjs-backend-cpu`. All of them register into the same
 * `@tensorflow/tfjs-core` instance that this module imports (they peer-depend on it).
 */
import * as tf from '@tensorflow/tfjs-core';
import {registerWasmKernels} from './kernels/wasm.js';
import {checkKnownKeys} from './util/options.js';

/** Backend names accepted by {@link selectBackend}. */
export type BackendChoice = 'auto' | 'tensorflow' | 'wasm' | 'cpu';

/** Options of {@link selectBackend}. */
export interface SelectBackendOptions {
  /** Which backend to use; `'auto'` (default) picks the fastest that works. An explicit choice overrides. */
  backend?: BackendChoice;
  /**
   * The model has conv layers that will be trained. Only matters with `wasmKernels: false`: then
   * `'auto'` skips wasm (which has no Conv2DBackpropFilter of its own).
   */
  needsConvTraining?: boolean;
  /**
   * When wasm is selected, register this package's wasm training kernels (`registerWasmKernels()`):
   * conv/depthwise gradients, a correct MaxPoolGrad, fast transposed matmuls. Default `true`.
   */
  wasmKernels?: boolean;
  /** Do not print the `backend: <name> (<reason>)` line to stderr. */
  quiet?: boolean;
  /**
   * Passed to the wasm package's `setWasmPaths` before it initialises (a folder path with a
   * trailing slash, or a file map). Not needed in Node: the package finds its `.wasm` files itself.
   */
  wasmPaths?: string | Record<string, string>;
}

/** Result of {@link selectBackend}. */
export interface SelectedBackend {
  /** The active tfjs backend name: `'tensorflow'`, `'wasm'` or `'cpu'`. */
  name: string;
  /** Why it was chosen (and why faster ones were skipped). */
  reason: string;
}

/** npm package providing each backend. */
export const BACKEND_PACKAGES = {
  tensorflow: '@tensorflow/tfjs-node',
  wasm: '@tensorflow/tfjs-backend-wasm',
  cpu: '@tensorflow/tfjs-backend-cpu',
} as const;

type Concrete = keyof typeof BACKEND_PACKAGES;

/** A backend that failed to load or initialise; `notInstalled` when its package is absent. */
class BackendUnavailableError extends Error {
  constructor(msg: string, readonly notInstalled = false) {
    super(msg);
  }
}

function isModuleNotFound(e: unknown, pkg: string): boolean {
  const code = (e as {code?: string} | null)?.code;
  return (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') && message(e).includes(pkg);
}

function message(e: unknown): string {
  const m = e instanceof Error ? e.message : String(e);
  return m.split('\n')[0];
}

/** Dynamic import through a variable, so that TypeScript does not require the optional package. */
async function importOptional(spec: string): Promise<Record<string, unknown>> {
  return (await import(spec)) as Record<string, unknown>;
}

/** Runs a tiny op on the active backend and checks its result. */
function smokeTest(): void {
  const v = tf.tidy(() => tf.matMul(tf.tensor2d([[1, 2]]), tf.tensor2d([[3], [4]])).dataSync()[0]);
  if (v !== 11) throw new Error(`smoke test matMul gave ${v}, expected 11`);
}

/**
 * Loads the package of `name`, activates the backend and runs a tiny matMul on it.
 * Throws an error naming the package when any step fails.
 */
async function tryBackend(name: Concrete, wasmPaths?: SelectBackendOptions['wasmPaths']): Promise<void> {
  const pkg = BACKEND_PACKAGES[name];
  let mod: Record<string, unknown>;
  try {
    mod = await importOptional(pkg);
  } catch (e) {
    throw new BackendUnavailableError(
        `${pkg} could not be loaded (${message(e)}); install it with \`npm install ${pkg}\``,
        isModuleNotFound(e, pkg));
  }
  if (name === 'wasm' && wasmPaths !== undefined) {
    const setWasmPaths = (mod.setWasmPaths ?? (mod.default as Record<string, unknown> | undefined)?.setWasmPaths) as
        ((p: string | Record<string, string>) => void) | undefined;
    if (typeof setWasmPaths !== 'function') throw new Error(`${pkg} does not export setWasmPaths`);
    setWasmPaths(wasmPaths);
  }
  if (tf.findBackendFactory(name) == null) {
    throw new Error(
        `${pkg} loaded but registered no '${name}' backend with this @tensorflow/tfjs-core; ` +
        `probably two copies of @tensorflow/tfjs-core are installed (check \`npm ls @tensorflow/tfjs-core\`)`);
  }
  let ok: boolean;
  try {
    ok = await tf.setBackend(name);
  } catch (e) {
    throw new Error(`backend '${name}' (${pkg}) failed to initialise: ${message(e)}`);
  }
  if (!ok || tf.getBackend() !== name) {
    throw new Error(`backend '${name}' (${pkg}) failed to initialise`);
  }
  try {
    smokeTest();
  } catch (e) {
    throw new Error(`backend '${name}' (${pkg}) initialised but cannot run ops: ${message(e)}`);
  }
}

/**
 * Selects and activates a tfjs backend at run time, returning its name and the reason.
 *
 * - `'auto'` (default): `@tensorflow/tfjs-node` if it can be imported (it is an optional peer;
 *   a failed import is silent), else wasm unless `needsConvTraining`, else cpu.
 * - `'tensorflow' | 'wasm' | 'cpu'`: that backend, or an error naming the package to install.
 *
 * Each candidate must initialise and run a tiny `tf.matMul` before it is accepted.
 * Prints `backend: <name> (<reason>)` to stderr unless `quiet`.
 */
export async function selectBackend(options: SelectBackendOptions = {}): Promise<SelectedBackend> {
  checkKnownKeys(options, ['backend', 'needsConvTraining', 'quiet', 'wasmPaths', 'wasmKernels'], 'selectBackend');
  const {backend = 'auto', needsConvTraining = false, quiet = false, wasmPaths, wasmKernels = true} = options;
  const kernelsNote = wasmKernels ? '; wasm training kernels registered' : '';
  let result: SelectedBackend;
  if (backend === 'auto') {
    const skipped: string[] = [];
    result = await (async(): Promise<SelectedBackend> => {
      try {
        await tryBackend('tensorflow');
        return {name: 'tensorflow', reason: 'auto: native TensorFlow via @tensorflow/tfjs-node'};
      } catch (e) {
        const notInstalled = e instanceof BackendUnavailableError && e.notInstalled;
        skipped.push(notInstalled ? '@tensorflow/tfjs-node not installed' : `tfjs-node unusable: ${message(e)}`);
      }
      if (needsConvTraining && !wasmKernels) {
        skipped.push('wasm skipped: no Conv2DBackpropFilter kernel for conv training (wasmKernels: false)');
      } else {
        try {
          await tryBackend('wasm', wasmPaths);
          if (wasmKernels) registerWasmKernels();
          return {name: 'wasm', reason: `auto: ${skipped.join('; ')}; wasm is the fastest available${kernelsNote}`};
        } catch (e) {
          skipped.push(`wasm unusable: ${message(e)}`);
        }
      }
      await tryBackend('cpu');
      return {name: 'cpu', reason: `auto: ${skipped.join('; ')}; using cpu`};
    })();
  } else if (backend in BACKEND_PACKAGES) {
    try {
      await tryBackend(backend, wasmPaths);
    } catch (e) {
      throw new Error(`selectBackend: requested backend '${backend}' is unavailable: ${message(e)}`);
    }
    let reason = 'requested explicitly';
    if (backend === 'wasm' && wasmKernels) {
      registerWasmKernels();
      reason += kernelsNote;
    } else if (backend === 'wasm' && needsConvTraining) {
      reason += '; warning: wasm has no Conv2DBackpropFilter kernel, conv training will fail';
    }
    result = {name: backend, reason};
  } else {
    throw new Error(`selectBackend: unknown backend '${String(backend)}'; expected auto, tensorflow, wasm or cpu`);
  }
  if (!quiet) process.stderr.write(`backend: ${result.name} (${result.reason})\n`);
  return result;
}
