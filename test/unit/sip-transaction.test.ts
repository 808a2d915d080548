// Transaction layer (RFC 3261 §17, RFC 6026): every state of the four state machines, the
// retransmission schedules, matching (RFC 3261 and RFC 2543), cleanup and overload.
// Deterministic: node:test mock timers, advanced one millisecond at a time so every send is
// stamped with the exact moment it happened.
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, mock, test } from "node:test";
import { parseDatagram } from "../../agent/sip/message.ts";
import { createResponse, serialize } from "../../agent/sip/serialize.ts";
import {
  TransactionLayer,
  TransactionState,
  buildAck,
  buildCancel,
  createBranch,
  isRfc3261Branch,
  resolveTimers,
  type ClientTransaction,
  type ClientTransactionCallbacks,
  type TransactionLayerOptions,
} from "../../agent/sip/transaction.ts";
import type { Flow, SipRequest, SipResponse, Transport } from "../../agent/sip/types.ts";
import { loadRfc4475 } from "../fixtures/rfc4475.ts";

// --- fixtures -------------------------------------------------------------------------------

let now = 0;

/** Advances the mocked clock ms milliseconds, one at a time. */
function advance(ms: number): void {
  for (let i = 0; i < ms; i++) {
    now++;
    mock.timers.tick(1);
  }
}

interface Sent {
  at: number;
  flow: Flow;
  text: string;
  bytes: Buffer;
}

class FakeTransport implements Transport {
  sent: Sent[] = [];
  failing = false;
  send(flow: Flow, data: Buffer): boolean {
    if (this.failing) return false;
    this.sent.push({ at: now, flow, text: data.toString("utf8"), bytes: Buffer.from(data) });
    return true;
  }
  isReliable(flow: Flow): boolean {
    return flow.transport === "tcp";
  }
  /** First lines of what was sent ("INVITE sip:..." / "SIP/2.0 180 Ringing"). */
  startLines(): string[] {
    return this.sent.map((s) => s.text.slice(0, s.text.indexOf("\r\n")));
  }
  times(): number[] {
    return this.sent.map((s) => s.at);
  }
  clear(): void {
    this.sent = [];
  }
}

const udp: Flow = { transport: "udp", remoteAddress: "192.0.2.10", remotePort: 5060, localAddress: "192.0.2.1", localPort: 5060 };
const tcp: Flow = { transport: "tcp", remoteAddress: "192.0.2.10", remotePort: 40000, localAddress: "192.0.2.1", localPort: 5060, connectionId: 7 };

function parse(text: string | Buffer): SipRequest | SipResponse {
  const r = parseDatagram(typeof text === "string" ? Buffer.from(text) : text);
  if (!r.ok) throw new Error(`fixture does not parse: ${JSON.stringify(r.error)}`);
  return r.message;
}

function parseRequest(text: string | Buffer): SipRequest {
  const m = parse(text);
  assert.equal(m.kind, "request");
  return m as SipRequest;
}

function parseResponse(text: string | Buffer): SipResponse {
  const m = parse(text);
  assert.equal(m.kind, "response");
  return m as SipResponse;
}

interface RequestSpec {
  method?: string;
  branch?: string | null;
  sentBy?: string;
  uri?: string;
  callId?: string;
  cseq?: number;
  cseqMethod?: string;
  fromTag?: string;
  toTag?: string;
  extra?: string[];
}

function request(spec: RequestSpec = {}): SipRequest {
  const method = spec.method ?? "INVITE";
  const branch = spec.branch === null ? "" : `;branch=${spec.branch ?? "z9hG4bKabc123"}`;
  const toTag = spec.toTag !== undefined ? `;tag=${spec.toTag}` : "";
  const lines = [
    `${method} ${spec.uri ?? "sip:201@192.0.2.1"} SIP/2.0`,
    `Via: SIP/2.0/UDP ${spec.sentBy ?? "192.0.2.10:5060"}${branch}`,
    "Max-Forwards: 70",
    `From: "Alice" <sip:200@192.0.2.1>;tag=${spec.fromTag ?? "f1"}`,
    `To: <sip:201@192.0.2.1>${toTag}`,
    `Call-ID: ${spec.callId ?? "call-1@192.0.2.10"}`,
    `CSeq: ${spec.cseq ?? 1} ${spec.cseqMethod ?? method}`,
    ...(spec.extra ?? []),
    "Content-Length: 0",
    "",
    "",
  ];
  return parseRequest(lines.join("\r\n"));
}

/** A response to req as a peer would send it (serialised and parsed again). */
function responseTo(req: SipRequest, status: number, reason: string, toTag?: string): SipResponse {
  return parseResponse(serialize(createResponse(req, status, reason, toTag !== undefined ? { toTag } : {})));
}

interface Recorder {
  callbacks: ClientTransactionCallbacks;
  provisional: number[];
  finals: number[];
  timeouts: Array<{ status: number; timer: string }>;
  transportErrors: number;
  timerC: number;
  terminated: number;
}

function recorder(extra: Partial<ClientTransactionCallbacks> = {}): Recorder {
  const r: Recorder = {
    provisional: [],
    finals: [],
    timeouts: [],
    transportErrors: 0,
    timerC: 0,
    terminated: 0,
    callbacks: {
      onProvisional: (res) => r.provisional.push(res.status),
      onFinal: (res) => r.finals.push(res.status),
      onTimeout: (res, _tx, timer) => r.timeouts.push({ status: res.status, timer }),
      onTransportError: () => r.transportErrors++,
      onTerminated: () => r.terminated++,
      ...extra,
    },
  };
  return r;
}

let transport: FakeTransport;
let layers: TransactionLayer[] = [];

// Exact lingering timers (lingerLateMs 0): these tests pin the RFC's values to the millisecond.
// The batches the agent runs them in, up to 100 ms late and never early, are tested on their own.
function makeLayer(options: Partial<TransactionLayerOptions> = {}): TransactionLayer {
  const layer = new TransactionLayer({ transport, lingerLateMs: 0, ...options });
  layers.push(layer);
  return layer;
}

function sendOk(layer: TransactionLayer, req: SipRequest, flow: Flow, rec: Recorder, opts = {}): ClientTransaction {
  const r = layer.sendRequest(req, flow, rec.callbacks, opts);
  if (!r.ok) throw new Error(`sendRequest failed: ${r.error}`);
  return r.tx;
}

beforeEach(() => {
  now = 0;
  mock.timers.enable({ apis: ["setTimeout"] });
  transport = new FakeTransport();
  layers = [];
});

afterEach(() => {
  for (const l of layers) l.close();
  mock.timers.reset();
});

// --- timers and branches ----------------------------------------------------------------------

describe("timer values", () => {
  test("RFC 3261 Table 4 defaults for UDP", () => {
    const t = resolveTimers(undefined, false);
    assert.deepEqual(t, { T1: 500, T2: 4000, T4: 5000, A: 500, B: 32000, C: 181000, D: 32000, E: 500, F: 32000, G: 500, H: 32000, I: 5000, J: 32000, K: 5000, L: 32000, M: 32000 });
  });
  test("reliable transports zero D, I, J, K", () => {
    const t = resolveTimers({ T1: 10, T2: 40, T4: 50, D: 99, I: 99 }, true);
    assert.equal(t.D, 0);
    assert.equal(t.I, 0);
    assert.equal(t.J, 0);
    assert.equal(t.K, 0);
    assert.equal(t.B, 640);
    assert.equal(t.H, 640);
  });
  test("derived from T1/T4, overridable, D floored at 32 s unless set", () => {
    const t = resolveTimers({ T1: 10, T2: 40, T4: 50, C: 300 }, false);
    assert.equal(t.A, 10);
    assert.equal(t.F, 640);
    assert.equal(t.J, 640);
    assert.equal(t.K, 50);
    assert.equal(t.I, 50);
    assert.equal(t.C, 300);
    assert.equal(t.D, 32000);
    assert.equal(resolveTimers({ T1: 10, T2: 40, T4: 50, D: 70 }, false).D, 70);
  });
  test("nonsense overrides fall back to defaults", () => {
    const t = resolveTimers({ T1: Number.NaN, T2: -1, T4: Infinity }, false);
    assert.equal(t.T1, 500);
    assert.equal(t.T2, 4000);
    assert.equal(t.T4, 5000);
  });
});

