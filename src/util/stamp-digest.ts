/**
 * Digests of files remembered by the files' stamps (file-stamp.ts), in `<cache>/digests/`: a model
 * file's sha256 or a folder's content hash is computed again only when one of its files changed.
 * Resolving the default backbone hashed ~14 MB of files on every start (~45 ms here, on the path to
 * the first batch). A digest is not remembered while any of its files is younger than
 * RACY_MS (a write within the file system's timestamp granularity could leave the stamp unchanged:
 * git's "racily clean" rule). The memo is an accelerator only: unreadable or unwritable, digests are
 * computed as before.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { writeFileAtomic } from './atomic.js';
import { cacheDir, cacheRoot } from './cache.js';
import { fileStamp, sameStamp, type FileStamp } from './file-stamp.js';
import { sha256File, sha256Hex } from './hash.js';

const FORMAT = 1;
/** Files modified this recently are not trusted by stamp. */
export const RACY_MS = 3000;

interface Memo {
  format: number;
  /** What the digest is of (e.g. `sha256:/abs/file`). */
  id: string;
  files: { file: string; stamp: FileStamp }[];
  digest: string;
}

function memoPath(id: string): string {
  return path.join(cacheRoot(), 'digests', `${sha256Hex(id)}.json`);
}

/**
 * The digest `compute()` gives for `files` (absolute paths, in a fixed order), remembered under
 * `id` while every file keeps the stamp it had before the computation. (`clock`: for tests.)
 */
export async function digestByStamps(id: string, files: readonly string[], compute: () => Promise<string>, clock: () => number = Date.now): Promise<string> {
  const stamps = await Promise.all(files.map((f) => fileStamp(f)));
  const memo = await readFile(memoPath(id), 'utf8')
    .then((t) => JSON.parse(t) as Memo)
    .catch(() => null);
  if (
    memo &&
    memo.format === FORMAT &&
    memo.id === id &&
    typeof memo.digest === 'string' &&
    Array.isArray(memo.files) &&
    memo.files.length === files.length &&
    memo.files.every((m, i) => m.file === files[i] && sameStamp(m.stamp, stamps[i]))
  ) {
    return memo.digest;
  }
  const digest = await compute();
  const now = clock();
  if (stamps.every((s) => s !== null && now - Math.max(s.mtimeMs, s.ctimeMs) >= RACY_MS)) {
    const entry: Memo = { format: FORMAT, id, files: files.map((file, i) => ({ file, stamp: stamps[i]! })), digest };
    await cacheDir('digests')
      .then(() => writeFileAtomic(memoPath(id), JSON.stringify(entry), { fsync: false }))
      .catch(() => {});
  }
  return digest;
}

/** sha256 of a file (hex), remembered by its stamp. */
export function sha256FileRemembered(file: string): Promise<string> {
  const abs = path.resolve(file);
  return digestByStamps(`sha256:${abs}`, [abs], () => sha256File(abs));
}
