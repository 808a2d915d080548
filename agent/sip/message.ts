// SIP message parsing, RFC 3261 §7 and §25: a hand-written scanner for the call hot path.
//
// Framing works on bytes (Content-Length counts octets, RFC 3261 §18.3); the header block is
// decoded once as UTF-8 and scanned with indexOf/charCodeAt. Only the headers every layer
// needs are interpreted here (Via, Call-ID, CSeq, From, To, Max-Forwards, Content-Length);
// everything else stays as text for getHeader/getHeaders. Hostile input never throws: every
// failure is a typed ParseError carrying what could be read (RFC 3261 §8.2, §16.3), so the
// transport can answer a request statelessly or drop a response.
//
// Leniency decisions (documented once here):
// - Only CRLF ends a line (bare LF is kept inside the value it appears in).
// - CRLFs before the start-line are skipped (RFC 3261 §7.5), on datagrams too.
// - A header block that is not closed by an empty line is an error (RFC 4475 baddn.dat).
// - Unquoted display names may hold UTF-8 as well as tokens; a comma there is an error.
// - Content-Length given twice with the same value is accepted; different values are not.
// - Max-Forwards is any decimal up to 2^32-1 (RFC 3261 §20.22 sets no upper bound).
// - The header block is decoded as UTF-8 (RFC 3261 §7.3.1); invalid sequences become U+FFFD,
//   so a forwarded message may differ from the received bytes only in such malformed text.

import type { CSeq, NameAddr, SipHeader, SipMessage, SipRequest, SipResponse, Via } from "./types.ts";

export interface ParseLimits {
  /** Largest message (headers + body) accepted, in bytes. */
  maxMessageBytes: number;
  /** Largest number of header lines (after unfolding). */
  maxHeaders: number;
  /** Longest header line (name + value after unfolding), in characters. */
  maxHeaderLineBytes?: number;
}

export const DEFAULT_LIMITS: ParseLimits = Object.freeze({ maxMessageBytes: 65535, maxHeaders: 100, maxHeaderLineBytes: 8192 });

export type ParseError = {
  /** Status a request should be answered with: 400, 505 (version), 513 (limits). */
  status: number;
  /** Human-readable cause, safe to use as a Reason-Phrase (no CR/LF). */
  reason: string;
  /** undefined when not even the start-line could be classified. */
  isRequest: boolean | undefined;
  partial: Partial<{ via: Via[]; callId: string; cseq: CSeq; from: NameAddr; to: NameAddr; method: string }>;
};

export type ParseResult = { ok: true; message: SipMessage } | { ok: false; error: ParseError };

export type FrameResult =
  | { kind: "need-more" }
  /** A run of CRLFs (RFC 5626 §3.5.1): length ≥ 4 is a ping, 2 a pong. */
  | { kind: "keepalive"; length: number }
  | { kind: "message"; length: number }
  /** Framing is lost: the connection must be closed (RFC 4475 ncl.dat, mcl01.dat). */
  | { kind: "error"; reason: string };

// --- character classes ------------------------------------------------------------------

/** RFC 3261 §25.1 token characters (ASCII only). */
const TOKEN = new Uint8Array(128);
for (const c of "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~") TOKEN[c.charCodeAt(0)] = 1;

function isToken(c: number): boolean {
  return c < 128 && TOKEN[c] === 1;
}

/** Characters of an unquoted generic-param value: token / host (IPv6 reference too). */
function isGenValue(c: number): boolean {
  return (c < 128 && TOKEN[c] === 1) || c === 58 /* : */ || c === 91 /* [ */ || c === 93 /* ] */;
}

function isLws(c: number): boolean {
  return c === 32 || c === 9;
}

function skipLws(s: string, i: number): number {
  while (i < s.length && isLws(s.charCodeAt(i))) i++;
  return i;
}

/** Index of char code c in s[from, to), or -1; bounded so lines without it stay linear. */
function indexInLine(s: string, c: number, from: number, to: number): number {
  for (let i = from; i < to; i++) if (s.charCodeAt(i) === c) return i;
  return -1;
}

function isAllToken(s: string): boolean {
  if (s.length === 0) return false;
  for (let i = 0; i < s.length; i++) if (!isToken(s.charCodeAt(i))) return false;
  return true;
}

// --- header names -----------------------------------------------------------------------

/** Compact forms: RFC 3261 §7.3.3 and §20, RFC 3265 (o, u), RFC 3515 (r), RFC 3892 (b),
 *  RFC 3841 (a, j, d), RFC 4028 (x), RFC 4474 (y, n). */
const COMPACT: Record<string, string> = {
  a: "accept-contact",
  b: "referred-by",
  c: "content-type",
  d: "request-disposition",
  e: "content-encoding",
  f: "from",
  i: "call-id",
  j: "reject-contact",
  k: "supported",
  l: "content-length",
  m: "contact",
  n: "identity-info",
  o: "event",
  r: "refer-to",
  s: "subject",
  t: "to",
  u: "allow-events",
  v: "via",
  x: "session-expires",
  y: "identity",
};

