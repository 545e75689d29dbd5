// The wasm training kernels (src/kernels) against the cpu backend: kernel by kernel, whole-model
// gradients, registration API, and memory over 100 training steps. This file switches to the wasm
// backend itself and restores cpu (and the original wasm kernels) at the end.
import {tf} from './setup.js';
import '@tensorflow/tfjs-backend-wasm';
import * as tfl from '@tensorflow/tfjs-layers';
import assert from 'node:assert/strict';
import {after, before, describe, it} from 'node:test';
import {rand} from './fixtures/random.js';
import {registerWasmKernels, registeredWasmKernels, unregisterWasmKernels} from '../src/index.js';

const TOL = 1e-5;

before(async () => {
  await tf.setBackend('wasm');
  await tf.setBackend('cpu');
});

after(async () => {
  unregisterWasmKernels();
  await tf.setBackend('cpu');
});

/** Runs `fn` on `backend` and returns its outputs as plain arrays (everything disposed). */
async function on(backend: string, fn: () => tf.Tensor | tf.Tensor[]): Promise<Float32Array[]> {
  await tf.setBackend(backend);
  const out = tf.tidy(() => {
    const r = fn();
    return Array.isArray(r) ? r : [r];
  });
  const vals = out.map((t) => t.dataSync() as Float32Array);
  tf.dispose(out);
  return vals;
}

/** max |a − b| / max |b| over all arrays (b is the reference). */
function relErr(a: Float32Array[], b: Float32Array[]): number {
  assert.equal(a.length, b.length);
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    assert.equal(a[i].length, b[i].length, `output ${i} sizes differ`);
    for (let j = 0; j < a[i].length; j++) {
      assert.ok(Number.isFinite(a[i][j]), `output ${i}[${j}] is ${a[i][j]}`);
      diff = Math.max(diff, Math.abs(a[i][j] - b[i][j]));
      scale = Math.max(scale, Math.abs(b[i][j]));
    }
  }
  assert.ok(scale > 0, 'reference is all zeros');
  return diff / scale;
}

/** Compares `fn` on wasm (with the kernels registered) against cpu. Returns the relative error. */
async function compare(fn: () => tf.Tensor | tf.Tensor[], what: string): Promise<number> {
  registerWasmKernels();
  const ref = await on('cpu', fn);
  const got = await on('wasm', fn);
  await tf.setBackend('cpu');
  const e = relErr(got, ref);
  assert.ok(e <= TOL, `${what}: relative error ${e.toExponential(2)} > ${TOL}`);
  return e;
}

const t4 = (shape: number[], seed: number) =>
  tf.tensor4d(rand(shape.reduce((a, b) => a * b, 1), seed), shape as [number, number, number, number]);

type Pad = 'same' | 'valid' | [[number, number], [number, number], [number, number], [number, number]];
interface ConvCase {x: number[]; k: [number, number]; s: number | [number, number]; pad: Pad; note?: string}

const CONV_CASES: ConvCase[] = [
  {x: [2, 7, 7, 3], k: [3, 3], s: 1, pad: 'same'},
  {x: [3, 8, 8, 2], k: [3, 3], s: 2, pad: 'same', note: 'odd batch'},
  {x: [1, 9, 9, 2], k: [4, 4], s: 2, pad: 'valid', note: 'even kernel, batch 1'},
  {x: [2, 10, 11, 3], k: [3, 3], s: 3, pad: 'same'},
  {x: [3, 9, 10, 2], k: [2, 3], s: [2, 3], pad: 'valid', note: 'even kernel'},
  {x: [1, 8, 8, 1], k: [3, 3], s: 2, pad: [[0, 0], [1, 2], [2, 0], [0, 0]], note: 'explicit'},
  {x: [2, 7, 7, 2], k: [2, 2], s: 3, pad: 'valid', note: 'input needs cropping'},
  {x: [5, 6, 6, 3], k: [4, 4], s: 1, pad: 'same', note: 'even kernel, odd batch'},
  {x: [2, 5, 5, 2], k: [3, 3], s: 1, pad: [[0, 0], [3, 3], [0, 1], [0, 0]], note: 'explicit pad > kernel − 1'},
  {x: [3, 9, 9, 4], k: [3, 3], s: [3, 2], pad: 'same'},
  {x: [1, 12, 12, 1], k: [5, 5], s: 1, pad: 'valid'},
];

