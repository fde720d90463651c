import { test } from 'node:test';
import assert from 'node:assert/strict';
import ort from '../src/model/ort.js';
import { readOnnxFile, serializeModel } from '../src/onnx/io.js';
import { emptyGraph, floatTensor, makeModel, node, valueInfo } from '../src/onnx/builder.js';
import { DataType, type ModelProto } from '../src/onnx/proto.js';
import { deriveTapModel, PIXEL_INPUT, resolveTapName } from '../src/model/taps.js';
import { listTensors } from '../src/model/graph.js';
import { buildTapModel } from '../src/model/tap-model.js';
import { pixelAffine, type ModelCard } from '../src/model/card.js';
import { XferError } from '../src/errors.js';
import { float16ToFloat32, toHalfBits } from '../src/util/float16.js';
import { NO_SHARED, shared } from './helpers/paths.js';

/** A small conv net: x[N,3,8,8] -> conv(4) -> relu -> conv(6) -> relu -> GAP -> flatten -> dense(2). */
function tinyNet(batch: number | string = 'N'): ModelProto {
  const g = emptyGraph('tiny');
  const rnd = (n: number, s: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898 + s) * 0.5);
  g.input.push(valueInfo('x', DataType.FLOAT, [batch, 3, 8, 8]));
  g.initializer.push(floatTensor('w1', [4, 3, 3, 3], rnd(108, 1)), floatTensor('b1', [4], rnd(4, 2)));
  g.initializer.push(floatTensor('w2', [6, 4, 3, 3], rnd(216, 3)), floatTensor('b2', [6], rnd(6, 4)));
  g.initializer.push(floatTensor('wd', [6, 2], rnd(12, 5)));
  g.node.push(
    node('Conv', ['x', 'w1', 'b1'], ['c1'], { pads: [1, 1, 1, 1] }),
    node('Relu', ['c1'], ['r1']),
    node('Conv', ['r1', 'w2', 'b2'], ['c2'], { pads: [1, 1, 1, 1] }),
    node('Relu', ['c2'], ['r2']),
    node('GlobalAveragePool', ['r2'], ['gap']),
    node('Flatten', ['gap'], ['flat']),
    node('MatMul', ['flat', 'wd'], ['logits']),
    node('Shape', ['r2'], ['r2shape']),
  );
  g.output.push(valueInfo('logits', DataType.FLOAT, [batch, 2]), valueInfo('r2shape', DataType.INT64, [4]));
  return makeModel(g);
}

async function runModel(m: ModelProto, feeds: Record<string, ort.Tensor>): Promise<Record<string, ort.Tensor>> {
  const s = await ort.InferenceSession.create(serializeModel(m));
  try {
    return await s.run(feeds);
  } finally {
    await s.release();
  }
}

/** Reference pooling in JS over NCHW rows. */
function poolRef(data: Float32Array, dims: readonly number[], pool: 'avg' | 'max' | 'avgmax'): Float32Array {
  const [n, c] = dims;
  const hw = dims.slice(2).reduce((a, b) => a * b, 1);
  const out = new Float32Array(n * c * (pool === 'avgmax' ? 2 : 1));
  for (let i = 0; i < n; i++)
    for (let k = 0; k < c; k++) {
      let s = 0;
      let m = -Infinity;
      for (let j = 0; j < hw; j++) {
        const v = data[(i * c + k) * hw + j];
        s += v;
        m = Math.max(m, v);
      }
      if (pool === 'avg') out[i * c + k] = s / hw;
      else if (pool === 'max') out[i * c + k] = m;
      else {
        out[i * 2 * c + k] = s / hw;
        out[i * 2 * c + c + k] = m;
      }
    }
  return out;
}

function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, rel: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  let scale = 0;
  for (let i = 0; i < expected.length; i++) scale = Math.max(scale, Math.abs(expected[i]));
  for (let i = 0; i < expected.length; i++) {
    const d = Math.abs(actual[i] - expected[i]);
    if (d > rel * Math.max(Math.abs(expected[i]), 1e-3 * scale)) assert.fail(`${what}[${i}]: ${actual[i]} vs ${expected[i]} (rel tol ${rel})`);
  }
}

