/**
 * Image decoding and the bad-input cases of issue 3: every case is a real file written to a temp
 * folder by this test (or the shared hymenoptera GIF), and each asserts the error category + reason.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, copyFile, mkdir, rm, symlink, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { crc32, deflateSync } from 'node:zlib';
import sharp from 'sharp';
import type { ModelCard } from '../src/model/card.js';
import { resolvePreprocess } from '../src/image/plan.js';
import { ImageError, loadImagePixels, type ImageErrorKind } from '../src/image/decode.js';
import { findPython } from './helpers/python.js';
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { tempDir } from './helpers/tmp.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const shared = path.resolve(repoRoot, '../shared');
const HYMENOPTERA_GIF = path.join(shared, 'datasets/hymenoptera/train/ants/imageNotFound.gif');

const card: ModelCard = {
  id: 'test',
  description: '',
  source: '',
  license: 'MIT',
  input: { size: [32, 32], layout: 'NCHW', channel_order: 'RGB', dtype: 'float32', range: [0, 1], mean: [0, 0, 0], std: [1, 1, 1] },
  resize: { policy: 'crop', crop_pct: 0.875, interpolation: 'bilinear' },
};
const plan = resolvePreprocess(card);

let dir = '';
before(async () => {
  dir = await tempDir('xfer-decode-');
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function solid(w: number, h: number, rgb: [number, number, number], fmt: 'jpeg' | 'png' | 'gif' | 'webp' | 'tiff' = 'png'): Promise<Buffer> {
  return sharp({ create: { width: w, height: h, channels: 3, background: { r: rgb[0], g: rgb[1], b: rgb[2] } } })
    .toFormat(fmt)
    .toBuffer();
}

async function put(name: string, bytes: Buffer | string): Promise<string> {
  const f = path.join(dir, name);
  await writeFile(f, bytes);
  return f;
}

async function rejectsWith(file: string | Buffer, kind: ImageErrorKind, reason: RegExp, p = plan): Promise<ImageError> {
  try {
    await loadImagePixels(file, p);
  } catch (e) {
    assert.ok(e instanceof ImageError, `expected ImageError, got ${String(e)}`);
    assert.equal(e.kind, kind, `kind for ${e.reason}`);
    assert.match(e.reason, reason);
    assert.deepEqual(Object.keys(e.toRecord()), ['path', 'reason']);
    return e;
  }
  assert.fail(`expected ${kind} error for ${String(file)}`);
}

function meanRgb(data: Uint8Array): [number, number, number] {
  const s = [0, 0, 0];
  for (let i = 0; i < data.length; i++) s[i % 3] += data[i];
  const n = data.length / 3;
  return [s[0] / n, s[1] / n, s[2] / n];
}

/** A valid PNG whose IHDR claims w x h (8-bit RGB) with a tiny IDAT: a decompression-bomb header. */
/** One PNG chunk: length, type, data, CRC-32 of type + data. */
function pngChunk(type: string, data: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const typed = Buffer.concat([Buffer.from(type, 'latin1'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(typed));
  return Buffer.concat([len, typed, crc]);
}

function pngHeader(w: number, h: number): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr[8] = 8;
  ihdr[9] = 2;
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), pngChunk('IHDR', ihdr), pngChunk('IDAT', deflateSync(Buffer.alloc(64))), pngChunk('IEND', Buffer.alloc(0))]);
}

test('a plain JPEG decodes to size×size×3 in RGB order', async () => {
  const f = await put('red.jpg', await solid(80, 60, [200, 30, 10], 'jpeg'));
  const px = await loadImagePixels(f, plan);
  assert.equal(px.width, 32);
  assert.equal(px.height, 32);
  assert.equal(px.data.length, 32 * 32 * 3);
  assert.equal(px.format, 'jpeg');
  const [r, g, b] = meanRgb(px.data);
  assert.ok(Math.abs(r - 200) < 4 && Math.abs(g - 30) < 4 && Math.abs(b - 10) < 4, `${r},${g},${b}`);
});

