/**
 * One probe on rows already in memory: a head kind, its parameter chosen by stratified k-fold CV on
 * the training rows, refitted on all of them and scored on val/test. `xfer sweep` runs one per
 * (tap, pool, head) and `xfer advise` its learning curves; the matrix is never modified (each fold
 * and the final fit transform their own copies), so many probes can share one loaded matrix.
 */
import { createHead, type HeadParams } from './head.js';
import './linear.js';
import './svm-linear.js';
import './svm-kernel.js';
import './mlp.js';
import './knn.js';
import { rowView, takeRows, type Matrix } from './matrix.js';
import { stratifiedFolds } from './split.js';
import { bestPoint, type SweepPoint } from './sweep.js';
import { fitApplyChain, type TransformSpec, type TransformState } from './transforms.js';
import type { TrainedHead } from './model.js';

/** Rows ordered [train | val | test]; y in head class indices 0..K-1 (-1: a class the head never saw). */
export interface ProbeData {
  X: Matrix;
  y: Int32Array;
  nTrain: number;
  nVal: number;
  nTest: number;
  K: number;
}

export interface ProbeOptions {
  kind: string;
  params?: HeadParams;
  transforms: TransformSpec[];
  /** Parameter chosen by CV (e.g. C, or k for knn) and its candidates; one candidate = no selection. */
  grid: { param: string; values: number[] };
  folds: number;
  seed?: number;
  /** Use only these training rows (positions in [0, nTrain)): learning curves. */
  trainSubset?: number[];
  labelName?: (c: number) => string;
  warn?: (msg: string) => void;
}

export interface ProbeResult {
  kind: string;
  params: HeadParams;
  points: SweepPoint[];
  /** Mean ± std CV accuracy of the chosen value. */
  cv: { mean: number; std: number; folds: number };
  val: number | null;
  test: number | null;
  trainRows: number;
  /** Seconds for the whole probe (CV and final fit). */
  seconds: number;
  head: Pick<TrainedHead, 'head' | 'transforms'>;
}

function accuracy(pred: Int32Array, y: Int32Array): number {
  let c = 0;
  let n = 0;
  for (let i = 0; i < y.length; i++) {
    if (y[i] < 0) continue;
    n++;
    if (pred[i] === y[i]) c++;
  }
  return n ? c / n : 0;
}

function meanStd(v: number[]): { mean: number; std: number } {
  const mean = v.reduce((a, b) => a + b, 0) / Math.max(1, v.length);
  return { mean, std: Math.sqrt(v.reduce((a, b) => a + (b - mean) ** 2, 0) / Math.max(1, v.length)) };
}

/** Fit `kind` on (Xtr, ytr) with transforms fitted on Xtr; accuracy on each of `evals`. Inputs must be copies (transformed in place). */
async function fitScore(o: ProbeOptions, warn: (m: string) => void, params: HeadParams, Xtr: Matrix, ytr: Int32Array, K: number, evals: { X: Matrix; y: Int32Array }[]): Promise<{ accs: number[]; states: TransformState[]; head: Awaited<ReturnType<typeof createHead>> }> {
  const { states, train, others } = await fitApplyChain(o.transforms, Xtr, evals.map((e) => e.X), o.seed ?? 0);
  const h = createHead(o.kind, params);
  await h.fit(train, ytr, K, { warn });
  const accs: number[] = [];
  for (let i = 0; i < evals.length; i++) accs.push(accuracy(await h.predict(others[i]), evals[i].y));
  return { accs, states, head: h };
}

export async function runProbe(data: ProbeData, o: ProbeOptions): Promise<ProbeResult> {
  const t0 = performance.now();
  const seed = o.seed ?? 0;
  const tr = o.trainSubset ?? Array.from({ length: data.nTrain }, (_, i) => i);
  const yTr = Int32Array.from(tr, (i) => data.y[i]);
  const points: SweepPoint[] = o.grid.values.map((value) => ({ value, values: { [o.grid.param]: value }, score: 0, scores: [], std: 0, seconds: 0 }));
  const folds = o.folds;
  // one line per probe for the fits' warnings (e.g. no convergence at the largest C), not one per fit
  const warned = new Map<string, number>();
  const warn = (m: string): void => void warned.set(m, (warned.get(m) ?? 0) + 1);
  const fold = stratifiedFolds(yTr, folds, seed, o.labelName);
  for (let f = 0; f < folds; f++) {
    const a: number[] = [];
    const b: number[] = [];
    for (let i = 0; i < tr.length; i++) (fold[i] === f ? b : a).push(tr[i]);
    const ya = Int32Array.from(a, (i) => data.y[i]);
    const yb = Int32Array.from(b, (i) => data.y[i]);
    for (const p of points) {
      const ts = performance.now();
      const value = o.grid.param === 'k' ? Math.min(p.value, a.length) : p.value;
      const { accs } = await fitScore(o, warn, { ...o.params, [o.grid.param]: value }, takeRows(data.X, a), ya, data.K, [{ X: takeRows(data.X, b), y: yb }]);
      p.scores.push(accs[0]);
      p.seconds += (performance.now() - ts) / 1000;
    }
  }
  for (const p of points) Object.assign(p, { score: meanStd(p.scores).mean, std: meanStd(p.scores).std });
  const best = bestPoint(points);
  const params: HeadParams = { ...o.params, [o.grid.param]: best.value };
  const evals: { X: Matrix; y: Int32Array }[] = [];
  if (data.nVal) evals.push({ X: takeRows(data.X, range(data.nTrain, data.nTrain + data.nVal)), y: data.y.subarray(data.nTrain, data.nTrain + data.nVal) });
  const t1 = data.nTrain + data.nVal;
  if (data.nTest) evals.push({ X: rowCopy(data.X, t1, t1 + data.nTest), y: data.y.subarray(t1, t1 + data.nTest) });
  const finalWarnings: string[] = [];
  const fin = await fitScore(o, (m) => finalWarnings.push(m), params, takeRows(data.X, tr), yTr, data.K, evals);
  const fits = folds * points.length;
  for (const [m, n] of warned) o.warn?.(`${n} of ${fits} CV fits: ${m}`);
  for (const m of finalWarnings) o.warn?.(`final fit: ${m}`);
  return {
    kind: o.kind,
    params: fin.head.params,
    points,
    cv: { mean: best.score, std: best.std, folds },
    val: data.nVal ? fin.accs[0] : null,
    test: data.nTest ? fin.accs[data.nVal ? 1 : 0] : null,
    trainRows: tr.length,
    seconds: (performance.now() - t0) / 1000,
    head: { head: fin.head, transforms: fin.states },
  };
}

function range(a: number, b: number): number[] {
  return Array.from({ length: b - a }, (_, i) => a + i);
}

function rowCopy(X: Matrix, a: number, b: number): Matrix {
  const v = rowView(X, a, b);
  return { data: v.data.slice(), rows: v.rows, cols: v.cols };
}

/** Default candidates of the selected parameter per head kind (k for knn, C otherwise). */
export function defaultGrid(kind: string): { param: string; values: number[] } {
  if (kind === 'knn') return { param: 'k', values: [1, 5, 10, 20] };
  return { param: 'C', values: [1e-3, 1e-2, 1e-1, 1, 10, 100] };
}
