// Registration benchmark: how fast a freshly started agent takes a site's worth of desk phones
// registering with digest auth (RFC 3261 §10, §22.4: REGISTER → 401 → REGISTER with
// credentials → 200), and how much memory the agent holds with them all registered.
// Run: node --import tsx bench/register.bench.ts   (writes bench/results/register.json)
//
// 1. N devices are created in a fresh data dir through the Store API (not N CLI runs).
// 2. The real agent runs as a child process, logging at warn only, offering MD5 first (SIPp
//    answers only the first challenge, and only MD5) and with 127.0.0.1 on the guard's
//    allowlist (its per-source rate limit would, rightly, ignore one address sending thousands
//    of REGISTERs a second).
// 3. "burst": SIPp registers all N as fast as it can (the power-restored-site case) on the cold
//    agent; wall time is SIPp's spawn-to-exit. Memory is read after a 1 s settle.
// 4. "paced": SIPp refreshes all N at a fixed rate on the now warm agent; SIPp's per-REGISTER
//    response times (rtd) and the agent's CPU time per registration come from this run.
// 5. "steady": memory once Timer J has let go of the completed transactions (~32 s).
// 6. "after idle collection" (the shipped agent only, where gc() is exposed): memory once the
//    agent's idle collections (agent/appliance/idle-gc.ts) have run.
// The whole sequence runs twice: on dist/ringedge.mjs as `make run` ships it (plain node; the
// headline figures) and on bin/ringedge.js through tsx's loader (the development form), so
// the loader's share of RSS is measured, not guessed.
//
// Knobs (env): BENCH_SMAPS=<path> (the agent's /proc smaps at steady state and after the idle
// collections, to <path>.steady and <path>.idle), BENCH_REGISTRATIONS (2000), BENCH_BURST_RATE (per s, 4000), BENCH_BURST_LIMIT
// (concurrent, 1000), BENCH_PACED_RATE (per s, 1000), BENCH_SKIP_TSX=1, BENCH_KEEP=1 (keep
// the temp dir with SIPp's stat/rtt files).
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { callAgent, socketAnswers } from "../agent/console/control.ts";
import { Store } from "../agent/store/store.ts";
import { agentEnv, freePort, ROOT, sleep } from "../test/e2e/harness.ts";
import { BENCH_DIR, benchWorkDir, fmt, machine, round, summarize, table, writeResult } from "./lib.ts";

const N = envInt("BENCH_REGISTRATIONS", 2000);
const BURST_RATE = envInt("BENCH_BURST_RATE", 4000);
const BURST_LIMIT = envInt("BENCH_BURST_LIMIT", 1000);
const PACED_RATE = envInt("BENCH_PACED_RATE", 1000);
/** The figures for a 2-core appliance. */
const TARGETS = { registrations: 2000, wallMsMax: 2000, failedMax: 0, rssMBMax: 100 } as const;
const SCENARIO = path.join(BENCH_DIR, "sipp", "register-rtd.xml");
const BIN = path.join(ROOT, "bin", "ringedge.js");
/** Clock ticks per second of /proc/<pid>/stat utime/stime (USER_HZ; 100 on every Linux we ship). */
const CLK_TCK = 100;
const SIPP_TIMEOUT_MS = 60_000;
/** Bound on waiting for Timer J (32 s) to drain the completed server transactions. */
const STEADY_WAIT_MS = 45_000;

function envInt(name: string, dflt: number): number {
  const v = Number(process.env[name]);
  return Number.isInteger(v) && v > 0 ? v : dflt;
}

interface ProcSample {
  rssMB: number;
  hwmMB: number;
  /** utime + stime, ms. */
  cpuMs: number;
}

function sampleProc(pid: number): ProcSample {
  const status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? NaN);
  // Fields after the parenthesised comm (which may hold spaces): utime is field 14, stime 15.
  const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const ticks = Number(rest[11]) + Number(rest[12]);
  return { rssMB: kb("VmRSS") / 1024, hwmMB: kb("VmHWM") / 1024, cpuMs: (ticks * 1000) / CLK_TCK };
}

interface SippRun {
  label: string;
  rate: number;
  code: number | null;
  wallMs: number;
  sippElapsedMs: number;
  successful: number;
  failed: number;
  retransmissions: number;
  /** Per-REGISTER response times from -trace_rtt, ms. */
  challengeMs: number[];
  registerMs: number[];
  agentCpuMs: number;
  stdoutTail: string;
}

