// Listening to voicemail: the routing engine recognised the voicemail code from a phone whose
// owner may listen (voicemail/access.ts decideListen; refusals are answered there, before any
// answer) and hands the call here with the mailboxes to play. This answers it as the deposit does
// (deposit.ts) and carries out what the menu's decision core (listen-menu.ts) says:
//
//   take ─► caller's SDP offer (PCMU/PCMA) ─► prompts loaded ─► media session opened
//        ─► 200 OK + SDP answer (proxy.answerLocally) ─► UAS dialog (sip/uas-session.ts)
//        ─► "You have N new messages" ─► each message (its stored WAV) ─► the options prompt
//        ─► digits (RFC 4733 from the media worker, SIP INFO from the dialog) drive the menu
//        ─► store operations (save = heard and kept, delete) ─► voicemail.changed ─► lamps
//        ─► goodbye ─► our BYE (after *, the last message, or the options unanswered)
//
// - Refused before the answer: no usable offer (488, RFC 3261 §21.4.26), no media (480).
// - A digit cuts short what plays (the worker stops it; a play-ended of what was cut is ignored);
//   a digit that means nothing at that point (listen-menu.ts changes nothing) leaves it playing,
//   so the goodbye is always heard to its end before our BYE.
// - A message whose recording cannot be loaded (deleted meanwhile by a fellow group member) is
//   passed over as if played.
// - The caller hanging up ends everything; a message being played stays as it was (new stays new).
// - A listening call lasts at most MAX_LISTEN_MS (a prompt whose end the worker never reports
//   must not hold a dialog and a port pair for ever).
// - Each message is loaded into the worker under this call's own sound name and dropped from the
//   worker when the call ends (media unload): recordings do not pile up in its memory.
import { randomInt } from "node:crypto";
import type { Logger } from "../log.ts";
import { offerOf } from "../media/queue-music.ts";
import { numberSound, numberSounds, NUMBER_WORDS } from "../media/queue-position.ts";
import { buildAnswer } from "../media/sdp.ts";
import { type MediaService, openRequestFor } from "../media/service.ts";
import type { ProxyCall, StatefulProxyApi } from "../sip/proxy-types.ts";
import type { Flow } from "../sip/types.ts";
import type { UasDialogs, UasSession } from "../sip/uas-session.ts";
import { initialState, listenQueue, listenStep, type ListenAction, type ListenInput, type ListenMessage, type ListenState, type ListenStep, type StoreOp } from "./listen-menu.ts";
import { ownerRef, type VoicemailStore } from "./store.ts";
import type { MailboxOwner } from "./types.ts";

/** The listening menu's prompts: sound name → file under audio/ (audio/README.md). */
export const LISTEN_PROMPTS: Readonly<Record<string, string>> = Object.freeze({
  "vm-you-have": "vm-you-have.wav",
  "vm-no": "vm-no.wav",
  "vm-and": "vm-and.wav",
  "vm-new-message": "vm-new-message.wav",
  "vm-new-messages": "vm-new-messages.wav",
  "vm-saved-message": "vm-saved-message.wav",
  "vm-saved-messages": "vm-saved-messages.wav",
  "vm-no-messages": "vm-no-messages.wav",
  "vm-options": "vm-options.wav",
  "vm-invalid": "ivr-invalid.wav",
  "vm-msg-deleted": "vm-msg-deleted.wav",
  "vm-msg-saved": "vm-msg-saved.wav",
  "vm-no-more": "vm-no-more.wav",
  "vm-goodbye": "vm-goodbye.wav",
});

/** Wait for a digit after the options prompt, ms. */
export const OPTIONS_WAIT_MS = 6000;
/** A listening call ends after this long whatever happens (a prompt whose end never comes). */
export const MAX_LISTEN_MS = 30 * 60_000;

/**
 * "You have 2 new messages and 1 saved message": the sounds, in order. A count the numbers in
 * audio/numbers/ cannot say (above 99) is left out ("you have new messages").
 */
