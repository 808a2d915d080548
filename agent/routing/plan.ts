// "Who rings now": the pure decision core of call distribution (DESIGN principle 2).
// A pure function of (group, presence snapshot, counters, call state, now) → ring plan. No
// sockets, no timers, no clock: the engine (agent/routing/engine.ts) owns those, calls
// planStep at the start of a call and again at plan.nextStepAt, and drives the SIP branches.
//
// Decisions this module makes (the product reference leaves them open):
// - Eligibility. A member rings when the user exists, has at least one online device, is below
//   callLimit (0 = unlimited; activeCalls counts the dialogs the proxy tracks), is not in dnd,
//   is not away when group.checkAvailability, and has not logged out of the group (operators'
//   own state, operator-state.ts). Ineligible members are reported in plan.skipped with the reason.
// - Devices. A member rings on all online devices at once, in the order the console listed
//   them. Soft devices always ring. Physical devices ring while the cap has room; a member's
//   physical devices beyond the cap are left out. A member left with nothing to ring is skipped
//   with reason "cap".
// - The cap (maxPhysical, default 10) is a hard limit on physical devices ringing for one call
//   at any moment, in every strategy. simultaneous fills it in member order; cumulative stops
//   adding physical devices once it is full but keeps adding members who have soft devices.
// - Turns. sequential / evenly / cumulative make one pass: a member who was offered, or
//   skipped because ineligible when their turn came, has had their turn for this call
//   (CallState.passed). Members later in the order are judged when their turn comes, so a phone
//   that registers mid-call still gets its turn.
// - Steps. Each step lasts ringCount × ringUnitMs from the moment it is planned. The step after
//   the last member's turn is the exhausted one: everything stops and the engine applies the
//   group's no-answer action (pickNoAnswer). A step that finds nobody to ring is exhausted at
//   once; allOffline says whether that is because no member has any online device (an empty
//   group counts as all offline), which makes overflow immediate.
// - Early moves. The engine may call planStep before nextStepAt (e.g. every branch of the
//   ringing member failed with 486/603): the call simply moves to its next step.
// - Presence between steps. Members already ringing are not re-judged mid-step; the engine
//   cancels branches of devices that drop.
// - Wrap-up (issue 14). A member whose wrap-up for this group runs until after `now`
//   (PlanInput.wrapUpUntil, kept by the engine) is skipped with reason "wrap-up", after the
//   offline / busy / availability checks: the most telling reason is the one reported.
// - The responsible operator first (issue 14). With group.responsibleFirst and a responsible
//   user for the caller (PlanInput.responsible), the first step rings that user alone, if
//   planStep's eligibility lets them (online, not busy, not in wrap-up, and available where the
//   group checks availability; a user who is not a member may be responsible too), for
//   responsibleFirst.ringCount rings. The next step stops them and starts the group's strategy
//   as if the call had just arrived: the responsible user keeps their usual place in it. Not
//   eligible: the strategy starts at once and the plan says why (skipped).
// - Reasons. Every plan says who was skipped and why (skipped) and which of an offered member's
//   devices were offline (RingPlan.leftOut; those beyond the cap are derived by why.ts). The engine
//   keeps these plan objects per call for "why didn't my phone ring?" (why.ts renders them);
//   nothing here allocates for reasons unless there is one.

import type { Availability, DeviceRef, FinalNoAnswerAction, Group, HangupStatus, NoAnswerAction, User } from "./model.ts";
import { EXTENSION_RE, MAX_PHYSICAL_RINGING, RING_COUNT_MAX, RING_COUNT_MIN, RING_UNIT_MS, parseMailboxRef } from "./model.ts";

/** What presence knows now. Both collections are kept incrementally by their owners; read only here. */
export interface PresenceSnapshot {
  /** Ids of devices with a live registration. */
  readonly onlineDevices: ReadonlySet<string>;
  /** Keyed by user id: calls (dialogs) the user is in now. Absent means 0. */
  readonly activeCalls: ReadonlyMap<string, number>;
  /** Operators' own state (phone feature codes, console; operator-state.ts), keyed by user id: availability set there; absent = the site's. */
  readonly availability?: ReadonlyMap<string, Availability>;
  /** Keyed by user id: ids of the groups the operator is logged out of. */
  readonly loggedOut?: ReadonlyMap<string, ReadonlySet<string>>;
}

