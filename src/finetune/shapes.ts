/**
 * Per-sample static shapes (batch dimension left out) for the ops a fine-tuned part may contain,
 * plus the frozen ops before it. The training graph needs them for pads, slices and reductions.
 */
import type { NodeProto, TensorProto } from '../onnx/proto.js';
import { readConst } from './tensors.js';

export function attrInts(n: NodeProto, name: string): number[] | undefined {
  return n.attribute?.find((a) => a.name === name)?.ints?.map(Number);
}
export function attrInt(n: NodeProto, name: string, dflt: number): number {
  const a = n.attribute?.find((x) => x.name === name);
  return a?.i !== undefined ? Number(a.i) : dflt;
}
export function attrFloat(n: NodeProto, name: string, dflt: number): number {
  const a = n.attribute?.find((x) => x.name === name);
  return a?.f !== undefined ? a.f : dflt;
}
export function attrStr(n: NodeProto, name: string, dflt: string): string {
  const a = n.attribute?.find((x) => x.name === name);
  return a?.s ? new TextDecoder().decode(a.s) : dflt;
}

/** Spatial geometry of a Conv or pooling node on an input of spatial size `spatial`. */
export interface Geometry {
  kernel: number[];
  strides: number[];
  dilations: number[];
  /** [begin..., end...] as ONNX writes them. */
  pads: number[];
  out: number[];
}

export function geometry(n: NodeProto, spatial: number[], kernel: number[]): Geometry {
  const r = spatial.length;
  const strides = attrInts(n, 'strides') ?? Array(r).fill(1);
  const dilations = attrInts(n, 'dilations') ?? Array(r).fill(1);
  let pads = attrInts(n, 'pads') ?? Array(2 * r).fill(0);
  const autoPad = attrStr(n, 'auto_pad', 'NOTSET');
  const ceil = attrInt(n, 'ceil_mode', 0) === 1;
  if (autoPad === 'SAME_UPPER' || autoPad === 'SAME_LOWER') {
    pads = Array(2 * r).fill(0);
    for (let i = 0; i < r; i++) {
      const out = Math.ceil(spatial[i] / strides[i]);
      const total = Math.max(0, (out - 1) * strides[i] + dilations[i] * (kernel[i] - 1) + 1 - spatial[i]);
      const small = Math.floor(total / 2);
      pads[i] = autoPad === 'SAME_UPPER' ? small : total - small;
      pads[i + r] = total - pads[i];
    }
  } else if (autoPad === 'VALID') pads = Array(2 * r).fill(0);
  const out = spatial.map((s, i) => {
    const v = (s + pads[i] + pads[i + r] - dilations[i] * (kernel[i] - 1) - 1) / strides[i];
    return (ceil ? Math.ceil(v) : Math.floor(v)) + 1;
  });
  return { kernel, strides, dilations, pads, out };
}

function broadcast(a: number[], b: number[]): number[] {
  const r = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < r; i++) {
    const x = a[a.length - r + i] ?? 1;
    const y = b[b.length - r + i] ?? 1;
    if (x !== y && x !== 1 && y !== 1) throw new Error(`shapes [${a}] and [${b}] do not broadcast`);
    out.push(x === 1 ? y : x);
  }
  return out;
}

/**
 * Per-sample output shapes of `n`, given per-sample shapes of its activation inputs (`shape(name)`,
 * undefined for constants) and the constants. Returns null for ops it does not know.
 */
