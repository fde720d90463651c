/**
 * The extraction run: resolve the model and its tap model, list the dataset, then stream it through
 * the runtime (runtime/stream.ts: decode in input order → batches → backbone worker sessions → in
 * order back here) into the shard writer, one shard per group of the stream. Memory does not grow
 * with the dataset: every queue on the way is bounded.
 *
 * Determinism: shard g holds inputs [g·R, (g+1)·R) of the sorted list; batches never cross a shard,
 * so a resumed or sharded run feeds the backbone exactly the same batches as a single run and
 * writes byte-identical .npy files.
 */
import { createHash } from 'node:crypto';
import path from 'node:path';
import pLimit from 'p-limit';
import { XferError } from '../errors.js';
import { VERSION } from '../version.js';
import { discoverDataset, entrySource, type Dataset, type DatasetEntry } from '../image/discover.js';
import { describePlan, resolvePreprocess, type PreprocessOverrides, type PreprocessPlan } from '../image/plan.js';
import type { DeviceOptions, Pool } from '../model/runner.js';
import type { CardFlags } from '../model/card-flags.js';
import { assignLayerDirs, FeatureWriter, type FeatureDtype, type FeatureMetaInit, type ShardWriter, type WriterIO } from '../features/writer.js';
import { WORKER_DEPTH, openInlineBackbone, openWorkerPool, prepareBackbone } from '../runtime/pool.js';
import { runStream } from '../runtime/stream.js';
import { DEFAULT_BATCH_CPU, defaultBatch, defaultDecodeConcurrency, inferencePlan } from '../runtime/plan.js';
import { DEFAULT_ROWS_PER_SHARD } from '../features/format.js';
import { expandOutPattern, resolveShardSpec, shardRange, type ShardSpec } from './shard.js';
import { withFolderLock, type FolderLock } from '../util/lock.js';
import { checkBatchMemory, formedBatch } from './batch-bound.js';
import { applyView, expandViews, resolveViews, type ViewEntry } from './views.js';

export { DEFAULT_BATCH_CPU, DEFAULT_BATCH_CUDA, defaultBatch, inferencePlan } from '../runtime/plan.js';
export { DEFAULT_ROWS_PER_SHARD } from '../features/format.js';

export interface ExtractOptions {
  /** Built-in id or path to .onnx/.tflite. */
  model: string;
  /** Tensor names to tap; default: the card's taps.default. */
  layers?: string[];
  /** Pooling; default: the card's taps.pool for the default tap, else avg. */
  pool?: Pool;
  /** Dataset folder or list file. */
  data: string;
  /** Output feature folder; `{shard}` is replaced by the shard index. */
  out: string;
  card?: string;
  /** Card fields from command-line flags (override the card, or make one for a model without). */
  cardFlags?: CardFlags;
  /** Images per backbone run; default `defaultBatch`: 32 on CUDA, on CPU 2 (more with multi-threaded sessions). */
  batch?: number;
  dtype?: FeatureDtype;
  /** K augmented views of every training image (views.ts); `augment`: hflip,crop,color (default hflip,crop). */
  views?: number;
  augment?: string;
  device?: DeviceOptions;
  resume?: boolean;
  overwrite?: boolean;
  /** "i/n"; default: from the scheduler environment (see shard.ts), else the whole input. */
  shard?: string;
  /** Rows per shard file (default 1024). Must match across --resume, --shard parts and merge. */
  rowsPerShard?: number;
  /** Stop (after committing what is done) at the first unusable input. */
  strict?: boolean;
  /** Preprocessing overrides (background colour, fast decode …). */
  preprocess?: PreprocessOverrides;
  /** Images decoded concurrently (default `defaultDecodeConcurrency`: cores + 1). */
  decodeConcurrency?: number;
  /** Inference sessions (worker threads) batches are spread over; default see `inferencePlan`. */
  workers?: number;
  /** Where the backbone runs: 'worker' (default) or 'inline' (main thread; for measurements). */
  backboneThread?: 'worker' | 'inline';
  /** Environment for scheduler shard detection (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** Called with progress events. */
  onEvent?: (e: ExtractEvent) => void;
  /** Set `signal.aborted` (e.g. on SIGINT) to stop after the batch in flight. */
  signal?: AbortSignal;
  /** Test hook for the writer's file writes. */
  io?: WriterIO;
}

export type ExtractEvent =
  | { type: 'notice'; message: string }
  | { type: 'start'; out: string; total: number; done: number; skippedBefore: number; shards: number; resumed: boolean; provider: string; batch: number; shard: ShardSpec | null }
  | { type: 'progress'; done: number; total: number; images: number; errors: number; elapsed: number; rate: number }
  | { type: 'skip'; path: string; reason: string }
  | { type: 'shard'; shard: number; rows: number; errors: number };

