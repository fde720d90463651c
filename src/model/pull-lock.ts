/**
 * A lock file for downloads: created with O_EXCL (atomic on local file systems), holding the owner's
 * pid and host, and touched by its owner every 15 s. A lock whose owner on this host is no longer
 * alive, or (any host, e.g. a shared cache on NFS) that nobody touched for 2 minutes, is stale and
 * taken over; a live owner's lock is waited for, so two pulls of one model make one download.
 */
import { open, readFile, rm, stat, utimes } from 'node:fs/promises';
import os from 'node:os';
import { pidAlive } from '../util/lock.js';

export interface LockOptions {
  /** Called once when another live process holds the lock. */
  onWait?: (pid: number) => void;
  /** Poll interval while waiting (default 200 ms). */
  pollMs?: number;
}

const HEARTBEAT_MS = 15_000;
const STALE_MS = 120_000;

async function ageMs(file: string): Promise<number> {
  try {
    return Date.now() - (await stat(file)).mtimeMs;
  } catch {
    return 0;
  }
}

interface Owner {
  pid: number;
  host: string;
  token: string;
}

async function readOwner(file: string): Promise<Owner | null> {
  try {
    return JSON.parse(await readFile(file, 'utf8')) as Owner;
  } catch {
    return null;
  }
}

let counter = 0;

/** Run `fn` holding the lock `file`; waits for a live holder, takes over a stale one. */
export async function withLock<T>(file: string, fn: () => Promise<T>, opts: LockOptions = {}): Promise<T> {
  const token = `${process.pid}-${++counter}`;
  let told = false;
  let unreadable = 0;
  for (;;) {
    try {
      const fh = await open(file, 'wx');
      await fh.writeFile(JSON.stringify({ pid: process.pid, host: os.hostname(), token } satisfies Owner));
      await fh.close();
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    const owner = await readOwner(file);
    // A lock being written right now reads as empty; only a lock that stays unreadable is stale.
    const stale = owner === null ? ++unreadable > 25 : (owner.host === os.hostname() && !pidAlive(owner.pid)) || (await ageMs(file)) > STALE_MS;
    if (stale) {
      await rm(file, { force: true });
      continue;
    }
    if (owner && !told) {
      told = true;
      opts.onWait?.(owner.pid);
    }
    await new Promise((r) => setTimeout(r, opts.pollMs ?? 200));
  }
  const beat = setInterval(() => {
    const now = new Date();
    utimes(file, now, now).catch(() => {});
  }, HEARTBEAT_MS);
  beat.unref();
  try {
    return await fn();
  } finally {
    clearInterval(beat);
    const owner = await readOwner(file);
    if (owner?.token === token) await rm(file, { force: true });
  }
}
