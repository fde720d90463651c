/**
 * PNG plots for reports: confusion matrix, sweep curve, MLP learning curves.
 *
 * We build small SVG documents (plain strings: axes, ticks, rects, polylines) and rasterise them with
 * @resvg/resvg-js. Why resvg: it is a real SVG renderer (anti-aliasing, text shaping with system
 * fonts) shipped as a prebuilt napi binary inside the npm package (no postinstall download, unlike
 * canvas), with no browser or native build; vega-lite would add ~10 MB of dependencies for three
 * simple chart types. If no system font is found, text is simply not drawn; the plot still renders.
 */
import { Resvg } from '@resvg/resvg-js';

const FONT = 'DejaVu Sans, Liberation Sans, Arial, sans-serif';

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

export function svgToPng(svg: string): Buffer {
  const r = new Resvg(svg, { font: { loadSystemFonts: true, defaultFontFamily: 'DejaVu Sans' }, background: 'white' });
  return r.render().asPng();
}

/** Confusion matrix heatmap (rows true, cols predicted), row-normalised colour, counts written. */
export function confusionSvg(conf: number[][], labels: string[], title = 'Confusion matrix'): string {
  const k = labels.length;
  const cell = Math.max(14, Math.min(48, Math.floor(640 / Math.max(1, k))));
  const maxLab = Math.min(24, Math.max(...labels.map((l) => l.length), 4));
  const left = 20 + maxLab * 7;
  const top = 50 + maxLab * 5;
  const W = Math.max(left + k * cell + 30, 400);
  const H = top + k * cell + 50;
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="${FONT}">`);
  parts.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  parts.push(`<text x="${W / 2}" y="22" font-size="15" text-anchor="middle">${esc(title)}</text>`);
  for (let i = 0; i < k; i++) {
    const rowSum = conf[i].reduce((a, b) => a + b, 0);
    for (let j = 0; j < k; j++) {
      const v = conf[i][j];
      const f = rowSum ? v / rowSum : 0;
      const shade = Math.round(255 - f * 200);
      const colour = i === j ? `rgb(${shade},${Math.round(255 - f * 120)},${shade})` : `rgb(255,${shade},${shade})`;
      const x = left + j * cell;
      const y = top + i * cell;
      parts.push(`<rect x="${x}" y="${y}" width="${cell}" height="${cell}" fill="${colour}" stroke="#ccc" stroke-width="0.5"/>`);
      if (v > 0 && cell >= 18) parts.push(`<text x="${x + cell / 2}" y="${y + cell / 2 + 4}" font-size="${Math.min(12, cell / 3)}" text-anchor="middle">${v}</text>`);
    }
    const lab = esc(labels[i].slice(0, maxLab));
    parts.push(`<text x="${left - 6}" y="${top + i * cell + cell / 2 + 4}" font-size="11" text-anchor="end">${lab}</text>`);
    const cx = left + i * cell + cell / 2;
    parts.push(`<text x="${cx}" y="${top - 6}" font-size="11" text-anchor="start" transform="rotate(-45 ${cx} ${top - 6})">${lab}</text>`);
  }
  parts.push(`<text x="${left + (k * cell) / 2}" y="${H - 15}" font-size="12" text-anchor="middle">predicted</text>`);
  parts.push(`<text x="14" y="${top + (k * cell) / 2}" font-size="12" text-anchor="middle" transform="rotate(-90 14 ${top + (k * cell) / 2})">true</text>`);
  parts.push('</svg>');
  return parts.join('\n');
}

export interface Series {
  name: string;
  x: number[];
  y: number[];
  colour?: string;
  /** error bars (± per point) */
  err?: number[];
}

const COLOURS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd'];

function ticks(lo: number, hi: number, n = 5): number[] {
  if (!(hi > lo)) return [lo];
  const step0 = (hi - lo) / n;
  const mag = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= step0) ?? step0;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-12; v += step) out.push(Number(v.toPrecision(6)));
  return out;
}

/** Line chart; `logX` plots x on log10 scale (sweep curves). */
export function lineChartSvg(series: Series[], opts: { title: string; xLabel: string; yLabel: string; logX?: boolean; mark?: number }): string {
  const W = 640;
  const H = 400;
  const L = 70;
  const R = 20;
  const T = 40;
  const B = 55;
  const tx = (v: number): number => (opts.logX ? Math.log10(v) : v);
  const xs = series.flatMap((s) => s.x.map(tx));
  const ys = series.flatMap((s) => s.y.flatMap((v, i) => (s.err ? [v - s.err[i], v + s.err[i]] : [v]))).filter(Number.isFinite);
  let x0 = Math.min(...xs);
  let x1 = Math.max(...xs);
  if (x0 === x1) {
    x0 -= 1;
    x1 += 1;
  }
  let y0 = Math.min(...ys);
  let y1 = Math.max(...ys);
  if (y0 === y1) {
    y0 -= 0.5;
    y1 += 0.5;
  }
  const pad = (y1 - y0) * 0.05;
  y0 -= pad;
  y1 += pad;
  const px = (v: number): number => L + ((tx(v) - x0) / (x1 - x0)) * (W - L - R);
  const py = (v: number): number => T + (1 - (v - y0) / (y1 - y0)) * (H - T - B);
  const p: string[] = [];
  p.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="${FONT}">`);
  p.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  p.push(`<text x="${W / 2}" y="22" font-size="15" text-anchor="middle">${esc(opts.title)}</text>`);
  p.push(`<rect x="${L}" y="${T}" width="${W - L - R}" height="${H - T - B}" fill="none" stroke="#333"/>`);
  for (const v of ticks(y0, y1)) {
    const y = py(v);
    p.push(`<line x1="${L}" x2="${W - R}" y1="${y}" y2="${y}" stroke="#eee"/>`);
    p.push(`<text x="${L - 6}" y="${y + 4}" font-size="11" text-anchor="end">${v}</text>`);
  }
  const xt = opts.logX ? ticks(x0, x1).filter((v) => Number.isInteger(v)) : ticks(x0, x1);
  for (const v of xt) {
    const x = L + ((v - x0) / (x1 - x0)) * (W - L - R);
    p.push(`<line x1="${x}" x2="${x}" y1="${T}" y2="${H - B}" stroke="#eee"/>`);
    p.push(`<text x="${x}" y="${H - B + 16}" font-size="11" text-anchor="middle">${opts.logX ? `1e${v}` : v}</text>`);
  }
  series.forEach((s, si) => {
    const c = s.colour ?? COLOURS[si % COLOURS.length];
    const pts = s.x.map((x, i) => `${px(x).toFixed(1)},${py(s.y[i]).toFixed(1)}`).join(' ');
    p.push(`<polyline points="${pts}" fill="none" stroke="${c}" stroke-width="2"/>`);
    s.x.forEach((x, i) => {
      if (s.err) p.push(`<line x1="${px(x)}" x2="${px(x)}" y1="${py(s.y[i] - s.err[i])}" y2="${py(s.y[i] + s.err[i])}" stroke="${c}"/>`);
      if (s.x.length <= 40) p.push(`<circle cx="${px(x)}" cy="${py(s.y[i])}" r="3" fill="${c}"/>`);
    });
    p.push(`<rect x="${W - R - 150}" y="${T + 8 + si * 18}" width="12" height="3" fill="${c}"/>`);
    p.push(`<text x="${W - R - 132}" y="${T + 13 + si * 18}" font-size="11">${esc(s.name)}</text>`);
  });
  if (opts.mark !== undefined) p.push(`<line x1="${px(opts.mark)}" x2="${px(opts.mark)}" y1="${T}" y2="${H - B}" stroke="#888" stroke-dasharray="4 3"/>`);
  p.push(`<text x="${(L + W - R) / 2}" y="${H - 15}" font-size="12" text-anchor="middle">${esc(opts.xLabel)}</text>`);
  p.push(`<text x="16" y="${(T + H - B) / 2}" font-size="12" text-anchor="middle" transform="rotate(-90 16 ${(T + H - B) / 2})">${esc(opts.yLabel)}</text>`);
  p.push('</svg>');
  return p.join('\n');
}