/** Canonical lower-case long name of a header name as written. */
export function canonicalHeaderName(name: string): string {
  if (name.length === 1) {
    const lower = name.toLowerCase();
    return COMPACT[lower] ?? lower;
  }
  return name.toLowerCase();
}

// --- interned names ----------------------------------------------------------------------
// The names every message carries are matched in place, without slicing or lower-casing: the
// scanner then hands out the same constant string for "Via" or "via", with its hash already
// computed for the Map and switch lookups that follow, and allocates nothing for it.

/** Candidates by length, lower case. */
function byLength(names: readonly string[]): string[][] {
  const out: string[][] = [];
  for (const name of names) (out[name.length] ??= []).push(name);
  return out;
}

/** Header names seen on every call, in canonical long form. */
const KNOWN_HEADERS = byLength([
  "via", "from", "to", "call-id", "cseq", "contact", "max-forwards", "content-length", "content-type",
  "user-agent", "allow", "supported", "record-route", "route", "expires", "server", "require",
  "authorization", "www-authenticate", "proxy-authorization", "proxy-authenticate", "allow-events", "event",
  "subscription-state", "accept", "session-expires", "min-se", "timestamp", "reason", "p-asserted-identity",
]);

/** Parameter names of Via, From, To and Contact values seen on every call. */
const KNOWN_PARAMS = byLength(["branch", "tag", "rport", "received", "lr", "transport", "expires", "maddr", "ttl", "q", "user", "ob"]);

/** Compact header names by lower-case char code (RFC 3261 §7.3.3). */
const COMPACT_BY_CODE: Array<string | undefined> = [];
for (const [short, long] of Object.entries(COMPACT)) COMPACT_BY_CODE[short.charCodeAt(0)] = long;

/**
 * The interned name equal, ignoring ASCII case, to s[from, to), or undefined. Only ASCII
 * letters fold: a candidate's other characters ("-") must match exactly.
 */
function knownName(table: string[][], s: string, from: number, to: number): string | undefined {
  const candidates = table[to - from];
  if (candidates === undefined) return undefined;
  outer: for (let k = 0; k < candidates.length; k++) {
    const name = candidates[k]!;
    for (let i = from, j = 0; i < to; i++, j++) {
      let c = s.charCodeAt(i);
      if (c >= 65 && c <= 90) c += 32;
      if (c !== name.charCodeAt(j)) continue outer;
    }
    return name;
  }
  return undefined;
}

/** Canonical header name of s[from, to) when it is a compact or well-known one (no allocation). */
function knownHeaderName(s: string, from: number, to: number): string | undefined {
  if (to - from === 1) {
    let c = s.charCodeAt(from);
    if (c >= 65 && c <= 90) c += 32;
    return COMPACT_BY_CODE[c];
  }
  return knownName(KNOWN_HEADERS, s, from, to);
}

/** ECMAScript WhiteSpace and LineTerminator (what String.prototype.trim removes). */
function isTrimmed(c: number): boolean {
  return c === 32 || (c >= 9 && c <= 13) || (c >= 0x80 && (c === 0xa0 || c === 0x1680 || (c >= 0x2000 && c <= 0x200a) || c === 0x2028 || c === 0x2029 || c === 0x202f || c === 0x205f || c === 0x3000 || c === 0xfeff));
}

// --- quoted strings and parameters ------------------------------------------------------

/** Index just past the closing quote of the quoted-string opening at i, or -1 if unterminated.
 *  quoted-pair (RFC 3261 §25.1) lets any octet but CR/LF follow a backslash; NULs included. */
function skipQuoted(s: string, i: number): number {
  for (let j = i + 1; j < s.length; j++) {
    const c = s.charCodeAt(j);
    if (c === 92 /* \ */) j++;
    else if (c === 34 /* " */) return j + 1;
  }
  return -1;
}

/** Content of a quoted-string with its quoted-pairs resolved. */
export function unquote(s: string): string {
  if (s.length < 2 || s.charCodeAt(0) !== 34 || s.charCodeAt(s.length - 1) !== 34) return s;
  const inner = s.slice(1, -1);
  if (inner.indexOf("\\") < 0) return inner;
  let out = "";
  for (let j = 0; j < inner.length; j++) {
    const c = inner[j] as string;
    if (c === "\\" && j + 1 < inner.length) {
      out += inner[j + 1];
      j++;
    } else out += c;
  }
  return out;
}

/**
 * Parses *( SEMI generic-param ) starting at i (RFC 3261 §25.1: SEMI and EQUAL allow LWS around).
 * Names are lower-cased; values are kept as written (quoted values keep their quotes).
 * Returns the index after the last parameter, or -1 if a parameter is malformed.
 */
