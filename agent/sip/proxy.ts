// The stateful forking proxy, RFC 3261 §16: the mechanism the routing engine drives through
// StatefulProxyApi (proxy-types.ts). It takes over an INVITE server transaction, forks client
// transactions toward the targets the engine names, relays provisional responses, picks the
// answer (first 2xx wins, RFC 3326 Reason on the CANCELs of the others), handles CANCEL from
// the caller, Timer C, and routes in-dialog requests between the two flows of each dialog
// (Record-Route with ;lr, §16.4 / §16.12). It knows nothing about groups or members.
//
// Hot path (DESIGN principle 3): startCall() and fork() do no I/O but the sends, no awaits,
// no logging with string building; 100 Trying goes out in a microtask so that forks made in
// the same tick by the engine leave first.
//
// Decisions where the RFCs leave room (documented here once):
// - A 2xx from a second branch after the call was answered (or after it ended upstream) is
//   not relayed (a departure from §16.7 step 5, which forwards every 2xx): the proxy ACKs it
//   and sends BYE to that branch itself, so no callee is left half-connected and the caller
//   never sees a second dialog it would have to tear down.
// - Stray responses (no client transaction) are dropped, per RFC 6026 §7.2, which replaced
//   §16.7's stateless forwarding of stray 2xx. 2xx retransmissions of the answering branch
//   still reach the proxy through the client transaction's "Accepted" state (Timer M) and are
//   relayed upstream, statelessly once the server transaction has gone (RFC 6026 §8.4, §8.7).
// - Loop detection (§16.3 step 4) hashes the §16.6 step 8 fields except the top Via: a request
//   that comes back through another hop always has a different top Via, which would make
//   every loop look like a spiral.
import { hash } from "node:crypto";
import { getHeader, getHeaders, parseDatagram, parseNameAddr, parseVia, splitList } from "./message.ts";
import { detached } from "../strings.ts";
import type {
  Branch,
  BranchState,
  BranchTarget,
  ProxyCall,
  ProxyCallEvents,
  ProxyStats,
  ProxyStatusApi,
  RejectOptions,
  StatefulProxyApi,
} from "./proxy-types.ts";
import { DialogTable, type Dialog, type ProxyDialogInfo } from "./dialogs.ts";
import { hostPort, randomToken } from "./requests.ts";
import { createResponse, forkBytes, forkParts, forwardRequest, serialize, withBytes, type ForkParts } from "./serialize.ts";
import {
  MAGIC_COOKIE,
  TransactionState,
  buildCancel,
  createBranch,
  type ClientTransactionCallbacks,
  type InviteClientTransaction,
  type InviteServerTransaction,
  type NonInviteServerTransaction,
  type ServerTransaction,
  type ServerTransactionListener,
  type TransactionLayer,
} from "./transaction.ts";
import type { Flow, SipHeader, SipRequest, SipResponse, Transport, Via } from "./types.ts";
import { parseUri, uriHostPort } from "./uri.ts";
import { checkRequest } from "./validate.ts";
import type { Logger } from "../log.ts";

/** RFC 3326: the Reason on CANCELs sent because another branch answered. */
export const ANSWERED_ELSEWHERE = 'SIP;cause=200;text="Call completed elsewhere"';

