import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { serializeModel } from '../src/onnx/io.js';
import { emptyGraph, makeModel, node, valueInfo } from '../src/onnx/builder.js';
import { DataType } from '../src/onnx/proto.js';
import { cudaProviderInstalled, openSession, parseDevice } from '../src/model/session.js';
import { XferError } from '../src/errors.js';
import { tempDir } from './helpers/tmp.js';

const model = (() => {
  const g = emptyGraph('relu');
  g.input.push(valueInfo('x', DataType.FLOAT, ['N', 2]));
  g.node.push(node('Relu', ['x'], ['y']));
  g.output.push(valueInfo('y', DataType.FLOAT, ['N', 2]));
  return serializeModel(makeModel(g));
})();

async function withBinDir<T>(dir: string | undefined, fn: () => Promise<T>): Promise<T> {
  const old = process.env.XFER_ORT_BIN_DIR;
  if (dir === undefined) delete process.env.XFER_ORT_BIN_DIR;
  else process.env.XFER_ORT_BIN_DIR = dir;
  try {
    return await fn();
  } finally {
    if (old === undefined) delete process.env.XFER_ORT_BIN_DIR;
    else process.env.XFER_ORT_BIN_DIR = old;
  }
}

test('--device values are validated', () => {
  assert.deepEqual(parseDevice('cuda:1'), { kind: 'cuda', id: 1 });
  assert.deepEqual(parseDevice('auto'), { kind: 'auto', id: 0 });
  assert.throws(() => parseDevice('gpu'), (e: unknown) => e instanceof XferError && /expected auto, cpu, cuda or cuda:<id>, got "gpu"/.test(e.message));
  assert.throws(() => parseDevice('cpu:1'), XferError);
});

test('auto uses CPU without a notice when the CUDA provider is not installed (no GPU asked for or found)', async () => {
  const empty = await tempDir('xfer-ortbin-');
  await withBinDir(empty, async () => {
    assert.equal(cudaProviderInstalled(), false);
    const notes: string[] = [];
    const s = await openSession(model, { device: 'auto' }, (m) => notes.push(m));
    assert.equal(s.provider, 'cpu');
    assert.deepEqual(notes, []);
    await s.session.release();
  });
});

test('cuda fails with an actionable message when the provider is not installed', async () => {
  const empty = await tempDir('xfer-ortbin-');
  await withBinDir(empty, async () => {
    await assert.rejects(openSession(model, { device: 'cuda:0' }), (e: unknown) => {
      assert.ok(e instanceof XferError);
      assert.match(e.message, /--device cuda:0: onnxruntime-node's CUDA execution provider is not installed/);
      assert.match(e.hint ?? '', /npx xfer-setup-cuda/);
      assert.match(e.hint ?? '', /--device cpu/);
      return true;
    });
  });
});

const REAL_CUDA = cudaProviderInstalled() ? 'a real CUDA provider is installed here: the failure cannot be simulated' : false;

test('a provider library that is present but cannot start: cuda errors, auto falls back to CPU', { skip: REAL_CUDA }, async () => {
  // Pretend the provider is installed (an empty file in a fake binary folder); ORT then fails to
  // load it, which is exactly the failure a half-set-up machine shows (driver or CUDA libs missing).
  const fake = await tempDir('xfer-ortbin-');
  await writeFile(path.join(fake, 'libonnxruntime_providers_cuda.so'), '');
  await withBinDir(fake, async () => {
    await assert.rejects(openSession(model, { device: 'cuda' }), /CUDA execution provider failed to start/);
    const notes: string[] = [];
    const s = await openSession(model, { device: 'auto', threads: 1 }, (m) => notes.push(m));
    assert.equal(s.provider, 'cpu');
    assert.match(notes.join('\n'), /CUDA provider failed to start .*using CPU/);
    await s.session.release();
  });
});

test('cpu sessions honour --threads and reject bad values', async () => {
  const s = await openSession(model, { device: 'cpu', threads: 1 });
  assert.equal(s.provider, 'cpu');
  await s.session.release();
  await assert.rejects(openSession(model, { device: 'cpu', threads: 0 }), /--threads: expected a positive integer/);
});
