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
import ort from '../model/ort.js';
import { XferError } from '../errors.js';
import type { ModelCard } from '../model/card.js';
import { openSession, type DeviceOptions } from '../model/session.js';
import { resolveBackbone, requireCard } from '../model/registry.js';
import type { CardFlags } from '../model/card-flags.js';
import { float16ToFloat32 } from '../util/float16.js';
import { isImageError, ImageError, loadImagePixels, tensorSize, writeModelTensor } from '../image/decode.js';
import { resolvePreprocess, type PreprocessOverrides, type PreprocessPlan } from '../image/plan.js';

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
  /** Images per session.run for models with a dynamic batch dimension (default 8). */
  batch?: number;
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

function toFloat32(t: ort.Tensor): Float32Array {
  if (t.type === 'float16') return float16ToFloat32(t.data as Uint16Array);
  if (t.data instanceof Float32Array) return t.data;
  return Float32Array.from(t.data as ArrayLike<number>, Number);
}

/** A loaded classifier: session + card + plan + labels. */
export class Classifier {
  private labelNames: string[] | null = null;

  private constructor(
    readonly session: ort.InferenceSession,
    readonly card: ModelCard,
    readonly plan: PreprocessPlan,
    private readonly labelLines: string[],
    private readonly labelsFile: string,
    private readonly labelsFromCard: boolean,
    readonly inputName: string,
    /** Fixed batch size of the model input, or null when dynamic. */
    readonly fixedBatch: number | null,
    readonly opts: ClassifierOptions,
  ) {}

  /** Open a model file with its card. */
  static async open(file: string, card: ModelCard, opts: ClassifierOptions = {}): Promise<Classifier> {
    const labelsFile = opts.labels ?? (card.labels ? path.resolve(card.dir ?? '.', card.labels) : undefined);
    if (!labelsFile) {
      throw new XferError(`model card "${card.id}" has no labels: xfer classify needs the class names of the model's output`, {
        hint: 'pass --labels <file> (one label per line), or add "labels" to the card',
      });
    }
    const lines = await readLabelsFile(labelsFile);
    const plan = resolvePreprocess(card, opts.preprocess);
    const { session } = await openSession(file, opts, opts.onNotice);
    const inputName = card.input.name ?? session.inputNames[0];
    if (!session.inputNames.includes(inputName)) {
      await session.release().catch(() => {});
      throw new XferError(`${file}: model has no input "${inputName}" (inputs: ${session.inputNames.join(', ')})`, { hint: 'fix "input.name" in the model card' });
    }
    let fixedBatch: number | null = null;
    const meta = (session as unknown as { inputMetadata?: { name: string; shape?: (number | string)[] }[] }).inputMetadata;
    const m = Array.isArray(meta) ? meta.find((x) => x.name === inputName) : undefined;
    if (m?.shape && typeof m.shape[0] === 'number' && m.shape[0] > 0) fixedBatch = m.shape[0];
    return new Classifier(session, card, plan, lines, labelsFile, opts.labels === undefined, inputName, fixedBatch, opts);
  }

  /** Resolve a model spec (built-in id or path) + optional card file via the registry, and open it. */
  static async fromSpec(spec: string, opts: ClassifierOptions & { card?: string; cardFlags?: CardFlags } = {}): Promise<Classifier> {
    const b = await resolveBackbone(spec, { card: opts.card, cardFlags: opts.cardFlags, onNotice: opts.onNotice });
    return Classifier.open(b.file, requireCard(b, 'xfer classify'), opts);
  }

