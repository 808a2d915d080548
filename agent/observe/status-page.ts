// The local status page (settings statusPageEnabled / statusPageListen): read-only, behind a
// login with the installer password (the scrypt hash in serialPassword), HTTPS when httpsCert
// and httpsKey are set. The page (status-assets.ts, shipped inside the agent) opens one
// server-sent-events stream (/events) and redraws from each snapshot; the server sends a new
// snapshot at most every 250 ms after bus events (presence, calls, site) and every 5 s for the
// clock, so a busy site never becomes a polling storm.
//
// Sessions: a random 256-bit id in an HttpOnly, SameSite=Strict cookie (Secure over HTTPS),
// idle expiry 8 h. Cross-site requests are refused: POSTs need an Origin equal to this page's
// own (RFC 6454 §7; browsers send it on every POST), and any request marked
// Sec-Fetch-Site: cross-site or same-site (Fetch Metadata) other than a plain navigation to /
// gets 403. Wrong passwords: 5 in a row from one address lock it out for 60 s, doubling.
import crypto from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import https from "node:https";
import type { EventBus } from "../bus.ts";
import type { Logger } from "../log.ts";
import type { CallRecord, DeviceRecord, SeenPhone } from "../store/schema.ts";
import type { DevicePresence } from "../presence/presence.ts";
import type { Group, User } from "../routing/model.ts";
import type { RingingCall } from "../console/calls-now.ts";
import { verifyInstallerPassword } from "../appliance/password.ts";
import { hostPort } from "../sip/requests.ts";
import { FIRST_FORK_BUCKETS } from "./metrics.ts";
import { APP_CSS, APP_HTML, APP_JS, LOGIN_HTML } from "./status-assets.ts";

/** What the page shows, read from the running agent. */
export interface StatusSource {
  siteId: string;
  startedAt: number;
  devices(): readonly Readonly<DeviceRecord>[];
  presence(): DevicePresence[];
  /** Where each registered device is: its registration's source address. */
  bindings(): Array<{ deviceId: string; remoteAddress: string; remotePort: number; transport: string }>;
  seenPhones(): readonly Readonly<SeenPhone>[];
  site(): { users: readonly User[]; groups: readonly Group[] } | null;
  activeCallsOf(userId: string): number;
  ringing(): RingingCall[];
  activeCalls(): number;
  recentCalls(limit: number): readonly Readonly<CallRecord>[];
  latency(): { p50Us: number; p99Us: number; count: number; overBudget: number; budgetUs: number };
  link(): "up" | "down" | "off";
}

export type MemberState = "ringing" | "talking" | "away" | "logged out" | "available";

export interface StatusSnapshot {
  siteId: string;
  now: number;
  uptimeS: number;
  link: "up" | "down" | "off";
  calls: { active: number; ringing: Array<{ callId: string; caller: string; group: string | undefined; ringingNow: string[]; sinceS: number }> };
  phones: Array<{ id: string; username: string; name: string | undefined; kind: string; online: boolean; mac: string | undefined; model: string | undefined; firmware: string | undefined; lastConfigFetch: string | undefined; address: string | undefined }>;
  groups: Array<{ id: string; name: string; number: string; strategy: string; members: Array<{ id: string; name: string; extension: string; state: MemberState }> }>;
  missed: Array<{ at: number; caller: string; target: string; group: string | undefined; outcome: string; offered: string[] }>;
  latency: { p50Us: number; p99Us: number; count: number; overBudget: number; budgetUs: number; buckets: Array<{ le: string; count: number }> };
}

const MISSED_SHOWN = 15;
const MISSED_OUTCOMES = new Set(["missed", "busy"]);

/** Who is ringing now in a call: the last member offered for one-at-a-time strategies, everyone offered for the others. */
export function ringingNow(call: RingingCall, strategy: string | undefined): string[] {
  if (strategy === "sequential" || strategy === "evenly") return call.offered.slice(-1);
  return [...call.offered];
}

/** A member's state, most telling first: ringing, talking, away, logged out (no device online), available. */
export function memberState(f: { ringing: boolean; activeCalls: number; availability: string | undefined; devicesOnline: number }): MemberState {
  if (f.ringing) return "ringing";
  if (f.activeCalls > 0) return "talking";
  if (f.availability === "away" || f.availability === "dnd") return "away";
  if (f.devicesOnline === 0) return "logged out";
  return "available";
}

