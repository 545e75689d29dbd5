#!/usr/bin/env node
// npm run test:browser — builds examples/browser, serves it on 127.0.0.1 and drives Debian's
// chromium (headless, through playwright-core; no browser download) on the cpu, wasm and WebGL
// (SwiftShader) backends. For each backend it asserts that the page trained with finite losses,
// measured clean and PGD accuracy, drew its charts (line paths with points, one bar per
// Disturbance layer) and the digit grid (8 non-blank cells), and that the page logged no error;
// it saves a full-page screenshot to test-results/browser/<backend>.png.
//
// Options: --backends cpu,wasm,webgl   --epochs 1   --examples 1024   --chromium /usr/bin/chromium
import {chromium} from 'playwright-core';
import {mkdirSync, mkdtempSync, rmSync, existsSync} from 'node:fs';
import {tmpdir} from 'node:os';
import {dirname, join} from 'node:path';
import {fileURLToPath} from 'node:url';
import {buildBrowserExample} from '../examples/browser/build.mjs';
import {serve} from '../examples/browser/serve.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const opt = (name, d) => (args.includes(name) ? args[args.indexOf(name) + 1] : d);
const backends = opt('--backends', 'cpu,wasm,webgl').split(',');
const epochs = Number(opt('--epochs', '1'));
const examples = Number(opt('--examples', '2048'));
const executablePath = opt('--chromium', process.env.CHROMIUM ?? '/usr/bin/chromium');
const outDir = join(root, 'test-results', 'browser');
const timeoutMs = Number(opt('--timeout', '600')) * 1000;

if (!existsSync(executablePath)) {
  console.error(`test:browser: no chromium at ${executablePath}; install it (apt-get install -y chromium) or pass --chromium PATH.`);
  process.exit(1);
}
mkdirSync(outDir, {recursive: true});
const t0 = Date.now();
const built = await buildBrowserExample({train: examples, test: 512});
console.log(`# built the example: main.js ${(built.bundleBytes / 1024).toFixed(0)} kB (${built.seconds.toFixed(1)} s)`);
const {server, url} = await serve(built.out, 0);
const profile = mkdtempSync(join(tmpdir(), 'tfjs-da-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath,
  headless: true,
  viewport: {width: 1240, height: 1000},
  args: [
    '--no-sandbox',
    '--use-angle=swiftshader',
    '--enable-unsafe-swiftshader',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--no-first-run',
  ],
});

const failures = [];
const rows = [];
function check(backend, cond, msg) {
  console.log(`  ${cond ? 'ok  ' : 'FAIL'} ${msg}`);
  if (!cond) failures.push(`${backend}: ${msg}`);
}
const finite = (a) => Array.isArray(a) && a.length > 0 && a.every((v) => typeof v === 'number' && Number.isFinite(v));

