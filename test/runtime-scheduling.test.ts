/**
 * The extraction pipeline's scheduling parts: the bounded channel between the decoding producer and
 * the backbone consumer, the pool that gives each batch to the first free session, and the pool of
 * batch buffers.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BufferPool } from '../src/util/buffer-pool.js';
import { Channel } from '../src/util/channel.js';
import { firstFree, type BackboneInfo, type Backbone } from '../src/runtime/pool.js';
import { defaultBatch } from '../src/extract/pipeline.js';

const tick = () => new Promise((r) => setImmediate(r));

test('Channel: FIFO, push waits while full, shift waits while empty, close drains then ends', async () => {
  const ch = new Channel<number>(2);
  assert.equal(await ch.push(1), true);
  assert.equal(await ch.push(2), true);
  let third = false;
  const p3 = ch.push(3).then((ok) => (third = ok));
  await tick();
  assert.equal(third, false, 'a push into a full channel waits');
  assert.equal(await ch.shift(), 1);
  await p3;
  assert.equal(third, true, 'and goes on once there is room');
  let got: number | undefined;
  const s = ch.shift().then((v) => (got = v));
  await s;
  assert.equal(got, 2);
  assert.equal(await ch.shift(), 3);
  const waiting = ch.shift();
  await tick();
  ch.close();
  assert.equal(await waiting, undefined, 'a waiting shift ends when the channel closes');
  assert.throws(() => new Channel(0), /positive integer/);
});

test('Channel: fail() reaches the consumer after the queued items; cancel() releases the producer', async () => {
  const ch = new Channel<string>(1);
  await ch.push('a');
  ch.fail(new Error('decode failed'));
  assert.equal(await ch.shift(), 'a');
  await assert.rejects(ch.shift(), /decode failed/);

  const c2 = new Channel<string>(1);
  await c2.push('x');
  const blocked = c2.push('y');
  c2.cancel();
  assert.equal(await blocked, false, 'a producer blocked on a full channel is released with false');
  assert.equal(await c2.push('z'), false);
});

function fakeBackbone(name: string, ms: number, log: string[]): Backbone {
  return {
    info: { id: name } as BackboneInfo,
    async run(pixels, n) {
      log.push(`${name}:${pixels[0]}`);
      await new Promise((r) => setTimeout(r, ms));
      return { outputs: [Float32Array.of(pixels[0], n)], pixels };
    },
    async close() {
      log.push(`${name}:closed`);
    },
  };
}

test('firstFree: each batch goes to the first idle session, results return to their caller', async () => {
  const log: string[] = [];
  // "slow" takes 60 ms a batch, "fast" 5 ms: after the first two batches, the fast session takes
  // every batch it is free for instead of alternating.
  const pool = firstFree([fakeBackbone('slow', 60, log), fakeBackbone('fast', 5, log)]);
  const results = await Promise.all([0, 1, 2, 3, 4].map((i) => pool.run(Uint8Array.of(i), i + 1)));
  assert.deepEqual(
    results.map((r) => Array.from(r.outputs[0])),
    [0, 1, 2, 3, 4].map((i) => [i, i + 1]),
  );
  assert.deepEqual(log, ['slow:0', 'fast:1', 'fast:2', 'fast:3', 'fast:4']);
  await pool.close();
  assert.deepEqual(log.slice(-2).sort(), ['fast:closed', 'slow:closed']);
});

test('firstFree with depth 2: each session holds its next batch (fewest outstanding first, then the longest waiting), never more than 2', async () => {
  const log: string[] = [];
  const busy = new Map<string, { now: number; max: number }>();
  const counted = (name: string, ms: number): Backbone => {
    const inner = fakeBackbone(name, ms, log);
    const c = { now: 0, max: 0 };
    busy.set(name, c);
    return {
      ...inner,
      async run(pixels, n) {
        c.max = Math.max(c.max, ++c.now);
        // One at a time inside, as a worker runs its batches.
        const prev = chains.get(name) ?? Promise.resolve();
        const mine = prev.then(() => inner.run(pixels, n));
        chains.set(name, mine.catch(() => {}));
        try {
          return await mine;
        } finally {
          c.now--;
        }
      },
    };
  };
  const chains = new Map<string, Promise<unknown>>();
  const pool = firstFree([counted('slow', 60), counted('fast', 5)], 2);
  const results = await Promise.all([0, 1, 2, 3, 4, 5].map((i) => pool.run(Uint8Array.of(i), 1)));
  assert.deepEqual(
    results.map((r) => r.outputs[0][0]),
    [0, 1, 2, 3, 4, 5],
  );
  // slow takes 0, fast 1; both hold one, so slow (waiting longer) holds 2 and fast 3; then every
  // batch goes to fast as it frees a place.
  assert.deepEqual(log, ['slow:0', 'fast:1', 'fast:3', 'fast:4', 'fast:5', 'slow:2']);
  assert.deepEqual([busy.get('slow')!.max, busy.get('fast')!.max], [2, 2]);
  assert.throws(() => firstFree([], 0), /depth must be a positive integer/);
});

test('firstFree: a failed batch rejects its caller only, and the session takes the next one', async () => {
  let calls = 0;
  const flaky: Backbone = {
    info: { id: 'flaky' } as BackboneInfo,
    async run(pixels) {
      calls++;
      if (pixels[0] === 1) throw new Error('bad batch');
      return { outputs: [Float32Array.of(pixels[0])], pixels };
    },
    async close() {},
  };
  const pool = firstFree([flaky]);
  const [a, b, c] = await Promise.allSettled([0, 1, 2].map((i) => pool.run(Uint8Array.of(i), 1)));
  assert.equal(a.status, 'fulfilled');
  assert.equal(b.status, 'rejected');
  assert.match(String((b as PromiseRejectedResult).reason), /bad batch/);
  assert.equal(c.status, 'fulfilled');
  assert.equal(calls, 3);
});

test('default batch: 32 on CUDA (a full GPU batch), 2 on CPU', () => {
  assert.equal(defaultBatch('cuda'), 32);
  assert.equal(defaultBatch('cpu'), 2);
  assert.equal(defaultBatch('cpu', 1), 2);
  assert.equal(defaultBatch('cpu', 16), 16, 'a session with t threads gets t images');
});

test('BufferPool: reuses given-back buffers of its size only, up to max', () => {
  const pool = new BufferPool(8, 2);
  const a = pool.take();
  assert.equal(a.byteLength, 8);
  assert.deepEqual(Array.from(a), [0, 0, 0, 0, 0, 0, 0, 0], 'a new buffer is zero-filled');
  a[0] = 7;
  pool.give(a);
  pool.give(a);
  assert.equal(pool.size, 1, 'the same buffer is kept once');
  assert.equal(pool.take(), a, 'take() returns the buffer given back, contents kept');
  pool.give(new Uint8Array(9));
  pool.give(new Uint8Array(16).subarray(0, 8));
  const detached = new Uint8Array(8);
  structuredClone(detached.buffer, { transfer: [detached.buffer] });
  pool.give(detached);
  pool.give(new Uint8Array(new SharedArrayBuffer(8)));
  assert.equal(pool.size, 0, 'wrong size, a view into a larger buffer, a detached or a shared buffer are dropped');
  for (let i = 0; i < 3; i++) pool.give(new Uint8Array(8));
  assert.equal(pool.size, 2, 'at most max free buffers');
  assert.notEqual(pool.take(), pool.take());
  assert.throws(() => new BufferPool(0), /positive integer/);
});
