/** Extraction defaults (a module of their own so the CLI can show them without loading the pipeline). */
import os from 'node:os';
import type { DeviceOptions } from '../model/device.js';
import { cudaProviderInstalled } from '../model/provider.js';

/**
 * Default images per backbone run: 32 on CUDA (a full GPU batch), 2 on CPU. On CPU outputs are the
 * same bit for bit at any batch (per image, checked for every model the tests use), so batch is only
 * a speed knob there, and small batches win: a run's activations (mobilenet_v2: ~4.8 MB per image in
 * its widest layers) stay in the shared L3 cache with two sessions and the decoder beside them. On
 * this project's 2-core machine inference alone ran at 70 img/s at batch 1–2 against 60 at batch 8,
 * and end to end batch 2 measured +8 to +9 % over 8 (batch 8 had measured +6 to +16 % over 32);
 * batch 1 ties with 2 but doubles the per-batch messages and writes (README "Performance").
 */
export const DEFAULT_BATCH_CUDA = 32;
export const DEFAULT_BATCH_CPU = 2;

export function defaultBatch(provider: 'cpu' | 'cuda'): number {
  return provider === 'cuda' ? DEFAULT_BATCH_CUDA : DEFAULT_BATCH_CPU;
}


export interface InferencePlanOptions {
  device?: DeviceOptions;
  /** Inference sessions (worker threads); default below. */
  workers?: number;
  /** 'inline': one session on the calling thread (measurements). */
  backboneThread?: 'worker' | 'inline';
}

/**
 * How inference uses the cores (extraction and prediction). CPU: two sessions of one thread each
 * on 2 cores (measured: ~10 % more images/s than one session of 1 or 2 threads, because decoding
 * shares the cores), and generally two sessions splitting the cores (one core left for decoding
 * above 4 cores); GPU (`cuda[:id]`, or `auto` where the CUDA provider is installed): one session.
 * `--threads` sets the threads per session, `workers` (API; hidden `--workers`) the number of sessions;
 * `gpu` says whether inference runs on a GPU.
 * `machine` is for tests (default: this machine's cores and CUDA provider).
 */
export function inferencePlan(
  opts: InferencePlanOptions,
  machine: { cores?: number; cudaInstalled?: boolean } = {},
): { workers: number; threads: number; gpu: boolean } {
  const cores = machine.cores ?? os.availableParallelism();
  const dev = opts.device?.device ?? 'auto';
  const gpu = dev.startsWith('cuda') || (dev === 'auto' && (machine.cudaInstalled ?? cudaProviderInstalled()));
  const workers = opts.backboneThread === 'inline' ? 1 : (opts.workers ?? (gpu || cores < 2 ? 1 : 2));
  const threads = opts.device?.threads ?? Math.max(1, Math.floor((cores - (cores > 4 ? 1 : 0)) / workers));
  return { workers, threads, gpu };
}
