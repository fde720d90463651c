/**
 * `npm run bench:heads` — xfer heads vs scikit-learn on the same .npy data, in the same run.
 *
 *   node dist/scripts/bench-heads.js [--features <dir>] [--layers a,b] [--subset 20000]
 *        [--heads linear,svm,svm-rbf,mlp] [--mlp-hidden 256] [--mlp-epochs 20] [--threads n]
 *        [--no-sklearn] [--out <dir>] [--kernel] [--memory [NxD]]
 *
 * (a) synthetic: N=5000 train + 2000 test, D=512, K=10 Gaussian class means + unit noise, always.
 * (b) real features: a feature folder (e.g. default-backbone codes of Fashion-MNIST), when
 *     --features is given or data/features/fashion-mnist exists; its train/test splits are used
 *     (else a stratified 80/20 split). svm-rbf is capped at 20k training rows (--rbf-max).
 * Each dataset is written once as X_train/y_train/X_test/y_test .npy; xfer fits from memory and
 * scripts/bench_heads_sklearn.py fits the counterparts (LogisticRegression lbfgs, StandardScaler+
 * LinearSVC, StandardScaler+SVC rbf, StandardScaler+MLPClassifier same hidden sizes and epochs)
 * with OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset in that subprocess only.
 * Timed: transforms + fit (prediction excluded on both sides).
 * --kernel: ORT-vs-loop matmul crossover table.
 * --memory [NxD]: the "100k × 4096 must fit once, no hidden copies" check. Writes an N×D
 *   float32 feature folder (default 100000x4096 = 1.53 GiB; needs that much disk under --out) once,
 *   then measures in a FRESH child process (so the writer's memory is not counted): load all rows
 *   into one matrix + standardise in place + 3 L-BFGS iterations of a linear head. Prints the peak
 *   RSS (getrusage maxRSS), the matrix size, and peak − baseline as a multiple of the matrix
 *   (close to 1× means the matrix is held once; the head's buffers add the rest). Run: `npm run bench:heads -- --memory`
 *   (or `--memory 20000x2048` for a quick look).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { encodeNpy } from '../src/features/npy.js';
import { loadRows, openFeatures, pickLayers } from '../src/features/reader.js';
import { createHead, type HeadParams } from '../src/heads/head.js';
import '../src/heads/linear.js';
import '../src/heads/svm-linear.js';
import '../src/heads/svm-kernel.js';
import '../src/heads/mlp.js';
import { gemm, gemmJs, kernelThreads, releaseKernel, setKernelThreads } from '../src/heads/kernel/matmul.js';
import type { Matrix } from '../src/heads/matrix.js';
import { Rng } from '../src/heads/rng.js';
import { stratifiedSplit } from '../src/heads/split.js';
import { applyTransform, fitTransform } from '../src/heads/transforms.js';

interface Data {
  name: string;
  Xtr: Float32Array;
  ytr: Int32Array;
  Xte: Float32Array;
  yte: Int32Array;
  d: number;
  k: number;
}

const argv = process.argv.slice(2);
const flag = (name: string): boolean => argv.includes(`--${name}`);
const opt = (name: string, def?: string): string | undefined => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < argv.length && !argv[i + 1].startsWith('--') ? argv[i + 1] : def;
};
const PY = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
const HEADS = (opt('heads', 'linear,svm,svm-rbf,mlp') as string).split(',');
const HIDDEN = (opt('mlp-hidden', '256') as string).split(',').map(Number);
const EPOCHS = Number(opt('mlp-epochs', '20'));
const C = Number(opt('C', '1'));
const OUT = path.resolve(opt('out', path.join(os.tmpdir(), 'xfer-bench-heads')) as string);
const TARGET: Record<string, number> = { linear: 1, svm: 1, mlp: 1, 'svm-rbf': 3 };

function synthetic(): Data {
  const rng = new Rng(42);
  const N = 5000;
  const NT = 2000;
  const D = 512;
  const K = 10;
  const means = new Float32Array(K * D);
  for (let i = 0; i < means.length; i++) means[i] = rng.normal() * 0.12; // ~70-80% accuracy: realistically hard
  const make = (n: number): [Float32Array, Int32Array] => {
    const X = new Float32Array(n * D);
    const y = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      const c = rng.int(K);
      y[i] = c;
      for (let j = 0; j < D; j++) X[i * D + j] = means[c * D + j] + rng.normal();
    }
    return [X, y];
  };
  const [Xtr, ytr] = make(N);
  const [Xte, yte] = make(NT);
  return { name: 'synthetic N=5000 D=512 K=10', Xtr, ytr, Xte, yte, d: D, k: K };
}

async function fromFolder(dir: string): Promise<Data> {
  const f = await openFeatures(dir);
  const layers = pickLayers(f, opt('layers')?.split(','));
  const lab = f.index.filter((r) => r.label_index !== null && r.label_index !== undefined);
  let tr = lab.filter((r) => r.split === 'train' || r.split === null).map((r) => r.row);
  let te = lab.filter((r) => r.split === 'test').map((r) => r.row);
  if (te.length === 0) {
    te = lab.filter((r) => r.split === 'val').map((r) => r.row);
  }
  if (te.length === 0) {
    const s = stratifiedSplit(tr.map((r) => f.index[r].label_index as number), 0.2, 0);
    te = s.val.map((i) => tr[i]);
    tr = s.train.map((i) => tr[i]);
  }
  const subset = Number(opt('subset', '0'));
  if (subset > 0 && tr.length > subset) {
    const s = stratifiedSplit(tr.map((r) => f.index[r].label_index as number), 1 - subset / tr.length, 0);
    tr = s.train.map((i) => tr[i]);
  }
  const a = await loadRows(f, layers, tr);
  const b = await loadRows(f, layers, te);
  return {
    name: `${path.basename(path.resolve(dir))} (${layers.map((l) => l.name).join('+')}) train ${tr.length} / test ${te.length}, D=${a.d}`,
    Xtr: a.X,
    ytr: Int32Array.from(tr, (r) => f.index[r].label_index as number),
    Xte: b.X,
    yte: Int32Array.from(te, (r) => f.index[r].label_index as number),
    d: a.d,
    k: f.labels.length,
  };
}

async function writeData(d: Data, dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, 'X_train.npy'), encodeNpy(d.Xtr, 'float32', [d.ytr.length, d.d]));
  await writeFile(path.join(dir, 'y_train.npy'), encodeNpy(d.ytr, 'int32', [d.ytr.length]));
  await writeFile(path.join(dir, 'X_test.npy'), encodeNpy(d.Xte, 'float32', [d.yte.length, d.d]));
  await writeFile(path.join(dir, 'y_test.npy'), encodeNpy(d.yte, 'int32', [d.yte.length]));
}

function sklearnAvailable(): string | null {
  if (flag('no-sklearn')) return 'disabled by --no-sklearn';
  const ok = (): boolean => spawnSync(PY, ['-c', 'import sklearn, numpy'], { stdio: 'ignore' }).status === 0;
  if (ok()) return null;
  if (process.getuid?.() === 0) {
    process.stderr.write('scikit-learn missing: apt-get install -y python3-sklearn python3-numpy ...\n');
    spawnSync('apt-get', ['install', '-y', '-q', 'python3-sklearn', 'python3-numpy', 'python3-threadpoolctl'], { stdio: 'inherit' });
    if (!ok()) {
      spawnSync('apt-get', ['update', '-q'], { stdio: 'inherit' });
      spawnSync('apt-get', ['install', '-y', '-q', 'python3-sklearn', 'python3-numpy'], { stdio: 'inherit' });
    }
    if (ok()) return null;
    return 'apt-get install python3-sklearn failed';
  }
  return 'python3 cannot import sklearn and we are not root to apt-get install python3-sklearn';
}

interface SkResult {
  sklearn: string;
  blas: unknown;
  results: Record<string, { fit_s: number; acc: number }>;
}

function runSklearn(dir: string, heads: string[]): SkResult | string {
  const env = { ...process.env };
  delete env.OPENBLAS_CORETYPE; // fair anchor: let OpenBLAS pick its best kernel (see .library env notes)
  delete env.OPENBLAS_L2_SIZE;
  try {
    const out = execFileSync(PY, [path.resolve('scripts/bench_heads_sklearn.py'), '--data', dir, '--heads', heads.join(','), '--C', String(C), '--mlp-hidden', HIDDEN.join(','), '--mlp-epochs', String(EPOCHS)], {
      env,
      stdio: ['ignore', 'pipe', 'inherit'],
      maxBuffer: 1 << 24,
    });
    return JSON.parse(out.toString()) as SkResult;
  } catch (e) {
    return `sklearn run failed: ${(e as Error).message.split('\n')[0]}`;
  }
}

function paramsFor(head: string): { params: HeadParams; transforms: ('standardize')[] } {
  switch (head) {
    case 'linear':
      return { params: { C, tol: 1e-4, maxIter: 100 }, transforms: [] };
    case 'svm':
      return { params: { C, tol: 1e-4, maxIter: 1000 }, transforms: ['standardize'] };
    case 'svm-rbf':
      return { params: { C, tol: 1e-3 }, transforms: ['standardize'] };
    default:
      return { params: { hidden: HIDDEN, epochs: EPOCHS, earlyStopping: false, patience: 0, batchSize: 200, weightDecay: 1e-4, lr: 1e-3, seed: 0 }, transforms: ['standardize'] };
  }
}

async function runXfer(d: Data, head: string): Promise<{ fit_s: number; acc: number }> {
  const { params, transforms } = paramsFor(head);
  // copies so each head starts from the raw data (transforms work in place)
  const tr: Matrix = { data: d.Xtr.slice(), rows: d.ytr.length, cols: d.d };
  const te: Matrix = { data: d.Xte.slice(), rows: d.yte.length, cols: d.d };
  const classes = [...new Set(d.ytr)].sort((a, b) => a - b);
  const map = new Map(classes.map((c, i) => [c, i]));
  const y = Int32Array.from(d.ytr, (c) => map.get(c)!);
  const t0 = performance.now();
  for (const t of transforms) {
    const st = await fitTransform({ kind: t }, tr);
    await applyTransform(st, tr);
    await applyTransform(st, te);
  }
  const h = createHead(head, params);
  await h.fit(tr, y, classes.length, { warn: () => {} });
  const fit_s = (performance.now() - t0) / 1000;
  const pred = await h.predict(te);
  let ok = 0;
  for (let i = 0; i < pred.length; i++) if (classes[pred[i]] === d.yte[i]) ok++;
  process.stderr.write(`  xfer ${head}: fit ${fit_s.toFixed(3)} s, acc ${((100 * ok) / pred.length).toFixed(2)}%\n`);
  return { fit_s, acc: ok / pred.length };
}

function limitRows(d: Data, max: number): Data {
  if (d.ytr.length <= max) return d;
  const s = stratifiedSplit(d.ytr, 1 - max / d.ytr.length, 1);
  const idx = s.train;
  const X = new Float32Array(idx.length * d.d);
  idx.forEach((r, t) => X.set(d.Xtr.subarray(r * d.d, r * d.d + d.d), t * d.d));
  return { ...d, name: `${d.name} [svm-rbf: ${idx.length}-row subset]`, Xtr: X, ytr: Int32Array.from(idx, (r) => d.ytr[r]) };
}

async function benchDataset(d: Data, rows: string[], skReason: string | null): Promise<void> {
  process.stderr.write(`\n== ${d.name}\n`);
  const rbfMax = Number(opt('rbf-max', '20000'));
  const groups: [Data, string[]][] = [];
  const main = HEADS.filter((h) => h !== 'svm-rbf');
  if (main.length) groups.push([d, main]);
  if (HEADS.includes('svm-rbf')) groups.push([limitRows(d, rbfMax), ['svm-rbf']]);
  for (const [data, heads] of groups) {
    const dir = path.join(OUT, data.name.replace(/[^A-Za-z0-9]+/g, '_').slice(0, 60));
    await writeData(data, dir);
    const xf: Record<string, { fit_s: number; acc: number }> = {};
    for (const h of heads) xf[h] = await runXfer(data, h);
    const sk = skReason ? skReason : runSklearn(dir, heads);
    for (const h of heads) {
      const a = xf[h];
      const s = typeof sk === 'string' ? undefined : sk.results[h];
      const ratio = s ? a.fit_s / s.fit_s : NaN;
      const dAcc = s ? 100 * (a.acc - s.acc) : NaN;
      const ok = s ? (ratio <= TARGET[h] && (h === 'svm-rbf' || Math.abs(dAcc) <= 0.5) ? 'yes' : 'NO') : '-';
      rows.push(`| ${data.name} | ${h} | ${a.fit_s.toFixed(3)} | ${s ? s.fit_s.toFixed(3) : 'n/a'} | ${s ? ratio.toFixed(2) + '×' : 'n/a'} | ${(100 * a.acc).toFixed(2)} | ${s ? (100 * s.acc).toFixed(2) : 'n/a'} | ${s ? (dAcc >= 0 ? '+' : '') + dAcc.toFixed(2) : 'n/a'} | ≤${TARGET[h]}× | ${ok} |`);
    }
    if (typeof sk === 'string') rows.push(`| ${data.name} | (sklearn anchor skipped: ${sk}) | | | | | | | | |`);
    else process.stderr.write(`  sklearn ${sk.sklearn}, BLAS ${JSON.stringify(sk.blas)}\n`);
  }
}

async function kernelTable(): Promise<void> {
  const rng = new Rng(1);
  console.log(`\nmatmul kernel (threads=${kernelThreads()}): time per product, ORT Gemm vs JS loop`);
  console.log('| m×k×n | ORT µs | JS µs | ORT GFLOP/s | faster |\n| --- | ---: | ---: | ---: | --- |');
  for (const s of [8, 16, 24, 32, 48, 64, 96, 128, 256]) {
    const A = Float32Array.from({ length: s * s }, () => rng.normal());
    const B = Float32Array.from({ length: s * s }, () => rng.normal());
    const reps = Math.max(5, Math.min(2000, Math.floor(2e7 / (s * s * s))));
    await gemm(A, B, s, s, s, { force: 'ort' });
    let t = performance.now();
    for (let r = 0; r < reps; r++) await gemm(A, B, s, s, s, { force: 'ort' });
    const to = ((performance.now() - t) / reps) * 1000;
    t = performance.now();
    for (let r = 0; r < reps; r++) gemmJs(A, B, s, s, s);
    const tj = ((performance.now() - t) / reps) * 1000;
    console.log(`| ${s}³ = ${s * s * s} | ${to.toFixed(1)} | ${tj.toFixed(1)} | ${((2 * s * s * s) / to / 1e3).toFixed(1)} | ${to < tj ? 'ORT' : 'JS'} |`);
  }
}

async function memoryCheck(spec: string): Promise<void> {
  const [N, D] = spec.split('x').map(Number);
  if (!(Number.isInteger(N) && N > 0 && Number.isInteger(D) && D > 0)) throw new Error(`--memory: expected NxD (e.g. 100000x4096), got '${spec}'`);
  const dir = path.join(OUT, `mem-${N}x${D}`);
  // write the folder from a child process so this process's RSS only sees the reader and the fit
  if (!existsSync(path.join(dir, 'meta.json'))) {
    await mkdir(path.join(dir, 'feat'), { recursive: true });
    const rows = 4096;
    const rng = new Rng(3);
    const lines: string[] = [];
    for (let sh = 0; sh * rows < N; sh++) {
      const n = Math.min(rows, N - sh * rows);
      const X = new Float32Array(n * D);
      for (let i = 0; i < X.length; i++) X[i] = rng.next();
      await writeFile(path.join(dir, 'feat', `${String(sh).padStart(5, '0')}.npy`), encodeNpy(X, 'float32', [n, D]));
      for (let r = 0; r < n; r++) {
        const row = sh * rows + r;
        lines.push(JSON.stringify({ row, path: `${row}.jpg`, label: `c${row % 10}`, label_index: row % 10, split: 'train', shard: sh, shard_row: r }));
      }
    }
    await writeFile(path.join(dir, 'index.jsonl'), lines.join('\n') + '\n');
    await writeFile(path.join(dir, 'labels.json'), JSON.stringify(Array.from({ length: 10 }, (_, c) => `c${c}`)));
    await writeFile(path.join(dir, 'meta.json'), JSON.stringify({ format: 'xfer-features', format_version: 1, model: { id: 'mem', sha256: '0'.repeat(64) }, layers: [{ name: 'feat', dir: 'feat', pool: 'avg', shape: [D], dtype: 'float32' }], counts: { images: N, errors: 0, shards: Math.ceil(N / rows), rows_per_shard: rows }, complete: true }));
    console.log(`wrote ${dir}`);
  }
  if (!flag('memory-measure')) {
    // measure in a fresh process: its peak RSS sees only the reader, the transform and the fit
    const r = spawnSync(process.execPath, [process.argv[1], '--memory', spec, '--memory-measure', '--out', OUT, ...(opt('threads') ? ['--threads', opt('threads') as string] : [])], { stdio: 'inherit' });
    if (r.status !== 0) throw new Error(`memory measurement failed (exit ${r.status ?? r.signal})`);
    return;
  }
  const rss0 = process.memoryUsage().rss;
  const f = await openFeatures(dir);
  const all = Int32Array.from({ length: f.index.length }, (_, i) => i);
  const t0 = performance.now();
  const L = await loadRows(f, pickLayers(f), all);
  const tLoad = (performance.now() - t0) / 1000;
  const X: Matrix = { data: L.X, rows: L.n, cols: L.d };
  await applyTransform(await fitTransform({ kind: 'standardize' }, X), X);
  const y = Int32Array.from(all, (i) => f.index[i].label_index as number);
  await createHead('linear', { maxIter: 3 }).fit(X, y, 10);
  const peak = process.resourceUsage().maxRSS * 1024;
  const mat = L.n * L.d * 4;
  console.log(`\nmemory: ${L.n}×${L.d} float32 = ${(mat / 2 ** 20).toFixed(0)} MiB matrix; load ${tLoad.toFixed(1)} s; peak RSS ${(peak / 2 ** 20).toFixed(0)} MiB (baseline ${(rss0 / 2 ** 20).toFixed(0)} MiB); peak − baseline = ${((peak - rss0) / mat).toFixed(2)}× the matrix`);
}

async function main(): Promise<void> {
  if (opt('threads')) setKernelThreads(Number(opt('threads')));
  if (flag('kernel')) {
    await kernelTable();
    return;
  }
  if (flag('memory')) {
    await memoryCheck(opt('memory', '100000x4096') as string);
    return;
  }
  await rm(OUT, { recursive: true, force: true });
  await mkdir(OUT, { recursive: true });
  const skReason = sklearnAvailable();
  if (skReason) process.stderr.write(`sklearn anchor skipped: ${skReason}\n`);
  const rows: string[] = [];
  await benchDataset(synthetic(), rows, skReason);
  const feat = opt('features') ?? (existsSync('data/features/fashion-mnist/meta.json') ? 'data/features/fashion-mnist' : undefined);
  if (feat) await benchDataset(await fromFolder(feat), rows, skReason);
  else {
    process.stderr.write(
      '\n(b) skipped: no feature folder. Extract default-backbone codes of Fashion-MNIST (Debian dataset-fashion-mnist, idx files in /usr/share/datasets/fashion-mnist) with\n' +
        '    xfer extract <fashion-mnist images> --out data/features/fashion-mnist\n  then: npm run bench:heads -- --features data/features/fashion-mnist [--subset 20000]\n',
    );
  }
  console.log(`\nxfer heads vs scikit-learn (fit time incl. transforms; ${os.cpus().length} cores, ORT threads ${kernelThreads()}, node ${process.version}, ${new Date().toISOString()})`);
  console.log('| data | head | xfer s | sklearn s | ratio | xfer acc % | sklearn acc % | Δ points | target | meets |');
  console.log('| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |');
  for (const r of rows) console.log(r);
  console.log(`mlp: hidden ${HIDDEN.join(',')}, ${EPOCHS} epochs, batch 200 on both sides; C=${C}.`);
}

main()
  .then(() => releaseKernel())
  .then(() => process.exit(0))
  .catch((e: unknown) => {
    console.error(e);
    process.exit(1);
  });
