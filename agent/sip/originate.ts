// Calls the agent places itself, as a UAC (RFC 3261 §8.1, §12.1.2, §13.2): one INVITE client
// transaction per leg (the transaction layer's), the dialog it creates, the ACK for its 2xx
// (§13.2.2.4: a new request, not part of the transaction, sent when the TU says so — third-party
// call control holds it until the other leg has answered, RFC 3725 flow I), CANCEL while it
// rings (§9.1), BYE to end it (§15.1.1), and the in-dialog requests its peer sends: BYE gets
// 200 (§15.1.2), a re-INVITE or UPDATE 488 (the session is the controller's to change; the
// peer keeps the old one, §14.2), anything else 200 (INFO, OPTIONS) or 405 (§8.2.1).
//
// Mechanism only: what the legs are for and how they are joined is the TU's business
// (routing/callback-service.ts). It keeps no state once a leg has ended.
import type { Logger } from "../log.ts";
import { getHeader, getHeaders } from "./message.ts";
import { buildInDialogRequest, hostPort, randomToken } from "./requests.ts";
import { createResponse, serialize } from "./serialize.ts";
import { buildCancel, type ClientTransaction, type ClientTransactionCallbacks, type SendRequestOptions, type SendRequestResult, type ServerTransaction } from "./transaction.ts";
import type { Flow, SipRequest, SipResponse } from "./types.ts";

export interface OriginateDeps {
  /** TransactionLayer.sendRequest. */
  sendRequest(req: SipRequest, flow: Flow, callbacks: ClientTransactionCallbacks, options?: SendRequestOptions): SendRequestResult;
  createBranch(): string;
  /** Sends bytes outside any transaction (the ACK for a 2xx, §17.1.1.3). */
  send(flow: Flow, bytes: Buffer): void;
  log: Logger;
}

export interface LegRequest {
  /** Request-URI (a phone's registered Contact, a trunk URI). */
  target: string;
  flow: Flow;
  /** Our address for Via, From and Contact (advertise.ts). */
  localAddress: string;
  /** From user part and display name (a phone shows it: "Callback +4930…"). */
  fromUser: string;
  fromDisplay?: string;
  /** To URI (the request URI when absent). */
  to?: string;
  /** SDP offer; absent: the peer makes the offer in its 2xx (RFC 3261 §13.2.1, RFC 3725 flow I). */
  sdp?: string;
  headers?: Array<[string, string]>;
  /** Give up ringing after this long: CANCEL, and onFailed(487). */
  ringTimeoutMs: number;
}

export interface LegEvents {
  /** The first 2xx: the dialog is established (the ACK waits for leg.ack()). */
  onAnswered(leg: Leg, res: SipResponse): void;
  /** No dialog: a final non-2xx, no answer in time (487 after our CANCEL, 408), transport failure (503). */
  onFailed(leg: Leg, status: number): void;
  /** The peer ended the answered call with BYE. */
  onEnded(leg: Leg): void;
}

export type LegState = "calling" | "ringing" | "answered" | "confirmed" | "ended" | "failed";

const MAX_LEGS = 1000;

export class Leg {
  state: LegState = "calling";
  readonly callId = `${randomToken(12)}@ringedge`;
  readonly localTag = randomToken(6);
  remoteTag: string | undefined;
  /** The 2xx's SDP (the peer's offer or answer). */
  remoteSdp: string | undefined;
  private remoteTarget: string;
  private routeSet: string[] = [];
  private cseq = 1;
  private invite: SipRequest | undefined;
  private tx: ClientTransaction | undefined;
  private ackBytes: Buffer | undefined;
  private ringTimer: NodeJS.Timeout | undefined;
  private readonly from: string;

  constructor(
    private readonly owner: Originator,
    readonly req: LegRequest,
    readonly events: LegEvents,
  ) {
    this.remoteTarget = req.target;
    const display = req.fromDisplay === undefined ? "" : `"${req.fromDisplay.replace(/["\\\r\n]/g, "")}" `;
    this.from = `${display}<sip:${req.fromUser}@${hostPort(req.localAddress, req.flow.localPort)}>;tag=${this.localTag}`;
  }

