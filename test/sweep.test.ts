/**
 * Issue 19: the knn head (against scikit-learn 1.9's KNeighborsClassifier, test/knn-sklearn.json
 * from scripts/make-knn-reference.py; its ONNX export against predictProba), taps found from the
 * graph, and `xfer sweep` / `xfer neighbors` / `xfer advise` on real photos with the built-in
 * backbone (a 40-image hymenoptera subset from ../shared; those tests skip without it).
 */
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readdir, symlink, readFile } from 'node:fs/promises';
import path from 'node:path';
import ort from '../src/model/ort.js';
import { createHead, headFromState } from '../src/heads/head.js';
import { KnnHead, knnOnnx, type OnnxPart } from '../src/heads/knn.js';
import '../src/heads/index.js';
import { emptyGraph, floatTensor, int64Tensor, makeModel, node, valueInfo } from '../src/onnx/builder.js';
import { DataType } from '../src/onnx/proto.js';
import { serializeModel, readOnnxFile } from '../src/onnx/io.js';
import { resolveBackbone } from '../src/model/registry.js';
import { describeLayers } from '../src/model/layers.js';
import { autoTaps } from '../src/model/auto-taps.js';
import { runSweep, sweepSplits } from '../src/sweep/sweep.js';
import { findNeighbors, neighborsPng } from '../src/sweep/neighbors.js';
import { advise, formatAdvice } from '../src/sweep/advise.js';
import { loadHead } from '../src/heads/model.js';
import { openPredictor } from '../src/predict/predict.js';
import { exportOnnx } from '../src/predict/export.js';
import type { FeatureFolder } from '../src/features/reader.js';
import { NO_SHARED, REPO_ROOT, shared } from './helpers/paths.js';
import { tempDir } from './helpers/tmp.js';

interface KnnFixture {
  X: number[][];
  y: number[];
  Q: number[][];
  cases: { metric: string; weights: string; k: number; proba: number[][] }[];
}
const fx = JSON.parse(readFileSync(new URL('../../test/knn-sklearn.json', import.meta.url), 'utf8')) as KnnFixture;
const mat = (rows: number[][]) => ({ data: Float32Array.from(rows.flat()), rows: rows.length, cols: rows[0].length });

test('knn: probabilities match scikit-learn KNeighborsClassifier (euclidean uniform/distance, cosine uniform)', async () => {
  for (const c of fx.cases) {
    const h = createHead('knn', { k: c.k, metric: c.metric, weights: c.weights });
    await h.fit(mat(fx.X), Int32Array.from(fx.y), 3);
    const P = await h.predictProba(mat(fx.Q));
    for (let i = 0; i < fx.Q.length; i++) {
      for (let k = 0; k < 3; k++) assert.ok(Math.abs(P[i * 3 + k] - c.proba[i][k]) < 1e-5, `${c.metric}/${c.weights} row ${i} class ${k}: ${P[i * 3 + k]} vs sklearn ${c.proba[i][k]}`);
    }
  }
});

test('knn: k larger than the training set is refused naming k and the row count', async () => {
  const h = createHead('knn', { k: 61 });
  await assert.rejects(h.fit(mat(fx.X), Int32Array.from(fx.y), 3), /k=61 is larger than the training set \(60 rows\)/);
  assert.throws(() => createHead('knn', { metric: 'manhattan' }), /parameter metric must be 'cosine' or 'euclidean', got "manhattan"/);
});

