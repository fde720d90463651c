/**
 * A head trained on a backbone whose weights live in external data files: `predict`, `export` and
 * `eval` (features) accept the backbone with those weights and refuse it once the weight files
 * changed beside an unchanged .onnx file (whose sha256 alone would not tell).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { extractFeatures } from '../src/extract/pipeline.js';
import { trainHead } from '../src/heads/train.js';
import { checkCompatible, loadHead } from '../src/heads/model.js';
import { openFeatures, pickLayers } from '../src/features/reader.js';
import { openPredictor } from '../src/predict/predict.js';
import { exportOnnx } from '../src/predict/export.js';
import { makeDataset, makeExternalModel, makeTinyModel, tmpDir, useCacheIn } from './extract-helpers.js';

let dir: string;
let restoreCache: () => void;

before(async () => {
  dir = await tmpDir('xfer-predict-ext-');
  restoreCache = useCacheIn(dir);
});

after(async () => {
  restoreCache();
  await rm(dir, { recursive: true, force: true });
});

test('predict and export refuse a backbone whose external weights changed since the head was trained', async () => {
  const { card } = await makeTinyModel(dir);
  const model = await makeExternalModel(path.join(dir, 'extmodel'), 1);
  const data = path.join(dir, 'data');
  await makeDataset(data, ['a', 'b'], 6);
  const feats = path.join(dir, 'feats');
  await extractFeatures({ model, card, layers: ['r1'], data, out: feats, device: { device: 'cpu' }, workers: 1, env: {} });
  const headDir = path.join(dir, 'head');
  await trainHead({ features: feats, head: 'linear', out: headDir, val: 0.25 });
  const head = await loadHead(headDir);
  assert.match(String(head.source.model.external_sha256), /^[0-9a-f]{64}$/, 'the head records the external weights');

  const opts = { model, card, device: { device: 'cpu' as const } };
  const p = await openPredictor(headDir, opts);
  await p.close();
  const file = path.join(dir, 'exported.onnx');
  await exportOnnx(headDir, file, { model, card, verify: false });

  await makeExternalModel(path.join(dir, 'extmodel'), 2); // new weights, same .onnx bytes
  const refused = /trained on backbone tiny with external weights sha256 [0-9a-f]{12}, but .*ext\.onnx has sha256 [0-9a-f]{12}/;
  await assert.rejects(openPredictor(headDir, opts), refused);
  await assert.rejects(exportOnnx(headDir, file, { model, card, verify: false }), refused);

  // eval: features of the new weights do not fit the head.
  const feats2 = path.join(dir, 'feats2');
  await extractFeatures({ model, card, layers: ['r1'], data, out: feats2, device: { device: 'cpu' }, workers: 1, env: {} });
  const f2 = await openFeatures(feats2);
  assert.throws(() => checkCompatible(head, f2, pickLayers(f2), headDir), /with external weights sha256 [0-9a-f]{12} but .*feats2 holds features of it with external weights sha256 [0-9a-f]{12}/);
  const f1 = await openFeatures(feats);
  checkCompatible(head, f1, pickLayers(f1), headDir); // its own features still fit
});
