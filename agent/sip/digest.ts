// SIP digest authentication: RFC 3261 §22 with the RFC 7616 (formerly RFC 2617) digest
// computation and the RFC 8760 algorithm set for SIP (SHA-256, SHA-512-256, MD5).
//
// Mechanism only: this module parses credentials, mints and checks nonces and computes
// digests. Whether a request must be authenticated, which status to answer and whether a
// source gets banned is the caller's policy (see guard.ts for the counters).
//
// Nonces are stateless-verifiable: base64url(timestamp ‖ random ‖ HMAC(secret, timestamp ‖
// random ‖ realm)), so any nonce we minted can be checked without remembering it. The only
// per-nonce state is the highest nonce-count seen, kept in a bounded LRU map.

import { createHash, createHmac, getHashes, randomBytes, timingSafeEqual } from "node:crypto";
import { detached } from "../strings.ts";
import type { SipHeader } from "./types.ts";

// ---------------------------------------------------------------------------------------
// Algorithms

/** Digest algorithm names as written on the wire (RFC 7616 §3.3, RFC 8760 §2.2). */
export type DigestAlgorithm =
  | "MD5"
  | "MD5-sess"
  | "SHA-256"
  | "SHA-256-sess"
  | "SHA-512-256"
  | "SHA-512-256-sess";

type BaseAlgorithm = "MD5" | "SHA-256" | "SHA-512-256";

const NODE_HASH: Record<BaseAlgorithm, string> = {
  "MD5": "md5",
  "SHA-256": "sha256",
  "SHA-512-256": "sha512-256",
};

/** Whether node:crypto offers SHA-512/256 (OpenSSL ≥ 1.1.1 does; checked, not assumed). */
const HAS_SHA512_256 = getHashes().includes("sha512-256");

/** Every algorithm this build can verify, strongest first. */
export const SUPPORTED_ALGORITHMS: readonly DigestAlgorithm[] = [
  ...(HAS_SHA512_256 ? (["SHA-512-256", "SHA-512-256-sess"] as const) : []),
  "SHA-256",
  "SHA-256-sess",
  "MD5",
  "MD5-sess",
];

/** Case-insensitive lookup of an algorithm token (RFC 7616 §3.3: tokens compare without case). */
function algorithmFromToken(token: string): DigestAlgorithm | undefined {
  const upper = token.toUpperCase();
  for (const a of SUPPORTED_ALGORITHMS) if (a.toUpperCase() === upper) return a;
  return undefined;
}

function baseOf(alg: DigestAlgorithm): BaseAlgorithm {
  return (alg.endsWith("-sess") ? alg.slice(0, -5) : alg) as BaseAlgorithm;
}

function hashHex(alg: BaseAlgorithm, data: string | Buffer): string {
  return createHash(NODE_HASH[alg]).update(data).digest("hex");
}

// ---------------------------------------------------------------------------------------
// Pure digest computation (RFC 7616 §3.4.1–§3.4.3)

export interface DigestInputs {
  algorithm: DigestAlgorithm;
  username: string;
  realm: string;
  /** Either the clear password or the stored H(username:realm:password) for this algorithm. */
  password?: string;
  ha1?: string;
  nonce: string;
  method: string;
  /** The digest-uri exactly as sent in the uri parameter. */
  uri: string;
  /** "auth", "auth-int", or undefined for the RFC 2069 form (client side only). */
  qop?: "auth" | "auth-int";
  /** 8 hex digits, required with qop and with -sess. */
  nc?: string;
  cnonce?: string;
  /** Message body, hashed for auth-int. */
  body?: Buffer;
}

/** The request-digest in lower-case hex; undefined when the inputs are incomplete. */
export function digestResponse(p: DigestInputs): string | undefined {
  const base = baseOf(p.algorithm);
  let ha1: string;
  if (p.ha1 !== undefined) ha1 = p.ha1.toLowerCase();
  else if (p.password !== undefined) ha1 = hashHex(base, `${p.username}:${p.realm}:${p.password}`);
  else return undefined;
  if (p.algorithm.endsWith("-sess")) {
    // RFC 7616 §3.4.2: the session key binds HA1 to this nonce and cnonce.
    if (p.cnonce === undefined) return undefined;
    ha1 = hashHex(base, `${ha1}:${p.nonce}:${p.cnonce}`);
  }
  // RFC 7616 §3.4.3: auth-int adds the hash of the entity body.
  const a2 = p.qop === "auth-int"
    ? `${p.method}:${p.uri}:${hashHex(base, p.body ?? Buffer.alloc(0))}`
    : `${p.method}:${p.uri}`;
  const ha2 = hashHex(base, a2);
  if (p.qop === undefined) return hashHex(base, `${ha1}:${p.nonce}:${ha2}`); // RFC 2069 form
  if (p.nc === undefined || p.cnonce === undefined) return undefined;
  return hashHex(base, `${ha1}:${p.nonce}:${p.nc}:${p.cnonce}:${p.qop}:${ha2}`);
}

