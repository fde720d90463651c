/**
 * The trainer: feature folder → (sweep) → transforms + head → head folder with report.
 *
 * Rows are loaded ONCE into one float32 matrix ordered [train | val | test], so every split is a
 * view. Transforms are fitted on the final training rows and applied in place. Copies are made only
 * where unavoidable and visible: sweeps copy each fold's rows (so each fold fits its own transforms).
 *
 * Splits: the folder's own train/val/test if present; otherwise a stratified seeded split (`val`,
 * default 0.2 when no `folds`).
 *
 * Selection and refit (recorded in report.selection and printed):
 * - sweep, folder with a test split (and val), no `folds`: score each candidate on val; refit the
 *   best on train+val (default) and report test.
 * - sweep otherwise (or with `folds`): k-fold CV on train (k = `folds`, default 5); refit on train
 *   (default), so val stays an untouched hold-out.
 * - no sweep but `folds`: k-fold cross-validated accuracy of the given parameters on train (mean ±
 *   std in report.cv), then the final head is fitted on all training rows.
 * `refit: 'train' | 'train+val'` overrides which rows the final head is fitted on; val is reported
 * only when the final head never saw it.
 */
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { XferError } from '../errors.js';
import { isLockEntry, withFolderLock } from '../util/lock.js';
import { loadRows, openFeatures, pickLayers, type FeatureFolder } from '../features/reader.js';
import { createHead, defaultSweepFor, defaultTransformsFor, headDefaults, type FitContext, type FitEvent, type Head, type HeadParams } from './head.js';
import './linear.js';
import './svm-linear.js';
import './svm-kernel.js';
import './mlp.js';
import './knn.js';
import { rowView, takeRows, type Matrix } from './matrix.js';
import { computeMetrics, type Metrics } from './metrics.js';
import { checkCompatible, loadHead, saveHead, sourceOf, transformFor, type TrainedHead } from './model.js';
import { writeReport, type Report } from './report.js';
import { replaceFolder } from '../util/atomic.js';
import { REFIT_CHOICES, stratifiedFolds, stratifiedSplit, type RefitRows } from './split.js';
import { bestPoint, gridName, gridPoints, parseSweeps, type SweepGrid, type SweepPoint, type SweepSpec } from './sweep.js';
import { applyTransform, fitApplyChain, fitTransform, parseTransforms, type TransformSpec, type TransformState } from './transforms.js';

export interface TrainOptions {
  features: string;
  layers?: string[];
  head: string;
  params?: HeadParams;
  /** Transform list or string (`standardize,pca:64`, `none`); default depends on the head. */
  transforms?: TransformSpec[] | string;
  /**
   * Model selection: a spec (`C=1e-4..1e4`), several (a grid: every combination), `true` for the
   * head's default grid, or an already parsed one.
   */
  sweep?: string | readonly string[] | true | SweepSpec | SweepGrid;
  /** Carve this fraction of train as val when the folder has none (default: no carve, except 0.2 for a sweep scored on val). */
  val?: number;
  folds?: number;
  /** Rows the final head is fitted on; default train+val after a sweep on the validation split, else train. */
  refit?: RefitRows;
  seed?: number;
  out: string;
  /** Replace an existing `out` folder (atomically, once the new head is complete); without it an existing one is refused. */
  force?: boolean;
  /** Progress events (fit iterations/epochs, sweep candidates and CV folds as they finish). */
  progress?: (e: TrainEvent) => void;
  warn?: (msg: string) => void;
}

export { REFIT_CHOICES, type RefitRows } from './split.js';

/** One progress event: `fit` = an iteration/epoch of some fit, `candidate` = one sweep value scored on one fold, `fold` = one CV fold scored. */
export type TrainEvent =
  | ({ event: 'fit'; stage: string } & FitEvent)
  | { event: 'candidate'; stage: 'sweep'; param: string; value: number; values: Record<string, number>; fold: number; folds: number; valAcc: number; seconds: number }
  | { event: 'fold'; stage: 'cv'; fold: number; folds: number; valAcc: number; seconds: number };

