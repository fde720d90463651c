/**
 * `finetune()`: the training loop around ft-core's training graph (index.ts). It streams shuffled
 * batches from a source (data.ts: cached activations at a tap; images.ts: decoded, augmented images
 * for `--from input`), steps the TrainingSession with per-block learning rates on a warmup + cosine
 * schedule (with `ema`, also a moving average of the weights, which is then what is scored and
 * kept), scores the validation split after every epoch, keeps the best epoch's weights (early
 * stopping restores them), checkpoints atomically at every epoch end and on abort (`--resume`
 * continues), stops on a non-finite loss naming the step, and saves a normal head folder
 * (finetune.onnx + head.json + report with curves and confusion matrices).
 */
import { readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { XferError } from '../errors.js';
import { readOnnxFile, serializeModel } from '../onnx/io.js';
import type { ModelProto } from '../onnx/proto.js';
import { listBuiltinCards, resolveBackbone } from '../model/registry.js';
import { openFeatures, type FeatureFolder } from '../features/reader.js';
import { Rng } from '../heads/rng.js';
import { stratifiedSplit } from '../heads/split.js';
import { computeMetrics, type Metrics } from '../heads/metrics.js';
import { saveHead, sourceOf, type HeadSource } from '../heads/model.js';
import { writeReport, type Report } from '../heads/report.js';
import { refuseExistingOut } from '../heads/train.js';
import { isLockEntry, withFolderLock } from '../util/lock.js';
import type { WriteFn } from '../util/atomic.js';
import { buildInferenceModel, buildTrainingModel, planFinetune, TrainingSession, type FinetunePlan } from './index.js';
import { epochOrder, FeatureRowSource, imageCount, oneViewPerImage, pickFromLayer, type Example, type ExampleSource } from './data.js';
import { blockRates, checkRate, ratesAt, type LrSpec } from './schedule.js';
import { CHECKPOINT_FILE, loadCheckpoint, saveCheckpoint, type Checkpoint, type EpochRecord } from './checkpoint.js';
import { FinetuneHead } from './head.js';
import { nchwcBlockFor } from './nchwc.js';
import { betaSymmetric, mixBatch } from './mixup.js';

export type Optimizer = 'sgd' | 'adamw';
export type BatchNormMode = 'frozen' | 'batch';
export const BATCH_NORM_MODES: readonly BatchNormMode[] = ['frozen', 'batch'];
export const OPTIMIZERS: readonly Optimizer[] = ['sgd', 'adamw'];

export interface FinetuneOptions {
  /** Replace an existing --out folder (its old files are removed before training starts). */
  force?: boolean;
  /** Feature folder extracted at `from` with `--pool none` (fine-tuning from a tap). */
  features?: string;
  /** Image dataset (fine-tuning from `input`, the whole network). */
  data?: string;
  /** Tensor to fine-tune from (a tap of the features), or 'input' for the whole network. */
  from: string;
  out: string;
  /** Backbone spec overriding the one the features record (same sha256 required); for `input`: the backbone (default: the built-in default). */
  model?: string;
  card?: string;
  /** New classifier's learning rate (default 1e-3). */
  lr?: number;
  /** Top backbone block's rate (default lr / 10). */
  lrBackbone?: number;
  /** Each block further down gets this times the rate above it (default 1). */
  layerDecay?: number;
  /** Keep the bottom n blocks of the trainable part fixed. */
  freeze?: number;
  optimizer?: Optimizer;
  /** SGD momentum (default 0.9). */
  momentum?: number;
  /** Decoupled weight decay (AdamW) / L2 (SGD); default 1e-4. */
  weightDecay?: number;
  labelSmoothing?: number;
  /** Mixup's α: each batch is blended with itself reversed, λ ~ Beta(α, α) (0: off, the default). */
  mixup?: number;
  /**
   * BatchNormalization of the trained blocks: 'frozen' (default) keeps the source's running
   * statistics; 'batch' normalises by batch statistics and updates the running ones (PyTorch's train mode).
   */
  batchNorm?: BatchNormMode;
  /** Decay of an exponential moving average of the weights, which is what is scored and saved (0: off, the default). */
  ema?: number;
  epochs?: number;
  batch?: number;
  /** Warmup length in epochs (fractions allowed); default min(1, epochs / 10). */
  warmup?: number;
  /** Stop after this many epochs without a better validation accuracy (0: never; default 3). */
  patience?: number;
  /** Fraction carved (stratified) for validation when the data has no val split (default 0.2; 0: none, the last epoch is kept). */
  val?: number;
  seed?: number;
  threads?: number;
  device?: string;
  /** Use at most this many training rows (a stratified subset; benchmarks of memory and speed). */
  maxTrain?: number;
  /** Augmentations for `--from input` (default hflip,crop). */
  augment?: string;
  /** Continue from `<out>/checkpoint.xfer`. */
  resume?: boolean;
  /** Abort: the step in flight finishes, a checkpoint is written, and an interrupted error is thrown. */
  signal?: AbortSignal;
  progress?: (e: FinetuneEvent) => void;
  warn?: (msg: string) => void;
  /** How checkpoint bytes reach the disk (tests inject a full disk). */
  checkpointWrite?: WriteFn;
}

export type FinetuneEvent =
  | { event: 'step'; epoch: number; epochs: number; batch: number; batches: number; step: number; loss: number; lr: number; imagesPerSecond: number }
  | { event: 'epoch'; epoch: number; epochs: number; loss: number; valLoss?: number; valAcc?: number; best: boolean; seconds: number; imagesPerSecond: number }
  | { event: 'checkpoint'; file: string; epoch: number; batch: number }
  | { event: 'stop'; reason: string };

export interface FinetuneResult {
  dir: string;
  report: Report;
  head: FinetuneHead;
}

/** Exit code of an interrupted run (as `xfer extract`). */
export const EXIT_INTERRUPTED = 130;

/** What a source of examples hands the loop. */
export interface FinetuneData {
  source: ExampleSource;
  train: Example[];
  val: Example[];
  test: Example[];
  /** The folder's label names; head class c is label `classes[c]`. */
  labels: string[];
  classes: number[];
  /** Val carved from train with this seed (else the data's own). */
  carvedSeed: number | null;
  /** Tensor fine-tuned from (resolved name). */
  from: string;
  backbone: { id: string; sha256: string; model: ModelProto };
  headSource: HeadSource;
  /** Where the rows came from (report). */
  origin: string;
}

function positiveInt(v: unknown, flag: string, allowZero = false): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || (allowZero ? v < 0 : v < 1)) {
    throw new XferError(`${flag}: expected a ${allowZero ? 'non-negative' : 'positive'} integer, got '${String(v)}'`);
  }
  return v;
}

