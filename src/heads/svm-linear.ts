/**
 * `svm`: linear SVM, one-vs-rest, squared hinge loss, L2 — LIBLINEAR's dual coordinate descent
 * (Hsieh et al. 2008, solver L2R_L2LOSS_SVC_DUAL) as scikit-learn's LinearSVC runs it:
 *   min_w ½‖w‖² + C Σ max(0, 1 − y_i wᵀx_i)²,  x_i extended with a constant 1 (intercept_scaling=1,
 *   so the intercept IS regularised, as in LinearSVC),
 * dual: min_α ½αᵀQ̄α − eᵀα, α ≥ 0, Q̄ = Q + I/(2C); random order each epoch, shrinking, stop when the
 * projected-gradient spread is ≤ tol (1e-4) or after maxIter (1000) epochs.
 * The k binary problems are independent: they run on worker threads (one per core, `workers` caps
 * it; 0 = all) over a SharedArrayBuffer copy of X. Each update is a d-length dot + axpy — too
 * fine-grained for ORT. Each class has its own seeded order, so results do not depend on threads.
 *
 * Probabilities: with `probability: true` the fit also calibrates each class's score with a Platt
 * sigmoid on out-of-fold scores (3 folds) and normalises across classes; otherwise predictProba is
 * softmax(scores), marked uncalibrated (no log-loss is reported for it).
 */
import { Worker } from 'node:worker_threads';
// (Before any worker opens a session: only this thread's environment reaches ORT.)
import '../util/ort-telemetry.js';
import { gemm, kernelThreads } from './kernel/matmul.js';
import type { SvmJob } from './svm-worker.js';
import { Rng } from './rng.js';
import { dualCdL2 } from './svm-dualcd.js';
export { dualCdL2 } from './svm-dualcd.js';
import { argmaxRows, balancedWeights, softmaxRows, takeRows, type Matrix } from './matrix.js';
import type { GraphPart, OnnxHeadOutputs } from '../onnx/graph-part.js';
import { checkFitInput, checkFitted, checkPredictInput, num, registerHead, type FitContext, type Head, type HeadParams, type HeadState } from './head.js';

export class LinearSvmHead implements Head {
  readonly kind = 'svm' as const;
  nClasses = 0;
  nFeatures = 0;
  info: Record<string, unknown> = {};
  /** d×k weights, k biases; Platt parameters (A, B per class) when calibrated. */
  W: Float32Array = new Float32Array(0);
  b: Float32Array = new Float32Array(0);
  platt: Float32Array | null = null;

  constructor(readonly params: HeadParams) {}

  get probabilistic(): boolean {
    return this.platt !== null;
  }