function outShape(c: ConvCase, channels: number): number[] {
  const info = tf.backend_util.computeConv2DInfo(c.x as [number, number, number, number], [c.k[0], c.k[1], c.x[3], channels], c.s, 1, c.pad);
  return info.outShape;
}

const label = (c: ConvCase) => `x [${c.x}] k ${c.k.join('×')} s ${c.s} ${Array.isArray(c.pad) ? 'explicit ' + JSON.stringify(c.pad.slice(1, 3)) : c.pad}${c.note ? ` (${c.note})` : ''}`;

describe('wasm kernels vs cpu: conv2d gradients', () => {
  for (const [i, c] of CONV_CASES.entries()) {
    it(`Conv2DBackpropFilter and Input, ${label(c)}`, async () => {
      const co = 4;
      const fShape = [c.k[0], c.k[1], c.x[3], co];
      const dyShape = outShape(c, co);
      const eF = await compare(() => tf.engine().runKernel('Conv2DBackpropFilter',
          {x: t4(c.x, 10 + i), dy: t4(dyShape, 20 + i)},
          {strides: c.s, pad: c.pad, dataFormat: 'NHWC', filterShape: fShape} as unknown as tf.NamedAttrMap) as tf.Tensor, 'filter grad');
      const eI = await compare(() => tf.engine().runKernel('Conv2DBackpropInput',
          {dy: t4(dyShape, 30 + i), filter: t4(fShape, 40 + i)},
          {strides: c.s, pad: c.pad, dataFormat: 'NHWC', inputShape: c.x} as unknown as tf.NamedAttrMap) as tf.Tensor, 'input grad');
      console.log(`# conv ${label(c)}: filter ${eF.toExponential(1)}, input ${eI.toExponential(1)}`);
    });
  }
});

describe('wasm kernels vs cpu: NCHW data format', () => {
  it('Conv2DBackpropFilter (via transposes) and Conv2DBackpropInput (the backend\'s own kernel)', async () => {
    const x = [3, 2, 9, 8];
    const attrs = {strides: [2, 1], pad: 'same', dataFormat: 'NCHW'};
    const dyShape = [3, 4, 5, 8];
    await compare(() => tf.engine().runKernel('Conv2DBackpropFilter', {x: t4(x, 1), dy: t4(dyShape, 2)},
        {...attrs, filterShape: [3, 3, 2, 4]} as unknown as tf.NamedAttrMap) as tf.Tensor, 'NCHW filter grad');
    await compare(() => tf.engine().runKernel('Conv2DBackpropInput', {dy: t4(dyShape, 3), filter: t4([3, 3, 2, 4], 4)},
        {...attrs, inputShape: x} as unknown as tf.NamedAttrMap) as tf.Tensor, 'NCHW input grad');
  });
});

describe('wasm kernels vs cpu: depthwise gradients', () => {
  for (const [i, c] of CONV_CASES.entries()) {
    const mult = i % 2 === 0 ? 1 : 2;
    it(`DepthwiseConv2dNativeBackpropFilter and Input, multiplier ${mult}, ${label(c)}`, async () => {
      const fShape = [c.k[0], c.k[1], c.x[3], mult];
      const dyShape = outShape(c, c.x[3] * mult);
      const attrs = {strides: c.s, pad: c.pad, dilations: [1, 1]};
      const eF = await compare(() => tf.engine().runKernel('DepthwiseConv2dNativeBackpropFilter',
          {x: t4(c.x, 50 + i), dy: t4(dyShape, 60 + i)}, {...attrs, filterShape: fShape} as unknown as tf.NamedAttrMap) as tf.Tensor, 'depthwise filter grad');
      const eI = await compare(() => tf.engine().runKernel('DepthwiseConv2dNativeBackpropInput',
          {dy: t4(dyShape, 70 + i), filter: t4(fShape, 80 + i)}, {...attrs, inputShape: c.x} as unknown as tf.NamedAttrMap) as tf.Tensor, 'depthwise input grad');
      console.log(`# depthwise ${label(c)}: filter ${eF.toExponential(1)}, input ${eI.toExponential(1)}`);
    });
  }
});

