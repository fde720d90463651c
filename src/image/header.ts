/**
 * Size and EXIF orientation of a JPEG or PNG, read from the bytes already in memory: what
 * decodeImageBuffer needs before it builds the sharp pipeline (the resize geometry depends on them).
 * Asking sharp (`metadata()`) instead is a separate libvips operation and thread-pool round trip per
 * image (docs/performance.md).
 *
 * Only plain, well-formed headers are answered; anything else returns null and the caller asks sharp,
 * so the answer is always the one libvips would give:
 *   - JPEG: markers up to SOS; exactly one SOF with non-zero size; at most one APP1 "Exif" segment
 *     (libvips keeps the last one), whose IFD0 Orientation, if present, is one SHORT in 1..8 (libvips
 *     clips other values). No Orientation tag means 1, as in libvips.
 *   - PNG: an IHDR first, non-zero size, every chunk walked to IEND, and no eXIf chunk (libvips reads
 *     orientation from it).
 */

export interface ImageHeader {
  width: number;
  height: number;
  /** EXIF orientation, 1..8 (1 = as stored). */
  orientation: number;
}

/** The header of a JPEG or PNG when it is unambiguous; null: ask sharp. Never throws. */
export function readImageHeader(buf: Uint8Array): ImageHeader | null {
  if (buf.length >= 3 && buf[0] === 0xff && buf[1] === 0xd8 && buf[2] === 0xff) return readJpegHeader(buf);
  if (buf.length >= 8 && buf[0] === 0x89 && buf[1] === 0x50 && buf[2] === 0x4e && buf[3] === 0x47 && buf[4] === 0x0d && buf[5] === 0x0a && buf[6] === 0x1a && buf[7] === 0x0a) {
    return readPngHeader(buf);
  }
  return null;
}

const be16 = (b: Uint8Array, i: number) => (b[i] << 8) | b[i + 1];
const be32 = (b: Uint8Array, i: number) => ((b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]) >>> 0;

/** SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC). */
const isSof = (m: number) => m >= 0xc0 && m <= 0xcf && m !== 0xc4 && m !== 0xc8 && m !== 0xcc;

function readJpegHeader(b: Uint8Array): ImageHeader | null {
  let pos = 2;
  let width = 0;
  let height = 0;
  let sofs = 0;
  let exifs = 0;
  let orientation: number | null = 1;
  for (;;) {
    if (pos + 1 >= b.length || b[pos] !== 0xff) return null;
    while (pos + 1 < b.length && b[pos + 1] === 0xff) pos++; // fill bytes
    if (pos + 1 >= b.length) return null;
    const m = b[pos + 1];
    if (m === 0xda) break; // SOS: libjpeg has read every header marker by now
    if (m === 0xd9 || m === 0xd8) return null;
    if ((m >= 0xd0 && m <= 0xd7) || m === 0x01) {
      pos += 2;
      continue;
    }
    if (pos + 4 > b.length) return null;
    const len = be16(b, pos + 2);
    const end = pos + 2 + len;
    if (len < 2 || end > b.length) return null;
    if (isSof(m)) {
      if (len < 8) return null;
      height = be16(b, pos + 5);
      width = be16(b, pos + 7);
      sofs++;
    } else if (m === 0xe1 && len >= 8 && b[pos + 4] === 0x45 && b[pos + 5] === 0x78 && b[pos + 6] === 0x69 && b[pos + 7] === 0x66 && b[pos + 8] === 0 && b[pos + 9] === 0) {
      exifs++;
      orientation = exifOrientation(b.subarray(pos + 10, end));
    }
    pos = end;
  }
  if (sofs !== 1 || exifs > 1 || orientation === null || width === 0 || height === 0) return null;
  return { width, height, orientation };
}

/** IFD0 Orientation of a TIFF-structured EXIF block: 1 when absent, null when anything is unusual. */
function exifOrientation(t: Uint8Array): number | null {
  if (t.length < 8) return null;
  const le = t[0] === 0x49 && t[1] === 0x49;
  if (!le && !(t[0] === 0x4d && t[1] === 0x4d)) return null;
  const u16 = (i: number) => (le ? t[i] | (t[i + 1] << 8) : (t[i] << 8) | t[i + 1]);
  const u32 = (i: number) => (le ? (t[i] | (t[i + 1] << 8) | (t[i + 2] << 16) | (t[i + 3] << 24)) >>> 0 : ((t[i] << 24) | (t[i + 1] << 16) | (t[i + 2] << 8) | t[i + 3]) >>> 0);
  if (u16(2) !== 42) return null;
  const ifd = u32(4);
  if (ifd < 8 || ifd + 2 > t.length) return null;
  const n = u16(ifd);
  if (ifd + 2 + n * 12 > t.length) return null;
  let found: number | null = 1;
  let seen = 0;
  for (let k = 0; k < n; k++) {
    const e = ifd + 2 + k * 12;
    if (u16(e) !== 0x0112) continue;
    seen++;
    const type = u16(e + 2);
    const count = u32(e + 4);
    const v = u16(e + 8);
    found = type === 3 && count === 1 && v >= 1 && v <= 8 ? v : null;
  }
  return seen > 1 ? null : found;
}

function readPngHeader(b: Uint8Array): ImageHeader | null {
  // Signature (8), then IHDR: length 13, type, width, height, …
  if (b.length < 33 || be32(b, 8) !== 13 || b[12] !== 0x49 || b[13] !== 0x48 || b[14] !== 0x44 || b[15] !== 0x52) return null;
  const width = be32(b, 16);
  const height = be32(b, 20);
  if (width === 0 || height === 0 || width > 0x7fffffff || height > 0x7fffffff) return null;
  let pos = 8;
  for (;;) {
    if (pos + 8 > b.length) return null; // ends before IEND: let sharp judge the file
    const len = be32(b, pos);
    const type = String.fromCharCode(b[pos + 4], b[pos + 5], b[pos + 6], b[pos + 7]);
    if (type === 'eXIf') return null;
    if (type === 'IEND') break;
    pos += 12 + len;
  }
  return { width, height, orientation: 1 };
}
