/**
 * Taps: turn user tap names into tensors, and derive a model whose outputs are exactly those tensors
 * (optionally pooled inside the graph, always float32), with every node not needed for them pruned,
 * so tapping an early layer costs only the early compute.
 */
import { closest, distance } from 'fastest-levenshtein';
import { XferError } from '../errors.js';
import { node, int64Tensor } from '../onnx/builder.js';
import { DataType, dataTypeName, type GraphProto, type ModelProto, type NodeProto, type TensorProto, type ValueInfoProto } from '../onnx/proto.js';
import { inferDtypes, listTensors, realInputs, type TensorInfo } from './graph.js';

export type Pool = 'avg' | 'max' | 'avgmax' | 'flatten' | 'none' | 'cls' | 'mean' | 'patch-mean' | 'cls+mean';
export const POOLS: readonly Pool[] = ['avg', 'max', 'avgmax', 'flatten', 'none', 'cls', 'mean', 'patch-mean', 'cls+mean'];
/** Poolings over the token axis of transformer outputs [N, T, C] (token 0 = CLS). */
export const TOKEN_POOLS: readonly Pool[] = ['cls', 'mean', 'patch-mean', 'cls+mean'];

/**
 * What each pooling does, for --help and docs. Rank-4 maps are [N,C,H,W] (4-D taps inside xfer's
 * graphs are channels-first); rank-3 token tensors are [N,T,C].
 */
export const POOL_HELP: Record<Pool, string> = {
  avg: 'mean over every axis after axis 1: [N,C,H,W] -> [N,C]; on [N,T,C] that averages channels, not tokens (use mean)',
  max: 'max over every axis after axis 1 (like avg)',
  avgmax: 'avg and max concatenated: [N,2C]',
  flatten: 'all values per image: [N,C,H,W] -> [N,C*H*W], [N,T,C] -> [N,T*C]',
  none: 'the raw tensor (rank 2 only for training heads)',
  cls: 'token 0 of [N,T,C] (the class token): [N,C]; rank 3 only',
  mean: 'mean over all tokens of [N,T,C], CLS included: [N,C]; rank 3 only',
  'patch-mean': 'mean over tokens 1..T-1 of [N,T,C] (without the CLS token): [N,C]; rank 3 only',
  'cls+mean': 'CLS token and patch-mean concatenated: [N,2C] (the DINOv2 linear-probe feature); rank 3 only',
};

/** A tap name meaning "the model's first output" (what `xfer classify` runs: the model's own head). */
export const MODEL_OUTPUT_TAP = '@output';

export interface TapRequest {
  /** Tensor name, node name, or index (as a string of digits) from `xfer layers`. */
  name: string;
  pool: Pool;
}

export interface ResolvedTap {
  /** The tensor tapped. */
  tensor: string;
  /** What the user asked for. */
  requested: string;
  pool: Pool;
  /** The derived model's output name for this tap. */
  output: string;
}

/** Turn a user's tap name into a tensor name; unknown names list the closest candidates. */
export function resolveTapName(requested: string, tensors: TensorInfo[], file = 'model'): TensorInfo {
  const byName = tensors.find((t) => t.name === requested);
  if (byName) return byName;
  if (/^\d+$/.test(requested)) {
    const idx = Number(requested);
    if (idx < tensors.length) return tensors[idx];
    throw new XferError(`${file}: tap index ${idx} out of range (the model has ${tensors.length} tensors, 0..${tensors.length - 1})`, {
      hint: `run \`xfer layers ${file}\` to list them`,
    });
  }
  const byNode = tensors.find((t) => t.node === requested);
  if (byNode) return byNode;
  // Keras-style layer names inside converted graphs ("block_13_expand_relu/Relu6:0" or "model/block_13_expand_relu/...").
  const suffix = tensors.filter((t) => t.name.split('/').includes(requested));
  if (suffix.length > 0) return suffix[suffix.length - 1];
  const names = tensors.map((t) => t.name);
  const near = names
    .map((n) => ({ n, d: distance(requested.toLowerCase(), n.toLowerCase()) }))
    .sort((a, b) => a.d - b.d)
    .slice(0, 5)
    .map((x) => x.n);
  const best = closest(requested, names);
  throw new XferError(`${file}: unknown tap "${requested}"; closest: ${[...new Set([best, ...near])].slice(0, 5).join(', ')}`, {
    hint: `run \`xfer layers ${file} --grep <text>\` to list tappable tensors`,
  });
}

