/**
 * Atomic file replacement: write a uniquely named temp file beside the target, fsync it, rename it
 * over the target. A crash leaves either the old file or the new one, never a torn one; concurrent
 * writers (processes or worker threads) never share a temp file.
 */
import { randomBytes } from 'node:crypto';
import { open, rename, rm, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { threadId } from 'node:worker_threads';

/** How bytes reach the file (tests inject failures such as ENOSPC here). */
export type WriteFn = (fh: FileHandle, data: Uint8Array, position: number) => Promise<void>;

export const plainWrite: WriteFn = async (fh, data, position) => {
  let off = 0;
  while (off < data.length) {
    const { bytesWritten } = await fh.write(data, off, data.length - off, position + off);
    off += bytesWritten;
  }
};

/** A temp-file name beside `file`, unique per process, thread and call. */
export function tempNameFor(file: string): string {
  return path.join(path.dirname(file), `.${path.basename(file)}.tmp-${process.pid}-${threadId}-${randomBytes(4).toString('hex')}`);
}

/** Replace `file` atomically with `data`; fsync unless `fsync: false`. */
export async function writeFileAtomic(file: string, data: string | Uint8Array, opts: { fsync?: boolean; write?: WriteFn } = {}): Promise<void> {
  const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  const tmp = tempNameFor(file);
  const fh = await open(tmp, 'w');
  try {
    await (opts.write ?? plainWrite)(fh, bytes, 0);
    if (opts.fsync !== false) await fh.sync();
    await fh.close();
  } catch (e) {
    await fh.close().catch(() => {});
    await rm(tmp, { force: true }).catch(() => {});
    throw e;
  }
  try {
    await rename(tmp, file);
  } catch (e) {
    await rm(tmp, { force: true }).catch(() => {});
    throw e;
  }
}

/**
 * Write a whole folder by `fill(staging)`, then put it at `dir`: the old folder (if any) is moved
 * aside, the new one renamed into place, the old one deleted. Readers see the old folder or the new
 * one, never a mix of files from both; a failed `fill` leaves `dir` untouched.
 */
export async function replaceFolder<T>(dir: string, fill: (staging: string) => Promise<T>, opts: { carry?: (name: string) => boolean } = {}): Promise<T> {
  const { mkdir } = await import('node:fs/promises');
  const staging = tempNameFor(dir);
  const aside = `${staging}-old`;
  await mkdir(path.dirname(path.resolve(dir)), { recursive: true });
  let result: T;
  try {
    result = await fill(staging);
  } catch (e) {
    await rm(staging, { recursive: true, force: true }).catch(() => {});
    throw e;
  }
  // Entries of the old folder that belong to the running command (its lock) move into the new one.
  if (opts.carry) {
    const { readdir } = await import('node:fs/promises');
    const names = await readdir(dir).catch(() => [] as string[]);
    for (const n of names.filter(opts.carry)) await rename(path.join(dir, n), path.join(staging, n));
  }
  let hadOld = true;
  try {
    await rename(dir, aside);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    hadOld = false;
  }
  try {
    await rename(staging, dir);
  } catch (e) {
    if (hadOld) await rename(aside, dir).catch(() => {});
    throw e;
  }
  if (hadOld) await rm(aside, { recursive: true, force: true });
  return result;
}