describe("branches", () => {
  test("createBranch: magic cookie plus 96 random bits, token characters only", () => {
    const seen = new Set<string>();
    for (let i = 0; i < 1000; i++) {
      const b = createBranch();
      assert.match(b, /^z9hG4bK[A-Za-z0-9_-]{16}$/);
      seen.add(b);
    }
    assert.equal(seen.size, 1000);
    assert.match(makeLayer().createBranch(), /^z9hG4bK/);
  });
  test("a bare cookie is not an RFC 3261 branch", () => {
    assert.equal(isRfc3261Branch("z9hG4bK"), false);
    assert.equal(isRfc3261Branch(undefined), false);
    assert.equal(isRfc3261Branch("abc"), false);
    assert.equal(isRfc3261Branch("z9hG4bKx"), true);
  });
});

// --- INVITE client transaction ----------------------------------------------------------------

describe("INVITE client transaction", () => {
  test("Calling over UDP: Timer A doubles, Timer B times out once with a 408", () => {
    const layer = makeLayer();
    const rec = recorder();
    const tx = sendOk(layer, request(), udp, rec);
    assert.equal(tx.state, TransactionState.Calling);
    advance(31999);
    assert.deepEqual(rec.timeouts, [], "Timer B is 64*T1 from the first send, not from the last retransmission");
    advance(1);
    // §17.1.1.2: sends at 0, then after T1, 2T1, 4T1, 8T1, 16T1, 32T1 (cumulative).
    assert.deepEqual(transport.times(), [0, 500, 1500, 3500, 7500, 15500, 31500]);
    assert.ok(transport.startLines().every((l) => l.startsWith("INVITE ")));
    assert.deepEqual(rec.timeouts, [{ status: 408, timer: "B" }]);
    assert.equal(tx.state, TransactionState.Terminated);
    assert.equal(rec.terminated, 1);
    assert.deepEqual(layer.counts(), { server: 0, client: 0 });
    advance(100000);
    assert.equal(transport.sent.length, 7);
    assert.equal(rec.timeouts.length, 1);
  });

  test("Calling over TCP: no retransmission, Timer B still fires", () => {
    const layer = makeLayer({ timers: { T1: 10, T2: 40, T4: 50 } });
    const rec = recorder();
    sendOk(layer, request(), tcp, rec, { timerC: false });
    advance(700);
    assert.deepEqual(transport.times(), [0]);
    assert.deepEqual(rec.timeouts, [{ status: 408, timer: "B" }]);
  });

  test("Proceeding stops retransmissions; 1xx go to the TU", () => {
    const layer = makeLayer();
    const rec = recorder();
    const req = request();
    const tx = sendOk(layer, req, udp, rec);
    advance(600);
    assert.equal(layer.receiveResponse(responseTo(req, 100, "Trying"), udp).kind, "delivered");
    assert.equal(tx.state, TransactionState.Proceeding);
    layer.receiveResponse(responseTo(req, 180, "Ringing", "t1"), udp);
    assert.deepEqual(rec.provisional, [100, 180]);
    advance(60000);
    assert.deepEqual(transport.times(), [0, 500], "no retransmission in Proceeding, no Timer B");
    assert.deepEqual(rec.timeouts, []);
    assert.equal(tx.state, TransactionState.Proceeding);
  });

  for (const [state, provisional] of [["Calling", false], ["Proceeding", true]] as const) {
    test(`300-699 in ${state}: ACK per §17.1.1.3, retransmissions re-ACKed and absorbed, Timer D cleans up`, () => {
      const layer = makeLayer();
      const rec = recorder();
      const req = request({ extra: ["Route: <sip:proxy.example.com;lr>", "Route: <sip:p2.example.com;lr>"] });
      const tx = sendOk(layer, req, udp, rec);
      if (provisional) layer.receiveResponse(responseTo(req, 180, "Ringing", "callee"), udp);
      transport.clear();
      const busy = responseTo(req, 486, "Busy Here", "callee");
      assert.equal(layer.receiveResponse(busy, udp).kind, "delivered");
      assert.equal(tx.state, TransactionState.Completed);
      assert.deepEqual(rec.finals, [486]);

      assert.equal(transport.sent.length, 1);
      const ack = parseRequest(transport.sent[0]!.text);
      assert.equal(ack.method, "ACK");
      assert.equal(ack.uri, req.uri, "same Request-URI");
      assert.equal(ack.callId, req.callId);
      assert.equal(ack.from.raw, req.from.raw);
      assert.equal(ack.to.tag, "callee", "To from the response");
      assert.deepEqual(ack.cseq, { seq: req.cseq.seq, method: "ACK" });
      assert.equal(ack.via.length, 1);
      assert.equal(ack.via[0]!.branch, req.via[0]!.branch, "top Via of the INVITE");
      assert.deepEqual(
        ack.headers.filter((h) => h.name === "route").map((h) => h.value),
        ["<sip:proxy.example.com;lr>", "<sip:p2.example.com;lr>"],
      );
      assert.equal(transport.sent[0]!.flow, udp, "ACK goes where the INVITE went");

      // Response retransmission: the same ACK again, byte for byte, TU not bothered.
      assert.equal(layer.receiveResponse(busy, udp).kind, "absorbed");
      assert.equal(transport.sent.length, 2);
      assert.ok(transport.sent[1]!.bytes.equals(transport.sent[0]!.bytes));
      assert.deepEqual(rec.finals, [486]);
      // A late provisional or 2xx in Completed is absorbed too.
      assert.equal(layer.receiveResponse(responseTo(req, 200, "OK", "x"), udp).kind, "absorbed");

      advance(31999);
      assert.equal(tx.state, TransactionState.Completed);
      advance(1);
      assert.equal(tx.state, TransactionState.Terminated);
      assert.deepEqual(layer.counts(), { server: 0, client: 0 });
      assert.equal(layer.receiveResponse(busy, udp).kind, "stray");
    });
  }

  test("Completed keeps no ACK bytes: each re-ACK is made from the INVITE's Request-URI and Routes and the retransmitted response (its To, §17.1.1.3)", () => {
    const layer = makeLayer();
    const rec = recorder();
    const req = request({ extra: ["Route: <sip:proxy.example.com;lr>"] });
    const tx = sendOk(layer, req, udp, rec);
    transport.clear();
    const busy = responseTo(req, 486, "Busy Here", "callee");
    layer.receiveResponse(busy, udp);
    const kept = Object.values(tx).filter((v): v is string => typeof v === "string");
    assert.ok(kept.every((v) => !v.includes("ACK")), `the transaction keeps no ACK text: ${JSON.stringify(kept)}`);
    // A retransmission: the same ACK, byte for byte.
    layer.receiveResponse(busy, udp);
    assert.ok(transport.sent[1]!.bytes.equals(transport.sent[0]!.bytes));
    // A 486 of the same transaction with another To tag is acknowledged with its own To.
    layer.receiveResponse(responseTo(req, 486, "Busy Here", "other"), udp);
    const again = parseRequest(transport.sent[2]!.text);
    assert.equal(again.method, "ACK");
    assert.equal(again.uri, req.uri);
    assert.equal(again.to.tag, "other");
    assert.equal(again.via[0]!.branch, req.via[0]!.branch);
    assert.deepEqual(again.headers.filter((h) => h.name === "route").map((h) => h.value), ["<sip:proxy.example.com;lr>"]);
    assert.deepEqual(rec.finals, [486], "the TU saw the first 486 only");
  });

  test("300-699 over TCP: ACK sent, Timer D is zero", () => {
    const layer = makeLayer();
    const rec = recorder();
    const req = request();
    const tx = sendOk(layer, req, tcp, rec);
    layer.receiveResponse(responseTo(req, 603, "Decline", "t"), tcp);
    assert.deepEqual(transport.startLines().map((l) => l.split(" ")[0]), ["INVITE", "ACK"]);
    assert.equal(tx.state, TransactionState.Terminated);
    assert.deepEqual(rec.finals, [603]);
    assert.equal(layer.counts().client, 0);
  });

  test("2xx: Accepted (RFC 6026), no ACK from the transaction, every 2xx to the TU until Timer M", () => {
    const layer = makeLayer();
    const rec = recorder();
    const req = request();
    const tx = sendOk(layer, req, udp, rec);
    advance(100);
    layer.receiveResponse(responseTo(req, 200, "OK", "fork-a"), udp);
    assert.equal(tx.state, TransactionState.Accepted);
    // A 2xx from a second fork and a retransmission of the first.
    layer.receiveResponse(responseTo(req, 200, "OK", "fork-b"), udp);
    layer.receiveResponse(responseTo(req, 200, "OK", "fork-a"), udp);
    // Non-2xx and 1xx after acceptance are dropped.
    assert.equal(layer.receiveResponse(responseTo(req, 487, "Request Terminated", "fork-c"), udp).kind, "absorbed");
    assert.equal(layer.receiveResponse(responseTo(req, 180, "Ringing", "fork-c"), udp).kind, "absorbed");
    assert.deepEqual(rec.finals, [200, 200, 200]);
    assert.deepEqual(transport.startLines().length, 1, "only the INVITE: the 2xx ACK is the TU's");
    advance(40000);
    assert.deepEqual(transport.times(), [0], "no retransmission after acceptance");
    assert.equal(tx.state, TransactionState.Terminated);
    assert.equal(layer.counts().client, 0);
    assert.equal(layer.receiveResponse(responseTo(req, 200, "OK", "fork-a"), udp).kind, "stray");
  });

  test("Timer M uses 64*T1 even over TCP", () => {
    const layer = makeLayer({ timers: { T1: 10, T2: 40, T4: 50 } });
    const rec = recorder();
    const req = request();
    const tx = sendOk(layer, req, tcp, rec);
    layer.receiveResponse(responseTo(req, 200, "OK", "a"), tcp);
    advance(639);
    assert.equal(tx.state, TransactionState.Accepted);
    advance(1);
    assert.equal(tx.state, TransactionState.Terminated);
  });

  test("CANCEL is its own client transaction sharing the branch (§17.1.3)", () => {
    const layer = makeLayer();
    const invRec = recorder();
    const canRec = recorder();
    const req = request();
    sendOk(layer, req, udp, invRec);
    layer.receiveResponse(responseTo(req, 180, "Ringing", "t"), udp);
    const cancel = buildCancel(req);
    assert.ok(cancel);
    sendOk(layer, cancel, udp, canRec);
    assert.deepEqual(layer.counts(), { server: 0, client: 2 });
    layer.receiveResponse(responseTo(cancel, 200, "OK", "t"), udp);
    assert.deepEqual(canRec.finals, [200]);
    assert.deepEqual(invRec.finals, []);
    layer.receiveResponse(responseTo(req, 487, "Request Terminated", "t"), udp);
    assert.deepEqual(invRec.finals, [487]);
  });
});

