// Leaving a message: the routing engine hands a call to a mailbox on the appliance
// (EngineDeps.mailboxes) and this answers it, plays the greeting and the tone, records, stores.
//
//   take ─► mailbox enabled? ─► caller's SDP offer (PCMU/PCMA) ─► quota (store.begin, async)
//        ─► media session opened ─► 200 OK + SDP answer (proxy.answerLocally) ─► UAS dialog
//        ─► greeting (the mailbox's own WAV, else the shipped prompt; # skips it)
//        ─► tone ─► recording (stops on # by RFC 4733 or SIP INFO, silence, maximum length,
//           the caller's BYE) ─► store.complete ─► voicemail.message ─► our BYE
//
// - A full mailbox: the caller is answered, hears "this mailbox is full", and the appliance
//   hangs up; nothing is written (the quota is checked before anything is).
// - Refused before the answer (final response, nothing written): no enabled mailbox (480), no
//   usable offer (488, RFC 3261 §21.4.26: the session description is not acceptable), no
//   media port or worker (480).
// - The caller cancels before the answer: the proxy answers 487 and the engine calls leave();
//   the media session and the reserved message are released whenever they complete.
// - Ports are always freed: every path ends in media.close(), and the worker closes the
//   recording (finalized) before its session.
// Mechanism lives elsewhere (sip/uas-session.ts, media/, voicemail/store.ts); this is policy.
import fs from "node:fs";
import path from "node:path";
import { randomInt } from "node:crypto";
import type { EventBus } from "../bus.ts";
import type { Logger } from "../log.ts";
import { offerOf } from "../media/queue-music.ts";
import { buildAnswer } from "../media/sdp.ts";
import { type MediaService, openRequestFor } from "../media/service.ts";
import type { MailboxConfig } from "../routing/model.ts";
import type { ProxyCall, StatefulProxyApi } from "../sip/proxy-types.ts";
import type { UasDialogs, UasSession } from "../sip/uas-session.ts";
import type { Flow } from "../sip/types.ts";
import { ownerRef, type PendingMessage, type VoicemailStore } from "./store.ts";
import type { MailboxOwner } from "./types.ts";

export const GREETING_SOUND = "vm-greeting";
export const BEEP_SOUND = "vm-beep";
export const FULL_SOUND = "vm-full";
/** Extra time past the maximum length before the recording is stopped from here (no RTP at all). */
const RECORD_GUARD_MS = 2000;

export interface DepositDeps {
  proxy: Pick<StatefulProxyApi, "reject" | "answerLocally">;
  uas: Pick<UasDialogs, "open">;
  media: Pick<MediaService, "openSession" | "play" | "close" | "record" | "stopRecording" | "has" | "load">;
  store: Pick<VoicemailStore, "begin" | "complete" | "abandon" | "greetingsDir">;
  mailbox: (owner: MailboxOwner) => MailboxConfig | undefined;
  /** The local IP literal to bind and advertise for a call that came in on `flow`. */
  mediaAddress: (flow: Flow) => string;
  /** Contact (with <>) for the 200: routes the caller's in-dialog requests back here (§12.1.1). */
  contact: (flow: Flow) => string;
  /** Path of a prompt shipped in audio/ (media/setup.ts shippedAudio). */
  shippedAudio: (file: string) => string;
  bus: EventBus;
  log: Logger;
}

type Phase = "opening" | "greeting" | "beep" | "recording" | "full" | "closing" | "done";

interface Deposit {
  readonly pc: ProxyCall;
  readonly owner: MailboxOwner;
  readonly cfg: MailboxConfig;
  readonly events: { answered(): void; ended(status: number | undefined): void };
  phase: Phase;
  pending: PendingMessage | undefined;
  session: string | undefined;
  uas: UasSession | undefined;
  guard: NodeJS.Timeout | undefined;
  endedReported: boolean;
  /** The engine is done with the call (cancelled before the answer). */
  left: boolean;
  /** The message's metadata is being written (store.complete). */
  committing: boolean;
}

export class VoicemailDeposits {
  private readonly active = new Map<string, Deposit>();

  constructor(private readonly deps: DepositDeps) {}

  /** Deposits in progress (answered or being set up). */
  activeCount(): number {
    return this.active.size;
  }

