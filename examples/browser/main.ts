// The browser example: deep adversarial training of a small MNIST MLP with live charts.
// Bundled by examples/browser/build.mjs (esbuild) into examples/browser/dist/ together with a
// small MNIST subset and the tfjs wasm binaries; served by examples/browser/serve.mjs.
//
// Query parameters (used by `npm run test:browser`): backend=webgl|wasm|cpu, epochs, examples,
// epsilon, auto=1 (start at once). When it finishes, `document.body.dataset.status` is 'done'
// (or 'error') and `window.__result` holds what it measured.
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import '@tensorflow/tfjs-backend-cpu';
import '@tensorflow/tfjs-backend-webgl';
import {setWasmPaths} from '@tensorflow/tfjs-backend-wasm';
import {adversarialCallback, deepAttack, instrument, pgdAttack, predictDisturbed} from '../../src/index.js';

setWasmPaths('./');

interface Point {
  x: number;
  y: number;
}
interface Series {
  name: string;
  color: string;
  points: Point[];
}
interface Result {
  backend: string;
  epochs: number;
  batches: number;
  loss: number[];
  advObjective: number[];
  cleanAccuracy: Point[];
  robustAccuracy: Point[];
  layerNorms: Record<string, number>;
  grid: {label: number; before: number; after: number}[];
  seconds: number;
  error?: string;
}
declare global {
  interface Window {
    __result?: Result;
  }
}

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const params = new URLSearchParams(location.search);
for (const id of ['backend', 'epochs', 'examples', 'epsilon']) {
  const v = params.get(id);
  if (v != null) $<HTMLInputElement>(id).value = v;
}

function setStatus(text: string, error = false): void {
  const s = $('status');
  s.textContent = text;
  s.classList.toggle('error', error);
}

// ------------------------------------------------------------------------------------ data

interface Mnist {
  xTrain: tf.Tensor2D;
  yTrain: tf.Tensor2D;
  xTest: tf.Tensor2D;
  yTest: tf.Tensor2D;
  testLabels: Uint8Array;
}

/** mnist-subset.bin (written by build.mjs): u32 nTrain, u32 nTest, then images (784 B each) and labels (1 B each) of train, then of test. */
async function loadMnist(limit: number): Promise<Mnist> {
  const buf = await (await fetch('./mnist-subset.bin')).arrayBuffer();
  const [nTrain, nTest] = new Uint32Array(buf, 0, 2);
  let off = 8;
  const take = (n: number) => {
    const a = new Uint8Array(buf, off, n);
    off += n;
    return a;
  };
  const trainImages = take(nTrain * 784);
  const trainLabels = take(nTrain);
  const testImages = take(nTest * 784);
  const testLabels = take(nTest);
  const n = Math.min(limit, nTrain);
  const tensors = tf.tidy(() => ({
    xTrain: tf.div(tf.tensor2d(trainImages.subarray(0, n * 784), [n, 784], 'int32'), 255) as tf.Tensor2D,
    yTrain: tf.cast(tf.oneHot(tf.tensor1d(trainLabels.subarray(0, n), 'int32'), 10), 'float32') as tf.Tensor2D,
    xTest: tf.div(tf.tensor2d(testImages, [nTest, 784], 'int32'), 255) as tf.Tensor2D,
    yTest: tf.cast(tf.oneHot(tf.tensor1d(testLabels, 'int32'), 10), 'float32') as tf.Tensor2D,
  }));
  return {...tensors, testLabels: testLabels.slice()};
}

// ------------------------------------------------------------------------------------ charts

const SVG = 'http://www.w3.org/2000/svg';
function el(name: string, attrs: Record<string, string | number>, parent?: Element, text?: string): SVGElement {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  parent?.appendChild(e);
  return e;
}
const fmt = (v: number) => (Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(2) : v.toFixed(3));

