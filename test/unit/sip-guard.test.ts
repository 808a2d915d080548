import { test } from "node:test";
import assert from "node:assert/strict";
import { AuthGuard, LruMap, type AuthGuardOptions } from "../../agent/sip/guard.ts";

function setup(over: Partial<AuthGuardOptions> = {}) {
  const clock = { t: 1_000_000 };
  const guard = new AuthGuard({
    perSource: { maxFailures: 5, windowMs: 60_000, banMs: 300_000 },
    perAccount: { maxFailures: 10, windowMs: 60_000, banMs: 600_000 },
    perSourceRequestRate: { max: 16, windowMs: 2_000 },
    maxTracked: 1000,
    now: () => clock.t,
    ...over,
  });
  return { clock, guard };
}

test("source is banned at maxFailures within the window and the ban expires", () => {
  const { clock, guard } = setup();
  const bans: Array<[string, number, string]> = [];
  guard.onBan = (s, until, reason) => bans.push([s, until, reason]);
  for (let i = 0; i < 4; i++) {
    guard.noteFailure("10.0.0.9", `user${i}`);
    clock.t += 1000;
  }
  assert.equal(guard.isBanned("10.0.0.9"), false);
  guard.noteFailure("10.0.0.9", "user4");
  assert.equal(guard.isBanned("10.0.0.9"), true);
  assert.deepEqual(bans, [["10.0.0.9", clock.t + 300_000, "failures"]]);
  assert.equal(guard.isBanned("10.0.0.10"), false, "other sources unaffected");
  clock.t += 299_999;
  assert.equal(guard.isBanned("10.0.0.9"), true);
  clock.t += 1;
  assert.equal(guard.isBanned("10.0.0.9"), false);
  // after the ban the source starts afresh
  guard.noteFailure("10.0.0.9", "x");
  assert.equal(guard.isBanned("10.0.0.9"), false);
});

test("failure window slides: old failures stop counting", () => {
  const { clock, guard } = setup();
  // 4 failures at t0..t0+3s, then wait until the first has left the 60 s window
  for (let i = 0; i < 4; i++) {
    guard.noteFailure("src", "a");
    clock.t += 1000;
  }
  clock.t += 57_000; // now t0 + 61 s: the failure at t0 is 61 s old, the one at t0+1s is exactly 60 s old
  guard.noteFailure("src", "a");
  assert.equal(guard.isBanned("src"), false, "only 3 failures inside the window");
  guard.noteFailure("src", "a");
  assert.equal(guard.isBanned("src"), false, "4 inside the window");
  guard.noteFailure("src", "a");
  assert.equal(guard.isBanned("src"), true, "5 inside the window");
});

test("request rate: max per window allowed, one more bans; window slides", () => {
  const { clock, guard } = setup();
  for (let i = 0; i < 16; i++) {
    assert.equal(guard.noteRequest("1.2.3.4"), "ok", `request ${i}`);
    clock.t += 100; // 16 requests in 1.6 s
  }
  assert.equal(guard.noteRequest("1.2.3.4"), "ban");
  assert.equal(guard.isBanned("1.2.3.4"), true);
  assert.equal(guard.noteRequest("1.2.3.4"), "ban", "banned sources stay dropped");
  assert.equal(guard.stats().banned[0]?.reason, "rate");
  clock.t += 300_000;
  assert.equal(guard.isBanned("1.2.3.4"), false);

  // A phone that bursts a little but stays under 16 per 2 s forever is never banned.
  const { clock: c2, guard: g2 } = setup();
  for (let i = 0; i < 1000; i++) {
    assert.equal(g2.noteRequest("phone"), "ok");
    c2.t += 130; // ~15.4 per 2 s
  }
  // rate-limit ban length can differ from the failure ban
  const { clock: c3, guard: g3 } = setup({ perSourceRequestRate: { max: 2, windowMs: 1000, banMs: 5000 } });
  g3.noteRequest("s");
  g3.noteRequest("s");
  assert.equal(g3.noteRequest("s"), "ban");
  c3.t += 5000;
  assert.equal(g3.isBanned("s"), false);
  assert.equal(g3.noteRequest("s"), "ok");
});

