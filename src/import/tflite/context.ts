/**
 * The conversion context: maps TFLite tensors to ONNX value names, emits nodes and initializers, and
 * owns the one layout rule of the converter — every rank-4 TFLite tensor (NHWC) lives in the ONNX
 * graph as NCHW under the TFLite tensor's own name; every other tensor keeps its TFLite layout.
 */
import { XferError } from '../../errors.js';
import { node, floatTensor, int64Tensor, valueInfo, type AttrValue } from '../../onnx/builder.js';
import { DataType, type GraphProto } from '../../onnx/proto.js';
import { TO_NCHW, TO_NHWC, permute, realValues } from './constants.js';
import type { TfliteModel, TfliteOperator, TfliteSubGraph, TfliteTensor } from './model.js';
import { Activation, builtinOpName } from './schema.js';

/**
 * The ONNX name for a TFLite tensor name. The MLIR converter joins the names of every TF op fused into
 * a tensor with ';' ("MobilenetV2/Conv/Relu6;MobilenetV2/Conv/add_fold;..."); the first is the
 * producing op's own name, so that one is kept (the full name goes into the value info's doc string).
 */
export function onnxNameFor(tfliteName: string): string {
  const first = tfliteName.split(';')[0].trim();
  return first.length > 0 ? first : tfliteName.trim();
}

export class ConvertContext {
  readonly graph: GraphProto;
  /** TFLite tensor index → ONNX value name (NCHW for rank-4 tensors). */
  private readonly values = new Map<number, string>();
  private readonly used = new Set<string>();
  private readonly constCache = new Map<string, string>();
  /** Batch size of the TFLite input (1 for these models); dim 0 of activations equal to it becomes 'N'. */
  batch = 1;
  symbolicBatch = true;

  constructor(
    readonly model: TfliteModel,
    readonly sg: TfliteSubGraph,
    graph: GraphProto,
  ) {
    this.graph = graph;
  }

  get file(): string {
    return this.model.file;
  }

  tensor(idx: number): TfliteTensor {
    const t = this.sg.tensors[idx];
    if (!t) throw new XferError(`${this.file}: operator refers to tensor ${idx}, but the subgraph has ${this.sg.tensors.length} tensors`, { hint: 'the file is damaged; convert it again' });
    return t;
  }

  isConst(idx: number): boolean {
    const t = this.tensor(idx);
    return !t.isVariable && (this.model.buffers[t.buffer]?.length ?? 0) > 0;
  }

  /** A fresh, unused ONNX name based on `base`. */
  fresh(base: string): string {
    const clean = base.length > 0 ? base : 'tensor';
    let name = clean;
    for (let k = 1; this.used.has(name); k++) name = `${clean}_${k}`;
    this.used.add(name);
    return name;
  }

  /** Claim the ONNX name for a TFLite tensor (its own name, shortened and de-duplicated). */
  define(idx: number): string {
    const existing = this.values.get(idx);
    if (existing) return existing;
    const name = this.fresh(onnxNameFor(this.tensor(idx).name));
    this.values.set(idx, name);
    return name;
  }

  /** Bind a TFLite tensor to an ONNX value made elsewhere (the transposed graph input). */
  bind(idx: number, name: string): void {
    this.used.add(name);
    this.values.set(idx, name);
  }

  /** ONNX value for a TFLite tensor used as an operand: an activation already produced, or a constant. */
  value(idx: number): string {
    const v = this.values.get(idx);
    if (v) return v;
    if (this.isConst(idx)) return this.constValue(idx);
    const t = this.tensor(idx);
    throw new XferError(`${this.file}: tensor "${t.name}" (${idx}) is used before any operator produces it`, { hint: 'the graph is not in execution order or needs an unsupported input; convert the model again' });
  }

  /** A constant tensor as a float initializer (rank 4 → NCHW), cached per tensor. */
  constValue(idx: number): string {
    const t = this.tensor(idx);
    if (t.sparse) throw new XferError(`${this.file}: constant tensor "${t.name}" is sparse, which the importer does not support`, { hint: 'convert the model without sparsity' });
    let data = realValues(this.model, t);
    let shape = t.shape;
    if (shape.length === 4) ({ data, shape } = permute(data, shape, TO_NCHW));
    const name = this.define(idx);
    this.graph.initializer.push(floatTensor(name, shape, data));
    return name;
  }

  /** Add a float initializer under a fresh name derived from `base`. */
  addFloat(base: string, dims: number[], data: Float32Array | number[]): string {
    const name = this.fresh(base);
    this.graph.initializer.push(floatTensor(name, dims, data));
    return name;
  }

  /** An int64 initializer (shapes, axes, pads), shared between nodes with the same values. */
  addInt64(base: string, values: number[]): string {
    const key = `i64:${values.join(',')}`;
    const hit = this.constCache.get(key);
    if (hit) return hit;
    const name = this.fresh(`${base}`);
    this.graph.initializer.push(int64Tensor(name, [values.length], values));
    this.constCache.set(key, name);
    return name;
  }

  /** A float scalar initializer shared by value (Clip bounds, softmax beta). */
  scalar(value: number): string {
    const key = `f32:${value}`;
    const hit = this.constCache.get(key);
    if (hit) return hit;
    const name = this.fresh(`const_${value}`);
    this.graph.initializer.push(floatTensor(name, [], [value]));
    this.constCache.set(key, name);
    return name;
  }

