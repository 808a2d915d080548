// Shared helpers for the benchmarks: order statistics, number formatting, the machine
// description every result carries, and an atomic write of bench/results/<name>.json
// (temp file + rename, so a run killed half-way never leaves a torn file behind).
import { mkdirSync, mkdtempSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import os from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { tempDir } from "../test/tmpdir.ts";

export const BENCH_DIR = dirname(fileURLToPath(import.meta.url));
export const RESULTS_DIR = join(BENCH_DIR, "results");

/** Value at quantile q (0..1) of an ascending-sorted sample, nearest-rank; NaN when empty. */
export function quantileSorted(sorted: ArrayLike<number>, q: number): number {
  const n = sorted.length;
  if (n === 0) return Number.NaN;
  const rank = Math.ceil(Math.min(1, Math.max(0, q)) * n);
  return sorted[Math.min(n - 1, Math.max(0, rank - 1))] as number;
}

function sortedCopy(xs: ArrayLike<number>): Float64Array {
  return Float64Array.from(xs).sort();
}

export function median(xs: ArrayLike<number>): number {
  return quantileSorted(sortedCopy(xs), 0.5);
}

export function p99(xs: ArrayLike<number>): number {
  return quantileSorted(sortedCopy(xs), 0.99);
}

/** Median, p99 and max in one sort, for large samples. */
export function summarize(xs: ArrayLike<number>): { n: number; median: number; p99: number; max: number } {
  const s = sortedCopy(xs);
  return { n: s.length, median: quantileSorted(s, 0.5), p99: quantileSorted(s, 0.99), max: s.length ? (s[s.length - 1] as number) : Number.NaN };
}

/** Rounds to `digits` decimals (for JSON figures that should stay readable). */
export function round(x: number, digits = 3): number {
  if (!Number.isFinite(x)) return x;
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** A figure for a table: thousands grouped, `digits` decimals. */
export function fmt(x: number, digits = 0): string {
  if (!Number.isFinite(x)) return "n/a";
  return x.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

/** Left column padded, the others right-aligned: a plain-text table for the console. */
export function table(header: readonly string[], rows: ReadonlyArray<readonly string[]>): string {
  const all = [header, ...rows];
  const widths = header.map((_, c) => Math.max(...all.map((r) => (r[c] ?? "").length)));
  const line = (r: readonly string[]): string =>
    r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c] ?? 0) : cell.padStart(widths[c] ?? 0))).join("  ");
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n");
}

export interface Machine {
  date: string;
  node: string;
  cpus: number;
  cpuModel: string;
  platform: string;
  loadAvg1m: number;
}

/** The machine a figure was taken on; the box is shared, so figures are only comparable within a run. */
export function machine(): Machine {
  const cpus = os.cpus();
  return {
    date: new Date().toISOString(),
    node: process.version,
    cpus: os.availableParallelism?.() ?? cpus.length,
    cpuModel: cpus[0]?.model.trim() ?? "unknown",
    platform: `${os.platform()} ${os.release()}`,
    loadAvg1m: round(os.loadavg()[0] ?? 0, 2),
  };
}

/** Writes bench/results/<name>.json atomically; returns the path. */
export function writeResult(name: string, result: unknown): string {
  const out = join(RESULTS_DIR, `${name}.json`);
  mkdirSync(RESULTS_DIR, { recursive: true });
  writeFileSync(`${out}.tmp`, JSON.stringify(result, null, 2) + "\n");
  renameSync(`${out}.tmp`, out);
  return out;
}

/** Reads a result written by writeResult; undefined if absent or unreadable. */
export function readResult(name: string): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(readFileSync(join(RESULTS_DIR, `${name}.json`), "utf8"));
    return typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

// --- summary.md (run.sh calls: node --import tsx bench/lib.ts summary <startEpochS> name=status:rc:secs…)

