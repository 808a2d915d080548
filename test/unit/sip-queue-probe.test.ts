// The queue-delay probe (agent/sip/queue-probe.ts): its bookkeeping (a probe's wait, an unread
// probe's age, dropped probes forgotten), its datagram format (nothing without the nonce passes
// for one), and the transport sending probes through a real SIP UDP socket's queue: a wait is
// read once a probe has gone through, and it is at least a stall's length when the loop is blocked.
import assert from "node:assert/strict";
import dgram from "node:dgram";
import { describe, test } from "node:test";
import { PROBE_BYTES, ProbeClock, probeNonce, probePayload, readProbe } from "../../agent/sip/queue-probe.ts";
import { SipTransport } from "../../agent/sip/transport.ts";
import { createLogger } from "../../agent/log.ts";
import type { SipRequest } from "../../agent/sip/types.ts";

describe("ProbeClock", () => {
  test("the wait of the newest probe read", () => {
    const c = new ProbeClock();
    assert.equal(c.delayMs(0), undefined, "nothing sent, nothing known");
    const s1 = c.sent(100);
    assert.equal(c.received(s1, 103), true);
    assert.equal(c.delayMs(150), 3);
    const s2 = c.sent(150);
    assert.equal(c.received(s2, 190), true);
    assert.equal(c.delayMs(200), 40);
  });
  test("an unread probe counts by its age once that is longer than the last wait read: a stalled queue shows at once", () => {
    const c = new ProbeClock();
    c.received(c.sent(0), 2);
    c.sent(100);
    assert.equal(c.delayMs(101), 2, "young: the last wait read stands");
    assert.equal(c.delayMs(400), 300, "still unread 300 ms later");
  });
  test("a probe read forgets every earlier one still unread (dropped by a full queue); duplicates and strangers are refused", () => {
    const c = new ProbeClock();
    const a = c.sent(0);
    const b = c.sent(50);
    const d = c.sent(100);
    assert.equal(c.received(b, 120), true);
    assert.equal(c.delayMs(130), 70, "d (30 ms old) is younger than b's 70 ms wait");
    assert.equal(c.received(a, 125), false, "a was dropped: earlier than b");
    assert.equal(c.received(b, 126), false, "b twice");
    assert.equal(c.received(999, 127), false);
    assert.equal(c.received(d, 140), true);
    assert.equal(c.delayMs(300), 40);
  });
  test("outstanding probes are bounded (an agent stalled for long keeps the oldest 64 at most)", () => {
    const c = new ProbeClock();
    for (let i = 0; i < 1000; i++) c.sent(i);
    // The oldest kept is number 937 (sent at 936): the age counts from it.
    assert.equal(c.delayMs(1000), 64);
  });
});

describe("probe datagrams", () => {
  test("a probe reads back with its nonce; anything else is not one", () => {
    const nonce = probeNonce();
    const p = probePayload(nonce, 0xfffffffe);
    assert.equal(p.length, PROBE_BYTES);
    assert.equal(readProbe(p, nonce), 0xfffffffe);
    assert.equal(readProbe(p, probeNonce()), undefined, "another agent's nonce");
    assert.equal(readProbe(p.subarray(1), nonce), undefined);
    const bad = Buffer.from(p);
    bad[0] = 0x41;
    assert.equal(readProbe(bad, nonce), undefined);
    assert.equal(readProbe(Buffer.alloc(PROBE_BYTES), nonce), undefined);
    assert.equal(readProbe(Buffer.from("OPTIONS sip:x SIP/2.0\r\n\r\n"), nonce), undefined);
  });
});

function blockFor(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until) {
    // a stalled event loop: nothing is read meanwhile
  }
}

describe("SipTransport queue-delay probes", () => {
  test("measure the wait in the SIP socket's own receive queue; forged probes are SIP garbage, never a measurement", async () => {
    const got: SipRequest[] = [];
    const t = new SipTransport(
      { listen: [{ host: "127.0.0.1", port: 0, family: 4 }], transports: ["udp"], log: createLogger("silent") },
      { onRequest: (r) => got.push(r), onResponse: () => undefined },
    );
    await t.start();
    const forger = dgram.createSocket("udp4");
    try {
      const port = t.addresses()[0]!.port;
      assert.equal(t.queueDelayMs(), undefined, "no probe yet");
      t.probeQueues(); // opens the probe socket
      await new Promise((r) => setTimeout(r, 50));
      t.probeQueues();
      await new Promise((r) => setTimeout(r, 50));
      // An idle loop reads the probe at once; how soon on a loaded test box is not asserted.
      const idle = t.queueDelayMs();
      assert.ok(idle !== undefined && idle >= 0, `idle loop: ${idle} ms`);
      // A probe sent, then the loop blocked for 150 ms: the probe waits in the queue that long.
      t.probeQueues();
      blockFor(150);
      await new Promise((r) => setTimeout(r, 30));
      const stalled = t.queueDelayMs()!;
      assert.ok(stalled >= 140, `after a 150 ms stall: ${stalled} ms`);
      // Someone else's datagram of a probe's size and shape, without the nonce: not a probe.
      const before = t.stats().received;
      forger.send(probePayload(probeNonce(), 1), port, "127.0.0.1");
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(t.stats().received, before + 1, "handled as an ordinary (unparseable) datagram");
      assert.equal(t.queueDelayMs(), stalled, "the measurement did not move");
      assert.equal(got.length, 0);
    } finally {
      forger.close();
      await t.stop();
    }
    t.probeQueues(); // after stop: a no-op, no socket left open
    assert.equal(t.queueDelayMs(), undefined);
  });
});