/** One call being distributed in one group. Never mutated: each step returns a new one. */
export interface CallState {
  readonly startedAt: number;
  /** Steps planned so far (0 before the first planStep). */
  readonly steps: number;
  /** Member ids that had their turn (offered or skipped); sequential, evenly, cumulative. */
  readonly passed: ReadonlySet<string>;
  /** Keyed by member id: members ringing now → how many of their physical devices ring. */
  readonly ringing: ReadonlyMap<string, number>;
  /** The member offered most recently (in simultaneous: the first in list order). */
  readonly lastOffered: string | undefined;
  /** No more steps; the no-answer action applies. */
  readonly exhausted: boolean;
  /** The responsible operator's own step: "ringing" while it rings, "done" once the strategy took over. */
  readonly responsible?: "ringing" | "done";
}

export type SkipReason =
  /** The member id names no user (config pushed mid-call). */
  | "unknown-user"
  /** No online device. */
  | "offline"
  /** activeCalls >= callLimit. */
  | "busy"
  /** Availability "away" while the group checks availability. */
  | "away"
  /** Do not disturb: skipped in every group (operator-state.ts). */
  | "dnd"
  /** In wrap-up after a call through this group (PlanInput.wrapUpUntil). */
  | "wrap-up"
  /** The operator logged out of this group (feature code or console; operator-state.ts). */
  | "logged-out"
  /** Only physical devices online and the physical cap is full. */
  | "cap";

/** Why one of an offered member's devices did not ring ("cap" is derived later, by why.ts). */
export type DeviceLeftOut = { memberId: string; deviceId: string; reason: "offline" | "cap" };

export interface MemberRing {
  memberId: string;
  /** Devices to fork to now: all the member's online soft devices and the physical ones that fit. */
  deviceIds: string[];
  /** How many of deviceIds are physical (they count toward the cap). */
  physical: number;
}

export interface SkippedMember {
  memberId: string;
  reason: SkipReason;
}

export interface RingPlan {
  /** Members to start ringing now. */
  ring: MemberRing[];
  /** Members to stop ringing now (cumulative keeps earlier members until exhausted). */
  stop: string[];
  /** When to call planStep again; undefined when exhausted. */
  nextStepAt: number | undefined;
  /** No more steps: the engine applies the no-answer action (pickNoAnswer). */
  exhausted: boolean;
  /** Exhausted because no member has an online device: overflow at once. */
  allOffline: boolean;
  /** Members offered in this step; for evenly the engine sets evenlyLastOffered[m] = now. */
  offeredMembers: string[];
  /** Members passed over in this step, with why. */
  skipped: SkippedMember[];
  /** Set on the responsible operator's own step: the user ringing alone before the group's strategy. */
  responsible?: string;
  /** Offline devices of the members in `ring`; absent when there are none. */
  leftOut?: DeviceLeftOut[];
  /** The call state after this step; pass it to the next planStep. */
  call: CallState;
}

export interface PlanInput {
  group: Group;
  usersById: ReadonlyMap<string, User>;
  /** Keyed by user id; the devices in console order. */
  devicesByOwner: ReadonlyMap<string, readonly DeviceRef[]>;
  presence: PresenceSnapshot;
  /** This group's bookkeeping, keyed by member id: epoch ms of the member's last offer. */
  evenlyLastOffered: ReadonlyMap<string, number>;
  call: CallState;
  now: number;
  /** One ring; default RING_UNIT_MS (5 s). Tests shorten it. */
  ringUnitMs?: number;
  /** Physical devices that may ring at once for this call; default MAX_PHYSICAL_RINGING (10). */
  maxPhysical?: number;
  /** This group's wrap-up, keyed by user id: epoch ms until which the user is not offered its calls. */
  wrapUpUntil?: ReadonlyMap<string, number>;
  /** The caller's responsible user (directory or memory); used with group.responsibleFirst. */
  responsible?: string;
}

const NO_STRINGS: readonly string[] = Object.freeze([]);
const NO_PASSED: ReadonlySet<string> = new Set();
const NO_RINGING: ReadonlyMap<string, number> = new Map();

