// Shared test set-up: every test file imports this first so that the suite
// runs on the deterministic cpu backend.
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import '@tensorflow/tfjs-layers';

await tf.setBackend('cpu');
await tf.ready();

export {tf};