interface Resolved {
  lr: number;
  lrBackbone: number;
  layerDecay: number;
  freeze: number;
  optimizer: Optimizer;
  momentum: number;
  weightDecay: number;
  labelSmoothing: number;
  mixup: number;
  ema: number;
  batchNorm: BatchNormMode;
  epochs: number;
  batch: number;
  warmup: number;
  patience: number;
  seed: number;
}

/** Validate and default every number before anything is read or opened. */
export function resolveFinetuneOptions(o: FinetuneOptions): Resolved {
  const lr = checkRate(o.lr ?? 1e-3, '--lr');
  const lrBackbone = checkRate(o.lrBackbone ?? lr / 10, '--lr-backbone');
  const layerDecay = checkRate(o.layerDecay ?? 1, '--layer-decay');
  if (layerDecay > 1) throw new XferError(`--layer-decay: expected a factor in (0, 1], got ${layerDecay}`, { hint: 'e.g. --layer-decay 0.7 (each block down learns 0.7× as fast)' });
  const optimizer = o.optimizer ?? 'adamw';
  if (!OPTIMIZERS.includes(optimizer)) throw new XferError(`--optimizer: expected sgd or adamw, got '${String(optimizer)}'`);
  const momentum = checkRate(o.momentum ?? 0.9, '--momentum', true);
  if (momentum >= 1) throw new XferError(`--momentum: expected a value in [0, 1), got ${momentum}`, { hint: 'e.g. --momentum 0.9' });
  const weightDecay = checkRate(o.weightDecay ?? 1e-4, '--weight-decay', true);
  const labelSmoothing = checkRate(o.labelSmoothing ?? 0, '--label-smoothing', true);
  if (labelSmoothing >= 1) throw new XferError(`--label-smoothing: expected a value in [0, 1), got ${labelSmoothing}`, { hint: 'e.g. --label-smoothing 0.1' });
  const mixup = o.mixup ?? 0;
  if (typeof mixup !== 'number' || !Number.isFinite(mixup) || mixup < 0) throw new XferError(`--mixup: expected α ≥ 0 (0: off), got '${String(o.mixup)}'`, { hint: 'e.g. --mixup 0.2' });
  const ema = o.ema ?? 0;
  if (typeof ema !== 'number' || !(ema >= 0 && ema < 1)) throw new XferError(`--ema: expected a decay in [0, 1) (0: off), got '${String(o.ema)}'`, { hint: 'e.g. --ema 0.999 (an average over about the last 1 000 steps)' });
  const batchNorm = o.batchNorm ?? 'frozen';
  if (!BATCH_NORM_MODES.includes(batchNorm)) throw new XferError(`--batch-norm: expected frozen or batch, got '${String(o.batchNorm)}'`, { hint: 'frozen keeps the source\'s running statistics; batch normalises by batch statistics (PyTorch\'s train mode)' });
  const epochs = positiveInt(o.epochs ?? 10, '--epochs');
  const batch = positiveInt(o.batch ?? 32, '--batch');
  const warmup = checkRate(o.warmup ?? Math.min(1, epochs / 10), '--warmup', true);
  const patience = positiveInt(o.patience ?? 3, '--patience', true);
  const freeze = positiveInt(o.freeze ?? 0, '--freeze', true);
  const seed = positiveInt(o.seed ?? 0, '--seed', true);
  return { lr, lrBackbone, layerDecay, freeze, optimizer, momentum, weightDecay, labelSmoothing, mixup, ema, batchNorm, epochs, batch, warmup, patience, seed };
}

