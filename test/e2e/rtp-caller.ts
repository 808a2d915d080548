// Test helpers for the media plane end to end (test/e2e/moh.test.ts, queue-media.test.ts): a
// trunk caller written over raw UDP with its own RTP receiver bound to the address its SDP
// offers, decoding of what it received, correlation against a source WAV, and making an
// operator busy (another phone calls them and they answer).
import assert from "node:assert/strict";
import dgram from "node:dgram";
import { randomBytes } from "node:crypto";
import { decodeG711, type G711Law } from "../../agent/media/g711.ts";
import { parseRtp, type RtpPacket } from "../../agent/media/rtp.ts";
import { TRUNK_CALLER_IP, answerAfter, RING, parseSimMessage, type Phone, type SimMessage } from "./callsim.ts";
import { until } from "./harness.ts";

export interface Got {
  at: number;
  msg: SimMessage;
}

export class Caller {
  readonly responses: Got[] = [];
  readonly rtp: Array<{ at: number; pkt: RtpPacket; from: string }> = [];
  readonly callId = `moh-${randomBytes(6).toString("hex")}@trunk`;
  private readonly fromTag = randomBytes(4).toString("hex");
  private readonly branch = `z9hG4bK${randomBytes(6).toString("hex")}`;
  sentAt = 0;
  private constructor(
    private readonly sip: dgram.Socket,
    private readonly media: dgram.Socket,
    private readonly agentPort: number,
  ) {
    sip.on("message", (b) => {
      const m = parseSimMessage(b.toString("utf8"));
      if (m?.status !== undefined) this.responses.push({ at: performance.now(), msg: m });
    });
    media.on("message", (b, r) => {
      const p = parseRtp(b);
      if (p.ok) this.rtp.push({ at: performance.now(), pkt: { ...p.value, payload: Uint8Array.from(p.value.payload) }, from: `${r.address}:${r.port}` });
    });
  }

  static async open(agentPort: number): Promise<Caller> {
    const bind = async (): Promise<dgram.Socket> => {
      const s = dgram.createSocket("udp4");
      await new Promise<void>((r) => s.bind(0, TRUNK_CALLER_IP, () => r()));
      return s;
    };
    return new Caller(await bind(), await bind(), agentPort);
  }

  get sipPort(): number {
    return this.sip.address().port;
  }

  get rtpPort(): number {
    return this.media.address().port;
  }

  private send(lines: string[]): void {
    this.sip.send(Buffer.from(lines.join("\r\n")), this.agentPort, "127.0.0.1");
  }

  private head(method: string, cseq: string, to: string, uri: string, branch = this.branch): string[] {
    return [
      `${method} ${uri} SIP/2.0`,
      `Via: SIP/2.0/UDP ${TRUNK_CALLER_IP}:${this.sipPort};branch=${branch};rport`,
      "Max-Forwards: 70",
      `From: <sip:+4930555000@${TRUNK_CALLER_IP}>;tag=${this.fromTag}`,
      `To: ${to}`,
      `Call-ID: ${this.callId}`,
      `CSeq: ${cseq}`,
    ];
  }

  private ruri(number: string): string {
    return `sip:${number}@127.0.0.1:${this.agentPort}`;
  }

  /** INVITE offering PCMA, then PCMU, and telephone-event, at this caller's RTP socket. */
  invite(number: string, body?: string): void {
    const sdp = body ?? ["v=0", `o=- 7 7 IN IP4 ${TRUNK_CALLER_IP}`, "s=-", `c=IN IP4 ${TRUNK_CALLER_IP}`, "t=0 0", `m=audio ${this.rtpPort} RTP/AVP 8 0 101`, "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-15", "a=sendrecv", ""].join("\r\n");
    this.number = number;
    this.sentAt = performance.now();
    this.send([...this.head("INVITE", "1 INVITE", `<${this.ruri(number)}>`, this.ruri(number)), `Contact: <sip:trunk@${TRUNK_CALLER_IP}:${this.sipPort}>`, "Content-Type: application/sdp", `Content-Length: ${Buffer.byteLength(sdp)}`, "", sdp]);
  }

  private number = "";

  statuses(): number[] {
    return this.responses.map((r) => r.msg.status!);
  }

  first(status: number): Got | undefined {
    return this.responses.find((r) => r.msg.status === status && /INVITE/.test(r.msg.header("cseq") ?? ""));
  }

  /** CANCEL (RFC 3261 §9.1: same branch, CSeq number and To as the INVITE) and the ACK of the 487. */
  async cancel(): Promise<void> {
    this.send([...this.head("CANCEL", "1 CANCEL", `<${this.ruri(this.number)}>`, this.ruri(this.number)), "Content-Length: 0", "", ""]);
    const final = await until(() => this.responses.find((r) => r.msg.status! >= 300 && /INVITE/.test(r.msg.header("cseq") ?? "")), 5000, 5);
    this.send([...this.head("ACK", "1 ACK", final.msg.header("to") ?? "", this.ruri(this.number)), "Content-Length: 0", "", ""]);
  }

