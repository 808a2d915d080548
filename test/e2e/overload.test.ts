// Overload control end to end (issue 11, agent/sip/overload.ts). Two agents, each with a small
// capacity configured so overload is cheap to reach on loopback:
// 1. At most 5 calls being set up: SIPp, entering as the trunk (exempt from one source's quota),
//    offers calls at about twice what the phone can take (each rings 600 ms before the answer).
//    Every call is either completed (answered, ACKed, hung up) or refused with 503 and a
//    Retry-After; none fails, and the admitted ones are about the agent's capacity.
// 2. At most 30 live server transactions, held there by OPTIONS that linger 32 s (Timer J,
//    RFC 3261 §17.2.2): while the trunk's and a phone's new calls get 503, phones on another
//    address register (a refresh and a first registration), and calls admitted before the
//    overload are answered (ACK), hung up (BYE) and cancelled (CANCEL).
import assert from "node:assert/strict";
import dgram from "node:dgram";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { after, test } from "node:test";
import { CallScene, Phone, RING, TRUNK_CALLER_IP, answerAfter, parseSimMessage, parseSippTrace, simUser, startRoutingAgent, writeSiteFile, type SimMessage } from "./callsim.ts";
import { freePort, runSipp, tempDir, until, type RunningAgent } from "./harness.ts";

const a = simUser("ovla", "4701");
const b = simUser("ovlb", "4702");
const c = simUser("ovlc", "4703");
const e = simUser("ovle", "4705");
const f = simUser("ovlf", "4706");
const scenes: CallScene[] = [];
const sockets: dgram.Socket[] = [];
const tok = (): string => randomBytes(6).toString("hex");

interface OverloadStatus {
  active: boolean;
  cause: string | null;
  shed: number;
  episodes: number;
  shedByMethod: Record<string, number>;
  signals: { callsSetup: number; serverTransactions: number; queueDelayMs?: number };
}

async function overloadOf(agent: RunningAgent): Promise<OverloadStatus> {
  const r = await agent.cli(["status", "--json"]);
  assert.equal(r.code, 0, r.stderr);
  return (JSON.parse(r.stdout) as { overload: OverloadStatus }).overload;
}

async function startSite(env: Record<string, string>): Promise<{ agent: RunningAgent; scene: CallScene }> {
  const file = writeSiteFile(tempDir("ringedge-site-"), {
    settings: { pickupCode: "*8", trunk: { host: "127.0.0.1", port: 5999, transport: "udp", allowedSources: [TRUNK_CALLER_IP] } },
    users: [a.user, b.user, c.user, e.user, f.user],
    devices: [...a.devices, ...b.devices, ...c.devices, ...e.devices, ...f.devices],
    groups: [],
  });
  let agent: RunningAgent | undefined;
  const scene = new CallScene(() => agent);
  scenes.push(scene);
  agent = await startRoutingAgent(file, { ringUnitMs: 10_000, env: { RINGEDGE_LOG_LEVEL: "info", ...env } });
  return { agent, scene };
}

after(async () => {
  for (const s of sockets) s.close();
  for (const s of scenes) await s.close();
});

/** The INVITE's final response per call, from a SIPp message trace (retransmitted finals counted once). */
function finalsByCall(trace: ReturnType<typeof parseSippTrace>): Map<string, SimMessage> {
  const out = new Map<string, SimMessage>();
  for (const en of trace) {
    const m = en.msg;
    if (en.dir !== "received" || m.status === undefined || m.status < 200 || !/ INVITE$/.test(m.header("cseq") ?? "")) continue;
    const id = m.header("call-id") ?? "";
    if (!out.has(id)) out.set(id, m);
  }
  return out;
}

