/**
 * Fine-tuning end to end on the built-in backbone (mobilenet_v2) from block_13_expand_relu, on a few
 * hymenoptera photos from ../shared (skipped when absent): training writes a normal head folder that
 * eval, predict and export use (export's outputs equal predict's within 1e-5); an aborted run writes a
 * checkpoint and --resume ends where an uninterrupted run ends; bad input gets one-line errors.
 * The loop's pieces (schedule, shuffle, checkpoint file) are checked directly.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, symlink } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import ort from '../src/model/ort.js';
import { extractFeatures } from '../src/extract/pipeline.js';
import { openFeatures } from '../src/features/reader.js';
import { loadRows, pickLayers } from '../src/features/reader.js';
import { evalHead } from '../src/heads/train.js';
import { loadHead } from '../src/heads/model.js';
import { loadImagePixels } from '../src/image/decode.js';
import { openPredictor } from '../src/predict/predict.js';
import { exportOnnx } from '../src/predict/export.js';
import { PIXEL_INPUT } from '../src/model/taps.js';
import { XferError } from '../src/errors.js';
import { finetune, resumeConflicts, splitExamples, type FinetuneEvent, type FinetuneOptions } from '../src/finetune/fit.js';
import { epochOrder, FeatureRowSource, type Example } from '../src/finetune/data.js';
import { blockRates, ratesAt, scheduleFactor } from '../src/finetune/schedule.js';
import { betaSymmetric, mixBatch } from '../src/finetune/mixup.js';
import { Rng } from '../src/heads/rng.js';
import { CHECKPOINT_FILE, loadCheckpoint, saveCheckpoint, type Checkpoint } from '../src/finetune/checkpoint.js';
import { shared } from './helpers/paths.js';

const HYM = shared('datasets', 'hymenoptera');
const SKIP = existsSync(HYM) ? false : `${HYM} not found (fine-tuning checks use its photos)`;
const FROM = 'block_13_expand_relu';

let dir: string;
let data: string;
let feats: string;
let pooled: string;
/** The first test's run (two epochs of base()): the uninterrupted reference for the resume test. */
let fullRun: Awaited<ReturnType<typeof finetune>> | null = null;
const base = (): Omit<FinetuneOptions, 'out'> => ({ features: feats, from: FROM, epochs: 2, batch: 4, lr: 1e-3, seed: 1, threads: 1 });

/** `n` photos per class and split, linked from hymenoptera (sorted, so the same every run). */
async function linkImages(root: string, per: Record<string, number>, classes = ['ants', 'bees']): Promise<void> {
  for (const [split, n] of Object.entries(per)) {
    for (const c of classes) {
      await mkdir(path.join(root, split, c), { recursive: true });
      const files = (await readdir(path.join(HYM, split, c))).sort().slice(0, n);
      for (const f of files) await symlink(path.join(HYM, split, c, f), path.join(root, split, c, f));
    }
  }
}

