/**
 * `xfer advise`: the transfer-learning 2×2 (dataset small/large × similar/different to the
 * backbone's source data) measured rather than guessed, and one recipe with its commands.
 * Method and thresholds: docs/advise.md.
 *
 * One sweep (linear probes on the card's recommended taps, or taps found from the graph) extracts,
 * in the same pass, the inputs of a few BatchNormalization nodes and the source classifier's output:
 *   size        training images per class, and the best probe's learning curve (10/25/50/100 % of train)
 *   similarity  where probe accuracy peaks (relative depth; the gap between the best tap and the last);
 *               channel means of the new images against the network's own BN running statistics;
 *               the source classifier's confidence (max probability, normalised entropy)
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { XferError } from '../errors.js';
import { resolveBackbone } from '../model/registry.js';
import type { ModelCard } from '../model/card.js';
import { mapLabels } from '../predict/classify.js';
import { readOnnxFile } from '../onnx/io.js';
import { DataType, type ModelProto, type TensorProto } from '../onnx/proto.js';
import { describeLayers } from '../model/layers.js';
import { fromHalfBits } from '../util/float16.js';
import { loadRows, openFeatures } from '../features/reader.js';
import { runProbe } from '../heads/probe.js';
import { stratifiedSplit } from '../heads/split.js';
import { parseTransforms } from '../heads/transforms.js';
import { runSweep, sweepSplits, type SweepOptions, type SweepResult, type SweepRow } from './sweep.js';

/** Training images per class at or above which the dataset counts as large (fine-tuning pays). */
export const LARGE_PER_CLASS = 1000;
/** Best tap's CV accuracy over the last tap's, in points, above which the data counts as different. */
export const DIFFERENT_GAP = 0.02;
/** Mean |Δμ| / σ of BN input channel means above which the activations look shifted (reported, not decisive). */
export const BN_SHIFT_HIGH = 0.5;
export const CURVE_FRACTIONS = [0.1, 0.25, 0.5, 1] as const;

export type AdviseOptions = Omit<SweepOptions, 'heads' | 'pools' | 'extraTaps' | 'features'> & { model: string; data: string };

export interface BnShift {
  tap: string;
  depth: number;
  channels: number;
  /** Mean over channels of |mean of the new images − running mean| / sqrt(running var + eps). */
  shift: number;
}

export interface Advice {
  sweep: SweepResult;
  size: { perClassMin: number; perClassMedian: number; classes: number; large: boolean; curve: { fraction: number; rows: number; val: number; cv: number }[]; gainLastHalf: number };
  similarity: {
    bestDepth: number;
    lastDepth: number;
    relativeDepth: number;
    gapToLast: number;
    bn: { taps: BnShift[]; mean: number } | null;
    classifier: { classes: number; meanMaxProb: number; meanEntropy: number; top: { label: string; share: number }[] } | null;
    similar: boolean;
  };
  scenario: 'small-similar' | 'small-different' | 'large-similar' | 'large-different';
  recipe: string;
  commands: string[];
  notes: string[];
}

function tensorFloats(t: TensorProto): Float32Array | null {
  if (t.dataType === DataType.FLOAT) {
    if (t.floatData && t.floatData.length) return Float32Array.from(t.floatData);
    if (t.rawData) return new Float32Array(new Uint8Array(t.rawData).buffer);
  }
  if (t.dataType === DataType.FLOAT16 && t.rawData) {
    const u = new Uint16Array(new Uint8Array(t.rawData).buffer);
    return Float32Array.from(u, (b) => fromHalfBits(b));
  }
  return null;
}

interface BnNode {
  input: string;
  mean: Float32Array;
  variance: Float32Array;
  eps: number;
  depth: number;
}

/** Up to `n` BatchNormalization nodes spread over depth whose input is a computed tensor and whose statistics are float initializers. */
function bnNodes(model: ModelProto, depthOf: Map<string, number>, n = 4): BnNode[] {
  const inits = new Map(model.graph.initializer.map((t) => [t.name ?? '', t]));
  const all: BnNode[] = [];
  for (const node of model.graph.node) {
    if (node.opType !== 'BatchNormalization' || !depthOf.has(node.input[0])) continue;
    const m = inits.get(node.input[3]);
    const v = inits.get(node.input[4]);
    const mean = m ? tensorFloats(m) : null;
    const variance = v ? tensorFloats(v) : null;
    if (!mean || !variance || mean.length !== variance.length) continue;
    const eps = node.attribute?.find((a) => a.name === 'epsilon')?.f ?? 1e-5;
    all.push({ input: node.input[0], mean, variance, eps, depth: depthOf.get(node.input[0])! });
  }
  all.sort((a, b) => a.depth - b.depth);
  if (all.length <= n) return all;
  return Array.from({ length: n }, (_, i) => all[Math.round((i * (all.length - 1)) / (n - 1))]);
}