const DEFAULT_EXTENSIONS: ReadonlySet<string> = new Set(["path", "outbound", "gruu", "replaces", "timer", "100rel"]);
const DEFAULT_METHODS: ReadonlySet<string> = new Set(["INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "REGISTER", "INFO", "UPDATE", "PRACK", "NOTIFY", "SUBSCRIBE", "MESSAGE", "REFER", "PUBLISH"]);

export interface StatefulProxyOptions {
  transactions: TransactionLayer;
  /** For what goes outside a transaction: ACK for 2xx, 2xx relayed after the server transaction ended. */
  transport: Transport;
  /** Timer C of every branch in ms unless the target sets its own; default: the transaction layer's (180 s). */
  timerC?: number;
  /** How long a branch cancelled by Timer C may take to send its 487 before the proxy gives up (§16.8). Default 32 s. */
  cancelWait?: number;
  /** Option tags accepted in Proxy-Require (§16.3 step 5). */
  supportedExtensions?: ReadonlySet<string>;
  supportedMethods?: ReadonlySet<string>;
  /** host:port this element puts in Via and Record-Route for a flow; default the flow's local address. */
  advertise?: (flow: Flow) => string;
  /** Whether host:port names this element (Route popping, loop detection), beyond the flow's own local address. */
  isOwnAddress?: (host: string, port: number) => boolean;
  /**
   * The element has already run checkRequest() (role "proxy", the same methods and extensions)
   * on every INVITE it hands to startCall(), so the proxy need not check it twice on the hot path.
   */
  requestsChecked?: boolean;
  log?: Logger;
}

const LIVE: ReadonlySet<BranchState> = new Set<BranchState>(["calling", "ringing"]);

class BranchImpl implements Branch {
  state: BranchState = "calling";
  lastStatus: number | undefined = undefined;
  sentAt = 0;
  tx: InviteClientTransaction | undefined;
  /** Any 1xx seen (100 included): a CANCEL may be sent (§9.1). */
  provisional = false;
  /** A CANCEL waiting for the first provisional response (§9.1); null when none is queued. */
  pendingCancel: string | null = null;
  cancelSent = false;
  failureReported = false;
  /** The final non-2xx received (for the best-response choice, §16.7 step 6); only while the call is unfinished. */
  final: SipResponse | undefined;
  /** To tags of early dialogs this branch created. */
  readonly earlyTags = new Set<string>();
  /**
   * The INVITE as forwarded on this branch, kept while a CANCEL may still be built from it
   * (§9.1); released once the branch has its final response, so a lingering call holds no
   * parsed copies of it.
   */
  request: SipRequest | undefined;
  /** What a late 2xx needs to ACK and BYE this leg (§13.2.2.4, §15.1.1), from the INVITE. */
  origin: { uri: string; fromRaw: string; callId: string; seq: number };

  constructor(
    readonly id: string,
    readonly target: BranchTarget,
    readonly call: CallImpl,
    request: SipRequest,
  ) {
    this.request = request;
    this.origin = { uri: request.uri, fromRaw: request.from.raw, callId: request.callId, seq: request.cseq.seq };
  }
}

class CallImpl implements ProxyCall {
  firstForkAt: number | undefined = undefined;
  /** The caller's INVITE; a husk of it (tags, Call-ID, CSeq) once the call has ended. */
  request: SipRequest;
  readonly branches: BranchImpl[] = [];
  answered: BranchImpl | undefined = undefined;
  finished = false;
  dialog: Dialog<DialogData> | undefined = undefined;
  /** The answering leg's To tag (a copy), for its 2xx retransmissions after the dialog is gone. */
  calleeTag: string | undefined = undefined;
  /** An ended dialog or upstream failure has been reported through onEnded. */
  ended = false;
  /** To tags of 2xx legs the proxy ACKed and sent BYE to (key: branch id + To tag). */
  readonly releasedLegs = new Set<string>();
  /** The answering leg as its 2xx described it, for a BYE on the dead caller's behalf. */
  callee: DialogLeg | undefined = undefined;
  /** 180/183 from branches are not relayed upstream (the appliance plays early media: suppressRinging). */
  holdRinging = false;
  /** The header text every fork of this call shares (serialised once, forkParts), for the Record-Route it was made with. */
  forkTemplate: { recordRoute: string; parts: ForkParts } | undefined = undefined;
  private toTagValue: string | undefined;

  constructor(
    readonly id: string,
    request: SipRequest,
    readonly flow: Flow,
    readonly receivedAt: number,
    readonly tx: InviteServerTransaction,
    /** Who hears about the call; nobody once it has ended (NO_EVENTS). */
    public events: ProxyCallEvents,
    /** §16.6 step 8 / §16.3 step 4 loop-detection hash of the request as received. */
    readonly loopHash: string,
    /** Leading Route values that named this element (§16.4: removed before forwarding). */
    readonly ownRoutes: number,
  ) {
    this.request = request;
  }

  /** Whether `tag` is the To tag this element gave its own responses (its own early dialog). */
  ownsTag(tag: string | undefined): boolean {
    return tag !== undefined && tag === this.toTagValue;
  }

  /** The To tag of responses this element generates itself (487, rejections, 182). */
  get toTag(): string {
    this.toTagValue ??= randomToken(6);
    return this.toTagValue;
  }
}

interface DialogData {
  call: CallImpl;
  branch: BranchImpl;
}

// Per-branch and per-call callbacks are small class instances over one shared handler object:
// no closures allocated per call (each would also get its own property store under tsx's
// keepNames), and nothing but the branch or call retained while a transaction lingers.

interface BranchHandlers {
  provisional(branch: BranchImpl, res: SipResponse): void;
  final(branch: BranchImpl, res: SipResponse): void;
  timeout(branch: BranchImpl): void;
  transportError(branch: BranchImpl): void;
  timerC(branch: BranchImpl, tx: InviteClientTransaction): void;
  terminated(branch: BranchImpl): void;
}

class BranchCallbacks implements ClientTransactionCallbacks {
  constructor(
    private readonly handlers: BranchHandlers,
    private readonly branch: BranchImpl,
  ) {}
  onProvisional(res: SipResponse): void {
    this.handlers.provisional(this.branch, res);
  }
  onFinal(res: SipResponse): void {
    this.handlers.final(this.branch, res);
  }
  onTimeout(): void {
    this.handlers.timeout(this.branch);
  }
  onTransportError(): void {
    this.handlers.transportError(this.branch);
  }
  onTimerC(tx: InviteClientTransaction): void {
    this.handlers.timerC(this.branch, tx);
  }
  onTerminated(): void {
    this.handlers.terminated(this.branch);
  }
}

interface CallHandlers {
  terminated(call: CallImpl): void;
  transportError(call: CallImpl): void;
}

class CallListener implements ServerTransactionListener {
  constructor(
    private readonly handlers: CallHandlers,
    private readonly call: CallImpl,
  ) {}
  onTerminated(): void {
    this.handlers.terminated(this.call);
  }
  onTransportError(): void {
    this.handlers.transportError(this.call);
  }
}

/** For CANCEL and BYE the proxy sends on its own: their outcome changes nothing. */
const IGNORE_OUTCOME: ClientTransactionCallbacks = Object.freeze({
  onFinal: () => undefined,
  onTimeout: () => undefined,
  onTransportError: () => undefined,
});

const NO_OPTIONS = Object.freeze({});

/** An ended call's events: nothing more is told. */
const NO_EVENTS: ProxyCallEvents = Object.freeze({});

let callCounter = 0;

export class StatefulProxy implements StatefulProxyApi, ProxyStatusApi {
  private readonly transactions: TransactionLayer;
  private readonly transport: Transport;
  private readonly timerC: number | undefined;
  private readonly cancelWait: number;
  private readonly extensions: ReadonlySet<string>;
  private readonly methods: ReadonlySet<string>;
  private readonly advertise: (flow: Flow) => string;
  private readonly isOwnAddress: ((host: string, port: number) => boolean) | undefined;
  private readonly log: Logger | undefined;
  private readonly requestsChecked: boolean;
  private readonly sentBy = new Map<string, { host: string; port: number | undefined }>();
  /** Re-INVITEs being relayed inside a dialog, by their server transaction (CANCEL, §16.10). */
  private readonly reinvites = new Map<InviteServerTransaction, ReInviteRelay>();
  private readonly reinviteHost: ReInviteHost = {
    done: (tx) => this.reinvites.delete(tx),
    sendCancel: (forwarded, out, reason) => {
      const cancel = cancelWithReason(forwarded, reason);
      if (cancel !== undefined) this.transactions.sendRequest(cancel, out, IGNORE_OUTCOME);
    },
  };
  /** Calls keyed by their INVITE server transaction (CANCEL matching, §9.2); removed when it terminates or only lingers. */
  private readonly callsByTx = new Map<InviteServerTransaction, CallImpl>();
  /**
   * The To tag of calls whose INVITE server transaction only lingers now (Confirmed, Timer I):
   * a CANCEL crossing the final response still matches it and gets 200, not 481 (§9.2).
   * Weak: gone with the transaction.
   */
  private readonly lingeringCalls = new WeakMap<InviteServerTransaction, string>();
  /** Calls not yet finished. */
  private readonly ringing = new Set<CallImpl>();
  /** Takes requests inside the element's own early dialog of a ringing call (onOwnDialogRequest). */
  private ownDialogHandler: ((call: ProxyCall, req: SipRequest, respond: (status: number, reason: string) => void) => boolean) | undefined;
  private readonly dialogs = new DialogTable<DialogData>();
  private liveBranches = 0;
  private lateAnswers = 0;
  private strays = 0;

  constructor(options: StatefulProxyOptions) {
    this.transactions = options.transactions;
    this.transport = options.transport;
    this.timerC = options.timerC;
    this.cancelWait = options.cancelWait ?? 32_000;
    this.extensions = options.supportedExtensions ?? DEFAULT_EXTENSIONS;
    this.methods = options.supportedMethods ?? DEFAULT_METHODS;
    this.advertise = options.advertise ?? ((flow) => hostPort(flow.localAddress, flow.localPort));
    this.isOwnAddress = options.isOwnAddress;
    this.log = options.log;
    this.requestsChecked = options.requestsChecked === true;
  }

  // --- StatefulProxyApi ----------------------------------------------------------------

  startCall(tx: ServerTransaction, req: SipRequest, flow: Flow, events: ProxyCallEvents): ProxyCall | undefined {
    // Stamped by the transport when the datagram was read: parse, transaction and admission count.
    const receivedAt = req.receivedAt ?? performance.now();
    if (tx.kind !== "invite" || req.method !== "INVITE") {
      tx.respond(createResponse(req, 500, "Server Internal Error", { toTag: randomToken(6) }));
      return undefined;
    }
    // §16.3 steps 1-3, 5 (URI scheme, Max-Forwards 0 → 483, Proxy-Require → 420): validate.ts.
    const rejection = this.requestsChecked ? undefined : checkRequest(req, { role: "proxy", supportedMethods: this.methods, supportedExtensions: this.extensions });
    if (rejection !== undefined) {
      tx.respond(createResponse(req, rejection.status, rejection.reason, { toTag: randomToken(6), headers: rejection.headers }));
      return undefined;
    }
    const ownRoutes = this.countOwnRoutes(req, flow);
    const loopHash = loopDetectionHash(req, ownRoutes);
    // §16.3 step 4: a Via of ours whose branch carries the same hash means the request looped.
    for (let i = 0; i < req.via.length; i++) {
      const v = req.via[i]!;
      if (v.branch !== undefined && v.branch.endsWith(`.${loopHash}`) && this.isOwn(v.host, v.port ?? 5060, flow)) {
        tx.respond(createResponse(req, 482, "Loop Detected", { toTag: randomToken(6) }));
        return undefined;
      }
    }
    const call = new CallImpl(`c${++callCounter}`, req, flow, receivedAt, tx, events, loopHash, ownRoutes);
    this.callsByTx.set(tx, call);
    this.ringing.add(call);
    tx.listener = new CallListener(this.callHandlers, call);
    // §16.2: "the proxy ... MUST send a 100 (Trying)"-equivalent promptly (§17.2.1: within
    // 200 ms); in a microtask so the engine's synchronous forks go out first.
    queueMicrotask(() => {
      if (!call.finished && tx.state === TransactionState.Proceeding) tx.respond(createResponse(req, 100, "Trying"));
    });
    return call;
  }

  fork(callApi: ProxyCall, target: BranchTarget): Branch | undefined {
    const call = this.own(callApi);
    if (call === undefined || call.finished) return undefined;
    const out = target.flow;
    // §16.6 step 8: a Via of our own with a new branch; the loop hash rides in it (§16.3 step 4).
    const id = `${createBranch()}.${call.loopHash}`;
    const here = this.advertise(out);
    const tcp = out.transport === "tcp";
    const via = this.ownVia(tcp ? "TCP" : "UDP", here, id);
    // §16.6 step 4: Record-Route so every in-dialog request comes through us; two entries when
    // the two sides reach us on different addresses or transports (RFC 5658 double route).
    let recordRoute = `<sip:${here}${tcp ? ";transport=tcp" : ""};lr>`;
    const inbound = call.flow;
    const there = this.advertise(inbound);
    if (there !== here || inbound.transport !== out.transport) {
      recordRoute += `, <sip:${there}${inbound.transport === "tcp" ? ";transport=tcp" : ""};lr>`;
    }
    const base = call.ownRoutes > 0 ? removeLeadingRoutes(call.request, call.ownRoutes) : call.request;
    // §16.6 steps 2, 3: Request-URI of the target, Max-Forwards decremented (forwardRequest).
    const request = forwardRequest(base, { via, requestUri: target.uri, recordRoute });
    if (target.headers !== undefined) for (const h of target.headers) request.headers.push({ name: h.name.toLowerCase(), value: h.value });
    else this.useForkTemplate(call, request, recordRoute);
    const branch = new BranchImpl(id, target, call, request);
    call.branches.push(branch);
    const timerC = target.timerC ?? this.timerC;
    const sent = this.transactions.sendRequest(request, out, new BranchCallbacks(this.branchHandlers, branch), timerC !== undefined ? { timerC } : NO_OPTIONS);
    branch.sentAt = performance.now();
    call.firstForkAt ??= branch.sentAt;
    if (!sent.ok) {
      // §16.9: a transport error is treated as a 503; reported after fork() returns.
      branch.state = "failed";
      branch.lastStatus = 503;
      queueMicrotask(() => this.reportFailure(branch, 503));
      return branch;
    }
    branch.tx = sent.tx as InviteClientTransaction;
    this.liveBranches++;
    return branch;
  }

  /**
   * The forks of one call differ only in Request-URI and Via (and Record-Route, with the
   * target's transport): the rest of the header text is serialised once per call and the
   * request's bytes attached to it (withBytes), byte for byte what serialize would write.
   */
  private useForkTemplate(call: CallImpl, request: SipRequest, recordRoute: string): void {
    const viaLine = request.headers.find((h) => h.name === "via");
    if (viaLine === undefined) return;
    let t = call.forkTemplate;
    if (t === undefined || t.recordRoute !== recordRoute) {
      const parts = forkParts(request, viaLine);
      if (parts === undefined) return;
      t = call.forkTemplate = { recordRoute, parts };
    }
    withBytes(request, forkBytes(request, t.parts, viaLine));
  }

  cancelBranch(callApi: ProxyCall, branchApi: Branch, reason?: string): void {
    const call = this.own(callApi);
    const branch = call?.branches.find((b) => b === branchApi);
    if (branch === undefined || !LIVE.has(branch.state)) return;
    branch.state = "cancelled";
    this.cancel(branch, reason);
  }

  provisional(callApi: ProxyCall, status: number, reason: string, headers?: SipHeader[], body?: { contentType: string; body: Buffer }): void {
    const call = this.own(callApi);
    if (call === undefined || call.finished || !Number.isInteger(status) || status < 101 || status > 199) return;
    call.tx.respond(createResponse(call.request, status, reason, { toTag: call.toTag, ...(headers ? { headers } : {}), ...(body ? { contentType: body.contentType, body: body.body } : {}) }));
  }

  /**
   * Who answers INFO sent inside the element's own early dialog of a ringing call (the To tag of
   * its own 18x); the handler returns false to leave the request to the usual dialog routing.
   */
  onOwnDialogRequest(handler: (call: ProxyCall, req: SipRequest, respond: (status: number, reason: string) => void) => boolean): void {
    this.ownDialogHandler = handler;
  }

  answerLocally(callApi: ProxyCall, headers: SipHeader[], body: { contentType: string; body: Buffer }): { response: SipResponse; resend(): void } | undefined {
    const call = this.own(callApi);
    if (call === undefined || call.finished) return undefined;
    this.cancelAll(call, undefined);
    this.finish(call);
    // §12.1.1: the UAS copies Record-Route into its 2xx (the route set of the caller's side).
    const rr = getHeaders(call.request, "record-route").map((value) => ({ name: "record-route", value }));
    const res = createResponse(call.request, 200, "OK", { toTag: call.toTag, headers: [...rr, ...headers], contentType: body.contentType, body: body.body });
    const tx = call.tx;
    const flow = call.flow;
    tx.respond(res);
    return {
      response: res,
      // RFC 6026 §8.7: through the transaction while it is "Accepted"; after Timer L straight
      // to the transport, as relayAnswerRetransmission does.
      resend: () => {
        if (!tx.respond(res).ok) this.transport.send(flow, serialize(res));
      },
    };
  }

  suppressRinging(callApi: ProxyCall, on: boolean): void {
    const call = this.own(callApi);
    if (call !== undefined) call.holdRinging = on;
  }

  reject(callApi: ProxyCall, status: number, reason: string, headers?: SipHeader[], options: RejectOptions = {}): void {
    const call = this.own(callApi);
    if (call === undefined || call.finished) return;
    if (!Number.isInteger(status) || status < 300 || status > 699) {
      status = 500;
      reason = "Server Internal Error";
    }
    const allDone = call.branches.every((b) => !LIVE.has(b.state));
    this.cancelAll(call, undefined);
    let res: SipResponse = createResponse(call.request, status, reason, { toTag: call.toTag, ...(headers ? { headers } : {}) });
    if (options.exact !== true && allDone) {
      const best = chooseBestResponse([status, ...call.branches.map((b) => b.final?.status ?? 0)]);
      const chosen = best > 0 ? call.branches[best - 1]?.final : undefined;
      // A branch response that lost the caller's Via values cannot be relayed; the engine's goes.
      if (chosen !== undefined && chosen.via.length > 1) {
        res = stripTopVia(chosen);
        // §16.7 step 6: "If the selected response is 503 ... the proxy MUST ... forward a 500".
        if (res.status === 503) res = { ...res, status: 500, reason: "Server Internal Error" };
      }
    }
    this.finish(call);
    call.tx.respond(res);
    this.ended(call, { answered: false, by: "proxy", status: res.status });
  }

  /**
   * One side of an answered call is gone (its device stopped answering keep-alives): end the
   * call for the other side, who would otherwise sit in silence, and forget the dialog. The
   * proxy sends the BYE the dead phone never will, as that phone would have (§15.1.1), with
   * `Reason: SIP;cause=480` (RFC 3326). Toward the caller it is built from the caller's INVITE
   * (its Contact as target, its Record-Route as route set); toward the callee from the 2xx
   * (its Contact, the Record-Route entries below ours, the caller's From). Later in-dialog
   * requests get 481.
   */
  releaseDialog(callApi: ProxyCall, byeTo: "caller" | "callee" = "caller"): void {
    const call = this.own(callApi);
    const dialog = call?.dialog;
    if (call === undefined || dialog === undefined) return;
    this.dialogs.remove(dialog);
    call.dialog = undefined;
    const flow = byeTo === "caller" ? dialog.callerFlow : dialog.calleeFlow;
    const via = this.viaFor(flow, createBranch());
    const bye = byeTo === "caller" ? byeToCaller(call.request, dialog.calleeTag, via) : call.callee === undefined ? undefined : byeToCallee(call.request, call.callee, via);
    if (bye === undefined) return;
    const r = this.transactions.sendRequest(bye, flow, IGNORE_OUTCOME, NO_OPTIONS);
    if (!r.ok) this.log?.debug("BYE on behalf of a dead phone not sent", { to: byeTo, error: r.error });
  }

  activeBranches(callApi: ProxyCall): Branch[] {
    const call = this.own(callApi);
    return call === undefined ? [] : call.branches.filter((b) => LIVE.has(b.state));
  }

  // --- ProxyStatusApi ------------------------------------------------------------------

  dialogCount(): number {
    return this.dialogs.confirmed();
  }

  stats(): ProxyStats {
    return {
      calls: this.ringing.size,
      dialogs: this.dialogs.confirmed(),
      earlyDialogs: this.dialogs.early(),
      branches: this.liveBranches,
      lateAnswersReleased: this.lateAnswers,
      strayResponses: this.strays,
    };
  }

  // --- dispatch entry points (agent.ts) ------------------------------------------------

  /**
   * A CANCEL (§9.2, §16.10). Returns false when it cancels none of our calls (the caller then
   * answers 481). Otherwise: 200 to the CANCEL, CANCEL on every live branch (the caller's
   * Reason copied, RFC 3326), 487 upstream, onCallerCancelled then onEnded.
   */
  handleCancel(cancelTx: NonInviteServerTransaction, inviteTx: InviteServerTransaction | undefined, req: SipRequest): boolean {
    const call = inviteTx === undefined ? undefined : this.callsByTx.get(inviteTx);
    if (call === undefined) {
      // A call already over whose transaction still lingers: the CANCEL changes nothing (§16.10).
      const lingering = inviteTx === undefined ? undefined : this.lingeringCalls.get(inviteTx);
      if (lingering !== undefined) {
        cancelTx.respond(createResponse(req, 200, "OK", { toTag: lingering }));
        return true;
      }
      // §16.10 for a re-INVITE being relayed inside a dialog: 200 to the CANCEL, CANCEL onward.
      const relay = inviteTx === undefined ? undefined : this.reinvites.get(inviteTx);
      if (relay === undefined) return false;
      cancelTx.respond(createResponse(req, 200, "OK"));
      relay.cancel(getHeader(req, "reason"));
      return true;
    }
    // §9.2: the To tag of the 200 to the CANCEL SHOULD equal that of the response to the INVITE.
    cancelTx.respond(createResponse(req, 200, "OK", { toTag: call.toTag }));
    // §16.10: once the INVITE has a final response, the CANCEL changes nothing.
    if (call.finished) return true;
    this.cancelAll(call, getHeader(req, "reason"));
    this.finish(call);
    call.tx.respond(createResponse(call.request, 487, "Request Terminated", { toTag: call.toTag }));
    this.emit(call, "onCallerCancelled", (e) => e.onCallerCancelled?.(call));
    this.ended(call, { answered: false, by: "caller", status: 487 });
    return true;
  }

  /**
   * A request inside a dialog (it has a To tag): loose routing, §16.4 / §16.12. Our Route
   * values are removed and the request goes over the flow of the other side of the dialog,
   * statefully (a new client transaction; responses relayed back). Unknown dialog: 481.
   */
  handleInDialog(tx: ServerTransaction, req: SipRequest, flow: Flow): void {
    // An INFO inside the proxy's own early dialog (its 183 with the appliance's media: a
    // greeting's keys, RFC 6086) is for the element itself, not for a callee.
    if (req.method === "INFO" && this.ownDialogHandler !== undefined) {
      for (const call of this.ringing) {
        if (call.request.callId === req.callId && call.request.from.tag === req.from.tag && call.ownsTag(req.to.tag)) {
          if (this.ownDialogHandler(call, req, (status, reason) => tx.respond(createResponse(req, status, reason)))) return;
          break;
        }
      }
    }
    const match = this.dialogs.lookup(req.callId, req.from.tag, req.to.tag);
    if (match === undefined) {
      tx.respond(createResponse(req, 481, "Call/Transaction Does Not Exist"));
      return;
    }
    const { dialog, fromCaller } = match;
    const out = fromCaller ? dialog.calleeFlow : dialog.callerFlow;
    // The side's flow may have moved (a phone reconnected over TCP): requests follow the latest.
    if (fromCaller) dialog.callerFlow = flow;
    else dialog.calleeFlow = flow;
    const fwd = this.forwardInDialog(req, flow, out, createBranch());
    const reinvite = req.method === "INVITE" && tx.kind === "invite" ? new ReInviteRelay(tx, req, fwd, out, this.reinviteHost) : undefined;
    const sent = this.transactions.sendRequest(fwd, out, reinvite ?? new RelayCallbacks(tx, req), this.timerC !== undefined && req.method === "INVITE" ? { timerC: this.timerC } : {});
    if (!sent.ok) tx.respond(createResponse(req, 503, "Service Unavailable"));
    else if (reinvite !== undefined && tx.kind === "invite") this.reinvites.set(tx, reinvite);
    if (req.method === "BYE") {
      // RFC 3261 §15: BYE ends the dialog; the engine frees the member now, not when the far
      // end gets round to answering it.
      this.dialogs.remove(dialog);
      const { call } = dialog.data;
      if (call.dialog === dialog) this.ended(call, { answered: true, by: fromCaller ? "caller" : "callee" });
    }
  }

  /**
   * An ACK that matched no transaction or matched an "Accepted" one: the ACK for a 2xx
   * (§13.2.2.4), forwarded statelessly (§16.11) inside its dialog. False when no dialog of
   * ours matches (the caller drops it).
   */
  handleAck(req: SipRequest, flow: Flow): boolean {
    const match = this.dialogs.lookup(req.callId, req.from.tag, req.to.tag);
    if (match === undefined) return false;
    if (req.maxForwards === 0) return true;
    const out = match.fromCaller ? match.dialog.calleeFlow : match.dialog.callerFlow;
    // §16.11: a stateless proxy's branch is the same for retransmissions of the same request.
    const fwd = this.forwardInDialog(req, flow, out, statelessBranch(req));
    this.transport.send(out, serialize(fwd));
    return true;
  }

  /** A response that matched no client transaction: dropped (RFC 6026 §7.2), counted. */
  strayResponse(_res: SipResponse, _flow: Flow): void {
    this.strays++;
  }

  // --- branches ------------------------------------------------------------------------

  /** What a branch's client transaction reports, dispatched here (one object for all branches). */
  private readonly branchHandlers: BranchHandlers = {
    provisional: (branch, res) => this.onBranchProvisional(branch, res),
    final: (branch, res) => this.onBranchFinal(branch, res),
    timeout: (branch) => this.onBranchTimeout(branch),
    transportError: (branch) => {
      // §16.9: behave as if a 503 had arrived.
      branch.lastStatus = 503;
      branch.request = undefined;
      if (LIVE.has(branch.state)) {
        branch.state = "failed";
        this.reportFailure(branch, 503);
      }
    },
    timerC: (branch, tx) => this.onTimerC(branch, tx),
    terminated: (branch) => {
      branch.tx = undefined;
      branch.request = undefined;
      this.liveBranches--;
    },
  };

  /** What the caller's INVITE server transaction reports (one object for all calls). */
  private readonly callHandlers: CallHandlers = {
    terminated: (call) => {
      this.callsByTx.delete(call.tx);
      if (call.tx.state !== TransactionState.Terminated) this.lingeringCalls.set(call.tx, call.tx.finalToTag ?? detached(call.toTag));
    },
    // The caller is unreachable: nobody will ever hear an answer (§17.2.4).
    transportError: (call) => this.abandon(call),
  };

  private onBranchProvisional(branch: BranchImpl, res: SipResponse): void {
    branch.provisional = true;
    if (branch.pendingCancel !== null) {
      // §9.1: the CANCEL waited for this provisional response.
      const reason = branch.pendingCancel;
      branch.pendingCancel = null;
      this.sendCancel(branch, reason === "" ? undefined : reason);
    }
    const status = res.status;
    if (status === 100) return;
    const call = branch.call;
    const first = branch.state === "calling";
    if (first) branch.state = "ringing";
    if (branch.state === "ringing") branch.lastStatus = status;
    if (call.finished) return;
    const tag = res.to.tag;
    if (tag !== undefined && !branch.earlyTags.has(tag)) {
      // Kept for the call's life: a copy, not a slice pinning the whole response (message.ts detached).
      branch.earlyTags.add(detached(tag));
      this.dialogs.add(call.request.callId, call.request.from.tag ?? "", tag, call.tx.flow, branch.target.flow, "early", { call, branch }, performance.now());
    }
    // §16.7 step 5: "Any provisional response other than a 100 (Trying) MUST be forwarded
    // upstream immediately." Except while the appliance itself plays early media to the
    // caller (suppressRinging, agent/media/queue-music.ts): the proxy is then the caller's UAS
    // for that early dialog, and another branch's ringing would start a second ring cycle.
    if (!call.holdRinging) call.tx.respond(stripTopVia(res));
    if (first && branch.state === "ringing" && (status === 180 || status === 183)) {
      this.emit(call, "onRinging", (e) => e.onRinging?.(call, branch, res));
    }
  }

  private onBranchFinal(branch: BranchImpl, res: SipResponse): void {
    const call = branch.call;
    const status = res.status;
    if (status >= 200 && status < 300) {
      if (call.answered === branch && res.to.tag === call.calleeTag) {
        // RFC 6026 §8.4 / §8.7: a retransmission of the answer goes upstream again.
        this.relayAnswerRetransmission(call, res);
        return;
      }
      if (call.finished) {
        this.releaseLateAnswer(branch, res);
        return;
      }
      this.answer(call, branch, res);
      return;
    }
    branch.lastStatus = status;
    branch.request = undefined;
    // Kept for the best-response choice (§16.7 step 6), which only an unfinished call makes.
    if (!call.finished) branch.final = res;
    for (const tag of branch.earlyTags) this.dropEarly(call, tag);
    if (LIVE.has(branch.state)) {
      branch.state = "failed";
      this.reportFailure(branch, status);
    }
  }

  private onBranchTimeout(branch: BranchImpl): void {
    // Timer B, or Timer C without a provisional: "as if ... a 408" (§16.8).
    branch.lastStatus = 408;
    branch.request = undefined;
    if (LIVE.has(branch.state)) {
      branch.state = "timeout";
      this.reportFailure(branch, 408);
    }
  }

  /**
   * §16.8: "If timer C should fire ... If the client transaction has received a provisional
   * response, the proxy MUST generate a CANCEL request matching that transaction." The timer is
   * reset to bound the wait for the 487; if it fires again, the transaction is dropped.
   */
  private onTimerC(branch: BranchImpl, tx: InviteClientTransaction): void {
    if (branch.cancelSent || !LIVE.has(branch.state)) {
      tx.terminate();
      return;
    }
    branch.state = "timeout";
    branch.lastStatus = 408;
    this.sendCancel(branch, undefined);
    tx.restartTimerC(this.cancelWait);
    this.reportFailure(branch, 408);
  }

  private answer(call: CallImpl, branch: BranchImpl, res: SipResponse): void {
    // A 2xx wins even on a branch already being cancelled: the CANCEL lost the race (§9.1).
    branch.state = "answered";
    branch.lastStatus = res.status;
    branch.pendingCancel = null;
    branch.request = undefined;
    call.answered = branch;
    this.finish(call);
    const calleeTag = res.to.tag ?? "";
    call.calleeTag = detached(calleeTag);
    for (const b of call.branches) for (const tag of b.earlyTags) if (b !== branch || tag !== calleeTag) this.dropEarly(call, tag);
    call.dialog = this.dialogs.add(call.request.callId, call.request.from.tag ?? "", calleeTag, call.tx.flow, branch.target.flow, "confirmed", { call, branch }, performance.now());
    call.callee = legOf2xx(res, branch, this);
    // §16.7 step 5: "any 2xx response ... MUST be forwarded immediately".
    call.tx.respond(stripTopVia(res));
    // §16.7 step 10 / RFC 3326: every other branch is cancelled, saying why.
    this.cancelAll(call, ANSWERED_ELSEWHERE);
    this.emit(call, "onAnswered", (e) => e.onAnswered?.(call, branch));
  }

  private relayAnswerRetransmission(call: CallImpl, res: SipResponse): void {
    const up = stripTopVia(res);
    const r = call.tx.respond(up);
    if (!r.ok) this.transport.send(call.tx.flow, serialize(up));
  }

  /**
   * A 2xx after the call was answered elsewhere or ended upstream: never relayed; the proxy is
   * the UAC of that leg and closes it (§13.2.2.4 ACK, then BYE), so no phone stays off-hook on
   * a dead call. Retransmissions of the same 2xx are ACKed again but get no second BYE.
   */
  private releaseLateAnswer(branch: BranchImpl, res: SipResponse): void {
    const call = branch.call;
    const legKey = `${branch.id}\n${res.to.tag ?? ""}`;
    const leg = legOf2xx(res, branch, this);
    const { fromRaw, callId, seq } = branch.origin;
    const ack = buildInDialogRequest(leg, fromRaw, callId, "ACK", seq, this.viaFor(branch.target.flow, createBranch()));
    if (ack !== undefined) this.transport.send(branch.target.flow, serialize(ack));
    if (call.releasedLegs.has(legKey)) return;
    call.releasedLegs.add(legKey);
    this.lateAnswers++;
    if (LIVE.has(branch.state) || branch.state === "cancelled") branch.lastStatus = res.status;
    const bye = buildInDialogRequest(leg, fromRaw, callId, "BYE", seq + 1, this.viaFor(branch.target.flow, createBranch()), [
      { name: "reason", value: call.answered !== undefined ? ANSWERED_ELSEWHERE : 'SIP;cause=487;text="Call cancelled"' },
    ]);
    if (bye !== undefined) {
      const r = this.transactions.sendRequest(bye, branch.target.flow, IGNORE_OUTCOME);
      if (!r.ok) this.log?.debug("BYE to a late-answering branch not sent", { error: r.error, branch: branch.id });
    }
  }

  private cancelAll(call: CallImpl, reason: string | undefined): void {
    for (const b of call.branches) {
      if (!LIVE.has(b.state)) continue;
      b.state = "cancelled";
      this.cancel(b, reason);
    }
  }

  /** §9.1: "a CANCEL request SHOULD NOT be sent ... before a provisional response": queue it. */
  private cancel(branch: BranchImpl, reason: string | undefined): void {
    if (branch.tx === undefined || branch.cancelSent) return;
    if (branch.provisional) this.sendCancel(branch, reason);
    else branch.pendingCancel = reason ?? "";
  }

  private sendCancel(branch: BranchImpl, reason: string | undefined): void {
    const tx = branch.tx;
    if (branch.cancelSent || tx === undefined || (tx.state !== TransactionState.Calling && tx.state !== TransactionState.Proceeding)) return;
    const cancel = branch.request === undefined ? undefined : cancelWithReason(branch.request, reason);
    if (cancel === undefined) return;
    branch.cancelSent = true;
    // The CANCEL is its own non-INVITE transaction (§9.1); its 200 tells nothing we need.
    this.transactions.sendRequest(cancel, branch.target.flow, IGNORE_OUTCOME);
  }

  private reportFailure(branch: BranchImpl, status: number): void {
    const call = branch.call;
    if (branch.failureReported || call.finished) return;
    branch.failureReported = true;
    this.emit(call, "onBranchFailed", (e) => e.onBranchFailed?.(call, branch, status));
  }

  private dropEarly(call: CallImpl, tag: string): void {
    const m = this.dialogs.lookup(call.request.callId, call.request.from.tag, tag);
    if (m !== undefined && m.fromCaller && m.dialog.state === "early") this.dialogs.remove(m.dialog);
  }

  private finish(call: CallImpl): void {
    call.finished = true;
    this.ringing.delete(call);
    // The best-response choice is over (§16.7 step 6): the branches' failures are not needed.
    for (const b of call.branches) b.final = undefined;
  }

  private ended(call: CallImpl, info: { answered: boolean; by: "caller" | "callee" | "proxy"; status?: number }): void {
    if (call.ended) return;
    call.ended = true;
    this.emit(call, "onEnded", (e) => e.onEnded?.(call, info));
    // The call lingers (server transaction Timer L, the answering branch's Timer M) only to
    // absorb retransmissions and close late legs: Call-ID, tags and the answering branch are all
    // it still needs. What it held of the engine, the other branches and the messages goes now,
    // not 32 s later: at a few hundred calls a second, lingering calls were most of the heap.
    call.events = NO_EVENTS;
    call.forkTemplate = undefined;
    if (!call.finished) return;
    call.request = requestHusk(call.request);
    const kept = call.answered;
    // A branch still waiting for its 487 reaches its own state through its transaction.
    call.branches.length = 0;
    if (kept !== undefined) {
      call.branches.push(kept);
      const o = kept.origin;
      kept.origin = { uri: detached(o.uri), fromRaw: detached(o.fromRaw), callId: detached(o.callId), seq: o.seq };
    }
    // A finished call ends by a BYE, which has taken the dialog out of the table already (the
    // other ways to end one come before any answer): the leg that could release it is not needed.
    call.dialog = undefined;
    call.callee = undefined;
  }

  /** The caller's flow failed before any final answer: stop ringing everyone. */
  private abandon(call: CallImpl): void {
    if (call.finished) return;
    this.cancelAll(call, undefined);
    this.finish(call);
    this.ended(call, { answered: false, by: "caller", status: 503 });
  }

  private emit(call: CallImpl, where: string, fn: (e: ProxyCallEvents) => void): void {
    try {
      fn(call.events);
    } catch (err) {
      this.log?.error("proxy event handler threw", { where, call: call.id, err: err instanceof Error ? err.message : String(err) });
    }
  }

  private own(call: ProxyCall): CallImpl | undefined {
    return call instanceof CallImpl ? call : undefined;
  }

  // --- in-dialog forwarding ------------------------------------------------------------

  /** §16.12: remove our Route values, add our Via, Max-Forwards - 1; the Request-URI is kept. */
  private forwardInDialog(req: SipRequest, inbound: Flow, out: Flow, branchId: string): SipRequest {
    const own = this.countOwnRoutes(req, inbound);
    const base = own > 0 ? removeLeadingRoutes(req, own) : req;
    return forwardRequest(base, { via: this.viaFor(out, branchId) });
  }

  /** Our Via for a fork, built parsed: the sent-by is parsed once per address, not per fork. */
  private ownVia(transport: "UDP" | "TCP", here: string, branch: string): Via {
    const key = `${transport} ${here}`;
    let sentBy = this.sentBy.get(key);
    if (sentBy === undefined) {
      const v = parseVia(`SIP/2.0/${transport} ${here}`)?.[0];
      if (v === undefined) throw new TypeError(`advertised address is not a Via sent-by: ${here}`);
      sentBy = { host: v.host, port: v.port };
      // Local addresses are few; the bound only guards against an advertiser gone wrong.
      if (this.sentBy.size < 64) this.sentBy.set(key, sentBy);
    }
    return {
      transport,
      host: sentBy.host,
      port: sentBy.port,
      params: new Map<string, string | null>([["branch", branch], ["rport", null]]),
      branch,
      raw: `SIP/2.0/${transport} ${here};branch=${branch};rport`,
    };
  }

  viaFor(out: Flow, branchId: string): string {
    return `SIP/2.0/${out.transport === "tcp" ? "TCP" : "UDP"} ${this.advertise(out)};branch=${branchId};rport`;
  }

  /** How many leading Route values name this element (§16.4; two after a double Record-Route). */
  private countOwnRoutes(req: SipRequest, flow: Flow): number {
    let n = 0;
    for (const value of routeValues(req)) {
      const na = parseNameAddr(value);
      const uri = na === undefined ? undefined : parseUri(na.uri);
      if (uri === undefined) break;
      const { host, port } = uriHostPort(uri);
      if (!this.isOwn(host, port, flow)) break;
      n++;
    }
    return n;
  }

  /** Whether host:port is this element: the flow's local address, what we advertise, or the configured check. */
  isOwn(host: string, port: number, flow: Flow): boolean {
    const h = host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
    if (port === flow.localPort && h.toLowerCase() === flow.localAddress.toLowerCase()) return true;
    if (hostPort(h, port).toLowerCase() === this.advertise(flow).toLowerCase()) return true;
    return this.isOwnAddress?.(h, port) ?? false;
  }
}

// --- pure helpers -------------------------------------------------------------------------

/**
 * RFC 3261 §16.7 step 6, over final statuses (0 = none): "the proxy MUST choose from the 6xx
 * class responses if any exist ... If no 6xx class responses are present, the proxy SHOULD
 * choose from the lowest response class". Ties go to the earliest entry. Returns the index,
 * or -1 when there is no final status.
 */
export function chooseBestResponse(statuses: readonly number[]): number {
  let best = -1;
  let bestRank = Infinity;
  for (let i = 0; i < statuses.length; i++) {
    const s = statuses[i]!;
    if (!(s >= 300 && s <= 699)) continue;
    const cls = Math.floor(s / 100);
    const rank = cls === 6 ? 0 : cls;
    if (rank < bestRank) {
      best = i;
      bestRank = rank;
    }
  }
  return best;
}

/**
 * §16.6 step 8's loop-detection input minus the top Via (see the header comment): Request-URI,
 * Call-ID, From and To tags, CSeq number, Proxy-Require, Proxy-Authorization and the Route
 * values left after ours. 64 bits as base-36 (no "." so it can follow a branch after one).
 */
export function loopDetectionHash(req: SipRequest, ownRoutes: number): string {
  // One pass over the headers and a JS hash: no call into OpenSSL on the INVITE → fork path,
  // where each native call runs cold code (bench/README.md). The hash only has to tell this
  // request's fields apart from another's, not resist an attacker (§16.3 step 4).
  let text = `${req.uri}\n${req.callId}\n${req.from.tag ?? ""}\n${req.to.tag ?? ""}\n${req.cseq.seq}`;
  let routes: string[] | undefined;
  for (const h of req.headers) {
    if (h.name === "proxy-require") text += `\nPR${h.value}`;
    else if (h.name === "proxy-authorization") text += `\nPA${h.value}`;
    else if (h.name === "route") routes = splitList(h.value, routes ?? []);
  }
  if (routes !== undefined) for (let i = ownRoutes; i < routes.length; i++) text += `\nR${routes[i]!}`;
  return textHash64(text);
}

/**
 * 64 bits of a string as 14 base-36 characters (RFC 3261 token characters, fit for a Via
 * branch): two 32-bit multiplicative lanes (FNV-1a and a Murmur-style one), each finished
 * with MurmurHash3's avalanche so that every input bit moves every output bit.
 */
export function textHash64(text: string): string {
  let a = 0x811c9dc5;
  let b = 0x9747b28c ^ text.length;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193);
    b = Math.imul(b ^ c, 0x5bd1e995);
    b ^= b >>> 15;
  }
  return (fmix32(a) >>> 0).toString(36).padStart(7, "0") + (fmix32(b) >>> 0).toString(36).padStart(7, "0");
}

