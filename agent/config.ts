// The agent's settings: built-in defaults < settings file (JSON) < environment (RINGEDGE_*) <
// overrides (command-line flags). Every setting is declared once in SPECS (type, default,
// meaning); parsing, validation, error messages and the README table all come from it.
//
// The settings file is JSON, e.g. /etc/ringedge/ringedge.conf.json given with --config or
// RINGEDGE_CONFIG; without either, /etc/ringedge/ringedge.conf.json is read if it exists. (Not to be
// confused with the data store <dataDir>/ringedge.json, which the agent writes itself.)
import * as fs from "node:fs";
import * as net from "node:net";
import type { LogLevel } from "./log.ts";

export const DEFAULT_CONFIG_PATH = "/etc/ringedge/ringedge.conf.json";
export const CONFIG_ENV = "RINGEDGE_CONFIG";
const ENV_PREFIX = "RINGEDGE_";

export type SipTransportName = "udp" | "tcp";
/** How log records are written: one "time level scope message k=v" line, or one JSON object per line. */
export type LogFormat = "text" | "json";
/** RFC 8760 §2 algorithm names, in the order challenges offer them. */
export type AuthAlgorithm = "SHA-256" | "SHA-512-256" | "MD5";

export interface Settings {
  dataDir: string;
  sipListen: string[];
  sipTransports: SipTransportName[];
  sipAdvertise: string;
  storeSaveDelayMs: number;
  httpListen: string;
  httpsListen: string;
  httpsCert: string;
  httpsKey: string;
  firmwareDir: string;
  provisioningBootstrapWindowS: number;
  provisioningDeviceCertVendors: string[];
  provisioningDeviceCaDir: string;
  pnpEnabled: boolean;
  pnpInterface: string;
  pnpPort: number;
  mqttUrl: string;
  mqttUsername: string;
  mqttPassword: string;
  mqttCa: string;
  mqttCert: string;
  mqttKey: string;
  mqttClientId: string;
  statsIntervalS: number;
  outboxMax: number;
  siteId: string;
  siteFile: string;
  realm: string;
  minExpires: number;
  maxExpires: number;
  defaultExpires: number;
  keepaliveIntervalS: number;
  keepaliveMisses: number;
  sipT1Ms: number;
  ringUnitMs: number;
  latencyBudgetMs: number;
  cpuWakeLatencyUs: number;
  nonceTtlS: number;
  logLevel: LogLevel;
  authAlgorithms: AuthAlgorithm[];
  maxMessageBytes: number;
  maxHeaders: number;
  tcpMaxConnections: number;
  tcpMaxConnectionsPerAddress: number;
  tcpMessageTimeoutMs: number;
  tcpIdleTimeoutS: number;
  guardSourceMaxFailures: number;
  guardAccountMaxFailures: number;
  guardWindowS: number;
  guardBanS: number;
  guardRequestRateMax: number;
  guardRequestRateWindowS: number;
  guardSourceRatePerS: number;
  guardSourceBurst: number;
  guardSourceMaxTransactions: number;
  guardFloodBanS: number;
  guardAllowlist: string[];
  overloadLoopBusyPct: number;
  overloadLagMs: number;
  overloadQueueDelayMs: number;
  overloadMaxCallsSetup: number;
  overloadMaxServerTransactions: number;
  overloadClearPct: number;
  overloadRetryAfterS: number;
  subscribeMaxPerDevice: number;
  subscribeRateMax: number;
  subscribeRateWindowS: number;
  subscribeMinExpires: number;
  subscribeMaxExpires: number;
  voicemailCode: string;
  drainTimeoutS: number;
  drainRetryAfterS: number;
  healthOverBudgetPct: number;
  serialDevice: string;
  serialBaud: number;
  serialPassword: string;
  serialLockoutFailures: number;
  serialLockoutS: number;
  serialIdleTimeoutS: number;
  metricsEnabled: boolean;
  metricsListen: string;
  statusPageEnabled: boolean;
  statusPageListen: string;
  logFormat: LogFormat;
  mediaPorts: string;
  mediaAddress: string;
  queueMusic: boolean;
  queueMusicFile: string;
  queueAnnouncement: boolean;
  queueAnnouncementIntervalS: number;
  queueAnnouncePosition: boolean;
}

export type SettingName = keyof Settings;
export type SettingSource = "default" | "file" | "env" | "override";

export class SettingsError extends Error {
  constructor(
    message: string,
    /** The setting concerned, when there is one. */
    readonly setting: string | undefined,
    readonly source: SettingSource,
    /** The env var name or the file path. */
    readonly origin: string,
    readonly reason: string,
  ) {
    super(message);
    this.name = "SettingsError";
  }
}

// ---------------------------------------------------------------------------------------------
// host:port

export interface HostPort {
  /** IPv6 without brackets. */
  host: string;
  port: number;
  family: 4 | 6;
}

export type HostPortResult = { ok: true; value: HostPort } | { ok: false; reason: string };

const PORT_RE = /^(0|[1-9][0-9]{0,4})$/;

/**
 * Parses "192.0.2.1:5060" or "[2001:db8::1]:5060". Hosts must be IP literals: a listen address
 * is never resolved through DNS. Port 0 (OS chooses) only with allowPortZero. Never throws.
 */
export function tryParseHostPort(s: unknown, opts: { allowPortZero?: boolean } = {}): HostPortResult {
  const bad = (why: string): HostPortResult => ({ ok: false, reason: `is not a valid host:port (${why})` });
  if (typeof s !== "string") return { ok: false, reason: "is not a string" };
  let host: string;
  let portText: string;
  if (s.startsWith("[")) {
    const close = s.indexOf("]");
    if (close < 0) return bad("missing ']' after the IPv6 address");
    host = s.slice(1, close);
    if (s[close + 1] !== ":") return bad("missing :port after ']'");
    portText = s.slice(close + 2);
    if (!net.isIPv6(host)) return bad(`"${host}" is not an IPv6 address`);
  } else {
    const colon = s.lastIndexOf(":");
    if (colon < 0) return bad("missing :port");
    host = s.slice(0, colon);
    portText = s.slice(colon + 1);
    if (host.includes(":")) return bad("write IPv6 addresses in brackets, e.g. [::1]:5060");
    if (!net.isIPv4(host)) return bad(host === "" ? "missing host" : `host must be an IPv4 address or a bracketed IPv6 address; names are not resolved`);
  }
  const min = opts.allowPortZero ? 0 : 1;
  const portRange = `port must be ${min}-65535${opts.allowPortZero ? "; 0 lets the OS choose" : ""}`;
  if (!PORT_RE.test(portText)) return bad(portText === "" ? "missing port number" : portRange);
  const port = Number(portText);
  if (port < min || port > 65535) return bad(portRange);
  return { ok: true, value: { host, port, family: net.isIPv6(host) ? 6 : 4 } };
}

