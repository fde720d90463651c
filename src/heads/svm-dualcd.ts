/**
 * LIBLINEAR's dual coordinate descent for the L2-regularised squared-hinge SVM (Hsieh et al. 2008,
 * solver L2R_L2LOSS_SVC_DUAL), one binary problem. Kept free of ORT imports so svm-worker.ts loads fast.
 */
import type { Rng } from './rng.js';
import type { Matrix } from './matrix.js';

export interface DualCdResult {
  w: Float64Array;
  b: number;
  iters: number;
  converged: boolean;
}

/**
 * One binary problem. `pos[i]` is true for the positive class. `cPos`/`cNeg` are the per-class C
 * (class weights). Returns w (d) and b.
 */
export function dualCdL2(X: Matrix, pos: Uint8Array, cPos: number, cNeg: number, tol: number, maxIter: number, rng: Rng): DualCdResult {
  const { data, rows: n, cols: d } = X;
  const w = new Float64Array(d);
  let b = 0;
  const alpha = new Float64Array(n);
  const QD = new Float64Array(n);
  const Dii = [0.5 / cNeg, 0.5 / cPos];
  const index = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const o = i * d;
    let s = 1; // bias feature
    for (let j = 0; j < d; j++) s += data[o + j] * data[o + j];
    QD[i] = s + Dii[pos[i]];
    index[i] = i;
  }
  let activeSize = n;
  let PGmaxOld = Infinity;
  let PGminOld = -Infinity;
  let iter = 0;
  let converged = false;
  while (iter < maxIter) {
    let PGmaxNew = -Infinity;
    let PGminNew = Infinity;
    for (let i = 0; i < activeSize; i++) {
      const j = i + rng.int(activeSize - i);
      const t = index[i];
      index[i] = index[j];
      index[j] = t;
    }
    for (let s = 0; s < activeSize; s++) {
      const i = index[s];
      const yi = pos[i] ? 1 : -1;
      const o = i * d;
      // 4 independent accumulators: lets V8 keep several multiply-adds in flight
      let s0 = 0;
      let s1 = 0;
      let s2 = 0;
      let s3 = 0;
      let j = 0;
      for (; j + 3 < d; j += 4) {
        s0 += w[j] * data[o + j];
        s1 += w[j + 1] * data[o + j + 1];
        s2 += w[j + 2] * data[o + j + 2];
        s3 += w[j + 3] * data[o + j + 3];
      }
      for (; j < d; j++) s0 += w[j] * data[o + j];
      const wx = b + s0 + s1 + s2 + s3;
      const ai = alpha[i];
      const G = yi * wx - 1 + ai * Dii[pos[i]];
      let PG = 0;
      if (ai === 0) {
        if (G > PGmaxOld) {
          activeSize--;
          index[s] = index[activeSize];
          index[activeSize] = i;
          s--;
          continue;
        } else if (G < 0) PG = G;
      } else PG = G;
      if (PG > PGmaxNew) PGmaxNew = PG;
      if (PG < PGminNew) PGminNew = PG;
      if (Math.abs(PG) > 1e-12) {
        const an = Math.max(ai - G / QD[i], 0);
        alpha[i] = an;
        const delta = (an - ai) * yi;
        for (let t = 0; t < d; t++) w[t] += delta * data[o + t];
        b += delta;
      }
    }
    iter++;
    if (PGmaxNew - PGminNew <= tol) {
      if (activeSize === n) {
        converged = true;
        break;
      }
      activeSize = n;
      PGmaxOld = Infinity;
      PGminOld = -Infinity;
      continue;
    }
    PGmaxOld = PGmaxNew <= 0 ? Infinity : PGmaxNew;
    PGminOld = PGminNew >= 0 ? -Infinity : PGminNew;
  }
  void PGminOld;
  return { w, b, iters: iter, converged };
}