  get batchSize(): number {
    return this.fixedBatch ?? Math.max(1, this.opts.batch ?? 8);
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

  /** Classify already-preprocessed pixel batches (internal). */
  private async runBatch(pixels: { data: Uint8Array; width: number; height: number }[]): Promise<Float32Array[]> {
    const B = this.fixedBatch ?? pixels.length;
    const per = tensorSize(this.plan);
    const buf = this.plan.dtype === 'float16' ? new Uint16Array(B * per) : new Float32Array(B * per);
    pixels.forEach((p, i) => writeModelTensor(p, this.plan, buf, i * per));
    const [h, w] = this.plan.size;
    const dims = this.plan.layout === 'NCHW' ? [B, 3, h, w] : [B, h, w, 3];
    const tensor = buf instanceof Uint16Array ? new ort.Tensor('float16', buf, dims) : new ort.Tensor('float32', buf, dims);
    let out: ort.InferenceSession.ReturnType;
    try {
      out = await this.session.run({ [this.inputName]: tensor });
    } catch (e) {
      throw new XferError(`model run failed: ${(e as Error).message.split('\n')[0]}`, {
        hint: 'check the card\'s input size/layout/dtype against `xfer layers <model>`',
        cause: e,
        exitCode: 1,
      });
    }
    const t = out[this.session.outputNames[0]];
    const all = toFloat32(t);
    const n = all.length / B;
    const rows: Float32Array[] = [];
    for (let i = 0; i < pixels.length; i++) {
      let row: Float32Array = all.slice(i * n, (i + 1) * n);
      const isProb = this.card.output_is_probability ?? looksLikeProbabilities(row);
      if (!isProb) row = softmax(row);
      rows.push(row);
    }
    return rows;
  }

  private predictions(row: Float32Array): Prediction[] {
    const names = this.labelsFor(row.length);
    const k = Math.min(Math.max(1, this.opts.top ?? 5), row.length);
    return topK(row, k).map(({ index, prob }) => ({ index, label: names[index], prob }));
  }

  /**
   * Classify images, in order, calling onResult for each (a result or an error record). Decoding of
   * a batch runs 2 images at a time. Unreadable images are reported, not thrown; model errors throw.
   */
  async classifyAll(images: { path: string; source: string | Buffer }[], onResult: (r: ClassifyResult | ClassifyError) => void): Promise<{ ok: number; failed: number }> {
    let ok = 0;
    let failed = 0;
    const B = this.batchSize;
    for (let i = 0; i < images.length; i += B) {
      const chunk = images.slice(i, i + B);
      const decoded: (Awaited<ReturnType<typeof loadImagePixels>> | ImageError)[] = new Array(chunk.length);
      let next = 0;
      const worker = async () => {
        while (next < chunk.length) {
          const j = next++;
          try {
            decoded[j] = await loadImagePixels(chunk[j].source, this.plan, { displayPath: chunk[j].path });
          } catch (e) {
            if (!isImageError(e)) throw e;
            decoded[j] = e;
          }
        }
      };
      await Promise.all([worker(), worker()]);
      const good = decoded.map((d, j) => ({ d, j })).filter((x): x is { d: Awaited<ReturnType<typeof loadImagePixels>>; j: number } => !(x.d instanceof ImageError));
      const rows = good.length > 0 ? await this.runBatch(good.map((g) => g.d)) : [];
      const byIndex = new Map(good.map((g, r) => [g.j, rows[r]]));
      chunk.forEach((img, j) => {
        const d = decoded[j];
        if (d instanceof ImageError) {
          failed++;
          onResult({ path: img.path, error: d.reason });
        } else {
          ok++;
          onResult({ path: img.path, top: this.predictions(byIndex.get(j) as Float32Array) });
        }
      });
    }
    return { ok, failed };
  }

  /** Classify one image file; throws ImageError when it cannot be decoded. */
  async classify(file: string | Buffer, displayPath?: string): Promise<ClassifyResult> {
    const p = displayPath ?? (typeof file === 'string' ? file : file.toString('utf8'));
    const px = await loadImagePixels(file, this.plan, { displayPath: p });
    const [row] = await this.runBatch([px]);
    return { path: p, top: this.predictions(row) };
  }

  async close(): Promise<void> {
    await this.session.release();
  }
}
