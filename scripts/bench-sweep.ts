/**
 * `npm run bench:sweep` — `xfer sweep` against the hand-run it replaces (`xfer extract` with every
 * tap, then one `xfer train` per tap with the same C grid, folds and transform), both end to end as CLI
 * processes in the same run, on the same machine state:
 *
 *   node dist/scripts/bench-sweep.js [--data ../shared/datasets/hymenoptera]
 *        [--fashion data/fashion-mnist] [--fashion-images 20000] [--fashion-taps 12] [--out <dir>]
 *        [--skip-hand]
 *
 * (a) the built-in backbone's 20 recommended taps on hymenoptera (budget: ≤ 30 s on 2 cores);
 * (b) Fashion-MNIST (node dist/scripts/prepare-fashion-mnist.js) with 12 taps found from the graph
 *     (budget: ≤ 10 min for 20 000 images), C from 0.01,0.1,1,10 by 3-fold CV on both sides;
 *     `--fashion-images N` takes the first N train images per the sorted listing (per class evenly).
 * Prints wall and CPU seconds (children's user + system time), the ratios hand / sweep, and whether
 * the sweep met its budget (scaled to the number of images when fewer than 20 000 Fashion images
 * are used, which is said). On a machine shared with other work, CPU seconds / 2 is the better
 * estimate of the wall time on two idle cores.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, symlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { resolveBackbone } from '../src/model/registry.js';
import { readOnnxFile } from '../src/onnx/io.js';
import { describeLayers } from '../src/model/layers.js';
import { autoTaps } from '../src/model/auto-taps.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const BIN = path.join(ROOT, 'bin', 'xfer.js');
const { values } = parseArgs({
  options: {
    data: { type: 'string', default: path.resolve(ROOT, '..', 'shared', 'datasets', 'hymenoptera') },
    fashion: { type: 'string', default: path.join(ROOT, 'data', 'fashion-mnist') },
    'fashion-images': { type: 'string', default: '20000' },
    'fashion-taps': { type: 'string', default: '12' },
    out: { type: 'string' },
    'skip-hand': { type: 'boolean', default: false },
  },
});

/** CPU seconds (user + system) of the finished children so far, from /proc/self/stat's cutime + cstime (Linux). */
function childCpu(): number {
  try {
    const f = readFileSync('/proc/self/stat', 'utf8');
    const v = f.slice(f.lastIndexOf(')') + 2).split(' ');
    return (Number(v[13]) + Number(v[14])) / 100;
  } catch {
    return NaN;
  }
}

let cpu = 0;
/** Run one xfer command; wall seconds returned, its CPU seconds added to `cpu`. */
function xfer(args: string[]): number {
  const t = performance.now();
  const c0 = childCpu();
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', env: { ...process.env } });
  if (r.status !== 0) throw new Error(`xfer ${args.join(' ')} exited ${r.status}: ${r.stderr.slice(-2000)}`);
  cpu += childCpu() - c0;
  return (performance.now() - t) / 1000;
}

interface Case {
  name: string;
  data: string;
  taps: string[];
  grid: number[];
  folds: number;
  budget: number;
  images: number;
}

