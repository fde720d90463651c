/** Feature writer, shard splitting and job files (no model needed). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFile, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { FeatureWriter, assignLayerDirs, metaFingerprint, paddedNpyHeader, type FeatureMeta, type FeatureMetaInit, type WriterIO } from '../src/features/writer.js';
import { loadRows, openFeatures } from '../src/features/reader.js';
import { inferencePlan } from '../src/extract/pipeline.js';
import { parseNpyHeader, readNpy } from '../src/features/npy.js';
import { parseShardSpec, resolveShardSpec, shardRange, expandOutPattern } from '../src/extract/shard.js';
import { parseJobs } from '../src/extract/jobs.js';
import { XferError } from '../src/errors.js';
import { tmpDir } from './extract-helpers.js';

function init(over: Partial<FeatureMetaInit> = {}): FeatureMetaInit {
  return {
    tool_version: '0.1.0',
    model: { id: 'm', sha256: 'a'.repeat(64), file: '/m.onnx' },
    card: { id: 'm' },
    layers: [
      { name: 'feat/a:0', dir: 'feat_a_0', pool: 'avg', shape: [3], dtype: 'float32' },
      { name: 'b', dir: 'b', pool: 'none', shape: [2, 2], dtype: 'float32' },
    ],
    dtype: 'float32',
    preprocessing: { size: [8, 8] },
    counts: { rows_per_shard: 4 },
    data: { root: '/data', kind: 'imagefolder', items: 6, sha256: 'b'.repeat(64) },
    shard: null,
    batch: 2,
    ...over,
  };
}

const rows = (n: number, from = 0) => Array.from({ length: n }, (_, i) => ({ path: `c/${from + i}.jpg`, label: i % 2 ? 'y' : 'x', split: null }));
const feats = (n: number, v: number) => [Float32Array.from({ length: n * 3 }, (_, i) => v + i), Float32Array.from({ length: n * 4 }, (_, i) => -v - i)];

async function writeShard(w: FeatureWriter, k: number, n: number, v: number, errs: string[] = []): Promise<void> {
  const sw = await w.beginShard(k, 4);
  await sw.append(feats(n, v), n, rows(n, k * 4));
  for (const e of errs) sw.error(e, 'bad');
  await sw.commit();
}

test('writer: shards, index, errors, meta; temp files never left behind', async () => {
  const dir = await tmpDir();
  const out = path.join(dir, 'f');
  const w = await FeatureWriter.open(out, init(), ['x', 'y'], { discoveryErrors: [{ path: 'z.jpg', reason: 'not inside a class folder' }] });
  assert.equal((JSON.parse(await readFile(path.join(out, 'meta.json'), 'utf8')) as { complete: boolean }).complete, false);
  await writeShard(w, 0, 3, 1, ['c/3.jpg']);
  await writeShard(w, 1, 2, 100);
  await w.finish();
  const meta = JSON.parse(await readFile(path.join(out, 'meta.json'), 'utf8'));
  assert.deepEqual(meta.counts, { images: 5, errors: 2, shards: 2, rows_per_shard: 4 });
  assert.equal(meta.complete, true);
  assert.deepEqual(Object.keys(meta).slice(0, 4), ['format', 'format_version', 'tool_version', 'model']);
  const a0 = await readNpy(path.join(out, 'feat_a_0', '00000.npy'));
  assert.deepEqual(a0.shape, [3, 3]);
  assert.deepEqual([...new Float32Array(Uint8Array.from(a0.bytes).buffer)], [1, 2, 3, 4, 5, 6, 7, 8, 9]);
  const b1 = await readNpy(path.join(out, 'b', '00001.npy'));
  assert.deepEqual(b1.shape, [2, 2, 2]);
  const index = (await readFile(path.join(out, 'index.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(index.map((r) => [r.row, r.shard, r.shard_row, r.label_index]), [
    [0, 0, 0, 0],
    [1, 0, 1, 1],
    [2, 0, 2, 0],
    [3, 1, 0, 0],
    [4, 1, 1, 1],
  ]);
  const errors = (await readFile(path.join(out, 'errors.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(errors, [
    { path: 'z.jpg', reason: 'not inside a class folder', shard: null },
    { path: 'c/3.jpg', reason: 'bad', shard: 0 },
  ]);
  for (const d of ['feat_a_0', 'b', '.']) assert.deepEqual((await readdir(path.join(out, d))).filter((f) => f.includes('.tmp')), []);
  await rm(dir, { recursive: true, force: true });
});

test('writer: padded header keeps the reserved length and stays a valid .npy header', () => {
  const full = paddedNpyHeader('float32', [1024, 1280], 128);
  assert.equal(full.length, 128);
  const h = paddedNpyHeader('float16', [7, 1280], 128);
  assert.equal(h.length, 128);
  const p = parseNpyHeader(h);
  assert.deepEqual(p.shape, [7, 1280]);
  assert.equal(p.dtype, 'float16');
  assert.equal(p.dataOffset, 128);
});

test('writer: resume discards an uncommitted shard, half-written lines and temp files', async () => {
  const dir = await tmpDir();
  const out = path.join(dir, 'f');
  const w = await FeatureWriter.open(out, init(), ['x', 'y']);
  await writeShard(w, 0, 4, 1);
  // Simulate a crash in the middle of committing shard 1: .npy renamed, index half appended, meta not updated.
  const sw = await w.beginShard(1, 4);
  await sw.append(feats(2, 5), 2, rows(2, 4));
  await writeFile(path.join(out, 'b', '00001.npy'), 'partial');
  await appendFile(path.join(out, 'index.jsonl'), '{"row":4,"path":"c/4.jpg","label":"x","label_index":0,"split":null,"shard":1,"shard_row":0}\n{"row":5,"pa');
  await appendFile(path.join(out, 'errors.jsonl'), '{"path":"c/9.jpg","reason":"bad","shard":1}\n');
  const again = await FeatureWriter.open(out, init(), ['x', 'y'], { resume: true });
  assert.deepEqual(again.resumed, { shards: 1, images: 4, errors: 0 });
  assert.equal((await readFile(path.join(out, 'index.jsonl'), 'utf8')).trim().split('\n').length, 4);
  assert.equal(await readFile(path.join(out, 'errors.jsonl'), 'utf8'), '');
  assert.deepEqual((await readdir(path.join(out, 'b'))).sort(), ['00000.npy']);
  assert.deepEqual((await readdir(path.join(out, 'feat_a_0'))).sort(), ['00000.npy']);
  await writeShard(again, 1, 2, 5);
  await again.finish();
  assert.equal(again.counts.images, 6);
  await sw.abort(); // the "crashed" run's files are still open in this process: close them (its temp files are gone already)
  await rm(dir, { recursive: true, force: true });
});

test('writer: refuses different features unless overwrite; refuses foreign folders', async () => {
  const dir = await tmpDir();
  const out = path.join(dir, 'f');
  const w = await FeatureWriter.open(out, init(), ['x', 'y']);
  await writeShard(w, 0, 1, 1);
  const other = init({ model: { id: 'other', sha256: 'c'.repeat(64), file: '/o.onnx' } });
  await assert.rejects(FeatureWriter.open(out, other, ['x', 'y'], { resume: true }), (e: XferError) => /different features \(model m .* vs other/.test(e.message) && e.exitCode === 2);
  await assert.rejects(FeatureWriter.open(out, init(), ['x', 'y']), /unfinished extraction.*/);
  const w2 = await FeatureWriter.open(out, other, ['x', 'y'], { overwrite: true });
  assert.equal(w2.counts.shards, 0);
  assert.deepEqual((await readdir(path.join(out, 'b'))).length, 0);
  await writeFile(path.join(dir, 'notes.txt'), 'x');
  await assert.rejects(FeatureWriter.open(dir, init(), ['x', 'y'], { overwrite: true }), /not an xfer feature folder/);
  await rm(dir, { recursive: true, force: true });
});