/** "hh:mm:ss:uuuuuu" (SIPp's duration notation) → ms. */
function sippDurationMs(s: string): number {
  const m = /(\d+):(\d+):(\d+):(\d+)/.exec(s);
  if (!m) return NaN;
  return ((Number(m[1]) * 60 + Number(m[2])) * 60 + Number(m[3])) * 1000 + Number(m[4]) / 1000;
}

async function runSipp(label: string, agentPid: number, agentPort: number, sippPort: number, workDir: string, csv: string, rate: number, limit: number): Promise<SippRun> {
  const runDir = path.join(workDir, label);
  fs.mkdirSync(runDir);
  const statFile = path.join(runDir, "stat.csv");
  const args = [
    "-sf", SCENARIO, "-inf", csv,
    "-p", String(sippPort),
    "-r", String(rate), "-rp", "1000", "-m", String(N), "-l", String(limit),
    "-timeout", String(SIPP_TIMEOUT_MS / 1000 - 5), "-nd",
    "-trace_stat", "-stf", statFile, "-fd", "60",
    "-trace_rtt", "-rtt_freq", "1000",
    `127.0.0.1:${agentPort}`,
  ];
  const before = sampleProc(agentPid);
  const t0 = process.hrtime.bigint();
  const proc = spawn("sipp", args, { cwd: runDir, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  proc.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
  proc.stderr.setEncoding("utf8").on("data", (d: string) => (stdout += d));
  const killer = setTimeout(() => proc.kill("SIGKILL"), SIPP_TIMEOUT_MS);
  const code = await new Promise<number | null>((resolve, reject) => {
    proc.once("error", reject);
    proc.once("close", (c) => resolve(c));
  }).finally(() => clearTimeout(killer));
  const wallMs = Number(process.hrtime.bigint() - t0) / 1e6;
  const after = sampleProc(agentPid);

  // The final screen holds cumulative counters; the stat CSV's last row is the fallback.
  const cum = (name: string): number => Number(new RegExp(`${name}\\s*\\|\\s*\\d+\\s*\\|\\s*(\\d+)`).exec(stdout)?.[1] ?? NaN);
  let successful = cum("Successful call");
  let failed = cum("Failed call");
  let retransmissions = NaN;
  let sippElapsedMs = sippDurationMs(/Elapsed Time\s*\|[^|]*\|\s*([\d:]+)/.exec(stdout)?.[1] ?? "");
  if (fs.existsSync(statFile)) {
    const lines = fs.readFileSync(statFile, "utf8").trim().split("\n");
    const head = (lines[0] ?? "").split(";");
    const last = (lines[lines.length - 1] ?? "").split(";");
    const col = (name: string): string | undefined => last[head.indexOf(name)];
    retransmissions = Number(col("Retransmissions(C)") ?? NaN);
    if (!Number.isFinite(successful)) successful = Number(col("SuccessfulCall(C)") ?? NaN);
    if (!Number.isFinite(failed)) failed = Number(col("FailedCall(C)") ?? NaN);
    if (!Number.isFinite(sippElapsedMs)) sippElapsedMs = sippDurationMs(col("ElapsedTime(C)") ?? "");
  }

  // -trace_rtt: "Date_ms;response_time_ms;rtd_no" per completed response-time measure.
  const challengeMs: number[] = [];
  const registerMs: number[] = [];
  for (const f of fs.readdirSync(runDir).filter((n) => n.endsWith("_rtt.csv"))) {
    for (const line of fs.readFileSync(path.join(runDir, f), "utf8").split("\n")) {
      const [, ms, rtd] = line.trim().split(";");
      const v = Number(ms);
      if (!Number.isFinite(v) || ms === undefined || ms === "") continue;
      if (rtd === "challenge") challengeMs.push(v);
      else if (rtd === "register") registerMs.push(v);
    }
  }
  return {
    label,
    rate,
    code,
    wallMs,
    sippElapsedMs,
    successful,
    failed,
    retransmissions,
    challengeMs,
    registerMs,
    agentCpuMs: after.cpuMs - before.cpuMs,
    stdoutTail: stdout.slice(-2500),
  };
}

interface StatusView {
  devices: { total: number; registered: number };
  bindings: number;
  transactions: { server: number; client: number };
  store: { pendingWrites: boolean };
  memory?: { heapUsed: number; heapTotal: number; rss: number; external: number };
  /** Absent in older builds; null where gc() is not exposed. */
  idleCollections?: number | null;
}

async function agentStatus(sock: string): Promise<StatusView> {
  const reply = await callAgent(sock, "status");
  if (!reply.ok) throw new Error(`status failed: ${reply.error}`);
  return reply.result as StatusView;
}

async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`${what} not reached within ${timeoutMs} ms`);
    await sleep(100);
  }
}

