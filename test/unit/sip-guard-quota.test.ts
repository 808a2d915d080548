// Per-source quotas on every new request (AuthGuard.admitRequest): token bucket, in-flight cap,
// ban of a source that keeps flooding, allowlist, bounded memory, hostile settings.
import { test } from "node:test";
import assert from "node:assert/strict";
import { AuthGuard, type AuthGuardOptions, type SourceQuota } from "../../agent/sip/guard.ts";

function setup(quota: Partial<SourceQuota> = {}, over: Partial<AuthGuardOptions> = {}) {
  const clock = { t: 1_000_000 };
  const q: SourceQuota = { ratePerS: 10, burst: 20, maxInFlight: 50, banMs: 60_000, ...quota };
  const guard = new AuthGuard({
    perSource: { maxFailures: 5, windowMs: 60_000, banMs: 300_000 },
    perAccount: { maxFailures: 10, windowMs: 60_000, banMs: 600_000 },
    perSourceQuota: q,
    maxTracked: 1000,
    now: () => clock.t,
    ...over,
  });
  return { clock, guard, q };
}

test("a burst up to the bucket size passes, then the source is throttled, then refilled at the rate", () => {
  const { clock, guard } = setup();
  for (let i = 0; i < 20; i++) assert.equal(guard.admitRequest("10.0.0.9", 0), "ok", `request ${i}`);
  assert.equal(guard.admitRequest("10.0.0.9", 0), "throttle");
  assert.equal(guard.admitRequest("10.0.0.8", 0), "ok", "another source has its own bucket");
  clock.t += 100; // 10/s: one token per 100 ms
  assert.equal(guard.admitRequest("10.0.0.9", 0), "ok");
  assert.equal(guard.admitRequest("10.0.0.9", 0), "throttle");
  assert.equal(guard.isBanned("10.0.0.9"), false, "throttled, not banned");
});

test("a steady sender at the sustained rate is never throttled", () => {
  const { clock, guard } = setup();
  for (let i = 0; i < 1000; i++) {
    assert.equal(guard.admitRequest("10.0.0.9", 0), "ok", `request ${i}`);
    clock.t += 100;
  }
});

test("a source that keeps sending while throttled is banned for banMs, then starts afresh", () => {
  const { clock, guard } = setup();
  const bans: Array<[string, number, string]> = [];
  guard.onBan = (s, until, reason) => bans.push([s, until, reason]);
  let results: string[] = [];
  for (let i = 0; i < 60; i++) results.push(guard.admitRequest("10.0.0.66", 0));
  assert.equal(results.filter((r) => r === "ok").length, 20);
  // 20 refused requests (the burst) ban it: the 40th request
  assert.equal(results.indexOf("ban"), 39);
  assert.ok(results.slice(40).every((r) => r === "ban"));
  assert.deepEqual(bans, [["10.0.0.66", clock.t + 60_000, "rate"]]);
  assert.equal(guard.isBanned("10.0.0.66"), true);
  assert.equal(guard.admitRequest("10.0.0.1", 0), "ok", "other sources unaffected");
  clock.t += 60_000;
  assert.equal(guard.isBanned("10.0.0.66"), false);
  results = [];
  for (let i = 0; i < 20; i++) results.push(guard.admitRequest("10.0.0.66", 0));
  assert.ok(results.every((r) => r === "ok"), "a full bucket after the ban");
});

test("refused requests decay at the rate: occasional excess never bans", () => {
  const { clock, guard } = setup();
  for (let i = 0; i < 20; i++) guard.admitRequest("10.0.0.9", 0);
  // 2 requests every 100 ms: one passes, one is refused, and the refused count decays as fast
  for (let i = 0; i < 500; i++) {
    clock.t += 100;
    guard.admitRequest("10.0.0.9", 0);
    assert.notEqual(guard.admitRequest("10.0.0.9", 0), "ban", `round ${i}`);
  }
  assert.equal(guard.isBanned("10.0.0.9"), false);
});

test("banMs 0 only throttles", () => {
  const { guard } = setup({ banMs: 0 });
  for (let i = 0; i < 1000; i++) assert.notEqual(guard.admitRequest("10.0.0.9", 0), "ban");
  assert.equal(guard.isBanned("10.0.0.9"), false);
});

