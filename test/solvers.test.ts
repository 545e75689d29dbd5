import {tf} from './setup.js';
import {test} from 'node:test';
import assert from 'node:assert/strict';
import {conjugateGradient, gradientAscent} from '../src/solvers/index.js';
import type {BatchObjective, SolverResult} from '../src/solvers/index.js';

// ---------------------------------------------------------------------------------------------
// float64 helpers on the host
// ---------------------------------------------------------------------------------------------

/** Deterministic PRNG (mulberry32) with a normal sampler. */
function rng(seed: number): {uniform: () => number; normal: () => number} {
  let a = seed >>> 0;
  const uniform = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const normal = (): number => {
    const u = Math.max(uniform(), 1e-12);
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * uniform());
  };
  return {uniform, normal};
}

type Mat = number[][];

/** Random SPD matrix Q diag(λ) Qᵀ with eigenvalues log-spaced in [lmin, lmax]. */
function randomSpd(n: number, lmin: number, lmax: number, r: ReturnType<typeof rng>): Mat {
  // Gram–Schmidt on a random matrix -> orthogonal Q (columns)
  const q: number[][] = [];
  while (q.length < n) {
    let v = Array.from({length: n}, () => r.normal());
    for (const u of q) {
      const d = v.reduce((s, vi, i) => s + vi * u[i], 0);
      v = v.map((vi, i) => vi - d * u[i]);
    }
    const norm = Math.hypot(...v);
    if (norm < 1e-6) continue;
    q.push(v.map((vi) => vi / norm));
  }
  const lam = Array.from({length: n}, (_, i) => lmin * Math.pow(lmax / lmin, n === 1 ? 0 : i / (n - 1)));
  const A: Mat = Array.from({length: n}, () => new Array<number>(n).fill(0));
  for (let k = 0; k < n; k++) {
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) A[i][j] += lam[k] * q[k][i] * q[k][j];
  }
  return A;
}

/** Solves A x = b for SPD A by Cholesky, in float64. */
function choleskySolve(A: Mat, b: number[]): number[] {
  const n = b.length;
  const L: Mat = Array.from({length: n}, () => new Array<number>(n).fill(0));
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      let s = A[i][j];
      for (let k = 0; k < j; k++) s -= L[i][k] * L[j][k];
      L[i][j] = i === j ? Math.sqrt(s) : s / L[j][j];
    }
  }
  const y = new Array<number>(n).fill(0);
  for (let i = 0; i < n; i++) {
    let s = b[i];
    for (let k = 0; k < i; k++) s -= L[i][k] * y[k];
    y[i] = s / L[i][i];
  }
  const x = new Array<number>(n).fill(0);
  for (let i = n - 1; i >= 0; i--) {
    let s = y[i];
    for (let k = i + 1; k < n; k++) s -= L[k][i] * x[k];
    x[i] = s / L[i][i];
  }
  return x;
}

/** Concatenates the list [B, ...] into [B, n]. */
function flat(xs: tf.Tensor[]): tf.Tensor2D {
  const B = xs[0].shape[0];
  return tf.concat(xs.map((x) => tf.reshape(x, [B, -1])), 1) as tf.Tensor2D;
}

interface Quadratic {
  f: BatchObjective;
  optimum: number[]; // J*_b (float64)
  xStar: number[][];
  A: tf.Tensor3D;
  b: tf.Tensor2D;
  dispose: () => void;
}

/** J_b(x) = −½ xᵀA_b x + b_bᵀx on the flattened list, A_b random SPD (eigenvalues in [lmin, lmax]). */
function makeQuadratic(
  B: number,
  n: number,
  seed: number,
  lmin = 0.1,
  lmax = 10,
  editStar?: (b: number, xStar: number[]) => boolean,
): Quadratic {
  const r = rng(seed);
  const As: Mat[] = [];
  const bs: number[][] = [];
  const xStar: number[][] = [];
  const optimum: number[] = [];
  for (let k = 0; k < B; k++) {
    const A = randomSpd(n, lmin, lmax, r);
    let b = Array.from({length: n}, () => r.normal());
    let x = choleskySolve(A, b);
    if (editStar?.(k, x)) {
      // editStar moved the maximiser: b = A x*
      b = A.map((row) => row.reduce((s, a, j) => s + a * x[j], 0));
      x = choleskySolve(A, b);
    }
    As.push(A);
    bs.push(b);
    xStar.push(x);
    optimum.push(0.5 * b.reduce((s, bi, i) => s + bi * x[i], 0));
  }
  const A = tf.tensor3d(As);
  const b = tf.tensor2d(bs);
  const f: BatchObjective = (xs) => {
    const x = flat(xs);
    const Ax = tf.squeeze(tf.matMul(A, tf.expandDims(x, 2)), [2]);
    return tf.add(tf.mul(-0.5, tf.sum(tf.mul(x, Ax), 1)), tf.sum(tf.mul(b, x), 1)) as tf.Tensor1D;
  };
  return {f, optimum, xStar, A, b, dispose: () => tf.dispose([A, b])};
}

