/** Preprocessing plans from cards, torchvision resize/crop geometry, and the exact JS tensor packing. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ModelCard } from '../src/model/card.js';
import { cardDifferences, describePlan, overridesFromRecord, pyRound, resizeGeometry, resolvePreprocess } from '../src/image/plan.js';
import { toModelTensor } from '../src/image/decode.js';
import { fromHalfBits, toHalfBits } from '../src/util/float16.js';
import { XferError } from '../src/errors.js';

const card: ModelCard = {
  id: 't',
  description: '',
  source: '',
  license: 'MIT',
  input: { size: [224, 224], layout: 'NCHW', channel_order: 'RGB', dtype: 'float32', range: [0, 1], mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] },
  resize: { policy: 'crop', crop_pct: 0.875, interpolation: 'bicubic' },
};

test('resolvePreprocess maps the card (kernel, affine, defaults) and applies overrides', () => {
  const p = resolvePreprocess(card);
  assert.deepEqual(p.size, [224, 224]);
  assert.equal(p.kernel, 'cubic');
  assert.equal(p.shrinkOnLoad, false);
  assert.deepEqual(p.background, [255, 255, 255]);
  assert.equal(p.limitInputPixels, 100_000_000);
  assert.ok(Math.abs(p.affine.scale[0] - 1 / 255 / 0.229) < 1e-12);
  assert.ok(Math.abs(p.affine.bias[2] - -0.406 / 0.225) < 1e-12);
  const q = resolvePreprocess(card, { interpolation: 'lanczos', policy: 'squash', shrinkOnLoad: true, background: [0, 0, 0] });
  assert.equal(q.kernel, 'lanczos3');
  assert.equal(q.policy, 'squash');
  assert.equal(q.shrinkOnLoad, true);
  assert.equal(describePlan(q).resize, 'squash');
  assert.throws(() => resolvePreprocess(card, { background: [0, 0, 256] }), XferError);
  assert.throws(() => resolvePreprocess(card, { crop_pct: 0 }), XferError);
});

test('a recorded plan (meta.json preprocessing) rebuilds the same plan on the same card; card-derived fields are compared', () => {
  const q = resolvePreprocess(card, { interpolation: 'lanczos', policy: 'squash', crop_pct: 1, shrinkOnLoad: true, applyIcc: true, background: [0, 0, 0], limitInputPixels: 5e6 });
  const rec = JSON.parse(JSON.stringify(describePlan(q))) as Record<string, unknown>;
  assert.deepEqual(resolvePreprocess(card, overridesFromRecord(rec)), q);
  assert.deepEqual(cardDifferences(q, rec), []);
  // written before ICC profiles were ignored by default: they were applied then
  const { apply_icc: _icc, ...old } = rec;
  assert.equal(overridesFromRecord(old).applyIcc, true);
  assert.equal(overridesFromRecord(describePlan(resolvePreprocess(card))).applyIcc, false);
  const other = resolvePreprocess({ ...card, input: { ...card.input, channel_order: 'BGR', mean: [0, 0, 0] } });
  assert.deepEqual(
    cardDifferences(other, rec).map((d) => d.split(' ')[0]),
    ['channel_order', 'bias'],
  );
});

test('pyRound rounds half to even like Python', () => {
  assert.deepEqual([0.5, 1.5, 2.5, 58.5, 16.4, 16.6].map(pyRound), [0, 2, 2, 58, 16, 17]);
});

test('crop geometry follows torchvision Resize(int(size/crop_pct)) + CenterCrop(size)', () => {
  // 500x375 landscape: Resize(256) -> 341x256 (int(256*500/375)); crop left round(58.5) = 58, top 16.
  assert.deepEqual(resizeGeometry(500, 375, { size: [224, 224], policy: 'crop', crop_pct: 0.875 }), { resizeWidth: 341, resizeHeight: 256, left: 58, top: 16, width: 224, height: 224 });
  // portrait 375x500
  assert.deepEqual(resizeGeometry(375, 500, { size: [224, 224], policy: 'crop', crop_pct: 0.875 }), { resizeWidth: 256, resizeHeight: 341, left: 16, top: 58, width: 224, height: 224 });
  // crop_pct 1: short side to 224.
  assert.deepEqual(resizeGeometry(640, 480, { size: [224, 224], policy: 'crop', crop_pct: 1 }), { resizeWidth: 298, resizeHeight: 224, left: 37, top: 0, width: 224, height: 224 });
  // squash ignores aspect.
  assert.deepEqual(resizeGeometry(640, 480, { size: [224, 224], policy: 'squash', crop_pct: 0.875 }), { resizeWidth: 224, resizeHeight: 224, left: 0, top: 0, width: 224, height: 224 });
  // 1x1 input and 299/0.875 (timm inception: int(341.71) = 341).
  assert.deepEqual(resizeGeometry(1, 1, { size: [299, 299], policy: 'crop', crop_pct: 0.875 }).resizeWidth, 341);
});

test('toModelTensor: float32 affine x = p*scale[c] + bias[c], NCHW / NHWC, fp16 bits', () => {
  const w = 3;
  const h = 2;
  const data = new Uint8Array(w * h * 3).map((_, i) => (i * 41 + 7) % 256);
  const px = { data, width: w, height: h };
  const c2 = { ...card, input: { ...card.input, size: [h, w] as [number, number] } };
  const p = resolvePreprocess(c2);
  const ref = (i: number, c: number) => Math.fround(Math.fround(data[i * 3 + c] * Math.fround(p.affine.scale[c])) + Math.fround(p.affine.bias[c]));
  const nchw = toModelTensor(px, p) as Float32Array;
  assert.ok(nchw instanceof Float32Array);
  for (let i = 0; i < w * h; i++) for (let c = 0; c < 3; c++) assert.equal(nchw[c * w * h + i], ref(i, c));
  const nhwc = toModelTensor(px, resolvePreprocess({ ...c2, input: { ...c2.input, layout: 'NHWC' } })) as Float32Array;
  for (let i = 0; i < w * h; i++) for (let c = 0; c < 3; c++) assert.equal(nhwc[i * 3 + c], ref(i, c));
  // Within float32 rounding of the textbook (p/255 - mean)/std.
  assert.ok(Math.abs(nchw[0] - (data[0] / 255 - 0.485) / 0.229) < 1e-5);
  const half = toModelTensor(px, resolvePreprocess({ ...c2, input: { ...c2.input, dtype: 'float16' } }));
  assert.ok(half instanceof Uint16Array);
  for (let i = 0; i < w * h; i++) for (let c = 0; c < 3; c++) assert.equal(half[c * w * h + i], toHalfBits(ref(i, c)));
  assert.ok(Math.abs(fromHalfBits(half[0]) - nchw[0]) < 1e-2);
});
