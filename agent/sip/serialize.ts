// SIP message serialisation and the builders the hot path uses instead of re-parsing:
// responses (RFC 3261 §8.2.6), received/rport on the top Via (RFC 3261 §18.2.1, RFC 3581 §4)
// and the request rewrite a proxy does before forwarding (RFC 3261 §16.6).
// Messages are treated as immutable values except by setViaReceived, which the transport
// applies once on arrival, before any other layer sees the request.

import { canonicalHeaderName, parseVia, splitList } from "./message.ts";
import type { NameAddr, SipHeader, SipMessage, SipRequest, SipResponse, Via } from "./types.ts";

/** Wire spelling of well-known header names; others are capitalised per dash segment. */
const WIRE_NAMES: Record<string, string> = {
  "call-id": "Call-ID",
  cseq: "CSeq",
  "www-authenticate": "WWW-Authenticate",
  "mime-version": "MIME-Version",
  "rack": "RAck",
  "rseq": "RSeq",
  "sip-etag": "SIP-ETag",
  "sip-if-match": "SIP-If-Match",
  "p-asserted-identity": "P-Asserted-Identity",
  "p-preferred-identity": "P-Preferred-Identity",
};
const wireNameCache = new Map<string, string>(Object.entries(WIRE_NAMES));

function wireName(name: string): string {
  let w = wireNameCache.get(name);
  if (w === undefined) {
    w = name.replace(/(^|-)([a-z])/g, (_m, dash: string, c: string) => dash + c.toUpperCase());
    if (wireNameCache.size < 1024) wireNameCache.set(name, w);
  }
  return w;
}

/** CR/LF in a value or phrase would inject header lines: fold them to spaces. */
function clean(text: string): string {
  return text.indexOf("\r") >= 0 || text.indexOf("\n") >= 0 ? text.replace(/[\r\n]+/g, " ") : text;
}

/**
 * Messages whose bytes are already known (a relayed response: the bytes received less its top
 * Via value; a fork: its call's shared header text with its own Request-URI and Via). Keyed by
 * the object, so a copy made with other fields ({ ...res, status }) has no
 * entry and is serialised from its fields.
 */
const knownBytes = new WeakMap<SipMessage, Buffer>();

/** Says that `bytes` are `msg` on the wire: serialize returns them as they are. */
export function withBytes<M extends SipMessage>(msg: M, bytes: Buffer): M {
  knownBytes.set(msg, bytes);
  return msg;
}

/**
 * Bytes of a message: start-line, headers in order with long names, and Content-Length
 * recomputed from the body in bytes (kept where the first one was, else appended); or the
 * bytes given with withBytes.
 */
export function serialize(msg: SipMessage): Buffer {
  const known = knownBytes.get(msg);
  if (known !== undefined) return known;
  let s = msg.kind === "request" ? `${msg.method} ${clean(msg.uri)} SIP/2.0\r\n` : `SIP/2.0 ${msg.status} ${clean(msg.reason)}\r\n`;
  let lengthWritten = false;
  const headers = msg.headers;
  for (let i = 0; i < headers.length; i++) {
    const h = headers[i]!;
    if (h.name === "content-length") {
      if (!lengthWritten) s += `Content-Length: ${msg.body.length}\r\n`;
      lengthWritten = true;
      continue;
    }
    s += `${wireName(h.name)}: ${clean(h.value)}\r\n`;
  }
  if (!lengthWritten) s += `Content-Length: ${msg.body.length}\r\n`;
  return withBody(s + "\r\n", msg.body);
}

/** The header block's text, then the body. */
function withBody(head: string, body: Buffer): Buffer {
  if (body.length === 0) return Buffer.from(head, "utf8");
  const headLength = Buffer.byteLength(head, "utf8");
  const out = Buffer.allocUnsafe(headLength + body.length);
  out.write(head, 0, "utf8");
  body.copy(out, headLength);
  return out;
}

/** A request's header text before and after one of its header lines, as serialize writes it. */
export interface ForkParts {
  before: string;
  /** Ends with Content-Length and the blank line. */
  after: string;
}

/**
 * A request's header text split around one of its header lines (start-line and that line left
 * out): a proxy serialises the headers its forks share once and puts each fork's Request-URI
 * and Via in with forkBytes. Undefined when the line is not one of the request's, or is there twice.
 */
export function forkParts(req: SipRequest, line: SipHeader): ForkParts | undefined {
  let before = "";
  let after = "";
  let found = false;
  let lengthWritten = false;
  const headers = req.headers;
  for (let i = 0; i < headers.length; i++) {
    const h = headers[i]!;
    if (h === line) {
      if (found) return undefined;
      found = true;
      continue;
    }
    let text: string;
    if (h.name === "content-length") {
      if (lengthWritten) continue;
      lengthWritten = true;
      text = `Content-Length: ${req.body.length}\r\n`;
    } else text = `${wireName(h.name)}: ${clean(h.value)}\r\n`;
    if (found) after += text;
    else before += text;
  }
  if (!found) return undefined;
  if (!lengthWritten) after += `Content-Length: ${req.body.length}\r\n`;
  return { before, after: after + "\r\n" };
}