function parseParams(s: string, i: number, params: Map<string, string | null>): number {
  for (;;) {
    i = skipLws(s, i);
    if (i >= s.length || s.charCodeAt(i) !== 59 /* ; */) return i;
    i = skipLws(s, i + 1);
    const nameStart = i;
    while (i < s.length && isToken(s.charCodeAt(i))) i++;
    if (i === nameStart) return -1; // ";;" or ";," (RFC 4475 badinv01.dat)
    const name = knownName(KNOWN_PARAMS, s, nameStart, i) ?? s.slice(nameStart, i).toLowerCase();
    i = skipLws(s, i);
    if (i < s.length && s.charCodeAt(i) === 61 /* = */) {
      i = skipLws(s, i + 1);
      const valueStart = i;
      if (i < s.length && s.charCodeAt(i) === 34) {
        i = skipQuoted(s, i);
        if (i < 0) return -1;
      } else {
        while (i < s.length && isGenValue(s.charCodeAt(i))) i++;
        if (i === valueStart) return -1;
      }
      params.set(name, s.slice(valueStart, i));
    } else {
      params.set(name, null);
    }
  }
}

/**
 * Parameters after the first top-level ';' of a header value (outside quotes and <>),
 * e.g. `multipart/mixed;boundary=x` or `<sip:a@b>;expires=60`. Never fails: a malformed
 * tail yields the parameters read before it.
 */
export function headerParams(text: string): Map<string, string | null> {
  const params = new Map<string, string | null>();
  let i = 0;
  let angle = false;
  for (; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 34) {
      const end = skipQuoted(text, i);
      if (end < 0) return params;
      i = end - 1;
    } else if (c === 60) angle = true;
    else if (c === 62) angle = false;
    else if (c === 59 && !angle) break;
  }
  // parseParams keeps the parameters read before a malformed one: that is the lenient result.
  if (i < text.length) parseParams(text, i, params);
  return params;
}

// --- Via --------------------------------------------------------------------------------

/**
 * Parses a Via header value, possibly comma-joined (RFC 3261 §20.42, §25.1 via-parm).
 * LWS is allowed around "/" in sent-protocol and around ";" "=" (RFC 4475 wsinv.dat).
 * Returns undefined on any malformed value (RFC 4475 badinv01.dat).
 */
export function parseVia(value: string): Via[] | undefined {
  const out: Via[] = [];
  return parseViaInto(value, out) ? out : undefined;
}

function parseViaInto(s: string, out: Via[]): boolean {
  const n = s.length;
  let i = 0;
  for (;;) {
    i = skipLws(s, i);
    const start = i;
    // sent-protocol = protocol-name SLASH protocol-version SLASH transport
    let tokenStart = i;
    for (let part = 0; part < 3; part++) {
      if (part > 0) {
        i = skipLws(s, i);
        if (i >= n || s.charCodeAt(i) !== 47 /* / */) return false;
        i = skipLws(s, i + 1);
      }
      tokenStart = i;
      while (i < n && isToken(s.charCodeAt(i))) i++;
      if (i === tokenStart) return false;
    }
    const transport = s.slice(tokenStart, i).toUpperCase();
    const lwsStart = i;
    i = skipLws(s, i);
    if (i === lwsStart) return false;
    // sent-by = host [ COLON port ]
    const hostStart = i;
    if (i < n && s.charCodeAt(i) === 91 /* [ */) {
      const close = s.indexOf("]", i);
      if (close < 0) return false;
      for (let k = i + 1; k < close; k++) {
        const c = s.charCodeAt(k);
        if (!((c >= 48 && c <= 58) || (c >= 65 && c <= 70) || (c >= 97 && c <= 102) || c === 46)) return false;
      }
      if (close === i + 1) return false;
      i = close + 1;
    } else {
      while (i < n) {
        const c = s.charCodeAt(i);
        if ((c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c === 45 || c === 46 || c === 95) i++;
        else break;
      }
      if (i === hostStart) return false;
    }
    const host = s.slice(hostStart, i);
    let port: number | undefined;
    i = skipLws(s, i);
    if (i < n && s.charCodeAt(i) === 58 /* : */) {
      i = skipLws(s, i + 1);
      const p = i;
      let v = 0;
      while (i < n) {
        const c = s.charCodeAt(i);
        if (c < 48 || c > 57) break;
        v = v * 10 + (c - 48);
        i++;
        if (v > 65535) return false;
      }
      if (i === p) return false;
      port = v;
    }
    const params = new Map<string, string | null>();
    i = parseParams(s, i, params);
    if (i < 0) return false;
    let end = i;
    while (end > start && isLws(s.charCodeAt(end - 1))) end--;
    const branch = params.get("branch");
    out.push({ transport, host, port, params, branch: branch ?? undefined, raw: s.slice(start, end) });
    i = skipLws(s, i);
    if (i >= n) return true;
    if (s.charCodeAt(i) !== 44 /* , */) return false;
    i++;
  }
}

// --- name-addr --------------------------------------------------------------------------

/** A URI scheme followed by ':' at the start of s (RFC 3986 §3.1). */
function hasScheme(s: string): boolean {
  const c0 = s.charCodeAt(0);
  if (!((c0 >= 65 && c0 <= 90) || (c0 >= 97 && c0 <= 122))) return false;
  for (let i = 1; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 58) return i + 1 < s.length;
    if (!((c >= 65 && c <= 90) || (c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c === 43 || c === 45 || c === 46)) return false;
  }
  return false;
}

function hasWhitespace(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c <= 32 || c === 127) return true;
  }
  return false;
}

