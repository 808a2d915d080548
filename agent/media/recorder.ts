// Recording what the far end sends: G.711 decoded to 16-bit 8 kHz mono PCM in a WAV file. Runs
// in the media worker (plane.ts) beside the session it records.
//
// - Where a packet's samples go comes from its RTP timestamp (RFC 3550 §5.1), not its arrival:
//   a lost packet leaves silence of its length (the message keeps its true duration), a late or
//   duplicated one (timestamp already written) is dropped. A new SSRC (the far end's source
//   changed) continues where the file is.
// - Durability: the file is written under a temporary name; finish() writes the final RIFF and
//   data sizes, fsyncs the file, renames it to its final name (atomic on one file system) and
//   fsyncs the directory, so after a crash either the complete file exists under its final
//   name or only the temporary one does (which the mailbox store removes at start).
// - It stops itself at the maximum length and after `silenceMs` of silence (mean absolute
//   level under SILENCE_LEVEL, about -40 dBFS, counted over packets and gaps alike).
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { decodeG711, type G711Law } from "./g711.ts";
import type { RtpPacket } from "./rtp.ts";
import { MEDIA_RATE, WAV_HEADER_BYTES, wavHeader } from "./wav.ts";

/** Mean absolute sample value under which audio counts as silence (≈ -40 dBFS). */
export const SILENCE_LEVEL = 330;
/** Samples buffered before a write (one second). */
const CHUNK_SAMPLES = MEDIA_RATE;
/** A gap in timestamps larger than this (a far end that restarted its clock) is not filled. */
const MAX_GAP_SAMPLES = 5 * MEDIA_RATE;

export type RecordStop = "max-length" | "silence";

export interface RecorderOptions {
  law: G711Law;
  maxMs: number;
  /** 0: never stop on silence. */
  silenceMs: number;
}

export type FinishResult = { ok: true; path: string; samples: number; bytes: number; sha256: string } | { ok: false; reason: string };

export class WavRecorder {
  private fd: number | undefined;
  private samples = 0;
  private readonly maxSamples: number;
  private readonly silenceSamples: number;
  private silentRun = 0;
  private base: { ssrc: number; ts: number } | undefined;
  private readonly buf = Buffer.alloc(CHUNK_SAMPLES * 2);
  private buffered = 0;
  private readonly pcm = new Int16Array(2048);

  private constructor(
    readonly tmpPath: string,
    readonly finalPath: string,
    fd: number,
    private readonly opts: RecorderOptions,
  ) {
    this.fd = fd;
    this.maxSamples = Math.floor((opts.maxMs * MEDIA_RATE) / 1000);
    this.silenceSamples = Math.floor((opts.silenceMs * MEDIA_RATE) / 1000);
  }

  /** Creates the temporary file (never over an existing one) with a placeholder header. */
  static open(tmpPath: string, finalPath: string, opts: RecorderOptions): WavRecorder | { error: string } {
    let fd: number;
    try {
      fd = fs.openSync(tmpPath, "wx", 0o640);
      fs.writeSync(fd, wavHeader(0));
    } catch (err) {
      return { error: `cannot create ${tmpPath}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` };
    }
    return new WavRecorder(tmpPath, finalPath, fd, opts);
  }

  /** Samples recorded so far. */
  get length(): number {
    return this.samples;
  }

  /** One received RTP packet of the negotiated G.711 type; says when the recording should stop. */
  push(p: RtpPacket): RecordStop | undefined {
    if (this.fd === undefined || p.payload.length === 0) return undefined;
    if (this.base === undefined || this.base.ssrc !== p.ssrc) this.base = { ssrc: p.ssrc, ts: (p.timestamp - this.samples) >>> 0 };
    const offset = (p.timestamp - this.base.ts) >>> 0;
    if (offset >= 0x80000000 || offset < this.samples) return undefined; // late or duplicated
    let gap = offset - this.samples;
    if (gap > MAX_GAP_SAMPLES) {
      // The far end jumped its clock: carry on from here without inventing minutes of silence.
      this.base = { ssrc: p.ssrc, ts: (p.timestamp - this.samples) >>> 0 };
      gap = 0;
    }
    if (gap > 0) {
      const n = Math.min(gap, this.maxSamples - this.samples);
      this.append(new Int16Array(n));
      this.silentRun += n;
    }
    const room = this.maxSamples - this.samples;
    if (room <= 0) return "max-length";
    const count = Math.min(p.payload.length, room, this.pcm.length);
    const pcm = decodeG711(this.opts.law, p.payload.subarray(0, count), this.pcm.subarray(0, count));
    let sum = 0;
    for (let i = 0; i < count; i++) sum += Math.abs(pcm[i]!);
    if (sum / count < SILENCE_LEVEL) this.silentRun += count;
    else this.silentRun = 0;
    this.append(pcm);
    if (this.samples >= this.maxSamples) return "max-length";
    if (this.silenceSamples > 0 && this.silentRun >= this.silenceSamples) return "silence";
    return undefined;
  }

  /** Final sizes written, fsync, atomic rename to the final name, directory fsync, SHA-256. */
  finish(): FinishResult {
    const fd = this.fd;
    if (fd === undefined) return { ok: false, reason: "already finished" };
    this.fd = undefined;
    try {
      this.flush(fd);
      fs.writeSync(fd, wavHeader(this.samples), 0, WAV_HEADER_BYTES, 0);
      fs.fsyncSync(fd);
      fs.closeSync(fd);
      fs.renameSync(this.tmpPath, this.finalPath);
      syncDir(path.dirname(this.finalPath));
      const bytes = fs.readFileSync(this.finalPath);
      return { ok: true, path: this.finalPath, samples: this.samples, bytes: bytes.length, sha256: createHash("sha256").update(bytes).digest("hex") };
    } catch (err) {
      closeQuietly(fd);
      unlinkQuietly(this.tmpPath);
      return { ok: false, reason: (err as NodeJS.ErrnoException).code ?? (err as Error).message };
    }
  }

  /** Drops the recording: the temporary file is removed. */
  abort(): void {
    const fd = this.fd;
    this.fd = undefined;
    if (fd !== undefined) closeQuietly(fd);
    unlinkQuietly(this.tmpPath);
  }

  private append(pcm: Int16Array): void {
    for (let i = 0; i < pcm.length; i++) {
      this.buf.writeInt16LE(pcm[i]!, this.buffered * 2);
      this.buffered++;
      if (this.buffered === CHUNK_SAMPLES && this.fd !== undefined) this.flush(this.fd);
    }
    this.samples += pcm.length;
  }

  private flush(fd: number): void {
    if (this.buffered === 0) return;
    fs.writeSync(fd, this.buf, 0, this.buffered * 2);
    this.buffered = 0;
  }
}

/** fsync of a directory, so a rename in it survives a power cut. */
export function syncDir(dir: string): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(dir, "r");
    fs.fsyncSync(fd);
  } catch {
    // Some file systems refuse fsync on directories; the rename itself is still atomic.
  } finally {
    if (fd !== undefined) closeQuietly(fd);
  }
}

function closeQuietly(fd: number): void {
  try {
    fs.closeSync(fd);
  } catch {
    // already closed
  }
}

function unlinkQuietly(file: string): void {
  try {
    fs.unlinkSync(file);
  } catch {
    // already gone
  }
}