/** Random start tensors of the given per-example shapes. */
function randomStart(B: number, shapes: number[][], seed: number, scale = 1): tf.Tensor[] {
  const r = rng(seed);
  return shapes.map((s) => {
    const size = B * s.reduce((a, c) => a * c, 1);
    return tf.tensor(Float32Array.from({length: size}, () => scale * r.normal()), [B, ...s]);
  });
}

function relErr(J: number, Jstar: number): number {
  return Math.abs(J - Jstar) / Math.max(1, Math.abs(Jstar));
}

/** First history index k at which every example is within `eps` (relative) of its optimum. */
function firstAccurate(res: SolverResult, optimum: number[], eps: number): number {
  for (let k = 0; k < res.exampleHistory.length; k++) {
    if (res.exampleHistory[k].every((J, b) => relErr(J, optimum[b]) <= eps)) return k;
  }
  return -1;
}

function disposeResult(r: SolverResult): void {
  tf.dispose([...r.xs, r.objective]);
}

/**
 * Non-quadratic, concave-ish objective: J_b = −Σ_j logcosh((W_b x)_j − c_bj) − ½μ‖x‖²
 * + Σ_j v_bj tanh((U_b x)_j), with a stable logcosh.
 */
function makeNonQuadratic(B: number, n: number, seed: number) {
  const r = rng(seed);
  const m = 16;
  const W = tf.tensor3d(Array.from({length: B}, () => Array.from({length: m}, () => Array.from({length: n}, () => r.normal() / Math.sqrt(n)))));
  const c = tf.tensor2d(Array.from({length: B}, () => Array.from({length: m}, () => 3 * r.normal())));
  const U = tf.tensor3d(Array.from({length: B}, () => Array.from({length: m}, () => Array.from({length: n}, () => 0.5 * r.normal()))));
  const v = tf.tensor2d(Array.from({length: B}, () => Array.from({length: m}, () => 0.2 * r.normal())));
  const mu = 0.5;
  const build = (Wt: tf.Tensor, ct: tf.Tensor, Ut: tf.Tensor, vt: tf.Tensor): BatchObjective => (xs) => {
    const x = flat(xs);
    const u = tf.sub(tf.squeeze(tf.matMul(Wt, tf.expandDims(x, 2)), [2]), ct);
    const au = tf.abs(u);
    const logcosh = tf.sub(tf.add(au, tf.log1p(tf.exp(tf.mul(-2, au)))), Math.LN2);
    const t = tf.tanh(tf.squeeze(tf.matMul(Ut, tf.expandDims(x, 2)), [2]));
    return tf.add(
      tf.sub(tf.neg(tf.sum(logcosh, 1)), tf.mul(0.5 * mu, tf.sum(tf.square(x), 1))),
      tf.sum(tf.mul(vt, t), 1),
    ) as tf.Tensor1D;
  };
  const sliceB = (t: tf.Tensor, k: number) => tf.slice(t, [k], [1]);
  return {
    f: build(W, c, U, v),
    /** objective of example k alone (batch of 1); caller disposes the returned tensors */
    single: (k: number) => {
      const ts = [sliceB(W, k), sliceB(c, k), sliceB(U, k), sliceB(v, k)];
      return {f: build(ts[0], ts[1], ts[2], ts[3]), dispose: () => tf.dispose(ts)};
    },
    dispose: () => tf.dispose([W, c, U, v]),
  };
}

// ---------------------------------------------------------------------------------------------
// (a) quadratic: CG reaches the closed-form optimum within n iterations; GA needs more evaluations
// ---------------------------------------------------------------------------------------------

// Float32 note: CG's finite termination is fragile. With eigenvalues in [0.32, 3.2] (condition 10)
// float32 CG reaches the float32 floor (~2e-7 relative) within n iterations; with condition 100 it
// needs about n+2..n+4 (float64 CG would terminate at n; rounding x and g to float32 alone delays it).
const configs: {shapes: number[][]; seed: number; cond: number; extra: number}[] = [
  {shapes: [[], [1, 5]], seed: 11, cond: 10, extra: 0}, // n = 6, a rank-1 tensor [B] in the list
  {shapes: [[4], [2, 3]], seed: 12, cond: 10, extra: 0}, // n = 10
  {shapes: [[6], [2, 3]], seed: 13, cond: 10, extra: 0}, // n = 12
  {shapes: [[4], [2, 3]], seed: 14, cond: 100, extra: 4}, // n = 10, ill-conditioned
  {shapes: [[6], [2, 3]], seed: 15, cond: 100, extra: 4}, // n = 12, ill-conditioned
];

