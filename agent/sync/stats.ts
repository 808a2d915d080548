// Call statistics per operator and per group over one interval, built from the routing engine's
// call events. Pure bookkeeping: the sync feature feeds events and takes a report on its timer.
//
// Counting rules (docs/mqtt.md):
//   operator.offered   one per call.offered naming the operator (memberId)
//   operator.answered  one per call.answered naming the operator; answer time averaged
//   operator.missed    one per operator listed in a call.missed's `offered`
//   operator.busy      one per operator listed in a call.busy's `memberIds`
//   group.offered      one per call (the first call.offered of a callId for that group)
//   group.answered / missed / busy   one per call.answered / call.missed / call.busy of the group
//   queues             per group: joined / answered / abandoned / timedOut from queue.joined and
//                      queue.left, the answered calls' median and longest wait, the length now
import type { AgentEvents } from "../bus.ts";
import { QueueStatistics, type QueueFigures } from "../routing/queue-stats.ts";

export interface CallCounters {
  offered: number;
  answered: number;
  missed: number;
  busy: number;
  /** Sum of answer times of the answered calls, for the average. */
  answerMsTotal: number;
}

export interface CountersReport {
  offered: number;
  answered: number;
  missed: number;
  busy: number;
  avgAnswerMs: number | null;
}

export interface StatisticsReport {
  from: number;
  to: number;
  operators: Array<CountersReport & { userId: string }>;
  groups: Array<CountersReport & { groupId: string }>;
  /** Groups whose queue saw a call in the interval or has callers waiting now. */
  queues: QueueFigures[];
  /** Voicemail messages left per mailbox ("user/<id>" / "group/<id>") in the interval; absent when none. */
  voicemail?: Array<{ mailbox: string; messages: number }>;
}

/** Calls remembered to count a group's offer once per call (bounded: oldest forgotten first). */
const MAX_TRACKED_CALLS = 10_000;

export class CallStatistics {
  /** Counters keyed by operator (user) id. */
  private operators = new Map<string, CallCounters>();
  /** Counters keyed by group id. */
  private groups = new Map<string, CallCounters>();
  /** "<groupId>\0<callId>" of calls already counted as offered to a group. */
  private offeredCalls = new Set<string>();
  private readonly queues = new QueueStatistics();
  /** Messages left, keyed by mailbox ref. */
  private messages = new Map<string, number>();
  private from: number;

  constructor(now: number) {
    this.from = now;
  }

  offered(e: AgentEvents["call.offered"]): void {
    bump(this.operators, e.memberId).offered++;
    if (e.groupId === undefined) return;
    const key = `${e.groupId}\u0000${e.callId}`;
    if (this.offeredCalls.has(key)) return;
    this.offeredCalls.add(key);
    if (this.offeredCalls.size > MAX_TRACKED_CALLS) this.offeredCalls.delete(this.offeredCalls.values().next().value as string);
    bump(this.groups, e.groupId).offered++;
  }

  answered(e: AgentEvents["call.answered"]): void {
    const ms = Math.max(0, e.answerAfterMs);
    if (e.memberId !== undefined) {
      const c = bump(this.operators, e.memberId);
      c.answered++;
      c.answerMsTotal += ms;
    }
    if (e.groupId !== undefined) {
      const g = bump(this.groups, e.groupId);
      g.answered++;
      g.answerMsTotal += ms;
    }
  }

  missed(e: AgentEvents["call.missed"]): void {
    for (const id of new Set(e.offered)) bump(this.operators, id).missed++;
    if (e.groupId !== undefined) bump(this.groups, e.groupId).missed++;
  }

  busy(e: AgentEvents["call.busy"]): void {
    for (const id of new Set(e.memberIds)) bump(this.operators, id).busy++;
    if (e.groupId !== undefined) bump(this.groups, e.groupId).busy++;
  }

  queueJoined(e: AgentEvents["queue.joined"]): void {
    this.queues.joined(e.groupId);
  }

  voicemail(e: AgentEvents["voicemail.message"]): void {
    const ref = `${e.mailbox.kind}/${e.mailbox.id}`;
    this.messages.set(ref, (this.messages.get(ref) ?? 0) + 1);
  }

  queueLeft(e: AgentEvents["queue.left"]): void {
    this.queues.left(e.groupId, e.reason, e.waitedMs);
  }

  isEmpty(): boolean {
    return this.operators.size === 0 && this.groups.size === 0 && this.queues.isEmpty() && this.messages.size === 0;
  }

  /** The interval so far (with the queue lengths now); the counters keep running until reset(). */
  report(now: number, queueLengths: ReadonlyMap<string, number> = new Map()): StatisticsReport {
    return {
      from: this.from,
      to: now,
      operators: [...this.operators].sort(byKey).map(([userId, c]) => ({ userId, ...counters(c) })),
      groups: [...this.groups].sort(byKey).map(([groupId, c]) => ({ groupId, ...counters(c) })),
      queues: this.queues.report(queueLengths),
      ...(this.messages.size > 0 ? { voicemail: [...this.messages].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)).map(([mailbox, messages]) => ({ mailbox, messages })) } : {}),
    };
  }

  /** Starts a new interval (after its report was published). */
  reset(now: number): void {
    this.operators.clear();
    this.groups.clear();
    this.queues.reset();
    this.messages.clear();
    this.from = now;
  }
}

function bump(map: Map<string, CallCounters>, key: string): CallCounters {
  let c = map.get(key);
  if (!c) {
    c = { offered: 0, answered: 0, missed: 0, busy: 0, answerMsTotal: 0 };
    map.set(key, c);
  }
  return c;
}

function counters(c: CallCounters): CountersReport {
  return { offered: c.offered, answered: c.answered, missed: c.missed, busy: c.busy, avgAnswerMs: c.answered > 0 ? Math.round(c.answerMsTotal / c.answered) : null };
}

function byKey(a: [string, CallCounters], b: [string, CallCounters]): number {
  return a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0;
}