/**
 * Options added after checkpoints were first written, with the value the runs that wrote those
 * checkpoints used: a checkpoint without the key resumes under that value.
 */
const ADDED_OPTIONS: Record<string, unknown> = { mixup: 0, ema: 0, batchNorm: 'frozen' };

/** The run options a `--resume` changes against its checkpoint's (only epochs and patience may change). */
export function resumeConflicts(config: Record<string, unknown>, prev: Record<string, unknown>): string[] {
  return Object.keys(config).filter((k) => {
    if (k === 'epochs' || k === 'patience') return false;
    const before = k in prev ? prev[k] : ADDED_OPTIONS[k];
    return JSON.stringify(config[k]) !== JSON.stringify(before);
  });
}

/** Stratified val carve + head classes, shared by both sources. */
export function splitExamples(all: { train: Example[]; val: Example[]; test: Example[] }, labels: string[], valFrac: number | undefined, seed: number, what: string, maxTrain?: number): Pick<FinetuneData, 'train' | 'val' | 'test' | 'classes' | 'carvedSeed'> {
  let { train, val } = all;
  const test = all.test.filter((e) => e.group === undefined || e.view === 0);
  let carvedSeed: number | null = null;
  // Carving and subsetting pick images: all views of an image go the same way (a carved val image
  // keeps its first view only).
  const reps = train.filter((e) => e.group === undefined || e.view === 0);
  const byImage = (keep: Set<Example>): Example[] => {
    const groups = new Set([...keep].map((e) => e.group));
    return train.filter((e) => (e.group === undefined ? keep.has(e) : groups.has(e.group)));
  };
  if (valFrac !== undefined && !(valFrac >= 0 && valFrac < 1)) throw new XferError(`--val: expected a fraction in [0, 1), got ${valFrac}`, { hint: 'e.g. --val 0.2, or --val 0 to train on every row and keep the last epoch' });
  // --val 0: no carve; every training row trains and the last epoch is kept
  if (val.length === 0 && valFrac !== 0) {
    const s = stratifiedSplit(reps.map((e) => e.label), valFrac ?? 0.2, seed);
    val = s.val.map((i) => reps[i]);
    train = byImage(new Set(s.train.map((i) => reps[i])));
    carvedSeed = seed;
  }
  const images = imageCount(train);
  if (maxTrain !== undefined && maxTrain < images) {
    const r = train.filter((e) => e.group === undefined || e.view === 0);
    const keep = stratifiedSplit(r.map((e) => e.label), 1 - maxTrain / images, seed).train;
    train = byImage(new Set(keep.map((i) => r[i])));
  }
  // val/test rows that are views (a folder whose val split was extracted with views): the first view
  val = val.filter((e) => e.group === undefined || e.view === 0);
  if (train.length === 0) throw new XferError(`${what}: no training rows`, { hint: 'the data has only val/test rows; use data with a train split' });
  const classes = [...new Set(train.map((e) => e.label))].sort((a, b) => a - b);
  if (classes.length < 2) {
    throw new XferError(`${what}: the training rows have a single class ('${labels[classes[0]]}')`, { hint: 'a classifier needs at least two classes with labelled training rows' });
  }
  const headOf = new Map(classes.map((c, i) => [c, i]));
  for (const e of [...train, ...val, ...test]) e.y = headOf.get(e.label) ?? -1;
  return { train, val, test, classes, carvedSeed };
}

