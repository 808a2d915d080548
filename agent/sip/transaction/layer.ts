// The transaction layer, RFC 3261 §17: owns every client and server transaction, matches
// incoming messages to them (§17.1.3, §17.2.3), and bounds how many exist. Mechanism only:
// what a request means (register, route, fork) is the TU's business.
import { detached } from "../../strings.ts";
import { serialize } from "../serialize.ts";
import type { Flow, SipMessage, SipRequest, SipResponse, Transport } from "../types.ts";
import {
  InviteClientTransaction,
  NonInviteClientTransaction,
  type ClientTransaction,
  type ClientTransactionCallbacks,
  type SendRequestOptions,
} from "./client.ts";
import { TransactionState, encodeSafely, type IndexEntry, type LayerIndexed, type TransactionContext } from "./common.ts";
import { DEFAULT_LINGER_LATE_MS, LingerTimers } from "./linger.ts";
import { clientKey, createBranch, isRfc3261Branch, responseClientKey, rfc2543AckKey, rfc2543Key, serverKey } from "./keys.ts";
import { InviteServerTransaction, NonInviteServerTransaction, type ServerTransaction } from "./server.ts";
import { resolveTimers, type TimerSettings, type TimerValues } from "./timers.ts";

export interface TransactionLayerOptions {
  transport: Transport;
  /** T1/T2/T4 and any timer override (tests shorten them to milliseconds). */
  timers?: Partial<TimerSettings>;
  /**
   * Server transactions and client transactions still at work, alive at most; beyond it new
   * requests get "overload". Default 100 000. Client transactions that only linger in Completed
   * (Timer D, 32 s after each 487 on UDP; Timer K) are not counted: they are the element's own,
   * bounded by the calls it admitted, and hold a few hundred bytes each. Counted, at 300 calls a
   * second to ten phones they filled the table and new forks failed mid-call.
   */
  maxTransactions?: number;
  /**
   * INVITE server transactions send 100 (Trying) themselves if the TU has not answered within
   * this many ms (RFC 3261 §17.2.1 allows skipping it only when the TU answers within 200 ms).
   * false: never. Default 200.
   */
  tryingDelay?: number | false;
  /**
   * How late, at most, the timers that end lingering transactions (D, I, J, K, L, M) may fire,
   * in ms: they run in batches (linger.ts), never early. Default 100 (a 256th of the duration
   * below 25.6 s); 0 for exact timers.
   */
  lingerLateMs?: number;
  /** Message → wire bytes. Default: serialize() of serialize.ts. */
  encode?: (msg: SipMessage) => Buffer;
  /** A TU callback threw (the transaction carried on); default: ignored. */
  onCallbackError?: (error: unknown, where: string) => void;
}

export type ReceiveRequestResult =
  /** A new server transaction: the TU answers through tx.respond(). */
  | { kind: "new"; tx: ServerTransaction }
  /** A retransmission (or an ACK for a non-2xx) handled inside the matching transaction. */
  | { kind: "absorbed"; tx: ServerTransaction }
  /** An ACK that matched an INVITE server transaction in "Accepted" (RFC 6026 §7.1): the TU's. */
  | { kind: "ack-2xx"; tx: InviteServerTransaction }
  /** An ACK matching no transaction (normally the ACK for a 2xx, §17.1.1.3): handled statelessly by the TU. */
  | { kind: "stray-ack" }
  /** A new CANCEL transaction and the INVITE server transaction it cancels, if any (§9.2). */
  | { kind: "cancel"; tx: NonInviteServerTransaction; inviteTx: InviteServerTransaction | undefined }
  /** The TU's admission check refused a new transaction (a source over its quota): drop it silently. */
  | { kind: "refused" }
  /** The TU's admission check shed it (the agent is overloaded): the TU answers 503 statelessly, no state kept. */
  | { kind: "shed" }
  /** maxTransactions reached (or the layer is closed): the TU answers 503 statelessly. */
  | { kind: "overload" }
  /** Cannot take part in any transaction (no Via). Drop it. */
  | { kind: "invalid"; reason: string };

export type ReceiveResponseResult =
  | { kind: "delivered"; tx: ClientTransaction }
  | { kind: "absorbed"; tx: ClientTransaction }
  /**
   * Matches no client transaction. RFC 3261 §16.7 had proxies forward stray 2xx statelessly;
   * RFC 6026 §7.2 replaced that: "Any response received that does not match an existing
   * client transaction state machine is simply dropped." The TU decides.
   */
  | { kind: "stray" }
  | { kind: "invalid"; reason: string };

