/**
 * `--from input`: examples are images, decoded through the same path as extraction (sharp, the card's
 * resize policy) every time they are used, augmented on the fly (training only), and written as the
 * backbone's input tensor (the card's normalisation and layout, writeModelTensor). Nothing but the
 * batch in flight is held.
 *
 * Augmentations (`--augment`, comma list), applied to the decoded H×W×3 uint8 image:
 *   hflip  mirror left-right with probability 1/2
 *   crop   a random crop of 60–100 % of the area, aspect 3/4–4/3, resized back to H×W (bilinear)
 *   color  brightness and contrast each scaled by a factor in [0.8, 1.2]
 */
import os from 'node:os';
import path from 'node:path';
import pLimit from 'p-limit';
import { XferError } from '../errors.js';
import { readOnnxFile } from '../onnx/io.js';
import { requireCard, resolveBackbone } from '../model/registry.js';
import { discoverDataset } from '../image/discover.js';
import { loadImagePixels, writeModelTensor } from '../image/decode.js';
import { describePlan, resolvePreprocess, type PreprocessPlan } from '../image/plan.js';
import { layerDirName } from '../features/writer.js';
import { Rng } from '../heads/rng.js';
import type { Example, ExampleSource } from './data.js';
import { splitExamples, type FinetuneData, type FinetuneOptions } from './fit.js';

export const AUGMENTS = ['hflip', 'crop', 'color'] as const;
export type Augment = (typeof AUGMENTS)[number];

export function parseAugment(spec: string | undefined, flag = '--augment'): Augment[] {
  if (spec === undefined) return ['hflip', 'crop'];
  if (spec === 'none' || spec === '') return [];
  const list = spec.split(',').map((s) => s.trim()).filter(Boolean);
  for (const a of list) if (!(AUGMENTS as readonly string[]).includes(a)) throw new XferError(`${flag}: unknown augmentation '${a}'`, { hint: `use a comma list of ${AUGMENTS.join(', ')}, or none` });
  return [...new Set(list)] as Augment[];
}

/** Augment an H×W×3 uint8 image in place (see the file comment); `rng` draws every choice. */
export function augmentPixels(px: Uint8Array, w: number, h: number, aug: readonly Augment[], rng: Rng): void {
  if (aug.includes('crop')) {
    const area = w * h * (0.6 + 0.4 * rng.next());
    const ratio = Math.exp(Math.log(3 / 4) + rng.next() * Math.log(16 / 9));
    const cw = Math.min(w, Math.max(1, Math.round(Math.sqrt(area * ratio))));
    const ch = Math.min(h, Math.max(1, Math.round(Math.sqrt(area / ratio))));
    const x0 = rng.int(w - cw + 1);
    const y0 = rng.int(h - ch + 1);
    const src = px.slice();
    for (let y = 0; y < h; y++) {
      const sy = Math.min(ch - 1, Math.max(0, ((y + 0.5) * ch) / h - 0.5));
      const ya = Math.floor(sy);
      const yb = Math.min(ch - 1, ya + 1);
      const fy = sy - ya;
      for (let x = 0; x < w; x++) {
        const sx = Math.min(cw - 1, Math.max(0, ((x + 0.5) * cw) / w - 0.5));
        const xa = Math.floor(sx);
        const xb = Math.min(cw - 1, xa + 1);
        const fx = sx - xa;
        for (let c = 0; c < 3; c++) {
          const p = (yy: number, xx: number): number => src[((y0 + yy) * w + (x0 + xx)) * 3 + c];
          const v = (1 - fy) * ((1 - fx) * p(ya, xa) + fx * p(ya, xb)) + fy * ((1 - fx) * p(yb, xa) + fx * p(yb, xb));
          px[(y * w + x) * 3 + c] = Math.round(v);
        }
      }
    }
  }
  if (aug.includes('hflip') && rng.next() < 0.5) {
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w >> 1; x++) {
        const a = (y * w + x) * 3;
        const b = (y * w + (w - 1 - x)) * 3;
        for (let c = 0; c < 3; c++) {
          const t = px[a + c];
          px[a + c] = px[b + c];
          px[b + c] = t;
        }
      }
    }
  }
  if (aug.includes('color')) {
    const bright = 0.8 + 0.4 * rng.next();
    const contrast = 0.8 + 0.4 * rng.next();
    let mean = 0;
    for (let i = 0; i < px.length; i++) mean += px[i];
    mean /= px.length;
    for (let i = 0; i < px.length; i++) px[i] = Math.min(255, Math.max(0, Math.round(((px[i] - mean) * contrast + mean) * bright)));
  }
}

