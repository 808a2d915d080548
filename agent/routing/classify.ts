// Who is calling and where to: the pure part of admitting a new INVITE (issue 3 "Routing",
// toll-fraud rules: docs/architecture.md, routing engine). No sockets, no clock, no store.
//
// Decisions:
// - The caller is judged by where the request came from, never by From (anyone can write
//   any From): a registered device's flow (same transport, address and port as one of its
//   bindings), one of the trunk's configured source addresses, or digest credentials checked
//   by the engine (407 challenge). Everything else is "unknown" and gets challenged.
// - The target is the Request-URI user part (RFC 3261 §16.5: the Request-URI, not To, says
//   where a request goes). A group number rings the group, a user's extension rings the user,
//   the pickup code (alone or followed by an extension) is a pickup, an operator-state code
//   (operator-state.ts) changes the caller's own state, any other dial string goes
//   to the trunk; the voicemail code (alone or with a mailbox's number) is listening to voicemail.
//   Only digits, "*", "#" and a leading "+" are dialable.
// - Authorization: trunk callers reach local numbers only (groups and users); only local
//   devices reach the trunk or use pickup and state codes (a device with an operator); a request where neither side is local is refused
//   with 403 "Not relaying" (open-relay / toll-fraud rule). A device known only by its UDP
//   flow must also prove its password before reaching the trunk (engine.ts, 407).
import type { Flow } from "../sip/types.ts";
import { parseUri, unescapeUser } from "../sip/uri.ts";
import type { DeviceRef, Group, SiteIndex, User } from "./model.ts";
import type { InboundRoute } from "./menu-model.ts";
import { parsePickupCode, type PickupRequest } from "./plan.ts";
import { parseOperatorCode, type FeatureCodes, type OperatorCode } from "./operator-state.ts";

/** The outbound gateway ("trunk") as site settings describe it. */
export interface TrunkSettings {
  /** IP literal of the gateway (never resolved through DNS). */
  host: string;
  port: number;
  transport: "udp" | "tcp";
  /** Source IPs INVITEs from the trunk may come from. */
  allowedSources: readonly string[];
  /**
   * Trunk dial prefix. Outbound: put before every number sent to the trunk. Inbound: the trunk
   * puts it before our internal numbers, so it is stripped when what follows is local.
   */
  prefix?: string;
}

export type Caller =
  /** A known device: from a registered flow, or proven by digest credentials. */
  | { kind: "device"; deviceId: string; username: string; userId: string | undefined; proof: "flow" | "digest" }
  /** From one of the trunk's allowed source addresses. */
  | { kind: "trunk" }
  /** Not known yet: the engine challenges with 407. */
  | { kind: "unknown" };

export type Destination =
  | { kind: "group"; group: Group }
  | { kind: "user"; user: User }
  | { kind: "pickup"; request: PickupRequest }
  /** An operator-state feature code (away, DND, log in / out; operator-state.ts), possibly malformed. */
  | { kind: "operator"; code: OperatorCode }
  /** The voicemail code (settings voicemailCode), alone or followed by a mailbox's number (voicemail/access.ts). */
  | { kind: "voicemail"; selector: string }
  /** Anything else dialable: goes to the trunk. */
  | { kind: "outbound"; number: string }
  /** Not a number we route (no user part, letters, an unknown scheme). */
  | { kind: "unroutable"; reason: string };

