// The provisioning server: phones fetch their configuration files over HTTP or HTTPS, exactly
// at the paths their vendor's firmware asks for (device-profiles/*/profile.json `files`).
//
// Security model (provisioning.md §4):
// - A MAC address alone never unlocks credentials. Per-MAC files are served only for phones an
//   installer added. The full config (SIP password) needs the phone's own provisioning
//   credentials: HTTP Digest (RFC 7616, realm "ringedge-provisioning") or its URL token
//   (/p/<token>/<file>).
// - Those credentials reach the phone in a first-boot bootstrap config that carries no SIP
//   password. Bootstrap is trust-on-first-use: served once per phone, only within a short window
//   (provisioningBootstrapWindowS) after the installer added it, adopted it or ran `phone
//   rebootstrap` (which also rotates its credentials); afterwards an unauthenticated request
//   gets a 401 challenge.
// - The client that took the bootstrap has claimed the phone. A second, distinct client (another
//   address, or another verified device certificate) asking for that phone's bootstrap or full
//   config within a window after the claim means one of the two is not the phone: its SIP and
//   provisioning credentials are rotated, the second client is refused (403), and the installer
//   is told (warning, onConflict → bus event, `phone show`). `phone rebootstrap` lets the real
//   phone in again.
// - Vendors whose phones carry a factory device certificate can be required to present it over
//   HTTPS (devicecert.ts says what is checked).
// - The Digest challenges follow what each vendor's HTTP client answers (profile `httpDigest`).
// - Unknown MACs get 404 and are recorded as seen ("waiting for adoption").
// - Unsafe paths (traversal, encoded forms, backslashes), oversized requests, bodies and
//   methods other than GET/HEAD are refused; bursts of 401/404 from one address block it for a
//   while (429). Every refusal is logged.
//
// handle() is the whole decision, without sockets (unit tests and the benchmark call it);
// start() puts it behind node:http / node:https.

import { createReadStream } from "node:fs";
import http from "node:http";
import https from "node:https";
import net from "node:net";
import { randomBytes, timingSafeEqual, type X509Certificate } from "node:crypto";
import type tls from "node:tls";
import type { Logger } from "../agent/log.ts";
import { DigestAuthenticator, type DigestAlgorithm } from "../agent/sip/digest.ts";
import type { PhoneDirectory, PhoneRecord, TrustState } from "./directory.ts";
import type { ProvisioningClaim, ProvisioningConflict } from "../agent/store/schema.ts";
import { checkDeviceCertificate, type PeerCertificate } from "./devicecert.ts";
import { isWildcard, primaryAddress } from "../agent/sip/advertise.ts";
import type { FirmwareStore } from "./firmware.ts";
import { identify, type Identification } from "./identify.ts";
import { findModel, type ModelProfile, type Profile, type Transport } from "./profiles.ts";
import { BurstLimiter } from "./ratelimit.ts";
import { renderConfig, type SiteInput } from "./render.ts";

export const PROVISIONING_REALM = "ringedge-provisioning";
/** RFC 7230 recommends at least 8000 octets of request line; phones never need more than this. */
export const MAX_URL_BYTES = 1024;
export const MAX_HEADER_BYTES = 8192;
const SEGMENT_RE = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$/;
const QUERY_RE = /^[A-Za-z0-9._~=&$:-]{0,256}$/;
const TOKEN_RE = /^[A-Za-z0-9_-]{16,128}$/;

export interface ProvisioningRequest {
  method: string;
  /** Request target as received (path and query). */
  url: string;
  userAgent?: string;
  /** Authorization header value(s). */
  authorization?: string | string[];
  /** True when the request carries a body (Content-Length > 0 or Transfer-Encoding). */
  hasBody: boolean;
  /** Peer IP (IPv4-mapped IPv6 already unwrapped). */
  source: string;
  /** Our address the request arrived on: the host phones can reach us at. */
  local: { address: string; port: number; scheme: "http" | "https" };
  /** HTTPS: the certificate the client presented, when the server asked for one. */
  peerCertificate?: PeerCertificate;
}

export type ProvisioningResponse = {
  status: number;
  headers: Record<string, string | string[]>;
  body?: string;
  /** A file to stream (firmware), instead of body. */
  file?: { path: string; size: number };
  /** Close the connection after answering (refusals). */
  close?: boolean;
};

