// The stateful forking proxy (RFC 3261 §16) over a real TransactionLayer and an in-memory
// transport that hands every message to fake UAs (a caller and phones), each message
// serialised and parsed again as on the wire. Deterministic: node:test mock timers.
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, mock, test } from "node:test";
import { getHeader, getHeaders, parseDatagram } from "../../agent/sip/message.ts";
import { ANSWERED_ELSEWHERE, StatefulProxy, chooseBestResponse, removeLeadingRoutes, stripTopVia, textHash64 } from "../../agent/sip/proxy.ts";
import type { Branch, BranchTarget, ProxyCall, ProxyCallEvents } from "../../agent/sip/proxy-types.ts";
import { createResponse, serialize, setViaReceived } from "../../agent/sip/serialize.ts";
import { TransactionLayer } from "../../agent/sip/transaction.ts";
import type { Flow, SipMessage, SipRequest, SipResponse, Transport } from "../../agent/sip/types.ts";

const PROXY_ADDRESS = "192.0.2.1";
const PROXY_PORT = 5060;

function parse(data: Buffer | string): SipMessage {
  const r = parseDatagram(typeof data === "string" ? Buffer.from(data) : data);
  if (!r.ok) throw new Error(`does not parse: ${JSON.stringify(r.error)}\n${data.toString()}`);
  return r.message;
}

/** A fake UA: what the proxy sent it, and a way to send to the proxy. */
class Ua {
  readonly inbox: SipMessage[] = [];
  /** The bytes of each message in inbox. */
  readonly wire: Buffer[] = [];
  /** The flow as the proxy sees it. */
  readonly flow: Flow;
  constructor(
    readonly net: Net,
    readonly address: string,
    readonly port = 5060,
  ) {
    this.flow = { transport: "udp", remoteAddress: address, remotePort: port, localAddress: PROXY_ADDRESS, localPort: PROXY_PORT };
  }
  requests(method: string): SipRequest[] {
    return this.inbox.filter((m): m is SipRequest => m.kind === "request" && m.method === method);
  }
  responses(status?: number): SipResponse[] {
    return this.inbox.filter((m): m is SipResponse => m.kind === "response" && (status === undefined || m.status === status));
  }
  lastRequest(method: string): SipRequest {
    const r = this.requests(method).at(-1);
    assert.ok(r, `${this.address} received no ${method}; got: ${this.inbox.map(startLine).join(" | ")}`);
    return r;
  }
  send(text: string | SipMessage): void {
    const msg = parse(typeof text === "string" ? text : serialize(text));
    this.net.deliver(msg, this.flow);
  }
  /** A response to req as a UAS builds it (§8.2.6, §12.1.1: Record-Route copied into 18x/2xx). */
  respond(req: SipRequest, status: number, reason: string, toTag?: string): SipResponse {
    const headers = [];
    if (status > 100 && status < 300 && req.method === "INVITE") {
      for (const v of getHeaders(req, "record-route")) headers.push({ name: "record-route", value: v });
      headers.push({ name: "contact", value: `<sip:phone@${this.address}:${this.port}>` });
    }
    const res = createResponse(req, status, reason, { ...(toTag !== undefined ? { toTag } : {}), headers });
    this.send(res);
    return res;
  }
}

function startLine(m: SipMessage): string {
  return m.kind === "request" ? `${m.method} ${m.uri}` : `${m.status} ${m.reason}`;
}

/** The wire: every send from the proxy lands in the UA at the flow's remote address. */
class Net implements Transport {
  readonly uas = new Map<string, Ua>();
  deliver: (msg: SipMessage, flow: Flow) => void = () => undefined;
  ua(address: string): Ua {
    const ua = new Ua(this, address);
    this.uas.set(`${address}:5060`, ua);
    return ua;
  }
  send(flow: Flow, data: Buffer): boolean {
    const ua = this.uas.get(`${flow.remoteAddress}:${flow.remotePort}`);
    if (ua === undefined) return false;
    ua.inbox.push(parse(data));
    ua.wire.push(Buffer.from(data));
    return true;
  }
  isReliable(flow: Flow): boolean {
    return flow.transport === "tcp";
  }
}

interface EventLog {
  ringing: string[];
  failed: Array<{ branch: string; status: number }>;
  answered: string[];
  cancelled: number;
  ended: Array<{ answered: boolean; by: string; status?: number }>;
}

interface World {
  net: Net;
  layer: TransactionLayer;
  proxy: StatefulProxy;
  caller: Ua;
  a: Ua;
  b: Ua;
  c: Ua;
  events: EventLog;
  calls: ProxyCall[];
  /** What the "engine" does with a new INVITE; default: fork to A and B. */
  onInvite: (call: ProxyCall) => void;
}

let w: World;

function targetOf(ua: Ua, extra: Partial<BranchTarget> = {}): BranchTarget {
  return { uri: `sip:phone@${ua.address}:${ua.port}`, flow: ua.flow, ...extra };
}

