// The forking proxy end to end: an Agent run in-process (so the test can install its own tiny
// routing policy, test/e2e/fixtures/fork-all.ts) between a SIPp caller and SIPp phones, all on
// 127.0.0.1 UDP. Covers parallel forking with the RFC 3326 CANCEL to the losers, ACK/BYE
// routed through the agent by Record-Route, the caller's CANCEL, a late 2xx released with
// ACK + BYE, Timer C, Max-Forwards 0 and absorbed INVITE retransmissions.
import assert from "node:assert/strict";
import dgram from "node:dgram";
import { after, before, describe, test } from "node:test";
import { Agent } from "../../agent/agent.ts";
import { defaultSettings } from "../../agent/config.ts";
import { createLogger } from "../../agent/log.ts";
import { parseDatagram } from "../../agent/sip/message.ts";
import type { BranchTarget } from "../../agent/sip/proxy-types.ts";
import type { SipRequest } from "../../agent/sip/types.ts";
import { installForkAll, udpTarget, type ForkAllRecord } from "./fixtures/fork-all.ts";
import { freePort, runSipp, sleep, tempDir, until, type SippResult } from "./harness.ts";
import { SipClient } from "./sipclient.ts";

let agent: Agent;
let port: number;
let rec: ForkAllRecord;
let targets: BranchTarget[] = [];
const clients: SipClient[] = [];
const sockets: dgram.Socket[] = [];

before(async () => {
  port = await freePort();
  const settings = { ...defaultSettings(), dataDir: tempDir("ringedge-proxy-"), sipListen: [`127.0.0.1:${port}`], sipTransports: ["udp" as const], httpListen: "127.0.0.1:0" };
  agent = new Agent(settings, createLogger("silent"));
  await agent.start();
  rec = installForkAll(agent, () => targets);
});

after(async () => {
  for (const c of clients) c.close();
  for (const s of sockets) s.close();
  await agent.stop();
});

/** Whether something (SIPp) holds the UDP port already. */
function udpBound(p: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = dgram.createSocket("udp4");
    s.once("error", () => resolve(true));
    s.bind(p, "127.0.0.1", () => s.close(() => resolve(false)));
  });
}

interface Phone {
  port: number;
  run: Promise<SippResult>;
}

/** A SIPp phone (UAS, one call) on a free port, ready when this resolves. */
async function phone(scenario: string, pauseMs = 0): Promise<Phone> {
  const p = await freePort();
  const run = runSipp(["-sf", scenario, "-i", "127.0.0.1", "-p", String(p), "-m", "1", "-nd", "-timeout", "10", "-timeout_error", "-d", String(pauseMs)], 15_000);
  await until(() => udpBound(p), 5000, 20);
  return { port: p, run };
}

/** The SIPp caller (UAC, one call) toward the agent. */
async function caller(scenario: string, pauseMs = 0, extra: string[] = []): Promise<SippResult> {
  const p = await freePort();
  return runSipp(["-sf", scenario, "-i", "127.0.0.1", "-p", String(p), "-m", "1", "-nd", "-timeout", "10", "-timeout_error", "-d", String(pauseMs), "-s", "1000", ...extra, `127.0.0.1:${port}`], 15_000);
}

function assertOk(name: string, r: SippResult): void {
  assert.equal(r.code, 0, `${name}: SIPp exit ${r.code}\n${r.stdout.slice(-1500)}\n${r.stderr.slice(-1500)}`);
}

/** Waits for the proxy to have nothing left ringing or talking. */
async function idle(): Promise<void> {
  await until(() => agent.proxy.stats().calls === 0 && agent.proxy.dialogCount() === 0, 5000, 20);
}

