// Registrar, RFC 3261 §10.3, with digest authentication (RFC 3261 §22, RFC 8760) and the
// defences against scanners and guessers (docs/architecture.md, guard): one challenge and one 403 for every
// user, known or not; failures counted per source and per account; each device may bind
// only its own address-of-record.
import { parseAuthorization, type DigestAuthenticator } from "./digest.ts";
import type { AuthGuard } from "./guard.ts";
import type { Binding, LocationService } from "./location.ts";
import { getHeader, getHeaders, parseNameAddr } from "./message.ts";
import { detached } from "../strings.ts";
import { createResponse } from "./serialize.ts";
import { parseUri } from "./uri.ts";
import type { Flow, SipHeader, SipRequest, SipResponse } from "./types.ts";
import type { Logger } from "../log.ts";
import type { EventBus } from "../bus.ts";
import { randomBytes } from "node:crypto";

export interface DeviceCredentials {
  deviceId: string;
  username: string;
  password: string;
}

export interface RegistrarOptions {
  realm: string;
  minExpires: number;
  maxExpires: number;
  defaultExpires: number;
  /** Contacts one AOR may hold; more are refused (a phone has one, a soft client a few). */
  maxContactsPerAor: number;
  authenticator: DigestAuthenticator;
  guard: AuthGuard;
  credentials: (username: string) => DeviceCredentials | undefined;
  location: LocationService;
  /**
   * Called when a device proved its password for its own AOR from this flow: the agent
   * remembers the address in the store so the auth guard's exemption survives a restart.
   */
  onAuthenticated?: (device: DeviceCredentials, flow: Flow) => void;
  bus: EventBus;
  log: Logger;
  now?: () => number;
}


const MAX_EXPIRES_VALUE = 2 ** 32 - 1;

function toTag(): string {
  return randomBytes(6).toString("hex");
}

/** RFC 3261 §25.1: qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] ). */
const QVALUE = /^(?:0(?:\.\d{0,3})?|1(?:\.0{0,3})?)$/;

/**
 * Longest values a binding keeps (the store's limits, agent/store/schema.ts checkBinding): a
 * binding answered 200 must also survive a restart, so longer ones are refused up front.
 */
const MAX_CONTACT_CHARS = 2048;
const MAX_CALL_ID_CHARS = 1024;
const MAX_INSTANCE_CHARS = 512;
const MAX_USER_AGENT_CHARS = 512;

/** User-Agent is informational: tabs (legal inside a value) and overlong text are evened out. */
function storableUserAgent(v: string | undefined): string | undefined {
  return v === undefined ? undefined : detached(v.replace(/[\x00-\x1f\x7f]/g, " ").slice(0, MAX_USER_AGENT_CHARS));
}

function parseDelta(v: string | null | undefined): number | undefined {
  if (v === null || v === undefined) return undefined;
  const t = v.trim();
  if (!/^\d{1,10}$/.test(t)) return undefined;
  // RFC 3261 §20.19: a huge value is treated as the largest we allow, never wraps (RFC 4475 scalar02).
  return Math.min(Number(t), MAX_EXPIRES_VALUE);
}

export class Registrar {
  private readonly now: () => number;

  constructor(private readonly o: RegistrarOptions) {
    this.now = o.now ?? Date.now;
  }

  private reply(req: SipRequest, status: number, reason: string, headers: SipHeader[] = []): SipResponse {
    return createResponse(req, status, reason, { toTag: toTag(), headers });
  }

  /** The one 403 every failure gets: wrong password, unknown user, locked account. */
  private refuse(req: SipRequest, source: string, username: string | undefined, reason: string): SipResponse {
    // Told before it is counted, so a ban this failure triggers is logged after it.
    this.o.log.info("registration refused", { source, username, reason });
    this.o.bus.emit("auth.failure", { source, username, reason, at: this.now() });
    this.o.guard.noteFailure(source, username);
    return this.reply(req, 403, "Forbidden");
  }