test('tapping an early tensor prunes every later node', () => {
  const { model, taps } = deriveTapModel(tinyNet(), [{ name: 'r1', pool: 'none' }]);
  const ops = model.graph.node.map((n) => n.opType);
  assert.deepEqual(ops, ['Conv', 'Relu']);
  assert.deepEqual(model.graph.initializer.map((t) => t.name).sort(), ['b1', 'w1']);
  assert.equal(taps[0].tensor, 'r1');
});

test('pooled taps equal JS pooling of the unmodified model\'s tensors', async () => {
  const x = new ort.Tensor('float32', Float32Array.from({ length: 2 * 3 * 64 }, (_, i) => Math.cos(i)), [2, 3, 8, 8]);
  const full = tinyNet();
  full.graph.output.push({ name: 'r1' }, { name: 'r2' });
  const ref = await runModel(full, { x });
  // Both pooling forms: rank-agnostic (Reshape + Reduce*) and, with known ranks, Global*Pool.
  for (const [pool, ranks] of [
    ['avg', undefined],
    ['max', undefined],
    ['avgmax', undefined],
    ['avg', new Map([['r1', 4], ['r2', 4]])],
    ['max', new Map([['r1', 4], ['r2', 4]])],
    ['avgmax', new Map([['r1', 4], ['r2', 4]])],
  ] as const) {
    const { model } = deriveTapModel(
      tinyNet(),
      [
        { name: 'r1', pool },
        { name: 'r2', pool },
      ],
      { ranks },
    );
    assert.equal(model.graph.node.some((n) => n.opType.startsWith('Global') && n.output[0].startsWith('xfer_tap')), ranks !== undefined);
    const got = await runModel(model, { x });
    assertClose(got.xfer_tap_0.data as Float32Array, poolRef(ref.r1.data as Float32Array, ref.r1.dims, pool), 1e-5, `r1 ${pool}`);
    assertClose(got.xfer_tap_1.data as Float32Array, poolRef(ref.r2.data as Float32Array, ref.r2.dims, pool), 1e-5, `r2 ${pool}`);
    assert.deepEqual(got.xfer_tap_1.dims, [2, pool === 'avgmax' ? 12 : 6]);
  }
  const { model, taps } = deriveTapModel(tinyNet(), [
    { name: 'r2', pool: 'flatten' },
    { name: 'r1', pool: 'none' },
  ]);
  const got = await runModel(model, { x });
  assert.deepEqual(got.xfer_tap_0.dims, [2, 6 * 64]);
  assertClose(got.xfer_tap_0.data as Float32Array, ref.r2.data as Float32Array, 1e-6, 'r2 flatten');
  assert.equal(taps[1].output, 'r1', 'an unpooled tap is an output under its own name');
  assert.deepEqual(got.r1.dims, [2, 4, 8, 8]);
  assertClose(got.r1.data as Float32Array, ref.r1.data as Float32Array, 1e-6, 'r1 none');
});

test('taps resolve by tensor name, node name and index; unknown names list the closest', () => {
  const tensors = listTensors(tinyNet());
  assert.equal(resolveTapName('2', tensors).name, 'c2');
  assert.equal(resolveTapName('r2', tensors).name, 'r2');
  assert.throws(
    () => resolveTapName('relu2', tensors, 'tiny.onnx'),
    (e: unknown) => e instanceof XferError && /unknown tap "relu2"; closest: .*r2/.test(e.message) && /xfer layers/.test(e.hint ?? ''),
  );
  assert.throws(() => resolveTapName('99', tensors, 'tiny.onnx'), /out of range/);
});

test('a tap on a non-float tensor is refused', () => {
  assert.throws(
    () => deriveTapModel(tinyNet(), [{ name: 'r2shape', pool: 'none' }], { file: 'tiny.onnx', dtypes: new Map([['r2shape', 'int64']]) }),
    (e: unknown) => e instanceof XferError && /tensor r2shape of type int64, not a float tensor/.test(e.message),
  );
});

