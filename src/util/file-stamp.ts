/**
 * What a file looked like: size, modification and status-change times and inode. A write changes
 * mtime and ctime, and a copy over the file with its times kept (`cp -p`, `rsync -a`) still changes
 * ctime (set by the kernel, never by tools) and usually the inode, so a file whose stamp is unchanged
 * still holds the bytes it held when stamped (git's index trusts the same stat fields).
 */
import { stat } from 'node:fs/promises';

export interface FileStamp {
  size: number;
  mtimeMs: number;
  ctimeMs: number;
  ino: number;
}

/** `file`'s stamp, or null when it cannot be stat'ed. */
export async function fileStamp(file: string): Promise<FileStamp | null> {
  const st = await stat(file).catch(() => null);
  return st ? { size: st.size, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs, ino: st.ino } : null;
}

export function sameStamp(a: FileStamp | null | undefined, b: FileStamp | null | undefined): boolean {
  return !!a && !!b && a.size === b.size && a.mtimeMs === b.mtimeMs && a.ctimeMs === b.ctimeMs && a.ino === b.ino;
}
