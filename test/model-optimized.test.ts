/**
 * ORT's optimized CPU graph kept beside a cached tap model (src/model/session.ts createCpu,
 * src/model/tap-cache.ts): the first CPU session writes it, later ones open it with optimizations
 * off, and the outputs are bit-identical to a plain session's (the default backbone, real images);
 * a file is trusted only while its stamp is the recorded one, one that ORT cannot open or cannot
 * write only costs speed, and the cache hands out and evicts these files with their entries.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { chmod, mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import ort from '../src/model/ort.js';
import { openSession } from '../src/model/session.js';
import { prepareTappedBackbone } from '../src/model/prepare.js';
import { resolveBackbone } from '../src/model/registry.js';
import { MAX_ENTRIES } from '../src/model/tap-cache.js';
import type { PreparedBackbone } from '../src/model/tapped.js';
import type { TapRequest } from '../src/model/taps.js';
import { resolvePreprocess } from '../src/image/plan.js';
import { loadImagePixels } from '../src/image/decode.js';
import { cpuSignature, cpuinfoIdentity } from '../src/util/cpu-signature.js';
import { keepCacheEnv, makeDataset, makeExternalModel, makeTinyModel, tmpDir } from './extract-helpers.js';

const SHARED_IMAGES = path.resolve('..', 'shared', 'images');

let dir: string;
let tiny: { model: string; card: string };
let restoreCache: () => void;

before(async () => {
  dir = await tmpDir('xfer-optimized-');
  tiny = await makeTinyModel(dir);
  restoreCache = keepCacheEnv();
});

after(async () => {
  restoreCache();
  await rm(dir, { recursive: true, force: true });
});

/** Run a session on NHWC uint8 pixels; the first output's bytes. */
async function run(session: ort.InferenceSession, pixels: Uint8Array, n: number, h: number, w: number): Promise<Buffer> {
  const out = await session.run({ [session.inputNames[0]]: new ort.Tensor('uint8', pixels, [n, h, w, 3]) });
  const d = out[session.outputNames[0]].data as Float32Array;
  return Buffer.from(d.buffer, d.byteOffset, d.byteLength);
}

async function open(p: PreparedBackbone, optimized: string | null): Promise<ort.InferenceSession> {
  return (await openSession(p.model, { device: 'cpu', threads: 1 }, () => {}, optimized)).session;
}

test('the default backbone: the first CPU session writes its optimized graph, the next opens it, and the features are bit-identical to a plain session on real images', async () => {
  const p = await prepareTappedBackbone('mobilenet_v2', { taps: [{ name: 'out_relu', pool: 'avg' }] });
  const plan = resolvePreprocess(p.card);
  const [h, w] = plan.size;
  // Real photos when ../shared is there, else generated JPEGs.
  let files: string[];
  if (existsSync(SHARED_IMAGES)) files = (await readdir(SHARED_IMAGES)).sort().map((f) => path.join(SHARED_IMAGES, f));
  else files = await makeDataset(path.join(dir, 'photos'), ['a'], 4);
  const pixels = new Uint8Array(files.length * h * w * 3);
  for (const [i, f] of files.entries()) pixels.set((await loadImagePixels(f, plan)).data, i * h * w * 3);
  const optimized = path.join(dir, 'mnv2.cpu-test.onnx');

  const plain = await open(p, null);
  const expected = await run(plain, pixels, files.length, h, w);
  await plain.release();
  const writer = await open(p, optimized);
  const written = await stat(optimized);
  const stampFile = await readFile(`${optimized}.json`, 'utf8');
  assert.deepEqual(await run(writer, pixels, files.length, h, w), expected, 'the session that wrote it');
  await writer.release();
  const reader = await open(p, optimized);
  assert.deepEqual(await run(reader, pixels, files.length, h, w), expected, 'a session on the optimized graph');
  await reader.release();
  const again = await stat(optimized);
  assert.equal(again.mtimeMs, written.mtimeMs, 'opened, not written again');
  assert.equal(await readFile(`${optimized}.json`, 'utf8'), stampFile);
  if (process.arch === 'x64') assert.ok((await readFile(optimized)).includes('com.microsoft.nchwc'), 'the saved graph is the NCHWc one ORT built for this CPU');
});

