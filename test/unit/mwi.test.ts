// Message waiting (agent/presence/mwi.ts): the RFC 3842 simple-message-summary body, how a
// user's lamp combines their own and their groups' mailboxes, who may subscribe to what, and
// the package on the real subscription mechanism (agent/sip/subscriptions.ts) with a small
// mailbox store that emits voicemail.changed: initial NOTIFY, one per change, a group mailbox
// lighting every member's lamp, expiry, and hostile SUBSCRIBEs (wrong account, bad Expires,
// too many, unknown Accept, unknown event, a body).
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { EventBus } from "../../agent/bus.ts";
import { createLogger } from "../../agent/log.ts";
import { combineCounts, MwiNotifier, NO_MAILBOXES, renderMessageSummary, resolveMailbox } from "../../agent/presence/mwi.ts";
import { indexSite, parseSite, type SiteIndex } from "../../agent/routing/model.ts";
import { mailboxesOfUser } from "../../agent/voicemail/access.ts";
import { getHeader } from "../../agent/sip/message.ts";
import { SubscriptionManager, type SubscriptionLimits } from "../../agent/sip/subscriptions.ts";
import type { ClientTransactionCallbacks, ServerTransaction } from "../../agent/sip/transaction.ts";
import { FakeClock, RecordingTx, subscribeRequest } from "./fakes.ts";
import type { Flow, SipRequest, SipResponse } from "../../agent/sip/types.ts";
import type { MailboxCounts, MailboxOwner, VoicemailCounts } from "../../agent/voicemail/types.ts";

const HOST = "10.0.0.1:5060";
const FLOW: Flow = { transport: "udp", remoteAddress: "10.0.1.5", remotePort: 6000, localAddress: "10.0.0.1", localPort: 5060 };

function site(): SiteIndex {
  const r = parseSite({
    users: [
      { id: "anna", extension: "1001", name: "A", availability: "available", callLimit: 0 },
      { id: "ben", extension: "1002", name: "B", availability: "available", callLimit: 0 },
      { id: "carla", extension: "1003", name: "C", availability: "available", callLimit: 0 },
    ],
    devices: [
      { id: "desk-anna", ownerId: "anna", kind: "physical" },
      { id: "desk-ben", ownerId: "ben", kind: "physical" },
    ],
    groups: [
      { id: "sales", number: "601", name: "Sales", strategy: "simultaneous", members: ["anna", "ben"], ringCount: 2, checkAvailability: false, noAnswer: { kind: "hangup" } },
      { id: "support", number: "602", name: "Support", strategy: "simultaneous", members: ["anna"], ringCount: 2, checkAvailability: false, noAnswer: { kind: "hangup" } },
      { id: "hotline", number: "603", name: "Hotline", strategy: "simultaneous", members: ["carla"], ringCount: 2, checkAvailability: false, noAnswer: { kind: "hangup" } },
    ],
  });
  if (!r.ok) throw new Error(`fixture: ${JSON.stringify(r.errors)}`);
  return indexSite(r.site);
}

/** Parses an application/simple-message-summary body the way a phone reads it (RFC 3842 §5). */
function parseSummary(body: string): { waiting: string; account: string | undefined; voice: string | undefined; lines: string[] } {
  assert.ok(body.endsWith("\r\n"), "every line ends in CRLF");
  const lines = body.slice(0, -2).split("\r\n");
  for (const l of lines) assert.match(l, /^[A-Za-z-]+: \S.*$/, `a header-like line: ${JSON.stringify(l)}`);
  const get = (name: string): string | undefined => lines.find((l) => l.toLowerCase().startsWith(`${name.toLowerCase()}:`))?.replace(/^[^:]+:\s*/, "");
  const waiting = get("Messages-Waiting");
  assert.ok(waiting === "yes" || waiting === "no", `Messages-Waiting: ${waiting}`);
  assert.equal(lines[0]!.split(":")[0], "Messages-Waiting", "the status line comes first");
  return { waiting, account: get("Message-Account"), voice: get("Voice-Message"), lines };
}

