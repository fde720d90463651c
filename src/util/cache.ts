/** Where xfer caches generated files (converted built-in backbones, derived tap models). */
import os from 'node:os';
import path from 'node:path';
import { mkdir } from 'node:fs/promises';

/** `$XFER_CACHE`, else `$XDG_CACHE_HOME/xfer`, else `~/.cache/xfer`. */
export function cacheRoot(): string {
  if (process.env.XFER_CACHE) return path.resolve(process.env.XFER_CACHE);
  const xdg = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
  return path.join(xdg, 'xfer');
}

/** Create (if needed) and return a sub-folder of the cache. */
export async function cacheDir(...parts: string[]): Promise<string> {
  const dir = path.join(cacheRoot(), ...parts);
  await mkdir(dir, { recursive: true });
  return dir;
}