function lineChart(svgId: string, legendId: string, series: Series[], o: {xLabel: string; yMin?: number; yMax?: number}): void {
  const svg = $(svgId) as unknown as SVGSVGElement;
  svg.replaceChildren();
  const w = svg.clientWidth || 360;
  const h = svg.clientHeight || 190;
  svg.setAttribute('viewBox', `0 0 ${w} ${h}`);
  const m = {l: 40, r: 8, t: 8, b: 24};
  const all = series.flatMap((s) => s.points);
  if (all.length === 0) return;
  const xs = all.map((p) => p.x);
  const ys = all.map((p) => p.y).filter(Number.isFinite);
  const x0 = Math.min(...xs);
  const x1 = Math.max(...xs, x0 + 1);
  let y0 = o.yMin ?? Math.min(...ys);
  let y1 = o.yMax ?? Math.max(...ys);
  if (y1 - y0 < 1e-9) [y0, y1] = [y0 - 0.5, y1 + 0.5];
  const sx = (x: number) => m.l + ((x - x0) / (x1 - x0)) * (w - m.l - m.r);
  const sy = (y: number) => h - m.b - ((y - y0) / (y1 - y0)) * (h - m.t - m.b);
  for (let i = 0; i <= 4; i++) {
    const y = y0 + ((y1 - y0) * i) / 4;
    el('line', {class: 'grid', x1: m.l, x2: w - m.r, y1: sy(y), y2: sy(y)}, svg);
    el('text', {x: m.l - 4, y: sy(y) + 3, 'text-anchor': 'end'}, svg, fmt(y));
  }
  el('line', {class: 'axis', x1: m.l, x2: w - m.r, y1: h - m.b, y2: h - m.b}, svg);
  el('line', {class: 'axis', x1: m.l, x2: m.l, y1: m.t, y2: h - m.b}, svg);
  el('text', {x: m.l, y: h - 6}, svg, String(x0));
  el('text', {x: w - m.r, y: h - 6, 'text-anchor': 'end'}, svg, `${x1} ${o.xLabel}`);
  for (const s of series) {
    const pts = s.points.filter((p) => Number.isFinite(p.y));
    if (pts.length === 0) continue;
    const d = pts.map((p, i) => `${i === 0 ? 'M' : 'L'}${sx(p.x).toFixed(1)},${sy(p.y).toFixed(1)}`).join('');
    el('path', {class: 'line', d, stroke: s.color, 'data-series': s.name}, svg);
    if (pts.length === 1) el('circle', {cx: sx(pts[0].x), cy: sy(pts[0].y), r: 3, fill: s.color}, svg);
  }
  $(legendId).innerHTML = series
    .map((s) => `<span><i style="background:${s.color}"></i>${s.name}${s.points.length ? ` ${fmt(s.points[s.points.length - 1].y)}` : ''}</span>`)
    .join('');
}

function barChart(svgId: string, values: Record<string, number>): void {
  const svg = $(svgId) as unknown as SVGSVGElement;
  svg.replaceChildren();
  const w = svg.clientWidth || 360;
  const h = svg.clientHeight || 190;
  svg.setAttribute('viewBox', `0 0 ${w} ${h}`);
  const names = Object.keys(values);
  if (names.length === 0) return;
  const max = Math.max(...Object.values(values), 1e-9);
  const m = {l: 8, r: 8, t: 14, b: 30};
  const bw = (w - m.l - m.r) / names.length;
  names.forEach((name, i) => {
    const v = values[name];
    const bh = (v / max) * (h - m.t - m.b);
    const x = m.l + i * bw + bw * 0.15;
    const bar = el('rect', {class: 'bar', x, y: h - m.b - bh, width: bw * 0.7, height: Math.max(bh, 0.5), 'data-layer': name}, svg);
    el('title', {}, bar, name);
    el('text', {x: x + bw * 0.35, y: h - m.b - bh - 3, 'text-anchor': 'middle'}, svg, fmt(v));
    el('text', {x: x + bw * 0.35, y: h - m.b + 12, 'text-anchor': 'middle'}, svg, i === 0 ? 'd0 (input)' : `d${i}`);
  });
}

// ------------------------------------------------------------------------------------ digit grid

function drawGray(canvas: HTMLCanvasElement, pixels: Float32Array | Int32Array | Uint8Array, scale = 1): void {
  canvas.width = 28;
  canvas.height = 28;
  const ctx = canvas.getContext('2d')!;
  const img = ctx.createImageData(28, 28);
  for (let i = 0; i < 784; i++) {
    const v = Math.max(0, Math.min(255, Math.round(pixels[i] * scale)));
    img.data.set([v, v, v, 255], i * 4);
  }
  ctx.putImageData(img, 0, 0);
}

/** Diverging map for the disturbance: red for positive, blue for negative, white for 0. */
function drawDiverging(canvas: HTMLCanvasElement, d: Float32Array | Int32Array | Uint8Array, bound: number): void {
  canvas.width = 28;
  canvas.height = 28;
  const ctx = canvas.getContext('2d')!;
  const img = ctx.createImageData(28, 28);
  for (let i = 0; i < 784; i++) {
    const t = Math.max(-1, Math.min(1, d[i] / bound));
    const a = Math.round(255 * (1 - Math.abs(t)));
    img.data.set(t >= 0 ? [255, a, a, 255] : [a, a, 255, 255], i * 4);
  }
  ctx.putImageData(img, 0, 0);
}

