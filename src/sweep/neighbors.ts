/**
 * `xfer neighbors`: the images nearest to query images by feature (retrieval, near-duplicate
 * search), as a list, JSON, and a contact sheet a person can look at (PNG via sharp, or HTML).
 *
 * Queries are rows of one feature folder (by row number or image path), searched in an index
 * folder (the same one by default; then each query's own row is left out). Both must come from the
 * same backbone and hold the chosen layer with the same pooling. Similarities: the knn head's
 * blocked ORT matmul + top-k (heads/knn.ts).
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { XferError } from '../errors.js';
import { loadRows, openFeatures, type FeatureFolder, type FeatureLayer } from '../features/reader.js';
import { l2Rows, nearest } from '../heads/knn.js';

export interface NeighborsOptions {
  features: string;
  index?: string;
  /** Row numbers (as strings or numbers) or image paths of `features`. */
  queries: (string | number)[];
  k?: number;
  layer?: string;
  metric?: 'cosine' | 'euclidean';
}

export interface Neighbor {
  row: number;
  path: string;
  /** Absolute image path (for the contact sheet). */
  abs: string;
  label: string | null;
  /** Cosine similarity, or euclidean distance. */
  score: number;
}

export interface NeighborsResult {
  features: string;
  index: string;
  layer: string;
  metric: 'cosine' | 'euclidean';
  k: number;
  queries: { row: number; path: string; abs: string; label: string | null; neighbors: Neighbor[] }[];
}

/** Where the folder's images are: index paths are relative to the dataset folder (or the list file's folder). */
function imageRoot(f: FeatureFolder): string {
  const root = f.meta.data.root;
  return f.meta.data.kind === 'list' ? path.dirname(root) : root;
}

function pickLayer(f: FeatureFolder, name: string | undefined, flag: string): FeatureLayer {
  const all = f.meta.layers;
  const l = name === undefined ? all[all.length - 1] : all.find((x) => x.name === name || x.dir === name);
  if (!l) throw new XferError(`${flag}: layer '${name}' is not in ${path.join(f.dir, 'meta.json')}`, { hint: `available: ${all.map((x) => x.name).join(', ')}` });
  return l;
}

function resolveQuery(f: FeatureFolder, q: string | number): number {
  const s = String(q).trim();
  if (/^\d+$/.test(s)) {
    const r = Number(s);
    if (r >= f.index.length) throw new XferError(`query row ${r}: ${f.dir} has rows 0..${f.index.length - 1}`, { hint: 'pass a row number from index.jsonl or an image path' });
    return r;
  }
  const root = imageRoot(f);
  const abs = path.resolve(s);
  const hit = f.index.find((r) => r.path === s || path.resolve(root, r.path) === abs);
  if (!hit) {
    throw new XferError(`query ${s}: not an image of ${f.dir}`, { hint: `extract the query images first (xfer extract --model ${f.meta.model.id} --layers ... --out <q>) and pass --features <q> --index ${f.dir}` });
  }
  return hit.row;
}