  /** The To header value (with the peer's tag once answered). */
  private get to(): string {
    return `<${this.req.to ?? this.req.target}>${this.remoteTag !== undefined ? `;tag=${this.remoteTag}` : ""}`;
  }

  private get contact(): string {
    return `<sip:ringedge@${hostPort(this.req.localAddress, this.req.flow.localPort)}${this.req.flow.transport === "tcp" ? ";transport=tcp" : ""}>`;
  }

  /** Sends the INVITE. False when the transaction layer refused it (the leg failed at once). */
  start(): boolean {
    const r = this.req;
    const invite = buildInDialogRequest({
      method: "INVITE",
      target: r.target,
      flow: r.flow,
      localAddress: r.localAddress,
      branch: this.owner.deps.createBranch(),
      from: this.from,
      to: this.to,
      callId: this.callId,
      cseq: this.cseq,
      headers: [["Contact", this.contact], ["Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO"], ...(r.headers ?? [])],
      ...(r.sdp !== undefined ? { body: { contentType: "application/sdp", data: r.sdp } } : {}),
    });
    this.invite = invite;
    const sent = this.owner.deps.sendRequest(invite, r.flow, {
      onProvisional: (res) => {
        if (this.state === "calling" && res.status > 100) this.state = "ringing";
      },
      onFinal: (res) => this.onFinal(res),
      onTimeout: () => this.fail(408),
      onTransportError: () => this.fail(503),
    }, { timerC: false });
    if (!sent.ok) {
      this.owner.deps.log.warn("originate: INVITE not sent", { target: r.target, error: sent.error });
      this.state = "failed";
      this.owner.forget(this);
      return false;
    }
    this.tx = sent.tx;
    this.ringTimer = setTimeout(() => this.cancel(), r.ringTimeoutMs);
    this.ringTimer.unref();
    return true;
  }

  /** Stops a ringing leg (§9.1: CANCEL only after a provisional; before one, the timeout ends it). */
  cancel(): void {
    this.clearRing();
    if (this.state !== "calling" && this.state !== "ringing") return;
    if (this.state === "ringing" && this.invite !== undefined) {
      const c = buildCancel(this.invite);
      if (c !== undefined) this.owner.deps.sendRequest(c, this.req.flow, { onFinal: () => undefined, onTimeout: () => undefined, onTransportError: () => undefined });
      // The 487 (or a crossing 2xx) still arrives through onFinal; bounded like Timer B (64*T1).
      this.cancelled = true;
      this.ringTimer = setTimeout(() => this.fail(487), 32_000);
      this.ringTimer.unref();
      return;
    }
    // No provisional yet: a CANCEL may not be sent (§9.1); give up locally; a late 2xx is ACKed and ended.
    this.cancelled = true;
    this.fail(487);
  }

  private cancelled = false;

  /** §13.2.2.4: the ACK for the 2xx, with the answer when the 2xx carried the offer (RFC 3264 §5). */
  ack(sdp?: string): void {
    if (this.state !== "answered" || this.invite === undefined) return;
    const ack = buildInDialogRequest({
      method: "ACK",
      target: this.remoteTarget,
      routes: this.routeSet,
      flow: this.req.flow,
      localAddress: this.req.localAddress,
      branch: this.owner.deps.createBranch(),
      from: this.from,
      to: this.to,
      callId: this.callId,
      cseq: this.invite.cseq.seq,
      ...(sdp !== undefined ? { body: { contentType: "application/sdp", data: sdp } } : {}),
    });
    this.ackBytes = serialize(ack);
    this.owner.deps.send(this.req.flow, this.ackBytes);
    this.state = "confirmed";
  }

