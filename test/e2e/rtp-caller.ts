// Test helpers for the media plane end to end (test/e2e/ivr.test.ts, moh.test.ts,
// queue-media.test.ts): a trunk caller written over raw UDP whose INVITE offers G.711 and
// telephone-events at its own RTP socket; it records every response, every request and every
// RTP packet it receives, and it can send keys as RFC 4733 telephone-events (to the address of
// the appliance's 183 SDP) and as SIP INFO inside the 183's early dialog (RFC 6086). Also:
// decoding of what it received (agent/media/g711.ts), correlation against a reference sound,
// the sounds a stream played in order, test prompts, and making an operator busy (another phone
// calls them and they answer).
import assert from "node:assert/strict";
import dgram from "node:dgram";
import fs from "node:fs";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { decodeG711, type G711Law } from "../../agent/media/g711.ts";
import { parseRtp, type RtpPacket } from "../../agent/media/rtp.ts";
import { decodeWav, encodeWav } from "../../agent/media/wav.ts";
import { TRUNK_CALLER_IP, answerAfter, RING, parseSimMessage, type Phone, type SimMessage } from "./callsim.ts";
import { ROOT, until } from "./harness.ts";

export interface Got {
  at: number;
  msg: SimMessage;
}

export class Caller {
  readonly responses: Got[] = [];
  /** Requests the agent sent us (BYE, …). */
  readonly requests: Got[] = [];
  readonly rtp: Array<{ at: number; pkt: RtpPacket; from: string }> = [];
  readonly callId = `trunk-${randomBytes(6).toString("hex")}@trunk`;
  private readonly fromTag = randomBytes(4).toString("hex");
  private readonly branch = `z9hG4bK${randomBytes(6).toString("hex")}`;
  private readonly ssrc = randomBytes(4).readUInt32BE(0);
  private seq = randomBytes(2).readUInt16BE(0);
  private ts = randomBytes(4).readUInt32BE(0);
  private cseq = 1;
  private number = "";
  sentAt = 0;

