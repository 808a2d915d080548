// The agent's internal event bus: features (registrar, presence, routing, sync) publish
// typed events here and never call each other's internals (Zigbee2MQTT's extension lesson).
import { EventEmitter } from "node:events";
import type { QueueLeaveReason } from "./routing/queue-stats.ts";
import type { WhyRecord } from "./routing/why.ts";
import type { MailboxCounts, MailboxOwner } from "./voicemail/types.ts";

export type PresenceReason = "registered" | "unregistered" | "expired" | "keepalive-timeout" | "keepalive-ok" | "restored";

export interface AgentEvents {
  /** A device's reachability changed (registration and OPTIONS keep-alive combined). */
  "device.presence": { deviceId: string; username: string; online: boolean; reason: PresenceReason; at: number };
  /** A REGISTER changed a device's bindings (added, refreshed or removed). */
  "device.bindings": { deviceId: string; aor: string; contacts: number; at: number };
  /** An authentication failure, for counters and logs (never carries secrets). */
  "auth.failure": { source: string; username: string | undefined; reason: string; at: number };
  /** A source address was silently banned after repeated failures. */
  "auth.ban": { source: string; until: number };
  /** Overload control started (cause: the signal over its limit) or stopped refusing new requests with 503 (sip/overload.ts). */
  "sip.overload": { active: boolean; cause: string | null; at: number };
  /** A site configuration snapshot (site file or console push) was applied and saved. */
  "site.applied": { version: number; source: "file" | "console" };
  /** A member's devices started ringing for a call (routing engine, after the forks went out). */
  "call.offered": { callId: string; groupId: string | undefined; memberId: string; deviceIds: string[]; caller: string; at: number; /** The caller's From tag (BLF dialog ids). */ callerTag?: string };
  /** A call was answered; memberId undefined when no member did (voicemail, a forward, the trunk). */
  "call.answered": { callId: string; groupId: string | undefined; memberId: string | undefined; deviceId: string | undefined; caller: string; answerAfterMs: number; at: number; /** Group calls: why each operator was or was not offered (routing/why.ts). */ why?: WhyRecord };
  /** A call ended with no member answering; `offered` lists who was offered, in order. */
  "call.missed": { callId: string; groupId: string | undefined; caller: string; target: string; offered: string[]; outcome: string; at: number; /** The caller hung up before anyone answered (CANCEL). */ abandoned?: boolean; /** Group calls: why each operator was or was not offered. */ why?: WhyRecord };
  /** A site device placed a call (after the forks went out): the caller's side of the dialog (BLF). */
  "call.placed": { callId: string; callerTag: string; userId: string | undefined; deviceId: string; target: string; at: number };
  /** A ringing member's device sent 180/183 with a To tag (its early dialog, BLF). */
  "call.ringing": { callId: string; memberId: string | undefined; deviceId: string | undefined; calleeTag: string; at: number };
  /** A member stopped ringing for a call without answering it (step ended, declined, offline). */
  "call.offer-ended": { callId: string; memberId: string; at: number };
  /** The engine is done with a call (answered and hung up, missed, rejected), after call.missed. */
  "call.ended": { callId: string; at: number };
  /** Members passed over because they were at their call limit (or a direct call refused 486). */
  "call.busy": { callId: string; groupId: string | undefined; memberIds: string[]; caller: string; at: number };
  /** A call entered a group's queue (wait-for-operator); position 1 = next to be served. */
  "queue.joined": { callId: string; groupId: string; position: number; at: number };
  /** A call left the queue: an operator answered, the caller hung up, the maximum wait sent it on, or it ended otherwise. */
  "queue.left": { callId: string; groupId: string; reason: QueueLeaveReason; waitedMs: number; at: number };
  /** An operator's own state changed (phone feature code, console push, site file; presence/operators.ts). */
  "operator.state": { userId: string; availability: "available" | "away" | "dnd"; loggedOutOf: string[]; source: "phone" | "console" | "file"; deviceId?: string; at: number };
  /** A second client asked for a phone's bootstrap or config after another claimed it; its credentials were rotated. */
  "provisioning.conflict": { deviceId: string; mac: string; claimedIp: string; ip: string; stage: "bootstrap" | "full"; at: number };
  /** A window of calls had more first forks over latencyBudgetMs than healthOverBudgetPct allows (appliance/health.ts). */
  "latency.over-budget": { calls: number; overBudget: number; pct: number; budgetMs: number; at: number };
  /** A call's first fork went out (routing engine): INVITE received → first forked INVITE sent, µs. */
  "call.first-fork": { callId: string; groupId: string | undefined; latencyUs: number; at: number };
  /** The provisioning server answered a phone (result: served, bootstrap, full, firmware, or why it refused). */
  "provisioning.request": { vendor: string | undefined; model: string | undefined; mac: string | undefined; result: string; status: number; source: string; at: number };
  /** The store wrote its file (ok false: the write failed and will be retried). */
  "store.saved": { ms: number; ok: boolean; at: number };
  /** A mailbox's counts changed: a message left, heard, saved or deleted, or expired (voicemail/). */
  "voicemail.changed": { mailbox: MailboxOwner; at: number } & MailboxCounts;
  /** A caller left a message in a mailbox on the appliance (voicemail/deposit.ts); its WAV is stored and complete. */
  "voicemail.message": { id: string; mailbox: MailboxOwner; caller: string; callId: string; receivedAt: number; durationMs: number; bytes: number; sha256: string; at: number };
  /** A waiting caller accepted the callback offer: the callback keeps the caller's place (epoch ms it entered the queue). */
  "callback.requested": { id: string; groupId: string; number: string; place: number; at: number };
  /** A callback joined an operator and the caller (attempts: calls to the caller, this one included). */
  "callback.connected": { id: string; groupId: string; number: string; memberId: string; attempts: number; at: number };
  /** A callback's caller was not reached after every retry. */
  "callback.missed": { id: string; groupId: string; number: string; attempts: number; at: number };
  /** An installer or console change: who (control socket, serial console, console over MQTT), what, on what. */
  "audit.change": { actor: string; action: string; target: string | undefined; at: number };
}

export type EventName = keyof AgentEvents;

export class EventBus {
  private readonly emitter = new EventEmitter();

  constructor() {
    // Every feature subscribes a handful of listeners; no leak warning for that.
    this.emitter.setMaxListeners(100);
  }

  on<K extends EventName>(name: K, listener: (event: AgentEvents[K]) => void): () => void {
    this.emitter.on(name, listener);
    return () => this.emitter.off(name, listener);
  }

  emit<K extends EventName>(name: K, event: AgentEvents[K]): void {
    // A failing listener must not break the publisher (often the SIP hot path).
    for (const listener of this.emitter.listeners(name)) {
      try {
        (listener as (e: AgentEvents[K]) => void)(event);
      } catch (err) {
        process.emitWarning(`event listener for ${name} threw: ${(err as Error).message}`);
      }
    }
  }
}
