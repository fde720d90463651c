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
 * nodes/nodeBlock; TrainGraphOptions has optional beta1/beta2/eps (PyTorch defaults) and
 * outputGradients; step() also returns `gradients` when the graph was built with outputGradients;
 * finetuneTaps(model) (deepest valid `from` tensors); evalModelOf(trainingModel, plan).
 * Semantics: parameters are the initializer names (Conv weight/bias, BN scale/bias; BN running
 * statistics frozen), then 'head.weight' [K, F] and 'head.bias' [K]; lr.backbone has one entry per
 * plan.blocks entry (frozen ones ignored); weight decay applies to every parameter (PyTorch's
 * default single group); state().tensors holds the parameters and `<name>#mom` (SGD) or
 * `<name>#m`/`<name>#v` (AdamW); the step count drives AdamW's bias correction.
 */
export { planFinetune, finetuneTaps, HEAD_WEIGHT, HEAD_BIAS, SUPPORTED_OPS, type FinetunePlan, type ParamInfo } from './plan.js';
export { buildTrainingModel, buildInferenceModel, buildEvalModel, evalModelOf, trainingBuffers, type TrainGraphOptions } from './graphs.js';
export { initialWeights } from './init.js';
export { TrainingSession, type LearningRates, type SessionOptions } from './session.js';
export { Rng } from './rng.js';
export { nchwcBlock, nchwcBlockFor } from './nchwc.js';
