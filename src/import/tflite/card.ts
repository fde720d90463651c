/**
 * A starting model card for an imported TFLite model, from what the file itself says: input size,
 * the input quantization (which fixes how 0..255 pixels map to the real-valued input), and whether the
 * last op is a softmax. Labels, taps and crop policy need a human; sensible defaults are filled in.
 */
import path from 'node:path';
import type { ModelCard } from '../../model/card.js';
import { describeInput } from './convert.js';
import type { TfliteModel } from './model.js';
import { BuiltinOp } from './schema.js';

/** Pixel mapping of the TFLite input: uint8 q = p; int8 q = p - 128; real = scale * (q - zero_point). */
function inputMapping(model: TfliteModel): { range: [number, number]; mean: number; std: number; note: string } {
  const info = describeInput(model);
  if (info.scale !== undefined && info.scale > 0) {
    const zp = info.zeroPoint ?? 0;
    const mean = info.type === 'int8' ? zp + 128 : zp;
    const std = Number((1 / info.scale).toPrecision(6));
    return { range: [0, 255], mean, std, note: `input ${info.type} with scale ${info.scale} and zero point ${zp}: real = (p - ${mean}) / ${std}` };
  }
  return { range: [-1, 1], mean: 0, std: 1, note: 'float input: the file does not record its pixel scaling; [-1, 1] (TF MobileNet convention) assumed, check the model documentation' };
}

/** Whether a tensor comes from a SOFTMAX, looking through (de)quantize ops. */
function producedBySoftmax(model: TfliteModel, tensor: number | undefined): boolean {
  const ops = model.subgraphs[0].operators;
  for (let t = tensor, hops = 0; t !== undefined && hops < 8; hops++) {
    const op = ops.find((o) => o.outputs.includes(t as number));
    const code = op ? model.operatorCodes[op.opcodeIndex]?.builtin : undefined;
    if (code === BuiltinOp.SOFTMAX) return true;
    if (code !== BuiltinOp.QUANTIZE && code !== BuiltinOp.DEQUANTIZE) return false;
    t = op?.inputs[0];
  }
  return false;
}

export function tfliteCard(model: TfliteModel, onnxFile: string, cardFile: string): ModelCard {
  const info = describeInput(model);
  const sg = model.subgraphs[0];
  const [, h = 224, w = 224, c = 3] = info.shape;
  const map = inputMapping(model);
  const isSoftmax = producedBySoftmax(model, sg.outputs[0]);
  const outShape = sg.tensors[sg.outputs[0]]?.shape ?? [];
  const classes = outShape[outShape.length - 1] ?? 0;
  const id = path.basename(model.file, path.extname(model.file));
  return {
    id,
    description: `${id} imported from TFLite (${c}-channel ${h}x${w} input, ${sg.operators.length} operators)`,
    source: path.resolve(model.file),
    license: 'see the source model',
    file: path.relative(path.dirname(path.resolve(cardFile)), path.resolve(onnxFile)),
    input: { name: info.name, size: [h, w], layout: 'NHWC', channel_order: 'RGB', dtype: 'float32', range: map.range, mean: [map.mean, map.mean, map.mean], std: [map.std, map.std, map.std] },
    resize: { policy: 'crop', crop_pct: 0.875, interpolation: 'bilinear' },
    ...(classes === 1001 ? { label_offset: 1 } : {}),
    output_is_probability: isSoftmax,
    notes: map.note,
  };
}
