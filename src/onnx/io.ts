/**
 * Reading and writing .onnx files, including tensors stored as external data next to the model.
 * External data is loaded into memory (inlined) so derived models can be serialised to one buffer;
 * locations that escape the model's folder are refused.
 */
import { readFile, mkdir, open } from 'node:fs/promises';
import { closeSync, openSync, readSync } from 'node:fs';
import path from 'node:path';
import { XferError } from '../errors.js';
import { writeFileAtomic } from '../util/atomic.js';
import { sha256Hex } from '../util/hash.js';
import type { FileStamp } from '../util/file-stamp.js';
import { decodeModel, encodeModel, type ModelProto, type TensorProto } from './proto.js';

export interface LoadedModel {
  model: ModelProto;
  /** Absolute path of the file it came from. */
  file: string;
  /** sha256 (hex) of the .onnx file bytes. */
  sha256: string;
  /** Size of the .onnx file in bytes. */
  size: number;
  /** The external data files the model's tensors were read from (not covered by sha256). */
  external: ExternalStamp[];
}

/**
 * An external data file as it was when read: absolute path, size, modification and status-change
 * times and inode (taken before reading: a copy over it with its times kept, as `cp -p` or
 * `rsync -a` make, still shows in ctime and usually in the inode), and the sha256 of the bytes read.
 */
export interface ExternalStamp extends FileStamp {
  file: string;
  sha256: string;
}

/**
 * One sha256 for a model's external weights: over each file's name relative to the model's folder
 * and its content's sha256 (so a copy of the folder elsewhere has the same digest); null for a model
 * whose weights are all inside its .onnx file. With the .onnx file's sha256 it identifies the model.
 */
export function externalWeightsDigest(modelFile: string, stamps: readonly ExternalStamp[]): string | null {
  if (stamps.length === 0) return null;
  const dir = path.dirname(modelFile);
  const parts = stamps.map((s) => [path.relative(dir, s.file).split(path.sep).join('/'), s.sha256]).sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  return sha256Hex(JSON.stringify(parts));
}

/** Read and decode an ONNX model file, resolving external data. */
export async function readOnnxFile(file: string): Promise<LoadedModel> {
  const abs = path.resolve(file);
  let bytes: Buffer;
  try {
    bytes = await readFile(abs);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new XferError(`${file}: model file not found`, { hint: 'check the path, or run `xfer models` for the built-in backbone ids' });
    if (code === 'EISDIR') throw new XferError(`${file}: is a directory, not an .onnx file`, { hint: 'point --model at the .onnx file itself' });
    throw new XferError(`${file}: cannot read model file (${code ?? String(e)})`, { cause: e });
  }
  const model = decodeOnnxBytes(bytes, file);
  const external = await inlineExternalData(model, path.dirname(abs), file);
  return { model, file: abs, sha256: sha256Hex(bytes), size: bytes.length, external };
}

/** ModelProto's top-level fields by wire type (onnx.proto): varints, and length-delimited ones. */
const MODEL_VARINT_FIELDS = new Set([1, 5]);
const MODEL_LEN_FIELDS = new Set([2, 3, 4, 6, 7, 8, 14, 20, 21, 25]);

/**
 * Whether the start of `file` (64 KiB) reads as an ONNX ModelProto's top-level fields: a cheap check
 * that tells an image, a text file or a .tflite given as a model from an ONNX file whose card is missing.
 */
export function looksLikeOnnxFile(file: string): boolean {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch {
    return true; // unreadable: the loader reports it
  }
  const buf = Buffer.alloc(64 * 1024);
  let n: number;
  try {
    n = readSync(fd, buf, 0, buf.length, 0);
  } finally {
    closeSync(fd);
  }
  const whole = n < buf.length;
  let pos = 0;
  let fields = 0;
  const varint = (): number | null => {
    let v = 0;
    for (let shift = 0; shift < 64; shift += 7) {
      if (pos >= n) return null;
      const b = buf[pos++];
      v += (b & 0x7f) * 2 ** shift;
      if (b < 0x80) return v;
    }
    return -1;
  };
  while (pos < n) {
    const tag = varint();
    if (tag === null) return !whole && fields > 0;
    if (tag < 0) return false;
    const field = Math.floor(tag / 8);
    const wire = tag % 8;
    if (wire === 0 && MODEL_VARINT_FIELDS.has(field)) {
      const v = varint();
      if (v === null) return !whole && fields > 0;
      if (v < 0) return false;
    } else if (wire === 2 && MODEL_LEN_FIELDS.has(field)) {
      const len = varint();
      if (len === null) return !whole && fields > 0;
      if (len < 0) return false;
      pos += len;
      if (pos > n) return !whole;
    } else {
      return false;
    }
    fields++;
  }
  return fields > 0;
}

