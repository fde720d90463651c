/**
 * Decoding + preprocessing one image with sharp, exactly as a PreprocessPlan says, and the JS-side
 * reference packing of pixels into the model's input tensor.
 *
 * loadImagePixels: read file → sniff → (BMP: own decoder) → size and orientation (header.ts for
 * plain JPEG/PNG headers, else sharp's metadata) → sharp: EXIF auto-orient, first frame
 * only, embedded ICC profile ignored unless plan.applyIcc (see plan.ts), resize with the plan's
 * kernel (shrink-on-load off unless plan.shrinkOnLoad), center crop, flatten alpha onto
 * plan.background, convert to 8-bit sRGB with 3 channels (grey, CMYK, 16-bit, palette all end up
 * here), then reorder to the model's channel order. Every failure becomes an
 * ImageError with a short reason; nothing else escapes.
 */
import { lstat, readFile } from 'node:fs/promises';
import type { CreateRaw, Metadata, OutputInfo } from 'sharp';
import { XferError } from '../errors.js';
import { toHalfBits } from '../util/float16.js';
import { BmpError, decodeBmp, isBmp, readBmpHeader } from './bmp.js';
import { readImageHeader } from './header.js';
import { resizeGeometry, type PreprocessPlan } from './plan.js';
import sharp from 'sharp';

export type ImageErrorKind =
  | 'not-found'
  | 'permission'
  | 'not-a-file'
  | 'io'
  | 'empty'
  | 'not-image'
  | 'truncated'
  | 'corrupt'
  | 'unsupported'
  | 'too-large'
  | 'timeout';

/** An input image that could not be used. `reason` is short and human ("truncated JPEG"); `kind` is the category. */
export class ImageError extends XferError {
  readonly path: string;
  readonly reason: string;
  readonly kind: ImageErrorKind;
  constructor(path: string, kind: ImageErrorKind, reason: string, cause?: unknown) {
    super(`${path}: ${reason}`, { code: 'EIMAGE', cause, hint: 'fix or remove the file (xfer extract skips it and records it in errors.jsonl)' });
    this.name = 'ImageError';
    this.path = path;
    this.reason = reason;
    this.kind = kind;
  }
  /** The errors.jsonl record. */
  toRecord(): { path: string; reason: string } {
    return { path: this.path, reason: this.reason };
  }
}

export function isImageError(e: unknown): e is ImageError {
  return e instanceof ImageError;
}

export interface ImagePixels {
  /** HWC, 3 channels, uint8, in the model's channel order (plan.channel_order). */
  data: Uint8Array;
  width: number;
  height: number;
  /** Detected container format (from the bytes, not the file name). */
  format: string;
  /** Source size after EXIF orientation, before resizing. */
  sourceWidth: number;
  sourceHeight: number;
}

export interface LoadOptions {
  /** Path used in error messages/records (e.g. relative to the dataset root); default: the file argument. */
  displayPath?: string;
  /** sharp's failOn: 'truncated' (default, like PIL: refuse cut-off files), 'error', 'warning' (strict) or 'none'. */
  failOn?: 'none' | 'truncated' | 'error' | 'warning';
}

type Sniffed = 'jpeg' | 'png' | 'gif' | 'webp' | 'bmp' | 'tiff' | 'heif' | 'svg' | 'pdf' | 'html' | 'text' | 'zip' | 'unknown';

const FORMAT_NAME: Record<string, string> = { jpeg: 'JPEG', png: 'PNG', gif: 'GIF', webp: 'WebP', bmp: 'BMP', tiff: 'TIFF', heif: 'HEIF/AVIF', svg: 'SVG' };

