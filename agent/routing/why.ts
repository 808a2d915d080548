// "Why didn't my phone ring?": each call keeps the ring plans the pure core returned (plan.ts)
// and the few call-level decisions around them (closed, the responsible operator, the no-answer
// action). Recording costs the hot path one small object per step that points at the plan
// already made; nothing is copied or rendered until someone asks:
// - whyRecord() turns a call's trace into bounded plain JSON when the call ends (the call
//   record, the console's call event);
// - renderWhy() prints a record in plain words (`ringedge why`).
// WhyLog keeps the traces of the most recent calls in memory (bounded).
import type { Group } from "./model.ts";
import type { NoAnswerDecision, PassedGroup, RingPlan, SkipReason } from "./plan.ts";

/** One entry of a call's trace, as the engine records it (references, no copies). */
export type WhyEntry =
  /** A planStep result in `group`. */
  | { kind: "step"; at: number; group: Group; plan: RingPlan }
  /** The group was out of its working hours when the call reached it. */
  | { kind: "closed"; at: number; group: Group; until: number | undefined }
  /** The call left member distribution: pickNoAnswer's decision (`passed`: groups gone through at once). */
  | { kind: "action"; at: number; group: Group; decision: NoAnswerDecision; outOfHours: boolean; passed: PassedGroup[] | undefined }
  /** A waiting call was offered to a member who became free (selectFreeOperator's pick). */
  | { kind: "offer"; at: number; group: Group; memberId: string; deviceIds: readonly string[] };

export interface CallTrace {
  callId: string;
  startedAt: number;
  /** The caller's responsible operator and where that came from, when the group looks for one. */
  responsible?: { userId: string; source: "directory" | "memory" };
  entries: WhyEntry[];
}

// --- the plain-JSON form ---------------------------------------------------------------------

export type WhyReason = SkipReason | "responsible-first";

/** One decision about one operator (and device) in one step, as stored and sent. */
export interface WhyItem {
  userId: string;
  /** Absent: the operator was offered the call on `devices`. */
  reason?: WhyReason;
  /** Devices that rang (offered operators). */
  devices?: string[];
  /** Devices of an offered operator that did not ring, and why. */
  leftOut?: Array<{ deviceId: string; reason: "offline" | "cap" }>;
}

export interface WhyStep {
  at: number;
  groupId: string;
  kind: "step" | "closed" | "action" | "offer";
  /** step: the operators judged in this step; offer: the one a waiting call was offered to. */
  items?: WhyItem[];
  /** step: this was the responsible operator's own step (the group's other members waited). */
  responsible?: string;
  /** step: nobody was left to ring in this group. */
  exhausted?: boolean;
  /** step: exhausted because no member had any device online. */
  allOffline?: boolean;
  /** closed: when the group opens next (epoch ms); absent when not within the schedule's reach. */
  opensAt?: number;
  /** action: what the call got (voicemail, forward, overflow, wait, hang up), in words. */
  action?: string;
  /** action: the action was the group's out-of-hours action. */
  outOfHours?: boolean;
  /** action: groups an overflow went through at once and why. */
  passed?: PassedGroup[];
}

export interface WhyRecord {
  responsible?: { userId: string; source: "directory" | "memory" };
  steps: WhyStep[];
  /** Items left out to keep the record bounded. */
  truncated?: number;
}

/**
 * Most operator items the stored and sent record of one call keeps (the call log holds 5,000
 * calls; a 1,000-member group skipped step by step is big). The in-memory log keeps up to
 * MAX_WHY_MEMORY_ITEMS for the recent calls.
 */
export const MAX_WHY_ITEMS = 100;
export const MAX_WHY_MEMORY_ITEMS = 2000;
/** Most steps one call's record keeps. */
export const MAX_WHY_STEPS = 100;

/** A user's devices in site order (SiteIndex.devicesByOwner), to name the ones left out for the cap. */
export type DevicesOf = (userId: string) => ReadonlyArray<{ id: string }> | undefined;

/**
 * The trace as bounded plain JSON (off the hot path: when the call ends, or when asked). With
 * `devicesOf`, an offered operator's devices that neither rang nor were offline are listed as
 * left out for the cap (the plan does not record those, to stay cheap).
 */
