/**
 * Job files for `xfer extract --jobs file.(json|yaml)`: several extractions run one after another,
 * each with the same resume semantics as a single `xfer extract` (with --resume, finished jobs are
 * skipped and an interrupted one continues where it stopped).
 *
 * ```yaml
 * defaults: { batch: 8, dtype: float32 }    # optional, applied to every job
 * jobs:
 *   - name: hymenoptera-mobilenet           # optional, for messages
 *     model: mobilenet_v2                   # built-in id or path (relative to this file)
 *     layers: [out_relu]                    # or "a,b"; default: the card's default tap
 *     pool: avg
 *     data: ../datasets/hymenoptera         # folder or CSV/JSONL list (relative to this file)
 *     out: features/hymenoptera-mobilenet   # relative to this file
 * ```
 * A top-level array of jobs is accepted too. Keys: name, model, card, layers, pool, data, out, batch,
 * dtype, device, threads, shard_rows, fast_decode, apply_icc.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { XferError } from '../errors.js';
import { parsePositiveInt } from '../util/parse-int.js';
import type { Pool } from '../model/runner.js';
import { POOLS } from '../model/taps.js';

export interface ExtractJob {
  name: string;
  model: string;
  card?: string;
  layers?: string[];
  pool?: Pool;
  data: string;
  out: string;
  batch?: number;
  dtype?: 'float32' | 'float16';
  device?: string;
  threads?: number;
  shardRows?: number;
  fastDecode?: boolean;
  applyIcc?: boolean;
}

const KEYS = new Set(['name', 'model', 'card', 'layers', 'pool', 'data', 'out', 'batch', 'dtype', 'device', 'threads', 'shard_rows', 'fast_decode', 'apply_icc']);

/** Read and validate a job file; relative model/card/data/out paths resolve against its folder. */
export async function loadJobFile(file: string): Promise<ExtractJob[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new XferError(`--jobs ${file}: cannot read (${(e as NodeJS.ErrnoException).code})`);
  }
  let doc: unknown;
  try {
    doc = /\.json$/i.test(file) ? JSON.parse(text) : parseYaml(text);
  } catch (e) {
    throw new XferError(`--jobs ${file}: not valid ${/\.json$/i.test(file) ? 'JSON' : 'YAML'} (${(e as Error).message.split('\n')[0]})`);
  }
  return parseJobs(doc, file);
}

/** Validate a parsed job document (see the file comment). */
export function parseJobs(doc: unknown, file: string): ExtractJob[] {
  const base = path.dirname(path.resolve(file));
  let list: unknown;
  let defaults: Record<string, unknown> = {};
  if (Array.isArray(doc)) list = doc;
  else if (doc && typeof doc === 'object') {
    const d = doc as Record<string, unknown>;
    const extra = Object.keys(d).filter((k) => k !== 'jobs' && k !== 'defaults');
    if (extra.length > 0) throw new XferError(`--jobs ${file}: unknown top-level key(s) ${extra.join(', ')}`, { hint: 'expected "jobs" (a list) and optionally "defaults"' });
    list = d.jobs;
    if (d.defaults !== undefined) {
      if (!d.defaults || typeof d.defaults !== 'object' || Array.isArray(d.defaults)) throw new XferError(`--jobs ${file}: "defaults" must be a mapping`);
      defaults = d.defaults as Record<string, unknown>;
    }
  }
  if (!Array.isArray(list) || list.length === 0) throw new XferError(`--jobs ${file}: no jobs (expected a "jobs:" list)`, { hint: 'see scripts/jobs/ for examples' });
  const resolvePath = (p: string) => (path.isAbsolute(p) ? p : path.resolve(base, p));
  const looksLikePath = (s: string) => s.includes('/') || s.includes('\\') || /\.(onnx|tflite)$/i.test(s);
  const jobs = list.map((raw, i): ExtractJob => {
    const where = `--jobs ${file}: job ${i + 1}`;
    if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw new XferError(`${where}: must be a mapping with model, data and out`);
    const j = { ...defaults, ...(raw as Record<string, unknown>) };
    const unknown = Object.keys(j).filter((k) => !KEYS.has(k));
    if (unknown.length > 0) throw new XferError(`${where}: unknown key(s) ${unknown.join(', ')}`, { hint: `known keys: ${[...KEYS].join(', ')}` });
    const str = (k: string, required: boolean): string | undefined => {
      const v = j[k];
      if (v === undefined || v === null) {
        if (required) throw new XferError(`${where}: missing "${k}"`);
        return undefined;
      }
      if (typeof v !== 'string' || v.trim() === '') throw new XferError(`${where}: "${k}" must be a non-empty string`);
      return v.trim();
    };
    const int = (k: string): number | undefined => {
      const v = j[k];
      if (v === undefined || v === null) return undefined;
      if (typeof v !== 'number' && typeof v !== 'string') throw new XferError(`${where}: "${k}": expected a positive integer, got ${JSON.stringify(v)}`);
      return parsePositiveInt(v, `${where}: "${k}"`);
    };
    const model = str('model', true)!;
    let layers: string[] | undefined;
    if (Array.isArray(j.layers)) layers = j.layers.map(String);
    else if (typeof j.layers === 'string') layers = j.layers.split(',').map((s) => s.trim()).filter(Boolean);
    else if (j.layers !== undefined && j.layers !== null) throw new XferError(`${where}: "layers" must be a list or a comma-separated string`);
    const pool = str('pool', false);
    if (pool !== undefined && !(POOLS as readonly string[]).includes(pool)) throw new XferError(`${where}: "pool" must be one of ${POOLS.join(', ')}, got "${pool}"`);
    const dtype = str('dtype', false);
    if (dtype !== undefined && dtype !== 'float32' && dtype !== 'float16') throw new XferError(`${where}: "dtype" must be float32 or float16, got "${dtype}"`);
    const card = str('card', false);
    const out = resolvePath(str('out', true)!);
    const bool = (k: string): boolean | undefined => {
      const v = j[k];
      if (v !== undefined && typeof v !== 'boolean') throw new XferError(`${where}: "${k}" must be true or false`);
      return v as boolean | undefined;
    };
    return {
      name: str('name', false) ?? `${i + 1} (${path.basename(out)})`,
      model: looksLikePath(model) ? resolvePath(model) : model,
      card: card ? resolvePath(card) : undefined,
      layers,
      pool: pool as Pool | undefined,
      data: resolvePath(str('data', true)!),
      out,
      batch: int('batch'),
      dtype: dtype as ExtractJob['dtype'],
      device: str('device', false),
      threads: int('threads'),
      shardRows: int('shard_rows'),
      fastDecode: bool('fast_decode'),
      applyIcc: bool('apply_icc'),
    };
  });
  const outs = new Map<string, string>();
  for (const job of jobs) {
    const prev = outs.get(job.out);
    if (prev) throw new XferError(`--jobs ${file}: jobs "${prev}" and "${job.name}" write to the same out ${job.out}`, { hint: 'give every job its own out folder' });
    outs.set(job.out, job.name);
  }
  return jobs;
}
