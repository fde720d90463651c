/**
 * `xfer plot --features <dir>`: a 2-D map of a feature folder's rows coloured by class, as PNG.
 * PCA (the first two principal components of the centred features, by the same randomised solver as
 * `--transform pca:K`): a linear view, so classes that separate here a linear head will find easily.
 * UMAP (umap-js, PAIR-code's implementation, seeded): a non-linear view of neighbourhoods, computed
 * on the first 50 principal components (as UMAP's authors suggest for wide features), loaded only
 * when asked for.
 */
import { createRequire } from 'node:module';
import { writeFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { XferError } from '../errors.js';
import { loadRows, openFeatures, pickLayers } from '../features/reader.js';
import { applyTransform, fitTransform } from './transforms.js';
import { scatterSvg, svgToPng } from './plots.js';
import { Rng } from './rng.js';

export const FEATURE_MAP_METHODS = ['pca', 'umap'] as const;
export type FeatureMapMethod = (typeof FEATURE_MAP_METHODS)[number];

export interface FeatureMapOptions {
  features: string;
  layers?: string[];
  /** 'train' | 'val' | 'test' | 'all' (default all). */
  split?: string;
  out: string;
  /** 'pca' (default) or 'umap'. */
  method?: FeatureMapMethod;
  seed?: number;
}

export interface FeatureMapResult {
  file: string;
  rows: number;
  classes: number;
  method: FeatureMapMethod;
  /** PCA: share of the total variance the two components explain. */
  explained: [number, number];
}

export async function plotFeatureMap(opts: FeatureMapOptions): Promise<FeatureMapResult> {
  const f = await openFeatures(opts.features);
  const layers = pickLayers(f, opts.layers);
  const split = opts.split ?? 'all';
  if (!['train', 'val', 'test', 'all'].includes(split)) throw new XferError(`--split: unknown split '${split}'`, { hint: 'use train, val, test or all' });
  const index = f.index.filter((r) => split === 'all' || r.split === split);
  if (index.length < 3) throw new XferError(`--features ${f.dir}: ${index.length} row(s) in split ${split}; a 2-D map needs at least 3`, { hint: 'pass another --split, or extract more images' });
  const loaded = await loadRows(f, layers, index.map((r) => r.row));
  const X = { data: loaded.X, rows: loaded.n, cols: loaded.d };
  // Total variance, for the explained share (the PCA state keeps the components' variances).
  let total = 0;
  for (let j = 0; j < X.cols; j++) {
    let s = 0;
    let s2 = 0;
    for (let i = 0; i < X.rows; i++) {
      const v = X.data[i * X.cols + j];
      s += v;
      s2 += v * v;
    }
    total += (s2 - (s * s) / X.rows) / Math.max(1, X.rows - 1);
  }
  const method = opts.method ?? 'pca';
  if (!FEATURE_MAP_METHODS.includes(method)) throw new XferError(`--method: unknown method '${String(method)}'`, { hint: `use ${FEATURE_MAP_METHODS.join(' or ')}` });
  const seed = opts.seed ?? 0;
  const k = Math.min(method === 'umap' ? 50 : 2, X.cols, X.rows);
  const pca = await fitTransform({ kind: 'pca', k }, X, seed);
  const Z = await applyTransform(pca, X);
  let xs = Float32Array.from({ length: Z.rows }, (_, i) => Z.data[i * Z.cols]);
  let ys = Float32Array.from({ length: Z.rows }, (_, i) => (Z.cols > 1 ? Z.data[i * Z.cols + 1] : 0));
  if (method === 'umap') {
    const { UMAP } = createRequire(import.meta.url)('umap-js') as typeof import('umap-js');
    const rng = new Rng(seed);
    const rows = Array.from({ length: Z.rows }, (_, i) => Array.from(Z.data.subarray(i * Z.cols, (i + 1) * Z.cols)));
    const emb = new UMAP({ nComponents: 2, nNeighbors: Math.max(2, Math.min(15, Z.rows - 1)), minDist: 0.1, random: () => rng.next() }).fit(rows);
    xs = Float32Array.from(emb, (p) => p[0]);
    ys = Float32Array.from(emb, (p) => p[1]);
  }
  const cls = Int32Array.from(index, (r) => (r.label_index === null || r.label_index === undefined ? -1 : r.label_index));
  const ev = pca.arrays.explained_variance;
  const explained: [number, number] = [total > 0 ? ev[0] / total : 0, total > 0 && ev.length > 1 ? ev[1] / total : 0];
  const pct = (v: number) => `${(100 * v).toFixed(1)}%`;
  const what = `${layers.map((l) => l.name).join('+')} (${f.meta.model.id}, ${split === 'all' ? 'all' : split} rows: ${Z.rows})`;
  const svg =
    method === 'pca'
      ? scatterSvg(xs, ys, cls, f.labels, { title: `PCA of ${what}`, xLabel: `PC1 (${pct(explained[0])} of variance)`, yLabel: `PC2 (${pct(explained[1])} of variance)` })
      : scatterSvg(xs, ys, cls, f.labels, { title: `UMAP of ${what}`, xLabel: `UMAP 1 (of the first ${k} principal components)`, yLabel: 'UMAP 2' });
  await mkdir(path.dirname(path.resolve(opts.out)), { recursive: true });
  await writeFile(opts.out, svgToPng(svg));
  return { file: opts.out, rows: Z.rows, classes: new Set(cls).size - (cls.includes(-1) ? 1 : 0), method, explained };
}
