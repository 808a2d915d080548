// Payload validation in both directions, the desired verdict, topics, back-off and statistics.
import { test } from "node:test";
import assert from "node:assert/strict";
import { validatePayload } from "../../agent/contract.ts";
import { checkSiteConfig } from "../../agent/site/site.ts";
import { backoffMs, configHash, CONTROL_SLOTS, eventWindowFor, judgeDesired } from "../../agent/sync/mqtt-sync.ts";
import { desiredFrom, pushTooLarge, reportedLimit } from "../../agent/sync/console-cli.ts";
import { CallStatistics } from "../../agent/sync/stats.ts";
import { isOwnReplyTopic, parseTopic } from "../../agent/sync/topics.ts";
import { siteSnapshot } from "../e2e/mqtt-fixtures.ts";

const ctx = { siteId: "s-1", appliedVersion: 3, appliedHash: configHash(siteSnapshot(3)), maxBytes: 1 << 20 };
const desired = (config: Record<string, unknown>, extra: Record<string, unknown> = {}): Buffer => Buffer.from(JSON.stringify({ schema: "ringedge.desired/1", siteId: "s-1", version: config.version, config, ...extra }));

test("judgeDesired: apply newer, unchanged for older or the same content, conflict for the same version with other content, and every kind of rejection with paths", () => {
  const v4 = judgeDesired(desired(siteSnapshot(4)), ctx);
  assert.equal(v4.kind, "apply");
  assert.equal(v4.kind === "apply" && v4.hash, configHash(siteSnapshot(4)));
  assert.deepEqual(judgeDesired(desired(siteSnapshot(3)), ctx), { kind: "unchanged", version: 3 });
  assert.deepEqual(judgeDesired(desired(siteSnapshot(2)), ctx), { kind: "unchanged", version: 2 });
  // The applied version with other content is a conflict naming both hashes, never "unchanged".
  const other = siteSnapshot(3);
  (other.users as Array<Record<string, unknown>>)[0]!.name = "Someone else";
  const conflict = judgeDesired(desired(other), ctx);
  assert.equal(conflict.kind, "reject");
  if (conflict.kind === "reject") {
    assert.equal(conflict.version, 3);
    assert.deepEqual(conflict.errors.map((e) => [e.code, e.path]), [["version-conflict", "version"]]);
    assert.ok(conflict.errors[0]!.message.includes(ctx.appliedHash), conflict.errors[0]!.message);
    assert.ok(conflict.errors[0]!.message.includes(configHash(other)), conflict.errors[0]!.message);
  }
  // An older version is "unchanged" whatever its content; nothing applied yet: any version applies.
  assert.deepEqual(judgeDesired(desired({ ...siteSnapshot(2), settings: { pickupCode: "*9" } }), ctx), { kind: "unchanged", version: 2 });
  assert.equal(judgeDesired(desired(siteSnapshot(1)), { ...ctx, appliedVersion: 0, appliedHash: null }).kind, "apply");
  const codes = (b: Buffer): Array<[string, string]> => {
    const r = judgeDesired(b, ctx);
    assert.equal(r.kind, "reject");
    return r.kind === "reject" ? r.errors.map((e) => [e.code, e.path]) : [];
  };
  assert.deepEqual(codes(Buffer.from("{")), [["bad-json", "$"]]);
  assert.deepEqual(codes(Buffer.from("[]")), [["schema", "$"]]);
  assert.deepEqual(codes(Buffer.alloc(ctx.maxBytes + 1, 32)), [["too-large", "$"]]);
  assert.deepEqual(codes(desired(siteSnapshot(5), { siteId: "s-2" })), [["site-mismatch", "siteId"]]);
  assert.deepEqual(codes(desired(siteSnapshot(5), { version: 6 })), [["version-mismatch", "config.version"]]);
  assert.deepEqual(codes(desired(siteSnapshot(5), { hash: "sha256:" + "a".repeat(64) })), [["hash-mismatch", "hash"]]);
  assert.deepEqual(codes(desired(siteSnapshot(5), { extra: 1 })), [["schema", "extra"]]);
  const bad = siteSnapshot(5);
  (bad.groups as Array<Record<string, unknown>>)[0]!.number = "12345";
  assert.deepEqual(codes(desired(bad)), [["schema", "config.groups[0].number"]]);
  // The claimed version is echoed when it can be read.
  const r = judgeDesired(desired(bad), ctx);
  assert.equal(r.kind === "reject" && r.version, 5);
});