/** First-fork latency counts per bucket since start, fed from call.first-fork events. */
export class LatencyBuckets {
  private readonly counts = new Array<number>(FIRST_FORK_BUCKETS.length + 1).fill(0);

  record(us: number): void {
    const s = us / 1e6;
    let i = FIRST_FORK_BUCKETS.findIndex((b) => s <= b);
    if (i < 0) i = FIRST_FORK_BUCKETS.length;
    this.counts[i]!++;
  }

  /** Non-cumulative counts with their upper bound, as the chart draws them. */
  list(): Array<{ le: string; count: number }> {
    return this.counts.map((count, i) => ({ le: i < FIRST_FORK_BUCKETS.length ? fmtSeconds(FIRST_FORK_BUCKETS[i]!) : "more", count }));
  }
}

function fmtSeconds(s: number): string {
  return s < 0.001 ? `${Math.round(s * 1e6)} µs` : s < 1 ? `${+(s * 1000).toFixed(2)} ms` : `${s} s`;
}

export function buildSnapshot(src: StatusSource, buckets: LatencyBuckets, now: number = Date.now()): StatusSnapshot {
  const site = src.site();
  const pres = new Map(src.presence().map((p) => [p.deviceId, p]));
  const addr = new Map<string, string>();
  for (const b of src.bindings()) addr.set(b.deviceId, `${b.transport} ${hostPort(b.remoteAddress, b.remotePort)}`);
  const seen = new Map(src.seenPhones().map((p) => [p.mac, p]));
  const devices = src.devices();
  const strategyOf = new Map((site?.groups ?? []).map((g) => [g.id, g.strategy]));
  const ringingCalls = src.ringing();
  const ringingMembers = new Set<string>();
  const calls = ringingCalls.map((c) => {
    const rn = ringingNow(c, c.groupId === undefined ? undefined : strategyOf.get(c.groupId));
    for (const m of rn) ringingMembers.add(m);
    return { callId: c.callId, caller: c.caller, group: c.groupId, ringingNow: rn, sinceS: Math.max(0, Math.round((now - c.since) / 1000)) };
  });
  const onlineByOwner = new Map<string, number>();
  for (const d of devices) if (d.owner !== undefined && pres.get(d.id)?.online) onlineByOwner.set(d.owner, (onlineByOwner.get(d.owner) ?? 0) + 1);
  const users = new Map((site?.users ?? []).map((u) => [u.id, u]));
  const l = src.latency();
  return {
    siteId: src.siteId,
    now,
    uptimeS: Math.round((now - src.startedAt) / 1000),
    link: src.link(),
    calls: { active: src.activeCalls(), ringing: calls },
    phones: devices.map((d) => {
      const s = d.mac !== undefined ? seen.get(d.mac) : undefined;
      const p = pres.get(d.id);
      return {
        id: d.id,
        username: d.username,
        name: d.displayName,
        kind: d.kind,
        online: p?.online === true,
        mac: d.mac,
        model: d.model ?? s?.model,
        firmware: s?.firmware,
        lastConfigFetch: s?.lastSeen,
        address: addr.get(d.id) ?? (s ? `http ${s.ip}` : undefined),
      };
    }),
    groups: (site?.groups ?? []).map((g) => ({
      id: g.id,
      name: g.name,
      number: g.number,
      strategy: g.strategy,
      members: g.members.map((id) => {
        const u = users.get(id);
        return { id, name: u?.name ?? id, extension: u?.extension ?? "", state: memberState({ ringing: ringingMembers.has(id), activeCalls: src.activeCallsOf(id), availability: u?.availability, devicesOnline: onlineByOwner.get(id) ?? 0 }) };
      }),
    })),
    missed: src
      .recentCalls(200)
      .filter((c) => MISSED_OUTCOMES.has(c.outcome))
      .slice(0, MISSED_SHOWN)
      .map((c) => ({ at: c.at, caller: c.caller, target: c.target, group: c.groupId, outcome: c.outcome, offered: [...c.offered] })),
    latency: { ...l, buckets: buckets.list() },
  };
}

// --- login lock-out -------------------------------------------------------------------------

