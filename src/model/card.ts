/**
 * Model cards: everything a backbone needs to be fed and tapped, as data (timm's pretrained_cfg).
 * One resolver (`resolvePreprocess`) turns a card into the numbers preprocessing uses; nothing else
 * hard-codes preprocessing constants.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { XferError } from '../errors.js';
import type { Pool } from './taps.js';
import { containedPath } from '../util/contain.js';

export type Layout = 'NCHW' | 'NHWC';
export type ChannelOrder = 'RGB' | 'BGR';
export type InputDtype = 'float32' | 'float16';
export type ResizePolicy = 'crop' | 'squash';
export type Interpolation = 'bilinear' | 'bicubic' | 'lanczos' | 'nearest';

export interface CardInput {
  /** ONNX input name; default: the model's only non-initializer input. */
  name?: string;
  /** [height, width] the network takes. */
  size: [number, number];
  layout: Layout;
  channel_order: ChannelOrder;
  dtype: InputDtype;
  /** Range the 0..255 pixels are linearly mapped to before mean/std, e.g. [0, 1] or [0, 255]. */
  range: [number, number];
  /** Per-channel mean (in the model's channel order, in `range` units), subtracted after scaling. */
  mean: [number, number, number];
  /** Per-channel std (in the model's channel order, in `range` units), divided after the mean. */
  std: [number, number, number];
}

export interface CardResize {
  /** crop: shorter side to size/crop_pct, then center crop (timm/torchvision); squash: resize to size ignoring aspect. */
  policy: ResizePolicy;
  crop_pct: number;
  interpolation: Interpolation;
}

export interface CardTaps {
  /** Recommended taps, early to late (block outputs). */
  recommended: string[];
  /** The pre-classifier pooled (or poolable) tensor: the usual "CNN code". */
  default: string;
  /** Default pooling for `default`. */
  pool?: Pool;
}

export interface ModelCard {
  id: string;
  description: string;
  /** Where the weights come from (URL, package, paper). */
  source: string;
  license: string;
  /** Path of the .onnx (relative to the card file), or absent for built-ins that are generated. */
  file?: string;
  /** Built-in generated backbones: which importer and which source model. */
  builtin?: { importer: 'nsfwjs'; model: 'mobilenet_v2' | 'inception_v3' };
  input: CardInput;
  resize: CardResize;
  /** Labels file (one label per line), relative to the card file. */
  labels?: string;
  /** Index of the first real class in the model's output (1 for 1001-class TF models with background). */
  label_offset?: number;
  /**
   * Number of leading lines of the labels file that are not classes of this model's output, e.g. 1 for
   * a 1001-line TF labels file ("background" first) used with a 1000-class model. Output index i is
   * labelled by line (i - label_offset + labels_skip). Default 0 (auto-detected for the 1001/1000 case).
   */
  labels_skip?: number;
  /** Whether the model's output already holds probabilities (else softmax is applied). */
  output_is_probability?: boolean;
  taps?: CardTaps;
  notes?: string;
  /** Absolute directory of the card file (set when loaded). */
  dir?: string;
}

const REQUIRED_TOP = ['id', 'description', 'source', 'license', 'input', 'resize'] as const;
const REQUIRED_INPUT = ['size', 'layout', 'channel_order', 'dtype', 'range', 'mean', 'std'] as const;
const REQUIRED_RESIZE = ['policy', 'crop_pct', 'interpolation'] as const;

function triple(v: unknown): boolean {
  return Array.isArray(v) && v.length === 3 && v.every((x) => typeof x === 'number' && Number.isFinite(x));
}

