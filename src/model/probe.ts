/**
 * Running a model on dummy inputs to learn what its declarations do not say: the dtype and shape of
 * every tensor (for `xfer layers`), and whether a fixed batch of 1 can safely become symbolic.
 */
import ort, { float16Tensor } from './ort.js';
import { serializeModel } from '../onnx/io.js';
import type { ModelProto, ValueInfoProto } from '../onnx/proto.js';
import { DataType, dataTypeName } from '../onnx/proto.js';
import { listTensors, realInputs } from './graph.js';

export interface ProbedTensor {
  dtype: string;
  shape: number[];
}

const ORT_TYPE: Record<number, ort.Tensor.Type> = {
  [DataType.FLOAT]: 'float32',
  [DataType.FLOAT16]: 'float16',
  [DataType.UINT8]: 'uint8',
  [DataType.INT8]: 'int8',
  [DataType.INT32]: 'int32',
  [DataType.INT64]: 'int64',
  [DataType.DOUBLE]: 'float64',
  [DataType.BOOL]: 'bool',
};

/** Concrete dims for an input: symbolic/unknown dims become `batch` for dim 0 and 1 otherwise (or `fill`). */
export function concreteDims(vi: ValueInfoProto, batch: number, fill?: Map<number, number>): number[] {
  const dims = vi.type?.tensorType?.shape?.dim ?? [];
  return dims.map((d, i) => {
    if (d.dimValue !== undefined && Number(d.dimValue) > 0) return i === 0 && batch !== 1 && Number(d.dimValue) === 1 ? batch : Number(d.dimValue);
    return i === 0 ? batch : fill?.get(i) ?? 1;
  });
}

/** Deterministic pseudo-random dummy tensor for an input. */
export function dummyInput(vi: ValueInfoProto, batch: number, seed = 1): ort.Tensor {
  const elem = vi.type?.tensorType?.elemType ?? DataType.FLOAT;
  const type = ORT_TYPE[elem];
  if (!type) throw new Error(`input ${vi.name}: unsupported element type ${dataTypeName(elem)}`);
  const dims = concreteDims(vi, batch);
  const n = dims.reduce((a, b) => a * b, 1);
  let s = seed >>> 0 || 1;
  const rnd = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296;
  };
  switch (type) {
    case 'float32':
      return new ort.Tensor(type, Float32Array.from({ length: n }, rnd), dims);
    case 'float16':
      return float16Tensor(Uint16Array.from({ length: n }, () => 0x3800 + Math.floor(rnd() * 0x200)), dims);
    case 'uint8':
      return new ort.Tensor(type, Uint8Array.from({ length: n }, () => Math.floor(rnd() * 256)), dims);
    case 'int64':
      return new ort.Tensor(type, new BigInt64Array(n), dims);
    default:
      return new ort.Tensor(type, new Float32Array(n), dims);
  }
}

/** Run the model once (batch 1) with every tensor as an output; returns name → {dtype, shape}. */
export async function probeTensors(model: ModelProto): Promise<Map<string, ProbedTensor>> {
  const tensors = listTensors(model);
  const outputs = new Set(model.graph.output.map((o) => o.name));
  const probe: ModelProto = {
    ...model,
    graph: { ...model.graph, output: [...model.graph.output, ...tensors.filter((t) => !outputs.has(t.name)).map((t) => ({ name: t.name }))] },
  };
  const session = await ort.InferenceSession.create(serializeModel(probe), { graphOptimizationLevel: 'disabled', logSeverityLevel: 4 });
  try {
    const feeds: Record<string, ort.Tensor> = {};
    for (const vi of realInputs(model.graph)) feeds[vi.name] = dummyInput(vi, 1);
    const res = await session.run(feeds);
    const out = new Map<string, ProbedTensor>();
    for (const [name, t] of Object.entries(res)) out.set(name, { dtype: t.type === 'float32' ? 'float' : t.type, shape: t.dims.slice() });
    return out;
  } finally {
    await session.release();
  }
}