function makeWorld(proxyOptions: { timerC?: number } = {}): World {
  const net = new Net();
  const layer = new TransactionLayer({ transport: net, tryingDelay: false });
  const proxy = new StatefulProxy({ transactions: layer, transport: net, ...proxyOptions });
  const events: EventLog = { ringing: [], failed: [], answered: [], cancelled: 0, ended: [] };
  const world: World = {
    net,
    layer,
    proxy,
    caller: net.ua("192.0.2.10"),
    a: net.ua("192.0.2.21"),
    b: net.ua("192.0.2.22"),
    c: net.ua("192.0.2.23"),
    events,
    calls: [],
    onInvite: (call) => {
      proxy.fork(call, targetOf(world.a));
      proxy.fork(call, targetOf(world.b));
    },
  };
  const handlers: ProxyCallEvents = {
    onRinging: (_c, b) => events.ringing.push(b.target.uri),
    onBranchFailed: (_c, b, status) => events.failed.push({ branch: b.target.uri, status }),
    onAnswered: (_c, b) => events.answered.push(b.target.uri),
    onCallerCancelled: () => events.cancelled++,
    onEnded: (_c, info) => events.ended.push(info),
  };
  // The agent's dispatch (agent.ts), reduced to what reaches the proxy.
  net.deliver = (msg, flow) => {
    if (msg.kind === "response") {
      const r = layer.receiveResponse(msg, flow);
      if (r.kind === "stray") proxy.strayResponse(msg, flow);
      return;
    }
    setViaReceived(msg, flow.remoteAddress, flow.remotePort);
    const r = layer.receiveRequest(msg, flow);
    switch (r.kind) {
      case "cancel":
        if (!proxy.handleCancel(r.tx, r.inviteTx, msg)) r.tx.respond(createResponse(msg, 481, "Call/Transaction Does Not Exist"));
        return;
      case "stray-ack":
      case "ack-2xx":
        proxy.handleAck(msg, flow);
        return;
      case "new":
        if (msg.to.tag !== undefined) return proxy.handleInDialog(r.tx, msg, flow);
        {
          const call = proxy.startCall(r.tx, msg, flow, handlers);
          if (call) {
            world.calls.push(call);
            world.onInvite(call);
          }
        }
        return;
      default:
        return;
    }
  };
  return world;
}

function invite(extra: string[] = [], opts: { uri?: string; maxForwards?: number; branch?: string; callId?: string } = {}): string {
  const body = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
  return [
    `INVITE ${opts.uri ?? "sip:1000@192.0.2.1"} SIP/2.0`,
    `Via: SIP/2.0/UDP 192.0.2.10:5060;branch=${opts.branch ?? "z9hG4bKcaller1"};rport`,
    `Max-Forwards: ${opts.maxForwards ?? 70}`,
    `From: "Alice" <sip:200@192.0.2.1>;tag=alice`,
    "To: <sip:1000@192.0.2.1>",
    `Call-ID: ${opts.callId ?? "call-1@192.0.2.10"}`,
    "CSeq: 1 INVITE",
    "Contact: <sip:alice@192.0.2.10:5060>",
    ...extra,
    "Content-Type: application/sdp",
    `Content-Length: ${Buffer.byteLength(body)}`,
    "",
    body,
  ].join("\r\n");
}

/** Lets the proxy's microtasks (100 Trying, deferred failure reports) run. */
async function settle(): Promise<void> {
  await new Promise<void>((r) => setImmediate(r));
}

function tick(ms: number): void {
  mock.timers.tick(ms);
}

beforeEach(() => {
  mock.timers.enable({ apis: ["setTimeout"] });
  w = makeWorld();
});

afterEach(() => {
  w.layer.close();
  mock.timers.reset();
});

/** Caller INVITE forked to A and B, A and B ring (18x with tags a1 / b1). */
async function ringBoth(): Promise<{ invA: SipRequest; invB: SipRequest }> {
  w.caller.send(invite());
  await settle();
  const invA = w.a.lastRequest("INVITE");
  const invB = w.b.lastRequest("INVITE");
  w.a.respond(invA, 180, "Ringing", "a1");
  w.b.respond(invB, 180, "Ringing", "b1");
  return { invA, invB };
}

describe("forking (RFC 3261 §16.2, §16.6)", () => {
  test("forks share their serialised header text: each INVITE's bytes are what serialize writes for its request", async () => {
    w.onInvite = (call) => {
      w.proxy.fork(call, targetOf(w.a));
      w.proxy.fork(call, targetOf(w.b, { headers: [{ name: "Alert-Info", value: "<http://x/ring>" }] }));
      w.proxy.fork(call, targetOf(w.b, { uri: "sip:other@192.0.2.22:5062" }));
    };
    w.caller.send(invite());
    await settle();
    const branches = w.calls[0]!.branches;
    assert.equal(branches.length, 3);
    const sent = [...w.a.wire, ...w.b.wire].filter((b) => b.toString().startsWith("INVITE "));
    assert.equal(sent.length, 3);
    for (const [i, branch] of branches.entries()) {
      // A spread copy has no bytes attached: serialize writes it from its fields.
      const expected = serialize({ ...(branch as unknown as { request: SipRequest }).request });
      assert.ok(sent.some((b) => b.equals(expected)), `fork ${i}: ${expected.toString()}`);
    }
    assert.match(sent.map((b) => b.toString()).join("\n"), /INVITE sip:other@192\.0\.2\.22:5062 SIP\/2\.0/);
  });

  test("100 Trying upstream, one INVITE per target with our Via, Record-Route ;lr, Max-Forwards - 1, target URI, branch headers", async () => {
    w.onInvite = (call) => {
      w.proxy.fork(call, targetOf(w.a, { headers: [{ name: "Call-Info", value: "<sip:x>;answer-after=0" }] }));
      w.proxy.fork(call, targetOf(w.b));
    };
    w.caller.send(invite());
    await settle();
    assert.deepEqual(w.caller.responses().map((r) => r.status), [100]);
    const invA = w.a.lastRequest("INVITE");
    const invB = w.b.lastRequest("INVITE");
    assert.equal(invA.uri, "sip:phone@192.0.2.21:5060");
    assert.equal(invA.maxForwards, 69);
    assert.equal(invA.via.length, 2);
    assert.equal(invA.via[0]!.host, PROXY_ADDRESS);
    assert.match(invA.via[0]!.branch!, /^z9hG4bK/);
    assert.notEqual(invA.via[0]!.branch, invB.via[0]!.branch);
    assert.equal(invA.via[1]!.branch, "z9hG4bKcaller1");
    assert.deepEqual(getHeaders(invA, "record-route"), [`<sip:${PROXY_ADDRESS}:${PROXY_PORT};lr>`]);
    assert.equal(getHeader(invA, "call-info"), "<sip:x>;answer-after=0");
    assert.equal(getHeader(invB, "call-info"), undefined);
    assert.ok(invA.body.toString().includes("m=audio 4000"));
    const call = w.calls[0]!;
    assert.ok(call.firstForkAt !== undefined && call.firstForkAt >= call.receivedAt);
    assert.equal(call.branches.length, 2);
    assert.equal(w.proxy.stats().branches, 2);
    assert.equal(w.proxy.stats().calls, 1);
  });

  test("a retransmitted INVITE is absorbed: no second fork, the 100 is repeated", async () => {
    let invites = 0;
    w.onInvite = (call) => {
      invites++;
      w.proxy.fork(call, targetOf(w.a));
    };
    w.caller.send(invite());
    await settle();
    w.caller.send(invite());
    await settle();
    assert.equal(invites, 1);
    assert.equal(w.a.requests("INVITE").length, 1);
    assert.deepEqual(w.caller.responses().map((r) => r.status), [100, 100]);
  });

  test("a preloaded Route naming the proxy is removed before forwarding (§16.4)", async () => {
    w.onInvite = (call) => void w.proxy.fork(call, targetOf(w.a));
    w.caller.send(invite([`Route: <sip:${PROXY_ADDRESS}:${PROXY_PORT};lr>`]));
    await settle();
    assert.deepEqual(getHeaders(w.a.lastRequest("INVITE"), "route"), []);
  });
});

