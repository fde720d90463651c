/**
 * One fused ORT graph for MLP training steps: forward (Gemm + ReLU [+ dropout mask]), softmax
 * cross-entropy, backward (Gemm with transposes), L2 weight decay and the Adam update of every
 * parameter — and `unroll` consecutive minibatch steps chained inside one graph, so a session.run
 * covers several steps and the parameters and Adam moments cross the JS boundary once per run.
 *
 * Inputs:  X__u [m,d], Y__u [m,k] one-hot, M<l>__u [m,h_l] dropout masks (0 or 1/keep; only with
 *          dropout), lr_t__u [] (Adam step size with bias correction) for each step u < unroll;
 *          decay [] (alpha/m), inv_m [] (1/m); per layer l: W<l>, b<l>, mW<l>, vW<l>, mb<l>, vb<l>.
 * Outputs: W<l>_new, b<l>_new, mW<l>_new, ... after the last step; loss [] (Σ cross-entropy over
 *          all rows of all steps, each row's clipped as scikit-learn's log_loss clips p; the gradient
 *          is the unclipped P − Y, as there), sq [] (Σ over steps of ‖W‖² before each update).
 */
import { emptyGraph, floatTensor, int64Tensor, makeModel, node, valueInfo } from '../onnx/builder.js';
import { DataType, type ModelProto, type NodeProto } from '../onnx/proto.js';

/** float32 machine epsilon (2^−23), the clip scikit-learn's log_loss uses for float32 activations. */
const F32_EPS = 2 ** -23;

