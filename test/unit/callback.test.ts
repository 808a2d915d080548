// Callbacks for impatient callers: the decision core (routing/callback.ts), its file
// (routing/callback-file.ts) and the group setting (routing/model.ts, the contract schema).
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { CallbackBook, callbacksToJson, parseCallbacks, queueOrder, type PendingCallback, type WaitingCaller } from "../../agent/routing/callback.ts";
import { CallbacksFile, loadCallbacks } from "../../agent/routing/callback-file.ts";
import { rawCallerNumber } from "../../agent/routing/callback-service.ts";
import { parseDatagram } from "../../agent/sip/message.ts";
import type { SipRequest } from "../../agent/sip/types.ts";
import { parseSite, type ValidationError } from "../../agent/routing/model.ts";
import { validatePayload } from "../../agent/contract.ts";
import { createLogger } from "../../agent/log.ts";
import { tempDir } from "../tmpdir.ts";

const SETTINGS = { retries: 2, retryDelayS: 60 };

function caller(place: number, groupId = "sales", offering = false): WaitingCaller<string> {
  return { groupId, place, offering, ref: `call@${place}` };
}

function cbAt(book: CallbackBook, id: string, place: number, groupId = "sales", number = `+49301${place}`): PendingCallback {
  return book.add({ id, groupId, number, place, requestedAt: place + 20_000 });
}

const order = (items: ReturnType<typeof queueOrder<string>>): string[] => items.map((i) => (i.kind === "caller" ? i.ref : i.callback.id));

describe("callback core: one queue in arrival order", () => {
  it("a callback keeps its place between waiting callers: never ahead of one who came earlier, never behind one who came later", () => {
    const book = new CallbackBook();
    cbAt(book, "cb2000", 2000);
    const items = queueOrder([caller(1000), caller(3000)], book.all(), 10_000);
    assert.deepEqual(order(items), ["call@1000", "cb2000", "call@3000"]);
  });

  it("a caller being offered to an operator is not waiting; a callback in progress or not yet due is not served", () => {
    const book = new CallbackBook();
    cbAt(book, "a", 500);
    cbAt(book, "b", 600);
    cbAt(book, "c", 700);
    assert.equal(book.begin("a", "anna"), true);
    book.callerFailed("a", 1000, SETTINGS); // a: retry at 61_000
    assert.equal(book.begin("b", "ben"), true);
    const items = queueOrder([caller(100, "sales", true), caller(800)], book.all(), 2000);
    assert.deepEqual(order(items), ["c", "call@800"]);
    assert.deepEqual(order(queueOrder([], book.all(), 61_000)), ["a", "c"]);
  });

  it("equal places: the caller on the line goes first", () => {
    const book = new CallbackBook();
    cbAt(book, "x", 1000);
    assert.deepEqual(order(queueOrder([caller(1000)], book.all(), 5000)), ["call@1000", "x"]);
  });

  it("release rate: one callback per free operator; a reserved operator cannot start another; the same callback cannot start twice", () => {
    const book = new CallbackBook();
    cbAt(book, "a", 1);
    cbAt(book, "b", 2);
    assert.equal(book.begin("a", "anna"), true);
    assert.equal(book.begin("b", "anna"), false, "anna is reserved by a");
    assert.equal(book.begin("a", "ben"), false, "a is already in progress");
    assert.deepEqual([...book.operatorsBusy()], ["anna"]);
    assert.equal(book.begin("b", "ben"), true);
    assert.deepEqual([...book.operatorsBusy()].sort(), ["anna", "ben"]);
    assert.equal(book.begin("nope", "carl"), false);
  });

  it("operator did not answer: back at its place, attempts unchanged, due at once", () => {
    const book = new CallbackBook();
    cbAt(book, "a", 1000);
    book.begin("a", "anna");
    assert.equal(book.operatorFailed("a"), true);
    const cb = book.get("a")!;
    assert.equal(cb.attempts, 0);
    assert.equal(cb.operator, undefined);
    assert.deepEqual(order(queueOrder([caller(2000)], book.all(), 1)), ["a", "call@2000"]);
  });

  it("caller not reached: retried after the delay up to `retries` more times, then missed", () => {
    const book = new CallbackBook();
    cbAt(book, "a", 1000);
    book.begin("a", "anna");
    assert.deepEqual(book.callerFailed("a", 10_000, SETTINGS), { kind: "retry", at: 70_000 });
    assert.equal(book.nextDue(10_000), 70_000);
    assert.deepEqual(order(queueOrder([], book.all(), 69_999)), []);
    book.begin("a", "anna");
    assert.deepEqual(book.callerFailed("a", 70_000, SETTINGS), { kind: "retry", at: 130_000 });
    book.begin("a", "anna");
    assert.deepEqual(book.callerFailed("a", 130_000, SETTINGS), { kind: "missed" });
    assert.equal(book.size(), 0);
    assert.equal(book.callerFailed("a", 0, SETTINGS), undefined);
  });

  it("connected: done and gone; a second request from the same number in the same group keeps the first place", () => {
    const book = new CallbackBook();
    const first = cbAt(book, "a", 1000, "sales", "+4930111");
    const again = book.add({ id: "b", groupId: "sales", number: "+4930111", place: 5000, requestedAt: 6000 });
    assert.equal(again, first);
    assert.equal(book.size(), 1);
    book.begin("a", "anna");
    assert.equal(book.connected("a")?.id, "a");
    assert.equal(book.size(), 0);
  });
});

