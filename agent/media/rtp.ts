// RTP and RTCP packets (RFC 3550) and RFC 4733 telephone-events: parsing that never throws on
// hostile bytes (a packet either parses completely or is refused with a reason), and a
// packetiser that owns one stream's sequence number, timestamp, SSRC and marker bit.
import { randomBytes } from "node:crypto";

export const RTP_VERSION = 2;
/** RFC 3550 §5.1: fixed header. */
export const RTP_HEADER_BYTES = 12;

export interface RtpPacket {
  marker: boolean;
  payloadType: number;
  sequence: number;
  timestamp: number;
  ssrc: number;
  /** The payload without padding, CSRCs or header extension (a view into the datagram). */
  payload: Uint8Array;
}

export type Parsed<T> = { ok: true; value: T } | { ok: false; reason: string };

/**
 * RFC 3550 §5.1 header, with the checks of its appendix A.1 that need no state: version 2,
 * CSRC list, extension (§5.3.1) and padding (the last octet counts the padding, and it must
 * fit) inside the datagram. RTCP packet types 200-204 are refused (§A.1; RFC 5761 §4).
 */
export function parseRtp(buf: Uint8Array): Parsed<RtpPacket> {
  if (buf.length < RTP_HEADER_BYTES) return { ok: false, reason: "shorter than an RTP header" };
  const b0 = buf[0]!;
  const b1 = buf[1]!;
  if (b0 >> 6 !== RTP_VERSION) return { ok: false, reason: "not RTP version 2" };
  const pt = b1 & 0x7f;
  if (pt >= 72 && pt <= 76) return { ok: false, reason: "an RTCP packet type" };
  const cc = b0 & 0x0f;
  let offset = RTP_HEADER_BYTES + cc * 4;
  if (offset > buf.length) return { ok: false, reason: "CSRC list beyond the packet" };
  if (b0 & 0x10) {
    if (offset + 4 > buf.length) return { ok: false, reason: "header extension beyond the packet" };
    const words = (buf[offset + 2]! << 8) | buf[offset + 3]!;
    offset += 4 + words * 4;
    if (offset > buf.length) return { ok: false, reason: "header extension beyond the packet" };
  }
  let end = buf.length;
  if (b0 & 0x20) {
    const pad = buf[buf.length - 1]!;
    if (pad === 0 || offset + pad > buf.length) return { ok: false, reason: "bad padding length" };
    end -= pad;
  }
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  return {
    ok: true,
    value: {
      marker: (b1 & 0x80) !== 0,
      payloadType: pt,
      sequence: dv.getUint16(2),
      timestamp: dv.getUint32(4),
      ssrc: dv.getUint32(8),
      payload: buf.subarray(offset, end),
    },
  };
}

/** Writes a 12-byte RTP header (no CSRC, no extension, no padding) and the payload into one buffer. */
export function buildRtp(p: { marker: boolean; payloadType: number; sequence: number; timestamp: number; ssrc: number }, payload: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(RTP_HEADER_BYTES + payload.length);
  out[0] = RTP_VERSION << 6;
  out[1] = (p.marker ? 0x80 : 0) | (p.payloadType & 0x7f);
  out.writeUInt16BE(p.sequence & 0xffff, 2);
  out.writeUInt32BE(p.timestamp >>> 0, 4);
  out.writeUInt32BE(p.ssrc >>> 0, 8);
  out.set(payload, RTP_HEADER_BYTES);
  return out;
}

/** A random 32-bit value (RFC 3550 §5.1: SSRC, initial sequence number and timestamp are random). */
export function random32(): number {
  return randomBytes(4).readUInt32BE(0);
}

/**
 * One outgoing stream (RFC 3550 §5.1): random SSRC, initial sequence number and timestamp;
 * the sequence number goes up by one per packet sent, the timestamp by the samples each
 * packet covers, also over frames skipped (it measures sampling time, not packets). The
 * marker bit is set on the first packet of a talkspurt (RFC 3551 §4.1): the first packet of
 * the stream and the first after skipped frames or a new file.
 */
export class RtpPacketiser {
  readonly ssrc: number;
  private seq: number;
  private ts: number;
  private talkspurtStart = true;
  /** RTCP sender report counters (RFC 3550 §6.4.1). */
  packets = 0;
  octets = 0;
  /** RTP timestamp of the last packet sent (for the sender report). */
  lastTimestamp: number;