/**
 * Parses From / To / Contact / Route style values: name-addr or addr-spec, then header
 * parameters (RFC 3261 §20.10, §25.1). displayName is unquoted with quoted-pairs resolved.
 * In addr-spec form the URI ends at the first ';' (its parameters are header parameters,
 * RFC 4475 cparam01.dat). Returns undefined when malformed (RFC 4475 quotbal, baddn, badaspec).
 */
export function parseNameAddr(value: string): NameAddr | undefined {
  const s = value;
  const n = s.length;
  let i = skipLws(s, 0);
  let displayName: string | undefined;
  let uri: string;
  if (i < n && s.charCodeAt(i) === 34) {
    const end = skipQuoted(s, i);
    if (end < 0) return undefined; // unterminated quote (RFC 4475 quotbal.dat)
    displayName = unquote(s.slice(i, end));
    i = skipLws(s, end);
    if (i >= n || s.charCodeAt(i) !== 60) return undefined;
  } else {
    // *(token LWS) "<" — no LWS needed before "<" (RFC 4475 lwsdisp.dat).
    let j = i;
    while (j < n) {
      const c = s.charCodeAt(j);
      if (isToken(c) || isLws(c) || c >= 128) j++;
      else break;
    }
    if (j < n && s.charCodeAt(j) === 60) {
      const name = s.slice(i, j).trim();
      displayName = name.length > 0 ? name : undefined;
      i = j;
    }
  }
  if (i < n && s.charCodeAt(i) === 60) {
    const close = s.indexOf(">", i + 1);
    if (close < 0) return undefined;
    uri = s.slice(i + 1, close);
    // No LWS inside <> (RFC 4475 badaspec.dat).
    if (!hasScheme(uri) || hasWhitespace(uri)) return undefined;
    i = close + 1;
  } else {
    const start = i;
    while (i < n) {
      const c = s.charCodeAt(i);
      if (c === 59 || isLws(c)) break;
      i++;
    }
    uri = s.slice(start, i);
    if (!hasScheme(uri) || hasWhitespace(uri) || uri.indexOf("<") >= 0 || uri.indexOf(">") >= 0 || uri.indexOf('"') >= 0) return undefined;
  }
  const params = new Map<string, string | null>();
  i = parseParams(s, i, params);
  if (i < 0) return undefined;
  if (skipLws(s, i) !== n) return undefined;
  const tag = params.get("tag");
  return { displayName, uri, params, tag: tag ?? undefined, raw: s.trim() };
}

// --- scalar headers ---------------------------------------------------------------------

const MAX_UINT32 = 4294967295;

/** Decimal 0..2^32-1 with optional leading zeros, or -1. */
function parseUint32(s: string, from = 0, to = s.length): number {
  if (to <= from) return -1;
  let v = 0;
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i);
    if (c < 48 || c > 57) return -1;
    v = v * 10 + (c - 48);
    if (v > MAX_UINT32) return -1;
  }
  return v;
}

/** CSeq = 1*DIGIT LWS Method; seq below 2^31 per RFC 3261 §8.1.1.5, accepted to 2^32-1 (RFC 4475 scalar02.dat). */
function parseCSeq(s: string): CSeq | undefined {
  let i = 0;
  const n = s.length;
  while (i < n) {
    const c = s.charCodeAt(i);
    if (c < 48 || c > 57) break;
    i++;
  }
  const seq = parseUint32(s, 0, i);
  if (seq < 0) return undefined;
  const ws = i;
  i = skipLws(s, i);
  if (i === ws) return undefined;
  const m = i;
  while (i < n && isToken(s.charCodeAt(i))) i++;
  if (i === m || skipLws(s, i) !== n) return undefined;
  return { seq, method: s.slice(m, i) };
}

// --- the parser -------------------------------------------------------------------------

const CRLFCRLF = Buffer.from("\r\n\r\n");
const EMPTY = Buffer.alloc(0);

type StartLine =
  | { kind: "request"; method: string; uri: string }
  | { kind: "response"; status: number; reason: string }
  | { kind: "error"; status: number; reason: string; isRequest: boolean | undefined; method?: string };

function isSipVersion(v: string): boolean {
  return v.length === 7 && (v === "SIP/2.0" || v.toUpperCase() === "SIP/2.0");
}

const OTHER_VERSION = /^SIP\/[0-9]+\.[0-9]+$/i;