export function summarySounds(newCount: number, savedCount: number): string[] {
  const count = (n: number, one: string, many: string): string[] => [...(n === 0 ? ["vm-no"] : (numberSounds(n) ?? [])), n === 1 ? one : many];
  const out = ["vm-you-have", ...count(newCount, "vm-new-message", "vm-new-messages")];
  if (savedCount > 0) out.push("vm-and", ...count(savedCount, "vm-saved-message", "vm-saved-messages"));
  return out;
}

/** The prompt sounds of one menu action (a message and hang-up are not prompts: undefined). */
export function promptSounds(a: ListenAction): string[] | undefined {
  switch (a.kind) {
    case "play-summary":
      return summarySounds(a.newCount, a.savedCount);
    case "play-options":
      return ["vm-options"];
    case "play-invalid":
      return ["vm-invalid"];
    case "play-deleted":
      return ["vm-msg-deleted"];
    case "play-saved":
      return ["vm-msg-saved"];
    case "play-no-more":
      return ["vm-no-more"];
    case "play-empty":
      return ["vm-no-messages"];
    case "play-goodbye":
      return ["vm-goodbye"];
    default:
      return undefined;
  }
}

export interface ListenDeps {
  proxy: Pick<StatefulProxyApi, "reject" | "answerLocally">;
  uas: Pick<UasDialogs, "open">;
  media: Pick<MediaService, "openSession" | "sequence" | "stopPlaying" | "close" | "has" | "load" | "unload">;
  store: Pick<VoicemailStore, "list" | "audioPath" | "get" | "save" | "delete">;
  mediaAddress: (flow: Flow) => string;
  contact: (flow: Flow) => string;
  shippedAudio: (file: string) => string;
  log: Logger;
  /** Wait for a digit after the options prompt, ms (default OPTIONS_WAIT_MS). */
  optionsWaitMs?: number;
  /** Longest listening call, ms (default MAX_LISTEN_MS). */
  maxListenMs?: number;
}

interface Listening {
  readonly pc: ProxyCall;
  readonly msgSound: string;
  state: ListenState;
  session: string | undefined;
  uas: UasSession | undefined;
  /** Actions still to carry out, in order. */
  todo: ListenAction[];
  /** The last sound of what plays now; its play-ended moves on. */
  waitFor: string | undefined;
  /** Bumped whenever what plays is replaced: a late load or play-ended of the old one is ignored. */
  gen: number;
  timer: NodeJS.Timeout | undefined;
  /** Ends the call after maxListenMs. */
  limit: NodeJS.Timeout | undefined;
  done: boolean;
}

let seq = 0;

export class VoicemailListening {
  private readonly active = new Map<string, Listening>();

  constructor(private readonly deps: ListenDeps) {}

  activeCount(): number {
    return this.active.size;
  }

  /** The engine admitted the voicemail code for these mailboxes (in play order). */
  take(pc: ProxyCall, mailboxes: MailboxOwner[]): void {
    const o = offerOf(pc);
    if (!o.ok) {
      this.deps.log.info("voicemail listening: the call's offer cannot be answered", { callId: pc.request.callId, reason: o.reason });
      this.deps.proxy.reject(pc, 488, "Not Acceptable Here", undefined, { exact: true });
      return;
    }
    const messages: ListenMessage[] = [];
    for (const owner of mailboxes) {
      for (const m of this.deps.store.list(owner)) messages.push({ mailbox: owner, id: m.id, status: m.status === "new" ? "new" : "saved", receivedAt: m.receivedAt });
    }
    const l: Listening = { pc, msgSound: `vm-listen-${++seq}`, state: initialState(listenQueue(mailboxes, messages)), session: undefined, uas: undefined, todo: [], waitFor: undefined, gen: 0, timer: undefined, limit: undefined, done: false };
    this.active.set(pc.id, l);
    this.deps.log.info("voicemail listening", { callId: pc.request.callId, mailboxes: mailboxes.map(ownerRef), messages: l.state.queue.length });
    void this.open(l, o.value).catch((err: Error) => {
      this.deps.log.error("voicemail listening failed", { callId: pc.request.callId, err: (err as Error).message });
      if (l.uas === undefined && !pc.finished) this.deps.proxy.reject(pc, 480, "Temporarily Unavailable", undefined, { exact: true });
      this.end(l);
    });
  }