describe("Timer C (proxy INVITE client transaction)", () => {
  const timers = { T1: 10, T2: 40, T4: 50, C: 1000 };

  test("restarted by each provisional above 100; on expiry the TU is told and may restart or terminate", () => {
    const layer = makeLayer({ timers });
    const firedAt: number[] = [];
    const rec = recorder({ onTimerC: () => firedAt.push(now) });
    const req = request();
    const tx = sendOk(layer, req, udp, rec);
    advance(50);
    layer.receiveResponse(responseTo(req, 100, "Trying"), udp); // does not restart C
    advance(450);
    layer.receiveResponse(responseTo(req, 180, "Ringing", "t"), udp); // at 500: C now due at 1500
    advance(999);
    assert.deepEqual(firedAt, [], "100 did not restart it, 180 did");
    advance(1);
    assert.deepEqual(firedAt, [1500]);
    assert.equal(tx.state, TransactionState.Proceeding, "the proxy decides");
    assert.deepEqual(rec.timeouts, []);
    assert.ok(tx.kind === "invite");
    assert.equal(tx.restartTimerC(200), true);
    advance(200);
    assert.deepEqual(firedAt, [1500, 1700]);
    tx.terminate();
    assert.equal(tx.state, TransactionState.Terminated);
    assert.equal(layer.counts().client, 0);
    assert.equal(tx.restartTimerC(), false);
    advance(5000);
    assert.deepEqual(firedAt, [1500, 1700]);
  });

  test("without a provisional response Timer C acts as a 408 (§16.8)", () => {
    const layer = makeLayer({ timers: { ...timers, B: 5000 } });
    const rec = recorder({ onTimerC: () => assert.fail("not with no provisional") });
    const tx = sendOk(layer, request(), tcp, rec);
    advance(1000);
    assert.deepEqual(rec.timeouts, [{ status: 408, timer: "C" }]);
    assert.equal(tx.state, TransactionState.Terminated);
    advance(5000);
    assert.equal(rec.timeouts.length, 1);
  });

  test("a final response stops Timer C; timerC:false disables it; per-request value wins", () => {
    const layer = makeLayer({ timers });
    const recA = recorder();
    const reqA = request({ branch: "z9hG4bKa" });
    sendOk(layer, reqA, tcp, recA);
    layer.receiveResponse(responseTo(reqA, 180, "Ringing", "t"), tcp);
    layer.receiveResponse(responseTo(reqA, 200, "OK", "t"), tcp);

    const recB = recorder();
    const reqB = request({ branch: "z9hG4bKb" });
    sendOk(layer, reqB, tcp, recB, { timerC: false });
    layer.receiveResponse(responseTo(reqB, 180, "Ringing", "t"), tcp);

    const firedC: number[] = [];
    const recC = recorder({ onTimerC: () => firedC.push(now) });
    const reqC = request({ branch: "z9hG4bKc" });
    sendOk(layer, reqC, tcp, recC, { timerC: 300 });
    layer.receiveResponse(responseTo(reqC, 183, "Session Progress", "t"), tcp);
    advance(5000);
    assert.deepEqual(recA.timeouts, []);
    assert.deepEqual(recB.timeouts, []);
    assert.deepEqual(firedC, [300]);
  });

  test("a 100 alone counts as a provisional response for §16.8 (CANCEL is allowed)", () => {
    const layer = makeLayer({ timers });
    let fired = 0;
    const rec = recorder({ onTimerC: () => fired++ });
    const req = request();
    sendOk(layer, req, tcp, rec);
    layer.receiveResponse(responseTo(req, 100, "Trying"), tcp);
    advance(1000);
    assert.equal(fired, 1);
    assert.deepEqual(rec.timeouts, []);
  });

  test("after a provisional, without onTimerC the transaction times out with a 408", () => {
    const layer = makeLayer({ timers });
    const rec = recorder();
    const req = request();
    sendOk(layer, req, tcp, rec);
    layer.receiveResponse(responseTo(req, 180, "Ringing", "t"), tcp);
    advance(1000);
    assert.deepEqual(rec.timeouts, [{ status: 408, timer: "C" }]);
  });
});

// --- non-INVITE client transaction ------------------------------------------------------------

