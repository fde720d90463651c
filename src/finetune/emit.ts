/** A small ONNX graph writer: fresh names, nodes, and constants deduplicated by value. */
import { node, floatTensor, int64Tensor, type AttrValue } from '../onnx/builder.js';
import type { NodeProto, TensorProto } from '../onnx/proto.js';

export const NCHWC_DOMAIN = 'com.microsoft.nchwc';

export class Emitter {
  readonly nodes: NodeProto[] = [];
  readonly inits: TensorProto[] = [];
  private readonly taken = new Set<string>();
  private readonly consts = new Map<string, string>();
  private count = 0;

  reserve(name: string): void {
    this.taken.add(name);
  }

  fresh(hint: string): string {
    let name = `${hint}~${this.count++}`;
    while (this.taken.has(name)) name = `${hint}~${this.count++}`;
    this.taken.add(name);
    return name;
  }

  /** One node with one output (named `out`, or a fresh name from `hint`). */
  op(opType: string, inputs: string[], attrs: Record<string, AttrValue> = {}, hint = opType, out?: string): string {
    const o = out ?? this.fresh(hint);
    this.taken.add(o);
    this.nodes.push(node(opType, inputs, [o], attrs, o));
    return o;
  }

  /** One node of ORT's CPU-only `com.microsoft.nchwc` domain (blocked-channel kernels). */
  nchwc(opType: string, inputs: string[], attrs: Record<string, AttrValue> = {}, hint = opType, out?: string): string {
    const o = this.op(opType, inputs, attrs, hint, out);
    this.nodes[this.nodes.length - 1].domain = NCHWC_DOMAIN;
    return o;
  }

  /** A float constant (scalar when dims is []). */
  f32(values: number[] | Float32Array, dims: number[] = [], hint = 'const'): string {
    const small = values.length <= 16;
    const key = small ? `f:${dims.join('x')}:${Array.from(values).join(',')}` : '';
    if (small && this.consts.has(key)) return this.consts.get(key)!;
    const name = this.fresh(hint);
    this.inits.push(floatTensor(name, dims, values instanceof Float32Array ? values : Float32Array.from(values)));
    if (small) this.consts.set(key, name);
    return name;
  }

  i64(values: number[], hint = 'shape'): string {
    const key = `i:${values.join(',')}`;
    if (this.consts.has(key)) return this.consts.get(key)!;
    const name = this.fresh(hint);
    this.inits.push(int64Tensor(name, [values.length], values));
    this.consts.set(key, name);
    return name;
  }

  /** Add an existing tensor (a model constant) as an initializer under its own name, once. */
  constant(t: TensorProto): string {
    const name = t.name!;
    const key = `t:${name}`;
    if (!this.consts.has(key)) {
      this.inits.push(t);
      this.consts.set(key, name);
      this.taken.add(name);
    }
    return name;
  }
}