  emit(opType: string, inputs: string[], outputs: string[], attrs: Record<string, AttrValue> = {}): void {
    this.graph.node.push(node(opType, inputs, outputs, attrs));
  }

  /** Transpose `name` with `perm` into a fresh value. */
  transpose(name: string, perm: number[], suffix: string): string {
    const out = this.fresh(`${name}__${suffix}`);
    this.emit('Transpose', [name], [out], { perm });
    return out;
  }

  /** An operand in TFLite's own (NHWC) element order, whatever its ONNX layout. */
  native(idx: number): string {
    const name = this.value(idx);
    return this.tensor(idx).shape.length === 4 ? this.transpose(name, TO_NHWC, 'nhwc') : name;
  }

  /** An operand for an elementwise op whose output has rank `outRank`, laid out to broadcast against it. */
  broadcastOperand(idx: number, outRank: number): string {
    const t = this.tensor(idx);
    const rank = t.shape.length;
    if (outRank !== 4 || rank === 4) return this.value(idx);
    // A lower-rank operand broadcasts against NHWC trailing axes: make it rank 4 NHWC, then NCHW.
    const padded = [...new Array<number>(4 - rank).fill(1), ...t.shape];
    if (this.isConst(idx)) {
      const { data, shape } = permute(realValues(this.model, t), padded, TO_NCHW);
      return this.addFloat(`${onnxNameFor(t.name)}__nchw`, shape, data);
    }
    const unsq = this.fresh(`${this.value(idx)}__rank4`);
    this.emit('Unsqueeze', [this.value(idx), this.addInt64('axes', [...new Array<number>(4 - rank).keys()])], [unsq]);
    return this.transpose(unsq, TO_NCHW, 'nchw');
  }

  /** Emit the fused activation of an op: `pre` → `out` (Identity when NONE). */
  activation(op: TfliteOperator, act: number, pre: string, out: string): void {
    switch (act) {
      case Activation.NONE:
        this.emit('Identity', [pre], [out]);
        return;
      case Activation.RELU:
        this.emit('Relu', [pre], [out]);
        return;
      case Activation.RELU6:
        this.emit('Clip', [pre, this.scalar(0), this.scalar(6)], [out]);
        return;
      case Activation.RELU_N1_TO_1:
        this.emit('Clip', [pre, this.scalar(-1), this.scalar(1)], [out]);
        return;
      case Activation.TANH:
        this.emit('Tanh', [pre], [out]);
        return;
      default:
        throw this.unsupported(op, `fused activation ${act}`);
    }
  }

  /** Output name for an op with a fused activation: where the op itself writes, and the final name. */
  fusedOutput(op: TfliteOperator, act: number): { pre: string; out: string; finish: () => void } {
    const out = this.define(op.outputs[0]);
    if (act === Activation.NONE) return { pre: out, out, finish: () => {} };
    const pre = this.fresh(`${out}__preact`);
    return { pre, out, finish: () => this.activation(op, act, pre, out) };
  }

  opName(op: TfliteOperator): string {
    const code = this.model.operatorCodes[op.opcodeIndex];
    if (!code) return `opcode #${op.opcodeIndex}`;
    return code.custom !== undefined ? `CUSTOM "${code.custom}"` : builtinOpName(code.builtin);
  }

  unsupported(op: TfliteOperator, what?: string): XferError {
    const out = op.outputs.length > 0 && op.outputs[0] >= 0 ? this.tensor(op.outputs[0]).name : '?';
    return new XferError(`${this.file}: unsupported TFLite operator ${this.opName(op)}${what ? ` (${what})` : ''} at operator ${op.index} (output "${out}")`, {
      hint: 'supported: CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, ADD, MUL, CONCATENATION, AVERAGE_POOL_2D, MAX_POOL_2D, MEAN, PAD, RESHAPE, SQUEEZE, SOFTMAX, RELU, RELU6, RELU_N1_TO_1, TANH, HARD_SWISH, LOGISTIC, QUANTIZE, DEQUANTIZE',
      code: 'EUNSUPPORTED_OP',
    });
  }

  /** ONNX dims of a TFLite activation (NCHW for rank 4), with the batch symbolic. */
  onnxDims(idx: number, nhwc = false): (number | string)[] {
    const shape = this.tensor(idx).shape;
    const dims: (number | string)[] = shape.length === 4 && !nhwc ? TO_NCHW.map((p) => shape[p]) : [...shape];
    if (this.symbolicBatch && shape.length >= 2 && shape[0] === this.batch) dims[0] = 'N';
    return dims;
  }

  /** Record value infos for every TFLite activation that got an ONNX name (for `xfer layers`). */
  recordValueInfos(skip: Set<string>): void {
    for (const [idx, name] of this.values) {
      if (skip.has(name) || this.isConst(idx)) continue;
      const vi = valueInfo(name, DataType.FLOAT, this.onnxDims(idx));
      vi.docString = `TFLite tensor ${idx}: ${this.tensor(idx).name}`;
      this.graph.valueInfo.push(vi);
    }
  }
}
