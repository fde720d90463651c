/**
 * Preparing a tapped backbone: resolve the model (unless the caller did), and get its tap model from
 * the cache or build it (tap-cache.ts). Light on purpose: on a cache hit neither the tap-model
 * builder, the ONNX schema nor onnxruntime loads in the calling thread (extraction prepares on the
 * main thread and opens sessions in worker threads).
 */
import { resolveBackbone, requireCard, type ResolvedBackbone } from './registry.js';
import type { CardFlags } from './card-flags.js';
import { cachedTapBuild } from './tap-cache.js';
import type { TapRequest } from './taps.js';
import type { PreparedBackbone } from './tapped.js';

export interface PrepareOptions {
  /** The model already resolved (file, sha256, card) — skips resolving and hashing it again. */
  resolved?: ResolvedBackbone;
  card?: string;
  /** Card fields from command-line flags (see card-flags.ts). */
  cardFlags?: CardFlags;
  taps: TapRequest[];
  onNotice?: (msg: string) => void;
}

/** Resolve the model (unless given) and get its tap model; see PreparedBackbone. */
export async function prepareTappedBackbone(spec: string, opts: PrepareOptions): Promise<PreparedBackbone> {
  const notice = opts.onNotice ?? (() => {});
  const b = opts.resolved ?? (await resolveBackbone(spec, { card: opts.card, cardFlags: opts.cardFlags, onNotice: notice }));
  const card = requireCard(b, 'feature extraction');
  const built = await cachedTapBuild({ sha256: b.sha256, file: b.file, card, taps: opts.taps, spec }, notice);
  return { spec, id: b.id, sha256: b.sha256, externalSha256: built.externalSha256, file: b.file, card, input: built.input, taps: built.taps, fixedBatch: built.fixedBatch, model: built.model };
}
