// Hot-path benchmark of the pure routing core: µs per planStep, median and p99, for groups of
// 10 / 50 / 200 members in every strategy. Run: node --import tsx bench/routing.bench.ts
// Writes bench/results/routing.json (temp file + rename via bench/lib.ts, so a killed run leaves
// no torn file).
//
// Each member has a desk phone and a soft client. Presence is mixed the way a real site is:
// every 5th member is offline and every 7th is on a call, so the skip paths are exercised.
// "first" is the step at call arrival (the latency budget that matters); "next" is a step in
// the middle of the call (half the members already had their turn; for simultaneous, the end).

import type { DeviceRef, Group, Strategy, User } from "../agent/routing/model.ts";
import { indexSite } from "../agent/routing/model.ts";
import type { CallState, PlanInput } from "../agent/routing/plan.ts";
import { planStep, startCall } from "../agent/routing/plan.ts";
import { machine, quantileSorted, round, writeResult } from "./lib.ts";

const SIZES = [10, 50, 200] as const;
const STRATEGY_LIST: readonly Strategy[] = ["sequential", "simultaneous", "evenly", "cumulative"];
const WARMUP = 2_000;
const SAMPLES = 20_000;
/** Target from the routing brief: a 50-member group plans a step in well under 10 µs. */
const TARGET_US_50 = 10;

interface Row {
  strategy: Strategy;
  members: number;
  phase: "first" | "next";
  medianUs: number;
  p99Us: number;
}

function site(n: number, strategy: Strategy) {
  const users: User[] = [];
  const devices: DeviceRef[] = [];
  const online = new Set<string>();
  const activeCalls = new Map<string, number>();
  const lastOffered = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const id = `user-${i}`;
    users.push({ id, extension: String(1000 + i), name: id, availability: "available", callLimit: 1 });
    devices.push({ id: `desk-${i}`, ownerId: id, kind: "physical" }, { id: `app-${i}`, ownerId: id, kind: "soft" });
    if (i % 5 !== 4) online.add(`desk-${i}`).add(`app-${i}`);
    if (i % 7 === 6) activeCalls.set(id, 1);
    // Evenly bookkeeping in scrambled order so the scan cannot shortcut.
    lastOffered.set(id, 1_700_000_000_000 + ((i * 7919) % n) * 1000);
  }
  const group: Group = {
    id: "bench",
    number: "100",
    name: "bench",
    strategy,
    members: users.map((u) => u.id),
    ringCount: 3,
    checkAvailability: false,
    noAnswer: { kind: "hangup" },
  };
  const idx = indexSite({ users, devices, groups: [group] });
  return { group, idx, presence: { onlineDevices: online, activeCalls }, lastOffered };
}

function measure(input: PlanInput): { medianUs: number; p99Us: number } {
  for (let i = 0; i < WARMUP; i++) planStep(input);
  const samples = new Float64Array(SAMPLES);
  let sink = 0;
  for (let i = 0; i < SAMPLES; i++) {
    const t0 = process.hrtime.bigint();
    const plan = planStep(input);
    const t1 = process.hrtime.bigint();
    sink += plan.ring.length;
    samples[i] = Number(t1 - t0) / 1000;
  }
  if (sink < 0) console.log(sink); // keeps the result observable so the call is not optimised away
  samples.sort();
  return { medianUs: round(quantileSorted(samples, 0.5)), p99Us: round(quantileSorted(samples, 0.99)) };
}

const rows: Row[] = [];
for (const strategy of STRATEGY_LIST) {
  for (const n of SIZES) {
    const s = site(n, strategy);
    const now = 1_700_000_100_000;
    const base: PlanInput = {
      group: s.group,
      usersById: s.idx.usersById,
      devicesByOwner: s.idx.devicesByOwner,
      presence: s.presence,
      evenlyLastOffered: s.lastOffered,
      call: startCall(now),
      now,
    };
    rows.push({ strategy, members: n, phase: "first", ...measure(base) });

    // Advance to the middle of the call.
    let call: CallState = startCall(now);
    const steps = strategy === "simultaneous" ? 1 : Math.floor(n / 2);
    for (let k = 0; k < steps; k++) {
      const p = planStep({ ...base, call });
      if (p.exhausted) break;
      call = p.call;
    }
    rows.push({ strategy, members: n, phase: "next", ...measure({ ...base, call }) });
  }
}

console.log("strategy      members  phase  median µs   p99 µs");
for (const r of rows) {
  console.log(`${r.strategy.padEnd(13)} ${String(r.members).padStart(7)}  ${r.phase.padEnd(5)}  ${r.medianUs.toFixed(3).padStart(9)}  ${r.p99Us.toFixed(3).padStart(7)}`);
}
const worst50 = Math.max(...rows.filter((r) => r.members === 50).map((r) => r.medianUs));
console.log(`50-member worst median: ${worst50.toFixed(3)} µs (target < ${TARGET_US_50} µs): ${worst50 < TARGET_US_50 ? "met" : "MISSED"}`);

const report = {
  benchmark: "routing.planStep",
  ...machine(),
  samples: SAMPLES,
  presence: "desk phone + soft client per member; every 5th member offline, every 7th busy",
  targetUs50: TARGET_US_50,
  worst50MedianUs: worst50,
  met: worst50 < TARGET_US_50,
  rows,
};
console.log(`wrote ${writeResult("routing", report)}`);
