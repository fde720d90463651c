/**
 * The lock's two policies for a live holder (src/util/lock.ts): refuse naming it (output folders),
 * or wait for it (downloads), optionally up to a timeout. Stale holders and other processes are
 * covered by reliability.test.ts and pull.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { acquireLock, type LockOwner } from '../src/util/lock.js';
import { XferError } from '../src/errors.js';
import { tempDir } from './helpers/tmp.js';

const owner = (lockDir: string): LockOwner => JSON.parse(readFileSync(path.join(lockDir, 'owner.json'), 'utf8'));

test('wait: a second taker is told who holds the lock, and gets it once the holder releases it', async () => {
  const lockDir = path.join(await tempDir('xfer-lock-'), 'file.lock');
  const first = await acquireLock(lockDir, { command: 'xfer pull', name: lockDir, what: 'download', policy: { busy: 'refuse' } });
  let told!: (h: LockOwner | null) => void;
  const waiting = new Promise<LockOwner | null>((r) => (told = r));
  const second = acquireLock(lockDir, { command: 'xfer pull', name: lockDir, what: 'download', policy: { busy: 'wait', pollMs: 5, onWait: (h) => told(h) } });
  const holder = await waiting;
  assert.equal(holder?.pid, process.pid);
  assert.equal(holder?.token, owner(lockDir).token, 'the first taker');
  await first.release();
  const lock = await second;
  assert.notEqual(owner(lockDir).token, holder?.token, 'now the second taker');
  lock.assertHeld();
  await lock.release();
  assert.equal(existsSync(lockDir), false);
});

test('wait with a timeout gives up with one line naming the holder (exit 1); refuse names it at once (exit 2)', async () => {
  const lockDir = path.join(await tempDir('xfer-lock-'), 'held.lock');
  const held = await acquireLock(lockDir, { command: 'xfer test', name: lockDir, what: 'download', policy: { busy: 'refuse' } });
  try {
    await assert.rejects(acquireLock(lockDir, { command: 'xfer pull', name: 'x.onnx', what: 'download', policy: { busy: 'wait', pollMs: 5, timeoutMs: 0 } }), (e: unknown) => {
      assert.ok(e instanceof XferError && e.exitCode === 1);
      assert.match(e.message, new RegExp(`^x\\.onnx: still in use by xfer test \\(pid ${process.pid} on host .*, since .*\\) after 0 s$`));
      return true;
    });
    await assert.rejects(acquireLock(lockDir, { command: 'xfer extract', name: '--out feats', what: 'folder', policy: { busy: 'refuse' } }), (e: unknown) => {
      assert.ok(e instanceof XferError && e.exitCode === 2);
      assert.match(e.message, /^--out feats: in use by xfer test \(pid \d+ on host /);
      assert.doesNotMatch(e.message, /\n/);
      return true;
    });
  } finally {
    await held.release();
  }
});
