// Client transactions: INVITE (RFC 3261 §17.1.1 as amended by RFC 6026 §7.2/§8.4, plus the
// proxy's Timer C of §16.6 step 11 / §16.7 step 2 / §16.8) and non-INVITE (§17.1.2).
// The layer (layer.ts) creates them in sendRequest() and routes matching responses here.
import type { Flow, SipHeader, SipRequest, SipResponse } from "../types.ts";
import { detached } from "../../strings.ts";
import { buildAck, buildTimeout, rebuildAck } from "./build.ts";
import {
  IllegalTransition,
  TransactionState,
  encodeSafely,
  invokeTu,
  isReliable,
  sendOn,
  type IndexEntry,
  type LayerIndexed,
  type TransactionContext,
} from "./common.ts";
import { TimerSet, type TimerValues } from "./timers.ts";

export type ClientTransaction = InviteClientTransaction | NonInviteClientTransaction;

/** Which timer ended the transaction without a final response. */
export type TimeoutTimer = "B" | "C" | "F";

/** What the TU hears from a client transaction. Each callback fires at most once per event. */
export interface ClientTransactionCallbacks {
  /** A 1xx that the TU must see (§17.1.1.2, §17.1.2.2). */
  onProvisional?(res: SipResponse, tx: ClientTransaction): void;
  /** A final response. For INVITE: every 2xx (forks, retransmissions: RFC 6026 §8.4), and the
   *  first 300-699 only (its retransmissions are absorbed and re-ACKed here). */
  onFinal(res: SipResponse, tx: ClientTransaction): void;
  /** Timer B, F or C fired with no final response; `res` is a locally synthesized 408. */
  onTimeout(res: SipResponse, tx: ClientTransaction, timer: TimeoutTimer): void;
  /** The request (or ACK) could not be (re)sent; the transaction is terminated (§17.1.4). */
  onTransportError(tx: ClientTransaction): void;
  /**
   * Proxy only (§16.8): Timer C fired after a provisional response. The proxy "MUST generate a
   * CANCEL request matching that transaction" (buildCancel) and may restartTimerC() to bound
   * the wait for the 487, or terminate(). Without this callback the transaction times out
   * with a 408, as when no provisional response arrived.
   */
  onTimerC?(tx: InviteClientTransaction): void;
  /**
   * The TU hears nothing more from this transaction: it reached Terminated, or it lingers in
   * Completed only to absorb response retransmissions (and resend its ACK), which the TU never
   * sees (Timer D or K, §17.1.1.2, §17.1.2.2). Called once; the callbacks, and whatever they
   * hold of the TU's state, are let go after it.
   */
  onTerminated?(tx: ClientTransaction): void;
}

export interface SendRequestOptions {
  /** INVITE only: Timer C in ms (§16.6 step 11), or false for a UA that does not want it. */
  timerC?: number | false;
}

/** What a matching response did. */
export type ClientReceiveOutcome = "delivered" | "absorbed";

/** An INVITE without Route header fields: what its lingering transaction keeps of them. */
const NO_ROUTES: readonly SipHeader[] = Object.freeze([]);

/** What a terminated transaction calls: nothing (the TU's callbacks are let go). */
const NO_CALLBACKS: ClientTransactionCallbacks = Object.freeze({ onFinal: () => undefined, onTimeout: () => undefined, onTransportError: () => undefined });

abstract class ClientTransactionBase implements LayerIndexed {
  /** The layer's bookkeeping (LayerIndexed). */
  layerKeys: string | IndexEntry[] | undefined = undefined;
  layerSource: string | undefined = undefined;
  protected stateValue: TransactionState;
  protected readonly reliable: boolean;
  protected readonly timerValues: TimerValues;
  readonly method: string;
  /**
   * The request on the wire, kept for retransmission while it may be retransmitted (Calling,
   * Trying, Proceeding); released with the parsed request once the transaction only absorbs.
   */
  protected wire: Buffer | undefined;
  private requestValue: SipRequest | undefined;
  /** Lingering in Completed to absorb retransmissions, the TU told it is done (ctx.lingering). */
  private lingeringValue = false;