const tinyCard: ModelCard = {
  id: 'tiny',
  description: 'test net',
  source: 'test',
  license: 'MIT',
  input: { size: [8, 8], layout: 'NCHW', channel_order: 'RGB', dtype: 'float32', range: [0, 1], mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] },
  resize: { policy: 'crop', crop_pct: 0.875, interpolation: 'bilinear' },
};

test('in-graph uint8 preprocessing equals the JS-side normalisation', async () => {
  const pixels = Uint8Array.from({ length: 2 * 8 * 8 * 3 }, (_, i) => (i * 37) % 256);
  const { scale, bias } = pixelAffine(tinyCard.input);
  const x = new Float32Array(2 * 3 * 64);
  for (let n = 0; n < 2; n++)
    for (let p = 0; p < 64; p++) for (let c = 0; c < 3; c++) x[(n * 3 + c) * 64 + p] = pixels[(n * 64 + p) * 3 + c] * scale[c] + bias[c];
  const full = tinyNet();
  full.graph.output.push({ name: 'r2' });
  const ref = await runModel(full, { x: new ort.Tensor('float32', x, [2, 3, 8, 8]) });
  const { model } = await buildTapModel(tinyNet(), tinyCard, [{ name: 'r2', pool: 'avg' }], 'tiny');
  const got = await runModel(model, { [PIXEL_INPUT]: new ort.Tensor('uint8', pixels, [2, 8, 8, 3]) });
  assertClose(got.xfer_tap_0.data as Float32Array, poolRef(ref.r2.data as Float32Array, ref.r2.dims, 'avg'), 1e-5, 'pixels→r2 avg');
});

test('a fixed batch of 1 becomes symbolic when safe', async () => {
  const { model, fixedBatch } = await buildTapModel(tinyNet(1), tinyCard, [{ name: 'r2', pool: 'avg' }], 'tiny');
  assert.equal(fixedBatch, null);
  const got = await runModel(model, { [PIXEL_INPUT]: new ort.Tensor('uint8', new Uint8Array(3 * 8 * 8 * 3), [3, 8, 8, 3]) });
  assert.deepEqual(got.xfer_tap_0.dims, [3, 6]);
});

test('a fixed batch that cannot be made symbolic falls back to batch 1 with a warning', async () => {
  const m = tinyNet(1);
  // Reshape to a hard-coded [1, 6*64] breaks batching.
  m.graph.initializer.push({ name: 'shp', dims: [2], dataType: DataType.INT64, rawData: new Uint8Array(BigInt64Array.from([1n, 384n]).buffer) });
  m.graph.node.push(node('Reshape', ['r2', 'shp'], ['r2flat']));
  const notes: string[] = [];
  const { fixedBatch } = await buildTapModel(m, tinyCard, [{ name: 'r2flat', pool: 'none' }], 'tiny', (s) => notes.push(s));
  assert.equal(fixedBatch, 1);
  assert.match(notes.join('\n'), /fixed batch of 1 .* one image at a time/);
});

