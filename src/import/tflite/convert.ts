/**
 * TFLite model → float ONNX ModelProto. The graph input stays NHWC (float, symbolic batch) and is
 * transposed once to NCHW; inside, rank-4 tensors are NCHW under their TFLite names; rank-4 graph
 * outputs are transposed back to NHWC. Quantized tensors run in float (real values).
 */
import path from 'node:path';
import { XferError } from '../../errors.js';
import { emptyGraph, makeModel, valueInfo } from '../../onnx/builder.js';
import { DataType, type ModelProto } from '../../onnx/proto.js';
import { TO_NCHW } from './constants.js';
import { ConvertContext, onnxNameFor } from './context.js';
import type { TfliteModel, TfliteTensor } from './model.js';
import { convertOperator } from './ops.js';
import { TensorType, tensorTypeName } from './schema.js';

/** How the TFLite model's own input relates to the real-valued ONNX input. */
export interface TfliteInputInfo {
  name: string;
  /** TFLite shape, NHWC for images. */
  shape: number[];
  /** The TFLite input's storage type: 'float32', 'uint8' or 'int8'. */
  type: string;
  /** real = scale * (q - zeroPoint) for quantized inputs. */
  scale?: number;
  zeroPoint?: number;
}

export function describeInput(model: TfliteModel): TfliteInputInfo {
  const sg = model.subgraphs[0];
  checkSingleInput(model);
  const t = sg.tensors[sg.inputs[0]];
  const q = t.quant && (t.type === TensorType.UINT8 || t.type === TensorType.INT8) ? { scale: t.quant.scale[0], zeroPoint: t.quant.zeroPoint[0] ?? 0 } : {};
  return { name: t.name, shape: [...t.shape], type: tensorTypeName(t.type), ...q };
}

function checkSingleInput(model: TfliteModel): void {
  const sg = model.subgraphs[0];
  if (sg.inputs.length !== 1) {
    const names = sg.inputs.map((i) => `"${sg.tensors[i]?.name ?? i}"`).join(', ');
    throw new XferError(`${model.file}: TFLite model has ${sg.inputs.length} inputs (${names}); xfer imports single-input image models`, {
      hint: 'export the backbone with one image input (and no extra state/parameter inputs)',
      code: 'EINPUTS',
    });
  }
}

function checkStatic(model: TfliteModel, t: TfliteTensor): void {
  const dyn = (t.shapeSignature ?? t.shape).some((d, i) => i > 0 && d < 0) || t.shape.some((d, i) => i > 0 && d < 0);
  if (dyn) {
    throw new XferError(`${model.file}: tensor "${t.name}" has a dynamic shape [${(t.shapeSignature ?? t.shape).join(', ')}]; only the batch dimension may be dynamic`, {
      hint: 're-export the TFLite model with a fixed input size (e.g. 224x224)',
      code: 'EDYNAMIC',
    });
  }
}

/** Convert a parsed TFLite model to ONNX (opset 17). */
export function convertTflite(model: TfliteModel): ModelProto {
  const sg = model.subgraphs[0];
  checkSingleInput(model);
  for (const t of sg.tensors) checkStatic(model, t);
  const inIdx = sg.inputs[0];
  const inT = sg.tensors[inIdx];
  if (!inT) throw new XferError(`${model.file}: input tensor index ${inIdx} is out of range`, { hint: 'the file is damaged; convert it again' });
  if (![TensorType.FLOAT32, TensorType.UINT8, TensorType.INT8].includes(inT.type as 0 | 3 | 9)) {
    throw new XferError(`${model.file}: input "${inT.name}" has type ${tensorTypeName(inT.type)}; xfer imports image models with float32, uint8 or int8 inputs`, { hint: 'pick an image classification / feature-vector TFLite model' });
  }

  const graph = emptyGraph(sg.name || path.basename(model.file, path.extname(model.file)));
  const ctx = new ConvertContext(model, sg, graph);
  ctx.batch = inT.shape[0] ?? 1;
  ctx.symbolicBatch = inT.shape.length >= 2 && (ctx.batch === 1 || inT.shapeSignature?.[0] === -1);

  const inputName = ctx.fresh(onnxNameFor(inT.name));
  graph.input.push(valueInfo(inputName, DataType.FLOAT, ctx.onnxDims(inIdx, true)));
  if (inT.shape.length === 4) {
    const nchw = ctx.fresh(`${inputName}__nchw`);
    ctx.emit('Transpose', [inputName], [nchw], { perm: TO_NCHW });
    ctx.bind(inIdx, nchw);
  } else ctx.bind(inIdx, inputName);

  // Activations claim their names before any weight does (fused names often share a first part).
  for (const op of sg.operators) for (const o of op.outputs) if (o >= 0 && !ctx.isConst(o)) ctx.define(o);
  for (const op of sg.operators) convertOperator(ctx, op);

  const outputNames = new Set<string>([inputName]);
  for (const idx of sg.outputs) {
    const name = ctx.value(idx);
    const rank4 = sg.tensors[idx].shape.length === 4;
    const out = rank4 ? ctx.transpose(name, [0, 2, 3, 1], 'nhwc') : name;
    graph.output.push(valueInfo(out, DataType.FLOAT, ctx.onnxDims(idx, true)));
    outputNames.add(out);
  }
  ctx.recordValueInfos(outputNames);

  const info = describeInput(model);
  return makeModel(graph, {
    opset: 17,
    producerName: 'xfer import tflite',
    docString: `Converted from ${path.basename(model.file)} (TFLite schema v${model.version}${model.description ? `, ${model.description}` : ''}). Input NHWC float holding the real-valued TFLite input; rank-4 tensors inside are NCHW.`,
    metadata: {
      'xfer.source_format': 'tflite',
      'xfer.source_file': path.basename(model.file),
      'xfer.input_layout': 'NHWC',
      'xfer.tflite_input': JSON.stringify(info),
    },
  });
}
