/** Seeded, stratified train/validation splits and k-fold assignments (scikit-learn's StratifiedKFold idea). */
import { XferError } from '../errors.js';
import { Rng } from './rng.js';

/** Rows the final head is fitted on after model selection (`--refit`). */
export type RefitRows = 'train' | 'train+val';
export const REFIT_CHOICES: readonly RefitRows[] = ['train', 'train+val'];

/** Positions of each class label, in position order. */
function indexesByClass(y: ArrayLike<number>): Map<number, number[]> {
  const byClass = new Map<number, number[]>();
  for (let i = 0; i < y.length; i++) {
    let a = byClass.get(y[i]);
    if (!a) byClass.set(y[i], (a = []));
    a.push(i);
  }
  return byClass;
}

/** Split positions 0..n-1 (labels y) into train/val, taking round(frac·n_c) of each class (≥1 when n_c ≥ 2). */
export function stratifiedSplit(y: ArrayLike<number>, frac: number, seed = 0): { train: number[]; val: number[] } {
  if (!(frac > 0 && frac < 1)) throw new XferError(`--val: must be a fraction in (0, 1), got ${frac}`, { hint: 'e.g. --val 0.2' });
  const rng = new Rng(seed);
  const byClass = indexesByClass(y);
  const train: number[] = [];
  const val: number[] = [];
  for (const c of [...byClass.keys()].sort((a, b) => a - b)) {
    const idx = byClass.get(c)!;
    rng.shuffle(idx);
    let nv = Math.round(frac * idx.length);
    if (idx.length >= 2) nv = Math.min(Math.max(nv, 1), idx.length - 1);
    else nv = 0;
    val.push(...idx.slice(0, nv));
    train.push(...idx.slice(nv));
  }
  train.sort((a, b) => a - b);
  val.sort((a, b) => a - b);
  return { train, val };
}

/**
 * Stratified k-fold: fold id per position. Refuses classes with fewer samples than folds.
 * `requested` names where k came from, for the error message: e.g. `--folds 3`, or
 * `the sweep's default 5-fold CV` when the user passed no --folds.
 */
export function stratifiedFolds(y: ArrayLike<number>, k: number, seed = 0, labelName: (c: number) => string = String, requested = `--folds ${k}`): Int32Array {
  if (!Number.isInteger(k) || k < 2) throw new XferError(`--folds: must be an integer ≥ 2, got ${k}`, { hint: 'e.g. --folds 5' });
  const rng = new Rng(seed);
  const byClass = indexesByClass(y);
  const small = [...byClass].filter(([, v]) => v.length < k);
  if (small.length > 0) {
    const list = small.map(([c, v]) => `'${labelName(c)}' (${v.length})`).join(', ');
    const fewest = Math.min(...small.map(([, v]) => v.length));
    const names = small.map(([c]) => `'${labelName(c)}'`).join(', ');
    const more = `add training samples of class ${names} (≥ ${k} each)`;
    throw new XferError(`${requested}: class ${list} has fewer training samples than folds (${k})`, {
      hint: fewest >= 2 ? `use fewer folds (--folds ${fewest}) or ${more}` : `k-fold CV needs ≥ 2 training samples per class: ${more}`,
    });
  }
  const fold = new Int32Array(y.length);
  let offset = 0;
  for (const c of [...byClass.keys()].sort((a, b) => a - b)) {
    const idx = rng.shuffle(byClass.get(c)!);
    // continue the round-robin across classes so fold sizes stay balanced
    idx.forEach((p, t) => (fold[p] = (t + offset) % k));
    offset = (offset + idx.length) % k;
  }
  return fold;
}
