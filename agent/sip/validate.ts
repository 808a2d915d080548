// Request checks done by the element right above the parser (RFC 3261 §8.2 for a UAS or
// registrar, §16.3 for a proxy). Mechanism only: which methods, extensions and bodies the
// element supports is passed in by the caller. Returns the rejection to send, or undefined
// when the request may go on.
//
// Split with the caller: a proxy calls checkRequest with role "proxy" for requests it
// would forward, and with role "uas" (or "registrar") for requests addressed to itself —
// e.g. an OPTIONS to the proxy's own address with Max-Forwards 0 is answered 200 by the
// caller's UAS layer, not 483 (RFC 3261 §16.3 step 3, §11). Authentication (401/407),
// loop detection (482) and location lookups (404/480) belong to the layers above.
// ACK is never rejected: no response may be sent to an ACK (RFC 3261 §17.1.1.3, §17.2.1).
//
// Which RFC 4475 message exercises which rule (each is a case in test/unit/sip-validate.test.ts):
//
// | rule (in check order)                                   | status | RFC 3261        | RFC 4475 file              |
// |---------------------------------------------------------|--------|-----------------|----------------------------|
// | CSeq method differs from method, method unknown         | 501    | §8.2.1, §21.5.2 | mismatch02.dat             |
// | CSeq method differs from method                         | 400    | §8.1.1.5, §16.3 | mismatch01.dat             |
// | unknown method at a UAS / registrar (proxies forward)   | 501    | §8.2.1          | intmeth.dat, esc02.dat     |
// | Request-URI scheme not sip / sips / tel                 | 416    | §8.2.2.1, §16.3 | unkscm.dat, novelsc.dat    |
// | malformed sip/sips Request-URI                          | 400    | §16.3 step 1    | (unit cases)               |
// | escaped headers in the Request-URI                      | 400    | §19.1.5         | escruri.dat                |
// | Max-Forwards 0 at a proxy                               | 483    | §16.3 step 3    | zeromf.dat                 |
// | Proxy-Require (proxy) / Require (UAS) unknown tags      | 420    | §16.3 s.5, §8.2.2.3 | bext01.dat             |
// | REGISTER To not a sip / sips URI (registrar)            | 400    | §10.3 step 5    | unksm2.dat                 |
// | Content-Type not understood (UAS / registrar)           | 415    | §8.2.3          | invut.dat                  |
// | INVITE whose Accept excludes application/sdp (UAS)      | 406    | §21.4.7, §20.1  | sdp01.dat                  |

import { getHeader, getHeaders } from "./message.ts";
import type { SipHeader, SipRequest } from "./types.ts";
import { parseUri } from "./uri.ts";

export type ElementRole = "registrar" | "proxy" | "uas";

export interface Rejection {
  status: number;
  reason: string;
  headers?: SipHeader[];
}

export interface CheckOptions {
  role: ElementRole;
  /** Methods this element implements itself (Allow of a 501/405). */
  supportedMethods: ReadonlySet<string>;
  /** Option tags this element supports (RFC 3261 §19.2). */
  supportedExtensions: ReadonlySet<string>;
  /** Body types understood as UAS; default application/sdp. Lower-case. */
  acceptedContentTypes?: ReadonlySet<string>;
  /** warn-agent of Warning headers (RFC 3261 §20.43); default "ringedge". */
  warnAgent?: string;
}

const DEFAULT_CONTENT_TYPES: ReadonlySet<string> = new Set(["application/sdp"]);

function mediaType(value: string): string {
  const semi = value.indexOf(";");
  return (semi < 0 ? value : value.slice(0, semi)).trim().toLowerCase();
}

/** Whether an Accept header's values admit the media type (wildcards included, RFC 3261 §20.1). */
function accepts(values: string[], type: string): boolean {
  const major = type.slice(0, type.indexOf("/") + 1);
  for (const v of values) {
    const t = mediaType(v);
    if (t === type || t === "*/*" || (major.length > 0 && t === `${major}*`)) return true;
  }
  return false;
}