describe("callback persistence", () => {
  const log = createLogger("silent");

  it("round trip through the file: same callbacks, places and attempts; nothing in progress after a restart", async () => {
    const dir = tempDir();
    const book = new CallbackBook();
    cbAt(book, "a", 1000);
    cbAt(book, "b", 2000);
    book.begin("b", "anna");
    book.callerFailed("b", 3000, SETTINGS);
    book.begin("a", "ben");
    const file = CallbacksFile.in(dir, () => callbacksToJson(book), log);
    file.changed();
    await file.close();
    const loaded = loadCallbacks(file.file, log);
    assert.equal(loaded.problem, undefined);
    const again = new CallbackBook(loaded.callbacks);
    assert.deepEqual(again.all().map((c) => [c.id, c.place, c.attempts, c.notBefore, c.operator]), [["a", 1000, 0, 0, undefined], ["b", 2000, 1, 63_000, undefined]]);
    assert.deepEqual(loadCallbacks(path.join(dir, "absent.json"), log), { callbacks: [] });
  });

  it("a corrupt file is set aside with an error in the log, and the agent starts with none", () => {
    const dir = tempDir();
    const records: string[] = [];
    const seen = createLogger("error", "test", (line) => void records.push(line));
    const cases: Array<[string, RegExp]> = [
      ["{ not json", /JSON/],
      ["", /empty/],
      [JSON.stringify({ callbacks: [] }), /not a ringedge envelope/],
    ];
    for (const [text, reason] of cases) {
      const f = path.join(dir, "callbacks.json");
      fs.writeFileSync(f, text);
      const r = loadCallbacks(f, seen, new Date(Date.UTC(2026, 0, 1, records.length)));
      assert.deepEqual(r.callbacks, []);
      assert.match(r.problem!, reason);
      assert.ok(r.setAside !== undefined && fs.existsSync(r.setAside), "set aside");
      assert.equal(fs.existsSync(f), false);
      assert.match(records.at(-1)!, /set aside/);
    }
  });

  it("an envelope whose checksum is right but whose entries are bad is refused by path", async () => {
    const dir = tempDir();
    const bad = { callbacks: [{ id: "a", groupId: "sales", number: "sip:evil@x", place: 1, requestedAt: 1, attempts: 0, notBefore: 0 }] };
    const file = CallbacksFile.in(dir, () => bad, log);
    file.changed();
    await file.close();
    const r = loadCallbacks(file.file, log);
    assert.deepEqual(r.callbacks, []);
    assert.match(r.problem!, /^callbacks\[0\]\.number/);
  });

  it("parseCallbacks: every kind of bad entry, by path", () => {
    const good = { id: "a", groupId: "sales", number: "+4930123", place: 1, requestedAt: 2, attempts: 0, notBefore: 0 };
    const bad = (patch: Record<string, unknown>): string => {
      const r = parseCallbacks({ callbacks: [{ ...good, ...patch }] });
      return r.ok ? "ok" : r.error.split(":")[0]!;
    };
    assert.equal(bad({}), "ok");
    assert.equal(bad({ id: "../x" }), "callbacks[0].id");
    assert.equal(bad({ groupId: 7 }), "callbacks[0].groupId");
    assert.equal(bad({ number: "12345678901234567890123" }), "callbacks[0].number");
    assert.equal(bad({ place: -1 }), "callbacks[0].place");
    assert.equal(bad({ notBefore: 1.5 }), "callbacks[0].notBefore");
    assert.equal(bad({ attempts: "1" }), "callbacks[0].attempts");
    const dup = parseCallbacks({ callbacks: [good, good] });
    assert.ok(!dup.ok && /^callbacks\[1\]\.id: duplicate/.test(dup.error));
    assert.equal(parseCallbacks([]).ok, false);
    assert.equal(parseCallbacks({ callbacks: "x" }).ok, false);
    assert.equal(parseCallbacks({ callbacks: [null] }).ok, false);
  });
});

