// Stream framing (StreamFramer) and the TCP admission and timing rules of SipTransport: split
// anywhere, several messages per chunk, bodies split, limits, linear work however the bytes are
// chunked, caps per address and in total, the message deadline and the idle timeout.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { DEFAULT_LIMITS, frameStream, type ParseLimits } from "../../agent/sip/message.ts";
import { SipTransport, StreamFramer, isDottedQuad, type StreamEvent } from "../../agent/sip/transport.ts";
import { createLogger } from "../../agent/log.ts";
import type { SipRequest } from "../../agent/sip/types.ts";
import { loadRfc4475 as load, rfc4475Files } from "../fixtures/rfc4475.ts";

function options(branch: string, extra: string[] = [], body = ""): Buffer {
  return Buffer.from(
    [
      "OPTIONS sip:ringedge@127.0.0.1 SIP/2.0",
      `Via: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK${branch}`,
      "Max-Forwards: 70",
      `From: <sip:probe@127.0.0.1>;tag=${branch}`,
      "To: <sip:ringedge@127.0.0.1>",
      `Call-ID: ${branch}@unit`,
      "CSeq: 1 OPTIONS",
      ...extra,
      `Content-Length: ${Buffer.byteLength(body)}`,
      "",
      body,
    ].join("\r\n"),
  );
}

/** Feeds the stream in chunks of the given sizes (cycled) and collects every event. */
function feed(stream: Buffer, sizes: number[], limits: ParseLimits = DEFAULT_LIMITS): { events: StreamEvent[]; framer: StreamFramer } {
  const framer = new StreamFramer(limits);
  const events: StreamEvent[] = [];
  for (let at = 0, i = 0; at < stream.length; i++) {
    const n = Math.max(1, sizes[i % sizes.length]!);
    // Each chunk is a fresh copy, as a socket hands them out.
    events.push(...framer.push(Buffer.from(stream.subarray(at, at + n))));
    at += n;
  }
  return { events, framer };
}

const show = (events: StreamEvent[]): string[] => events.map((e) => (e.kind === "message" ? `message:${e.bytes.toString("latin1")}` : e.kind === "error" ? `error:${e.reason}` : "ping"));

