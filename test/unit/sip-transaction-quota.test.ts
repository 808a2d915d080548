// Transaction layer seams for per-source quotas: the admission hook is asked only before a new
// server transaction (never for retransmissions or ACKs), live server transactions are counted
// per source address, and respondStatelessly() answers once and keeps no state.
import assert from "node:assert/strict";
import { afterEach, beforeEach, mock, test } from "node:test";
import { parseDatagram } from "../../agent/sip/message.ts";
import { createResponse } from "../../agent/sip/serialize.ts";
import { TransactionLayer } from "../../agent/sip/transaction.ts";
import type { Flow, SipRequest, Transport } from "../../agent/sip/types.ts";

class FakeTransport implements Transport {
  sent: string[] = [];
  send(_flow: Flow, data: Buffer): boolean {
    this.sent.push(data.toString("utf8"));
    return true;
  }
  isReliable(flow: Flow): boolean {
    return flow.transport === "tcp";
  }
}

function flowFrom(address: string): Flow {
  return { transport: "udp", remoteAddress: address, remotePort: 5060, localAddress: "192.0.2.1", localPort: 5060 };
}

function request(method: string, branch: string, address = "192.0.2.10"): SipRequest {
  const text = [
    `${method} sip:201@192.0.2.1 SIP/2.0`,
    `Via: SIP/2.0/UDP ${address}:5060;branch=${branch}`,
    "Max-Forwards: 70",
    "From: <sip:200@192.0.2.1>;tag=f1",
    "To: <sip:201@192.0.2.1>",
    `Call-ID: ${branch}@${address}`,
    `CSeq: 1 ${method}`,
    "Content-Length: 0",
    "",
    "",
  ].join("\r\n");
  const r = parseDatagram(Buffer.from(text));
  if (!r.ok || r.message.kind !== "request") throw new Error("fixture does not parse");
  return r.message;
}

let transport: FakeTransport;
let layer: TransactionLayer;

beforeEach(() => {
  mock.timers.enable({ apis: ["setTimeout", "setInterval"] });
  transport = new FakeTransport();
  layer = new TransactionLayer({ transport, tryingDelay: false });
});
afterEach(() => {
  layer.close();
  mock.timers.reset();
});

test("admit is asked before a new transaction only; refused requests leave no state", () => {
  const asked: Array<[string, number]> = [];
  let allow = true;
  const admit = (s: string, n: number): boolean => {
    asked.push([s, n]);
    return allow;
  };
  const a = flowFrom("192.0.2.10");
  const first = layer.receiveRequest(request("OPTIONS", "z9hG4bK1"), a, admit);
  assert.equal(first.kind, "new");
  assert.deepEqual(asked, [["192.0.2.10", 0]]);
  assert.equal(layer.inFlightFrom("192.0.2.10"), 1);
  // a retransmission is absorbed without asking
  assert.equal(layer.receiveRequest(request("OPTIONS", "z9hG4bK1"), a, admit).kind, "absorbed");
  assert.equal(asked.length, 1);
  // an ACK matching nothing is never a transaction and is not asked about
  assert.equal(layer.receiveRequest(request("ACK", "z9hG4bK9"), a, admit).kind, "stray-ack");
  assert.equal(asked.length, 1);
  allow = false;
  assert.equal(layer.receiveRequest(request("OPTIONS", "z9hG4bK2"), a, admit).kind, "refused");
  assert.deepEqual(asked[1], ["192.0.2.10", 1]);
  assert.equal(layer.counts().server, 1, "nothing created for the refused request");
  assert.equal(layer.inFlightFrom("192.0.2.10"), 1);
});

test("live server transactions are counted per source and released when they end", () => {
  for (let i = 0; i < 5; i++) {
    const m = request("MESSAGE", `z9hG4bKa${i}`, "192.0.2.66");
    const r = layer.receiveRequest(m, flowFrom("192.0.2.66"));
    if (r.kind === "new" && i < 3) r.tx.respond(createResponse(m, 200, "OK", { toTag: "m" }));
  }
  const other = layer.receiveRequest(request("INVITE", "z9hG4bKb", "192.0.2.10"), flowFrom("192.0.2.10"));
  assert.equal(layer.inFlightFrom("192.0.2.66"), 5);
  assert.equal(layer.inFlightFrom("192.0.2.10"), 1);
  assert.equal(layer.inFlightFrom("192.0.2.99"), 0);
  assert.equal(other.kind, "new");
  if (other.kind !== "new") return;
  // a 404 to the INVITE over UDP: Completed until timer H (64*T1 = 32 s), then gone
  other.tx.respond(createResponse(other.tx.request as SipRequest, 404, "Not Found", { toTag: "x" }));
  assert.equal(layer.inFlightFrom("192.0.2.10"), 1);
  // Past the linger batch's closing first: node:test's mocked tick() moves the clock before it
  // runs the timers due, so a timer one of them sets (the batch's 32 s) would count from the end
  // of a single 33 s tick; real timers count it from the closing.
  mock.timers.tick(1_000);
  mock.timers.tick(32_000);
  assert.equal(layer.inFlightFrom("192.0.2.10"), 0);
  assert.equal(layer.inFlightFrom("192.0.2.66"), 2, "the three answered MESSAGEs ended after timer J; two await the TU");
});

test("respondStatelessly sends the response once and forgets the transaction", () => {
  const flow = flowFrom("192.0.2.10");
  const inv = request("INVITE", "z9hG4bKs1");
  const r = layer.receiveRequest(inv, flow);
  assert.equal(r.kind, "new");
  if (r.kind !== "new") return;
  assert.equal(layer.respondStatelessly(r.tx, createResponse(inv, 407, "Proxy Authentication Required", { toTag: "c" })), true);
  assert.equal(transport.sent.length, 1);
  assert.match(transport.sent[0] ?? "", /^SIP\/2\.0 407 /);
  assert.equal(layer.counts().server, 0);
  assert.equal(layer.inFlightFrom("192.0.2.10"), 0);
  // no timer G: nothing more goes out
  mock.timers.tick(40_000);
  assert.equal(transport.sent.length, 1);
  // the ACK for it matches nothing; a retransmitted INVITE is a new request to the TU
  assert.equal(layer.receiveRequest(request("ACK", "z9hG4bKs1"), flow).kind, "stray-ack");
  assert.equal(layer.receiveRequest(inv, flow).kind, "new");
});