/** The bytes serialize would give a request whose headers are `parts` around `line`. */
export function forkBytes(req: SipRequest, parts: ForkParts, line: SipHeader): Buffer {
  return withBody(`${req.method} ${clean(req.uri)} SIP/2.0\r\n${parts.before}${wireName(line.name)}: ${clean(line.value)}\r\n${parts.after}`, req.body);
}

export interface ResponseOptions {
  /** Added to To when the request's To has no tag; never on 100 (RFC 3261 §8.2.6.2). */
  toTag?: string;
  /** Extra headers, appended after the copied ones. */
  headers?: SipHeader[];
  body?: Buffer;
  contentType?: string;
}

/**
 * A response to req (RFC 3261 §8.2.6.2): Via (every value, in order, as received — the
 * transport has already added received/rport), From, To (+ tag), Call-ID and CSeq copied;
 * Timestamp copied into 100 Trying (§8.2.6.1); then opts.headers, Content-Type and body.
 */
export function createResponse(req: SipRequest, status: number, reason: string, opts: ResponseOptions = {}): SipResponse {
  const headers: SipHeader[] = [];
  let to: NameAddr = req.to;
  const addTag = opts.toTag !== undefined && status !== 100 && req.to.tag === undefined;
  if (addTag) {
    const raw = `${req.to.raw};tag=${opts.toTag}`;
    const params = new Map(req.to.params);
    params.set("tag", opts.toTag!);
    to = { displayName: req.to.displayName, uri: req.to.uri, params, tag: opts.toTag, raw };
  }
  const reqHeaders = req.headers;
  for (let i = 0; i < reqHeaders.length; i++) {
    const h = reqHeaders[i]!;
    switch (h.name) {
      case "via":
      case "from":
      case "call-id":
      case "cseq":
        headers.push(h);
        break;
      case "to":
        headers.push(addTag ? { name: "to", value: to.raw } : h);
        break;
      case "timestamp":
        if (status === 100) headers.push(h);
        break;
    }
  }
  if (opts.headers) for (const h of opts.headers) headers.push(h);
  const body = opts.body ?? Buffer.alloc(0);
  if (opts.contentType !== undefined && body.length > 0) headers.push({ name: "content-type", value: opts.contentType });
  headers.push({ name: "content-length", value: String(body.length) });
  return {
    kind: "response",
    status,
    reason,
    headers,
    body,
    via: req.via.slice(),
    callId: req.callId,
    cseq: req.cseq,
    from: req.from,
    to,
  };
}

/** createResponse then serialize: the bytes of a response to req. */
export function encodeResponse(req: SipRequest, status: number, reason: string, opts: ResponseOptions = {}): Buffer {
  return serialize(createResponse(req, status, reason, opts));
}

function stripBrackets(host: string): string {
  return host.length > 1 && host.charCodeAt(0) === 91 && host.charCodeAt(host.length - 1) === 93 ? host.slice(1, -1) : host;
}

/** The Via text before its parameters, e.g. "SIP/2.0/UDP 192.0.2.1:5060". */
function viaSentPart(raw: string): string {
  const semi = raw.indexOf(";");
  return (semi < 0 ? raw : raw.slice(0, semi)).trimEnd();
}

function formatParams(params: Map<string, string | null>): string {
  let s = "";
  for (const [k, v] of params) s += v === null ? `;${k}` : `;${k}=${v}`;
  return s;
}

/**
 * RFC 3261 §18.2.1: add received=<source address> to the top Via when its sent-by host
 * differs from the packet's source; RFC 3581 §4: when the top Via has a valueless rport,
 * fill it with the source port and always add received. Updates req.via[0] and the text
 * of the first Via header so serialize and createResponse emit it. Address without brackets.
 */
export function setViaReceived(req: SipMessage, address: string, port: number): void {
  const top = req.via[0];
  if (!top) return;
  const rport = top.params.get("rport");
  const wantsRport = top.params.has("rport") && (rport === null || rport === "");
  const hostDiffers = stripBrackets(top.host).toLowerCase() !== address.toLowerCase();
  if (!hostDiffers && !wantsRport) return;
  const params = new Map(top.params);
  params.set("received", address);
  if (wantsRport) params.set("rport", String(port));
  const raw = viaSentPart(top.raw) + formatParams(params);
  const updated: Via = { transport: top.transport, host: top.host, port: top.port, params, branch: top.branch, raw };
  req.via[0] = updated;
  const headers = req.headers;
  for (let i = 0; i < headers.length; i++) {
    const h = headers[i]!;
    if (h.name !== "via") continue;
    // The header value starts with the top Via's raw text (both trimmed; comma-joined rest follows).
    const rest = h.value.startsWith(top.raw) ? h.value.slice(top.raw.length) : "";
    headers[i] = { name: "via", value: raw + rest };
    break;
  }
}

