/**
 * Conversion state shared by the per-layer emitters: the ONNX nodes and initializers being built,
 * the tensor each Keras layer produced, and small helpers.
 *
 * Layout: the graph input is NHWC (as Keras takes it); it is transposed once to NCHW and every
 * 4-D tensor inside the graph is NCHW. `KTensor.shape` is always the Keras (NHWC) shape without
 * the batch dimension, so shape arithmetic reads like the Keras config.
 */
import { DataType, type NodeProto, type TensorProto, type ValueInfoProto } from '../../onnx/proto.js';
import { node, attr, floatTensor, int64Tensor, valueInfo, type AttrValue } from '../../onnx/builder.js';
import { XferError } from '../../errors.js';
import type { KerasLayer } from './topology.js';
import type { WeightTensor } from './weights.js';

export interface KTensor {
  /** ONNX tensor name. */
  name: string;
  /** Keras shape without batch (channels last); null = unknown size. */
  shape: (number | null)[];
}

/** True when the tensor is an image map (Keras rank 4 incl. batch), stored NCHW in the graph. */
export function isSpatial(t: KTensor): boolean {
  return t.shape.length === 3;
}

/** ONNX dims (with symbolic batch) of a tensor stored in graph layout. */
export function onnxDims(t: KTensor, batch = 'N'): (number | string)[] {
  const dims = t.shape.map((d, i) => d ?? `${t.name}_d${i + 1}`);
  if (isSpatial(t)) return [batch, dims[2], dims[0], dims[1]];
  return [batch, ...dims];
}

export class ConvertContext {
  readonly nodes: NodeProto[] = [];
  readonly initializers: TensorProto[] = [];
  readonly valueInfos: ValueInfoProto[] = [];
  readonly tensors = new Map<string, KTensor>();
  private readonly usedWeights = new Set<string>();
  private readonly names = new Set<string>();

  constructor(
    readonly weights: Map<string, WeightTensor>,
    readonly file: string,
  ) {}

  /** Reserve a tensor name; helper names are `<layer>/<suffix>`. */
  fresh(name: string): string {
    let n = name;
    for (let i = 1; this.names.has(n); i++) n = `${name}_${i}`;
    this.names.add(n);
    return n;
  }

  claim(name: string): void {
    if (this.names.has(name)) throw new XferError(`${this.file}: tensor name ${name} is used twice`, { hint: 'layer names must be unique' });
    this.names.add(name);
  }

  /** Add a node; `floatAttrs` are always written as FLOAT attributes (even when integral). */
  add(opType: string, inputs: string[], outputs: string[], attrs: Record<string, AttrValue> = {}, floatAttrs: Record<string, number> = {}): void {
    const n = node(opType, inputs, outputs, attrs);
    for (const [k, v] of Object.entries(floatAttrs)) n.attribute?.push(attr(k, v, true));
    this.nodes.push(n);
  }

  /** Add an initializer (float32); returns its name. */
  constFloat(name: string, dims: number[], data: Float32Array | number[]): string {
    const n = this.fresh(name);
    this.initializers.push(floatTensor(n, dims, data));
    return n;
  }

  constInt64(name: string, dims: number[], data: number[]): string {
    const n = this.fresh(name);
    this.initializers.push(int64Tensor(n, dims, data));
    return n;
  }

  /** Record a Keras layer's output tensor (and its value-info for tooling). */
  setOutput(layer: KerasLayer, t: KTensor): void {
    this.tensors.set(layer.name, t);
    if (t.name === layer.name) this.valueInfos.push(valueInfo(t.name, DataType.FLOAT, onnxDims(t)));
  }

  input(layer: KerasLayer, i = 0): KTensor {
    const n = layer.inbound[i];
    const t = n === undefined ? undefined : this.tensors.get(n);
    if (!t) throw new XferError(`${this.file}: layer ${layer.name} (${layer.className}) is missing input #${i}`);
    return t;
  }

  inputs(layer: KerasLayer): KTensor[] {
    return layer.inbound.map((_, i) => this.input(layer, i));
  }

  /** A named weight of a layer (`<layer>/<key>`); throws when absent unless optional. */
  weight(layer: KerasLayer, key: string): WeightTensor;
  weight(layer: KerasLayer, key: string, optional: true): WeightTensor | undefined;
  weight(layer: KerasLayer, key: string, optional = false): WeightTensor | undefined {
    const full = this.findWeightName(layer.name, key);
    if (full === undefined) {
      if (optional) return undefined;
      throw new XferError(`${this.file}: weight ${layer.name}/${key} of layer ${layer.name} (${layer.className}) is missing from the weights manifest`, {
        hint: 'the weight shards do not match this model.json',
      });
    }
    this.usedWeights.add(full);
    return this.weights.get(full) as WeightTensor;
  }

  private findWeightName(layerName: string, key: string): string | undefined {
    const direct = `${layerName}/${key}`;
    if (this.weights.has(direct)) return direct;
    // Keras sometimes scopes variables (e.g. "model/<layer>/<key>" or "<layer>/<layer>/<key>").
    for (const name of this.weights.keys()) {
      if (name.endsWith(`/${direct}`)) return name;
    }
    return undefined;
  }

  unusedWeights(): string[] {
    return [...this.weights.keys()].filter((n) => !this.usedWeights.has(n));
  }

  fail(layer: KerasLayer, what: string, hint?: string): never {
    throw new XferError(`${this.file}: layer ${layer.name} (${layer.className}): ${what}`, { hint: hint ?? 'this Keras configuration is not supported by xfer import' });
  }
}
