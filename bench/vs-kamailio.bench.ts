// ringedge side by side with Kamailio 5.6 (issue 11): the same ring-all-10 call through both, in
// the same run, interleaved. Run: node --import tsx bench/vs-kamailio.bench.ts
// (writes bench/results/vs-kamailio.json and bench/results/vs-kamailio.svg).
//
// The scenario, for both proxies: a SIPp caller (bench/sipp/caller-overload.xml, from the
// trunk's address 127.0.0.60) calls 700; the proxy forks to 10 registered SIPp phones at once
// (bench/sipp-harness.ts startPhones: nine ring until cancelled, "answer-1", forked last,
// answers after 50 ms); the caller holds 100 ms and hangs up through the Record-Route.
// - ringedge: dist/ringedge.mjs as shipped (bin/ringedge run), UDP only, log level warn, the
//   site's simultaneous group, the SIPp addresses allowlisted from the per-source quotas (as the
//   other benches do: one address places all the calls).
// - Kamailio: bench/kamailio/kamailio.cfg (tm, sl, rr, maxfwd, usrloc in memory, registrar,
//   auth with the same digest), two UDP workers, in the foreground, its runtime dir and pid file
//   in the bench's temp dir.
// Every run gets a fresh proxy and fresh phones (an overloaded run must not spoil the next),
// then a warm-up, then the measured calls. Figures per run: completed calls (answered, ACKed,
// hung up), 503s, failed calls; goodput = completed / offered seconds; the proxy's CPU
// (utime+stime from /proc/<pid>/stat of the process and all its children) over the measured
// calls, divided by completed calls; first fork on the wire (tshark on lo; the INVITE in
// against the first INVITE out, by Call-ID) in the latency runs only (tshark costs CPU).
// Runs: latency at 100 calls/s with capture (both), then goodput against offered load at each
// rate of BENCH_KAM_RATES (both, order alternating per rate); CPU per call is read at 100 and
// 400 calls/s from the goodput runs; then the runs at those two rates again with the proxy on
// CPU 0 and every SIPp process on CPU 1 (split); then one sustained run per proxy (300 calls/s
// for 45 s), past the 32 s transaction timers where lingering state peaks (ringedge's RSS at its end).
//
// Knobs (env): BENCH_KAM_SHORT=1 (a quick check: 3 s per point, rates 100,400,800),
// BENCH_KAM_SECONDS (10), BENCH_KAM_REPEAT (1: rounds of the load runs, medians reported), BENCH_KAM_RATES ("100,200,400,600,800,1000"),
// BENCH_KAM_SUSTAIN_SECONDS (45; 0 skips the sustained run), BENCH_KAM_SUSTAIN_RATE (300), BENCH_KAM_SPLIT=0
// (no split-CPU runs), BENCH_KAM_ONLY
// ("ringedge" or "kamailio"), BENCH_KEEP=1 (keep the temp dir: logs, SIPp files, pcaps).
import { spawn } from "node:child_process";
import { execFile } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { callAgent, socketAnswers } from "../agent/console/control.ts";
import { freePort, ROOT, sleep } from "../test/e2e/harness.ts";
import { BENCH_DIR, RESULTS_DIR, benchWorkDir, fmt, machine, median, round, summarize, table, writeResult } from "./lib.ts";
import { CALLER_IP, benchAgentEnv, exitedChildrenCpuMs, udpDropsByPort, packetLatency, phonesFor, pinCpus, runCaller, start, startCapture, procSample, startPhones, treeCpu, waitFor, type CallerRun, type Capture, type Child, type Phone } from "./sipp-harness.ts";

const execFileP = promisify(execFile);
const SHORT = process.env.BENCH_KAM_SHORT === "1";
const SECONDS = envNum("BENCH_KAM_SECONDS", SHORT ? 3 : 10);
const RATES = [...new Set((process.env.BENCH_KAM_RATES ?? (SHORT ? "100,400,800" : "100,200,400,600,800,1000")).split(",").map(Number).filter((n) => Number.isFinite(n) && n > 0))];
/** Rounds of the load runs (the box is noisy: figures are the median of the rounds). */
const REPEAT = envNum("BENCH_KAM_REPEAT", 1);
// The sustained run: long enough for the first calls' 32 s transaction timers to fire while new
// calls keep coming (0 skips it; a short run skips it).
const SUSTAIN_SECONDS = SHORT ? 0 : envNum("BENCH_KAM_SUSTAIN_SECONDS", 45);
const SUSTAIN_RATE = envNum("BENCH_KAM_SUSTAIN_RATE", 300);
const LATENCY_RATE = 100;
const CPU_RATES = [100, 400] as const;
/**
 * The CPU-per-call runs again with the proxy alone on CPU 0 and the eleven SIPp processes on
 * CPU 1 (util-linux taskset; skipped with BENCH_KAM_SPLIT=0, on one CPU or without taskset).
 * On the appliance no load generator shares the proxy's CPU; here, sharing it, each message
 * reaches a proxy whose caches the SIPp processes have just used, which costs ringedge's larger
 * working set more than Kamailio's (bench/README.md).
 */
let SPLIT = process.env.BENCH_KAM_SPLIT !== "0" && os.cpus().length >= 2;
const SPLIT_CPUS = { proxy: "0", loadgen: "1", all: `0-${os.cpus().length - 1}` } as const;
const HOLD_MS = 100;
const WARMUP = { calls: SHORT ? 50 : 100, rate: 50 };
const PHONES = 10;
const GROUP = "700";
/** The issue's targets for the 2-core box (reported, not asserted). */
const TARGETS = { cpuRatioMax: 1.5, cleanRate: 800 } as const;
const BIN = path.join(ROOT, "bin", "ringedge");
const KAMAILIO = process.env.KAMAILIO ?? "/usr/sbin/kamailio";
const KAMAILIO_CFG = path.join(BENCH_DIR, "kamailio", "kamailio.cfg");

