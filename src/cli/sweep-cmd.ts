/**
 * `xfer sweep` (probe accuracy per tap), `xfer advise` (what to train, from measurements) and
 * `xfer neighbors` (nearest images by feature): thin shells over src/sweep/.
 */
import type { Command } from 'commander';
import { XferError } from '../errors.js';
import type { CardFlags } from '../model/card-flags.js';
import { addCardFlags } from './card-flags.js';
import { configureSharpForBatchDecoding } from './image-process.js';
import { parseDevice } from '../model/device.js';
import type { Pool } from '../model/taps.js';
import type { DeviceOptions } from '../model/session.js';
import type { SweepOptions, SweepRow } from '../sweep/sweep.js';
import { optionalPositiveInt, parseNonNegativeInt, parsePositiveInt } from './args.js';
import { parseNumber } from '../heads/sweep.js';
import { notice } from './output.js';

function list(v: string): string[] {
  return v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

const pct = (v: number | null): string => (v === null ? '—' : `${(100 * v).toFixed(1)}%`);

interface CommonFlags extends CardFlags {
  card?: string;
  model?: string;
  data?: string;
  features?: string;
  out?: string;
  layers?: string;
  pool: string;
  head: string;
  folds: string;
  transform?: string;
  grid?: string;
  concurrency?: string;
  seed: string;
  batch?: string;
  device?: string;
  overwrite?: boolean;
  json?: boolean;
  quiet?: boolean;
}

function addSweepFlags(cmd: Command, headDefault: string): Command {
  return addCardFlags(
    cmd
      .option('--model <id|file>', 'backbone: built-in id or .onnx/.tflite path')
      .option('--card <file>', 'model card for --model')
      .option('--data <dir>', 'labelled dataset (ImageFolder tree or list file)')
      .option('--features <dir>', 'reuse a feature folder written by `xfer extract` instead of extracting')
      .option('--layers <taps>', "auto (from the graph), recommended (the card's) or comma-separated tap names; default: recommended when the card has them, else auto")
      .option('--pool <list>', 'pooling(s) to compare: avg, max, avgmax (comma-separated; several come from one avgmax pass)', 'avg')
      .option('--head <list>', 'probe head(s): linear, svm, svm-rbf, knn (comma-separated)', headDefault)
      .option('--folds <k>', 'k-fold CV on train choosing C (k for knn) and the best probe', '5')
      .option('--transform <list>', "transforms for every probe (standardize, l2, pca:K, none); default standardize (knn: none)")
      .option('--grid <values>', 'candidates for C (k for knn), comma-separated; default 1e-3,0.01,0.1,1,10,100 (knn: 1,5,10,20)')
      .option('--concurrency <n>', 'taps fitted at once (default: CPUs, at most 4)')
      .option('--seed <n>', 'seed for the val carve-out and folds', '0')
      .option('--batch <n>', 'images per backbone run (extraction)')
      .option('--device <device>', 'auto | cpu | cuda[:id] (extraction)')
      .option('--overwrite', 'replace an existing <out>/features folder')
      .option('--json', 'print the result as JSON on stdout')
      .option('--quiet', 'no progress on stderr'),
  );
}

function sweepOptions(o: CommonFlags, out: string): SweepOptions {
  const layers = o.layers === undefined ? undefined : o.layers === 'auto' || o.layers === 'recommended' ? o.layers : list(o.layers);
  if (o.device !== undefined) parseDevice(o.device);
  return {
    model: o.model,
    card: o.card,
    cardFlags: o,
    data: o.data,
    features: o.features,
    out,
    layers,
    pools: list(o.pool) as Pool[],
    heads: list(o.head),
    folds: parsePositiveInt(o.folds, '--folds'),
    transforms: o.transform,
    grid: o.grid === undefined ? undefined : list(o.grid).map((v) => parseNumber(v, '--grid')),
    concurrency: optionalPositiveInt(o.concurrency, '--concurrency'),
    seed: parseNonNegativeInt(o.seed, '--seed'),
    extract: {
      batch: optionalPositiveInt(o.batch, '--batch'),
      device: o.device ? { device: o.device as DeviceOptions['device'] } : undefined,
      overwrite: o.overwrite,
      onEvent: o.quiet || o.json ? undefined : (e) => {
        if (e.type === 'progress' && process.stderr.isTTY) process.stderr.write(`\r\x1b[Kextract ${e.done}/${e.total} (${e.rate.toFixed(0)} img/s)`);
        if (e.type === 'notice') notice(e.message);
      },
    },
    onProbe: o.quiet || o.json ? undefined : (r: SweepRow, done: number, total: number) => {
      process.stderr.write(`${process.stderr.isTTY ? '\r\x1b[K' : ''}probe ${done}/${total}: ${r.tap} ${r.pool} ${r.head} CV ${pct(r.cv.mean)} ± ${pct(r.cv.std)}, val ${pct(r.val)} (${r.seconds.toFixed(1)} s)${process.stderr.isTTY ? '' : '\n'}`);
    },
    warn: (m) => process.stderr.write(`${process.stderr.isTTY ? '\r\x1b[K' : ''}warning: ${m}\n`),
  };
}

export function registerSweepCommands(program: Command): void {
  addSweepFlags(
    program
      .command('sweep')
      .description('probe accuracy per tap: one extraction with every tap, a linear/SVM/k-NN probe per tap (C by CV), plot + best probe as a head')
      .requiredOption('--out <dir>', 'output folder: sweep.json, sweep.md, sweep.png, best/ (head), features/'),
    'linear',
  ).action(async (o: CommonFlags) => {
    await configureSharpForBatchDecoding();
    const { runSweep } = await import('../sweep/sweep.js');
    const { releaseKernel } = await import('../heads/kernel/matmul.js');
    try {
      const r = await runSweep(sweepOptions(o, o.out!));
      if (process.stderr.isTTY && !o.quiet && !o.json) process.stderr.write('\r\x1b[K');
      if (o.json) {
        process.stdout.write(JSON.stringify({ ok: true, ...r }) + '\n');
        return;
      }
      const b = r.best;
      process.stdout.write(`${r.results.length} probes over ${r.taps.length} taps (${r.folds}-fold CV on ${r.rows.train} training rows; val ${r.rows.val}${r.rows.valCarved ? ' carved from train' : ''})\n`);
      process.stdout.write(`best: ${b.tap} (depth ${b.depth.toFixed(2)}, ${b.pool}, ${b.head}) CV ${pct(b.cv.mean)} ± ${pct(b.cv.std)}, val ${pct(b.val)}${b.test !== null ? `, test ${pct(b.test)}` : ''}\n`);
      process.stdout.write(`last tap: ${r.last.tap} CV ${pct(r.last.cv.mean)}, val ${pct(r.last.val)}\n`);
      process.stdout.write(`written: ${r.out}/sweep.md, sweep.json, sweep.png; best probe as a head: ${r.bestHead} (xfer predict --head ${r.bestHead} ...) in ${r.seconds.total.toFixed(1)} s\n`);
    } finally {
      await releaseKernel();
    }
  });

  addSweepFlags(
    program
      .command('advise')
      .description('measure dataset size and similarity to the backbone\'s source data, print the 2×2 scenario and one recipe with its commands')
      .option('--out <dir>', 'output folder (sweep, features, advice.json)', 'advise'),
    'linear',
  ).action(async (o: CommonFlags) => {
    await configureSharpForBatchDecoding();
    const { advise, formatAdvice, checkAdviseInput } = await import('../sweep/advise.js');
    const { releaseKernel } = await import('../heads/kernel/matmul.js');
    const { writeFile } = await import('node:fs/promises');
    const path = await import('node:path');
    checkAdviseInput(o);
    if (o.features !== undefined) throw new XferError('xfer advise: --features is not supported (advise extracts BatchNorm inputs and the classifier output in the same pass)', { hint: 'pass --model and --data' });
    if (o.head !== 'linear' || o.pool !== 'avg') throw new XferError('xfer advise: --head and --pool are fixed (linear probes on avg-pooled taps)', { hint: 'use xfer sweep to compare heads and poolings' });
    try {
      const opts = sweepOptions(o, o.out!);
      const a = await advise({ ...opts, model: o.model!, data: o.data! });
      if (process.stderr.isTTY && !o.quiet && !o.json) process.stderr.write('\r\x1b[K');
      const { sweep, ...rest } = a;
      await writeFile(path.join(o.out!, 'advice.json'), JSON.stringify({ ...rest, sweep: { out: sweep.out, best: sweep.best, last: sweep.last, taps: sweep.taps } }, null, 2) + '\n');
      await writeFile(path.join(o.out!, 'advice.txt'), formatAdvice(a) + '\n');
      if (o.json) process.stdout.write(JSON.stringify({ ok: true, ...rest, sweep: { out: sweep.out, best: sweep.best, last: sweep.last } }) + '\n');
      else process.stdout.write(formatAdvice(a) + '\n');
    } finally {
      await releaseKernel();
    }
  });

  program
    .command('neighbors')
    .description('nearest images by feature (retrieval, near-duplicates): a list, --json, and a contact sheet (PNG or HTML)')
    .argument('<queries...>', 'row numbers or image paths of the --features folder')
    .requiredOption('--features <dir>', 'feature folder holding the queries')
    .option('--index <dir>', 'feature folder to search (default: --features, leaving each query itself out)')
    .option('--layer <name>', 'layer to compare (default: the folder\'s last)')
    .option('--k <n>', 'neighbours per query', '10')
    .option('--metric <m>', 'cosine | euclidean', 'cosine')
    .option('--sheet <file>', 'contact sheet of each query and its neighbours: .png (thumbnails) or .html')
    .option('--json', 'print the result as JSON on stdout')
    .action(async (queries: string[], o: { features: string; index?: string; layer?: string; k: string; metric: string; sheet?: string; json?: boolean }) => {
      const { findNeighbors, neighborsHtml, neighborsPng } = await import('../sweep/neighbors.js');
      const { releaseKernel } = await import('../heads/kernel/matmul.js');
      if (o.sheet !== undefined && !/\.(png|html?)$/i.test(o.sheet)) throw new XferError(`--sheet ${o.sheet}: expected a .png or .html file name`, { hint: 'e.g. --sheet neighbours.png' });
      try {
        const r = await findNeighbors({ features: o.features, index: o.index, queries, k: parsePositiveInt(o.k, '--k'), layer: o.layer, metric: o.metric as 'cosine' | 'euclidean' });
        if (o.sheet) {
          if (/\.png$/i.test(o.sheet)) await neighborsPng(r, o.sheet);
          else await (await import('node:fs/promises')).writeFile(o.sheet, neighborsHtml(r));
        }
        if (o.json) process.stdout.write(JSON.stringify(r) + '\n');
        else {
          for (const q of r.queries) {
            process.stdout.write(`${q.path}${q.label ? ` (${q.label})` : ''}\n`);
            q.neighbors.forEach((n, i) => process.stdout.write(`  ${String(i + 1).padStart(2)}  ${n.score.toFixed(4)}  ${n.path}${n.label ? ` (${n.label})` : ''}\n`));
          }
          if (o.sheet) process.stdout.write(`contact sheet: ${o.sheet}\n`);
        }
      } finally {
        await releaseKernel();
      }
    });
}