test('BGR plans return pixels in BGR order', async () => {
  const f = await put('red-bgr.png', await solid(40, 40, [200, 30, 10]));
  const px = await loadImagePixels(f, resolvePreprocess({ ...card, input: { ...card.input, channel_order: 'BGR' } }));
  assert.deepEqual([px.data[0], px.data[1], px.data[2]], [10, 30, 200]);
});

test('truncated JPEG → truncated', async () => {
  const full = await sharp({ create: { width: 300, height: 200, channels: 3, background: '#808080', noise: { type: 'gaussian', mean: 128, sigma: 40 } } }).jpeg().toBuffer();
  const f = await put('cut.jpg', full.subarray(0, Math.floor(full.length / 2)));
  await rejectsWith(f, 'truncated', /^truncated JPEG$/);
});

test('zero-byte file → empty', async () => {
  await rejectsWith(await put('zero.jpg', Buffer.alloc(0)), 'empty', /^empty file \(0 bytes\)$/);
});

test('text file named .jpg → not an image (text file)', async () => {
  await rejectsWith(await put('notes.jpg', 'this is not an image\nreally\n'), 'not-image', /^not an image \(text file\)$/);
});

test('HTML saved as .jpg (failed download) → not an image (HTML page)', async () => {
  await rejectsWith(await put('page.jpg', '<!DOCTYPE html><html><body>404</body></html>'), 'not-image', /HTML page/);
});

test('random bytes → not an image (unrecognised format)', async () => {
  const junk = Buffer.from(Array.from({ length: 256 }, (_, i) => (i * 37 + 1) % 256));
  await rejectsWith(await put('junk.jpg', junk), 'not-image', /unrecognised format/);
});

test('GIF named .jpg decodes (content sniffed, not the extension); first frame of an animation', async () => {
  const red = await solid(16, 16, [255, 0, 0]);
  const blue = await solid(16, 16, [0, 0, 255]);
  const anim = await sharp([red, blue], { join: { animated: true } }).gif().toBuffer();
  const f = await put('anim.jpg', anim);
  const px = await loadImagePixels(f, plan);
  assert.equal(px.format, 'gif');
  const [r, , b] = meanRgb(px.data);
  assert.ok(r > 240 && b < 15, `first frame is red, got r=${r} b=${b}`);
});

test('the GIF in hymenoptera (copied to a .jpg name) decodes', { skip: !existsSync(HYMENOPTERA_GIF) && `${HYMENOPTERA_GIF} not present` }, async () => {
  const f = path.join(dir, 'hymenoptera-gif.jpg');
  await copyFile(HYMENOPTERA_GIF, f);
  const px = await loadImagePixels(f, plan);
  assert.equal(px.format, 'gif');
  assert.equal(px.sourceWidth, 300);
  assert.equal(px.data.length, 32 * 32 * 3);
});

test('CMYK JPEG → converted to sRGB, 3 channels', async () => {
  const cmyk = await sharp({ create: { width: 40, height: 40, channels: 3, background: { r: 20, g: 200, b: 40 } } }).toColourspace('cmyk').jpeg().toBuffer();
  assert.equal((await sharp(cmyk).metadata()).space, 'cmyk');
  const px = await loadImagePixels(await put('cmyk.jpg', cmyk), plan);
  const [r, g, b] = meanRgb(px.data);
  // The CMYK round trip through ICC profiles shifts colours; it must still be clearly green.
  assert.ok(g > 150 && g > r + 60 && g > b + 60, `${r},${g},${b}`);
});

/** A PNG's chunks (type + data). */
function pngChunks(png: Buffer): { type: string; data: Buffer }[] {
  const out: { type: string; data: Buffer }[] = [];
  for (let o = 8; o + 12 <= png.length; ) {
    const len = png.readUInt32BE(o);
    out.push({ type: png.toString('latin1', o + 4, o + 8), data: png.subarray(o + 8, o + 8 + len) });
    o += 12 + len;
  }
  return out;
}

/** `png` with one more chunk right after IHDR (where iCCP belongs), pixels untouched. */
function withPngChunk(png: Buffer, chunk: { type: string; data: Buffer }): Buffer {
  const ihdrEnd = 8 + 12 + png.readUInt32BE(8);
  return Buffer.concat([png.subarray(0, ihdrEnd), pngChunk(chunk.type, chunk.data), png.subarray(ihdrEnd)]);
}

