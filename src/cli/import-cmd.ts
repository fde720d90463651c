/** `xfer import model.tflite --out model.onnx [--card [card.json]]`: TFLite → float ONNX (the converter loads when it runs). */
import { writeFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import type { Command } from 'commander';
import { XferError } from '../errors.js';

interface ImportOptions {
  out?: string;
  card?: string | boolean;
}

function dimsText(dims: { dimValue?: number; dimParam?: string }[] | undefined): string {
  return `[${(dims ?? []).map((d) => d.dimParam ?? d.dimValue ?? '?').join(',')}]`;
}

/** Run the import; returns the one-line summary. */
export async function runImport(modelFile: string, opts: ImportOptions): Promise<string> {
  if (path.extname(modelFile).toLowerCase() === '.onnx') {
    throw new XferError(`${modelFile}: already an ONNX model`, { hint: 'pass it to --model directly; `xfer import` converts .tflite files' });
  }
  const started = performance.now();
  const { convertTflite, describeInput, readTfliteFile, tfliteCard } = await import('../import/tflite/index.js');
  const { writeOnnxFile } = await import('../onnx/io.js');
  const tfl = await readTfliteFile(modelFile);
  const onnx = convertTflite(tfl);
  const out = opts.out ?? `${path.basename(modelFile, path.extname(modelFile))}.onnx`;
  const { size } = await writeOnnxFile(out, onnx);
  const info = describeInput(tfl);
  const g = onnx.graph;
  const quant = info.scale !== undefined ? ` (TFLite ${info.type}: real = ${Number(info.scale.toPrecision(6))} * (q - ${info.zeroPoint}))` : '';
  const outputs = g.output.map((o) => `"${o.name}" ${dimsText(o.type?.tensorType?.shape?.dim)}`).join(', ');
  let summary =
    `imported ${modelFile} → ${out}: ${tfl.subgraphs[0].operators.length} TFLite ops → ${g.node.length} ONNX nodes, ` +
    `input "${g.input[0].name}" ${dimsText(g.input[0].type?.tensorType?.shape?.dim)} NHWC float32${quant}, output ${outputs}, ` +
    `${(size / 1e6).toFixed(1)} MB in ${((performance.now() - started) / 1000).toFixed(1)} s`;
  if (opts.card !== undefined && opts.card !== false) {
    const cardFile = typeof opts.card === 'string' ? opts.card : path.join(path.dirname(out), `${path.basename(out, path.extname(out))}.card.json`);
    const card = tfliteCard(tfl, out, cardFile);
    await mkdir(path.dirname(path.resolve(cardFile)), { recursive: true });
    await writeFile(cardFile, `${JSON.stringify(card, null, 2)}\n`);
    summary += `; card ${cardFile} (check labels, taps and crop)`;
  }
  return summary;
}

export function registerImportCommand(program: Command): void {
  program
    .command('import')
    .description('convert a TFLite image model to a float ONNX model (NHWC float input, NCHW inside, TFLite tensor names kept for tapping)')
    .argument('<model>', 'path to a .tflite file')
    .option('--out <file>', 'output .onnx path (default: <model name>.onnx in the current folder)')
    .option('--card [file]', 'also write a starting model card (default: <out>.card.json next to the output)')
    .action(async (model: string, opts: ImportOptions) => {
      process.stdout.write(`${await runImport(model, opts)}\n`);
    });
}
