/**
 * Where fine-tuning's examples come from, one batch at a time, never the whole set in memory:
 * - `FeatureRowSource`: rows of one `--pool none` layer of a feature folder, read with positional
 *   reads straight from the shard .npy files (float32 or float16 on disk, float32 out);
 * - `ImageSource` (images.ts): decoded, augmented images for `--from input`.
 * `epochOrder` is a uniform shuffle of row indices (rows are read when their batch comes).
 */
import { open, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { XferError } from '../errors.js';
import { parseNpyHeader, type NpyDtype } from '../features/npy.js';
import { shardFileName, type FeatureLayer } from '../features/writer.js';
import type { FeatureFolder } from '../features/reader.js';
import { Rng } from '../heads/rng.js';
import { fromHalfBits } from '../util/float16.js';

/** One example: where it is (source-specific), its head class, and its shard (for locality). */
export interface Example {
  /** Row of index.jsonl (features) or entry number (images). */
  id: number;
  shard: number;
  shardRow: number;
  /** Head class index 0..K-1, or -1 for a label the head never trains on (val/test only). */
  y: number;
  /** The folder's label index (for metrics). */
  label: number;
  /** Augmented view number (`xfer extract --views`) and the image it is a view of (its first row). */
  view?: number;
  group?: number;
}

/** One view of every image per epoch (drawn from (seed, epoch)); rows that are not views stay. */
export function oneViewPerImage(items: readonly Example[], seed: number, epoch: number): Example[] {
  if (!items.some((e) => e.group !== undefined)) return [...items];
  const rng = new Rng((seed * 31 + epoch * 1_000_033 + 5) >>> 0);
  const groups = new Map<number, Example[]>();
  const out: Example[] = [];
  for (const e of items) {
    if (e.group === undefined) out.push(e);
    else {
      let g = groups.get(e.group);
      if (!g) groups.set(e.group, (g = []));
      g.push(e);
    }
  }
  for (const g of groups.values()) out.push(g[rng.int(g.length)]);
  return out;
}

/** Images among `items` (views of one image count once). */
export function imageCount(items: readonly Example[]): number {
  return items.filter((e) => e.group === undefined || e.view === 0).length;
}

/** Fills `out` (n × rowSize float32) with the examples' inputs; `augment` picks a random view (training only). */
export interface ExampleSource {
  /** Per-example input shape (without the batch axis). */
  readonly rowShape: number[];
  readonly rowSize: number;
  fill(items: readonly Example[], out: Float32Array, augment: { rng: Rng } | null): Promise<void>;
  close(): Promise<void>;
}

/**
 * A permutation of `items` for one epoch, from (seed, epoch) alone so a resumed run repeats it.
 * Uniform over all rows, as PyTorch's RandomSampler: extraction writes images in folder order, so a
 * shard often holds a single class, and shuffling only within a few shards at a time fed the
 * classifier a few classes at a stretch (Fashion-MNIST 20k ended its first epoch at chance).
 */
export function epochOrder(items: readonly Example[], seed: number, epoch: number): Example[] {
  const rng = new Rng((seed * 1_000_003 + epoch * 7919 + 1) >>> 0);
  return Array.from(rng.shuffle(Int32Array.from(items.keys())), (i) => items[i]);
}

/** The right extraction for fine-tuning from `from` (used in error messages). */
export function extractCommand(f: FeatureFolder, from: string): string {
  const root = f.meta.data?.root ?? '<images>';
  return `xfer extract --model ${f.meta.model.id} --layers ${from} --pool none --data ${root} --out <features>`;
}

/**
 * The folder's layer that fine-tuning from `from` reads: it must be that tensor, unpooled. Anything
 * else is refused with the extraction command that gives it.
 */
export function pickFromLayer(f: FeatureFolder, from: string): FeatureLayer {
  const l = f.meta.layers.find((x) => x.name === from || x.dir === from);
  const hint = `extract it with \`${extractCommand(f, from)}\``;
  if (!l) {
    throw new XferError(`--from ${from}: ${f.dir} holds activations of ${f.meta.layers.map((x) => `${x.name} (pool ${x.pool})`).join(', ')}, not of ${from}`, { hint });
  }
  if (l.pool !== 'none') {
    throw new XferError(`--from ${from}: ${f.dir} holds ${l.name} pooled (--pool ${l.pool}, shape [${l.shape}]); fine-tuning needs the unpooled activations`, { hint });
  }
  return l;
}

interface ShardFile {
  fh: FileHandle;
  dtype: NpyDtype;
  rows: number;
  dataOffset: number;
}

/** Rows of one layer of a feature folder, read on demand (at most `maxOpen` shard files open). */
export class FeatureRowSource implements ExampleSource {
  readonly rowShape: number[];
  readonly rowSize: number;
  private readonly files = new Map<number, Promise<ShardFile>>();
  private readonly order: number[] = [];

  constructor(
    private readonly f: FeatureFolder,
    private readonly layer: FeatureLayer,
    private readonly maxOpen = 8,
  ) {
    this.rowShape = [...layer.shape];
    this.rowSize = layer.shape.reduce((a, b) => a * b, 1);
  }

  private file(shard: number): Promise<ShardFile> {
    let p = this.files.get(shard);
    if (p) return p;
    p = this.openShard(shard);
    this.files.set(shard, p);
    this.order.push(shard);
    while (this.order.length > this.maxOpen) {
      const old = this.order.shift()!;
      const q = this.files.get(old);
      this.files.delete(old);
      void q?.then((s) => s.fh.close()).catch(() => {});
    }
    return p;
  }

  private async openShard(shard: number): Promise<ShardFile> {
    const file = path.join(this.f.dir, this.layer.dir, shardFileName(shard));
    const fh = await open(file, 'r').catch((e: NodeJS.ErrnoException) => {
      throw new XferError(`${file}: cannot open (${e.code ?? e.message})`, { hint: 'the feature folder is incomplete; run `xfer extract ... --resume`', cause: e });
    });
    const head = Buffer.alloc(4096);
    const { bytesRead } = await fh.read(head, 0, head.length, 0);
    const h = parseNpyHeader(head.subarray(0, bytesRead), file);
    if (h.dtype !== 'float32' && h.dtype !== 'float16') {
      await fh.close();
      throw new XferError(`${file}: dtype ${h.dtype} is not a feature dtype`, { hint: 'features must be float32 or float16' });
    }
    const w = h.shape.slice(1).reduce((a, b) => a * b, 1);
    if (w !== this.rowSize) {
      await fh.close();
      throw new XferError(`${file}: rows have ${w} values but meta.json says layer ${this.layer.name} has shape [${this.layer.shape}]`, { hint: 're-run the extraction' });
    }
    return { fh, dtype: h.dtype, rows: h.shape[0], dataOffset: h.dataOffset };
  }

  async fill(items: readonly Example[], out: Float32Array): Promise<void> {
    const w = this.rowSize;
    // one read per row, issued together: the kernel's read-ahead and page cache do the rest
    await Promise.all(
      items.map(async (it, i) => {
        const s = await this.file(it.shard);
        if (it.shardRow >= s.rows) throw new XferError(`${path.join(this.f.dir, this.layer.dir, shardFileName(it.shard))}: index.jsonl needs row ${it.shardRow} but the shard has ${s.rows}`, { hint: 'the folder is incomplete; run `xfer extract --resume`' });
        const bpe = s.dtype === 'float32' ? 4 : 2;
        const buf = Buffer.alloc(w * bpe); // not from the shared pool: its own aligned ArrayBuffer
        let got = 0;
        while (got < buf.length) {
          const { bytesRead } = await s.fh.read(buf, got, buf.length - got, s.dataOffset + it.shardRow * w * bpe + got);
          if (bytesRead === 0) throw new XferError(`${shardFileName(it.shard)} of ${this.layer.dir}: truncated`, { hint: 're-run the extraction with --resume' });
          got += bytesRead;
        }
        const o = i * w;
        if (bpe === 4) {
          const src = new Float32Array(buf.buffer, buf.byteOffset, w);
          out.set(src, o);
        } else {
          const src = new Uint16Array(buf.buffer, buf.byteOffset, w);
          for (let j = 0; j < w; j++) out[o + j] = fromHalfBits(src[j]);
        }
        for (let j = 0; j < w; j++) {
          if (!Number.isFinite(out[o + j])) {
            throw new XferError(`${this.f.dir}: feature row ${it.id} (${this.f.index[it.id]?.path ?? '?'}) contains NaN or Inf`, { hint: 'remove the image from the dataset or re-extract' });
          }
        }
      }),
    );
  }

  async close(): Promise<void> {
    const all = [...this.files.values()];
    this.files.clear();
    this.order.length = 0;
    await Promise.all(all.map((p) => p.then((s) => s.fh.close()).catch(() => {})));
  }
}
