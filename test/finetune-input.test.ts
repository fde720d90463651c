/**
 * Fine-tuning the whole network from decoded images (`--from input`) on a tiny conv classifier
 * (generated here, so no ../shared needed): it trains on CPU with on-the-fly augmentation, predict
 * runs it through the same decode path, and the exported ONNX file agrees with predict within 1e-5.
 * Also: the CLI's one-line errors for bad fine-tuning flags (exit 2).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import ort from '../src/model/ort.js';
import { emptyGraph, floatTensor, makeModel, node, valueInfo } from '../src/onnx/builder.js';
import { writeOnnxFile } from '../src/onnx/io.js';
import { DataType } from '../src/onnx/proto.js';
import { Rng } from '../src/heads/rng.js';
import { loadImagePixels } from '../src/image/decode.js';
import { openPredictor } from '../src/predict/predict.js';
import { exportOnnx } from '../src/predict/export.js';
import { PIXEL_INPUT } from '../src/model/taps.js';
import { augmentPixels } from '../src/image/augment.js';
import { finetune } from '../src/finetune/fit.js';
import { REPO_ROOT } from './helpers/paths.js';

let dir: string;
let model: string;
let card: string;
let data: string;

/** x [N,3,32,32] → Conv 3→8 (3×3) → Relu → GlobalAveragePool → Flatten → Gemm 8→5 (the classifier fine-tuning replaces). */
async function makeClassifier(): Promise<void> {
  const r = new Rng(3);
  const w = (n: number, s: number) => Array.from({ length: n }, () => r.normal() * s);
  const g = emptyGraph('tinycls');
  g.input.push(valueInfo('x', DataType.FLOAT, ['N', 3, 32, 32]));
  g.initializer.push(floatTensor('w1', [8, 3, 3, 3], w(8 * 27, 0.3)), floatTensor('b1', [8], w(8, 0.1)));
  g.initializer.push(floatTensor('wc', [5, 8], w(40, 0.3)), floatTensor('bc', [5], w(5, 0.1)));
  g.node.push(node('Conv', ['x', 'w1', 'b1'], ['conv1'], { pads: [1, 1, 1, 1], kernel_shape: [3, 3] }));
  g.node.push(node('Relu', ['conv1'], ['relu1']));
  g.node.push(node('GlobalAveragePool', ['relu1'], ['gap']));
  g.node.push(node('Flatten', ['gap'], ['feat'], { axis: 1 }));
  g.node.push(node('Gemm', ['feat', 'wc', 'bc'], ['logits'], { transB: 1 }));
  g.output.push(valueInfo('logits', DataType.FLOAT, ['N', 5]));
  model = path.join(dir, 'tinycls.onnx');
  await writeOnnxFile(model, makeModel(g, { opset: 13 }));
  card = path.join(dir, 'tinycls.card.json');
  await writeFile(
    card,
    JSON.stringify({
      id: 'tinycls',
      description: 'test classifier',
      source: 'test',
      license: 'MIT',
      input: { size: [32, 32], layout: 'NCHW', channel_order: 'RGB', dtype: 'float32', range: [0, 1], mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] },
      resize: { policy: 'squash', crop_pct: 1, interpolation: 'bilinear' },
      taps: { recommended: ['relu1'], default: 'feat', pool: 'none' },
    }),
  );
}

/** Two classes that differ in colour (reddish vs bluish noise), 8 train + 3 val images each. */
async function makeImages(): Promise<void> {
  const r = new Rng(9);
  for (const [split, n] of [['train', 8], ['val', 3]] as const) {
    for (const [c, hue] of [['red', 0], ['blue', 2]] as const) {
      await mkdir(path.join(data, split, c), { recursive: true });
      for (let i = 0; i < n; i++) {
        const px = Buffer.alloc(40 * 40 * 3);
        for (let p = 0; p < 40 * 40; p++) for (let k = 0; k < 3; k++) px[p * 3 + k] = Math.floor(r.next() * (k === hue ? 255 : 120));
        await sharp(px, { raw: { width: 40, height: 40, channels: 3 } }).png().toFile(path.join(data, split, c, `${i}.png`));
      }
    }
  }
}

