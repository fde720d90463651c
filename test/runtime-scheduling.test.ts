/**
 * The runtime's scheduling parts: the bounded channel between the decoding producer and the
 * backbone consumer, the pool that gives each batch to the first free session, the pool of batch
 * buffers, and the ordered stream (src/runtime/stream.ts).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BufferPool } from '../src/util/buffer-pool.js';
import { Channel } from '../src/util/channel.js';
import { firstFree, type BackboneInfo, type Backbone } from '../src/runtime/pool.js';
import { defaultBatch } from '../src/extract/pipeline.js';
import { runStream } from '../src/runtime/stream.js';

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

/**
 * Sessions whose batches finish when the test says so (`finish(name)`: that session's oldest batch),
 * so the order batches are given out in depends on nothing but the pool's policy.
 */
function gatedSessions(names: string[], log: string[]) {
  const pending = new Map<string, (() => void)[]>(names.map((n) => [n, []]));
  const outstanding = new Map<string, { now: number; max: number }>(names.map((n) => [n, { now: 0, max: 0 }]));
  const backbones = names.map(
    (name): Backbone => ({
      info: { id: name } as BackboneInfo,
      run(pixels, n) {
        log.push(`${name}:${pixels[0]}`);
        const c = outstanding.get(name)!;
        c.max = Math.max(c.max, ++c.now);
        return new Promise((resolve) =>
          pending.get(name)!.push(() => {
            c.now--;
            resolve({ outputs: [Float32Array.of(pixels[0], n)], pixels });
          }),
        );
      },
      async close() {
        log.push(`${name}:closed`);
      },
    }),
  );
  const finish = async (name: string) => {
    const next = pending.get(name)!.shift();
    assert.ok(next, `${name} has a batch to finish`);
    next();
    await tick(); // the pool hands out the next batch once the result is seen
  };
  return { backbones, finish, outstanding };
}

test('firstFree: each batch goes to the first idle session, results return to their caller', async () => {
  const log: string[] = [];
  const { backbones, finish } = gatedSessions(['slow', 'fast'], log);
  const pool = firstFree(backbones);
  const results = Promise.all([0, 1, 2, 3, 4].map((i) => pool.run(Uint8Array.of(i), i + 1)));
  await tick();
  assert.deepEqual(log, ['slow:0', 'fast:1'], 'one batch per idle session');
  // While "slow" runs its batch, "fast" takes every batch it is free for instead of alternating.
  for (let i = 0; i < 3; i++) await finish('fast');
  assert.deepEqual(log, ['slow:0', 'fast:1', 'fast:2', 'fast:3', 'fast:4']);
  await finish('fast');
  await finish('slow');
  assert.deepEqual(
    (await results).map((r) => Array.from(r.outputs[0])),
    [0, 1, 2, 3, 4].map((i) => [i, i + 1]),
  );
  await pool.close();
  assert.deepEqual(log.slice(-2).sort(), ['fast:closed', 'slow:closed']);
});

