// SIGHUP: which settings a running agent can take without dropping registrations or calls.
// Pure: the agent applies the live ones (agent.ts reload()) and reports the rest, which keep
// their old value until the next restart.
import { SETTING_NAMES, type SettingName, type Settings } from "../config.ts";

/** Read at the moment they are used, or pushed into a running feature by the agent. */
export const LIVE_SETTINGS: ReadonlySet<SettingName> = new Set<SettingName>([
  "logLevel",
  "keepaliveIntervalS",
  "keepaliveMisses",
  "guardSourceMaxFailures",
  "guardAccountMaxFailures",
  "guardWindowS",
  "guardBanS",
  "guardRequestRateMax",
  "guardRequestRateWindowS",
  "guardSourceRatePerS",
  "guardSourceBurst",
  "guardSourceMaxTransactions",
  "guardFloodBanS",
  "overloadLoopBusyPct",
  "overloadLagMs",
  "overloadQueueDelayMs",
  "overloadMaxCallsSetup",
  "overloadMaxServerTransactions",
  "overloadClearPct",
  "overloadRetryAfterS",
  "subscribeMaxPerDevice",
  "subscribeRateMax",
  "subscribeRateWindowS",
  "subscribeMinExpires",
  "subscribeMaxExpires",
  "voicemailCode",
  "siteFile",
  "drainTimeoutS",
  "drainRetryAfterS",
  "healthOverBudgetPct",
  "serialPassword",
  "serialLockoutFailures",
  "serialLockoutS",
  "serialIdleTimeoutS",
]);

export interface ReloadPlan {
  /** Changed and applied now. */
  live: SettingName[];
  /** Changed, but only a restart applies them (sockets, identities, stores). */
  restart: SettingName[];
}

function same(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

export function planReload(current: Readonly<Settings>, next: Readonly<Settings>): ReloadPlan {
  const plan: ReloadPlan = { live: [], restart: [] };
  for (const name of SETTING_NAMES) {
    if (same(current[name], next[name])) continue;
    (LIVE_SETTINGS.has(name) ? plan.live : plan.restart).push(name);
  }
  return plan;
}
