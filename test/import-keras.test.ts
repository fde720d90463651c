/**
 * tfjs-layers (Keras) importer and the nsfwjs built-in backbones.
 *
 * Reference values (test/fixtures/keras-reference.json) were computed by TensorFlow.js itself from
 * the same nsfwjs files (scripts/make-keras-reference.mjs, run in a throwaway environment). They
 * are NHWC; the converted ONNX graph holds 4-D taps as NCHW, so indices are remapped here.
 *
 * Tolerance: |onnx - tfjs| <= 1e-4 * max(abs_mean(reference tensor), 1) per sampled value and for
 * the whole-tensor mean: absolute 1e-4 for tensors of magnitude <= 1, relative to the abs-mean for
 * larger ones. Both runtimes compute in float32 from identical dequantized weights, so differences
 * come only from summation order; the worst observed is ~1.3e-5 (block_16_project_BN, 50+ layers
 * deep), a 8x margin. A purely abs-mean-relative bound would be too tight for sparse post-ReLU maps
 * (out_relu: abs-mean 0.05, values up to 4), where the error scales with the non-zero values.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ort from '../src/model/ort.js';
import { readOnnxFile, serializeModel } from '../src/onnx/io.js';
import { valueInfo } from '../src/onnx/builder.js';
import { DataType, type ModelProto } from '../src/onnx/proto.js';
import { XferError } from '../src/errors.js';
import { builtinOnnxPath, nsfwjsModelDir } from '../src/import/keras/nsfwjs.js';
import { extractModelJson } from '../src/import/keras/bundle.js';
import { parseTopology } from '../src/import/keras/topology.js';
import { convertTfjsLayersModel } from '../src/import/keras/convert.js';
import { parseJsLiteral } from '../src/import/keras/literal.js';
import { decodeWeights } from '../src/import/keras/weights.js';
import { toHalfBits } from '../src/util/float16.js';
import { tempDir } from './helpers/tmp.js';

interface RefLayer {
  shape: number[];
  mean: number;
  abs_mean: number;
  indices: number[];
  values: number[];
}
interface Reference {
  inputs: { seed: number };
  models: Record<string, { input_size: number; layers: Record<string, RefLayer> }>;
}

const here = path.dirname(fileURLToPath(import.meta.url));
// Compiled to dist/test/: the fixture stays in the source tree.
const FIXTURE = path.resolve(here, '..', '..', 'test', 'fixtures', 'keras-reference.json');

let cache: string;
let savedCache: string | undefined;
let reference: Reference;
const converted = new Map<string, { file: string; ms: number }>();

before(async () => {
  savedCache = process.env.XFER_CACHE;
  cache = await tempDir('xfer-keras-test-');
  process.env.XFER_CACHE = cache;
  reference = JSON.parse(await readFile(FIXTURE, 'utf8')) as Reference;
});

after(async () => {
  if (savedCache === undefined) delete process.env.XFER_CACHE;
  else process.env.XFER_CACHE = savedCache;
  await rm(cache, { recursive: true, force: true });
});

function lcgInput(seed: number, n: number): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(1664525, s) + 1013904223) >>> 0;
    out[i] = s / 4294967296;
  }
  return out;
}

async function convertOnce(model: 'mobilenet_v2' | 'inception_v3'): Promise<string> {
  const hit = converted.get(model);
  if (hit) return hit.file;
  const notices: string[] = [];
  const t0 = Date.now();
  const file = await builtinOnnxPath(model, { onProgress: (m) => notices.push(m) });
  const ms = Date.now() - t0;
  assert.equal(notices.length, 1, 'one progress notice for a conversion');
  assert.match(notices[0], new RegExp(`converting nsfwjs ${model}`));
  assert.match(path.basename(file), new RegExp(`^${model}-[0-9a-f]{16}\\.onnx$`));
  assert.equal(path.dirname(file), path.join(cache, 'models'));
  converted.set(model, { file, ms });
  return file;
}

/** Run a model with extra graph outputs for `taps`; returns every requested tensor. */
async function runWithTaps(model: ModelProto, input: Float32Array, size: number, taps: string[]): Promise<Record<string, ort.Tensor>> {
  const outputs = new Set(model.graph.output.map((o) => o.name));
  for (const t of taps) if (!outputs.has(t)) model.graph.output.push(valueInfo(t, DataType.FLOAT, null));
  const session = await ort.InferenceSession.create(serializeModel(model));
  try {
    return await session.run({ input_1: new ort.Tensor('float32', input, [1, size, size, 3]) }, taps);
  } finally {
    await session.release();
  }
}

