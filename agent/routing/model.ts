// The site model as the console pushes it: operators (users), their devices, call groups.
// Plain JSON-friendly data (strings, numbers, booleans, arrays, objects) because this becomes
// part of the MQTT contract schema. Policy data only: nothing here knows about SIP or sockets.
//
// Every value arriving here is untrusted (DESIGN principle 6): parseSite() checks the whole
// shape and every cross-reference, reports every problem it finds with a JSON path, and
// never throws.

/** One ring lasts 5 s; a ring step lasts ringCount × RING_UNIT_MS (product reference). */
export const RING_UNIT_MS = 5000;
/** At most this many physical desk phones ring for one call, in every strategy, at any moment. */
export const MAX_PHYSICAL_RINGING = 10;
export const RING_COUNT_MIN = 1;
export const RING_COUNT_MAX = 60;
/** Upper bound on wait-for-operator (Cisco UCM native queuing allows 10–3600 s). */
export const WAIT_MAX_S = 3600;
/** Hostile-input bounds: longer ids / names, or more members, are rejected, not truncated. */
export const ID_MAX_LENGTH = 64;
export const NAME_MAX_LENGTH = 128;
export const URI_MAX_LENGTH = 256;
export const MAX_GROUP_MEMBERS = 1000;
export const DEFAULT_CALL_LIMIT = 1;
export const CALL_LIMIT_MAX = 100;
/** After this many errors validation stops listing more and says so (a bad push can be huge). */
export const MAX_REPORTED_ERRORS = 500;

