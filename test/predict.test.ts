/**
 * `xfer predict` / `xfer export` on the built-in default backbone: generated JPEGs of three clearly
 * different classes are extracted (two layers), heads of every kind are trained on the features, and
 *  - predict on the images agrees with the head applied to the extracted features (eval-style),
 *  - the exported ONNX file run with onnxruntime on the same pixels agrees with predict,
 *  - a head recording another backbone sha256 is refused, unreadable images are reported,
 *  - the CLI exits 3 when images were skipped.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import ort from '../src/model/ort.js';
import { extractFeatures } from '../src/extract/pipeline.js';
import { loadRows, openFeatures, pickLayers } from '../src/features/reader.js';
import { trainHead, type TrainOptions } from '../src/heads/train.js';
import { loadHead, transformFor } from '../src/heads/model.js';
import { loadImagePixels } from '../src/image/decode.js';
import { isPredictError, openPredictor, type Predictor, type PredictResult } from '../src/predict/predict.js';
import { exportOnnx } from '../src/predict/export.js';
import { PIXEL_INPUT } from '../src/model/taps.js';
import { XferError } from '../src/errors.js';
import { REPO_ROOT } from './helpers/paths.js';

const CLASSES = ['blue_checks', 'green_vstripes', 'red_hstripes'];
const PER_CLASS = 8;
const LAYERS = ['block_6_expand_relu', 'out_relu'];

let dir: string;
let data: string;
let feats: string;
const heads: Record<string, string> = {};
/** Measured agreement, printed at the end. */
const measured: Record<string, number> = {};

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

async function makeImages(root: string): Promise<void> {
  const r = rng(7);
  for (let c = 0; c < CLASSES.length; c++) {
    await mkdir(path.join(root, CLASSES[c]), { recursive: true });
    for (let i = 0; i < PER_CLASS; i++) {
      const w = 48 + Math.floor(r() * 48);
      const h = 48 + Math.floor(r() * 48);
      const px = Buffer.alloc(w * h * 3);
      const period = 4 + Math.floor(r() * 6);
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) {
          const on = c === 0 ? (Math.floor(x / period) + Math.floor(y / period)) % 2 === 0 : c === 1 ? Math.floor(x / period) % 2 === 0 : Math.floor(y / period) % 2 === 0;
          const base = on ? 200 : 40;
          const o = (y * w + x) * 3;
          for (let ch = 0; ch < 3; ch++) {
            const main = ch === 2 - c; // class 0 blue, 1 green, 2 red
            px[o + ch] = Math.max(0, Math.min(255, (main ? base : 30) + Math.floor((r() - 0.5) * 40)));
          }
        }
      }
      await sharp(px, { raw: { width: w, height: h, channels: 3 } }).jpeg({ quality: 90 }).toFile(path.join(root, CLASSES[c], `img_${String(i).padStart(2, '0')}.jpg`));
    }
  }
}

async function train(name: string, opts: Partial<TrainOptions> & { head: string }): Promise<string> {
  const out = path.join(dir, 'heads', name);
  await trainHead({ features: feats, layers: LAYERS, out, ...opts });
  heads[name] = out;
  return out;
}