/** A small real mailbox store: counts per mailbox, and voicemail.changed on every change (the vm contract). */
class Mailboxes implements VoicemailCounts {
  private readonly m = new Map<string, MailboxCounts>();
  constructor(private readonly bus: EventBus) {}
  enable(owner: MailboxOwner): void {
    this.m.set(`${owner.kind} ${owner.id}`, { newMessages: 0, oldMessages: 0 });
  }
  set(owner: MailboxOwner, c: MailboxCounts): void {
    const key = `${owner.kind} ${owner.id}`;
    if (!this.m.has(key)) throw new Error(`no mailbox ${key}`);
    this.m.set(key, { ...c });
    this.bus.emit("voicemail.changed", { mailbox: owner, at: Date.now(), ...c });
  }
  counts(owner: MailboxOwner): MailboxCounts | undefined {
    const c = this.m.get(`${owner.kind} ${owner.id}`);
    return c === undefined ? undefined : { ...c };
  }
}

describe("renderMessageSummary (RFC 3842 §5)", () => {
  it("new messages: Messages-Waiting yes, the account, Voice-Message new/old with zero urgent counts", () => {
    const s = parseSummary(renderMessageSummary({ account: "sip:1001@10.0.0.1:5060", counts: { newMessages: 2, oldMessages: 8 } }));
    assert.deepEqual(s, { waiting: "yes", account: "sip:1001@10.0.0.1:5060", voice: "2/8 (0/0)", lines: ["Messages-Waiting: yes", "Message-Account: sip:1001@10.0.0.1:5060", "Voice-Message: 2/8 (0/0)"] });
  });
  it("only heard messages, or none: Messages-Waiting no", () => {
    assert.equal(parseSummary(renderMessageSummary({ account: "sip:1@h", counts: { newMessages: 0, oldMessages: 3 } })).waiting, "no");
    assert.equal(parseSummary(renderMessageSummary({ account: "sip:1@h", counts: { newMessages: 0, oldMessages: 0 } })).voice, "0/0 (0/0)");
  });
  it("nonsense counts from a store are 0; a line break in the account cannot start a new line", () => {
    const s = parseSummary(renderMessageSummary({ account: "sip:1@h\r\nMessages-Waiting: yes", counts: { newMessages: -3, oldMessages: Number.NaN } }));
    assert.equal(s.waiting, "no");
    assert.equal(s.voice, "0/0 (0/0)");
    assert.equal(s.lines.length, 3);
  });
});

describe("combineCounts: one lamp for the user's own and their groups' mailboxes", () => {
  it("sums new and old over the mailboxes; missing ones count as empty", () => {
    assert.deepEqual(combineCounts([{ newMessages: 1, oldMessages: 2 }, undefined, { newMessages: 0, oldMessages: 5 }, { newMessages: 3, oldMessages: 0 }]), { newMessages: 4, oldMessages: 7 });
    assert.deepEqual(combineCounts([]), { newMessages: 0, oldMessages: 0 });
  });
  it("hostile values (negative, fractional, NaN, Infinity, strings, null) count as 0; sums saturate at 999999", () => {
    const junk = [{ newMessages: -1, oldMessages: 1.5 }, { newMessages: Number.POSITIVE_INFINITY, oldMessages: Number.NaN }, { newMessages: "7", oldMessages: null }, null, 5] as unknown as MailboxCounts[];
    assert.deepEqual(combineCounts(junk), { newMessages: 0, oldMessages: 0 });
    assert.deepEqual(combineCounts([{ newMessages: 900_000, oldMessages: 1 }, { newMessages: 900_000, oldMessages: 1 }]), { newMessages: 999_999, oldMessages: 2 });
  });
  it("a user's mailboxes: their own, then each group they are a member of", () => {
    const index = site();
    assert.deepEqual(mailboxesOfUser("anna", index), [{ kind: "user", id: "anna" }, { kind: "group", id: "sales" }, { kind: "group", id: "support" }]);
    assert.deepEqual(mailboxesOfUser("ben", index), [{ kind: "user", id: "ben" }, { kind: "group", id: "sales" }]);
  });
});

