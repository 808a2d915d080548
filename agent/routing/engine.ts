// The routing engine: call-distribution POLICY on top of the forking proxy MECHANISM
// (DESIGN principle 1; Kamailio's "routing script" — the place to read first for what happens
// to a call). It admits each new INVITE (who calls, where to, toll-fraud rules), asks the pure
// core (plan.ts) who rings now, forks branches through StatefulProxyApi, keeps the step,
// queue and pickup timers, counts calls per operator from the dialogs it sees, and records
// every call when it ends. It knows nothing about sockets: targets are bindings' flows.
//
// Decisions (issue 3; plan.ts's header holds the ones about who rings):
// - Admission: see classify.ts. Unknown sources get 407 (RFC 3261 §22.3) whatever they dial,
//   so a scan learns nothing about which numbers exist; the retry is verified with the
//   proxy-authenticate DigestAuthenticator and failures feed the auth guard like REGISTERs do.
//   A registered phone's flow dialling an outside number is challenged the same way unless it
//   is the TCP/TLS connection the phone registered over (UDP sources can be forged on a LAN);
//   the credentials must be that phone's own. Local numbers from its flow are not challenged.
// - Forks: a ring entry's device rings on every live binding it has (one branch each,
//   target.flow = the binding's flow, RFC 5626 spirit). The caller's own device never rings.
// - Hot path order (DESIGN principle 3): forks first; then evenly bookkeeping
//   (store.recordEvenlyOffer, write-behind), bus events; call records only when a call ends.
// - Member failures: a branch's final non-2xx ends that binding; 603 Decline ends the member
//   for this call (their other devices are cancelled); when a member has no live branch left,
//   the member is done (withMemberEnded). When nothing rings any more the next step is planned
//   at once (sequential moves on after 486/603 without waiting for the step to run out).
// - Busy: operators' concurrent calls are counted from answered dialogs (+1 on answer for the
//   answering member and for a calling device's operator, -1 when the dialog ends), never
//   inferred from a 486.
// - No answer (plan.ts pickNoAnswer): voicemail — a sip: URI with an IP-literal host is
//   forked to directly, anything else goes through the trunk; forward-mobile / forward-number
//   go through the trunk with its prefix; wait-for-operator sends 182 Queued (RFC 3261
//   §21.1.3), then music on hold as early media when deps.queueMedia is set
//   (agent/media/queue-music.ts), and offers the call to selectFreeOperator's pick whenever a
//   member of the group becomes free (a dialog of theirs ended, a device of theirs came
//   online); one offer rings for one step and then the call waits again; after maxWaitS
//   `then` applies.
// - Direct calls (a user's extension): 480 when none of their devices is online, 486 at their
//   call limit; otherwise every online device rings until someone answers, the caller gives
//   up, or every branch fails (then the best failure: 6xx, else 486, else 480). A user with a
//   mailbox on the appliance gets those calls in the mailbox instead (at once when offline,
//   DND or busy; after its noAnswerS of ringing; when every phone failed).
// - Mailboxes on the appliance (deps.mailboxes, agent/voicemail/deposit.ts): the voicemail
//   action's local form hands the call over; it is answered by the appliance (call.answered
//   with no member) and recorded as outcome "voicemail".
// - Pickup (*8, *8<ext>): the picker's *8 INVITE gets a final "480" with a Warning at once,
//   THEN the ringing call gets a new branch to the picker's dialling device with auto-answer
//   headers (Call-Info answer-after=0, Alert-Info info=alert-autoanswer) that the device
//   profiles enable. Answering first leaves the phone idle, so it auto-answers even without
//   call waiting; the proxy cancels the other branches when the picker's branch answers
//   (Reason cause=200). While a pickup branch is live, the call's step and queue timers wait.
// - Operator-state codes (away, back, DND on/off, log in/out; operator-state.ts) from a site
//   phone with an operator are answered at once with a final response and nothing rings:
//   480 with the new state as reason phrase and Warning on success, 403/404 with the reason on
//   refusal (presence/operators.ts). An operator in DND gets no direct calls either (480).
// - The voicemail code (deps.listen, voicemail/access.ts decideListen): from a site phone that
//   proved who it is (a UDP flow alone is challenged, as for the trunk), alone or with a
//   mailbox's number; refused at once with 403/404 and the reason, or handed to listening
//   (voicemail/listen.ts), which answers it. Not in the call log (a feature code, like pickup).
// - Pickup from a BLF key (RFC 3891): an INVITE with Replaces from a device that names a ringing
//   call (its Call-ID and the caller's From tag, as the BLF NOTIFY gives them) is a directed
//   pickup of that call; one naming nothing gets 481; one naming an answered call is routed.
// - BLF (agent/presence/blf.ts) reads the call.placed / call.ringing / call.offer-ended /
//   call.ended events emitted here, always after the forks.
// - Working hours, responsible operator, wrap-up, "why" (issue 14): a group call that reaches a
//   group out of its hours takes the group's out-of-hours action at once (hours.ts; the open
//   state is cached per group until it changes); the caller's responsible operator (callers.ts)
//   goes to planStep; an operator whose answered call through a group ended is held back from
//   that group for its wrapUpS; each call keeps its plans in a trace (why.ts) that becomes the
//   record's `why` and rides on call.answered / call.missed.
import { SYSTEM_CLOCK, type TimerClock } from "../clock.ts";
import type { EventBus } from "../bus.ts";
import type { Logger } from "../log.ts";
import type { MailboxOwner } from "../voicemail/types.ts";
import { decideListen } from "../voicemail/access.ts";
import { parseAuthorization, type DigestAuthenticator } from "../sip/digest.ts";
import { detached } from "../strings.ts";
import type { CallOutcome, CallRecord } from "../store/schema.ts";
import type { Binding } from "../sip/location.ts";
import type { Branch, BranchTarget, ProxyCall, ProxyCallEvents, StatefulProxyApi } from "../sip/proxy-types.ts";
import { randomToken } from "../sip/requests.ts";
import { createResponse } from "../sip/serialize.ts";
import type { ServerTransaction } from "../sip/transaction.ts";
import type { Flow, SipHeader, SipRequest, SipResponse } from "../sip/types.ts";
import { parseUri, unescapeUser } from "../sip/uri.ts";
import {
  admit,
  classifyCaller,
  deviceRef,
  flowKey,
  inboundRoute,
  resolveDestination,
  trunkUri,
  voicemailRoute,
  type Caller,
  type TrunkSettings,
} from "./classify.ts";
import { LatencyHistogram, type LatencySummary } from "./latency.ts";
import type { Greeting } from "./menu-model.ts";
import type { FinalTarget, IvrContext } from "./menu.ts";
import { queueOrder, type PendingCallback } from "./callback.ts";
import type { FeatureCodes, OperatorCode } from "./operator-state.ts";
import { LastAnswered, normalizeCallerNumber, numberOfUri, responsibleFor } from "./callers.ts";
import { isOpen, type OpenState } from "./hours.ts";
import { WhyLog, whyRecord, MAX_WHY_ITEMS, type CallTrace, type WhyRecord } from "./why.ts";
import { QueueStatistics, type QueueFigures, type QueueLeaveReason } from "./queue-stats.ts";
import { MAX_PHYSICAL_RINGING, RING_UNIT_MS, mailboxOf, type Availability, type DeviceRef, type FinalNoAnswerAction, type Group, type NoAnswerAction, type SiteIndex, type User } from "./model.ts";
import {
  findPickupTarget,
  pickNoAnswer,
  planStep,
  selectFreeOperator,
  startCall,
  stepLengthMs,
  withMemberEnded,
  PICKUP_CODE,
  type CallState,
  type PassedGroup,
  type PresenceSnapshot,
  type RingingCall,
} from "./plan.ts";

// --- contracts with the rest of the agent ------------------------------------------------------

/** The site settings routing reads (a subset of agent/site SiteSettings). */
export interface RoutingSettings {
  pickupCode: string;
  /** Operator-state codes; absent ones default (operator-state.ts). */
  featureCodes?: Partial<FeatureCodes>;
  trunk?: TrunkSettings;
  /** Matching callers to the known-callers directory (site settings.knownCallers). */
  knownCallers?: { countryCode?: string; rememberAnsweredS?: number };
}

/** The current site: re-read for every call and step, so a push applies to the next decision. */
export interface RoutingSite {
  index: SiteIndex;
  settings: RoutingSettings;
}

export type { CallOutcome, CallRecord } from "../store/schema.ts";

export type EngineClock = TimerClock;

export interface EngineDeps {
  proxy: StatefulProxyApi;
  site: () => RoutingSite;
  location: { lookup(aor: string): readonly Binding[]; all(): readonly Binding[] };
  presence: { snapshot(): ReadonlyArray<{ deviceId: string; online: boolean }> };
  /** SIP usernames (AORs) and digest credentials of the store's devices. */
  devices: {
    username(deviceId: string): string | undefined;
    credentials(username: string): { deviceId: string; username: string; password: string } | undefined;
  };
  store: {
    evenlyLastOffered(groupId: string): Readonly<Record<string, number>>;
    recordEvenlyOffer(groupId: string, memberId: string, atMs: number): void;
    /** The call log (store.appendCall); called once per call, after it ended. */
    appendCall(record: CallRecord): unknown;
  };
  bus: EventBus;
  /** Built with header "proxy-authenticate" (RFC 3261 §22.3). */
  authenticator: DigestAuthenticator;
  guard?: {
    noteFailure(source: string, account: string | undefined): void;
    noteSuccess(source: string, account: string): void;
    isLockedOut(source: string, account: string): boolean;
  };
  log: Logger;
  /**
   * Sends a response once, statelessly, and drops the server transaction (the transaction
   * layer's respondStatelessly). Used for 407 challenges, so an unauthenticated request costs
   * no transaction state and its challenge is not retransmitted (timer G) toward whatever
   * address it claims. Absent: challenges go through the transaction.
   */
  respondStatelessly?: (tx: ServerTransaction, res: SipResponse) => void;
  /**
   * Greetings and menus for trunk calls (agent/media/call-menu.ts): plays the greeting as early
   * media and calls `route` once with where the call goes. Absent: inbound routes are ignored.
   */
  callMenus?: {
    start(pc: ProxyCall, greeting: Greeting, ctx: IvrContext, route: (target: FinalTarget) => void): void;
    leave(pc: ProxyCall): void;
  };
  /**
   * Mailboxes on the appliance (agent/voicemail/deposit.ts). take(): the call is theirs (they
   * answer it or reject it, and call `ended` exactly once when it is over); leave(): the engine
   * is done with the call (the caller cancelled before the answer), idempotent. Absent: a
   * voicemail action naming a local mailbox gets 480.
   */
  mailboxes?: {
    take(pc: ProxyCall, mailbox: MailboxOwner, caller: string, events: { answered(): void; ended(status: number | undefined): void }): void;
    leave(pc: ProxyCall): void;
  };
  /**
   * Listening to voicemail (agent/voicemail/listen.ts): code() is the voicemail code read per
   * call (settings voicemailCode); take() answers the call and plays the mailboxes, which
   * voicemail/access.ts decideListen chose here first (a refusal is answered here, before any
   * answer). Absent: the code is not recognised (it dials out like any other string).
   */
  listen?: {
    code(): string;
    enabled(mailbox: MailboxOwner): boolean;
    take(pc: ProxyCall, mailboxes: MailboxOwner[]): void;
  };
  /** Music on hold while queued (agent/media/queue-music.ts); absent: 182 Queued only. */
  queueMedia?: { enter(pc: ProxyCall, entry?: { groupId: string; position: () => number | undefined }): void; leave(pc: ProxyCall): void };
  /** Pending callbacks served from the queue at their callers' places (callback-service.ts); absent: none. */
  callbacks?: QueueCallbacks;
  /** One ring, ms (default 5000). */
  ringUnitMs?: number;
  /** First-fork latency budget, ms (default 2). */
  latencyBudgetMs?: number;
  /** Physical desk phones ringing at once per call (default 10). */
  maxPhysical?: number;
  clock?: EngineClock;
  /**
   * Operators' own state (presence/operators.ts): what plans read, and the handler of their
   * feature codes. Absent: the site's availability, everyone logged in, codes get 404.
   */
  operators?: {
    readonly availability: ReadonlyMap<string, Availability>;
    readonly loggedOut: ReadonlyMap<string, ReadonlySet<string>>;
    onCode(code: OperatorCode, caller: { deviceId: string; userId: string }): { status: number; text: string };
  };
}

