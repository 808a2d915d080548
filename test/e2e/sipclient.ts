// A small raw SIP client for end-to-end tests: builds REGISTER text by hand, sends it over
// UDP or TCP from a fresh loopback source address (127.0.x.y), and collects every response
// the agent sends back. Deliberately independent of the agent's own parser and builder, so a
// test sees the bytes a phone would see. Digest answers come from agent/sip/digest.ts's
// client side (computeAuthorization), which the unit tests check against RFC 7616 vectors.
import dgram from "node:dgram";
import net from "node:net";
import { randomBytes } from "node:crypto";
import { computeAuthorization } from "../../agent/sip/digest.ts";

export type ClientTransport = "udp" | "tcp";

/** One response as received: the status line, header lines in order, and the raw text. */
export interface SipReply {
  statusLine: string;
  status: number;
  reason: string;
  /** [name as written, value] in wire order. */
  headers: Array<[string, string]>;
  raw: string;
  /** First value of a header, name compared without case (long names only). */
  header(name: string): string | undefined;
  /** Every value of a header, in order. */
  all(name: string): string[];
}

export function parseReply(text: string): SipReply | undefined {
  const end = text.indexOf("\r\n\r\n");
  const head = end >= 0 ? text.slice(0, end) : text;
  const lines = head.split("\r\n");
  const m = /^SIP\/2\.0 (\d{3}) (.*)$/.exec(lines[0] ?? "");
  if (!m) return undefined;
  const headers: Array<[string, string]> = [];
  for (const line of lines.slice(1)) {
    if (/^[ \t]/.test(line) && headers.length > 0) {
      // Folded continuation (RFC 3261 §7.3.1): joins the previous value.
      const last = headers[headers.length - 1]!;
      last[1] += " " + line.trim();
      continue;
    }
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    headers.push([line.slice(0, colon).trim(), line.slice(colon + 1).trim()]);
  }
  const all = (name: string): string[] => headers.filter(([n]) => n.toLowerCase() === name.toLowerCase()).map(([, v]) => v);
  return {
    statusLine: lines[0]!,
    status: Number(m[1]),
    reason: m[2]!,
    headers,
    raw: text,
    header: (name) => all(name)[0],
    all,
  };
}

let sourceCounter = 0;
/**
 * A loopback source address no other client of this process used: 127.0.(20+k).(1..250).
 * Each test file runs in its own process; the range is offset by the pid so that files run
 * side by side against their own agents never share a source either.
 */
export function freshSourceAddress(): string {
  const n = sourceCounter++ + (process.pid % 40) * 250;
  return `127.${20 + Math.floor(n / 62500)}.${Math.floor(n / 250) % 250}.${1 + (n % 250)}`;
}

export function randomBranch(): string {
  return `z9hG4bK-${randomBytes(8).toString("hex")}`;
}

export interface RegisterSpec {
  /** The AOR's user part (To / From); also the default Contact user. */
  user: string;
  /** Request-URI host:port (the agent). */
  agentPort: number;
  transport: ClientTransport;
  /** Our address for Via and the default Contact. */
  localAddress: string;
  localPort: number;
  callId: string;
  cseq: number;
  branch: string;
  fromTag: string;
  /** Raw Contact header values; default one contact at our address. Empty array: no Contact. */
  contacts?: string[];
  /** Expires header value (number or raw text); omitted when undefined. */
  expires?: number | string;
  /** Authorization header value. */
  authorization?: string;
  /** Extra header lines, "Name: value". */
  extra?: string[];
  /** User-Agent value (default "e2e-sipclient"). */
  userAgent?: string;
}

export function registerUri(agentPort: number): string {
  return `sip:127.0.0.1:${agentPort}`;
}

