// Callbacks for impatient callers: the service that records them, keeps them on disk, and
// places the callback calls (issue 12). The order and the rate are callback.ts's decisions,
// served by the routing engine's queue (EngineDeps.callbacks); the offer to the caller is
// media/callback-offer.ts; the SIP legs are sip/originate.ts.
//
// The callback call is third-party call control, RFC 3725 flow I, with the agent as controller:
//   1. INVITE without SDP to the operator's phones (every binding of the devices the queue
//      picked; the first to answer wins, the others are cancelled). From shows
//      "Callback <number>", so the operator sees whom they are calling back before answering.
//   2. Their 2xx carries their offer (RFC 3261 §13.2.1). The ACK waits.
//   3. INVITE with that offer to the caller's number through the trunk.
//   4. The caller's 2xx carries the answer: ACK to the caller, and the ACK to the operator
//      carries the caller's answer (RFC 3264 §5). Media flows between them directly.
//   5. A BYE from either side is answered and a BYE sent to the other.
// Why flow I: the operator is a person at a desk phone who answers in seconds, so flow I's
// known weakness (the operator hears silence while the caller's phone rings) is what a callback
// is anyway, and it needs no re-INVITE that phones may refuse. Its timing limit: the operator's
// phone retransmits its 2xx until ACKed and gives up after 64*T1 = 32 s (RFC 3261 §13.3.1.4),
// so the caller is rung at most CALLER_RING_MS (25 s), then counted as not reached.
//
// Failures: no operator phone answers (or all fail) → the callback keeps its place for the next
// free operator (the operator is not offered anything again until someone frees up, as a
// waiting call's offer that timed out). The caller busy, not answering or unreachable → an
// attempt; retried after retryDelayS up to `retries` times, then missed.
import type { EventBus } from "../bus.ts";
import type { Logger } from "../log.ts";
import { advertisedAddress } from "../sip/advertise.ts";
import type { Binding } from "../sip/location.ts";
import { displayNumber, type Leg, type Originator } from "../sip/originate.ts";
import type { ProxyCall } from "../sip/proxy-types.ts";
import { randomToken } from "../sip/requests.ts";
import type { Flow, SipRequest } from "../sip/types.ts";
import { numberOfUri } from "./callers.ts";
import { CALLBACK_NUMBER_RE, CallbackBook, callbacksToJson, type PendingCallback } from "./callback.ts";
import { CallbacksFile, loadCallbacks } from "./callback-file.ts";
import { trunkUri } from "./classify.ts";
import type { QueueCallbacks, RoutingSite } from "./engine.ts";
import type { CallbackSettings } from "./model.ts";

/** How long the caller is rung (below the operator's 2xx retransmission limit, 32 s). */
export const CALLER_RING_MS = 25_000;

export interface CallbackEngine {
  serveQueue(): void;
  holdOperator(userId: string): void;
  releaseOperator(userId: string, serve?: boolean): void;
  takeForCallback(pcId: string): { groupId: string; place: number; number: string | undefined } | undefined;
  bindingsOf(deviceId: string): Binding[];
}

export interface CallbackServiceDeps {
  dataDir: string;
  site: () => RoutingSite;
  originator: Originator;
  bus: EventBus;
  log: Logger;
  /** settings.sipAdvertise (advertise.ts). */
  sipAdvertise: string;
  /** One ring, ms: an operator is rung for their group's ringCount rings. */
  ringUnitMs: number;
  callerRingMs?: number;
  now?: () => number;
}

interface Attempt {
  cb: PendingCallback;
  operator: string;
  operatorLegs: Leg[];
  operatorLeg: Leg | undefined;
  callerLeg: Leg | undefined;
  stage: "operator" | "caller" | "connected" | "over";
}

/** The caller's number from P-Asserted-Identity (RFC 3325 §9.1), else the From user part, digits only. */
export function rawCallerNumber(req: SipRequest): string | undefined {
  const pai = req.headers.find((h) => h.name === "p-asserted-identity")?.value;
  for (const uri of [pai === undefined ? undefined : (/<([^>]*)>/.exec(pai)?.[1] ?? pai.trim()), req.from.uri]) {
    if (uri === undefined) continue;
    const n = numberOfUri(uri)?.replace(/[-.() ]/g, "");
    if (n !== undefined && CALLBACK_NUMBER_RE.test(n)) return n;
  }
  return undefined;
}

export class CallbackService implements QueueCallbacks {
  private book = new CallbackBook();
  private file: CallbacksFile | undefined;
  private engine: CallbackEngine | undefined;
  private readonly attempts = new Map<string, Attempt>();
  private retryTimer: NodeJS.Timeout | undefined;
  private readonly now: () => number;

  constructor(private readonly deps: CallbackServiceDeps) {
    this.now = deps.now ?? Date.now;
  }

