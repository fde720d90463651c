/**
 * `knn`: k-nearest-neighbour vote over the training rows, the k-NN protocol of self-supervised
 * papers (DINO, DINOv2): no training beyond storing the rows, so it measures how well the features
 * alone separate the classes.
 *
 *   metric    cosine (rows L2-normalised, similarity x̂·t̂) | euclidean (‖x − t‖)
 *   weights   uniform (1 per neighbour) | distance (cosine: exp(sim / temperature), DINO's T = 0.07;
 *             euclidean: 1 / ‖x − t‖, scikit-learn's 'distance')
 *   proba     per-class sum of the k neighbours' weights / total weight
 *
 * Similarities are one ORT matmul per block of queries (kernel/matmul.ts); the k best per row are
 * chosen with the heads' top-k (ties to the lower training row, as ORT's TopK does in the export).
 * `knnOnnx` builds the same computation as ONNX nodes for export.
 */
import { XferError } from '../errors.js';
import { gemm } from './kernel/matmul.js';
import { argmaxRows, topKRows, type Matrix } from './matrix.js';
import type { GraphPart, OnnxHeadOutputs } from '../onnx/graph-part.js';
import { checkFitInput, checkFitted, checkPredictInput, num, registerHead, type FitContext, type Head, type HeadParams, type HeadState } from './head.js';

export const KNN_METRICS = ['cosine', 'euclidean'] as const;
export const KNN_WEIGHTS = ['uniform', 'distance'] as const;

/** Queries per similarity block: bounds the block's n_train floats per query. */
const BLOCK_BYTES = 64 << 20;

function metricOf(p: HeadParams): 'cosine' | 'euclidean' {
  const m = p.metric;
  if (m !== 'cosine' && m !== 'euclidean') throw new XferError(`head knn: metric must be ${KNN_METRICS.join(' or ')}, got '${String(m)}'`, { hint: 'e.g. --param metric=cosine' });
  return m;
}

function weightsOf(p: HeadParams): 'uniform' | 'distance' {
  const w = p.weights;
  if (w !== 'uniform' && w !== 'distance') throw new XferError(`head knn: weights must be ${KNN_WEIGHTS.join(' or ')}, got '${String(w)}'`, { hint: 'e.g. --param weights=distance' });
  return w;
}

function kOf(p: HeadParams): number {
  const k = num(p, 'k');
  if (!Number.isInteger(k) || k < 1) throw new XferError(`head knn: k must be a positive integer, got ${k}`, { hint: 'e.g. --param k=10' });
  return k;
}

/** Row-wise L2 normalisation into a new array (zero rows stay zero). */
export function l2Rows(data: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let i = 0; i < rows; i++) {
    const o = i * cols;
    let s = 0;
    for (let j = 0; j < cols; j++) s += data[o + j] * data[o + j];
    const inv = 1 / Math.max(Math.sqrt(s), 1e-12);
    for (let j = 0; j < cols; j++) out[o + j] = data[o + j] * inv;
  }
  return out;
}

function rowNormsSq(data: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows);
  for (let i = 0; i < rows; i++) {
    let s = 0;
    for (let j = i * cols; j < (i + 1) * cols; j++) s += data[j] * data[j];
    out[i] = s;
  }
  return out;
}

export interface Neighbours {
  /** rows × k training-row indexes, nearest first. */
  index: Int32Array;
  /** rows × k similarities (cosine) or distances (euclidean), matching `index`. */
  value: Float32Array;
  k: number;
}

/**
 * The k nearest training rows of each query row. `T` holds the training rows (L2-normalised for
 * cosine), `tNorms` their squared norms (euclidean). Blocks of queries keep the similarity matrix small.
 */
export async function nearest(Q: Matrix, T: Float32Array, nT: number, metric: 'cosine' | 'euclidean', k: number, tNorms?: Float32Array): Promise<Neighbours> {
  const d = Q.cols;
  const kk = Math.min(k, nT);
  const index = new Int32Array(Q.rows * kk);
  const value = new Float32Array(Q.rows * kk);
  const norms = metric === 'euclidean' ? tNorms ?? rowNormsSq(T, nT, d) : null;
  const block = Math.max(1, Math.floor(BLOCK_BYTES / (4 * Math.max(1, nT))));
  for (let a = 0; a < Q.rows; a += block) {
    const b = Math.min(Q.rows, a + block);
    const m = b - a;
    let q = Q.data.subarray(a * d, b * d);
    if (metric === 'cosine') q = l2Rows(q, m, d);
    // cosine: x̂·t̂; euclidean: 2x·t − ‖t‖² (= ‖x‖² − ‖x − t‖², same order as −distance)
    const S = await gemm(q, T, m, d, nT, { tb: true });
    if (norms) {
      for (let i = 0; i < m; i++) {
        const o = i * nT;
        for (let j = 0; j < nT; j++) S[o + j] = 2 * S[o + j] - norms[j];
      }
    }
    const top = topKRows(S, m, nT, kk);
    const qn = norms ? rowNormsSq(q, m, d) : null;
    for (let i = 0; i < m; i++) {
      for (let r = 0; r < kk; r++) {
        const j = top[i * kk + r];
        const s = S[i * nT + j];
        index[(a + i) * kk + r] = j;
        value[(a + i) * kk + r] = qn ? Math.sqrt(Math.max(qn[i] - s, 0)) : s;
      }
    }
  }
  return { index, value, k: kk };
}

