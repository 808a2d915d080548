// SIP-specific event notification, the notifier side (RFC 6665): SUBSCRIBE creates a
// subscription (a SIP dialog), NOTIFY carries the state at once and on every change, refresh by
// re-SUBSCRIBE inside the dialog, expiry or Expires: 0 ends it with a final NOTIFY.
// MECHANISM only, event-package agnostic: a package (agent/presence/blf.ts for "dialog",
// agent/presence/mwi.ts for "message-summary") says which resources exist, which a subscriber
// may watch, and renders their state.
// Who the subscriber is (a registered, authenticated device of the site) is decided before:
// handleSubscribe() is given the device.
//
// Decisions:
// - Every check runs before anything is created: a refused SUBSCRIBE changes nothing.
//   Order: per-device rate limit (503 + Retry-After), Event (400 without one, 489 Bad Event
//   with Allow-Events for a package we do not serve, RFC 6665 §8.2.1 / §7.2.2), Expires (400 when
//   malformed, 423 + Min-Expires when too brief, shortened when too long, §4.2.1.1), body (415:
//   no event filters are understood), Accept (406 when it rules out the package's type),
//   Contact (400), the resource (404, or 403 when the package refuses this subscriber), the
//   per-device cap (503).
// - 200 OK (RFC 6665 §4.2.1.1 drops 202), then a NOTIFY with the full state at once; one per
//   change after that. At most one NOTIFY is in flight per subscription: a change meanwhile
//   marks it dirty and one NOTIFY with the state at that moment follows the response (the
//   state is always full, so nothing is lost by coalescing).
// - NOTIFYs are client transactions over the subscriber's flow (the one its last SUBSCRIBE
//   came on, RFC 5626 spirit), along the SUBSCRIBE's Record-Route set (§12.1.1 as the UAS).
// - A NOTIFY answered 481, 408 or 489, timing out (Timer F) or failing at the transport ends
//   the subscription without another NOTIFY (RFC 6665 §4.2.2, RFC 5057 §5.1).
// - Expires: 0 on an initial SUBSCRIBE is a fetch: 200, one NOTIFY with the state and
//   Subscription-State: terminated, nothing kept (§4.4.3). On a refresh it unsubscribes.
import { SYSTEM_CLOCK, type TimerClock } from "../clock.ts";
import type { Logger } from "../log.ts";
import { getHeader, getHeaders, headerParams, parseNameAddr, splitList } from "./message.ts";
import { buildInDialogRequest, randomToken } from "./requests.ts";
import { createResponse } from "./serialize.ts";
import type { ClientTransactionCallbacks, SendRequestResult, ServerTransaction } from "./transaction.ts";
import type { Flow, SipHeader, SipRequest, SipResponse } from "./types.ts";

/** One event package the notifier serves (RFC 6665 §7). */
export interface EventPackage {
  /** The Event header token, e.g. "dialog" (compared case-sensitively, RFC 6665 §8.2.1). */
  readonly event: string;
  /** The NOTIFY body type, e.g. "application/dialog-info+xml". */
  readonly contentType: string;
  /** Default subscription length when SUBSCRIBE has no Expires, seconds (RFC 4235 §3.3: 3600). */
  readonly defaultExpires: number;
  /**
   * The resource a Request-URI names, undefined when none (404), or a refusal: a resource that
   * exists but is not this subscriber's to watch (403, RFC 6665 §4.2.1.1 authorization; RFC 3842
   * §3.7: only a mailbox's owner may subscribe to its summary). `host` is our address for the
   * entity; `subscriber` the identified device.
   */
  resolve(requestUri: string, host: string, subscriber: Subscriber): { resource: string; entity: string } | SubscribeRefusal | undefined;
  /** The NOTIFY body for a resource now; `version` counts this subscription's NOTIFYs from 0. */
  render(resource: string, entity: string, version: number): string;
}

/** Who subscribes: a registered or digest-proven device of the site (its SIP username, its owner). */
export interface Subscriber {
  deviceId: string;
  username?: string | undefined;
  userId?: string | undefined;
}