export type SendRequestError =
  /** §17.1: the ACK for a 2xx is not a transaction; send it with transport.send(). */
  | "ack-is-not-a-transaction"
  /** The top Via needs an RFC 3261 branch (createBranch()). */
  | "no-branch"
  | "duplicate-branch"
  | "encode-failed"
  | "overload"
  | "transport-error"
  | "closed";

export type SendRequestResult = { ok: true; tx: ClientTransaction } | { ok: false; error: SendRequestError };

export interface TransactionCounts {
  server: number;
  client: number;
}

export class TransactionLayer {
  /** Server transactions of RFC 3261 requests, keyed by branch + sent-by + method (§17.2.3; ACK under INVITE). */
  private readonly servers = new Map<string, ServerTransaction>();
  /** Server transactions of RFC 2543 requests (no usable branch), keyed by R-URI, To/From tags, Call-ID, CSeq, top Via, method. */
  private readonly servers2543 = new Map<string, ServerTransaction>();
  /** RFC 2543 INVITE server transactions keyed as servers2543 minus the To tag, for their ACKs (§17.2.3). */
  private readonly acks2543 = new Map<string, InviteServerTransaction>();
  /** Client transactions keyed by top-Via branch + CSeq method (§17.1.3). */
  private readonly clients = new Map<string, ClientTransaction>();
  // Where each live transaction is indexed, so termination removes exactly its own entries, is
  // kept on the transaction (LayerIndexed.layerKeys): its one key in clients or servers (a bare
  // string, the common case: no entry objects for the tens of thousands that linger under
  // load), or RFC 2543 server transactions' entries. Likewise the source it is counted under.
  /** Live server transactions per source address (entries removed at zero), for per-source quotas. */
  private readonly perSource = new Map<string, number>();

  /** Client transactions in clients that only linger (not counted against maxTransactions). */
  private lingeringClients = 0;
  private readonly transport: Transport;
  private readonly maxTransactions: number;
  private readonly context: TransactionContext;
  private readonly linger: LingerTimers;
  private closed = false;

  constructor(options: TransactionLayerOptions) {
    this.transport = options.transport;
    const max = options.maxTransactions;
    this.maxTransactions = max !== undefined && Number.isFinite(max) && max >= 0 ? max : 100_000;
    const unreliable = resolveTimers(options.timers, false);
    const reliable = resolveTimers(options.timers, true);
    const encode = options.encode ?? serialize;
    const onCallbackError = options.onCallbackError;
    const delay = options.tryingDelay;
    const late = options.lingerLateMs;
    const linger = new LingerTimers(late !== undefined && Number.isFinite(late) && late >= 0 ? late : DEFAULT_LINGER_LATE_MS, (error) => this.context.callbackError(error, "lingerExpired"));
    this.linger = linger;
    this.context = {
      transport: this.transport,
      encode,
      timers: (isReliable: boolean): TimerValues => (isReliable ? reliable : unreliable),
      tryingDelay: delay === false ? false : delay !== undefined && Number.isFinite(delay) && delay >= 0 ? delay : 200,
      terminated: (tx: object) => this.forget(tx),
      lingering: (tx: object) => {
        if ((tx as LayerIndexed).layerKeys !== undefined) this.lingeringClients++;
      },
      linger: (owner, ms) => linger.add(owner, ms),
      callbackError: (error, where) => {
        try {
          onCallbackError?.(error, where);
        } catch {
          // A logger that throws must not take a state machine down with it.
        }
      },
    };
  }

  /** A fresh RFC 3261 branch for a request the TU is about to send (§8.1.1.7). */
  createBranch(): string {
    return createBranch();
  }

  /** Live transactions, for status and benchmarks. */
  counts(): TransactionCounts {
    return { server: this.servers.size + this.servers2543.size, client: this.clients.size };
  }

  /** Live server transactions created by requests from this source address. */
  inFlightFrom(address: string): number {
    return this.perSource.get(address) ?? 0;
  }

