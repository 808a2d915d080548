// Music on hold for calls waiting for a free operator (wait-for-operator), as early media.
//
// Why early media (RFC 3960) and not answer + re-INVITE (RFC 3725): ringedge is a proxy; the
// call to the operator is the caller's own INVITE forked to the operator's phone. When a
// call enters the queue the appliance sends, on the proxy's own To tag (its own early dialog,
// RFC 3261 §12.1.1), a 183 Session Progress whose SDP answers the caller's offer with the
// appliance's RTP port, and plays the hold music there. When an operator answers, their 2xx
// carries their own SDP on their own dialog (RFC 3261 §13.2.2.4: a UAC takes each forked 2xx
// as its own dialog; the confirmed dialog's SDP replaces the early one's), so the caller's
// media moves to the operator with no re-INVITE, no B2BUA state, no media relay, and nothing
// charged: the call is not answered until a person answers (a trunk bills from the 200). The
// music stops and the ports are freed at that moment (and whenever the call leaves the queue
// otherwise: CANCEL, maximum wait, any end).
//
// While the music plays, the proxy holds back the 180s of the operators' phones (their early
// dialogs exist, but the caller is not told): a 180 on another early dialog makes many phones
// and gateways switch from the early media to their own ringback, a second ring cycle in the
// middle of the music. 182 Queued still goes first, without SDP, as before.
//
// Optionally a prompt first (queueAnnouncement) and again every queueAnnouncementIntervalS,
// the music resuming after each; optionally the caller's place in the queue after each prompt
// ("you are caller number 3", queue-position.ts), as one play-sequence command to the worker.
// A group may name its own music and prompt (site sounds, site-sounds.ts).
//
// Limits: an INVITE without SDP (offer in the 2xx/ACK) or offering neither PCMU nor PCMA gets
// the 182 only (music needs an offer to answer without 100rel/PRACK); the caller's RTP is
// received only for symmetric RTP and telephone-events.
import { randomInt } from "node:crypto";
import type { Logger } from "../log.ts";
import type { ProxyCall, StatefulProxyApi } from "../sip/proxy-types.ts";
import type { Flow } from "../sip/types.ts";
import { buildAnswer, chooseAudio, parseSdp, type AudioChoice, type SdpOffer, type SdpResult } from "./sdp.ts";
import { positionSounds } from "./queue-position.ts";
import { type MediaService, openRequestFor } from "./service.ts";

export const HOLD_SOUND = "hold";
export const ANNOUNCEMENT_SOUND = "queue-welcome";

export interface QueueMusicDeps {
  proxy: StatefulProxyApi;
  media: MediaService;
  /** The local IP literal to bind and advertise for a call that came in on `flow`. */
  mediaAddress: (flow: Flow) => string;
  /** Contact URI (with <>) for the 183 (RFC 3261 §12.1.1: a dialog-creating response carries one). */
  contact: (flow: Flow) => string;
  log: Logger;
  /** Play ANNOUNCEMENT_SOUND first, then the music. */
  announceFirst?: boolean;
  /** Play ANNOUNCEMENT_SOUND again every this many ms, the music resuming after it (0/absent: never). */
  announceEveryMs?: number;
  /** Say the caller's place in the queue after the prompt (setting queueAnnouncePosition); a group may override it. */
  announcePosition?: boolean;
  /**
   * A group's own choices (site file / console push): its loaded music and prompt (worker sound
   * names), and whether its callers hear their position. Absent parts: the settings above.
   */
  groupOptions?: (groupId: string) => { music?: string; prompt?: string; announcePosition?: boolean } | undefined;
}

/** What the routing engine tells about a queued call. */
export interface QueueEntry {
  groupId: string;
  /** The call's place in its group's queue now (1 = next), or undefined once it left. */
  position: () => number | undefined;
}

/**
 * What a queued caller hears at a given moment, as worker sound names: the prompt (when it plays
 * now and is loaded), the position (when announced, all its sounds loaded), then the music. Pure.
 */
export function queueProgramme(o: { prompt: string | undefined; position: number | undefined; music: string; has: (sound: string) => boolean }): string[] {
  const out: string[] = [];
  if (o.prompt !== undefined && o.has(o.prompt)) out.push(o.prompt);
  const pos = positionSounds(o.position);
  if (pos.length > 0 && pos.every(o.has)) out.push(...pos);
  out.push(o.music);
  return out;
}

interface Waiting {
  session: string | undefined;
  /** The periodic announcement's timer. */
  timer: NodeJS.Timeout | undefined;
  /** The 183 went out and the proxy holds back ringing for this call. */
  holdingRinging: boolean;
  /** The last spoken sound of the announcement playing now (its end starts the music); undefined when the music plays. */
  speaking: string | undefined;
  /** The music this caller hears (the group's own, or the shipped tune). */
  music: string;
}

/** The caller's SDP offer from its INVITE (application/sdp only). */
export function offerOf(pc: Pick<ProxyCall, "request">): SdpResult<{ offer: SdpOffer; choice: AudioChoice }> {
  const req = pc.request;
  const ct = req.headers.find((h) => h.name === "content-type")?.value.split(";")[0]?.trim().toLowerCase();
  if (req.body.length === 0) return { ok: false, reason: "the INVITE carries no offer" };
  if (ct !== "application/sdp") return { ok: false, reason: `the INVITE body is ${ct ?? "untyped"}, not application/sdp` };
  const offer = parseSdp(req.body);
  if (!offer.ok) return offer;
  const choice = chooseAudio(offer.value);
  if (!choice.ok) return choice;
  return { ok: true, value: { offer: offer.value, choice: choice.value } };
}

