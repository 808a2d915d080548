// Server transactions: INVITE (RFC 3261 §17.2.1 as amended by RFC 6026 §7.1/§8.5-8.8) and
// non-INVITE (RFC 3261 §17.2.2). The layer (layer.ts) routes matching requests here; the TU
// answers through respond().
import { detached } from "../../strings.ts";
import type { Flow, SipRequest, SipResponse } from "../types.ts";
import { buildTrying } from "./build.ts";
import {
  IllegalTransition,
  TransactionState,
  bytesOf,
  keepBytes,
  encodeSafely,
  invokeTu,
  isReliable,
  sendOn,
  type IndexEntry,
  type KeptBytes,
  type LayerIndexed,
  type TransactionContext,
} from "./common.ts";
import { TimerSet, type TimerValues } from "./timers.ts";

export type ServerTransaction = InviteServerTransaction | NonInviteServerTransaction;

/** Optional TU hooks; set `tx.listener` after receiveRequest() hands the transaction over. */
export interface ServerTransactionListener {
  /** INVITE only: Timer H fired, the ACK for our non-2xx final response never came (§17.2.1). */
  onTimeout?(tx: ServerTransaction): void;
  /** A response could not be sent (§17.2.4). */
  onTransportError?(tx: ServerTransaction): void;
  /**
   * The TU hears nothing more from this transaction: it reached Terminated, or it lingers only
   * to absorb retransmissions (non-INVITE Completed under Timer J, INVITE Confirmed under Timer
   * I). Called once; the listener, and whatever it holds, is let go after it.
   */
  onTerminated?(tx: ServerTransaction): void;
}

export type RespondError = "invalid-status" | "invalid-state" | "encode-failed" | "transport-error";
export type RespondResult = { ok: true } | { ok: false; error: RespondError };

/** What a matching request retransmission (or ACK) turned out to be. */
export type ServerReceiveOutcome = "absorbed" | "ack-2xx";

function validStatus(status: number): boolean {
  return Number.isInteger(status) && status >= 100 && status <= 699;
}

abstract class ServerTransactionBase implements LayerIndexed {
  /** The layer's bookkeeping (LayerIndexed). */
  layerKeys: string | IndexEntry[] | undefined = undefined;
  layerSource: string | undefined = undefined;
  listener: ServerTransactionListener = {};
  protected stateValue: TransactionState;
  /** Where responses go: the flow of the latest copy of the request. */
  private flowValue: Flow;
  protected readonly reliable: boolean;
  protected readonly timerValues: TimerValues;
  readonly method: string;
  /**
   * The request that created the transaction, until it reaches a state that only absorbs
   * (Completed, Confirmed, Accepted): from then on only its matching key (in the layer) and the
   * encoded bytes to resend are kept, so lingering transactions hold no parsed messages.
   */
  private requestValue: SipRequest | undefined;
  /** Wire bytes of the most recent provisional response, resent on request retransmission. */
  protected lastProvisional: Buffer | undefined;
  /** Wire bytes of the final response, resent on request retransmission (and Timer G); kept as
   *  a string once the transaction only absorbs (keepBytes). */
  protected lastFinal: Buffer | KeptBytes | undefined;
  /** To tags of every final response sent, for RFC 2543 ACK matching (§17.2.3); usually one. */
  private finalToTags: string | Set<string> | undefined;
  /** onTerminated has been called (Terminated, or lingering only to absorb). */
  private listenerReleased = false;

  constructor(
    protected readonly ctx: TransactionContext,
    request: SipRequest,
    flow: Flow,
    initial: TransactionState,
  ) {
    this.requestValue = request;
    this.method = request.method;
    this.flowValue = flow;
    this.stateValue = initial;
    this.reliable = isReliable(ctx, flow);
    this.timerValues = ctx.timers(this.reliable);
  }

  get state(): TransactionState {
    return this.stateValue;
  }

  /** The request that created the transaction; undefined once it only absorbs retransmissions. */
  get request(): SipRequest | undefined {
    return this.requestValue;
  }

  get flow(): Flow {
    return this.flowValue;
  }

  /**
   * A retransmission arrived on this flow. Responses follow the latest one: a phone that lost
   * its TCP connection retransmits on a new one (§18.2.2 sends responses back over the
   * connection the request came on), and a UDP copy tells where the peer is now.
   * Reliability is fixed at creation (its timers are already running).
   */
  noteFlow(flow: Flow): void {
    if (flow.transport === this.flowValue.transport) this.flowValue = flow;
  }

