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

test('head contract: the constraint table names the parameter, the expected and the received value; an unfitted head raises XferError', async () => {
  const bad = (kind: string, params: Record<string, unknown>, re: RegExp): void =>
    assert.throws(() => createHead(kind, params as never), (e: unknown) => e instanceof XferError && re.test(e.message));
  bad('linear', { C: 0 }, /^head linear: parameter C must be a number > 0, got 0$/);
  bad('linear', { maxIter: 2.5 }, /parameter maxIter must be an integer ≥ 1, got 2\.5/);
  bad('linear', { classWeight: 'even' }, /parameter classWeight must be null or 'balanced', got "even"|parameter classWeight must be 'balanced' or null, got "even"/);
  bad('svm-rbf', { gamma: 0 }, /parameter gamma must be 'scale', 'auto' or a number > 0, got 0/);
  bad('mlp', { hidden: [64, 32, 16] }, /parameter hidden must be 1–2 integer\(s\) ≥ 1, got \[64,32,16\]/);
  bad('mlp', { dropout: 1 }, /parameter dropout must be a number ≥ 0 and < 1, got 1/);
  bad('svm', { nope: 1 }, /unknown parameter 'nope'/);
  for (const kind of ['linear', 'svm', 'svm-rbf', 'mlp']) {
    const h = createHead(kind);
    await assert.rejects(h.predict({ data: new Float32Array(16), rows: 1, cols: 16 }), (e: unknown) => e instanceof XferError && /is not fitted yet/.test(e.message));
  }
});

test('svm-rbf probabilities: pairwise coupling recovers consistent pairwise probabilities exactly; calibrated heads give proper distributions', async () => {
  const { couple } = await import('../src/heads/svm-kernel.js');
  assert.deepEqual([...couple(Float64Array.of(0.8), 2)].map((v) => +v.toFixed(6)), [0.8, 0.2]);
  const p = [0.5, 0.3, 0.2];
  const r = Float64Array.of(p[0] / (p[0] + p[1]), p[0] / (p[0] + p[2]), p[1] / (p[1] + p[2]));
  const q = couple(r, 3);
  for (let c = 0; c < 3; c++) assert.ok(Math.abs(q[c] - p[c]) < 1e-6, `p${c} ${q[c]} vs ${p[c]}`);
  const X = { data: S.X, rows: S.n, cols: 16 };
  const h = await createHead('svm-rbf').fit(X, S.y, 3);
  assert.equal(h.probabilistic, true);
  const P = await h.predictProba(X);
  const pred = await h.predict(X);
  let agree = 0;
  let ll = 0;
  for (let i = 0; i < S.n; i++) {
    const row = P.subarray(i * 3, i * 3 + 3);
    assert.ok(Math.abs(row[0] + row[1] + row[2] - 1) < 1e-5 && row.every((v) => v >= -1e-6));
    if (row.indexOf(Math.max(...row)) === pred[i]) agree++;
    ll -= Math.log(Math.max(row[S.y[i]], 1e-12));
  }
  assert.ok(agree / S.n > 0.95, `argmax of probabilities agrees with the vote on ${agree}/${S.n}`);
  assert.ok(ll / S.n < Math.log(3) * 0.6, `log-loss ${ll / S.n} well below uniform`);
  const u = await createHead('svm-rbf', { probability: false }).fit(X, S.y, 3);
  assert.equal(u.probabilistic, false);
});
