// The transport against a running agent: IPv4 and IPv6, UDP and TCP, stream framing across
// chunks, CRLF keep-alives, received/rport, size limits and garbage on the wire.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import dgram from "node:dgram";
import net from "node:net";
import { freePort, startAgent, sleep, type RunningAgent } from "./harness.ts";

function options(host: string, localPort: number, transport: "UDP" | "TCP", branch: string, extra = ""): string {
  const h = host.includes(":") ? `[${host}]` : host;
  return [
    `OPTIONS sip:ringedge@${h} SIP/2.0`,
    `Via: SIP/2.0/${transport} ${h}:${localPort};branch=z9hG4bK${branch};rport`,
    "Max-Forwards: 70",
    `From: <sip:probe@${h}>;tag=${branch}`,
    `To: <sip:ringedge@${h}>`,
    `Call-ID: ${branch}@test`,
    "CSeq: 1 OPTIONS",
    extra,
    "Content-Length: 0",
    "",
    "",
  ]
    .filter((l, i, a) => l !== "" || i >= a.length - 2)
    .join("\r\n");
}

/** Longest wait for an answer the test expects; reached only when it never comes. */
const ANSWER_DEADLINE_MS = 20_000;

/**
 * One datagram from a fresh socket; resolves with the answers at the first one, or after
 * waitMs. Tests that expect an answer keep the default (a deadline, not a wait); the ones that
 * expect silence pass the quiet period they watch.
 */
function udp(family: 4 | 6, target: string, port: number, make: (localPort: number) => Buffer | string, waitMs = ANSWER_DEADLINE_MS): Promise<Buffer[]> {
  return new Promise((resolve, reject) => {
    const sock = dgram.createSocket(family === 6 ? "udp6" : "udp4");
    const got: Buffer[] = [];
    let timer: NodeJS.Timeout | undefined;
    let settled = false;
    const finish = (): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.close(() => resolve(got));
    };
    sock.on("message", (m) => {
      if (got.push(m) === 1) finish();
    });
    sock.on("error", reject);
    sock.bind(0, family === 6 ? "::1" : "127.0.0.1", () => {
      sock.send(make(sock.address().port), port, target);
      timer = setTimeout(finish, waitMs);
    });
  });
}

/** Writes the chunks on one connection; resolves as soon as done() holds for what came back, or at the deadline. */
function tcp(target: string, port: number, chunks: Array<Buffer | string | ((localPort: number) => Buffer | string)>, done: (r: { data: string; closed: boolean }) => boolean): Promise<{ data: string; closed: boolean }> {
  return new Promise((resolve) => {
    const sock = net.connect(port, target);
    let data = "";
    let closed = false;
    let timer: NodeJS.Timeout | undefined;
    let settled = false;
    const finish = (): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ data, closed });
      sock.destroy();
    };
    const check = (): void => {
      if (done({ data, closed })) finish();
    };
    sock.setEncoding("latin1");
    sock.on("data", (d: string) => ((data += d), check()));
    sock.on("close", () => ((closed = true), check()));
    sock.on("error", () => ((closed = true), check()));
    sock.on("connect", async () => {
      for (const c of chunks) {
        if (sock.destroyed) break;
        sock.write(typeof c === "function" ? c(sock.localPort ?? 0) : c);
        await sleep(20);
      }
    });
    timer = setTimeout(finish, ANSWER_DEADLINE_MS);
  });
}

const answered = (r: { data: string }): boolean => r.data.includes("\r\n\r\n");
const isClosed = (r: { closed: boolean }): boolean => r.closed;

