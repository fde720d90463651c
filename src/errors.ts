/**
 * One error type for every input a user can get wrong. `message` is a single line naming the file
 * or flag and what was wrong; `hint` says what to do. The CLI prints `error: <message>\n  hint: <hint>`
 * and exits non-zero without a stack trace unless --verbose.
 */
export class XferError extends Error {
  readonly hint?: string;
  readonly code: string;
  /** Exit code the CLI uses (2 = bad input/usage, 1 = run failed). */
  readonly exitCode: number;

  constructor(message: string, opts: { hint?: string; code?: string; cause?: unknown; exitCode?: number } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'XferError';
    this.hint = opts.hint;
    this.code = opts.code ?? 'EXFER';
    this.exitCode = opts.exitCode ?? 2;
  }
}

export function isXferError(e: unknown): e is XferError {
  return e instanceof XferError;
}

/** Format any error for the terminal: one line (plus hint) for XferError, message for others. */
export function formatError(e: unknown, verbose = false): string {
  if (isXferError(e)) {
    let s = `error: ${e.message}`;
    if (e.hint) s += `\n  hint: ${e.hint}`;
    if (verbose && e.stack) s += `\n${e.stack}`;
    if (verbose && e.cause instanceof Error) s += `\ncaused by: ${e.cause.stack ?? e.cause.message}`;
    return s;
  }
  const err = e instanceof Error ? e : new Error(String(e));
  return verbose ? `error: ${err.stack ?? err.message}` : `error: ${err.message}\n  (run with --verbose for the stack trace)`;
}
