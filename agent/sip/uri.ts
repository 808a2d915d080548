// SIP, SIPS and tel URI scanning (RFC 3261 §19.1, §25.1; RFC 3966 for tel).
//
// Decisions:
// - `user`, `password`, parameter values and `headers` are kept exactly as written (still
//   %-escaped); unescapeUser() decodes once when a comparison or display needs it.
// - Scheme and parameter names are lower-cased; the host keeps its case (compare with
//   sameAor / toLowerCase); IPv6 references keep their brackets in `host`.
// - tel: URIs put the telephone-subscriber number in `user`, host "" (RFC 3966 §3).
// - Any other well-formed absolute URI (RFC 3986 scheme ":" ...) parses to
//   { scheme, user: undefined, host: "", port: undefined, params: empty, headers: undefined, raw }
//   so that callers can answer 416 (RFC 3261 §8.2.2.1) instead of 400.
// - `raw` is the input text untouched, for re-serialisation.

export interface SipUri {
  scheme: string;
  user: string | undefined;
  password?: string;
  host: string;
  port: number | undefined;
  /** uri-parameters, names unescaped and lower-cased (";%6C%72" is "lr"); values as written; a flag maps to null. */
  params: Map<string, string | null>;
  /** The text after "?" (RFC 3261 §19.1.1 headers), undefined when there is none. */
  headers: string | undefined;
  raw: string;
}

// RFC 3261 §25.1 character classes, ASCII only.
const UNRESERVED = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'()";
function table(chars: string): Uint8Array {
  const t = new Uint8Array(128);
  for (const c of chars) t[c.charCodeAt(0)] = 1;
  return t;
}
const USER = table(UNRESERVED + "&=+$,;?/");
const PASSWORD = table(UNRESERVED + "&=+$,");
const PARAM = table(UNRESERVED + "[]/:&+$");
const HEADERS = table(UNRESERVED + "[]/?:+$=&");
const HOST = table("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._");
const TEL = table("0123456789-.()+*#ABCDEFabcdefpwPW");
const SCHEME = table("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.");

function isHex(c: number): boolean {
  return (c >= 48 && c <= 57) || (c >= 65 && c <= 70) || (c >= 97 && c <= 102);
}

/** All characters of s[from, to) are in the class or are %HH escapes. */
function allIn(s: string, from: number, to: number, cls: Uint8Array): boolean {
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i);
    if (c === 37 /* % */) {
      if (i + 2 >= to) return false;
      if (!isHex(s.charCodeAt(i + 1)) || !isHex(s.charCodeAt(i + 2))) return false;
      i += 2;
    } else if (c >= 128 || cls[c] !== 1) return false;
  }
  return true;
}

/** Parses `;name[=value]` runs in s[from, to) into params; false when malformed. */
function parseUriParams(s: string, from: number, to: number, params: Map<string, string | null>): boolean {
  let i = from;
  while (i < to) {
    // s[i] is ';'
    let end = s.indexOf(";", i + 1);
    if (end < 0 || end > to) end = to;
    const eq = s.indexOf("=", i + 1);
    if (eq >= 0 && eq < end) {
      if (eq === i + 1 || eq + 1 === end) return false;
      if (!allIn(s, i + 1, eq, PARAM) || !allIn(s, eq + 1, end, PARAM)) return false;
      params.set(unescapeUser(s.slice(i + 1, eq)).toLowerCase(), s.slice(eq + 1, end));
    } else {
      if (end === i + 1) return false;
      if (!allIn(s, i + 1, end, PARAM)) return false;
      params.set(unescapeUser(s.slice(i + 1, end)).toLowerCase(), null);
    }
    i = end;
  }
  return true;
}

/** Parses a URI; undefined when malformed. Never throws. */
export function parseUri(text: string): SipUri | undefined {
  const s = text;
  const colon = s.indexOf(":");
  if (colon <= 0) return undefined;
  const c0 = s.charCodeAt(0);
  if (!((c0 >= 65 && c0 <= 90) || (c0 >= 97 && c0 <= 122))) return undefined;
  for (let i = 1; i < colon; i++) {
    const c = s.charCodeAt(i);
    if (c >= 128 || SCHEME[c] !== 1) return undefined;
  }
  const scheme = s.slice(0, colon).toLowerCase();
  const n = s.length;
  if (colon + 1 >= n) return undefined;
  for (let i = colon + 1; i < n; i++) {
    const c = s.charCodeAt(i);
    // No whitespace, controls or delimiters that only occur around URIs (RFC 4475 badaspec.dat).
    if (c <= 32 || c === 127 || c === 60 || c === 62 || c === 34) return undefined;
  }
  if (scheme === "sip" || scheme === "sips") return parseSip(s, scheme, colon + 1);
  if (scheme === "tel") return parseTel(s, colon + 1);
  return { scheme, user: undefined, host: "", port: undefined, params: new Map(), headers: undefined, raw: s };
}