describe("request checks and loops (§16.3)", () => {
  test("Max-Forwards 0 gets 483 and nothing is forked", async () => {
    w.caller.send(invite([], { maxForwards: 0 }));
    await settle();
    assert.deepEqual(w.caller.responses().map((r) => r.status), [483]);
    assert.equal(w.calls.length, 0);
    assert.equal(w.a.inbox.length, 0);
  });

  test("an unsupported Proxy-Require gets 420 with Unsupported", async () => {
    w.caller.send(invite(["Proxy-Require: foo"]));
    await settle();
    const r = w.caller.responses(420)[0]!;
    assert.equal(getHeader(r, "unsupported"), "foo");
    assert.equal(w.calls.length, 0);
  });

  test("our own INVITE coming back unchanged is a loop (482); with a new Request-URI it spirals", async () => {
    // The engine forks to the same URI it received: whoever gets it sends it straight back.
    w.onInvite = (call) => void w.proxy.fork(call, { uri: "sip:1000@192.0.2.1", flow: w.a.flow });
    w.caller.send(invite());
    await settle();
    const looped = w.a.lastRequest("INVITE");
    w.a.send(looped);
    await settle();
    assert.deepEqual(w.a.responses().map((r) => r.status), [482]);

    w.onInvite = () => undefined;
    // The next hop retargets and sends it back through us with its own Via on top.
    const spiral = serialize({ ...looped, uri: "sip:2000@192.0.2.1" })
      .toString()
      .replace("\r\nVia: ", "\r\nVia: SIP/2.0/UDP 192.0.2.21:5060;branch=z9hG4bKretarget\r\nVia: ");
    const before = w.calls.length;
    w.a.send(spiral);
    await settle();
    assert.equal(w.calls.length, before + 1, "a spiral is a new call");
  });
});

