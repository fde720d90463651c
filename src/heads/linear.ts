/**
 * `linear`: multinomial logistic regression, L2, solved by L-BFGS — the same objective scaling and
 * stopping rule as scikit-learn ≥ 1.5's LogisticRegression(solver='lbfgs'):
 *   minimise  (1/S) Σ_i s_i · (−log softmax(W x_i + b)_{y_i}) + ‖W‖² / (2 C S)   (intercept not penalised)
 * with s_i = class weight of y_i (1, or n/(k·n_c) for class_weight='balanced') and S = Σ s_i — the
 * minimiser of the summed form C·Σ loss + ½‖W‖², but the gradient test max|∇| ≤ tol (1e-4) applies
 * to the mean loss, as scikit-learn's does; or a relative decrease ≤ 64·eps, or maxIter (100).
 * A fit may start from a neighbouring fit (`FitContext.warmStart`, used along a C sweep).
 * Each evaluation is ONE fused ORT graph (Z = X·W + b, log-sum-exp, softmax residual R, ∇W = Xᵀ·R);
 * X is fed by reference every time (no copy).
 */
import type ort from 'onnxruntime-node';
import { gemm } from './kernel/matmul.js';
import { graphSession, tensor } from './kernel/graph.js';
import { buildLinearLossGrad } from './linear-graph.js';
import { lbfgs } from './lbfgs.js';
import { argmaxRows, balancedWeights, softmaxRows, type Matrix } from './matrix.js';
import type { GraphPart, OnnxHeadOutputs } from '../onnx/graph-part.js';
import { checkFitInput, checkFitted, checkPredictInput, num, registerHead, type FitContext, type Head, type HeadParams, type HeadState } from './head.js';

export class LinearHead implements Head {
  readonly kind = 'linear' as const;
  readonly probabilistic = true;
  nClasses = 0;
  nFeatures = 0;
  info: Record<string, unknown> = {};
  /** d×k weights (row-major) and k biases. */
  W: Float32Array = new Float32Array(0);
  b: Float32Array = new Float32Array(0);

  constructor(readonly params: HeadParams) {}

