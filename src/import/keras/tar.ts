/** A minimal reader for (gzipped) ustar/pax tarballs such as `npm pack` writes. Regular files only. */
import { gunzipSync } from 'node:zlib';

export interface TarEntry {
  path: string;
  data: Uint8Array;
}

function field(block: Uint8Array, start: number, len: number): string {
  let end = start;
  while (end < start + len && block[end] !== 0) end++;
  return Buffer.from(block.subarray(start, end)).toString('utf8');
}

function octal(block: Uint8Array, start: number, len: number): number {
  const s = field(block, start, len).trim();
  return s === '' ? 0 : parseInt(s, 8);
}

/** Parse pax extended-header records ("<len> key=value\n"). */
function paxRecords(data: Uint8Array): Map<string, string> {
  const out = new Map<string, string>();
  const text = Buffer.from(data).toString('utf8');
  let pos = 0;
  while (pos < text.length) {
    const sp = text.indexOf(' ', pos);
    if (sp < 0) break;
    const len = parseInt(text.slice(pos, sp), 10);
    if (!Number.isFinite(len) || len <= 0) break;
    const rec = text.slice(sp + 1, pos + len - 1);
    const eq = rec.indexOf('=');
    if (eq > 0) out.set(rec.slice(0, eq), rec.slice(eq + 1));
    pos += len;
  }
  return out;
}

/** List the regular files of a tar (gunzipped first when it starts with the gzip magic) that `want` accepts. */
export function readTar(bytes: Uint8Array, want: (path: string) => boolean = () => true): TarEntry[] {
  const tar = bytes[0] === 0x1f && bytes[1] === 0x8b ? new Uint8Array(gunzipSync(bytes)) : bytes;
  const out: TarEntry[] = [];
  let pos = 0;
  let paxPath: string | undefined;
  while (pos + 512 <= tar.length) {
    const h = tar.subarray(pos, pos + 512);
    if (h.every((b) => b === 0)) break;
    const size = octal(h, 124, 12);
    const type = String.fromCharCode(h[156] || 48);
    const magic = field(h, 257, 6);
    const prefix = magic.startsWith('ustar') ? field(h, 345, 155) : '';
    const name = field(h, 0, 100);
    const dataStart = pos + 512;
    const data = tar.subarray(dataStart, dataStart + size);
    if (dataStart + size > tar.length) throw new Error(`tar entry ${name} is truncated`);
    pos = dataStart + Math.ceil(size / 512) * 512;
    if (type === 'x') {
      paxPath = paxRecords(data).get('path');
      continue;
    }
    if (type === 'g') continue;
    const path = paxPath ?? (prefix ? `${prefix}/${name}` : name);
    paxPath = undefined;
    if ((type === '0' || type === '\0' || type === '7') && want(path)) out.push({ path, data });
  }
  return out;
}
