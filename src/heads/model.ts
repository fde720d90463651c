/**
 * A trained head as saved on disk: the head, its transforms, the label map and where its features
 * came from (backbone id + sha256, layers + pooling, width), so eval/predict can refuse features
 * from another backbone or layer.
 *
 * <headdir>/head.json      everything small (format below)
 * <headdir>/<array>.npy    each learned array (head arrays by name, transforms as t<i>_<name>.npy)
 * <headdir>/<file>         a head's opaque files, listed in head.json "files" (finetune.onnx)
 *
 * Saving over an existing head: the old head.json is removed first, every array is written
 * atomically (temp file, fsync, rename), head.json is written last (atomically), and only then are
 * the old head's arrays that the new one does not use deleted. A crash at any point leaves either no
 * head.json or one whose arrays are all on disk; files the head format does not own are never touched.
 */
import { mkdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { containedPath } from '../util/contain.js';
import { XferError } from '../errors.js';
import { encodeNpy, readNpy } from '../features/npy.js';
import { writeFileAtomic } from '../util/atomic.js';
import type { FeatureFolder, FeatureLayer } from '../features/reader.js';
import { headFromState, type Head, type HeadKind, type HeadParams, type HeadState } from './head.js';
import { applyChain, type TransformState } from './transforms.js';
import type { Matrix } from './matrix.js';
import { externalWeightsLabel, sameExternalWeights } from '../features/external-weights.js';
import { checkArrayFile, checkHeadJson, checkHeadValues } from './validate.js';

export const HEAD_FORMAT = 'xfer-head';
export const HEAD_FORMAT_VERSION = 1;

export interface HeadSource {
  /** The features' model: its .onnx sha256 and `external_sha256` (of its external weight files, null when none; absent in heads saved before it was recorded, or trained on such features). */
  model: { id: string; sha256: string; external_sha256?: string | null };
  layers: { name: string; dir: string; pool: string | null; shape: number[] }[];
  width: number;
  features: string;
  /** The features' preprocessing (their meta.json's), repeated by predict; absent in heads saved before it was recorded. */
  preprocessing?: Record<string, unknown>;
}

export interface TrainedHead {
  head: Head;
  transforms: TransformState[];
  /** Head class c → its label name, and its index in the training folder's labels.json. */
  classLabels: string[];
  source: HeadSource;
}

interface ArrayRef {
  file: string;
  dtype: 'float32' | 'int32';
  shape: number[];
}

interface HeadJson {
  format: string;
  format_version: number;
  kind: HeadKind;
  params: HeadParams;
  n_classes: number;
  n_features: number;
  labels: string[];
  source: HeadSource;
  transforms: { kind: TransformState['kind']; k?: number; dIn: number; dOut: number; arrays: Record<string, ArrayRef> }[];
  arrays: Record<string, ArrayRef>;
  /** Opaque files of the head (name → file in the folder), absent when it has none. */
  files?: Record<string, string>;
  info: Record<string, unknown>;
  created: string;
}

export function sourceOf(f: FeatureFolder, layers: FeatureLayer[], width: number): HeadSource {
  return {
    model: { id: f.meta.model.id, sha256: f.meta.model.sha256, ...(f.meta.model.external_sha256 !== undefined ? { external_sha256: f.meta.model.external_sha256 } : {}) },
    layers: layers.map((l) => ({ name: l.name, dir: l.dir, pool: l.pool ?? null, shape: l.shape })),
    width,
    features: path.resolve(f.dir),
    ...(f.meta.preprocessing ? { preprocessing: f.meta.preprocessing } : {}),
  };
}

async function writeArray(dir: string, file: string, a: Float32Array | Int32Array, shape: number[]): Promise<ArrayRef> {
  const dtype = a instanceof Int32Array ? 'int32' : 'float32';
  await writeFileAtomic(path.join(dir, file), encodeNpy(a, dtype, shape));
  return { file, dtype, shape };
}

/** The .npy files an existing head.json in `dir` references (empty when there is none or it is unreadable). */
async function ownedArrays(dir: string): Promise<string[]> {
  let json: Partial<HeadJson>;
  try {
    json = JSON.parse(await readFile(path.join(dir, 'head.json'), 'utf8')) as Partial<HeadJson>;
  } catch {
    return [];
  }
  if (json.format !== HEAD_FORMAT) return [];
  const refs = [...Object.values(json.arrays ?? {}), ...(json.transforms ?? []).flatMap((t) => Object.values(t.arrays ?? {}))];
  // only plain .npy (and the head's own) names inside the folder: never follow a path out of it
  const own = Object.values(json.files ?? {}).filter((f) => typeof f === 'string' && path.basename(f) === f);
  return [...refs.map((r) => r.file).filter((f) => typeof f === 'string' && f.endsWith('.npy') && path.basename(f) === f), ...own];
}

export async function saveHead(dir: string, t: TrainedHead): Promise<string> {
  await mkdir(dir, { recursive: true });
  const file = path.join(dir, 'head.json');
  const previous = await ownedArrays(dir);
  // no head.json while arrays are being replaced: a crash leaves "not a head folder", never a mix
  await rm(file, { force: true });
  const st = t.head.toState();
  const arrays: Record<string, ArrayRef> = {};
  for (const [name, a] of Object.entries(st.arrays)) arrays[name] = await writeArray(dir, `${name}.npy`, a, st.shapes[name] ?? [a.length]);
  const transforms: HeadJson['transforms'] = [];
  for (let i = 0; i < t.transforms.length; i++) {
    const tr = t.transforms[i];
    const refs: Record<string, ArrayRef> = {};
    for (const [name, a] of Object.entries(tr.arrays)) {
      const shape = name === 'components' ? [tr.dOut, tr.dIn] : [a.length];
      refs[name] = await writeArray(dir, `t${i}_${name}.npy`, a, shape);
    }
    transforms.push({ kind: tr.kind, k: tr.k, dIn: tr.dIn, dOut: tr.dOut, arrays: refs });
  }
  const files: Record<string, string> = {};
  for (const [name, bytes] of Object.entries(st.files ?? {})) {
    if (path.basename(name) !== name || name === 'head.json') throw new Error(`saveHead: bad file name '${name}'`);
    await writeFileAtomic(path.join(dir, name), bytes);
    files[name] = name;
  }
  const json: HeadJson = {
    format: HEAD_FORMAT,
    format_version: HEAD_FORMAT_VERSION,
    kind: st.kind,
    params: st.params,
    n_classes: st.nClasses,
    n_features: st.nFeatures,
    labels: t.classLabels,
    source: t.source,
    transforms,
    arrays,
    ...(Object.keys(files).length ? { files } : {}),
    info: st.info,
    created: new Date().toISOString(),
  };
  await writeFileAtomic(file, JSON.stringify(json, null, 2) + '\n');
  const used = new Set([...[...Object.values(arrays), ...transforms.flatMap((tr) => Object.values(tr.arrays))].map((r) => r.file), ...Object.values(files)]);
  for (const old of previous) if (!used.has(old)) await rm(path.join(dir, old), { force: true });
  return file;
}

async function readArray(dir: string, ref: ArrayRef, headFile: string): Promise<Float32Array | Int32Array> {
  const a = await readNpy(path.join(dir, ref.file));
  checkArrayFile(headFile, path.join(dir, ref.file), ref.shape, a.shape);
  const copy = new Uint8Array(a.bytes.byteLength);
  copy.set(a.bytes);
  if (a.dtype === 'int32') return new Int32Array(copy.buffer);
  if (a.dtype === 'float32') return new Float32Array(copy.buffer);
  throw new XferError(`${path.join(dir, ref.file)}: unexpected dtype ${a.dtype}`, { hint: 'the head folder is damaged; train it again' });
}

export async function loadHead(dir: string): Promise<TrainedHead> {
  const file = path.join(dir, 'head.json');
  let json: HeadJson;
  try {
    json = JSON.parse(await readFile(file, 'utf8')) as HeadJson;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new XferError(`--head ${dir}: ${code === 'ENOENT' ? 'no head.json (not a head folder)' : `cannot read head.json (${code ?? (e as Error).message})`}`, {
      hint: 'pass the --out folder of `xfer train`',
      cause: e,
    });
  }
  if (json?.format !== HEAD_FORMAT) throw new XferError(`${file}: not an xfer head (format '${json?.format}')`, { hint: 'pass the --out folder of `xfer train`' });
  if (json.format_version > HEAD_FORMAT_VERSION) throw new XferError(`${file}: head format ${json.format_version} is newer than this xfer understands`, { hint: 'upgrade xfer' });
  // Shapes, labels and array paths (validate.ts), before any file is read; values after.
  await checkHeadJson(dir, file, json);
  const arrays: HeadState['arrays'] = {};
  const shapes: HeadState['shapes'] = {};
  for (const [name, ref] of Object.entries(json.arrays)) {
    arrays[name] = await readArray(dir, ref, file);
    shapes[name] = ref.shape;
  }
  const files: Record<string, Uint8Array> = {};
  for (const [name, rel] of Object.entries(json.files ?? {})) {
    const at = await containedPath(dir, rel, file, `files.${name}`);
    try {
      files[name] = await readFile(at);
    } catch (e) {
      throw new XferError(`${at}: cannot read (${(e as NodeJS.ErrnoException).code ?? String(e)})`, { hint: 'the head folder is damaged; train it again', cause: e });
    }
  }
  const transforms: TransformState[] = [];
  for (const t of json.transforms) {
    const ta: Record<string, Float32Array> = {};
    for (const [name, ref] of Object.entries(t.arrays)) ta[name] = (await readArray(dir, ref, file)) as Float32Array;
    transforms.push({ kind: t.kind, k: t.k, dIn: t.dIn, dOut: t.dOut, arrays: ta });
  }
  checkHeadValues(file, json, arrays, transforms.map((t) => t.arrays));
  const head = headFromState({ kind: json.kind, params: json.params, nClasses: json.n_classes, nFeatures: json.n_features, info: json.info, arrays, shapes, ...(json.files ? { files } : {}) });
  return { head, transforms, classLabels: json.labels, source: json.source };
}

/** Refuse features that come from another backbone, layer set or pooling. */
export function checkCompatible(t: TrainedHead, f: FeatureFolder, layers: FeatureLayer[], headDir: string): void {
  const s = t.source;
  const m = f.meta.model;
  if (s.model.id !== m.id || s.model.sha256 !== m.sha256) {
    throw new XferError(`head ${headDir} was trained on backbone ${s.model.id} (sha256 ${s.model.sha256.slice(0, 12)}) but ${f.dir} holds features of ${m.id} (sha256 ${String(m.sha256).slice(0, 12)})`, {
      hint: 'extract features with the same backbone the head was trained on',
    });
  }
  // External weight files: compared when both recorded them (older heads and folders did not).
  if (!sameExternalWeights(s.model.external_sha256, m.external_sha256)) {
    throw new XferError(`head ${headDir} was trained on backbone ${s.model.id} with external weights ${externalWeightsLabel(s.model.external_sha256)} but ${f.dir} holds features of it with external weights ${externalWeightsLabel(m.external_sha256)}`, {
      hint: 'extract features with the same weight files the head was trained on',
    });
  }
  const want = s.layers.map((l) => `${l.name}/${l.pool ?? '-'}`).join(', ');
  const got = layers.map((l) => `${l.name}/${l.pool ?? '-'}`).join(', ');
  if (want !== got) {
    throw new XferError(`head ${headDir} was trained on layers ${want} but the features give ${got}`, { hint: `pass --layers ${s.layers.map((l) => l.name).join(',')} or re-extract with the same layers and pooling` });
  }
}

/** Transform raw features with the saved chain (in place when possible) and score them. */
export async function transformFor(t: TrainedHead, X: Matrix): Promise<Matrix> {
  if (X.cols !== t.source.width) {
    throw new XferError(`features have ${X.cols} columns but the head was trained on ${t.source.width}`, { hint: 'use the same backbone, layers and pooling the head was trained on' });
  }
  return applyChain(t.transforms, X);
}
