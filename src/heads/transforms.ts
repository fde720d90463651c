/**
 * Feature transforms fitted on training rows only and saved with the head: standardise (z-score
 * per column), L2-normalise (per row), PCA to k dims. They apply IN PLACE where the width does not
 * change (standardise, l2), so a 100k × 4096 matrix is never duplicated; PCA necessarily writes
 * a new, narrower matrix.
 */
import { XferError } from '../errors.js';
import { gemm } from './kernel/matmul.js';
import { Rng } from './rng.js';
import type { Matrix } from './matrix.js';

export type TransformSpec = { kind: 'standardize' } | { kind: 'l2' } | { kind: 'pca'; k: number };

export interface TransformState {
  kind: TransformSpec['kind'];
  k?: number;
  dIn: number;
  dOut: number;
  /** standardize: mean, scale; pca: mean, components (k × dIn, row-major). */
  arrays: Record<string, Float32Array>;
}

/** Parse `standardize,l2,pca:64` (or `none`). */
export function parseTransforms(s: string, flag = '--transform'): TransformSpec[] {
  if (s.trim() === '' || s.trim() === 'none') return [];
  return s.split(',').map((p) => {
    const t = p.trim().toLowerCase();
    if (t === 'standardize' || t === 'standardise' || t === 'std' || t === 'zscore') return { kind: 'standardize' } as const;
    if (t === 'l2' || t === 'normalize' || t === 'l2norm') return { kind: 'l2' } as const;
    const m = /^pca[:=](\d+)$/.exec(t);
    if (m && Number(m[1]) > 0) return { kind: 'pca', k: Number(m[1]) } as const;
    throw new XferError(`${flag}: unknown transform '${p}'`, { hint: 'use a comma list of standardize, l2, pca:K (e.g. --transform l2,pca:128) or none' });
  });
}

