/**
 * readImageHeader (src/image/header.ts) answers size and EXIF orientation for plain JPEG/PNG headers
 * instead of a sharp metadata() call: whenever it answers, the answer must be libvips' own, and every
 * header it cannot vouch for must come back null (the decoder then asks sharp).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import type { ModelCard } from '../src/model/card.js';
import { readImageHeader } from '../src/image/header.js';
import { decodeImageBuffer, ImageError } from '../src/image/decode.js';
import { resolvePreprocess } from '../src/image/plan.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const shared = path.resolve(repoRoot, '../shared');

/** What libvips says (null when it cannot read the header). */
async function vipsHeader(buf: Buffer): Promise<{ width: number; height: number; orientation: number } | null> {
  try {
    const m = await sharp(buf, { limitInputPixels: false, pages: 1 }).metadata();
    return { width: m.width ?? 0, height: m.pageHeight ?? m.height ?? 0, orientation: m.orientation ?? 1 };
  } catch {
    return null;
  }
}

const base = (w = 40, h = 20) => sharp({ create: { width: w, height: h, channels: 3, background: '#336699' } });

/** An APP1 "Exif" segment holding one IFD0 entry (tag 0x0112 unless given), big- or little-endian. */
function exifApp1(value: number, opts: { bigEndian?: boolean; type?: number; tag?: number } = {}): Buffer {
  const be = opts.bigEndian ?? false;
  const t = Buffer.alloc(8 + 2 + 12 + 4);
  const w16 = (v: number, o: number) => (be ? t.writeUInt16BE(v, o) : t.writeUInt16LE(v, o));
  const w32 = (v: number, o: number) => (be ? t.writeUInt32BE(v, o) : t.writeUInt32LE(v, o));
  t.write(be ? 'MM' : 'II', 0, 'latin1');
  w16(42, 2);
  w32(8, 4);
  w16(1, 8);
  w16(opts.tag ?? 0x0112, 10);
  w16(opts.type ?? 3, 12);
  w32(1, 14);
  if ((opts.type ?? 3) === 4) w32(value, 18);
  else w16(value, 18);
  w32(0, 22);
  const body = Buffer.concat([Buffer.from('Exif\0\0', 'latin1'), t]);
  const len = Buffer.alloc(2);
  len.writeUInt16BE(body.length + 2);
  return Buffer.concat([Buffer.from([0xff, 0xe1]), len, body]);
}

/** `jpeg` with `segments` inserted right after SOI. */
const withSegments = (jpeg: Buffer, ...segments: Buffer[]) => Buffer.concat([jpeg.subarray(0, 2), ...segments, jpeg.subarray(2)]);

test('JPEG: size and every EXIF orientation (1..8) as libvips reads them', async () => {
  for (let o = 1; o <= 8; o++) {
    const j = await base(40, 20).jpeg().withMetadata({ orientation: o }).toBuffer();
    const h = readImageHeader(j);
    assert.deepEqual(h, { width: 40, height: 20, orientation: o });
    assert.deepEqual(h, await vipsHeader(j));
  }
  const progressive = await base(33, 17).jpeg({ progressive: true }).toBuffer();
  assert.deepEqual(readImageHeader(progressive), { width: 33, height: 17, orientation: 1 });
  const cmyk = await base(21, 13).toColourspace('cmyk').jpeg().toBuffer();
  assert.deepEqual(readImageHeader(cmyk), await vipsHeader(cmyk));
});

test('JPEG: a big-endian EXIF block is read as libvips reads it', async () => {
  const j = withSegments(await base().jpeg().toBuffer(), exifApp1(6, { bigEndian: true }));
  assert.deepEqual(await vipsHeader(j), { width: 40, height: 20, orientation: 6 });
  assert.deepEqual(readImageHeader(j), { width: 40, height: 20, orientation: 6 });
});

