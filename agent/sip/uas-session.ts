// The appliance as the UAS of a call it answered itself (voicemail today; greetings and
// listening later): the mechanism of one dialog, with no policy. The proxy sends the 2xx
// (StatefulProxyApi.answerLocally); from then on the dialog lives here:
//
// - 2xx retransmission (RFC 3261 §13.3.1.4): the 2xx is sent again after T1, doubling up to T2,
//   until the ACK arrives. No ACK within 64×T1: "the dialog is confirmed, but the session SHOULD
//   be terminated" — with a BYE.
// - Requests inside the dialog (§12.2.2): matched by Call-ID and both tags; a CSeq not above the
//   last one gets 500. BYE is answered 200 and ends the session (§15.1.2); INFO carrying a DTMF
//   digit (application/dtmf-relay, application/dtmf, the legacy non-package INFO usage RFC 6086
//   §2 keeps working) is answered 200 and reported; an INFO with a body we do not understand
//   gets 415 with Accept (RFC 6086 §4.2.2 / RFC 3261 §21.4.16), a malformed one 400; OPTIONS 200;
//   a re-INVITE or UPDATE 488 (the session stays as negotiated: RFC 3261 §14.2 lets a UAS refuse
//   a re-offer and keep the old session), anything else 405 with Allow.
// - Our own BYE (§15.1.1) when the feature is done: Request-URI the caller's Contact (the remote
//   target), Route the INVITE's Record-Route in order (the UAS's route set, §12.1.1), From our
//   To with our tag, To the caller's From, our own CSeq, over the flow the caller uses. §15: the
//   callee "MUST NOT send a BYE on a confirmed dialog until it has received an ACK for its 2xx
//   response or until the server transaction times out": a hang-up before the ACK waits for it.
// - CANCEL before the answer is the proxy's (487); after the answer it changes nothing (§9.2).
import { parseDtmfInfo } from "./dtmf-info.ts";
import type { Logger } from "../log.ts";
import { getHeader, getHeaders, parseNameAddr } from "./message.ts";
import { buildInDialogRequest } from "./proxy.ts";
import { createResponse } from "./serialize.ts";
import type { ClientTransactionCallbacks, ServerTransaction } from "./transaction.ts";
import type { Flow, SipRequest, SipResponse } from "./types.ts";

export type UasState = "answered" | "confirmed" | "ended";
export type UasEndReason = "bye" | "no-ack" | "local" | "stopped";

export interface UasEvents {
  /** The ACK for the 2xx arrived (§13.3.1.4). */
  onConfirmed?(): void;
  /** A DTMF digit from a SIP INFO inside the dialog. */
  onDigit?(digit: string): void;
  /** The session is over (BYE either way, no ACK, agent stop); called once. */
  onEnded?(why: UasEndReason): void;
}

export interface UasDeps {
  sendRequest(req: SipRequest, flow: Flow, callbacks: ClientTransactionCallbacks): { ok: boolean };
  /** A Via header value for a new request over `flow`, with a fresh branch. */
  via(flow: Flow): string;
  /** RFC 3261 timers, ms (defaults 500 / 4000). */
  T1?: number;
  T2?: number;
  log?: Logger;
}

const ALLOW = "INVITE, ACK, BYE, CANCEL, INFO, OPTIONS";
const IGNORE: ClientTransactionCallbacks = Object.freeze({ onFinal: () => undefined, onTimeout: () => undefined, onTransportError: () => undefined });
/** One answered call's dialog, the appliance being the UAS. */
export class UasSession {
  stateValue: UasState = "answered";
  private retransmitTimer: NodeJS.Timeout | undefined;
  private giveUpTimer: NodeJS.Timeout | undefined;
  private interval: number;
  private remoteSeq: number;
  private localSeq = 1;
  private byeWaitsForAck = false;
  flow: Flow;

  constructor(
    readonly key: string,
    private readonly invite: SipRequest,
    flow: Flow,
    private readonly answer: { response: SipResponse; resend(): void },
    private readonly events: UasEvents,
    private readonly deps: UasDeps,
    private readonly onGone: (s: UasSession) => void,
  ) {
    this.flow = flow;
    this.remoteSeq = invite.cseq.seq;
    const t1 = deps.T1 ?? 500;
    this.interval = t1;
    this.retransmitTimer = setTimeout(() => this.retransmit(), this.interval);
    this.giveUpTimer = setTimeout(() => this.noAck(), 64 * t1);
  }

  get state(): UasState {
    return this.stateValue;
  }

  /** The caller's Call-ID (for logs and events). */
  get callId(): string {
    return this.invite.callId;
  }

  /** Hang up from our side: BYE now, or as soon as the ACK arrives (§15). Idempotent. */
  hangup(): void {
    if (this.stateValue === "ended") return;
    if (this.stateValue === "answered") {
      this.byeWaitsForAck = true;
      return;
    }
    this.sendBye();
    this.end("local");
  }

  /** Agent stop: BYE whatever the state (the server transaction is going away too). */
  stop(): void {
    if (this.stateValue === "ended") return;
    this.sendBye();
    this.end("stopped");
  }

  ack(): void {
    if (this.stateValue !== "answered") return; // retransmitted ACK
    this.stopTimers();
    this.stateValue = "confirmed";
    this.emit(() => this.events.onConfirmed?.());
    if (this.byeWaitsForAck) this.hangup();
  }

