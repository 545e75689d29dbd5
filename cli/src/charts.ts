/**
 * Charts of the report as Vega-Lite specifications, rendered to SVG strings
 * headless in Node by Vega (`renderer: 'none'` + `toSVG()`: no canvas, no
 * browser). All geometry comes from Vega; this module only builds specs.
 */
/**
 * A Vega-Lite specification (kept as a plain object type here so that this
 * module also compiles where the vega-lite typings cannot be resolved, e.g. a
 * CommonJS build with Node10 resolution).
 */
export type TopLevelSpec = Record<string, unknown>;

interface VegaModule {
  View: new (runtime: unknown, config: {renderer: 'none'}) => {toSVG(): Promise<string>; finalize(): void};
  parse(spec: unknown): unknown;
}
interface VegaLiteModule {
  compile(spec: TopLevelSpec): {spec: unknown};
}

/** Imports an ES module by name at run time (vega and vega-lite are ESM-only). */
async function importEsm<T>(name: string): Promise<T> {
  return (await import(name)) as T;
}

/** A chart: its title, a caption, and a Vega-Lite spec. */
export interface Chart {
  id: string;
  title: string;
  caption: string;
  spec: TopLevelSpec;
}

const WIDTH = 440;
const HEIGHT = 260;

const BASE_CONFIG = {
  font: 'Helvetica, Arial, sans-serif',
  axis: {labelFontSize: 11, titleFontSize: 12, titleFontWeight: 'normal' as const, grid: true, gridColor: '#e6e6e6'},
  legend: {labelFontSize: 11, titleFontSize: 11, labelLimit: 260, titleLimit: 260},
  view: {stroke: '#cccccc'},
};

/** Accuracy (%) vs ε, one curve per attack plus the worst case. */
export function accuracyChart(
  id: string,
  title: string,
  norm: 'linf' | 'l2' | 'l1',
  rows: {epsilon: number; accuracy: number; attack: string}[],
  worstLabel: string,
  legendTitle = 'attack',
): Chart {
  const normLabel = norm === 'linf' ? 'L∞' : norm.toUpperCase();
  const unit = norm === 'linf' ? 'max change per pixel, intensity scale [0, 1]' : `${normLabel} norm of the change, intensity scale [0, 1]`;
  const attacks = [...new Set(rows.map((r) => r.attack))];
  return {
    id,
    title,
    caption:
      `Robust accuracy under each ${normLabel} attack and the input worst case: per example over every input-space attack ` +
      '(an example counts only if it survives every one of them). A "deep threat" curve, where present, also disturbs hidden layers: ' +
      'it is a different threat model and is not part of the input worst case.',
    spec: {
      $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
      width: WIDTH,
      height: HEIGHT,
      config: BASE_CONFIG,
      data: {values: rows.map((r) => ({...r, accuracy: 100 * r.accuracy}))},
      encoding: {
        x: {field: 'epsilon', type: 'quantitative', title: `ε — ${normLabel} radius (${unit})`},
        y: {field: 'accuracy', type: 'quantitative', title: ['accuracy on the attacked', 'test examples (%)'], scale: {domain: [0, 100]}},
        color: {field: 'attack', type: 'nominal', title: legendTitle, sort: attacks, scale: {domain: attacks, range: attacks.map((a, i) => (a === worstLabel ? '#000000' : PALETTE[i % PALETTE.length]))}},
        strokeDash: {
          condition: {test: `datum.attack === ${JSON.stringify(worstLabel)}`, value: [6, 3]},
          value: [1, 0],
        },
      },
      layer: [
        {mark: {type: 'line', strokeWidth: 2}},
        {mark: {type: 'point', filled: true, size: 40}},
      ],
    } as TopLevelSpec,
  };
}

const PALETTE = ['#4c78a8', '#f58518', '#54a24b', '#e45756', '#72b7b2', '#b279a2', '#9d755d', '#eeca3b'];

/** Training curves per epoch: loss (left) and accuracy (right). */
export function trainingChart(id: string, title: string, rows: {epoch: number; series: string; kind: 'loss' | 'accuracy'; value: number}[]): Chart {
  const panel = (kind: 'loss' | 'accuracy', yTitle: string | string[]) => ({
    width: 300,
    height: 220,
    transform: [{filter: `datum.kind === '${kind}'`}],
    mark: {type: 'line' as const, point: true, strokeWidth: 2},
    encoding: {
      x: {field: 'epoch', type: 'quantitative' as const, title: 'epoch', axis: {tickMinStep: 1, format: 'd'}},
      y: {field: 'value', type: 'quantitative' as const, title: yTitle, ...(kind === 'accuracy' ? {scale: {domain: [0, 100]}} : {scale: {zero: true}})},
      color: {field: 'series', type: 'nominal' as const, title: 'curve'},
    },
  });
  return {
    id,
    title,
    caption:
      'Training loss/accuracy are averaged over the epoch\'s batches at the points the update used (adversarial points for adversarial training); ' +
      'validation curves are measured after each epoch on held-out training examples, clean and under PGD-10 (L∞, at the training ε).',
    spec: {
      $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
      config: BASE_CONFIG,
      data: {values: rows.map((r) => ({...r, value: r.kind === 'accuracy' ? 100 * r.value : r.value}))},
      hconcat: [panel('loss', ['cross-entropy loss', '(nats per example)']), panel('accuracy', 'accuracy (%)')],
    } as TopLevelSpec,
  };
}

