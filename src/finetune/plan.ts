/**
 * Planning a fine-tune: which nodes of a model form the trainable part (from the `from` tensor up to
 * the pooled features that feed the model's classifier), how they group into blocks, and which
 * weights are trained. Everything that can be checked before training is checked here.
 */
import type { ModelProto, NodeProto, TensorProto } from '../onnx/proto.js';
import { XferError } from '../errors.js';
import { realInputs, topoSort } from '../model/graph.js';
import { constantsOf, readConst } from './tensors.js';
import { attrInt, attrInts, attrStr, inferNode, reduceAxes } from './shapes.js';

export interface ParamInfo {
  name: string;
  shape: number[];
  group: 'head' | 'backbone';
  /** 0 = lowest trainable block, increasing upward; the head is blocks.length. */
  block: number;
}

export interface FinetunePlan {
  from: string;
  /** Per-sample dims at `from` (no batch). */
  fromShape: number[];
  /** The pooled-features tensor the new classifier reads (the input of the model's first Gemm/MatMul). */
  to: string;
  /** Per-sample dims at `to`; the classifier sees them flattened (featureDim). */
  toShape: number[];
  featureDim: number;
  /** Block names, lowest first (all of them, frozen ones included). */
  blocks: string[];
  /** Bottom blocks kept fixed. */
  freeze: number;
  /** Trainable parameters: backbone ones (initializer names) by block, then 'head.weight' [K,F] and 'head.bias' [K]. */
  params: ParamInfo[];
  nClasses: number;
  /** First output name of every node of the fine-tuned part, in execution order, and its block. */
  nodes: string[];
  nodeBlock: number[];
}

export const HEAD_WEIGHT = 'head.weight';
export const HEAD_BIAS = 'head.bias';

/** Ops the backward pass knows (docs/finetune.md lists the formulations). */
export const SUPPORTED_OPS = new Set([
  'Conv', 'BatchNormalization', 'Relu', 'Clip', 'Sigmoid', 'HardSigmoid', 'HardSwish', 'Add', 'Sum', 'Mul',
  'Pad', 'AveragePool', 'GlobalAveragePool', 'ReduceMean', 'Transpose', 'Flatten', 'Reshape', 'Identity', 'Dropout',
]);

interface Graph {
  order: NodeProto[];
  consts: Map<string, TensorProto>;
  producer: Map<string, NodeProto>;
  consumers: Map<string, NodeProto[]>;
  inputs: string[];
}

function graphOf(model: ModelProto): Graph {
  const order = topoSort(model.graph).filter((n) => n.opType !== 'Constant');
  const consts = constantsOf(model);
  const producer = new Map<string, NodeProto>();
  const consumers = new Map<string, NodeProto[]>();
  for (const n of order) {
    for (const o of n.output) if (o) producer.set(o, n);
    for (const i of n.input) if (i) consumers.set(i, [...(consumers.get(i) ?? []), n]);
  }
  return { order, consts, producer, consumers, inputs: realInputs(model.graph).map((i) => i.name) };
}

export const nodeId = (n: NodeProto): string => n.output[0];
const label = (n: NodeProto): string => `${n.opType} node ${n.name || n.output[0]}`;

type Analysis = { ok: true; nodes: NodeProto[]; to: string } | { ok: false; why: string; kind: 'branch' | 'op' | 'end' };