/** The state of a call that has not rung yet. */
export function startCall(now: number): CallState {
  return { startedAt: now, steps: 0, passed: NO_PASSED, ringing: NO_RINGING, lastOffered: undefined, exhausted: false };
}

/** The call after every branch of one member ended (rejected, failed, device gone): frees its cap share. */
export function withMemberEnded(call: CallState, memberId: string): CallState {
  if (!call.ringing.has(memberId)) return call;
  const ringing = new Map(call.ringing);
  ringing.delete(memberId);
  return { ...call, ringing };
}

/** Step length: ringCount × ringUnitMs, ringCount clamped to the valid range. */
export function stepLengthMs(group: Group, ringUnitMs: number = RING_UNIT_MS): number {
  const count = Number.isFinite(group.ringCount) ? Math.min(RING_COUNT_MAX, Math.max(RING_COUNT_MIN, Math.trunc(group.ringCount))) : RING_COUNT_MIN;
  const unit = Number.isFinite(ringUnitMs) && ringUnitMs > 0 ? ringUnitMs : RING_UNIT_MS;
  return count * unit;
}

/** Decides what rings now for one call in one group. */
export function planStep(input: PlanInput): RingPlan {
  const { group, call } = input;
  if (call.exhausted) return exhaustedPlan(input, call, undefined);
  const cap = physicalCap(input.maxPhysical);
  if (call.responsible === undefined && call.steps === 0 && group.responsibleFirst !== undefined && input.responsible !== undefined) {
    const first = ringResponsible(input, cap, input.responsible);
    if (first.ring.length > 0) return first;
    // Not eligible: the strategy starts now; the plan still says why the responsible one did not ring.
    const plan = strategyStep({ ...input, call: first.call }, cap);
    plan.skipped = plan.skipped.length === 0 ? first.skipped : [...first.skipped, ...plan.skipped];
    return plan;
  }
  if (call.responsible === "ringing") {
    // The responsible operator's rings are over: stop them and start the strategy afresh.
    const stop = [...call.ringing.keys()];
    const fresh: CallState = { ...startCall(call.startedAt), responsible: "done" };
    const plan = strategyStep({ ...input, call: fresh }, cap);
    plan.call = { ...plan.call, steps: call.steps + plan.call.steps };
    plan.stop = stop.length === 0 ? plan.stop : [...stop, ...plan.stop];
    return plan;
  }
  return strategyStep(input, cap);
}

function strategyStep(input: PlanInput, cap: number): RingPlan {
  const { group, call } = input;
  if (group.strategy === "simultaneous") return call.steps === 0 ? ringEveryone(input, cap) : exhaustedPlan(input, call, undefined);
  return ringNext(input, cap);
}

/** The responsible operator's own step; ring is empty (and skipped says why) when they cannot ring. */
function ringResponsible(input: PlanInput, cap: number, userId: string): RingPlan {
  const { call, now } = input;
  const done: CallState = { ...call, responsible: "done" };
  const reason = skipReason(input, userId, cap);
  if (reason !== undefined) return { ring: [], stop: [], nextStepAt: undefined, exhausted: false, allOffline: false, offeredMembers: [], skipped: [{ memberId: userId, reason }], call: done };
  const sink: LeftOutSink = {};
  const r = memberRing(input, userId, cap, sink);
  const ringing = new Map<string, number>([[userId, r.physical]]);
  const next: CallState = { ...call, steps: 1, ringing, lastOffered: userId, responsible: "ringing" };
  const rings = input.group.responsibleFirst?.ringCount ?? input.group.ringCount;
  const length = stepLengthMs({ ...input.group, ringCount: rings }, input.ringUnitMs);
  return withLeftOut({ ring: [r], stop: [], nextStepAt: now + length, exhausted: false, allOffline: false, offeredMembers: [userId], skipped: [], responsible: userId, call: next }, sink);
}

