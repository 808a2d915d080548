// Memory after a burst. When 2,000 phones register at once, or a flood is refused, V8 grows its
// heap to hold that minute's garbage and the transactions that linger after it (RFC 3261's
// Timer J keeps each answered UDP request 32 s), and then keeps it: with little allocation
// afterwards it has no reason to collect, and the pages stay in the process's RSS
// (bench/README.md: 19 MB of live objects in a 47 MB used heap at steady state). Browsers collect
// in idle time for the same reason. The agent does it once the signalling has been quiet for
// longer than a transaction lingers, while the heap V8 holds is large or well above what is in
// use: full collections (`gc()`, which the shipped agent's node exposes: bin/ringedge passes
// --expose-gc), one per look (5 s apart), for as long as each gives pages back. Before the
// spell's first collection V8's "in use" still counts the burst's garbage (2,000 phones and 200
// calls up: 47.6 MB in use of 55.4 MB held, the slack under 8 MB), so that one goes on the size of
// the heap held; the later ones on the slack, which a collection has then made true. One is not enough: a full
// collection compacts only the most fragmented pages, so the heap V8 holds shrinks over several
// (a 2,000-phone agent: 47 MB used before, 21 MB after the first, the pages held falling over
// the next), so the idle ones compact every page (exposedGc: 2,000 phones, 200 calls up and a
// full call log: RSS 100.6 MB after four plain collections, 95.6 MB after one compacting one,
// which held the loop 71 ms). Quiet is a message rate, not silence: a site's phones keep sending keep-alives and
// re-registrations, a few per second per hundred phones. Where gc() is not exposed (the sources
// through tsx) it does nothing.
//
// shouldCollect() is the decision (pure); IdleCollector the timer around it.
import v8 from "node:v8";

export interface IdleGcState {
  /** How long the message rate has been under the quiet rate, ms. */
  quietForMs: number;
  /** Whether this quiet spell's collections are over (the last one gave little back). */
  spellDone: boolean;
  /** Collections so far in this quiet spell. */
  collectionsThisSpell: number;
  /** Bytes of heap V8 holds, and of it in use, now. */
  heapTotal: number;
  heapUsed: number;
}

export interface IdleGcPolicy {
  /** A rate of SIP messages under this, per second, is quiet. */
  quietBelowPerS: number;
  /** How long quiet must last, ms: longer than a transaction lingers (Timer J, 64×T1 = 32 s). */
  quietForMs: number;
  /** Worth a collection: V8 holds this many bytes more than are in use. */
  minSlackBytes: number;
  /**
   * Worth the spell's first collection: V8 holds at least this many bytes of heap (what it
   * counts in use includes garbage until a collection has run).
   */
  minHeldBytes: number;
  /** A collection that gives back less than this (heap held, before − after) ends the spell's collections. */
  minReturnBytes: number;
  /** Collections per quiet spell at most. */
  maxPerSpell: number;
}

export const DEFAULT_IDLE_GC: IdleGcPolicy = { quietBelowPerS: 200, quietForMs: 35_000, minSlackBytes: 8 << 20, minHeldBytes: 32 << 20, minReturnBytes: 1 << 20, maxPerSpell: 6 };

export function shouldCollect(s: IdleGcState, p: IdleGcPolicy): boolean {
  if (s.spellDone || !(s.collectionsThisSpell < p.maxPerSpell) || !(s.quietForMs >= p.quietForMs)) return false;
  if (s.collectionsThisSpell === 0 && s.heapTotal >= p.minHeldBytes) return true;
  return s.heapTotal - s.heapUsed >= p.minSlackBytes;
}

export interface IdleCollectorOptions {
  /** SIP messages received since start (a counter). */
  messages: () => number;
  /** The collector: globalThis.gc when exposed. */
  gc?: () => void;
  /** Heap V8 holds and heap in use, bytes (default process.memoryUsage()). */
  heap?: () => { total: number; used: number };
  policy?: IdleGcPolicy;
  /** How often to look, ms (default 5 s). */
  intervalMs?: number;
  now?: () => number;
  /** After a collection: heap held before and after, and how long it took. */
  onCollect?: (before: number, after: number, ms: number) => void;
}

