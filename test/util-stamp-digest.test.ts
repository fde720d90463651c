/**
 * Digests remembered by file stamps (src/util/stamp-digest.ts): computed once while the files keep
 * their stamps, again after any change, never remembered for files written a moment ago, and only
 * an accelerator when the memo folder cannot be used.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdir, rm, stat, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { RACY_MS, digestByStamps, sha256FileRemembered } from '../src/util/stamp-digest.js';
import { tmpDir, useCacheIn } from './extract-helpers.js';

let dir: string;
let restoreCache: () => void;

before(async () => {
  dir = await tmpDir('xfer-digest-');
  restoreCache = useCacheIn(dir);
});

after(async () => {
  restoreCache();
  await rm(dir, { recursive: true, force: true });
});

/** A clock past the racy window of files written now. */
const later = () => Date.now() + 2 * RACY_MS;

test('a digest is computed once while its files keep their stamps, and again when one changes', async () => {
  const a = path.join(dir, 'a.bin');
  const b = path.join(dir, 'b.bin');
  await writeFile(a, 'alpha');
  await writeFile(b, 'beta');
  let calls = 0;
  const compute = async () => `digest-${++calls}`;
  // Files younger than RACY_MS: computed every time.
  assert.equal(await digestByStamps('pair', [a, b], compute), 'digest-1');
  assert.equal(await digestByStamps('pair', [a, b], compute), 'digest-2', 'just written: not remembered');
  assert.equal(await digestByStamps('pair', [a, b], compute, later), 'digest-3');
  assert.equal(await digestByStamps('pair', [a, b], compute, later), 'digest-3', 'remembered');
  assert.equal(await digestByStamps('pair', [a, b], compute), 'digest-3', 'whatever the time now');
  assert.equal(await digestByStamps('pair', [b, a], compute, later), 'digest-4', 'another file list is another digest');
  assert.equal(await digestByStamps('other', [a, b], compute, later), 'digest-5', 'another id is another digest');
  // Any change to a file is seen, even with its size and modification time put back (ctime moves).
  const { mtime } = await stat(a);
  await writeFile(a, 'ALPHA');
  await utimes(a, mtime, mtime);
  assert.equal(await digestByStamps('pair', [b, a], compute, later), 'digest-6');
  // A missing file is never remembered.
  await rm(b);
  assert.equal(await digestByStamps('pair', [a, b], compute, later), 'digest-7');
  assert.equal(await digestByStamps('pair', [a, b], compute, later), 'digest-8');
});

test('sha256FileRemembered is the file sha256, and a memo folder that cannot be written only costs speed', async () => {
  const f = path.join(dir, 'model.onnx');
  const bytes = Buffer.from(Array.from({ length: 100_000 }, (_, i) => i % 251));
  await writeFile(f, bytes);
  const want = createHash('sha256').update(bytes).digest('hex');
  assert.equal(await sha256FileRemembered(f), want);
  assert.equal(await sha256FileRemembered(path.relative(process.cwd(), f)), want, 'a relative path');
  process.env.XFER_CACHE = path.join(f, 'not-a-folder');
  try {
    assert.equal(await sha256FileRemembered(f), want);
  } finally {
    process.env.XFER_CACHE = path.join(dir, 'cache');
  }
  assert.ok((await readdir(dir)).includes('model.onnx'));
});
