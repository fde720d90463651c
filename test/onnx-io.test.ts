import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile, readFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import ort from '../src/model/ort.js';
import { readOnnxFile, serializeModel, writeOnnxFile } from '../src/onnx/io.js';
import { emptyGraph, floatTensor, makeModel, node, valueInfo } from '../src/onnx/builder.js';
import { DataType, type ModelProto } from '../src/onnx/proto.js';
import { loadCard } from '../src/model/card.js';
import { XferError } from '../src/errors.js';
import { NO_SHARED, shared } from './helpers/paths.js';
import { tempDir } from './helpers/tmp.js';

function affine(): ModelProto {
  const g = emptyGraph('affine');
  g.input.push(valueInfo('x', DataType.FLOAT, ['N', 4]));
  g.initializer.push(floatTensor('w', [4, 3], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]), floatTensor('b', [3], [0.5, -0.5, 1]));
  g.node.push(node('MatMul', ['x', 'w'], ['xw']), node('Add', ['xw', 'b'], ['y']));
  g.output.push(valueInfo('y', DataType.FLOAT, ['N', 3]));
  return makeModel(g);
}

async function tmp(): Promise<string> {
  return tempDir('xfer-onnx-');
}

function rejectsWith(p: Promise<unknown>, re: RegExp): Promise<void> {
  return assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof XferError, `expected XferError, got ${String(e)}`);
    assert.match(e.message, re);
    assert.ok(e.hint && e.hint.length > 0, 'error carries a hint');
    return true;
  });
}

test('write then read round-trips a model that ORT runs', async () => {
  const dir = await tmp();
  const file = path.join(dir, 'm.onnx');
  await writeOnnxFile(file, affine());
  const loaded = await readOnnxFile(file);
  assert.equal(loaded.model.graph.node.length, 2);
  assert.match(loaded.sha256, /^[0-9a-f]{64}$/);
  const s = await ort.InferenceSession.create(serializeModel(loaded.model));
  const r = await s.run({ x: new ort.Tensor('float32', Float32Array.from([1, 0, 0, 1]), [1, 4]) });
  assert.deepEqual(Array.from(r.y.data as Float32Array), [1 + 10 + 0.5, 2 + 11 - 0.5, 3 + 12 + 1]);
});

/** Move tensor `w` to an external data file at `location` (relative to the model). */
async function withExternal(dir: string, location: string, writeData = true): Promise<string> {
  const m = affine();
  const w = m.graph.initializer.find((t) => t.name === 'w')!;
  const bytes = w.rawData!;
  const target = path.resolve(dir, location);
  if (writeData) {
    await mkdir(path.dirname(target), { recursive: true });
    await writeFile(target, Buffer.concat([Buffer.alloc(16), Buffer.from(bytes)]));
  }
  delete w.rawData;
  w.dataLocation = 1;
  w.externalData = [
    { key: 'location', value: location },
    { key: 'offset', value: '16' },
    { key: 'length', value: String(bytes.length) },
  ];
  const file = path.join(dir, 'ext.onnx');
  await writeOnnxFile(file, m);
  return file;
}

test('external data next to the model is loaded', async () => {
  const dir = await tmp();
  const file = await withExternal(dir, 'data/ext.bin');
  const { model } = await readOnnxFile(file);
  const s = await ort.InferenceSession.create(serializeModel(model));
  const r = await s.run({ x: new ort.Tensor('float32', Float32Array.from([0, 1, 0, 0]), [1, 4]) });
  assert.deepEqual(Array.from(r.y.data as Float32Array), [4.5, 4.5, 7]);
});

test('external data escaping the model folder is refused', async () => {
  const dir = await tmp();
  await mkdir(path.join(dir, 'm'));
  const file = await withExternal(path.join(dir, 'm'), '../outside.bin');
  await rejectsWith(readOnnxFile(file), /external data location "\.\.\/outside\.bin" .* escapes the model's folder/);
  const abs = await withExternal(path.join(dir, 'm'), '/etc/passwd', false);
  await rejectsWith(readOnnxFile(abs), /escapes the model's folder/);
});

test('missing external data names the file', async () => {
  const dir = await tmp();
  const file = await withExternal(dir, 'gone.bin', false);
  await rejectsWith(readOnnxFile(file), /external data file "gone\.bin" for tensor w is missing/);
});

test('missing, non-ONNX and truncated files get one-line errors', async () => {
  const dir = await tmp();
  await rejectsWith(readOnnxFile(path.join(dir, 'nope.onnx')), /nope\.onnx: model file not found/);
  const txt = path.join(dir, 'readme.onnx');
  await writeFile(txt, 'this is not a model, just some text\n'.repeat(20));
  await rejectsWith(readOnnxFile(txt), /readme\.onnx: not an ONNX model/);
  const empty = path.join(dir, 'empty.onnx');
  await writeFile(empty, '');
  await rejectsWith(readOnnxFile(empty), /empty file/);
  const good = path.join(dir, 'good.onnx');
  await writeOnnxFile(good, affine());
  const bytes = await readFile(good);
  const cut = path.join(dir, 'cut.onnx');
  await writeFile(cut, bytes.subarray(0, Math.floor(bytes.length * 0.6)));
  await rejectsWith(readOnnxFile(cut), /cut\.onnx: (truncated ONNX file|not an ONNX model)/);
});

test('truncated real model is reported as truncated', { skip: NO_SHARED }, async () => {
  const dir = await tmp();
  const bytes = await readFile(shared('models', 'squeezenet1.1-fp16.onnx'));
  const cut = path.join(dir, 'squeezenet-cut.onnx');
  await writeFile(cut, bytes.subarray(0, bytes.length - 1000));
  await rejectsWith(readOnnxFile(cut), /squeezenet-cut\.onnx: truncated ONNX file/);
});

test('a card with missing fields lists every problem', async () => {
  const dir = await tmp();
  const file = path.join(dir, 'card.json');
  await writeFile(file, JSON.stringify({ id: 'x', description: 'd', source: 's', license: 'MIT', input: { size: [224, 224], layout: 'NCHW' }, resize: { policy: 'crop' } }));
  await rejectsWith(loadCard(file), /card\.json: invalid model card: missing "input\.channel_order"; missing "input\.dtype".*missing "resize\.crop_pct"/);
  await writeFile(file, '{ not json');
  await assert.rejects(loadCard(file), /not valid JSON/);
});
