/** Parsing of numeric command-line values, one set of rules for every command. */
import { XferError } from '../errors.js';
import type { PreprocessOverrides } from '../image/plan.js';
import { parsePositiveInt } from '../util/parse-int.js';

export { optionalPositiveInt, parseNonNegativeInt, parsePositiveInt } from '../util/parse-int.js';

/** A commander argument parser for positive integers (`.option('--top <k>', ..., positiveIntArg('--top'))`). */
export function positiveIntArg(flag: string): (value: string) => number {
  return (value: string) => parsePositiveInt(value, flag);
}

/** Preprocessing overrides from the decode flags (--fast-decode, --apply-icc, --background); undefined when none is set. */
export function preprocessFlags(f: { fastDecode?: boolean; applyIcc?: boolean; background?: [number, number, number] }): PreprocessOverrides | undefined {
  if (!f.fastDecode && !f.applyIcc && !f.background) return undefined;
  return { ...(f.fastDecode ? { shrinkOnLoad: true } : {}), ...(f.applyIcc ? { applyIcc: true } : {}), ...(f.background ? { background: f.background } : {}) };
}

/** `--background r,g,b`: the colour transparent pixels are flattened onto. */
export function parseBackground(v: string | undefined): [number, number, number] | undefined {
  if (v === undefined) return undefined;
  const parts = v.split(',').map((s) => s.trim());
  if (parts.length !== 3 || !parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) <= 255)) {
    throw new XferError(`--background: expected r,g,b with three integers 0..255, got "${v}"`, { hint: 'e.g. --background 255,255,255 (white, the default) or 0,0,0' });
  }
  return [Number(parts[0]), Number(parts[1]), Number(parts[2])];
}

/**
 * Image arguments must exist: a path that is not there is a usage error (exit 2), told before any
 * model loads; files that exist but cannot be decoded are skipped per image (exit 3).
 */
export async function requireExistingPaths(paths: string[], command: string): Promise<void> {
  const { stat } = await import('node:fs/promises');
  for (const p of paths) {
    try {
      await stat(p);
    } catch {
      throw new XferError(`xfer ${command}: ${p}: no such file or folder`, { hint: 'pass image files or folders that exist' });
    }
  }
}