export class KnnHead implements Head {
  readonly kind = 'knn' as const;
  readonly probabilistic = true;
  nClasses = 0;
  nFeatures = 0;
  info: Record<string, unknown> = {};
  /** Training rows (L2-normalised for cosine), n × d. */
  X: Float32Array = new Float32Array(0);
  y: Int32Array = new Int32Array(0);
  private norms: Float32Array | undefined;

  constructor(readonly params: HeadParams) {
    metricOf(params);
    weightsOf(params);
    kOf(params);
    if (!(num(params, 'temperature') > 0)) throw new XferError(`head knn: temperature must be > 0, got ${String(params.temperature)}`, { hint: 'e.g. --param temperature=0.07' });
  }

  async fit(X: Matrix, y: Int32Array, k: number, _ctx: FitContext = {}): Promise<this> {
    checkFitInput('knn', X, y, k);
    const kNn = kOf(this.params);
    if (kNn > X.rows) {
      throw new XferError(`head knn: k=${kNn} is larger than the training set (${X.rows} rows)`, { hint: `use --param k=${Math.max(1, Math.min(10, X.rows))} or fewer` });
    }
    this.X = metricOf(this.params) === 'cosine' ? l2Rows(X.data, X.rows, X.cols) : X.data.slice(0, X.rows * X.cols);
    this.y = y.slice();
    this.nClasses = k;
    this.nFeatures = X.cols;
    this.norms = undefined;
    this.info = { trainRows: X.rows };
    return this;
  }

  /** Neighbour weights from similarities / distances (see the file comment). */
  private weight(v: number): number {
    if (weightsOf(this.params) === 'uniform') return 1;
    return metricOf(this.params) === 'cosine' ? Math.exp(v / num(this.params, 'temperature')) : 1 / Math.max(v, 1e-12);
  }

  async neighbours(X: Matrix, k = kOf(this.params)): Promise<Neighbours> {
    checkPredictInput(this, X);
    const n = this.y.length;
    const metric = metricOf(this.params);
    if (metric === 'euclidean' && !this.norms) this.norms = rowNormsSq(this.X, n, this.nFeatures);
    return nearest(X, this.X, n, metric, k, this.norms);
  }

  async predictProba(X: Matrix): Promise<Float32Array> {
    const K = this.nClasses;
    const nb = await this.neighbours(X);
    const out = new Float32Array(X.rows * K);
    const acc = new Float64Array(K);
    // exp(sim/T) is shifted by the row's best similarity (cancels in the ratio, avoids overflow)
    const shift = metricOf(this.params) === 'cosine' && weightsOf(this.params) === 'distance';
    for (let i = 0; i < X.rows; i++) {
      acc.fill(0);
      let tot = 0;
      const top = shift ? nb.value[i * nb.k] : 0;
      for (let r = 0; r < nb.k; r++) {
        const w = this.weight(nb.value[i * nb.k + r] - top);
        acc[this.y[nb.index[i * nb.k + r]]] += w;
        tot += w;
      }
      for (let c = 0; c < K; c++) out[i * K + c] = acc[c] / tot;
    }
    return out;
  }

  decisionFunction(X: Matrix): Promise<Float32Array> {
    return this.predictProba(X);
  }

  async predict(X: Matrix): Promise<Int32Array> {
    return argmaxRows(await this.predictProba(X), X.rows, this.nClasses);
  }

  toState(): HeadState {
    const n = this.y.length;
    return {
      kind: 'knn',
      params: this.params,
      nClasses: this.nClasses,
      nFeatures: this.nFeatures,
      info: this.info,
      arrays: { X: this.X, y: this.y },
      shapes: { X: [n, this.nFeatures], y: [n] },
    };
  }

  static fromState(s: HeadState): KnnHead {
    const h = new KnnHead(s.params);
    h.nClasses = s.nClasses;
    h.nFeatures = s.nFeatures;
    h.info = s.info;
    h.X = s.arrays.X as Float32Array;
    h.y = s.arrays.y as Int32Array;
    return h;
  }