describe("non-INVITE client transaction", () => {
  test("Trying over UDP: Timer E doubles up to T2, Timer F times out once", () => {
    const layer = makeLayer();
    const rec = recorder();
    const tx = sendOk(layer, request({ method: "OPTIONS" }), udp, rec);
    assert.equal(tx.state, TransactionState.Trying);
    advance(31999);
    assert.deepEqual(rec.timeouts, [], "Timer F is 64*T1 from the first send");
    advance(1);
    // Intervals 500, 1000, 2000, 4000, then capped at 4000.
    assert.deepEqual(transport.times(), [0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]);
    assert.deepEqual(rec.timeouts, [{ status: 408, timer: "F" }]);
    assert.equal(tx.state, TransactionState.Terminated);
    assert.equal(layer.counts().client, 0);
    advance(10000);
    assert.equal(transport.sent.length, 11);
  });

  test("Proceeding: Timer E fires every T2; Timer F still applies", () => {
    const layer = makeLayer();
    const rec = recorder();
    const req = request({ method: "REGISTER" });
    const tx = sendOk(layer, req, udp, rec);
    advance(100);
    layer.receiveResponse(responseTo(req, 100, "Trying"), udp);
    assert.equal(tx.state, TransactionState.Proceeding);
    advance(31900);
    // E was due at 500 (set in Trying), then every T2 from there.
    assert.deepEqual(transport.times(), [0, 500, 4500, 8500, 12500, 16500, 20500, 24500, 28500]);
    assert.deepEqual(rec.provisional, [100]);
    assert.deepEqual(rec.timeouts, [{ status: 408, timer: "F" }]);
  });

  test("final response: Completed absorbs retransmissions, Timer K = T4 cleans up", () => {
    const layer = makeLayer();
    const rec = recorder();
    const req = request({ method: "BYE", toTag: "t" });
    const tx = sendOk(layer, req, udp, rec);
    layer.receiveResponse(responseTo(req, 100, "Trying"), udp);
    layer.receiveResponse(responseTo(req, 200, "OK"), udp);
    assert.equal(tx.state, TransactionState.Completed);
    assert.equal(layer.receiveResponse(responseTo(req, 200, "OK"), udp).kind, "absorbed");
    assert.equal(layer.receiveResponse(responseTo(req, 180, "Ringing"), udp).kind, "absorbed");
    assert.deepEqual(rec.finals, [200]);
    advance(4999);
    assert.equal(tx.state, TransactionState.Completed);
    assert.deepEqual(transport.times(), [0], "no retransmission once completed");
    advance(1);
    assert.equal(tx.state, TransactionState.Terminated);
    assert.equal(layer.counts().client, 0);
  });

  test("over TCP: no Timer E, Timer K zero", () => {
    const layer = makeLayer();
    const rec = recorder();
    const req = request({ method: "OPTIONS" });
    const tx = sendOk(layer, req, tcp, rec);
    advance(20000);
    assert.deepEqual(transport.times(), [0]);
    layer.receiveResponse(responseTo(req, 200, "OK"), tcp);
    assert.equal(tx.state, TransactionState.Terminated);
    assert.deepEqual(rec.finals, [200]);
    assert.equal(layer.counts().client, 0);
  });

  test("final directly from Trying", () => {
    const layer = makeLayer();
    const rec = recorder();
    const req = request({ method: "OPTIONS" });
    sendOk(layer, req, udp, rec);
    layer.receiveResponse(responseTo(req, 404, "Not Found", "t"), udp);
    assert.deepEqual(rec.finals, [404]);
    assert.deepEqual(rec.provisional, []);
  });
});

// --- INVITE server transaction ----------------------------------------------------------------

