// How the kernel schedules the agent, read from /proc/self/stat (proc(5)): the policy and
// real-time priority a supervisor gave it (the example unit sets SCHED_FIFO, see
// firmware-hooks/README.md), and its nice value. Shown in `ringedge status` so an installer can
// see that the appliance's tuning is in force. Read-only: Node cannot change its own policy.
import fs from "node:fs";

export type SchedulingPolicy = "other" | "fifo" | "rr" | "batch" | "idle" | "deadline";

export interface Scheduling {
  policy: SchedulingPolicy;
  /** Real-time priority, 1–99 under fifo and rr; 0 otherwise. */
  priority: number;
  /** Nice value, -20–19 (meaningful under other and batch). */
  nice: number;
}

// include/uapi/linux/sched.h
const POLICIES: Record<number, SchedulingPolicy> = { 0: "other", 1: "fifo", 2: "rr", 3: "batch", 5: "idle", 6: "deadline" };

/**
 * Parses the text of /proc/<pid>/stat. The command name (field 2) is in parentheses and may
 * itself hold spaces and parentheses, so fields are counted from the last ")". Returns
 * undefined for anything that is not a whole stat line.
 */
export function parseSchedulingFromStat(text: string): Scheduling | undefined {
  const close = text.lastIndexOf(")");
  if (close < 0) return undefined;
  // Fields 3 onward; proc(5) numbers them from 1, so field n is rest[n - 3].
  const rest = text.slice(close + 1).trim().split(/\s+/);
  const field = (n: number): number | undefined => {
    const raw = rest[n - 3];
    return raw !== undefined && /^-?\d+$/.test(raw) ? Number(raw) : undefined;
  };
  const nice = field(19);
  const priority = field(40);
  const policyNumber = field(41);
  if (nice === undefined || priority === undefined || policyNumber === undefined) return undefined;
  const policy = POLICIES[policyNumber];
  if (policy === undefined) return undefined;
  return { policy, priority, nice };
}

/** This process's scheduling, or undefined where /proc is not there (not Linux). */
export function currentScheduling(statPath = "/proc/self/stat"): Scheduling | undefined {
  try {
    return parseSchedulingFromStat(fs.readFileSync(statPath, "utf8"));
  } catch {
    return undefined;
  }
}