function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return h ^ (h >>> 16);
}

/** §16.11: a stateless branch, equal for retransmissions: a hash of the incoming top Via and request line. */
function statelessBranch(req: SipRequest): string {
  const top = req.via[0];
  const digest = hash("sha1", `${top?.raw ?? ""}\n${req.uri}\n${req.callId}${req.cseq.seq}`, "base64url");
  return `${MAGIC_COOKIE}-sl${digest.slice(0, 16)}`;
}

/**
 * What is left of an ended call's INVITE: the identifiers (Call-ID, tags, CSeq) without its
 * headers, Vias and body, so the parsed message and its datagram can be collected.
 */
function requestHusk(req: SipRequest): SipRequest {
  if (req.headers.length === 0) return req;
  // Copies, not slices: a slice would keep the whole INVITE's text for as long as the husk lives.
  const tagOnly = (n: SipRequest["from"]): SipRequest["from"] => ({ displayName: undefined, uri: "", params: new Map(), tag: n.tag === undefined ? undefined : detached(n.tag), raw: "" });
  return { kind: "request", method: req.method, uri: "", maxForwards: req.maxForwards, headers: [], body: EMPTY_BODY, via: [], callId: detached(req.callId), cseq: { seq: req.cseq.seq, method: req.cseq.method }, from: tagOnly(req.from), to: tagOnly(req.to) };
}

