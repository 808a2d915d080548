// Overload control (issue 11): the agent knows its own capacity from cheap signals and, past it,
// refuses NEW work early and statelessly with 503 Service Unavailable + Retry-After (RFC 3261
// §21.5.4, §20.33), so that the calls it has admitted finish instead of every call failing. The
// idea is RFC 7339's (overload control between SIP servers): shed the requests that create new
// work at the entrance, keep the ones that finish work already admitted.
//
// Policy (pure functions, unit-tested):
//   - requestClass(): which requests may be shed. Never: ACK, CANCEL, BYE, PRACK, any request
//     inside a dialog (To tag), REGISTER, and OPTIONS (keep-alive) from a live registered flow:
//     these end, confirm or keep alive work the agent already holds, and shedding them would
//     turn overload into failed calls and lost phones. REGISTER is never shed, not even from an
//     address that holds no binding: it creates no dialog, costs a digest check (no fork, no
//     timers beyond its transaction), and a phone refused after a reboot or a NAT rebinding is
//     a phone without service for its Retry-After; a REGISTER flood from one address is the
//     per-source quota's and the guard's (guard.ts). Sheddable ("new"): initial INVITE,
//     SUBSCRIBE without To tag, and out-of-dialog MESSAGE/OPTIONS/REFER/PUBLISH/NOTIFY/INFO/UPDATE.
//   - counts (calls being set up, server transactions): exact, re-read for every new request.
//     judgeCounts() latches overload when one reaches its limit and releases it only when every
//     count is below COUNT_CLEAR_PCT (95 %) of its limit. Counts need no wide band (each
//     admission below the limit is exactly "there is room", and a wide band would refuse calls
//     the agent could carry); the narrow one keeps a full agent from entering and leaving
//     overload (logs, events) with every call at the edge.
//   - sampled signals, read every sampleMs: noisy and late, so they do not switch admission on
//     and off (an on/off switch on a CPU signal swings between saturation and idleness and
//     completes fewer calls than the agent can carry); they adapt the share of new requests
//     refused (a uniform draw per request), as RFC 7339's loss-based algorithm does (§5.10).
//     The primary one is the queue delay: how long a datagram waits in a SIP UDP socket's
//     receive queue before the agent reads it, measured by a probe the agent sends itself through
//     that queue (sip/queue-probe.ts). It is the backlog itself, in the unit the harm is in (a
//     caller retransmits after 500 ms), and it includes the event loop's own stalls. The share
//     follows it with a proportional-integral law around a target wait (queueDelayShed(), the
//     law RFC 8033's PIE applies to a router's queue): up or down in proportion to how far the
//     wait is from the target, plus, while the wait stays over the target, in proportion to how
//     much it grew since the last sample. So the agent settles where it carries what it can with
//     a short queue (the share a 2× overload needs is found within a few samples), and lets the
//     share go as soon as the queue is short, instead of holding it through a band (the earlier
//     law, driven by the queue's fill in bytes with a hysteresis band, refused most calls for
//     seconds after each crossing and completed a third to three quarters of what the agent carries). A loop
//     100 % busy that keeps the queue short is the agent at full use, which is what it is for,
//     so the loop's busy share does not count where the queue delay is measured. Where it is not
//     (TCP only, a probe socket that failed, or overloadQueueDelayMs 0), the older step law runs on the loop's busy share and timer lag (smoothed): up
//     at every sample over a limit (more the further over), down by a small step at every sample
//     with both below clearPct % of their limits, unchanged in between.
//   - shedNow(): a new request is refused while the counts are latched, else with the current
//     fraction (a uniform draw).
//   - retryAfterS(): the base Retry-After plus up to half of it again at random, so the refused
//     callers do not all come back in the same second.
//
// Mechanism (OverloadControl): every sampleMs (QUIET_SAMPLE_FACTOR times that while nothing is
// refused and the loop and the queue are quiet) it reads the queue delay from the transport's probes
// and sends the next probe, and samples the event loop — how busy it was
// (performance.eventLoopUtilization: the share of time spent running callbacks) and its timer
// delay (perf_hooks monitorEventLoopDelay), both smoothed over samples (SMOOTHING: a single busy
// sample, such as a site file applied or a module loaded, is a burst, not overload; four in a
// row are). The first sample after start() only sets the baseline. The counts come from
// callbacks read per request (O(1)). A new request costs one classification and a few
// comparisons; a shed one is answered without a transaction or call record (agent.ts).
//
// Retransmissions never reach this: the transaction layer absorbs every copy of a request it is
// handling before admission runs (transaction/layer.ts receiveRequest), so a retransmission is
// never counted as new load nor processed twice. A request that was shed holds no transaction;
// its key is remembered for 64×T1 (a bounded LRU of strings) so that its retransmissions get the
// same 503 again instead of being judged anew: admitting a later copy would start a call the
// caller has already given up on (it took the first 503 as final and ACKed it).
import { monitorEventLoopDelay, performance, type EventLoopUtilization, type IntervalHistogram } from "node:perf_hooks";
import { LruMap } from "./guard.ts";
import { rfc2543Key, serverKey } from "./transaction/keys.ts";
import type { SipRequest } from "./types.ts";