/** Another build of the agent (a bundle .mjs, e.g. of the commit before a change) run as a third
 *  proxy, interleaved with the others: before/after figures from the same run. */
const BASELINE = process.env.BENCH_KAM_BASELINE;
/** RINGEDGE_* settings ("RINGEDGE_A=1,RINGEDGE_B=2") for the ringedge run and for the baseline run: e.g. this build against itself with overload control off. */
const settingsFrom = (list: string | undefined): Record<string, string> =>
  Object.fromEntries(
    (list ?? "")
      .split(",")
      .map((kv) => kv.trim())
      .filter((kv) => /^RINGEDGE_[A-Z0-9_]+=/.test(kv))
      .map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)]),
  );
const RINGEDGE_SETTINGS = settingsFrom(process.env.BENCH_KAM_SETTINGS);
const BASELINE_SETTINGS = settingsFrom(process.env.BENCH_KAM_BASELINE_SETTINGS);
/** Agent under node --cpu-prof; the profiles stay in the kept temp dir (read with bench/cpuprofile.ts). */
const CPU_PROF = process.env.BENCH_CPU_PROF === "1";

type ProxyName = "ringedge" | "kamailio" | "baseline";
const PROXIES: ProxyName[] = (["ringedge", "kamailio", ...(BASELINE !== undefined ? (["baseline"] as const) : [])] as const).filter(
  (p) => process.env.BENCH_KAM_ONLY === undefined || process.env.BENCH_KAM_ONLY.split(",").includes(p),
);
const LABEL: Record<ProxyName, string> = { ringedge: "ringedge", kamailio: "Kamailio 5.6", baseline: "ringedge (baseline)" };

function envNum(name: string, dflt: number): number {
  const v = Number(process.env[name]);
  return Number.isFinite(v) && v > 0 ? v : dflt;
}

// --- the two proxies -------------------------------------------------------------------------------

interface Proxy {
  name: ProxyName;
  port: number;
  /** The process whose tree's CPU is the proxy's. */
  pid: number;
  registered(): Promise<number>;
  /** ringedge only: the overload and memory sections of its status (why it refused what it refused; the JS heap against RSS). */
  status?(): Promise<{ overload?: unknown; memory?: { heapUsed?: number; heapTotal?: number } } | undefined>;
  output(): string;
  stop(): Promise<void>;
}

function ringedgeSite(phones: Phone[], callerPort: number): unknown {
  return {
    schema: "ringedge.site/1",
    version: 1,
    settings: { pickupCode: "*8", trunk: { host: CALLER_IP, port: callerPort, transport: "udp", allowedSources: [CALLER_IP] } },
    users: phones.map((p, i) => ({ id: p.user, extension: String(2001 + i), name: `Operator ${i + 1}`, availability: "available", callLimit: 0 })),
    devices: phones.map((p) => ({ id: `desk-${p.user}`, owner: p.user, kind: "physical", username: p.username, password: p.password })),
    groups: [{ id: "bench-sim", number: GROUP, name: "Bench ring all", strategy: "simultaneous", members: phones.map((p) => p.user), ringCount: 6, checkAvailability: false, noAnswer: { kind: "hangup", status: 480 } }],
  };
}

async function startRingedge(dir: string, phones: Phone[], callerPort: number, bundle?: string): Promise<Proxy> {
  const dataDir = path.join(dir, "data");
  fs.mkdirSync(dataDir, { recursive: true });
  const port = await freePort();
  const site = path.join(dir, "site.json");
  fs.writeFileSync(site, JSON.stringify(ringedgeSite(phones, callerPort)));
  const env = benchAgentEnv(dataDir, port, site, { ...(CPU_PROF ? { RINGEDGE_NODE_FLAGS: `--cpu-prof --cpu-prof-dir=${path.join(dir, "prof")}` } : {}), ...(bundle === undefined ? RINGEDGE_SETTINGS : BASELINE_SETTINGS) });
  // A baseline bundle runs with the flags bin/ringedge gives the shipped one.
  const agent = bundle === undefined ? start(BIN, ["run"], { cwd: ROOT, env }) : start(process.execPath, ["--max-semi-space-size=4", ...(env.RINGEDGE_NODE_FLAGS ?? "").split(" ").filter((a) => a !== ""), bundle, "run"], { cwd: ROOT, env });
  const sock = path.join(dataDir, "control.sock");
  await Promise.race([
    waitFor("ringedge control socket", async () => ((await socketAnswers(sock, 200)) ? true : undefined), 30_000),
    agent.exited.then((c) => Promise.reject(new Error(`ringedge exited with ${c}:\n${agent.output()}`))),
  ]);
  return {
    name: bundle === undefined ? "ringedge" : "baseline",
    port,
    pid: agent.proc.pid!,
    registered: async () => {
      const r = await callAgent(sock, "status");
      if (!r.ok) throw new Error(`status: ${r.error}`);
      return (r.result as { devices: { registered: number } }).devices.registered;
    },
    status: async () => {
      const r = await callAgent(sock, "status");
      return r.ok ? (r.result as { overload?: unknown; memory?: { heapUsed?: number; heapTotal?: number } }) : undefined;
    },
    output: () => agent.output(),
    stop: async () => void (await agent.stop("SIGTERM")),
  };
}