describe('wasm kernels vs cpu: MaxPoolGrad', () => {
  const cases: Array<{x: number[]; f: number | [number, number]; s: number | [number, number]; pad: 'same' | 'valid'; lo: number; hi: number; relu?: boolean}> = [
    {x: [2, 6, 6, 3], f: 2, s: 2, pad: 'valid', lo: -2, hi: -0.5},
    {x: [3, 7, 7, 2], f: 3, s: 2, pad: 'same', lo: -3, hi: -1},
    {x: [1, 8, 9, 4], f: [3, 2], s: [1, 3], pad: 'same', lo: -1, hi: 1},
    {x: [2, 6, 6, 2], f: 2, s: 2, pad: 'valid', lo: -1, hi: 1, relu: true},
    {x: [2, 9, 9, 1], f: 3, s: 3, pad: 'valid', lo: -1, hi: 0.3, relu: true},
  ];
  for (const [i, c] of cases.entries()) {
    it(`x [${c.x}] in [${c.lo}, ${c.hi}]${c.relu ? ' after relu (ties)' : ''}, pool ${c.f} stride ${c.s} ${c.pad}`, async () => {
      const e = await compare(() => tf.grad((x: tf.Tensor) => {
        const x4 = x as tf.Tensor4D;
        const y = tf.maxPool(c.relu ? tf.relu(x4) : x4, c.f, c.s, c.pad);
        return tf.sum(tf.mul(y, tf.reshape(tf.linspace(0.5, 2, y.size), y.shape)));
      })(tf.add(tf.mul(t4(c.x, 90 + i), (c.hi - c.lo) / 2), (c.hi + c.lo) / 2)), 'maxPool grad');
      console.log(`# maxPool case ${i}: ${e.toExponential(1)}`);
    });
  }
  it('all-negative windows get their gradient (wasm built-in drops it)', async () => {
    registerWasmKernels();
    const [g] = await on('wasm', () => tf.grad((x: tf.Tensor) => tf.sum(tf.maxPool(x as tf.Tensor4D, 2, 2, 'valid')))(tf.add(tf.fill([1, 4, 4, 1], -1), tf.tensor4d(rand(16, 5, 0, 0.1), [1, 4, 4, 1]))));
    await tf.setBackend('cpu');
    assert.equal(g.reduce((a, b) => a + b, 0), 4, 'one unit of gradient per window');
  });
});

describe('wasm kernels vs cpu: BatchMatMul with transposes', () => {
  const cases: Array<{a: number[]; b: number[]; ta: boolean; tb: boolean}> = [
    {a: [64, 30], b: [64, 20], ta: true, tb: false},
    {a: [64, 20], b: [30, 20], ta: false, tb: true},
    {a: [20, 64], b: [30, 20], ta: true, tb: true},
    {a: [5, 300], b: [7, 300], ta: false, tb: true},
    {a: [3, 6, 5], b: [3, 6, 4], ta: true, tb: false},
    {a: [3, 5, 6], b: [3, 4, 6], ta: false, tb: true},
    {a: [2, 3, 6, 5], b: [2, 3, 4, 6], ta: true, tb: true},
    {a: [8, 9], b: [9, 4], ta: false, tb: false},
  ];
  for (const [i, c] of cases.entries()) {
    it(`a [${c.a}] b [${c.b}] transposeA ${c.ta} transposeB ${c.tb}`, async () => {
      await compare(() => tf.matMul(tf.tensor(rand(c.a.reduce((p, q) => p * q), 100 + i), c.a),
          tf.tensor(rand(c.b.reduce((p, q) => p * q), 200 + i), c.b), c.ta, c.tb), 'matMul');
    });
  }
});

