// sip/originate.ts: the agent's own UAC legs against a fake transaction layer — what goes on
// the wire (INVITE, the held ACK, CANCEL, BYE), the dialog it keeps (remote target, route set,
// tags), and what the TU hears, including the hostile or odd cases (retransmitted and forked
// 2xx, a 2xx after we gave up, in-dialog requests from the peer). Then the callback service
// (routing/callback-service.ts) driving real legs: RFC 3725 flow I, failures, retries, missed.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { createLogger } from "../../agent/log.ts";
import { parseDatagram } from "../../agent/sip/message.ts";
import { Originator, rejectingAnswer, type Leg, type LegEvents } from "../../agent/sip/originate.ts";
import type { ClientTransactionCallbacks, ServerTransaction } from "../../agent/sip/transaction.ts";
import type { Flow, SipMessage, SipRequest, SipResponse } from "../../agent/sip/types.ts";
import { EventBus } from "../../agent/bus.ts";
import { CallbackService, type CallbackEngine } from "../../agent/routing/callback-service.ts";
import { indexSite, parseSite } from "../../agent/routing/model.ts";
import type { Binding } from "../../agent/sip/location.ts";
import type { ProxyCall } from "../../agent/sip/proxy-types.ts";
import { tempDir } from "../tmpdir.ts";


const FLOW: Flow = { transport: "udp", remoteAddress: "192.0.2.20", remotePort: 5062, localAddress: "192.0.2.1", localPort: 5060 };
const PHONE_SDP = ["v=0", "o=- 1 1 IN IP4 192.0.2.20", "s=-", "c=IN IP4 192.0.2.20", "t=0 0", "m=audio 40000 RTP/AVP 0 101", ""].join("\r\n");

function parse(text: string): SipMessage {
  const r = parseDatagram(Buffer.from(text));
  if (!r.ok) throw new Error(r.error.reason);
  return r.message;
}

function fakes() {
  const sent: Array<{ req: SipRequest; cb: ClientTransactionCallbacks }> = [];
  const raw: string[] = [];
  let branch = 0;
  const orig = new Originator({
    sendRequest: (req, _flow, cb) => {
      sent.push({ req, cb });
      return { ok: true, tx: {} as never };
    },
    createBranch: () => `z9hG4bKt${++branch}`,
    send: (_flow, bytes) => void raw.push(bytes.toString("utf8")),
    log: createLogger("silent"),
  });
  const heard: string[] = [];
  const events: LegEvents = {
    onAnswered: (l) => void heard.push(`answered ${l.remoteSdp !== undefined ? "with sdp" : "no sdp"}`),
    onFailed: (_l, s) => void heard.push(`failed ${s}`),
    onEnded: () => void heard.push("ended"),
  };
  return { sent, raw, orig, heard, events };
}

/** A response to `req` from the peer (To tag `tag`), with optional Contact, Record-Route and SDP. */
function response(req: SipRequest, status: number, tag: string | undefined, extra: { contact?: string; rr?: string[]; sdp?: string } = {}): SipResponse {
  const to = req.headers.find((h) => h.name === "to")!.value;
  const lines = [
    `SIP/2.0 ${status} X`,
    ...req.via.map((v) => `Via: ${v.raw}`),
    `From: ${req.headers.find((h) => h.name === "from")!.value}`,
    `To: ${tag !== undefined ? `${to};tag=${tag}` : to}`,
    `Call-ID: ${req.callId}`,
    `CSeq: ${req.cseq.seq} ${req.cseq.method}`,
    ...(extra.contact !== undefined ? [`Contact: <${extra.contact}>`] : []),
    ...(extra.rr ?? []).map((r) => `Record-Route: ${r}`),
    ...(extra.sdp !== undefined ? ["Content-Type: application/sdp"] : []),
    `Content-Length: ${Buffer.byteLength(extra.sdp ?? "")}`,
    "",
    extra.sdp ?? "",
  ];
  return parse(lines.join("\r\n")) as SipResponse;
}

/** A request from the peer inside the leg's dialog. */
function peerRequest(leg: Leg, method: string, peerTag: string): SipRequest {
  return parse(
    [`${method} sip:ringedge@192.0.2.1:5060 SIP/2.0`, "Via: SIP/2.0/UDP 192.0.2.20:5062;branch=z9hG4bKpeer1", "Max-Forwards: 70", `From: <sip:op@192.0.2.20>;tag=${peerTag}`, `To: <sip:x@192.0.2.1>;tag=${leg.localTag}`, `Call-ID: ${leg.callId}`, `CSeq: 5 ${method}`, "Content-Length: 0", "", ""].join("\r\n"),
  ) as SipRequest;
}