/** Throwing form for values already validated by loadSettings (e.g. settings.sipListen items). */
export function parseHostPort(s: string, opts: { allowPortZero?: boolean } = { allowPortZero: true }): HostPort {
  const r = tryParseHostPort(s, opts);
  if (!r.ok) throw new SettingsError(`${JSON.stringify(s)} ${r.reason}`, undefined, "override", "parseHostPort", r.reason);
  return r.value;
}

// ---------------------------------------------------------------------------------------------
// Value codecs: how a setting's type reads from an env string and from a JSON value.

/** A failure: `shown` is the offending value (or list item) as the person wrote it. */
type Parsed<T> = { ok: true; value: T } | { ok: false; shown: unknown; reason: string; index?: number };

interface Codec<T> {
  /** Type as shown in the docs. */
  type: string;
  fromEnv(raw: string): Parsed<T>;
  /** Also used for overrides (typed values from flags): same rules as the file. */
  fromJson(v: unknown): Parsed<T>;
  /** The value as written in docs (env form). */
  show(v: T): string;
}

const ok = <T>(value: T): Parsed<T> => ({ ok: true, value });
const no = <T>(shown: unknown, reason: string): Parsed<T> => ({ ok: false, shown, reason });

function stringCodec(type: string, check: (s: string) => string | null): Codec<string> {
  const parse = (s: string): Parsed<string> => {
    const why = check(s);
    return why ? no(s, why) : ok(s);
  };
  return {
    type,
    fromEnv: parse,
    fromJson: (v) => (typeof v === "string" ? parse(v) : no(v, "must be a string")),
    show: (v) => v,
  };
}

const INT_RE = /^-?(0|[1-9][0-9]*)$/;

function intCodec(min: number, max: number): Codec<number> {
  const range = (n: number, shown: unknown): Parsed<number> => (n >= min && n <= max ? ok(n) : no(shown, `is out of range (must be ${min}-${max})`));
  return {
    type: `integer ${min}-${max}`,
    fromEnv: (raw) => (INT_RE.test(raw) && Number.isSafeInteger(Number(raw)) ? range(Number(raw), raw) : no(raw, "is not an integer")),
    fromJson: (v) => (typeof v === "number" && Number.isSafeInteger(v) ? range(v, v) : no(v, "must be an integer number")),
    show: (v) => String(v),
  };
}

function enumCodec<T extends string>(values: readonly T[]): Codec<T> {
  // Case-insensitive on input (operators type "sha-256"), canonical spelling on output.
  const parse = (s: string): Parsed<T> => {
    const hit = values.find((v) => v.toLowerCase() === s.toLowerCase());
    return hit !== undefined ? ok(hit) : no(s, `must be one of ${values.join(", ")}`);
  };
  return {
    type: values.join(" | "),
    fromEnv: parse,
    fromJson: (v) => (typeof v === "string" ? parse(v) : no(v, "must be a string")),
    show: (v) => v,
  };
}

function hostPortCodec(allowPortZero: boolean): Codec<string> {
  const parse = (s: string): Parsed<string> => {
    const r = tryParseHostPort(s, { allowPortZero });
    return r.ok ? ok(s) : no(s, r.reason);
  };
  return { type: "host:port", fromEnv: parse, fromJson: (v) => (typeof v === "string" ? parse(v) : no(v, "must be a string")), show: (v) => v };
}

/** Env form: comma-separated; JSON form: an array. */
function listCodec<T>(item: Codec<T>, opts: { minItems: number; unique: boolean }): Codec<T[]> {
  const items = (list: unknown[], fromEnv: boolean): Parsed<T[]> => {
    if (list.length < opts.minItems) return no(fromEnv ? list.join(",") : list, opts.minItems === 1 ? "must name at least one item" : `must have at least ${opts.minItems} items`);
    const out: T[] = [];
    for (const [i, raw] of list.entries()) {
      if (fromEnv && raw === "") return { ok: false, shown: list.join(","), reason: "has an empty item (check the commas)" };
      const r = fromEnv ? item.fromEnv(raw as string) : item.fromJson(raw);
      if (!r.ok) return { ...r, index: i };
      if (opts.unique && out.includes(r.value)) return { ok: false, shown: raw, reason: "is listed twice", index: i };
      out.push(r.value);
    }
    return ok(out);
  };
  return {
    type: `list of ${item.type}`,
    fromEnv: (raw) => (raw.trim() === "" ? items([], true) : items(raw.split(",").map((s) => s.trim()), true)),
    fromJson: (v) => (Array.isArray(v) ? items(v, false) : no(v, "must be a JSON array")),
    show: (v) => v.map((x) => item.show(x)).join(","),
  };
}

const MQTT_SCHEMES = ["mqtt:", "mqtts:", "ws:", "wss:"];

/** URLs may carry a password: never echo it back in an error. */
function redactUrl(s: string): string {
  return s.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^@/]*@/i, "$1***@");
}

const mqttUrlCodec: Codec<string> = (() => {
  const parse = (s: string): Parsed<string> => {
    if (s === "") return ok(s);
    let u: URL;
    try {
      u = new URL(s);
    } catch {
      return no(redactUrl(s), "is not a URL (e.g. mqtt://192.0.2.5:1883 or mqtts://console.example:8883)");
    }
    if (!MQTT_SCHEMES.includes(u.protocol)) return no(redactUrl(s), `must use one of the schemes ${MQTT_SCHEMES.map((x) => x.slice(0, -1)).join(", ")}`);
    if (u.hostname === "") return no(redactUrl(s), "has no host");
    return ok(s);
  };
  return { type: 'URL or ""', fromEnv: parse, fromJson: (v) => (typeof v === "string" ? parse(v) : no(v, "must be a string")), show: (v) => redactUrl(v) };
})();

const SITE_ID_RE = /^[a-z0-9-]{1,64}$/;