interface MemoryPoint {
  rssMB: number;
  hwmMB: number;
  heapUsedMB: number;
  registered: number;
  bindings: number;
  serverTransactions: number;
}

interface VariantResult {
  runtime: string;
  readyMs: number;
  burst: SippRun;
  paced: SippRun;
  memory: { idle: MemoryPoint; afterBurst: MemoryPoint; afterPaced: MemoryPoint; steady: MemoryPoint & { waitedMs: number }; idleCollected: (MemoryPoint & { waitedMs: number }) | null };
  storeWriteBehindMs: number;
  persistedBindings: number;
  agentExitCode: number | null;
  agentWarnings: number;
  agentLogTail: string;
}

const mb = (bytes: number | undefined): number => (bytes === undefined ? NaN : bytes / 1048576);

async function memoryPoint(pid: number, sock: string): Promise<MemoryPoint> {
  const p = sampleProc(pid);
  const st = await agentStatus(sock);
  return {
    rssMB: round(p.rssMB, 1),
    hwmMB: round(p.hwmMB, 1),
    heapUsedMB: round(mb(st.memory?.heapUsed), 1),
    registered: st.devices.registered,
    bindings: st.bindings,
    serverTransactions: st.transactions.server,
  };
}

/** Seeds a fresh store with the N devices; returns the SIPp injection CSV. */
async function seed(workDir: string, dataDir: string): Promise<string> {
  const rows = ["SEQUENTIAL"];
  const store = await Store.open(dataDir, { siteId: "bench" });
  try {
    for (let i = 0; i < N; i++) {
      const username = String(100_000 + i);
      const password = `pw-${i.toString(36)}-bench`;
      const r = store.addDevice({ username, password, kind: "physical" });
      if (!r.ok) throw new Error(`addDevice ${username}: ${r.error.message}`);
      rows.push(`${username};${password}`);
    }
  } finally {
    await store.close();
  }
  const csv = path.join(workDir, "users.csv");
  fs.writeFileSync(csv, rows.join("\n") + "\n");
  return csv;
}

/** The agent as shipped: dist/ringedge.mjs, built by bin/build.mjs as `make build` builds it. */
async function buildDist(): Promise<string> {
  // @ts-expect-error: a plain .mjs script without declarations (the Makefile's build).
  const { buildBundles } = (await import("../bin/build.mjs")) as { buildBundles: () => Promise<string> };
  return buildBundles();
}

const HEAP_SNAPSHOT_DIR = process.env.BENCH_HEAP_SNAPSHOT ? path.resolve(process.env.BENCH_HEAP_SNAPSHOT) : undefined;

/** Asks the agent (started with --heapsnapshot-signal) for a heap snapshot and waits until it is written. */
async function heapSnapshot(pid: number, dir: string): Promise<void> {
  fs.mkdirSync(dir, { recursive: true });
  const before = new Set(fs.readdirSync(dir));
  process.kill(pid, "SIGUSR2");
  const file = await waitFor("heap snapshot", async () => fs.readdirSync(dir).find((f) => f.endsWith(".heapsnapshot") && !before.has(f)), 60_000);
  // Written when its size stops changing.
  let size = -1;
  for (;;) {
    await sleep(500);
    const now = fs.statSync(path.join(dir, file)).size;
    if (now === size) break;
    size = now;
  }
  console.log(`heap snapshot: ${path.join(dir, file)} (${(size / 1e6).toFixed(1)} MB)`);
}

