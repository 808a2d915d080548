// Operators' own state: availability (available / away / dnd) and, per group, logged in or
// out, set from their phones with feature codes or by the console's site snapshot. The pure
// part: reading a dialled feature code, checking the site's codes, deciding what a code does to
// an operator's state, and merging a site snapshot into the state ("the later change wins").
// No sockets, no clock, no store: agent/presence/operators.ts is the shell around it.
//
// Decisions (issue 14):
// - Codes. Six codes, site setting `featureCodes` (defaults below, as Asterisk/FreePBX and 3CX
//   number them: *78 / *79 DND, *45 / *46 queue log in / out). Away, back, DND on and DND off
//   are exact; log in and log out take an optional group number after the code (`*45601` logs
//   in to group 601 only; bare `*45` to every group the operator is a member of), as pickup
//   takes an extension after `*8`. A code followed by anything else is refused, never routed
//   on (it is clearly meant as ours).
// - No code may be the prefix of another (nor of the pickup code, nor the pickup code of one):
//   with suffixes, "*8" and "*80" could not be told apart. Codes start with "*" or "#", so they
//   never equal an extension or a group number (digits only); the check says so anyway.
// - Availability is one of three states: away and DND on set it; back and DND off both return
//   to available (like 3CX's exclusive statuses). Routing skips away operators only where the
//   group checks availability, DND operators always (plan.ts), and logged-out members of a group
//   in that group only ("logged-out").
// - The later change wins. Phone codes change the state when they reach the agent. A site
//   snapshot (console push or site file) is the console's word for users[].availability and
//   users[].loggedOutOf, but it only changes a field it changed: a field whose value differs
//   from the one the previous snapshot carried for that operator, or any field of an operator
//   whose users[].stateChangedAt is later than the previous snapshot's (the console re-asserting
//   a value it pushed before). A snapshot that merely repeats values leaves phone changes alone.
//   Snapshots are compared with snapshots (the console's own stamps), never with the agent's
//   clock; between a phone and a snapshot the order of arrival at the agent decides.
import { GROUP_NUMBER_RE, type Availability, type Group } from "./model.ts";

/** The site's feature codes for operator state (settings.featureCodes; every one optional). */
export interface FeatureCodes {
  away: string;
  back: string;
  dndOn: string;
  dndOff: string;
  login: string;
  logout: string;
}