export interface ExtractSummary {
  out: string;
  model: string;
  provider: string;
  /** Inputs this run covers (after the shard split) and how many of them were already done before (resume). */
  total: number;
  alreadyDone: number;
  /** Rows written in total / in this run. */
  images: number;
  imagesThisRun: number;
  errors: number;
  errorsThisRun: number;
  shards: number;
  complete: boolean;
  interrupted: boolean;
  /** Stopped by --strict at an unusable input. */
  strictStop: boolean;
  /** Whole call, including model loading and dataset listing. */
  seconds: number;
  /** From the first decode to the last commit (steady-state pipeline). */
  pipelineSeconds: number;
  /** imagesThisRun / seconds. */
  imagesPerSecond: number;
}

/** sha256 of the sorted input list (what a shard split and a resume must agree on). */
export function inputListHash(entries: readonly DatasetEntry[]): string {
  const h = createHash('sha256');
  for (const e of entries as readonly ViewEntry[]) h.update(JSON.stringify(e.view === undefined ? [e.path, e.label, e.split] : [e.path, e.label, e.split, e.view]) + '\n');
  return h.digest('hex');
}

/**
 * Run one extraction. Throws XferError on bad input or a failed run; returns a summary otherwise.
 * The output folder is locked for the whole run (util/lock.ts): a second writer is refused.
 */
export async function extractFeatures(opts: ExtractOptions): Promise<ExtractSummary> {
  const out = path.resolve(expandOutPattern(opts.out, resolveShardSpec(opts.shard, opts.env ?? process.env)));
  return withFolderLock(out, 'xfer extract', (lock) => runExtraction(opts, lock));
}

