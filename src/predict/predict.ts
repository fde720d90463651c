/**
 * Predict with backbone + trained head: images → the card's preprocessing (uint8 pixels) → the
 * backbone tapped at exactly the head's layers and pooling → layer outputs concatenated in the
 * head's order → the head's saved transforms → the head's scores and probabilities → top-k.
 * It streams like `xfer extract`: images decode (sharp, bounded concurrency) ahead of the batch being
 * assembled while earlier batches run in backbone worker threads (runtime/stream.ts), and outcomes
 * come out in input order.
 *
 * The backbone must be the one the head was trained on: its sha256 (and that of its external weight
 * files, if any) is compared with the one the head recorded (from the feature folder's meta.json) and
 * a different model is refused.
 * Unreadable images are reported per image (`{ path, error }`), never thrown.
 */
import path from 'node:path';
import pLimit from 'p-limit';
import { XferError } from '../errors.js';
import type { CardFlags } from '../model/card-flags.js';
import type { ModelCard } from '../model/card.js';
import { listBuiltinCards, resolveBackbone, type ResolvedBackbone } from '../model/registry.js';
import type { DeviceOptions } from '../model/session.js';
import { POOLS, type Pool, type TapRequest } from '../model/taps.js';
import { loadPixelsOrSkip } from '../image/decode.js';
import { cardDifferences, overridesFromRecord, resolvePreprocess, type PreprocessOverrides, type PreprocessPlan } from '../image/plan.js';
import '../heads/index.js';
import '../finetune/head.js';
import { loadHead, type TrainedHead } from '../heads/model.js';
import { transformFor } from '../heads/model.js';
import { externalWeightsLabel, sameExternalWeights } from '../features/external-weights.js';
import { readFeatureMeta } from '../features/reader.js';
import { WORKER_DEPTH, type BackboneInfo, type Backbone } from '../runtime/pool.js';
import { defaultBatch, defaultDecodeConcurrency } from '../runtime/plan.js';
import { openBackbone } from '../runtime/open.js';
import { runStream } from '../runtime/stream.js';
import { checkBatchMemory, formedBatch } from '../extract/batch-bound.js';

export interface PredictorOptions {
  /** Backbone spec (built-in id or .onnx/.tflite path) overriding the head's recorded backbone. */
  model?: string;
  /** Model card file for the backbone. */
  card?: string;
  /** Card fields from command-line flags. */
  cardFlags?: CardFlags;
  device?: DeviceOptions;
  /** Images per backbone run (default as for extraction: 2 on CPU, 32 on CUDA; a model with a fixed batch uses it). */
  batch?: number;
  /** Predictions listed in `top` (default 5, at most the number of classes). */
  top?: number;
  /** Preprocessing overrides (background colour, fast decode, ...), as for extraction. */
  preprocess?: PreprocessOverrides;
  /** Images decoded concurrently (default: number of CPUs + 1, as for extraction). */
  decodeConcurrency?: number;
  /** Inference sessions (worker threads); default as for extraction (two on a multi-core CPU, one on a GPU). */
  workers?: number;
  onNotice?: (msg: string) => void;
}

export interface TopPrediction {
  /** Head class index (0..K-1). */
  index: number;
  label: string;
  prob: number;
  score: number;
}

export interface PredictResult {
  path: string;
  /** Predicted head class (argmax of `probs`, as `xfer eval` counts it) and its label. */
  index: number;
  label: string;
  /** The head's predictProba row (K values; uncalibrated heads: softmax of the scores). */
  probs: number[];
  /** The head's decision scores (K values: logits, SVM margins, or svm-rbf votes + confidence). */
  scores: number[];
  top: TopPrediction[];
}

export interface PredictError {
  path: string;
  error: string;
}

export type PredictOutcome = PredictResult | PredictError;

export function isPredictError(r: PredictOutcome): r is PredictError {
  return 'error' in r;
}

/** An image to predict: a path, or a display path plus what to read (exact bytes for non-UTF-8 names). */
export type PredictInput = string | { path: string; source: string | Buffer };

