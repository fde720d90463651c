/**
 * Constant tensors: raw buffer bytes → float32 values (dequantizing uint8/int8/int16/int32 with
 * per-tensor or per-channel scales, widening float16), plus the layout permutations the converter
 * applies to weights (NHWC → NCHW, OHWI → OIHW).
 */
import { XferError } from '../../errors.js';
import { float16ToFloat32 } from '../../util/float16.js';
import type { TfliteModel, TfliteTensor } from './model.js';
import { TensorType, tensorTypeName } from './schema.js';

export function elementCount(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Raw (not dequantized) values of a constant tensor as numbers. */
export function rawValues(model: TfliteModel, t: TfliteTensor): Float64Array {
  const bytes = model.buffers[t.buffer] ?? new Uint8Array(0);
  const n = elementCount(t.shape);
  const dv = view(bytes);
  const out = new Float64Array(n);
  const size = { [TensorType.FLOAT32]: 4, [TensorType.FLOAT16]: 2, [TensorType.INT32]: 4, [TensorType.UINT8]: 1, [TensorType.INT8]: 1, [TensorType.INT64]: 8, [TensorType.INT16]: 2 }[t.type];
  if (size === undefined) {
    throw new XferError(`${model.file}: constant tensor "${t.name}" has unsupported type ${tensorTypeName(t.type)}`, { hint: 'only float32/float16 and int8/uint8/int16/int32/int64 constants are supported' });
  }
  if (bytes.length < n * size) {
    throw new XferError(`${model.file}: constant tensor "${t.name}" needs ${n * size} bytes but its buffer ${t.buffer} has ${bytes.length}`, { hint: 'the file is damaged; convert it again' });
  }
  switch (t.type) {
    case TensorType.FLOAT32:
      for (let i = 0; i < n; i++) out[i] = dv.getFloat32(4 * i, true);
      break;
    case TensorType.FLOAT16: {
      const bits = new Uint16Array(n);
      for (let i = 0; i < n; i++) bits[i] = dv.getUint16(2 * i, true);
      out.set(float16ToFloat32(bits));
      break;
    }
    case TensorType.INT32:
      for (let i = 0; i < n; i++) out[i] = dv.getInt32(4 * i, true);
      break;
    case TensorType.UINT8:
      for (let i = 0; i < n; i++) out[i] = bytes[i];
      break;
    case TensorType.INT8:
      for (let i = 0; i < n; i++) out[i] = dv.getInt8(i);
      break;
    case TensorType.INT16:
      for (let i = 0; i < n; i++) out[i] = dv.getInt16(2 * i, true);
      break;
    case TensorType.INT64:
      for (let i = 0; i < n; i++) out[i] = Number(dv.getBigInt64(8 * i, true));
      break;
  }
  return out;
}

/** Integer values of a constant (shapes, axes, paddings); never dequantized. */
export function intValues(model: TfliteModel, t: TfliteTensor): number[] {
  return Array.from(rawValues(model, t));
}

/**
 * Real values of a constant tensor: float types as stored; quantized integer types as
 * scale[c] * (q - zero_point[c]) with c the index along `quant.dim` when there are several scales.
 */
export function realValues(model: TfliteModel, t: TfliteTensor): Float32Array {
  const raw = rawValues(model, t);
  const out = new Float32Array(raw.length);
  const isFloat = t.type === TensorType.FLOAT32 || t.type === TensorType.FLOAT16;
  const q = t.quant;
  if (isFloat || !q) {
    out.set(raw);
    return out;
  }
  if (q.scale.length === 1) {
    const s = q.scale[0];
    const z = q.zeroPoint[0] ?? 0;
    for (let i = 0; i < raw.length; i++) out[i] = s * (raw[i] - z);
    return out;
  }
  const dim = q.dim;
  const channels = t.shape[dim];
  if (channels !== q.scale.length) {
    throw new XferError(`${model.file}: tensor "${t.name}" has ${q.scale.length} scales but dimension ${dim} has size ${channels}`, { hint: 'the quantization parameters are inconsistent; convert the model again' });
  }
  const inner = elementCount(t.shape.slice(dim + 1));
  for (let i = 0; i < raw.length; i++) {
    const c = Math.floor(i / inner) % channels;
    out[i] = q.scale[c] * (raw[i] - (q.zeroPoint[c] ?? 0));
  }
  return out;
}

/** Permute a dense row-major array: out axis i takes input axis perm[i]. */
export function permute(data: Float32Array, shape: number[], perm: number[]): { data: Float32Array; shape: number[] } {
  const rank = shape.length;
  const outShape = perm.map((p) => shape[p]);
  const inStrides = new Array<number>(rank).fill(1);
  for (let i = rank - 2; i >= 0; i--) inStrides[i] = inStrides[i + 1] * shape[i + 1];
  const strides = perm.map((p) => inStrides[p]);
  const out = new Float32Array(data.length);
  const idx = new Array<number>(rank).fill(0);
  for (let o = 0; o < out.length; o++) {
    let src = 0;
    for (let k = 0; k < rank; k++) src += idx[k] * strides[k];
    out[o] = data[src];
    for (let k = rank - 1; k >= 0; k--) {
      if (++idx[k] < outShape[k]) break;
      idx[k] = 0;
    }
  }
  return { data: out, shape: outShape };
}

/** NHWC axis → NCHW axis. */
export const NHWC_TO_NCHW_AXIS = [0, 2, 3, 1];
/** Transpose perm turning an NHWC tensor into NCHW (and OHWI weights into OIHW). */
export const TO_NCHW = [0, 3, 1, 2];
/** Transpose perm turning an NCHW tensor back into NHWC. */
export const TO_NHWC = [0, 2, 3, 1];