  constructor(
    readonly payloadType: number,
    readonly samplesPerFrame: number,
    init: { ssrc?: number; sequence?: number; timestamp?: number } = {},
  ) {
    this.ssrc = (init.ssrc ?? random32()) >>> 0;
    this.seq = (init.sequence ?? random32()) & 0xffff;
    this.ts = (init.timestamp ?? random32()) >>> 0;
    this.lastTimestamp = this.ts;
  }

  /** The next packet for this payload; advances sequence number and timestamp. */
  next(payload: Uint8Array): Buffer {
    const pkt = buildRtp({ marker: this.talkspurtStart, payloadType: this.payloadType, sequence: this.seq, timestamp: this.ts, ssrc: this.ssrc }, payload);
    this.talkspurtStart = false;
    this.lastTimestamp = this.ts;
    this.seq = (this.seq + 1) & 0xffff;
    this.ts = (this.ts + this.samplesPerFrame) >>> 0;
    this.packets++;
    this.octets += payload.length;
    return pkt;
  }

  /** The timestamp the next audio packet will carry. */
  get nextTimestamp(): number {
    return this.ts;
  }

  /**
   * A packet of another payload type on this stream with its own timestamp (RFC 4733 events
   * carry their start time): takes the next sequence number, leaves the audio timestamp alone.
   */
  other(payloadType: number, timestamp: number, marker: boolean, payload: Uint8Array): Buffer {
    const pkt = buildRtp({ marker, payloadType, sequence: this.seq, timestamp: timestamp >>> 0, ssrc: this.ssrc }, payload);
    this.seq = (this.seq + 1) & 0xffff;
    this.lastTimestamp = timestamp >>> 0;
    this.packets++;
    this.octets += payload.length;
    return pkt;
  }

  /** Frames not sent (a stall, silence suppressed): the timestamp moves on, a new talkspurt starts. */
  skip(frames: number): void {
    if (frames <= 0) return;
    this.ts = (this.ts + frames * this.samplesPerFrame) >>> 0;
    this.talkspurtStart = true;
  }

  /** The next packet starts a talkspurt (new audio after silence or another file). */
  markTalkspurt(): void {
    this.talkspurtStart = true;
  }
}

// --- RFC 4733 telephone-events ------------------------------------------------------------------

export interface TelephoneEvent {
  /** 0-9, *, #, A-D for events 0-15 (RFC 4733 §3.2). */
  event: number;
  end: boolean;
  volume: number;
  duration: number;
}

/** RFC 4733 §2.3: event (8), E, R, volume (6), duration (16); 4 octets per event block. */
export function parseTelephoneEvent(payload: Uint8Array): Parsed<TelephoneEvent> {
  if (payload.length < 4) return { ok: false, reason: "telephone-event payload shorter than 4 octets" };
  if (payload.length % 4 !== 0) return { ok: false, reason: "telephone-event payload not a multiple of 4 octets" };
  return {
    ok: true,
    value: { event: payload[0]!, end: (payload[1]! & 0x80) !== 0, volume: payload[1]! & 0x3f, duration: (payload[2]! << 8) | payload[3]! },
  };
}

const DTMF_DIGITS = "0123456789*#ABCD";

/** RFC 4733 §3.2 DTMF event codes 0-15 as the digit; undefined for other events. */
export function dtmfDigit(event: number): string | undefined {
  return event >= 0 && event < 16 ? DTMF_DIGITS[event] : undefined;
}

/**
 * Turns a stream of telephone-event packets into digits, once each. RFC 4733 §2.5.1: every
 * packet of one event carries the event's start timestamp, and the end packet is sent three
 * times; so a digit is reported on the first packet of a new (timestamp, event) and the
 * repeats are ignored. Events other than DTMF 0-15 are ignored.
 */
export class DigitDetector {
  private lastTimestamp: number | undefined;
  private lastEvent: number | undefined;

  push(pkt: RtpPacket): string | undefined {
    const te = parseTelephoneEvent(pkt.payload);
    if (!te.ok) return undefined;
    if (pkt.timestamp === this.lastTimestamp && te.value.event === this.lastEvent) return undefined;
    this.lastTimestamp = pkt.timestamp;
    this.lastEvent = te.value.event;
    return dtmfDigit(te.value.event);
  }
}

