/**
 * Progress reporting for `xfer extract`: a TTY progress bar (images/s, ETA) on stderr, or JSON lines
 * on stdout (`--json`: {"event": "start" | "progress" | "skip" | "shard" | "notice" | "summary", ...}),
 * or nothing but errors (`--quiet`).
 */
import cliProgress from 'cli-progress';
import type { ExtractEvent, ExtractSummary } from './pipeline.js';

export type ProgressMode = 'bar' | 'json' | 'quiet' | 'lines';

export interface ProgressReporter {
  onEvent(e: ExtractEvent): void;
  summary(s: ExtractSummary, job?: string): void;
  notice(msg: string): void;
  stop(): void;
}

export function chooseProgressMode(opts: { json?: boolean; quiet?: boolean }, stream: NodeJS.WriteStream = process.stderr): ProgressMode {
  if (opts.json) return 'json';
  if (opts.quiet) return 'quiet';
  return stream.isTTY ? 'bar' : 'lines';
}

function fmtEta(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '--';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = s % 60;
  return h > 0 ? `${h}h${String(m).padStart(2, '0')}m` : m > 0 ? `${m}m${String(r).padStart(2, '0')}s` : `${r}s`;
}

export function createProgress(mode: ProgressMode, job?: string): ProgressReporter {
  const err = (s: string) => process.stderr.write(`${s}\n`);
  const json = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(job === undefined ? o : { job, ...o })}\n`);
  let bar: cliProgress.SingleBar | null = null;
  let lastLine = 0;
  // Device notices come from every inference session (one per worker): print each once.
  const shownDevice = new Set<string>();
  return {
    notice(msg) {
      if (msg.startsWith('device:')) {
        if (shownDevice.has(msg)) return;
        shownDevice.add(msg);
      }
      if (mode === 'json') json({ event: 'notice', message: msg });
      else if (mode !== 'quiet') {
        if (bar) bar.stop();
        err(msg);
        bar = null;
      }
    },
    onEvent(e) {
      if (mode === 'json') {
        const { type, ...rest } = e;
        json({ event: type, ...rest });
        return;
      }
      if (mode === 'quiet') return;
      if (e.type === 'notice') return this.notice(e.message);
      if (e.type === 'start') {
        const what = `${e.resumed ? 'resuming' : 'extracting'} ${e.total} images → ${e.out} (${e.provider}, batch ${e.batch}${e.shard ? `, shard ${e.shard.index}/${e.shard.count}` : ''})`;
        err(e.done > 0 ? `${what}; ${e.done} already done` : what);
        if (mode === 'bar' && e.done < e.total) {
          bar = new cliProgress.SingleBar(
            { format: '{bar} {percentage}% | {value}/{total} | {rate} img/s | ETA {eta_h} | skipped {skipped}', hideCursor: true, clearOnComplete: false, stream: process.stderr, etaBuffer: 50 },
            cliProgress.Presets.shades_classic,
          );
          bar.start(e.total, e.done, { rate: '0.0', eta_h: '--', skipped: e.skippedBefore });
        }
      } else if (e.type === 'skip') {
        if (mode === 'lines') err(`skipped ${e.path}: ${e.reason}`);
      } else if (e.type === 'progress') {
        const eta = e.rate > 0 ? (e.total - e.done) / e.rate : NaN;
        if (bar) bar.update(e.done, { rate: e.rate.toFixed(1), eta_h: fmtEta(eta), skipped: e.errors });
        else if (mode === 'lines' && performance.now() - lastLine > 10_000) {
          lastLine = performance.now();
          err(`${e.done}/${e.total} images, ${e.rate.toFixed(1)} img/s, ETA ${fmtEta(eta)}, ${e.errors} skipped`);
        }
      }
    },
    summary(s) {
      if (bar) {
        bar.stop();
        bar = null;
      }
      if (mode === 'json') {
        json({ event: 'summary', ...s });
        return;
      }
      if (mode === 'quiet') return;
      const state = s.interrupted ? 'interrupted (resume with --resume)' : s.strictStop ? 'stopped by --strict' : s.complete ? 'complete' : 'incomplete';
      err(
        `${s.out}: ${state}; ${s.images} images in ${s.shards} shard(s), ${s.errors} skipped (errors.jsonl); this run ${s.imagesThisRun} images in ${s.seconds.toFixed(1)} s (${s.imagesPerSecond.toFixed(1)} img/s)`,
      );
    },
    stop() {
      if (bar) bar.stop();
      bar = null;
    },
  };
}
