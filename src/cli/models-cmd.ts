/** `xfer models` and `xfer layers` (implementations load when the command runs: `xfer --help` stays fast). */
import type { Command } from 'commander';
import { printTable, notice } from './output.js';

export function registerModelCommands(program: Command): void {
  program
    .command('models')
    .description('list the built-in backbones and the catalog (downloadable, sha256-pinned) with which of its entries are present')
    .option('--json', 'print the cards as JSON')
    .action(async (opts: { json?: boolean }) => {
      const { listBuiltinCards } = await import('../model/registry.js');
      const cards = await listBuiltinCards();
      const { builtinCardDir } = await import('../model/registry.js');
      const { listCatalog, isPresent, formatSize, modelFile } = await import('../model/catalog.js');
      const catalog = await listCatalog(builtinCardDir());
      if (opts.json) {
        const cat = catalog.map((e) => ({ ...e.card, dir: undefined, catalog: e.catalog, present: isPresent(e) }));
        process.stdout.write(`${JSON.stringify([...cards.map(({ dir: _dir, ...c }) => c), ...cat], null, 2)}\n`);
        return;
      }
      printTable(
        ['id', 'input', 'layout', 'default tap', 'license', 'description'],
        cards.map((c) => [
          c.id,
          `${c.input.size[0]}x${c.input.size[1]} ${c.input.channel_order} [${c.input.range.join(',')}]`,
          c.input.layout,
          c.taps ? `${c.taps.default} (${c.taps.pool ?? 'avg'})` : '-',
          c.license,
          c.description.length > 70 ? `${c.description.slice(0, 67)}...` : c.description,
        ]),
      );
      process.stdout.write('\nCatalog (downloaded on first use, or with `xfer pull <id>`; docs/catalog.md):\n');
      printTable(
        ['id', 'present', 'format', 'size', 'input', 'license', 'description'],
        catalog.map((e) => [
          e.id,
          isPresent(e) ? 'yes' : 'no',
          e.catalog.format,
          formatSize(modelFile(e).size),
          `${e.card.input.size[0]}x${e.card.input.size[1]} ${e.card.input.layout}`,
          e.card.license,
          e.card.description.length > 60 ? `${e.card.description.slice(0, 57)}...` : e.card.description,
        ]),
      );
      process.stdout.write('\nAny other ONNX (or TFLite) model: pass its path to --model with a card (--card card.json); see docs/model-cards.md\n');
    });

  program
    .command('layers')
    .description('list every tappable tensor of a model in topological order: index, node, op, tensor name, dtype, shape')
    .argument('<model>', 'built-in id (see `xfer models`) or path to an .onnx / .tflite file')
    .option('--card <file>', 'model card (marks its recommended taps)')
    .option('--grep <text>', 'only tensors whose tensor or node name contains text (or matches /regex/)')
    .option('--op <ops>', 'only tensors produced by these op types (comma-separated, e.g. Relu,Conv)')
    .option('--recommended', 'only the card\'s recommended taps')
    .option('--no-probe', 'do not run the model to measure shapes it does not declare')
    .option('--all', 'also list the tensors computed from the weights alone (no batch axis; they cannot be tapped)')
    .option('--json', 'print JSON rows')
    .action(async (spec: string, opts: { card?: string; grep?: string; op?: string; recommended?: boolean; probe: boolean; all?: boolean; json?: boolean }) => {
      const { resolveBackbone } = await import('../model/registry.js');
      const { readOnnxFile } = await import('../onnx/io.js');
      const { describeLayers, filterLayers, formatShape } = await import('../model/layers.js');
      const b = await resolveBackbone(spec, { card: opts.card, onNotice: notice });
      const { model } = await readOnnxFile(b.file);
      let rows = filterLayers(await describeLayers(model, b.card, { probe: opts.probe }), opts);
      if (opts.recommended) rows = rows.filter((r) => r.mark !== null);
      const constant = rows.filter((r) => !r.fromInput).length;
      if (!opts.all) rows = rows.filter((r) => r.fromInput);
      if (opts.json) {
        process.stdout.write(`${JSON.stringify({ model: b.id, file: b.file, sha256: b.sha256, layers: rows }, null, 2)}\n`);
        return;
      }
      printTable(
        ['#', 'node', 'op', 'tensor', 'dtype', 'shape', ''],
        rows.map((r) => [String(r.index), r.node === r.name ? '' : r.node, r.op, r.name, r.dtype ?? '?', formatShape(r.shape), !r.fromInput ? 'weights only' : r.mark === 'default' ? '* default' : r.mark ? '* recommended' : '']),
      );
      const hidden = !opts.all && constant > 0 ? ` (${constant} computed from the weights alone not shown: --all)` : '';
      process.stdout.write(`\n${rows.length} tensors${hidden}${b.card?.taps ? '; * = recommended taps from the card' : ''}. Tap by name or index: xfer extract --layers <name>[,<name>]\n`);
    });
}