/** Why node `n` (in the trainable part) cannot be trained through, or null. */
function opProblem(n: NodeProto, g: Graph, inPart: Set<NodeProto>, isAct: (t: string) => boolean): string | null {
  if (!SUPPORTED_OPS.has(n.opType)) return `unsupported op ${label(n)}`;
  const c = g.consts;
  switch (n.opType) {
    case 'Conv': {
      if (!c.has(n.input[1])) return `${label(n)}: weights are not a constant`;
      if (attrStr(n, 'auto_pad', 'NOTSET') !== 'NOTSET' && attrStr(n, 'auto_pad', 'NOTSET') !== 'VALID') return `${label(n)}: auto_pad ${attrStr(n, 'auto_pad', '')} is not supported`;
      const w = (c.get(n.input[1])!.dims ?? []).map(Number);
      if (w.length !== 4) return `${label(n)}: only 2-D convolutions are supported`;
      const group = attrInt(n, 'group', 1);
      if (group !== 1 && w[1] !== 1) return `${label(n)}: grouped convolution with ${group} groups of ${w[1]} channels (only group 1 or depthwise)`;
      return null;
    }
    case 'BatchNormalization': {
      const p = g.producer.get(n.input[0]);
      if (!p || p.opType !== 'Conv' || !inPart.has(p) || (g.consumers.get(n.input[0]) ?? []).length !== 1) {
        return `${label(n)}: BatchNormalization is folded into the Conv before it; this one does not follow a Conv`;
      }
      if (n.input.slice(1, 5).some((i) => !c.has(i))) return `${label(n)}: statistics are not constants`;
      return null;
    }
    case 'Clip':
      if (n.input.slice(1).some((i) => i && !c.has(i))) return `${label(n)}: bounds are not constants`;
      return null;
    case 'Pad': {
      if (attrStr(n, 'mode', 'constant') !== 'constant') return `${label(n)}: only constant padding is supported`;
      if (n.input[2] && c.has(n.input[2]) && (readConst(c.get(n.input[2])!).f32?.[0] ?? 0) !== 0) return `${label(n)}: only zero padding is supported`;
      if (n.input[3]) return `${label(n)}: Pad with axes is not supported`;
      const p = n.input[1] ? (c.has(n.input[1]) ? readConst(c.get(n.input[1])!).ints : null) : attrInts(n, 'pads');
      if (!p) return `${label(n)}: pads are not constants`;
      if (p.some((v) => v < 0)) return `${label(n)}: negative pads are not supported`;
      const r = p.length / 2;
      if (p[0] !== 0 || p[r] !== 0) return `${label(n)}: pads the batch dimension`;
      return null;
    }
    case 'AveragePool':
      if (attrInt(n, 'ceil_mode', 0) !== 0 || (attrInts(n, 'pads') ?? []).some((v) => v !== 0)) return `${label(n)}: only a global average (kernel = input size, no padding) is supported`;
      return null;
    case 'ReduceMean':
      if (!reduceAxes(n, c, 4)) return `${label(n)}: axes are not constants`;
      return null;
    case 'Mul':
    case 'Add':
    case 'Sum':
      if (n.input.filter(isAct).length === 0) return `${label(n)}: has no activation input`;
      return null;
    case 'Transpose':
      if ((attrInts(n, 'perm') ?? [1])[0] !== 0) return `${label(n)}: moves the batch axis`;
      return null;
    case 'Flatten':
      if (attrInt(n, 'axis', 1) !== 1) return `${label(n)}: only Flatten(axis 1) is supported`;
      return null;
    default:
      return null;
  }
}


function analyze(g: Graph, model: ModelProto, from: string): Analysis {
  const reach = new Set([from]);
  const down: NodeProto[] = [];
  for (const n of g.order) {
    if (n.input.some((i) => reach.has(i))) {
      down.push(n);
      for (const o of n.output) if (o) reach.add(o);
    }
  }
  const head = down.find((n) => n.opType === 'Gemm' || n.opType === 'MatMul');
  let to: string | undefined;
  if (head && reach.has(head.input[0])) to = head.input[0];
  else to = model.graph.output.map((o) => o.name).find((o) => reach.has(o));
  if (head && !reach.has(head.input[0])) to = undefined;
  if (!to) return { ok: false, kind: 'end', why: `no classifier (Gemm/MatMul) or graph output is reached from ${from}` };
  const downSet = new Set(down);
  const anc = new Set<NodeProto>();
  const stack = [to];
  const seen = new Set<string>();
  while (stack.length > 0) {
    const t = stack.pop()!;
    if (seen.has(t) || t === from) continue;
    seen.add(t);
    const p = g.producer.get(t);
    if (!p || !downSet.has(p) || anc.has(p)) continue;
    anc.add(p);
    for (const i of p.input) if (i) stack.push(i);
  }
  const nodes = down.filter((n) => anc.has(n));
  const inPart = new Set(nodes);
  const made = new Set([from, ...nodes.flatMap((n) => n.output)]);
  const isAct = (t: string): boolean => made.has(t);
  for (const n of nodes) {
    for (const i of n.input) {
      if (!i || g.consts.has(i) || made.has(i)) continue;
      return { ok: false, kind: 'branch', why: `${from} is not on a single path to ${to}: ${label(n)} also reads ${i}, computed beside it` };
    }
  }
  for (const n of nodes) {
    const p = opProblem(n, g, inPart, isAct);
    if (p) return { ok: false, kind: 'op', why: p };
  }
  return { ok: true, nodes, to };
}

/** Position (in the list of tensors) of the model's pooled features: the input of its first Gemm/MatMul. */
function featuresIndex(g: Graph, cands: string[]): number {
  const head = g.order.find((n) => (n.opType === 'Gemm' || n.opType === 'MatMul') && !g.consts.has(n.input[0]));
  const i = head ? cands.indexOf(head.input[0]) : -1;
  return i < 0 ? cands.length : i;
}