describe("resolveMailbox: who may subscribe to which mailbox", () => {
  const index = site();
  const anna = { deviceId: "desk-anna", username: "anna-desk", userId: "anna" };
  const opts = { voicemailCode: "*97", deviceOwner: (u: string) => ({ "anna-desk": "anna", "anna-soft": "anna", "ben-desk": "ben" })[u] };
  const own = { ok: true, resource: "u anna", account: "1001" };
  it("the owner's own account: extension, user id, the phone's own SIP username, another of the owner's devices, the voicemail code", () => {
    for (const uri of ["sip:1001@10.0.0.1", "sip:anna@10.0.0.1;transport=udp", "sip:anna-desk@10.0.0.1", "sip:anna-soft@10.0.0.1", "sip:*97@10.0.0.1", "sips:%2A97@10.0.0.1"]) assert.deepEqual(resolveMailbox(uri, anna, index, opts), own, uri);
  });
  it("a group mailbox alone, for its members only", () => {
    assert.deepEqual(resolveMailbox("sip:601@h", anna, index, opts), { ok: true, resource: "g sales anna", account: "601" });
    assert.deepEqual(resolveMailbox("sip:support@h", anna, index, opts), { ok: true, resource: "g support anna", account: "602" });
    const r = resolveMailbox("sip:603@h", anna, index, opts);
    assert.equal(r.ok ? 0 : r.status, 403);
  });
  it("someone else's mailbox: 403 (another user by extension or id, another user's device)", () => {
    for (const uri of ["sip:1002@h", "sip:ben@h", "sip:ben-desk@h", "sip:1003@h"]) {
      const r = resolveMailbox(uri, anna, index, opts);
      assert.ok(!r.ok && r.status === 403, uri);
    }
  });
  it("nothing there, not a SIP URI, or a device without an owner: 404", () => {
    for (const uri of ["sip:9999@h", "sip:h", "tel:1001", "sip:%zz@h", "garbage", ""]) {
      const r = resolveMailbox(uri, anna, index, opts);
      assert.ok(!r.ok && r.status === 404, uri);
    }
    const ownerless = { deviceId: "x", username: "x" };
    for (const uri of ["sip:*97@h", "sip:x@h"]) {
      const r = resolveMailbox(uri, ownerless, index, opts);
      assert.ok(!r.ok && r.status === 404, uri);
    }
    const r = resolveMailbox("sip:1001@h", ownerless, index, opts);
    assert.ok(!r.ok && r.status === 403, "an ownerless device may not watch a user's mailbox");
  });
});

// --- the package on the real subscription mechanism ---------------------------------------------

interface Sent {
  req: SipRequest;
  cb: ClientTransactionCallbacks;
}

const DEVICES: Record<string, { deviceId: string; username: string; userId: string }> = {
  anna: { deviceId: "desk-anna", username: "anna-desk", userId: "anna" },
  ben: { deviceId: "desk-ben", username: "ben-desk", userId: "ben" },
};