export async function findNeighbors(o: NeighborsOptions): Promise<NeighborsResult> {
  const k = o.k ?? 10;
  if (!Number.isInteger(k) || k < 1) throw new XferError(`--k: expected a positive integer, got ${k}`);
  const metric = o.metric ?? 'cosine';
  if (metric !== 'cosine' && metric !== 'euclidean') throw new XferError(`--metric: expected cosine or euclidean, got '${String(metric)}'`);
  if (o.queries.length === 0) throw new XferError('xfer neighbors: no queries', { hint: 'pass row numbers or image paths of the --features folder' });
  const qf = await openFeatures(o.features);
  const same = !o.index || path.resolve(o.index) === path.resolve(o.features);
  const xf = same ? qf : await openFeatures(o.index!);
  const ql = pickLayer(qf, o.layer, '--layer');
  const xl = pickLayer(xf, ql.name, '--index');
  if (qf.meta.model.sha256 !== xf.meta.model.sha256) {
    throw new XferError(`--index ${xf.dir} holds features of ${xf.meta.model.id} (sha256 ${xf.meta.model.sha256.slice(0, 12)}) but --features ${qf.dir} of ${qf.meta.model.id} (sha256 ${qf.meta.model.sha256.slice(0, 12)})`, { hint: 'extract both with the same backbone' });
  }
  if (ql.pool !== xl.pool || ql.shape.join() !== xl.shape.join()) {
    throw new XferError(`--index ${xf.dir}: layer ${xl.name} is pooled '${String(xl.pool)}' [${xl.shape}] but the queries' is '${String(ql.pool)}' [${ql.shape}]`, { hint: 'extract both with the same --layers and --pool' });
  }
  const rows = o.queries.map((q) => resolveQuery(qf, q));
  const nIndex = xf.index.length;
  const kk = Math.min(k + (same ? 1 : 0), nIndex);
  if (kk - (same ? 1 : 0) < 1) throw new XferError(`--index ${xf.dir}: only ${nIndex} row(s), nothing to search`);
  const Q = await loadRows(qf, [ql], rows);
  const I = await loadRows(xf, [xl], Int32Array.from({ length: nIndex }, (_, i) => i));
  const T = metric === 'cosine' ? l2Rows(I.X, I.n, I.d) : I.X;
  const nb = await nearest({ data: Q.X, rows: Q.n, cols: Q.d }, T, I.n, metric, kk);
  const qRoot = imageRoot(qf);
  const xRoot = imageRoot(xf);
  const queries = rows.map((r, qi) => {
    const neighbors: Neighbor[] = [];
    for (let j = 0; j < nb.k && neighbors.length < k; j++) {
      const row = nb.index[qi * nb.k + j];
      if (same && row === r) continue;
      const ir = xf.index[row];
      neighbors.push({ row, path: ir.path, abs: path.resolve(xRoot, ir.path), label: ir.label, score: nb.value[qi * nb.k + j] });
    }
    const q = qf.index[r];
    return { row: r, path: q.path, abs: path.resolve(qRoot, q.path), label: q.label, neighbors };
  });
  return { features: path.resolve(qf.dir), index: path.resolve(xf.dir), layer: ql.name, metric, k, queries };
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** HTML contact sheet: one row per query (query first, outlined), images by file URL. */
export function neighborsHtml(r: NeighborsResult): string {
  const cell = (abs: string, caption: string, query: boolean): string =>
    `<figure${query ? ' class="q"' : ''}><img src="${esc(new URL(`file://${abs}`).href)}" loading="lazy"><figcaption>${esc(caption)}</figcaption></figure>`;
  const rows = r.queries.map((q) => `<div class="row">${cell(q.abs, `query: ${q.label ?? q.path}`, true)}${q.neighbors.map((n, i) => cell(n.abs, `${i + 1}. ${n.label ?? ''} ${n.score.toFixed(3)}`, false)).join('')}</div>`);
  return `<!doctype html><meta charset="utf-8"><title>xfer neighbors</title>
<style>body{font:12px sans-serif}.row{display:flex;gap:6px;margin:8px 0}figure{margin:0;width:128px}img{width:128px;height:128px;object-fit:cover}figcaption{overflow:hidden;white-space:nowrap}.q img{outline:3px solid #d62728}</style>
<h3>${esc(`${r.layer} (${r.metric}), ${r.k} nearest in ${r.index}`)}</h3>
${rows.join('\n')}
`;
}

/** PNG contact sheet (sharp composite): one row per query, the query outlined in red, labels and scores under each thumbnail. */
export async function neighborsPng(r: NeighborsResult, file: string, thumb = 112): Promise<void> {
  const { default: sharp } = await import('sharp');
  const pad = 6;
  const capH = 16;
  const cols = 1 + Math.max(...r.queries.map((q) => q.neighbors.length));
  const W = pad + cols * (thumb + pad);
  const rowH = thumb + capH + pad;
  const H = pad + r.queries.length * rowH;
  const layers: { input: Buffer; left: number; top: number }[] = [];
  const texts: string[] = [];
  const tile = async (abs: string): Promise<Buffer> => {
    try {
      return await sharp(abs).rotate().resize(thumb, thumb, { fit: 'cover' }).removeAlpha().png().toBuffer();
    } catch {
      return sharp({ create: { width: thumb, height: thumb, channels: 3, background: '#ccc' } }).png().toBuffer();
    }
  };
  for (let qi = 0; qi < r.queries.length; qi++) {
    const q = r.queries[qi];
    const top = pad + qi * rowH;
    const items = [{ abs: q.abs, cap: `query ${q.label ?? ''}` }, ...q.neighbors.map((n) => ({ abs: n.abs, cap: `${n.label ?? ''} ${n.score.toFixed(2)}` }))];
    for (let i = 0; i < items.length; i++) {
      const left = pad + i * (thumb + pad);
      layers.push({ input: await tile(items[i].abs), left, top });
      texts.push(`<text x="${left + thumb / 2}" y="${top + thumb + 12}" font-size="11" text-anchor="middle">${esc(items[i].cap.slice(0, 20))}</text>`);
      if (i === 0) texts.push(`<rect x="${left - 2}" y="${top - 2}" width="${thumb + 4}" height="${thumb + 4}" fill="none" stroke="#d62728" stroke-width="3"/>`);
    }
  }
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="DejaVu Sans, Liberation Sans, Arial, sans-serif">${texts.join('')}</svg>`;
  layers.push({ input: Buffer.from(svg), left: 0, top: 0 });
  const png = await sharp({ create: { width: W, height: H, channels: 3, background: '#ffffff' } }).composite(layers).png().toBuffer();
  await writeFile(file, png);
}
