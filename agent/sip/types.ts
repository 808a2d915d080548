// The SIP message model and the transport contract shared by every SIP layer.
// Mechanism only: nothing here knows about groups, devices or routing policy.

/** One header field line as received (folded lines already unfolded). */
export interface SipHeader {
  /** Canonical lower-case long form: "v" becomes "via", "i" becomes "call-id". */
  name: string;
  /** Value with leading/trailing whitespace trimmed; comma-joined values kept as one string. */
  value: string;
}

/** One Via value (RFC 3261 §20.42), top first in SipMessage.via. */
export interface Via {
  /** "UDP", "TCP", "TLS", or any token (RFC 4475 transports.dat). Upper-cased. */
  transport: string;
  /** Host as written; IPv6 references keep their brackets. */
  host: string;
  port: number | undefined;
  /** Parameter names lower-cased; a flag parameter (e.g. "rport" alone) maps to null. */
  params: Map<string, string | null>;
  branch: string | undefined;
  /** The value text exactly as it appeared, for re-serialisation. */
  raw: string;
}

/** From / To / Contact style name-addr or addr-spec (RFC 3261 §20.10). */
export interface NameAddr {
  displayName: string | undefined;
  /** The URI text without angle brackets. */
  uri: string;
  /** Header parameters (outside the <>), names lower-cased. */
  params: Map<string, string | null>;
  tag: string | undefined;
  raw: string;
}

export interface CSeq {
  seq: number;
  method: string;
}

interface SipMessageBase {
  /** All header lines in wire order. */
  headers: SipHeader[];
  /** Exactly Content-Length bytes (or the rest of a UDP datagram when the header is absent). */
  body: Buffer;
  /** Every Via value in order, comma-joined lines split. */
  via: Via[];
  callId: string;
  cseq: CSeq;
  from: NameAddr;
  to: NameAddr;
  /** performance.now() when the transport read the datagram or stream chunk carrying it (inbound only). */
  receivedAt?: number;
}

export interface SipRequest extends SipMessageBase {
  kind: "request";
  method: string;
  /** Request-URI text exactly as on the request line. */
  uri: string;
  /** Absent when the request has no Max-Forwards (RFC 2543 peers). */
  maxForwards: number | undefined;
}

export interface SipResponse extends SipMessageBase {
  kind: "response";
  status: number;
  reason: string;
  /**
   * The datagram this response was parsed from, when a proxy can relay it as received less
   * its top Via line (RFC 3261 §16.7 step 3) instead of re-serialising it. Valid only for the
   * parsed object itself (`source.of === res`): a copy with other fields is serialised.
   */
  source?: ResponseSource | undefined;
}

/** Where a received response's bytes are (offsets into `bytes`). */
export interface ResponseSource {
  /** The parsed response these offsets describe. */
  readonly of: SipResponse;
  readonly bytes: Buffer;
  /** The start-line's first byte (after any leading CRLFs). */
  readonly start: number;
  /** What takes the top Via value out: its whole header line with the CRLF when it is alone
   *  on it, else the value and the comma (and whitespace) after it. */
  readonly topViaStart: number;
  readonly topViaEnd: number;
  /** Just past the body (Content-Length bytes after the header block). */
  readonly end: number;
}

export type SipMessage = SipRequest | SipResponse;

/** Where a message came from or goes to; for TCP the connection it belongs to. */
export interface Flow {
  transport: "udp" | "tcp";
  /** Peer address and port (IPv6 without brackets). */
  remoteAddress: string;
  remotePort: number;
  /** Our socket address the message arrived on (used for Via / Record-Route / Contact). */
  localAddress: string;
  localPort: number;
  /** TCP connection id; undefined for UDP. */
  connectionId?: number;
}

/** Sends bytes; implemented by agent/sip/transport.ts. */
export interface Transport {
  /** Send on an existing flow (UDP socket or TCP connection). Returns false if it cannot. */
  send(flow: Flow, data: Buffer): boolean;
  /** Whether the flow is reliable (TCP): no retransmissions at the transaction layer. */
  isReliable(flow: Flow): boolean;
}
