/**
 * How a run uses the machine: inference sessions × intra-op threads, images per batch, images decoded
 * at once. One place for the defaults of extract, predict and classify (a module of its own so the
 * CLI can show them without loading the pipeline). docs/performance.md ("Defaults") gives the
 * reasoning and the measurements behind each.
 */
import os from 'node:os';
import type { DeviceOptions } from '../model/device.js';
import { cudaProviderInstalled } from '../model/provider.js';

/** Images per backbone run on CUDA: a GPU needs large batches to be busy. */
export const DEFAULT_BATCH_CUDA = 32;
/** Images per backbone run for a single-threaded CPU session (a session with t threads gets max(2, t)). */
export const DEFAULT_BATCH_CPU = 2;
/** CPU sessions are at most this many: each holds its own copy of the weights. */
export const MAX_CPU_SESSIONS = 4;
/** Threads a session aims for on a CPU with many cores (intra-op parallelism at small batches stops paying beyond a few). */
export const CPU_THREADS_PER_SESSION = 4;
/** CPU threads of a GPU session: they run only the ops the GPU provider lacks, and the cores are needed for decoding. */
export const GPU_SESSION_THREADS = 4;

/**
 * Images per backbone run: 32 on CUDA; on CPU, where outputs are the same at any batch, max(2, threads
 * per session) — a small batch keeps a run's activations in the cache, and a session with t threads
 * needs about t images of work to keep them busy.
 */
export function defaultBatch(provider: 'cpu' | 'cuda', threadsPerSession = 1): number {
  return provider === 'cuda' ? DEFAULT_BATCH_CUDA : Math.max(DEFAULT_BATCH_CPU, threadsPerSession);
}

/**
 * Images decoded at once: one per core and one more, so a decode is always queued while others
 * finish. Each runs on a libuv thread (sharp), so the pool must be at least as large: bin/xfer.js
 * sizes it to the cores; a library caller on a large machine sets UV_THREADPOOL_SIZE itself.
 */
export function defaultDecodeConcurrency(cores = os.availableParallelism()): number {
  return cores + 1;
}

export interface InferencePlanOptions {
  device?: DeviceOptions;
  /** Inference sessions (worker threads); default below. */
  workers?: number;
  /** 'inline': one session on the calling thread (measurements). */
  backboneThread?: 'worker' | 'inline';
}

/**
 * Sessions × threads. CPU: at least two sessions (while one waits for its next batch the other runs;
 * on 2 cores two single-threaded sessions beat one two-threaded one), about CPU_THREADS_PER_SESSION
 * threads each, at most MAX_CPU_SESSIONS, together as many threads as cores (decoding shares the
 * cores: ORT's threads do not spin, so they yield to it). 2 cores: 2 × 1; 4: 2 × 2; 8: 2 × 4;
 * 16: 4 × 4; 64: 4 × 16. GPU (`cuda[:id]`, or `auto` where the CUDA provider is installed): one
 * session. `--threads` sets the threads per session, `workers` (API; hidden `--workers`) the sessions.
 * `machine` is for tests (default: this machine's cores and CUDA provider).
 */
export function inferencePlan(
  opts: InferencePlanOptions,
  machine: { cores?: number; cudaInstalled?: boolean } = {},
): { workers: number; threads: number; gpu: boolean } {
  const cores = Math.max(1, machine.cores ?? os.availableParallelism());
  const dev = opts.device?.device ?? 'auto';
  const gpu = dev.startsWith('cuda') || (dev === 'auto' && (machine.cudaInstalled ?? cudaProviderInstalled()));
  const cpuSessions = cores < 2 ? 1 : Math.min(MAX_CPU_SESSIONS, Math.max(2, Math.floor(cores / CPU_THREADS_PER_SESSION)));
  const workers = opts.backboneThread === 'inline' ? 1 : (opts.workers ?? (gpu ? 1 : cpuSessions));
  const threads = opts.device?.threads ?? (gpu ? Math.min(GPU_SESSION_THREADS, cores) : Math.max(1, Math.floor(cores / workers)));
  return { workers, threads, gpu };
}
