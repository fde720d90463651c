/**
 * Deterministic work splitting. A run over N sorted inputs has K = ceil(N / R) shards, shard k
 * holding inputs [k·R, (k+1)·R) (R = rows per shard). `--shard i/n` gives process i the contiguous
 * block of whole shards [⌊K·i/n⌋, ⌊K·(i+1)/n⌋), so each part's .npy files are byte-for-byte the
 * files a single run writes for those shards, and `xfer merge` only renumbers.
 */
import { XferError } from '../errors.js';
import { parseNonNegativeInt, parsePositiveInt } from '../util/parse-int.js';

export interface ShardSpec {
  index: number;
  count: number;
  /** Where the spec came from (for messages). */
  source: string;
}

/** Parse "i/n" (0 <= i < n). */
export function parseShardSpec(value: string, source = '--shard'): ShardSpec {
  const m = /^\s*(\d+)\s*\/\s*(\d+)\s*$/.exec(value);
  if (!m) throw new XferError(`${source}: expected i/n (e.g. 0/4), got "${value}"`, { hint: 'shards are numbered from 0: --shard 0/4 … --shard 3/4' });
  const index = Number(m[1]);
  const count = Number(m[2]);
  if (count < 1 || index >= count) throw new XferError(`${source}: shard index must be in 0..n-1 and n >= 1, got ${index}/${count}`, { hint: 'shards are numbered from 0: --shard 0/4 … --shard 3/4' });
  return { index, count, source };
}

function envInt(env: NodeJS.ProcessEnv, name: string, positive = false): number | null {
  const v = env[name];
  if (v === undefined || v === '') return null;
  const flag = `environment variable ${name}`;
  return positive ? parsePositiveInt(v, flag) : parseNonNegativeInt(v, flag);
}

/**
 * The shard this process works on: `--shard i/n`; else a Kubernetes Indexed Job
 * (JOB_COMPLETION_INDEX, with the part count from XFER_SHARDS); else a Slurm job array
 * ((SLURM_ARRAY_TASK_ID − SLURM_ARRAY_TASK_MIN) / SLURM_ARRAY_TASK_STEP of SLURM_ARRAY_TASK_COUNT, for
 * `--array=MIN-MAX:STEP`); else null (the whole input).
 * XFER_SHARD="i/n" is accepted too. Set XFER_NO_AUTO_SHARD=1 to ignore scheduler variables.
 */
export function resolveShardSpec(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): ShardSpec | null {
  if (flag !== undefined) return parseShardSpec(flag, '--shard');
  if (env.XFER_SHARD) return parseShardSpec(env.XFER_SHARD, 'XFER_SHARD');
  if (env.XFER_NO_AUTO_SHARD === '1') return null;
  const k8s = envInt(env, 'JOB_COMPLETION_INDEX');
  if (k8s !== null) {
    const n = envInt(env, 'XFER_SHARDS');
    if (n === null) {
      throw new XferError('JOB_COMPLETION_INDEX is set (Kubernetes Indexed Job) but XFER_SHARDS is not', {
        hint: 'set env XFER_SHARDS to the Job\'s completions (see docs/kubernetes-job.yaml), pass --shard i/n, or set XFER_NO_AUTO_SHARD=1',
      });
    }
    return parseShardSpec(`${k8s}/${n}`, `JOB_COMPLETION_INDEX=${k8s} of XFER_SHARDS=${n}`);
  }
  const slurmId = envInt(env, 'SLURM_ARRAY_TASK_ID');
  if (slurmId !== null) {
    const n = envInt(env, 'SLURM_ARRAY_TASK_COUNT');
    const min = envInt(env, 'SLURM_ARRAY_TASK_MIN') ?? 0;
    const step = envInt(env, 'SLURM_ARRAY_TASK_STEP', true) ?? 1;
    if (n === null) {
      throw new XferError('SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not', { hint: 'pass --shard i/n explicitly, or set XFER_NO_AUTO_SHARD=1' });
    }
    if (slurmId < min) {
      throw new XferError(`SLURM_ARRAY_TASK_ID=${slurmId} is below SLURM_ARRAY_TASK_MIN=${min}`, { hint: 'the Slurm array variables do not fit together; pass --shard i/n explicitly, or set XFER_NO_AUTO_SHARD=1' });
    }
    if ((slurmId - min) % step !== 0) {
      throw new XferError(`SLURM_ARRAY_TASK_ID=${slurmId} is not MIN + k·STEP (SLURM_ARRAY_TASK_MIN=${min}, SLURM_ARRAY_TASK_STEP=${step})`, {
        hint: 'xfer supports arrays of the form --array=MIN-MAX[:STEP]; for other index lists pass --shard i/n explicitly',
      });
    }
    const index = (slurmId - min) / step;
    const src = `SLURM_ARRAY_TASK_ID=${slurmId} (min ${min}${step !== 1 ? `, step ${step}` : ''}) of SLURM_ARRAY_TASK_COUNT=${n}`;
    return parseShardSpec(`${index}/${n}`, src);
  }
  return null;
}

export interface ShardRange {
  /** Global shard numbers [firstShard, firstShard + shards). */
  firstShard: number;
  shards: number;
  totalShards: number;
  /** Input positions [firstItem, firstItem + items) of the sorted list. */
  firstItem: number;
  items: number;
}

/** Which shards and inputs part `spec` of `nItems` inputs covers (the whole run when spec is null). */
export function shardRange(nItems: number, rowsPerShard: number, spec: ShardSpec | null): ShardRange {
  if (!(Number.isInteger(rowsPerShard) && rowsPerShard > 0)) throw new Error(`rows per shard must be a positive integer, got ${rowsPerShard}`);
  const total = Math.ceil(nItems / rowsPerShard);
  const lo = spec ? Math.floor((total * spec.index) / spec.count) : 0;
  const hi = spec ? Math.floor((total * (spec.index + 1)) / spec.count) : total;
  const firstItem = Math.min(lo * rowsPerShard, nItems);
  const end = Math.min(hi * rowsPerShard, nItems);
  return { firstShard: lo, shards: hi - lo, totalShards: total, firstItem, items: end - firstItem };
}

/** Replace `{shard}` (→ i), `{shards}` (→ n) in an --out path. */
export function expandOutPattern(out: string, spec: ShardSpec | null): string {
  if (!/\{shards?\}/.test(out)) return out;
  if (!spec) throw new XferError(`--out ${out}: uses {shard} but no --shard i/n (or scheduler index) is set`);
  return out.replace(/\{shard\}/g, String(spec.index)).replace(/\{shards\}/g, String(spec.count));
}