async function runExtraction(opts: ExtractOptions, lock: FolderLock): Promise<ExtractSummary> {
  const t0 = performance.now();
  const emit = opts.onEvent ?? (() => {});
  const notice = (message: string) => emit({ type: 'notice', message });
  if (opts.batch !== undefined && !(Number.isInteger(opts.batch) && opts.batch >= 1)) throw new XferError(`--batch: expected a positive integer, got ${opts.batch}`);
  const R = opts.rowsPerShard ?? DEFAULT_ROWS_PER_SHARD;
  if (!(Number.isInteger(R) && R >= 1)) throw new XferError(`--shard-rows: expected a positive integer, got ${R}`);
  const dtype = opts.dtype ?? 'float32';
  const views = resolveViews(opts.views, opts.augment);
  if (dtype !== 'float32' && dtype !== 'float16') throw new XferError(`--dtype: expected float32 or float16, got ${String(dtype)}`);
  const spec = resolveShardSpec(opts.shard, opts.env ?? process.env);
  const out = path.resolve(expandOutPattern(opts.out, spec));

  // The inference threads start first (they load onnxruntime) while this thread resolves the model
  // (a built-in or .tflite converts here, once) and gets the tap model (from the cache, or built
  // once for all of them): that is the path to the first batch. Then, while the sessions open, the
  // dataset is listed and the decoder (sharp: loading it blocks this thread) loads; then the first
  // images are decoded.
  const { workers, threads } = inferencePlan(opts);
  const device: DeviceOptions = { ...opts.device, threads };
  const registry = import('../model/registry.js');
  const resolvedP = registry.then(({ resolveBackbone }) => resolveBackbone(opts.model, { card: opts.card, cardFlags: opts.cardFlags, onNotice: notice }));
  const prepared = resolvedP.then((resolved) =>
    prepareBackbone({ model: opts.model, resolved, layers: opts.layers ?? null, pool: opts.pool ?? null }, notice),
  );
  prepared.catch(() => {});
  const backboneP = opts.backboneThread === 'inline' ? openInlineBackbone(prepared, device, notice) : openWorkerPool(prepared, device, notice, workers);
  backboneP.catch(() => {});
  const decoder = prepared.then(
    () => import('../image/decode.js'),
    () => import('../image/decode.js'),
  );
  decoder.catch(() => {});
  let plan: PreprocessPlan;
  let dataset: Dataset;
  let dec: typeof import('../image/decode.js');
  try {
    plan = resolvePreprocess((await registry).requireCard(await resolvedP, 'feature extraction'), opts.preprocess ?? {});
    // The tap model first (the sessions wait for it), then the listing, while they open.
    await prepared.catch(() => {});
    dataset = await discoverDataset(opts.data);
    if (views) dataset = { ...dataset, entries: expandViews(dataset.entries, views) };
    dec = await decoder;
  } catch (e) {
    await backboneP.then((b) => b.close()).catch(() => {});
    throw e;
  }
  for (const w of dataset.warnings) notice(`warning: ${w}`);
  const range = shardRange(dataset.entries.length, R, spec);
  const conc = Math.max(1, opts.decodeConcurrency ?? defaultDecodeConcurrency());
  const limit = pLimit(conc);
  const { loadPixelsOrSkip } = dec;
  const decode = (e: ViewEntry) =>
    limit(async () => {
      const r = await loadPixelsOrSkip(entrySource(e), plan, { displayPath: e.path });
      if (r.ok) applyView(e, r.data, plan.size, views);
      return r;
    });
  // While the inference sessions load, decode the first images of a fresh run (a resumed run may
  // start later: then these are dropped).
  const prefetchEnd = Math.min(range.firstItem + Math.max(conc * 2, Math.min(opts.batch ?? DEFAULT_BATCH_CPU, R) * 2), range.firstItem + range.items);
  const prefetched = opts.resume ? [] : dataset.entries.slice(range.firstItem, prefetchEnd).map(decode);
  for (const p of prefetched) p.catch(() => {});
  const backbone = await backboneP;
  let writer: FeatureWriter | null = null;
  let tPipe: number | null = null;
  try {
    const info = backbone.info;
    let batch = opts.batch ?? defaultBatch(info.provider, threads);
    if (info.fixedBatch !== null && info.fixedBatch !== batch) {
      notice(`model has a fixed batch of ${info.fixedBatch}; using --batch ${info.fixedBatch}`);
      batch = info.fixedBatch;
    }
    const padded = info.provider === 'cuda';
    checkBatchMemory(formedBatch(batch, R, range.items, padded), plan.size[0] * plan.size[1] * 3, workers * WORKER_DEPTH + 4, workers);
    const dirs = assignLayerDirs(info.outputs.map((o) => o.name));
    const { dir: _dir, ...card } = info.card;
    const init: FeatureMetaInit = {
      tool_version: VERSION,
      model: { id: info.id, sha256: info.sha256, file: info.file, external_sha256: info.externalSha256 },
      card,
      layers: info.outputs.map((o, i) => ({ name: o.name, dir: dirs[i], pool: o.pool, shape: o.shape, dtype })),
      dtype,
      preprocessing: describePlan(plan),
      ...(views ? { views: { k: views.k, augment: views.augment, seed: views.seed } } : {}),
      counts: { rows_per_shard: R },
      data: { root: dataset.root, kind: dataset.kind, items: range.items, sha256: inputListHash(dataset.entries) },
      shard: spec
        ? { index: spec.index, count: spec.count, first_shard: range.firstShard, shards: range.shards, total_shards: range.totalShards, first_item: range.firstItem, items: range.items }
        : null,
      batch,
    };
    // Listing errors belong to the whole run: recorded once, by the unsharded run or part 0.
    const discoveryErrors = !spec || spec.index === 0 ? dataset.errors : [];
    writer = await FeatureWriter.open(out, init, dataset.labels, { resume: opts.resume, overwrite: opts.overwrite, io: opts.io, discoveryErrors, guard: () => lock.assertHeld() });
    const w = writer;
    if (w.resumed && w.metadata.batch !== batch) {
      notice(
        info.provider === 'cuda'
          ? `warning: ${out} was started with --batch ${w.metadata.batch}, this run uses ${batch}: on CUDA pass --batch ${w.metadata.batch} to resume with the same batch shapes`
          : `resuming ${out} with batch ${batch} (started with ${w.metadata.batch}; on CPU features are the same at any batch)`,
      );
    }
    const startShard = w.counts.shards;
    const alreadyDone = Math.min(range.items, startShard * R);
    const prior = { images: w.counts.images, errors: w.counts.errors };
    emit({ type: 'start', out, total: range.items, done: alreadyDone, skippedBefore: prior.errors, shards: range.shards, resumed: w.resumed !== null, provider: info.provider, batch, shard: spec });
    if (opts.strict && prior.errors > 0) {
      throw new XferError(`--strict: ${prior.errors} input(s) were already skipped in ${out}/errors.jsonl`, { hint: 'fix or remove them and re-run with --overwrite, or resume without --strict', exitCode: 1 });
    }
    if (w.complete) {
      notice(`${out}: already complete (${w.counts.images} images), nothing to do`);
      return summary(false, false);
    }
    if (range.items === 0 && spec) notice(`shard ${spec.index}/${spec.count} has no inputs (${range.totalShards} shard(s) of ${R} rows for ${spec.count} parts; use a smaller --shard-rows)`);

    const [H, W] = plan.size;
    let strictShard: number | null = null;
    // --strict: stop once the shard holding the first unusable input is committed.
    const strictDone = () => strictShard !== null && w.counts.shards > strictShard - range.firstShard;
    const firstItem = range.firstItem + alreadyDone;
    const endItem = range.firstItem + range.items;
    const shardOf = (i: number) => Math.floor(i / R);
    let done = alreadyDone;
    let sw: ShardWriter | null = null;
    tPipe = performance.now();
    // Test hook: hold the run once this many shards are committed, until it is interrupted, so tests
    // can kill or interrupt a run at a known point without racing it.
    const holdAfter = Number(process.env.XFER_TEST_HOLD_AFTER_SHARDS ?? 0);
    let committedThisRun = 0;
    const { aborted } = await runStream({
      backbone,
      from: firstItem,
      to: endItem,
      decode: (i) => decode(dataset.entries[i]),
      started: firstItem === range.firstItem ? prefetched : [],
      // Buffers for the batch actually formed (a shard or the inputs may be smaller than --batch).
      batch: formedBatch(batch, R, range.items - alreadyDone, info.provider === 'cuda'),
      imageBytes: H * W * 3,
      pad: info.provider === 'cuda',
      window: Math.max(conc * 2, batch * 2),
      maxInflight: workers * WORKER_DEPTH + 1,
      groupEnd: (i) => Math.min((shardOf(i) + 1) * R, dataset.entries.length),
      signal: opts.signal,
      halt: strictDone,
      onSkip: (i, reason) => {
        emit({ type: 'skip', path: dataset.entries[i].path, reason });
        if (opts.strict && strictShard === null) strictShard = shardOf(i);
      },
      onBatch: async (b, outputs) => {
        const g = shardOf(b.slots[0].item);
        const k = g - range.firstShard;
        if (!sw) sw = await w.beginShard(k, Math.min(R, dataset.entries.length - g * R));
        const rows = b.slots.filter((x) => x.row !== null).map((x) => dataset.entries[x.item]);
        if (outputs && rows.length > 0) await sw.append(outputs, rows.length, rows.map((e: ViewEntry) => ({ path: e.path, label: e.label, split: e.split, ...(e.view !== undefined ? { view: e.view } : {}) })));
        for (const x of b.slots) if (x.row === null) sw.error(dataset.entries[x.item].path, x.reason);
        done += b.slots.length;
        if (b.lastOfGroup) {
          const shardRows = sw.rowCount;
          const errs = sw.errorCount;
          await sw.commit();
          sw = null;
          emit({ type: 'shard', shard: k, rows: shardRows, errors: errs });
          if (++committedThisRun === holdAfter) await untilAborted(opts.signal);
        }
      },
      onProgress: (p) => {
        const open = sw as ShardWriter | null;
        emit({ type: 'progress', done, total: range.items, images: w.counts.images + (open ? open.rowCount : 0), errors: w.counts.errors + (open ? open.errorCount : 0), elapsed: p.elapsed, rate: p.rate });
      },
    }).finally(async () => {
      // Leave nothing half-written: an unfinished shard is dropped (resume redoes it).
      if (sw) await (sw as ShardWriter).abort();
    });
    const stop = aborted;
    // Interrupted only if something is left to do (a Ctrl-C during the last batch changes nothing).
    const interrupted = stop && w.counts.shards < range.shards;
    const strictStop = strictShard !== null;
    if (!interrupted && w.counts.shards === range.shards) await w.finish();
    return summary(interrupted, strictStop);

    function summary(interruptedRun: boolean, strictRun: boolean): ExtractSummary {
      const seconds = (performance.now() - t0) / 1000;
      const thisRun = w.counts.images - prior.images;
      return {
        out,
        model: info.id,
        provider: info.provider,
        total: range.items,
        alreadyDone,
        images: w.counts.images,
        imagesThisRun: thisRun,
        errors: w.counts.errors,
        errorsThisRun: w.counts.errors - prior.errors,
        shards: w.counts.shards,
        complete: w.complete,
        interrupted: interruptedRun,
        strictStop: strictRun,
        seconds,
        pipelineSeconds: tPipe === null ? 0 : (performance.now() - tPipe) / 1000,
        imagesPerSecond: seconds > 0 ? thisRun / seconds : 0,
      };
    }
  } finally {
    await writer?.close().catch(() => {});
    await backbone.close().catch(() => {});
  }
}

/** Resolves when `signal` aborts (never without one). */
function untilAborted(signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    // A pending promise alone does not keep Node running (idle workers are unref'd): hold a timer,
    // or the process ends with "unsettled top-level await" (exit 13) before the interrupt comes.
    const keep = setInterval(() => {}, 2 ** 30);
    signal?.addEventListener('abort', () => { clearInterval(keep); resolve(); }, { once: true });
  });
}
