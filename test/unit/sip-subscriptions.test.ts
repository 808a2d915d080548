// The RFC 6665 notifier mechanism (agent/sip/subscriptions.ts) apart from sockets: a fake
// transaction layer records each NOTIFY and lets the test answer it, a fake clock drives
// expiry. Covers the subscription's life (200 + immediate NOTIFY, one per change, coalescing
// while a NOTIFY is in flight, refresh, unsubscribe, expiry, fetch), what ends it from the
// subscriber's side (481, 408, timeout, transport error), limits, and every refusal.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { createLogger } from "../../agent/log.ts";
import { getHeader } from "../../agent/sip/message.ts";
import { SubscriptionManager, type EventPackage, type SubscriptionLimits } from "../../agent/sip/subscriptions.ts";
import type { ClientTransactionCallbacks, ServerTransaction } from "../../agent/sip/transaction.ts";
import { FakeClock, RecordingTx, subscribeRequest } from "./fakes.ts";
import type { Flow, SipRequest, SipResponse } from "../../agent/sip/types.ts";

const FLOW: Flow = { transport: "udp", remoteAddress: "10.0.1.5", remotePort: 6000, localAddress: "10.0.0.1", localPort: 5060 };

interface Sent {
  req: SipRequest;
  flow: Flow;
  cb: ClientTransactionCallbacks;
}

function setup(limits: Partial<SubscriptionLimits> = {}, state: { body: string } = { body: "<x/>" }) {
  const clock = new FakeClock();
  const sent: Sent[] = [];
  let branch = 0;
  const lim: SubscriptionLimits = { maxPerDevice: 3, rateMax: 100, rateWindowMs: 10_000, minExpires: 30, maxExpires: 3600, ...limits };
  const m = new SubscriptionManager({
    sendRequest: (req, flow, cb) => {
      sent.push({ req, flow, cb });
      return { ok: true, tx: {} as never };
    },
    createBranch: () => `z9hG4bK-n${++branch}`,
    advertise: (f) => `${f.localAddress}:${f.localPort}`,
    limits: lim,
    log: createLogger("silent"),
    clock,
  });
  const versions: number[] = [];
  const pkg: EventPackage = {
    event: "dialog",
    contentType: "application/dialog-info+xml",
    defaultExpires: 3600,
    resolve: (uri, host, subscriber) =>
      /^sip:201@/.test(uri) ? { resource: "u1", entity: `sip:201@${host}` }
      : /^sip:202@/.test(uri) ? { resource: "u2", entity: `sip:202@${host}` }
      // A resource that exists but is not this subscriber's to watch (the package decides).
      : /^sip:203@/.test(uri) ? { refuse: 403, reason: `not ${subscriber.deviceId}'s` }
      : undefined,
    render: (resource, entity, version) => {
      versions.push(version);
      if (state.body === "throw") throw new Error("render failed");
      return `${resource} ${entity} v${version} ${state.body}`;
    },
  };
  m.addPackage(pkg);
  let n = 0;
  const subscribe = (o: { uri?: string; lines?: string[]; omit?: string[]; body?: string; device?: string; toTag?: string; callId?: string; fromTag?: string; cseq?: number; flow?: Flow } = {}) => {
    const uri = o.uri ?? "sip:201@10.0.0.1";
    const defaults: Record<string, string> = {
      event: "Event: dialog",
      expires: "Expires: 600",
      contact: "Contact: <sip:phone@10.0.1.5:6000>",
      accept: "Accept: application/dialog-info+xml",
    };
    for (const k of o.omit ?? []) delete defaults[k];
    const k = ++n;
    const req = subscribeRequest({
      uri,
      n: k,
      from: `<sip:phone@10.0.0.1>${o.fromTag === "" ? "" : `;tag=${o.fromTag ?? "ft"}`}`,
      toTag: o.toTag,
      callId: o.callId ?? `sub${k}`,
      cseq: o.cseq,
      headers: ["Record-Route: <sip:10.0.0.9;lr>", ...Object.values(defaults), ...(o.lines ?? [])],
      body: o.body,
    });
    const tx = new RecordingTx();
    if (o.toTag !== undefined) {
      const handled = m.handleInDialog(tx as unknown as ServerTransaction, req, o.flow ?? FLOW);
      return { tx, req, handled };
    }
    m.handleSubscribe(tx as unknown as ServerTransaction, req, o.flow ?? FLOW, { deviceId: o.device ?? "p1" });
    return { tx, req, handled: true };
  };
  const answer = (s: Sent, status: number): void => s.cb.onFinal({ status, reason: "x" } as SipResponse, {} as never);
  return { m, clock, sent, versions, subscribe, answer };
}