/** Categorical colours for scatter plots (Tableau 10, then greys cycle). */
const CATEGORY = ['#4e79a7', '#f28e2b', '#e15759', '#76b7b2', '#59a14f', '#edc948', '#b07aa1', '#ff9da7', '#9c755f', '#bab0ac'];

/** Scatter plot of 2-D points coloured by class, with a legend (`cls[i]` indexes `classes`; -1 = unlabelled, grey). */
export function scatterSvg(x: ArrayLike<number>, y: ArrayLike<number>, cls: ArrayLike<number>, classes: string[], opts: { title: string; xLabel: string; yLabel: string }): string {
  const W = 760;
  const H = 560;
  const L = 60;
  const legendW = Math.min(200, 40 + 7 * Math.max(4, ...classes.map((c) => Math.min(24, c.length))));
  const R = 20 + legendW;
  const T = 40;
  const B = 50;
  const n = x.length;
  let x0 = Infinity;
  let x1 = -Infinity;
  let y0 = Infinity;
  let y1 = -Infinity;
  for (let i = 0; i < n; i++) {
    x0 = Math.min(x0, x[i]);
    x1 = Math.max(x1, x[i]);
    y0 = Math.min(y0, y[i]);
    y1 = Math.max(y1, y[i]);
  }
  if (!(x1 > x0)) [x0, x1] = [x0 - 1, x0 + 1];
  if (!(y1 > y0)) [y0, y1] = [y0 - 1, y0 + 1];
  const padX = (x1 - x0) * 0.04;
  const padY = (y1 - y0) * 0.04;
  [x0, x1, y0, y1] = [x0 - padX, x1 + padX, y0 - padY, y1 + padY];
  const px = (v: number): number => L + ((v - x0) / (x1 - x0)) * (W - L - R);
  const py = (v: number): number => T + (1 - (v - y0) / (y1 - y0)) * (H - T - B);
  const colour = (c: number): string => (c < 0 ? '#999' : CATEGORY[c % CATEGORY.length]);
  const r = n > 5000 ? 1.5 : n > 1000 ? 2.5 : 3.5;
  const p: string[] = [];
  p.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="${FONT}">`);
  p.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  p.push(`<text x="${(L + W - R) / 2}" y="22" font-size="15" text-anchor="middle">${esc(opts.title)}</text>`);
  p.push(`<rect x="${L}" y="${T}" width="${W - L - R}" height="${H - T - B}" fill="none" stroke="#333"/>`);
  for (let i = 0; i < n; i++) p.push(`<circle cx="${px(x[i]).toFixed(1)}" cy="${py(y[i]).toFixed(1)}" r="${r}" fill="${colour(cls[i])}" fill-opacity="0.75"/>`);
  const shown = classes.slice(0, 30);
  shown.forEach((c, i) => {
    p.push(`<circle cx="${W - R + 20}" cy="${T + 10 + i * 16}" r="4" fill="${colour(i)}"/>`);
    p.push(`<text x="${W - R + 30}" y="${T + 14 + i * 16}" font-size="11">${esc(c.length > 24 ? `${c.slice(0, 23)}…` : c)}</text>`);
  });
  if (classes.length > shown.length) p.push(`<text x="${W - R + 14}" y="${T + 14 + shown.length * 16}" font-size="11">… ${classes.length - shown.length} more</text>`);
  p.push(`<text x="${(L + W - R) / 2}" y="${H - 15}" font-size="12" text-anchor="middle">${esc(opts.xLabel)}</text>`);
  p.push(`<text x="16" y="${(T + H - B) / 2}" font-size="12" text-anchor="middle" transform="rotate(-90 16 ${(T + H - B) / 2})">${esc(opts.yLabel)}</text>`);
  p.push('</svg>');
  return p.join('\n');
}
