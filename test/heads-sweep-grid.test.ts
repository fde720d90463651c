/** Sweeps: default grid, C × gamma grids shown in the report, warm starts; no-sweep fits use every training row. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { Command } from 'commander';
import { XferError } from '../src/errors.js';
import { createHead, parseSweeps, gridPoints, trainHead } from '../src/heads/index.js';
import type { LinearHead } from '../src/heads/linear.js';
import { registerTrainCommands } from '../src/cli/train-cmd.js';
import { blobs, tmpDir, writeFolder } from './heads-helpers.js';

const S = blobs(240, 16, 3, 0.8, 2);
const tvt = Array.from({ length: S.n }, (_, i) => (i % 5 === 0 ? 'val' : i % 5 === 1 ? 'test' : 'train'));
const trainTest = Array.from({ length: S.n }, (_, i) => (i % 5 === 1 ? 'test' : 'train'));

test('no sweep: the head is fitted on every training row (no validation carve) and the report says so', async () => {
  const dir = await writeFolder(await tmpDir(), S, { splits: trainTest });
  const r = await trainHead({ features: dir, head: 'linear', out: path.join(await tmpDir(), 'h') });
  const nTrain = trainTest.filter((s) => s === 'train').length;
  assert.equal(r.report.rows.train, nTrain);
  assert.equal(r.report.rows.val, 0);
  assert.equal(r.report.rows.fit, nTrain);
  assert.match(r.report.selection!.method, new RegExp(`all ${nTrain} training rows fitted, no validation split carved`));
  // --val still carves a hold-out on request
  const v = await trainHead({ features: dir, head: 'linear', val: 0.25, out: path.join(await tmpDir(), 'v') });
  assert.equal(v.report.rows.val, Math.round(0.25 * nTrain));
  assert.equal(v.report.rows.fit, nTrain - Math.round(0.25 * nTrain));
});

test('grid parsing: repeated specs multiply, the last axis varies fastest, a parameter given twice is refused, no value = the default grid', () => {
  const g = parseSweeps(['C=0.1,1', 'gamma=0.01,0.1,1'], undefined, 'svm-rbf');
  const pts = gridPoints(g);
  assert.equal(pts.length, 6);
  assert.deepEqual(pts[0], { C: 0.1, gamma: 0.01 });
  assert.deepEqual(pts[1], { C: 0.1, gamma: 0.1 });
  assert.deepEqual(pts[5], { C: 1, gamma: 1 });
  assert.throws(() => parseSweeps(['C=1', 'C=2'], undefined, 'linear'), (e: unknown) => e instanceof XferError && /'C' is given twice/.test(e.message));
  const d = parseSweeps(true, 'C=1e-4..1e4:10', 'linear');
  assert.equal(d.axes[0].values.length, 10);
  assert.equal(d.axes[0].values[0], 1e-4);
  assert.equal(d.axes[0].values[9], 1e4);
  assert.throws(() => parseSweeps(true, undefined, 'x'), /no default grid/);
});

test('svm-rbf C × gamma grid: every point scored, the best pair refitted, the grid in report.md and on stdout', async () => {
  const dir = await writeFolder(await tmpDir(), S, { splits: tvt });
  const out = path.join(await tmpDir(), 'g');
  const lines: string[] = [];
  const orig = process.stdout.write.bind(process.stdout);
  process.stdout.write = ((s: string) => (lines.push(String(s)), true)) as typeof process.stdout.write;
  try {
    const p = new Command('xfer').exitOverride();
    registerTrainCommands(p);
    await p.parseAsync(['node', 'xfer', 'train', '--features', dir, '--head', 'svm-rbf', '--sweep', 'C=0.1,10', '--sweep', 'gamma=0.01,0.5', '--quiet', '--out', out]);
  } finally {
    process.stdout.write = orig;
  }
  const rep = JSON.parse(await readFile(path.join(out, 'report.json'), 'utf8')) as { sweep: { params: string[]; points: { values: Record<string, number>; score: number }[]; bestValues: Record<string, number> }; params: Record<string, unknown> };
  assert.deepEqual(rep.sweep.params, ['C', 'gamma']);
  assert.equal(rep.sweep.points.length, 4);
  const best = rep.sweep.points.reduce((a, b) => (b.score > a.score ? b : a));
  assert.equal(best.score, rep.sweep.points.find((p) => p.values.C === rep.sweep.bestValues.C && p.values.gamma === rep.sweep.bestValues.gamma)!.score);
  assert.equal(rep.params.C, rep.sweep.bestValues.C);
  assert.equal(rep.params.gamma, rep.sweep.bestValues.gamma);
  const md = await readFile(path.join(out, 'report.md'), 'utf8');
  assert.match(md, /Grid: C ∈ \{0\.1, 10\} × gamma ∈ \{0\.01, 0\.5\} — 4 points/);
  assert.match(md, /\| C \| gamma \| accuracy \|/);
  assert.match(lines.join(''), /grid: C ∈ \{0\.1, 10\} × gamma ∈ \{0\.01, 0\.5\} \(4 points\)/);
});

test('--sweep with no value uses the default grid (10 values of C, as LogisticRegressionCV)', async () => {
  const dir = await writeFolder(await tmpDir(), S, { splits: trainTest });
  const out = path.join(await tmpDir(), 'd');
  const p = new Command('xfer').exitOverride();
  registerTrainCommands(p);
  const orig = process.stdout.write.bind(process.stdout);
  process.stdout.write = (() => true) as typeof process.stdout.write;
  try {
    await p.parseAsync(['node', 'xfer', 'train', '--features', dir, '--head', 'linear', '--sweep', '--folds', '3', '--quiet', '--out', out]);
  } finally {
    process.stdout.write = orig;
  }
  const rep = JSON.parse(await readFile(path.join(out, 'report.json'), 'utf8')) as { sweep: { grid: { C: number[] }; points: unknown[] } };
  assert.equal(rep.sweep.points.length, 10);
  assert.equal(rep.sweep.grid.C[0], 1e-4);
});

test('linear warm start: the same optimum as a cold start, in fewer iterations', async () => {
  const X = { data: S.X, rows: S.n, cols: 16 };
  const y = S.y;
  const prev = await createHead('linear', { C: 0.1, tol: 1e-6 }).fit(X, y, 3);
  const cold = (await createHead('linear', { C: 1, tol: 1e-6 }).fit(X, y, 3)) as LinearHead;
  const warm = (await createHead('linear', { C: 1, tol: 1e-6 }).fit(X, y, 3, { warmStart: prev })) as LinearHead;
  assert.ok((warm.info.iterations as number) < (cold.info.iterations as number), `warm ${String(warm.info.iterations)} vs cold ${String(cold.info.iterations)} iterations`);
  const Pc = await cold.predictProba(X);
  const Pw = await warm.predictProba(X);
  let m = 0;
  for (let i = 0; i < Pc.length; i++) m = Math.max(m, Math.abs(Pc[i] - Pw[i]));
  assert.ok(m < 1e-3, `max |P_cold − P_warm| = ${m}`);
});
