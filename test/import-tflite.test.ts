/**
 * TFLite import: reader and converter checked against plain-loop reference evaluations of TFLite ops
 * on the real quantized MobileNets, end-to-end ImageNet classification (parrot, hymenoptera val),
 * the cache, and bad inputs (not TFLite, truncated, unsupported op, several inputs, dynamic shapes).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, readdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Builder } from 'flatbuffers';
import ort from '../src/model/ort.js';
import sharp from 'sharp';
import { XferError } from '../src/errors.js';
import { importTflite, readTfliteModel, tfliteToOnnxCached, convertTflite, tfliteCard } from '../src/import/tflite/index.js';
import type { TfliteModel, TfliteTensor } from '../src/import/tflite/index.js';
import { samePads } from '../src/import/tflite/ops.js';
import { runImport } from '../src/cli/import-cmd.js';
import { pixelAffine, loadCard, type ModelCard } from '../src/model/card.js';
import { serializeModel } from '../src/onnx/io.js';
import { valueInfo } from '../src/onnx/builder.js';
import { DataType, type ModelProto } from '../src/onnx/proto.js';
import { NO_SHARED, REPO_ROOT, shared } from './helpers/paths.js';
import { tempDir } from './helpers/tmp.js';

const TFL = (f: string) => shared('models', 'tflite', f);
const V2 = 'mobilenet_v2_1.0_224_quant.tflite';
const TF2 = 'tf2_mobilenet_v2_1.0_224_ptq.tflite';
const V1 = 'mobilenet_v1_1.0_224_quant_embedding_extractor.tflite';
const CARDS = path.join(REPO_ROOT, 'test', 'fixtures', 'cards');

// ---------------------------------------------------------------- helpers: TFLite side (reference)

/** Dequantize a constant straight from the flatbuffer bytes (independent of the converter). */
function refConst(m: TfliteModel, t: TfliteTensor): Float64Array {
  const bytes = m.buffers[t.buffer];
  const n = t.shape.reduce((a, b) => a * b, 1);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const q = t.quant!;
  const inner = t.shape.slice(q.dim + 1).reduce((a, b) => a * b, 1);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const raw = t.type === 3 ? bytes[i] : t.type === 9 ? dv.getInt8(i) : dv.getInt32(4 * i, true);
    const c = q.scale.length > 1 ? Math.floor(i / inner) % q.scale.length : 0;
    out[i] = q.scale[c] * (raw - q.zeroPoint[c]);
  }
  return out;
}

function findOp(m: TfliteModel, builtin: number, nth = 0) {
  const sg = m.subgraphs[0];
  return sg.operators.filter((o) => m.operatorCodes[o.opcodeIndex].builtin === builtin)[nth];
}

/** TFLite CONV_2D / DEPTHWISE_CONV_2D (NHWC, SAME padding, fused RELU6) in plain loops. */
function refConv(x: Float64Array | Float32Array, [H, W, C]: number[], w: Float64Array, wShape: number[], b: Float64Array, stride: number, depthwise: boolean): { y: Float64Array; shape: number[] } {
  const [, KH, KW] = wShape;
  const Cout = depthwise ? wShape[3] : wShape[0];
  const OH = Math.ceil(H / stride);
  const OW = Math.ceil(W / stride);
  const padT = Math.floor(Math.max((OH - 1) * stride + KH - H, 0) / 2);
  const padL = Math.floor(Math.max((OW - 1) * stride + KW - W, 0) / 2);
  const y = new Float64Array(OH * OW * Cout);
  for (let oy = 0; oy < OH; oy++)
    for (let ox = 0; ox < OW; ox++)
      for (let co = 0; co < Cout; co++) {
        let acc = b[co];
        for (let ky = 0; ky < KH; ky++) {
          const iy = oy * stride - padT + ky;
          if (iy < 0 || iy >= H) continue;
          for (let kx = 0; kx < KW; kx++) {
            const ix = ox * stride - padL + kx;
            if (ix < 0 || ix >= W) continue;
            if (depthwise) acc += x[(iy * W + ix) * C + co] * w[(ky * KW + kx) * Cout + co];
            else for (let ci = 0; ci < C; ci++) acc += x[(iy * W + ix) * C + ci] * w[((co * KH + ky) * KW + kx) * C + ci];
          }
        }
        y[(oy * OW + ox) * Cout + co] = Math.min(Math.max(acc, 0), 6);
      }
  return { y, shape: [OH, OW, Cout] };
}

