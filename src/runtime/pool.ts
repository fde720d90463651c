/**
 * The backbone as a run sees it (extract, predict, classify). onnxruntime-node's `session.run` blocks the
 * calling thread for the whole batch, so by default sessions live in worker threads
 * (`backbone-worker.ts`): the main thread keeps decoding images (sharp) and writing shards while
 * batches run, and pixels/features move between threads as transferred ArrayBuffers (no copies); a
 * batch's pixel buffer comes back with its result, for the pipeline to reuse (util/buffer-pool.ts).
 * `inline` mode keeps the session on the main thread (used to measure the difference).
 *
 * The tap model is prepared once, on the main thread, while the workers start (each worker only
 * creates a session from the bytes): read from the tap-model cache, or built (which costs more than
 * opening a session) and cached.
 */
import { Worker } from 'node:worker_threads';
// (Before any worker opens a session: only this thread's environment reaches ORT.)
import '../util/ort-telemetry.js';
import { XferError } from '../errors.js';
import { wholeBuffer } from '../util/buffer-pool.js';
import type { DeviceOptions, PreparedBackbone, TappedBackbone, TapRequest, Pool } from '../model/runner.js';
import type { ResolvedBackbone } from '../model/registry.js';

export interface BackboneRequest {
  /** Built-in id or model path (for messages). */
  model: string;
  /** The model resolved by the caller (file, sha256, card with any flag overrides). */
  resolved: ResolvedBackbone;
  /** Tensor names; null = the card's taps.default. */
  layers: string[] | null;
  /** null = the card's taps.pool for the default tap, else avg. */
  pool: Pool | null;
}

/** What the pipeline needs to know about an opened backbone (a TappedBackbone without its methods). */
export type BackboneInfo = Omit<TappedBackbone, 'run' | 'close'>;

/** A batch's outputs, and its pixel buffer handed back for reuse (see util/buffer-pool.ts). */
export interface BatchResult {
  outputs: Float32Array[];
  /** The `pixels` given to run (a worker transfers it there and back: the caller's view of it is detached meanwhile). */
  pixels: Uint8Array;
}

export interface Backbone {
  info: BackboneInfo;
  /** Run n images (uint8 NHWC); `pixels` may be transferred meanwhile and comes back in the result. */
  run(pixels: Uint8Array, n: number): Promise<BatchResult>;
  /** Release the session(s). A run still waiting for a session, or asked for afterwards, is rejected (BackboneClosedError). */
  close(): Promise<void>;
}

/** A run that could not happen because its backbone was closed first. */
export class BackboneClosedError extends Error {
  constructor() {
    super('backbone closed before the batch ran');
    this.name = 'BackboneClosedError';
  }
}

/** Resolve default taps from the card and prepare the tap model (cached or built, in the calling thread). */
export async function prepareBackbone(req: BackboneRequest, onNotice: (msg: string) => void): Promise<PreparedBackbone> {
  const { prepareTappedBackbone } = await import('../model/prepare.js');
  const { requireCard } = await import('../model/registry.js');
  const { resolved } = req;
  let layers = req.layers;
  let pool = req.pool;
  if (layers === null || layers.length === 0) {
    const card = requireCard(resolved, 'feature extraction');
    if (!card.taps?.default) {
      throw new XferError(`model card ${card.id} names no default tap (taps.default)`, { hint: 'pass --layers <tensor names>; `xfer layers <model>` lists them' });
    }
    layers = [card.taps.default];
    pool = pool ?? card.taps.pool ?? 'avg';
  }
  const taps: TapRequest[] = layers.map((name) => ({ name, pool: pool ?? 'avg' }));
  return prepareTappedBackbone(req.model, { resolved, taps, onNotice });
}

/**
 * Drop a prepared model's bytes once its sessions are open: the caller's promise of it may live for
 * the whole run, and a large backbone's serialized model would stay in memory with it.
 */
function releaseModelBytes(p: PreparedBackbone): void {
  if (typeof p.model !== 'string') p.model = new Uint8Array(0);
}

export function backboneInfo(b: TappedBackbone): BackboneInfo {
  return { id: b.id, sha256: b.sha256, externalSha256: b.externalSha256, file: b.file, card: b.card, outputs: b.outputs, fixedBatch: b.fixedBatch, provider: b.provider };
}

export type WorkerInMessage =
  | { type: 'open'; prepared: PreparedBackbone; device: DeviceOptions | undefined }
  | { type: 'run'; id: number; pixels: Uint8Array; n: number }
  | { type: 'close' };
