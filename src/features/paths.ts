/**
 * A feature folder names its layer folders in meta.json; those, and the folder's own files, must
 * stay inside it (util/contain.ts) before a reader reads, a resume truncates or --overwrite deletes.
 */
import path from 'node:path';
import { XferError } from '../errors.js';
import { containedPath } from '../util/contain.js';

/** The files every feature folder holds at its root (docs/feature-format.md). */
export const ROOT_FILES = ['meta.json', 'labels.json', 'index.jsonl', 'errors.jsonl'] as const;

/** Refuse (exit 2) a folder whose meta.json layer dirs or root files lead outside it. */
export async function checkFeatureFolderPaths(dir: string, meta: { layers?: unknown }, metaFile = path.join(dir, 'meta.json')): Promise<void> {
  if (!Array.isArray(meta.layers)) throw new XferError(`${metaFile}: no "layers" list`, { hint: 'the file was not written by `xfer extract` (or was edited)' });
  for (const [i, l] of meta.layers.entries()) {
    await containedPath(dir, (l as { dir?: unknown } | null)?.dir, metaFile, `layers[${i}].dir`);
  }
  for (const f of ROOT_FILES) await containedPath(dir, f, dir, 'file');
}
