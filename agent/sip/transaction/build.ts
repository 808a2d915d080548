// Messages the transaction layer builds itself: the ACK for a non-2xx final response
// (RFC 3261 §17.1.1.3), a CANCEL for a pending INVITE (§9.1), the 100 (Trying) of an INVITE
// server transaction (§17.2.1) and the 408 a client transaction reports on timeout
// (§17.1.1.2, §17.1.2.2). Pure functions over plain data; responses via createResponse().
import { createResponse } from "../serialize.ts";
import type { NameAddr, SipHeader, SipRequest, SipResponse, Via } from "../types.ts";

function h(name: string, value: string): SipHeader {
  return { name, value };
}

/** RFC 3261 §8.1.1.6: a UAC MUST insert Max-Forwards; 70 is the recommended value. */
const MAX_FORWARDS = 70;

const NO_BODY = Buffer.alloc(0);
const MAX_FORWARDS_LINE = h("max-forwards", String(MAX_FORWARDS));
const NO_LENGTH_LINE = h("content-length", "0");

/**
 * A request carrying exactly one Via (the original's top one), used by ACK and CANCEL.
 * Returns undefined when the original has no Via, which a request we sent never lacks.
 * The parsed Via, From and To are shared with the original and the response, not copied:
 * messages are values nobody mutates (serialize.ts), and ACK and CANCEL are built once per
 * branch of every call that is not answered there.
 */
function hopRequest(original: SipRequest, method: string, to: NameAddr): SipRequest | undefined {
  const top = original.via[0];
  if (top === undefined) return undefined;
  return hop(original.uri, top, original.headers, original.from, original.callId, original.cseq.seq, method, to);
}

/**
 * A request of one hop: a single Via, the Route header fields among `lines` (§17.1.1.3 / §9.1:
 * those of the original request MUST appear again; the original's headers, or those kept of them),
 * Max-Forwards, From, To, Call-ID, CSeq and no body.
 */
function hop(uri: string, top: Via, lines: readonly SipHeader[], from: NameAddr, callId: string, seq: number, method: string, to: NameAddr): SipRequest {
  const headers: SipHeader[] = [h("via", top.raw)];
  for (let i = 0; i < lines.length; i++) if (lines[i]!.name === "route") headers.push(lines[i]!);
  headers.push(MAX_FORWARDS_LINE, h("from", from.raw), h("to", to.raw), h("call-id", callId), h("cseq", `${seq} ${method}`), NO_LENGTH_LINE);
  return {
    kind: "request",
    method,
    uri,
    maxForwards: MAX_FORWARDS,
    headers,
    body: NO_BODY,
    via: [top],
    callId,
    cseq: { seq, method },
    from,
    to,
  };
}

/**
 * RFC 3261 §17.1.1.3: the ACK for a 300-699 response. "The ACK request constructed by the
 * client transaction MUST contain values for the Call-ID, From, and Request-URI that are equal
 * to the values of those header fields in the request passed to the transport by the client
 * transaction ... The To header field in the ACK MUST equal the To header field in the
 * response being acknowledged ... The ACK MUST contain a single Via header field, and this MUST
 * be equal to the top Via header field of the original request. The CSeq header field in the
 * ACK MUST contain the same value for the sequence number as was present in the original
 * request, but the method parameter MUST be equal to "ACK"."
 */
export function buildAck(invite: SipRequest, response: SipResponse): SipRequest | undefined {
  return hopRequest(invite, "ACK", response.to);
}

/**
 * The same ACK again for a retransmission of the response, made from the INVITE's Request-URI
 * and Route header fields and the retransmitted response itself, so a transaction lingering
 * under Timer D keeps neither the INVITE nor the ACK's bytes (nine of them per ring-all-10 call,
 * for 32 s). The response's top Via, From, Call-ID and CSeq number are the INVITE's: the UAS
 * "MUST" copy them (§8.2.6.2); its To is the one the ACK carries anyway. `routes`: the INVITE's
 * Route header fields.
 */
export function rebuildAck(uri: string, routes: readonly SipHeader[], response: SipResponse): SipRequest | undefined {
  const top = response.via[0];
  if (top === undefined) return undefined;
  return hop(uri, top, routes, response.from, response.callId, response.cseq.seq, "ACK", response.to);
}

/**
 * RFC 3261 §9.1: "The Request-URI, Call-ID, To, the numeric part of CSeq, and From header
 * fields in the CANCEL request MUST be identical to those in the request being cancelled,
 * including tags. A CANCEL constructed by a client MUST have only a single Via header field
 * value matching the top Via value in the request being cancelled." The CANCEL travels in its
 * own client transaction (same branch, CSeq method CANCEL — §17.1.3 keeps them apart).
 */
export function buildCancel(request: SipRequest): SipRequest | undefined {
  return hopRequest(request, "CANCEL", request.to);
}

/** RFC 3261 §17.2.1 100 (Trying); createResponse copies Timestamp into it (§8.2.6.1). */
export function buildTrying(req: SipRequest): SipResponse {
  return createResponse(req, 100, "Trying");
}

/**
 * The 408 (Request Timeout) a client transaction hands its TU when Timer B, F or C fires.
 * It never goes on the wire, so it gets no To tag.
 */
export function buildTimeout(req: SipRequest): SipResponse {
  return createResponse(req, 408, "Request Timeout");
}