  /** The engine's no-answer action chose this mailbox for the call. */
  take(pc: ProxyCall, owner: MailboxOwner, caller: string, events: { answered(): void; ended(status: number | undefined): void }): void {
    const log = this.deps.log;
    const cfg = this.deps.mailbox(owner);
    if (cfg === undefined) {
      log.warn("voicemail: the mailbox is not enabled", { callId: pc.request.callId, mailbox: ownerRef(owner) });
      this.refuse(pc, events, 480, "Temporarily Unavailable");
      return;
    }
    const o = offerOf(pc);
    if (!o.ok) {
      log.info("voicemail: the call's offer cannot be answered", { callId: pc.request.callId, reason: o.reason });
      this.refuse(pc, events, 488, "Not Acceptable Here");
      return;
    }
    const d: Deposit = { pc, owner, cfg, events, phase: "opening", pending: undefined, session: undefined, uas: undefined, guard: undefined, endedReported: false, left: false, committing: false };
    this.active.set(pc.id, d);
    void this.open(d, o.value, caller).catch((err: Error) => {
      log.error("voicemail: deposit failed", { callId: pc.request.callId, err: err.message });
      if (d.uas !== undefined || d.pc.finished) this.hangUp(d);
      else {
        // Not answered yet: the caller gets a final response, not silence.
        this.deps.proxy.reject(d.pc, 480, "Temporarily Unavailable", undefined, { exact: true });
        this.finish(d);
        this.report(d, 480);
      }
    });
  }

  /** The engine is done with the call; a deposit not answered yet is dropped. Idempotent. */
  leave(pc: ProxyCall): void {
    const d = this.active.get(pc.id);
    if (d === undefined) return;
    d.left = true;
    if (d.phase === "opening") return; // open() sees `left` when its awaits return
    if (d.uas === undefined) this.finish(d);
  }

  /**
   * Agent stop: every call ends with our BYE. A recording in progress is kept: the worker
   * finalizes its WAV as the session closes (here, or at the worker's shutdown), and the next
   * start completes the message from it (store.ts recovery); other reserved messages are released.
   */
  stopAll(): void {
    for (const d of [...this.active.values()]) {
      const recording = d.phase === "recording";
      d.uas?.stop();
      if (recording) d.pending = undefined;
      this.finish(d);
    }
  }

  private refuse(pc: ProxyCall, events: Deposit["events"], status: number, reason: string): void {
    this.deps.proxy.reject(pc, status, reason, undefined, { exact: true });
    events.ended(status);
  }

