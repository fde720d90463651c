/**
 * Model cards from a Hugging Face `preprocessor_config.json` (the image processor of a transformers /
 * transformers.js export), so such an ONNX export can be used by path. The processors run, in order:
 * resize, center crop, rescale, normalize, channel flip; the card encodes the same numbers.
 */
import { readFile } from 'node:fs/promises';
import { XferError } from '../errors.js';
import { validateCard, type Interpolation, type ModelCard } from './card.js';

/** PIL resampling codes as the processors store them. */
const RESAMPLE: Record<number, Interpolation | null> = { 0: 'nearest', 1: 'lanczos', 2: 'bilinear', 3: 'bicubic', 4: null, 5: null };

type Size = number | { shortest_edge?: number; longest_edge?: number; height?: number; width?: number } | undefined;

function hw(size: Size): [number, number] | null {
  if (typeof size === 'number') return [size, size];
  if (size && typeof size.height === 'number' && typeof size.width === 'number') return [size.height, size.width];
  return null;
}

/**
 * Translate a parsed preprocessor_config.json into a card. Rules:
 * - `size.shortest_edge` S with center crop C (`crop_size`): shorter side to S, crop C → crop_pct C/S.
 * - `crop_pct` with `size.shortest_edge` S (ConvNeXt processors, S < 384): shorter side to S/crop_pct, crop S.
 * - `size` {height,width} or an int without a crop: squash to that size.
 * - `do_rescale` with `rescale_factor` r: range [0, 255 r] (else [0, 255]); mean/std only with `do_normalize`.
 * - `do_flip_channel_order`: BGR input; the mean/std (applied before the flip) are reversed into model order.
 */
export function cardFromPreprocessor(cfg: Record<string, unknown>, id: string, file = 'preprocessor_config.json'): ModelCard {
  const size = cfg.size as Size;
  const doResize = cfg.do_resize !== false;
  const doCrop = cfg.do_center_crop === true;
  const crop = hw(cfg.crop_size as Size);
  const shortest = typeof size === 'object' && size !== null ? size.shortest_edge : undefined;
  let inputSize: [number, number];
  let policy: 'crop' | 'squash';
  let cropPct = 1;
  if (doResize && shortest !== undefined && typeof cfg.crop_pct === 'number' && crop === null) {
    // ConvNeXt processors: below 384, shorter side to S/crop_pct then crop S; at 384 and above, warp to S x S.
    inputSize = [shortest, shortest];
    policy = shortest < 384 ? 'crop' : 'squash';
    cropPct = shortest < 384 ? (cfg.crop_pct as number) : 1;
  } else if (doResize && shortest !== undefined) {
    if (doCrop && crop) {
      inputSize = crop;
      policy = 'crop';
      cropPct = Math.min(crop[0], crop[1]) / shortest;
    } else {
      throw new XferError(`${file}: size.shortest_edge without a center crop gives images of varying size`, { hint: 'a fixed-size ONNX input needs a crop; pass the card fields by hand (docs/model-cards.md)' });
    }
  } else if (doResize && hw(size)) {
    const s = hw(size)!;
    inputSize = doCrop && crop ? crop : s;
    policy = doCrop && crop ? 'crop' : 'squash';
    if (doCrop && crop) cropPct = Math.min(crop[0], crop[1]) / Math.min(s[0], s[1]);
  } else {
    throw new XferError(`${file}: no usable "size" (expected {"shortest_edge": n}, {"height": h, "width": w} or a number)`);
  }
  if (cropPct > 1) cropPct = 1;
  const resample = cfg.resample === undefined ? 2 : Number(cfg.resample);
  const interpolation = RESAMPLE[resample];
  if (interpolation === undefined || interpolation === null) {
    throw new XferError(`${file}: resample ${cfg.resample} (PIL ${resample === 4 ? 'BOX' : resample === 5 ? 'HAMMING' : 'unknown'}) has no equivalent in xfer`, {
      hint: 'make a card by hand with the nearest interpolation (bilinear, bicubic, lanczos, nearest)',
    });
  }
  const rescale = cfg.do_rescale === false ? 1 : typeof cfg.rescale_factor === 'number' ? cfg.rescale_factor : 1 / 255;
  const normalize = cfg.do_normalize !== false && Array.isArray(cfg.image_mean) && Array.isArray(cfg.image_std);
  const three = (v: unknown, d: number): [number, number, number] => {
    if (typeof v === 'number') return [v, v, v];
    const a = Array.isArray(v) ? (v as number[]) : [d, d, d];
    return [a[0], a[1], a[2]];
  };
  let mean = normalize ? three(cfg.image_mean, 0) : ([0, 0, 0] as [number, number, number]);
  let std = normalize ? three(cfg.image_std, 1) : ([1, 1, 1] as [number, number, number]);
  const flip = cfg.do_flip_channel_order === true;
  if (flip) {
    mean = [mean[2], mean[1], mean[0]];
    std = [std[2], std[1], std[0]];
  }
  const processor = typeof cfg.image_processor_type === 'string' ? cfg.image_processor_type : typeof cfg.feature_extractor_type === 'string' ? cfg.feature_extractor_type : 'image processor';
  const card = {
    id,
    description: `${id} (card from a Hugging Face ${processor} config)`,
    source: `Hugging Face preprocessor config ${file}`,
    license: 'unknown (see the model repository)',
    input: {
      name: 'pixel_values',
      size: inputSize,
      layout: 'NCHW',
      channel_order: flip ? 'BGR' : 'RGB',
      dtype: 'float32',
      range: [0, 255 * rescale],
      mean,
      std,
    },
    resize: { policy, crop_pct: Number(cropPct.toFixed(6)), interpolation },
    notes: `From ${file}: ${JSON.stringify({ size, crop_size: cfg.crop_size, crop_pct: cfg.crop_pct, resample: cfg.resample, do_rescale: cfg.do_rescale, rescale_factor: cfg.rescale_factor, image_mean: cfg.image_mean, image_std: cfg.image_std, do_flip_channel_order: cfg.do_flip_channel_order })}. Input name pixel_values is the transformers export's; add taps (e.g. {"default": "last_hidden_state", "pool": "cls"}).`,
  };
  return validateCard(card, `card made from ${file}`);
}

/** Read a preprocessor_config.json and make its card. */
export async function cardFromPreprocessorFile(file: string, id: string): Promise<ModelCard> {
  let cfg: unknown;
  try {
    cfg = JSON.parse(await readFile(file, 'utf8'));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new XferError(`--from-hf ${file}: ${code ? `not readable (${code})` : `not valid JSON (${(e as Error).message})`}`, { hint: 'pass the preprocessor_config.json of the model repository' });
  }
  if (typeof cfg !== 'object' || cfg === null || Array.isArray(cfg)) throw new XferError(`--from-hf ${file}: expected a JSON object`);
  return cardFromPreprocessor(cfg as Record<string, unknown>, id, file);
}
