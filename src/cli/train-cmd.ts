/**
 * `xfer train` and `xfer eval`: thin shells over trainHead / evalHead (src/heads/train.ts).
 * Progress: a live line on stderr when it is a TTY (`--quiet`: none); `--json` prints one JSON line
 * per progress event on stdout ({"event": "fit" | "candidate" | "fold", ...}) and then the result
 * ({"event": "result", "ok": true, ...report}).
 */
import { Option, type Command } from 'commander';
import { XferError } from '../errors.js';
import { parseNonNegativeInt, parsePositiveInt } from './args.js';
import { HEAD_KINDS, describeRule, headParamRules, satisfies, type HeadParams, type ParamValue } from '../heads/head.js';
import { parseNumber } from '../heads/sweep.js';
import { REFIT_CHOICES, type RefitRows } from '../heads/split.js';
import type { TrainEvent } from '../heads/train.js';
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

/**
 * Parse `--param key=value` by the head's constraint table (numbers, integers, booleans, integer
 * lists, strings), then check it against the table: the error names the parameter, what it accepts
 * and what was given.
 */
export function parseParams(kind: string, pairs: string[]): HeadParams {
  const rules = headParamRules(kind);
  const out: HeadParams = {};
  for (const p of pairs) {
    const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(p);
    const [first, rule0] = Object.entries(rules)[0];
    if (!m) throw new XferError(`--param: expected key=value, got '${p}'`, { hint: `e.g. --param ${first}=${JSON.stringify(rule0.default)}` });
    const [, key, raw] = m;
    const r = rules[key];
    if (!r) throw new XferError(`--param: head ${kind} has no parameter '${key}'`, { hint: `known: ${Object.keys(rules).join(', ')}` });
    const t = r.types;
    let v: ParamValue;
    if (t.includes('ints')) v = raw.split(',').map((s) => parseNumber(s, `--param ${key}`));
    else if (t.includes('bool') && ['true', 'false', '1', '0'].includes(raw)) v = raw === 'true' || raw === '1';
    else if (t.includes('null') && (raw === 'null' || raw === '')) v = null;
    else if ((t.includes('number') || t.includes('int')) && /^[-+.\d]/.test(raw) && !(t.includes('string') && r.values?.includes(raw))) v = parseNumber(raw, `--param ${key}`);
    else v = raw;
    if (!satisfies(r, v)) throw new XferError(`--param ${key}: head ${kind} expects ${describeRule(r)}, got '${raw}'`, { hint: `e.g. --param ${key}=${Array.isArray(r.default) ? r.default.join(',') : String(r.default)} (the default)` });
    out[key] = v;
  }
  return out;
}

/** Progress for humans: one live line on stderr (a TTY), rewritten at most 5 times a second. */
function progressLine(): { onEvent: (e: TrainEvent) => void; clear: () => void } {
  let last = 0;
  let shown = false;
  return {
    onEvent(e) {
      const now = Date.now();
      // sweep candidates and CV folds always show; iterations are throttled
      if (e.event === 'fit' && now - last < 200) return;
      last = now;
      const parts: string[] = [];
      if (e.event === 'fit') {
        parts.push(e.stage, `${e.phase} ${e.iter}`);
        if (e.loss !== undefined) parts.push(`loss ${e.loss.toFixed(4)}`);
        if (e.valAcc !== undefined) parts.push(`val acc ${(100 * e.valAcc).toFixed(2)}%`);
        if (e.msg) parts.push(e.msg);
      } else if (e.event === 'candidate') {
        parts.push(`sweep ${Object.entries(e.values).map(([k, v]) => `${k}=${v}`).join(' ')}`, `fold ${e.fold}/${e.folds}`, `val acc ${(100 * e.valAcc).toFixed(2)}%`, `${e.seconds.toFixed(1)} s`);
      } else {
        parts.push(`cv fold ${e.fold}/${e.folds}`, `val acc ${(100 * e.valAcc).toFixed(2)}%`, `${e.seconds.toFixed(1)} s`);
      }
      process.stderr.write(`\r\x1b[K${parts.join('  ')}`);
      shown = true;
    },
    clear() {
      if (shown) process.stderr.write('\r\x1b[K');
      shown = false;
    },
  };
}

const pct = (v: number): string => `${(100 * v).toFixed(2)}%`;