// ---------------------------------------------------------------- helpers: ONNX side

/** Run a converted model with extra graph outputs (tapped inner tensors); returns them by name. */
async function runTapped(model: ModelProto, input: Float32Array, dims: number[], taps: string[]): Promise<Record<string, ort.Tensor>> {
  const m: ModelProto = { ...model, graph: { ...model.graph, output: [...model.graph.output, ...taps.map((t) => valueInfo(t, DataType.FLOAT, null))] } };
  const s = await ort.InferenceSession.create(serializeModel(m));
  try {
    return (await s.run({ [s.inputNames[0]]: new ort.Tensor('float32', input, dims) })) as Record<string, ort.Tensor>;
  } finally {
    await s.release();
  }
}

/** NCHW (batch 1) ONNX tensor → NHWC array. */
function toNhwc(t: ort.Tensor): Float32Array {
  const [, C, H, W] = t.dims;
  const d = t.data as Float32Array;
  const out = new Float32Array(d.length);
  for (let c = 0; c < C; c++) for (let i = 0; i < H * W; i++) out[i * C + c] = d[c * H * W + i];
  return out;
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

function seeded(seed: number): () => number {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
}

// ---------------------------------------------------------------- helpers: images (card-driven, sharp)

/** Shorter side to size/crop_pct, centre crop, RGB uint8 → the card's range/mean/std (NHWC). */
async function preprocess(file: string, card: ModelCard, out: Float32Array, offset: number): Promise<void> {
  const [H, W] = card.input.size;
  const meta = await sharp(file).metadata();
  const short = Math.floor(H / card.resize.crop_pct);
  const [w0, h0] = [meta.width!, meta.height!];
  const [rw, rh] = w0 < h0 ? [short, Math.floor((h0 * short) / w0)] : [Math.floor((w0 * short) / h0), short];
  const { data } = await sharp(file)
    .removeAlpha()
    .toColourspace('srgb')
    .resize(rw, rh, { kernel: 'linear', fit: 'fill' })
    .extract({ left: Math.round((rw - W) / 2), top: Math.round((rh - H) / 2), width: W, height: H })
    .raw()
    .toBuffer({ resolveWithObject: true });
  const { scale, bias } = pixelAffine(card.input);
  for (let i = 0; i < H * W * 3; i++) out[offset + i] = data[i] * scale[i % 3] + bias[i % 3];
}

async function classify(session: ort.InferenceSession, card: ModelCard, files: string[], batch = 8): Promise<number[]> {
  const top: number[] = [];
  const per = 224 * 224 * 3;
  for (let s = 0; s < files.length; s += batch) {
    const chunk = files.slice(s, s + batch);
    const x = new Float32Array(chunk.length * per);
    await Promise.all(chunk.map((f, i) => preprocess(f, card, x, i * per)));
    const r = await session.run({ [session.inputNames[0]]: new ort.Tensor('float32', x, [chunk.length, 224, 224, 3]) });
    const y = r[session.outputNames[0]];
    const k = y.dims[1];
    const d = y.data as Float32Array;
    for (let i = 0; i < chunk.length; i++) {
      let best = 0;
      for (let j = 1; j < k; j++) if (d[i * k + j] > d[i * k + best]) best = j;
      top.push(best);
    }
  }
  return top;
}

/** Labels file lines; with 1001 lines (line 0 background) output index i is line i. */
async function labelsOf(card: ModelCard): Promise<string[]> {
  return (await readFile(path.resolve(card.dir!, card.labels!), 'utf8')).split('\n').map((l) => l.split(',')[0].trim());
}

// ---------------------------------------------------------------- reader + reference ops

test('reader: MobileNet v2 quant structure (TFL3, opcodes, quantization)', { skip: NO_SHARED }, async () => {
  const m = readTfliteModel(await readFile(TFL(V2)), V2);
  const sg = m.subgraphs[0];
  assert.equal(sg.operators.length, 66);
  assert.deepEqual(sg.inputs.length, 1);
  const input = sg.tensors[sg.inputs[0]];
  assert.deepEqual(input.shape, [1, 224, 224, 3]);
  assert.equal(input.type, 3);
  assert.deepEqual(input.quant?.scale, [0.0078125]);
  assert.deepEqual(input.quant?.zeroPoint, [128]);
  const tf2 = readTfliteModel(await readFile(TFL(TF2)), TF2);
  const dw = tf2.subgraphs[0].tensors[findOp(tf2, 4).inputs[1]];
  assert.equal(dw.quant?.dim, 3, 'depthwise weights are per-channel along dim 3');
  assert.equal(dw.quant?.scale.length, 32);
});

test('SAME padding follows TF (extra pixel at the end)', () => {
  assert.deepEqual(samePads(224, 3, 2, 1), [0, 1]);
  assert.deepEqual(samePads(112, 3, 1, 1), [1, 1]);
  assert.deepEqual(samePads(7, 7, 1, 1), [3, 3]);
  assert.deepEqual(samePads(5, 1, 2, 1), [0, 0]);
});

test('converted ops match plain-loop TFLite references (CONV_2D+RELU6, per-channel DEPTHWISE, ADD)', { skip: NO_SHARED }, async () => {
  const rnd = seeded(7);
  const x = Float32Array.from({ length: 224 * 224 * 3 }, () => rnd() * 2 - 1);
  const errors: Record<string, number> = {};

  // uint8 per-tensor model: first CONV_2D (stride 2, SAME → pads 0/1, fused RELU6), and an ADD.
  const v2 = readTfliteModel(await readFile(TFL(V2)), V2);
  const sg = v2.subgraphs[0];
  const conv = findOp(v2, 3);
  const add = findOp(v2, 0);
  const nameOf = (i: number) => sg.tensors[i].name.split(';')[0];
  const onnx = convertTflite(v2);
  const r = await runTapped(onnx, x, [1, 224, 224, 3], [nameOf(conv.outputs[0]), nameOf(add.inputs[0]), nameOf(add.inputs[1]), nameOf(add.outputs[0])]);
  const wT = sg.tensors[conv.inputs[1]];
  const ref = refConv(x, [224, 224, 3], refConst(v2, wT), wT.shape, refConst(v2, sg.tensors[conv.inputs[2]]), 2, false);
  errors.conv = maxAbsDiff(toNhwc(r[nameOf(conv.outputs[0])]), ref.y);
  const a = toNhwc(r[nameOf(add.inputs[0])]);
  const b = toNhwc(r[nameOf(add.inputs[1])]);
  errors.add = maxAbsDiff(toNhwc(r[nameOf(add.outputs[0])]), a.map((v, i) => v + b[i]));

  // int8 per-channel model: first DEPTHWISE_CONV_2D, fed with the tapped tensor before it.
  const tf2 = readTfliteModel(await readFile(TFL(TF2)), TF2);
  const sg2 = tf2.subgraphs[0];
  const dw = findOp(tf2, 4);
  const n2 = (i: number) => sg2.tensors[i].name.split(';')[0];
  const r2 = await runTapped(convertTflite(tf2), x, [1, 224, 224, 3], [n2(dw.inputs[0]), n2(dw.outputs[0])]);
  const dwIn = toNhwc(r2[n2(dw.inputs[0])]);
  const dwW = sg2.tensors[dw.inputs[1]];
  const [, H, W, C] = sg2.tensors[dw.inputs[0]].shape;
  const ref2 = refConv(dwIn, [H, W, C], refConst(tf2, dwW), dwW.shape, refConst(tf2, sg2.tensors[dw.inputs[2]]), 1, true);
  errors.depthwise = maxAbsDiff(toNhwc(r2[n2(dw.outputs[0])]), ref2.y);

  console.log(`reference-op max abs error: ${JSON.stringify(errors)}`);
  assert.ok(errors.conv < 1e-4, `conv error ${errors.conv}`);
  assert.ok(errors.depthwise < 1e-4, `depthwise error ${errors.depthwise}`);
  assert.ok(errors.add < 1e-5, `add error ${errors.add}`);
});

// ---------------------------------------------------------------- end to end

test('mobilenet_v2_1.0_224_quant: parrot is a macaw, hymenoptera val ant/bee top-1 >= 125/153', { skip: NO_SHARED }, async () => {
  const started = performance.now();
  const model = await importTflite(TFL(V2));
  const convertMs = performance.now() - started;
  const card = await loadCard(path.join(CARDS, 'mobilenet_v2_1.0_224_quant.json'));
  const labels = await labelsOf(card);
  assert.equal(labels.length >= 1001, true);
  const session = await ort.InferenceSession.create(serializeModel(model));
  const [parrot] = await classify(session, card, [shared('images', 'parrot.jpg')]);
  assert.equal(labels[parrot], 'macaw');
  const val = shared('datasets', 'hymenoptera', 'val');
  let ok = 0;
  let n = 0;
  for (const [dir, want] of [['ants', 'ant'], ['bees', 'bee']]) {
    const files = (await readdir(path.join(val, dir))).sort().map((f) => path.join(val, dir, f));
    const top = await classify(session, card, files);
    ok += top.filter((i) => labels[i] === want).length;
    n += files.length;
  }
  await session.release();
  console.log(`mobilenet_v2_1.0_224_quant: convert ${convertMs.toFixed(0)} ms, parrot → ${labels[parrot]}, hymenoptera val exact ant/bee top-1 ${ok}/${n}`);
  assert.equal(n, 153);
  assert.ok(ok >= 125, `only ${ok}/153 exact ant/bee top-1`);
});

test('tf2 ptq (int8 per-channel) classifies the parrot; the v1 embedding extractor gives 1024-d NHWC features', { skip: NO_SHARED }, async () => {
  const card = await loadCard(path.join(CARDS, 'tf2_mobilenet_v2_1.0_224_ptq.json'));
  const labels = await labelsOf(card);
  const s = await ort.InferenceSession.create(serializeModel(await importTflite(TFL(TF2))));
  const [top] = await classify(s, card, [shared('images', 'parrot.jpg')]);
  await s.release();
  assert.equal(labels[top], 'macaw');

  const v1card = await loadCard(path.join(CARDS, 'mobilenet_v1_1.0_224_quant_embedding_extractor.json'));
  const v1 = await importTflite(TFL(V1));
  const names = new Set(v1.graph.node.flatMap((n) => n.output));
  for (const t of [...v1card.taps!.recommended, v1card.taps!.default]) assert.ok(names.has(t), `card tap ${t} missing`);
  const x = new Float32Array(2 * 224 * 224 * 3);
  await preprocess(shared('images', 'parrot.jpg'), v1card, x, 0);
  await preprocess(shared('images', 'hot_dog.jpg'), v1card, x, 224 * 224 * 3);
  const s1 = await ort.InferenceSession.create(serializeModel(v1));
  const y = (await s1.run({ [s1.inputNames[0]]: new ort.Tensor('float32', x, [2, 224, 224, 3]) }))[s1.outputNames[0]];
  await s1.release();
  assert.deepEqual(y.dims, [2, 1, 1, 1024]);
  const d = y.data as Float32Array;
  assert.ok(d.every((v) => v >= 0 && v <= 6) && d.some((v) => v > 0), 'pooled RELU6 features in [0, 6]');
});

test('cards: taps exist in the converted graphs, cards validate, input scaling matches the TFLite quantization', { skip: NO_SHARED }, async () => {
  for (const [file, cardName] of [[V2, 'mobilenet_v2_1.0_224_quant.json'], [TF2, 'tf2_mobilenet_v2_1.0_224_ptq.json']]) {
    const card = await loadCard(path.join(CARDS, cardName));
    const tfl = readTfliteModel(await readFile(TFL(file)), file);
    const model = convertTflite(tfl);
    const names = new Set(model.graph.node.flatMap((n) => n.output));
    for (const t of [...card.taps!.recommended, card.taps!.default]) assert.ok(names.has(t), `${cardName}: tap ${t} missing`);
    const dims = model.graph.valueInfo.find((v) => v.name === card.taps!.default)?.type?.tensorType?.shape?.dim?.map((d) => d.dimValue ?? d.dimParam);
    assert.deepEqual(dims, ['N', 1280, 1, 1]);
    // The generated card agrees with the hand-written one on input scaling.
    const gen = tfliteCard(tfl, 'x.onnx', 'x.card.json');
    assert.deepEqual([gen.input.range, gen.input.mean, gen.input.std], [card.input.range, card.input.mean, card.input.std]);
    assert.equal(gen.output_is_probability, true);
    assert.equal(gen.label_offset, 1);
  }
});

test('tfliteToOnnxCached converts once per file content; `xfer import` writes model and card', { skip: NO_SHARED }, async () => {
  const tmp = await tempDir('xfer-tflite-');
  const old = process.env.XFER_CACHE;
  process.env.XFER_CACHE = path.join(tmp, 'cache');
  try {
    const a = await tfliteToOnnxCached(TFL(V1));
    const bytes = await readFile(a);
    const b = await tfliteToOnnxCached(TFL(V1));
    assert.equal(a, b);
    assert.ok(a.startsWith(path.join(tmp, 'cache', 'models')));
    assert.deepEqual(await readFile(b), bytes);
    const summary = await runImport(TFL(V1), { out: path.join(tmp, 'out', 'v1.onnx'), card: true });
    assert.match(summary, /28 TFLite ops/);
    assert.match(summary, /real = 0\.0078125 \* \(q - 128\)/);
    const card = await loadCard(path.join(tmp, 'out', 'v1.card.json'));
    assert.equal(card.file, 'v1.onnx');
    assert.deepEqual(card.input.mean, [128, 128, 128]);
    assert.equal(card.output_is_probability, false);
  } finally {
    if (old === undefined) delete process.env.XFER_CACHE;
    else process.env.XFER_CACHE = old;
    await rm(tmp, { recursive: true, force: true });
  }
});

// ---------------------------------------------------------------- bad input (crafted flatbuffers)

interface TinyTensor {
  name: string;
  shape: number[];
  signature?: number[];
  buffer?: number;
  /** TensorType (default FLOAT32 = 0; INT32 = 2). */
  type?: number;
}

/** Build a minimal TFLite flatbuffer: float tensors, ops as [opcode, inputs, outputs]. */
type TinyOp = [number, number[], number[]] | [number, number[], number[], (b: Builder) => number];

function tinyTflite(spec: { tensors: TinyTensor[]; inputs: number[]; outputs: number[]; opcodes: number[]; ops: TinyOp[]; buffers?: Uint8Array[] }): Uint8Array {
  const b = new Builder(1024);
  const i32 = (arr: number[]) => {
    b.startVector(4, arr.length, 4);
    for (let i = arr.length - 1; i >= 0; i--) b.addInt32(arr[i]);
    return b.endVector();
  };
  const offsets = (arr: number[]) => {
    b.startVector(4, arr.length, 4);
    for (let i = arr.length - 1; i >= 0; i--) b.addOffset(arr[i]);
    return b.endVector();
  };
  const buffers = [new Uint8Array(0), ...(spec.buffers ?? [])].map((data) => {
    const d = data.length ? b.createByteVector(data) : 0;
    b.startObject(3);
    if (d) b.addFieldOffset(0, d, 0);
    return b.endObject();
  });
  const tensors = spec.tensors.map((t) => {
    const name = b.createString(t.name);
    const shape = i32(t.shape);
    const sig = t.signature ? i32(t.signature) : 0;
    b.startObject(8);
    b.addFieldOffset(0, shape, 0);
    b.addFieldInt8(1, t.type ?? 0, 0);
    b.addFieldInt32(2, t.buffer ?? 0, 0);
    b.addFieldOffset(3, name, 0);
    if (sig) b.addFieldOffset(7, sig, 0);
    return b.endObject();
  });
  const ops = spec.ops.map(([code, ins, outs, options]) => {
    const iv = i32(ins);
    const ov = i32(outs);
    const opt = options ? options(b) : 0;
    b.startObject(5);
    b.addFieldInt32(0, code, 0);
    if (opt) {
      b.addFieldInt8(3, 1, 0);
      b.addFieldOffset(4, opt, 0);
    }
    b.addFieldOffset(1, iv, 0);
    b.addFieldOffset(2, ov, 0);
    return b.endObject();
  });
  const tv = offsets(tensors);
  const inv = i32(spec.inputs);
  const outv = i32(spec.outputs);
  const opv = offsets(ops);
  b.startObject(5);
  b.addFieldOffset(0, tv, 0);
  b.addFieldOffset(1, inv, 0);
  b.addFieldOffset(2, outv, 0);
  b.addFieldOffset(3, opv, 0);
  const sg = b.endObject();
  const codes = spec.opcodes.map((c) => {
    b.startObject(4);
    b.addFieldInt8(0, Math.min(c, 127), 0);
    b.addFieldInt32(3, c, 0);
    return b.endObject();
  });
  const codesV = offsets(codes);
  const sgV = offsets([sg]);
  const bufV = offsets(buffers);
  b.startObject(5);
  b.addFieldInt32(0, 3, 0);
  b.addFieldOffset(1, codesV, 0);
  b.addFieldOffset(2, sgV, 0);
  b.addFieldOffset(4, bufV, 0);
  b.finish(b.endObject(), 'TFL3');
  return b.asUint8Array();
}

const RELU = 19;
const TRANSPOSE_CONV = 67;
const ADD = 0;

function expectXfer(fn: () => unknown, re: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof XferError, `expected XferError, got ${String(e)}`);
    assert.match(e.message, re);
    return true;
  });
}

