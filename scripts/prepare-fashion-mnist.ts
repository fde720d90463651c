/**
 * Fashion-MNIST as an ImageFolder tree, for benchmarks on real labelled images:
 *   apt-get install dataset-fashion-mnist      (Debian: idx files in /usr/share/datasets/fashion-mnist)
 *   node dist/scripts/prepare-fashion-mnist.js [--out data/fashion-mnist] [--train 20000] [--test 10000]
 * writes <out>/{train,test}/<class>/<index>.png (28×28 grey PNGs; xfer's preprocessing turns grey
 * into 3 channels). Existing trees with the same counts are left alone.
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import pLimit from 'p-limit';

const CLASSES = ['T-shirt_top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle_boot'];
const SRC = process.env.FASHION_MNIST_DIR ?? '/usr/share/datasets/fashion-mnist';

const { values } = parseArgs({ options: { out: { type: 'string', default: 'data/fashion-mnist' }, train: { type: 'string', default: '20000' }, test: { type: 'string', default: '10000' } } });

async function idx(file: string): Promise<{ dims: number[]; data: Uint8Array }> {
  const buf = gunzipSync(await readFile(path.join(SRC, file)));
  const magic = buf.readUInt32BE(0);
  const nd = magic & 0xff;
  const dims = Array.from({ length: nd }, (_, i) => buf.readUInt32BE(4 + 4 * i));
  return { dims, data: new Uint8Array(buf.buffer, buf.byteOffset + 4 + 4 * nd) };
}

async function split(name: 'train' | 't10k', dirName: string, limit: number): Promise<number> {
  const images = await idx(`${name}-images-idx3-ubyte.gz`);
  const labels = await idx(`${name}-labels-idx1-ubyte.gz`);
  const [n, h, w] = images.dims;
  const count = Math.min(limit, n);
  const out = path.join(values.out!, dirName);
  const marker = path.join(out, `.complete-${count}`);
  if (existsSync(marker)) return count;
  for (const c of CLASSES) await mkdir(path.join(out, c), { recursive: true });
  const lim = pLimit(8);
  await Promise.all(
    Array.from({ length: count }, (_, i) =>
      lim(async () => {
        const px = Buffer.from(images.data.subarray(i * h * w, (i + 1) * h * w));
        const file = path.join(out, CLASSES[labels.data[i]], `${String(i).padStart(5, '0')}.png`);
        await sharp(px, { raw: { width: w, height: h, channels: 1 } }).png().toFile(file);
      }),
    ),
  );
  await writeFile(marker, '');
  return count;
}

if (!existsSync(path.join(SRC, 'train-images-idx3-ubyte.gz'))) {
  console.error(`Fashion-MNIST idx files not found in ${SRC}: apt-get install dataset-fashion-mnist (or set FASHION_MNIST_DIR)`);
  process.exit(2);
}
const ntr = await split('train', 'train', Number(values.train));
const nte = await split('t10k', 'test', Number(values.test));
console.log(`${values.out}: ${ntr} train + ${nte} test images in ${CLASSES.length} classes`);