export function inferNode(n: NodeProto, shape: (name: string) => number[] | undefined, consts: Map<string, TensorProto>): number[][] | null {
  const x = shape(n.input[0]);
  const full = (name: string): number[] | undefined => {
    const s = shape(name);
    if (s) return [1, ...s];
    const c = consts.get(name);
    return c ? (c.dims ?? []).map(Number) : undefined;
  };
  switch (n.opType) {
    case 'Conv': {
      const w = consts.get(n.input[1]);
      if (!x || !w) return null;
      const wd = (w.dims ?? []).map(Number);
      const g = geometry(n, x.slice(1), wd.slice(2));
      return [[wd[0], ...g.out]];
    }
    case 'MaxPool':
    case 'AveragePool': {
      if (!x) return null;
      const k = attrInts(n, 'kernel_shape') ?? [];
      return [[x[0], ...geometry(n, x.slice(1), k).out]];
    }
    case 'GlobalAveragePool':
    case 'GlobalMaxPool':
      return x ? [[x[0], ...x.slice(1).map(() => 1)]] : null;
    case 'BatchNormalization':
    case 'Relu':
    case 'Clip':
    case 'Sigmoid':
    case 'HardSigmoid':
    case 'HardSwish':
    case 'LeakyRelu':
    case 'Identity':
    case 'Dropout':
    case 'Softmax':
    case 'LogSoftmax':
    case 'Cast':
      return x ? [x] : null;
    case 'Add':
    case 'Sub':
    case 'Mul':
    case 'Div':
    case 'Sum': {
      let s: number[] | undefined = full(n.input[0]);
      for (const i of n.input.slice(1)) {
        const t = full(i);
        if (!s || !t) return null;
        s = broadcast(s, t);
      }
      return s ? [s.slice(1)] : null;
    }
    case 'Pad': {
      if (!x) return null;
      const p = consts.get(n.input[1]);
      const pads = p ? readConst(p).ints : attrInts(n, 'pads');
      if (!pads) return null;
      const r = x.length + 1;
      return [x.map((d, i) => d + pads[i + 1] + pads[i + 1 + r])];
    }
    case 'Transpose': {
      if (!x) return null;
      const perm = attrInts(n, 'perm') ?? [...Array(x.length + 1).keys()].reverse();
      if (perm[0] !== 0) return null;
      return [perm.slice(1).map((p) => x[p - 1])];
    }
    case 'Flatten': {
      // Only axis 1 keeps the batch dimension apart.
      if (!x || attrInt(n, 'axis', 1) !== 1) return null;
      return [[x.reduce((a, b) => a * b, 1)]];
    }
    case 'Reshape': {
      const c = consts.get(n.input[1]);
      if (!x || !c) return null;
      const want = readConst(c).ints;
      if (!want || (want[0] !== 0 && want[0] !== -1)) return null;
      const total = x.reduce((a, b) => a * b, 1);
      const rest = want.slice(1).map((d, i) => (d === 0 ? x[i] : d));
      const known = rest.filter((d) => d !== -1).reduce((a, b) => a * b, 1);
      return [rest.map((d) => (d === -1 ? total / known : d))];
    }
    case 'ReduceMean': {
      if (!x) return null;
      const ax = reduceAxes(n, consts, x.length + 1);
      if (!ax || ax.includes(0)) return null;
      const keep = attrInt(n, 'keepdims', 1) === 1;
      const s = [1, ...x];
      return [s.map((d, i) => (ax.includes(i) ? (keep ? 1 : -1) : d)).filter((d) => d !== -1).slice(1)];
    }
    case 'Gemm': {
      const b = consts.get(n.input[1]);
      if (!x || !b) return null;
      const bd = (b.dims ?? []).map(Number);
      return [[attrInt(n, 'transB', 0) ? bd[0] : bd[1]]];
    }
    case 'MatMul': {
      const b = consts.get(n.input[1]);
      if (!x || !b) return null;
      const bd = (b.dims ?? []).map(Number);
      return [[...x.slice(0, -1), bd[bd.length - 1]]];
    }
    case 'Concat': {
      const axis = attrInt(n, 'axis', 0);
      const shapes = n.input.map((i) => shape(i));
      if (shapes.some((s) => !s) || axis === 0) return null;
      const a = axis < 0 ? shapes[0]!.length + 1 + axis : axis;
      const out = shapes[0]!.slice();
      out[a - 1] = shapes.reduce((acc, s) => acc + s![a - 1], 0);
      return [out];
    }
    default:
      return null;
  }
}

/** The axes a ReduceMean/ReduceSum node reduces (attribute before opset 18, input after). */
export function reduceAxes(n: NodeProto, consts: Map<string, TensorProto>, rank: number): number[] | null {
  let ax = attrInts(n, 'axes');
  if (!ax && n.input[1]) {
    const c = consts.get(n.input[1]);
    ax = c ? readConst(c).ints ?? undefined : undefined;
  }
  if (!ax) return null;
  return ax.map((a) => (a < 0 ? a + rank : a));
}
