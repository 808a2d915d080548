// One address flooding the agent (issue 11): OPTIONS or INVITEs with fresh branches at a few
// thousand per second from 127.0.0.66/.67, while phones on 127.0.0.1 register and call each
// other. The flooder is throttled and banned by its per-source quota before it costs any
// transaction state, the agent's transaction table stays small, and the phones never notice.
// And the 407 challenge to an unauthenticated INVITE goes out once, statelessly: no timer G
// retransmissions toward the address the request claims.
import assert from "node:assert/strict";
import dgram from "node:dgram";
import { randomBytes } from "node:crypto";
import { after, before, test } from "node:test";
import { CallScene, answerAfter, registerPhones, simUser, startRoutingAgent, writeSiteFile } from "./callsim.ts";
import { sleep, tempDir, until, type RunningAgent } from "./harness.ts";

const TRUNK = "127.0.0.70";
const a = simUser("flooda", "4801");
const b = simUser("floodb", "4802");
let agent: RunningAgent;
const scene = new CallScene(() => agent);
const sockets: dgram.Socket[] = [];

interface Status {
  transactions: { server: number; client: number; throttled: number };
  guard: { banned: Array<{ source: string; reason: string }> };
}

async function status(): Promise<Status> {
  const r = await agent.cli(["status", "--json"]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as Status;
}

/** The default quota (guardSourceBurst, guardSourceRatePerS): what one source can get answered at most. */
const BURST = 400;
const RATE_PER_S = 100;
const mostAnswers = (durationMs: number): number => BURST + Math.ceil((RATE_PER_S * durationMs) / 1000);

const tok = (): string => randomBytes(6).toString("hex");

/** A raw UDP socket on a loopback address, counting the responses it gets by status line. */
async function rawSocket(address: string): Promise<{ socket: dgram.Socket; port: number; received: string[] }> {
  const socket = dgram.createSocket("udp4");
  sockets.push(socket);
  await new Promise<void>((resolve) => socket.bind(0, address, () => resolve()));
  const received: string[] = [];
  socket.on("message", (m) => received.push(m.toString("utf8")));
  return { socket, port: socket.address().port, received };
}

function request(method: string, from: string, port: number, branch = `z9hG4bK${tok()}`, callId = `${tok()}@flood`): string {
  return [
    `${method} sip:4801@127.0.0.1:${agent.port} SIP/2.0`,
    `Via: SIP/2.0/UDP ${from}:${port};branch=${branch}`,
    "Max-Forwards: 70",
    `From: <sip:flood@${from}>;tag=${tok()}`,
    `To: <sip:4801@127.0.0.1>`,
    `Call-ID: ${callId}`,
    `CSeq: 1 ${method}`,
    `Contact: <sip:flood@${from}:${port}>`,
    "Content-Length: 0",
    "",
    "",
  ].join("\r\n");
}

/** Sends `perTick` fresh requests every 10 ms for durationMs; resolves with how many went out. */
function flood(s: { socket: dgram.Socket; port: number }, from: string, method: string, durationMs: number, perTick = 40): Promise<number> {
  return new Promise((resolve) => {
    let sent = 0;
    const end = Date.now() + durationMs;
    const timer = setInterval(() => {
      if (Date.now() >= end) {
        clearInterval(timer);
        resolve(sent);
        return;
      }
      for (let i = 0; i < perTick; i++) {
        s.socket.send(request(method, from, s.port), agent.port, "127.0.0.1");
        sent++;
      }
    }, 10);
  });
}

before(async () => {
  const file = writeSiteFile(tempDir("ringedge-site-"), {
    // The trunk enters from 127.0.0.70 (never a flooder here: it carries every caller's calls).
    settings: { pickupCode: "*8", trunk: { host: "127.0.0.1", port: 5999, transport: "udp", allowedSources: [TRUNK] } },
    users: [a.user, b.user],
    devices: [...a.devices, ...b.devices],
    groups: [],
  });
  agent = await startRoutingAgent(file, { ringUnitMs: 1000, env: { RINGEDGE_LOG_LEVEL: "info" } });
});

after(async () => {
  for (const s of sockets) s.close();
  await scene.close();
});

/** Phones on 127.0.0.1 register and complete a call while the flood runs; the flood's end is awaited. */
async function phonesWorkDuring(flooding: Promise<number>): Promise<number> {
  const [pa] = await registerPhones(agent.port, a.devices, answerAfter(0));
  const [pb] = await registerPhones(agent.port, b.devices, answerAfter(0));
  scene.phones.push(pa!, pb!);
  assert.equal(await pa!.dial("4802"), 200, "a call from one phone to another is answered during the flood");
  // The called phone hangs up (Phone.hangup is the callee's BYE).
  assert.equal(await pb!.hangup(pa!.dialled.at(-1)!), 200);
  assert.equal(await pb!.dial("4801"), 200, "and the other way round");
  assert.equal(await pa!.hangup(pb!.dialled.at(-1)!), 200);
  const sent = await flooding;
  await pa!.unregister();
  await pb!.unregister();
  return sent;
}

test("an OPTIONS flood from one address is banned; phones on another address register and call", async (t) => {
  const s = await rawSocket("127.0.0.66");
  const flooding = flood(s, "127.0.0.66", "OPTIONS", 4000);
  const mid = await status();
  assert.ok(mid.transactions.server < 1000, `server transactions during the flood: ${mid.transactions.server}`);
  const sent = await phonesWorkDuring(flooding);
  const st = await status();
  assert.ok(st.guard.banned.some((x) => x.source === "127.0.0.66" && x.reason === "rate"), JSON.stringify(st.guard.banned));
  assert.ok(st.transactions.server < 1000, `server transactions after the flood: ${st.transactions.server}`);
  assert.ok(st.transactions.throttled >= 1, "the excess was dropped by the quota");
  // The flooder got answers within its quota at most, not one per request.
  const answered = s.received.filter((m) => m.startsWith("SIP/2.0 200")).length;
  t.diagnostic(`sent ${sent} OPTIONS, ${answered} answered; server transactions ${mid.transactions.server} during, ${st.transactions.server} after; throttled ${st.transactions.throttled}`);
  assert.ok(sent > 5000, `the test sent ${sent} OPTIONS`);
  assert.ok(answered <= mostAnswers(4000), `the flooder got ${answered} answers to ${sent} requests`);
  assert.match(agent.log(), /source banned for flooding.*source=127\.0\.0\.66/);
});

test("an INVITE flood with fresh branches from one address is banned; the phones keep working", async (t) => {
  const s = await rawSocket("127.0.0.67");
  const flooding = flood(s, "127.0.0.67", "INVITE", 3000);
  const sent = await phonesWorkDuring(flooding);
  const st = await status();
  assert.ok(st.guard.banned.some((x) => x.source === "127.0.0.67" && x.reason === "rate"), JSON.stringify(st.guard.banned));
  assert.ok(st.transactions.server < 1000, `server transactions after the flood: ${st.transactions.server}`);
  const challenges = s.received.filter((m) => m.startsWith("SIP/2.0 407")).length;
  t.diagnostic(`sent ${sent} INVITEs, ${challenges} challenged; server transactions after ${st.transactions.server}`);
  assert.ok(sent > 3000, `the test sent ${sent} INVITEs`);
  // One 407 per admitted INVITE at most: no retransmitted challenges.
  assert.ok(challenges >= 1 && challenges <= mostAnswers(3000), `the flooder got ${challenges} challenges to ${sent} INVITEs`);
});

test("the 407 to an unauthenticated INVITE is sent once; a retransmission is challenged again, the ACK dropped", async () => {
  const s = await rawSocket("127.0.0.68");
  const branch = `z9hG4bK${tok()}`;
  const invite = request("INVITE", "127.0.0.68", s.port, branch, `${tok()}@once`);
  s.socket.send(invite, agent.port, "127.0.0.1");
  await until(() => s.received.length >= 1, 5000, 20);
  // Over UDP a stateful 407 would come again after T1 (500 ms), 1 s, 2 s ... (timer G).
  // That nothing more arrives can only be seen over a window.
  await sleep(2500);
  assert.equal(s.received.length, 1, s.received.map((m) => m.split("\r\n")[0]).join(" | "));
  const challenge = s.received[0]!;
  assert.match(challenge, /^SIP\/2\.0 407 /);
  assert.match(challenge, /\r\nProxy-Authenticate: Digest /i);
  const toHeader = /\r\nTo: ([^\r\n]+)/i.exec(challenge)?.[1];
  assert.ok(toHeader !== undefined && /;tag=/.test(toHeader), "the 407 has a To tag");
  // The ACK for the 407 (RFC 3261 §17.1.1.3: same branch) matches nothing and is dropped.
  const ack = invite.replace(/^INVITE /, "ACK ").replace(/CSeq: 1 INVITE/, "CSeq: 1 ACK").replace(/\r\nTo: [^\r\n]+/, `\r\nTo: ${toHeader}`);
  s.socket.send(ack, agent.port, "127.0.0.1");
  // A retransmitted INVITE is challenged once more, statelessly.
  s.socket.send(invite, agent.port, "127.0.0.1");
  await until(() => s.received.length >= 2, 5000, 20);
  await sleep(2000);
  assert.equal(s.received.length, 2, s.received.map((m) => m.split("\r\n")[0]).join(" | "));
  assert.match(s.received[1]!, /^SIP\/2\.0 407 /);
  const st = await status();
  assert.ok(!st.guard.banned.some((x) => x.source === "127.0.0.68"), "a single INVITE is not a flood");
});

test("a flood of ACKs matching nothing (no transaction state at all) gets its source banned too", async () => {
  const s = await rawSocket("127.0.0.69");
  const sent = await flood(s, "127.0.0.69", "ACK", 1500);
  const st = await until(async () => {
    const x = await status();
    return x.guard.banned.some((b) => b.source === "127.0.0.69" && b.reason === "rate") ? x : undefined;
  }, 15_000, 200);
  assert.ok(sent > 1000, `the test sent ${sent} ACKs`);
  assert.ok(st.transactions.throttled >= 1);
  assert.equal(s.received.length, 0, "an ACK is never answered");
});

test("the site's trunk is not held to one source's quota: its requests at several times the rate are all served, never banned", async () => {
  const trunk = await rawSocket(TRUNK);
  const durationMs = 1500;
  const sent = await flood(trunk, TRUNK, "OPTIONS", durationMs, 20);
  await until(() => trunk.received.length >= sent * 0.9, 10_000, 50).catch(() => undefined);
  const answered = trunk.received.filter((m) => m.startsWith("SIP/2.0 200")).length;
  assert.ok(answered > 2 * mostAnswers(durationMs), `the trunk got ${answered} of ${sent} answered; one ordinary source would get at most ${mostAnswers(durationMs)}`);
  const st = await status();
  assert.ok(!st.guard.banned.some((b) => b.source === TRUNK), "the trunk is not banned");
});
