#!/usr/bin/env node
// npm run test:compat — proves the published package works next to the oldest and the newest
// supported tfjs, as a user would install it:
//
//   1. builds and packs the tarball (`npm pack`) and checks its contents: no tfjs package (or any
//      other package) among its runtime dependencies, source maps carry their sources, the full
//      Apache-2.0 text, README links point at files inside the tarball or at absolute URLs;
//   2. for each tfjs version (default: 4.10.0, the oldest the peer range admits, and the newest 4.x
//      on the registry) creates a temporary project, `npm install @tensorflow/tfjs@<v> <tarball>`,
//      and checks that `npm ls --all` is clean and holds exactly one tfjs-core and one tfjs-layers;
//   3. runs scripts/compat/smoke.mjs there (deep fit and fitDataset, strip, save/load through the
//      `/node` entry's fileSystem handler, evaluateRobustness, a residual model), requires both
//      entries from CommonJS, and type-checks scripts/compat/types.ts with TypeScript's node10,
//      node16 and bundler module resolutions (plus a negative control that must fail).
//
//   4. installs the CLI package (scripts/pack-cli.mjs) next to the library tarball and runs the command.
//
// Needs the npm registry. Options: --tfjs 4.10.0,latest   --no-build   --no-cli   --keep (leave the projects)
import {spawnSync} from 'node:child_process';
import {copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync} from 'node:fs';
import {tmpdir} from 'node:os';
import {dirname, join, relative} from 'node:path';
import {fileURLToPath} from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const flag = (name) => args.includes(name);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 && args[i + 1] ? args[i + 1] : dflt;
};
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');

const failures = [];
const timings = [];
function fail(msg) {
  failures.push(msg);
  process.stdout.write(`  FAIL ${msg}\n`);
}
function ok(msg) {
  process.stdout.write(`  ok   ${msg}\n`);
}
function check(cond, msg, detail = '') {
  if (cond) ok(msg);
  else fail(detail ? `${msg}: ${detail}` : msg);
  return cond;
}
async function step(name, fn) {
  const t0 = Date.now();
  process.stdout.write(`# ${name}\n`);
  try {
    return await fn();
  } catch (e) {
    fail(`${name}: ${e instanceof Error ? e.message : String(e)}`);
    return undefined;
  } finally {
    const s = (Date.now() - t0) / 1000;
    timings.push([name, s]);
    process.stdout.write(`  (${s.toFixed(1)} s)\n`);
  }
}
function run(cmd, argv, cwd, {allowFail = false} = {}) {
  const r = spawnSync(cmd, argv, {cwd, encoding: 'utf8', maxBuffer: 256 * 1024 * 1024});
  if (r.error) throw r.error;
  if (r.status !== 0 && !allowFail) {
    throw new Error(`\`${cmd} ${argv.join(' ')}\` exited with ${r.status}\n${(r.stderr || '').slice(-3000)}${(r.stdout || '').slice(-2000)}`);
  }
  return r;
}

const work = mkdtempSync(join(tmpdir(), 'tfjs-da-compat-'));
const t0 = Date.now();
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));

// ---------------------------------------------------------------------------------------------
if (!flag('--no-build')) await step('build', () => run(npm, ['run', 'build'], root));

