/**
 * `misclassified.html` of `xfer eval`: the confusion matrix and, beside it, every misclassified
 * image of the split (most confident mistakes first) as a thumbnail with its true label, predicted
 * label and confidence. Thumbnails are embedded (data: URIs), so the page stays whole when the
 * folder is copied elsewhere; an image that cannot be read any more is listed without one.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import sharp from 'sharp';

export interface Misclassified {
  /** Path as recorded in the feature folder's index (relative to its data root). */
  path: string;
  /** Where the image is on disk now. */
  file: string;
  truth: string;
  predicted: string;
  /** Probability (or softmax of the scores, for an uncalibrated head) of the predicted label. */
  confidence: number;
}

/** Thumbnails embedded at most; the rest are listed by path. */
export const MAX_THUMBNAILS = 300;
const THUMB_PX = 128;

function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

async function thumbnail(file: string): Promise<string | null> {
  try {
    const jpeg = await sharp(file, { failOn: 'none' }).rotate().resize(THUMB_PX, THUMB_PX, { fit: 'inside' }).flatten({ background: '#ffffff' }).jpeg({ quality: 75 }).toBuffer();
    return `data:image/jpeg;base64,${jpeg.toString('base64')}`;
  } catch {
    return null;
  }
}

/** Write `<dir>/misclassified.html`; `confusionPng` is a file name in `dir` (or null when none was drawn). Returns the page's path. */
export async function writeMisclassifiedPage(dir: string, opts: { split: string; total: number; confidenceKind: 'probability' | 'softmax of scores'; confusionPng: string | null; misses: Misclassified[] }): Promise<string> {
  const misses = [...opts.misses].sort((a, b) => b.confidence - a.confidence || a.path.localeCompare(b.path));
  const cards: string[] = [];
  for (const [i, m] of misses.entries()) {
    const src = i < MAX_THUMBNAILS ? await thumbnail(m.file) : null;
    const img = src ? `<img src="${src}" alt="${esc(m.path)}">` : `<div class="none">${i < MAX_THUMBNAILS ? 'image not readable' : 'no thumbnail'}</div>`;
    cards.push(
      `<figure>${img}<figcaption><b>true</b> ${esc(m.truth)}<br><b>predicted</b> ${esc(m.predicted)} (${(100 * m.confidence).toFixed(1)}%)<br><span class="path">${esc(m.path)}</span></figcaption></figure>`,
    );
  }
  const title = `Misclassified ${opts.split} images: ${misses.length} of ${opts.total}`;
  const html = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(title)}</title>
<style>
body { font-family: sans-serif; margin: 1.5em; display: flex; gap: 2em; align-items: flex-start; flex-wrap: wrap; }
.matrix { flex: 0 0 auto; } .matrix img { max-width: 640px; }
.grid { flex: 1 1 600px; display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; width: ${THUMB_PX + 16}px; font-size: 12px; }
figure img, .none { width: ${THUMB_PX}px; height: ${THUMB_PX}px; object-fit: contain; background: #eee; display: flex; align-items: center; justify-content: center; color: #777; }
.path { color: #666; word-break: break-all; }
</style></head>
<body>
<section class="matrix"><h1>${esc(title)}</h1>
<p>Most confident mistakes first. Confidence is the ${opts.confidenceKind} of the predicted label.</p>
${opts.confusionPng ? `<img src="${esc(opts.confusionPng)}" alt="confusion matrix">` : ''}
</section>
<section class="grid">
${cards.join('\n') || '<p>No misclassified images.</p>'}
</section>
</body></html>
`;
  const file = path.join(dir, 'misclassified.html');
  await writeFile(file, html);
  return file;
}