// ---------------------------------------------------------------------------------------
// Authorization / WWW-Authenticate parsing (RFC 3261 §25.1 grammar, RFC 7235 §2.1 shape)

/** Longest header value we look at; real digest credentials are a few hundred bytes. */
export const MAX_AUTH_HEADER_LENGTH = 4096;
/** Most auth-params accepted; RFC 7616 defines about a dozen. */
export const MAX_AUTH_PARAMS = 32;

export interface ParsedAuthorization {
  /** The scheme as written ("Digest", "NoOneKnowsThisScheme"); compare case-insensitively. */
  scheme: string;
  /** auth-param names lower-cased; quoted values unquoted and unescaped. */
  params: Map<string, string>;
  /** A bare token68 credential (RFC 7235 §2.1), for non-digest schemes such as Bearer. */
  token68?: string;
}

// RFC 3261 §25.1: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
const TOKEN_CHAR = new Uint8Array(128);
for (const c of "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~") {
  TOKEN_CHAR[c.charCodeAt(0)] = 1;
}
const isToken = (c: number): boolean => c < 128 && TOKEN_CHAR[c] === 1;
// Header values arrive unfolded, but tolerate CR/LF as whitespace anyway (RFC 3261 §7.3.1 LWS).
const isLws = (c: number): boolean => c === 0x20 || c === 0x09 || c === 0x0d || c === 0x0a;
const TOKEN68 = /^[A-Za-z0-9\-._~+/]+=*$/;

/**
 * Parses `scheme [auth-param *(, auth-param)]` or `scheme token68`. Lenient where real phones
 * are sloppy (unquoted values with '/' or ':', empty list elements), strict where ambiguity
 * could be abused (duplicate parameters, unterminated quotes). Never throws.
 */
export function parseAuthorization(value: string): ParsedAuthorization | { error: string } {
  if (typeof value !== "string") return { error: "not a string" };
  if (value.length > MAX_AUTH_HEADER_LENGTH) return { error: "header too long" };
  const s = value;
  const n = s.length;
  let i = 0;
  while (i < n && isLws(s.charCodeAt(i))) i++;
  const schemeStart = i;
  while (i < n && isToken(s.charCodeAt(i))) i++;
  if (i === schemeStart) return { error: "missing auth scheme" };
  const scheme = s.slice(schemeStart, i);
  const params = new Map<string, string>();
  if (i === n) return { scheme, params };
  if (!isLws(s.charCodeAt(i))) return { error: `unexpected character after scheme at ${i}` };
  while (i < n && isLws(s.charCodeAt(i))) i++;
  if (i === n) return { scheme, params };

  const rest = s.slice(i).trimEnd();
  if (TOKEN68.test(rest)) {
    // "abc" or "abc==" only: "realm=x" has a value after '=' so it stays an auth-param.
    return { scheme, params, token68: rest };
  }

  for (;;) {
    // Empty list elements are allowed (RFC 7230 §7 "#rule").
    while (i < n && (isLws(s.charCodeAt(i)) || s.charCodeAt(i) === 0x2c)) i++;
    if (i === n) break;
    const nameStart = i;
    while (i < n && isToken(s.charCodeAt(i))) i++;
    if (i === nameStart) return { error: `expected parameter name at ${i}` };
    const name = s.slice(nameStart, i).toLowerCase();
    while (i < n && isLws(s.charCodeAt(i))) i++;
    if (s.charCodeAt(i) !== 0x3d) return { error: `expected '=' after ${name}` };
    i++;
    while (i < n && isLws(s.charCodeAt(i))) i++;
    let val: string;
    if (s.charCodeAt(i) === 0x22) {
      // quoted-string with quoted-pair escapes (RFC 3261 §25.1)
      i++;
      let out = "";
      let chunk = i;
      for (;;) {
        if (i >= n) return { error: `unterminated quoted value for ${name}` };
        const c = s.charCodeAt(i);
        if (c === 0x22) break;
        if (c === 0x5c) {
          const next = s.charCodeAt(i + 1);
          if (i + 1 >= n || next === 0x0d || next === 0x0a) {
            return { error: `bad escape in ${name}` };
          }
          out += s.slice(chunk, i) + s[i + 1];
          i += 2;
          chunk = i;
          continue;
        }
        if ((c < 0x20 && c !== 0x09) || c === 0x7f) return { error: `control character in ${name}` };
        i++;
      }
      val = out + s.slice(chunk, i);
      i++; // closing quote
    } else {
      // Token value; accept any visible character except separators of this grammar so that
      // sloppy unquoted uri or nonce values still parse.
      const valStart = i;
      while (i < n) {
        const c = s.charCodeAt(i);
        if (isLws(c) || c === 0x2c || c === 0x22 || c < 0x20 || c === 0x7f) break;
        i++;
      }
      if (i === valStart) return { error: `empty value for ${name}` };
      val = s.slice(valStart, i);
    }
    // RFC 7235 §2.1: a parameter name occurs once per challenge; a duplicate is ambiguous.
    if (params.has(name)) return { error: `duplicate parameter ${name}` };
    if (params.size >= MAX_AUTH_PARAMS) return { error: "too many parameters" };
    params.set(name, val);
    while (i < n && isLws(s.charCodeAt(i))) i++;
    if (i === n) break;
    if (s.charCodeAt(i) !== 0x2c) return { error: `expected ',' at ${i}` };
  }
  return { scheme, params };
}