  /** Ends an answered leg (BYE, §15.1.1; an unacknowledged 2xx is ACKed first). A ringing leg is cancelled. */
  bye(): void {
    if (this.state === "calling" || this.state === "ringing") {
      this.cancel();
      return;
    }
    // RFC 3264 §5: an offer in the 2xx needs its answer in the ACK, even for a call we end at once.
    if (this.state === "answered") this.ack(this.remoteSdp !== undefined && this.ackBytes === undefined ? rejectingAnswer(this.remoteSdp) : undefined);
    if (this.state !== "confirmed") return;
    this.state = "ended";
    this.cseq = Math.max(this.cseq, this.invite?.cseq.seq ?? 1) + 1;
    const bye = buildInDialogRequest({ method: "BYE", target: this.remoteTarget, routes: this.routeSet, flow: this.req.flow, localAddress: this.req.localAddress, branch: this.owner.deps.createBranch(), from: this.from, to: this.to, callId: this.callId, cseq: this.cseq });
    this.owner.deps.sendRequest(bye, this.req.flow, { onFinal: () => undefined, onTimeout: () => undefined, onTransportError: () => undefined });
    this.owner.forget(this);
  }

  /** A request from the peer inside this dialog. */
  onRequest(tx: ServerTransaction, req: SipRequest): void {
    switch (req.method) {
      case "BYE": {
        tx.respond(createResponse(req, 200, "OK"));
        if (this.state === "ended") return;
        this.state = "ended";
        this.owner.forget(this);
        this.events.onEnded(this);
        return;
      }
      case "INVITE":
      case "UPDATE":
        tx.respond(createResponse(req, 488, "Not Acceptable Here", { headers: [{ name: "warning", value: '399 ringedge "the session is set by the agent"' }] }));
        return;
      case "INFO":
      case "OPTIONS":
      case "NOTIFY":
        tx.respond(createResponse(req, 200, "OK"));
        return;
      default:
        tx.respond(createResponse(req, 405, "Method Not Allowed", { headers: [{ name: "allow", value: "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO" }] }));
    }
  }

  private onFinal(res: SipResponse): void {
    if (res.status >= 200 && res.status < 300) {
      const tag = res.to.tag;
      if (this.remoteTag !== undefined && tag !== this.remoteTag) {
        // §13.2.2.4: a second dialog from a forking proxy downstream: ACK it and end it.
        this.endStray(res);
        return;
      }
      if (this.state === "confirmed" && this.ackBytes !== undefined) {
        // A 2xx retransmission: our ACK was lost (§13.2.2.4: ACK each one).
        this.owner.deps.send(this.req.flow, this.ackBytes);
        return;
      }
      if (this.state === "answered") return; // retransmission while the ACK waits for the other leg
      if (this.state === "ended" || this.state === "failed") {
        this.endStray(res);
        return;
      }
      this.clearRing();
      this.remoteTag = tag;
      this.remoteTarget = /<([^>]+)>/.exec(getHeader(res, "contact") ?? "")?.[1] ?? this.req.target;
      // §12.1.2: the route set is the 2xx's Record-Route in reverse order.
      this.routeSet = getHeaders(res, "record-route").map((v) => v.trim()).reverse();
      this.remoteSdp = res.body.length > 0 ? res.body.toString("utf8") : undefined;
      this.state = "answered";
      this.owner.index(this);
      if (this.cancelled) {
        // Our CANCEL crossed the answer: accept the dialog only to end it.
        this.bye();
        this.events.onFailed(this, 487);
        return;
      }
      this.events.onAnswered(this, res);
      return;
    }
    this.fail(res.status);
  }

