// Simulated SIP endpoints for the demo: desk phones and soft clients that register with digest
// auth and then ring, answer, reject or never answer, and a trunk that places calls. Plain UDP
// on loopback, raw SIP text, independent of the agent's own parser (a phone sees bytes).
import dgram from "node:dgram";
import { randomBytes } from "node:crypto";
import { computeAuthorization } from "../agent/sip/digest.ts";

/** What a simulated phone does with an incoming call. */
export type Behaviour =
  | { kind: "answer"; afterMs: number }
  | { kind: "reject"; status: 486 | 603; afterMs: number }
  | { kind: "ring" };

export interface Msg {
  first: string;
  status: number | undefined;
  method: string | undefined;
  headers: Array<[string, string]>;
  body: string;
  get(name: string): string | undefined;
  all(name: string): string[];
}

const COMPACT: Record<string, string> = { v: "via", f: "from", t: "to", i: "call-id", m: "contact", l: "content-length", c: "content-type" };

export function parse(text: string): Msg | undefined {
  const end = text.indexOf("\r\n\r\n");
  if (end < 0) return undefined;
  const lines = text.slice(0, end).split("\r\n");
  const first = lines[0] ?? "";
  const headers: Array<[string, string]> = [];
  for (const line of lines.slice(1)) {
    const i = line.indexOf(":");
    if (i <= 0) continue;
    const raw = line.slice(0, i).trim().toLowerCase();
    headers.push([COMPACT[raw] ?? raw, line.slice(i + 1).trim()]);
  }
  const st = /^SIP\/2\.0 (\d{3})/.exec(first);
  const rq = /^([A-Z]+) /.exec(first);
  return {
    first,
    status: st ? Number(st[1]) : undefined,
    method: st ? undefined : rq?.[1],
    headers,
    body: text.slice(end + 4),
    get: (n) => headers.find(([k]) => k === n)?.[1],
    all: (n) => headers.filter(([k]) => k === n).map(([, v]) => v),
  };
}

const token = (): string => randomBytes(6).toString("hex");

/** A UDP endpoint with one socket, like a phone behind its own port. */
class Endpoint {
  readonly sock = dgram.createSocket("udp4");
  port = 0;
  constructor(readonly address: string, protected readonly agent: { host: string; port: number }) {}

  async open(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.sock.once("error", reject);
      this.sock.bind(0, this.address, () => resolve());
    });
    this.port = this.sock.address().port;
    this.sock.on("message", (buf) => {
      const m = parse(buf.toString("utf8"));
      if (m !== undefined) this.onMessage(m);
    });
  }

  protected onMessage(_m: Msg): void {}

  send(text: string, host = this.agent.host, port = this.agent.port): void {
    this.sock.send(Buffer.from(text, "utf8"), port, host);
  }

  /** A response built from a request's headers (RFC 3261 §8.2.6.2). */
  reply(req: Msg, status: number, reason: string, toTag: string | undefined, extra: string[] = [], body = ""): void {
    const to = req.get("to") ?? "";
    const lines = [
      `SIP/2.0 ${status} ${reason}`,
      ...req.all("via").map((v) => `Via: ${v}`),
      `From: ${req.get("from") ?? ""}`,
      `To: ${toTag !== undefined && !/;tag=/.test(to) ? `${to};tag=${toTag}` : to}`,
      `Call-ID: ${req.get("call-id") ?? ""}`,
      `CSeq: ${req.get("cseq") ?? ""}`,
      ...extra,
      `Content-Length: ${Buffer.byteLength(body)}`,
      "",
      body,
    ];
    this.send(lines.join("\r\n"));
  }

  close(): void {
    try {
      this.sock.close();
    } catch {
      // already closed
    }
  }
}

const SDP = (ip: string): string => `v=0\r\no=demo 1 1 IN IP4 ${ip}\r\ns=-\r\nc=IN IP4 ${ip}\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n`;

/** A registered phone (desk phone or soft client) with a fixed way of taking calls. */
export class SimPhone extends Endpoint {
  private readonly calls = new Map<string, { tag: string; timer?: NodeJS.Timeout; done: boolean }>();
  private pendingRegister: ((m: Msg) => void) | undefined;