test("a source at its in-flight cap is throttled though it has tokens", () => {
  const { guard } = setup();
  assert.equal(guard.admitRequest("10.0.0.9", 49), "ok");
  assert.equal(guard.admitRequest("10.0.0.9", 50), "throttle");
  assert.equal(guard.admitRequest("10.0.0.9", 49), "ok", "room again once one transaction ended");
});

test("allowlisted sources are never throttled or banned", () => {
  const { guard } = setup({}, { allowlist: ["192.0.2.10"] });
  for (let i = 0; i < 1000; i++) assert.equal(guard.admitRequest("192.0.2.10", 10_000), "ok");
  assert.equal(guard.isBanned("192.0.2.10"), false);
});

test("a source banned for authentication failures is refused by admitRequest", () => {
  const { guard } = setup();
  for (let i = 0; i < 5; i++) guard.noteFailure("10.0.0.7", `u${i}`);
  assert.equal(guard.admitRequest("10.0.0.7", 0), "ban");
});

test("without a quota every request is admitted", () => {
  const guard = new AuthGuard({
    perSource: { maxFailures: 5, windowMs: 60_000, banMs: 300_000 },
    perAccount: { maxFailures: 10, windowMs: 60_000, banMs: 600_000 },
    maxTracked: 10,
  });
  for (let i = 0; i < 1000; i++) assert.equal(guard.admitRequest("10.0.0.9", 1_000_000), "ok");
});

test("the quota changes live (by reference) and a quota changed to nonsense admits rather than blocks", () => {
  const { guard, q } = setup();
  q.burst = 2;
  q.ratePerS = 1;
  assert.equal(guard.admitRequest("10.0.0.5", 0), "ok");
  assert.equal(guard.admitRequest("10.0.0.5", 0), "ok");
  assert.equal(guard.admitRequest("10.0.0.5", 0), "throttle");
  q.ratePerS = Number.NaN;
  assert.equal(guard.admitRequest("10.0.0.5", 0), "ok");
});

test("bad quotas are refused at construction", () => {
  const bad: Array<Partial<SourceQuota>> = [{ ratePerS: 0 }, { ratePerS: -1 }, { burst: 0 }, { maxInFlight: 0 }, { banMs: -1 }, { ratePerS: Number.NaN }];
  for (const b of bad) assert.throws(() => setup(b), /bad perSourceQuota/, JSON.stringify(b));
});

test("memory stays bounded under a flood of spoofed sources", () => {
  const { guard } = setup({}, { maxTracked: 500 });
  for (let i = 0; i < 20_000; i++) guard.admitRequest(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, 0);
  // the most recent source still has its bucket; the table never exceeds maxTracked
  const last = "10.0.78.31";
  for (let i = 0; i < 19; i++) assert.equal(guard.admitRequest(last, 0), "ok");
  assert.equal(guard.admitRequest(last, 0), "throttle");
  const internal = (guard as unknown as { buckets: { size: number } }).buckets;
  assert.ok(internal.size <= 500, `buckets ${internal.size}`);
});

test("a live registered flow is held to the rate but never to a ban of its address, nor banned for its rate", () => {
  const { clock, guard } = setup();
  // Someone else floods from the phone's address (another port, or forged): the address is banned.
  for (let i = 0; i < 60; i++) guard.admitRequest("10.0.0.7", 0);
  assert.equal(guard.isBanned("10.0.0.7"), true);
  assert.equal(guard.admitRequest("10.0.0.7", 0), "ban", "the address, for anyone else");
  clock.t += 2_000; // the bucket refills (10/s)
  assert.equal(guard.admitRequest("10.0.0.7", 0, true), "ok", "the phone's own registered flow still gets through");
  // The registered flow flooding itself is throttled, never banned.
  const results: string[] = [];
  for (let i = 0; i < 200; i++) results.push(guard.admitRequest("10.0.0.5", 0, true));
  assert.equal(results.filter((r) => r === "ok").length, 20, "held to the burst and rate");
  assert.ok(results.every((r) => r !== "ban"), "throttled, not banned");
  assert.equal(guard.isBanned("10.0.0.5"), false);
});