  constructor(
    protected readonly ctx: TransactionContext,
    request: SipRequest,
    readonly flow: Flow,
    wire: Buffer,
    protected callbacks: ClientTransactionCallbacks,
    initial: TransactionState,
  ) {
    this.stateValue = initial;
    this.requestValue = request;
    this.method = request.method;
    this.wire = wire;
    this.reliable = isReliable(ctx, flow);
    this.timerValues = ctx.timers(this.reliable);
  }

  get state(): TransactionState {
    return this.stateValue;
  }

  /** Whether it only lingers in Completed to absorb retransmissions (the TU has been told it is done). */
  get lingering(): boolean {
    return this.lingeringValue;
  }

  /** The request sent; undefined once the transaction has its final response or ended. */
  get request(): SipRequest | undefined {
    return this.requestValue;
  }

  /** Sends the request for the first time; false when the transport refused it. */
  abstract start(): boolean;
  abstract receive(res: SipResponse): ClientReceiveOutcome;
  /** The layer's close(): stop everything without telling anyone. */
  abstract dispose(): void;

  protected send(data: Buffer): boolean {
    return sendOn(this.ctx, this.flow, data);
  }

  protected tu(where: string, fn: (cb: ClientTransactionCallbacks) => void): void {
    invokeTu(this.ctx, where, () => fn(this.callbacks));
  }

  /** Absorbing from now on: the parsed request and its bytes are never needed again. */
  protected release(): void {
    this.requestValue = undefined;
    this.wire = undefined;
  }

  /**
   * Terminated, or lingering in Completed: tell the TU once, then let go of its callbacks (and
   * what they hold: a call's whole state would otherwise live on for Timer D's 32 s).
   */
  protected notifyTerminated(tx: ClientTransaction): void {
    this.release();
    const callbacks = this.callbacks;
    if (callbacks === NO_CALLBACKS) return;
    this.callbacks = NO_CALLBACKS;
    if (this.stateValue !== TransactionState.Terminated) {
      this.lingeringValue = true;
      this.ctx.lingering(tx);
    }
    invokeTu(this.ctx, "onTerminated", () => callbacks.onTerminated?.(tx));
  }
}

/** The INVITE client transaction's own timers; D and M, which end its lingering, run in batches (ctx.linger). */
type InviteClientTimer = "A" | "B" | "C";

/**
 * INVITE client transaction.
 *
 * ```
 * Calling --1xx--> Proceeding --1xx--> Proceeding
 * Calling|Proceeding --2xx--> Accepted --Timer M--> Terminated     (RFC 6026 §8.4)
 * Calling|Proceeding --300-699 / send ACK--> Completed --Timer D--> Terminated
 * Calling --Timer B--> Terminated (408 to TU)
 * ```
 */
export class InviteClientTransaction extends ClientTransactionBase {
  readonly kind = "invite" as const;
  private readonly timers: TimerSet<InviteClientTimer> = new TimerSet<InviteClientTimer>(this);
  /** Current Timer A interval. */
  private intervalA: number;
  /** Timer A's intervals run so far: when Timer B is due, counted from the first send. */
  private elapsedA = 0;
  /** Timer C duration, or false when disabled. */
  private readonly durationC: number | false;
  /**
   * What the ACK for the non-2xx final response is made again from for each retransmission of
   * it (rebuildAck): the INVITE's Request-URI and Route header fields. The URI is kept as it is:
   * a fork's is its binding's contact, which lives on anyway (a copy of each cost 93 bytes a
   * branch); only when a forwarded request is refused may it pin that request's text for Timer
   * D. Routes (rare) are copies. No Route fields: an empty list, shared.
   */
  private ackUri: string | undefined;
  private ackRoutes: readonly SipHeader[] = NO_ROUTES;
  private provisionalSeen = false;