test('knn: the ONNX nodes (export) give predictProba, every metric and weighting; state round-trips', async () => {
  for (const metric of ['cosine', 'euclidean']) {
    for (const weights of ['uniform', 'distance']) {
      const h = (await createHead('knn', { k: 7, metric, weights }).fit(mat(fx.X), Int32Array.from(fx.y), 3)) as KnnHead;
      const back = headFromState(h.toState());
      const g = emptyGraph('knn');
      let n = 0;
      const part: OnnxPart = {
        op: (t, inputs, attrs = {}) => {
          const o = `n${n++}`;
          g.node.push(node(t, inputs, [o], attrs));
          return o;
        },
        opN: (t, inputs, count, attrs = {}) => {
          const outs = Array.from({ length: count }, () => `n${n++}`);
          g.node.push(node(t, inputs, outs, attrs));
          return outs;
        },
        const: (s, dims, data) => {
          const name = `${s}_${n++}`;
          g.initializer.push(floatTensor(name, dims, data));
          return name;
        },
        int64: (s, dims, data) => {
          const name = `${s}_${n++}`;
          g.initializer.push(int64Tensor(name, dims, data));
          return name;
        },
      };
      g.input.push(valueInfo('x', DataType.FLOAT, ['N', 8]));
      const { probs } = knnOnnx(part, back.toState(), 'x');
      g.node.push(node('Identity', [probs], ['p']));
      g.output.push(valueInfo('p', DataType.FLOAT, ['N', 3]));
      const s = await ort.InferenceSession.create(serializeModel(makeModel(g, { opset: 13 })));
      const out = await s.run({ x: new ort.Tensor('float32', Float32Array.from(fx.Q.flat()), [fx.Q.length, 8]) });
      await s.release();
      const want = await back.predictProba(mat(fx.Q));
      const got = out.p.data as Float32Array;
      for (let i = 0; i < want.length; i++) assert.ok(Math.abs(got[i] - want[i]) < 1e-4, `${metric}/${weights} [${i}]: onnx ${got[i]} vs js ${want[i]}`);
    }
  }
});

test('auto taps on the built-in MobileNetV2: 8-16 taps over depth, stage ends, the deepest map and the pooled codes', async () => {
  const b = await resolveBackbone('mobilenet_v2');
  const { model } = await readOnnxFile(b.file);
  const rows = await describeLayers(model, b.card);
  const taps = autoTaps(model, rows);
  assert.ok(taps.length >= 8 && taps.length <= 16, `${taps.length} taps`);
  const names = taps.map((t) => t.name);
  for (const n of ['block_2_add', 'block_5_add', 'block_12_add', 'block_15_add', 'out_relu', 'flatten_1']) assert.ok(names.includes(n), `${n} in ${names.join(', ')}`);
  assert.deepEqual([...taps].sort((a, b) => a.depth - b.depth), taps);
  assert.ok(taps.every((t) => rows.find((r) => r.name === t.name)!.op !== 'Transpose'));
});

test('auto taps on SqueezeNet 1.1 (fp16, ../shared): stage ends at 111/55/27/13 px and the Fire concats', { skip: NO_SHARED }, async () => {
  const { model } = await readOnnxFile(shared('models', 'squeezenet1.1-fp16.onnx'));
  const taps = autoTaps(model, await describeLayers(model, null));
  const names = taps.map((t) => t.name);
  assert.ok(taps.length >= 8 && taps.length <= 16, names.join(', '));
  for (const n of ['fire3/concat_1', 'fire5/concat_1', 'fire9/concat_1', 'conv10_2']) assert.ok(names.includes(n), `${n} in ${names.join(', ')}`);
});

test('auto taps on a transformer-shaped graph: every block output (second residual sum) and the pooled tokens', async () => {
  // 3 pre-norm-style blocks on [N, 16 tokens, 8 dims]: x + x·A, then + relu(·)·B; mean over tokens; classifier
  const g = emptyGraph('tiny_vit');
  g.input.push(valueInfo('x', DataType.FLOAT, ['N', 16, 8]));
  const w = (name: string, seed: number) => g.initializer.push(floatTensor(name, [8, 8], Float32Array.from({ length: 64 }, (_, i) => Math.sin(i * seed) / 8)));
  let cur = 'x';
  for (let b = 0; b < 3; b++) {
    w(`A${b}`, b + 1);
    w(`B${b}`, b + 5);
    g.node.push(node('MatMul', [cur, `A${b}`], [`attn${b}`]), node('Add', [cur, `attn${b}`], [`res${b}a`]));
    g.node.push(node('Relu', [`res${b}a`], [`act${b}`]), node('MatMul', [`act${b}`, `B${b}`], [`mlp${b}`]), node('Add', [`res${b}a`, `mlp${b}`], [`block${b}`]));
    cur = `block${b}`;
  }
  g.node.push(node('ReduceMean', [cur], ['pooled'], { axes: [1], keepdims: 0 }));
  g.initializer.push(floatTensor('W', [8, 3], new Float32Array(24).fill(0.1)));
  g.node.push(node('MatMul', ['pooled', 'W'], ['logits']));
  g.output.push(valueInfo('logits', DataType.FLOAT, ['N', 3]));
  const model = makeModel(g, { opset: 13 });
  const taps = autoTaps(model, await describeLayers(model, null), { min: 4 });
  assert.deepEqual(taps.map((t) => t.name), ['block0', 'block1', 'block2', 'pooled']);
});

