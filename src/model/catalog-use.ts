/**
 * Using a catalog id as `--model`: pull it on first use (unless offline), check the cached bytes
 * against the catalog's sha256, and give back the model file and its card.
 */
import { XferError } from '../errors.js';
import { sha256File } from '../util/hash.js';
import { cachedPath, formatSize, isPresent, listCatalog, modelFile, pulledCard, type CatalogEntry } from './catalog.js';
import type { ModelCard } from './card.js';
import { offline, offlineError, pullEntry, manualHint } from './pull.js';

export interface CatalogModel {
  entry: CatalogEntry;
  /** The downloaded model file (.onnx, or .tflite for the caller to convert). */
  file: string;
  card: ModelCard;
}

/** Progress as notices: the start, every quarter, the end (a command's stderr is no place for a bar). */
function progressNotices(onNotice: (msg: string) => void) {
  let last = -1;
  return (f: { name: string }, received: number, total: number | null) => {
    if (total === null || total === 0) return;
    const q = Math.floor((4 * received) / total);
    if (q !== last) {
      last = q;
      onNotice(`downloading ${f.name}: ${Math.round((100 * received) / total)} % of ${formatSize(total)}`);
    }
  };
}

/** The catalog entry for `id`, pulled and verified; null when `id` is not in the catalog. */
export async function resolveCatalogModel(id: string, builtinDir: string, onNotice: (msg: string) => void = () => {}): Promise<CatalogModel | null> {
  const entry = (await listCatalog(builtinDir)).find((e) => e.id === id);
  if (!entry) return null;
  if (!isPresent(entry)) {
    if (offline()) throw offlineError(entry);
    onNotice(`${id} is not in the cache: pulling it (once; xfer pull ${id} does the same)`);
    await pullEntry(entry, { onNotice, onProgress: progressNotices(onNotice) });
  }
  const f = modelFile(entry);
  const file = cachedPath(entry, f);
  const sha = await sha256File(file);
  if (sha !== f.sha256) {
    throw new XferError(`${file}: cached ${id} does not match the catalog (expected sha256 ${f.sha256}, found ${sha})`, {
      hint: `delete it and pull again: rm ${file} && xfer pull ${id}; or ${manualHint(entry, f)}`,
      exitCode: 1,
    });
  }
  return { entry, file, card: pulledCard(entry) };
}

/** Ids of catalog entries (for hints). */
export async function catalogIds(builtinDir: string): Promise<string[]> {
  return (await listCatalog(builtinDir)).map((e) => e.id);
}