function world(limits: Partial<SubscriptionLimits> = {}, store?: (bus: EventBus) => VoicemailCounts) {
  const bus = new EventBus();
  const clock = new FakeClock();
  const sent: Sent[] = [];
  let branch = 0;
  const subs = new SubscriptionManager({
    sendRequest: (req, _flow, cb) => {
      sent.push({ req, cb });
      // Every NOTIFY is answered at once, as a phone does.
      queueMicrotask(() => cb.onFinal({ status: 200, reason: "OK" } as SipResponse, {} as never));
      return { ok: true, tx: {} as never };
    },
    createBranch: () => `z9hG4bK-n${++branch}`,
    advertise: () => HOST,
    limits: { maxPerDevice: 3, rateMax: 100, rateWindowMs: 10_000, minExpires: 30, maxExpires: 3600, ...limits },
    log: createLogger("silent"),
    clock,
  });
  const mailboxes = new Mailboxes(bus);
  const current = { index: site() };
  const mwi = new MwiNotifier({
    bus,
    site: () => current.index,
    subscriptions: subs,
    counts: store ? store(bus) : mailboxes,
    voicemailCode: () => "*97",
    deviceOwner: (u) => Object.values(DEVICES).find((d) => d.username === u)?.userId,
  });
  mwi.start();
  let n = 0;
  const subscribe = (who: keyof typeof DEVICES, o: { uri?: string; lines?: string[]; omit?: string[]; body?: string; toTag?: string; fromTag?: string; callId?: string; cseq?: number } = {}) => {
    const uri = o.uri ?? "sip:1001@10.0.0.1";
    const defaults: Record<string, string> = {
      event: "Event: message-summary",
      expires: "Expires: 600",
      contact: "Contact: <sip:phone@10.0.1.5:6000>",
      accept: "Accept: application/simple-message-summary",
    };
    for (const k of o.omit ?? []) delete defaults[k];
    const k = ++n;
    const req = subscribeRequest({
      uri,
      n: k,
      from: `<sip:${DEVICES[who]!.username}@10.0.0.1>;tag=${o.fromTag ?? `ft${k}`}`,
      toTag: o.toTag,
      callId: o.callId ?? `mwi${k}`,
      cseq: o.cseq,
      headers: [...Object.values(defaults), ...(o.lines ?? [])],
      body: o.body,
    });
    const tx = new RecordingTx();
    if (o.toTag !== undefined) subs.handleInDialog(tx as unknown as ServerTransaction, req, FLOW);
    else subs.handleSubscribe(tx as unknown as ServerTransaction, req, FLOW, DEVICES[who]!);
    return tx;
  };
  const notifiesOf = (callId: string) => sent.filter((s) => s.req.callId === callId).map((s) => ({ state: getHeader(s.req, "subscription-state"), event: getHeader(s.req, "event"), type: getHeader(s.req, "content-type"), ...parseSummary(s.req.body.toString()) }));
  const settle = () => new Promise((r) => setImmediate(r));
  return { bus, clock, sent, subs, mwi, mailboxes, subscribe, notifiesOf, settle, current };
}