/** Compare ONNX outputs with the tfjs reference; returns the worst error relative to abs_mean per layer. */
function compare(model: string, got: Record<string, ort.Tensor>, layers: Record<string, RefLayer>): Record<string, { maxAbs: number; rel: number }> {
  const report: Record<string, { maxAbs: number; rel: number }> = {};
  for (const [name, ref] of Object.entries(layers)) {
    const t = got[name];
    assert.ok(t, `${model}: no output for ${name}`);
    const data = t.data as Float32Array;
    const tol = 1e-4 * Math.max(ref.abs_mean, 1);
    let maxAbs = 0;
    if (ref.shape.length === 4) {
      const [, h, w, c] = ref.shape;
      assert.deepEqual(t.dims, [1, c, h, w], `${model}/${name}: NCHW dims`);
      ref.indices.forEach((idx, k) => {
        const ch = idx % c;
        const x = Math.floor(idx / c) % w;
        const y = Math.floor(idx / (c * w));
        const v = data[(ch * h + y) * w + x];
        maxAbs = Math.max(maxAbs, Math.abs(v - ref.values[k]));
      });
    } else {
      assert.deepEqual(t.dims, ref.shape, `${model}/${name}: dims`);
      ref.indices.forEach((idx, k) => {
        maxAbs = Math.max(maxAbs, Math.abs(data[idx] - ref.values[k]));
      });
    }
    let sum = 0;
    for (const v of data) sum += v;
    const meanErr = Math.abs(sum / data.length - ref.mean);
    assert.ok(maxAbs <= tol, `${model}/${name}: max |onnx - tfjs| = ${maxAbs} > ${tol}`);
    assert.ok(meanErr <= tol, `${model}/${name}: mean differs by ${meanErr} > ${tol}`);
    report[name] = { maxAbs, rel: maxAbs / ref.abs_mean };
  }
  return report;
}

test('mobilenet_v2: converts once into the cache, second call is a cache hit', async () => {
  const file = await convertOnce('mobilenet_v2');
  const before = await stat(file);
  const notices: string[] = [];
  const again = await builtinOnnxPath('mobilenet_v2', { onProgress: (m) => notices.push(m) });
  assert.equal(again, file);
  assert.deepEqual(notices, [], 'no conversion notice on a cache hit');
  assert.equal((await stat(file)).mtimeMs, before.mtimeMs, 'cached file not rewritten');
  console.log(`# mobilenet_v2 conversion: ${converted.get('mobilenet_v2')?.ms} ms`);
});

test('mobilenet_v2: NHWC input, every Keras layer is a tensor named after it', async () => {
  const { model } = await readOnnxFile(await convertOnce('mobilenet_v2'));
  const g = model.graph;
  assert.deepEqual(g.input.map((i) => i.name), ['input_1']);
  const dims = g.input[0].type?.tensorType?.shape?.dim?.map((d) => d.dimParam ?? d.dimValue);
  assert.deepEqual(dims, ['N', 224, 224, 3]);
  assert.deepEqual(g.output.map((o) => o.name), ['dense_3']);
  const produced = new Set(g.node.flatMap((n) => n.output));
  const dir = await nsfwjsModelDir('mobilenet_v2');
  const kg = parseTopology(extractModelJson(await readFile(path.join(dir, 'model.min.js'), 'utf8'), 'model.min.js').modelTopology);
  const layerNames = kg.layers.filter((l) => l.className !== 'InputLayer').map((l) => l.name);
  assert.ok(layerNames.length >= 150, `expected ~160 layers, got ${layerNames.length}`);
  for (const n of layerNames) assert.ok(produced.has(n), `no tensor named ${n}`);
  for (const n of ['block_13_expand_relu', 'out_relu', 'block_16_project_BN', 'block_15_add', 'flatten_1']) assert.ok(produced.has(n), n);
  // The single NHWC → NCHW transpose sits right after the input.
  const transposes = g.node.filter((n) => n.opType === 'Transpose');
  assert.equal(transposes[0].input[0], 'input_1');
  assert.equal(transposes.length, 2, 'input transpose + flatten back-transpose');
});

