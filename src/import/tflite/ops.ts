/**
 * One converter per TFLite builtin operator. Each reads its operands through the context (which
 * applies the NCHW-inside layout rule) and writes its output under the TFLite tensor's name.
 */
import { XferError } from '../../errors.js';
import { NHWC_TO_NCHW_AXIS, TO_NCHW, elementCount, intValues, permute, realValues } from './constants.js';
import { onnxNameFor, type ConvertContext } from './context.js';
import type { TfliteOperator } from './model.js';
import {
  binaryActivation,
  concatOptions,
  convOptions,
  depthwiseOptions,
  fullyConnectedOptions,
  poolOptions,
  reducerKeepDims,
  reshapeNewShape,
  softmaxBeta,
  squeezeDims,
} from './options.js';
import { BuiltinOp, Padding } from './schema.js';

type OpConverter = (ctx: ConvertContext, op: TfliteOperator) => void;

/** TF "SAME" padding for one spatial axis: [begin, end] (the extra pixel goes at the end). */
export function samePads(inSize: number, kernel: number, stride: number, dilation: number): [number, number] {
  const effective = (kernel - 1) * dilation + 1;
  const outSize = Math.ceil(inSize / stride);
  const total = Math.max((outSize - 1) * stride + effective - inSize, 0);
  const begin = Math.floor(total / 2);
  return [begin, total - begin];
}

function spatialPads(ctx: ConvertContext, inputIdx: number, padding: number, kh: number, kw: number, sh: number, sw: number, dh: number, dw: number): number[] {
  if (padding === Padding.VALID) return [0, 0, 0, 0];
  const [, h, w] = ctx.tensor(inputIdx).shape;
  const [top, bottom] = samePads(h, kh, sh, dh);
  const [left, right] = samePads(w, kw, sw, dw);
  return [top, left, bottom, right];
}

function checkRank4(ctx: ConvertContext, op: TfliteOperator, idx: number): void {
  if (ctx.tensor(idx).shape.length !== 4) throw ctx.unsupported(op, `input of rank ${ctx.tensor(idx).shape.length}, expected 4`);
}

/** Bias as float: int32 biases use their own scale, else input_scale * weight_scale[c]. */
function biasValues(ctx: ConvertContext, op: TfliteOperator, channels: number): Float32Array {
  const bIdx = op.inputs[2];
  if (bIdx === undefined || bIdx < 0) return new Float32Array(channels);
  const b = ctx.tensor(bIdx);
  if (!ctx.isConst(bIdx)) throw ctx.unsupported(op, 'non-constant bias');
  if (b.quant || b.type === 0 || b.type === 1) return realValues(ctx.model, b);
  const xs = ctx.tensor(op.inputs[0]).quant?.scale[0] ?? 1;
  const ws = ctx.tensor(op.inputs[1]).quant?.scale ?? [1];
  const raw = intValues(ctx.model, b);
  return Float32Array.from(raw, (v, c) => v * xs * (ws.length > 1 ? ws[c] : ws[0]));
}

function weights(ctx: ConvertContext, op: TfliteOperator): { data: Float32Array; shape: number[]; name: string } {
  const wIdx = op.inputs[1];
  if (!ctx.isConst(wIdx)) throw ctx.unsupported(op, 'non-constant weights');
  const w = ctx.tensor(wIdx);
  return { data: realValues(ctx.model, w), shape: w.shape, name: onnxNameFor(w.name) };
}

/** The ONNX Conv (plus fused activation) shared by CONV_2D and DEPTHWISE_CONV_2D. */
function emitConv(ctx: Parameters<OpConverter>[0], op: Parameters<OpConverter>[1], o: ConvLikeOptions, W: string, B: string, kh: number, kw: number, group: number): void {
  const { pre, finish } = ctx.fusedOutput(op, o.activation);
  ctx.emit('Conv', [ctx.value(op.inputs[0]), W, B], [pre], {
    kernel_shape: [kh, kw],
    strides: [o.strideH, o.strideW],
    dilations: [o.dilationH, o.dilationW],
    pads: spatialPads(ctx, op.inputs[0], o.padding, kh, kw, o.strideH, o.strideW, o.dilationH, o.dilationW),
    group,
  });
  finish();
}

/** The fields CONV_2D and DEPTHWISE_CONV_2D options share. */
type ConvLikeOptions = Pick<ReturnType<typeof convOptions>, 'activation' | 'strideH' | 'strideW' | 'dilationH' | 'dilationW' | 'padding'>;

