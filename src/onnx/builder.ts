/**
 * Small constructors for ONNX graph pieces, used by the importers, the tap deriver and the head
 * exporter. They build plain proto objects; nothing here touches files or sessions.
 */
import { DataType, AttributeType, type AttributeProto, type NodeProto, type TensorProto, type ValueInfoProto, type ModelProto, type GraphProto } from './proto.js';

export type AttrValue = number | string | number[] | string[] | TensorProto | { floats: number[] } | { ints: number[] };

/** Build an attribute; integers vs floats are told apart by `Number.isInteger` unless wrapped. */
export function attr(name: string, value: AttrValue, forceFloat = false): AttributeProto {
  if (typeof value === 'string') return { name, type: AttributeType.STRING, s: new TextEncoder().encode(value) };
  if (typeof value === 'number') {
    return forceFloat || !Number.isInteger(value) ? { name, type: AttributeType.FLOAT, f: value } : { name, type: AttributeType.INT, i: value };
  }
  if (Array.isArray(value)) {
    if (value.length > 0 && typeof value[0] === 'string') {
      return { name, type: AttributeType.STRINGS, strings: (value as string[]).map((s) => new TextEncoder().encode(s)) };
    }
    const nums = value as number[];
    return forceFloat || nums.some((v) => !Number.isInteger(v)) ? { name, type: AttributeType.FLOATS, floats: nums } : { name, type: AttributeType.INTS, ints: nums };
  }
  if ('floats' in value) return { name, type: AttributeType.FLOATS, floats: value.floats };
  if ('ints' in value) return { name, type: AttributeType.INTS, ints: value.ints };
  return { name, type: AttributeType.TENSOR, t: value };
}

/** Build a node. `attrs` values follow `attr()`; use `{floats:[...]}` to force float lists. */
export function node(opType: string, inputs: string[], outputs: string[], attrs: Record<string, AttrValue> = {}, name?: string): NodeProto {
  return {
    opType,
    input: inputs,
    output: outputs,
    name: name ?? outputs[0],
    attribute: Object.entries(attrs).map(([k, v]) => attr(k, v)),
  };
}

function bytesOf(view: ArrayBufferView): Uint8Array {
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}

export function floatTensor(name: string, dims: number[], data: Float32Array | number[]): TensorProto {
  const arr = data instanceof Float32Array ? data : Float32Array.from(data);
  checkSize(name, dims, arr.length);
  return { name, dims, dataType: DataType.FLOAT, rawData: bytesOf(arr.slice()) };
}

export function float16Tensor(name: string, dims: number[], bits: Uint16Array): TensorProto {
  checkSize(name, dims, bits.length);
  return { name, dims, dataType: DataType.FLOAT16, rawData: bytesOf(bits.slice()) };
}

export function int64Tensor(name: string, dims: number[], data: number[] | BigInt64Array): TensorProto {
  const arr = data instanceof BigInt64Array ? data : BigInt64Array.from(data.map((v) => BigInt(v)));
  checkSize(name, dims, arr.length);
  return { name, dims, dataType: DataType.INT64, rawData: bytesOf(arr.slice()) };
}

export function int32Tensor(name: string, dims: number[], data: number[] | Int32Array): TensorProto {
  const arr = data instanceof Int32Array ? data : Int32Array.from(data);
  checkSize(name, dims, arr.length);
  return { name, dims, dataType: DataType.INT32, rawData: bytesOf(arr.slice()) };
}

function checkSize(name: string, dims: number[], n: number): void {
  const want = dims.reduce((a, b) => a * b, 1);
  if (want !== n) throw new Error(`tensor ${name}: dims [${dims}] need ${want} values, got ${n}`);
}

/** A tensor value-info; `dims` entries may be numbers or symbolic names (e.g. 'N'); null = unknown rank. */
export function valueInfo(name: string, elemType: number, dims: (number | string)[] | null): ValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType,
        ...(dims === null ? {} : { shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) } }),
      },
    },
  };
}

/** Wrap a graph into a model with the default ONNX opset (and IR version that ORT 1.30 accepts). */
export function makeModel(graph: GraphProto, opts: { opset?: number; producerName?: string; docString?: string; metadata?: Record<string, string> } = {}): ModelProto {
  return {
    irVersion: 8,
    opsetImport: [{ domain: '', version: opts.opset ?? 17 }],
    producerName: opts.producerName ?? 'xfer',
    producerVersion: '0.1.0',
    docString: opts.docString,
    graph,
    metadataProps: Object.entries(opts.metadata ?? {}).map(([key, value]) => ({ key, value })),
  };
}

export function emptyGraph(name: string): GraphProto {
  return { name, node: [], initializer: [], input: [], output: [], valueInfo: [] };
}
