// Focused hot-path bench (issue 3 follow-up): the agent in-process, raw UDP peers in a child
// process (a trunk caller and ten phones, demo/sim.ts), so the agent's figures come straight
// from its objects and its event loop is not shared with the peers.
//
// Figures, all from one run (the machine is shared: compare the rows of one run, not runs):
// - send: CPU µs per datagram through SipTransport.send() toward a sink in the child, and the
//   synchronous cost of the call.
// - register: heap (after a forced GC) and RSS before and right after a burst of REGISTERs with
//   digest (their non-INVITE server transactions are still absorbing, Timer J = 32 s).
// - calls: N calls at R/s to a 10-phone simultaneous group (9 ring, 1 answers after 50 ms; the
//   caller holds 100 ms and hangs up): the agent's first-fork histogram, the same span measured
//   by the bench from the datagram handler's entry (comparable across versions of the agent),
//   caller-side INVITE-sent → first fork received (same clock in the child), CPU per call,
//   failed calls, heap after GC and live transactions right after the run.
//
// Run: node --expose-gc --import tsx bench/hotpath.bench.ts
// Knobs: BENCH_HP_REGISTRATIONS (2000), BENCH_HP_CALLS (1000), BENCH_HP_RATE (100),
// BENCH_HP_BURST_CALLS (2000), BENCH_HP_BURST_RATE (500), BENCH_HP_OUT (write results/hotpath.json when "1").
import { fork, type ChildProcess } from "node:child_process";
import dgram from "node:dgram";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import v8 from "node:v8";
import { Agent } from "../agent/agent.ts";
import { defaultSettings } from "../agent/config.ts";
import { createLogger } from "../agent/log.ts";
import { computeAuthorization } from "../agent/sip/digest.ts";
import type { ProxyCall } from "../agent/sip/proxy-types.ts";
import type { Flow } from "../agent/sip/types.ts";
import { SimPhone, SimTrunk, parse, type Msg } from "../demo/sim.ts";
import { machine, round, summarize, writeResult } from "./lib.ts";
import { tempDir } from "../test/tmpdir.ts";

const SELF = fileURLToPath(import.meta.url);
const TRUNK_IP = "127.0.0.60";
const GROUP = "700";
const env = (k: string, d: number): number => (process.env[k] !== undefined ? Number(process.env[k]) : d);

// --- peers (child process) ------------------------------------------------------------------------

type ToPeers =
  | { cmd: "setup"; agentPort: number; phones: Array<{ username: string; password: string }> }
  | { cmd: "calls"; n: number; rate: number; holdMs: number }
  | { cmd: "register"; n: number; window: number }
  | { cmd: "sink" }
  | { cmd: "exit" };

/** A phone that notes when the first INVITE of each call reaches it (child's clock). */
class TimedPhone extends SimPhone {
  constructor(username: string, password: string, answer: boolean, agent: { host: string; port: number }, private readonly firstInvite: Map<string, number>) {
    super(username, password, answer ? { kind: "answer", afterMs: 50 } : { kind: "ring" }, agent);
  }
  protected override onMessage(m: Msg): void {
    if (m.method === "INVITE") {
      const id = m.get("call-id") ?? "";
      if (!this.firstInvite.has(id)) this.firstInvite.set(id, performance.now());
    }
    super.onMessage(m);
  }
}

