/**
 * Model selection: `--sweep C=1e-4..1e4` (log grid, 9 points; `C=1e-4..1e4:5` for 5) or a list
 * `C=0.01,0.1,1`; repeated (`--sweep C=… --sweep gamma=…`) the values form a grid (every C with
 * every gamma, as GridSearchCV); `--sweep` alone uses the head's default grid (C: 10 log-spaced
 * values 1e-4..1e4, as LogisticRegressionCV's Cs=10). The sweep itself runs in train.ts (k-fold or
 * the validation split); this file parses the specs, builds the grid and picks the winner.
 */
import { XferError } from '../errors.js';

export interface SweepSpec {
  param: string;
  values: number[];
}

/** A grid: the cartesian product of its axes (the last axis varies fastest). */
export interface SweepGrid {
  axes: SweepSpec[];
}

export interface SweepPoint {
  /** The first axis's value (the only one for a one-parameter sweep). */
  value: number;
  /** Every axis's value at this point. */
  values: Record<string, number>;
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

/**
 * `--sweep` given as strings (repeatable) or `true` (no value: the head's default grid); an axis
 * named twice is refused. `defaultSpec` is the head's default (e.g. `C=1e-4..1e4:10`).
 */
export function parseSweeps(specs: string | readonly string[] | true, defaultSpec: string | undefined, kind: string): SweepGrid {
  const list = specs === true ? [] : typeof specs === 'string' ? [specs] : [...specs];
  if (list.length === 0) {
    if (!defaultSpec) throw new XferError(`--sweep: head ${kind} has no default grid`, { hint: 'name one, e.g. --sweep lr=1e-4..1e-2:3' });
    list.push(defaultSpec);
  }
  const axes = list.map(parseSweep);
  const seen = new Set<string>();
  for (const a of axes) {
    if (seen.has(a.param)) throw new XferError(`--sweep: parameter '${a.param}' is given twice`, { hint: `give each parameter once; repeated --sweep flags with different parameters form a grid` });
    seen.add(a.param);
  }
  return { axes };
}

/** Every point of the grid as { param: value }, the last axis varying fastest. */
export function gridPoints(g: SweepGrid): Record<string, number>[] {
  let out: Record<string, number>[] = [{}];
  for (const a of g.axes) out = out.flatMap((p) => a.values.map((v) => ({ ...p, [a.param]: v })));
  return out;
}

/** "C" or "C × gamma". */
export function gridName(g: SweepGrid): string {
  return g.axes.map((a) => a.param).join(' × ');
}

/** Best point: highest mean score; ties go to the smaller values, first axis first (stronger regularisation for C). */
export function bestPoint(points: SweepPoint[]): SweepPoint {
  const smaller = (a: SweepPoint, b: SweepPoint): boolean => {
    for (const k of Object.keys(a.values)) if (a.values[k] !== b.values[k]) return a.values[k] < b.values[k];
    return false;
  };
  let best = points[0];
  for (const p of points) if (p.score > best.score + 1e-12 || (Math.abs(p.score - best.score) <= 1e-12 && smaller(p, best))) best = p;
  return best;
}
