// How long a datagram waits in a SIP UDP socket's kernel receive queue before the agent reads
// it: the backlog overload control steers by (sip/overload.ts). A probe is a small datagram the
// agent sends to its own SIP socket from a socket of its own; it joins the same first-in-first-out
// queue as every request and response from the phones, so the time from its send to its read is
// exactly the wait any of them has at that moment, the event loop's own delays included (a
// datagram is only read when the loop gets to it). Unlike the queue's fill in bytes, it needs no
// /proc, does not depend on the buffer's size or the kernel's per-datagram overhead, and reads in
// the unit the harm is in: a caller retransmits its INVITE after 500 ms (RFC 3261 T1).
//
// ProbeClock is the bookkeeping (pure, no I/O); the transport sends and reads the datagrams.
// A probe carries a random nonce chosen at start, so nothing from outside passes for one (and a
// loopback source address cannot arrive from another host: the kernel drops such packets).
import crypto from "node:crypto";

const MAGIC = Buffer.from("RGQPROBE", "latin1");
/** Bytes of a probe: magic, 8-byte nonce, 4-byte sequence number. */
export const PROBE_BYTES = MAGIC.length + 8 + 4;
/** Probes remembered unanswered at most (a stalled agent sends one per sample; older ones are the same news). */
const MAX_OUTSTANDING = 64;

export function probeNonce(): Buffer {
  return crypto.randomBytes(8);
}

export function probePayload(nonce: Buffer, seq: number): Buffer {
  const b = Buffer.alloc(PROBE_BYTES);
  MAGIC.copy(b, 0);
  nonce.copy(b, MAGIC.length, 0, 8);
  b.writeUInt32BE(seq >>> 0, MAGIC.length + 8);
  return b;
}

/** The sequence number of a probe carrying this nonce, or undefined for anything else. */
export function readProbe(data: Buffer, nonce: Buffer): number | undefined {
  if (data.length !== PROBE_BYTES) return undefined;
  if (!data.subarray(0, MAGIC.length).equals(MAGIC)) return undefined;
  if (!data.subarray(MAGIC.length, MAGIC.length + 8).equals(nonce)) return undefined;
  return data.readUInt32BE(MAGIC.length + 8);
}

/**
 * Send and read times of one socket's probes (ms, one monotonic clock). delayMs() is the wait of
 * the newest probe read, or, when a probe sent since is still unread, how long that one has been
 * waiting if that is longer: a queue that stops moving shows at once, not only once it moves.
 * A probe read means every earlier one still unread was dropped (the queue is first in, first
 * out; a full buffer drops datagrams), so they are forgotten.
 */
export class ProbeClock {
  private seq = 0;
  /** Unread probes, oldest first: sequence number and send time. */
  private readonly outstanding: Array<{ seq: number; at: number }> = [];
  private last: number | undefined;

  /** Registers a probe sent now; returns its sequence number. */
  sent(at: number): number {
    const seq = (this.seq = (this.seq + 1) >>> 0);
    this.outstanding.push({ seq, at });
    if (this.outstanding.length > MAX_OUTSTANDING) this.outstanding.shift();
    return seq;
  }

  /** A probe was read now; false when it is not one of ours still waiting (a duplicate, a stale one). */
  received(seq: number, at: number): boolean {
    const i = this.outstanding.findIndex((p) => p.seq === seq);
    if (i < 0) return false;
    this.last = Math.max(0, at - this.outstanding[i]!.at);
    this.outstanding.splice(0, i + 1);
    return true;
  }

  /** The queue's wait now, ms; undefined before any probe was read or sent. */
  delayMs(now: number): number | undefined {
    const oldest = this.outstanding[0];
    const waiting = oldest === undefined ? undefined : Math.max(0, now - oldest.at);
    if (waiting === undefined) return this.last;
    if (this.last === undefined) return waiting;
    return Math.max(this.last, waiting);
  }
}
