/**
 * "Pretrained model as classifier": run a backbone's own head on images and report the top-k labels
 * of its card's labels file with probabilities.
 *
 * Labels: a text file with one label per line (or a .json array). The model's output index i is
 * labelled by line (i - label_offset + labels_skip); label_offset (card) = index of the first real
 * class in the output (1 for 1001-output TF models), labels_skip (card) = leading lines of the file
 * that are not classes (1 for a 1001-line "background"-first file used with a 1000-output model).
 * Without labels_skip, the 1000/1001 cases are detected from the counts; any other mismatch between
 * the file and the output size is an error naming both numbers.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import pLimit from 'p-limit';
import { XferError } from '../errors.js';
import type { ModelCard } from '../model/card.js';
import type { DeviceOptions } from '../model/session.js';
import { resolveBackbone, requireCard, type ResolvedBackbone } from '../model/registry.js';
import type { CardFlags } from '../model/card-flags.js';
import { MODEL_OUTPUT_TAP } from '../model/taps.js';
import { sha256File } from '../util/hash.js';
import { loadImagePixels, loadPixelsOrSkip } from '../image/decode.js';
import { resolvePreprocess, type PreprocessOverrides, type PreprocessPlan } from '../image/plan.js';
import { openBackbone } from '../runtime/open.js';
import { defaultBatch, defaultDecodeConcurrency } from '../runtime/plan.js';
import { WORKER_DEPTH, type Backbone } from '../runtime/pool.js';
import { runStream } from '../runtime/stream.js';

export interface Prediction {
  /** Index in the model's output. */
  index: number;
  label: string;
  prob: number;
}

export interface ClassifyResult {
  path: string;
  top: Prediction[];
}

export interface ClassifyError {
  path: string;
  error: string;
}

export interface ClassifierOptions extends DeviceOptions {
  /** Labels file overriding the card's `labels`. */
  labels?: string;
  /** How many predictions per image (default 5). */
  top?: number;
  /** Images per backbone run (default as for extraction: runtime/plan.ts defaultBatch). */
  batch?: number;
  /** Images decoded concurrently (default as for extraction). */
  decodeConcurrency?: number;
  preprocess?: PreprocessOverrides;
  onNotice?: (msg: string) => void;
}

/** Read a labels file: one label per line (trailing blank lines and \r dropped), or a JSON array of strings. */
export async function readLabelsFile(file: string): Promise<string[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new XferError(`${file}: cannot read labels file (${(e as NodeJS.ErrnoException).code})`, { hint: 'pass --labels <file> with one class name per line' });
  }
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  if (/\.json$/i.test(file)) {
    let arr: unknown;
    try {
      arr = JSON.parse(text);
    } catch (e) {
      throw new XferError(`${file}: labels file is not valid JSON (${(e as Error).message})`);
    }
    if (!Array.isArray(arr) || !arr.every((x) => typeof x === 'string')) throw new XferError(`${file}: a JSON labels file must be an array of strings`);
    return arr as string[];
  }
  const lines = text.split('\n').map((l) => l.replace(/\r$/, ''));
  while (lines.length > 0 && lines[lines.length - 1].trim() === '') lines.pop();
  if (lines.length === 0) throw new XferError(`${file}: labels file is empty`);
  return lines;
}

/**
 * Label for every output index. `skip` undefined = auto (1000/1001 detection).
 * Throws XferError when the file and the output size do not fit together.
 */
