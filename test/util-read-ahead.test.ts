/** ReadAhead: in-order results of work started at most `window` ahead (extraction and prediction use it for decodes). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ReadAhead } from '../src/util/read-ahead.js';

const tick = () => new Promise((r) => setImmediate(r));

test('ReadAhead: results in order, taking item i starts work up to i + window − 1, failures at their turn', async () => {
  const started: number[] = [];
  const resolvers = new Map<number, { ok: (v: string) => void; fail: (e: Error) => void }>();
  const start = (i: number) =>
    new Promise<string>((ok, fail) => {
      started.push(i);
      resolvers.set(i, { ok, fail });
    });
  const ra = new ReadAhead(start, 3, 10, 3);
  assert.deepEqual(started, [3, 4, 5], 'fills the window at once');
  // finish out of order: 5 before 3; item 4 fails (no unhandled rejection before its turn)
  resolvers.get(5)!.ok('five');
  resolvers.get(4)!.fail(new Error('four failed'));
  await tick();
  const first = ra.take();
  assert.deepEqual(started, [3, 4, 5], 'taking item 3 needs nothing beyond 5');
  resolvers.get(3)!.ok('three');
  assert.equal(await first, 'three');
  await assert.rejects(ra.take(), /four failed/);
  assert.deepEqual(started, [3, 4, 5, 6], 'taking item 4 starts 6');
  assert.equal(await ra.take(), 'five');
  assert.deepEqual(started, [3, 4, 5, 6, 7]);
  for (const i of [6, 7, 8, 9]) {
    const p = ra.take();
    assert.equal(started[started.length - 1], Math.min(i + 2, 9));
    resolvers.get(i)!.ok(`#${i}`);
    assert.equal(await p, `#${i}`);
  }
  assert.deepEqual(started, [3, 4, 5, 6, 7, 8, 9], 'nothing beyond `to`');
  await assert.rejects(ra.take(), /no items left/);
});

test('ReadAhead: uses promises already started for the first items, and checks its window', async () => {
  const started: number[] = [];
  const pre = [Promise.resolve('pre0'), Promise.resolve('pre1')];
  const ra = new ReadAhead((i) => (started.push(i), Promise.resolve(`s${i}`)), 0, 3, 2, pre);
  assert.deepEqual(started, [], 'the window is full of the given promises');
  assert.equal(await ra.take(), 'pre0');
  assert.deepEqual(started, []);
  assert.equal(await ra.take(), 'pre1');
  assert.deepEqual(started, [2]);
  assert.equal(await ra.take(), 's2');
  // more started promises than items: only the items' own are kept
  const short = new ReadAhead(() => Promise.resolve('x'), 0, 1, 4, [Promise.resolve('a'), Promise.resolve('b')]);
  assert.equal(await short.take(), 'a');
  await assert.rejects(short.take(), /no items left/);
  assert.throws(() => new ReadAhead(() => Promise.resolve(0), 0, 1, 0), /window must be a positive integer/);
});
