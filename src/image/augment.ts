/**
 * Random augmentations of a decoded H×W×3 uint8 image (in place), for fine-tuning from the input and
 * for `xfer extract --views K --augment ...` (K augmented views of every training image):
 *   hflip  mirror left-right with probability 1/2
 *   crop   a random crop of 60–100 % of the area, aspect 3/4–4/3, resized back to H×W (bilinear)
 *   color  brightness and contrast each scaled by a factor in [0.8, 1.2]
 * Every choice is drawn from the given Rng, so a seed gives the same view.
 */
import { XferError } from '../errors.js';

/** The draws an augmentation needs: uniform [0, 1) and integers in [0, n). */
export interface AugmentRng {
  next(): number;
  int(n: number): number;
}

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
export function augmentPixels(px: Uint8Array, w: number, h: number, aug: readonly Augment[], rng: AugmentRng): void {
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

