/**
 * `xfer merge <out> <part dirs...>`: combine the outputs of `--shard i/n` runs into one feature
 * folder identical to a single-process run: the parts' .npy files are copied unchanged (renumbered
 * to their global shard numbers), index.jsonl rows are renumbered, errors.jsonl lines keep the
 * single run's order, and meta.json describes the whole run.
 *
 * A merge that failed or was interrupted leaves `<out>` unfinished (meta.json `complete: false`);
 * running the same merge again starts it over (the parts are unchanged). A complete `<out>`, or one
 * holding other features, is replaced only with `--overwrite`.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { XferError } from '../errors.js';
import { FEATURE_FORMAT, FeatureWriter, metaFingerprint, sameFolderWeights, shardFileName, type FeatureMeta } from '../features/writer.js';
import { writeFileAtomic } from '../util/atomic.js';
import { withFolderLock, type FolderLock } from '../util/lock.js';
import { checkFeatureFolderPaths } from '../features/paths.js';

export interface MergeSummary {
  out: string;
  parts: number;
  images: number;
  errors: number;
  shards: number;
}

interface Part {
  dir: string;
  meta: FeatureMeta;
  labels: string;
  index: Record<string, unknown>[];
  errors: Record<string, unknown>[];
}

/** Read a file of part `dir`, naming the part when it cannot be read. */
async function readPartFile(dir: string, name: string): Promise<string> {
  try {
    return await readFile(path.join(dir, name), 'utf8');
  } catch (e) {
    throw new XferError(`${dir}: cannot read ${name} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, {
      hint: 'the part is incomplete or damaged; re-run that shard with `xfer extract ... --resume` (or --overwrite)',
      cause: e,
    });
  }
}

async function readJsonl(dir: string, name: string): Promise<Record<string, unknown>[]> {
  const file = path.join(dir, name);
  const text = await readPartFile(dir, name);
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l, i) => {
      try {
        return JSON.parse(l) as Record<string, unknown>;
      } catch {
        throw new XferError(`${file}:${i + 1}: not valid JSON`, { hint: 'the part is damaged; re-run that shard with --resume or --overwrite' });
      }
    });
}

async function readPart(dir: string): Promise<Part> {
  let meta: FeatureMeta;
  try {
    meta = JSON.parse(await readFile(path.join(dir, 'meta.json'), 'utf8')) as FeatureMeta;
  } catch (e) {
    throw new XferError(`${dir}: not a feature folder (meta.json: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, { hint: 'pass the --out folders of the `xfer extract --shard i/n` runs' });
  }
  if (!meta || meta.format !== FEATURE_FORMAT) throw new XferError(`${dir}/meta.json: not an xfer feature folder`, { hint: 'pass the --out folders of the `xfer extract --shard i/n` runs' });
  metaFingerprint(meta, `${dir}/meta.json`); // refuses a meta without model/layers/counts/data, naming the part
  await checkFeatureFolderPaths(dir, meta);
  if (!meta.complete) throw new XferError(`${dir}: extraction is not complete (${meta.counts.images} images so far)`, { hint: 'finish it with `xfer extract ... --resume` first' });
  return {
    dir,
    meta,
    labels: await readPartFile(dir, 'labels.json'),
    index: await readJsonl(dir, 'index.jsonl'),
    errors: await readJsonl(dir, 'errors.jsonl'),
  };
}

/** Merge the parts of a sharded run into `out` (which must not already hold features unless `overwrite`). */
export async function mergeFeatureFolders(out: string, dirs: string[], opts: { overwrite?: boolean } = {}): Promise<MergeSummary> {
  if (dirs.length === 0) throw new XferError('xfer merge: no part folders given', { hint: 'xfer merge <out> <part0> <part1> ...' });
  const outAbs = path.resolve(out);
  // <out> is locked for the whole merge (util/lock.ts): a second writer is refused.
  return withFolderLock(outAbs, 'xfer merge', (lock) => mergeLocked(out, outAbs, dirs, opts, lock), '');
}

async function mergeLocked(out: string, outAbs: string, dirs: string[], opts: { overwrite?: boolean }, lock: FolderLock): Promise<MergeSummary> {
  const parts: Part[] = [];
  for (const d of dirs) {
    const abs = path.resolve(d);
    if (abs === outAbs) throw new XferError(`xfer merge: the output ${out} is also listed as a part`);
    parts.push(await readPart(abs));
  }
  // Unsharded parts (shard: null) merge only as a single part (a plain copy).
  const n = parts[0].meta.shard?.count ?? 1;
  const fp = metaFingerprint(parts[0].meta);
  for (const p of parts) {
    if (metaFingerprint(p.meta) !== fp || !sameFolderWeights(p.meta, parts[0].meta)) {
      throw new XferError(`xfer merge: ${p.dir} was extracted with different settings than ${parts[0].dir} (model or its external weights, layers, dtype, preprocessing, rows per shard or input list)`, {
        hint: 'merge only the parts of one `xfer extract --shard i/n` run',
      });
    }
    if ((p.meta.shard?.count ?? 1) !== n) throw new XferError(`xfer merge: ${p.dir} is part ${p.meta.shard ? `${p.meta.shard.index}/${p.meta.shard.count}` : 'of an unsharded run'}, others are of ${n} parts`);
    if (p.labels !== parts[0].labels) throw new XferError(`xfer merge: ${p.dir}/labels.json differs from ${parts[0].dir}/labels.json`);
  }
  parts.sort((a, b) => (a.meta.shard?.index ?? 0) - (b.meta.shard?.index ?? 0));
  const seen = parts.map((p) => p.meta.shard?.index ?? 0);
  const missing = [...Array(n).keys()].filter((i) => !seen.includes(i));
  const dup = seen.filter((v, i) => seen.indexOf(v) !== i);
  if (dup.length > 0) throw new XferError(`xfer merge: part ${dup[0]}/${n} given more than once`);
  if (missing.length > 0) throw new XferError(`xfer merge: missing part(s) ${missing.map((i) => `${i}/${n}`).join(', ')} of ${n}`, { hint: 'run `xfer extract --shard i/n` for them first' });

  const first = parts[0].meta;
  // An unfinished <out> of these features (a merge that failed or was interrupted): start it over.
  let overwrite = opts.overwrite;
  if (!overwrite) {
    const old = await readFile(path.join(outAbs, 'meta.json'), 'utf8').then(
      (t) => JSON.parse(t) as FeatureMeta,
      () => null,
    );
    if (old && old.format === FEATURE_FORMAT && old.complete === false && old.shard === null) {
      let same = false;
      try {
        same = metaFingerprint(old) === fp && sameFolderWeights(old, parts[0].meta);
      } catch {
        same = false;
      }
      overwrite = same;
    }
  }
  const totalShards = first.shard?.total_shards ?? first.counts.shards;
  const labels = JSON.parse(parts[0].labels) as string[];
  const writer = await FeatureWriter.open(
    outAbs,
    {
      tool_version: first.tool_version,
      model: first.model,
      card: first.card,
      layers: first.layers,
      dtype: first.dtype,
      preprocessing: first.preprocessing,
      counts: { rows_per_shard: first.counts.rows_per_shard },
      data: { ...first.data, items: parts.reduce((a, p) => a + p.meta.data.items, 0) },
      shard: null,
      batch: first.batch,
    },
    labels,
    { overwrite, guard: () => lock.assertHeld(), discoveryErrors: parts[0].errors.filter((e) => e.shard === null).map((e) => ({ path: String(e.path), reason: String(e.reason) })) },
  );
  // Copy the shards in global order and commit each like an extraction would.
  let g = 0;
  for (const p of parts) {
    const first = p.meta.shard?.first_shard ?? 0;
    if (first !== g) throw new XferError(`xfer merge: ${p.dir} starts at shard ${first}, expected ${g}`, { hint: 'the parts do not come from one run' });
    for (let k = 0; k < p.meta.counts.shards; k++, g++) {
      const rows = p.index.filter((r) => r.shard === k).map((r) => ({ path: String(r.path), label: (r.label as string | null) ?? null, split: (r.split as string | null) ?? null, ...(typeof r.view === 'number' ? { view: r.view } : {}) }));
      const errs = p.errors.filter((e) => e.shard === k).map((e) => ({ path: String(e.path), reason: String(e.reason) }));
      await writer.adoptShard(g, p.meta.layers.map((l) => path.join(p.dir, l.dir, shardFileName(k))), rows, errs);
    }
  }
  if (g !== totalShards) throw new XferError(`xfer merge: the parts hold ${g} shards, the run has ${totalShards}`);
  await writer.finish();
  // meta.json "created": the earliest part's, so a merge is reproducible.
  const created = parts.map((p) => p.meta.created).sort()[0];
  const meta = JSON.parse(await readFile(path.join(outAbs, 'meta.json'), 'utf8')) as FeatureMeta;
  meta.created = created;
  await writeFileAtomic(path.join(outAbs, 'meta.json'), JSON.stringify(meta, null, 2) + '\n');
  return { out: outAbs, parts: parts.length, images: writer.counts.images, errors: writer.counts.errors, shards: writer.counts.shards };
}