const EMPTY_BODY = Buffer.alloc(0);

/** Every Route value in order (comma-joined lines split). */
function routeValues(req: SipRequest): string[] {
  const out: string[] = [];
  for (const h of req.headers) if (h.name === "route") splitList(h.value, out);
  return out;
}

/** A copy of req without its first n Route values (§16.4: those named this element). */
export function removeLeadingRoutes(req: SipRequest, n: number): SipRequest {
  const headers: SipHeader[] = [];
  let left = n;
  for (const h of req.headers) {
    if (h.name !== "route" || left === 0) {
      headers.push(h);
      continue;
    }
    const values = splitList(h.value);
    const keep = values.slice(Math.min(left, values.length));
    left -= values.length - keep.length;
    if (keep.length > 0) headers.push({ name: "route", value: keep.join(", ") });
  }
  return { ...req, headers };
}

/**
 * §16.7 step 3: "The proxy removes the topmost Via header field value from the response."
 * A response parsed from a datagram goes out as the bytes received less the top Via value (its
 * line, or the value and its comma on a shared line), as a proxy relays what it does not change;
 * one whose bytes cannot be cut exactly (folded Via, non-ASCII header block, no Content-Length,
 * or a copy) is re-serialised.
 */
export function stripTopVia(res: SipResponse): SipResponse {
  const src = res.source !== undefined && res.source.of === res ? res.source : undefined;
  const headers = res.headers.slice();
  for (let i = 0; i < headers.length; i++) {
    const h = headers[i]!;
    if (h.name !== "via") continue;
    const values = splitList(h.value);
    if (values.length > 1) headers[i] = { name: "via", value: values.slice(1).join(", ") };
    else headers.splice(i, 1);
    break;
  }
  const out: SipResponse = { ...res, headers, via: res.via.slice(1), source: undefined };
  if (src === undefined) return out;
  const bytes = Buffer.allocUnsafe(src.end - src.start - (src.topViaEnd - src.topViaStart));
  const head = src.bytes.copy(bytes, 0, src.start, src.topViaStart);
  src.bytes.copy(bytes, head, src.topViaEnd, src.end);
  return withBytes(out, bytes);
}