/** True when no member of the group has an online device (an empty group too); logged-out members count as absent. */
export function groupAllOffline(group: Group, devicesByOwner: ReadonlyMap<string, readonly DeviceRef[]>, presence: PresenceSnapshot): boolean {
  const members = group.members;
  for (let i = 0; i < members.length; i++) {
    const devices = devicesByOwner.get(members[i] as string);
    if (devices === undefined || presence.loggedOut?.get(members[i] as string)?.has(group.id) === true) continue;
    for (let k = 0; k < devices.length; k++) if (presence.onlineDevices.has((devices[k] as DeviceRef).id)) return false;
  }
  return true;
}

// --- strategies ------------------------------------------------------------------------------

/** simultaneous, first step: everyone eligible at once; the cap is filled in member order. */
function ringEveryone(input: PlanInput, cap: number): RingPlan {
  const { group, call, now } = input;
  const members = group.members;
  const ring: MemberRing[] = [];
  const offered: string[] = [];
  const ringing = new Map<string, number>();
  let skipped: SkippedMember[] | undefined;
  let slots = cap;
  const sink: LeftOutSink = {};
  for (let i = 0; i < members.length; i++) {
    const m = members[i] as string;
    const reason = skipReason(input, m, slots);
    if (reason !== undefined) {
      (skipped ??= []).push({ memberId: m, reason });
      continue;
    }
    const r = memberRing(input, m, slots, sink);
    slots -= r.physical;
    ring.push(r);
    offered.push(m);
    ringing.set(m, r.physical);
  }
  if (ring.length === 0) return exhaustedPlan(input, call, skipped);
  const next: CallState = { ...call, steps: call.steps + 1, ringing, lastOffered: offered[0] };
  return withLeftOut({ ring, stop: [], nextStepAt: now + stepLengthMs(group, input.ringUnitMs), exhausted: false, allOffline: false, offeredMembers: offered, skipped: skipped ?? [], call: next }, sink);
}

/**
 * sequential, evenly, cumulative: the next member whose turn it is. sequential and evenly stop
 * the member ringing before; cumulative keeps everyone ringing and shares the cap.
 */
function ringNext(input: PlanInput, cap: number): RingPlan {
  const { group, call, now } = input;
  const cumulative = group.strategy === "cumulative";
  let slots = cap;
  if (cumulative) for (const physical of call.ringing.values()) slots -= physical;

  const members = group.members;
  const evenly = group.strategy === "evenly";
  // Index in members of the member chosen to ring (-1: nobody), and its evenly key.
  let chosen = -1;
  let chosenKey = Infinity;
  // Ineligible members met on the way and their indexes (allocated only when there are some).
  let ineligible: SkippedMember[] | undefined;
  let ineligibleAt: number[] | undefined;
  for (let i = 0; i < members.length; i++) {
    const m = members[i] as string;
    if (call.passed.has(m)) continue;
    // evenly: a key never offered sorts first; a key not below the best so far is behind it
    // (ties keep list order), so its turn has not come and it need not be judged.
    const key = evenly ? (input.evenlyLastOffered.get(m) ?? -Infinity) : 0;
    if (evenly && chosen !== -1 && key >= chosenKey) continue;
    const reason = skipReason(input, m, slots);
    if (reason === undefined) {
      chosen = i;
      chosenKey = key;
      if (!evenly) break;
    } else {
      (ineligible ??= []).push({ memberId: m, reason });
      (ineligibleAt ??= []).push(i);
    }
  }

  // Ineligible members whose turn came before the chosen one (all of them when nobody is
  // chosen) are passed over for this call. In list order that is every one met; in evenly
  // order only those ahead of the chosen one.
  let skipped: SkippedMember[] | undefined;
  let passed: Set<string> | undefined;
  if (ineligible !== undefined && ineligibleAt !== undefined) {
    for (let k = 0; k < ineligible.length; k++) {
      const s = ineligible[k] as SkippedMember;
      if (evenly && chosen !== -1) {
        const key = input.evenlyLastOffered.get(s.memberId) ?? -Infinity;
        if (key > chosenKey || (key === chosenKey && (ineligibleAt[k] as number) > chosen)) continue;
      }
      (skipped ??= []).push(s);
      (passed ??= new Set(call.passed)).add(s.memberId);
    }
  }

  if (chosen === -1) {
    const after: CallState = passed === undefined ? call : { ...call, passed };
    return exhaustedPlan(input, after, skipped);
  }

  const m = members[chosen] as string;
  const sink: LeftOutSink = {};
  const r = memberRing(input, m, slots, sink);
  (passed ??= new Set(call.passed)).add(m);
  let ringing: Map<string, number>;
  let stop: string[];
  if (cumulative) {
    ringing = new Map(call.ringing);
    stop = [];
  } else {
    ringing = new Map();
    stop = [...call.ringing.keys()];
  }
  ringing.set(m, r.physical);
  const next: CallState = { ...call, steps: call.steps + 1, passed, ringing, lastOffered: m };
  return withLeftOut({ ring: [r], stop, nextStepAt: now + stepLengthMs(group, input.ringUnitMs), exhausted: false, allOffline: false, offeredMembers: [m], skipped: skipped ?? [], call: next }, sink);
}

