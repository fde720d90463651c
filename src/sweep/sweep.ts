/**
 * `xfer sweep`: where to cut a backbone. One extraction pass with every tap (each image decoded and
 * run once), then a probe per (tap, pool, head) — its C (k for knn) chosen by stratified k-fold CV
 * on train, refitted on train and scored on val/test — taps fitted concurrently, each tap's rows
 * loaded once and shared by its pools and heads. Writes sweep.json, sweep.md, sweep.png and the
 * best probe (highest CV accuracy) as a head folder (`best/`) that predict/export use as any other.
 *
 * Pools: several of avg/max/avgmax come from ONE avgmax extraction (its columns are [avg | max]).
 */
import { mkdir, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pLimit from 'p-limit';
import { XferError } from '../errors.js';
import type { CardFlags } from '../model/card-flags.js';
import { resolveBackbone, type ResolvedBackbone } from '../model/registry.js';
import { readOnnxFile } from '../onnx/io.js';
import type { ModelProto } from '../onnx/proto.js';
import { describeLayers, type LayerRow } from '../model/layers.js';
import { resolveTapName, type Pool } from '../model/taps.js';
import { autoTaps } from '../model/auto-taps.js';
import { discoverDataset } from '../image/discover.js';
import { extractFeatures, type ExtractOptions, type ExtractSummary } from '../extract/pipeline.js';
import { loadRows, openFeatures, type FeatureFolder, type FeatureLayer } from '../features/reader.js';
import { headDefaults, HEAD_KINDS, type HeadParams } from '../heads/head.js';
import { parseTransforms, type TransformSpec } from '../heads/transforms.js';
import { defaultGrid, runProbe, type ProbeData, type ProbeResult } from '../heads/probe.js';
import { stratifiedSplit } from '../heads/split.js';
import { saveHead, sourceOf, type TrainedHead } from '../heads/model.js';
import { lineChartSvg, svgToPng, type Series } from '../heads/plots.js';
import type { Matrix } from '../heads/matrix.js';

export const SWEEP_POOLS: readonly Pool[] = ['avg', 'max', 'avgmax'];
export const SWEEP_HEADS = ['linear', 'svm', 'svm-rbf', 'knn'] as const;

export interface SweepOptions {
  /** Backbone (built-in id or path); needed unless `features` is given. */
  model?: string;
  card?: string;
  cardFlags?: CardFlags;
  /** Dataset to extract; or `features`: a feature folder to reuse (no extraction). */
  data?: string;
  features?: string;
  out: string;
  /** 'auto' (from the graph), 'recommended' (the card's), or tap names; default recommended when the card has them, else auto. */
  layers?: 'auto' | 'recommended' | string[];
  pools?: Pool[];
  heads?: string[];
  folds?: number;
  /** Transforms for every probe; default standardize (knn: none). */
  transforms?: string;
  /** Candidates of the head's selected parameter (C, or k for knn); default per head (probe.ts). */
  grid?: number[];
  /** Taps fitted at the same time (default: CPU count, at most 4). */
  concurrency?: number;
  seed?: number;
  /** Extra taps extracted in the same pass but not probed (advise: BatchNorm inputs, classifier output). */
  extraTaps?: string[];
  /** Options passed on to extractFeatures (batch, device, onEvent...). */
  extract?: Partial<Pick<ExtractOptions, 'batch' | 'device' | 'onEvent' | 'signal' | 'overwrite' | 'resume' | 'preprocess' | 'dtype'>>;
  /** Called as each probe finishes. */
  onProbe?: (r: SweepRow, done: number, total: number) => void;
  warn?: (msg: string) => void;
}

export interface SweepRow {
  tap: string;
  depth: number;
  pool: Pool;
  head: string;
  dims: number;
  params: HeadParams;
  /** CV accuracy (mean, std) on train of the selected parameter. */
  cv: { mean: number; std: number; folds: number };
  val: number | null;
  test: number | null;
  /** Seconds of the probe (CV + final fit); loading is counted once per tap in `loadSeconds`. */
  seconds: number;
  points: { value: number; score: number; std: number }[];
}

export interface SweepResult {
  out: string;
  model: { id: string; sha256: string };
  features: string;
  taps: { name: string; depth: number; why: string }[];
  pools: Pool[];
  heads: string[];
  folds: number;
  rows: { train: number; val: number; test: number; valCarved: boolean };
  classes: string[];
  results: SweepRow[];
  best: SweepRow;
  /** The deepest probed tap's best row per (pool, head) order: the "top codes" baseline. */
  last: SweepRow;
  bestHead: string;
  seconds: { extract: number; load: number; probes: number; total: number };
  extract: ExtractSummary | null;
  warnings: string[];
}

interface TapPlan {
  name: string;
  depth: number;
  why: string;
}

/** Layers of a backbone with shapes (probed where the model does not declare them). */
async function modelLayers(spec: string, o: SweepOptions): Promise<{ b: ResolvedBackbone; model: ModelProto; rows: LayerRow[] }> {
  const b = await resolveBackbone(spec, { card: o.card, cardFlags: o.cardFlags });
  const { model } = await readOnnxFile(b.file);
  return { b, model, rows: await describeLayers(model, b.card) };
}

/** Turn --layers into tap names with depths; unknown names fail here, before anything is extracted. */
export function planTaps(model: ModelProto, rows: LayerRow[], card: ResolvedBackbone['card'], layers: SweepOptions['layers'], file: string): TapPlan[] {
  const total = Math.max(1, rows.length - 1);
  const depthOf = (name: string): number => (rows.find((r) => r.name === name)?.index ?? 0) / total;
  const mode = layers ?? (card?.taps?.recommended?.length ? 'recommended' : 'auto');
  if (mode === 'auto') return autoTaps(model, rows).map((t) => ({ name: t.name, depth: t.depth, why: t.why }));
  if (mode === 'recommended') {
    const rec = card?.taps?.recommended ?? [];
    if (rec.length === 0) throw new XferError(`--layers recommended: ${file} has no card with recommended taps`, { hint: 'use --layers auto (taps found from the graph) or a list of tap names' });
    return rec.map((n) => ({ name: n, depth: depthOf(n), why: 'recommended' }));
  }
  const resolved = layers as string[];
  if (resolved.length === 0) throw new XferError('--layers: empty list', { hint: 'use auto, recommended or comma-separated tap names' });
  const names = resolved.map((n) => resolveTapName(n, rows, `--layers (${file})`).name);
  return [...new Set(names)].map((n) => ({ name: n, depth: depthOf(n), why: 'requested' })).sort((a, b) => a.depth - b.depth);
}

function extractionPool(pools: Pool[]): Pool {
  for (const p of pools) if (!SWEEP_POOLS.includes(p)) throw new XferError(`--pool: '${p}' cannot be swept`, { hint: `use ${SWEEP_POOLS.join(', ')} (comma-separated)` });
  return pools.length === 1 ? pools[0] : 'avgmax';
}

/** Columns of `pool` out of a layer extracted with `have` (avgmax = [avg | max]). */
function poolColumns(have: string | null, want: Pool, width: number): [number, number] | null {
  if (have === want) return [0, width];
  if (have === 'avgmax' && (want === 'avg' || want === 'max')) return want === 'avg' ? [0, width / 2] : [width / 2, width];
  return null;
}

function sliceCols(X: Matrix, a: number, b: number): Matrix {
  if (a === 0 && b === X.cols) return X;
  const w = b - a;
  const out = new Float32Array(X.rows * w);
  for (let i = 0; i < X.rows; i++) out.set(X.data.subarray(i * X.cols + a, i * X.cols + b), i * w);
  return { data: out, rows: X.rows, cols: w };
}

export interface SweepSplits {
  order: number[];
  y: Int32Array;
  nTrain: number;
  nVal: number;
  nTest: number;
  classes: number[];
  carved: boolean;
  folds: number;
}

/** Train/val/test rows of a feature folder (val carved from train, 20 % stratified, when absent) and the folds to use. */
export function sweepSplits(f: FeatureFolder, folds: number, seed: number, warn: (m: string) => void): SweepSplits {
  const labelled = f.index.filter((r) => r.label_index !== null && r.label_index !== undefined);
  if (labelled.length === 0) throw new XferError(`${f.dir}: the dataset has no labels`, { hint: 'a sweep needs labelled images: an ImageFolder tree (<class>/<image>) or a list file with labels' });
  let train = labelled.filter((r) => r.split !== 'val' && r.split !== 'test').map((r) => r.row);
  let val = labelled.filter((r) => r.split === 'val').map((r) => r.row);
  const test = labelled.filter((r) => r.split === 'test').map((r) => r.row);
  const labelOf = (row: number): number => f.index[row].label_index as number;
  let carved = false;
  if (val.length === 0 && train.length > 0) {
    const s = stratifiedSplit(train.map(labelOf), 0.2, seed);
    val = s.val.map((i) => train[i]);
    train = s.train.map((i) => train[i]);
    carved = true;
  }
  const classes = [...new Set(train.map(labelOf))].sort((a, b) => a - b);
  if (classes.length < 2) {
    throw new XferError(`${f.dir}: the training images have ${classes.length === 0 ? 'no class' : `a single class ('${f.labels[classes[0]]}')`}`, { hint: 'a probe needs at least two classes with labelled training images' });
  }
  const headIndex = new Map(classes.map((c, i) => [c, i]));
  const order = [...train, ...val, ...test];
  const y = Int32Array.from(order, (r) => headIndex.get(labelOf(r)) ?? -1);
  const counts = new Map<number, number>();
  for (const r of train) counts.set(labelOf(r), (counts.get(labelOf(r)) ?? 0) + 1);
  const fewest = Math.min(...counts.values());
  let k = folds;
  if (fewest < k) {
    const small = [...counts].filter(([, n]) => n < folds).map(([c, n]) => `'${f.labels[c]}' (${n})`).join(', ');
    if (fewest < 2) throw new XferError(`--folds ${folds}: class ${small} has fewer than 2 training images`, { hint: 'k-fold CV needs at least 2 training images per class: add images or remove the class' });
    warn(`--folds ${folds}: class ${small} has fewer training images than folds; using ${fewest} folds`);
    k = fewest;
  }
  return { order, y, nTrain: train.length, nVal: val.length, nTest: test.length, classes, carved, folds: k };
}

const pct = (v: number | null): string => (v === null ? '—' : `${(100 * v).toFixed(1)} %`);

function markdown(r: SweepResult): string {
  const lines = [
    `# xfer sweep: ${r.model.id}`,
    '',
    `Features: \`${r.features}\` — train ${r.rows.train}, val ${r.rows.val}${r.rows.valCarved ? ' (carved from train, 20 % stratified)' : ''}, test ${r.rows.test}; ${r.classes.length} classes; ${r.folds}-fold CV on train chooses each probe's parameter and the best probe.`,
    '',
    `Best: **${r.best.tap}** (depth ${r.best.depth.toFixed(2)}, ${r.best.pool}, ${r.best.head} ${Object.entries(r.best.params).filter(([k]) => k === 'C' || k === 'k').map(([k, v]) => `${k}=${String(v)}`).join(' ')}): CV ${pct(r.best.cv.mean)} ± ${pct(r.best.cv.std)}, val ${pct(r.best.val)}${r.best.test !== null ? `, test ${pct(r.best.test)}` : ''} — saved as \`${r.bestHead}\`.`,
    '',
    '| tap | depth | pool | head | dims | param | CV accuracy ± std | val | test | fit s |',
    '| --- | ---: | --- | --- | ---: | --- | --- | ---: | ---: | ---: |',
  ];
  for (const x of r.results) {
    const param = Object.entries(x.params).filter(([k]) => k === 'C' || k === 'k').map(([k, v]) => `${k}=${String(v)}`).join(' ');
    const star = x === r.best ? ' **best**' : '';
    lines.push(`| \`${x.tap}\`${star} | ${x.depth.toFixed(2)} | ${x.pool} | ${x.head} | ${x.dims} | ${param} | ${pct(x.cv.mean)} ± ${pct(x.cv.std)} | ${pct(x.val)} | ${pct(x.test)} | ${x.seconds.toFixed(2)} |`);
  }
  lines.push('', `Time: extraction ${r.seconds.extract.toFixed(1)} s, loading ${r.seconds.load.toFixed(1)} s, probes ${r.seconds.probes.toFixed(1)} s, total ${r.seconds.total.toFixed(1)} s.`, '');
  if (r.warnings.length) lines.push('Warnings:', '', ...r.warnings.map((w) => `- ${w}`), '');
  return lines.join('\n');
}

/** Accuracy vs depth, one line per (pool, head), CV std as error bars, the best probe's depth marked. */
export function sweepPlotSvg(r: Pick<SweepResult, 'results' | 'best' | 'model'>, title?: string): string {
  const groups = new Map<string, SweepRow[]>();
  for (const x of r.results) {
    const k = `${x.head} / ${x.pool}`;
    if (!groups.has(k)) groups.set(k, []);
    groups.get(k)!.push(x);
  }
  const series: Series[] = [];
  for (const [name, xs] of groups) {
    const s = xs.slice().sort((a, b) => a.depth - b.depth);
    series.push({ name: `${name} (CV)`, x: s.map((x) => x.depth), y: s.map((x) => 100 * x.cv.mean), err: s.map((x) => 100 * x.cv.std) });
    if (s.every((x) => x.val !== null) && groups.size <= 2) series.push({ name: `${name} (val)`, x: s.map((x) => x.depth), y: s.map((x) => 100 * (x.val as number)) });
  }
  return lineChartSvg(series, {
    title: title ?? `${r.model.id}: probe accuracy vs depth (best: ${r.best.tap}, ${(100 * r.best.cv.mean).toFixed(1)} %)`,
    xLabel: 'tap depth (position in the graph, 0 = input, 1 = output)',
    yLabel: 'accuracy (%)',
    mark: r.best.depth,
  });
}

export async function runSweep(o: SweepOptions): Promise<SweepResult> {
  const t0 = performance.now();
  const warnings: string[] = [];
  const warn = (m: string): void => {
    warnings.push(m);
    o.warn?.(m);
  };
  const seed = o.seed ?? 0;
  const pools = o.pools?.length ? [...new Set(o.pools)] : (['avg'] as Pool[]);
  const heads = o.heads?.length ? [...new Set(o.heads)] : ['linear'];
  for (const h of heads) {
    if (!(SWEEP_HEADS as readonly string[]).includes(h)) {
      throw new XferError(`--head: '${h}' cannot be swept`, { hint: `use ${SWEEP_HEADS.join(', ')} (comma-separated)${(HEAD_KINDS as readonly string[]).includes(h) ? `; train ${h} heads with xfer train` : ''}` });
    }
  }
  const folds = o.folds ?? 5;
  if (!Number.isInteger(folds) || folds < 2) throw new XferError(`--folds: must be an integer ≥ 2, got ${folds}`, { hint: 'e.g. --folds 5' });
  // Probes standardise by default (knn: none, its cosine is per row): raw activations of different
  // taps differ in scale by orders of magnitude, and one C grid then fits every tap.
  const specs = (h: string): TransformSpec[] => parseTransforms(o.transforms ?? (h === 'knn' ? 'none' : 'standardize'));
  for (const h of heads) specs(h);
  if (o.grid) for (const h of heads) if (!(defaultGrid(h).param in headDefaults(h))) throw new XferError(`--grid: head ${h} has no parameter ${defaultGrid(h).param}`);
  if (!o.features && !(o.model && o.data)) throw new XferError('xfer sweep: pass --model and --data (or --features <folder> to reuse extracted features)', { hint: 'e.g. xfer sweep --model mobilenet_v2 --data images/ --out sweep/' });

  // --- taps, checked before anything is extracted; data checked (labels, classes) before extraction too
  let plan: TapPlan[];
  let extract: ExtractSummary | null = null;
  let featuresDir: string;
  const tx = performance.now();
  if (o.features) {
    const f = await openFeatures(o.features);
    featuresDir = f.dir;
    let rows: LayerRow[] | null = null;
    let model: ModelProto | null = null;
    const file = f.meta.model.file;
    if (file && (await stat(file).catch(() => null))) {
      model = (await readOnnxFile(file)).model;
      rows = await describeLayers(model, null, { probe: false });
    }
    const have = f.meta.layers.map((l) => l.name);
    const want = o.layers === undefined || o.layers === 'auto' || o.layers === 'recommended' ? have : o.layers;
    const total = rows ? Math.max(1, rows.length - 1) : Math.max(1, have.length - 1);
    plan = want.map((n) => {
      if (!have.includes(n)) {
        const l = f.meta.layers.find((x) => x.dir === n);
        if (!l) throw new XferError(`--layers: '${n}' is not in ${path.join(f.dir, 'meta.json')}`, { hint: `available: ${have.join(', ')}` });
        n = l.name;
      }
      const i = rows ? rows.find((r) => r.name === n)?.index ?? have.indexOf(n) : have.indexOf(n);
      return { name: n, depth: i / total, why: 'in folder' };
    });
    plan.sort((a, b) => a.depth - b.depth);
  } else {
    // The data first: listing it is cheaper than reading and describing the model.
    const ds = await discoverDataset(o.data!);
    const labelled = ds.entries.filter((e) => e.labelIndex !== null);
    if (labelled.length === 0) throw new XferError(`--data ${o.data}: the dataset has no labels`, { hint: 'a sweep needs labelled images: an ImageFolder tree (<class>/<image>) or a list file with labels' });
    if (new Set(labelled.map((e) => e.labelIndex)).size < 2) throw new XferError(`--data ${o.data}: the dataset has a single class ('${ds.labels[0]}')`, { hint: 'a probe needs at least two classes' });
    const { b, model, rows } = await modelLayers(o.model!, o);
    plan = planTaps(model, rows, b.card, o.layers, b.file);
    const extra = (o.extraTaps ?? []).map((n) => resolveTapName(n, rows, b.file).name).filter((n) => !plan.some((p) => p.name === n));
    featuresDir = path.join(o.out, 'features');
    extract = await extractFeatures({
      ...o.extract,
      model: o.model!,
      card: o.card,
      cardFlags: o.cardFlags,
      layers: [...plan.map((p) => p.name), ...extra],
      pool: extractionPool(pools),
      data: o.data!,
      out: featuresDir,
    });
    if (!extract.complete) throw new XferError(`extraction into ${featuresDir} did not complete`, { hint: 'run the sweep again (add --resume to continue the extraction)', exitCode: 1 });
  }
  const extractSeconds = (performance.now() - tx) / 1000;

  const f = await openFeatures(featuresDir);
  const sp = sweepSplits(f, folds, seed, warn);
  const layerOf = (n: string): FeatureLayer => f.meta.layers.find((l) => l.name === n)!;
  for (const p of pools) {
    for (const t of plan) {
      const l = layerOf(t.name);
      if (!poolColumns(l.pool, p, l.shape.reduce((a, b) => a * b, 1))) throw new XferError(`--pool ${p}: ${f.dir} holds ${t.name} pooled '${String(l.pool)}'`, { hint: `sweep it with --pool ${String(l.pool)}, or extract again` });
    }
  }
  const data: Omit<ProbeData, 'X'> = { y: sp.y, nTrain: sp.nTrain, nVal: sp.nVal, nTest: sp.nTest, K: sp.classes.length };
  const total = plan.length * pools.length * heads.length;
  const results: SweepRow[] = [];
  const probes = new Map<SweepRow, ProbeResult>();
  let loadSeconds = 0;
  let done = 0;
  const tp = performance.now();
  const limit = pLimit(Math.max(1, o.concurrency ?? Math.min(os.availableParallelism?.() ?? os.cpus().length, 4)));
  await Promise.all(
    plan.map((t) =>
      limit(async () => {
        const l = layerOf(t.name);
        const tl = performance.now();
        const loaded = await loadRows(f, [l], sp.order);
        loadSeconds += (performance.now() - tl) / 1000;
        const full: Matrix = { data: loaded.X, rows: loaded.n, cols: loaded.d };
        for (const pool of pools) {
          const [a, b] = poolColumns(l.pool, pool, loaded.d)!;
          const X = sliceCols(full, a, b);
          for (const h of heads) {
            const g = defaultGrid(h);
            const res = await runProbe({ ...data, X }, {
              kind: h,
              transforms: specs(h),
              grid: { param: g.param, values: o.grid ?? g.values },
              folds: sp.folds,
              seed,
              labelName: (c) => f.labels[sp.classes[c]],
              warn: (m) => warn(`${t.name}/${pool}/${h}: ${m}`),
            });
            const row: SweepRow = {
              tap: t.name,
              depth: t.depth,
              pool,
              head: h,
              dims: X.cols,
              params: res.params,
              cv: res.cv,
              val: res.val,
              test: res.test,
              seconds: res.seconds,
              points: res.points.map((p) => ({ value: p.value, score: p.score, std: p.std })),
            };
            results.push(row);
            probes.set(row, res);
            o.onProbe?.(row, ++done, total);
          }
        }
      }),
    ),
  );
  const probeSeconds = (performance.now() - tp) / 1000;
  const rank = (x: SweepRow): number => plan.findIndex((p) => p.name === x.tap) * 1000 + pools.indexOf(x.pool) * 10 + heads.indexOf(x.head);
  results.sort((a, b) => rank(a) - rank(b));
  // best: highest CV mean; ties to the earlier (cheaper) tap
  let best = results[0];
  for (const x of results) if (x.cv.mean > best.cv.mean + 1e-12) best = x;
  const lastTap = plan[plan.length - 1].name;
  let last = results.find((x) => x.tap === lastTap)!;
  for (const x of results) if (x.tap === lastTap && x.cv.mean > last.cv.mean + 1e-12) last = x;

  // the best probe as a normal head folder (its layer recorded with the pool it was fitted on)
  const bestDir = path.join(o.out, 'best');
  const pr = probes.get(best)!;
  const l = layerOf(best.tap);
  const src = sourceOf(f, [l], best.dims);
  if (src.layers[0].pool !== best.pool) src.layers[0] = { ...src.layers[0], pool: best.pool, shape: [best.dims] };
  const trained: TrainedHead = { head: pr.head.head, transforms: pr.head.transforms, classLabels: sp.classes.map((c) => f.labels[c]), source: src };
  await saveHead(bestDir, trained);

  const b = f.meta.model;
  const result: SweepResult = {
    out: path.resolve(o.out),
    model: { id: b.id, sha256: b.sha256 },
    features: path.resolve(f.dir),
    taps: plan,
    pools,
    heads,
    folds: sp.folds,
    rows: { train: sp.nTrain, val: sp.nVal, test: sp.nTest, valCarved: sp.carved },
    classes: sp.classes.map((c) => f.labels[c]),
    results,
    best,
    last,
    bestHead: path.resolve(bestDir),
    seconds: { extract: extractSeconds, load: loadSeconds, probes: probeSeconds, total: (performance.now() - t0) / 1000 },
    extract,
    warnings,
  };
  await mkdir(o.out, { recursive: true });
  await writeFile(path.join(o.out, 'sweep.json'), JSON.stringify(result, null, 2) + '\n');
  await writeFile(path.join(o.out, 'sweep.md'), markdown(result));
  try {
    await writeFile(path.join(o.out, 'sweep.png'), svgToPng(sweepPlotSvg(result)));
  } catch (e) {
    warn(`sweep.png not written: ${(e as Error).message}`);
  }
  return result;
}
