// The appliance as UAS of a call it answered (sip/uas-session.ts): 2xx retransmission until the
// ACK (RFC 3261 §13.3.1.4), BYE either way, the BYE's route set and remote target (§12, §15),
// INFO DTMF, CSeq order (§12.2.2), and hostile in-dialog requests. Deterministic: mock timers.
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, mock, test } from "node:test";
import { getHeader, parseDatagram } from "../../agent/sip/message.ts";
import { createResponse } from "../../agent/sip/serialize.ts";
import type { ServerTransaction } from "../../agent/sip/transaction.ts";
import type { Flow, SipRequest, SipResponse } from "../../agent/sip/types.ts";
import { UasDialogs, type UasEndReason } from "../../agent/sip/uas-session.ts";

const FLOW: Flow = { transport: "udp", remoteAddress: "192.0.2.7", remotePort: 5062, localAddress: "192.0.2.1", localPort: 5060 };

function req(text: string): SipRequest {
  const r = parseDatagram(Buffer.from(text.replace(/\n/g, "\r\n")));
  assert.ok(r.ok && r.message.kind === "request");
  return r.message;
}

const INVITE = req(`INVITE sip:600@192.0.2.1 SIP/2.0
Via: SIP/2.0/UDP 192.0.2.7:5062;branch=z9hG4bKinv1
Max-Forwards: 70
From: <sip:caller@192.0.2.7>;tag=caller1
To: <sip:600@192.0.2.1>
Call-ID: uas-1@test
CSeq: 10 INVITE
Contact: <sip:caller@192.0.2.7:5062>
Record-Route: <sip:edge1.test;lr>, <sip:edge2.test;lr>
Content-Length: 0

`);

function inDialog(method: string, seq: number, extra = "", body = ""): SipRequest {
  return req(`${method} sip:ringedge@192.0.2.1 SIP/2.0
Via: SIP/2.0/UDP 192.0.2.7:5062;branch=z9hG4bK${method}${seq}
Max-Forwards: 70
From: <sip:caller@192.0.2.7>;tag=caller1
To: <sip:600@192.0.2.1>;tag=vm1
Call-ID: uas-1@test
CSeq: ${seq} ${method}
${extra}Content-Length: ${Buffer.byteLength(body)}

${body}`);
}

function fakeTx(): ServerTransaction & { sent: SipResponse[] } {
  const sent: SipResponse[] = [];
  return { sent, respond: (r: SipResponse) => (sent.push(r), { ok: true }) } as unknown as ServerTransaction & { sent: SipResponse[] };
}

function world() {
  const sentRequests: SipRequest[] = [];
  let resends = 0;
  const dialogs = new UasDialogs({
    sendRequest: (r) => (sentRequests.push(r), { ok: true }),
    via: () => "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKbye" + sentRequests.length,
    T1: 500,
    T2: 4000,
  });
  const response = createResponse(INVITE, 200, "OK", { toTag: "vm1" });
  const ended: UasEndReason[] = [];
  const digits: string[] = [];
  let confirmed = 0;
  const session = dialogs.open(INVITE, FLOW, { response, resend: () => resends++ }, { onConfirmed: () => confirmed++, onDigit: (d) => digits.push(d), onEnded: (w) => ended.push(w) });
  return { dialogs, session, sentRequests, ended, digits, resends: () => resends, confirmed: () => confirmed };
}

