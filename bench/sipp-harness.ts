// Shared by the call benches (calls, vs-kamailio): child processes (SIPp, tshark, the proxy under
// test), CPU and memory from /proc, SIPp phones that register and ring or answer, the SIPp
// caller, and first-fork latency from packet timestamps on loopback.
import { execFile, spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { agentEnv, freePort, sleep } from "../test/e2e/harness.ts";
import { BENCH_DIR } from "./lib.ts";

/** The caller's source address: the site's trunk (ringedge) or the allowed caller (Kamailio). */
export const CALLER_IP = "127.0.0.60";
/** The phones' address. */
export const PHONE_IP = "127.0.0.1";

/**
 * The environment of the agent under a SIPp call bench: the site file, UDP only, MD5 offered for
 * SIPp, the callers' and phones' addresses exempt from per-source quotas (one address places
 * every call, one registers every phone), and keep-alives rare (SIPp phones leave when a run ends).
 */
export function benchAgentEnv(dataDir: string, port: number, siteFile: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = agentEnv(dataDir, port, {
    RINGEDGE_LOG_LEVEL: "warn",
    RINGEDGE_SIP_TRANSPORTS: "udp",
    RINGEDGE_AUTH_ALGORITHMS: "MD5,SHA-256",
    RINGEDGE_GUARD_ALLOWLIST: `${PHONE_IP},${CALLER_IP}`,
    RINGEDGE_KEEPALIVE_INTERVAL_S: "600",
    RINGEDGE_SITE_FILE: siteFile,
  });
  // Overload control as shipped: the tests' harness turns its sampled signals off (a test box's
  // load is not the agent's), a bench measures the agent as it runs on a site.
  delete env.RINGEDGE_OVERLOAD_QUEUE_DELAY_MS;
  delete env.RINGEDGE_OVERLOAD_LOOP_BUSY_PCT;
  delete env.RINGEDGE_OVERLOAD_LAG_MS;
  return { ...env, ...extra };
}
export const SIPP = path.join(BENCH_DIR, "sipp");
/**
 * Send and receive buffer of every SIPp socket (-buff_size), bytes: with the default 208 KB a
 * starved caller dropped the 180s of a burst of calls (UDP drops at its socket, sampled by the
 * vs-kamailio bench), and those calls counted as the proxy's failures. The kernel caps it at
 * net.core.rmem_max / wmem_max.
 */
export const SIPP_SOCKET_BUFFER = 4 * 1024 * 1024;
/** USER_HZ of /proc/<pid>/stat. */
const CLK_TCK = 100;
const execFileP = promisify(execFile);

export interface CallerOptions {
  /** -d: how long the caller holds an answered call, ms. */
  holdMs: number;
  /** Scenario file under bench/sipp (default caller.xml). */
  scenario?: string;
  /** Seconds SIPp may run past the last call's start (default 25). */
  tailS?: number;
  extraArgs?: string[];
}

/** pid and every process below it (Kamailio's workers, a shell's children). */
export function processTree(pid: number): number[] {
  const parent = new Map<number, number>();
  for (const name of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${name}/stat`, "utf8");
      parent.set(Number(name), Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]));
    } catch {
      // gone meanwhile
    }
  }
  const tree = new Set([pid]);
  let grew = true;
  while (grew) {
    grew = false;
    for (const [p, pp] of parent) if (!tree.has(p) && tree.has(pp)) (tree.add(p), (grew = true));
  }
  return [...tree];
}

/**
 * Sets the CPU affinity of pid (every thread: -a) or of pid's whole process tree, with
 * util-linux taskset. Processes spawned afterwards inherit their parent's affinity.
 */
export async function pinCpus(pid: number, cpus: string, tree = false): Promise<void> {
  for (const p of tree ? processTree(pid) : [pid]) {
    await new Promise<void>((resolve, reject) =>
      execFile("taskset", ["-a", "-p", "-c", cpus, String(p)], (err) => (err === null ? resolve() : reject(new Error(`taskset ${cpus} ${p}: ${err.message}`)))),
    );
  }
}

/** utime and stime (ms), apart, of a process and every process below it (Kamailio forks its workers). */
export function treeCpu(pid: number): { userMs: number; sysMs: number } {
  const stats = new Map<number, { ppid: number; userMs: number; sysMs: number }>();
  for (const name of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    let stat: string;
    try {
      stat = fs.readFileSync(`/proc/${name}/stat`, "utf8");
    } catch {
      continue; // gone meanwhile
    }
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    stats.set(Number(name), { ppid: Number(rest[1]), userMs: (Number(rest[11]) * 1000) / CLK_TCK, sysMs: (Number(rest[12]) * 1000) / CLK_TCK });
  }
  const inTree = new Set([pid]);
  let grew = true;
  while (grew) {
    grew = false;
    for (const [p, s] of stats) if (!inTree.has(p) && inTree.has(s.ppid)) (inTree.add(p), (grew = true));
  }
  let userMs = 0;
  let sysMs = 0;
  for (const p of inTree) {
    userMs += stats.get(p)?.userMs ?? 0;
    sysMs += stats.get(p)?.sysMs ?? 0;
  }
  return { userMs, sysMs };
}

/**
 * CPU (utime + stime, ms) of this process's children that have exited and been waited for
 * (/proc/self/stat cutime and cstime): read before and after runCaller, the caller's own CPU,
 * which can no longer be read from its /proc entry once it is gone.
 */
export function exitedChildrenCpuMs(): number {
  const stat = fs.readFileSync("/proc/self/stat", "utf8");
  const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return ((Number(rest[13]) + Number(rest[14])) * 1000) / CLK_TCK;
}

/**
 * Datagrams the kernel dropped at each local UDP port since its socket opened (the `drops` column
 * of /proc/net/udp and udp6, summed over the sockets on a port): a full receive buffer, which
 * neither the proxy's nor SIPp's own counters see. Read while the sockets are open.
 */
export function udpDropsByPort(): Map<number, number> {
  const out = new Map<number, number>();
  for (const file of ["/proc/net/udp", "/proc/net/udp6"]) {
    let text: string;
    try {
      text = fs.readFileSync(file, "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 13) continue;
      const port = parseInt(f[1]!.slice(f[1]!.lastIndexOf(":") + 1), 16);
      const drops = Number(f[f.length - 1]);
      if (Number.isFinite(port) && Number.isFinite(drops)) out.set(port, (out.get(port) ?? 0) + drops);
    }
  }
  return out;
}

export function procSample(pid: number): { rssMB: number; hwmMB: number; cpuMs: number } {
  const status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? NaN);
  const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return { rssMB: kb("VmRSS") / 1024, hwmMB: kb("VmHWM") / 1024, cpuMs: ((Number(rest[11]) + Number(rest[12])) * 1000) / CLK_TCK };
}

export interface Child {
  proc: ChildProcess;
  output(): string;
  exited: Promise<number | null>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

const children = new Set<ChildProcess>();
process.once("exit", () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
});

export function start(cmd: string, args: string[], opts: { cwd: string; env?: NodeJS.ProcessEnv }): Child {
  const proc = spawn(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ["ignore", "pipe", "pipe"] });
  children.add(proc);
  let out = "";
  const keep = (d: string): void => {
    out = (out + d).slice(-60_000);
  };
  proc.stdout!.setEncoding("utf8").on("data", keep);
  proc.stderr!.setEncoding("utf8").on("data", keep);
  const exited = new Promise<number | null>((resolve) => {
    proc.once("error", (e) => {
      keep(String(e));
      resolve(-1);
    });
    proc.once("close", (c) => {
      children.delete(proc);
      resolve(c);
    });
  });
  return {
    proc,
    output: () => out,
    exited,
    stop: async (signal = "SIGTERM") => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      const t = setTimeout(() => proc.kill("SIGKILL"), 8000);
      const c = await exited;
      clearTimeout(t);
      return c;
    },
  };
}

export async function waitFor<T>(what: string, fn: () => Promise<T | undefined> | T | undefined, timeoutMs: number, stepMs = 100): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await Promise.resolve(fn()).catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`${what} not reached within ${timeoutMs} ms`);
    await sleep(stepMs);
  }
}

// --- site file -----------------------------------------------------------------------------------

export interface Phone {
  user: string;
  username: string;
  password: string;
}

/** N operators, one desk phone each; "answer-1" is the only phone that answers. */
export function phonesFor(n: number): Phone[] {
  const out: Phone[] = [];
  for (let i = 1; i <= n; i++) {
    // The simultaneous group rings its first 10 members (the cap); the answerer is the 10th.
    const username = i === Math.min(10, n) ? "answer-1" : `ring-${String(i).padStart(2, "0")}`;
    out.push({ user: `op-${String(i).padStart(2, "0")}`, username, password: `bench-${username}-pw` });
  }
  return out;
}

/**
 * The phones that can ring (the first 10: the simultaneous group's cap) run one SIPp process
 * each, ringing (phone-ring.xml) or answering (phone-answer.xml); the rest only register,
 * together in one process. Resolves once every process is started (registration is awaited
 * through the agent's status).
 */
export async function startPhones(dir: string, phones: Phone[], agentPort: number): Promise<Child[]> {
  const procs: Child[] = [];
  const launch = async (name: string, group: Phone[], ooc: string): Promise<void> => {
    const csv = path.join(dir, `${name}.csv`);
    fs.writeFileSync(csv, ["SEQUENTIAL", ...group.map((p) => `${p.username};${p.password}`)].join("\n") + "\n");
    const port = await freePort();
    procs.push(
      start("sipp", [
        "-sf", path.join(SIPP, "phone-register.xml"), "-oocsf", path.join(SIPP, ooc),
        "-inf", csv, "-i", PHONE_IP, "-p", String(port),
        "-m", String(group.length), "-r", "200", "-d", "3600000", "-aa", "-nd",
        "-buff_size", String(SIPP_SOCKET_BUFFER),
        `127.0.0.1:${agentPort}`,
      ], { cwd: dir }),
    );
  };
  const ringing = phones.slice(0, 10);
  for (const p of ringing) await launch(p.username, [p], p.username === "answer-1" ? "phone-answer.xml" : "phone-ring.xml");
  if (phones.length > ringing.length) await launch("idle-phones", phones.slice(ringing.length), "phone-ring.xml");
  return procs;
}

// --- tshark --------------------------------------------------------------------------------------

export interface Capture {
  file: string;
  child: Child;
}

export async function startCapture(dir: string, agentPort: number): Promise<Capture> {
  const file = path.join(dir, "invites.pcapng");
  // Kernel-side filter: only UDP datagrams to/from the agent whose payload starts "INVI".
  const filter = `udp port ${agentPort}` + (process.env.BENCH_CAPTURE_ALL === "1" ? "" : " and udp[8:4] = 0x494e5649");
  const child = start("tshark", ["-i", "lo", "-f", filter, "-w", file, "-q"], { cwd: dir });
  await waitFor("tshark capturing", () => (/Capturing on/.test(child.output()) ? true : child.proc.exitCode !== null ? Promise.reject(new Error(child.output())) : undefined), 15_000, 50);
  return { file, child };
}

export interface PacketLatency {
  invitesIn: number;
  matched: number;
  firstForkUs: number[];
}

/** INVITE in (caller → agent) against the first INVITE out (agent → phones), by Call-ID. */
export async function packetLatency(cap: Capture, agentPort: number, callerPort: number): Promise<PacketLatency> {
  await sleep(300); // let dumpcap flush the last packets
  await cap.child.stop("SIGINT");
  const { stdout } = await execFileP("tshark", ["-r", cap.file, "-d", `udp.port==${agentPort},sip`, "-T", "fields", "-E", "separator=;", "-e", "frame.time_epoch", "-e", "udp.srcport", "-e", "udp.dstport", "-e", "sip.Method", "-e", "sip.Call-ID"], { maxBuffer: 512 * 1024 * 1024, timeout: 60_000 });
  const inAt = new Map<string, number>();
  const outAt = new Map<string, number>();
  for (const line of stdout.split("\n")) {
    const [t, sport, dport, method, callId] = line.split(";");
    if (method !== "INVITE" || callId === undefined || callId === "" || t === undefined) continue;
    // µs from the epoch string without losing the nanoseconds to float rounding.
    const [sec, frac = ""] = t.split(".");
    const us = Number(sec) * 1e6 + Number((frac + "000000").slice(0, 6));
    if (Number(dport) === agentPort && Number(sport) === callerPort) {
      if (!inAt.has(callId)) inAt.set(callId, us);
    } else if (Number(sport) === agentPort && Number(dport) !== callerPort && !outAt.has(callId)) outAt.set(callId, us);
  }
  const firstForkUs: number[] = [];
  for (const [id, tin] of inAt) {
    const tout = outAt.get(id);
    if (tout !== undefined) firstForkUs.push(tout - tin);
  }
  return { invitesIn: inAt.size, matched: firstForkUs.length, firstForkUs };
}

// --- SIPp ----------------------------------------------------------------------------------------

export interface CallerRun {
  exitCode: number | null;
  calls: number;
  successful: number;
  failed: number;
  retransmissions: number;
  /** SIPp's cumulative call rate (calls started per second). */
  callRate: number;
  wallMs: number;
  ringMs: number[];
  tail: string;
}

export function sippDurationMs(s: string): number {
  const m = /(\d+):(\d+):(\d+):(\d+)/.exec(s);
  return m ? ((Number(m[1]) * 60 + Number(m[2])) * 60 + Number(m[3])) * 1000 + Number(m[4]) / 1000 : NaN;
}

export async function runCaller(dir: string, agentPort: number, callerPort: number, service: string, rate: number, calls: number, opts: CallerOptions): Promise<CallerRun> {
  fs.mkdirSync(dir, { recursive: true });
  const stat = path.join(dir, "caller-stat.csv");
  const timeoutS = Math.ceil(calls / rate) + (opts.tailS ?? 25);
  const args = [
    "-sf", path.join(SIPP, opts.scenario ?? "caller.xml"),
    "-s", service,
    "-i", CALLER_IP, "-p", String(callerPort),
    "-r", String(rate), "-rp", "1000", "-m", String(calls), "-l", String(Math.max(200, rate * 4)),
    "-buff_size", String(SIPP_SOCKET_BUFFER),
    "-d", String(opts.holdMs),
    ...(opts.extraArgs ?? []),
    "-timeout", String(timeoutS), "-nd",
    "-trace_stat", "-stf", stat, "-fd", "1", // a row a second: counts survive a killed SIPp
    "-trace_rtt", "-rtt_freq", "1",
    `127.0.0.1:${agentPort}`,
  ];
  const t0 = process.hrtime.bigint();
  const c = start("sipp", args, { cwd: dir });
  const killer = setTimeout(() => c.proc.kill("SIGKILL"), (timeoutS + 10) * 1000);
  const exitCode = await c.exited;
  clearTimeout(killer);
  const wallMs = Number(process.hrtime.bigint() - t0) / 1e6;
  const out = c.output();
  const cum = (name: string): number => Number(new RegExp(`${name}\\s*\\|\\s*\\d+\\s*\\|\\s*(\\d+)`).exec(out)?.[1] ?? NaN);
  let successful = cum("Successful call");
  let failed = cum("Failed call");
  let retransmissions = NaN;
  let callRate = NaN;
  if (fs.existsSync(stat)) {
    const lines = fs.readFileSync(stat, "utf8").trim().split("\n");
    const head = (lines[0] ?? "").split(";");
    const last = (lines[lines.length - 1] ?? "").split(";");
    const col = (name: string): string | undefined => last[head.indexOf(name)];
    retransmissions = Number(col("Retransmissions(C)") ?? NaN);
    callRate = Number(col("CallRate(C)") ?? NaN);
    if (!Number.isFinite(successful)) successful = Number(col("SuccessfulCall(C)") ?? NaN);
    if (!Number.isFinite(failed)) failed = Number(col("FailedCall(C)") ?? NaN);
    // The cumulative rate counts from SIPp's start to the last row: use the elapsed generation time.
    const elapsed = sippDurationMs(col("ElapsedTime(C)") ?? "");
    if (!Number.isFinite(callRate) && Number.isFinite(elapsed)) callRate = ((successful + failed) / elapsed) * 1000;
  }
  // SIPp killed (no final screen, or a stat file lagging behind): unfinished calls count as failed.
  if (!Number.isFinite(successful)) successful = 0;
  if (!Number.isFinite(failed) || exitCode === null) failed = Math.max(Number.isFinite(failed) ? failed : 0, calls - successful);
  const ringMs: number[] = [];
  for (const f of fs.readdirSync(dir).filter((n) => n.startsWith("caller_") && n.endsWith("_rtt.csv"))) {
    for (const line of fs.readFileSync(path.join(dir, f), "utf8").split("\n")) {
      const [, ms, rtd] = line.trim().split(";");
      const v = Number(ms);
      if (rtd === "ring" && ms !== undefined && ms !== "" && Number.isFinite(v)) ringMs.push(v);
    }
  }
  return { exitCode, calls, successful, failed, retransmissions, callRate, wallMs, ringMs, tail: out.slice(-3000) };
}