  toOnnx(g: GraphPart, x: string): OnnxHeadOutputs {
    checkFitted(this);
    return knnOnnx(g, this.toState(), x);
  }
}

/** What knnOnnx needs from a graph under construction (export.ts's GraphPart provides it). */
export interface OnnxPart {
  op(opType: string, inputs: string[], attrs?: Record<string, number | string | number[]>): string;
  const(name: string, dims: number[], data: Float32Array | number[]): string;
  int64(name: string, dims: number[], data: number[]): string;
  /** A node with several outputs; returns their names. */
  opN(opType: string, inputs: string[], outputs: number, attrs?: Record<string, number | string | number[]>): string[];
}

/**
 * The knn head as ONNX nodes: x [N, d] → { scores, probs } [N, K] (scores = probs, as
 * decisionFunction). Similarities by MatMul against the stored rows, TopK, one-hot labels gathered
 * and weighted by a batched MatMul (no opset-dependent ReduceSum or Unsqueeze; TopK needs opset ≥ 10).
 */
export function knnOnnx(g: OnnxPart, st: HeadState, x: string): { scores: string; probs: string } {
  const d = st.nFeatures;
  const K = st.nClasses;
  const T = st.arrays.X as Float32Array;
  const y = st.arrays.y as Int32Array;
  const n = y.length;
  const k = Math.min(kOf(st.params), n);
  const metric = metricOf(st.params);
  const weights = weightsOf(st.params);
  const Tt = new Float32Array(d * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < d; j++) Tt[j * n + i] = T[i * d + j];
  const sumSq = (v: string, w: number): string => g.op('MatMul', [g.op('Mul', [v, v]), g.const('ones', [w, 1], new Float32Array(w).fill(1))]);
  let S: string;
  let xn = '';
  if (metric === 'cosine') {
    const norm = g.op('Max', [g.op('Sqrt', [sumSq(x, d)]), g.const('eps', [], [1e-12])]);
    S = g.op('MatMul', [g.op('Div', [x, norm]), g.const('train_t', [d, n], Tt)]);
  } else {
    const tn = rowNormsSq(T, n, d);
    xn = sumSq(x, d);
    const xt = g.op('MatMul', [x, g.const('train_t', [d, n], Tt)]);
    S = g.op('Sub', [g.op('Mul', [xt, g.const('two', [], [2])]), g.const('train_norms', [1, n], tn)]);
  }
  const [vals, idx] = g.opN('TopK', [S, g.int64('k', [1], [k])], 2, { axis: -1, largest: 1, sorted: 1 });
  let w: string;
  if (weights === 'uniform') w = g.op('Add', [g.op('Mul', [vals, g.const('zero', [], [0])]), g.const('one', [], [1])]);
  else if (metric === 'cosine') {
    const best = g.op('Slice', [vals, g.int64('s0', [1], [0]), g.int64('s1', [1], [1]), g.int64('ax', [1], [1])]);
    w = g.op('Exp', [g.op('Div', [g.op('Sub', [vals, best]), g.const('temperature', [], [num(st.params, 'temperature')])])]);
  } else {
    const dist = g.op('Sqrt', [g.op('Max', [g.op('Sub', [xn, vals]), g.const('zero', [], [0])])]);
    w = g.op('Reciprocal', [g.op('Max', [dist, g.const('eps', [], [1e-12])])]);
  }
  const oneHot = new Float32Array(n * K);
  for (let i = 0; i < n; i++) oneHot[i * K + y[i]] = 1;
  const G = g.op('Gather', [g.const('train_onehot', [n, K], oneHot), idx], { axis: 0 }); // [N, k, K]
  const w3 = g.op('Reshape', [w, g.int64('shape_n1k', [3], [0, 1, k])]); // [N, 1, k]
  const votes = g.op('Reshape', [g.op('MatMul', [w3, G]), g.int64('shape_nk', [2], [0, K])]); // [N, K]
  const tot = g.op('MatMul', [votes, g.const('ones_k', [K, 1], new Float32Array(K).fill(1))]);
  const probs = g.op('Div', [votes, tot]);
  return { scores: probs, probs };
}

registerHead('knn', {
  params: {
    k: { default: 10, types: ['int'], min: 1 },
    metric: { default: 'cosine', types: ['string'], values: KNN_METRICS },
    weights: { default: 'distance', types: ['string'], values: KNN_WEIGHTS },
    temperature: { default: 0.07, types: ['number'], gt: 0 },
  },
  defaultTransforms: 'none',
  create: (p) => new KnnHead(p),
  fromState: (s) => KnnHead.fromState(s),
});