test('JPEG: headers it cannot vouch for are left to sharp (null)', async () => {
  const plain = await base().jpeg().toBuffer();
  const cases: [string, Buffer][] = [
    ['two EXIF segments', withSegments(plain, exifApp1(6), exifApp1(3))],
    ['Orientation stored as a LONG', withSegments(plain, exifApp1(6, { type: 4 }))],
    ['Orientation 0 (libvips clips it)', withSegments(plain, exifApp1(0))],
    ['Orientation 9 (libvips clips it)', withSegments(plain, exifApp1(9))],
    ['cut before the frame header', plain.subarray(0, 20)],
    ['SOI only', plain.subarray(0, 3)],
  ];
  for (const [what, buf] of cases) assert.equal(readImageHeader(buf), null, what);
  // An EXIF block without an Orientation tag means 1, as in libvips.
  const other = withSegments(plain, exifApp1(2, { tag: 0x010f }));
  assert.deepEqual(readImageHeader(other), await vipsHeader(other));
});

test('PNG: size from IHDR; an eXIf chunk (orientation) or a file cut before IEND is left to sharp', async () => {
  const p = await base(31, 7).png().toBuffer();
  assert.deepEqual(readImageHeader(p), { width: 31, height: 7, orientation: 1 });
  assert.deepEqual(readImageHeader(p), await vipsHeader(p));
  const rotated = await base(31, 7).png().withMetadata({ orientation: 6 }).toBuffer();
  assert.equal(readImageHeader(rotated), null);
  assert.equal((await vipsHeader(rotated))?.orientation, 6, 'libvips does read orientation from PNG eXIf');
  assert.equal(readImageHeader(p.subarray(0, p.length - 6)), null);
  assert.equal(readImageHeader(await base().webp().toBuffer()), null, 'other formats: sharp');
});

test('damaged headers: never throws, and an answer is always libvips\' answer (or the decode fails as an ImageError)', async () => {
  const plan = resolvePreprocess({
    id: 't',
    description: '',
    source: '',
    license: 'MIT',
    input: { size: [16, 16], layout: 'NCHW', channel_order: 'RGB', dtype: 'float32', range: [0, 1], mean: [0, 0, 0], std: [1, 1, 1] },
    resize: { policy: 'crop', crop_pct: 0.875, interpolation: 'bilinear' },
  } satisfies ModelCard);
  const jpeg = withSegments(await base(40, 20).jpeg().toBuffer(), exifApp1(6, { bigEndian: true }));
  const png = await base(31, 7).png().toBuffer();
  let seed = 12345;
  const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
  const variants: Buffer[] = [];
  for (const src of [jpeg, png]) {
    for (let n = 0; n < Math.min(src.length, 260); n += 3) variants.push(src.subarray(0, n));
    for (let k = 0; k < 150; k++) {
      const b = Buffer.from(src);
      b[Math.floor(rand() * Math.min(b.length, 200))] = Math.floor(rand() * 256);
      variants.push(b);
    }
  }
  let answered = 0;
  for (const v of variants) {
    const h = readImageHeader(v);
    if (h === null) continue;
    answered++;
    const vips = await vipsHeader(v);
    if (vips !== null) assert.deepEqual(h, vips);
    else await assert.rejects(decodeImageBuffer(v, plan), (e) => e instanceof ImageError);
  }
  assert.ok(answered > 100, `only ${answered} of ${variants.length} variants answered`);
});

test('every photo in ../shared: the header read here equals libvips\'', { skip: !existsSync(path.join(shared, 'datasets')) && '../shared not present' }, async () => {
  const walk = (d: string): string[] => readdirSync(d).flatMap((n) => (statSync(path.join(d, n)).isDirectory() ? walk(path.join(d, n)) : [path.join(d, n)]));
  const files = [...walk(path.join(shared, 'datasets')), ...walk(path.join(shared, 'images'))];
  let answered = 0;
  for (const f of files) {
    const buf = readFileSync(f);
    const h = readImageHeader(buf);
    if (h === null) continue;
    answered++;
    assert.deepEqual(h, await vipsHeader(buf), f);
  }
  // Nearly all of them are plain JPEGs: the fast path must be the common one.
  assert.ok(answered >= 0.95 * files.filter((f) => /\.(jpe?g|png)$/i.test(f)).length, `answered ${answered} of ${files.length}`);
});
