// Overload control (agent/sip/overload.ts): the pure policy (which requests may be shed, the
// count latch with its hysteresis band, the shed fraction driven by sampled signals, the
// Retry-After), the /proc/net/udp parser, and the mechanism behind the transaction layer's
// admission hook: a shed request keeps no state, a retransmission of an admitted one is absorbed
// and never judged or counted again, protected requests pass a full agent.
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { afterEach, beforeEach, describe, mock, test } from "node:test";
import { parseDatagram } from "../../agent/sip/message.ts";
import {
  OverloadControl,
  SHED_STEP_DOWN,
  SHED_STEP_UP,
  SHED_STEP_UP_MAX,
  judgeCounts,
  nextShedFraction,
  parseUdpQueues,
  requestClass,
  retryAfterS,
  shedNow,
  smooth,
  validLimits,
  type OverloadLimits,
} from "../../agent/sip/overload.ts";
import { TransactionLayer } from "../../agent/sip/transaction.ts";
import type { Flow, SipRequest, Transport } from "../../agent/sip/types.ts";
import { tempDir } from "../tmpdir.ts";

const LIMITS: OverloadLimits = { loopBusyPct: 90, lagMs: 100, udpQueuePct: 50, maxCallsSetup: 10, maxServerTransactions: 1000, clearPct: 80, retryAfterS: 4 };
// No UDP queue read, so the loop's busy share counts.
const calm = { loopBusyPct: 10, lagMs: 1, udpQueuePct: undefined };

describe("requestClass: what may be shed", () => {
  test("requests that end or confirm admitted work are never shed, whatever the source", () => {
    for (const m of ["ACK", "CANCEL", "BYE", "PRACK"]) {
      assert.equal(requestClass(m, false, false), "protected", m);
      assert.equal(requestClass(m, true, false), "protected", m);
    }
  });
  test("any request inside a dialog (To tag) is protected: re-INVITE, UPDATE, INFO, NOTIFY, SUBSCRIBE refresh", () => {
    for (const m of ["INVITE", "UPDATE", "INFO", "NOTIFY", "SUBSCRIBE", "REFER", "MESSAGE", "OPTIONS"]) assert.equal(requestClass(m, true, false), "protected", m);
  });
  test("REGISTER is never shed, from a registered flow or not; OPTIONS only from a registered flow (keep-alive)", () => {
    assert.equal(requestClass("REGISTER", false, true), "protected");
    assert.equal(requestClass("REGISTER", false, false), "protected");
    assert.equal(requestClass("OPTIONS", false, true), "protected");
    assert.equal(requestClass("OPTIONS", false, false), "new");
  });
  test("dialog-creating and out-of-dialog requests are new work, even from a registered phone", () => {
    for (const m of ["INVITE", "SUBSCRIBE", "MESSAGE", "REFER", "PUBLISH", "NOTIFY", "INFO", "UPDATE", "FOO"]) {
      assert.equal(requestClass(m, false, false), "new", m);
      assert.equal(requestClass(m, false, true), "new", m);
    }
    assert.equal(requestClass("OPTIONS", false, false), "new");
  });
});

describe("judgeCounts: exact counts latch with a hysteresis band", () => {
  test("enters when a count reaches its limit, not before", () => {
    assert.equal(judgeCounts(null, { callsSetup: 9, serverTransactions: 999 }, LIMITS), null);
    assert.equal(judgeCounts(null, { callsSetup: 10, serverTransactions: 0 }, LIMITS), "callsSetup");
    assert.equal(judgeCounts(null, { callsSetup: 0, serverTransactions: 1000 }, LIMITS), "serverTransactions");
  });
  test("once latched, stays until every count is below 95 % of its limit (a narrow band: counts are exact)", () => {
    const l = { ...LIMITS, maxCallsSetup: 100 };
    let s = judgeCounts(null, { callsSetup: 100, serverTransactions: 0 }, l);
    s = judgeCounts(s, { callsSetup: 96, serverTransactions: 0 }, l);
    assert.equal(s, "callsSetup", "96 of 100 is above the clear level");
    s = judgeCounts(s, { callsSetup: 95, serverTransactions: 0 }, l);
    assert.equal(s, "callsSetup", "exactly 95 % still holds");
    s = judgeCounts(s, { callsSetup: 94, serverTransactions: 990 }, l);
    assert.equal(s, "callsSetup", "another count above its clear level holds it too");
    s = judgeCounts(s, { callsSetup: 94, serverTransactions: 10 }, l);
    assert.equal(s, null);
    // Not latched, the band alone does not enter.
    assert.equal(judgeCounts(null, { callsSetup: 99, serverTransactions: 999 }, l), null);
    // clearPct is the sampled signals' band: it does not widen the counts' one.
    assert.equal(judgeCounts("callsSetup", { callsSetup: 94, serverTransactions: 0 }, { ...l, clearPct: 10 }), null);
  });
  test("a limit of 0 disables that count", () => {
    const l = { ...LIMITS, maxCallsSetup: 0 };
    assert.equal(judgeCounts(null, { callsSetup: 1_000_000, serverTransactions: 0 }, l), null);
    assert.equal(judgeCounts("callsSetup", { callsSetup: 1_000_000, serverTransactions: 0 }, l), null);
  });
});