for (const {shapes, seed, cond, extra} of configs) {
  const n = shapes.reduce((s, sh) => s + sh.reduce((a, c) => a * c, 1), 0);
  const maxIt = n + extra;
  test(`(a) CG solves a batch of random SPD quadratics (n=${n}, condition ${cond}, 2 tensors) within ${maxIt} iterations`, () => {
    const B = 5;
    const q = makeQuadratic(B, n, seed, 1 / Math.sqrt(cond), Math.sqrt(cond));
    const x0 = randomStart(B, shapes, seed + 100);
    const res = conjugateGradient(q.f, x0, {maxIterations: maxIt});
    const J = Array.from(res.objective.dataSync());
    const errs = J.map((Jb, b) => relErr(Jb, q.optimum[b]));
    console.log(
      `  CG n=${n} cond=${cond}: iterations=${res.iterations} gradientEvaluations=${res.gradientEvaluations} ` +
        `converged=${res.converged} stalled=${res.stalled} max rel err=${Math.max(...errs).toExponential(2)}`,
    );
    assert.ok(res.iterations <= maxIt);
    assert.ok(Math.max(...errs) <= 1e-4, `relative errors ${errs}`);
    // the maximiser itself
    const xf = flat(res.xs);
    const xv = xf.arraySync();
    xf.dispose();
    for (let b = 0; b < B; b++) {
      const dist = Math.hypot(...xv[b].map((v, i) => v - q.xStar[b][i]));
      assert.ok(dist <= 1e-2 * Math.max(1, Math.hypot(...q.xStar[b])), `x error ${dist}`);
    }
    assert.equal(res.nonFinite, 0);
    assert.equal(res.functionEvaluations, 0);
    assert.equal(res.history.length, res.iterations + 1);
    disposeResult(res);
    tf.dispose(x0);
    q.dispose();
  });
}

for (const cond of [10, 100]) {
  test(`(a) best fixed-step gradient ascent needs more gradient evaluations than CG (condition ${cond})`, () => {
    const B = 5;
    const shapes = [[4], [2, 3]];
    const n = 10;
    const lmax = Math.sqrt(cond);
    const q = makeQuadratic(B, n, 16, 1 / lmax, lmax);
    const x0 = randomStart(B, shapes, 116);
    const eps = 1e-4;

    // CG: evaluations spent up to the first iteration where every example is within eps
    const cg = conjugateGradient(q.f, x0, {maxIterations: n + 4, tolerance: -1, gradientTolerance: -1});
    const kCg = firstAccurate(cg, q.optimum, eps);
    assert.ok(kCg >= 0, `CG never reached ${eps}`);
    const cgEvals = 1 + 2 * kCg;
    disposeResult(cg);

    // GA: a step grid over the stable range η < 2/λmax (the best η is ≈ 2/(λmin + λmax))
    let best = {eta: NaN, evals: Infinity};
    for (const frac of [0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99]) {
      const eta = (frac * 2) / lmax;
      const ga = gradientAscent(q.f, x0, {stepSize: eta, maxIterations: 3000, tolerance: -1, gradientTolerance: -1});
      const k = firstAccurate(ga, q.optimum, eps);
      disposeResult(ga);
      const evals = k < 0 ? Infinity : 1 + k;
      if (evals < best.evals) best = {eta, evals};
    }
    console.log(
      `  quadratic n=${n}, B=${B}, condition ${cond}, rel. accuracy ${eps}: CG ${kCg} iterations = ` +
        `${cgEvals} gradient evaluations; best GA (η=${best.eta.toFixed(3)}) ${best.evals} gradient evaluations`,
    );
    assert.ok(Number.isFinite(best.evals), 'GA never reached the accuracy');
    assert.ok(best.evals > cgEvals, `GA ${best.evals} vs CG ${cgEvals}`);
    tf.dispose(x0);
    q.dispose();
  });
}

// ---------------------------------------------------------------------------------------------
// (b) monotone per example on a non-quadratic objective
// ---------------------------------------------------------------------------------------------

