/**
 * Dataset discovery: an ImageFolder tree, a flat folder, or a CSV/JSONL list file → a deterministic,
 * sorted list of images with labels and splits. Problems with individual files are recorded in
 * `errors` (they become errors.jsonl lines); only "nothing usable at all" throws.
 *
 * Layouts (kind 'auto'):
 * - root is a file → list file: `.csv` (header `path,label[,split]`) or `.jsonl`/`.ndjson`
 *   (objects with those keys). Paths are relative to the list file's folder; entries escaping that
 *   folder or missing are recorded as errors. Entries keep no extension filter (you listed them).
 * - root has sub-folders and no images directly in it → ImageFolder: `root/<class>/**` (files in
 *   nested folders belong to the top class folder); if every sub-folder is named
 *   train/val/valid/validation/test (any case) they are splits: `root/<split>/<class>/**`
 *   ('valid'/'validation' are recorded as 'val'); a split folder holding images directly is unlabelled.
 * - otherwise → flat: every image under root, recursively, unlabelled.
 * Hidden files and folders (name starting with '.', e.g. .ipynb_checkpoints, ._foo.jpg) are skipped
 * unless includeHidden. Symlinks are followed; each real folder is walked at most once (loops and
 * repeated links are skipped with a warning). A symlink with an image extension is listed as an image
 * without being resolved: if it is broken or points at a folder, decoding that entry reports it.
 * Names that are not valid UTF-8 are kept: `path` shows the bad bytes as \xNN, and `absBytes` holds
 * the exact bytes to open (use `entrySource(e)`).
 * Order: entries sorted by the bytes of their relative path, so the list (and --shard i/n splits)
 * is the same on every machine and locale.
 */
import { isUtf8 } from 'node:buffer';
import { readdir, readFile, stat } from 'node:fs/promises';
import type { Dirent, Stats } from 'node:fs';
import path from 'node:path';
import { XferError } from '../errors.js';

/** stat() calls in flight while listing a folder. */
const STAT_CHUNK = 64;

export type DatasetKind = 'imagefolder' | 'flat' | 'list';
export type Split = 'train' | 'val' | 'test';

export const DEFAULT_EXTENSIONS = ['jpg', 'jpeg', 'png', 'gif', 'webp', 'avif', 'tif', 'tiff', 'bmp'] as const;

export interface DatasetEntry {
  /** Path relative to the dataset root (or to the list file's folder), '/'-separated; bad UTF-8 bytes shown as \xNN. */
  path: string;
  /** Absolute path (lossy when the name is not valid UTF-8; then use absBytes). */
  abs: string;
  /** Exact absolute path bytes, present only when the path is not valid UTF-8. */
  absBytes?: Buffer;
  label: string | null;
  /** Index of `label` in Dataset.labels, or null. */
  labelIndex: number | null;
  split: Split | null;
}

export interface DiscoverIssue {
  path: string;
  reason: string;
}

export interface Dataset {
  /** Absolute dataset root (the folder, or the list file). */
  root: string;
  kind: DatasetKind;
  entries: DatasetEntry[];
  /** Sorted class names that have at least one image. */
  labels: string[];
  /** Inputs that could not be used (errors.jsonl records). */
  errors: DiscoverIssue[];
  /** Class folders without any image ("<class>" or "<split>/<class>"); not in `labels` unless another split has images. */
  emptyClasses: string[];
  /** Non-fatal notes (symlink loops, empty classes, ...). */
  warnings: string[];
  /** Files skipped because of their extension. */
  skippedFiles: number;
}

export interface DiscoverOptions {
  kind?: 'auto' | DatasetKind;
  /** Extensions to accept (case-insensitive, no dot). Default DEFAULT_EXTENSIONS. */
  extensions?: readonly string[];
  includeHidden?: boolean;
  /** Return an empty dataset instead of throwing. */
  allowEmpty?: boolean;
}

/** What to pass to fs / loadImagePixels for an entry: exact bytes when the name is not UTF-8. */
export function entrySource(e: Pick<DatasetEntry, 'abs' | 'absBytes'>): string | Buffer {
  return e.absBytes ?? e.abs;
}

const SPLIT_NAMES: Record<string, Split> = { train: 'train', val: 'val', valid: 'val', validation: 'val', test: 'test' };

