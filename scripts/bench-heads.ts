/**
 * `npm run bench:heads` — xfer heads vs scikit-learn on the same .npy data, in the same run.
 *
 *   node dist/scripts/bench-heads.js [--features <dir>] [--layers a,b] [--subset 20000]
 *        [--heads linear,svm,svm-rbf,mlp] [--mlp-hidden 256] [--mlp-epochs 20] [--threads n]
 *        [--rounds 3] [--real-rounds n] [--slow-rounds n] [--svm-max n] [--rbf-max n] [--raw-linear] [--no-sweep] [--no-synthetic] [--no-sklearn] [--no-venv] [--no-debian] [--out <dir>]
 *        [--kernel] [--memory [NxD]]
 *
 * Anchors (scripts/bench-python.ts): scikit-learn from the project venv (current versions, made by
 * scripts/make-venv.sh when missing; --no-venv skips it) and Debian's python3-sklearn (--no-debian
 * skips it); the versions used are printed. Every round fits each head in xfer, then in each anchor
 * (one Python process per anchor and round), so load on a shared machine hits both sides alike;
 * cells are medians over rounds with the min–max, ratios are of medians (per-round range beside).
 * Round r fits the seeded heads (svm, svm-rbf, mlp) with seed r on both sides (xfer `seed`, sklearn
 * `random_state`); accuracy cells are means over rounds, so one lucky or unlucky seed does not decide.
 * ORT is warmed up before timing (as the anchors import scikit-learn before timing); xfer's first
 * round also pays its per-graph session builds. The C sweep row times `xfer train --sweep` with 5
 * folds (a feature folder written once) against LogisticRegressionCV on the same 10-value grid.
 *
 * (a) synthetic: N=5000 train + 2000 test, D=512, K=10 Gaussian class means + unit noise, always.
 * (b) real features: a feature folder (e.g. default-backbone codes of Fashion-MNIST), when
 *     --features is given or data/features/fashion-mnist exists; its train/test splits are used
 *     (else a stratified 80/20 split). svm-rbf is capped at 20k training rows (--rbf-max), svm at
 *     --svm-max rows when given (LinearSVC takes minutes per fit at 20k × 1280 on 2 cores). The
 *     linear head is standardised there too, on both sides (--raw-linear: not), so no sweep row.
 * Each dataset is written once as X_train/y_train/X_test/y_test .npy; xfer fits from memory and
 * scripts/bench_heads_sklearn.py fits the counterparts (LogisticRegression lbfgs, StandardScaler+
 * LinearSVC, StandardScaler+SVC rbf, StandardScaler+MLPClassifier same hidden sizes and epochs)
 * with OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset in that subprocess only.
 * Timed: transforms + fit (prediction excluded on both sides).
 * --kernel: ORT-vs-loop matmul crossover table.
 * --memory [NxD]: the issue's "100k × 4096 must fit once, no hidden copies" check. Writes an N×D
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
import { trainHead } from '../src/heads/train.js';
import { parseSweep } from '../src/heads/sweep.js';
import { defaultSweepFor } from '../src/heads/head.js';
import { currentPython, debianPython, describeAnchor, type PythonAnchor } from './bench-python.js';
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
  /** Standardise before the linear head too (both sides): real CNN codes are far from unit scale. */
  standardizeLinear?: boolean;
}