test('writer: a failing write (ENOSPC) gives one clear error and keeps committed shards', async () => {
  const dir = await tmpDir();
  const out = path.join(dir, 'f');
  let budget = Infinity;
  const io: WriterIO = {
    async write(fh, data, position) {
      if (data.length > budget) throw Object.assign(new Error('no space left on device'), { code: 'ENOSPC' });
      budget -= data.length;
      await fh.write(data, 0, data.length, position);
    },
  };
  const w = await FeatureWriter.open(out, init(), ['x', 'y'], { io });
  await writeShard(w, 0, 4, 1);
  budget = 20;
  await assert.rejects(writeShard(w, 1, 4, 9), (e: XferError) => {
    assert.match(e.message, /disk full \(ENOSPC\) while writing shard 1; 1 finished shard\(s\) \(4 images\) are kept/);
    assert.match(e.hint ?? '', /--resume/);
    assert.equal(e.exitCode, 1);
    return true;
  });
  for (const d of ['feat_a_0', 'b']) assert.deepEqual((await readdir(path.join(out, d))).sort(), ['00000.npy']);
  const again = await FeatureWriter.open(out, init(), ['x', 'y'], { resume: true });
  assert.equal(again.counts.shards, 1);
  await rm(dir, { recursive: true, force: true });
});

