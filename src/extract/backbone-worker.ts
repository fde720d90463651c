/** Worker thread holding the ORT session for `openWorkerBackbone` (see backbone.ts). */
import { parentPort, workerData } from 'node:worker_threads';
import { openBackboneHere, serializeError, type BackboneRequest, type WorkerInMessage, type WorkerOutMessage } from './backbone.js';

const port = parentPort;
if (!port) throw new Error('backbone-worker.js must run in a worker thread');

const post = (m: WorkerOutMessage, transfer: ArrayBuffer[] = []) => port.postMessage(m, transfer);

try {
  const { info, backbone } = await openBackboneHere(workerData as BackboneRequest, (message) => post({ type: 'notice', message }));
  port.on('message', (m: WorkerInMessage) => {
    if (m.type === 'close') {
      void backbone.close().finally(() => port.close());
      return;
    }
    // Messages are handled one at a time: session.run blocks this thread until the batch is done.
    backbone.run(m.pixels, m.n).then(
      (outputs) => {
        const transfer = outputs.filter((o) => o.byteOffset === 0 && o.byteLength === o.buffer.byteLength).map((o) => o.buffer as ArrayBuffer);
        post({ type: 'result', id: m.id, outputs }, [...new Set(transfer)]);
      },
      (e: unknown) => post({ type: 'error', id: m.id, error: serializeError(e) }),
    );
  });
  post({ type: 'ready', info });
} catch (e) {
  post({ type: 'error', id: null, error: serializeError(e) });
}
