/** Reading constant tensors of a model (initializers and Constant nodes) as plain arrays. */
import { DataType, type ModelProto, type TensorProto } from '../onnx/proto.js';
import { float16ToFloat32 } from '../util/float16.js';

export interface ConstValue {
  dims: number[];
  /** Float values (float, float16, double tensors), or null for integer tensors. */
  f32: Float32Array | null;
  /** Integer values (int64/int32 tensors) as numbers, or null. */
  ints: number[] | null;
}

function aligned(raw: Uint8Array): ArrayBuffer {
  return raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength) as ArrayBuffer;
}

export function readConst(t: TensorProto): ConstValue {
  const dims = (t.dims ?? []).map(Number);
  const dt = t.dataType ?? 0;
  const raw = t.rawData && t.rawData.length > 0 ? t.rawData : null;
  if (dt === DataType.FLOAT) return { dims, f32: raw ? new Float32Array(aligned(raw)) : Float32Array.from(t.floatData ?? []), ints: null };
  if (dt === DataType.FLOAT16) {
    const bits = raw ? new Uint16Array(aligned(raw)) : Uint16Array.from(t.int32Data ?? []);
    return { dims, f32: float16ToFloat32(bits), ints: null };
  }
  if (dt === DataType.DOUBLE) return { dims, f32: Float32Array.from(raw ? new Float64Array(aligned(raw)) : t.doubleData ?? []), ints: null };
  if (dt === DataType.INT64) return { dims, f32: null, ints: raw ? Array.from(new BigInt64Array(aligned(raw)), Number) : (t.int64Data ?? []).map(Number) };
  if (dt === DataType.INT32) return { dims, f32: null, ints: raw ? Array.from(new Int32Array(aligned(raw))) : (t.int32Data ?? []).map(Number) };
  return { dims, f32: null, ints: null };
}

/** Every constant of the main graph by name: initializers and Constant-node outputs. */
export function constantsOf(model: ModelProto): Map<string, TensorProto> {
  const m = new Map<string, TensorProto>();
  for (const t of model.graph.initializer) if (t.name) m.set(t.name, t);
  for (const n of model.graph.node) {
    if (n.opType !== 'Constant') continue;
    const a = n.attribute?.find((x) => x.name === 'value');
    if (a?.t) m.set(n.output[0], { ...a.t, name: n.output[0] });
    const fl = n.attribute?.find((x) => x.name === 'value_float');
    if (fl?.f !== undefined) m.set(n.output[0], { name: n.output[0], dims: [], dataType: DataType.FLOAT, floatData: [fl.f] });
    const ints = n.attribute?.find((x) => x.name === 'value_ints');
    if (ints?.ints) m.set(n.output[0], { name: n.output[0], dims: [ints.ints.length], dataType: DataType.INT64, int64Data: ints.ints.map(Number) });
    const i1 = n.attribute?.find((x) => x.name === 'value_int');
    if (i1?.i !== undefined) m.set(n.output[0], { name: n.output[0], dims: [], dataType: DataType.INT64, int64Data: [Number(i1.i)] });
  }
  return m;
}