export interface OverloadLimits {
  /** Share of time the event loop ran callbacks in a sample, percent; 0 disables. */
  loopBusyPct: number;
  /** Mean event-loop timer delay in a sample, ms; 0 disables. */
  lagMs: number;
  /** Target wait in the SIP UDP receive queues, ms: past it a growing share of new requests is refused; 0 disables. */
  queueDelayMs: number;
  /** Calls being set up (forked, ringing, no final answer yet); 0 disables. */
  maxCallsSetup: number;
  /** Live server transactions (all sources); 0 disables. */
  maxServerTransactions: number;
  /** Hysteresis of the sampled signals: the share refused falls only while each is below this percentage of its limit (1-100). */
  clearPct: number;
  /** Base Retry-After of the 503, seconds (≥ 1). */
  retryAfterS: number;
}

/** Signals read once per sample period. */
export interface SampledSignals {
  loopBusyPct: number;
  lagMs: number;
  /** The wait in the SIP UDP receive queues, ms (sip/queue-probe.ts); undefined where not measured (no UDP socket). */
  queueDelayMs: number | undefined;
}

/** Signals counted exactly, re-read per new request. */
export interface CountedSignals {
  callsSetup: number;
  serverTransactions: number;
}

export type SampledCause = "loopBusy" | "lag" | "queueDelay";
export type CountedCause = "callsSetup" | "serverTransactions";
export type OverloadCause = SampledCause | CountedCause;

/** A count latched at its limit is released below this percentage of it (see the header). */
export const COUNT_CLEAR_PCT = 95;

/** Default sampling period, ms: a queue filling at twice the agent's pace gains 50 ms a sample, well inside a caller's 500 ms retransmission. */
export const SAMPLE_MS = 50;
/**
 * The queue-delay law (queueDelayShed): share per ms of wait over (or under) the target, per
 * sample; share per ms the wait grew since the last sample while that one was over the target;
 * the most wait over the target one sample counts (a single stall, such as a long garbage
 * collection, moves the share by at most QUEUE_GAIN_PER_MS × QUEUE_ERROR_CAP_MS = 0.05, and the
 * next sample takes it back). Tuned for SAMPLE_MS samples: on a fluid model of the ring-all call
 * first, then with the vs-kamailio bench (bench/README.md). Twice these gains made the share
 * swing (0.4 to 0.9 and back every ~0.7 s at 800 calls/s, the loop idle at the low end): a call
 * admitted now brings most of its work 50-150 ms later, a dead time a stronger law overshoots.
 */
export const QUEUE_GAIN_PER_MS = 0.001;
export const QUEUE_TREND_GAIN_PER_MS = 0.002;
export const QUEUE_ERROR_CAP_MS = 50;

/** A quiet agent (OverloadControl.quiet) samples this many times less often: every 200 ms at the default period. */
export const QUIET_SAMPLE_FACTOR = 4;
/** Quiet: the loop busy less than this share of the last sample, percent … */
export const QUIET_BUSY_PCT = 50;
/** … and the queue's wait under this, ms. */
export const QUIET_QUEUE_MS = 5;

/** Share of new requests refused on the loop's figures (no queue delay): the step down per calm sample, the least step up, the most. */
export const SHED_STEP_DOWN = 0.05;
export const SHED_STEP_UP = 0.1;
export const SHED_STEP_UP_MAX = 0.5;