/** What the queue needs from pending callbacks (routing/callback.ts decides the order). */
export interface QueueCallbacks {
  /** Pending callbacks (the queue serves those due and not in progress). */
  pending(): readonly PendingCallback[];
  /** Operators reserved by callbacks being set up or connected. */
  busy(): ReadonlySet<string>;
  /** Start callback `id` with this free operator of its group; false when it could not start. */
  dispatch(id: string, memberId: string, deviceIds: readonly string[]): boolean;
}

export interface EngineStats {
  /** Calls the engine is handling (ringing, queued, forwarded or answered). */
  activeCalls: number;
  /** Calls waiting for a free operator. */
  queued: number;
  latency: { p50Us: number; p99Us: number; maxUs: number; count: number; overBudget: number; budgetUs: number };
}

/** A group whose open state does not change within isOpen's reach is looked at again after this long. */
const OPEN_RECHECK_MAX_MS = 3_600_000;

/** From user parts are attacker-controlled: keep at most this much for display. */
const CALLER_LABEL_MAX = 64;

const REASONS: Record<number, string> = {
  403: "Forbidden",
  404: "Not Found",
  480: "Temporarily Unavailable",
  486: "Busy Here",
  487: "Request Terminated",
  500: "Server Internal Error",
  503: "Service Unavailable",
  600: "Busy Everywhere",
  603: "Decline",
};

export function reasonPhrase(status: number): string {
  return REASONS[status] ?? "Call Failed";
}

/**
 * The failure to send upstream when every branch failed (RFC 3261 §16.7 step 6, simplified for
 * a policy that already knows nobody else will ring): any 6xx wins; else 486 when a device was
 * busy; else 480. 401/407 from a device never reach the caller (they are not its credentials).
 */
export function bestFailure(statuses: readonly number[]): number {
  let six: number | undefined;
  let busy = false;
  for (const s of statuses) {
    if (s >= 600 && s < 700) six ??= s;
    if (s === 486) busy = true;
  }
  return six ?? (busy ? 486 : 480);
}

// --- per-call state -----------------------------------------------------------------------------

/** "menu": a trunk call hearing its greeting or a menu (nothing rings yet). */
type Phase = "menu" | "ringing" | "queued" | "forwarded" | "answered" | "done";

interface QueueState {
  /** Group whose wait-for-operator holds the call. */
  groupId: string;
  then: FinalNoAnswerAction;
  /** Member a waiting call is being offered to now, if any. */
  offering: string | undefined;
  offerTimer: unknown;
  queuedAt: number;
}

interface EngineCall {
  readonly pc: ProxyCall;
  /** Set at admission; a call leaving a greeting or menu becomes a group or direct call then. */
  kind: "group" | "direct" | "outbound";
  readonly caller: Caller;
  /** Caller and dialled number for events and records: see labels(). */
  labelsValue: CallLabels | undefined;
  /** The INVITE the labels come from, until they are made. */
  labelSource: SipRequest | undefined;
  /** Epoch ms at admission. */
  readonly startedAt: number;
  phase: Phase;
  /** Group distributing the call now (group calls). */
  groupId: string | undefined;
  firstGroupId: string | undefined;
  readonly groups: string[];
  visited: ReadonlySet<string>;
  plan: CallState | undefined;
  /** Direct calls: the user dialled. */
  directUserId: string | undefined;
  stepTimer: unknown;
  queue: QueueState | undefined;
  queueTimer: unknown;
  /** Keyed by member id: that member's live branches for this call. */
  readonly memberBranches: Map<string, Branch[]>;
  /** Branches with no member: voicemail, forward, trunk. */
  readonly otherBranches: Branch[];
  /** Pickup branches (auto-answer) still alive. */
  readonly pickupBranches: Branch[];
  /** Ids of branches we cancelled or gave up on: their later failure is not news. */
  readonly writtenOff: Set<string>;
  readonly failStatuses: number[];
  readonly offered: string[];
  readonly offeredSet: Set<string>;
  readonly busyMembers: Set<string>;
  /** User ids whose activeCalls this call incremented (decremented once when it ends). */
  readonly counted: string[];
  forwardedAs: "voicemail" | "forwarded" | undefined;
  answeredBy: string | undefined;
  answeredDevice: string | undefined;
  answerAfterMs: number | undefined;
  latencyRecorded: boolean;
  /** To tags ringing callees sent (RFC 3891 Replaces matching); made on the first 18x, after the forks. */
  calleeTags: Set<string> | undefined;
  /** Group calls: the plans and decisions, for "why didn't my phone ring?" (why.ts). */
  trace: CallTrace | undefined;
  /** The caller's responsible operator (group calls with responsibleFirst). */
  responsible: string | undefined;
  /** The trace as plain JSON, made once when the call is answered or ends. */
  why: WhyRecord | undefined;
}

interface CallLabels {
  caller: string;
  target: string;
}

/**
 * The call's caller and target as people read them. Made on first use, which is after the
 * first forks (events, records): URI parsing and cleaning stay off the INVITE → fork path.
 */
function labels(call: EngineCall): CallLabels {
  if (call.labelsValue === undefined) {
    const req = call.labelSource!;
    call.labelsValue = { caller: callerLabel(call.caller, req), target: dialledText(req.uri) };
    call.labelSource = undefined;
  }
  return call.labelsValue;
}

function isLive(b: Branch): boolean {
  return b.state === "calling" || b.state === "ringing";
}

// --- the engine ---------------------------------------------------------------------------------

export class RoutingEngine {
  private readonly proxy: StatefulProxyApi;
  private readonly clock: EngineClock;
  private readonly ringUnitMs: number;
  private readonly maxPhysical: number;
  private readonly histogram: LatencyHistogram;
  /** Calls keyed by ProxyCall.id. */
  private readonly calls = new Map<string, EngineCall>();
  /** Calls waiting for a free operator, oldest first. */
  private readonly queue: EngineCall[] = [];
  /** Offers waiting calls again after an unanswered offer (onOfferTimeout); one at a time. */
  private queueRetryTimer: unknown;
  /** Queue figures since start (ringedge status); the console sync counts its own per interval. */
  private readonly queueStats = new QueueStatistics();
  /** Ids of devices online now (kept from "device.presence"). */
  private readonly online = new Set<string>();
  /** Keyed by user id: answered dialogs the user is in now. */
  private readonly activeCalls = new Map<string, number>();
  private readonly snapshot: PresenceSnapshot;
  /** Keyed by flowKey(transport, address, port): the device whose binding uses that flow. */
  private readonly deviceByFlow = new Map<string, { deviceId: string; username: string; connectionId: number | undefined }>();
  /** Keyed by device id: the flow keys of its bindings (to drop them on change). */
  private readonly flowKeysByDevice = new Map<string, string[]>();
  /** Keyed by group id: member id → epoch ms of last offer (loaded from the store once). */
  private readonly evenly = new Map<string, Map<string, number>>();
  private readonly unsubscribe: Array<() => void> = [];
  private readonly events: ProxyCallEvents;
  /** Traces of recent calls ("ringedge why"). */
  readonly why = new WhyLog();
  /** Keyed by group id: user id → epoch ms their wrap-up in that group ends. */
  private readonly wrapUp = new Map<string, Map<string, number>>();
  /** Keyed by the Group object of the applied site (a push makes new ones): its open state and when to look again. */
  private readonly openCache = new WeakMap<Group, { state: OpenState; madeAt: number; recheckAt: number }>();
  /** Who answered which caller last (settings.knownCallers.rememberAnsweredS). */
  readonly lastAnswered = new LastAnswered();
  /** A user's devices in the current site (why.ts names those left out for the cap). */
  private readonly devicesOf = (userId: string): readonly DeviceRef[] | undefined => this.deps.site().index.devicesByOwner.get(userId);

  constructor(private readonly deps: EngineDeps) {
    this.proxy = deps.proxy;
    this.clock = deps.clock ?? SYSTEM_CLOCK;
    this.ringUnitMs = deps.ringUnitMs !== undefined && deps.ringUnitMs > 0 ? deps.ringUnitMs : RING_UNIT_MS;
    this.maxPhysical = deps.maxPhysical ?? MAX_PHYSICAL_RINGING;
    const ops = deps.operators;
    this.snapshot = ops === undefined ? { onlineDevices: this.online, activeCalls: this.activeCalls } : { onlineDevices: this.online, activeCalls: this.activeCalls, availability: ops.availability, loggedOut: ops.loggedOut };
    this.histogram = new LatencyHistogram((deps.latencyBudgetMs ?? 2) * 1000);
    // One events object for every call, dispatching by id: nothing allocated per call for it.
    this.events = {
      onRinging: (pc, branch, res) => this.guarded(() => this.onRinging(pc, branch, res.to.tag)),
      onBranchFailed: (pc, branch, status) => this.guarded(() => this.onBranchFailed(pc, branch, status)),
      onAnswered: (pc, branch) => this.guarded(() => this.onAnswered(pc, branch)),
      onCallerCancelled: (pc) => this.guarded(() => this.onCallerCancelled(pc)),
      onEnded: (pc, info) => this.guarded(() => this.onEnded(pc, info)),
    };
  }

  /** Seeds presence and the flow index, and listens to presence and binding changes. */
  start(): void {
    for (const p of this.deps.presence.snapshot()) if (p.online) this.online.add(p.deviceId);
    for (const b of this.deps.location.all()) this.indexBinding(b);
    this.unsubscribe.push(
      this.deps.bus.on("device.presence", (e) => this.guarded(() => this.onPresence(e.deviceId, e.online))),
      this.deps.bus.on("device.bindings", (e) => this.guarded(() => this.onBindingsChanged(e.deviceId, e.aor))),
      // An operator back, or logged in: waiting calls of their groups may go to them now.
      this.deps.bus.on("operator.state", (e) => this.guarded(() => this.offerQueued(e.userId))),
    );
  }

  /** Stops listening and drops every timer (calls themselves belong to the proxy). */
  stop(): void {
    for (const u of this.unsubscribe.splice(0)) u();
    for (const call of this.calls.values()) this.clearTimers(call);
    if (this.queueRetryTimer !== undefined) this.clock.clearTimeout(this.queueRetryTimer);
    this.queueRetryTimer = undefined;
  }

  stats(): EngineStats {
    const s: LatencySummary = this.histogram.summary();
    return { activeCalls: this.calls.size, queued: this.queue.length, latency: { p50Us: s.p50Us, p99Us: s.p99Us, maxUs: s.maxUs, count: s.count, overBudget: s.overBudget, budgetUs: s.budgetUs } };
  }

  /** Per group with a queue: its length now and its figures since start (queue-stats.ts; status). */
  queueFigures(): QueueFigures[] {
    return this.queueStats.report(this.queueLengths());
  }

  /** Calls waiting now, by group id: every wait-for-operator group of the site (0 when none waits), and any group a call still waits for. */
  queueLengths(): Map<string, number> {
    const m = new Map<string, number>();
    for (const g of this.deps.site().index.groupsById.values()) if (g.noAnswer.kind === "wait-for-operator") m.set(g.id, 0);
    for (const c of this.queue) if (c.queue !== undefined) m.set(c.queue.groupId, (m.get(c.queue.groupId) ?? 0) + 1);
    return m;
  }