export interface TrainResult {
  dir: string;
  report: Report;
  trained: TrainedHead;
}

function describe(t: TransformState | TransformSpec): string {
  return t.kind === 'pca' ? `pca:${t.k}` : t.kind;
}

function accuracy(pred: Int32Array, y: Int32Array): number {
  let c = 0;
  for (let i = 0; i < y.length; i++) if (pred[i] === y[i]) c++;
  return y.length ? c / y.length : 0;
}

/** Train a head into `opts.out`, holding the folder's lock (util/lock.ts) for the whole run. */
export async function trainHead(opts: TrainOptions): Promise<TrainResult> {
  return withFolderLock(opts.out, 'xfer train', () => trainUnlocked(opts));
}

async function trainUnlocked(opts: TrainOptions): Promise<TrainResult> {
  const t0 = performance.now();
  const warnings: string[] = [];
  const warn = (m: string): void => {
    warnings.push(m);
    opts.warn?.(m);
  };
  const seed = opts.seed ?? 0;
  const kind = opts.head;
  const params: HeadParams = { ...(opts.params ?? {}) };
  createHead(kind, params); // validate kind and params early
  const specs = typeof opts.transforms === 'string' ? parseTransforms(opts.transforms) : opts.transforms ?? parseTransforms(defaultTransformsFor(kind));
  const sweep = toGrid(opts.sweep, kind);
  for (const a of sweep?.axes ?? []) {
    if (!(a.param in headDefaults(kind))) {
      throw new XferError(`--sweep: head ${kind} has no parameter '${a.param}'`, { hint: `sweepable: ${Object.entries(headDefaults(kind)).filter(([, v]) => typeof v === 'number').map(([k]) => k).join(', ')}` });
    }
  }
  if (opts.refit !== undefined && !REFIT_CHOICES.includes(opts.refit)) {
    throw new XferError(`--refit: expected ${REFIT_CHOICES.join(' or ')}, got '${String(opts.refit)}'`, { hint: 'train: the final head sees the training rows only (val stays a hold-out); train+val: it sees both' });
  }
  await refuseExistingOut(opts.out, opts.force === true);
  const f = await openFeatures(opts.features);
  const layers = pickLayers(f, opts.layers);

  // --- splits
  const labelled = f.index.filter((r) => r.label_index !== null && r.label_index !== undefined);
  if (labelled.length === 0) throw new XferError(`--features ${f.dir}: no labelled rows in index.jsonl`, { hint: 'training needs labels (an imagefolder dataset or a list file with labels)' });
  let train = labelled.filter((r) => r.split !== 'val' && r.split !== 'test').map((r) => r.row);
  let val = labelled.filter((r) => r.split === 'val').map((r) => r.row);
  const test = labelled.filter((r) => r.split === 'test').map((r) => r.row);
  const labelOf = (row: number): number => f.index[row].label_index as number;
  let carved = false;
  // Without a sweep nothing needs a validation split: the head is fitted on every training row (as
  // scikit-learn's fit(X_train)) unless --val asks for a hold-out. A sweep scored on val carves 0.2.
  const hasTest = labelled.some((r) => r.split === 'test');
  if (val.length === 0 && (opts.val !== undefined || (!!sweep && !opts.folds && hasTest))) {
    const frac = opts.val ?? 0.2;
    const s = stratifiedSplit(train.map(labelOf), frac, seed);
    val = s.val.map((i) => train[i]);
    train = s.train.map((i) => train[i]);
    carved = true;
  }
  if (train.length === 0) throw new XferError(`--features ${f.dir}: no training rows`, { hint: 'the folder has only val/test rows; train on a folder with a train split' });
  const classes = [...new Set(train.map(labelOf))].sort((a, b) => a - b);
  if (classes.length < 2) {
    throw new XferError(`--features ${f.dir}: the training rows have a single class ('${f.labels[classes[0]]}')`, { hint: 'a classifier needs at least two classes with labelled training rows' });
  }
  const headIndex = new Map(classes.map((c, i) => [c, i]));
  const trainMissing = [...new Set([...val, ...test].map(labelOf))].filter((c) => !headIndex.has(c));
  if (trainMissing.length) warn(`labels with no training rows (cannot be predicted): ${trainMissing.map((c) => f.labels[c]).join(', ')}`);

  // --- load once, ordered [train | val | test]
  const order = [...train, ...val, ...test];
  const loaded = await loadRows(f, layers, order);
  const nTr = train.length;
  const nVa = val.length;
  const nTe = test.length;
  let X: Matrix = { data: loaded.X, rows: loaded.n, cols: loaded.d };
  const yGlobal = Int32Array.from(order, labelOf);
  const yHead = Int32Array.from(yGlobal, (c) => headIndex.get(c) ?? -1);
  const K = classes.length;
  const progress = (stage: string) => (e: FitEvent) => opts.progress?.({ event: 'fit', stage, ...e });

  // --- model selection (sweep) or cross-validated evaluation, then which rows the final head sees
  const useVal = !!sweep && !opts.folds && nTe > 0 && nVa > 0;
  const refit: RefitRows = opts.refit ?? (useVal ? 'train+val' : 'train');
  const finalRows = refit === 'train+val' ? nTr + nVa : nTr;
  let sweepReport: Report['sweep'];
  let cvReport: Report['cv'];
  let method = 'none (fixed parameters)';
  const foldsFrom = opts.folds ? `--folds ${opts.folds}` : `the sweep's default 5-fold CV`;

  /** Fit every candidate on (Xtr, ytr) with transforms fitted on Xtr only; return accuracies on Xva. */
  // Candidates are fitted in grid order, each starting from its neighbour's solution (warm start:
  // the same optimum, fewer iterations, as LogisticRegressionCV along its Cs).
  const scoreCandidates = async (cands: HeadParams[], Xtr: Matrix, ytr: Int32Array, Xva: Matrix, yva: Int32Array, fold: number, folds: number, done: (i: number, acc: number, seconds: number) => void): Promise<void> => {
    const { train: tr, others } = await fitApplyChain(specs, Xtr, [Xva], seed);
    const keep = Int32Array.from(yva.keys()).filter((i) => yva[i] >= 0);
    let prev: Head | undefined;
    for (let c = 0; c < cands.length; c++) {
      const ts = performance.now();
      const h = createHead(kind, cands[c]);
      const label = sweep ? `sweep ${sweep.axes.map((a) => `${a.param}=${String(cands[c][a.param])}`).join(' ')} fold ${fold + 1}/${folds}` : `cv fold ${fold + 1}/${folds}`;
      await h.fit(tr, ytr, K, { progress: progress(label), warmStart: prev });
      prev = h;
      const pred = await h.predict(others[0]);
      done(c, accuracy(keep.map((i) => pred[i]) as Int32Array, keep.map((i) => yva[i]) as Int32Array), (performance.now() - ts) / 1000);
    }
  };
  /** Stratified k-fold over the training rows; each fold's rows are copied (its own transforms). */
  const kFold = async (cands: HeadParams[], folds: number, done: (i: number, fold: number, acc: number, seconds: number) => void): Promise<void> => {
    const yTr = yHead.subarray(0, nTr);
    const fold = stratifiedFolds(yTr, folds, seed, (c) => f.labels[classes[c]], foldsFrom);
    for (let k = 0; k < folds; k++) {
      const tri: number[] = [];
      const vai: number[] = [];
      for (let i = 0; i < nTr; i++) (fold[i] === k ? vai : tri).push(i);
      await scoreCandidates(cands, takeRows(X, tri), Int32Array.from(tri, (i) => yTr[i]), takeRows(X, vai), Int32Array.from(vai, (i) => yTr[i]), k, folds, (c, acc, sec) => done(c, k, acc, sec));
    }
  };
  const meanStd = (v: number[]): { mean: number; std: number } => {
    const mean = v.reduce((a, b) => a + b, 0) / v.length;
    return { mean, std: Math.sqrt(v.reduce((a, b) => a + (b - mean) ** 2, 0) / v.length) };
  };

  if (sweep) {
    const folds = useVal ? 0 : opts.folds ?? 5;
    const name = gridName(sweep);
    const first = sweep.axes[0].param;
    const points: SweepPoint[] = gridPoints(sweep).map((values) => ({ value: values[first], values, score: 0, scores: [], std: 0, seconds: 0 }));
    const cands = points.map((p) => ({ ...params, ...p.values }));
    const done = (c: number, fold: number, acc: number, seconds: number): void => {
      points[c].scores.push(acc);
      points[c].seconds += seconds;
      opts.progress?.({ event: 'candidate', stage: 'sweep', param: name, value: points[c].value, values: points[c].values, fold: fold + 1, folds: Math.max(1, folds), valAcc: acc, seconds });
    };
    if (useVal) {
      // one copy of train+val so the sweep's transforms are fitted on train only
      const block = takeRows(X, Int32Array.from({ length: nTr + nVa }, (_, i) => i));
      await scoreCandidates(cands, rowView(block, 0, nTr), yHead.subarray(0, nTr), rowView(block, nTr, nTr + nVa), yHead.subarray(nTr, nTr + nVa), 0, 1, (c, acc, sec) => done(c, 0, acc, sec));
    } else {
      await kFold(cands, folds, done);
    }
    for (const p of points) {
      const ms = meanStd(p.scores);
      p.score = ms.mean;
      p.std = ms.std;
    }
    const best = bestPoint(points);
    Object.assign(params, best.values);
    const mode = useVal ? 'validation split' : `${folds}-fold CV`;
    const grid = Object.fromEntries(sweep.axes.map((a) => [a.param, a.values]));
    sweepReport = { param: name, params: sweep.axes.map((a) => a.param), grid, mode, folds: useVal ? undefined : folds, points, best: best.value, bestValues: best.values, seconds: points.reduce((a, p) => a + p.seconds, 0) };
    const what = sweep.axes.length > 1 ? `grid ${sweep.axes.map((a) => `${a.param} (${a.values.length})`).join(' × ')} = ${points.length} points` : `sweep over ${name}`;
    method = useVal ? `${what}: best mean accuracy on val (${nVa} rows)` : `${what}: best mean accuracy in ${folds}-fold CV on train (${nTr} rows)`;
  } else if (opts.folds) {
    const folds = opts.folds;
    const scores: number[] = [];
    await kFold([params], folds, (_c, fold, acc, seconds) => {
      scores.push(acc);
      opts.progress?.({ event: 'fold', stage: 'cv', fold: fold + 1, folds, valAcc: acc, seconds });
    });
    const ms = meanStd(scores);
    cvReport = { folds, scores, mean: ms.mean, std: ms.std, rows: nTr };
    method = `none (fixed parameters); ${folds}-fold CV on train (${nTr} rows) estimates accuracy`;
  }
  if (!sweep && !opts.folds && nVa === 0) method = `none (fixed parameters); all ${nTr} training rows fitted, no validation split carved (--val 0.2 holds one out)`;
  const holdout =
    nVa === 0 || finalRows > nTr
      ? nTe > 0
        ? `test (${nTe} rows) is the hold-out`
        : undefined
      : useVal
        ? `val (${nVa} rows) selected the parameters but the final head was not fitted on it`
        : `val (${nVa} rows) is a hold-out the final head never saw`;
  const selection: Report['selection'] = {
    method,
    refit,
    refitDefault: opts.refit === undefined,
    fitRows: finalRows,
    fitOn: refit === 'train+val' && nVa > 0 ? `train+val (${nTr} + ${nVa} rows)` : `train (${nTr} rows)`,
    ...(holdout ? { holdout } : {}),
  };

  // --- final fit: transforms on the final training rows, applied in place to every row
  const states: TransformState[] = [];
  for (const s of specs) {
    const st = await fitTransform(s, rowView(X, 0, finalRows), seed);
    states.push(st);
    X = await applyTransform(st, X);
  }
  const head = createHead(kind, params);
  const ctx: FitContext = { progress: progress('fit'), warn };
  const tf = performance.now();
  await head.fit(rowView(X, 0, finalRows), yHead.subarray(0, finalRows), K, ctx);
  const fitSeconds = (performance.now() - tf) / 1000;

  const trained: TrainedHead = { head, transforms: states, classLabels: classes.map((c) => f.labels[c]), source: sourceOf(f, layers, loaded.d) };
  const metrics: Record<string, Metrics> = {};
  const evalPart = async (name: string, a: number, b: number): Promise<void> => {
    if (b <= a) return;
    const P = await head.predictProba(rowView(X, a, b));
    metrics[name] = computeMetrics(yGlobal.subarray(a, b), P, K, classes, f.labels, head.probabilistic);
  };
  await evalPart('train', 0, finalRows);
  if (finalRows === nTr) await evalPart('val', nTr, nTr + nVa);
  await evalPart('test', nTr + nVa, nTr + nVa + nTe);

  const report: Report = {
    command: 'train',
    head: path.resolve(opts.out),
    kind,
    params: head.params,
    features: path.resolve(f.dir),
    layers: layers.map((l) => l.name),
    model: { id: f.meta.model.id, sha256: f.meta.model.sha256 },
    transforms: states.map(describe),
    rows: { train: nTr, val: nVa, test: nTe, fit: finalRows, ...(carved ? { val_carved_seed: seed } : {}) },
    selection,
    sweep: sweepReport,
    ...(cvReport ? { cv: cvReport } : {}),
    metrics,
    fit: { ...head.info, history: undefined, seconds: fitSeconds },
    seconds: (performance.now() - t0) / 1000,
    warnings,
    plots: [],
  };
  const history = (head.info.history as { epoch: number; loss: number; valLoss?: number; valAcc?: number }[] | undefined) ?? undefined;
  // The head and its report are written to a staging folder and renamed over --out only when complete.
  await replaceFolder(opts.out, async (staging) => {
    await saveHead(staging, trained);
    await writeReport(staging, report, history);
  }, { carry: isLockEntry });
  return { dir: opts.out, report, trained };
}