test('(b) CG is monotone per example on a non-quadratic concave-ish objective and converges', () => {
  const B = 6;
  const shapes = [[4], [2, 3]];
  const nq = makeNonQuadratic(B, 10, 21);
  const x0 = randomStart(B, shapes, 121, 2);
  const res = conjugateGradient(nq.f, x0, {maxIterations: 60});
  for (let k = 1; k < res.exampleHistory.length; k++) {
    for (let b = 0; b < B; b++) {
      assert.ok(
        res.exampleHistory[k][b] >= res.exampleHistory[k - 1][b],
        `example ${b} decreased at iteration ${k}: ${res.exampleHistory[k - 1][b]} -> ${res.exampleHistory[k][b]}`,
      );
    }
  }
  assert.equal(res.converged + res.stalled, B);
  assert.equal(res.nonFinite, 0);

  // near-stationary: a long monotone gradient ascent from the CG point gains (almost) nothing
  const polish = gradientAscent(nq.f, res.xs, {stepSize: 0.05, maxIterations: 2000, monotone: true, tolerance: -1, gradientTolerance: 1e-5});
  const Jcg = res.objective.arraySync();
  const Jp = polish.objective.arraySync();
  console.log(
    `  non-quadratic: CG ${res.iterations} it / ${res.gradientEvaluations} evals, converged=${res.converged} stalled=${res.stalled}; ` +
      `max gain of 2000 GA polish steps = ${Math.max(...Jp.map((v, b) => v - Jcg[b])).toExponential(2)}`,
  );
  for (let b = 0; b < B; b++) assert.ok(Jp[b] - Jcg[b] <= 1e-4 * Math.max(1, Math.abs(Jcg[b])), `example ${b}`);
  disposeResult(polish);
  disposeResult(res);
  tf.dispose(x0);
  nq.dispose();
});

test('(b) gradient ascent in monotone mode is monotone per example; plain mode is not forced to be', () => {
  const B = 4;
  const q = makeQuadratic(B, 10, 31);
  const x0 = randomStart(B, [[4], [2, 3]], 131);
  const mono = gradientAscent(q.f, x0, {stepSize: 0.3, maxIterations: 40, monotone: true});
  for (let k = 1; k < mono.exampleHistory.length; k++) {
    for (let b = 0; b < B; b++) assert.ok(mono.exampleHistory[k][b] >= mono.exampleHistory[k - 1][b]);
  }
  // η = 0.3 > 2/λmax: plain ascent diverges on the stiff direction (J decreases)
  const plain = gradientAscent(q.f, x0, {stepSize: 0.3, maxIterations: 40});
  assert.ok(plain.history[plain.history.length - 1] < plain.history[0]);
  disposeResult(mono);
  disposeResult(plain);
  tf.dispose(x0);
  q.dispose();
});

// ---------------------------------------------------------------------------------------------
// (c) batch independence
// ---------------------------------------------------------------------------------------------

test('(c) solving a batch gives each example the same result as solving it alone', () => {
  const B = 4;
  const shapes = [[4], [2, 3]];
  const nq = makeNonQuadratic(B, 10, 41);
  const x0 = randomStart(B, shapes, 141, 2);
  const batch = conjugateGradient(nq.f, x0, {maxIterations: 40});
  const xb = flat(batch.xs);
  const batchX = xb.arraySync();
  const batchJ = batch.objective.arraySync();
  xb.dispose();
  for (let k = 0; k < B; k++) {
    const s = nq.single(k);
    const x0k = x0.map((t) => tf.slice(t, [k], [1]));
    const alone = conjugateGradient(s.f, x0k, {maxIterations: 40});
    const xa = flat(alone.xs);
    const aloneX = xa.arraySync()[0];
    xa.dispose();
    const maxDiff = Math.max(...aloneX.map((v, i) => Math.abs(v - batchX[k][i])));
    assert.ok(maxDiff <= 1e-4, `example ${k}: max |x_batch − x_alone| = ${maxDiff}`);
    assert.ok(Math.abs(alone.objective.arraySync()[0] - batchJ[k]) <= 1e-4 * Math.max(1, Math.abs(batchJ[k])));
    disposeResult(alone);
    tf.dispose(x0k);
    s.dispose();
  }
  disposeResult(batch);
  tf.dispose(x0);
  nq.dispose();
});

// ---------------------------------------------------------------------------------------------
// (d) a NaN-producing example is frozen at a finite point, the others converge
// ---------------------------------------------------------------------------------------------

