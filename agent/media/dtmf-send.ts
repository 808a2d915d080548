// RFC 4733 telephone-events sent by the media plane: DTMF digits as named events on the
// stream's negotiated telephone-event payload type. Pure: what the packets of one digit carry;
// the plane (plane.ts) sends one per 20 ms frame on its pacing clock, in place of the audio.
//
// - §2.3: payload = event (8 bits), E (end), R (reserved, 0), volume (6 bits, -dBm0), duration
//   (16 bits, in timestamp units).
// - §2.5.1.2: every packet of an event carries the event's start time as its RTP timestamp; the
//   first packet of the event has the marker bit; each update carries the duration so far.
// - §2.5.1.3/§2.5.1.4: the last packet has the E bit and the whole duration, and "the final
//   packet for each event SHOULD be sent a total of three times at the interval used by the
//   source for updates": three end packets. Each is a new RTP packet, so it takes the next
//   sequence number (RFC 3550 §5.1); a receiver recognises the repeats by timestamp and event.
// - Durations are bounded so one event never needs the long-event segments of §2.5.1.5
//   (65,535 timestamp units): at most MAX_DTMF_MS.
// - §3.2: DTMF events 0-9, * (10), # (11), A-D (12-15).

export const DTMF_DIGITS_SENDABLE = "0123456789*#ABCD";
export const MIN_DTMF_MS = 40;
export const MAX_DTMF_MS = 5000;
export const DEFAULT_DTMF_MS = 100;
/** Volume field: 10 = -10 dBm0, a usual DTMF level (§2.3.4: 0 to -63 dBm0). */
export const DTMF_VOLUME = 10;
/** Most digits in one command. */
export const MAX_DTMF_DIGITS = 32;
/** End packets per event (§2.5.1.4). */
export const END_PACKETS = 3;
/** Silent frames after the last end packet before the next digit's event starts. */
export const INTER_DIGIT_FRAMES = 2;

/** The RFC 4733 event code of a DTMF digit (case-insensitive A-D); undefined for anything else. */
export function dtmfEvent(digit: string): number | undefined {
  if (digit.length !== 1) return undefined;
  const i = DTMF_DIGITS_SENDABLE.indexOf(digit.toUpperCase());
  return i < 0 ? undefined : i;
}

/** Whether a command's digits and duration can be sent (the worker refuses anything else). */
export function validDtmf(digits: unknown, durationMs: unknown): boolean {
  return (
    typeof digits === "string" &&
    digits.length > 0 &&
    digits.length <= MAX_DTMF_DIGITS &&
    [...digits].every((d) => dtmfEvent(d) !== undefined) &&
    typeof durationMs === "number" &&
    Number.isInteger(durationMs) &&
    durationMs >= MIN_DTMF_MS &&
    durationMs <= MAX_DTMF_MS
  );
}

/** The 4-octet payload of one event packet (§2.3). */
export function encodeTelephoneEvent(ev: { event: number; end: boolean; volume: number; duration: number }): Uint8Array {
  const out = new Uint8Array(4);
  out[0] = ev.event & 0xff;
  out[1] = (ev.end ? 0x80 : 0) | (ev.volume & 0x3f);
  out[2] = (ev.duration >> 8) & 0xff;
  out[3] = ev.duration & 0xff;
  return out;
}

export interface EventPacket {
  marker: boolean;
  payload: Uint8Array;
}

/**
 * The packets of one digit, one per frame of `frameSamples` (20 ms at 8 kHz: 160): updates with
 * the duration so far (the first with the marker bit), the last of them with the E bit, and
 * that end packet twice more. A 100 ms digit: durations 160, 320, 480, 640, then 800 with E
 * three times.
 */
export function eventPackets(event: number, durationMs: number, frameSamples = 160, rate = 8000): EventPacket[] {
  const frameMs = (frameSamples * 1000) / rate;
  const frames = Math.max(1, Math.round(durationMs / frameMs));
  const out: EventPacket[] = [];
  for (let k = 1; k <= frames; k++) {
    const end = k === frames;
    out.push({ marker: k === 1, payload: encodeTelephoneEvent({ event, end, volume: DTMF_VOLUME, duration: k * frameSamples }) });
  }
  const last = out.at(-1)!;
  for (let i = 1; i < END_PACKETS; i++) out.push({ marker: false, payload: last.payload });
  return out;
}