test('SqueezeNet fp16: float32 taps equal the unmodified fp16 model\'s tensors', { skip: NO_SHARED }, async () => {
  const file = shared('models', 'squeezenet1.1-fp16.onnx');
  const card: ModelCard = {
    ...tinyCard,
    id: 'squeezenet',
    input: { size: [224, 224], layout: 'NCHW', channel_order: 'BGR', dtype: 'float16', range: [0, 255], mean: [104, 117, 123], std: [1, 1, 1] },
  };
  const taps = ['fire3/concat_1', 'fire9/concat_1', 'pool10_1'];
  const { model } = await readOnnxFile(file);
  const derived = await buildTapModel(model, card, taps.map((name) => ({ name, pool: 'avg' as const })), file);
  assert.equal(derived.fixedBatch, null, 'squeezenet batch should become symbolic');
  const n = 2;
  const pixels = Uint8Array.from({ length: n * 224 * 224 * 3 }, (_, i) => (i * 7919) % 251);
  const got = await runModel(derived.model, { [PIXEL_INPUT]: new ort.Tensor('uint8', pixels, [n, 224, 224, 3]) });
  // Reference: the unmodified model (batch 1, one image at a time) with the same tensors as extra outputs; pooling in JS.
  const full = (await readOnnxFile(file)).model;
  full.graph.output.push(...taps.map((name) => ({ name })));
  const s = await ort.InferenceSession.create(serializeModel(full));
  const { scale, bias } = pixelAffine(card.input);
  for (let i = 0; i < n; i++) {
    const x = new Uint16Array(3 * 224 * 224);
    for (let p = 0; p < 224 * 224; p++)
      for (let c = 0; c < 3; c++) x[c * 224 * 224 + p] = toHalfBits(Math.fround(Math.fround(pixels[(i * 224 * 224 + p) * 3 + c] * scale[c]) + bias[c]));
    const ref = await s.run({ data_0: new ort.Tensor('float16', x, [1, 3, 224, 224]) });
    taps.forEach((name, k) => {
      const t = ref[name];
      const f32 = float16ToFloat32(t.data as Uint16Array);
      const expect = poolRef(f32, t.dims, 'avg');
      const c = expect.length;
      const row = (got[`xfer_tap_${k}`].data as Float32Array).subarray(i * c, (i + 1) * c);
      // The reference tensors are fp16 (relative resolution 2^-10). ORT computes ops whose result is
      // only consumed by our float32 cast in float32 (its CPU fp16 handling), so taps can be *more*
      // precise than the fp16 reference by up to one fp16 rounding; beyond that they must agree.
      assertClose(row, expect, 2 ** -10, `${name} image ${i}`);
    });
  }
  await s.release();
});

test('default backbone: block_6_expand_relu + out_relu avg taps equal the unmodified model (1e-5 rel)', async () => {
  const { openTappedBackbone } = await import('../src/model/runner.js');
  const tb = await openTappedBackbone('mobilenet_v2', {
    taps: [
      { name: 'block_6_expand_relu', pool: 'avg' },
      { name: 'out_relu', pool: 'avg' },
    ],
    device: { device: 'cpu' },
  });
  assert.deepEqual(
    tb.outputs.map((o) => [o.name, o.shape]),
    [
      ['block_6_expand_relu', [192]],
      ['out_relu', [1280]],
    ],
  );
  assert.equal(tb.fixedBatch, null);
  const n = 3;
  const pixels = Uint8Array.from({ length: n * 224 * 224 * 3 }, (_, i) => (i * 2654435761) >>> 24);
  const got = await tb.run(pixels, n);
  await tb.close();
  // Reference: the unmodified converted model with the two tensors added as outputs, input normalised in JS.
  const full = (await readOnnxFile(tb.file)).model;
  full.graph.output.push({ name: 'block_6_expand_relu' }, { name: 'out_relu' });
  // Same float32 arithmetic as the in-graph preprocessing (Cast, Mul by float32 scale, Add bias).
  const { scale, bias } = pixelAffine(tb.card.input);
  const x = Float32Array.from(pixels, (p, i) => Math.fround(Math.fround(p * Math.fround(scale[i % 3])) + Math.fround(bias[i % 3])));
  const ref = await runModel(full, { input_1: new ort.Tensor('float32', x, [n, 224, 224, 3]) });
  assertClose(got[0], poolRef(ref.block_6_expand_relu.data as Float32Array, ref.block_6_expand_relu.dims, 'avg'), 1e-5, 'block_6_expand_relu');
  assertClose(got[1], poolRef(ref.out_relu.data as Float32Array, ref.out_relu.dims, 'avg'), 1e-5, 'out_relu');
  // Early taps prune the rest of the network.
  const early = (await buildTapModel(full, tb.card, [{ name: 'block_6_expand_relu', pool: 'avg' }], 'mobilenet_v2')).model;
  assert.ok(early.graph.node.length < full.graph.node.length / 2, `pruned model has ${early.graph.node.length} of ${full.graph.node.length} nodes`);
  assert.ok(!early.graph.node.some((nd) => nd.output.includes('out_relu')));
});