/**
 * `resolveTapName`, plus the model's own (non-initializer) inputs by exact name: fine-tuning from the
 * input records the input tensor as its tap, and predict must feed the head exactly that tensor.
 */
export function resolveTapOrInput(requested: string, model: ModelProto, tensors: TensorInfo[], file = 'model'): TensorInfo {
  const input = tensors.some((t) => t.name === requested) ? undefined : realInputs(model.graph).find((i) => i.name === requested);
  if (!input) return resolveTapName(requested, tensors, file);
  const tt = input.type?.tensorType;
  const shape = tt?.shape ? (tt.shape.dim ?? []).map((d) => (d.dimValue !== undefined ? Number(d.dimValue) : d.dimParam ? d.dimParam : null)) : null;
  return { index: -1, name: input.name, node: input.name, op: 'input', dtype: tt?.elemType ? dataTypeName(tt.elemType) : null, shape, fromInput: true };
}

export interface DeriveOptions {
  /** Element types of tensors (from a shape probe), used to check taps are float and to insert casts. */
  dtypes?: Map<string, string>;
  file?: string;
  /** Prepend in-graph preprocessing: a uint8 NHWC "pixels" input replacing the model's image input. */
  pixelInput?: PixelInputSpec;
  /** Ranks of tapped tensors (from a probe run): rank-4 maps pool with ORT's fast Global*Pool. */
  ranks?: Map<string, number>;
}

export interface PixelInputSpec {
  /** The model's image input to replace. */
  inputName: string;
  layout: 'NCHW' | 'NHWC';
  dtype: 'float32' | 'float16';
  /** Per-channel x = p*scale + bias on 0..255 pixels already in the model's channel order. */
  scale: [number, number, number];
  bias: [number, number, number];
  height: number;
  width: number;
}

export const PIXEL_INPUT = 'xfer_pixels';