/** Eval-style: the saved head applied to the extracted features of every row. */
async function featurePredictions(headDir: string): Promise<{ paths: string[]; probs: Float32Array; K: number }> {
  const t = await loadHead(headDir);
  const f = await openFeatures(feats);
  const layers = pickLayers(f, t.source.layers.map((l) => l.name));
  const rows = f.index.map((r) => r.row);
  const loaded = await loadRows(f, layers, rows);
  const X = await transformFor(t, { data: loaded.X, rows: loaded.n, cols: loaded.d });
  const probs = await t.head.predictProba(X);
  return { paths: rows.map((r) => path.join(data, f.index[r].path)), probs, K: t.head.nClasses };
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

function argmax(a: ArrayLike<number>, o: number, k: number): number {
  let b = 0;
  for (let c = 1; c < k; c++) if (a[o + c] > a[o + b]) b = c;
  return b;
}

/** Run an exported file on the images' pixels (decoded with the predictor's plan). */
async function runExported(file: string, p: Predictor, images: string[]): Promise<{ probs: Float32Array; scores: Float32Array; label: BigInt64Array; pixels: Uint8Array }> {
  const [h, w] = p.plan.size;
  const pixels = new Uint8Array(images.length * h * w * 3);
  for (let i = 0; i < images.length; i++) pixels.set((await loadImagePixels(images[i], p.plan)).data, i * h * w * 3);
  const s = await ort.InferenceSession.create(file, { executionProviders: ['cpu'] });
  try {
    const res = await s.run({ [PIXEL_INPUT]: new ort.Tensor('uint8', pixels, [images.length, h, w, 3]) });
    return { probs: res.probabilities.data as Float32Array, scores: res.scores.data as Float32Array, label: res.label.data as BigInt64Array, pixels };
  } finally {
    await s.release();
  }
}

function runXfer(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(REPO_ROOT, 'bin', 'xfer.js'), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('predict and export with backbone + head', () => {
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'xfer-predict-'));
    data = path.join(dir, 'data');
    feats = path.join(dir, 'feats');
    await makeImages(data);
    const s = await extractFeatures({ model: 'mobilenet_v2', layers: LAYERS, pool: 'avg', data, out: feats, batch: 8 });
    assert.equal(s.images, CLASSES.length * PER_CLASS);
    // linear on both layers in the REVERSE of the extraction order (the head's order must be kept)
    await train('linear', { head: 'linear', layers: [...LAYERS].reverse(), transforms: 'standardize,l2,pca:12' });
    await train('svm', { head: 'svm' });
    await train('svm-platt', { head: 'svm', params: { probability: true } });
    await train('mlp', { head: 'mlp', params: { hidden: [16, 8], epochs: 40, earlyStopping: false } });
    await train('svm-rbf', { head: 'svm-rbf' });
    await train('svm-poly', { head: 'svm-rbf', params: { kernel: 'poly', degree: 2 } });
  });
  after(async () => {
    process.stdout.write(`# measured agreement: ${JSON.stringify(measured)}\n`);
    await rm(dir, { recursive: true, force: true });
  });

  test('predict on images agrees with the head on the extracted features (labels, probabilities 1e-5)', async () => {
    for (const kind of ['linear', 'svm-platt', 'mlp', 'svm-rbf']) {
      const ref = await featurePredictions(heads[kind]);
      const p = await openPredictor(heads[kind], { batch: 5, device: { device: 'cpu' } });
      try {
        const out = await p.predict(ref.paths);
        assert.equal(out.length, ref.paths.length);
        const probs = new Float32Array(ref.probs.length);
        out.forEach((r, i) => {
          assert.ok(!isPredictError(r), `${ref.paths[i]}: ${JSON.stringify(r)}`);
          const res = r as PredictResult;
          assert.equal(res.path, ref.paths[i]);
          probs.set(res.probs, i * ref.K);
          assert.equal(res.index, argmax(ref.probs, i * ref.K, ref.K), `${kind} ${res.path}: label differs`);
          assert.equal(res.label, p.labels[res.index]);
          assert.equal(res.top[0].index, res.index);
          assert.equal(res.top.length, Math.min(5, ref.K));
        });
        const d = maxAbsDiff(probs, ref.probs);
        measured[`predict-vs-features ${kind}`] = d;
        assert.ok(d <= 1e-5, `${kind}: max |Δp| ${d}`);
      } finally {
        await p.close();
      }
    }
    // the classes are easy: the linear head gets them all right
    const p = await openPredictor(heads.linear);
    try {
      const out = (await p.predict(CLASSES.map((c) => path.join(data, c, 'img_00.jpg')))) as PredictResult[];
      assert.deepEqual(out.map((r) => r.label), CLASSES);
    } finally {
      await p.close();
    }
  });

  test('exported ONNX gives the same probabilities (1e-4) and labels as predict, for every head kind', async () => {
    const images = CLASSES.flatMap((c) => [0, 3, 6].map((i) => path.join(data, c, `img_${String(i).padStart(2, '0')}.jpg`)));
    for (const kind of ['linear', 'svm', 'svm-platt', 'mlp', 'svm-rbf', 'svm-poly']) {
      const file = path.join(dir, 'export', `${kind}.onnx`);
      const r = await exportOnnx(heads[kind], file, { verify: kind === 'linear' }); // the CLI test below verifies too
      assert.equal(r.labels.length, CLASSES.length);
      const p = await openPredictor(heads[kind], { device: { device: 'cpu' } });
      try {
        const ex = await runExported(file, p, images);
        const want = await p.predictPixels(ex.pixels, images.length);
        assert.equal(ex.pixels.byteLength, images.length * p.plan.size[0] * p.plan.size[1] * 3, 'predictPixels leaves the caller its buffer');
        const dp = maxAbsDiff(ex.probs, want.probs);
        const ds = maxAbsDiff(ex.scores, want.scores);
        measured[`export-vs-predict ${kind} probs`] = dp;
        measured[`export-vs-predict ${kind} scores`] = ds;
        assert.ok(dp <= 1e-4, `${kind}: max |Δp| ${dp}`);
        assert.deepEqual([...ex.label].map(Number), [...want.index], `${kind}: labels differ`);
        // and the file describes itself
        const bytes = await readFile(file);
        const { decodeModel } = await import('../src/onnx/proto.js');
        const m = decodeModel(bytes);
        const meta = Object.fromEntries((m.metadataProps ?? []).map((e) => [e.key, e.value]));
        assert.deepEqual(JSON.parse(meta['xfer.labels']), p.labels);
        assert.equal(JSON.parse(meta['xfer.card']).id, 'mobilenet_v2');
        assert.equal(JSON.parse(meta['xfer.head']).kind, p.head.head.kind);
      } finally {
        await p.close();
      }
    }
  });

  test('a head recorded with another backbone sha256 is refused (predict and export)', async () => {
    const bad = path.join(dir, 'heads', 'bad-sha');
    await cp(heads.svm, bad, { recursive: true });
    const hj = JSON.parse(await readFile(path.join(bad, 'head.json'), 'utf8'));
    hj.source.model.sha256 = 'f'.repeat(64);
    await writeFile(path.join(bad, 'head.json'), JSON.stringify(hj));
    const check = (e: unknown): boolean => {
      assert.ok(e instanceof XferError);
      assert.match(e.message, /sha256 ffffffffffff/);
      assert.match(e.message, /mobilenet_v2/);
      assert.doesNotMatch(e.message, /\n/);
      return true;
    };
    await assert.rejects(openPredictor(bad), check);
    await assert.rejects(exportOnnx(bad, path.join(dir, 'bad.onnx')), check);
  });

  test('predict repeats the preprocessing the head\'s features were extracted with; a card that feeds the backbone differently is refused', async () => {
    const feats2 = path.join(dir, 'feats-bicubic');
    await extractFeatures({ model: 'mobilenet_v2', layers: ['out_relu'], data, out: feats2, preprocess: { crop_pct: 1, interpolation: 'bicubic', background: [0, 0, 0] } });
    const head2 = path.join(dir, 'heads', 'bicubic');
    await trainHead({ features: feats2, head: 'linear', out: head2 });
    const t = await loadHead(head2);
    assert.equal(t.source.preprocessing?.interpolation, 'bicubic');
    const p = await openPredictor(head2, { device: { device: 'cpu' } });
    try {
      assert.deepEqual([p.plan.crop_pct, p.plan.interpolation, p.plan.background, p.plan.applyIcc], [1, 'bicubic', [0, 0, 0], false]);
      // same pixels as extraction => the same features => predictions equal the head on the stored features
      const f = await openFeatures(feats2);
      const rows = f.index.map((r) => r.row);
      const loaded = await loadRows(f, pickLayers(f, ['out_relu']), rows);
      const want = await t.head.predictProba(await transformFor(t, { data: loaded.X, rows: loaded.n, cols: loaded.d }));
      const got = (await p.predict(rows.map((r) => path.join(data, f.index[r].path)))) as PredictResult[];
      const probs = new Float32Array(want.length);
      got.forEach((r, i) => probs.set(r.probs, i * t.head.nClasses));
      const d = maxAbsDiff(probs, want);
      measured['predict-vs-features bicubic/crop 1'] = d;
      assert.ok(d <= 1e-5, `max |Δp| ${d}`);
    } finally {
      await p.close();
    }
    // heads saved before heads recorded it: the plan comes from their feature folder's meta.json, or,
    // when that is gone, from that era's defaults (ICC profiles applied)
    const older = path.join(dir, 'heads', 'no-record');
    await cp(head2, older, { recursive: true });
    const oj = JSON.parse(await readFile(path.join(older, 'head.json'), 'utf8'));
    delete oj.source.preprocessing;
    await writeFile(path.join(older, 'head.json'), JSON.stringify(oj));
    const fromMeta = await openPredictor(older, { device: { device: 'cpu' } });
    await fromMeta.close();
    assert.deepEqual([fromMeta.plan.interpolation, fromMeta.plan.background, fromMeta.plan.applyIcc], ['bicubic', [0, 0, 0], false]);
    oj.source.features = path.join(dir, 'moved-away');
    await writeFile(path.join(older, 'head.json'), JSON.stringify(oj));
    const unknown = await openPredictor(older, { device: { device: 'cpu' } });
    await unknown.close();
    assert.deepEqual([unknown.plan.interpolation, unknown.plan.background, unknown.plan.applyIcc], ['bilinear', [255, 255, 255], true]);
    // a head whose features were normalised differently than the card now says
    const other = path.join(dir, 'heads', 'other-mean');
    await cp(head2, other, { recursive: true });
    const hj = JSON.parse(await readFile(path.join(other, 'head.json'), 'utf8'));
    hj.source.preprocessing.scale = [1, 1, 1]; // e.g. extracted with --range 0,255
    await writeFile(path.join(other, 'head.json'), JSON.stringify(hj));
    const check = (e: unknown): boolean => {
      assert.ok(e instanceof XferError);
      assert.match(e.message, /other input preprocessing than the card mobilenet_v2 gives now \(scale \[1,1,1\] → \[/);
      assert.match(e.hint ?? '', /card flags/);
      return true;
    };
    await assert.rejects(openPredictor(other), check);
    await assert.rejects(exportOnnx(other, path.join(dir, 'other.onnx')), check);
    // export records the plan for whoever feeds the file
    const file = path.join(dir, 'export', 'bicubic.onnx');
    await exportOnnx(head2, file);
    const { decodeModel } = await import('../src/onnx/proto.js');
    const meta = Object.fromEntries((decodeModel(await readFile(file)).metadataProps ?? []).map((e) => [e.key, e.value]));
    assert.deepEqual(JSON.parse(meta['xfer.preprocessing']), t.source.preprocessing);
  });

  test('unreadable images are reported, not thrown; the CLI exits 3 and expands folders', async () => {
    const extra = path.join(dir, 'extra');
    await mkdir(extra, { recursive: true });
    await writeFile(path.join(extra, 'text.jpg'), 'not an image\n');
    const good = path.join(data, CLASSES[1], 'img_01.jpg');
    const p = await openPredictor(heads.linear);
    try {
      const out = await p.predict([path.join(extra, 'text.jpg'), good, path.join(extra, 'missing.jpg')]);
      assert.equal(out.length, 3);
      assert.ok(isPredictError(out[0]) && /not an image/.test(out[0].error), JSON.stringify(out[0]));
      assert.ok(!isPredictError(out[1]) && out[1].label === CLASSES[1]);
      assert.ok(isPredictError(out[2]), JSON.stringify(out[2]));
    } finally {
      await p.close();
    }
    // Streaming keeps input order across batches with skipped images anywhere in them, and gives the
    // same outcomes as one big batch; onResult sees them in the same order.
    const goods = CLASSES.flatMap((c) => [2, 5].map((i) => path.join(data, c, `img_${String(i).padStart(2, '0')}.jpg`)));
    const bad = [path.join(extra, 'text.jpg'), path.join(extra, 'missing.jpg')];
    const mixed = [bad[0], goods[0], goods[1], bad[1], goods[2], bad[0], bad[1], goods[3], goods[4], goods[5], bad[0]];
    const seen: string[] = [];
    const small = await openPredictor(heads.mlp, { batch: 2, device: { device: 'cpu' } });
    // A --batch far above the inputs forms batches of the inputs' size (it once allocated the whole batch).
    const big = await openPredictor(heads.mlp, { batch: 100_000_000, device: { device: 'cpu' }, workers: 1 });
    try {
      const a = await small.predict(mixed, (r) => seen.push(r.path));
      const b = await big.predict(mixed);
      assert.deepEqual(a.map((r) => r.path), mixed);
      assert.deepEqual(seen, mixed);
      a.forEach((r, i) => {
        assert.equal(isPredictError(r), bad.includes(mixed[i]), `${i}: ${JSON.stringify(r)}`);
        if (!isPredictError(r)) {
          assert.equal(r.label, path.basename(path.dirname(mixed[i])));
          const rb = b[i] as PredictResult;
          assert.equal(rb.label, r.label);
          assert.ok(maxAbsDiff(Float32Array.from(r.probs), Float32Array.from(rb.probs)) <= 1e-6, `${mixed[i]}: batch 2 vs one batch of all`);
        }
      });
    } finally {
      await small.close();
      await big.close();
    }
    const r = await runXfer(['predict', '--head', heads.linear, '--json', '--top', '2', path.join(data, CLASSES[2]), path.join(extra, 'text.jpg')]);
    assert.equal(r.code, 3, r.stderr);
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
    assert.equal(lines.length, PER_CLASS + 1);
    for (const l of lines.slice(0, PER_CLASS)) {
      assert.equal(l.label, CLASSES[2]);
      assert.equal(l.top.length, 2);
    }
    assert.match(lines[PER_CLASS].error, /not an image/);
    const e = await runXfer(['export', '--head', heads.mlp, '--out', path.join(dir, 'cli.onnx'), '--json']);
    assert.equal(e.code, 0, e.stderr);
    assert.equal(JSON.parse(e.stdout).kind, 'mlp');
  });
});