describe("responses (§16.7)", () => {
  test("18x relayed without our Via, 100 never relayed; onRinging once per branch", async () => {
    w.caller.send(invite());
    await settle();
    const invA = w.a.lastRequest("INVITE");
    w.a.respond(invA, 100, "Trying");
    w.a.respond(invA, 180, "Ringing", "a1");
    w.a.respond(invA, 180, "Ringing", "a1");
    w.a.respond(invA, 183, "Session Progress", "a1");
    const statuses = w.caller.responses().map((r) => r.status);
    assert.deepEqual(statuses, [100, 180, 180, 183]);
    const relayed = w.caller.responses(180)[0]!;
    assert.equal(relayed.via.length, 1);
    assert.equal(relayed.via[0]!.branch, "z9hG4bKcaller1");
    assert.equal(relayed.to.tag, "a1");
    assert.deepEqual(w.events.ringing, ["sip:phone@192.0.2.21:5060"]);
    assert.equal(w.proxy.stats().earlyDialogs, 1);
  });

  test("while the appliance plays early media (suppressRinging) branches' 18x are not relayed; its own 183 with SDP is, on the proxy's tag", async () => {
    w.caller.send(invite());
    await settle();
    const call = w.calls[0]!;
    const sdp = Buffer.from("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 20000 RTP/AVP 0\r\n");
    w.proxy.suppressRinging(call, true);
    w.proxy.provisional(call, 183, "Session Progress", [{ name: "contact", value: "<sip:127.0.0.1:5060>" }], { contentType: "application/sdp", body: sdp });
    const invA = w.a.lastRequest("INVITE");
    w.a.respond(invA, 180, "Ringing", "a1");
    w.a.respond(invA, 183, "Session Progress", "a1");
    assert.deepEqual(w.caller.responses().map((r) => r.status), [100, 183]);
    const own = w.caller.responses(183)[0]!;
    assert.notEqual(own.to.tag, "a1");
    assert.equal(getHeader(own, "content-type"), "application/sdp");
    assert.equal(own.body.toString(), sdp.toString());
    assert.deepEqual(w.events.ringing, ["sip:phone@192.0.2.21:5060"], "the engine still hears of the ringing");
    // Music over: ringing is relayed again.
    w.proxy.suppressRinging(call, false);
    w.a.respond(invA, 180, "Ringing", "a1");
    assert.deepEqual(w.caller.responses().map((r) => r.status), [100, 183, 180]);
  });

  test("first 2xx relayed at once; every other branch gets CANCEL with the RFC 3326 Reason", async () => {
    const { invB } = await ringBoth();
    w.b.respond(invB, 200, "OK", "b1");
    const ok = w.caller.responses(200)[0]!;
    assert.equal(ok.to.tag, "b1");
    assert.equal(ok.via.length, 1);
    assert.deepEqual(getHeaders(ok, "record-route"), [`<sip:${PROXY_ADDRESS}:${PROXY_PORT};lr>`]);
    const cancel = w.a.lastRequest("CANCEL");
    assert.equal(getHeader(cancel, "reason"), ANSWERED_ELSEWHERE);
    assert.equal(cancel.via[0]!.branch, w.a.lastRequest("INVITE").via[0]!.branch);
    assert.equal(w.b.requests("CANCEL").length, 0);
    assert.deepEqual(w.events.answered, ["sip:phone@192.0.2.22:5060"]);
    const call = w.calls[0]!;
    assert.equal(call.finished, true);
    assert.equal(call.answered?.target.uri, "sip:phone@192.0.2.22:5060");
    assert.equal(call.branches[0]!.state, "cancelled");
    assert.deepEqual(call.dialog && { callerTag: call.dialog.callerTag, calleeTag: call.dialog.calleeTag, state: call.dialog.state }, {
      callerTag: "alice",
      calleeTag: "b1",
      state: "confirmed",
    });
    assert.equal(w.proxy.dialogCount(), 1);
    assert.equal(w.proxy.stats().earlyDialogs, 0);
    // The cancelled branch's 487 is ACKed by its transaction and reported to nobody.
    w.a.respond(w.a.lastRequest("INVITE"), 487, "Request Terminated", "a1");
    assert.equal(w.a.requests("ACK").length, 1);
    assert.deepEqual(w.events.failed, []);
    assert.deepEqual(w.caller.responses().map((r) => r.status), [100, 180, 180, 200]);
  });

  test("a branch without a provisional gets its CANCEL only after its first 1xx (§9.1)", async () => {
    w.caller.send(invite());
    await settle();
    const invA = w.a.lastRequest("INVITE");
    const invB = w.b.lastRequest("INVITE");
    w.b.respond(invB, 200, "OK", "b1");
    assert.equal(w.a.requests("CANCEL").length, 0, "no CANCEL before a provisional");
    w.a.respond(invA, 100, "Trying");
    assert.equal(getHeader(w.a.lastRequest("CANCEL"), "reason"), ANSWERED_ELSEWHERE);
  });

  test("2xx retransmissions of the answering branch are relayed upstream", async () => {
    const { invB } = await ringBoth();
    const ok = w.b.respond(invB, 200, "OK", "b1");
    w.b.send(ok);
    assert.equal(w.caller.responses(200).length, 2);
  });

  test("a late 2xx from a second branch is ACKed and BYEd, never relayed; its retransmission gets a new ACK only", async () => {
    const { invA, invB } = await ringBoth();
    w.b.respond(invB, 200, "OK", "b1");
    // A answered while our CANCEL was on its way.
    const lateOk = w.a.respond(invA, 200, "OK", "a1");
    assert.equal(w.caller.responses(200).length, 1, "the late 2xx does not go upstream");
    const ack = w.a.lastRequest("ACK");
    assert.equal(ack.uri, "sip:phone@192.0.2.21:5060");
    assert.equal(ack.to.tag, "a1");
    assert.equal(ack.from.tag, "alice");
    assert.equal(ack.cseq.seq, 1);
    const bye = w.a.lastRequest("BYE");
    assert.equal(bye.to.tag, "a1");
    assert.equal(bye.cseq.seq, 2);
    assert.equal(getHeader(bye, "reason"), ANSWERED_ELSEWHERE);
    w.a.send(lateOk);
    assert.equal(w.a.requests("ACK").length, 2);
    assert.equal(w.a.requests("BYE").length, 1);
    assert.equal(w.proxy.stats().lateAnswersReleased, 1);
    assert.deepEqual(w.events.answered, ["sip:phone@192.0.2.22:5060"]);
  });

  test("a final failure is reported to the engine, which decides; nothing goes upstream by itself", async () => {
    w.caller.send(invite());
    await settle();
    w.a.respond(w.a.lastRequest("INVITE"), 486, "Busy Here", "a1");
    assert.deepEqual(w.events.failed, [{ branch: "sip:phone@192.0.2.21:5060", status: 486 }]);
    assert.deepEqual(w.caller.responses().map((r) => r.status), [100]);
    assert.equal(w.proxy.activeBranches(w.calls[0]!).length, 1);
  });

  test("reject(): best response when every branch is done (6xx first, else lowest class, engine's within a class)", async () => {
    w.caller.send(invite());
    await settle();
    w.a.respond(w.a.lastRequest("INVITE"), 486, "Busy Here", "a1");
    w.b.respond(w.b.lastRequest("INVITE"), 603, "Decline", "b1");
    w.proxy.reject(w.calls[0]!, 480, "Temporarily Unavailable");
    const final = w.caller.responses().at(-1)!;
    assert.equal(final.status, 603);
    assert.equal(final.to.tag, "b1");
    assert.equal(final.via.length, 1);
    assert.deepEqual(w.events.ended, [{ answered: false, by: "proxy", status: 603 }]);
    // The caller's ACK for the failure is absorbed by the server transaction.
    w.caller.send(["ACK sip:1000@192.0.2.1 SIP/2.0", "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKcaller1;rport", "Max-Forwards: 70", 'From: "Alice" <sip:200@192.0.2.1>;tag=alice', "To: <sip:1000@192.0.2.1>;tag=b1", "Call-ID: call-1@192.0.2.10", "CSeq: 1 ACK", "Content-Length: 0", "", ""].join("\r\n"));
    assert.equal(w.a.requests("ACK").length + w.b.requests("ACK").length, 2, "only the transactions' own ACKs");
    // A CANCEL that crossed the final response still matches the lingering transaction: 200
    // with the call's To tag, nothing else (§9.2, §16.10).
    const before = w.a.requests("CANCEL").length + w.b.requests("CANCEL").length;
    w.caller.send(["CANCEL sip:1000@192.0.2.1 SIP/2.0", "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKcaller1;rport", "Max-Forwards: 70", 'From: "Alice" <sip:200@192.0.2.1>;tag=alice', "To: <sip:1000@192.0.2.1>", "Call-ID: call-1@192.0.2.10", "CSeq: 1 CANCEL", "Content-Length: 0", "", ""].join("\r\n"));
    const cancelled = w.caller.responses().at(-1)!;
    assert.equal(`${cancelled.status} ${cancelled.cseq.method}`, "200 CANCEL");
    assert.equal(cancelled.to.tag, "b1");
    assert.equal(w.a.requests("CANCEL").length + w.b.requests("CANCEL").length, before);
    assert.equal(w.events.cancelled, 0);
  });

  test("reject(): the engine's status within the same class, a fresh To tag; exact option; live branches cancelled", async () => {
    w.caller.send(invite());
    await settle();
    w.a.respond(w.a.lastRequest("INVITE"), 486, "Busy Here", "a1");
    w.b.respond(w.b.lastRequest("INVITE"), 180, "Ringing", "b1");
    w.proxy.reject(w.calls[0]!, 480, "Temporarily Unavailable");
    const final = w.caller.responses().at(-1)!;
    assert.equal(final.status, 480);
    assert.ok(final.to.tag !== undefined && final.to.tag !== "a1" && final.to.tag !== "b1");
    assert.equal(w.b.requests("CANCEL").length, 1);
    assert.equal(w.proxy.fork(w.calls[0]!, targetOf(w.c)), undefined, "no fork after the call finished");
  });

  test("chooseBestResponse", () => {
    assert.equal(chooseBestResponse([480, 486, 603]), 2);
    assert.equal(chooseBestResponse([480, 302, 500]), 1);
    assert.equal(chooseBestResponse([480, 486]), 0);
    assert.equal(chooseBestResponse([0, 0]), -1);
    assert.equal(chooseBestResponse([200, 180]), -1);
  });

  test("a stray response is dropped and counted (RFC 6026 §7.2)", async () => {
    w.a.send("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKnothing\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: stray\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n");
    assert.equal(w.proxy.stats().strayResponses, 1);
    assert.equal(w.caller.inbox.length, 0);
  });
});