test('firstFree with depth 2: each session holds its next batch (fewest outstanding first, then the longest waiting), never more than 2', async () => {
  const log: string[] = [];
  const { backbones, finish, outstanding } = gatedSessions(['slow', 'fast'], log);
  const pool = firstFree(backbones, 2);
  const results = Promise.all([0, 1, 2, 3, 4, 5].map((i) => pool.run(Uint8Array.of(i), 1)));
  await tick();
  // slow takes 0, fast 1; both hold one, so slow (waiting longer) holds 2 and fast 3; 4 and 5 wait.
  assert.deepEqual(log, ['slow:0', 'fast:1', 'slow:2', 'fast:3']);
  await finish('fast');
  await finish('fast');
  assert.deepEqual(log.slice(4), ['fast:4', 'fast:5'], 'then each batch goes to the session that frees a place');
  for (const name of ['fast', 'fast', 'slow', 'slow']) await finish(name);
  assert.deepEqual(
    (await results).map((r) => r.outputs[0][0]),
    [0, 1, 2, 3, 4, 5],
  );
  assert.deepEqual([outstanding.get('slow')!.max, outstanding.get('fast')!.max], [2, 2]);
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

test('runStream: batches within groups, delivered in input order whatever order they finish in, with unusable inputs in place', async () => {
  const log: string[] = [];
  const { backbones, finish } = gatedSessions(['a', 'b'], log);
  const pool = firstFree(backbones, 2);
  // Item i decodes to one byte (i); items 3 and 6 cannot be used. Groups of 5 items: batches never cross 5.
  const decode = async (i: number) => (i === 3 || i === 6 ? { ok: false as const, reason: `bad ${i}` } : { ok: true as const, data: Uint8Array.of(i) });
  const delivered: string[] = [];
  const skipped: number[] = [];
  const done = runStream({
    backbone: pool,
    from: 0,
    to: 9,
    decode,
    batch: 2,
    imageBytes: 1,
    pad: false,
    window: 4,
    maxInflight: 5,
    groupEnd: (i) => (Math.floor(i / 5) + 1) * 5,
    onSkip: (i) => skipped.push(i),
    onBatch: (b, outputs) => {
      const first = b.slots.find((s) => s.row === 0);
      assert.equal(outputs![0][0], first!.item, "the batch's own outputs");
      delivered.push(b.slots.map((s) => (s.row === null ? `x${s.item}` : `${s.item}@${s.row}`)).join(',') + (b.lastOfGroup ? '|' : ''));
    },
  });
  for (let k = 0; k < 20 && log.length < 4; k++) await tick();
  // The batches' first pixels: [0,1] [2,4] (3 unusable) | [5,7] (6 unusable) [8] — each gated session holds two.
  assert.deepEqual(log, ['a:0', 'b:2', 'a:5', 'b:8']);
  // b finishes first: nothing may be delivered before a's first batch.
  await finish('b');
  assert.deepEqual(delivered, []);
  await finish('a');
  await finish('a');
  await finish('b');
  await done;
  assert.deepEqual(delivered, ['0@0,1@1', '2@0,x3,4@1|', '5@0,x6,7@1', '8@0|']);
  assert.deepEqual(skipped, [3, 6]);
});

test('runStream: a halt stops delivery at once; an abort lets the batches at the backbone finish and be delivered', async () => {
  const decode = async (i: number) => ({ ok: true as const, data: Uint8Array.of(i) });
  const immediate: Backbone = { info: { id: 'now' } as BackboneInfo, run: async (pixels, n) => ({ outputs: [Float32Array.of(pixels[0], n)], pixels }), close: async () => {} };
  const common = { backbone: immediate, from: 0, to: 100, decode, batch: 1, imageBytes: 1, pad: false, window: 2, maxInflight: 2 };
  const halted: number[] = [];
  await runStream({ ...common, halt: () => halted.length >= 3, onBatch: (b) => void halted.push(b.slots[0].item) });
  assert.deepEqual(halted, [0, 1, 2]);
  const controller = new AbortController();
  const seen: number[] = [];
  const r = await runStream({
    ...common,
    signal: controller.signal,
    onBatch: (b) => {
      seen.push(b.slots[0].item);
      if (seen.length === 3) controller.abort();
    },
  });
  assert.equal(r.aborted, true);
  assert.ok(seen.length >= 3 && seen.length < 100, `${seen.length} delivered`);
  assert.deepEqual(seen, seen.map((_, i) => i), 'in order, without gaps');
});

test('runStream: a padded batch (CUDA) runs zeros beyond its rows, whatever its reused buffer held', async () => {
  const runs: number[][] = [];
  const recording: Backbone = {
    info: { id: 'rec' } as BackboneInfo,
    async run(pixels, n) {
      runs.push(Array.from(pixels.subarray(0, n)));
      return { outputs: [new Float32Array(n)], pixels };
    },
    close: async () => {},
  };
  await runStream({ backbone: recording, from: 0, to: 5, decode: async (i) => ({ ok: true as const, data: Uint8Array.of(i + 1) }), batch: 2, imageBytes: 1, pad: true, window: 2, maxInflight: 1, onBatch: () => {} });
  assert.deepEqual(runs, [[1, 2], [3, 4], [5, 0]]);
});