function toGrid(s: TrainOptions['sweep'], kind: string): SweepGrid | undefined {
  if (s === undefined) return undefined;
  if (s === true || typeof s === 'string' || Array.isArray(s)) return parseSweeps(s as string | string[] | true, defaultSweepFor(kind), kind);
  return 'axes' in (s as object) ? (s as SweepGrid) : { axes: [s as SweepSpec] };
}

/** An existing, non-empty --out is refused unless `force` (a stale file of an older head must never survive beside a new one). */
export async function refuseExistingOut(out: string, force: boolean): Promise<void> {
  let entries: string[];
  try {
    // This run's own lock (util/lock.ts) is already inside --out: it is not a previous head's file.
    entries = (await readdir(out)).filter((f) => !isLockEntry(f));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return;
    if (code === 'ENOTDIR') throw new XferError(`--out ${out}: exists and is not a folder`, { hint: 'choose another --out' });
    throw e;
  }
  if (entries.length > 0 && !force) {
    throw new XferError(`--out ${out}: folder exists (${entries.includes('head.json') ? 'a head' : `${entries.length} entries`})`, { hint: 'pass --force to replace it (the old folder is removed once the new head is complete), or choose another --out' });
  }
}

export interface EvalOptions {
  head: string;
  features: string;
  layers?: string[];
  /** 'train' | 'val' | 'test' | 'all'; default test if present, else val, else all labelled rows. */
  split?: string;
  out?: string;
}