test('ICC profile: ignored by default (pixels as stored, like PIL convert("RGB")), converted to sRGB with applyIcc', async () => {
  // Saturated red stored as Display-P3 values: a PNG of exactly these bytes, tagged with sharp's P3 profile.
  const stored: [number, number, number] = [220, 40, 40];
  const plain = await solid(40, 40, stored, 'png');
  const iccp = pngChunks(await sharp(plain).withIccProfile('p3').png().toBuffer()).find((c) => c.type === 'iCCP');
  assert.ok(iccp, 'sharp writes the P3 profile as an iCCP chunk');
  const tagged = await put('p3.png', withPngChunk(plain, iccp));
  const meta = await sharp(tagged).metadata();
  assert.ok(meta.hasProfile && meta.icc, 'the test file carries an ICC profile');

  const asStored = await loadImagePixels(tagged, plan);
  assert.deepEqual(meanRgb(asStored.data), stored);
  assert.equal(resolvePreprocess(card).applyIcc, false);

  const managedPlan = resolvePreprocess(card, { applyIcc: true });
  const managed = meanRgb((await loadImagePixels(tagged, managedPlan)).data);
  // P3 red is outside sRGB: through the profile it comes out redder with less green than stored.
  assert.ok(managed[0] > stored[0] + 10 && managed[1] < stored[1] - 10, `managed ${managed} vs stored ${stored}`);
});

const HYMENOPTERA_BEES = path.join(shared, 'datasets/hymenoptera/val/bees');
const pil = findPython(['PIL']);
test('photos with an ICC profile decode to exactly what PIL Image.convert("RGB") gives (torchvision\'s loader)', {
  skip: (!existsSync(HYMENOPTERA_BEES) && `${HYMENOPTERA_BEES} not present`) || (!pil && 'python3 with PIL (python3-pil) not found'),
}, async () => {
  let checked = 0;
  for (const f of readdirSync(HYMENOPTERA_BEES).sort()) {
    const file = path.join(HYMENOPTERA_BEES, f);
    const meta = await sharp(file).metadata();
    if (!meta.hasProfile || !meta.width || !meta.height) continue;
    // squash to the photo's own size: no resampling, so the decode itself is compared
    const own = resolvePreprocess({ ...card, input: { ...card.input, size: [meta.height, meta.width] }, resize: { ...card.resize, policy: 'squash' } });
    const px = await loadImagePixels(file, own);
    const r = spawnSync(pil!, ['-c', 'import sys; from PIL import Image; sys.stdout.buffer.write(Image.open(sys.argv[1]).convert("RGB").tobytes())', file], { maxBuffer: 1 << 26 });
    assert.equal(r.status, 0, String(r.stderr));
    assert.ok(Buffer.from(px.data).equals(r.stdout), `${f}: pixels differ from PIL`);
    if (++checked === 5) break;
  }
  assert.equal(checked, 5, 'five hymenoptera/val/bees photos carry an ICC profile');
});

test('16-bit PNG → 8-bit', async () => {
  const png16 = await sharp({ create: { width: 20, height: 20, channels: 3, background: { r: 10, g: 200, b: 30 } } }).toColourspace('rgb16').png().toBuffer();
  assert.equal((await sharp(png16).metadata()).depth, 'ushort');
  const px = await loadImagePixels(await put('deep.png', png16), plan);
  assert.deepEqual([px.data[0], px.data[1], px.data[2]], [10, 200, 30]);
});

test('grey PNG → 3 equal channels', async () => {
  const grey = await sharp({ create: { width: 20, height: 20, channels: 3, background: { r: 90, g: 90, b: 90 } } }).toColourspace('b-w').png().toBuffer();
  assert.equal((await sharp(grey).metadata()).channels, 1);
  const px = await loadImagePixels(await put('grey.png', grey), plan);
  assert.deepEqual([px.data[0], px.data[1], px.data[2]], [90, 90, 90]);
});