  /**
   * A waiting call's place in its group's queue (1 = the next its group's free operators get:
   * offerQueued goes through the queue oldest first), or undefined when it is not waiting.
   */
  private positionOf(call: EngineCall): number | undefined {
    if (call.phase !== "queued" || call.queue === undefined) return undefined;
    let n = 1;
    for (const c of this.queue) {
      if (c === call) return n;
      if (c.queue?.groupId === call.queue.groupId) n++;
    }
    return undefined;
  }

  /** Calls an operator is in now (for status and tests). */
  activeCallsOf(userId: string): number {
    return this.activeCalls.get(userId) ?? 0;
  }

  /**
   * A new INVITE (not a retransmission, not in-dialog). Always answers or hands the request to
   * the proxy; never throws.
   */
  onInvite(tx: ServerTransaction, req: SipRequest, flow: Flow): void {
    try {
      this.admitInvite(tx, req, flow);
    } catch (err) {
      this.deps.log.error("routing failed on an INVITE", { err: (err as Error).message, callId: req.callId });
      respond(tx, req, 500, "Server Internal Error");
    }
  }

  /**
   * The site device sending a request to the agent itself (SUBSCRIBE): known by the exact flow
   * of one of its bindings, else proven by digest credentials exactly as an INVITE is (407
   * challenge, 403, 400 answered here). Undefined when it answered.
   */
  identifyDevice(tx: ServerTransaction, req: SipRequest, flow: Flow): { deviceId: string; username: string; userId: string | undefined } | undefined {
    try {
      const index = this.deps.site().index;
      let caller = classifyCaller({ flow, trunk: undefined, deviceByFlow: (k) => this.deviceByFlow.get(k), ownerOf: (id) => deviceRef(index, id)?.ownerId });
      if (caller.kind !== "device") caller = this.authenticate(tx, req, flow, index) ?? caller;
      return caller.kind === "device" ? { deviceId: caller.deviceId, username: caller.username, userId: caller.userId } : undefined;
    } catch (err) {
      this.deps.log.error("identifying a device failed", { err: (err as Error).message, method: req.method });
      respond(tx, req, 500, "Server Internal Error");
      return undefined;
    }
  }

  // --- admission ----------------------------------------------------------------------------------

  private admitInvite(tx: ServerTransaction, req: SipRequest, flow: Flow): void {
    const site = this.deps.site();
    const trunk = site.settings.trunk;
    let caller = classifyCaller({
      flow,
      trunk,
      deviceByFlow: (k) => this.deviceByFlow.get(k),
      ownerOf: (id) => deviceRef(site.index, id)?.ownerId,
    });
    if (caller.kind === "unknown") {
      const proven = this.authenticate(tx, req, flow, site.index);
      if (proven === undefined) return; // answered: 407, 403 or 400
      caller = proven;
    }
    // RFC 3891 Replaces from a phone of the site: a BLF key picking up a ringing call.
    if (caller.kind === "device" && req.headers.some((h) => h.name === "replaces") && this.replacesPickup(tx, req, caller, site.index)) return;
    const dest = resolveDestination(req.uri, site.index, site.settings.pickupCode || PICKUP_CODE, caller.kind === "trunk" ? trunk?.prefix : undefined, site.settings.featureCodes, this.deps.listen?.code());
    if (caller.kind === "device" && caller.proof === "flow" && (dest.kind === "outbound" || dest.kind === "voicemail") && !this.connectionProven(flow)) {
      // Toll fraud: a UDP source address can be forged on the LAN, so a call that costs money
      // needs the device's own credentials (407, RFC 3261 §22.3). Local calls are not challenged.
      // Listening to voicemail neither: a forged source could have someone's messages played
      // to any address its SDP names.
      const proven = this.authenticate(tx, req, flow, site.index);
      if (proven === undefined) return; // answered: 407, 403 or 400
      if (proven.kind !== "device" || proven.deviceId !== caller.deviceId) {
        // Another device's valid credentials over this phone's flow: not this phone's call.
        respond(tx, req, 403, "Forbidden");
        return;
      }
      caller = proven;
    }
    if (caller.kind === "trunk" && this.deps.callMenus !== undefined) {
      const route = inboundRoute(req.uri, site.index, trunk?.prefix, dest);
      if (route !== undefined) {
        this.startGreetingCall(tx, req, flow, caller, route.greeting);
        return;
      }
    }
    const admission = admit(caller, dest);
    if (!admission.ok) {
      if (this.deps.log.enabled("debug")) this.deps.log.debug("INVITE refused", { status: admission.status, from: flow.remoteAddress, caller: caller.kind, dest: dest.kind });
      respond(tx, req, admission.status, admission.reason);
      return;
    }
    switch (dest.kind) {
      case "group":
        this.startGroupCall(tx, req, flow, caller, dest.group);
        return;
      case "user":
        this.startDirectCall(tx, req, flow, caller, dest.user, site.index);
        return;
      case "outbound":
        this.startOutboundCall(tx, req, flow, caller, dest.number, trunk);
        return;
      case "pickup":
        if (caller.kind === "device" && caller.userId !== undefined) this.pickup(tx, req, caller.deviceId, caller.userId, dest.request.kind === "directed" ? dest.request.extension : undefined, site.index);
        else respond(tx, req, 403, "Forbidden");
        return;
      case "operator": {
        // admit() let only a device with an operator through. Answered here, nothing rings.
        const ops = this.deps.operators;
        const a = caller.kind === "device" && caller.userId !== undefined && ops !== undefined ? ops.onCode(dest.code, { deviceId: caller.deviceId, userId: caller.userId }) : { status: 404, text: "Not Found" };
        respond(tx, req, a.status, a.text, [{ name: "warning", value: `399 ringedge "${a.text}"` }]);
        return;
      }
      case "voicemail":
        this.listen(tx, req, flow, caller, dest.selector, site.index);
        return;
      case "unroutable":
        respond(tx, req, 404, "Not Found");
        return;
    }
  }

  /** The voicemail code: refused here with a reason (nothing answered), or handed to listening. */
  private listen(tx: ServerTransaction, req: SipRequest, flow: Flow, caller: Caller, selector: string, index: SiteIndex): void {
    const listen = this.deps.listen;
    if (listen === undefined) {
      respond(tx, req, 404, "Not Found");
      return;
    }
    // classifyCaller and authenticate: a device is known by its binding's flow or by digest.
    const who = caller.kind === "device" ? { kind: "device" as const, authenticated: true, userId: caller.userId } : { kind: caller.kind, authenticated: false };
    const d = decideListen(who, selector, index, (o) => listen.enabled(o));
    if (!d.ok) {
      if (this.deps.log.enabled("debug")) this.deps.log.debug("voicemail code refused", { callId: req.callId, status: d.status, reason: d.reason });
      respond(tx, req, d.status, d.reason, [{ name: "warning", value: `399 ringedge "${d.reason}"` }]);
      return;
    }
    const pc = this.proxy.startCall(tx, req, flow, this.events);
    if (pc === undefined) return;
    listen.take(pc, d.mailboxes);
  }

  /**
   * Whether the flow (transport, address, port) is one a device holds a live binding on. The
   * agent lets such flows through a ban of their address (guard.ts, "Registered addresses").
   */
  isDeviceFlow(flow: Flow): boolean {
    return this.deviceByFlow.has(flowKey(flow.transport, flow.remoteAddress, flow.remotePort));
  }

  /**
   * Whether the request came over the very TCP (or TLS) connection a binding was registered
   * over: the handshake proved the address and the REGISTER proved the password on it. UDP
   * never is (a forged source address gets the same flow key); neither is a TCP binding
   * restored after a restart (its connection is gone).
   */
  private connectionProven(flow: Flow): boolean {
    if (flow.transport !== "tcp" || flow.connectionId === undefined) return false;
    return this.deviceByFlow.get(flowKey(flow.transport, flow.remoteAddress, flow.remotePort))?.connectionId === flow.connectionId;
  }

  /** RFC 3261 §22.3 proxy authentication; answers and returns undefined unless proven. */
  private authenticate(tx: ServerTransaction, req: SipRequest, flow: Flow, index: SiteIndex): Caller | undefined {
    const source = flow.remoteAddress;
    const authorization = req.headers.filter((h) => h.name === "proxy-authorization").map((h) => h.value);
    const auth = this.deps.authenticator;
    const guard = this.deps.guard;
    const verdict = auth.verify({
      method: req.method,
      authorization: authorization.length > 0 ? authorization : undefined,
      // RFC 7616 §3.4.6 / RFC 3261 §22.4: the digest uri must be this request's Request-URI.
      requestUri: req.uri,
      lookup: (username) => {
        const c = this.deps.devices.credentials(username);
        return c === undefined ? undefined : { username: c.username, password: c.password };
      },
    });
    const refuse = (username: string | undefined, reason: string): undefined => {
      // Reported before it is counted, so a ban it triggers comes after it (as the registrar does).
      this.deps.bus.emit("auth.failure", { source, username, reason, at: this.clock.now() });
      guard?.noteFailure(source, username);
      respond(tx, req, 403, "Forbidden");
      return undefined;
    };
    // The challenge is sent once and statelessly, as Kamailio's auth module does: a
    // retransmitted request is simply challenged again (with a fresh nonce, RFC 3261 §22.1 /
    // RFC 7616 §3.3), within the source's quota, and the ACK for a non-2xx final response that
    // matches no transaction is dropped (RFC 3261 §16.11 stateless proxy behaviour).
    const challenge = (headers: SipHeader[]): undefined => {
      if (this.deps.respondStatelessly === undefined) respond(tx, req, 407, "Proxy Authentication Required", headers);
      else this.deps.respondStatelessly(tx, createResponse(req, 407, "Proxy Authentication Required", { toTag: randomToken(6), headers }));
      return undefined;
    };
    switch (verdict.kind) {
      case "missing":
        return challenge(auth.challenge());
      case "stale":
        return challenge(auth.challenge({ stale: true }));
      case "malformed":
        respond(tx, req, 400, `Bad Request (${verdict.reason})`);
        return undefined;
      case "failed":
        return refuse(verdict.username, verdict.reason);
      case "ok":
        break;
    }
    if (guard?.isLockedOut(source, verdict.username) === true) return refuse(verdict.username, "account locked out");
    const device = this.deps.devices.credentials(verdict.username);
    if (device === undefined) return refuse(verdict.username, "device removed");
    guard?.noteSuccess(source, verdict.username);
    // RFC 3261 §22.3: credentials for our realm are consumed here, never passed on (the trunk
    // provider has no business with a phone's digest response).
    req.headers = req.headers.filter((h) => h.name !== "proxy-authorization" || !ourRealm(h.value, auth.realm));
    return { kind: "device", deviceId: device.deviceId, username: device.username, userId: deviceRef(index, device.deviceId)?.ownerId, proof: "digest" };
  }

  private newCall(pc: ProxyCall, kind: EngineCall["kind"], caller: Caller, req: SipRequest, groupId?: string, directUserId?: string): EngineCall {
    const call: EngineCall = {
      pc,
      kind,
      caller,
      labelsValue: undefined,
      labelSource: req,
      startedAt: this.clock.now(),
      phase: "ringing",
      groupId,
      firstGroupId: groupId,
      groups: groupId === undefined ? [] : [groupId],
      visited: new Set(),
      plan: undefined,
      directUserId,
      stepTimer: undefined,
      queue: undefined,
      queueTimer: undefined,
      memberBranches: new Map(),
      otherBranches: [],
      pickupBranches: [],
      writtenOff: new Set(),
      failStatuses: [],
      offered: [],
      offeredSet: new Set(),
      busyMembers: new Set(),
      counted: [],
      forwardedAs: undefined,
      answeredBy: undefined,
      answeredDevice: undefined,
      answerAfterMs: undefined,
      latencyRecorded: false,
      calleeTags: undefined,
      trace: undefined,
      responsible: undefined,
      why: undefined,
    };
    this.calls.set(pc.id, call);
    return call;
  }

