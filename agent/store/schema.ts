// The persisted data model of the agent (what survives a restart or a power cut), schema
// version 3, and the validators that check data read from disk or handed in by callers.
// Pure: no I/O here. A change of shape (or of how a field is written) means a new
// CURRENT_SCHEMA_VERSION plus one entry in migrations.ts (see the header there).
//
// Version 2 added: device origin ("site" file / console vs "local" CLI) and per-device
// provisioning credentials; the applied site (users, groups, settings); phones seen by the
// provisioning server; the call log. Version 3: phone models in the canonical form
// `<vendor>/<model id>` (same layout).
import { isIP } from "node:net";
import { AVAILABILITIES, parseSite, parsedSiteOf, type Availability, type Group, type ParseSiteResult, type User } from "../routing/model.ts";
import type { OperatorState } from "../routing/operator-state.ts";
import type { SiteRecord, SiteSettings } from "../site/types.ts";
import { validatePayload } from "../contract.ts";
import { MAX_WHY_MEMORY_ITEMS, MAX_WHY_STEPS, type WhyRecord } from "../routing/why.ts";
import { detached } from "../strings.ts";

export type { SiteRecord, SiteSettings } from "../site/types.ts";

/** Version of the StoreData layout this code reads and writes. */
export const CURRENT_SCHEMA_VERSION = 3;

export type DeviceKind = "physical" | "soft";

export interface DeviceRecord {
  /** Stable id chosen by the console or the installer (e.g. "dev-1001"). */
  id: string;
  /** SIP digest username (RFC 3261 §22.4); the extension by default. Case-sensitive. */
  username: string;
  /** SIP digest password in clear: the registrar needs it to compute HA1 for any algorithm. */
  password: string;
  displayName?: string;
  /** User / operator id the device belongs to (console's id). */
  owner?: string;
  /** Physical desk phones count toward the 10-phone ring cap; soft clients do not. */
  kind: DeviceKind;
  /** Normalised MAC: 12 lower-case hex digits, no separators. */
  mac?: string;
  /** Device-profile model, canonical `<vendor>/<model id>` (provisioning/profiles.ts resolveModel);
   *  a model no profile knew at migration is kept as it was written. */
  model?: string;
  createdAt: string;
  /** Who manages it: the site file / console ("site", replaced on every apply) or an installer's
   *  CLI command ("local", never touched by a site apply). Absent reads as "local". */
  origin?: DeviceOrigin;
  /** Per-device HTTP digest credentials and URL token for the provisioning server. */
  provisioning?: ProvisioningCredentials;
}

export type DeviceOrigin = "site" | "local";

export interface ProvisioningCredentials {
  user: string;
  password: string;
  token: string;
  /** When the phone's one unauthenticated bootstrap was used up (served, or it authenticated). */
  bootstrapClosedAt?: string;
  /** When its bootstrap window opened (`phone rebootstrap`); absent: when the device was added. */
  bootstrapOpenedAt?: string;
  /** The client that took the bootstrap (or first authenticated): its address, and the SHA-256
   *  fingerprint of its verified device certificate when it presented one. */
  claimedBy?: ProvisioningClaim;
  /** A second client claimed the phone: its credentials were rotated, the installer must look. */
  conflict?: ProvisioningConflict;
}

export interface ProvisioningClaim {
  ip: string;
  cert?: string;
  at: string;
}

export interface ProvisioningConflict {
  at: string;
  /** The second client. */
  ip: string;
  cert?: string;
  /** The client that had claimed the phone before it. */
  claimedIp: string;
  /** What the second client asked for. */
  stage: "bootstrap" | "full";
}

/** A phone that asked the provisioning server for its configuration. */
export interface SeenPhone {
  /** Normalised MAC: 12 lower-case hex digits. */
  mac: string;
  vendor?: string;
  model?: string;
  firmware?: string;
  ip: string;
  userAgent?: string;
  firstSeen: string;
  lastSeen: string;
  requests: number;
}

/** Most phones kept in seenPhones; the one seen longest ago goes first. */
export const MAX_SEEN_PHONES = 1000;
/** Calls kept by the call log (calls.jsonl, see call-log.ts; the oldest go first). */
export const MAX_CALL_LOG = 5000;

export type CallOutcome = "answered" | "missed" | "busy" | "rejected" | "cancelled" | "forwarded" | "voicemail" | "overflow";
export const CALL_OUTCOMES: readonly CallOutcome[] = ["answered", "missed", "busy", "rejected", "cancelled", "forwarded", "voicemail", "overflow"];

