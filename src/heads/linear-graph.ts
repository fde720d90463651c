/**
 * Fused per-row loss + gradient of the weighted multinomial logistic loss (without the L2 term, added in JS):
 *   Z = X·W + b, LSE = logsumexp(Z, 1), loss_i = sw_i·LSE_i − Σ_c Ys_ic·Z_ic (summed in float64 by
 *   the caller, so the line search sees decreases below float32 resolution of the total),
 *   R = softmax(Z)·sw − Ys, gW = Xᵀ·R, gb = Σ_i R_i.
 * Inputs X [n,d], W [d,k], b [k], Ys [n,k] (one-hot × sample weight), sw [n,1].
 */
import { emptyGraph, int64Tensor, makeModel, node, valueInfo } from '../onnx/builder.js';
import { DataType, type ModelProto } from '../onnx/proto.js';

export function buildLinearLossGrad(): ModelProto {
  const F = DataType.FLOAT;
  const g = emptyGraph('xfer_linear_lossgrad');
  g.input.push(valueInfo('X', F, ['n', 'd']), valueInfo('W', F, ['d', 'k']), valueInfo('b', F, ['k']), valueInfo('Ys', F, ['n', 'k']), valueInfo('sw', F, ['n', 1]));
  g.initializer.push(int64Tensor('ax0', [1], [0]), int64Tensor('ax1', [1], [1]));
  g.node.push(
    node('Gemm', ['X', 'W', 'b'], ['Z']),
    node('ReduceLogSumExp', ['Z'], ['LSE'], { axes: [1], keepdims: 1 }),
    node('Mul', ['LSE', 'sw'], ['wLSE']),
    node('Mul', ['Ys', 'Z'], ['YZ']),
    node('ReduceSum', ['YZ', 'ax1'], ['yz'], { keepdims: 1 }),
    node('Sub', ['wLSE', 'yz'], ['loss']),
    node('Softmax', ['Z'], ['P'], { axis: 1 }),
    node('Mul', ['P', 'sw'], ['Pw']),
    node('Sub', ['Pw', 'Ys'], ['R']),
    node('Gemm', ['X', 'R'], ['gW'], { transA: 1 }),
    node('ReduceSum', ['R', 'ax0'], ['gb'], { keepdims: 0 }),
  );
  g.output.push(valueInfo('loss', F, ['n', 1]), valueInfo('gW', F, ['d', 'k']), valueInfo('gb', F, ['k']));
  return makeModel(g, { opset: 13 });
}