describe('fine-tuning from block_13 (built-in backbone, hymenoptera photos)', { skip: SKIP }, () => {
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'xfer-ft-'));
    data = path.join(dir, 'images');
    await linkImages(data, { train: 6, val: 3 });
    feats = path.join(dir, 'feat');
    pooled = path.join(dir, 'pooled');
    await extractFeatures({ model: 'mobilenet_v2', layers: [FROM], pool: 'none', data, out: feats });
    await extractFeatures({ model: 'mobilenet_v2', layers: [FROM], pool: 'avg', data, out: pooled });
  });
  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('trains, saves a head folder with a report, and eval gives the same val metrics', async () => {
    const out = path.join(dir, 'h-train');
    const events: FinetuneEvent[] = [];
    // mixup, the weights' average and batch-statistics BN on: all run through the whole loop, and the resume test below repeats them
    const r = await finetune({ ...base(), mixup: 0.4, ema: 0.9, batchNorm: 'batch', out, progress: (e) => events.push(e) });
    await r.head.close();
    fullRun = r;
    assert.equal(r.report.params.mixup, 0.4);
    assert.equal(r.report.params.ema, 0.9);
    assert.equal(r.report.params.batchNorm, 'batch');
    const epochs = events.filter((e) => e.event === 'epoch');
    assert.equal(epochs.length, 2);
    assert.ok(events.some((e) => e.event === 'step' && e.batches === 3), 'three steps of 4 per epoch over 12 rows');
    for (const e of epochs) assert.ok(e.event === 'epoch' && Number.isFinite(e.loss) && e.valAcc !== undefined);
    assert.deepEqual(r.report.rows, { train: 12, val: 6, test: 0, fit: 12 });
    for (const p of ['confusion-val.png', 'learning-loss.png', 'learning-acc.png']) assert.ok(r.report.plots.includes(p), p);
    assert.ok(!existsSync(path.join(out, CHECKPOINT_FILE)), 'checkpoint removed once the head is saved');
    const h = await loadHead(out);
    assert.equal(h.head.kind, 'finetune');
    assert.deepEqual(h.classLabels, ['ants', 'bees']);
    const ev = await evalHead({ head: out, features: feats, split: 'val' });
    assert.equal(ev.metrics.accuracy, r.report.metrics.val.accuracy);
    assert.ok(Math.abs(ev.metrics.logLoss! - r.report.metrics.val.logLoss!) < 1e-6);
    // the best epoch's val accuracy is what the head scores on val
    const best = r.report.fit!.bestEpoch as number;
    const rec = (r.report.fit!.history as { epoch: number; valAcc: number; valLoss: number }[]).find((x) => x.epoch === best)!;
    assert.equal(rec.valAcc, ev.metrics.accuracy);
    // and its val loss: the head holds the weights that were scored (the average, with --ema)
    assert.ok(Math.abs(rec.valLoss - ev.metrics.logLoss!) < 1e-5, `val loss in training ${rec.valLoss} vs the head's ${ev.metrics.logLoss}`);
  });

  test('export == predict within 1e-5, and predict == the head on the extracted features', async () => {
    const out = path.join(dir, 'h-export');
    const r = await finetune({ ...base(), epochs: 1, out });
    await r.head.close();
    const onnx = path.join(dir, 'ft.onnx');
    await exportOnnx(out, onnx);
    const pred = await openPredictor(out, { workers: 1 });
    const sess = await ort.InferenceSession.create(onnx);
    try {
      const f = await openFeatures(feats);
      const rows = f.index.filter((x) => x.split === 'val').slice(0, 4);
      const [H, W] = pred.plan.size;
      const px = new Uint8Array(rows.length * H * W * 3);
      for (let i = 0; i < rows.length; i++) px.set((await loadImagePixels(path.join(data, rows[i].path), pred.plan)).data, i * H * W * 3);
      const viaPredict = await pred.predictPixels(px, rows.length);
      const res = await sess.run({ [PIXEL_INPUT]: new ort.Tensor('uint8', px, [rows.length, H, W, 3]) });
      const exported = res.probabilities.data as Float32Array;
      let d = 0;
      for (let i = 0; i < exported.length; i++) d = Math.max(d, Math.abs(exported[i] - viaPredict.probs[i]));
      assert.ok(d <= 1e-5, `export vs predict: max |Δp| ${d}`);
      const loaded = await loadRows(f, pickLayers(f, [FROM]), rows.map((x) => x.row));
      const viaFeatures = await pred.predictFeatures(loaded.X, rows.length);
      let e = 0;
      for (let i = 0; i < exported.length; i++) e = Math.max(e, Math.abs(viaFeatures.probs[i] - viaPredict.probs[i]));
      assert.ok(e <= 1e-5, `predict vs features: max |Δp| ${e}`);
    } finally {
      await sess.release();
      await pred.close();
    }
  });

  test('Ctrl-C (abort) writes a checkpoint; --resume ends where an uninterrupted run ends', async () => {
    const full = fullRun ?? (await finetune({ ...base(), mixup: 0.4, ema: 0.9, batchNorm: 'batch', out: path.join(dir, 'h-full') }));
    await full.head.close();
    const out = path.join(dir, 'h-resume');
    const ac = new AbortController();
    await assert.rejects(
      finetune({ ...base(), mixup: 0.4, ema: 0.9, batchNorm: 'batch', out, signal: ac.signal, progress: (e) => e.event === 'step' && e.step === 4 && ac.abort() }),
      (e: unknown) => e instanceof XferError && e.exitCode === 130 && /interrupted in epoch 2 after batch 1/.test(e.message),
    );
    const ck = await loadCheckpoint(path.join(out, CHECKPOINT_FILE));
    assert.deepEqual([ck.epoch, ck.batch, ck.step], [1, 1, 4]);
    await assert.rejects(finetune({ ...base(), mixup: 0.4, ema: 0.9, batchNorm: 'batch', lr: 2e-3, out, resume: true }), /--resume: .* other lr/);
    await assert.rejects(finetune({ ...base(), ema: 0.9, batchNorm: 'batch', out, resume: true }), /--resume: .* other mixup/);
    await assert.rejects(finetune({ ...base(), mixup: 0.4, batchNorm: 'batch', out, resume: true }), /--resume: .* other ema/);
    await assert.rejects(finetune({ ...base(), mixup: 0.4, ema: 0.9, out, resume: true }), /--resume: .* other batchNorm/);
    const ck2 = await loadCheckpoint(path.join(out, CHECKPOINT_FILE));
    assert.ok(ck2.ema && ck2.ema.size > 0, 'the checkpoint carries the weights\' average');
    assert.ok([...ck2.state.keys()].some((k) => /moving_variance/.test(k)), 'and the running statistics');
    const resumed = await finetune({ ...base(), mixup: 0.4, ema: 0.9, batchNorm: 'batch', out, resume: true });
    await resumed.head.close();
    assert.equal((resumed.report.fit!.history as unknown[]).length, 2);
    const a = full.report.metrics.val;
    const b = resumed.report.metrics.val;
    assert.equal(b.accuracy, a.accuracy);
    assert.ok(Math.abs(a.logLoss! - b.logLoss!) < 1e-5, `val log-loss ${a.logLoss} vs resumed ${b.logLoss}`);
    await assert.rejects(finetune({ ...base(), out: path.join(dir, 'h-none'), resume: true }), /--resume: no checkpoint/);
  });

  test('bad input: pooled or other-tap features, lr, single class, divergence', async () => {
    const out = path.join(dir, 'h-bad');
    await assert.rejects(finetune({ ...base(), features: pooled, out }), (e: unknown) => e instanceof XferError && /pooled \(--pool avg/.test(e.message) && /--layers block_13_expand_relu --pool none/.test(e.hint ?? ''));
    await assert.rejects(finetune({ ...base(), from: 'block_14_expand_relu', out }), (e: unknown) => e instanceof XferError && /not of block_14_expand_relu/.test(e.message) && /xfer extract .*--layers block_14_expand_relu --pool none/.test(e.hint ?? ''));
    await assert.rejects(finetune({ ...base(), lr: 0, out }), /--lr: expected a positive number, got '0'/);
    await assert.rejects(finetune({ ...base(), lrBackbone: Number('abc'), out }), /--lr-backbone: expected a positive number/);
    await assert.rejects(finetune({ ...base(), lr: -1, out }), /--lr: expected a positive number/);
    await assert.rejects(finetune({ ...base(), mixup: -0.2, out }), /--mixup: expected α ≥ 0 \(0: off\), got '-0.2'/);
    await assert.rejects(finetune({ ...base(), batchNorm: 'train' as 'batch', out }), /--batch-norm: expected frozen or batch, got 'train'/);
    await assert.rejects(finetune({ ...base(), ema: 1, out }), (e: unknown) => e instanceof XferError && /--ema: expected a decay in \[0, 1\) \(0: off\), got '1'/.test(e.message) && /--ema 0.999/.test(e.hint ?? ''));
    const one = path.join(dir, 'one');
    await linkImages(path.join(dir, 'one-img'), { train: 3 }, ['ants']);
    await extractFeatures({ model: 'mobilenet_v2', layers: [FROM], pool: 'none', data: path.join(dir, 'one-img'), out: one });
    await assert.rejects(finetune({ ...base(), features: one, out }), /single class \('ants'\)/);
    // a learning rate that overflows: stopped at the step it happened, no head without a finished epoch
    await assert.rejects(finetune({ ...base(), optimizer: 'sgd', lr: 1e30, lrBackbone: 1e30, warmup: 0, out }), (e: unknown) => e instanceof XferError && e.exitCode === 1 && /loss is (NaN|Infinity) at step \d+ \(epoch 1, batch \d\)/.test(e.message));
  });

  test('extract --views 2 --augment: view 0 plain, view 1 augmented; fine-tuning uses one per epoch', async () => {
    const vf = path.join(dir, 'views');
    await extractFeatures({ model: 'mobilenet_v2', layers: [FROM], pool: 'none', data, out: vf, views: 2, augment: 'hflip,crop', dtype: 'float16' });
    const f = await openFeatures(vf);
    const tr = f.index.filter((r) => r.split === 'train');
    assert.equal(tr.length, 24);
    assert.deepEqual(tr.slice(0, 2).map((r) => [r.path, r.view]), [[tr[0].path, 0], [tr[0].path, 1]]);
    assert.ok(f.index.filter((r) => r.split === 'val').every((r) => r.view === undefined));
    assert.deepEqual(f.meta.views, { k: 2, augment: ['hflip', 'crop'], seed: 0 });
    const src = new FeatureRowSource(f, pickLayers(f, [FROM])[0]);
    const two = new Float32Array(2 * src.rowSize);
    await src.fill(tr.slice(0, 2).map((r) => ({ id: r.row, shard: r.shard, shardRow: r.shard_row, y: 0, label: 0 })), two);
    await src.close();
    let diff = 0;
    for (let i = 0; i < src.rowSize; i++) diff = Math.max(diff, Math.abs(two[i] - two[src.rowSize + i]));
    assert.ok(diff > 0.1, 'views differ');
    // view 0 is the plain image: the same activations as the unaugmented float32 extraction, to fp16
    const plain = await openFeatures(feats);
    const p0 = plain.index.find((r) => r.path === tr[0].path);
    assert.ok(p0, 'the plain folder has the image');
    const ref = (await loadRows(plain, pickLayers(plain, [FROM]), [p0.row])).X;
    let d0 = 0;
    for (let i = 0; i < src.rowSize; i++) d0 = Math.max(d0, Math.abs(two[i] - ref[i]) / (1 + Math.abs(ref[i])));
    assert.ok(d0 < 2e-3, `view 0 equals the plain row (max rel. diff ${d0})`);
    const events: FinetuneEvent[] = [];
    const r = await finetune({ ...base(), features: vf, epochs: 1, out: path.join(dir, 'h-views'), progress: (e) => events.push(e) });
    await r.head.close();
    assert.equal(r.report.rows.train, 12);
    assert.equal(r.report.rows.train_views, 24);
    assert.ok(events.some((e) => e.event === 'step' && e.batches === 3), 'an epoch is one view of each of the 12 images');
    await assert.rejects(extractFeatures({ model: 'mobilenet_v2', layers: [FROM], pool: 'none', data, out: path.join(dir, 'v2'), augment: 'hflip' }), /--augment needs --views/);
    await assert.rejects(extractFeatures({ model: 'mobilenet_v2', layers: [FROM], pool: 'none', data, out: path.join(dir, 'v1'), views: 1 }), /--views: expected an integer ≥ 2/);
  });

  test('float16 features are read as their float32 values (rounded to half)', async () => {
    const half = path.join(dir, 'half');
    await extractFeatures({ model: 'mobilenet_v2', layers: [FROM], pool: 'none', data, out: half, dtype: 'float16' });
    const f32 = await openFeatures(feats);
    const f16 = await openFeatures(half);
    const s32 = new FeatureRowSource(f32, pickLayers(f32, [FROM])[0]);
    const s16 = new FeatureRowSource(f16, pickLayers(f16, [FROM])[0]);
    const items: Example[] = [0, 5, 17].map((r) => ({ id: r, shard: f32.index[r].shard, shardRow: f32.index[r].shard_row, y: 0, label: 0 }));
    const a = new Float32Array(items.length * s32.rowSize);
    const b = new Float32Array(items.length * s16.rowSize);
    await s32.fill(items, a);
    await s16.fill(items, b);
    await s32.close();
    await s16.close();
    let worst = 0;
    for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]) / Math.max(1e-3, Math.abs(a[i])));
    assert.ok(worst < 1e-3, `relative half rounding ${worst}`);
    assert.ok((await stat(path.join(half, FROM, '00000.npy'))).size < (await stat(path.join(feats, FROM, '00000.npy'))).size / 1.9);
  });
});