/** Whether limits are usable; a live change to nonsense is ignored by the mechanism (never sheds everything). */
export function validLimits(l: OverloadLimits): boolean {
  const nonNeg = (n: number): boolean => Number.isFinite(n) && n >= 0;
  return (
    nonNeg(l.loopBusyPct) && nonNeg(l.lagMs) && nonNeg(l.maxCallsSetup) && nonNeg(l.maxServerTransactions) && nonNeg(l.queueDelayMs) &&
    Number.isFinite(l.clearPct) && l.clearPct >= 1 && l.clearPct <= 100 && Number.isFinite(l.retryAfterS) && l.retryAfterS >= 1
  );
}

const LOOP_SIGNALS: ReadonlyArray<{ cause: SampledCause; limit: "loopBusyPct" | "lagMs"; value: (s: SampledSignals) => number }> = [
  { cause: "loopBusy", limit: "loopBusyPct", value: (s) => s.loopBusyPct },
  { cause: "lag", limit: "lagMs", value: (s) => s.lagMs },
];

function clamp01(n: number): number {
  return Number.isFinite(n) ? Math.min(Math.max(n, 0), 1) : 0;
}

/**
 * The share of new requests to refuse after one sample (pure, in [0, 1]). With the queue delay
 * measured and its target set: queueDelayShed(). Otherwise the loop's figures: one at or over
 * its limit raises the share by SHED_STEP_UP plus how far over the worst one is (v/limit − 1),
 * at most SHED_STEP_UP_MAX; all of them below clearPct % of their limits lower it by
 * SHED_STEP_DOWN; otherwise it stays. prevDelayMs: the queue delay of the previous sample.
 * cause: what raised the share, null when nothing did.
 */
export function nextShedFraction(prev: number, s: SampledSignals, l: OverloadLimits, prevDelayMs?: number): { fraction: number; cause: SampledCause | null } {
  const p = clamp01(prev);
  if (l.queueDelayMs > 0 && s.queueDelayMs !== undefined && Number.isFinite(s.queueDelayMs)) return queueDelayShed(p, s.queueDelayMs, prevDelayMs, l.queueDelayMs);
  let worst = 0;
  let cause: SampledCause | null = null;
  let aboveClear = false;
  for (const sig of LOOP_SIGNALS) {
    const limit = l[sig.limit];
    const v = sig.value(s);
    if (!(limit > 0) || !Number.isFinite(v)) continue;
    const ratio = v / limit;
    if (ratio >= 1 && ratio > worst) {
      worst = ratio;
      cause = sig.cause;
    }
    if (ratio * 100 >= l.clearPct) aboveClear = true;
  }
  if (cause !== null) return { fraction: Math.min(1, p + Math.min(SHED_STEP_UP_MAX, SHED_STEP_UP + (worst - 1))), cause };
  if (aboveClear) return { fraction: p, cause: null };
  return { fraction: Math.max(0, p - SHED_STEP_DOWN), cause: null };
}

/**
 * The proportional-integral law on the queue delay (pure): the share moves by
 * QUEUE_GAIN_PER_MS per ms the wait is over the target (under it: down; the excess counted up to
 * QUEUE_ERROR_CAP_MS), plus QUEUE_TREND_GAIN_PER_MS per ms the wait changed since the previous
 * sample when the previous one was over the target (a queue still growing needs more, one
 * draining past its peak less). So one stall alone raises the share by the capped first term
 * only, and the next sample, back under the target, takes that back.
 */
export function queueDelayShed(prev: number, delayMs: number, prevDelayMs: number | undefined, targetMs: number): { fraction: number; cause: SampledCause | null } {
  const p = clamp01(prev);
  if (!Number.isFinite(delayMs) || !(targetMs > 0)) return { fraction: p, cause: null };
  const d = Math.max(0, delayMs);
  let step = QUEUE_GAIN_PER_MS * Math.min(d - targetMs, QUEUE_ERROR_CAP_MS);
  if (prevDelayMs !== undefined && Number.isFinite(prevDelayMs) && prevDelayMs > targetMs) step += QUEUE_TREND_GAIN_PER_MS * (d - Math.max(0, prevDelayMs));
  const fraction = clamp01(p + step);
  return { fraction, cause: d > targetMs && fraction > p ? "queueDelay" : null };
}

/**
 * Whether the exact counts hold the agent in overload (pure). Enters when a count reaches its
 * limit; a latched overload ends only when every count is below COUNT_CLEAR_PCT % of its limit.
 * Returns the count that is over (or, latched, still above the clear level), or null.
 */
