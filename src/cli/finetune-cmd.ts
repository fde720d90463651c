/**
 * `xfer train --head finetune`: flags → finetune() (src/finetune/fit.ts). A progress bar per epoch on
 * stderr (a TTY; else one line per epoch), `--json` one line per event on stdout then the result,
 * Ctrl-C: the step in flight finishes, a checkpoint is written, exit 130 (`--resume` continues).
 */
import cliProgress from 'cli-progress';
import { XferError } from '../errors.js';
import { parseNonNegativeInt, parsePositiveInt } from './args.js';
import type { BatchNormMode, FinetuneEvent, FinetuneOptions, Optimizer } from '../finetune/fit.js';
import type { Metrics } from '../heads/metrics.js';

type Flags = Record<string, string | string[] | boolean | undefined>;

/** Numbers from flags; the library checks ranges (lr > 0, ...) and names the flag. */
function num(v: string | string[] | boolean | undefined, flag: string): number | undefined {
  if (v === undefined) return undefined;
  const s = String(v).trim();
  const n = Number(s);
  if (s === '' || !Number.isFinite(n)) throw new XferError(`${flag}: expected a number, got '${String(v)}'`, { hint: `e.g. ${flag} ${flag.startsWith('--lr') ? '1e-3' : '0.1'}` });
  return n;
}

/** The flags `xfer train` passes on when `--head finetune`. */
export function finetuneOptions(o: Flags): FinetuneOptions {
  if (o.from === undefined) throw new XferError('--head finetune: --from <tap> is required (the tensor the features were extracted at, or input)', { hint: 'e.g. --from block_13_expand_relu with features from `xfer extract --layers block_13_expand_relu --pool none`' });
  if (o.optimizer !== undefined && o.optimizer !== 'sgd' && o.optimizer !== 'adamw') throw new XferError(`--optimizer: expected sgd or adamw, got '${String(o.optimizer)}'`);
  return {
    features: o.features as string | undefined,
    data: o.data as string | undefined,
    from: String(o.from),
    out: String(o.out),
    model: o.model as string | undefined,
    card: o.card as string | undefined,
    lr: num(o.lr, '--lr'),
    lrBackbone: num(o.lrBackbone, '--lr-backbone'),
    layerDecay: num(o.layerDecay, '--layer-decay'),
    freeze: o.freeze !== undefined ? parseNonNegativeInt(String(o.freeze), '--freeze') : undefined,
    optimizer: o.optimizer as Optimizer | undefined,
    momentum: num(o.momentum, '--momentum'),
    weightDecay: num(o.weightDecay, '--weight-decay'),
    labelSmoothing: num(o.labelSmoothing, '--label-smoothing'),
    mixup: num(o.mixup, '--mixup'),
    ema: num(o.ema, '--ema'),
    batchNorm: o.batchNorm as BatchNormMode | undefined,
    epochs: o.epochs !== undefined ? parsePositiveInt(String(o.epochs), '--epochs') : undefined,
    batch: o.batch !== undefined ? parsePositiveInt(String(o.batch), '--batch') : undefined,
    warmup: num(o.warmup, '--warmup'),
    patience: o.patience !== undefined ? parseNonNegativeInt(String(o.patience), '--patience') : undefined,
    val: num(o.val, '--val'),
    seed: parseNonNegativeInt(String(o.seed ?? '0'), '--seed'),
    threads: o.threads !== undefined ? parsePositiveInt(String(o.threads), '--threads') : undefined,
    device: o.device as string | undefined,
    augment: o.augment as string | undefined,
    resume: o.resume === true,
    force: o.force === true,
  };
}

const pct = (v: number): string => `${(100 * v).toFixed(2)}%`;

function epochReporter(live: boolean): { onEvent: (e: FinetuneEvent) => void; stop: () => void } {
  let bar: cliProgress.SingleBar | null = null;
  const err = (s: string): void => {
    process.stderr.write(`${s}\n`);
  };
  return {
    onEvent(e) {
      if (e.event === 'step') {
        if (!live) return;
        if (!bar) {
          bar = new cliProgress.SingleBar(
            { format: `epoch ${e.epoch}/${e.epochs} {bar} {value}/{total} | loss {loss} | {ips} img/s`, hideCursor: true, clearOnComplete: true, stream: process.stderr },
            cliProgress.Presets.shades_classic,
          );
          bar.start(e.batches, e.batch - 1, { loss: '-', ips: '-' });
        }
        bar.update(e.batch, { loss: e.loss.toFixed(4), ips: e.imagesPerSecond.toFixed(1) });
      } else {
        bar?.stop();
        bar = null;
        if (e.event === 'epoch') {
          const val = e.valAcc !== undefined ? `, val loss ${e.valLoss?.toFixed(4)}, val acc ${pct(e.valAcc)}${e.best ? ' (best)' : ''}` : '';
          err(`epoch ${e.epoch}/${e.epochs}: loss ${e.loss.toFixed(4)}${val}, ${e.seconds.toFixed(1)} s, ${e.imagesPerSecond.toFixed(1)} img/s`);
        } else if (e.event === 'stop') err(`stopped: ${e.reason}`);
      }
    },
    stop() {
      bar?.stop();
      bar = null;
    },
  };
}

function summary(name: string, m: Metrics): string {
  return `${name}: accuracy ${pct(m.accuracy)}, mean per-class ${pct(m.meanPerClassAccuracy)}${m.logLoss !== null ? `, log-loss ${m.logLoss.toFixed(4)}` : ''} (${m.n} rows)`;
}

/** Run `xfer train --head finetune` with the parsed flags. */
export async function runFinetune(o: Flags): Promise<void> {
  const { finetune } = await import('../finetune/fit.js');
  const opts = finetuneOptions(o);
  const json = o.json === true;
  const rep = !json && !o.quiet ? epochReporter(process.stderr.isTTY === true) : null;
  const controller = new AbortController();
  let interrupts = 0;
  const onSigint = (): void => {
    if (++interrupts > 1) process.exit(130);
    controller.abort();
    if (!json) process.stderr.write('\ninterrupt: finishing the step in flight, writing a checkpoint (Ctrl-C again to quit at once; --resume continues)\n');
  };
  process.on('SIGINT', onSigint);
  process.on('SIGTERM', onSigint);
  try {
    const r = await finetune({
      ...opts,
      signal: controller.signal,
      progress: json ? (e) => process.stdout.write(JSON.stringify(e) + '\n') : rep?.onEvent,
      warn: (m) => {
        rep?.stop();
        process.stderr.write(`warning: ${m}\n`);
      },
    });
    await r.head.close();
    if (json) process.stdout.write(JSON.stringify({ event: 'result', ok: true, out: r.dir, ...r.report }) + '\n');
    else {
      const s = r.report.selection;
      if (s) process.stdout.write(`selection: ${s.method}${s.holdout ? `; ${s.holdout}` : ''}\n`);
      for (const [k, m] of Object.entries(r.report.metrics)) process.stdout.write(summary(k, m) + '\n');
      process.stdout.write(`head written to ${r.dir} (report.md, report.json${r.report.plots.length ? ', ' + r.report.plots.join(', ') : ''}) in ${r.report.seconds.toFixed(1)} s\n`);
    }
  } finally {
    rep?.stop();
    process.off('SIGINT', onSigint);
    process.off('SIGTERM', onSigint);
  }
}