test('mobilenet_v2: activations match TensorFlow.js', async () => {
  const ref = reference.models.mobilenet_v2;
  const { model } = await readOnnxFile(await convertOnce('mobilenet_v2'));
  const size = ref.input_size;
  const got = await runWithTaps(model, lcgInput(reference.inputs.seed, size * size * 3), size, Object.keys(ref.layers));
  const report = compare('mobilenet_v2', got, ref.layers);
  for (const [k, v] of Object.entries(report)) console.log(`# mobilenet_v2 ${k}: max abs err ${v.maxAbs.toExponential(2)} (${v.rel.toExponential(2)} of abs-mean)`);
});

test('inception_v3: converts and matches TensorFlow.js', async () => {
  const ref = reference.models.inception_v3;
  const file = await convertOnce('inception_v3');
  console.log(`# inception_v3 conversion: ${converted.get('inception_v3')?.ms} ms`);
  const { model } = await readOnnxFile(file);
  const produced = new Set(model.graph.node.flatMap((n) => n.output));
  for (const n of ['mixed0', 'mixed9_1', 'mixed10', 'average_pooling2d_10']) assert.ok(produced.has(n), n);
  const size = ref.input_size;
  const got = await runWithTaps(model, lcgInput(reference.inputs.seed, size * size * 3), size, Object.keys(ref.layers));
  const report = compare('inception_v3', got, ref.layers);
  for (const [k, v] of Object.entries(report)) console.log(`# inception_v3 ${k}: max abs err ${v.maxAbs.toExponential(2)} (${v.rel.toExponential(2)} of abs-mean)`);
});

// ------------------------------------------------------------------ small synthetic models

function inputLayer(name: string, shape: (number | null)[]): unknown {
  return { name, class_name: 'InputLayer', config: { name, batch_input_shape: [null, ...shape], dtype: 'float32' }, inbound_nodes: [] };
}
function layer(name: string, cls: string, config: Record<string, unknown>, from: string[]): unknown {
  return { name, class_name: cls, config: { name, ...config }, inbound_nodes: [[...from.map((f) => [f, 0, 0, {}])]] };
}
function modelJson(layers: unknown[], output: string, weights: { name: string; shape: number[]; data: Float32Array }[] = []) {
  const bytes = new Uint8Array(weights.reduce((a, w) => a + w.data.byteLength, 0));
  let off = 0;
  for (const w of weights) {
    bytes.set(new Uint8Array(w.data.buffer, w.data.byteOffset, w.data.byteLength), off);
    off += w.data.byteLength;
  }
  const first = (layers[0] as { name: string }).name;
  return {
    json: {
      modelTopology: { model_config: { class_name: 'Model', config: { name: 'm', layers, input_layers: [[first, 0, 0]], output_layers: [[output, 0, 0]] } } },
      weightsManifest: [{ paths: ['w.bin'], weights: weights.map((w) => ({ name: w.name, shape: w.shape, dtype: 'float32' })) }],
    },
    read: () => bytes,
  };
}

async function runSmall(json: unknown, read: () => Uint8Array, input: Float32Array, dims: number[]): Promise<ort.Tensor> {
  const model = await convertTfjsLayersModel(json, read);
  const s = await ort.InferenceSession.create(serializeModel(model));
  try {
    const out = await s.run({ [s.inputNames[0]]: new ort.Tensor('float32', input, dims) });
    return out[s.outputNames[0]];
  } finally {
    await s.release();
  }
}

