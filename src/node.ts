/**
 * Node-only helpers of tfjs-deep-adversarial: saving/loading models on disk
 * without tfjs-node, the MNIST IDX reader, and run-time backend selection.
 *
 * ```ts
 * import {fileSystem, loadMnist} from 'tfjs-deep-adversarial/node';
 * await model.save(fileSystem('./my-model'));
 * ```
 *
 * @packageDocumentation
 */
export * from './index.js';
export {fileSystem, writeFileAtomic, fsyncDir, namedFsError, MODEL_JSON_FILENAME, WEIGHTS_BIN_FILENAME} from './io/file_system.js';
export type {FileSystemHandler} from './io/file_system.js';
export {loadMnist, readIdx, loadIdxPair, defaultMnistDir, MNIST_FILES} from './data/mnist.js';
export type {LoadMnistOptions, MnistData, IdxFile, IdxPair, IdxPairOptions} from './data/mnist.js';
export {selectBackend, BACKEND_PACKAGES} from './backend.js';
export type {BackendChoice, SelectBackendOptions, SelectedBackend} from './backend.js';