  constructor(readonly username: string, private readonly password: string, readonly behaviour: Behaviour, agent: { host: string; port: number }) {
    super("127.0.0.1", agent);
  }

  /** REGISTER, answer the 401 with digest credentials, resolve on 200. */
  async register(): Promise<void> {
    const callId = `${token()}@demo`;
    const uri = `sip:${this.agent.host}:${this.agent.port}`;
    const build = (cseq: number, auth?: string): string =>
      [
        `REGISTER ${uri} SIP/2.0`,
        `Via: SIP/2.0/UDP ${this.address}:${this.port};branch=z9hG4bK${token()};rport`,
        `From: <sip:${this.username}@${this.agent.host}>;tag=${token()}`,
        `To: <sip:${this.username}@${this.agent.host}>`,
        `Call-ID: ${callId}`,
        `CSeq: ${cseq} REGISTER`,
        `Contact: <sip:${this.username}@${this.address}:${this.port}>`,
        "Max-Forwards: 70",
        "Expires: 3600",
        ...(auth ? [`Authorization: ${auth}`] : []),
        "Content-Length: 0",
        "",
        "",
      ].join("\r\n");
    const next = (): Promise<Msg> => new Promise((resolve) => (this.pendingRegister = resolve));
    const first = next();
    this.send(build(1));
    const challenge = await first;
    if (challenge.status === 200) return;
    const www = challenge.get("www-authenticate");
    if (challenge.status !== 401 || www === undefined) throw new Error(`${this.username}: REGISTER got ${challenge.first}`);
    const auth = computeAuthorization(www, { method: "REGISTER", uri, username: this.username, password: this.password });
    if (typeof auth !== "string") throw new Error(`${this.username}: ${auth.error}`);
    const second = next();
    this.send(build(2, auth));
    const ok = await second;
    if (ok.status !== 200) throw new Error(`${this.username}: REGISTER with credentials got ${ok.first}`);
  }

  protected override onMessage(m: Msg): void {
    if (m.status !== undefined) {
      if (/REGISTER/.test(m.get("cseq") ?? "")) this.pendingRegister?.(m);
      return;
    }
    const callId = m.get("call-id") ?? "";
    switch (m.method) {
      case "OPTIONS":
        this.reply(m, 200, "OK", token());
        return;
      case "INVITE": {
        if (this.calls.has(callId)) return; // a retransmission: our answers are on their way
        const c: { tag: string; timer?: NodeJS.Timeout; done: boolean } = { tag: token(), done: false };
        this.calls.set(callId, c);
        const rr = m.all("record-route").map((v) => `Record-Route: ${v}`);
        this.reply(m, 180, "Ringing", c.tag, rr);
        const b = this.behaviour;
        if (b.kind === "answer") {
          c.timer = setTimeout(() => {
            c.done = true;
            this.reply(m, 200, "OK", c.tag, [...rr, `Contact: <sip:${this.username}@${this.address}:${this.port}>`, "Content-Type: application/sdp"], SDP(this.address));
          }, b.afterMs);
        } else if (b.kind === "reject") {
          c.timer = setTimeout(() => {
            c.done = true;
            this.reply(m, b.status, b.status === 486 ? "Busy Here" : "Decline", c.tag);
          }, b.afterMs);
        }
        this.pendingInvites.set(callId, m);
        return;
      }
      case "CANCEL": {
        const c = this.calls.get(callId);
        this.reply(m, 200, "OK", c?.tag);
        const inv = this.pendingInvites.get(callId);
        if (c !== undefined && !c.done && inv !== undefined) {
          clearTimeout(c.timer);
          c.done = true;
          this.reply(inv, 487, "Request Terminated", c.tag);
        }
        return;
      }
      case "BYE":
        this.reply(m, 200, "OK", undefined);
        this.calls.delete(callId);
        this.pendingInvites.delete(callId);
        return;
      case "ACK":
        return;
      default:
        this.reply(m, 405, "Method Not Allowed", token());
    }
  }

  private readonly pendingInvites = new Map<string, Msg>();
}

export interface CallResult {
  final: number;
  reason: string;
}

