/**
 * The catalog: well-known pretrained backbones that are not in the package but can be downloaded on
 * demand, pinned by sha256. Each entry is a model card in models/ with a `catalog` block naming the
 * files to fetch (model, optional labels), their URLs (primary first, then mirrors) and their bytes.
 */
import { readdir } from 'node:fs/promises';
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { XferError } from '../errors.js';
import { cacheRoot } from '../util/cache.js';
import { loadCard, type ModelCard } from './card.js';

export type CatalogFormat = 'onnx' | 'tflite';

export interface CatalogFile {
  /** What the file is: the model, or the labels file the card's `labels` refers to. */
  role: 'model' | 'labels';
  /** File name in the cache. */
  name: string;
  /** Download URLs, primary first; revision-pinned where the host allows. */
  urls: string[];
  sha256: string;
  /** Exact byte length, or null where the source does not give it (the sha256 still pins the bytes). */
  size: number | null;
}

export interface CatalogBlock {
  format: CatalogFormat;
  files: CatalogFile[];
  /** Facts in the entry that could not be checked against the bytes or a primary source. */
  unverified?: string[];
}

export interface CatalogEntry {
  id: string;
  card: ModelCard;
  catalog: CatalogBlock;
  /** The card file the entry came from. */
  file: string;
}

/** Folders searched for catalog entries: the package's models/, plus `XFER_CATALOG` (a folder of extra entries, searched first). */
export function catalogDirs(builtinDir: string): string[] {
  const extra = process.env.XFER_CATALOG;
  return extra ? [path.resolve(extra), builtinDir] : [builtinDir];
}

const SHA = /^[0-9a-f]{64}$/;

function validateBlock(b: unknown, file: string): CatalogBlock {
  const problems: string[] = [];
  const c = (b ?? {}) as Record<string, unknown>;
  if (c.format !== 'onnx' && c.format !== 'tflite') problems.push('"catalog.format" must be "onnx" or "tflite"');
  const files = Array.isArray(c.files) ? (c.files as Record<string, unknown>[]) : [];
  if (files.filter((f) => f.role === 'model').length !== 1) problems.push('"catalog.files" must hold exactly one file with role "model"');
  files.forEach((f, i) => {
    if (f.role !== 'model' && f.role !== 'labels') problems.push(`files[${i}].role must be "model" or "labels"`);
    if (typeof f.name !== 'string' || f.name.includes('/') || f.name.startsWith('.')) problems.push(`files[${i}].name must be a plain file name`);
    if (!Array.isArray(f.urls) || f.urls.length === 0 || !f.urls.every((u) => typeof u === 'string' && /^https?:\/\//.test(u))) problems.push(`files[${i}].urls must be http(s) URLs`);
    if (typeof f.sha256 !== 'string' || !SHA.test(f.sha256)) problems.push(`files[${i}].sha256 must be 64 lowercase hex digits`);
    if (f.size !== null && !(Number.isSafeInteger(f.size) && (f.size as number) > 0)) problems.push(`files[${i}].size must be a positive integer or null`);
  });
  if (problems.length > 0) throw new XferError(`${file}: invalid catalog entry: ${problems.join('; ')}`, { hint: 'see docs/catalog.md for the entry fields' });
  return c as unknown as CatalogBlock;
}

/** Every catalog entry (cards with a `catalog` block), sorted by id; entries in XFER_CATALOG shadow same-id ones in models/. */
export async function listCatalog(builtinDir: string): Promise<CatalogEntry[]> {
  const byId = new Map<string, CatalogEntry>();
  for (const dir of catalogDirs(builtinDir)) {
    let names: string[];
    try {
      names = (await readdir(dir)).filter((f) => f.endsWith('.json')).sort();
    } catch (e) {
      throw new XferError(`${dir}: catalog folder not readable (${(e as NodeJS.ErrnoException).code})`, { hint: 'check XFER_CATALOG' });
    }
    for (const name of names) {
      const file = path.join(dir, name);
      const card = await loadCard(file);
      const raw = (card as unknown as { catalog?: unknown }).catalog;
      if (raw === undefined || byId.has(card.id)) continue;
      const catalog = validateBlock(raw, file);
      delete (card as unknown as { catalog?: unknown }).catalog;
      byId.set(card.id, { id: card.id, card, catalog, file });
    }
  }
  return [...byId.values()].sort((a, b) => a.id.localeCompare(b.id));
}

/** The cache folder of an entry's files. */
export function entryDir(entry: CatalogEntry): string {
  return path.join(cacheRoot(), 'catalog', entry.id);
}

/** Where a file of an entry lives once pulled. */
export function cachedPath(entry: CatalogEntry, f: CatalogFile): string {
  return path.join(entryDir(entry), f.name);
}

export function modelFile(entry: CatalogEntry): CatalogFile {
  return entry.catalog.files.find((f) => f.role === 'model')!;
}

/**
 * Whether every file of an entry is in the cache with its catalog size (a cheap check; the sha256 is
 * verified when the file arrives and again, remembered by file stamp, when a command uses it).
 */
export function isPresent(entry: CatalogEntry): boolean {
  return entry.catalog.files.every((f) => {
    const p = cachedPath(entry, f);
    if (!existsSync(p)) return false;
    return f.size === null || statSync(p).size === f.size;
  });
}

/**
 * The URLs to try for a file: its own, in order, or with `XFER_MIRROR` set, the same paths on the
 * mirror instead (an artifact proxy serving the upstream paths).
 */
export function candidateUrls(f: CatalogFile, mirror = process.env.XFER_MIRROR): string[] {
  if (!mirror) return f.urls;
  const base = mirror.replace(/\/+$/, '');
  const mapped = f.urls.map((u) => {
    const url = new URL(u);
    return `${base}${url.pathname}${url.search}`;
  });
  return [...new Set(mapped)];
}

/** The card of a pulled entry, with its labels pointing at the cached labels file. */
export function pulledCard(entry: CatalogEntry): ModelCard {
  const card = structuredClone(entry.card);
  const labels = entry.catalog.files.find((f) => f.role === 'labels');
  if (labels) card.labels = cachedPath(entry, labels);
  return card;
}

/** A one-line size for humans ("3.6 MB", "size unknown"). */
export function formatSize(bytes: number | null): string {
  return bytes === null ? 'size unknown' : `${(bytes / 1e6).toFixed(1)} MB`;
}
