// Reads V8 CPU profiles (node --cpu-prof: BENCH_CPU_PROF=1 with bench/calls.bench.ts or
// bench/vs-kamailio.bench.ts) and prints where the time went: self time per function and per
// source file, and the inclusive time of the functions that matter most, as a share of the
// profiled samples (idle and GC listed apart).
// Run: node --import tsx bench/cpuprofile.ts <file.cpuprofile|dir> [--top N] [--match text]
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { fmt, table } from "./lib.ts";

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
export interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileSummary {
  totalMs: number;
  idleMs: number;
  gcMs: number;
  /** Self time per function ("name file:line"), ms, descending. */
  selfByFunction: Array<[string, number]>;
  selfByFile: Array<[string, number]>;
  /** Time with the function anywhere on the stack (counted once per sample), ms, descending. */
  inclusiveByFunction: Array<[string, number]>;
}

const where = (f: CallFrame): string => {
  const file = f.url === "" ? "(native)" : f.url.replace(/^file:\/\//, "").split("/").slice(-2).join("/");
  return `${f.functionName || "(anonymous)"} ${file}:${f.lineNumber + 1}`;
};

/** Pure: time per function and file from a profile's samples. */
export function summarizeProfile(p: CpuProfile): ProfileSummary {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const self = new Map<number, number>();
  for (let i = 0; i < p.samples.length; i++) {
    const id = p.samples[i]!;
    // timeDeltas[i] is the time before sample i; the sample's own span is the next delta.
    const dt = (p.timeDeltas[i + 1] ?? 0) / 1000;
    self.set(id, (self.get(id) ?? 0) + dt);
  }
  const selfFn = new Map<string, number>();
  const selfFile = new Map<string, number>();
  const incl = new Map<string, number>();
  let total = 0;
  let idle = 0;
  let gc = 0;
  for (const [id, ms] of self) {
    const n = byId.get(id);
    if (n === undefined) continue;
    total += ms;
    const name = n.callFrame.functionName;
    if (name === "(idle)") {
      idle += ms;
      continue;
    }
    if (name === "(garbage collector)") gc += ms;
    const key = where(n.callFrame);
    selfFn.set(key, (selfFn.get(key) ?? 0) + ms);
    const file = n.callFrame.url === "" ? "(native)" : n.callFrame.url.replace(/^file:\/\//, "");
    selfFile.set(file, (selfFile.get(file) ?? 0) + ms);
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const k = where(byId.get(cur)!.callFrame);
      if (seen.has(k)) continue;
      seen.add(k);
      incl.set(k, (incl.get(k) ?? 0) + ms);
    }
  }
  const sorted = (m: Map<string, number>): Array<[string, number]> => [...m].sort((a, b) => b[1] - a[1]);
  return { totalMs: total, idleMs: idle, gcMs: gc, selfByFunction: sorted(selfFn), selfByFile: sorted(selfFile), inclusiveByFunction: sorted(incl) };
}

function main(): void {
  const args = process.argv.slice(2);
  const topAt = args.indexOf("--top");
  const top = topAt >= 0 ? Number(args[topAt + 1]) || 25 : 25;
  const matchAt = args.indexOf("--match");
  const match = matchAt >= 0 ? args[matchAt + 1] : undefined;
  const values = new Set([topAt, matchAt].filter((i) => i >= 0).map((i) => i + 1));
  const target = args.find((a, i) => !a.startsWith("--") && !values.has(i));
  if (target === undefined) {
    console.error("usage: bench/cpuprofile.ts <file.cpuprofile|dir> [--top N] [--match text]");
    process.exitCode = 2;
    return;
  }
  const files = fs.statSync(target).isDirectory() ? fs.readdirSync(target).filter((f) => f.endsWith(".cpuprofile")).map((f) => path.join(target, f)) : [target];
  for (const f of files) {
    const s = summarizeProfile(JSON.parse(fs.readFileSync(f, "utf8")) as CpuProfile);
    const busy = s.totalMs - s.idleMs;
    const pct = (ms: number): string => `${fmt((ms / busy) * 100, 1)} %`;
    console.log(`\n${f}: ${fmt(s.totalMs)} ms profiled, ${fmt(busy)} ms busy (GC ${fmt(s.gcMs)} ms, ${pct(s.gcMs)})`);
    const pick = (rows: Array<[string, number]>): Array<[string, number]> => rows.filter(([k]) => match === undefined || k.includes(match)).slice(0, top);
    console.log("\nself time by function\n" + table(["function", "ms", "of busy"], pick(s.selfByFunction).map(([k, ms]) => [k, fmt(ms, 1), pct(ms)])));
    console.log("\nself time by file\n" + table(["file", "ms", "of busy"], s.selfByFile.slice(0, top).map(([k, ms]) => [k, fmt(ms, 1), pct(ms)])));
    console.log("\ninclusive time by function\n" + table(["function", "ms", "of busy"], pick(s.inclusiveByFunction).map(([k, ms]) => [k, fmt(ms, 1), pct(ms)])));
  }
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) main();