test("without a rate limit noteRequest only reports bans", () => {
  const { guard } = setup({ perSourceRequestRate: undefined });
  for (let i = 0; i < 100; i++) assert.equal(guard.noteRequest("s"), "ok");
  for (let i = 0; i < 5; i++) guard.noteFailure("s", undefined);
  assert.equal(guard.noteRequest("s"), "ban");
});

test("allowlisted sources are never banned or rate limited, but still count against accounts", () => {
  const { guard } = setup({ allowlist: ["192.0.2.1"] });
  for (let i = 0; i < 100; i++) guard.noteRequest("192.0.2.1");
  for (let i = 0; i < 10; i++) guard.noteFailure("192.0.2.1", "200");
  assert.equal(guard.isBanned("192.0.2.1"), false);
  assert.equal(guard.noteRequest("192.0.2.1"), "ok");
  assert.equal(guard.isLockedOut("198.51.100.7", "200"), true);
});

test("account lock: failures from many sources lock the account for other sources", () => {
  const { clock, guard } = setup();
  const locks: Array<[string, number]> = [];
  guard.onLock = (a, until) => locks.push([a, until]);
  // distributed guessing: 10 sources, one failure each, so no source ban
  for (let i = 0; i < 10; i++) guard.noteFailure(`203.0.113.${i}`, "100");
  for (let i = 0; i < 10; i++) assert.equal(guard.isBanned(`203.0.113.${i}`), false);
  assert.deepEqual(locks, [["100", clock.t + 600_000]]);
  assert.equal(guard.isLockedOut("203.0.113.50", "100"), true);
  assert.equal(guard.isLockedOut("203.0.113.50", "101"), false, "other accounts unaffected");
  clock.t += 600_000;
  assert.equal(guard.isLockedOut("203.0.113.50", "100"), false, "lock expires");
  assert.equal(guard.stats().lockedAccounts, 0);
});

test("unknown account names are counted and locked exactly like real ones", () => {
  const { guard } = setup();
  for (let i = 0; i < 10; i++) guard.noteFailure(`198.51.100.${i}`, "no-such-user");
  assert.equal(guard.isLockedOut("198.51.100.200", "no-such-user"), true);
  // absurdly long names are bounded but still tracked
  const long = "x".repeat(10_000);
  for (let i = 0; i < 10; i++) guard.noteFailure(`198.51.100.${i}`, long);
  assert.equal(guard.isLockedOut("198.51.100.200", long), true);
  assert.ok((guard.stats().locked.find((l) => l.account.startsWith("x"))?.account.length ?? 0) <= 128);
});

test("known-good source is not locked out of its own account; others are", () => {
  const { clock, guard } = setup();
  guard.noteSuccess("10.1.1.20", "100"); // the desk phone registers
  clock.t += 1000;
  for (let i = 0; i < 50; i++) guard.noteFailure(`203.0.113.${i % 25}`, "100"); // attacker
  assert.equal(guard.isLockedOut("10.1.1.20", "100"), false, "the phone keeps registering");
  assert.equal(guard.isLockedOut("10.1.1.21", "100"), true);
  // The phone refreshes every hour and stays known-good while the attack goes on.
  for (let h = 0; h < 30; h++) {
    clock.t += 3_600_000;
    for (let i = 0; i < 10; i++) guard.noteFailure(`203.0.113.${i}`, "100");
    assert.equal(guard.isLockedOut("10.1.1.20", "100"), false);
    guard.noteSuccess("10.1.1.20", "100");
  }
  // A source that was good long ago (beyond knownGoodMs) is no longer exempt.
  const { clock: c2, guard: g2 } = setup({ knownGoodMs: 3_600_000 });
  g2.noteSuccess("10.1.1.30", "300");
  c2.t += 3_600_000;
  for (let i = 0; i < 10; i++) g2.noteFailure(`203.0.113.${i}`, "300");
  assert.equal(g2.isLockedOut("10.1.1.30", "300"), true);
  // Known-good for one account does not exempt the source on another account.
  for (let i = 0; i < 10; i++) guard.noteFailure(`203.0.113.${i}`, "101");
  assert.equal(guard.isLockedOut("10.1.1.20", "101"), true);
});

