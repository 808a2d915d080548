// What every transaction shares: the state enum, the context the layer hands it, and the
// guarded call into TU code (a throwing callback must not corrupt a state machine or escape
// from a timer and crash the process).
import type { Flow, SipMessage, Transport } from "../types.ts";
import type { LingerOwner } from "./linger.ts";
import type { TimerValues } from "./timers.ts";

/**
 * States of RFC 3261 §17.1.1 / §17.1.2 / §17.2.1 / §17.2.2, with "Accepted" from RFC 6026 §7.
 * Each transaction class allows only its own subset (see its stateTransition()).
 */
export enum TransactionState {
  Calling = "Calling",
  Trying = "Trying",
  Proceeding = "Proceeding",
  Completed = "Completed",
  Confirmed = "Confirmed",
  Accepted = "Accepted",
  Terminated = "Terminated",
}

/** One index entry of a transaction in a map of the layer's (RFC 2543 transactions have several). */
export interface IndexEntry {
  map: Map<string, object>;
  key: string;
}

/**
 * The layer's bookkeeping, kept on each transaction (layer.ts reads and writes it, nothing
 * else): fields, not side maps keyed by the transaction, which cost a hash lookup, insert and
 * delete per transaction on the call path.
 */
export interface LayerIndexed {
  /** Where it is indexed: its one key in clients or servers (the common case), or its entries. */
  layerKeys: string | IndexEntry[] | undefined;
  /** The source address a server transaction is counted under, for per-source quotas. */
  layerSource: string | undefined;
}

/** What a transaction needs from its layer. */
export interface TransactionContext {
  readonly transport: Transport;
  encode(msg: SipMessage): Buffer;
  timers(reliable: boolean): TimerValues;
  /** INVITE server transactions send 100 (Trying) themselves after this many ms; false: never. */
  readonly tryingDelay: number | false;
  /** Called once when a transaction reaches Terminated, so the layer drops it from its maps. */
  terminated(tx: object): void;
  /**
   * A client transaction now only lingers to absorb retransmissions (Completed, Timer D or K):
   * it stays matched in the layer's maps but no longer counts against maxTransactions.
   */
  lingering(tx: object): void;
  /**
   * Ends owner's lingering (Timers D, I, J, K, L, M) at least ms from now, batched with the
   * other transactions that start lingering for ms at about the same time (linger.ts).
   */
  linger(owner: LingerOwner, ms: number): void;
  /** A TU callback threw; the transaction carried on. */
  callbackError(error: unknown, where: string): void;
}

/** Sends bytes on a flow; a transport that throws counts as a failed send (§17.1.4, §17.2.4). */
export function sendOn(ctx: TransactionContext, flow: Flow, data: Buffer): boolean {
  try {
    return ctx.transport.send(flow, data);
  } catch {
    return false;
  }
}

/** Whether the flow is reliable; a transport that throws is treated as unreliable (more timers, never fewer). */
export function isReliable(ctx: TransactionContext, flow: Flow): boolean {
  try {
    return ctx.transport.isReliable(flow);
  } catch {
    return false;
  }
}

/** Encodes a message; undefined when the encoder refuses it. */
export function encodeSafely(ctx: TransactionContext, msg: SipMessage): Buffer | undefined {
  try {
    return ctx.encode(msg);
  } catch {
    return undefined;
  }
}

/**
 * Bytes a lingering transaction keeps to resend (its ACK, its last final response), as a
 * latin1 string: one character per byte, so any bytes round-trip exactly. Not the Buffer: a
 * small Buffer is a slice of an 8 KB shared pool, which the slice would keep alive for Timer
 * D/J (32 s), and a Buffer of its own costs an ArrayBuffer, a backing store and their
 * bookkeeping (outside V8's heap, swept apart) for each of the tens of thousands that linger
 * at a few hundred calls a second. They are resent only when a retransmission arrives.
 */
export type KeptBytes = string;

export function keepBytes(data: Buffer): KeptBytes;
export function keepBytes(data: Buffer | undefined): KeptBytes | undefined;
export function keepBytes(data: Buffer | undefined): KeptBytes | undefined {
  return data === undefined ? undefined : data.toString("latin1");
}

/** Bytes to send: as they are, or made again from what a lingering transaction kept. */
export function bytesOf(data: Buffer | KeptBytes): Buffer {
  return typeof data === "string" ? Buffer.from(data, "latin1") : data;
}

export function invokeTu(ctx: TransactionContext, where: string, fn: () => void): void {
  try {
    fn();
  } catch (error) {
    ctx.callbackError(error, where);
  }
}

export class IllegalTransition extends Error {
  constructor(kind: string, from: TransactionState, to: TransactionState) {
    super(`${kind}: illegal state transition ${from} -> ${to}`);
  }
}