  constructor(
    ctx: TransactionContext,
    request: SipRequest,
    flow: Flow,
    wire: Buffer,
    callbacks: ClientTransactionCallbacks,
    options: SendRequestOptions,
  ) {
    // §17.1.1.2: "The initial state, "calling", MUST be entered when the TU initiates a new
    // client transaction with an INVITE request."
    super(ctx, request, flow, wire, callbacks, TransactionState.Calling);
    this.intervalA = this.timerValues.A;
    const c = options.timerC;
    this.durationC = c === false ? false : c !== undefined && Number.isFinite(c) && c >= 0 ? c : this.timerValues.C;
  }

  start(): boolean {
    if (this.wire === undefined || !this.send(this.wire)) return false;
    // §17.1.1.2: "If an unreliable transport is being used, the client transaction MUST start
    // timer A with a value of T1. ... For any transport, the client transaction MUST start
    // timer B with a value of 64*T1 seconds."
    this.armAorB();
    // §16.6 step 11: "If the request is an INVITE, the proxy MUST ... set Timer C".
    this.startTimerC();
    return true;
  }

  /** §16.8: after Timer C fired, the proxy may "reset the timer with any value it chooses". */
  restartTimerC(ms?: number): boolean {
    if (this.stateValue !== TransactionState.Calling && this.stateValue !== TransactionState.Proceeding) return false;
    const duration = ms !== undefined && Number.isFinite(ms) && ms >= 0 ? ms : this.durationC;
    if (duration === false) return false;
    this.timers.start("C", duration);
    return true;
  }

  /** §16.8: "... or terminate the client transaction." No further callbacks. */
  terminate(): void {
    if (this.stateValue !== TransactionState.Terminated) this.stateTransition(TransactionState.Terminated);
  }

  receive(res: SipResponse): ClientReceiveOutcome {
    const status = res.status;
    switch (this.stateValue) {
      case TransactionState.Calling:
      case TransactionState.Proceeding:
        if (status < 200) {
          // §17.1.1.2: "If the client transaction receives a provisional response while in the
          // "Calling" state, it transitions to the "Proceeding" state. ... Furthermore, the
          // provisional response MUST be passed to the TU. Any further provisional responses
          // MUST be passed up to the TU while in the "Proceeding" state."
          if (this.stateValue === TransactionState.Calling) this.stateTransition(TransactionState.Proceeding);
          // §16.7 step 2: "If the response is a provisional response other than 100, the proxy
          // MUST reset timer C for that client transaction."
          // Any 1xx (even 100) counts as "received a provisional response" for §16.8: a
          // CANCEL may follow it (§9.1).
          this.provisionalSeen = true;
          if (status > 100) this.startTimerC();
          this.tu("onProvisional", (cb) => cb.onProvisional?.(res, this));
          return "delivered";
        }
        if (status < 300) {
          // RFC 6026 §8.4: "When a 2xx response is received while in either the "Calling" or
          // "Proceeding" states, the client transaction MUST transition to the "Accepted"
          // state, and Timer M MUST be started with a value of 64*T1 seconds. The 2xx response
          // MUST be passed up to the TU. The client transaction MUST NOT generate an ACK".
          this.stateTransition(TransactionState.Accepted);
          this.tu("onFinal", (cb) => cb.onFinal(res, this));
          return "delivered";
        }
        // §17.1.1.2: "a response with status code from 300-699 MUST cause the client
        // transaction to transition to "Completed". The client transaction MUST pass the
        // received response up to the TU, and the client transaction MUST generate an ACK
        // request, even if the transport is reliable ... The ACK MUST be sent to the same
        // address, port, and transport to which the original request was sent."
        this.stateTransition(TransactionState.Completed);
        const ack = this.buildAckBytes(res);
        this.keepAckTarget();
        // Completed only resends this ACK (§17.1.1.2): the request is not needed any more.
        this.release();
        const acked = ack === undefined || this.send(ack);
        this.tu("onFinal", (cb) => cb.onFinal(res, this));
        if (acked) this.enterCompletedTimers();
        else this.transportError();
        // Completed only re-ACKs retransmissions: the TU is done with it.
        if (this.state === TransactionState.Completed) this.notifyTerminated(this);
        return "delivered";
      case TransactionState.Completed:
        // §17.1.1.2: "Any retransmissions of the final response that are received while in
        // the "Completed" state MUST cause the ACK to be re-passed to the transport layer for
        // retransmission, but the newly received response MUST NOT be passed up to the TU."
        if (status >= 300 && this.ackUri !== undefined) {
          const again = rebuildAck(this.ackUri, this.ackRoutes, res);
          const bytes = again === undefined ? undefined : encodeSafely(this.ctx, again);
          if (bytes !== undefined && !this.send(bytes)) this.transportError();
        }
        return "absorbed";
      case TransactionState.Accepted:
        // RFC 6026 §8.4: "Any 2xx responses that match this client transaction and that are
        // received while in the "Accepted" state MUST be passed up to the TU. The client
        // transaction MUST NOT generate an ACK to the 2xx response."
        if (status >= 200 && status < 300) {
          this.tu("onFinal", (cb) => cb.onFinal(res, this));
          return "delivered";
        }
        return "absorbed";
      default:
        return "absorbed";
    }
  }

