/**
 * Worker thread holding one ORT session for `openWorkerBackbone` (see backbone.ts). It loads
 * onnxruntime at once, then waits for the prepared tap model ('open'), opens a session on it and
 * runs batches one at a time ('run': session.run blocks this thread until the batch is done), sending
 * each batch's outputs and its pixel buffer back. 'close' lets the runs it has received finish and
 * answer, then releases the session.
 */
import { parentPort } from 'node:worker_threads';
import { backboneInfo, serializeError, type WorkerInMessage, type WorkerOutMessage } from './pool.js';
import { wholeBuffer } from '../util/buffer-pool.js';
import type { TappedBackbone } from '../model/tapped.js';

const port = parentPort;
if (!port) throw new Error('backbone-worker.js must run in a worker thread');

const post = (m: WorkerOutMessage, transfer: ArrayBuffer[] = []) => port.postMessage(m, transfer);
// Start loading onnxruntime and the session code now, while the main thread builds the tap model.
const runner = import('../model/tapped.js');
runner.catch(() => {});
let backbone: TappedBackbone | null = null;
let closing = false;
/** Runs not yet answered: 'close' lets them finish and answer before the session is released. */
const running = new Set<Promise<void>>();

port.on('message', (m: WorkerInMessage) => {
  if (m.type === 'close') {
    closing = true;
    void Promise.allSettled([...running])
      .then(() => backbone?.close())
      .finally(() => port.close());
  } else if (m.type === 'open') {
    runner
      .then(({ openPreparedBackbone }) => openPreparedBackbone(m.prepared, m.device, (message) => post({ type: 'notice', message })))
      .then(
        async (b) => {
          if (closing) return b.close();
          backbone = b;
          post({ type: 'ready', info: backboneInfo(b) });
        },
        (e: unknown) => post({ type: 'error', id: null, error: serializeError(e) }),
      );
  } else if (backbone) {
    const run = backbone.run(m.pixels, m.n).then(
      (outputs) => {
        // The outputs and the pixel buffer go back as transfers: the caller reuses the pixel buffer
        // for a later batch (nothing is left here for this thread's garbage collector).
        const transfer = [...outputs, m.pixels].map(wholeBuffer).filter((b) => b !== null);
        post({ type: 'result', id: m.id, outputs, pixels: m.pixels }, [...new Set(transfer)]);
      },
      (e: unknown) => post({ type: 'error', id: m.id, error: serializeError(e) }),
    );
    running.add(run);
    void run.finally(() => running.delete(run));
  } else {
    post({ type: 'error', id: m.id, error: serializeError(new Error('backbone worker: run before the session is open')) });
  }
});
