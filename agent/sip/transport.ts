// SIP transport layer, RFC 3261 §18: UDP datagrams and TCP streams on configured
// addresses (IPv4 and IPv6), stream framing by Content-Length in bytes, size and header
// limits, CRLF keep-alives (RFC 5626 §3.5.1), and the received/rport rules (RFC 3261
// §18.2.1, RFC 3581 §4) so that phones behind NAT are answered where they came from.
// Mechanism only: it hands parsed messages up and knows nothing of registrars or groups.
import dgram from "node:dgram";
import dns from "node:dns";
import net from "node:net";
import { DEFAULT_LIMITS, parseDatagram, parseStreamMessage, streamContentLength, type ParseError, type ParseLimits } from "./message.ts";
import { PROBE_BYTES, ProbeClock, probeNonce, probePayload, readProbe } from "./queue-probe.ts";
import { setViaReceived } from "./serialize.ts";
import type { Flow, SipRequest, SipResponse, Transport } from "./types.ts";
import type { Logger } from "../log.ts";

export interface ListenAddress {
  host: string;
  port: number;
  family: 4 | 6;
}

export interface TransportOptions {
  listen: ListenAddress[];
  transports: ReadonlyArray<"udp" | "tcp">;
  limits?: ParseLimits;
  /** Open TCP connections at most (inbound + outbound); more are refused. */
  maxConnections?: number;
  /** Inbound TCP connections from one remote address at most; more are refused. */
  maxConnectionsPerAddress?: number;
  /**
   * A message on a stream must be complete (header block and Content-Length body) this long
   * after its first byte, or the connection is closed; further bytes do not extend it.
   */
  tcpMessageTimeoutMs?: number;
  /**
   * Close a TCP connection with no message and no CRLF keep-alive for this long (phones send
   * CRLF pings well inside it). Bytes inside an unfinished message do not count: the message
   * deadline governs those.
   */
  tcpIdleTimeoutMs?: number;
  /** Early drop for silently banned sources: return false to ignore every byte from it. */
  acceptSource?: (address: string, flow?: Flow) => boolean;
  log: Logger;
}

/** One SIP UDP socket's queue-delay probe: the socket it is sent from, where to, its clock. */
interface UdpProbe {
  socket?: dgram.Socket;
  clock: ProbeClock;
  targetAddress: string;
  targetPort: number;
  localAddress: string;
  localPort: number;
  onError: (err: Error | null) => void;
}

export interface InboundHandler {
  onRequest(req: SipRequest, flow: Flow): void;
  onResponse(res: SipResponse, flow: Flow): void;
}

/** Where to send a request that starts outside any existing flow (a binding's contact). */
export interface SendTarget {
  transport: "udp" | "tcp";
  address: string;
  port: number;
}

export interface TransportStats {
  received: number;
  sent: number;
  parseErrors: number;
  dropped: number;
  tcpConnections: number;
  /** Most inbound TCP connections now open from one remote address. */
  tcpMostFromOneAddress: number;
  /** Inbound TCP connections closed at once because a cap (per address or in total) was reached. */
  tcpRefused: number;
  /** TCP connections closed because a message was not complete within its deadline. */
  tcpMessageTimeouts: number;
  /** TCP connections closed for being idle. */
  tcpIdleClosed: number;
}

interface Connection {
  id: number;
  socket: net.Socket;
  flow: Flow;
  framer: StreamFramer;
  /** The idle timer (between messages) or the deadline of the message being received. */
  timer: NodeJS.Timeout | undefined;
  /** The framer's messageSeq the timer is a deadline for; 0 while it is the idle timer. */
  timerFor: number;
}

export type StreamEvent =
  /** One whole message (header block and Content-Length body), to parse. */
  | { kind: "message"; bytes: Buffer }
  /** A double CRLF between messages: a keep-alive ping, answered with a CRLF pong (RFC 5626 §4.4.1). */
  | { kind: "ping" }
  /** Framing is lost (no or bad Content-Length, over a size limit): the stream must close. */
  | { kind: "error"; reason: string };

const CRLFCRLF = Buffer.from("\r\n\r\n");
const CRLF = Buffer.from("\r\n");
const NO_BYTES = Buffer.alloc(0);

