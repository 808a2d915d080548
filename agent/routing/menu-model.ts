// Greetings and menus in the site model (docs/menus.md): what a trunk caller hears before the
// call reaches a group or an operator, and where their keys send it. Policy data only, checked
// like the rest of the site (model.ts parseSite): every problem by JSON path, nothing applied
// unless everything is valid.
//
// Loops. A menu may lead to another menu by a key (sub-menus, a "back" key, even a key that
// plays the same menu again): each of those is a choice the caller makes, and every menu
// offers a way out (its afterLast). What must never loop is the path of a caller who presses
// nothing: a greeting's `then`, then each menu's `afterLast`, must end at a group, a user,
// voicemail or hang-up. A chain of afterLast that comes back to a menu already on it is
// refused ("menu-loop"), reported once per cycle at the menu listed first. Because every menu
// has an afterLast and no afterLast chain cycles, every menu reaches a non-menu target, so no
// set of menus can hold a call with nothing else reachable. At run time the number of menus
// one call may enter is bounded too (MAX_MENU_HOPS, menu.ts), against a caller pressing keys
// round a cycle forever.
import type { Checker } from "./model.ts";
import { firstSeen, ID_MAX_LENGTH, isRecord } from "./model.ts";

/** Where a greeting or a menu key sends a call. */
export type MenuTarget =
  | { kind: "group"; groupId: string }
  | { kind: "user"; userId: string }
  /** A mailbox: of a group or of a user (agent/voicemail; without it, the group's voicemail action). */
  | { kind: "voicemail"; owner: { kind: "group" | "user"; id: string } }
  | { kind: "menu"; menuId: string }
  | { kind: "hangup" };

export interface ExtensionDialling {
  /** Longest number accepted, 1 to 4 digits. */
  maxDigits: number;
  /** Seconds to wait for the next digit. */
  interDigitS: number;
}

export interface Greeting {
  /** WAV file on the appliance; absent: the shipped greeting. */
  prompt?: string;
  /** Where the call goes when the greeting ends without digits: a group, a user or a menu. */
  then: MenuTarget;
  /** Dialling a group number or extension while the greeting plays; absent: off. */
  extensionDialling?: ExtensionDialling;
}

export interface InboundRoute {
  /** The number the trunk calls; absent: the default route (any number not listed and not local). */
  number?: string;
  greeting: Greeting;
}

export interface MenuOption {
  /** One key: 0-9, * or #. */
  digit: string;
  target: MenuTarget;
}

export interface Menu {
  id: string;
  /** WAV files on the appliance; absent: the shipped prompts. */
  prompt?: string;
  invalidPrompt?: string;
  options: MenuOption[];
  /** Seconds to wait for a key after the prompt ends. */
  timeoutS: number;
  /** Times the menu plays again after a timeout or a wrong key. */
  repeats: number;
  afterLast: MenuTarget;
}

/** The lookups the engine reads (SiteIndex.menus). */
export interface MenuIndex {
  inboundByNumber: ReadonlyMap<string, InboundRoute>;
  defaultInbound: InboundRoute | undefined;
  menusById: ReadonlyMap<string, Menu>;
}

