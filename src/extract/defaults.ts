/** Extraction defaults (a module of their own so the CLI can show them without loading the pipeline). */

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

/** Rows per .npy shard file (fixes the shard boundaries: the same for a run, its resumes and parts). */
export const DEFAULT_ROWS_PER_SHARD = 1024;