test("judgeDesired: a config it validated as part of the envelope is not validated again by the site check; one it did not validate is", () => {
  const judged = judgeDesired(desired(siteSnapshot(4)), ctx);
  assert.equal(judged.kind, "apply");
  if (judged.kind !== "apply") return;
  assert.deepEqual(checkSiteConfig(judged.config, []), checkSiteConfig(structuredClone(judged.config), []), "same verdict as a full check");
  // A validator that accepts anything (a test double) proves nothing: the site check still validates.
  const bad = siteSnapshot(5);
  (bad.groups as Array<Record<string, unknown>>)[0]!.number = "12345";
  const lax = judgeDesired(desired(bad), ctx, () => ({ ok: true }));
  assert.equal(lax.kind, "apply");
  if (lax.kind !== "apply") return;
  const checked = checkSiteConfig(lax.config, []);
  assert.equal(checked.ok, false);
  assert.ok(!checked.ok && checked.errors.some((e) => e.code === "schema" && e.path === "groups[0].number"), JSON.stringify(checked));
});

test("every outgoing payload shape is checked against the contract", () => {
  assert.ok(validatePayload("ack", { version: null, status: "rejected", errors: [{ code: "bad-json", path: "$", message: "x" }] }).ok);
  assert.ok(!validatePayload("ack", { version: 1, status: "done", errors: [] }).ok);
  assert.ok(validatePayload("reported", { appliedVersion: 0, appliedHash: null, bootId: "b1" }).ok);
  assert.ok(!validatePayload("reported", { appliedVersion: 1, appliedHash: "md5:x", bootId: "b1" }).ok);
  assert.ok(validatePayload("status", { online: false, bootId: "b1", connSeq: 3 }).ok);
  assert.ok(validatePayload("event", { bootId: "b", seq: 1, type: "gap", at: 1, data: { from: 1, to: 2, count: 2 } }).ok);
  assert.ok(!validatePayload("event", { bootId: "b", seq: 0, type: "presence", at: 1, data: { deviceId: "d", online: true, reason: "x" } }).ok);
  assert.ok(!validatePayload("event", { bootId: "b", seq: 1, type: "call.offered", at: 1, data: { memberId: "u" } }).ok, "callId required");
  assert.ok(validatePayload("commandRequest", {}).ok);
  assert.ok(!validatePayload("commandRequest", { args: [] }).ok);
  assert.ok(validatePayload("commandReply", { command: "resync", status: "not-available", errors: [] }).ok);
});

test("the console CLI wraps a bare snapshot and refuses an invalid one before sending", () => {
  const ok = desiredFrom("s-1", siteSnapshot(2));
  assert.ok(ok.ok && ok.version === 2 && ok.desired.hash === configHash(siteSnapshot(2)));
  const bad = desiredFrom("s-1", { ...siteSnapshot(2), users: "no" });
  assert.ok(!bad.ok && bad.errors.some((e) => e.path === "config.users"));
});