export type WorkerOutMessage =
  | { type: 'ready'; info: BackboneInfo }
  | { type: 'notice'; message: string }
  | { type: 'result'; id: number; outputs: Float32Array[]; pixels: Uint8Array }
  | { type: 'error'; id: number | null; error: SerializedError };

export interface SerializedError {
  name: string;
  message: string;
  hint?: string;
  exitCode?: number;
  stack?: string;
}

export function serializeError(e: unknown): SerializedError {
  if (e instanceof XferError) return { name: e.name, message: e.message, hint: e.hint, exitCode: e.exitCode, stack: e.stack };
  const err = e instanceof Error ? e : new Error(String(e));
  return { name: err.name, message: err.message, stack: err.stack };
}

function deserializeError(s: SerializedError): Error {
  if (s.name === 'XferError' || s.hint !== undefined || s.exitCode !== undefined) {
    const e = new XferError(s.message, { hint: s.hint, exitCode: s.exitCode });
    if (s.stack) e.stack = s.stack;
    return e;
  }
  const e = new Error(s.message);
  if (s.stack) e.stack = s.stack;
  return e;
}

/** Open the backbone in the main thread. */
export async function openInlineBackbone(prepared: Promise<PreparedBackbone>, device: DeviceOptions | undefined, onNotice: (msg: string) => void): Promise<Backbone> {
  const { openPreparedBackbone } = await import('../model/tapped.js');
  const p = await prepared;
  const backbone = await openPreparedBackbone(p, device, onNotice);
  releaseModelBytes(p);
  return { info: backboneInfo(backbone), run: async (px, n) => ({ outputs: await backbone.run(px, n), pixels: px }), close: () => backbone.close() };
}

/**
 * Open `workers` backbone workers (each its own ORT session) and give each batch to the least busy
 * session, each holding up to WORKER_DEPTH batches (see firstFree). The workers start (load
 * onnxruntime) while `prepared` is being built, then open their sessions from its bytes. How many
 * sessions, of how many threads, is plan.ts's choice. Results are identical whichever session runs
 * a batch.
 */
export async function openWorkerPool(prepared: Promise<PreparedBackbone>, device: DeviceOptions | undefined, onNotice: (msg: string) => void, workers: number): Promise<Backbone> {
  const seen = new Set<string>();
  const once = (msg: string) => {
    if (!seen.has(msg)) {
      seen.add(msg);
      onNotice(msg);
    }
  };
  const opened = await Promise.allSettled(Array.from({ length: Math.max(1, workers) }, () => openWorkerBackbone(prepared, device, once)));
  // Every worker has its copy by now (they report ready after opening a session on it).
  await prepared.then(releaseModelBytes, () => {});
  const ok = opened.filter((r): r is PromiseFulfilledResult<Backbone> => r.status === 'fulfilled').map((r) => r.value);
  const failed = opened.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) {
    await Promise.all(ok.map((b) => b.close()));
    throw failed.reason;
  }
  return firstFree(ok, WORKER_DEPTH);
}

/**
 * One backbone over several: each run goes to the backbone with the fewest runs outstanding (of
 * those equal, the one that has waited longest), and each holds at most `depth` runs. A worker
 * session given `depth` 2 has its next batch already when it finishes one, instead of waiting for
 * this thread to see the result and send another (a round trip through a thread that shares its
 * cores with decoding, during which the session would sit idle with a decoded batch waiting).
 */
export function firstFree(backbones: Backbone[], depth = 1): Backbone {
  if (!(Number.isInteger(depth) && depth >= 1)) throw new Error(`firstFree: depth must be a positive integer, got ${depth}`);
  // Backbones in the order they last took a run (least recent first), with their outstanding runs.
  const order = backbones.map((b) => ({ b, load: 0 }));
  const queue: { pixels: Uint8Array; n: number; resolve: (r: BatchResult) => void; reject: (e: unknown) => void }[] = [];
  let closed = false;
  const pump = () => {
    while (queue.length > 0) {
      let pick = -1;
      for (let i = 0; i < order.length; i++) if (order[i].load < depth && (pick < 0 || order[i].load < order[pick].load)) pick = i;
      if (pick < 0) return;
      const slot = order.splice(pick, 1)[0];
      order.push(slot);
      slot.load++;
      const job = queue.shift()!;
      slot.b
        .run(job.pixels, job.n)
        .then(job.resolve, job.reject)
        .finally(() => {
          slot.load--;
          pump();
        });
    }
  };
  return {
    info: backbones[0].info,
    run(pixels, n) {
      if (closed) return Promise.reject(new BackboneClosedError());
      return new Promise<BatchResult>((resolve, reject) => {
        queue.push({ pixels, n, resolve, reject });
        pump();
      });
    },
    async close() {
      closed = true;
      // Batches not yet given to a session never run; those at a session finish (or fail) there.
      for (const job of queue.splice(0)) job.reject(new BackboneClosedError());
      await Promise.all(backbones.map((b) => b.close()));
    },
  };
}