  /**
   * Matches an incoming request to a server transaction (§17.2.3), so that retransmissions are
   * absorbed before the TU sees them, or creates a new one. admit, when given, is asked before
   * a new transaction is created (never for retransmissions or ACKs): false refuses it, "shed"
   * sheds it (overload), and either way no state is kept.
   */
  receiveRequest(req: SipRequest, flow: Flow, admit?: (source: string, inFlight: number, req: SipRequest) => boolean | "shed"): ReceiveRequestResult {
    if (req.via.length === 0) return { kind: "invalid", reason: "no Via header" };
    const key3261 = serverKey(req);
    const existing = key3261 !== undefined ? this.servers.get(key3261) : this.match2543(req);
    if (existing !== undefined) {
      existing.noteFlow(flow);
      const outcome = existing.receive(req);
      if (outcome === "ack-2xx" && existing instanceof InviteServerTransaction) return { kind: "ack-2xx", tx: existing };
      return { kind: "absorbed", tx: existing };
    }
    // §17.2.3 / §17.1.1.3: an ACK never creates a transaction. One matching nothing is the ACK
    // for a 2xx (new branch), or one that arrived after the transaction ended.
    if (req.method === "ACK") return { kind: "stray-ack" };
    const source = flow.remoteAddress;
    if (admit !== undefined) {
      const verdict = admit(source, this.inFlightFrom(source), req);
      if (verdict === "shed") return { kind: "shed" };
      if (!verdict) return { kind: "refused" };
    }
    if (this.closed || this.total() >= this.maxTransactions) return { kind: "overload" };

    if (req.method === "INVITE") {
      const tx = new InviteServerTransaction(this.context, req, flow);
      if (key3261 !== undefined) this.index(tx, this.servers, key3261);
      else this.index2543(tx, req);
      this.countSource(tx, source);
      return { kind: "new", tx };
    }
    const tx = new NonInviteServerTransaction(this.context, req, flow);
    if (key3261 !== undefined) this.index(tx, this.servers, key3261);
    else this.index2543(tx, req);
    this.countSource(tx, source);
    if (req.method === "CANCEL") return { kind: "cancel", tx, inviteTx: this.cancelTarget(req) };
    return { kind: "new", tx };
  }

  /**
   * Answers a new server transaction statelessly and forgets it at once: the response goes out
   * once, with no retransmission timers (G, H, J) and nothing left to absorb retransmissions;
   * a retransmitted request is a new request to the TU (RFC 3261 §16.11 stateless behaviour,
   * used for challenges to unknown sources). False when the response could not be encoded or
   * sent; the transaction is gone either way.
   */
  respondStatelessly(tx: ServerTransaction, res: SipResponse): boolean {
    tx.dispose();
    this.forget(tx);
    const wire = encodeSafely(this.context, res);
    return wire !== undefined && this.transport.send(tx.flow, wire);
  }

  /** Delivers a response to its client transaction (§17.1.3). */
  receiveResponse(res: SipResponse, _flow: Flow): ReceiveResponseResult {
    if (!Number.isInteger(res.status) || res.status < 100 || res.status > 699) {
      return { kind: "invalid", reason: "status code out of range" };
    }
    const key = responseClientKey(res);
    const tx = key === undefined ? undefined : this.clients.get(key);
    if (tx === undefined) return { kind: "stray" };
    return { kind: tx.receive(res), tx };
  }

  /**
   * Starts a client transaction for a request whose top Via carries a branch from
   * createBranch(), and sends it on the flow. The ACK for a 2xx is not a transaction.
   */
  sendRequest(req: SipRequest, flow: Flow, callbacks: ClientTransactionCallbacks, options: SendRequestOptions = {}): SendRequestResult {
    if (this.closed) return { ok: false, error: "closed" };
    if (req.method === "ACK") return { ok: false, error: "ack-is-not-a-transaction" };
    const branch = req.via[0]?.branch;
    if (!isRfc3261Branch(branch)) return { ok: false, error: "no-branch" };
    // Responses are matched on the CSeq method they copy from the request (§17.1.3).
    const key = clientKey(branch, req.cseq.method);
    if (this.clients.has(key)) return { ok: false, error: "duplicate-branch" };
    if (this.total() >= this.maxTransactions) return { ok: false, error: "overload" };
    const wire = encodeSafely(this.context, req);
    if (wire === undefined) return { ok: false, error: "encode-failed" };

    const tx: ClientTransaction =
      req.method === "INVITE"
        ? new InviteClientTransaction(this.context, req, flow, wire, callbacks, options)
        : new NonInviteClientTransaction(this.context, req, flow, wire, callbacks);
    this.index(tx, this.clients, key);
    if (!tx.start()) {
      // The first send failed: nothing is pending, so report it here rather than through a callback.
      tx.dispose();
      this.forget(tx);
      return { ok: false, error: "transport-error" };
    }
    return { ok: true, tx };
  }