/** REGISTER text per RFC 3261 §10.2, CRLF line ends, Content-Length 0. */
export function buildRegister(s: RegisterSpec): string {
  const contacts = s.contacts ?? [`<sip:${s.user}@${s.localAddress}:${s.localPort};transport=${s.transport}>`];
  const lines = [
    `REGISTER ${registerUri(s.agentPort)} SIP/2.0`,
    `Via: SIP/2.0/${s.transport.toUpperCase()} ${s.localAddress}:${s.localPort};branch=${s.branch};rport`,
    "Max-Forwards: 70",
    `From: <sip:${s.user}@127.0.0.1>;tag=${s.fromTag}`,
    `To: <sip:${s.user}@127.0.0.1>`,
    `Call-ID: ${s.callId}`,
    `CSeq: ${s.cseq} REGISTER`,
    ...contacts.map((c) => `Contact: ${c}`),
    ...(s.expires !== undefined ? [`Expires: ${s.expires}`] : []),
    ...(s.authorization !== undefined ? [`Authorization: ${s.authorization}`] : []),
    ...(s.extra ?? []),
    `User-Agent: ${s.userAgent ?? "e2e-sipclient"}`,
    "Content-Length: 0",
    "",
    "",
  ];
  return lines.join("\r\n");
}

/**
 * One SIP client socket: UDP bound to a fresh loopback address, or a TCP connection from one.
 * Every response that arrives is kept in `replies`, in arrival order.
 */
export class SipClient {
  readonly replies: SipReply[] = [];
  /** Bytes that arrived but did not parse as a response (requests from the agent, e.g. OPTIONS). */
  readonly other: string[] = [];
  private waiters: Array<() => void> = [];
  private tcpBuf = "";

  private constructor(
    readonly transport: ClientTransport,
    readonly agentPort: number,
    readonly localAddress: string,
    readonly localPort: number,
    private readonly udp: dgram.Socket | undefined,
    private readonly tcp: net.Socket | undefined,
  ) {}

  static async open(agentPort: number, transport: ClientTransport = "udp", localAddress = freshSourceAddress()): Promise<SipClient> {
    if (transport === "udp") {
      const sock = dgram.createSocket("udp4");
      await new Promise<void>((resolve, reject) => {
        sock.once("error", reject);
        sock.bind(0, localAddress, () => resolve());
      });
      const c = new SipClient("udp", agentPort, localAddress, sock.address().port, sock, undefined);
      sock.on("message", (m) => c.take(m.toString("utf8")));
      return c;
    }
    const sock = net.connect({ port: agentPort, host: "127.0.0.1", localAddress });
    await new Promise<void>((resolve, reject) => {
      sock.once("error", reject);
      sock.once("connect", () => resolve());
    });
    sock.on("error", () => undefined);
    const c = new SipClient("tcp", agentPort, localAddress, sock.localPort!, undefined, sock);
    sock.setEncoding("utf8");
    sock.on("data", (d: string) => c.takeStream(d));
    return c;
  }

  send(text: string): void {
    if (this.udp) this.udp.send(Buffer.from(text, "utf8"), this.agentPort, "127.0.0.1");
    else this.tcp!.write(text);
  }

  /** Resolves with the first reply (after index `from`) that pred accepts; rejects after timeoutMs. */
  async waitFor(pred: (r: SipReply) => boolean, opts: { from?: number; timeoutMs?: number } = {}): Promise<SipReply> {
    const from = opts.from ?? 0;
    const deadline = Date.now() + (opts.timeoutMs ?? 3000);
    for (;;) {
      const hit = this.replies.slice(from).find(pred);
      if (hit) return hit;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no matching SIP reply within ${opts.timeoutMs ?? 3000} ms; got: ${this.replies.map((r) => r.statusLine).join(" | ") || "nothing"}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(done, left);
        function done(): void {
          clearTimeout(t);
          resolve();
        }
        this.waiters.push(done);
      });
    }
  }

  /** Sends a request and waits for its final response (status >= 200) matching the branch. */
  async request(text: string, timeoutMs = 3000): Promise<SipReply> {
    const from = this.replies.length;
    const branch = /branch=([^;\s\r]+)/.exec(text)?.[1];
    this.send(text);
    return this.waitFor((r) => r.status >= 200 && (branch === undefined || (r.header("Via") ?? "").includes(`branch=${branch}`)), { from, timeoutMs });
  }

  /** Waits ms and returns whatever replies arrived meanwhile (used to assert silence). */
  async collect(ms: number): Promise<SipReply[]> {
    const from = this.replies.length;
    await new Promise((r) => setTimeout(r, ms));
    return this.replies.slice(from);
  }

  close(): void {
    try {
      this.udp?.close();
    } catch {
      // already closed
    }
    this.tcp?.destroy();
  }

  private take(text: string): void {
    const r = parseReply(text);
    if (r) this.replies.push(r);
    else this.other.push(text);
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** TCP framing by Content-Length (RFC 3261 §18.3); CRLF keep-alives are skipped. */
  private takeStream(chunk: string): void {
    this.tcpBuf += chunk;
    for (;;) {
      this.tcpBuf = this.tcpBuf.replace(/^(\r\n)+/, "");
      const end = this.tcpBuf.indexOf("\r\n\r\n");
      if (end < 0) return;
      const head = this.tcpBuf.slice(0, end);
      const len = Number(/^(?:content-length|l)[ \t]*:[ \t]*(\d+)/im.exec(head)?.[1] ?? "0");
      const total = end + 4 + len;
      if (Buffer.byteLength(this.tcpBuf) < total) return;
      this.take(this.tcpBuf.slice(0, total));
      this.tcpBuf = this.tcpBuf.slice(total);
    }
  }
}