/** Quotes a value as a quoted-string, escaping '"' and '\' (RFC 3261 §25.1 quoted-pair). */
function quote(v: string): string {
  return `"${v.replace(/["\\]/g, (c) => `\\${c}`)}"`;
}

// ---------------------------------------------------------------------------------------
// Client side: answer a challenge (tests, and authenticating our own NOTIFYs to phones)

export interface ClientCredentials {
  method: string;
  uri: string;
  username: string;
  password: string;
  /** Nonce count for this nonce, starting at 1 (RFC 7616 §3.4). */
  nc?: number;
  /** Client nonce; random when omitted. */
  cnonce?: string;
  /** Body for qop=auth-int. */
  body?: Buffer;
}

/**
 * Builds an Authorization (or Proxy-Authorization) value answering one WWW-Authenticate or
 * Proxy-Authenticate value. Prefers qop=auth, then auth-int, then the RFC 2069 form when the
 * server offers no qop. Returns an error for challenges it cannot answer; never throws.
 */
export function computeAuthorization(
  challenge: string,
  opts: ClientCredentials,
): string | { error: string } {
  const parsed = parseAuthorization(challenge);
  if ("error" in parsed) return parsed;
  if (parsed.scheme.toLowerCase() !== "digest") return { error: `unsupported scheme ${parsed.scheme}` };
  const p = parsed.params;
  const realm = p.get("realm");
  const nonce = p.get("nonce");
  if (realm === undefined || nonce === undefined) return { error: "challenge lacks realm or nonce" };
  const algToken = p.get("algorithm");
  // RFC 7616 §3.3: an absent algorithm means MD5.
  const algorithm = algToken === undefined ? "MD5" : algorithmFromToken(algToken);
  if (algorithm === undefined) return { error: `unsupported algorithm ${algToken ?? ""}` };
  const offered = (p.get("qop") ?? "").split(",").map((q) => q.trim().toLowerCase());
  const qop = offered.includes("auth") ? "auth" : offered.includes("auth-int") ? "auth-int" : undefined;
  if (qop === undefined && p.has("qop")) return { error: "no supported qop offered" };
  const ncNum = opts.nc ?? 1;
  if (!Number.isInteger(ncNum) || ncNum < 1 || ncNum > 0xffffffff) return { error: "nc out of range" };
  const nc = ncNum.toString(16).padStart(8, "0");
  const cnonce = opts.cnonce ?? randomBytes(12).toString("hex");
  const needsCnonce = qop !== undefined || algorithm.endsWith("-sess");
  const response = digestResponse({
    algorithm,
    username: opts.username,
    realm,
    password: opts.password,
    nonce,
    method: opts.method,
    uri: opts.uri,
    ...(qop !== undefined ? { qop } : {}),
    ...(needsCnonce ? { nc, cnonce } : {}),
    ...(opts.body !== undefined ? { body: opts.body } : {}),
  });
  if (response === undefined) return { error: "incomplete digest inputs" };
  const parts = [
    `Digest username=${quote(opts.username)}`,
    `realm=${quote(realm)}`,
    `nonce=${quote(nonce)}`,
    `uri=${quote(opts.uri)}`,
    `response="${response}"`,
    `algorithm=${algorithm}`,
  ];
  if (needsCnonce) parts.push(`cnonce=${quote(cnonce)}`);
  const opaque = p.get("opaque");
  if (opaque !== undefined) parts.push(`opaque=${quote(opaque)}`);
  if (qop !== undefined) parts.push(`qop=${qop}`, `nc=${nc}`);
  return parts.join(", ");
}

