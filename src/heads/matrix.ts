/** A dense row-major float32 matrix view. `data` may be a subarray of a larger buffer (no copy). */
export interface Matrix {
  data: Float32Array;
  rows: number;
  cols: number;
}

export function matrix(data: Float32Array, rows: number, cols: number): Matrix {
  if (data.length < rows * cols) throw new Error(`matrix: ${data.length} values cannot hold ${rows}x${cols}`);
  return { data: data.length === rows * cols ? data : data.subarray(0, rows * cols), rows, cols };
}

/** Rows [start, end) as a view (no copy). */
export function rowView(X: Matrix, start: number, end: number): Matrix {
  return { data: X.data.subarray(start * X.cols, end * X.cols), rows: end - start, cols: X.cols };
}

/** Copy the listed rows into a new matrix (an explicit, visible copy). */
export function takeRows(X: Matrix, idx: ArrayLike<number>): Matrix {
  const d = X.cols;
  const out = new Float32Array(idx.length * d);
  for (let i = 0; i < idx.length; i++) out.set(X.data.subarray(idx[i] * d, idx[i] * d + d), i * d);
  return { data: out, rows: idx.length, cols: d };
}

/** Row-wise argmax of an n×k score matrix. */
export function argmaxRows(S: ArrayLike<number>, n: number, k: number): Int32Array {
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    let b = 0;
    let bv = -Infinity;
    for (let c = 0; c < k; c++) {
      const v = S[i * k + c];
      if (v > bv) {
        bv = v;
        b = c;
      }
    }
    out[i] = b;
  }
  return out;
}

/**
 * Row-wise top-k of an n×k score matrix: n×kk class indices, best first; ties go to the lower
 * index (so column 0 is argmaxRows). NaN scores rank last. The heads' one top-k (metrics use it).
 */
export function topKRows(S: ArrayLike<number>, n: number, k: number, kk: number): Int32Array {
  const m = Math.max(0, Math.min(kk, k));
  const out = new Int32Array(n * m);
  const val = new Float64Array(m);
  for (let i = 0; i < n; i++) {
    const o = i * k;
    const io = i * m;
    let len = 0;
    for (let c = 0; c < k; c++) {
      const raw = S[o + c];
      const v = raw === raw ? raw : -Infinity; // NaN ranks last
      if (len === m && !(v > val[m - 1])) continue;
      let p = len < m ? len++ : m - 1;
      while (p > 0 && v > val[p - 1]) {
        val[p] = val[p - 1];
        out[io + p] = out[io + p - 1];
        p--;
      }
      val[p] = v;
      out[io + p] = c;
    }
  }
  return out;
}

/** Row-wise softmax in place; returns the array. The heads' one softmax (every head's predictProba uses it). */
export function softmaxRows(S: Float32Array, n: number, k: number): Float32Array {
  for (let i = 0; i < n; i++) {
    const o = i * k;
    let m = -Infinity;
    for (let c = 0; c < k; c++) if (S[o + c] > m) m = S[o + c];
    let s = 0;
    for (let c = 0; c < k; c++) {
      const e = Math.exp(S[o + c] - m);
      S[o + c] = e;
      s += e;
    }
    for (let c = 0; c < k; c++) S[o + c] /= s;
  }
  return S;
}

/** Per-class weights n / (k · n_c) (scikit-learn's class_weight='balanced'). */
export function balancedWeights(y: Int32Array, k: number): Float64Array {
  const cnt = new Float64Array(k);
  for (let i = 0; i < y.length; i++) cnt[y[i]]++;
  const w = new Float64Array(k);
  for (let c = 0; c < k; c++) w[c] = cnt[c] > 0 ? y.length / (k * cnt[c]) : 0;
  return w;
}
