/**
 * L-BFGS (unconstrained) with a strong-Wolfe line search (Nocedal & Wright, alg. 3.5/3.6 with cubic
 * interpolation), stopping like scipy's L-BFGS-B as scikit-learn calls it: max |g| ≤ gtol, or a
 * relative decrease (f_k − f_{k+1}) / max(|f_k|, |f_{k+1}|, 1) ≤ ftol (scipy default 2.2e-9), or maxIter.
 * Memory m = 10 like scipy. Parameters and curvature pairs are float64 (they are small: d·k).
 */
export type Objective = (w: Float64Array, grad: Float64Array) => Promise<number>;

export interface LbfgsOptions {
  maxIter?: number;
  gtol?: number;
  ftol?: number;
  m?: number;
  maxLs?: number;
  /**
   * Relative noise of f (e.g. ~1e-7 when f sums float32 terms): the sufficient-decrease test allows
   * f to rise by fNoise·|f| ("approximate Wolfe", Hager & Zhang 2005), so the search keeps following
   * the (accurate) gradient instead of failing once decreases drop below the resolution of f.
   */
  fNoise?: number;
  onIter?: (iter: number, f: number, gmax: number, evals: number) => void;
}

export interface LbfgsResult {
  w: Float64Array;
  f: number;
  iters: number;
  evals: number;
  converged: boolean;
  reason: string;
}

function dot(a: Float64Array, b: Float64Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}
function maxAbs(a: Float64Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const v = Math.abs(a[i]);
    if (v > m) m = v;
  }
  return m;
}

