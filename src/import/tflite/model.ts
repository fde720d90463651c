/**
 * Reads a TFLite flatbuffer into plain objects: operator codes, subgraphs (tensors, operators),
 * buffers (views into the file bytes, no copies) and per-tensor quantization. Builtin options stay as
 * table positions and are decoded per operator by options.ts.
 */
import { XferError } from '../../errors.js';
import { FlatReader } from './flatbuf.js';
import { BuiltinOp, Field } from './schema.js';

export interface TfliteQuant {
  scale: number[];
  zeroPoint: number[];
  /** Axis the scales run along when there are several (per-channel). */
  dim: number;
}

export interface TfliteTensor {
  index: number;
  name: string;
  shape: number[];
  /** Shape with -1 for dynamic dimensions, when the file records one. */
  shapeSignature?: number[];
  type: number;
  buffer: number;
  quant?: TfliteQuant;
  isVariable: boolean;
  sparse: boolean;
}

export interface TfliteOperatorCode {
  /** max(deprecated_builtin_code, builtin_code), as the TFLite runtime resolves it. */
  builtin: number;
  custom?: string;
  version: number;
}

export interface TfliteOperator {
  index: number;
  opcodeIndex: number;
  inputs: number[];
  outputs: number[];
  optionsType: number;
  /** Position of the builtin options table in the file, 0 when absent. */
  options: number;
}

export interface TfliteSubGraph {
  name?: string;
  tensors: TfliteTensor[];
  inputs: number[];
  outputs: number[];
  operators: TfliteOperator[];
}

export interface TfliteModel {
  file: string;
  version: number;
  description?: string;
  operatorCodes: TfliteOperatorCode[];
  subgraphs: TfliteSubGraph[];
  /** Buffer contents by index (empty arrays for the sentinel and for activations). */
  buffers: Uint8Array[];
  reader: FlatReader;
}

const F = Field;

function readQuant(r: FlatReader, q: number): TfliteQuant | undefined {
  if (!q) return undefined;
  const scale = r.f32Vector(q, F.QuantizationParameters.scale, 'quantization scales') ?? [];
  if (scale.length === 0) return undefined;
  const zeroPoint = r.i64Vector(q, F.QuantizationParameters.zero_point, 'quantization zero points') ?? [];
  return { scale, zeroPoint: zeroPoint.length > 0 ? zeroPoint : scale.map(() => 0), dim: r.i32(q, F.QuantizationParameters.quantized_dimension) };
}

function readTensor(r: FlatReader, t: number, index: number): TfliteTensor {
  const T = F.Tensor;
  const what = `tensor ${index}`;
  const shapeSignature = r.i32Vector(t, T.shape_signature, `${what} shape signature`) ?? undefined;
  return {
    index,
    name: r.string(t, T.name, `${what} name`) ?? `tensor_${index}`,
    shape: r.i32Vector(t, T.shape, `${what} shape`) ?? [],
    ...(shapeSignature ? { shapeSignature } : {}),
    type: r.i8(t, T.type),
    buffer: r.u32(t, T.buffer),
    quant: readQuant(r, r.tableField(t, T.quantization, `${what} quantization`)),
    isVariable: r.bool(t, T.is_variable),
    sparse: r.tableField(t, T.sparsity, `${what} sparsity`) !== 0,
  };
}

function readOperator(r: FlatReader, o: number, index: number): TfliteOperator {
  const O = F.Operator;
  const what = `operator ${index}`;
  return {
    index,
    opcodeIndex: r.u32(o, O.opcode_index),
    inputs: r.i32Vector(o, O.inputs, `${what} inputs`) ?? [],
    outputs: r.i32Vector(o, O.outputs, `${what} outputs`) ?? [],
    optionsType: r.u8(o, O.builtin_options_type),
    options: r.tableField(o, O.builtin_options, `${what} options`),
  };
}

function readSubGraph(r: FlatReader, s: number, index: number): TfliteSubGraph {
  const S = F.SubGraph;
  const what = `subgraph ${index}`;
  return {
    name: r.string(s, S.name, `${what} name`),
    tensors: r.tableVector(s, S.tensors, `${what} tensors`).map((t, i) => readTensor(r, t, i)),
    inputs: r.i32Vector(s, S.inputs, `${what} inputs`) ?? [],
    outputs: r.i32Vector(s, S.outputs, `${what} outputs`) ?? [],
    operators: r.tableVector(s, S.operators, `${what} operators`).map((o, i) => readOperator(r, o, i)),
  };
}

function readOperatorCode(r: FlatReader, c: number): TfliteOperatorCode {
  const C = F.OperatorCode;
  const deprecated = r.i8(c, C.deprecated_builtin_code);
  const extended = r.i32(c, C.builtin_code);
  // Old files only set the byte field; new ones set both (the byte saturates at 127 for newer ops).
  const builtin = Math.max(deprecated, extended);
  const custom = r.string(c, C.custom_code, 'custom op code');
  return { builtin: builtin === BuiltinOp.PLACEHOLDER_FOR_GREATER_OP_CODES ? extended : builtin, ...(custom !== undefined ? { custom } : {}), version: r.i32(c, C.version, 1) };
}

/** Parse TFLite flatbuffer bytes. Throws XferError for files that are not TFLite or are truncated. */
export function readTfliteModel(bytes: Uint8Array, file = '<buffer>'): TfliteModel {
  if (bytes.length === 0) throw new XferError(`${file}: empty file, not a TFLite model`, { hint: 'the download probably failed; fetch the .tflite again' });
  const r = new FlatReader(bytes, file);
  const m = r.root('TFL3');
  const M = F.Model;
  const buffers = r.tableVector(m, M.buffers, 'buffers').map((b, i) => {
    const data = r.bytesField(b, F.Buffer.data, `buffer ${i}`);
    if (data && data.length > 0) return data;
    const offset = r.u64(b, F.Buffer.offset);
    const size = r.u64(b, F.Buffer.size);
    if (offset > 1 && size > 0) return r.slice(offset, size, `buffer ${i} (stored after the flatbuffer)`);
    return new Uint8Array(0);
  });
  const model: TfliteModel = {
    file,
    version: r.u32(m, M.version),
    description: r.string(m, M.description, 'model description'),
    operatorCodes: r.tableVector(m, M.operator_codes, 'operator codes').map((c) => readOperatorCode(r, c)),
    subgraphs: r.tableVector(m, M.subgraphs, 'subgraphs').map((s, i) => readSubGraph(r, s, i)),
    buffers,
    reader: r,
  };
  if (model.subgraphs.length === 0) throw new XferError(`${file}: TFLite model has no subgraphs`, { hint: 'the file is empty or damaged; convert it again' });
  return model;
}