export class IdleCollector {
  private timer: NodeJS.Timeout | undefined;
  private lastMessages = 0;
  private lastCheck = 0;
  /** When the current quiet spell began; undefined while busy. */
  private quietSince: number | undefined;
  private spellDone = false;
  private collectionsThisSpell = 0;
  private collections = 0;
  private lastPause: number | undefined;
  private readonly now: () => number;
  private readonly heap: () => { total: number; used: number };

  constructor(private readonly o: IdleCollectorOptions) {
    this.now = o.now ?? (() => performance.now());
    this.heap =
      o.heap ??
      (() => {
        const m = process.memoryUsage();
        return { total: m.heapTotal, used: m.heapUsed };
      });
  }

  /** Whether a collector is there to call (the shipped agent: yes; the sources through tsx: no). */
  get available(): boolean {
    return typeof this.o.gc === "function";
  }

  get count(): number {
    return this.collections;
  }

  /** How long the last collection held the event loop, ms (undefined before the first). */
  get lastPauseMs(): number | undefined {
    return this.lastPause;
  }

  start(): void {
    if (this.timer !== undefined || !this.available) return;
    this.reset();
    this.timer = setInterval(() => this.check(), this.o.intervalMs ?? 5_000);
    this.timer.unref();
  }

  /** Baseline for check(): the counter and the clock as they are now, no quiet spell yet. */
  reset(): void {
    this.lastMessages = this.o.messages();
    this.lastCheck = this.now();
    this.endSpell();
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** One look (the timer's; tests call it directly after reset()). true: it collected. */
  check(): boolean {
    const policy = this.o.policy ?? DEFAULT_IDLE_GC;
    const now = this.now();
    const total = this.o.messages();
    const perS = ((total - this.lastMessages) * 1000) / Math.max(1, now - this.lastCheck);
    this.lastMessages = total;
    const since = this.lastCheck;
    this.lastCheck = now;
    if (!(perS < policy.quietBelowPerS)) {
      this.endSpell();
      return false;
    }
    this.quietSince ??= since;
    const before = this.heap();
    const state: IdleGcState = { quietForMs: now - this.quietSince, spellDone: this.spellDone, collectionsThisSpell: this.collectionsThisSpell, heapTotal: before.total, heapUsed: before.used };
    if (!shouldCollect(state, policy)) return false;
    const t0 = performance.now();
    try {
      this.o.gc?.();
    } catch {
      this.spellDone = true; // a collector that throws is not worth a crash, nor a retry
      return false;
    }
    const after = this.heap();
    this.collectionsThisSpell++;
    this.collections++;
    if (before.total - after.total < policy.minReturnBytes) this.spellDone = true;
    this.lastPause = performance.now() - t0;
    this.o.onCollect?.(before.total, after.total, this.lastPause);
    return true;
  }

  private endSpell(): void {
    this.quietSince = undefined;
    this.spellDone = false;
    this.collectionsThisSpell = 0;
  }
}

/**
 * globalThis.gc when node runs with --expose-gc, else undefined, as a collection that compacts
 * every page: V8's own full collections move objects only off the most fragmented pages, so
 * after a burst the heap it holds stays well above what is live (2,000 phones and 200 calls up:
 * 40 MB held for 29 MB live after four collections). V8 reads --compact-on-every-full-gc at each
 * full collection; it is set for the idle ones only, never for the collections under load.
 */
export function exposedGc(): (() => void) | undefined {
  const g = (globalThis as { gc?: unknown }).gc;
  if (typeof g !== "function") return undefined;
  return () => {
    v8.setFlagsFromString("--compact-on-every-full-gc");
    try {
      (g as () => void)();
    } finally {
      v8.setFlagsFromString("--no-compact-on-every-full-gc");
    }
  };
}
