// The seeded uniform draw of src/util/random.ts against tf.randomUniform (which the deep attack's random
// start used before), bit for bit: seeds of several kinds (integers, negative, fractional, large), ranges and
// shapes; without a seed it is tf.randomUniform's own draw (in range); no tensor kept.
import {tf} from './setup.js';
import assert from 'node:assert/strict';
import {test} from 'node:test';
import {randomUniform, seededUniformValues} from '../src/util/random.js';

test('seeded uniform draw equals tf.randomUniform bit for bit', () => {
  const before = tf.memory().numTensors;
  for (const seed of [0, 1, 2, 7, 12345, -3, 2.5, 0.1, 1e9, 4294967295, 2 ** 40 + 1]) {
    for (const [lo, hi] of [[-0.05, 0.05], [-0.01, 0.01], [0, 1], [-3, 7.5]]) {
      for (const shape of [[37, 29], [4, 3, 5], [1]]) {
        const want = tf.tidy(() => Array.from(tf.randomUniform(shape, lo, hi, 'float32', seed).dataSync()));
        const t = randomUniform(shape, lo, hi, seed);
        assert.deepEqual(t.shape, shape);
        assert.equal(t.dtype, 'float32');
        const got = Array.from(t.dataSync());
        t.dispose();
        got.forEach((v, i) => assert.ok(Object.is(v, want[i]), `seed ${seed}, [${lo}, ${hi}], shape ${shape} [${i}]: ${v} vs ${want[i]}`));
        assert.deepEqual(Array.from(seededUniformValues(want.length, lo, hi, seed)), want);
      }
    }
  }
  // no seed: tf.randomUniform's own (random) draw, inside the range
  const u = randomUniform([50], -0.2, 0.3, undefined);
  assert.ok(Array.from(u.dataSync()).every((v) => v >= -0.2 && v <= 0.3));
  u.dispose();
  assert.equal(tf.memory().numTensors, before, 'tensors kept');
});
