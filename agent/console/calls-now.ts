// Calls ringing now, for the installer console: kept from the routing engine's bus events
// (call.offered starts or updates one, call.answered / call.missed end it). Memory is bounded:
// a call never ended by an event (it cannot happen, but the bus is not a contract of that)
// is forgotten after maxAgeMs.
import type { EventBus } from "../bus.ts";
import type { CommandTable } from "./control.ts";

export interface RingingCall {
  callId: string;
  caller: string;
  groupId: string | undefined;
  /** Members offered so far, in order. */
  offered: string[];
  /** Epoch ms of the first offer. */
  since: number;
}

const MAX_TRACKED = 10_000;

export class CallsNow {
  /** Ringing calls keyed by Call-ID. */
  private readonly ringing = new Map<string, RingingCall>();
  private readonly off: Array<() => void> = [];

  constructor(private readonly maxAgeMs = 3_600_000, private readonly now: () => number = Date.now) {}

  start(bus: EventBus): void {
    this.off.push(
      bus.on("call.offered", (e) => {
        const cur = this.ringing.get(e.callId);
        if (cur) {
          if (!cur.offered.includes(e.memberId)) cur.offered.push(e.memberId);
          cur.groupId = e.groupId;
          return;
        }
        if (this.ringing.size >= MAX_TRACKED) this.prune(true);
        this.ringing.set(e.callId, { callId: e.callId, caller: e.caller, groupId: e.groupId, offered: [e.memberId], since: e.at });
      }),
      bus.on("call.answered", (e) => void this.ringing.delete(e.callId)),
      bus.on("call.missed", (e) => void this.ringing.delete(e.callId)),
    );
  }

  stop(): void {
    for (const f of this.off.splice(0)) f();
  }

  list(): RingingCall[] {
    this.prune(false);
    return [...this.ringing.values()].map((c) => ({ ...c, offered: [...c.offered] }));
  }

  private prune(oldest: boolean): void {
    const limit = this.now() - this.maxAgeMs;
    for (const [id, c] of this.ringing) if (c.since < limit) this.ringing.delete(id);
    if (oldest && this.ringing.size >= MAX_TRACKED) {
      const first = this.ringing.keys().next();
      if (!first.done) this.ringing.delete(first.value);
    }
  }
}

export function callCommands(calls: CallsNow): CommandTable {
  return { "call.list": () => calls.list() };
}
