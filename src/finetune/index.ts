/**
 * Fine-tuning core: a training graph (forward, softmax cross-entropy with label smoothing, backward,
 * SGD-momentum or AdamW update) generated as one ONNX model, run by onnxruntime, weights held in
 * ORT tensors between steps. See docs/finetune.md.
 *
 * API (stable for src/cli and the training loop):
 * - planFinetune(model, { from, nClasses, freeze? }) → FinetunePlan (JSON-serialisable), XferError on
 *   unsupported ops or a `from` inside a branch (naming the node and listing finetuneTaps()).
 * - buildTrainingModel(model, plan, TrainGraphOptions) → ModelProto; initialWeights(model, plan, seed);
 *   buildInferenceModel(model, plan, weights) → input named plan.from, outputs 'logits', 'probabilities'.
 * - TrainingSession.open(trainingModel, plan, init, { threads?, device? }): step(x, y, n, lr),
 *   logits(x, n), weights(), state()/setState(), close().
 * Extensions beyond the first agreed API: FinetunePlan also carries to/toShape/featureDim/freeze/
 * nodes/nodeBlock; TrainGraphOptions has optional beta1/beta2/eps/outputGradients; step() also
 * returns `gradients` when the graph was built with outputGradients; finetuneTaps(model).
 */
export { planFinetune, finetuneTaps, HEAD_WEIGHT, HEAD_BIAS, SUPPORTED_OPS, type FinetunePlan, type ParamInfo } from './plan.js';
export { buildTrainingModel, buildInferenceModel, evalModelOf, type TrainGraphOptions } from './graphs.js';
export { initialWeights } from './init.js';
export { TrainingSession, type LearningRates, type SessionOptions } from './session.js';
export { Rng } from './rng.js';
