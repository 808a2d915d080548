// Callbacks for impatient callers: the pure decision core (issue 12). No timers, no I/O, no SIP:
// the callback service (callback-service.ts) owns those and asks this module what to do.
//
// Decisions:
// - Place. A callback keeps the caller's place: its `place` is the epoch ms the caller entered
//   the queue, the same key the routing engine orders its waiting callers by. Waiting callers
//   and pending callbacks form ONE queue per group in place order (queueOrder); a free operator
//   serves its head, so a callback never jumps ahead of a caller who came earlier and is still
//   waiting, and a caller who came later never jumps ahead of a callback.
// - Rate. A callback is started only when the engine found a free operator for it, and that
//   operator stays reserved (CallbackBook.operatorsBusy) from the first INVITE to the end of the
//   callback call: at most one callback per free operator at a time, never released faster than
//   operators free up (the FreePBX complaint: all callbacks dialled at once).
// - Failures. The operator not answering is not the caller's fault: the callback goes back to
//   its place (attempts unchanged) for the next free operator. The caller not answering or busy
//   counts an attempt; it is tried again after retryDelayS, at its place, up to `retries`
//   further attempts, then recorded as missed.
import type { CallbackSettings } from "./model.ts";

export interface PendingCallback {
  /** Stable id (survives a restart). */
  id: string;
  groupId: string;
  /** The number to call back through the trunk (P-Asserted-Identity, else From user part). */
  number: string;
  /** Epoch ms the caller entered the queue: its place, kept. */
  place: number;
  /** Epoch ms the caller pressed 1. */
  requestedAt: number;
  /** Attempts made to reach the caller that failed (caller busy, no answer). */
  attempts: number;
  /** Not tried again before this epoch ms (a retry's delay); 0 = at once. */
  notBefore: number;
  /** The operator being called or connected for it now; undefined while it waits. */
  operator?: string;
}

/** A caller waiting in the engine's queue, as the merge needs it. */
export interface WaitingCaller<T> {
  groupId: string;
  /** Epoch ms it entered the queue. */
  place: number;
  /** Already being offered to an operator (ringing): not waiting for one. */
  offering: boolean;
  ref: T;
}

export type QueueItem<T> = { kind: "caller"; place: number; groupId: string; ref: T } | { kind: "callback"; place: number; groupId: string; callback: PendingCallback };

/**
 * What a free operator may serve, head first: waiting callers not being offered and callbacks
 * not in progress and due, merged by place (a tie goes to the caller on the line). Callbacks of
 * a group without a queue any more are left out by the caller (the service), not here.
 */
export function queueOrder<T>(callers: readonly WaitingCaller<T>[], callbacks: readonly PendingCallback[], now: number): QueueItem<T>[] {
  const items: QueueItem<T>[] = [];
  for (const c of callers) if (!c.offering) items.push({ kind: "caller", place: c.place, groupId: c.groupId, ref: c.ref });
  for (const cb of callbacks) if (cb.operator === undefined && cb.notBefore <= now) items.push({ kind: "callback", place: cb.place, groupId: cb.groupId, callback: cb });
  // Stable sort: equal places keep callers (pushed first) ahead.
  items.sort((a, b) => a.place - b.place);
  return items;
}

export type CallerOutcome = { kind: "retry"; at: number } | { kind: "missed" };

/** Pending callbacks and their state changes. Keyed by id; every change says whether it happened. */
export class CallbackBook {
  private readonly byId = new Map<string, PendingCallback>();

  constructor(initial: readonly PendingCallback[] = []) {
    for (const cb of initial) this.byId.set(cb.id, { ...cb, operator: undefined });
  }

  all(): PendingCallback[] {
    return [...this.byId.values()].sort((a, b) => a.place - b.place);
  }

  get(id: string): PendingCallback | undefined {
    return this.byId.get(id);
  }

  size(): number {
    return this.byId.size;
  }

  /** Records a callback at the caller's place. A second one for the same number and group keeps the earlier place. */
  add(cb: Omit<PendingCallback, "attempts" | "notBefore" | "operator">): PendingCallback {
    for (const old of this.byId.values()) if (old.groupId === cb.groupId && old.number === cb.number) return old;
    const entry: PendingCallback = { ...cb, attempts: 0, notBefore: 0 };
    this.byId.set(entry.id, entry);
    return entry;
  }

  /** Operators reserved by callbacks being set up or connected (not offered anything else). */
  operatorsBusy(): Set<string> {
    const s = new Set<string>();
    for (const cb of this.byId.values()) if (cb.operator !== undefined) s.add(cb.operator);
    return s;
  }