export interface HeadOutputs {
  /** n × K, row-major. */
  probs: Float32Array;
  scores: Float32Array;
  /** argmax of each probs row. */
  index: Int32Array;
}

export interface Predictor {
  readonly head: TrainedHead;
  /** The backbone as opened (id, sha256, card, tapped outputs, provider). */
  readonly info: BackboneInfo;
  readonly plan: PreprocessPlan;
  /** Head class index → label. */
  readonly labels: string[];
  /** Whether probs are calibrated probabilities (else softmax of uncalibrated scores). */
  readonly probabilistic: boolean;
  /** Predict images in input order; `onResult` sees each outcome, in that order, as soon as it and all before it are done. */
  predict(images: PredictInput[], onResult?: (r: PredictOutcome) => void): Promise<PredictOutcome[]>;
  /** Head outputs for n images given as uint8 NHWC pixels (the backbone's `run` input). */
  predictPixels(pixels: Uint8Array, n: number): Promise<HeadOutputs>;
  /** Head outputs for raw (untransformed) feature rows, n × width. */
  predictFeatures(X: Float32Array, n: number): Promise<HeadOutputs>;
  close(): Promise<void>;
}

/** The head's taps, in the head's order. */
export function headTaps(t: TrainedHead, headDir: string): TapRequest[] {
  return t.source.layers.map((l) => {
    const pool = (l.pool ?? 'none') as Pool;
    if (!POOLS.includes(pool)) throw new XferError(`${path.join(headDir, 'head.json')}: layer ${l.name} has unknown pooling '${String(l.pool)}'`, { hint: 'the head folder is damaged; train it again' });
    return { name: l.name, pool };
  });
}

/**
 * Which backbone a head needs when none is given: its built-in id, else the model file the feature
 * folder recorded (when it still exists).
 */
export async function defaultBackboneSpec(t: TrainedHead, headDir: string): Promise<string> {
  const id = t.source.model.id;
  if ((await listBuiltinCards()).some((c) => c.id === id)) return id;
  const meta = await readFeatureMeta(t.source.features);
  if (meta?.model?.file) return meta.model.file;
  throw new XferError(`--head ${headDir}: the head was trained on backbone '${id}', which is not built in, and its feature folder ${t.source.features} no longer says where the model file is`, {
    hint: 'pass --model <model.onnx> (and --card <card.json>) for the backbone the head was trained on',
  });
}

/** Refuse a backbone file other than the one the head was trained on. */
export function checkBackbone(t: TrainedHead, b: Pick<ResolvedBackbone, 'id' | 'sha256' | 'file'>, headDir: string): void {
  const want = t.source.model;
  if (b.sha256 !== want.sha256) {
    throw new XferError(`--head ${headDir} was trained on backbone ${want.id} (sha256 ${String(want.sha256).slice(0, 12)}) but --model resolves to ${b.id} ${b.file} (sha256 ${b.sha256.slice(0, 12)})`, {
      hint: 'pass --model <the backbone the head was trained on> (the head records its sha256), or retrain the head on features of this backbone',
    });
  }
}

/**
 * Refuse a backbone whose external weight files differ from those the head's features came from
 * (`externalSha256`: onnx/io.ts externalWeightsDigest of the opened model; null when it has none).
 * A head saved before external weights were recorded is not checked for them.
 */
export function checkExternalWeights(t: TrainedHead, externalSha256: string | null, file: string, headDir: string): void {
  const want = t.source.model.external_sha256;
  if (sameExternalWeights(want, externalSha256)) return;
  throw new XferError(`--head ${headDir} was trained on backbone ${t.source.model.id} with external weights ${externalWeightsLabel(want)}, but ${file} has ${externalWeightsLabel(externalSha256)}`, {
    hint: 'use the weight files the head was trained with (next to the .onnx file), or retrain the head on features of these weights',
  });
}