// --- RTCP (RFC 3550 §6) ----------------------------------------------------------------------------

export const RTCP_SR = 200;
export const RTCP_RR = 201;
export const RTCP_SDES = 202;
export const RTCP_BYE = 203;

/**
 * Validates a compound RTCP packet (RFC 3550 §A.2): version 2 in every packet, the first an SR
 * or RR, no padding but in the last, and the lengths adding up to the datagram. Returns the
 * packet types in order.
 */
export function parseRtcp(buf: Uint8Array): Parsed<number[]> {
  if (buf.length < 4) return { ok: false, reason: "shorter than an RTCP header" };
  const types: number[] = [];
  let off = 0;
  while (off < buf.length) {
    if (off + 4 > buf.length) return { ok: false, reason: "truncated RTCP header" };
    const b0 = buf[off]!;
    if (b0 >> 6 !== RTP_VERSION) return { ok: false, reason: "not RTCP version 2" };
    const pt = buf[off + 1]!;
    if (pt < 192 || pt > 223) return { ok: false, reason: "not an RTCP packet type" };
    const len = (((buf[off + 2]! << 8) | buf[off + 3]!) + 1) * 4;
    if (off + len > buf.length) return { ok: false, reason: "RTCP length beyond the datagram" };
    if (b0 & 0x20 && off + len !== buf.length) return { ok: false, reason: "padding before the last RTCP packet" };
    if (types.length === 0 && pt !== RTCP_SR && pt !== RTCP_RR) return { ok: false, reason: "compound RTCP must start with SR or RR" };
    types.push(pt);
    off += len;
  }
  return { ok: true, value: types };
}

/** NTP time (RFC 5905 era 0: seconds since 1900) of a Unix epoch time in ms, as two 32-bit words. */
export function ntpTime(epochMs: number): [number, number] {
  const secs = Math.floor(epochMs / 1000) + 2_208_988_800;
  const frac = Math.floor(((epochMs % 1000) / 1000) * 0x1_0000_0000);
  return [secs >>> 0, frac >>> 0];
}

function sdesCname(ssrc: number, cname: string): Buffer {
  const text = Buffer.from(cname.slice(0, 255), "utf8").subarray(0, 255);
  // SSRC, CNAME item (type 1, length, text), end item (0), padded to 32 bits (§6.5).
  const body = 4 + 2 + text.length + 1;
  const padded = Math.ceil(body / 4) * 4;
  const out = Buffer.alloc(4 + padded);
  out[0] = (RTP_VERSION << 6) | 1;
  out[1] = RTCP_SDES;
  out.writeUInt16BE(padded / 4, 2);
  out.writeUInt32BE(ssrc >>> 0, 4);
  out[8] = 1;
  out[9] = text.length;
  text.copy(out, 10);
  return out;
}

/** Compound SR + SDES CNAME (RFC 3550 §6.4.1, §6.1: every compound packet carries a CNAME). */
export function buildSenderReport(p: { ssrc: number; epochMs: number; rtpTimestamp: number; packets: number; octets: number; cname: string }): Buffer {
  const sr = Buffer.alloc(28);
  sr[0] = RTP_VERSION << 6; // no reception report blocks
  sr[1] = RTCP_SR;
  sr.writeUInt16BE(6, 2);
  sr.writeUInt32BE(p.ssrc >>> 0, 4);
  const [hi, lo] = ntpTime(p.epochMs);
  sr.writeUInt32BE(hi, 8);
  sr.writeUInt32BE(lo, 12);
  sr.writeUInt32BE(p.rtpTimestamp >>> 0, 16);
  sr.writeUInt32BE(p.packets >>> 0, 20);
  sr.writeUInt32BE(p.octets >>> 0, 24);
  return Buffer.concat([sr, sdesCname(p.ssrc, p.cname)]);
}

/** Compound SR + SDES + BYE, sent when a stream ends (RFC 3550 §6.6). */
export function buildBye(p: Parameters<typeof buildSenderReport>[0]): Buffer {
  const bye = Buffer.alloc(8);
  bye[0] = (RTP_VERSION << 6) | 1;
  bye[1] = RTCP_BYE;
  bye.writeUInt16BE(1, 2);
  bye.writeUInt32BE(p.ssrc >>> 0, 4);
  return Buffer.concat([buildSenderReport(p), bye]);
}