  /** Loads the pending callbacks (a bad file is set aside) and serves them from `engine`'s queue. */
  start(engine: CallbackEngine): void {
    this.engine = engine;
    this.file = CallbacksFile.in(this.deps.dataDir, () => callbacksToJson(this.book), this.deps.log);
    this.book = new CallbackBook(loadCallbacks(this.file.file, this.deps.log).callbacks);
    if (this.book.size() > 0) this.deps.log.info("pending callbacks restored", { count: this.book.size() });
    this.armRetry();
    engine.serveQueue();
  }

  /** Ends callback calls in progress (they keep their place) and writes the file. */
  async stop(): Promise<void> {
    if (this.retryTimer !== undefined) clearTimeout(this.retryTimer);
    for (const a of [...this.attempts.values()]) {
      for (const l of a.operatorLegs) l.bye();
      a.callerLeg?.bye();
      if (a.stage !== "connected") this.book.operatorFailed(a.cb.id);
      a.stage = "over";
    }
    this.attempts.clear();
    await this.file?.close();
  }

  list(): PendingCallback[] {
    return this.book.all();
  }

  // --- the queue's side (EngineDeps.callbacks) ---------------------------------------------------

  pending(): readonly PendingCallback[] {
    return this.book.all();
  }

  busy(): ReadonlySet<string> {
    return this.book.operatorsBusy();
  }

  dispatch(id: string, memberId: string, deviceIds: readonly string[]): boolean {
    const engine = this.engine;
    const cb = this.book.get(id);
    if (engine === undefined || cb === undefined) return false;
    const site = this.deps.site();
    const trunk = site.settings.trunk;
    const group = site.index.groupsById.get(cb.groupId);
    if (trunk === undefined || group === undefined) return false;
    const bindings = deviceIds.flatMap((d) => engine.bindingsOf(d));
    if (bindings.length === 0 || !this.book.begin(id, memberId)) return false;
    const a: Attempt = { cb, operator: memberId, operatorLegs: [], operatorLeg: undefined, callerLeg: undefined, stage: "operator" };
    const number = displayNumber(cb.number);
    for (const b of bindings) {
      const leg = this.deps.originator.invite(
        { target: b.contact, flow: b.flow, localAddress: advertisedAddress(b.flow, this.deps.sipAdvertise), fromUser: number.replace(/^\+/, "") || "callback", fromDisplay: `Callback ${number}`, ringTimeoutMs: group.ringCount * this.deps.ringUnitMs },
        { onAnswered: (l) => this.operatorAnswered(a, l), onFailed: (l) => this.operatorLegFailed(a, l), onEnded: (l) => this.legEnded(a, l) },
      );
      if (leg !== undefined) a.operatorLegs.push(leg);
    }
    if (a.operatorLegs.length === 0) {
      this.book.operatorFailed(id);
      return false;
    }
    this.attempts.set(id, a);
    engine.holdOperator(memberId);
    this.deps.log.info("callback: calling the operator", { callback: id, operator: memberId, number: cb.number, attempt: cb.attempts + 1 });
    return true;
  }

  // --- the offer's side (media/callback-offer.ts) -----------------------------------------------------

  /** Whether a waiting caller can be offered a callback (a number to call back, a trunk to call it through). */
  callable(pc: ProxyCall): boolean {
    return this.deps.site().settings.trunk !== undefined && rawCallerNumber(pc.request) !== undefined;
  }

  settingsOf(groupId: string): CallbackSettings | undefined {
    return this.deps.site().index.groupsById.get(groupId)?.callback;
  }

  /** The caller pressed 1 and heard the confirmation: the call ends, the callback keeps its place. */
  accepted(pc: ProxyCall): void {
    const engine = this.engine;
    if (engine === undefined) return;
    const number = rawCallerNumber(pc.request);
    const taken = engine.takeForCallback(pc.id);
    if (taken === undefined) return;
    const e164 = taken.number !== undefined && CALLBACK_NUMBER_RE.test(taken.number) ? taken.number : undefined;
    const dial = e164 ?? number;
    if (dial === undefined) {
      this.deps.log.warn("callback accepted but the caller has no number to call back", { callId: pc.request.callId });
      return;
    }
    const cb = this.book.add({ id: `cb-${randomToken(6)}`, groupId: taken.groupId, number: dial, place: taken.place, requestedAt: this.now() });
    this.file?.changed();
    this.deps.log.info("callback requested", { callback: cb.id, group: cb.groupId, number: cb.number });
    this.deps.bus.emit("callback.requested", { id: cb.id, groupId: cb.groupId, number: cb.number, place: cb.place, at: this.now() });
    engine.serveQueue();
  }

  // --- the callback call ----------------------------------------------------------------------------

