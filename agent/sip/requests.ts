// Requests the agent originates itself (OPTIONS keep-alives, check-sync NOTIFY, and NOTIFYs
// inside event subscriptions, agent/sip/subscriptions.ts).
// Cold path: the text is built and run through the same parser as inbound traffic, so an
// outgoing request is exactly what a peer would parse.
import { randomBytes } from "node:crypto";
import net from "node:net";
import { parseDatagram } from "./message.ts";
import type { Flow, SipRequest } from "./types.ts";

export function randomToken(bytes = 8): string {
  return randomBytes(bytes).toString("hex");
}

/** host:port as it goes into a Via or URI (IPv6 in brackets). */
export function hostPort(address: string, port: number): string {
  // Only an address with a colon can be IPv6 (the check runs for every Via and Record-Route).
  return `${address.indexOf(":") >= 0 && net.isIPv6(address) ? `[${address}]` : address}:${port}`;
}

export interface OutOfDialogRequest {
  method: string;
  requestUri: string;
  /** The flow the request goes out on. */
  flow: Flow;
  /** Our address for Via/From when the flow's local side is a wildcard (see advertise.ts). */
  localAddress?: string;
  branch: string;
  fromUser?: string;
  to?: string;
  headers?: Array<[string, string]>;
  body?: { contentType: string; data: string };
}

export function buildRequest(r: OutOfDialogRequest): SipRequest {
  const local = hostPort(r.localAddress ?? (r.flow.localAddress || "127.0.0.1"), r.flow.localPort);
  return buildInDialogRequest({
    method: r.method,
    target: r.requestUri,
    flow: r.flow,
    ...(r.localAddress !== undefined ? { localAddress: r.localAddress } : {}),
    branch: r.branch,
    from: `<sip:${r.fromUser ?? "ringedge"}@${local}>;tag=${randomToken(6)}`,
    to: `<${r.to ?? r.requestUri}>`,
    callId: randomToken(12),
    cseq: 1,
    ...(r.headers !== undefined ? { headers: r.headers } : {}),
    ...(r.body !== undefined ? { body: r.body } : {}),
  });
}

/** A request the agent sends as a UA inside a dialog it holds (RFC 3261 §12.2.1.1). */
export interface DialogRequest {
  method: string;
  /** Request-URI: the remote target (the peer's Contact). */
  target: string;
  /** Route set toward the peer, nearest hop first (loose routing assumed, §16.12). */
  routes?: readonly string[];
  flow: Flow;
  localAddress?: string;
  branch: string;
  /** From and To header values, tags included. */
  from: string;
  to: string;
  callId: string;
  cseq: number;
  headers?: Array<[string, string]>;
  body?: { contentType: string; data: string };
}

export function buildInDialogRequest(r: DialogRequest): SipRequest {
  const local = hostPort(r.localAddress ?? (r.flow.localAddress || "127.0.0.1"), r.flow.localPort);
  const transport = r.flow.transport.toUpperCase();
  const body = r.body?.data ?? "";
  const routes = r.routes ?? [];
  const lines = [
    `${r.method} ${r.target} SIP/2.0`,
    `Via: SIP/2.0/${transport} ${local};branch=${r.branch};rport`,
    ...(routes.length > 0 ? [`Route: ${routes.join(", ")}`] : []),
    "Max-Forwards: 70",
    `From: ${r.from}`,
    `To: ${r.to}`,
    `Call-ID: ${r.callId}`,
    `CSeq: ${r.cseq} ${r.method}`,
    "User-Agent: ringedge",
    ...(r.headers ?? []).map(([n, v]) => `${n}: ${v}`),
    ...(r.body ? [`Content-Type: ${r.body.contentType}`] : []),
    `Content-Length: ${Buffer.byteLength(body)}`,
    "",
    body,
  ];
  const parsed = parseDatagram(Buffer.from(lines.join("\r\n")));
  if (!parsed.ok || parsed.message.kind !== "request") {
    throw new Error(`internal: built an unparseable ${r.method}: ${parsed.ok ? "not a request" : parsed.error.reason}`);
  }
  return parsed.message;
}
