/**
 * Feature-folder writer (docs/feature-format.md is the contract; `reader.ts` is its other half).
 *
 * Durability protocol for shard k (every step is safe to interrupt with kill -9):
 *   1. each layer's rows are written to `<layer dir>/.<k>.npy.tmp` (positional writes, so memory
 *      stays one batch whatever the layer size), the header is written last, the file is fsynced
 *      and renamed to `<layer dir>/<k:05d>.npy`; the layer folders are fsynced;
 *   2. the shard's error lines, then its index lines, are appended to errors.jsonl / index.jsonl
 *      and fsynced — so every index row has its features on disk;
 *   3. meta.json is rewritten atomically (temp + fsync + rename) with `counts.shards = k + 1`.
 * `counts.shards` in meta.json is the commit point: on resume, index/error lines of shards >= it
 * (a commit cut short between steps 2 and 3) and every `.tmp` / later `.npy` file are discarded,
 * and extraction restarts at that shard. Shard boundaries come from the sorted input, never from
 * timing, so a resumed run writes byte-identical files.
 */
import { copyFile, open, mkdir, readFile, readdir, rename, rm, rmdir, stat, truncate, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { XferError } from '../errors.js';
import { writeFileAtomic as writeAtomic } from '../util/atomic.js';
import { npyHeader } from './npy.js';
import { float32ToFloat16 } from '../util/float16.js';
import { normalizePlanRecord } from '../image/plan.js';
import { externalWeightsLabel, sameExternalWeights } from './external-weights.js';
import { isLockEntry } from '../util/lock.js';
import { checkFeatureFolderPaths } from './paths.js';
import {
  ERRORS_FILE,
  FEATURE_FORMAT,
  FEATURE_FORMAT_VERSION,
  INDEX_FILE,
  LABELS_FILE,
  META_FILE,
  shardFileName,
  type FeatureDtype,
  type FeatureLayer,
  type FeatureMeta,
  type FeatureMetaInit,
  type RowInput,
} from './format.js';

export * from './format.js';

/** Low-level write hook (tests inject failures such as ENOSPC through it). */
export interface WriterIO {
  write(fh: FileHandle, data: Uint8Array, position: number | null): Promise<void>;
}

const defaultIO: WriterIO = {
  async write(fh, data, position) {
    let off = 0;
    while (off < data.length) {
      const { bytesWritten } = await fh.write(data, off, data.length - off, position === null ? null : position + off);
      off += bytesWritten;
    }
  },
};

/**
 * .npy header for `shape` padded to exactly `length` bytes (>= its natural length). Shards reserve
 * room for the header of a full shard before their rows are known; fewer rows never need more room.
 */
export function paddedNpyHeader(dtype: FeatureDtype, shape: number[], length: number): Buffer {
  const h = npyHeader(dtype, shape);
  if (h.length === length) return h;
  if (h.length > length) throw new Error(`npy header for [${shape}] needs ${h.length} bytes, only ${length} reserved`);
  const dict = h.subarray(10, h.length - 1).toString('latin1').padEnd(length - 11, ' ') + '\n';
  const out = Buffer.alloc(length);
  h.copy(out, 0, 0, 8);
  out.writeUInt16LE(dict.length, 8);
  out.write(dict, 10, 'latin1');
  return out;
}

/**
 * The fields two runs must agree on to share a folder (resume) or be merged. `metaFile` names the
 * meta.json `m` was read from: a meta lacking those fields is refused naming it.
 */
export function metaFingerprint(m: Pick<FeatureMeta, 'model' | 'layers' | 'dtype' | 'preprocessing' | 'counts' | 'data'>, metaFile = META_FILE): string {
  const missing = (['model', 'layers', 'counts', 'data'] as const).filter((k) => !m || typeof m[k] !== 'object' || m[k] === null);
  if (missing.length === 0 && !Array.isArray(m.layers)) missing.push('layers');
  if (missing.length > 0) {
    throw new XferError(`${metaFile} is not an xfer feature folder's meta (missing ${missing.join('/')})`, {
      hint: 'the file was not written by `xfer extract` (or was edited); choose another folder, or delete it',
    });
  }
  return JSON.stringify({
    sha256: m.model.sha256,
    layers: m.layers.map((l) => [l.name, l.dir, l.pool, l.shape, l.dtype]),
    dtype: m.dtype,
    preprocessing: m.preprocessing && typeof m.preprocessing === 'object' ? sortedKeys(normalizePlanRecord(m.preprocessing)) : m.preprocessing,
    rows_per_shard: m.counts.rows_per_shard,
    data: m.data.sha256,
  });
}

/**
 * Whether two folders' models have the same external weights (the fingerprint above leaves them out:
 * a folder written before they were recorded agrees with any; see external-weights.ts).
 */
export function sameFolderWeights(a: Pick<FeatureMeta, 'model'>, b: Pick<FeatureMeta, 'model'>): boolean {
  return sameExternalWeights(a.model?.external_sha256, b.model?.external_sha256);
}

/** The same object with its keys in sorted order (so key order never makes two records differ). */
function sortedKeys(o: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.keys(o).sort().map((k) => [k, o[k]]));
}