test('layer dirs are folder-safe and unique', () => {
  assert.deepEqual(assignLayerDirs(['a/b:0', 'a_b_0', 'x', '..', 'meta.json']), ['a_b_0', 'a_b_0_2', 'x', '_..', 'meta.json_2']);
});

test('shard specs: flag, Kubernetes and Slurm environments, ranges', () => {
  assert.deepEqual(parseShardSpec('1/4'), { index: 1, count: 4, source: '--shard' });
  assert.throws(() => parseShardSpec('4/4'), /0\.\.n-1/);
  assert.throws(() => parseShardSpec('a/b'), /expected i\/n/);
  assert.equal(resolveShardSpec(undefined, {}), null);
  assert.deepEqual(resolveShardSpec(undefined, { JOB_COMPLETION_INDEX: '2', XFER_SHARDS: '3' })?.index, 2);
  assert.throws(() => resolveShardSpec(undefined, { JOB_COMPLETION_INDEX: '2' }), /XFER_SHARDS/);
  const slurm = resolveShardSpec(undefined, { SLURM_ARRAY_TASK_ID: '5', SLURM_ARRAY_TASK_MIN: '4', SLURM_ARRAY_TASK_COUNT: '2' });
  assert.deepEqual([slurm?.index, slurm?.count], [1, 2]);
  assert.equal(resolveShardSpec('0/2', { JOB_COMPLETION_INDEX: '1', XFER_SHARDS: '2' })?.index, 0, 'the flag wins');
  assert.equal(resolveShardSpec(undefined, { JOB_COMPLETION_INDEX: '1', XFER_NO_AUTO_SHARD: '1' }), null);
  // 37 inputs, 8 rows per shard = 5 shards; 2 parts: shards [0,2) and [2,5).
  assert.deepEqual(shardRange(37, 8, null), { firstShard: 0, shards: 5, totalShards: 5, firstItem: 0, items: 37 });
  assert.deepEqual(shardRange(37, 8, parseShardSpec('0/2')), { firstShard: 0, shards: 2, totalShards: 5, firstItem: 0, items: 16 });
  assert.deepEqual(shardRange(37, 8, parseShardSpec('1/2')), { firstShard: 2, shards: 3, totalShards: 5, firstItem: 16, items: 21 });
  assert.deepEqual(shardRange(3, 8, parseShardSpec('0/2')), { firstShard: 0, shards: 0, totalShards: 1, firstItem: 0, items: 0 });
  // Every input is covered exactly once for any n.
  for (const n of [1, 2, 3, 7, 13]) {
    let next = 0;
    for (let i = 0; i < n; i++) {
      const r = shardRange(1000, 64, parseShardSpec(`${i}/${n}`));
      assert.equal(r.firstItem, next);
      next += r.items;
    }
    assert.equal(next, 1000);
  }
  assert.equal(expandOutPattern('feat/part-{shard}-of-{shards}', parseShardSpec('1/3')), 'feat/part-1-of-3');
});