async function startKamailio(dir: string, phones: Phone[]): Promise<Proxy> {
  const run = path.join(dir, "run");
  fs.mkdirSync(run, { recursive: true });
  const port = await freePort();
  const ctl = path.join(run, "ctl.sock");
  const args = [
    "-f", KAMAILIO_CFG, "-DD", "-E", "-e",
    "-l", `udp:127.0.0.1:${port}`,
    "-Y", run, "-P", path.join(run, "kamailio.pid"),
    "-m", "256", "-M", "16",
    "-A", `GROUP_NUMBER="${GROUP}"`,
    "-A", `GROUP_MEMBERS="${phones.map((p) => p.username).join(",")}"`,
    "-A", `CALLER_IP="${CALLER_IP}"`,
    "-A", `CTL_SOCKET="unix:${ctl}"`,
  ];
  const k = start(KAMAILIO, args, { cwd: dir });
  const kamcmd = async (...cmd: string[]): Promise<string> => (await execFileP("kamcmd", ["-s", `unix:${ctl}`, ...cmd], { timeout: 5000 })).stdout;
  await Promise.race([
    waitFor("kamailio control socket", async () => ((await kamcmd("core.version").catch(() => "")) !== "" ? true : undefined), 20_000),
    k.exited.then((c) => Promise.reject(new Error(`kamailio exited with ${c}:\n${k.output()}`))),
  ]);
  return {
    name: "kamailio",
    port,
    pid: k.proc.pid!,
    // The AoRs in usrloc (its registered_users statistic lags behind the REGISTERs).
    registered: async () => (await kamcmd("ul.dump", "brief")).split("\n").filter((l) => /^\s*AoR: /.test(l)).length,
    output: () => k.output(),
    stop: async () => void (await k.stop("SIGTERM")),
  };
}

// --- one run ---------------------------------------------------------------------------------------

interface RunSpec {
  proxy: ProxyName;
  rate: number;
  capture: boolean;
  /**
   * sustained: one long run past the transactions' 32 s timers (D, J, L, M), where lingering
   * state peaks. split: a load run at a CPU rate with the proxy on one CPU and every SIPp
   * process on the other.
   */
  kind: "latency" | "load" | "sustained" | "split";
  /** Which round of the load runs (BENCH_KAM_REPEAT), from 0: each has a directory of its own. */
  round?: number;
}

interface RunResult {
  /** ringedge's overload section of its status after the run. */
  overload?: unknown;
  spec: RunSpec;
  calls: number;
  completed: number;
  refused503: number;
  failed: number;
  retransmissions: number;
  sippExitCode: number | null;
  achievedCallRate: number;
  goodput: number;
  cpuMs: number;
  cpuUsPerCall: number;
  /** The share of that CPU spent in the kernel (stime), %. */
  cpuKernelPct: number;
  /**
   * CPU of the load generators (the SIPp caller and the ten SIPp phones) during the run, % of one
   * CPU: on this 2-core box what they take the proxy cannot have (bench/README.md).
   */
  loadgenCpuPct: number;
  /** The proxy's CPU over the same wall time, % of one CPU: with loadgenCpuPct, how much of the box's 200 % the run used. */
  proxyCpuPct: number;
  /** Datagrams the kernel dropped at full receive buffers during the run: at the proxy's socket, the caller's, the phones' (all ten). */
  udpDrops: { proxy: number; caller: number; phones: number };
  /** ringedge's RSS when the caller finished (Kamailio's shared memory is fixed at start). */
  rssEndMB?: number;
  /** ringedge's JS heap in use and held by V8 at the same moment, MB (status memory). */
  heapUsedMB?: number;
  heapTotalMB?: number;
  firstFork: { p50Us: number; p99Us: number; maxUs: number; matched: number; invitesIn: number } | null;
  ringP50Ms: number;
}

/** 503s the caller received, from SIPp's per-message counts (-trace_counts). */
function refusedCount(dir: string): number {
  const f = fs.readdirSync(dir).find((n) => n.startsWith("caller-overload_") && n.endsWith("_counts.csv"));
  if (f === undefined) return 0;
  const lines = fs.readFileSync(path.join(dir, f), "utf8").trim().split("\n");
  const head = (lines[0] ?? "").split(";");
  const last = (lines[lines.length - 1] ?? "").split(";");
  const col = head.findIndex((h) => /^\d+_503_Recv$/.test(h));
  return col < 0 ? 0 : Number(last[col] ?? 0) || 0;
}

/** The first lines of the SIPp caller's error log (-trace_err): why calls failed. */
function sippErrors(dir: string): string {
  const f = fs.readdirSync(dir).find((n) => n.startsWith("caller-overload_") && n.endsWith("_errors.log"));
  if (f === undefined) return "(none logged)";
  return fs.readFileSync(path.join(dir, f), "utf8").split("\n").slice(0, 12).map((l) => l.slice(0, 300)).join("\n");
}