/** Guess a file's type from its first bytes. */
export function sniffFormat(buf: Uint8Array): Sniffed {
  const b = buf;
  const ascii = (start: number, s: string) => s.split('').every((ch, i) => b[start + i] === ch.charCodeAt(0));
  if (b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return 'jpeg';
  if (b.length >= 8 && b[0] === 0x89 && ascii(1, 'PNG')) return 'png';
  if (ascii(0, 'GIF8')) return 'gif';
  if (ascii(0, 'RIFF') && ascii(8, 'WEBP')) return 'webp';
  if (isBmp(b) && b.length >= 14) return 'bmp';
  if ((ascii(0, 'II') && b[2] === 42 && b[3] === 0) || (ascii(0, 'MM') && b[2] === 0 && b[3] === 42)) return 'tiff';
  if (ascii(4, 'ftyp')) return 'heif';
  if (ascii(0, '%PDF')) return 'pdf';
  if (ascii(0, 'PK\x03\x04')) return 'zip';
  // Text: the first KB is printable UTF-8 / ASCII.
  const head = Buffer.from(b.subarray(0, 1024));
  let printable = true;
  for (const c of head) {
    if (c === 0 || (c < 0x20 && c !== 9 && c !== 10 && c !== 13)) {
      printable = false;
      break;
    }
  }
  if (printable && head.length > 0) {
    const s = head.toString('utf8').trimStart().toLowerCase();
    if (s.startsWith('<svg') || (s.startsWith('<?xml') && s.includes('<svg'))) return 'svg';
    if (s.startsWith('<!doctype html') || s.startsWith('<html')) return 'html';
    return 'text';
  }
  return 'unknown';
}

async function isSymlink(file: string | Buffer): Promise<boolean> {
  return lstat(file).then(
    (st) => st.isSymbolicLink(),
    () => false,
  );
}

async function readImageFile(file: string | Buffer, display: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    switch (code) {
      case 'ENOENT':
        // Discovery lists image-named symlinks without resolving them (discover.ts): say which it is.
        throw new ImageError(display, 'not-found', (await isSymlink(file)) ? 'broken symlink' : 'file not found', e);
      case 'EACCES':
      case 'EPERM':
        throw new ImageError(display, 'permission', 'permission denied', e);
      case 'EISDIR':
        throw new ImageError(display, 'not-a-file', 'is a directory, not an image file', e);
      case 'ELOOP':
        throw new ImageError(display, 'not-a-file', 'symlink loop', e);
      default:
        throw new ImageError(display, 'io', `cannot read file (${code ?? (e as Error).message})`, e);
    }
  }
}

function notAnImage(display: string, kind: Sniffed, cause?: unknown): ImageError {
  switch (kind) {
    case 'text':
      return new ImageError(display, 'not-image', 'not an image (text file)', cause);
    case 'html':
      return new ImageError(display, 'not-image', 'not an image (HTML page)', cause);
    case 'pdf':
      return new ImageError(display, 'not-image', 'not an image (PDF document)', cause);
    case 'zip':
      return new ImageError(display, 'not-image', 'not an image (ZIP archive)', cause);
    case 'unknown':
      return new ImageError(display, 'not-image', 'not an image (unrecognised format)', cause);
    default:
      return new ImageError(display, 'corrupt', `corrupt ${FORMAT_NAME[kind] ?? kind} (unreadable data)`, cause);
  }
}

/** Map a sharp/libvips failure to an ImageError. */
function fromSharpError(display: string, e: unknown, sniffed: Sniffed, plan: PreprocessPlan): ImageError {
  const msg = (e as Error)?.message ?? String(e);
  const first = msg.split('\n')[0].trim();
  const fmt = FORMAT_NAME[sniffed] ?? 'image';
  if (/exceeds pixel limit/i.test(msg)) return new ImageError(display, 'too-large', `image too large: exceeds limitInputPixels (${plan.limitInputPixels})`, e);
  if (/timeout/i.test(msg)) return new ImageError(display, 'timeout', `decoding timed out after ${plan.timeoutSeconds} s`, e);
  if (/premature end|truncat|unexpected end|end of (file|data|stream)|read error|not enough data|incomplete/i.test(msg))
    return new ImageError(display, 'truncated', `truncated ${fmt}`, e);
  if (/unsupported image format|input buffer contains unsupported/i.test(msg)) return notAnImage(display, sniffed, e);
  if (/not been built in|no decoder|unsupported codec|compression format/i.test(msg))
    return new ImageError(display, 'unsupported', `unsupported ${fmt} variant (${first.slice(0, 120)})`, e);
  return new ImageError(display, 'corrupt', `corrupt ${fmt} (${first.slice(0, 120)})`, e);
}

function tooLarge(display: string, w: number, h: number, plan: PreprocessPlan): ImageError {
  return new ImageError(display, 'too-large', `image too large: ${w}×${h} exceeds limitInputPixels (${plan.limitInputPixels})`);
}

