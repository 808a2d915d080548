// The timers that end a lingering transaction: D, K (client, Completed), J (non-INVITE server,
// Completed), I (INVITE server, Confirmed), L and M (RFC 6026 Accepted). A transaction in one of
// these states only absorbs retransmissions until its timer ends it; under load they are most of
// the transactions alive (ten or more per call for 32 s at a few hundred calls a second).
//
// They expire in batches: one batch a duration is open at a time (for `late` ms), every
// transaction that starts lingering while it is open joins it, and once it has closed one Node
// timer ends them all the duration later. So a transaction lingers at least its full duration
// (RFC 3261 §17.1.1.2: Timer D "at least 32 seconds") and at most `late` ms more,
// and the agent keeps a few batch timers a second instead of a Node timer (with its arguments,
// its place in the runtime's timer list, a firing and a wake-up of the loop) per transaction.
//
// Mechanism only: what ending means is the transaction's (lingerExpired). A transaction that
// ends sooner (a transport error, the layer closed) stays in its batch until the batch fires and
// is then told nothing it does not check: lingerExpired looks at its own state.

/** A transaction that lingers: told once its lingering time has run. */
export interface LingerOwner {
  lingerExpired(): void;
}

/** How late a batch may end its transactions, at most, ms. */
export const DEFAULT_LINGER_LATE_MS = 100;

/**
 * The lateness for a duration: a 256th of it, capped at maxLateMs (32 s lingers: 100 ms, T4's
 * 5 s: 19 ms); durations shortened to a few hundred ms for tests get nearly exact timers.
 */
export function lingerLateness(ms: number, maxLateMs: number): number {
  return Math.max(0, Math.min(maxLateMs, Math.floor(ms / 256)));
}

export class LingerTimers {
  /** The open batch of each duration (ms → the transactions that joined it). */
  private readonly open = new Map<number, LingerOwner[]>();
  /** Every batch not yet ended, with its pending timer (closing, then ending), so close() can clear it. */
  private readonly pending = new Map<LingerOwner[], ReturnType<typeof setTimeout>>();
  private closed = false;

  /**
   * @param maxLateMs how late a batch may end its transactions, at most (lingerLateness).
   * @param onError a transaction's lingerExpired threw (the rest of the batch still ends).
   */
  constructor(
    private readonly maxLateMs: number = DEFAULT_LINGER_LATE_MS,
    private readonly onError: (error: unknown) => void = () => undefined,
  ) {}

  /**
   * owner lingers for ms: lingerExpired() at least ms from now, and at most the lateness more
   * (plus whatever the event loop adds to any timer).
   */
  add(owner: LingerOwner, ms: number): void {
    if (this.closed) return;
    const late = lingerLateness(ms, this.maxLateMs);
    if (late === 0) {
      // Exact: a batch of its own, ended ms from now.
      const alone = [owner];
      this.pending.set(alone, setTimeout(() => this.end(ms, alone), ms));
      return;
    }
    const batch = this.open.get(ms);
    if (batch !== undefined) {
      batch.push(owner);
      return;
    }
    const fresh = [owner];
    this.open.set(ms, fresh);
    // Open for `late` ms; its ms start when it closes, so everyone who joined lingers at least
    // ms, however late the loop runs the closing. A closure a batch, not a transaction.
    const closing = setTimeout(() => {
      if (this.open.get(ms) === fresh) this.open.delete(ms);
      this.pending.set(fresh, setTimeout(() => this.end(ms, fresh), ms));
    }, late);
    this.pending.set(fresh, closing);
  }

  /** Transactions waiting in batches (ended ones too, until their batch fires). */
  get size(): number {
    let n = 0;
    for (const batch of this.pending.keys()) n += batch.length;
    return n;
  }

  /** Batches not yet ended. */
  get batches(): number {
    return this.pending.size;
  }

  /** Clears every batch timer; nobody is told anything. */
  close(): void {
    this.closed = true;
    for (const timer of this.pending.values()) clearTimeout(timer);
    this.pending.clear();
    this.open.clear();
  }

  /** The batch's time has run: tell each of its transactions, in the order they joined. */
  private end(ms: number, batch: LingerOwner[]): void {
    if (this.open.get(ms) === batch) this.open.delete(ms);
    this.pending.delete(batch);
    for (let i = 0; i < batch.length; i++) {
      try {
        batch[i]!.lingerExpired();
      } catch (error) {
        // One transaction's failure must not keep the rest of the batch alive.
        try {
          this.onError(error);
        } catch {
          // A logger that throws changes nothing.
        }
      }
    }
  }
}
