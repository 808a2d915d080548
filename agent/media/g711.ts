// G.711 (ITU-T G.711) µ-law and A-law companding, as RTP payload types 0 (PCMU) and 8 (PCMA)
// carry them (RFC 3551 §4.5.14). Decoding is a 256-entry table per law; encoding a 64 Ki-entry
// table indexed by the 16-bit sample, both built once at load: the media hot path is one array
// read per sample.

export type G711Law = "PCMU" | "PCMA";

/** µ-law: 14-bit magnitude + bias 0x84, 8 segments of 16 steps, all bits inverted on the wire. */
function ulawEncodeSample(sample: number): number {
  let mask = 0xff;
  let v = sample;
  if (v < 0) {
    v = -v;
    mask = 0x7f;
  }
  v = Math.min(v, 32635) + 0x84;
  let seg = 0;
  while (seg < 7 && v >= 0x100 << seg) seg++;
  const mantissa = (v >> (seg + 3)) & 0x0f;
  return ((seg << 4) | mantissa) ^ mask;
}

function ulawDecodeSample(byte: number): number {
  const u = ~byte & 0xff;
  const t = (((u & 0x0f) << 3) + 0x84) << ((u & 0x70) >> 4);
  return u & 0x80 ? 0x84 - t : t - 0x84;
}

/** A-law: 13-bit sample, 8 segments (the first two linear), even bits inverted (XOR 0x55). */
function alawEncodeSample(sample: number): number {
  let v = sample >> 3;
  let mask = 0xd5;
  if (v < 0) {
    v = -v - 1;
    mask = 0x55;
  }
  let seg = 0;
  while (seg < 8 && v >= 0x20 << seg) seg++;
  if (seg >= 8) return 0x7f ^ mask;
  const mantissa = seg < 2 ? (v >> 1) & 0x0f : (v >> seg) & 0x0f;
  return ((seg << 4) | mantissa) ^ mask;
}

function alawDecodeSample(byte: number): number {
  const a = byte ^ 0x55;
  const seg = (a & 0x70) >> 4;
  let t = (a & 0x0f) << 4;
  if (seg === 0) t += 8;
  else t = (t + 0x108) << (seg - 1);
  return a & 0x80 ? t : -t;
}

function buildDecode(fn: (b: number) => number): Int16Array {
  const t = new Int16Array(256);
  for (let b = 0; b < 256; b++) t[b] = fn(b);
  return t;
}

function buildEncode(fn: (s: number) => number): Uint8Array {
  const t = new Uint8Array(65536);
  for (let s = -32768; s < 32768; s++) t[s & 0xffff] = fn(s);
  return t;
}

const DECODE: Record<G711Law, Int16Array> = { PCMU: buildDecode(ulawDecodeSample), PCMA: buildDecode(alawDecodeSample) };
const ENCODE: Record<G711Law, Uint8Array> = { PCMU: buildEncode(ulawEncodeSample), PCMA: buildEncode(alawEncodeSample) };

/** 16-bit linear PCM → G.711 bytes (`out` may be given to avoid an allocation per frame). */
export function encodeG711(law: G711Law, pcm: Int16Array, out: Uint8Array = new Uint8Array(pcm.length)): Uint8Array {
  const t = ENCODE[law];
  for (let i = 0; i < pcm.length; i++) out[i] = t[pcm[i]! & 0xffff]!;
  return out;
}

/** G.711 bytes → 16-bit linear PCM. */
export function decodeG711(law: G711Law, bytes: Uint8Array, out: Int16Array = new Int16Array(bytes.length)): Int16Array {
  const t = DECODE[law];
  for (let i = 0; i < bytes.length; i++) out[i] = t[bytes[i]!]!;
  return out;
}

/** RFC 3551 §6 static payload types. */
export const G711_PAYLOAD_TYPE: Record<G711Law, number> = { PCMU: 0, PCMA: 8 };

/** The byte a law sends for digital silence (used to pad the last frame of a file). */
export const G711_SILENCE: Record<G711Law, number> = { PCMU: ulawEncodeSample(0), PCMA: alawEncodeSample(0) };