function candidates(g: Graph): string[] {
  return [...g.inputs, ...g.order.flatMap((n) => n.output.filter((o) => o))];
}

/** The deepest tensors (up to `max`, deepest first) a fine-tune can start from. */
export function finetuneTaps(model: ModelProto, max = 6): string[] {
  const g = graphOf(model);
  const all = candidates(g);
  const cands = all.slice(0, featuresIndex(g, all));
  const out: string[] = [];
  for (let i = cands.length - 1; i >= 0 && out.length < max; i--) {
    const a = analyze(g, model, cands[i]);
    if (a.ok && a.nodes.length > 0) out.push(cands[i]);
  }
  return out;
}

/** Per-sample shapes of every activation of the model that can be derived (declared ones first). */
export function perSampleShapes(model: ModelProto, g = graphOf(model)): Map<string, number[]> {
  const shapes = new Map<string, number[]>();
  for (const v of [...model.graph.input, ...model.graph.valueInfo, ...model.graph.output]) {
    const dims = v.type?.tensorType?.shape?.dim;
    if (!dims || dims.length === 0 || g.consts.has(v.name)) continue;
    const rest = dims.slice(1).map((d) => (d.dimValue !== undefined ? Number(d.dimValue) : NaN));
    if (rest.every((d) => Number.isFinite(d) && d > 0)) shapes.set(v.name, rest);
  }
  for (const n of g.order) {
    if (n.output.every((o) => !o || shapes.has(o))) continue;
    const out = inferNode(n, (t) => shapes.get(t), g.consts);
    if (!out) continue;
    n.output.forEach((o, i) => {
      if (o && out[i] && !shapes.has(o)) shapes.set(o, out[i]);
    });
  }
  return shapes;
}

/** Block key of each node: Keras names (block_N_*), else residual units ending at an Add/Sum of two activations. */
function blocksOf(nodes: NodeProto[], g: Graph, isAct: (t: string) => boolean): { names: string[]; of: number[] } {
  const keras = nodes.some((n) => /^block_\d+_/.test(n.name ?? ''));
  const names: string[] = [];
  const of: number[] = [];
  let closeAfter: string | null = null;
  for (const n of nodes) {
    const name = n.name || n.output[0];
    let key: string | null = null;
    if (keras) {
      const m = /^(block_\d+|expanded_conv)_/.exec(name);
      if (m) key = m[1];
      else if (n.opType === 'Conv') key = name;
    } else if (closeAfter !== null) {
      // A residual unit ends after its Add, and after an activation applied to the sum.
      const unary = ['Relu', 'Clip', 'HardSwish', 'Sigmoid'].includes(n.opType) && n.input[0] === closeAfter;
      if (unary) closeAfter = ''; // (no tensor is named '': the next node starts a block)
      else {
        key = `#${names.length}`;
        closeAfter = null;
      }
    }
    if (names.length === 0) names.push(key ?? (keras ? name : '#0'));
    else if (key !== null && key !== names[names.length - 1]) names.push(key);
    of.push(names.length - 1);
    const residual = (n.opType === 'Add' || n.opType === 'Sum') && n.input.filter(isAct).length >= 2;
    if (!keras && residual) {
      closeAfter = n.output[0];
      const dir = (n.name ?? '').replace(/\/[^/]*$/, '');
      if (dir && !names.includes(dir)) names[names.length - 1] = dir;
    }
  }
  // A block without weights (a trailing pool/flatten) joins the one below it.
  const hasParams = names.map((_, b) => nodes.some((n, i) => of[i] === b && paramInputs(n, g).length > 0));
  const remap: number[] = [];
  const kept: string[] = [];
  let pending = 0;
  names.forEach((nm, b) => {
    if (hasParams[b]) {
      kept.push(nm.startsWith('#') ? `block${kept.length}` : nm);
      for (let j = b - pending; j <= b; j++) remap[j] = kept.length - 1;
      pending = 0;
    } else if (kept.length > 0) remap[b] = kept.length - 1;
    else pending++;
  });
  if (kept.length === 0) {
    kept.push('block0');
    names.forEach((_, b) => (remap[b] = 0));
  }
  return { names: kept, of: of.map((b) => Math.max(0, remap[b])) };
}

/** The float constants of `n` that are trained. */
export function paramInputs(n: NodeProto, g: { consts: Map<string, TensorProto> }): string[] {
  const c = (i: string | undefined): i is string => !!i && g.consts.has(i);
  switch (n.opType) {
    case 'Conv':
      return [n.input[1], n.input[2]].filter(c);
    case 'BatchNormalization':
      return [n.input[1], n.input[2]].filter(c);
    default:
      return [];
  }
}

