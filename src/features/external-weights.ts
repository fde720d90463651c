/**
 * Comparing the digests of a model's external weight files (onnx/io.ts externalWeightsDigest) as
 * feature folders and heads record them: a string, null for a model without external weights, or
 * undefined where the record predates them (then it agrees with anything, as the .onnx sha256 did).
 */
export type ExternalWeights = string | null | undefined;

/** Whether two recorded digests name the same weights (an unrecorded one agrees). */
export function sameExternalWeights(a: ExternalWeights, b: ExternalWeights): boolean {
  return a === undefined || b === undefined || a === b;
}

/** A digest for messages: "sha256 <12 hex>", or "none". */
export function externalWeightsLabel(h: ExternalWeights): string {
  return h ? `sha256 ${h.slice(0, 12)}` : 'none';
}