export function buildMlpStep(dims: number[], dropout: boolean, unroll = 1, b1 = 0.9, b2 = 0.999, eps = 1e-8): ModelProto {
  const L = dims.length - 1;
  const g = emptyGraph('xfer_mlp_step');
  const F = DataType.FLOAT;
  const n: NodeProto[] = g.node;
  g.input.push(valueInfo('decay', F, []), valueInfo('inv_m', F, []));
  for (let l = 0; l < L; l++) {
    const wd = [dims[l], dims[l + 1]];
    const bd = [dims[l + 1]];
    g.input.push(valueInfo(`W${l}`, F, wd), valueInfo(`b${l}`, F, bd));
    g.input.push(valueInfo(`mW${l}`, F, wd), valueInfo(`vW${l}`, F, wd), valueInfo(`mb${l}`, F, bd), valueInfo(`vb${l}`, F, bd));
  }
  g.initializer.push(
    floatTensor('c_b1', [], [b1]),
    floatTensor('c_1b1', [], [1 - b1]),
    floatTensor('c_b2', [], [b2]),
    floatTensor('c_1b2', [], [1 - b2]),
    floatTensor('c_eps', [], [eps]),
    // scikit-learn's log_loss clips p to [eps, 1 − eps] (float32 eps): each row's reported loss lies in [−log(1 − eps), −log eps]
    floatTensor('c_nll_lo', [], [-Math.log1p(-F32_EPS)]),
    floatTensor('c_nll_hi', [], [-Math.log(F32_EPS)]),
    int64Tensor('ax0', [1], [0]),
  );
  // current names of every parameter / moment (inputs first, then each step's outputs)
  const cur: Record<string, string> = {};
  for (let l = 0; l < L; l++) for (const p of [`W${l}`, `b${l}`]) for (const q of [p, `m${p}`, `v${p}`]) cur[q] = q;
  const losses: string[] = [];
  const sqs: string[] = [];
  for (let u = 0; u < unroll; u++) {
    const t = (x: string): string => `${x}__${u}`;
    g.input.push(valueInfo(t('X'), F, ['m', dims[0]]), valueInfo(t('Y'), F, ['m', dims[L]]), valueInfo(t('lr_t'), F, []));
    for (let l = 0; l < L - 1 && dropout; l++) g.input.push(valueInfo(t(`M${l}`), F, ['m', dims[l + 1]]));
    // forward
    let a = t('X');
    for (let l = 0; l < L; l++) {
      n.push(node('Gemm', [a, cur[`W${l}`], cur[`b${l}`]], [t(`Z${l}`)]));
      if (l < L - 1) {
        n.push(node('Relu', [t(`Z${l}`)], [t(`R${l}`)]));
        if (dropout) n.push(node('Mul', [t(`R${l}`), t(`M${l}`)], [t(`A${l}`)]));
        a = dropout ? t(`A${l}`) : t(`R${l}`);
      }
    }
    const Z = t(`Z${L - 1}`);
    n.push(node('Softmax', [Z], [t('P')], { axis: 1 }));
    n.push(node('ReduceLogSumExp', [Z], [t('LSE')], { axes: [1], keepdims: 1 }));
    n.push(node('Sub', [t('LSE'), Z], [t('NLLraw')]));
    n.push(node('Clip', [t('NLLraw'), 'c_nll_lo', 'c_nll_hi'], [t('NLL')]));
    n.push(node('Mul', [t('NLL'), t('Y')], [t('NLLY')]));
    n.push(node('ReduceSum', [t('NLLY')], [t('loss')], { keepdims: 0 }));
    losses.push(t('loss'));
    n.push(node('Sub', [t('P'), t('Y')], [t('PY')]));
    n.push(node('Mul', [t('PY'), 'inv_m'], [t(`D${L - 1}`)]));
    // backward + Adam, last layer first (all gradients use the pre-update weights of this step)
    const next: Record<string, string> = {};
    for (let l = L - 1; l >= 0; l--) {
      const inp = l === 0 ? t('X') : dropout ? t(`A${l - 1}`) : t(`R${l - 1}`);
      const D = t(`D${l}`);
      const W = cur[`W${l}`];
      n.push(node('Gemm', [inp, D], [t(`gWraw${l}`)], { transA: 1 }));
      n.push(node('Mul', [W, 'decay'], [t(`wd${l}`)]));
      n.push(node('Add', [t(`gWraw${l}`), t(`wd${l}`)], [t(`gW${l}`)]));
      n.push(node('ReduceSum', [D, 'ax0'], [t(`gb${l}`)], { keepdims: 0 }));
      n.push(node('ReduceSumSquare', [W], [t(`sq${l}`)], { keepdims: 0 }));
      sqs.push(t(`sq${l}`));
      if (l > 0) {
        n.push(node('Gemm', [D, W], [t(`dA${l - 1}`)], { transB: 1 }));
        n.push(node('Sign', [t(`R${l - 1}`)], [t(`rs${l - 1}`)]));
        if (dropout) {
          n.push(node('Mul', [t(`dA${l - 1}`), t(`M${l - 1}`)], [t(`dAm${l - 1}`)]));
          n.push(node('Mul', [t(`dAm${l - 1}`), t(`rs${l - 1}`)], [t(`D${l - 1}`)]));
        } else n.push(node('Mul', [t(`dA${l - 1}`), t(`rs${l - 1}`)], [t(`D${l - 1}`)]));
      }
      for (const [p, gr] of [
        [`W${l}`, t(`gW${l}`)],
        [`b${l}`, t(`gb${l}`)],
      ]) {
        next[p] = t(`${p}_new`);
        next[`m${p}`] = t(`m${p}_new`);
        next[`v${p}`] = t(`v${p}_new`);
        adam(n, cur[p], cur[`m${p}`], cur[`v${p}`], gr, t('lr_t'), t(p), { p: next[p], m: next[`m${p}`], v: next[`v${p}`] });
      }
    }
    Object.assign(cur, next);
  }
  for (const [name, last] of Object.entries(cur)) {
    n.push(node('Identity', [last], [`${name}_new`]));
    g.output.push(valueInfo(`${name}_new`, F, null));
  }
  n.push(node('Sum', losses, ['loss']));
  n.push(node('Sum', sqs, ['sq']));
  g.output.push(valueInfo('loss', F, []), valueInfo('sq', F, []));
  return makeModel(g, { opset: 13 });
}

/** Adam: m' = β1 m + (1−β1) g; v' = β2 v + (1−β2) g²; p' = p − lr_t · m' / (√v' + ε). */
function adam(n: NodeProto[], p: string, m: string, v: string, gr: string, lr: string, tag: string, out: { p: string; m: string; v: string }): void {
  const x = (s: string): string => `${tag}_${s}`;
  n.push(node('Mul', [m, 'c_b1'], [x('m1')]));
  n.push(node('Mul', [gr, 'c_1b1'], [x('m2')]));
  n.push(node('Add', [x('m1'), x('m2')], [out.m]));
  n.push(node('Mul', [gr, gr], [x('g2')]));
  n.push(node('Mul', [v, 'c_b2'], [x('v1')]));
  n.push(node('Mul', [x('g2'), 'c_1b2'], [x('v2')]));
  n.push(node('Add', [x('v1'), x('v2')], [out.v]));
  n.push(node('Sqrt', [out.v], [x('sv')]));
  n.push(node('Add', [x('sv'), 'c_eps'], [x('den')]));
  n.push(node('Div', [out.m, x('den')], [x('q')]));
  n.push(node('Mul', [x('q'), lr], [x('step')]));
  n.push(node('Sub', [p, x('step')], [out.p]));
}
