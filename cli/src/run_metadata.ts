/**
 * Types of the files a `train` run writes (`run.json`), shared by `train`,
 * `eval` and `report`.
 */
import type {BackendChoice} from 'tfjs-deep-adversarial/node';

/** Options of the `train` command (after parsing). */
export interface TrainCommandOptions {
  model: string;
  method: 'deep' | 'pgd' | 'fgsm' | 'none';
  epsilon: number;
  norm: 'linf' | 'l2';
  lambda: number;
  inputPenalty?: string;
  hiddenPenalty?: string;
  steps: number;
  maxIterations: number;
  maxGradEvals?: number;
  cleanWeight: number;
  warmup: number;
  /** Linear warm-up over this many optimizer steps (0 or absent: none; runs before 0.x have no field). */
  warmupSteps?: number;
  epochs: number;
  batchSize: number;
  learningRate: number;
  limit: number;
  valLimit: number;
  seed: number;
  backend: BackendChoice;
  data?: string;
  out?: string;
  resume: boolean;
  /** Start over in an `out` directory that already holds a run (its run files are deleted first). */
  overwrite?: boolean;
  progress: 'auto' | 'bar' | 'lines' | 'off';
  /**
   * Names of the options given explicitly on the command line (the rest are defaults). With `resume`,
   * only these override the run's recorded options; undefined = all of them count as explicit.
   */
  explicit?: string[];
}

/** What `run.json` holds. */
export interface RunMetadata {
  tool: 'tfjs-deep-adversarial';
  command: 'train';
  name: string;
  /** `failed`: stopped by an error (see `error`); `running` is also what a killed process leaves. */
  status: 'running' | 'interrupted' | 'complete' | 'failed';
  /** The error that stopped a `failed` run. */
  error?: string;
  options: Omit<TrainCommandOptions, 'resume' | 'progress' | 'out' | 'backend' | 'overwrite' | 'explicit'>;
  backend: string;
  createdAt: string;
  updatedAt: string;
  data: {source: string; trainExamples: number; valExamples: number; valOffset: number};
  model: {name: string; layers: string[]; disturbanceLayers: string[]; parameters: number};
  epochsDone: number;
  batchesDone: number;
  /** One record per completed epoch: training logs (adversarial for adversarial methods) and validation metrics. */
  history: Record<string, number>[];
  latestCheckpoint: string | null;
  seconds: number;
}

