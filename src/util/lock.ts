/**
 * Exclusive locks with a recorded holder: an output folder while `xfer extract`/`merge`/`train` writes
 * it (a second run is refused), and a download while `xfer pull` fetches it (a second pull waits, then
 * finds the file present). One mechanism, two policies for a live holder: refuse, or wait.
 *
 * A lock is a folder (mkdir is atomic on local and network file systems, as in proper-lockfile)
 * holding `owner.json` {pid, host, since, command, token}. The holder touches the lock folder's mtime
 * every HEARTBEAT_MS. A lock is stale, and taken over, when its holder is on this host and its pid no
 * longer exists (kill -9, a crash: a restart continues at once), or when it has had no heartbeat for
 * STALE_MS (a holder on another machine that died). Taking over is serialised by a second folder,
 * `<lock>.break`, inside which the staleness is checked again, so two runs that both find the same
 * dead holder never both win.
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

export interface Lock {
  /** The lock folder. */
  readonly path: string;
  /** Set when another process took the lock over while this one held it (it stalled past STALE_MS). */
  readonly lost: boolean;
  /**
   * Throw (exit 1) if the lock is no longer this process's: writers call it before each commit, so a
   * run that stalled past STALE_MS and lost the folder to another host stops before writing more.
   */
  assertHeld(): void;
  /** Remove the lock (a lock another process has taken over is left alone). */
  release(): Promise<void>;
}

export interface FolderLock extends Lock {
  /** The locked folder. */
  readonly dir: string;
}

/** What to do when a live process holds the lock. */
export type BusyPolicy =
  /** Throw an XferError (exit 2) naming the holder: two writers of one folder are a mistake. */
  | { busy: 'refuse' }
  /** Wait for the holder to release it (or die): two pulls of one file share one download. */
  | {
      busy: 'wait';
      /** Called once, when the first look finds a live holder. */
      onWait?: (holder: LockOwner | null) => void;
      /** Poll interval while waiting (default 200 ms). */
      pollMs?: number;
      /** Give up (XferError, exit 1) after this long; default: wait while the holder lives. */
      timeoutMs?: number;
    };

export interface LockOptions {
  /** Recorded in owner.json and named to whoever is refused (e.g. "xfer extract"). */
  command: string;
  /** How messages name what is locked (e.g. "--out feats"). */
  name: string;
  /** "folder" or "download": messages say "this <what>'s lock". */
  what: string;
  policy: BusyPolicy;
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

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * The holder of `lockDir`, waiting (up to 1 s) for a holder that has just created it to write its
 * owner.json, so that a refusal can name it. null when the lock is gone.
 */
async function ownerWritten(lockDir: string): Promise<Holder | null> {
  for (let i = 0; ; i++) {
    const h = await readHolder(lockDir);
    if (!h || h.owner || i >= 100 || Date.now() - h.mtimeMs > HEARTBEAT_MS) return h;
    await delay(10);
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
 * Take the lock folder `lockDir` (its parent must exist) as `opts.command`. A stale holder is taken
 * over; a live one is refused (XferError, exit 2, naming it) or waited for, as `opts.policy` says.
 */
export async function acquireLock(lockDir: string, opts: LockOptions): Promise<Lock> {
  const mine: LockOwner = { pid: process.pid, host: os.hostname(), since: new Date().toISOString(), command: opts.command, token: randomBytes(8).toString('hex') };
  const refuse = (h: Holder | null) =>
    new XferError(`${opts.name}: in use by ${describe(h)}`, {
      hint: `wait for it to finish or stop it; a holder that died is taken over at once on its own host, after ${STALE_MS / 1000} s elsewhere (or delete ${lockDir} if you are sure)`,
    });
  const { policy } = opts;
  const started = Date.now();
  let told = false;
  for (let attempt = 0; ; attempt++) {
    if (await tryMkdir(lockDir)) return own(lockDir, mine, opts);
    const h = await ownerWritten(lockDir);
    if (h && isStale(h)) {
      const took = await takeOver(lockDir, h, mine, opts);
      if (took) return took;
    }
    if (policy.busy === 'refuse') {
      // Released, or taken over by another run, meanwhile: look again a few times, then name the holder.
      if (h && !isStale(h)) throw refuse(h);
      if (attempt >= 3) throw refuse(await readHolder(lockDir));
      continue;
    }
    if (!h || isStale(h)) continue;
    if (!told) {
      told = true;
      policy.onWait?.(h.owner);
    }
    if (policy.timeoutMs !== undefined && Date.now() - started > policy.timeoutMs) {
      throw new XferError(`${opts.name}: still in use by ${describe(h)} after ${Math.round(policy.timeoutMs / 1000)} s`, { hint: 'try again once it has finished', exitCode: 1 });
    }
    await delay(policy.pollMs ?? 200);
  }
}

/** Replace the stale lock `seen` by ours, inside the break section; null when someone else got there first. */
async function takeOver(lockDir: string, seen: Holder, mine: LockOwner, opts: LockOptions): Promise<Lock | null> {
  const breakDir = `${lockDir}.break`;
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
      await delay(10);
    }
    return null;
  }
  try {
    const now = await readHolder(lockDir);
    if (now && !(sameHolder(now, seen) && isStale(now))) return null;
    if (now) await rm(lockDir, { recursive: true, force: true });
    if (!(await tryMkdir(lockDir))) return null;
    return await own(lockDir, mine, opts);
  } finally {
    await rmdir(breakDir).catch(() => {});
  }
}

async function own(lockDir: string, mine: LockOwner, opts: LockOptions): Promise<Lock> {
  await writeFileAtomic(path.join(lockDir, OWNER), JSON.stringify(mine) + '\n');
  let lost = false;
  let released = false;
  const beat = async () => {
    // A holder briefly absent is this run moving its own lock (train --force swaps folders): look twice.
    let h = await readHolder(lockDir);
    if (!h) h = await delay(200).then(() => readHolder(lockDir));
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
    path: lockDir,
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
        throw new XferError(`${opts.name}: another process took this ${opts.what}'s lock over (this run had no heartbeat for ${STALE_MS / 1000} s); stopping before writing more`, {
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
    },
  };
}

/**
 * Take the lock on output folder `dir` (created if missing) for `command` (e.g. "xfer extract"), or
 * throw an XferError (exit 2) naming the holder. `flag` names where the folder came from in messages
 * ('' for none).
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
  const where = flag ? `${flag} ${dir}` : dir;
  let lock: Lock;
  try {
    lock = await acquireLock(path.join(abs, LOCK_DIR), { command, name: where, what: 'folder', policy: { busy: 'refuse' } });
  } catch (e) {
    await removeCreated(abs, created);
    if (e instanceof XferError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    throw new XferError(`${where}: cannot lock the folder (${code ?? (e as Error).message})`, { hint: 'choose a folder you can write to', cause: e });
  }
  return {
    dir: abs,
    path: lock.path,
    get lost() {
      return lock.lost;
    },
    assertHeld: () => lock.assertHeld(),
    async release() {
      await lock.release();
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

/**
 * Run `fn` holding the download lock `lockDir` (e.g. `<file>.lock`): a live holder (another pull of
 * the same file) is waited for, a dead one taken over.
 */
export async function withWaitLock<T>(lockDir: string, command: string, fn: () => Promise<T>, wait: Omit<Extract<BusyPolicy, { busy: 'wait' }>, 'busy'> = {}): Promise<T> {
  const lock = await acquireLock(lockDir, { command, name: lockDir, what: 'download', policy: { busy: 'wait', ...wait } });
  try {
    return await fn();
  } finally {
    await lock.release();
  }
}