try {
  for (const backend of backends) {
    console.log(`# ${backend}`);
    const tb = Date.now();
    const page = await context.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
    page.on('console', (m) => {
      if (m.type() === 'error') errors.push(`console.error: ${m.text()}`);
    });
    await page.goto(`${url}?backend=${backend}&epochs=${epochs}&examples=${examples}&auto=1`);
    await page.waitForFunction(() => ['done', 'error'].includes(document.body.dataset.status ?? ''), null, {timeout: timeoutMs, polling: 500});
    const r = await page.evaluate(() => window.__result);
    const status = await page.evaluate(() => document.body.dataset.status);
    const seconds = (Date.now() - tb) / 1000;
    check(backend, status === 'done', `training finished (status ${status}${r?.error ? `: ${r.error}` : ''})`);
    if (r && status === 'done') {
      check(backend, r.backend === backend, `ran on the ${r.backend} backend`);
      check(backend, finite(r.loss) && r.loss.length === r.batches && r.batches === epochs * Math.ceil(examples / 64), `${r.loss.length} batch losses, all finite (${r.loss[0]?.toFixed(3)} → ${r.loss[r.loss.length - 1]?.toFixed(3)})`);
      check(backend, finite(r.advObjective), 'adversarial objective finite every batch');
      const clean = r.cleanAccuracy.map((p) => p.y);
      const robust = r.robustAccuracy.map((p) => p.y);
      check(backend, clean.length >= 2 && clean.every((v) => v >= 0 && v <= 1) && robust.every((v, i) => v >= 0 && v <= clean[i] + 1e-9),
        `held-out accuracy: clean ${clean.map((v) => v.toFixed(2)).join(' ')}; PGD ${robust.map((v) => v.toFixed(2)).join(' ')}`);
      check(backend, clean[clean.length - 1] > 0.5, `the model learned (clean accuracy ${clean[clean.length - 1]?.toFixed(3)} > 0.5)`);
      const norms = Object.values(r.layerNorms);
      check(backend, norms.length === 3 && norms.every((v) => Number.isFinite(v) && v > 0), `per-layer ‖dℓ‖: ${JSON.stringify(r.layerNorms)}`);
      check(backend, r.grid.length === 8, `digit grid: ${r.grid.map((g) => `${g.label}:${g.before}→${g.after}`).join(' ')}`);
    }
    const drawn = await page.evaluate(() => {
      const paths = (id) => [...document.querySelectorAll(`#${id} path.line`)].map((p) => (p.getAttribute('d') ?? '').split(/[ML]/).filter(Boolean).length);
      const uniform = (c) => {
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        for (let i = 0; i < d.length; i += 4) if (d[i] !== d[0] || d[i + 1] !== d[1] || d[i + 2] !== d[2]) return false;
        return true;
      };
      // Per cell: input, disturbance, disturbed input. The disturbance of one digit may be 0.
      const cells = [...document.querySelectorAll('#grid .digit')].map((cell) => [...cell.querySelectorAll('canvas')].map(uniform));
      const blank = cells.filter((c) => c[0] || c[2]).length;
      const zeroDisturbances = cells.filter((c) => c[1]).length;
      return {loss: paths('chart-loss'), acc: paths('chart-acc'), bars: document.querySelectorAll('#chart-norms rect.bar').length,
        cells: cells.length, canvases: document.querySelectorAll('#grid canvas').length, blank, zeroDisturbances};
    });
    check(backend, drawn.loss.length === 2 && drawn.loss.every((n) => n >= 2), `loss chart: 2 lines with ${drawn.loss.join(', ')} points`);
    check(backend, drawn.acc.length === 2 && drawn.acc.every((n) => n >= 2), `accuracy chart: 2 lines with ${drawn.acc.join(', ')} points`);
    check(backend, drawn.bars === 3, `‖dℓ‖ chart: ${drawn.bars} bars`);
    check(backend, drawn.cells === 8 && drawn.canvases === 24 && drawn.blank === 0 && drawn.zeroDisturbances < 8, `digit grid: ${drawn.cells} cells, ${drawn.canvases} canvases, ${drawn.blank} blank digits, ${drawn.zeroDisturbances} zero disturbances`);
    check(backend, errors.length === 0, `no page errors${errors.length ? `: ${errors.slice(0, 3).join(' | ')}` : ''}`);
    const shot = join(outDir, `${backend}.png`);
    await page.screenshot({path: shot, fullPage: true});
    console.log(`  screenshot ${shot} (${seconds.toFixed(1)} s)`);
    rows.push([backend, seconds, r?.seconds]);
    await page.close();
  }
} finally {
  await context.close();
  server.close();
  rmSync(profile, {recursive: true, force: true});
}

console.log(`\n# summary (${((Date.now() - t0) / 1000).toFixed(1)} s total; ${epochs} epoch(s) of ${examples} examples, batch 64, deep attack with 4 gradient evaluations)`);
for (const [b, s, inPage] of rows) console.log(`  ${b.padEnd(6)} ${s.toFixed(1)} s (page: ${inPage?.toFixed(1) ?? '—'} s)`);
if (failures.length) {
  console.log(`\n${failures.length} check(s) failed:\n${failures.map((f) => `  - ${f}`).join('\n')}`);
  process.exit(1);
}
console.log('all browser checks passed');
