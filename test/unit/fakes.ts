// Fakes shared by unit tests: a clock whose time moves only when the test says (the agent's
// TimerClock, agent/clock.ts), and a server transaction that records what it was answered.
import type { TimerClock } from "../../agent/clock.ts";
import type { SipResponse } from "../../agent/sip/types.ts";

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