test('sweep splits: a class with fewer training images than folds reduces the folds with a warning; one class is refused', () => {
  const mk = (labels: string[], rows: [number, string | null][]): FeatureFolder =>
    ({ dir: 'F', labels, meta: {} as FeatureFolder['meta'], index: rows.map(([l, split], i) => ({ row: i, path: `${i}.jpg`, label: labels[l], label_index: l, split, shard: 0, shard_row: i })) }) as FeatureFolder;
  const rows: [number, string | null][] = [...Array.from({ length: 10 }, (): [number, string] => [0, 'train']), ...Array.from({ length: 3 }, (): [number, string] => [1, 'train']), [0, 'val'], [1, 'val']];
  const warnings: string[] = [];
  const s = sweepSplits(mk(['ants', 'bees'], rows), 5, 0, (m) => warnings.push(m));
  assert.equal(s.folds, 3);
  assert.match(warnings[0], /'bees' \(3\) has fewer training images than folds; using 3 folds/);
  assert.throws(() => sweepSplits(mk(['ants', 'bees'], rows.filter(([l]) => l === 0)), 5, 0, () => {}), /a single class \('ants'\)/);
});

// --- real photos: a 2 × (10 train + 5 val) subset of hymenoptera
let root = '';
let data = '';
before(async () => {
  if (NO_SHARED) return;
  root = await tempDir('xfer-sweep-');
  data = path.join(root, 'data');
  for (const [split, n] of [['train', 10], ['val', 5]] as const) {
    for (const c of ['ants', 'bees']) {
      const src = shared('datasets', 'hymenoptera', split, c);
      await mkdir(path.join(data, split, c), { recursive: true });
      for (const f of (await readdir(src)).sort().slice(0, n)) await symlink(path.join(src, f), path.join(data, split, c, f));
    }
  }
});

test('sweep: one extraction, probes per (tap, pool, head), outputs, the best probe usable by predict and export; --features reuse agrees', { skip: NO_SHARED }, async (t) => {
  const out = path.join(root, 'sweep');
  const r = await runSweep({ model: 'mobilenet_v2', data, out, layers: ['block_2_add', 'block_13_expand_relu', 'out_relu'], pools: ['avg', 'avgmax'], heads: ['linear', 'knn'], folds: 3, concurrency: 2, grid: undefined });
  assert.equal(r.results.length, 3 * 2 * 2);
  assert.equal(r.rows.train, 20);
  assert.equal(r.rows.val, 10);
  assert.equal(r.extract?.images, 30, 'one extraction of every image');
  for (const f of ['sweep.json', 'sweep.md', 'sweep.png', 'best/head.json']) assert.ok(existsSync(path.join(out, f)), f);
  const md = await readFile(path.join(out, 'sweep.md'), 'utf8');
  assert.match(md, /\| tap \| depth \| pool \| head \| dims \|/);
  const avg = r.results.find((x) => x.tap === 'out_relu' && x.pool === 'avg')!;
  const avgmax = r.results.find((x) => x.tap === 'out_relu' && x.pool === 'avgmax')!;
  assert.equal(avg.dims, 1280);
  assert.equal(avgmax.dims, 2560);
  for (const x of r.results) assert.ok(x.cv.mean >= 0 && x.cv.mean <= 1 && x.val !== null);
  assert.ok(r.results.every((x) => x.cv.mean <= r.best.cv.mean));
  t.diagnostic(`best ${r.best.tap}/${r.best.pool}/${r.best.head}: CV ${(100 * r.best.cv.mean).toFixed(1)} %, val ${(100 * r.best.val!).toFixed(1)} %`);

  const head = await loadHead(r.bestHead);
  assert.equal(head.source.layers[0].name, r.best.tap);
  assert.equal(head.source.layers[0].pool, r.best.pool);
  const imgs = (await readdir(path.join(data, 'val', 'bees'))).slice(0, 2).map((f) => path.join(data, 'val', 'bees', f));
  const p = await openPredictor(r.bestHead, { workers: 1 });
  try {
    const res = await p.predict(imgs);
    assert.equal(res.length, 2);
    for (const x of res) assert.ok('label' in x && ['ants', 'bees'].includes(String(x.label)), JSON.stringify(x));
  } finally {
    await p.close();
  }
  const ex = await exportOnnx(r.bestHead, path.join(root, 'best.onnx'));
  assert.equal(ex.kind, r.best.head);

  // the same folder again, no extraction: the same CV accuracies for the same probes
  const again = await runSweep({ features: path.join(out, 'features'), out: path.join(root, 'again'), pools: ['avg'], heads: ['linear'], folds: 3 });
  assert.equal(again.extract, null);
  for (const x of again.results) {
    const y = r.results.find((z) => z.tap === x.tap && z.pool === 'avg' && z.head === 'linear')!;
    assert.equal(x.cv.mean, y.cv.mean, x.tap);
    assert.equal(x.val, y.val, x.tap);
  }

  // neighbours within the folder: the query itself left out, best first, and a contact sheet
  const nb = await findNeighbors({ features: path.join(out, 'features'), queries: [0, 'val/bees/' + path.basename(imgs[0])], k: 4, layer: 'out_relu' });
  assert.equal(nb.queries.length, 2);
  for (const q of nb.queries) {
    assert.equal(q.neighbors.length, 4);
    assert.ok(q.neighbors.every((n) => n.row !== q.row));
    for (let i = 1; i < 4; i++) assert.ok(q.neighbors[i - 1].score >= q.neighbors[i].score);
  }
  const sheet = path.join(root, 'sheet.png');
  await neighborsPng(nb, sheet, 64);
  const { default: sharp } = await import('sharp');
  const meta = await sharp(sheet).metadata();
  assert.equal(meta.width, 6 + 5 * 70);
  assert.equal(meta.height, 6 + 2 * (64 + 16 + 6));
  await assert.rejects(findNeighbors({ features: path.join(out, 'features'), queries: ['no/such.jpg'] }), /not an image of/);
});

