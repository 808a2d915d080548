// The callback offer to a caller waiting in the queue (issue 12, "callback for impatient
// callers"), on the caller's music-on-hold stream (queue-music.ts): after the group's
// offerAfterS the offer prompt replaces the music ("to be called back, press 1; you keep your
// place"), then the music resumes. On the RFC 4733 digit 1 (reported by the media worker) the
// confirmation plays, and when it has ended the callback service takes the call out of the
// queue (onAccepted: a callback at the caller's place, the call ended).
//
// Mechanism apart from policy: this module only times the offer and reads the digit; who is
// called back, when and how is routing/callback-service.ts. It wraps QueueMusic and is what
// the routing engine gets as its queueMedia (enter/leave), so the music's own life cycle is
// unchanged.
//
// The offer is played once per wait. A caller whose offer did not include telephone-event
// (RFC 4733) cannot answer it, so it is not offered (SIP INFO DTMF is not read here).
import type { Logger } from "../log.ts";
import type { CallbackSettings } from "../routing/model.ts";
import { parseDtmfInfo } from "../sip/dtmf-info.ts";
import type { ProxyCall } from "../sip/proxy-types.ts";
import type { SipRequest } from "../sip/types.ts";
import { HOLD_SOUND, offerOf, type QueueEntry, type QueueMusic } from "./queue-music.ts";

export const OFFER_SOUND = "callback-offer";
export const CONFIRM_SOUND = "callback-confirm";
/** The digit that accepts the offer. */
export const ACCEPT_DIGIT = "1";
/**
 * The confirmation is over by then whatever happens to it (the shipped prompt is 5.5 s): a
 * periodic queue announcement replacing it reports no end of the confirmation.
 */
export const CONFIRM_MAX_MS = 15_000;

interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

const REAL_TIMERS: Timers = {
  setTimeout: (fn, ms) => {
    const t = setTimeout(fn, ms);
    t.unref();
    return t;
  },
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

export interface CallbackOfferDeps {
  music: QueueMusic;
  media: { has(sound: string): boolean; play(id: string, sound: string, loop: boolean): void };
  /** The group's callback setting now (the site may change while a caller waits). */
  settings: (groupId: string) => CallbackSettings | undefined;
  /** Whether this caller can be called back (a number, a trunk): no offer otherwise. */
  callable: (pc: ProxyCall) => boolean;
  /** The caller accepted and heard the confirmation. */
  onAccepted: (pc: ProxyCall, groupId: string) => void;
  log: Logger;
  timers?: Timers;
}

type Stage = "waiting" | "offered" | "confirming";

interface Offer {
  groupId: string;
  stage: Stage;
  timer: unknown;
}

export class CallbackOffer {
  private readonly offers = new Map<string, Offer>();
  private readonly timers: Timers;

  constructor(private readonly deps: CallbackOfferDeps) {
    this.timers = deps.timers ?? REAL_TIMERS;
    deps.music.listen({ onDigit: (pc, d) => this.onDigit(pc, d), onPlayEnded: (pc, s) => this.onPlayEnded(pc, s) });
  }

  /** Calls waiting for their offer, offered, or confirming (status, tests). */
  activeCount(): number {
    return this.offers.size;
  }

  /** The call entered the queue of `groupId`: music at once, the offer after offerAfterS. */
  enter(pc: ProxyCall, entry?: QueueEntry): void {
    this.deps.music.enter(pc, entry);
    const groupId = entry?.groupId;
    if (groupId === undefined || this.offers.has(pc.id)) return;
    const s = this.deps.settings(groupId);
    if (s === undefined || !s.enabled) return;
    if (!this.deps.callable(pc)) return;
    const o = offerOf(pc);
    if (!o.ok || o.value.choice.telephoneEvent === undefined) {
      if (this.deps.log.enabled("debug")) this.deps.log.debug("callback offer: the caller cannot send RFC 4733 digits; not offered", { callId: pc.request.callId });
      return;
    }
    const offer: Offer = { groupId, stage: "waiting", timer: undefined };
    offer.timer = this.timers.setTimeout(() => this.offer(pc, offer), s.offerAfterS * 1000);
    this.offers.set(pc.id, offer);
  }

  /** The call left the queue however (answered, cancelled, maximum wait, accepted). Idempotent. */
  leave(pc: ProxyCall): void {
    const o = this.offers.get(pc.id);
    if (o !== undefined) {
      if (o.timer !== undefined) this.timers.clearTimeout(o.timer);
      this.offers.delete(pc.id);
    }
    this.deps.music.leave(pc);
  }

  private offer(pc: ProxyCall, o: Offer): void {
    o.timer = undefined;
    if (this.offers.get(pc.id) !== o) return;
    const session = this.deps.music.sessionOf(pc.id);
    const s = this.deps.settings(o.groupId);
    if (session === undefined || s === undefined || !s.enabled || !this.deps.media.has(OFFER_SOUND)) {
      this.offers.delete(pc.id);
      this.deps.log.info("callback offer not played", { callId: pc.request.callId, reason: session === undefined ? "no media stream" : !this.deps.media.has(OFFER_SOUND) ? "offer prompt not loaded" : "callback turned off" });
      return;
    }
    o.stage = "offered";
    this.deps.media.play(session, OFFER_SOUND, false);
  }

  /**
   * A SIP INFO the waiting caller sent in the queue's early dialog (the proxy's own To tag):
   * a DTMF key counts as the same key by RFC 4733. False when the call holds no offer (the
   * request is left to the usual routing).
   */
  info(pc: ProxyCall, req: SipRequest, respond: (status: number, reason: string) => void): boolean {
    if (req.method !== "INFO" || !this.offers.has(pc.id)) return false;
    const d = parseDtmfInfo(req.headers.find((h) => h.name === "content-type")?.value, req.body);
    if (!d.ok) {
      respond(d.status, d.status === 415 ? "Unsupported Media Type" : `Bad Request (${d.reason})`);
      return true;
    }
    respond(200, "OK");
    if (d.digit !== undefined) this.onDigit(pc, d.digit);
    return true;
  }

  private onDigit(pc: ProxyCall, digit: string): void {
    const o = this.offers.get(pc.id);
    if (o === undefined || o.stage !== "offered" || digit !== ACCEPT_DIGIT) return;
    o.stage = "confirming";
    const session = this.deps.music.sessionOf(pc.id);
    if (session !== undefined && this.deps.media.has(CONFIRM_SOUND)) {
      this.deps.media.play(session, CONFIRM_SOUND, false);
      o.timer = this.timers.setTimeout(() => this.offers.get(pc.id) === o && this.accept(pc, o), CONFIRM_MAX_MS);
    } else this.accept(pc, o);
  }

  private onPlayEnded(pc: ProxyCall, sound: string): boolean {
    const o = this.offers.get(pc.id);
    if (o === undefined) return false;
    if (sound === OFFER_SOUND) {
      // Back to the music; the digit is still taken while the caller waits.
      const session = this.deps.music.sessionOf(pc.id);
      if (o.stage === "offered" && session !== undefined) this.deps.media.play(session, this.deps.music.musicOf(pc.id) ?? HOLD_SOUND, true);
      return true;
    }
    if (sound === CONFIRM_SOUND && o.stage === "confirming") {
      this.accept(pc, o);
      return true;
    }
    return false;
  }

  private accept(pc: ProxyCall, o: Offer): void {
    if (o.timer !== undefined) this.timers.clearTimeout(o.timer);
    o.timer = undefined;
    this.offers.delete(pc.id);
    this.deps.onAccepted(pc, o.groupId);
  }
}