/** Human-readable list of what differs between an existing folder and a new run. */
function describeDifference(old: FeatureMeta, neu: FeatureMetaInit): string {
  const d: string[] = [];
  if (old.model?.sha256 !== neu.model.sha256) d.push(`model ${old.model?.id} (sha256 ${String(old.model?.sha256).slice(0, 12)}) vs ${neu.model.id} (sha256 ${neu.model.sha256.slice(0, 12)})`);
  else if (!sameFolderWeights(old, neu)) {
    d.push(`external weight files of ${neu.model.id} (${externalWeightsLabel(old.model?.external_sha256)} vs ${externalWeightsLabel(neu.model.external_sha256)})`);
  }
  const ol = (old.layers ?? []).map((l) => `${l.name}:${l.pool}`).join(',');
  const nl = neu.layers.map((l) => `${l.name}:${l.pool}`).join(',');
  if (ol !== nl) d.push(`layers ${ol} vs ${nl}`);
  if (old.dtype !== neu.dtype) d.push(`dtype ${old.dtype} vs ${neu.dtype}`);
  const op = normalizePlanRecord(old.preprocessing ?? {});
  const np = normalizePlanRecord(neu.preprocessing);
  for (const k of [...new Set([...Object.keys(op), ...Object.keys(np)])]) {
    if (JSON.stringify(op[k]) === JSON.stringify(np[k])) continue;
    const fix = k === 'apply_icc' ? (op[k] ? ' (extracted with ICC profiles applied: resume with --apply-icc)' : ' (extracted with ICC profiles ignored: resume without --apply-icc)') : '';
    d.push(`preprocessing ${k} ${JSON.stringify(op[k])} vs ${JSON.stringify(np[k])}${fix}`);
  }
  if (old.counts?.rows_per_shard !== neu.counts.rows_per_shard) d.push(`rows per shard ${old.counts?.rows_per_shard} vs ${neu.counts.rows_per_shard}`);
  if (old.data?.sha256 !== neu.data.sha256) d.push(`input list differs (${old.data?.root} vs ${neu.data.root})`);
  if (JSON.stringify(old.shard) !== JSON.stringify(neu.shard)) d.push(`shard ${old.shard ? `${old.shard.index}/${old.shard.count}` : 'none'} vs ${neu.shard ? `${neu.shard.index}/${neu.shard.count}` : 'none'}`);
  return d.join('; ') || 'settings differ';
}