/** Naive TF conv2d (NHWC, kernel [kh,kw,cin,cout]) with TF "SAME" padding. */
function tfConvSame(x: Float32Array, h: number, w: number, cin: number, k: Float32Array, kh: number, kw: number, cout: number, stride: number): { data: Float32Array; oh: number; ow: number } {
  const oh = Math.ceil(h / stride);
  const ow = Math.ceil(w / stride);
  const padT = Math.floor(Math.max((oh - 1) * stride + kh - h, 0) / 2);
  const padL = Math.floor(Math.max((ow - 1) * stride + kw - w, 0) / 2);
  const out = new Float32Array(oh * ow * cout);
  for (let oy = 0; oy < oh; oy++)
    for (let ox = 0; ox < ow; ox++)
      for (let o = 0; o < cout; o++) {
        let acc = 0;
        for (let ky = 0; ky < kh; ky++)
          for (let kx = 0; kx < kw; kx++) {
            const iy = oy * stride + ky - padT;
            const ix = ox * stride + kx - padL;
            if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
            for (let i = 0; i < cin; i++) acc += x[(iy * w + ix) * cin + i] * k[((ky * kw + kx) * cin + i) * cout + o];
          }
        out[(oy * ow + ox) * cout + o] = acc;
      }
  return { data: out, oh, ow };
}

test('Conv2D "same" with stride 2 on an even input pads like TF (asymmetric), Flatten keeps NHWC order', async () => {
  const [h, w, cin, cout, kh, kw] = [6, 6, 2, 3, 3, 3];
  const k = Float32Array.from({ length: kh * kw * cin * cout }, (_, i) => ((i * 7) % 11) / 10 - 0.5);
  const x = lcgInput(7, h * w * cin);
  const { json, read } = modelJson(
    [inputLayer('in', [h, w, cin]), layer('conv', 'Conv2D', { filters: cout, kernel_size: [kh, kw], strides: [2, 2], padding: 'same', use_bias: false, activation: 'linear' }, ['in']), layer('flat', 'Flatten', {}, ['conv'])],
    'flat',
    [{ name: 'conv/kernel', shape: [kh, kw, cin, cout], data: k }],
  );
  const got = await runSmall(json, read, x, [1, h, w, cin]);
  const want = tfConvSame(x, h, w, cin, k, kh, kw, cout, 2);
  assert.deepEqual(got.dims, [1, want.oh * want.ow * cout]);
  const d = got.data as Float32Array;
  for (let i = 0; i < want.data.length; i++) assert.ok(Math.abs(d[i] - want.data[i]) < 1e-5, `flat[${i}]: ${d[i]} vs ${want.data[i]}`);
});

test('DepthwiseConv2D (multiplier 2), ReLU with max_value/negative_slope/threshold, AveragePooling2D "same"', async () => {
  const [h, w, c, m] = [4, 5, 2, 2];
  const dk = Float32Array.from({ length: 3 * 3 * c * m }, (_, i) => ((i * 5) % 7) / 7 - 0.4);
  const x = lcgInput(9, h * w * c).map((v) => v * 4 - 2);
  const { json, read } = modelJson(
    [
      inputLayer('in', [h, w, c]),
      layer('dw', 'DepthwiseConv2D', { kernel_size: [3, 3], strides: [1, 1], padding: 'same', depth_multiplier: m, use_bias: false, activation: 'linear' }, ['in']),
      layer('act', 'ReLU', { max_value: 1.5, negative_slope: 0.1, threshold: 0.2 }, ['dw']),
      layer('pool', 'AveragePooling2D', { pool_size: [2, 2], strides: [2, 2], padding: 'same' }, ['act']),
      layer('flat', 'Flatten', {}, ['pool']),
    ],
    'flat',
    [{ name: 'dw/depthwise_kernel', shape: [3, 3, c, m], data: dk }],
  );
  const got = (await runSmall(json, read, x, [1, h, w, c])).data as Float32Array;
  // Reference in NHWC.
  const co = c * m;
  const dw = new Float32Array(h * w * co);
  for (let y = 0; y < h; y++)
    for (let xx = 0; xx < w; xx++)
      for (let ch = 0; ch < c; ch++)
        for (let j = 0; j < m; j++) {
          let acc = 0;
          for (let ky = 0; ky < 3; ky++)
            for (let kx = 0; kx < 3; kx++) {
              const iy = y + ky - 1;
              const ix = xx + kx - 1;
              if (iy >= 0 && iy < h && ix >= 0 && ix < w) acc += x[(iy * w + ix) * c + ch] * dk[((ky * 3 + kx) * c + ch) * m + j];
            }
          dw[(y * w + xx) * co + ch * m + j] = acc;
        }
  const act = dw.map((v) => (v >= 1.5 ? 1.5 : v >= 0.2 ? v : 0.1 * (v - 0.2)));
  const oh = Math.ceil(h / 2);
  const ow = Math.ceil(w / 2);
  const want: number[] = [];
  for (let y = 0; y < oh; y++)
    for (let xx = 0; xx < ow; xx++)
      for (let o = 0; o < co; o++) {
        // TF SAME pooling: total pad = max((o-1)*s + k - n, 0), extra at the end; average over real pixels.
        let s = 0;
        let n = 0;
        for (let ky = 0; ky < 2; ky++)
          for (let kx = 0; kx < 2; kx++) {
            const iy = y * 2 + ky;
            const ix = xx * 2 + kx;
            if (iy < h && ix < w) {
              s += act[(iy * w + ix) * co + o];
              n++;
            }
          }
        want.push(s / n);
      }
  assert.equal(got.length, want.length);
  want.forEach((v, i) => assert.ok(Math.abs(got[i] - v) < 1e-5, `out[${i}]: ${got[i]} vs ${v}`));
});

