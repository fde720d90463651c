/**
 * Exclusive lock on an output folder (a feature folder while `xfer extract`/`merge` writes it, a head
 * folder while `xfer train` writes it), so two runs never write one folder at once.
 *
 * The lock is the folder `<dir>/.xfer-lock/` (mkdir is atomic on local and network file systems, as
 * in proper-lockfile), holding `owner.json` {pid, host, since, command, token}. The holder touches the
 * lock folder's mtime every HEARTBEAT_MS. A lock is stale, and taken over, when its holder is on this
 * host and its pid no longer exists (kill -9, a crash: a restart continues at once), or when it has had
 * no heartbeat for STALE_MS (a holder on another machine that died). Taking over is serialised by a
 * second folder, `.xfer-lock.break`, inside which the staleness is checked again, so two runs that
 * both find the same dead holder never both win.
 *
 * Not proper-lockfile itself: loading it patches process.emit/reallyExit (signal-exit) and fs.close
 * (graceful-fs) process-wide, which a library must not do to its caller, and it records no holder.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, readFile, rm, rmdir, stat, utimes } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { XferError } from '../errors.js';
import { writeFileAtomic } from './atomic.js';

export const LOCK_DIR = '.xfer-lock';
const BREAK_DIR = '.xfer-lock.break';
const OWNER = 'owner.json';
export const HEARTBEAT_MS = 10_000;
export const STALE_MS = 60_000;

/** Entries of a locked folder that belong to the lock (ignored when judging whether a folder is empty). */
export function isLockEntry(name: string): boolean {
  return name === LOCK_DIR || name === BREAK_DIR;
}

export interface LockOwner {
  pid: number;
  host: string;
  since: string;
  command: string;
  token: string;
}

export interface FolderLock {
  readonly dir: string;
  /** Set when another process took the lock over while this one held it (it stalled past STALE_MS). */
  readonly lost: boolean;
  /**
   * Throw (exit 1) if the lock is no longer this process's: writers call it before each commit, so a
   * run that stalled past STALE_MS and lost the folder to another host stops before writing more.
   */
  assertHeld(): void;
  /** Remove the lock (and the folder, when the lock created it and nothing else was written). */
  release(): Promise<void>;
}

interface Holder {
  owner: LockOwner | null;
  mtimeMs: number;
}

async function readHolder(lockDir: string): Promise<Holder | null> {
  let mtimeMs: number;
  try {
    mtimeMs = (await stat(lockDir)).mtimeMs;
  } catch {
    return null;
  }
  let owner: LockOwner | null = null;
  try {
    const o = JSON.parse(await readFile(path.join(lockDir, OWNER), 'utf8')) as Partial<LockOwner>;
    if (typeof o.pid === 'number' && typeof o.host === 'string' && typeof o.token === 'string') owner = o as LockOwner;
  } catch {
    owner = null; // being written (just created), or its writer died right after mkdir: judged by mtime
  }
  return { owner, mtimeMs };
}

/**
 * The holder of `lockDir`, waiting (up to 1 s) for a holder that has just created it to write its
 * owner.json, so that a refusal can name it. null when the lock is gone.
 */