/** Fit a transform on `train` (rows of X) — does not modify X. */
export async function fitTransform(spec: TransformSpec, train: Matrix, seed = 0): Promise<TransformState> {
  const { data, rows: n, cols: d } = train;
  if (spec.kind === 'l2') return { kind: 'l2', dIn: d, dOut: d, arrays: {} };
  const mean = new Float64Array(d);
  for (let i = 0; i < n; i++) {
    const o = i * d;
    for (let j = 0; j < d; j++) mean[j] += data[o + j];
  }
  for (let j = 0; j < d; j++) mean[j] /= Math.max(1, n);
  if (spec.kind === 'standardize') {
    const v = new Float64Array(d);
    for (let i = 0; i < n; i++) {
      const o = i * d;
      for (let j = 0; j < d; j++) {
        const t = data[o + j] - mean[j];
        v[j] += t * t;
      }
    }
    const scale = new Float32Array(d);
    for (let j = 0; j < d; j++) {
      const s = Math.sqrt(v[j] / Math.max(1, n));
      scale[j] = s > 1e-12 ? s : 1; // constant columns: like sklearn, leave unscaled
    }
    return { kind: 'standardize', dIn: d, dOut: d, arrays: { mean: Float32Array.from(mean), scale } };
  }
  // PCA by randomised subspace iteration (Halko et al.) on the centred data, products via the kernel.
  const k = spec.k;
  if (k > d) throw new XferError(`--transform pca:${k}: k exceeds the feature width ${d}`, { hint: `use pca:K with K ≤ ${d}` });
  const mean32 = Float32Array.from(mean);
  const p = Math.min(d, k + 10);
  const rng = new Rng(seed);
  let Q: Float32Array = new Float32Array(d * p);
  for (let i = 0; i < Q.length; i++) Q[i] = rng.normal();
  orthonormalizeColumns(Q, d, p);
  // centred product helpers: (X - 1 mᵀ) Q = XQ - 1 (mᵀQ); (X - 1mᵀ)ᵀ Y = XᵀY - m (1ᵀY)
  const centredXQ = async (Qm: Float32Array): Promise<Float32Array> => {
    const Y = await gemm(data, Qm, n, d, p);
    const mq = new Float64Array(p);
    for (let j = 0; j < d; j++) for (let c = 0; c < p; c++) mq[c] += mean32[j] * Qm[j * p + c];
    for (let i = 0; i < n; i++) for (let c = 0; c < p; c++) Y[i * p + c] -= mq[c];
    return Y;
  };
  const centredXtY = async (Y: Float32Array): Promise<Float32Array> => {
    const Z = await gemm(data, Y, d, n, p, { ta: true });
    const colsum = new Float64Array(p);
    for (let i = 0; i < n; i++) for (let c = 0; c < p; c++) colsum[c] += Y[i * p + c];
    for (let j = 0; j < d; j++) for (let c = 0; c < p; c++) Z[j * p + c] -= mean32[j] * colsum[c];
    return Z;
  };
  for (let it = 0; it < 6; it++) {
    const Y = await centredXQ(Q);
    Q = await centredXtY(Y);
    orthonormalizeColumns(Q, d, p);
  }
  // Rayleigh-Ritz: B = Qᵀ C Q (p×p), C = XcᵀXc; eigen-decompose B with Jacobi.
  const Y = await centredXQ(Q);
  const B = new Float64Array(p * p);
  for (let i = 0; i < n; i++) {
    const o = i * p;
    for (let a = 0; a < p; a++) {
      const ya = Y[o + a];
      for (let b = a; b < p; b++) B[a * p + b] += ya * Y[o + b];
    }
  }
  for (let a = 0; a < p; a++) for (let b = 0; b < a; b++) B[a * p + b] = B[b * p + a];
  const { values, vectors } = jacobiEigen(B, p);
  const order = [...values.keys()].sort((x, y) => values[y] - values[x]).slice(0, k);
  const comps = new Float32Array(k * d); // rows = components
  for (let r = 0; r < k; r++) {
    const e = order[r];
    for (let j = 0; j < d; j++) {
      let s = 0;
      for (let c = 0; c < p; c++) s += Q[j * p + c] * vectors[c * p + e];
      comps[r * d + j] = s;
    }
    // deterministic sign: largest-magnitude loading positive (like sklearn's svd_flip)
    let big = 0;
    for (let j = 0; j < d; j++) if (Math.abs(comps[r * d + j]) > Math.abs(big)) big = comps[r * d + j];
    if (big < 0) for (let j = 0; j < d; j++) comps[r * d + j] = -comps[r * d + j];
  }
  const explained = Float32Array.from(order.map((e) => values[e] / Math.max(1, n - 1)));
  return { kind: 'pca', k, dIn: d, dOut: k, arrays: { mean: mean32, components: comps, explained_variance: explained } };
}

/** Apply a fitted transform. standardize/l2 modify `X.data` in place and return X; pca returns a new matrix. */
export async function applyTransform(t: TransformState, X: Matrix): Promise<Matrix> {
  if (X.cols !== t.dIn) {
    throw new XferError(`features have ${X.cols} columns but the ${t.kind} transform was fitted on ${t.dIn}`, { hint: 'use the same layers the head was trained on' });
  }
  const { data, rows: n, cols: d } = X;
  if (t.kind === 'standardize') {
    const { mean, scale } = t.arrays;
    const inv = new Float32Array(d);
    for (let j = 0; j < d; j++) inv[j] = 1 / scale[j];
    for (let i = 0; i < n; i++) {
      const o = i * d;
      for (let j = 0; j < d; j++) data[o + j] = (data[o + j] - mean[j]) * inv[j];
    }
    return X;
  }
  if (t.kind === 'l2') {
    for (let i = 0; i < n; i++) {
      const o = i * d;
      let s = 0;
      for (let j = 0; j < d; j++) s += data[o + j] * data[o + j];
      if (s > 0) {
        const f = 1 / Math.sqrt(s);
        for (let j = 0; j < d; j++) data[o + j] *= f;
      }
    }
    return X;
  }
  const { mean, components } = t.arrays;
  const k = t.dOut;
  const Y = await gemm(data, components, n, d, k, { tb: true });
  const mc = new Float64Array(k);
  for (let r = 0; r < k; r++) for (let j = 0; j < d; j++) mc[r] += mean[j] * components[r * d + j];
  for (let i = 0; i < n; i++) for (let r = 0; r < k; r++) Y[i * k + r] -= mc[r];
  return { data: Y, rows: n, cols: k };
}