/** Request-Line = Method SP Request-URI SP SIP-Version (RFC 3261 §7.1): exactly two SPs. */
function parseStartLine(line: string): StartLine {
  if (line.length >= 4 && (line.startsWith("SIP/") || line.slice(0, 4).toUpperCase() === "SIP/")) {
    // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase (RFC 3261 §7.2)
    const sp = line.indexOf(" ");
    if (sp < 0) return { kind: "error", status: 400, reason: "Malformed Status-Line", isRequest: false };
    const version = line.slice(0, sp);
    if (!isSipVersion(version)) {
      return OTHER_VERSION.test(version)
        ? { kind: "error", status: 505, reason: "Version Not Supported", isRequest: false }
        : { kind: "error", status: 400, reason: "Malformed Status-Line", isRequest: false };
    }
    const code = line.slice(sp + 1, sp + 4);
    const after = line.charCodeAt(sp + 4);
    const status = code.length === 3 ? parseUint32(code) : -1;
    // Status-Code is exactly 3 digits (RFC 4475 bigcode.dat); the reason may be empty (noreason.dat).
    if (status < 100 || status > 699 || !(Number.isNaN(after) || after === 32)) {
      return { kind: "error", status: 400, reason: "Bad Status-Code", isRequest: false };
    }
    return { kind: "response", status, reason: line.slice(sp + 5) };
  }
  const sp1 = line.indexOf(" ");
  const method = sp1 > 0 ? line.slice(0, sp1) : line;
  if (!isAllToken(method)) return { kind: "error", status: 400, reason: "Malformed Request-Line", isRequest: undefined };
  const sp2 = line.indexOf(" ", sp1 + 1);
  if (sp1 < 0 || sp2 < 0) return { kind: "error", status: 400, reason: "Missing SIP-Version", isRequest: true, method }; // RFC 4475 test.dat
  const uri = line.slice(sp1 + 1, sp2);
  const version = line.slice(sp2 + 1);
  // Extra SP anywhere (lwsstart, trws, lwsruri) leaves an empty URI or a version with SP in it.
  if (uri.length === 0 || version.indexOf(" ") >= 0 || version.length === 0) {
    return { kind: "error", status: 400, reason: "Malformed Request-Line", isRequest: true, method };
  }
  // The Request-URI is never enclosed in <> (RFC 3261 §8.1.1.1; RFC 4475 ltgtruri.dat).
  if (!hasScheme(uri) || hasWhitespace(uri) || uri.charCodeAt(0) === 60) {
    return { kind: "error", status: 400, reason: "Malformed Request-URI", isRequest: true, method };
  }
  if (!isSipVersion(version)) {
    return OTHER_VERSION.test(version)
      ? { kind: "error", status: 505, reason: "Version Not Supported", isRequest: true, method } // RFC 3261 §8.2.2 ... §21.5.7
      : { kind: "error", status: 400, reason: "Malformed SIP-Version", isRequest: true, method };
  }
  return { kind: "request", method, uri };
}

/** Parses one whole UDP datagram (RFC 3261 §18.3: Content-Length optional, in bytes). */
export function parseDatagram(buf: Buffer, limits: ParseLimits = DEFAULT_LIMITS): ParseResult {
  return parseBuffer(buf, limits, false);
}

/** Parses one message cut from a stream by frameStream: Content-Length is mandatory. */
export function parseStreamMessage(buf: Buffer, limits: ParseLimits = DEFAULT_LIMITS): ParseResult {
  return parseBuffer(buf, limits, true);
}

function parseBuffer(buf: Buffer, limits: ParseLimits, stream: boolean): ParseResult {
  try {
    return parseUnsafe(buf, limits, stream);
  } catch (err) {
    // Belt and braces: the scanner is written not to throw; a bug must not kill the listener.
    return { ok: false, error: { status: 400, reason: "Unparseable message", isRequest: undefined, partial: {} } };
  }
}

