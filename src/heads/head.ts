/**
 * The one head interface (scikit-learn style). The constructor only stores parameters; `fit(X, y, k)`
 * learns and resolves to the head; `decisionFunction` gives n×k scores, `predictProba` n×k
 * probabilities, `predict` class indices in [0, k). `toState()` / `headFromState()` round-trip a
 * fitted head through JSON + named float32 arrays, so the trainer, sweeps, reports and save/load
 * never special-case a head. Class indices here are the head's own 0..k-1; the mapping to the
 * feature folder's labels lives in the saved model (see model.ts).
 */
import { XferError } from '../errors.js';
import type { Matrix } from './matrix.js';

export const HEAD_KINDS = ['linear', 'svm', 'svm-rbf', 'mlp'] as const;
export type HeadKind = (typeof HEAD_KINDS)[number];

export type ParamValue = number | string | boolean | number[] | null;
export type HeadParams = Record<string, ParamValue>;

export interface FitEvent {
  phase: string;
  iter: number;
  loss?: number;
  valAcc?: number;
  msg?: string;
}

export interface FitContext {
  /** Called now and then during long fits (iterations, loss, val accuracy). */
  progress?: (e: FitEvent) => void;
  /** Warnings (e.g. no convergence, too many samples for a kernel SVM). */
  warn?: (msg: string) => void;
  /**
   * A fitted head of the same kind whose solution is a good starting point (the neighbouring value
   * of a sweep). Heads that cannot use it ignore it; it never changes the optimum, only the path.
   */
  warmStart?: Head;
}

export interface HeadState {
  kind: HeadKind;
  params: HeadParams;
  nClasses: number;
  nFeatures: number;
  /** Small JSON-able facts about the fit (iterations, converged, learning curves...). */
  info: Record<string, unknown>;
  /** Learned arrays (saved as .npy). */
  arrays: Record<string, Float32Array | Int32Array>;
  shapes: Record<string, number[]>;
}

export interface Head {
  readonly kind: HeadKind;
  readonly params: HeadParams;
  /** Number of classes / input width after fit. */
  nClasses: number;
  nFeatures: number;
  /** Whether predictProba gives calibrated probabilities (log-loss is reported only then). */
  readonly probabilistic: boolean;
  info: Record<string, unknown>;
  fit(X: Matrix, y: Int32Array, nClasses: number, ctx?: FitContext): Promise<this>;
  decisionFunction(X: Matrix): Promise<Float32Array>;
  predictProba(X: Matrix): Promise<Float32Array>;
  predict(X: Matrix): Promise<Int32Array>;
  toState(): HeadState;
}

type Factory = {
  create(params: HeadParams): Head;
  fromState(s: HeadState): Head;
  defaults: HeadParams;
  defaultTransforms: string;
  /** The grid `--sweep` with no value searches, e.g. `C=1e-4..1e4:10`. */
  defaultSweep?: string;
};
const registry = new Map<HeadKind, Factory>();

export function registerHead(kind: HeadKind, f: Factory): void {
  registry.set(kind, f);
}

function factory(kind: string): Factory {
  const f = registry.get(kind as HeadKind);
  if (!f) throw new XferError(`--head: unknown head '${kind}'`, { hint: `use one of ${HEAD_KINDS.join(', ')}` });
  return f;
}

export function headDefaults(kind: string): HeadParams {
  return { ...factory(kind).defaults };
}

export function defaultTransformsFor(kind: string): string {
  return factory(kind).defaultTransforms;
}

export function defaultSweepFor(kind: string): string | undefined {
  return factory(kind).defaultSweep;
}

/** Create an unfitted head; unknown params are refused, known ones are type-checked. */
export function createHead(kind: string, params: HeadParams = {}): Head {
  const f = factory(kind);
  const merged: HeadParams = { ...f.defaults };
  for (const [k, v] of Object.entries(params)) {
    if (!(k in f.defaults)) throw new XferError(`head ${kind}: unknown parameter '${k}'`, { hint: `known: ${Object.keys(f.defaults).join(', ')}` });
    const def = f.defaults[k];
    if (typeof def === 'number' && (typeof v !== 'number' || !Number.isFinite(v))) {
      throw new XferError(`head ${kind}: parameter ${k} must be a finite number, got '${String(v)}'`, { hint: `e.g. ${k}=${def}` });
    }
    merged[k] = v;
  }
  if (typeof merged.C === 'number' && !(merged.C > 0)) throw new XferError(`head ${kind}: C must be > 0, got ${merged.C}`, { hint: 'e.g. --C 1' });
  return f.create(merged);
}

export function headFromState(s: HeadState): Head {
  return factory(s.kind).fromState(s);
}

/** Shared helpers for heads. */
export function num(p: HeadParams, k: string): number {
  const v = p[k];
  if (typeof v !== 'number') throw new XferError(`head parameter ${k} must be a number, got '${String(v)}'`);
  return v;
}

export function checkFitInput(kind: string, X: Matrix, y: Int32Array, k: number): void {
  if (X.rows !== y.length) throw new Error(`${kind}.fit: ${X.rows} rows but ${y.length} labels`);
  if (X.rows === 0) throw new XferError(`${kind}: no training rows`, { hint: 'check the feature folder and its splits' });
  if (k < 2) throw new XferError(`${kind}: training data has a single class`, { hint: 'a classifier needs at least two classes with labelled rows' });
  for (let i = 0; i < y.length; i++) if (y[i] < 0 || y[i] >= k) throw new Error(`${kind}.fit: label ${y[i]} out of range [0, ${k})`);
}

export function checkPredictInput(h: Head, X: Matrix): void {
  if (h.nFeatures === 0) throw new Error(`${h.kind}: predict before fit`);
  if (X.cols !== h.nFeatures) {
    throw new XferError(`features have ${X.cols} columns but the ${h.kind} head was trained on ${h.nFeatures}`, { hint: 'use the same backbone, layers and pooling the head was trained on' });
  }
}