export interface SiteDefaults {
  /** SIP server for the phones; undefined: the address the phone reached us at. */
  sipHost?: string;
  sipPort: number;
  transport: Transport;
  ntpServer: string;
  timeZone: string;
  resyncIntervalMin: number;
  /** The voicemail feature code (settings.voicemailCode); undefined: the renderer's default. */
  voicemailCode?: string;
}

export interface ProvisioningServerOptions {
  profiles: ReadonlyMap<string, Profile>;
  directory: PhoneDirectory;
  firmware: FirmwareStore;
  site: () => SiteDefaults;
  log: Logger;
  /** Bootstrap is served only this long after the phone was added (trust on first use). */
  bootstrapWindowMs: number;
  /** Vendors whose phones must present their factory device certificate: vendor → its CAs. */
  deviceCas?: ReadonlyMap<string, readonly X509Certificate[]>;
  /** A second client claimed a phone; its credentials are rotated already. */
  onConflict?: (c: ClaimConflict) => void;
  /** 401/404 bursts: `max` within `windowMs` block the source for `blockMs`. */
  burst?: { max: number; windowMs: number; blockMs: number };
  http?: { host: string; port: number };
  https?: { host: string; port: number; cert: string | Buffer; key: string | Buffer };
  now?: () => number;
  /** Told of every answered request, for metrics and the audit log (agent/observe/). */
  onRequest?: (e: ProvisioningOutcome) => void;
}

/** One answered provisioning request: who asked, for which vendor/model, and what came of it. */
export interface ProvisioningOutcome {
  vendor: string | undefined;
  model: string | undefined;
  mac: string | undefined;
  /** The stage served (bootstrap, full, boot, common, mac-boot, firmware-info), "firmware", or why not (not-found, unauthorized, ...). */
  result: string;
  status: number;
  source: string;
}

/** The result label of a response that served no stage. */
export function resultOfStatus(status: number): string {
  return status === 401 ? "unauthorized" : status === 404 ? "not-found" : status === 429 ? "rate-limited" : status === 400 ? "bad-request" : status >= 500 ? "error" : status >= 400 ? "refused" : "ok";
}

export type Stage = "bootstrap" | "full" | "boot" | "common" | "firmware-info" | "mac-boot";

/** Who is asking: the source address and, over HTTPS, the verified device certificate's fingerprint. */
export interface Client {
  ip: string;
  cert?: string;
}

export interface ClaimConflict extends ProvisioningConflict {
  deviceId: string;
  mac: string;
}

/**
 * Whether a request comes from the client that claimed the phone: the same verified device
 * certificate when both presented one (a phone keeps its certificate when DHCP moves it), else
 * the same source address.
 */
export function sameClient(claim: Client, c: Client): boolean {
  if (claim.cert !== undefined && c.cert !== undefined) return claim.cert === c.cert;
  return claim.ip === c.ip;
}

/**
 * Trust on first use of each phone's bootstrap. All state lives in the phone's provisioning
 * record (directory.setTrust), so a restart changes nothing: the window opened at add / adopt /
 * rebootstrap, the client that claimed the bootstrap, a conflict.
 */
export class BootstrapGate {
  constructor(
    private readonly windowMs: number,
    private readonly now: () => number,
    private readonly directory: Pick<PhoneDirectory, "setTrust">,
  ) {}

  private trust(phone: PhoneRecord): TrustState {
    const p = phone.provisioning;
    return p ? { bootstrapOpenedAt: p.bootstrapOpenedAt, bootstrapClosedAt: p.bootstrapClosedAt, claimedBy: p.claimedBy, conflict: p.conflict } : {};
  }

  /** Epoch ms the phone's bootstrap window closes (NaN when its times are unreadable). */
  windowEnd(phone: PhoneRecord): number {
    return Date.parse(phone.provisioning?.bootstrapOpenedAt ?? phone.createdAt) + this.windowMs;
  }

  isOpen(phone: PhoneRecord): boolean {
    if (!phone.provisioning || phone.provisioning.bootstrapClosedAt !== undefined) return false;
    const end = this.windowEnd(phone);
    return Number.isFinite(end) && this.now() <= end;
  }

  /** Take the one bootstrap this phone gets, for `client`; false when it is no longer open. */
  claim(phone: PhoneRecord, client: Client): boolean {
    if (!this.isOpen(phone)) return false;
    const at = new Date(this.now()).toISOString();
    this.directory.setTrust(phone.deviceId, { ...this.trust(phone), bootstrapClosedAt: at, claimedBy: claimOf(client, at) });
    return true;
  }