function fakeTx(): { tx: ServerTransaction; responses: SipResponse[] } {
  const responses: SipResponse[] = [];
  return { tx: { respond: (r: SipResponse) => void responses.push(r) } as unknown as ServerTransaction, responses };
}

const header = (m: SipMessage, name: string): string | undefined => m.headers.find((h) => h.name === name)?.value;

describe("originate: a UAC leg", () => {
  it("INVITE without SDP and a display name; the 2xx makes the dialog; the ACK waits, then carries the answer along the route set; retransmitted 2xx re-ACKed; peer BYE ends it", () => {
    const f = fakes();
    const leg = f.orig.invite({ target: "sip:op1@192.0.2.20:5062", flow: FLOW, localAddress: "192.0.2.1", fromUser: "4930555", fromDisplay: 'Callback +4930555"\r\nX: y', ringTimeoutMs: 60_000 }, f.events)!;
    assert.ok(leg);
    const inv = f.sent[0]!.req;
    assert.equal(inv.method, "INVITE");
    assert.equal(inv.body.length, 0, "RFC 3725 flow I: no offer");
    assert.match(header(inv, "from")!, /^"Callback \+4930555X: y" <sip:4930555@192\.0\.2\.1:5060>;tag=/, "quotes and line breaks cannot leave the display name");
    assert.match(header(inv, "contact")!, /^<sip:ringedge@192\.0\.2\.1:5060>$/);
    f.sent[0]!.cb.onProvisional!(response(inv, 180, "p1"), {} as never);
    assert.equal(leg.state, "ringing");
    const ok = response(inv, 200, "p1", { contact: "sip:op1@192.0.2.20:5062;transport=udp", rr: ["<sip:p1.example;lr>", "<sip:p2.example;lr>"], sdp: PHONE_SDP });
    f.sent[0]!.cb.onFinal(ok, {} as never);
    assert.deepEqual(f.heard, ["answered with sdp"]);
    assert.equal(leg.remoteSdp, PHONE_SDP);
    assert.equal(f.raw.length, 0, "the ACK waits for the other leg");
    f.sent[0]!.cb.onFinal(ok, {} as never); // retransmission while waiting: nothing yet
    assert.equal(f.raw.length, 0);
    leg.ack("v=0\r\nanswer\r\n");
    const ack = parse(f.raw[0]!) as SipRequest;
    assert.equal(ack.method, "ACK");
    assert.equal(ack.uri, "sip:op1@192.0.2.20:5062;transport=udp", "to the remote target (2xx Contact)");
    assert.equal(header(ack, "route"), "<sip:p2.example;lr>, <sip:p1.example;lr>", "route set = Record-Route reversed (§12.1.2)");
    assert.equal(ack.cseq.seq, inv.cseq.seq);
    assert.match(header(ack, "to")!, /;tag=p1$/);
    assert.equal(ack.body.toString(), "v=0\r\nanswer\r\n");
    f.sent[0]!.cb.onFinal(ok, {} as never); // our ACK was lost
    assert.equal(f.raw.length, 2);
    assert.equal(f.raw[1], f.raw[0], "the same ACK again");
    // The peer ends it.
    const t = fakeTx();
    assert.equal(f.orig.handleInDialog(t.tx, peerRequest(leg, "BYE", "p1")), true);
    assert.equal(t.responses[0]!.status, 200);
    assert.deepEqual(f.heard, ["answered with sdp", "ended"]);
    assert.equal(f.orig.count(), 0);
    // Not ours any more, nor anything unknown.
    assert.equal(f.orig.handleInDialog(fakeTx().tx, peerRequest(leg, "BYE", "p1")), false);
  });

  it("ringing too long: CANCEL (same branch), then the 487 fails the leg", async () => {
    const f = fakes();
    const leg = f.orig.invite({ target: "sip:op1@192.0.2.20", flow: FLOW, localAddress: "192.0.2.1", fromUser: "cb", ringTimeoutMs: 20 }, f.events)!;
    const inv = f.sent[0]!.req;
    f.sent[0]!.cb.onProvisional!(response(inv, 180, "p1"), {} as never);
    await new Promise((r) => setTimeout(r, 60));
    const cancel = f.sent[1]!.req;
    assert.equal(cancel.method, "CANCEL");
    assert.equal(cancel.via[0]!.branch, inv.via[0]!.branch, "§9.1: the INVITE's branch");
    f.sent[0]!.cb.onFinal(response(inv, 487, "p1"), {} as never);
    assert.deepEqual(f.heard, ["failed 487"]);
    assert.equal(leg.state, "failed");
  });

  it("busy, timeout and transport failure each fail the leg once with their status", () => {
    for (const [how, want] of [["486", "failed 486"], ["timeout", "failed 408"], ["transport", "failed 503"]] as const) {
      const f = fakes();
      f.orig.invite({ target: "sip:x@192.0.2.9", flow: FLOW, localAddress: "192.0.2.1", fromUser: "cb", ringTimeoutMs: 60_000 }, f.events);
      const { req, cb } = f.sent[0]!;
      if (how === "486") cb.onFinal(response(req, 486, "b"), {} as never);
      else if (how === "timeout") cb.onTimeout(response(req, 408, undefined), {} as never, "B");
      else cb.onTransportError({} as never);
      cb.onFinal(response(req, 500, "b"), {} as never); // nothing more after the first failure
      assert.deepEqual(f.heard, [want]);
      assert.equal(f.orig.count(), 0);
    }
  });

  it("given up before any provisional: failed at once (no CANCEL may be sent, §9.1); a late 2xx is ACKed with a refusing answer and ended with BYE", () => {
    const f = fakes();
    const leg = f.orig.invite({ target: "sip:x@192.0.2.9", flow: FLOW, localAddress: "192.0.2.1", fromUser: "cb", ringTimeoutMs: 60_000 }, f.events)!;
    leg.cancel();
    assert.deepEqual(f.heard, ["failed 487"]);
    assert.equal(f.sent.length, 1, "no CANCEL before a provisional");
    const inv = f.sent[0]!.req;
    f.sent[0]!.cb.onFinal(response(inv, 200, "late", { contact: "sip:x@192.0.2.9", sdp: PHONE_SDP }), {} as never);
    const ack = parse(f.raw[0]!) as SipRequest;
    assert.equal(ack.method, "ACK");
    assert.match(ack.body.toString(), /^m=audio 0 RTP\/AVP 0$/m, "the offer in the 2xx is answered, refusing the stream");
    const bye = f.sent[1]!.req;
    assert.equal(bye.method, "BYE");
    assert.match(header(bye, "to")!, /;tag=late/);
    assert.equal(bye.cseq.seq, inv.cseq.seq + 1);
    assert.deepEqual(f.heard, ["failed 487"], "the TU hears nothing more");
  });

  it("a second 2xx from another fork is ACKed and ended; the first dialog stays", () => {
    const f = fakes();
    const leg = f.orig.invite({ target: "sip:x@192.0.2.9", flow: FLOW, localAddress: "192.0.2.1", fromUser: "cb", ringTimeoutMs: 60_000 }, f.events)!;
    const inv = f.sent[0]!.req;
    f.sent[0]!.cb.onFinal(response(inv, 200, "a", { contact: "sip:a@192.0.2.9", sdp: PHONE_SDP }), {} as never);
    f.sent[0]!.cb.onFinal(response(inv, 200, "b", { contact: "sip:b@192.0.2.10", sdp: PHONE_SDP }), {} as never);
    assert.equal(leg.remoteTag, "a");
    assert.equal((parse(f.raw[0]!) as SipRequest).uri, "sip:b@192.0.2.10");
    assert.equal(f.sent[1]!.req.method, "BYE");
    assert.equal(f.sent[1]!.req.uri, "sip:b@192.0.2.10");
    assert.deepEqual(f.heard, ["answered with sdp"]);
  });

  it("bye() on a 2xx still waiting for its ACK: ACK with an answer refusing every stream (RFC 3264 §5, §6), then BYE", () => {
    const f = fakes();
    const leg = f.orig.invite({ target: "sip:x@192.0.2.9", flow: FLOW, localAddress: "192.0.2.1", fromUser: "cb", ringTimeoutMs: 60_000 }, f.events)!;
    f.sent[0]!.cb.onFinal(response(f.sent[0]!.req, 200, "a", { contact: "sip:a@192.0.2.9", sdp: PHONE_SDP }), {} as never);
    leg.bye();
    const ack = parse(f.raw[0]!) as SipRequest;
    assert.match(ack.body.toString(), /^m=audio 0 RTP\/AVP 0$/m);
    assert.equal(f.sent[1]!.req.method, "BYE");
    assert.equal(leg.state, "ended");
    assert.equal(rejectingAnswer("garbage"), ["v=0", "o=ringedge 1 1 IN IP4 0.0.0.0", "s=-", "c=IN IP4 0.0.0.0", "t=0 0", ""].join("\r\n"));
  });

  it("in-dialog requests from the peer: re-INVITE 488 (the session stays), INFO 200, others 405", () => {
    const f = fakes();
    const leg = f.orig.invite({ target: "sip:x@192.0.2.9", flow: FLOW, localAddress: "192.0.2.1", fromUser: "cb", ringTimeoutMs: 60_000 }, f.events)!;
    f.sent[0]!.cb.onFinal(response(f.sent[0]!.req, 200, "a", { contact: "sip:a@192.0.2.9", sdp: PHONE_SDP }), {} as never);
    leg.ack("v=0\r\n");
    const statuses = ["INVITE", "INFO", "REFER"].map((m) => {
      const t = fakeTx();
      assert.equal(f.orig.handleInDialog(t.tx, peerRequest(leg, m, "a")), true);
      return t.responses[0]!.status;
    });
    assert.deepEqual(statuses, [488, 200, 405]);
    assert.equal(leg.state, "confirmed");
  });
});

