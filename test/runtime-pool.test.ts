/**
 * The backbone in a worker thread (src/runtime/pool.ts) on a real ONNX model: a
 * batch's pixel buffer is transferred to the worker and back with the result (the pipeline reuses
 * it for later batches), and the outputs equal the same batch run in this thread. And the model's
 * identity a feature folder records covers external weight files.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { BackboneClosedError, WORKER_DEPTH, openInlineBackbone, openWorkerBackbone, openWorkerPool, prepareBackbone } from '../src/runtime/pool.js';
import { resolveBackbone } from '../src/model/registry.js';
import { BufferPool } from '../src/util/buffer-pool.js';
import { extractFeatures } from '../src/extract/pipeline.js';
import { makeDataset, makeExternalModel, makeTinyModel, tmpDir, useCacheIn } from './extract-helpers.js';

let dir: string;
let tiny: { model: string; card: string };
let restoreCache: () => void;

before(async () => {
  dir = await tmpDir('xfer-backbone-');
  tiny = await makeTinyModel(dir);
  restoreCache = useCacheIn(dir);
});

after(async () => {
  restoreCache();
  await rm(dir, { recursive: true, force: true });
});

test('worker backbone: the pixel buffer goes to the worker and back; outputs equal an inline run', async () => {
  const resolved = await resolveBackbone(tiny.model, { card: tiny.card });
  const prepared = () => prepareBackbone({ model: tiny.model, resolved, layers: null, pool: null }, () => {});
  const worker = await openWorkerBackbone(prepared(), { device: 'cpu', threads: 1 }, () => {});
  const inline = await openInlineBackbone(prepared(), { device: 'cpu', threads: 1 }, () => {});
  try {
    const img = 32 * 32 * 3;
    const pool = new BufferPool(3 * img);
    for (let round = 0; round < 3; round++) {
      const px = pool.take();
      for (let i = 0; i < px.length; i++) px[i] = (i * 31 + round * 17) & 255;
      const copy = px.slice();
      const n = round === 2 ? 2 : 3; // a short batch: only its rows run
      const r = await worker.run(px, n);
      assert.equal(px.byteLength, 0, 'the caller’s view is detached while the worker has the buffer');
      assert.ok(Buffer.from(r.pixels).equals(Buffer.from(copy)), 'the same bytes come back');
      const ref = await inline.run(copy, n);
      assert.equal(ref.pixels, copy, 'inline: the buffer given is the buffer returned');
      assert.equal(r.outputs.length, 1);
      assert.equal(r.outputs[0].length, n * 6, 'relu2 avg-pooled: 6 values per image');
      assert.deepEqual(Array.from(r.outputs[0]), Array.from(ref.outputs[0]));
      pool.give(r.pixels);
      assert.equal(pool.size, 1, 'the returned buffer is reusable');
    }
  } finally {
    await worker.close();
    await inline.close();
  }
});

test('closing a worker pool with batches in flight settles every run (the ones at a session finish, queued ones are refused); later runs are refused', async () => {
  const resolved = await resolveBackbone(tiny.model, { card: tiny.card });
  const prepared = prepareBackbone({ model: tiny.model, resolved, layers: null, pool: null }, () => {});
  const pool = await openWorkerPool(prepared, { device: 'cpu', threads: 1 }, () => {}, 2);
  const img = 32 * 32 * 3;
  const runs = Array.from({ length: 6 }, () => pool.run(new Uint8Array(2 * img).fill(7), 2));
  const all = Promise.allSettled(runs);
  await pool.close();
  // Once close() has finished every run is settled, so allSettled resolves within the microtasks that
  // follow, before the next turn of the event loop (no timer: event-loop order, not a time window).
  const outcomes = await Promise.race([all, new Promise<'hung'>((resolve) => setImmediate(() => resolve('hung')))]);
  assert.notEqual(outcomes, 'hung', 'a run was left pending after close()');
  const settled = outcomes as PromiseSettledResult<unknown>[];
  const ok = settled.filter((r) => r.status === 'fulfilled').length;
  assert.ok(ok >= 1 && ok <= 2 * WORKER_DEPTH, `the batches at the two sessions (up to ${WORKER_DEPTH} each) finish (${ok})`);
  for (const r of settled) if (r.status === 'rejected') assert.ok(r.reason instanceof BackboneClosedError, String(r.reason));
  await assert.rejects(pool.run(new Uint8Array(2 * img), 2), BackboneClosedError);
});

test('a feature folder records the model’s external weights: --resume refuses it after they changed, a copy of the model folder resumes', async () => {
  const model = await makeExternalModel(path.join(dir, 'extmodel'), 1);
  const data = path.join(dir, 'data');
  await makeDataset(data, ['a', 'b'], 3);
  const out = path.join(dir, 'feat-ext');
  const run = (m: string, resume: boolean) =>
    extractFeatures({ model: m, card: tiny.card, layers: ['r1'], data, out, resume, overwrite: !resume, device: { device: 'cpu' }, workers: 1, env: {} });
  const s = await run(model, false);
  assert.equal(s.images, 6);
  const meta = JSON.parse(await readFile(path.join(out, 'meta.json'), 'utf8'));
  assert.match(meta.model.external_sha256, /^[0-9a-f]{64}$/);
  // The same weights in another folder: the same model.
  const copy = await makeExternalModel(path.join(dir, 'extmodel-copy'), 1);
  assert.equal((await run(copy, true)).complete, true);
  // New weights of the same size: the .onnx file, and its sha256, are unchanged.
  await makeExternalModel(path.join(dir, 'extmodel'), 2);
  await assert.rejects(run(model, true), /already holds different features \(external weight files of tiny \(sha256 [0-9a-f]{12} vs sha256 [0-9a-f]{12}\)\)/);
  const plain = path.join(dir, 'feat-plain');
  await extractFeatures({ model: tiny.model, card: tiny.card, data, out: plain, device: { device: 'cpu' }, workers: 1, env: {} });
  assert.equal(JSON.parse(await readFile(path.join(plain, 'meta.json'), 'utf8')).model.external_sha256, null, 'null: no external weights');
  // A folder written before external weights were recorded (no field) is not checked for them.
  const metaFile = path.join(out, 'meta.json');
  const old = JSON.parse(await readFile(metaFile, 'utf8'));
  delete old.model.external_sha256;
  await writeFile(metaFile, JSON.stringify(old));
  assert.equal((await run(model, true)).complete, true, 'an older folder resumes');
});
