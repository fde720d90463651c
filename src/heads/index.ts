/** Public entry of the heads module: importing it registers every head kind. */
export * from './head.js';
export * from './matrix.js';
export * from './transforms.js';
export { LinearHead } from './linear.js';
export { LinearSvmHead, dualCdL2, plattFit } from './svm-linear.js';
export { KernelSvmHead, smo } from './svm-kernel.js';
export { MlpHead } from './mlp.js';
export { KnnHead, knnOnnx, nearest, type Neighbours } from './knn.js';
export { lbfgs } from './lbfgs.js';
export { gemm, gemmJs, setKernelThreads, releaseKernel } from './kernel/matmul.js';
export { computeMetrics, type Metrics } from './metrics.js';
export { parseSweep, parseSweeps, gridPoints, type SweepSpec, type SweepGrid, type SweepPoint } from './sweep.js';
export { stratifiedSplit, stratifiedFolds } from './split.js';
export { saveHead, loadHead, checkCompatible, type TrainedHead } from './model.js';
export { trainHead, evalHead, REFIT_CHOICES, type TrainOptions, type EvalOptions, type TrainResult, type EvalResult, type TrainEvent, type RefitRows } from './train.js';