  async fit(X: Matrix, y: Int32Array, nClasses?: number, ctx: FitContext = {}): Promise<this> {
    const k = checkFitInput('linear', X, y, nClasses);
    const { rows: n, cols: d, data } = X;
    const C = num(this.params, 'C');
    const sw = new Float64Array(n).fill(1);
    if (this.params.classWeight === 'balanced') {
      const cw = balancedWeights(y, k);
      for (let i = 0; i < n; i++) sw[i] = cw[y[i]];
    }
    let S = 0;
    for (let i = 0; i < n; i++) S += sw[i];
    const invC = 1 / (C * S);
    const W32 = new Float32Array(d * k);
    const b32 = new Float32Array(k);
    // one fused graph per evaluation: logits, log-sum-exp, softmax residual and Xᵀ·R (linear-graph.ts)
    const Ys = new Float32Array(n * k);
    const sw32 = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      Ys[i * k + y[i]] = sw[i] / S;
      sw32[i] = sw[i] / S;
    }
    const sess = await graphSession('linear-lossgrad', buildLinearLossGrad, n * d * k);
    const feeds: Record<string, ort.Tensor> = {
      X: tensor(data, [n, d]),
      W: tensor(W32, [d, k]),
      b: tensor(b32, [k]),
      Ys: tensor(Ys, [n, k]),
      sw: tensor(sw32, [n, 1]),
    };
    // parameter vector: [W (d×k row-major), b (k)]
    const fun = async (w: Float64Array, grad: Float64Array): Promise<number> => {
      for (let i = 0; i < d * k; i++) W32[i] = w[i];
      for (let c = 0; c < k; c++) b32[c] = w[d * k + c];
      const out = await sess.run(feeds);
      const G = out.gW.data as Float32Array;
      const gb = out.gb.data as Float32Array;
      let reg = 0;
      for (let i = 0; i < d * k; i++) {
        reg += w[i] * w[i];
        grad[i] = G[i] + invC * w[i];
      }
      for (let c = 0; c < k; c++) grad[d * k + c] = gb[c];
      const lr = out.loss.data as Float32Array;
      let loss = 0;
      for (let i = 0; i < n; i++) loss += lr[i];
      return loss + 0.5 * invC * reg;
    };
    const w0 = new Float64Array(d * k + k);
    const init = ctx.warmStart;
    if (init instanceof LinearHead && init.nFeatures === d && init.nClasses === k) {
      for (let i = 0; i < d * k; i++) w0[i] = init.W[i];
      for (let c = 0; c < k; c++) w0[d * k + c] = init.b[c];
    }
    const t0 = performance.now();
    const res = await lbfgs(fun, w0, {
      maxIter: num(this.params, 'maxIter'),
      gtol: num(this.params, 'tol'),
      ftol: 64 * Number.EPSILON,
      maxLs: 50,
      fNoise: 2e-7,
      onIter: (it, f, gmax, ev) => ctx.progress?.({ phase: "lbfgs", iter: it, loss: f, msg: `|g|=${gmax.toExponential(2)} evals=${ev}` }),
    });
    if (!res.converged) ctx.warn?.(`linear: L-BFGS stopped after ${res.iters} iterations (${res.reason}); raise maxIter or lower C`);
    this.W = new Float32Array(d * k);
    for (let i = 0; i < d * k; i++) this.W[i] = res.w[i];
    this.b = new Float32Array(k);
    for (let c = 0; c < k; c++) this.b[c] = res.w[d * k + c];
    this.nClasses = k;
    this.nFeatures = d;
    this.info = { iterations: res.iters, evaluations: res.evals, converged: res.converged, stop: res.reason, objective: res.f, fitSeconds: (performance.now() - t0) / 1000 };
    return this;
  }

  async decisionFunction(X: Matrix): Promise<Float32Array> {
    checkPredictInput(this, X);
    return gemm(X.data, this.W, X.rows, X.cols, this.nClasses, { bias: this.b });
  }

  async predictProba(X: Matrix): Promise<Float32Array> {
    return softmaxRows(await this.decisionFunction(X), X.rows, this.nClasses);
  }

  async predict(X: Matrix): Promise<Int32Array> {
    return argmaxRows(await this.decisionFunction(X), X.rows, this.nClasses);
  }

  /** MatMul + Add → Softmax. */
  toOnnx(g: GraphPart, x: string): OnnxHeadOutputs {
    checkFitted(this);
    const z = g.op('MatMul', [x, g.const('W', [this.nFeatures, this.nClasses], this.W)]);
    const scores = g.op('Add', [z, g.const('b', [this.nClasses], this.b)]);
    return { scores, probs: g.op('Softmax', [scores], { axis: 1 }) };
  }

  toState(): HeadState {
    return {
      kind: 'linear',
      params: this.params,
      nClasses: this.nClasses,
      nFeatures: this.nFeatures,
      info: this.info,
      arrays: { W: this.W, b: this.b },
      shapes: { W: [this.nFeatures, this.nClasses], b: [this.nClasses] },
    };
  }

  static fromState(s: HeadState): LinearHead {
    const h = new LinearHead(s.params);
    h.nClasses = s.nClasses;
    h.nFeatures = s.nFeatures;
    h.info = s.info;
    h.W = s.arrays.W as Float32Array;
    h.b = s.arrays.b as Float32Array;
    return h;
  }
}

registerHead('linear', {
  params: {
    C: { default: 1, types: ['number'], gt: 0 },
    classWeight: { default: null, types: ['null', 'string'], values: ['balanced'] },
    tol: { default: 1e-4, types: ['number'], gt: 0 },
    maxIter: { default: 100, types: ['int'], min: 1 },
  },
  defaultTransforms: 'none',
  defaultSweep: 'C=1e-4..1e4:10',
  create: (p) => new LinearHead(p),
  fromState: (s) => LinearHead.fromState(s),
});
