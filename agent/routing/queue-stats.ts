// Queue statistics per group: how many callers waited, how they left the queue (answered by an
// operator, hung up while waiting, sent on by the maximum wait), how long the answered ones had
// waited (median and longest), and the queue's length now. Pure bookkeeping fed by the routing
// engine's queue.joined / queue.left events: the engine keeps one since start (ringedge status),
// the console sync one per statistics interval (MQTT), both with this class.
//
// Wait times are kept per group as a bounded sample (the most recent MAX_WAIT_SAMPLES answered
// waits), so a long interval on a busy queue costs bounded memory; the median is of that sample.

/** Why a call left the queue (bus event queue.left). */
export type QueueLeaveReason = "answered" | "abandoned" | "max-wait" | "callback" | "ended";
export const QUEUE_LEAVE_REASONS: readonly QueueLeaveReason[] = ["answered", "abandoned", "max-wait", "callback", "ended"];

export const MAX_WAIT_SAMPLES = 4096;

export interface QueueFigures {
  groupId: string;
  /** Calls waiting in the group's queue now. */
  waiting: number;
  /** Calls that entered the queue. */
  joined: number;
  /** Left the queue to an operator who answered. */
  answered: number;
  /** The caller hung up while waiting. */
  abandoned: number;
  /** Sent on to the group's `then` action by the maximum wait. */
  timedOut: number;
  /** Median and longest wait of the answered calls, ms; null when none was answered. */
  waitMedianMs: number | null;
  waitMaxMs: number | null;
}

interface Counters {
  joined: number;
  answered: number;
  abandoned: number;
  timedOut: number;
  waits: number[];
  waitMaxMs: number;
}

export class QueueStatistics {
  private readonly groups = new Map<string, Counters>();

  joined(groupId: string): void {
    this.of(groupId).joined++;
  }

  left(groupId: string, reason: QueueLeaveReason, waitedMs: number): void {
    const c = this.of(groupId);
    const ms = Math.max(0, Math.round(waitedMs));
    if (reason === "answered") {
      c.answered++;
      c.waits.push(ms);
      if (c.waits.length > MAX_WAIT_SAMPLES) c.waits.shift();
      if (ms > c.waitMaxMs) c.waitMaxMs = ms;
    } else if (reason === "abandoned") c.abandoned++;
    else if (reason === "max-wait") c.timedOut++;
  }

  isEmpty(): boolean {
    return this.groups.size === 0;
  }

  /** Figures per group (sorted by id), with the queue lengths now; a group with callers waiting is listed even when nothing else happened. */
  report(waitingNow: ReadonlyMap<string, number>): QueueFigures[] {
    const ids = new Set([...this.groups.keys(), ...[...waitingNow].filter(([, n]) => n > 0).map(([g]) => g)]);
    return [...ids].sort().map((groupId) => {
      const c = this.groups.get(groupId);
      return {
        groupId,
        waiting: waitingNow.get(groupId) ?? 0,
        joined: c?.joined ?? 0,
        answered: c?.answered ?? 0,
        abandoned: c?.abandoned ?? 0,
        timedOut: c?.timedOut ?? 0,
        waitMedianMs: c !== undefined && c.waits.length > 0 ? median(c.waits) : null,
        waitMaxMs: c !== undefined && c.answered > 0 ? c.waitMaxMs : null,
      };
    });
  }

  reset(): void {
    this.groups.clear();
  }

  private of(groupId: string): Counters {
    let c = this.groups.get(groupId);
    if (c === undefined) this.groups.set(groupId, (c = { joined: 0, answered: 0, abandoned: 0, timedOut: 0, waits: [], waitMaxMs: 0 }));
    return c;
  }
}

/** The median of a non-empty list (mean of the middle two for an even count), rounded to ms. */
export function median(values: readonly number[]): number {
  const v = [...values].sort((a, b) => a - b);
  const m = v.length >> 1;
  return v.length % 2 === 1 ? v[m]! : Math.round((v[m - 1]! + v[m]!) / 2);
}