/** Validate a parsed card object; throws one XferError naming every missing or bad field. */
export function validateCard(obj: unknown, file: string): ModelCard {
  const problems: string[] = [];
  if (typeof obj !== 'object' || obj === null) throw new XferError(`${file}: a model card must be a JSON object`);
  const c = obj as Record<string, unknown>;
  for (const k of REQUIRED_TOP) if (c[k] === undefined) problems.push(`missing "${k}"`);
  const input = (c.input ?? {}) as Record<string, unknown>;
  const resize = (c.resize ?? {}) as Record<string, unknown>;
  if (c.input !== undefined) for (const k of REQUIRED_INPUT) if (input[k] === undefined) problems.push(`missing "input.${k}"`);
  if (c.resize !== undefined) for (const k of REQUIRED_RESIZE) if (resize[k] === undefined) problems.push(`missing "resize.${k}"`);
  if (input.size !== undefined && !(Array.isArray(input.size) && input.size.length === 2 && input.size.every((x) => Number.isInteger(x) && x > 0)))
    problems.push('"input.size" must be [height, width] positive integers');
  if (input.layout !== undefined && input.layout !== 'NCHW' && input.layout !== 'NHWC') problems.push('"input.layout" must be "NCHW" or "NHWC"');
  if (input.channel_order !== undefined && input.channel_order !== 'RGB' && input.channel_order !== 'BGR') problems.push('"input.channel_order" must be "RGB" or "BGR"');
  if (input.dtype !== undefined && input.dtype !== 'float32' && input.dtype !== 'float16') problems.push('"input.dtype" must be "float32" or "float16"');
  if (input.range !== undefined && !(Array.isArray(input.range) && input.range.length === 2 && input.range.every((x) => typeof x === 'number')))
    problems.push('"input.range" must be [min, max]');
  if (input.mean !== undefined && !triple(input.mean)) problems.push('"input.mean" must be 3 numbers');
  if (input.std !== undefined && !(triple(input.std) && (input.std as number[]).every((x) => x !== 0))) problems.push('"input.std" must be 3 non-zero numbers');
  if (resize.policy !== undefined && resize.policy !== 'crop' && resize.policy !== 'squash') problems.push('"resize.policy" must be "crop" or "squash"');
  if (resize.crop_pct !== undefined && !(typeof resize.crop_pct === 'number' && resize.crop_pct > 0 && resize.crop_pct <= 1))
    problems.push('"resize.crop_pct" must be in (0, 1]');
  if (resize.interpolation !== undefined && !['bilinear', 'bicubic', 'lanczos', 'nearest'].includes(resize.interpolation as string))
    problems.push('"resize.interpolation" must be bilinear, bicubic, lanczos or nearest');
  if (problems.length > 0) {
    throw new XferError(`${file}: invalid model card: ${problems.join('; ')}`, { hint: 'see docs/model-cards.md for the card fields and an example' });
  }
  return c as unknown as ModelCard;
}

/**
 * Load and validate a card JSON file; relative paths inside resolve against its folder. With
 * `containPaths` (a card that came with a model or the package, not one the user named with --card),
 * its `labels` and `file` must stay inside the card's folder (util/contain.ts).
 */
export async function loadCard(file: string, opts: { containPaths?: boolean } = {}): Promise<ModelCard> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new XferError(`${file}: model card not found (${(e as NodeJS.ErrnoException).code})`, { hint: 'pass --card <card.json>; `xfer models` lists built-in cards' });
  }
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch (e) {
    throw new XferError(`${file}: model card is not valid JSON (${(e as Error).message})`);
  }
  const card = validateCard(obj, file);
  card.dir = path.dirname(path.resolve(file));
  if (opts.containPaths) {
    for (const field of ['labels', 'file'] as const) if (card[field] !== undefined) await containedPath(card.dir, card[field], file, field);
  }
  return card;
}

/** Per-channel affine map applied to 0..255 pixels (in the model's channel order): x = p * scale[c] + bias[c]. */
export interface PixelAffine {
  scale: [number, number, number];
  bias: [number, number, number];
}

/** The one place that turns a card's range/mean/std into per-channel scale and bias on 0..255 pixels. */
export function pixelAffine(input: CardInput): PixelAffine {
  const [lo, hi] = input.range;
  const k = (hi - lo) / 255;
  const scale = [0, 1, 2].map((c) => k / input.std[c]) as [number, number, number];
  const bias = [0, 1, 2].map((c) => (lo - input.mean[c]) / input.std[c]) as [number, number, number];
  return { scale, bias };
}