// --- the callback service over real legs (routing/callback-service.ts) -------------------------------

describe("callback service: the callback call over originate legs", () => {
  function setup(retries = 1) {
    const f = fakes();
    const parsed = parseSite({
      settings: {},
      users: [{ id: "anna", extension: "201", name: "Anna", availability: "available" }],
      devices: [{ id: "p-anna", ownerId: "anna", kind: "physical" }],
      groups: [{ id: "sales", number: "600", name: "Sales", strategy: "sequential", members: ["anna"], ringCount: 2, checkAvailability: false, noAnswer: { kind: "wait-for-operator", maxWaitS: 120, then: { kind: "hangup" } }, callback: { enabled: true, retries, retryDelayS: 30 } }],
    });
    if (!parsed.ok) throw new Error(JSON.stringify(parsed.errors));
    const site = { index: indexSite(parsed.site), settings: { pickupCode: "*8", trunk: { host: "192.0.2.50", port: 5080, transport: "udp" as const, allowedSources: ["192.0.2.50"], prefix: "0" } } };
    const binding = { deviceId: "p-anna", aor: "anna", contact: "sip:anna@192.0.2.20:5062", flow: FLOW } as Binding;
    const journal: string[] = [];
    const engine: CallbackEngine = {
      serveQueue: () => void journal.push("serve"),
      holdOperator: (u) => void journal.push(`hold ${u}`),
      releaseOperator: (u, serve = true) => void journal.push(`release ${u}${serve ? "" : " quietly"}`),
      takeForCallback: () => ({ groupId: "sales", place: 1000, number: "+4930555123" }),
      bindingsOf: (d) => (d === "p-anna" ? [binding] : []),
    };
    const bus = new EventBus();
    const events: string[] = [];
    for (const n of ["callback.requested", "callback.connected", "callback.missed"] as const) bus.on(n, (e) => void events.push(`${n} ${e.number}`));
    let now = 10_000;
    const svc = new CallbackService({ dataDir: tempDir(), site: () => site, originator: f.orig, bus, log: createLogger("silent"), sipAdvertise: "", ringUnitMs: 1000, now: () => now });
    svc.start(engine);
    const pc = { id: "pc1", request: parse(["INVITE sip:600@192.0.2.1 SIP/2.0", "Via: SIP/2.0/UDP 192.0.2.50:5080;branch=z9hG4bKin", "From: <sip:+4930555123@192.0.2.50>;tag=t", "To: <sip:600@192.0.2.1>", "Call-ID: in1", "CSeq: 1 INVITE", "Content-Length: 0", "", ""].join("\r\n")) } as unknown as ProxyCall;
    return { f, svc, journal, events, pc, advance: (ms: number) => (now += ms) };
  }

  it("requested → operator called first (no SDP, 'Callback <number>') → their offer to the caller through the trunk → joined; a BYE from the operator ends the caller's leg", async () => {
    const { f, svc, journal, events, pc } = setup();
    svc.accepted(pc);
    assert.deepEqual(events, ["callback.requested +4930555123"]);
    const id = svc.list()[0]!.id;
    assert.equal(svc.dispatch(id, "anna", ["p-anna"]), true);
    assert.equal(svc.dispatch(id, "anna", ["p-anna"]), false, "already in progress");
    const toOp = f.sent[0]!;
    assert.equal(toOp.req.uri, "sip:anna@192.0.2.20:5062");
    assert.match(header(toOp.req, "from")!, /^"Callback \+4930555123"/);
    assert.equal(toOp.req.body.length, 0);
    toOp.cb.onFinal(response(toOp.req, 200, "op", { contact: "sip:anna@192.0.2.20:5062", sdp: PHONE_SDP }), {} as never);
    const toCaller = f.sent[1]!;
    assert.equal(toCaller.req.uri, "sip:0+4930555123@192.0.2.50:5080", "through the trunk, with its prefix");
    assert.equal(toCaller.req.body.toString(), PHONE_SDP, "the operator's offer");
    const answer = PHONE_SDP.replace("40000", "41000");
    toCaller.cb.onFinal(response(toCaller.req, 200, "cl", { contact: "sip:gw@192.0.2.50:5080", sdp: answer }), {} as never);
    const acks = f.raw.map((r) => parse(r) as SipRequest);
    assert.deepEqual(acks.map((a) => [a.method, a.uri, a.body.toString()]), [["ACK", "sip:gw@192.0.2.50:5080", ""], ["ACK", "sip:anna@192.0.2.20:5062", answer]]);
    assert.deepEqual(events.at(-1), "callback.connected +4930555123");
    assert.deepEqual(svc.list(), []);
    // The operator hangs up: BYE to the caller, the operator freed.
    const opLeg = { localTag: /tag=([^;>\s]+)/.exec(header(toOp.req, "from")!)![1]!, callId: toOp.req.callId } as Leg;
    const t = fakeTx();
    assert.equal(f.orig.handleInDialog(t.tx, peerRequest(opLeg, "BYE", "op")), true);
    assert.equal(f.sent[2]!.req.method, "BYE");
    assert.equal(f.sent[2]!.req.uri, "sip:gw@192.0.2.50:5080");
    assert.deepEqual(journal.filter((j) => j !== "serve"), ["hold anna", "release anna"]);
    await svc.stop();
  });

  it("operator does not answer: the callback keeps its place, attempts 0, the operator released without serving them again", async () => {
    const { f, svc, journal, pc } = setup();
    svc.accepted(pc);
    const id = svc.list()[0]!.id;
    svc.dispatch(id, "anna", ["p-anna"]);
    f.sent[0]!.cb.onFinal(response(f.sent[0]!.req, 480, "op"), {} as never);
    assert.deepEqual(svc.list().map((c) => [c.id, c.attempts, c.operator]), [[id, 0, undefined]]);
    assert.deepEqual(journal.filter((j) => j !== "serve"), ["hold anna", "release anna quietly"]);
    await svc.stop();
  });

  it("caller busy: the operator's leg is ended (ACK refusing its offer, BYE), retried after the delay, then missed", async () => {
    const { f, svc, events, pc, advance } = setup(1);
    svc.accepted(pc);
    const id = svc.list()[0]!.id;
    for (let attempt = 1; attempt <= 2; attempt++) {
      const n = f.sent.length;
      assert.equal(svc.dispatch(id, "anna", ["p-anna"]), attempt === 1 || svc.list().length === 1);
      const toOp = f.sent[n]!;
      toOp.cb.onFinal(response(toOp.req, 200, `op${attempt}`, { contact: "sip:anna@192.0.2.20:5062", sdp: PHONE_SDP }), {} as never);
      const toCaller = f.sent[n + 1]!;
      toCaller.cb.onFinal(response(toCaller.req, 486, "cl"), {} as never);
      assert.equal(f.sent[n + 2]!.req.method, "BYE", "the operator's leg ended");
      if (attempt === 1) {
        assert.deepEqual(svc.list().map((c) => [c.attempts, c.notBefore]), [[1, 10_000 + 30_000]]);
        advance(30_000);
      }
    }
    assert.deepEqual(svc.list(), []);
    assert.deepEqual(events, ["callback.requested +4930555123", "callback.missed +4930555123"]);
    await svc.stop();
  });
});
