// RFC 4475 torture messages against a running agent, over UDP and over TCP. Each file's
// outcome must match INDEX.md: valid messages are processed (answered by the layer above
// the parser), invalid ones answered 400/505/501/416/420 or dropped, responses dropped.
// The top Via of each file is rewritten to 127.0.0.1 with rport so that every answer comes
// back here (the suite also runs inside a loopback-only network namespace, see
// test/run-tests.sh); nothing else in the files changes, body and Content-Length included.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import dgram from "node:dgram";
import net from "node:net";
import { startAgent, type RunningAgent } from "./harness.ts";
import { loadRfc4475, rfc4475Files } from "../fixtures/rfc4475.ts";
import { computeAuthorization } from "../../agent/sip/digest.ts";

/**
 * What the agent answers for each file. "drop": no answer at all. For TCP, "close" means
 * the framing is unrecoverable and the agent closes the connection; "wait" means a stream
 * peer would simply wait for more bytes (Content-Length beyond what was sent).
 * Several statuses are listed where INDEX.md allows either (e.g. an OPTIONS an endpoint
 * answers 200 where a proxy would answer 483). A new INVITE from a source that is neither a
 * registered phone nor the trunk is processed normally and answered 407: the toll-fraud
 * rule challenges it before anything about the dialled number is revealed.
 */
const EXPECT: Record<string, { udp: number[] | "drop"; tcp?: number[] | "drop" | "close" | "wait"; why: string }> = {
  "wsinv.dat": { udp: [481], why: "valid INVITE; its To tag makes it in-dialog, and no such dialog exists" },
  "intmeth.dat": { udp: [501], why: "unknown method token" },
  "esc01.dat": { udp: [407], why: "valid INVITE; challenged like every call from an unknown source" },
  "escnull.dat": { udp: [401], why: "valid REGISTER; challenged like every REGISTER without credentials" },
  "esc02.dat": { udp: [501], why: "RE%47IST%45R is an unknown method, not REGISTER" },
  "lwsdisp.dat": { udp: [200], why: "valid OPTIONS" },
  "longreq.dat": { udp: [407], why: "valid INVITE with long values; challenged" },
  "dblreq.dat": { udp: [401], why: "the REGISTER is processed, trailing octets ignored" },
  "semiuri.dat": { udp: [200], why: "valid OPTIONS" },
  "transports.dat": { udp: [200], why: "valid OPTIONS with unknown transports in Via" },
  "mpart01.dat": { udp: [404], why: "valid MESSAGE framed by Content-Length; no such target" },
  "unreason.dat": { udp: "drop", why: "a response matching no transaction is dropped" },
  "noreason.dat": { udp: "drop", why: "a response matching no transaction is dropped" },
  "badinv01.dat": { udp: [400], why: "extraneous header separators" },
  "clerr.dat": { udp: [400], tcp: "wait", why: "Content-Length larger than the datagram" },
  "ncl.dat": { udp: [400], tcp: "close", why: "negative Content-Length" },
  "scalar02.dat": { udp: [400], why: "CSeq beyond 2^32-1" },
  "scalarlg.dat": { udp: "drop", why: "invalid response is discarded" },
  "quotbal.dat": { udp: [400], why: "unterminated quoted string" },
  "ltgtruri.dat": { udp: [400], why: "<> around the Request-URI" },
  "lwsruri.dat": { udp: [400], why: "LWS inside the Request-URI" },
  "lwsstart.dat": { udp: [400], why: "multiple SP in the request line" },
  "trws.dat": { udp: [400], why: "trailing SP in the request line" },
  "escruri.dat": { udp: [400], why: "escaped headers in the Request-URI" },
  "baddate.dat": { udp: [407], why: "Date is ignored; a valid INVITE otherwise, challenged" },
  "regbadct.dat": { udp: [401, 400], why: "authentication comes first (RFC 3261 §10.3 step 3)" },
  "badaspec.dat": { udp: [400], why: "spaces inside an addr-spec" },
  "baddn.dat": { udp: [400], tcp: "wait", why: "unquoted non-token display name; no blank line ends the headers, so a stream waits for more" },
  "badvers.dat": { udp: [505], why: "SIP/7.0" },
  "mismatch01.dat": { udp: [400], why: "CSeq method differs from the request method" },
  "mismatch02.dat": { udp: [501], why: "unknown method with CSeq mismatch" },
  "bigcode.dat": { udp: "drop", why: "overlarge status code, response dropped" },
  "badbranch.dat": { udp: [200, 400], why: "branch=z9hG4bK alone must not break anything" },
  "insuf.dat": { udp: [400], why: "no Call-ID, From or To" },
  "unkscm.dat": { udp: [416], why: "Request-URI scheme unknown" },
  "novelsc.dat": { udp: [416], why: "soap.beep Request-URI never acceptable here" },
  "unksm2.dat": { udp: [400], why: "a registrar's To must be a SIP or SIPS AOR" },
  "bext01.dat": { udp: [420], why: "Require with unknown option tags" },
  "invut.dat": { udp: [407], why: "unknown Content-Type is the UAS's business; the proxy challenges the unknown caller" },
  "regaut01.dat": { udp: [401], why: "unknown Authorization scheme: challenged in one we know" },
  "multi01.dat": { udp: [400], why: "multiple single-valued headers" },
  "mcl01.dat": { udp: [400], tcp: "close", why: "conflicting Content-Length values" },
  "bcast.dat": { udp: "drop", why: "response with a broadcast Via is never forwarded" },
  "zeromf.dat": { udp: [200, 483], why: "Max-Forwards 0 on an OPTIONS the agent answers itself" },
  "cparam01.dat": { udp: [401], why: "valid REGISTER, challenged" },
  "cparam02.dat": { udp: [401], why: "valid REGISTER, challenged" },
  "regescrt.dat": { udp: [401], why: "valid REGISTER, challenged" },
  "sdp01.dat": { udp: [407], why: "Accept is the UAS's business; the proxy challenges the unknown caller" },
  "inv2543.dat": { udp: [407], tcp: "close", why: "RFC 2543 INVITE accepted (and challenged) on UDP; a stream needs Content-Length" },
  "test.dat": { udp: "drop", why: "no SIP-Version on the request line: malformed, no Via to answer" },
};

