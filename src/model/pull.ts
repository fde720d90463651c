/**
 * `xfer pull`: fetch a catalog entry's files into the cache, verified. Each file downloads to
 * `<name>.<sha256 prefix>.part` (kept between tries and runs, so an interrupted download resumes with an HTTP Range
 * request), is checked for size and sha256, and only then renamed to its final name: a file under
 * its final name is always a verified one. A lock file makes concurrent pulls of one entry share a
 * single download.
 */
import { copyFile, mkdir, open, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { XferError } from '../errors.js';
import { plainWrite, tempNameFor, type WriteFn } from '../util/atomic.js';
import { sha256File } from '../util/hash.js';
import { cachedPath, candidateUrls, entryDir, formatSize, isPresent, type CatalogEntry, type CatalogFile } from './catalog.js';
import { httpGet, HttpError } from './http-get.js';
import { withWaitLock } from '../util/lock.js';

export interface PullOptions {
  /** Bytes so far and total (null when unknown) of the file being downloaded. */
  onProgress?: (file: CatalogFile, received: number, total: number | null) => void;
  /** One-line notices (retries, mirror switches, resumes). */
  onNotice?: (msg: string) => void;
  /** Abort a connection that sends nothing for this long (default 30 s, or XFER_STALL_TIMEOUT_MS). */
  stallMs?: number;
  /** Tries per URL for retryable failures (5xx, resets, stalls; default 4). */
  retries?: number;
  /** First backoff delay; doubles per retry (default 1 s). */
  backoffMs?: number;
  /** How bytes reach the disk (tests inject ENOSPC here). */
  write?: WriteFn;
  /** Mirror base URL replacing every host (default XFER_MIRROR). */
  mirror?: string;
}

export interface PullResult {
  entry: CatalogEntry;
  /** Files downloaded now (empty when everything was already present). */
  downloaded: string[];
  /** Bytes transferred now. */
  bytes: number;
}

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

function stallMs(opts: PullOptions): number {
  if (opts.stallMs !== undefined) return opts.stallMs;
  const env = Number(process.env.XFER_STALL_TIMEOUT_MS);
  return Number.isFinite(env) && env > 0 ? env : 30_000;
}

/** The message every failure to fetch ends with: how to get the file by other means. */
export function manualHint(entry: CatalogEntry, f: CatalogFile): string {
  return `download ${f.urls[0]} by other means and register it: xfer pull ${entry.id} --file <downloaded ${f.name}>` + (f.role === 'labels' ? ' --labels' : '');
}

async function sizeOf(file: string): Promise<number> {
  try {
    return (await stat(file)).size;
  } catch {
    return 0;
  }
}

function diskError(e: unknown, file: string, need: number | null): XferError | null {
  const code = (e as NodeJS.ErrnoException).code;
  if (code !== 'ENOSPC' && code !== 'EDQUOT') return null;
  return new XferError(`disk full writing ${file}${need !== null ? ` (the file needs ${formatSize(need)})` : ''}`, {
    hint: `free space on that disk, or point XFER_CACHE at a larger one; the partial download is kept and resumes on the next pull`,
    exitCode: 1,
    cause: e,
  });
}

/** One try at one URL: append to `part` from its current size (Range), until the body ends. */
async function fetchInto(url: string, part: string, f: CatalogFile, opts: PullOptions): Promise<number> {
  let have = await sizeOf(part);
  if (f.size !== null && have === f.size) return 0;
  if (f.size !== null && have > f.size) {
    await rm(part, { force: true });
    have = 0;
  }
  const headers: Record<string, string> = have > 0 ? { Range: `bytes=${have}-` } : {};
  const res = await httpGet(url, { headers, stallMs: stallMs(opts) });
  if (res.status === 416) {
    // Range beyond the end: what we have is the whole file (checked by the sha), or it is stale.
    res.body.resume();
    if (f.size === null || have >= f.size) return 0;
    await rm(part, { force: true });
    throw new HttpError(`${url}: server refused to resume at byte ${have}`, true, 416);
  }
  const resumed = res.status === 206;
  if (have > 0 && resumed) opts.onNotice?.(`resuming ${f.name} at ${formatSize(have)}`);
  let pos = resumed ? have : 0;
  const lengthHeader = Number(res.headers['content-length']);
  const expectedEnd = Number.isFinite(lengthHeader) && res.headers['content-length'] !== undefined ? pos + lengthHeader : f.size;
  const total = f.size ?? expectedEnd;
  const fh: FileHandle = await open(part, resumed ? 'r+' : 'w');
  const write = opts.write ?? plainWrite;
  let got = 0;
  try {
    opts.onProgress?.(f, pos, total);
    for await (const chunk of res.body) {
      const buf = chunk as Buffer;
      if (f.size !== null && pos + buf.length > f.size) {
        res.body.destroy();
        await rm(part, { force: true });
        throw new HttpError(`${url}: the server sent more than the catalog's ${f.size} bytes; deleted`, false);
      }
      try {
        await write(fh, buf, pos);
      } catch (e) {
        res.body.destroy();
        throw diskError(e, part, f.size) ?? e;
      }
      pos += buf.length;
      got += buf.length;
      opts.onProgress?.(f, pos, total);
    }
    if (expectedEnd !== null && pos < expectedEnd) throw new HttpError(`${url}: connection closed after ${formatSize(pos)} of ${formatSize(expectedEnd)}`, true);
    await fh.sync();
  } catch (e) {
    if (e instanceof XferError || e instanceof HttpError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    const what = res.stalled() ? `no data for ${stallMs(opts) / 1000} s (stalled)` : `${(e as Error).message}${code ? ` (${code})` : ''}`;
    throw new HttpError(`${url}: ${what} after ${formatSize(pos)}`, true);
  } finally {
    await fh.close();
  }
  return got;
}

/** Download one file through its URLs in order, with retries and backoff; returns bytes transferred. */
async function downloadFile(entry: CatalogEntry, f: CatalogFile, opts: PullOptions): Promise<number> {
  const dest = cachedPath(entry, f);
  // The sha in the name: a catalog update never resumes onto another version's bytes.
  const part = `${dest}.${f.sha256.slice(0, 12)}.part`;
  const urls = candidateUrls(f, opts.mirror ?? process.env.XFER_MIRROR);
  const retries = opts.retries ?? 4;
  const backoff = opts.backoffMs ?? 1000;
  const failures: string[] = [];
  let bytes = 0;
  for (const url of urls) {
    for (let attempt = 1; ; attempt++) {
      try {
        bytes += await fetchInto(url, part, f, opts);
      } catch (e) {
        if (!(e instanceof HttpError)) throw e;
        if (e.retryable && attempt < retries) {
          const wait = backoff * 2 ** (attempt - 1);
          opts.onNotice?.(`${e.message}; retrying in ${wait < 1000 ? `${wait} ms` : `${wait / 1000} s`} (${attempt}/${retries - 1})`);
          await delay(wait);
          continue;
        }
        failures.push(e.message);
        if (urls.length > 1) opts.onNotice?.(`${e.message}; trying the next URL`);
        break;
      }
      const size = await sizeOf(part);
      const sha = await sha256File(part);
      if ((f.size !== null && size !== f.size) || sha !== f.sha256) {
        await rm(part, { force: true });
        const msg = `${url}: wrong bytes for ${f.name}: expected sha256 ${f.sha256}${f.size !== null ? ` (${f.size} bytes)` : ''}, received sha256 ${sha} (${size} bytes); deleted`;
        failures.push(msg);
        opts.onNotice?.(msg);
        break;
      }
      await rename(part, dest);
      return bytes;
    }
  }
  const sha = failures.find((m) => m.includes('wrong bytes'));
  throw new XferError(`${entry.id}: could not download ${f.name}: ${sha ?? failures[failures.length - 1] ?? 'no URL'}${failures.length > 1 ? ` (${failures.length} failures: ${failures.join(' | ')})` : ''}`, {
    hint: manualHint(entry, f),
    exitCode: 1,
  });
}

/** Make every file of an entry present and verified in the cache (downloading what is missing). */
export async function pullEntry(entry: CatalogEntry, opts: PullOptions = {}): Promise<PullResult> {
  const dir = entryDir(entry);
  await mkdir(dir, { recursive: true });
  const downloaded: string[] = [];
  let bytes = 0;
  for (const f of entry.catalog.files) {
    const dest = cachedPath(entry, f);
    await withWaitLock(`${dest}.lock`, 'xfer pull', async () => {
      // Another process may have finished this file while we waited for the lock.
      if (await verifiedPresent(f, dest)) return;
      bytes += await downloadFile(entry, f, opts);
      downloaded.push(dest);
    }, { onWait: (h) => opts.onNotice?.(`waiting for ${h ? `process ${h.pid} on host ${h.host}` : 'another process'}, which is downloading ${f.name}`) });
  }
  return { entry, downloaded, bytes };
}

/** A file under its final name is verified on arrival; the size check catches a truncated or replaced one. */
async function verifiedPresent(f: CatalogFile, dest: string): Promise<boolean> {
  try {
    const s = await stat(dest);
    return f.size === null || s.size === f.size;
  } catch {
    return false;
  }
}

/**
 * Register a copy obtained elsewhere (air-gapped machines): check its size and sha256, then copy it
 * into the cache atomically. `role` picks which of the entry's files it is (default the model).
 */
export async function registerLocalFile(entry: CatalogEntry, source: string, role: CatalogFile['role'] = 'model'): Promise<string> {
  const f = entry.catalog.files.find((x) => x.role === role);
  if (!f) throw new XferError(`${entry.id}: the catalog entry has no ${role} file`, { hint: 'drop --labels' });
  let size: number;
  try {
    size = (await stat(source)).size;
  } catch (e) {
    throw new XferError(`--file ${source}: not found (${(e as NodeJS.ErrnoException).code})`, { hint: `pass the path of the downloaded ${f.name}` });
  }
  const sha = await sha256File(source);
  if ((f.size !== null && size !== f.size) || sha !== f.sha256) {
    throw new XferError(`--file ${source}: not the catalog's ${f.name}: expected sha256 ${f.sha256}${f.size !== null ? ` (${f.size} bytes)` : ''}, received sha256 ${sha} (${size} bytes)`, {
      hint: `download it from ${f.urls[0]}`,
    });
  }
  const dest = cachedPath(entry, f);
  await mkdir(path.dirname(dest), { recursive: true });
  const tmp = tempNameFor(dest);
  try {
    await copyFile(source, tmp);
    await rename(tmp, dest);
  } catch (e) {
    await rm(tmp, { force: true });
    throw diskError(e, dest, f.size) ?? e;
  }
  return dest;
}

/** Whether automatic downloads are off (`--offline` sets XFER_OFFLINE=1 in the CLI). */
export function offline(): boolean {
  const v = process.env.XFER_OFFLINE;
  return v !== undefined && v !== '' && v !== '0' && v.toLowerCase() !== 'false';
}

/** The error for a catalog model that is missing while offline: which files to fetch, and how to register them. */
export function offlineError(entry: CatalogEntry): XferError {
  const missing = entry.catalog.files.filter((f) => !isPresent({ ...entry, catalog: { ...entry.catalog, files: [f] } }));
  const list = missing.map((m) => `${m.urls[0]} (${formatSize(m.size)}, sha256 ${m.sha256})`).join(' and ');
  const register = missing.map((m) => `xfer pull ${entry.id} --file <path of ${m.name}>${labelsFlag(m.role)}`).join(' and ');
  return new XferError(`${entry.id} is not downloaded yet and downloads are off (--offline / XFER_OFFLINE): fetch ${list}`, {
    hint: `then register: ${register}; or go online and run xfer pull ${entry.id}`,
  });
}

/** The `xfer pull --file` flag that registers a file of this role. */
function labelsFlag(role: string): string {
  return role === 'labels' ? ' --labels' : '';
}
