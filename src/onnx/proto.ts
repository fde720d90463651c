/**
 * Typed ONNX protobuf messages and their binary encoding. Messages are plain objects (camelCase
 * fields, int64 as JS numbers, bytes as Uint8Array), so graph code can build and edit them freely.
 */
import protobuf from 'protobufjs';
import { ONNX_SCHEMA } from './schema.js';

export const DataType = {
  UNDEFINED: 0,
  FLOAT: 1,
  UINT8: 2,
  INT8: 3,
  UINT16: 4,
  INT16: 5,
  INT32: 6,
  INT64: 7,
  STRING: 8,
  BOOL: 9,
  FLOAT16: 10,
  DOUBLE: 11,
  UINT32: 12,
  UINT64: 13,
  COMPLEX64: 14,
  COMPLEX128: 15,
  BFLOAT16: 16,
} as const;
export type DataTypeCode = number;

const DATA_TYPE_NAMES: Record<number, string> = Object.fromEntries(Object.entries(DataType).map(([k, v]) => [v, k.toLowerCase()]));

/** 'float', 'float16', 'uint8' ... for a TensorProto data type code. */
export function dataTypeName(code: number): string {
  return DATA_TYPE_NAMES[code] ?? `type#${code}`;
}

export function isFloatType(code: number): boolean {
  return code === DataType.FLOAT || code === DataType.FLOAT16 || code === DataType.DOUBLE || code === DataType.BFLOAT16;
}

export const AttributeType = {
  UNDEFINED: 0,
  FLOAT: 1,
  INT: 2,
  STRING: 3,
  TENSOR: 4,
  GRAPH: 5,
  FLOATS: 6,
  INTS: 7,
  STRINGS: 8,
  TENSORS: 9,
  GRAPHS: 10,
} as const;

export interface StringStringEntryProto {
  key: string;
  value: string;
}

export interface TensorProto {
  dims?: number[];
  dataType?: number;
  floatData?: number[];
  int32Data?: number[];
  int64Data?: number[];
  doubleData?: number[];
  uint64Data?: number[];
  stringData?: Uint8Array[];
  name?: string;
  docString?: string;
  rawData?: Uint8Array;
  externalData?: StringStringEntryProto[];
  dataLocation?: number;
}

export interface AttributeProto {
  name: string;
  type?: number;
  f?: number;
  i?: number;
  s?: Uint8Array;
  t?: TensorProto;
  g?: GraphProto;
  floats?: number[];
  ints?: number[];
  strings?: Uint8Array[];
  tensors?: TensorProto[];
  graphs?: GraphProto[];
  refAttrName?: string;
  docString?: string;
}

export interface NodeProto {
  input: string[];
  output: string[];
  name?: string;
  opType: string;
  domain?: string;
  attribute?: AttributeProto[];
  docString?: string;
}

export interface DimensionProto {
  dimValue?: number;
  dimParam?: string;
  denotation?: string;
}

export interface TypeProto {
  tensorType?: { elemType?: number; shape?: { dim?: DimensionProto[] } };
  sequenceType?: unknown;
  mapType?: unknown;
  optionalType?: unknown;
  sparseTensorType?: unknown;
  denotation?: string;
}

export interface ValueInfoProto {
  name: string;
  type?: TypeProto;
  docString?: string;
}

export interface GraphProto {
  node: NodeProto[];
  name?: string;
  initializer: TensorProto[];
  sparseInitializer?: unknown[];
  docString?: string;
  input: ValueInfoProto[];
  output: ValueInfoProto[];
  valueInfo: ValueInfoProto[];
  quantizationAnnotation?: unknown[];
}

export interface OperatorSetIdProto {
  domain?: string;
  version: number;
}

export interface ModelProto {
  irVersion?: number;
  opsetImport: OperatorSetIdProto[];
  producerName?: string;
  producerVersion?: string;
  domain?: string;
  modelVersion?: number;
  docString?: string;
  graph: GraphProto;
  metadataProps?: StringStringEntryProto[];
  trainingInfo?: unknown[];
  functions?: unknown[];
}

const root = protobuf.Root.fromJSON(ONNX_SCHEMA as unknown as protobuf.INamespace);
const ModelType = root.lookupType('onnx.ModelProto');

/** Decode a binary ModelProto. Throws protobufjs errors on malformed input (callers wrap them). */
export function decodeModel(bytes: Uint8Array): ModelProto {
  const msg = ModelType.decode(bytes);
  const obj = ModelType.toObject(msg, { longs: Number, enums: Number, bytes: Uint8Array, arrays: true, defaults: false }) as ModelProto;
  if (!obj.graph) throw new Error('ModelProto has no graph');
  const g = obj.graph;
  g.node ??= [];
  g.initializer ??= [];
  g.input ??= [];
  g.output ??= [];
  g.valueInfo ??= [];
  obj.opsetImport ??= [];
  for (const n of g.node) {
    n.input ??= [];
    n.output ??= [];
  }
  return obj;
}

/** Encode a ModelProto to its binary form. */
export function encodeModel(model: ModelProto): Uint8Array {
  const err = ModelType.verify(model);
  if (err) throw new Error(`invalid ModelProto: ${err}`);
  return ModelType.encode(ModelType.fromObject(model)).finish();
}