// ---------------------------------------------------------------------------------------
// Server side

export interface Credentials {
  username: string;
  /** Clear password, if the store keeps it (the provisioning server needs it for configs). */
  password?: string;
  /** Pre-computed H(username:realm:password) in hex, per hash, when no password is kept. */
  ha1?: { md5?: string; sha256?: string; sha512_256?: string };
}

export type VerifyResult =
  | { kind: "ok"; username: string; algorithm: DigestAlgorithm }
  /** No credentials for our realm and scheme: send a challenge. */
  | { kind: "missing" }
  /**
   * The response was right for its nonce but the nonce is no good any more: challenge again
   * with stale=true (RFC 7616 §3.3) so the UA retries without asking its user.
   */
  | { kind: "stale"; reason: "expired" | "replay" | "unknown-nonce" }
  /**
   * Wrong password, unknown user, unoffered algorithm... Answer every one the same way.
   * `username` is the name the UA claimed (known or not), for the guard's account counter.
   */
  | { kind: "failed"; reason: string; username: string }
  /** Syntactically unusable credentials (RFC 2617 §3.2.2: 400 Bad Request). */
  | { kind: "malformed"; reason: string };

export interface DigestAuthenticatorOptions {
  realm: string;
  /** Offered in this order of preference, one challenge header each (RFC 8760 §2.4). */
  algorithms: DigestAlgorithm[];
  /** How long a nonce stays fresh; default 300 s. */
  nonceTtlMs?: number;
  now?: () => number;
  /** HMAC key for nonces; random per process when omitted (old nonces then come back stale). */
  secret?: Buffer;
  /** Registrar/UAS answers use WWW-Authenticate, proxies Proxy-Authenticate (RFC 3261 §22.3). */
  header?: "www-authenticate" | "proxy-authenticate";
  /** Sent in challenges and, when a UA returns it, required to match. */
  opaque?: string;
  /** Bound on nonces whose nonce-count we remember; default 100,000. */
  maxTrackedNonces?: number;
}

export interface VerifyInput {
  method: string;
  /** The Authorization / Proxy-Authorization value(s); several when the UA answers several realms. */
  authorization: string | readonly string[] | undefined;
  lookup: (username: string) => Credentials | undefined;
  /**
   * The Request-URI, when the caller wants the uri parameter checked against it
   * (RFC 7616 §3.4.6). Compared leniently — see sameResource(). Omit it where an upstream
   * proxy may legitimately rewrite the Request-URI.
   */
  requestUri?: string;
}

const TS_BYTES = 6; // milliseconds since 1970, good until year 10889
const RAND_BYTES = 12;
const MAC_BYTES = 16;
const NONCE_BYTES = TS_BYTES + RAND_BYTES + MAC_BYTES;
const NONCE_CHARS = Math.ceil((NONCE_BYTES * 4) / 3); // base64url without padding
const NONCE_SHAPE = new RegExp(`^[A-Za-z0-9_-]{${NONCE_CHARS}}$`);
/** A nonce stamped this far in the future (clock stepped back) is still taken as ours. */
const CLOCK_SKEW_MS = 5_000;
const NC_SHAPE = /^[0-9a-fA-F]{8}$/;
const HEX_SHAPE = /^[0-9a-fA-F]+$/;