async function runOne(spec: RunSpec, workDir: string, attempt = 1): Promise<RunResult> {
  // A round's own directory (and a retry's): SIPp names its counts file after its pid, and a second
  // round's file beside the first one's would be read as the first's (the 503s counted for every round).
  const dir = path.join(workDir, `${spec.kind}-${spec.rate}-${spec.proxy}${spec.round ? `-round${spec.round + 1}` : ""}${attempt > 1 ? `-attempt${attempt}` : ""}`);
  fs.mkdirSync(dir, { recursive: true });
  const phones = phonesFor(PHONES);
  const callerPort = await freePort();
  // Split: this process on the load generators' CPU, so the proxy and the SIPp processes it
  // spawns start there; then the proxy's whole tree moves to the other CPU.
  if (spec.kind === "split") await pinCpus(process.pid, SPLIT_CPUS.loadgen);
  let proxy: Proxy;
  try {
    proxy = spec.proxy === "kamailio" ? await startKamailio(dir, phones) : await startRingedge(dir, phones, callerPort, spec.proxy === "baseline" ? BASELINE : undefined);
    if (spec.kind === "split") await pinCpus(proxy.pid, SPLIT_CPUS.proxy, true);
  } catch (err) {
    if (spec.kind === "split") await pinCpus(process.pid, SPLIT_CPUS.all);
    throw err;
  }
  let phoneProcs: Child[] = [];
  let cap: Capture | undefined;
  try {
    phoneProcs = await startPhones(dir, phones, proxy.port);
    await waitFor(`${spec.proxy}: phones registered`, async () => ((await proxy.registered()) >= PHONES ? true : undefined), 20_000);
    await sleep(300);
    // A call not done 5 s after its last message fails; SIPp stops 8 s after the last call starts.
    const callerOpts = { holdMs: HOLD_MS, scenario: "caller-overload.xml", tailS: 8, extraArgs: ["-recv_timeout", "5000", "-trace_counts", "-trace_err"] };
    const warm = await runCaller(path.join(dir, "warmup"), proxy.port, callerPort, GROUP, WARMUP.rate, WARMUP.calls, callerOpts);
    if (warm.failed > 0) console.log(`[${spec.proxy}@${spec.rate}] warm-up: ${warm.failed} failed calls`);
    if (spec.capture) cap = await startCapture(dir, proxy.port);
    const calls = Math.round(spec.rate * (spec.kind === "sustained" ? SUSTAIN_SECONDS : SECONDS));
    const phonesCpuMs = (): number => phoneProcs.reduce((sum, p) => sum + (p.proc.pid === undefined ? 0 : procSample(p.proc.pid).cpuMs), 0);
    const [cpu0, gen0, t0] = [treeCpu(proxy.pid), exitedChildrenCpuMs() + phonesCpuMs(), performance.now()];
    // Drops per socket, sampled while the run goes (the caller's socket is gone once it exits).
    const phonePorts = phoneProcs.map((p) => Number(p.proc.spawnargs[p.proc.spawnargs.indexOf("-p") + 1]));
    const drops = { proxy: 0, caller: 0, phones: 0 };
    const sampleDrops = (): void => {
      const d = udpDropsByPort();
      drops.proxy = Math.max(drops.proxy, d.get(proxy.port) ?? 0);
      drops.caller = Math.max(drops.caller, d.get(callerPort) ?? 0);
      drops.phones = Math.max(drops.phones, phonePorts.reduce((sum, p) => sum + (d.get(p) ?? 0), 0));
    };
    const dropsBefore = udpDropsByPort();
    const dropSampler = setInterval(sampleDrops, 250);
    const caller: CallerRun = await runCaller(dir, proxy.port, callerPort, GROUP, spec.rate, calls, callerOpts).finally(() => clearInterval(dropSampler));
    sampleDrops();
    // The proxy's and phones' sockets were open before the measured calls (warm-up): count only what is new.
    drops.proxy = Math.max(0, drops.proxy - (dropsBefore.get(proxy.port) ?? 0));
    drops.phones = Math.max(0, drops.phones - phonePorts.reduce((sum, p) => sum + (dropsBefore.get(p) ?? 0), 0));
    const [cpu1, gen1, t1] = [treeCpu(proxy.pid), exitedChildrenCpuMs() + phonesCpuMs(), performance.now()];
    const cpuMs = cpu1.userMs + cpu1.sysMs - cpu0.userMs - cpu0.sysMs;
    const sysMs = cpu1.sysMs - cpu0.sysMs;
    const rssEndMB = spec.proxy === "kamailio" ? undefined : procSample(proxy.pid).rssMB;
    const refused503 = refusedCount(dir);
    const completed = Math.max(0, caller.successful - refused503);
    const packets = cap === undefined ? undefined : await packetLatency(cap, proxy.port, callerPort);
    const ff = packets === undefined ? null : (() => {
      const s = summarize(packets.firstForkUs);
      return { p50Us: round(s.median, 1), p99Us: round(s.p99, 1), maxUs: round(s.max, 1), matched: packets.matched, invitesIn: packets.invitesIn };
    })();
    const status = proxy.status === undefined ? undefined : await proxy.status().catch(() => undefined);
    const overload = status?.overload;
    const mb = (bytes: number | undefined): number | undefined => (typeof bytes === "number" ? round(bytes / 1048576, 1) : undefined);
    const [heapUsedMB, heapTotalMB] = [mb(status?.memory?.heapUsed), mb(status?.memory?.heapTotal)];
    if (caller.failed > 0 || caller.exitCode !== 0) console.log(`[${spec.proxy}@${spec.rate}] SIPp exit ${caller.exitCode}, ${caller.failed} failed\n--- SIPp's errors (first lines) ---\n${sippErrors(dir)}\n--- proxy log tail ---\n${proxy.output().slice(-1500)}`);
    return {
      spec,
      calls,
      completed,
      refused503,
      failed: caller.failed,
      retransmissions: caller.retransmissions,
      sippExitCode: caller.exitCode,
      achievedCallRate: round(caller.callRate, 1),
      goodput: round(completed / (calls / spec.rate), 1),
      ...(rssEndMB !== undefined ? { rssEndMB: round(rssEndMB, 1) } : {}),
      ...(heapUsedMB !== undefined && heapTotalMB !== undefined ? { heapUsedMB, heapTotalMB } : {}),
      cpuMs,
      cpuUsPerCall: round((cpuMs * 1000) / Math.max(1, completed), 0),
      cpuKernelPct: cpuMs > 0 ? round((sysMs / cpuMs) * 100, 0) : 0,
      loadgenCpuPct: round(((gen1 - gen0) / Math.max(1, t1 - t0)) * 100, 0),
      proxyCpuPct: round((cpuMs / Math.max(1, t1 - t0)) * 100, 0),
      udpDrops: drops,
      firstFork: ff,
      ringP50Ms: summarize(caller.ringMs).median,
      ...(overload !== undefined ? { overload } : {}),
    };
  } finally {
    if (cap !== undefined && cap.child.proc.exitCode === null) await cap.child.stop("SIGINT");
    for (const p of phoneProcs) await p.stop("SIGKILL");
    await proxy.stop();
    // The proxy's log tail beside SIPp's files (kept with BENCH_KEEP=1): e.g. the agent's overload episodes and their causes.
    fs.writeFileSync(path.join(dir, "proxy.log"), proxy.output());
    if (spec.kind === "split") await pinCpus(process.pid, SPLIT_CPUS.all);
  }
}

