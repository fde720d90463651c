/**
 * sharp, loaded through its CommonJS build. On Node 20, `import 'sharp'` takes sharp's ESM build,
 * which costs about twice as much to load (measured here: 140 ms and 235 ms of CPU against 65 ms and
 * 77 ms, five runs each) — and sharp loads on every `extract` and `predict` while the inference
 * sessions open, when both cores are busy. The two builds are the same code.
 */
import { createRequire } from 'node:module';
import type SharpModule from 'sharp';

const sharp: typeof SharpModule = createRequire(import.meta.url)('sharp');

export default sharp;
