// Fakes shared by unit tests: a clock whose time moves only when the test says (the agent's
// TimerClock, agent/clock.ts), a server transaction that records what it was answered, a
// phone's SUBSCRIBE as the transport would hand it over, and the proxy and UAS dialogs a call
// the appliance answers itself goes through.
import type { TimerClock } from "../../agent/clock.ts";
import { parseDatagram } from "../../agent/sip/message.ts";
import type { ProxyCall } from "../../agent/sip/proxy-types.ts";
import type { UasEvents } from "../../agent/sip/uas-session.ts";
import type { SipRequest, SipResponse } from "../../agent/sip/types.ts";

/** A TimerClock driven by advance(): due timers run in time order, each at its own instant. */
export class FakeClock implements TimerClock {
  private timers: Array<{ id: number; at: number; fn: () => void }> = [];
  private seq = 0;
  constructor(public t = 1_000_000) {}
  now(): number {
    return this.t;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    const id = ++this.seq;
    this.timers.push({ id, at: this.t + ms, fn });
    return id;
  }
  clearTimeout(h: unknown): void {
    this.timers = this.timers.filter((x) => x.id !== h);
  }
  /** Moves time forward, running due timers in time order (each at its own instant; ties in the order set). */
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      this.timers.sort((a, b) => a.at - b.at || a.id - b.id);
      const next = this.timers[0];
      if (next === undefined || next.at > end) break;
      this.timers.shift();
      this.t = next.at;
      next.fn();
    }
    this.t = end;
  }
  /** How many timers are set. */
  pending(): number {
    return this.timers.length;
  }
}

/** A server transaction that records each response it is given (only respond() is used). */
export class RecordingTx {
  readonly responses: SipResponse[] = [];
  respond(res: SipResponse): { ok: true } {
    this.responses.push(res);
    return { ok: true };
  }
  get last(): SipResponse {
    return this.responses.at(-1)!;
  }
}

/**
 * A SUBSCRIBE (RFC 6665 §3.1) from a phone at 10.0.1.5:6000, parsed: `n` makes its Via branch
 * unique, `from` is the whole From value, `toTag` makes it in-dialog (a refresh), `headers`
 * (Event, Expires, Contact, Accept, …) follow the CSeq in order.
 */
export function subscribeRequest(o: { uri: string; n: number; from: string; toTag?: string; callId: string; cseq?: number; headers: readonly string[]; body?: string }): SipRequest {
  const body = o.body ?? "";
  const text = [
    `SUBSCRIBE ${o.uri} SIP/2.0`,
    `Via: SIP/2.0/UDP 10.0.1.5:6000;branch=z9hG4bK-s${o.n}`,
    "Max-Forwards: 70",
    `From: ${o.from}`,
    `To: <${o.uri}>${o.toTag !== undefined ? `;tag=${o.toTag}` : ""}`,
    `Call-ID: ${o.callId}`,
    `CSeq: ${o.cseq ?? 1} SUBSCRIBE`,
    ...o.headers,
    `Content-Length: ${Buffer.byteLength(body)}`,
    "",
    body,
  ].join("\r\n");
  const p = parseDatagram(Buffer.from(text));
  if (!p.ok || p.message.kind !== "request") throw new Error("bad test SUBSCRIBE");
  return p.message;
}

/**
 * The proxy and UAS sides of a call the appliance answers itself (voicemail deposit, listening):
 * answerLocally answers once, reject records the status; each opened dialog's events are kept,
 * and hangup (our BYE) / stop end the one dialog state the test reads and sets.
 */
export function fakeAnswering(): {
  proxy: { reject(pc: ProxyCall, status: number): void; answerLocally(pc: ProxyCall): { response: never; resend(): void } | undefined };
  uas: { open(inv: unknown, flow: unknown, ans: unknown, ev: UasEvents): never };
  rejected: number[];
  events: UasEvents[];
  call: { state: string; hangups: number };
} {
  const rejected: number[] = [];
  const events: UasEvents[] = [];
  const call = { state: "confirmed", hangups: 0 };
  return {
    rejected,
    events,
    call,
    proxy: {
      reject: (_pc, status) => void rejected.push(status),
      answerLocally: (pc) => ((pc as { finished: boolean }).finished ? undefined : (((pc as { finished: boolean }).finished = true), { response: {} as never, resend: () => undefined })),
    },
    uas: {
      open: (_inv, _flow, _ans, ev) => {
        events.push(ev);
        return {
          get state() {
            return call.state;
          },
          hangup: () => {
            call.hangups++;
            call.state = "ended";
            ev.onEnded?.("local");
          },
          stop: () => {
            call.state = "ended";
            ev.onEnded?.("stopped");
          },
        } as never;
      },
    },
  };
}
