/**
 * Model selection: `--sweep C=1e-4..1e4` (log grid, 9 points; `C=1e-4..1e4:5` for 5) or a list
 * `C=0.01,0.1,1`. The sweep itself runs in train.ts (k-fold or the validation split); this file
 * parses the spec and picks the winner.
 */
import { XferError } from '../errors.js';

export interface SweepSpec {
  param: string;
  values: number[];
}

export interface SweepPoint {
  value: number;
  /** Mean validation accuracy over folds (or the single validation split). */
  score: number;
  /** Per-fold accuracies. */
  scores: number[];
  std: number;
  seconds: number;
}

export function parseNumber(s: string, flag: string): number {
  const t = s.trim();
  const v = t === '' ? NaN : Number(t);
  if (!Number.isFinite(v)) throw new XferError(`${flag}: '${s}' is not a number`, { hint: `e.g. ${flag} 1 or ${flag} 1e-3` });
  return v;
}

export function parseSweep(spec: string): SweepSpec {
  const m = /^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.+)$/.exec(spec);
  if (!m) throw new XferError(`--sweep: cannot parse '${spec}'`, { hint: 'use --sweep C=1e-4..1e4 (log grid) or --sweep C=0.01,0.1,1' });
  const param = m[1];
  const rest = m[2].trim();
  const range = /^([^.:][^:]*?)\.\.([^:]+)(?::(\d+))?$/.exec(rest);
  let values: number[];
  if (range) {
    const lo = parseNumber(range[1], `--sweep ${param}`);
    const hi = parseNumber(range[2], `--sweep ${param}`);
    const count = range[3] ? Number(range[3]) : 9;
    if (!(lo > 0 && hi > 0)) throw new XferError(`--sweep ${param}: a log grid needs positive bounds, got ${lo}..${hi}`, { hint: 'e.g. --sweep C=1e-4..1e4' });
    if (count < 1) throw new XferError(`--sweep ${param}: grid size must be ≥ 1`);
    const a = Math.log10(Math.min(lo, hi));
    const b = Math.log10(Math.max(lo, hi));
    values = count === 1 ? [10 ** a] : Array.from({ length: count }, (_, i) => Number((10 ** (a + ((b - a) * i) / (count - 1))).toPrecision(6)));
  } else {
    values = rest.split(',').map((v) => parseNumber(v, `--sweep ${param}`));
  }
  if (values.length === 0) throw new XferError(`--sweep ${param}: no values`, { hint: 'e.g. --sweep C=0.01,0.1,1' });
  return { param, values };
}

/** Best point: highest mean score; ties go to the smaller value (stronger regularisation for C). */
export function bestPoint(points: SweepPoint[]): SweepPoint {
  let best = points[0];
  for (const p of points) if (p.score > best.score + 1e-12 || (Math.abs(p.score - best.score) <= 1e-12 && p.value < best.value)) best = p;
  return best;
}