test('an optimized file is used while its stamp is the recorded one; a changed, unreadable or unwritable one costs only speed', async () => {
  process.env.XFER_CACHE = path.join(dir, 'cache-mech');
  const resolved = await resolveBackbone(tiny.model, { card: tiny.card });
  const prep = (taps: TapRequest[]) => prepareTappedBackbone(tiny.model, { resolved, taps });
  const p = await prep([{ name: 'relu2', pool: 'avg' }]);
  const other = await prep([{ name: 'relu1', pool: 'avg' }]);
  const pixels = Uint8Array.from({ length: 2 * 32 * 32 * 3 }, (_, i) => (i * 37) % 256);
  const plain = await run(await open(p, null), pixels, 2, 32, 32);
  const optimized = path.join(dir, 'tiny.cpu-test.onnx');
  assert.deepEqual(await run(await open(p, optimized), pixels, 2, 32, 32), plain);
  assert.ok(existsSync(optimized) && existsSync(`${optimized}.json`));

  // Another valid model put there with its stamp recorded is what the next session opens: the file is trusted, unread.
  const substitute = typeof other.model === 'string' ? await readFile(other.model) : Buffer.from(other.model);
  await writeFile(optimized, substitute);
  const st = await stat(optimized);
  await writeFile(`${optimized}.json`, JSON.stringify({ format: 1, stamp: { size: st.size, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs, ino: st.ino } }));
  const trusted = await run(await open(p, optimized), pixels, 2, 32, 32);
  assert.notDeepEqual(trusted, plain, 'the substitute ran (relu1 has 4 channels, relu2 6)');
  assert.equal(trusted.length, (2 * 4 * 4) / 1, 'two rows of 4 pooled channels, float32');

  // Written again behind the record's back (new mtime/ctime): not trusted, replaced by the right graph.
  await new Promise((r) => setTimeout(r, 20));
  await writeFile(optimized, substitute);
  assert.deepEqual(await run(await open(p, optimized), pixels, 2, 32, 32), plain);
  assert.deepEqual(await run(await open(p, optimized), pixels, 2, 32, 32), plain, 'and that one is trusted next time');

  // Garbage with a matching record: ORT refuses it, the graph is written again.
  await writeFile(optimized, Buffer.from('not an onnx model'));
  const g = await stat(optimized);
  await writeFile(`${optimized}.json`, JSON.stringify({ format: 1, stamp: { size: g.size, mtimeMs: g.mtimeMs, ctimeMs: g.ctimeMs, ino: g.ino } }));
  assert.deepEqual(await run(await open(p, optimized), pixels, 2, 32, 32), plain);
  assert.ok((await stat(optimized)).size > 1000, 'rewritten');

  // A place that cannot be written (its folder is a file): a plain session, no error, nothing left behind.
  const blocked = path.join(dir, 'blocked');
  await writeFile(blocked, 'a file');
  assert.deepEqual(await run(await open(p, path.join(blocked, 'x.onnx')), pixels, 2, 32, 32), plain);
  assert.deepEqual(await run(await open(p, path.join(dir, 'no-such-folder', 'x.onnx')), pixels, 2, 32, 32), plain, 'a folder that is not there');
  assert.equal(existsSync(path.join(dir, 'no-such-folder')), false);
  // A folder this user cannot write (a cache baked read-only into an image): a plain session, nothing tried.
  if (process.getuid?.() !== 0) {
    const ro = path.join(dir, 'read-only');
    await mkdir(ro);
    await chmod(ro, 0o555);
    assert.deepEqual(await run(await open(p, path.join(ro, 'x.onnx')), pixels, 2, 32, 32), plain);
    assert.deepEqual(await readdir(ro), []);
    await chmod(ro, 0o755);
  }
  // And a model ORT cannot open still fails with ORT's own reason, not a cache error.
  await assert.rejects(openSession(Buffer.from('garbage'), { device: 'cpu' }, () => {}, path.join(dir, 'g.onnx')), /protobuf|parse|Load model/i);
  assert.equal(existsSync(path.join(dir, 'g.onnx')), false);
});

test('the tap cache names an optimized file per entry and kind of CPU (none for external weights), and evicts it with its entry', async () => {
  const cache = path.join(dir, 'cache-evict');
  process.env.XFER_CACHE = cache;
  const resolved = await resolveBackbone(tiny.model, { card: tiny.card });
  const first = await prepareTappedBackbone(tiny.model, { resolved, taps: [{ name: 'relu2', pool: 'avg' }] });
  assert.equal(typeof first.optimized, 'string');
  assert.equal(path.dirname(first.optimized!), path.join(cache, 'taps'));
  assert.match(path.basename(first.optimized!), new RegExp(`^[0-9a-f]{64}\\.cpu-${cpuSignature()}\\.onnx$`));
  const hit = await prepareTappedBackbone(tiny.model, { resolved, taps: [{ name: 'relu2', pool: 'avg' }] });
  assert.equal(hit.optimized, first.optimized, 'a hit names the same file');
  await (await open(first, first.optimized!)).release();
  assert.ok(existsSync(first.optimized!));

  const ext = await makeExternalModel(path.join(dir, 'ext'), 1);
  const extResolved = await resolveBackbone(ext, { card: tiny.card });
  const e = await prepareTappedBackbone(ext, { resolved: extResolved, taps: [{ name: 'r1', pool: 'avg' }] });
  assert.equal(e.optimized, null, 'weights in an external file: no optimized copy');

  // Enough newer entries to evict the first: its optimized file and record go with it.
  const pools = ['max', 'avgmax', 'flatten', 'none'] as const;
  const more: TapRequest[][] = [...pools.map((pool) => [{ name: 'relu2', pool }]), ...(['avg', ...pools] as const).map((pool) => [{ name: 'relu1', pool }])];
  for (const taps of more.slice(0, MAX_ENTRIES)) {
    await new Promise((r) => setTimeout(r, 15));
    await prepareTappedBackbone(tiny.model, { resolved, taps });
  }
  assert.equal(existsSync(first.optimized!), false);
  assert.equal(existsSync(`${first.optimized!}.json`), false);
  const left = (await readdir(path.join(cache, 'taps'))).filter((f) => f.includes('.cpu-'));
  assert.deepEqual(left, []);
});

test('cpuSignature: the first CPU of /proc/cpuinfo identifies it (vendor, model, flags), not its speed or number', () => {
  const a = 'processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: 2\nmodel name\t: AMD EPYC\ncpu MHz\t\t: 2095.1\nflags\t\t: fpu avx2 avx512f\n\nprocessor\t: 1\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu\n';
  assert.deepEqual(cpuinfoIdentity(a), ['vendor_id : AuthenticAMD', 'cpu family : 26', 'model : 2', 'model name : AMD EPYC', 'flags : fpu avx2 avx512f']);
  assert.deepEqual(cpuinfoIdentity(a.replace('2095.1', '3000.0')), cpuinfoIdentity(a));
  assert.notDeepEqual(cpuinfoIdentity(a.replace(' avx512f', '')), cpuinfoIdentity(a));
  assert.match(cpuSignature(), /^[0-9a-f]{16}$/);
  assert.equal(cpuSignature(), cpuSignature());
});
