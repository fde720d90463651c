/**
 * The backbone registry: built-in ids (cards in the package's models/ folder) and user models given
 * by path (.onnx, or .tflite converted once and cached), each paired with its model card.
 */
import { readdir } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { XferError } from '../errors.js';
import { sha256File } from '../util/hash.js';
import { loadCard, type ModelCard } from './card.js';
import { looksLikeOnnxFile } from '../onnx/io.js';
import { applyCardFlags, hasCardFlags, type CardFlags } from './card-flags.js';

/** The built-in backbone used when a command is given no --model (shipped in the package: models/nsfwjs/). */
export const DEFAULT_BACKBONE = 'mobilenet_v2';

/** The package's models/ folder (built-in cards and label files). */
export function builtinCardDir(): string {
  // dist/src/model/registry.js → <package root>/models
  return path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'models');
}

/** All built-in cards, sorted by id. */
export async function listBuiltinCards(): Promise<ModelCard[]> {
  const dir = builtinCardDir();
  const files = (await readdir(dir)).filter((f) => f.endsWith('.json')).sort();
  const cards = await Promise.all(files.map((f) => loadCard(path.join(dir, f), { containPaths: true })));
  return cards.filter((c) => c.builtin);
}

export interface ResolvedBackbone {
  id: string;
  /** The .onnx file to run (for built-ins and .tflite: the cached conversion). */
  file: string;
  /** sha256 of `file`. */
  sha256: string;
  /** Null when a user model has no card (fine for `xfer layers`; extraction and classify need one). */
  card: ModelCard | null;
}

export interface ResolveOptions {
  /** Explicit card file (overrides cards found beside the model). */
  card?: string;
  /** Card fields from command-line flags (override the card, or make one when there is none). */
  cardFlags?: CardFlags;
  /** One-line progress notices (e.g. "converting nsfwjs MobileNetV2 to ONNX (once)"). */
  onNotice?: (msg: string) => void;
}

function looksLikePath(spec: string): boolean {
  return spec.includes('/') || spec.includes('\\') || /\.(onnx|tflite)$/i.test(spec);
}

/** A card found beside a model file: `<file>.card.json`, or `<name>.json` with the extension removed. */
export function cardBeside(file: string): string | null {
  const candidates = [`${file}.card.json`, file.replace(/\.(onnx|tflite)$/i, '.json'), file.replace(/\.(onnx|tflite)$/i, '.card.json')];
  return candidates.find((c) => c !== file && existsSync(c)) ?? null;
}

/** Resolve a built-in id, an .onnx path or a .tflite path to an ONNX file plus its card (with flag overrides). */
export async function resolveBackbone(spec: string, opts: ResolveOptions = {}): Promise<ResolvedBackbone> {
  const b = await resolveFile(spec, opts);
  if (opts.cardFlags && hasCardFlags(opts.cardFlags)) b.card = applyCardFlags(b.card, opts.cardFlags, b.id);
  return b;
}

async function resolveFile(spec: string, opts: ResolveOptions): Promise<ResolvedBackbone> {
  const b = await resolveSpec(spec, opts);
  // Cards without hand-written taps get the default tap found from the graph (catalog entries, user cards).
  if (b.card && !b.card.taps) b.card = await (await import('./default-tap.js')).withDefaultTaps(b.card, b.file, b.sha256);
  return b;
}

async function resolveSpec(spec: string, opts: ResolveOptions): Promise<ResolvedBackbone> {
  const builtins = await listBuiltinCards();
  const builtin = builtins.find((c) => c.id === spec);
  if (builtin && !looksLikePath(spec)) {
    const { builtinOnnxPath } = await import('../import/keras/nsfwjs.js');
    const file = await builtinOnnxPath(builtin.builtin!.model, { onProgress: opts.onNotice });
    const card = opts.card ? await loadCard(opts.card) : builtin;
    return { id: builtin.id, file, sha256: await sha256File(file), card };
  }
  if (!looksLikePath(spec)) {
    const { resolveCatalogModel, catalogIds } = await import('./catalog-use.js');
    const pulled = await resolveCatalogModel(spec, builtinCardDir(), opts.onNotice);
    if (pulled) {
      const card = opts.card ? await loadCard(opts.card) : pulled.card;
      const file = /\.tflite$/i.test(pulled.file) ? await (await import('../import/tflite/index.js')).tfliteToOnnxCached(pulled.file) : pulled.file;
      return { id: pulled.entry.id, file, sha256: await sha256File(file), card };
    }
    throw new XferError(`unknown model "${spec}": not a built-in id, not a catalog id and not a path to an .onnx/.tflite file`, {
      hint: `built-in ids: ${builtins.map((c) => c.id).join(', ')}; catalog ids (downloaded on first use): ${(await catalogIds(builtinCardDir())).join(', ')}; or pass a path like ./model.onnx`,
    });
  }
  const abs = path.resolve(spec);
  if (!existsSync(abs)) throw new XferError(`${spec}: model file not found`, { hint: 'check the path, or run `xfer models` for the built-in ids' });
  const cardFile = opts.card ?? cardBeside(abs);
  // A card found beside the model came with it: its paths stay in its folder. One named with --card is the user's.
  const card = cardFile ? await loadCard(cardFile, { containPaths: opts.card === undefined }) : null;
  const id = card?.id ?? path.basename(abs).replace(/\.(onnx|tflite)$/i, '');
  if (/\.tflite$/i.test(abs)) {
    const { tfliteToOnnxCached } = await import('../import/tflite/index.js');
    opts.onNotice?.(`converting ${path.basename(abs)} to ONNX (cached after the first time)`);
    const file = await tfliteToOnnxCached(abs);
    return { id, file, sha256: await sha256File(file), card };
  }
  return { id, file: abs, sha256: await sha256File(abs), card };
}

/** The card or a clear error saying how to supply one. */
export function requireCard(b: ResolvedBackbone, what: string): ModelCard {
  if (b.card) return b.card;
  // A file that is no model at all is that error, not a missing card.
  if (!looksLikeOnnxFile(b.file)) throw new XferError(`${b.file}: not an ONNX model`, { hint: 'pass an .onnx file (TFLite files: `xfer import`, or --model file.tflite)' });
  throw new XferError(`${b.file}: no model card, needed for ${what}`, {
    hint: `pass --card <card.json>, card flags (--size, --layout, --channel-order, --range, --mean, --std, ...), or put ${path.basename(b.file)}.card.json beside the model (docs/model-cards.md)`,
  });
}