/**
 * Relays a forwarded in-dialog request's responses back to its server transaction (§16.7).
 * Only the request's identifiers are kept for a synthesized 408/503, not the parsed request.
 */
class RelayCallbacks implements ClientTransactionCallbacks {
  private req: SipRequest | undefined;
  constructor(private readonly tx: ServerTransaction, req: SipRequest) {
    this.req = req;
  }
  onProvisional(res: SipResponse): void {
    if (res.status > 100) this.tx.respond(stripTopVia(res));
  }
  onFinal(res: SipResponse): void {
    this.req = undefined;
    this.tx.respond(stripTopVia(res));
  }
  // §16.8 / §16.9: no answer is a 408, an unreachable next hop a 503.
  onTimeout(): void {
    if (this.req !== undefined) this.tx.respond(createResponse(this.req, 408, "Request Timeout"));
    this.req = undefined;
  }
  onTransportError(): void {
    if (this.req !== undefined) this.tx.respond(createResponse(this.req, 503, "Service Unavailable"));
    this.req = undefined;
  }
}

interface ReInviteHost {
  done(tx: InviteServerTransaction): void;
  sendCancel(forwarded: SipRequest, out: Flow, reason: string | undefined): void;
}

/**
 * A re-INVITE relayed inside a dialog: responses go back like any relayed request's, and a
 * CANCEL from the sender is passed on (§16.10) once the next hop has sent a provisional
 * response (§9.1: never before), or dropped once it has answered finally.
 */
