/**
 * A float64 interpreter of the ops a fine-tuned part may contain, written from the ONNX operator
 * definitions: the independent forward that the finite-difference checks differentiate.
 */
import type { ModelProto, NodeProto } from '../src/onnx/proto.js';
import { partOf, HEAD_BIAS, HEAD_WEIGHT, type FinetunePlan } from '../src/finetune/plan.js';
import { readConst } from '../src/finetune/tensors.js';

interface T { shape: number[]; data: Float64Array }

const sizeOf = (s: number[]): number => s.reduce((a, b) => a * b, 1);
const strides = (s: number[]): number[] => s.map((_, i) => sizeOf(s.slice(i + 1)));
const ints = (n: NodeProto, k: string): number[] | undefined => n.attribute?.find((a) => a.name === k)?.ints?.map(Number);
const int = (n: NodeProto, k: string, d: number): number => Number(n.attribute?.find((a) => a.name === k)?.i ?? d);
const flt = (n: NodeProto, k: string, d: number): number => n.attribute?.find((a) => a.name === k)?.f ?? d;

function map(x: T, f: (v: number) => number): T {
  return { shape: x.shape, data: x.data.map(f) };
}

function broadcast(ts: T[], f: (vs: number[]) => number): T {
  const r = Math.max(...ts.map((t) => t.shape.length));
  const shapes = ts.map((t) => [...Array(r - t.shape.length).fill(1), ...t.shape]);
  const out = Array.from({ length: r }, (_, i) => Math.max(...shapes.map((s) => s[i])));
  const os = strides(out);
  const ss = shapes.map(strides);
  const data = new Float64Array(sizeOf(out));
  for (let i = 0; i < data.length; i++) {
    const vs = ts.map((t, k) => {
      let off = 0;
      for (let d = 0; d < r; d++) {
        const c = Math.floor(i / os[d]) % out[d];
        off += (shapes[k][d] === 1 ? 0 : c) * ss[k][d];
      }
      return t.data[off];
    });
    data[i] = f(vs);
  }
  return { shape: out, data };
}

function conv(x: T, w: T, b: T | undefined, n: NodeProto): T {
  const [N, Ci, H, W] = x.shape;
  const [O, Cg, kh, kw] = w.shape;
  const st = ints(n, 'strides') ?? [1, 1];
  const dl = ints(n, 'dilations') ?? [1, 1];
  const p = ints(n, 'pads') ?? [0, 0, 0, 0];
  const g = int(n, 'group', 1);
  const Ho = Math.floor((H + p[0] + p[2] - dl[0] * (kh - 1) - 1) / st[0]) + 1;
  const Wo = Math.floor((W + p[1] + p[3] - dl[1] * (kw - 1) - 1) / st[1]) + 1;
  const out = new Float64Array(N * O * Ho * Wo);
  const og = O / g;
  for (let nn = 0; nn < N; nn++) for (let o = 0; o < O; o++) for (let i = 0; i < Ho; i++) for (let j = 0; j < Wo; j++) {
    let s = b ? b.data[o] : 0;
    const grp = Math.floor(o / og);
    for (let c = 0; c < Cg; c++) for (let a = 0; a < kh; a++) for (let e = 0; e < kw; e++) {
      const yy = i * st[0] - p[0] + a * dl[0];
      const xx = j * st[1] - p[1] + e * dl[1];
      if (yy < 0 || yy >= H || xx < 0 || xx >= W) continue;
      s += x.data[((nn * Ci + grp * Cg + c) * H + yy) * W + xx] * w.data[((o * Cg + c) * kh + a) * kw + e];
    }
    out[((nn * O + o) * Ho + i) * Wo + j] = s;
  }
  return { shape: [N, O, Ho, Wo], data: out };
}

function reduceMean(x: T, axes: number[], keep: boolean): T {
  const shape = x.shape.map((d, i) => (axes.includes(i) ? 1 : d));
  const os = strides(shape);
  const xs = strides(x.shape);
  const data = new Float64Array(sizeOf(shape));
  const count = axes.reduce((a, i) => a * x.shape[i], 1);
  for (let i = 0; i < x.data.length; i++) {
    let off = 0;
    for (let d = 0; d < shape.length; d++) off += (axes.includes(d) ? 0 : Math.floor(i / xs[d]) % x.shape[d]) * os[d];
    data[off] += x.data[i] / count;
  }
  return { shape: keep ? shape : shape.filter((_, i) => !axes.includes(i)), data };
}

function transpose(x: T, perm: number[]): T {
  const shape = perm.map((p) => x.shape[p]);
  const xs = strides(x.shape);
  const os = strides(shape);
  const data = new Float64Array(x.data.length);
  for (let i = 0; i < data.length; i++) {
    let off = 0;
    for (let d = 0; d < shape.length; d++) off += (Math.floor(i / os[d]) % shape[d]) * xs[perm[d]];
    data[i] = x.data[off];
  }
  return { shape, data };
}

function pad(x: T, p: number[]): T {
  const r = x.shape.length;
  const shape = x.shape.map((d, i) => d + p[i] + p[i + r]);
  const os = strides(shape);
  const xs = strides(x.shape);
  const data = new Float64Array(sizeOf(shape));
  for (let i = 0; i < x.data.length; i++) {
    let off = 0;
    for (let d = 0; d < r; d++) off += (Math.floor(i / xs[d]) % x.shape[d] + p[d]) * os[d];
    data[off] = x.data[i];
  }
  return { shape, data };
}