describe("INVITE server transaction", () => {
  test("Proceeding: 100 Trying after 200 ms; a retransmission resends the latest provisional", () => {
    const layer = makeLayer();
    const inv = request();
    const r = layer.receiveRequest(inv, udp);
    assert.equal(r.kind, "new");
    if (r.kind !== "new") return;
    const tx = r.tx;
    assert.equal(tx.state, TransactionState.Proceeding);
    // Retransmission before any response: absorbed, nothing to resend yet.
    assert.equal(layer.receiveRequest(inv, udp).kind, "absorbed");
    assert.equal(transport.sent.length, 0);
    advance(200);
    assert.deepEqual(transport.startLines(), ["SIP/2.0 100 Trying"]);
    assert.equal(layer.receiveRequest(inv, udp).kind, "absorbed");
    assert.deepEqual(transport.startLines(), ["SIP/2.0 100 Trying", "SIP/2.0 100 Trying"]);
    assert.deepEqual(tx.respond(createResponse(inv, 180, "Ringing", { toTag: "uas" })), { ok: true });
    assert.equal(layer.receiveRequest(inv, udp).kind, "absorbed");
    assert.deepEqual(transport.startLines().slice(2), ["SIP/2.0 180 Ringing", "SIP/2.0 180 Ringing"]);
    assert.equal(transport.sent[3]!.flow, udp);
    // An ACK before any final response acknowledges nothing.
    assert.equal(layer.receiveRequest(request({ method: "ACK", cseqMethod: "ACK" }), udp).kind, "absorbed");
    assert.equal(tx.state, TransactionState.Proceeding);
  });

  test("no automatic 100 when the TU answers in time, or when disabled", () => {
    const layer = makeLayer();
    const inv = request();
    const r = layer.receiveRequest(inv, udp);
    assert.equal(r.kind, "new");
    if (r.kind === "new") r.tx.respond(createResponse(inv, 180, "Ringing", { toTag: "x" }));
    advance(1000);
    assert.deepEqual(transport.startLines(), ["SIP/2.0 180 Ringing"]);

    transport.clear();
    const quiet = makeLayer({ tryingDelay: false });
    quiet.receiveRequest(request({ branch: "z9hG4bKquiet" }), udp);
    advance(1000);
    assert.equal(transport.sent.length, 0);
  });

  test("the 100 copies Via, From, To, Call-ID, CSeq and Timestamp", () => {
    const layer = makeLayer({ tryingDelay: 0 });
    layer.receiveRequest(request({ extra: ["Timestamp: 54"] }), udp);
    advance(1);
    const trying = parseResponse(transport.sent[0]!.text);
    assert.equal(trying.status, 100);
    assert.equal(trying.via[0]!.branch, "z9hG4bKabc123");
    assert.equal(trying.callId, "call-1@192.0.2.10");
    assert.deepEqual(trying.cseq, { seq: 1, method: "INVITE" });
    assert.equal(trying.headers.find((h) => h.name === "timestamp")?.value, "54");
  });

  test("300-699 over UDP: Timer G doubles to T2; retransmitted INVITE resends it; ACK → Confirmed → Timer I", () => {
    const layer = makeLayer({ tryingDelay: false });
    const inv = request();
    const r = layer.receiveRequest(inv, udp);
    assert.equal(r.kind, "new");
    if (r.kind !== "new") return;
    const tx = r.tx;
    assert.deepEqual(tx.respond(createResponse(inv, 486, "Busy Here", { toTag: "uas" })), { ok: true });
    assert.equal(tx.state, TransactionState.Completed);
    advance(11500);
    // Sent at 0; G intervals 500, 1000, 2000, 4000, 4000.
    assert.deepEqual(transport.times(), [0, 500, 1500, 3500, 7500, 11500]);
    assert.equal(layer.receiveRequest(inv, udp).kind, "absorbed");
    assert.equal(transport.sent.length, 7);
    assert.ok(transport.startLines().every((l) => l === "SIP/2.0 486 Busy Here"));

    const ack = request({ method: "ACK", cseqMethod: "ACK", toTag: "uas" });
    assert.equal(layer.receiveRequest(ack, udp).kind, "absorbed");
    assert.equal(tx.state, TransactionState.Confirmed);
    // Confirmed absorbs ACK and INVITE retransmissions silently.
    assert.equal(layer.receiveRequest(ack, udp).kind, "absorbed");
    assert.equal(layer.receiveRequest(inv, udp).kind, "absorbed");
    advance(4999);
    assert.equal(transport.sent.length, 7, "Timer G stopped by the ACK");
    assert.equal(tx.state, TransactionState.Confirmed);
    advance(1);
    assert.equal(tx.state, TransactionState.Terminated);
    assert.deepEqual(layer.counts(), { server: 0, client: 0 });
  });

  test("Timer H: no ACK, the TU is told once, the transaction ends", () => {
    const layer = makeLayer({ tryingDelay: false });
    const inv = request();
    const r = layer.receiveRequest(inv, udp);
    if (r.kind !== "new") return assert.fail(r.kind);
    let timeouts = 0;
    let terminated = 0;
    r.tx.listener = { onTimeout: () => timeouts++, onTerminated: () => terminated++ };
    r.tx.respond(createResponse(inv, 404, "Not Found", { toTag: "u" }));
    advance(31999);
    assert.equal(timeouts, 0);
    advance(1);
    assert.equal(timeouts, 1);
    assert.equal(terminated, 1);
    assert.equal(r.tx.state, TransactionState.Terminated);
    assert.equal(layer.counts().server, 0);
    const sends = transport.sent.length;
    advance(60000);
    assert.equal(transport.sent.length, sends);
    assert.equal(timeouts, 1);
  });

  test("over TCP: no Timer G, the ACK ends the transaction at once (Timer I = 0)", () => {
    const layer = makeLayer({ tryingDelay: false });
    const inv = request();
    const r = layer.receiveRequest(inv, tcp);
    if (r.kind !== "new") return assert.fail(r.kind);
    r.tx.respond(createResponse(inv, 480, "Temporarily Unavailable", { toTag: "u" }));
    advance(10000);
    assert.deepEqual(transport.times(), [0]);
    layer.receiveRequest(request({ method: "ACK", cseqMethod: "ACK", toTag: "u" }), tcp);
    assert.equal(r.tx.state, TransactionState.Terminated);
    assert.equal(layer.counts().server, 0);
  });

  test("Timer H over TCP is still 64*T1", () => {
    const layer = makeLayer({ tryingDelay: false, timers: { T1: 10, T2: 40, T4: 50 } });
    const inv = request();
    const r = layer.receiveRequest(inv, tcp);
    if (r.kind !== "new") return assert.fail(r.kind);
    let timeouts = 0;
    r.tx.listener = { onTimeout: () => timeouts++ };
    r.tx.respond(createResponse(inv, 500, "Server Error", { toTag: "u" }));
    advance(640);
    assert.equal(timeouts, 1);
  });

  test("2xx: Accepted absorbs INVITE retransmissions without resending; matching ACK goes to the TU; Timer L ends it", () => {
    const layer = makeLayer({ tryingDelay: false });
    const inv = request();
    const r = layer.receiveRequest(inv, udp);
    if (r.kind !== "new") return assert.fail(r.kind);
    const tx = r.tx;
    tx.respond(createResponse(inv, 180, "Ringing", { toTag: "u" }));
    tx.respond(createResponse(inv, 200, "OK", { toTag: "u" }));
    assert.equal(tx.state, TransactionState.Accepted);
    assert.equal(transport.sent.length, 2);
    assert.equal(layer.receiveRequest(inv, udp).kind, "absorbed");
    assert.equal(transport.sent.length, 2, "RFC 6026 §7.1: absorbed, the TU retransmits its 2xx");
    advance(10000);
    assert.equal(transport.sent.length, 2, "the transaction never retransmits a 2xx");
    // The TU (UAS core or proxy forwarding another fork) may send more 2xx.
    assert.deepEqual(tx.respond(createResponse(inv, 200, "OK", { toTag: "u2" })), { ok: true });
    assert.equal(transport.sent.length, 3);
    // Non-2xx and provisional are refused once accepted.
    assert.deepEqual(tx.respond(createResponse(inv, 486, "Busy Here", { toTag: "u" })), { ok: false, error: "invalid-state" });
    assert.deepEqual(tx.respond(createResponse(inv, 180, "Ringing", { toTag: "u" })), { ok: false, error: "invalid-state" });
    // The ACK for a 2xx normally has a new branch: no transaction matches it.
    assert.deepEqual(layer.receiveRequest(request({ method: "ACK", cseqMethod: "ACK", branch: "z9hG4bKnew", toTag: "u" }), udp), { kind: "stray-ack" });
    // One reusing the INVITE's branch matches the Accepted transaction: still the TU's.
    const same = layer.receiveRequest(request({ method: "ACK", cseqMethod: "ACK", toTag: "u" }), udp);
    assert.equal(same.kind, "ack-2xx");
    assert.equal(tx.state, TransactionState.Accepted);
    advance(22000);
    assert.equal(tx.state, TransactionState.Terminated, "Timer L = 64*T1");
    assert.equal(layer.counts().server, 0);
    assert.equal(layer.receiveRequest(inv, udp).kind, "new", "after Timer L a copy is a new request");
  });

  test("a retransmission on a new TCP connection gets the response there", () => {
    const layer = makeLayer({ tryingDelay: false });
    const inv = request();
    const r = layer.receiveRequest(inv, tcp);
    if (r.kind !== "new") return assert.fail(r.kind);
    r.tx.respond(createResponse(inv, 180, "Ringing", { toTag: "u" }));
    const reconnected: Flow = { ...tcp, remotePort: 40001, connectionId: 8 };
    assert.equal(layer.receiveRequest(inv, reconnected).kind, "absorbed");
    assert.deepEqual(transport.sent.map((x) => x.flow.connectionId), [7, 8]);
    assert.equal(r.tx.flow, reconnected);
  });

  test("Timer G retransmission that cannot be sent: TU told, transaction ends", () => {
    const layer = makeLayer({ tryingDelay: false });
    const inv = request();
    const r = layer.receiveRequest(inv, udp);
    if (r.kind !== "new") return assert.fail(r.kind);
    let errors = 0;
    let timeouts = 0;
    r.tx.listener = { onTransportError: () => errors++, onTimeout: () => timeouts++ };
    r.tx.respond(createResponse(inv, 486, "Busy Here", { toTag: "u" }));
    transport.failing = true;
    advance(500);
    assert.equal(errors, 1);
    assert.equal(r.tx.state, TransactionState.Terminated);
    advance(40000);
    assert.equal(errors, 1);
    assert.equal(timeouts, 0, "Timer H went with the transaction");
  });

  test("respond() refuses bad status codes and answers after the end", () => {
    const layer = makeLayer({ tryingDelay: false });
    const inv = request();
    const r = layer.receiveRequest(inv, tcp);
    if (r.kind !== "new") return assert.fail(r.kind);
    const bad = createResponse(inv, 200, "OK");
    assert.deepEqual(r.tx.respond({ ...bad, status: 99 }), { ok: false, error: "invalid-status" });
    assert.deepEqual(r.tx.respond({ ...bad, status: 700 }), { ok: false, error: "invalid-status" });
    assert.deepEqual(r.tx.respond({ ...bad, status: 200.5 }), { ok: false, error: "invalid-status" });
    r.tx.respond(createResponse(inv, 603, "Decline", { toTag: "u" }));
    layer.receiveRequest(request({ method: "ACK", cseqMethod: "ACK", toTag: "u" }), tcp);
    assert.equal(r.tx.state, TransactionState.Terminated);
    assert.deepEqual(r.tx.respond(createResponse(inv, 200, "OK", { toTag: "u" })), { ok: false, error: "invalid-state" });
  });
});

// --- non-INVITE server transaction ------------------------------------------------------------

