// The media plane: RTP/RTCP sessions on UDP port pairs, paced playback of G.711 frames, and
// what comes back (RFC 4733 digits, symmetric-RTP latching). It runs inside the media worker
// (worker.ts) — never on the signalling thread — and talks only through MediaCommand /
// MediaEvent messages. Every socket and timer belongs to a session or to the one pacing timer;
// close() and shutdown() free them all.
//
// - Ports: RTP on an even port of the range, RTCP on the next odd one (RFC 3550 §11); pairs
//   are tried from a rotating cursor so a port just freed is not reused at once (late packets
//   of the old call would land in the new one).
// - Pacing: one timer for all sessions, armed for the earliest due frame; each session's frame
//   n is due at its start + n × 20 ms (pacer.ts), so wake-up lateness never accumulates.
// - Symmetric RTP (RFC 4961): until the far end's first valid RTP packet arrives we send to the
//   SDP address; from then on to that packet's source (NAT). Latched once per session, and only
//   by a packet that parses and carries a negotiated payload type, so stray datagrams cannot
//   steer the stream elsewhere. RTCP latches the same way.
// - RTCP: a sender report with CNAME about every 5 s while sending (RFC 3550 §6.2 minimum
//   interval, randomised 0.5-1.5 × as §6.3.5), and BYE when the session closes (§6.6).
// - Hostile input: every datagram handler is guarded; malformed RTP/RTCP is counted and dropped.
import dgram from "node:dgram";
import fs from "node:fs";
import net from "node:net";
import { encodeG711, type G711Law } from "./g711.ts";
import { framesDue, nextDueMs, type PaceState } from "./pacer.ts";
import { validCommand, type MediaCommand, type MediaEvent, type SessionStats, type WorkerConfig } from "./protocol.ts";
import { buildBye, buildSenderReport, DigitDetector, parseRtcp, parseRtp, RtpPacketiser } from "./rtp.ts";
import type { Direction } from "./sdp.ts";
import { decodeWav, MEDIA_RATE } from "./wav.ts";
import { dtmfEvent, eventPackets, INTER_DIGIT_FRAMES, type EventPacket } from "./dtmf-send.ts";
import { WavRecorder } from "./recorder.ts";
import type { RecordReason } from "./protocol.ts";

export const FRAME_MS = 20;
export const FRAME_SAMPLES = (MEDIA_RATE * FRAME_MS) / 1000;
const RTCP_INTERVAL_MS = 5000;

interface Sound {
  samples: Int16Array;
  frames: number;
}

interface Session {
  readonly id: string;
  readonly port: number;
  readonly rtp: dgram.Socket;
  readonly rtcp: dgram.Socket;
  readonly law: G711Law;
  readonly telephoneEvent: number | undefined;
  readonly payloadType: number;
  readonly direction: Direction;
  remoteAddress: string;
  remotePort: number;
  rtcpAddress: string;
  rtcpPort: number;
  latched: boolean;
  rtcpLatched: boolean;
  readonly packetiser: RtpPacketiser;
  /** Pacing from the first play on; undefined before. */
  pace: PaceState | undefined;
  sound: { name: string; data: Sound; frame: number; loop: boolean } | undefined;
  /** Sounds to play after the current one (a sequence command), in order. */
  next: Array<{ name: string; data: Sound; loop: boolean }>;
  /** RFC 4733 digits to send (dtmf-send.ts): the one going out, its start timestamp, and the rest. */
  dtmf: { digit: string; packets: EventPacket[]; sent: number; timestamp: number | undefined; gap: number } | undefined;
  dtmfQueue: Array<{ digit: string; durationMs: number }>;
  readonly digits: DigitDetector;
  readonly stats: SessionStats;
  rtcpTimer: NodeJS.Timeout | undefined;
  readonly frameBuf: Int16Array;
  readonly payloadBuf: Uint8Array;
  /** A recording in progress (record command) and the RFC 4733 digit that stops it. */
  recorder?: { rec: WavRecorder; stopDigit: string | undefined };
}

