// The provisioning server: phones fetch their configuration files over HTTP or HTTPS, exactly
// at the paths their vendor's firmware asks for (device-profiles/*/profile.json `files`).
//
// Security model (provisioning.md §4):
// - A MAC address alone never unlocks credentials. Per-MAC files are served only for phones an
//   installer added. The full config (SIP password) needs the phone's own provisioning
//   credentials: HTTP Digest (RFC 7616, realm "ringedge-provisioning") or its URL token
//   (/p/<token>/<file>).
// - Those credentials reach the phone in a first-boot bootstrap config that carries no SIP
//   password. Bootstrap is trust-on-first-use: served once per phone, only within a window
//   after the installer added it; afterwards an unauthenticated request gets a 401 challenge.
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
import { timingSafeEqual } from "node:crypto";
import type { Logger } from "../agent/log.ts";
import { DigestAuthenticator, type DigestAlgorithm } from "../agent/sip/digest.ts";
import type { PhoneDirectory, PhoneRecord } from "./directory.ts";
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
}

export interface ProvisioningServerOptions {
  profiles: ReadonlyMap<string, Profile>;
  directory: PhoneDirectory;
  firmware: FirmwareStore;
  site: () => SiteDefaults;
  log: Logger;
  digestAlgorithms?: DigestAlgorithm[];
  /** Bootstrap is served only this long after the phone was added (trust on first use). */
  bootstrapWindowMs: number;
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

/** Trust-on-first-use state of each phone's bootstrap (in memory; the window bounds a restart). */
export class BootstrapGate {
  /** Device id → when its bootstrap (or its PnP per-device URL) was handed out. */
  private readonly served = new Map<string, number>();
  /** Device ids that have authenticated once: their bootstrap is closed for good. */
  private readonly authenticated = new Set<string>();
  /**
   * `persist` records a closed (or re-opened) bootstrap in the store, so that a restart does not
   * hand a phone's provisioning credentials out a second time.
   */
  constructor(
    private readonly windowMs: number,
    private readonly now: () => number,
    private readonly persist: (deviceId: string, at: string | undefined) => void = () => undefined,
  ) {}

  isOpen(phone: PhoneRecord): boolean {
    if (phone.provisioning?.bootstrapClosedAt !== undefined) return false;
    if (this.authenticated.has(phone.deviceId) || this.served.has(phone.deviceId)) return false;
    const added = Date.parse(phone.createdAt);
    return Number.isFinite(added) && this.now() - added <= this.windowMs;
  }

  /** Take the one bootstrap this phone gets; false when it is no longer open. */
  claim(phone: PhoneRecord): boolean {
    if (!this.isOpen(phone)) return false;
    this.served.set(phone.deviceId, this.now());
    this.persist(phone.deviceId, new Date(this.now()).toISOString());
    return true;
  }

  noteAuthenticated(deviceId: string): void {
    if (this.authenticated.has(deviceId)) return;
    this.authenticated.add(deviceId);
    this.persist(deviceId, new Date(this.now()).toISOString());
  }

  /** The installer re-opens a phone's bootstrap (phone replaced, factory reset). */
  reopen(deviceId: string): void {
    this.served.delete(deviceId);
    this.authenticated.delete(deviceId);
    this.persist(deviceId, undefined);
  }
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
}

export class ProvisioningServer {
  readonly gate: BootstrapGate;
  readonly limiter: BurstLimiter;
  readonly counters: ServerCounters = { served: 0, bootstrap: 0, full: 0, firmware: 0, refused: 0, notFound: 0, unauthorized: 0, rateLimited: 0 };
  private readonly digest: DigestAuthenticator;
  private readonly now: () => number;
  private servers: Array<{ scheme: "http" | "https"; server: http.Server }> = [];

  constructor(private readonly opts: ProvisioningServerOptions) {
    this.now = opts.now ?? Date.now;
    this.gate = new BootstrapGate(opts.bootstrapWindowMs, this.now, (id, at) => opts.directory.setBootstrapClosed?.(id, at));
    const burst = opts.burst ?? { max: 20, windowMs: 10_000, blockMs: 60_000 };
    this.limiter = new BurstLimiter({ ...burst, now: this.now, maxTracked: 10_000 });
    this.digest = new DigestAuthenticator({ realm: PROVISIONING_REALM, algorithms: opts.digestAlgorithms ?? ["SHA-256", "MD5"], header: "www-authenticate", now: this.now });
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
    if (tokenPhone) {
      this.gate.noteAuthenticated(phone.deviceId);
      return this.render(r, profile, model, id, phone, false, "full");
    }
    const creds = phone.provisioning;
    const v = this.digest.verify({
      method: r.method,
      authorization: r.authorization,
      // Only this phone's own provisioning user counts: another phone's credentials unlock nothing here.
      lookup: (u) => (u === creds.user ? { username: u, password: creds.password } : undefined),
      requestUri: r.url,
    });
    switch (v.kind) {
      case "ok":
        this.gate.noteAuthenticated(phone.deviceId);
        return this.render(r, profile, model, id, phone, false, "full");
      case "stale":
        return { status: 401, headers: { "content-type": "text/plain", "www-authenticate": this.challenge(true) }, body: "stale nonce\n" };
      case "malformed":
        return this.counted(r, { status: 400, headers: { "content-type": "text/plain" }, body: "bad authorization\n", close: true }, `malformed credentials (${v.reason})`, { mac });
      case "failed":
        return this.counted(r, { status: 401, headers: { "content-type": "text/plain", "www-authenticate": this.challenge(false) }, body: "unauthorized\n" }, "wrong provisioning credentials", { mac, user: forLog(v.username, 64) });
      case "missing":
        break;
    }
    // No credentials: the bootstrap, once, within the window (a HEAD does not consume it).
    if (r.method === "HEAD" ? this.gate.isOpen(phone) : this.gate.claim(phone)) return this.render(r, profile, model, id, phone, true, "bootstrap");
    return { status: 401, headers: { "content-type": "text/plain", "www-authenticate": this.challenge(false) }, body: "unauthorized\n" };
  }

  private challenge(stale: boolean): string[] {
    return this.digest.challenge({ stale }).map((h) => h.value);
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
    };
  }

  private render(r: ProvisioningRequest, profile: Profile, model: ModelProfile, id: Identification, phone: PhoneRecord | undefined, bootstrap: boolean, stage: Stage): ProvisioningResponse {
    const out = renderConfig({
      profile,
      model: this.opts.firmware.modelForRender(model),
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
      await this.listen("https", https.createServer({ ...this.serverOptions(), cert, key }, (q, s) => this.onHttp("https", q, s)), this.opts.https);
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

function notFound(): ProvisioningResponse {
  return { status: 404, headers: { "content-type": "text/plain" }, body: "not found\n" };
}

function seenNote(r: ProvisioningRequest, id: Identification): Parameters<PhoneDirectory["noteSeen"]>[0] {
  const note: Parameters<PhoneDirectory["noteSeen"]>[0] = { mac: id.mac!, ip: r.source };
  if (id.vendor !== undefined) note.vendor = id.vendor;
  const model = id.model ?? id.rawModel;
  if (model !== undefined) note.model = model;
  if (id.firmware !== undefined) note.firmware = id.firmware;
  if (r.userAgent !== undefined) note.userAgent = forLog(r.userAgent, 256)!;
  return note;
}