describe("CANCEL from the caller (§16.10)", () => {
  test("200 to the CANCEL, every branch cancelled with the caller's Reason, 487 upstream, events", async () => {
    await ringBoth();
    w.caller.send(
      [
        "CANCEL sip:1000@192.0.2.1 SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKcaller1;rport",
        "Max-Forwards: 70",
        'From: "Alice" <sip:200@192.0.2.1>;tag=alice',
        "To: <sip:1000@192.0.2.1>",
        "Call-ID: call-1@192.0.2.10",
        "CSeq: 1 CANCEL",
        'Reason: SIP;cause=480;text="Gave up"',
        "Content-Length: 0",
        "",
        "",
      ].join("\r\n"),
    );
    const finals = w.caller.responses().filter((r) => r.status >= 200);
    assert.deepEqual(finals.map((r) => `${r.status} ${r.cseq.method}`), ["200 CANCEL", "487 INVITE"]);
    assert.equal(finals[0]!.to.tag, finals[1]!.to.tag, "§9.2: same To tag on both");
    for (const ua of [w.a, w.b]) assert.equal(getHeader(ua.lastRequest("CANCEL"), "reason"), 'SIP;cause=480;text="Gave up"');
    assert.equal(w.events.cancelled, 1);
    assert.deepEqual(w.events.ended, [{ answered: false, by: "caller", status: 487 }]);
    assert.equal(w.proxy.stats().calls, 0);
  });

  test("a CANCEL for no call of ours is left to the caller (481)", () => {
    w.caller.send("CANCEL sip:1000@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKnone\r\nMax-Forwards: 70\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: none\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n");
    assert.deepEqual(w.caller.responses().map((r) => r.status), [481]);
  });

  test("a 2xx arriving after the caller cancelled is ACKed and BYEd", async () => {
    w.caller.send(invite());
    await settle();
    const invA = w.a.lastRequest("INVITE");
    w.caller.send("CANCEL sip:1000@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKcaller1;rport\r\nMax-Forwards: 70\r\nFrom: \"Alice\" <sip:200@192.0.2.1>;tag=alice\r\nTo: <sip:1000@192.0.2.1>\r\nCall-ID: call-1@192.0.2.10\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n");
    assert.equal(w.a.requests("CANCEL").length, 0, "queued until a provisional");
    w.a.respond(invA, 200, "OK", "a1");
    assert.equal(w.a.requests("ACK").length, 1);
    assert.equal(w.a.requests("BYE").length, 1);
    assert.equal(w.caller.responses(200).filter((r) => r.cseq.method === "INVITE").length, 0);
  });
});

describe("Timer C (§16.6 step 11, §16.8)", () => {
  test("a ringing branch that never answers is cancelled and reported 408; a silent one is 408 without CANCEL", async () => {
    w.layer.close();
    w = makeWorld({ timerC: 1000 });
    w.onInvite = (call) => {
      w.proxy.fork(call, targetOf(w.a));
      w.proxy.fork(call, targetOf(w.b, { timerC: 3000 }));
    };
    w.caller.send(invite());
    await settle();
    w.a.respond(w.a.lastRequest("INVITE"), 180, "Ringing", "a1");
    w.b.respond(w.b.lastRequest("INVITE"), 100, "Trying");
    tick(1000);
    await settle();
    assert.equal(w.a.requests("CANCEL").length, 1);
    assert.deepEqual(w.events.failed, [{ branch: "sip:phone@192.0.2.21:5060", status: 408 }]);
    assert.equal(w.calls[0]!.branches[0]!.state, "timeout");
    tick(2000);
    await settle();
    // B had only a 100: it was given its own Timer C of 3 s, then cancelled (any 1xx allows CANCEL, §9.1).
    assert.deepEqual(w.events.failed.map((f) => f.status), [408, 408]);
    assert.equal(w.proxy.activeBranches(w.calls[0]!).length, 0);
  });

  test("no provisional at all: Timer C acts as a 408 and sends no CANCEL", async () => {
    w.layer.close();
    w = makeWorld({ timerC: 400 });
    w.onInvite = (call) => void w.proxy.fork(call, targetOf(w.c));
    w.caller.send(invite());
    await settle();
    tick(400);
    await settle();
    assert.deepEqual(w.events.failed, [{ branch: "sip:phone@192.0.2.23:5060", status: 408 }]);
    assert.equal(w.c.requests("CANCEL").length, 0);
    assert.equal(w.c.requests("INVITE").length > 1, false, "Timer A first fires at 500 ms");
  });
});