describe("nextShedFraction: sampled signals adapt the share refused (RFC 7339 loss-based idea)", () => {
  test("a signal over its limit raises the share, more the further over; calm samples lower it step by step", () => {
    const up = nextShedFraction(0, { ...calm, loopBusyPct: 90 }, LIMITS);
    assert.equal(up.cause, "loopBusy");
    assert.ok(Math.abs(up.fraction - SHED_STEP_UP) < 1e-9, String(up.fraction));
    const far = nextShedFraction(0, { ...calm, lagMs: 130 }, LIMITS);
    assert.equal(far.cause, "lag");
    assert.ok(Math.abs(far.fraction - (SHED_STEP_UP + 0.3)) < 1e-9, String(far.fraction));
    assert.equal(nextShedFraction(0, { ...calm, lagMs: 1000 }, LIMITS).fraction, SHED_STEP_UP_MAX, "one sample raises it by at most SHED_STEP_UP_MAX");
    assert.equal(nextShedFraction(0.95, { ...calm, lagMs: 1000 }, LIMITS).fraction, 1, "never above 1");
    const down = nextShedFraction(0.5, calm, LIMITS);
    assert.equal(down.cause, null);
    assert.ok(Math.abs(down.fraction - (0.5 - SHED_STEP_DOWN)) < 1e-9);
    assert.equal(nextShedFraction(0.01, calm, LIMITS).fraction, 0, "never below 0");
  });
  test("between the clear level and the limit the share holds (no flapping at the edge)", () => {
    // 80 % of 90 is 72: a loop 75 % busy is in the band.
    assert.deepEqual(nextShedFraction(0.3, { ...calm, loopBusyPct: 75 }, LIMITS), { fraction: 0.3, cause: null });
    assert.deepEqual(nextShedFraction(0, { ...calm, loopBusyPct: 75 }, LIMITS), { fraction: 0, cause: null });
  });
  test("the loop's busy share counts only where the UDP queue is not read (it is the backlog itself)", () => {
    // 100 % busy and keeping up (the queue read, under its limit): full use, not overload.
    assert.deepEqual(nextShedFraction(0.5, { loopBusyPct: 100, lagMs: 0, udpQueuePct: 0.5 }, LIMITS), { fraction: 0.5 - SHED_STEP_DOWN, cause: null });
    assert.equal(nextShedFraction(0, { loopBusyPct: 100, lagMs: 0, udpQueuePct: 45 }, LIMITS).cause, null, "in the queue's band: holds");
    // No queue to read (TCP only, not Linux), or its limit disabled: the busy share stands in.
    assert.equal(nextShedFraction(0, { loopBusyPct: 100, lagMs: 0, udpQueuePct: undefined }, LIMITS).cause, "loopBusy");
    assert.equal(nextShedFraction(0, { loopBusyPct: 100, lagMs: 0, udpQueuePct: 90 }, { ...LIMITS, udpQueuePct: 0 }).cause, "loopBusy");
  });
  test("the worst signal is named; an unknown UDP queue and disabled limits are ignored", () => {
    assert.equal(nextShedFraction(0, { loopBusyPct: 95, lagMs: 500, udpQueuePct: 60 }, LIMITS).cause, "lag");
    assert.equal(nextShedFraction(0, { loopBusyPct: 10, lagMs: 1, udpQueuePct: 75 }, LIMITS).cause, "udpQueue");
    assert.deepEqual(nextShedFraction(0.2, { loopBusyPct: 10, lagMs: 1, udpQueuePct: undefined }, LIMITS).cause, null);
    const off = { ...LIMITS, loopBusyPct: 0, lagMs: 0, udpQueuePct: 0 };
    assert.deepEqual(nextShedFraction(0.2, { loopBusyPct: 100, lagMs: 9999, udpQueuePct: 100 }, off), { fraction: 0.2 - SHED_STEP_DOWN, cause: null });
  });
  test("hostile figures (NaN, Infinity, a previous share out of range) never stick it at 1 or throw", () => {
    assert.equal(nextShedFraction(Number.NaN, calm, LIMITS).fraction, 0);
    assert.equal(nextShedFraction(7, calm, LIMITS).fraction, 1 - SHED_STEP_DOWN);
    assert.deepEqual(nextShedFraction(0, { loopBusyPct: Number.NaN, lagMs: Number.POSITIVE_INFINITY, udpQueuePct: -1 }, LIMITS), { fraction: 0, cause: null });
  });
});

