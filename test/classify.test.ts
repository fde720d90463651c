/**
 * xfer classify: label mapping (1000/1001-line files, label_offset, labels_skip), top-k/softmax, and
 * the SqueezeNet 1.1 fp16 card against real images (skipped when ../shared is absent).
 * Card numbers (measured when the card was written): parrot.jpg → macaw 0.987; hymenoptera/val
 * top-1 exactly "ant"/"bee" 96/153 (bar: ≥ 90; wrong channel order or no mean subtraction: 56-62).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { XferError } from '../src/errors.js';
import { loadCard } from '../src/model/card.js';
import { discoverDataset } from '../src/image/discover.js';
import { Classifier, looksLikeProbabilities, mapLabels, softmax, topK, type ClassifyResult } from '../src/predict/classify.js';
import { tempDir } from './helpers/tmp.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const shared = path.resolve(repoRoot, '../shared');
const cardFile = path.join(repoRoot, 'test/fixtures/cards/squeezenet1.1.json');
const modelFile = path.join(shared, 'models/squeezenet1.1-fp16.onnx');
const noShared = !existsSync(modelFile) && `${modelFile} not present`;

const names = (n: number, from = 0) => Array.from({ length: n }, (_, i) => `c${i + from}`);

test('mapLabels: equal counts, 1001-line file on a 1000-class model, 1000-line file on a 1001-class model', () => {
  assert.deepEqual(mapLabels(names(3), 3), ['c0', 'c1', 'c2']);
  assert.deepEqual(mapLabels(['background', ...names(3)], 3), ['c0', 'c1', 'c2']);
  assert.deepEqual(mapLabels(['background', ...names(3)], 3, { labels_skip: 1 }), ['c0', 'c1', 'c2']);
  assert.deepEqual(mapLabels(names(3), 4), ['background', 'c0', 'c1', 'c2']);
  assert.deepEqual(mapLabels(names(3), 4, { label_offset: 1 }), ['background', 'c0', 'c1', 'c2']);
  assert.deepEqual(mapLabels(['background', ...names(3)], 4), ['background', 'c0', 'c1', 'c2']);
});

test('mapLabels: a count mismatch is an XferError naming both numbers', () => {
  assert.throws(
    () => mapLabels(names(10), 1000, { file: 'labels.txt' }),
    (e: unknown) => e instanceof XferError && /labels.txt: labels file has 10 labels but the model outputs 1000 classes/.test(e.message),
  );
  assert.throws(() => mapLabels(names(1001), 1000, { labels_skip: 0 }), XferError);
  assert.throws(() => mapLabels(names(3), 3, { labels_skip: -1 }), XferError);
});

test('softmax, looksLikeProbabilities, topK', () => {
  const p = softmax(new Float32Array([1, 2, 3]));
  assert.ok(Math.abs(p[0] + p[1] + p[2] - 1) < 1e-6 && p[2] > p[1] && p[1] > p[0]);
  assert.equal(looksLikeProbabilities(p), true);
  assert.equal(looksLikeProbabilities(new Float32Array([1, 2, 3])), false);
  assert.deepEqual(topK(new Float32Array([0.1, 0.5, 0.2, 0.5, 0.05]), 3).map((x) => x.index), [1, 3, 2]);
});

test('SqueezeNet card: parrot.jpg → macaw', { skip: noShared }, async () => {
  const card = await loadCard(cardFile);
  const clf = await Classifier.open(modelFile, card, { top: 3, device: 'cpu', threads: 1 });
  try {
    assert.equal(clf.fixedBatch, null, 'the model\'s fixed batch of 1 is made symbolic by its tap model');
    const r = await clf.classify(path.join(shared, 'images/parrot.jpg'));
    assert.equal(r.top[0].label, 'macaw');
    assert.ok(r.top[0].prob > 0.5, `macaw prob ${r.top[0].prob}`);
    assert.equal(r.top.length, 3);
  } finally {
    await clf.close();
  }
});

test('SqueezeNet card: hymenoptera/val top-1 is exactly "ant"/"bee" for ≥ 90 of 153', { skip: noShared }, async (t) => {
  const clf = await Classifier.fromSpec(modelFile, { card: cardFile, top: 1, device: 'cpu', threads: 1 });
  try {
    const ds = await discoverDataset(path.join(shared, 'datasets/hymenoptera/val'));
    assert.equal(ds.entries.length, 153);
    const results: ClassifyResult[] = [];
    const { ok, failed } = await clf.classifyAll(
      ds.entries.map((e) => ({ path: e.path, source: e.abs })),
      (r) => {
        if ('top' in r) results.push(r);
      },
    );
    assert.equal(failed, 0);
    assert.equal(ok, 153);
    const want: Record<string, string> = { ants: 'ant', bees: 'bee' };
    const correct = results.filter((r) => r.top[0].label.split(',')[0].trim() === want[r.path.split('/')[0]]).length;
    t.diagnostic(`squeezenet hymenoptera/val exact ant/bee top-1: ${correct}/153`);
    assert.ok(correct >= 90, `${correct}/153`);
  } finally {
    await clf.close();
  }
});

test('classify reports unreadable images and keeps going', { skip: noShared }, async () => {
  const clf = await Classifier.fromSpec(modelFile, { card: cardFile, device: 'cpu', threads: 1 });
  try {
    const seen: unknown[] = [];
    const { ok, failed } = await clf.classifyAll(
      [
        { path: 'missing.jpg', source: path.join(shared, 'nope.jpg') },
        { path: 'parrot.jpg', source: path.join(shared, 'images/parrot.jpg') },
      ],
      (r) => seen.push(r),
    );
    assert.deepEqual([ok, failed], [1, 1]);
    assert.deepEqual(seen[0], { path: 'missing.jpg', error: 'file not found' });
  } finally {
    await clf.close();
  }
});

test('a labels file that does not fit the model output is refused', { skip: noShared }, async () => {
  const dir = await tempDir('xfer-labels-');
  const labels = path.join(dir, 'ten.txt');
  await writeFile(labels, `${names(10).join('\n')}\n`);
  const clf = await Classifier.fromSpec(modelFile, { card: cardFile, labels, device: 'cpu' });
  try {
    await assert.rejects(clf.classify(path.join(shared, 'images/parrot.jpg')), (e: unknown) => e instanceof XferError && /ten.txt: labels file has 10 labels but the model outputs 1000 classes/.test(e.message));
  } finally {
    await clf.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test('xfer classify --card … --json prints one JSON object per image and exits 3 when one is unreadable (finished, some skipped)', { skip: noShared }, async () => {
  const { Command } = await import('commander');
  const { registerClassifyCommand } = await import('../src/cli/classify-cmd.js');
  const program = new Command();
  program.exitOverride();
  registerClassifyCommand(program);
  const out: string[] = [];
  const write = process.stdout.write.bind(process.stdout);
  const errWrite = process.stderr.write.bind(process.stderr);
  // Only text is the command's: node's test runner sends its own (binary) reports through stdout too.
  process.stdout.write = ((s: string | Uint8Array, ...rest: never[]) => (typeof s === 'string' ? (out.push(s), true) : write(s, ...rest))) as typeof process.stdout.write;
  process.stderr.write = ((s: string | Uint8Array, ...rest: never[]) => (typeof s === 'string' ? true : errWrite(s, ...rest))) as typeof process.stderr.write;
  const before = process.exitCode;
  // A file that exists but is no image is skipped (exit 3); a path that does not exist is a usage error (exit 2, test/cli-truth.test.ts).
  const notImage = path.join(await tempDir('xfer-classify-'), 'notes.jpg');
  await writeFile(notImage, 'not an image\n');
  try {
    await program.parseAsync(['node', 'xfer', 'classify', '--card', cardFile, '--top', '2', '--json', '--device', 'cpu', path.join(shared, 'images/parrot.jpg'), notImage]);
  } finally {
    process.stdout.write = write;
    process.stderr.write = errWrite;
  }
  const code = process.exitCode;
  process.exitCode = before;
  const lines = out.join('').trim().split('\n').map((l) => JSON.parse(l) as { path: string; top?: { label: string; prob: number }[]; error?: string });
  assert.equal(lines.length, 2);
  assert.equal(lines[0].top?.[0].label, 'macaw');
  assert.equal(lines[0].top?.length, 2);
  assert.match(lines[1].error ?? '', /not an image|unsupported|cannot/i, JSON.stringify(lines[1]));
  assert.equal(code, 3);
});