class ReInviteRelay extends RelayCallbacks {
  private provisionalSeen = false;
  /** A CANCEL waiting for the first provisional response; null when none is. */
  private pendingCancel: string | null = null;
  private cancelled = false;
  private finished = false;

  constructor(
    private readonly serverTx: InviteServerTransaction,
    req: SipRequest,
    private readonly forwarded: SipRequest,
    private readonly out: Flow,
    private readonly host: ReInviteHost,
  ) {
    super(serverTx, req);
  }

  cancel(reason: string | undefined): void {
    if (this.finished || this.cancelled) return;
    if (!this.provisionalSeen) {
      this.pendingCancel = reason ?? "";
      return;
    }
    this.cancelled = true;
    this.host.sendCancel(this.forwarded, this.out, reason);
  }

  override onProvisional(res: SipResponse): void {
    this.provisionalSeen = true;
    if (this.pendingCancel !== null) {
      const reason = this.pendingCancel;
      this.pendingCancel = null;
      this.cancel(reason === "" ? undefined : reason);
    }
    super.onProvisional(res);
  }

  override onFinal(res: SipResponse): void {
    this.end();
    super.onFinal(res);
  }

  override onTimeout(): void {
    this.end();
    super.onTimeout();
  }

  override onTransportError(): void {
    this.end();
    super.onTransportError();
  }