const argv = process.argv.slice(2);
const flag = (name: string): boolean => argv.includes(`--${name}`);
const opt = (name: string, def?: string): string | undefined => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < argv.length && !argv[i + 1].startsWith('--') ? argv[i + 1] : def;
};
const HEADS = (opt('heads', 'linear,svm,svm-rbf,mlp') as string).split(',');
const HIDDEN = (opt('mlp-hidden', '256') as string).split(',').map(Number);
const EPOCHS = Number(opt('mlp-epochs', '20'));
const C = Number(opt('C', '1'));
const OUT = path.resolve(opt('out', path.join(os.tmpdir(), 'xfer-bench-heads')) as string);
const TARGET: Record<string, number> = { linear: 1, svm: 1, mlp: 1, 'svm-rbf': 1, sweep: 1 };
const ROUNDS = Math.max(1, Number(opt('rounds', '3')));
/** Rounds on the real features (longer fits): --real-rounds, default --rounds. */
const REAL_ROUNDS = Math.max(1, Number(opt('real-rounds', String(ROUNDS))));
/** Rounds of svm and svm-rbf on the real features (minutes per fit on 2 cores): --slow-rounds, default --real-rounds. */
const SLOW_ROUNDS = Math.max(1, Number(opt('slow-rounds', String(REAL_ROUNDS))));

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
  const standardizeLinear = !flag('raw-linear');
  return {
    name: `${path.basename(path.resolve(dir))} (${layers.map((l) => l.name).join('+')}${standardizeLinear ? ', standardized' : ''}) train ${tr.length} / test ${te.length}, D=${a.d}`,
    standardizeLinear,
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

interface Fit {
  fit_s: number;
  /** ORT / BLAS threads of the kept fit ('1' or 'default'). */
  threads?: string;
  /** CPU seconds of the fit, all threads (less sensitive to other load than wall time). */
  cpu_s?: number;
  acc: number;
  n_iter?: number | null;
  best_C?: number;
}
interface SkResult {
  sklearn: string;
  numpy: string;
  blas: unknown;
  results: Record<string, Fit>;
}

function runSklearn(py: PythonAnchor, dir: string, heads: string[], sweepC: number[] | null, standardizeLinear: boolean, seed: number): SkResult | string {
  const env = { ...process.env };
  delete env.OPENBLAS_CORETYPE; // fair anchor: let OpenBLAS pick its best kernel (see .library env notes)
  delete env.OPENBLAS_L2_SIZE;
  const args = [path.resolve('scripts/bench_heads_sklearn.py'), '--data', dir, '--heads', heads.join(','), '--C', String(C), '--mlp-hidden', HIDDEN.join(','), '--mlp-epochs', String(EPOCHS), '--seed', String(seed)];
  if (sweepC) args.push('--sweep-C', sweepC.join(','));
  if (standardizeLinear) args.push('--linear-standardize');
  try {
    const out = execFileSync(py.exe, args, { env, stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 24 });
    return JSON.parse(out.toString()) as SkResult;
  } catch (e) {
    return `sklearn run failed: ${(e as Error).message.split('\n')[0]}`;
  }
}

/**
 * Heads whose fit depends on a seed: round r fits them with seed r on both sides (xfer `seed`,
 * scikit-learn `random_state`), so the accuracy cells average over seeds instead of reporting one draw.
 */
const SEEDED = new Set(['svm', 'svm-rbf', 'mlp']);

function paramsFor(head: string, standardizeLinear: boolean, seed: number): { params: HeadParams; transforms: ('standardize')[] } {
  switch (head) {
    case 'linear':
      return { params: { C, tol: 1e-4, maxIter: 100 }, transforms: standardizeLinear ? ['standardize'] : [] };
    case 'svm':
      return { params: { C, tol: 1e-4, maxIter: 1000, seed }, transforms: ['standardize'] };
    case 'svm-rbf':
      // scores only, as SVC(probability=False) is timed on the other side
      return { params: { C, tol: 1e-3, probability: false, seed }, transforms: ['standardize'] };
    default:
      return { params: { hidden: HIDDEN, epochs: EPOCHS, earlyStopping: false, patience: 0, batchSize: 200, weightDecay: 1e-4, lr: 1e-3, seed }, transforms: ['standardize'] };
  }
}

/**
 * The ORT-bound heads (linear, mlp) are fitted at one ORT thread and at the default, keeping the
 * faster — the same treatment the anchors get for their BLAS threads (² in the table).
 */
async function runXferBest(d: Data, head: string, seed: number): Promise<Fit> {
  const def = kernelThreads();
  if (!['linear', 'mlp'].includes(head) || def === 1) return { ...(await runXfer(d, head, seed)), threads: 'default' };
  setKernelThreads(1);
  const one = await runXfer(d, head, seed);
  setKernelThreads(def);
  const dflt = await runXfer(d, head, seed);
  return one.fit_s < dflt.fit_s ? { ...one, threads: '1' } : { ...dflt, threads: 'default' };
}

async function runXfer(d: Data, head: string, seed: number): Promise<Fit> {
  const { params, transforms } = paramsFor(head, d.standardizeLinear === true, seed);
  // copies so each head starts from the raw data (transforms work in place)
  const tr: Matrix = { data: d.Xtr.slice(), rows: d.ytr.length, cols: d.d };
  const te: Matrix = { data: d.Xte.slice(), rows: d.yte.length, cols: d.d };
  const classes = [...new Set(d.ytr)].sort((a, b) => a - b);
  const map = new Map(classes.map((c, i) => [c, i]));
  const y = Int32Array.from(d.ytr, (c) => map.get(c)!);
  // collect the previous fits' garbage now, not inside this timed fit (npm run bench:heads passes --expose-gc)
  (globalThis as { gc?: () => void }).gc?.();
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  for (const t of transforms) {
    const st = await fitTransform({ kind: t }, tr);
    await applyTransform(st, tr);
    await applyTransform(st, te);
  }
  const h = createHead(head, params);
  await h.fit(tr, y, classes.length, { warn: () => {} });
  const fit_s = (performance.now() - t0) / 1000;
  const c = process.cpuUsage(c0);
  const cpu_s = (c.user + c.system) / 1e6;
  const pred = await h.predict(te);
  let ok = 0;
  for (let i = 0; i < pred.length; i++) if (classes[pred[i]] === d.yte[i]) ok++;
  const n_iter = (h.info.iterations ?? h.info.epochs ?? null) as number | null;
  process.stderr.write(`  xfer ${head}${SEEDED.has(head) ? ` (seed ${seed})` : ''}: fit ${fit_s.toFixed(3)} s, acc ${((100 * ok) / pred.length).toFixed(2)}%\n`);
  return { fit_s, cpu_s, acc: ok / pred.length, n_iter };
}

/** Write `d` as a feature folder (train + test splits) once, for `xfer train --sweep`. */
async function writeFeatureFolder(d: Data, dir: string): Promise<void> {
  await mkdir(path.join(dir, 'feat'), { recursive: true });
  const n = d.ytr.length + d.yte.length;
  const X = new Float32Array(n * d.d);
  X.set(d.Xtr, 0);
  X.set(d.Xte, d.Xtr.length);
  await writeFile(path.join(dir, 'feat', '00000.npy'), encodeNpy(X, 'float32', [n, d.d]));
  const lines: string[] = [];
  for (let row = 0; row < n; row++) {
    const tr = row < d.ytr.length;
    const c = tr ? d.ytr[row] : d.yte[row - d.ytr.length];
    lines.push(JSON.stringify({ row, path: `${row}.png`, label: `c${c}`, label_index: c, split: tr ? 'train' : 'test', shard: 0, shard_row: row }));
  }
  await writeFile(path.join(dir, 'index.jsonl'), lines.join('\n') + '\n');
  await writeFile(path.join(dir, 'labels.json'), JSON.stringify(Array.from({ length: d.k }, (_, c) => `c${c}`)));
  await writeFile(path.join(dir, 'meta.json'), JSON.stringify({ format: 'xfer-features', format_version: 1, model: { id: 'bench', sha256: '0'.repeat(64) }, layers: [{ name: 'feat', dir: 'feat', pool: 'avg', shape: [d.d], dtype: 'float32' }], counts: { images: n, errors: 0, shards: 1, rows_per_shard: n }, complete: true }));
}

/** `xfer train --head linear --sweep C=<grid> --folds 5 --transforms none`, whole command in-process. */
async function runXferSweep(featDir: string, out: string, grid: number[]): Promise<Fit> {
  await rm(out, { recursive: true, force: true });
  (globalThis as { gc?: () => void }).gc?.();
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const r = await trainHead({ features: featDir, head: 'linear', params: { tol: 1e-4, maxIter: 100 }, transforms: 'none', sweep: { axes: [{ param: 'C', values: grid }] }, folds: 5, out });
  const fit_s = (performance.now() - t0) / 1000;
  const c = process.cpuUsage(c0);
  const acc = r.report.metrics.test?.accuracy ?? NaN;
  process.stderr.write(`  xfer sweep C (${grid.length} values × 5 folds + refit): ${fit_s.toFixed(3)} s, best C=${String(r.report.params.C)}, test acc ${(100 * acc).toFixed(2)}%\n`);
  return { fit_s, cpu_s: (c.user + c.system) / 1e6, acc, best_C: r.report.params.C as number };
}

function limitRows(d: Data, max: number, head: string): Data {
  if (d.ytr.length <= max) return d;
  const s = stratifiedSplit(d.ytr, 1 - max / d.ytr.length, 1);
  const idx = s.train;
  const X = new Float32Array(idx.length * d.d);
  idx.forEach((r, t) => X.set(d.Xtr.subarray(r * d.d, r * d.d + d.d), t * d.d));
  return { ...d, name: `${d.name} [${head}: ${idx.length}-row subset]`, Xtr: X, ytr: Int32Array.from(idx, (r) => d.ytr[r]) };
}

/** 1-minute load averages sampled before and after every round: the table says how busy the machine was. */
const loads: number[] = [];
const sampleLoad = (): void => void loads.push(os.loadavg()[0]);

const median = (v: number[]): number => {
  const s = [...v].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const spread = (v: number[], digits = 3): string => (v.length > 1 ? ` [${Math.min(...v).toFixed(digits)}–${Math.max(...v).toFixed(digits)}]` : '');
const mean = (v: number[]): number => v.reduce((a, b) => a + b, 0) / v.length;
/** Accuracy cell: the mean over rounds in %, with the per-round range when the rounds differ (seeded heads). */
const accCell = (fits: Fit[]): string => {
  const v = fits.map((f) => 100 * f.acc);
  return `${mean(v).toFixed(2)}${Math.max(...v) - Math.min(...v) >= 0.005 ? spread(v, 2) : ''}`;
};

async function benchDataset(d: Data, rows: string[], anchors: PythonAnchor[], withSweep: boolean, rounds: number, slowRounds = rounds): Promise<void> {
  process.stderr.write(`\n== ${d.name}\n`);
  const rbfMax = Number(opt('rbf-max', '20000'));
  const svmMax = Number(opt('svm-max', '0'));
  const svmApart = svmMax > 0 && d.ytr.length > svmMax && HEADS.includes('svm');
  const groups: [Data, string[]][] = [];
  const main = HEADS.filter((h) => h !== 'svm-rbf' && !(svmApart && h === 'svm'));
  if (main.length) groups.push([d, main]);
  if (svmApart) groups.push([limitRows(d, svmMax, 'svm'), ['svm']]);
  if (HEADS.includes('svm-rbf')) groups.push([limitRows(d, rbfMax, 'svm-rbf'), ['svm-rbf']]);
  const grid = parseSweep(defaultSweepFor('linear') as string).values;
  for (const [gi, [data, heads]] of groups.entries()) {
    const dir = path.join(OUT, data.name.replace(/[^A-Za-z0-9]+/g, '_').slice(0, 60));
    await writeData(data, dir);
    // the sweep row compares raw-feature fits (LogisticRegressionCV has no scaler inside)
    const sweepHere = withSweep && gi === 0 && heads.includes('linear') && !data.standardizeLinear;
    if (sweepHere) await writeFeatureFolder(data, path.join(dir, 'features'));
    const all = sweepHere ? [...heads, 'sweep'] : heads;
    const xf: Record<string, Fit[]> = Object.fromEntries(all.map((h) => [h, []]));
    const sk: Record<string, Record<string, Fit[]>> = Object.fromEntries(anchors.map((a) => [a.role, Object.fromEntries(all.map((h) => [h, []]))]));
    const skWhy: Record<string, string> = {};
    const skVersion: Record<string, string> = {};
    const roundsOf = (h: string): number => (h === 'svm' || h === 'svm-rbf' ? slowRounds : rounds);
    const total = Math.max(...heads.map(roundsOf));
    for (let r = 0; r < total; r++) {
      const now = heads.filter((h) => r < roundsOf(h));
      sampleLoad();
      process.stderr.write(` round ${r + 1}/${total} (load average ${os.loadavg()[0].toFixed(1)})\n`);
      for (const h of now) xf[h].push(await runXferBest(data, h, r));
      if (sweepHere) xf.sweep.push(await runXferSweep(path.join(dir, 'features'), path.join(dir, 'sweep-head'), grid));
      for (const a of anchors) {
        const res = runSklearn(a, dir, now, sweepHere ? grid : null, data.standardizeLinear === true, r);
        if (typeof res === 'string') {
          skWhy[a.role] = res;
          continue;
        }
        skVersion[a.role] = res.sklearn;
        for (const h of all) if (res.results[h]) sk[a.role][h].push(res.results[h]);
      }
      sampleLoad();
    }
    for (const h of all) {
      const xs = xf[h].map((f) => f.fit_s);
      const xm = median(xs);
      const xacc = mean(xf[h].map((f) => f.acc));
      const cells = [`${xm.toFixed(3)}${spread(xs)}${xf[h].some((f) => f.threads === '1') ? ' ²' : ''}`];
      const ratioCells: string[] = [];
      const accCells: string[] = [];
      let meets = '-';
      for (const a of anchors) {
        const f = sk[a.role][h];
        if (!f.length) {
          cells.push(`n/a (${skWhy[a.role] ?? 'no result'})`);
          ratioCells.push('n/a');
          accCells.push('n/a');
          continue;
        }
        const ss = f.map((v) => v.fit_s);
        const sm = median(ss);
        const perRound = xs.slice(0, ss.length).map((x, i) => x / ss[i]);
        cells.push(`${sm.toFixed(3)}${spread(ss)}${f.some((v) => v.threads === '1') ? ' ¹' : ''}`);
        ratioCells.push(`${(xm / sm).toFixed(2)}×${spread(perRound, 2)}`);
        const dAcc = 100 * (xacc - mean(f.map((v) => v.acc)));
        accCells.push(`${accCell(f)} (${dAcc >= 0 ? '+' : ''}${dAcc.toFixed(2)})`);
        if (a.role === 'current') meets = xm / sm <= TARGET[h] && Math.abs(dAcc) <= 0.5 ? 'yes' : 'NO';
      }
      const cur = anchors.find((a) => a.role === 'current');
      const curFits = cur ? sk[cur.role][h] : [];
      const xc = xf[h].map((f) => f.cpu_s ?? NaN);
      const sc = curFits.map((f) => f.cpu_s ?? NaN);
      const cpuCell = curFits.length && sc.every(Number.isFinite) ? `${median(xc).toFixed(2)} / ${median(sc).toFixed(2)} = ${(median(xc) / median(sc)).toFixed(2)}×` : 'n/a';
      const iters = [xf[h][0].n_iter, ...anchors.map((a) => sk[a.role][h][0]?.n_iter)].map((v) => (v === undefined || v === null ? '-' : String(v))).join(' / ');
      const label = h === 'sweep' ? `linear C sweep (${grid.length}×5-fold + refit)` : h;
      rows.push(`| ${data.name} | ${label} | ${cells.join(' | ')} | ${ratioCells.join(' | ')} | ${cpuCell} | ${accCell(xf[h])} | ${accCells.join(' | ')} | ${iters} | ${meets} |`);
    }
    for (const a of anchors) if (skVersion[a.role] && skVersion[a.role] !== a.versions.sklearn) process.stderr.write(`  note: ${a.role} anchor reported sklearn ${skVersion[a.role]}\n`);
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
  const anchors: PythonAnchor[] = [];
  if (!flag('no-sklearn')) {
    const mods = ['sklearn', 'numpy', 'threadpoolctl'];
    const cur = flag('no-venv') ? null : currentPython(mods);
    if (cur) anchors.push(cur);
    const deb = flag('no-debian') ? null : debianPython(mods, ['python3-sklearn', 'python3-numpy', 'python3-threadpoolctl']);
    if (deb && deb.versions.sklearn !== cur?.versions.sklearn) anchors.push(deb);
    if (!anchors.length) process.stderr.write('no scikit-learn anchor (venv and Debian both unavailable): xfer times only\n');
  }
  for (const a of anchors) process.stderr.write(`anchor ${a.role}: ${describeAnchor(a)}\n`);
  // warm ORT up before timing, as the anchors import scikit-learn before theirs
  await gemm(new Float32Array(4), new Float32Array(4), 2, 2, 2, { force: 'ort' });
  const rows: string[] = [];
  // a run stopped early (SIGINT/SIGTERM) still prints the rows it finished
  const partial = (): void => {
    console.log(`\n(interrupted) rows finished so far:`);
    for (const r of rows) console.log(r);
    process.exit(130);
  };
  process.once('SIGINT', partial);
  process.once('SIGTERM', partial);
  const withSweep = !flag('no-sweep') && HEADS.includes('linear');
  if (!flag('no-synthetic')) await benchDataset(synthetic(), rows, anchors, withSweep, ROUNDS);
  const feat = opt('features') ?? (existsSync('data/features/fashion-mnist/meta.json') ? 'data/features/fashion-mnist' : undefined);
  if (feat) await benchDataset(await fromFolder(feat), rows, anchors, withSweep, REAL_ROUNDS, SLOW_ROUNDS);
  else {
    process.stderr.write(
      '\n(b) skipped: no feature folder. Make default-backbone codes of Fashion-MNIST (Debian dataset-fashion-mnist) with\n' +
        '    node dist/scripts/prepare-fashion-mnist.js --train 20000 && xfer extract --data data/fashion-mnist --out data/features/fashion-mnist\n' +
        '  then: npm run bench:heads -- --features data/features/fashion-mnist\n',
    );
  }
  const sk = anchors.map((a) => `sklearn ${a.versions.sklearn}`);
  console.log(`\nxfer heads vs scikit-learn: fit seconds incl. transforms, median of ${ROUNDS} rounds (real features: ${REAL_ROUNDS}; svm and svm-rbf there: ${SLOW_ROUNDS}) [min–max]; ${os.cpus().length} cores, ORT threads ${kernelThreads()}, node ${process.version}, ${new Date().toISOString()}`);
  for (const a of anchors) console.log(`  ${a.role} anchor: ${describeAnchor(a)}`);
  if (loads.length) console.log(`  1-minute load average on this ${os.cpus().length}-core machine, sampled around every round: median ${median(loads).toFixed(1)}, range ${Math.min(...loads).toFixed(1)}–${Math.max(...loads).toFixed(1)}`);
  console.log(`| data | head | xfer s | ${sk.map((v) => `${v} s`).join(' | ')} | ${sk.map((v) => `xfer / ${v}`).join(' | ')} | CPU s xfer / ${sk[0] ?? 'sklearn'} | xfer acc % (mean of rounds) | ${sk.map((v) => `${v} acc % (Δ xfer)`).join(' | ')} | iterations xfer / ${sk.join(' / ')} | ≤ 1× ${sk[0] ?? ''} at ±0.5 pt |`);
  console.log(`| --- | --- | ---: | ${sk.map(() => '---:').join(' | ')} | ${sk.map(() => '---:').join(' | ')} | ---: | ---: | ${sk.map(() => '---:').join(' | ')} | --- | --- |`);
  for (const r of rows) console.log(r);
  console.log(`mlp: hidden ${HIDDEN.join(',')}, ${EPOCHS} epochs, batch 200 on both sides; C=${C}; svm-rbf: decision scores on both sides (SVC probability=False).`);
  console.log('Accuracy: test accuracy in %, the mean over rounds [per-round min–max where they differ]; round r fits the seeded heads (svm, svm-rbf, mlp) with seed r on both sides (xfer seed, scikit-learn random_state), so mlp\'s cell averages over seeds 0..rounds−1.');
  console.log('² xfer ran faster with ORT limited to one thread in at least one round (linear and mlp are fitted at one thread and at the default, keeping the faster, as the anchors are).');
  console.log('¹ scikit-learn ran with BLAS limited to one thread (threadpoolctl) in at least one round: its faster setting is used (the C sweep always runs at one thread).');
}

main()
  .then(() => releaseKernel())
  .then(() => process.exit(0))
  .catch((e: unknown) => {
    console.error(e);
    process.exit(1);
  });