export function whyRecord(trace: CallTrace, maxItems: number = MAX_WHY_ITEMS, devicesOf?: DevicesOf): WhyRecord {
  const steps: WhyStep[] = [];
  let budget = maxItems;
  let truncated = 0;
  const entries = trace.entries.length > MAX_WHY_STEPS ? trace.entries.slice(0, MAX_WHY_STEPS) : trace.entries;
  for (const e of entries) {
    const at = e.at;
    const groupId = e.group.id;
    if (e.kind === "closed") {
      const s: WhyStep = { at, groupId, kind: "closed" };
      if (e.until !== undefined) s.opensAt = e.until;
      steps.push(s);
      continue;
    }
    if (e.kind === "offer") {
      if (budget-- > 0) steps.push({ at, groupId, kind: "offer", items: [{ userId: e.memberId, devices: [...e.deviceIds] }] });
      else truncated++;
      continue;
    }
    if (e.kind === "action") {
      const s: WhyStep = { at, groupId: e.decision.fromGroupId, kind: "action", action: describeDecision(e.decision).slice(0, 256) };
      if (e.outOfHours) s.outOfHours = true;
      if (e.passed !== undefined && e.passed.length > 0) s.passed = e.passed.map((p) => ({ ...p }));
      steps.push(s);
      continue;
    }
    const p = e.plan;
    const items: WhyItem[] = [];
    for (const r of p.ring) {
      if (budget <= 0) {
        truncated++;
        continue;
      }
      budget--;
      const item: WhyItem = { userId: r.memberId, devices: [...r.deviceIds] };
      const left = (p.leftOut ?? []).filter((l) => l.memberId === r.memberId).map((l) => ({ deviceId: l.deviceId, reason: l.reason }));
      for (const d of devicesOf?.(r.memberId) ?? []) {
        if (!r.deviceIds.includes(d.id) && !left.some((l) => l.deviceId === d.id)) left.push({ deviceId: d.id, reason: "cap" });
      }
      if (left.length > 0) item.leftOut = left;
      items.push(item);
    }
    for (const s of p.skipped) {
      if (budget <= 0) {
        truncated++;
        continue;
      }
      budget--;
      items.push({ userId: s.memberId, reason: s.reason });
    }
    const s: WhyStep = { at, groupId, kind: "step", items };
    if (p.responsible !== undefined) s.responsible = p.responsible;
    if (p.exhausted) s.exhausted = true;
    if (p.exhausted && p.allOffline) s.allOffline = true;
    steps.push(s);
  }
  truncated += trace.entries.length - entries.length;
  const out: WhyRecord = { steps };
  if (trace.responsible !== undefined) out.responsible = { ...trace.responsible };
  if (truncated > 0) out.truncated = truncated;
  return out;
}

/** A no-answer decision in a few words. */
export function describeDecision(d: NoAnswerDecision): string {
  switch (d.kind) {
    case "voicemail":
      return "uri" in d ? `voicemail ${d.uri}` : `voicemail ${d.mailbox.kind}/${d.mailbox.id}`;
    case "forward":
      return d.source === "mobile" ? `forwarded to ${d.memberId}'s mobile` : `forwarded to ${d.number}`;
    case "wait-for-operator":
      return "waiting for a free operator";
    case "overflow-group":
      return `overflow to group ${d.groupId}`;
    case "hangup":
      return `hung up (${d.status}${d.cause === "configured" ? "" : `, ${d.cause}`})`;
  }
}

// --- plain words ------------------------------------------------------------------------------

const REASON_TEXT: Record<WhyReason, string> = {
  "unknown-user": "not a user of the site (the configuration changed during the call)",
  offline: "offline: no device registered and reachable",
  busy: "busy: at the call limit",
  away: "away (the group skips operators who are away)",
  dnd: "do not disturb (skipped in every group)",
  "logged-out": "logged out of this group (by a feature code on the phone or by the console)",
  "wrap-up": "in wrap-up time after a call through this group",
  cap: "beyond the cap of 10 desk phones ringing for one call",
  "responsible-first": "waiting: the caller's responsible operator rang first",
};

/** Words for a skip reason (unknown ones, e.g. from a newer agent's record, are shown as they are). */
export function reasonText(reason: string): string {
  return (REASON_TEXT as Record<string, string>)[reason] ?? reason;
}

export interface RenderOptions {
  /** Only what concerns this operator (and the call-level lines). */
  userId?: string;
  /** Members of a group now, to say "not offered" for an operator no step mentions. */
  membersOf?: (groupId: string) => readonly string[] | undefined;
  /** Time as people read it (default ISO 8601 UTC). */
  time?: (epochMs: number) => string;
}