/** Features playing their own prompts on a waiting caller's stream (callback offer, media/callback-offer.ts). */
export interface QueueMusicListener {
  onDigit?(pc: ProxyCall, digit: string): void;
  /** A sound ended; true: the listener handled it (the music does not resume here). */
  onPlayEnded?(pc: ProxyCall, sound: string): boolean;
}

export class QueueMusic {
  private readonly waiting = new Map<string, Waiting>();
  private listener: QueueMusicListener | undefined;

  /** Sets the one listener for digits and ended prompts of waiting callers. */
  listen(listener: QueueMusicListener | undefined): void {
    this.listener = listener;
  }

  /** The media session playing to a waiting call, once its port is bound. */
  sessionOf(pcId: string): string | undefined {
    return this.waiting.get(pcId)?.session;
  }

  /** The music a waiting call hears (to resume it after another prompt). */
  musicOf(pcId: string): string | undefined {
    return this.waiting.get(pcId)?.music;
  }

  constructor(private readonly deps: QueueMusicDeps) {}

  /** Calls with music being set up or playing. */
  activeCount(): number {
    return this.waiting.size;
  }

  /** The call entered the queue (182 sent): answer its offer in a 183 and play the music. */
  enter(pc: ProxyCall, entry?: QueueEntry): void {
    if (this.waiting.has(pc.id)) return;
    const log = this.deps.log;
    const o = offerOf(pc);
    if (!o.ok) {
      if (log.enabled("debug")) log.debug("queue music: 182 only", { callId: pc.request.callId, reason: o.reason });
      return;
    }
    const media = this.deps.media;
    const own = entry === undefined ? undefined : this.deps.groupOptions?.(entry.groupId);
    const music = own?.music !== undefined && media.has(own.music) ? own.music : HOLD_SOUND;
    const prompt = own?.prompt !== undefined && media.has(own.prompt) ? own.prompt : ANNOUNCEMENT_SOUND;
    const sayPosition = entry !== undefined && (own?.announcePosition ?? this.deps.announcePosition === true);
    if (!media.has(music)) {
      // Normally started when the site got a queue (setup.ts); start it now for the next caller.
      if (!media.running()) media.start();
      log.warn("queue music: no hold music loaded yet; the caller gets 182 only", { callId: pc.request.callId });
      return;
    }
    const w: Waiting = { session: undefined, timer: undefined, holdingRinging: false, speaking: undefined, music };
    this.waiting.set(pc.id, w);
    const { offer, choice } = o.value;
    const address = this.deps.mediaAddress(pc.flow);
    // The prompt (when it plays now), the position (when said), then the music, looping.
    const programme = (withPrompt: boolean): string[] =>
      queueProgramme({ prompt: withPrompt ? prompt : undefined, position: sayPosition ? entry.position() : undefined, music, has: (x) => media.has(x) });
    void media
      .openSession(
        openRequestFor(address, choice),
        {
          onClosed: () => {
            w.session = undefined;
            this.stopTimer(w);
          },
          onDigit: (digit) => this.listener?.onDigit?.(pc, digit),
          onPlayEnded: (sound) => {
            // The callback offer's own prompts first (media/callback-offer.ts).
            if (this.listener?.onPlayEnded?.(pc, sound) === true) return;
            if (sound === w.speaking) w.speaking = undefined;
          },
        },
      )
      .then((r) => {
        if (this.waiting.get(pc.id) !== w || pc.finished) {
          // The call left the queue while the port was being bound.
          if (r.ok) media.close(r.id);
          this.waiting.delete(pc.id);
          return;
        }
        if (!r.ok) {
          this.waiting.delete(pc.id);
          log.warn("queue music: no media session; the caller gets 182 only", { callId: pc.request.callId, reason: r.reason });
          return;
        }
        w.session = r.id;
        const sdp = buildAnswer(offer, choice, { address, port: r.port, sessionId: randomInt(1, 2 ** 31) });
        this.deps.proxy.suppressRinging?.(pc, true);
        w.holdingRinging = true;
        this.deps.proxy.provisional(pc, 183, "Session Progress", [{ name: "contact", value: this.deps.contact(pc.flow) }], { contentType: "application/sdp", body: Buffer.from(sdp) });
        // A group that names its own prompt wants it heard: first, whatever queueAnnouncement says.
        const announce = (list: string[]): void => {
          w.speaking = list.at(-2);
          media.sequence(r.id, list, true);
        };
        const first = programme(this.deps.announceFirst === true || own?.prompt !== undefined);
        if (first.length === 1) media.play(r.id, music, true);
        else announce(first);
        const every = this.deps.announceEveryMs ?? 0;
        if (every > 0 && programme(true).length > 1) {
          // The music restarts after each announcement (from its start: a tune, not a programme).
          // An announcement still playing when the next is due (an interval shorter than it) is
          // not cut: that round is left out, so the caller hears the music in between.
          w.timer = setInterval(() => {
            if (w.session !== undefined && w.speaking === undefined) announce(programme(true));
          }, every);
          w.timer.unref();
        }
        if (log.enabled("debug")) log.debug("queue music playing", { callId: pc.request.callId, codec: choice.law, port: r.port, to: `${choice.remoteAddress}:${choice.remotePort}` });
      });
  }

  /** The call left the queue (answered, cancelled, maximum wait, ended): music off, ports free. Idempotent. */
  leave(pc: ProxyCall): void {
    const w = this.waiting.get(pc.id);
    if (w === undefined) return;
    this.waiting.delete(pc.id);
    this.stopTimer(w);
    if (w.session !== undefined) this.deps.media.close(w.session);
    w.session = undefined;
    if (w.holdingRinging) this.deps.proxy.suppressRinging?.(pc, false);
  }

  private stopTimer(w: Waiting): void {
    if (w.timer !== undefined) clearInterval(w.timer);
    w.timer = undefined;
  }
}
