// The messages between the main thread (signalling) and the media worker (agent/media/worker.ts),
// which owns every RTP/RTCP socket. Small, structured-clone-able objects; the worker checks each
// command it receives (validCommand) since a bad one must never take the media plane down.
import type { G711Law } from "./g711.ts";
import { validDtmf } from "./dtmf-send.ts";
import type { Direction } from "./sdp.ts";

export interface WorkerConfig {
  /** Even first port of the RTP/RTCP pairs (RTP on even ports, RTCP on the next, RFC 3550 §11). */
  portMin: number;
  /** Last port of the range (inclusive). */
  portMax: number;
  /** RTCP CNAME (RFC 3550 §6.5.1). */
  cname: string;
}

export type MediaCommand =
  /** Read a WAV file into the worker's sound table under `sound`. */
  | { op: "load"; sound: string; path: string }
  /** Drop a sound from the worker's sound table (a voicemail message played to its listener). */
  | { op: "unload"; sound: string }
  /** Bind a port pair on `address` and prepare a stream toward the offer's address. */
  | { op: "open"; id: string; address: string; law: G711Law; payloadType: number; telephoneEvent: number | undefined; remoteAddress: string; remotePort: number; direction: Direction }
  /** Play a loaded sound from its start (replacing what plays now); `loop` repeats it seamlessly. */
  | { op: "play"; id: string; sound: string; loop: boolean }
  /** Stop what plays now (a caller's key cut a prompt short); no play-ended follows. */
  | { op: "stop"; id: string }
  /**
   * Play loaded sounds one after another from the first (replacing what plays now), each from
   * its start with the marker bit set; `loopLast` repeats the last one (e.g. prompts, then music).
   * play-ended is reported for each sound that ends.
   */
  | { op: "sequence"; id: string; sounds: string[]; loopLast: boolean }
  /**
   * Send DTMF digits as RFC 4733 telephone-events (dtmf-send.ts) on the negotiated payload type,
   * one after another, in place of the audio while they last; queued behind digits still going out.
   */
  | { op: "dtmf"; id: string; digits: string; durationMs: number }
  /** End the stream: RTCP BYE, sockets closed, ports free. */
  | { op: "close"; id: string }
  /**
   * Record what the far end sends (recorder.ts) into `tmpPath`, renamed to `finalPath` when it
   * stops: at maxMs, after silenceMs of silence (0 = never), on the RFC 4733 digit `stopDigit`,
   * on stop-record, or when the session closes.
   */
  | { op: "record"; id: string; tmpPath: string; finalPath: string; maxMs: number; silenceMs: number; stopDigit: string | undefined }
  /** Stop a recording now (the file is kept). */
  | { op: "stop-record"; id: string };

/** Why a recording stopped. */
export type RecordReason = "max-length" | "silence" | "digit" | "stopped" | "closed";

export interface SessionStats {
  packetsSent: number;
  packetsReceived: number;
  /** Datagrams refused as malformed RTP or RTCP, or of a payload type not negotiated. */
  badPackets: number;
  /** Frames dropped because the worker woke up too late to send them in time. */
  framesSkipped: number;
}

export type MediaEvent =
  | { ev: "ready" }
  | { ev: "loaded"; sound: string; frames: number }
  | { ev: "load-failed"; sound: string; reason: string }
  | { ev: "opened"; id: string; port: number }
  | { ev: "open-failed"; id: string; reason: string }
  /** The far end's first RTP packet came from here: we send there from now on (symmetric RTP). */
  | { ev: "latched"; id: string; address: string; port: number }
  | { ev: "digit"; id: string; digit: string }
  | { ev: "play-ended"; id: string; sound: string }
  /** A digit's last end packet went out (RFC 4733 §2.5.1.4). */
  | { ev: "dtmf-sent"; id: string; digit: string }
  | { ev: "recorded"; id: string; path: string; samples: number; bytes: number; sha256: string; reason: RecordReason }
  | { ev: "record-failed"; id: string; reason: string }
  | { ev: "closed"; id: string; stats: SessionStats }
  | { ev: "error"; message: string };

const LAWS = new Set(["PCMU", "PCMA"]);
const DIRS = new Set(["sendrecv", "sendonly", "recvonly", "inactive"]);
const isPort = (n: unknown): boolean => typeof n === "number" && Number.isInteger(n) && n > 0 && n < 65536;
const isPt = (n: unknown): boolean => typeof n === "number" && Number.isInteger(n) && n >= 0 && n <= 127;
const isId = (s: unknown): s is string => typeof s === "string" && s.length > 0 && s.length <= 128;
/** Most sounds in one sequence command. */
export const MAX_SEQUENCE = 32;
const isPath = (s: unknown): s is string => typeof s === "string" && s.startsWith("/") && s.length <= 4096 && !s.includes("\0");

/** Whether a message is a well-formed command (the worker ignores anything else). */
export function validCommand(m: unknown): m is MediaCommand {
  if (typeof m !== "object" || m === null) return false;
  const c = m as Record<string, unknown>;
  switch (c.op) {
    case "load":
      return isId(c.sound) && typeof c.path === "string" && c.path.length > 0;
    case "unload":
      return isId(c.sound);
    case "open":
      return (
        isId(c.id) &&
        typeof c.address === "string" &&
        LAWS.has(c.law as string) &&
        isPt(c.payloadType) &&
        (c.telephoneEvent === undefined || isPt(c.telephoneEvent)) &&
        typeof c.remoteAddress === "string" &&
        isPort(c.remotePort) &&
        DIRS.has(c.direction as string)
      );
    case "play":
      return isId(c.id) && isId(c.sound) && typeof c.loop === "boolean";
    case "sequence":
      return isId(c.id) && Array.isArray(c.sounds) && c.sounds.length > 0 && c.sounds.length <= MAX_SEQUENCE && c.sounds.every(isId) && typeof c.loopLast === "boolean";
    case "dtmf":
      return isId(c.id) && validDtmf(c.digits, c.durationMs);
    case "close":
    case "stop":
    case "stop-record":
      return isId(c.id);
    case "record":
      return (
        isId(c.id) &&
        isPath(c.tmpPath) &&
        isPath(c.finalPath) &&
        c.tmpPath !== c.finalPath &&
        typeof c.maxMs === "number" && Number.isInteger(c.maxMs) && c.maxMs > 0 && c.maxMs <= 3_600_000 &&
        typeof c.silenceMs === "number" && Number.isInteger(c.silenceMs) && c.silenceMs >= 0 && c.silenceMs <= 3_600_000 &&
        (c.stopDigit === undefined || (typeof c.stopDigit === "string" && /^[0-9*#A-D]$/.test(c.stopDigit)))
      );
    default:
      return false;
  }
}