describe("StreamFramer", () => {
  const body = "v=0\r\n\r\ns=Grüße ☎\r\n"; // holds a CRLFCRLF and multi-byte characters
  const a = options("a", ["Content-Type: application/sdp"], body);
  const b = options("b");
  const stream = Buffer.concat([Buffer.from("\r\n\r\n"), a, Buffer.from("\r\n"), b, Buffer.from("\r\n\r\n")]);
  const expected = ["ping", `message:${a.toString("latin1")}`, `message:${b.toString("latin1")}`, "ping"];

  test("one chunk with several messages and keep-alives: every message and each double-CRLF ping", () => {
    assert.deepEqual(show(feed(stream, [stream.length]).events), expected);
  });

  test("split at every position, and byte by byte, gives the same events", () => {
    for (let cut = 1; cut < stream.length; cut++) {
      assert.deepEqual(show(feed(stream, [cut, stream.length]).events), expected, `cut at ${cut}`);
    }
    assert.deepEqual(show(feed(stream, [1]).events), expected);
    assert.deepEqual(show(feed(stream, [3, 1, 7, 2]).events), expected);
  });

  test("a body split from its headers waits for exactly Content-Length bytes (bytes, not characters)", () => {
    const headLen = a.indexOf("\r\n\r\n") + 4;
    const f = new StreamFramer();
    assert.deepEqual(f.push(a.subarray(0, headLen)), []);
    assert.equal(f.inMessage, true);
    assert.deepEqual(f.push(a.subarray(headLen, a.length - 1)), []);
    const [m] = f.push(a.subarray(a.length - 1));
    assert.equal(m?.kind, "message");
    assert.equal(m?.kind === "message" && m.bytes.length, a.length);
    assert.equal(f.inMessage, false);
    assert.equal(f.buffered, 0);
  });

  test("a message handed out is never overwritten by later bytes", () => {
    const f = new StreamFramer();
    // a's tail and b's head arrive together; b then completes in small pieces.
    f.push(a.subarray(0, 10));
    const [first] = f.push(Buffer.concat([a.subarray(10), b.subarray(0, 5)]));
    assert.equal(first?.kind, "message");
    const copy = Buffer.from((first as { bytes: Buffer }).bytes);
    for (let i = 5; i < b.length; i++) f.push(b.subarray(i, i + 1));
    assert.deepEqual((first as { bytes: Buffer }).bytes, copy);
  });

  test("a read full of pings gets one pong, not one per double CRLF", () => {
    const f = new StreamFramer();
    assert.deepEqual(show(f.push(Buffer.from("\r\n".repeat(10_000)))), ["ping"]);
    assert.deepEqual(show(f.push(Buffer.from("\r\n\r\n"))), ["ping"], "the next read's ping is answered");
    assert.equal(f.buffered, 0);
  });

  test("CRLFs before a start-line are keep-alives; a lone CR waits; a message starts at its first byte", () => {
    const f = new StreamFramer();
    assert.deepEqual(show(f.push(Buffer.from("\r\n"))), []);
    assert.deepEqual(show(f.push(Buffer.from("\r\n"))), ["ping"], "a double CRLF split across reads is still a ping");
    assert.deepEqual(show(f.push(Buffer.from("\r"))), []);
    assert.equal(f.inMessage, false);
    assert.equal(f.messageSeq, 0);
    assert.deepEqual(show(f.push(Buffer.from("\nO"))), []);
    assert.equal(f.inMessage, true);
    assert.equal(f.messageSeq, 1);
    assert.equal(show(f.push(b.subarray(1)))[0], `message:${b.toString("latin1")}`);
    assert.equal(f.inMessage, false);
  });

  test("framing errors: missing, invalid or conflicting Content-Length; nothing is framed after one", () => {
    const noCl = Buffer.from("OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bKx\r\n\r\n");
    assert.deepEqual(show(feed(noCl, [5]).events), ["error:missing Content-Length on a stream"]);
    assert.deepEqual(show(feed(options("c", ["Content-Length: -5"]), [4]).events), ["error:invalid Content-Length"]);
    assert.deepEqual(show(feed(options("c", ["l: 3"]), [9]).events), ["error:conflicting Content-Length values"]);
    const f = new StreamFramer();
    f.push(noCl);
    assert.deepEqual(f.push(b), [], "a broken stream frames nothing more");
  });

  test("limits: a header block with no end, or a declared body, over maxMessageBytes is an error", () => {
    const limits = { maxMessageBytes: 1000, maxHeaders: 100 };
    const endless = Buffer.from("INVITE sip:x SIP/2.0\r\n" + "X: y\r\n".repeat(300));
    const r = feed(endless, [1], limits);
    assert.deepEqual(show(r.events), ["error:header block exceeds size limit"]);
    const huge = Buffer.from("OPTIONS sip:x SIP/2.0\r\nContent-Length: 100000\r\n\r\n");
    assert.deepEqual(show(feed(huge, [2], limits).events), ["error:message exceeds size limit"]);
    // A message of exactly maxMessageBytes passes.
    const exact = options("e", [], "x".repeat(1000 - options("e", [], "x".repeat(100)).length + 100));
    assert.equal(exact.length, 1000);
    assert.deepEqual(show(feed(exact, [13], limits).events), [`message:${exact.toString("latin1")}`]);
  });

  test("agrees with frameStream over a whole buffer on the RFC 4475 torture messages, chunked in odd sizes", () => {
    for (const f of rfc4475Files()) {
      const bytes = load(f);
      // The reference: frameStream applied to what is left of the whole stream, message by message.
      const want: string[] = [];
      let rest = bytes;
      let waiting = false;
      for (;;) {
        const frame = frameStream(rest);
        if (frame.kind === "need-more") {
          waiting = rest.length > 0;
          break;
        }
        if (frame.kind === "error") {
          want.push(`error:${frame.reason}`);
          break;
        }
        if (frame.kind === "message") want.push(`message:${rest.subarray(0, frame.length).toString("latin1")}`);
        rest = rest.subarray(frame.length);
      }
      const { events, framer } = feed(bytes, [7, 1, 13]);
      assert.deepEqual(show(events), want, f);
      assert.equal(framer.inMessage, waiting, f);
    }
    assert.ok(show(feed(load("dblreq.dat"), [5]).events).length >= 2, "dblreq.dat holds more than one message");
  });

  test("work is linear: a 60 KB header block fed one byte at a time is scanned about once", () => {
    const pad = Array.from({ length: 700 }, (_, i) => `X-Pad-${i}: ${"p".repeat(70)}`);
    const big = options("big", pad);
    assert.ok(big.length > 55_000 && big.length < DEFAULT_LIMITS.maxMessageBytes, `size ${big.length}`);
    const once = feed(big, [big.length]);
    assert.equal(once.events.length, 1);
    for (const sizes of [[1], [3], [1, 2, 5, 11]]) {
      const { events, framer } = feed(big, sizes);
      assert.deepEqual(show(events), show(once.events), `chunks ${sizes}`);
      // Each chunk's search starts 3 bytes back; the header block is read once more for
      // Content-Length. Rescanning the buffer per chunk would cost about n²/2 = 1.6e9 here.
      const perChunkOverlap = 3 * Math.ceil(big.length / Math.min(...sizes));
      assert.ok(framer.scanned <= once.framer.scanned + perChunkOverlap, `chunks ${sizes}: scanned ${framer.scanned} vs ${once.framer.scanned} in one read`);
      assert.ok(framer.scanned <= 5 * big.length, `chunks ${sizes}: scanned ${framer.scanned} for ${big.length} bytes`);
    }
    assert.ok(once.framer.scanned <= 2 * big.length + 8);
  });
});

