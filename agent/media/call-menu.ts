// Greetings and menus as early media (docs/menus.md): the mechanism around the decision core
// (agent/routing/menu.ts). Like music on hold (queue-music.ts), and for the same reasons, the
// call is not answered: the appliance sends `183 Session Progress` on the proxy's own To tag
// (its own early dialog, RFC 3261 §12.1.1) whose SDP answers the caller's offer with the
// appliance's RTP port, and plays the prompt there. Keys come back as RFC 4733 telephone-events
// (the media worker reports `digit`) or as SIP INFO inside that early dialog (RFC 6086 allows
// INFO in an early dialog; bodies application/dtmf-relay `Signal=`/`Duration=` and
// application/dtmf, the two forms phones and gateways send). When the core names a target the
// prompt stops, the ports are freed and the routing engine takes the call on (group
// distribution, the user's phones, voicemail, hang-up); the phones' own early dialogs then
// carry their ringing to the caller as for any call.
//
// Without a usable offer (no SDP, no G.711, a hostile one) or without the prompts loaded, no
// greeting can be heard: the call goes where a caller who presses nothing would end up
// (menu.ts silentTarget) at once. So does a call whose media session dies.
import { createHash, randomInt } from "node:crypto";
import type { EventBus } from "../bus.ts";
import { parsePortRange, type Settings } from "../config.ts";
import type { Logger } from "../log.ts";
import { decide, fallback, startGreeting, type FinalTarget, type IvrContext, type IvrEvent, type IvrState, type IvrStep, type PromptRef } from "../routing/menu.ts";
import type { Greeting } from "../routing/menu-model.ts";
import { parseDtmfInfo } from "../sip/dtmf-info.ts";
import type { ProxyCall, StatefulProxyApi } from "../sip/proxy-types.ts";
import type { Flow, SipRequest } from "../sip/types.ts";
import { offerOf } from "./queue-music.ts";
import { buildAnswer } from "./sdp.ts";
import { MediaService, openRequestFor } from "./service.ts";
import { mediaEndpoints, shippedAudio } from "./setup.ts";

/** Shipped prompts (audio/README.md), by the sound names the worker knows them under. */
export const GREETING_SOUND = "ivr-greeting";
export const MENU_SOUND = "ivr-menu";
export const INVALID_SOUND = "ivr-invalid";
const SHIPPED: Record<PromptRef["kind"], string> = { greeting: GREETING_SOUND, menu: MENU_SOUND, invalid: INVALID_SOUND };

/** The worker's name for a site's own prompt file (names are bounded; paths are not). */
export function promptSound(file: string): string {
  return `file-${createHash("sha256").update(file).digest("hex").slice(0, 24)}`;
}

export interface CallMenuDeps {
  proxy: StatefulProxyApi;
  media: MediaService;
  mediaAddress: (flow: Flow) => string;
  contact: (flow: Flow) => string;
  log: Logger;
}

interface Active {
  pc: ProxyCall;
  ctx: IvrContext;
  route: (target: FinalTarget) => void;
  state: IvrState;
  session: string | undefined;
  timer: NodeJS.Timeout | undefined;
  /** The sound whose end moves the call on (a stale play-ended of another one is ignored). */
  expecting: string | undefined;
}

export class CallMenus {
  private readonly active = new Map<string, Active>();

  constructor(private readonly deps: CallMenuDeps) {}

  activeCount(): number {
    return this.active.size;
  }