export interface CallRecord {
  id: string;
  /** Epoch ms the call arrived. */
  at: number;
  caller: string;
  target: string;
  groupId?: string;
  outcome: CallOutcome;
  /** Member (user) ids offered the call, in offer order. */
  offered: string[];
  answeredBy?: string;
  answerAfterMs?: number;
  durationMs?: number;
  /** Why each operator was or was not offered the call (agent/routing/why.ts), bounded. */
  why?: WhyRecord;
}

export interface BindingFlow {
  transport: "udp" | "tcp";
  remoteAddress: string;
  remotePort: number;
  localAddress: string;
  localPort: number;
}

export interface BindingRecord {
  deviceId: string;
  /** Address-of-record key (the device's SIP username). */
  aor: string;
  /** Full Contact URI incl. params as received (RFC 3261 §10.3 step 7). */
  contact: string;
  /** Epoch ms. */
  expiresAt: number;
  callId: string;
  cseq: number;
  q?: number;
  flow: BindingFlow;
  userAgent?: string;
  /** +sip.instance (RFC 5626 §4.1). */
  instance?: string;
}

/**
 * A device authenticated successfully (REGISTER digest) from this source address over this
 * transport, last at `at` (epoch ms). Restored into the auth guard at start, so an attack on
 * the account after a restart cannot lock the phone out (issue 11). Newest first per device.
 */
export interface AuthSourceRecord {
  deviceId: string;
  address: string;
  transport: "udp" | "tcp";
  at: number;
}

/** Addresses remembered per device (a phone moving between a few networks). */
export const MAX_AUTH_SOURCES_PER_DEVICE = 4;

export interface StoreMeta {
  createdAt: string;
  siteId?: string;
}

export interface RoutingState {
  /** "evenly" strategy memory: group id → member id → epoch ms of the member's last offer. */
  evenlyLastOffered: Record<string, Record<string, number>>;
}

export interface StoreData {
  devices: DeviceRecord[];
  bindings: BindingRecord[];
  meta: StoreMeta;
  routing: RoutingState;
  /** The applied site configuration; null until a site file or console push is applied. */
  site: SiteRecord | null;
  seenPhones: SeenPhone[];
  /**
   * Legacy: where the call log was kept before it moved to its own append-only file
   * (`calls.jsonl`, call-log.ts). Opening a store moves any records found here to that file and
   * leaves this empty; it stays in the schema so files written before stay valid.
   */
  callLog: CallRecord[];
  /**
   * Where each device last authenticated from. Optional, so schema version 3 files without it
   * stay valid and no migration is needed (absent = nothing remembered yet).
   */
  authSources?: AuthSourceRecord[];
  /**
   * Operators' own state (availability, groups logged out of; routing/operator-state.ts), one
   * per site user. Optional like authSources: files without it need no migration (absent = the
   * site's values).
   */
  operators?: OperatorState[];
}

export function emptyStoreData(now: Date, siteId?: string): StoreData {
  const meta: StoreMeta = { createdAt: now.toISOString() };
  if (siteId !== undefined) meta.siteId = siteId;
  return {
    devices: [],
    bindings: [],
    meta,
    routing: { evenlyLastOffered: Object.create(null) as Record<string, Record<string, number>> },
    site: null,
    seenPhones: [],
    callLog: [],
  };
}

// ---------------------------------------------------------------------------------------------
// Field checks. Each returns null when the value is acceptable, else a reason a person can act on.

const ID_RE = /^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$/;
/** Conservative subset of RFC 3261 §25.1 `user` (unreserved chars): no escapes, no ';' or '='
 *  so a username is safe in a URI, a Digest quoted-string and a file name alike. */
const USERNAME_RE = /^[A-Za-z0-9._~+-]{1,64}$/;
// Printable ASCII only (no control chars, no DEL): the password is typed on phones.
const PASSWORD_RE = /^[\x20-\x7e]{1,128}$/;
const MAC_RE = /^[0-9a-f]{12}$/;
const ISO_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/;

export function checkId(v: unknown): string | null {
  if (typeof v !== "string") return "must be a string";
  return ID_RE.test(v) ? null : "must be 1-128 characters of letters, digits and . _ : @ - (starting with a letter or digit)";
}

export function checkUsername(v: unknown): string | null {
  if (typeof v !== "string") return "must be a string";
  return USERNAME_RE.test(v) ? null : "must be 1-64 characters of letters, digits and . _ ~ + -";
}

export function checkPassword(v: unknown): string | null {
  if (typeof v !== "string") return "must be a string";
  return PASSWORD_RE.test(v) ? null : "must be 1-128 printable ASCII characters";
}

