#!/usr/bin/env node
// The `tfjs-deep-adversarial` command. Runs the compiled CLI (dist/main.js) of the installed
// tfjs-deep-adversarial-cli package; in a source checkout without that build it runs the TypeScript source
// through tsx (a dev dependency). Exit codes: 0 ok, 1 failure, 2 bad usage, 130 interrupted.
import {existsSync} from 'node:fs';

const compiled = new URL('../dist/main.js', import.meta.url);
const source = new URL('../src/main.ts', import.meta.url);
let main;
if (existsSync(compiled)) {
  ({main} = await import(compiled.href));
} else if (existsSync(source)) {
  try {
    const {register} = await import('tsx/esm/api');
    register();
  } catch {
    process.stderr.write('tfjs-deep-adversarial: the CLI is not built (no cli/dist/main.js) and tsx is not installed; run `npm ci` or `npm run build`.\n');
    process.exit(1);
  }
  ({main} = await import(source.href));
} else {
  process.stderr.write('tfjs-deep-adversarial: this copy of the package has no compiled CLI (dist/main.js is missing).\n');
  process.exit(1);
}
process.exitCode = await main(process.argv.slice(2));
