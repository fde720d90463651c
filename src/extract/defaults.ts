/** Extraction defaults (a module of their own so the CLI can show them without loading the pipeline). */

/**
 * Default images per backbone run: 32 on CUDA (a full GPU batch), 8 on CPU. On CPU a run's
 * activations stay in cache at small batches and outputs are the same bit for bit at any batch (per
 * image, checked for every model the tests use), so batch is only a speed knob there: batch 8
 * measured +6 to +16 % end to end over 32 on this project's 2-core machine (README "Performance").
 */
export const DEFAULT_BATCH_CUDA = 32;
export const DEFAULT_BATCH_CPU = 8;

export function defaultBatch(provider: 'cpu' | 'cuda'): number {
  return provider === 'cuda' ? DEFAULT_BATCH_CUDA : DEFAULT_BATCH_CPU;
}

/** Rows per .npy shard file (fixes the shard boundaries: the same for a run, its resumes and parts). */
export const DEFAULT_ROWS_PER_SHARD = 1024;