test("restored known-good pairs exempt the phone's address after a restart; old, future or bad times do not", () => {
  const { clock, guard } = setup();
  guard.restoreKnownGood("10.0.0.5", "1001", clock.t - 3_600_000);
  guard.restoreKnownGood("10.0.0.6", "1001", clock.t - 86_400_000); // as old as knownGoodMs
  guard.restoreKnownGood("10.0.0.7", "1001", clock.t + 60_000); // from the future
  guard.restoreKnownGood("10.0.0.8", "1001", Number.NaN);
  for (let i = 0; i < 10; i++) guard.noteFailure(`192.0.2.${i}`, "1001");
  assert.equal(guard.isLockedOut("10.0.0.5", "1001"), false, "restored pair exempt");
  for (const s of ["10.0.0.6", "10.0.0.7", "10.0.0.8", "192.0.2.99"]) assert.equal(guard.isLockedOut(s, "1001"), true, s);
  // A later restore does not move a newer success back.
  guard.noteSuccess("10.0.0.9", "1001");
  guard.restoreKnownGood("10.0.0.9", "1001", clock.t - 86_000_000);
  clock.t += 86_399_000;
  assert.equal(guard.isLockedOut("10.0.0.9", "1001"), false);
});

test("an account lock never applies to an address the account is registered from; bans still count every failure", () => {
  const registered = new Set(["1001\n10.0.0.5"]);
  const { guard } = setup({ registeredFrom: (source, account) => registered.has(`${account}\n${source}`) });
  for (let i = 0; i < 10; i++) guard.noteFailure(`192.0.2.${i}`, "1001");
  // The account is locked (it is under attack) but not for its registered address.
  assert.equal(guard.isLockedOut("10.0.0.5", "1001"), false);
  assert.equal(guard.isLockedOut("10.0.0.88", "1001"), true);
  assert.equal(guard.isLockedOut("10.0.0.5", "1002"), false, "no lock on 1002");
  // Failures from the registered address still count toward its ban: the agent lets the
  // registered flow itself through a ban (agent.ts acceptSource), not other ports of the address.
  for (let i = 0; i < 5; i++) guard.noteFailure("10.0.0.5", "1001");
  assert.equal(guard.isBanned("10.0.0.5"), true);
  // Once the registration is gone the address gets no lock exemption.
  registered.clear();
  assert.equal(guard.isLockedOut("10.0.0.5", "1001"), true);
});

test("continuing attack extends the account lock", () => {
  const { clock, guard } = setup();
  for (let i = 0; i < 10; i++) guard.noteFailure(`203.0.113.${i}`, "100");
  clock.t += 500_000;
  for (let i = 0; i < 10; i++) guard.noteFailure(`203.0.113.${i + 10}`, "100");
  clock.t += 500_000; // past the first lock's end
  assert.equal(guard.isLockedOut("203.0.113.99", "100"), true);
});

test("success forgets only the same pair's failures", () => {
  const { guard } = setup();
  // The phone fails 4 times (stale password), then succeeds: its slate is clean.
  for (let i = 0; i < 4; i++) guard.noteFailure("10.1.1.20", "100");
  guard.noteSuccess("10.1.1.20", "100");
  for (let i = 0; i < 4; i++) guard.noteFailure("10.1.1.20", "100");
  assert.equal(guard.isBanned("10.1.1.20"), false);

  // An attacker holding one valid account cannot reset its counter by succeeding on it.
  const { guard: g2 } = setup();
  for (let round = 0; round < 4; round++) {
    g2.noteFailure("evil", `victim${round}`);
    g2.noteSuccess("evil", "own-account");
  }
  g2.noteFailure("evil", "victim4");
  assert.equal(g2.isBanned("evil"), true);

  // A success from one source does not wipe another source's failures on the account.
  const { guard: g3 } = setup();
  for (let i = 0; i < 9; i++) g3.noteFailure(`203.0.113.${i}`, "100");
  g3.noteSuccess("10.1.1.20", "100");
  g3.noteFailure("203.0.113.9", "100");
  assert.equal(g3.isLockedOut("203.0.113.77", "100"), true);
});

