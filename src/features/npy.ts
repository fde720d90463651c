/**
 * NumPy .npy (format version 1.0) reader and writer for float32/float16/other little-endian
 * numeric arrays in C order. `np.load` reads what `encodeNpy` writes unchanged.
 * Spec: magic "\x93NUMPY", version, little-endian u16 header length, ASCII dict header padded
 * with spaces and a newline so that the data starts at a multiple of 64 bytes.
 */
import { open, readFile } from 'node:fs/promises';
import { XferError } from '../errors.js';

export type NpyDtype = 'float32' | 'float16' | 'float64' | 'int32' | 'int64' | 'uint8' | 'int8';

const DESCR: Record<NpyDtype, string> = {
  float32: '<f4',
  float16: '<f2',
  float64: '<f8',
  int32: '<i4',
  int64: '<i8',
  uint8: '|u1',
  int8: '|i1',
};
const BYTES: Record<NpyDtype, number> = { float32: 4, float16: 2, float64: 8, int32: 4, int64: 8, uint8: 1, int8: 1 };
const MAGIC = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]);

export function dtypeBytes(dtype: NpyDtype): number {
  return BYTES[dtype];
}

/** Build the .npy header (magic + version + header dict) for an array of this dtype and shape. */
export function npyHeader(dtype: NpyDtype, shape: readonly number[]): Buffer {
  const shapeStr = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
  let dict = `{'descr': '${DESCR[dtype]}', 'fortran_order': False, 'shape': ${shapeStr}, }`;
  const pre = MAGIC.length + 2 + 2;
  const total = Math.ceil((pre + dict.length + 1) / 64) * 64;
  dict = dict.padEnd(total - pre - 1, ' ') + '\n';
  const head = Buffer.alloc(pre);
  MAGIC.copy(head, 0);
  head[6] = 1;
  head[7] = 0;
  head.writeUInt16LE(dict.length, 8);
  return Buffer.concat([head, Buffer.from(dict, 'latin1')]);
}

/** Encode a typed array (its bytes are taken as-is, little-endian) as a complete .npy file. */
export function encodeNpy(data: ArrayBufferView, dtype: NpyDtype, shape: readonly number[]): Buffer {
  const n = shape.reduce((a, b) => a * b, 1);
  if (n * BYTES[dtype] !== data.byteLength) {
    throw new Error(`encodeNpy: shape [${shape}] of ${dtype} needs ${n * BYTES[dtype]} bytes, got ${data.byteLength}`);
  }
  return Buffer.concat([npyHeader(dtype, shape), Buffer.from(data.buffer, data.byteOffset, data.byteLength)]);
}

export interface NpyHeader {
  dtype: NpyDtype;
  shape: number[];
  /** Byte offset where the data begins. */
  dataOffset: number;
}

/** Parse the header of an .npy file held in `buf` (at least the first 64 KiB or so). */
export function parseNpyHeader(buf: Uint8Array, file = '<buffer>'): NpyHeader {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (b.length < 10 || !b.subarray(0, 6).equals(MAGIC)) {
    throw new XferError(`${file}: not a .npy file (bad magic)`, { hint: 'feature shards must be written by xfer extract or numpy.save' });
  }
  const major = b[6];
  let headerLen: number;
  let start: number;
  if (major === 1) {
    headerLen = b.readUInt16LE(8);
    start = 10;
  } else if (major === 2 || major === 3) {
    headerLen = b.readUInt32LE(8);
    start = 12;
  } else {
    throw new XferError(`${file}: unsupported .npy version ${major}`);
  }
  if (b.length < start + headerLen) throw new XferError(`${file}: truncated .npy header`, { hint: 're-run the extraction (use --resume)' });
  const dict = b.subarray(start, start + headerLen).toString('latin1');
  const descr = /'descr':\s*'([^']+)'/.exec(dict)?.[1];
  const fortran = /'fortran_order':\s*(True|False)/.exec(dict)?.[1];
  const shapeTxt = /'shape':\s*\(([^)]*)\)/.exec(dict)?.[1];
  if (!descr || !fortran || shapeTxt === undefined) throw new XferError(`${file}: malformed .npy header: ${dict.trim()}`);
  if (fortran === 'True') throw new XferError(`${file}: Fortran-order .npy arrays are not supported`, { hint: 'save with np.ascontiguousarray(x)' });
  const entry = (Object.entries(DESCR) as [NpyDtype, string][]).find(([, d]) => d === descr || d.replace('<', '|') === descr || d.replace('|', '<') === descr);
  if (!entry) throw new XferError(`${file}: unsupported .npy dtype ${descr}`, { hint: 'use little-endian float32 or float16' });
  const shape = shapeTxt
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
    .map((s) => Number.parseInt(s, 10));
  return { dtype: entry[0], shape, dataOffset: start + headerLen };
}

export interface NpyArray {
  dtype: NpyDtype;
  shape: number[];
  /** Raw little-endian bytes of the data (a view into the file buffer). */
  bytes: Uint8Array;
}

/** Read a whole .npy file. */
export async function readNpy(file: string): Promise<NpyArray> {
  let buf: Buffer;
  try {
    buf = await readFile(file);
  } catch (e) {
    throw new XferError(`${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? String(e)})`, { cause: e });
  }
  const h = parseNpyHeader(buf, file);
  const n = h.shape.reduce((a, c) => a * c, 1);
  const need = n * BYTES[h.dtype];
  if (buf.length - h.dataOffset < need) {
    throw new XferError(`${file}: truncated .npy data (${buf.length - h.dataOffset} of ${need} bytes)`, { hint: 're-run the extraction with --resume' });
  }
  return { dtype: h.dtype, shape: h.shape, bytes: buf.subarray(h.dataOffset, h.dataOffset + need) };
}

/** Read only the header of an .npy file (cheap: reads the first 4 KiB). */
export async function readNpyHeader(file: string): Promise<NpyHeader> {
  const fh = await open(file, 'r').catch((e: NodeJS.ErrnoException) => {
    throw new XferError(`${file}: cannot open (${e.code ?? e.message})`, { cause: e });
  });
  try {
    const buf = Buffer.alloc(4096);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    return parseNpyHeader(buf.subarray(0, bytesRead), file);
  } finally {
    await fh.close();
  }
}