// --- the plot --------------------------------------------------------------------------------------

const esc = (s: string): string => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

/**
 * Goodput against offered load as a small SVG line chart: one line per proxy, the ideal
 * (goodput = offered) dashed, 503s per second as a dotted line where there were any.
 */
export function goodputSvg(series: ReadonlyArray<{ name: string; color: string; points: ReadonlyArray<{ offered: number; goodput: number; refusedPerS: number }> }>, title: string): string {
  const W = 720, H = 400, L = 64, R = 200, T = 40, B = 52;
  const all = series.flatMap((s) => s.points);
  const maxX = Math.max(100, ...all.map((p) => p.offered));
  const step = maxX <= 500 ? 100 : 200;
  const top = Math.ceil(Math.max(maxX, ...all.map((p) => p.goodput)) / step) * step;
  const x = (v: number): number => L + (v / top) * (W - L - R);
  const y = (v: number): number => H - B - (v / top) * (H - T - B);
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${L}" y="22" font-size="14" font-weight="bold">${esc(title)}</text>`,
  ];
  for (let v = 0; v <= top; v += step) {
    out.push(`<line x1="${x(0)}" y1="${y(v)}" x2="${x(top)}" y2="${y(v)}" stroke="#ddd"/>`, `<text x="${L - 6}" y="${y(v) + 4}" text-anchor="end">${v}</text>`);
    out.push(`<line x1="${x(v)}" y1="${y(0)}" x2="${x(v)}" y2="${y(top)}" stroke="#eee"/>`, `<text x="${x(v)}" y="${H - B + 18}" text-anchor="middle">${v}</text>`);
  }
  out.push(
    `<line x1="${x(0)}" y1="${y(0)}" x2="${x(top)}" y2="${y(0)}" stroke="black"/>`,
    `<line x1="${x(0)}" y1="${y(0)}" x2="${x(0)}" y2="${y(top)}" stroke="black"/>`,
    `<text x="${(x(0) + x(top)) / 2}" y="${H - 12}" text-anchor="middle">offered calls/s</text>`,
    `<text transform="translate(16 ${(y(0) + y(top)) / 2}) rotate(-90)" text-anchor="middle">completed calls/s</text>`,
    `<line x1="${x(0)}" y1="${y(0)}" x2="${x(top)}" y2="${y(top)}" stroke="#999" stroke-dasharray="4 4"/>`,
  );
  const legend: Array<[string, string, string]> = [["offered (ideal)", "#999", "4 4"]];
  for (const s of series) {
    const pts = [...s.points].sort((a, b) => a.offered - b.offered);
    if (pts.length === 0) continue;
    out.push(`<polyline fill="none" stroke="${s.color}" stroke-width="2" points="${pts.map((p) => `${round(x(p.offered), 1)},${round(y(p.goodput), 1)}`).join(" ")}"/>`);
    for (const p of pts) out.push(`<circle cx="${round(x(p.offered), 1)}" cy="${round(y(p.goodput), 1)}" r="3" fill="${s.color}"><title>${esc(`${s.name}: ${p.offered}/s offered, ${p.goodput}/s completed, ${p.refusedPerS}/s refused (503)`)}</title></circle>`);
    legend.push([s.name, s.color, ""]);
    if (pts.some((p) => p.refusedPerS > 0)) {
      out.push(`<polyline fill="none" stroke="${s.color}" stroke-width="1.5" stroke-dasharray="1 3" points="${pts.map((p) => `${round(x(p.offered), 1)},${round(y(p.refusedPerS), 1)}`).join(" ")}"/>`);
      legend.push([`${s.name} 503/s`, s.color, "1 3"]);
    }
  }
  legend.forEach(([label, color, dash], i) => {
    const ly = T + 10 + i * 20;
    out.push(`<line x1="${W - R + 12}" y1="${ly}" x2="${W - R + 36}" y2="${ly}" stroke="${color}" stroke-width="2"${dash ? ` stroke-dasharray="${dash}"` : ""}/>`, `<text x="${W - R + 42}" y="${ly + 4}">${esc(label)}</text>`);
  });
  out.push("</svg>");
  return out.join("\n") + "\n";
}

// --- main ------------------------------------------------------------------------------------------