test('(d) an example meeting NaN is frozen at a finite point; the others converge', () => {
  const B = 4;
  const n = 10;
  const bad = 2;
  // example `bad`'s maximiser is moved to x_0 = 3
  const q = makeQuadratic(B, n, 51, 0.1, 10, (b, x) => (b === bad ? ((x[0] = 3), true) : false));
  // J_b = quadratic_b + 0·log(1 − m_b·x_0): 0 where defined, NaN once x_0 > 1 for example `bad`
  // (m_bad = 1, others m = 0), so example `bad` cannot reach its maximiser without meeting NaN.
  const m = tf.tensor1d(Array.from({length: B}, (_, b) => (b === bad ? 1 : 0)));
  const f: BatchObjective = (xs) => {
    const x0col = tf.squeeze(tf.slice(flat(xs), [0, 0], [-1, 1]), [1]);
    return tf.add(q.f(xs), tf.mul(0, tf.log(tf.sub(1, tf.mul(m, x0col))))) as tf.Tensor1D;
  };
  assert.ok(Math.abs(q.xStar[bad][0] - 3) < 1e-6, 'test set-up');
  const xs0 = tf.zeros([B, 4]);
  const xs1 = tf.zeros([B, 2, 3]);
  const res = conjugateGradient(f, [xs0, xs1], {maxIterations: 30});
  const J = Array.from(res.objective.dataSync());
  const xf = flat(res.xs);
  const xv = xf.arraySync();
  xf.dispose();
  console.log(`  NaN test: nonFinite=${res.nonFinite} converged=${res.converged} iterations=${res.iterations}`);
  assert.equal(res.nonFinite, 1);
  assert.equal(res.converged, B - 1);
  assert.ok(xv.flat().every(Number.isFinite));
  assert.ok(J.every(Number.isFinite));
  assert.ok(xv[bad][0] <= 1, 'frozen inside the domain');
  for (let b = 0; b < B; b++) {
    if (b === bad) continue;
    assert.ok(relErr(J[b], q.optimum[b]) <= 1e-4, `example ${b}`);
  }
  // gradient ascent: same freezing rule
  const ga = gradientAscent(f, [xs0, xs1], {stepSize: 0.15, maxIterations: 400});
  assert.equal(ga.nonFinite, 1);
  const gx = flat(ga.xs);
  assert.ok(Array.from(gx.dataSync()).every(Number.isFinite));
  gx.dispose();
  disposeResult(ga);
  disposeResult(res);
  tf.dispose([xs0, xs1, m]);
  q.dispose();
});

// ---------------------------------------------------------------------------------------------
// (e) no tensor leaks; x0 untouched
// ---------------------------------------------------------------------------------------------

test('(e) memory: only the returned tensors survive, over repeated calls; x0 untouched', () => {
  const B = 3;
  const shapes = [[4], [2, 3]];
  const q = makeQuadratic(B, 10, 61);
  const nq = makeNonQuadratic(B, 10, 62);
  const x0 = randomStart(B, shapes, 161);
  const x0Before = x0.map((t) => Array.from(t.dataSync()));
  const before = tf.memory().numTensors;
  const results: SolverResult[] = [];
  const runs: (() => SolverResult)[] = [
    () => conjugateGradient(q.f, x0, {maxIterations: 10}),
    () => conjugateGradient(nq.f, x0, {maxIterations: 15, maxGradientEvaluations: 8}), // ends with a trial-only iteration
    () => gradientAscent(q.f, x0, {stepSize: 0.1, maxIterations: 20}),
    () => gradientAscent(nq.f, x0, {stepSize: 0.1, maxIterations: 20, normalize: 'l2', monotone: true}),
    () => conjugateGradient(q.f, x0, {maxGradientEvaluations: 0}),
  ];
  for (let rep = 0; rep < 3; rep++) {
    for (const run of runs) {
      results.push(run());
      const returned = results.reduce((s, r) => s + r.xs.length + 1, 0);
      assert.equal(tf.memory().numTensors, before + returned, `after ${results.length} calls`);
    }
  }
  results.forEach(disposeResult);
  assert.equal(tf.memory().numTensors, before);
  x0.forEach((t, i) => {
    assert.ok(!t.isDisposed);
    assert.deepEqual(Array.from(t.dataSync()), x0Before[i]);
  });
  tf.dispose(x0);
  q.dispose();
  nq.dispose();
});

// ---------------------------------------------------------------------------------------------
// (f) gradient-evaluation budget
// ---------------------------------------------------------------------------------------------

