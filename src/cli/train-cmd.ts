/**
 * `xfer train` and `xfer eval`: thin shells over trainHead / evalHead (src/heads/train.ts).
 * Progress goes to stderr when it is a TTY; `--json` prints one JSON result on stdout.
 */
import type { Command } from 'commander';
import { XferError } from '../errors.js';
import { HEAD_KINDS, headDefaults, type HeadParams, type ParamValue } from '../heads/head.js';
import { setKernelThreads, releaseKernel } from '../heads/kernel/matmul.js';
import { parseNumber } from '../heads/sweep.js';
import { evalHead, trainHead } from '../heads/train.js';
import type { Metrics } from '../heads/metrics.js';

function collect(v: string, prev: string[] = []): string[] {
  return [...prev, v];
}

function list(v: string): string[] {
  return v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

/** Parse `--param key=value` against the head's defaults (numbers, booleans, lists of numbers, strings). */
export function parseParams(kind: string, pairs: string[]): HeadParams {
  const defs = headDefaults(kind);
  const out: HeadParams = {};
  for (const p of pairs) {
    const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(p);
    if (!m) throw new XferError(`--param: expected key=value, got '${p}'`, { hint: `e.g. --param ${Object.keys(defs)[0]}=${JSON.stringify(Object.values(defs)[0])}` });
    const [, key, raw] = m;
    if (!(key in defs)) throw new XferError(`--param: head ${kind} has no parameter '${key}'`, { hint: `known: ${Object.keys(defs).join(', ')}` });
    const def = defs[key];
    let v: ParamValue;
    if (typeof def === 'number') v = parseNumber(raw, `--param ${key}`);
    else if (typeof def === 'boolean') {
      if (!['true', 'false', '1', '0'].includes(raw)) throw new XferError(`--param ${key}: expected true or false, got '${raw}'`);
      v = raw === 'true' || raw === '1';
    } else if (Array.isArray(def)) v = raw.split(',').map((s) => parseNumber(s, `--param ${key}`));
    else if (raw === 'null' || raw === '') v = null;
    else if (/^-?\d/.test(raw) && Number.isFinite(Number(raw))) v = Number(raw);
    else v = raw;
    out[key] = v;
  }
  return out;
}

function progressPrinter(enabled: boolean): (e: { stage: string; phase: string; iter: number; loss?: number; valAcc?: number; msg?: string }) => void {
  let last = 0;
  return (e) => {
    if (!enabled) return;
    const now = Date.now();
    if (now - last < 200) return;
    last = now;
    const parts = [`${e.stage}`, `${e.phase} ${e.iter}`];
    if (e.loss !== undefined) parts.push(`loss ${e.loss.toFixed(4)}`);
    if (e.valAcc !== undefined) parts.push(`val acc ${(100 * e.valAcc).toFixed(2)}%`);
    if (e.msg) parts.push(e.msg);
    process.stderr.write(`\r\x1b[K${parts.join('  ')}`);
  };
}

function summary(name: string, m: Metrics): string {
  const top = m.topK ? `, top-${m.topK.k} ${(100 * m.topK.accuracy).toFixed(2)}%` : '';
  const ll = m.logLoss !== null ? `, log-loss ${m.logLoss.toFixed(4)}` : '';
  return `${name}: accuracy ${(100 * m.accuracy).toFixed(2)}%${top}, mean per-class ${(100 * m.meanPerClassAccuracy).toFixed(2)}%${ll} (${m.n} rows)`;
}

export function registerTrainCommands(program: Command): void {
  program
    .command('train')
    .description('fit a head (linear | svm | svm-rbf | mlp) on a feature folder written by `xfer extract`')
    .requiredOption('--features <dir>', 'feature folder')
    .option('--layers <names>', 'layer(s) to use, comma-separated (several are concatenated)', list)
    .option('--head <kind>', `head: ${HEAD_KINDS.join(' | ')}`, 'linear')
    .option('--C <value>', 'regularisation C (as in scikit-learn)')
    .option('--param <key=value>', 'other head parameter (repeatable), e.g. hidden=512,128 epochs=50 kernel=poly', collect, [])
    .option('--transform <list>', 'standardize, l2, pca:K (comma list) or none; default: standardize for svm/svm-rbf/mlp, none for linear')
    .option('--class-weight <w>', "'balanced' to weight classes by n/(k·n_c)")
    .option('--probability', 'svm: calibrate probabilities (Platt, 3-fold)')
    .option('--sweep <spec>', 'model selection, e.g. C=1e-4..1e4 (9-point log grid), C=1e-3..1e3:7 or C=0.01,0.1,1')
    .option('--val <fraction>', 'stratified validation split when the folder has none (default 0.2)')
    .option('--folds <k>', 'k-fold CV for the sweep')
    .option('--seed <n>', 'seed for splits, shuffles and initialisation', '0')
    .option('--threads <n>', 'threads for the matmul kernel (default: all cores, max 4)')
    .option('--json', 'print the result as JSON on stdout')
    .requiredOption('--out <dir>', 'head folder to write (head.json, weights, report)')
    .action(async (o: Record<string, string | string[] | boolean | undefined>) => {
      const kind = String(o.head);
      const params = parseParams(kind, (o.param as string[]) ?? []);
      if (o.C !== undefined) params.C = parseNumber(String(o.C), '--C');
      if (o.classWeight !== undefined) {
        if (o.classWeight !== 'balanced') throw new XferError(`--class-weight: only 'balanced' is supported, got '${String(o.classWeight)}'`);
        params.classWeight = 'balanced';
      }
      if (o.probability) params.probability = true;
      if (o.threads !== undefined) setKernelThreads(parseNumber(String(o.threads), '--threads'));
      const tty = !o.json && process.stderr.isTTY === true;
      try {
        const r = await trainHead({
          features: String(o.features),
          layers: o.layers as string[] | undefined,
          head: kind,
          params,
          transforms: o.transform as string | undefined,
          sweep: o.sweep as string | undefined,
          val: o.val !== undefined ? parseNumber(String(o.val), '--val') : undefined,
          folds: o.folds !== undefined ? parseNumber(String(o.folds), '--folds') : undefined,
          seed: parseNumber(String(o.seed), '--seed'),
          out: String(o.out),
          progress: progressPrinter(tty),
          warn: (m) => process.stderr.write(`${tty ? '\r\x1b[K' : ''}warning: ${m}\n`),
        });
        if (tty) process.stderr.write('\r\x1b[K');
        if (o.json) process.stdout.write(JSON.stringify({ ok: true, out: r.dir, ...r.report }) + '\n');
        else {
          const rep = r.report;
          if (rep.sweep) process.stdout.write(`sweep (${rep.sweep.mode}): ${rep.sweep.points.map((p) => `${rep.sweep!.param}=${p.value} ${(100 * p.score).toFixed(2)}%`).join(', ')}; best ${rep.sweep.param}=${rep.sweep.best}\n`);
          for (const [k, m] of Object.entries(rep.metrics)) process.stdout.write(summary(k, m) + '\n');
          process.stdout.write(`head written to ${r.dir} (report.md, report.json${rep.plots.length ? ', ' + rep.plots.join(', ') : ''}) in ${rep.seconds.toFixed(2)} s\n`);
        }
      } finally {
        await releaseKernel();
      }
    });

  program
    .command('eval')
    .description('evaluate a trained head on a feature folder (checks backbone and layers match)')
    .requiredOption('--head <dir>', 'head folder written by `xfer train`')
    .requiredOption('--features <dir>', 'feature folder')
    .option('--layers <names>', 'layer(s), default: those the head was trained on', list)
    .option('--split <name>', 'train | val | test | all (default: test, else val, else all)')
    .option('--out <dir>', 'report folder (default <head>/eval-<split>)')
    .option('--json', 'print the result as JSON on stdout')
    .action(async (o: Record<string, string | string[] | boolean | undefined>) => {
      try {
        const r = await evalHead({ head: String(o.head), features: String(o.features), layers: o.layers as string[] | undefined, split: o.split as string | undefined, out: o.out as string | undefined });
        if (o.json) process.stdout.write(JSON.stringify({ ok: true, out: r.dir, ...r.report }) + '\n');
        else {
          for (const w of r.report.warnings) process.stderr.write(`warning: ${w}\n`);
          process.stdout.write(summary(Object.keys(r.report.metrics)[0], r.metrics) + `\nreport written to ${r.dir}\n`);
        }
      } finally {
        await releaseKernel();
      }
    });
}
