/**
 * In-order results of work started ahead: `take()` returns the result for item `from`, then
 * `from + 1`, …, and taking item i has started the work for items up to i + window − 1, never
 * beyond (so at most `window` are in flight, the one being taken included). Used to keep image
 * decodes (bounded by their own concurrency limit) running ahead of the batch being assembled,
 * without letting a slow image pull work or memory ahead without bound.
 */
export class ReadAhead<T> {
  private readonly ahead: Promise<T>[];
  private next: number;

  /**
   * @param start starts the work for item i (called once per item, in order)
   * @param started promises already started for `from`, `from + 1`, … (e.g. decodes begun while a model loads)
   */
  constructor(
    private readonly start: (i: number) => Promise<T>,
    from: number,
    private readonly to: number,
    private readonly window: number,
    started: Promise<T>[] = [],
  ) {
    if (!(Number.isInteger(window) && window >= 1)) throw new RangeError(`ReadAhead: window must be a positive integer, got ${window}`);
    for (const p of started) p.catch(() => {}); // see fill()
    this.ahead = started.slice(0, Math.max(0, to - from));
    this.next = from + this.ahead.length;
    this.fill();
  }

  /** The next item's result, in order; fails (rejects) as that item's work did. Call at most `to − from` times. */
  take(): Promise<T> {
    this.fill();
    const p = this.ahead.shift();
    return p ?? Promise.reject(new RangeError('ReadAhead: no items left'));
  }

  private fill(): void {
    while (this.ahead.length < this.window && this.next < this.to) {
      const p = this.start(this.next++);
      // awaited in order by take(); a failure must not be an unhandled rejection meanwhile
      p.catch(() => {});
      this.ahead.push(p);
    }
  }
}
