// Requests the agent originates itself (OPTIONS keep-alives now; NOTIFY re-sync later).
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
  return `${net.isIPv6(address) ? `[${address}]` : address}:${port}`;
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
  const transport = r.flow.transport.toUpperCase();
  const body = r.body?.data ?? "";
  const lines = [
    `${r.method} ${r.requestUri} SIP/2.0`,
    `Via: SIP/2.0/${transport} ${local};branch=${r.branch};rport`,
    "Max-Forwards: 70",
    `From: <sip:${r.fromUser ?? "ringedge"}@${local}>;tag=${randomToken(6)}`,
    `To: <${r.to ?? r.requestUri}>`,
    `Call-ID: ${randomToken(12)}`,
    `CSeq: 1 ${r.method}`,
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
