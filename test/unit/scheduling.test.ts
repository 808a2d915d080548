// Reading the agent's scheduling from /proc/<pid>/stat (agent/appliance/scheduling.ts): the
// pure parser on real and hostile lines, and a real process started under chrt.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import os from "node:os";
import { test } from "node:test";
import { currentScheduling, parseSchedulingFromStat } from "../../agent/appliance/scheduling.ts";

/** A stat line with the given command name, nice (field 19), rt_priority (40) and policy (41). */
function statLine(comm: string, nice: number, priority: number, policy: number): string {
  const fields: string[] = [];
  for (let n = 3; n <= 52; n++) fields.push(n === 3 ? "S" : n === 19 ? String(nice) : n === 40 ? String(priority) : n === 41 ? String(policy) : String(n * 7));
  return `4242 (${comm}) ${fields.join(" ")}\n`;
}

test("policy, real-time priority and nice come from fields 41, 40 and 19", () => {
  assert.deepEqual(parseSchedulingFromStat(statLine("node", 0, 0, 0)), { policy: "other", priority: 0, nice: 0 });
  assert.deepEqual(parseSchedulingFromStat(statLine("node", 0, 10, 1)), { policy: "fifo", priority: 10, nice: 0 });
  assert.deepEqual(parseSchedulingFromStat(statLine("node", 0, 50, 2)), { policy: "rr", priority: 50, nice: 0 });
  assert.deepEqual(parseSchedulingFromStat(statLine("node", -10, 0, 3)), { policy: "batch", priority: 0, nice: -10 });
  assert.deepEqual(parseSchedulingFromStat(statLine("node", 19, 0, 5)), { policy: "idle", priority: 0, nice: 19 });
});

test("a command name with spaces and parentheses does not shift the fields", () => {
  assert.deepEqual(parseSchedulingFromStat(statLine("a) (b c) 1 2 3", 5, 20, 1)), { policy: "fifo", priority: 20, nice: 5 });
});

test("malformed lines give undefined, not a guess", () => {
  for (const bad of ["", "4242 node S 1 2 3", "4242 (node) S 1 2", statLine("node", 0, 0, 4), statLine("node", 0, 0, 99), statLine("node", 0, 0, 0).replace(/ 0 0 /, " x 0 ")]) {
    assert.equal(parseSchedulingFromStat(bad), undefined, JSON.stringify(bad.slice(0, 40)));
  }
});

test("this process: a real /proc line parses; a missing file gives undefined", () => {
  const s = currentScheduling();
  assert.ok(s !== undefined);
  assert.ok(["other", "fifo", "rr", "batch", "idle"].includes(s.policy));
  assert.equal(currentScheduling("/proc/self/no-such-file"), undefined);
});

test("a process started under chrt reads its own policy (fifo 7 as root, batch otherwise)", () => {
  const script = `import("${new URL("../../agent/appliance/scheduling.ts", import.meta.url).href}").then((m) => process.stdout.write(JSON.stringify(m.currentScheduling())))`;
  // SCHED_FIFO needs CAP_SYS_NICE; SCHED_BATCH does not.
  const root = process.getuid?.() === 0;
  const policy = root ? ["-f", "7"] : ["-b", "0"];
  const out = execFileSync("chrt", [...policy, process.execPath, "--import", "tsx", "-e", script], { encoding: "utf8", timeout: 20_000 });
  // chrt keeps the nice value it inherits: a suite run under `nice` sees its own, not 0.
  const nice = os.getPriority();
  assert.deepEqual(JSON.parse(out), root ? { policy: "fifo", priority: 7, nice } : { policy: "batch", priority: 0, nice });
});