const pct = (v: number): string => `${(100 * v).toFixed(1)} %`;

export async function advise(o: AdviseOptions): Promise<Advice> {
  const b = await resolveBackbone(o.model, { card: o.card, cardFlags: o.cardFlags });
  const { model } = await readOnnxFile(b.file);
  const rows = await describeLayers(model, b.card);
  const total = Math.max(1, rows.length - 1);
  const depthOf = new Map(rows.map((r) => [r.name, r.index / total]));
  const bns = bnNodes(model, depthOf);
  const classifierOut = b.card?.labels && model.graph.output.length === 1 && depthOf.has(model.graph.output[0].name) ? model.graph.output[0].name : null;
  const extraTaps = [...bns.map((x) => x.input), ...(classifierOut ? [classifierOut] : [])];
  const sweep = await runSweep({ ...o, heads: ['linear'], pools: ['avg'], extraTaps });
  const notes: string[] = [];

  const f = await openFeatures(sweep.features);
  const sp = sweepSplits(f, sweep.folds, o.seed ?? 0, () => {});
  const trainRows = sp.order.slice(0, sp.nTrain);

  // --- size: images per class and the learning curve of the best probe
  const counts = new Map<number, number>();
  for (let i = 0; i < sp.nTrain; i++) counts.set(sp.y[i], (counts.get(sp.y[i]) ?? 0) + 1);
  const perClass = [...counts.values()].sort((a, b) => a - b);
  const perClassMedian = perClass[Math.floor(perClass.length / 2)];
  const best = sweep.best;
  const layer = f.meta.layers.find((l) => l.name === best.tap)!;
  const loaded = await loadRows(f, [layer], sp.order);
  const X = { data: loaded.X, rows: loaded.n, cols: loaded.d };
  const yTr = sp.y.subarray(0, sp.nTrain);
  const curve: Advice['size']['curve'] = [];
  for (const fraction of CURVE_FRACTIONS) {
    const subset = fraction < 1 ? stratifiedSplit(yTr, fraction, o.seed ?? 0).val : Array.from({ length: sp.nTrain }, (_, i) => i);
    const c = new Map<number, number>();
    for (const i of subset) c.set(yTr[i], (c.get(yTr[i]) ?? 0) + 1);
    const fewest = Math.min(...c.values());
    if (c.size < sp.classes.length || fewest < 2) {
      notes.push(`learning curve: ${Math.round(fraction * 100)} % of train leaves a class with fewer than 2 images; point skipped`);
      continue;
    }
    const r = await runProbe({ X, y: sp.y, nTrain: sp.nTrain, nVal: sp.nVal, nTest: 0, K: sp.classes.length }, {
      kind: 'linear',
      transforms: parseTransforms(o.transforms ?? 'standardize'),
      grid: { param: 'C', values: [Number(best.params.C)] },
      folds: Math.min(3, fewest),
      seed: o.seed,
      trainSubset: subset,
    });
    curve.push({ fraction, rows: subset.length, val: r.val ?? r.cv.mean, cv: r.cv.mean });
  }
  const at = (fr: number): number | undefined => curve.find((p) => p.fraction === fr)?.val;
  const gainLastHalf = (at(1) ?? 0) - (at(0.5) ?? at(1) ?? 0);
  const large = perClassMedian >= LARGE_PER_CLASS;

  // --- similarity
  const lastDepth = sweep.taps[sweep.taps.length - 1].depth;
  const relativeDepth = lastDepth > 0 ? best.depth / lastDepth : 1;
  const gapToLast = best.cv.mean - sweep.last.cv.mean;
  let bn: Advice['similarity']['bn'] = null;
  if (bns.length) {
    const taps: BnShift[] = [];
    for (const x of bns) {
      const l = f.meta.layers.find((q) => q.name === x.input);
      if (!l) continue;
      const r = await loadRows(f, [l], trainRows);
      const C = r.d / (l.pool === 'avgmax' ? 2 : 1);
      if (C !== x.mean.length) {
        notes.push(`BN statistics of ${x.input}: ${C} channels pooled but ${x.mean.length} running means; skipped`);
        continue;
      }
      let s = 0;
      for (let c = 0; c < C; c++) {
        let m = 0;
        for (let i = 0; i < r.n; i++) m += r.X[i * r.d + c];
        m /= r.n;
        s += Math.abs(m - x.mean[c]) / Math.sqrt(x.variance[c] + x.eps);
      }
      taps.push({ tap: x.input, depth: x.depth, channels: C, shift: s / C });
    }
    if (taps.length) bn = { taps, mean: taps.reduce((a, t) => a + t.shift, 0) / taps.length };
  } else notes.push('the model has no BatchNormalization statistics to compare against');
  let classifier: Advice['similarity']['classifier'] = null;
  if (classifierOut) {
    const l = f.meta.layers.find((q) => q.name === classifierOut)!;
    const r = await loadRows(f, [l], trainRows);
    const K = r.d / (l.pool === 'avgmax' ? 2 : 1);
    let mp = 0;
    let ent = 0;
    const topCount = new Float64Array(K);
    // per image: the classifier's probabilities (softmax first when the card says it outputs logits)
    const p = new Float64Array(K);
    for (let i = 0; i < r.n; i++) {
      const row = r.X.subarray(i * r.d, i * r.d + K);
      let m = -Infinity;
      for (const v of row) if (v > m) m = v;
      let sum = 0;
      for (let c = 0; c < K; c++) sum += p[c] = b.card?.output_is_probability ? Math.max(row[c], 0) : Math.exp(row[c] - m);
      let top = 0;
      let h = 0;
      for (let c = 0; c < K; c++) {
        p[c] /= sum || 1;
        if (p[c] > p[top]) top = c;
        if (p[c] > 0) h -= p[c] * Math.log(p[c]);
      }
      mp += p[top];
      ent += h / Math.log(K);
      topCount[top]++;
    }
    const names = await cardLabels(b.card, K);
    const top = [...topCount].map((n, c) => ({ label: names[c] ?? String(c), share: n / r.n })).sort((a, b) => b.share - a.share).slice(0, 3);
    classifier = { classes: K, meanMaxProb: mp / r.n, meanEntropy: ent / r.n, top };
  } else notes.push('no source classifier (the card has no labels): its confidence is not measured');
  const similar = gapToLast <= DIFFERENT_GAP;

  // --- recipe
  const M = o.model;
  const D = o.data;
  const out = path.resolve(o.out);
  const last = sweep.last;
  const cmds: string[] = [];
  let recipe: string;
  const scenario = `${large ? 'large' : 'small'}-${similar ? 'similar' : 'different'}` as Advice['scenario'];
  const frozen = (r: SweepRow): string => `frozen ${r.head} probe on ${r.tap}: CV ${pct(r.cv.mean)} ± ${pct(r.cv.std)}${r.val !== null ? `, val ${pct(r.val)}` : ''}`;
  if (scenario === 'small-similar') {
    recipe = `linear head on the top codes (${last.tap}) — ${frozen(last)}`;
    cmds.push(`xfer extract --model ${M} --layers ${last.tap} --data ${D} --out ${out}/top-features`, `xfer train --features ${out}/top-features --head linear --sweep C=1e-3..1e2:6 --out ${out}/top-head`);
  } else if (scenario === 'small-different') {
    recipe = `linear (or SVM) head on an earlier tap, ${best.tap} (depth ${best.depth.toFixed(2)}) — ${frozen(best)}; the sweep saved it as ${sweep.bestHead}`;
    cmds.push(`xfer predict --head ${sweep.bestHead} <images>`, `xfer train --features ${sweep.features} --layers ${best.tap} --head svm --sweep C=1e-3..1e2:6 --out ${out}/svm-head`);
  } else {
    const from = scenario === 'large-similar' ? fineTuneFrom(sweep) : 'input';
    recipe =
      scenario === 'large-similar'
        ? `fine-tune the top blocks (from ${from}) — for reference, ${frozen(best)}`
        : `fine-tune the whole network (from the input) — for reference, ${frozen(best)}`;
    if (from !== 'input') cmds.push(`xfer extract --model ${M} --layers ${from} --pool none --data ${D} --out ${out}/ft-features`, `xfer train --features ${out}/ft-features --head finetune --from ${from} --out ${out}/ft-head`);
    else cmds.push(`xfer train --head finetune --from input --model ${M} --data ${D} --augment hflip,crop --out ${out}/ft-head`);
  }
  return {
    sweep,
    size: { perClassMin: perClass[0], perClassMedian, classes: sp.classes.length, large, curve, gainLastHalf },
    similarity: { bestDepth: best.depth, lastDepth, relativeDepth, gapToLast, bn, classifier, similar },
    scenario,
    recipe,
    commands: cmds,
    notes,
  };
}

