/**
 * The on-disk tap-model cache (src/model/tap-cache.ts): a second prepare of the same model, card and
 * taps reads the built model instead of building it, anything that changes the built model misses,
 * a damaged entry is rebuilt, a cache that cannot be written changes nothing but speed, and only
 * the most recently used entries are kept.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile, rm, stat, truncate, utimes, writeFile } from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import ort from '../src/model/ort.js';
import { emptyGraph, floatTensor, makeModel, node, valueInfo } from '../src/onnx/builder.js';
import { writeOnnxFile } from '../src/onnx/io.js';
import { DataType } from '../src/onnx/proto.js';
import { resolveBackbone } from '../src/model/registry.js';
import { prepareTappedBackbone } from '../src/model/prepare.js';
import { MAX_ENTRIES, tapCacheKey } from '../src/model/tap-cache.js';
import { buildTapBytes } from '../src/model/tap-model.js';
import type { TapRequest } from '../src/model/taps.js';
import { keepCacheEnv, makeExternalModel, makeTinyModel, tmpDir } from './extract-helpers.js';

let dir: string;
let tiny: { model: string; card: string };
let restoreCache: () => void;
let cache: string;

before(async () => {
  dir = await tmpDir('xfer-tapcache-');
  tiny = await makeTinyModel(dir);
  restoreCache = keepCacheEnv();
});

after(async () => {
  restoreCache();
  await rm(dir, { recursive: true, force: true });
});

/** A prepared tap model's bytes (a cache hit hands over the entry's path). */
async function bytesOf(p: { model: Uint8Array | string }): Promise<Buffer> {
  return typeof p.model === 'string' ? readFile(p.model) : Buffer.from(p.model);
}

/** A fresh, empty cache folder for one test. */
function freshCache(name: string): string {
  cache = path.join(dir, `cache-${name}`);
  process.env.XFER_CACHE = cache;
  return cache;
}

async function entries(): Promise<string[]> {
  try {
    return (await readdir(path.join(cache, 'taps'))).sort();
  } catch {
    return [];
  }
}

async function prepare(taps: TapRequest[] = [{ name: 'relu2', pool: 'avg' }], notices: string[] = [], spec = tiny.model, card = tiny.card) {
  const resolved = await resolveBackbone(spec, { card });
  return prepareTappedBackbone(spec, { resolved, taps, onNotice: (n) => notices.push(n) });
}

/** Ten distinct tap requests on the tiny model (more than the cache keeps). */
const POOLS = ['avg', 'max', 'avgmax', 'flatten', 'none'] as const;
const MANY: TapRequest[][] = [...POOLS.map((pool) => [{ name: 'relu2', pool }]), ...POOLS.map((pool) => [{ name: 'relu1', pool }])];

/**
 * Returns once a file changed now gets a ctime later than `ms`. No tool can set ctime, and the
 * kernel stamps it from a coarse clock, so this waits (for a tick, a few ms at most) on that clock.
 */
async function untilCtimeAfter(ms: number): Promise<void> {
  const probe = path.join(dir, 'ctime-probe');
  for (;;) {
    await writeFile(probe, '');
    if ((await stat(probe)).ctimeMs > ms) return;
  }
}

/** The cache key of a tap request on the tiny model. */
async function tinyKey(taps: TapRequest[]): Promise<string> {
  const resolved = await resolveBackbone(tiny.model, { card: tiny.card });
  return tapCacheKey({ sha256: resolved.sha256, card: resolved.card!, taps, spec: tiny.model, file: resolved.file });
}

test('the second prepare reads the cached tap model: same bytes and taps as a fresh build', async () => {
  freshCache('hit');
  const first = await prepare();
  const files = await entries();
  assert.equal(files.length, 2, files.join(', '));
  assert.ok(files.some((f) => f.endsWith('.onnx')) && files.some((f) => f.endsWith('.json')));
  // Mark the entry: a hit replays the entry's notices, a rebuild would not give this one.
  const json = path.join(cache, 'taps', files.find((f) => f.endsWith('.json'))!);
  const meta = JSON.parse(await readFile(json, 'utf8'));
  await writeFile(json, JSON.stringify({ ...meta, notices: ['from the cache'] }));
  const notices: string[] = [];
  const second = await prepare(undefined, notices);
  assert.deepEqual(notices, ['from the cache'], 'the cached entry was used');
  const resolved = await resolveBackbone(tiny.model, { card: tiny.card });
  const fresh = await buildTapBytes(resolved.file, resolved.card!, [{ name: 'relu2', pool: 'avg' }], tiny.model);
  assert.equal(typeof second.model, 'string', 'a hit hands over the checked entry file');
  assert.deepEqual(await bytesOf(second), Buffer.from(fresh.bytes));
  assert.deepEqual(second.taps, fresh.taps);
  assert.deepEqual(second.taps, first.taps);
  assert.equal(second.fixedBatch, null);
  assert.equal(second.input, first.input);
  // The cached model opens and runs.
  const s = await ort.InferenceSession.create(second.model as string);
  const r = await s.run({ [second.input]: new ort.Tensor('uint8', new Uint8Array(2 * 32 * 32 * 3).fill(128), [2, 32, 32, 3]) });
  assert.deepEqual(r[second.taps[0].output].dims, [2, 6]);
  await s.release();
});