/** A package's answer for a resource the subscriber may not watch. */
export interface SubscribeRefusal {
  refuse: 403;
  reason: string;
}

export interface SubscriptionLimits {
  maxPerDevice: number;
  rateMax: number;
  rateWindowMs: number;
  minExpires: number;
  maxExpires: number;
}

export type SubscriptionClock = TimerClock;

export interface SubscriptionDeps {
  /** TransactionLayer.sendRequest (a client transaction). */
  sendRequest(req: SipRequest, flow: Flow, callbacks: ClientTransactionCallbacks): SendRequestResult;
  createBranch(): string;
  /** Our host:port toward a flow (Via, Contact, the entity). */
  advertise(flow: Flow): string;
  /** Kept by reference: the agent may change it in place (SIGHUP). */
  limits: SubscriptionLimits;
  log: Logger;
  clock?: SubscriptionClock;
}

/** What the notifier knows about one subscription (status, tests). */
export interface SubscriptionInfo {
  event: string;
  resource: string;
  deviceId: string;
  expiresAt: number;
  version: number;
}

interface Subscription {
  readonly pkg: EventPackage;
  readonly resource: string;
  readonly entity: string;
  readonly deviceId: string;
  readonly callId: string;
  /** Our tag (To of our 200, From of our NOTIFYs). */
  readonly localTag: string;
  /** The subscriber's From tag. */
  readonly remoteTag: string;
  /** The Event header's id parameter, echoed in NOTIFY (RFC 6665 §8.2.1). */
  readonly eventId: string | undefined;
  /** From of our NOTIFYs: the SUBSCRIBE's To with our tag. */
  readonly localParty: string;
  /** To of our NOTIFYs: the SUBSCRIBE's From as received. */
  readonly remoteParty: string;
  remoteTarget: string;
  readonly routes: readonly string[];
  flow: Flow;
  localSeq: number;
  remoteSeq: number;
  expiresAt: number;
  timer: unknown;
  /** NOTIFYs sent so far (the next body's version). */
  version: number;
  inFlight: boolean;
  dirty: boolean;
  ended: boolean;
}

