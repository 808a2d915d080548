// Call benchmark (issue 3 "Latency budget"): SIPp callers through the real agent to SIPp phones.
// Run: node --import tsx bench/calls.bench.ts   (writes bench/results/calls.json)
//
// Every run gets a fresh agent (child process, bin/ringedge.js, log level warn) with a site file
// written here: N operators with one desk phone each, a simultaneous group (700) and a
// sequential group (701), every operator without a call limit, and a trunk whose only allowed
// source is the caller's address (127.0.0.60), so calls enter as trunk calls with no digest.
// - Phones: ONE SIPp process registers the N users from a CSV (bench/sipp/phone-register.xml)
//   and answers the forks with its out-of-call scenario (-oocsf bench/sipp/phone-ring.xml):
//   180 at once; the user "answer-1" then answers 200; the others ring until the proxy's
//   CANCEL. The answering member is placed where it rings last (10th of the simultaneous
//   group, so every fork of a call is out before the answer; 1st of the sequential group).
// - Caller: SIPp (bench/sipp/caller.xml) at a fixed rate; rtd "ring" = INVITE → first 180.
// - Figures per run: the agent's own INVITE → first-fork histogram (status .routing.latency);
//   the same latency from packet timestamps on loopback (tshark on lo, capture filter: the
//   agent's UDP port and a payload starting "INVI", so only INVITEs are kept; each INVITE in
//   is matched with the first forked INVITE out by Call-ID); caller-side time to 180; calls
//   and failures; agent CPU per call (utime+stime delta from /proc/<pid>/stat); RSS.
// Latency runs: 10 and 50 phones registered × simultaneous and sequential, at 100 calls/s.
// Throughput runs: the 10-phone simultaneous group at 500 calls/s (and any BENCH_CALLS_RATES),
// no packet capture (it would compete for the two CPUs).
// Media runs (issue 12: "the first-fork latency with and without 50 streams"): the headline run
// twice more on a site that also has a queue group (702, wait-for-operator, its only member
// online but away, which the queue skips): "q0" with nobody queued, "q50" with 50 callers queued first
// (bench/sipp/caller-queued.xml), each hearing hold music from the agent's media worker while
// the ring-all calls run. A UDP socket of the bench receives the 50 streams and times every
// packet: pacing jitter (|gap − 20 ms|) p50/p99 per packet, as bench/media.bench.ts does.
// The memory run (issue 11: "RSS ≤ 100 MB with 2,000 registered phones and 200 calls up"): a
// site of 2,000 operators with one phone each, all registered (the first 10 ring as above, the
// rest register from one SIPp process), then 200 calls placed at 40/s into the simultaneous
// group and held up together for 70 s. RSS is read once they are all up, then again after the
// agent's idle collections (agent/appliance/idle-gc.ts), which a site with calls up and little
// signalling gets, with every call still up.
//
// Knobs (env): BENCH_CALLS_SECONDS (10), BENCH_CALLS_LATENCY_RATE (100), BENCH_CALLS_RATES
// ("500"), BENCH_CALLS_HOLD_MS (100), BENCH_CALLS_ONLY (run labels, comma-separated),
// BENCH_CPU_PROF=1 (agent runs with node --cpu-prof; profiles kept under the temp dir),
// BENCH_KEEP=1 (keep the temp dir: site file, SIPp stat/rtt files, pcaps, agent logs);
// BENCH_SMAPS=<file>, BENCH_HEAP_SNAPSHOT=<dir> (the memory run: the agent's smaps and a V8 heap
// snapshot at its last reading).
import { execFile, spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { callAgent, socketAnswers } from "../agent/console/control.ts";
import { freePort, ROOT, sleep } from "../test/e2e/harness.ts";
import dgram from "node:dgram";
import { parseRtp } from "../agent/media/rtp.ts";
import { benchWorkDir, fmt, machine, round, summarize, table, writeResult } from "./lib.ts";
import { CALL_LOG_FILE } from "../agent/store/call-log.ts";
import { MAX_CALL_LOG, type CallRecord } from "../agent/store/schema.ts";
import { CALLER_IP, benchAgentEnv, packetLatency, phonesFor, procSample, runCaller, start, startCapture, startPhones, waitFor, type CallerRun, type Capture, type Child, type PacketLatency, type Phone } from "./sipp-harness.ts";

const SECONDS = envNum("BENCH_CALLS_SECONDS", 10);
const LATENCY_RATE = envNum("BENCH_CALLS_LATENCY_RATE", 100);
const THROUGHPUT_RATES = (process.env.BENCH_CALLS_RATES ?? "500").split(",").map(Number).filter((n) => Number.isFinite(n) && n > 0);
const HOLD_MS = envNum("BENCH_CALLS_HOLD_MS", 100);
const ONLY = process.env.BENCH_CALLS_ONLY?.split(",").filter((s) => s !== "");
const CPU_PROF = process.env.BENCH_CPU_PROF === "1";
/** Calls placed before each measured run (and counted in the agent's own histogram). */
const WARMUP_CALLS = 100;
const WARMUP_RATE = 50;
/** The targets for the 2-core appliance. */
const TARGETS = { firstForkP50UsMax: 200, firstForkP99UsMax: 2000, atRate: 100, phones: 10, sustainedRate: 500, failedMax: 0 } as const;
/** The example systemd unit's CPUSchedulingPriority (firmware-hooks/ringedge.service). */
const REALTIME_PRIORITY = 10;
const execFileP = promisify(execFile);
const GROUP_NUMBER = { simultaneous: "700", sequential: "701" } as const;
/** The queue group of the media runs: callers wait there hearing music on hold. */
const QUEUE_NUMBER = "702";
const HOLD_STREAMS = 50;
/** The memory run: phones registered, calls held up together, the rate they are placed at, how long each is held. */
const MEMORY_PHONES = 2000;
const HELD_CALLS = 200;
const HELD_RATE = 40;
const HELD_S = 70;
const MEMORY_TARGET_MB = 100;
/** The memory run's call log at start: a full one (the log keeps 5,000 calls), as on a site that has been taking calls for a day. */
const PRELOADED_CALLS = envNum("BENCH_CALL_LOG", MAX_CALL_LOG);
const HEAP_SNAPSHOT_DIR = process.env.BENCH_HEAP_SNAPSHOT ? path.resolve(process.env.BENCH_HEAP_SNAPSHOT) : undefined;
/** The agent as shipped (bin/ringedge runs dist/ringedge.mjs; make bench builds it first). */
const BIN = path.join(ROOT, "bin", "ringedge");

function envNum(name: string, dflt: number): number {
  const v = Number(process.env[name]);
  return Number.isFinite(v) && v > 0 ? v : dflt;
}

type Strategy = "simultaneous" | "sequential";

interface RunSpec {
  label: string;
  phones: number;
  strategy: Strategy;
  rate: number;
  capture: boolean;
  /**
   * Run the agent under SCHED_FIFO at this priority (chrt, every thread), as the example systemd
   * unit does (CPUSchedulingPolicy=fifo): the tuned half of the headline pair.
   */
  realtimePriority?: number;
  /** The site has the queue group, and this many callers wait in it (music on hold) during the run. */
  holdStreams?: number;
  /**
   * The memory run: this many answered calls placed at `rate` and held up together for `holdS`
   * seconds (long enough for the agent's idle collections), the agent's memory read with them up.
   */
  held?: { calls: number; holdS: number };
}

// --- site file -----------------------------------------------------------------------------------

function siteFile(phones: Phone[], callerPort: number, queue: boolean): unknown {
  // The groups take the first 100 operators (a group holds at most 1,000 members); the memory
  // run's other phones only register.
  const members = phones.slice(0, 100).map((p) => p.user);
  const answerer = phones.find((p) => p.username === "answer-1")!.user;
  // The queue's only operator is online but away, and the queue skips away operators
  // (checkAvailability): a caller finds nobody to ring and waits at once. (With every member
  // offline the queue would be skipped for its `then`.) The ring-all groups ring away members.
  const queueGroup = { id: "bench-queue", number: QUEUE_NUMBER, name: "Bench queue", strategy: "simultaneous", members: [members[0]], ringCount: 6, checkAvailability: true, noAnswer: { kind: "wait-for-operator", maxWaitS: 600, then: { kind: "hangup", status: 480 } } };
  const site: { users: unknown[]; groups: unknown[]; [k: string]: unknown } = {
    schema: "ringedge.site/1",
    version: 1,
    settings: { pickupCode: "*8", trunk: { host: CALLER_IP, port: callerPort, transport: "udp", allowedSources: [CALLER_IP] } },
    users: phones.map((p, i) => ({ id: p.user, extension: String(2001 + i), name: `Operator ${i + 1}`, availability: "available", callLimit: 0 })),
    devices: phones.map((p) => ({ id: `desk-${p.user}`, owner: p.user, kind: "physical", username: p.username, password: p.password })),
    groups: [
      { id: "bench-sim", number: GROUP_NUMBER.simultaneous, name: "Bench simultaneous", strategy: "simultaneous", members, ringCount: 6, checkAvailability: false, noAnswer: { kind: "hangup", status: 480 } },
      // Sequential: the answering member first, so every call is one fork that is answered.
      { id: "bench-seq", number: GROUP_NUMBER.sequential, name: "Bench sequential", strategy: "sequential", members: [answerer, ...members.filter((m) => m !== answerer)], ringCount: 6, checkAvailability: false, noAnswer: { kind: "hangup", status: 480 } },
    ],
  };
  if (queue) {
    (site.users[0] as { availability: string }).availability = "away";
    site.groups.push(queueGroup);
  }
  return site;
}

/**
 * A call log of `n` calls through the simultaneous group as the agent records them: the first 10
 * operators offered (one answers), the others skipped for the ring cap, each with its why.
 */
function preloadCallLog(dataDir: string, phones: Phone[], n: number): void {
  const members = phones.slice(0, 100).map((p) => p.user);
  const now = Date.now() - n * 1000;
  const lines: string[] = [];
  for (let c = 0; c < n; c++) {
    const at = now + c * 1000;
    const offered = members.slice(0, 10);
    const items = members.map((m, k) => (k < 10 ? { userId: m, devices: [`desk-${m}`] } : { userId: m, reason: "cap" }));
    const rec: CallRecord = { id: `preload-${c}-${at.toString(36)}@${CALLER_IP}`, at, caller: `sip:+4930${String(1_000_000 + c)}@${CALLER_IP}`, target: GROUP_NUMBER.simultaneous, groupId: "bench-sim", outcome: "answered", offered, answeredBy: members[9]!, answerAfterMs: 2000, durationMs: 60_000, why: { steps: [{ at, groupId: "bench-sim", kind: "step", items: items as NonNullable<CallRecord["why"]>["steps"][number]["items"] }] } };
    lines.push(JSON.stringify(rec));
  }
  fs.writeFileSync(path.join(dataDir, CALL_LOG_FILE), lines.join("\n") + "\n", { mode: 0o600 });
}

// --- hold-music receiver (media runs) -----------------------------------------------------------

interface HoldSink {
  port: number;
  /** Streams (SSRCs) heard so far. */
  streams(): number;
  /** Packets and pacing jitter (|arrival gap − 20 ms|, ms) from now until stop(). */
  measure(): void;
  stop(): Promise<{ streams: number; packets: number; packetsPerStreamPerS: number; jitterP50Ms: number; jitterP99Ms: number; jitterMaxMs: number }>;
}

async function holdSink(): Promise<HoldSink> {
  const sock = dgram.createSocket("udp4");
  await new Promise<void>((r) => sock.bind(0, "127.0.0.1", r));
  const last = new Map<number, number>();
  const gaps: number[] = [];
  let packets = 0;
  let measuring = false;
  let t0 = 0;
  sock.on("message", (b) => {
    const p = parseRtp(b);
    if (!p.ok) return;
    const now = performance.now();
    const prev = last.get(p.value.ssrc);
    last.set(p.value.ssrc, now);
    if (!measuring) return;
    packets++;
    if (prev !== undefined) gaps.push(Math.abs(now - prev - 20));
  });
  return {
    port: (sock.address() as { port: number }).port,
    streams: () => last.size,
    measure() {
      measuring = true;
      t0 = performance.now();
    },
    async stop() {
      const seconds = (performance.now() - t0) / 1000;
      await new Promise<void>((r) => sock.close(() => r()));
      const j = summarize(gaps);
      return { streams: last.size, packets, packetsPerStreamPerS: round(packets / Math.max(1, last.size) / Math.max(0.001, seconds), 1), jitterP50Ms: round(j.median, 2), jitterP99Ms: round(j.p99, 2), jitterMaxMs: round(j.max, 2) };
    },
  };
}

// --- one run -----------------------------------------------------------------------------------------

interface StatusView {
  devices: { registered: number };
  proxy: { calls: number; dialogs: number; branches: number };
  routing: { activeCalls: number; latency: { p50Us: number; p99Us: number; maxUs: number; count: number; overBudget: number; budgetUs: number } };
  memory?: { heapUsed: number; heapTotal: number };
  scheduling?: { policy: string; priority: number; nice: number } | null;
  idleCollections?: number | null;
  idleCollectionPauseMs?: number | null;
}

async function status(sock: string): Promise<StatusView> {
  const r = await callAgent(sock, "status");
  if (!r.ok) throw new Error(`status: ${r.error}`);
  return r.result as StatusView;
}

interface RunResult {
  spec: RunSpec;
  caller: CallerRun;
  agentLatency: StatusView["routing"]["latency"];
  packets: (PacketLatency & { p50Us: number; p99Us: number; maxUs: number }) | undefined;
  cpuUsPerCall: number;
  rssMB: number;
  hwmMB: number;
  heapUsedMB: number;
  registerMs: number;
  leftover: { calls: number; dialogs: number };
  agentWarnings: number;
  agentLogTail: string;
  phoneTail: string;
  /** status.scheduling at the end of the run (null: unknown). */
  scheduling: { policy: string; priority: number; nice: number } | null;
  /** Why the real-time policy asked for could not be set (not root), if so. */
  realtimeError: string | undefined;
  /** Media runs: the queued callers and the hold music they were sent during the measured run. */
  hold?: Awaited<ReturnType<HoldSink["stop"]>> & { queuedOk: number; queuedFailed: number };
  /** The memory run: the agent's memory with the calls up. */
  heldMemory?: HeldMemory;
}

interface HeldPoint {
  rssMB: number;
  heapUsedMB: number;
  heapTotalMB: number;
  registered: number;
  dialogs: number;
  /** Seconds since every call was up. */
  atS: number;
  /** How long the agent's last idle collection held its event loop, ms (null: none yet). */
  idlePauseMs: number | null;
}

interface HeldMemory {
  calls: number;
  /** Once every call is up (1 s settle). */
  up: HeldPoint;
  /** Still up, after the agent's idle collections (null: none ran while the calls were up). */
  afterIdleCollection: (HeldPoint & { collections: number }) | null;
}

/**
 * The memory run's readings: waits until every held call is a confirmed dialog, reads RSS, then
 * waits (while they stay up) for the agent's idle collections to have run and settled, as they
 * do on a site with calls up and little signalling, and reads again.
 */
async function heldMemory(pid: number, sock: string, held: { calls: number; holdS: number }, rate: number): Promise<HeldMemory> {
  const point = async (t0: number): Promise<HeldPoint> => {
    const st = await status(sock);
    return { rssMB: round(procSample(pid).rssMB, 1), heapUsedMB: round((st.memory?.heapUsed ?? NaN) / 1048576, 1), heapTotalMB: round((st.memory?.heapTotal ?? NaN) / 1048576, 1), registered: st.devices.registered, dialogs: st.proxy.dialogs, atS: round((Date.now() - t0) / 1000, 1), idlePauseMs: st.idleCollectionPauseMs ?? null };
  };
  await waitFor(`${held.calls} calls up`, async () => ((await status(sock)).proxy.dialogs >= held.calls ? true : undefined), (held.calls / rate + 15) * 1000);
  const tUp = Date.now();
  await sleep(1000);
  const up = await point(tUp);
  // Leave the calls' last 8 s alone: the reading must be taken with all of them still up.
  const until = tUp + (held.holdS - 8) * 1000;
  let collections = 0;
  let stableSince = Date.now();
  while (Date.now() < until) {
    await sleep(1000);
    const n = (await status(sock)).idleCollections ?? 0;
    if (n !== collections) (collections = n), (stableSince = Date.now());
    // A look every 5 s collects again while the last one gave pages back: settled once one passed without.
    if (collections > 0 && Date.now() - stableSince >= 7000) break;
  }
  if (collections === 0) {
    await heldDumps(pid);
    return { calls: held.calls, up, afterIdleCollection: null };
  }
  await sleep(Math.min(2000, Math.max(0, until - Date.now())));
  const afterIdleCollection = { ...(await point(tUp)), collections };
  await heldDumps(pid);
  return { calls: held.calls, up, afterIdleCollection };
}

/** BENCH_SMAPS=<file>: the agent's /proc smaps; BENCH_HEAP_SNAPSHOT=<dir>: a V8 heap snapshot (the memory run, last reading). */
async function heldDumps(pid: number): Promise<void> {
  if (process.env.BENCH_SMAPS) fs.writeFileSync(process.env.BENCH_SMAPS, fs.readFileSync(`/proc/${pid}/smaps`, "utf8"));
  if (!HEAP_SNAPSHOT_DIR) return;
  const before = new Set(fs.readdirSync(HEAP_SNAPSHOT_DIR));
  process.kill(pid, "SIGUSR2");
  const file = await waitFor("heap snapshot", () => fs.readdirSync(HEAP_SNAPSHOT_DIR).find((f) => f.endsWith(".heapsnapshot") && !before.has(f)), 30_000);
  // Written once its size stops changing.
  for (let size = -1; ; ) {
    await sleep(500);
    const now = fs.statSync(path.join(HEAP_SNAPSHOT_DIR, file)).size;
    if (now === size) break;
    size = now;
  }
  console.log(`heap snapshot: ${path.join(HEAP_SNAPSHOT_DIR, file)}`);
}

async function runOne(spec: RunSpec, workDir: string): Promise<RunResult> {
  const dir = path.join(workDir, spec.label);
  const dataDir = path.join(dir, "data");
  fs.mkdirSync(dataDir, { recursive: true });
  const [agentPort, callerPort] = [await freePort(), await freePort()];
  const phones = phonesFor(spec.phones);
  const site = path.join(dir, "site.json");
  fs.writeFileSync(site, JSON.stringify(siteFile(phones, callerPort, spec.holdStreams !== undefined), null, 2));

  if (spec.held !== undefined && PRELOADED_CALLS > 0) preloadCallLog(dataDir, phones, PRELOADED_CALLS);
  const env = benchAgentEnv(dataDir, agentPort, site);
  const nodeArgs = CPU_PROF ? ["--cpu-prof", `--cpu-prof-dir=${path.join(dir, "prof")}`] : [];
  if (spec.held !== undefined && HEAP_SNAPSHOT_DIR) nodeArgs.push("--heapsnapshot-signal=SIGUSR2", `--diagnostic-dir=${HEAP_SNAPSHOT_DIR}`);
  const agent = start(BIN, ["run"], { cwd: ROOT, env: { ...env, RINGEDGE_NODE_FLAGS: nodeArgs.join(" ") } });
  const sock = path.join(dataDir, "control.sock");
  let phoneProcs: Child[] = [];
  let cap: Capture | undefined;
  let sink: HoldSink | undefined;
  try {
    await Promise.race([
      waitFor("agent control socket", async () => ((await socketAnswers(sock, 200)) ? true : undefined), 30_000),
      agent.exited.then((c) => Promise.reject(new Error(`agent exited with ${c}:\n${agent.output()}`))),
    ]);
    const pid = agent.proc.pid!;
    let realtimeError: string | undefined;
    if (spec.realtimePriority !== undefined) {
      try {
        await execFileP("chrt", ["--all-tasks", "--fifo", "--pid", String(spec.realtimePriority), String(pid)]);
      } catch (err) {
        realtimeError = (err as Error).message.split("\n")[0];
      }
    }

    const tReg = Date.now();
    phoneProcs = await startPhones(dir, phones, agentPort);
    await waitFor("phones registered", async () => ((await status(sock)).devices.registered >= spec.phones ? true : undefined), 20_000);
    const registerMs = Date.now() - tReg;
    await sleep(300);

    // Media runs: the queued callers first, each hearing music on hold until after the run.
    let queued: Promise<CallerRun> | undefined;
    if (spec.holdStreams !== undefined && spec.holdStreams > 0) {
      const streams = spec.holdStreams;
      const s = (sink = await holdSink());
      queued = runCaller(path.join(dir, "queued"), agentPort, await freePort(), QUEUE_NUMBER, 50, streams, {
        scenario: "caller-queued.xml",
        // Waits through the warm-up, the measured run and the idle check, then CANCELs.
        holdMs: (WARMUP_CALLS / WARMUP_RATE + SECONDS + 15) * 1000,
        tailS: SECONDS + 40,
        extraArgs: ["-trace_err", "-key", "sink_ip", "127.0.0.1", "-key", "sink_port", String(s.port)],
      });
      await waitFor(`${streams} hold-music streams`, async () => (s.streams() >= streams ? true : undefined), 15_000).catch((err: unknown) => {
        const qdir = path.join(dir, "queued");
        const logs = fs.existsSync(qdir) ? fs.readdirSync(qdir).filter((f) => f.endsWith(".log")).map((f) => `--- ${f} ---\n${fs.readFileSync(path.join(qdir, f), "utf8").slice(-3000)}`) : [];
        throw new Error(`${(err as Error).message} (heard ${s.streams()})\n${logs.join("\n")}\n--- agent ---\n${agent.output().slice(-3000)}`);
      });
    }

    // Warm-up: the agent's first calls run cold code (tsx-compiled modules, JIT); the packet
    // capture starts after it, the agent's histogram (cumulative since start) includes it.
    const warm = await runCaller(path.join(dir, "warmup"), agentPort, callerPort, GROUP_NUMBER[spec.strategy], WARMUP_RATE, WARMUP_CALLS, { holdMs: HOLD_MS });
    if (warm.failed > 0) console.log(`[${spec.label}] warm-up: ${warm.failed} failed calls\n${warm.tail}`);
    if (spec.capture) cap = await startCapture(dir, agentPort);
    sink?.measure();
    const before = procSample(pid);
    const calls = spec.held?.calls ?? Math.round(spec.rate * SECONDS);
    const callerRun = runCaller(dir, agentPort, callerPort, GROUP_NUMBER[spec.strategy], spec.rate, calls, spec.held ? { holdMs: spec.held.holdS * 1000, tailS: spec.held.holdS + 25 } : { holdMs: HOLD_MS });
    const heldMem = spec.held === undefined ? undefined : await heldMemory(pid, sock, spec.held, spec.rate);
    const caller = await callerRun;
    const after = procSample(pid);
    // Every call through the proxy should be over; a bounded wait tells leftovers apart.
    const idle = await waitFor("agent idle", async () => {
      const s = await status(sock);
      return s.proxy.calls === 0 && s.proxy.dialogs === 0 ? s : undefined;
    }, 5000).catch(async () => status(sock));
    const packets = cap === undefined ? undefined : await packetLatency(cap, agentPort, callerPort);
    let hold: RunResult["hold"];
    if (sink !== undefined && queued !== undefined) {
      const figures = await sink.stop();
      const q = await queued;
      hold = { ...figures, queuedOk: q.successful, queuedFailed: q.failed };
    }
    const st = idle;
    const agentLog = agent.output();
    return {
      spec,
      caller,
      agentLatency: st.routing.latency,
      packets: packets === undefined ? undefined : (() => {
        const s = summarize(packets.firstForkUs);
        return { ...packets, firstForkUs: [], p50Us: round(s.median, 1), p99Us: round(s.p99, 1), maxUs: round(s.max, 1) };
      })(),
      cpuUsPerCall: ((after.cpuMs - before.cpuMs) * 1000) / Math.max(1, caller.calls),
      rssMB: round(after.rssMB, 1),
      hwmMB: round(after.hwmMB, 1),
      heapUsedMB: round((st.memory?.heapUsed ?? NaN) / 1048576, 1),
      registerMs,
      leftover: { calls: st.proxy.calls, dialogs: st.proxy.dialogs },
      agentWarnings: agentLog.split("\n").filter((l) => / (warn|error) /.test(l)).length,
      agentLogTail: agentLog.slice(-2000),
      phoneTail: "",
      scheduling: st.scheduling ?? null,
      realtimeError,
      ...(hold !== undefined ? { hold } : {}),
      ...(heldMem !== undefined ? { heldMemory: heldMem } : {}),
    };
  } finally {
    if (cap !== undefined && cap.child.proc.exitCode === null) await cap.child.stop("SIGINT");
    await sink?.stop().catch(() => undefined);
    for (const p of phoneProcs) await p.stop("SIGKILL");
    // SIGTERM: a clean stop writes the CPU profile when one was asked for.
    await agent.stop("SIGTERM");
  }
}

// --- main ------------------------------------------------------------------------------------------

function specs(): RunSpec[] {
  const all: RunSpec[] = [];
  for (const phones of [10, 50]) {
    for (const strategy of ["simultaneous", "sequential"] as const) {
      all.push({ label: `${strategy === "simultaneous" ? "sim" : "seq"}-${phones}@${LATENCY_RATE}`, phones, strategy, rate: LATENCY_RATE, capture: true });
      // The headline run again, right after it, with the agent under SCHED_FIFO as the example
      // systemd unit runs it: the pair shows what the appliance's scheduling buys.
      if (phones === 10 && strategy === "simultaneous") {
        all.push({ label: `sim-10@${LATENCY_RATE}+rt`, phones, strategy, rate: LATENCY_RATE, capture: true, realtimePriority: REALTIME_PRIORITY });
      }
    }
  }
  // The media pair: same site (with the queue group), without and with 50 callers hearing music.
  for (const streams of [0, HOLD_STREAMS]) all.push({ label: `sim-10@${LATENCY_RATE} q${streams}`, phones: 10, strategy: "simultaneous", rate: LATENCY_RATE, capture: true, holdStreams: streams });
  for (const rate of THROUGHPUT_RATES) all.push({ label: `sim-10@${rate}`, phones: 10, strategy: "simultaneous", rate, capture: false });
  // The memory run (issue 11): a site of 2,000 registered phones with 200 answered calls up.
  all.push({ label: `held-${HELD_CALLS}-of-${MEMORY_PHONES}`, phones: MEMORY_PHONES, strategy: "simultaneous", rate: HELD_RATE, capture: false, held: { calls: HELD_CALLS, holdS: HELD_S } });
  return ONLY === undefined ? all : all.filter((s) => ONLY.includes(s.label));
}

function runJson(r: RunResult): Record<string, unknown> {
  const ring = summarize(r.caller.ringMs);
  return {
    label: r.spec.label,
    phones: r.spec.phones,
    strategy: r.spec.strategy,
    ringingAtOnce: r.spec.strategy === "simultaneous" ? Math.min(10, r.spec.phones) : 1,
    rate: r.spec.rate,
    calls: r.caller.calls,
    successful: r.caller.successful,
    failed: r.caller.failed,
    retransmissions: r.caller.retransmissions,
    sippExitCode: r.caller.exitCode,
    achievedCallRate: round(r.caller.callRate, 1),
    wallMs: round(r.caller.wallMs, 0),
    firstForkAgent: r.agentLatency,
    firstForkPackets: r.packets ?? null,
    timeTo180Ms: { n: ring.n, median: ring.median, p99: ring.p99, max: ring.max },
    agentCpuUsPerCall: round(r.cpuUsPerCall, 0),
    rssMB: r.rssMB,
    hwmMB: r.hwmMB,
    heapUsedMB: r.heapUsedMB,
    registerMs: r.registerMs,
    leftover: r.leftover,
    agentWarnings: r.agentWarnings,
    scheduling: r.scheduling,
    ...(r.spec.holdStreams !== undefined ? { holdStreams: r.spec.holdStreams, hold: r.hold ?? null } : {}),
    ...(r.realtimeError !== undefined ? { realtimeError: r.realtimeError } : {}),
    ...(r.heldMemory !== undefined ? { heldMemory: r.heldMemory } : {}),
  };
}

async function main(): Promise<number> {
  for (const tool of ["sipp", "tshark"]) {
    const ok = await new Promise<boolean>((resolve) => spawn(tool, ["-v"], { stdio: "ignore" }).once("error", () => resolve(false)).once("close", () => resolve(true)));
    if (!ok) {
      console.error(`${tool} is not installed (make benchdeps)`);
      return 2;
    }
  }
  const m = machine();
  const workDir = benchWorkDir("ringedge-bench-calls-", CPU_PROF || process.env.BENCH_KEEP !== undefined);
  const results: RunResult[] = [];
  for (const spec of specs()) {
    console.log(`[${spec.label}] ${spec.phones} phones registered, ${spec.strategy} group, ${spec.rate} calls/s for ${SECONDS} s${spec.capture ? ", tshark on lo" : ""}`);
    const r = await runOne(spec, workDir);
    results.push(r);
    const p = r.packets;
    console.log(
      `[${spec.label}] ${r.caller.successful} ok, ${r.caller.failed} failed; first fork agent p50/p99 ${r.agentLatency.p50Us}/${r.agentLatency.p99Us} µs (n=${r.agentLatency.count})` +
        (p ? `, packets p50/p99 ${fmt(p.p50Us)}/${fmt(p.p99Us)} µs (${p.matched}/${p.invitesIn} matched)` : "") +
        `; CPU ${fmt(r.cpuUsPerCall)} µs/call; RSS ${r.rssMB} MB`,
    );
    if (r.hold !== undefined) console.log(`[${spec.label}] hold music: ${r.hold.streams} streams, ${r.hold.packetsPerStreamPerS} packets/s each, jitter p50/p99/max ${r.hold.jitterP50Ms}/${r.hold.jitterP99Ms}/${r.hold.jitterMaxMs} ms; queued callers ${r.hold.queuedOk} ok, ${r.hold.queuedFailed} failed`);
    const hm = r.heldMemory;
    if (hm !== undefined) {
      const idle = hm.afterIdleCollection;
      console.log(`[${spec.label}] ${hm.up.dialogs} calls up, ${hm.up.registered} phones registered: RSS ${hm.up.rssMB} MB (heap used ${hm.up.heapUsedMB} of ${hm.up.heapTotalMB} MB)` + (idle ? `; after ${idle.collections} idle collection(s), ${idle.dialogs} still up: RSS ${idle.rssMB} MB (heap used ${idle.heapUsedMB} of ${idle.heapTotalMB} MB) at +${idle.atS} s, the last collection held the loop ${idle.idlePauseMs ?? "—"} ms` : "; no idle collection while they were up"));
    }
    if (r.caller.failed > 0 || r.caller.exitCode !== 0) console.log(`--- SIPp caller tail ---\n${r.caller.tail}\n--- agent log tail ---\n${r.agentLogTail}`);
  }

  const rows = results.map((r) => {
    const ring = summarize(r.caller.ringMs);
    return [
      r.spec.label,
      fmt(r.caller.successful),
      fmt(r.caller.failed),
      fmt(r.caller.callRate, 1),
      `${fmt(r.agentLatency.p50Us)} / ${fmt(r.agentLatency.p99Us)}`,
      r.packets ? `${fmt(r.packets.p50Us)} / ${fmt(r.packets.p99Us)}` : "—",
      `${fmt(ring.median)} / ${fmt(ring.p99)}`,
      fmt(r.cpuUsPerCall),
      fmt(r.rssMB, 1),
    ];
  });
  console.log("");
  console.log(table(["run", "ok", "failed", "calls/s", "first fork µs p50/p99 (agent)", "(packets)", "to 180 ms p50/p99", "CPU µs/call", "RSS MB"], rows));

  const headline = results.find((r) => r.spec.phones === TARGETS.phones && r.spec.strategy === "simultaneous" && r.spec.rate === TARGETS.atRate && r.spec.realtimePriority === undefined && r.spec.holdStreams === undefined);
  // The media pair: first fork without and with 50 hold-music streams (issue 12).
  const q0 = results.find((r) => r.spec.holdStreams === 0);
  const q50 = results.find((r) => r.spec.holdStreams === HOLD_STREAMS);
  const fork = (r: RunResult | undefined): { p50Us: number; p99Us: number } | null => (r === undefined ? null : r.packets ? { p50Us: r.packets.p50Us, p99Us: r.packets.p99Us } : { p50Us: r.agentLatency.p50Us, p99Us: r.agentLatency.p99Us });
  const media = q0 !== undefined || q50 !== undefined
    ? { streams: HOLD_STREAMS, firstForkWithout: fork(q0), firstForkWith: fork(q50), p99Ratio: q0 && q50 ? round(fork(q50)!.p99Us / Math.max(1, fork(q0)!.p99Us), 2) : null, hold: q50?.hold ?? null, jitterP99MsMax: 2 }
    : null;
  const tuned = results.find((r) => r.spec.phones === TARGETS.phones && r.spec.strategy === "simultaneous" && r.spec.rate === TARGETS.atRate && r.spec.realtimePriority !== undefined);
  const tunedApplied = tuned !== undefined && tuned.scheduling?.policy === "fifo";
  const p50Met = (r: RunResult): boolean => r.agentLatency.p50Us <= TARGETS.firstForkP50UsMax && (r.packets?.p50Us ?? 0) <= TARGETS.firstForkP50UsMax;
  const p99Met = (r: RunResult): boolean => r.agentLatency.p99Us <= TARGETS.firstForkP99UsMax && (r.packets?.p99Us ?? 0) <= TARGETS.firstForkP99UsMax;
  const sustained = results.filter((r) => r.spec.phones === TARGETS.phones && r.spec.strategy === "simultaneous" && r.spec.rate >= TARGETS.sustainedRate);
  const maxClean = results.filter((r) => r.caller.failed === 0 && r.caller.exitCode === 0 && r.caller.successful === r.caller.calls).reduce((a, r) => Math.max(a, r.caller.callRate), 0);
  const lat = headline?.packets ?? headline?.agentLatency;
  const met = {
    firstForkP50: headline ? p50Met(headline) : null,
    firstForkP99: headline ? p99Met(headline) : null,
    // The same targets on the +rt run: only meaningful when SCHED_FIFO was in force (root).
    firstForkP50Realtime: tunedApplied ? p50Met(tuned) : null,
    firstForkP99Realtime: tunedApplied ? p99Met(tuned) : null,
    sustained500: sustained.length > 0 ? sustained.some((r) => r.caller.failed === 0 && r.caller.exitCode === 0 && r.caller.successful === r.caller.calls && r.caller.callRate >= TARGETS.sustainedRate * 0.95) : null,
  };
  const heldRun = results.find((r) => r.heldMemory !== undefined);
  const memory = heldRun?.heldMemory === undefined
    ? null
    : (() => {
        const h = heldRun.heldMemory;
        // The figure read against the target: the settled one (after the idle collections) when they ran with every call up.
        const settled = h.afterIdleCollection !== null && h.afterIdleCollection.dialogs >= h.calls ? h.afterIdleCollection : null;
        const rssMB = settled?.rssMB ?? h.up.rssMB;
        return { run: heldRun.spec.label, phones: heldRun.spec.phones, registered: h.up.registered, calls: h.calls, callLogAtStart: PRELOADED_CALLS, up: h.up, afterIdleCollection: h.afterIdleCollection, rssMB, targetRssMB: MEMORY_TARGET_MB, met: h.up.registered >= heldRun.spec.phones && h.up.dialogs >= h.calls && rssMB <= MEMORY_TARGET_MB, callsOk: heldRun.caller.successful, callsFailed: heldRun.caller.failed };
      })();
  const result = {
    bench: "calls",
    ...m,
    secondsPerRun: SECONDS,
    holdMs: HOLD_MS,
    warmupCallsPerRun: WARMUP_CALLS,
    headline: headline
      ? {
          run: headline.spec.label,
          firstForkAgentP50Us: headline.agentLatency.p50Us,
          firstForkAgentP99Us: headline.agentLatency.p99Us,
          firstForkPacketsP50Us: headline.packets?.p50Us ?? null,
          firstForkPacketsP99Us: headline.packets?.p99Us ?? null,
          timeTo180P50Ms: summarize(headline.caller.ringMs).median,
          cpuUsPerCall: round(headline.cpuUsPerCall, 0),
          rssMB: headline.rssMB,
        }
      : null,
    maxCleanCallRate: round(maxClean, 1),
    media,
    memory,
    targets: TARGETS,
    met,
    runs: results.map(runJson),
  };
  const out = writeResult("calls", result);
  const v = (b: boolean | null): string => (b === null ? "not run" : b ? "met" : "MISSED");
  console.log("");
  console.log(`targets: first fork p50 ≤ ${TARGETS.firstForkP50UsMax} µs ${v(met.firstForkP50)}, p99 ≤ ${TARGETS.firstForkP99UsMax} µs ${v(met.firstForkP99)} (10-phone simultaneous at ${TARGETS.atRate}/s${lat ? "" : ", not run"}); ${TARGETS.sustainedRate} calls/s with no failed call ${v(met.sustained500)}`);
  if (tuned !== undefined) {
    console.log(tunedApplied ? `under SCHED_FIFO ${REALTIME_PRIORITY} (${tuned.spec.label}): p50 ${v(met.firstForkP50Realtime)}, p99 ${v(met.firstForkP99Realtime)}` : `${tuned.spec.label}: SCHED_FIFO was not in force (${tuned.realtimeError ?? "policy " + String(tuned.scheduling?.policy)}); no verdict`);
  }
  if (media !== null) console.log(`media: first fork p50/p99 ${media.firstForkWithout?.p50Us ?? "—"}/${media.firstForkWithout?.p99Us ?? "—"} µs without, ${media.firstForkWith?.p50Us ?? "—"}/${media.firstForkWith?.p99Us ?? "—"} µs with ${HOLD_STREAMS} hold-music streams (p99 ratio ${media.p99Ratio ?? "—"}); pacing jitter p99 ${media.hold?.jitterP99Ms ?? "—"} ms (target ≤ ${media.jitterP99MsMax})`);
  if (memory !== null) console.log(`memory: ${memory.registered} phones registered, ${memory.calls} calls up, ${memory.callLogAtStart} calls in the log at start: RSS ${memory.rssMB} MB${memory.afterIdleCollection ? " after the idle collections" : ""} (${memory.up.rssMB} MB as they came up); target ≤ ${MEMORY_TARGET_MB} MB ${v(memory.met)}`);
  console.log(`wrote ${out}`);
  if (CPU_PROF || process.env.BENCH_KEEP) console.log(`kept ${workDir}`);
  else fs.rmSync(workDir, { recursive: true, force: true });
  return 0;
}

process.exitCode = await main().catch((err: unknown) => {
  console.error(`calls bench crashed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  return 2;
});