describe("MwiNotifier on the subscription mechanism", () => {
  it("SUBSCRIBE to the own account → 200, then a NOTIFY with the summary; a changed count → a NOTIFY with the new counts; all heard → lamp off", async () => {
    const w = world();
    w.mailboxes.enable({ kind: "user", id: "anna" });
    const tx = w.subscribe("anna");
    assert.equal(tx.last.status, 200);
    assert.equal(getHeader(tx.last, "expires"), "600");
    let ns = w.notifiesOf("mwi1");
    assert.equal(ns.length, 1);
    assert.deepEqual({ state: ns[0]!.state, event: ns[0]!.event, type: ns[0]!.type, waiting: ns[0]!.waiting, account: ns[0]!.account, voice: ns[0]!.voice }, { state: "active;expires=600", event: "message-summary", type: "application/simple-message-summary", waiting: "no", account: `sip:1001@${HOST}`, voice: "0/0 (0/0)" });

    w.mailboxes.set({ kind: "user", id: "anna" }, { newMessages: 1, oldMessages: 0 });
    assert.equal(w.notifiesOf("mwi1").length, 1, "nothing is sent from inside the publisher's call");
    await w.settle();
    ns = w.notifiesOf("mwi1");
    assert.equal(ns.length, 2);
    assert.deepEqual([ns[1]!.waiting, ns[1]!.voice], ["yes", "1/0 (0/0)"]);

    // A burst of changes: one NOTIFY with the state at the end.
    w.mailboxes.set({ kind: "user", id: "anna" }, { newMessages: 2, oldMessages: 0 });
    w.mailboxes.set({ kind: "user", id: "anna" }, { newMessages: 0, oldMessages: 2 });
    await w.settle();
    await w.settle();
    ns = w.notifiesOf("mwi1");
    assert.equal(ns.length, 3);
    assert.deepEqual([ns[2]!.waiting, ns[2]!.voice], ["no", "0/2 (0/0)"]);
  });

  it("a group mailbox lights every member's lamp, added to each member's own counts; a non-member's lamp stays as it was", async () => {
    const w = world();
    for (const o of [{ kind: "user", id: "anna" }, { kind: "user", id: "ben" }, { kind: "group", id: "sales" }, { kind: "group", id: "hotline" }] as const) w.mailboxes.enable(o);
    w.mailboxes.set({ kind: "user", id: "ben" }, { newMessages: 0, oldMessages: 4 });
    w.subscribe("anna"); // mwi1
    w.subscribe("ben", { uri: "sip:1002@10.0.0.1" }); // mwi2
    w.subscribe("anna", { uri: "sip:601@10.0.0.1" }); // mwi3: the group mailbox alone
    await w.settle();
    const before = w.sent.length;
    w.mailboxes.set({ kind: "group", id: "sales" }, { newMessages: 1, oldMessages: 1 });
    await w.settle();
    assert.equal(w.sent.length, before + 3);
    assert.deepEqual([w.notifiesOf("mwi1").at(-1)!.waiting, w.notifiesOf("mwi1").at(-1)!.voice], ["yes", "1/1 (0/0)"]);
    assert.deepEqual([w.notifiesOf("mwi2").at(-1)!.waiting, w.notifiesOf("mwi2").at(-1)!.voice], ["yes", "1/5 (0/0)"]);
    assert.deepEqual([w.notifiesOf("mwi3").at(-1)!.voice, w.notifiesOf("mwi3").at(-1)!.account], ["1/1 (0/0)", `sip:601@${HOST}`]);
    // Another group's mailbox (anna and ben are not members) changes nobody's lamp here.
    w.mailboxes.set({ kind: "group", id: "hotline" }, { newMessages: 5, oldMessages: 0 });
    await w.settle();
    assert.equal(w.sent.length, before + 3);
  });

  it("subscribing to the voicemail code is the own mailbox; a fetch (Expires 0) gets one terminated NOTIFY", () => {
    const w = world();
    w.mailboxes.enable({ kind: "user", id: "anna" });
    w.mailboxes.set({ kind: "user", id: "anna" }, { newMessages: 3, oldMessages: 1 });
    assert.equal(w.subscribe("anna", { uri: "sip:*97@10.0.0.1" }).last.status, 200);
    assert.equal(w.notifiesOf("mwi1")[0]!.account, `sip:1001@${HOST}`);
    assert.equal(w.subscribe("anna", { lines: [], omit: ["expires"], uri: "sip:anna@10.0.0.1" }).last.status, 200);
    const fetch = w.subscribe("anna", { omit: ["expires"], lines: ["Expires: 0"] });
    assert.equal(fetch.last.status, 200);
    const n = w.notifiesOf("mwi3");
    assert.deepEqual([n.length, n[0]!.state, n[0]!.voice], [1, "terminated;reason=timeout", "3/1 (0/0)"]);
  });

  it("expiry: a final NOTIFY with Subscription-State terminated and the counts; refresh keeps it alive", () => {
    const w = world();
    const tx = w.subscribe("anna", { omit: ["expires"], lines: ["Expires: 60"] });
    const tag = tx.last.to.tag!;
    w.clock.advance(50_000);
    assert.equal(w.subscribe("anna", { toTag: tag, fromTag: "ft1", callId: "mwi1", cseq: 2, omit: ["expires"], lines: ["Expires: 60"] }).last.status, 200);
    w.clock.advance(50_000);
    assert.equal(w.subs.count(), 1, "refreshed: still there");
    w.clock.advance(11_000);
    assert.equal(w.subs.count(), 0);
    const ns = w.notifiesOf("mwi1");
    assert.equal(ns.at(-1)!.state, "terminated;reason=timeout");
    assert.equal(ns.at(-1)!.waiting, "no");
  });

  it("a failing store shows an empty mailbox and keeps the subscription", () => {
    const w = world({}, () => ({ counts: () => { throw new Error("disk gone"); } }));
    assert.equal(w.subscribe("anna").last.status, 200);
    assert.equal(w.notifiesOf("mwi1")[0]!.voice, "0/0 (0/0)");
    assert.equal(w.subs.count(), 1);
  });

  it("without a mailbox store (NO_MAILBOXES) every lamp is off", () => {
    const w = world({}, () => NO_MAILBOXES);
    assert.equal(w.subscribe("ben", { uri: "sip:1002@10.0.0.1" }).last.status, 200);
    assert.equal(w.notifiesOf("mwi1")[0]!.waiting, "no");
  });

  it("a site change re-sends every lamp (a membership may have changed); stop() ends the listening", async () => {
    const w = world();
    w.subscribe("anna");
    w.bus.emit("site.applied", { version: 2, source: "console" });
    await w.settle();
    assert.equal(w.notifiesOf("mwi1").length, 2);
    w.mwi.stop();
    w.bus.emit("site.applied", { version: 3, source: "console" });
    w.bus.emit("voicemail.changed", { mailbox: { kind: "user", id: "anna" }, at: 0, newMessages: 1, oldMessages: 0 });
    await w.settle();
    assert.equal(w.notifiesOf("mwi1").length, 2);
  });

  it("a member taken out of a group: their watch of its mailbox ends (terminated;reason=rejected) and their lamp leaves the group's counts out", async () => {
    const w = world();
    for (const o of [{ kind: "user", id: "ben" }, { kind: "group", id: "sales" }] as const) w.mailboxes.enable(o);
    w.mailboxes.set({ kind: "group", id: "sales" }, { newMessages: 2, oldMessages: 0 });
    w.subscribe("ben", { uri: "sip:1002@10.0.0.1" }); // mwi1: ben's lamp
    w.subscribe("ben", { uri: "sip:601@10.0.0.1" }); // mwi2: the sales mailbox alone
    w.subscribe("anna", { uri: "sip:601@10.0.0.1" }); // mwi3: anna stays a member
    assert.equal(w.notifiesOf("mwi1")[0]!.voice, "2/0 (0/0)");
    const r = parseSite({
      users: [
        { id: "anna", extension: "1001", name: "A", availability: "available", callLimit: 0 },
        { id: "ben", extension: "1002", name: "B", availability: "available", callLimit: 0 },
      ],
      devices: [],
      groups: [{ id: "sales", number: "601", name: "Sales", strategy: "simultaneous", members: ["anna"], ringCount: 2, checkAvailability: false, noAnswer: { kind: "hangup" } }],
    });
    assert.ok(r.ok);
    w.current.index = indexSite(r.site);
    w.bus.emit("site.applied", { version: 2, source: "console" });
    const ended = w.notifiesOf("mwi2").at(-1)!;
    assert.deepEqual([ended.state, ended.waiting], ["terminated;reason=rejected", "no"], "authorisation withdrawn: no counts leak in the final NOTIFY");
    await w.settle();
    assert.equal(w.notifiesOf("mwi1").at(-1)!.voice, "0/0 (0/0)", "ben's lamp no longer shows the group");
    assert.equal(w.notifiesOf("mwi3").at(-1)!.voice, "2/0 (0/0)", "anna still watches it");
    assert.equal(w.subs.count(), 2);
  });

  it("a malformed voicemail.changed (no such group, nonsense owner) notifies nobody and throws nothing", async () => {
    const w = world();
    w.subscribe("anna");
    for (const mailbox of [{ kind: "group", id: "nope" }, { kind: "robot", id: "anna" }, null, { kind: "user" }] as unknown as MailboxOwner[]) w.bus.emit("voicemail.changed", { mailbox, at: 0, newMessages: 1, oldMessages: 0 });
    await w.settle();
    assert.equal(w.notifiesOf("mwi1").length, 1);
  });
});

