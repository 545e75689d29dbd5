#!/usr/bin/env node
// npm run pack:cli [-- --out DIR] — the publishable tarball of the CLI workspace (cli/).
// In the repository cli/package.json depends on the library as `file:..` (npm workspaces cannot
// link the root package); this copies the built CLI to a temporary folder, pins that dependency to
// `^<library version>`, adds the LICENSE and runs `npm pack` there. Run `npm run build` first.
import {cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync} from 'node:fs';
import {spawnSync} from 'node:child_process';
import {tmpdir} from 'node:os';
import {dirname, join, resolve} from 'node:path';
import {fileURLToPath} from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const out = resolve(args.includes('--out') ? args[args.indexOf('--out') + 1] : root);
const cli = join(root, 'cli');
if (!existsSync(join(cli, 'dist', 'main.js'))) {
  console.error('pack:cli: cli/dist/main.js is missing; run `npm run build` first.');
  process.exit(1);
}
const lib = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const man = JSON.parse(readFileSync(join(cli, 'package.json'), 'utf8'));
man.dependencies[lib.name] = `^${lib.version}`;
delete man.scripts;
const tmp = mkdtempSync(join(tmpdir(), 'tfjs-da-cli-pack-'));
try {
  for (const f of ['bin', 'dist', 'README.md']) cpSync(join(cli, f), join(tmp, f), {recursive: true});
  cpSync(join(root, 'LICENSE'), join(tmp, 'LICENSE'));
  writeFileSync(join(tmp, 'package.json'), `${JSON.stringify(man, null, 2)}\n`);
  const r = spawnSync(process.platform === 'win32' ? 'npm.cmd' : 'npm', ['pack', '--json', '--pack-destination', out], {cwd: tmp, encoding: 'utf8'});
  if (r.status !== 0) throw new Error(`npm pack failed: ${r.stderr}`);
  const info = JSON.parse(r.stdout)[0];
  console.log(join(out, info.filename));
} finally {
  rmSync(tmp, {recursive: true, force: true});
}
