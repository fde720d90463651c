/**
 * `xfer extract` and `xfer merge`. Exit codes: 0 done; 3 done but some inputs were skipped
 * (errors.jsonl); 1 the run failed (or --strict stopped at a skipped input); 2 bad input or usage;
 * 130 interrupted (Ctrl-C; continue with --resume).
 */
import { Option, type Command } from 'commander';
import { XferError } from '../errors.js';
import { hasCardFlags, type CardFlags } from '../model/card-flags.js';
import { addCardFlags } from './card-flags.js';
import { configureSharpForBatchDecoding } from './image-process.js';
import { optionalPositiveInt, parseBackground, parsePositiveInt, preprocessFlags } from './args.js';
import type { DeviceOptions, Pool } from '../model/runner.js';
import { parseDevice } from '../model/device.js';
import { DEFAULT_BACKBONE } from '../model/registry.js';
import { DEFAULT_BATCH_CPU, DEFAULT_BATCH_CUDA } from '../runtime/plan.js';
import { DEFAULT_ROWS_PER_SHARD } from '../features/format.js';
import type { ExtractOptions, ExtractSummary } from '../extract/pipeline.js';
import type { ExtractJob } from '../extract/jobs.js';
import { chooseProgressMode, createProgress } from '../extract/progress.js';
import { POOLS, POOL_HELP } from '../model/taps.js';

export const EXIT_SKIPPED = 3;
export const EXIT_INTERRUPTED = 130;

interface ExtractCliOptions {
  model?: string;
  layers?: string;
  pool?: Pool;
  data?: string;
  out?: string;
  batch?: string;
  device?: string;
  threads?: string;
  dtype: 'float32' | 'float16';
  views?: string;
  augment?: string;
  resume?: boolean;
  overwrite?: boolean;
  shard?: string;
  jobs?: string;
  card?: string;
  json?: boolean;
  quiet?: boolean;
  strict?: boolean;
  shardRows: string;
  fastDecode?: boolean;
  applyIcc?: boolean;
  decodeConcurrency?: string;
  backboneThread?: 'worker' | 'inline';
  workers?: string;
  background?: string;
}

/** `where` names the source of a device value other than --device (e.g. a job file's job). */
function deviceOptions(device: string | undefined, threads: number | undefined, where?: string): DeviceOptions {
  if (device !== undefined) {
    try {
      parseDevice(device);
    } catch (e) {
      if (where && e instanceof XferError) throw new XferError(`${where}: "device" ${e.message.replace(/^--device: /, '')}`, { hint: 'fix the job file, or pass --device to override it' });
      throw e;
    }
  }
  return { device: (device ?? 'auto') as DeviceOptions['device'], threads };
}

/** Exit code for a finished (or interrupted) run. */
export function exitCodeFor(s: ExtractSummary): number {
  if (s.interrupted) return EXIT_INTERRUPTED;
  if (s.strictStop) return 1;
  return s.errors > 0 ? EXIT_SKIPPED : 0;
}