const conv2d: OpConverter = (ctx, op) => {
  checkRank4(ctx, op, op.inputs[0]);
  const o = convOptions(ctx.model.reader, op.options);
  const w = weights(ctx, op);
  const [cout, kh, kw, cin] = w.shape;
  const inC = ctx.tensor(op.inputs[0]).shape[3];
  const oihw = permute(w.data, w.shape, TO_NCHW);
  const W = ctx.addFloat(w.name, oihw.shape, oihw.data);
  const B = ctx.addFloat(op.inputs[2] >= 0 ? onnxNameFor(ctx.tensor(op.inputs[2]).name) : `${w.name}__bias`, [cout], biasValues(ctx, op, cout));
  emitConv(ctx, op, o, W, B, kh, kw, inC / cin);
};

const depthwiseConv2d: OpConverter = (ctx, op) => {
  checkRank4(ctx, op, op.inputs[0]);
  const o = depthwiseOptions(ctx.model.reader, op.options);
  const w = ctx.isConst(op.inputs[1]) ? weights(ctx, op) : null;
  if (!w) throw ctx.unsupported(op, 'non-constant weights');
  const [, kh, kw, cout] = w.shape;
  const inC = ctx.tensor(op.inputs[0]).shape[3];
  // [1, KH, KW, C*M] → [C*M, 1, KH, KW]; output channel c*M+m belongs to group c, as in ONNX.
  const ohw = permute(w.data, w.shape, [3, 0, 1, 2]);
  const W = ctx.addFloat(w.name, ohw.shape, ohw.data);
  const B = ctx.addFloat(op.inputs[2] >= 0 ? onnxNameFor(ctx.tensor(op.inputs[2]).name) : `${w.name}__bias`, [cout], biasValues(ctx, op, cout));
  emitConv(ctx, op, o, W, B, kh, kw, inC);
};

const fullyConnected: OpConverter = (ctx, op) => {
  const o = fullyConnectedOptions(ctx.model.reader, op.options);
  if (o.weightsFormat !== 0) throw ctx.unsupported(op, 'shuffled weights format');
  const w = weights(ctx, op);
  const [units, depth] = w.shape;
  const B = ctx.addFloat(op.inputs[2] >= 0 ? onnxNameFor(ctx.tensor(op.inputs[2]).name) : `${w.name}__bias`, [units], biasValues(ctx, op, units));
  const x = ctx.tensor(op.inputs[0]);
  const outT = ctx.tensor(op.outputs[0]);
  const { pre, finish } = ctx.fusedOutput(op, o.activation);
  if (o.keepNumDims && x.shape.length !== 2) {
    // Dense on the last axis, keeping the leading ones: MatMul with W^T then Add, in TFLite order.
    const wt = permute(w.data, w.shape, [1, 0]);
    const W = ctx.addFloat(w.name, wt.shape, wt.data);
    const mm = ctx.fresh(`${pre}__matmul`);
    ctx.emit('MatMul', [ctx.native(op.inputs[0]), W], [mm]);
    if (outT.shape.length === 4) {
      const nhwc = ctx.fresh(`${pre}__nhwc`);
      ctx.emit('Add', [mm, B], [nhwc]);
      ctx.emit('Transpose', [nhwc], [pre], { perm: TO_NCHW });
    } else ctx.emit('Add', [mm, B], [pre]);
    finish();
    return;
  }
  const W = ctx.addFloat(w.name, w.shape, w.data);
  let input = ctx.native(op.inputs[0]);
  if (x.shape.length !== 2) {
    const flat = ctx.fresh(`${input}__flat`);
    ctx.emit('Reshape', [input, ctx.addInt64('shape', [-1, depth])], [flat]);
    input = flat;
  }
  ctx.emit('Gemm', [input, W, B], [pre], { transB: 1 });
  finish();
};

function pool(onnxOp: 'AveragePool' | 'MaxPool'): OpConverter {
  return (ctx, op) => {
    checkRank4(ctx, op, op.inputs[0]);
    const o = poolOptions(ctx.model.reader, op.options);
    const { pre, finish } = ctx.fusedOutput(op, o.activation);
    ctx.emit(onnxOp, [ctx.value(op.inputs[0])], [pre], {
      kernel_shape: [o.filterH, o.filterW],
      strides: [o.strideH, o.strideW],
      pads: spatialPads(ctx, op.inputs[0], o.padding, o.filterH, o.filterW, o.strideH, o.strideW, 1, 1),
    });
    finish();
  };
}