/** The backbone a feature folder was extracted with (its built-in id, else its recorded file, or `spec`), sha256-checked. */
async function featureBackbone(f: FeatureFolder, spec: string | undefined, card: string | undefined): Promise<FinetuneData['backbone']> {
  const id = f.meta.model.id;
  const s = spec ?? ((await listBuiltinCards()).some((c) => c.id === id) ? id : f.meta.model.file);
  const b = await resolveBackbone(s, { card });
  if (b.sha256 !== f.meta.model.sha256) {
    throw new XferError(`--features ${f.dir} was extracted with backbone ${id} (sha256 ${f.meta.model.sha256.slice(0, 12)}) but ${s} resolves to ${b.file} (sha256 ${b.sha256.slice(0, 12)})`, {
      hint: 'pass --model <the backbone the features were extracted with>',
    });
  }
  const loaded = await readOnnxFile(b.file);
  return { id: b.id, sha256: b.sha256, model: loaded.model };
}

/** Cached activations at a tap: the feature folder's rows of that layer. */
export async function openFeatureData(o: FinetuneOptions, seed: number): Promise<FinetuneData> {
  const f = await openFeatures(o.features!);
  const layer = pickFromLayer(f, o.from);
  const labelled = f.index.filter((r) => r.label_index !== null && r.label_index !== undefined);
  if (labelled.length === 0) throw new XferError(`--features ${f.dir}: no labelled rows in index.jsonl`, { hint: 'training needs labels (an imagefolder dataset or a list file with labels)' });
  const firstRow = new Map<string, number>();
  const ex = (r: (typeof labelled)[number]): Example => {
    const e: Example = { id: r.row, shard: r.shard, shardRow: r.shard_row, y: -1, label: r.label_index as number };
    if (typeof r.view === 'number') {
      if (!firstRow.has(r.path)) firstRow.set(r.path, r.row);
      e.view = r.view;
      e.group = firstRow.get(r.path);
    }
    return e;
  };
  const parts = {
    train: labelled.filter((r) => r.split !== 'val' && r.split !== 'test').map(ex),
    val: labelled.filter((r) => r.split === 'val').map(ex),
    test: labelled.filter((r) => r.split === 'test').map(ex),
  };
  const split = splitExamples(parts, f.labels, o.val, seed, `--features ${f.dir}`, o.maxTrain);
  const backbone = await featureBackbone(f, o.model, o.card);
  const source = new FeatureRowSource(f, layer);
  return { ...split, source, labels: f.labels, from: layer.name, backbone, headSource: sourceOf(f, [layer], source.rowSize), origin: path.resolve(f.dir) };
}

/** Per-row input shape the plan expects (fromShape without its batch axis). */
function planRowShape(plan: FinetunePlan, rowSize: number): number[] {
  const s = plan.fromShape;
  const size = (a: number[]): number => a.reduce((x, y) => x * y, 1);
  if (s.length > 0 && size(s.slice(1)) === rowSize && !(size(s) === rowSize && s[0] !== 1)) return s.slice(1);
  return s;
}

/** A batch of examples as the session takes it. */
async function loadBatch(src: ExampleSource, items: Example[], aug: { rng: Rng } | null): Promise<{ x: Float32Array; y: Int32Array; n: number }> {
  const x = new Float32Array(items.length * src.rowSize);
  await src.fill(items, x, aug);
  return { x, y: Int32Array.from(items, (e) => e.y), n: items.length };
}