  dispose(): void {
    this.timers.stopAll();
    this.stateValue = TransactionState.Terminated;
  }

  /** Keeps what rebuildAck needs of the INVITE, which release() lets go of next. */
  private keepAckTarget(): void {
    const req = this.request;
    if (req === undefined) return;
    this.ackUri = req.uri;
    let routes: SipHeader[] | undefined;
    for (const line of req.headers) if (line.name === "route") (routes ??= []).push({ name: "route", value: detached(line.value) });
    if (routes !== undefined) this.ackRoutes = routes;
  }

  private buildAckBytes(res: SipResponse): Buffer | undefined {
    const req = this.request;
    const ack = req === undefined ? undefined : buildAck(req, res);
    return ack === undefined ? undefined : encodeSafely(this.ctx, ack);
  }

  /** Timer C from now (the first fork, and every provisional response but 100: §16.7 step 2). */
  private startTimerC(): void {
    if (this.durationC === false) return;
    this.timers.restart("C", this.durationC);
  }

  /** The transaction's timers fire here (TimerSet). */
  onTimer(name: InviteClientTimer): void {
    switch (name) {
      case "A":
        return this.timerA();
      case "B":
        return this.timerB();
      case "C":
        return this.timerC();
    }
  }

  /** Timer D (Completed) or M (Accepted) ran out (ctx.linger). */
  lingerExpired(): void {
    // §17.1.1.2: "If timer D fires while the client transaction is in the "Completed" state,
    // the client transaction MUST move to the terminated state." RFC 6026 §8.4: "If timer M
    // fires and the state machine is in the "Accepted" state, the machine MUST transition to
    // the "Terminated" state."
    if (this.stateValue === TransactionState.Completed || this.stateValue === TransactionState.Accepted) this.stateTransition(TransactionState.Terminated);
  }

  /**
   * Timers A and B as one Node timer: they start together and stop together (Proceeding, a
   * final response, an error), so the transaction runs whichever comes next: A while its next
   * retransmission falls before B's 64*T1 from the first send, then B for the rest. (On a tie
   * B goes first, as two timers set in that order would.) Half the timer objects per fork.
   */
  private armAorB(): void {
    if (!this.reliable && this.elapsedA + this.intervalA < this.timerValues.B) {
      this.timers.start("A", this.intervalA);
    } else {
      this.timers.start("B", this.timerValues.B - this.elapsedA);
    }
  }

