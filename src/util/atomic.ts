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