export interface PlaneOptions {
  config: WorkerConfig;
  post: (ev: MediaEvent) => void;
  /** Monotonic ms clock (performance.now). */
  now?: () => number;
}

export class MediaPlane {
  private readonly sessions = new Map<string, Session>();
  /** Ids being opened (bind in progress) and ids closed while opening. */
  private readonly opening = new Set<string>();
  private readonly closedWhileOpening = new Set<string>();
  private readonly sounds = new Map<string, Sound>();
  private readonly portsInUse = new Set<number>();
  private cursor: number;
  private timer: NodeJS.Timeout | undefined;
  private readonly now: () => number;
  private stopped = false;

  constructor(private readonly opts: PlaneOptions) {
    this.now = opts.now ?? (() => performance.now());
    this.cursor = this.firstPort();
  }

  /** Handles one message from the main thread; ignores (and reports) malformed ones. */
  handle(msg: unknown): void {
    try {
      if (!validCommand(msg)) {
        const m = msg as { op?: unknown; id?: unknown } | null;
        // An open that names its id is answered, so its caller does not wait for a timeout.
        if (typeof m === "object" && m !== null && m.op === "open" && typeof m.id === "string" && m.id.length > 0 && m.id.length <= 128) {
          this.opts.post({ ev: "open-failed", id: m.id, reason: "malformed open command" });
        } else this.opts.post({ ev: "error", message: "malformed media command ignored" });
        return;
      }
      this.command(msg);
    } catch (err) {
      this.opts.post({ ev: "error", message: `media command failed: ${(err as Error).message}` });
    }
  }

  /** Number of open sessions (tests, stats). */
  sessionCount(): number {
    return this.sessions.size;
  }