/** Decode bytes as UTF-8, showing invalid bytes as \xNN (so the result is printable and unambiguous enough for records). */
export function displayBytes(b: Buffer): string {
  if (isUtf8(b)) return b.toString('utf8');
  let out = '';
  let i = 0;
  while (i < b.length) {
    const c = b[i];
    const len = c < 0x80 ? 1 : c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    if (len > 0 && i + len <= b.length && isUtf8(b.subarray(i, i + len))) {
      out += b.subarray(i, i + len).toString('utf8');
      i += len;
    } else {
      out += `\\x${c.toString(16).padStart(2, '0')}`;
      i++;
    }
  }
  return out;
}

interface RawEntry {
  rel: Buffer;
  abs: Buffer;
  label: string | null;
  split: Split | null;
}

const SEP = Buffer.from('/');

function join(a: Buffer, b: Buffer): Buffer {
  return a.length === 0 ? b : Buffer.concat([a, SEP, b]);
}

class Walker {
  readonly errors: DiscoverIssue[] = [];
  readonly warnings: string[] = [];
  skippedFiles = 0;
  private visited = new Set<string>();
  private exts: Set<string>;
  private includeHidden: boolean;

  constructor(
    private rootAbs: Buffer,
    opts: DiscoverOptions,
  ) {
    this.includeHidden = opts.includeHidden ?? false;
    this.exts = new Set((opts.extensions ?? DEFAULT_EXTENSIONS).map((e) => e.toLowerCase().replace(/^\./, '')));
  }

  isImageName(name: Buffer): boolean {
    const s = name.toString('latin1');
    const dot = s.lastIndexOf('.');
    return dot > 0 && this.exts.has(s.slice(dot + 1).toLowerCase());
  }

  hidden(name: Buffer): boolean {
    return !this.includeHidden && name[0] === 0x2e;
  }

  /** Mark a real folder visited; false when it was already walked (loop or second link). */
  enter(st: Stats, rel: Buffer): boolean {
    const key = `${st.dev}:${st.ino}`;
    if (this.visited.has(key)) {
      this.warnings.push(`${displayBytes(rel) || '.'}: folder already visited through another path (symlink loop or repeated link), skipped`);
      return false;
    }
    this.visited.add(key);
    return true;
  }

  abs(rel: Buffer): Buffer {
    return rel.length === 0 ? this.rootAbs : Buffer.concat([this.rootAbs, SEP, rel]);
  }

  /** List a folder: sorted (by bytes) sub-folders and files, symlinks resolved. */
  async list(rel: Buffer): Promise<{ dirs: { name: Buffer; st: Stats }[]; files: Buffer[] }> {
    const dirs: { name: Buffer; st: Stats }[] = [];
    const files: Buffer[] = [];
    let ents: Dirent<Buffer>[];
    try {
      ents = (await readdir(this.abs(rel), { withFileTypes: true, encoding: 'buffer' })) as Dirent<Buffer>[];
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      const reason = code === 'EACCES' || code === 'EPERM' ? 'permission denied (folder skipped)' : `cannot read folder (${code})`;
      this.errors.push({ path: displayBytes(rel) || '.', reason });
      // A whole folder left out is said at once, not only in errors.jsonl.
      this.warnings.push(`${displayBytes(rel) || '.'}: ${reason}`);
      return { dirs, files };
    }
    ents.sort((a, b) => Buffer.compare(a.name, b.name));
    // Folders and other symlinks need a stat (what a link points to; a folder's identity for loop
    // checks). They are stat'ed in parallel (bounded), then taken in name order. A symlink named like
    // an image is taken as an image file unstat'ed: reading it finds out what it points to (a broken
    // or looping link, or one to a folder, is then reported for that image by the decoder): a symlink
    // farm of thousands of images (a common way to make splits) lists several times faster so.
    const kept = ents.filter((d) => !this.hidden(d.name) && (d.isDirectory() || d.isFile() || d.isSymbolicLink()));
    const stats: (Stats | NodeJS.ErrnoException | null)[] = new Array(kept.length).fill(null);
    const asFile = (d: Dirent<Buffer>) => d.isFile() || (d.isSymbolicLink() && this.isImageName(d.name));
    const toStat = kept.map((d, i) => i).filter((i) => !asFile(kept[i]));
    for (let k = 0; k < toStat.length; k += STAT_CHUNK) {
      await Promise.all(
        toStat.slice(k, k + STAT_CHUNK).map(async (i) => {
          try {
            stats[i] = await stat(this.abs(join(rel, kept[i].name)));
          } catch (e) {
            if (kept[i].isDirectory()) throw e; // a folder that vanished mid-listing: as before, fatal
            stats[i] = e as NodeJS.ErrnoException;
          }
        }),
      );
    }
    kept.forEach((d, i) => {
      const name = d.name;
      const st = stats[i];
      if (asFile(d)) files.push(name);
      else if (d.isDirectory()) dirs.push({ name, st: st as Stats });
      else if (st instanceof Error || st === null) {
        const code = st?.code;
        if (this.isImageName(name) || code === 'ELOOP') this.errors.push({ path: displayBytes(join(rel, name)), reason: code === 'ELOOP' ? 'symlink loop' : 'broken symlink' });
      } else if (st.isDirectory()) dirs.push({ name, st });
      else if (st.isFile()) files.push(name);
    });
    return { dirs, files };
  }

