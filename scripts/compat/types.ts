// Type-checked by scripts/compat.mjs inside the fresh project under several TypeScript module
// resolutions (node10 = the default of `module: commonjs`, node16/nodenext, bundler): both entry
// points must resolve to their declarations and interoperate with @tensorflow/tfjs's types.
import * as tf from '@tensorflow/tfjs';
import {instrument, adversarialCallback, evaluateRobustness} from 'tfjs-deep-adversarial';
import type {AdversarialCallbackOptions, RobustnessResult} from 'tfjs-deep-adversarial';
import {fileSystem, selectBackend} from 'tfjs-deep-adversarial/node';
import type {FileSystemHandler, SelectedBackend} from 'tfjs-deep-adversarial/node';

const model: tf.Sequential = tf.sequential({layers: [tf.layers.dense({inputShape: [4], units: 2, activation: 'softmax'})]});
const adv: tf.LayersModel = instrument(model, {input: {kind: 'linf', epsilon: 0.1}});
const options: AdversarialCallbackOptions = {method: 'deep', maxGradientEvaluations: 3};
const callback: tf.Callback = adversarialCallback(options);
const handler: FileSystemHandler = fileSystem('./model');
const saved: Promise<tf.io.SaveResult> = adv.save(handler);
const evaluate = (x: tf.Tensor, y: tf.Tensor): RobustnessResult => evaluateRobustness(model, x, y, {attacks: [{kind: 'fgsm', epsilons: [0.1]}]});
const backend: Promise<SelectedBackend> = selectBackend({backend: 'cpu'});

export {callback, saved, evaluate, backend};