/** Longest dial string accepted (E.164 is 15 digits; room for prefixes and feature codes). */
export const MAX_DIAL_LENGTH = 32;
const DIALABLE_RE = /^\+?[0-9*#]{1,32}$/;

/** "transport|address|port" — how bindings and sources are matched. */
export function flowKey(transport: string, address: string, port: number): string {
  return `${transport}|${normalizeAddress(address)}|${port}`;
}

/** IPv4-mapped IPv6 ("::ffff:10.0.0.1") compares equal to the IPv4 address; IPv6 without case. */
export function normalizeAddress(address: string): string {
  const a = address.toLowerCase();
  return a.startsWith("::ffff:") && a.includes(".") ? a.slice(7) : a;
}

export interface ClassifyInput {
  flow: Flow;
  /** Device id whose binding has exactly this flow's transport, address and port, if any. */
  deviceByFlow: (key: string) => { deviceId: string; username: string } | undefined;
  trunk: TrunkSettings | undefined;
  /** Owner (user id) of a device, from the site index. */
  ownerOf: (deviceId: string) => string | undefined;
}

/** Judges the source of an INVITE. A device flow wins over a trunk address (phones behind the same NAT). */
export function classifyCaller(input: ClassifyInput): Caller {
  const { flow } = input;
  const hit = input.deviceByFlow(flowKey(flow.transport, flow.remoteAddress, flow.remotePort));
  if (hit !== undefined) return { kind: "device", deviceId: hit.deviceId, username: hit.username, userId: input.ownerOf(hit.deviceId), proof: "flow" };
  if (input.trunk !== undefined && isTrunkSource(input.trunk, flow.remoteAddress)) return { kind: "trunk" };
  return { kind: "unknown" };
}

export function isTrunkSource(trunk: TrunkSettings, address: string): boolean {
  const a = normalizeAddress(address);
  for (const s of trunk.allowedSources) if (normalizeAddress(s) === a) return true;
  return false;
}

/**
 * Reads the Request-URI into a destination. Never throws on hostile input. `inboundPrefix`
 * (the trunk's prefix, for calls from the trunk) is stripped when the rest is a local number.
 */
export function resolveDestination(requestUri: string, index: SiteIndex, pickupCode: string, inboundPrefix?: string, featureCodes?: Partial<FeatureCodes>, voicemailCode?: string): Destination {
  const ds = dialString(requestUri);
  if (!ds.ok) return { kind: "unroutable", reason: ds.reason };
  let dialled = ds.dialled;
  if (inboundPrefix !== undefined && inboundPrefix.length > 0 && dialled.length > inboundPrefix.length && dialled.startsWith(inboundPrefix)) {
    const rest = dialled.slice(inboundPrefix.length);
    if (index.groupsByNumber.has(rest) || index.usersByExtension.has(rest)) dialled = rest;
  }
  const group = index.groupsByNumber.get(dialled);
  if (group !== undefined) return { kind: "group", group };
  const user = index.usersByExtension.get(dialled);
  if (user !== undefined) return { kind: "user", user };
  if (voicemailCode !== undefined && voicemailCode.length > 0 && dialled.startsWith(voicemailCode)) return { kind: "voicemail", selector: dialled.slice(voicemailCode.length) };
  const pickup = parsePickupCode(dialled, pickupCode);
  if (pickup !== undefined) return { kind: "pickup", request: pickup };
  const code = parseOperatorCode(dialled, featureCodes);
  if (code !== undefined) return { kind: "operator", code };
  if (DIALABLE_RE.test(dialled)) return { kind: "outbound", number: dialled };
  return { kind: "unroutable", reason: "not a number" };
}

/** The Request-URI's user part as dialled (unescaped, tel: separators removed, bounded), or why there is none. */
export function dialString(requestUri: string): { ok: true; dialled: string } | { ok: false; reason: string } {
  const uri = parseUri(requestUri);
  if (uri === undefined) return { ok: false, reason: "unparsable Request-URI" };
  if (uri.scheme !== "sip" && uri.scheme !== "sips" && uri.scheme !== "tel") return { ok: false, reason: `scheme ${uri.scheme}` };
  if (uri.user === undefined || uri.user.length === 0) return { ok: false, reason: "no user part" };
  let dialled: string;
  try {
    dialled = unescapeUser(uri.user);
  } catch {
    return { ok: false, reason: "bad escape in user part" };
  }
  // tel: visual separators (RFC 3966 §5.1.1) mean nothing to routing.
  if (uri.scheme === "tel") dialled = dialled.replace(/[-.()]/g, "");
  if (dialled.length > MAX_DIAL_LENGTH) return { ok: false, reason: "dial string too long" };
  return { ok: true, dialled };
}

/**
 * The greeting a trunk call gets (docs/menus.md): the inbound route of the number it calls (as
 * sent, or after the trunk prefix); else, when that number is no local group or extension, the
 * site's default route; else none (the call goes to the group or user as before).
 */
export function inboundRoute(requestUri: string, index: SiteIndex, inboundPrefix: string | undefined, dest: Destination): InboundRoute | undefined {
  const m = index.menus;
  if (m === undefined) return undefined;
  const ds = dialString(requestUri);
  if (ds.ok) {
    const d = ds.dialled;
    const hit = m.inboundByNumber.get(d) ?? (inboundPrefix !== undefined && inboundPrefix.length > 0 && d.length > inboundPrefix.length && d.startsWith(inboundPrefix) ? m.inboundByNumber.get(d.slice(inboundPrefix.length)) : undefined);
    if (hit !== undefined) return hit;
  }
  if (dest.kind === "group" || dest.kind === "user") return undefined;
  return m.defaultInbound;
}

export type Admission = { ok: true } | { ok: false; status: number; reason: string };

/**
 * The toll-fraud rules for a caller already known (device or trunk). Unknown callers never get
 * here: the engine challenges them first.
 */
export function admit(caller: Caller, dest: Destination): Admission {
  if (dest.kind === "unroutable") return { ok: false, status: 404, reason: "Not Found" };
  if (caller.kind === "unknown") return { ok: false, status: 407, reason: "Proxy Authentication Required" };
  const local = dest.kind === "group" || dest.kind === "user";
  if (caller.kind === "trunk") {
    // From outside, only what is ours: neither side local is an open relay.
    return local ? { ok: true } : { ok: false, status: 403, reason: "Not relaying" };
  }
  if ((dest.kind === "pickup" || dest.kind === "operator" || dest.kind === "voicemail") && caller.userId === undefined) {
    // Pickup hands a call to a person, a state code changes one; a device without an owner is nobody's.
    return { ok: false, status: 403, reason: "Forbidden (device has no operator)" };
  }
  return { ok: true };
}

/** Device id → its DeviceRef, built once per SiteIndex (the index is immutable per push). */
const ownerIndexes = new WeakMap<SiteIndex, Map<string, DeviceRef>>();

export function deviceRef(index: SiteIndex, deviceId: string): DeviceRef | undefined {
  let m = ownerIndexes.get(index);
  if (m === undefined) {
    m = new Map();
    for (const list of index.devicesByOwner.values()) for (const d of list) m.set(d.id, d);
    ownerIndexes.set(index, m);
  }
  return m.get(deviceId);
}

/** Trunk Request-URI for a number: sip:<prefix><number>@host:port;transport=... */
export function trunkUri(trunk: TrunkSettings, number: string): string {
  const host = trunk.host.includes(":") ? `[${trunk.host}]` : trunk.host;
  const user = `${trunk.prefix ?? ""}${number}`.replace(/#/g, "%23");
  return `sip:${user}@${host}:${trunk.port}${trunk.transport === "tcp" ? ";transport=tcp" : ""}`;
}

/** Whether a host is an IP literal (we never resolve names: issue 3 / test rules). */
export function isIpLiteral(host: string): boolean {
  const h = host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
  return /^\d{1,3}(?:\.\d{1,3}){3}$/.test(h) || (h.includes(":") && /^[0-9a-fA-F:.]+$/.test(h));
}

/**
 * Where a voicemail URI goes: a sip: URI with an IP literal host is reached directly;
 * anything else (tel:, a host name) goes through the trunk with the URI as Request-URI.
 */
export function voicemailRoute(uriText: string): { direct: true; host: string; port: number; transport: "udp" | "tcp" } | { direct: false; number: string | undefined } {
  const uri = parseUri(uriText);
  if (uri !== undefined && (uri.scheme === "sip" || uri.scheme === "sips") && isIpLiteral(uri.host)) {
    const host = uri.host.startsWith("[") ? uri.host.slice(1, -1) : uri.host;
    const t = uri.params.get("transport")?.toLowerCase() === "tcp" ? "tcp" : "udp";
    return { direct: true, host, port: uri.port ?? 5060, transport: t };
  }
  return { direct: false, number: uri?.user };
}