  private constructor(
    private readonly sip: dgram.Socket,
    private readonly media: dgram.Socket,
    private readonly agentPort: number,
  ) {
    sip.on("message", (b) => {
      const m = parseSimMessage(b.toString("latin1"));
      if (m?.status !== undefined) this.responses.push({ at: performance.now(), msg: m });
      else if (m !== undefined) this.requests.push({ at: performance.now(), msg: m });
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

  send(lines: string[]): void {
    this.sip.send(Buffer.from(lines.join("\r\n"), "latin1"), this.agentPort, "127.0.0.1");
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

  /** INVITE offering PCMA, then PCMU, and telephone-event 101, at this caller's RTP socket (or `body` as the offer). */
  invite(number: string, body?: string): void {
    const sdp = body ?? ["v=0", `o=- 7 7 IN IP4 ${TRUNK_CALLER_IP}`, "s=-", `c=IN IP4 ${TRUNK_CALLER_IP}`, "t=0 0", `m=audio ${this.rtpPort} RTP/AVP 8 0 101`, "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-15", "a=sendrecv", ""].join("\r\n");
    this.number = number;
    this.sentAt = performance.now();
    this.send([...this.head("INVITE", "1 INVITE", `<${this.ruri(number)}>`, this.ruri(number)), `Contact: <sip:trunk@${TRUNK_CALLER_IP}:${this.sipPort}>`, "Content-Type: application/sdp", `Content-Length: ${Buffer.byteLength(sdp)}`, "", sdp]);
  }

  first(status: number): Got | undefined {
    return this.responses.find((r) => r.msg.status === status && /INVITE/.test(r.msg.header("cseq") ?? ""));
  }

  statuses(): number[] {
    return this.responses.map((r) => r.msg.status!);
  }

  /** The 183 with the appliance's SDP, waited for; its media address (`source`: address:port) and payload type. */
  async progress(timeoutMs = 10_000): Promise<{ got: Got; source: string; address: string; port: number; codec: string }> {
    const got = await until(() => this.first(183), timeoutMs, 2);
    const m = mediaOf(got.msg);
    return { got, source: `${m.address}:${m.port}`, ...m };
  }

  /** RTP packets from one source (the appliance's prompts or music, or the operator), in arrival order. */
  from(source: string): RtpPacket[] {
    return this.rtp.filter((r) => r.from === source).map((r) => r.pkt);
  }

  /**
   * A key as an RFC 4733 telephone-event (§2.3, §2.5.1): three packets of one event with one
   * timestamp and growing duration, the last three with the E bit (end retransmitted).
   */
  sendRfc4733(event: number, to: { address: string; port: number }): void {
    this.ts = (this.ts + 1600) >>> 0;
    for (let i = 0; i < 6; i++) {
      const end = i >= 3;
      const duration = Math.min(i + 1, 4) * 160;
      const b = Buffer.alloc(16);
      b[0] = 0x80;
      b[1] = (i === 0 ? 0x80 : 0) | 101;
      b.writeUInt16BE(this.seq, 2);
      this.seq = (this.seq + 1) & 0xffff;
      b.writeUInt32BE(this.ts, 4);
      b.writeUInt32BE(this.ssrc, 8);
      b[12] = event & 0xff;
      b[13] = (end ? 0x80 : 0) | 10;
      b.writeUInt16BE(duration, 14);
      this.media.send(b, to.port, to.address);
    }
  }

  /** A raw datagram to the appliance's media port (hostile RTP). */
  sendRaw(b: Buffer, to: { address: string; port: number }): void {
    this.media.send(b, to.port, to.address);
  }

  /**
   * INFO inside the early dialog of a 183 (RFC 6086, legacy INFO usage): its To (with the appliance's tag),
   * sent to its Contact; returns a promise of the INFO's final status.
   */
  async sendInfo(early: SimMessage, contentType: string | undefined, body: string, to = early.header("to") ?? ""): Promise<number> {
    const cseq = ++this.cseq;
    const target = /<([^>]+)>/.exec(early.header("contact") ?? "")?.[1] ?? this.ruri(this.number);
    const branch = `z9hG4bK${randomBytes(6).toString("hex")}`;
    this.send([...this.head("INFO", `${cseq} INFO`, to, target, branch), ...(contentType !== undefined ? [`Content-Type: ${contentType}`] : []), `Content-Length: ${Buffer.byteLength(body, "latin1")}`, "", body]);
    const r = await until(() => this.responses.find((x) => x.msg.header("cseq") === `${cseq} INFO` && x.msg.status! >= 200), 5000, 5);
    return r.msg.status!;
  }

  /**
   * CANCEL (RFC 3261 §9.1: same branch, CSeq number and To as the INVITE; not sent once a final
   * response came) and the ACK of the final response (the 487).
   */
  async cancel(): Promise<void> {
    if (!this.responses.some((r) => r.msg.status! >= 300 && /INVITE/.test(r.msg.header("cseq") ?? ""))) {
      this.send([...this.head("CANCEL", "1 CANCEL", `<${this.ruri(this.number)}>`, this.ruri(this.number)), "Content-Length: 0", "", ""]);
    }
    await this.ackFinal();
  }

  /** ACK of the INVITE's non-2xx final response (§17.1.1.3). */
  async ackFinal(): Promise<Got> {
    const final = await until(() => this.responses.find((r) => r.msg.status! >= 300 && /INVITE/.test(r.msg.header("cseq") ?? "")), 5000, 5);
    this.send([...this.head("ACK", "1 ACK", final.msg.header("to") ?? "", this.ruri(this.number)), "Content-Length: 0", "", ""]);
    return final;
  }

  private routeSet: string[] = [];
  private target = "";
  private to = "";

  /** ACK of a 2xx along its route set (§13.2.2.4); bye() then ends that dialog. */
  ack(ok: SimMessage): void {
    this.routeSet = ok.all("record-route").flatMap((v) => v.split(/,(?=\s*<)/).map((r) => r.trim())).reverse();
    this.target = /<([^>]+)>/.exec(ok.header("contact") ?? "")?.[1] ?? this.ruri(this.number);
    this.to = ok.header("to") ?? "";
    this.send([...this.head("ACK", "1 ACK", this.to, this.target, `z9hG4bK${randomBytes(6).toString("hex")}`), ...(this.routeSet.length > 0 ? [`Route: ${this.routeSet.join(", ")}`] : []), "Content-Length: 0", "", ""]);
  }

  bye(): void {
    this.send([...this.head("BYE", `${++this.cseq} BYE`, this.to, this.target, `z9hG4bK${randomBytes(6).toString("hex")}`), ...(this.routeSet.length > 0 ? [`Route: ${this.routeSet.join(", ")}`] : []), "Content-Length: 0", "", ""]);
  }

  close(): void {
    this.sip.close();
    this.media.close();
  }
}

/** The appliance's media address in a 183's SDP. */
export function mediaOf(msg: SimMessage): { address: string; port: number; codec: string } {
  const c = /^c=IN IP4 (\S+)/m.exec(msg.body);
  const m = /^m=audio (\d+) RTP\/AVP (\d+)/m.exec(msg.body);
  assert.ok(c && m, `SDP in the 183: ${msg.body}`);
  return { address: c[1]!, port: Number(m[1]), codec: m[2]! };
}

/** A shipped sound's samples (audio/). */
export function shippedSound(file: string): Int16Array {
  const r = decodeWav(fs.readFileSync(path.join(ROOT, "audio", file)));
  if (!r.ok) throw new Error(r.reason);
  return r.samples;
}

/**
 * A 16-bit mono 8 kHz WAV file of a linear sweep from f0 to f1 Hz (a short site prompt for a
 * test). A sweep, not a steady tone: a tone is periodic, so its continuation after a stall
 * would correlate with its own start.
 */
export function writeSweepWav(file: string, f0: number, f1: number, seconds: number): Int16Array {
  const n = Math.round(8000 * seconds);
  const samples = new Int16Array(n);
  const k = (f1 - f0) / seconds;
  for (let i = 0; i < n; i++) {
    const t = i / 8000;
    samples[i] = Math.round(8000 * Math.sin(2 * Math.PI * (f0 * t + (k * t * t) / 2)));
  }
  fs.writeFileSync(file, encodeWav(samples));
  return samples;
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
 * The received packets laid out by timestamp from the first one (`start`): decoded samples, and
 * which samples arrived (frames skipped on a stall stay unset).
 */
export function decodeStream(pk: readonly RtpPacket[], law: G711Law): { start: number; samples: Int16Array; got: Uint8Array } {
  const start = pk[0]!.timestamp;
  const span = ((pk.at(-1)!.timestamp - start) >>> 0) + 160;
  const samples = new Int16Array(span);
  const got = new Uint8Array(span);
  for (const p of pk) {
    const at = (p.timestamp - start) >>> 0;
    samples.set(decodeG711(law, p.payload), at);
    got.fill(1, at, at + 160);
  }
  return { start, samples, got };
}

/**
 * The sounds a PCMA stream played, in order: each talkspurt (marker bit) that starts like one of
 * the references (correlation over its first 0.2 s, or what there is of it, > 0.95) starts a
 * sound; a talkspurt that does not is the same sound going on after frames the sender skipped on
 * a stall (RFC 3550: the marker is set after a gap). `samples`: how many of its samples arrived.
 */
export function talkspurts(pk: readonly RtpPacket[], refs: Record<string, Int16Array>): Array<{ at: number; sound: string | undefined; samples: number }> {
  if (pk.length === 0) return [];
  const { start, samples: decoded, got } = decodeStream(pk, "PCMA");
  const marks = pk.filter((p) => p.marker).map((p) => (p.timestamp - start) >>> 0);
  const out: Array<{ at: number; sound: string | undefined; samples: number }> = [];
  marks.forEach((at, i) => {
    const end = i + 1 < marks.length ? marks[i + 1]! : decoded.length;
    let sound: string | undefined;
    for (const [name, ref] of Object.entries(refs)) {
      const n = Math.min(1600, ref.length, end - at);
      if (n < 160) continue;
      if (correlationAtStart(decoded.subarray(at, at + n), got.subarray(at, at + n), ref) > 0.95) sound = name;
    }
    let samples = 0;
    for (let k = at; k < end; k++) if (got[k]) samples++;
    const prev = out.at(-1);
    if (sound === undefined && prev !== undefined) prev.samples += samples;
    else out.push({ at, sound, samples });
  });
  return out;
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
