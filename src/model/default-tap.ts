/**
 * Default taps found from the graph, for models whose card names none: the last global pooling
 * before the classifier (CNNs), or the token tensor a transformer outputs (pooled to its CLS token).
 */
import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { readOnnxFile } from '../onnx/io.js';
import type { ModelProto, NodeProto } from '../onnx/proto.js';
import { writeFileAtomic } from '../util/atomic.js';
import { cacheRoot } from '../util/cache.js';
import type { ModelCard } from './card.js';
import { listTensors, topoSort } from './graph.js';
import type { Pool } from './taps.js';

export interface FoundTap {
  tensor: string;
  pool: Pool;
  /** How it was found, for `xfer layers` and docs. */
  why: string;
}

function intsAttr(n: NodeProto, name: string): number[] | undefined {
  const a = n.attribute?.find((x) => x.name === name);
  return a?.ints?.map(Number);
}

function initInts(model: ModelProto, name: string | undefined): number[] | undefined {
  if (!name) return undefined;
  const t = model.graph.initializer.find((x) => x.name === name);
  if (!t) return undefined;
  if (t.int64Data && t.int64Data.length > 0) return t.int64Data.map(Number);
  if (t.rawData && t.rawData.length % 8 === 0) {
    const raw = t.rawData;
    return Array.from(new BigInt64Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength)), Number);
  }
  return undefined;
}

/** Whether a node pools a 4-D feature map over its spatial axes (not, say, a LayerNorm's ReduceMean over channels). */
function isGlobalPool(model: ModelProto, n: NodeProto, rankOf: (t: string) => number | null): boolean {
  if (n.opType === 'GlobalAveragePool' || n.opType === 'GlobalMaxPool') return true;
  if (n.opType === 'ReduceMean') {
    const axes = intsAttr(n, 'axes') ?? initInts(model, n.input[1]);
    if (!axes) return false;
    const rank = rankOf(n.input[0]) ?? 4;
    const norm = axes.map((a) => (a < 0 ? a + rank : a)).sort();
    return rank === 4 && (norm.join() === '2,3' || norm.join() === '1,2');
  }
  if (n.opType === 'AveragePool') {
    // A pooling whose kernel is the whole map (MXNet/TF-slim exports): output 1x1 where declared.
    const k = intsAttr(n, 'kernel_shape') ?? [];
    return k.length === 2 && k[0] >= 7 && k[1] >= 7;
  }
  return false;
}

/** Find the default tap of a model (null when neither rule applies). */
export function findDefaultTap(model: ModelProto): FoundTap | null {
  const tensors = listTensors(model);
  const shapes = new Map<string, number>();
  for (const t of tensors) if (t.shape) shapes.set(t.name, t.shape.length);
  for (const v of [...model.graph.input, ...model.graph.output, ...model.graph.valueInfo]) {
    const d = v.type?.tensorType?.shape?.dim;
    if (d) shapes.set(v.name, d.length);
  }
  const rankOf = (t: string) => shapes.get(t) ?? null;
  const nodes = topoSort(model.graph);
  const pools = nodes.filter((n) => isGlobalPool(model, n, rankOf));
  if (pools.length > 0) {
    const last = pools[pools.length - 1];
    // 'flatten' turns [N,C,1,1], [N,1,1,C] and [N,C] alike into [N,C].
    return { tensor: last.output[0], pool: 'flatten', why: `output of the last global pooling (${last.opType} ${last.name || last.output[0]})` };
  }
  const tokens = model.graph.output.find((o) => rankOf(o.name) === 3);
  if (tokens) return { tensor: tokens.name, pool: 'cls', why: `rank-3 token output ${tokens.name} (CLS token)` };
  // A classifier on a pooled vector without a pooling node (e.g. ViT heads reading token 0): its input.
  const out = model.graph.output[0]?.name;
  const producer = new Map<string, NodeProto>();
  for (const n of nodes) for (const o of n.output) producer.set(o, n);
  let cur = out ? producer.get(out) : undefined;
  const passThrough = new Set(['Softmax', 'Flatten', 'Reshape', 'Squeeze', 'Identity', 'Add', 'Cast']);
  for (let i = 0; cur && i < 8; i++) {
    if (cur.opType === 'Gemm' || cur.opType === 'MatMul') return { tensor: cur.input[0], pool: 'avg', why: `input of the classifier (${cur.opType} ${cur.name || cur.output[0]})` };
    if (!passThrough.has(cur.opType)) break;
    cur = producer.get(cur.input[0]);
  }
  return null;
}

/** findDefaultTap for a model file, remembered in the cache by the file's sha256 (a large graph parses once). */
export async function cachedDefaultTap(file: string, sha256: string): Promise<FoundTap | null> {
  const memo = path.join(cacheRoot(), 'default-taps', `${sha256}.json`);
  try {
    return (JSON.parse(await readFile(memo, 'utf8')) as { tap: FoundTap | null }).tap;
  } catch {
    // absent or unreadable: find it again
  }
  const { model } = await readOnnxFile(file);
  const tap = findDefaultTap(model);
  await mkdir(path.dirname(memo), { recursive: true });
  await writeFileAtomic(memo, JSON.stringify({ file, tap }), { fsync: false });
  return tap;
}

/** The card with default taps from the graph when it names none (unchanged when it has taps, or no tap is found). */
export async function withDefaultTaps(card: ModelCard, file: string, sha256: string): Promise<ModelCard> {
  if (card.taps) return card;
  const tap = await cachedDefaultTap(file, sha256);
  return tap ? { ...card, taps: { recommended: [], default: tap.tensor, pool: tap.pool } } : card;
}