describe("in-dialog routing (§16.4, §16.12)", () => {
  async function answered(): Promise<{ okToCaller: SipResponse }> {
    const { invB } = await ringBoth();
    w.b.respond(invB, 200, "OK", "b1");
    return { okToCaller: w.caller.responses(200)[0]! };
  }

  function inDialog(method: string, from: "caller" | "callee", cseq: number, extra: string[] = []): string {
    const callerSide = from === "caller";
    const uri = callerSide ? "sip:phone@192.0.2.22:5060" : "sip:alice@192.0.2.10:5060";
    const via = callerSide ? "192.0.2.10:5060" : "192.0.2.22:5060";
    const fromH = callerSide ? '"Alice" <sip:200@192.0.2.1>;tag=alice' : "<sip:1000@192.0.2.1>;tag=b1";
    const toH = callerSide ? "<sip:1000@192.0.2.1>;tag=b1" : '"Alice" <sip:200@192.0.2.1>;tag=alice';
    return [
      `${method} ${uri} SIP/2.0`,
      `Via: SIP/2.0/UDP ${via};branch=z9hG4bK${method}${from}${cseq};rport`,
      `Route: <sip:${PROXY_ADDRESS}:${PROXY_PORT};lr>`,
      "Max-Forwards: 70",
      `From: ${fromH}`,
      `To: ${toH}`,
      "Call-ID: call-1@192.0.2.10",
      `CSeq: ${cseq} ${method}`,
      ...extra,
      "Content-Length: 0",
      "",
      "",
    ].join("\r\n");
  }

  test("ACK for the 2xx is forwarded statelessly to the callee's flow with our Route removed", async () => {
    await answered();
    w.caller.send(inDialog("ACK", "caller", 1));
    const ack = w.b.lastRequest("ACK");
    assert.equal(ack.uri, "sip:phone@192.0.2.22:5060");
    assert.deepEqual(getHeaders(ack, "route"), []);
    assert.equal(ack.via.length, 2);
    assert.equal(ack.via[0]!.host, PROXY_ADDRESS);
    assert.equal(ack.maxForwards, 69);
    // A retransmitted ACK is forwarded again with the same branch (§16.11).
    w.caller.send(inDialog("ACK", "caller", 1));
    const acks = w.b.requests("ACK");
    assert.equal(acks.length, 2);
    assert.equal(acks[0]!.via[0]!.branch, acks[1]!.via[0]!.branch);
  });

  test("re-INVITE and INFO from the caller reach the callee; responses come back through the proxy", async () => {
    await answered();
    w.caller.send(inDialog("INFO", "caller", 2));
    const info = w.b.lastRequest("INFO");
    w.b.respond(info, 200, "OK");
    const ok = w.caller.responses(200).find((r) => r.cseq.method === "INFO");
    assert.ok(ok);
    assert.equal(ok.via.length, 1);
    w.caller.send(inDialog("INVITE", "caller", 3));
    const reinvite = w.b.lastRequest("INVITE");
    assert.equal(reinvite.cseq.seq, 3);
    w.b.respond(reinvite, 200, "OK");
    assert.ok(w.caller.responses(200).find((r) => r.cseq.method === "INVITE" && r.cseq.seq === 3));
  });

  test("CANCEL of a re-INVITE (§16.10): 200 to the sender, CANCEL to the callee after its provisional, the 487 comes back, the dialog stays", async () => {
    await answered();
    w.caller.send(inDialog("INVITE", "caller", 3));
    const reinvite = w.b.lastRequest("INVITE");
    w.b.respond(reinvite, 100, "Trying");
    await settle();
    w.caller.send(inDialog("CANCEL", "caller", 3, ['Reason: SIP;cause=487;text="changed my mind"']).replace("branch=z9hG4bKCANCELcaller3", "branch=z9hG4bKINVITEcaller3"));
    await settle();
    assert.ok(w.caller.responses(200).find((r) => r.cseq.method === "CANCEL"), "200 to the CANCEL");
    const cancel = w.b.lastRequest("CANCEL");
    assert.equal(cancel.via[0]!.branch, reinvite.via[0]!.branch, "matches the forwarded re-INVITE's transaction");
    assert.equal(cancel.cseq.seq, 3);
    assert.equal(getHeader(cancel, "reason"), 'SIP;cause=487;text="changed my mind"');
    w.b.respond(cancel, 200, "OK");
    w.b.respond(reinvite, 487, "Request Terminated");
    await settle();
    assert.ok(w.caller.responses(487).find((r) => r.cseq.method === "INVITE" && r.cseq.seq === 3), "the 487 reaches the caller");
    assert.equal(w.proxy.dialogCount(), 1, "a cancelled re-INVITE leaves the dialog as it was");
  });

  test("CANCEL of a re-INVITE before any provisional waits for one (§9.1); after the final it changes nothing", async () => {
    await answered();
    w.caller.send(inDialog("INVITE", "caller", 3));
    const reinvite = w.b.lastRequest("INVITE");
    const cancelText = inDialog("CANCEL", "caller", 3).replace("branch=z9hG4bKCANCELcaller3", "branch=z9hG4bKINVITEcaller3");
    w.caller.send(cancelText);
    await settle();
    assert.equal(w.b.requests("CANCEL").length, 0, "not before a provisional response");
    w.b.respond(reinvite, 180, "Ringing");
    await settle();
    assert.equal(w.b.requests("CANCEL").length, 1, "sent once the provisional came");
    w.b.respond(reinvite, 200, "OK"); // the answer beat the CANCEL
    await settle();
    assert.ok(w.caller.responses(200).find((r) => r.cseq.method === "INVITE" && r.cseq.seq === 3));
    w.caller.send(cancelText.replace("branch=z9hG4bKINVITEcaller3", "branch=z9hG4bKINVITEcaller3x"));
    await settle();
    assert.equal(w.b.requests("CANCEL").length, 1, "nothing more goes to the callee");
  });

  test("BYE from the callee reaches the caller's flow, its 200 comes back, the dialog ends (onEnded by callee)", async () => {
    await answered();
    w.b.send(inDialog("BYE", "callee", 1));
    const bye = w.caller.lastRequest("BYE");
    assert.equal(bye.uri, "sip:alice@192.0.2.10:5060");
    assert.deepEqual(getHeaders(bye, "route"), []);
    assert.equal(w.proxy.dialogCount(), 0);
    assert.deepEqual(w.events.ended, [{ answered: true, by: "callee" }]);
    w.caller.respond(bye, 200, "OK");
    assert.ok(w.b.responses(200).find((r) => r.cseq.method === "BYE"));
  });

  test("BYE from the caller ends the dialog as the caller's; a request in an unknown dialog gets 481", async () => {
    await answered();
    w.caller.send(inDialog("BYE", "caller", 2));
    assert.equal(w.b.requests("BYE").length, 1);
    assert.deepEqual(w.events.ended, [{ answered: true, by: "caller" }]);
    w.caller.send(inDialog("INFO", "caller", 3));
    assert.ok(w.caller.responses(481).length === 1);
  });

  test("releaseDialog (the answering device is gone): the caller gets a BYE on its behalf with Reason 480, the dialog is forgotten, later requests get 481", async () => {
    await answered();
    assert.equal(w.proxy.dialogCount(), 1);
    w.proxy.releaseDialog(w.calls.at(-1)!);
    assert.equal(w.proxy.dialogCount(), 0);
    const bye = w.caller.lastRequest("BYE");
    assert.equal(bye.uri, "sip:alice@192.0.2.10:5060", "to the caller's Contact");
    assert.equal(bye.to.tag, "alice", "to the caller, with its tag");
    assert.equal(bye.from.tag, "b1", "from the callee's side of the dialog");
    assert.equal(getHeader(bye, "reason"), 'SIP;cause=480;text="Callee unreachable"');
    assert.equal(w.b.requests("BYE").length, 0, "nothing to the dead phone");
    w.caller.respond(bye, 200, "OK");
    w.caller.send(inDialog("INFO", "caller", 3));
    assert.ok(w.caller.responses(481).length === 1);
  });

  test("releaseDialog toward the callee (the calling device is gone): the answering phone gets a BYE from the caller's side with Reason 480", async () => {
    await answered();
    w.proxy.releaseDialog(w.calls.at(-1)!, "callee");
    assert.equal(w.proxy.dialogCount(), 0);
    const bye = w.b.lastRequest("BYE");
    assert.equal(bye.uri, `sip:phone@${w.b.address}:${w.b.port}`, "to the callee's Contact from its 2xx");
    assert.deepEqual(getHeaders(bye, "route"), [], "no hop between us and the phone");
    assert.equal(bye.from.tag, "alice", "from the caller, with its tag");
    assert.equal(bye.to.tag, "b1", "to the callee, with its tag");
    assert.equal(bye.cseq.method, "BYE");
    assert.ok(bye.cseq.seq > 1, "above the caller's INVITE CSeq");
    assert.equal(getHeader(bye, "reason"), 'SIP;cause=480;text="Caller unreachable"');
    assert.equal(w.caller.requests("BYE").length, 0, "nothing to the dead phone");
    w.b.respond(bye, 200, "OK");
    w.b.send(inDialog("INFO", "callee", 3));
    assert.ok(w.b.responses(481).length === 1, "the dialog is forgotten");
  });

  test("releaseDialog toward the callee routes through the proxies below us that recorded themselves in the 2xx", async () => {
    const { invB } = await ringBoth();
    // Two proxies between us and the phone: the 2xx's Record-Route lists the nearest-to-phone first.
    const recorded = ["<sip:d2.example.net;lr>", "<sip:d1.example.net;lr>", ...getHeaders(invB, "record-route")];
    const ok = createResponse(invB, 200, "OK", {
      toTag: "b1",
      headers: [...recorded.map((value) => ({ name: "record-route", value })), { name: "contact", value: `<sip:phone@${w.b.address}:${w.b.port}>` }],
    });
    w.b.send(ok);
    await settle();
    w.proxy.releaseDialog(w.calls.at(-1)!, "callee");
    const bye = w.b.lastRequest("BYE");
    assert.deepEqual(getHeaders(bye, "route"), ["<sip:d1.example.net;lr>", "<sip:d2.example.net;lr>"], "nearest hop first, our own entry left out");
  });

  test("PRACK in an early dialog goes to the branch that sent the 18x", async () => {
    await ringBoth();
    w.caller.send(inDialog("PRACK", "caller", 2).replace(/tag=b1/, "tag=a1"));
    assert.equal(w.a.requests("PRACK").length, 1);
    assert.equal(w.b.requests("PRACK").length, 0);
  });
});