  /** Every image under rel (recursively), with the given label/split. Returns how many were found. */
  async collect(rel: Buffer, st: Stats, label: string | null, split: Split | null, out: RawEntry[]): Promise<number> {
    if (!this.enter(st, rel)) return 0;
    const { dirs, files } = await this.list(rel);
    let n = 0;
    for (const f of files) {
      if (!this.isImageName(f)) {
        this.skippedFiles++;
        continue;
      }
      const r = join(rel, f);
      out.push({ rel: r, abs: this.abs(r), label, split });
      n++;
    }
    for (const d of dirs) n += await this.collect(join(rel, d.name), d.st, label, split, out);
    return n;
  }
}

function finish(rootAbs: string, kind: DatasetKind, raw: RawEntry[], w: { errors: DiscoverIssue[]; warnings: string[]; skippedFiles: number }, emptyClasses: string[], opts: DiscoverOptions, sort = true): Dataset {
  if (sort) raw.sort((a, b) => Buffer.compare(a.rel, b.rel));
  const labels = [...new Set(raw.map((r) => r.label).filter((l): l is string => l !== null))].sort(compareStrings);
  const index = new Map(labels.map((l, i) => [l, i]));
  const entries: DatasetEntry[] = raw.map((r) => {
    const ok = isUtf8(r.abs);
    const e: DatasetEntry = {
      path: displayBytes(r.rel),
      abs: ok ? r.abs.toString('utf8') : displayBytes(r.abs),
      label: r.label,
      labelIndex: r.label === null ? null : (index.get(r.label) ?? null),
      split: r.split,
    };
    if (!ok) e.absBytes = r.abs;
    return e;
  });
  for (const c of emptyClasses) w.warnings.push(`class folder ${c} has no images`);
  if (entries.length === 0 && !opts.allowEmpty) {
    const exts = (opts.extensions ?? DEFAULT_EXTENSIONS).join(',');
    const other = w.skippedFiles > 0 ? `; ${w.skippedFiles} other file(s) did not match the extensions ${exts}` : '';
    const errs = w.errors.length > 0 ? `; ${w.errors.length} unusable entr${w.errors.length === 1 ? 'y' : 'ies'} (first: ${w.errors[0].path}: ${w.errors[0].reason})` : '';
    throw new XferError(`${rootAbs}: empty dataset, no images found${other}${errs}`, {
      hint: kind === 'list' ? 'check the paths in the list file (relative to its folder)' : `expected root/<class>/*.jpg, root/<split>/<class>/*.jpg or a folder of images (extensions: ${exts})`,
    });
  }
  return { root: rootAbs, kind, entries, labels, errors: w.errors, emptyClasses, warnings: w.warnings, skippedFiles: w.skippedFiles };
}

