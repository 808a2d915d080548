// SDP (RFC 4566) offer/answer (RFC 3264) for the appliance's one audio stream. A small parser
// of the few lines the answer depends on — c=, m=, a=rtpmap, a=ptime and the direction
// attributes — with bounds on size and counts, since the offer comes from anyone who can send
// an INVITE. Everything else in the offer is read past. The answer is built here too.
import net from "node:net";
import type { G711Law } from "./g711.ts";

/** Larger offers are refused: a real audio offer is a few hundred bytes. */
export const SDP_MAX_BYTES = 16 * 1024;
const MAX_LINES = 400;
const MAX_MEDIA = 16;

export type Direction = "sendrecv" | "sendonly" | "recvonly" | "inactive";

export interface SdpMedia {
  media: string;
  port: number;
  proto: string;
  formats: string[];
  /** Payload type → "encoding/clock[/channels]" as in a=rtpmap (names upper-cased). */
  rtpmap: Map<number, string>;
  /** Media-level c= address, if any. */
  address: string | undefined;
  direction: Direction | undefined;
}

export interface SdpOffer {
  /** Session-level c= address, if any. */
  address: string | undefined;
  direction: Direction | undefined;
  media: SdpMedia[];
}

export type SdpResult<T> = { ok: true; value: T } | { ok: false; reason: string };

