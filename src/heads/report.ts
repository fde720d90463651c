/** report.json + report.md + PNG plots for a training run or an evaluation. */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Metrics } from './metrics.js';
import type { SweepPoint } from './sweep.js';
import { confusionSvg, lineChartSvg, svgToPng } from './plots.js';

export interface Report {
  command: 'train' | 'eval';
  head: string;
  kind: string;
  params: Record<string, unknown>;
  features: string;
  layers: string[];
  model: { id: string; sha256: string };
  transforms: string[];
  rows: Record<string, number>;
  /** How the parameters were chosen and which rows the final head was fitted on (train only). */
  selection?: { method: string; refit: 'train' | 'train+val'; refitDefault: boolean; fitRows: number; fitOn: string; holdout?: string };
  /** `param` names the grid ("C" or "C × gamma"); `best` is the first axis's best value, `bestValues` all of them. */
  sweep?: { param: string; params: string[]; grid: Record<string, number[]>; mode: string; folds?: number; points: SweepPoint[]; best: number; bestValues: Record<string, number>; seconds: number };
  /** k-fold cross-validated accuracy of the fixed parameters (`--folds` without `--sweep`). */
  cv?: { folds: number; scores: number[]; mean: number; std: number; rows: number };
  metrics: Record<string, Metrics>;
  fit?: Record<string, unknown>;
  seconds: number;
  warnings: string[];
  plots: string[];
}

const pct = (v: number): string => `${(100 * v).toFixed(2)}%`;

export async function writeReport(dir: string, r: Report, history?: { epoch: number; loss: number; valLoss?: number; valAcc?: number }[]): Promise<void> {
  await mkdir(dir, { recursive: true });
  const plots: string[] = [];
  const png = async (name: string, svg: string): Promise<void> => {
    try {
      await writeFile(path.join(dir, name), svgToPng(svg));
      plots.push(name);
    } catch (e) {
      r.warnings.push(`plot ${name} not written: ${(e as Error).message}`);
    }
  };
  for (const [split, m] of Object.entries(r.metrics)) {
    if (m.labels.length <= 60) await png(`confusion-${split}.png`, confusionSvg(pruneConfusion(m).conf, pruneConfusion(m).labels, `Confusion matrix (${split}, ${m.n} rows)`));
  }
  if (r.sweep && r.sweep.points.length > 1) {
    // one curve over the first axis per combination of the other axes (a grid's slices)
    const sw = r.sweep;
    const [first, ...rest] = sw.params;
    const slices = new Map<string, SweepPoint[]>();
    for (const p of sw.points) {
      const key = rest.map((k) => `${k}=${p.values[k]}`).join(' ');
      slices.set(key, [...(slices.get(key) ?? []), p]);
    }
    const series = [...slices].map(([key, pts]) => ({ name: key ? `${key} (${sw.mode})` : `${sw.mode} accuracy`, x: pts.map((p) => p.value), y: pts.map((p) => p.score), err: pts.map((p) => p.std) }));
    await png('sweep.png', lineChartSvg(series, {
      title: `Sweep over ${sw.param} (${r.kind})`,
      xLabel: first,
      yLabel: 'accuracy',
      logX: sw.points.every((p) => p.value > 0),
      mark: sw.best,
    }));
  }
  if (history && history.length > 1) {
    const ep = history.map((h) => h.epoch);
    const loss = [{ name: 'train loss', x: ep, y: history.map((h) => h.loss) }];
    if (history[0].valLoss !== undefined) loss.push({ name: 'val loss', x: ep, y: history.map((h) => h.valLoss ?? NaN) });
    await png('learning-loss.png', lineChartSvg(loss, { title: `${r.kind === 'finetune' ? 'Fine-tuning' : 'MLP'} learning curve (loss)`, xLabel: 'epoch', yLabel: 'cross-entropy' }));
    if (history[0].valAcc !== undefined) await png('learning-acc.png', lineChartSvg([{ name: 'val accuracy', x: ep, y: history.map((h) => h.valAcc ?? NaN) }], { title: `${r.kind === 'finetune' ? 'Fine-tuning' : 'MLP'} learning curve (validation accuracy)`, xLabel: 'epoch', yLabel: 'accuracy' }));
  }
  r.plots = plots;
  await writeFile(path.join(dir, 'report.json'), JSON.stringify(r, null, 2) + '\n');
  await writeFile(path.join(dir, 'report.md'), markdown(r));
}

/** Drop labels that appear neither as truth nor as prediction (keeps plots readable). */
function pruneConfusion(m: Metrics): { conf: number[][]; labels: string[] } {
  const keep: number[] = [];
  for (let i = 0; i < m.labels.length; i++) {
    let s = 0;
    for (let j = 0; j < m.labels.length; j++) s += m.confusion[i][j] + m.confusion[j][i];
    if (s > 0) keep.push(i);
  }
  return { conf: keep.map((i) => keep.map((j) => m.confusion[i][j])), labels: keep.map((i) => m.labels[i]) };
}

