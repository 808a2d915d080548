// End-to-end harness: runs the real agent as a child process on free loopback ports with a
// temporary data directory, and drives real peers (SIPp) against it. Everything is bounded
// in time; every process started here is killed when the test ends.
import { spawn, type ChildProcess } from "node:child_process";
import dgram from "node:dgram";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { tempDir } from "../tmpdir.ts";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const SIPP_DIR = path.join(ROOT, "test/sipp");
const BIN = path.join(ROOT, "bin/ringedge.js");

/**
 * Upper bounds for a child process to start and answer. They are deadlines, not waits: on an
 * idle machine the agent starts in about a second, but with the suite's files running side by
 * side on two busy cores a node + tsx start-up has been seen to take over 15 s, and a bound
 * that short fails a test that is not broken.
 */
export const START_TIMEOUT_MS = 60_000;
export const CLI_TIMEOUT_MS = 60_000;

/** A port free for both UDP and TCP on 127.0.0.1 (SIP listens on both). */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const port = await new Promise<number>((resolve, reject) => {
      const s = net.createServer();
      s.once("error", reject);
      s.listen(0, "127.0.0.1", () => {
        const p = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(p));
      });
    });
    const udpFree = await new Promise<boolean>((resolve) => {
      const u = dgram.createSocket("udp4");
      u.once("error", () => resolve(false));
      u.bind(port, "127.0.0.1", () => u.close(() => resolve(true)));
    });
    if (udpFree) return port;
  }
  throw new Error("no free port found");
}

// Temporary folders (the agent's data directory among them) go when the test process ends.
export { tempDir, removeTempDir } from "../tmpdir.ts";

export interface RunningAgent {
  port: number;
  dataDir: string;
  proc: ChildProcess;
  /** Everything the agent logged so far. */
  log(): string;
  /** Resolves when a log line matches (bounded). */
  waitForLog(re: RegExp, timeoutMs?: number): Promise<string>;
  /** Run the ringedge CLI against this agent's data directory. */
  cli(args: string[], timeoutMs?: number): Promise<{ code: number; stdout: string; stderr: string }>;
  stop(): Promise<number | null>;
  kill(): Promise<void>;
}

export interface AgentOptions {
  dataDir?: string;
  port?: number;
  env?: Record<string, string>;
  /** Run the agent as this user (the test runs as root): an unprivileged agent as the unit has it. */
  user?: { uid: number; gid: number };
}

export function agentEnv(dataDir: string, port: number, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith("RINGEDGE_")) delete env[k];
  return {
    ...env,
    RINGEDGE_DATA_DIR: dataDir,
    RINGEDGE_SIP_LISTEN: `127.0.0.1:${port}`,
    RINGEDGE_HTTP_LISTEN: "127.0.0.1:0",
    RINGEDGE_LOG_LEVEL: "debug",
    // SIGTERM drains calls first (firmware-hooks/README.md); keep stop() quick for tests.
    RINGEDGE_DRAIN_TIMEOUT_S: "3",
    // Overload control's sampled signals (the queue delay, the loop's busy share and lag) measure
    // the shared test box's load as much as the agent's: with a dozen processes on two CPUs an
    // agent at a modest load waits for a CPU for tens of ms at a time, reads as saturated and
    // would refuse phones' new requests at random. Off here (the queue delay is still measured
    // and reported); the counts stay on (test/e2e/overload.test.ts). The sampled law is
    // unit-tested, the probes with a real socket (test/unit/sip-queue-probe.test.ts), and the
    // whole under real overload is the vs-kamailio bench's (bench/README.md).
    RINGEDGE_OVERLOAD_QUEUE_DELAY_MS: "0",
    RINGEDGE_OVERLOAD_LOOP_BUSY_PCT: "0",
    RINGEDGE_OVERLOAD_LAG_MS: "0",
    ...extra,
  };
}

export interface ProgramResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a program from the repository root with the given stdin, killed (and the promise rejected) after timeoutMs. */
export function runProgram(cmd: string, args: string[], env: NodeJS.ProcessEnv, opts: { stdin?: string; timeoutMs?: number } = {}): Promise<ProgramResult> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { env, cwd: ROOT, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    p.stdout.on("data", (d) => (stdout += d));
    p.stderr.on("data", (d) => (stderr += d));
    p.stdin.on("error", () => undefined); // a program that exits without reading its input
    p.stdin.end(opts.stdin ?? "");
    const t = setTimeout(() => {
      p.kill("SIGKILL");
      reject(new Error(`${path.basename(cmd)} ${args.join(" ")} timed out; stdout: ${stdout} stderr: ${stderr}`));
    }, opts.timeoutMs ?? CLI_TIMEOUT_MS);
    p.on("close", (code) => {
      clearTimeout(t);
      resolve({ code: code ?? -1, stdout, stderr });
    });
  });
}