test('job files: defaults, relative paths, validation', () => {
  const jobs = parseJobs(
    { defaults: { batch: 16, dtype: 'float16' }, jobs: [{ model: 'mobilenet_v2', layers: 'a, b', data: 'd', out: 'o1' }, { name: 'two', model: './m.onnx', card: 'c.json', data: '/abs/d.csv', out: 'o2', batch: 8 }] },
    '/work/jobs/x.yaml',
  );
  assert.deepEqual(jobs[0].layers, ['a', 'b']);
  assert.equal(jobs[0].model, 'mobilenet_v2');
  assert.equal(jobs[0].data, '/work/jobs/d');
  assert.equal(jobs[0].batch, 16);
  assert.equal(jobs[0].dtype, 'float16');
  assert.equal(jobs[1].model, '/work/jobs/m.onnx');
  assert.equal(jobs[1].card, '/work/jobs/c.json');
  assert.equal(jobs[1].data, '/abs/d.csv');
  assert.equal(jobs[1].batch, 8);
  assert.throws(() => parseJobs({ jobs: [{ model: 'm', data: 'd' }] }, 'j.yaml'), /job 1: missing "out"/);
  assert.throws(() => parseJobs({ jobs: [{ model: 'm', data: 'd', out: 'o', bacth: 3 }] }, 'j.yaml'), /unknown key\(s\) bacth/);
  assert.throws(() => parseJobs([{ model: 'm', data: 'd', out: 'o' }, { model: 'n', data: 'd', out: 'o' }], 'j.yaml'), /same out/);
  assert.throws(() => parseJobs({ jobs: [] }, 'j.yaml'), /no jobs/);
});

test('reader: takes only the committed rows and shards, refuses an unfinished folder', async () => {
  const dir = await tmpDir();
  const out = path.join(dir, 'f');
  const w = await FeatureWriter.open(out, init(), ['x', 'y']);
  await writeShard(w, 0, 4, 1);
  await w.finish();
  // Leftovers of a commit cut short (kill -9 between index append and meta.json): not committed.
  await appendFile(path.join(out, 'index.jsonl'), '{"row":4,"path":"c/4.jpg","label":"x","label_index":0,"split":null,"shard":1,"shard_row":0}\n');
  await writeFile(path.join(out, 'b', '00001.npy'), 'partial');
  const f = await openFeatures(out);
  assert.equal(f.index.length, 4);
  const L = await loadRows(f, [f.meta.layers[0]], [3, 0]);
  assert.deepEqual([...L.X], [10, 11, 12, 1, 2, 3]);
  // complete: false → refused with the resume hint
  const m = JSON.parse(await readFile(path.join(out, 'meta.json'), 'utf8')) as FeatureMeta;
  await writeFile(path.join(out, 'meta.json'), JSON.stringify({ ...m, complete: false }));
  await assert.rejects(openFeatures(out), (e: XferError) => {
    assert.equal(e.message, `${out}: extraction not complete (4 of 6 images)`);
    assert.match(e.hint ?? '', /xfer extract \.\.\. --resume/);
    return true;
  });
  await writeFile(path.join(out, 'meta.json'), JSON.stringify({ ...m, format: 'something-else' }));
  await assert.rejects(openFeatures(out), /meta\.json: not an xfer feature folder/);
  const { counts: _c, ...noCounts } = m;
  await writeFile(path.join(out, 'meta.json'), JSON.stringify(noCounts));
  await assert.rejects(openFeatures(out), /meta\.json: no valid "counts"/);
  await rm(dir, { recursive: true, force: true });
});

test('writer: resume removes temp files of interrupted meta.json/index.jsonl replacements', async () => {
  const dir = await tmpDir();
  const out = path.join(dir, 'f');
  const w = await FeatureWriter.open(out, init(), ['x', 'y']);
  await writeShard(w, 0, 4, 1);
  for (const f of ['.meta.json.tmp-123-0-abcd1234', '.index.jsonl.tmp-9-1-00ff00ff', '.meta.json.tmp']) await writeFile(path.join(out, f), '{');
  await writeFile(path.join(out, '.keep.tmp-1'), 'not ours');
  const again = await FeatureWriter.open(out, init(), ['x', 'y'], { resume: true });
  assert.equal(again.counts.shards, 1);
  assert.deepEqual((await readdir(out)).filter((f) => f.startsWith('.')), ['.keep.tmp-1']);
  await rm(dir, { recursive: true, force: true });
});