  /** The To tag of the (first) final response sent; undefined before any. */
  get finalToTag(): string | undefined {
    const tags = this.finalToTags;
    return tags === undefined || typeof tags === "string" ? tags : tags.values().next().value;
  }

  /** RFC 2543 ACK matching: whether a final response with this To tag went out. */
  sentFinalWithToTag(tag: string | undefined): boolean {
    const t = tag ?? "";
    const tags = this.finalToTags;
    return tags === undefined ? false : typeof tags === "string" ? tags === t : tags.has(t);
  }

  /** The layer's close(): stop everything without telling anyone. */
  abstract dispose(): void;
  abstract respond(res: SipResponse): RespondResult;
  abstract receive(req: SipRequest): ServerReceiveOutcome;

  protected send(data: Buffer): boolean {
    return sendOn(this.ctx, this.flowValue, data);
  }

  protected encode(res: SipResponse): Buffer | undefined {
    return encodeSafely(this.ctx, res);
  }

  protected rememberFinal(res: SipResponse, data: Buffer): void {
    this.lastFinal = data;
    this.noteFinalTag(res);
  }

  protected noteFinalTag(res: SipResponse): void {
    // A copy: a slice would keep the whole response's text while the transaction lingers.
    const tag = detached(res.to.tag ?? "");
    const tags = this.finalToTags;
    if (tags === undefined) this.finalToTags = tag;
    else if (typeof tags === "string") {
      if (tags !== tag) this.finalToTags = new Set([tags, tag]);
    } else tags.add(tag);
  }

  /** Tells the TU once, then lets go of its listener (and whatever the listener holds). */
  protected notifyTerminated(): void {
    if (this.listenerReleased) return;
    this.listenerReleased = true;
    const listener = this.listener;
    this.listener = {};
    invokeTu(this.ctx, "server onTerminated", () => listener.onTerminated?.(this as unknown as ServerTransaction));
  }

  /**
   * The transaction now only absorbs: drop the parsed request and the provisional bytes
   * (never resent again); `keepFinal` false also drops the final response's bytes.
   */
  protected release(keepFinal: boolean): void {
    this.requestValue = undefined;
    this.lastProvisional = undefined;
    const last = this.lastFinal;
    this.lastFinal = keepFinal && last !== undefined ? (typeof last === "string" ? last : keepBytes(last)) : undefined;
  }
}

/** The INVITE server transaction's own timers; I and L, which end its lingering, run in batches (ctx.linger). */
type InviteServerTimer = "G" | "H" | "Trying";

/**
 * INVITE server transaction.
 *
 * ```
 * Proceeding --1xx--> Proceeding
 * Proceeding --2xx--> Accepted   --Timer L--> Terminated          (RFC 6026 §8.5, §8.7)
 * Proceeding --300-699--> Completed --ACK--> Confirmed --Timer I--> Terminated
 *                         Completed --Timer H--> Terminated (TU told)
 * ```
 */
export class InviteServerTransaction extends ServerTransactionBase {
  readonly kind = "invite" as const;
  private readonly timers: TimerSet<InviteServerTimer> = new TimerSet<InviteServerTimer>(this);
  /** Current Timer G interval. */
  private intervalG: number;

  /**
   * RFC 3261 §17.2.1: "When a server transaction is constructed for a request, it enters the
   * "Proceeding" state. The server transaction MUST generate a 100 (Trying) response unless it
   * knows that the TU will generate a provisional or final response within 200 ms".
   */
  constructor(ctx: TransactionContext, request: SipRequest, flow: Flow) {
    super(ctx, request, flow, TransactionState.Proceeding);
    this.intervalG = this.timerValues.G;
    if (ctx.tryingDelay !== false) {
      this.timers.start("Trying", ctx.tryingDelay);
    }
  }

  /** The transaction's timers fire here (TimerSet). */
  onTimer(name: InviteServerTimer): void {
    switch (name) {
      case "Trying":
        return this.sendTrying();
      case "G":
        return this.timerG();
      case "H":
        return this.timerH();
    }
  }

  /** Timer I (Confirmed) or L (Accepted) ran out (ctx.linger). */
  lingerExpired(): void {
    // §17.2.1: "Once timer I fires, the server MUST transition to the "Terminated" state."
    // RFC 6026 §8.7: "If Timer L fires while the state machine is in the "Accepted" state, the
    // machine MUST transition to the "Terminated" state."
    if (this.stateValue === TransactionState.Confirmed || this.stateValue === TransactionState.Accepted) this.stateTransition(TransactionState.Terminated);
  }