  /** §17.1.1.2: Timer A retransmits the INVITE in "Calling", doubling each time. */
  private timerA(): void {
    if (this.stateValue !== TransactionState.Calling || this.wire === undefined) return;
    // "When timer A fires, the client transaction MUST retransmit the request by passing it to
    // the transport layer, and MUST reset the timer with a value of 2*T1. ... When timer A
    // fires 2*T1 seconds later, the request MUST be retransmitted again ... (4*T1)".
    if (!this.send(this.wire)) {
      this.transportError();
      return;
    }
    this.elapsedA += this.intervalA;
    this.intervalA *= 2;
    this.armAorB();
  }

  /**
   * §17.1.1.2: "If the client transaction is still in the "Calling" state when timer B fires,
   * the client transaction SHOULD inform the TU that a timeout has occurred. The client
   * transaction MUST NOT generate an ACK."
   */
  private timerB(): void {
    if (this.stateValue !== TransactionState.Calling) return;
    this.timeout("B");
  }

  /**
   * §16.8: "If timer C should fire, the proxy MUST either reset the timer with any value it
   * chooses, or terminate the client transaction. If the client transaction has received a
   * provisional response, the proxy MUST generate a CANCEL request matching that transaction.
   * If the client transaction has not received a provisional response, the proxy MUST behave
   * as if the transaction received a 408 (Request Timeout) response."
   */
  private timerC(): void {
    if (this.stateValue !== TransactionState.Calling && this.stateValue !== TransactionState.Proceeding) return;
    const onTimerC = this.callbacks.onTimerC;
    if (this.provisionalSeen && onTimerC !== undefined) {
      invokeTu(this.ctx, "onTimerC", () => onTimerC.call(this.callbacks, this));
      return;
    }
    this.timeout("C");
  }

  private timeout(timer: TimeoutTimer): void {
    const req = this.request;
    const res = req === undefined ? undefined : buildTimeout(req);
    const callbacks = this.callbacks; // Terminated lets go of them
    this.stateTransition(TransactionState.Terminated);
    if (res !== undefined) invokeTu(this.ctx, "onTimeout", () => callbacks.onTimeout(res, this, timer));
  }

  /** §17.1.4: "the client transaction SHOULD inform the TU ... and SHOULD transition directly
   *  to the "Terminated" state." */
  private transportError(): void {
    if (this.stateValue === TransactionState.Terminated) return;
    const callbacks = this.callbacks; // Terminated lets go of them
    this.stateTransition(TransactionState.Terminated);
    invokeTu(this.ctx, "onTransportError", () => callbacks.onTransportError(this));
  }

  /**
   * §17.1.1.2: "The client transaction SHOULD start timer D when it enters the "Completed"
   * state, with a value of at least 32 seconds for unreliable transports, and a value of zero
   * seconds for reliable transports." Started after the TU has seen the response so that a
   * zero Timer D does not terminate the transaction under the TU's feet.
   */
  private enterCompletedTimers(): void {
    if (this.stateValue !== TransactionState.Completed) return;
    if (this.timerValues.D === 0) {
      this.stateTransition(TransactionState.Terminated);
      return;
    }
    this.ctx.linger(this, this.timerValues.D);
  }

  private stateTransition(next: TransactionState): void {
    const from = this.stateValue;
    const active = from === TransactionState.Calling || from === TransactionState.Proceeding;
    const legal =
      (next === TransactionState.Proceeding && from === TransactionState.Calling) ||
      (next === TransactionState.Accepted && active) ||
      (next === TransactionState.Completed && active) ||
      (next === TransactionState.Terminated && from !== TransactionState.Terminated);
    if (!legal) throw new IllegalTransition("INVITE client transaction", from, next);
    this.stateValue = next;

    switch (next) {
      case TransactionState.Proceeding:
        // §17.1.1.2: "In the "Proceeding" state, the client transaction SHOULD NOT retransmit
        // the request any longer." Timer B only guards "Calling".
        this.timers.stop("A");
        this.timers.stop("B");
        break;
      case TransactionState.Accepted:
        this.timers.stopAll();
        // Accepted passes further 2xx up and never retransmits: the request is not needed.
        this.release();
        // RFC 6026 §8.4: Timer M "with a value of 64*T1" lets further 2xx from other forks
        // reach the TU.
        this.ctx.linger(this, this.timerValues.M);
        break;
      case TransactionState.Completed:
        this.timers.stopAll();
        break;
      case TransactionState.Terminated:
        this.timers.stopAll();
        this.ctx.terminated(this);
        this.notifyTerminated(this);
        break;
      default:
        break;
    }
  }
}

