/** End-to-end: feature folder → train → save → eval, sweeps, reports, and every bad input of issue 4. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Command } from 'commander';
import { XferError } from '../src/errors.js';
import { encodeNpy } from '../src/features/npy.js';
import { loadRows, openFeatures, pickLayers } from '../src/features/reader.js';
import { trainHead, evalHead, loadHead, parseSweep, stratifiedFolds, stratifiedSplit, computeMetrics, HEAD_KINDS, type HeadParams } from '../src/heads/index.js';
import { registerTrainCommands } from '../src/cli/train-cmd.js';
import { blobs, tmpDir, writeFolder } from './heads-helpers.js';

const S = blobs(240, 16, 3, 0.8, 2);
const splits = Array.from({ length: S.n }, (_, i) => (i % 5 === 0 ? 'val' : i % 5 === 1 ? 'test' : 'train'));

async function rejects(p: Promise<unknown>, re: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof XferError, `expected XferError, got ${String(e)}`);
    assert.match(e.message, re);
    return true;
  });
}

test('reader: loads shards in index order, concatenates layers, keeps one matrix', async () => {
  const dir = await writeFolder(await tmpDir(), S, { splits, shardRows: 50, extraLayers: { aux: 4 } });
  const f = await openFeatures(dir);
  await rejects(Promise.resolve().then(() => pickLayers(f)), /has 2 layers/);
  const rows = [5, 0, 199, 51];
  const r = await loadRows(f, pickLayers(f, ['feat', 'aux']), rows);
  assert.equal(r.d, 20);
  for (let t = 0; t < rows.length; t++) assert.deepEqual([...r.X.subarray(t * 20, t * 20 + 16)], [...S.X.subarray(rows[t] * 16, rows[t] * 16 + 16)]);
});

test('train + eval every head; saved head reloads and predicts identically; reports and plots written', async () => {
  const dir = await writeFolder(await tmpDir(), S, { splits });
  for (const head of HEAD_KINDS) {
    const out = path.join(await tmpDir(), head);
    const params: HeadParams = head === 'mlp' ? { hidden: [16], epochs: 60, batchSize: 32 } : {};
    const r = await trainHead({ features: dir, head, params, out });
    assert.ok(r.report.metrics.test.accuracy > 0.75, `${head} test accuracy ${r.report.metrics.test.accuracy}`);
    for (const f of ['head.json', 'report.json', 'report.md', 'confusion-test.png']) assert.ok(existsSync(path.join(out, f)), `${head}: ${f}`);
    const png = readFileSync(path.join(out, 'confusion-test.png'));
    assert.deepEqual([...png.subarray(1, 4)], [0x50, 0x4e, 0x47]);
    const e = await evalHead({ head: out, features: dir, split: 'test' });
    assert.equal(e.metrics.accuracy, r.report.metrics.test.accuracy, `${head}: reloaded head gives the same accuracy`);
    assert.ok(existsSync(path.join(out, 'eval-test', 'report.md')));
    const loaded = await loadHead(out);
    assert.equal(loaded.source.model.id, 'testnet');
    assert.deepEqual(loaded.classLabels, ['class0', 'class1', 'class2']);
    if (head === 'mlp') assert.ok(existsSync(path.join(out, 'learning-loss.png')));
  }
});

test('sweep: log grid with k-fold CV writes the curve and refits the best', async () => {
  const dir = await writeFolder(await tmpDir(), S, {});
  const out = path.join(await tmpDir(), 'sw');
  const r = await trainHead({ features: dir, head: 'linear', sweep: 'C=1e-3..1e1:5', folds: 3, out });
  assert.equal(r.report.sweep?.points.length, 5);
  assert.ok(r.report.sweep?.points.every((p) => p.scores.length === 3));
  assert.equal(r.report.params.C, r.report.sweep?.best);
  assert.ok(existsSync(path.join(out, 'sweep.png')));
  // with a test split: sweep on val, refit on train+val
  const dir2 = await writeFolder(await tmpDir(), S, { splits });
  const r2 = await trainHead({ features: dir2, head: 'svm', sweep: 'C=0.01,0.1,1', out: path.join(await tmpDir(), 'sw2') });
  assert.equal(r2.report.sweep?.mode, 'validation split');
  assert.equal(r2.report.rows.fit, r2.report.rows.train + r2.report.rows.val);
});

test('sweep / split / metrics helpers', () => {
  assert.deepEqual(parseSweep('C=1e-4..1e4').values, [1e-4, 1e-3, 0.01, 0.1, 1, 10, 100, 1000, 10000]);
  assert.deepEqual(parseSweep('C=0.01,0.1,1').values, [0.01, 0.1, 1]);
  assert.throws(() => parseSweep('C=abc'), XferError);
  const y = Int32Array.from({ length: 100 }, (_, i) => (i < 80 ? 0 : 1));
  const s = stratifiedSplit(y, 0.25, 1);
  assert.equal(s.val.filter((i) => y[i] === 1).length, 5);
  assert.equal(s.val.length, 25);
  const folds = stratifiedFolds(y, 4, 1);
  for (let k = 0; k < 4; k++) assert.equal([...folds.keys()].filter((i) => folds[i] === k && y[i] === 1).length, 5);
  // metrics on a hand-made case: 3 labels, head knows labels 0 and 1 only
  const m = computeMetrics(Int32Array.of(0, 0, 1, 2), Float32Array.of(0.9, 0.1, 0.2, 0.8, 0.3, 0.7, 0.6, 0.4), 2, [0, 1], ['a', 'b', 'c'], true);
  assert.equal(m.accuracy, 0.5);
  assert.deepEqual(m.unseen, { c: 1 });
  assert.deepEqual(m.confusion, [[1, 1, 0], [0, 1, 0], [1, 0, 0]]);
  const a = m.perClass.find((c) => c.label === 'a')!;
  assert.equal(a.precision, 0.5);
  assert.equal(a.recall, 0.5);
});

test('bad input: NaN/Inf rows are refused and listed', async () => {
  const X = S.X.slice();
  X[7 * 16 + 3] = NaN;
  X[100 * 16] = Infinity;
  const dir = await writeFolder(await tmpDir(), { ...S, X }, { splits });
  await rejects(trainHead({ features: dir, head: 'linear', out: path.join(await tmpDir(), 'x') }), /2 feature row\(s\) contain NaN or Inf: .*row 7 /);
});

test('bad input: single class, too few samples for folds, empty and missing folders', async () => {
  const one = { ...S, y: new Int32Array(S.n) };
  const d1 = await writeFolder(await tmpDir(), one, {});
  await rejects(trainHead({ features: d1, head: 'linear', out: path.join(await tmpDir(), 'x') }), /single class/);
  const y = S.y.slice();
  y[0] = 3; // a 4th class with two samples
  y[3] = 3;
  const d2 = await writeFolder(await tmpDir(), { ...S, y, k: 4 }, {});
  await rejects(trainHead({ features: d2, head: 'linear', sweep: 'C=0.1,1', folds: 5, out: path.join(await tmpDir(), 'x') }), /class 'class3' \(2\) has fewer training samples than folds/);
  await rejects(trainHead({ features: await tmpDir(), head: 'linear', out: path.join(await tmpDir(), 'x') }), /folder is empty/);
  await rejects(trainHead({ features: '/nonexistent/xfer-features', head: 'linear', out: path.join(await tmpDir(), 'x') }), /folder not found/);
});

test('bad input: head vs features from another backbone, another layer, another width', async () => {
  const dir = await writeFolder(await tmpDir(), S, { splits });
  const out = path.join(await tmpDir(), 'h');
  await trainHead({ features: dir, head: 'linear', out });
  const other = await writeFolder(await tmpDir(), S, { splits, modelId: 'othernet', sha256: 'b'.repeat(64) });
  await rejects(evalHead({ head: out, features: other }), /trained on backbone testnet .* holds features of othernet/);
  const layer = await writeFolder(await tmpDir(), S, { splits, layer: 'conv5' });
  await rejects(evalHead({ head: out, features: layer }), /trained on layers feat\/avg but the features give conv5\/avg/);
  const narrow = blobs(60, 12, 3, 1, 3);
  const wdir = await writeFolder(await tmpDir(), narrow, {});
  // same backbone + layer name but a different width (e.g. different pooling shape)
  await rejects(evalHead({ head: out, features: wdir }), /12 columns but the head was trained on 16/);
});

test('bad input: labels in test that the head never saw are reported, not a crash', async () => {
  const y = S.y.slice();
  const sp = splits.slice();
  for (let i = 0; i < S.n; i++) if (sp[i] === 'test' && i % 4 === 1) y[i] = 3;
  const dir = await writeFolder(await tmpDir(), { ...S, y, k: 4 }, { splits: sp });
  const out = path.join(await tmpDir(), 'h');
  const r = await trainHead({ features: dir, head: 'linear', out });
  assert.ok(r.report.metrics.test.unseen.class3 > 0);
  assert.ok(r.report.warnings.some((w) => /class3/.test(w)));
  const e = await evalHead({ head: out, features: dir });
  assert.ok(e.metrics.unseen.class3 > 0);
  assert.match(await readFile(path.join(e.dir, 'report.md'), 'utf8'), /never saw in training.*class3/);
});

test('CLI: non-numeric C and unknown params are one-line XferErrors; --json prints a result', async () => {
  const dir = await writeFolder(await tmpDir(), S, { splits });
  const run = async (args: string[]): Promise<void> => {
    const p = new Command('xfer').exitOverride();
    registerTrainCommands(p);
    await p.parseAsync(['node', 'xfer', ...args]);
  };
  await rejects(run(['train', '--features', dir, '--head', 'linear', '--C', 'abc', '--out', path.join(await tmpDir(), 'x')]), /--C: 'abc' is not a number/);
  await rejects(run(['train', '--features', dir, '--head', 'svm', '--sweep', 'C=a..b', '--out', path.join(await tmpDir(), 'x')]), /--sweep C: 'a' is not a number/);
  await rejects(run(['train', '--features', dir, '--head', 'mlp', '--param', 'nope=1', '--out', path.join(await tmpDir(), 'x')]), /no parameter 'nope'/);
  await rejects(run(['train', '--features', dir, '--head', 'forest', '--out', path.join(await tmpDir(), 'x')]), /unknown head 'forest'/);
  const out = path.join(await tmpDir(), 'j');
  const chunks: string[] = [];
  const orig = process.stdout.write.bind(process.stdout);
  process.stdout.write = ((s: string) => (chunks.push(String(s)), true)) as typeof process.stdout.write;
  try {
    await run(['train', '--features', dir, '--head', 'mlp', '--param', 'hidden=8', '--param', 'epochs=5', '--json', '--out', out]);
  } finally {
    process.stdout.write = orig;
  }
  const lines = chunks.join('').trim().split('\n');
  const res = JSON.parse(lines[lines.length - 1]) as { event: string; ok: boolean; kind: string; metrics: Record<string, { accuracy: number }> };
  assert.equal(res.event, 'result');
  assert.ok(lines.slice(0, -1).every((l) => (JSON.parse(l) as { event: string }).event === 'fit'));
  assert.equal(res.ok, true);
  assert.equal(res.kind, 'mlp');
  assert.ok(res.metrics.test.accuracy > 0);
});

test('float16 shards load as float32', async () => {
  const dir = await writeFolder(await tmpDir(), S, { splits });
  const meta = JSON.parse(await readFile(path.join(dir, 'meta.json'), 'utf8'));
  meta.layers[0].dtype = 'float16';
  await writeFile(path.join(dir, 'meta.json'), JSON.stringify(meta));
  const { float32ToFloat16 } = await import('../src/util/float16.js');
  await mkdir(path.join(dir, 'feat'), { recursive: true });
  for (let sh = 0; sh * 64 < S.n; sh++) {
    const a = sh * 64;
    const b = Math.min(S.n, a + 64);
    await writeFile(path.join(dir, 'feat', `${String(sh).padStart(5, '0')}.npy`), encodeNpy(float32ToFloat16(S.X.subarray(a * 16, b * 16)), 'float16', [b - a, 16]));
  }
  const f = await openFeatures(dir);
  const r = await loadRows(f, pickLayers(f), [10]);
  for (let j = 0; j < 16; j++) assert.ok(Math.abs(r.X[j] - S.X[10 * 16 + j]) < 2e-3 * Math.max(1, Math.abs(S.X[10 * 16 + j])));
});