const header = (r: SipRequest | SipResponse, n: string): string | undefined => getHeader(r, n);

describe("subscription lifecycle", () => {
  it("SUBSCRIBE → 200 with Expires and our tag, then a NOTIFY inside the dialog with the full state", () => {
    const w = setup();
    const { tx } = w.subscribe();
    const res = tx.last;
    assert.equal(res.status, 200);
    assert.equal(header(res, "expires"), "600");
    assert.equal(header(res, "contact"), "<sip:10.0.0.1:5060>");
    const ourTag = res.to.tag!;
    assert.ok(ourTag);
    assert.equal(w.sent.length, 1);
    const n = w.sent[0]!.req;
    assert.equal(n.method, "NOTIFY");
    assert.equal(n.uri, "sip:phone@10.0.1.5:6000", "Request-URI: the subscriber's Contact");
    assert.equal(header(n, "route"), "<sip:10.0.0.9;lr>", "the Record-Route set (RFC 3261 §12.1.1)");
    assert.equal(n.from.tag, ourTag);
    assert.equal(n.to.tag, "ft");
    assert.equal(n.callId, "sub1");
    assert.equal(header(n, "event"), "dialog");
    assert.equal(header(n, "subscription-state"), "active;expires=600");
    assert.equal(header(n, "content-type"), "application/dialog-info+xml");
    assert.equal(n.body.toString(), "u1 sip:201@10.0.0.1:5060 v0 <x/>");
    assert.deepEqual(w.sent[0]!.flow, FLOW, "over the subscriber's flow");
    assert.equal(w.m.count(), 1);
  });

  it("over TCP: our Contact says transport=tcp, NOTIFYs go over the subscriber's connection; a refresh from another flow moves them there", () => {
    const w = setup();
    const tcp: Flow = { ...FLOW, transport: "tcp", connectionId: 7 };
    const { tx } = w.subscribe({ flow: tcp });
    assert.equal(header(tx.last, "contact"), "<sip:10.0.0.1:5060;transport=tcp>");
    assert.deepEqual(w.sent[0]!.flow, tcp);
    assert.equal(header(w.sent[0]!.req, "contact"), "<sip:10.0.0.1:5060;transport=tcp>");
    w.answer(w.sent[0]!, 200);
    const tcp2: Flow = { ...tcp, remotePort: 6001, connectionId: 8 };
    w.subscribe({ toTag: tx.last.to.tag!, callId: "sub1", cseq: 2, flow: tcp2 });
    assert.deepEqual(w.sent[1]!.flow, tcp2);
  });

  it("one NOTIFY per change; changes while one is in flight coalesce into one NOTIFY after its response; CSeq and version count up", () => {
    const w = setup();
    w.subscribe();
    w.m.changed("dialog", "u1");
    w.m.changed("dialog", "u1");
    w.m.changed("dialog", "u2"); // nobody watches u2
    assert.equal(w.sent.length, 1, "the first NOTIFY is still unanswered");
    w.answer(w.sent[0]!, 200);
    assert.equal(w.sent.length, 2);
    w.answer(w.sent[1]!, 200);
    assert.equal(w.sent.length, 2);
    w.m.changed("dialog", "u1");
    assert.equal(w.sent.length, 3);
    assert.deepEqual(w.versions, [0, 1, 2]);
    const seqs = w.sent.map((s) => s.req.cseq.seq);
    assert.deepEqual(seqs, [seqs[0]!, seqs[0]! + 1, seqs[0]! + 2]);
  });

  it("refresh in the dialog: 200, new expiry, a NOTIFY; an out-of-order CSeq gets 500; Expires 0 ends it with a terminated NOTIFY", () => {
    const w = setup();
    const first = w.subscribe();
    const tag = first.tx.last.to.tag!;
    w.answer(w.sent[0]!, 200);
    w.clock.advance(100_000);
    const r = w.subscribe({ toTag: tag, callId: "sub1", cseq: 2, omit: ["expires"] });
    // No Expires in a refresh: the package default, shortened to maxExpires.
    assert.equal(r.tx.last.status, 200);
    assert.equal(header(r.tx.last, "expires"), "3600");
    assert.equal(header(w.sent[1]!.req, "subscription-state"), "active;expires=3600");
    w.answer(w.sent[1]!, 200);
    const stale = w.subscribe({ toTag: tag, callId: "sub1", cseq: 2 });
    assert.equal(stale.tx.last.status, 500);
    const end = w.subscribe({ toTag: tag, callId: "sub1", cseq: 3, omit: ["expires"], lines: ["Expires: 0"] });
    assert.equal(end.tx.last.status, 200);
    assert.equal(header(w.sent[2]!.req, "subscription-state"), "terminated;reason=timeout");
    assert.equal(w.m.count(), 0);
    const gone = w.subscribe({ toTag: tag, callId: "sub1", cseq: 4 });
    assert.equal(gone.handled, false, "the agent answers 481 for it");
  });

  it("expiry: a final NOTIFY terminated;reason=timeout, then nothing", () => {
    const w = setup();
    w.subscribe({ omit: ["expires"], lines: ["Expires: 60"] });
    w.answer(w.sent[0]!, 200);
    w.clock.advance(59_999);
    assert.equal(w.m.count(), 1);
    w.clock.advance(1);
    assert.equal(w.m.count(), 0);
    assert.equal(header(w.sent[1]!.req, "subscription-state"), "terminated;reason=timeout");
    w.m.changed("dialog", "u1");
    assert.equal(w.sent.length, 2);
  });

  it("Expires 0 on a new SUBSCRIBE is a fetch: 200, one terminated NOTIFY with the state, nothing kept", () => {
    const w = setup();
    const { tx } = w.subscribe({ omit: ["expires"], lines: ["Expires: 0"] });
    assert.equal(tx.last.status, 200);
    assert.equal(w.sent.length, 1);
    assert.equal(header(w.sent[0]!.req, "subscription-state"), "terminated;reason=timeout");
    assert.equal(w.m.count(), 0);
  });

  for (const [what, end] of [
    ["481", (w: ReturnType<typeof setup>) => w.answer(w.sent.at(-1)!, 481)],
    ["408", (w: ReturnType<typeof setup>) => w.answer(w.sent.at(-1)!, 408)],
    ["a timeout (Timer F)", (w: ReturnType<typeof setup>) => w.sent.at(-1)!.cb.onTimeout({ status: 408 } as SipResponse, {} as never, "F")],
    ["a transport error", (w: ReturnType<typeof setup>) => w.sent.at(-1)!.cb.onTransportError({} as never)],
  ] as const) {
    it(`a NOTIFY answered with ${what} ends the subscription without another NOTIFY`, () => {
      const w = setup();
      w.subscribe();
      w.m.changed("dialog", "u1"); // queued behind the first
      end(w);
      assert.equal(w.m.count(), 0);
      assert.equal(w.sent.length, 1);
      w.m.changed("dialog", "u1");
      assert.equal(w.sent.length, 1);
    });
  }

  it("a NOTIFY answered with another error keeps the subscription", () => {
    const w = setup();
    w.subscribe();
    w.answer(w.sent[0]!, 500);
    assert.equal(w.m.count(), 1);
  });

  it("a package that fails to render ends the subscription; the agent keeps going", () => {
    const state = { body: "throw" };
    const w = setup({}, state);
    const { tx } = w.subscribe();
    assert.equal(tx.last.status, 200);
    assert.equal(w.sent.length, 0);
    assert.equal(w.m.count(), 0);
  });

  it("stop() forgets every subscription and its timer", () => {
    const w = setup();
    w.subscribe();
    w.m.stop();
    assert.equal(w.m.count(), 0);
    w.clock.advance(10_000_000);
    assert.equal(w.sent.length, 1);
  });
});