test('RGBA PNG → alpha flattened onto the plan background (default white, configurable)', async () => {
  const rgba = await sharp({ create: { width: 20, height: 20, channels: 4, background: { r: 255, g: 0, b: 0, alpha: 0 } } }).png().toBuffer();
  const f = await put('clear.png', rgba);
  const white = await loadImagePixels(f, plan);
  assert.deepEqual([...white.data.subarray(0, 3)], [255, 255, 255]);
  const black = await loadImagePixels(f, resolvePreprocess(card, { background: [0, 0, 0] }));
  assert.deepEqual([...black.data.subarray(0, 3)], [0, 0, 0]);
  const half = await sharp({ create: { width: 20, height: 20, channels: 4, background: { r: 0, g: 0, b: 255, alpha: 0.5 } } }).png().toBuffer();
  const px = await loadImagePixels(await put('half.png', half), plan);
  assert.ok(Math.abs(px.data[0] - 128) <= 2 && px.data[2] === 255, `${px.data[0]},${px.data[2]}`);
});

test('1×1 image → upscaled to the full size', async () => {
  const px = await loadImagePixels(await put('dot.png', await solid(1, 1, [12, 34, 56])), plan);
  assert.equal(px.data.length, 32 * 32 * 3);
  assert.deepEqual(meanRgb(px.data), [12, 34, 56]);
});

test('20000×20000 header (decompression bomb) → too-large, before decoding', async () => {
  const f = await put('bomb.png', pngHeader(20000, 20000));
  await rejectsWith(f, 'too-large', /^image too large: 20000×20000 exceeds limitInputPixels \(100000000\)$/);
  // The limit is configurable.
  await rejectsWith(await put('small.png', await solid(20, 20, [1, 2, 3])), 'too-large', /20×20 exceeds limitInputPixels \(100\)/, resolvePreprocess(card, { limitInputPixels: 100 }));
});

test('a directory named x.jpg → not-a-file', async () => {
  const d = path.join(dir, 'folder.jpg');
  await mkdir(d);
  await rejectsWith(d, 'not-a-file', /^is a directory, not an image file$/);
});

test('missing file → not-found', async () => {
  await rejectsWith(path.join(dir, 'nope.jpg'), 'not-found', /^file not found$/);
});

test('image-named symlinks (listed unresolved by discovery): broken → not-found "broken symlink", to a folder → not-a-file, a loop → not-a-file', async () => {
  await symlink(path.join(dir, 'nowhere.jpg'), path.join(dir, 'broken-link.jpg'));
  await rejectsWith(path.join(dir, 'broken-link.jpg'), 'not-found', /^broken symlink$/);
  await mkdir(path.join(dir, 'a-folder'));
  await symlink(path.join(dir, 'a-folder'), path.join(dir, 'folder-link.jpg'));
  await rejectsWith(path.join(dir, 'folder-link.jpg'), 'not-a-file', /^is a directory, not an image file$/);
  await symlink(path.join(dir, 'loop-b.jpg'), path.join(dir, 'loop-a.jpg'));
  await symlink(path.join(dir, 'loop-a.jpg'), path.join(dir, 'loop-b.jpg'));
  await rejectsWith(path.join(dir, 'loop-a.jpg'), 'not-a-file', /^symlink loop$/);
});

test('unreadable file (chmod 000) → permission denied', { skip: process.getuid?.() === 0 && 'running as root: chmod 000 files stay readable (the directory case above covers unreadable paths)' }, async () => {
  const f = await put('locked.jpg', await solid(10, 10, [1, 2, 3], 'jpeg'));
  await chmod(f, 0o000);
  try {
    await rejectsWith(f, 'permission', /^permission denied$/);
  } finally {
    await chmod(f, 0o644);
  }
});

test('non-UTF-8 file name (byte 0xff) → decodes through the Buffer path', async () => {
  const name = Buffer.concat([Buffer.from(path.join(dir, 'bad')), Buffer.from([0xff]), Buffer.from('.png')]);
  await writeFile(name, await solid(8, 8, [7, 8, 9]));
  const px = await loadImagePixels(name, plan);
  assert.deepEqual([...px.data.subarray(0, 3)], [7, 8, 9]);
});