  /**
   * Answer a REGISTER. Banned and over-rate sources never get here: the agent drops them
   * before a transaction exists (guard.isBanned / guard.noteRequest), so every request
   * that reaches the registrar gets an answer.
   */
  handle(req: SipRequest, flow: Flow): SipResponse {
    const source = flow.remoteAddress;

    // RFC 3261 §10.3 step 5: the To header must be a SIP or SIPS AOR (RFC 4475 unksm2).
    const toUri = parseUri(req.to.uri);
    if (!toUri || (toUri.scheme !== "sip" && toUri.scheme !== "sips") || !toUri.user) {
      return this.reply(req, 400, "Bad Request (To must be a sip: address-of-record)");
    }

    // Step 3: authenticate before anything else is revealed. A UA may answer several
    // realms at once, so every Authorization value is offered to the verifier.
    const authorization = req.headers.filter((h) => h.name === "authorization").map((h) => h.value);
    const claimed = claimedUser(authorization);
    if (claimed !== undefined && this.o.guard.isLockedOut(source, claimed)) {
      // The account is under attack from elsewhere: refused exactly like a wrong password.
      return this.refuse(req, source, claimed, "account locked out");
    }
    const verdict = this.o.authenticator.verify({
      method: req.method,
      authorization: authorization.length > 0 ? authorization : undefined,
      // RFC 7616 §3.4.6: the digest uri must be the Request-URI of this REGISTER.
      requestUri: req.uri,
      lookup: (username) => {
        const c = this.o.credentials(username);
        return c ? { username: c.username, password: c.password } : undefined;
      },
    });
    switch (verdict.kind) {
      case "missing":
        return this.reply(req, 401, "Unauthorized", this.o.authenticator.challenge());
      case "malformed":
        // Unusable credentials (RFC 7616 §3.4.6 / RFC 2617 §3.2.2); not a password guess.
        return this.reply(req, 400, `Bad Request (${verdict.reason})`);
      case "stale":
        return this.reply(req, 401, "Unauthorized", this.o.authenticator.challenge({ stale: true }));
      case "failed":
        return this.refuse(req, source, verdict.username, verdict.reason);
      case "ok":
        break;
    }
    const username = verdict.username;
    const device = this.o.credentials(username);
    if (!device) return this.reply(req, 403, "Forbidden");
    this.o.guard.noteSuccess(source, username);

    // Step 6: the authenticated user may bind only its own address-of-record.
    if (toUri.user !== device.username) {
      this.o.log.info("registration for a foreign AOR refused", { source, username, to: req.to.uri });
      return this.reply(req, 403, "Forbidden (may register only its own address)");
    }
    this.o.onAuthenticated?.(device, flow);
    return this.applyContacts(req, flow, device);
  }