function parseUnsafe(buf: Buffer, limits: ParseLimits, stream: boolean): ParseResult {
  const n = buf.length;
  let error: { status: number; reason: string } | undefined;
  const fail = (status: number, reason: string): void => {
    if (!error) error = { status, reason };
  };
  if (n > limits.maxMessageBytes) fail(513, "Message Too Large");

  // RFC 3261 §7.5: ignore CRLFs before the start-line.
  let start = 0;
  while (start + 1 < n && buf[start] === 13 && buf[start + 1] === 10) start += 2;
  const scanEnd = Math.min(n, limits.maxMessageBytes);
  let headEnd = buf.indexOf(CRLFCRLF, start);
  let bodyStart: number;
  if (headEnd < 0 || headEnd > scanEnd) {
    fail(400, "Missing empty line after header fields");
    headEnd = scanEnd;
    if (headEnd >= 2 && buf[headEnd - 2] === 13 && buf[headEnd - 1] === 10) headEnd -= 2;
    bodyStart = n;
  } else {
    bodyStart = headEnd + 4;
  }
  if (headEnd <= start) {
    return { ok: false, error: { status: 400, reason: "Empty message", isRequest: undefined, partial: {} } };
  }
  const head = buf.toString("utf8", start, headEnd);
  const len = head.length;

  let eol = head.indexOf("\r\n");
  if (eol < 0) eol = len;
  const sl = parseStartLine(head.slice(0, eol));
  let isRequest: boolean | undefined;
  let method: string | undefined;
  if (sl.kind === "error") {
    fail(sl.status, sl.reason);
    isRequest = sl.isRequest;
    method = sl.method;
  } else if (sl.kind === "request") {
    isRequest = true;
    method = sl.method;
  } else {
    isRequest = false;
  }

  const headers: SipHeader[] = [];
  const via: Via[] = [];
  let callId: string | undefined;
  let cseq: CSeq | undefined;
  let from: NameAddr | undefined;
  let to: NameAddr | undefined;
  let maxForwards: number | undefined;
  let contentLength = -1;
  let viaOk = true;
  // What to cut from head to take the top Via value out (a response relayed without it can
  // reuse the received bytes: stripTopVia): its whole line when alone on it, else the value and
  // the comma after it. -1: not known (no Via yet, or a folded first Via line).
  let topViaCutStart = -1;
  let topViaCutEnd = -1;
  let viaSeen = false;
  const maxLine = limits.maxHeaderLineBytes ?? Infinity;
  let seen = 0; // bitmask of single-valued headers already seen: 1 call-id, 2 cseq, 4 from, 8 to, 16 max-forwards

  let pos = eol + 2;
  while (pos < len) {
    let e = head.indexOf("\r\n", pos);
    if (e < 0) e = len;
    const colon = indexInLine(head, 58 /* : */, pos, e);
    if (colon < 0) {
      fail(400, "Header line without colon"); // RFC 4475 test.dat
      pos = e + 2;
      while (pos < len && isLws(head.charCodeAt(pos))) {
        const e2 = head.indexOf("\r\n", pos);
        pos = e2 < 0 ? len : e2 + 2;
      }
      continue;
    }
    // header-name = token, then optional LWS before the colon (HCOLON, RFC 3261 §25.1).
    let nameEnd = colon;
    while (nameEnd > pos && isLws(head.charCodeAt(nameEnd - 1))) nameEnd--;
    const nameStart = pos;
    let value: string;
    /** Where value starts in head (-1 when folded lines were joined into it). */
    let valueAt = -1;
    pos = e + 2;
    if (pos < len && isLws(head.charCodeAt(pos))) {
      value = head.slice(colon + 1, e);
      // Folding: a line starting with SP/HT continues the previous one (RFC 3261 §7.3.1).
      while (pos < len && isLws(head.charCodeAt(pos))) {
        let e2 = head.indexOf("\r\n", pos);
        if (e2 < 0) e2 = len;
        value += head.slice(pos, e2);
        pos = e2 + 2;
      }
      value = value.trim();
    } else {
      // s.slice().trim() with one slice instead of two.
      let from = colon + 1;
      let to = e;
      while (from < to && isTrimmed(head.charCodeAt(from))) from++;
      while (to > from && isTrimmed(head.charCodeAt(to - 1))) to--;
      value = head.slice(from, to);
      valueAt = from;
    }
    if (headers.length >= limits.maxHeaders) {
      fail(513, "Too many header fields");
      break;
    }
    if (nameEnd - nameStart + value.length + 1 > maxLine) {
      fail(513, "Header field too long");
      break;
    }
    let name = knownHeaderName(head, nameStart, nameEnd);
    if (name === undefined) {
      const rawName = head.slice(nameStart, nameEnd);
      if (!isAllToken(rawName)) {
        fail(400, "Malformed header name");
        continue;
      }
      name = canonicalHeaderName(rawName);
    }
    headers.push({ name, value });
    switch (name) {
      case "via":
        if (viaOk && !parseViaInto(value, via)) {
          viaOk = false;
          fail(400, "Malformed Via");
        }
        if (!viaSeen) {
          viaSeen = true;
          if (viaOk && valueAt >= 0) {
            if (via.length === 1) {
              topViaCutStart = nameStart;
              topViaCutEnd = pos;
            } else {
              // "Via: a , b": cut from a to b (the first value's raw text starts the value).
              let next = skipLws(value, via[0]!.raw.length);
              if (value.charCodeAt(next) === 44 /* , */) {
                next = skipLws(value, next + 1);
                topViaCutStart = valueAt;
                topViaCutEnd = valueAt + next;
              }
            }
          }
        }
        break;
      case "call-id":
        if (seen & 1) fail(400, "Multiple Call-ID values"); // RFC 4475 multi01.dat
        else if (value.length === 0 || hasWhitespace(value)) fail(400, "Malformed Call-ID");
        else callId = value;
        seen |= 1;
        break;
      case "cseq":
        if (seen & 2) fail(400, "Multiple CSeq values");
        else if (!(cseq = parseCSeq(value))) fail(400, "Malformed CSeq"); // RFC 4475 scalar02.dat
        seen |= 2;
        break;
      case "from":
        if (seen & 4) fail(400, "Multiple From values");
        else if (!(from = parseNameAddr(value))) fail(400, "Malformed From");
        seen |= 4;
        break;
      case "to":
        if (seen & 8) fail(400, "Multiple To values");
        else if (!(to = parseNameAddr(value))) fail(400, "Malformed To"); // RFC 4475 quotbal.dat
        seen |= 8;
        break;
      case "max-forwards": {
        if (seen & 16) fail(400, "Multiple Max-Forwards values");
        else {
          const mf = parseUint32(value);
          if (mf < 0) fail(400, "Malformed Max-Forwards");
          else maxForwards = mf;
        }
        seen |= 16;
        break;
      }
      case "content-length": {
        const cl = parseUint32(value);
        if (cl < 0) fail(400, "Malformed Content-Length"); // RFC 4475 ncl.dat
        else if (contentLength >= 0 && contentLength !== cl) fail(400, "Conflicting Content-Length values"); // mcl01.dat
        else contentLength = cl;
        break;
      }
    }
  }

  if (!error) {
    // RFC 3261 §8.1.1: these are mandatory in every request and response (RFC 4475 insuf.dat).
    if (via.length === 0) fail(400, "Missing Via");
    else if (callId === undefined) fail(400, "Missing Call-ID");
    else if (from === undefined) fail(400, "Missing From");
    else if (to === undefined) fail(400, "Missing To");
    else if (cseq === undefined) fail(400, "Missing CSeq");
  }

  let body = EMPTY;
  if (!error) {
    const available = n - bodyStart;
    if (contentLength < 0) {
      // Streams need Content-Length (RFC 3261 §18.3); a datagram's body is the rest (inv2543.dat).
      if (stream) fail(400, "Missing Content-Length");
      else if (available > 0) body = Buffer.from(buf.subarray(bodyStart, n));
    } else if (contentLength > available) {
      fail(400, "Content-Length larger than message"); // RFC 4475 clerr.dat
    } else if (contentLength > 0) {
      // Octets past Content-Length are ignored (RFC 3261 §18.3; dblreq.dat). Copied so the
      // caller may reuse its receive buffer.
      body = Buffer.from(buf.subarray(bodyStart, bodyStart + contentLength));
    }
  }

  if (error) {
    const partial: ParseError["partial"] = {};
    if (via.length > 0) partial.via = via;
    if (callId !== undefined) partial.callId = callId;
    if (cseq) partial.cseq = cseq;
    if (from) partial.from = from;
    if (to) partial.to = to;
    if (method !== undefined) partial.method = method;
    return { ok: false, error: { status: error.status, reason: error.reason, isRequest, partial } };
  }
  if (sl.kind === "request") {
    const req: SipRequest = {
      kind: "request",
      method: sl.method,
      uri: sl.uri,
      maxForwards,
      headers,
      body,
      via,
      callId: callId!,
      cseq: cseq!,
      from: from!,
      to: to!,
    };
    return { ok: true, message: req };
  }
  if (sl.kind === "response") {
    const res: SipResponse = {
      kind: "response",
      status: sl.status,
      reason: sl.reason,
      headers,
      body,
      via,
      callId: callId!,
      cseq: cseq!,
      from: from!,
      to: to!,
      source: undefined,
    };
    // A datagram whose header block decoded one character per byte (ASCII; an invalid byte
    // becomes one U+FFFD), with its Content-Length given and an unfolded first Via line:
    // string offsets are byte offsets, so stripTopVia can relay these bytes without the top
    // Via value. Only for a datagram: a stream's buffer may be reused by its reader.
    if (!stream && contentLength >= 0 && topViaCutStart >= 0 && len === headEnd - start) {
      res.source = { of: res, bytes: buf, topViaStart: start + topViaCutStart, topViaEnd: start + topViaCutEnd, start, end: bodyStart + contentLength };
    }
    return { ok: true, message: res };
  }
  return { ok: false, error: { status: 400, reason: "Malformed start-line", isRequest, partial: {} } };
}