  /**
   * The claimant, when `client` is a different one asking within the window after the claim
   * (`stage` tells what it asks for). Afterwards a phone may move (DHCP) without losing its
   * credentials, and an unauthenticated request is only a 401.
   */
  rivalOf(phone: PhoneRecord, client: Client): ProvisioningClaim | undefined {
    const claim = phone.provisioning?.claimedBy;
    if (!claim || sameClient(claim, client)) return undefined;
    const at = Date.parse(claim.at);
    return Number.isFinite(at) && this.now() <= at + this.windowMs ? claim : undefined;
  }

  /** A phone authenticated: its bootstrap is closed for good; the first client to do so claims it. */
  noteAuthenticated(phone: PhoneRecord, client: Client): void {
    const t = this.trust(phone);
    if (t.bootstrapClosedAt !== undefined && t.claimedBy !== undefined) return;
    const at = new Date(this.now()).toISOString();
    this.directory.setTrust(phone.deviceId, { ...t, bootstrapClosedAt: t.bootstrapClosedAt ?? at, ...(t.claimedBy ? {} : { claimedBy: claimOf(client, at) }) });
  }
}

function claimOf(c: Client, at: string): ProvisioningClaim {
  return { ip: c.ip, ...(c.cert !== undefined ? { cert: c.cert } : {}), at };
}

export function unwrapIp(a: string | undefined): string {
  if (!a) return "";
  return a.startsWith("::ffff:") && net.isIPv4(a.slice(7)) ? a.slice(7) : a;
}

function hostForUrl(address: string): string {
  return net.isIPv6(address) ? `[${address}]` : address;
}

/** Base URL phones use to reach this server on the given local address, no trailing slash. */
export function baseUrl(scheme: "http" | "https", address: string, port: number): string {
  const dflt = scheme === "http" ? 80 : 443;
  return `${scheme}://${hostForUrl(address)}${port === dflt ? "" : `:${port}`}`;
}