export function judgeCounts(latched: CountedCause | null, c: CountedSignals, l: OverloadLimits): CountedCause | null {
  // Runs for every new request: plain comparisons, no allocation.
  const callsOn = l.maxCallsSetup > 0;
  const txsOn = l.maxServerTransactions > 0;
  if (callsOn && c.callsSetup >= l.maxCallsSetup) return "callsSetup";
  if (txsOn && c.serverTransactions >= l.maxServerTransactions) return "serverTransactions";
  if (latched === null) return null;
  const held = (callsOn && c.callsSetup * 100 >= l.maxCallsSetup * COUNT_CLEAR_PCT) || (txsOn && c.serverTransactions * 100 >= l.maxServerTransactions * COUNT_CLEAR_PCT);
  return held ? latched : null;
}

/** Whether to refuse a new request now: counts latched, else a draw (random in [0, 1)) under the fraction. */
export function shedNow(cls: RequestClass, counts: CountedCause | null, fraction: number, random: number): boolean {
  if (cls === "protected") return false;
  return counts !== null || random < fraction;
}

export type RequestClass = "protected" | "new";

/** Methods that end, confirm or acknowledge work already admitted: never shed (RFC 7339's priority idea). */
const ALWAYS: ReadonlySet<string> = new Set(["ACK", "CANCEL", "BYE", "PRACK"]);

/**
 * Whether a request may be shed under overload. inDialog: it carries a To tag (RFC 3261 §12.2).
 * registeredFlow: it came over the transport, address and port of a live binding.
 */
export function requestClass(method: string, inDialog: boolean, registeredFlow: boolean): RequestClass {
  if (ALWAYS.has(method) || inDialog || method === "REGISTER") return "protected";
  // A registered phone's OPTIONS keep-alive: refusing it would make the phone fail over or drop
  // its line, turning the agent's overload into the site's outage.
  if (registeredFlow && method === "OPTIONS") return "protected";
  return "new";
}

/** Retry-After seconds: base plus up to base/2 at random (random in [0, 1)), an integer (§20.33). */
export function retryAfterS(base: number, random: number): number {
  const b = Math.max(1, Math.floor(base));
  const r = Number.isFinite(random) ? Math.min(Math.max(random, 0), 0.999999) : 0;
  return b + Math.floor(r * (Math.floor(b / 2) + 1));
}

// --- mechanism -----------------------------------------------------------------------------------

export interface OverloadStats {
  /** Refusing new requests now (a count latched, or a share of them on sampled signals). */
  active: boolean;
  /** ISO time the current overload began; null when not overloaded. */
  since: string | null;
  /** What started the current overload; null when not overloaded. */
  cause: OverloadCause | null;
  /** Share of new requests refused on the sampled signals, 0-1. */
  shedFraction: number;
  /** Times the agent went into overload since start. */
  episodes: number;
  /** New requests refused with 503 since start, in all and by method. */
  shed: number;
  shedByMethod: Record<string, number>;
  /** Retransmissions of shed requests answered 503 again (not counted in shed). */
  reshed: number;
  /** The last figures judged (sampled ones from the last sample). */
  signals: SampledSignals & CountedSignals;
  limits: OverloadLimits;
}

export interface OverloadControlOptions {
  /** Kept by reference: the agent changes it in place on reload. */
  limits: OverloadLimits;
  /** Calls being set up now (O(1)). */
  callsSetup: () => number;
  /** Live server transactions now (O(1)). */
  serverTransactions: () => number;
  /** The queue-delay probes (the transport): read the wait, send the next probe (sip/queue-probe.ts). */
  queueProbe?: { delayMs(): number | undefined; probe(): void };
  /** Sampling period of the loop and queue signals, ms (default SAMPLE_MS). */
  sampleMs?: number;
  /** Entered (cause set) or left (cause null) overload: logs, bus. */
  onChange?: (active: boolean, cause: OverloadCause | null, signals: Readonly<SampledSignals & CountedSignals>) => void;
  now?: () => number;
  random?: () => number;
}

/** Methods counted by name in shedByMethod; anything else counts under "other" (bounded labels). */
const COUNTED_METHODS: ReadonlySet<string> = new Set(["INVITE", "SUBSCRIBE", "OPTIONS", "MESSAGE", "NOTIFY", "REFER", "PUBLISH", "INFO", "UPDATE"]);
/** monitorEventLoopDelay's timer period, ms: its histogram holds whole periods, the lag is what exceeds it. */
const LAG_RESOLUTION_MS = 10;
/** How long, and how many, shed transactions are remembered: 64×T1, as long as a UAC retransmits (RFC 3261 §17.1.1.2, §17.1.2.2). */
const SHED_MEMORY_MS = 32_000;
const SHED_MEMORY_MAX = 20_000;
/** Weight of the newest sample in the smoothed loop figures (exponential moving average). */
export const SMOOTHING = 0.5;