/** The non-INVITE client transaction's own timers; K, which ends its lingering, runs in batches (ctx.linger). */
type NonInviteClientTimer = "E" | "F";

/**
 * Non-INVITE client transaction, RFC 3261 §17.1.2.
 *
 * ```
 * Trying --1xx--> Proceeding --1xx--> Proceeding
 * Trying|Proceeding --200-699--> Completed --Timer K--> Terminated
 * Trying|Proceeding --Timer F--> Terminated (408 to TU)
 * ```
 */
export class NonInviteClientTransaction extends ClientTransactionBase {
  readonly kind = "non-invite" as const;
  private readonly timers: TimerSet<NonInviteClientTimer> = new TimerSet<NonInviteClientTimer>(this);
  /** Current Timer E interval. */
  private intervalE: number;
  /** Timer E's intervals run so far: when Timer F is due, counted from the first send. */
  private elapsedE = 0;

  constructor(ctx: TransactionContext, request: SipRequest, flow: Flow, wire: Buffer, callbacks: ClientTransactionCallbacks) {
    // §17.1.2.2: "The "Trying" state is entered when the TU initiates a new client transaction
    // with a request."
    super(ctx, request, flow, wire, callbacks, TransactionState.Trying);
    this.intervalE = this.timerValues.E;
  }

  start(): boolean {
    if (this.wire === undefined || !this.send(this.wire)) return false;
    // §17.1.2.2: "When entering this state, the client transaction SHOULD set timer F to fire
    // in 64*T1 seconds. ... If an unreliable transport is in use, the client transaction MUST
    // set timer E to fire in T1 seconds."
    this.armEorF();
    return true;
  }

  receive(res: SipResponse): ClientReceiveOutcome {
    const state = this.stateValue;
    if (state !== TransactionState.Trying && state !== TransactionState.Proceeding) {
      // §17.1.2.2: "The "Completed" state exists to buffer any additional response
      // retransmissions that may be received".
      return "absorbed";
    }
    if (res.status < 200) {
      // §17.1.2.2: "If a provisional response is received while in the "Trying" state, the
      // response MUST be passed to the TU, and then the client transaction SHOULD move to the
      // "Proceeding" state." ... "If a provisional response is received while in the
      // "Proceeding" state, it MUST be passed to the TU."
      if (state === TransactionState.Trying) this.stateTransition(TransactionState.Proceeding);
      this.tu("onProvisional", (cb) => cb.onProvisional?.(res, this));
      return "delivered";
    }
    // §17.1.2.2: "If a final response (status codes 200-699) is received while in the "Trying"
    // [or "Proceeding"] state, the response MUST be passed to the TU, and the client
    // transaction MUST transition to the "Completed" state."
    this.stateTransition(TransactionState.Completed);
    this.tu("onFinal", (cb) => cb.onFinal(res, this));
    this.enterCompletedTimers();
    // Completed only absorbs retransmissions: the TU is done with it.
    if (this.state === TransactionState.Completed) this.notifyTerminated(this);
    return "delivered";
  }

  /**
   * §17.1.2.2: "Once the client transaction enters the "Completed" state, it MUST set Timer K
   * to fire in T4 seconds for unreliable transports, and zero seconds for reliable transports."
   */
  private enterCompletedTimers(): void {
    if (this.stateValue !== TransactionState.Completed) return;
    if (this.timerValues.K === 0) {
      this.stateTransition(TransactionState.Terminated);
      return;
    }
    this.ctx.linger(this, this.timerValues.K);
  }