function tokenEquals(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** Printable, bounded form of client-supplied text for a log line. */
function forLog(s: string | undefined, max = 160): string | undefined {
  if (s === undefined) return undefined;
  const clean = s.replace(/[^\x20-\x7e]/g, "?");
  return clean.length > max ? `${clean.slice(0, max)}…` : clean;
}

export interface ServerCounters {
  served: number;
  bootstrap: number;
  full: number;
  firmware: number;
  refused: number;
  notFound: number;
  unauthorized: number;
  rateLimited: number;
  /** Second clients for a claimed phone (credentials rotated). */
  conflicts: number;
}

export class ProvisioningServer {
  readonly gate: BootstrapGate;
  readonly limiter: BurstLimiter;
  readonly counters: ServerCounters = { served: 0, bootstrap: 0, full: 0, firmware: 0, refused: 0, notFound: 0, unauthorized: 0, rateLimited: 0, conflicts: 0 };
  /** One authenticator per distinct `httpDigest` order, sharing one nonce secret. */
  private readonly digests = new Map<string, DigestAuthenticator>();
  private readonly digestSecret = randomBytes(32);
  private readonly now: () => number;
  private servers: Array<{ scheme: "http" | "https"; server: http.Server }> = [];

  constructor(private readonly opts: ProvisioningServerOptions) {
    this.now = opts.now ?? Date.now;
    this.gate = new BootstrapGate(opts.bootstrapWindowMs, this.now, opts.directory);
    const burst = opts.burst ?? { max: 20, windowMs: 10_000, blockMs: 60_000 };
    this.limiter = new BurstLimiter({ ...burst, now: this.now, maxTracked: 10_000 });
  }

  /** The Digest authenticator for a vendor's phones: challenges in its profile's `httpDigest` order. */
  private digestFor(profile: Profile): DigestAuthenticator {
    const algorithms = profile.httpDigest as DigestAlgorithm[];
    const key = algorithms.join(",");
    let d = this.digests.get(key);
    if (!d) {
      d = new DigestAuthenticator({ realm: PROVISIONING_REALM, algorithms, header: "www-authenticate", now: this.now, secret: this.digestSecret });
      this.digests.set(key, d);
    }
    return d;
  }

  // --- the decision ------------------------------------------------------------------------

  handle(r: ProvisioningRequest): ProvisioningResponse {
    // Filled in while this (synchronous) request is handled; reported once it is answered.
    const note: Partial<ProvisioningOutcome> = {};
    this.note = note;
    let res: ProvisioningResponse;
    try {
      res = this.handleUnsafe(r);
    } catch (e) {
      this.opts.log.error("provisioning request failed", { err: (e as Error).message, source: r.source, path: forLog(r.url) });
      res = { status: 500, headers: { "content-type": "text/plain" }, body: "internal error\n", close: true };
    }
    this.note = undefined;
    const onRequest = this.opts.onRequest;
    if (onRequest) {
      try {
        onRequest({ vendor: note.vendor, model: note.model, mac: note.mac, result: res.status === 200 && note.result !== undefined ? note.result : resultOfStatus(res.status), status: res.status, source: r.source });
      } catch {
        // An observer's failure never changes the answer.
      }
    }
    return res;
  }

  /** The outcome of the request being handled (see handle()). */
  private note: Partial<ProvisioningOutcome> | undefined;

  private refuse(r: ProvisioningRequest, status: number, reason: string, extra: Record<string, string | string[]> = {}): ProvisioningResponse {
    this.counters.refused++;
    this.opts.log.warn("provisioning request refused", { status, reason, source: r.source, method: forLog(r.method, 16), path: forLog(r.url) });
    return { status, headers: { "content-type": "text/plain", ...extra }, body: `${reason}\n`, close: true };
  }

  /** A 401/404 that counts toward the source's burst limit. */
  private counted(r: ProvisioningRequest, res: ProvisioningResponse, reason: string, fields: Record<string, unknown> = {}): ProvisioningResponse {
    if (res.status === 404) this.counters.notFound++;
    if (res.status === 401) this.counters.unauthorized++;
    const verdict = this.limiter.note(r.source);
    const level = res.status === 404 && reason === "unknown MAC, waiting for adoption" ? "info" : "warn";
    this.opts.log[level](`provisioning ${res.status}: ${reason}`, { source: r.source, path: forLog(r.url), ...fields });
    if (verdict === "tripped") this.opts.log.warn("provisioning source blocked after a burst of 401/404", { source: r.source, blockS: Math.round(this.limiter.blockedForMs(r.source) / 1000) });
    return res;
  }

  private handleUnsafe(r: ProvisioningRequest): ProvisioningResponse {
    if (this.limiter.isBlocked(r.source)) {
      this.counters.rateLimited++;
      return this.refuse(r, 429, "too many failed requests from this address", { "retry-after": String(Math.max(1, Math.ceil(this.limiter.blockedForMs(r.source) / 1000))) });
    }
    if (r.method !== "GET" && r.method !== "HEAD") return this.refuse(r, 405, "method not allowed", { allow: "GET, HEAD" });
    if (Buffer.byteLength(r.url) > MAX_URL_BYTES) return this.refuse(r, 414, "request target too long");
    if (r.hasBody) return this.refuse(r, 413, "requests carry no body");
    const q = r.url.indexOf("?");
    const path = q >= 0 ? r.url.slice(0, q) : r.url;
    const query = q >= 0 ? r.url.slice(q + 1) : "";
    // Phones ask for plain file names: anything encoded, any dot-segment or backslash is a probe.
    if (!path.startsWith("/") || /%|\\|\.\.|\/\/|\0/.test(path) || !QUERY_RE.test(query)) return this.refuse(r, 400, "unsafe path");
    const segments = path.slice(1).split("/");
    if (segments.some((s) => !SEGMENT_RE.test(s))) return this.refuse(r, 400, "unsafe path");

    if (segments.length === 2 && segments[0] === "firmware") return this.firmwareFile(r, segments[1]!);
    if (segments.length === 3 && segments[0] === "p") {
      const token = segments[1]!;
      if (!TOKEN_RE.test(token)) return this.counted(r, notFound(), "bad token");
      const phone = this.opts.directory.phoneByToken(token);
      if (!phone?.provisioning || !tokenEquals(phone.provisioning.token, token)) return this.counted(r, notFound(), "bad token");
      return this.vendorFile(r, segments[2]!, phone);
    }
    if (segments.length === 1) return this.vendorFile(r, segments[0]!, undefined);
    return this.counted(r, notFound(), "no such file");
  }

  private firmwareFile(r: ProvisioningRequest, name: string): ProvisioningResponse {
    const f = this.opts.firmware.lookup(name);
    if (!f) return this.counted(r, notFound(), "no such firmware file");
    this.counters.firmware++;
    if (this.note) this.note.result = "firmware";
    this.opts.log.info("firmware served", { file: name, source: r.source, userAgent: forLog(r.userAgent) });
    return { status: 200, headers: { "content-type": "application/octet-stream", "content-length": String(f.size) }, file: f };
  }

  /** A vendor file; `tokenPhone` when the request came through the phone's token path. */
  private vendorFile(r: ProvisioningRequest, fileName: string, tokenPhone: PhoneRecord | undefined): ProvisioningResponse {
    const { profiles, directory } = this.opts;
    const id = identify(profiles, { path: `/${fileName}`, ...(r.userAgent !== undefined ? { userAgent: r.userAgent } : {}) });
    if (!id.identified || !id.file || id.vendor === undefined) return this.counted(r, notFound(), id.identified ? "no such file" : `not a phone file (${id.reason ?? "unknown"})`);
    const profile = profiles.get(id.vendor)!;
    if (this.note) Object.assign(this.note, { vendor: id.vendor, mac: id.mac, model: id.model ?? id.rawModel });
    const file = id.file;
    const perMac = file.kind === "mac-boot" || file.kind === "mac-config";
    const client: Client = { ip: r.source };
    const cas = this.opts.deviceCas?.get(profile.vendor);
    if (cas) {
      // This vendor's phones must prove who they are with their factory certificate.
      if (r.local.scheme !== "https") return this.counted(r, forbidden("device certificate required: use HTTPS"), "device certificate required, request over HTTP", { vendor: profile.vendor, mac: id.mac });
      const check = checkDeviceCertificate(r.peerCertificate, cas, perMac ? id.mac : undefined, profile.deviceCertificate?.macIn ?? ["subject-cn", "subject-alt-name"]);
      if (!check.ok) return this.counted(r, forbidden("device certificate refused"), check.reason, { vendor: profile.vendor, mac: id.mac });
      client.cert = check.fingerprint;
    }
    if (id.mac !== undefined) directory.noteSeen(seenNote(r, id));
    if (!perMac) {
      if (tokenPhone && id.mac !== undefined && id.mac !== tokenPhone.mac) return this.counted(r, notFound(), "token is another phone's");
      const model = this.modelOf(profile, id, tokenPhone);
      if (!model) return this.counted(r, notFound(), "model not identified", { vendor: id.vendor });
      return this.render(r, profile, model, id, undefined, false, file.kind as Stage);
    }
    const mac = id.mac!;
    if (tokenPhone && tokenPhone.mac !== mac) return this.counted(r, notFound(), "token is another phone's", { mac });
    const phone = tokenPhone ?? directory.phoneByMac(mac);
    if (!phone) return this.counted(r, notFound(), "unknown MAC, waiting for adoption", { mac, vendor: id.vendor, model: id.model ?? id.rawModel });
    if (file.template === undefined) {
      // Recognised but not served (Grandstream's binary cfg<mac>): the phone moves on to its next file.
      return { status: 404, headers: { "content-type": "text/plain" }, body: "not served\n" };
    }
    const model = this.modelOf(profile, id, phone);
    if (!model) return this.counted(r, notFound(), `phone is registered as model '${phone.model ?? "?"}', not a ${profile.displayName} model`, { mac });
    if (file.kind === "mac-boot") return this.render(r, profile, model, id, phone, false, "mac-boot");

    // mac-config: full behind the phone's own credentials, or the one-time bootstrap.
    if (!phone.provisioning) return this.counted(r, notFound(), "phone has no provisioning credentials yet", { mac });
    const digest = this.digestFor(profile);
    const full = (): ProvisioningResponse => {
      if (r.method !== "HEAD" && this.gate.rivalOf(phone, client)) return this.conflict(r, phone, client, "full");
      this.gate.noteAuthenticated(phone, client);
      return this.render(r, profile, model, id, phone, false, "full");
    };
    if (tokenPhone) return full();
    const creds = phone.provisioning;
    const v = digest.verify({
      method: r.method,
      authorization: r.authorization,
      // Only this phone's own provisioning user counts: another phone's credentials unlock nothing here.
      lookup: (u) => (u === creds.user ? { username: u, password: creds.password } : undefined),
      requestUri: r.url,
    });
    switch (v.kind) {
      case "ok":
        return full();
      case "stale":
        return { status: 401, headers: { "content-type": "text/plain", "www-authenticate": challenge(digest, true) }, body: "stale nonce\n" };
      case "malformed":
        return this.counted(r, { status: 400, headers: { "content-type": "text/plain" }, body: "bad authorization\n", close: true }, `malformed credentials (${v.reason})`, { mac });
      case "failed":
        return this.counted(r, { status: 401, headers: { "content-type": "text/plain", "www-authenticate": challenge(digest, false) }, body: "unauthorized\n" }, "wrong provisioning credentials", { mac, user: forLog(v.username, 64) });
      case "missing":
        break;
    }
    // No credentials: the bootstrap, once, within the window (a HEAD does not consume it); a
    // second client asking for it after another took it is a conflict.
    if (r.method === "HEAD") return this.gate.isOpen(phone) ? this.render(r, profile, model, id, phone, true, "bootstrap") : unauthorized(digest);
    if (this.gate.claim(phone, client)) return this.render(r, profile, model, id, phone, true, "bootstrap");
    if (this.gate.rivalOf(phone, client)) return this.conflict(r, phone, client, "bootstrap");
    return unauthorized(digest);
  }

  /**
   * A second client asks for a phone another client claimed: either could be the impostor, so
   * neither keeps working credentials. Rotate them (SIP password too), close the bootstrap,
   * refuse, and tell the installer, who re-opens it for the real phone (`phone rebootstrap`).
   */
  private conflict(r: ProvisioningRequest, phone: PhoneRecord, client: Client, stage: "bootstrap" | "full"): ProvisioningResponse {
    const at = new Date(this.now()).toISOString();
    const claimedIp = phone.provisioning?.claimedBy?.ip ?? "?";
    const conflict: ProvisioningConflict = { at, ip: client.ip, ...(client.cert !== undefined ? { cert: client.cert } : {}), claimedIp, stage };
    const rotated = this.opts.directory.rotateCredentials(phone.deviceId, { bootstrapOpenedAt: phone.provisioning?.bootstrapOpenedAt, bootstrapClosedAt: at, conflict });
    this.counters.conflicts++;
    this.opts.log.warn("provisioning: a second client claimed this phone; its SIP and provisioning credentials are rotated (ringedge phone rebootstrap lets the real phone in again)", { mac: phone.mac, deviceId: phone.deviceId, claimedBy: claimedIp, source: client.ip, stage, rotated: rotated !== undefined });
    try {
      this.opts.onConflict?.({ ...conflict, deviceId: phone.deviceId, mac: phone.mac });
    } catch (e) {
      this.opts.log.error("claim conflict listener failed", { err: (e as Error).message });
    }
    return this.counted(r, forbidden("phone already claimed by another client"), "second client for a claimed phone", { mac: phone.mac });
  }

  /** Model: the installer's word for an adopted phone (same vendor), else what identify() found. */
  private modelOf(profile: Profile, id: Identification, phone: PhoneRecord | undefined): ModelProfile | undefined {
    if (phone?.model !== undefined) return findModel(this.opts.profiles, phone.model, profile.vendor)?.model;
    return id.model !== undefined ? profile.models.find((m) => m.id === id.model) : undefined;
  }

  /** The site as phones should see it from the address they reached us on. */
  siteInput(local: ProvisioningRequest["local"]): SiteInput {
    const d = this.opts.site();
    const sp = this.opts.directory.siteProvisioning();
    const base = baseUrl(local.scheme, local.address, local.port);
    return {
      sipServer: d.sipHost ?? local.address,
      sipPort: d.sipPort,
      transport: d.transport,
      ntpServer: sp.ntpServer ?? d.ntpServer,
      timeZone: sp.timeZone ?? d.timeZone,
      // The site's 0 means "never": the longest interval the vendors' settings take (30 days).
      resyncIntervalMin: sp.resyncIntervalMin === 0 ? 43_200 : sp.resyncIntervalMin ?? d.resyncIntervalMin,
      provisioningUrl: base,
      firmwareBaseUrl: `${base}/firmware`,
      // The code the routing engine answers (settings.pickupCode), so a BLF key's pickup reaches it.
      ...(sp.pickupCode !== undefined ? { pickupCode: sp.pickupCode } : {}),
      // The code the voicemail listens on: the phones' voicemail number / message key.
      ...(d.voicemailCode !== undefined ? { voicemailCode: d.voicemailCode } : {}),
    };
  }

  private render(r: ProvisioningRequest, profile: Profile, model: ModelProfile, id: Identification, phone: PhoneRecord | undefined, bootstrap: boolean, stage: Stage): ProvisioningResponse {
    const out = renderConfig({
      profile,
      model: this.opts.firmware.modelForRender(model, profile.vendor),
      fileKind: id.file!.kind,
      file: id.file!,
      site: this.siteInput(r.local),
      bootstrap,
      ...(phone
        ? {
            device: {
              mac: phone.mac,
              extension: phone.extension,
              displayName: phone.displayName,
              sipUsername: phone.sipUsername,
              sipPassword: phone.sipPassword,
              provisioningUser: phone.provisioning?.user ?? "",
              provisioningPassword: phone.provisioning?.password ?? "",
            },
            ...(phone.lineKeys ? { lineKeys: phone.lineKeys } : {}),
          }
        : {}),
    });
    if (!out.ok) {
      this.opts.log.error("config render failed", { vendor: profile.vendor, model: model.id, file: forLog(r.url), err: out.error.message });
      return { status: 500, headers: { "content-type": "text/plain" }, body: "config cannot be generated\n" };
    }
    this.counters.served++;
    if (this.note) Object.assign(this.note, { result: stage, vendor: profile.vendor, model: model.id, mac: phone?.mac ?? id.mac });
    if (stage === "bootstrap") this.counters.bootstrap++;
    if (stage === "full") this.counters.full++;
    const fields = { stage, vendor: profile.vendor, model: model.id, mac: phone?.mac ?? id.mac, source: r.source };
    if (stage === "bootstrap" || stage === "full") this.opts.log.info("config served", fields);
    else this.opts.log.debug("config served", fields);
    // Configs with credentials must not sit in caches (RFC 9111 §5.2.2.5).
    return { status: 200, headers: { "content-type": out.contentType, "cache-control": "no-store" }, body: out.body };
  }

  // --- sockets -------------------------------------------------------------------------------

  async start(): Promise<void> {
    if (this.opts.http) await this.listen("http", http.createServer(this.serverOptions(), (q, s) => this.onHttp("http", q, s)), this.opts.http);
    if (this.opts.https) {
      const { cert, key } = this.opts.https;
      // With device certificates required, ask every client for one (TLS CertificateRequest) and
      // let node:tls verify it against the vendors' CAs; the decision per vendor is handle()'s,
      // so phones of other vendors still connect without one.
      const cas = [...(this.opts.deviceCas?.values() ?? [])].flat().map((c) => c.toString());
      const mtls: https.ServerOptions = cas.length > 0 ? { requestCert: true, rejectUnauthorized: false, ca: cas } : {};
      await this.listen("https", https.createServer({ ...this.serverOptions(), cert, key, ...mtls }, (q, s) => this.onHttp("https", q, s)), this.opts.https);
    }
  }

  private serverOptions(): http.ServerOptions {
    return { maxHeaderSize: MAX_HEADER_BYTES, requestTimeout: 15_000, headersTimeout: 10_000, keepAliveTimeout: 5_000 };
  }

  private async listen(scheme: "http" | "https", server: http.Server, at: { host: string; port: number }): Promise<void> {
    server.maxHeadersCount = 64;
    server.on("clientError", (err: NodeJS.ErrnoException, socket) => {
      // Oversized headers (HPE_HEADER_OVERFLOW), malformed requests, TLS garbage: refused, logged.
      const source = unwrapIp((socket as net.Socket).remoteAddress);
      const status = err.code === "HPE_HEADER_OVERFLOW" ? 431 : err.code === "ERR_HTTP_REQUEST_TIMEOUT" ? 408 : 400;
      this.counters.refused++;
      this.opts.log.warn("provisioning request refused", { status, reason: err.code ?? err.message, source });
      if ((socket as net.Socket).writable) (socket as net.Socket).end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
      else socket.destroy();
    });
    server.on("tlsClientError", (err: Error, socket: net.Socket) => {
      this.opts.log.warn("provisioning TLS handshake refused", { reason: err.message, source: unwrapIp(socket.remoteAddress) });
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(at.port, at.host, () => {
        server.off("error", reject);
        resolve();
      });
    });
    this.servers.push({ scheme, server });
    const a = server.address() as net.AddressInfo;
    // On a wildcard the URL phones use names one of this host's real addresses.
    const urlHost = isWildcard(a.address) ? primaryAddress(net.isIPv6(a.address) ? 6 : 4) : a.address;
    this.opts.log.info("provisioning listening", { scheme, address: `${hostForUrl(a.address)}:${a.port}`, url: `${baseUrl(scheme, urlHost, a.port)}/` });
  }

  /** Bound addresses (port 0 resolved). */
  addresses(): Array<{ scheme: "http" | "https"; address: string; port: number }> {
    return this.servers.map(({ scheme, server }) => {
      const a = server.address() as net.AddressInfo;
      return { scheme, address: a.address, port: a.port };
    });
  }

  async stop(): Promise<void> {
    const list = this.servers;
    this.servers = [];
    await Promise.all(
      list.map(
        ({ server }) =>
          new Promise<void>((resolve) => {
            server.close(() => resolve());
            server.closeAllConnections();
          }),
      ),
    );
  }

  private onHttp(scheme: "http" | "https", req: http.IncomingMessage, res: http.ServerResponse): void {
    const te = req.headers["transfer-encoding"];
    const cl = req.headers["content-length"];
    const auth = req.headers.authorization;
    const out = this.handle({
      method: req.method ?? "",
      url: req.url ?? "",
      ...(typeof req.headers["user-agent"] === "string" ? { userAgent: req.headers["user-agent"] } : {}),
      ...(auth !== undefined ? { authorization: auth } : {}),
      hasBody: te !== undefined || (cl !== undefined && cl !== "0"),
      source: unwrapIp(req.socket.remoteAddress),
      local: { address: unwrapIp(req.socket.localAddress), port: req.socket.localPort ?? 0, scheme },
      ...(scheme === "https" ? peerCertificateOf(req.socket as tls.TLSSocket) : {}),
    });
    const headers: Record<string, string | string[]> = { ...out.headers };
    if (out.close) headers.connection = "close";
    if (out.file) {
      res.writeHead(out.status, headers);
      if (req.method === "HEAD") return void res.end();
      const stream = createReadStream(out.file.path);
      stream.on("error", () => res.destroy());
      stream.pipe(res);
      return;
    }
    const body = Buffer.from(out.body ?? "", "utf8");
    headers["content-length"] = String(body.length);
    res.writeHead(out.status, headers);
    res.end(req.method === "HEAD" ? undefined : body);
    // A refused request's body (if any) is never read: drop the connection once answered.
    if (out.close) res.once("finish", () => req.socket.destroySoon());
  }
}

/** The client's certificate chain as the TLS handshake delivered it (leaf first), if it sent one. */
function peerCertificateOf(socket: tls.TLSSocket): { peerCertificate?: PeerCertificate } {
  const leaf = socket.getPeerCertificate?.(true);
  if (!leaf || !leaf.raw) return {};
  const chain: Buffer[] = [];
  const seen = new Set<string>();
  // issuerCertificate links up to the root, which refers to itself.
  for (let c: tls.DetailedPeerCertificate | undefined = leaf; c?.raw && !seen.has(c.fingerprint256) && chain.length < 10; c = c.issuerCertificate) {
    seen.add(c.fingerprint256);
    chain.push(c.raw);
  }
  const error = socket.authorizationError as Error | string | null | undefined;
  return { peerCertificate: { authorized: socket.authorized, ...(error ? { authorizationError: String(error) } : {}), chain } };
}

function challenge(digest: DigestAuthenticator, stale: boolean): string[] {
  return digest.challenge({ stale }).map((h) => h.value);
}

function unauthorized(digest: DigestAuthenticator): ProvisioningResponse {
  return { status: 401, headers: { "content-type": "text/plain", "www-authenticate": challenge(digest, false) }, body: "unauthorized\n" };
}

function forbidden(body: string): ProvisioningResponse {
  return { status: 403, headers: { "content-type": "text/plain" }, body: `${body}\n`, close: true };
}

function notFound(): ProvisioningResponse {
  return { status: 404, headers: { "content-type": "text/plain" }, body: "not found\n" };
}

function seenNote(r: ProvisioningRequest, id: Identification): Parameters<PhoneDirectory["noteSeen"]>[0] {
  const note: Parameters<PhoneDirectory["noteSeen"]>[0] = { mac: id.mac!, ip: r.source };
  if (id.vendor !== undefined) note.vendor = id.vendor;
  // A model the profiles know is kept canonical (`<vendor>/<model id>`), so `phone adopt` and
  // `phone seen` read it as every other surface writes it; an unknown one as the phone said it.
  const model = id.model !== undefined && id.vendor !== undefined ? `${id.vendor}/${id.model}` : id.rawModel;
  if (model !== undefined) note.model = model;
  if (id.firmware !== undefined) note.firmware = id.firmware;
  if (r.userAgent !== undefined) note.userAgent = forLog(r.userAgent, 256)!;
  return note;
}
