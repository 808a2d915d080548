// Write-behind scheduling, shared by the store file (store.ts) and the call log (call-log.ts):
// a change arms a timer; when it fires, one write runs (never two at once: a change made while a
// write runs is taken by the next one); flush() writes what is pending now and resolves when it
// is durable, or rejects with the last write's error. What a write does, and what is pending, is
// the owner's business (the callbacks).
export interface WriteBehindOptions {
  /** Delay between a change and its write, ms. */
  delayMs: number;
  /** One write of what is pending. rethrow: a failure rejects (flush) instead of being reported and retried. */
  write: (rethrow: boolean) => Promise<void>;
  /** Something is waiting to be written. */
  pending: () => boolean;
  /** The last write's failure, if it has not been written since. */
  lastError: () => Error | null;
  /** The owner is closed: no timer is armed any more. */
  closed: () => boolean;
}

export class WriteBehind {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;

  constructor(private readonly o: WriteBehindOptions) {}

  /** Something is not yet durable: waiting to be written, being written, or a failed write. */
  hasPendingWrites(): boolean {
    return this.o.pending() || this.running !== null || this.o.lastError() !== null;
  }

  /** A write within delayMs (default the configured delay), unless one is already armed. */
  arm(delayMs: number = this.o.delayMs): void {
    if (this.timer !== null || this.o.closed()) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      if (this.running !== null) this.arm();
      else void this.start(false);
    }, delayMs);
    // The agent's sockets keep it alive; a CLI must close its store, which flushes.
    this.timer.unref();
  }

  disarm(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  /** Writes what is pending now (after a running write) and resolves when it is durable. */
  async flush(): Promise<void> {
    this.disarm();
    for (;;) {
      if (this.running !== null) {
        await this.running.catch(() => {});
        continue;
      }
      if (this.o.pending()) {
        await this.start(true);
        continue;
      }
      const err = this.o.lastError();
      if (err !== null) throw err;
      return;
    }
  }

  private start(rethrow: boolean): Promise<void> {
    const p: Promise<void> = this.o.write(rethrow).finally(() => {
      if (this.running === p) this.running = null;
    });
    this.running = p;
    return p;
  }
}