export class DigestAuthenticator {
  readonly realm: string;
  readonly algorithms: readonly DigestAlgorithm[];
  private readonly nonceTtlMs: number;
  private readonly now: () => number;
  private readonly secret: Buffer;
  private readonly headerName: "www-authenticate" | "proxy-authenticate";
  private readonly opaque: string | undefined;
  private readonly maxTrackedNonces: number;
  /** nonce → highest nonce-count accepted with it; Map order is least recently used first. */
  private readonly highestNc = new Map<string, number>();
  /** Walks highestNc oldest first; everything behind it has been evicted. */
  private evictCursor: Iterator<string> = this.highestNc.keys();
  /** Newest timestamp of a nonce evicted from highestNc: older untracked nonces are unknown. */
  private evictedUpTo = -Infinity;
  /** Random password for unknown users so they cost exactly what known users cost. */
  private readonly dummyPassword: string;

  constructor(opts: DigestAuthenticatorOptions) {
    if (opts.realm.length === 0) throw new Error("realm must not be empty");
    if (opts.algorithms.length === 0) throw new Error("at least one algorithm");
    for (const a of opts.algorithms) {
      if (!SUPPORTED_ALGORITHMS.includes(a)) throw new Error(`algorithm ${a} not available`);
    }
    if (new Set(opts.algorithms).size !== opts.algorithms.length) throw new Error("duplicate algorithm");
    this.realm = opts.realm;
    this.algorithms = [...opts.algorithms];
    this.nonceTtlMs = opts.nonceTtlMs ?? 300_000;
    this.now = opts.now ?? Date.now;
    this.secret = opts.secret ?? randomBytes(32);
    this.headerName = opts.header ?? "www-authenticate";
    this.opaque = opts.opaque;
    this.maxTrackedNonces = Math.max(1, opts.maxTrackedNonces ?? 100_000);
    this.dummyPassword = randomBytes(16).toString("hex");
  }

  /** A fresh nonce: base64url(timestamp ‖ random ‖ HMAC(secret, timestamp ‖ random ‖ realm)). */
  issueNonce(): string {
    const buf = Buffer.alloc(NONCE_BYTES);
    buf.writeUIntBE(Math.max(0, Math.floor(this.now())), 0, TS_BYTES);
    randomBytes(RAND_BYTES).copy(buf, TS_BYTES);
    this.mac(buf.subarray(0, TS_BYTES + RAND_BYTES)).copy(buf, TS_BYTES + RAND_BYTES);
    return buf.toString("base64url");
  }

  /**
   * One challenge header per offered algorithm, most preferred first (RFC 8760 §2.4), all
   * with the same fresh nonce. qop="auth" is always offered (RFC 8760 §2.3 makes it mandatory).
   */
  challenge(opts?: { stale?: boolean }): SipHeader[] {
    const nonce = this.issueNonce();
    const tail = `${this.opaque !== undefined ? `, opaque=${quote(this.opaque)}` : ""}${opts?.stale === true ? ", stale=true" : ""}`;
    return this.algorithms.map((algorithm) => ({
      name: this.headerName,
      value: `Digest realm=${quote(this.realm)}, nonce="${nonce}"${tail}, algorithm=${algorithm}, qop="auth"`,
    }));
  }

  /** How many nonces have their nonce-count remembered (for status output). */
  trackedNonces(): number {
    return this.highestNc.size;
  }