const packed = await step('pack and inspect the tarball', () => {
  const r = run(npm, ['pack', '--json', '--pack-destination', work], root);
  const info = JSON.parse(r.stdout)[0];
  const tarball = join(work, info.filename);
  const files = new Set(info.files.map((f) => f.path));
  ok(`${info.filename}: ${info.files.length} files, ${(info.size / 1024).toFixed(1)} kB packed, ${(info.unpackedSize / 1024).toFixed(1)} kB unpacked`);
  const x = join(work, 'unpacked');
  mkdirSync(x);
  run('tar', ['-xzf', tarball, '-C', x], work);
  const dir = join(x, 'package');
  const man = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));

  const runtime = {...man.dependencies, ...man.optionalDependencies};
  const tfjsRuntime = Object.keys(runtime).filter((n) => n.startsWith('@tensorflow/'));
  check(tfjsRuntime.length === 0, 'no tfjs package in dependencies/optionalDependencies', tfjsRuntime.join(', '));
  // Every tfjs package is an *optional* peer, the required ones (core, layers) included: npm (7+)
  // installs missing required peers at the newest matching version next to the dependent, so
  // `npm install @tensorflow/tfjs@4.10.0 tfjs-deep-adversarial` put tfjs-core/layers 4.22 at the top
  // and nested tfjs's own 4.10 copies (two tfjs-core instances: SymbolicTensor errors). Optional
  // peers are never auto-installed but npm still enforces their range (ERESOLVE on tfjs 3).
  for (const p of ['@tensorflow/tfjs-core', '@tensorflow/tfjs-layers', '@tensorflow/tfjs-backend-cpu', '@tensorflow/tfjs-backend-wasm', '@tensorflow/tfjs-node']) {
    check(man.peerDependencies?.[p] && man.peerDependenciesMeta?.[p]?.optional === true, `${p} is an optional peer (${man.peerDependencies?.[p]})`);
  }

  // Source maps: every map carries the text of every source it names.
  const maps = [...files].filter((f) => f.endsWith('.map'));
  const badMaps = maps.filter((f) => {
    const m = JSON.parse(readFileSync(join(dir, f), 'utf8'));
    return !Array.isArray(m.sourcesContent) || m.sourcesContent.length !== m.sources.length ||
      m.sourcesContent.some((s, i) => typeof s !== 'string' && !files.has(join(dirname(f), m.sources[i])));
  });
  check(badMaps.length === 0, `${maps.length} source maps, each with sourcesContent`, `${badMaps.length} without, e.g. ${badMaps.slice(0, 3).join(', ')}`);

  const license = readFileSync(join(dir, 'LICENSE'), 'utf8');
  check(/TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION/.test(license) && /END OF TERMS AND CONDITIONS/.test(license) && man.license === 'Apache-2.0',
    'LICENSE holds the full Apache-2.0 text');

  // README links: relative targets must be in the tarball (npm shows the README without the repository).
  const readme = readFileSync(join(dir, 'README.md'), 'utf8');
  const links = [...readme.matchAll(/\]\(([^)\s]+)\)/g)].map((m) => m[1]);
  const broken = links.filter((l) => !/^(https?:|mailto:|#)/.test(l) && !files.has(l.split('#')[0].replace(/^\.\//, '')));
  check(broken.length === 0, `README: ${links.length} links, none relative to a file outside the tarball`, broken.join(', '));

  for (const e of ['.', './node']) {
    for (const cond of ['import', 'require']) {
      const t = man.exports[e][cond];
      check(files.has(t.default.replace(/^\.\//, '')) && files.has(t.types.replace(/^\.\//, '')), `exports['${e}'].${cond} files are in the tarball`);
    }
  }
  return {tarball, man};
});

// ---------------------------------------------------------------------------------------------
let versions = opt('--tfjs', '4.10.0,latest').split(',');
if (versions.includes('latest')) {
  const all = await step('newest @tensorflow/tfjs inside the peer range', () => {
    const range = pkg.peerDependencies['@tensorflow/tfjs-core'];
    const r = run(npm, ['view', `@tensorflow/tfjs@${range}`, 'version', '--json'], root);
    const v = JSON.parse(r.stdout);
    const newest = Array.isArray(v) ? v[v.length - 1] : v;
    ok(`${range} → ${newest}`);
    return newest;
  });
  versions = versions.map((v) => (v === 'latest' ? all : v)).filter(Boolean);
}

const results = {};
for (const version of packed ? versions : []) {
  const proj = join(work, `tfjs-${version}`);
  mkdirSync(proj);
  writeFileSync(join(proj, 'package.json'), JSON.stringify({name: `compat-tfjs-${version.replace(/\W/g, '-')}`, private: true, type: 'module'}, null, 2));
  const installed = await step(`tfjs ${version}: npm install @tensorflow/tfjs@${version} ${relative(work, packed.tarball)}`, () => {
    run(npm, ['install', '--no-audit', '--no-fund', `@tensorflow/tfjs@${version}`, packed.tarball], proj);
    const ls = run(npm, ['ls', '--all', '--parseable'], proj, {allowFail: true});
    check(ls.status === 0, '`npm ls --all` reports no invalid, missing or extraneous package', (ls.stderr || '').split('\n').slice(0, 4).join(' | '));
    const paths = ls.stdout.split('\n').filter(Boolean);
    for (const name of ['@tensorflow/tfjs-core', '@tensorflow/tfjs-layers']) {
      const copies = paths.filter((p) => p.replace(/\\/g, '/').endsWith(`node_modules/${name}`));
      const vs = copies.map((p) => JSON.parse(readFileSync(join(p, 'package.json'), 'utf8')).version);
      check(copies.length === 1 && vs[0] === version, `one copy of ${name} (${vs.join(', ')})`, copies.map((p) => relative(proj, p)).join(', '));
    }
    // What the library itself brings: every dependency of tfjs-deep-adversarial that is not a peer.
    const tree = JSON.parse(run(npm, ['ls', '--all', '--json'], proj, {allowFail: true}).stdout);
    const own = tree.dependencies?.['tfjs-deep-adversarial']?.dependencies ?? {};
    const peers = new Set(Object.keys(packed.man.peerDependencies ?? {}));
    const nonPeer = Object.keys(own).filter((n) => !peers.has(n));
    check(Object.keys(packed.man.dependencies ?? {}).length === 0 && nonPeer.length === 0,
      `the library brings no runtime dependency besides its peers (${nonPeer.join(', ') || 'none'})`);
    const charting = paths.map((p) => p.replace(/\\/g, '/').split('node_modules/').pop()).filter((n) => /^(vega|vega-.*|commander|cli-progress|tfjs-deep-adversarial-cli)$/.test(n));
    check(charting.length === 0, `\`npm ls --all\`: no CLI or charting package (${charting.join(', ') || 'none'}); ${paths.length - 1} packages in all`);
    return {packages: paths.length - 1, charting};
  });
  if (!installed) continue;

  results[version] = {...installed};
  await step(`tfjs ${version}: deep fit, fitDataset, strip, save/load, evaluateRobustness (smoke.mjs)`, () => {
    copyFileSync(join(root, 'scripts', 'compat', 'smoke.mjs'), join(proj, 'smoke.mjs'));
    const r = run(process.execPath, ['smoke.mjs'], proj);
    const line = r.stdout.split('\n').filter((l) => l.startsWith('{')).pop();
    const out = JSON.parse(line);
    check(out.ok && out.tfjsCore === version && out.tfjsLayers === version, `ran on tfjs-core ${out.tfjsCore}, tfjs-layers ${out.tfjsLayers}`);
    ok(`loss ${out.loss.join(' → ')}, adversarial objective ${out.advObjective.join(' → ')}, clean ${out.cleanAccuracy}, worst case ${JSON.stringify(out.worstCase)} (${out.seconds} s)`);
    results[version].smoke = out;
  });

  await step(`tfjs ${version}: require() both entries from CommonJS`, () => {
    writeFileSync(join(proj, 'cjs.cjs'), [
      `const tf = require('@tensorflow/tfjs');`,
      `const lib = require('tfjs-deep-adversarial');`,
      `const node = require('tfjs-deep-adversarial/node');`,
      `const m = tf.sequential({layers: [tf.layers.dense({inputShape: [3], units: 2})]});`,
      `const adv = lib.instrument(m);`,
      `if (typeof node.fileSystem !== 'function' || node.instrument !== lib.instrument) throw new Error('node entry');`,
      `if (!adv.layers.some(lib.isDisturbance)) throw new Error('no Disturbance layer');`,
      `if (!tf.serialization.SerializationMap.getMap().classNameMap.Disturbance) throw new Error('Disturbance not registered in the tfjs-core the user imports');`,
      `console.log('cjs ok');`,
    ].join('\n'));
    const r = run(process.execPath, ['cjs.cjs'], proj);
    check(r.stdout.includes('cjs ok'), 'require() of both entries, Disturbance registered in the user\'s tfjs-core');
  });

  await step(`tfjs ${version}: tsc --noEmit on types.ts (node10, node16, bundler)`, () => {
    copyFileSync(join(root, 'scripts', 'compat', 'types.ts'), join(proj, 'types.ts'));
    writeFileSync(join(proj, 'bad.ts'), `import {fileSystem} from 'tfjs-deep-adversarial/not-an-entry';\nexport {fileSystem};\n`);
    const modes = [
      ['node10', {module: 'commonjs', moduleResolution: 'node10'}],
      ['node16', {module: 'node16', moduleResolution: 'node16'}],
      ['bundler', {module: 'esnext', moduleResolution: 'bundler'}],
    ];
    const tsconfig = (name, mode, file) => {
      writeFileSync(join(proj, `tsconfig.${name}.json`), JSON.stringify({
        compilerOptions: {...mode, target: 'es2020', strict: true, noEmit: true, skipLibCheck: true, types: []}, files: [file]}));
      return ['-p', `tsconfig.${name}.json`];
    };
    for (const [name, mode] of modes) {
      const r = run(process.execPath, [tsc, ...tsconfig(name, mode, 'types.ts')], proj, {allowFail: true});
      check(r.status === 0, `tsc --moduleResolution ${name}: both entries resolve and type-check`, (r.stdout + r.stderr).trim().split('\n').slice(0, 6).join(' | '));
    }
    const neg = run(process.execPath, [tsc, ...tsconfig('negative', modes[0][1], 'bad.ts')], proj, {allowFail: true});
    check(neg.status !== 0 && /TS2307/.test(neg.stdout), 'negative control: an unknown subpath fails to resolve under node10 (TS2307)');
  });
}

// ---------------------------------------------------------------------------------------------
// The CLI package (cli/, packed by scripts/pack-cli.mjs) installed next to the library tarball.
if (packed && !flag('--no-cli')) {
  await step('tfjs-deep-adversarial-cli: npm install <library tarball> <cli tarball>; the command runs', () => {
    const r = run(process.execPath, [join(root, 'scripts', 'pack-cli.mjs'), '--out', work], root);
    const cliTarball = r.stdout.trim().split('\n').pop();
    const proj = join(work, 'cli-project');
    mkdirSync(proj);
    writeFileSync(join(proj, 'package.json'), JSON.stringify({name: 'compat-cli', private: true}, null, 2));
    run(npm, ['install', '--no-audit', '--no-fund', packed.tarball, cliTarball], proj);
    const ls = run(npm, ['ls', '--all', '--parseable'], proj, {allowFail: true});
    check(ls.status === 0, '`npm ls --all` is clean');
    const cores = ls.stdout.split('\n').filter((p) => p.replace(/\\/g, '/').endsWith('node_modules/@tensorflow/tfjs-core'));
    check(cores.length === 1, `one copy of @tensorflow/tfjs-core (${cores.length})`);
    const v = run(npm, ['exec', '--no', '--', 'tfjs-deep-adversarial', '--version'], proj, {allowFail: true});
    check(v.status === 0 && v.stdout.trim() === pkg.version, `\`npx tfjs-deep-adversarial --version\` prints ${v.stdout.trim() || v.stderr.trim().split('\n')[0]}`);
    const h = run(npm, ['exec', '--no', '--', 'tfjs-deep-adversarial', 'train', '--help'], proj, {allowFail: true});
    check(h.status === 0 && /--method/.test(h.stdout), '`npx tfjs-deep-adversarial train --help` exits 0');
  });
}

const total = (Date.now() - t0) / 1000;
process.stdout.write(`\n# summary (${total.toFixed(1)} s)\n`);
for (const [name, s] of timings) process.stdout.write(`  ${s.toFixed(1).padStart(6)} s  ${name}\n`);
for (const [v, r] of Object.entries(results)) {
  process.stdout.write(`  tfjs ${v}: ${r.packages} packages installed; smoke ${r.smoke ? 'ok' : 'FAILED'}\n`);
}
if (flag('--keep')) process.stdout.write(`  projects kept in ${work}\n`);
else rmSync(work, {recursive: true, force: true});
if (failures.length > 0) {
  process.stdout.write(`\n${failures.length} check(s) failed:\n${failures.map((f) => `  - ${f}`).join('\n')}\n`);
  process.exit(1);
}
process.stdout.write('all compatibility checks passed\n');