async function runCase(c: Case, out: string): Promise<void> {
  await rm(out, { recursive: true, force: true });
  cpu = 0;
  const sweep = xfer(['sweep', '--model', 'mobilenet_v2', '--data', c.data, '--out', path.join(out, 'sweep'), '--layers', c.taps.join(','), '--folds', String(c.folds), '--grid', c.grid.join(','), '--quiet']);
  const sweepCpu = cpu;
  cpu = 0;
  let hand: number | null = null;
  let handExtract = 0;
  if (!values['skip-hand']) {
    const feat = path.join(out, 'hand-features');
    handExtract = xfer(['extract', '--model', 'mobilenet_v2', '--data', c.data, '--out', feat, '--layers', c.taps.join(','), '--quiet']);
    hand = handExtract;
    for (const t of c.taps) hand += xfer(['train', '--features', feat, '--layers', t, '--head', 'linear', '--transform', 'standardize', '--sweep', `C=${c.grid.join(',')}`, '--folds', String(c.folds), '--quiet', '--out', path.join(out, 'hand-heads', t.replace(/[^\w.-]/g, '_'))]);
  }
  const handCpu = cpu;
  const budget = c.budget;
  console.log(`${c.name}: ${c.images} images, ${c.taps.length} taps, C ∈ {${c.grid.join(', ')}} by ${c.folds}-fold CV`);
  console.log(`  xfer sweep (one process, end to end)     ${sweep.toFixed(1)} s wall, ${sweepCpu.toFixed(1)} s CPU   budget ${budget.toFixed(0)} s: wall ${sweep <= budget ? 'met' : 'NOT met'}, CPU / 2 cores ${(sweepCpu / 2).toFixed(1)} s ${sweepCpu / 2 <= budget ? 'met' : 'NOT met'}`);
  if (hand !== null) {
    console.log(`  hand-run: extract + ${c.taps.length} × xfer train     ${hand.toFixed(1)} s wall, ${handCpu.toFixed(1)} s CPU   (extract ${handExtract.toFixed(1)} s)`);
    console.log(`  ratio hand / sweep                       ×${(hand / sweep).toFixed(2)} wall, ×${(handCpu / sweepCpu).toFixed(2)} CPU`);
  }
}

async function subset(src: string, n: number, dir: string): Promise<number> {
  // n train images, evenly per class (the first of each class folder, sorted); test kept whole
  // class folders only (prepare-fashion-mnist leaves a marker file next to them)
  const classes = (await readdir(path.join(src, 'train'), { withFileTypes: true })).filter((d) => d.isDirectory()).map((d) => d.name).sort();
  const per = Math.floor(n / classes.length);
  let total = 0;
  for (const c of classes) {
    await mkdir(path.join(dir, 'train', c), { recursive: true });
    const files = (await readdir(path.join(src, 'train', c))).filter((f) => !f.startsWith('.')).sort().slice(0, per);
    for (const f of files) await symlink(path.join(src, 'train', c, f), path.join(dir, 'train', c, f));
    total += files.length;
  }
  if (existsSync(path.join(src, 'test'))) {
    await symlink(path.join(src, 'test'), path.join(dir, 'test'));
    for (const c of await readdir(path.join(src, 'test'), { withFileTypes: true })) if (c.isDirectory() && !c.name.startsWith('.')) total += (await readdir(path.join(src, 'test', c.name))).length;
  }
  return total;
}

const out = values.out ?? (await mkdtemp(path.join(os.tmpdir(), 'xfer-bench-sweep-')));
console.log(`bench:sweep on ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}), load average ${os.loadavg().map((v) => v.toFixed(1)).join(' ')}; output in ${out}`);
const b = await resolveBackbone('mobilenet_v2');
const { model } = await readOnnxFile(b.file);
const rows = await describeLayers(model, b.card);
if (existsSync(values.data!)) {
  await runCase({ name: 'hymenoptera, 20 recommended taps', data: values.data!, taps: b.card!.taps!.recommended!, grid: [1e-3, 1e-2, 1e-1, 1, 10, 100], folds: 5, budget: 30, images: 398 }, path.join(out, 'hymenoptera'));
} else console.log(`hymenoptera: ${values.data} not found, skipped`);
if (existsSync(path.join(values.fashion!, 'train'))) {
  const n = Number(values['fashion-images']);
  const dir = path.join(out, 'fashion-data');
  await rm(dir, { recursive: true, force: true });
  const images = await subset(values.fashion!, n, dir);
  const auto = autoTaps(model, rows, { max: Number(values['fashion-taps']) });
  const budget = 600 * Math.min(1, images / 20000);
  await runCase({ name: `Fashion-MNIST${images < 20000 ? ` (SUBSET: budget scaled to ${images} / 20000 images)` : ''}, ${auto.length} auto taps`, data: dir, taps: auto.map((t) => t.name), grid: [0.01, 0.1, 1, 10], folds: 3, budget, images }, path.join(out, 'fashion'));
} else console.log(`Fashion-MNIST: ${values.fashion}/train not found (node dist/scripts/prepare-fashion-mnist.js), skipped`);