/** Build the derived model: outputs = taps (pooled, float32), pruned to what they need. */
export function deriveTapModel(model: ModelProto, taps: TapRequest[], opts: DeriveOptions = {}): { model: ModelProto; taps: ResolvedTap[] } {
  const file = opts.file ?? 'model';
  if (taps.length === 0) throw new XferError(`${file}: no taps requested`, { hint: 'pass --layers <name>[,<name>...]' });
  const tensors = listTensors(model);
  const dtypes = opts.dtypes ?? inferDtypes(model);
  const g = model.graph;
  const newNodes: NodeProto[] = [];
  const outputs: ValueInfoProto[] = [];
  const resolved: ResolvedTap[] = [];
  const inits: TensorProto[] = [];
  const used = new Set<string>();
  taps.forEach((tap, i) => {
    if (!POOLS.includes(tap.pool)) throw new XferError(`unknown pooling "${tap.pool}"`, { hint: `use one of ${POOLS.join(', ')}` });
    const info = resolveTapOrInput(tap.name, model, tensors, file);
    if (!info.fromInput) {
      throw new XferError(`${file}: tap "${tap.name}" is tensor ${info.name} (${info.op}), computed from the model's weights alone: it has no batch axis (one value for every image), so it is not a feature`, {
        hint: `tap a tensor computed from the image; \`xfer layers ${file}\` lists them`,
      });
    }
    const dtype = dtypes.get(info.name) ?? info.dtype;
    if (dtype && dtype !== 'float' && dtype !== 'float16' && dtype !== 'double' && dtype !== 'bfloat16') {
      throw new XferError(`${file}: tap "${tap.name}" is tensor ${info.name} of type ${dtype}, not a float tensor`, {
        hint: 'tap a float activation (conv/relu/pool outputs); `xfer layers` shows each tensor\'s type',
      });
    }
    const key = `${info.name}|${tap.pool}`;
    if (used.has(key)) throw new XferError(`tap ${info.name} with pool ${tap.pool} requested twice`, { hint: 'list each layer once in --layers' });
    used.add(key);
    const out = `xfer_tap_${i}`;
    let cur = info.name;
    if (dtype !== 'float') {
      newNodes.push(node('Cast', [cur], [`${out}/cast`], { to: DataType.FLOAT }));
      cur = `${out}/cast`;
    }
    const rank = opts.ranks?.get(info.name) ?? info.shape?.length;
    if (TOKEN_POOLS.includes(tap.pool) && rank !== undefined && rank !== 3) {
      throw new XferError(`${file}: pooling "${tap.pool}" needs a rank-3 token tensor [N,T,C], but tap ${info.name} has rank ${rank}`, {
        hint: 'use avg, max, avgmax or flatten for conv feature maps; token pools are for transformer outputs',
      });
    }
    const pooled = poolNodes(cur, out, tap.pool, inits, opts.ranks?.get(info.name), opsetOf(model));
    newNodes.push(...pooled);
    // An unpooled float activation is an output under its own name: with several Identity nodes to
    // graph outputs, ORT's Identity elimination can leave a consumer reading a renamed tensor.
    const direct = pooled.length === 0 && cur === info.name && !g.input.some((v) => v.name === cur);
    if (pooled.length === 0 && !direct) newNodes.push(node('Identity', [cur], [out]));
    outputs.push({ name: direct ? cur : out });
    resolved.push({ tensor: info.name, requested: tap.name, pool: tap.pool, output: direct ? cur : out });
  });

  const graph: GraphProto = {
    name: `${g.name ?? 'graph'}_taps`,
    node: [...g.node, ...newNodes],
    initializer: [...g.initializer, ...inits],
    input: g.input,
    output: outputs,
    valueInfo: g.valueInfo,
  };
  if (opts.pixelInput) prependPixelInput(graph, opts.pixelInput);
  const pruned = prune(graph);
  return { model: { ...model, graph: pruned, functions: model.functions }, taps: resolved };
}

/** The model's default-domain opset version. */
function opsetOf(model: ModelProto): number {
  return Number(model.opsetImport.find((o) => !o.domain || o.domain === 'ai.onnx')?.version ?? 17);
}

/** A Reduce* node over `axes` without kept dims: axes as an attribute before opset 18, as an input from 18 on. */
function reduce(op: 'ReduceMean' | 'ReduceMax', src: string, dst: string, axes: number[], inits: TensorProto[], opset: number): NodeProto {
  if (opset < 18) return node(op, [src], [dst], { axes, keepdims: 0 });
  const name = `xfer_axes_${axes.join('_')}`;
  if (!inits.some((t) => t.name === name)) inits.push(int64Tensor(name, [axes.length], axes));
  return node(op, [src, name], [dst], { keepdims: 0 });
}

/** Pooling nodes from `src` into `out` (empty for 'none'). Rank-agnostic where ONNX allows. */
function poolNodes(src: string, out: string, pool: Pool, inits: TensorProto[], rank: number | undefined, opset: number): NodeProto[] {
  switch (pool) {
    case 'none':
      return [];
    case 'flatten':
      return [node('Flatten', [src], [out], { axis: 1 })];
    case 'avg':
    case 'max':
      return globalPool(pool, src, out, inits, rank, opset);
    case 'cls':
    case 'mean':
    case 'patch-mean':
    case 'cls+mean':
      return tokenPool(pool, src, out, inits, opset);
    case 'avgmax': {
      const a = globalPool('avg', src, `${out}/avg`, inits, rank, opset);
      const m = globalPool('max', src, `${out}/max`, inits, rank, opset);
      return [...a, ...m, node('Concat', [`${out}/avg`, `${out}/max`], [out], { axis: 1 })];
    }
  }
}

