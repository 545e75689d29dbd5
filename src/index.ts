/**
 * tfjs-deep-adversarial: deep adversarial training for TensorFlow.js.
 *
 * Importing the package registers the `Disturbance` layer class with
 * `tf.serialization`, so saved instrumented models load with
 * `tf.loadLayersModel`.
 *
 * This entry point runs anywhere tfjs runs (browser or Node). Node-only helpers
 * (saving to disk, the MNIST reader, backend selection) live in
 * `tfjs-deep-adversarial/node`.
 *
 * @packageDocumentation
 */
import {disturbance} from './layers/disturbance.js';

export {Disturbance, disturbance, isDisturbance} from './layers/disturbance.js';
export type {DisturbanceArgs, DisturbanceMode} from './layers/disturbance.js';

/** Layer factories in the style of `tf.layers.*`. */
export const layers = {disturbance};

export {
  instrument,
  strip,
  disturbanceLayers,
  disturbanceSites,
  isNeuronLayer,
  DEFAULT_INPUT_PENALTY,
  DEFAULT_HIDDEN_PENALTY,
} from './model/instrument.js';
export type {InstrumentOptions, DisturbanceSite} from './model/instrument.js';

export {
  DEFAULT_CONSTRAINT_LAMBDA,
  DEFAULT_PENALTY,
  validatePenalty,
  penaltyValue,
  projectDisturbance,
  violationPerExample,
} from './objective/penalties.js';
export type {PenaltyConfig, QuadraticPenalty, NormBallPenalty, Box} from './objective/penalties.js';

export {neuronObjective, disturbedObjective} from './objective/neuron_space.js';
export {perExampleLoss, assertCompatibleXY} from './objective/loss.js';
export type {LossFn, PerExampleLossFn} from './objective/loss.js';

export {deepAttack, predictDisturbed} from './attacks/deep.js';
export type {DeepAttackOptions, DeepAttackResult} from './attacks/deep.js';
export {fgsmAttack} from './attacks/fgsm.js';
export type {FgsmOptions} from './attacks/fgsm.js';
export {pgdAttack, pgdAttackWithInfo} from './attacks/pgd.js';
export type {PgdOptions, PgdResult, AttackNorm} from './attacks/pgd.js';

export {apgdAttack, apgdAttackWithInfo, apgdCheckpoints} from './attacks/apgd.js';
export type {ApgdOptions, ApgdResult} from './attacks/apgd.js';
export {squareAttack, squareAttackWithInfo} from './attacks/square.js';
export type {SquareOptions, SquareResult} from './attacks/square.js';
export {autoAttack, autoAttackStages} from './attacks/autoattack.js';
export type {AutoAttackOptions, AutoAttackResult, AutoAttackStage, AutoAttackStageResult, AutoAttackVersion} from './attacks/autoattack.js';
export {logitFunction, crossEntropyLoss, cwLoss, dlrLoss, dlrTargetedLoss, logitMargin} from './attacks/logits.js';
export type {LogitFunction, LogitLoss, LogitSource} from './attacks/logits.js';

export {conjugateGradient, gradientAscent} from './solvers/index.js';
export type {BatchObjective, SolverOptions, SolverResult, IterationInfo, CgOptions, GradientAscentOptions} from './solvers/index.js';

export {adversarialCallback, AdversarialCallback} from './training/callback.js';
export type {AdversarialCallbackOptions, ValidateAdversarialOptions, FgsmGuardOptions} from './training/callback.js';
export {adversarialStep} from './training/train_step.js';
export type {
  AdversarialTrainingOptions,
  AdversarialStepOptions,
  AdversarialStepResult,
  AttackStats,
  CommonTrainingOptions,
  DeepTrainingOptions,
  PgdTrainingOptions,
  FgsmTrainingOptions,
} from './training/train_step.js';
export {linearWarmup, linearWarmupSteps, strengthAt, scalePenalty} from './training/schedules.js';
export type {StrengthSchedule} from './training/schedules.js';

export {evaluateRobustness, layerVulnerability, worstCaseAccuracy, correctPredictions} from './eval/robustness.js';
export type {
  RobustnessAttack,
  FgsmAttackSpec,
  PgdAttackSpec,
  DeepAttackSpec,
  RobustnessOptions,
  RobustnessResult,
  RobustnessProgress,
  AttackResult,
  AttackPoint,
  WorstCasePoint,
  AttackOutcome,
  LayerProfileOptions,
  LayerProfile,
  LayerVulnerability,
} from './eval/robustness.js';
export {solverConvergence} from './eval/convergence.js';
export type {ConvergenceOptions, ConvergenceResult, ConvergenceRun, ConvergencePoint} from './eval/convergence.js';
export {evaluatePerturbations} from './eval/perturbations.js';
export type {
  PerturbationOptions,
  PerturbationResult,
  PerturbationProgress,
  NoisePerturbationOptions,
  QuantizationPerturbationOptions,
  NoisePoint,
  QuantizationPoint,
} from './eval/perturbations.js';

export {registerWasmKernels, unregisterWasmKernels, registeredWasmKernels} from './kernels/wasm.js';
export type {WasmKernelOptions} from './kernels/wasm.js';