/** Fine-tune-the-top starting point: the best tap when it is not the last, else the tap nearest 3/4 of the last tap's depth. */
function fineTuneFrom(s: SweepResult): string {
  if (s.best.tap !== s.last.tap) return s.best.tap;
  const target = 0.75 * s.taps[s.taps.length - 1].depth;
  let t = s.taps[0];
  for (const x of s.taps.slice(0, -1)) if (Math.abs(x.depth - target) < Math.abs(t.depth - target)) t = x;
  return t.name;
}

async function cardLabels(card: ModelCard | null, K: number): Promise<string[]> {
  if (!card?.labels || !card.dir) return [];
  try {
    const lines = (await readFile(path.join(card.dir, card.labels), 'utf8')).split('\n').map((s) => s.trim()).filter(Boolean);
    return mapLabels(lines, K, { label_offset: card.label_offset, labels_skip: card.labels_skip });
  } catch {
    return [];
  }
}

/** The advice as text (the CLI prints this; docs/advise.md shows examples). */
export function formatAdvice(a: Advice): string {
  const s = a.sweep;
  const L: string[] = [];
  const row = (l: string, r: string): string => `  ${l.padEnd(40)}${r}`;
  L.push(`xfer advise: ${s.model.id} on ${s.rows.train + s.rows.val + s.rows.test} images, ${a.size.classes} classes`);
  L.push('', 'size');
  L.push(row('training images per class', `median ${a.size.perClassMedian}, min ${a.size.perClassMin} (large from ${LARGE_PER_CLASS}) → ${a.size.large ? 'LARGE' : 'SMALL'}`));
  L.push(row('learning curve (best tap, val)', a.size.curve.map((p) => `${Math.round(p.fraction * 100)} %: ${pct(p.val)}`).join(', ')));
  L.push(row('gain from the last half of the data', `${(100 * a.size.gainLastHalf).toFixed(1)} points${a.size.gainLastHalf > 0.01 ? ' (still rising: more data helps)' : ' (flat)'}`));
  L.push('', 'similarity to the source data');
  L.push(row('best tap', `${s.best.tap}, depth ${a.similarity.bestDepth.toFixed(2)} of ${a.similarity.lastDepth.toFixed(2)} (${(100 * a.similarity.relativeDepth).toFixed(0)} % of the last tap)`));
  L.push(row('best tap vs last tap (CV)', `${pct(s.best.cv.mean)} vs ${pct(s.last.cv.mean)} (${s.last.tap}): gap ${(100 * a.similarity.gapToLast).toFixed(1)} points (different above ${100 * DIFFERENT_GAP}) → ${a.similarity.similar ? 'SIMILAR' : 'DIFFERENT'}`));
  if (a.similarity.bn) L.push(row('BN input shift |Δμ|/σ', `${a.similarity.bn.taps.map((t) => `${t.shift.toFixed(2)} @${t.depth.toFixed(2)}`).join(', ')}; mean ${a.similarity.bn.mean.toFixed(2)}${a.similarity.bn.mean > BN_SHIFT_HIGH ? ' (shifted)' : ''}`));
  if (a.similarity.classifier) {
    const c = a.similarity.classifier;
    L.push(row('source classifier', `mean max prob ${c.meanMaxProb.toFixed(2)}, mean entropy ${c.meanEntropy.toFixed(2)} of 1 (${c.classes} classes); top: ${c.top.map((t) => `${t.label} ${pct(t.share)}`).join(', ')}`));
  }
  const grid = { 'small-similar': [1, 0], 'small-different': [1, 1], 'large-similar': [0, 0], 'large-different': [0, 1] }[a.scenario];
  const cell = (r: number, c: number, txt: string): string => (grid[0] === r && grid[1] === c ? `[${txt}]` : ` ${txt} `).padEnd(30);
  L.push('', 'scenario', `  ${''.padEnd(8)}${'similar'.padEnd(30)}different`);
  L.push(`  ${'large'.padEnd(8)}${cell(0, 0, 'fine-tune the top blocks')}${cell(0, 1, 'fine-tune everything')}`);
  L.push(`  ${'small'.padEnd(8)}${cell(1, 0, 'linear on the top codes')}${cell(1, 1, 'SVM/linear on an earlier tap')}`);
  L.push('', `recommendation: ${a.recipe}`, '', 'next:', ...a.commands.map((c) => `  ${c}`));
  L.push('', 'frozen accuracies (sweep): ' + [s.best, s.last].filter((r, i, xs) => xs.indexOf(r) === i).map((r) => `${r.tap} CV ${pct(r.cv.mean)}${r.val !== null ? ` / val ${pct(r.val)}` : ''}`).join('; '));
  if (a.notes.length) L.push('', ...a.notes.map((n) => `note: ${n}`));
  L.push('', `sweep: ${s.out}/sweep.md, sweep.png`);
  return L.join('\n');
}

export function checkAdviseInput(o: { model?: string; data?: string }): void {
  if (!o.model || !o.data) throw new XferError('xfer advise: pass --model and --data', { hint: 'e.g. xfer advise --model mobilenet_v2 --data images/ --out advise/' });
}
