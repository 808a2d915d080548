// The watchdog's judge: only what a restart cures fails (SIP sockets gone, store not writable);
// slow calls and a drain left on past its timeout are warnings. The latency windows, their bus
// event, and the drain's overdue state.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { EventBus, type AgentEvents } from "../../agent/bus.ts";
import { DrainController } from "../../agent/appliance/drain.ts";
import { LatencyWatch, judgeHealth, judgeLatencyWindow, type HealthInput, type LatencyVerdict } from "../../agent/appliance/health.ts";
import { createLogger } from "../../agent/log.ts";

const base: HealthInput = {
  sip: { listening: 2, expected: 2, addresses: ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"] },
  store: { writable: true },
  drain: { draining: false },
};
const slow: LatencyVerdict = { calls: 100, overBudget: 60, pct: 60, budgetMs: 2, maxOverBudgetPct: 5, over: true, at: Date.UTC(2026, 0, 1) };

describe("judgeHealth", () => {
  test("healthy: OK, no warnings; the hot path not judged yet is said so", () => {
    const r = judgeHealth(base);
    assert.equal(r.ok, true);
    assert.deepEqual(r.warnings, []);
    assert.match(r.reason, /^OK: sip listening udp:127\.0\.0\.1:5060 tcp:127\.0\.0\.1:5060; store writable; hot path not judged yet/);
    const open = judgeHealth({ ...base, latencyOpen: { calls: 7, overBudget: 7, budgetMs: 2 } });
    assert.equal(open.ok, true);
    assert.match(open.reason, /; hot path 7\/7 recent calls over 2ms \(too few to judge\)$/);
  });

  test("slow calls never fail health: a warning, named before the healthy checks", () => {
    const r = judgeHealth({ ...base, latency: slow });
    assert.equal(r.ok, true, "a restart cures no slowness");
    assert.equal(r.warnings.length, 1);
    assert.match(r.reason, /^OK: warning: hot path 60\/100 calls over 2ms \(60\.0% > 5%\)/);
    const fine = judgeHealth({ ...base, latency: { ...slow, overBudget: 1, pct: 1, over: false } });
    assert.equal(fine.ok, true);
    assert.deepEqual(fine.warnings, []);
    assert.match(fine.reason, /hot path 1\/100 calls over 2ms \(1\.0%\)/);
  });

  test("SIP sockets gone or no SIP configured fail; a store that cannot be written fails; failures come first", () => {
    const sipGone = judgeHealth({ ...base, sip: { listening: 1, expected: 2, addresses: ["udp:127.0.0.1:5060"] }, latency: slow });
    assert.equal(sipGone.ok, false);
    assert.match(sipGone.reason, /^FAIL: sip listening on 1 of 2 sockets; warning: hot path/);
    assert.equal(judgeHealth({ ...base, sip: { listening: 0, expected: 0, addresses: [] } }).ok, false);
    const store = judgeHealth({ ...base, store: { writable: false, error: "EROFS" } });
    assert.equal(store.ok, false);
    assert.match(store.reason, /^FAIL: store not writable \(EROFS\); sip listening/);
    assert.match(judgeHealth({ ...base, store: { writable: false } }).reason, /^FAIL: store not writable; /);
  });

  test("broker down: reported, never failing", () => {
    const r = judgeHealth({ ...base, broker: { connected: false, outboxPending: 3 } });
    assert.equal(r.ok, true);
    assert.match(r.reason, /broker disconnected \(3 events queued\)/);
    assert.match(judgeHealth({ ...base, broker: { connected: true, outboxPending: 0 } }).reason, /broker connected$/);
  });

  test("draining: reported; past its timeout a warning that says how to take calls again, still not failing", () => {
    const on = judgeHealth({ ...base, drain: { draining: true, since: "2026-01-01T00:00:00.000Z", forS: 10, timeoutS: 30, overdue: false } });
    assert.equal(on.ok, true);
    assert.deepEqual(on.warnings, []);
    assert.match(on.reason, /draining for 10 s \(new calls refused\)$/);
    const left = judgeHealth({ ...base, drain: { draining: true, since: "2026-01-01T00:00:00.000Z", forS: 400, timeoutS: 30, overdue: true } });
    assert.equal(left.ok, true);
    assert.match(left.reason, /^OK: warning: draining for 400 s, past its 30 s timeout: every new call is refused \('ringedge resume' takes calls again\)/);
  });
});

describe("latency windows", () => {
  const policy = { maxOverBudgetPct: 5, minCalls: 20 };
  test("a window is judged only with enough calls, over the calls since its start", () => {
    assert.equal(judgeLatencyWindow({ count: 19, overBudget: 19 }, { count: 0, overBudget: 0 }, 2000, policy, 0), null, "too few calls");
    assert.equal(judgeLatencyWindow({ count: 0, overBudget: 0 }, { count: 0, overBudget: 0 }, 2000, { ...policy, minCalls: 0 }, 0), null, "no calls at all");
    const v = judgeLatencyWindow({ count: 150, overBudget: 16 }, { count: 50, overBudget: 10 }, 2000, policy, 5);
    assert.deepEqual(v, { calls: 100, overBudget: 6, pct: 6, budgetMs: 2, maxOverBudgetPct: 5, over: true, at: 5 });
    assert.equal(judgeLatencyWindow({ count: 150, overBudget: 15 }, { count: 50, overBudget: 10 }, 2000, policy, 5)?.over, false, "exactly at the share is within it");
    // Counters that went backwards (a restarted engine) never give a negative window.
    assert.equal(judgeLatencyWindow({ count: 10, overBudget: 0 }, { count: 50, overBudget: 10 }, 2000, policy, 5), null);
  });

  test("LatencyWatch: an over-budget window is a bus event and a warning; the next window starts fresh", () => {
    const bus = new EventBus();
    const events: Array<AgentEvents["latency.over-budget"]> = [];
    bus.on("latency.over-budget", (e) => events.push(e));
    let counters = { count: 0, overBudget: 0, budgetUs: 2000 };
    const w = new LatencyWatch({ bus, counters: () => counters, policy: () => policy, log: createLogger("silent"), intervalMs: 3_600_000, now: () => 42 });
    w.start();
    try {
      counters = { count: 10, overBudget: 10, budgetUs: 2000 };
      assert.equal(w.check(), null, "too few calls: the window stays open");
      assert.deepEqual(w.open(), { calls: 10, overBudget: 10, budgetMs: 2 });
      assert.equal(w.warning(), null);
      counters = { count: 40, overBudget: 12, budgetUs: 2000 };
      assert.equal(w.check()?.over, true);
      assert.deepEqual(w.open(), { calls: 0, overBudget: 0, budgetMs: 2 }, "a new window opens");
      assert.deepEqual(events, [{ calls: 40, overBudget: 12, pct: 30, budgetMs: 2, at: 42 }]);
      assert.match(w.warning() ?? "", /^hot path 12\/40 calls over 2ms \(30\.0% > 5%\)/);
      counters = { count: 140, overBudget: 13, budgetUs: 2000 };
      assert.equal(w.check()?.over, false, "the old burst is not judged again");
      assert.equal(w.warning(), null);
      assert.equal(events.length, 1);
    } finally {
      w.stop();
    }
  });
});

describe("drain state", () => {
  test("draining since when, and overdue past the drain's timeout; resume clears it", async () => {
    let now = 1_000_000;
    const d = new DrainController({ activity: () => ({ ringing: 1, connected: 0, queued: 0 }), flushStore: async () => undefined, log: createLogger("silent"), pollMs: 1, now: () => now, defaultTimeoutMs: () => 30_000 });
    assert.deepEqual(d.state(), { draining: false });
    d.begin();
    now += 10_000;
    assert.deepEqual(d.state(), { draining: true, since: new Date(1_000_000).toISOString(), forS: 10, timeoutS: 30, overdue: false });
    now += 25_000;
    assert.equal((d.state() as { overdue: boolean }).overdue, true, "begun without a timeout: the default one");
    d.resume();
    assert.deepEqual(d.state(), { draining: false });
  });

  test("a drain with its own timeout is overdue past that one; asked again, the deadline moves", async () => {
    let now = 0;
    let calls = { ringing: 1, connected: 0, queued: 0 };
    const d = new DrainController({ activity: () => calls, flushStore: async () => undefined, log: createLogger("silent"), pollMs: 1, now: () => now, defaultTimeoutMs: () => 30_000 });
    // The clock is frozen inside drain(): a zero timeout returns at once with the call still up.
    const r = await d.drain(0);
    assert.equal(r.drained, false);
    now = 1;
    assert.equal((d.state() as { overdue: boolean }).overdue, true);
    // pre-upgrade run again at t=5 s with 10 s: the calls are gone, the agent stays drained until t=15 s.
    now = 5000;
    calls = { ringing: 0, connected: 0, queued: 0 };
    assert.equal((await d.drain(10_000)).drained, true);
    now = 15_000;
    assert.deepEqual(d.state(), { draining: true, since: new Date(0).toISOString(), forS: 15, timeoutS: 15, overdue: false });
    now = 15_001;
    assert.equal((d.state() as { overdue: boolean }).overdue, true);
  });
});