/**
 * Cuts a byte stream into SIP messages (RFC 3261 §18.3: the header block ends at the first
 * empty line, the body is Content-Length bytes) in time linear in the bytes received, however
 * they are chunked: the search for the end of the header block resumes where the last one
 * stopped (less 3 bytes, for a CRLFCRLF split across chunks), Content-Length is read once per
 * message, and bytes are appended to a buffer that grows by doubling instead of being copied
 * anew on every chunk. CRLFs before a start-line are keep-alives (RFC 3261 §7.5, RFC 5626
 * §3.5.1). A buffer handed out in a message is never written again.
 */
export class StreamFramer {
  /** Bytes examined by header-block searches and Content-Length reads so far (the framing's work). */
  scanned = 0;
  /** Messages begun so far (first non-CRLF byte seen); identifies the message in progress. */
  messageSeq = 0;
  /** Messages completed plus CRLF keep-alive pairs seen between messages: the peer's activity. */
  activity = 0;
  private store: Buffer = NO_BYTES;
  private start = 0;
  private end = 0;
  /** store is our own allocation, so the bytes past `end` may be written. */
  private owned = false;
  private inMsg = false;
  /** Offset (from start) the header-block search has covered for the message in progress. */
  private searched = 0;
  /** Length of the message in progress once its header block has been read, else -1. */
  private total = -1;
  private crlfPairs = 0;
  private failed = false;

  constructor(private readonly limits: ParseLimits = DEFAULT_LIMITS) {}

  /** Part of a message (not only keep-alive CRLFs) is buffered. */
  get inMessage(): boolean {
    return this.inMsg;
  }

  /** Bytes buffered and not yet handed out. */
  get buffered(): number {
    return this.end - this.start;
  }

  push(chunk: Buffer): StreamEvent[] {
    const out: StreamEvent[] = [];
    if (this.failed || chunk.length === 0) return out;
    this.append(chunk);
    const max = this.limits.maxMessageBytes;
    // One pong per run of keep-alives in a read, however many pings it holds: a peer that
    // pours CRLFs in gets one small write per read, not one per 4 bytes.
    let pinged = false;
    while (this.end > this.start) {
      if (!this.inMsg) {
        const s = this.store;
        let k = this.start;
        while (k + 1 < this.end && s[k] === 13 && s[k + 1] === 10) {
          k += 2;
          this.activity++;
          if (++this.crlfPairs === 2) {
            this.crlfPairs = 0;
            if (!pinged) out.push({ kind: "ping" });
            pinged = true;
          }
        }
        this.start = k;
        if (k === this.end || (k + 1 === this.end && s[k] === 13)) break; // a lone CR waits for its LF
        this.inMsg = true;
        pinged = false;
        this.messageSeq++;
        this.crlfPairs = 0;
        this.searched = 0;
        this.total = -1;
      }
      const view = this.store.subarray(this.start, this.end);
      if (this.total < 0) {
        const from = Math.max(0, this.searched - 3);
        const idx = view.indexOf(CRLFCRLF, from);
        if (idx < 0) {
          this.scanned += view.length - from;
          this.searched = view.length;
          if (view.length > max) return this.fail(out, "header block exceeds size limit");
          break;
        }
        this.scanned += idx + 4 - from;
        if (idx + 4 > max) return this.fail(out, "header block exceeds size limit");
        this.scanned += idx;
        const cl = streamContentLength(view, idx);
        if (typeof cl === "string") return this.fail(out, cl);
        this.total = idx + 4 + cl;
        if (this.total > max) return this.fail(out, "message exceeds size limit");
      }
      if (view.length < this.total) break;
      out.push({ kind: "message", bytes: view.subarray(0, this.total) });
      this.start += this.total;
      this.inMsg = false;
      this.total = -1;
      this.activity++;
    }
    if (this.start === this.end) this.release();
    return out;
  }

  private append(chunk: Buffer): void {
    const pending = this.end - this.start;
    if (pending === 0) {
      // Nothing buffered: use the chunk itself (the common case of whole messages per read).
      this.store = chunk;
      this.start = 0;
      this.end = chunk.length;
      this.owned = false;
      return;
    }
    if (this.owned && this.store.length - this.end >= chunk.length) {
      chunk.copy(this.store, this.end);
      this.end += chunk.length;
      return;
    }
    const need = pending + chunk.length;
    const next = Buffer.allocUnsafe(Math.max(need, Math.min(Math.max(2 * need, 1024), this.limits.maxMessageBytes + 1)));
    this.store.copy(next, 0, this.start, this.end);
    chunk.copy(next, pending);
    this.store = next;
    this.start = 0;
    this.end = need;
    this.owned = true;
  }