/** Wrong passwords per source: `max` in a row lock the source for lockMs, doubling each time. */
export class LoginGuard {
  private readonly bySource = new Map<string, { failures: number; lockedUntil: number; locks: number }>();

  constructor(private readonly max = 5, private readonly lockMs = 60_000, private readonly now: () => number = Date.now) {}

  lockedForMs(source: string): number {
    const e = this.bySource.get(source);
    return e ? Math.max(0, e.lockedUntil - this.now()) : 0;
  }

  failed(source: string): void {
    if (this.bySource.size >= 10_000 && !this.bySource.has(source)) this.bySource.delete(this.bySource.keys().next().value!);
    const e = this.bySource.get(source) ?? { failures: 0, lockedUntil: 0, locks: 0 };
    e.failures++;
    if (e.failures >= this.max) {
      e.lockedUntil = this.now() + Math.min(this.lockMs * 2 ** e.locks, 86_400_000);
      e.locks++;
      e.failures = 0;
    }
    this.bySource.set(source, e);
  }

  succeeded(source: string): void {
    this.bySource.delete(source);
  }
}

// --- the server -----------------------------------------------------------------------------

export interface StatusPageOptions {
  host: string;
  port: number;
  /** PEM files; both set: HTTPS. */
  tls?: { cert: string; key: string };
  /** The installer password's scrypt hash (settings.serialPassword); read on every login, so a SIGHUP change applies. */
  passwordHash: () => string;
  source: StatusSource;
  bus: EventBus;
  log: Logger;
}

const COOKIE = "ringedge_session";
const SESSION_IDLE_MS = 8 * 3600_000;
const MAX_SESSIONS = 100;
const MAX_STREAMS = 32;
const PUSH_DEBOUNCE_MS = 250;
const PUSH_PERIOD_MS = 5000;

const SECURITY_HEADERS: Record<string, string> = {
  "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  "x-content-type-options": "nosniff",
  // Not no-referrer: under it browsers send "Origin: null" on same-origin form posts.
  "referrer-policy": "same-origin",
  "cache-control": "no-store",
};

export class StatusPage {
  private server: http.Server | undefined;
  private readonly sessions = new Map<string, { lastUsed: number }>();
  private readonly streams = new Set<http.ServerResponse>();
  private readonly guard = new LoginGuard();
  private readonly buckets = new LatencyBuckets();
  private readonly off: Array<() => void> = [];
  private pushTimer: NodeJS.Timeout | undefined;
  private periodTimer: NodeJS.Timeout | undefined;
  private scheme: "http" | "https" = "http";

  constructor(private readonly o: StatusPageOptions) {}