describe("forking proxy with SIPp", () => {
  test("two phones ring in parallel; one answers, the other gets CANCEL with the RFC 3326 Reason; ACK and BYE go through the agent", async () => {
    const answering = await phone("proxy-uas-answer.xml", 200);
    const losing = await phone("proxy-uas-elsewhere.xml");
    targets = [udpTarget(port, answering.port), udpTarget(port, losing.port)];
    const before = rec.ended.length;
    const c = await caller("proxy-uac.xml", 200);
    assertOk("caller", c);
    assertOk("answering phone (ACK and BYE via Record-Route)", await answering.run);
    assertOk("losing phone (CANCEL with Reason cause=200)", await losing.run);
    assert.deepEqual(rec.answered.at(-1), `sip:phone@127.0.0.1:${answering.port}`);
    await idle();
    assert.deepEqual(rec.ended.slice(before), [{ answered: true, by: "caller" }]);
    const call = rec.calls.at(-1)!;
    // Forked at once, not after some timer: the latency itself is a figure of bench/calls.bench.ts
    // (arrival to first fork, median and p99), not a timed assertion on a shared box.
    assert.ok(call.firstForkAt !== undefined && call.firstForkAt >= call.receivedAt, "the call was forked after it arrived");
    assert.ok(call.firstForkAt - call.receivedAt < 1000, `first fork ${call.firstForkAt - call.receivedAt} ms after arrival: no timer may delay it`);
  });

  test("the caller's CANCEL cancels every branch, the caller gets 200 and 487", async () => {
    const a = await phone("proxy-uas-ring.xml");
    const b = await phone("proxy-uas-ring.xml");
    targets = [udpTarget(port, a.port), udpTarget(port, b.port)];
    const cancelled = rec.callerCancelled;
    assertOk("caller", await caller("proxy-uac-cancel.xml", 200));
    assertOk("phone a", await a.run);
    assertOk("phone b", await b.run);
    assert.equal(rec.callerCancelled, cancelled + 1);
    await idle();
  });

  test("a CANCEL of a re-INVITE inside the dialog reaches the phone with its Reason; 487 back to the caller; the dialog stays until BYE", async () => {
    const answering = await phone("proxy-uas-reinvite-cancel.xml");
    targets = [udpTarget(port, answering.port)];
    const before = rec.ended.length;
    assertOk("caller (200 to the CANCEL, 487 to the re-INVITE, then BYE answered)", await caller("proxy-uac-reinvite-cancel.xml"));
    assertOk("phone (CANCEL with Reason cause=487, ACK for its 487, BYE)", await answering.run);
    await idle();
    assert.deepEqual(rec.ended.slice(before), [{ answered: true, by: "caller" }], "the call ended by the BYE, not by the CANCEL");
  });

  test("a late 200 from the second phone is ACKed and BYEd by the proxy and never reaches the caller", async () => {
    const answering = await phone("proxy-uas-answer.xml", 100);
    const late = await phone("proxy-uas-late.xml", 500);
    targets = [udpTarget(port, answering.port), udpTarget(port, late.port)];
    const released = agent.proxy.stats().lateAnswersReleased;
    // The caller holds the call long enough for the late 200 to arrive meanwhile.
    const c = caller("proxy-uac.xml", 900);
    assertOk("late phone (ACK then BYE with Reason)", await late.run);
    assertOk("caller (a second 200 would be unexpected)", await c);
    assertOk("answering phone", await answering.run);
    assert.equal(agent.proxy.stats().lateAnswersReleased, released + 1);
    await idle();
  });

  test("a phone that rings forever hits Timer C: CANCEL, the engine is told 408 and rejects with 480", async () => {
    const ringing = await phone("proxy-uas-ring.xml");
    targets = [udpTarget(port, ringing.port, { timerC: 400 })];
    const failed = rec.failed.length;
    assertOk("caller gets 480", await caller("proxy-uac-fail.xml"));
    assertOk("phone cancelled by Timer C", await ringing.run);
    assert.deepEqual(rec.failed.slice(failed), [{ uri: `sip:phone@127.0.0.1:${ringing.port}`, status: 408 }]);
    await idle();
  });
});