test("smooth: one busy sample is a burst, a run of them is overload (exponential average, weight 0.5)", () => {
  let busy = 5;
  busy = smooth(busy, 100);
  assert.ok(busy < LIMITS.loopBusyPct, `one full sample: ${busy}`);
  for (let i = 0; i < 3; i++) busy = smooth(busy, 100);
  assert.ok(busy >= LIMITS.loopBusyPct, `four in a row: ${busy}`);
  assert.equal(smooth(40, Number.NaN), 40, "a non-finite sample changes nothing");
  assert.equal(smooth(Number.NaN, 30), 30, "a non-finite average restarts from the sample");
});

test("shedNow: protected never; new when counts latch, else by the draw", () => {
  assert.equal(shedNow("protected", "callsSetup", 1, 0), false);
  assert.equal(shedNow("new", "callsSetup", 0, 0.99), true);
  assert.equal(shedNow("new", null, 0.3, 0.29), true);
  assert.equal(shedNow("new", null, 0.3, 0.3), false);
  assert.equal(shedNow("new", null, 0, 0), false);
});

test("retryAfterS: an integer between base and base × 1.5, spread by the draw", () => {
  assert.equal(retryAfterS(4, 0), 4);
  assert.equal(retryAfterS(4, 0.999), 6);
  const seen = new Set<number>();
  for (let i = 0; i < 100; i++) {
    const v = retryAfterS(10, i / 100);
    assert.ok(Number.isInteger(v) && v >= 10 && v <= 15, String(v));
    seen.add(v);
  }
  assert.equal(seen.size, 6, "spread over every second of the window");
  assert.equal(retryAfterS(1, 0.9), 1);
  assert.equal(retryAfterS(0, Number.NaN), 1, "never 0 or NaN");
  assert.equal(retryAfterS(4, 5), 6);
});

test("validLimits refuses nonsense (a live change to it is ignored, never sheds everything)", () => {
  assert.ok(validLimits(LIMITS));
  for (const bad of [{ clearPct: 0 }, { clearPct: 101 }, { retryAfterS: 0 }, { maxCallsSetup: -1 }, { lagMs: Number.NaN }, { loopBusyPct: Number.POSITIVE_INFINITY }]) {
    assert.equal(validLimits({ ...LIMITS, ...bad }), false, JSON.stringify(bad));
  }
});

describe("parseUdpQueues (/proc/net/udp, udp6)", () => {
  const udp = [
    "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops",
    "  123: 0100007F:13C4 00000000:0000 07 00000000:00012C00 00:00000000 00000000  1000        0 5551 2 0000000000000000 0",
    "  124: 0100007F:13C5 00000000:0000 07 00000000:00000000 00:00000000 00000000  1000        0 5552 2 0000000000000000 17",
    "  125: 0200007F:13C4 00000000:0000 07 00000000:00000100 00:00000000 00000000  1000        0 5553 2 0000000000000000 0",
    "garbage line",
    "  126: 0100007F:ZZZZ 00000000:0000 07 00000000:00000100",
    "  127: 0100007F:13C6 00000000:0000 07 00000000:XYZ",
    "",
  ].join("\n");
  test("takes the rx_queue of the watched ports (hex), the largest when several sockets share one", () => {
    const q = parseUdpQueues(udp, new Set([5060, 5061]));
    assert.equal(q.get(5060), 0x12c00);
    assert.equal(q.get(5061), 0);
    assert.equal(q.size, 2);
  });
  test("IPv6 local addresses, and nothing from text that is not the table", () => {
    const v6 = "  0: 00000000000000000000000001000000:13C4 00000000000000000000000000000000:0000 07 00000000:00000400 00:00000000 00000000 0 0 1 2 0 0";
    assert.equal(parseUdpQueues(v6, new Set([5060])).get(5060), 0x400);
    assert.equal(parseUdpQueues("", new Set([5060])).size, 0);
    assert.equal(parseUdpQueues("\u0000\u0001 : : :", new Set([5060])).size, 0);
    assert.equal(parseUdpQueues(udp, new Set([6000])).size, 0);
  });
});

