// The site model as the console pushes it: operators (users), their devices, call groups.
// Plain JSON-friendly data (strings, numbers, booleans, arrays, objects) because this becomes
// part of the MQTT contract schema. Policy data only: nothing here knows about SIP or sockets.
//
// Every value arriving here is untrusted (DESIGN principle 6): parseSite() checks the whole
// shape and every cross-reference, reports every problem it finds with a JSON path, and
// never throws.

import { DATE_RE, MAX_EXCEPTIONS, MAX_RANGES_PER_DAY, MAX_WEEKLY_RULES, TIME_RE, WEEKDAYS, isRealDate, minutesOf, timeZoneProblem } from "./hours.ts";
import type { HoursException, Schedule, TimeRange, Weekday, WeeklyRule } from "./hours.ts";
import { indexMenus, parseMenusAndInbound, type InboundRoute, type Menu, type MenuIndex, type MenuValidationCode } from "./menu-model.ts";

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
/** A mailbox reference in a no-answer action and on the CLI: "user/<id>" or "group/<id>". */
export const MAILBOX_REF_RE = /^(user|group)\/([A-Za-z0-9][A-Za-z0-9._:@-]{0,63})$/;
/** A mailbox's own greeting: a WAV file name under <dataDir>/voicemail/greetings/ (no directories). */
export const GREETING_FILE_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,59}\.wav$/;
/** Mailbox bounds (voicemail, issue 13). */
export const MAILBOX_MESSAGE_S_MIN = 5;
export const MAILBOX_MESSAGE_S_MAX = 600;
export const MAILBOX_MESSAGES_MAX = 1000;
export const MAILBOX_RETENTION_DAYS_MAX = 3650;
/** Defaults filled by parseSite for a mailbox that names none. */
export const MAILBOX_DEFAULTS = { maxMessageS: 120, maxMessages: 50, retentionDays: 30, silenceS: 10, noAnswerS: 20 } as const;
/** A normalised caller number: "+", a country code not starting with 0, at most 15 digits (ITU-T E.164 §6). */
export const E164_RE = /^\+[1-9][0-9]{1,14}$/;
/** Known callers the console may list (the directory is replaced as a whole by each push). */
export const MAX_KNOWN_CALLERS = 20000;
/** Longest wrap-up after a call, seconds. */
export const WRAP_UP_MAX_S = 3600;

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
  /** The user's own mailbox on the appliance (voicemail/); absent = none. */
  voicemail?: MailboxConfig;
}

/**
 * A mailbox on the appliance (a user's or a group's). parseSite fills the defaults
 * (MAILBOX_DEFAULTS); retentionDays 0 keeps messages until deleted, silenceS 0 never stops on
 * silence.
 */
export interface MailboxConfig {
  enabled: boolean;
  /** Longest message, seconds. */
  maxMessageS: number;
  /** Messages the mailbox holds (its quota); a full mailbox takes no new message. */
  maxMessages: number;
  /** Messages older than this many days are removed; 0 = never. */
  retentionDays: number;
  /** The recording stops after this many seconds of silence; 0 = never. */
  silenceS: number;
  /** A user's mailbox: direct calls ring this long before the mailbox takes them (also at once when offline, busy or DND). */
  noAnswerS: number;
  /** The mailbox's own greeting: a file name under <dataDir>/voicemail/greetings/; absent = the shipped prompt. */
  greeting?: string;
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
  /** A voicemail server elsewhere (the call is forked to the URI). */
  | { kind: "voicemail"; uri: string }
  /**
   * The appliance's own mailbox: `mailbox` ("user/<id>" or "group/<id>"), or absent = the
   * mailbox of the group whose action it is. The mailbox must be enabled.
   */
  | { kind: "voicemail"; uri?: undefined; mailbox?: string }
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
  | { kind: "wait-for-operator"; maxWaitS: number; then: FinalNoAnswerAction; announcePosition?: boolean; music?: SiteSound; prompt?: SiteSound };

/**
 * A sound a site names (agent/media/site-sounds.ts checks and fetches it at apply time): a WAV
 * file on the appliance, or a URL with the SHA-256 of its content, cached under the data directory.
 */
export type SiteSound = { path: string } | { url: string; sha256: string };
export const SITE_SOUND_PATH_MAX = 1024;
export const SITE_SOUND_URL_MAX = 2048;

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
  /** Working hours in the site's time zone (hours.ts). Absent = always open. */
  hours?: Schedule;
  /** What a call gets while the group is closed; required with `hours`. No waiting: nobody is at work. */
  outOfHours?: FinalNoAnswerAction;
  /** Seconds after an operator's answered call through this group ends before the group offers them another; 0 = none. */
  wrapUpS?: number;
  /** The group's mailbox on the appliance; absent = none. */
  voicemail?: MailboxConfig;
  /** A known caller's responsible operator rings alone for this many rings before the group's strategy. */
  responsibleFirst?: { ringCount: number };
  /** Callback offer to waiting callers (routing/callback.ts); needs noAnswer wait-for-operator. Absent = no offer. */
  callback?: CallbackSettings;
}