/** Decode bytes as ONNX, turning protobuf failures into clear errors. */
export function decodeOnnxBytes(bytes: Uint8Array, file = '<buffer>'): ModelProto {
  if (bytes.length === 0) throw new XferError(`${file}: empty file, not an ONNX model`, { hint: 'the download or export probably failed; re-create the file' });
  let model: ModelProto;
  try {
    model = decodeModel(bytes);
  } catch (e) {
    const msg = (e as Error).message;
    const truncated = /index out of range|premature|truncat/i.test(msg);
    throw new XferError(
      truncated ? `${file}: truncated ONNX file (${bytes.length} bytes; protobuf: ${msg})` : `${file}: not an ONNX model (protobuf: ${msg})`,
      { hint: truncated ? 'the file was cut short; download or export it again' : 'pass an .onnx file (TFLite files: `xfer import`)', cause: e },
    );
  }
  if (!model.graph || model.graph.node.length === 0 || model.graph.output.length === 0) {
    throw new XferError(`${file}: not an ONNX model (no graph nodes or outputs found)`, { hint: 'pass an .onnx file exported by PyTorch, tf2onnx, xfer import, ...' });
  }
  return model;
}

function externalEntries(t: TensorProto): Map<string, string> {
  return new Map((t.externalData ?? []).map((e) => [e.key, e.value]));
}

/** Load every external-data tensor into rawData; returns the files read. Refuses paths outside `dir`. */
async function inlineExternalData(model: ModelProto, dir: string, file: string): Promise<ExternalStamp[]> {
  const tensors = collectTensors(model);
  const cache = new Map<string, Buffer>();
  const stamps: ExternalStamp[] = [];
  for (const t of tensors) {
    if (t.dataLocation !== 1) continue;
    const kv = externalEntries(t);
    const loc = kv.get('location');
    if (!loc) throw new XferError(`${file}: tensor ${t.name} has external data without a location`, { hint: 're-export the model' });
    const target = path.resolve(dir, loc);
    const rel = path.relative(dir, target);
    if (path.isAbsolute(loc) || rel.startsWith('..') || path.isAbsolute(rel)) {
      throw new XferError(`${file}: external data location "${loc}" of tensor ${t.name} escapes the model's folder`, {
        hint: 'external data files must sit in the model folder or below it; move them there and re-save the model',
      });
    }
    let data = cache.get(target);
    if (!data) {
      try {
        const fh = await open(target, 'r');
        try {
          const st = await fh.stat(); // before reading: a change while reading shows as a newer time
          data = await fh.readFile();
          stamps.push({ file: target, size: st.size, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs, ino: st.ino, sha256: sha256Hex(data) });
        } finally {
          await fh.close();
        }
      } catch (e) {
        throw new XferError(`${file}: external data file "${loc}" for tensor ${t.name} is missing (${(e as NodeJS.ErrnoException).code})`, {
          hint: `copy ${loc} next to the .onnx file (it is written beside the model by onnx.save(..., save_as_external_data=True))`,
          cause: e,
        });
      }
      cache.set(target, data);
    }
    const offset = Number(kv.get('offset') ?? 0);
    const length = kv.has('length') ? Number(kv.get('length')) : data.length - offset;
    if (offset + length > data.length) {
      throw new XferError(`${file}: external data "${loc}" is too short for tensor ${t.name} (needs ${offset + length} bytes, has ${data.length})`, {
        hint: 'the external data file is truncated; copy it again',
      });
    }
    t.rawData = new Uint8Array(data.buffer, data.byteOffset + offset, length);
    delete t.externalData;
    delete t.dataLocation;
  }
  return stamps;
}

/** All TensorProtos held by a model: initializers and Constant-node tensor attributes (incl. subgraphs). */
function collectTensors(model: ModelProto): TensorProto[] {
  const out: TensorProto[] = [];
  const visit = (g: ModelProto['graph']) => {
    out.push(...g.initializer);
    for (const n of g.node) {
      for (const a of n.attribute ?? []) {
        if (a.t) out.push(a.t);
        if (a.tensors) out.push(...a.tensors);
        if (a.g) visit(a.g);
        for (const sg of a.graphs ?? []) visit(sg);
      }
    }
  };
  visit(model.graph);
  return out;
}

/** Serialise a model to bytes (protobuf limit: 2 GiB). */
export function serializeModel(model: ModelProto): Uint8Array {
  const bytes = encodeModel(model);
  return bytes;
}

/**
 * Write a model atomically (uniquely named temp file + fsync + rename): concurrent writers (processes
 * or worker threads filling the same cache entry) never share a temp file, and a reader sees either
 * no file or a whole one.
 */
export async function writeOnnxFile(file: string, model: ModelProto): Promise<{ sha256: string; size: number }> {
  const bytes = serializeModel(model);
  await mkdir(path.dirname(path.resolve(file)), { recursive: true });
  await writeFileAtomic(file, bytes);
  return { sha256: sha256Hex(bytes), size: bytes.length };
}
