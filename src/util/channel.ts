/**
 * A bounded FIFO between one async producer and one async consumer: `push` waits while the channel
 * is full, `shift` waits while it is empty and returns undefined once it is closed and drained.
 * `fail(e)` makes the consumer's next `shift` throw e; `cancel()` makes the producer's pending and
 * future `push`es return false (the consumer stopped).
 */
export class Channel<T> {
  private readonly items: T[] = [];
  private closed = false;
  private cancelled = false;
  private error: { e: unknown } | null = null;
  private wakeConsumer: (() => void) | null = null;
  private wakeProducer: (() => void) | null = null;

  constructor(readonly capacity: number) {
    if (!(Number.isInteger(capacity) && capacity >= 1)) throw new RangeError(`Channel capacity must be a positive integer, got ${capacity}`);
  }

  /** Queue an item, waiting for room; false when the consumer cancelled (the item was not queued). */
  async push(item: T): Promise<boolean> {
    while (this.items.length >= this.capacity && !this.cancelled) {
      await new Promise<void>((resolve) => (this.wakeProducer = resolve));
    }
    if (this.cancelled) return false;
    this.items.push(item);
    this.wake('consumer');
    return true;
  }

  /** The next item, waiting for one; undefined once closed and empty. */
  async shift(): Promise<T | undefined> {
    while (this.items.length === 0 && !this.closed && !this.error) {
      await new Promise<void>((resolve) => (this.wakeConsumer = resolve));
    }
    if (this.items.length > 0) {
      const item = this.items.shift()!;
      this.wake('producer');
      return item;
    }
    if (this.error) throw this.error.e;
    return undefined;
  }

  /** No more items (the consumer drains what is queued). */
  close(): void {
    this.closed = true;
    this.wake('consumer');
  }

  /** The producer failed: the consumer's next shift (after the queued items) throws `e`. */
  fail(e: unknown): void {
    this.error = { e };
    this.wake('consumer');
  }

  /** The consumer stopped: drop queued items and release a waiting producer. */
  cancel(): void {
    this.cancelled = true;
    this.items.length = 0;
    this.wake('producer');
  }

  private wake(who: 'consumer' | 'producer'): void {
    const f = who === 'consumer' ? this.wakeConsumer : this.wakeProducer;
    if (who === 'consumer') this.wakeConsumer = null;
    else this.wakeProducer = null;
    f?.();
  }
}