/** Fit each transform on the (already transformed) training rows and apply it to every matrix given, in order. */
export async function fitApplyChain(specs: TransformSpec[], train: Matrix, others: Matrix[], seed = 0): Promise<{ states: TransformState[]; train: Matrix; others: Matrix[] }> {
  const states: TransformState[] = [];
  let tr = train;
  let os = others;
  for (const s of specs) {
    const st = await fitTransform(s, tr, seed);
    states.push(st);
    tr = await applyTransform(st, tr);
    const next: Matrix[] = [];
    for (const o of os) next.push(await applyTransform(st, o));
    os = next;
  }
  return { states, train: tr, others: os };
}

export async function applyChain(states: TransformState[], X: Matrix): Promise<Matrix> {
  let m = X;
  for (const s of states) m = await applyTransform(s, m);
  return m;
}

/** Modified Gram-Schmidt on the p columns of a d×p row-major matrix. */
function orthonormalizeColumns(Q: Float32Array, d: number, p: number): void {
  const col = new Float64Array(d);
  for (let c = 0; c < p; c++) {
    for (let j = 0; j < d; j++) col[j] = Q[j * p + c];
    for (let q = 0; q < c; q++) {
      let dot = 0;
      for (let j = 0; j < d; j++) dot += col[j] * Q[j * p + q];
      for (let j = 0; j < d; j++) col[j] -= dot * Q[j * p + q];
    }
    let nrm = 0;
    for (let j = 0; j < d; j++) nrm += col[j] * col[j];
    nrm = Math.sqrt(nrm) || 1;
    for (let j = 0; j < d; j++) Q[j * p + c] = col[j] / nrm;
  }
}

/** Cyclic Jacobi eigen-decomposition of a symmetric p×p matrix (p is small: k + 10). */
export function jacobiEigen(A0: Float64Array, p: number): { values: number[]; vectors: Float64Array } {
  const A = Float64Array.from(A0);
  const V = new Float64Array(p * p);
  for (let i = 0; i < p; i++) V[i * p + i] = 1;
  for (let sweep = 0; sweep < 60; sweep++) {
    let off = 0;
    for (let i = 0; i < p; i++) for (let j = i + 1; j < p; j++) off += A[i * p + j] ** 2;
    if (off < 1e-22) break;
    for (let a = 0; a < p; a++) {
      for (let b = a + 1; b < p; b++) {
        const apq = A[a * p + b];
        if (Math.abs(apq) < 1e-300) continue;
        const theta = (A[b * p + b] - A[a * p + a]) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        for (let k = 0; k < p; k++) {
          const akp = A[k * p + a];
          const akq = A[k * p + b];
          A[k * p + a] = c * akp - s * akq;
          A[k * p + b] = s * akp + c * akq;
        }
        for (let k = 0; k < p; k++) {
          const apk = A[a * p + k];
          const aqk = A[b * p + k];
          A[a * p + k] = c * apk - s * aqk;
          A[b * p + k] = s * apk + c * aqk;
        }
        for (let k = 0; k < p; k++) {
          const vkp = V[k * p + a];
          const vkq = V[k * p + b];
          V[k * p + a] = c * vkp - s * vkq;
          V[k * p + b] = s * vkp + c * vkq;
        }
      }
    }
  }
  const values: number[] = [];
  for (let i = 0; i < p; i++) values.push(A[i * p + i]);
  return { values, vectors: V };
}
