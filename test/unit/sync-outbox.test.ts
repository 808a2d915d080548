// The persistent outbox: order, fsync before publish, delivery removal, bound policy, restart.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { Outbox, OUTBOX_FILE } from "../../agent/sync/outbox.ts";
import { tempDir } from "../tmpdir.ts";

const dir = (): string => tempDir("ringedge-outbox-");
const lines = (d: string): string[] => fs.readFileSync(path.join(d, OUTBOX_FILE), "utf8").split("\n").filter(Boolean);

test("events are publishable only after they are on disk, in seq order", async () => {
  const d = dir();
  let durableCalls = 0;
  const box = Outbox.open({ dataDir: d, bootId: "b1", max: 100, batchMs: 1000, onDurable: () => durableCalls++ });
  const e1 = box.append("presence", { deviceId: "a", online: true, reason: "registered" });
  const e2 = box.append("presence", { deviceId: "b", online: true, reason: "registered" });
  assert.deepEqual([e1.seq, e2.seq], [1, 2]);
  assert.deepEqual(box.take(10), [], "nothing goes out before the fsync");
  await box.flush();
  assert.equal(durableCalls, 1);
  // On disk before take() hands them out.
  assert.equal(lines(d).filter((l) => l.includes('"k":"e"')).length, 2);
  assert.deepEqual(box.take(10).map((e) => e.seq), [1, 2]);
  assert.deepEqual(box.take(10), [], "in flight: not handed out twice");
  box.release(1);
  assert.deepEqual(box.take(10).map((e) => e.seq), [1]);
  box.delivered(1);
  box.delivered(1);
  assert.deepEqual(box.pending().map((e) => e.seq), [2]);
  await box.close();
});

test("a restart drains what was not delivered, keeps seq increasing, ignores a torn last line", async () => {
  const d = dir();
  const box = Outbox.open({ dataDir: d, bootId: "b1", max: 100 });
  for (let i = 0; i < 5; i++) box.append("presence", { deviceId: `d${i}`, online: true, reason: "registered" });
  await box.flush();
  box.take(2);
  box.delivered(1);
  box.delivered(2);
  await box.flush();
  await box.close();
  fs.appendFileSync(path.join(d, OUTBOX_FILE), '{"k":"e","e":{"bootId":"b1","se'); // crash mid-write
  const again = Outbox.open({ dataDir: d, bootId: "b2", max: 100 });
  assert.deepEqual(again.pending().map((e) => [e.seq, e.bootId]), [[3, "b1"], [4, "b1"], [5, "b1"]]);
  assert.equal(again.stats().tornLines, 1);
  assert.deepEqual(again.take(10).map((e) => e.seq), [3, 4, 5], "replayed events are durable already");
  assert.equal(again.append("presence", { deviceId: "x", online: false, reason: "expired" }).seq, 6);
  for (const s of [3, 4, 5]) again.delivered(s);
  await again.flush();
  await again.close();
  // Everything delivered: the next run starts after the last seq even after compaction.
  const third = Outbox.open({ dataDir: d, bootId: "b3", max: 100 });
  assert.deepEqual(third.pending().map((e) => e.seq), [6]);
  third.take(1);
  third.delivered(6);
  await third.flush();
  await third.close();
  const fourth = Outbox.open({ dataDir: d, bootId: "b4", max: 100 });
  assert.equal(fourth.pending().length, 0);
  assert.equal(fourth.append("presence", { deviceId: "y", online: true, reason: "registered" }).seq, 7);
  await fourth.close();
});

test("bound policy: when full, the oldest events not in flight become one gap event that keeps their place", async () => {
  const d = dir();
  const box = Outbox.open({ dataDir: d, bootId: "b1", max: 4 });
  for (let i = 0; i < 4; i++) box.append("presence", { deviceId: `d${i}`, online: true, reason: "registered" });
  await box.flush();
  assert.deepEqual(box.take(1).map((e) => e.seq), [1]); // seq 1 in flight: never dropped
  box.append("presence", { deviceId: "d4", online: true, reason: "registered" }); // drops 2 → gap
  box.append("presence", { deviceId: "d5", online: true, reason: "registered" }); // drops 3 → gap extends
  box.append("presence", { deviceId: "d6", online: true, reason: "registered" }); // drops 4 → gap extends
  const p = box.pending();
  assert.deepEqual(p.map((e) => [e.seq, e.type]), [[1, "presence"], [2, "gap"], [6, "presence"], [7, "presence"]]);
  const gap = p[1]!;
  assert.deepEqual(gap.data, { from: 2, to: 5, count: 4 });
  assert.equal(box.stats().dropped, 4);
  await box.flush();
  await box.close();
  // The gap survives a restart in its place.
  const again = Outbox.open({ dataDir: d, bootId: "b2", max: 4 });
  assert.deepEqual(again.pending().map((e) => e.seq), p.map((e) => e.seq));
  assert.deepEqual(again.pending().find((e) => e.type === "gap")!.data, gap.data);
  assert.equal(again.stats().dropped, 0);
  await again.close();
});

test("in-flight count and its peak follow take, release, releaseAll and delivery", async () => {
  const d = dir();
  const box = Outbox.open({ dataDir: d, bootId: "b1", max: 100, batchMs: 1 });
  for (let i = 0; i < 5; i++) box.append("presence", { deviceId: `d${i}`, online: true, reason: "registered" });
  await box.flush();
  assert.deepEqual(box.take(3).map((e) => e.seq), [1, 2, 3]);
  assert.equal(box.inFlightCount(), 3);
  box.release(2);
  box.release(2); // twice: counted once
  assert.equal(box.inFlightCount(), 2);
  box.delivered(1);
  box.delivered(1);
  assert.equal(box.inFlightCount(), 1);
  box.releaseAll();
  assert.equal(box.inFlightCount(), 0);
  assert.deepEqual(box.take(10).map((e) => e.seq), [2, 3, 4, 5], "released events go out again in seq order");
  assert.deepEqual([box.stats().inFlight, box.stats().peakInFlight], [4, 4]);
  await box.close();
  fs.rmSync(d, { recursive: true, force: true });
});