export function planFinetune(model: ModelProto, opts: { from: string; nClasses: number; freeze?: number }): FinetunePlan {
  const { from, nClasses } = opts;
  const freeze = opts.freeze ?? 0;
  if (!Number.isInteger(nClasses) || nClasses < 2) throw new XferError(`fine-tune: need at least 2 classes, got ${nClasses}`, { hint: 'the training data must have two or more class folders/labels' });
  if (!Number.isInteger(freeze) || freeze < 0) throw new XferError(`--freeze: expected a non-negative integer, got ${opts.freeze}`);
  const g = graphOf(model);
  const all = candidates(g);
  const at = all.indexOf(from);
  const fi = featuresIndex(g, all);
  if (at > fi) {
    throw new XferError(`--from ${from}: is above the pooled features ${all[fi]} that the new classifier reads`, { hint: `fine-tune from ${all[fi]} or below (deepest possible: ${finetuneTaps(model).join(', ')})` });
  }
  const a = at >= 0 ? analyze(g, model, from) : null;
  if (!a || !a.ok) {
    const taps = finetuneTaps(model);
    const why = a ? (a as { why: string }).why : `no tensor named ${from} in the model`;
    throw new XferError(`--from ${from}: cannot fine-tune from here (${why})`, {
      hint: `the deepest taps that can be fine-tuned from: ${taps.join(', ') || '(none)'}; \`xfer layers <model>\` lists all tensors`,
    });
  }
  const shapes = perSampleShapes(model, g);
  const fromShape = shapes.get(from);
  if (!fromShape) throw new XferError(`--from ${from}: its shape cannot be told from the model`, { hint: 'give the model static input dimensions (e.g. onnxsim / torch.onnx.export with fixed sizes)' });
  // The part's own shapes, from `from` onward (the declared ones may be symbolic).
  const part = new Map([[from, fromShape]]);
  for (const n of a.nodes) {
    const out = inferNode(n, (t) => part.get(t), g.consts);
    if (!out) throw new XferError(`--from ${from}: cannot tell the output shape of ${label(n)}`, { hint: 'fine-tune from a tensor above it' });
    n.output.forEach((o, i) => o && out[i] && part.set(o, out[i]));
  }
  const toShape = part.get(a.to)!;
  const featureDim = toShape.reduce((x, y) => x * y, 1);
  const made = new Set([from, ...a.nodes.flatMap((n) => n.output)]);
  const { names, of } = a.nodes.length > 0 ? blocksOf(a.nodes, g, (t) => made.has(t)) : { names: [], of: [] };
  if (freeze > names.length) throw new XferError(`--freeze ${freeze}: the part above ${from} has only ${names.length} blocks (${names.join(', ')})`, { hint: `use --freeze 0..${names.length}` });
  const params: ParamInfo[] = [];
  const seen = new Set<string>();
  a.nodes.forEach((n, i) => {
    if (of[i] < freeze) return;
    for (const p of paramInputs(n, g)) {
      if (seen.has(p)) continue;
      seen.add(p);
      params.push({ name: p, shape: (g.consts.get(p)!.dims ?? []).map(Number), group: 'backbone', block: of[i] });
    }
  });
  params.push({ name: HEAD_WEIGHT, shape: [nClasses, featureDim], group: 'head', block: names.length });
  params.push({ name: HEAD_BIAS, shape: [nClasses], group: 'head', block: names.length });
  return { from, fromShape, to: a.to, toShape, featureDim, blocks: names, freeze, params, nClasses, nodes: a.nodes.map(nodeId), nodeBlock: of };
}

/** The plan's nodes, constants and per-sample shapes, recovered from the model. */
export function partOf(model: ModelProto, plan: FinetunePlan): { nodes: NodeProto[]; consts: Map<string, TensorProto>; shapes: Map<string, number[]>; consumers: Map<string, NodeProto[]> } {
  const g = graphOf(model);
  const byId = new Map(g.order.map((n) => [nodeId(n), n]));
  const nodes = plan.nodes.map((id) => {
    const n = byId.get(id);
    if (!n) throw new XferError(`fine-tune plan does not match the model: node ${id} is missing`, { hint: 'plan again with the model it will train' });
    return n;
  });
  const shapes = new Map([[plan.from, plan.fromShape]]);
  for (const n of nodes) {
    const out = inferNode(n, (t) => shapes.get(t), g.consts)!;
    n.output.forEach((o, i) => o && out?.[i] && shapes.set(o, out[i]));
  }
  const consumers = new Map<string, NodeProto[]>();
  for (const n of nodes) for (const i of n.input) if (i) consumers.set(i, [...(consumers.get(i) ?? []), n]);
  return { nodes, consts: g.consts, shapes, consumers };
}