/** The end of distribution: stop everything still ringing. */
function exhaustedPlan(input: PlanInput, call: CallState, skipped: SkippedMember[] | undefined): RingPlan {
  const stop = call.ringing.size === 0 ? [] : [...call.ringing.keys()];
  const next: CallState = call.exhausted ? call : { ...call, steps: call.steps + 1, ringing: NO_RINGING, exhausted: true };
  return {
    ring: [],
    stop,
    nextStepAt: undefined,
    exhausted: true,
    allOffline: groupAllOffline(input.group, input.devicesByOwner, input.presence),
    offeredMembers: [],
    skipped: skipped ?? [],
    call: next,
  };
}

// --- members ---------------------------------------------------------------------------------

type EligibilityInput = Pick<PlanInput, "group" | "usersById" | "devicesByOwner" | "presence"> & { wrapUpUntil?: ReadonlyMap<string, number>; now?: number };

/** Why the member cannot ring now with `slots` physical devices left under the cap; undefined = can. */
function skipReason(input: EligibilityInput, memberId: string, slots: number): SkipReason | undefined {
  const user = input.usersById.get(memberId);
  if (user === undefined) return "unknown-user";
  if (input.presence.loggedOut?.get(memberId)?.has(input.group.id) === true) return "logged-out";
  const devices = input.devicesByOwner.get(memberId);
  let soft = 0;
  let physical = 0;
  if (devices !== undefined) {
    const online = input.presence.onlineDevices;
    for (let k = 0; k < devices.length; k++) {
      const d = devices[k] as DeviceRef;
      if (!online.has(d.id)) continue;
      if (d.kind === "soft") soft++;
      else physical++;
    }
  }
  if (soft === 0 && physical === 0) return "offline";
  if (user.callLimit > 0 && (input.presence.activeCalls.get(memberId) ?? 0) >= user.callLimit) return "busy";
  const availability = input.presence.availability?.get(memberId) ?? user.availability;
  if (availability === "dnd") return "dnd";
  if (input.group.checkAvailability && availability === "away") return "away";
  if (input.wrapUpUntil !== undefined && input.now !== undefined) {
    const until = input.wrapUpUntil.get(memberId);
    if (until !== undefined && input.now < until) return "wrap-up";
  }
  if (soft === 0 && slots <= 0) return "cap";
  return undefined;
}

/** Collects devices left out while a plan is made (allocated only when one is). */
interface LeftOutSink {
  leftOut?: DeviceLeftOut[];
}

/** Adds the sink's left-out devices to a plan (no-op without any). */
function withLeftOut(plan: RingPlan, sink: LeftOutSink): RingPlan {
  if (sink.leftOut !== undefined) plan.leftOut = sink.leftOut;
  return plan;
}

/** The member's online devices: every soft one, physical ones while `slots` last; the others go to `sink`. */
function memberRing(input: EligibilityInput, memberId: string, slots: number, sink?: LeftOutSink): MemberRing {
  const deviceIds: string[] = [];
  let physical = 0;
  const devices = input.devicesByOwner.get(memberId);
  if (devices !== undefined) {
    const online = input.presence.onlineDevices;
    for (let k = 0; k < devices.length; k++) {
      const d = devices[k] as DeviceRef;
      if (!online.has(d.id)) {
        if (sink !== undefined) (sink.leftOut ??= []).push({ memberId, deviceId: d.id, reason: "offline" });
        continue;
      }
      if (d.kind === "physical") {
        // Beyond the cap: not recorded here (in a big simultaneous group that is most desk
        // phones, and this is the hot path); why.ts derives it: a device of an offered member
        // that neither rang nor was offline was left out for the cap.
        if (physical >= slots) continue;
        physical++;
      }
      deviceIds.push(d.id);
    }
  }
  return { memberId, deviceIds, physical };
}