type Json = Record<string, unknown>;
const num = (v: unknown): number => (typeof v === "number" ? v : Number.NaN);
const obj = (v: unknown): Json => (typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Json) : {});
const arr = (v: unknown): Json[] => (Array.isArray(v) ? v.map(obj) : []);
const yes = (b: unknown): string => (b === true ? "met" : b === false ? "**missed**" : "n/a");

function parserSection(r: Json): string[] {
  const ours = obj(r.ringedge);
  const theirs = obj(r.sipjs);
  const target = obj(r.target);
  return [
    `| scanner parses/s | µs per INVITE | sip.js parses/s | speedup | target > ${fmt(num(target.parsesPerSec))}/s |`,
    "|---:|---:|---:|---:|---|",
    `| ${fmt(num(ours.parsesPerSec))} | ${fmt(num(ours.usPerInvite), 2)} | ${fmt(num(theirs.parsesPerSec))} | ${fmt(num(r.speedup), 0)}× | ${yes(target.met)} |`,
  ];
}

function routingSection(r: Json): string[] {
  const rows = arr(r.rows);
  const sizes = [...new Set(rows.map((x) => num(x.members)))];
  const out = [`| strategy | ${sizes.map((n) => `${n} first / next µs (median)`).join(" | ")} |`, `|---|${sizes.map(() => "---:").join("|")}|`];
  for (const strategy of [...new Set(rows.map((x) => String(x.strategy)))]) {
    const cell = (n: number, phase: string): string => fmt(num(rows.find((x) => x.strategy === strategy && x.members === n && x.phase === phase)?.medianUs), 2);
    out.push(`| ${strategy} | ${sizes.map((n) => `${cell(n, "first")} / ${cell(n, "next")}`).join(" | ")} |`);
  }
  const worst = num(r.worst50MedianUs);
  out.push("", `Worst 50-member median ${fmt(worst, 2)} µs, target < ${fmt(num(r.targetUs50))} µs: ${yes(r.met)}.`);
  return out;
}

function registerSection(r: Json): string[] {
  const targets = obj(r.targets);
  const met = obj(r.met);
  const out = [
    `| registrations | wall ms | reg/s | failed | RSS MB after burst | HWM MB | heap used MB | steady RSS MB | agent CPU µs/reg (paced) |`,
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    `| ${fmt(num(r.registrations))} | ${fmt(num(r.wallMs))} | ${fmt(num(r.perSecond))} | ${fmt(num(r.failed))} | ${fmt(num(r.rssMB), 1)} | ${fmt(num(r.hwmMB), 1)} | ${fmt(num(r.heapUsedMB), 1)} | ${fmt(num(r.steadyRssMB), 1)} | ${fmt(num(r.cpuUsPerRegistration))} |`,
    "",
    `Targets (dist/ringedge.mjs, as make run ships it): ${fmt(num(targets.registrations))} registered ${yes(met.registrations)}; under ${fmt(num(targets.wallMsMax))} ms ${yes(met.wallMs)}; no failure ${yes(met.failed)}; RSS under ${fmt(num(targets.rssMBMax))} MB ${yes(met.rssMB)}.`,
    "",
    "| runtime | run | rate/s | ok | failed | retrans | wall ms | reg/s | 401 ms med / p99 | 200 ms med / p99 | agent CPU µs/reg |",
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  ];
  const variants = arr(r.variants);
  for (const v of variants) {
    for (const run of arr(v.runs)) {
      const c = obj(run.challengeResponseMs);
      const g = obj(run.registerResponseMs);
      out.push(
        `| ${String(v.runtime)} | ${String(run.label).replace(`${String(v.runtime)}-`, "")} | ${fmt(num(run.rate))} | ${fmt(num(run.successful))} | ${fmt(num(run.failed))} | ${fmt(num(run.retransmissions))} | ${fmt(num(run.wallMs))} | ${fmt(num(run.perSecond))} | ${fmt(num(c.median))} / ${fmt(num(c.p99))} | ${fmt(num(g.median))} / ${fmt(num(g.p99))} | ${fmt(num(run.agentCpuUsPerRegistration))} |`,
      );
    }
  }
  out.push("", "| runtime | RSS MB idle | after burst | after paced | steady (Timer J drained) | HWM MB | heap used MB steady | after idle collection (heap used) |", "|---|---:|---:|---:|---:|---:|---:|---:|");
  for (const v of variants) {
    const m = obj(v.memory);
    const [idle, burst, paced, steady] = [obj(m.idle), obj(m.afterBurst), obj(m.afterPaced), obj(m.steady)];
    const collected = m.idleCollected === null || m.idleCollected === undefined ? "—" : `${fmt(num(obj(m.idleCollected).rssMB), 1)} (${fmt(num(obj(m.idleCollected).heapUsedMB), 1)})`;
    out.push(`| ${String(v.runtime)} | ${fmt(num(idle.rssMB), 1)} | ${fmt(num(burst.rssMB), 1)} | ${fmt(num(paced.rssMB), 1)} | ${fmt(num(steady.rssMB), 1)} | ${fmt(num(steady.hwmMB), 1)} | ${fmt(num(steady.heapUsedMB), 1)} | ${collected} |`);
  }
  return out;
}

