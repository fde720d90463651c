/**
 * Reader for feature folders (docs/feature-format.md): meta.json, labels.json, index.jsonl and the
 * per-layer shard .npy files. `openFeatures` reads the small files; `loadRows` fills ONE float32
 * matrix with the requested rows in the requested order, concatenating the chosen layers column-wise,
 * reading one shard at a time (shard buffers are transient: the matrix is the only full-size copy).
 * Non-finite values are refused, listing the offending rows.
 *
 * Only what is committed is read (docs/feature-format.md, "How a shard is committed"): the first
 * `meta.counts.images` lines of index.jsonl and shards `0 .. counts.shards-1`; a folder whose
 * extraction is not complete is refused.
 */
import { readFile, readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { XferError } from '../errors.js';
import { readNpy } from './npy.js';
import { fromHalfBits } from '../util/float16.js';
import { isLockEntry } from '../util/lock.js';
import { checkFeatureFolderPaths } from './paths.js';
import { FEATURE_FORMAT, INDEX_FILE, LABELS_FILE, META_FILE, shardFileName, type FeatureLayer, type FeatureMeta, type IndexRow } from './format.js';

export type { FeatureLayer, FeatureMeta, IndexRow };

export interface FeatureFolder {
  dir: string;
  meta: FeatureMeta;
  labels: string[];
  index: IndexRow[];
}

export interface LoadedRows {
  /** rows × d, row-major; row r holds index row `rows[r]`. */
  X: Float32Array;
  n: number;
  d: number;
  layers: FeatureLayer[];
}

async function readJson<T>(file: string, what: string): Promise<T> {
  let txt: string;
  try {
    txt = await readFile(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new XferError(`${file}: cannot read ${what} (${code ?? String(e)})`, { hint: 'pass a feature folder written by `xfer extract`', cause: e });
  }
  try {
    return JSON.parse(txt) as T;
  } catch (e) {
    throw new XferError(`${file}: invalid JSON in ${what}`, { hint: 're-run the extraction', cause: e });
  }
}

/**
 * A feature folder's meta.json as recorded, without checking that the folder is complete or still
 * holds its features; null when it cannot be read (moved, deleted, not a feature folder).
 */
export async function readFeatureMeta(dir: string): Promise<FeatureMeta | null> {
  try {
    const meta = JSON.parse(await readFile(path.join(dir, META_FILE), 'utf8')) as FeatureMeta;
    return meta && typeof meta === 'object' && meta.format === FEATURE_FORMAT ? meta : null;
  } catch {
    return null;
  }
}

/** Read meta.json, labels.json and index.jsonl of a feature folder. */
export async function openFeatures(dir: string): Promise<FeatureFolder> {
  const st = await stat(dir).catch(() => null);
  if (!st) throw new XferError(`--features ${dir}: folder not found`, { hint: 'run `xfer extract --data <images> --out <dir>` first' });
  if (!st.isDirectory()) throw new XferError(`--features ${dir}: not a folder`, { hint: 'pass the folder written by `xfer extract`' });
  const entries = (await readdir(dir)).filter((f) => !isLockEntry(f));
  if (entries.length === 0) throw new XferError(`--features ${dir}: folder is empty`, { hint: 'run `xfer extract --data <images> --out <dir>` to fill it' });
  const metaFile = path.join(dir, META_FILE);
  const meta = await readJson<FeatureMeta>(metaFile, 'meta.json');
  if (!meta || typeof meta !== 'object' || meta.format !== FEATURE_FORMAT) {
    throw new XferError(`${metaFile}: not an xfer feature folder (format ${JSON.stringify((meta as { format?: unknown } | null)?.format)})`, {
      hint: 'pass a feature folder written by `xfer extract`',
    });
  }
  if (!Array.isArray(meta.layers) || meta.layers.length === 0 || !meta.model) {
    throw new XferError(`${metaFile}: no layers or model recorded`, { hint: 'the folder was not written by `xfer extract`' });
  }
  await checkFeatureFolderPaths(dir, meta, metaFile);
  const counts = meta.counts as Partial<FeatureMeta['counts']> | undefined;
  if (!counts || !Number.isInteger(counts.images) || !Number.isInteger(counts.shards) || counts.images! < 0 || counts.shards! < 0) {
    throw new XferError(`${metaFile}: no valid "counts" (images, shards) recorded`, { hint: 'the folder was not written by `xfer extract`; re-run the extraction' });
  }
  if (meta.complete !== true) {
    const total = typeof meta.data?.items === 'number' ? meta.data.items : '?';
    const done = meta.counts.images + (Number.isInteger(meta.counts.errors) ? meta.counts.errors : 0);
    throw new XferError(`${dir}: extraction not complete (${done} of ${total} images)`, {
      hint: 'finish it with `xfer extract ... --resume` (the same command plus --resume)',
    });
  }
  const labelsFile = path.join(dir, LABELS_FILE);
  const labelsStat = await stat(labelsFile).catch(() => null);
  if (!labelsStat) throw new XferError(`${labelsFile}: missing (every feature folder has one, [] when unlabelled)`, { hint: 'the folder is damaged; re-run the extraction with --overwrite' });
  const labels = await readJson<string[]>(labelsFile, 'labels.json');
  if (!Array.isArray(labels) || !labels.every((l) => typeof l === 'string')) {
    throw new XferError(`${labelsFile}: not a list of label names`, { hint: 'the folder is damaged; re-run the extraction with --overwrite' });
  }
  const idxFile = path.join(dir, INDEX_FILE);
  let txt: string;
  try {
    txt = await readFile(idxFile, 'utf8');
  } catch (e) {
    throw new XferError(`${idxFile}: cannot read (${(e as NodeJS.ErrnoException).code ?? String(e)})`, { hint: 'the extraction did not finish; run it again with --resume', cause: e });
  }
  // Only the committed rows: lines after counts.images belong to a shard whose commit was cut short.
  const want = meta.counts.images;
  const index: IndexRow[] = [];
  const seen: SeenRows = { positions: new Map(), paths: new Map() };
  const lines = txt.split('\n');
  for (let i = 0; i < lines.length && index.length < want; i++) {
    const line = lines[i].trim();
    if (!line) continue;
    let r: IndexRow;
    try {
      r = JSON.parse(line) as IndexRow;
    } catch (e) {
      throw new XferError(`${idxFile}:${i + 1}: invalid JSON line`, { hint: 're-run the extraction with --resume', cause: e });
    }
    if (r.label_index !== null && r.label_index !== undefined && !(r.label_index >= 0 && r.label_index < labels.length)) {
      throw new XferError(`${idxFile}:${i + 1}: label_index ${r.label_index} is outside labels.json (${labels.length} labels)`, { hint: 'labels.json and index.jsonl do not match; re-run the extraction' });
    }
    if (!(Number.isInteger(r.shard) && r.shard >= 0 && r.shard < meta.counts.shards)) {
      throw new XferError(`${idxFile}:${i + 1}: row is in shard ${r.shard} but meta.json commits shards 0..${meta.counts.shards - 1}`, { hint: 'the folder was modified; re-run the extraction' });
    }
    checkIndexRow(r, i + 1, index.length, idxFile, seen);
    index.push(r);
  }
  if (index.length < want) {
    throw new XferError(`${idxFile}: ${index.length} rows but meta.json says ${want}`, { hint: 'the folder is damaged; re-run the extraction with --overwrite' });
  }
  if (index.length === 0) throw new XferError(`${idxFile}: no rows`, { hint: 'the extraction produced no features (see errors.jsonl)' });
  return { dir, meta, labels, index };
}

interface SeenRows {
  /** "shard:shard_row" → row number, path → row number. */
  positions: Map<string, number>;
  paths: Map<string, number>;
}

/**
 * One committed index line is row `expect` (rows are numbered 0..n-1 in order), at a shard position
 * and with a path no earlier row has: two writers on one folder (or a hand edit) show up here, and
 * training on such an index would silently count images twice.
 */
function checkIndexRow(r: IndexRow, line: number, expect: number, idxFile: string, seen: SeenRows): void {
  const where = `${idxFile}:${line}`;
  const hint = { hint: 'the index is damaged (two runs wrote the folder at once, or it was edited); re-run the extraction with --overwrite' };
  if (r.row !== expect) throw new XferError(`${where}: row number ${JSON.stringify(r.row)}, expected ${expect} (rows are numbered 0..n-1 in order)`, hint);
  if (!(Number.isInteger(r.shard_row) && r.shard_row >= 0)) throw new XferError(`${where}: shard_row ${JSON.stringify(r.shard_row)} is not a row position`, hint);
  const pos = `${r.shard}:${r.shard_row}`;
  const prev = seen.positions.get(pos);
  if (prev !== undefined) throw new XferError(`${where}: row ${r.row} is at shard ${r.shard} position ${r.shard_row}, like row ${prev}`, hint);
  if (typeof r.path !== 'string') throw new XferError(`${where}: row ${r.row} has no path`, hint);
  // Augmented views (`"view": v`) share their image's path: the key is the (path, view) pair.
  const key = r.view === undefined ? r.path : `${r.path}\0view ${String(r.view)}`;
  const dup = seen.paths.get(key);
  if (dup !== undefined) throw new XferError(`${where}: row ${r.row} repeats the path ${r.path}${r.view === undefined ? '' : ` (view ${String(r.view)})`} of row ${dup}`, hint);
  seen.positions.set(pos, r.row);
  seen.paths.set(key, r.row);
}

/** Resolve `--layers` (names or dirs); default: the folder's only layer. */
export function pickLayers(f: FeatureFolder, want?: string[]): FeatureLayer[] {
  const all = f.meta.layers;
  if (!want || want.length === 0) {
    if (all.length === 1) return [all[0]];
    throw new XferError(`--layers: ${f.dir} has ${all.length} layers (${all.map((l) => l.name).join(', ')}); choose one or several (concatenated)`, {
      hint: `e.g. --layers ${all[all.length - 1].name}`,
    });
  }
  return want.map((w) => {
    const l = all.find((x) => x.name === w || x.dir === w);
    if (!l) throw new XferError(`--layers: '${w}' is not in ${path.join(f.dir, META_FILE)}`, { hint: `available: ${all.map((x) => x.name).join(', ')}` });
    return l;
  });
}

export function layerWidth(l: FeatureLayer): number {
  return l.shape.reduce((a, b) => a * b, 1);
}

/**
 * Load the given index rows (in that order) of the chosen layers into one n × d float32 matrix
 * (layers concatenated column-wise). Refuses NaN/Inf rows, listing them.
 */
export async function loadRows(f: FeatureFolder, layers: FeatureLayer[], rows: ArrayLike<number>): Promise<LoadedRows> {
  const n = rows.length;
  const widths = layers.map(layerWidth);
  const d = widths.reduce((a, b) => a + b, 0);
  const X = new Float32Array(n * d);
  // group wanted rows by shard: shard -> [shard_row, dest]
  const byShard = new Map<number, number[]>();
  for (let r = 0; r < n; r++) {
    const ir = f.index[rows[r]];
    if (!ir) throw new Error(`loadRows: row ${rows[r]} not in the index`);
    let a = byShard.get(ir.shard);
    if (!a) byShard.set(ir.shard, (a = []));
    a.push(ir.shard_row, r);
  }
  let col = 0;
  for (let li = 0; li < layers.length; li++) {
    const L = layers[li];
    const w = widths[li];
    for (const [shard, pairs] of [...byShard].sort((a, b) => a[0] - b[0])) {
      const file = path.join(f.dir, L.dir, shardFileName(shard));
      const arr = await readNpy(file);
      const rowsOnDisk = arr.shape[0];
      const rowW = arr.shape.slice(1).reduce((a, b) => a * b, 1);
      if (rowW !== w) {
        throw new XferError(`${file}: rows have ${rowW} values but meta.json says layer ${L.name} has shape [${L.shape}]`, { hint: 're-run the extraction' });
      }
      const bytes = arr.bytes;
      const f32 = arr.dtype === 'float32' ? alignedF32(bytes) : null;
      if (!f32 && arr.dtype !== 'float16') throw new XferError(`${file}: dtype ${arr.dtype} is not a feature dtype`, { hint: 'features must be float32 or float16' });
      const u16 = f32 ? null : new Uint16Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
      for (let p = 0; p < pairs.length; p += 2) {
        const sr = pairs[p];
        const dest = pairs[p + 1];
        if (sr >= rowsOnDisk) throw new XferError(`${file}: index.jsonl needs row ${sr} but the shard has ${rowsOnDisk}`, { hint: 'the folder is incomplete; run `xfer extract --resume`' });
        const o = dest * d + col;
        if (f32) X.set(f32.subarray(sr * w, sr * w + w), o);
        else for (let j = 0; j < w; j++) X[o + j] = fromHalfBits(u16![sr * w + j]);
      }
    }
    col += w;
  }
  const bad: number[] = [];
  for (let r = 0; r < n; r++) {
    const o = r * d;
    for (let j = 0; j < d; j++) {
      if (!Number.isFinite(X[o + j])) {
        bad.push(r);
        break;
      }
    }
  }
  if (bad.length > 0) {
    const list = bad.slice(0, 8).map((r) => `row ${rows[r]} (${f.index[rows[r]].path})`).join(', ');
    throw new XferError(`${f.dir}: ${bad.length} feature row(s) contain NaN or Inf: ${list}${bad.length > 8 ? ', ...' : ''}`, {
      hint: 'these images produced invalid features; remove them from the dataset or re-extract',
    });
  }
  return { X, n, d, layers };
}

function alignedF32(bytes: Uint8Array): Float32Array {
  if (bytes.byteOffset % 4 === 0) return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
}