describe('fine-tuning loop pieces', () => {
  test('warmup then cosine; per-block rates with layer decay and frozen blocks', () => {
    assert.equal(scheduleFactor(0, 4, 20), 0.25);
    assert.equal(scheduleFactor(3, 4, 20), 1);
    assert.equal(scheduleFactor(4, 4, 20), 1);
    assert.ok(Math.abs(scheduleFactor(12, 4, 20) - 0.5) < 1e-12);
    assert.equal(scheduleFactor(20, 4, 20), 0);
    assert.deepEqual(blockRates(3, { lr: 1, lrBackbone: 0.1, layerDecay: 0.5 }, 1), [0, 0.05, 0.1]);
    assert.deepEqual(blockRates(2, { lr: 1 }), [0.1, 0.1]);
    const r = ratesAt(0, { lr: 1, warmupSteps: 2, totalSteps: 10 }, [0.1, 0.2]);
    assert.deepEqual(r, { head: 0.5, backbone: [0.05, 0.1] });
  });

  test('mixup: Beta(α, α) draws have its mean and variance; a batch is blended with itself reversed', () => {
    for (const a of [0.2, 1, 4]) {
      const rng = new Rng(5);
      const v = Array.from({ length: 40_000 }, () => betaSymmetric(a, rng));
      assert.ok(v.every((x) => x >= 0 && x <= 1), `α=${a}: draws in [0, 1]`);
      const mean = v.reduce((s, x) => s + x, 0) / v.length;
      const variance = v.reduce((s, x) => s + (x - mean) ** 2, 0) / v.length;
      const want = 1 / (4 * (2 * a + 1));
      assert.ok(Math.abs(mean - 0.5) < 0.01, `α=${a}: mean ${mean}`);
      assert.ok(Math.abs(variance - want) < 0.05 * want, `α=${a}: variance ${variance}, Beta's ${want}`);
    }
    const x = Float32Array.from([1, 2, 10, 20, 100, 200]);
    const partner = mixBatch(x, Int32Array.from([0, 1, 2]), 3, 2, 0.75);
    assert.deepEqual([...x], [0.75 * 1 + 0.25 * 100, 0.75 * 2 + 0.25 * 200, 10, 20, 0.75 * 100 + 0.25 * 1, 0.75 * 200 + 0.25 * 2]);
    assert.deepEqual([...partner], [2, 1, 0]);
  });

  test('a validation split is carved by image from train when the data has none; --val 0 carves none', () => {
    const ex = (i: number): Example => ({ id: i, shard: 0, shardRow: i, y: -1, label: i % 2 });
    const all = () => ({ train: Array.from({ length: 20 }, (_, i) => ex(i)), val: [], test: [ex(20)] });
    const carved = splitExamples(all(), ['a', 'b'], 0.2, 0, 'test');
    assert.deepEqual([carved.train.length, carved.val.length, carved.carvedSeed], [16, 4, 0]);
    const none = splitExamples(all(), ['a', 'b'], 0, 0, 'test');
    assert.deepEqual([none.train.length, none.val.length, none.carvedSeed], [20, 0, null]);
    assert.throws(() => splitExamples(all(), ['a', 'b'], 1.5, 0, 'test'), /--val: expected a fraction in \[0, 1\), got 1.5/);
  });

  test('resume: only epochs and patience may change; a checkpoint from before --mixup / --ema resumes without them', () => {
    const cfg = { lr: 1e-3, epochs: 5, patience: 3, mixup: 0, ema: 0 };
    assert.deepEqual(resumeConflicts(cfg, { lr: 1e-3, epochs: 8, patience: 0, mixup: 0 }), []);
    assert.deepEqual(resumeConflicts(cfg, { lr: 2e-3, epochs: 5, patience: 3, mixup: 0.2 }), ['lr', 'mixup']);
    assert.deepEqual(resumeConflicts(cfg, { lr: 1e-3, epochs: 5, patience: 3 }), []);
    assert.deepEqual(resumeConflicts({ ...cfg, mixup: 0.2 }, { lr: 1e-3, epochs: 5, patience: 3 }), ['mixup']);
    assert.deepEqual(resumeConflicts({ ...cfg, ema: 0.999 }, { lr: 1e-3, epochs: 5, patience: 3, mixup: 0 }), ['ema']);
  });

  test('the epoch shuffle is a permutation, repeatable from (seed, epoch), and mixes shards that each hold one class', () => {
    // Extraction writes folders in order, so shards often hold one class each.
    const items: Example[] = Array.from({ length: 100 }, (_, i) => ({ id: i, shard: Math.floor(i / 10), shardRow: i % 10, y: Math.floor(i / 10), label: Math.floor(i / 10) }));
    const a = epochOrder(items, 3, 0);
    assert.deepEqual(a.map((e) => e.id).sort((x, y) => x - y), items.map((e) => e.id));
    assert.deepEqual(epochOrder(items, 3, 0), a);
    assert.notDeepEqual(epochOrder(items, 3, 1).map((e) => e.id), a.map((e) => e.id));
    for (let b = 0; b < 5; b++) assert.ok(new Set(a.slice(b * 20, b * 20 + 20).map((e) => e.y)).size >= 6, `batch ${b} of 20 rows sees most of the 10 classes`);
  });

  test('a checkpoint round-trips, and a failed write (disk full) leaves the previous one intact', async () => {
    const d = await mkdtemp(path.join(os.tmpdir(), 'xfer-ckpt-'));
    try {
      const file = path.join(d, CHECKPOINT_FILE);
      const ck: Checkpoint = { config: { a: 1 }, epoch: 2, batch: 0, step: 7, sessionStep: 7, history: [{ epoch: 1, loss: 0.5, seconds: 1, imagesPerSecond: 3 }], best: { epoch: 1, valAcc: 0.5, valLoss: 0.7 }, stale: 1, lossSum: 0, lossCount: 0, state: new Map([['w', Float32Array.of(1, 2, 3)], ['w#m', Float32Array.of(0.5)]]), bestWeights: new Map([['w', Float32Array.of(4, 5, 6)]]), ema: new Map([['w', Float32Array.of(7, 8, 9)]]) };
      await saveCheckpoint(file, ck);
      const full = async (): Promise<void> => {
        throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
      };
      await assert.rejects(saveCheckpoint(file, { ...ck, epoch: 3, state: new Map([['w', Float32Array.of(9, 9, 9)]]) }, { write: full }), /ENOSPC/);
      const back = await loadCheckpoint(file);
      assert.equal(back.epoch, 2);
      assert.deepEqual([...back.state.get('w')!], [1, 2, 3]);
      assert.deepEqual([...back.state.get('w#m')!], [0.5]);
      assert.deepEqual([...back.bestWeights!.get('w')!], [4, 5, 6]);
      assert.deepEqual([...back.ema!.get('w')!], [7, 8, 9]);
      assert.deepEqual(back.history, ck.history);
      assert.deepEqual((await readdir(d)).filter((f) => f !== CHECKPOINT_FILE), [], 'no temp file left behind');
      assert.ok((await readFile(file)).subarray(0, 8).toString('latin1') === 'XFERCKPT');
    } finally {
      await rm(d, { recursive: true, force: true });
    }
  });
});
