/**
 * The streaming engine every image command runs on (extract, predict, classify): items are decoded in
 * input order with a bounded look-ahead, assembled into batches, run at the backbone (a worker pool,
 * several batches in flight), and handed to the caller in input order, each with the inputs that
 * could not be used. Memory stays bounded whatever the number of items: a window of decodes ahead,
 * two assembled batches, at most `maxInflight` batches at the backbone.
 *
 * The producer (decode + assemble) runs on its own, so decoding never waits for a batch result; the
 * consumer delivers a batch as soon as it and every batch before it are done. Batches never cross a
 * group (`groupEnd`: extraction's shards), so a resumed or sharded run feeds the backbone exactly the
 * same batches as a single run.
 */
import type { PixelsOrSkip } from '../image/decode.js';
import { BufferPool } from '../util/buffer-pool.js';
import { Channel } from '../util/channel.js';
import { ReadAhead } from '../util/read-ahead.js';
import type { Backbone } from './pool.js';

/** One input of a batch, in input order: its row in the batch's outputs, or why it could not be used. */
export type StreamSlot = { item: number; row: number } | { item: number; row: null; reason: string };

export interface StreamBatch {
  /** The batch's inputs in order (rows and unusable inputs interleaved as they came). */
  slots: StreamSlot[];
  /** Rows run at the backbone (the slots with a row). */
  rows: number;
  /** The last batch of its group (see StreamOptions.groupEnd). */
  lastOfGroup: boolean;
}

export interface StreamProgress {
  /** Inputs delivered (rows + unusable) and rows among them, this stream. */
  inputs: number;
  images: number;
  /** Seconds since the stream started, and images per second over them. */
  elapsed: number;
  rate: number;
}

export interface StreamOptions {
  backbone: Backbone;
  /** Items [from, to) are streamed. */
  from: number;
  to: number;
  /** Decode item i to the backbone's input pixels (uint8 NHWC, `imageBytes` long), or say why it cannot be used. */
  decode: (i: number) => Promise<PixelsOrSkip>;
  /** Decodes already started for items from, from + 1, … (e.g. begun while the sessions opened). */
  started?: Promise<PixelsOrSkip>[];
  batch: number;
  imageBytes: number;
  /** Run every batch padded to `batch` rows (CUDA: one input shape, no cuDNN re-tuning); else only the real rows run. */
  pad: boolean;
  /** Decodes started ahead of the batch being assembled. */
  window: number;
  /** Batches at the backbone at once. */
  maxInflight: number;
  /** End (exclusive) of the group holding item i: batches never cross it (default: one group). */
  groupEnd?: (i: number) => number;
  /** Each batch, in input order, with its outputs (null when it had no usable input). */
  onBatch: (b: StreamBatch, outputs: Float32Array[] | null) => Promise<void> | void;
  /** An input could not be used (called in input order as the producer finds it). */
  onSkip?: (item: number, reason: string) => void;
  /** Called after delivered batches, at most every `progressMs` and at the end of each group. */
  onProgress?: (p: StreamProgress) => void;
  progressMs?: number;
  /** True: stop at once (nothing more is delivered, not even the batches in flight). */
  halt?: () => boolean;
  /** Aborted: no new batch starts; those at the backbone are finished and delivered. */
  signal?: AbortSignal;
}

export interface StreamResult {
  /** The signal stopped the stream before every item was delivered. */
  aborted: boolean;
}

interface Assembled extends StreamBatch {
  pixels: Uint8Array;
}

interface InFlight {
  b: StreamBatch;
  res: Promise<Float32Array[] | null>;
  settled: boolean;
}