test('(f) maxGradientEvaluations is respected exactly', () => {
  const B = 4;
  const shapes = [[4], [2, 3]];
  const q = makeQuadratic(B, 10, 71);
  const x0 = randomStart(B, shapes, 171);
  for (const budget of [1, 2, 3, 4, 5, 6, 7, 10]) {
    const cg = conjugateGradient(q.f, x0, {maxIterations: 100, maxGradientEvaluations: budget});
    assert.ok(cg.gradientEvaluations <= budget, `CG budget ${budget}: ${cg.gradientEvaluations}`);
    assert.equal(cg.gradientEvaluations, budget, `CG uses the whole budget ${budget} when not converged`);
    assert.equal(cg.iterations, Math.ceil((budget - 1) / 2));
    for (let k = 1; k < cg.exampleHistory.length; k++) {
      for (let b = 0; b < B; b++) assert.ok(cg.exampleHistory[k][b] >= cg.exampleHistory[k - 1][b]);
    }
    disposeResult(cg);
    const ga = gradientAscent(q.f, x0, {stepSize: 0.1, maxIterations: 100, maxGradientEvaluations: budget});
    assert.equal(ga.gradientEvaluations, budget);
    assert.equal(ga.iterations, budget - 1);
    disposeResult(ga);
  }
  const none = conjugateGradient(q.f, x0, {maxGradientEvaluations: 0});
  assert.equal(none.gradientEvaluations, 0);
  assert.equal(none.functionEvaluations, 1);
  assert.equal(none.iterations, 0);
  disposeResult(none);
  // onIteration reports the running count
  const seen: number[] = [];
  const cg = conjugateGradient(q.f, x0, {maxGradientEvaluations: 9, onIteration: (i) => seen.push(i.gradientEvaluations)});
  assert.deepEqual(seen, [3, 5, 7, 9]);
  disposeResult(cg);
  tf.dispose(x0);
  q.dispose();
});

// ---------------------------------------------------------------------------------------------
// preconditionedAscent, and the budget / leak contract of every solver
// ---------------------------------------------------------------------------------------------
import {preconditionedAscent, setPreconditionedHostDecisions} from '../src/solvers/preconditioned.js';

/** Separable concave quadratic per example: J_b = Σ_i −h_i (x_i − c_{b,i})² with known maximiser c. */
function separable(h: number[], c: number[][]): BatchObjective {
  const H = tf.tensor1d(h);
  const C = tf.tensor2d(c);
  return (xs) => tf.neg(tf.sum(tf.mul(H, tf.square(tf.sub(xs[0], C))), 1)) as tf.Tensor1D;
}

test('preconditionedAscent with the exact diagonal preconditioner reaches the maximiser of a separable quadratic in one step', () => {
  const h = [1, 10, 100, 1000];
  const c = [[1, -2, 3, 0.5], [0, 0.1, -0.2, 4]];
  const f = separable(h, c);
  const x0 = [tf.zeros([2, 4])];
  const before = tf.memory().numTensors;
  const r = preconditionedAscent(f, x0, {direction: (_x, g) => [tf.div(g[0], tf.mul(2, tf.tensor1d(h)))], maxGradientEvaluations: 2, tolerance: -1, gradientTolerance: -1});
  assert.equal(r.gradientEvaluations, 2);
  const x = r.xs[0].arraySync() as number[][];
  x.forEach((row, b) => row.forEach((v, i) => assert.ok(Math.abs(v - c[b][i]) < 1e-4, `x[${b}][${i}] = ${v}, want ${c[b][i]}`)));
  // plain gradient direction with the same budget does not get there (condition 1000)
  const g = preconditionedAscent(f, x0, {maxGradientEvaluations: 2, tolerance: -1, gradientTolerance: -1});
  const err = Math.max(...(g.xs[0].arraySync() as number[][]).flatMap((row, b) => row.map((v, i) => Math.abs(v - c[b][i]))));
  assert.ok(err > 0.1, `unpreconditioned error ${err}`);
  tf.dispose([...r.xs, r.objective, ...g.xs, g.objective]);
  assert.equal(tf.memory().numTensors, before, 'no tensor leaked');
  x0[0].dispose();
});

test('preconditionedAscent is monotone per example and a rejected large first step falls back to 1', () => {
  const f = separable([1, 1], [[1, 1], [2, -1]]);
  const x0 = [tf.zeros([2, 2])];
  const r = preconditionedAscent(f, x0, {direction: (_x, g) => [tf.div(g[0], 2)], initialStep: [1000, 1], maxGradientEvaluations: 4, tolerance: -1, gradientTolerance: -1});
  for (let k = 1; k < r.exampleHistory.length; k++) {
    r.exampleHistory[k].forEach((v, b) => assert.ok(v >= r.exampleHistory[k - 1][b], `example ${b} decreased at ${k}`));
  }
  // example 0: the step of 1000 is rejected (J falls), then α = 1 lands on the maximiser
  assert.ok(Math.abs(r.exampleHistory[2][0]) < 1e-6, `example 0 after the fallback: ${r.exampleHistory[2][0]}`);
  tf.dispose([...r.xs, r.objective, x0[0]]);
});