/** Logits of every example, streamed in batches (`logits(x, n)` is the session's or the head's). */
async function scoreAll(src: ExampleSource, items: Example[], batch: number, K: number, logits: (x: Float32Array, n: number) => Promise<Float32Array>): Promise<Float32Array> {
  const out = new Float32Array(items.length * K);
  let next = items.length ? loadBatch(src, items.slice(0, batch), null) : null;
  for (let a = 0; a < items.length; a += batch) {
    const b = await next!;
    next = a + batch < items.length ? loadBatch(src, items.slice(a + batch, a + 2 * batch), null) : null;
    out.set((await logits(b.x, b.n)).subarray(0, b.n * K), a * K);
  }
  return out;
}

/** Accuracy and mean cross-entropy (rows of classes the head has) of logits. */
export function scoreLogits(z: Float32Array, items: readonly Example[], K: number): { acc: number; loss: number } {
  let correct = 0;
  let loss = 0;
  let nl = 0;
  for (let i = 0; i < items.length; i++) {
    const o = i * K;
    let m = 0;
    for (let c = 1; c < K; c++) if (z[o + c] > z[o + m]) m = c;
    if (m === items[i].y) correct++;
    if (items[i].y < 0) continue;
    let s = 0;
    for (let c = 0; c < K; c++) s += Math.exp(z[o + c] - z[o + m]);
    loss += Math.log(s) + z[o + m] - z[o + items[i].y];
    nl++;
  }
  return { acc: items.length ? correct / items.length : 0, loss: nl ? loss / nl : NaN };
}

function softmaxRows(z: Float32Array, K: number): Float32Array {
  const p = new Float32Array(z.length);
  for (let o = 0; o < z.length; o += K) {
    let m = -Infinity;
    for (let c = 0; c < K; c++) m = Math.max(m, z[o + c]);
    let s = 0;
    for (let c = 0; c < K; c++) s += p[o + c] = Math.exp(z[o + c] - m);
    for (let c = 0; c < K; c++) p[o + c] /= s;
  }
  return p;
}

/**
 * The moving average's decay at update t (1-based): TensorFlow's ExponentialMovingAverage with
 * num_updates, min(decay, (1 + t)/(10 + t)), so the first updates are not tied to the initial weights.
 */
export function emaDecay(decay: number, t: number): number {
  return Math.min(decay, (1 + t) / (10 + t));
}

function copyWeights(m: Map<string, Float32Array>): Map<string, Float32Array> {
  return new Map([...m].map(([k, v]) => [k, v.slice()]));
}

function interrupted(file: string, epoch: number, batch: number): XferError {
  return new XferError(`fine-tuning interrupted in epoch ${epoch + 1} after batch ${batch}; checkpoint written to ${file}`, {
    hint: 'continue with the same command plus --resume',
    exitCode: EXIT_INTERRUPTED,
    code: 'EINTERRUPTED',
  });
}

/**
 * Fine-tune from a tap (`features`) or from the input (`data`); see the file comment. --out is locked
 * for the run, and an existing head there is refused unless `resume` (its checkpoint) or `force`.
 */
export async function finetune(opts: FinetuneOptions): Promise<FinetuneResult> {
  return withFolderLock(opts.out, 'xfer train', async () => {
    if (!opts.resume) {
      await refuseExistingOut(opts.out, opts.force === true);
      // --force: the old head's files go now; the checkpoint of this run is written beside the new ones.
      for (const f of await readdir(opts.out)) if (!isLockEntry(f)) await rm(path.join(opts.out, f), { recursive: true, force: true });
    }
    return finetuneLocked(opts);
  });
}