describe("a device that goes away", () => {
  it("endDevice ends every subscription of that device with terminated;reason=rejected and frees its count; others stay", () => {
    const w = setup();
    w.subscribe({ device: "p1" });
    w.subscribe({ device: "p1", uri: "sip:202@10.0.0.1" });
    w.subscribe({ device: "p2" });
    for (const s of w.sent) w.answer(s, 200);
    const before = w.sent.length;
    assert.equal(w.m.endDevice("p1"), 2);
    const finals = w.sent.slice(before);
    assert.equal(finals.length, 2);
    for (const f of finals) assert.equal(header(f.req, "subscription-state"), "terminated;reason=rejected");
    assert.deepEqual(w.m.list().map((s) => s.deviceId), ["p2"]);
    assert.equal(w.m.endDevice("p1"), 0, "nothing left to end");
    assert.equal(w.m.endDevice("nobody"), 0);
    w.m.changed("dialog", "u1");
    const after = w.sent.slice(before + 2);
    assert.equal(after.length, 1, "u1 changed: only p2's subscription is notified");
    assert.equal(after[0]!.req.callId, "sub3");
    // Its per-device count is free again: it may subscribe up to the cap anew.
    for (let i = 0; i < 3; i++) assert.equal(w.subscribe({ device: "p1" }).tx.last.status, 200);
  });
});