/**
 * Rewrite the top Via's sent-protocol and sent-by to reach us back; keep everything else.
 * Many files share a branch (z9hG4bKkdjuw): each exchange uses its own loopback source
 * address, so the sent-by differs and the agent never takes one file for a retransmission
 * of another (RFC 3261 §17.2.3 matches on branch + sent-by + method).
 */
export function pointTopViaAt(msg: Buffer, transport: "UDP" | "TCP", host: string, port: number): Buffer {
  const text = msg.toString("latin1"); // byte-preserving round trip
  // The first Via line; its sent-protocol may be folded over lines (RFC 4475 wsinv).
  const re = /^(via|v)([ \t]*:\s*)SIP\s*\/\s*2\.0\s*\/\s*[!-~]+?(\s+)([^\s;,]+)/im;
  const m = re.exec(text);
  if (!m) return msg;
  const replaced = `${m[1]}${m[2]}SIP/2.0/${transport} ${host}:${port};rport`;
  return Buffer.from(text.slice(0, m.index) + replaced + text.slice(m.index + m[0].length), "latin1");
}

function statusOf(reply: Buffer): number {
  const m = /^SIP\/2\.0 (\d{3})/.exec(reply.toString("latin1"));
  return m ? Number(m[1]) : -1;
}

let nextSource = 0;
/** A fresh loopback address per exchange (127.0.1.1, 127.0.1.2, ...). */
function sourceAddress(): string {
  nextSource++;
  return `127.0.${1 + Math.floor(nextSource / 250)}.${1 + (nextSource % 250)}`;
}

/** Longest wait for an answer the agent must send; reached only when it never comes. */
const ANSWER_DEADLINE_MS = 20_000;

let barriers = 0;
/**
 * An OPTIONS the agent answers 200 itself, sent after a torture message on the same socket or
 * connection. The agent handles one source's messages in order, so once the barrier's answer
 * is back, any answer to the message before it has been sent too: "no answer" is shown by a
 * state, not by a quiet period a loaded machine could overrun.
 */
function barrier(transport: "UDP" | "TCP", host: string, port: number, agentPort: number): { text: string; callId: string } {
  const callId = `barrier-${++barriers}-${process.pid}@${host}`;
  const text = [
    `OPTIONS sip:127.0.0.1:${agentPort} SIP/2.0`,
    `Via: SIP/2.0/${transport} ${host}:${port};branch=z9hG4bK-barrier-${barriers};rport`,
    "Max-Forwards: 70",
    `From: <sip:barrier@${host}>;tag=b${barriers}`,
    `To: <sip:127.0.0.1:${agentPort}>`,
    `Call-ID: ${callId}`,
    "CSeq: 1 OPTIONS",
    "Content-Length: 0",
    "",
    "",
  ].join("\r\n");
  return { text, callId };
}

const isAnswerTo = (callId: string) => (reply: Buffer): boolean => reply.toString("latin1").includes(`Call-ID: ${callId}\r\n`);