/** The ringedge CLI from the sources (bin/ringedge.js). */
export function runCli(args: string[], env: NodeJS.ProcessEnv, timeoutMs = CLI_TIMEOUT_MS): Promise<ProgramResult> {
  return runProgram(process.execPath, [BIN, ...args], env, { timeoutMs });
}

// --- no secret in any log ------------------------------------------------------------------

/** Passwords the tests give phones and installers: none may ever appear in an agent's log. */
const testSecrets = new Set<string>();

/** Tells the harness a value is a secret (a SIP or provisioning password a test hands out). */
export function noteSecret(value: string): void {
  if (value.length >= 6) testSecrets.add(value);
}

/** What must never be logged whatever the level: digest responses and whole digest headers. */
const SECRET_SHAPES: Array<[string, RegExp]> = [
  ["a digest response value", /\bresponse\s*=\s*"?[0-9a-f]{32,}/i],
  ["a whole Authorization header", /\b(?:proxy-)?authorization\s*[:=]\s*"?digest\s+\w+=/i],
];

/**
 * Every agent log the e2e tests capture is checked when its agent stops: across the whole
 * suite, no SIP password, provisioning secret or digest header may appear (issue 15).
 */
export function assertNoSecrets(log: string): void {
  const found: string[] = [];
  for (const v of testSecrets) if (log.includes(v)) found.push(`the password ${v.slice(0, 3)}…`);
  for (const [what, re] of SECRET_SHAPES) {
    const m = re.exec(log);
    if (m) found.push(`${what} (${m[0].slice(0, 24)}…)`);
  }
  if (found.length > 0) throw new Error(`the agent logged secrets: ${found.join(", ")}`);
}

/** What `bin/ringedge.js` loads at run time: the program, its data and its packages. */
const RUNTIME_PARTS = ["bin", "agent", "provisioning", "device-profiles", "contract", "audio", "package.json", "tsconfig.json", "node_modules"];
let readableCopy: string | undefined;

/**
 * The agent installed where another user can read it, as an appliance has it (/opt/ringedge):
 * a copy of what it loads in a world-readable folder, made once per test process. A clone may
 * sit below a folder only its owner can enter (mktemp -d makes them 0700), and the unit's
 * User= could not even load the program from there.
 */
export function readableInstall(): string {
  if (readableCopy !== undefined) return readableCopy;
  const dir = tempDir("ringedge-install-");
  fs.chmodSync(dir, 0o755);
  for (let d = path.dirname(dir); ; d = path.dirname(d)) {
    if ((fs.statSync(d).mode & 0o001) === 0) throw new Error(`${d} cannot be entered by other users: point TMPDIR at a folder they can reach`);
    if (d === path.dirname(d)) break;
  }
  for (const part of RUNTIME_PARTS) fs.cpSync(path.join(ROOT, part), path.join(dir, part), { recursive: true, dereference: true });
  readableCopy = dir;
  return dir;
}

export async function startAgent(opts: AgentOptions = {}): Promise<RunningAgent> {
  const dataDir = opts.dataDir ?? tempDir();
  const port = opts.port ?? (await freePort());
  const env = agentEnv(dataDir, port, opts.env);
  // Another user runs the installed copy (the clone may be unreadable to it); root runs the clone.
  const home = opts.user !== undefined ? readableInstall() : ROOT;
  const proc = spawn(process.execPath, [path.join(home, "bin/ringedge.js"), "run"], { env, cwd: home, stdio: ["ignore", "ignore", "pipe"], ...(opts.user ?? {}) });
  let log = "";
  const waiters: Array<{ re: RegExp; resolve: (l: string) => void }> = [];
  proc.stderr!.setEncoding("utf8");
  proc.stderr!.on("data", (chunk: string) => {
    log += chunk;
    for (const w of [...waiters]) {
      const m = log.split("\n").find((l) => w.re.test(l));
      if (m) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(m);
      }
    }
  });
  const exited = new Promise<number | null>((resolve) => proc.on("exit", (code) => resolve(code)));
  const waitForLog = (re: RegExp, timeoutMs = 10_000): Promise<string> => {
    const hit = log.split("\n").find((l) => re.test(l));
    if (hit) return Promise.resolve(hit);
    return new Promise((resolve, reject) => {
      const w = { re, resolve: (l: string) => (clearTimeout(t), resolve(l)) };
      const t = setTimeout(() => {
        waiters.splice(waiters.indexOf(w), 1);
        reject(new Error(`agent log never matched ${re} within ${timeoutMs} ms; log:\n${log.slice(-3000)}`));
      }, timeoutMs);
      waiters.push(w);
    });
  };
  const started = waitForLog(/ringedge started/, START_TIMEOUT_MS);
  const early = exited.then((code) => {
    throw new Error(`agent exited early with code ${code}; log:\n${log}`);
  });
  early.catch(() => undefined);
  try {
    await Promise.race([started, early]);
  } catch (err) {
    // An agent that did not start in time must not outlive its test (it would keep the test
    // process, and so the whole run, waiting for the per-file timeout).
    if (proc.exitCode === null) proc.kill("SIGKILL");
    throw err;
  }
  return {
    port,
    dataDir,
    proc,
    log: () => log,
    waitForLog,
    cli: (args, timeoutMs) => runCli(args, env, timeoutMs),
    stop: async () => {
      if (proc.exitCode === null) proc.kill("SIGTERM");
      const t = setTimeout(() => proc.kill("SIGKILL"), 10_000);
      const code = await exited;
      clearTimeout(t);
      assertNoSecrets(log);
      return code;
    },
    kill: async () => {
      if (proc.exitCode === null) proc.kill("SIGKILL");
      await exited;
      assertNoSecrets(log);
    },
  };
}

export interface SippResult {
  code: number | null;
  stdout: string;
  stderr: string;
  /** Parsed from -trace_stat's final CSV row where requested. */
  successful?: number;
  failed?: number;
}

/**
 * Run SIPp against 127.0.0.1:port. Returns its exit code (0 = every call succeeded,
 * 1 = some failed; RFC: sipp(1)). Killed after timeoutMs.
 */
export function runSipp(args: string[], timeoutMs = 30_000): Promise<SippResult> & { proc: ChildProcess } {
  const proc = spawn("sipp", args, { cwd: SIPP_DIR, stdio: ["ignore", "pipe", "pipe"] });
  const promise = new Promise<SippResult>((resolve) => {
    let stdout = "";
    let stderr = "";
    proc.stdout!.on("data", (d) => (stdout += d));
    proc.stderr!.on("data", (d) => (stderr += d));
    const t = setTimeout(() => proc.kill("SIGKILL"), timeoutMs);
    proc.on("close", (code) => {
      clearTimeout(t);
      const succ = /Successful call\s*\|\s*\d+\s*\|\s*(\d+)/.exec(stdout);
      const fail = /Failed call\s*\|\s*\d+\s*\|\s*(\d+)/.exec(stdout);
      resolve({ code, stdout, stderr, ...(succ ? { successful: Number(succ[1]) } : {}), ...(fail ? { failed: Number(fail[1]) } : {}) });
    });
  }) as Promise<SippResult> & { proc: ChildProcess };
  promise.proc = proc;
  return promise;
}

/** Write a SIPp injection CSV (SEQUENTIAL) of username;password rows. */
export function writeUsersCsv(dir: string, users: Array<[string, string]>): string {
  const file = path.join(dir, `users-${process.pid}-${Math.random().toString(36).slice(2)}.csv`);
  fs.writeFileSync(file, ["SEQUENTIAL", ...users.map(([u, p]) => `${u};${p}`)].join("\n") + "\n");
  return file;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Poll until fn returns a truthy value (bounded). */
export async function until<T>(fn: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 10_000, stepMs = 100): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`condition not met within ${timeoutMs} ms`);
    await sleep(stepMs);
  }
}

/**
 * Put devices into a data directory's store before the agent starts: one store write instead
 * of one CLI process per device (fast enough for tens of phones).
 */
export async function seedDevices(dataDir: string, users: Array<[string, string]>): Promise<void> {
  const { Store } = await import("../../agent/store/store.ts");
  const store = await Store.open(dataDir);
  try {
    for (const [username, password] of users) {
      const r = store.addDevice({ username, password, kind: "physical" });
      if (!r.ok) throw new Error(`seedDevices: ${username}: ${r.error.message}`);
    }
    await store.flush();
  } finally {
    await store.close();
  }
}