  private end(): void {
    this.finished = true;
    this.pendingCancel = null;
    this.host.done(this.serverTx);
  }
}

/** §9.1 CANCEL of a forwarded INVITE, with an RFC 3326 Reason when there is one. */
function cancelWithReason(invite: SipRequest, reason: string | undefined): SipRequest | undefined {
  const cancel = buildCancel(invite);
  if (cancel !== undefined && reason !== undefined) cancel.headers.splice(cancel.headers.length - 1, 0, { name: "reason", value: reason });
  return cancel;
}

/** Where requests inside a dialog go toward one of its sides (§12.2.1.1). */
export interface DialogLeg {
  /** Request-URI: that side's Contact (its remote target). */
  target: string;
  /** Route set toward it, nearest hop first. */
  routes: readonly string[];
  /** To: that side, with its tag. */
  to: string;
}

/**
 * The answering leg as its 2xx describes it (§12.1.2, from the caller's side below us): the
 * 2xx's Contact (else the URI the branch was sent to), the Record-Route values downstream of
 * ours reversed, the 2xx's To.
 */
function legOf2xx(res: SipResponse, branch: BranchImpl, proxy: StatefulProxy): DialogLeg {
  const contact = parseNameAddr(getHeader(res, "contact") ?? "");
  const rr = getHeaders(res, "record-route");
  const ownIndex = rr.findIndex((v) => {
    const u = parseUri(parseNameAddr(v)?.uri ?? "");
    if (u === undefined) return false;
    const { host, port } = uriHostPort(u);
    return proxy.isOwn(host, port, branch.target.flow);
  });
  return { target: contact?.uri ?? branch.origin.uri, routes: (ownIndex >= 0 ? rr.slice(0, ownIndex) : rr).reverse(), to: res.to.raw };
}

