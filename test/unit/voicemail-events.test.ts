// What the console gets about voicemail: the voicemail.message event and the statistics'
// per-mailbox counts, as MqttSync builds them, checked against the contract schema.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { validatePayload } from "../../agent/contract.ts";
import { CallStatistics } from "../../agent/sync/stats.ts";

const message = { id: "20261203T154233Z-1a2b3c4d", mailbox: "group/sales", caller: "+4930555111", callId: "abc@trunk", receivedAt: 1764776553000, durationMs: 3000, bytes: 48044, sha256: "a".repeat(64) };

describe("voicemail towards the console", () => {
  test("voicemail.message events match the contract; malformed ones do not", () => {
    const ev = (data: Record<string, unknown>) => validatePayload("event", { bootId: "b1", seq: 1, type: "voicemail.message", at: 1, data });
    assert.deepEqual(ev(message), { ok: true });
    for (const bad of [
      { ...message, id: "../x" },
      { ...message, mailbox: "room/1" },
      { ...message, sha256: "xyz" },
      { ...message, durationMs: -1 },
      { ...message, extra: true },
      (({ sha256: _s, ...rest }) => rest)(message),
    ]) assert.equal(ev(bad).ok, false, JSON.stringify(bad));
  });

  test("statistics count messages per mailbox, absent when none; the report matches the contract", () => {
    const s = new CallStatistics(0);
    assert.equal(s.isEmpty(), true);
    const e = { id: message.id, mailbox: { kind: "group" as const, id: "sales" }, caller: "x", callId: "c", receivedAt: 0, durationMs: 1, bytes: 1, sha256: message.sha256, at: 0 };
    s.voicemail(e);
    s.voicemail(e);
    s.voicemail({ ...e, mailbox: { kind: "user", id: "anna" } });
    assert.equal(s.isEmpty(), false);
    const r = s.report(60_000);
    assert.deepEqual(r.voicemail, [{ mailbox: "group/sales", messages: 2 }, { mailbox: "user/anna", messages: 1 }]);
    assert.deepEqual(validatePayload("statistics", { bootId: "b1", intervalS: 60, ...r }), { ok: true });
    s.reset(60_000);
    assert.equal(s.report(120_000).voicemail, undefined);
  });
});