export function mapLabels(lines: string[], outputSize: number, opts: { label_offset?: number; labels_skip?: number; file?: string } = {}): string[] {
  const file = opts.file ?? 'labels';
  let offset = opts.label_offset ?? 0;
  let skip = opts.labels_skip;
  for (const [k, v] of [['label_offset', offset], ['labels_skip', skip]] as const) {
    if (v !== undefined && !(Number.isInteger(v) && v >= 0)) throw new XferError(`model card: "${k}" must be a non-negative integer (got ${String(v)})`);
  }
  const L = lines.length;
  if (skip === undefined) {
    if (L + offset === outputSize) skip = 0;
    else if (L + offset === outputSize + 1) skip = 1; // e.g. 1001-line TF labels ("background" first), 1000-class model
    else if (opts.label_offset === undefined && L === outputSize - 1) {
      skip = 0;
      offset = 1; // 1000-line labels, 1001-output TF model: output 0 is background
    } else skip = -1;
  }
  if (skip < 0 || L - skip + offset !== outputSize) {
    throw new XferError(`${file}: labels file has ${L} labels${skip > 0 ? ` (${skip} skipped)` : ''} but the model outputs ${outputSize} classes${offset ? ` (label_offset ${offset})` : ''}`, {
      hint: 'pass the labels file that belongs to this model (--labels), or set "label_offset" / "labels_skip" in the model card',
    });
  }
  const out: string[] = new Array<string>(outputSize);
  for (let i = 0; i < outputSize; i++) out[i] = i < offset ? (offset === 1 ? 'background' : `class_${i}`) : lines[i - offset + skip];
  return out;
}

export function softmax(x: Float32Array): Float32Array {
  let m = -Infinity;
  for (const v of x) if (v > m) m = v;
  const out = new Float32Array(x.length);
  let s = 0;
  for (let i = 0; i < x.length; i++) {
    out[i] = Math.exp(x[i] - m);
    s += out[i];
  }
  for (let i = 0; i < x.length; i++) out[i] /= s;
  return out;
}

/** Whether a vector already looks like a probability distribution. */
export function looksLikeProbabilities(x: Float32Array): boolean {
  let s = 0;
  for (const v of x) {
    if (!(v >= 0 && v <= 1)) return false;
    s += v;
  }
  return Math.abs(s - 1) < 1e-2;
}

/** Indices of the k largest values, largest first (ties: lower index first). */
export function topK(p: Float32Array, k: number): { index: number; prob: number }[] {
  const idx: number[] = [];
  for (let i = 0; i < p.length; i++) {
    if (idx.length < k) {
      idx.push(i);
      idx.sort((a, b) => p[b] - p[a] || a - b);
    } else if (p[i] > p[idx[k - 1]]) {
      idx[k - 1] = i;
      idx.sort((a, b) => p[b] - p[a] || a - b);
    }
  }
  return idx.map((i) => ({ index: i, prob: p[i] }));
}

/**
 * A loaded classifier: the model's first output tapped as is (runtime/: worker sessions, pixels in,
 * the model's own preprocessing in its graph) + card + plan + labels.
 */
export class Classifier {
  private labelNames: string[] | null = null;

  private constructor(
    private readonly backbone: Backbone,
    private readonly workers: number,
    private readonly threads: number,
    readonly card: ModelCard,
    readonly plan: PreprocessPlan,
    private readonly labelLines: string[],
    private readonly labelsFile: string,
    private readonly labelsFromCard: boolean,
    readonly opts: ClassifierOptions,
  ) {}

  /** Open a model file with its card. */
  static async open(file: string, card: ModelCard, opts: ClassifierOptions = {}): Promise<Classifier> {
    return Classifier.openResolved(file, { id: card.id, file, sha256: await sha256File(file), card }, opts);
  }

  /** Resolve a model spec (built-in id or path) + optional card file via the registry, and open it. */
  static async fromSpec(spec: string, opts: ClassifierOptions & { card?: string; cardFlags?: CardFlags } = {}): Promise<Classifier> {
    const b = await resolveBackbone(spec, { card: opts.card, cardFlags: opts.cardFlags, onNotice: opts.onNotice });
    requireCard(b, 'xfer classify');
    return Classifier.openResolved(spec, b, opts);
  }