/** true/false (env also 1/0, yes/no, on/off). */
const boolCodec: Codec<boolean> = (() => {
  const parse = (s: string): Parsed<boolean> => {
    const v = s.trim().toLowerCase();
    if (["true", "1", "yes", "on"].includes(v)) return ok(true);
    if (["false", "0", "no", "off"].includes(v)) return ok(false);
    return no(s, "must be true or false");
  };
  return { type: "boolean", fromEnv: parse, fromJson: (v) => (typeof v === "boolean" ? ok(v) : no(v, "must be true or false")), show: (v) => String(v) };
})();
const optionalHostPortCodec = stringCodec('host:port or ""', (s) => (s === "" ? null : (() => { const r = tryParseHostPort(s, { allowPortZero: true }); return r.ok ? null : r.reason; })()));
/** "20000-20999": RTP/RTCP port pairs (even RTP port, RTCP the next odd one: RFC 3550 §11). */
export function parsePortRange(s: string): { ok: true; min: number; max: number } | { ok: false; reason: string } {
  const m = /^([0-9]{1,5})-([0-9]{1,5})$/.exec(s.trim());
  if (m === null) return { ok: false, reason: "is not a port range like 20000-20999" };
  const min = Number(m[1]);
  const max = Number(m[2]);
  if (min < 1024 || max > 65535) return { ok: false, reason: "must lie within 1024-65535" };
  if (min % 2 !== 0) return { ok: false, reason: "must start on an even port (RTP even, RTCP odd: RFC 3550 §11)" };
  if (max < min + 1) return { ok: false, reason: "must hold at least one even/odd port pair" };
  return { ok: true, min, max };
}
const portRangeCodec = stringCodec("port range", (s) => {
  const r = parsePortRange(s);
  return r.ok ? null : r.reason;
});
const pathCodec = stringCodec('path or ""', (s) => (s.includes("\0") ? "must not contain NUL" : null));
const ipCodec = stringCodec("IP address", (s) => (net.isIP(s) ? null : "is not an IP address"));

// ---------------------------------------------------------------------------------------------
// The table.

interface Spec<T> {
  codec: Codec<T>;
  default: T;
  /** Default computed from the other settings when nothing sets this one (realm = siteId). */
  derive?: (s: Settings) => T;
  /** Shown instead of the default value in docs when derived. */
  defaultDoc?: string;
  doc: string;
}

type Specs = { [K in SettingName]: Spec<Settings[K]> };

const LOG_LEVELS: readonly LogLevel[] = ["debug", "info", "warn", "error", "silent"];

