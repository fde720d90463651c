/**
 * bench:finetune-step — one training step of the built-in backbone's top from block_13 (batch 32),
 * xfer's ONNX training graph against a PyTorch loop (eval-mode BN, same thread count, channels-first
 * and channels-last, the faster one) measured in the same run; prints the ratio.
 *
 * usage: npm run bench:finetune-step [-- --threads 1,2 --batch 32 --steps 10 --rounds 3 --from block_13_expand_relu --no-nchwc --batch-norm batch]
 * --no-nchwc: plain Conv ops only (the graph a GPU, or an ORT build without NCHWc kernels, runs).
 * --batch-norm batch: both sides with batch-statistics BN (xfer `--batch-norm batch`, PyTorch train-mode BN).
 * PyTorch comes from $XFER_PYTHON (default python3); without it only xfer's times are printed.
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { readOnnxFile } from '../src/onnx/io.js';
import { builtinOnnxPath } from '../src/import/keras/nsfwjs.js';
import { currentPython, describeAnchor } from './bench-python.js';
import { planFinetune, buildTrainingModel, TrainingSession, Rng, nchwcBlock } from '../src/finetune/index.js';

export interface StepBenchOptions {
  from?: string;
  batch?: number;
  threads?: number[];
  steps?: number;
  classes?: number;
  /** Alternate xfer and PyTorch this many times per thread count (the load of a shared machine drifts). */
  rounds?: number;
  python?: string;
  log?: (line: string) => void;
  /** false: plain Conv ops only (what a GPU or a build without NCHWc kernels runs). */
  nchwc?: boolean;
  /** 'batch': batch-statistics BN on both sides (default 'frozen': eval-mode BN, the issue's setting). */
  batchNorm?: 'frozen' | 'batch';
}

export interface StepBenchRow {
  threads: number;
  round: number;
  xferMs: number;
  torchMs: number | null;
  torchLayout: string | null;
  ratio: number | null;
}

const median = (v: number[]): number => v.slice().sort((a, b) => a - b)[Math.floor(v.length / 2)];

/** Median step times of xfer and PyTorch per thread count (used by bench:finetune too). */
export async function benchFinetuneStep(opts: StepBenchOptions = {}): Promise<StepBenchRow[]> {
  const from = opts.from ?? 'block_13_expand_relu';
  const n = opts.batch ?? 32;
  const steps = opts.steps ?? 10;
  const K = opts.classes ?? 10;
  const log = opts.log ?? ((l: string) => process.stdout.write(`${l}\n`));
  const file = await builtinOnnxPath('mobilenet_v2');
  const { model } = await readOnnxFile(file);
  const plan = planFinetune(model, { from, nClasses: K });
  // As `xfer train --head finetune` builds it on a CPU (NCHWc depthwise kernels where ORT has them).
  const block = opts.nchwc === false ? 0 : await nchwcBlock();
  const batchNorm = opts.batchNorm ?? 'frozen';
  const train = buildTrainingModel(model, plan, { optimizer: 'sgd', momentum: 0.9, weightDecay: 1e-4, labelSmoothing: 0.1, batchNorm, ...(block ? { nchwc: { block, batch: n } } : {}) });
  log(`training graph${block ? ` (NCHWc block ${block})` : ''}: ${train.graph.node.length} nodes, ${plan.params.length} parameters tensors, from ${from} [${plan.fromShape}] to ${plan.to}, batch ${n}`);
  const x = new Rng(5).uniform(n * plan.fromShape.reduce((a, b) => a * b, 1), 0, 6);
  const y = Int32Array.from({ length: n }, (_, i) => i % K);
  const lr = { head: 0.01, backbone: plan.blocks.map(() => 0.001) };
  const rows: StepBenchRow[] = [];
  // The current-versions venv (scripts/bench-python.ts: $XFER_PYTHON, else the project venv, made if
  // needed), else Debian's python3.
  const anchor = opts.python ? null : currentPython(['torch']);
  const py = opts.python ?? anchor?.exe ?? 'python3';
  if (anchor) log(`PyTorch anchor: ${describeAnchor(anchor)}`);
  const script = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'scripts', 'bench_finetune_step.py');
  for (const threads of opts.threads ?? [1, 2]) {
    const sess = await TrainingSession.start(model, train, plan, 1, { threads, device: 'cpu' });
    for (let i = 0; i < 3; i++) await sess.step(x, y, n, lr);
    for (let round = 1; round <= (opts.rounds ?? 3); round++) {
      const times: number[] = [];
      for (let i = 0; i < steps; i++) {
        const t0 = performance.now();
        await sess.step(x, y, n, lr);
        times.push(performance.now() - t0);
      }
      const xferMs = median(times);
      const r = spawnSync(py, [script, file, from, plan.to, String(K), String(n), String(threads), String(steps), ...plan.fromShape.map(String), batchNorm], { encoding: 'utf8' });
      let torchMs: number | null = null;
      let torchLayout: string | null = null;
      if (r.status === 0) {
        const t = JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, number>;
        [torchLayout, torchMs] = Object.entries(t).sort((a, b) => a[1] - b[1])[0];
        log(`threads ${threads}, round ${round}: xfer ${xferMs.toFixed(1)} ms/step, PyTorch ${Object.entries(t).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', ')} ms/step → ratio ${(xferMs / torchMs).toFixed(2)}× (vs ${torchLayout})`);
      } else {
        log(`threads ${threads}, round ${round}: xfer ${xferMs.toFixed(1)} ms/step; PyTorch anchor failed (${py}: ${(r.stderr || String(r.error)).trim().split('\n').pop()}) — set XFER_PYTHON to a python with torch`);
      }
      rows.push({ threads, round, xferMs, torchMs, torchLayout, ratio: torchMs ? xferMs / torchMs : null });
    }
    await sess.close();
    const ratios = rows.filter((r) => r.threads === threads && r.ratio !== null).map((r) => r.ratio!);
    if (ratios.length > 0) log(`threads ${threads}: ratio median ${median(ratios).toFixed(2)}×, range ${Math.min(...ratios).toFixed(2)}–${Math.max(...ratios).toFixed(2)}× over ${ratios.length} rounds`);
  }
  return rows;
}

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.stdout.write('bench:finetune-step (timings are noisy on a shared machine: compare the ratio, measured in the same run)\n');
  await benchFinetuneStep({
    from: arg('from'),
    batch: arg('batch') ? Number(arg('batch')) : undefined,
    steps: arg('steps') ? Number(arg('steps')) : undefined,
    threads: arg('threads')?.split(',').map(Number),
    rounds: arg('rounds') ? Number(arg('rounds')) : undefined,
    nchwc: !process.argv.includes('--no-nchwc'),
    batchNorm: arg('batch-norm') === 'batch' ? 'batch' : 'frozen',
  });
}
