// Transaction matching keys, RFC 3261 §17.1.3 (client) and §17.2.3 (server). Pure functions.
import { randomFillSync } from "node:crypto";
import type { SipRequest, SipResponse, Via } from "../types.ts";

/** RFC 3261 §8.1.1.7: branches of RFC 3261 elements start with this cookie. */
export const MAGIC_COOKIE = "z9hG4bK";

/**
 * A branch usable for RFC 3261 matching: the magic cookie followed by something.
 * RFC 4475 §3.2.1 (badbranch.dat): a branch of exactly "z9hG4bK" carries no transaction
 * identifier, so such requests fall back to RFC 2543 matching instead of colliding on one key.
 */
export function isRfc3261Branch(branch: string | undefined): branch is string {
  return branch !== undefined && branch.length > MAGIC_COOKIE.length && branch.startsWith(MAGIC_COOKIE);
}

/**
 * RFC 3261 §8.1.1.7: a branch "MUST be unique across space and time for all requests sent by
 * the UA". 96 bits from the CSPRNG make a collision negligible and the value unguessable.
 */
export function createBranch(): string {
  // One CSPRNG call and one base64url encoding per 341 branches, then a JS substring per
  // branch: no native call per fork (randomBytes() per branch cost ~5 µs per fork, and even a
  // Buffer#toString per branch runs cold native code on the INVITE → fork path).
  if (poolOffset >= POOL_CHARS) {
    poolText = randomFillSync(pool).toString("base64url");
    poolOffset = 0;
  }
  const id = poolText.slice(poolOffset, poolOffset + BRANCH_CHARS);
  poolOffset += BRANCH_CHARS;
  return MAGIC_COOKIE + id;
}

/** 12 random bytes = 16 base64url characters, without padding. */
const BRANCH_CHARS = 16;
const pool = Buffer.allocUnsafeSlow(12 * 341);
const POOL_CHARS = (pool.length / 12) * BRANCH_CHARS;
let poolText = "";
/** Past the end: the pool is filled on first use. */
let poolOffset = POOL_CHARS;

/** RFC 3261 §18.1.1/§19.1.2: an absent port means 5060, or 5061 for TLS. */
function defaultPort(transport: string): number {
  return transport === "TLS" || transport === "SCTP-TLS" ? 5061 : 5060;
}

/** sent-by of a Via (§20.42) normalised for comparison: host case-insensitive, default port filled in. */
export function sentBy(via: Via): string {
  return `${via.host.toLowerCase()}:${via.port ?? defaultPort(via.transport)}`;
}

/**
 * The method a request is matched under. RFC 3261 §17.2.3: "the method of the request matches
 * the one that created the transaction, except for ACK, where the method of the request that
 * created the transaction is INVITE".
 */
function matchMethod(method: string): string {
  return method === "ACK" ? "INVITE" : method;
}

/**
 * RFC 3261 §17.2.3 key: branch + sent-by of the top Via + method (ACK folded into INVITE).
 * `asMethod` lets a CANCEL look up the INVITE it cancels (§9.2). Undefined when the request
 * has no usable RFC 3261 branch.
 */
export function serverKey(req: SipRequest, asMethod?: string): string | undefined {
  const top = req.via[0];
  if (top === undefined || !isRfc3261Branch(top.branch)) return undefined;
  return `${top.branch}\n${sentBy(top)}\n${matchMethod(asMethod ?? req.method)}`;
}

/** Top Via compared field by field for RFC 2543 matching: protocol, sent-by and any branch. */
function topViaIdentity(via: Via): string {
  return `${via.transport}\n${sentBy(via)}\n${via.branch ?? ""}`;
}

/**
 * RFC 3261 §17.2.3, RFC 2543 fallback for requests without the magic cookie:
 * "the Request-URI, To tag, From tag, Call-ID, CSeq, and top Via header field match". The
 * CSeq is compared by number plus the method the request is matched under (ACK → INVITE).
 * `asMethod` and `toTag` let CANCEL find its INVITE (§9.2) and ACK find the transaction
 * whose response it acknowledges (see rfc2543AckKey).
 */
export function rfc2543Key(req: SipRequest, asMethod?: string): string | undefined {
  const top = req.via[0];
  if (top === undefined) return undefined;
  const method = matchMethod(asMethod ?? req.method);
  return [method, req.uri, req.to.tag ?? "", req.from.tag ?? "", req.callId, String(req.cseq.seq), topViaIdentity(top)].join("\n");
}

/**
 * RFC 3261 §17.2.3: an RFC 2543 ACK matches when "the Request-URI, From tag, Call-ID, CSeq
 * number (not the method), and top Via header field match those of the INVITE request which
 * created the transaction, and the To tag of the ACK matches the To tag of the response sent
 * by the server transaction". This key leaves the To tag out; the caller compares it.
 */
export function rfc2543AckKey(req: SipRequest): string | undefined {
  const top = req.via[0];
  if (top === undefined) return undefined;
  return ["INVITE", req.uri, req.from.tag ?? "", req.callId, String(req.cseq.seq), topViaIdentity(top)].join("\n");
}

/**
 * RFC 3261 §17.1.3: a response matches a client transaction by the branch of its top Via and
 * its CSeq method ("since a CANCEL request constitutes a different transaction, but shares
 * the same value of the branch parameter").
 */
export function clientKey(branch: string, method: string): string {
  return `${branch}\n${method}`;
}

/** Client key of a response; undefined when its top Via carries no branch at all. */
export function responseClientKey(res: SipResponse): string | undefined {
  const branch = res.via[0]?.branch;
  if (branch === undefined || branch === "") return undefined;
  return clientKey(branch, res.cseq.method);
}