  private async fitRaw(X: Matrix, y: Int32Array, k: number, ctx: FitContext): Promise<{ W: Float32Array; b: Float32Array; iters: number[]; converged: boolean }> {
    const C = num(this.params, 'C');
    const tol = num(this.params, 'tol');
    const maxIter = num(this.params, 'maxIter');
    const cw = this.params.classWeight === 'balanced' ? balancedWeights(y, k) : new Float64Array(k).fill(1);
    const d = X.cols;
    const W = new Float32Array(d * k);
    const b = new Float32Array(k);
    const iters: number[] = new Array<number>(k);
    let converged = true;
    const seed = num(this.params, 'seed');
    const classes = k === 2 ? [1] : [...Array(k).keys()];
    // LIBLINEAR with class weights scales C per label: positive class c, negative "rest" unweighted
    const problems: [number, number, number, number][] = classes.map((c) => [c, C * cw[c], C * (k === 2 ? cw[0] : 1), seed * 1000003 + c]);
    const store = (r: { c: number; w: Float64Array; b: number; iters: number; converged: boolean }): void => {
      iters[r.c] = r.iters;
      converged &&= r.converged;
      for (let j = 0; j < d; j++) W[j * k + r.c] = r.w[j];
      b[r.c] = r.b;
      ctx.progress?.({ phase: 'svm', iter: iters.filter((v) => v !== undefined).length, msg: `class ${r.c}: ${r.iters} epochs` });
    };
    const workers = Math.min(classes.length, kernelThreads(), num(this.params, 'workers') || Infinity);
    const bytes = X.rows * d * 4;
    if (workers > 1 && X.rows * d >= 200_000 && bytes <= 512 * 2 ** 20) {
      // The k problems are independent: run them on worker threads over ONE shared copy of X
      // (ORT cannot take SharedArrayBuffer memory, so the pipeline matrix itself is not shared;
      // above 512 MiB we stay single-threaded rather than copy).
      const shared = new Float32Array(new SharedArrayBuffer(bytes));
      shared.set(X.data.subarray(0, X.rows * d));
      const ys = new Int32Array(new SharedArrayBuffer(y.length * 4));
      ys.set(y);
      const parts: (typeof problems)[] = Array.from({ length: workers }, () => []);
      problems.forEach((p, i) => parts[i % workers].push(p));
      await Promise.all(
        parts.map(
          (part) =>
            new Promise<void>((resolve, reject) => {
              const job: SvmJob = { X: shared, n: X.rows, d, y: ys, problems: part, tol, maxIter };
              const w = new Worker(new URL('./svm-worker.js', import.meta.url), { workerData: job });
              let left = part.length;
              w.on('message', (r: { c: number; w: Float64Array; b: number; iters: number; converged: boolean }) => {
                store(r);
                if (--left === 0) void w.terminate().then(() => resolve());
              });
              w.on('error', reject);
              w.on('exit', (code) => (left > 0 ? reject(new Error(`svm worker exited with code ${code}`)) : undefined));
            }),
        ),
      );
    } else {
      const pos = new Uint8Array(X.rows);
      for (const [c, cPos, cNeg, s] of problems) {
        for (let i = 0; i < X.rows; i++) pos[i] = y[i] === c ? 1 : 0;
        store({ c, ...dualCdL2(X, pos, cPos, cNeg, tol, maxIter, new Rng(s)) });
      }
    }
    if (k === 2) {
      // binary: one problem; class 0 gets the negated score
      for (let j = 0; j < d; j++) W[j * k] = -W[j * k + 1];
      b[0] = -b[1];
    }
    return { W, b, iters: iters.filter((v) => v !== undefined), converged };
  }

  async fit(X: Matrix, y: Int32Array, nClasses?: number, ctx: FitContext = {}): Promise<this> {
    const k = checkFitInput('svm', X, y, nClasses);
    const t0 = performance.now();
    const r = await this.fitRaw(X, y, k, ctx);
    if (!r.converged) ctx.warn?.(`svm: dual coordinate descent reached maxIter=${num(this.params, 'maxIter')} before tol; results are usable, consider a smaller C or standardised features`);
    this.W = r.W;
    this.b = r.b;
    this.nClasses = k;
    this.nFeatures = X.cols;
    this.platt = null;
    if (this.params.probability === true) this.platt = await this.calibrate(X, y, k, ctx);
    this.info = { epochs: r.iters, converged: r.converged, calibrated: this.platt !== null, fitSeconds: (performance.now() - t0) / 1000 };
    return this;
  }