  private sendTrying(): void {
    const req = this.request;
    if (this.stateValue !== TransactionState.Proceeding || this.lastProvisional !== undefined || req === undefined) return;
    const data = this.encode(buildTrying(req));
    if (data === undefined) return;
    this.lastProvisional = data;
    if (!this.send(data)) this.transportError();
  }

  respond(res: SipResponse): RespondResult {
    if (res.kind !== "response" || !validStatus(res.status)) return { ok: false, error: "invalid-status" };
    const state = this.stateValue;
    if (state === TransactionState.Proceeding) {
      const data = this.encode(res);
      if (data === undefined) return { ok: false, error: "encode-failed" };
      this.timers.stop("Trying");
      if (res.status < 200) {
        // §17.2.1: "The TU passes any number of provisional responses to the server
        // transaction. So long as the server transaction is in the "Proceeding" state, each of
        // these MUST be passed to the transport layer for transmission."
        this.lastProvisional = data;
      } else if (res.status < 300) {
        // RFC 6026 §8.5: on a 2xx from the TU the transaction "MUST pass this response to the
        // transport layer for transmission ... [and] MUST then transition to the "Accepted"
        // state". It does not retransmit it: the UAS core does (§13.3.1.4).
        this.rememberFinal(res, data);
        this.stateTransition(TransactionState.Accepted);
      } else {
        // §17.2.1: 300-699 from the TU: "the response MUST be passed to the transport layer for
        // transmission, and the state machine MUST enter the "Completed" state".
        this.rememberFinal(res, data);
        this.stateTransition(TransactionState.Completed);
      }
      return this.sendOrFail(data);
    }
    if (state === TransactionState.Accepted && res.status >= 200 && res.status < 300) {
      // RFC 6026 §8.7: "While in the "Accepted" state, if the TU passes a 2xx response, the
      // server transaction MUST pass the response to the transport layer for transmission."
      // (A UAS core retransmitting its 2xx, or a proxy forwarding 2xx from other forks.)
      const data = this.encode(res);
      if (data === undefined) return { ok: false, error: "encode-failed" };
      // Accepted never resends on its own (RFC 6026 §7.1): only the To tag is kept.
      this.noteFinalTag(res);
      return this.sendOrFail(data);
    }
    return { ok: false, error: "invalid-state" };
  }

  receive(req: SipRequest): ServerReceiveOutcome {
    const isAck = req.method === "ACK";
    switch (this.stateValue) {
      case TransactionState.Proceeding:
        // §17.2.1: "If a request retransmission is received while in the "Proceeding" state,
        // the most recent provisional response that was received from the TU MUST be passed
        // to the transport layer for retransmission."
        if (!isAck && this.lastProvisional !== undefined && !this.send(this.lastProvisional)) this.transportError();
        // An ACK before any final response acknowledges nothing: dropped.
        return "absorbed";
      case TransactionState.Completed:
        if (isAck) {
          // §17.2.1: "If an ACK is received while the server transaction is in the
          // "Completed" state, the server transaction MUST transition to the "Confirmed" state."
          this.stateTransition(TransactionState.Confirmed);
          return "absorbed";
        }
        // §17.2.1: "while in the "Completed" state, if a request retransmission is received,
        // the server SHOULD pass the response to the transport for retransmission."
        if (this.lastFinal !== undefined && !this.send(bytesOf(this.lastFinal))) this.transportError();
        return "absorbed";
      case TransactionState.Confirmed:
        // §17.2.1: "The purpose of the "Confirmed" state is to absorb any additional ACK
        // messages that arrive, triggered from retransmissions of the final response."
        return "absorbed";
      case TransactionState.Accepted:
        // RFC 6026 §7.1: "any retransmissions of the INVITE received will match this
        // transaction state machine and will be absorbed by the machine without changing its
        // state. These retransmissions are not passed onto the TU." An ACK that matches here
        // (RFC 2543 peers reuse the INVITE's Via) acknowledges the 2xx: it belongs to the TU.
        return isAck ? "ack-2xx" : "absorbed";
      default:
        return "absorbed";
    }
  }

  dispose(): void {
    this.timers.stopAll();
    this.stateValue = TransactionState.Terminated;
  }

  private sendOrFail(data: Buffer): RespondResult {
    if (this.send(data)) return { ok: true };
    this.transportError();
    return { ok: false, error: "transport-error" };
  }

