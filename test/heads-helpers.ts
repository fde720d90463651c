/** Test helpers for the heads: synthetic data and a tiny feature-folder writer (docs/feature-format.md). */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { encodeNpy } from '../src/features/npy.js';
import { Rng } from '../src/heads/rng.js';
import { tempDir } from './helpers/tmp.js';

export interface Synth {
  X: Float32Array;
  y: Int32Array;
  n: number;
  d: number;
  k: number;
}

/** Gaussian blobs: class means ~ N(0, sep²), unit noise. */
export function blobs(n: number, d: number, k: number, sep = 1, seed = 1): Synth {
  const rng = new Rng(seed);
  const means = new Float32Array(k * d);
  for (let i = 0; i < means.length; i++) means[i] = rng.normal() * sep;
  const X = new Float32Array(n * d);
  const y = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const c = i % k;
    y[i] = c;
    for (let j = 0; j < d; j++) X[i * d + j] = means[c * d + j] + rng.normal();
  }
  return { X, y, n, d, k };
}

export interface FolderOpts {
  labels?: string[];
  splits?: (string | null)[];
  modelId?: string;
  sha256?: string;
  layer?: string;
  pool?: string;
  shardRows?: number;
  /** extra layers: name → per-row width (filled with noise) */
  extraLayers?: Record<string, number>;
}

/** A temporary folder, removed when the test process exits (helpers/tmp.ts). */
export function tmpDir(prefix = 'xfer-heads-'): Promise<string> {
  return tempDir(prefix);
}

/** Write a feature folder holding `s` as one float32 layer, sharded. */
export async function writeFolder(dir: string, s: Synth, o: FolderOpts = {}): Promise<string> {
  const labels = o.labels ?? Array.from({ length: s.k }, (_, c) => `class${c}`);
  const layer = o.layer ?? 'feat';
  const shardRows = o.shardRows ?? 64;
  const layers = [{ name: layer, dir: layer, pool: o.pool ?? 'avg', shape: [s.d], dtype: 'float32' }];
  for (const [name, w] of Object.entries(o.extraLayers ?? {})) layers.push({ name, dir: name, pool: 'avg', shape: [w], dtype: 'float32' });
  await mkdir(dir, { recursive: true });
  const rng = new Rng(99);
  for (const L of layers) {
    await mkdir(path.join(dir, L.dir), { recursive: true });
    const w = L.shape[0];
    for (let sh = 0; sh * shardRows < s.n; sh++) {
      const a = sh * shardRows;
      const b = Math.min(s.n, a + shardRows);
      const data = L.name === layer ? s.X.slice(a * s.d, b * s.d) : Float32Array.from({ length: (b - a) * w }, () => rng.normal());
      await writeFile(path.join(dir, L.dir, `${String(sh).padStart(5, '0')}.npy`), encodeNpy(data, 'float32', [b - a, w]));
    }
  }
  const lines: string[] = [];
  for (let i = 0; i < s.n; i++) {
    const c = s.y[i];
    lines.push(JSON.stringify({ row: i, path: `${labels[c] ?? 'x'}/${i}.jpg`, label: c >= 0 ? labels[c] : null, label_index: c >= 0 ? c : null, split: o.splits?.[i] ?? null, shard: Math.floor(i / shardRows), shard_row: i % shardRows }));
  }
  await writeFile(path.join(dir, 'index.jsonl'), lines.join('\n') + '\n');
  await writeFile(path.join(dir, 'labels.json'), JSON.stringify(labels));
  await writeFile(path.join(dir, 'errors.jsonl'), '');
  await writeFile(
    path.join(dir, 'meta.json'),
    JSON.stringify({ format: 'xfer-features', format_version: 1, model: { id: o.modelId ?? 'testnet', sha256: o.sha256 ?? 'a'.repeat(64) }, layers, dtype: 'float32', counts: { images: s.n, errors: 0, shards: Math.ceil(s.n / shardRows), rows_per_shard: shardRows }, complete: true }),
  );
  return dir;
}