test('writer: a meta.json without model/counts is refused naming the file', async () => {
  const dir = await tmpDir();
  const out = path.join(dir, 'f');
  const w = await FeatureWriter.open(out, init(), ['x', 'y']);
  await writeShard(w, 0, 1, 1);
  await writeFile(path.join(out, 'meta.json'), JSON.stringify({ format: 'xfer-features', layers: [] }));
  await assert.rejects(FeatureWriter.open(out, init(), ['x', 'y'], { resume: true }), (e: XferError) => {
    assert.equal(e.message, `${path.join(out, 'meta.json')} is not an xfer feature folder's meta (missing model/counts/data)`);
    return true;
  });
  assert.throws(() => metaFingerprint({} as FeatureMeta, 'p/meta.json'), /^XferError: p\/meta\.json is not an xfer feature folder's meta/);
  await rm(dir, { recursive: true, force: true });
});

test('shard specs: Slurm array step and an ID below MIN', () => {
  // --array=10-16:3 → IDs 10, 13, 16 = parts 0, 1, 2 of 3
  const at = (id: string) => resolveShardSpec(undefined, { SLURM_ARRAY_TASK_ID: id, SLURM_ARRAY_TASK_MIN: '10', SLURM_ARRAY_TASK_STEP: '3', SLURM_ARRAY_TASK_COUNT: '3' });
  assert.deepEqual([at('10')?.index, at('13')?.index, at('16')?.index], [0, 1, 2]);
  assert.throws(() => at('11'), /not MIN \+ k·STEP/);
  assert.throws(() => resolveShardSpec(undefined, { SLURM_ARRAY_TASK_ID: '2', SLURM_ARRAY_TASK_MIN: '4', SLURM_ARRAY_TASK_COUNT: '2' }), (e: XferError) => {
    assert.equal(e.message, 'SLURM_ARRAY_TASK_ID=2 is below SLURM_ARRAY_TASK_MIN=4');
    return true;
  });
  assert.throws(() => resolveShardSpec(undefined, { SLURM_ARRAY_TASK_ID: 'x', SLURM_ARRAY_TASK_COUNT: '2' }), /SLURM_ARRAY_TASK_ID: expected a non-negative integer, got "x"/);
  assert.throws(() => parseJobs({ jobs: [{ model: 'm', data: 'd', out: 'o', batch: 'many' }] }, 'j.yaml'), /job 1: "batch": expected a positive integer, got "many"/);
});

test('inferencePlan: two single-thread sessions on a 2-core CPU, up to four sessions of about four threads on more cores, one session on a GPU, --workers/--threads honoured', () => {
  const cpu2 = { cores: 2, cudaInstalled: false };
  assert.deepEqual(inferencePlan({ device: { device: 'auto' } }, cpu2), { workers: 2, threads: 1, gpu: false });
  assert.deepEqual(inferencePlan({ device: { device: 'cpu' } }, { cores: 8, cudaInstalled: true }), { workers: 2, threads: 4, gpu: false });
  assert.deepEqual(inferencePlan({ device: { device: 'cpu' } }, { cores: 4 }), { workers: 2, threads: 2, gpu: false });
  assert.deepEqual(inferencePlan({ device: { device: 'cpu' } }, { cores: 16 }), { workers: 4, threads: 4, gpu: false });
  assert.deepEqual(inferencePlan({ device: { device: 'cpu' } }, { cores: 64 }), { workers: 4, threads: 16, gpu: false }, 'at most 4 copies of the weights');
  assert.deepEqual(inferencePlan({ device: { device: 'cuda' } }, { cores: 64 }), { workers: 1, threads: 4, gpu: true }, 'a GPU run leaves the cores to decoding');
  assert.deepEqual(inferencePlan({ device: { device: 'auto' } }, { cores: 2, cudaInstalled: true }), { workers: 1, threads: 2, gpu: true });
  assert.deepEqual(inferencePlan({ device: { device: 'cuda:1' } }, cpu2).workers, 1);
  assert.deepEqual(inferencePlan({ device: { device: 'cuda:1' } }, cpu2).gpu, true);
  assert.deepEqual(inferencePlan({ device: { device: 'auto', threads: 2 }, workers: 1 }, cpu2), { workers: 1, threads: 2, gpu: false });
  assert.deepEqual(inferencePlan({ device: { device: 'cpu' }, backboneThread: 'inline' }, cpu2), { workers: 1, threads: 2, gpu: false });
  assert.deepEqual(inferencePlan({}, { cores: 1, cudaInstalled: false }), { workers: 1, threads: 1, gpu: false });
});
