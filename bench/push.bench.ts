// Console push → applied ack through the whole running agent, as a site has it: the shipped
// bundle (dist/ringedge.mjs, started by bin/ringedge) connected to a real Mosquitto on loopback,
// a console client publishing a 500-user / 600-phone / 100-group site (~160 KB) and timing the
// ack. Unlike bench/mqtt.bench.ts (the sync, site and store code in-process), this includes
// everything the agent does on a push: the MQTT client, validation, the store write, the
// registrar and provisioning updates, events and the event loop it shares with SIP.
//   - the first push after start-up (ajv's schema compilation, if any, lands here);
//   - PUSHES pushes after it, each a new version: p50/p99, and agent CPU per push from
//     /proc/<pid>/stat (user + system ticks over the run).
// Run: node --import tsx bench/push.bench.ts   (figures in bench/results/push.json)
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { ConsoleClient } from "../agent/sync/console-cli.ts";
import { agentEnv, freePort, ROOT, tempDir } from "../test/e2e/harness.ts";
import { startBroker } from "../test/e2e/mosquitto.ts";
import { desiredEnvelope, siteSnapshot } from "../test/e2e/mqtt-fixtures.ts";
import { fmt, machine, round, summarize, table, writeResult } from "./lib.ts";

const PUSHES = Number(process.env.BENCH_PUSHES ?? 60);
const BIG = { users: 500, devices: 600, groups: 100 };
const SITE = "bench-push";
const TICK_MS = 1000 / 100; // USER_HZ is 100 on Linux

function cpuMs(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) * TICK_MS; // utime, stime (fields 14, 15)
}

function rssMB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) / 1024 : NaN;
}

async function main(): Promise<void> {
  if (!fs.existsSync(path.join(ROOT, "dist", "ringedge.mjs"))) throw new Error("dist/ringedge.mjs is missing: run make build (make bench does)");
  const broker = await startBroker();
  const dataDir = tempDir("ringedge-bench-push-");
  const env = agentEnv(dataDir, await freePort(), { RINGEDGE_LOG_LEVEL: "warn", RINGEDGE_MQTT_URL: broker.url, RINGEDGE_SITE_ID: SITE });
  // BENCH_CPU_PROF=<dir>: the agent runs with --cpu-prof (the profile is written at its clean exit).
  const prof = process.env.BENCH_CPU_PROF;
  if (prof) env.RINGEDGE_NODE_FLAGS = `--cpu-prof --cpu-prof-dir=${prof}`;
  // BENCH_RINGEDGE=<bin/ringedge of another tree>: run that build instead (a baseline for a
  // before/after comparison interleaved in one session).
  const bin = process.env.BENCH_RINGEDGE ?? path.join(ROOT, "bin", "ringedge");
  const agent = spawn(bin, ["run"], { env, cwd: ROOT, stdio: ["ignore", "ignore", "pipe"] });
  let agentLog = "";
  agent.stderr.setEncoding("utf8").on("data", (d: string) => (agentLog = (agentLog + d).slice(-20_000)));
  const killAgent = (): void => {
    if (agent.exitCode === null && agent.signalCode === null) agent.kill("SIGKILL");
  };
  process.once("exit", killAgent);
  try {
    const consoleC = await ConsoleClient.connect({ url: broker.url, consoleId: "bench-console" });
    // The agent is up and linked once it has reported (its retained `reported` state).
    const t0 = Date.now();
    while ((await consoleC.reported(SITE, 200)) === undefined) {
      if (Date.now() - t0 > 30_000) throw new Error(`the agent never reported to the broker; log:\n${agentLog}`);
      if (agent.exitCode !== null) throw new Error(`the agent exited (${agent.exitCode}); log:\n${agentLog}`);
    }
    const pid = agent.pid!;
    const sizeBytes = JSON.stringify(desiredEnvelope(SITE, siteSnapshot(1, BIG))).length;
    const push = async (v: number): Promise<number> => {
      const env = desiredEnvelope(SITE, siteSnapshot(v, BIG));
      const t = performance.now();
      const ack = await consoleC.pushDesired(SITE, env, v, 20_000);
      const ms = performance.now() - t;
      if (ack.status !== "applied") throw new Error(`push ${v}: ${JSON.stringify(ack).slice(0, 300)}`);
      return ms;
    };
    const firstCpu0 = cpuMs(pid);
    const firstMs = await push(1);
    const firstCpuMs = cpuMs(pid) - firstCpu0;
    // Two more to settle (the store's first write of a big site, JIT), not counted.
    await push(2);
    await push(3);
    const lat: number[] = [];
    const cpu0 = cpuMs(pid);
    for (let v = 4; v < 4 + PUSHES; v++) {
      lat.push(await push(v));
      // A console pushes when something changed, not back to back: let the store's background
      // save and the event publishes finish between pushes, as they would on a site.
      await new Promise((r) => setTimeout(r, 50));
    }
    const cpuPerPush = (cpuMs(pid) - cpu0) / PUSHES;
    const s = summarize(lat);
    const rss = rssMB(pid);
    await consoleC.close();
    const result = {
      machine: machine(),
      agentBin: path.relative(ROOT, bin),
      site: { ...BIG, configBytes: sizeBytes },
      firstPush: { ms: round(firstMs, 1), agentCpuMs: round(firstCpuMs, 1) },
      pushToAck: { pushes: s.n, p50Ms: round(s.median, 2), p99Ms: round(s.p99, 2), maxMs: round(s.max, 2), targetP50Ms: 20, met: s.median <= 20 },
      agentCpuMsPerPush: round(cpuPerPush, 1),
      agentRssMB: round(rss, 1),
      loadavg: os.loadavg().map((x) => round(x, 2)),
    };
    const file = writeResult("push", result);
    console.log(
      table(
        ["figure (whole agent, dist/ringedge.mjs, real Mosquitto)", "value", "target"],
        [
          [`first push after start (${fmt(sizeBytes / 1024)} KB, ${BIG.users}/${BIG.devices}/${BIG.groups})`, `${fmt(firstMs, 1)} ms (agent CPU ${fmt(firstCpuMs)} ms)`, "no schema compile"],
          ["push → applied ack p50", `${fmt(s.median, 2)} ms`, "≤ 20 ms"],
          ["push → applied ack p99", `${fmt(s.p99, 2)} ms`, ""],
          ["agent CPU per push", `${fmt(cpuPerPush, 1)} ms`, ""],
          ["agent RSS after the pushes", `${fmt(rss, 1)} MB`, ""],
        ],
      ),
    );
    console.log(`written ${file}`);
  } finally {
    // SIGTERM first: a clean exit (and, with NODE_OPTIONS=--cpu-prof, its CPU profile).
    if (agent.exitCode === null) {
      agent.kill("SIGTERM");
      await Promise.race([new Promise((r) => agent.once("exit", r)), new Promise((r) => setTimeout(r, 10_000))]);
    }
    killAgent();
    await broker.kill();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

await main();
process.exit(0);
