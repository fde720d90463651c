/**
 * Transformer token poolings (cls, mean, patch-mean, cls+mean) on a tiny ViT exported from PyTorch
 * (scripts/make-vit-fixture.py: attention, LayerNorm, GELU, class token), against PyTorch's own
 * poolings of its last hidden state; default taps found from graphs; cards from Hugging Face
 * preprocessor configs.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import ort from '../src/model/ort.js';
import { XferError } from '../src/errors.js';
import { readOnnxFile, serializeModel } from '../src/onnx/io.js';
import { deriveTapModel, POOLS, POOL_HELP, type Pool } from '../src/model/taps.js';
import { findDefaultTap } from '../src/model/default-tap.js';
import { cardFromPreprocessor, cardFromPreprocessorFile } from '../src/model/hf-card.js';
import { pixelAffine } from '../src/model/card.js';
import { resolveBackbone } from '../src/model/registry.js';
import { NO_SHARED, REPO_ROOT, shared } from './helpers/paths.js';
import { tempDir } from './helpers/tmp.js';

const VIT = path.join(REPO_ROOT, 'test', 'fixtures', 'tiny-vit.onnx');
const REF = JSON.parse(readFileSync(path.join(REPO_ROOT, 'test', 'fixtures', 'tiny-vit.json'), 'utf8')) as Record<string, unknown> & { input_shape: number[]; tokens: number; dim: number };

async function withEnv<T>(key: string, value: string, fn: () => Promise<T>): Promise<T> {
  const saved = process.env[key];
  process.env[key] = value;
  try {
    return await fn();
  } finally {
    if (saved === undefined) delete process.env[key];
    else process.env[key] = saved;
  }
}

function formulaInput(shape: number[]): Float32Array {
  const n = shape.reduce((a, b) => a * b, 1);
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = 0.5 * Math.sin(0.1 * i);
  return x;
}

for (const opset of [17, 18]) {
  test(`token poolings of a ViT match PyTorch (cls, mean, patch-mean, cls+mean), opset ${opset}`, async () => {
    const { model: exported } = await readOnnxFile(VIT);
    // Opset 18 moved ReduceMean's axes from an attribute to an input; the fixture's ops mean the same in both.
    const model = { ...exported, opsetImport: [{ domain: '', version: opset }] };
    const pools: Pool[] = ['cls', 'mean', 'patch-mean', 'cls+mean'];
    const derived = deriveTapModel(model, pools.map((pool) => ({ name: 'last_hidden_state', pool })), { ranks: new Map([['last_hidden_state', 3]]) });
    const s = await ort.InferenceSession.create(serializeModel(derived.model));
    try {
      const out = await s.run({ pixel_values: new ort.Tensor('float32', formulaInput(REF.input_shape), REF.input_shape) });
      pools.forEach((pool, i) => {
        const want = REF[pool] as number[][];
        const got = out[derived.taps[i].output];
        assert.deepEqual(got.dims, [REF.input_shape[0], pool === 'cls+mean' ? 2 * REF.dim : REF.dim], pool);
        const data = got.data as Float32Array;
        let worst = 0;
        want.flat().forEach((v, j) => (worst = Math.max(worst, Math.abs(v - data[j]))));
        assert.ok(worst < 1e-4, `${pool}: max abs diff ${worst}`);
      });
      // The poolings really differ (cls is not the mean), so the check above can fail.
      assert.ok(Math.abs((REF.cls as number[][])[0][0] - (REF.mean as number[][])[0][0]) > 1e-3);
    } finally {
      await s.release();
    }
  });
}

test('token poolings refuse tensors that are not rank 3; every pooling is documented', async () => {
  const { model } = await readOnnxFile(VIT);
  assert.throws(
    () => deriveTapModel(model, [{ name: 'last_hidden_state', pool: 'cls' }], { ranks: new Map([['last_hidden_state', 4]]) }),
    (e: XferError) => e instanceof XferError && /needs a rank-3 token tensor \[N,T,C\]/.test(e.message),
  );
  for (const p of POOLS) assert.ok(POOL_HELP[p].length > 10, p);
});

test('default tap from the graph: a ViT gives its token output pooled to CLS; a CNN its last global pooling', { skip: NO_SHARED }, async () => {
  const { model } = await readOnnxFile(VIT);
  const vit = findDefaultTap(model);
  assert.deepEqual({ tensor: vit?.tensor, pool: vit?.pool }, { tensor: 'last_hidden_state', pool: 'cls' });
  const sq = findDefaultTap((await readOnnxFile(shared('models', 'squeezenet1.1-fp16.onnx'))).model);
  assert.equal(sq?.pool, 'flatten');
  assert.match(sq?.why ?? '', /GlobalAveragePool/);
});

test('xfer card --from-hf: BitImageProcessor (DINOv2), ViT squash, ConvNeXt crop_pct, channel flip', async () => {
  // facebook/dinov2-* preprocessor_config.json (BitImageProcessor).
  const dino = cardFromPreprocessor(
    { crop_size: { height: 224, width: 224 }, do_center_crop: true, do_convert_rgb: true, do_normalize: true, do_rescale: true, do_resize: true, image_mean: [0.485, 0.456, 0.406], image_processor_type: 'BitImageProcessor', image_std: [0.229, 0.224, 0.225], resample: 3, rescale_factor: 0.00392156862745098, size: { shortest_edge: 256 } },
    'dinov2-small',
  );
  assert.deepEqual(dino.input.size, [224, 224]);
  assert.deepEqual(dino.resize, { policy: 'crop', crop_pct: 0.875, interpolation: 'bicubic' });
  assert.deepEqual(dino.input.range.map((v) => Number(v.toFixed(9))), [0, 1]);
  assert.deepEqual(dino.input.layout, 'NCHW');
  // The card's affine on pixel 255 equals the processor's (255/255 - mean)/std.
  const a = pixelAffine(dino.input);
  assert.ok(Math.abs(255 * a.scale[0] + a.bias[0] - (1 - 0.485) / 0.229) < 1e-9);
  // google/vit-base-patch16-224: squash to 224, bilinear, mean/std 0.5.
  const vit = cardFromPreprocessor({ do_normalize: true, do_resize: true, image_mean: [0.5, 0.5, 0.5], image_std: [0.5, 0.5, 0.5], resample: 2, size: 224 }, 'vit');
  assert.deepEqual(vit.resize, { policy: 'squash', crop_pct: 1, interpolation: 'bilinear' });
  // ConvNeXt: shortest_edge 224 with crop_pct 0.875 → resize to 256, crop 224.
  const cnx = cardFromPreprocessor({ crop_pct: 0.875, do_normalize: true, do_resize: true, image_mean: [0.485, 0.456, 0.406], image_std: [0.229, 0.224, 0.225], resample: 3, size: { shortest_edge: 224 } }, 'convnext');
  assert.deepEqual([cnx.input.size, cnx.resize.policy, cnx.resize.crop_pct], [[224, 224], 'crop', 0.875]);
  // MobileViT: no normalisation, BGR.
  const mvit = cardFromPreprocessor({ crop_size: { height: 256, width: 256 }, do_center_crop: true, do_flip_channel_order: true, do_rescale: true, do_resize: true, resample: 2, size: { shortest_edge: 288 } }, 'mvit');
  assert.equal(mvit.input.channel_order, 'BGR');
  assert.deepEqual([mvit.input.mean, mvit.input.std], [[0, 0, 0], [1, 1, 1]]);
  // Normalisation before the flip: the card's (BGR-order) mean is the processor's reversed.
  const flipped = cardFromPreprocessor({ do_flip_channel_order: true, image_mean: [0.1, 0.2, 0.3], image_std: [1, 2, 3], size: { height: 32, width: 32 } }, 'f');
  assert.deepEqual([flipped.input.mean, flipped.input.std], [[0.3, 0.2, 0.1], [3, 2, 1]]);
  // A user's model by path with a card that names no taps: the default tap comes from the graph.
  const dir0 = await tempDir('xfer-vitcard-');
  try {
    const cardFile = path.join(dir0, 'tiny.card.json');
    await writeFile(cardFile, JSON.stringify(cardFromPreprocessor({ size: { height: 32, width: 32 }, image_mean: [0.5, 0.5, 0.5], image_std: [0.5, 0.5, 0.5] }, 'tiny-vit')));
    const b = await withEnv('XFER_CACHE', dir0, () => resolveBackbone(VIT, { card: cardFile }));
    assert.deepEqual([b.card?.taps?.default, b.card?.taps?.pool], ['last_hidden_state', 'cls']);
  } finally {
    await rm(dir0, { recursive: true, force: true });
  }
  assert.throws(() => cardFromPreprocessor({ size: { shortest_edge: 224 }, resample: 3 }, 'x'), /varying size/);
  assert.throws(() => cardFromPreprocessor({ size: 224, resample: 4 }, 'x'), /BOX/);
  const dir = await tempDir('xfer-hf-');
  try {
    await writeFile(path.join(dir, 'bad.json'), '{');
    await assert.rejects(cardFromPreprocessorFile(path.join(dir, 'bad.json'), 'x'), /--from-hf .*not valid JSON/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