describe("non-INVITE server transaction", () => {
  test("a lingering transaction resends its final response byte for byte, a binary body included", () => {
    const layer = makeLayer();
    const msg = request({ method: "MESSAGE", uri: "sip:192.0.2.1" });
    const r = layer.receiveRequest(msg, udp);
    assert.equal(r.kind, "new");
    if (r.kind !== "new") return;
    const body = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    assert.deepEqual(r.tx.respond(createResponse(msg, 200, "OK", { toTag: "r", body, contentType: "application/octet-stream" })), { ok: true });
    assert.equal(r.tx.state, TransactionState.Completed);
    assert.equal(layer.receiveRequest(msg, udp).kind, "absorbed");
    advance(20_000);
    assert.equal(layer.receiveRequest(msg, udp).kind, "absorbed");
    assert.equal(transport.sent.length, 3);
    assert.ok(transport.sent[0]!.bytes.subarray(-256).equals(body));
    assert.ok(transport.sent[1]!.bytes.equals(transport.sent[0]!.bytes));
    assert.ok(transport.sent[2]!.bytes.equals(transport.sent[0]!.bytes));
  });

  test("Trying discards retransmissions; Proceeding resends the provisional; Completed resends the final; Timer J", () => {
    const layer = makeLayer();
    const reg = request({ method: "REGISTER", uri: "sip:192.0.2.1" });
    let seenByTu = 0;
    const deliver = (): string => {
      const r = layer.receiveRequest(reg, udp);
      if (r.kind === "new") seenByTu++;
      return r.kind;
    };
    assert.equal(deliver(), "new");
    const tx = layer.receiveRequest(reg, udp);
    assert.equal(tx.kind, "absorbed");
    if (tx.kind !== "absorbed") return;
    const st = tx.tx;
    assert.equal(st.state, TransactionState.Trying);
    advance(1000);
    assert.equal(transport.sent.length, 0, "no automatic 100 for non-INVITE (§16.2 / §17.2.2)");

    st.respond(createResponse(reg, 100, "Trying"));
    assert.equal(st.state, TransactionState.Proceeding);
    assert.equal(deliver(), "absorbed");
    assert.deepEqual(transport.startLines(), ["SIP/2.0 100 Trying", "SIP/2.0 100 Trying"]);

    assert.deepEqual(st.respond(createResponse(reg, 401, "Unauthorized", { toTag: "r" })), { ok: true });
    assert.equal(st.state, TransactionState.Completed);
    assert.equal(deliver(), "absorbed");
    assert.deepEqual(transport.startLines().slice(2), ["SIP/2.0 401 Unauthorized", "SIP/2.0 401 Unauthorized"]);
    // §17.2.2: other finals from the TU are discarded in Completed.
    assert.deepEqual(st.respond(createResponse(reg, 200, "OK", { toTag: "r" })), { ok: false, error: "invalid-state" });
    assert.equal(transport.sent.length, 4);
    assert.equal(seenByTu, 1, "the registrar saw the REGISTER once");

    advance(31999);
    assert.equal(deliver(), "absorbed");
    advance(1);
    assert.equal(st.state, TransactionState.Terminated);
    assert.equal(layer.counts().server, 0);
    assert.equal(deliver(), "new");
  });

  test("final straight from Trying; over TCP Timer J is zero", () => {
    const layer = makeLayer();
    const opt = request({ method: "OPTIONS" });
    const r = layer.receiveRequest(opt, tcp);
    if (r.kind !== "new") return assert.fail(r.kind);
    assert.deepEqual(r.tx.respond(createResponse(opt, 200, "OK", { toTag: "o" })), { ok: true });
    assert.equal(r.tx.state, TransactionState.Terminated);
    assert.equal(layer.counts().server, 0);
  });

  test("Timer J scales with T1", () => {
    const layer = makeLayer({ timers: { T1: 10, T2: 40, T4: 50 } });
    const opt = request({ method: "OPTIONS" });
    const r = layer.receiveRequest(opt, udp);
    if (r.kind !== "new") return assert.fail(r.kind);
    r.tx.respond(createResponse(opt, 200, "OK", { toTag: "o" }));
    advance(639);
    assert.equal(r.tx.state, TransactionState.Completed);
    advance(1);
    assert.equal(r.tx.state, TransactionState.Terminated);
  });
});

// --- matching -----------------------------------------------------------------------------------

describe("matching (§17.2.3)", () => {
  test("branch + sent-by + method: another sent-by or another method is another transaction", () => {
    const layer = makeLayer({ tryingDelay: false });
    assert.equal(layer.receiveRequest(request(), udp).kind, "new");
    assert.equal(layer.receiveRequest(request({ sentBy: "192.0.2.99:5060" }), udp).kind, "new");
    assert.equal(layer.receiveRequest(request({ sentBy: "192.0.2.10" }), udp).kind, "absorbed", "absent port = 5060");
    assert.equal(layer.receiveRequest(request({ method: "OPTIONS" }), udp).kind, "new");
    assert.equal(layer.counts().server, 3);
  });

  test("CANCEL gets its own transaction and finds the INVITE it cancels (§9.2)", () => {
    const layer = makeLayer({ tryingDelay: false });
    const inv = request();
    const r = layer.receiveRequest(inv, udp);
    if (r.kind !== "new") return assert.fail(r.kind);
    const cancel = request({ method: "CANCEL" });
    const c = layer.receiveRequest(cancel, udp);
    assert.equal(c.kind, "cancel");
    if (c.kind !== "cancel") return;
    assert.equal(c.inviteTx, r.tx);
    assert.notEqual(c.tx, r.tx as unknown);
    assert.equal(layer.receiveRequest(cancel, udp).kind, "absorbed", "CANCEL retransmission");
    c.tx.respond(createResponse(cancel, 200, "OK", { toTag: "u" }));
    r.tx.respond(createResponse(inv, 487, "Request Terminated", { toTag: "u" }));
    assert.equal(layer.receiveRequest(cancel, udp).kind, "absorbed");
    assert.deepEqual(transport.startLines(), ["SIP/2.0 200 OK", "SIP/2.0 487 Request Terminated", "SIP/2.0 200 OK"]);

    const orphan = layer.receiveRequest(request({ method: "CANCEL", branch: "z9hG4bKnone" }), udp);
    assert.equal(orphan.kind, "cancel");
    if (orphan.kind === "cancel") assert.equal(orphan.inviteTx, undefined, "the TU answers 481");
  });

  test("RFC 2543 INVITE without a branch (inv2543.dat): retransmission, ACK by To tag, CANCEL", () => {
    const layer = makeLayer({ tryingDelay: false });
    const bytes = loadRfc4475("inv2543.dat");
    const inv = parseRequest(bytes);
    assert.equal(inv.via[0]!.branch, undefined);
    const r = layer.receiveRequest(inv, udp);
    if (r.kind !== "new") return assert.fail(r.kind);
    assert.equal(layer.receiveRequest(parseRequest(bytes), udp).kind, "absorbed");

    const cancelText = bytes.toString("latin1").split("\r\n\r\n")[0]!.replace("INVITE sip:UserB", "CANCEL sip:UserB").replace("CSeq: 56 INVITE", "CSeq: 56 CANCEL") + "\r\nContent-Length: 0\r\n\r\n";
    const cancel = parseRequest(cancelText);
    const c = layer.receiveRequest(cancel, udp);
    if (c.kind !== "cancel") return assert.fail(c.kind);
    assert.equal(c.inviteTx, r.tx);
    assert.equal(layer.receiveRequest(parseRequest(cancelText), udp).kind, "absorbed");
    c.tx.respond(createResponse(cancel, 200, "OK", { toTag: "b1" }));

    r.tx.respond(createResponse(inv, 486, "Busy Here", { toTag: "b1" }));
    const ackText = (tag: string): string =>
      bytes
        .toString("latin1")
        .split("\r\n\r\n")[0]!
        .replace("INVITE sip:UserB", "ACK sip:UserB")
        .replace("CSeq: 56 INVITE", "CSeq: 56 ACK")
        .replace("To: sip:+16505552222@ss1.example.net;user=phone", `To: sip:+16505552222@ss1.example.net;user=phone;tag=${tag}`) + "\r\nContent-Length: 0\r\n\r\n";
    assert.equal(layer.receiveRequest(parseRequest(ackText("other")), udp).kind, "stray-ack", "To tag must match the response");
    assert.equal(r.tx.state, TransactionState.Completed);
    assert.equal(layer.receiveRequest(parseRequest(ackText("b1")), udp).kind, "absorbed");
    assert.equal(r.tx.state, TransactionState.Confirmed);
    advance(5000);
    assert.equal(r.tx.state, TransactionState.Terminated);
    advance(40000);
    assert.deepEqual(layer.counts(), { server: 0, client: 0 });
  });

  test("RFC 2543 matching distinguishes Call-ID, CSeq, From tag, Request-URI and top Via", () => {
    const layer = makeLayer({ tryingDelay: false });
    const base = { branch: null } as const;
    assert.equal(layer.receiveRequest(request(base), udp).kind, "new");
    assert.equal(layer.receiveRequest(request(base), udp).kind, "absorbed");
    assert.equal(layer.receiveRequest(request({ ...base, callId: "other" }), udp).kind, "new");
    assert.equal(layer.receiveRequest(request({ ...base, cseq: 2 }), udp).kind, "new");
    assert.equal(layer.receiveRequest(request({ ...base, fromTag: "f2" }), udp).kind, "new");
    assert.equal(layer.receiveRequest(request({ ...base, uri: "sip:202@192.0.2.1" }), udp).kind, "new");
    assert.equal(layer.receiveRequest(request({ ...base, sentBy: "192.0.2.11" }), udp).kind, "new");
    assert.equal(layer.receiveRequest(request({ ...base, toTag: "t" }), udp).kind, "new");
    assert.equal(layer.counts().server, 7);
  });

  test("a bare z9hG4bK branch (badbranch.dat) falls back to RFC 2543 matching", () => {
    const layer = makeLayer();
    const bytes = loadRfc4475("badbranch.dat");
    const opt = parseRequest(bytes);
    assert.equal(opt.via[0]!.branch, "z9hG4bK");
    const r = layer.receiveRequest(opt, udp);
    assert.equal(r.kind, "new");
    assert.equal(layer.receiveRequest(parseRequest(bytes), udp).kind, "absorbed");
    // Another request with the same empty identifier is not mistaken for a retransmission.
    const other = parseRequest(bytes.toString("latin1").replace("badbranch.sadonfo23i420jv0as0derf3j3n", "another-call"));
    assert.equal(layer.receiveRequest(other, udp).kind, "new");
    if (r.kind === "new") assert.deepEqual(r.tx.respond(createResponse(opt, 200, "OK", { toTag: "x" })), { ok: true });
  });

  test("requests without Via, responses out of range or without branch", () => {
    const layer = makeLayer();
    const inv = request();
    assert.deepEqual(layer.receiveRequest({ ...inv, via: [] }, udp), { kind: "invalid", reason: "no Via header" });
    const res = responseTo(inv, 200, "OK", "t");
    assert.equal(layer.receiveResponse({ ...res, status: 0 }, udp).kind, "invalid");
    assert.equal(layer.receiveResponse({ ...res, via: [] }, udp).kind, "stray");
    assert.equal(layer.receiveResponse(res, udp).kind, "stray");
  });
});