test('sweep: an unknown tap lists the closest names and extracts nothing; a dataset with one class or no labels is refused', { skip: NO_SHARED }, async () => {
  const out = path.join(root, 'bad');
  await assert.rejects(runSweep({ model: 'mobilenet_v2', data, out, layers: ['block_13_expand_reluu'] }), /unknown tap "block_13_expand_reluu"; closest: block_13_expand_relu/);
  assert.equal(existsSync(path.join(out, 'features')), false);
  const one = path.join(root, 'one');
  await mkdir(path.join(one, 'ants'), { recursive: true });
  await symlink(path.join(data, 'train', 'ants'), path.join(one, 'ants', 'sub'));
  await assert.rejects(runSweep({ model: 'mobilenet_v2', data: one, out, layers: ['out_relu'] }), /single class|no labels/);
  await assert.rejects(runSweep({ model: 'mobilenet_v2', data: path.join(data, 'train', 'ants'), out, layers: ['out_relu'] }), /no labels/);
  // the CLI: exit 2, one line
  const r = spawnSync(process.execPath, [path.join(REPO_ROOT, 'bin', 'xfer.js'), 'sweep', '--model', 'mobilenet_v2', '--data', data, '--out', out, '--layers', 'out_reluu'], { encoding: 'utf8' });
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /closest: out_relu/);
});

test('advise: size, similarity and one recipe with commands, from one sweep', { skip: NO_SHARED }, async () => {
  const a = await advise({ model: 'mobilenet_v2', data, out: path.join(root, 'advise'), layers: ['block_6_expand_relu', 'block_13_expand_relu', 'out_relu'], folds: 3 });
  assert.equal(a.size.large, false, '10 images per class is small');
  assert.equal(a.size.perClassMedian, 10);
  assert.ok(a.size.curve.length >= 2 && a.size.curve.at(-1)!.fraction === 1);
  assert.ok(a.similarity.bn && a.similarity.bn.taps.length === 4 && a.similarity.bn.taps.every((t) => t.shift > 0 && Number.isFinite(t.shift)));
  assert.ok(a.similarity.classifier && a.similarity.classifier.classes === 5);
  assert.ok(a.similarity.classifier.meanMaxProb > 0.2 && a.similarity.classifier.meanMaxProb <= 1);
  assert.match(a.scenario, /^small-(similar|different)$/);
  assert.ok(a.commands.length >= 1 && a.commands.every((c) => c.startsWith('xfer ')));
  const txt = formatAdvice(a);
  assert.match(txt, /recommendation: /);
  assert.match(txt, /\[(linear on the top codes|SVM\/linear on an earlier tap)\]/);
});