/** Decoded (and, when training, augmented) images as the backbone's input tensor. */
export class ImageSource implements ExampleSource {
  readonly rowShape: number[];
  readonly rowSize: number;
  private readonly limit = pLimit(os.availableParallelism() + 1);

  constructor(
    private readonly files: string[],
    private readonly plan: PreprocessPlan,
    private readonly aug: readonly Augment[],
  ) {
    const [h, w] = plan.size;
    this.rowShape = plan.layout === 'NCHW' ? [3, h, w] : [h, w, 3];
    this.rowSize = h * w * 3;
    if (plan.dtype !== 'float32') throw new XferError(`--from input: the backbone takes ${plan.dtype} input; fine-tuning needs a float32 model`, { hint: 'use a float32 export of the backbone' });
  }

  async fill(items: readonly Example[], out: Float32Array, augment: { rng: Rng } | null): Promise<void> {
    // draws are made in item order before any decode finishes, so a seed gives the same batch
    const seeds = items.map(() => (augment ? augment.rng.int(2 ** 31) : 0));
    await Promise.all(
      items.map((it, i) =>
        this.limit(async () => {
          const px = await loadImagePixels(this.files[it.id], this.plan);
          if (augment && this.aug.length) augmentPixels(px.data, px.width, px.height, this.aug, new Rng(seeds[i]));
          writeModelTensor(px, this.plan, out, i * this.rowSize);
        }),
      ),
    );
  }

  async close(): Promise<void> {}
}

/** The image dataset of `--data`, the backbone (`--model`, default the built-in default) and its input tensor. */
export async function openImageData(o: FinetuneOptions, seed: number): Promise<FinetuneData> {
  const spec = o.model ?? 'mobilenet_v2';
  const b = await resolveBackbone(spec, { card: o.card });
  const card = requireCard(b, 'fine-tuning from the input');
  const plan = resolvePreprocess(card);
  const loaded = await readOnnxFile(b.file);
  const inits = new Set(loaded.model.graph.initializer.map((t) => t.name));
  const inputs = loaded.model.graph.input.filter((i) => !inits.has(i.name));
  if (inputs.length !== 1) throw new XferError(`${b.file}: fine-tuning from the input needs a model with one input, it has ${inputs.length}`, { hint: 'fine-tune from a tap instead (--from <tensor>)' });
  const inputName = inputs[0].name;
  const ds = await discoverDataset(o.data!);
  const labelled = ds.entries.filter((e) => e.labelIndex !== null);
  if (labelled.length === 0) throw new XferError(`--data ${o.data}: no labelled images`, { hint: 'use an ImageFolder tree (<class>/<image> or <split>/<class>/<image>) or a list file with labels' });
  const files = labelled.map((e) => e.abs);
  const ex = (i: number): Example => ({ id: i, shard: 0, shardRow: i, y: -1, label: labelled[i].labelIndex as number });
  const idx = labelled.map((_, i) => i);
  const parts = {
    train: idx.filter((i) => labelled[i].split !== 'val' && labelled[i].split !== 'test').map(ex),
    val: idx.filter((i) => labelled[i].split === 'val').map(ex),
    test: idx.filter((i) => labelled[i].split === 'test').map(ex),
  };
  const split = splitExamples(parts, ds.labels, o.val, seed, `--data ${o.data}`, o.maxTrain);
  const source = new ImageSource(files, plan, parseAugment(o.augment));
  return {
    ...split,
    source,
    labels: ds.labels,
    from: inputName,
    backbone: { id: b.id, sha256: b.sha256, model: loaded.model },
    headSource: {
      model: { id: b.id, sha256: b.sha256 },
      layers: [{ name: inputName, dir: layerDirName(inputName), pool: 'none', shape: source.rowShape }],
      width: source.rowSize,
      features: path.resolve(ds.root),
      preprocessing: describePlan(plan),
    },
    origin: path.resolve(ds.root),
  };
}