  async start(): Promise<void> {
    const b = this.o.bus;
    const soon = (): void => this.schedulePush();
    this.off.push(
      b.on("call.first-fork", (e) => {
        this.buckets.record(e.latencyUs);
        soon();
      }),
      b.on("call.offered", soon),
      b.on("call.answered", soon),
      b.on("call.missed", soon),
      b.on("device.presence", soon),
      b.on("site.applied", soon),
      b.on("provisioning.request", soon),
    );
    const opts: http.ServerOptions = { maxHeaderSize: 16_384, requestTimeout: 15_000, headersTimeout: 10_000, keepAliveTimeout: 5_000 };
    let server: http.Server;
    if (this.o.tls) {
      server = https.createServer({ ...opts, cert: fs.readFileSync(this.o.tls.cert), key: fs.readFileSync(this.o.tls.key) }, (q, s) => this.onRequest(q, s));
      this.scheme = "https";
    } else server = http.createServer(opts, (q, s) => this.onRequest(q, s));
    server.maxHeadersCount = 64;
    server.on("clientError", (_e, socket) => socket.destroy());
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.o.port, this.o.host, () => resolve());
    });
    this.server = server;
    this.periodTimer = setInterval(() => this.push(), PUSH_PERIOD_MS);
    this.periodTimer.unref();
    this.o.log.info("status page listening", { url: `${this.scheme}://${hostPort(this.o.host, this.address()!.port)}/` });
  }

  address(): { address: string; port: number } | undefined {
    const a = this.server?.address();
    return a && typeof a === "object" ? { address: a.address, port: a.port } : undefined;
  }

  async stop(): Promise<void> {
    for (const f of this.off.splice(0)) f();
    clearInterval(this.periodTimer);
    clearTimeout(this.pushTimer);
    for (const s of this.streams) s.end();
    this.streams.clear();
    const s = this.server;
    this.server = undefined;
    if (!s) return;
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }

  private schedulePush(): void {
    if (this.pushTimer !== undefined || this.streams.size === 0) return;
    this.pushTimer = setTimeout(() => {
      this.pushTimer = undefined;
      this.push();
    }, PUSH_DEBOUNCE_MS);
    this.pushTimer.unref();
  }

  private push(): void {
    if (this.streams.size === 0) return;
    const data = this.snapshotText();
    for (const s of this.streams) s.write(`event: status\ndata: ${data}\n\n`);
  }

  private snapshotText(): string {
    // One line of JSON: SSE data lines cannot hold a newline (JSON.stringify escapes them).
    return JSON.stringify(buildSnapshot(this.o.source, this.buckets));
  }

  // --- requests ---

  private onRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
    try {
      void this.route(req, res).catch((e: unknown) => this.fail(res, e));
    } catch (e) {
      this.fail(res, e);
    }
  }

  private fail(res: http.ServerResponse, e: unknown): void {
    this.o.log.error("status page request failed", { err: (e as Error).message });
    if (!res.headersSent) this.send(res, 500, "text/plain; charset=utf-8", "internal error\n");
    else res.destroy();
  }

  private send(res: http.ServerResponse, status: number, type: string, body: string, extra: Record<string, string | string[]> = {}): void {
    res.writeHead(status, { ...SECURITY_HEADERS, "content-type": type, ...extra });
    res.end(body);
  }

  private async route(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const path = (req.url ?? "/").split("?")[0]!;
    const method = req.method ?? "GET";
    const site = req.headers["sec-fetch-site"];
    const crossSite = site === "cross-site" || site === "same-site";
    // A cross-site navigation to the front page may land on the login form; nothing else.
    if (crossSite && !(method === "GET" && path === "/" && req.headers["sec-fetch-mode"] === "navigate")) return this.refuse(req, res, 403, "cross-site request refused");
    if (method === "POST" && !this.sameOrigin(req)) return this.refuse(req, res, 403, "cross-site request refused");

    if (path === "/app.js" && method === "GET") return this.send(res, 200, "text/javascript; charset=utf-8", APP_JS);
    if (path === "/app.css" && method === "GET") return this.send(res, 200, "text/css; charset=utf-8", APP_CSS);
    if (path === "/login" && method === "POST") return this.login(req, res);
    if (path === "/logout" && method === "POST") {
      const id = this.sessionOf(req);
      if (id !== undefined) this.sessions.delete(id);
      return this.send(res, 303, "text/plain; charset=utf-8", "", { location: "/", "set-cookie": this.cookie("", 0) });
    }
    if (path === "/" && method === "GET") {
      if (this.sessionOf(req) === undefined) return this.send(res, 200, "text/html; charset=utf-8", LOGIN_HTML.replace("{{error}}", ""));
      return this.send(res, 200, "text/html; charset=utf-8", APP_HTML);
    }
    if ((path === "/events" || path === "/api/status") && method === "GET") {
      if (this.sessionOf(req) === undefined) return this.refuse(req, res, 401, "log in first");
      if (path === "/api/status") return this.send(res, 200, "application/json", this.snapshotText());
      return this.openStream(res);
    }
    if (["/", "/login", "/logout", "/events", "/api/status", "/app.js", "/app.css"].includes(path)) return this.send(res, 405, "text/plain; charset=utf-8", "method not allowed\n", { allow: path === "/login" || path === "/logout" ? "POST" : "GET" });
    return this.send(res, 404, "text/plain; charset=utf-8", "not found\n");
  }

  private refuse(req: http.IncomingMessage, res: http.ServerResponse, status: number, why: string): void {
    this.o.log.info("status page request refused", { status, why, source: req.socket.remoteAddress, path: (req.url ?? "").slice(0, 100) });
    this.send(res, status, "text/plain; charset=utf-8", `${why}\n`);
  }

  /**
   * RFC 6454 §7: the Origin of a POST must be this page's own (scheme://host[:port] as the
   * browser addressed it); a browser that sends "Origin: null" must say same-origin in
   * Sec-Fetch-Site (Fetch Metadata, which pages cannot set). Neither: refused.
   */
  private sameOrigin(req: http.IncomingMessage): boolean {
    const origin = req.headers.origin;
    const host = req.headers.host;
    if (origin !== undefined && origin !== "null") return host !== undefined && origin === `${this.scheme}://${host}`;
    return req.headers["sec-fetch-site"] === "same-origin";
  }

  private cookie(value: string, maxAgeS: number): string {
    return `${COOKIE}=${value}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${maxAgeS}${this.scheme === "https" ? "; Secure" : ""}`;
  }

  /** The valid session id the request carries, refreshed; undefined when none. */
  private sessionOf(req: http.IncomingMessage): string | undefined {
    const header = req.headers.cookie ?? "";
    const m = new RegExp(`(?:^|;\\s*)${COOKIE}=([A-Za-z0-9_-]{43})(?:;|$)`).exec(header);
    if (!m) return undefined;
    const id = m[1]!;
    const s = this.sessions.get(id);
    const now = Date.now();
    if (!s) return undefined;
    if (now - s.lastUsed > SESSION_IDLE_MS) {
      this.sessions.delete(id);
      return undefined;
    }
    s.lastUsed = now;
    return id;
  }

  private async login(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const source = req.socket.remoteAddress ?? "?";
    const locked = this.guard.lockedForMs(source);
    if (locked > 0) {
      req.resume();
      return this.send(res, 429, "text/html; charset=utf-8", LOGIN_HTML.replace("{{error}}", `<p class="error">Too many wrong passwords; try again in ${Math.ceil(locked / 1000)} s.</p>`), { "retry-after": String(Math.ceil(locked / 1000)) });
    }
    const type = (req.headers["content-type"] ?? "").split(";")[0]!.trim().toLowerCase();
    const body = await readBody(req, 2048);
    if (body === undefined || type !== "application/x-www-form-urlencoded") return this.send(res, 400, "text/plain; charset=utf-8", "bad login request\n");
    const password = new URLSearchParams(body).get("password") ?? "";
    const hash = this.o.passwordHash();
    const ok = hash !== "" && password !== "" && password.length <= 128 && (await verifyInstallerPassword(password, hash));
    if (!ok) {
      this.guard.failed(source);
      this.o.log.warn("status page login refused", { source, why: hash === "" ? "no installer password set (serialPassword)" : "wrong password" });
      return this.send(res, 401, "text/html; charset=utf-8", LOGIN_HTML.replace("{{error}}", '<p class="error">Wrong password.</p>'));
    }
    this.guard.succeeded(source);
    if (this.sessions.size >= MAX_SESSIONS) this.sessions.delete(this.sessions.keys().next().value!);
    const id = crypto.randomBytes(32).toString("base64url");
    this.sessions.set(id, { lastUsed: Date.now() });
    this.o.bus.emit("audit.change", { actor: `installer (status page, ${source})`, action: "status.login", target: undefined, at: Date.now() });
    this.send(res, 303, "text/plain; charset=utf-8", "", { location: "/", "set-cookie": this.cookie(id, SESSION_IDLE_MS / 1000) });
  }

  private openStream(res: http.ServerResponse): void {
    if (this.streams.size >= MAX_STREAMS) return this.send(res, 503, "text/plain; charset=utf-8", "too many open status pages\n", { "retry-after": "10" });
    res.writeHead(200, { ...SECURITY_HEADERS, "content-type": "text/event-stream; charset=utf-8", connection: "keep-alive", "x-accel-buffering": "no" });
    res.socket?.setTimeout(0);
    // retry: the browser reconnects after 3 s if the stream drops (HTML Living Standard §9.2).
    res.write(`retry: 3000\nevent: status\ndata: ${this.snapshotText()}\n\n`);
    this.streams.add(res);
    res.on("close", () => this.streams.delete(res));
  }
}

/** The request body as text, at most `max` bytes; undefined when longer (the rest is drained). */
function readBody(req: http.IncomingMessage, max: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    let size = 0;
    const parts: Buffer[] = [];
    let over = false;
    req.on("data", (d: Buffer) => {
      size += d.length;
      if (size > max) over = true;
      else parts.push(d);
    });
    req.on("end", () => resolve(over ? undefined : Buffer.concat(parts).toString("utf8")));
    req.on("error", () => resolve(undefined));
  });
}