export class OverloadControl {
  private readonly sig: SampledSignals & CountedSignals = { loopBusyPct: 0, lagMs: 0, queueDelayMs: undefined, callsSetup: 0, serverTransactions: 0 };
  private counted: CountedCause | null = null;
  private fraction = 0;
  private activeSince = 0;
  private activeCause: OverloadCause | null = null;
  private shedTotal = 0;
  private reshed = 0;
  /** Transaction key → when it was shed (see the header). */
  private readonly recentlyShed = new LruMap<number>(SHED_MEMORY_MAX);
  private readonly shedByMethod = new Map<string, number>();
  private episodes = 0;
  private timer: NodeJS.Timeout | undefined;
  /** The loop's busy share in the last sample alone (unsmoothed), percent: quiet() reads it. */
  private lastBusyPct = 100;
  /** The timer-delay histogram is off while the agent is quiet (schedule()). */
  private lagPaused = false;
  private delay: IntervalHistogram | undefined;
  private elu: EventLoopUtilization | undefined;
  /** The queue delay of the previous sample (the law's trend term). */
  private prevDelayMs: number | undefined;
  /** Samples taken since start(); the first only sets the baseline. */
  private samples = 0;
  private readonly now: () => number;
  private readonly random: () => number;

  constructor(private readonly o: OverloadControlOptions) {
    this.now = o.now ?? Date.now;
    this.random = o.random ?? Math.random;
  }

  start(): void {
    if (this.timer !== undefined) return;
    this.delay = monitorEventLoopDelay({ resolution: LAG_RESOLUTION_MS });
    this.delay.enable();
    this.lagPaused = false;
    this.elu = performance.eventLoopUtilization();
    this.samples = 0;
    this.prevDelayMs = undefined;
    this.o.queueProbe?.probe(); // opens the probe sockets; the first sample sends the first probe
    this.schedule();
  }

  stop(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.delay?.disable();
    this.delay = undefined;
    this.elu = undefined;
  }

  /**
   * Admission of one new request (never called for retransmissions: the transaction layer
   * absorbs those first). true: go on; false: answer 503 with retryAfter() and keep no state.
   */
  admit(method: string, inDialog: boolean, registeredFlow: boolean, req?: SipRequest): boolean {
    const cls = requestClass(method, inDialog, registeredFlow);
    if (cls === "protected" || !validLimits(this.o.limits)) return true;
    if (req !== undefined && this.recentlyShed.size > 0) {
      const key = transactionKey(req);
      const at = key === undefined ? undefined : this.recentlyShed.get(key);
      if (at !== undefined && this.now() - at < SHED_MEMORY_MS) {
        this.reshed++;
        return false;
      }
    }
    this.judgeCounts();
    if (!shedNow(cls, this.counted, this.fraction, this.random())) return true;
    this.shedTotal++;
    const m = COUNTED_METHODS.has(method) ? method : "other";
    this.shedByMethod.set(m, (this.shedByMethod.get(m) ?? 0) + 1);
    const key = req === undefined ? undefined : transactionKey(req);
    if (key !== undefined) this.recentlyShed.set(key, this.now());
    return false;
  }

  /** Retry-After for a 503 sent now, seconds. */
  retryAfter(): number {
    return retryAfterS(this.o.limits.retryAfterS, this.random());
  }

  /** New requests refused since start. */
  get shedCount(): number {
    return this.shedTotal;
  }

  get active(): boolean {
    return this.counted !== null || this.fraction > 0;
  }

  stats(): OverloadStats {
    if (validLimits(this.o.limits)) this.judgeCounts();
    const active = this.active;
    return {
      active,
      since: active ? new Date(this.activeSince).toISOString() : null,
      cause: active ? this.activeCause : null,
      shedFraction: Math.round(this.fraction * 1000) / 1000,
      episodes: this.episodes,
      shed: this.shedTotal,
      shedByMethod: Object.fromEntries(this.shedByMethod),
      reshed: this.reshed,
      signals: { ...this.sig },
      limits: { ...this.o.limits },
    };
  }