  request(tx: ServerTransaction, req: SipRequest, flow: Flow): void {
    const respond = (status: number, reason: string, headers?: Array<{ name: string; value: string }>): void => {
      tx.respond(createResponse(req, status, reason, headers !== undefined ? { headers } : {}));
    };
    if (this.stateValue === "ended") {
      respond(481, "Call/Transaction Does Not Exist");
      return;
    }
    // §12.2.2: "lower than the remote sequence number ... out of order and MUST be rejected with a 500".
    if (req.cseq.seq < this.remoteSeq) {
      respond(500, "Server Internal Error", [{ name: "retry-after", value: "1" }]);
      return;
    }
    this.remoteSeq = req.cseq.seq;
    this.flow = flow;
    switch (req.method) {
      case "BYE":
        // §15.1.2: 200 to the BYE, the session ends. A BYE before the ACK (it overtook it, or a
        // hostile caller) ends it too: nothing is left to retransmit to.
        respond(200, "OK");
        this.end("bye");
        return;
      case "INFO": {
        const d = parseDtmfInfo(getHeader(req, "content-type"), req.body);
        if (!d.ok) {
          respond(d.status, d.status === 415 ? "Unsupported Media Type" : "Bad Request", d.status === 415 ? [{ name: "accept", value: "application/dtmf-relay, application/dtmf" }] : [{ name: "warning", value: `399 ringedge "${d.reason}"` }]);
          return;
        }
        respond(200, "OK");
        if (d.digit !== undefined) {
          const digit = d.digit;
          this.emit(() => this.events.onDigit?.(digit));
        }
        return;
      }
      case "OPTIONS":
        respond(200, "OK", [{ name: "allow", value: ALLOW }, { name: "accept", value: "application/sdp" }]);
        return;
      case "INVITE":
      case "UPDATE":
        respond(488, "Not Acceptable Here");
        return;
      default:
        respond(405, "Method Not Allowed", [{ name: "allow", value: ALLOW }]);
    }
  }

  private retransmit(): void {
    if (this.stateValue !== "answered") return;
    this.answer.resend();
    this.interval = Math.min(this.interval * 2, this.deps.T2 ?? 4000);
    this.retransmitTimer = setTimeout(() => this.retransmit(), this.interval);
  }

  /** §13.3.1.4: no ACK after 64×T1 — the session is terminated with a BYE. */
  private noAck(): void {
    if (this.stateValue !== "answered") return;
    this.stopTimers();
    this.deps.log?.info("no ACK for our 2xx: ending the session", { callId: this.invite.callId });
    this.sendBye();
    this.end("no-ack");
  }

  private sendBye(): void {
    const contact = parseNameAddr(getHeader(this.invite, "contact") ?? "");
    if (contact === undefined) return; // checkRequest requires it in an INVITE; nowhere to send
    const leg = { target: contact.uri, routes: getHeaders(this.invite, "record-route"), to: this.invite.from.raw };
    const bye = buildInDialogRequest(leg, this.answer.response.to.raw, this.invite.callId, "BYE", ++this.localSeq, this.deps.via(this.flow));
    if (bye === undefined) return;
    const r = this.deps.sendRequest(bye, this.flow, IGNORE);
    if (!r.ok) this.deps.log?.debug("BYE not sent", { callId: this.invite.callId });
  }

  private end(why: UasEndReason): void {
    if (this.stateValue === "ended") return;
    this.stateValue = "ended";
    this.stopTimers();
    this.onGone(this);
    this.emit(() => this.events.onEnded?.(why));
  }

  private stopTimers(): void {
    if (this.retransmitTimer !== undefined) clearTimeout(this.retransmitTimer);
    if (this.giveUpTimer !== undefined) clearTimeout(this.giveUpTimer);
    this.retransmitTimer = undefined;
    this.giveUpTimer = undefined;
  }

  private emit(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.deps.log?.error("UAS session listener threw", { err: (err as Error).message });
    }
  }
}

/** The dialogs the appliance answered, by Call-ID and tags; the agent dispatches to it first. */
export class UasDialogs {
  private readonly sessions = new Map<string, UasSession>();

  constructor(private readonly deps: UasDeps) {}

  /** Starts the dialog of a 2xx just sent for `invite` (answerLocally's result). */
  open(invite: SipRequest, flow: Flow, answer: { response: SipResponse; resend(): void }, events: UasEvents): UasSession {
    const key = dialogKey(invite.callId, answer.response.to.tag ?? "", invite.from.tag ?? "");
    const s = new UasSession(key, invite, flow, answer, events, this.deps, (gone) => {
      if (this.sessions.get(gone.key) === gone) this.sessions.delete(gone.key);
    });
    this.sessions.set(key, s);
    return s;
  }

  /** An ACK for one of our 2xx: true when it was ours (nothing else is to be done with it). */
  handleAck(req: SipRequest): boolean {
    const s = this.lookup(req);
    if (s === undefined) return false;
    s.ack();
    return true;
  }

  /** A request with a To tag: true when it belongs to one of our dialogs (then it is answered). */
  handleRequest(tx: ServerTransaction, req: SipRequest, flow: Flow): boolean {
    const s = this.lookup(req);
    if (s === undefined) return false;
    s.request(tx, req, flow);
    return true;
  }

  count(): number {
    return this.sessions.size;
  }

  /** Agent stop: every session ends with a BYE. */
  stopAll(): void {
    for (const s of [...this.sessions.values()]) s.stop();
  }

  private lookup(req: SipRequest): UasSession | undefined {
    if (this.sessions.size === 0 || req.to.tag === undefined || req.from.tag === undefined) return undefined;
    return this.sessions.get(dialogKey(req.callId, req.to.tag, req.from.tag));
  }
}

function dialogKey(callId: string, localTag: string, remoteTag: string): string {
  return `${callId}\n${localTag}\n${remoteTag}`;
}
