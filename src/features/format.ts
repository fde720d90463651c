/**
 * The feature-folder format, defined once (docs/feature-format.md describes it for people): the
 * names of its files, the shape of meta.json, index.jsonl and errors.jsonl rows, and how layer
 * folders and shard files are named. writer.ts and reader.ts both import it.
 */
import type { Pool } from '../model/taps.js';

export const META_FILE = 'meta.json';
export const LABELS_FILE = 'labels.json';
export const INDEX_FILE = 'index.jsonl';
export const ERRORS_FILE = 'errors.jsonl';
/** Names a layer folder may not take (case-insensitively). */
const RESERVED_NAMES = [INDEX_FILE, META_FILE, LABELS_FILE, ERRORS_FILE];

/** Rows per .npy shard file unless the run says otherwise (fixes the shard boundaries: the same for a run, its resumes and parts). */
export const DEFAULT_ROWS_PER_SHARD = 1024;

export const FEATURE_FORMAT = 'xfer-features';
export const FEATURE_FORMAT_VERSION = 1;

export type FeatureDtype = 'float32' | 'float16';
export type LayerPool = Pool;

export interface FeatureLayer {
  /** ONNX tensor name tapped. */
  name: string;
  /** Folder-safe form of `name` (see `layerDirName`). */
  dir: string;
  pool: LayerPool;
  /** Per-row shape after pooling. */
  shape: number[];
  dtype: FeatureDtype;
}

/** Set when the folder holds one part of a `--shard i/n` run (see docs/feature-format.md "Sharded runs"). */
export interface ShardPart {
  /** i of i/n. */
  index: number;
  /** n of i/n. */
  count: number;
  /** Global number of this part's first shard (its local shard 0). */
  first_shard: number;
  /** Number of shards this part covers. */
  shards: number;
  /** Shards of the whole (unsharded) run. */
  total_shards: number;
  /** Position of this part's first input in the whole sorted input list, and how many it covers. */
  first_item: number;
  items: number;
}

export interface FeatureMeta {
  format: typeof FEATURE_FORMAT;
  format_version: number;
  tool_version: string;
  /**
   * `external_sha256`: of the model's external weight files (onnx/io.ts externalWeightsDigest), null
   * when it has none; absent in folders written before it was recorded (then not compared).
   */
  model: { id: string; sha256: string; file: string; external_sha256?: string | null };
  card: unknown;
  layers: FeatureLayer[];
  dtype: FeatureDtype;
  preprocessing: Record<string, unknown>;
  counts: { images: number; errors: number; shards: number; rows_per_shard: number };
  /** `items`: inputs found (after the shard split), `sha256`: of the sorted input list (paths, labels, splits) of the whole run. */
  data: { root: string; kind: string; items: number; sha256: string };
  shard: ShardPart | null;
  /** K augmented views per training image (`xfer extract --views`), absent when none. */
  views?: { k: number; augment: string[]; seed: number };
  /** Batch size used (on CUDA the last batch of every shard is padded to it; on CPU nothing is padded). */
  batch: number;
  complete: boolean;
  created: string;
}

/** What the caller fixes when opening a writer; counts/complete/created are the writer's. */
export type FeatureMetaInit = Omit<FeatureMeta, 'format' | 'format_version' | 'counts' | 'complete' | 'created'> & {
  counts: { rows_per_shard: number };
};

export interface IndexRow {
  row: number;
  path: string;
  label: string | null;
  label_index: number | null;
  split: string | null;
  shard: number;
  shard_row: number;
  /** Which augmented view of the image this row is (`--views`); absent for plain rows. */
  view?: number;
}

export interface ErrorRow {
  path: string;
  reason: string;
  /** Shard whose input range holds the input (null: found unusable while listing the dataset). */
  shard: number | null;
}

/** An input that produced a row. */
export interface RowInput {
  path: string;
  label: string | null;
  split: string | null;
  view?: number;
}

/** Folder-safe form of a tensor name: characters outside [A-Za-z0-9_.-] become '_'. */
export function layerDirName(name: string): string {
  const s = name.replace(/[^A-Za-z0-9_.-]/g, '_');
  return s === '' || s === '.' || s === '..' ? `_${s}` : s;
}

/** Give layers unique dirs (a suffix `_2`, `_3`... when two names map to the same folder). */
export function assignLayerDirs(names: string[]): string[] {
  const used = new Set<string>();
  return names.map((n) => {
    const base = layerDirName(n);
    let d = base;
    for (let i = 2; used.has(d.toLowerCase()) || RESERVED_NAMES.includes(d.toLowerCase()); i++) d = `${base}_${i}`;
    used.add(d.toLowerCase());
    return d;
  });
}

export function shardFileName(k: number): string {
  return `${String(k).padStart(5, '0')}.npy`;
}

