// TimerSet (agent/sip/transaction/timers.ts) on the runtime's real timers: a fired timer reaches
// its owner by name, stop/stopAll cancel, and restart() refreshes a running timer of the same
// duration in place (Timer C on every provisional response) and starts anew otherwise. The
// transaction tests run the same class under node:test's mocked timers (sip-transaction.test.ts).
import assert from "node:assert/strict";
import { test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { LingerTimers } from "../../agent/sip/transaction/linger.ts";
import { TimerSet } from "../../agent/sip/transaction/timers.ts";

type Name = "A" | "B" | "C";

function owned(): { set: TimerSet<Name>; fired: Array<{ name: Name; at: number }> } {
  const fired: Array<{ name: Name; at: number }> = [];
  const set = new TimerSet<Name>({ onTimer: (name) => fired.push({ name, at: performance.now() }) });
  return { set, fired };
}

/** The Node timer object behind name (white box: the set's flat name/handle array). */
const handleOf = (set: TimerSet<Name>, name: Name): unknown => {
  const p = (set as unknown as { pending?: unknown[] }).pending ?? [];
  const i = p.indexOf(name);
  return i < 0 ? undefined : p[i + 1];
};

test("timers fire to their owner by name and leave no handle; stop and stopAll cancel", async () => {
  const { set, fired } = owned();
  set.start("A", 20);
  set.start("B", 40);
  set.start("C", 30);
  set.stop("C");
  assert.equal(set.size, 2);
  await sleep(80);
  assert.deepEqual(fired.map((f) => f.name), ["A", "B"]);
  assert.equal(set.size, 0);
  assert.equal(set.has("A"), false);
  set.start("A", 20);
  set.start("B", 20);
  set.stopAll();
  await sleep(50);
  assert.equal(fired.length, 2);
});

test("restart of a running timer with its own duration refreshes the same timer object; it fires ms after the restart", async () => {
  const { set, fired } = owned();
  // Margins of 150 ms either side of each due time: a loaded box delays timers, never advances them.
  set.start("C", 400);
  const before = handleOf(set, "C");
  await sleep(200);
  const restartedAt = performance.now();
  set.restart("C", 400);
  assert.equal(handleOf(set, "C"), before, "refreshed in place");
  assert.equal(set.size, 1);
  await sleep(250);
  assert.equal(fired.length, 0, "not at its first due time");
  await sleep(300);
  assert.equal(fired.length, 1);
  assert.equal(fired[0]!.name, "C");
  assert.ok(fired[0]!.at - restartedAt >= 399, `fired ${fired[0]!.at - restartedAt} ms after the restart`);
  assert.equal(set.size, 0);
});

test("restart with another duration, or of a timer not running, starts a new one", async () => {
  const { set, fired } = owned();
  set.start("C", 200);
  const before = handleOf(set, "C");
  set.restart("C", 30);
  assert.notEqual(handleOf(set, "C"), before);
  assert.equal(set.size, 1);
  set.restart("B", 30);
  assert.equal(set.size, 2);
  await sleep(250);
  assert.deepEqual(fired.map((f) => f.name).sort(), ["B", "C"], "the 200 ms one was stopped, not left to fire");
});

// LingerTimers (agent/sip/transaction/linger.ts) on real timers: a transaction that joins a batch
// while the event loop is too busy to run the batch's closing on time still lingers its whole
// duration (the batch's duration starts when it closes). The mocked-timer tests of the batches
// are in transaction-linger.test.ts.
test("a linger batch whose closing the loop runs late still ends nobody early", async () => {
  const ms = 1_280; // lateness 5 ms
  const timers = new LingerTimers(100);
  const ended: Record<string, number> = {};
  const joined: Record<string, number> = {};
  const join = (name: string): void => {
    joined[name] = performance.now();
    timers.add({ lingerExpired: () => (ended[name] = performance.now()) }, ms);
  };
  join("first");
  const spinUntil = performance.now() + 40; // the loop busy well past the 5 ms closing
  while (performance.now() < spinUntil) {
    // busy
  }
  join("late joiner");
  assert.equal(timers.batches, 1, "the closing has not run: it joined the open batch");
  await sleep(ms + 300);
  for (const name of ["first", "late joiner"]) {
    assert.ok(ended[name] !== undefined, `${name} ended`);
    assert.ok(ended[name]! - joined[name]! >= ms - 1, `${name} lingered ${ended[name]! - joined[name]!} ms of ${ms}`);
  }
  timers.close();
});