// --- stream framing ---------------------------------------------------------------------

/**
 * Finds the next frame at the start of a TCP receive buffer (RFC 3261 §18.3, RFC 5626 §3.5.1).
 * The caller consumes `length` bytes for keepalive/message frames and calls again.
 */
export function frameStream(buf: Buffer, limits: ParseLimits = DEFAULT_LIMITS): FrameResult {
  const n = buf.length;
  if (n === 0) return { kind: "need-more" };
  let k = 0;
  while (k + 1 < n && buf[k] === 13 && buf[k + 1] === 10) k += 2;
  if (k > 0) return { kind: "keepalive", length: k };
  if (n === 1 && buf[0] === 13) return { kind: "need-more" };
  const idx = buf.indexOf(CRLFCRLF);
  if (idx < 0) {
    if (n > limits.maxMessageBytes) return { kind: "error", reason: "header block exceeds size limit" };
    return { kind: "need-more" };
  }
  const bodyStart = idx + 4;
  if (bodyStart > limits.maxMessageBytes) return { kind: "error", reason: "header block exceeds size limit" };
  const cl = streamContentLength(buf, idx);
  if (typeof cl === "string") return { kind: "error", reason: cl };
  const total = bodyStart + cl;
  if (total > limits.maxMessageBytes) return { kind: "error", reason: "message exceeds size limit" };
  if (n < total) return { kind: "need-more" };
  return { kind: "message", length: total };
}