// --- mechanism, behind the transaction layer ---------------------------------------------------------

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

const flow: Flow = { transport: "udp", remoteAddress: "192.0.2.10", remotePort: 5060, localAddress: "192.0.2.1", localPort: 5060 };

function request(method: string, branch: string, opts: { toTag?: string } = {}): SipRequest {
  const text = [
    `${method} sip:201@192.0.2.1 SIP/2.0`,
    `Via: SIP/2.0/UDP 192.0.2.10:5060;branch=${branch}`,
    "Max-Forwards: 70",
    "From: <sip:200@192.0.2.1>;tag=f1",
    `To: <sip:201@192.0.2.1>${opts.toTag !== undefined ? `;tag=${opts.toTag}` : ""}`,
    `Call-ID: ${branch}@192.0.2.10`,
    `CSeq: 1 ${method}`,
    "Content-Length: 0",
    "",
    "",
  ].join("\r\n");
  const r = parseDatagram(Buffer.from(text));
  if (!r.ok || r.message.kind !== "request") throw new Error("fixture does not parse");
  return r.message;
}

describe("OverloadControl behind the transaction layer", () => {
  let layer: TransactionLayer;
  let calls: number;
  let control: OverloadControl;
  let limits: OverloadLimits;
  let changes: Array<[boolean, string | null]>;
  let now: number;
  beforeEach(() => {
    mock.timers.enable({ apis: ["setTimeout", "setInterval"] });
    layer = new TransactionLayer({ transport: new FakeTransport(), tryingDelay: false });
    calls = 0;
    changes = [];
    limits = { ...LIMITS, loopBusyPct: 0, lagMs: 0, udpQueuePct: 0, maxCallsSetup: 3 };
    now = 1_000_000;
    control = new OverloadControl({ limits, callsSetup: () => calls, serverTransactions: () => layer.counts().server, random: () => 0.5, now: () => now, onChange: (a, c) => changes.push([a, c]) });
  });
  afterEach(() => {
    control.stop();
    layer.close();
    mock.timers.reset();
  });
  const admit = (_s: string, _n: number, req: SipRequest): boolean | "shed" => control.admit(req.method, req.to.tag !== undefined, false, req) || "shed";

  test("below capacity everything is admitted; at capacity new INVITEs are shed with no transaction, protected requests pass", () => {
    assert.equal(layer.receiveRequest(request("INVITE", "z9hG4bKa1"), flow, admit).kind, "new");
    calls = 3;
    const before = layer.counts().server;
    assert.deepEqual(layer.receiveRequest(request("INVITE", "z9hG4bKa2"), flow, admit), { kind: "shed" });
    assert.deepEqual(layer.receiveRequest(request("SUBSCRIBE", "z9hG4bKa3"), flow, admit), { kind: "shed" });
    assert.deepEqual(layer.receiveRequest(request("MESSAGE", "z9hG4bKa4"), flow, admit), { kind: "shed" });
    assert.equal(layer.counts().server, before, "a shed request leaves no transaction");
    assert.equal(layer.receiveRequest(request("BYE", "z9hG4bKa5", { toTag: "t" }), flow, admit).kind, "new");
    assert.equal(layer.receiveRequest(request("INVITE", "z9hG4bKa6", { toTag: "t" }), flow, admit).kind, "new", "a re-INVITE");
    assert.equal(layer.receiveRequest(request("CANCEL", "z9hG4bKa1"), flow, admit).kind, "cancel");
    const st = control.stats();
    assert.equal(st.active, true);
    assert.equal(st.cause, "callsSetup");
    assert.equal(st.shed, 3);
    assert.deepEqual(st.shedByMethod, { INVITE: 1, SUBSCRIBE: 1, MESSAGE: 1 });
    assert.deepEqual(changes, [[true, "callsSetup"]]);
    assert.equal(control.retryAfter(), 5, "base 4 plus the draw's share of 2");
  });

  test("a retransmission of an admitted request is absorbed by its transaction: never judged, never counted, never shed", () => {
    const inv = request("INVITE", "z9hG4bKr1");
    assert.equal(layer.receiveRequest(inv, flow, admit).kind, "new");
    calls = 3; // the agent fills up meanwhile
    for (let i = 0; i < 5; i++) assert.equal(layer.receiveRequest(inv, flow, admit).kind, "absorbed");
    assert.equal(control.stats().shed, 0);
    // A request that was shed holds no transaction; its copies get the same 503 again, even once
    // there is room: the caller took the first 503 as final and would never ACK a later 200.
    const late = request("INVITE", "z9hG4bKr2");
    assert.equal(layer.receiveRequest(late, flow, admit).kind, "shed");
    calls = 0;
    assert.equal(layer.receiveRequest(late, flow, admit).kind, "shed");
    assert.equal(layer.receiveRequest(late, flow, admit).kind, "shed");
    let st = control.stats();
    assert.equal(st.shed, 1, "one new request shed");
    assert.equal(st.reshed, 2, "its retransmissions are not new load");
    assert.equal(layer.counts().server, 1, "and hold no state");
    // A new request (new branch) is judged on its own: there is room now.
    assert.equal(layer.receiveRequest(request("INVITE", "z9hG4bKr3"), flow, admit).kind, "new");
    // After 64×T1 the caller has stopped retransmitting: the key is forgotten.
    now += 32_000;
    assert.equal(layer.receiveRequest(late, flow, admit).kind, "new");
    st = control.stats();
    assert.equal(st.reshed, 2);
  });

  test("hysteresis: once full, admission resumes only below the clear level; leaving is reported once", () => {
    calls = 3;
    assert.equal(control.admit("INVITE", false, false), false);
    calls = 2; // 2 of 3 is below 95 %: clear
    assert.equal(control.admit("INVITE", false, false), true);
    limits.maxCallsSetup = 40;
    calls = 40;
    assert.equal(control.admit("INVITE", false, false), false);
    calls = 39;
    assert.equal(control.admit("INVITE", false, false), false, "in the band: still shedding");
    calls = 38;
    assert.equal(control.admit("INVITE", false, false), false, "95 % is not below 95 %");
    calls = 37;
    assert.equal(control.admit("INVITE", false, false), true);
    assert.deepEqual(changes, [[true, "callsSetup"], [false, null], [true, "callsSetup"], [false, null]]);
    assert.equal(control.stats().episodes, 2);
    assert.equal(control.stats().active, false);
  });

  test("REGISTERs and a registered phone's keep-alive pass a full agent; its new call does not", () => {
    calls = 3;
    assert.equal(control.admit("REGISTER", false, true), true);
    assert.equal(control.admit("REGISTER", false, false), true);
    assert.equal(control.admit("OPTIONS", false, true), true);
    assert.equal(control.admit("OPTIONS", false, false), false);
    assert.equal(control.admit("INVITE", false, true), false, "a new call from a registered phone is new work");
    assert.deepEqual(control.stats().shedByMethod, { OPTIONS: 1, INVITE: 1 });
  });

  test("limits changed live to nonsense are ignored: everything is admitted", () => {
    calls = 1000;
    limits.clearPct = 0;
    assert.equal(control.admit("INVITE", false, false), true);
    limits.clearPct = 80;
    assert.equal(control.admit("INVITE", false, false), false);
  });

  test("methods outside the known set are counted as other (bounded status keys)", () => {
    calls = 3;
    for (const m of ["FOO", "BAR", "X".repeat(200)]) assert.equal(control.admit(m, false, false), false);
    assert.deepEqual(control.stats().shedByMethod, { other: 3 });
  });
});