function physicalCap(maxPhysical: number | undefined): number {
  if (maxPhysical === undefined || !Number.isFinite(maxPhysical)) return MAX_PHYSICAL_RINGING;
  return Math.max(0, Math.trunc(maxPhysical));
}

// --- no answer -------------------------------------------------------------------------------

export type NoAnswerDecision =
  | { kind: "voicemail"; uri: string; fromGroupId: string }
  /** The appliance's own mailbox (agent/voicemail/): the group's, or the one the action names. */
  | { kind: "voicemail"; mailbox: { kind: "user" | "group"; id: string }; fromGroupId: string }
  | { kind: "forward"; number: string; source: "mobile"; memberId: string; fromGroupId: string }
  | { kind: "forward"; number: string; source: "number"; fromGroupId: string }
  /** Hold the caller; offer the call to selectFreeOperator's pick; at `until` resolve `then`. */
  | { kind: "wait-for-operator"; until: number; then: FinalNoAnswerAction; fromGroupId: string }
  /** Distribute the call in another group; pass `visited` to that group's pickNoAnswer. */
  | { kind: "overflow-group"; groupId: string; visited: ReadonlySet<string>; fromGroupId: string }
  | { kind: "hangup"; status: HangupStatus; cause: HangupCause; fromGroupId: string };

/** A group an overflow chain went through at once, and why (for "why didn't my phone ring?"). */
export interface PassedGroup {
  groupId: string;
  reason: "closed" | "all-offline";
}

export type HangupCause =
  /** The group's action is hangup. */
  | "configured"
  /** The overflow chain came back to a group this call already went through. */
  | "overflow-loop"
  /** The overflow target does not exist (config pushed mid-call). */
  | "unknown-group"
  /** forward-mobile found no member with a mobile number. */
  | "no-mobile";

export interface NoAnswerInput {
  group: Group;
  groupsById: ReadonlyMap<string, Group>;
  usersById: ReadonlyMap<string, User>;
  devicesByOwner: ReadonlyMap<string, readonly DeviceRef[]>;
  presence: PresenceSnapshot;
  /** The call in `group`, for forward-mobile's "member offered last". */
  call?: CallState;
  /** From the exhausted RingPlan: no member had an online device. */
  allOffline: boolean;
  /** The action to resolve; default group.noAnswer. After a wait the engine passes its `then`. */
  action?: NoAnswerAction;
  /** Groups this call already went through (from an earlier overflow decision); `group` is added. */
  visited?: ReadonlySet<string>;
  now: number;
  /** Whether a group is out of its working hours now (the engine's cached isOpen); absent = always open. */
  isClosed?: (group: Group) => boolean;
  /** Filled with the groups the chain passed through at once (closed, or all offline), in order. */
  passed?: PassedGroup[];
}

/** Default status for hangup: 480 Temporarily Unavailable (RFC 3261 §21.4.18). */
const DEFAULT_HANGUP: HangupStatus = 480;

/**
 * Resolves a group's no-answer action into one concrete instruction.
 * - wait-for-operator is skipped straight to its `then` when every member is offline: nobody
 *   could become free (3CX / FreeSWITCH max-wait-time-with-no-agent behave the same).
 * - overflow-group follows the chain at once through target groups whose members are all
 *   offline (product reference: "another group, at once when every member is offline"); a group
 *   met twice is a loop and ends the call with 480, whatever validateSite let through.
 * - A target group out of its working hours (isClosed) is passed through at once too: its
 *   out-of-hours action applies, as it would to a call dialled to it directly.
 */