  private release(): void {
    this.store = NO_BYTES;
    this.start = this.end = 0;
    this.owned = false;
  }

  private fail(out: StreamEvent[], reason: string): StreamEvent[] {
    this.failed = true;
    this.inMsg = false;
    this.release();
    out.push({ kind: "error", reason });
    return out;
  }
}

/**
 * The stateless error reply to a request the parser refused (RFC 3261 §8.2, §16.3). It goes
 * back on the flow the request came in on, i.e. to its source address, never to an address
 * named inside the message.
 */
export function statelessErrorResponse(err: ParseError, flow: Flow, raw?: Buffer): Buffer | undefined {
  const p = err.partial;
  if (err.isRequest !== true) return undefined; // malformed responses are dropped (§18.1.2)
  // ACK never gets a response (RFC 3261 §17.2.1 applies to INVITE server transactions only).
  if (p.method === "ACK" || p.cseq?.method === "ACK") return undefined;
  const lines = [`SIP/2.0 ${err.status} ${err.reason.replace(/[\r\n]/g, " ")}`];
  if (p.via && p.via.length > 0) {
    p.via.forEach((v, i) => {
      let viaText = v.raw;
      if (i === 0) {
        // Mark where the request really came from (RFC 3261 §18.2.1; RFC 3581 §4).
        if (v.host.replace(/^\[|\]$/g, "") !== flow.remoteAddress) viaText += `;received=${flow.remoteAddress}`;
        if (v.params.has("rport") && v.params.get("rport") === null) viaText = viaText.replace(/;\s*rport(?=\s*(;|$))/i, `;rport=${flow.remotePort}`);
      }
      lines.push(`Via: ${viaText}`);
    });
  } else {
    // The Via itself is what is broken (RFC 4475 badinv01): echo its lines verbatim so the
    // sender can match the 400; without any Via line there is nothing to answer.
    const vias = raw ? rawViaLines(raw) : [];
    if (vias.length === 0) return undefined;
    for (const v of vias) lines.push(`Via: ${v}`);
  }
  // §8.2.6.2 copies From, To, Call-ID and CSeq; a request missing some (RFC 4475 insuf.dat)
  // still gets its 400 with what it had, so the sender learns why.
  if (p.from) lines.push(`From: ${p.from.raw}`);
  if (p.to) lines.push(`To: ${p.to.raw}`);
  if (p.callId) lines.push(`Call-ID: ${p.callId}`);
  if (p.cseq) lines.push(`CSeq: ${p.cseq.seq} ${p.cseq.method}`);
  lines.push("Content-Length: 0", "", "");
  return Buffer.from(lines.join("\r\n"));
}

/** Via header values as written (folding undone), read straight from the bytes. */
function rawViaLines(raw: Buffer): string[] {
  const text = raw.subarray(0, Math.min(raw.length, 16_384)).toString("latin1");
  const end = text.indexOf("\r\n\r\n");
  const head = (end >= 0 ? text.slice(0, end) : text).replace(/\r?\n[ \t]+/g, " ");
  const out: string[] = [];
  for (const line of head.split(/\r?\n/).slice(1)) {
    const m = /^(?:via|v)[ \t]*:[ \t]*(.*)$/i.exec(line);
    if (m && m[1] && /^[\x20-\x7e]+$/.test(m[1])) out.push(m[1].trim());
    if (out.length >= 16) break;
  }
  return out;
}

/** Closes a connection with a reset (no TIME_WAIT left on our side), before reading anything. */
function refuse(socket: net.Socket): void {
  // resetAndDestroy() reports a socket already without its handle as an error: never fatal.
  socket.on("error", () => undefined);
  socket.resetAndDestroy();
}

/**
 * Whether s is a dotted-quad IPv4 address as net.isIPv4 reads it (no leading zeros), checked
 * without its regular expressions: every datagram sent asks this of its destination.
 */