test('default backbone: five unpooled taps in one model (an ORT Identity-elimination case) equal the unmodified model', async () => {
  const { openTappedBackbone } = await import('../src/model/runner.js');
  const names = ['block_12_add', 'block_6_expand_relu', 'block_13_expand_relu', 'block_16_project_BN', 'out_relu'];
  const tb = await openTappedBackbone('mobilenet_v2', { taps: names.map((name) => ({ name, pool: 'none' as const })), device: { device: 'cpu' } });
  const n = 2;
  const pixels = Uint8Array.from({ length: n * 224 * 224 * 3 }, (_, i) => (i * 2246822519) >>> 24);
  const got = await tb.run(pixels, n);
  await tb.close();
  const full = (await readOnnxFile(tb.file)).model;
  full.graph.output.push(...names.map((name) => ({ name })));
  const { scale, bias } = pixelAffine(tb.card.input);
  const x = Float32Array.from(pixels, (p, i) => Math.fround(Math.fround(p * Math.fround(scale[i % 3])) + Math.fround(bias[i % 3])));
  const ref = await runModel(full, { input_1: new ort.Tensor('float32', x, [n, 224, 224, 3]) });
  names.forEach((name, i) => assertClose(got[i], ref[name].data as Float32Array, 1e-5, name));
});

test('default backbone lists every Keras layer with shapes', async () => {
  const { resolveBackbone } = await import('../src/model/registry.js');
  const { describeLayers } = await import('../src/model/layers.js');
  const b = await resolveBackbone('mobilenet_v2');
  const { model } = await readOnnxFile(b.file);
  const rows = await describeLayers(model, b.card);
  assert.ok(rows.length >= 150, `${rows.length} tensors`);
  const byName = new Map(rows.map((r) => [r.name, r]));
  assert.deepEqual(byName.get('block_13_expand_relu')?.shape?.slice(1), [576, 14, 14]);
  assert.deepEqual(byName.get('out_relu')?.shape?.slice(1), [1280, 7, 7]);
  assert.equal(byName.get('out_relu')?.mark, 'default');
  assert.equal(byName.get('block_6_expand_relu')?.mark, 'recommended');
  assert.ok(rows.every((r) => r.shape !== null), 'every tensor has a shape');
});

test('real photo: in-graph uint8 preprocessing equals the JS-side tensor (toModelTensor)', { skip: NO_SHARED }, async () => {
  const { resolvePreprocess } = await import('../src/image/plan.js');
  const { loadImagePixels, toModelTensor } = await import('../src/image/decode.js');
  const { loadCard } = await import('../src/model/card.js');
  const { REPO_ROOT } = await import('./helpers/paths.js');
  const path = await import('node:path');
  // SqueezeNet: BGR, 0..255 minus Caffe means, fp16, NCHW — every preprocessing step is exercised.
  const card = await loadCard(path.join(REPO_ROOT, 'test', 'fixtures', 'cards', 'squeezenet1.1.json'));
  const plan = resolvePreprocess(card);
  const px = await loadImagePixels(shared('images', 'parrot.jpg'), plan);
  const jsTensor = toModelTensor(px, plan) as Uint16Array;
  const file = shared('models', 'squeezenet1.1-fp16.onnx');
  const { model } = await readOnnxFile(file);
  const derived = await buildTapModel(model, card, [{ name: 'conv1_1', pool: 'none' }], file);
  const viaGraph = await runModel(derived.model, { [PIXEL_INPUT]: new ort.Tensor('uint8', px.data, [1, 224, 224, 3]) });
  const full = (await readOnnxFile(file)).model;
  full.graph.output.push({ name: 'conv1_1' });
  const viaJs = await runModel(full, { data_0: new ort.Tensor('float16', jsTensor, [1, 3, 224, 224]) });
  // Same fp16 input bits => same first-conv output (up to the float32-vs-fp16 compute note above).
  assertClose(got32(viaGraph.xfer_tap_0), float16ToFloat32(viaJs.conv1_1.data as Uint16Array), 2 ** -10, 'conv1_1');
});