export async function lbfgs(fun: Objective, w0: Float64Array, opts: LbfgsOptions = {}): Promise<LbfgsResult> {
  const maxIter = opts.maxIter ?? 100;
  const gtol = opts.gtol ?? 1e-5;
  const ftol = opts.ftol ?? 2.220446049250313e-9;
  const m = opts.m ?? 10;
  const maxLs = opts.maxLs ?? 20;
  const n = w0.length;
  const w = Float64Array.from(w0);
  const g = new Float64Array(n);
  let evals = 1;
  let f = await fun(w, g);
  const S: Float64Array[] = [];
  const Y: Float64Array[] = [];
  const rho: number[] = [];
  const dir = new Float64Array(n);
  const wNew = new Float64Array(n);
  const gNew = new Float64Array(n);
  const alpha = new Float64Array(m);
  if (maxAbs(g) <= gtol) return { w, f, iters: 0, evals, converged: true, reason: 'gradient' };

  for (let iter = 1; iter <= maxIter; iter++) {
    // two-loop recursion: dir = -H g
    for (let i = 0; i < n; i++) dir[i] = -g[i];
    const h = S.length;
    for (let j = h - 1; j >= 0; j--) {
      alpha[j] = rho[j] * dot(S[j], dir);
      const yj = Y[j];
      for (let i = 0; i < n; i++) dir[i] -= alpha[j] * yj[i];
    }
    if (h > 0) {
      const gamma = dot(S[h - 1], Y[h - 1]) / dot(Y[h - 1], Y[h - 1]);
      for (let i = 0; i < n; i++) dir[i] *= gamma;
    }
    for (let j = 0; j < h; j++) {
      const b = rho[j] * dot(Y[j], dir);
      const sj = S[j];
      for (let i = 0; i < n; i++) dir[i] += (alpha[j] - b) * sj[i];
    }
    let dg0 = dot(dir, g);
    if (!(dg0 < 0)) {
      // not a descent direction (numerical trouble): restart with steepest descent
      S.length = 0;
      Y.length = 0;
      rho.length = 0;
      for (let i = 0; i < n; i++) dir[i] = -g[i];
      dg0 = dot(dir, g);
    }
    const step0 = h === 0 ? Math.min(1, 1 / Math.sqrt(-dg0)) : 1;

    // strong Wolfe line search
    const c1 = 1e-4;
    const slack = (opts.fNoise ?? 0) * Math.abs(f);
    const c2 = 0.9;
    const evalAt = async (a: number): Promise<{ f: number; dg: number }> => {
      for (let i = 0; i < n; i++) wNew[i] = w[i] + a * dir[i];
      evals++;
      const fv = await fun(wNew, gNew);
      lastA = a;
      lastF = fv;
      return { f: fv, dg: dot(gNew, dir) };
    };
    let lastA = NaN;
    let lastF = NaN;
    let aPrev = 0;
    let fPrev = f;
    let dgPrev = dg0;
    let a = step0;
    let accepted = false;
    let ls = 0;
    let best = { a: 0, f, dg: dg0 };
    const keep = (av: number, r: { f: number; dg: number }): void => {
      if (r.f < best.f) best = { a: av, f: r.f, dg: r.dg };
    };
    // zoom between lo and hi
    const zoom = async (lo: number, flo: number, dglo: number, hi: number, fhi: number, dghi: number): Promise<boolean> => {
      for (; ls < maxLs; ls++) {
        let aj = cubicMin(lo, flo, dglo, hi, fhi, dghi);
        const lo_ = Math.min(lo, hi);
        const hi_ = Math.max(lo, hi);
        const wdt = hi_ - lo_;
        if (!Number.isFinite(aj) || aj < lo_ + 0.1 * wdt || aj > hi_ - 0.1 * wdt) aj = (lo + hi) / 2;
        const r = await evalAt(aj);
        keep(aj, r);
        if (r.f > f + c1 * aj * dg0 + slack || r.f >= flo + slack) {
          hi = aj;
          fhi = r.f;
          dghi = r.dg;
        } else {
          if (Math.abs(r.dg) <= -c2 * dg0) return true;
          if (r.dg * (hi - lo) >= 0) {
            hi = lo;
            fhi = flo;
            dghi = dglo;
          }
          lo = aj;
          flo = r.f;
          dglo = r.dg;
        }
        if (Math.abs(hi - lo) < 1e-16) break;
      }
      return false;
    };
    for (; ls < maxLs; ls++) {
      const r = await evalAt(a);
      keep(a, r);
      if (!Number.isFinite(r.f) || r.f > f + c1 * a * dg0 + slack || (ls > 0 && r.f >= fPrev + slack)) {
        ls++;
        accepted = await zoom(aPrev, fPrev, dgPrev, a, Number.isFinite(r.f) ? r.f : Infinity, Number.isFinite(r.dg) ? r.dg : 0);
        break;
      }
      if (Math.abs(r.dg) <= -c2 * dg0) {
        accepted = true;
        break;
      }
      if (r.dg >= 0) {
        ls++;
        accepted = await zoom(a, r.f, r.dg, aPrev, fPrev, dgPrev);
        break;
      }
      aPrev = a;
      fPrev = r.f;
      dgPrev = r.dg;
      a *= 2.5;
    }
    // Use the best point seen if the Wolfe conditions were not met but f decreased.
    let aUse: number;
    if (accepted) aUse = lastA; // the point that met the Wolfe conditions was evaluated last
    else if (best.a > 0 && best.f < f - slack) aUse = best.a;
    // No decrease along a descent direction: the objective is flat to working precision (float32
    // products), which is where scipy also ends with ABNORMAL_TERMINATION_IN_LNSRCH.
    else return { w, f, iters: iter - 1, evals, converged: iter > 1, reason: 'no further decrease at working precision' };
    if (aUse !== lastA) await evalAt(aUse);
    const fNew = lastF;
    // curvature pair
    const s = new Float64Array(n);
    const yv = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      s[i] = wNew[i] - w[i];
      yv[i] = gNew[i] - g[i];
    }
    const sy = dot(s, yv);
    if (sy > 1e-10 * dot(yv, yv)) {
      if (S.length === m) {
        S.shift();
        Y.shift();
        rho.shift();
      }
      S.push(s);
      Y.push(yv);
      rho.push(1 / sy);
    }
    const fOld = f;
    w.set(wNew);
    g.set(gNew);
    f = fNew;
    const gmax = maxAbs(g);
    opts.onIter?.(iter, f, gmax, evals);
    if (gmax <= gtol) return { w, f, iters: iter, evals, converged: true, reason: 'gradient' };
    if ((fOld - f) / Math.max(Math.abs(fOld), Math.abs(f), 1) <= ftol) return { w, f, iters: iter, evals, converged: true, reason: 'relative reduction' };
  }
  return { w, f, iters: maxIter, evals, converged: false, reason: 'max iterations' };
}

/** Minimiser of the cubic interpolating f and f' at a and b. */
function cubicMin(a: number, fa: number, da: number, b: number, fb: number, db: number): number {
  const d1 = da + db - 3 * ((fa - fb) / (a - b));
  const disc = d1 * d1 - da * db;
  if (disc < 0) return NaN;
  const d2 = Math.sign(b - a) * Math.sqrt(disc);
  return b - (b - a) * ((db + d2 - d1) / (db - da + 2 * d2));
}