/** RFC 6665 §8.4 event-type token: alphanumerics and -.!%*_+`'~ (no spaces, no ";"). */
const EVENT_TOKEN = /^[A-Za-z0-9\-.!%*_+`'~]{1,64}$/;
const TOKEN = "[A-Za-z0-9\\-.!%*_+`'~]+";
/** Event = event-type *( SEMI event-param ), params token or token=(token / quoted-string). */
const EVENT_HEADER = new RegExp(`^${TOKEN}(?:\\s*;\\s*${TOKEN}(?:\\s*=\\s*(?:${TOKEN}|"[^"\\\\]*"))?)*$`);
const EXPIRES_RE = /^[0-9]{1,10}$/;
/** Longest timer Node can arm (2^31-1 ms). */
const MAX_TIMER_MS = 2_147_483_647;

function dialogKey(callId: string, remoteTag: string, localTag: string): string {
  return `${callId}\n${remoteTag}\n${localTag}`;
}

export class SubscriptionManager {
  private readonly packages = new Map<string, EventPackage>();
  /** Keyed by Call-ID + remote tag + local tag (RFC 3261 §12). */
  private readonly byDialog = new Map<string, Subscription>();
  /** Keyed by `${event}\n${resource}`. */
  private readonly byResource = new Map<string, Set<Subscription>>();
  private readonly perDevice = new Map<string, number>();
  /** Fixed-window SUBSCRIBE counters per device. */
  private readonly rate = new Map<string, { windowStart: number; count: number }>();
  private readonly clock: SubscriptionClock;

  constructor(private readonly deps: SubscriptionDeps) {
    this.clock = deps.clock ?? SYSTEM_CLOCK;
  }

  addPackage(pkg: EventPackage): void {
    this.packages.set(pkg.event, pkg);
  }

  /** The Allow-Events value (RFC 6665 §8.2.2): every package served. */
  allowEvents(): string {
    return [...this.packages.keys()].join(", ");
  }

  count(): number {
    return this.byDialog.size;
  }

  list(): SubscriptionInfo[] {
    return [...this.byDialog.values()].map((s) => ({ event: s.pkg.event, resource: s.resource, deviceId: s.deviceId, expiresAt: s.expiresAt, version: s.version }));
  }

  /** A new SUBSCRIBE (no To tag) from an identified device. Always answers; never throws on input. */
  handleSubscribe(tx: ServerTransaction, req: SipRequest, flow: Flow, device: Subscriber): void {
    if (!this.allowRate(device.deviceId)) {
      this.respond(tx, req, 503, "Service Unavailable (SUBSCRIBE rate limit)", [{ name: "retry-after", value: String(Math.ceil(this.deps.limits.rateWindowMs / 1000)) }]);
      return;
    }
    const checked = this.checkCommon(tx, req);
    if (checked === undefined) return;
    const { pkg, expires, eventId } = checked;
    const contact = contactUri(req);
    if (contact === undefined) {
      this.respond(tx, req, 400, "Bad Request (SUBSCRIBE needs one Contact with a SIP URI)");
      return;
    }
    const host = this.deps.advertise(flow);
    const target = pkg.resolve(req.uri, host, device);
    if (target === undefined) {
      this.respond(tx, req, 404, "Not Found");
      return;
    }
    if ("refuse" in target) {
      this.respond(tx, req, target.refuse, `Forbidden (${target.reason})`);
      return;
    }
    if (req.from.tag === undefined || req.from.tag === "") {
      this.respond(tx, req, 400, "Bad Request (SUBSCRIBE needs a From tag)");
      return;
    }
    if (expires > 0 && (this.perDevice.get(device.deviceId) ?? 0) >= this.deps.limits.maxPerDevice) {
      this.respond(tx, req, 503, "Service Unavailable (too many subscriptions from this device)", [{ name: "retry-after", value: "60" }]);
      return;
    }
    const localTag = randomToken(6);
    const sub: Subscription = {
      pkg,
      resource: target.resource,
      entity: target.entity,
      deviceId: device.deviceId,
      callId: req.callId,
      localTag,
      remoteTag: req.from.tag,
      eventId,
      localParty: `${req.to.raw};tag=${localTag}`,
      remoteParty: req.from.raw,
      remoteTarget: contact,
      // §12.1.1: the UAS's route set is the Record-Route list in order.
      routes: getHeaders(req, "record-route").flatMap((v) => splitList(v)),
      flow,
      localSeq: Math.floor(Math.random() * 10_000) + 1,
      remoteSeq: req.cseq.seq,
      expiresAt: this.clock.now() + expires * 1000,
      timer: undefined,
      version: 0,
      inFlight: false,
      dirty: false,
      ended: false,
    };
    this.respond(tx, req, 200, "OK", [
      { name: "expires", value: String(expires) },
      { name: "contact", value: this.contact(flow) },
    ], localTag);
    if (expires === 0) {
      // §4.4.3 fetch: one NOTIFY with the state, nothing kept.
      sub.ended = true;
      this.sendNotify(sub, "terminated;reason=timeout");
      return;
    }
    this.byDialog.set(dialogKey(sub.callId, sub.remoteTag, sub.localTag), sub);
    const rk = resourceKey(pkg.event, sub.resource);
    let set = this.byResource.get(rk);
    if (set === undefined) this.byResource.set(rk, (set = new Set()));
    set.add(sub);
    this.perDevice.set(sub.deviceId, (this.perDevice.get(sub.deviceId) ?? 0) + 1);
    this.armExpiry(sub);
    this.deps.log.debug("subscription created", { event: pkg.event, resource: sub.resource, device: sub.deviceId, expires });
    this.push(sub);
  }

  /**
   * A SUBSCRIBE with a To tag: a refresh or unsubscribe of one of ours. Returns false when it
   * names no subscription of ours (the caller answers 481).
   */
  handleInDialog(tx: ServerTransaction, req: SipRequest, flow: Flow): boolean {
    const sub = this.byDialog.get(dialogKey(req.callId, req.from.tag ?? "", req.to.tag ?? ""));
    if (sub === undefined || sub.ended) return false;
    if (!this.allowRate(sub.deviceId)) {
      this.respond(tx, req, 503, "Service Unavailable (SUBSCRIBE rate limit)", [{ name: "retry-after", value: String(Math.ceil(this.deps.limits.rateWindowMs / 1000)) }]);
      return true;
    }
    // RFC 3261 §12.2.2: a CSeq lower than the last one is out of order.
    if (req.cseq.seq <= sub.remoteSeq) {
      this.respond(tx, req, 500, "Server Internal Error (CSeq out of order)", [{ name: "retry-after", value: "1" }]);
      return true;
    }
    const checked = this.checkCommon(tx, req);
    if (checked === undefined) return true;
    if (checked.pkg !== sub.pkg || checked.eventId !== sub.eventId) {
      this.respond(tx, req, 489, "Bad Event (not the event of this subscription)", [{ name: "allow-events", value: sub.pkg.event }]);
      return true;
    }
    sub.remoteSeq = req.cseq.seq;
    // §12.2.2: a target refresh may change the remote target; the flow is where it came from now.
    const contact = contactUri(req);
    if (contact !== undefined) sub.remoteTarget = contact;
    sub.flow = flow;
    const expires = checked.expires;
    this.respond(tx, req, 200, "OK", [
      { name: "expires", value: String(expires) },
      { name: "contact", value: this.contact(flow) },
    ]);
    if (expires === 0) {
      this.terminate(sub, "timeout");
      return true;
    }
    sub.expiresAt = this.clock.now() + expires * 1000;
    this.armExpiry(sub);
    // RFC 6665 §4.2.1.2: a refresh is followed by a NOTIFY with the current state.
    this.push(sub);
    return true;
  }

  /** The state of a resource changed: every subscription to it gets a NOTIFY. */
  changed(event: string, resource: string): void {
    const set = this.byResource.get(resourceKey(event, resource));
    if (set === undefined) return;
    for (const sub of set) this.push(sub);
  }

  /**
   * A device was removed or its credentials rotated: its subscriptions end with a final NOTIFY,
   * `terminated;reason=rejected` (RFC 6665 §4.1.3: authorisation withdrawn, do not retry).
   */
  endDevice(deviceId: string): number {
    if (!this.perDevice.has(deviceId)) return 0;
    const ended = [...this.byDialog.values()].filter((s) => s.deviceId === deviceId);
    for (const sub of ended) this.terminate(sub, "rejected");
    return ended.length;
  }

  /**
   * A subscriber's authorisation to a resource was withdrawn (e.g. no longer a member of the
   * group whose mailbox it watched): its subscriptions end with a final NOTIFY,
   * `terminated;reason=rejected` (RFC 6665 §4.1.3).
   */
  endResource(event: string, resource: string): number {
    const set = this.byResource.get(resourceKey(event, resource));
    if (set === undefined) return 0;
    const ended = [...set];
    for (const sub of ended) this.terminate(sub, "rejected");
    return ended.length;
  }

  /** Every subscription ends silently (agent stop): timers cleared, nothing sent. */
  stop(): void {
    for (const sub of [...this.byDialog.values()]) this.remove(sub);
  }

  // --- internals ---------------------------------------------------------------------------

  /** Event, Expires, body and Accept checks shared by new and refreshing SUBSCRIBEs; answers on failure. */
  private checkCommon(tx: ServerTransaction, req: SipRequest): { pkg: EventPackage; expires: number; eventId: string | undefined } | undefined {
    const allow: SipHeader[] = [{ name: "allow-events", value: this.allowEvents() }];
    const eventText = getHeader(req, "event");
    if (eventText === undefined) {
      this.respond(tx, req, 400, "Bad Request (no Event header)", allow);
      return undefined;
    }
    if (!EVENT_HEADER.test(eventText)) {
      this.respond(tx, req, 400, "Bad Request (malformed Event header)", allow);
      return undefined;
    }
    const semi = eventText.indexOf(";");
    const name = (semi < 0 ? eventText : eventText.slice(0, semi)).trim();
    const pkg = this.packages.get(name);
    if (pkg === undefined) {
      // RFC 6665 §8.2.1 (RFC 3265 §3.1.6.2): unknown package → 489 with Allow-Events.
      this.respond(tx, req, 489, "Bad Event", allow);
      return undefined;
    }
    const idParam = semi < 0 ? undefined : headerParams(eventText).get("id");
    const eventId = idParam === null || idParam === undefined ? undefined : idParam;
    if (eventId !== undefined && !EVENT_TOKEN.test(eventId)) {
      this.respond(tx, req, 400, "Bad Request (malformed Event id)", allow);
      return undefined;
    }
    const expiresValues = getHeaders(req, "expires");
    let expires = pkg.defaultExpires;
    if (expiresValues.length > 1 || (expiresValues.length === 1 && !EXPIRES_RE.test(expiresValues[0]!))) {
      this.respond(tx, req, 400, "Bad Request (malformed Expires)");
      return undefined;
    }
    if (expiresValues.length === 1) expires = Number(expiresValues[0]);
    const { minExpires, maxExpires } = this.deps.limits;
    if (expires > 0 && expires < minExpires) {
      this.respond(tx, req, 423, "Interval Too Brief", [{ name: "min-expires", value: String(minExpires) }]);
      return undefined;
    }
    expires = Math.min(expires, maxExpires);
    if (req.body.length > 0) {
      this.respond(tx, req, 415, "Unsupported Media Type (no SUBSCRIBE body is understood)");
      return undefined;
    }
    const accept = getHeaders(req, "accept").flatMap((v) => splitList(v));
    if (req.headers.some((h) => h.name === "accept") && !accept.some((a) => acceptsType(a, pkg.contentType))) {
      this.respond(tx, req, 406, "Not Acceptable", [{ name: "accept", value: pkg.contentType }]);
      return undefined;
    }
    return { pkg, expires, eventId };
  }

  private allowRate(deviceId: string): boolean {
    const now = this.clock.now();
    const { rateMax, rateWindowMs } = this.deps.limits;
    let r = this.rate.get(deviceId);
    if (r === undefined || now - r.windowStart >= rateWindowMs) {
      r = { windowStart: now, count: 0 };
      this.rate.set(deviceId, r);
    }
    if (r.count >= rateMax) return false;
    r.count++;
    return true;
  }

  private armExpiry(sub: Subscription): void {
    if (sub.timer !== undefined) this.clock.clearTimeout(sub.timer);
    const ms = Math.min(MAX_TIMER_MS, Math.max(0, sub.expiresAt - this.clock.now()));
    sub.timer = this.clock.setTimeout(() => {
      sub.timer = undefined;
      if (!sub.ended) this.terminate(sub, "timeout");
    }, ms);
  }

  /** NOTIFY now, or after the one in flight. */
  private push(sub: Subscription): void {
    if (sub.ended) return;
    if (sub.inFlight) {
      sub.dirty = true;
      return;
    }
    const left = Math.max(0, Math.round((sub.expiresAt - this.clock.now()) / 1000));
    this.sendNotify(sub, `active;expires=${left}`);
  }

  /** Final NOTIFY (RFC 6665 §4.2.2: Subscription-State terminated with a reason), then forgotten. */
  private terminate(sub: Subscription, reason: string): void {
    this.remove(sub);
    this.sendNotify(sub, `terminated;reason=${reason}`);
  }

  private remove(sub: Subscription): void {
    if (sub.timer !== undefined) this.clock.clearTimeout(sub.timer);
    sub.timer = undefined;
    const wasKept = this.byDialog.delete(dialogKey(sub.callId, sub.remoteTag, sub.localTag));
    sub.ended = true;
    if (!wasKept) return;
    const rk = resourceKey(sub.pkg.event, sub.resource);
    const set = this.byResource.get(rk);
    set?.delete(sub);
    if (set !== undefined && set.size === 0) this.byResource.delete(rk);
    const n = (this.perDevice.get(sub.deviceId) ?? 1) - 1;
    if (n > 0) this.perDevice.set(sub.deviceId, n);
    else this.perDevice.delete(sub.deviceId);
  }

  private sendNotify(sub: Subscription, state: string): void {
    let body: string;
    try {
      body = sub.pkg.render(sub.resource, sub.entity, sub.version);
    } catch (err) {
      this.deps.log.error("event package failed to render; subscription ended", { event: sub.pkg.event, err: (err as Error).message });
      this.remove(sub);
      return;
    }
    let req: SipRequest;
    try {
      req = buildInDialogRequest({
        method: "NOTIFY",
        target: sub.remoteTarget,
        routes: sub.routes,
        flow: sub.flow,
        localAddress: hostOf(this.deps.advertise(sub.flow)),
        branch: this.deps.createBranch(),
        from: sub.localParty,
        to: sub.remoteParty,
        callId: sub.callId,
        cseq: ++sub.localSeq,
        headers: [
          ["Event", sub.eventId === undefined ? sub.pkg.event : `${sub.pkg.event};id=${sub.eventId}`],
          ["Subscription-State", state],
          ["Contact", this.contact(sub.flow)],
        ],
        body: { contentType: sub.pkg.contentType, data: body },
      });
    } catch (err) {
      // A subscriber whose Contact or tags do not make a valid request cannot be notified.
      this.deps.log.warn("NOTIFY could not be built; subscription ended", { event: sub.pkg.event, device: sub.deviceId, err: (err as Error).message });
      this.remove(sub);
      return;
    }
    sub.version++;
    sub.inFlight = true;
    sub.dirty = false;
    const gone = (why: string): void => {
      sub.inFlight = false;
      if (sub.ended) return;
      this.deps.log.info("subscription ended by its subscriber", { event: sub.pkg.event, resource: sub.resource, device: sub.deviceId, why });
      this.remove(sub);
    };
    const r = this.deps.sendRequest(req, sub.flow, {
      onFinal: (res: SipResponse) => {
        // RFC 6665 §4.2.2 and RFC 5057 §5.1: these end the subscription (dialog usage).
        if (res.status === 481 || res.status === 408 || res.status === 489) {
          gone(`NOTIFY answered ${res.status}`);
          return;
        }
        sub.inFlight = false;
        if (sub.dirty) this.push(sub);
      },
      onTimeout: () => gone("NOTIFY timed out"),
      onTransportError: () => gone("NOTIFY transport error"),
    });
    if (!r.ok) gone(`NOTIFY not sent (${r.error})`);
  }

  /** Our Contact (the remote target of the subscription dialog); over TCP it says so (RFC 3261 §19.1.1). */
  private contact(flow: Flow): string {
    return `<sip:${this.deps.advertise(flow)}${flow.transport === "tcp" ? ";transport=tcp" : ""}>`;
  }

  private respond(tx: ServerTransaction, req: SipRequest, status: number, reason: string, headers: SipHeader[] = [], toTag: string = randomToken(6)): void {
    tx.respond(createResponse(req, status, reason, { toTag, headers }));
  }
}

function resourceKey(event: string, resource: string): string {
  return `${event}\n${resource}`;
}

/** The single Contact's URI (RFC 6665 §4.1.2.1 / §8.2.1: SUBSCRIBE carries exactly one), sip/sips only. */
function contactUri(req: SipRequest): string | undefined {
  const values = getHeaders(req, "contact").flatMap((v) => splitList(v));
  if (values.length !== 1) return undefined;
  const na = parseNameAddr(values[0]!);
  if (na === undefined || !/^sips?:/i.test(na.uri) || /[\s<>"]/.test(na.uri)) return undefined;
  return na.uri;
}

function acceptsType(value: string, type: string): boolean {
  const t = value.split(";")[0]!.trim().toLowerCase();
  const major = type.slice(0, type.indexOf("/") + 1);
  return t === type || t === "*/*" || t === `${major}*`;
}

/** "host:port" or "[v6]:port" → host without brackets. */
function hostOf(hp: string): string {
  if (hp.startsWith("[")) return hp.slice(1, hp.indexOf("]"));
  const i = hp.lastIndexOf(":");
  return i < 0 ? hp : hp.slice(0, i);
}
