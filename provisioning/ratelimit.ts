// Per-source burst limiter for the provisioning server and the PnP responder. A MAC address has
// only 24 guessable bits once the vendor OUI is known, so a scanner walking MACs shows up as a
// burst of 404s (unknown MAC) or 401s (wrong credentials) from one address; fail2ban-style, the
// source is then refused for a while (provisioning.md §4.1, §4.4). Pure bookkeeping: the caller
// decides what "refused" means on its wire (429 or a silent drop) and logs it.

export interface BurstLimiterOptions {
  /** Events from one source within windowMs that trip the block (e.g. 20). */
  max: number;
  windowMs: number;
  /** How long a tripped source stays blocked. */
  blockMs: number;
  /** Bound on tracked sources; the least recently active is forgotten first. */
  maxTracked?: number;
  now?: () => number;
}

export type BurstVerdict = "ok" | "tripped" | "blocked";

interface SourceState {
  /** Event times within the window, oldest first (at most `max` kept). */
  events: number[];
  blockedUntil: number;
}

export class BurstLimiter {
  /** Keyed by source address; Map order is least recently active first (LRU bound). */
  private readonly sources = new Map<string, SourceState>();
  private readonly maxTracked: number;
  private readonly now: () => number;

  constructor(private readonly opts: BurstLimiterOptions) {
    if (!(opts.max >= 1) || !(opts.windowMs > 0) || !(opts.blockMs >= 0)) throw new Error("BurstLimiter: max >= 1, windowMs > 0, blockMs >= 0");
    this.maxTracked = Math.max(1, opts.maxTracked ?? 10_000);
    this.now = opts.now ?? Date.now;
  }

  /** Whether the source is refused right now (checked before any work is done for it). */
  isBlocked(source: string): boolean {
    const s = this.sources.get(source);
    return s !== undefined && s.blockedUntil > this.now();
  }

  /** Milliseconds until the source's block ends (0 when not blocked), for Retry-After. */
  blockedForMs(source: string): number {
    const s = this.sources.get(source);
    return s ? Math.max(0, s.blockedUntil - this.now()) : 0;
  }

  /**
   * Count one event (a 401 or 404 answered) for the source. "tripped" when this event crossed
   * the limit (log it once, loudly); "blocked" when the source was already blocked.
   */
  note(source: string): BurstVerdict {
    const t = this.now();
    let s = this.sources.get(source);
    if (s) this.sources.delete(source); // re-insert below: most recently active last
    else s = { events: [], blockedUntil: 0 };
    this.sources.set(source, s);
    this.evict();
    if (s.blockedUntil > t) return "blocked";
    const from = t - this.opts.windowMs;
    while (s.events.length && s.events[0]! <= from) s.events.shift();
    s.events.push(t);
    if (s.events.length >= this.opts.max) {
      s.events = [];
      s.blockedUntil = t + this.opts.blockMs;
      return "tripped";
    }
    return "ok";
  }

  /** Sources currently blocked (for status output). */
  blocked(): string[] {
    const t = this.now();
    return [...this.sources].filter(([, s]) => s.blockedUntil > t).map(([k]) => k);
  }

  tracked(): number {
    return this.sources.size;
  }

  private evict(): void {
    while (this.sources.size > this.maxTracked) {
      const oldest = this.sources.keys().next();
      if (oldest.done === true) break;
      this.sources.delete(oldest.value);
    }
  }
}