  verify(input: VerifyInput): VerifyResult {
    const picked = this.pick(input.authorization);
    if (picked.kind !== "digest") return picked.result;
    const p = picked.params;

    const username = p.get("username");
    const nonce = p.get("nonce");
    const uri = p.get("uri");
    const response = p.get("response");
    if (username === undefined) {
      return { kind: "malformed", reason: p.has("username*") ? "username* not supported" : "no username" };
    }
    if (nonce === undefined || uri === undefined || response === undefined) {
      return { kind: "malformed", reason: "missing nonce, uri or response" };
    }
    // RFC 8760 §2.3 / we always offer qop=auth, so a reply without it is not ours to accept.
    const qop = p.get("qop")?.toLowerCase();
    if (qop === undefined) return { kind: "malformed", reason: "no qop" };
    if (qop !== "auth") return { kind: "malformed", reason: `qop ${qop} not offered` };
    const ncText = p.get("nc");
    const cnonce = p.get("cnonce");
    if (ncText === undefined || !NC_SHAPE.test(ncText)) return { kind: "malformed", reason: "bad nc" };
    const nc = parseInt(ncText, 16);
    if (nc === 0) return { kind: "malformed", reason: "nc zero" };
    if (cnonce === undefined || cnonce.length === 0) return { kind: "malformed", reason: "no cnonce" };
    if (!HEX_SHAPE.test(response)) return { kind: "malformed", reason: "response not hex" };
    if (input.requestUri !== undefined && !sameResource(uri, input.requestUri)) {
      // RFC 7616 §3.4.6 / RFC 3261 §22.4: the uri must name the Request-URI's resource. A
      // response computed for another request (captured and replayed, or relayed by a
      // man in the middle) is refused like a wrong password and counted as a failure, rather
      // than RFC 2617's 400, so replaying captured responses cannot probe for free.
      return { kind: "failed", reason: "uri does not match Request-URI", username };
    }

    const algToken = p.get("algorithm");
    const algorithm = algToken === undefined ? "MD5" : algorithmFromToken(algToken);
    if (algorithm === undefined || !this.algorithms.includes(algorithm)) {
      return { kind: "failed", reason: `algorithm ${algToken ?? "MD5 (default)"} not offered`, username };
    }
    if (this.opaque !== undefined && p.has("opaque") && p.get("opaque") !== this.opaque) {
      return { kind: "failed", reason: "opaque mismatch", username };
    }

    // Unknown users take the same path with a dummy password (the same timing, so timing tells no user name).
    const creds = input.lookup(username);
    let secret: { password: string } | { ha1: string } = { password: this.dummyPassword };
    let known = false;
    if (creds !== undefined) {
      if (creds.password !== undefined) {
        secret = { password: creds.password };
        known = true;
      } else {
        const ha1 = ha1For(creds, baseOf(algorithm));
        if (ha1 !== undefined) {
          secret = { ha1 };
          known = true;
        }
      }
    }
    const expected = digestResponse({
      algorithm,
      username,
      realm: this.realm,
      ...secret,
      nonce,
      method: input.method,
      uri,
      qop: "auth",
      nc: ncText,
      cnonce,
    });
    const matches = expected !== undefined && constantTimeEqual(expected, response.toLowerCase());
    if (!matches || !known) {
      const reason = creds === undefined ? "unknown user" : known ? "wrong response" : `no credential for ${algorithm}`;
      return { kind: "failed", reason, username };
    }

    // The UA knows the password; now decide whether this nonce may still be used with it.
    const issuedAt = this.nonceTimestamp(nonce);
    if (issuedAt === undefined) {
      // Not minted by us with this secret (e.g. before a restart): the password was right,
      // so a new challenge with stale=true is the useful answer, and it gives a forger nothing.
      return { kind: "stale", reason: "unknown-nonce" };
    }
    const now = this.now();
    if (now - issuedAt > this.nonceTtlMs || issuedAt - now > CLOCK_SKEW_MS) {
      return { kind: "stale", reason: "expired" };
    }
    // RFC 7616 §3.4 / §5.x: nc strictly increases per nonce. UDP retransmissions are absorbed
    // by the transaction layer before this point, so an equal nc is a replay.
    const seen = this.highestNc.get(nonce);
    if (seen === undefined && issuedAt <= this.evictedUpTo) {
      // Its history may have been evicted; refuse rather than accept a possible replay.
      return { kind: "stale", reason: "unknown-nonce" };
    }
    if (seen !== undefined && nc <= seen) return { kind: "stale", reason: "replay" };
    this.rememberNc(nonce, nc);
    return { kind: "ok", username, algorithm };
  }

  /** Finds our digest credentials among possibly several header values (RFC 3261 §22.3). */
  private pick(
    authorization: string | readonly string[] | undefined,
  ): { kind: "digest"; params: Map<string, string> } | { kind: "other"; result: VerifyResult } {
    if (authorization === undefined) return { kind: "other", result: { kind: "missing" } };
    const values = typeof authorization === "string" ? [authorization] : authorization;
    let malformed: VerifyResult | undefined;
    for (const v of values.slice(0, 8)) {
      const parsed = parseAuthorization(v);
      if ("error" in parsed) {
        malformed ??= { kind: "malformed", reason: parsed.error };
        continue;
      }
      // Other schemes (RFC 4475 regaut01.dat) and other realms' credentials are not for us:
      // a registrar answers them with its own challenge (RFC 3261 §22.3).
      if (parsed.scheme.toLowerCase() !== "digest") continue;
      if (parsed.params.get("realm") !== this.realm) continue;
      return { kind: "digest", params: parsed.params };
    }
    return { kind: "other", result: malformed ?? { kind: "missing" } };
  }