test('taps, pooling, card input and model bytes are all part of the key', async () => {
  freshCache('key');
  const resolved = await resolveBackbone(tiny.model, { card: tiny.card });
  const parts = { sha256: resolved.sha256, file: resolved.file, card: resolved.card!, taps: [{ name: 'relu2', pool: 'avg' as const }], spec: tiny.model };
  const base = await tapCacheKey(parts);
  assert.equal(await tapCacheKey({ ...parts, card: { ...parts.card, dir: '/elsewhere' } }), base, "the card's folder is not");
  const others = [
    { ...parts, taps: [{ name: 'relu1', pool: 'avg' as const }] },
    { ...parts, taps: [{ name: 'relu2', pool: 'max' as const }] },
    { ...parts, taps: [{ name: 'relu2', pool: 'avg' as const }, { name: 'relu1', pool: 'avg' as const }] },
    { ...parts, card: { ...parts.card, input: { ...parts.card.input, mean: [0.4, 0.5, 0.5] as [number, number, number] } } },
    { ...parts, sha256: '0'.repeat(64) },
    { ...parts, spec: 'other.onnx' },
    { ...parts, file: path.join(dir, 'elsewhere', 'tiny.onnx') },
  ];
  const keys = new Set([base, ...(await Promise.all(others.map(tapCacheKey)))]);
  assert.equal(keys.size, others.length + 1);
  await prepare();
  await prepare([{ name: 'relu2', pool: 'max' }]);
  assert.equal((await entries()).filter((f) => f.endsWith('.json')).length, 2);
});

test('a damaged entry is rebuilt and repaired', async () => {
  freshCache('damaged');
  const good = await prepare();
  const onnx = (await entries()).find((f) => f.endsWith('.onnx'))!;
  await truncate(path.join(cache, 'taps', onnx), 100);
  const again = await prepare();
  assert.deepEqual(await bytesOf(again), await bytesOf(good));
  assert.equal((await readFile(path.join(cache, 'taps', onnx))).length, (await bytesOf(good)).length, 'the entry was written again');
  const json = (await entries()).find((f) => f.endsWith('.json'))!;
  await writeFile(path.join(cache, 'taps', json), '{"format": 1, "taps": [');
  assert.deepEqual(await bytesOf(await prepare()), await bytesOf(good));
});

test('an entry is read and checked only when its file changed since the last check: same bytes are trusted again, same-size damage is rebuilt', async () => {
  freshCache('checked');
  const good = await bytesOf(await prepare());
  const onnx = path.join(cache, 'taps', (await entries()).find((f) => f.endsWith('.onnx'))!);
  const json = onnx.replace(/\.onnx$/, '.json');
  const mark = async () => writeFile(json, JSON.stringify({ ...JSON.parse(await readFile(json, 'utf8')), notices: ['from the cache'] }));
  const checked = async () => JSON.parse(await readFile(json, 'utf8')).checked;
  const stampWritten = await checked();
  assert.equal(stampWritten.size, good.length, 'the build recorded the file it wrote');
  // The same bytes written again (a restore from a backup): read, checked, used, and stamped anew.
  // (Its time is set so the stamp differs however soon after the build the write comes.)
  await writeFile(onnx, good);
  const restored = new Date(stampWritten.mtimeMs + 10_000);
  await utimes(onnx, restored, restored);
  await mark();
  const notices: string[] = [];
  const again = await prepare(undefined, notices);
  assert.deepEqual(notices, ['from the cache'], 'a hit');
  assert.ok(again.model instanceof Uint8Array, 'its bytes were read to be checked');
  assert.deepEqual(Buffer.from(again.model), good);
  assert.notDeepEqual(await checked(), stampWritten, 'the new stamp is recorded');
  const third = await prepare();
  assert.equal(third.model, onnx, 'then trusted by its stamp, unread');
  // Damage that keeps the size: the stamp changed, so the bytes are checked and the entry rebuilt.
  const bad = Buffer.from(good);
  bad[bad.length >> 1] ^= 0xff;
  await writeFile(onnx, bad);
  await mark();
  const rebuilt: string[] = [];
  const fixed = await prepare(undefined, rebuilt);
  assert.deepEqual(rebuilt, [], 'not a hit');
  assert.deepEqual(await bytesOf(fixed), good);
  assert.deepEqual(await readFile(onnx), good, 'the entry was written again');
});

