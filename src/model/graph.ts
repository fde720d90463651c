/**
 * Read-only views of an ONNX graph: topological node order, producers/consumers, and the list of
 * tappable tensors (every node output) with static shapes where the model declares them.
 */
import type { GraphProto, ModelProto, NodeProto, ValueInfoProto } from '../onnx/proto.js';
import { dataTypeName } from '../onnx/proto.js';
import { XferError } from '../errors.js';

export type Dim = number | string | null;

export interface TensorInfo {
  /** Position in topological order (0-based), stable for a given model. */
  index: number;
  /** The tensor's name (what you tap). */
  name: string;
  /** Name of the node producing it (or the tensor name when the node has none). */
  node: string;
  op: string;
  /** ONNX element type name ('float', 'float16', 'int64', ...) or null when not declared. */
  dtype: string | null;
  /** Shape as declared (numbers, symbolic names, null = unknown dim), or null when not declared. */
  shape: Dim[] | null;
  /**
   * Whether it is computed from the model's input. A tensor that is not (e.g. the Identity copies of
   * weights a torch.onnx export starts with) has no batch axis: one value for every image, not a feature.
   */
  fromInput: boolean;
}

/** Names of graph inputs that are real inputs (not initializers, which old IR versions also list). */
export function realInputs(graph: GraphProto): ValueInfoProto[] {
  const inits = new Set(graph.initializer.map((t) => t.name ?? ""));
  return graph.input.filter((i) => !inits.has(i.name));
}

/** Nodes in topological order (Kahn's algorithm, stable w.r.t. file order). Throws on cycles. */
export function topoSort(graph: GraphProto): NodeProto[] {
  const available = new Set<string>([...graph.input.map((i) => i.name), ...graph.initializer.map((t) => t.name ?? ''), '']);
  const pending = graph.node.slice();
  const out: NodeProto[] = [];
  let progressed = true;
  while (pending.length > 0 && progressed) {
    progressed = false;
    for (let i = 0; i < pending.length; ) {
      const n = pending[i];
      if (n.input.every((x) => available.has(x))) {
        out.push(n);
        for (const o of n.output) available.add(o);
        pending.splice(i, 1);
        progressed = true;
      } else i++;
    }
  }
  if (pending.length > 0) {
    const missing = pending[0].input.filter((x) => !available.has(x));
    throw new XferError(`invalid ONNX graph: node ${pending[0].name || pending[0].opType} needs tensors nobody produces (${missing.join(', ')})`);
  }
  return out;
}

function declaredShape(vi: ValueInfoProto | undefined): { dtype: string | null; shape: Dim[] | null } {
  const tt = vi?.type?.tensorType;
  if (!tt) return { dtype: null, shape: null };
  const dtype = tt.elemType ? dataTypeName(tt.elemType) : null;
  const shape = tt.shape ? (tt.shape.dim ?? []).map((d) => (d.dimValue !== undefined ? Number(d.dimValue) : d.dimParam ? d.dimParam : null)) : null;
  return { dtype, shape };
}

/** Every node output, in topological order, with declared dtype/shape where the model has them. */
export function listTensors(model: ModelProto): TensorInfo[] {
  const g = model.graph;
  const vis = new Map<string, ValueInfoProto>();
  for (const v of [...g.valueInfo, ...g.input, ...g.output]) vis.set(v.name, v);
  const out: TensorInfo[] = [];
  const dependent = new Set(realInputs(g).map((i) => i.name));
  for (const n of topoSort(g)) {
    const fromInput = n.input.some((i) => dependent.has(i));
    for (const name of n.output) {
      if (!name) continue;
      if (fromInput) dependent.add(name);
      const { dtype, shape } = declaredShape(vis.get(name));
      out.push({ index: out.length, name, node: n.name || name, op: n.opType, dtype, shape, fromInput });
    }
  }
  return out;
}

/** Map tensor name → producing node. */
export function producers(graph: GraphProto): Map<string, NodeProto> {
  const m = new Map<string, NodeProto>();
  for (const n of graph.node) for (const o of n.output) if (o) m.set(o, n);
  return m;
}

const INT64_OPS = new Set(['Shape', 'Size', 'ArgMax', 'ArgMin', 'NonZero', 'NonMaxSuppression', 'TopK#1']);
const BOOL_OPS = new Set(['Equal', 'Greater', 'Less', 'GreaterOrEqual', 'LessOrEqual', 'Not', 'And', 'Or', 'Xor', 'IsNaN', 'IsInf']);

/**
 * Element type of every tensor without running the model: declared value infos first, then simple
 * per-op rules (Shape → int64, Cast → its `to`, comparisons → bool, QuantizeLinear → zero-point type,
 * otherwise the type of the first input). Good enough to tell float activations from index tensors.
 */
export function inferDtypes(model: ModelProto): Map<string, string> {
  const g = model.graph;
  const types = new Map<string, number>();
  for (const t of g.initializer) if (t.name) types.set(t.name, t.dataType ?? 0);
  for (const v of [...g.input, ...g.valueInfo, ...g.output]) {
    const e = v.type?.tensorType?.elemType;
    if (e) types.set(v.name, e);
  }
  for (const n of topoSort(g)) {
    n.output.forEach((o, k) => {
      if (!o || types.has(o)) return;
      let t: number | undefined;
      if (INT64_OPS.has(n.opType) || (n.opType === 'TopK' && k === 1) || ((n.opType === 'MaxPool') && k === 1)) t = 7;
      else if (BOOL_OPS.has(n.opType)) t = 9;
      else if (n.opType === 'Cast') t = Number(n.attribute?.find((a) => a.name === 'to')?.i ?? 1);
      else if (n.opType === 'Constant') t = n.attribute?.find((a) => a.name === 'value')?.t?.dataType ?? 1;
      else if (n.opType === 'QuantizeLinear') t = n.input[2] ? types.get(n.input[2]) ?? 2 : 2;
      else if (n.opType === 'DequantizeLinear') t = 1;
      else if (n.opType === 'Where') t = types.get(n.input[1]);
      else t = types.get(n.input.find((x) => x) ?? '');
      if (t) types.set(o, t);
    });
  }
  return new Map([...types].map(([k, v]) => [k, dataTypeName(v)]));
}