  /** Closes every session (BYE sent) and the timer. */
  shutdown(): void {
    this.stopped = true;
    for (const id of [...this.sessions.keys()]) this.close(id);
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private command(c: MediaCommand): void {
    switch (c.op) {
      case "load":
        this.load(c.sound, c.path);
        return;
      case "unload":
        this.sounds.delete(c.sound);
        return;
      case "open":
        void this.open(c);
        return;
      case "play":
        this.play(c.id, c.sound, c.loop);
        return;
      case "stop": {
        const s = this.sessions.get(c.id);
        if (s !== undefined) s.sound = undefined;
        return;
      }
      case "sequence":
        this.sequence(c.id, c.sounds, c.loopLast);
        return;
      case "dtmf":
        this.sendDigits(c.id, c.digits, c.durationMs);
        return;
      case "close":
        if (this.opening.has(c.id)) this.closedWhileOpening.add(c.id);
        else this.close(c.id);
        return;
      case "record":
        this.record(c);
        return;
      case "stop-record": {
        const s = this.sessions.get(c.id);
        if (s !== undefined) this.stopRecording(s, "stopped");
        return;
      }
    }
  }

  private load(name: string, path: string): void {
    let bytes: Buffer;
    try {
      bytes = fs.readFileSync(path);
    } catch (err) {
      this.opts.post({ ev: "load-failed", sound: name, reason: `cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` });
      return;
    }
    const wav = decodeWav(bytes);
    if (!wav.ok) {
      this.opts.post({ ev: "load-failed", sound: name, reason: `${path}: ${wav.reason}` });
      return;
    }
    const frames = Math.ceil(wav.samples.length / FRAME_SAMPLES);
    this.sounds.set(name, { samples: wav.samples, frames });
    this.opts.post({ ev: "loaded", sound: name, frames });
  }

  private firstPort(): number {
    const min = this.opts.config.portMin;
    return min % 2 === 0 ? min : min + 1;
  }

  /** Binds the next free even/odd pair of the range; undefined when none is free. */
  private async bindPair(address: string): Promise<{ port: number; rtp: dgram.Socket; rtcp: dgram.Socket } | undefined> {
    const first = this.firstPort();
    const pairs = Math.max(0, Math.floor((this.opts.config.portMax - first + 1) / 2));
    const type = net.isIPv6(address) ? "udp6" : "udp4";
    for (let tried = 0; tried < pairs; tried++) {
      const port = this.cursor;
      this.cursor = port + 2 > this.opts.config.portMax - 1 ? first : port + 2;
      if (this.portsInUse.has(port)) continue;
      this.portsInUse.add(port);
      const rtp = await bindSocket(type, address, port);
      const rtcp = rtp === undefined ? undefined : await bindSocket(type, address, port + 1);
      if (rtp !== undefined && rtcp !== undefined) return { port, rtp, rtcp };
      rtp?.close();
      this.portsInUse.delete(port);
    }
    return undefined;
  }

  private async open(c: Extract<MediaCommand, { op: "open" }>): Promise<void> {
    if (this.sessions.has(c.id) || this.opening.has(c.id)) {
      this.opts.post({ ev: "open-failed", id: c.id, reason: "session id already in use" });
      return;
    }
    if (!net.isIP(c.address) || !net.isIP(c.remoteAddress)) {
      this.opts.post({ ev: "open-failed", id: c.id, reason: "addresses must be IP literals" });
      return;
    }
    this.opening.add(c.id);
    let pair: Awaited<ReturnType<MediaPlane["bindPair"]>>;
    try {
      pair = await this.bindPair(c.address);
    } finally {
      this.opening.delete(c.id);
    }
    const cancelled = this.closedWhileOpening.delete(c.id);
    if (pair === undefined) {
      this.opts.post({ ev: "open-failed", id: c.id, reason: `no free port pair in ${this.opts.config.portMin}-${this.opts.config.portMax} on ${c.address}` });
      return;
    }
    const s: Session = {
      id: c.id,
      port: pair.port,
      rtp: pair.rtp,
      rtcp: pair.rtcp,
      law: c.law,
      telephoneEvent: c.telephoneEvent,
      payloadType: c.payloadType,
      direction: c.direction,
      remoteAddress: c.remoteAddress,
      remotePort: c.remotePort,
      // RFC 3605 a=rtcp is not read: the RTCP port is the RTP port + 1 (RFC 3550 §11).
      rtcpAddress: c.remoteAddress,
      rtcpPort: c.remotePort + 1,
      latched: false,
      rtcpLatched: false,
      packetiser: new RtpPacketiser(c.payloadType, FRAME_SAMPLES),
      pace: undefined,
      sound: undefined,
      next: [],
      dtmf: undefined,
      dtmfQueue: [],
      digits: new DigitDetector(),
      stats: { packetsSent: 0, packetsReceived: 0, badPackets: 0, framesSkipped: 0 },
      rtcpTimer: undefined,
      frameBuf: new Int16Array(FRAME_SAMPLES),
      payloadBuf: new Uint8Array(FRAME_SAMPLES),
    };
    this.sessions.set(s.id, s);
    s.rtp.on("message", (buf, rinfo) => this.guard(() => this.onRtp(s, buf, rinfo)));
    s.rtcp.on("message", (buf, rinfo) => this.guard(() => this.onRtcp(s, buf, rinfo)));
    // A send error (ICMP unreachable surfacing as ECONNREFUSED) must not end the session.
    s.rtp.on("error", () => undefined);
    s.rtcp.on("error", () => undefined);
    this.opts.post({ ev: "opened", id: s.id, port: s.port });
    if (cancelled || this.stopped) this.close(s.id);
  }

  private play(id: string, name: string, loop: boolean): void {
    const s = this.sessions.get(id);
    if (s === undefined) return;
    const data = this.sounds.get(name);
    if (data === undefined) {
      this.opts.post({ ev: "error", message: `sound ${name} is not loaded` });
      return;
    }
    s.sound = { name, data, frame: 0, loop };
    s.next = [];
    s.packetiser.markTalkspurt();
    if (s.pace === undefined) {
      s.pace = { startMs: this.now(), frames: 0 };
      this.scheduleRtcp(s);
    }
    this.tick();
  }

  /** Plays sounds back to back; refused as a whole (nothing changes) when one is not loaded. */
  private sequence(id: string, names: readonly string[], loopLast: boolean): void {
    const s = this.sessions.get(id);
    if (s === undefined) return;
    const list: Session["next"] = [];
    for (const [i, name] of names.entries()) {
      const data = this.sounds.get(name);
      if (data === undefined) {
        this.opts.post({ ev: "error", message: `sound ${name} is not loaded; sequence not played` });
        return;
      }
      list.push({ name, data, loop: loopLast && i === names.length - 1 });
    }
    const first = list.shift()!;
    this.play(id, first.name, first.loop);
    s.next = list;
  }

  /** Queues digits to go out as RFC 4733 events on the pacing clock. */
  private sendDigits(id: string, digits: string, durationMs: number): void {
    const s = this.sessions.get(id);
    if (s === undefined) return;
    if (s.telephoneEvent === undefined) {
      this.opts.post({ ev: "error", message: `session ${id}: telephone-event was not negotiated; digits not sent` });
      return;
    }
    if (s.direction === "recvonly" || s.direction === "inactive") {
      this.opts.post({ ev: "error", message: `session ${id} does not send (${s.direction}); digits not sent` });
      return;
    }
    for (const digit of digits) s.dtmfQueue.push({ digit: digit.toUpperCase(), durationMs });
    if (s.pace === undefined) {
      s.pace = { startMs: this.now(), frames: 0 };
      this.scheduleRtcp(s);
    }
    this.tick();
  }

  /**
   * This frame's telephone-event packet, if digits are going out: true when the frame was
   * taken by them (the audio is silent meanwhile, its timestamp moving on).
   */
  private sendEventFrame(s: Session): boolean {
    if (s.dtmf === undefined) {
      const q = s.dtmfQueue.shift();
      if (q === undefined) return false;
      s.dtmf = { digit: q.digit, packets: eventPackets(dtmfEvent(q.digit)!, q.durationMs, FRAME_SAMPLES, MEDIA_RATE), sent: 0, timestamp: undefined, gap: INTER_DIGIT_FRAMES };
    }
    const d = s.dtmf;
    if (d.sent < d.packets.length) {
      // RFC 4733 §2.5.1.2: every packet of the event carries its start time.
      d.timestamp ??= s.packetiser.nextTimestamp;
      const p = d.packets[d.sent++]!;
      s.rtp.send(s.packetiser.other(s.telephoneEvent!, d.timestamp, p.marker, p.payload), s.remotePort, s.remoteAddress);
      s.stats.packetsSent++;
      if (d.sent === d.packets.length) this.opts.post({ ev: "dtmf-sent", id: s.id, digit: d.digit });
    } else if (--d.gap <= 0 || s.dtmfQueue.length === 0) {
      s.dtmf = undefined;
      if (s.dtmfQueue.length > 0) {
        s.packetiser.skip(1);
        this.advance(s, 1);
        return true;
      }
      return false;
    }
    // The audio's time moves on under the event (its next packet starts a talkspurt).
    s.packetiser.skip(1);
    this.advance(s, 1);
    return true;
  }

  private record(c: Extract<MediaCommand, { op: "record" }>): void {
    const s = this.sessions.get(c.id);
    if (s === undefined) {
      this.opts.post({ ev: "record-failed", id: c.id, reason: "no such session" });
      return;
    }
    if (s.recorder !== undefined) {
      this.opts.post({ ev: "record-failed", id: c.id, reason: "already recording" });
      return;
    }
    const rec = WavRecorder.open(c.tmpPath, c.finalPath, { law: s.law, maxMs: c.maxMs, silenceMs: c.silenceMs });
    if ("error" in rec) {
      this.opts.post({ ev: "record-failed", id: c.id, reason: rec.error });
      return;
    }
    s.recorder = { rec, stopDigit: c.stopDigit };
  }

  /** Ends a recording: the file finalized (recorder.ts) and reported. */
  private stopRecording(s: Session, reason: RecordReason): void {
    const r = s.recorder;
    if (r === undefined) return;
    s.recorder = undefined;
    const done = r.rec.finish();
    if (done.ok) this.opts.post({ ev: "recorded", id: s.id, path: done.path, samples: done.samples, bytes: done.bytes, sha256: done.sha256, reason });
    else this.opts.post({ ev: "record-failed", id: s.id, reason: done.reason });
  }

  private close(id: string): void {
    const s = this.sessions.get(id);
    if (s === undefined) return;
    this.stopRecording(s, "closed");
    this.sessions.delete(id);
    if (s.rtcpTimer !== undefined) clearTimeout(s.rtcpTimer);
    let byeSent = false;
    if (s.pace !== undefined && s.direction !== "recvonly" && s.direction !== "inactive") {
      try {
        s.rtcp.send(this.report(s, true), s.rtcpPort, s.rtcpAddress, () => this.closeSockets(s));
        byeSent = true;
      } catch {
        // the BYE is a courtesy: the ports are freed either way
      }
    }
    if (!byeSent) this.closeSockets(s);
    this.opts.post({ ev: "closed", id, stats: { ...s.stats } });
  }

  private closeSockets(s: Session): void {
    for (const sock of [s.rtp, s.rtcp]) {
      try {
        sock.close();
      } catch {
        // already closed
      }
    }
    this.portsInUse.delete(s.port);
  }

  private report(s: Session, bye: boolean): Buffer {
    const p = { ssrc: s.packetiser.ssrc, epochMs: Date.now(), rtpTimestamp: s.packetiser.lastTimestamp, packets: s.packetiser.packets, octets: s.packetiser.octets, cname: this.opts.config.cname };
    return bye ? buildBye(p) : buildSenderReport(p);
  }

  private scheduleRtcp(s: Session): void {
    const delay = RTCP_INTERVAL_MS * (0.5 + Math.random());
    s.rtcpTimer = setTimeout(() => {
      this.guard(() => {
        if (!this.sessions.has(s.id)) return;
        if (s.direction === "sendrecv" || s.direction === "sendonly") s.rtcp.send(this.report(s, false), s.rtcpPort, s.rtcpAddress);
        this.scheduleRtcp(s);
      });
    }, delay);
    s.rtcpTimer.unref?.();
  }

  // --- pacing --------------------------------------------------------------------------------------

  /** Sends every due frame of every session, then arms the timer for the earliest next one. */
  private tick(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    const now = this.now();
    let next = Infinity;
    for (const s of this.sessions.values()) {
      if (s.pace === undefined) continue;
      const d = framesDue(s.pace, now, FRAME_MS);
      if (d.skip > 0) {
        s.stats.framesSkipped += d.skip;
        this.advance(s, d.skip);
        s.packetiser.skip(d.skip);
      }
      for (let i = 0; i < d.send; i++) this.sendFrame(s);
      if (s.pace !== undefined) next = Math.min(next, nextDueMs(s.pace, FRAME_MS));
    }
    if (next !== Infinity && !this.stopped) {
      this.timer = setTimeout(() => this.guard(() => this.tick()), Math.max(0, next - this.now()));
    }
  }

  /**
   * Moves a sound's position on by `frames` without sending (frames skipped); frames beyond the
   * end of a sound of a sequence are taken from the next one, so the sounds keep their times.
   */
  private advance(s: Session, frames: number): void {
    let left = frames;
    while (left > 0 && s.sound !== undefined) {
      const snd = s.sound;
      const room = snd.data.frames - snd.frame;
      if (left < room) {
        snd.frame += left;
        return;
      }
      if (snd.loop) {
        snd.frame = (snd.frame + left) % snd.data.frames;
        return;
      }
      left -= room;
      this.ended(s);
    }
  }

  private ended(s: Session): void {
    const name = s.sound?.name;
    s.sound = undefined;
    if (name !== undefined) this.opts.post({ ev: "play-ended", id: s.id, sound: name });
    // A sequence goes on with its next sound from the next frame, as a new talkspurt.
    const next = s.next.shift();
    if (next !== undefined && s.sound === undefined) {
      s.sound = { name: next.name, data: next.data, frame: 0, loop: next.loop };
      s.packetiser.markTalkspurt();
    }
  }

  private sendFrame(s: Session): void {
    if ((s.dtmf !== undefined || s.dtmfQueue.length > 0) && this.sendEventFrame(s)) return;
    const snd = s.sound;
    if (snd === undefined || s.direction === "recvonly" || s.direction === "inactive") {
      // Nothing to send this frame: time (and the timestamp) still moves on.
      s.packetiser.skip(1);
      return;
    }
    const { samples, frames } = snd.data;
    const buf = s.frameBuf;
    for (let i = 0; i < FRAME_SAMPLES; i++) {
      let idx = snd.frame * FRAME_SAMPLES + i;
      if (idx >= samples.length) {
        // The last frame of a file: a looped sound continues from its start, else silence.
        if (snd.loop) idx %= samples.length;
        else {
          buf.fill(0, i);
          break;
        }
      }
      buf[i] = samples[idx]!;
    }
    const payload = encodeG711(s.law, buf, s.payloadBuf);
    s.rtp.send(s.packetiser.next(payload), s.remotePort, s.remoteAddress);
    s.stats.packetsSent++;
    snd.frame++;
    if (snd.frame >= frames) {
      if (snd.loop) snd.frame = 0;
      else this.ended(s);
    }
  }

  // --- receiving -------------------------------------------------------------------------------------

  private onRtp(s: Session, buf: Buffer, rinfo: dgram.RemoteInfo): void {
    const p = parseRtp(buf);
    if (!p.ok || (p.value.payloadType !== s.payloadType && p.value.payloadType !== s.telephoneEvent)) {
      s.stats.badPackets++;
      return;
    }
    if (s.latched && (rinfo.address !== s.remoteAddress || rinfo.port !== s.remotePort)) {
      // Another source after latching: not our peer.
      s.stats.badPackets++;
      return;
    }
    s.stats.packetsReceived++;
    if (!s.latched) {
      s.latched = true;
      s.remoteAddress = rinfo.address;
      s.remotePort = rinfo.port;
      this.opts.post({ ev: "latched", id: s.id, address: rinfo.address, port: rinfo.port });
    }
    if (p.value.payloadType === s.telephoneEvent) {
      const digit = s.digits.push(p.value);
      if (digit !== undefined) this.opts.post({ ev: "digit", id: s.id, digit });
      if (digit !== undefined && digit === s.recorder?.stopDigit) this.stopRecording(s, "digit");
    } else if (s.recorder !== undefined) {
      const stop = s.recorder.rec.push(p.value);
      if (stop !== undefined) this.stopRecording(s, stop);
    }
  }

  private onRtcp(s: Session, buf: Buffer, rinfo: dgram.RemoteInfo): void {
    const p = parseRtcp(buf);
    if (!p.ok) {
      s.stats.badPackets++;
      return;
    }
    if (!s.rtcpLatched) {
      s.rtcpLatched = true;
      s.rtcpAddress = rinfo.address;
      s.rtcpPort = rinfo.port;
    }
  }

  private guard(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.opts.post({ ev: "error", message: (err as Error).message });
    }
  }
}

function bindSocket(type: "udp4" | "udp6", address: string, port: number): Promise<dgram.Socket | undefined> {
  return new Promise((resolve) => {
    const sock = dgram.createSocket({ type, reuseAddr: false });
    const fail = (): void => {
      try {
        sock.close();
      } catch {
        // never bound
      }
      resolve(undefined);
    };
    sock.once("error", fail);
    sock.bind(port, address, () => {
      sock.off("error", fail);
      resolve(sock);
    });
  });
}