describe("group callback setting", () => {
  function site(callback: unknown, noAnswer: unknown = { kind: "wait-for-operator", maxWaitS: 120, then: { kind: "hangup" } }): any {
    return {
      settings: {},
      users: [{ id: "anna", extension: "201", name: "Anna", availability: "available" }],
      devices: [],
      groups: [{ id: "sales", number: "600", name: "Sales", strategy: "sequential", members: ["anna"], ringCount: 2, checkAvailability: false, noAnswer, ...(callback !== undefined ? { callback } : {}) }],
    };
  }
  const errorsOf = (s: unknown): string[] => {
    const r = parseSite(s);
    return r.ok ? [] : r.errors.map((e: ValidationError) => `${e.code}@${e.path}`);
  };

  it("defaults: offer after 20 s, 2 retries 120 s apart; absent = no offer", () => {
    const r = parseSite(site({ enabled: true }));
    assert.ok(r.ok, JSON.stringify(!r.ok && r.errors));
    assert.deepEqual(r.site.groups[0]!.callback, { enabled: true, offerAfterS: 20, retries: 2, retryDelayS: 120 });
    const none = parseSite(site(undefined));
    assert.ok(none.ok && none.site.groups[0]!.callback === undefined);
    const own = parseSite(site({ enabled: true, offerAfterS: 30, retries: 0, retryDelayS: 5 }));
    assert.ok(own.ok && own.site.groups[0]!.callback?.retryDelayS === 5);
  });

  it("bad values, by path", () => {
    assert.deepEqual(errorsOf(site("yes")), ["invalid-type@groups[0].callback"]);
    assert.deepEqual(errorsOf(site({ enabled: "1" })), ["invalid-type@groups[0].callback.enabled"]);
    assert.deepEqual(errorsOf(site({ enabled: true, offerAfterS: 0 })), ["invalid-callback@groups[0].callback.offerAfterS"]);
    assert.deepEqual(errorsOf(site({ enabled: true, retries: 11 })), ["invalid-callback@groups[0].callback.retries"]);
    assert.deepEqual(errorsOf(site({ enabled: true, retryDelayS: 1.5 })), ["invalid-callback@groups[0].callback.retryDelayS"]);
    assert.deepEqual(errorsOf(site({ enabled: true, offerAfterS: 120 })), ["invalid-callback@groups[0].callback.offerAfterS"]);
    assert.deepEqual(errorsOf(site({ enabled: true }, { kind: "hangup" })), ["invalid-callback@groups[0].callback.enabled"]);
    // Disabled: kept whatever the queue, never offered.
    assert.deepEqual(errorsOf(site({ enabled: false }, { kind: "hangup" })), []);
  });

  it("the contract schema takes the setting and refuses unknown fields", () => {
    const g = { id: "g", number: "1", name: "G", strategy: "sequential", members: [], ringCount: 1, checkAvailability: false, noAnswer: { kind: "wait-for-operator", maxWaitS: 60, then: { kind: "hangup" } } };
    assert.equal(validatePayload("group", { ...g, callback: { enabled: true, offerAfterS: 20, retries: 2, retryDelayS: 60 } }).ok, true);
    assert.equal(validatePayload("group", { ...g, callback: { enabled: true, later: 1 } }).ok, false);
    assert.equal(validatePayload("group", { ...g, callback: { offerAfterS: 20 } }).ok, false);
  });
});