/** Resolve the backbone for a head and check it is the head's (sha256). */
export async function resolveHeadBackbone(t: TrainedHead, headDir: string, opts: Pick<PredictorOptions, 'model' | 'card' | 'cardFlags' | 'onNotice'>): Promise<{ spec: string; backbone: ResolvedBackbone }> {
  const spec = opts.model ?? (await defaultBackboneSpec(t, headDir));
  const backbone = await resolveBackbone(spec, { card: opts.card, cardFlags: opts.cardFlags, onNotice: opts.onNotice });
  checkBackbone(t, backbone, headDir);
  return { spec, backbone };
}

/** Indices of the k largest values, largest first (ties: lower index first). */
function topIndices(p: ArrayLike<number>, k: number): number[] {
  return Array.from({ length: p.length }, (_, i) => i)
    .sort((a, b) => p[b] - p[a] || a - b)
    .slice(0, k);
}

/**
 * How the head's features were preprocessed: its own record, else (heads saved before they recorded
 * it) the meta.json of the feature folder it was trained on when that still exists, else nothing
 * known — which `overridesFromRecord` reads as that era's defaults (ICC profiles applied).
 */
export async function headPreprocessingRecord(head: TrainedHead): Promise<Record<string, unknown> | null> {
  if (head.source.preprocessing) return head.source.preprocessing;
  // (Moved or deleted: nothing known.)
  const meta = await readFeatureMeta(head.source.features);
  return meta?.model?.sha256 === head.source.model.sha256 && meta.preprocessing && typeof meta.preprocessing === 'object' ? meta.preprocessing : null;
}

/**
 * The preprocessing to predict with: the plan the head's features were extracted with (resize, crop,
 * interpolation, ICC, background, … from `record`, see headPreprocessingRecord), on the backbone's
 * card, with `overrides` on top. A card that now feeds the backbone differently (size, channel order,
 * layout, dtype, mean/std) than at extraction is refused: the head's features would not mean the same
 * thing.
 */
export function headPlan(record: Record<string, unknown> | null, headDir: string, card: ModelCard, overrides: PreprocessOverrides = {}): PreprocessPlan {
  const plan = resolvePreprocess(card, { ...overridesFromRecord(record ?? {}), ...overrides });
  const diff = record ? cardDifferences(plan, record) : [];
  if (diff.length > 0) {
    throw new XferError(`--head ${headDir}: its features were extracted with other input preprocessing than the card ${card.id} gives now (${diff.join('; ')})`, {
      hint: 'pass the --card or card flags (--size, --mean, --std, --channel-order, ...) the features were extracted with',
    });
  }
  return plan;
}

/** Open backbone + head for prediction; see Predictor. */
export async function openPredictor(headDir: string, opts: PredictorOptions = {}): Promise<Predictor> {
  const head = await loadHead(headDir);
  const taps = headTaps(head, headDir);
  const notice = opts.onNotice ?? (() => {});
  const { spec, backbone: resolved } = await resolveHeadBackbone(head, headDir, opts);
  const { backbone, workers, threads } = await openBackbone({ spec, resolved, taps, device: opts.device, workers: opts.workers, onNotice: notice });
  try {
    const info = backbone.info;
    checkExternalWeights(head, info.externalSha256, info.file, headDir);
    const widths = info.outputs.map((o) => o.shape.reduce((a, c) => a * c, 1));
    head.source.layers.forEach((l, i) => {
      const want = l.shape.reduce((a, c) => a * c, 1);
      if (widths[i] !== want) {
        throw new XferError(`--head ${headDir}: layer ${l.name} (pool ${l.pool ?? 'none'}) gives ${widths[i]} values per image but the head was trained on ${want}`, {
          hint: 'use the backbone and card the features were extracted with',
        });
      }
    });
    const width = widths.reduce((a, c) => a + c, 0);
    if (width !== head.source.width) {
      throw new XferError(`--head ${headDir}: the tapped layers give ${width} features but the head was trained on ${head.source.width}`, { hint: 'use the backbone and card the features were extracted with' });
    }
    const plan = headPlan(await headPreprocessingRecord(head), headDir, info.card, opts.preprocess);
    return makePredictor(head, backbone, plan, widths, { workers, threads }, opts);
  } catch (e) {
    await backbone.close();
    throw e;
  }
}