  private async open(d: Deposit, o: OfferValue<ReturnType<typeof offerOf>>, caller: string): Promise<void> {
    const { offer, choice } = o;
    const media = this.deps.media;
    const log = this.deps.log;
    // The quota first: a full mailbox is told so, nothing written.
    const begun = await this.deps.store.begin(d.owner, { caller, callId: d.pc.request.callId });
    if (begun.ok) d.pending = begun.pending;
    if (d.left) {
      this.finish(d);
      return;
    }
    if (!begun.ok && begun.reason !== "full") {
      log.error("voicemail: the message cannot be stored", { callId: d.pc.request.callId, mailbox: ownerRef(d.owner), reason: begun.detail });
      this.deps.proxy.reject(d.pc, 480, "Temporarily Unavailable", undefined, { exact: true });
      this.finish(d);
      this.report(d, 480);
      return;
    }
    if (!begun.ok) log.info("voicemail: the mailbox is full; the caller is told", { callId: d.pc.request.callId, mailbox: ownerRef(d.owner) });
    const greeting = d.pending === undefined ? FULL_SOUND : await this.greetingSound(d);
    const needed = [greeting, BEEP_SOUND];
    for (const s of needed) {
      if (!media.has(s)) {
        const loaded = await media.load(s, this.deps.shippedAudio(`${s}.wav`));
        if (!loaded.ok) this.deps.log.error("voicemail: a prompt cannot be played", { sound: s, reason: loaded.reason });
      }
    }
    const address = this.deps.mediaAddress(d.pc.flow);
    const r = await media.openSession(
      openRequestFor(address, choice),
      {
        onPlayEnded: (sound) => this.playEnded(d, sound),
        onDigit: (digit) => this.digit(d, digit),
        onRecorded: (rec) => this.recorded(d, rec),
        onRecordFailed: (reason) => {
          this.deps.log.error("voicemail: recording failed", { callId: d.pc.request.callId, reason });
          this.releasePending(d);
          this.hangUp(d);
        },
        onClosed: () => {
          d.session = undefined;
          // The worker went away under us: nothing more can be recorded or played.
          if (d.phase !== "done" && d.phase !== "closing") this.hangUp(d);
          this.releasePending(d);
          this.maybeDone(d);
        },
      },
    );
    if (d.left) {
      // The caller cancelled while we were getting ready: the engine has finished the call.
      if (r.ok) media.close(r.id);
      this.finish(d);
      return;
    }
    if (!r.ok) {
      this.deps.log.warn("voicemail: no media session", { callId: d.pc.request.callId, reason: r.reason });
      this.releasePending(d);
      this.deps.proxy.reject(d.pc, 480, "Temporarily Unavailable", undefined, { exact: true });
      this.finish(d);
      this.report(d, 480);
      return;
    }
    d.session = r.id;
    const sdp = buildAnswer(offer, choice, { address, port: r.port, sessionId: randomInt(1, 2 ** 31) });
    const answer = this.deps.proxy.answerLocally?.(d.pc, [{ name: "contact", value: this.deps.contact(d.pc.flow) }, { name: "allow", value: "INVITE, ACK, BYE, CANCEL, INFO, OPTIONS" }], { contentType: "application/sdp", body: Buffer.from(sdp) });
    if (answer === undefined) {
      // The call ended meanwhile (the caller cancelled: the engine has finished it), or this
      // proxy cannot answer calls itself (then the caller is told so).
      const unanswered = !d.pc.finished;
      if (unanswered) this.deps.proxy.reject(d.pc, 480, "Temporarily Unavailable", undefined, { exact: true });
      media.close(r.id);
      this.finish(d);
      if (unanswered) this.report(d, 480);
      return;
    }
    d.uas = this.deps.uas.open(d.pc.request, d.pc.flow, answer, {
      onDigit: (digit) => this.digit(d, digit),
      onEnded: () => {
        d.uas = undefined;
        this.callerGone(d);
      },
    });
    d.events.answered();
    d.phase = d.pending === undefined ? "full" : "greeting";
    this.playOrSkip(d, greeting);
    if (this.deps.log.enabled("debug")) this.deps.log.debug("voicemail: answered", { callId: d.pc.request.callId, mailbox: ownerRef(d.owner), port: r.port });
  }

  /** The mailbox's own greeting when it has one that loads; else the shipped prompt. */
  private async greetingSound(d: Deposit): Promise<string> {
    const file = d.cfg.greeting;
    if (file === undefined) return GREETING_SOUND;
    const full = path.join(this.deps.store.greetingsDir, file);
    const name = `${GREETING_SOUND}:${ownerRef(d.owner)}`;
    // Loaded each time: the installer may have replaced the file since.
    const r = fs.existsSync(full) ? await this.deps.media.load(name, full) : { ok: false as const, reason: "no such file" };
    if (r.ok) return name;
    this.deps.log.warn("voicemail: the mailbox's greeting cannot be played; the shipped one plays", { mailbox: ownerRef(d.owner), file: full, reason: r.reason });
    return GREETING_SOUND;
  }

  /** Plays a prompt; one the worker could not load is skipped (never silence with no end). */
  private playOrSkip(d: Deposit, sound: string): void {
    if (d.session === undefined) return;
    if (this.deps.media.has(sound)) this.deps.media.play(d.session, sound, false);
    else this.playEnded(d, sound);
  }

  private playEnded(d: Deposit, sound: string): void {
    if (d.session === undefined) return;
    if (d.phase === "full") {
      this.hangUp(d);
      return;
    }
    if (d.phase === "greeting" && sound !== BEEP_SOUND) {
      d.phase = "beep";
      this.playOrSkip(d, BEEP_SOUND);
      return;
    }
    if (d.phase === "beep" && sound === BEEP_SOUND) this.startRecording(d);
  }