test('unknown layer type → XferError naming the layer and its type', async () => {
  const { json, read } = modelJson([inputLayer('in', [8, 8, 3]), layer('sep_1', 'SeparableConv2D', { filters: 4, kernel_size: [3, 3] }, ['in'])], 'sep_1');
  await assert.rejects(convertTfjsLayersModel(json, read, { file: 'model.json' }), (e: unknown) => {
    assert.ok(e instanceof XferError);
    assert.match(e.message, /sep_1/);
    assert.match(e.message, /SeparableConv2D/);
    assert.match(e.hint ?? '', /Conv2D/);
    return true;
  });
});

test('literal parser reads minified literals and refuses code', () => {
  const { value } = parseJsLiteral(`{a:!0,b:!1,c:.5,d:-1e-3,"e f":'x\\'y',g:[null,void 0,0x10],h:{}}`);
  assert.deepEqual(value, { a: true, b: false, c: 0.5, d: -0.001, 'e f': "x'y", g: [null, undefined, 16], h: {} });
  assert.throws(() => parseJsLiteral('{a:require("fs")}'), /not a literal/);
  assert.throws(() => parseJsLiteral('{a:1+1}'), /expected/);
});

test('weights: uint8 / uint16 dequantization, float16 and float32 entries', async () => {
  const u8 = Uint8Array.from([0, 1, 255]);
  const u16 = new Uint16Array([0, 1000]);
  const f16 = new Uint16Array([toHalfBits(1.5), toHalfBits(-2)]);
  const f32 = Float32Array.from([3.25]);
  const parts = [u8, new Uint8Array(u16.buffer), new Uint8Array(f16.buffer), new Uint8Array(f32.buffer)];
  const bytes = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let off = 0;
  for (const p of parts) {
    bytes.set(p, off);
    off += p.length;
  }
  const w = await decodeWeights(
    [
      {
        paths: ['a'],
        weights: [
          { name: 'l/a', shape: [3], dtype: 'float32', quantization: { dtype: 'uint8', min: -1, scale: 0.5 } },
          { name: 'l/b:0', shape: [2], dtype: 'float32', quantization: { dtype: 'uint16', min: 2, scale: 0.001 } },
          { name: 'l/c', shape: [2], dtype: 'float32', quantization: { dtype: 'float16' } },
          { name: 'l/d', shape: [1], dtype: 'float32' },
        ],
      },
    ],
    () => bytes,
  );
  assert.deepEqual([...(w.get('l/a')?.data ?? [])], [-1, -0.5, 126.5]);
  assert.deepEqual([...(w.get('l/b')?.data ?? [])], [2, Math.fround(3)]);
  assert.deepEqual([...(w.get('l/c')?.data ?? [])], [1.5, -2]);
  assert.deepEqual([...(w.get('l/d')?.data ?? [])], [3.25]);
});
