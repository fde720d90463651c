/**
 * The one head interface (scikit-learn style). The constructor only stores parameters (checked
 * against the head's constraint table by `createHead`); `fit(X, y, k?)` learns (classes included)
 * and resolves to the head; an unfitted head refuses to predict or export (XferError); `decisionFunction` gives n×k scores, `predictProba` n×k
 * probabilities, `predict` class indices in [0, k). `toState()` / `headFromState()` round-trip a
 * fitted head through JSON + named float32 arrays, so the trainer, sweeps, reports and save/load
 * never special-case a head. Class indices here are the head's own 0..k-1; the mapping to the
 * feature folder's labels lives in the saved model (see model.ts).
 */
import { XferError } from '../errors.js';
import type { Matrix } from './matrix.js';
import type { GraphPart, OnnxHeadOutputs } from '../onnx/graph-part.js';

export const HEAD_KINDS = ['linear', 'svm', 'svm-rbf', 'mlp', 'knn'] as const;
/** Heads fitted on features, plus `finetune` (trained by src/finetune/, registered when that is loaded). */
export type HeadKind = (typeof HEAD_KINDS)[number] | 'finetune';

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
  /** Opaque files saved as they are beside head.json (a fine-tuned head's ONNX graph). */
  files?: Record<string, Uint8Array>;
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
  /** Learn from rows X with labels y in 0..k−1; k is learned from y unless `nClasses` is given. */
  fit(X: Matrix, y: Int32Array, nClasses?: number, ctx?: FitContext): Promise<this>;
  decisionFunction(X: Matrix): Promise<Float32Array>;
  predictProba(X: Matrix): Promise<Float32Array>;
  predict(X: Matrix): Promise<Int32Array>;
  toState(): HeadState;
  /**
   * Append this fitted head's ONNX nodes to `g`: x [N, nFeatures] → scores (= decisionFunction)
   * and probabilities (= predictProba). The exporter knows no head kind; each head builds itself.
   */
  toOnnx(g: GraphPart, x: string): OnnxHeadOutputs;
}

/**
 * One parameter's constraint (scikit-learn's `_parameter_constraints`): the value must match one of
 * `types`; numbers are then checked against the bounds, strings against `values`, lists against
 * `length` and the bounds of their items. `default` is used when the parameter is not given.
 */
export interface ParamRule {
  default: ParamValue;
  types: readonly ('number' | 'int' | 'bool' | 'string' | 'null' | 'ints')[];
  /** Inclusive / exclusive bounds for numbers (and for each item of 'ints'). */
  min?: number;
  gt?: number;
  max?: number;
  lt?: number;
  /** Allowed strings. */
  values?: readonly string[];
  /** Allowed list length [lo, hi] for 'ints'. */
  length?: readonly [number, number];
}
export type ParamTable = Record<string, ParamRule>;

type Factory = {
  create(params: HeadParams): Head;
  fromState(s: HeadState): Head;
  /** The constraint table (preferred); a head registered with `defaults` only gets rules inferred from the default's type. */
  params?: ParamTable;
  defaults?: HeadParams;
  defaultTransforms: string;
  /** The grid `--sweep` with no value searches, e.g. `C=1e-4..1e4:10`. */
  defaultSweep?: string;
};
const registry = new Map<HeadKind, Factory>();

export function registerHead(kind: HeadKind, f: Factory): void {
  registry.set(kind, f);
}

function inferRule(def: ParamValue): ParamRule {
  if (typeof def === 'number') return { default: def, types: ['number'] };
  if (typeof def === 'boolean') return { default: def, types: ['bool'] };
  if (Array.isArray(def)) return { default: def, types: ['ints'] };
  return { default: def, types: ['string', 'null', 'number'] };
}

/** The head's constraint table (names, types, ranges, defaults). */
export function headParamRules(kind: string): ParamTable {
  const f = factory(kind);
  if (f.params) return f.params;
  return Object.fromEntries(Object.entries(f.defaults ?? {}).map(([k, v]) => [k, inferRule(v)]));
}

/** "a number > 0", "an integer ≥ 1", "'rbf' or 'poly'", "'scale', 'auto' or a number > 0" … */
export function describeRule(r: ParamRule): string {
  const bounds = (): string => {
    const b: string[] = [];
    if (r.gt !== undefined) b.push(`> ${r.gt}`);
    if (r.min !== undefined) b.push(`≥ ${r.min}`);
    if (r.lt !== undefined) b.push(`< ${r.lt}`);
    if (r.max !== undefined) b.push(`≤ ${r.max}`);
    return b.length ? ` ${b.join(' and ')}` : '';
  };
  const parts: string[] = [];
  for (const t of r.types) {
    if (t === 'number') parts.push(`a number${bounds()}`);
    else if (t === 'int') parts.push(`an integer${bounds()}`);
    else if (t === 'bool') parts.push('true or false');
    else if (t === 'string') parts.push(...(r.values ? r.values.map((v) => `'${v}'`) : ['a string']));
    else if (t === 'null') parts.push('null');
    else if (t === 'ints') parts.push(`${r.length ? `${r.length[0] === r.length[1] ? r.length[0] : `${r.length[0]}–${r.length[1]}`} ` : 'a list of '}integer(s)${bounds()}`);
  }
  return parts.length > 1 ? `${parts.slice(0, -1).join(', ')} or ${parts[parts.length - 1]}` : parts[0];
}