async function peers(): Promise<void> {
  const agent = { host: "127.0.0.1", port: 0 };
  const firstInvite = new Map<string, number>();
  let trunk: SimTrunk | undefined;
  const reply = (m: unknown): void => void process.send?.(m);
  process.on("message", async (raw) => {
    const msg = raw as ToPeers;
    if (msg.cmd === "setup") {
      agent.port = msg.agentPort;
      trunk = new SimTrunk(TRUNK_IP, agent);
      await trunk.open();
      const phones = msg.phones.map((p) => new TimedPhone(p.username, p.password, p.username === "answer-1", agent, firstInvite));
      for (const p of phones) await p.open();
      await Promise.all(phones.map((p) => p.register()));
      reply({ ok: true });
    } else if (msg.cmd === "calls") {
      const t = trunk!;
      const sent = new Map<string, number>();
      const done: Array<Promise<{ final: number }>> = [];
      const gap = 1000 / msg.rate;
      const start = performance.now();
      for (let i = 0; i < msg.n; i++) {
        const due = start + i * gap;
        const wait = due - performance.now();
        if (wait > 1) await new Promise((r) => setTimeout(r, wait));
        const at = performance.now();
        const c = t.call(GROUP, "bench", msg.holdMs, () => undefined);
        sent.set(c.callId, at);
        done.push(c.done);
      }
      const results = await Promise.all(done.map((d) => Promise.race([d, new Promise<{ final: number }>((r) => setTimeout(() => r({ final: 0 }), 10_000))])));
      await new Promise((r) => setTimeout(r, msg.holdMs + 300)); // BYEs out and answered
      const span: number[] = [];
      for (const [id, at] of sent) {
        const got = firstInvite.get(id);
        if (got !== undefined) span.push((got - at) * 1000);
      }
      firstInvite.clear();
      reply({ failed: results.filter((r) => r.final !== 200).length, statuses: [...new Set(results.map((r) => r.final))], wallMs: performance.now() - start, inviteToFirstForkUs: span });
    } else if (msg.cmd === "register") {
      reply(await registerBurst(agent, msg.n, msg.window));
    } else if (msg.cmd === "sink") {
      const s = dgram.createSocket("udp4");
      s.on("message", () => undefined);
      s.bind(0, "127.0.0.1", () => reply({ port: s.address().port }));
    } else {
      process.exit(0);
    }
  });
  reply({ up: true });
}

/** REGISTER → 401 → REGISTER with digest → 200 for reg-0001…, `window` in flight, one socket. */
async function registerBurst(agent: { host: string; port: number }, n: number, window: number): Promise<{ ok: number; failed: number; wallMs: number }> {
  const sock = dgram.createSocket("udp4");
  await new Promise<void>((r) => sock.bind(0, "127.0.0.1", () => r()));
  const port = sock.address().port;
  const uri = `sip:${agent.host}:${agent.port}`;
  const pending = new Map<string, (m: Msg) => void>();
  sock.on("message", (buf) => {
    const m = parse(buf.toString("latin1"));
    if (m === undefined) return;
    if (m.status === undefined) {
      // OPTIONS keep-alives toward the burst's contacts.
      return;
    }
    pending.get(m.get("call-id") ?? "")?.(m);
  });
  const build = (user: string, callId: string, cseq: number, auth?: string): Buffer =>
    Buffer.from(
      [
        `REGISTER ${uri} SIP/2.0`,
        `Via: SIP/2.0/UDP 127.0.0.1:${port};branch=z9hG4bK${callId}-${cseq};rport`,
        `From: <sip:${user}@${agent.host}>;tag=${callId}`,
        `To: <sip:${user}@${agent.host}>`,
        `Call-ID: ${callId}`,
        `CSeq: ${cseq} REGISTER`,
        `Contact: <sip:${user}@127.0.0.1:${port}>`,
        "Max-Forwards: 70",
        "Expires: 3600",
        ...(auth !== undefined ? [`Authorization: ${auth}`] : []),
        "Content-Length: 0",
        "",
        "",
      ].join("\r\n"),
    );
  const exchange = (user: string, callId: string, cseq: number, auth?: string): Promise<Msg | undefined> =>
    new Promise((resolve) => {
      const timer = setTimeout(() => {
        pending.delete(callId);
        resolve(undefined);
      }, 5000);
      pending.set(callId, (m) => {
        clearTimeout(timer);
        pending.delete(callId);
        resolve(m);
      });
      sock.send(build(user, callId, cseq, auth), agent.port, agent.host);
    });
  let ok = 0;
  let failed = 0;
  let next = 1;
  const start = performance.now();
  const worker = async (): Promise<void> => {
    while (next <= n) {
      const i = next++;
      const user = `reg-${String(i).padStart(4, "0")}`;
      const callId = `hp${i}x${Math.random().toString(36).slice(2, 8)}`;
      const challenge = await exchange(user, callId, 1);
      const www = challenge?.get("www-authenticate");
      if (challenge?.status !== 401 || www === undefined) {
        failed++;
        continue;
      }
      const auth = computeAuthorization(www, { method: "REGISTER", uri, username: user, password: `pw-${user}` });
      const res = typeof auth === "string" ? await exchange(user, callId, 2, auth) : undefined;
      if (res?.status === 200) ok++;
      else failed++;
    }
  };
  await Promise.all(Array.from({ length: window }, worker));
  const wallMs = performance.now() - start;
  sock.close();
  return { ok, failed, wallMs };
}

