/**
 * How large the batches of a run really are, and whether they fit in memory. A batch never crosses a
 * shard and never holds more inputs than the run has, so on CPU (no padding) the pixel buffers are
 * sized for `min(--batch, rows per shard, inputs)`: `--batch 5000` on 6 images allocates 6 images'
 * room, not 5000. On CUDA every batch is padded to --batch (one input shape), so it is allocated whole.
 */
import os from 'node:os';
import { XferError } from '../errors.js';

/** Images a batch of this run can hold: what its buffers are sized for. */
export function formedBatch(batch: number, rowsPerShard: number, inputs: number, padded: boolean): number {
  return padded ? batch : Math.max(1, Math.min(batch, rowsPerShard, inputs));
}

function gib(bytes: number): string {
  return bytes >= 2 ** 30 ? `${(bytes / 2 ** 30).toFixed(1)} GiB` : `${Math.ceil(bytes / 2 ** 20)} MiB`;
}

/**
 * Refuse (exit 2) a batch whose input memory alone would exceed a quarter of the machine's memory:
 * `held` batches of uint8 pixels (pool, queue, sessions), two batches of decoded images ahead, and
 * the float32 input tensor each session builds (4 bytes a value). Activations come on top.
 */
export function checkBatchMemory(images: number, imageBytes: number, held: number, sessions: number, totalMem = os.totalmem()): void {
  const perImage = imageBytes * (held + 2) + 4 * imageBytes * sessions;
  const need = images * perImage;
  const budget = totalMem / 4;
  if (need <= budget && images * imageBytes <= 2 ** 31) return;
  const max = Math.max(1, Math.min(Math.floor(budget / perImage), Math.floor(2 ** 31 / imageBytes)));
  throw new XferError(`--batch ${images}: the batches in flight need ${gib(need)} for their input images alone, more than a quarter of this machine's ${gib(totalMem)}`, {
    hint: `use --batch ${max} or less (larger batches rarely run faster)`,
  });
}