describe("hostile SUBSCRIBEs for message-summary: refused, nothing created", () => {
  const refused = (w: ReturnType<typeof world>, tx: RecordingTx, status: number): void => {
    assert.equal(tx.last.status, status);
    assert.equal(w.subs.count(), 0);
    assert.equal(w.sent.length, 0, "no NOTIFY");
  };
  it("someone else's mailbox: 403 (their extension, their user id, their phone's username, a group not one's own)", () => {
    const w = world();
    for (const uri of ["sip:1002@10.0.0.1", "sip:ben@10.0.0.1", "sip:ben-desk@10.0.0.1", "sip:603@10.0.0.1"]) {
      const tx = w.subscribe("anna", { uri });
      refused(w, tx, 403);
      assert.match(tx.last.reason, /Forbidden/);
    }
  });
  it("an account nobody has: 404", () => {
    const w = world();
    refused(w, w.subscribe("anna", { uri: "sip:7777@10.0.0.1" }), 404);
  });
  it("bad Expires: malformed → 400, too brief → 423 with Min-Expires, two values → 400", () => {
    const w = world();
    for (const e of ["Expires: soon", "Expires: -5", "Expires: 99999999999"]) refused(w, w.subscribe("anna", { omit: ["expires"], lines: [e] }), 400);
    const brief = w.subscribe("anna", { omit: ["expires"], lines: ["Expires: 5"] });
    refused(w, brief, 423);
    assert.equal(getHeader(brief.last, "min-expires"), "30");
    refused(w, w.subscribe("anna", { lines: ["Expires: 600"] }), 400);
  });
  it("too long: granted for the longest allowed time", () => {
    const w = world();
    const tx = w.subscribe("anna", { omit: ["expires"], lines: ["Expires: 999999"] });
    assert.equal(tx.last.status, 200);
    assert.equal(getHeader(tx.last, "expires"), "3600");
  });
  it("an Accept that rules out application/simple-message-summary: 406 naming the type", () => {
    const w = world();
    const tx = w.subscribe("anna", { omit: ["accept"], lines: ["Accept: application/dialog-info+xml"] });
    refused(w, tx, 406);
    assert.equal(getHeader(tx.last, "accept"), "application/simple-message-summary");
    assert.equal(w.subscribe("anna", { omit: ["accept"], lines: ["Accept: application/*"] }).last.status, 200, "a wildcard is fine");
  });
  it("an unknown event package: 489 with Allow-Events naming message-summary", () => {
    const w = world();
    const tx = w.subscribe("anna", { omit: ["event"], lines: ["Event: message-summaryx"] });
    refused(w, tx, 489);
    assert.match(getHeader(tx.last, "allow-events") ?? "", /\bmessage-summary\b/);
  });
  it("a body (an event filter we do not understand): 415", () => {
    const w = world();
    refused(w, w.subscribe("anna", { body: "filter" }), 415);
  });
  it("too many subscriptions from one device: 503 with Retry-After", () => {
    const w = world({ maxPerDevice: 2 });
    assert.equal(w.subscribe("anna").last.status, 200);
    assert.equal(w.subscribe("anna", { uri: "sip:601@10.0.0.1" }).last.status, 200);
    const sent = w.sent.length;
    const tx = w.subscribe("anna", { uri: "sip:602@10.0.0.1" });
    assert.equal(tx.last.status, 503);
    assert.ok(getHeader(tx.last, "retry-after"));
    assert.equal(w.subs.count(), 2);
    assert.equal(w.sent.length, sent);
  });
  it("over the SUBSCRIBE rate: 503 with Retry-After", () => {
    const w = world({ rateMax: 2 });
    w.subscribe("ben", { uri: "sip:1002@h" });
    w.subscribe("ben", { uri: "sip:1002@h" });
    const tx = w.subscribe("ben", { uri: "sip:1002@h" });
    assert.equal(tx.last.status, 503);
    assert.match(tx.last.reason, /rate/);
  });
});
