// Transaction timer values, RFC 3261 §17 and Table 4 (§A), plus Timers L and M of RFC 6026 §8
// and the proxy's Timer C of RFC 3261 §16.6 step 11. Pure: no clocks here, only numbers.
//
// Every derived timer is computed from T1/T2/T4 unless given explicitly, so tests can run the
// whole state machines in milliseconds. All values are in milliseconds.

export interface TimerSettings {
  /** RTT estimate, RFC 3261 §17.1.1.1. Default 500 ms. */
  T1: number;
  /** Maximum retransmit interval for non-INVITE requests and INVITE responses. Default 4 s. */
  T2: number;
  /** Maximum duration a message remains in the network. Default 5 s. */
  T4: number;
  /** INVITE request retransmit interval (initial; doubles), unreliable only. Default T1. */
  A?: number;
  /** INVITE client transaction timeout. Default 64*T1. */
  B?: number;
  /** Proxy INVITE client transaction timeout (§16.6 step 11). Default 181 s ("larger than 3 minutes"). */
  C?: number;
  /** Wait time for response retransmits in INVITE Completed, unreliable (reliable: always 0). Default max(32 s, 64*T1). */
  D?: number;
  /** Non-INVITE request retransmit interval (initial; doubles up to T2), unreliable only. Default T1. */
  E?: number;
  /** Non-INVITE client transaction timeout. Default 64*T1. */
  F?: number;
  /** INVITE final-response retransmit interval (initial; doubles up to T2), unreliable only. Default T1. */
  G?: number;
  /** Wait time for ACK receipt. Default 64*T1. */
  H?: number;
  /** Wait time for ACK retransmits, unreliable (reliable: always 0). Default T4. */
  I?: number;
  /** Wait time for non-INVITE request retransmits, unreliable (reliable: always 0). Default 64*T1. */
  J?: number;
  /** Wait time for non-INVITE response retransmits, unreliable (reliable: always 0). Default T4. */
  K?: number;
  /** INVITE server transaction lingering in Accepted (RFC 6026 §8.7). Default 64*T1. */
  L?: number;
  /** INVITE client transaction lingering in Accepted (RFC 6026 §8.4). Default 64*T1. */
  M?: number;
}

export const DEFAULT_TIMER_SETTINGS: Readonly<TimerSettings> = Object.freeze({ T1: 500, T2: 4000, T4: 5000 });

/** Every timer resolved for one kind of transport. */
export interface TimerValues {
  T1: number;
  T2: number;
  T4: number;
  A: number;
  B: number;
  C: number;
  D: number;
  E: number;
  F: number;
  G: number;
  H: number;
  I: number;
  J: number;
  K: number;
  L: number;
  M: number;
}

// RFC 3261 §16.6 step 11: Timer C "MUST be set for each client transaction ... larger than 3
// minutes". The routing engine sets a shorter C per branch for ring steps where it wants one.
const DEFAULT_TIMER_C = 181_000;

function nonNegative(n: number | undefined, fallback: number): number {
  return n !== undefined && Number.isFinite(n) && n >= 0 ? n : fallback;
}

/**
 * Resolves all timers for a reliable (TCP) or unreliable (UDP) flow.
 * RFC 3261 §17.1.1.2 / §17.1.2.2 / §17.2.1 / §17.2.2: on reliable transports D, I, J and K are
 * zero and the retransmission timers A, E and G are never started (the callers check
 * reliability; their values are still reported here for completeness).
 */
export function resolveTimers(settings: Partial<TimerSettings> | undefined, reliable: boolean): TimerValues {
  const T1 = nonNegative(settings?.T1, DEFAULT_TIMER_SETTINGS.T1);
  const T2 = nonNegative(settings?.T2, DEFAULT_TIMER_SETTINGS.T2);
  const T4 = nonNegative(settings?.T4, DEFAULT_TIMER_SETTINGS.T4);
  const s = settings ?? {};
  return {
    T1,
    T2,
    T4,
    A: nonNegative(s.A, T1),
    B: nonNegative(s.B, 64 * T1),
    C: nonNegative(s.C, DEFAULT_TIMER_C),
    // §17.1.1.2: "at least 32 seconds for unreliable transports" — the server's T1 may be the
    // default even when ours is shorter, so 32 s is a floor unless D is set explicitly.
    D: reliable ? 0 : nonNegative(s.D, Math.max(32_000, 64 * T1)),
    E: nonNegative(s.E, T1),
    F: nonNegative(s.F, 64 * T1),
    G: nonNegative(s.G, T1),
    H: nonNegative(s.H, 64 * T1),
    I: reliable ? 0 : nonNegative(s.I, T4),
    J: reliable ? 0 : nonNegative(s.J, 64 * T1),
    K: reliable ? 0 : nonNegative(s.K, T4),
    L: nonNegative(s.L, 64 * T1),
    M: nonNegative(s.M, 64 * T1),
  };
}

