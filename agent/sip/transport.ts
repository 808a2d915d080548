// SIP transport layer, RFC 3261 §18: UDP datagrams and TCP streams on configured
// addresses (IPv4 and IPv6), stream framing by Content-Length in bytes, size and header
// limits, CRLF keep-alives (RFC 5626 §3.5.1), and the received/rport rules (RFC 3261
// §18.2.1, RFC 3581 §4) so that phones behind NAT are answered where they came from.
// Mechanism only: it hands parsed messages up and knows nothing of registrars or groups.
import dgram from "node:dgram";
import dns from "node:dns";
import net from "node:net";
import { DEFAULT_LIMITS, frameStream, parseDatagram, parseStreamMessage, type ParseError, type ParseLimits } from "./message.ts";
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
  /** Close a TCP connection silent for this long (phones send CRLF pings well inside it). */
  tcpIdleTimeoutMs?: number;
  /** Early drop for silently banned sources: return false to ignore every byte from it. */
  acceptSource?: (address: string, flow?: Flow) => boolean;
  log: Logger;
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
}

interface Connection {
  id: number;
  socket: net.Socket;
  flow: Flow;
  buffer: Buffer;
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

/**
 * dgram's lookup for a send: an IP literal (every flow and binding address) is answered at
 * once instead of through dns.lookup's process.nextTick, so a datagram leaves inside send() —
 * the first fork of a call goes out before the others are built. Names still go to dns.lookup.
 */
function literalLookup(hostname: string, options: dns.LookupOneOptions, callback: (err: NodeJS.ErrnoException | null, address: string, family: number) => void): void {
  const family = net.isIP(hostname);
  if (family !== 0) callback(null, hostname, family);
  else dns.lookup(hostname, options, callback);
}

export class SipTransport implements Transport {
  private readonly limits: ParseLimits;
  private readonly maxConnections: number;
  private readonly idleMs: number;
  private readonly log: Logger;
  /** UDP sockets keyed by "localAddress|localPort". */
  private readonly udp = new Map<string, dgram.Socket>();
  private readonly tcpServers: net.Server[] = [];
  /** Open TCP connections keyed by connection id. */
  private readonly connections = new Map<number, Connection>();
  /** The newest connection to a peer, keyed by "address|port", for reuse (RFC 3261 §18.1.1). */
  private readonly connectionByPeer = new Map<string, number>();
  private nextConnectionId = 1;
  private readonly counters: TransportStats = { received: 0, sent: 0, parseErrors: 0, dropped: 0, tcpConnections: 0 };
  private bound: Array<{ transport: "udp" | "tcp"; address: string; port: number; family: 4 | 6 }> = [];

  constructor(private readonly opts: TransportOptions, private readonly handler: InboundHandler) {
    this.limits = opts.limits ?? DEFAULT_LIMITS;
    this.maxConnections = opts.maxConnections ?? 4096;
    this.idleMs = opts.tcpIdleTimeoutMs ?? 15 * 60_000;
    this.log = opts.log;
  }

  async start(): Promise<void> {
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

  stats(): TransportStats {
    return { ...this.counters, tcpConnections: this.connections.size };
  }

  private bindUdp(host: string, port: number, family: 4 | 6): Promise<number> {
    return new Promise((resolve, reject) => {
      const sock = dgram.createSocket({ type: family === 6 ? "udp6" : "udp4", ipv6Only: family === 6, recvBufferSize: 4 << 20, lookup: literalLookup });
      sock.once("error", reject);
      sock.bind(port, host, () => {
        sock.off("error", reject);
        const a = sock.address();
        this.udp.set(`${a.address}|${a.port}`, sock);
        this.bound.push({ transport: "udp", address: a.address, port: a.port, family });
        sock.on("error", (err) => this.log.warn("udp socket error", { local: `${a.address}:${a.port}`, err }));
        sock.on("message", (data, rinfo) => {
          const receivedAt = performance.now();
          const flow: Flow = { transport: "udp", remoteAddress: rinfo.address, remotePort: rinfo.port, localAddress: a.address, localPort: a.port };
          this.onDatagram(data, flow, receivedAt);
        });
        resolve(a.port);
      });
    });
  }

  private listenTcp(host: string, port: number, family: 4 | 6): Promise<number> {
    return new Promise((resolve, reject) => {
      const server = net.createServer({ noDelay: true }, (socket) => this.adopt(socket));
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

  private adopt(socket: net.Socket, knownFlow?: Flow): Connection | undefined {
    if (this.connections.size >= this.maxConnections) {
      this.log.warn("tcp connection limit reached; refusing", { from: socket.remoteAddress });
      socket.destroy();
      return undefined;
    }
    const remoteAddress = socket.remoteAddress ?? "";
    if (this.opts.acceptSource && !this.opts.acceptSource(remoteAddress)) {
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
    const conn: Connection = { id, socket, flow, buffer: Buffer.alloc(0) };
    this.connections.set(id, conn);
    this.connectionByPeer.set(`${flow.remoteAddress}|${flow.remotePort}`, id);
    socket.setNoDelay(true);
    socket.setTimeout(this.idleMs, () => socket.destroy());
    socket.on("data", (chunk: Buffer) => this.onStreamData(conn, chunk));
    socket.on("error", (err) => this.log.debug("tcp connection error", { conn: id, err }));
    socket.on("close", () => {
      this.connections.delete(id);
      const key = `${flow.remoteAddress}|${flow.remotePort}`;
      if (this.connectionByPeer.get(key) === id) this.connectionByPeer.delete(key);
    });
    return conn;
  }

  private onStreamData(conn: Connection, chunk: Buffer): void {
    const receivedAt = performance.now();
    conn.buffer = conn.buffer.length === 0 ? chunk : Buffer.concat([conn.buffer, chunk]);
    while (conn.buffer.length > 0) {
      const frame = frameStream(conn.buffer, this.limits);
      if (frame.kind === "need-more") {
        if (conn.buffer.length > this.limits.maxMessageBytes) return this.closeBroken(conn, "message exceeds size limit");
        return;
      }
      if (frame.kind === "error") return this.closeBroken(conn, frame.reason);
      const bytes = conn.buffer.subarray(0, frame.length);
      conn.buffer = conn.buffer.subarray(frame.length);
      if (frame.kind === "keepalive") {
        // RFC 5626 §4.4.1: a double-CRLF ping is answered with a single CRLF pong.
        if (bytes.length >= 4) this.send(conn.flow, Buffer.from("\r\n"));
        continue;
      }
      this.counters.received++;
      const result = parseStreamMessage(bytes, this.limits);
      if (!result.ok) {
        this.onParseError(result.error, conn.flow, bytes);
        continue;
      }
      result.message.receivedAt = receivedAt;
      this.dispatch(result.message, conn.flow);
    }
  }

  /** Framing is lost on a stream (RFC 4475 ncl.dat, mcl01.dat): the connection must go. */
  private closeBroken(conn: Connection, reason: string): void {
    this.counters.parseErrors++;
    if (this.log.enabled("debug")) this.log.debug("closing tcp connection with broken framing", { conn: conn.id, reason });
    conn.buffer = Buffer.alloc(0);
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