/** Mean ‖dℓ‖ per layer over training, one small panel per layer (independent y scales). */
export function disturbanceChart(id: string, title: string, rows: {epoch: number; layer: string; norm: number}[]): Chart {
  const layers = [...new Set(rows.map((r) => r.layer))];
  return {
    id,
    title,
    caption:
      'Mean over the epoch of the per-example norm of the disturbance d*ℓ found by the attack at each Disturbance layer ' +
      '(‖d‖∞ for layers with an L∞ budget, ‖d‖₁ for L1, ‖d‖₂ otherwise), in the units of that layer\'s activations. Each panel has its own y scale.',
    spec: {
      $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
      config: BASE_CONFIG,
      data: {values: rows},
      columns: Math.min(3, layers.length),
      facet: {field: 'layer', type: 'nominal', title: null, sort: layers},
      spec: {
        width: 200,
        height: 150,
        mark: {type: 'line', point: true, strokeWidth: 2, color: '#4c78a8'},
        encoding: {
          x: {field: 'epoch', type: 'quantitative', title: 'epoch', axis: {tickMinStep: 1, format: 'd'}},
          y: {field: 'norm', type: 'quantitative', title: ['mean ‖dℓ‖', '(activation units)'], scale: {zero: true}},
        },
      },
      resolve: {scale: {y: 'independent'}},
    } as TopLevelSpec,
  };
}

/** Objective vs gradient evaluations for CG and gradient ascent. */
export function convergenceChart(id: string, title: string, rows: {gradientEvaluations: number; objective: number; solver: string}[], examples: number): Chart {
  // y range: from the common start value to the best value reached; diverging runs are clamped at the bottom.
  const start = Math.min(...rows.filter((r) => r.gradientEvaluations === 1).map((r) => r.objective));
  const best = Math.max(...rows.map((r) => r.objective));
  const pad = 0.05 * Math.max(best - start, 1e-6);
  const domain = [start - pad, best + pad];
  return {
    id,
    title,
    caption:
      `Maximisation of eq. 11 on ${examples} test examples from the same start (the clean neurons): mean objective J over the batch ` +
      'against the number of batched gradient evaluations spent (one forward + one backward pass each; line searches included): CG and gradient ascent after each iteration, ' +
      'the deep attack\'s default solver (preconditioned ascent on the disturbances, what deepAttack and training use unless told otherwise) once per budget 1, 2, 4, …, as a user gets it at that maxGradientEvaluations. ' +
      'Values below the start (a diverging fixed-step run) are drawn at the bottom edge.',
    spec: {
      $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
      width: WIDTH,
      height: HEIGHT,
      config: BASE_CONFIG,
      data: {values: rows},
      mark: {type: 'line', point: true, strokeWidth: 2},
      encoding: {
        x: {field: 'gradientEvaluations', type: 'quantitative', title: 'batched gradient evaluations (count)'},
        y: {field: 'objective', type: 'quantitative', title: ['mean objective J of eq. 11', '(loss + penalties, nats)'], scale: {domain, clamp: true, nice: false}},
        color: {field: 'solver', type: 'nominal', title: 'solver'},
      },
    } as TopLevelSpec,
  };
}

/** Robust accuracy per layer under the one-layer deep attack (grouped bars, one bar per relative budget). */
export function layerChart(id: string, title: string, rows: {layer: string; index: number; relativeEpsilon: string; accuracy: number}[], cleanAccuracy: number): Chart {
  const layers = [...new Set(rows.sort((a, b) => a.index - b.index).map((r) => r.layer))];
  return {
    id,
    title,
    caption:
      'Accuracy when the deep attack may disturb only one layer, with an L2 budget ε_ℓ = ε_rel × (mean L2 norm of that layer\'s clean activation); ' +
      `the lower the bar, the more vulnerable the layer. Dashed line: clean accuracy (${(100 * cleanAccuracy).toFixed(1)} %).`,
    spec: {
      $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
      width: Math.max(WIDTH, 90 * layers.length),
      height: HEIGHT,
      config: BASE_CONFIG,
      layer: [
        {
          data: {values: rows.map((r) => ({...r, accuracy: 100 * r.accuracy}))},
          mark: {type: 'bar'},
          encoding: {
            x: {field: 'layer', type: 'nominal', title: 'disturbed layer: the input, or the output of the named layer (input → output)', sort: layers, axis: {labelAngle: 0, labelLimit: 200}},
            xOffset: {field: 'relativeEpsilon', type: 'nominal'},
            y: {field: 'accuracy', type: 'quantitative', title: ['accuracy under the', 'one-layer attack (%)'], scale: {domain: [0, 100]}},
            color: {field: 'relativeEpsilon', type: 'nominal', title: 'ε_rel'},
          },
        },
        {
          data: {values: [{clean: 100 * cleanAccuracy}]},
          mark: {type: 'rule', strokeDash: [6, 3], color: '#333333'},
          encoding: {y: {field: 'clean', type: 'quantitative'}},
        },
      ],
    } as TopLevelSpec,
  };
}

/** Renders a chart to a standalone SVG string (headless: no canvas, no DOM). */
export async function renderSvg(chart: Chart): Promise<string> {
  const vega = await importEsm<VegaModule>('vega');
  const vl = await importEsm<VegaLiteModule>('vega-lite');
  const compiled = vl.compile(chart.spec).spec;
  const view = new vega.View(vega.parse(compiled), {renderer: 'none'});
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}
