/**
 * The built-in backbones: the Keras MobileNetV2 / InceptionV3 that the npm package nsfwjs ships as
 * tfjs-layers JSON + uint8-quantized weights wrapped in UMD `.min.js` files. They are read without
 * running their code (the embedded literals are parsed), converted to ONNX once, and cached at
 * `<cache>/models/<model>-<hash16>.onnx`, where hash16 covers the source files and the converter version.
 *
 * MobileNetV2's files (3.5 MB) ship in xfer's package (models/nsfwjs/, MIT, copied unchanged from
 * nsfwjs@4.4.0), so the default backbone needs neither nsfwjs nor its 650 MB @tensorflow/tfjs peer.
 * Other models come from an installed `nsfwjs` (an optional peer dependency); when it cannot be
 * resolved, `npm pack nsfwjs@4.4.0` fetches the tarball from the npm registry into the cache and
 * only `package/dist/models/<model>/*` is unpacked.
 */
import { createHash, randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { createRequire } from 'node:module';
import { readFile, readdir, writeFile, rename, mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { threadId } from 'node:worker_threads';
import { XferError } from '../../errors.js';
import type { ModelProto } from '../../onnx/proto.js';
import { cacheDir } from '../../util/cache.js';
import { fileExists } from '../../util/hash.js';
import { extractModelJson, extractShardBytes } from './bundle.js';
import { readTar } from './tar.js';

export type BuiltinKerasModel = 'mobilenet_v2' | 'inception_v3';
export const BUILTIN_KERAS_MODELS: readonly BuiltinKerasModel[] = ['mobilenet_v2', 'inception_v3'];
export const NSFWJS_VERSION = '4.4.0';
/** Bump when the converter's output changes, so cached ONNX files are regenerated. */
export const KERAS_CONVERTER_VERSION = '1';

export interface BuiltinOptions {
  onProgress?: (msg: string) => void;
}

function checkModel(model: string): asserts model is BuiltinKerasModel {
  if (!(BUILTIN_KERAS_MODELS as readonly string[]).includes(model)) {
    throw new XferError(`unknown built-in nsfwjs model "${model}"`, { hint: `choose one of: ${BUILTIN_KERAS_MODELS.join(', ')}` });
  }
}

/** Root of the installed nsfwjs package, or undefined. (Its "exports" hide package.json, so walk up from main.) */
async function installedNsfwjsRoot(): Promise<string | undefined> {
  const require = createRequire(import.meta.url);
  for (const spec of ['nsfwjs/package.json', 'nsfwjs']) {
    let p: string;
    try {
      p = require.resolve(spec);
    } catch {
      continue;
    }
    for (let dir = path.dirname(p); ; dir = path.dirname(dir)) {
      const pkg = path.join(dir, 'package.json');
      if (await fileExists(pkg)) {
        try {
          const j = JSON.parse(await readFile(pkg, 'utf8')) as { name?: string };
          if (j.name === 'nsfwjs') return dir;
        } catch {
          /* keep walking */
        }
      }
      if (path.dirname(dir) === dir) break;
    }
  }
  return undefined;
}

/** Fetch `nsfwjs@4.4.0` with `npm pack` and unpack only dist/models/<model>/ into the cache. */
async function fetchFromRegistry(model: BuiltinKerasModel, opts: BuiltinOptions): Promise<string> {
  const root = await cacheDir(`nsfwjs-${NSFWJS_VERSION}`);
  const dest = path.join(root, 'dist', 'models', model);
  if (await fileExists(path.join(dest, 'model.min.js'))) return dest;
  opts.onProgress?.(`nsfwjs is not installed; fetching nsfwjs@${NSFWJS_VERSION} from the npm registry (npm pack) for the ${model} weights`);
  // Unique per process, thread and call: concurrent fetches never share a work folder.
  const work = path.join(root, `pack-${process.pid}-${threadId}-${randomBytes(4).toString('hex')}`);
  await mkdir(work, { recursive: true });
  try {
    const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
    try {
      await promisify(execFile)(npm, ['pack', `nsfwjs@${NSFWJS_VERSION}`, '--pack-destination', work, '--silent'], { cwd: work, maxBuffer: 1 << 20, shell: process.platform === 'win32' });
    } catch (e) {
      throw new XferError(`cannot fetch nsfwjs@${NSFWJS_VERSION} with npm pack (${(e as Error).message.split('\n')[0]})`, {
        hint: 'run `npm install nsfwjs@4.4.0` in your project (needs the npm registry), or pass your own .onnx model with a card',
        cause: e,
      });
    }
    const tgz = (await readdir(work)).find((f) => f.endsWith('.tgz'));
    if (!tgz) throw new XferError(`npm pack nsfwjs@${NSFWJS_VERSION} produced no tarball`, { hint: 'check your npm configuration' });
    const prefix = `package/dist/models/${model}/`;
    const entries = readTar(await readFile(path.join(work, tgz)), (p) => p.startsWith(prefix) && !p.slice(prefix.length).includes('/'));
    if (!entries.some((e) => e.path.endsWith('/model.min.js'))) {
      throw new XferError(`nsfwjs@${NSFWJS_VERSION} tarball has no ${prefix}model.min.js`, { hint: 'the package layout changed; install nsfwjs@4.4.0' });
    }
    const staging = path.join(work, 'out');
    await mkdir(staging, { recursive: true });
    for (const e of entries) await writeFile(path.join(staging, path.basename(e.path)), e.data);
    await mkdir(path.dirname(dest), { recursive: true });
    try {
      await rename(staging, dest);
    } catch (e) {
      // Another process won the race: fine if its copy is complete.
      if (!(await fileExists(path.join(dest, 'model.min.js')))) throw e;
    }
    return dest;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** The copy shipped in xfer's package (models/nsfwjs/<model>), if this model is shipped. */
function packagedModelDir(model: BuiltinKerasModel): string {
  return path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..', 'models', 'nsfwjs', model);
}

/** Folder holding `model.min.js` and `group1-shard*.min.js` for a built-in model. */
export async function nsfwjsModelDir(model: BuiltinKerasModel, opts: BuiltinOptions = {}): Promise<string> {
  checkModel(model);
  const packaged = packagedModelDir(model);
  if (await fileExists(path.join(packaged, 'model.min.js'))) return packaged;
  const root = await installedNsfwjsRoot();
  if (root) {
    const dir = path.join(root, 'dist', 'models', model);
    if (await fileExists(path.join(dir, 'model.min.js'))) return dir;
  }
  return fetchFromRegistry(model, opts);
}

async function sourceFiles(dir: string): Promise<string[]> {
  const files = (await readdir(dir)).filter((f) => f === 'model.min.js' || /^group\d+-shard\d+of\d+\.min\.js$/.test(f)).sort();
  if (!files.includes('model.min.js')) throw new XferError(`${dir}: model.min.js is missing`, { hint: 'reinstall xfer (its models/nsfwjs/ folder) or nsfwjs@4.4.0, whichever holds the folder named' });
  return files;
}

/** First 16 hex digits of sha256 over the source files (names + bytes) and the converter version. */
export async function nsfwjsSourceHash(dir: string): Promise<string> {
  const files = await sourceFiles(dir);
  const abs = files.map((f) => path.resolve(dir, f));
  const h = createHash('sha256');
  h.update(`xfer-keras-converter:${KERAS_CONVERTER_VERSION}\n`);
  for (const [i, f] of files.entries()) {
    const bytes = await readFile(abs[i]);
    h.update(`${f}\n${bytes.length}\n`);
    h.update(bytes);
  }
  return h.digest('hex').slice(0, 16);
}

/** Read and convert an nsfwjs model folder (model.min.js + shards) to ONNX. */
export async function convertNsfwjsDir(dir: string, model = path.basename(dir)): Promise<ModelProto> {
  // (The converter and the ONNX schema load only when a conversion runs: a cached built-in resolves without them.)
  const { convertTfjsLayersModel } = await import('./convert.js');
  const modelFile = path.join(dir, 'model.min.js');
  const modelJson = extractModelJson(await readFile(modelFile, 'utf8'), modelFile);
  const readShard = async (p: string): Promise<Uint8Array> => {
    const f = path.join(dir, `${path.basename(p)}.min.js`);
    let src: string;
    try {
      src = await readFile(f, 'utf8');
    } catch (e) {
      throw new XferError(`${f}: weight shard listed in the manifest is missing`, { hint: 'reinstall xfer (its models/nsfwjs/ folder) or nsfwjs@4.4.0, whichever holds the folder named', cause: e });
    }
    return extractShardBytes(src, f);
  };
  return convertTfjsLayersModel(modelJson, readShard, {
    file: modelFile,
    graphName: `nsfwjs_${model}`,
    metadata: { 'xfer.source': `nsfwjs@${NSFWJS_VERSION} dist/models/${model}` },
  });
}

const inflight = new Map<string, Promise<string>>();

/**
 * Path of the ONNX file for a built-in nsfwjs backbone, converting it (once; seconds) when it is
 * not cached yet. `onProgress` gets a one-line notice when a conversion runs.
 */
export async function builtinOnnxPath(model: BuiltinKerasModel, opts: BuiltinOptions = {}): Promise<string> {
  checkModel(model);
  const dir = await nsfwjsModelDir(model, opts);
  const hash = await nsfwjsSourceHash(dir);
  const target = path.join(await cacheDir('models'), `${model}-${hash}.onnx`);
  if (await fileExists(target)) return target;
  let job = inflight.get(target);
  if (!job) {
    job = (async () => {
      opts.onProgress?.(`converting nsfwjs ${model} (Keras/tfjs-layers) to ONNX, once; cached at ${target}`);
      const onnx = await convertNsfwjsDir(dir, model);
      const { writeOnnxFile } = await import('../../onnx/io.js');
      await writeOnnxFile(target, onnx);
      return target;
    })();
    inflight.set(target, job);
    job.then(
      () => inflight.delete(target),
      () => inflight.delete(target),
    );
  }
  return job;
}
