/**
 * Heads: k-fold CV without a sweep, the folds error message, selection/refit policy, --json progress
 * lines from the real CLI, integer flags, atomic head saving over an old head, and the one top-k.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { XferError } from '../src/errors.js';
import { computeMetrics, loadHead, saveHead, stratifiedFolds, topKRows, trainHead, type TrainEvent } from '../src/heads/index.js';
import { parseParams, registerTrainCommands } from '../src/cli/train-cmd.js';
import { blobs, tmpDir, writeFolder } from './heads-helpers.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const S = blobs(180, 8, 3, 1.2, 5);
const trainVal = Array.from({ length: S.n }, (_, i) => (i % 5 === 0 ? 'val' : 'train'));
const trainValTest = Array.from({ length: S.n }, (_, i) => (i % 5 === 0 ? 'val' : i % 5 === 1 ? 'test' : 'train'));

async function rejects(p: Promise<unknown>, re: RegExp, hint?: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof XferError, `expected XferError, got ${String(e)}`);
    assert.match(e.message, re);
    if (hint) assert.match(e.hint ?? '', hint);
    return true;
  });
}

test('--folds without --sweep: k-fold CV accuracy (mean ± std) reported, final head fitted on all training rows', async () => {
  const dir = await writeFolder(await tmpDir(), S, { splits: trainVal });
  const out = path.join(await tmpDir(), 'cv');
  const events: TrainEvent[] = [];
  const r = await trainHead({ features: dir, head: 'linear', folds: 3, out, progress: (e) => events.push(e) });
  const cv = r.report.cv!;
  assert.equal(cv.folds, 3);
  assert.equal(cv.scores.length, 3);
  assert.ok(cv.mean > 0.5 && cv.mean <= 1);
  assert.ok(cv.std >= 0);
  assert.equal(cv.rows, r.report.rows.train);
  assert.equal(r.report.rows.fit, r.report.rows.train);
  assert.equal(r.report.selection?.refit, 'train');
  assert.match(r.report.selection!.method, /3-fold CV on train/);
  assert.ok(r.report.metrics.val, 'val stays a hold-out and is reported');
  assert.equal(events.filter((e) => e.event === 'fold').length, 3);
  const json = JSON.parse(await readFile(path.join(out, 'report.json'), 'utf8'));
  assert.equal(json.cv.scores.length, 3);
  const md = await readFile(path.join(out, 'report.md'), 'utf8');
  assert.match(md, /3-fold cross-validation on train/);
  assert.match(md, /Accuracy \d+\.\d+% ± \d+\.\d+%/);
  assert.match(md, /final head fitted on: train \(\d+ rows\) \(default --refit\)/);
});

test('stratified folds error names what was requested and suggests a fix that works', async () => {
  const y = Int32Array.from({ length: 30 }, (_, i) => (i < 28 ? i % 2 : 2)); // class 2 has 2 samples
  assert.throws(
    () => stratifiedFolds(y, 5, 0, (c) => `c${c}`, "the sweep's default 5-fold CV"),
    (e: unknown) => e instanceof XferError && /^the sweep's default 5-fold CV: class 'c2' \(2\) has fewer training samples than folds \(5\)/.test(e.message) && /--folds 2/.test(e.hint ?? '') && !/--val/.test(e.hint ?? ''),
  );
  const y1 = Int32Array.from({ length: 30 }, (_, i) => (i < 29 ? i % 2 : 2)); // class 2 has 1 sample
  assert.throws(() => stratifiedFolds(y1, 3, 0, (c) => `c${c}`), (e: unknown) => e instanceof XferError && /^--folds 3:/.test(e.message) && /add training samples of class 'c2'/.test(e.hint ?? ''));
  // through the trainer: no --folds given → the message says it was the sweep's default
  const yy = S.y.slice();
  yy[0] = 3;
  yy[3] = 3;
  const dir = await writeFolder(await tmpDir(), { ...S, y: yy, k: 4 }, { splits: trainVal.map((s, i) => (i === 0 || i === 3 ? 'train' : s)) });
  await rejects(trainHead({ features: dir, head: 'linear', sweep: 'C=0.1,1', out: path.join(await tmpDir(), 'x') }), /^the sweep's default 5-fold CV: class 'class3' \(2\)/, /--folds 2/);
});

test('selection / refit policy is explicit and overridable', async () => {
  const tv = await writeFolder(await tmpDir(), S, { splits: trainVal });
  // train/val only: sweep by k-fold CV on train, refit on train, val is a clean hold-out
  const a = await trainHead({ features: tv, head: 'linear', sweep: 'C=0.1,1', folds: 3, out: path.join(await tmpDir(), 'a') });
  assert.equal(a.report.selection?.refit, 'train');
  assert.equal(a.report.selection?.refitDefault, true);
  assert.equal(a.report.rows.fit, a.report.rows.train);
  assert.match(a.report.selection!.holdout!, /hold-out the final head never saw/);
  assert.ok(a.report.metrics.val);
  // --refit train+val: the final head sees val too (no val metrics then)
  const b = await trainHead({ features: tv, head: 'linear', sweep: 'C=0.1,1', folds: 3, refit: 'train+val', out: path.join(await tmpDir(), 'b') });
  assert.equal(b.report.rows.fit, b.report.rows.train + b.report.rows.val);
  assert.equal(b.report.selection?.refitDefault, false);
  assert.equal(b.report.metrics.val, undefined);
  assert.match(b.report.selection!.fitOn, /^train\+val/);
  // with a test split: sweep on val, refit on train+val by default; --refit train keeps train only
  const tvt = await writeFolder(await tmpDir(), S, { splits: trainValTest });
  const c = await trainHead({ features: tvt, head: 'linear', sweep: 'C=0.1,1', out: path.join(await tmpDir(), 'c') });
  assert.equal(c.report.selection?.refit, 'train+val');
  assert.match(c.report.selection!.method, /on val/);
  const d = await trainHead({ features: tvt, head: 'linear', sweep: 'C=0.1,1', refit: 'train', out: path.join(await tmpDir(), 'd') });
  assert.equal(d.report.rows.fit, d.report.rows.train);
  assert.match(d.report.selection!.holdout!, /selected the parameters/);
  const json = JSON.parse(await readFile(path.join(d.dir, 'report.json'), 'utf8'));
  assert.equal(json.selection.refit, 'train');
  await rejects(trainHead({ features: tvt, head: 'linear', refit: 'all' as never, out: path.join(await tmpDir(), 'e') }), /--refit: expected train or train\+val, got 'all'/);
});

function xfer(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [path.join(ROOT, 'bin', 'xfer.js'), ...args], { encoding: 'utf8', cwd: ROOT, timeout: 120_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('CLI --json: one JSON line per progress event, then the result line (spawned bin/xfer.js)', async () => {
  const dir = await writeFolder(await tmpDir(), S, { splits: trainVal });
  const out = path.join(await tmpDir(), 'j');
  const r = xfer(['train', '--features', dir, '--head', 'mlp', '--param', 'hidden=8', '--param', 'epochs=4', '--param', 'earlyStopping=false', '--sweep', 'lr=0.001,0.01', '--folds', '2', '--threads', '1', '--json', '--out', out]);
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  const last = lines[lines.length - 1];
  assert.equal(last.event, 'result');
  assert.equal(last.ok, true);
  assert.equal((last.selection as { refit: string }).refit, 'train');
  const progress = lines.slice(0, -1);
  assert.ok(progress.every((e) => e.event === 'fit' || e.event === 'candidate'));
  const epochs = progress.filter((e) => e.event === 'fit' && e.phase === 'epoch');
  assert.ok(epochs.length >= 4 * 5, `epoch lines: ${epochs.length}`); // 2 values × 2 folds + final fit, 4 epochs each
  assert.ok(epochs.every((e) => typeof e.iter === 'number' && typeof e.loss === 'number'));
  const cands = progress.filter((e) => e.event === 'candidate');
  assert.equal(cands.length, 4);
  assert.ok(cands.every((e) => e.param === 'lr' && typeof e.valAcc === 'number' && e.folds === 2));
  assert.equal(r.stderr.includes('\r'), false, 'no live line on a non-TTY');
  // --folds without --sweep through the CLI: fold lines and the CV summary
  const r2 = xfer(['train', '--features', dir, '--head', 'linear', '--folds', '3', '--quiet', '--out', path.join(await tmpDir(), 'k')]);
  assert.equal(r2.status, 0, r2.stderr);
  assert.match(r2.stdout, /3-fold CV on train \(\d+ rows\): accuracy \d+\.\d+% ± \d+\.\d+%/);
  assert.match(r2.stdout, /selection: .*final head fitted on train \(\d+ rows\)/);
  // --help documents selection, refit and progress
  const h = xfer(['train', '--help']);
  assert.match(h.stdout, /--refit <rows>/);
  assert.match(h.stdout, /Model selection and the final fit/);
  assert.match(h.stdout, /--quiet/);
});

test('CLI integer flags: --threads, --folds, --seed and integer head params refuse non-integers', async () => {
  const dir = await writeFolder(await tmpDir(), S, { splits: trainVal });
  const out = path.join(await tmpDir(), 'x');
  const r = xfer(['train', '--features', dir, '--threads', '2.5', '--out', out]);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /error: --threads: expected a positive integer, got "2\.5"/);
  const run = async (args: string[]): Promise<void> => {
    const p = new Command('xfer').exitOverride();
    registerTrainCommands(p);
    await p.parseAsync(['node', 'xfer', 'train', '--features', dir, '--out', out, ...args]);
  };
  await rejects(run(['--folds', '2.5']), /--folds: expected a positive integer, got "2\.5"/);
  await rejects(run(['--folds', '1']), /--folds: k-fold CV needs at least 2 folds/);
  await rejects(run(['--seed', '-1']), /--seed: expected a non-negative integer/);
  await rejects(run(['--seed', '1.5']), /--seed: expected a non-negative integer/);
  // the head's constraint table names the parameter, what it accepts and what was given
  assert.throws(() => parseParams('mlp', ['hidden=64.5']), /--param hidden: head mlp expects 1–2 integer\(s\) ≥ 1, got '64\.5'/);
  assert.throws(() => parseParams('mlp', ['hidden=64,0']), /--param hidden: head mlp expects 1–2 integer\(s\) ≥ 1, got '64,0'/);
  assert.throws(() => parseParams('mlp', ['epochs=2.5']), /--param epochs: head mlp expects an integer ≥ 1, got '2\.5'/);
  assert.throws(() => parseParams('svm-rbf', ['gamma=-1']), /--param gamma: head svm-rbf expects 'scale', 'auto' or a number > 0, got '-1'/);
  assert.throws(() => parseParams('svm-rbf', ['kernel=sigmoid']), /--param kernel: head svm-rbf expects 'rbf' or 'poly', got 'sigmoid'/);
  assert.deepEqual(parseParams('svm-rbf', ['gamma=auto', 'probability=false']), { gamma: 'auto', probability: false });
  assert.deepEqual(parseParams('mlp', ['hidden=64,32', 'epochs=3', 'lr=0.01']), { hidden: [64, 32], epochs: 3, lr: 0.01 });
  assert.equal(existsSync(out), false);
});

test('saveHead over an old head: stale arrays removed, foreign files kept, no temp files, head.json consistent', async () => {
  const dir = await writeFolder(await tmpDir(), S, { splits: trainVal });
  const out = path.join(await tmpDir(), 'h');
  await trainHead({ features: dir, head: 'mlp', params: { hidden: [8], epochs: 3 }, transforms: 'standardize,pca:4', out });
  const before = (await readdir(out)).filter((f) => f.endsWith('.npy'));
  assert.ok(before.some((f) => f.startsWith('t1_')), before.join(','));
  await writeFile(path.join(out, 'notes.npy'), 'not the head format’s'); // a file head.json never referenced
  // (trainHead refuses an existing --out unless force, and then replaces the whole folder: test/cli-truth.test.ts.)
  const { trained } = await trainHead({ features: dir, head: 'linear', transforms: 'none', out: path.join(await tmpDir(), 'h2') });
  await saveHead(out, trained);
  const after = await readdir(out);
  assert.deepEqual(after.filter((f) => /^t\d+_/.test(f)), [], 'old transform arrays removed');
  assert.ok(after.includes('notes.npy'), 'foreign file kept');
  assert.deepEqual(after.filter((f) => f.includes('.tmp')), []);
  const json = JSON.parse(await readFile(path.join(out, 'head.json'), 'utf8'));
  for (const ref of Object.values(json.arrays as Record<string, { file: string }>)) assert.ok(after.includes(ref.file));
  const mlpOnly = before.filter((f) => !/^t\d+_/.test(f) && !Object.values(json.arrays as Record<string, { file: string }>).some((r) => r.file === f));
  for (const f of mlpOnly) assert.equal(after.includes(f), false, `stale ${f} removed`);
  const h = await loadHead(out);
  assert.equal(h.head.kind, 'linear');
  assert.equal(h.transforms.length, 0);
});

test('one top-k: topKRows orders best first, ties to the lower index, NaN last; metrics use it', () => {
  const S2 = Float32Array.of(0.1, 0.5, 0.5, 0.2, /* row 2 */ NaN, 0.3, 0.1, 0.9);
  const t = topKRows(S2, 2, 4, 3);
  assert.deepEqual([...t], [1, 2, 3, 3, 1, 2]);
  assert.deepEqual([...topKRows(Float32Array.of(3, 1, 2), 1, 3, 5)], [0, 2, 1]);
  // true classes 2 and 0 (row 2: 0 has NaN → not in top-2)
  const m = computeMetrics(Int32Array.of(2, 0), S2, 4, [0, 1, 2, 3], ['a', 'b', 'c', 'd'], false, 2);
  assert.equal(m.accuracy, 0); // argmax 1 and 3
  assert.equal(m.topK?.accuracy, 0.5);
});