/** The trunk: places a call to a number, ACKs, holds answered calls for holdMs, then BYE. */
export class SimTrunk extends Endpoint {
  private readonly waiting = new Map<string, { onResponse: (m: Msg) => void }>();

  constructor(address: string, agent: { host: string; port: number }) {
    super(address, agent);
  }

  protected override onMessage(m: Msg): void {
    if (m.status === undefined) {
      // Requests toward the trunk (a forward, a BYE from a phone): accept politely.
      if (m.method === "BYE" || m.method === "OPTIONS") this.reply(m, 200, "OK", token());
      else if (m.method === "INVITE") this.reply(m, 480, "Temporarily Unavailable", token());
      return;
    }
    this.waiting.get(m.get("call-id") ?? "")?.onResponse(m);
  }

  /** Resolves with the final status; `onProvisional` sees 1xx (180, 182) as they come. */
  call(number: string, from: string, holdMs: number, onProvisional: (status: number, reason: string) => void): { callId: string; done: Promise<CallResult> } {
    const callId = `${token()}@trunk`;
    const fromTag = token();
    const branch = `z9hG4bK${token()}`;
    const ruri = `sip:${number}@${this.agent.host}:${this.agent.port}`;
    const via = `SIP/2.0/UDP ${this.address}:${this.port};branch=${branch}`;
    const fromHdr = `<sip:${from}@${this.address}>;tag=${fromTag}`;
    const toHdr = `<sip:${number}@${this.agent.host}>`;
    const sdp = SDP(this.address);
    this.send([`INVITE ${ruri} SIP/2.0`, `Via: ${via}`, `From: ${fromHdr}`, `To: ${toHdr}`, `Call-ID: ${callId}`, "CSeq: 1 INVITE", `Contact: <sip:trunk@${this.address}:${this.port}>`, "Max-Forwards: 70", "Content-Type: application/sdp", `Content-Length: ${Buffer.byteLength(sdp)}`, "", sdp].join("\r\n"));
    const done = new Promise<CallResult>((resolve) => {
      let finished = false;
      this.waiting.set(callId, {
        onResponse: (m) => {
          const st = m.status ?? 0;
          const cseq = m.get("cseq") ?? "";
          if (/BYE/.test(cseq)) {
            this.waiting.delete(callId);
            return;
          }
          if (st < 200) {
            if (!finished) onProvisional(st, m.first.replace(/^SIP\/2\.0 \d{3} /, ""));
            return;
          }
          const to = m.get("to") ?? toHdr;
          if (st >= 300) {
            // RFC 3261 §17.1.1.3: the ACK for a failure is hop-by-hop, same branch.
            this.send([`ACK ${ruri} SIP/2.0`, `Via: ${via}`, `From: ${fromHdr}`, `To: ${to}`, `Call-ID: ${callId}`, "CSeq: 1 ACK", "Max-Forwards: 70", "Content-Length: 0", "", ""].join("\r\n"));
            if (!finished) resolve({ final: st, reason: m.first.replace(/^SIP\/2\.0 \d{3} /, "") });
            finished = true;
            this.waiting.delete(callId);
            return;
          }
          if (finished) return; // a retransmitted 200
          finished = true;
          // RFC 3261 §12.1.2: route set = Record-Route reversed; remote target = Contact.
          const routes = m.all("record-route").flatMap((v) => v.split(/,(?=\s*<)/)).map((s) => s.trim()).reverse();
          const target = /<([^>]+)>/.exec(m.get("contact") ?? "")?.[1] ?? ruri;
          const inDialog = (method: string, cseq: number): string =>
            [`${method} ${target} SIP/2.0`, `Via: SIP/2.0/UDP ${this.address}:${this.port};branch=z9hG4bK${token()}`, ...routes.map((r) => `Route: ${r}`), `From: ${fromHdr}`, `To: ${to}`, `Call-ID: ${callId}`, `CSeq: ${cseq} ${method}`, "Max-Forwards: 70", "Content-Length: 0", "", ""].join("\r\n");
          this.send(inDialog("ACK", 1));
          resolve({ final: st, reason: "OK" });
          setTimeout(() => this.send(inDialog("BYE", 2)), holdMs);
        },
      });
    });
    return { callId, done };
  }
}