test('EXIF orientation is applied (90° → width and height swap)', async () => {
  const j = await sharp({ create: { width: 40, height: 20, channels: 3, background: '#336699' } }).jpeg().withMetadata({ orientation: 6 }).toBuffer();
  const px = await loadImagePixels(await put('rot.jpg', j), plan);
  assert.equal(px.sourceWidth, 20);
  assert.equal(px.sourceHeight, 40);
});

test('WebP and TIFF decode', async () => {
  for (const fmt of ['webp', 'tiff'] as const) {
    const px = await loadImagePixels(await put(`x.${fmt}`, await solid(30, 20, [100, 150, 200], fmt)), plan);
    const [r, g, b] = meanRgb(px.data);
    assert.ok(Math.abs(r - 100) < 4 && Math.abs(g - 150) < 4 && Math.abs(b - 200) < 4, `${fmt}: ${r},${g},${b}`);
  }
});

test('BMP (24-bit, 8-bit palette top-down) decodes with the built-in decoder; truncated BMP → truncated', async () => {
  // 24-bit bottom-up 3x2: row 0 (top) red,green,blue; row 1 white,black,grey.
  const w = 3;
  const h = 2;
  const stride = 12;
  const pix = Buffer.alloc(stride * h);
  const put24 = (x: number, y: number, r: number, g: number, b: number) => pix.set([b, g, r], (h - 1 - y) * stride + x * 3);
  put24(0, 0, 255, 0, 0);
  put24(1, 0, 0, 255, 0);
  put24(2, 0, 0, 0, 255);
  put24(0, 1, 255, 255, 255);
  put24(1, 1, 0, 0, 0);
  put24(2, 1, 128, 128, 128);
  const hdr = Buffer.alloc(54);
  hdr.write('BM', 0, 'latin1');
  hdr.writeUInt32LE(54 + pix.length, 2);
  hdr.writeUInt32LE(54, 10);
  hdr.writeUInt32LE(40, 14);
  hdr.writeInt32LE(w, 18);
  hdr.writeInt32LE(h, 22);
  hdr.writeUInt16LE(1, 26);
  hdr.writeUInt16LE(24, 28);
  const bmp = Buffer.concat([hdr, pix]);
  const nearest = resolvePreprocess({ ...card, input: { ...card.input, size: [2, 3] }, resize: { policy: 'squash', crop_pct: 1, interpolation: 'nearest' } });
  const px = await loadImagePixels(await put('tiny.bmp', bmp), nearest);
  assert.equal(px.format, 'bmp');
  assert.deepEqual([...px.data], [255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255, 0, 0, 0, 128, 128, 128]);
  await rejectsWith(await put('cut.bmp', bmp.subarray(0, 60)), 'truncated', /truncated BMP/);

  // 8-bit palette, top-down (negative height), 2x1: palette[0]=blue, palette[1]=yellow.
  const h8 = Buffer.alloc(54 + 8 + 4);
  h8.write('BM', 0, 'latin1');
  h8.writeUInt32LE(h8.length, 2);
  h8.writeUInt32LE(62, 10);
  h8.writeUInt32LE(40, 14);
  h8.writeInt32LE(2, 18);
  h8.writeInt32LE(-1, 22);
  h8.writeUInt16LE(1, 26);
  h8.writeUInt16LE(8, 28);
  h8.writeUInt32LE(2, 46);
  h8.set([255, 0, 0, 0, 0, 255, 255, 0], 54);
  h8.set([1, 0, 0, 0], 62);
  const p8 = await loadImagePixels(await put('pal.bmp', h8), resolvePreprocess({ ...card, input: { ...card.input, size: [1, 2] }, resize: { policy: 'squash', crop_pct: 1, interpolation: 'nearest' } }));
  assert.deepEqual([...p8.data], [255, 255, 0, 0, 0, 255]);
});

test('shared BMP photos decode', { skip: !existsSync(path.join(shared, 'images/grace_hopper.bmp')) && 'shared images not present' }, async () => {
  const px = await loadImagePixels(path.join(shared, 'images/grace_hopper.bmp'), plan);
  assert.equal(px.sourceWidth, 512);
  assert.equal(px.sourceHeight, 600);
});