export function pickNoAnswer(input: NoAnswerInput): NoAnswerDecision {
  const visited = new Set(input.visited ?? NO_STRINGS);
  let group = input.group;
  visited.add(group.id);
  let action: NoAnswerAction = input.action ?? group.noAnswer;
  let allOffline = input.allOffline;
  let lastOffered = input.call?.lastOffered;
  // Each turn either returns or moves to a group not visited before: at most groupsById.size turns.
  for (;;) {
    const fromGroupId = group.id;
    switch (action.kind) {
      case "voicemail":
        if (action.uri !== undefined) return { kind: "voicemail", uri: action.uri, fromGroupId };
        return { kind: "voicemail", mailbox: action.mailbox === undefined ? { kind: "group", id: group.id } : (parseMailboxRef(action.mailbox) ?? { kind: "group", id: group.id }), fromGroupId };
      case "forward-number":
        return { kind: "forward", number: action.number, source: "number", fromGroupId };
      case "hangup":
        return { kind: "hangup", status: action.status ?? DEFAULT_HANGUP, cause: "configured", fromGroupId };
      case "forward-mobile": {
        const memberId = mobileMember(group, action.memberId, lastOffered, input.usersById);
        const mobile = memberId === undefined ? undefined : input.usersById.get(memberId)?.mobile;
        if (memberId === undefined || mobile === undefined) return { kind: "hangup", status: DEFAULT_HANGUP, cause: "no-mobile", fromGroupId };
        return { kind: "forward", number: mobile, source: "mobile", memberId, fromGroupId };
      }
      case "wait-for-operator":
        if (!allOffline) return { kind: "wait-for-operator", until: input.now + action.maxWaitS * 1000, then: action.then, fromGroupId };
        action = action.then;
        continue;
      case "overflow-group": {
        const target = input.groupsById.get(action.groupId);
        if (target === undefined) return { kind: "hangup", status: DEFAULT_HANGUP, cause: "unknown-group", fromGroupId };
        if (visited.has(target.id)) return { kind: "hangup", status: DEFAULT_HANGUP, cause: "overflow-loop", fromGroupId };
        visited.add(target.id);
        if (target.outOfHours !== undefined && input.isClosed?.(target) === true) {
          input.passed?.push({ groupId: target.id, reason: "closed" });
          group = target;
          action = target.outOfHours;
          allOffline = true;
          lastOffered = undefined;
          continue;
        }
        if (!groupAllOffline(target, input.devicesByOwner, input.presence)) {
          return { kind: "overflow-group", groupId: target.id, visited, fromGroupId };
        }
        input.passed?.push({ groupId: target.id, reason: "all-offline" });
        group = target;
        action = target.noAnswer;
        allOffline = true;
        lastOffered = undefined;
        continue;
      }
    }
  }
}

/**
 * forward-mobile's member: the designated one if set and it has a mobile; else the member offered
 * last in this call if it has one; else the first member in list order with a mobile.
 */
function mobileMember(group: Group, designated: string | undefined, lastOffered: string | undefined, usersById: ReadonlyMap<string, User>): string | undefined {
  if (designated !== undefined && usersById.get(designated)?.mobile !== undefined) return designated;
  if (lastOffered !== undefined && usersById.get(lastOffered)?.mobile !== undefined) return lastOffered;
  for (const m of group.members) if (usersById.get(m)?.mobile !== undefined) return m;
  return undefined;
}

// --- wait for a free operator ----------------------------------------------------------------

export interface FreeOperatorInput {
  group: Group;
  usersById: ReadonlyMap<string, User>;
  devicesByOwner: ReadonlyMap<string, readonly DeviceRef[]>;
  presence: PresenceSnapshot;
  /** This group's evenly bookkeeping (used only by evenly groups). */
  evenlyLastOffered: ReadonlyMap<string, number>;
  /** Members not to pick (e.g. already ringing for this or another waiting call). */
  exclude?: ReadonlySet<string>;
  maxPhysical?: number;
  /** This group's wrap-up (see PlanInput) and the time to judge it at. */
  wrapUpUntil?: ReadonlyMap<string, number>;
  now?: number;
}

/**
 * Which member gets a waiting call now that someone may be free: the first eligible member in
 * list order; in evenly groups the eligible member offered longest ago (never offered first,
 * ties in list order). "Free" is planStep's eligibility: online, below callLimit, and available
 * when the group checks availability. Undefined when nobody is free.
 */