/**
 * Decode, orient, resize/crop, flatten and convert one image to HWC uint8 pixels in the model's
 * channel order, `plan.size` in size. Throws ImageError (only) on failure.
 */
export async function loadImagePixels(file: string | Buffer, plan: PreprocessPlan, opts: LoadOptions = {}): Promise<ImagePixels> {
  const display = opts.displayPath ?? (typeof file === 'string' ? file : file.toString('utf8'));
  const buf = await readImageFile(file, display);
  return decodeImageBuffer(buf, plan, { ...opts, displayPath: display });
}

/** An input's pixels, or why it cannot be used (see loadPixelsOrSkip). */
export type PixelsOrSkip = { ok: true; data: Uint8Array } | { ok: false; reason: string };

/**
 * loadImagePixels for a run over many inputs: an ImageError (this input cannot be used) becomes
 * `{ ok: false, reason }` to record and skip; anything else (out of memory, a bug, …) is systematic
 * and still throws, so a run fails instead of skipping every image.
 */
export function loadPixelsOrSkip(file: string | Buffer, plan: PreprocessPlan, opts: LoadOptions = {}): Promise<PixelsOrSkip> {
  return loadImagePixels(file, plan, opts).then(
    (p) => ({ ok: true as const, data: p.data }),
    (e: unknown) => {
      if (isImageError(e)) return { ok: false as const, reason: e.reason };
      throw e;
    },
  );
}

/** As loadImagePixels, from bytes already in memory. */
export async function decodeImageBuffer(buf: Buffer, plan: PreprocessPlan, opts: LoadOptions = {}): Promise<ImagePixels> {
  const display = opts.displayPath ?? '<buffer>';
  if (buf.length === 0) throw new ImageError(display, 'empty', 'empty file (0 bytes)');
  const sniffed = sniffFormat(buf);
  if (sniffed === 'text' || sniffed === 'html' || sniffed === 'pdf' || sniffed === 'zip') throw notAnImage(display, sniffed);

  let input: Buffer = buf;
  let raw: CreateRaw | undefined;
  let srcW: number;
  let srcH: number;
  if (sniffed === 'bmp') {
    let bmp;
    try {
      const hdr = readBmpHeader(buf);
      if (hdr.width * hdr.height > plan.limitInputPixels) throw tooLarge(display, hdr.width, hdr.height, plan);
      bmp = decodeBmp(buf);
    } catch (e) {
      if (e instanceof ImageError) throw e;
      const m = (e as Error).message;
      if (e instanceof BmpError) throw new ImageError(display, /truncated/.test(m) ? 'truncated' : /unsupported/.test(m) ? 'unsupported' : 'corrupt', m, e);
      throw new ImageError(display, 'corrupt', `corrupt BMP (${m})`, e);
    }
    input = bmp.data;
    raw = { width: bmp.width, height: bmp.height, channels: bmp.channels };
    srcW = bmp.width;
    srcH = bmp.height;
  } else {
    // Size and orientation from the bytes when the header is plain (JPEG, PNG), else from sharp.
    let head = readImageHeader(buf);
    if (head === null) {
      let meta: Metadata;
      try {
        meta = await sharp(buf, { limitInputPixels: false, pages: 1 }).metadata();
      } catch (e) {
        throw fromSharpError(display, e, sniffed, plan);
      }
      head = { width: meta.width ?? 0, height: meta.pageHeight ?? meta.height ?? 0, orientation: meta.orientation ?? 1 };
    }
    const { width: w, height: h } = head;
    if (w <= 0 || h <= 0) throw new ImageError(display, 'corrupt', `corrupt ${FORMAT_NAME[sniffed] ?? 'image'} (no dimensions)`);
    if (w * h > plan.limitInputPixels) throw tooLarge(display, w, h, plan);
    const swap = head.orientation >= 5;
    srcW = swap ? h : w;
    srcH = swap ? w : h;
  }

  const g = resizeGeometry(srcW, srcH, plan);
  let pipeline = sharp(input, {
    raw,
    limitInputPixels: plan.limitInputPixels,
    sequentialRead: true,
    failOn: opts.failOn ?? 'truncated',
    pages: 1,
    autoOrient: raw === undefined,
    ignoreIcc: !plan.applyIcc,
  })
    .resize(g.resizeWidth, g.resizeHeight, { kernel: plan.kernel, fit: 'fill', fastShrinkOnLoad: plan.shrinkOnLoad })
    .flatten({ background: { r: plan.background[0], g: plan.background[1], b: plan.background[2] } })
    .removeAlpha()
    .toColourspace('srgb');
  if (g.left !== 0 || g.top !== 0 || g.width !== g.resizeWidth || g.height !== g.resizeHeight) {
    pipeline = pipeline.extract({ left: g.left, top: g.top, width: g.width, height: g.height });
  }
  if (plan.timeoutSeconds > 0) pipeline = pipeline.timeout({ seconds: plan.timeoutSeconds });
  let out: { data: Buffer; info: OutputInfo };
  try {
    out = await pipeline.raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
  } catch (e) {
    throw fromSharpError(display, e, sniffed, plan);
  }
  const { info } = out;
  const [h, w] = plan.size;
  if (info.width !== w || info.height !== h) {
    throw new ImageError(display, 'corrupt', `internal: decoded to ${info.width}×${info.height}, expected ${w}×${h}`);
  }
  let data = new Uint8Array(out.data.buffer, out.data.byteOffset, out.data.length);
  if (info.channels !== 3) data = toThreeChannels(data, info.channels, w * h);
  if (plan.channel_order === 'BGR') {
    for (let i = 0; i < data.length; i += 3) {
      const r = data[i];
      data[i] = data[i + 2];
      data[i + 2] = r;
    }
  }
  return { data, width: w, height: h, format: sniffed === 'unknown' ? 'unknown' : sniffed, sourceWidth: srcW, sourceHeight: srcH };
}