// --- SipTransport over loopback ------------------------------------------------------------

async function until(fn: () => boolean, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

interface Client {
  sock: net.Socket;
  data: string;
  closed: boolean;
}

function connect(port: number, localAddress: string): Client {
  const c: Client = { sock: net.connect({ host: "127.0.0.1", port, localAddress }), data: "", closed: false };
  c.sock.setEncoding("latin1");
  c.sock.on("data", (d: string) => (c.data += d));
  c.sock.on("error", () => undefined);
  c.sock.on("close", () => (c.closed = true));
  return c;
}

async function withTransport(opts: Partial<ConstructorParameters<typeof SipTransport>[0]>, run: (t: SipTransport, port: number, got: SipRequest[]) => Promise<void>): Promise<void> {
  const got: SipRequest[] = [];
  const t = new SipTransport(
    { listen: [{ host: "127.0.0.1", port: 0, family: 4 }], transports: ["tcp"], log: createLogger("silent"), ...opts },
    { onRequest: (r) => got.push(r), onResponse: () => undefined },
  );
  await t.start();
  try {
    await run(t, t.addresses()[0]!.port, got);
  } finally {
    await t.stop();
  }
}

describe("SipTransport TCP admission and timers", () => {
  test("connections over the per-address cap are closed at once and counted; other addresses still get in", async () => {
    await withTransport({ maxConnectionsPerAddress: 3, maxConnections: 5 }, async (t, port, got) => {
      const flood = Array.from({ length: 8 }, () => connect(port, "127.0.0.77"));
      await until(() => flood.filter((c) => c.closed).length === 5 && t.stats().tcpRefused === 5);
      assert.equal(t.stats().tcpMostFromOneAddress, 3);
      const other = [connect(port, "127.0.0.78"), connect(port, "127.0.0.78")];
      await until(() => t.stats().tcpConnections === 5);
      // Now the total cap (5) is reached: a third address is refused too.
      const third = connect(port, "127.0.0.79");
      await until(() => third.closed && t.stats().tcpRefused === 6);
      assert.equal(other.some((c) => c.closed), false);
      // A refused connection's place is free again once one from that address closes.
      flood.find((c) => !c.closed)!.sock.destroy();
      await until(() => t.stats().tcpMostFromOneAddress === 2);
      const again = connect(port, "127.0.0.77");
      again.sock.write(options("again"));
      await until(() => got.length === 1 || again.closed);
      assert.equal(again.closed, false);
      assert.equal(got[0]?.callId, "again@unit");
      for (const c of [...flood, ...other, third, again]) c.sock.destroy();
    });
  });

  test("a message not complete within the deadline closes the connection although bytes keep coming", async () => {
    await withTransport({ tcpMessageTimeoutMs: 300 }, async (t, port) => {
      const slow = connect(port, "127.0.0.80");
      const text = options("slow");
      let i = 0;
      const drip = setInterval(() => !slow.closed && slow.sock.write(text.subarray(i, ++i)), 20);
      try {
        await until(() => slow.closed, 3000);
      } finally {
        clearInterval(drip);
      }
      assert.ok(i < text.length, "closed before the message was complete");
      assert.equal(t.stats().tcpMessageTimeouts, 1);
    });
  });

  test("a trickled message complete within the deadline is served; the next message gets a fresh deadline", async () => {
    await withTransport({ tcpMessageTimeoutMs: 1500 }, async (t, port, got) => {
      const c = connect(port, "127.0.0.81");
      for (const branch of ["t1", "t2"]) {
        const text = options(branch);
        for (let at = 0; at < text.length; at += 40) {
          c.sock.write(text.subarray(at, at + 40));
          await new Promise((r) => setTimeout(r, 15));
        }
      }
      await until(() => got.length === 2);
      assert.deepEqual(got.map((r) => r.callId), ["t1@unit", "t2@unit"]);
      assert.equal(c.closed, false);
      assert.equal(t.stats().tcpMessageTimeouts, 0);
      c.sock.destroy();
    });
  });

  test("idle timeout: CRLF keep-alives keep a connection; a silent one is closed", async () => {
    await withTransport({ tcpIdleTimeoutMs: 1000 }, async (t, port) => {
      const pinging = connect(port, "127.0.0.82");
      const quiet = connect(port, "127.0.0.83");
      const ping = setInterval(() => pinging.sock.write("\r\n\r\n"), 100);
      try {
        await until(() => quiet.closed, 3000);
        assert.equal(pinging.closed, false);
        assert.ok(pinging.data.startsWith("\r\n"), "pongs came back");
        assert.equal(t.stats().tcpIdleClosed, 1);
      } finally {
        clearInterval(ping);
        pinging.sock.destroy();
      }
    });
  });
});

test("isDottedQuad reads exactly what net.isIPv4 accepts", () => {
  const cases = [
    "127.0.0.1", "0.0.0.0", "255.255.255.255", "10.0.0.01", "256.1.1.1", "1.2.3", "1.2.3.4.5", "1..2.3", ".1.2.3", "1.2.3.",
    "01.2.3.4", "1.2.3.4 ", " 1.2.3.4", "1.2.3.-4", "1.2.3.1000", "::1", "::ffff:1.2.3.4", "a.b.c.d", "", "1.2.3.4\n", "192.168.100.200", "1e1.2.3.4",
  ];
  for (const s of cases) assert.equal(isDottedQuad(s), net.isIPv4(s), JSON.stringify(s));
  // Random strings over the characters that matter, with a seeded generator.
  let seed = 42;
  const rnd = (n: number): number => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n);
  const alphabet = "0123456789.:a";
  for (let k = 0; k < 20_000; k++) {
    let s = "";
    const len = 1 + rnd(16);
    for (let i = 0; i < len; i++) s += alphabet[rnd(alphabet.length)];
    assert.equal(isDottedQuad(s), net.isIPv4(s), JSON.stringify(s));
  }
  // Four parts of zero to four digits each: the near misses.
  for (let k = 0; k < 20_000; k++) {
    const parts: string[] = [];
    for (let p = 0; p < 4; p++) {
      let d = "";
      const len = rnd(5);
      for (let i = 0; i < len; i++) d += String(rnd(10));
      parts.push(d);
    }
    const s = parts.join(".");
    assert.equal(isDottedQuad(s), net.isIPv4(s), JSON.stringify(s));
  }
});
