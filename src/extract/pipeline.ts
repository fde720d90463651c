/**
 * The extraction run: discover → decode/preprocess (sharp, bounded concurrency, in input order) →
 * batches (on CUDA the last batch of each shard is padded to the batch size) → backbone (worker
 * threads) → shard writer. Queues are bounded (a window of decodes ahead, two assembled batches, at
 * most `workers × WORKER_DEPTH + 1` batches at the backbone), so memory does not grow with the dataset.
 *
 * Determinism: shard g holds inputs [g·R, (g+1)·R) of the sorted list; batches never cross a shard,
 * so a resumed or sharded run feeds the backbone exactly the same batches as a single run and
 * writes byte-identical .npy files.
 */
import { createHash } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import pLimit from 'p-limit';
import { XferError } from '../errors.js';
import { VERSION } from '../version.js';
import { discoverDataset, entrySource, type Dataset, type DatasetEntry } from '../image/discover.js';
import { describePlan, resolvePreprocess, type PreprocessOverrides, type PreprocessPlan } from '../image/plan.js';
import type { DeviceOptions, Pool } from '../model/runner.js';
import type { CardFlags } from '../model/card-flags.js';
import { assignLayerDirs, FeatureWriter, type FeatureDtype, type FeatureMetaInit, type ShardWriter, type WriterIO } from '../features/writer.js';
import { WORKER_DEPTH, openInlineBackbone, openWorkerPool, prepareBackbone } from './backbone.js';
import { BufferPool } from '../util/buffer-pool.js';
import { Channel } from '../util/channel.js';
import { DEFAULT_BATCH_CPU, DEFAULT_ROWS_PER_SHARD, defaultBatch, inferencePlan } from './defaults.js';
import { ReadAhead } from '../util/read-ahead.js';
import { AffinityShell } from '../util/affinity.js';
import { DecodeConfinement, decodeCpuSplit, type CpuSplitState, type DecodeCpusMode } from './decode-cpus.js';
import { expandOutPattern, resolveShardSpec, shardRange, type ShardSpec } from './shard.js';
import { withFolderLock, type FolderLock } from '../util/lock.js';
import { checkBatchMemory, formedBatch } from './batch-bound.js';
import { applyView, expandViews, resolveViews, type ViewEntry } from './views.js';

export { DEFAULT_BATCH_CPU, DEFAULT_BATCH_CUDA, DEFAULT_ROWS_PER_SHARD, defaultBatch, inferencePlan } from './defaults.js';

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
  /** Images per backbone run; default `defaultBatch(provider)`: 32 on CUDA, 2 on CPU. */
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
  /** Images decoded concurrently (default: number of CPUs + 1, so a decode is always queued while others finish). */
  decodeConcurrency?: number;
  /** Inference sessions (worker threads) batches are spread over; default see `inferencePlan`. */
  workers?: number;
  /**
   * Linux, CPU inference: keep decoding (every thread but the inference sessions) on these CPUs while
   * the sessions use all of them (decode-cpus.ts). 'auto' does so on 2-CPU machines and gives it up
   * when decoding cannot keep up; default 'off' here (it sets the affinity of every thread of the
   * process for the run), 'auto' in the CLI.
   */
  decodeCpus?: DecodeCpusMode;
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
  | { type: 'shard'; shard: number; rows: number; errors: number }
  /** Decoding confined to `decode` (inference on `all`), or given up (`released` says why). */
  | ({ type: 'cpus' } & CpuSplitState);

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
  /** Where decoding was confined (see ExtractOptions.decodeCpus); null when it was not. */
  decodeCpus: CpuSplitState | null;
}

/** sha256 of the sorted input list (what a shard split and a resume must agree on). */
export function inputListHash(entries: readonly DatasetEntry[]): string {
  const h = createHash('sha256');
  for (const e of entries as readonly ViewEntry[]) h.update(JSON.stringify(e.view === undefined ? [e.path, e.label, e.split] : [e.path, e.label, e.split, e.view]) + '\n');
  return h.digest('hex');
}