  /** ACK of a 2xx along its route set (§13.2.2.4), then later BYE. */
  ack(ok: SimMessage): void {
    this.routeSet = ok.all("record-route").flatMap((v) => v.split(/,(?=\s*<)/).map((r) => r.trim())).reverse();
    this.target = /<([^>]+)>/.exec(ok.header("contact") ?? "")?.[1] ?? this.ruri(this.number);
    this.to = ok.header("to") ?? "";
    this.send([...this.head("ACK", "1 ACK", this.to, this.target, `z9hG4bK${randomBytes(6).toString("hex")}`), ...(this.routeSet.length > 0 ? [`Route: ${this.routeSet.join(", ")}`] : []), "Content-Length: 0", "", ""]);
  }

  private routeSet: string[] = [];
  private target = "";
  private to = "";

  bye(): void {
    this.send([...this.head("BYE", "2 BYE", this.to, this.target, `z9hG4bK${randomBytes(6).toString("hex")}`), ...(this.routeSet.length > 0 ? [`Route: ${this.routeSet.join(", ")}`] : []), "Content-Length: 0", "", ""]);
  }

  /** RTP packets from one source (the appliance's music or the operator), in arrival order. */
  from(source: string): RtpPacket[] {
    return this.rtp.filter((r) => r.from === source).map((r) => r.pkt);
  }

  close(): void {
    this.sip.close();
    this.media.close();
  }
}

/** The appliance's media address in the 183's SDP. */
export function mediaOf(msg: SimMessage): { address: string; port: number; codec: string } {
  const c = /^c=IN IP4 (\S+)/m.exec(msg.body);
  const m = /^m=audio (\d+) RTP\/AVP (\d+)/m.exec(msg.body);
  assert.ok(c && m, `SDP in the 183: ${msg.body}`);
  return { address: c[1]!, port: Number(m[1]), codec: m[2]! };
}

/**
 * Normalised cross-correlation of the received samples of x (where `got` is set: frames the
 * appliance skipped on a stall are left out) against the looped reference at every lag; the
 * best lag and its coefficient.
 */
export function bestCorrelation(x: Int16Array, got: Uint8Array, ref: Int16Array): { lag: number; r: number } {
  let best = { lag: -1, r: -1 };
  let xx = 0;
  for (let i = 0; i < x.length; i++) if (got[i]) xx += x[i]! * x[i]!;
  for (let lag = 0; lag < ref.length; lag += 1) {
    let xy = 0;
    let yy = 0;
    for (let i = 0; i < x.length; i++) {
      if (!got[i]) continue;
      const y = ref[(lag + i) % ref.length]!;
      xy += x[i]! * y;
      yy += y * y;
    }
    const r = xy / Math.sqrt(xx * yy || 1);
    if (r > best.r) best = { lag, r };
  }
  return best;
}

/** Normalised correlation of the received samples of x with the start of ref (lag 0). */
export function correlationAtStart(x: Int16Array, got: Uint8Array, ref: Int16Array): number {
  let xy = 0;
  let xx = 0;
  let yy = 0;
  for (let i = 0; i < x.length && i < ref.length; i++) {
    if (!got[i]) continue;
    xy += x[i]! * ref[i]!;
    xx += x[i]! * x[i]!;
    yy += ref[i]! * ref[i]!;
  }
  return xy / Math.sqrt(xx * yy || 1);
}

/**
 * Makes an operator busy: another phone calls them and they answer (callLimit 1). free() hangs
 * the operator up (once; the BYE's status); afterEach frees whatever a test left up.
 */
export async function makeBusy(opPhone: Phone, caller: Phone, ext: string, held: Array<() => Promise<void>>): Promise<{ free(): Promise<number> }> {
  opPhone.answering = answerAfter(0);
  assert.equal(await caller.dial(ext), 200);
  opPhone.answering = RING;
  const id = caller.dialled.at(-1)!;
  await until(() => opPhone.acks.some((a) => a.callId === id) || undefined, 5000, 5);
  let freed = false;
  const free = async (): Promise<number> => {
    if (freed) return 0;
    freed = true;
    return opPhone.hangup(id);
  };
  held.push(async () => void (await free().catch(() => 0)));
  return { free };
}

/**
 * The received packets laid out by timestamp from the first one: decoded samples, and which
 * samples arrived (frames skipped on a stall stay unset).
 */
export function decodeStream(pk: readonly RtpPacket[], law: G711Law): { samples: Int16Array; got: Uint8Array } {
  const start = pk[0]!.timestamp;
  const span = ((pk.at(-1)!.timestamp - start) >>> 0) + 160;
  const samples = new Int16Array(span);
  const got = new Uint8Array(span);
  for (const p of pk) {
    const at = (p.timestamp - start) >>> 0;
    samples.set(decodeG711(law, p.payload), at);
    got.fill(1, at, at + 160);
  }
  return { samples, got };
}