test("offered twice its capacity in calls, the agent completes what it admits and refuses the rest with 503 + Retry-After", async (t) => {
  const maxCallsSetup = 5;
  const answerMs = 600;
  const { agent, scene } = await startSite({ RINGEDGE_OVERLOAD_MAX_CALLS_SETUP: String(maxCallsSetup) });
  const [pe] = await scene.register(e.devices, answerAfter(answerMs));
  // Capacity: 5 calls in setup, each for ~600 ms: about 8 calls/s. Offered: 16/s for 3 s.
  const rate = 16;
  const calls = 48;
  const nominal = Math.floor((maxCallsSetup * ((calls / rate) * 1000)) / answerMs);
  const traceFile = path.join(tempDir("ringedge-overload-trace-"), "uac.msg");
  const port = await freePort();
  const run = runSipp(
    ["-sf", "overload-caller.xml", "-i", TRUNK_CALLER_IP, "-p", String(port), "-s", e.user.extension, "-r", String(rate), "-m", String(calls), "-d", "100", "-nd", "-timeout", "40", "-timeout_error", "-trace_msg", "-message_file", traceFile, `127.0.0.1:${agent.port}`],
    45_000,
  );
  scene.peers.push({ port, traceFile, run, trace: () => parseSippTrace(traceFile), received: () => [], sent: () => [] });
  const r = await run;
  const trace = parseSippTrace(traceFile);
  const finals = finalsByCall(trace);
  const answered = [...finals.values()].filter((m) => m.status === 200).length;
  const refused = [...finals.values()].filter((m) => m.status === 503);
  const byeOk = new Set(trace.filter((x) => x.dir === "received" && x.msg.status === 200 && /BYE$/.test(x.msg.header("cseq") ?? "")).map((x) => x.msg.header("call-id"))).size;
  const st = await overloadOf(agent);
  t.diagnostic(`offered ${calls} calls at ${rate}/s (nominal capacity ${nominal} in that time): ${answered} answered and hung up, ${refused.length} refused with 503; agent shed ${st.shed} in ${st.episodes} episodes`);
  assert.equal(r.code, 0, `SIPp: every call completes or gets 503 with Retry-After\n${r.stdout.slice(-2000)}\n${r.stderr.slice(-800)}`);
  assert.equal(finals.size, calls, "every INVITE got a final response");
  assert.equal(answered + refused.length, calls, `finals other than 200/503: ${[...finals.values()].map((m) => m.status).join(",")}`);
  // No call was both refused and answered: a retransmitted INVITE of a refused call gets the
  // same 503, never a late admission the caller would not ACK.
  const mixed = [...finals.keys()].filter((id) => new Set(trace.filter((x) => x.dir === "received" && x.msg.header("call-id") === id && (x.msg.status ?? 0) >= 200 && / INVITE$/.test(x.msg.header("cseq") ?? "")).map((x) => x.msg.status)).size > 1);
  assert.deepEqual(mixed, [], "calls with both a 503 and a 200");
  assert.equal(byeOk, answered, "every admitted call was hung up cleanly");
  assert.equal(pe!.byes.length, answered, "the phone saw a BYE for every call it answered");
  assert.ok(refused.length >= 1, "past capacity, calls are refused");
  for (const m of refused) {
    const ra = Number(m.header("retry-after"));
    // overloadRetryAfterS 5 plus up to half of it at random.
    assert.ok(Number.isInteger(ra) && ra >= 5 && ra <= 7, `Retry-After ${m.header("retry-after")}`);
    assert.match(m.header("to") ?? "", /;tag=/, "the 503 carries a To tag (§8.2.6.2)");
  }
  assert.ok(answered >= Math.floor(nominal * 0.6), `${answered} calls completed; capacity over the offer was about ${nominal}`);
  assert.ok(st.shed >= refused.length && (st.shedByMethod.INVITE ?? 0) >= refused.length, JSON.stringify(st));
  assert.ok(st.episodes >= 1);
  assert.equal(st.signals.callsSetup, 0, "nothing left ringing");
  // The SIP socket's kernel receive queue is read from /proc/net/udp (the sampled signal).
  // The queue-delay probes run through the agent's own SIP socket (sip/queue-probe.ts).
  assert.ok(typeof st.signals.queueDelayMs === "number" && st.signals.queueDelayMs >= 0 && st.signals.queueDelayMs < 5000, JSON.stringify(st.signals));
  assert.match(agent.log(), /overloaded: refusing new calls.*cause=callsSetup/);
});

/** An INVITE sent from a registered phone's own socket, with a CANCEL for it (RFC 3261 §9.1). */
function rawCall(p: Phone, agentPort: number, number: string): { callId: string; responses: SimMessage[]; cancel(): void; ack(to: string): void } {
  const branch = `z9hG4bK${tok()}`;
  const callId = `ovl-${tok()}@sim`;
  const fromTag = tok();
  const ruri = `sip:${number}@127.0.0.1:${agentPort}`;
  const head = (method: string): string[] => [
    `${method} ${ruri} SIP/2.0`,
    `Via: SIP/2.0/UDP 127.0.0.1:${p.port};branch=${branch};rport`,
    "Max-Forwards: 70",
    `From: <sip:${p.username}@127.0.0.1>;tag=${fromTag}`,
    `To: <${ruri}>`,
    `Call-ID: ${callId}`,
    `CSeq: 1 ${method}`,
  ];
  const responses: SimMessage[] = [];
  p.socket.on("message", (buf) => {
    const m = parseSimMessage(buf.toString("utf8"));
    if (m?.status !== undefined && m.header("call-id") === callId) responses.push(m);
  });
  const send = (lines: string[]): void => void p.socket.send([...lines, "Content-Length: 0", "", ""].join("\r\n"), agentPort, "127.0.0.1");
  send([...head("INVITE"), `Contact: <sip:${p.username}@127.0.0.1:${p.port}>`]);
  return {
    callId,
    responses,
    cancel: () => send(head("CANCEL")),
    ack: (to) => send([...head("ACK").filter((l) => !l.startsWith("To:")), `To: ${to}`]),
  };
}

