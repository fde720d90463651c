/** `xfer classify`: top-k labels of a pretrained model's own head (the card's labels file). */
import path from 'node:path';
import type { Command } from 'commander';
import type { CardFlags } from '../model/card-flags.js';
import { addCardFlags } from './card-flags.js';
import { configureSharpForBatchDecoding } from './image-process.js';
import { XferError } from '../errors.js';
import { loadCard } from '../model/card.js';
import { expandImageArgs } from '../image/discover.js';
import type { ClassifyError, ClassifyResult } from '../predict/classify.js';
import type { DeviceSpec } from '../model/session.js';
import { notice } from './output.js';
import { parseBackground, positiveIntArg, preprocessFlags, requireExistingPaths } from './args.js';

/** Exit code when every image was classified but some inputs were skipped (as `xfer extract`). */
export const EXIT_SKIPPED = 3;

interface ClassifyCliOptions {
  model?: string;
  card?: string;
  labels?: string;
  top: number;
  json?: boolean;
  device: string;
  threads?: number;
  batch?: number;
  background?: string;
  applyIcc?: boolean;
}

export function registerClassifyCommand(program: Command): void {
  const cmd = program
    .command('classify')
    .description('classify images with a pretrained model\'s own head: top-k labels from its card\'s labels file, with probabilities')
    .argument('<images...>', 'image files or folders (folders: every image inside, recursively)')
    .option('--model <id|path>', 'built-in id or .onnx/.tflite path (default: the "file" of --card)')
    .option('--card <file>', 'model card JSON (input size, channel order, mean/std, labels)')
    .option('--labels <file>', 'labels file overriding the card\'s (one per line, 1000 or 1001 lines, or a JSON array)')
    .option('--top <k>', 'predictions per image', positiveIntArg('--top'), 5)
    .option('--batch <n>', 'images per model run when the model allows batching (default as for extract)', positiveIntArg('--batch'))
    .option('--device <dev>', 'auto, cpu, cuda or cuda:<id>', 'auto')
    .option('--threads <n>', 'intra-op threads per inference session (default as for extract)', positiveIntArg('--threads'))
    .option('--background <r,g,b>', 'colour transparent pixels are flattened onto (default 255,255,255)')
    .option('--apply-icc', 'convert images with an embedded ICC profile to sRGB through it (default: pixels as stored, like PIL/torchvision)')
    .option('--json', 'one JSON object per image on stdout: {path, top:[{index,label,prob}]} or {path, error}')
    .addHelpText('after', '\nExit codes: 0 all images classified; 3 finished, but some images could not be read (skipped); 2 bad input or usage; 1 the run failed.');
  addCardFlags(cmd).action(async (images: string[], opts: ClassifyCliOptions & CardFlags) => {
    await configureSharpForBatchDecoding();
    const background = parseBackground(opts.background);
    await requireExistingPaths(images, 'classify');
    let spec = opts.model;
    if (spec === undefined) {
      if (!opts.card) throw new XferError('xfer classify: --model is required', { hint: 'pass --model <built-in id | model.onnx> (and --card card.json for your own models)' });
      const card = await loadCard(opts.card);
      if (!card.file) throw new XferError(`${opts.card}: card has no "file"; pass --model <model.onnx>`);
      spec = path.resolve(card.dir ?? '.', card.file);
    }
    const { Classifier } = await import('../predict/classify.js');
    const clf = await Classifier.fromSpec(spec, {
      card: opts.card,
      labels: opts.labels,
      top: opts.top,
      batch: opts.batch,
      device: opts.device as DeviceSpec,
      threads: opts.threads,
      cardFlags: opts,
      preprocess: preprocessFlags({ applyIcc: opts.applyIcc, background }),
      onNotice: notice,
    });
    try {
      const list = await expandImageArgs(images);
      const onResult = (r: ClassifyResult | ClassifyError) => {
        if ('error' in r) {
          if (opts.json) process.stdout.write(`${JSON.stringify(r)}\n`);
          else process.stderr.write(`skipped ${r.path}: ${r.error}\n`);
          return;
        }
        if (opts.json) {
          process.stdout.write(`${JSON.stringify({ path: r.path, top: r.top.map((p) => ({ index: p.index, label: p.label, prob: Number(p.prob.toFixed(6)) })) })}\n`);
          return;
        }
        const lines = r.top.map((p) => `  ${(p.prob * 100).toFixed(2).padStart(6)}%  ${p.label}`);
        process.stdout.write(`${r.path}\n${lines.join('\n')}\n`);
      };
      const { failed } = await clf.classifyAll(list, onResult);
      if (failed > 0) {
        if (!opts.json) process.stderr.write(`${failed} of ${list.length} image(s) could not be read\n`);
        process.exitCode = EXIT_SKIPPED;
      }
    } finally {
      await clf.close();
    }
  });
}