async function ownerWritten(lockDir: string): Promise<Holder | null> {
  for (let i = 0; ; i++) {
    const h = await readHolder(lockDir);
    if (!h || h.owner || i >= 100 || Date.now() - h.mtimeMs > HEARTBEAT_MS) return h;
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Whether a process of this host is alive (EPERM: alive, someone else's). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function isStale(h: Holder, now = Date.now()): boolean {
  if (h.owner && h.owner.host === os.hostname()) return !pidAlive(h.owner.pid);
  return now - h.mtimeMs > STALE_MS;
}

function sameHolder(a: Holder, b: Holder): boolean {
  return a.owner && b.owner ? a.owner.token === b.owner.token : a.owner === null && b.owner === null && a.mtimeMs === b.mtimeMs;
}

async function tryMkdir(p: string): Promise<boolean> {
  try {
    await mkdir(p);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw e;
  }
}

function describe(h: Holder | null): string {
  if (!h?.owner) return 'another process (its details are not written yet)';
  const o = h.owner;
  return `${o.command || 'xfer'} (pid ${o.pid} on host ${o.host}, since ${o.since})`;
}

/**
 * Take the lock on `dir` (created if missing) for `command` (e.g. "xfer extract"), or throw an
 * XferError (exit 2) naming the holder. `flag` names where the folder came from in messages ('' for none).
 */
export async function lockFolder(dir: string, command: string, flag = '--out'): Promise<FolderLock> {
  const abs = path.resolve(dir);
  let created: string | undefined;
  try {
    created = await mkdir(abs, { recursive: true });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new XferError(`${flag ? `${flag} ` : ''}${dir}: cannot create the folder (${code})`, {
      hint: code === 'EEXIST' || code === 'ENOTDIR' ? 'a file is in the way; choose a folder path' : 'choose a folder you can write to',
      cause: e,
    });
  }
  const lockDir = path.join(abs, LOCK_DIR);
  const mine: LockOwner = { pid: process.pid, host: os.hostname(), since: new Date().toISOString(), command, token: randomBytes(8).toString('hex') };
  const where = flag ? `${flag} ${dir}` : dir;
  const refuse = (h: Holder | null) =>
    new XferError(`${where}: in use by ${describe(h)}`, {
      hint: `wait for it to finish or stop it; a holder that died is taken over at once on its own host, after ${STALE_MS / 1000} s elsewhere (or delete ${lockDir} if you are sure)`,
    });
  try {
    for (let attempt = 0; attempt < 4; attempt++) {
      if (await tryMkdir(lockDir)) return await own(abs, lockDir, mine, created);
      const h = await ownerWritten(lockDir);
      if (!h) continue; // released meanwhile: try again
      if (!isStale(h)) throw refuse(h);
      const took = await takeOver(abs, lockDir, h, mine, created);
      if (took) return took;
    }
    throw refuse(await readHolder(lockDir));
  } catch (e) {
    if (e instanceof XferError) {
      await removeCreated(abs, created);
      throw e;
    }
    const code = (e as NodeJS.ErrnoException).code;
    await removeCreated(abs, created);
    throw new XferError(`${where}: cannot lock the folder (${code ?? (e as Error).message})`, { hint: 'choose a folder you can write to', cause: e });
  }
}

/** Replace the stale lock `seen` by ours, inside the break section; null when someone else got there first. */
async function takeOver(abs: string, lockDir: string, seen: Holder, mine: LockOwner, created: string | undefined): Promise<FolderLock | null> {
  const breakDir = path.join(abs, BREAK_DIR);
  if (!(await tryMkdir(breakDir))) {
    // Another run is taking over (a few ms): wait for it (up to 1 s), so that the caller's next look
    // finds, and names, the new holder. A break folder left by a run that died inside it expires.
    for (let i = 0; i < 100; i++) {
      const st = await stat(breakDir).catch(() => null);
      if (!st) break;
      if (Date.now() - st.mtimeMs > HEARTBEAT_MS) {
        await rmdir(breakDir).catch(() => {});
        break;
      }
      await new Promise((r) => setTimeout(r, 10));
    }
    return null;
  }
  try {
    const now = await readHolder(lockDir);
    if (now && !(sameHolder(now, seen) && isStale(now))) return null;
    if (now) await rm(lockDir, { recursive: true, force: true });
    if (!(await tryMkdir(lockDir))) return null;
    return await own(abs, lockDir, mine, created);
  } finally {
    await rmdir(breakDir).catch(() => {});
  }
}

async function own(abs: string, lockDir: string, mine: LockOwner, created: string | undefined): Promise<FolderLock> {
  await writeFileAtomic(path.join(lockDir, OWNER), JSON.stringify(mine) + '\n');
  let lost = false;
  let released = false;
  const beat = async () => {
    // A holder briefly absent is this run moving its own lock (train --force swaps folders): look twice.
    let h = await readHolder(lockDir);
    if (!h) h = await new Promise((r) => setTimeout(r, 200)).then(() => readHolder(lockDir));
    if (!h || (h.owner && h.owner.token !== mine.token)) {
      lost = true;
      clearInterval(timer);
      return;
    }
    const t = new Date();
    await utimes(lockDir, t, t).catch(() => {});
  };
  // unref: the heartbeat never keeps a finished process alive.
  const timer = setInterval(() => void beat(), HEARTBEAT_MS);
  timer.unref();
  return {
    dir: abs,
    get lost() {
      return lost;
    },
    assertHeld() {
      let token: unknown = null;
      try {
        token = (JSON.parse(readFileSync(path.join(lockDir, OWNER), 'utf8')) as Partial<LockOwner>).token;
      } catch {
        token = null;
      }
      if (token !== mine.token) {
        lost = true;
        throw new XferError(`${abs}: another process took this folder's lock over (this run had no heartbeat for ${STALE_MS / 1000} s); stopping before writing more`, {
          hint: 'make sure only one run writes the folder, then check it (xfer extract --resume)',
          exitCode: 1,
        });
      }
    },
    async release() {
      if (released) return;
      released = true;
      clearInterval(timer);
      const h = await readHolder(lockDir);
      if (h?.owner?.token === mine.token) await rm(lockDir, { recursive: true, force: true });
      else lost = true;
      await removeCreated(abs, created);
    },
  };
}

/** Remove the folders `mkdir -p` created for the lock when nothing else was written in them. */
async function removeCreated(abs: string, created: string | undefined): Promise<void> {
  if (!created) return;
  for (let d = abs; d.length >= created.length; d = path.dirname(d)) {
    try {
      await rmdir(d);
    } catch {
      return;
    }
    if (d === created) return;
  }
}

/**
 * Run `fn` holding the lock on `dir`; the lock is released however `fn` ends. A lock lost meanwhile
 * (this process stalled past STALE_MS and another took the folder over) fails the run (exit 1).
 */
export async function withFolderLock<T>(dir: string, command: string, fn: (lock: FolderLock) => Promise<T>, flag = '--out'): Promise<T> {
  const lock = await lockFolder(dir, command, flag);
  let result: T;
  try {
    result = await fn(lock);
  } finally {
    await lock.release();
  }
  if (lock.lost) {
    throw new XferError(`${flag ? `${flag} ` : ''}${dir}: another process took the folder's lock over while this run held it (no heartbeat for ${STALE_MS / 1000} s)`, {
      hint: 'make sure only one run writes the folder, then check it (xfer extract --resume)',
      exitCode: 1,
    });
  }
  return result;
}