function run(n: NodeProto, v: (name: string) => T | undefined, ints64: (name: string) => number[], batchStats: boolean): T {
  const x = v(n.input[0])!;
  switch (n.opType) {
    case 'Conv':
      return conv(x, v(n.input[1])!, n.input[2] ? v(n.input[2]) : undefined, n);
    case 'BatchNormalization': {
      const [g, b] = n.input.slice(1, 3).map((i) => v(i)!);
      let [m, va] = n.input.slice(3, 5).map((i) => v(i)!);
      const eps = flt(n, 'epsilon', 1e-5);
      const hw = sizeOf(x.shape.slice(2));
      if (batchStats) {
        // PyTorch's train mode: the batch's mean and biased variance per channel
        const C = x.shape[1];
        const mean = new Float64Array(C);
        const vr = new Float64Array(C);
        const cnt = x.data.length / C;
        x.data.forEach((val, i) => (mean[Math.floor(i / hw) % C] += val / cnt));
        x.data.forEach((val, i) => (vr[Math.floor(i / hw) % C] += (val - mean[Math.floor(i / hw) % C]) ** 2 / cnt));
        m = { shape: [C], data: mean };
        va = { shape: [C], data: vr };
      }
      return { shape: x.shape, data: x.data.map((val, i) => { const c = Math.floor(i / hw) % x.shape[1]; return ((val - m.data[c]) / Math.sqrt(va.data[c] + eps)) * g.data[c] + b.data[c]; }) };
    }
    case 'Relu':
      return map(x, (a) => Math.max(0, a));
    case 'Clip': {
      const lo = n.input[1] ? v(n.input[1])!.data[0] : -Infinity;
      const hi = n.input[2] ? v(n.input[2])!.data[0] : Infinity;
      return map(x, (a) => Math.min(hi, Math.max(lo, a)));
    }
    case 'Sigmoid':
      return map(x, (a) => 1 / (1 + Math.exp(-a)));
    case 'HardSigmoid':
      return map(x, (a) => Math.max(0, Math.min(1, flt(n, 'alpha', 0.2) * a + flt(n, 'beta', 0.5))));
    case 'HardSwish':
      return map(x, (a) => a * Math.max(0, Math.min(1, a / 6 + 0.5)));
    case 'Add':
    case 'Sum':
      return broadcast(n.input.map((i) => v(i)!), (vs) => vs.reduce((a, b) => a + b, 0));
    case 'Mul':
      return broadcast(n.input.map((i) => v(i)!), (vs) => vs[0] * vs[1]);
    case 'Pad':
      return pad(x, ints64(n.input[1]));
    case 'AveragePool':
    case 'GlobalAveragePool':
      return reduceMean(x, [2, 3], true);
    case 'ReduceMean':
      return reduceMean(x, ints(n, 'axes')!, int(n, 'keepdims', 1) === 1);
    case 'Transpose':
      return transpose(x, ints(n, 'perm')!);
    case 'Flatten':
      return { shape: [x.shape[0], sizeOf(x.shape.slice(1))], data: x.data };
    case 'Reshape': {
      const want = ints64(n.input[1]).map((d, i) => (d === 0 ? x.shape[i] : d));
      const known = want.filter((d) => d !== -1).reduce((a, b) => a * b, 1);
      return { shape: want.map((d) => (d === -1 ? x.data.length / known : d)), data: x.data };
    }
    case 'Identity':
    case 'Dropout':
      return x;
    default:
      throw new Error(`f64 interpreter: ${n.opType}`);
  }
}

/** Logits [N, K] in float64 for input `x` [N, ...fromShape] and the trainable weights `w`. */
/**
 * `batchStats`: BatchNormalization nodes (by output) that normalise by batch statistics; `trace`
 * receives every tensor computed.
 */
export function logits64(model: ModelProto, plan: FinetunePlan, x: Float64Array, n: number, w: Map<string, Float64Array>, batchStats: ReadonlySet<string> = new Set(), trace?: Map<string, { shape: number[]; data: Float64Array }>): Float64Array {
  const part = partOf(model, plan);
  const env = new Map<string, T>([[plan.from, { shape: [n, ...plan.fromShape], data: x }]]);
  const v = (name: string): T | undefined => {
    if (env.has(name)) return env.get(name);
    const c = part.consts.get(name);
    if (!c) return undefined;
    const r = readConst(c);
    return { shape: r.dims, data: w.get(name) ?? Float64Array.from(r.f32 ?? r.ints ?? []) };
  };
  const ints64 = (name: string): number[] => readConst(part.consts.get(name)!).ints!;
  for (const node of part.nodes) env.set(node.output[0], run(node, v, ints64, batchStats.has(node.output[0])));
  if (trace) for (const [k, t] of env) trace.set(k, t);
  const f = env.get(plan.to)!.data;
  const F = plan.featureDim;
  const K = plan.nClasses;
  const W = w.get(HEAD_WEIGHT)!;
  const B = w.get(HEAD_BIAS)!;
  const out = new Float64Array(n * K);
  for (let i = 0; i < n; i++) for (let k = 0; k < K; k++) {
    let s = B[k];
    for (let j = 0; j < F; j++) s += f[i * F + j] * W[k * F + j];
    out[i * K + k] = s;
  }
  return out;
}
