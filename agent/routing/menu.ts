// The decision core of greetings and menus (docs/menus.md): given where a caller is (the
// greeting or a menu, what plays, the digits so far) and one event (a key, the prompt ended,
// the timer fired), what happens next. Pure: no clock, no media, no SIP; the call flow
// (agent/media/call-menu.ts) plays what it says, arms the one timer it names, and routes the
// call when it names a target.
//
// Greeting (an inbound route's): its prompt plays. With extension dialling on, digits 0-9
// typed while it plays cut it short and collect a number: it is routed as soon as it is
// complete (the longest allowed, or a group number / extension no longer local number starts
// with), at `#`, or when no further digit comes within the inter-digit time. A number that is
// no group and no extension plays the invalid-choice prompt, then the greeting's `then`. The
// greeting ending with no digit typed goes to `then` at once ("extension dialling works only
// while the greeting plays"). Other keys (*, A-D) are ignored; with dialling off every key is.
//
// Menu: its prompt plays; a key cuts it short. A listed key goes to its target (another menu
// plays that menu). No key within timeoutS after the prompt ends, or a key not listed, uses
// one try: the menu plays again (after the invalid-choice prompt, for a wrong key) while
// tries are left (1 + repeats in all), then `afterLast`. A key during the invalid-choice
// prompt is a new choice. So a flood of wrong keys ends the menu after 1 + repeats of them.
//
// Every state waiting on the media (a prompt playing) also has a timer: should the prompt's
// end never be reported, the watchdog moves the call on as if it had ended.
import type { Greeting, Menu, MenuTarget } from "./menu-model.ts";

/** A target the call leaves the menus for. */
export type FinalTarget = Exclude<MenuTarget, { kind: "menu" }>;

export type PromptKind = "greeting" | "menu" | "invalid";

/** A prompt to play: which shipped one, or the site's own file. */
export interface PromptRef {
  kind: PromptKind;
  file?: string;
}

/** Menus one call may enter at most (keys leading round a cycle of menus); then hang-up. */
export const MAX_MENU_HOPS = 20;
/** A prompt whose end is not reported within this long counts as ended. */
export const PROMPT_WATCHDOG_MS = 120_000;

export type IvrState =
  | {
      kind: "greeting";
      greeting: Greeting;
      digits: string;
      /** The greeting prompt is still playing (no digit cut it short). */
      playing: boolean;
      /** The invalid-choice prompt plays; the call then goes to `then`. */
      invalid: boolean;
    }
  | {
      kind: "menu";
      menu: Menu;
      /** Tries used so far (1 on entry; at most 1 + repeats). */
      attempt: number;
      playing: "menu" | "invalid" | undefined;
      /** After the invalid-choice prompt: the menu again, or afterLast. */
      afterInvalid: "replay" | "last";
      /** Menus entered so far by this call (MAX_MENU_HOPS). */
      hops: number;
    }
  | { kind: "done" };

export type IvrEvent = { kind: "digit"; digit: string } | { kind: "prompt-ended" } | { kind: "timeout" };

export interface IvrStep {
  state: IvrState;
  /** Play this prompt now, replacing whatever plays. */
  play?: PromptRef;
  /** Stop what plays (a key cut it short and nothing else is to be played). */
  stop?: boolean;
  /** Arm the call's one timer for this many ms (replacing it); null: no timer; absent: leave it as it is (an ignored event). */
  timerMs?: number | null;
  /** The call leaves for this target; the state is done. */
  route?: FinalTarget;
  /** Why, for the log. */
  note?: string;
}

export interface IvrContext {
  menus: ReadonlyMap<string, Menu>;
  /**
   * A number dialled during a greeting: the group or user it names (if any), and whether some
   * longer group number or extension starts with it (then the caller may still be typing).
   */
  dial(digits: string): { target: FinalTarget | undefined; longer: boolean };
}

const DIGIT_RE = /^[0-9]$/;

/** The greeting of an inbound route starts: its prompt plays. */
export function startGreeting(greeting: Greeting): IvrStep {
  return { state: { kind: "greeting", greeting, digits: "", playing: true, invalid: false }, play: prompt("greeting", greeting.prompt), timerMs: PROMPT_WATCHDOG_MS };
}

/** The call goes to `target`: a menu starts playing, anything else is routed. */
export function enter(target: MenuTarget, hops: number, ctx: IvrContext): IvrStep {
  if (target.kind !== "menu") return { state: { kind: "done" }, route: target, timerMs: null };
  const menu = ctx.menus.get(target.menuId);
  if (menu === undefined) return { state: { kind: "done" }, route: { kind: "hangup" }, timerMs: null, note: `menu ${target.menuId} is gone` };
  if (hops >= MAX_MENU_HOPS) return { state: { kind: "done" }, route: { kind: "hangup" }, timerMs: null, note: `more than ${MAX_MENU_HOPS} menus in one call` };
  return { state: { kind: "menu", menu, attempt: 1, playing: "menu", afterInvalid: "replay", hops: hops + 1 }, play: prompt("menu", menu.prompt), timerMs: PROMPT_WATCHDOG_MS };
}

/**
 * Where a caller who presses nothing ends up from `target` (each menu's afterLast, followed):
 * the call's way out when its media is gone or never started. Validation keeps afterLast
 * chains acyclic; the bound is for a site changed under a live call.
 */
export function silentTarget(target: MenuTarget, menus: ReadonlyMap<string, Menu>): FinalTarget {
  let t = target;
  for (let i = 0; i <= menus.size && t.kind === "menu"; i++) {
    const m = menus.get(t.menuId);
    if (m === undefined) return { kind: "hangup" };
    t = m.afterLast;
  }
  return t.kind === "menu" ? { kind: "hangup" } : t;
}

