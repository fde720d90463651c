/**
 * `xfer plot --features <dir>`: a 2-D map of a feature folder's rows coloured by class, as PNG.
 * PCA (the first two principal components of the centred features, by the same randomised solver as
 * `--transform pca:K`): a linear view, so classes that separate here a linear head will find easily.
 */
import { writeFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { XferError } from '../errors.js';
import { loadRows, openFeatures, pickLayers } from '../features/reader.js';
import { applyTransform, fitTransform } from './transforms.js';
import { scatterSvg, svgToPng } from './plots.js';

export interface FeatureMapOptions {
  features: string;
  layers?: string[];
  /** 'train' | 'val' | 'test' | 'all' (default all). */
  split?: string;
  out: string;
  seed?: number;
}

export interface FeatureMapResult {
  file: string;
  rows: number;
  classes: number;
  /** Share of the total variance the two components explain. */
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
  const k = Math.min(2, X.cols);
  const pca = await fitTransform({ kind: 'pca', k }, X, opts.seed ?? 0);
  const Z = await applyTransform(pca, X);
  const xs = Float32Array.from({ length: Z.rows }, (_, i) => Z.data[i * Z.cols]);
  const ys = Float32Array.from({ length: Z.rows }, (_, i) => (Z.cols > 1 ? Z.data[i * Z.cols + 1] : 0));
  const cls = Int32Array.from(index, (r) => (r.label_index === null || r.label_index === undefined ? -1 : r.label_index));
  const ev = pca.arrays.explained_variance;
  const explained: [number, number] = [total > 0 ? ev[0] / total : 0, total > 0 && ev.length > 1 ? ev[1] / total : 0];
  const pct = (v: number) => `${(100 * v).toFixed(1)}%`;
  const title = `PCA of ${layers.map((l) => l.name).join('+')} (${f.meta.model.id}, ${split === 'all' ? 'all' : split} rows: ${Z.rows})`;
  const svg = scatterSvg(xs, ys, cls, f.labels, { title, xLabel: `PC1 (${pct(explained[0])} of variance)`, yLabel: `PC2 (${pct(explained[1])} of variance)` });
  await mkdir(path.dirname(path.resolve(opts.out)), { recursive: true });
  await writeFile(opts.out, svgToPng(svg));
  return { file: opts.out, rows: Z.rows, classes: new Set(cls).size - (cls.includes(-1) ? 1 : 0), explained };
}