test("preconditionedAscent initialStepFrom 'origin': the first candidate is α·(x0 + D0), not x0 + α·D0 (closed form)", () => {
  // J_b = −Σ h (x − c_b)², exact Newton direction D = c − x: the unit step lands on c from anywhere
  const h = [1, 4];
  const c = [[1, -0.5], [0.25, 2]];
  const f = separable(h, c);
  const x0v = [[-30, 20], [40, -25]]; // far away: both candidates of a step α = 2 improve J
  const Jat = (x: number[], b: number) => -x.reduce((s, v, i) => s + h[i] * (v - c[b][i]) ** 2, 0);
  const before = tf.memory().numTensors;
  for (const from of ['start', 'origin'] as const) {
    for (const host of [true, false]) {
      setPreconditionedHostDecisions(host);
      try {
        const x0 = [tf.tensor2d(x0v)];
        const r = preconditionedAscent(f, x0, {direction: (x, g) => [tf.div(g[0], tf.mul(2, tf.tensor1d(h)))], initialStep: [2, 1], initialStepFrom: from, maxGradientEvaluations: 2, tolerance: -1, gradientTolerance: -1});
        const want0 = from === 'origin' ? c[0].map((v) => 2 * v) : c[0].map((v, i) => 2 * v - x0v[0][i]);
        const x = r.xs[0].arraySync() as number[][];
        x[0].forEach((v, i) => assert.ok(Math.abs(v - want0[i]) < 1e-4, `${from}, host ${host}: x[0][${i}] = ${v}, want ${want0[i]}`));
        // α = 1: both rules land on the maximiser
        x[1].forEach((v, i) => assert.ok(Math.abs(v - c[1][i]) < 1e-4, `${from}, host ${host}: x[1][${i}] = ${v}, want ${c[1][i]}`));
        assert.ok(Math.abs(r.exampleHistory[1][0] - Jat(want0, 0)) < 1e-3 * Math.abs(Jat(want0, 0)), `${from}: J after the first step`);
        tf.dispose([...r.xs, r.objective, ...x0]);
      } finally {
        setPreconditionedHostDecisions(true);
      }
    }
  }
  assert.equal(tf.memory().numTensors, before, 'no tensor leaked');
  const x0 = [tf.zeros([2, 2])];
  assert.throws(() => preconditionedAscent(f, x0, {initialStepFrom: 'zero' as never}), /initialStepFrom must be 'start' or 'origin', got zero/);
  assert.throws(() => preconditionedAscent(f, x0, {anneal: {minRemaining: -1}, maxGradientEvaluations: 5}), /anneal\.minRemaining must be an integer >= 0, got -1/);
  x0[0].dispose();
});

test('preconditionedAscent with anneal moves along a kinked ridge where the monotone rule stalls; it returns the best point met', () => {
  // J = −10|x₁ − x₂| + s − 0.05 s², s = x₁ + x₂: maximum 5 at x₁ = x₂ = 5. The gradient zig-zags across
  // the ridge x₁ = x₂, so monotone steps along it shrink to nothing.
  const f: BatchObjective = (xs) =>
    tf.tidy(() => {
      const a = tf.slice(xs[0], [0, 0], [-1, 1]);
      const b = tf.slice(xs[0], [0, 1], [-1, 1]);
      const s = tf.add(a, b);
      return tf.sum(tf.add(tf.mul(-10, tf.abs(tf.sub(a, b))), tf.sub(s, tf.mul(0.05, tf.square(s)))), 1) as tf.Tensor1D;
    });
  const x0 = [tf.tensor2d([[0, 0.3], [1, -1], [-2, 0]])];
  const opts = {maxGradientEvaluations: 30, direction: (_x: tf.Tensor[], g: tf.Tensor[]) => [tf.mul(g[0], 0.05)]};
  const before = tf.memory().numTensors;
  const mono = preconditionedAscent(f, x0, opts);
  const ann = preconditionedAscent(f, x0, {...opts, anneal: true});
  assert.equal(ann.gradientEvaluations, 30);
  const Jm = mono.objective.arraySync();
  const Ja = ann.objective.arraySync();
  Ja.forEach((v, b) => assert.ok(v > Jm[b] + 0.3 && v <= 5 + 1e-5, `example ${b}: annealed ${v} vs monotone ${Jm[b]} (max 5)`));
  // the returned point is the best met: its J is the reported one and the best-J history never decreases
  const again = tf.tidy(() => f(ann.xs).arraySync());
  again.forEach((v, b) => assert.ok(Math.abs(v - Ja[b]) < 1e-5, `example ${b}: J at the returned point ${v}, reported ${Ja[b]}`));
  for (let k = 1; k < ann.exampleHistory.length; k++) {
    ann.exampleHistory[k].forEach((v, b) => assert.ok(v >= ann.exampleHistory[k - 1][b], `example ${b}: best J decreased at ${k}`));
  }
  tf.dispose([...mono.xs, mono.objective, ...ann.xs, ann.objective]);
  assert.equal(tf.memory().numTensors, before, 'no tensor leaked');
  assert.throws(() => preconditionedAscent(f, x0, {anneal: true, maxIterations: Infinity}), /anneal needs a finite maxGradientEvaluations or maxIterations/);
  assert.throws(() => preconditionedAscent(f, x0, {anneal: {scale: [1, 2]}, maxGradientEvaluations: 5}), /anneal\.scale must hold 1 positive numbers \(one per tensor\), got \[1,2\]/);
  assert.throws(() => preconditionedAscent(f, x0, {anneal: {after: 0}, maxGradientEvaluations: 5}), /anneal\.after must be an integer >= 1, got 0/);
  assert.throws(() => preconditionedAscent(f, x0, {anneal: {sign: [true, false]}, maxGradientEvaluations: 5}), /anneal\.sign must hold 1 booleans \(one per tensor\), got \[true,false\]/);
  // sign steps on the ridge: along sign(p)·mean|p|, which for this 2-D ridge points along x₁ = x₂ once across it
  const signed = preconditionedAscent(f, x0, {...opts, anneal: {sign: [true]}});
  signed.objective.arraySync().forEach((v, b) => assert.ok(v > Jm[b] && v <= 5 + 1e-5, `example ${b}: annealed with sign steps ${v} vs monotone ${Jm[b]}`));
  tf.dispose([...signed.xs, signed.objective]);
  // minRemaining: an example switches only while that many iterations remain; more than the
  // budget = the monotone rule bit for bit
  const late = preconditionedAscent(f, x0, {...opts, anneal: {minRemaining: 30}});
  assert.deepEqual(late.objective.arraySync(), Jm, 'minRemaining ≥ budget: the monotone iterates');
  assert.deepEqual(late.exampleHistory, mono.exampleHistory, 'minRemaining ≥ budget: the monotone history');
  tf.dispose([...late.xs, late.objective]);
  assert.equal(tf.memory().numTensors, before, 'no tensor leaked on the error paths');
  x0[0].dispose();
});

