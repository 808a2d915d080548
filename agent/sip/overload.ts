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
//   - sampled signals (the UDP receive queues, how busy the event loop was, its timer delay):
//     noisy and late, so they do not switch admission on and off (an on/off switch on a CPU
//     signal swings between saturation and idleness and completes fewer calls than the agent
//     can carry). nextShedFraction() instead adapts the share of new requests refused, as
//     RFC 7339's loss-based algorithm does (§5.10): up at every sample with a signal at or over
//     its limit (more the further over), down by a small step at every sample with all of them
//     below clearPct % of their limits, unchanged in between (hysteresis band). The UDP receive
//     queue is the primary one: it is the backlog itself, the requests waiting because the agent
//     does not keep up. Where it can be read, the loop's busy share does not count: a loop 100 %
//     busy that keeps up is the agent at full use, which is what it is for, and counting it kept
//     the agent refusing most calls while refusing them alone kept the loop busy (hot-path bench
//     on a loaded box: 137 of 6,000 calls completed at 600/s; with the busy share counted only
//     while 1 % of the queue was full, still 1,316 against 1,987 without overload control).
//     Elsewhere (TCP only, no /proc) the busy share stands in for the queue.
//   - shedNow(): a new request is refused while the counts are latched, else with the current
//     fraction (a uniform draw).
//   - retryAfterS(): the base Retry-After plus up to half of it again at random, so the refused
//     callers do not all come back in the same second.
//
// Mechanism (OverloadControl): samples the event loop every sampleMs — how busy it was
// (performance.eventLoopUtilization: the share of time spent running callbacks; 100 % means
// datagrams are waiting in the kernel) and its timer delay (perf_hooks monitorEventLoopDelay),
// both smoothed over samples (SMOOTHING: a single busy sample, such as a site file applied or a
// module loaded, is a burst, not overload; four in a row are) — and, where /proc/net/udp exists,
// the fill of the SIP UDP sockets' receive queues, unsmoothed (a filling queue is datagrams about
// to be lost). The first sample after start() only sets the baseline. The counts come from
// callbacks read per request (O(1)). A new request costs one classification and a few
// comparisons; a shed one is answered without a transaction or call record (agent.ts).
//
// Retransmissions never reach this: the transaction layer absorbs every copy of a request it is
// handling before admission runs (transaction/layer.ts receiveRequest), so a retransmission is
// never counted as new load nor processed twice. A request that was shed holds no transaction;
// its key is remembered for 64×T1 (a bounded LRU of strings) so that its retransmissions get the
// same 503 again instead of being judged anew: admitting a later copy would start a call the
// caller has already given up on (it took the first 503 as final and ACKed it).
import fs from "node:fs";
import { monitorEventLoopDelay, performance, type EventLoopUtilization, type IntervalHistogram } from "node:perf_hooks";
import { LruMap } from "./guard.ts";
import { rfc2543Key, serverKey } from "./transaction/keys.ts";
import type { SipRequest } from "./types.ts";

export interface OverloadLimits {
  /** Share of time the event loop ran callbacks in a sample, percent; 0 disables. */
  loopBusyPct: number;
  /** Mean event-loop timer delay in a sample, ms; 0 disables. */
  lagMs: number;
  /** Fill of a SIP UDP socket's receive queue, percent of its buffer; 0 disables. */
  udpQueuePct: number;
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
  /** undefined where the queues cannot be read (not Linux, no UDP socket). */
  udpQueuePct: number | undefined;
}

/** Signals counted exactly, re-read per new request. */
export interface CountedSignals {
  callsSetup: number;
  serverTransactions: number;
}

export type SampledCause = "loopBusy" | "lag" | "udpQueue";
export type CountedCause = "callsSetup" | "serverTransactions";
export type OverloadCause = SampledCause | CountedCause;

/** A count latched at its limit is released below this percentage of it (see the header). */
export const COUNT_CLEAR_PCT = 95;

/** Share of new requests refused on sampled signals: the step down per calm sample, the least step up, the most. */
export const SHED_STEP_DOWN = 0.05;
export const SHED_STEP_UP = 0.1;
export const SHED_STEP_UP_MAX = 0.5;

/** Whether limits are usable; a live change to nonsense is ignored by the mechanism (never sheds everything). */
export function validLimits(l: OverloadLimits): boolean {
  const nonNeg = (n: number): boolean => Number.isFinite(n) && n >= 0;
  return (
    nonNeg(l.loopBusyPct) && nonNeg(l.lagMs) && nonNeg(l.maxCallsSetup) && nonNeg(l.maxServerTransactions) && nonNeg(l.udpQueuePct) &&
    Number.isFinite(l.clearPct) && l.clearPct >= 1 && l.clearPct <= 100 && Number.isFinite(l.retryAfterS) && l.retryAfterS >= 1
  );
}

const SAMPLED: ReadonlyArray<{ cause: SampledCause; limit: "loopBusyPct" | "lagMs" | "udpQueuePct"; value: (s: SampledSignals) => number | undefined }> = [
  { cause: "udpQueue", limit: "udpQueuePct", value: (s) => s.udpQueuePct },
  { cause: "loopBusy", limit: "loopBusyPct", value: (s) => s.loopBusyPct },
  { cause: "lag", limit: "lagMs", value: (s) => s.lagMs },
];

