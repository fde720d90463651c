/** `xfer predict` (backbone + trained head on images) and `xfer export` (the pair as one ONNX file). */
import { Option, type Command } from 'commander';
import type { CardFlags } from '../model/card-flags.js';
import { addCardFlags } from './card-flags.js';
import { configureSharpForBatchDecoding } from './image-process.js';
import { expandImageArgs } from '../image/discover.js';
import type { DeviceSpec } from '../model/session.js';
import type { PredictOutcome } from '../predict/predict.js';
import { positiveIntArg, requireExistingPaths } from './args.js';
import { notice } from './output.js';
import { XferError } from '../errors.js';

interface PredictCliOptions extends CardFlags {
  head: string;
  model?: string;
  card?: string;
  top: number;
  batch?: number;
  device: string;
  threads?: number;
  json?: boolean;
  format?: 'text' | 'csv' | 'jsonl';
}

interface ExportCliOptions extends CardFlags {
  head: string;
  out: string;
  model?: string;
  card?: string;
  verify: boolean;
  json?: boolean;
}

function round6(x: number): number {
  return Number(x.toFixed(6));
}

/** One CSV field (RFC 4180): quoted when it holds a comma, quote, line break or edge spaces. */
function csvField(v: string | number): string {
  const s = String(v);
  return /[",\r\n]|^\s|\s$/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** CSV header for top-k rows: path, label, probability, then label_2, probability_2 … label_k, probability_k, error. */
export function csvHeader(k: number): string {
  const cols = ['path', 'label', 'probability'];
  for (let r = 2; r <= k; r++) cols.push(`label_${r}`, `probability_${r}`);
  return [...cols, 'error'].join(',');
}

export function csvRow(r: PredictOutcome, k: number): string {
  const cells: (string | number)[] = [r.path];
  if ('error' in r) {
    for (let i = 0; i < 2 * k; i++) cells.push('');
    cells.push(r.error);
  } else {
    for (let i = 0; i < k; i++) cells.push(r.top[i]?.label ?? '', r.top[i] ? round6(r.top[i].prob) : '');
    cells.push('');
  }
  return cells.map(csvField).join(',');
}

export function registerPredictCommands(program: Command): void {
  const predict = program
    .command('predict')
    .description('predict with a backbone + a head trained by `xfer train`: top-k labels with probabilities')
    .argument('<images...>', 'image files or folders (folders: every image inside, recursively)')
    .requiredOption('--head <dir>', 'head folder written by `xfer train --out`')
    .option('--model <id|path>', 'backbone (default: the one the head was trained on; must have the same sha256)')
    .option('--card <file>', 'model card JSON for the backbone')
    .option('--top <k>', 'predictions per image', positiveIntArg('--top'), 5)
    .option('--batch <n>', 'images per backbone run (default as for extract: 32 on CUDA; on CPU 2, or the threads per session if more)', positiveIntArg('--batch'))
    .option('--device <dev>', 'auto, cpu, cuda or cuda:<id>', 'auto')
    .option('--threads <n>', 'intra-op threads per inference session (default as for extract: on CPU the cores split between 2 to 4 sessions)', positiveIntArg('--threads'))
    .addOption(new Option('--format <format>', 'text (default) | csv (path,label,probability,label_2,probability_2,…,error; for spreadsheets) | jsonl (as --json)').choices(['text', 'csv', 'jsonl']))
    .option('--json', 'one JSON object per image on stdout: {path, label, index, prob, top:[{index,label,prob,score}]} or {path, error} (= --format jsonl)');
  addCardFlags(predict).action(async (images: string[], opts: PredictCliOptions) => {
    await requireExistingPaths(images, 'predict');
    await configureSharpForBatchDecoding();
    const format = opts.format ?? (opts.json ? 'jsonl' : 'text');
    if (opts.json && opts.format !== undefined && opts.format !== 'jsonl') throw new XferError(`--json and --format ${opts.format} disagree`, { hint: 'pass one of them' });
    const { isPredictError, openPredictor } = await import('../predict/predict.js');
    const p = await openPredictor(opts.head, {
      model: opts.model,
      card: opts.card,
      cardFlags: opts,
      device: { device: opts.device as DeviceSpec, threads: opts.threads },
      batch: opts.batch,
      top: opts.top,
      onNotice: notice,
    });
    try {
      const list = await expandImageArgs(images);
      let failed = 0;
      const k = Math.min(opts.top, p.head.classLabels.length);
      if (format === 'csv') process.stdout.write(`${csvHeader(k)}\n`);
      const onResult = (r: PredictOutcome): void => {
        if (format === 'csv') process.stdout.write(`${csvRow(r, k)}\n`);
        if (isPredictError(r)) {
          failed++;
          if (format === 'jsonl') process.stdout.write(`${JSON.stringify(r)}\n`);
          else process.stderr.write(`skipped ${r.path}: ${r.error}\n`);
          return;
        }
        if (format === 'csv') return;
        if (format === 'jsonl') {
          const top = r.top.map((t) => ({ index: t.index, label: t.label, prob: round6(t.prob), score: round6(t.score) }));
          process.stdout.write(`${JSON.stringify({ path: r.path, label: r.label, index: r.index, prob: round6(r.probs[r.index]), top })}\n`);
          return;
        }
        const lines = r.top.map((t) => `  ${(t.prob * 100).toFixed(2).padStart(6)}%  ${t.label}`);
        process.stdout.write(`${r.path}\n${lines.join('\n')}\n`);
      };
      await p.predict(list, onResult);
      if (!p.probabilistic && format === 'text') notice(`note: this ${p.head.head.kind} head is not calibrated; percentages are a softmax of its scores`);
      if (failed > 0) {
        notice(`${failed} of ${list.length} image(s) could not be read`);
        process.exitCode = 3;
      }
    } finally {
      await p.close();
    }
  });

  const exp = program
    .command('export')
    .description('export backbone + trained head as one ONNX file: uint8 NHWC pixels in, probabilities / scores / label out')
    .requiredOption('--head <dir>', 'head folder written by `xfer train --out`')
    .requiredOption('--out <file>', 'ONNX file to write')
    .option('--model <id|path>', 'backbone (default: the one the head was trained on; must have the same sha256)')
    .option('--card <file>', 'model card JSON for the backbone')
    .option('--no-verify', 'skip loading and running the written model once')
    .option('--json', 'print the result as JSON');
  addCardFlags(exp).action(async (opts: ExportCliOptions) => {
    const { exportOnnx } = await import('../predict/export.js');
    const r = await exportOnnx(opts.head, opts.out, { model: opts.model, card: opts.card, cardFlags: opts, verify: opts.verify, onNotice: notice });
    if (opts.json) {
      process.stdout.write(`${JSON.stringify(r)}\n`);
      return;
    }
    const shape = (s: (number | string)[]) => `[${s.join(', ')}]`;
    process.stdout.write(
      [
        `wrote ${r.file} (${(r.size / 2 ** 20).toFixed(1)} MiB, sha256 ${r.sha256.slice(0, 12)}) — ${r.kind} head, ${r.labels.length} classes`,
        `  input   ${r.input.name} ${r.input.dtype} ${shape(r.input.shape)}`,
        ...r.outputs.map((o) => `  output  ${o.name} ${o.dtype} ${shape(o.shape)}`),
        `  labels  metadata_props xfer.labels; card: xfer.card; resize/crop to feed it: xfer.preprocessing`,
      ].join('\n') + '\n',
    );
  });
}
