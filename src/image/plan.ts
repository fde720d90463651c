/**
 * Preprocessing plans: the ONE place that turns a model card (plus user overrides) into the numbers
 * decoding and tensor packing use. Nothing else in xfer hard-codes sizes, means or kernels.
 *
 * Resize ('crop', the timm/torchvision eval transform): scale the image so that it covers
 * floor(size / crop_pct) (for a square size: the shorter side becomes floor(size / crop_pct), the
 * longer side floor(short * long / short_in) — torchvision `Resize(int(size / crop_pct))`), then
 * center-crop `size` with torchvision's `round((H - h) / 2)` offsets. 'squash' resizes to exactly
 * size, ignoring aspect ratio.
 *
 * shrinkOnLoad (default false): libjpeg/libwebp can decode at 1/2, 1/4 or 1/8 scale, which makes
 * large JPEGs 2-4x faster to decode but changes the pixels (the downscale happens in the DCT domain
 * instead of with the card's kernel). Off by default so features match the reference pipeline; turn
 * it on (`--fast-decode`) when throughput matters more than bit-exactness against torchvision.
 *
 * ICC profiles (default: ignored): the pixels are decoded as stored, like PIL's `Image.convert('RGB')`
 * in the torchvision/timm/Keras loaders backbones are trained and evaluated with (none of them colour-
 * manage). Applying an embedded profile (`applyIcc`, `--apply-icc`: convert through it to sRGB, as a
 * browser shows the photo) changes the pixels of images whose profile is not sRGB, and makes decoding
 * of those images markedly slower (docs/performance.md).
 *
 * Alpha: transparent pixels are flattened onto `background`, default white (255,255,255), the usual
 * web/document convention and what most training sets' PNG/GIF exports look like on screen. Note that
 * PIL's `Image.convert('RGB')` (timm/torchvision) simply drops alpha, i.e. keeps whatever colour is
 * stored under transparent pixels (often black); pass `background: [0,0,0]` to get closer to that.
 */
import { pixelAffine, type ChannelOrder, type InputDtype, type Interpolation, type Layout, type ModelCard, type PixelAffine, type ResizePolicy } from '../model/card.js';
import { XferError } from '../errors.js';

/** sharp kernel names (sharp.kernel). */
export type SharpKernel = 'nearest' | 'linear' | 'cubic' | 'lanczos3';

export const KERNEL_FOR: Record<Interpolation, SharpKernel> = {
  bilinear: 'linear',
  bicubic: 'cubic',
  lanczos: 'lanczos3',
  nearest: 'nearest',
};

/** Default decompression-bomb guard: 100 megapixels (PIL warns at ~89 MP; a 20000x20000 header is 400 MP). */
export const DEFAULT_LIMIT_INPUT_PIXELS = 100_000_000;
/** Default per-image decode timeout in seconds. */
export const DEFAULT_TIMEOUT_SECONDS = 30;
export const DEFAULT_BACKGROUND: [number, number, number] = [255, 255, 255];

export interface PreprocessPlan {
  /** [height, width] of the network input. */
  size: [number, number];
  policy: ResizePolicy;
  crop_pct: number;
  interpolation: Interpolation;
  /** sharp kernel for `interpolation`. */
  kernel: SharpKernel;
  /** Allow JPEG/WebP shrink-on-load (faster, not bit-exact with the reference transform). */
  shrinkOnLoad: boolean;
  /** Convert images with an embedded ICC profile to sRGB through it (default false: decode as stored, like PIL). */
  applyIcc: boolean;
  channel_order: ChannelOrder;
  layout: Layout;
  dtype: InputDtype;
  /** x = p * scale[c] + bias[c] on 0..255 pixels in the model's channel order (from card.input via pixelAffine). */
  affine: PixelAffine;
  /** RGB (always R,G,B order, whatever the model's channel order) colour transparent pixels are flattened onto. */
  background: [number, number, number];
  /** Decompression-bomb guard: images with more pixels than this are refused before decoding. */
  limitInputPixels: number;
  /** Per-image timeout in seconds (sharp's .timeout()); 0 disables it. */
  timeoutSeconds: number;
}