// --- main (the agent) ------------------------------------------------------------------------------

function request<T>(child: ChildProcess, msg: ToPeers): Promise<T> {
  return new Promise((resolve) => {
    child.once("message", (m) => resolve(m as T));
    child.send(msg);
  });
}

const MB = (b: number): number => round(b / 1048576, 1);

function memory(): { heapUsedMB: number; rssMB: number } {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc !== undefined) {
    gc();
    gc();
  }
  const m = process.memoryUsage();
  return { heapUsedMB: MB(m.heapUsed), rssMB: MB(m.rss) };
}

function siteFile(phones: Array<{ username: string; password: string }>, registrations: number, trunkPort: number): unknown {
  const ops = phones.map((p, i) => ({ id: `op-${i + 1}`, username: p.username, password: p.password }));
  const regs = Array.from({ length: registrations }, (_, i) => {
    const u = `reg-${String(i + 1).padStart(4, "0")}`;
    return { id: `u-${u}`, username: u, password: `pw-${u}` };
  });
  const all = [...ops, ...regs];
  return {
    schema: "ringedge.site/1",
    version: 1,
    settings: { pickupCode: "*8", trunk: { host: TRUNK_IP, port: trunkPort, transport: "udp", allowedSources: [TRUNK_IP] } },
    users: all.map((u, i) => ({ id: u.id, extension: String(2001 + i), name: u.id, availability: "available", callLimit: 0 })),
    devices: all.map((u) => ({ id: `desk-${u.id}`, owner: u.id, kind: "physical", username: u.username, password: u.password })),
    groups: [{ id: "hp-sim", number: GROUP, name: "Hot path simultaneous", strategy: "simultaneous", members: ops.map((o) => o.id), ringCount: 6, checkAvailability: false, noAnswer: { kind: "hangup", status: 480 } }],
  };
}