  // --- group calls -------------------------------------------------------------------------------

  private startGroupCall(tx: ServerTransaction, req: SipRequest, flow: Flow, caller: Caller, group: Group): void {
    const pc = this.proxy.startCall(tx, req, flow, this.events);
    if (pc === undefined) return; // the proxy answered itself (483, 482)
    const call = this.newCall(pc, "group", caller, req, group.id);
    this.beginGroup(call, group, req);
  }

  /** The group's distribution of a call (admitted to it, or sent to it by a greeting or menu). */
  private beginGroup(call: EngineCall, group: Group, req: SipRequest): void {
    const caller = call.caller;
    const now = this.clock.now();
    call.plan = startCall(now);
    call.trace = this.why.open(req.callId, now);
    if (group.outOfHours !== undefined && this.isClosed(group, now)) {
      call.trace.entries.push({ kind: "closed", at: now, group, until: this.openCache.get(group)?.state.until });
      this.noAnswer(call, true, group.outOfHours);
    } else if (group.noAnswer.kind === "wait-for-operator" && this.queue.some((c) => c.queue?.groupId === group.id)) {
      // Callers are served in arrival order: while older calls wait for this group's
      // operators, a new one takes its place behind them instead of ringing a member who
      // may be about to be offered to them; the oldest is then offered first.
      this.noAnswer(call, false);
      this.offerQueued(undefined);
    } else {
      if (group.responsibleFirst !== undefined && caller.kind === "trunk") this.findResponsible(call, req, now);
      this.runStep(call);
    }
    this.notePlaced(call);
  }

  /**
   * Whether the group is out of its working hours at `now`. isOpen runs once per change of the
   * answer (its `until`), or hourly when no change is in its reach; every other call reads the cache.
   */
  isClosed(group: Group, now: number): boolean {
    return this.openState(group, now)?.open === false;
  }

  /** The caller's responsible operator (directory, then memory), from a trunk call's number. */
  private findResponsible(call: EngineCall, req: SipRequest, now: number): void {
    const site = this.deps.site();
    const kc = site.settings.knownCallers;
    const rememberMs = (kc?.rememberAnsweredS ?? 0) * 1000;
    if (site.index.responsibleByNumber.size === 0 && (rememberMs <= 0 || this.lastAnswered.size === 0)) return;
    const number = callerNumber(req, kc?.countryCode);
    const r = responsibleFor(number, site.index.responsibleByNumber, this.lastAnswered, rememberMs, now);
    if (r === undefined) return;
    call.responsible = r.userId;
    if (call.trace !== undefined) call.trace.responsible = r;
  }

  /** Open state of a group at `now`; undefined when it has no hours (always open). */
  openState(group: Group, now: number = this.clock.now()): OpenState | undefined {
    if (group.hours === undefined) return undefined;
    const zone = this.deps.site().index.timeZone;
    if (zone === undefined) return undefined;
    let c = this.openCache.get(group);
    // A clock set back before the cached answer was made is asked again too.
    if (c === undefined || now >= c.recheckAt || now < c.madeAt) {
      const state = isOpen(group.hours, zone, now);
      c = { state, madeAt: now, recheckAt: state.until ?? now + OPEN_RECHECK_MAX_MS };
      this.openCache.set(group, c);
    }
    return c.state;
  }

  /** The group distributing the call; a group removed by a push mid-call ends it with 480. */
  private groupOrReject(call: EngineCall, site: ReturnType<EngineDeps["site"]>): Group | undefined {
    const group = call.groupId === undefined ? undefined : site.index.groupsById.get(call.groupId);
    if (group === undefined) this.rejectCall(call, 480);
    return group;
  }

  /** planStep for the call's group, then make the plan happen. */
  private runStep(call: EngineCall): void {
    this.clearStepTimer(call);
    if (call.phase !== "ringing" || call.plan === undefined) return;
    const site = this.deps.site();
    const group = this.groupOrReject(call, site);
    if (group === undefined) return;
    const now = this.clock.now();
    const plan = planStep({
      group,
      usersById: site.index.usersById,
      devicesByOwner: site.index.devicesByOwner,
      presence: this.snapshot,
      evenlyLastOffered: this.evenlyOf(group.id),
      call: call.plan,
      now,
      ringUnitMs: this.ringUnitMs,
      maxPhysical: this.maxPhysical,
      wrapUpUntil: this.wrapUp.get(group.id),
      responsible: call.responsible,
    });
    // Stops first, on the plan they belong to; then the new plan (a member may ring again in it).
    for (const m of plan.stop) this.stopMember(call, m, "step ended");
    call.plan = plan.call;
    const offeredNow: Array<{ memberId: string; deviceIds: string[] }> = [];
    const deadMembers: string[] = [];
    for (const r of plan.ring) {
      if (this.forkMember(call, r.memberId, r.deviceIds) > 0) offeredNow.push(r);
      else deadMembers.push(r.memberId);
    }
    this.noteFirstFork(call);

    // The forks are out: now the bookkeeping (principle 3).
    if (group.strategy === "evenly") for (const o of offeredNow) this.recordEvenly(group.id, o.memberId, now);
    call.trace?.entries.push({ kind: "step", at: now, group, plan });
    for (const o of offeredNow) this.noteOffered(call, o.memberId, o.deviceIds);
    const busy = plan.skipped.filter((s) => s.reason === "busy").map((s) => s.memberId);
    if (busy.length > 0) {
      for (const m of busy) call.busyMembers.add(m);
      this.deps.bus.emit("call.busy", { callId: call.pc.request.callId, groupId: group.id, memberIds: busy, caller: labels(call).caller, at: now });
    }
    for (const m of deadMembers) call.plan = withMemberEnded(call.plan, m);

    if (plan.exhausted) {
      this.noAnswer(call, plan.allOffline);
      return;
    }
    if (!this.hasLiveBranches(call)) {
      // Every fork of this step failed at once (no usable binding): move on now. Each step
      // passes at least one member, so this recursion is bounded by the group's size.
      this.runStep(call);
      return;
    }
    if (plan.nextStepAt !== undefined) call.stepTimer = this.clock.setTimeout(() => this.guarded(() => this.onStepTimer(call)), Math.max(0, plan.nextStepAt - now));
  }

  private onStepTimer(call: EngineCall): void {
    call.stepTimer = undefined;
    if (call.phase !== "ringing") return;
    if (call.pickupBranches.some(isLive)) {
      // A pickup is being delivered: do not stop anything under it.
      call.stepTimer = this.clock.setTimeout(() => this.guarded(() => this.onStepTimer(call)), this.ringUnitMs);
      return;
    }
    this.runStep(call);
  }

  /** The no-answer action of the call's group (or `action`, after a wait). */
  private noAnswer(call: EngineCall, allOffline: boolean, action?: NoAnswerAction): void {
    const site = this.deps.site();
    const group = this.groupOrReject(call, site);
    if (group === undefined) return;
    const now = this.clock.now();
    const passed: PassedGroup[] = [];
    const d = pickNoAnswer({
      group,
      groupsById: site.index.groupsById,
      usersById: site.index.usersById,
      devicesByOwner: site.index.devicesByOwner,
      presence: this.snapshot,
      call: call.plan,
      allOffline,
      action,
      visited: call.visited,
      now,
      isClosed: (g) => this.isClosed(g, now),
      passed,
    });
    call.trace?.entries.push({ kind: "action", at: now, group, decision: d, outOfHours: action !== undefined && action === group.outOfHours, passed: passed.length > 0 ? passed : undefined });
    if (d.fromGroupId !== call.groupId) {
      call.groupId = d.fromGroupId;
      call.groups.push(d.fromGroupId);
    }
    switch (d.kind) {
      case "voicemail": {
        if ("mailbox" in d) {
          this.toMailbox(call, d.mailbox);
          return;
        }
        const t = this.voicemailTarget(call, d.uri, site.settings.trunk);
        this.forwardTo(call, t, "voicemail");
        return;
      }
      case "forward": {
        const trunk = site.settings.trunk;
        this.forwardTo(call, trunk === undefined ? undefined : this.trunkTarget(call, trunk, trunkUri(trunk, d.number)), "forwarded");
        return;
      }
      case "wait-for-operator":
        this.enqueue(call, d.fromGroupId, d.until, d.then, now);
        return;
      case "overflow-group": {
        call.groupId = d.groupId;
        call.groups.push(d.groupId);
        call.visited = d.visited;
        call.plan = startCall(now);
        const target = site.index.groupsById.get(d.groupId);
        if (target?.responsibleFirst !== undefined && call.responsible === undefined && call.caller.kind === "trunk") this.findResponsible(call, call.pc.request, now);
        this.runStep(call);
        return;
      }
      case "hangup":
        if (this.deps.log.enabled("debug")) this.deps.log.debug("no answer: hanging up", { callId: call.pc.request.callId, status: d.status, cause: d.cause });
        this.rejectCall(call, d.status);
        return;
    }
  }

  /** Ends member distribution and sends the call to one target (voicemail, a forward). */
  private forwardTo(call: EngineCall, target: BranchTarget | undefined, as: "voicemail" | "forwarded"): void {
    this.cancelAllMembers(call, "no answer");
    if (target === undefined) {
      this.deps.log.warn("no-answer target unreachable (no trunk configured?)", { callId: call.pc.request.callId, action: as });
      this.rejectCall(call, 480);
      return;
    }
    call.phase = "forwarded";
    call.forwardedAs = as;
    const b = this.proxy.fork(call.pc, target);
    if (b === undefined) {
      this.rejectCall(call, 480);
      return;
    }
    call.otherBranches.push(b);
    this.noteFirstFork(call);
  }

  /**
   * Ends member distribution and hands the call to a mailbox on the appliance (deps.mailboxes):
   * it answers the call itself, so the call counts as answered by voicemail (no member).
   */
  private toMailbox(call: EngineCall, mailbox: MailboxOwner): void {
    this.cancelAllMembers(call, "no answer");
    const mailboxes = this.deps.mailboxes;
    if (mailboxes === undefined) {
      this.deps.log.warn("no-answer action is a mailbox on the appliance, but voicemail is not running", { callId: call.pc.request.callId, mailbox: `${mailbox.kind}/${mailbox.id}` });
      this.rejectCall(call, 480);
      return;
    }
    call.phase = "forwarded";
    call.forwardedAs = "voicemail";
    mailboxes.take(call.pc, mailbox, labels(call).caller, {
      answered: () =>
        this.guarded(() => {
          if (call.phase !== "forwarded") return;
          call.phase = "answered";
          this.clearTimers(call);
          const now = this.clock.now();
          call.answerAfterMs = now - call.startedAt;
          // A site phone leaving a message is on a call, as with any answer (busy tracking).
          if (call.caller.kind === "device" && call.caller.userId !== undefined) this.countCall(call, call.caller.userId);
          if (call.trace !== undefined) call.why = whyRecord(call.trace, MAX_WHY_ITEMS, this.devicesOf);
          this.deps.bus.emit("call.answered", { callId: call.pc.request.callId, groupId: call.kind === "group" ? call.groupId : undefined, memberId: undefined, deviceId: undefined, caller: labels(call).caller, answerAfterMs: call.answerAfterMs, at: now, ...(call.why !== undefined ? { why: call.why } : {}) });
        }),
      ended: (status) => this.guarded(() => this.finish(call, status)),
    });
  }