  /** Agent stop: every listening call ends with our BYE. */
  stopAll(): void {
    for (const l of [...this.active.values()]) {
      l.uas?.stop();
      this.end(l);
    }
  }

  private async open(l: Listening, o: OfferValue<ReturnType<typeof offerOf>>): Promise<void> {
    const { offer, choice } = o;
    const media = this.deps.media;
    const needed: Array<[string, string]> = [...Object.entries(LISTEN_PROMPTS), ...NUMBER_WORDS.map((n): [string, string] => [numberSound(n), `numbers/${n}.wav`])];
    for (const [sound, file] of needed) {
      if (media.has(sound)) continue;
      const r = await media.load(sound, this.deps.shippedAudio(file));
      if (!r.ok) this.deps.log.error("voicemail listening: a prompt cannot be played", { sound, reason: r.reason });
    }
    if (l.pc.finished) return this.end(l); // the caller cancelled meanwhile (the proxy answered 487)
    const address = this.deps.mediaAddress(l.pc.flow);
    const r = await media.openSession(
      openRequestFor(address, choice),
      {
        onPlayEnded: (sound) => this.played(l, sound),
        onDigit: (digit) => this.digit(l, digit),
        onClosed: () => {
          l.session = undefined;
          this.hangUp(l);
        },
      },
    );
    if (!r.ok) {
      this.deps.log.warn("voicemail listening: no media session", { callId: l.pc.request.callId, reason: r.reason });
      if (!l.pc.finished) this.deps.proxy.reject(l.pc, 480, "Temporarily Unavailable", undefined, { exact: true });
      return this.end(l);
    }
    l.session = r.id;
    const sdp = buildAnswer(offer, choice, { address, port: r.port, sessionId: randomInt(1, 2 ** 31) });
    const answer = l.pc.finished ? undefined : this.deps.proxy.answerLocally?.(l.pc, [{ name: "contact", value: this.deps.contact(l.pc.flow) }, { name: "allow", value: "INVITE, ACK, BYE, CANCEL, INFO, OPTIONS" }], { contentType: "application/sdp", body: Buffer.from(sdp) });
    if (answer === undefined) {
      if (!l.pc.finished) this.deps.proxy.reject(l.pc, 480, "Temporarily Unavailable", undefined, { exact: true });
      return this.end(l);
    }
    l.uas = this.deps.uas.open(l.pc.request, l.pc.flow, answer, {
      onDigit: (digit) => this.digit(l, digit),
      onEnded: () => {
        l.uas = undefined;
        this.end(l);
      },
    });
    l.limit = setTimeout(() => {
      this.deps.log.info("voicemail listening: the call reached its maximum length", { callId: l.pc.request.callId });
      this.hangUp(l);
    }, this.deps.maxListenMs ?? MAX_LISTEN_MS);
    l.limit.unref();
    this.input(l, { kind: "start" });
  }

  /** One input to the menu; its store operations applied, its actions started. */
  private input(l: Listening, input: ListenInput, computed?: ListenStep): void {
    if (l.done) return;
    const step = computed ?? listenStep(l.state, input);
    l.state = step.state;
    if (this.deps.log.enabled("debug")) this.deps.log.debug("voicemail listening: menu", { callId: l.pc.request.callId, input: input.kind === "digit" ? `digit ${input.digit}` : input.kind, phase: l.state.phase, actions: step.actions.map((a) => a.kind), store: step.store.map((o) => `${o.op} ${o.id}`) });
    for (const op of step.store) this.apply(op);
    if (step.actions.length === 0) return;
    l.gen++;
    l.todo = [...step.actions];
    this.next(l);
  }

