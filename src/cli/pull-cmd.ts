/**
 * `xfer pull <id>|--all` (download catalog backbones into the cache, verified), `xfer pull <id> --file`
 * (register a copy downloaded elsewhere) and `xfer card --from-hf` (a card from a Hugging Face
 * preprocessor_config.json). Implementations load when the command runs.
 */
import { writeFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { formatError, XferError } from '../errors.js';
import { notice } from './output.js';

interface PullOpts {
  all?: boolean;
  file?: string;
  labels?: boolean;
  quiet?: boolean;
}

async function runPull(ids: string[], opts: PullOpts): Promise<void> {
  const { builtinCardDir } = await import('../model/registry.js');
  const { listCatalog, formatSize, isPresent } = await import('../model/catalog.js');
  const { pullEntry, registerLocalFile } = await import('../model/pull.js');
  const catalog = await listCatalog(builtinCardDir());
  if (opts.all && ids.length > 0) throw new XferError('xfer pull: give ids or --all, not both');
  if (!opts.all && ids.length === 0) throw new XferError('xfer pull: which model?', { hint: `ids: ${catalog.map((e) => e.id).join(', ')}; or --all` });
  const pick = (id: string) => {
    const e = catalog.find((x) => x.id === id);
    if (!e) throw new XferError(`xfer pull: "${id}" is not in the catalog`, { hint: `ids: ${catalog.map((x) => x.id).join(', ')} (xfer models)` });
    return e;
  };
  const entries = opts.all ? catalog : ids.map(pick);
  if (opts.file !== undefined) {
    if (entries.length !== 1) throw new XferError('--file: registers one model; give exactly one id');
    const dest = await registerLocalFile(entries[0], opts.file, opts.labels ? 'labels' : 'model');
    process.stdout.write(`${entries[0].id}: ${opts.file} matches the catalog sha256; registered as ${dest}\n`);
    if (!isPresent(entries[0])) {
      const rest = entries[0].catalog.files.filter((f) => f.role !== (opts.labels ? 'labels' : 'model'));
      process.stdout.write(`  still missing: ${rest.map((f) => `${f.name} (${f.urls[0]}; register with --file <path>${f.role === 'labels' ? ' --labels' : ''})`).join(', ')}\n`);
    }
    return;
  }
  const cliProgress = (await import('cli-progress')).default;
  const useBar = !opts.quiet && process.stderr.isTTY;
  const failed: string[] = [];
  for (const e of entries) {
    let bar: InstanceType<typeof cliProgress.SingleBar> | null = null;
    let lastPct = -1;
    let barFile = '';
    const result = await pullEntry(e, {
      onNotice: (m) => {
        if (bar) bar.stop();
        bar = null;
        if (!opts.quiet) notice(m);
      },
      onProgress: (f, received, total) => {
        if (opts.quiet) return;
        if (useBar) {
          if (bar && barFile !== f.name) {
            bar.stop();
            bar = null;
          }
          barFile = f.name;
          if (!bar) {
            bar = new cliProgress.SingleBar({ format: `${f.name} [{bar}] {percentage}% | {value}/{total} MB`, stream: process.stderr, hideCursor: false }, cliProgress.Presets.shades_classic);
            bar.start(total === null ? 0 : Number((total / 1e6).toFixed(2)), 0);
          }
          bar.update(Number((received / 1e6).toFixed(2)));
          return;
        }
        const pct = total ? Math.floor((10 * received) / total) * 10 : -1;
        if (barFile !== f.name) lastPct = -2;
        barFile = f.name;
        if (pct !== lastPct) {
          lastPct = pct;
          notice(`${f.name}: ${total ? `${pct} %` : formatSize(received)} of ${formatSize(total)}`);
        }
      },
    }).catch((err: unknown) => {
      // --all goes on with the other entries and fails at the end; one id fails at once.
      if (!opts.all || !(err instanceof XferError)) throw err;
      (bar as InstanceType<typeof cliProgress.SingleBar> | null)?.stop();
      bar = null;
      notice(formatError(err));
      failed.push(e.id);
      return null;
    });
    (bar as InstanceType<typeof cliProgress.SingleBar> | null)?.stop();
    if (result === null) continue;
    process.stdout.write(
      result.downloaded.length > 0
        ? `${e.id}: downloaded ${formatSize(result.bytes)}, sha256 verified (${e.catalog.files.map((f) => f.name).join(', ')})\n`
        : `${e.id}: already present\n`,
    );
  }
  if (failed.length > 0) {
    throw new XferError(`${failed.length} of ${entries.length} catalog entries could not be downloaded (pull --all): ${failed.join(', ')}`, {
      hint: 'the errors above say why and how to fetch each by other means',
      exitCode: 1,
    });
  }
}

export function registerPullCommands(program: Command): void {
  program
    .command('pull')
    .description('download catalog backbones (`xfer models`) into the cache: resumable, sha256-verified, mirrors in order; XFER_MIRROR=<url> replaces the hosts, HTTPS_PROXY/NO_PROXY are honoured')
    .argument('[ids...]', 'catalog ids')
    .option('--all', 'every catalog entry')
    .option('--file <path>', 'register a copy downloaded elsewhere (checked against the catalog sha256) instead of downloading')
    .option('--labels', 'with --file: the file is the entry\'s labels file, not the model')
    .option('--quiet', 'no progress output')
    .action(async (ids: string[], opts: PullOpts) => runPull(ids, opts));

  program
    .command('card')
    .description('make a model card (docs/model-cards.md) from a Hugging Face preprocessor_config.json, for using a transformers / transformers.js ONNX export by path')
    .requiredOption('--from-hf <file>', 'the preprocessor_config.json (shortest_edge, crop_size, crop_pct, resample, rescale, mean/std, channel flip)')
    .option('--id <id>', 'card id (default: model)')
    .option('--out <file>', 'write the card here (default: print it); name it <model>.onnx.card.json to have it found beside the model')
    .action(async (opts: { fromHf: string; id?: string; out?: string }) => {
      const { cardFromPreprocessorFile } = await import('../model/hf-card.js');
      const card = await cardFromPreprocessorFile(opts.fromHf, opts.id ?? 'model');
      const text = `${JSON.stringify(card, null, 2)}\n`;
      if (opts.out) {
        await writeFile(opts.out, text);
        process.stdout.write(`wrote ${opts.out}: ${card.input.size.join('x')} ${card.input.channel_order}, ${card.resize.policy} ${card.resize.crop_pct} ${card.resize.interpolation}\n`);
      } else process.stdout.write(text);
    });
}