  /** Re-reads the counts (O(1)) and judges them. */
  private judgeCounts(): void {
    const s = this.sig;
    s.callsSetup = this.o.callsSetup();
    s.serverTransactions = this.o.serverTransactions();
    const was = this.active;
    this.counted = judgeCounts(this.counted, s, this.o.limits);
    this.noteChange(was, this.counted);
  }

  private noteChange(was: boolean, cause: OverloadCause | null): void {
    const now = this.active;
    if (now === was) return;
    if (now) {
      this.episodes++;
      this.activeSince = this.now();
      this.activeCause = cause;
    } else {
      this.activeCause = null;
    }
    try {
      this.o.onChange?.(now, this.activeCause, { ...this.sig });
    } catch {
      // A listener that throws must not turn admission into a crash.
    }
  }

  /** The next sample: sampleMs away, QUIET_SAMPLE_FACTOR times that while the agent is quiet(). */
  private schedule(): void {
    const period = Math.max(10, this.o.sampleMs ?? SAMPLE_MS);
    const quiet = this.quiet();
    // The timer-delay histogram wakes the loop every LAG_RESOLUTION_MS: off while quiet (a quiet
    // loop has no lag to measure; the sample after it reads none), on again with the first busy sample.
    if (quiet !== this.lagPaused) {
      if (quiet) this.delay?.disable();
      else this.delay?.enable();
      this.lagPaused = quiet;
    }
    this.timer = setTimeout(this.tick, quiet ? period * QUIET_SAMPLE_FACTOR : period);
    this.timer.unref();
  }

  private readonly tick = (): void => {
    if (this.timer === undefined) return; // stopped
    this.sample();
    if (this.timer !== undefined) this.schedule();
  };

  /**
   * Nothing to steer: no share refused, no count latched, the loop busy less than QUIET_BUSY_PCT %
   * of the last sample and the queue's wait under QUIET_QUEUE_MS. A sample costs a probe datagram
   * sent and read, the loop's figures and the law (some 0.2-0.5 ms at 20 a second, in code too
   * rarely run to be optimised: most of an idle agent's CPU), so a quiet agent samples less often.
   * The first busy sample brings the period back, and the calls-in-setup count (per request)
   * guards the moments between.
   */
  private quiet(): boolean {
    const delay = this.sig.queueDelayMs;
    return this.samples > 0 && this.fraction === 0 && this.counted === null && this.lastBusyPct < QUIET_BUSY_PCT && (delay === undefined || delay < QUIET_QUEUE_MS);
  }

  private sample(): void {
    const s = this.sig;
    const first = this.samples++ === 0;
    if (this.delay !== undefined) {
      const mean = this.delay.mean;
      const lag = Number.isFinite(mean) ? Math.max(0, mean / 1e6 - LAG_RESOLUTION_MS) : 0;
      s.lagMs = first ? 0 : smooth(s.lagMs, lag);
      this.delay.reset();
    }
    if (this.elu !== undefined) {
      const now = performance.eventLoopUtilization();
      const busy = performance.eventLoopUtilization(now, this.elu).utilization * 100;
      this.lastBusyPct = Number.isFinite(busy) ? busy : 100;
      s.loopBusyPct = first ? 0 : smooth(s.loopBusyPct, busy);
      this.elu = now;
    }
    const delay = this.o.queueProbe?.delayMs();
    s.queueDelayMs = delay === undefined ? undefined : Math.round(delay * 10) / 10;
    this.o.queueProbe?.probe();
    if (first || !validLimits(this.o.limits)) return;
    const was = this.active;
    const next = nextShedFraction(this.fraction, s, this.o.limits, this.prevDelayMs);
    this.prevDelayMs = s.queueDelayMs;
    this.fraction = next.fraction;
    this.noteChange(was, next.cause);
    this.judgeCounts();
  }
}

/** Exponential moving average step; a non-finite sample leaves the average as it was. */
export function smooth(avg: number, sample: number, weight = SMOOTHING): number {
  if (!Number.isFinite(sample)) return avg;
  return Number.isFinite(avg) ? avg + weight * (sample - avg) : sample;
}

/** The key a server transaction for this request would have (RFC 3261 §17.2.3, RFC 2543 fallback). */
function transactionKey(req: SipRequest): string | undefined {
  return serverKey(req) ?? rfc2543Key(req);
}