  /**
   * §17.2.4: "the server transaction SHOULD inform the TU that a failure has occurred, and
   * SHOULD transition to the terminated state"; RFC 6026 §8.8: in "Accepted" it "MUST remain
   * in the current state".
   * FIXME: the RFC 3263 §5 backup-address procedure that comes first is not implemented.
   */
  private transportError(): void {
    invokeTu(this.ctx, "server onTransportError", () => this.listener.onTransportError?.(this));
    if (this.stateValue !== TransactionState.Accepted && this.stateValue !== TransactionState.Terminated) {
      this.stateTransition(TransactionState.Terminated);
    }
  }

  /** §17.2.1: Timer G retransmits the final response, doubling up to T2. */
  private timerG(): void {
    if (this.stateValue !== TransactionState.Completed || this.lastFinal === undefined) return;
    // "If timer G fires, the response is passed to the transport layer once more for
    // retransmission, and timer G is set to fire in MIN(2*T1, T2) seconds. From then on, when
    // timer G fires, the timer is reset to double the value, capped at T2."
    if (!this.send(bytesOf(this.lastFinal))) {
      this.transportError();
      return;
    }
    this.intervalG = Math.min(2 * this.intervalG, this.timerValues.T2);
    this.timers.start("G", this.intervalG);
  }

  /**
   * §17.2.1: "If timer H fires while in the "Completed" state, it implies that the ACK was
   * never received. In this case, the server transaction MUST transition to the "Terminated"
   * state, and MUST indicate to the TU that a transaction failure has occurred."
   */
  private timerH(): void {
    if (this.stateValue !== TransactionState.Completed) return;
    const listener = this.listener; // Terminated lets go of it
    this.stateTransition(TransactionState.Terminated);
    invokeTu(this.ctx, "server onTimeout", () => listener.onTimeout?.(this));
  }

  private stateTransition(next: TransactionState): void {
    const from = this.stateValue;
    const legal =
      (next === TransactionState.Accepted && from === TransactionState.Proceeding) ||
      (next === TransactionState.Completed && from === TransactionState.Proceeding) ||
      (next === TransactionState.Confirmed && from === TransactionState.Completed) ||
      (next === TransactionState.Terminated && from !== TransactionState.Terminated);
    if (!legal) throw new IllegalTransition("INVITE server transaction", from, next);
    this.stateValue = next;

    switch (next) {
      case TransactionState.Accepted:
        // RFC 6026 §7.1: retransmissions of the INVITE are absorbed without a response, and
        // further 2xx come encoded from the TU: nothing of the request is needed any more.
        this.release(false);
        // RFC 6026 §8.7: "the server transaction MUST ... start timer L with a value of 64*T1".
        this.ctx.linger(this, this.timerValues.L);
        break;
      case TransactionState.Completed:
        // Only the final response's bytes are resent from here on (request retransmissions, G).
        this.release(true);
        // §17.2.1: "When the "Completed" state is entered, timer H MUST be set to fire in
        // 64*T1 seconds for all transports. ... For unreliable transports, timer G is set to
        // fire in T1 seconds, and is not set to fire for reliable transports."
        if (!this.reliable) this.timers.start("G", this.intervalG);
        this.timers.start("H", this.timerValues.H);
        break;
      case TransactionState.Confirmed:
        // §17.2.1: "timer G is ignored ... timer I is set to fire in T4 seconds for unreliable
        // transports, and zero seconds for reliable transports." Confirmed absorbs ACKs only.
        this.timers.stop("G");
        this.timers.stop("H");
        this.release(false);
        if (this.timerValues.I === 0) {
          this.stateTransition(TransactionState.Terminated);
        } else {
          this.ctx.linger(this, this.timerValues.I);
          // Confirmed only absorbs ACKs: the TU is done with it.
          this.notifyTerminated();
        }
        break;
      case TransactionState.Terminated:
        this.timers.stopAll();
        this.release(false);
        this.ctx.terminated(this);
        this.notifyTerminated();
        break;
      default:
        break;
    }
  }
}

/**
 * Non-INVITE server transaction, RFC 3261 §17.2.2.
 *
 * ```
 * Trying --1xx--> Proceeding --1xx--> Proceeding
 * Trying|Proceeding --200-699--> Completed --Timer J--> Terminated
 * ```
 */
export class NonInviteServerTransaction extends ServerTransactionBase {
  readonly kind = "non-invite" as const;

  /** §17.2.2: "The state machine is initialized in the "Trying" state". */
  constructor(ctx: TransactionContext, request: SipRequest, flow: Flow) {
    super(ctx, request, flow, TransactionState.Trying);
  }