function inBounds(r: ParamRule, v: number): boolean {
  return Number.isFinite(v) && (r.gt === undefined || v > r.gt) && (r.min === undefined || v >= r.min) && (r.lt === undefined || v < r.lt) && (r.max === undefined || v <= r.max);
}

/** Whether `v` satisfies the rule. */
export function satisfies(r: ParamRule, v: ParamValue): boolean {
  return r.types.some((t) => {
    if (t === 'number') return typeof v === 'number' && inBounds(r, v);
    if (t === 'int') return typeof v === 'number' && Number.isInteger(v) && inBounds(r, v);
    if (t === 'bool') return typeof v === 'boolean';
    if (t === 'string') return typeof v === 'string' && (!r.values || r.values.includes(v));
    if (t === 'null') return v === null;
    const list = typeof v === 'number' ? [v] : v;
    return Array.isArray(list) && list.every((x) => Number.isInteger(x) && inBounds(r, x)) && (!r.length || (list.length >= r.length[0] && list.length <= r.length[1]));
  });
}

/** Refuse a value the table does not allow: the error names the parameter, what is expected and what was given. */
export function validateParam(kind: string, name: string, v: ParamValue, rules = headParamRules(kind)): void {
  const r = rules[name];
  if (!r) throw new XferError(`head ${kind}: unknown parameter '${name}'`, { hint: `known: ${Object.keys(rules).join(', ')}` });
  if (!satisfies(r, v)) {
    throw new XferError(`head ${kind}: parameter ${name} must be ${describeRule(r)}, got ${JSON.stringify(v)}`, { hint: `e.g. ${name}=${JSON.stringify(r.default)} (the default)` });
  }
}

function factory(kind: string): Factory {
  const f = registry.get(kind as HeadKind);
  if (!f && kind === 'finetune') throw new XferError("head 'finetune' is trained by finetune() / `xfer train --head finetune --from <tap>`", { hint: "import { finetune } from 'xfer' (it also registers the kind for loading)" });
  if (!f) throw new XferError(`--head: unknown head '${kind}'`, { hint: `use one of ${HEAD_KINDS.join(', ')}, or finetune` });
  return f;
}

export function headDefaults(kind: string): HeadParams {
  return Object.fromEntries(Object.entries(headParamRules(kind)).map(([k, r]) => [k, r.default]));
}

export function defaultTransformsFor(kind: string): string {
  return factory(kind).defaultTransforms;
}

export function defaultSweepFor(kind: string): string | undefined {
  return factory(kind).defaultSweep;
}

/** Create an unfitted head: every given parameter is checked against the head's constraint table. */
export function createHead(kind: string, params: HeadParams = {}): Head {
  const f = factory(kind);
  const rules = headParamRules(kind);
  const merged: HeadParams = headDefaults(kind);
  for (const [k, v] of Object.entries(params)) {
    validateParam(kind, k, v, rules);
    merged[k] = v;
  }
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

/**
 * Check fit's inputs and return the number of classes: `nClasses` when given (a fold may lack a
 * class the whole training set has), else learned from y (labels are 0..k−1, k = max + 1).
 */
export function checkFitInput(kind: string, X: Matrix, y: Int32Array, nClasses?: number): number {
  let k = nClasses ?? 0;
  if (nClasses === undefined) for (let i = 0; i < y.length; i++) k = Math.max(k, y[i] + 1);
  if (X.rows !== y.length) throw new XferError(`${kind}.fit: ${X.rows} rows but ${y.length} labels`, { hint: 'pass one label per row' });
  if (X.rows === 0) throw new XferError(`${kind}: no training rows`, { hint: 'check the feature folder and its splits' });
  if (k < 2) throw new XferError(`${kind}: training data has a single class`, { hint: 'a classifier needs at least two classes with labelled rows' });
  for (let i = 0; i < y.length; i++) if (y[i] < 0 || y[i] >= k) throw new XferError(`${kind}.fit: label ${y[i]} out of range [0, ${k})`, { hint: 'labels are class indices 0..k−1' });
  return k;
}

/** An unfitted head cannot predict, save or export. */
export function checkFitted(h: Head): void {
  if (h.nFeatures === 0 || h.nClasses === 0) throw new XferError(`${h.kind} head is not fitted yet`, { hint: 'call fit(X, y) first (or load a trained head folder)', exitCode: 1 });
}

export function checkPredictInput(h: Head, X: Matrix): void {
  checkFitted(h);
  if (X.cols !== h.nFeatures) {
    throw new XferError(`features have ${X.cols} columns but the ${h.kind} head was trained on ${h.nFeatures}`, { hint: 'use the same backbone, layers and pooling the head was trained on' });
  }
}