/** The record in plain words, one line per fact. */
export function renderWhy(header: { callId: string; at: number; caller?: string; target?: string; outcome?: string }, why: WhyRecord, opts: RenderOptions = {}): string[] {
  const time = opts.time ?? ((t: number) => new Date(t).toISOString());
  const lines: string[] = [];
  const who = opts.userId;
  lines.push(`call ${header.callId} at ${time(header.at)}${header.caller ? ` from ${header.caller}` : ""}${header.target ? ` to ${header.target}` : ""}${header.outcome ? `: ${header.outcome}` : ""}`);
  if (why.responsible !== undefined) lines.push(`  responsible operator: ${why.responsible.userId} (${why.responsible.source === "directory" ? "the console's directory of known callers" : "answered this caller last"})`);
  let n = 0;
  let mentioned = false;
  for (const s of why.steps) {
    if (s.kind === "closed") {
      lines.push(`  group ${s.groupId} was closed (out of hours)${s.opensAt !== undefined ? `; it opens ${time(s.opensAt)}` : ""}`);
      if (who !== undefined && opts.membersOf?.(s.groupId)?.includes(who) === true) {
        lines.push(`  ${who}: not offered: group ${s.groupId} was out of hours`);
        mentioned = true;
      }
      continue;
    }
    if (s.kind === "offer") {
      for (const it of s.items ?? []) {
        if (who !== undefined && it.userId !== who) continue;
        mentioned ||= it.userId === who;
        lines.push(`  offered while waiting, in group ${s.groupId}: ${it.userId} rang on ${(it.devices ?? []).join(", ") || "(no device)"}`);
      }
      continue;
    }
    if (s.kind === "action") {
      for (const p of s.passed ?? []) lines.push(`  group ${p.groupId} passed at once: ${p.reason === "closed" ? "out of hours" : "no member online"}`);
      lines.push(`  then: ${s.action ?? "?"}${s.outOfHours ? " (the out-of-hours action)" : ""}`);
      continue;
    }
    n++;
    const items = s.items ?? [];
    const head = `  step ${n} in group ${s.groupId}${s.responsible !== undefined ? ` (the responsible operator ${s.responsible} alone)` : ""}:`;
    const body: string[] = [];
    for (const it of items) {
      if (who !== undefined && it.userId !== who) continue;
      mentioned ||= it.userId === who;
      if (it.reason === undefined) {
        const left = (it.leftOut ?? []).map((l) => `${l.deviceId} ${l.reason === "offline" ? "offline" : "beyond the 10-phone cap"}`);
        body.push(`    ${it.userId}: rang on ${(it.devices ?? []).join(", ") || "(no device)"}${left.length > 0 ? `; not on ${left.join(", ")}` : ""}`);
      } else body.push(`    ${it.userId}: skipped: ${reasonText(it.reason)}`);
    }
    if (who !== undefined && s.responsible !== undefined && s.responsible !== who && opts.membersOf?.(s.groupId)?.includes(who) === true) {
      body.push(`    ${who}: not yet: ${reasonText("responsible-first").replace(/^waiting: /, "")}`);
      mentioned = true;
    }
    if (s.exhausted) body.push(`    nobody left to ring${s.allOffline ? " (no member online)" : ""}`);
    if (who === undefined || body.length > 0) lines.push(head, ...body);
  }
  if (why.truncated !== undefined) lines.push(`  (${why.truncated} more entries not kept)`);
  if (who !== undefined && !mentioned) {
    const groups = [...new Set(why.steps.map((s) => s.groupId))];
    const member = groups.filter((g) => opts.membersOf?.(g)?.includes(who) === true);
    lines.push(
      member.length > 0
        ? `  ${who}: never judged: the call was answered or left group ${member.join(", ")} before ${who}'s turn`
        : `  ${who}: not a member of the group${groups.length === 1 ? "" : "s"} this call went to (${groups.join(", ") || "none"})`,
    );
  }
  return lines;
}

/** Whether a record concerns a user: judged in some step, or a member of a group it reached. */
export function involves(why: WhyRecord, userId: string, membersOf?: (groupId: string) => readonly string[] | undefined): boolean {
  for (const s of why.steps) {
    if (s.responsible === userId) return true;
    if (s.items?.some((i) => i.userId === userId) === true) return true;
    if (membersOf?.(s.groupId)?.includes(userId) === true) return true;
  }
  return why.responsible?.userId === userId;
}

// --- recent calls in memory --------------------------------------------------------------------

/** Calls whose trace stays in memory (the store's call log keeps whyRecord beyond that). */
export const WHY_LOG_SIZE = 256;

export interface WhyLogEntry {
  trace: CallTrace;
  /** Filled when the call ended. */
  record?: WhyRecord;
  caller?: string;
  target?: string;
  outcome?: string;
}

/** The traces of the most recent calls, by Call-ID, oldest dropped first. */
export class WhyLog {
  /** Keyed by SIP Call-ID; Map order is insertion order, so the first key is the oldest call. */
  private readonly byId = new Map<string, WhyLogEntry>();

  constructor(private readonly size: number = WHY_LOG_SIZE) {}

  /** Starts a call's trace (the engine pushes entries to it). */
  open(callId: string, startedAt: number): CallTrace {
    const trace: CallTrace = { callId, startedAt, entries: [] };
    this.byId.delete(callId);
    this.byId.set(callId, { trace });
    if (this.byId.size > this.size) this.byId.delete(this.byId.keys().next().value as string);
    return trace;
  }

  /** The call ended: its plain record (kept for later questions) and labels. */
  close(trace: CallTrace, labels: { caller: string; target: string; outcome: string }, devicesOf?: DevicesOf): WhyRecord {
    const record = whyRecord(trace, MAX_WHY_MEMORY_ITEMS, devicesOf);
    const e = this.byId.get(trace.callId);
    if (e !== undefined && e.trace === trace) Object.assign(e, { record, ...labels });
    return record;
  }

  get(callId: string): WhyLogEntry | undefined {
    return this.byId.get(callId);
  }

  /** Newest first. */
  recent(): WhyLogEntry[] {
    return [...this.byId.values()].reverse();
  }
}