// ------------------------------------------------------------------------------------ training

function buildModel(): tfl.Sequential {
  const init = (seed: number) => tfl.initializers.glorotUniform({seed});
  const model = tfl.sequential({layers: [
    tfl.layers.dense({inputShape: [784], units: 64, activation: 'relu', kernelInitializer: init(1)}),
    tfl.layers.dense({units: 32, activation: 'relu', kernelInitializer: init(2)}),
    tfl.layers.dense({units: 10, activation: 'softmax', kernelInitializer: init(3)}),
  ]});
  model.compile({optimizer: tf.train.adam(0.005), loss: 'categoricalCrossentropy', metrics: ['accuracy']});
  return model;
}

const accuracy = (model: tfl.LayersModel, x: tf.Tensor, y: tf.Tensor, pred?: tf.Tensor): number =>
  tf.tidy(() => {
    const p = pred ?? (model.predict(x) as tf.Tensor);
    return tf.mean(tf.cast(tf.equal(tf.argMax(p, 1), tf.argMax(y, 1)), 'float32')).dataSync()[0];
  });

async function run(): Promise<Result> {
  const t0 = performance.now();
  const backend = $<HTMLSelectElement>('backend').value;
  const epochs = Number($<HTMLInputElement>('epochs').value);
  const examples = Number($<HTMLInputElement>('examples').value);
  const epsilon = Number($<HTMLInputElement>('epsilon').value);
  setStatus(`initialising ${backend}…`);
  if (!(await tf.setBackend(backend))) throw new Error(`the ${backend} backend failed to initialise in this browser`);
  await tf.ready();
  if (tf.getBackend() !== backend) throw new Error(`asked for ${backend}, got ${tf.getBackend()}`);
  setStatus(`${backend}: loading MNIST…`);
  const data = await loadMnist(examples);
  const heldX = tf.slice(data.xTest, [0, 0], [128, 784]);
  const heldY = tf.slice(data.yTest, [0, 0], [128, 10]);

  const model = buildModel();
  // Disturbance layers after the input (an L∞ ball of radius ε inside the pixel box) and after each hidden layer.
  const adv = instrument(model, {input: {kind: 'linf', epsilon, box: [0, 1]}, hidden: {kind: 'quadratic', lambda: 10}});
  const batchSize = 64;
  const perEpoch = Math.ceil(data.xTrain.shape[0] / batchSize);
  const result: Result = {backend: tf.getBackend(), epochs, batches: 0, loss: [], advObjective: [], cleanAccuracy: [], robustAccuracy: [], layerNorms: {}, grid: [], seconds: 0};
  const loss: Series = {name: 'training loss (½ clean + ½ at d*)', color: '#e15759', points: []};
  const obj: Series = {name: 'adv. objective J', color: '#4e79a7', points: []};
  const clean: Series = {name: 'clean', color: '#59a14f', points: []};
  const robust: Series = {name: `PGD ε=${epsilon}`, color: '#f28e2b', points: []};
  const evaluate = (step: number) => {
    const c = accuracy(model, heldX, heldY);
    const xAdv = pgdAttack(model, heldX, heldY, {epsilon, steps: 10, clip: [0, 1], seed: 1});
    const r = accuracy(model, xAdv, heldY);
    xAdv.dispose();
    clean.points.push({x: step, y: c});
    robust.points.push({x: step, y: r});
    result.cleanAccuracy.push({x: step, y: c});
    result.robustAccuracy.push({x: step, y: r});
    lineChart('chart-acc', 'legend-acc', [clean, robust], {xLabel: 'batches', yMin: 0, yMax: 1});
  };
  evaluate(0);
  await tf.nextFrame();

  let step = 0;
  const live = new tfl.CustomCallback({
    onBatchEnd: async (_batch, logs) => {
      step++;
      const l = Number(logs?.loss);
      const j = Number(logs?.adv_objective);
      result.loss.push(l);
      result.advObjective.push(j);
      loss.points.push({x: step, y: l});
      obj.points.push({x: step, y: j});
      const norms: Record<string, number> = {};
      for (const [k, v] of Object.entries(logs ?? {})) if (k.startsWith('adv_norm_')) norms[k.slice('adv_norm_'.length)] = Number(v);
      result.layerNorms = norms;
      lineChart('chart-loss', 'legend-loss', [loss, obj], {xLabel: 'batches'});
      barChart('chart-norms', norms);
      if (step % 8 === 0 || step === perEpoch * epochs) evaluate(step);
      setStatus(`${backend}: epoch ${Math.floor((step - 1) / perEpoch) + 1}/${epochs}, batch ${step}/${perEpoch * epochs}, loss ${fmt(l)}`);
      await tf.nextFrame();
    },
  });
  $('norms-caption').textContent = 'd0: the input disturbance (L∞ ≤ ε, pixels kept in [0, 1]); d1, d2: after the hidden layers (penalty 10‖d‖²).';
  await adv.fit(data.xTrain, data.yTrain, {epochs, batchSize, shuffle: true, verbose: 0,
    // Half clean, half adversarial loss per batch, so that a few epochs from scratch already learn.
    callbacks: [adversarialCallback({method: 'deep', maxGradientEvaluations: 4, cleanWeight: 0.5, seed: 1}), live]});
  result.batches = step;

  // The grid: 8 test digits attacked by the deep attack on the trained model.
  setStatus(`${backend}: attacking test digits…`);
  const n = 8;
  const x8 = tf.slice(data.xTest, [200, 0], [n, 784]);
  const y8 = tf.slice(data.yTest, [200, 0], [n, 10]);
  const atk = deepAttack(adv, x8, y8, {maxIterations: 10, project: true, seed: 2});
  // The first Disturbance layer in model order is the one right after the input (d₀).
  const d0 = atk.disturbances[0];
  const before = tf.tidy(() => tf.argMax(model.predict(x8) as tf.Tensor, 1));
  const afterProbs = predictDisturbed(adv, x8, atk.disturbances);
  const after = tf.argMax(afterProbs, 1);
  const xd = tf.tidy(() => tf.clipByValue(tf.add(x8, d0), 0, 1));
  const [px, pd, pxd, pb, pa] = await Promise.all([x8.data(), d0.data(), xd.data(), before.data(), after.data()]);
  const grid = $('grid');
  grid.replaceChildren();
  for (let i = 0; i < n; i++) {
    const label = data.testLabels[200 + i];
    const cell = document.createElement('div');
    cell.className = 'digit';
    const canvases = [0, 1, 2].map(() => document.createElement('canvas'));
    drawGray(canvases[0], px.subarray(i * 784, (i + 1) * 784) as Float32Array, 255);
    drawDiverging(canvases[1], pd.subarray(i * 784, (i + 1) * 784) as Float32Array, epsilon);
    drawGray(canvases[2], pxd.subarray(i * 784, (i + 1) * 784) as Float32Array, 255);
    cell.append(...canvases);
    const cls = (p: number) => (p === label ? 'right' : 'wrong');
    const caption = document.createElement('div');
    caption.innerHTML = `label ${label}: <span class="${cls(pb[i])}">${pb[i]}</span> → <span class="${cls(pa[i])}">${pa[i]}</span>`;
    cell.append(caption);
    grid.append(cell);
    result.grid.push({label, before: pb[i], after: pa[i]});
  }
  tf.dispose([x8, y8, ...atk.disturbances, atk.objective, before, afterProbs, after, xd, heldX, heldY, data.xTrain, data.yTrain, data.xTest, data.yTest]);
  result.seconds = (performance.now() - t0) / 1000;
  const last = (s: Point[]) => s[s.length - 1]?.y ?? NaN;
  setStatus(`${backend}: done in ${result.seconds.toFixed(1)} s — clean ${fmt(last(result.cleanAccuracy))}, PGD ${fmt(last(result.robustAccuracy))}`);
  return result;
}

let running = false;
async function start(): Promise<void> {
  if (running) return;
  running = true;
  document.body.dataset.status = 'running';
  $<HTMLButtonElement>('start').disabled = true;
  try {
    window.__result = await run();
    document.body.dataset.status = 'done';
  } catch (e) {
    const msg = e instanceof Error ? `${e.message}` : String(e);
    setStatus(`error: ${msg}`, true);
    window.__result = {...(window.__result as Result), error: msg};
    document.body.dataset.status = 'error';
    console.error(e);
  } finally {
    running = false;
    $<HTMLButtonElement>('start').disabled = false;
  }
}

$('start').addEventListener('click', () => void start());
if (params.get('auto') === '1') void start();
