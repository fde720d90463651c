/**
 * xfer's public API: a few core parts (backbone + taps, preprocessing plan, feature store, heads)
 * that the CLI composes. Everything here is typed; see README "API tour".
 */
export { XferError, formatError } from './errors.js';
export { VERSION } from './version.js';

// model: cards, registry, layers, taps, sessions
export { loadCard, validateCard, pixelAffine, type ModelCard, type CardInput, type CardResize, type CardTaps } from './model/card.js';
export { resolveBackbone, listBuiltinCards, type ResolvedBackbone } from './model/registry.js';
export { describeLayers, filterLayers, type LayerRow } from './model/layers.js';
export { listTensors, type TensorInfo } from './model/graph.js';
export { deriveTapModel, resolveTapName, MODEL_OUTPUT_TAP, POOLS, POOL_HELP, type Pool, type TapRequest, type ResolvedTap } from './model/taps.js';
// model: the catalog of downloadable backbones, cards from Hugging Face preprocessor configs
export { listCatalog, isPresent, type CatalogEntry, type CatalogFile } from './model/catalog.js';
export { pullEntry, registerLocalFile, type PullOptions, type PullResult } from './model/pull.js';
export { findDefaultTap, type FoundTap } from './model/default-tap.js';
export { cardFromPreprocessor } from './model/hf-card.js';
export { openTappedBackbone, type TappedBackbone, type TapOutput } from './model/runner.js';
export { buildTapModel } from './model/tap-model.js';
export { openSession, parseDevice, cudaProviderInstalled, type DeviceOptions } from './model/session.js';

// onnx I/O
export { readOnnxFile, writeOnnxFile, serializeModel } from './onnx/io.js';
export type { ModelProto } from './onnx/proto.js';

// importers
export { builtinOnnxPath } from './import/keras/nsfwjs.js';
export { importTflite, tfliteToOnnxCached } from './import/tflite/index.js';

// images
export { discoverDataset, type Dataset, type DatasetEntry } from './image/discover.js';
export { resolvePreprocess, type PreprocessPlan } from './image/plan.js';
export { loadImagePixels, toModelTensor, ImageError } from './image/decode.js';

// the runtime every image command runs on: plan, worker sessions, ordered streaming
export { inferencePlan, defaultBatch, defaultDecodeConcurrency } from './runtime/plan.js';
export { openBackbone, type OpenBackboneOptions, type OpenedBackbone } from './runtime/open.js';
export { runStream, type StreamOptions, type StreamBatch, type StreamSlot, type StreamProgress } from './runtime/stream.js';
export type { Backbone, BatchResult } from './runtime/pool.js';

// extraction and feature folders
export { extractFeatures, type ExtractOptions, type ExtractSummary } from './extract/pipeline.js';
export { mergeFeatureFolders } from './extract/merge.js';
export { loadJobFile } from './extract/jobs.js';
export { readNpy, encodeNpy, readNpyHeader } from './features/npy.js';
export { FEATURE_FORMAT, FEATURE_FORMAT_VERSION, DEFAULT_ROWS_PER_SHARD, type FeatureMeta, type FeatureLayer, type IndexRow } from './features/format.js';

// heads (linear, svm, svm-rbf, mlp, knn), training and evaluation
export { createHead, headFromState, HEAD_KINDS, type Head, type HeadKind, type HeadParams } from './heads/head.js';
export { trainHead, evalHead, saveHead, loadHead, checkCompatible, computeMetrics, parseSweep, type TrainOptions, type TrainResult, type EvalResult, type TrainedHead } from './heads/index.js';
export { openFeatures, readFeatureMeta, pickLayers, loadRows } from './features/reader.js';

// where to cut and what to train: probe sweeps over taps, advice, nearest neighbours (issue 19)
export { runSweep, planTaps, sweepPlotSvg, SWEEP_HEADS, SWEEP_POOLS, type SweepOptions, type SweepResult, type SweepRow } from './sweep/sweep.js';
export { advise, formatAdvice, type Advice, type AdviseOptions } from './sweep/advise.js';
export { findNeighbors, neighborsHtml, neighborsPng, type NeighborsOptions, type NeighborsResult } from './sweep/neighbors.js';
export { autoTaps, type AutoTap } from './model/auto-taps.js';
export { KnnHead, knnOnnx } from './heads/knn.js';
export { runProbe, type ProbeData, type ProbeOptions, type ProbeResult } from './heads/probe.js';

// fine-tuning (importing it registers the finetune head kind)
export { finetune, OPTIMIZERS, type FinetuneOptions, type FinetuneResult, type FinetuneEvent, type Optimizer } from './finetune/fit.js';
export { FinetuneHead } from './finetune/head.js';

// prediction
export { Classifier } from './predict/classify.js';
export { openPredictor, type Predictor, type PredictorOptions, type PredictResult, type PredictError, type PredictOutcome } from './predict/predict.js';
export { exportOnnx, buildExportModel, type ExportOptions, type ExportResult } from './predict/export.js';