test('tiny crafted model converts and runs (RELU on NHWC input)', async () => {
  const bytes = tinyTflite({ tensors: [{ name: 'x', shape: [1, 2, 2, 3] }, { name: 'y', shape: [1, 2, 2, 3] }], inputs: [0], outputs: [1], opcodes: [RELU], ops: [[0, [0], [1]]] });
  const model = convertTflite(readTfliteModel(bytes, 'tiny.tflite'));
  const s = await ort.InferenceSession.create(serializeModel(model));
  const x = Float32Array.from({ length: 12 }, (_, i) => i - 6);
  const y = (await s.run({ x: new ort.Tensor('float32', x, [1, 2, 2, 3]) }))[s.outputNames[0]];
  assert.deepEqual(y.dims, [1, 2, 2, 3]);
  assert.deepEqual(Array.from(y.data as Float32Array), Array.from(x, (v) => Math.max(v, 0)));
});

test('bad input: not TFLite, empty, truncated', { skip: NO_SHARED }, async () => {
  expectXfer(() => readTfliteModel(new TextEncoder().encode('{"this": "is json, not a flatbuffer"}'), 'x.json'), /x\.json: not a TFLite model \(file identifier/);
  expectXfer(() => readTfliteModel(new Uint8Array(0), 'empty.tflite'), /empty file/);
  const full = await readFile(TFL(V2));
  // (The last ~64 KB of this file are a zip of associated files appended after the flatbuffer; cutting
  // only those leaves the model intact, so the cuts stay inside the flatbuffer.)
  for (const cut of [6, 4096, 1_000_000, 3_500_000]) {
    expectXfer(() => convertTflite(readTfliteModel(full.subarray(0, cut), 'cut.tflite')), /cut\.tflite: (truncated or corrupt TFLite file|not a TFLite model)|needs \d+ bytes/);
  }
  const tmp = await tempDir('xfer-tflite-');
  try {
    await writeFile(path.join(tmp, 'cut.tflite'), full.subarray(0, 100_000));
    await assert.rejects(importTflite(path.join(tmp, 'cut.tflite')), /truncated or corrupt TFLite file/);
    await assert.rejects(importTflite(path.join(tmp, 'missing.tflite')), /TFLite file not found/);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
});

test('bad input: unsupported op names the op, the operator index and its output tensor', () => {
  const bytes = tinyTflite({
    tensors: [{ name: 'img', shape: [1, 4, 4, 3] }, { name: 'act', shape: [1, 4, 4, 3] }, { name: 'block1/upsample', shape: [1, 8, 8, 3] }],
    inputs: [0],
    outputs: [2],
    opcodes: [RELU, TRANSPOSE_CONV],
    ops: [
      [0, [0], [1]],
      [1, [1], [2]],
    ],
  });
  expectXfer(() => convertTflite(readTfliteModel(bytes, 'up.tflite')), /up\.tflite: unsupported TFLite operator TRANSPOSE_CONV at operator 1 \(output "block1\/upsample"\)/);
});

test('bad input: several inputs, dynamic non-batch dimensions', () => {
  const two = tinyTflite({
    tensors: [{ name: 'a', shape: [1, 2, 2, 3] }, { name: 'b', shape: [1, 2, 2, 3] }, { name: 'sum', shape: [1, 2, 2, 3] }],
    inputs: [0, 1],
    outputs: [2],
    opcodes: [ADD],
    ops: [[0, [0, 1], [2]]],
  });
  expectXfer(() => convertTflite(readTfliteModel(two, 'two.tflite')), /two\.tflite: TFLite model has 2 inputs \("a", "b"\)/);
  const dyn = tinyTflite({
    tensors: [{ name: 'x', shape: [1, 1, 1, 3], signature: [-1, -1, -1, 3] }, { name: 'y', shape: [1, 1, 1, 3], signature: [-1, -1, -1, 3] }],
    inputs: [0],
    outputs: [1],
    opcodes: [RELU],
    ops: [[0, [0], [1]]],
  });
  expectXfer(() => convertTflite(readTfliteModel(dyn, 'dyn.tflite')), /dyn\.tflite: tensor "x" has a dynamic shape \[-1, -1, -1, 3\]; only the batch dimension may be dynamic/);
  // A dynamic batch alone is fine.
  const batchOnly = tinyTflite({
    tensors: [{ name: 'x', shape: [1, 1, 1, 3], signature: [-1, 1, 1, 3] }, { name: 'y', shape: [1, 1, 1, 3], signature: [-1, 1, 1, 3] }],
    inputs: [0],
    outputs: [1],
    opcodes: [RELU],
    ops: [[0, [0], [1]]],
  });
  assert.equal(convertTflite(readTfliteModel(batchOnly, 'b.tflite')).graph.input[0].type?.tensorType?.shape?.dim?.[0]?.dimParam, 'N');
});

// ---------------------------------------------------------------- the other ops, on a crafted float model

function f32Bytes(v: number[]): Uint8Array {
  return new Uint8Array(Float32Array.from(v).buffer);
}
function i32Bytes(v: number[]): Uint8Array {
  return new Uint8Array(Int32Array.from(v).buffer);
}
/** A one-table options object: fields as [slot, kind, value]. */
function opts(fields: [number, 'i8' | 'i32' | 'vec', number | number[]][]): (b: Builder) => number {
  return (b) => {
    const vecs = fields.map(([, kind, v]) => {
      if (kind !== 'vec') return 0;
      const arr = v as number[];
      b.startVector(4, arr.length, 4);
      for (let i = arr.length - 1; i >= 0; i--) b.addInt32(arr[i]);
      return b.endVector();
    });
    b.startObject(8);
    fields.forEach(([slot, kind, v], i) => {
      if (kind === 'i8') b.addFieldInt8(slot, v as number, 0);
      else if (kind === 'i32') b.addFieldInt32(slot, v as number, 0);
      else b.addFieldOffset(slot, vecs[i], 0);
    });
    return b.endObject();
  };
}

test('PAD, HARD_SWISH, MAX_POOL_2D (SAME), MUL (broadcast const), RESHAPE (flatten), FULLY_CONNECTED, SOFTMAX, MEAN, SQUEEZE, CONCATENATION, LOGISTIC match a reference', async () => {
  const rnd = seeded(3);
  const fcW = Array.from({ length: 3 * 18 }, () => rnd() - 0.5);
  const fcB = [0.1, -0.2, 0.3];
  const mulC = [2, -0.5];
  const [PAD, MAXPOOL, HSWISH, MUL, RESHAPE, FC, SOFTMAX, MEAN, SQUEEZE, CONCAT, LOGISTIC] = [34, 17, 117, 18, 22, 9, 25, 40, 43, 2, 14];
  const T = (name: string, shape: number[], buffer?: number, type = 0): TinyTensor => ({ name, shape, type, ...(buffer ? { buffer } : {}) });
  const bytes = tinyTflite({
    tensors: [
      T('x', [1, 4, 4, 2]), // 0
      T('pads', [4, 2], 1, 2), // 1
      T('padded', [1, 5, 5, 2]), // 2
      T('pooled', [1, 3, 3, 2]), // 3
      T('hs', [1, 5, 5, 2]), // 4
      T('mulc', [2], 2), // 5
      T('scaled', [1, 3, 3, 2]), // 6
      T('shape', [2], 3, 2), // 7
      T('flat', [1, 18]), // 8
      T('fc/w', [3, 18], 4), // 9
      T('fc/b', [3], 5), // 10
      T('logits', [1, 3]), // 11
      T('probs', [1, 3]), // 12
      T('axes', [2], 6, 2), // 13
      T('mean', [1, 1, 1, 2]), // 14
      T('sq', [1, 2]), // 15
      T('cat', [1, 5]), // 16
      T('out', [1, 5]), // 17
    ],
    buffers: [i32Bytes([0, 0, 1, 0, 0, 1, 0, 0]), f32Bytes(mulC), i32Bytes([1, 18]), f32Bytes(fcW), f32Bytes(fcB), i32Bytes([1, 2])],
    inputs: [0],
    outputs: [17],
    opcodes: [PAD, MAXPOOL, HSWISH, MUL, RESHAPE, FC, SOFTMAX, MEAN, SQUEEZE, CONCAT, LOGISTIC],
    ops: [
      [0, [0, 1], [2]],
      [2, [2], [4]],
      [1, [4], [3], opts([[0, 'i8', 0], [1, 'i32', 2], [2, 'i32', 2], [3, 'i32', 2], [4, 'i32', 2]])],
      [3, [3, 5], [6]],
      [4, [6, 7], [8]],
      [5, [8, 9, 10], [11]],
      [6, [11], [12]],
      [7, [3, 13], [14], opts([[0, 'i8', 1]])],
      [8, [14], [15], opts([[0, 'vec', [1, 2]]])],
      [9, [12, 15], [16], opts([[0, 'i32', 1]])],
      [10, [16], [17]],
    ],
  });
  const model = convertTflite(readTfliteModel(bytes, "ops.tflite"));
  const x = Float32Array.from({ length: 32 }, () => rnd() * 8 - 4);

  // Reference, NHWC, plain loops.
  const at = (a: ArrayLike<number>, W: number, C: number, y: number, xx: number, c: number) => a[(y * W + xx) * C + c];
  const padded = new Float64Array(5 * 5 * 2); // pad H by (1, 0), W by (0, 1)
  for (let y = 0; y < 4; y++) for (let xx = 0; xx < 4; xx++) for (let c = 0; c < 2; c++) padded[((y + 1) * 5 + xx) * 2 + c] = at(x, 4, 2, y, xx, c);
  const hs = padded.map((v) => (v * Math.min(Math.max(v + 3, 0), 6)) / 6);
  const pooled = new Float64Array(3 * 3 * 2); // SAME, 2x2 s2 on 5 → 3 (pad 0 before, 1 after)
  for (let oy = 0; oy < 3; oy++)
    for (let ox = 0; ox < 3; ox++)
      for (let c = 0; c < 2; c++) {
        let m = -Infinity;
        for (let ky = 0; ky < 2; ky++) for (let kx = 0; kx < 2; kx++) if (oy * 2 + ky < 5 && ox * 2 + kx < 5) m = Math.max(m, at(hs, 5, 2, oy * 2 + ky, ox * 2 + kx, c));
        pooled[(oy * 3 + ox) * 2 + c] = m;
      }
  const flat = pooled.map((v, i) => v * mulC[i % 2]);
  const logits = fcB.map((b, o) => b + flat.reduce((acc, v, i) => acc + v * fcW[o * 18 + i], 0));
  const mx = Math.max(...logits);
  const ex = logits.map((v) => Math.exp(v - mx));
  const probs = ex.map((v) => v / ex.reduce((a, b) => a + b, 0));
  const mean = [0, 1].map((c) => pooled.filter((_, i) => i % 2 === c).reduce((a, b) => a + b, 0) / 9);
  const want = [...probs, ...mean].map((v) => 1 / (1 + Math.exp(-v)));

  const s = await ort.InferenceSession.create(serializeModel(model));
  const y = (await s.run({ x: new ort.Tensor('float32', x, [1, 4, 4, 2]) }))[s.outputNames[0]];
  await s.release();
  assert.deepEqual(y.dims, [1, 5]);
  const err = maxAbsDiff(y.data as Float32Array, want);
  console.log(`crafted-op model max abs error: ${err}`);
  assert.ok(err < 1e-5, `max error ${err}`);
});