  private voicemailTarget(call: EngineCall, uri: string, trunk: TrunkSettings | undefined): BranchTarget | undefined {
    const r = voicemailRoute(uri);
    if (r.direct) return { uri, flow: this.flowTo(call, r.transport, r.host, r.port) };
    if (trunk === undefined) return undefined;
    return this.trunkTarget(call, trunk, uri);
  }

  private trunkTarget(call: EngineCall, trunk: TrunkSettings, uri: string): BranchTarget {
    return { uri, flow: this.flowTo(call, trunk.transport, trunk.host, trunk.port) };
  }

  /**
   * A flow toward a peer outside the location service. For UDP the caller's local socket is
   * reused when the transport matches; otherwise the transport picks one (connectionId unset:
   * the proxy opens or reuses a connection, RFC 3261 §18.1.1).
   */
  private flowTo(call: EngineCall, transport: "udp" | "tcp", host: string, port: number): Flow {
    const f = call.pc.flow;
    const same = f.transport === transport;
    return { transport, remoteAddress: host, remotePort: port, localAddress: same ? f.localAddress : "", localPort: same ? f.localPort : 0 };
  }

  // --- wait for a free operator ---------------------------------------------------------------------

  private enqueue(call: EngineCall, groupId: string, until: number, then: FinalNoAnswerAction, now: number): void {
    this.cancelAllMembers(call, "queued");
    call.phase = "queued";
    call.queue = { groupId, then, offering: undefined, offerTimer: undefined, queuedAt: now };
    this.queue.push(call);
    this.queueStats.joined(groupId);
    // RFC 3261 §21.1.3: 182 Queued; the caller keeps its ringback.
    this.proxy.provisional(call.pc, 182, "Queued");
    this.deps.bus.emit("queue.joined", { callId: call.pc.request.callId, groupId, position: this.positionOf(call) ?? 0, at: now });
    this.deps.queueMedia?.enter(call.pc, { groupId, position: () => this.positionOf(call) });
    call.queueTimer = this.clock.setTimeout(() => this.guarded(() => this.onQueueTimeout(call)), Math.max(0, until - now));
  }

  private onQueueTimeout(call: EngineCall): void {
    call.queueTimer = undefined;
    if (call.phase !== "queued" || call.queue === undefined) return;
    if (call.pickupBranches.some(isLive)) {
      call.queueTimer = this.clock.setTimeout(() => this.guarded(() => this.onQueueTimeout(call)), this.ringUnitMs);
      return;
    }
    const then = call.queue.then;
    this.leaveQueue(call, "max-wait");
    this.cancelAllMembers(call, "max wait");
    call.phase = "ringing";
    call.groupId = call.queue?.groupId ?? call.groupId;
    this.noAnswer(call, false, then);
  }

  private leaveQueue(call: EngineCall, reason: QueueLeaveReason): void {
    const i = this.queue.indexOf(call);
    if (i >= 0) {
      this.queue.splice(i, 1);
      if (call.queue !== undefined) {
        const now = this.clock.now();
        const waitedMs = Math.max(0, now - call.queue.queuedAt);
        this.queueStats.left(call.queue.groupId, reason, waitedMs);
        this.deps.bus.emit("queue.left", { callId: call.pc.request.callId, groupId: call.queue.groupId, reason, waitedMs, at: now });
      }
    }
    this.deps.queueMedia?.leave(call.pc);
    if (call.queue !== undefined) {
      if (call.queue.offerTimer !== undefined) this.clock.clearTimeout(call.queue.offerTimer);
      call.queue.offerTimer = undefined;
    }
    if (call.queueTimer !== undefined) this.clock.clearTimeout(call.queueTimer);
    call.queueTimer = undefined;
  }

  /**
   * Someone may have become free: offer waiting calls (oldest first) to selectFreeOperator's
   * pick. `userId` narrows it to the groups that user is in.
   */
  private offerQueued(userId: string | undefined): void {
    const cbs = this.deps.callbacks;
    const pendingCallbacks = cbs?.pending() ?? [];
    if (this.queue.length === 0 && pendingCallbacks.length === 0) return;
    const site = this.deps.site();
    // Members already ringing for a waiting call, or reserved by a callback, are not offered another.
    const busyWithOffer = new Set<string>(cbs?.busy() ?? []);
    for (const c of this.queue) if (c.queue?.offering !== undefined) busyWithOffer.add(c.queue.offering);
    // Waiting callers and due callbacks in one arrival order (callback.ts): a callback keeps its place.
    const waiting = this.queue.map((c) => ({ groupId: c.queue?.groupId ?? "", place: c.queue?.queuedAt ?? 0, offering: c.queue?.offering !== undefined, ref: c }));
    for (const item of queueOrder(waiting, pendingCallbacks, this.clock.now())) {
      const call = item.kind === "caller" ? item.ref : undefined;
      const q = call?.queue;
      if (call !== undefined && (q === undefined || q.offering !== undefined)) continue;
      const group = site.index.groupsById.get(item.groupId);
      if (group === undefined) continue;
      if (userId !== undefined && !group.members.includes(userId)) continue;
      const pick = selectFreeOperator({
        group,
        usersById: site.index.usersById,
        devicesByOwner: site.index.devicesByOwner,
        presence: this.snapshot,
        evenlyLastOffered: this.evenlyOf(group.id),
        exclude: busyWithOffer,
        maxPhysical: this.maxPhysical,
        wrapUpUntil: this.wrapUp.get(group.id),
        now: this.clock.now(),
      });
      if (pick === undefined) continue;
      const now = this.clock.now();
      if (item.kind === "callback") {
        if (!cbs!.dispatch(item.callback.id, pick.memberId, pick.deviceIds)) continue;
        busyWithOffer.add(pick.memberId);
        if (group.strategy === "evenly") this.recordEvenly(group.id, pick.memberId, now);
        continue;
      }
      if (call === undefined || q === undefined || this.forkMember(call, pick.memberId, pick.deviceIds) === 0) continue;
      q.offering = pick.memberId;
      busyWithOffer.add(pick.memberId);
      if (group.strategy === "evenly") this.recordEvenly(group.id, pick.memberId, now);
      call.trace?.entries.push({ kind: "offer", at: now, group, memberId: pick.memberId, deviceIds: pick.deviceIds });
      this.noteOffered(call, pick.memberId, pick.deviceIds);
      // One offer rings for one step; then the call waits again for the next free member.
      q.offerTimer = this.clock.setTimeout(() => this.guarded(() => this.onOfferTimeout(call)), stepLengthMs(group, this.ringUnitMs));
    }
  }

  /** A pending callback may be served now (added, due again, put back): offer to whoever is free. */
  serveQueue(): void {
    this.guarded(() => this.offerQueued(undefined));
  }

  /**
   * A callback call the agent placed itself (callback-service.ts) keeps `userId` busy like an
   * answered dialog: counted until releaseOperator, then waiting calls may go to them.
   */
  holdOperator(userId: string): void {
    this.activeCalls.set(userId, (this.activeCalls.get(userId) ?? 0) + 1);
  }

  /** `serve` false: the operator did not answer; nothing is offered to them until something else frees someone. */
  releaseOperator(userId: string, serve = true): void {
    const n = (this.activeCalls.get(userId) ?? 0) - 1;
    if (n > 0) this.activeCalls.set(userId, n);
    else this.activeCalls.delete(userId);
    if (serve) this.guarded(() => this.offerQueued(userId));
  }

  /**
   * The waiting caller accepted a callback (media/callback-offer.ts): the call leaves the queue
   * and gets its final response — RFC 3261 §21.4.18 480 Temporarily Unavailable, whose reason
   * phrase "SHOULD indicate a more precise cause": "Callback Requested". A 4xx, not a 6xx: it
   * ends this request only; the caller's equipment may call again. Returns the caller's place
   * and number, or undefined when the call is not waiting any more.
   */
  takeForCallback(pcId: string): { groupId: string; place: number; number: string | undefined } | undefined {
    const call = this.calls.get(pcId);
    if (call === undefined || call.phase !== "queued" || call.queue === undefined) return undefined;
    const taken = { groupId: call.queue.groupId, place: call.queue.queuedAt, number: callerNumber(call.pc.request, this.deps.site().settings.knownCallers?.countryCode) };
    this.leaveQueue(call, "callback");
    this.cancelAllMembers(call, "callback");
    this.proxy.reject(call.pc, 480, "Callback Requested");
    this.finish(call, 480);
    return taken;
  }

  private onOfferTimeout(call: EngineCall): void {
    const q = call.queue;
    if (q === undefined || call.phase !== "queued") return;
    q.offerTimer = undefined;
    if (call.pickupBranches.some(isLive)) {
      q.offerTimer = this.clock.setTimeout(() => this.guarded(() => this.onOfferTimeout(call)), this.ringUnitMs);
      return;
    }
    if (q.offering !== undefined) this.stopMember(call, q.offering, "offer timed out");
    q.offering = undefined;
    // Nobody else may free up to wake the queue: after one ring's pause the waiting calls are
    // offered again, oldest first (to the next free operator, who may be the same one).
    if (this.queueRetryTimer === undefined) {
      this.queueRetryTimer = this.clock.setTimeout(() => {
        this.queueRetryTimer = undefined;
        this.guarded(() => this.offerQueued(undefined));
      }, this.ringUnitMs);
    }
  }

  // --- greetings and menus (docs/menus.md) ------------------------------------------------------------

  /** A trunk call to an inbound number with a greeting: it plays as early media; the keys decide. */
  private startGreetingCall(tx: ServerTransaction, req: SipRequest, flow: Flow, caller: Caller, greeting: Greeting): void {
    const pc = this.proxy.startCall(tx, req, flow, this.events);
    if (pc === undefined) return;
    const call = this.newCall(pc, "group", caller, req);
    call.phase = "menu";
    const maxOf = greeting.extensionDialling?.maxDigits ?? 0;
    const site = (): RoutingSite => this.deps.site();
    const ctx: IvrContext = {
      // Read at each step: a push applies to the next decision, as for groups.
      get menus() {
        return site().index.menus?.menusById ?? new Map();
      },
      dial: (digits) => {
        const index = this.deps.site().index;
        const group = index.groupsByNumber.get(digits);
        const user = group === undefined ? index.usersByExtension.get(digits) : undefined;
        const target: FinalTarget | undefined = group !== undefined ? { kind: "group", groupId: group.id } : user !== undefined ? { kind: "user", userId: user.id } : undefined;
        let longer = false;
        for (const keys of [index.groupsByNumber.keys(), index.usersByExtension.keys()]) {
          for (const n of keys) {
            if (n.length > digits.length && n.length <= maxOf && n.startsWith(digits)) {
              longer = true;
              break;
            }
          }
          if (longer) break;
        }
        return { target, longer };
      },
    };
    this.deps.callMenus!.start(pc, greeting, ctx, (target) => this.guarded(() => this.menuRoute(call, target)));
  }