export const DEFAULT_FEATURE_CODES: Readonly<FeatureCodes> = Object.freeze({ away: "*41", back: "*42", dndOn: "*78", dndOff: "*79", login: "*45", logout: "*46" });
export const FEATURE_CODE_NAMES: readonly (keyof FeatureCodes)[] = ["away", "back", "dndOn", "dndOff", "login", "logout"];
/** The contract's pattern for feature codes (settings.pickupCode has the same). */
export const FEATURE_CODE_RE = /^[*#][0-9*#]{1,7}$/;

export type OperatorAction = keyof FeatureCodes;

export type OperatorCode =
  | { ok: true; action: OperatorAction; /** login / logout: the group number dialled after the code. */ groupNumber?: string }
  /** The code followed by something it does not take. */
  | { ok: false; action: OperatorAction; reason: string };

/** The code for one action: the site's, else the default. */
export function featureCode(codes: Partial<FeatureCodes> | undefined, action: OperatorAction): string {
  return codes?.[action] ?? DEFAULT_FEATURE_CODES[action];
}

/**
 * Reads a dialled string as an operator-state code; undefined when it is none (routing goes
 * on). Allocation-free until a code matches; cheap for anything not starting with * or #.
 */
export function parseOperatorCode(dialled: string, codes?: Partial<FeatureCodes>): OperatorCode | undefined {
  const c0 = dialled.charCodeAt(0);
  if (c0 !== 42 && c0 !== 35) return undefined; // "*" or "#"
  for (let i = 0; i < FEATURE_CODE_NAMES.length; i++) {
    const action = FEATURE_CODE_NAMES[i] as OperatorAction;
    const code = featureCode(codes, action);
    if (!dialled.startsWith(code)) continue;
    const rest = dialled.slice(code.length);
    if (rest.length === 0) return { ok: true, action };
    if (action !== "login" && action !== "logout") return { ok: false, action, reason: `${code} takes nothing after it` };
    if (GROUP_NUMBER_RE.test(rest)) return { ok: true, action, groupNumber: rest };
    return { ok: false, action, reason: `${code} takes a group number (1 to 4 digits) or nothing after it` };
  }
  return undefined;
}

export interface CodeProblem {
  /** JSON path in the site snapshot, e.g. "settings.featureCodes.dndOn". */
  path: string;
  message: string;
}

/**
 * Checks the site's codes: each well formed, none the prefix of another or of the pickup code
 * (or equal) or of one of `agentCodes` (the agent's settings), none equal to an extension or a
 * group number. Every problem once, at the code
 * named later in FEATURE_CODE_NAMES order (the pickup code comes first).
 */
export function checkFeatureCodes(codes: Partial<FeatureCodes> | undefined, pickupCode: string, numbers: { extensions: Iterable<string>; groupNumbers: Iterable<string> }, agentCodes: ReadonlyArray<{ label: string; code: string }> = []): CodeProblem[] {
  const problems: CodeProblem[] = [];
  // The agent's own codes (its settings, e.g. voicemailCode) come first: a clash with one is
  // the site's to fix, so it is reported at the site's code.
  const named: Array<{ path: string; label: string; code: string }> = [...agentCodes.map((a) => ({ path: "", label: a.label, code: a.code })), { path: "settings.pickupCode", label: "the pickup code", code: pickupCode }];
  const siteFrom = agentCodes.length;
  for (const name of FEATURE_CODE_NAMES) {
    const code = featureCode(codes, name);
    const path = `settings.featureCodes.${name}`;
    const explicit = codes?.[name] !== undefined;
    if (typeof code !== "string" || !FEATURE_CODE_RE.test(code)) {
      problems.push({ path, message: `must be * or # then 1 to 7 of digits, * and # (e.g. "${DEFAULT_FEATURE_CODES[name]}")` });
      continue;
    }
    named.push({ path, label: `${explicit ? "" : "the default "}${name} code ${code}`, code });
  }
  for (let i = Math.max(1, siteFrom); i < named.length; i++) {
    const b = named[i]!;
    for (let j = 0; j < i; j++) {
      const a = named[j]!;
      if (a.code === b.code) problems.push({ path: b.path, message: `${b.code} is also ${a.label}` });
      else if (b.code.startsWith(a.code)) problems.push({ path: b.path, message: `${b.code} starts with ${a.label}: a phone dialling it could not be told apart` });
      else if (a.code.startsWith(b.code)) problems.push({ path: b.path, message: `${b.code} is the start of ${a.label}: a phone dialling it could not be told apart` });
      else continue;
      break;
    }
  }
  const ext = new Set(numbers.extensions);
  const grp = new Set(numbers.groupNumbers);
  for (const n of named.slice(siteFrom + 1)) {
    if (ext.has(n.code)) problems.push({ path: n.path, message: `${n.code} is a user's extension` });
    else if (grp.has(n.code)) problems.push({ path: n.path, message: `${n.code} is a group number` });
  }
  return problems;
}

// --- state ----------------------------------------------------------------------------------

/** Who made a change: a phone's feature code, or a site snapshot (console push or site file). */
export type StateSource = "phone" | "console" | "file";

/** What the previous site snapshot said for one operator (to tell a change from a repeat). */
export interface PushedState {
  availability: Availability;
  /** Group ids, sorted. */
  loggedOutOf: string[];
  stateChangedAt?: number;
}

/** One operator's state. Plain JSON: the store keeps it as is. */
export interface OperatorState {
  userId: string;
  availability: Availability;
  /** Group ids the operator is logged out of, sorted; every other group of theirs: logged in. */
  loggedOutOf: string[];
  /** Epoch ms and origin of the last change (either field). */
  changedAt: number;
  source: StateSource;
  /** The phone (device id) that made the last change, when a phone did. */
  deviceId?: string;
  /** The last site snapshot's values for this operator. */
  pushed: PushedState;
}

export type CodeOutcome =
  | { ok: true; state: OperatorState; changed: boolean; /** For the phone's display (reason phrase). */ text: string }
  | { ok: false; status: 403 | 404; text: string };

export interface CodeContext {
  /** Groups by number (the site index). */
  groupsByNumber: ReadonlyMap<string, Group>;
  /** Groups the operator is a member of, in site order. */
  groupsOf: readonly Group[];
  deviceId: string;
  now: number;
}

/** What a parsed code does to an operator's state. Pure; the input state is not changed. */
export function applyOperatorCode(state: OperatorState, code: Extract<OperatorCode, { ok: true }>, ctx: CodeContext): CodeOutcome {
  let availability = state.availability;
  let loggedOut = state.loggedOutOf;
  let text: string;
  switch (code.action) {
    case "away":
      availability = "away";
      text = "Away";
      break;
    case "back":
    case "dndOff":
      availability = "available";
      text = code.action === "back" ? "Available" : "Do Not Disturb off";
      break;
    case "dndOn":
      availability = "dnd";
      text = "Do Not Disturb on";
      break;
    case "login":
    case "logout": {
      let targets: readonly Group[];
      if (code.groupNumber !== undefined) {
        const g = ctx.groupsByNumber.get(code.groupNumber);
        if (g === undefined) return { ok: false, status: 404, text: `No group ${code.groupNumber}` };
        if (!ctx.groupsOf.includes(g)) return { ok: false, status: 403, text: `Not a member of group ${code.groupNumber}` };
        targets = [g];
      } else {
        if (ctx.groupsOf.length === 0) return { ok: false, status: 403, text: "Not a member of any group" };
        targets = ctx.groupsOf;
      }
      const set = new Set(loggedOut);
      for (const g of targets) {
        if (code.action === "logout") set.add(g.id);
        else set.delete(g.id);
      }
      loggedOut = [...set].sort();
      const where = code.groupNumber !== undefined ? `group ${code.groupNumber}` : "all groups";
      text = code.action === "login" ? `Logged in: ${where}` : `Logged out: ${where}`;
      break;
    }
  }
  const changed = availability !== state.availability || !sameList(loggedOut, state.loggedOutOf);
  if (!changed) return { ok: true, state, changed, text };
  const next: OperatorState = { ...state, availability, loggedOutOf: loggedOut, changedAt: ctx.now, source: "phone", deviceId: ctx.deviceId };
  return { ok: true, state: next, changed, text };
}

/** An operator as the site snapshot lists them (model User plus the state fields). */
export interface SnapshotUser {
  id: string;
  availability: Availability;
  loggedOutOf?: readonly string[];
  stateChangedAt?: number;
}

export interface MergeInput {
  /** Current states keyed by user id (from the store). */
  states: ReadonlyMap<string, OperatorState>;
  users: readonly SnapshotUser[];
  groups: readonly Group[];
  source: "console" | "file";
  now: number;
}

export interface MergeResult {
  /** The states to keep, one per snapshot user, in snapshot order. */
  states: OperatorState[];
  /** Known operators whose effective state changed (availability or logins); new ones are not listed. */
  changed: string[];
}

/**
 * Merges a site snapshot into the operators' state (the later change wins, see the header).
 * Operators no longer in the snapshot are dropped; logged-out entries for groups that are gone,
 * or that the operator is no longer a member of, are dropped too. Idempotent: merging the same
 * snapshot twice changes nothing the second time.
 */
export function mergeSnapshot(input: MergeInput): MergeResult {
  const memberOf = new Map<string, Set<string>>();
  for (const g of input.groups) for (const m of g.members) {
    let s = memberOf.get(m);
    if (s === undefined) memberOf.set(m, (s = new Set()));
    s.add(g.id);
  }
  const out: OperatorState[] = [];
  const changed: string[] = [];
  const none: ReadonlySet<string> = new Set<string>();
  for (const u of input.users) {
    const groups = memberOf.get(u.id) ?? none;
    const pushed: PushedState = { availability: u.availability, loggedOutOf: u.loggedOutOf === undefined || u.loggedOutOf.length === 0 ? [] : [...new Set(u.loggedOutOf)].filter((g) => groups.has(g)).sort() };
    if (u.stateChangedAt !== undefined) pushed.stateChangedAt = u.stateChangedAt;
    const prev = input.states.get(u.id);
    if (prev === undefined) {
      // New to the agent: the snapshot's values, which the console knows; not a change to report.
      out.push({ userId: u.id, availability: pushed.availability, loggedOutOf: pushed.loggedOutOf, changedAt: input.now, source: input.source, pushed });
      continue;
    }
    const reassert = pushed.stateChangedAt !== undefined && (prev.pushed.stateChangedAt === undefined || pushed.stateChangedAt > prev.pushed.stateChangedAt);
    let availability = prev.availability;
    if (reassert || pushed.availability !== prev.pushed.availability) availability = pushed.availability;
    let loggedOut: string[];
    if (reassert) loggedOut = pushed.loggedOutOf;
    else if (prev.loggedOutOf.length === 0 && prev.pushed.loggedOutOf.length === 0 && pushed.loggedOutOf.length === 0) {
      // Logged out nowhere, before or now (most operators): nothing to merge per group.
      loggedOut = [];
    } else {
      // Per group: the snapshot decides where it changed; elsewhere the current state stands.
      const now = new Set(prev.loggedOutOf.filter((g) => groups.has(g)));
      const before = new Set(prev.pushed.loggedOutOf);
      const after = new Set(pushed.loggedOutOf);
      for (const g of groups) {
        if (before.has(g) === after.has(g)) continue;
        if (after.has(g)) now.add(g);
        else now.delete(g);
      }
      loggedOut = [...now].sort();
    }
    // A group pruned from the list (gone, or no longer the operator's) is not a change of
    // what routing does: it keeps the time and origin of the last real change.
    const real = availability !== prev.availability || !sameList(loggedOut, prev.loggedOutOf.length === 0 ? prev.loggedOutOf : prev.loggedOutOf.filter((g) => groups.has(g)));
    // Nothing at all changed (a snapshot repeating this operator): the state stays the same object.
    const same = !real && sameList(loggedOut, prev.loggedOutOf) && samePushed(pushed, prev.pushed);
    const next: OperatorState = real
      ? { userId: u.id, availability, loggedOutOf: loggedOut, changedAt: input.now, source: input.source, pushed }
      : same
        ? prev
        : { ...prev, loggedOutOf: loggedOut, pushed };
    if (real) changed.push(u.id);
    out.push(next);
  }
  return { states: out, changed };
}

/**
 * Whether two lists of operator states hold the same values in the same order (what the store
 * would save): the check after every site apply, without serialising 500 states twice.
 */
export function sameOperatorStates(a: readonly OperatorState[], b: readonly OperatorState[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    const y = b[i]!;
    if (x === y) continue;
    if (x.userId !== y.userId || x.availability !== y.availability || x.changedAt !== y.changedAt || x.source !== y.source || x.deviceId !== y.deviceId) return false;
    if (!sameList(x.loggedOutOf, y.loggedOutOf)) return false;
    const p = x.pushed;
    const q = y.pushed;
    if (p.availability !== q.availability || p.stateChangedAt !== q.stateChangedAt || !sameList(p.loggedOutOf, q.loggedOutOf)) return false;
  }
  return true;
}

/**
 * Whether the state a code sets is in effect for an operator: what a BLF key on that code shows
 * (presence/blf.ts). away: away; back: available; DND on: dnd; DND off: not dnd; log in to a
 * group: a member, logged in there (bare: a member of some group, logged in to all of them);
 * log out: logged out of that group (bare: of every group of theirs).
 */
export function codeInEffect(state: Pick<OperatorState, "availability" | "loggedOutOf">, code: Extract<OperatorCode, { ok: true }>, groupsByNumber: ReadonlyMap<string, Group>, groupsOf: readonly Group[]): boolean {
  switch (code.action) {
    case "away":
      return state.availability === "away";
    case "back":
      return state.availability === "available";
    case "dndOn":
      return state.availability === "dnd";
    case "dndOff":
      return state.availability !== "dnd";
    case "login":
    case "logout": {
      const out = code.action === "logout";
      if (code.groupNumber !== undefined) {
        const g = groupsByNumber.get(code.groupNumber);
        return g !== undefined && groupsOf.includes(g) && state.loggedOutOf.includes(g.id) === out;
      }
      return groupsOf.length > 0 && groupsOf.every((g) => state.loggedOutOf.includes(g.id) === out);
    }
  }
}

function samePushed(a: PushedState, b: PushedState): boolean {
  return a.availability === b.availability && a.stateChangedAt === b.stateChangedAt && sameList(a.loggedOutOf, b.loggedOutOf);
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