  /** ACK and BYE for a 2xx we do not want (after a give-up, or a second forked answer, §13.2.2.4). */
  private endStray(res: SipResponse): void {
    const seq = this.invite?.cseq.seq ?? 1;
    const base = {
      target: /<([^>]+)>/.exec(getHeader(res, "contact") ?? "")?.[1] ?? this.req.target,
      routes: getHeaders(res, "record-route").map((v) => v.trim()).reverse(),
      flow: this.req.flow,
      localAddress: this.req.localAddress,
      from: this.from,
      to: getHeader(res, "to") ?? this.to,
      callId: this.callId,
    };
    const offer = res.body.length > 0 ? res.body.toString("utf8") : undefined;
    const answer = offer !== undefined ? { body: { contentType: "application/sdp", data: rejectingAnswer(offer) } } : {};
    this.owner.deps.send(this.req.flow, serialize(buildInDialogRequest({ ...base, method: "ACK", branch: this.owner.deps.createBranch(), cseq: seq, ...answer })));
    const bye = buildInDialogRequest({ ...base, method: "BYE", branch: this.owner.deps.createBranch(), cseq: seq + 1 });
    this.owner.deps.sendRequest(bye, this.req.flow, { onFinal: () => undefined, onTimeout: () => undefined, onTransportError: () => undefined });
  }

  private fail(status: number): void {
    this.clearRing();
    if (this.state !== "calling" && this.state !== "ringing") return;
    this.state = "failed";
    this.owner.forget(this);
    this.events.onFailed(this, status);
  }

  private clearRing(): void {
    if (this.ringTimer !== undefined) clearTimeout(this.ringTimer);
    this.ringTimer = undefined;
  }

  /** Dialog key of this leg: Call-ID and our tag (RFC 3261 §12: with the remote tag; ours alone is unique here). */
  get key(): string {
    return `${this.callId}\n${this.localTag}`;
  }
}

export class Originator {
  private readonly legs = new Map<string, Leg>();
  private readonly pending = new Set<Leg>();

  constructor(readonly deps: OriginateDeps) {}

  /** Places a call; undefined when too many are up or the INVITE could not be sent. */
  invite(req: LegRequest, events: LegEvents): Leg | undefined {
    if (this.legs.size + this.pending.size >= MAX_LEGS) return undefined;
    const leg = new Leg(this, req, events);
    this.pending.add(leg);
    return leg.start() ? leg : undefined;
  }

  /** Legs alive (ringing or in a dialog). */
  count(): number {
    return this.legs.size + this.pending.size;
  }

  /**
   * A request with a To tag (agent.ts, before the proxy): ours when its Call-ID and To tag name
   * one of our legs. Returns false for anything else (the proxy's business).
   */
  handleInDialog(tx: ServerTransaction, req: SipRequest): boolean {
    const tag = req.to.tag;
    if (tag === undefined || this.legs.size === 0) return false;
    const leg = this.legs.get(`${req.callId}\n${tag}`);
    if (leg === undefined) return false;
    leg.onRequest(tx, req);
    return true;
  }

  /** Ends every leg (agent stop): BYE or CANCEL. */
  stop(): void {
    for (const leg of [...this.legs.values(), ...this.pending]) leg.bye();
    this.legs.clear();
    this.pending.clear();
  }

  /** @internal a leg got its dialog. */
  index(leg: Leg): void {
    this.pending.delete(leg);
    this.legs.set(leg.key, leg);
  }

  /** @internal a leg is over. */
  forget(leg: Leg): void {
    this.pending.delete(leg);
    if (this.legs.get(leg.key) === leg) this.legs.delete(leg.key);
  }
}

/** The display name's number part kept printable and short (a caller's number is attacker-controlled). */
export function displayNumber(number: string): string {
  return number.replace(/[^0-9+*#]/g, "").slice(0, 24);
}

/** An answer refusing every stream of `offer` (RFC 3264 §6: port 0), for a dialog ended at once. */
export function rejectingAnswer(offer: string): string {
  const streams = offer
    .split(/\r?\n/)
    .filter((l) => l.startsWith("m="))
    .map((l) => {
      const [media = "audio", , proto = "RTP/AVP", fmt = "0"] = l.slice(2).trim().split(/\s+/);
      return `m=${media} 0 ${proto} ${fmt}`;
    });
  return ["v=0", "o=ringedge 1 1 IN IP4 0.0.0.0", "s=-", "c=IN IP4 0.0.0.0", "t=0 0", ...streams, ""].join("\r\n");
}