  /** Where a greeting or menu sent the call: the engine's usual paths from here on. */
  private menuRoute(call: EngineCall, t: FinalTarget): void {
    if (call.phase !== "menu") return;
    call.phase = "ringing";
    const site = this.deps.site();
    if (this.deps.log.enabled("debug")) this.deps.log.debug("greeting: routed", { callId: call.pc.request.callId, target: t.kind });
    switch (t.kind) {
      case "group": {
        const group = site.index.groupsById.get(t.groupId);
        if (group === undefined) return this.rejectCall(call, 480);
        call.kind = "group";
        call.groupId = group.id;
        call.firstGroupId = group.id;
        call.groups.push(group.id);
        this.beginGroup(call, group, call.pc.request);
        return;
      }
      case "user": {
        const user = site.index.usersById.get(t.userId);
        if (user === undefined) return this.rejectCall(call, 480);
        this.ringUser(call, user, site.index);
        return;
      }
      case "voicemail": {
        // The owner's voicemail: their mailbox on the appliance when it is enabled (and voicemail
        // runs); else a group's voicemail action (the URI it forwards to); else 480.
        const group = t.owner.kind === "group" ? site.index.groupsById.get(t.owner.id) : undefined;
        if (this.deps.mailboxes !== undefined && mailboxOf(site.index, t.owner) !== undefined) {
          if (group !== undefined) {
            call.kind = "group";
            call.groupId = group.id;
            call.firstGroupId = group.id;
            call.groups.push(group.id);
          } else {
            call.kind = "direct";
            call.directUserId = t.owner.id;
          }
          this.toMailbox(call, { kind: t.owner.kind, id: t.owner.id });
          return;
        }
        const uri = group === undefined ? undefined : voicemailUriOf(group);
        if (group === undefined || uri === undefined) {
          this.deps.log.warn("menu: no voicemail to send the call to", { callId: call.pc.request.callId, owner: `${t.owner.kind}:${t.owner.id}` });
          return this.rejectCall(call, 480);
        }
        call.kind = "group";
        call.groupId = group.id;
        call.firstGroupId = group.id;
        call.groups.push(group.id);
        this.forwardTo(call, this.voicemailTarget(call, uri, site.settings.trunk), "voicemail");
        return;
      }
      case "hangup":
        this.rejectCall(call, 480);
        return;
    }
  }

  /** A call from a greeting or menu rings a user's phones, as a direct call would. */
  private ringUser(call: EngineCall, user: User, index: SiteIndex): void {
    call.kind = "direct";
    call.directUserId = user.id;
    const deviceIds = this.directDevices(user, call.caller, index);
    if (deviceIds.length === 0) return this.rejectCall(call, 480);
    if ((this.snapshot.availability?.get(user.id) ?? user.availability) === "dnd") {
      this.proxy.reject(call.pc, 480, "Do Not Disturb");
      this.finish(call, 480);
      return;
    }
    if (user.callLimit > 0 && (this.activeCalls.get(user.id) ?? 0) >= user.callLimit) {
      call.busyMembers.add(user.id);
      this.deps.bus.emit("call.busy", { callId: call.pc.request.callId, groupId: undefined, memberIds: [user.id], caller: labels(call).caller, at: this.clock.now() });
      return this.rejectCall(call, 486);
    }
    const forked = this.forkMember(call, user.id, deviceIds);
    this.noteFirstFork(call);
    if (forked === 0) return this.rejectCall(call, 480);
    this.noteOffered(call, user.id, deviceIds);
  }

  /** A user's devices a direct call rings: online, not the caller's own, at most maxPhysical desk phones. */
  private directDevices(user: User, caller: Caller, index: SiteIndex): string[] {
    const deviceIds: string[] = [];
    let physical = 0;
    for (const d of index.devicesByOwner.get(user.id) ?? []) {
      if (!this.online.has(d.id) || (caller.kind === "device" && caller.deviceId === d.id)) continue;
      if (d.kind === "physical") {
        if (physical >= this.maxPhysical) continue;
        physical++;
      }
      deviceIds.push(d.id);
    }
    return deviceIds;
  }

  // --- direct and outbound calls -------------------------------------------------------------------

  private startDirectCall(tx: ServerTransaction, req: SipRequest, flow: Flow, caller: Caller, user: User, index: SiteIndex): void {
    const deviceIds = this.directDevices(user, caller, index);
    const refusedRecord = (outcome: CallRecord["outcome"]): CallRecord => ({ id: recordId(req.callId), at: this.clock.now(), caller: callerLabel(caller, req), target: dialledText(req.uri), outcome, offered: [] });
    // A user with a mailbox on the appliance (voicemail/): offline, do not disturb or at the
    // call limit, the caller goes there at once; otherwise after the mailbox's noAnswerS.
    const mailbox = this.deps.mailboxes !== undefined ? mailboxOf(index, { kind: "user", id: user.id }) : undefined;
    const busyNow = user.callLimit > 0 && (this.activeCalls.get(user.id) ?? 0) >= user.callLimit;
    if (mailbox !== undefined && (deviceIds.length === 0 || busyNow || (this.snapshot.availability?.get(user.id) ?? user.availability) === "dnd")) {
      const pc = this.proxy.startCall(tx, req, flow, this.events);
      if (pc === undefined) return;
      const call = this.newCall(pc, "direct", caller, req, undefined, user.id);
      if (busyNow) this.deps.bus.emit("call.busy", { callId: req.callId, groupId: undefined, memberIds: [user.id], caller: labels(call).caller, at: this.clock.now() });
      this.toMailbox(call, { kind: "user", id: user.id });
      return;
    }
    if (deviceIds.length === 0) {
      respond(tx, req, 480, reasonPhrase(480));
      const r = refusedRecord("missed");
      this.deps.bus.emit("call.missed", { callId: req.callId, groupId: undefined, caller: r.caller, target: r.target, offered: [], outcome: "missed", at: r.at });
      this.deps.store.appendCall(r);
      return;
    }
    if (deviceIds.length > 0 && (this.snapshot.availability?.get(user.id) ?? user.availability) === "dnd") {
      // Do not disturb keeps direct calls off the phone too: RFC 3261 §21.4.18 names DND for 480.
      respond(tx, req, 480, "Do Not Disturb");
      const r = refusedRecord("missed");
      this.deps.bus.emit("call.missed", { callId: req.callId, groupId: undefined, caller: r.caller, target: r.target, offered: [], outcome: "missed", at: r.at });
      this.deps.store.appendCall(r);
      return;
    }
    if (user.callLimit > 0 && (this.activeCalls.get(user.id) ?? 0) >= user.callLimit) {
      respond(tx, req, 486, reasonPhrase(486));
      const r = refusedRecord("busy");
      this.deps.bus.emit("call.busy", { callId: req.callId, groupId: undefined, memberIds: [user.id], caller: r.caller, at: r.at });
      this.deps.store.appendCall(r);
      return;
    }
    const pc = this.proxy.startCall(tx, req, flow, this.events);
    if (pc === undefined) return;
    const call = this.newCall(pc, "direct", caller, req, undefined, user.id);
    const forked = this.forkMember(call, user.id, deviceIds);
    this.noteFirstFork(call);
    if (forked === 0) {
      if (mailbox !== undefined) this.toMailbox(call, { kind: "user", id: user.id });
      else this.rejectCall(call, 480);
      return;
    }
    this.noteOffered(call, user.id, deviceIds);
    this.notePlaced(call);
    if (mailbox !== undefined) {
      call.stepTimer = this.clock.setTimeout(() => this.guarded(() => {
        call.stepTimer = undefined;
        if (call.phase === "ringing") this.toMailbox(call, { kind: "user", id: user.id });
      }), mailbox.noAnswerS * 1000);
    }
  }

  private startOutboundCall(tx: ServerTransaction, req: SipRequest, flow: Flow, caller: Caller, number: string, trunk: TrunkSettings | undefined): void {
    if (trunk === undefined) {
      respond(tx, req, 404, "Not Found");
      return;
    }
    const pc = this.proxy.startCall(tx, req, flow, this.events);
    if (pc === undefined) return;
    const call = this.newCall(pc, "outbound", caller, req);
    call.phase = "forwarded";
    const b = this.proxy.fork(pc, this.trunkTarget(call, trunk, trunkUri(trunk, number)));
    this.noteFirstFork(call);
    if (b === undefined) {
      this.rejectCall(call, 503);
      return;
    }
    call.otherBranches.push(b);
    this.notePlaced(call);
  }

  // --- pickup -----------------------------------------------------------------------------------------

  private pickup(tx: ServerTransaction, req: SipRequest, pickerDeviceId: string, pickerUserId: string, targetExtension: string | undefined, index: SiteIndex): void {
    const ringingCalls: RingingCall[] = [];
    for (const c of this.calls.values()) {
      if ((c.phase !== "ringing" && c.phase !== "queued") || c.kind === "outbound") continue;
      const ringingMembers = [...c.memberBranches.keys()];
      ringingCalls.push({ callId: c.pc.id, groupId: c.kind === "group" ? c.groupId : undefined, ringingMembers, startedAt: c.startedAt });
    }
    const found = findPickupTarget({
      ringingCalls,
      pickerUserId,
      targetExtension,
      groupsById: index.groupsById,
      groupsByNumber: index.groupsByNumber,
      usersByExtension: index.usersByExtension,
    });
    if (!found.ok) {
      if (found.reason === "unknown-extension") respond(tx, req, 404, "Not Found");
      else respond(tx, req, 480, "Temporarily Unavailable", [{ name: "warning", value: '399 ringedge "Nothing to pick up"' }]);
      return;
    }
    const call = this.calls.get(found.call.callId);
    if (call === undefined) {
      respond(tx, req, 480, "Temporarily Unavailable", [{ name: "warning", value: '399 ringedge "Nothing to pick up"' }]);
      return;
    }
    this.deliverPickup(tx, req, call, pickerDeviceId, pickerUserId);
  }

  /** Hands a ringing call to the picker's device: the request is answered, then the call arrives (see header). */
  private deliverPickup(tx: ServerTransaction, req: SipRequest, call: EngineCall, pickerDeviceId: string, pickerUserId: string): void {
    const bindings = this.bindingsOf(pickerDeviceId);
    if (bindings.length === 0) {
      respond(tx, req, 480, "Temporarily Unavailable", [{ name: "warning", value: '399 ringedge "Picker device not registered"' }]);
      return;
    }
    // The *8 request is answered first so the phone is idle when the call arrives (see header).
    respond(tx, req, 480, "Temporarily Unavailable", [{ name: "warning", value: '399 ringedge "Picked-up call arrives as a new call"' }]);
    const headers: SipHeader[] = [
      { name: "call-info", value: `<sip:${hostOf(call.pc.flow)}>;answer-after=0` },
      { name: "alert-info", value: "<http://127.0.0.1/>;info=alert-autoanswer" },
    ];
    for (const b of bindings) {
      const branch = this.proxy.fork(call.pc, { uri: b.contact, flow: b.flow, deviceId: pickerDeviceId, memberId: pickerUserId, headers });
      if (branch !== undefined) call.pickupBranches.push(branch);
    }
    if (this.deps.log.enabled("debug")) this.deps.log.debug("pickup", { callId: call.pc.request.callId, picker: pickerUserId, branches: call.pickupBranches.length });
  }

