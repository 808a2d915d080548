// Watchdog health: a pure judgement over what the agent measured, giving ok/fail and one line
// a person (or a syslog reader) can act on. The agent gathers the inputs (agent.ts health()),
// `ringedge health` adds its own SIP probe from outside and prints the line; the firmware's
// watchdog only looks at the exit code, and a failure makes it restart the agent.
//
// So only what a restart cures fails: a hung or dead agent (the control socket or the SIP probe
// not answering in time: `ringedge health`), SIP sockets gone, the store not writable. Slow
// calls are a warning (a restart means tens of seconds of 503s and cures nothing): LatencyWatch
// judges the first-fork latency over windows of calls and reports it in `status` and `health`,
// as a bus event and in the logs. A drain left on past its timeout is a warning too: the agent
// refuses every call then, but killing it in the middle of an upgrade is not the cure either.
import type { EventBus } from "../bus.ts";
import type { Logger } from "../log.ts";
import type { DrainState } from "./drain.ts";

export interface LatencyCounts {
  /** Calls measured (INVITE received → first fork). */
  count: number;
  /** Of those, over the budget. */
  overBudget: number;
}

export interface LatencyPolicy {
  /** Warn above this share of over-budget calls in a window, percent. */
  maxOverBudgetPct: number;
  /** Judge a window only once it holds at least this many calls (fewer say nothing either way). */
  minCalls: number;
}

/** One judged window of calls. */
export interface LatencyVerdict {
  calls: number;
  overBudget: number;
  pct: number;
  budgetMs: number;
  maxOverBudgetPct: number;
  /** More than maxOverBudgetPct of the window's calls were over the budget. */
  over: boolean;
  /** Epoch ms the window closed. */
  at: number;
}

export const DEFAULT_LATENCY_POLICY: LatencyPolicy = { maxOverBudgetPct: 5, minCalls: 20 };

/** The window from `start` to `now`, or null while it holds too few calls to judge. */
export function judgeLatencyWindow(now: LatencyCounts, start: LatencyCounts, budgetUs: number, policy: LatencyPolicy, at: number): LatencyVerdict | null {
  const calls = Math.max(0, now.count - start.count);
  const overBudget = Math.max(0, now.overBudget - start.overBudget);
  if (calls < policy.minCalls || calls === 0) return null;
  const pct = (overBudget * 100) / calls;
  return { calls, overBudget, pct, budgetMs: budgetUs / 1000, maxOverBudgetPct: policy.maxOverBudgetPct, over: pct > policy.maxOverBudgetPct, at };
}

export function describeLatency(v: LatencyVerdict): string {
  return `hot path ${v.overBudget}/${v.calls} calls over ${v.budgetMs}ms (${v.pct.toFixed(1)}%${v.over ? ` > ${v.maxOverBudgetPct}%` : ""}) in the window to ${new Date(v.at).toISOString()}`;
}

export interface LatencyWatchDeps {
  bus: EventBus;
  /** Cumulative counters and the budget (the routing engine's histogram). */
  counters: () => LatencyCounts & { budgetUs: number };
  /** Read at each check, so a SIGHUP applies at the next one. */
  policy: () => LatencyPolicy;
  log: Logger;
  /** How often a window is closed and judged; default 30 s. */
  intervalMs?: number;
  now?: () => number;
}

/** Judges the hot path's latency over windows of calls; a window over budget is a warning. */
export class LatencyWatch {
  private windowStart: LatencyCounts = { count: 0, overBudget: 0 };
  private last: LatencyVerdict | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly deps: LatencyWatchDeps) {}

  start(): void {
    const c = this.deps.counters();
    this.windowStart = { count: c.count, overBudget: c.overBudget };
    this.timer = setInterval(() => this.check(), this.deps.intervalMs ?? 30_000);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** The last judged window; undefined before the first. */
  latest(): LatencyVerdict | undefined {
    return this.last;
  }

  /** The window still open: calls since the last judged one (too few to judge so far, or not yet checked). */
  open(): { calls: number; overBudget: number; budgetMs: number } {
    const c = this.deps.counters();
    return { calls: Math.max(0, c.count - this.windowStart.count), overBudget: Math.max(0, c.overBudget - this.windowStart.overBudget), budgetMs: c.budgetUs / 1000 };
  }

  /** The last window as a warning, or null when it was within budget (or none was judged). */
  warning(): string | null {
    return this.last?.over ? describeLatency(this.last) : null;
  }

  /** Closes the window if it holds enough calls and judges it (the timer calls this). */
  check(): LatencyVerdict | null {
    const c = this.deps.counters();
    const v = judgeLatencyWindow(c, this.windowStart, c.budgetUs, this.deps.policy(), (this.deps.now ?? Date.now)());
    if (v === null) return null;
    this.windowStart = { count: c.count, overBudget: c.overBudget };
    this.last = v;
    if (v.over) {
      this.deps.log.warn("first-fork latency over budget", { calls: v.calls, overBudget: v.overBudget, pct: Number(v.pct.toFixed(1)), budgetMs: v.budgetMs });
      this.deps.bus.emit("latency.over-budget", { calls: v.calls, overBudget: v.overBudget, pct: v.pct, budgetMs: v.budgetMs, at: v.at });
    }
    return v;
  }
}

