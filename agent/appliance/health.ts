// Watchdog health: a pure judgement over what the agent measured, giving ok/fail and one line
// a person (or a syslog reader) can act on. The agent gathers the inputs (agent.ts health()),
// `ringedge health` adds its own SIP probe from outside and prints the line; the firmware's
// watchdog only looks at the exit code.

export interface LatencyCounts {
  /** Calls measured (INVITE received → first fork). */
  count: number;
  /** Of those, over the budget. */
  overBudget: number;
}

export interface HealthInput {
  /** SIP sockets listening now, and how many the settings ask for. */
  sip: { listening: number; expected: number; addresses: string[] };
  /** A probe write in the data directory and a store flush both succeeded in time. */
  store: { writable: boolean; error?: string };
  /** Cumulative first-fork latency counters, and the budget in µs. */
  latency: LatencyCounts & { budgetUs: number };
  /** Counters at the start of the window being judged (see HealthWindow). */
  windowStart: LatencyCounts;
  /** Console link; undefined when no broker is configured. */
  broker?: { connected: boolean; outboxPending: number };
  draining: boolean;
}

export interface HealthPolicy {
  /** Fail above this share of over-budget calls in the window, percent. */
  maxOverBudgetPct: number;
  /** Judge the hot path only over at least this many calls (fewer say nothing either way). */
  minCalls: number;
}

export interface HealthCheck {
  name: "sip" | "store" | "hot-path" | "broker" | "drain";
  ok: boolean;
  detail: string;
}

export interface HealthReport {
  ok: boolean;
  /** One line: the failing checks first, then the rest. */
  reason: string;
  checks: HealthCheck[];
  /** Whether the latency window was judged (the caller then starts a new window). */
  windowJudged: boolean;
}

export const DEFAULT_HEALTH_POLICY: HealthPolicy = { maxOverBudgetPct: 5, minCalls: 20 };

export function judgeHealth(input: HealthInput, policy: HealthPolicy = DEFAULT_HEALTH_POLICY): HealthReport {
  const checks: HealthCheck[] = [];
  const sipOk = input.sip.listening >= input.sip.expected && input.sip.expected > 0;
  checks.push({ name: "sip", ok: sipOk, detail: sipOk ? `sip listening ${input.sip.addresses.join(" ")}` : `sip listening on ${input.sip.listening} of ${input.sip.expected} sockets` });
  checks.push({ name: "store", ok: input.store.writable, detail: input.store.writable ? "store writable" : `store not writable${input.store.error ? ` (${input.store.error})` : ""}` });

  const calls = Math.max(0, input.latency.count - input.windowStart.count);
  const over = Math.max(0, input.latency.overBudget - input.windowStart.overBudget);
  const budgetMs = input.latency.budgetUs / 1000;
  const windowJudged = calls >= policy.minCalls;
  if (!windowJudged) {
    checks.push({ name: "hot-path", ok: true, detail: `hot path ${over}/${calls} recent calls over ${budgetMs}ms (too few to judge)` });
  } else {
    const pct = (over * 100) / calls;
    const ok = pct <= policy.maxOverBudgetPct;
    checks.push({ name: "hot-path", ok, detail: `hot path ${over}/${calls} recent calls over ${budgetMs}ms (${pct.toFixed(1)}%${ok ? "" : ` > ${policy.maxOverBudgetPct}%`})` });
  }
  if (input.broker) {
    // Reported, never failing: the site works without its console, and restarting the agent
    // does not bring a broker back (the MQTT client reconnects by itself).
    const b = input.broker;
    checks.push({ name: "broker", ok: true, detail: `broker ${b.connected ? "connected" : "disconnected"}${b.outboxPending > 0 ? ` (${b.outboxPending} events queued)` : ""}` });
  }
  if (input.draining) checks.push({ name: "drain", ok: true, detail: "draining (new calls refused)" });
  const ok = checks.every((c) => c.ok);
  const ordered = [...checks.filter((c) => !c.ok), ...checks.filter((c) => c.ok)];
  return { ok, reason: `${ok ? "OK" : "FAIL"}: ${ordered.map((c) => c.detail).join("; ")}`, checks, windowJudged };
}