export const MAX_MENUS = 100;
export const MAX_INBOUND_ROUTES = 200;
export const MAX_MENU_OPTIONS = 12;
export const MENU_TIMEOUT_MIN_S = 1;
export const MENU_TIMEOUT_MAX_S = 60;
export const DEFAULT_MENU_TIMEOUT_S = 5;
export const MENU_REPEATS_MAX = 5;
export const DEFAULT_MENU_REPEATS = 2;
export const EXTENSION_DIGITS_MAX = 4;
export const INTER_DIGIT_MAX_S = 10;
export const DEFAULT_INTER_DIGIT_S = 3;
export const PROMPT_MAX_LENGTH = 1024;
/** An inbound number: optional + and 1 to 15 digits (ITU-T E.164 §6: at most 15). */
export const INBOUND_NUMBER_RE = /^\+?[0-9]{1,15}$/;
export const MENU_DIGIT_RE = /^[0-9*#]$/;
/** An absolute path without control characters. */
const PROMPT_RE = /^\/[^\x00-\x1f\x7f]+$/;

export const MENU_VALIDATION_CODES = [
  "invalid-menu",
  "invalid-menu-target",
  "invalid-prompt",
  "invalid-inbound-number",
  "duplicate-inbound-number",
  "duplicate-default-route",
  "invalid-menu-digit",
  "duplicate-menu-digit",
  "invalid-menu-timeout",
  "invalid-menu-repeats",
  "invalid-extension-dialling",
  "unknown-menu-target",
  "menu-loop",
] as const;
export type MenuValidationCode = (typeof MENU_VALIDATION_CODES)[number];

/** The ids a target may name (from parseSite's first pass). */
export interface MenuRefs {
  userIds: ReadonlyMap<string, number>;
  groupIds: ReadonlyMap<string, number>;
}

/**
 * Reads `inbound` and `menus` of a site (either may be absent), checks them and their
 * references; undefined fields when absent or invalid (the errors are in `c`).
 */
export function parseMenusAndInbound(c: Checker, rawInbound: unknown, rawMenus: unknown, refs: MenuRefs): { inbound?: InboundRoute[]; menus?: Menu[] } {
  const before = c.errors.length;
  const menus: Menu[] = [];
  const menuAt = new Map<string, number>();
  const targets: Array<{ t: MenuTarget; path: string }> = [];
  if (rawMenus !== undefined) {
    if (!Array.isArray(rawMenus)) c.add("invalid-type", "menus", "must be an array of menus");
    else if (rawMenus.length > MAX_MENUS) c.add("too-many", "menus", `at most ${MAX_MENUS} menus`);
    else
      rawMenus.forEach((raw: unknown, i: number) => {
        const m = parseMenu(c, raw, `menus[${i}]`, targets);
        if (m?.id !== undefined) firstSeen(c, menuAt, m.id, `menus[${i}].id`, "duplicate-id", (j) => `menu id "${m.id}" already used by menus[${j}]`, i);
        if (m?.value !== undefined) menus.push(m.value);
      });
  }
  const inbound: InboundRoute[] = [];
  if (rawInbound !== undefined) {
    if (!Array.isArray(rawInbound)) c.add("invalid-type", "inbound", "must be an array of inbound routes");
    else if (rawInbound.length > MAX_INBOUND_ROUTES) c.add("too-many", "inbound", `at most ${MAX_INBOUND_ROUTES} inbound routes`);
    else {
      const numbers = new Map<string, number>();
      let defaultAt: number | undefined;
      rawInbound.forEach((raw: unknown, i: number) => {
        const p = `inbound[${i}]`;
        if (!isRecord(raw)) {
          c.add("invalid-type", p, "must be { number?, greeting }");
          return;
        }
        let number: string | undefined;
        if (raw.number !== undefined) {
          number = c.matching(raw, "number", p, INBOUND_NUMBER_RE, "invalid-inbound-number", "optional + and 1 to 15 digits");
          if (number !== undefined) firstSeen(c, numbers, number, `${p}.number`, "duplicate-inbound-number", (j) => `${number} is already inbound[${j}]`, i);
        } else if (defaultAt !== undefined) c.add("duplicate-default-route", p, `inbound[${defaultAt}] is already the default route (no number); give this one a number`);
        else defaultAt = i;
        const greeting = parseGreeting(c, raw.greeting, `${p}.greeting`, targets);
        if (greeting !== undefined && (raw.number === undefined || number !== undefined)) inbound.push(number === undefined ? { greeting } : { number, greeting });
      });
    }
  }
  // References: every target names something that exists.
  for (const { t, path } of targets) {
    const missing =
      t.kind === "group" ? (refs.groupIds.has(t.groupId) ? undefined : `no group with id "${t.groupId}"`)
      : t.kind === "user" ? (refs.userIds.has(t.userId) ? undefined : `no user with id "${t.userId}"`)
      : t.kind === "menu" ? (menuAt.has(t.menuId) ? undefined : `no menu with id "${t.menuId}"`)
      : t.kind === "voicemail" ? ((t.owner.kind === "group" ? refs.groupIds : refs.userIds).has(t.owner.id) ? undefined : `no ${t.owner.kind} with id "${t.owner.id}"`)
      : undefined;
    if (missing !== undefined) c.add("unknown-menu-target", path, missing);
  }
  if (rawMenus !== undefined && Array.isArray(rawMenus)) checkAfterLastLoops(c, rawMenus, menuAt);
  if (c.errors.length > before) return {};
  const out: { inbound?: InboundRoute[]; menus?: Menu[] } = {};
  if (rawInbound !== undefined) out.inbound = inbound;
  if (rawMenus !== undefined) out.menus = menus;
  return out;
}

/** The lookups for the engine. The site must have passed parseSite. */
export function indexMenus(inbound: readonly InboundRoute[] | undefined, menus: readonly Menu[] | undefined): MenuIndex {
  const byNumber = new Map<string, InboundRoute>();
  let def: InboundRoute | undefined;
  for (const r of inbound ?? []) {
    if (r.number === undefined) def = r;
    else byNumber.set(r.number, r);
  }
  return { inboundByNumber: byNumber, defaultInbound: def, menusById: new Map((menus ?? []).map((m) => [m.id, m])) };
}

function parsePrompt(c: Checker, o: Record<string, unknown>, key: string, path: string): string | undefined | null {
  const v = o[key];
  if (v === undefined) return undefined;
  if (typeof v !== "string" || v.length > PROMPT_MAX_LENGTH || !PROMPT_RE.test(v)) {
    c.add("invalid-prompt", `${path}.${key}`, `must be an absolute path to a WAV file on the appliance (at most ${PROMPT_MAX_LENGTH} characters, no control characters)`);
    return null;
  }
  return v;
}

function parseTarget(c: Checker, raw: unknown, path: string, targets: Array<{ t: MenuTarget; path: string }>): MenuTarget | undefined {
  if (!isRecord(raw)) {
    c.add("invalid-menu-target", path, "must be an object with a kind");
    return undefined;
  }
  let t: MenuTarget | undefined;
  let field = path;
  switch (raw.kind) {
    case "group": {
      const groupId = c.string(raw, "groupId", path, ID_MAX_LENGTH);
      if (groupId !== undefined) t = { kind: "group", groupId };
      field = `${path}.groupId`;
      break;
    }
    case "user": {
      const userId = c.string(raw, "userId", path, ID_MAX_LENGTH);
      if (userId !== undefined) t = { kind: "user", userId };
      field = `${path}.userId`;
      break;
    }
    case "menu": {
      const menuId = c.string(raw, "menuId", path, ID_MAX_LENGTH);
      if (menuId !== undefined) t = { kind: "menu", menuId };
      field = `${path}.menuId`;
      break;
    }
    case "voicemail": {
      const o = raw.owner;
      if (!isRecord(o) || (o.kind !== "group" && o.kind !== "user")) {
        c.add("invalid-menu-target", `${path}.owner`, 'must be { kind: "group" | "user", id }');
        return undefined;
      }
      const id = c.string(o, "id", `${path}.owner`, ID_MAX_LENGTH);
      if (id !== undefined) t = { kind: "voicemail", owner: { kind: o.kind, id } };
      field = `${path}.owner.id`;
      break;
    }
    case "hangup":
      return { kind: "hangup" };
    default:
      c.add("invalid-menu-target", `${path}.kind`, "must be one of group, user, voicemail, menu, hangup");
      return undefined;
  }
  if (t !== undefined) targets.push({ t, path: field });
  return t;
}

function parseGreeting(c: Checker, raw: unknown, path: string, targets: Array<{ t: MenuTarget; path: string }>): Greeting | undefined {
  if (!isRecord(raw)) {
    c.add("invalid-menu", path, "must be { prompt?, then, extensionDialling? }");
    return undefined;
  }
  const prompt = parsePrompt(c, raw, "prompt", path);
  const then = parseTarget(c, raw.then, `${path}.then`, targets);
  if (then !== undefined && then.kind !== "group" && then.kind !== "user" && then.kind !== "menu") {
    c.add("invalid-menu-target", `${path}.then.kind`, "a greeting leads to a group, a user or a menu");
    return undefined;
  }
  let dialling: ExtensionDialling | undefined;
  const rd = raw.extensionDialling;
  if (rd !== undefined) {
    if (!isRecord(rd)) {
      c.add("invalid-extension-dialling", `${path}.extensionDialling`, "must be { maxDigits, interDigitS? }");
      return undefined;
    }
    const maxDigits = c.integer(rd, "maxDigits", `${path}.extensionDialling`, 1, EXTENSION_DIGITS_MAX, "invalid-extension-dialling");
    const interDigitS = rd.interDigitS === undefined ? DEFAULT_INTER_DIGIT_S : c.integer(rd, "interDigitS", `${path}.extensionDialling`, 1, INTER_DIGIT_MAX_S, "invalid-extension-dialling");
    if (maxDigits === undefined || interDigitS === undefined) return undefined;
    dialling = { maxDigits, interDigitS };
  }
  if (prompt === null || then === undefined) return undefined;
  const g: Greeting = { then };
  if (prompt !== undefined) g.prompt = prompt;
  if (dialling !== undefined) g.extensionDialling = dialling;
  return g;
}

function parseMenu(c: Checker, raw: unknown, path: string, targets: Array<{ t: MenuTarget; path: string }>): { id?: string; value?: Menu } | undefined {
  if (!isRecord(raw)) {
    c.add("invalid-menu", path, "menu must be an object");
    return undefined;
  }
  const id = c.string(raw, "id", path, ID_MAX_LENGTH);
  const prompt = parsePrompt(c, raw, "prompt", path);
  const invalidPrompt = parsePrompt(c, raw, "invalidPrompt", path);
  const timeoutS = raw.timeoutS === undefined ? DEFAULT_MENU_TIMEOUT_S : c.integer(raw, "timeoutS", path, MENU_TIMEOUT_MIN_S, MENU_TIMEOUT_MAX_S, "invalid-menu-timeout");
  const repeats = raw.repeats === undefined ? DEFAULT_MENU_REPEATS : c.integer(raw, "repeats", path, 0, MENU_REPEATS_MAX, "invalid-menu-repeats");
  const afterLast = parseTarget(c, raw.afterLast, `${path}.afterLast`, targets);
  const options: MenuOption[] = [];
  let optionsOk = true;
  if (!Array.isArray(raw.options) || raw.options.length === 0 || raw.options.length > MAX_MENU_OPTIONS) {
    c.add("invalid-menu", `${path}.options`, `must be an array of 1 to ${MAX_MENU_OPTIONS} { digit, target }`);
    optionsOk = false;
  } else {
    const digits = new Map<string, number>();
    raw.options.forEach((o: unknown, k: number) => {
      const p = `${path}.options[${k}]`;
      if (!isRecord(o)) {
        c.add("invalid-menu", p, "must be { digit, target }");
        optionsOk = false;
        return;
      }
      const digit = c.matching(o, "digit", p, MENU_DIGIT_RE, "invalid-menu-digit", "one key: 0-9, * or #");
      if (digit !== undefined) firstSeen(c, digits, digit, `${p}.digit`, "duplicate-menu-digit", (j) => `key ${digit} is already options[${j}]`, k);
      const target = parseTarget(c, o.target, `${p}.target`, targets);
      if (digit === undefined || target === undefined) optionsOk = false;
      else options.push({ digit, target });
    });
  }
  if (id === undefined || prompt === null || invalidPrompt === null || timeoutS === undefined || repeats === undefined || afterLast === undefined || !optionsOk) return { id };
  const value: Menu = { id, options, timeoutS, repeats, afterLast };
  if (prompt !== undefined) value.prompt = prompt;
  if (invalidPrompt !== undefined) value.invalidPrompt = invalidPrompt;
  return { id, value };
}

/** Every afterLast chain through menus ends outside menus (see the header). */
function checkAfterLastLoops(c: Checker, rawMenus: readonly unknown[], menuAt: ReadonlyMap<string, number>): void {
  /** Menu index → the index of the menu its afterLast names (when it names one that exists). */
  const next = rawMenus.map((raw) => {
    const a = isRecord(raw) && isRecord(raw.afterLast) && raw.afterLast.kind === "menu" && typeof raw.afterLast.menuId === "string" ? menuAt.get(raw.afterLast.menuId) : undefined;
    return a;
  });
  // Each node has at most one successor: walk from every menu, colouring nodes done.
  const state = new Array<number>(rawMenus.length).fill(0); // 0 new, 1 on the current walk, 2 done
  const reported = new Set<number>();
  for (let start = 0; start < rawMenus.length; start++) {
    if (state[start] !== 0) continue;
    const walk: number[] = [];
    let v: number | undefined = start;
    while (v !== undefined && state[v] === 0) {
      state[v] = 1;
      walk.push(v);
      v = next[v];
    }
    if (v !== undefined && state[v] === 1) {
      // A new cycle: the part of this walk from v on.
      const cycle = walk.slice(walk.indexOf(v));
      const first = Math.min(...cycle);
      if (!reported.has(first)) {
        reported.add(first);
        const from = cycle.indexOf(first);
        const ordered = [...cycle.slice(from), ...cycle.slice(0, from), first].map((k) => {
          const r = rawMenus[k];
          return isRecord(r) && typeof r.id === "string" ? r.id : "?";
        });
        c.add("menu-loop", `menus[${first}].afterLast`, `a caller who presses nothing would go round these menus forever: ${ordered.join(" → ")}; one afterLast must lead to a group, a user, voicemail or hang-up`);
      }
    }
    for (const w of walk) state[w] = 2;
  }
}