export function isDottedQuad(s: string): boolean {
  const n = s.length;
  if (n < 7 || n > 15) return false;
  let parts = 0;
  let digits = 0;
  let value = 0;
  let lead = 0;
  // One pass; the end of the string closes the last part as a dot would.
  for (let i = 0; i <= n; i++) {
    const c = i < n ? s.charCodeAt(i) : 46;
    if (c === 46 /* . */) {
      if (digits === 0 || value > 255 || (digits > 1 && lead === 48) || ++parts > 4) return false;
      digits = 0;
      value = 0;
    } else if (c >= 48 && c <= 57) {
      if (digits === 0) lead = c;
      if (++digits > 3) return false;
      value = value * 10 + (c - 48);
    } else return false;
  }
  return parts === 4;
}

/**
 * dgram's lookup for a send: an IP literal (every flow and binding address) is answered at
 * once instead of through dns.lookup's process.nextTick, so a datagram leaves inside send() —
 * the first fork of a call goes out before the others are built. Names still go to dns.lookup.
 */
function literalLookup(hostname: string, options: dns.LookupOneOptions, callback: (err: NodeJS.ErrnoException | null, address: string, family: number) => void): void {
  const family = isDottedQuad(hostname) ? 4 : net.isIP(hostname);
  if (family !== 0) callback(null, hostname, family);
  else dns.lookup(hostname, options, callback);
}

export class SipTransport implements Transport {
  private readonly limits: ParseLimits;
  private readonly maxConnections: number;
  private readonly maxPerAddress: number;
  private readonly messageMs: number;
  private readonly idleMs: number;
  /** Inbound connections open per remote address, for the per-address cap. */
  private readonly inboundByAddress = new Map<string, number>();
  /** When a refusal was last logged as a warning (a flood is logged once a while, not per connection). */
  private refusedLoggedAt = -Infinity;
  private readonly log: Logger;
  /** UDP sockets keyed by "localAddress|localPort". */
  private readonly udp = new Map<string, dgram.Socket>();
  private readonly tcpServers: net.Server[] = [];
  /** Open TCP connections keyed by connection id. */
  private readonly connections = new Map<number, Connection>();
  /** The newest connection to a peer, keyed by "address|port", for reuse (RFC 3261 §18.1.1). */
  private readonly connectionByPeer = new Map<string, number>();
  private nextConnectionId = 1;
  private readonly counters: TransportStats = { received: 0, sent: 0, parseErrors: 0, dropped: 0, tcpConnections: 0, tcpMostFromOneAddress: 0, tcpRefused: 0, tcpMessageTimeouts: 0, tcpIdleClosed: 0 };
  private bound: Array<{ transport: "udp" | "tcp"; address: string; port: number; family: 4 | 6 }> = [];
  /** Queue-delay probes, one per SIP UDP socket by its key (sip/queue-probe.ts); made on the first probeQueues(). */
  private readonly probes = new Map<string, UdpProbe>();
  private readonly probeNonce = probeNonce();
  private stopped = false;

  constructor(private readonly opts: TransportOptions, private readonly handler: InboundHandler) {
    this.limits = opts.limits ?? DEFAULT_LIMITS;
    this.maxConnections = opts.maxConnections ?? 4096;
    this.maxPerAddress = opts.maxConnectionsPerAddress ?? 32;
    this.messageMs = opts.tcpMessageTimeoutMs ?? 10_000;
    this.idleMs = opts.tcpIdleTimeoutMs ?? 15 * 60_000;
    this.log = opts.log;
  }

  async start(): Promise<void> {
    this.stopped = false;
    for (const addr of this.opts.listen) {
      // UDP and TCP share a port number; with port 0 the UDP port chosen is reused for TCP.
      let port = addr.port;
      if (this.opts.transports.includes("udp")) port = await this.bindUdp(addr.host, port, addr.family);
      if (this.opts.transports.includes("tcp")) port = await this.listenTcp(addr.host, port, addr.family);
    }
  }

  /** What was actually bound (port 0 resolved), for logs, status and tests. */
  addresses(): ReadonlyArray<{ transport: "udp" | "tcp"; address: string; port: number; family: 4 | 6 }> {
    return this.bound;
  }