test('a cache that cannot be written only costs speed', async () => {
  const blocker = path.join(dir, 'not-a-folder');
  await writeFile(blocker, 'x');
  process.env.XFER_CACHE = blocker; // mkdir <file>/taps fails
  cache = blocker;
  const p = await prepare();
  assert.deepEqual(p.taps.map((t) => t.tensor), ['relu2']);
  assert.ok(p.model instanceof Uint8Array && p.model.length > 0, 'built, handed over as bytes');
});

test(`only the ${MAX_ENTRIES} most recently used entries are kept`, async () => {
  freshCache('evict');
  const requests = MANY;
  assert.ok(requests.length > MAX_ENTRIES);
  for (const taps of requests) await prepare(taps);
  const metas = (await entries()).filter((f) => f.endsWith('.json'));
  const models = (await entries()).filter((f) => f.endsWith('.onnx'));
  assert.equal(metas.length, MAX_ENTRIES);
  assert.equal(models.length, MAX_ENTRIES);
  // The newest request is kept, the oldest is gone.
  assert.ok(metas.includes(`${await tinyKey(requests[requests.length - 1])}.json`));
  assert.ok(!metas.includes(`${await tinyKey(requests[0])}.json`));
});

test('a fixed-batch notice from the build is given again on a cache hit', async () => {
  freshCache('notice');
  const g = emptyGraph('fixed');
  g.input.push(valueInfo('x', DataType.FLOAT, [1, 3, 32, 32]));
  g.initializer.push(floatTensor('w1', [4, 3, 3, 3], Array.from({ length: 108 }, (_, i) => Math.sin(i))));
  g.initializer.push({ name: 'shp', dims: [2], dataType: DataType.INT64, rawData: new Uint8Array(BigInt64Array.from([1n, 4096n]).buffer) });
  g.node.push(node('Conv', ['x', 'w1'], ['c1'], { pads: [1, 1, 1, 1], kernel_shape: [3, 3] }), node('Reshape', ['c1', 'shp'], ['flat']));
  g.output.push(valueInfo('flat', DataType.FLOAT, [1, 4096]));
  const model = path.join(dir, 'fixed.onnx');
  await writeOnnxFile(model, makeModel(g));
  const taps = [{ name: 'flat', pool: 'none' as const }];
  const first: string[] = [];
  const a = await prepare(taps, first, model, tiny.card);
  assert.equal(a.fixedBatch, 1);
  assert.match(first.join('\n'), /fixed batch of 1 .* one image at a time/);
  const second: string[] = [];
  const b = await prepare(taps, second, model, tiny.card);
  assert.equal(b.fixedBatch, 1);
  assert.deepEqual(second, first);
});

test('a model whose weights live in an external data file misses when that file changes', async () => {
  freshCache('external');
  const model = await makeExternalModel(path.join(dir, 'ext'), 1);
  const taps: TapRequest[] = [{ name: 'r1', pool: 'avg' }];
  const first = await prepare(taps, [], model, tiny.card);
  const json = path.join(cache, 'taps', (await entries()).find((f) => f.endsWith('.json'))!);
  const meta = JSON.parse(await readFile(json, 'utf8'));
  assert.deepEqual(meta.external.map((e: { file: string }) => e.file), [path.join(dir, 'ext', 'w.bin')]);
  await writeFile(json, JSON.stringify({ ...meta, notices: ['from the cache'] }));
  const hit: string[] = [];
  await prepare(taps, hit, model, tiny.card);
  assert.deepEqual(hit, ['from the cache'], 'unchanged external data: a hit');
  // New weights of the same size: the .onnx file (and so its sha256) is unchanged.
  await writeFile(path.join(dir, 'ext', 'w.bin'), Buffer.from(Float32Array.from({ length: 108 }, (_, i) => Math.sin(i * 2)).buffer));
  const later = new Date(Date.now() + 5000);
  await utimes(path.join(dir, 'ext', 'w.bin'), later, later);
  const miss: string[] = [];
  const second = await prepare(taps, miss, model, tiny.card);
  assert.deepEqual(miss, [], 'changed external data: rebuilt');
  assert.notDeepEqual(await bytesOf(second), await bytesOf(first));
});