const DIRECTIONS = new Set(["sendrecv", "sendonly", "recvonly", "inactive"]);
const TOKEN_RE = /^[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+$/;

function parseConnection(value: string): SdpResult<string> {
  // RFC 4566 §5.7: c=<nettype> <addrtype> <connection-address>; multicast TTL/count after "/".
  const parts = value.split(" ");
  if (parts.length !== 3 || parts[0] !== "IN") return { ok: false, reason: "c= is not IN <addrtype> <address>" };
  const addr = parts[2]!.split("/")[0]!;
  if (parts[1] === "IP4" && net.isIPv4(addr)) return { ok: true, value: addr };
  if (parts[1] === "IP6" && net.isIPv6(addr)) return { ok: true, value: addr };
  // Host names would need DNS; the appliance never resolves names from a message.
  return { ok: false, reason: "c= address is not an IP literal of its address type" };
}

/** Parses an SDP body; refuses anything malformed in the lines the answer depends on. */
export function parseSdp(body: Uint8Array | string): SdpResult<SdpOffer> {
  if (body.length === 0) return { ok: false, reason: "empty SDP" };
  if (body.length > SDP_MAX_BYTES) return { ok: false, reason: `SDP larger than ${SDP_MAX_BYTES} bytes` };
  const text = typeof body === "string" ? body : Buffer.from(body).toString("utf8");
  const lines = text.split(/\r?\n/);
  if (lines.length > MAX_LINES) return { ok: false, reason: "too many SDP lines" };
  const offer: SdpOffer = { address: undefined, direction: undefined, media: [] };
  let sawVersion = false;
  for (const [i, raw] of lines.entries()) {
    if (raw === "") continue;
    if (raw.length < 2 || raw[1] !== "=" || !/[a-z]/.test(raw[0]!)) return { ok: false, reason: `line ${i + 1} is not <type>=<value>` };
    const type = raw[0]!;
    const value = raw.slice(2);
    if (!sawVersion) {
      // RFC 4566 §5: the first line is v=0.
      if (type !== "v" || value !== "0") return { ok: false, reason: "SDP does not start with v=0" };
      sawVersion = true;
      continue;
    }
    const m = offer.media.at(-1);
    switch (type) {
      case "c": {
        const c = parseConnection(value);
        if (!c.ok) return c;
        if (m === undefined) offer.address = c.value;
        else m.address = c.value;
        break;
      }
      case "m": {
        if (offer.media.length >= MAX_MEDIA) return { ok: false, reason: "too many m= lines" };
        // RFC 4566 §5.14: m=<media> <port>[/<count>] <proto> <fmt> ...
        const parts = value.split(" ");
        if (parts.length < 4) return { ok: false, reason: "m= line too short" };
        const [media, portText, proto] = parts as [string, string, string];
        const port = /^[0-9]{1,5}(\/[0-9]+)?$/.test(portText) ? Number(portText.split("/")[0]) : NaN;
        if (!TOKEN_RE.test(media) || !(port >= 0 && port <= 65535) || proto.length === 0) return { ok: false, reason: "m= line malformed" };
        offer.media.push({ media, port, proto, formats: parts.slice(3).filter((f) => f !== ""), rtpmap: new Map(), address: undefined, direction: undefined });
        break;
      }
      case "a": {
        const colon = value.indexOf(":");
        const name = colon < 0 ? value : value.slice(0, colon);
        const arg = colon < 0 ? "" : value.slice(colon + 1);
        if (DIRECTIONS.has(name)) {
          if (m === undefined) offer.direction = name as Direction;
          else m.direction = name as Direction;
        } else if (name === "rtpmap" && m !== undefined) {
          // RFC 4566 §6: a=rtpmap:<payload type> <encoding name>/<clock rate>[/<parameters>]
          const r = /^([0-9]{1,3}) ([^/ ]+)\/([0-9]+)(?:\/([0-9]+))?$/.exec(arg.trim());
          if (r === null || Number(r[1]) > 127) return { ok: false, reason: "a=rtpmap malformed" };
          m.rtpmap.set(Number(r[1]), `${r[2]!.toUpperCase()}/${r[3]}${r[4] !== undefined ? `/${r[4]}` : ""}`);
        }
        break;
      }
      default:
        break;
    }
  }
  if (!sawVersion) return { ok: false, reason: "SDP does not start with v=0" };
  return { ok: true, value: offer };
}

export interface AudioChoice {
  /** Index of the chosen m= line in the offer. */
  index: number;
  law: G711Law;
  payloadType: number;
  /** The offer's payload type for telephone-event/8000 (RFC 4733 §7.1.1), if offered. */
  telephoneEvent: number | undefined;
  remoteAddress: string;
  remotePort: number;
  /** What the answer says, from the offer's direction (RFC 3264 §6.1). */
  direction: Direction;
}

function isUnicast(address: string): boolean {
  if (net.isIPv4(address)) {
    const first = Number(address.split(".")[0]);
    return address !== "0.0.0.0" && address !== "255.255.255.255" && !(first >= 224 && first <= 239);
  }
  const a = address.toLowerCase();
  return a !== "::" && !a.startsWith("ff");
}

/** Encoding a payload type stands for: the rtpmap when given, else the static RFC 3551 table. */
function encodingOf(m: SdpMedia, pt: number): string | undefined {
  const mapped = m.rtpmap.get(pt);
  if (mapped !== undefined) return mapped;
  if (pt === 0) return "PCMU/8000";
  if (pt === 8) return "PCMA/8000";
  return undefined;
}

const ANSWER_DIRECTION: Record<Direction, Direction> = { sendrecv: "sendrecv", recvonly: "sendonly", sendonly: "recvonly", inactive: "inactive" };

/**
 * RFC 3264 §6.1: the first audio stream offered over RTP/AVP with a port, and in it the first
 * format in the offer's order of preference that is PCMU or PCMA at 8 kHz (mono). Refused,
 * with the reason, when there is no such stream or codec.
 */
export function chooseAudio(offer: SdpOffer): SdpResult<AudioChoice> {
  for (const [index, m] of offer.media.entries()) {
    if (m.media !== "audio" || m.port === 0) continue;
    if (m.proto !== "RTP/AVP" && m.proto !== "RTP/AVPF") continue;
    const address = m.address ?? offer.address;
    if (address === undefined) return { ok: false, reason: "audio stream has no c= address" };
    // RFC 3264 §8.4's old hold form (0.0.0.0) and multicast are not somewhere to send a stream to.
    if (!isUnicast(address)) return { ok: false, reason: "c= address is not a unicast address" };
    let law: G711Law | undefined;
    let payloadType = -1;
    let telephoneEvent: number | undefined;
    for (const f of m.formats) {
      if (!/^[0-9]{1,3}$/.test(f) || Number(f) > 127) continue;
      const pt = Number(f);
      const enc = encodingOf(m, pt);
      if (law === undefined && (enc === "PCMU/8000" || enc === "PCMU/8000/1")) [law, payloadType] = ["PCMU", pt];
      else if (law === undefined && (enc === "PCMA/8000" || enc === "PCMA/8000/1")) [law, payloadType] = ["PCMA", pt];
      else if (telephoneEvent === undefined && enc === "TELEPHONE-EVENT/8000") telephoneEvent = pt;
    }
    if (law === undefined) return { ok: false, reason: "no PCMU or PCMA offered" };
    const direction = ANSWER_DIRECTION[m.direction ?? offer.direction ?? "sendrecv"];
    return { ok: true, value: { index, law, payloadType, telephoneEvent, remoteAddress: address, remotePort: m.port, direction } };
  }
  return { ok: false, reason: "no RTP audio stream offered" };
}

/**
 * The answer (RFC 3264 §6): one m= line per offered one, in order; the chosen audio stream with
 * our address and port, the one codec and telephone-event; every other stream refused with
 * port 0 (§6: "a stream is rejected by setting the port to zero").
 */
export function buildAnswer(offer: SdpOffer, choice: AudioChoice, local: { address: string; port: number; sessionId: number }): string {
  const ipv = net.isIPv6(local.address) ? "IP6" : "IP4";
  const lines = ["v=0", `o=ringedge ${local.sessionId} ${local.sessionId} IN ${ipv} ${local.address}`, "s=ringedge", `c=IN ${ipv} ${local.address}`, "t=0 0"];
  for (const [i, m] of offer.media.entries()) {
    if (i !== choice.index) {
      lines.push(`m=${m.media} 0 ${m.proto} ${m.formats[0] ?? "0"}`);
      continue;
    }
    const fmts = [choice.payloadType, ...(choice.telephoneEvent !== undefined ? [choice.telephoneEvent] : [])];
    lines.push(`m=audio ${local.port} ${m.proto} ${fmts.join(" ")}`);
    lines.push(`a=rtpmap:${choice.payloadType} ${choice.law}/8000`);
    if (choice.telephoneEvent !== undefined) {
      lines.push(`a=rtpmap:${choice.telephoneEvent} telephone-event/8000`);
      lines.push(`a=fmtp:${choice.telephoneEvent} 0-15`);
    }
    lines.push("a=ptime:20");
    lines.push(`a=${choice.direction}`);
  }
  return lines.join("\r\n") + "\r\n";
}