  /** The callback is started with `operator`. False when it is gone or already in progress, or the operator is taken. */
  begin(id: string, operator: string): boolean {
    const cb = this.byId.get(id);
    if (cb === undefined || cb.operator !== undefined || this.operatorsBusy().has(operator)) return false;
    cb.operator = operator;
    return true;
  }

  /** The operator did not answer (or could not be called): back to its place, same attempts. */
  operatorFailed(id: string): boolean {
    const cb = this.byId.get(id);
    if (cb === undefined) return false;
    cb.operator = undefined;
    return true;
  }

  /** The caller was not reached (busy, no answer, trunk failure): retry after the delay, or missed. */
  callerFailed(id: string, now: number, settings: Pick<CallbackSettings, "retries" | "retryDelayS">): CallerOutcome | undefined {
    const cb = this.byId.get(id);
    if (cb === undefined) return undefined;
    cb.operator = undefined;
    cb.attempts++;
    if (cb.attempts > settings.retries) {
      this.byId.delete(id);
      return { kind: "missed" };
    }
    cb.notBefore = now + settings.retryDelayS * 1000;
    return { kind: "retry", at: cb.notBefore };
  }

  /** The operator and the caller are joined: the callback is done. */
  connected(id: string): PendingCallback | undefined {
    const cb = this.byId.get(id);
    this.byId.delete(id);
    return cb;
  }

  /** Removes a callback (its group lost its callback setting, or the installer dropped it). */
  remove(id: string): PendingCallback | undefined {
    const cb = this.byId.get(id);
    this.byId.delete(id);
    return cb;
  }

  /** The earliest notBefore in the future, for the retry timer. */
  nextDue(now: number): number | undefined {
    let next: number | undefined;
    for (const cb of this.byId.values()) if (cb.operator === undefined && cb.notBefore > now && (next === undefined || cb.notBefore < next)) next = cb.notBefore;
    return next;
  }
}

// --- persistence format ----------------------------------------------------------------------------

/** Bounds for a persisted file: it is read back at start, and may have been edited or damaged. */
export const CALLBACKS_MAX = 10_000;
const ID_RE = /^[A-Za-z0-9._-]{1,64}$/;
/** Digits with an optional leading "+": what is dialled through the trunk. */
export const CALLBACK_NUMBER_RE = /^\+?[0-9]{2,20}$/;

export function callbacksToJson(book: CallbackBook): { callbacks: Array<Omit<PendingCallback, "operator">> } {
  return { callbacks: book.all().map(({ id, groupId, number, place, requestedAt, attempts, notBefore }) => ({ id, groupId, number, place, requestedAt, attempts, notBefore })) };
}

/** Reads persisted callbacks; every problem by JSON path. Total: never throws. */
export function parseCallbacks(raw: unknown): { ok: true; value: PendingCallback[] } | { ok: false; error: string } {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) return { ok: false, error: "$: must be an object" };
  const list = (raw as Record<string, unknown>).callbacks;
  if (!Array.isArray(list)) return { ok: false, error: "callbacks: must be an array" };
  if (list.length > CALLBACKS_MAX) return { ok: false, error: `callbacks: at most ${CALLBACKS_MAX}` };
  const out: PendingCallback[] = [];
  const ids = new Set<string>();
  const time = (v: unknown): boolean => typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
  for (let i = 0; i < list.length; i++) {
    const e: unknown = list[i];
    const p = `callbacks[${i}]`;
    if (typeof e !== "object" || e === null || Array.isArray(e)) return { ok: false, error: `${p}: must be an object` };
    const o = e as Record<string, unknown>;
    if (typeof o.id !== "string" || !ID_RE.test(o.id)) return { ok: false, error: `${p}.id: must be 1 to 64 letters, digits, . _ -` };
    if (ids.has(o.id)) return { ok: false, error: `${p}.id: duplicate ${o.id}` };
    if (typeof o.groupId !== "string" || o.groupId.length === 0 || o.groupId.length > 64) return { ok: false, error: `${p}.groupId: must be a group id` };
    if (typeof o.number !== "string" || !CALLBACK_NUMBER_RE.test(o.number)) return { ok: false, error: `${p}.number: must be a phone number (digits, optional +)` };
    for (const k of ["place", "requestedAt", "notBefore"] as const) if (!time(o[k])) return { ok: false, error: `${p}.${k}: must be epoch milliseconds` };
    if (typeof o.attempts !== "number" || !Number.isInteger(o.attempts) || o.attempts < 0 || o.attempts > 100) return { ok: false, error: `${p}.attempts: must be an integer from 0 to 100` };
    ids.add(o.id);
    out.push({ id: o.id, groupId: o.groupId, number: o.number, place: o.place as number, requestedAt: o.requestedAt as number, attempts: o.attempts, notBefore: o.notBefore as number });
  }
  return { ok: true, value: out };
}