function specs(): RunSpec[] {
  const out: RunSpec[] = [];
  for (const proxy of PROXIES) out.push({ proxy, rate: LATENCY_RATE, capture: true, kind: "latency" });
  // Interleaved, the order rotating per rate so no proxy always runs on a box another just heated.
  for (let round = 0; round < REPEAT; round++) {
    RATES.forEach((rate, i) => {
      const order = PROXIES.map((_, k) => PROXIES[(k + i + round) % PROXIES.length]!);
      for (const proxy of order) out.push({ proxy, rate, capture: false, kind: "load", round });
    });
  }
  if (SPLIT) {
    for (let round = 0; round < REPEAT; round++) {
      CPU_RATES.forEach((rate, i) => {
        const order = PROXIES.map((_, k) => PROXIES[(k + i + round) % PROXIES.length]!);
        for (const proxy of order) out.push({ proxy, rate, capture: false, kind: "split", round });
      });
    }
  }
  if (SUSTAIN_SECONDS > 0) for (const proxy of PROXIES) out.push({ proxy, rate: SUSTAIN_RATE, capture: false, kind: "sustained" });
  return out;
}

const ratio = (a: number | undefined, b: number | undefined): number | null => (a !== undefined && b !== undefined && Number.isFinite(a) && Number.isFinite(b) && b > 0 ? round(a / b, 2) : null);