  /** Platt scaling per class on 3-fold out-of-fold scores. */
  private async calibrate(X: Matrix, y: Int32Array, k: number, ctx: FitContext): Promise<Float32Array> {
    const n = X.rows;
    const folds = 3;
    const rng = new Rng(num(this.params, 'seed') + 1);
    const perm = rng.shuffle(Int32Array.from({ length: n }, (_, i) => i));
    const oof = new Float32Array(n * k);
    for (let f = 0; f < folds; f++) {
      const tr: number[] = [];
      const te: number[] = [];
      for (let i = 0; i < n; i++) (i % folds === f ? te : tr).push(perm[i]);
      const Xtr = takeRows(X, tr);
      const ytr = Int32Array.from(tr, (i) => y[i]);
      const r = await this.fitRaw(Xtr, ytr, k, {});
      const S = await gemm(takeRows(X, te).data, r.W, te.length, X.cols, k, { bias: r.b });
      te.forEach((row, t) => oof.set(S.subarray(t * k, t * k + k), row * k));
      ctx.progress?.({ phase: 'calibrate', iter: f + 1 });
    }
    const AB = new Float32Array(2 * k);
    for (let c = 0; c < k; c++) {
      const s = new Float64Array(n);
      const t = new Uint8Array(n);
      for (let i = 0; i < n; i++) {
        s[i] = oof[i * k + c];
        t[i] = y[i] === c ? 1 : 0;
      }
      const [A, B] = plattFit(s, t);
      AB[2 * c] = A;
      AB[2 * c + 1] = B;
    }
    return AB;
  }

  async decisionFunction(X: Matrix): Promise<Float32Array> {
    checkPredictInput(this, X);
    return gemm(X.data, this.W, X.rows, X.cols, this.nClasses, { bias: this.b });
  }

  async predictProba(X: Matrix): Promise<Float32Array> {
    const S = await this.decisionFunction(X);
    const k = this.nClasses;
    if (!this.platt) return softmaxRows(S, X.rows, k);
    for (let i = 0; i < X.rows; i++) {
      let sum = 0;
      for (let c = 0; c < k; c++) {
        const p = 1 / (1 + Math.exp(this.platt[2 * c] * S[i * k + c] + this.platt[2 * c + 1]));
        S[i * k + c] = p;
        sum += p;
      }
      for (let c = 0; c < k; c++) S[i * k + c] = sum > 0 ? S[i * k + c] / sum : 1 / k;
    }
    return S;
  }

  async predict(X: Matrix): Promise<Int32Array> {
    return argmaxRows(await this.decisionFunction(X), X.rows, this.nClasses);
  }

  /**
   * MatMul + Add; probabilities = Platt sigmoid per class normalised to sum 1 when calibrated,
   * else Softmax of the margins (what predictProba does).
   */
  toOnnx(g: GraphPart, x: string): OnnxHeadOutputs {
    checkFitted(this);
    const K = this.nClasses;
    const z = g.op('MatMul', [x, g.const('W', [this.nFeatures, K], this.W)]);
    const scores = g.op('Add', [z, g.const('b', [K], this.b)]);
    if (!this.platt) return { scores, probs: g.op('Softmax', [scores], { axis: 1 }) };
    // p_c = sigmoid(−(A_c s_c + B_c)), normalised to sum 1
    const p = plattNodes(g, scores, this.platt, K);
    const sum = g.op('MatMul', [p, g.const('ones', [K, 1], new Float32Array(K).fill(1))]);
    return { scores, probs: g.op('Div', [p, sum]) };
  }

  toState(): HeadState {
    const arrays: HeadState['arrays'] = { W: this.W, b: this.b };
    const shapes: HeadState['shapes'] = { W: [this.nFeatures, this.nClasses], b: [this.nClasses] };
    if (this.platt) {
      arrays.platt = this.platt;
      shapes.platt = [this.nClasses, 2];
    }
    return { kind: 'svm', params: this.params, nClasses: this.nClasses, nFeatures: this.nFeatures, info: this.info, arrays, shapes };
  }

  static fromState(s: HeadState): LinearSvmHead {
    const h = new LinearSvmHead(s.params);
    h.nClasses = s.nClasses;
    h.nFeatures = s.nFeatures;
    h.info = s.info;
    h.W = s.arrays.W as Float32Array;
    h.b = s.arrays.b as Float32Array;
    h.platt = (s.arrays.platt as Float32Array | undefined) ?? null;
    return h;
  }
}