export function registerExtractCommands(program: Command): void {
  const extract = program
    .command('extract')
    .description('extract CNN codes of a dataset to a feature folder (docs/feature-format.md): streaming, resumable, shardable')
    .option('--model <id|path>', 'backbone: built-in id (`xfer models`) or path to an .onnx / .tflite file', DEFAULT_BACKBONE)
    .option('--layers <names>', "comma-separated tensor names to tap (`xfer layers <model>`); default: the card's default tap")
    .addOption(new Option('--pool <pool>', `pooling of each tap (default: the card's for its default tap, else avg): ${POOLS.map((p) => `${p} = ${POOL_HELP[p]}`).join('; ')}`).choices(POOLS))
    .option('--data <dir|list>', 'image folder (root/<class>/*.jpg, root/<split>/<class>/..., or flat) or a CSV/JSONL list file')
    .option('--out <featdir>', 'output feature folder ({shard} is replaced by the shard index)')
    .option('--batch <n>', `images per backbone run (default ${DEFAULT_BATCH_CUDA} on CUDA, where the last batch of each shard is padded to it; on CPU, where results are the same at any batch, ${DEFAULT_BATCH_CPU} or the threads per session if more)`)
    .option('--device <device>', 'auto | cpu | cuda | cuda:<id> (auto: CUDA when its provider is installed, else CPU)')
    .option('--threads <n>', 'intra-op threads per inference session (default on CPU: the cores split between 2 to 4 sessions, 1 each on 2 cores; docs/performance.md)')
    .addOption(new Option('--dtype <dtype>', 'feature dtype on disk').choices(['float32', 'float16']).default('float32'))
    .option('--views <k>', 'store K views of every training image, the plain one and K-1 augmented (for fine-tuning; val/test images keep one plain row)')
    .option('--augment <list>', 'with --views: hflip,crop,color (default hflip,crop)')
    .option('--resume', 'continue an interrupted extraction in --out (finished jobs are skipped)')
    .option('--overwrite', 'replace features already in --out')
    .option('--shard <i/n>', 'extract part i of n (0-based) of the sorted input; default from JOB_COMPLETION_INDEX+XFER_SHARDS or SLURM_ARRAY_TASK_ID; combine parts with `xfer merge`')
    .option('--jobs <file>', 'run the jobs of a JSON/YAML job file in sequence (see scripts/jobs/)')
    .option('--card <card.json>', 'model card (preprocessing, default tap) for a model path')
    .option('--json', 'machine-readable progress lines and a final summary on stdout')
    .option('--quiet', 'no progress output')
    .option('--strict', 'stop (exit 1, keeping finished shards) at the first input that cannot be used')
    .option('--shard-rows <n>', 'rows per .npy shard (must match across --resume, --shard parts and merge)', String(DEFAULT_ROWS_PER_SHARD))
    .option('--fast-decode', 'allow JPEG shrink-on-load: faster decoding, features not bit-exact with the reference preprocessing')
    .option('--apply-icc', 'convert images with an embedded ICC profile to sRGB through it (default: pixels as stored, like PIL/torchvision)')
    .option('--background <r,g,b>', 'colour transparent pixels are flattened onto (default 255,255,255)')
    .addOption(new Option('--decode-concurrency <n>', 'images decoded at once').hideHelp())
    .addOption(new Option('--workers <n>', 'inference sessions (measurement)').hideHelp())
    .addOption(new Option('--backbone-thread <where>', 'worker | inline (measurement only)').choices(['worker', 'inline']).hideHelp());
  addCardFlags(extract).action(async (o: ExtractCliOptions & CardFlags, cmd: Command) => {
    await configureSharpForBatchDecoding();
    const explicit = (k: string) => cmd.getOptionValueSource(k) === 'cli';
    const mode = chooseProgressMode(o);
    const controller = new AbortController();
    let interrupts = 0;
    const onSigint = () => {
      interrupts++;
      if (interrupts === 1) {
        controller.abort();
        if (mode !== 'json' && mode !== 'quiet') process.stderr.write('\ninterrupt: finishing the batch in flight, then stopping (Ctrl-C again to quit at once; --resume continues)\n');
      } else {
        process.exit(EXIT_INTERRUPTED);
      }
    };
    process.on('SIGINT', onSigint);
    process.on('SIGTERM', onSigint);
    try {
      const common = {
        resume: o.resume,
        overwrite: o.overwrite,
        shard: o.shard,
        strict: o.strict,
        signal: controller.signal,
        views: optionalPositiveInt(o.views, '--views'),
        augment: o.augment,
        decodeConcurrency: optionalPositiveInt(o.decodeConcurrency, '--decode-concurrency'),
        workers: optionalPositiveInt(o.workers, '--workers'),
        backboneThread: o.backboneThread,
      };
      if (o.jobs !== undefined) {
        const clash = ['model', 'layers', 'pool', 'data', 'out', 'card'].filter(explicit).map((c) => `--${c}`);
        // Card-override flags (--size, --mean, ...) describe one model; a job file names its models.
        if (hasCardFlags(o)) clash.push('card-override flags (--size, --mean, --std, ...)');
        if (clash.length > 0) throw new XferError(`--jobs: ${clash.join(', ')} cannot be combined with a job file (each job names its own)`, { hint: 'put "card" in the job (a card file) instead' });
        const { loadJobFile } = await import('../extract/jobs.js');
        const jobs = await loadJobFile(o.jobs);
        // Every job's options are checked before the first job runs (a bad value fails at once).
        const jobOpts = jobs.map((job) => jobOptions(job, o, explicit, common, o.jobs!));
        let code = 0;
        for (const [i, job] of jobs.entries()) {
          if (controller.signal.aborted) break;
          const progress = createProgress(mode, mode === 'json' ? job.name : undefined);
          if (mode !== 'json' && mode !== 'quiet') process.stderr.write(`job ${i + 1}/${jobs.length}: ${job.name}\n`);
          const s = await runOne(jobOpts[i], progress);
          const c = exitCodeFor(s);
          if (c === EXIT_INTERRUPTED || c === 1) {
            code = c;
            break;
          }
          if (c === EXIT_SKIPPED) code = EXIT_SKIPPED;
        }
        process.exitCode = code;
        return;
      }
      const missing = (['data', 'out'] as const).filter((k) => o[k] === undefined);
      if (missing.length > 0) throw new XferError(`xfer extract: missing ${missing.map((m) => `--${m}`).join(', ')}`, { hint: 'xfer extract --data <dir> --out <featdir> [--model <id|path>] (or --jobs file.yaml)' });
      const threads = optionalPositiveInt(o.threads, '--threads');
      const opts: ExtractOptions = {
        ...common,
        model: o.model!,
        card: o.card,
        cardFlags: o,
        layers: o.layers === undefined ? undefined : splitLayers(o.layers),
        pool: o.pool,
        data: o.data!,
        out: o.out!,
        batch: optionalPositiveInt(o.batch, '--batch'),
        dtype: o.dtype,
        device: deviceOptions(o.device, threads),
        rowsPerShard: parsePositiveInt(o.shardRows, '--shard-rows'),
        preprocess: preprocessFlags({ fastDecode: o.fastDecode, applyIcc: o.applyIcc, background: parseBackground(o.background) }),
      };
      const s = await runOne(opts, createProgress(mode));
      process.exitCode = exitCodeFor(s);
    } finally {
      process.off('SIGINT', onSigint);
      process.off('SIGTERM', onSigint);
    }
  });

  program
    .command('merge')
    .description('combine the feature folders of `xfer extract --shard i/n` runs into one, identical to a single run')
    .argument('<out>', 'merged feature folder to create')
    .argument('<parts...>', 'the parts\' --out folders (any order)')
    .option('--overwrite', 'replace features already in <out> (an unfinished merge of the same parts is started over without it)')
    .option('--json', 'print the summary as JSON')
    .action(async (out: string, parts: string[], o: { overwrite?: boolean; json?: boolean }) => {
      const { mergeFeatureFolders } = await import('../extract/merge.js');
      const s = await mergeFeatureFolders(out, parts, { overwrite: o.overwrite });
      if (o.json) process.stdout.write(`${JSON.stringify({ event: 'summary', ...s })}\n`);
      else process.stderr.write(`${s.out}: merged ${s.parts} part(s): ${s.images} images in ${s.shards} shard(s), ${s.errors} skipped\n`);
      process.exitCode = s.errors > 0 ? EXIT_SKIPPED : 0;
    });
}