function callsSection(r: Json): string[] {
  const targets = obj(r.targets);
  const met = obj(r.met);
  const out = [
    "| run | phones | ringing at once | calls/s offered / achieved | ok | failed | first fork µs p50 / p99 (agent) | first fork µs p50 / p99 (packets) | to 180 ms p50 / p99 | agent CPU µs/call | RSS MB |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  ];
  for (const run of arr(r.runs)) {
    const a = obj(run.firstForkAgent);
    const p = obj(run.firstForkPackets);
    const t = obj(run.timeTo180Ms);
    out.push(
      `| ${String(run.label)} | ${fmt(num(run.phones))} | ${fmt(num(run.ringingAtOnce))} | ${fmt(num(run.rate))} / ${fmt(num(run.achievedCallRate), 1)} | ${fmt(num(run.successful))} | ${fmt(num(run.failed))} | ${fmt(num(a.p50Us))} / ${fmt(num(a.p99Us))} | ${run.firstForkPackets ? `${fmt(num(p.p50Us))} / ${fmt(num(p.p99Us))}` : "—"} | ${fmt(num(t.median))} / ${fmt(num(t.p99))} | ${fmt(num(run.agentCpuUsPerCall))} | ${fmt(num(run.rssMB), 1)} |`,
    );
  }
  out.push(
    "",
    `Targets (10-phone simultaneous group at ${fmt(num(targets.atRate))} calls/s): first fork p50 ≤ ${fmt(num(targets.firstForkP50UsMax))} µs ${yes(met.firstForkP50)}; p99 ≤ ${fmt(num(targets.firstForkP99UsMax))} µs ${yes(met.firstForkP99)}; ${fmt(num(targets.sustainedRate))} calls/s with no failed call ${yes(met.sustained500)}. Highest rate run with no failure: ${fmt(num(r.maxCleanCallRate), 1)} calls/s.`,
    ...(met.firstForkP50Realtime === null || met.firstForkP50Realtime === undefined
      ? []
      : [`The same targets on the \`+rt\` run (the agent under SCHED_FIFO priority 10, as the example systemd unit runs it; run right after the plain one): p50 ${yes(met.firstForkP50Realtime)}; p99 ${yes(met.firstForkP99Realtime)}.`]),
    "The agent's figure runs from the INVITE's datagram being read to the first fork leaving (parse, transaction, admission and routing included; warm-up calls too); the packet figure from the INVITE on the wire to the first fork on the wire (as tshark saw them on lo).",
  );
  if (r.memory !== undefined && r.memory !== null) {
    const mem = obj(r.memory);
    const up = obj(mem.up);
    const idle = mem.afterIdleCollection === null ? undefined : obj(mem.afterIdleCollection);
    out.push(
      "",
      `Memory (\`${String(mem.run)}\`): ${fmt(num(mem.registered))} phones registered, ${fmt(num(mem.calls))} answered calls up and ${fmt(num(mem.callLogAtStart))} calls in the call log (read at start): RSS ${fmt(num(up.rssMB), 1)} MB as they came up` +
        (idle ? `, ${fmt(num(idle.rssMB), 1)} MB after the agent's idle collections with ${fmt(num(idle.dialogs))} still up` : ", no idle collection while they were up") +
        `; target ≤ ${fmt(num(mem.targetRssMB))} MB ${yes(mem.met)}. Calls ${fmt(num(mem.callsOk))} ok, ${fmt(num(mem.callsFailed))} failed.`,
    );
  }
  const media = obj(r.media);
  if (r.media !== undefined && r.media !== null) {
    const without = obj(media.firstForkWithout);
    const withStreams = obj(media.firstForkWith);
    const hold = obj(media.hold);
    out.push(
      "",
      `Media pair (\`q0\` / \`q${fmt(num(media.streams))}\`): first fork on the wire p50 / p99 ${fmt(num(without.p50Us))} / ${fmt(num(without.p99Us))} µs without, ${fmt(num(withStreams.p50Us))} / ${fmt(num(withStreams.p99Us))} µs with ${fmt(num(media.streams))} callers hearing hold music from the agent; their pacing jitter p50 / p99 ${fmt(num(hold.jitterP50Ms), 2)} / ${fmt(num(hold.jitterP99Ms), 2)} ms (target p99 ≤ ${fmt(num(media.jitterP99MsMax))} ms), ${fmt(num(hold.packetsPerStreamPerS), 1)} packets/s per stream.`,
    );
  }
  return out;
}

function mediaSection(r: Json): string[] {
  const j = obj(r.jitterMs);
  const rt = obj(r.realtime);
  const row = (label: string, x: Json, jj: Json): string => `| ${label} | ${fmt(num(x.streams))} | ${fmt(num(jj.p50), 3)} / ${fmt(num(jj.p99), 3)} / ${fmt(num(jj.max), 2)} | ${fmt(num(x.skippedFrames))} | ${fmt(num(x.cpuPctPerStream), 3)} |`;
  return [
    "| scheduling | streams | jitter ms p50 / p99 / max | frames skipped | CPU % per stream |",
    "|---|---:|---:|---:|---:|",
    row("as is", r, j),
    ...(r.realtime ? [row("SCHED_FIFO 10", rt, obj(rt.jitterMs))] : []),
    "",
    `Target: jitter p99 ≤ ${fmt(num(obj(r.target).jitterP99Ms))} ms. Load when measured: ${fmt(num(r.loadAvg1m), 2)}.`,
  ];
}

function provisionSection(r: Json): string[] {
  return [
    "| full configs/s in process | µs per config | over HTTP/s (keep-alive) | import 1,000 phones ms (of which parse) |",
    "|---:|---:|---:|---:|",
    `| ${fmt(num(r.handlePerSec))} | ${fmt(num(r.handleUsPerConfig), 1)} | ${fmt(num(r.httpPerSec))} (${fmt(num(r.httpConcurrency))} in flight) | ${fmt(num(r.import1000Ms), 1)} (${fmt(num(r.import1000ParseMs), 1)}) |`,
  ];
}

function mqttSection(r: Json): string[] {
  const p = obj(r.pushToAck);
  const o = obj(r.outbox);
  const f = obj(r.fleet);
  return [
    "| push → applied ack p50 / p99 ms | config | events/s through the outbox | fleet: agents acked | all acked within ms |",
    "|---:|---|---:|---:|---:|",
    `| ${fmt(num(p.p50Ms), 1)} / ${fmt(num(p.p99Ms), 1)} | ${fmt(num(p.users))} users, ${fmt(num(p.devices))} phones, ${fmt(num(p.groups))} groups, ${fmt(num(p.configBytes))} B | ${fmt(num(o.eventsPerS))} | ${fmt(num(f.agents))} (${fmt(num(f.rejected))} rejected) | ${fmt(num(f.allAckedMs))} |`,
    "",
    `Targets: push → ack p50 ≤ ${fmt(num(p.targetP50Ms))} ms ${yes(num(p.p50Ms) <= num(p.targetP50Ms))}; fleet of ${fmt(num(f.agents))} within ${fmt(num(f.targetMs))} ms ${yes(num(f.allAckedMs) <= num(f.targetMs))}.`,
  ];
}

function pushSection(r: Json): string[] {
  const site = obj(r.site);
  const first = obj(r.firstPush);
  const p = obj(r.pushToAck);
  return [
    "| first push after start ms (agent CPU) | push → applied ack p50 / p99 ms | agent CPU per push ms | agent RSS MB | site |",
    "|---:|---:|---:|---:|---|",
    `| ${fmt(num(first.ms), 1)} (${fmt(num(first.agentCpuMs))}) | ${fmt(num(p.p50Ms), 1)} / ${fmt(num(p.p99Ms), 1)} | ${fmt(num(r.agentCpuMsPerPush), 1)} | ${fmt(num(r.agentRssMB), 1)} | ${fmt(num(site.users))} users, ${fmt(num(site.devices))} phones, ${fmt(num(site.groups))} groups, ${fmt(num(site.configBytes))} B |`,
    "",
    `Target: push → ack p50 ≤ ${fmt(num(p.targetP50Ms))} ms through the whole agent ${yes(num(p.p50Ms) <= num(p.targetP50Ms))}.`,
  ];
}

function vsKamailioSection(r: Json): string[] {
  const t = obj(r.targets);
  const met = obj(r.met);
  const ff = obj(r.firstFork);
  const [re, ka] = [obj(ff.ringedge), obj(ff.kamailio)];
  const ratioCell = (v: unknown): string => (typeof v === "number" ? `${fmt(v, 2)}×` : "n/a");
  const out = [
    `${r.short === true ? "**Short run** (BENCH_KAM_SHORT=1). " : ""}${fmt(num(r.secondsPerPoint))} s per point${num(r.rounds) > 1 ? `, median of ${fmt(num(r.rounds))} rounds` : ""}; plot: \`bench/results/vs-kamailio.svg\`.`,
    "",
    "| calls/s | ringedge CPU µs/call | Kamailio CPU µs/call | ringedge / Kamailio |",
    "|---:|---:|---:|---:|",
    ...arr(r.cpuPerCall).map((c) => `| ${fmt(num(c.rate))} | ${fmt(num(c.ringedgeUsPerCall))} | ${fmt(num(c.kamailioUsPerCall))} | ${ratioCell(c.ratio)} |`),
    ...arr(r.cpuPerCallSplit).map((c) => `| ${fmt(num(c.rate))}, proxy and SIPp on separate CPUs | ${fmt(num(c.ringedgeUsPerCall))} | ${fmt(num(c.kamailioUsPerCall))} | ${ratioCell(c.ratio)} |`),
    "",
    `First fork on the wire at ${fmt(num(ff.rate))} calls/s, p50 / p99 µs: ringedge ${fmt(num(re.p50Us))} / ${fmt(num(re.p99Us))}, Kamailio ${fmt(num(ka.p50Us))} / ${fmt(num(ka.p99Us))} (ratios ${ratioCell(ff.ratioP50)} / ${ratioCell(ff.ratioP99)}).`,
    "",
    "Sent/s is the rate the SIPp caller reached, SIPp CPU the load generators' CPU (caller and phones, % of one CPU): on this 2-core box, CPU the proxy could not have. Proxy CPU is the proxy's own over the same time; the two together cannot pass 200 %.",
    "",
    "| offered calls/s | ringedge completed/s | 503 | failed | sent/s | SIPp CPU % | proxy CPU % | Kamailio completed/s | 503 | failed | sent/s | SIPp CPU % | proxy CPU % |",
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  ];
  // Results written before the load generators' CPU was recorded show "—" there.
  const opt = (x: Json, key: string, digits?: number): string => (typeof x[key] === "number" ? fmt(x[key], digits) : "—");
  for (const g of arr(r.goodput)) {
    const [a, b] = [obj(g.ringedge), obj(g.kamailio)];
    out.push(`| ${fmt(num(g.offered))} | ${fmt(num(a.goodput), 1)} | ${fmt(num(a.refused503))} | ${fmt(num(a.failed))} | ${opt(a, "callsSentPerS", 1)} | ${opt(a, "loadgenCpuPct")} | ${opt(a, "proxyCpuPct")} | ${fmt(num(b.goodput), 1)} | ${fmt(num(b.refused503))} | ${fmt(num(b.failed))} | ${opt(b, "callsSentPerS", 1)} | ${opt(b, "loadgenCpuPct")} | ${opt(b, "proxyCpuPct")} |`);
  }
  const su = obj(r.sustained);
  if (typeof su.rate === "number") {
    const line = (name: string, x: Json): string => (typeof x.calls === "number" ? `${name} ${fmt(num(x.completed))} / ${fmt(num(x.calls))} completed, ${fmt(num(x.refused503))} × 503, ${fmt(num(x.failed))} failed, ${fmt(num(x.cpuUsPerCall))} µs/call${typeof x.rssEndMB === "number" ? `, RSS ${fmt(x.rssEndMB, 1)} MB at the end` : ""}${typeof x.heapUsedMB === "number" && typeof x.heapTotalMB === "number" ? ` (JS heap ${fmt(x.heapUsedMB, 1)} MB in use of ${fmt(x.heapTotalMB, 1)} MB held)` : ""}` : `${name} not run`);
    out.push("", `Sustained ${fmt(su.rate)} calls/s for ${fmt(num(su.seconds))} s (past the transactions' 32 s timers): ${line("ringedge", obj(su.ringedge))}; ${line("Kamailio", obj(su.kamailio))}.`);
  }
  const lost = arr(r.lostRuns);
  if (lost.length > 0) out.push("", `Left out (proxy or phones did not come up twice): ${lost.map((l) => `${String(l.kind)} ${String(l.proxy)}@${fmt(num(l.rate))} round ${fmt(num(l.round) + 1)}`).join(", ")}.`);
  const ba = obj(r.beforeAfter);
  if (Array.isArray(ba.cpuPerCall)) {
    out.push("", `Before/after (baseline bundle \`${String(ba.baseline)}\`, same run): ${arr(ba.cpuPerCall).map((c) => `${fmt(num(c.rate))}/s ${fmt(num(c.baselineUsPerCall))} → ${fmt(num(c.ringedgeUsPerCall))} µs/call (${ratioCell(c.ratio)})`).join("; ")}.`);
  }
  out.push(
    "",
    `Targets (reported, not asserted): CPU per call ≤ ${fmt(num(t.cpuRatioMax), 1)}× Kamailio ${yes(met.cpuRatio)}${met.cpuRatioSplit === undefined || met.cpuRatioSplit === null ? "" : ` (proxy and SIPp on separate CPUs ${yes(met.cpuRatioSplit)})`}; a clean ${fmt(num(t.cleanRate))} calls/s: ringedge ${yes(met.clean800Ringedge)}, Kamailio ${yes(met.clean800Kamailio)}.`,
  );
  return out;
}

const SECTIONS: ReadonlyArray<{ name: string; title: string; render: (r: Json) => string[] }> = [
  { name: "parser", title: "SIP parser (bench/parser.bench.ts)", render: parserSection },
  { name: "routing", title: "Routing core planStep (bench/routing.bench.ts)", render: routingSection },
  { name: "register", title: "Registration with digest auth, 2,000 phones (bench/register.bench.ts)", render: registerSection },
  { name: "calls", title: "Calls through the agent, SIPp callers to SIPp phones (bench/calls.bench.ts)", render: callsSection },
  { name: "vs-kamailio", title: "Side by side with Kamailio 5.6, ring-all-10 (bench/vs-kamailio.bench.ts)", render: vsKamailioSection },
  { name: "provision", title: "Phone provisioning: configs served, CSV import (bench/provision.bench.ts)", render: provisionSection },
  { name: "mqtt", title: "Console sync over MQTT with a real Mosquitto (bench/mqtt.bench.ts)", render: mqttSection },
  { name: "push", title: "Console push through the whole running agent (bench/push.bench.ts)", render: pushSection },
  { name: "media", title: "Hold-music streams from the media worker (bench/media.bench.ts)", render: mediaSection },
];

/** Builds summary.md from the result files; a result older than this run is marked stale. */
export function renderSummary(startedAtS: number, statuses: ReadonlyMap<string, { status: string; rc: string; secs: string }>): string {
  const m = machine();
  const lines = [
    "# Benchmark summary",
    "",
    `Written by bench/run.sh on ${m.date}. Machine: ${m.cpus} CPUs (${m.cpuModel}), ${m.platform}, node ${m.node}, load average (1 min) ${m.loadAvg1m}.`,
    "The machine is shared and noisy: compare figures taken in the same run, and read ratios rather than absolutes.",
    "",
    "| bench | status | seconds |",
    "|---|---|---:|",
    ...SECTIONS.map((s) => {
      const st = statuses.get(s.name);
      return `| ${s.name} | ${st ? `${st.status}${st.status === "ok" ? "" : ` (exit ${st.rc})`}` : "not run"} | ${st?.secs ?? ""} |`;
    }),
  ];
  for (const s of SECTIONS) {
    lines.push("", `## ${s.title}`, "");
    const r = readResult(s.name);
    if (!r) {
      lines.push("No result file.");
      continue;
    }
    // Results carry their date at the top or in their machine description.
    const when = typeof r.date === "string" ? r.date : typeof obj(r.machine).date === "string" ? (obj(r.machine).date as string) : undefined;
    const date = when !== undefined ? Date.parse(when) : Number.NaN;
    if (!(date >= startedAtS * 1000)) lines.push(`_Stale: this result is from ${when ?? "an unknown date"}, not from this run._`, "");
    lines.push(...s.render(r));
  }
  return lines.join("\n") + "\n";
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href && process.argv[2] === "summary") {
  const started = Number(process.argv[3]);
  const statuses = new Map<string, { status: string; rc: string; secs: string }>();
  for (const arg of process.argv.slice(4)) {
    const [name, rest] = arg.split("=");
    const [status, rc, secs] = (rest ?? "").split(":");
    if (name) statuses.set(name, { status: status ?? "?", rc: rc ?? "?", secs: secs ?? "" });
  }
  const out = join(RESULTS_DIR, "summary.md");
  mkdirSync(RESULTS_DIR, { recursive: true });
  writeFileSync(`${out}.tmp`, renderSummary(Number.isFinite(started) ? started : 0, statuses));
  renameSync(`${out}.tmp`, out);
  console.log(`wrote ${out}`);
}

/**
 * A bench's work folder. Kept (printed, never removed) when asked to (BENCH_KEEP, a CPU
 * profile); otherwise a tempDir, removed when the process ends however it ends.
 */
export function benchWorkDir(prefix: string, keep: boolean): string {
  return keep ? mkdtempSync(join(os.tmpdir(), prefix)) : tempDir(prefix);
}