  /** The transaction's timers fire here (TimerSet). */
  onTimer(name: NonInviteClientTimer): void {
    switch (name) {
      case "E":
        return this.timerE();
      case "F":
        return this.timerF();
    }
  }

  /** Timer K ran out (ctx.linger). */
  lingerExpired(): void {
    // §17.1.2.2: "If Timer K fires while in this state, the client transaction MUST transition
    // to the "Terminated" state."
    if (this.stateValue === TransactionState.Completed) this.stateTransition(TransactionState.Terminated);
  }

  dispose(): void {
    this.timers.stopAll();
    this.stateValue = TransactionState.Terminated;
  }

  /** §17.1.2.2: Timer E, doubling up to T2 in "Trying", and at T2 in "Proceeding". */
  private timerE(): void {
    const state = this.stateValue;
    if ((state !== TransactionState.Trying && state !== TransactionState.Proceeding) || this.wire === undefined) return;
    if (!this.send(this.wire)) {
      this.transportError();
      return;
    }
    // "If timer E fires while still in this state, the timer is reset, but this time with a
    // value of MIN(2*T1, T2). When the timer fires again, it is reset to a MIN(4*T1, T2)."
    // "If Timer E fires while in the "Proceeding" state, the request MUST be passed to the
    // transport layer for retransmission, and Timer E MUST be reset with a value of T2 seconds."
    this.elapsedE += this.intervalE;
    this.intervalE = state === TransactionState.Trying ? Math.min(2 * this.intervalE, this.timerValues.T2) : this.timerValues.T2;
    this.armEorF();
  }

  /**
   * Timers E and F as one Node timer, as A and B are for INVITE (armAorB): they start together
   * and stop together (a final response, an error), so E runs while its next retransmission
   * falls before F's 64*T1 from the first send, then F for the rest.
   */
  private armEorF(): void {
    if (!this.reliable && this.elapsedE + this.intervalE < this.timerValues.F) {
      this.timers.start("E", this.intervalE);
    } else {
      this.timers.start("F", this.timerValues.F - this.elapsedE);
    }
  }

  /**
   * §17.1.2.2: "If Timer F fires while the client transaction is still in the "Trying" state,
   * the client transaction SHOULD inform the TU about the timeout, and then it SHOULD enter
   * the "Terminated" state." (Same in "Proceeding".)
   */
  private timerF(): void {
    const state = this.stateValue;
    if (state !== TransactionState.Trying && state !== TransactionState.Proceeding) return;
    const req = this.request;
    const res = req === undefined ? undefined : buildTimeout(req);
    const callbacks = this.callbacks; // Terminated lets go of them
    this.stateTransition(TransactionState.Terminated);
    if (res !== undefined) invokeTu(this.ctx, "onTimeout", () => callbacks.onTimeout(res, this, "F"));
  }

  /** §17.1.4: inform the TU, go to "Terminated". */
  private transportError(): void {
    if (this.stateValue === TransactionState.Terminated) return;
    const callbacks = this.callbacks; // Terminated lets go of them
    this.stateTransition(TransactionState.Terminated);
    invokeTu(this.ctx, "onTransportError", () => callbacks.onTransportError(this));
  }

  private stateTransition(next: TransactionState): void {
    const from = this.stateValue;
    const active = from === TransactionState.Trying || from === TransactionState.Proceeding;
    const legal =
      (next === TransactionState.Proceeding && from === TransactionState.Trying) ||
      (next === TransactionState.Completed && active) ||
      (next === TransactionState.Terminated && from !== TransactionState.Terminated);
    if (!legal) throw new IllegalTransition("non-INVITE client transaction", from, next);
    this.stateValue = next;

    if (next === TransactionState.Completed) {
      this.timers.stopAll();
      // §17.1.2.2: Completed only buffers response retransmissions.
      this.release();
    } else if (next === TransactionState.Terminated) {
      this.timers.stopAll();
      this.ctx.terminated(this);
      this.notifyTerminated(this);
    }
  }
}