describe("UAS session", () => {
  beforeEach(() => mock.timers.enable({ apis: ["setTimeout"] }));
  afterEach(() => mock.timers.reset());

  test("the 2xx is sent again at T1, 2T1, 4T1 … capped at T2 until the ACK, then never", () => {
    const w = world();
    mock.timers.tick(500);
    assert.equal(w.resends(), 1);
    mock.timers.tick(1000);
    assert.equal(w.resends(), 2);
    mock.timers.tick(2000);
    assert.equal(w.resends(), 3);
    mock.timers.tick(4000);
    assert.equal(w.resends(), 4);
    mock.timers.tick(4000);
    assert.equal(w.resends(), 5, "capped at T2");
    assert.equal(w.dialogs.handleAck(inDialog("ACK", 10)), true);
    assert.equal(w.session.state, "confirmed");
    assert.equal(w.confirmed(), 1);
    mock.timers.tick(60_000);
    assert.equal(w.resends(), 5);
    assert.equal(w.ended.length, 0);
    // A retransmitted ACK changes nothing.
    assert.equal(w.dialogs.handleAck(inDialog("ACK", 10)), true);
    assert.equal(w.confirmed(), 1);
  });

  test("no ACK within 64×T1: BYE and the session ends (§13.3.1.4)", () => {
    const w = world();
    mock.timers.tick(32_000);
    assert.deepEqual(w.ended, ["no-ack"]);
    assert.equal(w.sentRequests.length, 1);
    assert.equal(w.sentRequests[0]!.method, "BYE");
    assert.equal(w.dialogs.count(), 0);
  });

  test("our BYE: to the caller's Contact, along the Record-Route in order, From our tag, our own CSeq", () => {
    const w = world();
    w.dialogs.handleAck(inDialog("ACK", 10));
    w.session.hangup();
    const bye = w.sentRequests[0]!;
    assert.equal(bye.method, "BYE");
    assert.equal(bye.uri, "sip:caller@192.0.2.7:5062");
    assert.equal(getHeader(bye, "route"), "<sip:edge1.test;lr>, <sip:edge2.test;lr>");
    assert.equal(bye.from.tag, "vm1");
    assert.equal(bye.to.tag, "caller1");
    assert.equal(bye.callId, "uas-1@test");
    assert.equal(bye.cseq.method, "BYE");
    assert.deepEqual(w.ended, ["local"]);
    w.session.hangup();
    assert.equal(w.sentRequests.length, 1, "idempotent");
  });

  test("a hang-up before the ACK waits for it (§15), then the BYE goes", () => {
    const w = world();
    w.session.hangup();
    assert.equal(w.sentRequests.length, 0);
    w.dialogs.handleAck(inDialog("ACK", 10));
    assert.equal(w.sentRequests.length, 1);
    assert.deepEqual(w.ended, ["local"]);
  });

  test("BYE from the caller: 200, the session ends, later requests get 481 / are not ours", () => {
    const w = world();
    w.dialogs.handleAck(inDialog("ACK", 10));
    const tx = fakeTx();
    assert.equal(w.dialogs.handleRequest(tx, inDialog("BYE", 11), FLOW), true);
    assert.equal(tx.sent[0]!.status, 200);
    assert.deepEqual(w.ended, ["bye"]);
    assert.equal(w.dialogs.handleRequest(fakeTx(), inDialog("INFO", 12), FLOW), false, "dialog forgotten");
    mock.timers.tick(60_000);
    assert.equal(w.sentRequests.length, 0, "no BYE of ours after theirs");
  });

  test("hostile: BYE before the ACK ends the session and stops the retransmissions", () => {
    const w = world();
    const tx = fakeTx();
    w.dialogs.handleRequest(tx, inDialog("BYE", 11), FLOW);
    assert.equal(tx.sent[0]!.status, 200);
    assert.deepEqual(w.ended, ["bye"]);
    mock.timers.tick(60_000);
    assert.equal(w.resends(), 0);
    assert.equal(w.sentRequests.length, 0);
  });

  test("INFO DTMF (dtmf-relay and dtmf) is answered 200 and reported; garbage gets 400/415 and changes nothing", () => {
    const w = world();
    w.dialogs.handleAck(inDialog("ACK", 10));
    const send = (seq: number, type: string | undefined, body: string): number => {
      const tx = fakeTx();
      w.dialogs.handleRequest(tx, inDialog("INFO", seq, type === undefined ? "" : `Content-Type: ${type}\n`, body), FLOW);
      return tx.sent[0]!.status;
    };
    assert.equal(send(11, "application/dtmf-relay", "Signal=5\r\nDuration=160\r\n"), 200);
    assert.equal(send(12, "application/dtmf", "#"), 200);
    assert.equal(send(13, "application/dtmf-relay", "Signal=bogus\r\n"), 400);
    assert.equal(send(14, "application/dtmf-relay", "\x00\xff\xfe garbage"), 400);
    assert.equal(send(15, "text/plain", "5"), 415);
    assert.equal(send(16, undefined, ""), 200, "an empty INFO is a keep-alive");
    assert.deepEqual(w.digits, ["5", "#"]);
    assert.equal(w.session.state, "confirmed");
  });

  test("CSeq out of order gets 500; re-INVITE 488; unknown methods 405 with Allow", () => {
    const w = world();
    w.dialogs.handleAck(inDialog("ACK", 10));
    const tx1 = fakeTx();
    w.dialogs.handleRequest(tx1, inDialog("INFO", 9, "Content-Type: application/dtmf\n", "1"), FLOW);
    assert.equal(tx1.sent[0]!.status, 500);
    assert.deepEqual(w.digits, []);
    const tx2 = fakeTx();
    w.dialogs.handleRequest(tx2, inDialog("INVITE", 20), FLOW);
    assert.equal(tx2.sent[0]!.status, 488);
    const tx3 = fakeTx();
    w.dialogs.handleRequest(tx3, inDialog("MESSAGE", 21), FLOW);
    assert.equal(tx3.sent[0]!.status, 405);
    assert.ok(getHeader(tx3.sent[0]!, "allow")?.includes("BYE"));
    assert.equal(w.session.state, "confirmed");
  });

  test("requests of other dialogs are not taken", () => {
    const w = world();
    const other = req(inDialogText("INFO", "other-call@test"));
    assert.equal(w.dialogs.handleRequest(fakeTx(), other, FLOW), false);
    assert.equal(w.dialogs.handleAck(req(inDialogText("ACK", "other-call@test"))), false);
  });

  test("stopAll sends BYE on every session", () => {
    const w = world();
    w.dialogs.stopAll();
    assert.deepEqual(w.ended, ["stopped"]);
    assert.equal(w.sentRequests[0]!.method, "BYE");
  });
});

function inDialogText(method: string, callId: string): string {
  return `${method} sip:ringedge@192.0.2.1 SIP/2.0
Via: SIP/2.0/UDP 192.0.2.7:5062;branch=z9hG4bKx${method}
Max-Forwards: 70
From: <sip:caller@192.0.2.7>;tag=caller1
To: <sip:600@192.0.2.1>;tag=vm1
Call-ID: ${callId}
CSeq: 30 ${method}
Content-Length: 0

`;
}
