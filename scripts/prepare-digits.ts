/**
 * scikit-learn's handwritten digits (UCI optical digits: 1797 greyscale 8×8 images, 10 classes) as
 * an ImageFolder tree, a third `xfer advise` case (docs/advise.md): tiny, far from photos.
 *   apt-get install python3-sklearn    (Debian: .../sklearn/datasets/data/digits.csv.gz; or any
 *                                       scikit-learn install: set DIGITS_CSV to its digits.csv.gz)
 *   node dist/scripts/prepare-digits.js [--out data/digits] [--scale 4]
 * writes <out>/<digit>/<index>.png, each 8×8 image (values 0..16) scaled to 0..255 and enlarged
 * --scale times with nearest-neighbour sampling (the backbone resizes it further to its input).
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { parseArgs } from 'node:util';
import sharp from 'sharp';

const CANDIDATES = [process.env.DIGITS_CSV, '/usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz'].filter((p): p is string => !!p);
const { values } = parseArgs({ options: { out: { type: 'string', default: 'data/digits' }, scale: { type: 'string', default: '4' } } });
const src = CANDIDATES.find((p) => existsSync(p));
if (!src) {
  console.error(`digits.csv.gz not found (tried ${CANDIDATES.join(', ')}): apt-get install python3-sklearn, or set DIGITS_CSV`);
  process.exit(2);
}
const marker = path.join(values.out!, '.complete');
if (existsSync(marker)) {
  console.log(`${values.out}: already prepared`);
  process.exit(0);
}
const lines = gunzipSync(await readFile(src)).toString('utf8').trim().split('\n');
const s = Number(values.scale);
let n = 0;
for (const line of lines) {
  const v = line.split(',').map(Number);
  if (v.length !== 65) continue;
  const label = v[64];
  const px = Buffer.alloc(64 * s * s);
  for (let y = 0; y < 8 * s; y++) for (let x = 0; x < 8 * s; x++) px[y * 8 * s + x] = Math.round((v[Math.floor(y / s) * 8 + Math.floor(x / s)] / 16) * 255);
  const dir = path.join(values.out!, String(label));
  await mkdir(dir, { recursive: true });
  await sharp(px, { raw: { width: 8 * s, height: 8 * s, channels: 1 } }).png().toFile(path.join(dir, `${String(n).padStart(4, '0')}.png`));
  n++;
}
await writeFile(marker, '');
console.log(`${values.out}: ${n} images in 10 classes (from ${src})`);