test("during overload phones register and a registered phone's ACK, BYE and CANCEL work; new calls get 503", async (t) => {
  const maxServerTransactions = 30;
  const { agent, scene } = await startSite({ RINGEDGE_OVERLOAD_MAX_SERVER_TRANSACTIONS: String(maxServerTransactions) });
  const [pa, pb, pc] = await scene.register([...a.devices, ...b.devices, ...c.devices], RING);
  // Two calls admitted before the overload: A → B (to be answered), A → C (to be cancelled).
  const dialled = pa!.dial(b.user.extension, { timeoutMs: 60_000 });
  const x = await pb!.waitInvites(1);
  const y = rawCall(pa!, agent.port, c.user.extension);
  await pc!.waitInvites(1);
  assert.equal((await overloadOf(agent)).active, false);

  // Fill the server-transaction table to its configured limit from the trunk's address: each
  // OPTIONS is answered and its transaction lingers 32 s (Timer J).
  const trunk = dgram.createSocket("udp4");
  sockets.push(trunk);
  await new Promise<void>((resolve) => trunk.bind(0, TRUNK_CALLER_IP, () => resolve()));
  const tport = trunk.address().port;
  for (let i = 0; i < maxServerTransactions; i++) {
    const text = [`OPTIONS sip:127.0.0.1:${agent.port} SIP/2.0`, `Via: SIP/2.0/UDP ${TRUNK_CALLER_IP}:${tport};branch=z9hG4bK${tok()}`, "Max-Forwards: 70", `From: <sip:trunk@${TRUNK_CALLER_IP}>;tag=${tok()}`, `To: <sip:127.0.0.1>`, `Call-ID: ${tok()}@trunk`, "CSeq: 1 OPTIONS", "Content-Length: 0", "", ""].join("\r\n");
    trunk.send(text, agent.port, "127.0.0.1");
  }
  const st0 = await until(async () => {
    const s = await overloadOf(agent);
    return s.active ? s : undefined;
  }, 10_000, 50);
  assert.equal(st0.cause, "serverTransactions");
  const shedBefore = st0.shed;

  // New work is refused: a call from the trunk (SIPp: 503 with Retry-After, ACKed), a call from
  // the registered phone, a REGISTER from a phone that holds no binding.
  const probe = await runSipp(["-sf", "drain-uac-refused.xml", "-s", b.user.extension, "-i", TRUNK_CALLER_IP, "-p", String(await freePort()), "-m", "1", "-nd", "-timeout", "20", "-timeout_error", `127.0.0.1:${agent.port}`], 25_000);
  assert.equal(probe.code, 0, `the trunk's new call gets 503 + Retry-After: ${probe.stdout.slice(-800)} ${probe.stderr.slice(-400)}`);
  assert.equal(await pa!.dial(c.user.extension), 503, "a new call from a registered phone is new work, refused");

  // REGISTERs pass: the registered phone's refresh and a phone registering for the first time
  // (challenge, then credentials).
  await pa!.sendRegister(3600);
  const [pf] = await scene.register(f.devices, RING);
  assert.ok(pf !== undefined);

  // ACK: B answers the call admitted before; A's ACK for the 2xx crosses the agent to B.
  pb!.answerNow(x.callId);
  assert.equal(await dialled, 200);
  await until(() => pb!.acks.some((k) => k.callId === x.callId), 5000, 10);
  // BYE: A hangs up.
  assert.equal(await pa!.hangupPlaced(x.callId), 200);
  assert.ok(pb!.byes.some((k) => k.callId === x.callId), "the BYE reached B");
  // CANCEL: A gives up the call to C; 200 to the CANCEL, 487 to the INVITE (§9.2), C sees it.
  y.cancel();
  await until(() => y.responses.some((m) => m.status === 487), 5000, 10);
  assert.ok(y.responses.some((m) => m.status === 200 && /CANCEL$/.test(m.header("cseq") ?? "")), y.responses.map((m) => m.firstLine).join(" | "));
  y.ack(y.responses.find((m) => m.status === 487)!.header("to") ?? "");
  await pc!.waitCancel(y.callId);

  const st = await overloadOf(agent);
  t.diagnostic(`shed during the test: ${st.shed - shedBefore} (${JSON.stringify(st.shedByMethod)}); server transactions ${st.signals.serverTransactions}`);
  assert.equal(st.active, true, "all of this happened while overloaded");
  assert.ok(st.shed - shedBefore >= 2, JSON.stringify(st));
  assert.ok((st.shedByMethod.INVITE ?? 0) >= 2 && st.shedByMethod.REGISTER === undefined, JSON.stringify(st.shedByMethod));
  assert.match(agent.log(), /overloaded: refusing new calls.*cause=serverTransactions/);
});