  /**
   * Sends one queue-delay probe to each SIP UDP socket from a socket of the agent's own (made on
   * the first call, bound to loopback or to the SIP socket's own address). Overload control
   * calls this once per sample and reads queueDelayMs() before the next.
   */
  probeQueues(): void {
    if (this.stopped) return;
    for (const [key, sock] of this.udp) {
      const probe = this.probes.get(key);
      if (probe === undefined) {
        this.openProbe(key, sock);
        continue;
      }
      if (probe.socket === undefined) continue; // still binding, or failed
      const seq = probe.clock.sent(performance.now());
      probe.socket.send(probePayload(this.probeNonce, seq), probe.targetPort, probe.targetAddress, probe.onError);
    }
  }

  /** The longest wait in a SIP UDP socket's receive queue, ms, from the probes; undefined before any. */
  queueDelayMs(): number | undefined {
    const now = performance.now();
    let worst: number | undefined;
    for (const p of this.probes.values()) {
      const d = p.clock.delayMs(now);
      if (d !== undefined && (worst === undefined || d > worst)) worst = d;
    }
    return worst;
  }

  private openProbe(key: string, sipSock: dgram.Socket): void {
    let a: net.AddressInfo;
    try {
      a = sipSock.address();
    } catch {
      return; // closed meanwhile
    }
    const v6 = a.family === "IPv6" || net.isIPv6(a.address);
    const any = a.address === "0.0.0.0" || a.address === "::";
    const targetAddress = any ? (v6 ? "::1" : "127.0.0.1") : a.address;
    const probe: UdpProbe = { clock: new ProbeClock(), targetAddress, targetPort: a.port, localAddress: "", localPort: -1, onError: () => undefined };
    this.probes.set(key, probe);
    const sock = dgram.createSocket({ type: v6 ? "udp6" : "udp4", ipv6Only: v6, lookup: literalLookup });
    let failed = false;
    const fail = (err: Error): void => {
      if (failed) return;
      failed = true;
      probe.socket = undefined;
      // Forget the probes in flight: unread for ever, their age would read as a queue that never
      // moves and refuse every new call. No probe, no measurement: the loop's figures stand in.
      probe.clock = new ProbeClock();
      this.log.warn("queue-delay probe unavailable for a SIP UDP socket: overload control falls back to the event loop's figures", { local: `${a.address}:${a.port}`, err: err.message });
      try {
        sock.close();
      } catch {
        // not bound yet, or closed already
      }
    };
    probe.onError = (err) => {
      if (err) fail(err);
    };
    sock.on("error", fail);
    sock.bind(0, targetAddress, () => {
      if (failed) return;
      if (this.stopped) return void sock.close();
      const local = sock.address();
      probe.localAddress = local.address;
      probe.localPort = local.port;
      probe.socket = sock;
      sock.unref();
    });
  }

  /** A datagram of PROBE_BYTES on a SIP socket: ours if it comes from that socket's probe with our nonce. */
  private isProbe(key: string, data: Buffer, rinfo: dgram.RemoteInfo, at: number): boolean {
    const probe = this.probes.get(key);
    if (probe === undefined || rinfo.port !== probe.localPort || rinfo.address !== probe.localAddress) return false;
    const seq = readProbe(data, this.probeNonce);
    if (seq === undefined) return false;
    probe.clock.received(seq, at);
    return true;
  }

  stats(): TransportStats {
    let most = 0;
    for (const n of this.inboundByAddress.values()) if (n > most) most = n;
    return { ...this.counters, tcpConnections: this.connections.size, tcpMostFromOneAddress: most };
  }

  private bindUdp(host: string, port: number, family: 4 | 6): Promise<number> {
    return new Promise((resolve, reject) => {
      const sock = dgram.createSocket({ type: family === 6 ? "udp6" : "udp4", ipv6Only: family === 6, recvBufferSize: 4 << 20, lookup: literalLookup });
      sock.once("error", reject);
      sock.bind(port, host, () => {
        sock.off("error", reject);
        const a = sock.address();
        const key = `${a.address}|${a.port}`;
        this.udp.set(key, sock);
        this.bound.push({ transport: "udp", address: a.address, port: a.port, family });
        sock.on("error", (err) => this.log.warn("udp socket error", { local: `${a.address}:${a.port}`, err }));
        sock.on("message", (data, rinfo) => {
          const receivedAt = performance.now();
          if (data.length === PROBE_BYTES && this.isProbe(key, data, rinfo, receivedAt)) return;
          const flow: Flow = { transport: "udp", remoteAddress: rinfo.address, remotePort: rinfo.port, localAddress: a.address, localPort: a.port };
          this.onDatagram(data, flow, receivedAt);
        });
        resolve(a.port);
      });
    });
  }