interface Batch {
  shard: number;
  pixels: Uint8Array;
  rows: DatasetEntry[];
  errors: { path: string; reason: string }[];
  lastOfShard: boolean;
  /** Inputs this batch accounts for (rows + errors). */
  inputs: number;
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
  // dataset is listed and the decoder (sharp/libvips: ~0.15 s of loading that blocks this thread)
  // loads; then the first images are decoded.
  const { workers, threads, gpu } = inferencePlan(opts);
  const device: DeviceOptions = { ...opts.device, threads };
  // Where decoding will be confined once the sessions are open (an impossible explicit request fails here).
  const cpuSplit = opts.backboneThread === 'inline' ? null : decodeCpuSplit(opts.decodeCpus, gpu);
  // Its shell starts now, while this process is small (see AffinityShell).
  const affinity = cpuSplit ? new AffinityShell() : null;
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
    affinity?.close();
    await backboneP.then((b) => b.close()).catch(() => {});
    throw e;
  }
  for (const w of dataset.warnings) notice(`warning: ${w}`);
  const range = shardRange(dataset.entries.length, R, spec);
  const conc = Math.max(1, opts.decodeConcurrency ?? os.availableParallelism() + 1);
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
  const backbone = await backboneP.catch((e: unknown) => {
    affinity?.close();
    throw e;
  });
  let writer: FeatureWriter | null = null;
  let confinement: DecodeConfinement | null = null;
  let tPipe: number | null = null;
  try {
    const info = backbone.info;
    let batch = opts.batch ?? defaultBatch(info.provider);
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
    const imgBytes = H * W * 3;
    // Batch buffers go round: producer → backbone (a worker, and back) → here → producer.
    const formed = formedBatch(batch, R, range.items - alreadyDone, padded);
    const buffers = new BufferPool(formed * imgBytes);

    let stop = false;
    let strictShard: number | null = null;
    // Batches ready for the backbone (see the consumer below); an abort also wakes a consumer
    // waiting for the next batch, so Ctrl-C never waits for a slow decode.
    const ready = new Channel<Batch>(2);
    const onAbort = () => {
      stop = true;
      ready.close();
    };
    opts.signal?.addEventListener('abort', onAbort);
    if (opts.signal?.aborted) stop = true;

    // Producer: decodes in input order with a bounded look-ahead window, yields batches.
    const firstItem = range.firstItem + alreadyDone;
    const endItem = range.firstItem + range.items;
    const window = Math.max(conc * 2, formed * 2);
    async function* batches(): AsyncGenerator<Batch> {
      const ahead = new ReadAhead((i) => decode(dataset.entries[i]), firstItem, endItem, window, firstItem === range.firstItem ? prefetched : []);
      let pos = firstItem;
      while (pos < endItem) {
        const g = Math.floor(pos / R);
        const shardEnd = Math.min((g + 1) * R, dataset.entries.length);
        let cur: Batch = { shard: g, pixels: buffers.take(), rows: [], errors: [], lastOfShard: false, inputs: 0 };
        while (pos < shardEnd) {
          if (producerStopped) return;
          const r = await ahead.take();
          const entry = dataset.entries[pos++];
          cur.inputs++;
          if (r.ok) {
            cur.pixels.set(r.data, cur.rows.length * imgBytes);
            cur.rows.push(entry);
          } else {
            cur.errors.push({ path: entry.path, reason: r.reason });
            emit({ type: 'skip', path: entry.path, reason: r.reason });
            if (opts.strict && strictShard === null) strictShard = g;
          }
          if (cur.rows.length === batch && pos < shardEnd) {
            yield cur;
            cur = { shard: g, pixels: buffers.take(), rows: [], errors: [], lastOfShard: false, inputs: 0 };
          }
        }
        cur.lastOfShard = true;
        // A reused buffer holds an older batch beyond these rows: zero it, so that a padded batch
        // (CUDA) is the same whatever ran before it (as in a resumed or sharded run).
        cur.pixels.fill(0, cur.rows.length * imgBytes);
        yield cur;
      }
    }

    let done = alreadyDone;
    let sw: ShardWriter | null = null;
    let lastEmit = 0;
    // Confined now, not from the start: the start (loading, sessions opening) uses every CPU.
    confinement = cpuSplit ? DecodeConfinement.apply(cpuSplit, affinity!, backbone.inferenceThreads) : null;
    if (confinement) emit({ type: 'cpus', ...confinement.state() });
    const tRun = performance.now();
    tPipe = tRun;
    confinement?.watch();
    let runImages = 0;
    // Test hook: slow every batch down so tests can interrupt a run at a chosen point.
    const testDelay = Number(process.env.XFER_TEST_BATCH_DELAY_MS ?? 0);
    const consume = async (b: Batch, outputs: Float32Array[] | null) => {
      if (testDelay > 0) await new Promise((r) => setTimeout(r, testDelay));
      const k = b.shard - range.firstShard;
      if (!sw) sw = await w.beginShard(k, Math.min(R, dataset.entries.length - b.shard * R));
      if (outputs && b.rows.length > 0) {
        await sw.append(outputs, b.rows.length, b.rows.map((e: ViewEntry) => ({ path: e.path, label: e.label, split: e.split, ...(e.view !== undefined ? { view: e.view } : {}) })));
      }
      for (const e of b.errors) sw.error(e.path, e.reason);
      done += b.inputs;
      runImages += b.rows.length;
      if (confinement?.watch()) emit({ type: 'cpus', ...confinement.state() });
      if (b.lastOfShard) {
        const rows = sw.rowCount;
        const errs = sw.errorCount;
        await sw.commit();
        sw = null;
        emit({ type: 'shard', shard: k, rows, errors: errs });
      }
      const now = performance.now();
      if (now - lastEmit > 250 || b.lastOfShard) {
        lastEmit = now;
        const elapsed = (now - tRun) / 1000;
        emit({ type: 'progress', done, total: range.items, images: w.counts.images + (sw ? (sw as ShardWriter).rowCount : 0), errors: w.counts.errors + (sw ? (sw as ShardWriter).errorCount : 0), elapsed, rate: elapsed > 0 ? runImages / elapsed : 0 });
      }
    };

    // The producer decodes and assembles batches into a bounded channel on its own, so decoding
    // never waits for a batch result; the consumer keeps at most `workers × WORKER_DEPTH + 1` batches
    // at the backbone (each session runs one and holds the next: see firstFree) and writes results
    // in order. On CUDA every batch is padded to the batch size (one input shape: no cuDNN
    // re-tuning); on CPU only the real rows run (padding would be wasted compute; a batch's
    // composition is fixed by the input order, so resumed and sharded runs still feed identical
    // batches).
    // The consumer stops the producer when it leaves (done, interrupted, --strict, an error): it then
    // decodes nothing more than the image it is waiting for.
    let producerStopped = false;
    const produced = (async () => {
      try {
        for await (const b of batches()) {
          if (!(await ready.push(b))) break;
        }
        ready.close();
      } catch (e) {
        ready.fail(e);
      }
    })();
    const pad = info.provider === 'cuda';
    const inflight: { b: Batch; res: Promise<Float32Array[] | null> }[] = [];
    const maxInflight = workers * WORKER_DEPTH + 1;
    // --strict: stop once the shard holding the first unusable input is committed.
    const strictDone = () => strictShard !== null && w.counts.shards > strictShard - range.firstShard;
    try {
      // Ctrl-C: no new batch starts; the ones at the backbone are finished and written (below).
      while (!stop && !strictDone()) {
        const b = await ready.shift();
        if (b === undefined || stop) break;
        let res: Promise<Float32Array[] | null>;
        if (b.rows.length > 0) {
          res = backbone.run(b.pixels, pad ? batch : b.rows.length).then((r) => {
            buffers.give(r.pixels);
            return r.outputs;
          });
        } else {
          buffers.give(b.pixels);
          res = Promise.resolve(null);
        }
        res.catch(() => {});
        inflight.push({ b, res });
        while (inflight.length >= maxInflight && !strictDone()) {
          const head = inflight.shift()!;
          await consume(head.b, await head.res);
        }
      }
      while (inflight.length > 0 && !strictDone()) {
        const head = inflight.shift()!;
        await consume(head.b, await head.res);
      }
    } finally {
      opts.signal?.removeEventListener('abort', onAbort);
      producerStopped = true;
      ready.cancel();
      await produced;
      // Leave nothing half-written: an unfinished shard is dropped (resume redoes it).
      for (const x of inflight) await x.res.catch(() => null);
      if (sw) await (sw as ShardWriter).abort();
    }
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
        decodeCpus: confinement?.state() ?? null,
      };
    }
  } finally {
    await confinement?.restore();
    affinity?.close();
    await writer?.close().catch(() => {});
    await backbone.close().catch(() => {});
  }
}
