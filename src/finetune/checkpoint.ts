/**
 * Fine-tuning checkpoints: one file, replaced atomically (util/atomic.ts), so an interrupted write or
 * a full disk leaves the previous checkpoint intact.
 *
 * Layout: `XFERCKPT` magic, uint32 LE header length, a JSON header, zero padding to a multiple of 4,
 * then every tensor's float32 data (little-endian) at the offset the header gives.
 * `state` tensors are the training session's (weights + optimizer moments), `best` the weights of
 * the best epoch so far (what early stopping restores), `ema` the weights' moving average (`--ema`).
 */
import { readFile } from 'node:fs/promises';
import { XferError } from '../errors.js';
import { writeFileAtomic, type WriteFn } from '../util/atomic.js';

const MAGIC = Buffer.from('XFERCKPT', 'latin1');
export const CHECKPOINT_VERSION = 1;
export const CHECKPOINT_FILE = 'checkpoint.xfer';

export interface EpochRecord {
  epoch: number;
  loss: number;
  valLoss?: number;
  valAcc?: number;
  seconds: number;
  imagesPerSecond: number;
}

export interface Checkpoint {
  /** What the run was (options that must match on --resume). */
  config: Record<string, unknown>;
  /** Epochs fully done (0-based index of the epoch to run next) and batches done in it. */
  epoch: number;
  batch: number;
  /** Optimizer steps taken so far (drives the schedule). */
  step: number;
  /** The training session's own step counter (Adam bias correction). */
  sessionStep: number;
  history: EpochRecord[];
  best: { epoch: number; valAcc: number; valLoss: number } | null;
  /** Epochs since the best one (early stopping). */
  stale: number;
  /** Running sum and count of the current epoch's losses. */
  lossSum: number;
  lossCount: number;
  state: Map<string, Float32Array>;
  bestWeights: Map<string, Float32Array> | null;
  /** Exponential moving average of the weights (null: `--ema` off). */
  ema: Map<string, Float32Array> | null;
}

interface TensorRef {
  set: 'state' | 'best' | 'ema';
  name: string;
  offset: number;
  length: number;
}

export function encodeCheckpoint(c: Checkpoint): Uint8Array {
  const refs: TensorRef[] = [];
  let off = 0;
  const add = (set: TensorRef['set'], m: Map<string, Float32Array> | null): void => {
    for (const [name, a] of m ?? []) {
      refs.push({ set, name, offset: off, length: a.length });
      off += a.length * 4;
    }
  };
  add('state', c.state);
  add('best', c.bestWeights);
  add('ema', c.ema);
  const { state: _s, bestWeights: _b, ema: _e, ...rest } = c;
  const header = Buffer.from(JSON.stringify({ version: CHECKPOINT_VERSION, ...rest, tensors: refs }), 'utf8');
  const start = Math.ceil((12 + header.length) / 4) * 4;
  const out = new Uint8Array(start + off);
  out.set(MAGIC, 0);
  new DataView(out.buffer).setUint32(8, header.length, true);
  out.set(header, 12);
  for (const r of refs) {
    const a = (r.set === 'state' ? c.state : r.set === 'best' ? c.bestWeights! : c.ema!).get(r.name)!;
    out.set(new Uint8Array(a.buffer, a.byteOffset, a.byteLength), start + r.offset);
  }
  return out;
}

export function decodeCheckpoint(bytes: Uint8Array, file = CHECKPOINT_FILE): Checkpoint {
  const bad = (why: string): XferError => new XferError(`${file}: not a usable fine-tuning checkpoint (${why})`, { hint: 'start again without --resume (the checkpoint is replaced)' });
  if (bytes.length < 12 || !Buffer.from(bytes.buffer, bytes.byteOffset, 8).equals(MAGIC)) throw bad('bad magic');
  const hlen = new DataView(bytes.buffer, bytes.byteOffset).getUint32(8, true);
  if (12 + hlen > bytes.length) throw bad('truncated header');
  let h: Omit<Checkpoint, 'state' | 'bestWeights' | 'ema'> & { version: number; tensors: TensorRef[] };
  try {
    h = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset + 12, hlen).toString('utf8'));
  } catch {
    throw bad('invalid header');
  }
  if (h.version !== CHECKPOINT_VERSION) throw bad(`version ${h.version}`);
  const start = Math.ceil((12 + hlen) / 4) * 4;
  const state = new Map<string, Float32Array>();
  const best = new Map<string, Float32Array>();
  const ema = new Map<string, Float32Array>();
  for (const r of h.tensors) {
    const a0 = start + r.offset;
    if (a0 + r.length * 4 > bytes.length) throw bad(`tensor ${r.name} truncated`);
    // a copy: the file buffer is not kept alive by the tensors
    const a = new Float32Array(r.length);
    new Uint8Array(a.buffer).set(bytes.subarray(a0, a0 + r.length * 4));
    (r.set === 'state' ? state : r.set === 'best' ? best : ema).set(r.name, a);
  }
  const { version: _v, tensors: _t, ...rest } = h;
  return { ...rest, state, bestWeights: best.size ? best : null, ema: ema.size ? ema : null };
}

/** Write atomically (temp file, fsync, rename); `write` lets tests inject a full disk. */
export async function saveCheckpoint(file: string, c: Checkpoint, opts: { write?: WriteFn } = {}): Promise<void> {
  await writeFileAtomic(file, encodeCheckpoint(c), { write: opts.write });
}

export async function loadCheckpoint(file: string): Promise<Checkpoint> {
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new XferError(`--resume: no checkpoint at ${file} (${code ?? (e as Error).message})`, {
      hint: 'a checkpoint is written at every epoch end and on Ctrl-C; start without --resume',
      cause: e,
    });
  }
  return decodeCheckpoint(bytes, file);
}
