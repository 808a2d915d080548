// Media plane: 50 concurrent hold-music streams from the media worker (agent/media/), as the
// queue plays them. Measures, at 50 loopback receivers in this process: inter-arrival jitter
// (|arrival gap − 20 ms|, p50/p99/max over every packet) and drift (last arrival vs the
// stream's timestamps), plus the process CPU per stream. The receivers' own event-loop delay is
// part of the figures, so they are an upper bound on the worker's pacing error.
// Issue 12 target: pacing jitter p99 ≤ 2 ms. The ring-all first-fork latency with 50 streams
// playing inside the agent is measured by calls.bench.ts (its "q0"/"q50" pair).
// The run is made twice: as is, and in a child process under SCHED_FIFO priority 10 (chrt), as
// the example systemd unit runs the agent (CPUSchedulingPolicy=fifo): on a busy box the plain
// run's pacing depends on what else wants the CPUs. The headline fields are the plain run's;
// `realtime` holds the other (null with the reason when chrt is refused, e.g. not root).
import { spawnSync } from "node:child_process";
import dgram from "node:dgram";
import path from "node:path";
import { createLogger } from "../agent/log.ts";
import { parseRtp } from "../agent/media/rtp.ts";
import { MediaService } from "../agent/media/service.ts";
import { BENCH_DIR, fmt, machine, round, summarize, writeResult } from "./lib.ts";

const STREAMS = Number(process.env.MEDIA_STREAMS ?? 50);
const SECONDS = Number(process.env.MEDIA_SECONDS ?? 10);
const PORT_MIN = 42000;

interface Report {
  streams: number;
  seconds: number;
  packets: number;
  skippedFrames: number;
  jitterMs: { p50: number; p99: number; max: number };
  driftMs: { p50: number; max: number };
  cpuPctPerStream: number;
  cpuPctTotal: number;
  target: { jitterP99Ms: number };
  [k: string]: unknown;
}

async function measure(): Promise<Report> {
  const svc = new MediaService({ portMin: PORT_MIN, portMax: PORT_MIN + 2 * STREAMS + 9, log: createLogger("warn"), sounds: { hold: path.join(BENCH_DIR, "../audio/hold.wav") }, openTimeoutMs: 30_000 });
  svc.start();
  const deadline = Date.now() + 60_000;
  while (!svc.has("hold")) {
    if (Date.now() > deadline) throw new Error("the media worker did not load the hold music");
    await new Promise((r) => setTimeout(r, 20));
  }

  interface Rx {
    sock: dgram.Socket;
    arrivals: number[];
    timestamps: number[];
  }
  const rxs: Rx[] = [];
  const sessions: string[] = [];
  for (let i = 0; i < STREAMS; i++) {
    const sock = dgram.createSocket("udp4");
    await new Promise<void>((r) => sock.bind(0, "127.0.0.1", r));
    const rx: Rx = { sock, arrivals: [], timestamps: [] };
    sock.on("message", (b) => {
      const p = parseRtp(b);
      if (!p.ok) return;
      rx.arrivals.push(performance.now());
      rx.timestamps.push(p.value.timestamp);
    });
    rxs.push(rx);
    const r = await svc.openSession({ address: "127.0.0.1", law: "PCMA", payloadType: 8, telephoneEvent: undefined, remoteAddress: "127.0.0.1", remotePort: sock.address().port, direction: "sendrecv" }, {});
    if (!r.ok) throw new Error(r.reason);
    sessions.push(r.id);
  }
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  for (const id of sessions) svc.play(id, "hold", true);
  await new Promise((r) => setTimeout(r, SECONDS * 1000));
  const cpu = process.cpuUsage(cpu0);
  const wall = performance.now() - t0;
  for (const id of sessions) svc.close(id);
  await svc.stop();
  for (const rx of rxs) rx.sock.close();

  const gaps: number[] = [];
  const drifts: number[] = [];
  let packets = 0;
  let skippedFrames = 0;
  for (const rx of rxs) {
    packets += rx.arrivals.length;
    for (let i = 1; i < rx.arrivals.length; i++) {
      const frames = ((rx.timestamps[i]! - rx.timestamps[i - 1]!) >>> 0) / 160;
      skippedFrames += frames - 1;
      gaps.push(Math.abs(rx.arrivals[i]! - rx.arrivals[i - 1]! - 20 * frames));
    }
    const n = rx.arrivals.length - 1;
    if (n > 0) drifts.push(Math.abs(rx.arrivals[n]! - rx.arrivals[0]! - (((rx.timestamps[n]! - rx.timestamps[0]!) >>> 0) / 8)));
  }
  const j = summarize(gaps);
  const d = summarize(drifts);
  const cpuMs = (cpu.user + cpu.system) / 1000;
  const report: Report = {
    streams: STREAMS,
    seconds: round(wall / 1000, 2),
    packets,
    skippedFrames,
    jitterMs: { p50: round(j.median), p99: round(j.p99), max: round(j.max) },
    driftMs: { p50: round(d.median), max: round(d.max) },
    cpuPctPerStream: round((cpuMs / wall) * 100 / STREAMS, 3),
    cpuPctTotal: round((cpuMs / wall) * 100, 2),
    target: { jitterP99Ms: 2 },
    ...machine(),
  };
  return report;
}

const CHILD = process.env.MEDIA_BENCH_CHILD === "1";
const report = await measure();
if (CHILD) {
  console.log(`RESULT ${JSON.stringify(report)}`);
  process.exit(0);
}
console.log(`${STREAMS} streams, ${fmt(report.packets)} packets in ${fmt(report.seconds, 1)} s (${report.skippedFrames} frames skipped)`);
console.log(`inter-arrival jitter p50 ${report.jitterMs.p50} ms, p99 ${report.jitterMs.p99} ms, max ${report.jitterMs.max} ms (target p99 ≤ 2 ms)`);
console.log(`drift over the run: p50 ${report.driftMs.p50} ms, max ${report.driftMs.max} ms`);
console.log(`CPU (worker + receivers): ${report.cpuPctTotal}% total, ${report.cpuPctPerStream}% per stream`);
// The same under SCHED_FIFO, in a child process (chrt applies to a whole process).
let realtime: Report | null = null;
let realtimeError: string | undefined;
const child = spawnSync("chrt", ["--fifo", "10", process.execPath, ...process.execArgv, process.argv[1]!], { env: { ...process.env, MEDIA_BENCH_CHILD: "1" }, encoding: "utf8", timeout: (SECONDS + 90) * 1000 });
const line = child.stdout?.split("\n").find((l) => l.startsWith("RESULT "));
if (line !== undefined) realtime = JSON.parse(line.slice(7)) as Report;
else realtimeError = (child.error?.message ?? child.stderr ?? "").split("\n")[0] || `exit ${child.status}`;
if (realtime !== null) console.log(`under SCHED_FIFO 10: jitter p50 ${realtime.jitterMs.p50} ms, p99 ${realtime.jitterMs.p99} ms, max ${realtime.jitterMs.max} ms; CPU ${realtime.cpuPctPerStream}% per stream`);
else console.log(`under SCHED_FIFO: not measured (${realtimeError})`);
console.log(`wrote ${writeResult("media", { ...report, realtime, ...(realtimeError !== undefined ? { realtimeError } : {}) })}`);