// --- layer ------------------------------------------------------------------------------------

describe("TransactionLayer", () => {
  test("maxTransactions: new requests get overload, ACK and retransmissions still handled", () => {
    const layer = makeLayer({ maxTransactions: 2, tryingDelay: false });
    assert.equal(layer.receiveRequest(request({ branch: "z9hG4bK1" }), udp).kind, "new");
    const rec = recorder();
    sendOk(layer, request({ method: "OPTIONS", branch: "z9hG4bK2" }), udp, rec);
    assert.deepEqual(layer.counts(), { server: 1, client: 1 });
    assert.deepEqual(layer.receiveRequest(request({ branch: "z9hG4bK3" }), udp), { kind: "overload" });
    assert.equal(layer.receiveRequest(request({ branch: "z9hG4bK1" }), udp).kind, "absorbed");
    assert.deepEqual(layer.receiveRequest(request({ method: "ACK", cseqMethod: "ACK", branch: "z9hG4bK9" }), udp), { kind: "stray-ack" });
    assert.deepEqual(layer.sendRequest(request({ method: "OPTIONS", branch: "z9hG4bK4" }), udp, rec.callbacks), { ok: false, error: "overload" });
  });

  test("sendRequest refuses ACK, branchless and duplicate requests", () => {
    const layer = makeLayer();
    const rec = recorder();
    assert.deepEqual(layer.sendRequest(request({ method: "ACK", cseqMethod: "ACK" }), udp, rec.callbacks), { ok: false, error: "ack-is-not-a-transaction" });
    assert.deepEqual(layer.sendRequest(request({ branch: null }), udp, rec.callbacks), { ok: false, error: "no-branch" });
    assert.deepEqual(layer.sendRequest(request({ branch: "z9hG4bK" }), udp, rec.callbacks), { ok: false, error: "no-branch" });
    sendOk(layer, request(), udp, rec);
    assert.deepEqual(layer.sendRequest(request(), udp, rec.callbacks), { ok: false, error: "duplicate-branch" });
    assert.equal(transport.sent.length, 1);
  });

  test("transport failures: first send reported by the result, later ones by callback (§17.1.4)", () => {
    const layer = makeLayer();
    const rec = recorder();
    transport.failing = true;
    assert.deepEqual(layer.sendRequest(request(), udp, rec.callbacks), { ok: false, error: "transport-error" });
    assert.equal(layer.counts().client, 0);
    transport.failing = false;
    const tx = sendOk(layer, request({ method: "OPTIONS" }), udp, rec);
    transport.failing = true;
    advance(500);
    assert.equal(rec.transportErrors, 1);
    assert.equal(tx.state, TransactionState.Terminated);
    assert.equal(layer.counts().client, 0);
    advance(40000);
    assert.equal(rec.transportErrors, 1);
    assert.deepEqual(rec.timeouts, []);
  });

  test("ACK that cannot be sent still delivers the final response, then reports the failure", () => {
    const layer = makeLayer();
    const rec = recorder();
    const req = request();
    const tx = sendOk(layer, req, udp, rec);
    transport.failing = true;
    layer.receiveResponse(responseTo(req, 486, "Busy Here", "t"), udp);
    assert.deepEqual(rec.finals, [486]);
    assert.equal(rec.transportErrors, 1);
    assert.equal(tx.state, TransactionState.Terminated);
  });

  test("server transport failure: the TU is told, the transaction ends (§17.2.4)", () => {
    const layer = makeLayer({ tryingDelay: false });
    const opt = request({ method: "OPTIONS" });
    const r = layer.receiveRequest(opt, udp);
    if (r.kind !== "new") return assert.fail(r.kind);
    let errors = 0;
    r.tx.listener = { onTransportError: () => errors++ };
    transport.failing = true;
    assert.deepEqual(r.tx.respond(createResponse(opt, 200, "OK", { toTag: "o" })), { ok: false, error: "transport-error" });
    assert.equal(errors, 1);
    assert.equal(r.tx.state, TransactionState.Terminated);
    assert.equal(layer.counts().server, 0);
  });

  test("Accepted stays Accepted on a transport failure (RFC 6026 §8.8)", () => {
    const layer = makeLayer({ tryingDelay: false });
    const inv = request();
    const r = layer.receiveRequest(inv, udp);
    if (r.kind !== "new") return assert.fail(r.kind);
    r.tx.respond(createResponse(inv, 200, "OK", { toTag: "u" }));
    transport.failing = true;
    assert.deepEqual(r.tx.respond(createResponse(inv, 200, "OK", { toTag: "u" })), { ok: false, error: "transport-error" });
    assert.equal(r.tx.state, TransactionState.Accepted);
  });

  test("a throwing TU callback is reported and does not break the state machine", () => {
    const errors: string[] = [];
    const layer = makeLayer({ onCallbackError: (_e, where) => errors.push(where) });
    const req = request({ method: "OPTIONS" });
    const tx = sendOk(layer, req, udp, recorder({ onFinal: () => { throw new Error("TU bug"); } }));
    layer.receiveResponse(responseTo(req, 200, "OK"), udp);
    assert.deepEqual(errors, ["onFinal"]);
    assert.equal(tx.state, TransactionState.Completed);
    advance(5000);
    assert.equal(tx.state, TransactionState.Terminated);
  });

  test("close() clears every timer and every map; nothing fires afterwards", () => {
    const layer = makeLayer();
    const rec = recorder();
    sendOk(layer, request({ branch: "z9hG4bKc1" }), udp, rec);
    sendOk(layer, request({ method: "OPTIONS", branch: "z9hG4bKc2" }), udp, rec);
    const inv = request({ branch: "z9hG4bKs1" });
    const r = layer.receiveRequest(inv, udp);
    if (r.kind === "new") r.tx.respond(createResponse(inv, 486, "Busy Here", { toTag: "u" }));
    layer.receiveRequest(request({ branch: null }), udp);
    assert.deepEqual(layer.counts(), { server: 2, client: 2 });
    const sent = transport.sent.length;
    layer.close();
    assert.deepEqual(layer.counts(), { server: 0, client: 0 });
    advance(200000);
    assert.equal(transport.sent.length, sent);
    assert.deepEqual(rec.timeouts, []);
    assert.deepEqual(layer.receiveRequest(request({ branch: "z9hG4bKafter" }), udp), { kind: "overload" });
    assert.deepEqual(layer.sendRequest(request({ branch: "z9hG4bKafter" }), udp, rec.callbacks), { ok: false, error: "closed" });
  });

  test("a client transaction lingering in Completed tells the TU it is done, still re-ACKs, and no longer counts against maxTransactions", () => {
    const layer = makeLayer({ maxTransactions: 2, tryingDelay: false, timers: { T1: 10, T2: 40, T4: 50, D: 1000 } });
    const rec = recorder();
    const inv = request({ branch: "z9hG4bKl1" });
    const tx = sendOk(layer, inv, udp, rec);
    const opt = request({ method: "OPTIONS", branch: "z9hG4bKl2" });
    const optTx = sendOk(layer, opt, udp, rec);
    // The table is full of transactions at work: a third is refused.
    assert.deepEqual(layer.sendRequest(request({ branch: "z9hG4bKl3" }), udp, rec.callbacks), { ok: false, error: "overload" });
    const sentBefore = transport.sent.length;
    layer.receiveResponse(responseTo(inv, 487, "Request Terminated", "t"), udp);
    layer.receiveResponse(responseTo(opt, 200, "OK", "t"), udp);
    // Completed: the TU heard the final response and that it is done (its callbacks are let go) ...
    assert.deepEqual(rec.finals, [487, 200]);
    assert.equal(rec.terminated, 2);
    assert.equal(tx.state, TransactionState.Completed);
    assert.equal(optTx.state, TransactionState.Completed);
    assert.equal(tx.lingering, true);
    assert.deepEqual(layer.counts(), { server: 0, client: 2 });
    // ... the 487 retransmission is still absorbed and re-ACKed (§17.1.1.2), unseen by the TU ...
    assert.equal(layer.receiveResponse(responseTo(inv, 487, "Request Terminated", "t"), udp).kind, "absorbed");
    assert.equal(transport.sent.length, sentBefore + 2);
    assert.ok(transport.startLines().slice(-2).every((l) => l.startsWith("ACK ")));
    assert.deepEqual(rec.finals, [487, 200]);
    // ... and new work is accepted while both linger: forks of the next call, a request from outside.
    sendOk(layer, request({ branch: "z9hG4bKl3" }), udp, recorder());
    assert.equal(layer.receiveRequest(request({ method: "OPTIONS", branch: "z9hG4bKs9" }), udp).kind, "new");
    assert.deepEqual(layer.receiveRequest(request({ method: "OPTIONS", branch: "z9hG4bKs10" }), udp), { kind: "overload" });
    // Timers K and D end them; nothing more reaches the TU.
    advance(1000);
    assert.equal(tx.state, TransactionState.Terminated);
    assert.equal(optTx.state, TransactionState.Terminated);
    assert.equal(rec.terminated, 2);
    assert.equal(layer.receiveResponse(responseTo(inv, 487, "Request Terminated", "t"), udp).kind, "stray");
  });

  test("a non-INVITE server transaction in Completed lets go of its listener and still answers retransmissions (§17.2.2)", () => {
    const layer = makeLayer({ timers: { T1: 10, T2: 40, T4: 50 } });
    const opt = request({ method: "OPTIONS", branch: "z9hG4bKsc" });
    const r = layer.receiveRequest(opt, udp);
    assert.equal(r.kind, "new");
    if (r.kind !== "new") return;
    let terminated = 0;
    r.tx.listener = { onTerminated: () => terminated++ };
    assert.deepEqual(r.tx.respond(createResponse(opt, 200, "OK", { toTag: "u" })), { ok: true });
    assert.equal(terminated, 1);
    assert.equal(r.tx.state, TransactionState.Completed);
    assert.equal(layer.receiveRequest(opt, udp).kind, "absorbed");
    assert.deepEqual(transport.startLines().slice(-2), ["SIP/2.0 200 OK", "SIP/2.0 200 OK"]);
    advance(640);
    assert.equal(r.tx.state, TransactionState.Terminated);
    assert.equal(terminated, 1);
  });

  test("every transaction kind leaves the maps once its absorbing timer has run", () => {
    const layer = makeLayer({ timers: { T1: 10, T2: 40, T4: 50, D: 100 } });
    const rec = recorder();
    const inv = request({ branch: "z9hG4bKi1" });
    sendOk(layer, inv, udp, rec);
    layer.receiveResponse(responseTo(inv, 404, "Not Found", "t"), udp);
    const inv2 = request({ branch: "z9hG4bKi2" });
    sendOk(layer, inv2, udp, rec);
    layer.receiveResponse(responseTo(inv2, 200, "OK", "t"), udp);
    const opt = request({ method: "OPTIONS", branch: "z9hG4bKn1" });
    sendOk(layer, opt, udp, rec);
    layer.receiveResponse(responseTo(opt, 200, "OK", "t"), udp);
    const sInv = request({ branch: "z9hG4bKs1" });
    const a = layer.receiveRequest(sInv, udp);
    if (a.kind === "new") a.tx.respond(createResponse(sInv, 603, "Decline", { toTag: "u" }));
    layer.receiveRequest(request({ branch: "z9hG4bKs1", method: "ACK", cseqMethod: "ACK", toTag: "u" }), udp);
    const sInv2 = request({ branch: "z9hG4bKs2" });
    const b = layer.receiveRequest(sInv2, udp);
    if (b.kind === "new") b.tx.respond(createResponse(sInv2, 200, "OK", { toTag: "u" }));
    const sOpt = request({ method: "OPTIONS", branch: "z9hG4bKs3" });
    const c = layer.receiveRequest(sOpt, udp);
    if (c.kind === "new") c.tx.respond(createResponse(sOpt, 200, "OK", { toTag: "u" }));
    const s2543 = request({ branch: null, callId: "old" });
    const d = layer.receiveRequest(s2543, udp);
    if (d.kind === "new") d.tx.respond(createResponse(s2543, 486, "Busy Here", { toTag: "u" }));
    assert.deepEqual(layer.counts(), { server: 4, client: 3 });
    advance(640);
    assert.deepEqual(layer.counts(), { server: 0, client: 0 });
  });
});

describe("message builders", () => {
  test("buildAck / buildCancel keep a single Via, the Routes, and the CSeq number", () => {
    const inv = request({ extra: ["Route: <sip:edge.example.com;lr>"] });
    const ack = buildAck(inv, responseTo(inv, 486, "Busy Here", "z"));
    assert.ok(ack);
    const wireAck = parseRequest(serialize(ack));
    assert.equal(wireAck.maxForwards, 70);
    assert.equal(wireAck.to.tag, "z");
    assert.equal(wireAck.via.length, 1);
    assert.equal(wireAck.headers.filter((h) => h.name === "route").length, 1);
    const cancel = buildCancel(inv);
    assert.ok(cancel);
    const wireCancel = parseRequest(serialize(cancel));
    assert.equal(wireCancel.method, "CANCEL");
    assert.deepEqual(wireCancel.cseq, { seq: 1, method: "CANCEL" });
    assert.equal(wireCancel.uri, inv.uri);
    assert.equal(wireCancel.to.tag, undefined, "To as in the INVITE");
    assert.equal(wireCancel.via[0]!.raw, inv.via[0]!.raw);
    assert.equal(buildCancel({ ...inv, via: [] }), undefined);
  });
});