/** Stream items [from, to) through the backbone; see the file comment. */
export async function runStream(o: StreamOptions): Promise<StreamResult> {
  const { backbone, batch, imageBytes } = o;
  const halted = o.halt ?? (() => false);
  const groupEnd = o.groupEnd ?? (() => o.to);
  // Batch buffers go round: producer → backbone (a worker, and back) → producer (util/buffer-pool.ts).
  const buffers = new BufferPool(batch * imageBytes);
  // An abort also wakes a consumer waiting for the next batch, so Ctrl-C never waits for a slow decode.
  const ready = new Channel<Assembled>(2);
  let aborted = !!o.signal?.aborted;
  const onAbort = () => {
    aborted = true;
    ready.close();
  };
  o.signal?.addEventListener('abort', onAbort);

  let producerStopped = false;
  async function* batches(): AsyncGenerator<Assembled> {
    const ahead = new ReadAhead(o.decode, o.from, o.to, o.window, o.started ?? []);
    let pos = o.from;
    while (pos < o.to) {
      const end = Math.min(groupEnd(pos), o.to);
      let cur: Assembled = { slots: [], rows: 0, lastOfGroup: false, pixels: buffers.take() };
      while (pos < end) {
        if (producerStopped) return;
        const item = pos++;
        const r = await ahead.take();
        if (r.ok) {
          cur.pixels.set(r.data, cur.rows * imageBytes);
          cur.slots.push({ item, row: cur.rows++ });
        } else {
          cur.slots.push({ item, row: null, reason: r.reason });
          o.onSkip?.(item, r.reason);
        }
        if (cur.rows === batch && pos < end) {
          yield cur;
          cur = { slots: [], rows: 0, lastOfGroup: false, pixels: buffers.take() };
        }
      }
      cur.lastOfGroup = true;
      yield cur;
    }
  }
  const produced = (async () => {
    try {
      for await (const b of batches()) {
        if (!(await ready.push(b))) break;
      }
      ready.close();
    } catch (e) {
      ready.fail(e);
    }
  })();

  const t0 = performance.now();
  let inputs = 0;
  let images = 0;
  let lastProgress = 0;
  const progressMs = o.progressMs ?? 250;
  const inflight: InFlight[] = [];
  const deliverHead = async () => {
    const h = inflight.shift()!;
    await o.onBatch(h.b, await h.res);
    inputs += h.b.slots.length;
    images += h.b.rows;
    const now = performance.now();
    if (o.onProgress && (now - lastProgress > progressMs || h.b.lastOfGroup)) {
      lastProgress = now;
      const elapsed = (now - t0) / 1000;
      o.onProgress({ inputs, images, elapsed, rate: elapsed > 0 ? images / elapsed : 0 });
    }
  };
  const deliverSettled = async () => {
    while (inflight.length > 0 && inflight[0].settled && !halted()) await deliverHead();
  };
  try {
    while (!aborted && !halted()) {
      // Wait for the next batch, delivering finished ones meanwhile.
      let next: { b: Assembled | undefined } | null = null;
      const nextP = ready.shift().then((b) => (next = { b }));
      while (next === null) {
        await deliverSettled();
        if (halted()) break;
        const head = inflight.length > 0 && !inflight[0].settled ? inflight[0].res.then(noop, noop) : null;
        await (head ? Promise.race([nextP, head]) : nextP);
      }
      if (next === null || halted()) {
        nextP.catch(noop);
        break;
      }
      const b = (next as { b: Assembled | undefined }).b;
      if (b === undefined || aborted) {
        if (b) buffers.give(b.pixels);
        break;
      }
      const { pixels, ...meta } = b;
      let res: Promise<Float32Array[] | null>;
      if (b.rows > 0) {
        // A reused buffer holds an older batch beyond these rows: a padded batch runs zeros there.
        if (o.pad) pixels.fill(0, b.rows * imageBytes);
        res = backbone.run(pixels, o.pad ? batch : b.rows).then((r) => {
          buffers.give(r.pixels);
          return r.outputs;
        });
      } else {
        buffers.give(pixels);
        res = Promise.resolve(null);
      }
      const f: InFlight = { b: meta, res, settled: false };
      const settle = () => {
        f.settled = true;
      };
      res.then(settle, settle);
      inflight.push(f);
      while (inflight.length >= o.maxInflight && !halted()) await deliverHead();
    }
    while (inflight.length > 0 && !halted()) await deliverHead();
  } finally {
    o.signal?.removeEventListener('abort', onAbort);
    producerStopped = true;
    ready.cancel();
    await produced;
    // After a failure or a halt: let the batches still at the backbone end before the caller closes it.
    for (const x of inflight) await x.res.catch(noop);
  }
  return { aborted: aborted && inputs < o.to - o.from };
}

function noop(): void {}