/** Where the call goes now if its media failed (see silentTarget). */
export function fallback(state: IvrState, ctx: IvrContext): FinalTarget | undefined {
  if (state.kind === "greeting") return silentTarget(state.greeting.then, ctx.menus);
  if (state.kind === "menu") return silentTarget(state.menu.afterLast, ctx.menus);
  return undefined;
}

/** One event. A done state ignores everything. */
export function decide(state: IvrState, ev: IvrEvent, ctx: IvrContext): IvrStep {
  switch (state.kind) {
    case "done":
      return { state, timerMs: null };
    case "greeting":
      return greetingStep(state, ev, ctx);
    case "menu":
      return menuStep(state, ev, ctx);
  }
}

function prompt(kind: PromptKind, file: string | undefined): PromptRef {
  return file === undefined ? { kind } : { kind, file };
}

type GreetingState = Extract<IvrState, { kind: "greeting" }>;
type MenuState = Extract<IvrState, { kind: "menu" }>;

function greetingStep(s: GreetingState, ev: IvrEvent, ctx: IvrContext): IvrStep {
  const dialling = s.greeting.extensionDialling;
  const waiting = (st: GreetingState): number | null => (st.invalid || st.playing ? PROMPT_WATCHDOG_MS : dialling !== undefined && st.digits.length > 0 ? dialling.interDigitS * 1000 : null);
  if (s.invalid) {
    // The invalid-choice prompt plays; then `then`. Keys are not taken meanwhile.
    if (ev.kind === "digit") return { state: s };
    return enter(s.greeting.then, 0, ctx);
  }
  switch (ev.kind) {
    case "digit": {
      if (dialling === undefined) return { state: s };
      if (ev.digit === "#") return s.digits.length > 0 ? { ...resolveNumber(s, s.digits, ctx), ...(s.playing ? { stop: true } : {}) } : { state: s };
      if (!DIGIT_RE.test(ev.digit)) return { state: s };
      const digits = s.digits + ev.digit;
      const stop = s.playing;
      if (digits.length >= dialling.maxDigits) return { ...resolveNumber(s, digits, ctx), ...(stop ? { stop } : {}) };
      const d = ctx.dial(digits);
      if (d.target !== undefined && !d.longer) return { ...resolveNumber(s, digits, ctx), ...(stop ? { stop } : {}) };
      const next: GreetingState = { ...s, digits, playing: false };
      return { state: next, timerMs: waiting(next), ...(stop ? { stop } : {}) };
    }
    case "prompt-ended":
      // With digits typed the inter-digit timer runs (a late report of the prompt's end).
      if (s.digits.length > 0) return { state: s };
      return { ...enter(s.greeting.then, 0, ctx), note: "greeting ended without digits" };
    case "timeout":
      if (s.digits.length > 0) return resolveNumber(s, s.digits, ctx);
      return { ...enter(s.greeting.then, 0, ctx), note: "greeting prompt watchdog" };
  }
}

function resolveNumber(s: GreetingState, digits: string, ctx: IvrContext): IvrStep {
  const d = ctx.dial(digits);
  if (d.target !== undefined) return { state: { kind: "done" }, route: d.target, timerMs: null, note: `dialled ${digits}` };
  return { state: { ...s, digits, playing: false, invalid: true }, play: prompt("invalid", undefined), timerMs: PROMPT_WATCHDOG_MS, note: `dialled ${digits}: no such number` };
}

function menuStep(s: MenuState, ev: IvrEvent, ctx: IvrContext): IvrStep {
  const m = s.menu;
  const tries = 1 + m.repeats;
  switch (ev.kind) {
    case "digit": {
      const option = m.options.find((o) => o.digit === ev.digit);
      if (option !== undefined) return { ...enter(option.target, s.hops, ctx), note: `key ${ev.digit}` };
      // A wrong key uses a try: the invalid-choice prompt, then the menu again or afterLast.
      const last = s.attempt >= tries;
      const next: MenuState = { ...s, playing: "invalid", afterInvalid: last ? "last" : "replay", attempt: last ? s.attempt : s.attempt + 1 };
      return { state: next, play: prompt("invalid", m.invalidPrompt), timerMs: PROMPT_WATCHDOG_MS, note: `key ${printable(ev.digit)} is not in menu ${m.id}` };
    }
    case "prompt-ended":
      if (s.playing === "menu") return { state: { ...s, playing: undefined }, timerMs: m.timeoutS * 1000 };
      if (s.playing === "invalid") return afterInvalid(s, ctx);
      return { state: s };
    case "timeout":
      if (s.playing === "menu") return { state: { ...s, playing: undefined }, timerMs: m.timeoutS * 1000, note: "menu prompt watchdog" };
      if (s.playing === "invalid") return afterInvalid(s, ctx);
      // No key in time: a try used.
      if (s.attempt < tries) return { state: { ...s, attempt: s.attempt + 1, playing: "menu" }, play: prompt("menu", m.prompt), timerMs: PROMPT_WATCHDOG_MS, note: `no key: menu ${m.id} again` };
      return { ...enter(m.afterLast, s.hops, ctx), note: `no key after ${tries} tries of menu ${m.id}` };
  }
}

function afterInvalid(s: MenuState, ctx: IvrContext): IvrStep {
  if (s.afterInvalid === "replay") return { state: { ...s, playing: "menu" }, play: prompt("menu", s.menu.prompt), timerMs: PROMPT_WATCHDOG_MS };
  return { ...enter(s.menu.afterLast, s.hops, ctx), note: `wrong keys after ${1 + s.menu.repeats} tries of menu ${s.menu.id}` };
}

function printable(digit: string): string {
  return digit.replace(/[^\x20-\x7e]/g, "?").slice(0, 4);
}
