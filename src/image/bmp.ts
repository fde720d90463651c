/**
 * A small Windows BMP decoder: sharp/libvips (prebuilt) has no BMP loader, and BMP is common in older
 * datasets. Supports OS/2 core and BITMAPINFOHEADER..V5 headers; 1/4/8-bit palette (incl. RLE4/RLE8),
 * 16-bit (555 or bitfields), 24-bit, 32-bit (BGRX, or bitfields with alpha); bottom-up and top-down.
 * Output: raw interleaved RGB or RGBA bytes, top row first, ready for `sharp(data, { raw })`.
 */

export class BmpError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BmpError';
  }
}

export interface BmpImage {
  width: number;
  height: number;
  channels: 3 | 4;
  data: Buffer;
}

export interface BmpHeader {
  width: number;
  height: number;
  bpp: number;
  compression: number;
  topDown: boolean;
  dataOffset: number;
  headerSize: number;
}

export function isBmp(buf: Uint8Array): boolean {
  return buf.length >= 2 && buf[0] === 0x42 && buf[1] === 0x4d;
}

/** Parse the headers only (for the pixel-count guard before allocating). */
export function readBmpHeader(buf: Buffer): BmpHeader {
  if (!isBmp(buf)) throw new BmpError('not a BMP file');
  if (buf.length < 26) throw new BmpError('truncated BMP (header cut short)');
  const dataOffset = buf.readUInt32LE(10);
  const headerSize = buf.readUInt32LE(14);
  if (headerSize === 12) {
    return { width: buf.readUInt16LE(18), height: buf.readUInt16LE(20), bpp: buf.readUInt16LE(24), compression: 0, topDown: false, dataOffset, headerSize };
  }
  if (headerSize < 40) throw new BmpError(`unsupported BMP header size ${headerSize}`);
  if (buf.length < 14 + 40) throw new BmpError('truncated BMP (header cut short)');
  const width = buf.readInt32LE(18);
  const rawH = buf.readInt32LE(22);
  const bpp = buf.readUInt16LE(28);
  const compression = buf.readUInt32LE(30);
  if (width <= 0 || rawH === 0) throw new BmpError(`invalid BMP dimensions ${width}x${rawH}`);
  return { width, height: Math.abs(rawH), bpp, compression, topDown: rawH < 0, dataOffset, headerSize };
}

function maskShift(mask: number): { shift: number; max: number } {
  if (mask === 0) return { shift: 0, max: 0 };
  let shift = 0;
  while (((mask >>> shift) & 1) === 0) shift++;
  return { shift, max: mask >>> shift };
}