  /**
   * An INVITE with Replaces (RFC 3891) from a device. It names the call by Call-ID and the two
   * tags; a BLF NOTIFY gives phones the caller's Call-ID and From tag and the ringing phone's
   * tag, and phones put them in either order, so the call is matched by its Call-ID and the
   * caller's From tag in either position, the other tag being one of its callees' or empty.
   * A ringing call is picked up as directed pickup would (same eligibility, same delivery); an
   * answered one is left to normal routing (attended transfer between phones); nothing → 481
   * (RFC 3891 §3). Returns true when it answered.
   */
  private replacesPickup(tx: ServerTransaction, req: SipRequest, caller: Extract<Caller, { kind: "device" }>, index: SiteIndex): boolean {
    const parsed = parseReplaces(req.headers.find((h) => h.name === "replaces")!.value);
    if (parsed === undefined) {
      respond(tx, req, 400, "Bad Request (malformed Replaces)");
      return true;
    }
    let match: EngineCall | undefined;
    for (const c of this.calls.values()) {
      if (c.pc.request.callId !== parsed.callId) continue;
      const callerTag = c.pc.request.from.tag ?? "";
      const other = parsed.toTag === callerTag ? parsed.fromTag : parsed.fromTag === callerTag ? parsed.toTag : undefined;
      if (other === undefined) continue;
      if (other === "" || c.calleeTags?.has(other) === true || c.pc.dialog?.calleeTag === other) {
        match = c;
        break;
      }
    }
    if (match === undefined) {
      respond(tx, req, 481, "Call/Transaction Does Not Exist");
      return true;
    }
    if (match.phase === "answered" || match.phase === "done") return false;
    if (caller.userId === undefined) {
      respond(tx, req, 403, "Forbidden (device has no operator)");
      return true;
    }
    const ringingMembers = [...match.memberBranches.keys()];
    const firstRinging = ringingMembers.length > 0 ? index.usersById.get(ringingMembers[0]!) : undefined;
    const found =
      match.kind === "outbound" || firstRinging === undefined
        ? undefined
        : findPickupTarget({
            ringingCalls: [{ callId: match.pc.id, groupId: match.kind === "group" ? match.groupId : undefined, ringingMembers, startedAt: match.startedAt }],
            pickerUserId: caller.userId,
            targetExtension: firstRinging.extension,
            groupsById: index.groupsById,
            groupsByNumber: index.groupsByNumber,
            usersByExtension: index.usersByExtension,
          });
    if (found === undefined || !found.ok) {
      respond(tx, req, 480, "Temporarily Unavailable", [{ name: "warning", value: '399 ringedge "Nothing to pick up"' }]);
      return true;
    }
    this.deliverPickup(tx, req, match, caller.deviceId, caller.userId);
    return true;
  }

  // --- proxy events --------------------------------------------------------------------------------

  private onRinging(pc: ProxyCall, branch: Branch, calleeTag: string | undefined): void {
    const call = this.calls.get(pc.id);
    if (call === undefined || calleeTag === undefined) return;
    // Kept for the call's life: a copy, not a slice pinning the whole 180 (sip/message.ts detached).
    (call.calleeTags ??= new Set()).add(detached(calleeTag));
    this.deps.bus.emit("call.ringing", { callId: pc.request.callId, memberId: branch.target.memberId, deviceId: branch.target.deviceId, calleeTag, at: this.clock.now() });
  }

  private onBranchFailed(pc: ProxyCall, branch: Branch, status: number): void {
    const call = this.calls.get(pc.id);
    if (call === undefined || call.phase === "done" || call.phase === "answered") return;
    if (call.writtenOff.delete(branch.id)) return;
    call.failStatuses.push(status);

    const pi = call.pickupBranches.indexOf(branch);
    if (pi >= 0) {
      call.pickupBranches.splice(pi, 1);
      this.afterBranchGone(call);
      return;
    }
    const oi = call.otherBranches.indexOf(branch);
    if (oi >= 0) {
      call.otherBranches.splice(oi, 1);
      if (call.phase === "forwarded" && !call.otherBranches.some(isLive)) {
        // 401/407 from a gateway challenge the agent, not the caller: never relayed.
        this.rejectCall(call, status === 401 || status === 407 ? 503 : status >= 300 ? status : 480);
      }
      return;
    }
    const memberId = branch.target.memberId;
    if (memberId === undefined) return;
    const list = call.memberBranches.get(memberId);
    if (list === undefined) return;
    const i = list.indexOf(branch);
    if (i >= 0) list.splice(i, 1);
    if (status === 603) {
      // RFC 3261 §21.6.2 Decline: the person said no; their other devices stop too.
      for (const b of list) this.writeOff(call, b, "declined");
      list.length = 0;
    }
    if (list.length === 0) this.memberEnded(call, memberId);
  }

  /** Every branch of a member is gone without an answer. */
  private memberEnded(call: EngineCall, memberId: string): void {
    call.memberBranches.delete(memberId);
    this.deps.bus.emit("call.offer-ended", { callId: call.pc.request.callId, memberId, at: this.clock.now() });
    if (call.plan !== undefined) call.plan = withMemberEnded(call.plan, memberId);
    if (call.phase === "queued" && call.queue?.offering === memberId) {
      call.queue.offering = undefined;
      if (call.queue.offerTimer !== undefined) this.clock.clearTimeout(call.queue.offerTimer);
      call.queue.offerTimer = undefined;
      return;
    }
    this.afterBranchGone(call);
  }

  /** Nothing rings any more: move the call on now rather than at the step's end. */
  private afterBranchGone(call: EngineCall): void {
    if (call.phase !== "ringing" || this.hasLiveBranches(call)) return;
    if (call.kind === "group") this.runStep(call);
    else if (call.kind === "direct") {
      // Every phone of the user declined or failed: their mailbox, if they have one.
      const userId = call.directUserId;
      if (userId !== undefined && this.deps.mailboxes !== undefined && mailboxOf(this.deps.site().index, { kind: "user", id: userId }) !== undefined) this.toMailbox(call, { kind: "user", id: userId });
      else this.rejectCall(call, bestFailure(call.failStatuses));
    }
  }

  private onAnswered(pc: ProxyCall, branch: Branch): void {
    const call = this.calls.get(pc.id);
    if (call === undefined || call.phase === "done") return;
    const wasQueued = call.phase === "queued";
    call.phase = "answered";
    this.clearTimers(call);
    if (wasQueued) this.leaveQueue(call, "answered");
    const now = this.clock.now();
    call.answeredBy = branch.target.memberId;
    call.answeredDevice = branch.target.deviceId;
    call.answerAfterMs = now - call.startedAt;
    // The proxy cancelled the other branches itself (Reason cause=200): forget them.
    call.memberBranches.clear();
    call.pickupBranches.length = 0;
    if (call.answeredBy !== undefined) this.countCall(call, call.answeredBy);
    if (call.caller.kind === "device" && call.caller.userId !== undefined) this.countCall(call, call.caller.userId);
    if (call.trace !== undefined) call.why = whyRecord(call.trace, MAX_WHY_ITEMS, this.devicesOf);
    if (call.answeredBy !== undefined && call.caller.kind === "trunk") this.rememberAnswered(call, call.answeredBy, now);
    this.deps.bus.emit("call.answered", {
      callId: pc.request.callId,
      groupId: call.kind === "group" ? call.groupId : undefined,
      memberId: call.answeredBy,
      deviceId: call.answeredDevice,
      caller: labels(call).caller,
      answerAfterMs: call.answerAfterMs,
      at: now,
      ...(call.why !== undefined ? { why: call.why } : {}),
    });
  }

  /** Remembers who answered a trunk caller, when the site asks for it (callers.ts). */
  private rememberAnswered(call: EngineCall, userId: string, now: number): void {
    const kc = this.deps.site().settings.knownCallers;
    if ((kc?.rememberAnsweredS ?? 0) <= 0) return;
    const number = callerNumber(call.pc.request, kc?.countryCode);
    if (number !== undefined) this.lastAnswered.remember(number, userId, now);
  }

  /** Wrap-up: the operator who answered a call through `groupId` is held back from it for wrapUpS. */
  private startWrapUp(groupId: string, userId: string, now: number): void {
    const group = this.deps.site().index.groupsById.get(groupId);
    const s = group?.wrapUpS ?? 0;
    if (s <= 0) return;
    let m = this.wrapUp.get(groupId);
    if (m === undefined) this.wrapUp.set(groupId, (m = new Map()));
    for (const [u, until] of m) if (until <= now) m.delete(u);
    m.set(userId, now + s * 1000);
    // When it is over, waiting calls may go to them.
    this.clock.setTimeout(() => this.guarded(() => this.offerQueued(userId)), s * 1000);
  }

  /** Operators in wrap-up in a group now (user id → epoch ms it ends), for status and tests. */
  wrapUpOf(groupId: string): ReadonlyMap<string, number> {
    return this.wrapUp.get(groupId) ?? new Map();
  }

  private onCallerCancelled(pc: ProxyCall): void {
    const call = this.calls.get(pc.id);
    if (call !== undefined) this.finish(call, 487);
  }

  private onEnded(pc: ProxyCall, info: { answered: boolean; status?: number }): void {
    const call = this.calls.get(pc.id);
    if (call !== undefined) this.finish(call, info.answered ? undefined : info.status);
  }

  // --- presence and bindings ---------------------------------------------------------------------------

  private onPresence(deviceId: string, online: boolean): void {
    if (online) {
      this.online.add(deviceId);
      const owner = deviceRef(this.deps.site().index, deviceId)?.ownerId;
      if (owner !== undefined) this.offerQueued(owner);
      return;
    }
    this.online.delete(deviceId);
    // A device that went offline in the middle of a call (crashed, unplugged: it stopped
    // answering keep-alives) will never send the BYE that frees its operator; without this the
    // operator would count as busy until the far end happens to hang up. finish() is idempotent.
    for (const call of [...this.calls.values()]) {
      if (call.phase !== "answered") continue;
      if (call.answeredDevice === deviceId || (call.caller.kind === "device" && call.caller.deviceId === deviceId)) {
        this.deps.log.info("device offline during a call: its operator is free again", { device: deviceId, callId: call.pc.request.callId });
        this.finish(call, undefined);
        // The live side is told with a BYE on the dead phone's behalf instead of silence: the
        // caller when the answering phone died, the operator's phone when the calling one did.
        this.proxy.releaseDialog?.(call.pc, call.answeredDevice === deviceId ? "caller" : "callee");
      }
    }
    // Its branches cannot be answered: cancel them (plan.ts leaves this to the engine).
    for (const call of [...this.calls.values()]) {
      if (call.phase !== "ringing" && call.phase !== "queued") continue;
      for (const [memberId, list] of [...call.memberBranches]) {
        const keep = list.filter((b) => b.target.deviceId !== deviceId);
        if (keep.length === list.length) continue;
        for (const b of list) if (b.target.deviceId === deviceId) this.writeOff(call, b, "device offline");
        if (keep.length > 0) call.memberBranches.set(memberId, keep);
        else this.memberEnded(call, memberId);
      }
    }
  }

  private onBindingsChanged(deviceId: string, aor: string): void {
    for (const k of this.flowKeysByDevice.get(deviceId) ?? []) {
      if (this.deviceByFlow.get(k)?.deviceId === deviceId) this.deviceByFlow.delete(k);
    }
    this.flowKeysByDevice.delete(deviceId);
    for (const b of this.deps.location.lookup(aor)) if (b.deviceId === deviceId) this.indexBinding(b);
  }

  private indexBinding(b: Binding): void {
    const k = flowKey(b.flow.transport, b.flow.remoteAddress, b.flow.remotePort);
    this.deviceByFlow.set(k, { deviceId: b.deviceId, username: b.aor, connectionId: b.flow.connectionId });
    const keys = this.flowKeysByDevice.get(b.deviceId);
    if (keys === undefined) this.flowKeysByDevice.set(b.deviceId, [k]);
    else if (!keys.includes(k)) keys.push(k);
  }

  // --- helpers ----------------------------------------------------------------------------------------

  /** A device's live bindings (forks; callback calls to an operator's phones). */
  bindingsOf(deviceId: string): Binding[] {
    const aor = this.deps.devices.username(deviceId);
    if (aor === undefined) return [];
    return this.deps.location.lookup(aor).filter((b) => b.deviceId === deviceId);
  }

  /** Forks to every binding of the member's devices; returns how many branches went out. */
  private forkMember(call: EngineCall, memberId: string, deviceIds: readonly string[]): number {
    const callerDeviceId = call.caller.kind === "device" ? call.caller.deviceId : undefined;
    let list = call.memberBranches.get(memberId);
    let n = 0;
    for (const deviceId of deviceIds) {
      if (deviceId === callerDeviceId) continue;
      for (const b of this.bindingsOf(deviceId)) {
        const branch = this.proxy.fork(call.pc, { uri: b.contact, flow: b.flow, deviceId, memberId });
        if (branch === undefined) continue;
        if (list === undefined) {
          list = [];
          call.memberBranches.set(memberId, list);
        }
        list.push(branch);
        n++;
      }
    }
    return n;
  }