function got32(t: ort.Tensor): Float32Array {
  return t.data as Float32Array;
}

/**
 * Why batch is only a speed knob on CPU (extract's CPU default batch, no padding of a shard's last
 * batch): every image's outputs are the same bits whatever batch it runs in, and whatever the thread
 * count. Checked on the default backbone and, with ../shared, fp16 SqueezeNet.
 */
async function assertBatchInvariant(spec: string, opts: { card?: string; taps: string[] }): Promise<void> {
  const { openTappedBackbone } = await import('../src/model/runner.js');
  const taps = opts.taps.map((name) => ({ name, pool: 'avg' as const }));
  const n = 8;
  let ref: Float32Array[] | null = null;
  for (const threads of [1, 2]) {
    const tb = await openTappedBackbone(spec, { card: opts.card, taps, device: { device: 'cpu', threads } });
    const [h, w] = tb.card.input.size;
    const img = h * w * 3;
    const pixels = Uint8Array.from({ length: n * img }, (_, i) => ((i * 2654435761) >>> 24) ^ (i >> 12));
    ref ??= await tb.run(pixels, n);
    for (const k of [1, 3, n]) {
      for (let i = 0; i < n; i += k) {
        const m = Math.min(k, n - i);
        const part = await tb.run(pixels.slice(i * img, (i + m) * img), m);
        part.forEach((p, t) => {
          const row = p.length / m;
          const same = p.every((v, j) => Object.is(v, ref![t][i * row + j]));
          assert.ok(same, `${spec} ${opts.taps[t]}: images ${i}..${i + m - 1} at batch ${m}, ${threads} thread(s) differ from batch ${n}, 1 thread`);
        });
      }
    }
    await tb.close();
  }
}

test('CPU: each image gives the same bits at batch 1, 3 and 8 and with 1 or 2 threads (default backbone)', async () => {
  await assertBatchInvariant('mobilenet_v2', { taps: ['block_6_expand_relu', 'out_relu'] });
});

test('CPU: batch- and thread-invariant outputs on fp16 SqueezeNet (../shared)', { skip: NO_SHARED }, async () => {
  const { REPO_ROOT } = await import('./helpers/paths.js');
  const path = await import('node:path');
  await assertBatchInvariant(shared('models', 'squeezenet1.1-fp16.onnx'), { card: path.join(REPO_ROOT, 'test', 'fixtures', 'cards', 'squeezenet1.1.json'), taps: ['fire5/concat_1', 'pool10_1'] });
});

test('a tensor computed from the weights alone (an Identity copy of a weight, as torch.onnx exports start with) is marked, and tapping it is refused naming it', async () => {
  const m = tinyNet();
  m.graph.node.unshift(node('Identity', ['w1'], ['w1_copy']));
  const tensors = listTensors(m);
  assert.equal(tensors.find((t) => t.name === 'w1_copy')?.fromInput, false);
  assert.ok(tensors.filter((t) => t.name !== 'w1_copy').every((t) => t.fromInput), 'every other tensor is computed from x');
  for (const pool of ['none', 'avg'] as const) {
    assert.throws(
      () => deriveTapModel(m, [{ name: 'w1_copy', pool }], { file: 'net.onnx' }),
      (e: unknown) => e instanceof XferError && /net\.onnx: tap "w1_copy" is tensor w1_copy \(Identity\), computed from the model's weights alone: it has no batch axis/.test(e.message) && /xfer layers net\.onnx/.test(e.hint ?? ''),
    );
  }
  const { describeLayers } = await import('../src/model/layers.js');
  const rows = await describeLayers(m, null, { probe: false });
  assert.deepEqual(rows.filter((r) => !r.fromInput).map((r) => r.name), ['w1_copy']);
});