async function finetuneLocked(opts: FinetuneOptions): Promise<FinetuneResult> {
  const t0 = performance.now();
  const R = resolveFinetuneOptions(opts);
  const warnings: string[] = [];
  const warn = (m: string): void => {
    warnings.push(m);
    opts.warn?.(m);
  };
  const fromInput = opts.from === 'input';
  if (fromInput && !opts.data) throw new XferError('--from input: pass the images with --data <dir>', { hint: 'fine-tuning the whole network reads decoded images, not cached features' });
  if (!fromInput && !opts.features) throw new XferError(`--from ${opts.from}: pass --features <dir> (activations extracted at ${opts.from} with --pool none)`, { hint: `e.g. xfer extract --layers ${opts.from} --pool none --data <images> --out <features>` });
  const data = fromInput ? await (await import('./images.js')).openImageData(opts, R.seed) : await openFeatureData(opts, R.seed);
  const { source, train, val, test, classes, labels } = data;
  const K = classes.length;
  const ckptFile = path.join(opts.out, CHECKPOINT_FILE);
  let session: TrainingSession | null = null;
  try {
    const plan = planFinetune(data.backbone.model, { from: data.from, nClasses: K, freeze: R.freeze });
    const rowShape = planRowShape(plan, source.rowSize);
    if (rowShape.reduce((a, b) => a * b, 1) !== source.rowSize) {
      throw new XferError(`--from ${data.from}: the backbone's tensor has shape [${plan.fromShape}] but the data's rows have ${source.rowSize} values ([${source.rowShape}])`, { hint: 'extract the features with the same backbone and card' });
    }
    const config = {
      origin: data.origin,
      from: data.from,
      backbone: data.backbone.sha256,
      classes: classes.map((c) => labels[c]),
      rows: { train: train.length, val: val.length },
      ...R,
    };
    const trainImages = imageCount(train);
    const stepsPerEpoch = Math.ceil(trainImages / R.batch);
    const spec: LrSpec = { lr: R.lr, lrBackbone: R.lrBackbone, layerDecay: R.layerDecay, warmupSteps: Math.round(R.warmup * stepsPerEpoch), totalSteps: R.epochs * stepsPerEpoch };
    const base = blockRates(plan.blocks.length, spec, R.freeze);

    let ck: Checkpoint = { config, epoch: 0, batch: 0, step: 0, sessionStep: 0, history: [], best: null, stale: 0, lossSum: 0, lossCount: 0, state: new Map(), bestWeights: null, ema: null };
    if (opts.resume) {
      const prev = await loadCheckpoint(ckptFile);
      const diff = resumeConflicts(config, prev.config);
      if (diff.length) {
        throw new XferError(`--resume: ${ckptFile} was written by a run with other ${diff.join(', ')}`, { hint: 'resume with the same data and options (only --epochs and --patience may change), or start again without --resume' });
      }
      ck = { ...prev, config };
    }
    const block = await nchwcBlockFor(opts.device);
    const training = buildTrainingModel(data.backbone.model, plan, {
      optimizer: R.optimizer,
      momentum: R.momentum,
      weightDecay: R.weightDecay,
      labelSmoothing: R.labelSmoothing,
      batchNorm: R.batchNorm,
      ...(block ? { nchwc: { block, batch: R.batch } } : {}),
    });
    session = await TrainingSession.start(data.backbone.model, training, plan, R.seed, { threads: opts.threads, device: opts.device ?? 'auto' });
    if (opts.resume) await session.setState({ step: ck.sessionStep, tensors: ck.state });
    // the average starts at the initial (pretrained) weights; a resumed run continues its own
    if (R.ema > 0 && !ck.ema) ck.ema = await session.weights();
    const current = async (): Promise<Map<string, Float32Array>> => (ck.ema ? copyWeights(ck.ema) : session!.weights());
    const save = async (epoch: number, batch: number): Promise<void> => {
      const st = await session!.state();
      ck = { ...ck, epoch, batch, sessionStep: st.step, state: st.tensors };
      await saveCheckpoint(ckptFile, ck, { write: opts.checkpointWrite });
      opts.progress?.({ event: 'checkpoint', file: ckptFile, epoch, batch });
    };
    const { mkdir } = await import('node:fs/promises');
    await mkdir(opts.out, { recursive: true });

    let stopReason: string | null = null;
    let diverged: string | null = null;
    const isStale = (): boolean => R.patience > 0 && ck.stale >= R.patience && val.length > 0;
    if (ck.epoch >= R.epochs || isStale()) stopReason = ck.epoch >= R.epochs ? 'all epochs done' : `no better validation accuracy for ${ck.stale} epochs`;
    for (let epoch = ck.epoch; epoch < R.epochs && !stopReason; epoch++) {
      const order = epochOrder(oneViewPerImage(train, R.seed, epoch), R.seed, epoch);
      const rng = new Rng((R.seed * 7 + epoch * 1_000_003 + 17) >>> 0);
      const te = performance.now();
      let seen = 0;
      const startBatch = epoch === ck.epoch ? ck.batch : 0;
      if (startBatch === 0) {
        ck.lossSum = 0;
        ck.lossCount = 0;
      }
      const batchAt = (b: number): Example[] => order.slice(b * R.batch, (b + 1) * R.batch);
      // a resumed epoch draws the augmentations of the batches it skips, so it sees the same views
      if (fromInput) for (let i = 0; i < Math.min(order.length, startBatch * R.batch); i++) rng.int(2 ** 31);
      let next: Promise<{ x: Float32Array; y: Int32Array; n: number }> | null = startBatch < stepsPerEpoch ? loadBatch(source, batchAt(startBatch), fromInput ? { rng } : null) : null;
      for (let b = startBatch; b < stepsPerEpoch; b++) {
        const cur = await next!;
        next = b + 1 < stepsPerEpoch ? loadBatch(source, batchAt(b + 1), fromInput ? { rng } : null) : null;
        next?.catch(() => {}); // awaited next round; an abort may leave it
        const lr = ratesAt(ck.step, spec, base);
        // λ from (seed, step) alone, so a resumed run mixes as the uninterrupted one would
        const lam = R.mixup > 0 ? betaSymmetric(R.mixup, new Rng((R.seed * 7919 + ck.step * 104_729 + 3) >>> 0)) : 1;
        const mix = R.mixup > 0 ? { lam, partner: mixBatch(cur.x, cur.y, cur.n, source.rowSize, lam) } : undefined;
        const { loss } = await session.step(cur.x, cur.y, cur.n, lr, mix);
        if (!Number.isFinite(loss)) {
          diverged = `loss is ${loss} at step ${ck.step + 1} (epoch ${epoch + 1}, batch ${b + 1})`;
          break;
        }
        ck.step++;
        if (ck.ema) session.accumulateAverage(ck.ema, emaDecay(R.ema, ck.step));
        ck.lossSum += loss * cur.n;
        ck.lossCount += cur.n;
        seen += cur.n;
        const ips = seen / ((performance.now() - te) / 1000);
        opts.progress?.({ event: 'step', epoch: epoch + 1, epochs: R.epochs, batch: b + 1, batches: stepsPerEpoch, step: ck.step, loss: ck.lossSum / ck.lossCount, lr: lr.head, imagesPerSecond: ips });
        if (opts.signal?.aborted && b + 1 < stepsPerEpoch) {
          await next?.catch(() => null);
          await save(epoch, b + 1);
          throw interrupted(ckptFile, epoch, b + 1);
        }
      }
      if (diverged) break;
      const seconds = (performance.now() - te) / 1000;
      const rec: EpochRecord = { epoch: epoch + 1, loss: ck.lossSum / Math.max(1, ck.lossCount), seconds, imagesPerSecond: seen / seconds };
      let isBest = false;
      if (val.length > 0) {
        const z = await scoreAll(source, val, R.batch, K, (x, n) => session!.logits(x, n, ck.ema ?? undefined));
        const s = scoreLogits(z, val, K);
        rec.valAcc = s.acc;
        rec.valLoss = s.loss;
        isBest = !ck.best || s.acc > ck.best.valAcc || (s.acc === ck.best.valAcc && s.loss < ck.best.valLoss);
      } else isBest = true;
      if (isBest) {
        ck.best = { epoch: epoch + 1, valAcc: rec.valAcc ?? NaN, valLoss: rec.valLoss ?? NaN };
        ck.bestWeights = await current();
        ck.stale = 0;
      } else ck.stale++;
      ck.history = [...ck.history, rec];
      opts.progress?.({ event: 'epoch', epoch: epoch + 1, epochs: R.epochs, loss: rec.loss, valLoss: rec.valLoss, valAcc: rec.valAcc, best: isBest, seconds, imagesPerSecond: rec.imagesPerSecond });
      await save(epoch + 1, 0);
      if (isStale()) stopReason = `early stop: no better validation accuracy for ${ck.stale} epochs`;
      else if (opts.signal?.aborted && epoch + 1 < R.epochs) throw interrupted(ckptFile, epoch + 1, 0);
    }
    if (diverged) {
      opts.progress?.({ event: 'stop', reason: diverged });
      if (!ck.best) throw new XferError(`fine-tuning diverged: ${diverged}; no epoch finished, nothing saved`, { hint: 'lower --lr / --lr-backbone or add --warmup', exitCode: 1 });
      warn(`training stopped: ${diverged}; keeping epoch ${ck.best.epoch}`);
    } else if (stopReason) opts.progress?.({ event: 'stop', reason: stopReason });

    // --- the best epoch's weights as a head
    const weights = ck.bestWeights ?? (await current());
    await session.close();
    session = null;
    const inference = buildInferenceModel(data.backbone.model, plan, weights);
    const params = {
      from: data.from,
      optimizer: R.optimizer,
      lr: R.lr,
      lrBackbone: R.lrBackbone,
      layerDecay: R.layerDecay,
      freeze: R.freeze,
      momentum: R.momentum,
      weightDecay: R.weightDecay,
      labelSmoothing: R.labelSmoothing,
      mixup: R.mixup,
      ema: R.ema,
      batchNorm: R.batchNorm,
      epochs: R.epochs,
      batch: R.batch,
      warmup: R.warmup,
      patience: R.patience,
      seed: R.seed,
    };
    const info = {
      blocks: plan.blocks,
      trainable: plan.params.length,
      bestEpoch: ck.best?.epoch ?? null,
      epochsRun: ck.history.length,
      steps: ck.step,
      stopped: diverged ?? stopReason ?? 'all epochs done',
    };
    const head = new FinetuneHead({ params, nClasses: K, rowShape, model: serializeModel(inference), info });
    const metrics: Record<string, Metrics> = {};
    const evalPart = async (name: string, items: Example[]): Promise<void> => {
      if (!items.length) return;
      const z = await scoreAll(source, items, R.batch, K, (x, n) => head.decisionFunction({ data: x, rows: n, cols: source.rowSize }));
      metrics[name] = computeMetrics(Int32Array.from(items, (e) => e.label), softmaxRows(z, K), K, classes, labels, true);
    };
    await evalPart('val', val);
    await evalPart('test', test);
    await saveHead(opts.out, { head, transforms: [], classLabels: classes.map((c) => labels[c]), source: data.headSource });
    const seconds = (performance.now() - t0) / 1000;
    const report: Report = {
      command: 'train',
      head: path.resolve(opts.out),
      kind: 'finetune',
      params,
      features: data.origin,
      layers: [data.from],
      model: { id: data.backbone.id, sha256: data.backbone.sha256 },
      transforms: [],
      rows: { train: trainImages, ...(trainImages !== train.length ? { train_views: train.length } : {}), val: val.length, test: test.length, fit: trainImages, ...(data.carvedSeed !== null ? { val_carved_seed: data.carvedSeed } : {}) },
      selection: {
        method: val.length ? `early stopping on val: best epoch ${ck.best?.epoch ?? '?'} by validation accuracy (patience ${R.patience || 'off'})` : 'no validation rows: the last epoch',
        refit: 'train',
        refitDefault: true,
        fitRows: trainImages,
        fitOn: `train (${trainImages} images${trainImages !== train.length ? `, ${train.length} views` : ''})`,
        ...(val.length ? { holdout: `val (${val.length} rows) chose the epoch; ${test.length ? `test (${test.length} rows) is the hold-out` : 'no test split'}` } : {}),
      },
      metrics,
      fit: { ...info, history: ck.history, seconds: ck.history.reduce((a, h) => a + h.seconds, 0) },
      seconds,
      warnings,
      plots: [],
    };
    await writeReport(opts.out, report, ck.history.map((h) => ({ epoch: h.epoch, loss: h.loss, valLoss: h.valLoss, valAcc: h.valAcc })));
    // the head is the finished work now; a stale checkpoint would only confuse a later --resume
    if (!diverged) await rm(ckptFile, { force: true });
    if (diverged) {
      throw new XferError(`fine-tuning stopped: ${diverged}; the head from epoch ${ck.best!.epoch} (val acc ${((ck.best!.valAcc || 0) * 100).toFixed(2)}%) was saved to ${opts.out}`, {
        hint: 'lower --lr / --lr-backbone or add --warmup',
        exitCode: 1,
      });
    }
    return { dir: opts.out, report, head };
  } finally {
    await session?.close().catch(() => {});
    await source.close();
  }
}