/** Accepts "001122AABBCC", "00:11:22:aa:bb:cc", "00-11-22-AA-BB-CC", "0011.22aa.bbcc". */
export function normalizeMac(v: unknown): string | null {
  if (typeof v !== "string") return null;
  const hex = v.trim().toLowerCase().replace(/[:.-]/g, "");
  return MAC_RE.test(hex) ? hex : null;
}

function checkText(v: unknown, max: number): string | null {
  if (typeof v !== "string") return "must be a string";
  if (v.length > max) return `must be at most ${max} characters`;
  // Control characters would break log lines and phone displays.
  return /[\x00-\x1f\x7f]/.test(v) ? "must not contain control characters" : null;
}

function checkIso(v: unknown): string | null {
  if (typeof v !== "string" || !ISO_RE.test(v) || Number.isNaN(Date.parse(v))) return "must be an ISO 8601 timestamp";
  return null;
}

function checkPort(v: unknown): string | null {
  return Number.isInteger(v) && (v as number) >= 0 && (v as number) <= 65535 ? null : "must be an integer 0-65535";
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Checks one device; `at` names it in the reason ("devices[3]"). */
export function checkDevice(v: unknown, at: string): string | null {
  if (!isPlainObject(v)) return `${at} must be an object`;
  const fields: Array<[string, string | null]> = [
    ["id", checkId(v.id)],
    ["username", checkUsername(v.username)],
    ["password", checkPassword(v.password)],
    ["kind", v.kind === "physical" || v.kind === "soft" ? null : 'must be "physical" or "soft"'],
    ["createdAt", checkIso(v.createdAt)],
  ];
  if (v.displayName !== undefined) fields.push(["displayName", checkText(v.displayName, 128)]);
  if (v.owner !== undefined) fields.push(["owner", checkId(v.owner)]);
  if (v.model !== undefined) fields.push(["model", checkText(v.model, 128)]);
  if (v.mac !== undefined) fields.push(["mac", typeof v.mac === "string" && MAC_RE.test(v.mac) ? null : "must be 12 lower-case hex digits"]);
  if (v.origin !== undefined) fields.push(["origin", v.origin === "site" || v.origin === "local" ? null : 'must be "site" or "local"']);
  if (v.provisioning !== undefined) fields.push(["provisioning", checkProvisioning(v.provisioning)]);
  for (const [name, reason] of fields) if (reason) return `${at}.${name} ${reason}`;
  return null;
}

/** Provisioning credentials travel in HTTP digest headers and URL paths: a safe alphabet only. */
const PROV_CRED_RE = /^[A-Za-z0-9._~-]{1,128}$/;

function checkProvisioning(v: unknown): string | null {
  if (!isPlainObject(v)) return "must be an object";
  for (const k of ["user", "password", "token"] as const) {
    if (typeof v[k] !== "string" || !PROV_CRED_RE.test(v[k] as string)) return `.${k} must be 1-128 characters of letters, digits and . _ ~ -`;
  }
  for (const k of ["bootstrapClosedAt", "bootstrapOpenedAt"] as const) {
    if (v[k] !== undefined && (typeof v[k] !== "string" || !ISO_RE.test(v[k] as string))) return `.${k} must be an ISO 8601 time`;
  }
  if (v.claimedBy !== undefined) {
    const c = v.claimedBy;
    if (!isPlainObject(c) || checkClient(c) !== null) return `.claimedBy ${isPlainObject(c) ? checkClient(c) : "must be an object"}`;
  }
  if (v.conflict !== undefined) {
    const c = v.conflict;
    if (!isPlainObject(c)) return ".conflict must be an object";
    const bad = checkClient(c) ?? (typeof c.claimedIp === "string" && c.claimedIp.length > 0 && c.claimedIp.length <= 64 ? null : ".claimedIp must be an address") ?? (c.stage === "bootstrap" || c.stage === "full" ? null : '.stage must be "bootstrap" or "full"');
    if (bad) return `.conflict${bad}`;
  }
  return null;
}

/** A provisioning client: address, optional certificate fingerprint, ISO time. */
function checkClient(c: Record<string, unknown>): string | null {
  if (typeof c.ip !== "string" || c.ip.length === 0 || c.ip.length > 64) return ".ip must be an address";
  if (c.cert !== undefined && (typeof c.cert !== "string" || !/^[0-9A-F]{2}(:[0-9A-F]{2}){31}$/.test(c.cert))) return ".cert must be a SHA-256 fingerprint";
  if (typeof c.at !== "string" || !ISO_RE.test(c.at)) return ".at must be an ISO 8601 time";
  return null;
}

export function checkSeenPhone(v: unknown, at: string): string | null {
  if (!isPlainObject(v)) return `${at} must be an object`;
  const fields: Array<[string, string | null]> = [
    ["mac", typeof v.mac === "string" && MAC_RE.test(v.mac) ? null : "must be 12 lower-case hex digits"],
    ["ip", typeof v.ip === "string" && v.ip.length > 0 ? checkText(v.ip, 64) : "must be a non-empty string"],
    ["firstSeen", checkIso(v.firstSeen)],
    ["lastSeen", checkIso(v.lastSeen)],
    ["requests", Number.isSafeInteger(v.requests) && (v.requests as number) >= 0 ? null : "must be a non-negative integer"],
  ];
  for (const k of ["vendor", "model", "firmware"] as const) if (v[k] !== undefined) fields.push([k, checkText(v[k], 128)]);
  if (v.userAgent !== undefined) fields.push(["userAgent", checkText(v.userAgent, 512)]);
  for (const [name, reason] of fields) if (reason) return `${at}.${name} ${reason}`;
  return null;
}

function checkMs(v: unknown): string | null {
  return typeof v === "number" && Number.isFinite(v) && v >= 0 ? null : "must be a non-negative number of milliseconds";
}

/** An IP literal as a flow's remoteAddress holds it (IPv6 without brackets). */
function checkAddress(v: unknown): string | null {
  return typeof v === "string" && isIP(v) !== 0 ? null : "must be an IP address";
}

export function checkAuthSource(v: unknown, at: string): string | null {
  if (!isPlainObject(v)) return `${at} must be an object`;
  const fields: Array<[string, string | null]> = [
    ["deviceId", typeof v.deviceId === "string" && v.deviceId.length > 0 ? checkText(v.deviceId, 128) : "must be a non-empty string"],
    ["address", checkAddress(v.address)],
    ["transport", v.transport === "udp" || v.transport === "tcp" ? null : 'must be "udp" or "tcp"'],
    ["at", checkMs(v.at)],
  ];
  for (const [name, reason] of fields) if (reason) return `${at}.${name} ${reason}`;
  return null;
}

const STATE_SOURCES: readonly string[] = ["phone", "console", "file"];

function checkIdList(v: unknown): string | null {
  return Array.isArray(v) && v.length <= 1000 && v.every((g) => checkId(g) === null) ? null : "must be an array of ids";
}

export function checkOperatorState(v: unknown, at: string): string | null {
  if (!isPlainObject(v)) return `${at} must be an object`;
  const p = v.pushed;
  const fields: Array<[string, string | null]> = [
    ["userId", checkId(v.userId)],
    ["availability", AVAILABILITIES.includes(v.availability as Availability) ? null : `must be one of ${AVAILABILITIES.join(", ")}`],
    ["loggedOutOf", checkIdList(v.loggedOutOf)],
    ["changedAt", checkMs(v.changedAt)],
    ["source", STATE_SOURCES.includes(v.source as string) ? null : `must be one of ${STATE_SOURCES.join(", ")}`],
    ["pushed", isPlainObject(p) ? null : "must be an object"],
  ];
  if (v.deviceId !== undefined) fields.push(["deviceId", checkId(v.deviceId)]);
  if (isPlainObject(p)) {
    fields.push(["pushed.availability", AVAILABILITIES.includes(p.availability as Availability) ? null : `must be one of ${AVAILABILITIES.join(", ")}`], ["pushed.loggedOutOf", checkIdList(p.loggedOutOf)]);
    if (p.stateChangedAt !== undefined) fields.push(["pushed.stateChangedAt", checkMs(p.stateChangedAt)]);
  }
  for (const [name, reason] of fields) if (reason) return `${at}.${name} ${reason}`;
  return null;
}

/** A copy holding only the fields of OperatorState. */
export function toOperatorState(r: OperatorState): OperatorState {
  const out: OperatorState = { userId: r.userId, availability: r.availability, loggedOutOf: [...r.loggedOutOf], changedAt: r.changedAt, source: r.source, pushed: { availability: r.pushed.availability, loggedOutOf: [...r.pushed.loggedOutOf] } };
  if (r.deviceId !== undefined) out.deviceId = r.deviceId;
  if (r.pushed.stateChangedAt !== undefined) out.pushed.stateChangedAt = r.pushed.stateChangedAt;
  return out;
}

export function checkCallRecord(v: unknown, at: string): string | null {
  if (!isPlainObject(v)) return `${at} must be an object`;
  const fields: Array<[string, string | null]> = [
    ["id", typeof v.id === "string" && v.id.length > 0 ? checkText(v.id, 128) : "must be a non-empty string"],
    ["at", checkMs(v.at)],
    ["caller", checkText(v.caller, 256)],
    ["target", checkText(v.target, 256)],
    ["outcome", CALL_OUTCOMES.includes(v.outcome as CallOutcome) ? null : `must be one of ${CALL_OUTCOMES.join(", ")}`],
    ["offered", Array.isArray(v.offered) && v.offered.length <= 1000 && v.offered.every((m) => typeof m === "string" && m.length > 0 && m.length <= 128) ? null : "must be an array of member ids"],
  ];
  if (v.groupId !== undefined) fields.push(["groupId", typeof v.groupId === "string" && v.groupId.length > 0 ? checkText(v.groupId, 128) : "must be a non-empty string"]);
  if (v.answeredBy !== undefined) fields.push(["answeredBy", typeof v.answeredBy === "string" && v.answeredBy.length > 0 ? checkText(v.answeredBy, 128) : "must be a non-empty string"]);
  if (v.answerAfterMs !== undefined) fields.push(["answerAfterMs", checkMs(v.answerAfterMs)]);
  if (v.durationMs !== undefined) fields.push(["durationMs", checkMs(v.durationMs)]);
  if (v.why !== undefined) fields.push(["why", checkWhy(v.why)]);
  for (const [name, reason] of fields) if (reason) return `${at}.${name} ${reason}`;
  return null;
}

const SHA256_HEX_RE = /^[0-9a-f]{64}$/;

/** Checks the stored site: settings against the contract, users and groups by the routing model. */
export function checkSiteRecord(v: unknown, at: string): { ok: true; value: SiteRecord } | { ok: false; error: string } {
  const no = (error: string): { ok: false; error: string } => ({ ok: false, error });
  if (!isPlainObject(v)) return no(`${at} must be an object or null`);
  if (!Number.isSafeInteger(v.version) || (v.version as number) < 1) return no(`${at}.version must be an integer from 1`);
  if (typeof v.hash !== "string" || !SHA256_HEX_RE.test(v.hash)) return no(`${at}.hash must be 64 lower-case hex digits (sha256)`);
  const iso = checkIso(v.appliedAt);
  if (iso) return no(`${at}.appliedAt ${iso}`);
  if (v.source !== "file" && v.source !== "console") return no(`${at}.source must be "file" or "console"`);
  const settings = validatePayload("settings", v.settings);
  if (!settings.ok) return no(`${at}.settings${settings.errors[0]?.path === "$" ? "" : `.${settings.errors[0]?.path ?? ""}`} ${settings.errors[0]?.message ?? "is invalid"}`);
  if (typeof (v.settings as Record<string, unknown>).pickupCode !== "string") return no(`${at}.settings.pickupCode is required`);
  // A record made of a snapshot the site service checked holds parseSite's own output: reused.
  const done = parsedSiteOf({ users: v.users, groups: v.groups, knownCallers: v.knownCallers, inbound: v.inbound, menus: v.menus, timeZone: (v.settings as Record<string, unknown>).timeZone });
  const parsed: ParseSiteResult = done !== undefined ? { ok: true, site: done } : parseSite({ users: v.users, devices: [], groups: v.groups, settings: v.settings, knownCallers: v.knownCallers, inbound: v.inbound, menus: v.menus });
  if (!parsed.ok) {
    const e = parsed.errors[0];
    return no(`${at}.${e?.path ?? "users"} ${e?.message ?? "is invalid"}`);
  }
  return {
    ok: true,
    value: {
      version: v.version as number,
      hash: v.hash,
      appliedAt: v.appliedAt as string,
      source: v.source,
      settings: structuredClone(v.settings) as SiteSettings,
      users: parsed.site.users as User[],
      groups: parsed.site.groups as Group[],
      ...(parsed.site.knownCallers !== undefined ? { knownCallers: parsed.site.knownCallers } : {}),
      ...(parsed.site.inbound !== undefined ? { inbound: parsed.site.inbound } : {}),
      ...(parsed.site.menus !== undefined ? { menus: parsed.site.menus } : {}),
    },
  };
}

export function checkBinding(v: unknown, at: string): string | null {
  if (!isPlainObject(v)) return `${at} must be an object`;
  const f = v.flow;
  const fields: Array<[string, string | null]> = [
    ["deviceId", checkId(v.deviceId)],
    ["aor", checkUsername(v.aor)],
    ["contact", typeof v.contact === "string" && v.contact.length > 0 ? checkText(v.contact, 2048) : "must be a non-empty string"],
    ["expiresAt", Number.isSafeInteger(v.expiresAt) && (v.expiresAt as number) >= 0 ? null : "must be epoch milliseconds"],
    ["callId", typeof v.callId === "string" && v.callId.length > 0 ? checkText(v.callId, 1024) : "must be a non-empty string"],
    ["cseq", Number.isInteger(v.cseq) && (v.cseq as number) >= 0 && (v.cseq as number) < 2 ** 32 ? null : "must be an integer below 2**32 (RFC 3261 §8.1.1.5)"],
    ["flow", isPlainObject(f) ? null : "must be an object"],
  ];
  if (v.q !== undefined) fields.push(["q", typeof v.q === "number" && v.q >= 0 && v.q <= 1 ? null : "must be a number 0-1 (RFC 3261 §20.10)"]);
  if (v.userAgent !== undefined) fields.push(["userAgent", checkText(v.userAgent, 512)]);
  if (v.instance !== undefined) fields.push(["instance", checkText(v.instance, 512)]);
  if (isPlainObject(f)) {
    fields.push(
      ["flow.transport", f.transport === "udp" || f.transport === "tcp" ? null : 'must be "udp" or "tcp"'],
      ["flow.remoteAddress", typeof f.remoteAddress === "string" && f.remoteAddress.length > 0 ? checkText(f.remoteAddress, 64) : "must be a non-empty string"],
      ["flow.remotePort", checkPort(f.remotePort)],
      ["flow.localAddress", typeof f.localAddress === "string" && f.localAddress.length > 0 ? checkText(f.localAddress, 64) : "must be a non-empty string"],
      ["flow.localPort", checkPort(f.localPort)],
    );
  }
  for (const [name, reason] of fields) if (reason) return `${at}.${name} ${reason}`;
  return null;
}

/** A copy holding only the fields of DeviceRecord (unknown keys and undefined optionals dropped). */
export function toDeviceRecord(d: DeviceRecord): DeviceRecord {
  const out: DeviceRecord = { id: d.id, username: d.username, password: d.password, kind: d.kind, createdAt: d.createdAt };
  if (d.displayName !== undefined) out.displayName = d.displayName;
  if (d.owner !== undefined) out.owner = d.owner;
  if (d.mac !== undefined) out.mac = d.mac;
  if (d.model !== undefined) out.model = d.model;
  if (d.origin !== undefined) out.origin = d.origin;
  if (d.provisioning !== undefined) {
    out.provisioning = toProvisioningCredentials(d.provisioning);
  }
  return out;
}

/** A copy of provisioning credentials and trust state holding only their known fields. */
export function toProvisioningCredentials(p: ProvisioningCredentials): ProvisioningCredentials {
  const out: ProvisioningCredentials = { user: p.user, password: p.password, token: p.token };
  if (p.bootstrapClosedAt !== undefined) out.bootstrapClosedAt = p.bootstrapClosedAt;
  if (p.bootstrapOpenedAt !== undefined) out.bootstrapOpenedAt = p.bootstrapOpenedAt;
  if (p.claimedBy !== undefined) out.claimedBy = { ip: p.claimedBy.ip, ...(p.claimedBy.cert !== undefined ? { cert: p.claimedBy.cert } : {}), at: p.claimedBy.at };
  if (p.conflict !== undefined) {
    const c = p.conflict;
    out.conflict = { at: c.at, ip: c.ip, ...(c.cert !== undefined ? { cert: c.cert } : {}), claimedIp: c.claimedIp, stage: c.stage };
  }
  return out;
}

export function toSeenPhone(p: SeenPhone): SeenPhone {
  const out: SeenPhone = { mac: p.mac, ip: p.ip, firstSeen: p.firstSeen, lastSeen: p.lastSeen, requests: p.requests };
  if (p.vendor !== undefined) out.vendor = p.vendor;
  if (p.model !== undefined) out.model = p.model;
  if (p.firmware !== undefined) out.firmware = p.firmware;
  if (p.userAgent !== undefined) out.userAgent = p.userAgent;
  return out;
}

export function toCallRecord(r: CallRecord): CallRecord {
  // Copies of the strings: the call log keeps up to twice MAX_CALL_LOG records, and a Call-ID,
  // caller or dialled number cut from an INVITE would keep the whole INVITE (SDP and all) alive
  // for as long as its record (agent/strings.ts).
  const out: CallRecord = { id: detached(r.id), at: r.at, caller: detached(r.caller), target: detached(r.target), outcome: r.outcome, offered: r.offered.map(detached) };
  if (r.groupId !== undefined) out.groupId = detached(r.groupId);
  if (r.answeredBy !== undefined) out.answeredBy = detached(r.answeredBy);
  if (r.answerAfterMs !== undefined) out.answerAfterMs = r.answerAfterMs;
  if (r.durationMs !== undefined) out.durationMs = r.durationMs;
  if (r.why !== undefined) out.why = r.why;
  return out;
}

/** A call's why record as whyRecord makes it: bounded steps of bounded items (a damaged file is refused, not trusted). */
function checkWhy(v: unknown): string | null {
  if (!isPlainObject(v) || !Array.isArray(v.steps) || v.steps.length > MAX_WHY_STEPS) return `must be { steps: [...] } with at most ${MAX_WHY_STEPS} steps`;
  let items = 0;
  for (const s of v.steps as unknown[]) {
    if (!isPlainObject(s) || typeof s.groupId !== "string" || s.groupId.length > 128 || checkMs(s.at) !== null) return "has a step that is not { at, groupId, kind }";
    if (s.kind !== "step" && s.kind !== "closed" && s.kind !== "action" && s.kind !== "offer") return "has a step of an unknown kind";
    if (s.items !== undefined) {
      if (!Array.isArray(s.items)) return "has step items that are not an array";
      items += s.items.length;
      if (s.items.some((i) => !isPlainObject(i) || typeof i.userId !== "string" || i.userId.length > 128)) return "has an item without a userId";
    }
  }
  return items > MAX_WHY_MEMORY_ITEMS ? `has more than ${MAX_WHY_MEMORY_ITEMS} items` : null;
}

/** A copy holding only the fields of BindingRecord (drops e.g. a live TCP connectionId and
 *  undefined optionals), so the file never carries process-local state. */
export function toBindingRecord(b: BindingRecord): BindingRecord {
  const out: BindingRecord = {
    deviceId: b.deviceId,
    aor: b.aor,
    contact: b.contact,
    expiresAt: b.expiresAt,
    callId: b.callId,
    cseq: b.cseq,
    flow: {
      transport: b.flow.transport,
      remoteAddress: b.flow.remoteAddress,
      remotePort: b.flow.remotePort,
      localAddress: b.flow.localAddress,
      localPort: b.flow.localPort,
    },
  };
  if (b.q !== undefined) out.q = b.q;
  if (b.userAgent !== undefined) out.userAgent = b.userAgent;
  if (b.instance !== undefined) out.instance = b.instance;
  return out;
}

export type ValidationResult = { ok: true; data: StoreData } | { ok: false; error: string };

/**
 * Checks a whole StoreData read from disk (after its checksum matched) and returns a copy whose
 * string-keyed maps have no prototype, so an id such as "__proto__" is just a key.
 */
export function validateStoreData(v: unknown): ValidationResult {
  if (!isPlainObject(v)) return { ok: false, error: "data must be an object" };
  if (!Array.isArray(v.devices)) return { ok: false, error: "data.devices must be an array" };
  if (!Array.isArray(v.bindings)) return { ok: false, error: "data.bindings must be an array" };
  if (!isPlainObject(v.meta)) return { ok: false, error: "data.meta must be an object" };
  if (!isPlainObject(v.routing) || !isPlainObject(v.routing.evenlyLastOffered)) {
    return { ok: false, error: "data.routing.evenlyLastOffered must be an object" };
  }
  if (!Array.isArray(v.seenPhones)) return { ok: false, error: "data.seenPhones must be an array" };
  if (v.seenPhones.length > MAX_SEEN_PHONES) return { ok: false, error: `data.seenPhones has more than ${MAX_SEEN_PHONES} entries` };
  if (!Array.isArray(v.callLog)) return { ok: false, error: "data.callLog must be an array" };
  if (v.callLog.length > MAX_CALL_LOG) return { ok: false, error: `data.callLog has more than ${MAX_CALL_LOG} entries` };
  if (!("site" in v)) return { ok: false, error: "data.site must be an object or null" };
  const ids = new Set<string>();
  const usernames = new Set<string>();
  const macs = new Set<string>();
  const devices: DeviceRecord[] = [];
  for (const [i, d] of v.devices.entries()) {
    const reason = checkDevice(d, `devices[${i}]`);
    if (reason) return { ok: false, error: reason };
    const dev = d as DeviceRecord;
    if (ids.has(dev.id)) return { ok: false, error: `devices[${i}].id "${dev.id}" is a duplicate` };
    if (usernames.has(dev.username)) return { ok: false, error: `devices[${i}].username "${dev.username}" is a duplicate` };
    if (dev.mac !== undefined && macs.has(dev.mac)) return { ok: false, error: `devices[${i}].mac "${dev.mac}" is a duplicate` };
    ids.add(dev.id);
    usernames.add(dev.username);
    if (dev.mac !== undefined) macs.add(dev.mac);
    devices.push(toDeviceRecord(dev));
  }
  const bindings: BindingRecord[] = [];
  for (const [i, b] of v.bindings.entries()) {
    const reason = checkBinding(b, `bindings[${i}]`);
    if (reason) return { ok: false, error: reason };
    const rec = b as BindingRecord;
    if (!ids.has(rec.deviceId)) return { ok: false, error: `bindings[${i}].deviceId "${rec.deviceId}" names no device` };
    bindings.push(toBindingRecord(rec));
  }
  const meta = v.meta;
  const metaReason = checkIso(meta.createdAt) ? `meta.createdAt ${checkIso(meta.createdAt)}` : meta.siteId !== undefined && typeof meta.siteId !== "string" ? "meta.siteId must be a string" : null;
  if (metaReason) return { ok: false, error: metaReason };
  const evenly = Object.create(null) as Record<string, Record<string, number>>;
  for (const [group, members] of Object.entries(v.routing.evenlyLastOffered)) {
    if (!isPlainObject(members)) return { ok: false, error: `routing.evenlyLastOffered["${group}"] must be an object` };
    const copy = Object.create(null) as Record<string, number>;
    for (const [member, at] of Object.entries(members)) {
      if (!Number.isFinite(at)) return { ok: false, error: `routing.evenlyLastOffered["${group}"]["${member}"] must be epoch milliseconds` };
      copy[member] = at as number;
    }
    evenly[group] = copy;
  }
  const outMeta: StoreMeta = { createdAt: meta.createdAt as string };
  if (typeof meta.siteId === "string") outMeta.siteId = meta.siteId;
  let site: SiteRecord | null = null;
  if (v.site !== null) {
    const r = checkSiteRecord(v.site, "site");
    if (!r.ok) return { ok: false, error: r.error };
    site = r.value;
  }
  const seenPhones: SeenPhone[] = [];
  const seenMacs = new Set<string>();
  for (const [i, p] of v.seenPhones.entries()) {
    const reason = checkSeenPhone(p, `seenPhones[${i}]`);
    if (reason) return { ok: false, error: reason };
    const phone = p as SeenPhone;
    if (seenMacs.has(phone.mac)) return { ok: false, error: `seenPhones[${i}].mac "${phone.mac}" is a duplicate` };
    seenMacs.add(phone.mac);
    seenPhones.push(toSeenPhone(phone));
  }
  const callLog: CallRecord[] = [];
  for (const [i, c] of v.callLog.entries()) {
    const reason = checkCallRecord(c, `callLog[${i}]`);
    if (reason) return { ok: false, error: reason };
    callLog.push(toCallRecord(c as CallRecord));
  }
  const data: StoreData = { devices, bindings, meta: outMeta, routing: { evenlyLastOffered: evenly }, site, seenPhones, callLog };
  if (v.authSources !== undefined) {
    if (!Array.isArray(v.authSources)) return { ok: false, error: "data.authSources must be an array" };
    const perDevice = new Map<string, number>();
    const authSources: AuthSourceRecord[] = [];
    for (const [i, a] of v.authSources.entries()) {
      const reason = checkAuthSource(a, `authSources[${i}]`);
      if (reason) return { ok: false, error: reason };
      const rec = a as AuthSourceRecord;
      if (!ids.has(rec.deviceId)) return { ok: false, error: `authSources[${i}].deviceId "${rec.deviceId}" names no device` };
      const n = (perDevice.get(rec.deviceId) ?? 0) + 1;
      if (n > MAX_AUTH_SOURCES_PER_DEVICE) return { ok: false, error: `authSources has more than ${MAX_AUTH_SOURCES_PER_DEVICE} entries for device "${rec.deviceId}"` };
      perDevice.set(rec.deviceId, n);
      authSources.push({ deviceId: rec.deviceId, address: rec.address, transport: rec.transport, at: rec.at });
    }
    data.authSources = authSources;
  }
  if (v.operators !== undefined) {
    if (!Array.isArray(v.operators)) return { ok: false, error: "data.operators must be an array" };
    const seen = new Set<string>();
    const operators: OperatorState[] = [];
    for (const [i, o] of v.operators.entries()) {
      const reason = checkOperatorState(o, `operators[${i}]`);
      if (reason) return { ok: false, error: reason };
      const rec = o as OperatorState;
      if (seen.has(rec.userId)) return { ok: false, error: `operators[${i}].userId "${rec.userId}" is a duplicate` };
      seen.add(rec.userId);
      operators.push(toOperatorState(rec));
    }
    data.operators = operators;
  }
  return { ok: true, data };
}
