/**
 * `xfer extract --views K --augment hflip,crop[,color]`: K views of every training image (split
 * train or none), each its own row with `"view": v` in index.jsonl: view 0 plain, 1..K−1 augmented;
 * val/test images keep one plain row. View v of an image is drawn from a seed made of (seed, path, v), so a resumed, sharded
 * or repeated run writes the same views. Fine-tuning uses one view of each image per epoch.
 */
import { createHash } from 'node:crypto';
import { XferError } from '../errors.js';
import type { DatasetEntry } from '../image/discover.js';
import { augmentPixels, parseAugment, type Augment, type AugmentRng } from '../image/augment.js';

export interface ViewSpec {
  k: number;
  augment: Augment[];
  seed: number;
}

/** A dataset entry that is view `view` of its image (absent: the image itself). */
export type ViewEntry = DatasetEntry & { view?: number };

/** Check `--views` / `--augment`; null when no views are asked for. */
export function resolveViews(views: number | undefined, augment: string | undefined, seed = 0): ViewSpec | null {
  if (views === undefined) {
    if (augment !== undefined) throw new XferError('--augment needs --views K (the number of augmented views per training image)', { hint: 'e.g. --views 4 --augment hflip,crop' });
    return null;
  }
  if (!Number.isInteger(views) || views < 2) throw new XferError(`--views: expected an integer ≥ 2 (view 0 is the plain image, the others augmented), got '${String(views)}'`, { hint: 'e.g. --views 4' });
  const aug = parseAugment(augment ?? 'hflip,crop');
  if (aug.length === 0) throw new XferError('--views: --augment none would store identical views', { hint: 'e.g. --augment hflip,crop' });
  return { k: views, augment: aug, seed };
}

const isTraining = (e: DatasetEntry): boolean => e.split !== 'val' && e.split !== 'test';

/** Training entries repeated K times (views 0..K-1, next to each other), others once. */
export function expandViews(entries: readonly DatasetEntry[], spec: ViewSpec): ViewEntry[] {
  const out: ViewEntry[] = [];
  for (const e of entries) {
    if (!isTraining(e)) out.push(e);
    else for (let v = 0; v < spec.k; v++) out.push({ ...e, view: v });
  }
  return out;
}

/** Draws for one view: sha256 of (seed, path, view, draw number), so nothing depends on order or timing. */
function viewRng(spec: ViewSpec, e: ViewEntry): AugmentRng {
  let k = 0;
  const next = (): number => createHash('sha256').update(`${spec.seed}\n${e.path}\n${e.view}\n${k++}`).digest().readUInt32LE(0) / 2 ** 32;
  return { next, int: (n) => Math.floor(next() * n) };
}

/**
 * Augment decoded pixels in place when the entry is a view other than view 0. View 0 is the image as
 * decoded: a validation split carved from training images then scores plain images, like test.
 */
export function applyView(e: ViewEntry, px: Uint8Array, size: readonly [number, number] | number[], spec: ViewSpec | null): void {
  if (!spec || e.view === undefined || e.view === 0) return;
  augmentPixels(px, size[1], size[0], spec.augment, viewRng(spec, e));
}