describe("refusals change nothing", () => {
  const cases: Array<[string, Parameters<ReturnType<typeof setup>["subscribe"]>[0], number, RegExp?]> = [
    ["no Event", { omit: ["event"] }, 400, /no Event/],
    ["unknown package", { omit: ["event"], lines: ["Event: presence"] }, 489],
    ["package names are case-sensitive", { omit: ["event"], lines: ["Event: Dialog"] }, 489],
    ["malformed Event", { omit: ["event"], lines: ["Event: dia log"] }, 400, /malformed Event/],
    ["malformed Event id", { omit: ["event"], lines: ["Event: dialog;id=a b"] }, 400],
    ["malformed Expires", { omit: ["expires"], lines: ["Expires: 1h"] }, 400, /Expires/],
    ["two Expires", { omit: ["expires"], lines: ["Expires: 60", "Expires: 70"] }, 400],
    ["Expires too long a number", { omit: ["expires"], lines: ["Expires: 123456789012"] }, 400],
    ["too brief", { omit: ["expires"], lines: ["Expires: 10"] }, 423],
    ["a body (event filters are not supported)", { lines: ["Content-Type: application/xml"], body: "<filter/>" }, 415],
    ["Accept without the package's type", { omit: ["accept"], lines: ["Accept: application/pidf+xml"] }, 406],
    ["no Contact", { omit: ["contact"] }, 400, /Contact/],
    ["two Contacts", { omit: ["contact"], lines: ["Contact: <sip:a@10.0.1.5>, <sip:b@10.0.1.5>"] }, 400],
    ["a Contact that is not a SIP URI", { omit: ["contact"], lines: ["Contact: <mailto:a@b>"] }, 400],
    ["unknown resource", { uri: "sip:999@10.0.0.1" }, 404],
    ["a resource the package refuses this subscriber", { uri: "sip:203@10.0.0.1" }, 403, /^Forbidden \(not p1's\)$/],
    ["no From tag", { fromTag: "" }, 400],
  ];
  for (const [what, o, status, reason] of cases) {
    it(`${what} → ${status}`, () => {
      const w = setup();
      const { tx } = w.subscribe(o);
      assert.equal(tx.last.status, status, `${tx.last.status} ${tx.last.reason}`);
      if (reason) assert.match(tx.last.reason, reason);
      if (status === 489 || (status === 400 && /Event/.test(tx.last.reason))) assert.equal(header(tx.last, "allow-events"), "dialog");
      if (status === 423) assert.equal(header(tx.last, "min-expires"), "30");
      if (status === 406) assert.equal(header(tx.last, "accept"), "application/dialog-info+xml");
      assert.equal(w.m.count(), 0);
      assert.equal(w.sent.length, 0);
    });
  }

  it("Accept with a wildcard or among others is fine; a long Expires is shortened to maxExpires", () => {
    const w = setup();
    assert.equal(w.subscribe({ omit: ["accept"], lines: ["Accept: application/pidf+xml, application/*"] }).tx.last.status, 200);
    const long = w.subscribe({ omit: ["expires"], lines: ["Expires: 86400"] }).tx.last;
    assert.equal(header(long, "expires"), "3600");
  });

  it("per-device cap: 503 with a reason, no state; other devices unaffected; room again once one ends", () => {
    const w = setup({ maxPerDevice: 2 });
    const a = w.subscribe({ callId: "a" });
    w.subscribe({ callId: "b" });
    const over = w.subscribe({ callId: "c" });
    assert.equal(over.tx.last.status, 503);
    assert.match(over.tx.last.reason, /too many subscriptions/);
    assert.equal(w.m.count(), 2);
    assert.equal(w.subscribe({ callId: "d", device: "p2" }).tx.last.status, 200);
    w.answer(w.sent[0]!, 200);
    w.subscribe({ toTag: a.tx.last.to.tag!, callId: "a", cseq: 2, omit: ["expires"], lines: ["Expires: 0"] });
    assert.equal(w.subscribe({ callId: "e" }).tx.last.status, 200);
  });

  it("per-device rate limit: over rateMax in the window → 503 with Retry-After; refreshes count too; the next window is open", () => {
    const w = setup({ rateMax: 3, rateWindowMs: 10_000, maxPerDevice: 10 });
    const first = w.subscribe({ callId: "a" });
    w.subscribe({ callId: "b", omit: ["event"], lines: ["Event: nope"] });
    w.answer(w.sent[0]!, 200);
    assert.equal(w.subscribe({ toTag: first.tx.last.to.tag!, callId: "a", cseq: 2 }).tx.last.status, 200);
    const over = w.subscribe({ callId: "c" });
    assert.equal(over.tx.last.status, 503);
    assert.match(over.tx.last.reason, /rate limit/);
    assert.equal(header(over.tx.last, "retry-after"), "10");
    assert.equal(w.m.count(), 1);
    assert.equal(w.subscribe({ callId: "d", device: "p2" }).tx.last.status, 200, "per device");
    w.clock.advance(10_000);
    assert.equal(w.subscribe({ callId: "e" }).tx.last.status, 200);
  });

  it("a refresh naming another event than its subscription's gets 489", () => {
    const w = setup();
    const { tx } = w.subscribe({ omit: ["event"], lines: ["Event: dialog;id=k1"] });
    w.answer(w.sent[0]!, 200);
    assert.equal(header(w.sent[0]!.req, "event"), "dialog;id=k1", "the id is echoed (RFC 6665 §8.2.1)");
    const r = w.subscribe({ toTag: tx.last.to.tag!, callId: "sub1", cseq: 2 });
    assert.equal(r.tx.last.status, 489);
    assert.equal(w.m.count(), 1);
  });
});