async function fsyncPath(p: string): Promise<void> {
  const fh = await open(p, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function exists(p: string): Promise<boolean> {
  return stat(p).then(
    () => true,
    () => false,
  );
}

/** Turn an fs error during writing into a one-line XferError that says what was kept. */
function writeFailure(e: unknown, out: string, what: string, kept: { shards: number; images: number }): XferError {
  if (e instanceof XferError) return e;
  const err = e as NodeJS.ErrnoException;
  const code = err.code ?? 'error';
  const reason = code === 'ENOSPC' ? 'disk full (ENOSPC)' : code === 'EDQUOT' ? 'disk quota exceeded (EDQUOT)' : `${code}: ${err.message}`;
  return new XferError(`${out}: ${reason} while writing ${what}; ${kept.shards} finished shard(s) (${kept.images} images) are kept`, {
    hint: code === 'ENOSPC' || code === 'EDQUOT' ? 'free some space (or choose another --out) and re-run with --resume to continue' : 're-run with --resume to continue',
    exitCode: 1,
    cause: e,
  });
}

export interface OpenWriterOptions {
  /** Continue an interrupted extraction in `out` (same model, layers, inputs). */
  resume?: boolean;
  /** Replace features already in `out`. */
  overwrite?: boolean;
  io?: WriterIO;
  /** Errors found while listing the inputs (written once, when the folder is created). */
  discoveryErrors?: { path: string; reason: string }[];
  /** Called before each commit; throws to stop (the folder's lock was lost: util/lock.ts `assertHeld`). */
  guard?: () => void;
}

export interface ResumeState {
  shards: number;
  images: number;
  errors: number;
}

/**
 * Writes one feature folder. Open with `FeatureWriter.open`, then for each shard in order:
 * `beginShard(k)` → `append`/`error` … → `commit()`, and finally `finish()`.
 */
export class FeatureWriter {
  readonly out: string;
  private meta: FeatureMeta;
  private readonly io: WriterIO;
  private readonly labelIndex: Map<string, number>;
  private current: ShardWriter | null = null;
  /** Set when the folder already existed and is being continued. */
  readonly resumed: ResumeState | null;
  private guard: () => void = () => {};

  private constructor(out: string, meta: FeatureMeta, labels: string[], io: WriterIO, resumed: ResumeState | null) {
    this.out = out;
    this.meta = meta;
    this.io = io;
    this.labelIndex = new Map(labels.map((l, i) => [l, i]));
    this.resumed = resumed;
  }

  get counts(): Readonly<FeatureMeta['counts']> {
    return this.meta.counts;
  }
  get layers(): readonly FeatureLayer[] {
    return this.meta.layers;
  }
  get complete(): boolean {
    return this.meta.complete;
  }
  get metadata(): Readonly<FeatureMeta> {
    return this.meta;
  }

  /**
   * Open `out` for writing: create it, or continue it (`resume`), or replace it (`overwrite`).
   * Refuses a folder holding other features (different model/layers/inputs) unless `overwrite`.
   */
  static async open(out: string, init: FeatureMetaInit, labels: string[], opts: OpenWriterOptions = {}): Promise<FeatureWriter> {
    opts.guard?.();
    const w = await FeatureWriter.openUnguarded(out, init, labels, opts);
    if (opts.guard) w.guard = opts.guard;
    return w;
  }

  private static async openUnguarded(out: string, init: FeatureMetaInit, labels: string[], opts: OpenWriterOptions): Promise<FeatureWriter> {
    const io = opts.io ?? defaultIO;
    const metaFile = path.join(out, META_FILE);
    let old: FeatureMeta | null = null;
    let entries: string[] = [];
    try {
      // The run's lock (util/lock.ts) lives in the folder too; it is not content.
      entries = (await readdir(out)).filter((f) => !isLockEntry(f));
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT') {
        throw new XferError(`--out ${out}: cannot read the folder (${code})`, { hint: code === 'ENOTDIR' ? 'it is a file; choose a folder path' : undefined });
      }
    }
    if (entries.length > 0) {
      if (!entries.includes(META_FILE)) {
        throw new XferError(`--out ${out}: folder is not empty and is not an xfer feature folder (no meta.json)`, {
          hint: 'choose a new or empty folder for --out (xfer never deletes files it did not write)',
        });
      }
      try {
        old = JSON.parse(await readFile(metaFile, 'utf8')) as FeatureMeta;
      } catch (e) {
        throw new XferError(`${metaFile}: unreadable (${(e as Error).message})`, { hint: 'choose another --out, or delete the folder' });
      }
      if (old.format !== FEATURE_FORMAT) throw new XferError(`${metaFile}: not an xfer feature folder (format ${JSON.stringify(old.format)})`, { hint: 'choose another --out' });
      // Before anything is compared, trimmed or deleted: every path it names stays inside `out`.
      await checkFeatureFolderPaths(out, old, metaFile);
    }
    const fresh: FeatureMeta = {
      format: FEATURE_FORMAT,
      format_version: FEATURE_FORMAT_VERSION,
      ...init,
      counts: { images: 0, errors: 0, shards: 0, rows_per_shard: init.counts.rows_per_shard },
      complete: false,
      created: new Date().toISOString(),
    };
    // Key order of meta.json follows docs/feature-format.md.
    const ordered = orderMeta(fresh);
    if (old) {
      const same = metaFingerprint(old, metaFile) === metaFingerprint(fresh) && sameFolderWeights(old, fresh) && JSON.stringify(old.shard) === JSON.stringify(fresh.shard);
      if (same && opts.resume) return FeatureWriter.continueFolder(out, old, labels, io);
      if (!opts.overwrite) {
        if (!same) {
          throw new XferError(`--out ${out} already holds different features (${describeDifference(old, init)})`, {
            hint: 'choose another --out, or pass --overwrite to replace them',
          });
        }
        throw new XferError(`--out ${out} already holds ${old.complete ? 'a complete' : 'an unfinished'} extraction of these features (${old.counts.images} images)`, {
          hint: old.complete ? 'nothing to do; pass --overwrite to extract again' : 'pass --resume to continue it, or --overwrite to start over',
        });
      }
      await removeFeatureFolder(out, old);
    }
    try {
      await mkdir(out, { recursive: true });
      for (const l of ordered.layers) await mkdir(path.join(out, l.dir), { recursive: true });
      await writeFileAtomic(path.join(out, LABELS_FILE), JSON.stringify(labels) + '\n', io);
      const errs = (opts.discoveryErrors ?? []).map((e) => JSON.stringify({ path: e.path, reason: e.reason, shard: null }) + '\n').join('');
      await writeFileAtomic(path.join(out, ERRORS_FILE), errs, io);
      await writeFileAtomic(path.join(out, INDEX_FILE), '', io);
      ordered.counts.errors = opts.discoveryErrors?.length ?? 0;
      await writeFileAtomic(metaFile, JSON.stringify(ordered, null, 2) + '\n', io);
      await fsyncPath(out);
    } catch (e) {
      throw writeFailure(e, out, 'the folder skeleton', { shards: 0, images: 0 });
    }
    return new FeatureWriter(out, ordered, labels, io, null);
  }

  /** Resume: trim index/errors to the committed shards, drop temp and uncommitted shard files. */
  private static async continueFolder(out: string, old: FeatureMeta, labels: string[], io: WriterIO): Promise<FeatureWriter> {
    const D = old.counts.shards;
    let oldLabels: unknown;
    try {
      oldLabels = JSON.parse(await readFile(path.join(out, LABELS_FILE), 'utf8'));
    } catch {
      oldLabels = null;
    }
    if (JSON.stringify(oldLabels) !== JSON.stringify(labels)) {
      throw new XferError(`${out}/labels.json differs from the labels of the inputs`, { hint: 'the dataset changed since the run began; use --overwrite to start over' });
    }
    // Temp files of atomic replacements cut short (meta.json, index.jsonl, ...): leftovers.
    for (const f of await readdir(out)) {
      if (ROOT_TEMP.test(f)) await rm(path.join(out, f), { force: true });
    }
    const images = await trimJsonl(path.join(out, INDEX_FILE), (o) => typeof o.shard === 'number' && o.shard < D);
    const errors = await trimJsonl(path.join(out, ERRORS_FILE), (o) => o.shard === null || (typeof o.shard === 'number' && o.shard < D));
    if (images !== old.counts.images || errors !== old.counts.errors) {
      throw new XferError(`${out}: index.jsonl/errors.jsonl hold ${images}/${errors} committed lines but meta.json says ${old.counts.images}/${old.counts.errors}`, {
        hint: 'the folder was modified by hand; use --overwrite to start over',
      });
    }
    for (const l of old.layers) {
      const dir = path.join(out, l.dir);
      await mkdir(dir, { recursive: true });
      const files = await readdir(dir);
      for (const f of files) {
        const m = /^(\d{5,})\.npy$/.exec(f);
        if (f.endsWith('.tmp') || (m && Number(m[1]) >= D)) await rm(path.join(dir, f), { force: true });
      }
      for (let k = 0; k < D; k++) {
        if (!(await exists(path.join(dir, shardFileName(k))))) {
          throw new XferError(`${path.join(dir, shardFileName(k))}: committed shard file is missing`, { hint: 'use --overwrite to start over' });
        }
      }
    }
    return new FeatureWriter(out, old, labels, io, { shards: D, images: old.counts.images, errors: old.counts.errors });
  }

  /** Start writing local shard `k` (must be `counts.shards`), holding at most `maxRows` rows. */
  async beginShard(k: number, maxRows: number): Promise<ShardWriter> {
    if (this.current) throw new Error('beginShard: previous shard not committed');
    if (k !== this.meta.counts.shards) throw new Error(`beginShard: expected shard ${this.meta.counts.shards}, got ${k}`);
    try {
      const sw = await ShardWriter.create(this, k, maxRows);
      this.current = sw;
      return sw;
    } catch (e) {
      throw writeFailure(e, this.out, `shard ${k}`, this.meta.counts);
    }
  }

  /** @internal used by ShardWriter */
  get _io(): WriterIO {
    return this.io;
  }
  /** @internal */
  _labelIndex(label: string | null): number | null {
    if (label === null) return null;
    const i = this.labelIndex.get(label);
    if (i === undefined) throw new Error(`label ${label} is not in labels.json`);
    return i;
  }

  /** @internal called by ShardWriter.commit after its .npy files are durable. */
  async _commitShard(k: number, rows: RowInput[], errors: { path: string; reason: string }[]): Promise<void> {
    this.guard();
    const c = this.meta.counts;
    const base = c.images;
    const idx = rows
      .map((r, i) => JSON.stringify({ row: base + i, path: r.path, label: r.label, label_index: this._labelIndex(r.label), split: r.split, shard: k, shard_row: i, ...(r.view !== undefined ? { view: r.view } : {}) }) + '\n')
      .join('');
    const errs = errors.map((e) => JSON.stringify({ path: e.path, reason: e.reason, shard: k }) + '\n').join('');
    if (errs) await appendDurable(path.join(this.out, ERRORS_FILE), errs, this.io);
    if (idx) await appendDurable(path.join(this.out, INDEX_FILE), idx, this.io);
    const next = orderMeta({ ...this.meta, counts: { ...c, images: c.images + rows.length, errors: c.errors + errors.length, shards: k + 1 } });
    await writeFileAtomic(path.join(this.out, META_FILE), JSON.stringify(next, null, 2) + '\n', this.io);
    this.meta = next;
    this.current = null;
  }

  /**
   * Commit shard `k` from existing .npy files (one per layer, e.g. a `--shard` part's), copied
   * through temp files like an extraction's; used by `xfer merge`.
   */
  async adoptShard(k: number, sources: string[], rows: RowInput[], errors: { path: string; reason: string }[]): Promise<void> {
    if (this.current) throw new Error('adoptShard: a shard is open');
    if (k !== this.meta.counts.shards) throw new Error(`adoptShard: expected shard ${this.meta.counts.shards}, got ${k}`);
    try {
      const finals: string[] = [];
      for (let j = 0; j < this.meta.layers.length; j++) {
        const dir = path.join(this.out, this.meta.layers[j].dir);
        const tmp = path.join(dir, `.${shardFileName(k)}.tmp`);
        await copyFile(sources[j], tmp);
        await fsyncPath(tmp);
        finals.push(path.join(dir, shardFileName(k)));
        await rename(tmp, finals[j]);
      }
      for (const f of finals) await fsyncPath(path.dirname(f));
      await this._commitShard(k, rows, errors);
    } catch (e) {
      throw writeFailure(e, this.out, `shard ${k}`, this.meta.counts);
    }
  }

  /** @internal */
  _abandon(): void {
    this.current = null;
  }

  /** Mark the folder complete (all shards committed). */
  async finish(): Promise<void> {
    if (this.current) throw new Error('finish: a shard is still open');
    this.guard();
    const next = orderMeta({ ...this.meta, complete: true });
    try {
      await writeFileAtomic(path.join(this.out, META_FILE), JSON.stringify(next, null, 2) + '\n', this.io);
    } catch (e) {
      throw writeFailure(e, this.out, META_FILE, this.meta.counts);
    }
    this.meta = next;
  }

  /** Abort an open shard (its temp files are removed). Safe to call at any time. */
  async close(): Promise<void> {
    if (this.current) await this.current.abort();
  }
}

/** Writes one shard's per-layer .npy files through temp files. */
export class ShardWriter {
  readonly k: number;
  private readonly w: FeatureWriter;
  private readonly maxRows: number;
  private readonly files: { fh: FileHandle; tmp: string; final: string; headerLen: number; rowBytes: number; layer: FeatureLayer }[];
  private readonly rows: RowInput[] = [];
  private readonly errs: { path: string; reason: string }[] = [];
  private done = false;

  private constructor(w: FeatureWriter, k: number, maxRows: number, files: ShardWriter['files']) {
    this.w = w;
    this.k = k;
    this.maxRows = maxRows;
    this.files = files;
  }

  static async create(w: FeatureWriter, k: number, maxRows: number): Promise<ShardWriter> {
    const files: ShardWriter['files'] = [];
    try {
      for (const layer of w.layers) {
        const dir = path.join(w.out, layer.dir);
        const final = path.join(dir, shardFileName(k));
        const tmp = path.join(dir, `.${shardFileName(k)}.tmp`);
        const fh = await open(tmp, 'w');
        const rowElems = layer.shape.reduce((a, b) => a * b, 1);
        files.push({ fh, tmp, final, layer, headerLen: npyHeader(layer.dtype, [maxRows, ...layer.shape]).length, rowBytes: rowElems * (layer.dtype === 'float16' ? 2 : 4) });
      }
    } catch (e) {
      for (const f of files) {
        await f.fh.close().catch(() => {});
        await rm(f.tmp, { force: true }).catch(() => {});
      }
      throw e;
    }
    return new ShardWriter(w, k, maxRows, files);
  }

  get rowCount(): number {
    return this.rows.length;
  }

  /**
   * Append the first `n` rows of a batch: `outputs[j]` holds layer j's rows (float32, at least n rows),
   * `inputs[i]` describes row i.
   */
  async append(outputs: readonly Float32Array[], n: number, inputs: readonly RowInput[]): Promise<void> {
    if (this.rows.length + n > this.maxRows) throw new Error(`shard ${this.k}: more than ${this.maxRows} rows`);
    try {
      for (let j = 0; j < this.files.length; j++) {
        const f = this.files[j];
        const elems = f.rowBytes / (f.layer.dtype === 'float16' ? 2 : 4);
        const src = outputs[j].subarray(0, n * elems);
        if (src.length !== n * elems) throw new Error(`layer ${f.layer.name}: got ${outputs[j].length} values for ${n} rows of ${elems}`);
        const data = f.layer.dtype === 'float16' ? float32ToFloat16(src) : src;
        await this.w._io.write(f.fh, new Uint8Array(data.buffer, data.byteOffset, data.byteLength), f.headerLen + this.rows.length * f.rowBytes);
      }
    } catch (e) {
      await this.abort();
      throw writeFailure(e, this.w.out, `shard ${this.k}`, this.w.counts);
    }
    for (let i = 0; i < n; i++) this.rows.push({ path: inputs[i].path, label: inputs[i].label, split: inputs[i].split, ...(inputs[i].view !== undefined ? { view: inputs[i].view } : {}) });
  }

  /** Record an input of this shard that could not be used. */
  error(p: string, reason: string): void {
    this.errs.push({ path: p, reason: reason.replace(/\s+/g, ' ').trim() });
  }

  get errorCount(): number {
    return this.errs.length;
  }

  /** Make the shard durable and append its index lines (see the protocol at the top of the file). */
  async commit(): Promise<void> {
    if (this.done) throw new Error('shard already finished');
    const n = this.rows.length;
    try {
      for (const f of this.files) {
        await this.w._io.write(f.fh, paddedNpyHeader(f.layer.dtype, [n, ...f.layer.shape], f.headerLen), 0);
        await f.fh.truncate(f.headerLen + n * f.rowBytes);
        await f.fh.sync();
        await f.fh.close();
      }
      for (const f of this.files) await rename(f.tmp, f.final);
      for (const f of this.files) await fsyncPath(path.dirname(f.final));
      this.done = true;
      await this.w._commitShard(this.k, this.rows, this.errs);
    } catch (e) {
      await this.abort();
      throw writeFailure(e, this.w.out, `shard ${this.k}`, this.w.counts);
    }
  }

  /** Drop this shard's temp files. */
  async abort(): Promise<void> {
    this.done = true;
    for (const f of this.files) {
      await f.fh.close().catch(() => {});
      await rm(f.tmp, { force: true }).catch(() => {});
    }
    this.w._abandon();
  }
}

function orderMeta(m: FeatureMeta): FeatureMeta {
  return {
    format: m.format,
    format_version: m.format_version,
    tool_version: m.tool_version,
    model: m.model,
    card: m.card,
    layers: m.layers,
    dtype: m.dtype,
    preprocessing: m.preprocessing,
    counts: { images: m.counts.images, errors: m.counts.errors, shards: m.counts.shards, rows_per_shard: m.counts.rows_per_shard },
    data: m.data,
    shard: m.shard,
    ...(m.views ? { views: m.views } : {}),
    batch: m.batch,
    complete: m.complete,
    created: m.created,
  };
}

/** Temp files of the folder's atomically replaced root files (see util/atomic.ts `tempNameFor`). */
const ROOT_TEMP = /^\.(meta\.json|index\.jsonl|errors\.jsonl|labels\.json)\.tmp(-.*)?$/;

/** Write a small file via a uniquely named temp file + fsync + rename, through the writer's write hook. */
function writeFileAtomic(file: string, text: string, io: WriterIO = defaultIO): Promise<void> {
  return writeAtomic(file, text, { write: (fh, data, position) => io.write(fh, data, position) });
}

async function appendDurable(file: string, text: string, io: WriterIO): Promise<void> {
  const fh = await open(file, 'a');
  try {
    await io.write(fh, Buffer.from(text, 'utf8'), null);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Keep the longest prefix of a JSONL file whose lines parse and satisfy `keep`; truncate the rest
 * (a half-written last line, or lines of an uncommitted shard). Returns the number of lines kept.
 */
export async function trimJsonl(file: string, keep: (o: Record<string, unknown>) => boolean): Promise<number> {
  const fail = (e: unknown): XferError => {
    const code = (e as NodeJS.ErrnoException).code ?? String(e);
    return new XferError(`${file}: cannot trim to the committed lines (${code})`, {
      hint: code === 'EACCES' || code === 'EPERM' ? 'make the feature folder writable, then re-run with --resume' : 're-run with --resume, or --overwrite to start over',
      cause: e,
    });
  };
  let buf: Buffer;
  try {
    buf = await readFile(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
      await writeFileAtomic(file, '').catch((e2: unknown) => {
        throw fail(e2);
      });
      return 0;
    }
    throw fail(e);
  }
  let pos = 0;
  let n = 0;
  while (pos < buf.length) {
    const nl = buf.indexOf(0x0a, pos);
    if (nl < 0) break;
    let o: unknown;
    try {
      o = JSON.parse(buf.subarray(pos, nl).toString('utf8'));
    } catch {
      break;
    }
    if (typeof o !== 'object' || o === null || !keep(o as Record<string, unknown>)) break;
    pos = nl + 1;
    n++;
  }
  if (pos < buf.length) {
    try {
      await truncate(file, pos);
      await fsyncPath(file);
    } catch (e) {
      throw fail(e);
    }
  }
  return n;
}

/** Remove what an xfer feature folder holds (only files xfer writes), for --overwrite. */
export async function removeFeatureFolder(out: string, old: Pick<FeatureMeta, 'layers'>): Promise<void> {
  for (const l of old.layers ?? []) {
    const dir = path.join(out, l.dir);
    let files: string[] = [];
    try {
      files = await readdir(dir);
    } catch {
      continue;
    }
    for (const f of files) if (/^\d{5,}\.npy$/.test(f) || /^\.\d{5,}\.npy\.tmp$/.test(f)) await rm(path.join(dir, f), { force: true });
    await rmdir(dir).catch(() => {});
  }
  for (const f of [INDEX_FILE, ERRORS_FILE, LABELS_FILE]) await rm(path.join(out, f), { force: true });
  for (const f of await readdir(out).catch(() => [] as string[])) if (ROOT_TEMP.test(f)) await rm(path.join(out, f), { force: true });
  await rm(path.join(out, META_FILE), { force: true });
}