describe("callback events in the console contract", () => {
  const ev = (type: string, data: unknown) => validatePayload("event", { bootId: "Xq3b9_k1", seq: 1, type, at: 1, data });
  it("requested, connected and missed are events with their fields; anything else in them is refused", () => {
    assert.equal(ev("callback.requested", { id: "cb-1", groupId: "sales", number: "+4930555123", place: 5 }).ok, true);
    assert.equal(ev("callback.connected", { id: "cb-1", groupId: "sales", number: "+4930555123", memberId: "anna", attempts: 1 }).ok, true);
    assert.equal(ev("callback.missed", { id: "cb-1", groupId: "sales", number: "+4930555123", attempts: 3 }).ok, true);
    assert.equal(ev("callback.missed", { id: "cb-1", groupId: "sales", number: "+4930555123", attempts: 3, password: "x" }).ok, false);
    assert.equal(ev("callback.requested", { groupId: "sales", number: "+4930555123" }).ok, false);
    assert.equal(ev("callback.lost", { id: "cb-1", groupId: "sales", number: "1" }).ok, false);
  });
});

describe("the number a caller is called back on", () => {
  const req = (from: string, pai?: string): SipRequest => {
    const r = parseDatagram(Buffer.from(["INVITE sip:600@192.0.2.1 SIP/2.0", "Via: SIP/2.0/UDP 192.0.2.50:5080;branch=z9hG4bKx", `From: ${from};tag=t`, "To: <sip:600@192.0.2.1>", "Call-ID: c", "CSeq: 1 INVITE", ...(pai !== undefined ? [`P-Asserted-Identity: ${pai}`] : []), "Content-Length: 0", "", ""].join("\r\n")));
    if (!r.ok || r.message.kind !== "request") throw new Error("test request");
    return r.message;
  };
  it("P-Asserted-Identity first (RFC 3325 §9.1), else the From user part; separators dropped; anything that is not a number refused", () => {
    assert.equal(rawCallerNumber(req("<sip:anonymous@192.0.2.50>", "<sip:+4930555123@192.0.2.50>")), "+4930555123");
    assert.equal(rawCallerNumber(req("<sip:030-555.123@192.0.2.50>")), "030555123");
    assert.equal(rawCallerNumber(req("<tel:+49(30)555123>")), "+4930555123");
    assert.equal(rawCallerNumber(req("<sip:anonymous@192.0.2.50>")), undefined);
    assert.equal(rawCallerNumber(req("<sip:%2B49%3B1@192.0.2.50>")), undefined, "escaped characters that are not digits");
    assert.equal(rawCallerNumber(req("<sip:1@192.0.2.50>")), undefined, "too short to call back");
    assert.equal(rawCallerNumber(req("<sip:123456789012345678901@192.0.2.50>")), undefined, "too long");
    assert.equal(rawCallerNumber(req("<sip:anonymous@192.0.2.50>", "garbage")), undefined);
  });
});