/**
 * The Content-Length of a stream message whose header block is buf[0, headEnd) (headEnd is
 * where CRLFCRLF starts): a number of body bytes, or why the stream's framing is lost
 * (missing, invalid or conflicting values; RFC 3261 §18.3 makes the header mandatory).
 */
export function streamContentLength(buf: Buffer, headEnd: number): number | string {
  // latin1 keeps one char per byte: cheap, and Content-Length is ASCII anyway.
  const head = buf.toString("latin1", 0, headEnd);
  let contentLength = -1;
  let pos = head.indexOf("\r\n");
  if (pos < 0) pos = head.length;
  pos += 2;
  while (pos < head.length) {
    let e = head.indexOf("\r\n", pos);
    if (e < 0) e = head.length;
    const c = head.charCodeAt(pos);
    let value: string | undefined;
    // Only lines starting with c/C/l/L can be Content-Length.
    if (c === 99 || c === 67 || c === 108 || c === 76) {
      const colon = indexInLine(head, 58 /* : */, pos, e);
      if (colon > 0) {
        const name = head.slice(pos, colon).trimEnd();
        if (name.length === 1 ? name === "l" || name === "L" : name.length === 14 && name.toLowerCase() === "content-length") {
          value = head.slice(colon + 1, e);
        }
      }
    }
    pos = e + 2;
    while (pos < head.length && isLws(head.charCodeAt(pos))) {
      let e2 = head.indexOf("\r\n", pos);
      if (e2 < 0) e2 = head.length;
      if (value !== undefined) value += head.slice(pos, e2);
      pos = e2 + 2;
    }
    if (value !== undefined) {
      const cl = parseUint32(value.trim());
      if (cl < 0) return "invalid Content-Length";
      if (contentLength >= 0 && cl !== contentLength) return "conflicting Content-Length values";
      contentLength = cl;
    }
  }
  if (contentLength < 0) return "missing Content-Length on a stream";
  return contentLength;
}

/** A datagram made only of CRLFs: a keep-alive, not a message (RFC 5626 §3.5.1). */
export function isKeepAlive(buf: Buffer): boolean {
  if (buf.length === 0) return false;
  for (let i = 0; i < buf.length; i++) if (buf[i] !== 13 && buf[i] !== 10) return false;
  return true;
}

// --- header access ----------------------------------------------------------------------

/** Headers whose values are comma-separated lists (RFC 3261 §7.3.1) and may be split. */
const LIST_HEADERS = new Set([
  "via", "contact", "route", "record-route", "path", "service-route", "allow", "supported", "require",
  "proxy-require", "unsupported", "accept", "accept-encoding", "accept-language", "content-encoding",
  "content-language", "allow-events", "alert-info", "call-info", "error-info", "in-reply-to", "warning",
  "reason", "accept-contact", "reject-contact", "request-disposition", "security-client",
  "security-server", "security-verify", "p-asserted-identity", "p-preferred-identity", "privacy",
]);

/** First value of a header (name in any case, compact or long), or undefined. */
export function getHeader(msg: SipMessage, name: string): string | undefined {
  const canon = canonicalHeaderName(name);
  const headers = msg.headers;
  for (let i = 0; i < headers.length; i++) {
    const h = headers[i]!;
    if (h.name === canon) return h.value;
  }
  return undefined;
}

/** All values of a header in order; list headers are split at commas outside "" <> []. */
export function getHeaders(msg: SipMessage, name: string): string[] {
  const canon = canonicalHeaderName(name);
  const split = LIST_HEADERS.has(canon);
  const out: string[] = [];
  for (const h of msg.headers) {
    if (h.name !== canon) continue;
    if (split) splitList(h.value, out);
    else out.push(h.value);
  }
  return out;
}

/** Splits a comma list outside quoted strings, <...> and [...]; empty elements are dropped. */
export function splitList(value: string, out: string[] = []): string[] {
  let depthAngle = 0;
  let depthBracket = 0;
  let start = 0;
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c === 34) {
      const end = skipQuoted(value, i);
      if (end < 0) break;
      i = end - 1;
    } else if (c === 60) depthAngle++;
    else if (c === 62 && depthAngle > 0) depthAngle--;
    else if (c === 91) depthBracket++;
    else if (c === 93 && depthBracket > 0) depthBracket--;
    else if (c === 44 && depthAngle === 0 && depthBracket === 0) {
      const part = value.slice(start, i).trim();
      if (part.length > 0) out.push(part);
      start = i + 1;
    }
  }
  const last = value.slice(start).trim();
  if (last.length > 0) out.push(last);
  return out;
}
