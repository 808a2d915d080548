import { test } from "node:test";
import assert from "node:assert/strict";
import { LatencyBuckets, LoginGuard, buildSnapshot, memberState, ringingNow, type StatusSource } from "../../agent/observe/status-page.ts";
import { AgentMetrics } from "../../agent/observe/metrics.ts";
import { EventBus } from "../../agent/bus.ts";

test("member state: ringing > talking > away > logged out > available", () => {
  const base = { ringing: false, activeCalls: 0, availability: "available", devicesOnline: 1 };
  assert.equal(memberState(base), "available");
  assert.equal(memberState({ ...base, devicesOnline: 0 }), "logged out");
  assert.equal(memberState({ ...base, availability: "dnd", devicesOnline: 0 }), "away");
  assert.equal(memberState({ ...base, availability: "away", activeCalls: 1 }), "talking");
  assert.equal(memberState({ ...base, availability: "away", activeCalls: 1, ringing: true }), "ringing");
});

test("who rings now: the last member offered for one-at-a-time strategies, all offered otherwise", () => {
  const call = { callId: "c", caller: "x", groupId: "g", offered: ["a", "b"], since: 0 };
  assert.deepEqual(ringingNow(call, "sequential"), ["b"]);
  assert.deepEqual(ringingNow(call, "evenly"), ["b"]);
  assert.deepEqual(ringingNow(call, "simultaneous"), ["a", "b"]);
  assert.deepEqual(ringingNow(call, "cumulative"), ["a", "b"]);
  assert.deepEqual(ringingNow(call, undefined), ["a", "b"]);
});

test("login guard: 5 wrong passwords lock a source, doubling; success clears; other sources unaffected", () => {
  let now = 0;
  const g = new LoginGuard(5, 60_000, () => now);
  for (let i = 0; i < 4; i++) g.failed("a");
  assert.equal(g.lockedForMs("a"), 0);
  g.failed("a");
  assert.equal(g.lockedForMs("a"), 60_000);
  assert.equal(g.lockedForMs("b"), 0);
  now = 60_000;
  assert.equal(g.lockedForMs("a"), 0);
  for (let i = 0; i < 5; i++) g.failed("a");
  assert.equal(g.lockedForMs("a"), 120_000);
  g.succeeded("a");
  assert.equal(g.lockedForMs("a"), 0);
});

test("latency buckets: each sample in the first bucket at or above it, the rest in 'more'", () => {
  const b = new LatencyBuckets();
  b.record(50); // 50 µs
  b.record(1500); // 1.5 ms
  b.record(5_000_000); // 5 s
  const list = b.list();
  assert.deepEqual(list.filter((x) => x.count > 0).map((x) => x.le), ["100 µs", "2 ms", "more"]);
});

test("snapshot: phones with their fetch and address, members' states, missed calls only", () => {
  const src: StatusSource = {
    siteId: "s",
    startedAt: 0,
    devices: () => [
      { id: "d1", username: "101", password: "never-shown", kind: "physical", owner: "u1", mac: "001565aabb01", model: "T46U", createdAt: "" },
      { id: "d2", username: "102", password: "never-shown", kind: "soft", owner: "u2", createdAt: "" },
    ],
    presence: () => [{ deviceId: "d1", online: true, registered: true, misses: 0, lastSeen: 1, since: 1, reason: "registered" }],
    bindings: () => [{ deviceId: "d1", remoteAddress: "192.0.2.7", remotePort: 5062, transport: "udp" }],
    seenPhones: () => [{ mac: "001565aabb01", ip: "192.0.2.7", firmware: "108.86.0.75", firstSeen: "2026-01-01T00:00:00Z", lastSeen: "2026-01-02T00:00:00Z", requests: 3 }],
    site: () => ({
      users: [
        { id: "u1", extension: "101", name: "Ann", availability: "available", callLimit: 0 },
        { id: "u2", extension: "102", name: "Bob", availability: "available", callLimit: 0 },
      ],
      groups: [{ id: "g", number: "700", name: "Sales", strategy: "sequential", members: ["u1", "u2"], ringCount: 1, checkAvailability: false, noAnswer: { kind: "hangup" } }],
    }),
    activeCallsOf: () => 0,
    ringing: () => [{ callId: "c1", caller: "+49", groupId: "g", offered: ["u2", "u1"], since: 1000 }],
    activeCalls: () => 1,
    recentCalls: () => [
      { id: "a", at: 1, caller: "x", target: "700", outcome: "answered", offered: ["u1"] },
      { id: "b", at: 2, caller: "y", target: "700", outcome: "missed", offered: ["u1", "u2"], groupId: "g" },
    ],
    latency: () => ({ p50Us: 1, p99Us: 2, count: 1, overBudget: 0, budgetUs: 2000 }),
    link: () => "off",
  };
  const s = buildSnapshot(src, new LatencyBuckets(), 11_000);
  assert.equal(JSON.stringify(s).includes("never-shown"), false, "no SIP password in the snapshot");
  assert.deepEqual(s.phones[0], { id: "d1", username: "101", name: undefined, kind: "physical", online: true, mac: "001565aabb01", model: "T46U", firmware: "108.86.0.75", lastConfigFetch: "2026-01-02T00:00:00Z", address: "udp 192.0.2.7:5062" });
  assert.equal(s.phones[1]!.online, false);
  assert.deepEqual(s.groups[0]!.members.map((m) => m.state), ["ringing", "logged out"]);
  assert.deepEqual(s.calls.ringing, [{ callId: "c1", caller: "+49", group: "g", ringingNow: ["u1"], sinceS: 10 }]);
  assert.deepEqual(s.missed.map((m) => m.caller), ["y"]);
  assert.equal(s.uptimeS, 11);
});

test("metrics from bus events: a call offered to several members counts once; label values bounded", async () => {
  const bus = new EventBus();
  const m = new AgentMetrics(bus, { calls: () => ({ active: 0, queued: 0 }), registrations: () => 0, devices: () => [] });
  m.start();
  bus.emit("call.offered", { callId: "c", groupId: "g", memberId: "a", deviceIds: [], caller: "x", at: 0 });
  bus.emit("call.offered", { callId: "c", groupId: "g", memberId: "b", deviceIds: [], caller: "x", at: 0 });
  bus.emit("auth.failure", { source: "x", username: undefined, reason: "r\n".repeat(100), at: 0 });
  const text = await m.text();
  m.stop();
  assert.match(text, /^ringedge_calls_offered_total\{group="g"\} 1$/m);
  const reason = /ringedge_auth_refusals_total\{reason="([^"]*)"\}/.exec(text)![1]!;
  assert.equal(reason.length, 64);
  assert.ok(!reason.includes("\n"));
});