/** What a TimerSet calls when one of its timers fires: the transaction that owns it. */
export interface TimerOwner<Name extends string> {
  onTimer(name: Name): void;
}

/** The class of the runtime's own timer objects (node:test's mocked timers are not of it). */
const NativeTimeout: unknown = (() => {
  const t = setTimeout(() => undefined, 0);
  clearTimeout(t);
  return t.constructor;
})();

/**
 * Named one-shot timers of one transaction; a fired or stopped timer leaves no handle behind.
 * Held as one flat array of name, handle pairs (a transaction runs one to three timers at a time),
 * not a Map: tens of thousands of transactions linger under Timers D, J, L and M at a few hundred
 * calls a second, and a Map's table cost each of them about 150 bytes more.
 *
 * A timer firing calls its owner's onTimer(name) through one shared function given the set and
 * the name as arguments: no closure and context per start (two of each before, some 60 starts
 * per call of the ring-all-10 bench, and one of each kept by every lingering transaction).
 */
export class TimerSet<Name extends string> {
  /** name, handle, name, handle, ... */
  private pending: Array<Name | ReturnType<typeof setTimeout>> | undefined;

  constructor(private readonly owner: TimerOwner<Name>) {}

  start(name: Name, ms: number): void {
    this.stop(name);
    const handle = setTimeout(fireTimer, ms, this, name);
    // A literal holds exactly the pair; a push onto [] would reserve 17 slots.
    if (this.pending === undefined) this.pending = [name, handle];
    else this.pending.push(name, handle);
  }

  /**
   * Starts name again with ms from now. A running timer of that same duration is refreshed in
   * place (Timeout.refresh: no new timer object), as Timer C is on every provisional response
   * of every branch; otherwise, and under mocked timers (whose objects refresh() does not
   * reschedule), it is stopped and started anew.
   */
  restart(name: Name, ms: number): void {
    const i = this.indexOf(name);
    if (i >= 0) {
      const handle = this.pending![i + 1] as ReturnType<typeof setTimeout> & { _idleTimeout?: unknown };
      if (handle instanceof (NativeTimeout as typeof Object) && handle._idleTimeout === ms) {
        handle.refresh();
        return;
      }
    }
    this.start(name, ms);
  }

  stop(name: Name): void {
    const handle = this.remove(name);
    if (handle !== undefined) clearTimeout(handle);
  }

  stopAll(): void {
    const p = this.pending;
    if (p === undefined) return;
    this.pending = undefined;
    for (let i = 1; i < p.length; i += 2) clearTimeout(p[i] as ReturnType<typeof setTimeout>);
  }

  has(name: Name): boolean {
    return this.indexOf(name) >= 0;
  }

  get size(): number {
    return (this.pending?.length ?? 0) / 2;
  }

  /** name's timer fired (fireTimer only): forget its handle, then tell the owner. */
  fired(name: Name): void {
    this.remove(name);
    this.owner.onTimer(name);
  }

  private indexOf(name: Name): number {
    const p = this.pending;
    if (p !== undefined) for (let i = 0; i < p.length; i += 2) if (p[i] === name) return i;
    return -1;
  }

  /** Forgets name's handle (without clearing it) and returns it. */
  private remove(name: Name): ReturnType<typeof setTimeout> | undefined {
    const i = this.indexOf(name);
    if (i < 0) return undefined;
    const p = this.pending!;
    const handle = p[i + 1] as ReturnType<typeof setTimeout>;
    // Order does not matter: the last pair takes the freed place.
    const last = p.length - 2;
    p[i] = p[last]!;
    p[i + 1] = p[last + 1]!;
    p.length = last;
    if (last === 0) this.pending = undefined;
    return handle;
  }
}

function fireTimer(set: TimerSet<string>, name: string): void {
  set.fired(name);
}