/** Resolves when check() holds or the deadline passes (the caller's assertions then say what is missing). */
async function waitFor(check: () => boolean, deadlineMs: number): Promise<void> {
  const end = Date.now() + deadlineMs;
  while (!check() && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
}

/** Splits a stream of responses into messages by Content-Length (long or compact form). */
function splitStream(data: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let rest = data;
  for (;;) {
    const end = rest.indexOf("\r\n\r\n");
    if (end < 0) break;
    const head = rest.subarray(0, end).toString("latin1");
    const cl = Number(/^(?:content-length|l)[ \t]*:[ \t]*(\d+)/im.exec(head)?.[1] ?? 0);
    const total = end + 4 + cl;
    if (rest.length < total) break;
    out.push(rest.subarray(0, total));
    rest = rest.subarray(total);
  }
  if (rest.length > 0) out.push(rest);
  return out;
}

/**
 * Sends one message over UDP from a fresh source and returns what the agent answered to it.
 * When an answer is expected it waits for the first one (bounded); either way it then sends
 * a barrier and waits for the barrier's answer, so late or extra answers are caught too.
 */
function udpExchange(port: number, raw: Buffer, expectAnswer: boolean, rewrite = true): Promise<Buffer[]> {
  return new Promise((resolve) => {
    const sock = dgram.createSocket("udp4");
    const got: Buffer[] = [];
    sock.on("message", (m) => got.push(m));
    const host = sourceAddress();
    sock.bind(0, host, async () => {
      const local = sock.address().port;
      sock.send(rewrite ? pointTopViaAt(raw, "UDP", host, local) : raw, port, "127.0.0.1");
      if (expectAnswer) await waitFor(() => got.length > 0, ANSWER_DEADLINE_MS);
      const b = barrier("UDP", host, local, port);
      sock.send(b.text, port, "127.0.0.1");
      await waitFor(() => got.some(isAnswerTo(b.callId)), ANSWER_DEADLINE_MS);
      sock.close(() => resolve(got.filter((m) => !isAnswerTo(b.callId)(m))));
    });
  });
}

/**
 * Sends one message over TCP and waits for the state the expectation names: a complete
 * answer, the agent closing the connection, or (for "drop") a barrier's answer on the same
 * connection. "wait" (the agent waits for body bytes that never come) has no later state to
 * wait for: it alone watches a quiet period.
 */
function tcpExchange(port: number, raw: Buffer, expect: "answer" | "close" | "drop" | "wait"): Promise<{ replies: Buffer; closed: boolean }> {
  return new Promise((resolve) => {
    const host = sourceAddress();
    const sock = net.connect({ port, host: "127.0.0.1", localAddress: host });
    const chunks: Buffer[] = [];
    let closed = false;
    const data = (): Buffer => Buffer.concat(chunks);
    sock.on("data", (d) => chunks.push(d));
    sock.on("close", () => (closed = true));
    sock.on("error", () => (closed = true));
    sock.on("connect", async () => {
      const local = sock.localPort ?? 0;
      sock.write(pointTopViaAt(raw, "TCP", host, local));
      let replies: () => Buffer = data;
      if (expect === "answer") await waitFor(() => closed || data().includes("\r\n\r\n"), ANSWER_DEADLINE_MS);
      else if (expect === "close") await waitFor(() => closed, ANSWER_DEADLINE_MS);
      else if (expect === "wait") await new Promise((r) => setTimeout(r, 400));
      else {
        const b = barrier("TCP", host, local, port);
        sock.write(b.text);
        await waitFor(() => closed || splitStream(data()).some(isAnswerTo(b.callId)), ANSWER_DEADLINE_MS);
        replies = () => Buffer.concat(splitStream(data()).filter((m) => !isAnswerTo(b.callId)(m)));
      }
      resolve({ replies: replies(), closed });
      sock.destroy();
    });
  });
}

describe("RFC 4475 torture messages against a running agent", () => {
  let agent: RunningAgent;
  before(async () => {
    agent = await startAgent();
  });
  after(async () => {
    await agent?.stop();
  });

  test("the archive holds the 50 files INDEX.md lists, each with an expectation", () => {
    const files = rfc4475Files();
    assert.equal(files.length, 50);
    assert.deepEqual(files, Object.keys(EXPECT).sort());
  });

  for (const file of Object.keys(EXPECT).sort()) {
    const exp = EXPECT[file]!;
    test(`UDP ${file}: ${exp.udp === "drop" ? "dropped" : exp.udp.join(" or ")} (${exp.why})`, async () => {
      const raw = loadRfc4475(file);
      const replies = await udpExchange(agent.port, raw, exp.udp !== "drop");
      if (exp.udp === "drop") {
        assert.equal(replies.length, 0, `expected no answer, got: ${replies[0]?.toString("latin1").split("\r\n")[0]}`);
        return;
      }
      assert.ok(replies.length >= 1, "expected an answer, got none");
      const statuses = new Set(replies.map(statusOf));
      // Retransmissions of the same final answer are fine (Timer G); one status only.
      assert.equal(statuses.size, 1, `answers differ: ${[...statuses].join(",")}`);
      const status = statusOf(replies[0]!);
      assert.ok(exp.udp.includes(status), `got ${status}, expected ${exp.udp.join(" or ")}: ${replies[0]!.toString("latin1").split("\r\n")[0]}`);
      const text = replies[0]!.toString("latin1");
      if (status === 420) assert.match(text, /^Unsupported:.*nothingSupportsThis/im, "420 lists the unsupported option tags");
      if (status === 401) assert.match(text, /^WWW-Authenticate: Digest /im);
      assert.doesNotMatch(text, /^(Server|User-Agent):.*\d+\.\d+/im, "no product version in Server/User-Agent");
    });
  }

  for (const file of Object.keys(EXPECT).sort()) {
    const exp = EXPECT[file]!;
    const tcp = exp.tcp ?? exp.udp;
    test(`TCP ${file}: ${typeof tcp === "string" ? tcp : tcp.join(" or ")}`, async () => {
      const raw = loadRfc4475(file);
      const { replies, closed } = await tcpExchange(agent.port, raw, typeof tcp === "string" ? tcp : "answer");
      if (tcp === "close") {
        assert.ok(closed, "the agent closes a connection whose framing is lost");
        return;
      }
      if (tcp === "drop" || tcp === "wait") {
        assert.equal(replies.length, 0, `expected no answer, got: ${replies.toString("latin1").split("\r\n")[0]}`);
        assert.equal(closed, false, "the connection stays open");
        return;
      }
      const status = statusOf(replies);
      assert.ok(tcp.includes(status), `got ${status}, expected ${tcp.join(" or ")}: ${replies.toString("latin1").split("\r\n")[0]}`);
    });
  }

  test("REGISTERs from the suite succeed once authenticated; contact and URI parameters kept as RFC 4475 §3.3.12-14 require", async () => {
    // cparam01/02 register watson, regescrt registers user: give them devices and answer the challenge.
    for (const user of ["watson", "user"]) {
      const r = await agent.cli(["device", "add", user, "--password", "torture-test-pw"]);
      assert.equal(r.code, 0, r.stderr);
    }
    const cases: Array<[string, RegExp]> = [
      ["cparam01.dat", /^Contact: <sip:\+19725552222@gw1\.example\.net>;expires=\d+/im],
      ["cparam02.dat", /^Contact: <sip:\+19725552222@gw1\.example\.net;unknownparam>;expires=\d+/im],
      ["regescrt.dat", /^Contact: <sip:user@example\.com\?Route=%3Csip:sip\.example\.com%3E>;expires=\d+/im],
    ];
    for (const [file, contact] of cases) {
      const raw = loadRfc4475(file);
      const [challenge] = await udpExchange(agent.port, raw, true);
      assert.ok(challenge, `${file}: challenged`);
      const www = /^WWW-Authenticate: (.*)$/im.exec(challenge.toString("latin1"))?.[1];
      assert.ok(www);
      const user = file === "regescrt.dat" ? "user" : "watson";
      const auth = computeAuthorization(www, { method: "REGISTER", uri: "sip:example.com", username: user, password: "torture-test-pw" });
      const text = raw.toString("latin1");
      // A new CSeq for the authenticated retry, as a client does (RFC 3261 §22.2).
      const withAuth = text.replace(/^(CSeq:\s*)(\d+)/im, (_m, p: string, n: string) => `${p}${Number(n) + 1}`).replace(/\r\n\r\n/, `\r\nAuthorization: ${auth}\r\n\r\n`);
      const [ok] = await udpExchange(agent.port, Buffer.from(withAuth, "latin1"), true);
      assert.ok(ok, `${file}: answered`);
      assert.equal(statusOf(ok), 200, `${file}: ${ok.toString("latin1").split("\r\n")[0]}`);
      assert.match(ok.toString("latin1"), contact, `${file}: binding as registered`);
    }
  });

  test("after the whole suite the agent still runs and answers", async () => {
    assert.equal(agent.proc.exitCode, null);
    const status = await agent.cli(["status", "--json"]);
    assert.equal(status.code, 0, status.stderr);
    const s = JSON.parse(status.stdout) as { transport: { parseErrors: number } };
    assert.ok(s.transport.parseErrors > 0, "parse errors were counted");
  });
});