function toThreeChannels(src: Uint8Array, channels: number, n: number): Uint8Array {
  const dst = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    for (let c = 0; c < 3; c++) dst[i * 3 + c] = src[i * channels + (channels >= 3 ? c : 0)];
  }
  return dst;
}

/** Number of elements of one image's tensor (h*w*3). */
export function tensorSize(plan: PreprocessPlan): number {
  return plan.size[0] * plan.size[1] * 3;
}

/**
 * Write one image's model input into `out` at element offset `offset` (for batches: i * tensorSize(plan)),
 * in the card's layout with x = p * scale[c] + bias[c] in float32 arithmetic (the same Cast → Mul → Add
 * an in-graph preprocessing prefix does); fp16 models get IEEE half bits (round-to-nearest-even).
 */
export function writeModelTensor(pixels: Pick<ImagePixels, 'data' | 'width' | 'height'>, plan: PreprocessPlan, out: Float32Array | Uint16Array, offset = 0): void {
  const { width: w, height: h, data } = pixels;
  const hw = w * h;
  if (data.length !== hw * 3) throw new XferError(`pixel buffer has ${data.length} bytes, expected ${hw * 3} for ${w}×${h}×3`);
  if (out.length < offset + hw * 3) throw new XferError(`tensor buffer too small: ${out.length} < ${offset + hw * 3}`);
  const s = plan.affine.scale.map((v) => Math.fround(v));
  const b = plan.affine.bias.map((v) => Math.fround(v));
  const half = out instanceof Uint16Array;
  const nchw = plan.layout === 'NCHW';
  for (let i = 0; i < hw; i++) {
    for (let c = 0; c < 3; c++) {
      const x = Math.fround(Math.fround(data[i * 3 + c] * s[c]) + b[c]);
      const o = offset + (nchw ? c * hw + i : i * 3 + c);
      out[o] = half ? toHalfBits(x) : x;
    }
  }
}

/** The model input tensor for one image: Float32Array, or Uint16Array (fp16 bits) when plan.dtype is float16. */
export function toModelTensor(pixels: Pick<ImagePixels, 'data' | 'width' | 'height'>, plan: PreprocessPlan): Float32Array | Uint16Array {
  const n = pixels.width * pixels.height * 3;
  const out = plan.dtype === 'float16' ? new Uint16Array(n) : new Float32Array(n);
  writeModelTensor(pixels, plan, out, 0);
  return out;
}