/** A group's callback offer ("press 1 to be called back; you keep your place"). */
export interface CallbackSettings {
  enabled: boolean;
  /** Seconds in the queue before the offer plays (default CALLBACK_OFFER_AFTER_S). */
  offerAfterS: number;
  /** Further attempts after the first when the caller is not reached (default CALLBACK_RETRIES). */
  retries: number;
  /** Seconds between attempts to reach the caller (default CALLBACK_RETRY_DELAY_S). */
  retryDelayS: number;
}

export const CALLBACK_OFFER_AFTER_S = 20;
export const CALLBACK_RETRIES = 2;
export const CALLBACK_RETRY_DELAY_S = 120;
export const CALLBACK_RETRIES_MAX = 10;
export const CALLBACK_RETRY_DELAY_MAX_S = 86_400;

/** One entry of the console's directory of known callers: a normalised number and the operator responsible for it. */
export interface KnownCaller {
  /** E.164 with "+" (E164_RE). */
  number: string;
  /** A user id. */
  userId: string;
}

export interface Site {
  users: User[];
  devices: DeviceRef[];
  groups: Group[];
  /** IANA zone the groups' working hours are in (settings.timeZone of the site file). */
  timeZone?: string;
  /** The console's directory of known callers (absent = empty). */
  knownCallers?: KnownCaller[];
  /** Greetings for trunk calls and the menus they lead to (menu-model.ts; absent = none). */
  inbound?: InboundRoute[];
  menus?: Menu[];
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
  /** A site sound: bad shape here; at apply time also unreadable, not a playable WAV, too large, wrong SHA-256, not fetched. */
  | "invalid-sound"
  | "invalid-voicemail-uri"
  | "invalid-forward-number"
  | "invalid-hangup-status"
  | "mobile-member-not-in-group"
  | "mobile-member-has-no-mobile"
  | "unknown-overflow-target"
  | "overflow-loop"
  | "logged-out-not-member"
  // Working hours, wrap-up and the responsible operator (issue 14).
  | "invalid-hours"
  | "invalid-time"
  | "empty-range"
  | "overlapping-hours"
  | "invalid-day"
  | "invalid-date"
  | "duplicate-date"
  | "unknown-time-zone"
  | "missing-time-zone"
  | "missing-out-of-hours"
  | "out-of-hours-without-hours"
  | "invalid-out-of-hours"
  | "invalid-wrap-up"
  | "invalid-callback"
  | "invalid-caller-number"
  | "duplicate-caller"
  | "unknown-responsible"
  // Greetings and menus (menu-model.ts).
  | MenuValidationCode
  // Mailboxes on the appliance (issue 13).
  | "invalid-mailbox"
  | "unknown-mailbox"
  | "mailbox-disabled";

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
  /** Keyed by E.164 number: the responsible user id (the console's directory). */
  responsibleByNumber: ReadonlyMap<string, string>;
  /** The site's time zone for working hours; undefined when no group has hours. */
  timeZone: string | undefined;
  /** Greetings by inbound number and menus by id (absent: none configured). */
  menus?: MenuIndex;
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
  groups.forEach((g, i) => {
    if (g.outOfHours !== undefined) checkActionRefs(c, g, g.outOfHours, `groups[${i}].outOfHours`, mobiles, groupIds);
  });
  // Voicemail actions that name a mailbox on the appliance: it exists and is enabled.
  const mailboxEnabled = (kind: string, id: string): boolean | undefined => {
    const k = kind === "user" ? userIds.get(id) : groupIds.get(id);
    if (k === undefined) return undefined;
    return (kind === "user" ? users[k]?.mailboxEnabled : groups[k]?.mailboxEnabled) === true;
  };
  groups.forEach((g, i) => {
    const actions: Array<[NoAnswerAction | undefined, string]> = [
      [g.noAnswer, `groups[${i}].noAnswer`],
      [g.noAnswer?.kind === "wait-for-operator" ? g.noAnswer.then : undefined, `groups[${i}].noAnswer.then`],
      [g.outOfHours, `groups[${i}].outOfHours`],
    ];
    for (const [a, p] of actions) {
      if (a?.kind !== "voicemail" || a.uri !== undefined) continue;
      if (a.mailbox === undefined) {
        if (g.id !== undefined && g.mailboxEnabled !== true) c.add("mailbox-disabled", p, `group "${g.id}" has no enabled mailbox (set its voicemail: { "enabled": true }, or name a mailbox or uri)`);
        continue;
      }
      const [kind, id] = a.mailbox.split("/") as [string, string];
      const on = mailboxEnabled(kind, id);
      if (on === undefined) c.add("unknown-mailbox", `${p}.mailbox`, `no ${kind} with id "${id}"`);
      else if (!on) c.add("mailbox-disabled", `${p}.mailbox`, `the mailbox of ${kind} "${id}" is not enabled`);
    }
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

  // The site's time zone: needed (and checked) when some group has working hours.
  let timeZone: string | undefined;
  const rawZone = isRecord(input.settings) ? input.settings.timeZone : undefined;
  if (rawZone !== undefined) {
    const problem = timeZoneProblem(rawZone);
    if (problem !== undefined) c.add("unknown-time-zone", "settings.timeZone", problem);
    else timeZone = rawZone as string;
  } else {
    const first = groups.findIndex((g) => g.hasHours === true);
    if (first >= 0) c.add("missing-time-zone", `groups[${first}].hours`, "working hours need the site's time zone: set settings.timeZone (an IANA name such as \"Europe/Berlin\")");
  }

  const knownCallers = input.knownCallers === undefined ? [] : parseKnownCallers(c, input.knownCallers, userIds);
  const ivr = input.inbound === undefined && input.menus === undefined ? {} : parseMenusAndInbound(c, input.inbound, input.menus, { userIds, groupIds });

  if (c.errors.length > 0) return { ok: false, errors: c.errors };
  // No errors means every draft is complete.
  const site: Site = {
    users: users.map((u) => u.value as User),
    devices: devices.map((d) => d.value as DeviceRef),
    groups: groups.map((g) => g.value as Group),
  };
  if (timeZone !== undefined) site.timeZone = timeZone;
  if (input.knownCallers !== undefined) site.knownCallers = knownCallers;
  if (ivr.inbound !== undefined) site.inbound = ivr.inbound;
  if (ivr.menus !== undefined) site.menus = ivr.menus;
  parsedByUsers.set(site.users, site);
  return { ok: true, site };
}

/** Keyed by the users array of a site parseSite returned: that site. */
const parsedByUsers = new WeakMap<object, Site>();

/**
 * The site parseSite returned whose parts these are (the very arrays, not copies: a site record
 * made from a checked snapshot), or undefined. Parsing such parts again would only copy them —
 * parseSite's output is its own normal form — so the store need not (a console push used to
 * parse its 500 users and 100 groups twice). Same terms as the site's snapshot hash: a parsed
 * site is never modified (the store and the routing lookups only read it).
 */
export function parsedSiteOf(parts: { users: unknown; groups: unknown; knownCallers?: unknown; inbound?: unknown; menus?: unknown; timeZone?: unknown }): Site | undefined {
  const site = typeof parts.users === "object" && parts.users !== null ? parsedByUsers.get(parts.users) : undefined;
  if (site === undefined || site.groups !== parts.groups || site.knownCallers !== parts.knownCallers || site.inbound !== parts.inbound || site.menus !== parts.menus || site.timeZone !== parts.timeZone) return undefined;
  return site;
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
    responsibleByNumber: new Map((site.knownCallers ?? []).map((k) => [k.number, k.userId])),
    timeZone: site.timeZone,
    ...(site.inbound !== undefined || site.menus !== undefined ? { menus: indexMenus(site.inbound, site.menus) } : {}),
  };
}

/** The group an overflow / wait action hands the call to, if any. */
export function overflowTarget(action: NoAnswerAction): string | undefined {
  if (action.kind === "overflow-group") return action.groupId;
  if (action.kind === "wait-for-operator" && action.then.kind === "overflow-group") return action.then.groupId;
  return undefined;
}

// ---------------------------------------------------------------------------------------------

export class Checker {
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

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Records the first index of a key; reports later occurrences. */
export function firstSeen(
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
interface UserDraft { id?: string; extension?: string; hasMobile?: boolean; loggedOutOf?: string[]; mailboxEnabled?: boolean; value?: User }
interface DeviceDraft { id?: string; ownerId?: string; value?: DeviceRef }
interface GroupDraft { id?: string; number?: string; members?: string[]; noAnswer?: NoAnswerAction; outOfHours?: FinalNoAnswerAction; hasHours?: boolean; mailboxEnabled?: boolean; value?: Group }

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
  const voicemail = raw.voicemail === undefined ? undefined : parseMailbox(c, raw.voicemail, `${path}.voicemail`);
  const draft: UserDraft = { id, extension, hasMobile: raw.mobile !== undefined, loggedOutOf, mailboxEnabled: voicemail?.enabled === true };
  if (raw.voicemail !== undefined && voicemail === undefined) return draft;
  if (id === undefined || extension === undefined || name === undefined || availability === undefined || callLimit === undefined) return draft;
  if (raw.mobile !== undefined && mobile === undefined) return draft;
  if ((raw.loggedOutOf !== undefined && loggedOutOf === undefined) || (raw.stateChangedAt !== undefined && stateChangedAt === undefined)) return draft;
  draft.value = { id, extension, name, availability, callLimit };
  if (mobile !== undefined) draft.value.mobile = mobile;
  if (loggedOutOf !== undefined) draft.value.loggedOutOf = [...loggedOutOf];
  if (stateChangedAt !== undefined) draft.value.stateChangedAt = stateChangedAt;
  if (voicemail !== undefined) draft.value.voicemail = voicemail;
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

  // Working hours and what happens out of them: both or neither.
  const hours = raw.hours === undefined ? undefined : parseSchedule(c, raw.hours, `${path}.hours`);
  let outOfHours: FinalNoAnswerAction | undefined;
  if (raw.outOfHours !== undefined) {
    if (raw.hours === undefined) c.add("out-of-hours-without-hours", `${path}.outOfHours`, "has no effect without hours; remove it or add hours");
    if (isRecord(raw.outOfHours) && raw.outOfHours.kind === "wait-for-operator") c.add("invalid-out-of-hours", `${path}.outOfHours.kind`, "cannot be wait-for-operator: nobody is at work out of hours");
    else outOfHours = parseAction(c, raw.outOfHours, `${path}.outOfHours`, false) as FinalNoAnswerAction | undefined;
  } else if (raw.hours !== undefined) c.add("missing-out-of-hours", `${path}.outOfHours`, "is required with hours: what a call gets while the group is closed");
  const wrapUpS = raw.wrapUpS === undefined ? 0 : c.integer(raw, "wrapUpS", path, 0, WRAP_UP_MAX_S, "invalid-wrap-up");
  let responsibleFirst: { ringCount: number } | undefined;
  if (raw.responsibleFirst !== undefined) {
    if (isRecord(raw.responsibleFirst)) {
      const rings = c.integer(raw.responsibleFirst, "ringCount", `${path}.responsibleFirst`, RING_COUNT_MIN, RING_COUNT_MAX, "invalid-ring-count");
      if (rings !== undefined) responsibleFirst = { ringCount: rings };
    } else c.add("invalid-type", `${path}.responsibleFirst`, "must be { ringCount: integer }");
  }

  const voicemail = raw.voicemail === undefined ? undefined : parseMailbox(c, raw.voicemail, `${path}.voicemail`);
  const draft: GroupDraft = { id, number, members, noAnswer, outOfHours, hasHours: raw.hours !== undefined, mailboxEnabled: voicemail?.enabled === true };
  const callback = raw.callback === undefined ? undefined : parseCallback(c, raw.callback, `${path}.callback`, noAnswer);
  if (raw.voicemail !== undefined && voicemail === undefined) return draft;
  if (
    id === undefined || number === undefined || name === undefined || strategy === undefined || ringCount === undefined ||
    checkAvailability === undefined || members === undefined || noAnswer === undefined || (raw.pickup !== undefined && pickup === undefined) ||
    (raw.hours !== undefined && (hours === undefined || outOfHours === undefined)) || (raw.outOfHours !== undefined && raw.hours === undefined) ||
    wrapUpS === undefined || (raw.responsibleFirst !== undefined && responsibleFirst === undefined) || (raw.callback !== undefined && callback === undefined)
  ) return draft;
  draft.value = { id, number, name, strategy, members, ringCount, checkAvailability, noAnswer, pickup: pickup ?? { enabled: false } };
  if (hours !== undefined && outOfHours !== undefined) {
    draft.value.hours = hours;
    draft.value.outOfHours = outOfHours;
  }
  if (wrapUpS > 0) draft.value.wrapUpS = wrapUpS;
  if (voicemail !== undefined) draft.value.voicemail = voicemail;
  if (responsibleFirst !== undefined) draft.value.responsibleFirst = responsibleFirst;
  if (callback !== undefined) draft.value.callback = callback;
  return draft;
}

/** A group's callback settings; every problem by path. Only meaningful when callers wait in the queue. */
function parseCallback(c: Checker, raw: unknown, path: string, noAnswer: NoAnswerAction | undefined): CallbackSettings | undefined {
  if (!isRecord(raw)) {
    c.add("invalid-type", path, "must be { enabled, offerAfterS?, retries?, retryDelayS? }");
    return undefined;
  }
  let enabled: boolean | undefined;
  if (typeof raw.enabled === "boolean") enabled = raw.enabled;
  else c.add("invalid-type", `${path}.enabled`, "must be a boolean");
  const offerAfterS = raw.offerAfterS === undefined ? CALLBACK_OFFER_AFTER_S : c.integer(raw, "offerAfterS", path, 1, WAIT_MAX_S, "invalid-callback");
  const retries = raw.retries === undefined ? CALLBACK_RETRIES : c.integer(raw, "retries", path, 0, CALLBACK_RETRIES_MAX, "invalid-callback");
  const retryDelayS = raw.retryDelayS === undefined ? CALLBACK_RETRY_DELAY_S : c.integer(raw, "retryDelayS", path, 1, CALLBACK_RETRY_DELAY_MAX_S, "invalid-callback");
  if (enabled === undefined || offerAfterS === undefined || retries === undefined || retryDelayS === undefined) return undefined;
  if (enabled && noAnswer !== undefined) {
    if (noAnswer.kind !== "wait-for-operator") {
      c.add("invalid-callback", `${path}.enabled`, "a callback is offered to callers waiting in the queue: needs noAnswer wait-for-operator");
      return undefined;
    }
    if (offerAfterS >= noAnswer.maxWaitS) {
      c.add("invalid-callback", `${path}.offerAfterS`, `must be less than noAnswer.maxWaitS (${noAnswer.maxWaitS}): the caller would leave the queue before the offer`);
      return undefined;
    }
  }
  return { enabled, offerAfterS, retries, retryDelayS };
}

/** A weekly schedule with exceptions (hours.ts); every problem by path. */
function parseSchedule(c: Checker, raw: unknown, path: string): Schedule | undefined {
  if (!isRecord(raw)) {
    c.add("invalid-hours", path, "must be an object with weekly (and optional exceptions)");
    return undefined;
  }
  const before = c.errors.length;
  const weekly: WeeklyRule[] = [];
  /** Keyed by weekday: its ranges so far, with the path each came from (overlap check). */
  const byDay = new Map<Weekday, Array<{ from: number; to: number; path: string }>>();
  if (!Array.isArray(raw.weekly)) c.add("invalid-hours", `${path}.weekly`, "must be an array of { days, from, to }");
  else if (raw.weekly.length > MAX_WEEKLY_RULES) c.add("too-many", `${path}.weekly`, `at most ${MAX_WEEKLY_RULES} rules`);
  else {
    raw.weekly.forEach((r: unknown, i: number) => {
      const p = `${path}.weekly[${i}]`;
      if (!isRecord(r)) {
        c.add("invalid-hours", p, "must be { days, from, to }");
        return;
      }
      const range = parseRange(c, r, p);
      const days: Weekday[] = [];
      if (!Array.isArray(r.days) || r.days.length === 0 || r.days.length > 7) c.add("invalid-day", `${p}.days`, `must be 1 to 7 of ${WEEKDAYS.join(", ")}`);
      else {
        r.days.forEach((d: unknown, k: number) => {
          const day = WEEKDAYS.find((w) => w === d);
          if (day === undefined) c.add("invalid-day", `${p}.days[${k}]`, `must be one of ${WEEKDAYS.join(", ")}`);
          else if (days.includes(day)) c.add("invalid-day", `${p}.days[${k}]`, `"${day}" is listed twice`);
          else days.push(day);
        });
      }
      if (range === undefined || !Array.isArray(r.days) || days.length !== r.days.length) return;
      weekly.push({ days, from: range.from, to: range.to });
      for (const d of days) {
        const list = byDay.get(d) ?? [];
        const clash = list.find((o) => minutesOf(range.from) < o.to && o.from < minutesOf(range.to));
        if (clash !== undefined) c.add("overlapping-hours", p, `${range.from}–${range.to} on ${d} overlaps ${clash.path}`);
        list.push({ from: minutesOf(range.from), to: minutesOf(range.to), path: p });
        byDay.set(d, list);
      }
    });
  }
  const exceptions: HoursException[] = [];
  if (raw.exceptions !== undefined) {
    if (!Array.isArray(raw.exceptions)) c.add("invalid-hours", `${path}.exceptions`, "must be an array of { date, ranges }");
    else if (raw.exceptions.length > MAX_EXCEPTIONS) c.add("too-many", `${path}.exceptions`, `at most ${MAX_EXCEPTIONS} dates`);
    else {
      const dates = new Map<string, number>();
      raw.exceptions.forEach((e: unknown, i: number) => {
        const p = `${path}.exceptions[${i}]`;
        if (!isRecord(e)) {
          c.add("invalid-hours", p, "must be { date, ranges }");
          return;
        }
        let date: string | undefined;
        if (typeof e.date !== "string" || !DATE_RE.test(e.date) || !isRealDate(e.date)) c.add("invalid-date", `${p}.date`, "must be a calendar date YYYY-MM-DD");
        else {
          date = e.date;
          firstSeen(c, dates, date, `${p}.date`, "duplicate-date", (j) => `${date} is already exceptions[${j}]`, i);
        }
        const ranges: TimeRange[] = [];
        if (!Array.isArray(e.ranges) || e.ranges.length > MAX_RANGES_PER_DAY) {
          c.add("invalid-hours", `${p}.ranges`, `must be an array of at most ${MAX_RANGES_PER_DAY} { from, to } ([] = closed all day)`);
          return;
        }
        const seen: Array<{ from: number; to: number; k: number }> = [];
        e.ranges.forEach((r: unknown, k: number) => {
          const rp = `${p}.ranges[${k}]`;
          if (!isRecord(r)) {
            c.add("invalid-hours", rp, "must be { from, to }");
            return;
          }
          const range = parseRange(c, r, rp);
          if (range === undefined) return;
          const a = minutesOf(range.from);
          const b = minutesOf(range.to);
          const clash = seen.find((o) => a < o.to && o.from < b);
          if (clash !== undefined) c.add("overlapping-hours", rp, `${range.from}–${range.to} overlaps ranges[${clash.k}]`);
          seen.push({ from: a, to: b, k });
          ranges.push(range);
        });
        if (date !== undefined) exceptions.push({ date, ranges });
      });
    }
  }
  if (c.errors.length > before) return undefined;
  return raw.exceptions === undefined ? { weekly } : { weekly, exceptions };
}

/** { from, to } local times with from < to ("24:00" only as `to`). */
function parseRange(c: Checker, r: Record<string, unknown>, path: string): TimeRange | undefined {
  const from = typeof r.from === "string" && TIME_RE.test(r.from) && r.from !== "24:00" ? r.from : undefined;
  if (from === undefined) c.add("invalid-time", `${path}.from`, "must be a local time HH:MM from 00:00 to 23:59");
  const to = typeof r.to === "string" && TIME_RE.test(r.to) ? r.to : undefined;
  if (to === undefined) c.add("invalid-time", `${path}.to`, "must be a local time HH:MM from 00:01 to 24:00");
  if (from === undefined || to === undefined) return undefined;
  if (minutesOf(to) <= minutesOf(from)) {
    c.add("empty-range", path, `${from}–${to} is empty: "to" must be after "from" (a range cannot cross midnight; write two)`);
    return undefined;
  }
  return { from, to };
}

/** The console's directory of known callers: bounded, numbers E.164 and unique, users known. */
function parseKnownCallers(c: Checker, raw: unknown, userIds: ReadonlyMap<string, number>): KnownCaller[] {
  if (!Array.isArray(raw)) {
    c.add("invalid-type", "knownCallers", "must be an array of { number, userId }");
    return [];
  }
  if (raw.length > MAX_KNOWN_CALLERS) {
    c.add("too-many", "knownCallers", `at most ${MAX_KNOWN_CALLERS} known callers`);
    return [];
  }
  const out: KnownCaller[] = [];
  const numbers = new Map<string, number>();
  raw.forEach((e: unknown, i: number) => {
    const p = `knownCallers[${i}]`;
    if (!isRecord(e)) {
      c.add("invalid-type", p, "must be { number, userId }");
      return;
    }
    const number = c.matching(e, "number", p, E164_RE, "invalid-caller-number", "an E.164 number: +, country code and number, at most 15 digits (e.g. \"+4930123456\")");
    const userId = c.string(e, "userId", p, ID_MAX_LENGTH);
    if (number !== undefined) firstSeen(c, numbers, number, `${p}.number`, "duplicate-caller", (j) => `${number} is already knownCallers[${j}]`, i);
    if (userId !== undefined && !userIds.has(userId)) c.add("unknown-responsible", `${p}.userId`, `no user with id "${userId}"`);
    if (number !== undefined && userId !== undefined) out.push({ number, userId });
  });
  return out;
}

/** A mailbox's settings (user or group voicemail); defaults filled. */
function parseMailbox(c: Checker, raw: unknown, path: string): MailboxConfig | undefined {
  if (!isRecord(raw)) {
    c.add("invalid-mailbox", path, "must be an object { enabled, maxMessageS?, maxMessages?, retentionDays?, silenceS?, noAnswerS?, greeting? }");
    return undefined;
  }
  const before = c.errors.length;
  if (typeof raw.enabled !== "boolean") c.add("invalid-mailbox", `${path}.enabled`, "must be a boolean");
  const num = (key: keyof typeof MAILBOX_DEFAULTS, min: number, max: number): number | undefined =>
    raw[key] === undefined ? MAILBOX_DEFAULTS[key] : c.integer(raw, key, path, min, max, "invalid-mailbox");
  const maxMessageS = num("maxMessageS", MAILBOX_MESSAGE_S_MIN, MAILBOX_MESSAGE_S_MAX);
  const maxMessages = num("maxMessages", 1, MAILBOX_MESSAGES_MAX);
  const retentionDays = num("retentionDays", 0, MAILBOX_RETENTION_DAYS_MAX);
  const silenceS = num("silenceS", 0, MAILBOX_MESSAGE_S_MAX);
  const noAnswerS = num("noAnswerS", MAILBOX_MESSAGE_S_MIN, MAILBOX_MESSAGE_S_MAX);
  const greeting = raw.greeting === undefined ? undefined : c.matching(raw, "greeting", path, GREETING_FILE_RE, "invalid-mailbox", "a WAV file name (letters, digits, . _ -, ending .wav) under <dataDir>/voicemail/greetings/");
  for (const k of Object.keys(raw)) {
    if (!["enabled", "maxMessageS", "maxMessages", "retentionDays", "silenceS", "noAnswerS", "greeting"].includes(k)) c.add("invalid-mailbox", `${path}.${k}`, "is not a mailbox setting");
  }
  if (c.errors.length > before || maxMessageS === undefined || maxMessages === undefined || retentionDays === undefined || silenceS === undefined || noAnswerS === undefined) return undefined;
  const out: MailboxConfig = { enabled: raw.enabled as boolean, maxMessageS, maxMessages, retentionDays, silenceS, noAnswerS };
  if (greeting !== undefined) out.greeting = greeting;
  return out;
}

/** "user/<id>" / "group/<id>" → the owner; undefined when malformed. */
export function parseMailboxRef(ref: string): { kind: "user" | "group"; id: string } | undefined {
  const m = MAILBOX_REF_RE.exec(ref);
  return m === null ? undefined : { kind: m[1] as "user" | "group", id: m[2]! };
}

/** The mailbox settings of an owner in the applied site; undefined when it has none enabled. */
export function mailboxOf(index: Pick<SiteIndex, "usersById" | "groupsById">, owner: { kind: "user" | "group"; id: string }): MailboxConfig | undefined {
  const cfg = owner.kind === "user" ? index.usersById.get(owner.id)?.voicemail : index.groupsById.get(owner.id)?.voicemail;
  return cfg?.enabled === true ? cfg : undefined;
}

function parseAction(c: Checker, raw: unknown, path: string, waitAllowed: boolean): NoAnswerAction | undefined {
  if (!isRecord(raw)) {
    c.add("invalid-no-answer", path, "must be an object with a kind");
    return undefined;
  }
  switch (raw.kind) {
    case "voicemail": {
      if (raw.uri === undefined) {
        // The appliance's own mailbox: the group's (absent), or the one named.
        if (raw.mailbox === undefined) return { kind: "voicemail" };
        const mailbox = c.matching(raw, "mailbox", path, MAILBOX_REF_RE, "invalid-mailbox", 'a mailbox "user/<id>" or "group/<id>"');
        return mailbox === undefined ? undefined : { kind: "voicemail", mailbox };
      }
      if (raw.mailbox !== undefined) {
        c.add("invalid-mailbox", `${path}.mailbox`, "cannot be given with uri: a voicemail action goes to a URI or to a mailbox on the appliance");
        return undefined;
      }
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
      let announcePosition: boolean | undefined;
      if (typeof raw.announcePosition === "boolean") announcePosition = raw.announcePosition;
      else if (raw.announcePosition !== undefined) c.add("invalid-type", `${path}.announcePosition`, "must be a boolean");
      const music = raw.music === undefined ? undefined : parseSiteSound(c, raw.music, `${path}.music`);
      const prompt = raw.prompt === undefined ? undefined : parseSiteSound(c, raw.prompt, `${path}.prompt`);
      if (maxWaitS === undefined || then === undefined || then.kind === "wait-for-operator") return undefined;
      if ((raw.announcePosition !== undefined && announcePosition === undefined) || (raw.music !== undefined && music === undefined) || (raw.prompt !== undefined && prompt === undefined)) return undefined;
      const wait: NoAnswerAction = { kind: "wait-for-operator", maxWaitS, then };
      if (announcePosition !== undefined) wait.announcePosition = announcePosition;
      if (music !== undefined) wait.music = music;
      if (prompt !== undefined) wait.prompt = prompt;
      return wait;
    }
    default:
      c.add("invalid-no-answer", `${path}.kind`, "must be one of voicemail, forward-mobile, forward-number, wait-for-operator, overflow-group, hangup");
      return undefined;
  }
}

/** A site sound's shape (what the file at the path or URL holds is checked at apply time). */
function parseSiteSound(c: Checker, raw: unknown, path: string): SiteSound | undefined {
  if (!isRecord(raw)) {
    c.add("invalid-sound", path, "must be { path } or { url, sha256 }");
    return undefined;
  }
  const keys = Object.keys(raw).sort().join(",");
  if (keys === "path") {
    const p = raw.path;
    if (typeof p !== "string" || !p.startsWith("/") || p.length > SITE_SOUND_PATH_MAX || /[\x00-\x1f]/.test(p)) {
      c.add("invalid-sound", `${path}.path`, `must be an absolute file path (at most ${SITE_SOUND_PATH_MAX} characters)`);
      return undefined;
    }
    return { path: p };
  }
  if (keys === "sha256,url") {
    const { url, sha256 } = raw;
    let ok = typeof url === "string" && url.length <= SITE_SOUND_URL_MAX;
    if (ok) {
      try {
        const u = new URL(url as string);
        ok = (u.protocol === "http:" || u.protocol === "https:") && u.hostname !== "" && u.username === "" && u.password === "";
      } catch {
        ok = false;
      }
    }
    if (!ok) c.add("invalid-sound", `${path}.url`, `must be an http or https URL without credentials (at most ${SITE_SOUND_URL_MAX} characters)`);
    const hashOk = typeof sha256 === "string" && /^[0-9a-f]{64}$/.test(sha256);
    if (!hashOk) c.add("invalid-sound", `${path}.sha256`, "must be the file's SHA-256 as 64 lowercase hex digits");
    return ok && hashOk ? { url: url as string, sha256: sha256 as string } : undefined;
  }
  c.add("invalid-sound", path, "must be { path } or { url, sha256 }");
  return undefined;
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
 * Each group hands a call to at most two other groups: its no-answer target (the action, or the
 * action after its wait) and its out-of-hours target. A cycle in that graph can send a call
 * round forever depending on the time of day, so every cycle is refused. Cycles are found per
 * strongly connected component (Tarjan); each component with a cycle is reported once, at its
 * group listed first in the site, with the shortest loop through that group.
 */
function checkOverflowLoops(c: Checker, groups: readonly GroupDraft[], groupIds: ReadonlyMap<string, number>): void {
  /** Index of a group → its overflow edges (target index and the field that names it). */
  const edges = groups.map((g) => {
    const out: Array<{ to: number; field: string }> = [];
    const a = g.noAnswer;
    const t = a === undefined ? undefined : overflowTarget(a);
    const ti = t === undefined ? undefined : groupIds.get(t);
    if (ti !== undefined) out.push({ to: ti, field: a?.kind === "wait-for-operator" ? "noAnswer.then.groupId" : "noAnswer.groupId" });
    const o = g.outOfHours;
    const oi = o?.kind === "overflow-group" ? groupIds.get(o.groupId) : undefined;
    if (oi !== undefined) out.push({ to: oi, field: "outOfHours.groupId" });
    return out;
  });
  // Tarjan's strongly connected components, iteratively (a site may list 2000 groups).
  const index = new Array<number>(groups.length).fill(-1);
  const low = new Array<number>(groups.length).fill(0);
  const onStack = new Array<boolean>(groups.length).fill(false);
  const stack: number[] = [];
  const components: number[][] = [];
  let counter = 0;
  for (let root = 0; root < groups.length; root++) {
    if (index[root] !== -1) continue;
    const work: Array<{ v: number; e: number }> = [{ v: root, e: 0 }];
    index[root] = low[root] = counter++;
    stack.push(root);
    onStack[root] = true;
    while (work.length > 0) {
      const top = work[work.length - 1] as { v: number; e: number };
      const list = edges[top.v] as Array<{ to: number }>;
      if (top.e < list.length) {
        const w = (list[top.e++] as { to: number }).to;
        if (index[w] === -1) {
          index[w] = low[w] = counter++;
          stack.push(w);
          onStack[w] = true;
          work.push({ v: w, e: 0 });
        } else if (onStack[w]) low[top.v] = Math.min(low[top.v] as number, index[w] as number);
        continue;
      }
      work.pop();
      const parent = work[work.length - 1];
      if (parent !== undefined) low[parent.v] = Math.min(low[parent.v] as number, low[top.v] as number);
      if (low[top.v] === index[top.v]) {
        const comp: number[] = [];
        let w: number;
        do {
          w = stack.pop() as number;
          onStack[w] = false;
          comp.push(w);
        } while (w !== top.v);
        components.push(comp);
      }
    }
  }
  const loops: Array<{ first: number; path: string; message: string }> = [];
  for (const comp of components) {
    const members = new Set(comp);
    const first = Math.min(...comp);
    const selfLoop = (edges[first] ?? []).some((e) => e.to === first);
    if (comp.length === 1 && !selfLoop) continue;
    // Shortest way from `first` back to itself inside the component (breadth first).
    const prev = new Map<number, { from: number; field: string }>();
    const queue: number[] = [first];
    let found: { from: number; field: string } | undefined;
    for (let q = 0; q < queue.length && found === undefined; q++) {
      const v = queue[q] as number;
      for (const e of edges[v] ?? []) {
        if (!members.has(e.to)) continue;
        if (e.to === first) {
          found = { from: v, field: e.field };
          break;
        }
        if (!prev.has(e.to)) {
          prev.set(e.to, { from: v, field: e.field });
          queue.push(e.to);
        }
      }
    }
    if (found === undefined) continue;
    const chain: number[] = [first];
    for (let v = found.from; v !== first; v = (prev.get(v) as { from: number }).from) chain.push(v);
    const ordered = [first, ...chain.slice(1).reverse(), first].map((k) => groups[k]?.id ?? "?");
    // The field of the loop's first edge, out of `first`.
    const second = chain.length > 1 ? (chain[chain.length - 1] as number) : first;
    const field = second === first ? found.field : (prev.get(second) as { field: string }).field;
    loops.push({ first, path: `groups[${first}].${field}`, message: `overflow chain loops: ${ordered.join(" → ")}` });
  }
  loops.sort((a, b) => a.first - b.first);
  for (const l of loops) c.add("overflow-loop", l.path, l.message);
}