test("the sampler reads the UDP receive queues and sheds once one is over its limit, then recovers", async () => {
  const dir = tempDir("ringedge-overload-proc-");
  try {
    const table = (rx: number): string => `  sl  local_address rem_address   st tx_queue rx_queue\n  1: 0100007F:13C4 00000000:0000 07 00000000:${rx.toString(16).padStart(8, "0")} 00:00000000 00000000 0 0 1 2 0 0\n`;
    fs.writeFileSync(path.join(dir, "udp"), table(60_000));
    const limits: OverloadLimits = { ...LIMITS, loopBusyPct: 0, lagMs: 0, udpQueuePct: 50 };
    const control = new OverloadControl({ limits, callsSetup: () => 0, serverTransactions: () => 0, udpSockets: () => [{ port: 5060, family: 4, bufferBytes: 100_000 }], sampleMs: 10, procNetDir: dir, random: () => 0 });
    control.start();
    try {
      const deadline = Date.now() + 5000;
      while (!control.active && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      const st = control.stats();
      assert.equal(st.active, true, JSON.stringify(st));
      assert.equal(st.cause, "udpQueue");
      assert.equal(st.signals.udpQueuePct, 60);
      assert.equal(control.admit("INVITE", false, false), false);
      fs.writeFileSync(path.join(dir, "udp"), table(0));
      while (control.active && Date.now() < deadline + 5000) await new Promise((r) => setTimeout(r, 10));
      assert.equal(control.active, false, "calm samples bring the share back to 0");
      assert.equal(control.admit("INVITE", false, false), true);
    } finally {
      control.stop();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