/** ONNX nodes of Platt's sigmoid on n score columns: 1 / (1 + exp(A s + B)) = sigmoid(−A s − B), (A, B) interleaved in `platt`. */
export function plattNodes(g: GraphPart, s: string, platt: Float32Array, n: number): string {
  const negA = new Float32Array(n);
  const negB = new Float32Array(n);
  for (let c = 0; c < n; c++) {
    negA[c] = -platt[2 * c];
    negB[c] = -platt[2 * c + 1];
  }
  return g.op('Sigmoid', [g.op('Add', [g.op('Mul', [s, g.const('platt_negA', [n], negA)]), g.const('platt_negB', [n], negB)])]);
}

/**
 * Platt's sigmoid P(y=1|s) = 1 / (1 + exp(A s + B)), fitted by Newton's method with the
 * regularised targets of Lin, Lin & Weng (2007), as libsvm does.
 */
export function plattFit(s: Float64Array, t: Uint8Array): [number, number] {
  const n = s.length;
  let np = 0;
  for (let i = 0; i < n; i++) np += t[i];
  const nn = n - np;
  const hi = (np + 1) / (np + 2);
  const lo = 1 / (nn + 2);
  const T = new Float64Array(n);
  for (let i = 0; i < n; i++) T[i] = t[i] ? hi : lo;
  let A = 0;
  let B = Math.log((nn + 1) / (np + 1));
  const sigma = 1e-12;
  const fval = (a: number, bb: number): number => {
    let f = 0;
    for (let i = 0; i < n; i++) {
      const fApB = s[i] * a + bb;
      f += fApB >= 0 ? T[i] * fApB + Math.log1p(Math.exp(-fApB)) : (T[i] - 1) * fApB + Math.log1p(Math.exp(fApB));
    }
    return f;
  };
  let f = fval(A, B);
  for (let it = 0; it < 100; it++) {
    let h11 = sigma;
    let h22 = sigma;
    let h21 = 0;
    let g1 = 0;
    let g2 = 0;
    for (let i = 0; i < n; i++) {
      const fApB = s[i] * A + B;
      let p: number;
      let q: number;
      if (fApB >= 0) {
        p = Math.exp(-fApB) / (1 + Math.exp(-fApB));
        q = 1 / (1 + Math.exp(-fApB));
      } else {
        p = 1 / (1 + Math.exp(fApB));
        q = Math.exp(fApB) / (1 + Math.exp(fApB));
      }
      const d2 = p * q;
      h11 += s[i] * s[i] * d2;
      h22 += d2;
      h21 += s[i] * d2;
      const d1 = T[i] - p;
      g1 += s[i] * d1;
      g2 += d1;
    }
    if (Math.abs(g1) < 1e-5 && Math.abs(g2) < 1e-5) break;
    const det = h11 * h22 - h21 * h21;
    const dA = -(h22 * g1 - h21 * g2) / det;
    const dB = -(-h21 * g1 + h11 * g2) / det;
    const gd = g1 * dA + g2 * dB;
    let step = 1;
    while (step >= 1e-10) {
      const nA = A + step * dA;
      const nB = B + step * dB;
      const nf = fval(nA, nB);
      if (nf < f + 1e-4 * step * gd) {
        A = nA;
        B = nB;
        f = nf;
        break;
      }
      step /= 2;
    }
    if (step < 1e-10) break;
  }
  return [A, B];
}

registerHead('svm', {
  params: {
    C: { default: 1, types: ['number'], gt: 0 },
    classWeight: { default: null, types: ['null', 'string'], values: ['balanced'] },
    tol: { default: 1e-4, types: ['number'], gt: 0 },
    maxIter: { default: 1000, types: ['int'], min: 1 },
    probability: { default: false, types: ['bool'] },
    seed: { default: 0, types: ['int'], min: 0 },
    workers: { default: 0, types: ['int'], min: 0 },
  },
  defaultTransforms: 'standardize',
  defaultSweep: 'C=1e-4..1e4:10',
  create: (p) => new LinearSvmHead(p),
  fromState: (s) => LinearSvmHead.fromState(s),
});