  /** Timer J, its only timer, ran out (ctx.linger). */
  lingerExpired(): void {
    // §17.2.2: "The server transaction remains in this state until Timer J fires, at which
    // point it MUST transition to the "Terminated" state."
    if (this.stateValue === TransactionState.Completed) this.stateTransition(TransactionState.Terminated);
  }

  respond(res: SipResponse): RespondResult {
    if (res.kind !== "response" || !validStatus(res.status)) return { ok: false, error: "invalid-status" };
    const state = this.stateValue;
    if (state !== TransactionState.Trying && state !== TransactionState.Proceeding) {
      // §17.2.2: "Any other final responses passed by the TU to the server transaction MUST
      // be discarded while in the "Completed" state."
      return { ok: false, error: "invalid-state" };
    }
    const data = this.encode(res);
    if (data === undefined) return { ok: false, error: "encode-failed" };
    if (res.status < 200) {
      // §17.2.2: "While in the "Trying" state, if the TU passes a provisional response to the
      // server transaction, the server transaction MUST enter the "Proceeding" state." In
      // "Proceeding", "Any further provisional responses ... MUST be passed to the transport".
      this.lastProvisional = data;
      if (state === TransactionState.Trying) this.stateTransition(TransactionState.Proceeding);
    } else {
      // §17.2.2: a final response from the TU moves Trying or Proceeding to "Completed".
      this.rememberFinal(res, data);
      this.stateTransition(TransactionState.Completed);
    }
    if (this.send(data)) {
      // Timer J of zero (reliable) terminates right after the final response went out.
      if (this.stateValue === TransactionState.Completed) {
        if (this.timerValues.J === 0) this.stateTransition(TransactionState.Terminated);
        // Completed only resends the final response: the TU is done with it.
        else this.notifyTerminated();
      }
      return { ok: true };
    }
    this.transportError();
    return { ok: false, error: "transport-error" };
  }

  receive(_req: SipRequest): ServerReceiveOutcome {
    switch (this.stateValue) {
      case TransactionState.Trying:
        // §17.2.2: "Once in the "Trying" state, any further request retransmissions are discarded."
        return "absorbed";
      case TransactionState.Proceeding:
        // §17.2.2: "If a retransmission of the request is received while in the "Proceeding"
        // state, the most recently sent provisional response MUST be passed to the transport
        // layer for retransmission."
        if (this.lastProvisional !== undefined && !this.send(this.lastProvisional)) this.transportError();
        return "absorbed";
      case TransactionState.Completed:
        // §17.2.2: "While in the "Completed" state, the server transaction MUST pass the final
        // response to the transport layer for retransmission whenever a retransmission of the
        // request is received."
        if (this.lastFinal !== undefined && !this.send(bytesOf(this.lastFinal))) this.transportError();
        return "absorbed";
      default:
        return "absorbed";
    }
  }

  dispose(): void {
    // Timer J's batch still holds it until the batch ends; lingerExpired then finds it Terminated.
    this.stateValue = TransactionState.Terminated;
  }

  /** §17.2.4: inform the TU and move to "Terminated". */
  private transportError(): void {
    invokeTu(this.ctx, "server onTransportError", () => this.listener.onTransportError?.(this));
    if (this.stateValue !== TransactionState.Terminated) this.stateTransition(TransactionState.Terminated);
  }

  private stateTransition(next: TransactionState): void {
    const from = this.stateValue;
    const legal =
      (next === TransactionState.Proceeding && from === TransactionState.Trying) ||
      (next === TransactionState.Completed && (from === TransactionState.Trying || from === TransactionState.Proceeding)) ||
      (next === TransactionState.Terminated && from !== TransactionState.Terminated);
    if (!legal) throw new IllegalTransition("non-INVITE server transaction", from, next);
    this.stateValue = next;

    if (next === TransactionState.Completed) {
      // Completed only resends the final response's bytes (§17.2.2).
      this.release(true);
      if (this.timerValues.J > 0) {
        // §17.2.2: "When the server transaction enters the "Completed" state, it MUST set Timer
        // J to fire in 64*T1 seconds for unreliable transports, and zero seconds for reliable
        // transports." (Zero is handled by the caller once the response is on the wire.)
        this.ctx.linger(this, this.timerValues.J);
      }
    } else if (next === TransactionState.Terminated) {
      this.release(false);
      this.ctx.terminated(this);
      this.notifyTerminated();
    }
  }
}