export interface ForwardOptions {
  /**
   * The proxy's own Via value, e.g. "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK…;rport", or that
   * value already parsed (its raw text is what goes on the wire), which spares a parse per fork.
   */
  via: string | Via;
  /** New Request-URI (RFC 3261 §16.6 step 2); default: unchanged. */
  requestUri?: string;
  /** A Record-Route value to insert before the existing ones (§16.6 step 4), e.g. "<sip:10.0.0.1;lr>". */
  recordRoute?: string;
  /** Remove the first Route value (§16.4: it named this proxy). */
  popRoute?: boolean;
}

/**
 * The copy of req a proxy forwards (RFC 3261 §16.6): its Via on top, Max-Forwards
 * decremented (or added as 70 when absent, step 3), Request-URI replaced, Record-Route
 * inserted first, top Route removed. Headers and body are shared, not copied. The caller
 * has already refused Max-Forwards 0 (483, see validate.ts). Throws TypeError only when
 * opts.via is not exactly one valid Via value (a programming error, not hostile input).
 */
export function forwardRequest(req: SipRequest, opts: ForwardOptions): SipRequest {
  const ownVia = typeof opts.via === "string" ? parseVia(opts.via) : [opts.via];
  if (!ownVia || ownVia.length !== 1) throw new TypeError(`forwardRequest: invalid Via value: ${String(opts.via)}`);
  const headers: SipHeader[] = [];
  const viaHeader: SipHeader = { name: "via", value: ownVia[0]!.raw };
  let viaPlaced = false;
  let recordRoutePlaced = opts.recordRoute === undefined;
  let routePopped = opts.popRoute !== true;
  let maxForwards: number;
  let maxForwardsPlaced = false;
  if (req.maxForwards === undefined) maxForwards = 70;
  else maxForwards = req.maxForwards > 0 ? req.maxForwards - 1 : 0;
  for (let i = 0; i < req.headers.length; i++) {
    const h = req.headers[i]!;
    switch (h.name) {
      case "via":
        if (!viaPlaced) {
          headers.push(viaHeader);
          viaPlaced = true;
        }
        headers.push(h);
        break;
      case "max-forwards":
        headers.push({ name: "max-forwards", value: String(maxForwards) });
        maxForwardsPlaced = true;
        break;
      case "record-route":
        if (!recordRoutePlaced) {
          headers.push({ name: "record-route", value: opts.recordRoute! });
          recordRoutePlaced = true;
        }
        headers.push(h);
        break;
      case "route":
        if (!routePopped) {
          routePopped = true;
          const values = splitList(h.value);
          if (values.length > 1) headers.push({ name: "route", value: values.slice(1).join(", ") });
          break;
        }
        headers.push(h);
        break;
      default:
        headers.push(h);
    }
  }
  if (!viaPlaced) headers.unshift(viaHeader);
  // Headers this request lacked go right after the Via block (position is not significant
  // between different header names, RFC 3261 §7.3.1, but it keeps the output readable).
  let after = headers.indexOf(viaHeader) + 1;
  while (after < headers.length && headers[after]!.name === "via") after++;
  if (!recordRoutePlaced) headers.splice(after, 0, { name: "record-route", value: opts.recordRoute! });
  if (!maxForwardsPlaced) headers.splice(after, 0, { name: "max-forwards", value: String(maxForwards) });
  return {
    kind: "request",
    method: req.method,
    uri: opts.requestUri ?? req.uri,
    maxForwards,
    headers,
    body: req.body,
    via: [ownVia[0]!, ...req.via],
    callId: req.callId,
    cseq: req.cseq,
    from: req.from,
    to: req.to,
  };
}

export interface HeaderChanges {
  /** Header names (any case, compact or long) whose every line is removed. */
  remove?: string[];
  /** Lines appended after the remaining ones. */
  append?: SipHeader[];
}

/**
 * A copy of msg with header lines removed and appended. The parsed fields (via, from, to,
 * call-id, cseq) are kept from msg: use it for other headers (e.g. stripping
 * Proxy-Authorization, adding Path). Appended names are canonicalised.
 */
export function withHeaders<M extends SipMessage>(msg: M, changes: HeaderChanges): M {
  const remove = new Set((changes.remove ?? []).map(canonicalHeaderName));
  const headers = remove.size === 0 ? msg.headers.slice() : msg.headers.filter((h) => !remove.has(h.name));
  for (const h of changes.append ?? []) headers.push({ name: canonicalHeaderName(h.name), value: h.value });
  return { ...msg, headers };
}