/** Runs a worker session holds at once from firstFree: the one it runs and the next. */
export const WORKER_DEPTH = 2;

/** How long `close()` waits for a worker to release its session and exit before terminating it. */
export const WORKER_CLOSE_TIMEOUT_MS = 5000;

/** Open the backbone in a worker thread (see the file comment). */
export function openWorkerBackbone(prepared: Promise<PreparedBackbone>, device: DeviceOptions | undefined, onNotice: (msg: string) => void): Promise<Backbone> {
  const worker = new Worker(new URL('./worker.js', import.meta.url));
  const pending = new Map<number, { resolve: (r: BatchResult) => void; reject: (e: Error) => void }>();
  // An idle worker must not keep its caller's process alive (an API user need not know about the
  // pool; close() still releases it early): referenced only while it opens or has runs in flight.
  const refWhileBusy = () => (pending.size > 0 ? worker.ref() : worker.unref());
  let nextId = 0;
  let closed = false;
  let fatal: Error | null = null;
  const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
  const close = async () => {
    if (closed) return;
    closed = true;
    // The worker answers the runs already posted, releases its ORT session and exits; it is
    // terminated if it does not within the timeout, and whatever is still pending is then rejected.
    try {
      worker.postMessage({ type: 'close' } satisfies WorkerInMessage);
    } catch {
      /* already gone */
    }
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([exited, new Promise<void>((resolve) => (timer = setTimeout(resolve, WORKER_CLOSE_TIMEOUT_MS)))]);
    clearTimeout(timer);
    await worker.terminate();
    for (const p of pending.values()) p.reject(new BackboneClosedError());
    pending.clear();
  };
  return new Promise<Backbone>((resolveOpen, rejectOpen) => {
    let opened = false;
    const failAll = (e: Error) => {
      fatal = fatal ?? e;
      if (!opened) {
        rejectOpen(e);
        void close();
      }
      for (const p of pending.values()) p.reject(e);
      pending.clear();
    };
    prepared.then(
      (p) => {
        if (!closed) worker.postMessage({ type: 'open', prepared: p, device } satisfies WorkerInMessage);
      },
      (e: unknown) => failAll(e instanceof Error ? e : new Error(String(e))),
    );
    worker.on('message', (m: WorkerOutMessage) => {
      if (m.type === 'notice') onNotice(m.message);
      else if (m.type === 'ready') {
        opened = true;
        refWhileBusy();
        resolveOpen({
          info: m.info,
          run(pixels, n) {
            if (fatal) return Promise.reject(fatal);
            if (closed) return Promise.reject(new BackboneClosedError());
            const id = nextId++;
            return new Promise<BatchResult>((resolve, reject) => {
              pending.set(id, { resolve, reject });
              refWhileBusy();
              const whole = wholeBuffer(pixels);
              const msg = { type: 'run', id, pixels, n } satisfies WorkerInMessage;
              try {
                worker.postMessage(msg, whole ? [whole] : []);
              } catch (e) {
                // Memory a native addon owns (sharp's output on Node ≥ 24) cannot be transferred: copy it.
                if (!whole || (e as Error).name !== 'DataCloneError') throw e;
                worker.postMessage(msg);
              }
            });
          },
          close,
        });
      } else if (m.type === 'result') {
        const p = pending.get(m.id);
        pending.delete(m.id);
        refWhileBusy();
        p?.resolve({ outputs: m.outputs, pixels: m.pixels });
      } else if (m.type === 'error') {
        const e = deserializeError(m.error);
        if (m.id === null) failAll(e);
        else {
          const p = pending.get(m.id);
          pending.delete(m.id);
          refWhileBusy();
          p?.reject(e);
        }
      }
    });
    worker.on('error', (e) => failAll(e instanceof Error ? e : new Error(String(e))));
    worker.on('exit', (code) => {
      if (!closed) failAll(new Error(`backbone worker exited unexpectedly (code ${code})`));
    });
  });
}
