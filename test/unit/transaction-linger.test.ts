// The batches that end lingering transactions (agent/sip/transaction/linger.ts): never early, at
// most the lateness late, one batch for all that start lingering while it is open, and through
// the layer at its default lateness: a 486's Timer D and a BYE's Timer J end their transactions
// within 100 ms after their 32 s, and a second call's transactions join the first's batch.
// Deterministic: node:test mock timers. sip-transaction.test.ts runs the state machines with
// exact timers (lingerLateMs 0).
import assert from "node:assert/strict";
import { afterEach, beforeEach, mock, test } from "node:test";
import { LingerTimers, lingerLateness, type LingerOwner } from "../../agent/sip/transaction/linger.ts";
import { TransactionLayer, TransactionState } from "../../agent/sip/transaction.ts";
import { parseDatagram } from "../../agent/sip/message.ts";
import { createResponse } from "../../agent/sip/serialize.ts";
import type { Flow, SipRequest, SipResponse, Transport } from "../../agent/sip/types.ts";

let now = 0;
function advance(ms: number): void {
  for (let i = 0; i < ms; i++) {
    now++;
    mock.timers.tick(1);
  }
}

beforeEach(() => {
  now = 0;
  mock.timers.enable({ apis: ["setTimeout"] });
});
afterEach(() => mock.timers.reset());

function owner(log: Array<{ name: string; at: number }>, name: string): LingerOwner {
  return { lingerExpired: () => log.push({ name, at: now }) };
}

test("lateness: a 256th of the duration, capped; 0 for short timers and when asked for", () => {
  assert.equal(lingerLateness(32_000, 100), 100);
  assert.equal(lingerLateness(5_000, 100), 19);
  assert.equal(lingerLateness(200, 100), 0);
  assert.equal(lingerLateness(32_000, 0), 0);
});

test("a batch ends everyone who joined while it was open, never early, at most the lateness late, in the order they joined", () => {
  const log: Array<{ name: string; at: number }> = [];
  const timers = new LingerTimers(100);
  timers.add(owner(log, "a"), 32_000); // t=0: opens the batch, which closes at 100 and ends at 32,100
  advance(60);
  timers.add(owner(log, "b"), 32_000); // joins
  advance(40);
  timers.add(owner(log, "c"), 32_000); // t=100: the batch has closed, a new one opens
  assert.equal(timers.batches, 2);
  assert.equal(timers.size, 3);
  advance(31_999);
  assert.equal(log.length, 0, "nobody before 32 s");
  advance(1);
  assert.deepEqual(log, [{ name: "a", at: 32_100 }, { name: "b", at: 32_100 }]);
  for (const e of log) assert.ok(e.at - (e.name === "a" ? 0 : 60) >= 32_000, `${e.name} lingered its whole 32 s`);
  advance(99);
  assert.equal(log.length, 2);
  advance(1);
  assert.deepEqual(log[2], { name: "c", at: 32_200 });
  assert.equal(timers.batches, 0);
  assert.equal(timers.size, 0);
});

test("durations batch apart; lateness 0 gives exact timers", () => {
  const log: Array<{ name: string; at: number }> = [];
  const timers = new LingerTimers(0);
  timers.add(owner(log, "k"), 5_000);
  timers.add(owner(log, "j"), 32_000);
  advance(1);
  timers.add(owner(log, "k2"), 5_000);
  assert.equal(timers.batches, 3);
  advance(4_999);
  assert.deepEqual(log.map((e) => `${e.name}@${e.at}`), ["k@5000"]);
  advance(1);
  assert.deepEqual(log.map((e) => `${e.name}@${e.at}`), ["k@5000", "k2@5001"]);
  advance(27_000);
  assert.deepEqual(log.map((e) => e.name), ["k", "k2", "j"]);
  assert.equal(log[2]!.at, 32_000);
});

test("one owner that throws is reported; the rest of its batch still ends; close() clears every batch", () => {
  const log: Array<{ name: string; at: number }> = [];
  const errors: unknown[] = [];
  const timers = new LingerTimers(100, (e) => errors.push(e));
  timers.add({ lingerExpired: () => { throw new Error("boom"); } }, 1_000);
  timers.add(owner(log, "after"), 1_000);
  advance(1_003);
  assert.equal(errors.length, 1);
  assert.deepEqual(log.map((e) => e.name), ["after"]);
  timers.add(owner(log, "never"), 1_000);
  timers.close();
  timers.add(owner(log, "closed"), 1_000);
  advance(5_000);
  assert.deepEqual(log.map((e) => e.name), ["after"]);
  assert.equal(timers.batches, 0);
});

