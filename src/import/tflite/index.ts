/**
 * TFLite → ONNX import: `importTflite` converts a .tflite file in memory; `tfliteToOnnxCached`
 * converts once per file content (sha256) into the models cache and returns the .onnx path.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { XferError } from '../../errors.js';
import { writeOnnxFile } from '../../onnx/io.js';
import { fileExists, sha256Hex } from '../../util/hash.js';
import type { ModelProto } from '../../onnx/proto.js';
import { cacheDir } from '../../util/cache.js';
import { convertTflite } from './convert.js';
import { readTfliteModel, type TfliteModel } from './model.js';

export { readTfliteModel, type TfliteModel, type TfliteTensor, type TfliteOperator, type TfliteSubGraph, type TfliteQuant } from './model.js';
export { convertTflite, describeInput, type TfliteInputInfo } from './convert.js';
export { tfliteCard } from './card.js';

/** Bump when the converter's output changes, so cached conversions are redone. */
export const TFLITE_CONVERTER_VERSION = 1;

async function readBytes(file: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new XferError(`${file}: TFLite file not found`, { hint: 'check the path to the .tflite model' });
    if (code === 'EISDIR') throw new XferError(`${file}: is a directory, not a .tflite file`, { hint: 'point at the .tflite file itself' });
    throw new XferError(`${file}: cannot read TFLite file (${code ?? String(e)})`, { cause: e });
  }
}

/** Read and parse a .tflite file. */
export async function readTfliteFile(file: string): Promise<TfliteModel> {
  return readTfliteModel(await readBytes(file), file);
}

/** Convert a .tflite file to a float ONNX model (NHWC float input, NCHW inside, TFLite tensor names). */
export async function importTflite(file: string): Promise<ModelProto> {
  return convertTflite(await readTfliteFile(file));
}

/** Path of the cached ONNX conversion of `file` (converted on first use), keyed by the .tflite's sha256. */
export async function tfliteToOnnxCached(file: string): Promise<string> {
  const bytes = await readBytes(file);
  const sha = sha256Hex(bytes);
  const dir = await cacheDir('models');
  const out = path.join(dir, `tflite-${sha.slice(0, 16)}-v${TFLITE_CONVERTER_VERSION}.onnx`);
  if (await fileExists(out)) return out;
  await writeOnnxFile(out, convertTflite(readTfliteModel(bytes, file)));
  return out;
}
