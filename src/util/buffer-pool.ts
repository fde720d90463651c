/**
 * Reusable byte buffers of one size. The extraction pipeline assembles every batch of pixels in one
 * and gets it back with the batch's result: the backbone worker transfers it back instead of leaving
 * it to its own garbage collector. Without the round trip each worker thread held up to ~60 MB of
 * dead batch buffers (V8 collects an isolate only after its external memory has grown by ~64 MB),
 * which made peak RSS depend on how long a run lasted.
 */
/** The ArrayBuffer a view covers whole (so it can be transferred or pooled), else null (a part, shared or detached). */
export function wholeBuffer(v: ArrayBufferView): ArrayBuffer | null {
  const b = v.buffer;
  return b instanceof SharedArrayBuffer || v.byteOffset !== 0 || v.byteLength !== b.byteLength || b.byteLength === 0 ? null : (b as ArrayBuffer);
}

export class BufferPool {
  private readonly free: Uint8Array[] = [];

  /** `max`: free buffers kept (more given back are dropped). */
  constructor(
    readonly byteLength: number,
    readonly max = 16,
  ) {
    if (!(Number.isInteger(byteLength) && byteLength > 0)) throw new RangeError(`BufferPool: byteLength must be a positive integer, got ${byteLength}`);
  }

  /** A free buffer (its old contents kept), else a new zero-filled one. */
  take(): Uint8Array {
    return this.free.pop() ?? new Uint8Array(this.byteLength);
  }

  /**
   * Give a buffer back for a later take(). Only a whole, unshared buffer of this pool's size is kept
   * (a detached one, e.g. transferred away and never returned, has byteLength 0 and is dropped).
   */
  give(b: Uint8Array): void {
    if (this.free.length >= this.max || b.byteLength !== this.byteLength || wholeBuffer(b) === null) return;
    if (!this.free.includes(b)) this.free.push(b);
  }

  /** Free buffers held now. */
  get size(): number {
    return this.free.length;
  }
}