describe("helpers", () => {
  test("stripTopVia removes one value from a comma-joined Via line", () => {
    const res = parse("SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKa, SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKb\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n") as SipResponse;
    const out = parse(serialize(stripTopVia(res))) as SipResponse;
    assert.deepEqual(out.via.map((v) => v.branch), ["z9hG4bKb"]);
  });

  test("stripTopVia relays a datagram's bytes less its top Via line; anything it cannot cut exactly is re-serialised", () => {
    const lines = (via: string[], extra: string[] = [], cl: string | null = "l: 4") =>
      ["SIP/2.0 180 Ringing", ...via, "f: <sip:a@x>;tag=1", "t: <sip:b@x>;tag=9", "i: x", "CSeq: 1 INVITE", ...extra, ...(cl === null ? [] : [cl])].join("\r\n") + "\r\n\r\nbodyTRAILING";
    const ours = "v: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKours";
    const theirs = "Via: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKb;received=127.0.0.1";
    // Our Via first, on its own line: the bytes as received, that line cut, nothing past Content-Length.
    const text = lines([ours, theirs], ["X-Odd:  kept  as  is"]);
    const res = parse(text) as SipResponse;
    const out = serialize(stripTopVia(res));
    assert.equal(out.toString(), text.replace(ours + "\r\n", "").replace("TRAILING", ""));
    assert.deepEqual((parse(out) as SipResponse).via.map((v) => v.branch), ["z9hG4bKb"]);
    // Leading CRLFs are left out; a top Via that is the last header line.
    const last = ["SIP/2.0 200 OK", "From: <sip:a@x>;tag=1", "To: <sip:b@x>;tag=9", "Call-ID: x", "CSeq: 1 INVITE", "Content-Length: 0", ours, theirs.replace("Via", "v")].join("\r\n") + "\r\n\r\n";
    assert.equal(serialize(stripTopVia(parse("\r\n\r\n" + last) as SipResponse)).toString(), last.replace(ours + "\r\n", ""));
    // Both Vias on one line (as SIPp's [last_Via:] writes them), with odd spacing round the comma: the value and its comma go.
    const joined = lines([`${ours} ,  ${theirs.slice(5)}`, "Via: SIP/2.0/UDP 192.0.2.20;branch=z9hG4bKc"]);
    const joinedOut = serialize(stripTopVia(parse(joined) as SipResponse));
    assert.equal(joinedOut.toString(), joined.replace(`${ours.slice(3)} ,  `, "").replace("TRAILING", ""));
    assert.deepEqual((parse(joinedOut) as SipResponse).via.map((v) => v.branch), ["z9hG4bKb", "z9hG4bKc"]);
    // Re-serialised: a folded top Via line; no Content-Length; a non-ASCII header block; a copy with another status.
    const reserialised = (r: SipResponse): void => {
      const bytes = serialize(stripTopVia(r)).toString();
      assert.match(bytes, /^SIP\/2\.0 \d+ .*\r\nVia: SIP\/2\.0\/UDP 192\.0\.2\.10;branch=z9hG4bKb;received=127\.0\.0\.1\r\nFrom: /);
      assert.ok(!bytes.includes("z9hG4bKours"));
    };
    reserialised(parse(lines([ours.replace(";branch", "\r\n ;branch"), theirs])) as SipResponse);
    reserialised(parse(lines([ours, theirs], [], null)) as SipResponse);
    reserialised(parse(lines([ours, theirs], ["Subject: caf\u00e9"])) as SipResponse);
    const copy = { ...(parse(text) as SipResponse), status: 500, reason: "Server Internal Error" };
    assert.match(serialize(stripTopVia(copy)).toString(), /^SIP\/2\.0 500 Server Internal Error\r\nVia: SIP\/2\.0\/UDP 192\.0\.2\.10/);
  });

  test("textHash64: 14 base-36 characters, the same for the same text, different for a one-character change", () => {
    const a = textHash64("sip:700@127.0.0.1\ncall-1\nalice\n\n1");
    assert.match(a, /^[0-9a-z]{14}$/);
    assert.equal(textHash64("sip:700@127.0.0.1\ncall-1\nalice\n\n1"), a);
    assert.notEqual(textHash64("sip:700@127.0.0.1\ncall-1\nalice\n\n2"), a);
    assert.match(textHash64(""), /^[0-9a-z]{14}$/);
    const seen = new Set(Array.from({ length: 10_000 }, (_, i) => textHash64(`call-${i}`)));
    assert.equal(seen.size, 10_000, "no collision among 10,000 Call-IDs");
  });

  test("removeLeadingRoutes drops values across lines", () => {
    const req = parse("BYE sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKa\r\nRoute: <sip:p1;lr>\r\nRoute: <sip:p2;lr>, <sip:p3;lr>\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: x\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n") as SipRequest;
    assert.deepEqual(getHeaders(removeLeadingRoutes(req, 2), "route"), ["<sip:p3;lr>"]);
    assert.deepEqual(getHeaders(removeLeadingRoutes(req, 0), "route"), ["<sip:p1;lr>", "<sip:p2;lr>", "<sip:p3;lr>"]);
  });
});