  /** RFC 3261 §10.3 steps 6-8: validate the Contact set, then replace the bindings. */
  private applyContacts(req: SipRequest, flow: Flow, device: DeviceCredentials): SipResponse {
    const now = this.now();
    const aor = device.username;
    const existing = this.o.location.lookup(aor);
    const headerExpires = getHeader(req, "expires");
    const defaultExpires = headerExpires !== undefined ? parseDelta(headerExpires) : this.o.defaultExpires;
    if (headerExpires !== undefined && defaultExpires === undefined) return this.reply(req, 400, "Bad Request (Expires)");
    const contactValues = getHeaders(req, "contact");

    // No Contact: a query for the current bindings (§10.2.3).
    if (contactValues.length === 0) return this.ok(req, existing);

    // "Contact: *" removes every binding, only with Expires: 0 and alone (§10.2.2).
    if (contactValues.some((c) => c.trim() === "*")) {
      if (contactValues.length !== 1 || defaultExpires !== 0) return this.reply(req, 400, "Bad Request (Contact: * needs Expires: 0 and no other contact)");
      const stale = existing.some((b) => b.callId === req.callId && b.cseq >= req.cseq.seq);
      if (stale) return this.reply(req, 500, "Server Internal Error (out-of-order CSeq)");
      this.o.location.replace(aor, device.deviceId, [], "register");
      return this.ok(req, []);
    }

    const next = new Map<string, Binding>(existing.map((b) => [normalizeContact(b.contact), b]));
    for (const value of contactValues) {
      const na = parseNameAddr(value);
      const uri = na ? parseUri(na.uri) : undefined;
      if (!na || !uri || uri.host === "") return this.reply(req, 400, "Bad Request (Contact)");
      const contactExpires = na.params.has("expires") ? parseDelta(na.params.get("expires")) : defaultExpires;
      if (contactExpires === undefined) return this.reply(req, 400, "Bad Request (Contact expires)");
      const key = normalizeContact(na.uri);
      const prior = next.get(key);
      // Step 7: same Call-ID with a CSeq not higher is out of order (RFC 3261 §10.3).
      if (prior && prior.callId === req.callId && prior.cseq >= req.cseq.seq) {
        return this.reply(req, 500, "Server Internal Error (out-of-order CSeq)");
      }
      if (contactExpires === 0) {
        next.delete(key);
        continue;
      }
      // §10.3 step 6: too brief a registration is refused with the minimum (423).
      if (contactExpires < this.o.minExpires) {
        return this.reply(req, 423, "Interval Too Brief", [{ name: "min-expires", value: String(this.o.minExpires) }]);
      }
      const expires = Math.min(contactExpires, this.o.maxExpires);
      const q = na.params.get("q");
      if (q !== undefined && (q === null || !QVALUE.test(q))) return this.reply(req, 400, "Bad Request (Contact q)");
      const instance = na.params.get("+sip.instance") ?? undefined;
      if (na.uri.length > MAX_CONTACT_CHARS || req.callId.length > MAX_CALL_ID_CHARS || (instance?.length ?? 0) > MAX_INSTANCE_CHARS) {
        return this.reply(req, 400, "Bad Request (Contact, Call-ID or +sip.instance too long)");
      }
      next.set(key, {
        deviceId: device.deviceId,
        aor,
        // A binding outlives the REGISTER it came from: its strings are copies (message.ts detached).
        contact: detached(na.uri),
        expiresAt: now + expires * 1000,
        callId: detached(req.callId),
        cseq: req.cseq.seq,
        q: q ? Number(q) : undefined,
        flow: { ...flow },
        userAgent: storableUserAgent(getHeader(req, "user-agent")),
        instance: instance === undefined ? undefined : detached(instance),
      });
    }
    const bindings = [...next.values()];
    if (bindings.length > this.o.maxContactsPerAor) {
      return this.reply(req, 403, `Forbidden (at most ${this.o.maxContactsPerAor} contacts)`);
    }
    this.o.location.replace(aor, device.deviceId, bindings, "register");
    return this.ok(req, bindings);
  }

  /** 200 OK listing every current binding with its remaining lifetime (§10.3 step 8). */
  private ok(req: SipRequest, bindings: readonly Binding[]): SipResponse {
    const now = this.now();
    const headers: SipHeader[] = bindings.map((b) => ({
      name: "contact",
      value: `<${b.contact}>;expires=${Math.max(0, Math.round((b.expiresAt - now) / 1000))}`,
    }));
    headers.push({ name: "date", value: new Date(now).toUTCString() });
    return this.reply(req, 200, "OK", headers);
  }
}

/** Contact URIs compare case-insensitively on scheme and host (RFC 3261 §19.1.4, simplified). */
function normalizeContact(uri: string): string {
  return uri.trim().toLowerCase();
}

/** The username a Digest Authorization claims, for the per-account lock-out check. */
function claimedUser(values: readonly string[]): string | undefined {
  for (const v of values) {
    const parsed = parseAuthorization(v);
    if ("error" in parsed || parsed.scheme.toLowerCase() !== "digest") continue;
    const u = parsed.params.get("username");
    if (u) return u;
  }
  return undefined;
}