async function main(): Promise<number> {
  for (const tool of ["sipp", "tshark", KAMAILIO, "kamcmd"]) {
    const ok = await new Promise<boolean>((resolve) => spawn(tool, ["-v"], { stdio: "ignore" }).once("error", () => resolve(false)).once("close", () => resolve(true)));
    if (!ok) {
      console.error(`${tool} is not installed (make benchdeps)`);
      return 2;
    }
  }
  if (SPLIT) {
    // Affinity may be refused (a container's CPU set): then the split runs are skipped, said once.
    SPLIT = await pinCpus(process.pid, SPLIT_CPUS.all).then(() => true, (err: Error) => (console.log(`split-CPU runs skipped: ${err.message}`), false));
  }
  const m = machine();
  const kamailioVersion = PROXIES.includes("kamailio") ? /version: (\S+ \S+)/.exec((await execFileP(KAMAILIO, ["-v"])).stdout)?.[1] ?? "unknown" : null;
  const keep = process.env.BENCH_KEEP !== undefined || CPU_PROF;
  const workDir = benchWorkDir("ringedge-bench-kam-", keep);
  const results: RunResult[] = [];
  // A run whose proxy or phones did not come up (e.g. registrations not seen within 20 s) is tried
  // once more with fresh ones, then left out and listed: one bad start does not lose the others.
  const lost: Array<{ kind: RunSpec["kind"]; proxy: ProxyName; rate: number; round: number; error: string }> = [];
  for (const spec of specs()) {
    let r: RunResult | undefined;
    for (let attempt = 1; attempt <= 2 && r === undefined; attempt++) {
      try {
        r = await runOne(spec, workDir, attempt);
      } catch (err) {
        const error = err instanceof Error ? err.message : String(err);
        console.log(`[${spec.kind} ${spec.proxy}@${spec.rate}] run ${attempt === 1 ? "could not start; once more" : "could not start again; left out"}: ${error.slice(0, 300)}`);
        if (attempt === 2) lost.push({ kind: spec.kind, proxy: spec.proxy, rate: spec.rate, round: spec.round ?? 0, error: error.slice(0, 300) });
      }
    }
    if (r === undefined) continue;
    results.push(r);
    console.log(
      `[${spec.kind} ${spec.proxy}@${spec.rate}] ${r.completed}/${r.calls} completed, ${r.refused503} × 503, ${r.failed} failed; goodput ${r.goodput}/s; CPU ${fmt(r.cpuUsPerCall)} µs/call (${r.cpuKernelPct} % kernel); SIPp sent ${r.achievedCallRate} calls/s on ${r.loadgenCpuPct} % of a CPU; UDP drops proxy/caller/phones ${r.udpDrops.proxy}/${r.udpDrops.caller}/${r.udpDrops.phones}` +
        (r.firstFork ? `; first fork p50/p99 ${fmt(r.firstFork.p50Us)}/${fmt(r.firstFork.p99Us)} µs (${r.firstFork.matched}/${r.firstFork.invitesIn})` : ""),
    );
    const o = r.overload as { shed?: number; episodes?: number; byCause?: unknown; signals?: unknown } | undefined;
    if (o !== undefined && (o.shed ?? 0) > 0) console.log(`  ringedge overload: ${JSON.stringify(o).slice(0, 600)}`);
  }
  const runsOf = (proxy: ProxyName, kind: RunSpec["kind"], rate: number): RunResult[] => results.filter((r) => r.spec.proxy === proxy && r.spec.kind === kind && r.spec.rate === rate);
  // One run, or the median of the rounds (BENCH_KAM_REPEAT).
  const find = (proxy: ProxyName, kind: RunSpec["kind"], rate: number): RunResult | undefined => {
    const rs = runsOf(proxy, kind, rate);
    if (rs.length <= 1) return rs[0];
    const med = (f: (r: RunResult) => number): number => median(rs.map(f));
    return {
      ...rs[0]!,
      completed: med((r) => r.completed),
      refused503: med((r) => r.refused503),
      failed: med((r) => r.failed),
      retransmissions: med((r) => r.retransmissions),
      goodput: med((r) => r.goodput),
      cpuMs: med((r) => r.cpuMs),
      cpuUsPerCall: med((r) => r.cpuUsPerCall),
      cpuKernelPct: med((r) => r.cpuKernelPct),
      achievedCallRate: med((r) => r.achievedCallRate),
      loadgenCpuPct: med((r) => r.loadgenCpuPct),
      proxyCpuPct: med((r) => r.proxyCpuPct),
      sippExitCode: rs.every((r) => r.sippExitCode === 0) ? 0 : rs.find((r) => r.sippExitCode !== 0)!.sippExitCode,
    };
  };
  const cpu = CPU_RATES.map((rate) => {
    const [re, ka] = [find("ringedge", "load", rate), find("kamailio", "load", rate)];
    return { rate, ringedgeUsPerCall: re?.cpuUsPerCall ?? null, kamailioUsPerCall: ka?.cpuUsPerCall ?? null, ratio: ratio(re?.cpuUsPerCall, ka?.cpuUsPerCall) };
  });
  const cpuSplit = !SPLIT ? null : CPU_RATES.map((rate) => {
    const [re, ka] = [find("ringedge", "split", rate), find("kamailio", "split", rate)];
    return { rate, ringedgeUsPerCall: re?.cpuUsPerCall ?? null, kamailioUsPerCall: ka?.cpuUsPerCall ?? null, ratio: ratio(re?.cpuUsPerCall, ka?.cpuUsPerCall), ...(BASELINE !== undefined ? { baselineUsPerCall: find("baseline", "split", rate)?.cpuUsPerCall ?? null } : {}) };
  });
  const [reLat, kaLat] = [find("ringedge", "latency", LATENCY_RATE), find("kamailio", "latency", LATENCY_RATE)];
  const firstFork = {
    rate: LATENCY_RATE,
    ringedge: reLat?.firstFork ?? null,
    kamailio: kaLat?.firstFork ?? null,
    ratioP50: ratio(reLat?.firstFork?.p50Us, kaLat?.firstFork?.p50Us),
    ratioP99: ratio(reLat?.firstFork?.p99Us, kaLat?.firstFork?.p99Us),
  };
  const goodput = RATES.map((rate) => {
    const row: Record<string, unknown> = { offered: rate };
    for (const p of PROXIES) {
      const r = find(p, "load", rate);
      row[p] = r === undefined ? null : { completed: r.completed, calls: r.calls, goodput: r.goodput, refused503: r.refused503, failed: r.failed, retransmissions: r.retransmissions, cpuUsPerCall: r.cpuUsPerCall, cpuKernelPct: r.cpuKernelPct, callsSentPerS: r.achievedCallRate, loadgenCpuPct: r.loadgenCpuPct, proxyCpuPct: r.proxyCpuPct };
    }
    return row;
  });
  // Before/after a change, from the same run: this build against the baseline bundle.
  const beforeAfter = BASELINE === undefined ? null : {
    baseline: path.relative(ROOT, path.resolve(BASELINE)),
    cpuPerCall: RATES.map((rate) => {
      const [re, ba] = [find("ringedge", "load", rate), find("baseline", "load", rate)];
      return { rate, ringedgeUsPerCall: re?.cpuUsPerCall ?? null, baselineUsPerCall: ba?.cpuUsPerCall ?? null, ratio: ratio(re?.cpuUsPerCall, ba?.cpuUsPerCall) };
    }),
    firstForkP50: { ringedge: reLat?.firstFork?.p50Us ?? null, baseline: find("baseline", "latency", LATENCY_RATE)?.firstFork?.p50Us ?? null },
  };
  const cleanRun = (r: RunResult): boolean => r.failed === 0 && r.refused503 === 0 && r.completed === r.calls && r.sippExitCode === 0;
  /** Clean = every round of that proxy at that rate was clean. */
  const clean = (proxy: ProxyName, rate: number): boolean | null => {
    const rs = runsOf(proxy, "load", rate);
    return rs.length === 0 ? null : rs.every(cleanRun);
  };
  const cpuMet = cpu.filter((c) => c.ratio !== null);
  const splitMet = (cpuSplit ?? []).filter((c) => c.ratio !== null);
  const met = {
    cpuRatio: cpuMet.length === 0 ? null : cpuMet.every((c) => (c.ratio as number) <= TARGETS.cpuRatioMax),
    cpuRatioSplit: splitMet.length === 0 ? null : splitMet.every((c) => (c.ratio as number) <= TARGETS.cpuRatioMax),
    clean800Ringedge: clean("ringedge", TARGETS.cleanRate),
    clean800Kamailio: clean("kamailio", TARGETS.cleanRate),
  };
  const maxClean = (p: ProxyName): number => RATES.filter((rate) => clean(p, rate) === true).reduce((a, rate) => Math.max(a, rate), 0);

  console.log("");
  console.log(table(
    ["offered/s", ...PROXIES.flatMap((p) => [`${p} completed/s`, "503", "failed", "CPU µs/call", "sent/s", "SIPp CPU %", "proxy CPU %"])],
    RATES.map((rate) => [String(rate), ...PROXIES.flatMap((p) => {
      const r = find(p, "load", rate);
      return r === undefined ? ["—", "—", "—", "—", "—", "—", "—"] : [fmt(r.goodput, 1), fmt(r.refused503), fmt(r.failed), fmt(r.cpuUsPerCall), fmt(r.achievedCallRate, 1), fmt(r.loadgenCpuPct), fmt(r.proxyCpuPct)];
    })]),
  ));
  console.log("");
  for (const c of cpu) console.log(`CPU per call at ${c.rate}/s: ringedge ${fmt(c.ringedgeUsPerCall ?? NaN)} µs, Kamailio ${fmt(c.kamailioUsPerCall ?? NaN)} µs, ratio ${c.ratio ?? "n/a"} (target ≤ ${TARGETS.cpuRatioMax})`);
  for (const c of cpuSplit ?? []) console.log(`CPU per call at ${c.rate}/s, proxy and SIPp on separate CPUs: ringedge ${fmt(c.ringedgeUsPerCall ?? NaN)} µs, Kamailio ${fmt(c.kamailioUsPerCall ?? NaN)} µs, ratio ${c.ratio ?? "n/a"}${"baselineUsPerCall" in c ? `; baseline ${fmt(c.baselineUsPerCall ?? NaN)} µs` : ""}`);
  console.log(`first fork on the wire at ${LATENCY_RATE}/s p50/p99: ringedge ${fmt(firstFork.ringedge?.p50Us ?? NaN)}/${fmt(firstFork.ringedge?.p99Us ?? NaN)} µs, Kamailio ${fmt(firstFork.kamailio?.p50Us ?? NaN)}/${fmt(firstFork.kamailio?.p99Us ?? NaN)} µs, ratios ${firstFork.ratioP50 ?? "n/a"}/${firstFork.ratioP99 ?? "n/a"}`);
  for (const b of beforeAfter?.cpuPerCall ?? []) console.log(`before/after at ${b.rate}/s: baseline ${fmt(b.baselineUsPerCall ?? NaN)} µs/call, this build ${fmt(b.ringedgeUsPerCall ?? NaN)} µs/call, ratio ${b.ratio ?? "n/a"}`);
  const sustained = SUSTAIN_SECONDS > 0 ? {
    rate: SUSTAIN_RATE,
    seconds: SUSTAIN_SECONDS,
    ...Object.fromEntries(PROXIES.map((p) => {
      const r = find(p, "sustained", SUSTAIN_RATE);
      return [p, r === undefined ? null : { completed: r.completed, calls: r.calls, refused503: r.refused503, failed: r.failed, cpuUsPerCall: r.cpuUsPerCall, ...(r.rssEndMB !== undefined ? { rssEndMB: r.rssEndMB } : {}), ...(r.heapUsedMB !== undefined ? { heapUsedMB: r.heapUsedMB, heapTotalMB: r.heapTotalMB } : {}) }];
    })),
  } : null;
  for (const p of PROXIES) {
    const r = find(p, "sustained", SUSTAIN_RATE);
    if (r !== undefined) console.log(`sustained ${SUSTAIN_RATE}/s for ${SUSTAIN_SECONDS} s: ${p} ${r.completed}/${r.calls} completed, ${r.refused503} × 503, ${r.failed} failed, CPU ${fmt(r.cpuUsPerCall)} µs/call${r.rssEndMB !== undefined ? `, RSS ${fmt(r.rssEndMB, 1)} MB at the end` : ""}${r.heapUsedMB !== undefined ? ` (JS heap ${fmt(r.heapUsedMB, 1)} MB in use of ${fmt(r.heapTotalMB ?? NaN, 1)} MB held)` : ""}`);
  }
  for (const l of lost) console.log(`left out (could not start twice): ${l.kind} ${l.proxy}@${l.rate} round ${l.round + 1}: ${l.error}`);
  // Whether the clean rate was offered at all: on this 2-core box the SIPp caller and phones
  // share the CPUs with the proxy, and a caller that cannot keep up sends fewer calls than asked.
  const cleanDetail = (p: ProxyName): string => {
    const r = find(p, "load", TARGETS.cleanRate);
    return r === undefined ? "not run" : `${clean(p, TARGETS.cleanRate)} (SIPp sent ${fmt(r.achievedCallRate, 1)} of ${TARGETS.cleanRate} calls/s; proxy ${fmt(r.proxyCpuPct)} % + load generators ${fmt(r.loadgenCpuPct)} % of the box's 200 %)`;
  };
  console.log(`clean ${TARGETS.cleanRate}/s: ringedge ${cleanDetail("ringedge")}, Kamailio ${cleanDetail("kamailio")}`);

  const colors: Record<ProxyName, string> = { ringedge: "#d62728", kamailio: "#1f77b4", baseline: "#ff9896" };
  const svg = goodputSvg(
    PROXIES.map((p) => ({
      name: LABEL[p],
      color: colors[p],
      points: RATES.flatMap((rate) => {
        const r = find(p, "load", rate);
        return r === undefined ? [] : [{ offered: rate, goodput: r.goodput, refusedPerS: round(r.refused503 / SECONDS, 1) }];
      }),
    })),
    `Ring-all-10 goodput, ${SECONDS} s per point (${m.date.slice(0, 16)}Z, load ${m.loadAvg1m})`,
  );
  fs.mkdirSync(RESULTS_DIR, { recursive: true });
  const svgPath = path.join(RESULTS_DIR, "vs-kamailio.svg");
  fs.writeFileSync(`${svgPath}.tmp`, svg);
  fs.renameSync(`${svgPath}.tmp`, svgPath);

  const out = writeResult("vs-kamailio", {
    bench: "vs-kamailio",
    ...m,
    short: SHORT,
    secondsPerPoint: SECONDS,
    rounds: REPEAT,
    holdMs: HOLD_MS,
    phones: PHONES,
    kamailio: { version: kamailioVersion, config: "bench/kamailio/kamailio.cfg", udpWorkers: 2 },
    targets: TARGETS,
    met,
    cpuPerCall: cpu,
    cpuPerCallSplit: cpuSplit,
    firstFork,
    goodput,
    sustained,
    beforeAfter,
    maxCleanRate: Object.fromEntries(PROXIES.map((p) => [p, maxClean(p)])),
    plot: "bench/results/vs-kamailio.svg",
    lostRuns: lost,
    runs: results.map((r) => ({ ...r.spec, ...r, spec: undefined })),
  });
  console.log(`wrote ${out} and ${svgPath}`);
  if (keep) console.log(`kept ${workDir}`);
  else fs.rmSync(workDir, { recursive: true, force: true });
  return 0;
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === path.join(BENCH_DIR, "vs-kamailio.bench.ts")) {
  process.exitCode = await main().catch((err: unknown) => {
    console.error(`vs-kamailio bench crashed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    return 2;
  });
}
