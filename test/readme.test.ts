// Runs every README code block marked `<!-- readme-test -->` as a program, with the package
// imports pointed at the source tree, so the README's examples are known to work as written.
import {tf} from './setup.js';
import {test} from 'node:test';
import assert from 'node:assert/strict';
import {execFileSync} from 'node:child_process';
import {readFileSync, rmSync, writeFileSync} from 'node:fs';
import {join, resolve} from 'node:path';

const root = resolve('.');
const readme = readFileSync(join(root, 'README.md'), 'utf8');
const blocks = [...readme.matchAll(/<!-- readme-test -->\s*```ts\n([\s\S]*?)```/g)].map((m) => m[1]);

test('the README has runnable examples', () => {
  assert.ok(blocks.length >= 2, `found ${blocks.length} marked examples`);
  assert.ok(tf.getBackend() === 'cpu', 'test set-up selected the cpu backend');
});

blocks.forEach((code, i) => {
  test(`README example ${i + 1} runs`, () => {
    const program = code
      .replaceAll("from 'tfjs-deep-adversarial/node'", `from '${join(root, 'src/node.js')}'`)
      .replaceAll("from 'tfjs-deep-adversarial'", `from '${join(root, 'src/index.js')}'`);
    const file = join(root, 'test', `.readme-example-${i + 1}.ts`);
    writeFileSync(file, `${program}\nexport {};\n`);
    try {
      execFileSync(process.execPath, ['--import', 'tsx', file], {cwd: root, stdio: ['ignore', 'pipe', 'pipe'], timeout: 240_000});
    } catch (e) {
      const err = e as {stderr?: Buffer; stdout?: Buffer};
      assert.fail(`README example ${i + 1} failed:\n${err.stderr?.toString() ?? ''}${err.stdout?.toString() ?? ''}`);
    } finally {
      rmSync(file, {force: true});
    }
  });
});