const SPECS: Specs = {
  dataDir: {
    codec: stringCodec("path", (s) => (s === "" ? "must not be empty" : s.includes("\0") ? "must not contain NUL" : null)),
    default: "./data",
    doc: "Directory of the data store (ringedge.json: devices, SIP passwords, bindings) and the control socket. Relative to the working directory.",
  },
  sipListen: {
    codec: listCodec(hostPortCodec(false), { minItems: 1, unique: true }),
    default: ["0.0.0.0:5060"],
    doc: "SIP listen addresses; each opens every transport in sipTransports. IPv6 as [::1]:5060.",
  },
  sipTransports: {
    codec: listCodec(enumCodec<SipTransportName>(["udp", "tcp"]), { minItems: 1, unique: true }),
    default: ["udp", "tcp"],
    doc: "SIP transports opened on each sipListen address (RFC 3261 §18: UDP and TCP are mandatory).",
  },
  storeSaveDelayMs: {
    codec: intCodec(10, 10_000),
    default: 500,
    doc: "Write-behind window of the store, ms: bindings, call records and rotation state reach the disk at most this long after they change (one save per window, off the call path). Installer and console changes are saved at once.",
  },
  sipAdvertise: {
    codec: stringCodec('IP address or ""', (v) => (v === "" || net.isIP(v) ? null : "is not an IP address")),
    default: "",
    doc: "Address put in Via, Record-Route and Contact, and in the provisioning URLs phones are given (`phone show`, PnP, `provision dhcp-hints`, `status`), when listening on a wildcard (0.0.0.0 / ::). \"\": the first non-loopback address of this host.",
  },
  httpListen: {
    codec: hostPortCodec(true),
    default: "0.0.0.0:8080",
    doc: "Phone provisioning HTTP server address (port 0: the OS chooses, for tests). Phones find it through DHCP option 66 (`ringedge provision dhcp-hints`) or SIP PnP.",
  },
  httpsListen: {
    codec: optionalHostPortCodec,
    default: "",
    doc: 'Phone provisioning HTTPS server address ("" = off); needs httpsCert and httpsKey.',
  },
  httpsCert: {
    codec: pathCodec,
    default: "",
    doc: "PEM certificate (chain) of the provisioning HTTPS server.",
  },
  httpsKey: {
    codec: pathCodec,
    default: "",
    doc: "PEM private key of httpsCert.",
  },
  firmwareDir: {
    codec: pathCodec,
    default: "",
    doc: 'Directory of phone firmware images served under /firmware/<file>, with optional pins.json ({"<vendor>/<model>": {"file", "version"}}) overriding the profiles\' pinned versions ("" = no firmware served). Configs name only images present here.',
  },
  provisioningBootstrapWindowS: {
    codec: intCodec(60, 30 * 86_400),
    default: 1800,
    doc: "How long after an installer adds, adopts or rebootstraps a phone it may fetch its one-time bootstrap config (provisioning credentials, no SIP password) without authenticating (trust on first use); for that long after a client takes it, a second client asking for the phone's config is refused and the phone's credentials are rotated. Plug the phone in right after adding it.",
  },
  provisioningDeviceCertVendors: {
    codec: listCodec(stringCodec("vendor id", (v) => (/^[a-z][a-z0-9-]{1,31}$/.test(v) ? null : "is not a vendor id")), { minItems: 0, unique: true }),
    default: [],
    doc: "Vendors whose phones must present their factory device certificate over HTTPS to be served (profiles with deviceCertificate: yealink, poly, cisco); checked against the CAs in provisioningDeviceCaDir, and it must name the phone's MAC. Needs httpsListen.",
  },
  provisioningDeviceCaDir: {
    codec: pathCodec,
    default: "",
    doc: "Directory of the vendors' device CA certificates (PEM): <dir>/<vendor>.pem and/or PEM files in <dir>/<vendor>/, for provisioningDeviceCertVendors.",
  },
  pnpEnabled: {
    codec: boolCodec,
    default: false,
    doc: "Answer SIP PnP ua-profile SUBSCRIBEs multicast to 224.0.1.75 on pnpInterface with the provisioning URL. Off by default: any PnP responder on the LAN can steer phones.",
  },
  pnpInterface: {
    codec: stringCodec('IPv4 address or ""', (s) => (s === "" || net.isIPv4(s) ? null : "must be the IPv4 address of the interface")),
    default: "",
    doc: "IPv4 address of the interface PnP listens on (joins 224.0.1.75 there); required with pnpEnabled.",
  },
  pnpPort: {
    codec: intCodec(1, 65535),
    default: 5060,
    doc: "UDP port of SIP PnP (5060 on real networks; tests use another).",
  },
  mqttUrl: {
    codec: mqttUrlCodec,
    default: "",
    doc: 'Broker of the central console (mqtt://, mqtts://, ws://, wss://); "" runs the site without a console.',
  },
  mqttUsername: {
    codec: stringCodec("string", (s) => (s.length > 256 ? "must be at most 256 characters" : null)),
    default: "",
    doc: 'MQTT username ("" = none). With client certificates, brokers usually take the certificate CN instead (Mosquitto use_identity_as_username).',
  },
  mqttPassword: {
    codec: stringCodec("string", (s) => (s.length > 1024 ? "must be at most 1024 characters" : null)),
    default: "",
    doc: 'MQTT password ("" = none). Prefer the environment variable over the settings file.',
  },
  mqttCa: {
    codec: stringCodec("path", (s) => (s.includes("\0") ? "must not contain NUL" : null)),
    default: "",
    doc: 'PEM file of the CA that signed the broker certificate, for mqtts:// and wss:// ("" = the system CAs).',
  },
  mqttCert: {
    codec: stringCodec("path", (s) => (s.includes("\0") ? "must not contain NUL" : null)),
    default: "",
    doc: 'PEM client certificate for mutual TLS (CN = siteId, so the broker ACL confines the site) ("" = none).',
  },
  mqttKey: {
    codec: stringCodec("path", (s) => (s.includes("\0") ? "must not contain NUL" : null)),
    default: "",
    doc: 'PEM private key of mqttCert ("" = none).',
  },
  mqttClientId: {
    codec: stringCodec("string", (s) => (s.length > 128 ? "must be at most 128 characters" : /[\x00-\x1f]/.test(s) ? "must not contain control characters" : null)),
    default: "",
    doc: 'MQTT client id ("" = ringedge-<siteId>). Must be unique on the broker: two clients with one id take each other over endlessly.',
  },
  statsIntervalS: {
    codec: intCodec(1, 86_400),
    default: 60,
    doc: "Seconds between call statistics (per operator and group) published to the console.",
  },
  outboxMax: {
    codec: intCodec(1, 10_000_000),
    default: 100_000,
    doc: "Most undelivered console events kept on disk while the broker is unreachable; when full the oldest are dropped and replaced by one gap event (the console then resyncs).",
  },
  siteFile: {
    codec: stringCodec('path or ""', (s) => (s.includes("\0") ? "must not contain NUL" : null)),
    default: "",
    doc: 'Site file (JSON, contract $defs/siteConfig: users, devices, groups, settings; see docs/contract.md) applied at start-up; a bad file stops the start with every error listed by path. "" = none (the console or `ringedge site apply` configures the site).',
  },
  siteId: {
    codec: stringCodec("[a-z0-9-]{1,64}", (s) => (SITE_ID_RE.test(s) ? null : "must be 1-64 characters of a-z, 0-9 and -")),
    default: "site-1",
    doc: "This site's id in the console's topics and records.",
  },
  realm: {
    codec: stringCodec("string", (s) => (s === "" ? "must not be empty" : s.length > 128 ? "must be at most 128 characters" : /["\\\x00-\x1f\x7f]/.test(s) ? 'must not contain ", \\ or control characters' : null)),
    default: "",
    derive: (s) => s.siteId,
    defaultDoc: "= siteId",
    doc: "Digest authentication realm (RFC 3261 §22.1). Changing it invalidates cached credentials on phones.",
  },
  minExpires: {
    codec: intCodec(1, 86_400),
    default: 60,
    doc: "Shortest registration accepted, seconds; shorter requests get 423 Interval Too Brief (RFC 3261 §10.3 step 7).",
  },
  maxExpires: {
    codec: intCodec(1, 604_800),
    default: 3600,
    doc: "Longest registration granted, seconds; longer requests are shortened.",
  },
  defaultExpires: {
    codec: intCodec(1, 604_800),
    default: 3600,
    doc: "Registration length when a REGISTER names none, seconds. minExpires <= defaultExpires <= maxExpires.",
  },
  keepaliveIntervalS: {
    codec: intCodec(1, 3600),
    default: 30,
    doc: "Seconds between OPTIONS keep-alive probes to each registered phone.",
  },
  keepaliveMisses: {
    codec: intCodec(1, 100),
    default: 3,
    doc: "Unanswered keep-alives in a row after which a phone counts as offline.",
  },
  sipT1Ms: {
    codec: intCodec(50, 5000),
    default: 500,
    doc: "SIP timer T1 (RTT estimate), ms; every transaction timer derives from it (RFC 3261 §17.1.1.1: retransmissions at T1, 2*T1...; timeouts at 64*T1, so a keep-alive OPTIONS to a silent phone gives up after 64*T1). Lower it only on a LAN with a known short RTT, or in tests.",
  },
  ringUnitMs: {
    codec: intCodec(50, 60_000),
    default: 5000,
    doc: "Length of one ring, ms; a group's step rings ringCount × ringUnitMs (product reference: one ring is 5 s). Shorten it only in tests.",
  },
  latencyBudgetMs: {
    codec: intCodec(1, 10_000),
    default: 2,
    doc: "Budget for INVITE received → first forked INVITE sent, ms; calls over it are counted in `ringedge status`.",
  },
  cpuWakeLatencyUs: {
    codec: intCodec(-1, 1_000_000),
    default: -1,
    doc: "Linux PM QoS request held while the agent runs (/dev/cpu_dma_latency), µs: idle CPUs stay out of idle states slower to leave than this, so a call after a quiet spell does not start on a cold, deep-idle CPU. 0 = CPUs poll when idle (lowest latency; more power, and a VM's host sees its vCPUs busy). -1 = leave it to the system. Needs root or the udev rule in firmware-hooks/; without access the agent logs a warning and runs on. Read at start only.",
  },
  nonceTtlS: {
    codec: intCodec(5, 86_400),
    default: 300,
    doc: "Lifetime of a digest nonce, seconds; an older one gets stale=true (RFC 7616 §3.3).",
  },
  logLevel: {
    codec: enumCodec<LogLevel>(LOG_LEVELS),
    default: "info",
    doc: "Least severe log level written to stderr.",
  },
  authAlgorithms: {
    codec: listCodec(enumCodec<AuthAlgorithm>(["SHA-256", "SHA-512-256", "MD5"]), { minItems: 1, unique: true }),
    default: ["SHA-256", "MD5"],
    doc: "Digest algorithms offered, in order of preference (RFC 8760 §2.4: one challenge per algorithm). MD5 for older phones.",
  },
  maxMessageBytes: {
    codec: intCodec(1024, 1_048_576),
    default: 65535,
    doc: "Largest SIP message accepted, bytes; larger ones get 513 or are dropped (RFC 3261 §18.1.1).",
  },
  maxHeaders: {
    codec: intCodec(10, 1000),
    default: 100,
    doc: "Most header lines accepted in one SIP message.",
  },
  tcpMaxConnections: {
    codec: intCodec(1, 1_000_000),
    default: 4096,
    doc: "Open SIP TCP connections at most, in total; a new inbound one over it is closed at once (reset, nothing read) and counted in `ringedge status` (transport.tcpRefused). Keep it below the process's open-file limit. Read at start only.",
  },
  tcpMaxConnectionsPerAddress: {
    codec: intCodec(1, 1_000_000),
    default: 32,
    doc: "Inbound SIP TCP connections from one remote address at most; more are closed at once, so one source cannot take every connection. A phone keeps one connection (RFC 5626 flow); 32 lets a remote office with up to about 30 phones behind one NAT address connect, with room for a phone reconnecting while its old connection closes (raise it for larger sites behind one address). Read at start only.",
  },
  tcpMessageTimeoutMs: {
    codec: intCodec(100, 600_000),
    default: 10_000,
    doc: "A SIP message on a TCP connection must be complete (header block and Content-Length body) this long after its first byte, or the connection is closed; further bytes do not extend it (a slow-header flood cannot hold connections). Read at start only.",
  },
  tcpIdleTimeoutS: {
    codec: intCodec(1, 86_400),
    default: 900,
    doc: "A SIP TCP connection with no message and no CRLF keep-alive for this long is closed (phones ping every 30-120 s, RFC 5626 §4.4.1). Read at start only.",
  },
  guardSourceMaxFailures: {
    codec: intCodec(1, 10_000),
    default: 10,
    doc: "Authentication failures from one source address within guardWindowS that ban it silently.",
  },
  guardAccountMaxFailures: {
    codec: intCodec(1, 10_000),
    default: 20,
    doc: "Authentication failures for one account within guardWindowS that lock it against unknown sources.",
  },
  guardWindowS: {
    codec: intCodec(1, 86_400),
    default: 60,
    doc: "Sliding window for the failure counters, seconds.",
  },
  guardBanS: {
    codec: intCodec(1, 604_800),
    default: 300,
    doc: "Length of a source ban or account lock, seconds (Kamailio's ipban: 300).",
  },
  guardRequestRateMax: {
    codec: intCodec(1, 1_000_000),
    default: 100,
    doc: "REGISTER requests one source may send within guardRequestRateWindowS before it is ignored for guardBanS (Kamailio pike uses 16 per 2 s; phones behind one NAT need more).",
  },
  guardRequestRateWindowS: {
    codec: intCodec(1, 3600),
    default: 2,
    doc: "Window of the per-source request rate limit, seconds.",
  },
  guardSourceRatePerS: {
    codec: intCodec(1, 1_000_000),
    default: 100,
    doc: "New SIP requests of any method one source address may start per second, sustained; beyond its burst the rest are dropped silently before any transaction exists (retransmissions do not count).",
  },
  guardSourceBurst: {
    codec: intCodec(1, 1_000_000),
    default: 400,
    doc: "New SIP requests one source may start at once above guardSourceRatePerS (a phone booting with many BLF keys subscribes in one go).",
  },
  guardSourceMaxTransactions: {
    codec: intCodec(1, 1_000_000),
    default: 2000,
    doc: "SIP server transactions one source address may hold at once (a UDP one lives 32 s after its answer); beyond it its new requests are dropped silently.",
  },
  guardFloodBanS: {
    codec: intCodec(0, 604_800),
    default: 60,
    doc: "Ban length, seconds, for a source that keeps sending while over its guardSourceRatePerS / guardSourceMaxTransactions quota (as many dropped requests as guardSourceBurst); 0 only drops the excess.",
  },
  guardAllowlist: {
    codec: listCodec(ipCodec, { minItems: 0, unique: true }),
    default: [],
    doc: "Source addresses never banned or rate-limited (e.g. the SIP trunk, a local SBC).",
  },
  // Overload control (agent/sip/overload.ts): past any of these, new dialog-creating requests get 503 + Retry-After.
  overloadLoopBusyPct: {
    codec: intCodec(0, 100),
    default: 90,
    doc: "Overload when the signalling event loop was busy this share of the time, percent (50 ms samples, 200 ms while the agent is quiet; smoothed: a single busy sample is not overload), where no UDP queue delay is measured or overloadQueueDelayMs is 0 (TCP only; otherwise overloadQueueDelayMs steers by the backlog itself): a growing share of new requests (initial INVITE, SUBSCRIBE, out-of-dialog MESSAGE/OPTIONS; never REGISTER or anything inside a dialog) is refused with 503 + Retry-After, until the loop is back below overloadClearPct of this; 0 disables.",
  },
  overloadLagMs: {
    codec: intCodec(0, 60_000),
    default: 500,
    doc: "Overload when the event loop's timers ran this late on average, ms (50 ms samples, smoothed; not measured while the agent is quiet). A backstop: overloadLoopBusyPct already sees a loop blocked by long tasks, and lag also grows while the process merely waits for a CPU another process holds; 0 disables.",
  },
  overloadQueueDelayMs: {
    codec: intCodec(0, 10_000),
    default: 100,
    doc: "Target wait of a datagram in the SIP UDP sockets' kernel receive queues, ms, measured every 50 ms (every 200 ms while nothing is refused, the event loop is under half busy and the wait under 5 ms) by a probe the agent sends itself through each queue. Past it a share of new requests (initial INVITE, SUBSCRIBE, out-of-dialog MESSAGE/OPTIONS; never REGISTER or anything inside a dialog) is refused with 503 + Retry-After, adjusted at every sample by how far the wait is from this and how fast it grows, so the agent carries what it can with a short queue (callers retransmit after 500 ms); 0 disables.",
  },
  overloadMaxCallsSetup: {
    codec: intCodec(0, 1_000_000),
    default: 150,
    doc: "Calls being set up (forked and ringing, not yet answered) at which every new call and other new request is refused with 503, until fewer than 95 % of this remain; 0 disables. A site rings at most 10 phones a call: 150 calls ringing at once is far past any office's peak, and a growing number of them is the first sign of an agent falling behind.",
  },
  overloadMaxServerTransactions: {
    codec: intCodec(0, 1_000_000),
    default: 50_000,
    doc: "Live SIP server transactions (a UDP one lingers 32 s after its answer) at which new requests are refused with 503 (until fewer than 95 % remain), well before the table's hard limit of 100,000 where even BYEs and REGISTERs would be; 0 disables.",
  },
  overloadClearPct: {
    codec: intCodec(1, 100),
    default: 80,
    doc: "Hysteresis of overload control on the event loop's figures (loop busy, lag; used where no UDP queue delay is measured): the share of new requests refused falls, step by step, only while each is below this percentage of its limit; it rises at every sample over a limit.",
  },
  overloadRetryAfterS: {
    codec: intCodec(1, 3600),
    default: 5,
    doc: "Retry-After (RFC 3261 §20.33) of the overload 503, seconds; each 503 adds up to half of it again at random so refused callers do not return together.",
  },
  subscribeMaxPerDevice: {
    codec: intCodec(1, 10_000),
    default: 64,
    doc: "Event subscriptions (BLF keys: Event: dialog; message lamps: Event: message-summary) one device may hold at once; more get 503.",
  },
  subscribeRateMax: {
    codec: intCodec(1, 1_000_000),
    default: 200,
    doc: "SUBSCRIBE requests (new and refreshes) one device may send within subscribeRateWindowS; more get 503 with Retry-After.",
  },
  subscribeRateWindowS: {
    codec: intCodec(1, 3600),
    default: 10,
    doc: "Window of the per-device SUBSCRIBE rate limit, seconds.",
  },
  subscribeMinExpires: {
    codec: intCodec(1, 86_400),
    default: 30,
    doc: "Shortest subscription accepted, seconds; shorter requests get 423 with Min-Expires (RFC 6665 §4.2.1.1).",
  },
  subscribeMaxExpires: {
    codec: intCodec(1, 604_800),
    default: 3600,
    doc: "Longest subscription granted, seconds; longer requests are shortened (RFC 6665 §4.2.1.1).",
  },
  voicemailCode: {
    // The contract's feature-code pattern (routing/operator-state.ts FEATURE_CODE_RE).
    codec: stringCodec("feature code", (s) => (/^[*#][0-9*#]{1,7}$/.test(s) ? null : "must be * or # then 1-7 of digits, * and #")),
    default: "*97",
    doc: "Voicemail feature code: what a phone dials to listen to its user's messages. Phones are configured with it as their voicemail number / message key (device profiles), and a SUBSCRIBE for message-summary to it is the subscriber's own mailbox. Must not collide with the site's feature codes.",
  },
  // Appliance integration (firmware-hooks/README.md).
  drainTimeoutS: {
    codec: intCodec(0, 3600),
    default: 30,
    doc: "On SIGTERM (and `ringedge drain` without --timeout): seconds to let ringing and connected calls finish, refusing new ones with 503, before the agent stops anyway.",
  },
  drainRetryAfterS: {
    codec: intCodec(1, 86_400),
    default: 120,
    doc: "Retry-After (RFC 3261 §20.33) on the 503 that refuses new calls while draining: about how long an upgrade takes.",
  },
  healthOverBudgetPct: {
    codec: intCodec(0, 100),
    default: 5,
    doc: "Warn (in `ringedge status` and `health`, the log and a latency.over-budget bus event) when more than this percentage of a window of calls (at least 20, judged every 30 s) exceeded latencyBudgetMs to their first fork. Never fails health: a restart cures no slowness.",
  },
  serialDevice: {
    codec: stringCodec('path or ""', (s) => (s.includes("\0") ? "must not contain NUL" : null)),
    default: "",
    doc: 'Serial device of the installer console, e.g. /dev/ttyS0 (8N1, no flow control); "" = no console. Reopened with back-off when the device disappears.',
  },
  serialBaud: {
    codec: intCodec(1200, 4_000_000),
    default: 115_200,
    doc: "Baud rate of serialDevice.",
  },
  serialPassword: {
    codec: stringCodec('scrypt hash or ""', (s) => (s === "" || /^scrypt\$\d+\$\d+\$\d+\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$/.test(s) ? null : "must be a hash made by `ringedge console-password`, never the password itself")),
    default: "",
    doc: 'scrypt hash of the installer password of the serial console, made by `ringedge console-password` ("" = none set: the first login at the serial port chooses it, as after a factory reset). Reloaded on SIGHUP.',
  },
  serialLockoutFailures: {
    codec: intCodec(1, 100),
    default: 5,
    doc: "Wrong serial-console passwords in a row that lock logins for serialLockoutS (doubling at every further lock-out).",
  },
  serialLockoutS: {
    codec: intCodec(1, 86_400),
    default: 60,
    doc: "First serial-console lock-out, seconds; each further one doubles, up to a day, until a login succeeds.",
  },
  serialIdleTimeoutS: {
    codec: intCodec(0, 86_400),
    default: 600,
    doc: "A serial-console session with no input for this many seconds is logged out (0 = never). Reloaded on SIGHUP.",
  },
  // Media (agent/media/, docs/media.md).
  mediaPorts: {
    codec: portRangeCodec,
    default: "20000-20999",
    doc: "UDP ports of the media plane (music on hold, greetings and menus): one even RTP port and the next odd RTCP port per caller listening to the appliance; a pair is freed when the call leaves the queue or the greeting, however it does. 500 pairs by default. Read at start only.",
  },
  mediaAddress: {
    codec: stringCodec('IP address or ""', (s) => (s === "" || net.isIP(s) ? null : "is not an IP address")),
    default: "",
    doc: 'Local address the media plane binds and puts in its SDP; "" = the address the call\'s SIP request reached (sipAdvertise on a wildcard socket).',
  },
  queueMusic: {
    codec: boolCodec,
    default: true,
    doc: "Play music on hold to callers waiting for a free operator (wait-for-operator), as early media: 183 Session Progress with SDP from the appliance. false = 182 Queued only, the caller's phone makes its own ringback. Read at start only.",
  },
  queueMusicFile: {
    codec: pathCodec,
    default: "",
    doc: 'WAV file played to waiting callers (16-bit PCM, mono or stereo; other rates than 8 kHz are converted); "" = the tune shipped in agent/media/audio/. A file that cannot be used is logged at start and the shipped tune plays. Read at start only.',
  },
  queueAnnouncement: {
    codec: boolCodec,
    default: false,
    doc: 'Play the queue prompt (audio/queue-welcome.wav: "All our operators are busy. Please hold; you will be connected shortly.") to a caller entering the queue, before the music. Read at start only.',
  },
  queueAnnouncementIntervalS: {
    codec: intCodec(0, 3600),
    default: 0,
    doc: "Repeat the queue prompt every this many seconds while the caller waits (the music resumes after it); 0 = never. Read at start only.",
  },
  queueAnnouncePosition: {
    codec: boolCodec,
    default: false,
    doc: 'Tell a waiting caller their place in the queue ("you are caller number 3", audio/queue-position.wav and audio/numbers/) after the queue prompt and with each periodic one; without a prompt, alone at those moments. A group\'s wait-for-operator action may set announcePosition itself. Read at start only.',
  },
  // Observability (agent/observe/).
  metricsEnabled: {
    codec: boolCodec,
    default: false,
    doc: "Serve Prometheus metrics (text exposition format) at http://<metricsListen>/metrics: calls per group, queue, first-fork latency, phones online, provisioning, refusals and bans, console link, store, event loop, memory and CPU. Read at start only.",
  },
  metricsListen: {
    codec: hostPortCodec(true),
    default: "127.0.0.1:9464",
    doc: "Address of the metrics endpoint; loopback by default so only this box (or a local Prometheus agent) can scrape it.",
  },
  statusPageEnabled: {
    codec: boolCodec,
    default: false,
    doc: "Serve the read-only status page (phones, groups and members, calls, missed calls, latency) at statusPageListen, behind a login with the installer password (serialPassword); HTTPS when httpsCert and httpsKey are set. Read at start only.",
  },
  statusPageListen: {
    codec: hostPortCodec(true),
    default: "127.0.0.1:8088",
    doc: "Address of the status page; set a LAN address (e.g. 0.0.0.0:8088) for installers on the site network.",
  },
  logFormat: {
    codec: enumCodec<LogFormat>(["text", "json"]),
    default: "text",
    doc: "Log line format on stderr: text (\"time level scope message key=value\") or json (one object per line, for log shippers). Under systemd (JOURNAL_STREAM) each line starts with its syslog priority, <3> to <7>, for journald. Read at start only.",
  },
};

export const SETTING_NAMES = Object.keys(SPECS) as SettingName[];

/** "keepaliveIntervalS" → "RINGEDGE_KEEPALIVE_INTERVAL_S". */
export function envName(setting: string): string {
  return ENV_PREFIX + setting.replace(/([a-z0-9])([A-Z])/g, "$1_$2").toUpperCase();
}

export interface SettingDoc {
  name: SettingName;
  env: string;
  type: string;
  default: string;
  meaning: string;
}

export const SETTINGS_DOC: readonly SettingDoc[] = SETTING_NAMES.map((name) => {
  const spec = SPECS[name] as Spec<unknown>;
  return { name, env: envName(name), type: spec.codec.type, default: spec.defaultDoc ?? spec.codec.show(spec.default), meaning: spec.doc };
});

/** The settings table as Markdown, for README/docs and `ringedge config`. */
export function renderSettingsDoc(): string {
  const cell = (s: string): string => s.replace(/\|/g, "\\|");
  const rows = SETTINGS_DOC.map((d) => `| \`${d.name}\` | \`${d.env}\` | ${cell(d.type)} | \`${cell(d.default === "" ? '""' : d.default)}\` | ${cell(d.meaning)} |`);
  return [
    "Precedence: built-in default < settings file (JSON, `--config <path>` or `RINGEDGE_CONFIG`; default `" + DEFAULT_CONFIG_PATH + "` if present) < environment < command-line flags.",
    "Lists are JSON arrays in the file and comma-separated in the environment. Unknown keys in the file are errors; a setting an earlier version had (`overloadUdpQueuePct`) is ignored with a warning.",
    "",
    "| Setting | Environment | Type | Default | Meaning |",
    "|---|---|---|---|---|",
    ...rows,
  ].join("\n");
}

export function defaultSettings(): Settings {
  const s = {} as Record<SettingName, unknown>;
  for (const name of SETTING_NAMES) s[name] = structuredClone(SPECS[name].default);
  const out = s as unknown as Settings;
  out.realm = out.siteId;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Loading.

export interface LoadOptions {
  env?: NodeJS.ProcessEnv;
  /** From --config; wins over RINGEDGE_CONFIG. A given path must exist. */
  configPath?: string;
  /** Command-line flags: highest precedence, validated like the rest. */
  overrides?: Partial<Settings>;
  /** Path tried when neither configPath nor RINGEDGE_CONFIG is given (tests pass null). */
  defaultConfigPath?: string | null;
}

export interface LoadedSettings {
  settings: Settings;
  /** Where each setting's value came from. */
  sources: Record<SettingName, SettingSource>;
  /** The settings file read, if any. */
  configFile: string | null;
  /** Non-fatal findings, e.g. an unknown RINGEDGE_* variable (maybe a typo). */
  warnings: string[];
}

function levenshtein(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cur = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = cur;
    }
  }
  return row[b.length]!;
}

/**
 * Settings an earlier version had, and what took their place. A settings file that still names
 * one loads (an appliance's file must survive a firmware upgrade); the key is ignored, with a
 * warning that names its successor.
 */
export const RETIRED_SETTINGS: Readonly<Record<string, string>> = {
  overloadUdpQueuePct: "overloadQueueDelayMs (a target wait in ms, measured by a probe, instead of the UDP receive queue's fill in %)",
};

function suggest(word: string, candidates: readonly string[]): string {
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    const d = levenshtein(word.toLowerCase(), c.toLowerCase());
    if (d < bestD) {
      bestD = d;
      best = c;
    }
  }
  return best !== undefined && bestD <= Math.max(2, Math.floor(word.length / 4)) ? ` (did you mean "${best}"?)` : "";
}

function showValue(v: unknown): string {
  let s: string;
  try {
    s = JSON.stringify(v) ?? String(v);
  } catch {
    s = String(v);
  }
  return s.length > 120 ? s.slice(0, 117) + "..." : s;
}

function readConfigFile(file: string): Record<string, unknown> {
  const fileErr = (reason: string, setting?: string): SettingsError => new SettingsError(`${file}: ${reason}`, setting, "file", file, reason);
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    const code = (e as { code?: string }).code;
    throw fileErr(code === "ENOENT" ? "settings file not found" : `cannot read the settings file (${(e as Error).message})`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw fileErr(`not valid JSON (${(e as Error).message})`);
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw fileErr("must be a JSON object of settings");
  const obj = parsed as Record<string, unknown>;
  if (obj.format === "ringedge-store") throw fileErr("this is a ringedge data store, not a settings file (settings files are usually named ringedge.conf.json)");
  for (const key of Object.keys(obj)) {
    if (key === "$schema" || Object.prototype.hasOwnProperty.call(RETIRED_SETTINGS, key)) continue;
    if (!Object.prototype.hasOwnProperty.call(SPECS, key)) throw fileErr(`unknown setting "${key}"${suggest(key, SETTING_NAMES)}`, key);
  }
  return obj;
}

/** Loads and validates settings; throws SettingsError naming the setting, its origin, the value and the reason. */
export function loadSettings(opts: LoadOptions = {}): Settings {
  return loadSettingsDetailed(opts).settings;
}

export function loadSettingsDetailed(opts: LoadOptions = {}): LoadedSettings {
  const env = opts.env ?? {};
  const values = {} as Record<SettingName, unknown>;
  const sources = {} as Record<SettingName, SettingSource>;
  const origins = {} as Record<SettingName, string>;
  for (const name of SETTING_NAMES) {
    values[name] = structuredClone(SPECS[name].default);
    sources[name] = "default";
    origins[name] = "default";
  }

  // 1. settings file
  let configFile: string | null = null;
  const envConfig = env[CONFIG_ENV];
  if (opts.configPath !== undefined) configFile = opts.configPath;
  else if (envConfig !== undefined && envConfig !== "") configFile = envConfig;
  else {
    const dflt = opts.defaultConfigPath === undefined ? DEFAULT_CONFIG_PATH : opts.defaultConfigPath;
    if (dflt !== null && fs.existsSync(dflt)) configFile = dflt;
  }
  const warnings: string[] = [];
  if (configFile !== null) {
    const obj = readConfigFile(configFile);
    for (const [key, successor] of Object.entries(RETIRED_SETTINGS)) {
      if (Object.prototype.hasOwnProperty.call(obj, key)) warnings.push(`${configFile}: ${key} is no longer a setting (replaced by ${successor}); ignored`);
    }
    for (const name of SETTING_NAMES) {
      if (!Object.prototype.hasOwnProperty.call(obj, name)) continue;
      const r = (SPECS[name].codec as Codec<unknown>).fromJson(obj[name]);
      if (!r.ok) {
        const at = r.index === undefined ? name : `${name}[${r.index}]`;
        throw new SettingsError(`${configFile}: ${at}: ${showValue(r.shown)} ${r.reason}`, name, "file", configFile, r.reason);
      }
      values[name] = r.value;
      sources[name] = "file";
      origins[name] = configFile;
    }
  }

  // 2. environment
  const envNames = new Map(SETTING_NAMES.map((n) => [envName(n), n]));
  for (const [key, raw] of Object.entries(env)) {
    if (!key.startsWith(ENV_PREFIX) || raw === undefined) continue;
    const name = envNames.get(key);
    if (name === undefined) {
      if (key !== CONFIG_ENV) {
        const hint = suggest(key, [...envNames.keys()]);
        if (hint) warnings.push(`${key} is not a ringedge setting${hint}; ignored`);
      }
      continue;
    }
    const r = (SPECS[name].codec as Codec<unknown>).fromEnv(raw);
    if (!r.ok) throw new SettingsError(`${key}: ${showValue(r.shown)} ${r.reason}`, name, "env", key, r.reason);
    values[name] = r.value;
    sources[name] = "env";
    origins[name] = key;
  }

  // 3. overrides (flags), checked with the file rules
  for (const [name, v] of Object.entries(opts.overrides ?? {})) {
    if (v === undefined) continue;
    if (!Object.prototype.hasOwnProperty.call(SPECS, name)) {
      throw new SettingsError(`unknown setting "${name}"${suggest(name, SETTING_NAMES)}`, name, "override", "override", "unknown setting");
    }
    const key = name as SettingName;
    const r = (SPECS[key].codec as Codec<unknown>).fromJson(v);
    if (!r.ok) throw new SettingsError(`--${key}: ${showValue(r.shown)} ${r.reason}`, key, "override", `--${key}`, r.reason);
    values[key] = r.value;
    sources[key] = "override";
    origins[key] = `--${key}`;
  }

  const settings = values as unknown as Settings;
  for (const name of SETTING_NAMES) {
    const derive = SPECS[name].derive as ((s: Settings) => unknown) | undefined;
    if (derive && sources[name] === "default") values[name] = derive(settings);
  }

  // 4. rules across settings
  const describe = (n: SettingName): string => (sources[n] === "default" ? `${n} (default ${showValue(values[n])})` : `${n} (${showValue(values[n])} from ${origins[n]})`);
  const order = (lo: SettingName, hi: SettingName): void => {
    if ((values[lo] as number) <= (values[hi] as number)) return;
    // Blame the one set most explicitly: override > env > file > default.
    const rank: Record<SettingSource, number> = { default: 0, file: 1, env: 2, override: 3 };
    const blamed = rank[sources[lo]] >= rank[sources[hi]] ? lo : hi;
    const other = blamed === lo ? hi : lo;
    const reason = blamed === lo ? `must not exceed ${describe(other)}` : `must not be below ${describe(other)}`;
    const where = sources[blamed] === "env" ? origins[blamed] : sources[blamed] === "file" ? `${origins[blamed]}: ${blamed}` : origins[blamed];
    throw new SettingsError(`${where}: ${showValue(values[blamed])} ${reason}`, blamed, sources[blamed], origins[blamed], reason);
  };
  order("minExpires", "defaultExpires");
  order("defaultExpires", "maxExpires");
  order("minExpires", "maxExpires");
  order("subscribeMinExpires", "subscribeMaxExpires");
  order("tcpMaxConnectionsPerAddress", "tcpMaxConnections");

  return { settings, sources, configFile, warnings };
}