export interface PreprocessOverrides {
  size?: [number, number];
  policy?: ResizePolicy;
  crop_pct?: number;
  interpolation?: Interpolation;
  shrinkOnLoad?: boolean;
  applyIcc?: boolean;
  background?: [number, number, number];
  limitInputPixels?: number;
  timeoutSeconds?: number;
}

function checkRgb(v: unknown, what: string): [number, number, number] {
  if (!Array.isArray(v) || v.length !== 3 || !v.every((x) => Number.isInteger(x) && x >= 0 && x <= 255)) {
    throw new XferError(`${what} must be three integers 0..255 (R,G,B)`, { hint: 'e.g. --background 255,255,255' });
  }
  return [v[0], v[1], v[2]];
}

/** Turn a card (+ overrides) into a preprocessing plan. Validates overrides; the card is assumed validated. */
export function resolvePreprocess(card: ModelCard, overrides: PreprocessOverrides = {}): PreprocessPlan {
  const size = overrides.size ?? card.input.size;
  if (!(Array.isArray(size) && size.length === 2 && size.every((x) => Number.isInteger(x) && x > 0))) {
    throw new XferError(`preprocessing size must be [height, width] positive integers (got ${JSON.stringify(size)})`);
  }
  const policy = overrides.policy ?? card.resize.policy;
  if (policy !== 'crop' && policy !== 'squash') throw new XferError(`resize policy must be "crop" or "squash" (got ${String(policy)})`);
  const crop_pct = overrides.crop_pct ?? card.resize.crop_pct;
  if (!(typeof crop_pct === 'number' && crop_pct > 0 && crop_pct <= 1)) throw new XferError(`crop_pct must be in (0, 1] (got ${String(crop_pct)})`);
  const interpolation = overrides.interpolation ?? card.resize.interpolation;
  const kernel = KERNEL_FOR[interpolation];
  if (!kernel) throw new XferError(`interpolation must be bilinear, bicubic, lanczos or nearest (got ${String(interpolation)})`);
  const limitInputPixels = overrides.limitInputPixels ?? DEFAULT_LIMIT_INPUT_PIXELS;
  if (!(Number.isFinite(limitInputPixels) && limitInputPixels > 0)) throw new XferError(`limitInputPixels must be a positive number (got ${limitInputPixels})`);
  const timeoutSeconds = overrides.timeoutSeconds ?? DEFAULT_TIMEOUT_SECONDS;
  if (!(Number.isInteger(timeoutSeconds) && timeoutSeconds >= 0)) throw new XferError(`timeout must be a whole number of seconds >= 0 (got ${timeoutSeconds})`);
  return {
    size: [size[0], size[1]],
    policy,
    crop_pct,
    interpolation,
    kernel,
    shrinkOnLoad: overrides.shrinkOnLoad ?? false,
    applyIcc: overrides.applyIcc ?? false,
    channel_order: card.input.channel_order,
    layout: card.input.layout,
    dtype: card.input.dtype,
    affine: pixelAffine(card.input),
    background: checkRgb(overrides.background ?? DEFAULT_BACKGROUND, 'background'),
    limitInputPixels,
    timeoutSeconds,
  };
}

/** The plan in the form meta.json's "preprocessing" records (docs/feature-format.md). */
export function describePlan(plan: PreprocessPlan): Record<string, unknown> {
  return {
    size: plan.size,
    resize: plan.policy,
    crop_pct: plan.crop_pct,
    interpolation: plan.interpolation,
    kernel: plan.kernel,
    shrink_on_load: plan.shrinkOnLoad,
    apply_icc: plan.applyIcc,
    channel_order: plan.channel_order,
    layout: plan.layout,
    dtype: plan.dtype,
    scale: plan.affine.scale,
    bias: plan.affine.bias,
    background: plan.background,
    limit_input_pixels: plan.limitInputPixels,
  };
}

/**
 * A recorded plan in today's form: records written before ICC profiles were ignored by default
 * (xfer 0.1.0's first releases) have no `apply_icc`, and profiles were applied then.
 */
export function normalizePlanRecord(rec: Record<string, unknown>): Record<string, unknown> {
  return 'apply_icc' in rec ? rec : { ...rec, apply_icc: true };
}