test("topics: own subtree only; reply topics must be this site's", () => {
  assert.deepEqual(parseTopic("ringedge/v1/s-1/desired"), { kind: "site", siteId: "s-1", leaf: "desired" });
  assert.deepEqual(parseTopic("ringedge/v1/s-1/cmd/resync"), { kind: "cmd", siteId: "s-1", name: "resync" });
  assert.equal(parseTopic("ringedge/v1/S_1/desired").kind, "foreign");
  assert.equal(parseTopic("other/v1/s-1/desired").kind, "foreign");
  assert.ok(isOwnReplyTopic("s-1", "ringedge/v1/s-1/reply/console-a"));
  assert.ok(!isOwnReplyTopic("s-1", "ringedge/v1/s-2/reply/console-a"));
  assert.ok(!isOwnReplyTopic("s-1", "ringedge/v1/s-1/reply/a/b"));
  assert.ok(!isOwnReplyTopic("s-1", "ringedge/v1/s-1/reply/+"));
});

test("back-off doubles to the cap with ±50 % jitter", () => {
  assert.equal(backoffMs(0, 1000, 60_000, () => 0.5), 1000);
  assert.equal(backoffMs(3, 1000, 60_000, () => 0.5), 8000);
  assert.equal(backoffMs(20, 1000, 60_000, () => 0.5), 60_000);
  assert.equal(backoffMs(2, 1000, 60_000, () => 0), 2000);
  assert.equal(backoffMs(2, 1000, 60_000, () => 0.999999), 6000);
});

test("statistics: group offers count once per call; averages only over answered calls", () => {
  const s = new CallStatistics(0);
  s.offered({ callId: "c", groupId: "g", memberId: "a", deviceIds: [], caller: "x", at: 1 });
  s.offered({ callId: "c", groupId: "g", memberId: "b", deviceIds: [], caller: "x", at: 1 });
  s.answered({ callId: "c", groupId: "g", memberId: "b", deviceId: "d", caller: "x", answerAfterMs: 300, at: 2 });
  s.offered({ callId: "c2", groupId: "g", memberId: "a", deviceIds: [], caller: "x", at: 1 });
  s.answered({ callId: "c2", groupId: "g", memberId: "a", deviceId: "d", caller: "x", answerAfterMs: 100, at: 2 });
  const r = s.report(10);
  assert.deepEqual(r.groups, [{ groupId: "g", offered: 2, answered: 2, missed: 0, busy: 0, avgAnswerMs: 200 }]);
  assert.deepEqual(r.operators.map((o) => [o.userId, o.offered, o.answered, o.avgAnswerMs]), [["a", 2, 1, 100], ["b", 1, 1, 300]]);
  s.reset(10);
  assert.ok(s.isEmpty());
});

test("eventWindowFor: the configured window within the broker's Receive Maximum, leaving control slots", () => {
  assert.equal(eventWindowFor(64, undefined), 64, "absent Receive Maximum is 65,535");
  assert.equal(eventWindowFor(64, 20), 20 - CONTROL_SLOTS, "Mosquitto's default of 20");
  assert.equal(eventWindowFor(64, 1000), 64);
  assert.equal(eventWindowFor(64, 2), 1, "never below one");
});

test("the console refuses a push over the site's limit, which it takes from the reported state when there", () => {
  assert.equal(pushTooLarge(1000, 1000, "x"), undefined);
  assert.equal(pushTooLarge(1001, 1000, "reported by the site"), "the push is 1001 bytes, over the site's limit of 1000 bytes (reported by the site); not sent");
  assert.equal(reportedLimit({ appliedVersion: 1, appliedHash: null, bootId: "b", maxDesiredBytes: 4096 }), 4096);
  for (const bad of [undefined, null, "x", [], {}, { maxDesiredBytes: "4096" }, { maxDesiredBytes: 0 }, { maxDesiredBytes: -1 }, { maxDesiredBytes: 1.5 }]) assert.equal(reportedLimit(bad), undefined, JSON.stringify(bad));
  assert.ok(validatePayload("reported", { appliedVersion: 0, appliedHash: null, bootId: "b1", maxDesiredBytes: 1 << 20 }).ok);
  assert.ok(!validatePayload("reported", { appliedVersion: 0, appliedHash: null, bootId: "b1", maxDesiredBytes: 0 }).ok);
});
