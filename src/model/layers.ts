/**
 * `xfer layers`: every tappable tensor with its shape (declared, else measured by one dummy run),
 * and which of them the model card recommends.
 */
import type { ModelProto } from '../onnx/proto.js';
import type { ModelCard } from './card.js';
import { inferDtypes, listTensors, type Dim, type TensorInfo } from './graph.js';
import { probeTensors } from './probe.js';

export interface LayerRow extends TensorInfo {
  /** 'default' for the card's default tap, 'recommended' for its other recommended taps, else null. */
  mark: 'default' | 'recommended' | null;
  /** Where the shape came from. */
  shapeSource: 'declared' | 'probed' | 'unknown';
}

export interface LayerFilter {
  grep?: string;
  op?: string;
}

function complete(shape: Dim[] | null): boolean {
  return shape !== null && shape.slice(1).every((d) => typeof d === 'number');
}

/** List layers; shapes not declared by the model are measured with one batch-1 dummy run (`probe`). */
export async function describeLayers(model: ModelProto, card: ModelCard | null, opts: { probe?: boolean } = {}): Promise<LayerRow[]> {
  const tensors = listTensors(model);
  const dtypes = inferDtypes(model);
  const needProbe = (opts.probe ?? true) && tensors.some((t) => !complete(t.shape));
  const probed = needProbe ? await probeTensors(model) : null;
  const rec = new Set(card?.taps?.recommended ?? []);
  return tensors.map((t) => {
    const p = probed?.get(t.name);
    const declared = complete(t.shape);
    const shape: Dim[] | null = declared ? t.shape : p ? p.shape.map((d, i) => (i === 0 ? 'N' : d)) : t.shape;
    return {
      ...t,
      dtype: t.dtype ?? p?.dtype ?? dtypes.get(t.name) ?? null,
      shape,
      shapeSource: declared ? 'declared' : p ? 'probed' : 'unknown',
      mark: card?.taps?.default === t.name ? 'default' : rec.has(t.name) ? 'recommended' : null,
    };
  });
}

/** Apply --grep (substring or /regex/, case-insensitive, on tensor and node names) and --op filters. */
export function filterLayers(rows: LayerRow[], f: LayerFilter): LayerRow[] {
  let out = rows;
  if (f.grep) {
    const re = /^\/.*\/$/.test(f.grep) ? new RegExp(f.grep.slice(1, -1), 'i') : null;
    const needle = f.grep.toLowerCase();
    out = out.filter((r) => (re ? re.test(r.name) || re.test(r.node) : r.name.toLowerCase().includes(needle) || r.node.toLowerCase().includes(needle)));
  }
  if (f.op) {
    const ops = new Set(f.op.split(',').map((s) => s.trim().toLowerCase()));
    out = out.filter((r) => ops.has(r.op.toLowerCase()));
  }
  return out;
}

export function formatShape(shape: Dim[] | null): string {
  return shape === null ? '?' : `[${shape.map((d) => (d === null ? '?' : String(d))).join(', ')}]`;
}