/** Decode a BMP buffer. Throws BmpError with a short reason on malformed/unsupported files. */
export function decodeBmp(buf: Buffer): BmpImage {
  const hdr = readBmpHeader(buf);
  const { width, height, bpp, compression, topDown, dataOffset, headerSize } = hdr;
  const core = headerSize === 12;
  // Palette
  let palette: Uint8Array | null = null;
  if (bpp <= 8) {
    if (![1, 4, 8].includes(bpp)) throw new BmpError(`unsupported BMP bit depth ${bpp}`);
    const entry = core ? 3 : 4;
    let colours = core ? 1 << bpp : buf.readUInt32LE(46) || 1 << bpp;
    colours = Math.min(colours, 256);
    const start = 14 + headerSize + (!core && compression === 3 && headerSize === 40 ? 12 : 0);
    if (start + colours * entry > buf.length) throw new BmpError('truncated BMP (palette cut short)');
    palette = new Uint8Array(256 * 3);
    for (let i = 0; i < colours; i++) {
      palette[i * 3] = buf[start + i * entry + 2];
      palette[i * 3 + 1] = buf[start + i * entry + 1];
      palette[i * 3 + 2] = buf[start + i * entry];
    }
  }
  // Bitfield masks
  let masks: [number, number, number, number] | null = null;
  if (compression === 3 || compression === 6) {
    if (bpp !== 16 && bpp !== 32) throw new BmpError(`BMP bitfields with ${bpp} bits per pixel are not supported`);
    const at = 14 + 40;
    if (at + 12 > buf.length) throw new BmpError('truncated BMP (masks cut short)');
    const alpha = headerSize >= 56 || compression === 6 ? buf.readUInt32LE(at + 12) : 0;
    masks = [buf.readUInt32LE(at), buf.readUInt32LE(at + 4), buf.readUInt32LE(at + 8), alpha];
  } else if (compression === 0) {
    if (bpp === 16) masks = [0x7c00, 0x03e0, 0x001f, 0];
    else if (bpp === 32) masks = [0x00ff0000, 0x0000ff00, 0x000000ff, 0];
  } else if (compression === 1 || compression === 2) {
    if ((compression === 1 && bpp !== 8) || (compression === 2 && bpp !== 4)) throw new BmpError('invalid BMP RLE bit depth');
  } else {
    const names: Record<number, string> = { 4: 'JPEG', 5: 'PNG' };
    throw new BmpError(`unsupported BMP compression ${names[compression] ?? compression}`);
  }
  if (![1, 4, 8, 16, 24, 32].includes(bpp)) throw new BmpError(`unsupported BMP bit depth ${bpp}`);
  if (dataOffset >= buf.length) throw new BmpError('truncated BMP (no pixel data)');

  const useAlpha = masks !== null && masks[3] !== 0;
  const channels: 3 | 4 = useAlpha ? 4 : 3;
  const out = Buffer.alloc(width * height * channels);
  const rowOut = (y: number) => (topDown ? y : height - 1 - y) * width * channels;

  if (compression === 1 || compression === 2) {
    decodeRle(buf, dataOffset, width, height, compression === 1 ? 8 : 4, palette as Uint8Array, out, rowOut);
    return { width, height, channels, data: out };
  }

  const stride = Math.floor((bpp * width + 31) / 32) * 4;
  if (dataOffset + stride * (height - 1) + Math.ceil((bpp * width) / 8) > buf.length) throw new BmpError('truncated BMP (pixel data cut short)');
  const m = masks ? masks.map(maskShift) : null;
  let anyAlpha = false;
  for (let y = 0; y < height; y++) {
    const src = dataOffset + y * stride;
    let o = rowOut(y);
    if (palette) {
      const perByte = 8 / bpp;
      const pmask = (1 << bpp) - 1;
      for (let x = 0; x < width; x++) {
        const byte = buf[src + Math.floor(x / perByte)];
        const idx = (byte >> (8 - bpp * ((x % perByte) + 1))) & pmask;
        out[o++] = palette[idx * 3];
        out[o++] = palette[idx * 3 + 1];
        out[o++] = palette[idx * 3 + 2];
      }
    } else if (bpp === 24) {
      for (let x = 0; x < width; x++) {
        const s = src + x * 3;
        out[o++] = buf[s + 2];
        out[o++] = buf[s + 1];
        out[o++] = buf[s];
      }
    } else if (m && masks) {
      for (let x = 0; x < width; x++) {
        const v = bpp === 16 ? buf.readUInt16LE(src + x * 2) : buf.readUInt32LE(src + x * 4);
        for (let c = 0; c < channels; c++) {
          const { shift, max } = m[c];
          const raw = max === 0 ? 0 : ((v & masks[c]) >>> shift) >>> 0;
          out[o++] = max === 0 ? 0 : max === 255 ? raw : Math.round((raw * 255) / max);
        }
        if (useAlpha && out[o - 1] !== 0) anyAlpha = true;
      }
    }
  }
  if (useAlpha && !anyAlpha) {
    // An all-zero alpha channel means "unused" in practice (many writers leave it 0): treat as opaque.
    const rgb = Buffer.alloc(width * height * 3);
    for (let i = 0, j = 0; i < out.length; i += 4, j += 3) {
      rgb[j] = out[i];
      rgb[j + 1] = out[i + 1];
      rgb[j + 2] = out[i + 2];
    }
    return { width, height, channels: 3, data: rgb };
  }
  return { width, height, channels, data: out };
}

function decodeRle(buf: Buffer, start: number, width: number, height: number, bits: 4 | 8, palette: Uint8Array, out: Buffer, rowOut: (y: number) => number): void {
  let x = 0;
  let y = 0;
  let p = start;
  const put = (idx: number) => {
    if (x < width && y < height) {
      const o = rowOut(y) + x * 3;
      out[o] = palette[idx * 3];
      out[o + 1] = palette[idx * 3 + 1];
      out[o + 2] = palette[idx * 3 + 2];
    }
    x++;
  };
  while (y < height) {
    if (p + 1 >= buf.length) throw new BmpError('truncated BMP (RLE data cut short)');
    const n = buf[p++];
    const v = buf[p++];
    if (n > 0) {
      for (let i = 0; i < n; i++) put(bits === 8 ? v : i % 2 === 0 ? v >> 4 : v & 15);
    } else if (v === 0) {
      x = 0;
      y++;
    } else if (v === 1) {
      return;
    } else if (v === 2) {
      if (p + 1 >= buf.length) throw new BmpError('truncated BMP (RLE data cut short)');
      x += buf[p++];
      y += buf[p++];
    } else {
      const count = v;
      const bytes = bits === 8 ? count : Math.ceil(count / 2);
      if (p + bytes > buf.length) throw new BmpError('truncated BMP (RLE data cut short)');
      for (let i = 0; i < count; i++) put(bits === 8 ? buf[p + i] : i % 2 === 0 ? buf[p + (i >> 1)] >> 4 : buf[p + (i >> 1)] & 15);
      p += bytes + (bytes % 2);
    }
  }
}