/** Token poolings of [N,T,C]: token 0 (Gather), mean of tokens 0.. or 1.. (Slice + ReduceMean over axis 1), or both concatenated. */
function tokenPool(pool: 'cls' | 'mean' | 'patch-mean' | 'cls+mean', src: string, out: string, inits: TensorProto[], opset: number): NodeProto[] {
  const constant = (name: string, values: number[], dims: number[]) => {
    if (!inits.some((t) => t.name === name)) inits.push(int64Tensor(name, dims, values));
    return name;
  };
  const cls = (dst: string) => node('Gather', [src, constant('xfer_token0', [0], [])], [dst], { axis: 1 });
  const mean = (from: string, dst: string) => reduce('ReduceMean', from, dst, [1], inits, opset);
  const patches = (dst: string) =>
    node('Slice', [src, constant('xfer_token_start', [1], [1]), constant('xfer_token_end', [Number.MAX_SAFE_INTEGER], [1]), constant('xfer_token_axis', [1], [1])], [dst]);
  switch (pool) {
    case 'cls':
      return [cls(out)];
    case 'mean':
      return [mean(src, out)];
    case 'patch-mean':
      return [patches(`${out}/patches`), mean(`${out}/patches`, out)];
    case 'cls+mean':
      return [cls(`${out}/cls`), patches(`${out}/patches`), mean(`${out}/patches`, `${out}/mean`), node('Concat', [`${out}/cls`, `${out}/mean`], [out], { axis: 1 })];
  }
}

/**
 * Global pooling over every axis after the channel axis, flattened to [N, C]. Rank-4 maps (the usual
 * NCHW conv output) use GlobalAveragePool/GlobalMaxPool, which onnxruntime runs in its blocked
 * NCHWc layout without a reorder; other ranks reshape to [N, C, -1] and reduce axis 2 (rank 2: identity).
 */
function globalPool(pool: 'avg' | 'max', src: string, out: string, inits: TensorProto[], rank: number | undefined, opset: number): NodeProto[] {
  if (rank === 4) {
    return [node(pool === 'avg' ? 'GlobalAveragePool' : 'GlobalMaxPool', [src], [`${out}/g`]), node('Flatten', [`${out}/g`], [out], { axis: 1 })];
  }
  const shapeName = `${out}/shape3`;
  if (!inits.some((t) => t.name === shapeName)) inits.push(int64Tensor(shapeName, [3], [0, 0, -1]));
  return [
    node('Reshape', [src, shapeName], [`${out}/flat`]),
    reduce(pool === 'avg' ? 'ReduceMean' : 'ReduceMax', `${out}/flat`, out, [2], inits, opset),
  ];
}

/**
 * Replace the model's image input with a uint8 NHWC pixel input plus normalisation nodes, each
 * element computed as float32 p*scale[c] + bias[c] (exactly what the JS path computes). For speed:
 * NCHW models transpose the 1-byte pixels before casting, per-channel constants broadcast over
 * contiguous H*W runs ([1,3,1,1]), equal channels use scalars, and identities are dropped.
 */
