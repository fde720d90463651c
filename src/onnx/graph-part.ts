/**
 * A piece of an ONNX graph under construction: nodes and initializers with unique, prefixed names.
 * Heads and transforms append their own nodes to one (`Head.toOnnx`), so the exporter composes
 * backbone → transforms → head without knowing any head kind.
 */
import { floatTensor, int64Tensor, node } from './builder.js';
import type { NodeProto, TensorProto } from './proto.js';

export class GraphPart {
  readonly nodes: NodeProto[] = [];
  readonly inits: TensorProto[] = [];
  private n = 0;
  constructor(private readonly prefix: string) {}
  name(s: string): string {
    return `${this.prefix}/${s}_${this.n++}`;
  }
  const(s: string, dims: number[], data: Float32Array | number[]): string {
    const name = this.name(s);
    this.inits.push(floatTensor(name, dims, data));
    return name;
  }
  int64(s: string, dims: number[], data: number[]): string {
    const name = this.name(s);
    this.inits.push(int64Tensor(name, dims, data));
    return name;
  }
  /** A node with several outputs (e.g. TopK's values and indices). */
  opN(opType: string, inputs: string[], outputs: number, attrs: Parameters<typeof node>[3] = {}): string[] {
    const outs = Array.from({ length: outputs }, () => this.name(opType.toLowerCase()));
    this.nodes.push(node(opType, inputs, outs, attrs));
    return outs;
  }
  op(opType: string, inputs: string[], attrs: Parameters<typeof node>[3] = {}, out?: string): string {
    const o = out ?? this.name(opType.toLowerCase());
    this.nodes.push(node(opType, inputs, [o], attrs));
    return o;
  }
}

/** x [N, d] → per-row sum of squares [N, 1] (MatMul with ones: no opset-dependent Reduce* axes). */
export function rowSumSq(g: GraphPart, x: string, d: number): string {
  const sq = g.op('Mul', [x, x]);
  return g.op('MatMul', [sq, g.const('ones', [d, 1], new Float32Array(d).fill(1))]);
}

/** rows × cols row-major → cols × rows row-major. */
export function transposed(a: Float32Array, rows: number, cols: number): Float32Array {
  const t = new Float32Array(rows * cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) t[j * rows + i] = a[i * cols + j];
  return t;
}

/** What a head adds to the graph: scores [N, K] (decisionFunction) and probabilities [N, K] (predictProba). */
export interface OnnxHeadOutputs {
  scores: string;
  probs: string;
  /** The default-domain opset the head's nodes need, when newer than the backbone's (a fine-tuned head's own graph). */
  opset?: number;
}