  private startRecording(d: Deposit): void {
    const p = d.pending;
    if (p === undefined || d.session === undefined) return;
    d.phase = "recording";
    const maxMs = d.cfg.maxMessageS * 1000;
    this.deps.media.record(d.session, { tmpPath: p.tmpPath, finalPath: p.finalPath, maxMs, silenceMs: d.cfg.silenceS * 1000, stopDigit: "#" });
    // A caller who sends no RTP at all never reaches the worker's own limit.
    d.guard = setTimeout(() => {
      if (d.phase === "recording" && d.session !== undefined) this.deps.media.stopRecording(d.session);
    }, maxMs + RECORD_GUARD_MS);
    d.guard.unref();
  }

  private digit(d: Deposit, digit: string): void {
    if (digit !== "#" || d.session === undefined) return;
    if (d.phase === "greeting") {
      // # during the greeting skips it.
      d.phase = "beep";
      this.playOrSkip(d, BEEP_SOUND);
    } else if (d.phase === "recording") {
      // RFC 4733 # stops the recording in the worker already; an INFO # does here.
      this.deps.media.stopRecording(d.session);
    }
  }

  private recorded(d: Deposit, rec: { samples: number; bytes: number; sha256: string; reason: string }): void {
    if (d.guard !== undefined) clearTimeout(d.guard);
    const p = d.pending;
    d.pending = undefined;
    if (p === undefined) return;
    // The deposit is not over until the metadata is durable (maybeDone waits for it).
    d.committing = true;
    void this.deps.store
      .complete(p, rec)
      .then((m) => {
        if (m === undefined) return;
        this.deps.log.info("voicemail: message left", { id: m.id, mailbox: m.mailbox, durationMs: m.durationMs, stop: rec.reason });
        this.deps.bus.emit("voicemail.message", { id: m.id, mailbox: { ...d.owner }, caller: m.caller, callId: m.callId, receivedAt: m.receivedAt, durationMs: m.durationMs, bytes: m.bytes, sha256: m.sha256, at: Date.now() });
      })
      .catch((err: Error) => this.deps.log.error("voicemail: message not stored", { callId: d.pc.request.callId, err: err.message }))
      .finally(() => {
        d.committing = false;
        this.maybeDone(d);
      });
    this.hangUp(d);
  }

  /** The caller hung up (BYE), or the dialog ended otherwise. */
  private callerGone(d: Deposit): void {
    if (d.phase === "recording" && d.session !== undefined && d.pending !== undefined) {
      // What was said so far is the message: closing the session finalizes the file first.
      d.phase = "closing";
      this.deps.media.close(d.session);
      return;
    }
    d.phase = "closing";
    if (d.session !== undefined) this.deps.media.close(d.session);
    this.releasePending(d);
    this.maybeDone(d);
  }

  /** Our side ends the call: BYE (after the ACK, sip/uas-session.ts), media closed. */
  private hangUp(d: Deposit): void {
    if (d.phase === "done") return;
    d.phase = "closing";
    d.uas?.hangup();
    if (d.session !== undefined) this.deps.media.close(d.session);
    this.maybeDone(d);
  }

  private releasePending(d: Deposit): void {
    if (d.pending === undefined) return;
    this.deps.store.abandon(d.pending);
    d.pending = undefined;
  }

  /** Done once nothing is open: no media session, no dialog, no message being written. */
  private maybeDone(d: Deposit): void {
    if (d.phase === "done") return; // finished already (the engine left, or the agent stops)
    if (d.committing) return;
    if (d.session !== undefined || (d.uas !== undefined && d.uas.state !== "ended") || d.pending !== undefined) return;
    this.finish(d);
    this.report(d, undefined);
  }

  private finish(d: Deposit): void {
    if (d.guard !== undefined) clearTimeout(d.guard);
    d.phase = "done";
    if (d.session !== undefined) this.deps.media.close(d.session);
    d.session = undefined;
    this.releasePending(d);
    this.active.delete(d.pc.id);
  }

  private report(d: Deposit, status: number | undefined): void {
    if (d.endedReported) return;
    d.endedReported = true;
    try {
      d.events.ended(status);
    } catch (err) {
      this.deps.log.error("voicemail: ended listener threw", { err: (err as Error).message });
    }
  }
}

type OfferValue<T> = T extends { ok: true; value: infer V } ? V : never;