  /**
   * Plays an inbound route's greeting to the call as early media and follows the caller's keys;
   * `route` is called once with where the call goes (never for a call that ended first).
   */
  start(pc: ProxyCall, greeting: Greeting, ctx: IvrContext, route: (target: FinalTarget) => void): void {
    if (this.active.has(pc.id)) return;
    const log = this.deps.log;
    const silent = (reason: string): void => {
      const t = fallback({ kind: "greeting", greeting, digits: "", playing: false, invalid: false }, ctx);
      log.info("greeting not played; the call goes on", { callId: pc.request.callId, reason, to: t?.kind });
      if (t !== undefined) route(t);
    };
    const o = offerOf(pc);
    if (!o.ok) return silent(o.reason);
    // The shipped prompts loaded = a worker is up (a site file that failed to load is skipped later).
    if (!this.deps.media.has(GREETING_SOUND) || !this.deps.media.has(INVALID_SOUND)) {
      if (!this.deps.media.running()) this.deps.media.start();
      return silent("prompts not loaded yet");
    }
    const a: Active = { pc, ctx, route, state: { kind: "done" }, session: undefined, timer: undefined, expecting: undefined };
    this.active.set(pc.id, a);
    const { offer, choice } = o.value;
    const address = this.deps.mediaAddress(pc.flow);
    void this.deps.media
      .openSession(
        openRequestFor(address, choice),
        {
          onDigit: (digit) => this.event(a, { kind: "digit", digit }, "rtp"),
          onPlayEnded: (sound) => {
            if (sound !== a.expecting) return;
            a.expecting = undefined;
            this.event(a, { kind: "prompt-ended" });
          },
          onClosed: () => {
            a.session = undefined;
            if (this.active.get(pc.id) !== a) return;
            // The media went away under a live greeting (worker died): on, as a silent caller would.
            const t = fallback(a.state, a.ctx);
            this.end(a);
            log.warn("greeting media lost; the call goes on", { callId: pc.request.callId, to: t?.kind });
            if (t !== undefined) a.route(t);
          },
        },
      )
      .then((r) => {
        if (this.active.get(pc.id) !== a || pc.finished) {
          if (r.ok) this.deps.media.close(r.id);
          return;
        }
        if (!r.ok) {
          this.active.delete(pc.id);
          return silent(`no media session: ${r.reason}`);
        }
        a.session = r.id;
        const sdp = buildAnswer(offer, choice, { address, port: r.port, sessionId: randomInt(1, 2 ** 31) });
        this.deps.proxy.provisional(pc, 183, "Session Progress", [{ name: "contact", value: this.deps.contact(pc.flow) }], { contentType: "application/sdp", body: Buffer.from(sdp) });
        if (log.enabled("debug")) log.debug("greeting playing", { callId: pc.request.callId, codec: choice.law, port: r.port, telephoneEvent: choice.telephoneEvent });
        this.apply(a, startGreeting(greeting));
      });
  }

  /**
   * A request inside the call's own early dialog (the proxy's To tag): INFO carrying a key.
   * Answers it; false when this call has no greeting (the proxy goes on with the request).
   */
  info(pc: ProxyCall, req: SipRequest, respond: (status: number, reason: string) => void): boolean {
    const a = this.active.get(pc.id);
    if (a === undefined || req.method !== "INFO") return false;
    const ct = req.headers.find((h) => h.name === "content-type")?.value;
    const d = parseDtmfInfo(ct, req.body);
    if (!d.ok) {
      if (this.deps.log.enabled("debug")) this.deps.log.debug("INFO without a usable key", { callId: req.callId, reason: d.reason });
      respond(d.status, d.status === 415 ? "Unsupported Media Type" : `Bad Request (${d.reason})`);
      return true;
    }
    respond(200, "OK");
    if (d.digit !== undefined) this.event(a, { kind: "digit", digit: d.digit }, "info");
    return true;
  }

  /** The call ended or left otherwise: prompt off, ports free. Idempotent. */
  leave(pc: ProxyCall): void {
    const a = this.active.get(pc.id);
    if (a !== undefined) this.end(a);
  }

  /** Ends every greeting (agent stop). */
  stop(): void {
    for (const a of [...this.active.values()]) this.end(a);
  }