async function benchAgent(runtime: string, entry: string, workDir: string): Promise<VariantResult> {
  const dir = path.join(workDir, runtime);
  const dataDir = path.join(dir, "data");
  fs.mkdirSync(dir, { recursive: true });
  const tSeed = Date.now();
  const csv = await seed(dir, dataDir);
  console.log(`[${runtime}] seeded ${N} devices through the Store API in ${Date.now() - tSeed} ms`);

  const port = await freePort();
  // One SIPp port for both runs: the paced run then refreshes the same contacts, as phones do.
  const sippPort = await freePort();
  const env = agentEnv(dataDir, port, {
    RINGEDGE_LOG_LEVEL: "warn",
    RINGEDGE_AUTH_ALGORITHMS: "MD5,SHA-256",
    RINGEDGE_GUARD_ALLOWLIST: "127.0.0.1",
    // SIPp is gone after each run, so keep-alive OPTIONS (every 30 s by default) would all time
    // out and fill the steady-state figure with 2,000 retransmitting probes to dead phones.
    RINGEDGE_KEEPALIVE_INTERVAL_S: "600",
    // BENCH_HEAP_SNAPSHOT=<dir>: a V8 heap snapshot of the agent at steady state goes there.
    // BENCH_NODE_FLAGS: more node flags for the shipped agent (e.g. to try V8 heap settings).
    RINGEDGE_NODE_FLAGS: [process.env.BENCH_NODE_FLAGS ?? "", HEAP_SNAPSHOT_DIR ? `--heapsnapshot-signal=SIGUSR2 --diagnostic-dir=${HEAP_SNAPSHOT_DIR}` : ""].join(" ").trim(),
  });
  // The shipped agent starts through bin/ringedge (its node flags); the tsx form as developers run it.
  const [cmd, args] = entry.endsWith(".mjs") ? [path.join(ROOT, "bin", "ringedge"), ["run"]] : [process.execPath, [entry, "run"]];
  const agent = spawn(cmd, args, { env, cwd: ROOT, stdio: ["ignore", "ignore", "pipe"] });
  let agentLog = "";
  agent.stderr.setEncoding("utf8").on("data", (d: string) => (agentLog = (agentLog + d).slice(-20_000)));
  const exited = new Promise<number | null>((resolve) => agent.once("exit", (c) => resolve(c)));
  const killAgent = (): void => {
    if (agent.exitCode === null && agent.signalCode === null) agent.kill("SIGKILL");
  };
  process.once("exit", killAgent);
  const sock = path.join(dataDir, "control.sock");
  try {
    const pid = agent.pid;
    if (pid === undefined) throw new Error("agent did not start");
    const tStart = Date.now();
    await Promise.race([
      waitFor("agent control socket", async () => ((await socketAnswers(sock, 200)) ? true : undefined), 20_000),
      exited.then((c) => {
        throw new Error(`agent exited with ${c} before it was ready:\n${agentLog}`);
      }),
    ]);
    const readyMs = Date.now() - tStart;
    console.log(`[${runtime}] agent pid ${pid} ready in ${readyMs} ms on 127.0.0.1:${port}`);
    await sleep(500);
    const idle = await memoryPoint(pid, sock);

    // Burst on the cold agent: every phone of the site at once.
    const burst = await runSipp(`${runtime}-burst`, pid, port, sippPort, dir, csv, BURST_RATE, BURST_LIMIT);
    const tPersist = Date.now();
    await waitFor("store write-behind", async () => ((await agentStatus(sock)).store.pendingWrites ? undefined : true), 20_000);
    const storeWriteBehindMs = Date.now() - tPersist;
    await sleep(1000); // settle: the write-behind and young-generation GC finish
    const afterBurst = await memoryPoint(pid, sock);

    // Paced refresh on the warm agent.
    const paced = await runSipp(`${runtime}-paced`, pid, port, sippPort, dir, csv, PACED_RATE, BURST_LIMIT);
    await sleep(1000);
    const afterPaced = await memoryPoint(pid, sock);

    // Steady state: completed non-INVITE server transactions stay for Timer J = 64×T1 = 32 s
    // over UDP (RFC 3261 §17.2.2) to absorb retransmissions; after that only the bindings remain.
    const tSteady = Date.now();
    await waitFor("transactions drained (Timer J)", async () => ((await agentStatus(sock)).transactions.server === 0 ? true : undefined), STEADY_WAIT_MS);
    await sleep(1000);
    const steady = { ...(await memoryPoint(pid, sock)), waitedMs: Date.now() - tSteady };
    if (process.env.BENCH_SMAPS) fs.writeFileSync(`${process.env.BENCH_SMAPS}.steady`, fs.readFileSync(`/proc/${pid}/smaps`, "utf8"));
    if (HEAP_SNAPSHOT_DIR && entry.endsWith(".mjs")) await heapSnapshot(pid, HEAP_SNAPSHOT_DIR);
    // The shipped agent runs full collections once the signalling has been quiet for 35 s
    // (agent/appliance/idle-gc.ts): the memory after them, where gc() is exposed.
    let idleCollected: (MemoryPoint & { waitedMs: number }) | null = null;
    if (typeof (await agentStatus(sock)).idleCollections === "number") {
      await waitFor("idle collection", async () => (((await agentStatus(sock)).idleCollections ?? 0) > 0 ? true : undefined), 30_000).catch(() => undefined);
      // One look every 5 s collects again while the last one gave pages back: wait until a
      // look has passed without one (bounded), then 2 s for V8's helper threads to unmap.
      let count = (await agentStatus(sock)).idleCollections ?? 0;
      let stableSince = Date.now();
      const until = Date.now() + 45_000;
      while (Date.now() - stableSince < 7_000 && Date.now() < until) {
        await sleep(1000);
        const n = (await agentStatus(sock)).idleCollections ?? 0;
        if (n !== count) (count = n), (stableSince = Date.now());
      }
      await sleep(2000);
      idleCollected = { ...(await memoryPoint(pid, sock)), waitedMs: Date.now() - tSteady };
      if (process.env.BENCH_SMAPS) fs.writeFileSync(`${process.env.BENCH_SMAPS}.idle`, fs.readFileSync(`/proc/${pid}/smaps`, "utf8"));
    }

    // Stop cleanly (SIGTERM flushes the store), then check what reached the disk.
    agent.kill("SIGTERM");
    const stopTimer = setTimeout(killAgent, 10_000);
    const agentExitCode = await exited;
    clearTimeout(stopTimer);
    const reopened = await Store.open(dataDir);
    const persistedBindings = reopened.listBindings().length;
    await reopened.close();
    return {
      runtime,
      readyMs,
      burst,
      paced,
      memory: { idle, afterBurst, afterPaced, steady, idleCollected },
      storeWriteBehindMs,
      persistedBindings,
      agentExitCode,
      agentWarnings: agentLog.split("\n").filter((l) => / (warn|error) /.test(l)).length,
      agentLogTail: agentLog.slice(-3000),
    };
  } finally {
    killAgent();
    process.removeListener("exit", killAgent);
  }
}