describe('wasm kernels vs cpu: UnsortedSegmentSum', () => {
  it('float32 [7, 4] with repeated, empty and out-of-range ids', async () => {
    await compare(() => tf.unsortedSegmentSum(tf.tensor2d(rand(28, 300), [7, 4]), tf.tensor1d([3, 0, 3, -1, 5, 3, 0], 'int32'), 5), 'segment sum');
  });
  it('int32 x against cpu', async () => {
    await compare(() => tf.cast(tf.unsortedSegmentSum(tf.tensor2d([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [5, 2], 'int32'),
        tf.tensor1d([2, 0, 2, 1, 2], 'int32'), 3), 'float32'), 'segment sum int');
  });
  it('ids of rank 2 (closed form; the cpu kernel mis-broadcasts this case)', async () => {
    registerWasmKernels();
    const [got] = await on('wasm', () => tf.engine().runKernel('UnsortedSegmentSum', {
      x: tf.tensor3d([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], [2, 3, 2]),
      segmentIds: tf.tensor2d([[1, 0, 1], [2, 1, 1]], [2, 3], 'int32')}, {numSegments: 4}) as tf.Tensor);
    await tf.setBackend('cpu');
    assert.deepEqual(Array.from(got), [3, 4, 1 + 5 + 9 + 11, 2 + 6 + 10 + 12, 7, 8, 0, 0]);
  });
  it('gather gradient (Embedding-style lookup)', async () => {
    await compare(() => tf.grad((e: tf.Tensor) => tf.sum(tf.mul(tf.gather(e, tf.tensor2d([[1, 4, 4], [0, 9, 1]], [2, 3], 'int32')),
        tf.tensor3d(rand(18, 301), [2, 3, 3]))))(tf.tensor2d(rand(30, 302), [10, 3])), 'gather grad');
  });
});

// ------------------------------------------------------------------------------ whole models

/** Builds the model with fixed weights (seeded) on the current backend. */
type Builder = () => tfl.LayersModel;

function seeded(build: Builder, seed: number): tfl.LayersModel {
  const m = build();
  m.setWeights(m.getWeights().map((w, i) => tf.tensor(rand(w.size, seed + 31 * i, -0.5, 0.5), w.shape)));
  return m;
}

/** Gradients of the cross-entropy of `build()` (training mode) w.r.t. all trainable weights. */
function modelGrads(build: Builder, x: () => tf.Tensor, classes: number, seed: number): tf.Tensor[] {
  const m = seeded(build, seed);
  const xs = x();
  const n = xs.shape[0];
  const ys = tf.oneHot(tf.tensor1d(Array.from({length: n}, (_, i) => (i * 7 + 3) % classes), 'int32'), classes);
  const vars = m.trainableWeights.map((w) => w.read() as tf.Variable);
  const {grads} = tf.variableGrads(() => tf.losses.softmaxCrossEntropy(ys, m.apply(xs, {training: true}) as tf.Tensor) as tf.Scalar, vars);
  const out = vars.map((v) => grads[v.name]);
  m.dispose();
  return out;
}

const img = (shape: number[], seed: number) => () => t4(shape, seed);

const MODELS: Array<{name: string; build: Builder; x: () => tf.Tensor; classes: number}> = [
  {
    name: 'conv → BatchNorm → maxPool, no ReLU',
    build: () => tfl.sequential({layers: [
      tfl.layers.conv2d({inputShape: [8, 8, 2], filters: 6, kernelSize: 3, padding: 'same'}),
      tfl.layers.batchNormalization(),
      tfl.layers.maxPooling2d({poolSize: 2}),
      tfl.layers.flatten(),
      tfl.layers.dense({units: 4}),
    ]}),
    x: img([5, 8, 8, 2], 400), classes: 4,
  },
  {
    name: 'tanh convs (stride 1 and 2, valid)',
    build: () => tfl.sequential({layers: [
      tfl.layers.conv2d({inputShape: [9, 9, 1], filters: 4, kernelSize: 3, activation: 'tanh'}),
      tfl.layers.conv2d({filters: 5, kernelSize: 2, strides: 2, activation: 'tanh'}),
      tfl.layers.flatten(),
      tfl.layers.dense({units: 3}),
    ]}),
    x: img([3, 9, 9, 1], 401), classes: 3,
  },
  {
    name: 'depthwise and separable convs',
    build: () => tfl.sequential({layers: [
      tfl.layers.depthwiseConv2d({inputShape: [8, 8, 3], kernelSize: 3, depthMultiplier: 2, activation: 'tanh', padding: 'same'}),
      tfl.layers.separableConv2d({filters: 4, kernelSize: 3, strides: 2, padding: 'same', activation: 'tanh'}),
      tfl.layers.maxPooling2d({poolSize: 2}),
      tfl.layers.flatten(),
      tfl.layers.dense({units: 3}),
    ]}),
    x: img([2, 8, 8, 3], 402), classes: 3,
  },
  {
    name: 'stride-2 conv + globalAveragePooling',
    build: () => tfl.sequential({layers: [
      tfl.layers.conv2d({inputShape: [10, 10, 3], filters: 8, kernelSize: 3, strides: 2, padding: 'same', activation: 'relu'}),
      tfl.layers.conv2d({filters: 6, kernelSize: 3, strides: 2, activation: 'elu'}),
      tfl.layers.globalAveragePooling2d({}),
      tfl.layers.dense({units: 5}),
    ]}),
    x: img([7, 10, 10, 3], 403), classes: 5,
  },
  {
    name: 'conv2dTranspose',
    build: () => tfl.sequential({layers: [
      tfl.layers.conv2dTranspose({inputShape: [4, 4, 3], filters: 4, kernelSize: 3, strides: 2, padding: 'same', activation: 'tanh'}),
      tfl.layers.conv2d({filters: 2, kernelSize: 3, activation: 'tanh'}),
      tfl.layers.flatten(),
      tfl.layers.dense({units: 3}),
    ]}),
    x: img([3, 4, 4, 3], 404), classes: 3,
  },
  {
    name: 'Embedding → conv1d → globalMaxPooling1d (text CNN)',
    build: () => tfl.sequential({layers: [
      tfl.layers.embedding({inputDim: 30, outputDim: 6, inputLength: 7}),
      tfl.layers.conv1d({filters: 5, kernelSize: 3, activation: 'tanh'}),
      tfl.layers.globalMaxPooling1d({}),
      tfl.layers.dense({units: 2}),
    ]}),
    x: () => tf.tensor2d(Array.from({length: 28}, (_, i) => (i * 11 + 5) % 30), [4, 7]), classes: 2,
  },
  {
    name: 'dense MLP (transposed matmuls)',
    build: () => tfl.sequential({layers: [
      tfl.layers.dense({inputShape: [20], units: 16, activation: 'tanh'}),
      tfl.layers.dense({units: 8, activation: 'relu'}),
      tfl.layers.dense({units: 4}),
    ]}),
    x: () => tf.tensor2d(rand(9 * 20, 405), [9, 20]), classes: 4,
  },
];

describe('wasm kernels vs cpu: whole-model gradients', () => {
  for (const [i, mc] of MODELS.entries()) {
    it(mc.name, async () => {
      const e = await compare(() => modelGrads(mc.build, mc.x, mc.classes, 500 + i), mc.name);
      console.log(`# model "${mc.name}": max gradient error / largest gradient = ${e.toExponential(2)}`);
    });
  }
});

// ------------------------------------------------------------------------------ API

describe('registerWasmKernels API', () => {
  it('is idempotent, reports its kernels, and unregister restores the originals', async () => {
    unregisterWasmKernels();
    const origMaxPoolGrad = tf.getKernel('MaxPoolGrad', 'wasm')!.kernelFunc;
    assert.equal(tf.getKernel('Conv2DBackpropFilter', 'wasm'), undefined);
    const names = registerWasmKernels();
    assert.deepEqual(registerWasmKernels(), names);
    assert.deepEqual(registeredWasmKernels().sort(), [...names].sort());
    assert.deepEqual([...names].sort(), ['BatchMatMul', 'Conv2DBackpropFilter', 'Conv2DBackpropInput', 'DepthwiseConv2dNativeBackpropFilter',
      'DepthwiseConv2dNativeBackpropInput', 'MaxPoolGrad', 'UnsortedSegmentSum']);
    assert.notEqual(tf.getKernel('MaxPoolGrad', 'wasm')!.kernelFunc, origMaxPoolGrad);
    assert.equal(tf.getKernel('MaxPoolGrad', 'cpu')!.backendName, 'cpu');
    unregisterWasmKernels();
    unregisterWasmKernels();
    assert.equal(tf.getKernel('MaxPoolGrad', 'wasm')!.kernelFunc, origMaxPoolGrad);
    assert.equal(tf.getKernel('Conv2DBackpropFilter', 'wasm'), undefined);
    assert.deepEqual(registeredWasmKernels(), []);
  });

  it('options switch kernels off one by one; a missing kernel then fails as before', async () => {
    const names = registerWasmKernels({conv2dBackpropFilter: false, maxPoolGrad: false});
    assert.ok(!names.includes('Conv2DBackpropFilter') && !names.includes('MaxPoolGrad') && names.includes('Conv2DBackpropInput'));
    await tf.setBackend('wasm');
    assert.throws(() => tf.tidy(() => tf.grad((f: tf.Tensor) => tf.sum(tf.conv2d(tf.ones([1, 4, 4, 1]) as tf.Tensor4D, f as tf.Tensor4D, 1, 'same')))(tf.ones([3, 3, 1, 2]))),
        /Conv2DBackpropFilter/);
    await tf.setBackend('cpu');
    registerWasmKernels();
    assert.equal(registeredWasmKernels().length, 7);
  });

  it('refuses unknown options and non-boolean values', () => {
    assert.throws(() => registerWasmKernels({maxPoolGrads: false} as never), /maxPoolGrads.*maxPoolGrad/s);
    assert.throws(() => registerWasmKernels({batchMatMul: 'no'} as never), /batchMatMul.*boolean/);
  });

  it('throws a clear error when the wasm backend is not registered', () => {
    const conv = tf.getKernel('Conv2D', 'wasm')!;
    tf.unregisterKernel('Conv2D', 'wasm');
    try {
      assert.throws(() => registerWasmKernels(), /wasm backend is not registered.*@tensorflow\/tfjs-backend-wasm/);
    } finally {
      tf.registerKernel(conv);
    }
  });
});

// ------------------------------------------------------------------------------ memory

describe('memory over 100 training steps on wasm', () => {
  it('numDataIds, tf.memory and the wasm heap stay flat (conv+BN+pool, separable, Embedding, MLP)', async () => {
    registerWasmKernels();
    await tf.setBackend('wasm');
    const backend = tf.backend() as unknown as {numDataIds(): number; wasm: {HEAPU8: Uint8Array}};
    const models = [0, 2, 4, 5, 6].map((i) => ({m: seeded(MODELS[i].build, 700 + i), x: MODELS[i].x(), classes: MODELS[i].classes}));
    const opts = models.map(() => tf.train.adam(1e-3));
    const data = models.map(({x, classes}) => ({x, y: tf.oneHot(tf.tensor1d(Array.from({length: x.shape[0]}, (_, j) => j % classes), 'int32'), classes)}));
    const step = () => {
      for (const [k, {m}] of models.entries()) {
        tf.tidy(() => {
          opts[k].minimize(() => tf.losses.softmaxCrossEntropy(data[k].y, m.apply(data[k].x, {training: true}) as tf.Tensor) as tf.Scalar,
              false, m.trainableWeights.map((w) => w.read() as tf.Variable));
        });
      }
    };
    try {
      for (let i = 0; i < 5; i++) step();
      const ids = backend.numDataIds();
      const tensors = tf.memory().numTensors;
      const heap = backend.wasm.HEAPU8.length;
      for (let i = 0; i < 100; i++) step();
      assert.equal(backend.numDataIds(), ids, 'backend data ids grew');
      assert.equal(tf.memory().numTensors, tensors, 'tensors grew');
      assert.equal(backend.wasm.HEAPU8.length, heap, 'wasm heap grew');
      console.log(`# memory: ${ids} data ids, heap ${(heap / 2 ** 20).toFixed(0)} MiB, flat over 100 steps of 5 models`);
    } finally {
      models.forEach(({m}) => m.dispose());
      data.forEach(({x, y}) => tf.dispose([x, y]));
      opts.forEach((o) => o.dispose());
      await tf.setBackend('cpu');
    }
  });
});