  private event(a: Active, ev: IvrEvent, source?: string): void {
    if (this.active.get(a.pc.id) !== a) return;
    if (ev.kind === "digit" && this.deps.log.enabled("debug")) this.deps.log.debug("greeting key", { callId: a.pc.request.callId, digit: ev.digit.replace(/[^0-9A-D*#]/g, "?").slice(0, 2), source });
    try {
      this.apply(a, decide(a.state, ev, a.ctx));
    } catch (err) {
      this.deps.log.error("greeting failed; the call goes on", { callId: a.pc.request.callId, err: (err as Error).message });
      const t = fallback(a.state, a.ctx);
      this.end(a);
      if (t !== undefined) a.route(t);
    }
  }

  private apply(a: Active, step: IvrStep): void {
    a.state = step.state;
    if (step.note !== undefined && this.deps.log.enabled("debug")) this.deps.log.debug("greeting", { callId: a.pc.request.callId, note: step.note });
    if (step.route !== undefined) {
      this.end(a);
      a.route(step.route);
      return;
    }
    if (step.stop === true && a.session !== undefined) {
      this.deps.media.stopPlaying(a.session);
      a.expecting = undefined;
    }
    if (step.timerMs !== undefined) {
      if (a.timer !== undefined) clearTimeout(a.timer);
      a.timer = undefined;
      if (step.timerMs !== null) {
        a.timer = setTimeout(() => {
          a.timer = undefined;
          this.event(a, { kind: "timeout" });
        }, step.timerMs);
        a.timer.unref();
      }
    }
    if (step.play !== undefined && a.session !== undefined) {
      const sound = promptName(step.play);
      if (this.deps.media.has(sound)) {
        a.expecting = sound;
        this.deps.media.play(a.session, sound, false);
      } else {
        // A prompt that is not loaded (a site file that failed to load) counts as played.
        this.deps.log.warn("prompt not loaded; skipped", { callId: a.pc.request.callId, prompt: step.play.file ?? step.play.kind });
        a.expecting = undefined;
        const session = a.session;
        this.deps.media.stopPlaying(session);
        setImmediate(() => this.event(a, { kind: "prompt-ended" }));
      }
    }
  }

  private end(a: Active): void {
    if (this.active.get(a.pc.id) === a) this.active.delete(a.pc.id);
    if (a.timer !== undefined) clearTimeout(a.timer);
    a.timer = undefined;
    a.expecting = undefined;
    a.state = { kind: "done" };
    if (a.session !== undefined) this.deps.media.close(a.session);
    a.session = undefined;
  }
}

/** The worker's sound name for a prompt. */
export function promptName(p: PromptRef): string {
  return p.file !== undefined ? promptSound(p.file) : SHIPPED[p.kind];
}

export interface CallMenuHandle {
  callMenus: CallMenus;
  stop(): Promise<void>;
}

/**
 * Greetings and menus for the agent (agent.ts): on the music-on-hold media plane when there is
 * one, else on a media plane of their own (queueMusic off). The shipped prompts are loaded at
 * once, the site's own prompt files at start and after every apply (a changed file is read
 * again); the worker starts when the site has an inbound greeting.
 */
export function startCallMenus(s: Settings, proxy: StatefulProxyApi, log: Logger, site: { bus: EventBus; prompts: () => string[]; hasGreeting: () => boolean }, shared: MediaService | undefined): CallMenuHandle {
  let media = shared;
  if (media === undefined) {
    const range = parsePortRange(s.mediaPorts);
    if (!range.ok) throw new Error(`mediaPorts ${range.reason}`); // validated by loadSettings already
    media = new MediaService({ portMin: range.min, portMax: range.max, log });
  }
  const m = media;
  m.preload(GREETING_SOUND, shippedAudio("ivr-greeting.wav"));
  m.preload(MENU_SOUND, shippedAudio("ivr-menu.wav"));
  m.preload(INVALID_SOUND, shippedAudio("ivr-invalid.wav"));
  const refresh = (): void => {
    for (const file of site.prompts()) m.preload(promptSound(file), file);
    if (site.hasGreeting()) m.start();
  };
  refresh();
  const off = site.bus.on("site.applied", refresh);
  const callMenus = new CallMenus({ proxy, media: m, ...mediaEndpoints(s), log });
  return {
    callMenus,
    stop: async () => {
      off();
      callMenus.stop();
      if (shared === undefined) await m.stop();
    },
  };
}