/** The request's rejection, or undefined when it passes the element-level checks. */
export function checkRequest(req: SipRequest, opts: CheckOptions): Rejection | undefined {
  const method = req.method;
  if (method === "ACK") return undefined;
  const asProxy = opts.role === "proxy";
  const known = opts.supportedMethods.has(method);
  const allow = (): SipHeader[] => [{ name: "allow", value: [...opts.supportedMethods].join(", ") }];

  // RFC 3261 §8.1.1.5: the CSeq method matches the request method (CANCEL and ACK carry
  // their own method too). An unknown method is the more useful answer (mismatch02.dat).
  if (req.cseq.method !== method) {
    if (!known) return { status: 501, reason: "Not Implemented", headers: allow() };
    return { status: 400, reason: "CSeq Method Mismatch" };
  }
  // §8.2.1: a UAS answers methods it does not implement with 501; proxies forward them (§16.1).
  if (!asProxy && !known) return { status: 501, reason: "Not Implemented", headers: allow() };

  // §8.2.2.1 / §16.3 step 2: schemes we cannot handle get 416 (unkscm.dat, novelsc.dat).
  const uri = parseUri(req.uri);
  if (uri === undefined) return { status: 400, reason: "Malformed Request-URI" };
  if (uri.scheme !== "sip" && uri.scheme !== "sips" && uri.scheme !== "tel") {
    return { status: 416, reason: "Unsupported URI Scheme" };
  }
  // §19.1.5: headers are not allowed in a Request-URI; refusing is the safe reading of
  // RFC 4475 §3.1.2.11 (escruri.dat): they never become real headers.
  if (uri.headers !== undefined) return { status: 400, reason: "Headers Not Allowed In Request-URI" };

  // §16.3 step 3: a proxy never forwards a request whose Max-Forwards is 0 (zeromf.dat).
  if (asProxy && req.maxForwards === 0) return { status: 483, reason: "Too Many Hops" };

  // §16.3 step 5 (Proxy-Require at proxies) and §8.2.2.3 (Require at a UAS); CANCEL carries
  // neither (§9.1), so it is not refused for them.
  if (method !== "CANCEL") {
    const tags = getHeaders(req, asProxy ? "proxy-require" : "require");
    const unsupported = tags.filter((t) => !opts.supportedExtensions.has(t));
    if (unsupported.length > 0) {
      return { status: 420, reason: "Bad Extension", headers: [{ name: "unsupported", value: unsupported.join(", ") }] };
    }
  }
  if (asProxy) return undefined;

  // §10.3 step 5 context: a registrar binds sip/sips addresses-of-record only (unksm2.dat).
  if (opts.role === "registrar" && method === "REGISTER") {
    const to = parseUri(req.to.uri);
    if (!to || (to.scheme !== "sip" && to.scheme !== "sips")) return { status: 400, reason: "To Is Not A SIP Address-Of-Record" };
  }

  // §8.2.3: bodies of a type (or encoding) the UAS does not understand get 415 with Accept.
  const contentTypes = opts.acceptedContentTypes ?? DEFAULT_CONTENT_TYPES;
  const contentType = getHeader(req, "content-type");
  if (req.body.length > 0) {
    if (contentType === undefined || !contentTypes.has(mediaType(contentType))) {
      return { status: 415, reason: "Unsupported Media Type", headers: [{ name: "accept", value: [...contentTypes].join(", ") }] };
    }
    const encodings = getHeaders(req, "content-encoding").filter((e) => e.toLowerCase() !== "identity");
    if (encodings.length > 0) {
      return { status: 415, reason: "Unsupported Media Type", headers: [{ name: "accept-encoding", value: "identity" }] };
    }
  }

  // §20.1, §21.4.7: an INVITE whose Accept rules out SDP cannot get an answer we can send
  // (sdp01.dat). An empty Accept means nothing is acceptable.
  if (method === "INVITE") {
    const acceptLines = req.headers.some((h) => h.name === "accept");
    if (acceptLines && !accepts(getHeaders(req, "accept"), "application/sdp")) {
      const agent = opts.warnAgent ?? "ringedge";
      return {
        status: 406,
        reason: "Not Acceptable",
        headers: [{ name: "warning", value: `399 ${agent} "Only application/sdp bodies are supported"` }],
      };
    }
  }
  return undefined;
}