function parseSip(s: string, scheme: string, from: number): SipUri | undefined {
  const n = s.length;
  let user: string | undefined;
  let password: string | undefined;
  let i = from;
  // userinfo may hold ';' and '?' (RFC 4475 semiuri.dat, intmeth.dat), never an unescaped '@'.
  const at = s.indexOf("@", from);
  if (at >= 0) {
    const pc = s.indexOf(":", from);
    const userEnd = pc >= 0 && pc < at ? pc : at;
    if (userEnd === from || !allIn(s, from, userEnd, USER)) return undefined;
    user = s.slice(from, userEnd);
    if (userEnd < at) {
      if (!allIn(s, userEnd + 1, at, PASSWORD)) return undefined;
      password = s.slice(userEnd + 1, at);
    }
    i = at + 1;
  }
  let paramStart = s.indexOf(";", i);
  let headerStart = s.indexOf("?", i);
  if (headerStart < 0) headerStart = n;
  if (paramStart < 0 || paramStart > headerStart) paramStart = headerStart;
  // hostport
  let hostEnd: number;
  let host: string;
  if (s.charCodeAt(i) === 91 /* [ */) {
    const close = s.indexOf("]", i);
    if (close < 0 || close > paramStart || close === i + 1) return undefined;
    for (let k = i + 1; k < close; k++) {
      const c = s.charCodeAt(k);
      if (!(isHex(c) || c === 58 || c === 46)) return undefined;
    }
    hostEnd = close + 1;
    host = s.slice(i, hostEnd);
  } else {
    hostEnd = i;
    while (hostEnd < paramStart && s.charCodeAt(hostEnd) !== 58) hostEnd++;
    if (hostEnd === i) return undefined;
    for (let k = i; k < hostEnd; k++) {
      const c = s.charCodeAt(k);
      if (c >= 128 || HOST[c] !== 1) return undefined;
    }
    host = s.slice(i, hostEnd);
  }
  let port: number | undefined;
  if (hostEnd < paramStart) {
    if (s.charCodeAt(hostEnd) !== 58 || hostEnd + 1 === paramStart) return undefined;
    let v = 0;
    for (let k = hostEnd + 1; k < paramStart; k++) {
      const c = s.charCodeAt(k);
      if (c < 48 || c > 57) return undefined;
      v = v * 10 + (c - 48);
      if (v > 65535) return undefined;
    }
    port = v;
  }
  const params = new Map<string, string | null>();
  if (!parseUriParams(s, paramStart, headerStart, params)) return undefined;
  let headers: string | undefined;
  if (headerStart < n) {
    if (headerStart + 1 === n || !allIn(s, headerStart + 1, n, HEADERS)) return undefined;
    headers = s.slice(headerStart + 1);
  }
  const uri: SipUri = { scheme, user, host, port, params, headers, raw: s };
  if (password !== undefined) uri.password = password;
  return uri;
}

function parseTel(s: string, from: number): SipUri | undefined {
  let end = s.indexOf(";", from);
  if (end < 0) end = s.length;
  if (end === from || !allIn(s, from, end, TEL)) return undefined;
  const params = new Map<string, string | null>();
  if (!parseUriParams(s, end, s.length, params)) return undefined;
  return { scheme: "tel", user: s.slice(from, end), host: "", port: undefined, params, headers: undefined, raw: s };
}

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * %-unescapes once (RFC 3261 §19.1.4): "%2541" becomes "%41", not "A" (RFC 4475 esc01.dat).
 * %00 becomes a NUL character and never truncates (escnull.dat). Escaped runs that are valid
 * UTF-8 decode as such, others byte-per-char; a '%' not followed by two hex digits stays.
 */
export function unescapeUser(s: string): string {
  if (s.indexOf("%") < 0) return s;
  let out = "";
  let i = 0;
  const n = s.length;
  while (i < n) {
    const c = s.charCodeAt(i);
    if (c === 37 && i + 2 < n && isHex(s.charCodeAt(i + 1)) && isHex(s.charCodeAt(i + 2))) {
      const bytes: number[] = [];
      while (i + 2 < n && s.charCodeAt(i) === 37 && isHex(s.charCodeAt(i + 1)) && isHex(s.charCodeAt(i + 2))) {
        bytes.push(parseInt(s.slice(i + 1, i + 3), 16));
        i += 3;
      }
      const u8 = Uint8Array.from(bytes);
      try {
        out += strictUtf8.decode(u8);
      } catch {
        out += String.fromCharCode(...bytes);
      }
    } else {
      out += s[i];
      i++;
    }
  }
  return out;
}

/**
 * Where a request for this URI goes, before any DNS (RFC 3263): the host without IPv6
 * brackets, and the port written or the scheme's default (5061 for sips, else 5060).
 * maddr is not applied; tel and unknown schemes give host "".
 */
export function uriHostPort(u: SipUri): { host: string; port: number } {
  const host = u.host.startsWith("[") && u.host.endsWith("]") ? u.host.slice(1, -1) : u.host;
  return { host, port: u.port ?? (u.scheme === "sips" ? 5061 : 5060) };
}

/**
 * Address-of-record equality (RFC 3261 §19.1.4): same scheme, user equal after unescaping
 * (case-sensitive), password likewise, host case-insensitive, port equal including absence
 * ("sip:a@h" differs from "sip:a@h:5060"). URI parameters and headers are not part of an AOR
 * (RFC 3261 §10.3 step 5). tel URIs compare by number.
 */
export function sameAor(a: SipUri, b: SipUri): boolean {
  if (a.scheme !== b.scheme) return false;
  if (a.scheme === "tel") return a.user !== undefined && a.user === b.user;
  if ((a.user === undefined) !== (b.user === undefined)) return false;
  if (a.user !== undefined && b.user !== undefined && unescapeUser(a.user) !== unescapeUser(b.user)) return false;
  if ((a.password === undefined) !== (b.password === undefined)) return false;
  if (a.password !== undefined && b.password !== undefined && unescapeUser(a.password) !== unescapeUser(b.password)) return false;
  if (a.host.toLowerCase() !== b.host.toLowerCase()) return false;
  return a.port === b.port;
}
