/** Integers from flags, job files and environment variables: one set of rules, each error naming where the value came from. */
import { XferError } from '../errors.js';

/** A positive integer written in decimal digits ("32"); anything else is refused naming the flag. */
export function parsePositiveInt(value: string | number, flag: string): number {
  const s = String(value).trim();
  const n = Number(s);
  if (!/^\d+$/.test(s) || !Number.isSafeInteger(n) || n < 1) throw new XferError(`${flag}: expected a positive integer, got "${value}"`);
  return n;
}

/** A non-negative integer ("0", "7"). */
export function parseNonNegativeInt(value: string | number, flag: string): number {
  const s = String(value).trim();
  const n = Number(s);
  if (!/^\d+$/.test(s) || !Number.isSafeInteger(n)) throw new XferError(`${flag}: expected a non-negative integer, got "${value}"`);
  return n;
}

/** The same, as optional: undefined stays undefined. */
export function optionalPositiveInt(value: string | number | undefined, flag: string): number | undefined {
  return value === undefined ? undefined : parsePositiveInt(value, flag);
}