export interface HealthInput {
  /** SIP sockets listening now, and how many the settings ask for. */
  sip: { listening: number; expected: number; addresses: string[] };
  /** A probe write in the data directory and a store flush both succeeded in time. */
  store: { writable: boolean; error?: string };
  /** The last judged latency window (LatencyWatch); undefined before the first. */
  latency?: LatencyVerdict;
  /** The calls of the window still open (LatencyWatch.open()), said when none was judged yet. */
  latencyOpen?: { calls: number; overBudget: number; budgetMs: number };
  /** Console link; undefined when no broker is configured. */
  broker?: { connected: boolean; outboxPending: number };
  drain: DrainState;
}

export interface HealthCheck {
  name: "sip" | "store" | "hot-path" | "broker" | "drain";
  ok: boolean;
  /** Healthy, but someone should look (reported, never failing). */
  warn?: boolean;
  detail: string;
}

export interface HealthReport {
  ok: boolean;
  /** One line: the failing checks first, then the warnings, then the rest. */
  reason: string;
  checks: HealthCheck[];
  /** The warnings' details (also in reason). */
  warnings: string[];
}

export function judgeHealth(input: HealthInput): HealthReport {
  const checks: HealthCheck[] = [];
  const sipOk = input.sip.listening >= input.sip.expected && input.sip.expected > 0;
  checks.push({ name: "sip", ok: sipOk, detail: sipOk ? `sip listening ${input.sip.addresses.join(" ")}` : `sip listening on ${input.sip.listening} of ${input.sip.expected} sockets` });
  checks.push({ name: "store", ok: input.store.writable, detail: input.store.writable ? "store writable" : `store not writable${input.store.error ? ` (${input.store.error})` : ""}` });
  const l = input.latency;
  const o = input.latencyOpen;
  const notYet = o ? `hot path ${o.overBudget}/${o.calls} recent calls over ${o.budgetMs}ms (too few to judge)` : "hot path not judged yet (too few calls)";
  checks.push(l === undefined ? { name: "hot-path", ok: true, detail: notYet } : { name: "hot-path", ok: true, warn: l.over, detail: describeLatency(l) });
  if (input.broker) {
    // Reported, never failing: the site works without its console, and restarting the agent
    // does not bring a broker back (the MQTT client reconnects by itself).
    const b = input.broker;
    checks.push({ name: "broker", ok: true, detail: `broker ${b.connected ? "connected" : "disconnected"}${b.outboxPending > 0 ? ` (${b.outboxPending} events queued)` : ""}` });
  }
  const d = input.drain;
  if (d.draining) {
    checks.push(
      d.overdue
        ? { name: "drain", ok: true, warn: true, detail: `draining for ${d.forS} s, past its ${d.timeoutS} s timeout: every new call is refused ('ringedge resume' takes calls again)` }
        : { name: "drain", ok: true, detail: `draining for ${d.forS} s (new calls refused)` },
    );
  }
  const ok = checks.every((c) => c.ok);
  const failing = checks.filter((c) => !c.ok);
  const warnings = checks.filter((c) => c.ok && c.warn);
  const rest = checks.filter((c) => c.ok && !c.warn);
  const line = [...failing.map((c) => c.detail), ...warnings.map((c) => `warning: ${c.detail}`), ...rest.map((c) => c.detail)].join("; ");
  return { ok, reason: `${ok ? "OK" : "FAIL"}: ${line}`, checks, warnings: warnings.map((c) => c.detail) };
}