function summary(name: string, m: Metrics): string {
  const top = m.topK ? `, top-${m.topK.k} ${(100 * m.topK.accuracy).toFixed(2)}%` : '';
  const ll = m.logLoss !== null ? `, log-loss ${m.logLoss.toFixed(4)}` : '';
  return `${name}: accuracy ${(100 * m.accuracy).toFixed(2)}%${top}, mean per-class ${(100 * m.meanPerClassAccuracy).toFixed(2)}%${ll} (${m.n} rows)`;
}

export function registerTrainCommands(program: Command): void {
  program
    .command('train')
    .description('fit a head (linear | svm | svm-rbf | mlp | knn) on a feature folder written by `xfer extract`, or fine-tune the backbone (--head finetune)')
    .option('--features <dir>', 'feature folder (required unless --head finetune --from input)')
    .option('--layers <names>', 'layer(s) to use, comma-separated (several are concatenated)', list)
    .option('--head <kind>', `head: ${HEAD_KINDS.join(' | ')} | finetune`, 'linear')
    .option('--C <value>', 'regularisation C (as in scikit-learn)')
    .option('--param <key=value>', 'other head parameter (repeatable), e.g. hidden=512,128 epochs=50 kernel=poly', collect, [])
    .option('--transform <list>', 'standardize, l2, pca:K (comma list) or none; default: standardize for svm/svm-rbf/mlp, none for linear')
    .option('--class-weight <w>', "'balanced' to weight classes by n/(k·n_c)")
    .option('--probability', 'svm: calibrate probabilities (Platt, 3-fold); svm-rbf calibrates by default (Platt on 5 folds + pairwise coupling; --param probability=false skips it)')
    .option('--sweep [spec]', "model selection, e.g. C=1e-4..1e4 (9-point log grid), C=1e-3..1e3:7 or C=0.01,0.1,1; repeat for a grid (--sweep C=0.1,1,10 --sweep gamma=0.01,0.1); alone, the head's default grid (C=1e-4..1e4:10 for linear and svm)", collect, [])
    .option('--val <fraction>', 'carve a stratified validation split of this fraction when the folder has none (default: none, the head is fitted on all training rows; 0.2 for a sweep scored on val; finetune: 0.2, and 0 trains on every row and keeps the last epoch)')
    .option('--folds <k>', 'k-fold CV on train: selects the sweep (default 5 when the sweep does not use val); without --sweep, reports the cross-validated accuracy (mean ± std) of the given parameters')
    .addOption(new Option('--refit <rows>', 'rows the final head is fitted on (default: train+val after a sweep on val, else train)').choices([...REFIT_CHOICES]))
    .option('--seed <n>', 'seed for splits, shuffles and initialisation', '0')
    .option('--threads <n>', 'threads for the matmul kernel (default: all cores, max 4)')
    .option('--json', 'one JSON line per progress event on stdout, then the result line')
    .option('--quiet', 'no progress line on stderr')
    .requiredOption('--out <dir>', 'head folder to write (head.json, weights, report)')
    .option('--from <tap>', 'finetune: tensor the features were extracted at (--pool none), or input (whole network, from --data)')
    .option('--data <dir>', 'finetune --from input: the images (ImageFolder tree or list file)')
    .option('--model <id|path>', "finetune: backbone (default: the features' own; --from input: mobilenet_v2)")
    .option('--card <file>', 'finetune: model card for --model')
    .option('--device <device>', 'finetune: auto | cpu | cuda[:id] (default auto)')
    .option('--lr <rate>', 'finetune: learning rate of the new classifier (default 1e-3)')
    .option('--lr-backbone <rate>', 'finetune: learning rate of the top pretrained block (default lr/10)')
    .option('--layer-decay <d>', 'finetune: each block further down learns d× as fast as the one above (default 1)')
    .option('--freeze <n>', 'finetune: keep the bottom n blocks of the trainable part fixed (default 0)')
    .addOption(new Option('--optimizer <name>', 'finetune: optimizer (default adamw)').choices(['sgd', 'adamw']))
    .option('--momentum <m>', 'finetune: SGD momentum (default 0.9)')
    .option('--weight-decay <w>', 'finetune: weight decay (default 1e-4)')
    .option('--epochs <n>', 'finetune: epochs (default 10)')
    .option('--batch <n>', 'finetune: batch size (default 32)')
    .option('--warmup <epochs>', 'finetune: linear warmup, in epochs, before the cosine decay (default min(1, epochs/10))')
    .option('--label-smoothing <e>', 'finetune: label smoothing (default 0)')
    .option('--mixup <alpha>', 'finetune: mixup, each batch blended with itself reversed by λ ~ Beta(α, α) (e.g. 0.2; default 0: off)')
    .addOption(new Option('--batch-norm <mode>', 'finetune: BatchNormalization of the trained blocks: frozen keeps the source\'s running statistics, batch normalises by batch statistics and updates them (PyTorch\'s train mode) (default frozen)').choices(['frozen', 'batch']))
    .option('--ema <decay>', 'finetune: score and keep an exponential moving average of the weights (e.g. 0.999; default 0: off)')
    .option('--patience <n>', 'finetune: early stopping after n epochs without a better val accuracy; the best epoch is kept (0: off; default 3)')
    .option('--augment <list>', 'finetune --from input: hflip,crop,color or none (default hflip,crop)')
    .option('--resume', 'finetune: continue from the checkpoint in --out (written every epoch and on Ctrl-C)')
    .option('--force', 'replace an existing --out folder (atomically, once the new head is complete; finetune: its old files go when training starts)')
    .addHelpText(
      'after',
      `
Model selection and the final fit:
  no --sweep, no --folds:               the head is fitted on all training rows (no validation
                                        carve; --val 0.2 holds out a fifth of train as val)
  folder with a test split, --sweep:    each grid point is scored on val (the folder's, or 0.2 of
                                        train); the best is refitted on train+val, reported on test
  otherwise, --sweep:                   each value is scored by k-fold CV on train (--folds, default 5);
                                        the best is refitted on train, so val stays a clean hold-out
  --folds k without --sweep:            k-fold CV accuracy (mean ± std) of the given parameters, then
                                        the final head is fitted on all training rows
  --refit train|train+val               override which rows the final head is fitted on
The choice and the rows used are printed and recorded in report.json ("selection", "cv").

Progress: a live line on stderr when it is a terminal (--quiet: none). --json prints one line per
event on stdout: {"event":"fit","stage","phase","iter","loss"?,"valAcc"?}, {"event":"candidate",
"param","value","values","fold","folds","valAcc"} per grid point and fold, {"event":"fold",...} per CV fold,
then {"event":"result","ok":true,...report}.

Fine-tuning (--head finetune, docs/finetune.md):
  xfer extract --layers block_13_expand_relu --pool none --data <images> --out <features>
  xfer train --features <features> --head finetune --from block_13_expand_relu --out <head>
  xfer train --head finetune --from input --data <images> --out <head>      (whole network)
--json prints {"event":"step"|"epoch"|"checkpoint"|"stop",...} lines, then the result line.`,
    )
    .action(async (o: Record<string, string | string[] | boolean | undefined>) => {
      if (o.head === 'finetune') {
        const { runFinetune } = await import('./finetune-cmd.js');
        return runFinetune(o);
      }
      const foreign = ['from', 'data', 'lr', 'lrBackbone', 'layerDecay', 'freeze', 'optimizer', 'epochs', 'batch', 'mixup', 'ema', 'batchNorm', 'resume'].filter((k) => o[k] !== undefined);
      if (foreign.length) throw new XferError(`--${foreign[0].replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())} is a fine-tuning option`, { hint: 'use it with --head finetune (other heads take --param key=value)' });
      if (o.features === undefined) throw new XferError("required option '--features <dir>' not specified", { hint: 'pass the feature folder written by `xfer extract`' });
      // The trainer (head implementations, onnxruntime kernels, plots) loads only when a command runs.
      const { setKernelThreads, releaseKernel } = await import('../heads/kernel/matmul.js');
      const { trainHead } = await import('../heads/train.js');
      const kind = String(o.head);
      const params = parseParams(kind, (o.param as string[]) ?? []);
      if (o.C !== undefined) params.C = parseNumber(String(o.C), '--C');
      if (o.classWeight !== undefined) {
        if (o.classWeight !== 'balanced') throw new XferError(`--class-weight: only 'balanced' is supported, got '${String(o.classWeight)}'`);
        params.classWeight = 'balanced';
      }
      if (o.probability) params.probability = true;
      if (o.threads !== undefined) setKernelThreads(parsePositiveInt(String(o.threads), '--threads'));
      const folds = o.folds !== undefined ? parsePositiveInt(String(o.folds), '--folds') : undefined;
      if (folds === 1) throw new XferError('--folds: k-fold CV needs at least 2 folds, got 1', { hint: 'e.g. --folds 5' });
      const seed = parseNonNegativeInt(String(o.seed), '--seed');
      const json = o.json === true;
      const live = !json && !o.quiet && process.stderr.isTTY === true ? progressLine() : undefined;
      const onEvent = json ? (e: TrainEvent) => process.stdout.write(JSON.stringify(e) + '\n') : live?.onEvent;
      try {
        const r = await trainHead({
          features: String(o.features),
          layers: o.layers as string[] | undefined,
          head: kind,
          params,
          transforms: o.transform as string | undefined,
          sweep: o.sweep === true ? true : (o.sweep as string[]).length ? (o.sweep as string[]) : undefined,
          val: o.val !== undefined ? parseNumber(String(o.val), '--val') : undefined,
          folds,
          refit: o.refit as RefitRows | undefined,
          seed,
          out: String(o.out),
          force: o.force === true,
          progress: onEvent,
          warn: (m) => {
            live?.clear();
            process.stderr.write(`warning: ${m}\n`);
          },
        });
        live?.clear();
        if (json) process.stdout.write(JSON.stringify({ event: 'result', ok: true, out: r.dir, ...r.report }) + '\n');
        else {
          const rep = r.report;
          if (rep.sweep) {
            const sw = rep.sweep;
            const at = (v: Record<string, number>): string => sw.params.map((k) => `${k}=${v[k]}`).join(' ');
            if (sw.params.length > 1) process.stdout.write(`grid: ${sw.params.map((k) => `${k} ∈ {${sw.grid[k].join(', ')}}`).join(' × ')} (${sw.points.length} points)\n`);
            process.stdout.write(`sweep (${sw.mode}, ${sw.seconds.toFixed(2)} s): ${sw.points.map((p) => `${at(p.values)} ${pct(p.score)}${p.scores.length > 1 ? ` ± ${pct(p.std)}` : ''}`).join(', ')}; best ${at(sw.bestValues)}\n`);
          }
          if (rep.cv) process.stdout.write(`${rep.cv.folds}-fold CV on train (${rep.cv.rows} rows): accuracy ${pct(rep.cv.mean)} ± ${pct(rep.cv.std)} (folds: ${rep.cv.scores.map(pct).join(', ')})\n`);
          if (rep.selection) process.stdout.write(`selection: ${rep.selection.method}; final head fitted on ${rep.selection.fitOn}${rep.selection.holdout ? `; ${rep.selection.holdout}` : ''}\n`);
          for (const [k, m] of Object.entries(rep.metrics)) process.stdout.write(summary(k, m) + '\n');
          process.stdout.write(`head written to ${r.dir} (report.md, report.json${rep.plots.length ? ', ' + rep.plots.join(', ') : ''}) in ${rep.seconds.toFixed(2)} s\n`);
        }
      } finally {
        live?.clear();
        await releaseKernel();
      }
    });

  program
    .command('eval')
    .description('evaluate a trained head on a feature folder (checks backbone and layers match): report, confusion matrix and misclassified.html')
    .requiredOption('--head <dir>', 'head folder written by `xfer train`')
    .requiredOption('--features <dir>', 'feature folder')
    .option('--layers <names>', 'layer(s), default: those the head was trained on', list)
    .option('--split <name>', 'train | val | test | all (default: test, else val, else all)')
    .option('--out <dir>', 'report folder (default <head>/eval-<split>)')
    .option('--json', 'print the result as JSON on stdout')
    .action(async (o: Record<string, string | string[] | boolean | undefined>) => {
      const { releaseKernel } = await import('../heads/kernel/matmul.js');
      const { evalHead } = await import('../heads/train.js');
      await import('../finetune/head.js'); // fine-tuned heads load like any other
      try {
        const r = await evalHead({ head: String(o.head), features: String(o.features), layers: o.layers as string[] | undefined, split: o.split as string | undefined, out: o.out as string | undefined });
        if (o.json) process.stdout.write(JSON.stringify({ ok: true, out: r.dir, misclassified: r.misclassifiedPage, ...r.report }) + '\n');
        else {
          for (const w of r.report.warnings) process.stderr.write(`warning: ${w}\n`);
          process.stdout.write(summary(Object.keys(r.report.metrics)[0], r.metrics) + `\nreport written to ${r.dir}; misclassified images: ${r.misclassifiedPage}\n`);
        }
      } finally {
        await releaseKernel();
      }
    });
}
