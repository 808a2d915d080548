// A real Mosquitto for tests: config file in a temp dir, listener on a free loopback port, run
// in the foreground, killed with SIGKILL (crash) or SIGTERM (clean stop). Mosquitto has no
// command-line flags for listeners or anonymous access, so everything is in the file
// (mqtt-sync.md "Tests"). Running as root it drops to user mosquitto: the temp dir is made
// world-readable/writable so the persistence file and the ACL stay reachable.
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { freePort } from "./harness.ts";
import { tempDir } from "../tmpdir.ts";

export interface BrokerOptions {
  /** Reuse a port (restart after a kill on the same address). */
  port?: number;
  /** Reuse a directory (keeps the persistence file across restarts). */
  dir?: string;
  /** persistence true keeps retained messages across SIGTERM restarts (not SIGKILL). */
  persistence?: boolean;
  /** ACL file text; written next to the config. */
  acl?: string;
  /** Extra mosquitto.conf lines. */
  extra?: string[];
}

export interface Broker {
  port: number;
  dir: string;
  url: string;
  proc: ChildProcess;
  log(): string;
  /** Crash: SIGKILL, waits for exit. */
  kill(): Promise<void>;
  /** Clean stop: SIGTERM, waits for exit. */
  stop(): Promise<void>;
  /** Start again on the same port and directory. */
  restart(): Promise<Broker>;
}

export function mosquittoAvailable(): boolean {
  for (const p of (process.env.PATH ?? "").split(":").concat(["/usr/sbin", "/usr/local/sbin"])) {
    if (fs.existsSync(path.join(p, "mosquitto"))) return true;
  }
  return false;
}

function mosquittoBin(): string {
  for (const p of (process.env.PATH ?? "").split(":").concat(["/usr/sbin", "/usr/local/sbin"])) {
    const f = path.join(p, "mosquitto");
    if (fs.existsSync(f)) return f;
  }
  throw new Error("mosquitto not installed (make sysdeps installs it)");
}

/** Resolves when a TCP connect to 127.0.0.1:port succeeds (bounded). */
export async function waitForPort(port: number, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ host: "127.0.0.1", port });
      s.once("connect", () => {
        s.destroy();
        resolve(true);
      });
      s.once("error", () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > end) throw new Error(`mosquitto did not listen on ${port} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export async function startBroker(opts: BrokerOptions = {}): Promise<Broker> {
  const dir = opts.dir ?? tempDir("ringedge-mosq-");
  fs.chmodSync(dir, 0o777);
  const port = opts.port ?? (await freePort());
  const lines = [
    `listener ${port} 127.0.0.1`,
    "allow_anonymous true",
    // Nagle off on the broker side too (mqtt-sync.md: 40-90 ms per push otherwise).
    "set_tcp_nodelay true",
    `persistence ${opts.persistence ? "true" : "false"}`,
    `persistence_location ${dir}/`,
    "log_dest stdout",
    "log_type error",
    "log_type warning",
    "log_type notice",
    "max_queued_messages 100000",
  ];
  if (opts.acl !== undefined) {
    const acl = path.join(dir, "acl");
    fs.writeFileSync(acl, opts.acl);
    fs.chmodSync(acl, 0o644);
    lines.push(`acl_file ${acl}`);
  }
  lines.push(...(opts.extra ?? []));
  const conf = path.join(dir, "mosquitto.conf");
  fs.writeFileSync(conf, lines.join("\n") + "\n");
  fs.chmodSync(conf, 0o644);
  const proc = spawn(mosquittoBin(), ["-c", conf], { stdio: ["ignore", "pipe", "pipe"] });
  let log = "";
  proc.stdout!.on("data", (d) => (log += d));
  proc.stderr!.on("data", (d) => (log += d));
  const exited = new Promise<void>((resolve) => proc.on("exit", () => resolve()));
  const early = exited.then(() => {
    throw new Error(`mosquitto exited early: ${log}`);
  });
  await Promise.race([waitForPort(port), early]);
  early.catch(() => undefined);
  const broker: Broker = {
    port,
    dir,
    url: `mqtt://127.0.0.1:${port}`,
    proc,
    log: () => log,
    kill: async () => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGKILL");
      await exited;
    },
    stop: async () => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGTERM");
      const t = setTimeout(() => proc.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(t);
    },
    restart: async () => {
      await broker.kill();
      return startBroker({ ...opts, port, dir });
    },
  };
  return broker;
}