describe('fine-tuning from the input (tiny generated classifier)', () => {
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'xfer-ft-input-'));
    data = path.join(dir, 'images');
    await makeClassifier();
    await makeImages();
  });
  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('trains every layer on augmented decoded images; export == predict within 1e-5', async () => {
    const out = path.join(dir, 'head');
    const r = await finetune({ from: 'input', data, model, card, out, epochs: 6, batch: 4, lr: 0.05, lrBackbone: 0.05, augment: 'hflip,crop,color', seed: 2, threads: 1 });
    await r.head.close();
    assert.deepEqual(r.report.layers, ['x']);
    assert.equal(r.report.rows.train, 16);
    const hist = r.report.fit!.history as { loss: number; valAcc: number }[];
    assert.ok(hist[hist.length - 1].loss < hist[0].loss, `loss falls: ${hist.map((h) => h.loss.toFixed(3)).join(' ')}`);
    assert.ok(r.report.metrics.val.accuracy >= 5 / 6, `colour classes are learnt (val ${r.report.metrics.val.accuracy})`);
    const onnx = path.join(dir, 'ft.onnx');
    await exportOnnx(out, onnx, { model, card });
    const pred = await openPredictor(out, { model, card, workers: 1 });
    const sess = await ort.InferenceSession.create(onnx);
    try {
      const files = ['val/red/0.png', 'val/blue/1.png', 'train/red/3.png'].map((f) => path.join(data, f));
      const px = new Uint8Array(files.length * 32 * 32 * 3);
      for (let i = 0; i < files.length; i++) px.set((await loadImagePixels(files[i], pred.plan)).data, i * 32 * 32 * 3);
      const a = await pred.predictPixels(px, files.length);
      const b = (await sess.run({ [PIXEL_INPUT]: new ort.Tensor('uint8', px, [files.length, 32, 32, 3]) })).probabilities.data as Float32Array;
      let d = 0;
      for (let i = 0; i < b.length; i++) d = Math.max(d, Math.abs(a.probs[i] - b[i]));
      assert.ok(d <= 1e-5, `export vs predict: max |Δp| ${d}`);
      const viaFiles = await pred.predict(files);
      assert.deepEqual(viaFiles.map((x) => ('index' in x ? x.index : -1)), Array.from(a.index));
      // predict decodes and feeds the input as training did: its val accuracy is the report's
      const val = ['red', 'blue'].flatMap((c, k) => [0, 1, 2].map((i) => ({ f: path.join(data, 'val', c, `${i}.png`), y: pred.labels.indexOf(c), k })));
      const pv = await pred.predict(val.map((v) => v.f));
      const acc = pv.filter((x, i) => 'index' in x && x.index === val[i].y).length / val.length;
      assert.equal(acc, r.report.metrics.val.accuracy);
    } finally {
      await sess.release();
      await pred.close();
    }
    // The head folder now exists: a new run there is refused unless --force, which replaces it.
    await assert.rejects(finetune({ from: 'input', data, model, card, out, epochs: 1, batch: 4, seed: 2, threads: 1 }), /--out .*: folder exists \(a head\)/);
    await writeFile(path.join(out, 'stale.txt'), 'from an older head');
    const again = await finetune({ from: 'input', data, model, card, out, epochs: 1, batch: 4, seed: 2, threads: 1, force: true });
    await again.head.close();
    await assert.rejects(stat(path.join(out, 'stale.txt')), { code: 'ENOENT' });
    await stat(path.join(out, 'head.json'));
  });

  test('augmentations are seeded and keep the image size; hflip twice is the identity', () => {
    const px = Uint8Array.from({ length: 8 * 6 * 3 }, (_, i) => (i * 37) % 256);
    const a = px.slice();
    const b = px.slice();
    augmentPixels(a, 8, 6, ['crop', 'hflip', 'color'], new Rng(5));
    augmentPixels(b, 8, 6, ['crop', 'hflip', 'color'], new Rng(5));
    assert.deepEqual(a, b);
    assert.notDeepEqual(a, px);
    const f = px.slice();
    const always = { next: () => 0, int: () => 0 };
    augmentPixels(f, 8, 6, ['hflip'], always);
    assert.deepEqual(Array.from(f.subarray(0, 3)), Array.from(px.subarray(7 * 3, 8 * 3)));
    augmentPixels(f, 8, 6, ['hflip'], always);
    assert.deepEqual(f, px);
  });

  test('CLI: bad fine-tuning flags are one-line usage errors (exit 2)', () => {
    const cli = path.join(REPO_ROOT, 'bin', 'xfer.js');
    const run = (...args: string[]) => spawnSync(process.execPath, [cli, 'train', '--head', 'finetune', '--out', path.join(dir, 'x'), ...args], { encoding: 'utf8' });
    const cases: [string[], RegExp][] = [
      [['--features', dir, '--from', 'a', '--lr', 'abc'], /error: --lr: expected a number, got 'abc'/],
      [['--features', dir, '--from', 'a', '--lr', '0'], /error: --lr: expected a positive number, got '0'/],
      [['--features', dir, '--from', 'a', '--lr-backbone', '-1'], /error: --lr-backbone: expected a positive number/],
      [['--features', dir, '--from', 'a', '--ema', '1.5'], /error: --ema: expected a decay in \[0, 1\) \(0: off\), got '1.5'/],
      [['--features', dir, '--from', 'a', '--ema', 'x'], /error: --ema: expected a number, got 'x'/],
      [['--features', dir, '--from', 'a', '--batch-norm', 'train'], /error: option '--batch-norm <mode>' argument 'train' is invalid\. Allowed choices are frozen, batch/],
      [['--features', dir], /error: --head finetune: --from <tap> is required/],
      [['--from', 'input'], /error: --from input: pass the images with --data/],
    ];
    for (const [args, re] of cases) {
      const p = run(...args);
      assert.equal(p.status, 2, `${args.join(' ')}: ${p.stderr}`);
      assert.match(p.stderr, re);
    }
    const other = spawnSync(process.execPath, [cli, 'train', '--features', dir, '--head', 'linear', '--lr', '1', '--out', path.join(dir, 'y')], { encoding: 'utf8' });
    assert.equal(other.status, 2);
    assert.match(other.stderr, /--lr is a fine-tuning option/);
  });
});
