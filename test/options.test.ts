import {test} from 'node:test';
import assert from 'node:assert/strict';
import {tf} from './setup.js';
import {checkKnownKeys, closestName, describeValue} from '../src/util/options.js';

test('checkKnownKeys accepts known keys, undefined and null', () => {
  checkKnownKeys({a: 1, bb: undefined}, ['a', 'bb'], 'f');
  checkKnownKeys(undefined, ['a'], 'f');
  checkKnownKeys(null, ['a'], 'f');
});

test('checkKnownKeys names the unknown key and the closest valid one', () => {
  assert.throws(
    () => checkKnownKeys({method: 'deep', maxGradientEvals: 2}, ['method', 'maxGradEvals', 'epsilon'], 'adversarialCallback'),
    /adversarialCallback: unknown option 'maxGradientEvals' \(did you mean 'maxGradEvals'\?\)/,
  );
  assert.throws(() => checkKnownKeys({epsilonn: 1}, ['epsilon', 'steps'], 'pgdAttack'), /did you mean 'epsilon'/);
  assert.throws(() => checkKnownKeys({zzzzqqq: 1}, ['epsilon', 'steps'], 'pgdAttack'), (e: Error) => !/did you mean/.test(e.message) && /Valid options: epsilon, steps/.test(e.message));
});

test('checkKnownKeys refuses non-objects', () => {
  assert.throws(() => checkKnownKeys([1], ['a'], 'f'), /f: options must be an object; got \[1\]/);
  assert.throws(() => checkKnownKeys(3, ['a'], 'f'), /got 3/);
  const t = tf.zeros([2, 3]);
  assert.throws(() => checkKnownKeys(t, ['a'], 'f'), /float32 tensor of shape \[2, 3\]/);
  t.dispose();
});

test('closestName and describeValue', () => {
  assert.equal(closestName('inti', ['init', 'seed']), 'init');
  assert.equal(closestName('x', ['init', 'seed']), undefined);
  assert.equal(describeValue(NaN), 'NaN');
  assert.equal(describeValue('a'), '"a"');
  assert.equal(describeValue(() => 1), 'a function');
});