/**
 * Overrides that rebuild a recorded plan (meta.json "preprocessing", `describePlan`'s form) on the
 * same card: resize policy, crop_pct, interpolation, shrink-on-load, ICC handling, background and
 * pixel limit — what predicting with a trained head must repeat (see normalizePlanRecord for
 * records from before `apply_icc`).
 */
export function overridesFromRecord(record: Record<string, unknown>): PreprocessOverrides {
  const rec = normalizePlanRecord(record);
  const o: PreprocessOverrides = {};
  if (rec.resize === 'crop' || rec.resize === 'squash') o.policy = rec.resize;
  if (typeof rec.crop_pct === 'number') o.crop_pct = rec.crop_pct;
  if (typeof rec.interpolation === 'string' && rec.interpolation in KERNEL_FOR) o.interpolation = rec.interpolation as Interpolation;
  if (typeof rec.shrink_on_load === 'boolean') o.shrinkOnLoad = rec.shrink_on_load;
  if (typeof rec.apply_icc === 'boolean') o.applyIcc = rec.apply_icc;
  if (Array.isArray(rec.background) && rec.background.length === 3) o.background = rec.background as [number, number, number];
  if (typeof rec.limit_input_pixels === 'number') o.limitInputPixels = rec.limit_input_pixels;
  return o;
}

/** What a plan takes from the model card (input size, channel order, layout, dtype, scale/bias): these must match a record; overrides cannot restore them. */
const CARD_KEYS = ['size', 'channel_order', 'layout', 'dtype', 'scale', 'bias'] as const;

/** The card-derived fields where `plan` differs from a recorded plan, as "key: recorded → now". */
export function cardDifferences(plan: PreprocessPlan, rec: Record<string, unknown>): string[] {
  const now = describePlan(plan);
  return CARD_KEYS.filter((k) => k in rec && JSON.stringify(rec[k]) !== JSON.stringify(now[k])).map((k) => `${k} ${JSON.stringify(rec[k])} → ${JSON.stringify(now[k])}`);
}

/** Python's round() (half to even), used by torchvision's center crop offsets. */
export function pyRound(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

export interface ResizeGeometry {
  /** Size the whole image is resized to. */
  resizeWidth: number;
  resizeHeight: number;
  /** Crop window inside the resized image (equals the resized image for 'squash'). */
  left: number;
  top: number;
  width: number;
  height: number;
}

/**
 * Resize + crop geometry for an (already EXIF-oriented) image of inW x inH.
 * 'crop' with a square size follows torchvision exactly: short side -> floor(size/crop_pct),
 * long side -> int(short_new * long / short), crop offsets round((R - size) / 2).
 * For non-square sizes the image is scaled (aspect kept) to cover floor(h/crop_pct) x floor(w/crop_pct).
 */
export function resizeGeometry(inW: number, inH: number, plan: Pick<PreprocessPlan, 'size' | 'policy' | 'crop_pct'>): ResizeGeometry {
  const [h, w] = plan.size;
  if (plan.policy === 'squash') return { resizeWidth: w, resizeHeight: h, left: 0, top: 0, width: w, height: h };
  // 1e-9 guards against 224 / 0.875 style divisions landing just below an integer.
  const sh = Math.floor(h / plan.crop_pct + 1e-9);
  const sw = Math.floor(w / plan.crop_pct + 1e-9);
  let rw: number;
  let rh: number;
  if (sh === sw) {
    if (inW <= inH) {
      rw = sw;
      rh = Math.floor((sw * inH) / inW);
    } else {
      rh = sh;
      rw = Math.floor((sh * inW) / inH);
    }
  } else {
    const s = Math.max(sw / inW, sh / inH);
    rw = Math.max(sw, Math.floor(inW * s));
    rh = Math.max(sh, Math.floor(inH * s));
  }
  // A crop larger than the resized image (crop_pct = 1 on tiny inputs cannot happen since rw >= sw >= w) — guard anyway.
  rw = Math.max(rw, w);
  rh = Math.max(rh, h);
  return { resizeWidth: rw, resizeHeight: rh, left: pyRound((rw - w) / 2), top: pyRound((rh - h) / 2), width: w, height: h };
}
