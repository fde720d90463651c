/**
 * `--from input`: examples are images, decoded through the same path as extraction (sharp, the card's
 * resize policy) every time they are used, augmented on the fly (training only), and written as the
 * backbone's input tensor (the card's normalisation and layout, writeModelTensor). Nothing but the
 * batch in flight is held.
 * Augmentations: src/image/augment.ts (`--augment`, default hflip,crop).
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
import { augmentPixels, parseAugment, type Augment } from '../image/augment.js';
import type { Example, ExampleSource } from './data.js';
import { splitExamples, type FinetuneData, type FinetuneOptions } from './fit.js';

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