test('every solver spends exactly its gradient-evaluation budget and leaks no tensors (also when the objective throws)', () => {
  const f = separable([1, 3, 9], [[1, 2, 3], [-1, 0.5, 2], [0, 0, 1]]);
  const slow: BatchObjective = (xs) => tf.neg(tf.sum(tf.log1p(tf.square(tf.sub(xs[0], 3))), 1)) as tf.Tensor1D; // never converges fast
  const x0 = [tf.zeros([3, 3])];
  const solvers: [string, (f: BatchObjective, budget: number) => SolverResult][] = [
    ['cg', (g, k) => conjugateGradient(g, x0, {maxIterations: 1000, maxGradientEvaluations: k, tolerance: -1, gradientTolerance: -1})],
    ['gradient ascent', (g, k) => gradientAscent(g, x0, {stepSize: 0.01, maxIterations: 1000, maxGradientEvaluations: k, tolerance: -1, gradientTolerance: -1})],
    ['preconditioned', (g, k) => preconditionedAscent(g, x0, {maxIterations: 1000, maxGradientEvaluations: k, tolerance: -1, gradientTolerance: -1})],
    ['preconditioned PR+', (g, k) => preconditionedAscent(g, x0, {conjugate: true, maxIterations: 1000, maxGradientEvaluations: k, tolerance: -1, gradientTolerance: -1})],
    ['preconditioned, anneal', (g, k) => preconditionedAscent(g, x0, {anneal: {scale: [1.5], sign: [true]}, initialStep: 3, maxIterations: 1000, maxGradientEvaluations: k, tolerance: -1, gradientTolerance: -1})],
    ['preconditioned PR+, anneal', (g, k) => preconditionedAscent(g, x0, {conjugate: true, anneal: true, maxIterations: 1000, maxGradientEvaluations: k, tolerance: -1, gradientTolerance: -1})],
  ];
  for (const [name, run] of solvers) {
    for (const obj of [f, slow]) {
      for (const k of [1, 2, 5, 20]) {
        const before = tf.memory().numTensors;
        const r = run(obj, k);
        assert.equal(r.gradientEvaluations, k, `${name}: budget ${k}, spent ${r.gradientEvaluations}`);
        tf.dispose([...r.xs, r.objective]);
        assert.equal(tf.memory().numTensors, before, `${name}: leaked ${tf.memory().numTensors - before} tensors`);
      }
    }
    const before = tf.memory().numTensors;
    let calls = 0;
    const throwing: BatchObjective = (xs) => {
      if (++calls === 3) throw new Error('boom');
      return f(xs);
    };
    assert.throws(() => run(throwing, 10), /boom/);
    assert.equal(tf.memory().numTensors, before, `${name}: leaked after an exception`);
  }
  x0[0].dispose();
});