function binary(onnxOp: 'Add' | 'Mul'): OpConverter {
  return (ctx, op) => {
    const act = binaryActivation(ctx.model.reader, op.options);
    const rank = ctx.tensor(op.outputs[0]).shape.length;
    const a = ctx.broadcastOperand(op.inputs[0], rank);
    const b = ctx.broadcastOperand(op.inputs[1], rank);
    const { pre, finish } = ctx.fusedOutput(op, act);
    ctx.emit(onnxOp, [a, b], [pre]);
    finish();
  };
}

function unary(onnxOp: string, extra: (ctx: ConvertContext) => string[] = () => []): OpConverter {
  return (ctx, op) => {
    const x = ctx.value(op.inputs[0]);
    ctx.emit(onnxOp, [x, ...extra(ctx)], [ctx.define(op.outputs[0])]);
  };
}

const concatenation: OpConverter = (ctx, op) => {
  const o = concatOptions(ctx.model.reader, op.options);
  const rank = ctx.tensor(op.outputs[0]).shape.length;
  let axis = o.axis < 0 ? o.axis + rank : o.axis;
  if (rank === 4) axis = NHWC_TO_NCHW_AXIS[axis];
  const { pre, finish } = ctx.fusedOutput(op, o.activation);
  ctx.emit('Concat', op.inputs.map((i) => ctx.value(i)), [pre], { axis });
  finish();
};

/**
 * Reduce/squeeze `axes` (NHWC numbering) of a rank-4 input held as NCHW: directly when the kept axes
 * come out in the same order either way, else on an NHWC copy. Returns [input, axes to use].
 */
function dropAxes(ctx: ConvertContext, idx: number, axes: number[], keepDims: boolean): [string, number[]] {
  const rank = ctx.tensor(idx).shape.length;
  if (rank !== 4) return [ctx.value(idx), axes];
  const mapped = axes.map((a) => NHWC_TO_NCHW_AXIS[a]);
  const keptInNchwOrder = TO_NCHW.filter((a) => !axes.includes(a));
  const sameOrder = keptInNchwOrder.every((a, i) => i === 0 || a > keptInNchwOrder[i - 1]);
  if (keepDims || sameOrder) return [ctx.value(idx), mapped];
  return [ctx.native(idx), axes];
}

function normAxes(axes: number[], rank: number): number[] {
  return [...new Set(axes.map((a) => (a < 0 ? a + rank : a)))].sort((a, b) => a - b);
}

const mean: OpConverter = (ctx, op) => {
  if (!ctx.isConst(op.inputs[1])) throw ctx.unsupported(op, 'non-constant axes');
  const rank = ctx.tensor(op.inputs[0]).shape.length;
  const axes = normAxes(intValues(ctx.model, ctx.tensor(op.inputs[1])), rank);
  const keepDims = reducerKeepDims(ctx.model.reader, op.options);
  const [x, onnxAxes] = dropAxes(ctx, op.inputs[0], axes, keepDims);
  ctx.emit('ReduceMean', [x], [ctx.define(op.outputs[0])], { axes: onnxAxes, keepdims: keepDims ? 1 : 0 });
};

const squeeze: OpConverter = (ctx, op) => {
  const shape = ctx.tensor(op.inputs[0]).shape;
  let axes = normAxes(squeezeDims(ctx.model.reader, op.options), shape.length);
  if (axes.length === 0) axes = shape.flatMap((d, i) => (d === 1 ? [i] : []));
  const [x, onnxAxes] = dropAxes(ctx, op.inputs[0], axes, false);
  ctx.emit('Squeeze', [x, ctx.addInt64('axes', onnxAxes)], [ctx.define(op.outputs[0])]);
};

const reshape: OpConverter = (ctx, op) => {
  const inT = ctx.tensor(op.inputs[0]);
  const outT = ctx.tensor(op.outputs[0]);
  let target = outT.shape.length > 0 || inT.shape.length === 0 ? [...outT.shape] : null;
  if (!target) {
    const fromInput = op.inputs[1] !== undefined && op.inputs[1] >= 0 && ctx.isConst(op.inputs[1]) ? intValues(ctx.model, ctx.tensor(op.inputs[1])) : null;
    target = fromInput ?? reshapeNewShape(ctx.model.reader, op.options);
    if (!target) throw ctx.unsupported(op, 'output shape unknown');
  }
  if (elementCount(target) !== elementCount(inT.shape)) throw ctx.unsupported(op, `reshape [${inT.shape}] → [${target}] changes the element count`);
  // Keep the batch free: a leading dim equal to the input's batch becomes -1.
  if (target.length > 0 && inT.shape.length > 0 && target[0] === inT.shape[0] && target[0] === ctx.batch && ctx.symbolicBatch) target[0] = -1;
  const x = ctx.native(op.inputs[0]);
  const out = ctx.define(op.outputs[0]);
  if (target.length === 4) {
    const nhwc = ctx.fresh(`${out}__nhwc`);
    ctx.emit('Reshape', [x, ctx.addInt64('shape', target)], [nhwc]);
    ctx.emit('Transpose', [nhwc], [out], { perm: TO_NCHW });
  } else ctx.emit('Reshape', [x, ctx.addInt64('shape', target)], [out]);
};