export interface EvalResult {
  report: Report;
  metrics: Metrics;
  dir: string;
  /** `misclassified.html` in `dir`: the misclassified images with true/predicted labels and confidence. */
  misclassifiedPage: string;
}

export async function evalHead(opts: EvalOptions): Promise<EvalResult> {
  const t0 = performance.now();
  const trained = await loadHead(opts.head);
  const f: FeatureFolder = await openFeatures(opts.features);
  const layers = pickLayers(f, opts.layers ?? (f.meta.layers.length > 1 ? trained.source.layers.map((l) => l.name).filter((n) => f.meta.layers.some((l) => l.name === n)) : undefined));
  checkCompatible(trained, f, layers, opts.head);
  const labelled = f.index.filter((r) => r.label_index !== null && r.label_index !== undefined);
  const has = (s: string): boolean => labelled.some((r) => r.split === s);
  const split = opts.split ?? (has('test') ? 'test' : has('val') ? 'val' : 'all');
  if (!['train', 'val', 'test', 'all'].includes(split)) throw new XferError(`--split: unknown split '${split}'`, { hint: 'use train, val, test or all' });
  const rows = labelled.filter((r) => split === 'all' || r.split === split).map((r) => r.row);
  if (rows.length === 0) throw new XferError(`--split ${split}: ${f.dir} has no labelled rows in that split`, { hint: `splits present: ${[...new Set(labelled.map((r) => r.split ?? 'none'))].join(', ')}` });
  const loaded = await loadRows(f, layers, rows);
  const X = await transformFor(trained, { data: loaded.X, rows: loaded.n, cols: loaded.d });
  const labels = [...f.labels];
  const headToLabel = trained.classLabels.map((name) => {
    let i = labels.indexOf(name);
    if (i < 0) i = labels.push(name) - 1;
    return i;
  });
  const y = Int32Array.from(rows, (r) => f.index[r].label_index as number);
  const P = await trained.head.predictProba(X);
  const metrics = computeMetrics(y, P, trained.head.nClasses, headToLabel, labels, trained.head.probabilistic);
  const warnings: string[] = [];
  const unseen = Object.entries(metrics.unseen);
  if (unseen.length) warnings.push(`labels the head never saw: ${unseen.map(([k, v]) => `${k} (${v} rows)`).join(', ')} — counted as errors`);
  const out = opts.out ?? path.join(opts.head, `eval-${split}`);
  const report: Report = {
    command: 'eval',
    head: path.resolve(opts.head),
    kind: trained.head.kind,
    params: trained.head.params,
    features: path.resolve(f.dir),
    layers: layers.map((l) => l.name),
    model: { id: f.meta.model.id, sha256: f.meta.model.sha256 },
    transforms: trained.transforms.map(describe),
    rows: { [split]: rows.length },
    metrics: { [split]: metrics },
    seconds: (performance.now() - t0) / 1000,
    warnings,
    plots: [],
  };
  await writeReport(out, report);
  const page = await writeMisclassified(out, split, f, rows, y, P, trained.head.nClasses, headToLabel, labels, trained.head.probabilistic, report.plots);
  return { report, metrics, dir: out, misclassifiedPage: page };
}

/** The misclassified rows of an eval as a page beside its confusion matrix (heads/misclassified.ts). */
async function writeMisclassified(out: string, split: string, f: FeatureFolder, rows: number[], y: Int32Array, P: Float32Array, K: number, headToLabel: number[], labels: string[], probabilistic: boolean, plots: string[]): Promise<string> {
  const { writeMisclassifiedPage } = await import('./misclassified.js');
  const root = f.meta.data?.root;
  const misses = [];
  for (let i = 0; i < rows.length; i++) {
    let best = 0;
    for (let c = 1; c < K; c++) if (P[i * K + c] > P[i * K + best]) best = c;
    if (headToLabel[best] === y[i]) continue;
    const entry = f.index[rows[i]];
    misses.push({ path: entry.path, file: root ? path.resolve(root, entry.path) : entry.path, truth: labels[y[i]], predicted: labels[headToLabel[best]], confidence: P[i * K + best] });
  }
  const confusion = plots.find((p) => p === `confusion-${split}.png`) ?? null;
  return writeMisclassifiedPage(out, { split, total: rows.length, confidenceKind: probabilistic ? 'probability' : 'softmax of scores', confusionPng: confusion, misses });
}