function makePredictor(head: TrainedHead, backbone: Backbone, plan: PreprocessPlan, widths: number[], { workers, threads }: { workers: number; threads: number }, opts: PredictorOptions): Predictor {
  const { info } = backbone;
  const K = head.head.nClasses;
  const D = head.source.width;
  const labels = head.classLabels;
  const [H, W] = plan.size;
  const imgBytes = H * W * 3;
  const B = info.fixedBatch ?? Math.max(1, opts.batch ?? defaultBatch(info.provider, threads));
  const topK = Math.min(Math.max(1, opts.top ?? 5), K);
  const conc = Math.max(1, opts.decodeConcurrency ?? defaultDecodeConcurrency());
  const limit = pLimit(conc);

  const predictFeatures = async (X: Float32Array, n: number): Promise<HeadOutputs> => {
    const Xt = await transformFor(head, { data: X, rows: n, cols: D });
    const scores = await head.head.decisionFunction(Xt);
    const probs = await head.head.predictProba(Xt);
    const index = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      let best = 0;
      for (let c = 1; c < K; c++) if (probs[i * K + c] > probs[i * K + best]) best = c;
      index[i] = best;
    }
    return { probs, scores, index };
  };

  /** Head outputs for the first n rows of the backbone's outputs (layers concatenated in the head's order). */
  const headOutputs = (outputs: Float32Array[], n: number): Promise<HeadOutputs> => {
    const X = new Float32Array(n * D);
    let col = 0;
    outputs.forEach((o, li) => {
      const w = widths[li];
      for (let i = 0; i < n; i++) X.set(o.subarray(i * w, (i + 1) * w), i * D + col);
      col += w;
    });
    return predictFeatures(X, n);
  };

  const result = (p: string, out: HeadOutputs, i: number): PredictResult => {
    const probs = Array.from(out.probs.subarray(i * K, (i + 1) * K));
    const scores = Array.from(out.scores.subarray(i * K, (i + 1) * K));
    const index = out.index[i];
    return { path: p, index, label: labels[index], probs, scores, top: topIndices(probs, topK).map((c) => ({ index: c, label: labels[c], prob: probs[c], score: scores[c] })) };
  };

  // Outcomes come out in input order as soon as a batch and those before it are done (runtime/stream.ts).
  const predict = async (images: PredictInput[], onResult?: (r: PredictOutcome) => void): Promise<PredictOutcome[]> => {
    const items = images.map((im) => (typeof im === 'string' ? { path: im, source: im } : im));
    const all: PredictOutcome[] = [];
    // Buffers for the batch actually formed: fewer inputs than --batch need no larger ones.
    const formed = info.fixedBatch ?? formedBatch(B, B, items.length, info.provider === 'cuda');
    checkBatchMemory(formed, imgBytes, workers * WORKER_DEPTH + 4, workers);
    await runStream({
      backbone,
      from: 0,
      to: items.length,
      decode: (i) => limit(() => loadPixelsOrSkip(items[i].source, plan, { displayPath: items[i].path })),
      batch: formed,
      imageBytes: imgBytes,
      pad: info.provider === 'cuda',
      window: Math.max(conc * 2, B * 2),
      maxInflight: workers * WORKER_DEPTH + 1,
      onBatch: async (b, outputs) => {
        const out = outputs ? await headOutputs(outputs, b.rows) : null;
        for (const s of b.slots) {
          const r: PredictOutcome = s.row === null ? { path: items[s.item].path, error: s.reason } : result(items[s.item].path, out!, s.row);
          all.push(r);
          onResult?.(r);
        }
      },
    });
    return all;
  };

  return {
    head,
    info,
    plan,
    labels,
    probabilistic: head.head.probabilistic,
    predict,
    // The caller's buffer stays theirs: a copy goes to the worker.
    predictPixels: async (pixels, n) => headOutputs((await backbone.run(pixels.slice(0, n * imgBytes), n)).outputs, n),
    predictFeatures,
    close: () => backbone.close(),
  };
}