  /** Stops every timer and forgets every transaction, telling no one. */
  close(): void {
    this.closed = true;
    const all = new Set<ServerTransaction | ClientTransaction>([
      ...this.servers.values(),
      ...this.servers2543.values(),
      ...this.clients.values(),
    ]);
    for (const tx of all) tx.dispose();
    this.linger.close();
    this.servers.clear();
    this.servers2543.clear();
    this.acks2543.clear();
    this.clients.clear();
    for (const tx of all) {
      tx.layerKeys = undefined;
      tx.layerSource = undefined;
    }
    this.lingeringClients = 0;
    this.perSource.clear();
  }

  /** What counts against maxTransactions: every server transaction, client transactions at work. */
  private total(): number {
    return this.servers.size + this.servers2543.size + this.clients.size - this.lingeringClients;
  }

  /** RFC 2543 matching (§17.2.3), for requests whose top Via has no usable magic-cookie branch. */
  private match2543(req: SipRequest): ServerTransaction | undefined {
    if (req.method === "ACK") {
      const key = rfc2543AckKey(req);
      const tx = key === undefined ? undefined : this.acks2543.get(key);
      // "... and the To tag of the ACK matches the To tag of the response sent by the server transaction."
      return tx !== undefined && tx.sentFinalWithToTag(req.to.tag) ? tx : undefined;
    }
    const key = rfc2543Key(req);
    return key === undefined ? undefined : this.servers2543.get(key);
  }

  /**
   * §9.2: "The TU determines the transaction to be cancelled by taking the CANCEL request, and
   * then assuming that the request method is anything but CANCEL or ACK and applying the
   * transaction matching procedures of Section 17.2.3." Only INVITE is looked for: CANCEL of
   * a non-INVITE request has no effect (§9.1).
   */
  private cancelTarget(cancel: SipRequest): InviteServerTransaction | undefined {
    const key3261 = serverKey(cancel, "INVITE");
    const tx = key3261 !== undefined ? this.servers.get(key3261) : this.lookup2543(cancel, "INVITE");
    return tx instanceof InviteServerTransaction && tx.state !== TransactionState.Terminated ? tx : undefined;
  }

  private lookup2543(req: SipRequest, asMethod: string): ServerTransaction | undefined {
    const key = rfc2543Key(req, asMethod);
    return key === undefined ? undefined : this.servers2543.get(key);
  }

  private index2543(tx: ServerTransaction, req: SipRequest): void {
    const key = rfc2543Key(req);
    if (key !== undefined) this.index(tx, this.servers2543, key);
    if (tx instanceof InviteServerTransaction) {
      const ackKey = rfc2543AckKey(req);
      if (ackKey !== undefined && !this.acks2543.has(ackKey)) this.index(tx, this.acks2543, ackKey);
    }
  }

  private index<T extends LayerIndexed>(tx: T, map: Map<string, T>, key: string): void {
    // A copy: a key built from the received message's branch would keep the whole message's
    // text for as long as the transaction lingers (32 s).
    key = detached(key);
    map.set(key, tx);
    const prev = tx.layerKeys;
    const plain = (map as Map<string, object>) === this.clients || (map as Map<string, object>) === this.servers;
    if (prev === undefined && plain) {
      tx.layerKeys = key;
      return;
    }
    const entries: IndexEntry[] = prev === undefined ? [] : typeof prev === "string" ? [{ map: this.holderOf(tx, prev), key: prev }] : prev;
    entries.push({ map: map as Map<string, object>, key });
    tx.layerKeys = entries;
  }

  /** Which of clients and servers holds tx under key. */
  private holderOf(tx: object, key: string): Map<string, object> {
    return this.clients.get(key) === tx ? this.clients : this.servers;
  }

  private countSource(tx: ServerTransaction, source: string): void {
    tx.layerSource = source;
    this.perSource.set(source, (this.perSource.get(source) ?? 0) + 1);
  }

  /** A transaction terminated: drop exactly the entries that still point at it. */
  private forget(txObject: object): void {
    const tx = txObject as LayerIndexed;
    const source = tx.layerSource;
    if (source !== undefined) {
      tx.layerSource = undefined;
      const n = (this.perSource.get(source) ?? 1) - 1;
      if (n > 0) this.perSource.set(source, n);
      else this.perSource.delete(source);
    }
    const entries = tx.layerKeys;
    if (entries === undefined) return;
    tx.layerKeys = undefined;
    if ((tx instanceof InviteClientTransaction || tx instanceof NonInviteClientTransaction) && tx.lingering) this.lingeringClients--;
    if (typeof entries === "string") {
      const map = this.holderOf(tx, entries);
      if (map.get(entries) === tx) map.delete(entries);
      return;
    }
    for (const { map, key } of entries) {
      if (map.get(key) === tx) map.delete(key);
    }
  }
}