/** Code-point order (locale-independent). */
export function compareStrings(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/** Discover the images of a dataset folder or list file. */
export async function discoverDataset(root: string, opts: DiscoverOptions = {}): Promise<Dataset> {
  const rootAbs = path.resolve(root);
  let st: Stats;
  try {
    st = await stat(rootAbs);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new XferError(`${root}: dataset not found (${code})`, { hint: 'pass an image folder (root/<class>/*.jpg) or a CSV/JSONL list file' });
  }
  const kind = opts.kind ?? 'auto';
  if (st.isFile() || kind === 'list') {
    if (!st.isFile()) throw new XferError(`${root}: a list file was asked for, but this is a folder`);
    return discoverList(rootAbs, opts);
  }
  if (!st.isDirectory()) throw new XferError(`${root}: not a folder or a list file`);

  const w = new Walker(Buffer.from(rootAbs), opts);
  const raw: RawEntry[] = [];
  const emptyClasses: string[] = [];
  const top = await w.list(Buffer.alloc(0));
  const topImages = top.files.filter((f) => w.isImageName(f));
  let resolved: DatasetKind = kind === 'auto' ? (topImages.length === 0 && top.dirs.length > 0 ? 'imagefolder' : 'flat') : kind;

  if (resolved === 'flat') {
    await w.collect(Buffer.alloc(0), st, null, null, raw);
    return finish(rootAbs, 'flat', raw, w, emptyClasses, opts);
  }

  w.enter(st, Buffer.alloc(0));
  for (const f of top.files) {
    if (w.isImageName(f)) w.errors.push({ path: displayBytes(f), reason: 'not inside a class folder (ignored)' });
    else w.skippedFiles++;
  }
  const splitLayout = top.dirs.length > 0 && top.dirs.every((d) => SPLIT_NAMES[d.name.toString('latin1').toLowerCase()] !== undefined);
  const classFolders = async (rel: Buffer, dirs: { name: Buffer; st: Stats }[], split: Split | null) => {
    for (const d of dirs) {
      const label = displayBytes(d.name);
      const n = await w.collect(join(rel, d.name), d.st, label, split, raw);
      if (n === 0) emptyClasses.push(split ? `${displayBytes(rel)}/${label}` : label);
    }
  };
  if (splitLayout) {
    for (const sd of top.dirs) {
      const split = SPLIT_NAMES[sd.name.toString('latin1').toLowerCase()];
      if (!w.enter(sd.st, sd.name)) continue;
      const inner = await w.list(sd.name);
      const innerImages = inner.files.filter((f) => w.isImageName(f));
      if (innerImages.length > 0) {
        // root/<split>/*.jpg: unlabelled images of that split (sub-folders too).
        for (const f of inner.files) {
          if (!w.isImageName(f)) {
            w.skippedFiles++;
            continue;
          }
          const r = join(sd.name, f);
          raw.push({ rel: r, abs: w.abs(r), label: null, split });
        }
        for (const d of inner.dirs) await w.collect(join(sd.name, d.name), d.st, null, split, raw);
      } else {
        w.skippedFiles += inner.files.length;
        await classFolders(sd.name, inner.dirs, split);
      }
    }
  } else {
    await classFolders(Buffer.alloc(0), top.dirs, null);
  }
  resolved = raw.some((r) => r.label !== null) || raw.length === 0 ? 'imagefolder' : 'flat';
  return finish(rootAbs, resolved, raw, w, emptyClasses, opts);
}

/** Parse CSV text (RFC 4180: quotes, "" escapes, CRLF). Returns rows with their 1-based line numbers. */
export function parseCsv(text: string): { line: number; cells: string[] }[] {
  const rows: { line: number; cells: string[] }[] = [];
  let cells: string[] = [];
  let cell = '';
  let quoted = false;
  let line = 1;
  let rowLine = 1;
  const endRow = () => {
    cells.push(cell);
    if (!(cells.length === 1 && cells[0].trim() === '')) rows.push({ line: rowLine, cells });
    cells = [];
    cell = '';
  };
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (quoted) {
      if (ch === '"') {
        if (text[i + 1] === '"') {
          cell += '"';
          i++;
        } else quoted = false;
      } else {
        if (ch === '\n') line++;
        cell += ch;
      }
    } else if (ch === '"' && cell.trim() === '') {
      quoted = true;
      cell = '';
    } else if (ch === ',') {
      cells.push(cell);
      cell = '';
    } else if (ch === '\n' || ch === '\r') {
      if (ch === '\r' && text[i + 1] === '\n') i++;
      endRow();
      line++;
      rowLine = line;
    } else cell += ch;
  }
  if (cell !== '' || cells.length > 0) endRow();
  return rows;
}

interface ListRow {
  where: string;
  path: unknown;
  label: unknown;
  split: unknown;
}