  private operatorAnswered(a: Attempt, leg: Leg): void {
    if (a.stage !== "operator") {
      leg.bye();
      return;
    }
    a.operatorLeg = leg;
    for (const other of a.operatorLegs) if (other !== leg) other.cancel();
    const offer = leg.remoteSdp;
    const trunk = this.deps.site().settings.trunk;
    if (offer === undefined || trunk === undefined) {
      this.deps.log.warn("callback: the operator's phone answered without an SDP offer, or no trunk", { callback: a.cb.id });
      leg.bye();
      this.operatorGaveUp(a);
      return;
    }
    a.stage = "caller";
    const group = this.deps.site().index.groupsById.get(a.cb.groupId);
    const f = leg.req.flow;
    const same = f.transport === trunk.transport;
    const flow: Flow = { transport: trunk.transport, remoteAddress: trunk.host, remotePort: trunk.port, localAddress: same ? f.localAddress : "", localPort: same ? f.localPort : 0 };
    const callerLeg = this.deps.originator.invite(
      { target: trunkUri(trunk, a.cb.number), flow, localAddress: advertisedAddress(f, this.deps.sipAdvertise), fromUser: group?.number ?? "ringedge", ...(group !== undefined ? { fromDisplay: group.name } : {}), sdp: offer, ringTimeoutMs: this.deps.callerRingMs ?? CALLER_RING_MS },
      { onAnswered: (l) => this.callerAnswered(a, l), onFailed: (_l, status) => this.callerFailed(a, status), onEnded: (l) => this.legEnded(a, l) },
    );
    if (callerLeg === undefined) {
      this.callerFailed(a, 503);
      return;
    }
    a.callerLeg = callerLeg;
  }

  private callerAnswered(a: Attempt, leg: Leg): void {
    if (a.stage !== "caller" || a.operatorLeg === undefined) {
      leg.bye();
      return;
    }
    // RFC 3725 flow I step 5/6: the caller's answer goes to the operator in the ACK.
    leg.ack();
    a.operatorLeg.ack(leg.remoteSdp);
    a.stage = "connected";
    this.book.connected(a.cb.id);
    this.file?.changed();
    this.deps.log.info("callback connected", { callback: a.cb.id, operator: a.operator, number: a.cb.number });
    this.deps.bus.emit("callback.connected", { id: a.cb.id, groupId: a.cb.groupId, number: a.cb.number, memberId: a.operator, attempts: a.cb.attempts + 1, at: this.now() });
  }

  private operatorLegFailed(a: Attempt, leg: Leg): void {
    if (a.stage !== "operator") return;
    if (a.operatorLegs.some((l) => l !== leg && (l.state === "calling" || l.state === "ringing" || l.state === "answered"))) return;
    this.operatorGaveUp(a);
  }

  /** No operator phone answered: the callback keeps its place, waiting for the next free operator. */
  private operatorGaveUp(a: Attempt): void {
    a.stage = "over";
    this.attempts.delete(a.cb.id);
    this.book.operatorFailed(a.cb.id);
    this.deps.log.info("callback: the operator did not answer; it waits for the next free operator", { callback: a.cb.id, operator: a.operator });
    this.engine?.releaseOperator(a.operator, false);
  }

  private callerFailed(a: Attempt, status: number): void {
    if (a.stage !== "caller") return;
    a.stage = "over";
    a.operatorLeg?.bye();
    this.attempts.delete(a.cb.id);
    const s = this.settingsOf(a.cb.groupId) ?? { retries: 0, retryDelayS: 60 };
    const outcome = this.book.callerFailed(a.cb.id, this.now(), s);
    this.file?.changed();
    if (outcome?.kind === "missed") {
      this.deps.log.warn("callback missed: the caller was not reached", { callback: a.cb.id, number: a.cb.number, attempts: a.cb.attempts, status });
      this.deps.bus.emit("callback.missed", { id: a.cb.id, groupId: a.cb.groupId, number: a.cb.number, attempts: a.cb.attempts, at: this.now() });
    } else this.deps.log.info("callback: the caller was not reached; trying again later", { callback: a.cb.id, status, at: outcome?.kind === "retry" ? new Date(outcome.at).toISOString() : undefined });
    this.armRetry();
    this.engine?.releaseOperator(a.operator);
  }

  /** A BYE from one side: the other side is ended too. */
  private legEnded(a: Attempt, leg: Leg): void {
    if (a.stage === "connected") {
      a.stage = "over";
      this.attempts.delete(a.cb.id);
      (leg === a.callerLeg ? a.operatorLeg : a.callerLeg)?.bye();
      this.engine?.releaseOperator(a.operator);
      return;
    }
    if (a.stage === "caller" && leg === a.operatorLeg) {
      // The operator hung up while the caller was being rung: not the caller's fault.
      a.callerLeg?.cancel();
      a.stage = "over";
      this.attempts.delete(a.cb.id);
      this.book.operatorFailed(a.cb.id);
      this.engine?.releaseOperator(a.operator);
    }
  }

  private armRetry(): void {
    if (this.retryTimer !== undefined) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    const next = this.book.nextDue(this.now());
    if (next === undefined) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.engine?.serveQueue();
      this.armRetry();
    }, Math.min(Math.max(0, next - this.now()) + 5, 2 ** 31 - 1));
    this.retryTimer.unref();
  }
}