async function main(): Promise<void> {
  const registrations = env("BENCH_HP_REGISTRATIONS", 2000);
  const latencyCalls = env("BENCH_HP_CALLS", 1000);
  const latencyRate = env("BENCH_HP_RATE", 100);
  const burstCalls = env("BENCH_HP_BURST_CALLS", 2000);
  const burstRate = env("BENCH_HP_BURST_RATE", 500);
  if ((globalThis as { gc?: () => void }).gc === undefined) console.error("note: run with --expose-gc for heap figures after a forced GC");

  const dir = tempDir("ringedge-hotpath-");
  const child = fork(SELF, ["--peers"], { execArgv: ["--import", "tsx"], stdio: ["ignore", "inherit", "inherit", "ipc"] });
  await new Promise((r) => child.once("message", r));
  const phones = Array.from({ length: 10 }, (_, i) => {
    const username = i === 9 ? "answer-1" : `ring-${i + 1}`;
    return { username, password: `hp-${username}-pw` };
  });
  // The trunk's port is the caller's; only its source address matters for admission.
  fs.writeFileSync(path.join(dir, "site.json"), JSON.stringify(siteFile(phones, registrations, 5099)));
  const settings = {
    ...defaultSettings(),
    dataDir: path.join(dir, "data"),
    sipListen: ["127.0.0.1:0"],
    sipTransports: ["udp" as const],
    httpListen: "127.0.0.1:0",
    httpsListen: "",
    siteFile: path.join(dir, "site.json"),
    guardAllowlist: ["127.0.0.1", TRUNK_IP],
    keepaliveIntervalS: 600,
    authAlgorithms: ["MD5" as const],
  };
  const agent = new Agent(settings, createLogger("warn"));
  await agent.start();
  const agentPort = agent.transport.addresses()[0]!.port;
  const result: Record<string, unknown> = { bench: "hotpath", ...machine() };
  try {
    // --- send -----------------------------------------------------------------------------
    const sink = await request<{ port: number }>(child, { cmd: "sink" });
    const flow: Flow = { transport: "udp", remoteAddress: "127.0.0.1", remotePort: sink.port, localAddress: "127.0.0.1", localPort: agentPort };
    const datagram = Buffer.alloc(900, 65);
    const cpuPerSend: number[] = [];
    const syncPerSend: number[] = [];
    for (let round = 0; round < 7; round++) {
      const c0 = process.cpuUsage();
      for (let t = 0; t < 500; t++) {
        const t0 = performance.now();
        for (let i = 0; i < 10; i++) agent.transport.send(flow, datagram);
        syncPerSend.push(((performance.now() - t0) * 1000) / 10);
        await new Promise((r) => setImmediate(r));
      }
      const c = process.cpuUsage(c0);
      cpuPerSend.push((c.user + c.system) / 5000);
    }
    result.send = { cpuUsPerSend: round(summarize(cpuPerSend).median, 2), syncUsPerSendMedian: round(summarize(syncPerSend).median, 2), syncUsPerSendP99: round(summarize(syncPerSend).p99, 2) };
    console.log("send", result.send);

    // --- register burst ---------------------------------------------------------------------
    await request(child, { cmd: "setup", agentPort, phones });
    const before = memory();
    const reg = await request<{ ok: number; failed: number; wallMs: number }>(child, { cmd: "register", n: registrations, window: 100 });
    const afterReg = memory();
    result.register = { ...reg, wallMs: round(reg.wallMs, 0), before, after: afterReg, heapDeltaMB: round(afterReg.heapUsedMB - before.heapUsedMB, 1), transactions: agent.transactions.counts() };
    console.log("register", result.register);

    // --- calls ---------------------------------------------------------------------------------
    // The bench's own span, the same for every version of the agent: from the entry of the
    // transport's datagram handler to the first fork of a call started inside it.
    const transport = agent.transport as unknown as { onDatagram(...args: unknown[]): void };
    const onDatagram = transport.onDatagram.bind(agent.transport);
    let started: ProxyCall | undefined;
    const handlerSpan: number[] = [];
    transport.onDatagram = (...args) => {
      started = undefined;
      const t0 = performance.now();
      onDatagram(...args);
      const pc = started as ProxyCall | undefined;
      if (pc?.firstForkAt !== undefined) handlerSpan.push((pc.firstForkAt - t0) * 1000);
    };
    const proxy = agent.proxy;
    const startCall = proxy.startCall.bind(proxy);
    proxy.startCall = (...args) => {
      const pc = startCall(...args);
      started = pc;
      return pc;
    };
    const histogram = (agent.engine as unknown as { histogram: { reset(): void } }).histogram;

    const runCalls = async (label: string, n: number, rate: number): Promise<Record<string, unknown>> => {
      histogram.reset();
      handlerSpan.length = 0;
      const c0 = process.cpuUsage();
      const r = await request<{ failed: number; statuses: number[]; wallMs: number; inviteToFirstForkUs: number[] }>(child, { cmd: "calls", n, rate, holdMs: 100 });
      const cpu = process.cpuUsage(c0);
      const counts = agent.transactions.counts();
      const mem = memory();
      const lat = agent.engine.stats().latency;
      const own = summarize(handlerSpan);
      const peer = summarize(r.inviteToFirstForkUs);
      const out = {
        label,
        calls: n,
        rate,
        failed: r.failed,
        statuses: r.statuses,
        achievedRate: round(n / (r.wallMs / 1000), 1),
        agentHistogram: { p50Us: lat.p50Us, p99Us: lat.p99Us, maxUs: lat.maxUs, count: lat.count },
        handlerToFirstFork: { p50Us: round(own.median, 1), p99Us: round(own.p99, 1), n: own.n },
        callerInviteToFirstFork: { p50Us: round(peer.median, 1), p99Us: round(peer.p99, 1), n: peer.n },
        cpuUsPerCall: round((cpu.user + cpu.system) / n, 0),
        transactionsAfter: counts,
        memoryAfter: mem,
      };
      console.log(label, JSON.stringify(out));
      return out;
    };
    await runCalls("warmup", 200, 50);
    result.calls = [await runCalls(`sim-10@${latencyRate}`, latencyCalls, latencyRate), await runCalls(`sim-10@${burstRate}`, burstCalls, burstRate)];
    // BENCH_HP_SNAPSHOT=<file>: a heap snapshot with the last run's transactions still lingering.
    if (process.env.BENCH_HP_SNAPSHOT) console.log("heap snapshot", v8.writeHeapSnapshot(process.env.BENCH_HP_SNAPSHOT));
  } finally {
    child.send({ cmd: "exit" });
    await agent.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  if (process.env.BENCH_HP_OUT === "1") console.log("wrote", writeResult("hotpath", result));
  process.exit(0);
}

if (process.argv.includes("--peers")) void peers();
else await main();