export function selectFreeOperator(input: FreeOperatorInput): MemberRing | undefined {
  const { group } = input;
  const cap = physicalCap(input.maxPhysical);
  const members = group.members;
  let chosen: string | undefined;
  let bestKey = Infinity;
  for (let i = 0; i < members.length; i++) {
    const m = members[i] as string;
    if (input.exclude?.has(m)) continue;
    if (skipReason(input, m, cap) !== undefined) continue;
    if (group.strategy !== "evenly") {
      chosen = m;
      break;
    }
    const key = input.evenlyLastOffered.get(m) ?? -Infinity;
    if (chosen === undefined || key < bestKey) {
      chosen = m;
      bestKey = key;
    }
  }
  return chosen === undefined ? undefined : memberRing(input, chosen, cap);
}

// --- call pickup -----------------------------------------------------------------------------

/** Group pickup feature code; "*8" alone picks up in one's groups, "*8<ext>" is directed. */
export const PICKUP_CODE = "*8";

export type PickupRequest = { kind: "group" } | { kind: "directed"; extension: string };

/** Reads a dialled string as a pickup request; undefined when it is not one. */
export function parsePickupCode(dialled: string, code: string = PICKUP_CODE): PickupRequest | undefined {
  if (!dialled.startsWith(code)) return undefined;
  const rest = dialled.slice(code.length);
  if (rest.length === 0) return { kind: "group" };
  return EXTENSION_RE.test(rest) ? { kind: "directed", extension: rest } : undefined;
}

export interface RingingCall {
  callId: string;
  /** Group the call is distributed in; undefined for a call to one extension. */
  groupId: string | undefined;
  /** User ids whose devices ring for this call now. */
  ringingMembers: readonly string[];
  startedAt: number;
}

export interface PickupInput {
  ringingCalls: readonly RingingCall[];
  pickerUserId: string;
  /** Directed pickup (*8<ext>): a user's extension or a group number. Absent: group pickup. */
  targetExtension?: string;
  groupsById: ReadonlyMap<string, Group>;
  groupsByNumber: ReadonlyMap<string, Group>;
  usersByExtension: ReadonlyMap<string, User>;
}

export type PickupResult =
  | { ok: true; call: RingingCall }
  | { ok: false; reason: "unknown-extension" | "nothing-to-pick-up" };

/**
 * The ringing call a member's pickup takes, oldest first (ties: first listed).
 * - Group pickup: calls ringing in a group that has pickup enabled and lists the picker.
 * - Directed to a user's extension: calls ringing at that user, either directly or through a
 *   group with pickup enabled. Directed to a group number: calls ringing in that group, if it
 *   has pickup enabled. Directed pickup does not require the picker to be a member.
 */
export function findPickupTarget(input: PickupInput): PickupResult {
  const { ringingCalls, targetExtension } = input;
  let targetUser: User | undefined;
  let targetGroup: Group | undefined;
  if (targetExtension !== undefined) {
    targetUser = input.usersByExtension.get(targetExtension);
    targetGroup = targetUser === undefined ? input.groupsByNumber.get(targetExtension) : undefined;
    if (targetUser === undefined && targetGroup === undefined) return { ok: false, reason: "unknown-extension" };
  }
  let best: RingingCall | undefined;
  for (let i = 0; i < ringingCalls.length; i++) {
    const c = ringingCalls[i] as RingingCall;
    if (best !== undefined && c.startedAt >= best.startedAt) continue;
    const group = c.groupId === undefined ? undefined : input.groupsById.get(c.groupId);
    const pickable = group !== undefined && group.pickup?.enabled === true;
    let eligible: boolean;
    if (targetUser !== undefined) eligible = (c.groupId === undefined || pickable) && c.ringingMembers.includes(targetUser.id);
    else if (targetGroup !== undefined) eligible = pickable && group === targetGroup;
    else eligible = pickable && (group as Group).members.includes(input.pickerUserId);
    if (eligible) best = c;
  }
  return best === undefined ? { ok: false, reason: "nothing-to-pick-up" } : { ok: true, call: best };
}