// Branch is part of the public API the engine reads; keep the type import honest.
export type { Branch };

describe("answerLocally (the appliance as UAS, voicemail)", () => {
  test("2xx on the proxy's own tag with Record-Route copied and the body; live branches cancelled; resend goes out again; the call is finished and reports nothing more", async () => {
    w.caller.send(invite(["Record-Route: <sip:edge.test;lr>"]));
    await settle();
    w.a.respond(w.a.lastRequest("INVITE"), 180, "Ringing", "a1");
    w.b.respond(w.b.lastRequest("INVITE"), 180, "Ringing", "b1");
    const call = w.calls[0]!;
    const r = w.proxy.answerLocally(call, [{ name: "contact", value: "<sip:192.0.2.1:5060>" }], { contentType: "application/sdp", body: Buffer.from("v=0\r\n") });
    assert.ok(r);
    const ok = w.caller.responses(200);
    assert.equal(ok.length, 1);
    assert.ok(ok[0]!.to.tag !== undefined && ok[0]!.to.tag !== "a1" && ok[0]!.to.tag !== "b1", "the proxy's own tag");
    assert.deepEqual(getHeaders(ok[0]!, "record-route"), ["<sip:edge.test;lr>"]);
    assert.equal(getHeader(ok[0]!, "contact"), "<sip:192.0.2.1:5060>");
    assert.equal(ok[0]!.body.toString(), "v=0\r\n");
    assert.equal(w.a.requests("CANCEL").length, 1);
    assert.equal(w.b.requests("CANCEL").length, 1);
    assert.equal(call.finished, true);
    r.resend();
    assert.equal(w.caller.responses(200).length, 2, "resend: the same 2xx again (RFC 6026 §8.7)");
    assert.equal(w.proxy.answerLocally(call, [], { contentType: "application/sdp", body: Buffer.from("v=0\r\n") }), undefined, "only once");
    // A late 2xx of a cancelled branch is ACKed and BYEd, never relayed.
    w.a.respond(w.a.lastRequest("INVITE"), 200, "OK", "a1");
    assert.equal(w.caller.responses(200).length, 2);
    assert.equal(w.a.requests("BYE").length, 1);
    assert.deepEqual(w.events.ended, []);
    assert.deepEqual(w.events.answered, []);
  });
});