  private apply(op: StoreOp): void {
    // The store ignores a message that is gone (a fellow group member deleted it meanwhile).
    const p = op.op === "delete" ? this.deps.store.delete(op.id) : this.deps.store.save(op.id);
    void p.catch((err: Error) => this.deps.log.error("voicemail listening: store operation failed", { op: op.op, mailbox: ownerRef(op.mailbox), id: op.id, err: err.message }));
  }

  /** Carries out the next action; when none is left, the menu hears that what played ended. */
  private next(l: Listening): void {
    if (l.done || l.session === undefined) return;
    const a = l.todo.shift();
    if (a === undefined) {
      l.waitFor = undefined;
      if (l.state.phase === "options") {
        // The options prompt ended: wait for a digit.
        const gen = l.gen;
        l.timer = setTimeout(() => {
          l.timer = undefined;
          if (l.gen === gen) this.input(l, { kind: "timeout" });
        }, this.deps.optionsWaitMs ?? OPTIONS_WAIT_MS);
        l.timer.unref();
        return;
      }
      this.input(l, { kind: "played" });
      return;
    }
    if (a.kind === "hang-up") {
      this.hangUp(l);
      return;
    }
    if (a.kind === "play-message") {
      this.playMessage(l, a.message);
      return;
    }
    const sounds = (promptSounds(a) ?? []).filter((s) => this.deps.media.has(s));
    this.play(l, sounds);
  }

  private play(l: Listening, sounds: string[]): void {
    if (l.session === undefined) return;
    if (sounds.length === 0) {
      this.next(l);
      return;
    }
    l.waitFor = sounds[sounds.length - 1];
    this.deps.media.sequence(l.session, sounds, false);
  }

  private playMessage(l: Listening, m: ListenMessage): void {
    const stored = this.deps.store.get(m.id);
    const gen = l.gen;
    if (stored === undefined) {
      this.next(l);
      return;
    }
    void this.deps.media.load(l.msgSound, this.deps.store.audioPath(stored)).then((r) => {
      if (l.done || l.gen !== gen) return;
      if (!r.ok) {
        this.deps.log.warn("voicemail listening: a message cannot be played", { id: m.id, reason: r.reason });
        this.next(l);
        return;
      }
      this.play(l, [l.msgSound]);
    });
  }

  private played(l: Listening, sound: string): void {
    if (this.deps.log.enabled("debug")) this.deps.log.debug("voicemail listening: played", { callId: l.pc.request.callId, sound, waitFor: l.waitFor ?? null });
    if (l.done || sound !== l.waitFor) return;
    this.next(l);
  }

  private digit(l: Listening, digit: string): void {
    if (l.done || l.session === undefined) return;
    const input: ListenInput = { kind: "digit", digit };
    const step = listenStep(l.state, input);
    // A digit that means nothing now (any digit once the menu is saying goodbye, a 5 during the
    // summary) changes nothing: what plays goes on.
    if (step.state === l.state && step.actions.length === 0 && step.store.length === 0) return;
    if (l.timer !== undefined) clearTimeout(l.timer);
    l.timer = undefined;
    // Whatever plays is cut short (issue 13: digits arriving before the prompt ends).
    l.gen++;
    l.waitFor = undefined;
    l.todo = [];
    this.deps.media.stopPlaying(l.session);
    this.input(l, input, step);
  }

  /** Our side ends the call: BYE (after the ACK, uas-session.ts), media closed. */
  private hangUp(l: Listening): void {
    l.uas?.hangup();
    this.end(l);
  }

  private end(l: Listening): void {
    if (l.done) return;
    l.done = true;
    l.gen++;
    if (l.timer !== undefined) clearTimeout(l.timer);
    if (l.limit !== undefined) clearTimeout(l.limit);
    if (l.session !== undefined) this.deps.media.close(l.session);
    l.session = undefined;
    this.deps.media.unload(l.msgSound);
    this.active.delete(l.pc.id);
  }
}

type OfferValue<T> = T extends { ok: true; value: infer V } ? V : never;