  private listenTcp(host: string, port: number, family: 4 | 6): Promise<number> {
    return new Promise((resolve, reject) => {
      // pauseOnConnect: nothing is read from a connection before it is admitted (accept()).
      const server = net.createServer({ noDelay: true, pauseOnConnect: true }, (socket) => this.accept(socket));
      server.once("error", reject);
      server.listen({ host, port, ipv6Only: family === 6 }, () => {
        server.off("error", reject);
        const a = server.address() as net.AddressInfo;
        this.tcpServers.push(server);
        this.bound.push({ transport: "tcp", address: a.address, port: a.port, family });
        server.on("error", (err) => this.log.warn("tcp server error", { local: `${a.address}:${a.port}`, err }));
        resolve(a.port);
      });
    });
  }

  private onDatagram(data: Buffer, flow: Flow, receivedAt: number = performance.now()): void {
    this.counters.received++;
    if (this.opts.acceptSource && !this.opts.acceptSource(flow.remoteAddress, flow)) {
      this.counters.dropped++;
      return;
    }
    // Keep-alive datagrams (CRLF, or STUN which we do not serve) carry no SIP message.
    if (data.length <= 4 && data.every((b) => b === 13 || b === 10)) return;
    if (data.length > this.limits.maxMessageBytes) {
      this.counters.dropped++;
      if (this.log.enabled("debug")) this.log.debug("udp datagram over size limit dropped", { from: `${flow.remoteAddress}:${flow.remotePort}`, bytes: data.length });
      return;
    }
    const result = parseDatagram(data, this.limits);
    if (!result.ok) return this.onParseError(result.error, flow, data);
    result.message.receivedAt = receivedAt;
    this.dispatch(result.message, flow);
  }

  private dispatch(msg: SipRequest | SipResponse, flow: Flow): void {
    try {
      if (msg.kind === "request") {
        setViaReceived(msg, flow.remoteAddress, flow.remotePort);
        this.handler.onRequest(msg, flow);
      } else {
        this.handler.onResponse(msg, flow);
      }
    } catch (err) {
      // A bug above must not take the listener down: log it and keep serving.
      this.log.error("handler failed on inbound message", { err: (err as Error).stack ?? String(err), from: `${flow.remoteAddress}:${flow.remotePort}` });
    }
  }

  private onParseError(err: ParseError, flow: Flow, raw: Buffer): void {
    this.counters.parseErrors++;
    if (this.log.enabled("debug")) this.log.debug("unparseable message", { from: `${flow.remoteAddress}:${flow.remotePort}`, transport: flow.transport, status: err.status, reason: err.reason });
    // Malformed responses are dropped silently (RFC 3261 §18.1.2); requests get a
    // stateless error response when enough of them could be read to address one.
    const reply = statelessErrorResponse(err, flow, raw);
    if (reply) this.send(flow, reply);
  }

  // --- TCP ---------------------------------------------------------------------------

  /** An inbound connection: admitted unless its source is banned or a cap is reached. */
  private accept(socket: net.Socket): void {
    const remoteAddress = socket.remoteAddress ?? "";
    if (this.opts.acceptSource && !this.opts.acceptSource(remoteAddress)) {
      this.counters.dropped++;
      refuse(socket);
      return;
    }
    const fromAddress = this.inboundByAddress.get(remoteAddress) ?? 0;
    const cap = this.connections.size >= this.maxConnections ? "total" : fromAddress >= this.maxPerAddress ? "per-address" : undefined;
    if (cap !== undefined) {
      // Closed at once with a reset: no bytes read, no TIME_WAIT left behind on our side.
      this.counters.tcpRefused++;
      const now = performance.now();
      if (now - this.refusedLoggedAt >= 10_000) {
        this.refusedLoggedAt = now;
        this.log.warn("tcp connection limit reached; refusing", { from: remoteAddress, cap, fromAddress, total: this.connections.size, refused: this.counters.tcpRefused });
      }
      refuse(socket);
      return;
    }
    const conn = this.adopt(socket);
    if (!conn) return;
    this.inboundByAddress.set(remoteAddress, fromAddress + 1);
    socket.once("close", () => {
      const n = (this.inboundByAddress.get(remoteAddress) ?? 1) - 1;
      if (n > 0) this.inboundByAddress.set(remoteAddress, n);
      else this.inboundByAddress.delete(remoteAddress);
    });
    socket.resume();
  }

