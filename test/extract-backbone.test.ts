/**
 * The extraction backbone in a worker thread (src/extract/backbone.ts) on a real ONNX model: a
 * batch's pixel buffer is transferred to the worker and back with the result (the pipeline reuses
 * it for later batches), and the outputs equal the same batch run in this thread.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { openInlineBackbone, openWorkerBackbone, prepareBackbone } from '../src/extract/backbone.js';
import { resolveBackbone } from '../src/model/registry.js';
import { BufferPool } from '../src/util/buffer-pool.js';
import { makeTinyModel, tmpDir } from './extract-helpers.js';

let dir: string;
let tiny: { model: string; card: string };
let saved: string | undefined;

before(async () => {
  dir = await tmpDir('xfer-backbone-');
  tiny = await makeTinyModel(dir);
  saved = process.env.XFER_CACHE;
  process.env.XFER_CACHE = path.join(dir, 'cache');
});

after(async () => {
  if (saved === undefined) delete process.env.XFER_CACHE;
  else process.env.XFER_CACHE = saved;
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
