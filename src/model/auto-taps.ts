/**
 * Taps for a sweep over depth, found from the graph alone (any ONNX, card or not):
 *
 * - CNNs (rank-4 activations): the last tensor at each spatial resolution (stage boundaries),
 *   residual sums (Add/Sum of two computed tensors) and Concat block outputs, and the pooled tensor
 *   in front of the classifier (the first rank-2 activation after the last rank-4 one).
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

function known(r: LayerRow): boolean {
  return !!r.shape && r.shape.slice(1).every((d) => typeof d === 'number' && d > 0) && (r.dtype === null || r.dtype === 'float' || r.dtype === 'float16');
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
    // stage boundaries: the last rank-4 tensor at each spatial size before it shrinks
    const area = (r: LayerRow): number => (r.shape![2] as number) * (r.shape![3] as number);
    for (let i = 0; i < r4.length; i++) {
      const next = r4.slice(i + 1).find((r) => r.op !== 'Pad');
      if ((!next || area(next) < area(r4[i])) && r4[i].op !== 'Pad' && area(r4[i]) > 1) add(r4[i], 'stage', true);
    }
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
  // pre-classifier pooled tensor: the first rank-2 activation after the last deep one, before any MatMul/Gemm output
  const pooled = usable.find((r) => r.index > lastDeep && rank(r) === 2 && !['MatMul', 'Gemm', 'Softmax'].includes(r.op));
  if (pooled) add(pooled, 'pooled', true);

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
