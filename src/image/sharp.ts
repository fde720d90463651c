/**
 * sharp as xfer uses it.
 *
 * Loaded through its CommonJS build: on Node 20, `import 'sharp'` takes sharp's ESM build, which
 * costs about twice as much to load (measured here: 140 ms and 235 ms of CPU against 65 ms and
 * 77 ms, five runs each) — and sharp loads on every `extract` and `predict` while the inference
 * sessions open, when both cores are busy. The two builds are the same code.
 *
 * libvips' operation cache is turned off (`sharp.cache(false)`, process-wide: sharp has one cache).
 * It keeps the last 100 operations and their images (up to 50 MB) in case the same operation runs
 * again on the same input, which never happens here: every image is decoded once. Off, extraction
 * ran ×1.04 faster (median of 6 alternating pairs, hymenoptera ×5) and its peak RSS grew less from
 * 398 to 1990 images (+9.5 → +8.6 %).
 */
import { createRequire } from 'node:module';
import type SharpModule from 'sharp';

const sharp: typeof SharpModule = createRequire(import.meta.url)('sharp');
sharp.cache(false);

export default sharp;