/** Group internal numbers: 1 to 4 digits (product reference). */
export const GROUP_NUMBER_RE = /^[0-9]{1,4}$/;
/** Operator extensions: 1 to 6 digits. */
export const EXTENSION_RE = /^[0-9]{1,6}$/;
/** E.164-ish: optional "+", 3 to 15 digits (ITU-T E.164 §6: at most 15 digits). */
export const MOBILE_RE = /^\+?[0-9]{3,15}$/;
/** A number to forward to: digits, optional leading "+", "*" and "#" for PBX feature codes. */
export const DIAL_NUMBER_RE = /^\+?[0-9*#]{1,32}$/;
/** Voicemail target: a sip:, sips: or tel: URI without whitespace or control characters. */
export const VOICEMAIL_URI_RE = /^(?:sips?|tel):[\x21-\x7e]+$/i;

export type Availability = "available" | "away" | "dnd";
export const AVAILABILITIES: readonly Availability[] = ["available", "away", "dnd"];

/** An operator. */
export interface User {
  id: string;
  /** 1 to 6 digits, unique among users and group numbers. */
  extension: string;
  name: string;
  /** E.164-ish mobile number, used by the forward-mobile no-answer action. */
  mobile?: string;
  /** Away members are skipped only in groups with checkAvailability; dnd members always. The
   *  site's value: operators' phones change it too (operator-state.ts, the later change wins). */
  availability: Availability;
  /** Ids of groups (of which the user is a member) the operator is logged out of; absent = none. */
  loggedOutOf?: string[];
  /** Epoch ms the console last set availability / loggedOutOf: a later one re-asserts both. */
  stateChangedAt?: number;
  /** Concurrent calls this operator takes; 0 = unlimited. parseSite fills DEFAULT_CALL_LIMIT. */
  callLimit: number;
}

export type DeviceKind = "physical" | "soft";
export const DEVICE_KINDS: readonly DeviceKind[] = ["physical", "soft"];

/** A device as routing sees it: physical desk phones count toward the cap, soft clients do not. */
export interface DeviceRef {
  id: string;
  /** User id of the operator the device belongs to. */
  ownerId: string;
  kind: DeviceKind;
}

export type Strategy = "sequential" | "simultaneous" | "evenly" | "cumulative";
export const STRATEGIES: readonly Strategy[] = ["sequential", "simultaneous", "evenly", "cumulative"];

export type HangupStatus = 480 | 486 | 603;
export const HANGUP_STATUSES: readonly HangupStatus[] = [480, 486, 603];

/** A no-answer action that ends the group's own handling (everything except waiting). */
export type FinalNoAnswerAction =
  | { kind: "voicemail"; uri: string }
  /**
   * Forward to a member's mobile. Which member: `memberId` when set (must be a group member);
   * otherwise the member offered last in this call; otherwise (nobody was offered, e.g. all
   * offline) the first member in list order who has a mobile. See pickNoAnswer in plan.ts.
   */
  | { kind: "forward-mobile"; memberId?: string }
  | { kind: "forward-number"; number: string }
  | { kind: "overflow-group"; groupId: string }
  /** Default status 480 Temporarily Unavailable (RFC 3261 §21.4.18). */
  | { kind: "hangup"; status?: HangupStatus };

/** What happens when nobody in the group answers. */
export type NoAnswerAction =
  | FinalNoAnswerAction
  /** Caller hears ringback/hold; the first free operator gets the call; after maxWaitS, `then`. */
  | { kind: "wait-for-operator"; maxWaitS: number; then: FinalNoAnswerAction };

export interface Group {
  id: string;
  /** Internal number, 1 to 4 digits, unique among groups and user extensions. */
  number: string;
  name: string;
  strategy: Strategy;
  /** User ids in order; no duplicates. A user may be a member of many groups. */
  members: string[];
  /** Rings per step; one ring is RING_UNIT_MS. */
  ringCount: number;
  /** Skip members who are away. Without it they still ring (product reference); dnd members never ring (issue 14). */
  checkAvailability: boolean;
  noAnswer: NoAnswerAction;
  /** Group call pickup with the feature code (*8). Absent = disabled. */
  pickup?: { enabled: boolean };
}

export interface Site {
  users: User[];
  devices: DeviceRef[];
  groups: Group[];
}

export type ValidationCode =
  | "invalid-type"
  | "too-long"
  | "too-many"
  | "too-many-errors"
  | "duplicate-id"
  | "invalid-extension"
  | "duplicate-extension"
  | "invalid-group-number"
  | "duplicate-number"
  | "invalid-mobile"
  | "invalid-availability"
  | "invalid-call-limit"
  | "invalid-device-kind"
  | "unknown-owner"
  | "invalid-strategy"
  | "invalid-ring-count"
  | "unknown-member"
  | "duplicate-member"
  | "invalid-no-answer"
  | "nested-wait"
  | "invalid-wait-time"
  | "invalid-voicemail-uri"
  | "invalid-forward-number"
  | "invalid-hangup-status"
  | "mobile-member-not-in-group"
  | "mobile-member-has-no-mobile"
  | "unknown-overflow-target"
  | "overflow-loop"
  | "logged-out-not-member";

export interface ValidationError {
  code: ValidationCode;
  /** JSON path of the offending value, e.g. "groups[2].members[0]". */
  path: string;
  message: string;
}

export type ParseSiteResult = { ok: true; site: Site } | { ok: false; errors: ValidationError[] };

/** Lookups the routing core and the engine use; built once per config push. */
export interface SiteIndex {
  usersById: ReadonlyMap<string, User>;
  /** Keyed by user id; devices in the order the console listed them. */
  devicesByOwner: ReadonlyMap<string, readonly DeviceRef[]>;
  groupsById: ReadonlyMap<string, Group>;
  groupsByNumber: ReadonlyMap<string, Group>;
  usersByExtension: ReadonlyMap<string, User>;
}

/** All problems in a pushed site, in document order then cross-reference order. */
export function validateSite(input: unknown): ValidationError[] {
  const r = parseSite(input);
  return r.ok ? [] : r.errors;
}

/**
 * Checks a pushed site and returns a normalised copy: unknown properties dropped, callLimit
 * defaulted, pickup defaulted to disabled. Nothing is returned unless everything is valid, so a
 * bad push changes nothing (DESIGN principle 6).
 */
export function parseSite(input: unknown): ParseSiteResult {
  const c = new Checker();
  if (!isRecord(input)) {
    c.add("invalid-type", "$", "site must be an object with users, devices and groups");
    return { ok: false, errors: c.errors };
  }
  const rawUsers = c.array(input.users, "users");
  const rawDevices = c.array(input.devices, "devices");
  const rawGroups = c.array(input.groups, "groups");

  // Pass 1: each record on its own. Drafts keep the fields that are valid even when others are
  // not, so one bad field does not cascade into "unknown member" errors elsewhere.
  const users = rawUsers.map((raw, i) => parseUser(c, raw, `users[${i}]`));
  const userIds = new Map<string, number>();
  const extensions = new Map<string, number>();
  users.forEach((u, i) => {
    if (u.id !== undefined) firstSeen(c, userIds, u.id, `users[${i}].id`, "duplicate-id", (j) => `user id "${u.id}" already used by users[${j}]`, i);
    if (u.extension !== undefined) firstSeen(c, extensions, u.extension, `users[${i}].extension`, "duplicate-extension", (j) => `extension ${u.extension} already used by users[${j}]`, i);
  });

  const devices = rawDevices.map((raw, i) => parseDevice(c, raw, `devices[${i}]`));
  const deviceIds = new Map<string, number>();
  devices.forEach((d, i) => {
    if (d.id !== undefined) firstSeen(c, deviceIds, d.id, `devices[${i}].id`, "duplicate-id", (j) => `device id "${d.id}" already used by devices[${j}]`, i);
    if (d.ownerId !== undefined && !userIds.has(d.ownerId)) c.add("unknown-owner", `devices[${i}].ownerId`, `no user with id "${d.ownerId}"`);
  });

  const groups = rawGroups.map((raw, i) => parseGroup(c, raw, `groups[${i}]`));
  const groupIds = new Map<string, number>();
  const groupNumbers = new Map<string, number>();
  groups.forEach((g, i) => {
    if (g.id !== undefined) firstSeen(c, groupIds, g.id, `groups[${i}].id`, "duplicate-id", (j) => `group id "${g.id}" already used by groups[${j}]`, i);
    if (g.number === undefined) return;
    firstSeen(c, groupNumbers, g.number, `groups[${i}].number`, "duplicate-number", (j) => `group number ${g.number} already used by groups[${j}]`, i);
    const ext = extensions.get(g.number);
    if (ext !== undefined) c.add("duplicate-number", `groups[${i}].number`, `group number ${g.number} is also the extension of users[${ext}]`);
  });

  // Pass 2: references between records.
  // Keyed by user id: whether the user has a mobile number (an invalid one counts: it is reported already).
  const mobiles = new Map<string, boolean>();
  for (const u of users) if (u.id !== undefined && !mobiles.has(u.id)) mobiles.set(u.id, u.hasMobile === true);
  groups.forEach((g, i) => {
    if (g.members !== undefined) {
      const seen = new Map<string, number>();
      g.members.forEach((m, k) => {
        const p = `groups[${i}].members[${k}]`;
        if (!userIds.has(m)) c.add("unknown-member", p, `no user with id "${m}"`);
        firstSeen(c, seen, m, p, "duplicate-member", (j) => `user "${m}" is already members[${j}]`, k);
      });
    }
    const a = g.noAnswer;
    if (a === undefined) return;
    checkActionRefs(c, g, a, `groups[${i}].noAnswer`, mobiles, groupIds);
    if (a.kind === "wait-for-operator") checkActionRefs(c, g, a.then, `groups[${i}].noAnswer.then`, mobiles, groupIds);
  });
  checkOverflowLoops(c, groups, groupIds);
  // An operator logs out of groups they are a member of (operator-state.ts).
  users.forEach((u, i) => u.loggedOutOf?.forEach((gid, k) => {
    const g = groupIds.get(gid);
    const members = g === undefined ? undefined : groups[g]?.members;
    // A group whose member list is itself invalid is reported there already.
    if (g !== undefined && members === undefined) return;
    if (members?.includes(u.id ?? "") !== true) c.add("logged-out-not-member", `users[${i}].loggedOutOf[${k}]`, `"${u.id ?? "?"}" is not a member of a group with id "${gid}"`);
  }));

  if (c.errors.length > 0) return { ok: false, errors: c.errors };
  // No errors means every draft is complete.
  const site: Site = {
    users: users.map((u) => u.value as User),
    devices: devices.map((d) => d.value as DeviceRef),
    groups: groups.map((g) => g.value as Group),
  };
  return { ok: true, site };
}

/** Builds the lookups planStep and the engine need. The site must have passed parseSite. */
export function indexSite(site: Site): SiteIndex {
  const devicesByOwner = new Map<string, DeviceRef[]>();
  for (const d of site.devices) {
    const list = devicesByOwner.get(d.ownerId);
    if (list) list.push(d);
    else devicesByOwner.set(d.ownerId, [d]);
  }
  return {
    usersById: new Map(site.users.map((u) => [u.id, u])),
    devicesByOwner,
    groupsById: new Map(site.groups.map((g) => [g.id, g])),
    groupsByNumber: new Map(site.groups.map((g) => [g.number, g])),
    usersByExtension: new Map(site.users.map((u) => [u.extension, u])),
  };
}

/** The group an overflow / wait action hands the call to, if any. */
export function overflowTarget(action: NoAnswerAction): string | undefined {
  if (action.kind === "overflow-group") return action.groupId;
  if (action.kind === "wait-for-operator" && action.then.kind === "overflow-group") return action.then.groupId;
  return undefined;
}

// ---------------------------------------------------------------------------------------------

class Checker {
  readonly errors: ValidationError[] = [];
  private full = false;

  add(code: ValidationCode, path: string, message: string): void {
    if (this.full) return;
    if (this.errors.length >= MAX_REPORTED_ERRORS) {
      this.full = true;
      this.errors.push({ code: "too-many-errors", path, message: `stopped after ${MAX_REPORTED_ERRORS} errors` });
      return;
    }
    this.errors.push({ code, path, message });
  }

  array(v: unknown, path: string): unknown[] {
    if (Array.isArray(v)) return v;
    this.add("invalid-type", path, "must be an array");
    return [];
  }

  string(o: Record<string, unknown>, key: string, path: string, max: number): string | undefined {
    const v = o[key];
    if (typeof v !== "string" || v.length === 0) {
      this.add("invalid-type", `${path}.${key}`, "must be a non-empty string");
      return undefined;
    }
    if (v.length > max) {
      this.add("too-long", `${path}.${key}`, `must be at most ${max} characters`);
      return undefined;
    }
    return v;
  }

  matching(o: Record<string, unknown>, key: string, path: string, re: RegExp, code: ValidationCode, what: string): string | undefined {
    const v = o[key];
    if (typeof v !== "string" || !re.test(v)) {
      this.add(code, `${path}.${key}`, `must be ${what}`);
      return undefined;
    }
    return v;
  }

  oneOf<T extends string | number>(o: Record<string, unknown>, key: string, path: string, allowed: readonly T[], code: ValidationCode): T | undefined {
    const v = o[key];
    const hit = allowed.find((a) => a === v);
    if (hit === undefined) this.add(code, `${path}.${key}`, `must be one of ${allowed.map((a) => JSON.stringify(a)).join(", ")}`);
    return hit;
  }

  integer(o: Record<string, unknown>, key: string, path: string, min: number, max: number, code: ValidationCode): number | undefined {
    const v = o[key];
    if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
      this.add(code, `${path}.${key}`, `must be an integer from ${min} to ${max}`);
      return undefined;
    }
    return v;
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Records the first index of a key; reports later occurrences. */
function firstSeen(
  c: Checker,
  seen: Map<string, number>,
  key: string,
  path: string,
  code: ValidationCode,
  message: (firstIndex: number) => string,
  index: number,
): void {
  const j = seen.get(key);
  if (j === undefined) seen.set(key, index);
  else c.add(code, path, message(j));
}

/** A record as far as it could be read: valid fields set, `value` only when all are valid. */
interface UserDraft { id?: string; extension?: string; hasMobile?: boolean; loggedOutOf?: string[]; value?: User }
interface DeviceDraft { id?: string; ownerId?: string; value?: DeviceRef }
interface GroupDraft { id?: string; number?: string; members?: string[]; noAnswer?: NoAnswerAction; value?: Group }

function parseUser(c: Checker, raw: unknown, path: string): UserDraft {
  if (!isRecord(raw)) {
    c.add("invalid-type", path, "user must be an object");
    return {};
  }
  const id = c.string(raw, "id", path, ID_MAX_LENGTH);
  const extension = c.matching(raw, "extension", path, EXTENSION_RE, "invalid-extension", "1 to 6 digits");
  const name = c.string(raw, "name", path, NAME_MAX_LENGTH);
  const mobile = raw.mobile === undefined ? undefined : c.matching(raw, "mobile", path, MOBILE_RE, "invalid-mobile", "an E.164 number: optional +, 3 to 15 digits");
  const availability = c.oneOf(raw, "availability", path, AVAILABILITIES, "invalid-availability");
  const callLimit = raw.callLimit === undefined ? DEFAULT_CALL_LIMIT : c.integer(raw, "callLimit", path, 0, CALL_LIMIT_MAX, "invalid-call-limit");
  let loggedOutOf: string[] | undefined;
  if (raw.loggedOutOf !== undefined) {
    const v = raw.loggedOutOf;
    if (Array.isArray(v) && v.length <= MAX_GROUP_MEMBERS && v.every((g) => typeof g === "string" && g.length > 0 && g.length <= ID_MAX_LENGTH)) loggedOutOf = v as string[];
    else c.add("invalid-type", `${path}.loggedOutOf`, "must be an array of group ids");
  }
  const stateChangedAt = raw.stateChangedAt === undefined ? undefined : c.integer(raw, "stateChangedAt", path, 0, Number.MAX_SAFE_INTEGER, "invalid-type");
  const draft: UserDraft = { id, extension, hasMobile: raw.mobile !== undefined, loggedOutOf };
  if (id === undefined || extension === undefined || name === undefined || availability === undefined || callLimit === undefined) return draft;
  if (raw.mobile !== undefined && mobile === undefined) return draft;
  if ((raw.loggedOutOf !== undefined && loggedOutOf === undefined) || (raw.stateChangedAt !== undefined && stateChangedAt === undefined)) return draft;
  draft.value = { id, extension, name, availability, callLimit };
  if (mobile !== undefined) draft.value.mobile = mobile;
  if (loggedOutOf !== undefined) draft.value.loggedOutOf = [...loggedOutOf];
  if (stateChangedAt !== undefined) draft.value.stateChangedAt = stateChangedAt;
  return draft;
}

function parseDevice(c: Checker, raw: unknown, path: string): DeviceDraft {
  if (!isRecord(raw)) {
    c.add("invalid-type", path, "device must be an object");
    return {};
  }
  const id = c.string(raw, "id", path, ID_MAX_LENGTH);
  const ownerId = c.string(raw, "ownerId", path, ID_MAX_LENGTH);
  const kind = c.oneOf(raw, "kind", path, DEVICE_KINDS, "invalid-device-kind");
  const draft: DeviceDraft = { id, ownerId };
  if (id !== undefined && ownerId !== undefined && kind !== undefined) draft.value = { id, ownerId, kind };
  return draft;
}

function parseGroup(c: Checker, raw: unknown, path: string): GroupDraft {
  if (!isRecord(raw)) {
    c.add("invalid-type", path, "group must be an object");
    return {};
  }
  const id = c.string(raw, "id", path, ID_MAX_LENGTH);
  const number = c.matching(raw, "number", path, GROUP_NUMBER_RE, "invalid-group-number", "1 to 4 digits");
  const name = c.string(raw, "name", path, NAME_MAX_LENGTH);
  const strategy = c.oneOf(raw, "strategy", path, STRATEGIES, "invalid-strategy");
  const ringCount = c.integer(raw, "ringCount", path, RING_COUNT_MIN, RING_COUNT_MAX, "invalid-ring-count");
  let checkAvailability: boolean | undefined;
  if (typeof raw.checkAvailability === "boolean") checkAvailability = raw.checkAvailability;
  else c.add("invalid-type", `${path}.checkAvailability`, "must be a boolean");

  let members: string[] | undefined;
  if (!Array.isArray(raw.members)) c.add("invalid-type", `${path}.members`, "must be an array of user ids");
  else if (raw.members.length > MAX_GROUP_MEMBERS) c.add("too-many", `${path}.members`, `at most ${MAX_GROUP_MEMBERS} members`);
  else {
    const list: string[] = [];
    for (let k = 0; k < raw.members.length; k++) {
      const m: unknown = raw.members[k];
      if (typeof m === "string" && m.length > 0 && m.length <= ID_MAX_LENGTH) list.push(m);
      else c.add("invalid-type", `${path}.members[${k}]`, `must be a user id (1 to ${ID_MAX_LENGTH} characters)`);
    }
    if (list.length === raw.members.length) members = list;
  }

  let pickup: { enabled: boolean } | undefined;
  if (raw.pickup !== undefined) {
    if (isRecord(raw.pickup) && typeof raw.pickup.enabled === "boolean") pickup = { enabled: raw.pickup.enabled };
    else c.add("invalid-type", `${path}.pickup`, "must be { enabled: boolean }");
  }

  const noAnswer = parseAction(c, raw.noAnswer, `${path}.noAnswer`, true);
  const draft: GroupDraft = { id, number, members, noAnswer };
  if (
    id === undefined || number === undefined || name === undefined || strategy === undefined || ringCount === undefined ||
    checkAvailability === undefined || members === undefined || noAnswer === undefined || (raw.pickup !== undefined && pickup === undefined)
  ) return draft;
  draft.value = { id, number, name, strategy, members, ringCount, checkAvailability, noAnswer, pickup: pickup ?? { enabled: false } };
  return draft;
}

function parseAction(c: Checker, raw: unknown, path: string, waitAllowed: boolean): NoAnswerAction | undefined {
  if (!isRecord(raw)) {
    c.add("invalid-no-answer", path, "must be an object with a kind");
    return undefined;
  }
  switch (raw.kind) {
    case "voicemail": {
      const uri = c.matching(raw, "uri", path, VOICEMAIL_URI_RE, "invalid-voicemail-uri", "a sip:, sips: or tel: URI");
      if (uri !== undefined && uri.length > URI_MAX_LENGTH) {
        c.add("too-long", `${path}.uri`, `must be at most ${URI_MAX_LENGTH} characters`);
        return undefined;
      }
      return uri === undefined ? undefined : { kind: "voicemail", uri };
    }
    case "forward-mobile": {
      if (raw.memberId === undefined) return { kind: "forward-mobile" };
      const memberId = c.string(raw, "memberId", path, ID_MAX_LENGTH);
      return memberId === undefined ? undefined : { kind: "forward-mobile", memberId };
    }
    case "forward-number": {
      const number = c.matching(raw, "number", path, DIAL_NUMBER_RE, "invalid-forward-number", "digits with optional leading +, * and # (at most 32)");
      return number === undefined ? undefined : { kind: "forward-number", number };
    }
    case "overflow-group": {
      const groupId = c.string(raw, "groupId", path, ID_MAX_LENGTH);
      return groupId === undefined ? undefined : { kind: "overflow-group", groupId };
    }
    case "hangup": {
      if (raw.status === undefined) return { kind: "hangup" };
      const status = c.oneOf(raw, "status", path, HANGUP_STATUSES, "invalid-hangup-status");
      return status === undefined ? undefined : { kind: "hangup", status };
    }
    case "wait-for-operator": {
      if (!waitAllowed) {
        c.add("nested-wait", path, "the action after a wait cannot be another wait");
        return undefined;
      }
      const maxWaitS = c.integer(raw, "maxWaitS", path, 1, WAIT_MAX_S, "invalid-wait-time");
      const then = parseAction(c, raw.then, `${path}.then`, false);
      if (maxWaitS === undefined || then === undefined || then.kind === "wait-for-operator") return undefined;
      return { kind: "wait-for-operator", maxWaitS, then };
    }
    default:
      c.add("invalid-no-answer", `${path}.kind`, "must be one of voicemail, forward-mobile, forward-number, wait-for-operator, overflow-group, hangup");
      return undefined;
  }
}

function checkActionRefs(
  c: Checker,
  g: GroupDraft,
  a: NoAnswerAction,
  path: string,
  mobiles: ReadonlyMap<string, boolean>,
  groupIds: ReadonlyMap<string, number>,
): void {
  if (a.kind === "overflow-group" && !groupIds.has(a.groupId)) {
    c.add("unknown-overflow-target", `${path}.groupId`, `no group with id "${a.groupId}"`);
  }
  if (a.kind === "forward-mobile" && a.memberId !== undefined && g.members !== undefined) {
    if (!g.members.includes(a.memberId)) c.add("mobile-member-not-in-group", `${path}.memberId`, `"${a.memberId}" is not a member of group "${g.id ?? "?"}"`);
    else if (mobiles.get(a.memberId) === false) c.add("mobile-member-has-no-mobile", `${path}.memberId`, `user "${a.memberId}" has no mobile number`);
  }
}

/**
 * Each group hands a call to at most one other group (its no-answer action, or the action after
 * its wait), so the overflow graph is functional: following edges from every group finds every
 * cycle. Each cycle is reported once, at the group of the cycle listed first in the site.
 */
function checkOverflowLoops(c: Checker, groups: readonly GroupDraft[], groupIds: ReadonlyMap<string, number>): void {
  /** Index of the group with this id (the first, if the id is duplicated) → its overflow target index. */
  const next = (i: number): number | undefined => {
    const a = groups[i]?.noAnswer;
    const target = a === undefined ? undefined : overflowTarget(a);
    return target === undefined ? undefined : groupIds.get(target);
  };
  const done = new Set<number>();
  const loops: Array<{ first: number; path: string; message: string }> = [];
  for (let start = 0; start < groups.length; start++) {
    if (done.has(start)) continue;
    const onPath = new Map<number, number>();
    const path: number[] = [];
    let i: number | undefined = start;
    while (i !== undefined && !done.has(i) && !onPath.has(i)) {
      onPath.set(i, path.length);
      path.push(i);
      i = next(i);
    }
    if (i !== undefined && onPath.has(i)) {
      const cycle = path.slice(onPath.get(i));
      let first = cycle[0] as number;
      for (const k of cycle) if (k < first) first = k;
      const at = cycle.indexOf(first);
      const ordered = [...cycle.slice(at), ...cycle.slice(0, at), first].map((k) => groups[k]?.id ?? "?");
      const field = groups[first]?.noAnswer?.kind === "wait-for-operator" ? "noAnswer.then.groupId" : "noAnswer.groupId";
      loops.push({ first, path: `groups[${first}].${field}`, message: `overflow chain loops: ${ordered.join(" → ")}` });
    }
    for (const k of path) done.add(k);
  }
  loops.sort((a, b) => a.first - b.first);
  for (const l of loops) c.add("overflow-loop", l.path, l.message);
}