test('external weights copied over with their times kept (cp -p, rsync -a) still miss', async () => {
  freshCache('copy-p');
  const taps: TapRequest[] = [{ name: 'r1', pool: 'avg' }];
  const model = await makeExternalModel(path.join(dir, 'cp-p'), 1);
  const first = await prepare(taps, [], model, tiny.card);
  const w = path.join(dir, 'cp-p', 'w.bin');
  const before = await stat(w);
  const ref = path.join(dir, 'cp-p-times');
  execFileSync('cp', ['-p', w, ref]); // keeps the times to the nanosecond, as cp -p and rsync -a do
  await untilCtimeAfter(before.ctimeMs); // a copy comes later than the build (the kernel's clock is coarse)
  await writeFile(w, Buffer.from(Float32Array.from({ length: 108 }, (_, i) => Math.cos(i)).buffer)); // same size
  execFileSync('touch', ['-r', ref, w]);
  assert.equal((await stat(w)).mtimeMs, before.mtimeMs, 'same size and modification time as before');
  const second = await prepare(taps, [], model, tiny.card);
  assert.notDeepEqual(await bytesOf(second), await bytesOf(first), 'rebuilt from the new weights');
  assert.notEqual(second.externalSha256, first.externalSha256);
});

test('the same .onnx bytes in two folders with their own external weights are two entries', async () => {
  freshCache('two-folders');
  const taps: TapRequest[] = [{ name: 'r1', pool: 'avg' }];
  const a = await makeExternalModel(path.join(dir, 'run1'), 3);
  const b = await makeExternalModel(path.join(dir, 'run2'), 4);
  assert.deepEqual(await readFile(a), await readFile(b), 'identical model files');
  // Named the same way (e.g. `--model ext.onnx` from each folder).
  const open = async (file: string) => prepareTappedBackbone('ext.onnx', { resolved: await resolveBackbone(file, { card: tiny.card }), taps });
  const pa = await open(a);
  const pb = await open(b);
  const fresh = await buildTapBytes(b, (await resolveBackbone(b, { card: tiny.card })).card!, taps, 'ext.onnx');
  assert.deepEqual(await bytesOf(pb), Buffer.from(fresh.bytes), "run2's own weights");
  assert.notDeepEqual(await bytesOf(pa), await bytesOf(pb));
});

test('a hit counts as a use: an old entry used again outlives newer ones', async () => {
  freshCache('lru');
  const requests = MANY;
  // Each entry's last use is its JSON's modification time; set them explicitly (oldest first, all in
  // the past) so the order does not depend on how fast the writes follow each other.
  const usedAt = async (taps: TapRequest[], t: number) => {
    const json = path.join(cache, 'taps', `${await tinyKey(taps)}.json`);
    await utimes(json, new Date(t), new Date(t));
    return json;
  };
  const past = Date.now() - 3_600_000;
  for (const [i, taps] of requests.slice(0, MAX_ENTRIES).entries()) {
    await prepare(taps);
    await usedAt(taps, past + i * 1000);
  }
  await prepare(requests[0]); // a hit: now the most recently used
  const hitJson = path.join(cache, 'taps', `${await tinyKey(requests[0])}.json`);
  assert.ok((await stat(hitJson)).mtimeMs > past + MAX_ENTRIES * 1000, 'the hit recorded its use');
  for (const [i, taps] of requests.slice(MAX_ENTRIES).entries()) {
    await prepare(taps);
    await usedAt(taps, Date.now() + (i + 1) * 1000); // newer than the hit
  }
  const metas = (await entries()).filter((f) => f.endsWith('.json'));
  assert.equal(metas.length, MAX_ENTRIES);
  assert.ok(metas.includes(`${await tinyKey(requests[0])}.json`), 'the re-used oldest entry is kept');
  assert.ok(!metas.includes(`${await tinyKey(requests[1])}.json`), 'the least recently used one is gone');
  assert.ok(!metas.includes(`${await tinyKey(requests[2])}.json`), 'and the next least recently used');
});

test('the prepared model names its external weights by content: a copy elsewhere agrees, changed weights do not, none is null', async () => {
  freshCache('digest');
  const taps: TapRequest[] = [{ name: 'r1', pool: 'avg' }];
  const a = await makeExternalModel(path.join(dir, 'dig-a'), 5);
  const copy = await makeExternalModel(path.join(dir, 'dig-copy', 'nested'), 5);
  const other = await makeExternalModel(path.join(dir, 'dig-b'), 6);
  const fresh = await prepare(taps, [], a, tiny.card);
  assert.match(String(fresh.externalSha256), /^[0-9a-f]{64}$/);
  const hit = await prepare(taps, [], a, tiny.card);
  assert.equal(hit.externalSha256, fresh.externalSha256, 'a cache hit gives the digest of the build');
  assert.equal((await prepare(taps, [], copy, tiny.card)).externalSha256, fresh.externalSha256, 'same weights in another folder');
  assert.notEqual((await prepare(taps, [], other, tiny.card)).externalSha256, fresh.externalSha256, 'other weights');
  assert.equal((await prepare()).externalSha256, null, 'weights inside the .onnx file');
});