describe("forking proxy with raw UDP peers", () => {
  async function rawPhone(): Promise<{ socket: dgram.Socket; port: number; requests: SipRequest[] }> {
    const socket = dgram.createSocket("udp4");
    sockets.push(socket);
    await new Promise<void>((r) => socket.bind(0, "127.0.0.1", () => r()));
    const requests: SipRequest[] = [];
    socket.on("message", (m) => {
      const p = parseDatagram(m);
      if (p.ok && p.message.kind === "request") requests.push(p.message);
    });
    return { socket, port: socket.address().port, requests };
  }

  function inviteText(c: SipClient, branch: string, extra: string[] = []): string {
    return [
      `INVITE sip:1000@127.0.0.1:${port} SIP/2.0`,
      `Via: SIP/2.0/UDP ${c.localAddress}:${c.localPort};branch=${branch};rport`,
      ...extra,
      `From: <sip:caller@${c.localAddress}>;tag=raw${branch}`,
      `To: <sip:1000@127.0.0.1:${port}>`,
      `Call-ID: ${branch}@raw`,
      "CSeq: 1 INVITE",
      `Contact: <sip:caller@${c.localAddress}:${c.localPort}>`,
      "Content-Length: 0",
      "",
      "",
    ].join("\r\n");
  }

  test("Max-Forwards 0 gets 483 and nothing is forked", async () => {
    const ph = await rawPhone();
    targets = [udpTarget(port, ph.port)];
    const c = await SipClient.open(port);
    clients.push(c);
    const r = await c.request(inviteText(c, "z9hG4bKmf0", ["Max-Forwards: 0"]));
    assert.equal(r.status, 483);
    await sleep(100);
    assert.equal(ph.requests.length, 0);
  });

  test("a retransmitted INVITE is absorbed (one INVITE per phone); the caller's CANCEL Reason is copied to the phone", async () => {
    const ph = await rawPhone();
    targets = [udpTarget(port, ph.port)];
    const c = await SipClient.open(port);
    clients.push(c);
    const text = inviteText(c, "z9hG4bKretrans", ["Max-Forwards: 70"]);
    c.send(text);
    await c.waitFor((r) => r.status === 100);
    c.send(text);
    await c.waitFor((r) => r.status === 100, { from: 1 });
    await until(() => ph.requests.length > 0, 2000, 10);
    await sleep(100);
    assert.equal(ph.requests.filter((r) => r.method === "INVITE").length, 1);
    // The phone rings, the caller gives up.
    const inv = ph.requests[0]!;
    const ringing = inv.headers
      .filter((h) => ["via", "from", "to", "call-id", "cseq"].includes(h.name))
      .map((h) => `${h.name}: ${h.value}${h.name === "to" ? ";tag=ph1" : ""}`);
    ph.socket.send(Buffer.from(["SIP/2.0 180 Ringing", ...ringing, "Content-Length: 0", "", ""].join("\r\n")), port, "127.0.0.1");
    await c.waitFor((r) => r.status === 180);
    const cancel = [
      `CANCEL sip:1000@127.0.0.1:${port} SIP/2.0`,
      `Via: SIP/2.0/UDP ${c.localAddress}:${c.localPort};branch=z9hG4bKretrans;rport`,
      "Max-Forwards: 70",
      `From: <sip:caller@${c.localAddress}>;tag=rawz9hG4bKretrans`,
      `To: <sip:1000@127.0.0.1:${port}>`,
      "Call-ID: z9hG4bKretrans@raw",
      "CSeq: 1 CANCEL",
      'Reason: Q.850;cause=16;text="Normal call clearing"',
      "Content-Length: 0",
      "",
      "",
    ].join("\r\n");
    c.send(cancel);
    await c.waitFor((r) => r.status === 487);
    const phoneCancel = await until(() => ph.requests.find((r) => r.method === "CANCEL"), 2000, 10);
    assert.equal(phoneCancel.headers.find((h) => h.name === "reason")?.value, 'Q.850;cause=16;text="Normal call clearing"');
    assert.ok(agent.status().transactions.absorbed >= 1);
  });
});