// --- through the layer, default lateness ------------------------------------------------------

const udp: Flow = { transport: "udp", localAddress: "127.0.0.1", localPort: 5060, remoteAddress: "127.0.0.1", remotePort: 5070 };
const sent: string[] = [];
const transport: Transport = { send: (_f, data) => (sent.push(data.toString("latin1")), true), isReliable: () => false };

function parse(text: string): SipRequest | SipResponse {
  const r = parseDatagram(Buffer.from(text.replace(/\n/g, "\r\n")));
  if (!r.ok) throw new Error(JSON.stringify(r.error));
  return r.message;
}

function invite(branch: string, callId: string): SipRequest {
  return parse(`INVITE sip:201@127.0.0.1:5070 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5060;branch=${branch}
Max-Forwards: 70
From: <sip:100@127.0.0.1>;tag=caller
To: <sip:201@127.0.0.1>
Call-ID: ${callId}
CSeq: 1 INVITE
Content-Length: 0

`) as SipRequest;
}

function bye(branch: string): SipRequest {
  return parse(`BYE sip:100@127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=${branch}
Max-Forwards: 70
From: <sip:201@127.0.0.1>;tag=callee
To: <sip:100@127.0.0.1>;tag=caller
Call-ID: bye-1
CSeq: 2 BYE
Content-Length: 0

`) as SipRequest;
}

function busy(req: SipRequest): SipResponse {
  const r = createResponse(req, 486, "Busy Here");
  return { ...r, to: { ...r.to, tag: "callee" } } as SipResponse;
}

test("through the layer: Timer D and Timer J end their transactions within 100 ms after 32 s, batched; a 486 retransmitted meanwhile is still re-ACKed", () => {
  const layer = new TransactionLayer({ transport });
  const noop = { onFinal: () => undefined, onTimeout: () => undefined, onTransportError: () => undefined };
  const inv1 = invite("z9hG4bK-linger-1", "call-1");
  const r1 = layer.sendRequest(inv1, udp, noop);
  assert.ok(r1.ok);
  layer.receiveResponse(parse(`SIP/2.0 486 Busy Here
Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-linger-1
From: <sip:100@127.0.0.1>;tag=caller
To: <sip:201@127.0.0.1>;tag=callee
Call-ID: call-1
CSeq: 1 INVITE
Content-Length: 0

`) as SipResponse, udp);
  assert.equal(r1.tx.state, TransactionState.Completed);
  // A BYE answered: its server transaction lingers under Timer J.
  const got = layer.receiveRequest(bye("z9hG4bK-bye-1"), udp);
  assert.equal(got.kind, "new");
  if (got.kind !== "new") return;
  assert.ok(got.tx.respond(createResponse(bye("z9hG4bK-bye-1"), 200, "OK")).ok);
  assert.equal(got.tx.state, TransactionState.Completed);
  advance(30);
  // A second call 30 ms later joins the same Timer D batch.
  const inv2 = invite("z9hG4bK-linger-2", "call-2");
  const r2 = layer.sendRequest(inv2, udp, noop);
  assert.ok(r2.ok);
  layer.receiveResponse(busy(inv2), udp);
  assert.equal(r2.tx.state, TransactionState.Completed);

  advance(31_999 - 30);
  assert.equal(r1.tx.state, TransactionState.Completed, "not before 32 s");
  const acks = sent.filter((s) => s.startsWith("ACK")).length;
  layer.receiveResponse(busy(inv2), udp);
  assert.equal(sent.filter((s) => s.startsWith("ACK")).length, acks + 1, "still re-ACKs");
  advance(100);
  assert.equal(r1.tx.state, TransactionState.Completed, "its batch ends at 32,100");
  advance(1);
  for (const tx of [r1.tx, r2.tx, got.tx]) assert.equal(tx.state, TransactionState.Terminated);
  assert.deepEqual(layer.counts(), { server: 0, client: 0 });
  layer.close();
});
