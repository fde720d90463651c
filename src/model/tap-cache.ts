/**
 * The on-disk cache of built tap models, `<cache>/taps/` (see util/cache.ts for `<cache>`).
 * Building one (parse the ONNX file, derive taps, pixel input and pooling, serialize: tap-model.ts)
 * costs more than opening a session and grows with the model; a cached one is a file read, and the
 * builder and the ONNX schema never load.
 *
 * An entry is keyed by sha256 over: the model file's sha256 and absolute path (external data files
 * are found relative to it), the card (without its folder), the taps asked for, the model spec (it
 * is quoted in the build's notices), xfer's version and this file's FORMAT (bump it when what
 * tap-model.ts builds changes between releases) and the versions of onnxruntime-node (it probes
 * ranks and batching) and protobufjs (it serializes).
 * It is `<key>.onnx` (the serialized tap model) and `<key>.json` (resolved taps, fixed batch, the
 * build's notices, the bytes' length and sha256, the size, mtime, ctime and inode of every external
 * data file the weights came from, which the model's sha256 does not cover, and the digest of those
 * files' contents that feature folders and heads record, and the stamp (size, mtime, ctime, inode) of
 * the .onnx file when its bytes were last checked against that sha256), each written atomically, the
 * JSON last. A hit whose .onnx stamp is unchanged is handed over as its path, unread: each session
 * reads the file itself (nothing is copied to the workers); otherwise the bytes are
 * read and checked, and the new stamp recorded. An entry that is missing, unreadable or inconsistent,
 * or whose external data files changed, is rebuilt; a build whose model file changed since it was
 * resolved is not stored. The MAX_ENTRIES most recently used are kept.
 * The cache is only an accelerator: when it cannot be read or written, tap models are built as before.
 */
import { readdir, readFile, rm, stat, utimes } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { writeFileAtomic } from '../util/atomic.js';
import { cacheDir, cacheRoot } from '../util/cache.js';
import { sha256Hex } from '../util/hash.js';
import { VERSION } from '../version.js';
import { fileStamp, sameStamp, type FileStamp } from '../util/file-stamp.js';
import type { ModelCard } from './card.js';
import type { ResolvedTap, TapRequest } from './taps.js';
import type { ExternalStamp } from '../onnx/io.js';
import type { TapBuild, TapBuildResult } from './tap-model.js';

/** Entries kept (each about the size of the backbone's .onnx file). */
export const MAX_ENTRIES = 8;
const FORMAT = 5;
/** Temp files of writes that never finished (a crash) are removed after this long. */
const STALE_TEMP_MS = 3600_000;

export interface TapCacheParts {
  /** sha256 of the model's .onnx file. */
  sha256: string;
  /** Absolute path of the model's .onnx file. */
  file: string;
  card: ModelCard;
  taps: TapRequest[];
  /** The model as the user named it. */
  spec: string;
}

interface EntryMeta {
  format: number;
  input: string;
  taps: ResolvedTap[];
  fixedBatch: number | null;
  notices: string[];
  bytes: number;
  sha256: string;
  external: ExternalStamp[];
  externalSha256: string | null;
  /** The .onnx file as it was when its bytes were last checked against `sha256` (absent: never). */
  checked?: FileStamp;
}

/**
 * A tap model ready to open: the cached file's path (a hit), or the bytes (a fresh build, or an entry
 * whose bytes had to be read to be checked).
 */
export type PreparedTap = Omit<TapBuild, 'bytes'> & {
  model: Uint8Array | string;
};

/** Whether every external data file is still the one the entry was built from. */
async function externalUnchanged(stamps: ExternalStamp[]): Promise<boolean> {
  for (const e of stamps) if (!sameStamp(await fileStamp(e.file), e)) return false;
  return true;
}