test("stats lists bans soonest first with expiry; unban and unlock", () => {
  const { clock, guard } = setup();
  for (let i = 0; i < 5; i++) guard.noteFailure("a", undefined);
  clock.t += 10_000;
  for (let i = 0; i < 5; i++) guard.noteFailure("b", undefined);
  for (let i = 0; i < 10; i++) guard.noteFailure(`c${i}`, "acct");
  const s = guard.stats();
  assert.equal(s.bannedSources, 2);
  assert.deepEqual(s.banned, [
    { source: "a", until: 1_000_000 + 300_000, reason: "failures" },
    { source: "b", until: 1_010_000 + 300_000, reason: "failures" },
  ]);
  assert.deepEqual(s.locked, [{ account: "acct", until: 1_010_000 + 600_000 }]);
  assert.equal(guard.stats(1).banned.length, 1);
  assert.equal(guard.unban("a"), true);
  assert.equal(guard.unban("a"), false);
  assert.equal(guard.isBanned("a"), false);
  assert.equal(guard.unlock("acct"), true);
  assert.equal(guard.isLockedOut("zz", "acct"), false);
  clock.t += 300_000;
  assert.equal(guard.stats().bannedSources, 0, "expired bans are dropped from stats");
});

test("bounded memory under 1M distinct sources and names", () => {
  const { clock, guard } = setup({ maxTracked: 10_000 });
  const t0 = Date.now();
  for (let i = 0; i < 1_000_000; i++) {
    const src = `s${i}`;
    guard.noteRequest(src);
    if (i % 4 === 0) guard.noteFailure(src, `u${i}`);
    if (i % 1000 === 0) clock.t += 1;
  }
  const elapsed = Date.now() - t0;
  const s = guard.stats(0);
  assert.ok(s.trackedSources <= 20_000, `tracked sources ${s.trackedSources}`);
  assert.ok(s.trackedAccounts <= 10_000, `tracked accounts ${s.trackedAccounts}`);
  // A real attacker among the flood still gets banned.
  for (let i = 0; i < 5; i++) guard.noteFailure("attacker", "100");
  assert.equal(guard.isBanned("attacker"), true);
  // bans and locks are bounded too
  const { guard: g2 } = setup({ maxTracked: 100, perSource: { maxFailures: 1, windowMs: 1000, banMs: 1000 }, perAccount: { maxFailures: 1, windowMs: 1000, banMs: 1000 } });
  for (let i = 0; i < 100_000; i++) g2.noteFailure(`x${i}`, `y${i}`);
  const s2 = g2.stats(0);
  assert.equal(s2.bannedSources, 100);
  assert.equal(s2.lockedAccounts, 100);
  assert.ok(elapsed < 5000, `1M requests took ${elapsed} ms`);
});

test("constructor rejects nonsense limits", () => {
  const ok = { maxFailures: 1, windowMs: 1, banMs: 1 };
  assert.throws(() => new AuthGuard({ perSource: { ...ok, maxFailures: 0 }, perAccount: ok, maxTracked: 1 }));
  assert.throws(() => new AuthGuard({ perSource: ok, perAccount: { ...ok, windowMs: 0 }, maxTracked: 1 }));
  assert.throws(() => new AuthGuard({ perSource: ok, perAccount: ok, maxTracked: 0 }));
  assert.throws(() => new AuthGuard({ perSource: ok, perAccount: ok, maxTracked: 1, perSourceRequestRate: { max: 0, windowMs: 1 } }));
});

test("LruMap evicts the least recently touched key, also after many evictions", () => {
  const m = new LruMap<number>(3);
  m.set("a", 1);
  m.set("b", 2);
  m.set("c", 3);
  m.touch("a", () => 0); // a is now most recent
  m.set("d", 4); // evicts b
  assert.deepEqual([...m.keys()], ["c", "a", "d"]);
  m.set("c", 30); // update moves c to the end
  m.set("e", 5); // evicts a
  assert.deepEqual([...m.keys()], ["d", "c", "e"]);
  assert.equal(m.get("c"), 30);
  m.delete("d");
  m.delete("c");
  m.delete("e");
  assert.equal(m.size, 0);
  for (let i = 0; i < 10_000; i++) m.set(`k${i}`, i);
  assert.deepEqual([...m.keys()], ["k9997", "k9998", "k9999"]);
  m.touch("k9997", () => -1);
  m.set("x", 0);
  assert.deepEqual([...m.keys()], ["k9999", "k9997", "x"]);
});