function splitLayers(v: string): string[] {
  const l = v.split(',').map((s) => s.trim()).filter(Boolean);
  if (l.length === 0) throw new XferError('--layers: no layer names given', { hint: 'e.g. --layers out_relu,block_13_expand_relu' });
  return l;
}

/** Options for one job: explicit CLI flags > the job's values > defaults. */
function jobOptions(job: ExtractJob, o: ExtractCliOptions, explicit: (k: string) => boolean, common: Partial<ExtractOptions>, jobFile: string): ExtractOptions {
  const threads = explicit('threads') ? optionalPositiveInt(o.threads, '--threads') : job.threads;
  const device = explicit('device') ? o.device : job.device;
  return {
    ...common,
    model: job.model,
    card: job.card,
    layers: job.layers,
    pool: job.pool,
    data: job.data,
    out: job.out,
    batch: explicit('batch') ? optionalPositiveInt(o.batch, '--batch') : job.batch,
    dtype: explicit('dtype') ? o.dtype : (job.dtype ?? o.dtype),
    device: deviceOptions(device, threads, explicit('device') ? undefined : `--jobs ${jobFile}: job "${job.name}"`),
    rowsPerShard: explicit('shardRows') ? parsePositiveInt(o.shardRows, '--shard-rows') : (job.shardRows ?? parsePositiveInt(o.shardRows, '--shard-rows')),
    preprocess: preprocessFlags({
      fastDecode: explicit('fastDecode') ? o.fastDecode : job.fastDecode,
      applyIcc: explicit('applyIcc') ? o.applyIcc : job.applyIcc,
      background: parseBackground(o.background),
    }),
  };
}

async function runOne(opts: ExtractOptions, progress: ReturnType<typeof createProgress>): Promise<ExtractSummary> {
  try {
    const { extractFeatures } = await import('../extract/pipeline.js');
    const s = await extractFeatures({ ...opts, onEvent: (e) => progress.onEvent(e) });
    progress.summary(s);
    return s;
  } finally {
    progress.stop();
  }
}