  private static async openResolved(spec: string, resolved: ResolvedBackbone, opts: ClassifierOptions): Promise<Classifier> {
    const card = requireCard(resolved, 'xfer classify');
    const labelsFile = opts.labels ?? (card.labels ? path.resolve(card.dir ?? '.', card.labels) : undefined);
    if (!labelsFile) {
      throw new XferError(`model card "${card.id}" has no labels: xfer classify needs the class names of the model's output`, {
        hint: 'pass --labels <file> (one label per line), or add "labels" to the card',
      });
    }
    const lines = await readLabelsFile(labelsFile);
    const plan = resolvePreprocess(card, opts.preprocess);
    const { device, threads: t, cudaMemLimit, cudnnAlgoSearch, spinning } = opts;
    const { backbone, workers, threads } = await openBackbone({
      spec,
      resolved,
      taps: [{ name: MODEL_OUTPUT_TAP, pool: 'none' }],
      device: { device, threads: t, cudaMemLimit, cudnnAlgoSearch, spinning },
      onNotice: opts.onNotice,
    });
    return new Classifier(backbone, workers, threads, card, plan, lines, labelsFile, opts.labels === undefined, opts);
  }

  /** Fixed batch size of the model input when it could not be made symbolic, else null. */
  get fixedBatch(): number | null {
    return this.backbone.info.fixedBatch;
  }

  get batchSize(): number {
    return this.fixedBatch ?? Math.max(1, this.opts.batch ?? defaultBatch(this.backbone.info.provider, this.threads));
  }

  private labelsFor(outputSize: number): string[] {
    if (this.labelNames === null || this.labelNames.length !== outputSize) {
      this.labelNames = mapLabels(this.labelLines, outputSize, {
        label_offset: this.card.label_offset,
        labels_skip: this.labelsFromCard ? this.card.labels_skip : undefined,
        file: this.labelsFile,
      });
    }
    return this.labelNames;
  }

  /** Top-k of row i of the model's output (n × K): a softmax first unless the output already is probabilities. */
  private predictions(out: Float32Array, n: number, i: number): Prediction[] {
    const K = out.length / n;
    let row: Float32Array = out.slice(i * K, (i + 1) * K);
    const isProb = this.card.output_is_probability ?? looksLikeProbabilities(row);
    if (!isProb) row = softmax(row);
    const names = this.labelsFor(K);
    const k = Math.min(Math.max(1, this.opts.top ?? 5), K);
    return topK(row, k).map(({ index, prob }) => ({ index, label: names[index], prob }));
  }

  /**
   * Classify images, in order, calling onResult for each (a result or an error record) as soon as it
   * and those before it are done (runtime/stream.ts). Unreadable images are reported, not thrown;
   * model errors throw.
   */
  async classifyAll(images: { path: string; source: string | Buffer }[], onResult: (r: ClassifyResult | ClassifyError) => void): Promise<{ ok: number; failed: number }> {
    let ok = 0;
    let failed = 0;
    const B = this.batchSize;
    const [h, w] = this.plan.size;
    const conc = Math.max(1, this.opts.decodeConcurrency ?? defaultDecodeConcurrency());
    const limit = pLimit(conc);
    await runStream({
      backbone: this.backbone,
      from: 0,
      to: images.length,
      decode: (i) => limit(() => loadPixelsOrSkip(images[i].source, this.plan, { displayPath: images[i].path })),
      batch: B,
      imageBytes: h * w * 3,
      pad: this.backbone.info.provider === 'cuda',
      window: Math.max(conc * 2, B * 2),
      maxInflight: this.workers * WORKER_DEPTH + 1,
      onBatch: (b, outputs) => {
        for (const s of b.slots) {
          if (s.row === null) {
            failed++;
            onResult({ path: images[s.item].path, error: s.reason });
          } else {
            ok++;
            onResult({ path: images[s.item].path, top: this.predictions(outputs![0], b.rows, s.row) });
          }
        }
      },
    });
    return { ok, failed };
  }

  /** Classify one image file; throws ImageError when it cannot be decoded. */
  async classify(file: string | Buffer, displayPath?: string): Promise<ClassifyResult> {
    const p = displayPath ?? (typeof file === 'string' ? file : file.toString('utf8'));
    const px = await loadImagePixels(file, this.plan, { displayPath: p });
    const { outputs } = await this.backbone.run(px.data, 1);
    return { path: p, top: this.predictions(outputs[0], 1, 0) };
  }

  async close(): Promise<void> {
    await this.backbone.close();
  }
}