  private mac(data: Buffer): Buffer {
    return createHmac("sha256", this.secret).update(data).update(this.realm, "utf8").digest().subarray(0, MAC_BYTES);
  }

  /** The nonce's timestamp if we minted it (with this secret and realm), else undefined. */
  private nonceTimestamp(nonce: string): number | undefined {
    if (!NONCE_SHAPE.test(nonce)) return undefined;
    const buf = Buffer.from(nonce, "base64url");
    if (buf.length !== NONCE_BYTES) return undefined;
    const want = this.mac(buf.subarray(0, TS_BYTES + RAND_BYTES));
    if (!timingSafeEqual(want, buf.subarray(TS_BYTES + RAND_BYTES))) return undefined;
    return buf.readUIntBE(0, TS_BYTES);
  }

  private rememberNc(nonce: string, nc: number): void {
    // Re-insert: most recently used goes last. The key is a copy: the nonce is a slice of the
    // request's Authorization header and would keep the whole REGISTER alive (message.ts detached).
    this.highestNc.delete(nonce);
    this.highestNc.set(detached(nonce), nc);
    while (this.highestNc.size > this.maxTrackedNonces) {
      // A persistent cursor: a fresh keys().next() would rescan the deleted entries at the
      // front of V8's table on every eviction.
      let oldest = this.evictCursor.next();
      if (oldest.done === true) {
        this.evictCursor = this.highestNc.keys();
        oldest = this.evictCursor.next();
        if (oldest.done === true) break;
      }
      this.highestNc.delete(oldest.value);
      const ts = Buffer.from(oldest.value, "base64url").readUIntBE(0, TS_BYTES);
      if (ts > this.evictedUpTo) this.evictedUpTo = ts;
    }
  }
}

function ha1For(creds: Credentials, base: BaseAlgorithm): string | undefined {
  const h = creds.ha1;
  if (h === undefined) return undefined;
  const v = base === "MD5" ? h.md5 : base === "SHA-256" ? h.sha256 : h.sha512_256;
  return v !== undefined && HEX_SHAPE.test(v) ? v.toLowerCase() : undefined;
}

/** Compares two hex strings without an early exit on the first differing byte. */
function constantTimeEqual(expected: string, given: string): boolean {
  const a = Buffer.from(expected, "latin1");
  const b = Buffer.from(given, "latin1");
  // The expected length depends only on the algorithm, which the client named: not secret.
  if (a.length !== b.length) {
    timingSafeEqual(a, a);
    return false;
  }
  return timingSafeEqual(a, b);
}

const URI_PARTS = /^([A-Za-z][A-Za-z0-9+.-]*):(?:([^@;?]*)@)?(\[[^\]]*\]|[^:;?]*)(?::(\d+))?/;

/**
 * Whether the digest uri and the Request-URI name the same resource. Lenient on purpose
 * (RFC 3261 §19.1.4 spirit): scheme and host compare without case, user parts exactly, an
 * absent port equals the scheme's default, URI parameters and headers are ignored (phones
 * and ALGs add or drop ;transport= and friends). Non-SIP URIs compare as plain strings.
 */
export function sameResource(digestUri: string, requestUri: string): boolean {
  const a = digestUri.trim().replace(/^<(.*)>$/, "$1");
  const b = requestUri.trim().replace(/^<(.*)>$/, "$1");
  if (a === b) return true;
  const ma = URI_PARTS.exec(a);
  const mb = URI_PARTS.exec(b);
  if (ma === null || mb === null) return false;
  const scheme = (ma[1] ?? "").toLowerCase();
  if (scheme !== (mb[1] ?? "").toLowerCase()) return false;
  if (scheme !== "sip" && scheme !== "sips") return false;
  const defaultPort = scheme === "sips" ? "5061" : "5060";
  return (
    (ma[2] ?? "") === (mb[2] ?? "") &&
    (ma[3] ?? "").toLowerCase() === (mb[3] ?? "").toLowerCase() &&
    (ma[4] ?? defaultPort) === (mb[4] ?? defaultPort)
  );
}