  private adopt(socket: net.Socket, knownFlow?: Flow): Connection | undefined {
    if (this.connections.size >= this.maxConnections) {
      socket.destroy();
      return undefined;
    }
    const remoteAddress = socket.remoteAddress ?? "";
    if (knownFlow && this.opts.acceptSource && !this.opts.acceptSource(knownFlow.remoteAddress)) {
      this.counters.dropped++;
      socket.destroy();
      return undefined;
    }
    const id = this.nextConnectionId++;
    const flow: Flow = knownFlow ?? {
      transport: "tcp",
      remoteAddress,
      remotePort: socket.remotePort ?? 0,
      localAddress: socket.localAddress ?? "",
      localPort: socket.localPort ?? 0,
      connectionId: id,
    };
    flow.connectionId = id;
    const conn: Connection = { id, socket, flow, framer: new StreamFramer(this.limits), timer: undefined, timerFor: 0 };
    this.connections.set(id, conn);
    this.connectionByPeer.set(`${flow.remoteAddress}|${flow.remotePort}`, id);
    socket.setNoDelay(true);
    this.armIdle(conn);
    socket.on("data", (chunk: Buffer) => this.onStreamData(conn, chunk));
    socket.on("error", (err) => this.log.debug("tcp connection error", { conn: id, err }));
    socket.on("close", () => {
      clearTimeout(conn.timer);
      conn.timer = undefined;
      this.connections.delete(id);
      const key = `${flow.remoteAddress}|${flow.remotePort}`;
      if (this.connectionByPeer.get(key) === id) this.connectionByPeer.delete(key);
    });
    return conn;
  }

  private onStreamData(conn: Connection, chunk: Buffer): void {
    const receivedAt = performance.now();
    const activity = conn.framer.activity;
    const events = conn.framer.push(chunk);
    for (const e of events) {
      if (conn.socket.destroyed) return;
      if (e.kind === "ping") {
        this.send(conn.flow, CRLF);
        continue;
      }
      if (e.kind === "error") return this.closeBroken(conn, e.reason);
      this.counters.received++;
      const result = parseStreamMessage(e.bytes, this.limits);
      if (!result.ok) {
        this.onParseError(result.error, conn.flow, e.bytes);
        continue;
      }
      result.message.receivedAt = receivedAt;
      this.dispatch(result.message, conn.flow);
    }
    if (conn.socket.destroyed) return;
    if (conn.framer.inMessage) {
      // The deadline runs from the first byte of this message; later bytes do not move it.
      if (conn.timerFor !== conn.framer.messageSeq) this.armDeadline(conn);
    } else if (conn.timerFor !== 0) {
      this.armIdle(conn);
    } else if (conn.framer.activity !== activity) {
      conn.timer?.refresh();
    }
  }

  private armIdle(conn: Connection): void {
    clearTimeout(conn.timer);
    conn.timerFor = 0;
    conn.timer = setTimeout(() => {
      this.counters.tcpIdleClosed++;
      if (this.log.enabled("debug")) this.log.debug("closing idle tcp connection", { conn: conn.id, from: conn.flow.remoteAddress });
      conn.socket.destroy();
    }, this.idleMs);
    conn.timer.unref();
  }

  private armDeadline(conn: Connection): void {
    clearTimeout(conn.timer);
    conn.timerFor = conn.framer.messageSeq;
    conn.timer = setTimeout(() => {
      this.counters.tcpMessageTimeouts++;
      if (this.log.enabled("debug")) this.log.debug("closing tcp connection: message not complete in time", { conn: conn.id, from: conn.flow.remoteAddress, buffered: conn.framer.buffered, ms: this.messageMs });
      conn.socket.destroy();
    }, this.messageMs);
    conn.timer.unref();
  }

  /** Framing is lost on a stream (RFC 4475 ncl.dat, mcl01.dat): the connection must go. */
  private closeBroken(conn: Connection, reason: string): void {
    this.counters.parseErrors++;
    if (this.log.enabled("debug")) this.log.debug("closing tcp connection with broken framing", { conn: conn.id, reason });
    conn.socket.destroy();
  }