function mapSummary(xs: number[]): { n: number; median: number; p99: number; max: number } {
  const s = summarize(xs);
  return { n: s.n, median: round(s.median, 2), p99: round(s.p99, 2), max: round(s.max, 2) };
}

/** Share of samples under `ms` (SIPp's rtd has whole-millisecond, on this box 4 ms, steps). */
function shareUnder(xs: number[], ms: number): number {
  return xs.length ? round(xs.filter((x) => x < ms).length / xs.length, 3) : NaN;
}

const perSecond = (r: SippRun): number => (r.successful / r.wallMs) * 1000;
const cpuUsPerReg = (r: SippRun): number => (r.agentCpuMs * 1000) / Math.max(1, r.successful);

function runJson(r: SippRun): Record<string, unknown> {
  return {
    label: r.label,
    rate: r.rate,
    limit: BURST_LIMIT,
    exitCode: r.code,
    successful: r.successful,
    failed: r.failed,
    retransmissions: r.retransmissions,
    wallMs: round(r.wallMs, 1),
    sippElapsedMs: round(r.sippElapsedMs, 1),
    perSecond: round(perSecond(r), 0),
    agentCpuMs: round(r.agentCpuMs, 0),
    agentCpuUsPerRegistration: round(cpuUsPerReg(r), 0),
    challengeResponseMs: { ...mapSummary(r.challengeMs), under5ms: shareUnder(r.challengeMs, 5) },
    registerResponseMs: { ...mapSummary(r.registerMs), under5ms: shareUnder(r.registerMs, 5) },
  };
}

function printVariant(v: VariantResult): void {
  const rt = (xs: number[]): string => {
    const s = summarize(xs);
    return s.n ? `${fmt(s.median)} / ${fmt(s.p99)} / ${fmt(s.max)}` : "n/a";
  };
  const runRow = (r: SippRun): string[] => [
    `${r.label} (-r ${r.rate})`,
    fmt(r.successful),
    fmt(r.failed),
    fmt(r.retransmissions),
    fmt(r.wallMs),
    fmt(perSecond(r)),
    rt(r.challengeMs),
    rt(r.registerMs),
    fmt(cpuUsPerReg(r)),
  ];
  console.log("");
  console.log(table(["run", "ok", "failed", "retrans", "wall ms", "reg/s", "401 ms med/p99/max", "200 ms med/p99/max", "agent CPU µs/reg"], [runRow(v.burst), runRow(v.paced)]));
  const memRow = (label: string, p: MemoryPoint): string[] => [label, fmt(p.rssMB, 1), fmt(p.hwmMB, 1), fmt(p.heapUsedMB, 1), fmt(p.registered), fmt(p.bindings), fmt(p.serverTransactions)];
  console.log("");
  console.log(
    table(
      [`${v.runtime} agent memory`, "RSS MB", "HWM MB", "heap used MB", "registered", "bindings", "server tx"],
      [
        memRow("idle, devices loaded", v.memory.idle),
        memRow("after burst + 1 s", v.memory.afterBurst),
        memRow("after paced refresh + 1 s", v.memory.afterPaced),
        memRow(`steady (tx drained, +${fmt(v.memory.steady.waitedMs / 1000)} s)`, v.memory.steady),
        ...(v.memory.idleCollected ? [memRow(`after idle collection (+${fmt(v.memory.idleCollected.waitedMs / 1000)} s)`, v.memory.idleCollected)] : []),
      ],
    ),
  );
  console.log(`store write-behind idle ${v.storeWriteBehindMs} ms after the burst; ${v.persistedBindings} bindings on disk after SIGTERM (agent exit ${v.agentExitCode})`);
}