async function discoverList(file: string, opts: DiscoverOptions): Promise<Dataset> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new XferError(`${file}: cannot read list file (${(e as NodeJS.ErrnoException).code})`);
  }
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  const base = path.basename(file);
  const ext = path.extname(file).toLowerCase();
  const rows: ListRow[] = [];
  const errors: DiscoverIssue[] = [];
  if (ext === '.jsonl' || ext === '.ndjson') {
    text.split('\n').forEach((ln, i) => {
      if (ln.trim() === '') return;
      const where = `${base}:${i + 1}`;
      let o: unknown;
      try {
        o = JSON.parse(ln);
      } catch {
        errors.push({ path: where, reason: 'invalid JSON line' });
        return;
      }
      if (typeof o !== 'object' || o === null || Array.isArray(o)) {
        errors.push({ path: where, reason: 'line is not a JSON object with "path"' });
        return;
      }
      const r = o as Record<string, unknown>;
      rows.push({ where, path: r.path, label: r.label, split: r.split });
    });
  } else if (ext === '.csv' || ext === '.txt' || ext === '.tsv') {
    const parsed = parseCsv(text);
    if (parsed.length === 0) throw new XferError(`${file}: empty list file`, { hint: 'a CSV list starts with the header path,label[,split]' });
    const header = parsed[0].cells.map((h) => h.trim().toLowerCase());
    const pi = header.indexOf('path');
    if (pi < 0) throw new XferError(`${file}: CSV header has no "path" column (got: ${parsed[0].cells.join(',')})`, { hint: 'the first line must be path,label[,split]' });
    const li = header.indexOf('label');
    const si = header.indexOf('split');
    for (const r of parsed.slice(1)) {
      rows.push({ where: `${base}:${r.line}`, path: r.cells[pi], label: li >= 0 ? r.cells[li] : undefined, split: si >= 0 ? r.cells[si] : undefined });
    }
  } else {
    throw new XferError(`${file}: unknown list file type "${ext}"`, { hint: 'use a .csv (header path,label[,split]) or .jsonl file, or pass an image folder' });
  }

  const dir = path.dirname(file);
  const raw: RawEntry[] = [];
  const rowOf = new Map<RawEntry, ListRow>();
  const seen = new Set<string>();
  const check = async (r: ListRow): Promise<void> => {
    if (typeof r.path !== 'string' || r.path.trim() === '') {
      errors.push({ path: r.where, reason: 'missing "path"' });
      return;
    }
    const p = r.path.trim();
    const abs = path.resolve(dir, p);
    const rel = path.relative(dir, abs);
    if (rel === '' || rel === '..' || rel.startsWith(`..${path.sep}`) || path.isAbsolute(rel)) {
      errors.push({ path: p, reason: "outside the list file's folder (refused)" });
      return;
    }
    const relPosix = rel.split(path.sep).join('/');
    let label: string | null = null;
    if (r.label !== undefined && r.label !== null && String(r.label).trim() !== '') label = String(r.label).trim();
    let split: Split | null = null;
    if (r.split !== undefined && r.split !== null && String(r.split).trim() !== '') {
      const s = SPLIT_NAMES[String(r.split).trim().toLowerCase()];
      if (!s) {
        errors.push({ path: relPosix, reason: `unknown split "${String(r.split)}" (use train, val or test)` });
        return;
      }
      split = s;
    }
    let st: Stats;
    try {
      st = await stat(abs);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      errors.push({ path: relPosix, reason: code === 'ENOENT' ? 'file not found' : code === 'EACCES' ? 'permission denied' : `cannot access (${code})` });
      return;
    }
    if (!st.isFile()) {
      errors.push({ path: relPosix, reason: 'not a file' });
      return;
    }
    const entry: RawEntry = { rel: Buffer.from(relPosix), abs: Buffer.from(abs), label, split };
    raw.push(entry);
    rowOf.set(entry, r);
  };
  // Bounded parallelism for the stats.
  for (let i = 0; i < rows.length; i += 64) await Promise.all(rows.slice(i, i + 64).map(check));
  // The stats finish in any order: of two copies of a path the earlier line is kept, whichever stat came back first.
  const line = new Map(rows.map((r, i) => [r, i]));
  raw.sort((a, b) => Buffer.compare(a.rel, b.rel) || line.get(rowOf.get(a)!)! - line.get(rowOf.get(b)!)!);
  const dedup = raw.filter((r) => {
    const k = r.rel.toString('utf8');
    if (seen.has(k)) {
      errors.push({ path: k, reason: 'listed more than once (later copy ignored)' });
      return false;
    }
    seen.add(k);
    return true;
  });
  errors.sort((a, b) => compareStrings(a.path, b.path));
  return finish(file, 'list', dedup, { errors, warnings: [], skippedFiles: 0 }, [], opts, false);
}

/** An image named on the command line: its display path and what to open (a Buffer for non-UTF-8 names). */
export interface ImageArg {
  path: string;
  source: string | Buffer;
}

/** Expand command-line arguments: files as given; folders → their images (recursive, sorted). */
export async function expandImageArgs(args: string[]): Promise<ImageArg[]> {
  const out: ImageArg[] = [];
  for (const a of args) {
    let isDir = false;
    try {
      isDir = (await stat(a)).isDirectory();
    } catch {
      // Missing files are reported per image by the decoder ("file not found").
    }
    if (!isDir) {
      out.push({ path: a, source: a });
      continue;
    }
    const ds = await discoverDataset(a, { kind: 'flat' });
    for (const e of ds.entries) out.push({ path: path.join(a, e.path), source: entrySource(e) });
  }
  return out;
}
