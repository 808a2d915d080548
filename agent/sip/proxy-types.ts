// The contract between the stateful forking proxy (mechanism, agent/sip/proxy.ts) and the
// routing engine (policy, agent/routing/engine.ts). The proxy knows SIP: transactions,
// forking, best-response choice (RFC 3261 §16.7), CANCEL, Record-Route and in-dialog routing.
// It knows nothing about groups, members or strategies: the engine decides who rings, the
// proxy makes it happen and reports back.
import type { Flow, SipHeader, SipRequest, SipResponse } from "./types.ts";
import type { ServerTransaction } from "./transaction.ts";
import type { ProxyDialogInfo } from "./dialogs.ts";
export type { ProxyDialogInfo } from "./dialogs.ts";

/** One place a forked INVITE goes: a device binding, the trunk, voicemail. */
export interface BranchTarget {
  /** Request-URI of the branch (a binding's Contact, or sip:<number>@<trunk>). */
  uri: string;
  /** Where to send it: for a binding, the flow it registered from (NAT-safe, RFC 5626 spirit). */
  flow: Flow;
  /** Bookkeeping for the engine, carried untouched. */
  deviceId?: string;
  memberId?: string;
  /** Extra headers on this branch only (e.g. Call-Info answer-after=0 for pickup). */
  headers?: SipHeader[];
  /**
   * Timer C of this branch in ms (RFC 3261 §16.6 step 11), e.g. the ring step length; default:
   * the proxy's. When it fires the branch is cancelled (or 408 without a provisional) and
   * reported through onBranchFailed(…, 408).
   */
  timerC?: number;
}

export type BranchState = "calling" | "ringing" | "answered" | "failed" | "cancelled" | "timeout";

export interface Branch {
  /** Our Via branch parameter for this fork. */
  readonly id: string;
  readonly target: BranchTarget;
  readonly state: BranchState;
  /** Last status received on the branch (undefined before any response). */
  readonly lastStatus: number | undefined;
  /** performance.now() when the INVITE went out. */
  readonly sentAt: number;
}

export interface ProxyCallEvents {
  /** A branch answered 180/183 for the first time. The proxy itself relays ringing upstream. */
  onRinging?(call: ProxyCall, branch: Branch, res: SipResponse): void;
  /**
   * A branch ended without answering: a final non-2xx, Timer B or C, a transport error.
   * `status` is the received (or synthesized 408/503) status. The proxy does NOT answer
   * upstream by itself while the engine may still fork: the engine decides (fork more, or
   * reject()). When the engine does nothing and no branch is left, the call stays open
   * until the engine acts — engines must always act.
   */
  onBranchFailed?(call: ProxyCall, branch: Branch, status: number): void;
  /**
   * The first 2xx. Already done by the proxy: relayed upstream, every other branch cancelled
   * with `Reason: SIP;cause=200;text="Call completed elsewhere"` (RFC 3326).
   */
  onAnswered?(call: ProxyCall, branch: Branch): void;
  /** The caller sent CANCEL: the proxy already cancelled every branch and answered 487. */
  onCallerCancelled?(call: ProxyCall): void;
  /** The call is over: BYE from either side after an answer, or the final upstream answer was a failure. */
  onEnded?(call: ProxyCall, info: { answered: boolean; by: "caller" | "callee" | "proxy"; status?: number }): void;
}

export interface ProxyCall {
  /** Internal id, unique per process. */
  readonly id: string;
  /** The caller's INVITE as received. */
  readonly request: SipRequest;
  /** The flow it came in on. */
  readonly flow: Flow;
  /** performance.now() when the INVITE was received (for the first-fork latency). */
  readonly receivedAt: number;
  /** performance.now() when the first branch went out, once it has. */
  readonly firstForkAt: number | undefined;
  readonly branches: readonly Branch[];
  readonly answered: Branch | undefined;
  /** A final response has been sent upstream (2xx relayed or a rejection). */
  readonly finished: boolean;
  /** The dialog once a branch answered (until BYE): for the engine's busy tracking. */
  readonly dialog?: ProxyDialogInfo;
}

export interface RejectOptions {
  /**
   * Send exactly the engine's status. Default false: when every branch is done, the response
   * sent is the best of the engine's and the branches' final responses (RFC 3261 §16.7 step 6:
   * a 6xx first, else the lowest class; within a class the engine's own).
   */
  exact?: boolean;
}

export interface StatefulProxyApi {
  /**
   * Take over an INVITE server transaction. Sends 100 Trying at once (RFC 3261 §16.2), checks
   * Max-Forwards (483) and loops (482, §16.3 step 4), and returns undefined when it already
   * answered the request itself.
   */
  startCall(tx: ServerTransaction, req: SipRequest, flow: Flow, events: ProxyCallEvents): ProxyCall | undefined;
  /** Fork one branch now: Via, Record-Route, Max-Forwards-1, Timer C. Undefined when the call is finished. */
  fork(call: ProxyCall, target: BranchTarget): Branch | undefined;
  /** CANCEL one ringing branch (a sequential step ends, a device went offline). */
  cancelBranch(call: ProxyCall, branch: Branch, reason?: string): void;
  /** Send a provisional response upstream (182 Queued while waiting for an operator; 183 with SDP for music on hold). */
  provisional(call: ProxyCall, status: number, reason: string, headers?: SipHeader[], body?: { contentType: string; body: Buffer }): void;
  /**
   * While on, branches' 18x are not relayed upstream (the appliance plays early media to the
   * caller on its own early dialog: another dialog's 180 would make the caller's side ring).
   */
  suppressRinging?(call: ProxyCall, on: boolean): void;
  /**
   * The appliance answers the call itself (voicemail, a greeting): a 2xx on the proxy's own To
   * tag with the INVITE's Record-Route copied (RFC 3261 §12.1.1), every branch still alive
   * cancelled. The proxy forgets the call (no dialog of its own; the in-dialog requests are the
   * UAS's, sip/uas-session.ts) and reports nothing more about it. Returns the 2xx and how to
   * send it again (the UAS core retransmits it, §13.3.1.4); undefined when the call is finished.
   */
  answerLocally?(call: ProxyCall, headers: SipHeader[], body: { contentType: string; body: Buffer }): { response: SipResponse; resend(): void } | undefined;
  /** Final failure upstream; every branch still alive is cancelled first. */
  reject(call: ProxyCall, status: number, reason: string, headers?: SipHeader[], options?: RejectOptions): void;
  /** Branches not yet in a final state. */
  activeBranches(call: ProxyCall): Branch[];
  /**
   * A device on one side of an answered call is gone: BYE the other side on its behalf (byeTo:
   * the live side; default the caller) and forget the dialog (later requests get 481).
   */
  releaseDialog?(call: ProxyCall, byeTo?: "caller" | "callee"): void;
}

export interface ProxyStats {
  /** Calls not yet finished (ringing). */
  calls: number;
  /** Confirmed dialogs (answered calls not yet ended by BYE). */
  dialogs: number;
  earlyDialogs: number;
  /** INVITE client transactions alive. */
  branches: number;
  /** 2xx from a second branch after the call was answered (or finished): ACKed and BYEd. */
  lateAnswersReleased: number;
  /** Responses matching no transaction, dropped (RFC 6026 §7.2). */
  strayResponses: number;
}

/** Read-only views beside the contract (status, busy tracking). */
export interface ProxyStatusApi {
  dialogCount(): number;
  stats(): ProxyStats;
}