async function main(): Promise<number> {
  const m = machine();
  const workDir = benchWorkDir("ringedge-bench-", process.env.BENCH_KEEP !== undefined);
  const variants: VariantResult[] = [];
  variants.push(await benchAgent("dist", await buildDist(), workDir));
  printVariant(variants[0]!);
  // The development form (bin/ringedge.js through tsx's loader) for comparison.
  if (process.env.BENCH_SKIP_TSX !== "1") {
    variants.push(await benchAgent("tsx", BIN, workDir));
    printVariant(variants[1]!);
  }

  const shipped = variants[0]!;
  const { burst, paced } = shipped;
  const settled = shipped.memory.afterBurst;
  const met = {
    registrations: burst.successful >= TARGETS.registrations && settled.registered >= TARGETS.registrations,
    wallMs: burst.wallMs < TARGETS.wallMsMax,
    failed: burst.failed <= TARGETS.failedMax && paced.failed <= TARGETS.failedMax,
    rssMB: settled.rssMB < TARGETS.rssMBMax,
  };
  const result = {
    bench: "register",
    ...m,
    registrations: burst.successful,
    wallMs: round(burst.wallMs, 1),
    perSecond: round(perSecond(burst), 0),
    failed: burst.failed,
    rssMB: settled.rssMB,
    hwmMB: settled.hwmMB,
    heapUsedMB: settled.heapUsedMB,
    steadyRssMB: shipped.memory.steady.rssMB,
    idleCollectedRssMB: shipped.memory.idleCollected?.rssMB ?? null,
    cpuUsPerRegistration: round(cpuUsPerReg(paced), 0),
    targets: TARGETS,
    met,
    variants: variants.map((v) => ({
      runtime: v.runtime,
      entry: v.runtime === "tsx" ? "bin/ringedge.js (tsx loader, development)" : "dist/ringedge.mjs on plain node (make run)",
      readyMs: v.readyMs,
      runs: [runJson(v.burst), runJson(v.paced)],
      memory: v.memory,
      storeWriteBehindMs: v.storeWriteBehindMs,
      persistedBindings: v.persistedBindings,
      agentExitCode: v.agentExitCode,
      agentWarnings: v.agentWarnings,
    })),
  };
  const out = writeResult("register", result);
  const verdict = (ok: boolean): string => (ok ? "met" : "MISSED");
  console.log("");
  console.log(
    `targets (bin/ringedge.js): ${N} registered ${verdict(met.registrations)}, < ${TARGETS.wallMsMax} ms ${verdict(met.wallMs)}, no failure ${verdict(met.failed)}, RSS < ${TARGETS.rssMBMax} MB ${verdict(met.rssMB)}`,
  );
  console.log(`wrote ${out}`);

  let crashed = false;
  for (const v of variants) {
    if (v.burst.failed > 0 || v.paced.failed > 0 || v.burst.code !== 0 || v.paced.code !== 0) {
      console.log(`--- [${v.runtime}] SIPp burst tail ---\n${v.burst.stdoutTail}\n--- agent log tail ---\n${v.agentLogTail}`);
    }
    if (v.agentExitCode !== 0) {
      console.error(`[${v.runtime}] agent exited with ${v.agentExitCode} on SIGTERM:\n${v.agentLogTail}`);
      crashed = true;
    }
  }
  if (process.env.BENCH_KEEP) console.log(`kept ${workDir}`);
  else fs.rmSync(workDir, { recursive: true, force: true });
  return crashed ? 1 : 0;
}

process.exitCode = await main().catch((err: unknown) => {
  console.error(`register bench crashed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  return 2;
});
