/** Terminal output helpers shared by the CLI commands. */

/** Print rows as an aligned plain-text table on stdout. */
export function printTable(header: string[], rows: string[][]): void {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : (c ?? '').padEnd(widths[i]))).join('  ').trimEnd();
  process.stdout.write(`${line(header)}\n`);
  for (const r of rows) process.stdout.write(`${line(r)}\n`);
}

const shown = new Set<string>();

/**
 * A one-line notice on stderr (kept off stdout so --json output stays parseable). Device notices
 * come from every inference session a command opens; each is printed once per command.
 */
export function notice(msg: string): void {
  if (msg.startsWith('device:')) {
    if (shown.has(msg)) return;
    shown.add(msg);
  }
  process.stderr.write(`${msg}\n`);
}