export function markdown(r: Report): string {
  const L: string[] = [];
  L.push(`# xfer ${r.command}: ${r.kind} head`, '');
  L.push(`- features: \`${r.features}\` (layers ${r.layers.join(', ')}; backbone ${r.model.id}, sha256 ${r.model.sha256.slice(0, 12)}…)`);
  L.push(`- head folder: \`${r.head}\``);
  L.push(`- parameters: ${Object.entries(r.params).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(', ')}`);
  L.push(`- transforms: ${r.transforms.length ? r.transforms.join(' → ') : 'none'}`);
  L.push(`- rows: ${Object.entries(r.rows).map(([k, v]) => `${k} ${v}`).join(', ')}`);
  L.push(`- time: ${r.seconds.toFixed(2)} s`);
  if (r.selection) {
    L.push(`- selection: ${r.selection.method}`);
    L.push(`- final head fitted on: ${r.selection.fitOn}${r.selection.refitDefault ? ' (default --refit)' : ` (--refit ${r.selection.refit})`}`);
    if (r.selection.holdout) L.push(`- hold-out: ${r.selection.holdout}`);
  }
  L.push('');
  if (r.cv) {
    L.push(`## ${r.cv.folds}-fold cross-validation on train (${r.cv.rows} rows)`, '');
    L.push(`Accuracy ${pct(r.cv.mean)} ± ${pct(r.cv.std)} (mean ± std over folds).`, '');
    L.push('| fold | accuracy |', '| ---: | ---: |');
    r.cv.scores.forEach((a, i) => L.push(`| ${i + 1} | ${pct(a)} |`));
    L.push('');
  }
  if (r.sweep) {
    const sw = r.sweep;
    L.push(`## Sweep over ${sw.param} (${sw.mode}${sw.folds ? `, ${sw.folds} folds` : ''})`, '');
    if (sw.params.length > 1) L.push(`Grid: ${sw.params.map((k) => `${k} ∈ {${sw.grid[k].join(', ')}}`).join(' × ')} — ${sw.points.length} points.`, '');
    L.push(`| ${sw.params.join(' | ')} | accuracy | ± std | seconds |`, `|${' ---: |'.repeat(sw.params.length + 3)}`);
    for (const p of sw.points) L.push(`| ${sw.params.map((k) => p.values[k]).join(' | ')} | ${pct(p.score)} | ${pct(p.std)} | ${p.seconds.toFixed(2)} |`);
    L.push('', `Best ${sw.params.map((k) => `${k} = ${sw.bestValues[k]}`).join(', ')}; the whole sweep took ${sw.seconds.toFixed(2)} s.`, '');
  }
  for (const [split, m] of Object.entries(r.metrics)) {
    L.push(`## Metrics on ${split} (${m.n} rows)`, '');
    L.push(`| metric | value |`, '| --- | ---: |');
    L.push(`| accuracy | ${pct(m.accuracy)} |`);
    if (m.topK) L.push(`| top-${m.topK.k} accuracy | ${pct(m.topK.accuracy)} |`);
    L.push(`| mean per-class accuracy | ${pct(m.meanPerClassAccuracy)} |`);
    L.push(`| macro F1 | ${pct(m.macroF1)} |`);
    L.push(`| log-loss | ${m.logLoss === null ? 'n/a (head gives uncalibrated scores)' : m.logLoss.toFixed(4)} |`, '');
    const unseen = Object.entries(m.unseen);
    if (unseen.length) L.push(`Labels the head never saw in training (counted as errors): ${unseen.map(([k, v]) => `${k} (${v})`).join(', ')}.`, '');
    L.push('| class | precision | recall | F1 | support |', '| --- | ---: | ---: | ---: | ---: |');
    for (const c of m.perClass) L.push(`| ${c.label} | ${pct(c.precision)} | ${pct(c.recall)} | ${c.f1.toFixed(3)} | ${c.support} |`);
    L.push('');
    if (r.plots.includes(`confusion-${split}.png`)) L.push(`![confusion matrix](confusion-${split}.png)`, '');
  }
  if (r.plots.includes('sweep.png')) L.push('![sweep curve](sweep.png)', '');
  if (r.plots.includes('learning-loss.png')) L.push('![learning curve](learning-loss.png)', '');
  if (r.plots.includes('learning-acc.png')) L.push('![validation accuracy](learning-acc.png)', '');
  if (r.warnings.length) L.push('## Warnings', '', ...r.warnings.map((w) => `- ${w}`), '');
  return L.join('\n');
}
