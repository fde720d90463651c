/**
 * Classification metrics over the feature folder's label space: accuracy, top-k, mean per-class
 * accuracy (balanced accuracy), per-class precision/recall/F1 (support), confusion matrix, and
 * log-loss when the head gives calibrated probabilities. Rows whose true label the head never saw
 * are counted (as errors) and listed under `unseen`, never a crash.
 */
import { topKRows } from './matrix.js';

export interface ClassMetrics {
  label: string;
  precision: number;
  recall: number;
  f1: number;
  support: number;
}

export interface Metrics {
  n: number;
  accuracy: number;
  topK: { k: number; accuracy: number } | null;
  meanPerClassAccuracy: number;
  macroF1: number;
  logLoss: number | null;
  perClass: ClassMetrics[];
  /** labels (rows = true, cols = predicted) over `labels`. */
  confusion: number[][];
  labels: string[];
  /** True labels present in the data that the head cannot predict: label → count. */
  unseen: Record<string, number>;
}

/**
 * @param yTrue  true label per row as an index into `labels` (folder label space)
 * @param proba  n × kHead scores/probabilities from the head
 * @param headToLabel  head class c → index into `labels`
 * @param probabilistic  whether `proba` are calibrated probabilities (log-loss only then)
 */
export function computeMetrics(yTrue: Int32Array, proba: Float32Array, kHead: number, headToLabel: number[], labels: string[], probabilistic: boolean, topK = 5): Metrics {
  const n = yTrue.length;
  const L = labels.length;
  const labelToHead = new Map<number, number>(headToLabel.map((l, c) => [l, c]));
  const conf = Array.from({ length: L }, () => new Array<number>(L).fill(0));
  let correct = 0;
  let topCorrect = 0;
  let ll = 0;
  const kk = Math.min(topK, kHead);
  const unseen: Record<string, number> = {};
  const top = topKRows(proba, n, kHead, kk);
  for (let i = 0; i < n; i++) {
    const o = i * kHead;
    const pred = headToLabel[top[i * kk]];
    const t = yTrue[i];
    conf[t][pred]++;
    if (pred === t) correct++;
    const hc = labelToHead.get(t);
    if (hc === undefined) {
      unseen[labels[t]] = (unseen[labels[t]] ?? 0) + 1;
      if (probabilistic) ll += -Math.log(1e-15);
      continue;
    }
    for (let r = 0; r < kk; r++) if (top[i * kk + r] === hc) topCorrect++;
    if (probabilistic) ll -= Math.log(Math.min(1 - 1e-15, Math.max(1e-15, proba[o + hc])));
  }
  const perClass: ClassMetrics[] = [];
  let recallSum = 0;
  let recallCount = 0;
  let f1Sum = 0;
  for (let c = 0; c < L; c++) {
    const tp = conf[c][c];
    let support = 0;
    let predicted = 0;
    for (let j = 0; j < L; j++) {
      support += conf[c][j];
      predicted += conf[j][c];
    }
    if (support === 0 && predicted === 0) continue;
    const precision = predicted ? tp / predicted : 0;
    const recall = support ? tp / support : 0;
    const f1 = precision + recall > 0 ? (2 * precision * recall) / (precision + recall) : 0;
    perClass.push({ label: labels[c], precision, recall, f1, support });
    if (support > 0) {
      recallSum += recall;
      recallCount++;
      f1Sum += f1;
    }
  }
  return {
    n,
    accuracy: n ? correct / n : 0,
    topK: kHead > kk ? { k: kk, accuracy: n ? topCorrect / n : 0 } : null,
    meanPerClassAccuracy: recallCount ? recallSum / recallCount : 0,
    macroF1: recallCount ? f1Sum / recallCount : 0,
    logLoss: probabilistic && n ? ll / n : null,
    perClass,
    confusion: conf,
    labels,
    unseen,
  };
}