  /** CANCEL a member's branches (their step ended). */
  private stopMember(call: EngineCall, memberId: string, reason: string): void {
    const list = call.memberBranches.get(memberId);
    call.memberBranches.delete(memberId);
    if (list !== undefined) for (const b of list) this.writeOff(call, b, reason);
    if (call.plan !== undefined) call.plan = withMemberEnded(call.plan, memberId);
    if (list !== undefined) this.deps.bus.emit("call.offer-ended", { callId: call.pc.request.callId, memberId, at: this.clock.now() });
  }

  private cancelAllMembers(call: EngineCall, reason: string): void {
    for (const m of [...call.memberBranches.keys()]) this.stopMember(call, m, reason);
  }

  private writeOff(call: EngineCall, b: Branch, reason: string): void {
    if (!isLive(b)) return;
    call.writtenOff.add(b.id);
    // `reason` is for the log only: the proxy puts its argument in a Reason header, whose value
    // must be RFC 3326 syntax. A step that ends is a plain CANCEL (the phone may list a missed call).
    if (this.deps.log.enabled("debug")) this.deps.log.debug("branch cancelled", { callId: call.pc.request.callId, branch: b.id, reason });
    this.proxy.cancelBranch(call.pc, b);
  }

  private hasLiveBranches(call: EngineCall): boolean {
    for (const list of call.memberBranches.values()) if (list.some(isLive)) return true;
    return call.pickupBranches.some(isLive) || call.otherBranches.some(isLive);
  }

  private noteFirstFork(call: EngineCall): void {
    if (call.latencyRecorded) return;
    const at = call.pc.firstForkAt;
    if (at === undefined) return;
    call.latencyRecorded = true;
    const us = (at - call.pc.receivedAt) * 1000;
    this.histogram.record(us);
    this.deps.bus.emit("call.first-fork", { callId: call.pc.request.callId, groupId: call.kind === "group" ? call.groupId : undefined, latencyUs: us, at: this.clock.now() });
  }

  private noteOffered(call: EngineCall, memberId: string, deviceIds: string[]): void {
    if (!call.offeredSet.has(memberId)) {
      call.offeredSet.add(memberId);
      call.offered.push(memberId);
    }
    this.deps.bus.emit("call.offered", { callId: call.pc.request.callId, groupId: call.kind === "group" ? call.groupId : undefined, memberId, deviceIds, caller: labels(call).caller, at: this.clock.now(), callerTag: call.pc.request.from.tag ?? "" });
  }

  /** A device of the site placed the call: its side of the dialog, for BLF (after the forks). */
  private notePlaced(call: EngineCall): void {
    if (call.caller.kind !== "device" || call.phase === "done") return;
    this.deps.bus.emit("call.placed", { callId: call.pc.request.callId, callerTag: call.pc.request.from.tag ?? "", userId: call.caller.userId, deviceId: call.caller.deviceId, target: labels(call).target, at: this.clock.now() });
  }

  private evenlyOf(groupId: string): Map<string, number> {
    let m = this.evenly.get(groupId);
    if (m === undefined) {
      m = new Map(Object.entries(this.deps.store.evenlyLastOffered(groupId)));
      this.evenly.set(groupId, m);
    }
    return m;
  }

  private recordEvenly(groupId: string, memberId: string, at: number): void {
    this.evenlyOf(groupId).set(memberId, at);
    this.deps.store.recordEvenlyOffer(groupId, memberId, at);
  }

  private countCall(call: EngineCall, userId: string): void {
    if (call.counted.includes(userId)) return;
    call.counted.push(userId);
    this.activeCalls.set(userId, (this.activeCalls.get(userId) ?? 0) + 1);
  }

  private rejectCall(call: EngineCall, status: number): void {
    this.proxy.reject(call.pc, status, reasonPhrase(status));
    this.finish(call, status);
  }

  private clearStepTimer(call: EngineCall): void {
    if (call.stepTimer !== undefined) this.clock.clearTimeout(call.stepTimer);
    call.stepTimer = undefined;
  }

  private clearTimers(call: EngineCall): void {
    this.clearStepTimer(call);
    if (call.queueTimer !== undefined) this.clock.clearTimeout(call.queueTimer);
    call.queueTimer = undefined;
    if (call.queue?.offerTimer !== undefined) this.clock.clearTimeout(call.queue.offerTimer);
    if (call.queue !== undefined) call.queue.offerTimer = undefined;
  }

  /** The call is over: free its operators, record it, and offer waiting calls to whoever got free. */
  private finish(call: EngineCall, status: number | undefined): void {
    if (call.phase === "done") return;
    const answered = call.phase === "answered";
    call.phase = "done";
    this.clearTimers(call);
    // A caller who hangs up while waiting (CANCEL, 487) abandoned the queue.
    this.leaveQueue(call, status === 487 ? "abandoned" : "ended");
    this.deps.callMenus?.leave(call.pc);
    if (call.forwardedAs === "voicemail") this.deps.mailboxes?.leave(call.pc);
    this.calls.delete(call.pc.id);
    for (const u of call.counted) {
      const n = (this.activeCalls.get(u) ?? 0) - 1;
      if (n > 0) this.activeCalls.set(u, n);
      else this.activeCalls.delete(u);
    }
    const now = this.clock.now();
    const outcome = outcomeOf(call, answered, status);
    const record: CallRecord = { id: recordId(call.pc.request.callId), at: call.startedAt, caller: labels(call).caller, target: labels(call).target, outcome, offered: [...call.offered] };
    if (call.trace !== undefined) {
      call.why ??= whyRecord(call.trace, MAX_WHY_ITEMS, this.devicesOf);
      record.why = call.why;
      this.why.close(call.trace, { caller: record.caller, target: record.target, outcome }, this.devicesOf);
    }
    if (answered && call.kind === "group" && call.answeredBy !== undefined && call.groupId !== undefined) this.startWrapUp(call.groupId, call.answeredBy, now);
    if (call.firstGroupId !== undefined) record.groupId = call.firstGroupId;
    if (call.answeredBy !== undefined) record.answeredBy = call.answeredBy;
    if (call.answerAfterMs !== undefined) {
      record.answerAfterMs = call.answerAfterMs;
      if (answered) record.durationMs = Math.max(0, now - call.startedAt - call.answerAfterMs);
    }
    if (call.kind !== "outbound" && call.answeredBy === undefined) {
      this.deps.bus.emit("call.missed", { callId: call.pc.request.callId, groupId: record.groupId, caller: record.caller, target: record.target, offered: record.offered, outcome, abandoned: status === 487, at: now, ...(call.why !== undefined ? { why: call.why } : {}) });
    }
    this.deps.store.appendCall(record);
    this.deps.bus.emit("call.ended", { callId: call.pc.request.callId, at: now });
    for (const u of call.counted) this.offerQueued(u);
  }

  private guarded(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.deps.log.error("routing engine error", { err: (err as Error).message, stack: (err as Error).stack });
    }
  }
}

/**
 * The call log's outcome. A call no member answered is "missed" whether the caller gave up or the
 * no-answer action hung up (that is what an operator's missed-call list means); "busy" when
 * nobody could be offered because everyone was at their limit; outbound calls that failed are
 * "cancelled" when the caller gave up, else "rejected".
 */
function outcomeOf(call: EngineCall, answered: boolean, status: number | undefined): CallOutcome {
  if (call.kind === "outbound") return answered ? "answered" : status === 487 ? "cancelled" : "rejected";
  if (call.answeredBy !== undefined) return "answered";
  if (answered && call.forwardedAs !== undefined) return call.forwardedAs;
  if (call.offered.length === 0 && call.busyMembers.size > 0) return "busy";
  return "missed";
}

/**
 * A trunk caller's number as E.164: P-Asserted-Identity first (RFC 3325 §9.1, the trunk is the
 * site's trusted peer), else From; undefined when neither is a number (callers.ts).
 */
export function callerNumber(req: SipRequest, countryCode: string | undefined): string | undefined {
  const pai = req.headers.find((h) => h.name === "p-asserted-identity")?.value;
  for (const uri of [pai === undefined ? undefined : /<([^>]*)>/.exec(pai)?.[1] ?? pai.trim(), req.from.uri]) {
    if (uri === undefined) continue;
    const text = numberOfUri(uri);
    const n = text === undefined ? undefined : normalizeCallerNumber(text, countryCode);
    if (n !== undefined) return n;
  }
  return undefined;
}

/** The URI a group's voicemail action forwards to (no answer, after a wait, out of hours), if it has one. */
function voicemailUriOf(group: Group): string | undefined {
  for (const a of [group.noAnswer, group.noAnswer.kind === "wait-for-operator" ? group.noAnswer.then : undefined, group.outOfHours]) {
    if (a?.kind === "voicemail") return a.uri;
  }
  return undefined;
}

/** The record id: the SIP Call-ID, made safe for the log (bounded, no control characters). */
function recordId(callId: string): string {
  const id = callId.replace(/[\x00-\x1f\x7f]/g, "").slice(0, 128);
  return id.length > 0 ? id : "unknown";
}

/** Display text for the caller: a verified device's username, else From's user part (bounded). */
function callerLabel(caller: Caller, req: SipRequest): string {
  if (caller.kind === "device") return caller.username;
  const uri = parseUri(req.from.uri);
  const text = uri?.user !== undefined ? unescapeUser(uri.user) : req.from.uri;
  return text.replace(/[\x00-\x1f\x7f]/g, "").slice(0, CALLER_LABEL_MAX);
}

/** The Request-URI user part as dialled (bounded; for records only). */
function dialledText(requestUri: string): string {
  const uri = parseUri(requestUri);
  return (uri?.user !== undefined ? unescapeUser(uri.user) : requestUri).replace(/[\x00-\x1f\x7f]/g, "").slice(0, 64);
}

function hostOf(flow: Flow): string {
  const a = flow.localAddress.includes(":") ? `[${flow.localAddress}]` : flow.localAddress;
  return `${a}:${flow.localPort}`;
}

/** A final response from the engine itself (before or instead of the proxy). */
function respond(tx: ServerTransaction, req: SipRequest, status: number, reason: string, headers?: SipHeader[]): void {
  const r = tx.respond(createResponse(req, status, reason, { toTag: randomToken(6), ...(headers !== undefined ? { headers } : {}) }));
  if (!r.ok) return; // the transaction is gone (transport error): nothing more to do
}

/**
 * RFC 3891 §6.1: `Replaces: call-id *(;to-tag=x / ;from-tag=y / ;early-only / generic)`.
 * Both tags are required; undefined on anything else.
 */
export function parseReplaces(value: string): { callId: string; toTag: string; fromTag: string } | undefined {
  const parts = value.split(";").map((p) => p.trim());
  const callId = parts[0] ?? "";
  if (callId.length === 0 || callId.length > 256 || /[\s<>"]/.test(callId)) return undefined;
  let toTag: string | undefined;
  let fromTag: string | undefined;
  for (const p of parts.slice(1)) {
    const eq = p.indexOf("=");
    const name = (eq < 0 ? p : p.slice(0, eq)).trim().toLowerCase();
    const v = eq < 0 ? undefined : p.slice(eq + 1).trim();
    if (name === "to-tag") toTag = v;
    else if (name === "from-tag") fromTag = v;
  }
  if (toTag === undefined || fromTag === undefined || toTag.length > 128 || fromTag.length > 128) return undefined;
  return { callId, toTag, fromTag };
}

/** Whether a Proxy-Authorization value is Digest credentials for this realm. */
function ourRealm(value: string, realm: string): boolean {
  const p = parseAuthorization(value);
  return !("error" in p) && p.scheme.toLowerCase() === "digest" && p.params.get("realm") === realm;
}
