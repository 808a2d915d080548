// WAV files (RIFF WAVE, linear PCM) to 8 kHz mono 16-bit samples, what G.711 frames are made of.
// 16-bit PCM at any rate from 4 to 48 kHz, mono or stereo (averaged), is accepted; other rates
// are converted by linear interpolation after a moving-average low-pass of one source period
// per output sample (simple, and enough for hold music and speech prompts at telephone
// bandwidth). Anything else — compressed formats, 8/24/32-bit, truncated chunks — is refused
// with a reason; nothing here throws on a bad file.

export const MEDIA_RATE = 8000;
/** Larger files are refused (ten minutes of 48 kHz stereo is about 110 MB). */
export const WAV_MAX_BYTES = 64 * 1024 * 1024;

export type WavResult = { ok: true; samples: Int16Array; sourceRate: number; channels: number } | { ok: false; reason: string };

const WAVE_FORMAT_PCM = 1;
const WAVE_FORMAT_EXTENSIBLE = 0xfffe;

/** Parses a WAV file's bytes and returns its audio as 8 kHz mono 16-bit samples. */
export function decodeWav(buf: Uint8Array): WavResult {
  const bad = (reason: string): WavResult => ({ ok: false, reason });
  if (buf.length > WAV_MAX_BYTES) return bad(`larger than ${WAV_MAX_BYTES} bytes`);
  if (buf.length < 12) return bad("too short for a RIFF header");
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (b.toString("latin1", 0, 4) !== "RIFF" || b.toString("latin1", 8, 12) !== "WAVE") return bad("not a RIFF WAVE file");
  let off = 12;
  let fmt: { format: number; channels: number; rate: number; bits: number; blockAlign: number } | undefined;
  let data: Buffer | undefined;
  while (off + 8 <= b.length) {
    const id = b.toString("latin1", off, off + 4);
    const size = b.readUInt32LE(off + 4);
    const start = off + 8;
    // A data chunk cut short (a file still being copied) is refused; writers that leave the
    // size at 0xFFFFFFFF while streaming get what is there.
    const end = id === "data" && size === 0xffffffff ? b.length : start + size;
    if (end > b.length) return bad(`chunk "${id.replace(/[^\x20-\x7e]/g, "?")}" runs past the end of the file`);
    if (id === "fmt ") {
      if (size < 16) return bad("fmt chunk too short");
      let format = b.readUInt16LE(start);
      if (format === WAVE_FORMAT_EXTENSIBLE && size >= 40) format = b.readUInt16LE(start + 24); // SubFormat GUID's first two bytes
      fmt = { format, channels: b.readUInt16LE(start + 2), rate: b.readUInt32LE(start + 4), blockAlign: b.readUInt16LE(start + 12), bits: b.readUInt16LE(start + 14) };
    } else if (id === "data") {
      data = b.subarray(start, end);
      break;
    }
    off = end + (size & 1); // chunks are padded to even length
  }
  if (fmt === undefined) return bad("no fmt chunk");
  if (data === undefined) return bad("no data chunk");
  if (fmt.format !== WAVE_FORMAT_PCM) return bad(`format ${fmt.format} is not linear PCM (convert it, e.g. sox in.wav -r 8000 -c 1 -b 16 out.wav)`);
  if (fmt.bits !== 16) return bad(`${fmt.bits}-bit samples; 16-bit PCM is needed`);
  if (fmt.channels !== 1 && fmt.channels !== 2) return bad(`${fmt.channels} channels; mono or stereo is needed`);
  if (fmt.rate < 4000 || fmt.rate > 48000) return bad(`sample rate ${fmt.rate} Hz is outside 4000-48000`);
  if (fmt.blockAlign !== fmt.channels * 2) return bad("block align does not match 16-bit samples");
  const frames = Math.floor(data.length / fmt.blockAlign);
  if (frames === 0) return bad("no audio in the data chunk");
  const mono = new Float32Array(frames);
  for (let i = 0; i < frames; i++) {
    const o = i * fmt.blockAlign;
    mono[i] = fmt.channels === 1 ? data.readInt16LE(o) : (data.readInt16LE(o) + data.readInt16LE(o + 2)) / 2;
  }
  return { ok: true, samples: resample(mono, fmt.rate, MEDIA_RATE), sourceRate: fmt.rate, channels: fmt.channels };
}

/** Linear-interpolation resampling; downsampling averages over one source period per output sample first. */
export function resample(input: Float32Array, from: number, to: number): Int16Array {
  if (from === to) return Int16Array.from(input, (v) => clamp16(v));
  let src = input;
  if (from > to) {
    const w = Math.max(1, Math.round(from / to));
    src = new Float32Array(input.length);
    let acc = 0;
    for (let i = 0; i < input.length; i++) {
      acc += input[i]!;
      if (i >= w) acc -= input[i - w]!;
      src[i] = acc / Math.min(i + 1, w);
    }
  }
  const outLen = Math.max(1, Math.floor((input.length * to) / from));
  const out = new Int16Array(outLen);
  const step = from / to;
  for (let j = 0; j < outLen; j++) {
    const x = j * step;
    const i = Math.floor(x);
    const f = x - i;
    const a = src[i] ?? 0;
    const c = src[Math.min(i + 1, src.length - 1)] ?? a;
    out[j] = clamp16(a + (c - a) * f);
  }
  return out;
}

function clamp16(v: number): number {
  return v > 32767 ? 32767 : v < -32768 ? -32768 : Math.round(v);
}

/** Bytes before the samples in the files wavHeader() describes. */
export const WAV_HEADER_BYTES = 44;

/** The header of a 16-bit mono PCM WAV file holding `samples` samples at `rate` Hz (RIFF, fmt and data chunk heads). */
export function wavHeader(samples: number, rate = MEDIA_RATE): Buffer {
  const h = Buffer.alloc(WAV_HEADER_BYTES);
  h.write("RIFF", 0, "latin1");
  h.writeUInt32LE(36 + samples * 2, 4);
  h.write("WAVE", 8, "latin1");
  h.write("fmt ", 12, "latin1");
  h.writeUInt32LE(16, 16);
  h.writeUInt16LE(WAVE_FORMAT_PCM, 20);
  h.writeUInt16LE(1, 22);
  h.writeUInt32LE(rate, 24);
  h.writeUInt32LE(rate * 2, 28);
  h.writeUInt16LE(2, 32);
  h.writeUInt16LE(16, 34);
  h.write("data", 36, "latin1");
  h.writeUInt32LE(samples * 2, 40);
  return h;
}

/** A WAV file (8 kHz mono 16-bit) from samples: for tests and generated audio. */
export function encodeWav(samples: Int16Array, rate = MEDIA_RATE): Buffer {
  const out = Buffer.alloc(WAV_HEADER_BYTES + samples.length * 2);
  wavHeader(samples.length, rate).copy(out, 0);
  for (let i = 0; i < samples.length; i++) out.writeInt16LE(samples[i]!, WAV_HEADER_BYTES + i * 2);
  return out;
}