/**
 * A request the proxy sends itself inside a dialog, as the UAC of one side: the ACK and BYE
 * of a late-answering leg, a BYE on behalf of a dead phone. Built as text and parsed like
 * every other request the agent originates (cold path).
 */
export function buildInDialogRequest(
  leg: DialogLeg,
  from: string,
  callId: string,
  method: string,
  seq: number,
  via: string,
  extra: SipHeader[] = [],
): SipRequest | undefined {
  const lines = [
    `${method} ${leg.target} SIP/2.0`,
    `Via: ${via}`,
    ...(leg.routes.length > 0 ? [`Route: ${leg.routes.join(", ")}`] : []),
    "Max-Forwards: 70",
    `From: ${from}`,
    `To: ${leg.to}`,
    `Call-ID: ${callId}`,
    `CSeq: ${seq} ${method}`,
    ...extra.map((h) => `${h.name}: ${h.value}`),
    "Content-Length: 0",
    "",
    "",
  ];
  const parsed = parseDatagram(Buffer.from(lines.join("\r\n")));
  return parsed.ok && parsed.message.kind === "request" ? parsed.message : undefined;
}

/**
 * The BYE a dead callee would have sent to the caller (§12.1.1, the UAS's view): to the caller's
 * Contact along the INVITE's Record-Route in order, From the callee's tag.
 */
function byeToCaller(invite: SipRequest, calleeTag: string, via: string): SipRequest | undefined {
  const contact = parseNameAddr(getHeader(invite, "contact") ?? "");
  if (contact === undefined || invite.headers.length === 0) return undefined;
  const leg = { target: contact.uri, routes: getHeaders(invite, "record-route"), to: invite.from.raw };
  return buildInDialogRequest(leg, `<${invite.to.uri}>;tag=${calleeTag}`, invite.callId, "BYE", BYE_ON_BEHALF_CSEQ, via, [{ name: "reason", value: 'SIP;cause=480;text="Callee unreachable"' }]);
}

/** The BYE a dead caller would have sent to the answering leg (its 2xx's view, legOf2xx). */
function byeToCallee(invite: SipRequest, callee: DialogLeg, via: string): SipRequest | undefined {
  if (invite.headers.length === 0) return undefined;
  return buildInDialogRequest(callee, invite.from.raw, invite.callId, "BYE", BYE_ON_BEHALF_CSEQ, via, [{ name: "reason", value: 'SIP;cause=480;text="Caller unreachable"' }]);
}

// Neither side's own CSeq count is known here: one far above anything a phone counts to in a
// call (they start low and count up), and below 2^31 (§8.1.1.5).
const BYE_ON_BEHALF_CSEQ = 2_000_000_000;

export type { ProxyDialogInfo };