/** JSON with object keys sorted (the same text for the same value, whatever the key order). */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .filter((k) => o[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}

/** Versions of the libraries whose behaviour goes into a built tap model. */
function libraryVersions(): Record<string, string> {
  const require = createRequire(import.meta.url);
  const out: Record<string, string> = {};
  for (const pkg of ['onnxruntime-node', 'protobufjs']) {
    try {
      out[pkg] = String((require(`${pkg}/package.json`) as { version?: unknown }).version);
    } catch {
      out[pkg] = 'unknown';
    }
  }
  return out;
}

export async function tapCacheKey(p: TapCacheParts): Promise<string> {
  const { dir: _dir, ...card } = p.card;
  const taps = p.taps.map((t) => ({ name: t.name, pool: t.pool }));
  return sha256Hex(canonical({ format: FORMAT, version: VERSION, libs: libraryVersions(), model: p.sha256, file: p.file, card, taps, spec: p.spec }));
}

function entryPaths(key: string): { onnx: string; json: string } {
  const dir = path.join(cacheRoot(), 'taps');
  return { onnx: path.join(dir, `${key}.onnx`), json: path.join(dir, `${key}.json`) };
}

/**
 * A cached build and its notices, or null (absent, unreadable or inconsistent). The bytes are checked
 * against the entry's length and sha256 when the file's stamp differs from the one recorded at the
 * last check (then recorded again); while it is unchanged, the entry is its path, unread: the
 * sessions read the file themselves.
 */
export async function readTapCache(key: string): Promise<(PreparedTap & { notices: string[] }) | null> {
  const files = entryPaths(key);
  try {
    const meta = JSON.parse(await readFile(files.json, 'utf8')) as EntryMeta;
    if (meta.format !== FORMAT || typeof meta.input !== 'string' || !Array.isArray(meta.taps) || !Array.isArray(meta.notices) || !Array.isArray(meta.external)) return null;
    if (meta.externalSha256 !== null && typeof meta.externalSha256 !== 'string') return null;
    if (!(await externalUnchanged(meta.external))) return null;
    const entry = { input: meta.input, taps: meta.taps, fixedBatch: meta.fixedBatch, externalSha256: meta.externalSha256, notices: meta.notices };
    const stamp = await fileStamp(files.onnx);
    if (stamp && sameStamp(stamp, meta.checked)) {
      const now = new Date();
      await utimes(files.json, now, now).catch(() => {}); // last use, for eviction
      return { ...entry, model: files.onnx };
    }
    const bytes = await readFile(files.onnx);
    if (bytes.length !== meta.bytes || sha256Hex(bytes) !== meta.sha256) return null;
    // (Written again, so its mtime is the last use too.)
    await writeFileAtomic(files.json, JSON.stringify({ ...meta, checked: stamp ?? undefined }), { fsync: false }).catch(() => {});
    return { ...entry, model: new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length) };
  } catch {
    return null;
  }
}

/**
 * Store a build whose weights came from the model file plus its external data files (best effort:
 * a cache that cannot be written is not an error), then evict the least recently used beyond
 * MAX_ENTRIES.
 */
export async function writeTapCache(key: string, build: TapBuildResult, notices: string[]): Promise<boolean> {
  try {
    const dir = await cacheDir('taps');
    const files = entryPaths(key);
    await writeFileAtomic(files.onnx, build.bytes, { fsync: false });
    const checked = (await fileStamp(files.onnx)) ?? undefined;
    const meta: EntryMeta = { format: FORMAT, input: build.input, taps: build.taps, fixedBatch: build.fixedBatch, notices, bytes: build.bytes.length, sha256: sha256Hex(build.bytes), external: build.external, externalSha256: build.externalSha256, checked };
    await writeFileAtomic(files.json, JSON.stringify(meta), { fsync: false });
    await evict(dir, key);
    return true;
  } catch {
    return false; // build again next time
  }
}

async function evict(dir: string, keep: string): Promise<void> {
  const names = await readdir(dir);
  for (const f of names.filter((n) => n.startsWith('.') && n.includes('.tmp-'))) {
    const st = await stat(path.join(dir, f)).catch(() => null);
    if (st && Date.now() - st.mtimeMs > STALE_TEMP_MS) await rm(path.join(dir, f), { force: true });
  }
  const keyed = (ext: string) => new Set(names.filter((f) => f.length === 64 + ext.length && f.endsWith(ext) && /^[0-9a-f]{64}\./.test(f)).map((f) => f.slice(0, 64)));
  const metas = keyed('.json');
  // A model without its JSON is a write that did not finish (a crash, or one in progress elsewhere: it is then rebuilt).
  for (const k of keyed('.onnx')) if (!metas.has(k) && k !== keep) await rm(entryPaths(k).onnx, { force: true });
  const entries = await Promise.all(
    [...metas].filter((k) => k !== keep).map(async (key) => ({ key, used: (await stat(entryPaths(key).json).catch(() => null))?.mtimeMs ?? 0 })),
  );
  entries.sort((a, b) => b.used - a.used);
  for (const e of entries.slice(MAX_ENTRIES - 1)) {
    const files = entryPaths(e.key);
    await rm(files.json, { force: true });
    await rm(files.onnx, { force: true });
  }
}

/**
 * The tap model for `parts`, from the cache or built (model file `file`) and stored. Notices the
 * build gave (e.g. a fixed batch) are given again on a cache hit.
 */
export async function cachedTapBuild(parts: TapCacheParts, onNotice: (msg: string) => void = () => {}): Promise<PreparedTap> {
  let key: string | null = null;
  try {
    key = await tapCacheKey(parts);
    const hit = await readTapCache(key);
    if (hit) {
      for (const n of hit.notices) onNotice(n);
      return hit;
    }
  } catch {
    key = null; // no cache this time; build
  }
  const { buildTapBytes } = await import('./tap-model.js');
  const notices: string[] = [];
  const build = await buildTapBytes(parts.file, parts.card, parts.taps, parts.spec, (n) => {
    notices.push(n);
    onNotice(n);
  });
  // (A model file rewritten since it was resolved: the build is of other bytes than the key says.)
  if (key !== null && build.modelSha256 === parts.sha256) await writeTapCache(key, build, notices);
  return { input: build.input, taps: build.taps, fixedBatch: build.fixedBatch, externalSha256: build.externalSha256, model: build.bytes };
}
