/**
 * Taps for a sweep over depth, found from the graph alone (any ONNX, card or not):
 *
 * - CNNs (rank-4 activations): per spatial resolution, the last block output (residual sum or
 *   Concat; else the last tensor) at it — the stage boundaries —, the deepest feature map, the other
 *   residual sums (Add/Sum of two computed tensors) and Concat block outputs, and the pooled tensor
 *   in front of the classifier (the rank-2 input of the first MatMul/Gemm after the feature maps).
 * - Transformers (rank-3 token activations, no rank-4 stages): the block outputs, i.e. every second
 *   residual sum (attention + MLP per block), and the pooled tensor in front of the classifier.
 *
 * Stage boundaries and the pre-classifier tensor are always kept; the rest are thinned evenly over
 * depth to at most `max` taps; fewer than `min` are topped up with evenly spaced activations.
 */
import type { ModelProto } from '../onnx/proto.js';
import { producers } from './graph.js';
import type { LayerRow } from './layers.js';

export interface AutoTap {
  name: string;
  /** Position in topological order / number of tensors: 0 = input side, 1 = output side. */
  depth: number;
  why: 'stage' | 'residual' | 'concat' | 'block' | 'pooled' | 'activation';
}

const ACTIVATIONS = new Set(['Relu', 'Clip', 'HardSwish', 'HardSigmoid', 'Sigmoid', 'Mul', 'Gelu', 'Elu', 'LeakyRelu', 'PRelu', 'Add', 'Sum', 'Concat', 'BatchNormalization', 'MaxPool']);

function rank(r: LayerRow): number {
  return r.shape ? r.shape.length : -1;
}

/** Ops that only move or relabel values: never a tap of their own (a layout change is not a stage). */
const LAYOUT = new Set(['Transpose', 'Reshape', 'Flatten', 'Squeeze', 'Unsqueeze', 'Pad', 'Cast', 'Identity', 'Dropout', 'Shape', 'Slice', 'Gather', 'Split']);

function known(r: LayerRow): boolean {
  return !LAYOUT.has(r.op) && !!r.shape && r.shape.slice(1).every((d) => typeof d === 'number' && d > 0) && (r.dtype === null || r.dtype === 'float' || r.dtype === 'float16');
}

/** Evenly pick `n` items of `xs` (keeps the last). */
function spread<T>(xs: T[], n: number): T[] {
  if (n >= xs.length) return xs.slice();
  if (n <= 0) return [];
  if (n === 1) return [xs[xs.length - 1]];
  return Array.from({ length: n }, (_, i) => xs[Math.round((i * (xs.length - 1)) / (n - 1))]);
}

export function autoTaps(model: ModelProto, rows: LayerRow[], opts: { min?: number; max?: number } = {}): AutoTap[] {
  const min = opts.min ?? 8;
  const max = opts.max ?? 16;
  const total = Math.max(1, rows.length - 1);
  const depth = (r: LayerRow): number => r.index / total;
  const inits = new Set(model.graph.initializer.map((t) => t.name ?? ''));
  const prod = producers(model.graph);
  const computed = (x: string): boolean => !!x && !inits.has(x) && prod.get(x)?.opType !== 'Constant';
  const isResidual = (r: LayerRow): boolean => {
    if (r.op !== 'Add' && r.op !== 'Sum') return false;
    const n = prod.get(r.name);
    return !!n && n.input.filter(computed).length >= 2;
  };
  const usable = rows.filter(known);
  const r4 = usable.filter((r) => rank(r) === 4);
  const picked = new Map<string, AutoTap>();
  const must = new Set<string>();
  const add = (r: LayerRow, why: AutoTap['why'], keep = false): void => {
    if (!picked.has(r.name)) picked.set(r.name, { name: r.name, depth: depth(r), why });
    if (keep) must.add(r.name);
  };
  let lastDeep = -1;
  if (r4.length > 0) {
    // stage boundaries: per spatial size, the last block output (residual sum or Concat) at that size,
    // else the last tensor at it (branches of Inception-style blocks interleave sizes in topological order)
    const area = (r: LayerRow): number => (r.shape![2] as number) * (r.shape![3] as number);
    const lastAt = new Map<number, LayerRow>();
    const lastBlockAt = new Map<number, LayerRow>();
    for (const r of r4) {
      lastAt.set(area(r), r);
      if (isResidual(r) || r.op === 'Concat') lastBlockAt.set(area(r), r);
    }
    for (const [a, r] of lastAt) if (a > 1) add(lastBlockAt.get(a) ?? r, 'stage', true);
    // and the deepest feature map itself (e.g. the 1×1-conv expansion before pooling)
    const deepest = r4.filter((r) => area(r) > 1).pop();
    if (deepest) add(deepest, 'stage', true);
    for (const r of r4) if (isResidual(r)) add(r, 'residual');
    for (const r of r4) if (r.op === 'Concat') add(r, 'concat');
    lastDeep = r4[r4.length - 1].index;
  } else {
    const r3 = usable.filter((r) => rank(r) === 3 && isResidual(r));
    const blocks = r3.length % 2 === 0 ? r3.filter((_, i) => i % 2 === 1) : r3;
    for (const r of blocks) add(r, 'block');
    if (blocks.length) add(blocks[blocks.length - 1], 'block', true);
    lastDeep = r3.length ? r3[r3.length - 1].index : -1;
  }
  // pre-classifier pooled tensor: the rank-2 input of the first MatMul/Gemm after the last deep tensor
  const byName = new Map(usable.map((r) => [r.name, r]));
  const order = new Map(rows.map((r) => [r.name, r.index]));
  const firstDense = model.graph.node
    .filter((n) => (n.opType === 'MatMul' || n.opType === 'Gemm') && (order.get(n.output[0]) ?? -1) > lastDeep)
    .sort((a, b) => order.get(a.output[0])! - order.get(b.output[0])!)[0];
  const pooledName = firstDense?.input[0];
  const pooledRow = pooledName ? rows.find((r) => r.name === pooledName && rank(r) === 2) : undefined;
  if (pooledRow && (byName.has(pooledRow.name) || LAYOUT.has(pooledRow.op))) add(pooledRow, 'pooled', true);
  let out = [...picked.values()].sort((a, b) => a.depth - b.depth);
  if (out.length > max) {
    const keep = out.filter((t) => must.has(t.name));
    const rest = out.filter((t) => !must.has(t.name));
    out = keep.length >= max ? spread(keep, max) : [...keep, ...spread(rest, max - keep.length)];
  } else if (out.length < min) {
    const have = new Set(out.map((t) => t.name));
    const deep = r4.length ? r4 : usable.filter((r) => rank(r) === 3);
    const extra = deep.filter((r) => ACTIVATIONS.has(r.op) && !have.has(r.name));
    for (const r of spread(extra, min - out.length)) out.push({ name: r.name, depth: depth(r), why: 'activation' });
  }
  return out.sort((a, b) => a.depth - b.depth);
}
