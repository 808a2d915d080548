// Graceful drain before an upgrade or a stop (firmware-hooks/pre-upgrade, SIGTERM): stop taking
// new calls (the agent answers new INVITEs 503 with Retry-After, RFC 3261 §21.5.4 / §20.33),
// let ringing and connected calls finish up to a deadline, then make everything durable: the
// store flushed, the console outbox written (and delivered when the broker is up). Mechanism
// only: the agent tells it what "calls" and "flush" mean.
import type { Logger } from "../log.ts";

export interface CallActivity {
  /** Calls not yet answered (forks out). */
  ringing: number;
  /** Answered calls whose dialog has not ended by BYE. */
  connected: number;
  /** Calls waiting for a free operator. */
  queued: number;
}

export interface OutboxState {
  pending: number;
  durable: number;
  connected: boolean;
}

export interface DrainReport {
  /** No call left and the store flushed: the agent may be stopped now. */
  drained: boolean;
  waitedMs: number;
  timeoutMs: number;
  /** Calls still up when the drain ended. */
  calls: CallActivity;
  /** New INVITEs refused with 503 since draining began. */
  refused: number;
  store: { flushed: boolean; error?: string };
  /** Console events; null when no broker is configured. All durable = nothing is lost by stopping. */
  outbox: (OutboxState & { allDurable: boolean }) | null;
  /** One line for people and logs. */
  message: string;
}

/** Whether the agent refuses new calls, since when, and whether for longer than its drain's timeout. */
export type DrainState =
  | { draining: false }
  | { draining: true; since: string; forS: number; timeoutS: number; overdue: boolean };

export interface DrainDeps {
  activity(): CallActivity;
  flushStore(): Promise<void>;
  outbox?: () => OutboxState | undefined;
  log: Logger;
  /** How often to look at the calls; default 50 ms. */
  pollMs?: number;
  /** Extra time after the deadline for writing the outbox to disk; default 2000 ms. */
  flushGraceMs?: number;
  now?: () => number;
  /** Timeout of a drain begun without one (begin() alone); default 30 s. */
  defaultTimeoutMs?: () => number;
}

const idle = (a: CallActivity): boolean => a.ringing + a.connected + a.queued === 0;

export class DrainController {
  /** Epoch ms when draining began; undefined while taking calls. */
  private since: number | undefined;
  private refusedCount = 0;
  /** Bumped by resume(): drains in progress end early, not drained. */
  private generation = 0;
  /** The timeout of the drain in force: past it, the drain is overdue (state()). */
  private timeoutMs = 0;
  private readonly now: () => number;

  constructor(private readonly deps: DrainDeps) {
    this.now = deps.now ?? Date.now;
  }

  get draining(): boolean {
    return this.since !== undefined;
  }

  /** Stop taking new calls (idempotent). */
  begin(timeoutMs: number = this.deps.defaultTimeoutMs?.() ?? 30_000): void {
    if (this.since !== undefined) return;
    this.since = this.now();
    this.timeoutMs = timeoutMs;
    this.refusedCount = 0;
    this.deps.log.warn("draining: new calls are refused with 503");
  }

  /** For status and health: a drain left on past its timeout (an upgrade that stopped half way) is overdue. */
  state(): DrainState {
    if (this.since === undefined) return { draining: false };
    const forMs = Math.max(0, this.now() - this.since);
    return { draining: true, since: new Date(this.since).toISOString(), forS: Math.floor(forMs / 1000), timeoutS: Math.round(this.timeoutMs / 1000), overdue: forMs > this.timeoutMs };
  }

  /** Take calls again (an upgrade that was called off). */
  resume(): boolean {
    if (this.since === undefined) return false;
    this.since = undefined;
    this.generation++;
    this.deps.log.info("drain called off: taking calls again");
    return true;
  }

  noteRefused(): void {
    this.refusedCount++;
  }

  /** Begins draining (if not yet) and waits until the calls are gone or timeoutMs passed. */
  async drain(timeoutMs: number): Promise<DrainReport> {
    // A drain asked again (pre-upgrade run twice) counts from the first; its timeout is the latest's.
    if (this.since !== undefined) this.timeoutMs = Math.max(0, this.now() - this.since) + Math.max(0, timeoutMs);
    this.begin(timeoutMs);
    const gen = this.generation;
    const started = this.now();
    const deadline = started + Math.max(0, timeoutMs);
    const poll = this.deps.pollMs ?? 50;
    let calls = this.deps.activity();
    while (!idle(calls) && this.now() < deadline && gen === this.generation) {
      await sleep(Math.min(poll, Math.max(1, deadline - this.now())));
      calls = this.deps.activity();
    }
    const store: DrainReport["store"] = { flushed: false };
    try {
      await this.deps.flushStore();
      store.flushed = true;
    } catch (e) {
      store.error = (e as Error).message;
    }
    // Outbox: durable on disk is what matters for a stop; delivery is a bonus while time remains.
    let outbox: DrainReport["outbox"] = null;
    const ob = this.deps.outbox;
    if (ob) {
      const writeBy = Math.max(deadline, this.now()) + (this.deps.flushGraceMs ?? 2000);
      let s = ob();
      while (s !== undefined && ((s.durable < s.pending && this.now() < writeBy) || (s.connected && s.pending > 0 && this.now() < deadline))) {
        await sleep(Math.min(poll, 20));
        s = ob();
      }
      if (s !== undefined) outbox = { ...s, allDurable: s.durable >= s.pending };
    }
    const resumed = gen !== this.generation;
    const drained = !resumed && idle(calls) && store.flushed && (outbox === null || outbox.allDurable);
    const waitedMs = this.now() - started;
    const up = `${calls.ringing} ringing, ${calls.connected} connected, ${calls.queued} queued`;
    const message = resumed
      ? `drain called off after ${waitedMs} ms (${up})`
      : drained
        ? `drained in ${waitedMs} ms: no calls, store flushed${outbox ? `, outbox ${outbox.pending === 0 ? "delivered" : `written (${outbox.pending} to deliver later)`}` : ""}; safe to stop`
        : !idle(calls)
          ? `not drained after ${waitedMs} ms: ${up}`
          : `not drained: ${store.flushed ? "outbox not written to disk" : `store flush failed (${store.error ?? "unknown"})`}`;
    this.deps.log[drained ? "info" : "warn"](message, { refused: this.refusedCount });
    return { drained, waitedMs, timeoutMs, calls, refused: this.refusedCount, store, outbox, message };
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