function prependPixelInput(graph: GraphProto, spec: PixelInputSpec): void {
  const orig = graph.input.find((i) => i.name === spec.inputName);
  if (!orig) throw new XferError(`model has no input named ${spec.inputName}`);
  const p = PIXEL_INPUT;
  const nchw = spec.layout === 'NCHW';
  const uniform = (v: readonly number[]) => Math.fround(v[0]) === Math.fround(v[1]) && Math.fround(v[0]) === Math.fround(v[2]);
  const constant = (name: string, v: readonly number[]) => {
    const one = uniform(v);
    const dims = one ? [] : nchw ? [1, 3, 1, 1] : [3];
    graph.initializer.push({ name, dims, dataType: DataType.FLOAT, rawData: new Uint8Array(Float32Array.from(one ? [v[0]] : v).buffer) });
  };
  const nodes: NodeProto[] = [];
  let cur: string = p;
  if (nchw) {
    nodes.push(node('Transpose', [cur], [`${p}/nchw`], { perm: [0, 3, 1, 2] }));
    cur = `${p}/nchw`;
  }
  nodes.push(node('Cast', [cur], [`${p}/f`], { to: DataType.FLOAT }));
  cur = `${p}/f`;
  if (!(uniform(spec.scale) && Math.fround(spec.scale[0]) === 1)) {
    constant(`${p}/scale`, spec.scale);
    nodes.push(node('Mul', [cur, `${p}/scale`], [`${p}/scaled`]));
    cur = `${p}/scaled`;
  }
  if (!(uniform(spec.bias) && spec.bias[0] === 0)) {
    constant(`${p}/bias`, spec.bias);
    nodes.push(node('Add', [cur, `${p}/bias`], [`${p}/norm`]));
    cur = `${p}/norm`;
  }
  if (spec.dtype === 'float16') nodes.push(node('Cast', [cur], [`${p}/half`], { to: DataType.FLOAT16 }));
  nodes[nodes.length - 1].output[0] = spec.inputName;
  graph.node = [...nodes, ...graph.node];
  graph.input = graph.input.filter((i) => i.name !== spec.inputName);
  graph.input.unshift({
    name: p,
    type: { tensorType: { elemType: DataType.UINT8, shape: { dim: [{ dimParam: 'N' }, { dimValue: spec.height }, { dimValue: spec.width }, { dimValue: 3 }] } } },
  });
}

/** Keep only nodes, initializers, inputs and value infos needed to compute the graph outputs. */
export function prune(graph: GraphProto): GraphProto {
  const producer = new Map<string, NodeProto>();
  for (const n of graph.node) for (const o of n.output) if (o) producer.set(o, n);
  const neededTensors = new Set<string>();
  const neededNodes = new Set<NodeProto>();
  const stack = graph.output.map((o) => o.name);
  while (stack.length > 0) {
    const t = stack.pop()!;
    if (neededTensors.has(t)) continue;
    neededTensors.add(t);
    const n = producer.get(t);
    if (n && !neededNodes.has(n)) {
      neededNodes.add(n);
      for (const i of n.input) if (i) stack.push(i);
      for (const i of subgraphInputs(n)) stack.push(i);
    }
  }
  const realIns = new Set(realInputs(graph).map((i) => i.name));
  return {
    ...graph,
    node: graph.node.filter((n) => neededNodes.has(n)),
    initializer: graph.initializer.filter((t) => neededTensors.has(t.name ?? '')),
    // Keep every real input that is needed; initializer-inputs only if still needed.
    input: graph.input.filter((i) => neededTensors.has(i.name) || (realIns.has(i.name) && i.name === PIXEL_INPUT)),
    valueInfo: graph.valueInfo.filter((v) => neededTensors.has(v.name)),
  };
}

/** Names a node's subgraphs (If/Loop/Scan bodies) read from the outer scope. */
function subgraphInputs(n: NodeProto): string[] {
  const out: string[] = [];
  for (const a of n.attribute ?? []) {
    for (const sg of [a.g, ...(a.graphs ?? [])]) {
      if (!sg) continue;
      const local = new Set<string>([...sg.input.map((i) => i.name), ...sg.initializer.map((t) => t.name ?? '')]);
      for (const sn of sg.node) for (const o of sn.output) local.add(o);
      for (const sn of sg.node) for (const i of sn.input) if (i && !local.has(i)) out.push(i);
    }
  }
  return out;
}