export interface RegisterOptions {
  password: string;
  /** Authenticate as this user (default: the AOR's user). */
  authUser?: string;
  contacts?: string[];
  expires?: number | string;
  callId?: string;
  /** CSeq of the first (unauthenticated) REGISTER; the authenticated one uses cseq + 1. */
  cseq?: number;
  extra?: string[];
  userAgent?: string;
  /** Challenge to prefer, by algorithm (default MD5, then the first offered). */
  algorithm?: string;
}

export interface RegisterExchange {
  challenge: SipReply;
  final: SipReply;
  /** The authenticated REGISTER exactly as sent (for retransmission / replay tests). */
  sent: string;
  /** The WWW-Authenticate value that was answered. */
  answered: string;
  callId: string;
  cseq: number;
}

export function pickChallenge(r: SipReply, algorithm = "MD5"): string | undefined {
  const offers = r.all("WWW-Authenticate");
  return offers.find((v) => new RegExp(`algorithm=${algorithm}(\\s*,|\\s*$)`, "i").test(v)) ?? offers[0];
}

/** A REGISTER spec for this client with fresh identifiers. */
export function registerSpec(c: SipClient, user: string, o: Partial<RegisterSpec> = {}): RegisterSpec {
  return {
    user,
    agentPort: c.agentPort,
    transport: c.transport,
    localAddress: c.localAddress,
    localPort: c.localPort,
    callId: `${randomBytes(8).toString("hex")}@e2e`,
    cseq: 1,
    branch: randomBranch(),
    fromTag: randomBytes(4).toString("hex"),
    ...o,
  };
}

/** Answers a challenge for a REGISTER to this agent; throws if the challenge is unusable. */
export function authorize(challenge: string, agentPort: number, username: string, password: string, nc = 1, cnonce?: string): string {
  const a = computeAuthorization(challenge, { method: "REGISTER", uri: registerUri(agentPort), username, password, nc, ...(cnonce !== undefined ? { cnonce } : {}) });
  if (typeof a !== "string") throw new Error(`cannot answer challenge: ${a.error}`);
  return a;
}

/**
 * The whole phone-side exchange of RFC 3261 §22.2: REGISTER, 401 with a challenge, REGISTER
 * with Authorization (same Call-ID, CSeq + 1, new branch), final response.
 */
export async function registerWithAuth(c: SipClient, user: string, o: RegisterOptions): Promise<RegisterExchange> {
  const base = registerSpec(c, user, {
    ...(o.callId !== undefined ? { callId: o.callId } : {}),
    cseq: o.cseq ?? 1,
    ...(o.contacts !== undefined ? { contacts: o.contacts } : {}),
    ...(o.expires !== undefined ? { expires: o.expires } : {}),
    ...(o.extra !== undefined ? { extra: o.extra } : {}),
    ...(o.userAgent !== undefined ? { userAgent: o.userAgent } : {}),
  });
  const challenge = await c.request(buildRegister(base));
  if (challenge.status !== 401) throw new Error(`expected a 401 challenge, got ${challenge.statusLine}`);
  const answered = pickChallenge(challenge, o.algorithm);
  if (!answered) throw new Error("401 without WWW-Authenticate");
  const authorization = authorize(answered, c.agentPort, o.authUser ?? user, o.password);
  const sent = buildRegister({ ...base, cseq: base.cseq + 1, branch: randomBranch(), authorization });
  const final = await c.request(sent);
  return { challenge, final, sent, answered, callId: base.callId, cseq: base.cseq + 1 };
}