describe("transport (IPv4 agent)", () => {
  let agent: RunningAgent;
  before(async () => {
    agent = await startAgent({ env: { RINGEDGE_MAX_MESSAGE_BYTES: "4096", RINGEDGE_MAX_HEADERS: "20" } });
  });
  after(async () => {
    await agent?.stop();
  });

  test("UDP OPTIONS: 200 back to the source port, with received/rport filled in (RFC 3581)", async () => {
    const [res] = await udp(4, "127.0.0.1", agent.port, (p) => options("127.0.0.9", p, "UDP", "u1"));
    assert.ok(res, "answered");
    const text = res.toString("latin1");
    assert.match(text, /^SIP\/2\.0 200 OK\r\n/);
    assert.match(text, /^Via: SIP\/2\.0\/UDP 127\.0\.0\.9:\d+;branch=z9hG4bKu1;rport=\d+;received=127\.0\.0\.1\r?$/m);
    assert.match(text, /^Allow: .*REGISTER/m);
  });

  test("TCP: a message split across chunks is framed by Content-Length in bytes", async () => {
    const body = "héllo wörld"; // 13 bytes, 11 characters
    const msg = (p: number) =>
      options("127.0.0.1", p, "TCP", "t1", `Content-Type: text/plain`).replace("Content-Length: 0\r\n\r\n", `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
    let full = "";
    const res = await tcp("127.0.0.1", agent.port, [(p) => ((full = msg(p)), Buffer.from(full).subarray(0, 40)), () => Buffer.from(full).subarray(40)], answered);
    // The whole 13-byte body was read (an OPTIONS with a text/plain body is answered 415 as
    // UAS); a character-counted framing would have waited for bytes that never come.
    assert.match(res.data, /^SIP\/2\.0 415 Unsupported Media Type\r\n/);
    assert.equal(res.closed, false);
  });

  test("TCP: two messages in one write get two answers; CRLFCRLF ping gets a CRLF pong", async () => {
    const res = await tcp("127.0.0.1", agent.port, [(p) => options("127.0.0.1", p, "TCP", "t2") + options("127.0.0.1", p, "TCP", "t3") + "\r\n\r\n"], (r) => r.closed || ((r.data.match(/SIP\/2\.0 200 OK/g)?.length ?? 0) >= 2 && r.data.endsWith("\r\n\r\n\r\n")));
    assert.equal(res.data.match(/SIP\/2\.0 200 OK/g)?.length, 2);
    assert.ok(res.data.endsWith("\r\n\r\n\r\n") || res.data.endsWith("Content-Length: 0\r\n\r\n\r\n"), "pong after the answers");
  });

  test("TCP: garbage without framing closes the connection; the agent keeps serving", async () => {
    const res = await tcp("127.0.0.1", agent.port, ["\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 this is not SIP\r\nContent-Length: -5\r\n\r\n"], isClosed);
    assert.equal(res.closed, true);
    const [ok] = await udp(4, "127.0.0.1", agent.port, (p) => options("127.0.0.1", p, "UDP", "after-garbage"));
    assert.ok(ok && /^SIP\/2\.0 200/.test(ok.toString("latin1")));
  });

  test("size limits: an oversized UDP datagram is dropped; an oversized TCP message closes the stream", async () => {
    const big = (p: number) => options("127.0.0.1", p, "UDP", "big", `X-Pad: ${"a".repeat(5000)}`);
    assert.equal((await udp(4, "127.0.0.1", agent.port, big, 400)).length, 0);
    const res = await tcp("127.0.0.1", agent.port, [(p) => `OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:${p};branch=z9hG4bKbig\r\nX-Pad: ${"a".repeat(6000)}`], isClosed);
    assert.equal(res.closed, true);
  });

  test("too many header lines: refused, not processed", async () => {
    const extra = Array.from({ length: 30 }, (_, i) => `X-H${i}: ${i}`).join("\r\n");
    const [res] = await udp(4, "127.0.0.1", agent.port, (p) => options("127.0.0.1", p, "UDP", "hdrs", extra));
    assert.ok(res, "answered with an error");
    assert.match(res.toString("latin1"), /^SIP\/2\.0 (400|513) /);
  });

  test("random bytes over UDP never get an answer and never stop the agent", async () => {
    for (let i = 0; i < 50; i++) {
      const junk = Buffer.from(Array.from({ length: 1 + ((i * 37) % 900) }, (_, j) => (i * 131 + j * 17) & 0xff));
      await udp(4, "127.0.0.1", agent.port, () => junk, 5);
    }
    const [ok] = await udp(4, "127.0.0.1", agent.port, (p) => options("127.0.0.1", p, "UDP", "after-junk"));
    assert.ok(ok && /^SIP\/2\.0 200/.test(ok.toString("latin1")));
    assert.equal(agent.proc.exitCode, null);
  });
});

describe("transport (IPv6 agent)", () => {
  let agent: RunningAgent;
  before(async () => {
    const port = await freePort();
    agent = await startAgent({ port, env: { RINGEDGE_SIP_LISTEN: `[::1]:${port}` } });
  });
  after(async () => {
    await agent?.stop();
  });

  test("UDP and TCP over ::1", async () => {
    const [res] = await udp(6, "::1", agent.port, (p) => options("::1", p, "UDP", "v6u"));
    assert.ok(res);
    assert.match(res.toString("latin1"), /^SIP\/2\.0 200 OK[\s\S]*^Via: SIP\/2\.0\/UDP \[::1\]:\d+;branch=z9hG4bKv6u;rport=\d+/m);
    const t = await tcp("::1", agent.port, [(p) => options("::1", p, "TCP", "v6t")], answered);
    assert.match(t.data, /^SIP\/2\.0 200 OK/);
  });
});