/**
 * The share of new requests to refuse after one sample (pure, in [0, 1]). A signal at or over
 * its limit raises it by SHED_STEP_UP plus how far over the worst one is (v/limit − 1), at most
 * SHED_STEP_UP_MAX; all of them below clearPct % of their limits lower it by SHED_STEP_DOWN;
 * otherwise it stays. The loop's busy share counts only where the UDP queue is not read.
 * cause: the worst signal at or over its limit, null when none is.
 */
export function nextShedFraction(prev: number, s: SampledSignals, l: OverloadLimits): { fraction: number; cause: SampledCause | null } {
  const p = Number.isFinite(prev) ? Math.min(Math.max(prev, 0), 1) : 0;
  let worst = 0;
  let cause: SampledCause | null = null;
  let aboveClear = false;
  const queueKnown = s.udpQueuePct !== undefined && l.udpQueuePct > 0;
  for (const sig of SAMPLED) {
    const limit = l[sig.limit];
    const v = sig.cause === "loopBusy" && queueKnown ? undefined : sig.value(s);
    if (!(limit > 0) || v === undefined || !Number.isFinite(v)) continue;
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

// --- /proc/net/udp -------------------------------------------------------------------------------

/**
 * Receive-queue bytes of the sockets bound to the given local ports, from the text of
 * /proc/net/udp or /proc/net/udp6 (columns: sl local_address rem_address st tx_queue:rx_queue
 * ...; addresses and queues in hex). Lines that do not parse are skipped; the largest queue per
 * port is kept.
 */
export function parseUdpQueues(text: string, ports: ReadonlySet<number>): Map<number, number> {
  const out = new Map<number, number>();
  for (const line of text.split("\n")) {
    const cols = line.trim().split(/\s+/);
    if (cols.length < 5) continue;
    const local = cols[1] ?? "";
    const colon = local.lastIndexOf(":");
    if (colon < 0) continue;
    const port = Number.parseInt(local.slice(colon + 1), 16);
    if (!ports.has(port)) continue;
    const queues = (cols[4] ?? "").split(":");
    if (queues.length !== 2 || !/^[0-9A-Fa-f]+$/.test(queues[1] ?? "")) continue;
    const rx = Number.parseInt(queues[1]!, 16);
    if (Number.isFinite(rx)) out.set(port, Math.max(out.get(port) ?? 0, rx));
  }
  return out;
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
  /** Local UDP sockets to watch: port, family and receive-buffer size in bytes. */
  udpSockets?: () => ReadonlyArray<{ port: number; family: 4 | 6; bufferBytes: number }>;
  /** Sampling period of the loop and queue signals, ms (default 100). */
  sampleMs?: number;
  /** Entered (cause set) or left (cause null) overload: logs, bus. */
  onChange?: (active: boolean, cause: OverloadCause | null, signals: Readonly<SampledSignals & CountedSignals>) => void;
  now?: () => number;
  random?: () => number;
  /** Where the UDP tables are (tests point it elsewhere); default /proc/net. */
  procNetDir?: string;
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
  private readonly sig: SampledSignals & CountedSignals = { loopBusyPct: 0, lagMs: 0, udpQueuePct: undefined, callsSetup: 0, serverTransactions: 0 };
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
  private delay: IntervalHistogram | undefined;
  private elu: EventLoopUtilization | undefined;
  private reading = false;
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
    this.elu = performance.eventLoopUtilization();
    this.samples = 0;
    this.timer = setInterval(() => this.sample(), Math.max(10, this.o.sampleMs ?? 100));
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
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
      s.loopBusyPct = first ? 0 : smooth(s.loopBusyPct, busy);
      this.elu = now;
    }
    if (first || !validLimits(this.o.limits)) return;
    const was = this.active;
    const next = nextShedFraction(this.fraction, s, this.o.limits);
    this.fraction = next.fraction;
    this.noteChange(was, next.cause);
    this.judgeCounts();
    if (this.o.limits.udpQueuePct > 0) this.readUdpQueues();
  }

  /** Reads the UDP tables asynchronously (a few hundred bytes on an appliance); no-op where absent. */
  private readUdpQueues(): void {
    const socks = this.o.udpSockets?.() ?? [];
    if (socks.length === 0 || this.reading) return;
    this.reading = true;
    const dir = this.o.procNetDir ?? "/proc/net";
    const files = [...new Set(socks.map((x) => (x.family === 6 ? "udp6" : "udp")))];
    const ports = new Set(socks.map((x) => x.port));
    void Promise.all(files.map((f) => fs.promises.readFile(`${dir}/${f}`, "latin1").catch(() => "")))
      .then((texts) => {
        let pct: number | undefined;
        for (const text of texts) {
          for (const [port, rx] of parseUdpQueues(text, ports)) {
            const sock = socks.find((x) => x.port === port);
            if (sock === undefined || !(sock.bufferBytes > 0)) continue;
            pct = Math.max(pct ?? 0, (rx * 100) / sock.bufferBytes);
          }
        }
        this.sig.udpQueuePct = pct;
      })
      .finally(() => {
        this.reading = false;
      });
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
