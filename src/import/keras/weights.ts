/**
 * tfjs weights manifests: reads the concatenated shard bytes of each group and turns every entry
 * into float32 values, undoing tfjs weight quantization:
 *   uint8 / uint16: value = min + scale * q     float16: IEEE half → float
 */
import { XferError } from '../../errors.js';
import { fromHalfBits } from '../../util/float16.js';

export interface WeightQuantization {
  dtype: 'uint8' | 'uint16' | 'float16';
  min?: number;
  scale?: number;
  original_dtype?: string;
}

export interface WeightSpec {
  name: string;
  shape: number[];
  dtype: string;
  quantization?: WeightQuantization;
}

export interface WeightGroup {
  paths: string[];
  weights: WeightSpec[];
}

export interface WeightTensor {
  shape: number[];
  data: Float32Array;
}

const PLAIN_BYTES: Record<string, number> = { float32: 4, int32: 4, bool: 1, float16: 2 };
const QUANT_BYTES: Record<string, number> = { uint8: 1, uint16: 2, float16: 2 };

function numel(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Bytes one manifest entry occupies in the shard data. */
export function weightByteLength(spec: WeightSpec): number {
  const n = numel(spec.shape);
  if (spec.quantization) {
    const b = QUANT_BYTES[spec.quantization.dtype];
    if (!b) throw new XferError(`weight ${spec.name}: unsupported quantization dtype ${JSON.stringify(spec.quantization.dtype)}`, { hint: 'supported: uint8, uint16, float16' });
    return n * b;
  }
  const b = PLAIN_BYTES[spec.dtype];
  if (!b) throw new XferError(`weight ${spec.name}: unsupported dtype ${JSON.stringify(spec.dtype)}`, { hint: 'supported: float32, float16, int32, bool' });
  return n * b;
}

/** Decode one entry's bytes (exactly `weightByteLength(spec)` of them) into float32 values. */
export function decodeWeight(spec: WeightSpec, bytes: Uint8Array): Float32Array {
  const n = numel(spec.shape);
  // Copy to an aligned buffer so typed views are legal whatever the offset.
  const buf = bytes.slice().buffer;
  const q = spec.quantization;
  if (q) {
    if (q.dtype === 'float16') {
      const h = new Uint16Array(buf, 0, n);
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = fromHalfBits(h[i]);
      return out;
    }
    if (typeof q.min !== 'number' || typeof q.scale !== 'number') {
      throw new XferError(`weight ${spec.name}: ${q.dtype} quantization without numeric min and scale`, { hint: 'the weights manifest is damaged' });
    }
    const src = q.dtype === 'uint8' ? new Uint8Array(buf, 0, n) : new Uint16Array(buf, 0, n);
    const out = new Float32Array(n);
    const { min, scale } = q;
    // Same arithmetic as tfjs (double precision, then stored as float32).
    for (let i = 0; i < n; i++) out[i] = src[i] * scale + min;
    return out;
  }
  switch (spec.dtype) {
    case 'float32':
      return new Float32Array(buf, 0, n);
    case 'float16': {
      const h = new Uint16Array(buf, 0, n);
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = fromHalfBits(h[i]);
      return out;
    }
    case 'int32':
      return Float32Array.from(new Int32Array(buf, 0, n));
    case 'bool':
      return Float32Array.from(new Uint8Array(buf, 0, n));
    default:
      throw new XferError(`weight ${spec.name}: unsupported dtype ${spec.dtype}`);
  }
}

/** Validate the manifest shape (it comes from a file). */
export function checkManifest(manifest: unknown, file: string): WeightGroup[] {
  const badManifest = (what: string): never => {
    throw new XferError(`${file}: invalid weightsManifest: ${what}`, { hint: 'expected [{paths:[...], weights:[{name, shape, dtype}]}]' });
  };
  if (!Array.isArray(manifest)) return badManifest('not a list');
  for (const g of manifest as unknown[]) {
    const group = g as Partial<WeightGroup>;
    if (!group || !Array.isArray(group.paths) || !Array.isArray(group.weights)) badManifest('group without paths/weights');
    for (const w of group.weights as unknown[]) {
      const spec = w as Partial<WeightSpec>;
      if (!spec || typeof spec.name !== 'string' || !Array.isArray(spec.shape) || !spec.shape.every((d) => Number.isInteger(d) && d >= 0)) {
        badManifest(`entry ${JSON.stringify((spec as { name?: unknown })?.name)} lacks a name or integer shape`);
      }
      if (typeof spec.dtype !== 'string') badManifest(`entry ${spec.name} lacks a dtype`);
    }
  }
  return manifest as WeightGroup[];
}

/**
 * Decode every weight of a manifest. `readPath` returns the bytes of one shard path (as listed
 * in `paths`); each group's shards are concatenated and read in entry order.
 * Names lose a trailing ":0" (TF variable suffix).
 */
export async function decodeWeights(manifest: WeightGroup[], readPath: (p: string) => Uint8Array | Promise<Uint8Array>): Promise<Map<string, WeightTensor>> {
  const out = new Map<string, WeightTensor>();
  for (const group of manifest) {
    const parts: Uint8Array[] = [];
    for (const p of group.paths) parts.push(await readPath(p));
    const total = parts.reduce((a, b) => a + b.length, 0);
    const data = new Uint8Array(total);
    let off = 0;
    for (const p of parts) {
      data.set(p, off);
      off += p.length;
    }
    let pos = 0;
    for (const spec of group.weights) {
      const len = weightByteLength(spec);
      if (pos + len > data.length) {
        throw new XferError(`weights for ${spec.name} run past the end of shards ${group.paths.join(', ')} (${data.length} bytes)`, {
          hint: 'a weight shard is truncated or missing; reinstall the model files',
        });
      }
      out.set(spec.name.replace(/:0$/, ''), { shape: spec.shape.slice(), data: decodeWeight(spec, data.subarray(pos, pos + len)) });
      pos += len;
    }
    if (pos !== data.length) {
      throw new XferError(`weight shards ${group.paths.join(', ')} hold ${data.length} bytes but the manifest describes ${pos}`, {
        hint: 'the shards do not belong to this model.json',
      });
    }
  }
  return out;
}
