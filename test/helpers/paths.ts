/** Paths tests use: the repo root and the read-only ../shared data folder (may be absent). */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** Repo root (tests run from dist/test/...). */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const SHARED = process.env.XFER_SHARED ? path.resolve(process.env.XFER_SHARED) : path.resolve(REPO_ROOT, '..', 'shared');
export const HAS_SHARED = existsSync(path.join(SHARED, 'models'));
/** Reason string for t.skip / { skip } when ../shared is missing. */
export const NO_SHARED = HAS_SHARED ? false : `../shared not found at ${SHARED} (real-model checks need it)`;
export function shared(...p: string[]): string {
  return path.join(SHARED, ...p);
}