const softmax: OpConverter = (ctx, op) => {
  const beta = softmaxBeta(ctx.model.reader, op.options);
  const rank = ctx.tensor(op.inputs[0]).shape.length;
  let x = ctx.value(op.inputs[0]);
  if (beta !== 1) {
    const scaled = ctx.fresh(`${x}__beta`);
    ctx.emit('Mul', [x, ctx.scalar(beta)], [scaled]);
    x = scaled;
  }
  ctx.emit('Softmax', [x], [ctx.define(op.outputs[0])], { axis: rank === 4 ? 1 : -1 });
};

const pad: OpConverter = (ctx, op) => {
  if (!ctx.isConst(op.inputs[1])) throw ctx.unsupported(op, 'non-constant paddings');
  const rank = ctx.tensor(op.inputs[0]).shape.length;
  const p = intValues(ctx.model, ctx.tensor(op.inputs[1]));
  if (p.length !== 2 * rank) throw ctx.unsupported(op, `paddings of ${p.length} values for rank ${rank}`);
  const order = rank === 4 ? TO_NCHW : [...Array(rank).keys()];
  const pads = [...order.map((a) => p[2 * a]), ...order.map((a) => p[2 * a + 1])];
  ctx.emit('Pad', [ctx.value(op.inputs[0]), ctx.addInt64('pads', pads)], [ctx.define(op.outputs[0])], { mode: 'constant' });
};

/** In float, QUANTIZE and DEQUANTIZE keep the real value. */
const identity = unary('Identity');

const CONVERTERS: Record<number, OpConverter> = {
  [BuiltinOp.CONV_2D]: conv2d,
  [BuiltinOp.DEPTHWISE_CONV_2D]: depthwiseConv2d,
  [BuiltinOp.FULLY_CONNECTED]: fullyConnected,
  [BuiltinOp.ADD]: binary('Add'),
  [BuiltinOp.MUL]: binary('Mul'),
  [BuiltinOp.CONCATENATION]: concatenation,
  [BuiltinOp.AVERAGE_POOL_2D]: pool('AveragePool'),
  [BuiltinOp.MAX_POOL_2D]: pool('MaxPool'),
  [BuiltinOp.MEAN]: mean,
  [BuiltinOp.PAD]: pad,
  [BuiltinOp.RESHAPE]: reshape,
  [BuiltinOp.SQUEEZE]: squeeze,
  [BuiltinOp.SOFTMAX]: softmax,
  [BuiltinOp.RELU]: unary('Relu'),
  [BuiltinOp.RELU6]: unary('Clip', (ctx) => [ctx.scalar(0), ctx.scalar(6)]),
  [BuiltinOp.RELU_N1_TO_1]: unary('Clip', (ctx) => [ctx.scalar(-1), ctx.scalar(1)]),
  [BuiltinOp.TANH]: unary('Tanh'),
  [BuiltinOp.HARD_SWISH]: unary('HardSwish'),
  [BuiltinOp.LOGISTIC]: unary('Sigmoid'),
  [BuiltinOp.QUANTIZE]: identity,
  [BuiltinOp.DEQUANTIZE]: identity,
};

/** Convert one operator, or throw an XferError naming it. */
export function convertOperator(ctx: ConvertContext, op: TfliteOperator): void {
  const code = ctx.model.operatorCodes[op.opcodeIndex];
  if (!code) throw new XferError(`${ctx.file}: operator ${op.index} uses opcode index ${op.opcodeIndex}, but the model has ${ctx.model.operatorCodes.length} operator codes`, { hint: 'the file is damaged; convert it again' });
  const fn = code.custom === undefined ? CONVERTERS[code.builtin] : undefined;
  if (!fn) throw ctx.unsupported(op);
  if (op.outputs.length !== 1) throw ctx.unsupported(op, `${op.outputs.length} outputs`);
  fn(ctx, op);
}