  // --- sending -------------------------------------------------------------------------

  /** One handler for every datagram's send error (the error names the address and port). */
  private readonly onSendError = (err: Error | null): void => {
    if (err) this.log.debug("udp send failed", { err });
  };

  isReliable(flow: Flow): boolean {
    return flow.transport === "tcp";
  }

  send(flow: Flow, data: Buffer): boolean {
    if (flow.transport === "udp") {
      const sock = this.udp.get(`${flow.localAddress}|${flow.localPort}`) ?? this.udpFor(flow.remoteAddress);
      if (!sock) return false;
      this.counters.sent++;
      // No callback unless someone reads debug logs: a callback costs a closure and a
      // nextTick per datagram, and a UDP send error is not reported to the sender anyway.
      if (this.log.enabled("debug")) sock.send(data, flow.remotePort, flow.remoteAddress, this.onSendError);
      else sock.send(data, flow.remotePort, flow.remoteAddress);
      return true;
    }
    const conn =
      (flow.connectionId !== undefined ? this.connections.get(flow.connectionId) : undefined) ??
      this.liveConnectionTo(flow.remoteAddress, flow.remotePort);
    if (!conn || conn.socket.destroyed) return false;
    this.counters.sent++;
    conn.socket.write(data);
    return true;
  }

  /**
   * Send toward a target outside an existing flow (a binding's contact, a trunk). UDP goes
   * out of a listening socket of the right family; TCP reuses a live connection to the peer
   * or opens one (RFC 3261 §18.1.1). Returns the flow used, or undefined if impossible.
   */
  sendTo(target: SendTarget, data: Buffer): Flow | undefined {
    if (target.transport === "udp") {
      const sock = this.udpFor(target.address);
      if (!sock) return undefined;
      const a = sock.address();
      const flow: Flow = { transport: "udp", remoteAddress: target.address, remotePort: target.port, localAddress: a.address, localPort: a.port };
      return this.send(flow, data) ? flow : undefined;
    }
    const live = this.liveConnectionTo(target.address, target.port);
    if (live) return this.send(live.flow, data) ? live.flow : undefined;
    if (this.connections.size >= this.maxConnections) return undefined;
    const socket = net.connect({ host: target.address, port: target.port, noDelay: true });
    const flow: Flow = { transport: "tcp", remoteAddress: target.address, remotePort: target.port, localAddress: "", localPort: 0 };
    const conn = this.adopt(socket, flow);
    if (!conn) return undefined;
    socket.once("connect", () => {
      flow.localAddress = socket.localAddress ?? "";
      flow.localPort = socket.localPort ?? 0;
    });
    this.counters.sent++;
    socket.write(data); // queued by net until connected
    return flow;
  }

  private liveConnectionTo(address: string, port: number): Connection | undefined {
    const id = this.connectionByPeer.get(`${address}|${port}`);
    const conn = id === undefined ? undefined : this.connections.get(id);
    return conn && !conn.socket.destroyed ? conn : undefined;
  }

  private udpFor(address: string): dgram.Socket | undefined {
    const v6 = net.isIPv6(address);
    let fallback: dgram.Socket | undefined;
    for (const [key, sock] of this.udp) {
      const local = key.slice(0, key.lastIndexOf("|"));
      if (net.isIPv6(local) !== v6) continue;
      // Prefer a socket bound to loopback for loopback peers and vice versa.
      const localLoop = local.startsWith("127.") || local === "::1";
      const peerLoop = address.startsWith("127.") || address === "::1";
      if (localLoop === peerLoop || local === "0.0.0.0" || local === "::") return sock;
      fallback ??= sock;
    }
    return fallback;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const p of this.probes.values()) p.socket?.close();
    this.probes.clear();
    for (const conn of this.connections.values()) conn.socket.destroy();
    this.connections.clear();
    this.connectionByPeer.clear();
    await Promise.all(this.tcpServers.map((s) => new Promise<void>((r) => s.close(() => r()))));
    this.tcpServers.length = 0;
    await Promise.all([...this.udp.values()].map((s) => new Promise<void>((r) => s.close(() => r()))));
    this.udp.clear();
    this.bound = [];
  }
}
