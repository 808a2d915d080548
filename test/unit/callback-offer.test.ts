// CallbackOffer (media/callback-offer.ts) between the queue's music and the callback service,
// against a fake QueueMusic and media service and fake timers: when the offer plays, which
// digits count, the music resuming, the confirmation, and every way it must not happen.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { createLogger } from "../../agent/log.ts";
import { CONFIRM_MAX_MS, CONFIRM_SOUND, CallbackOffer, OFFER_SOUND } from "../../agent/media/callback-offer.ts";
import { HOLD_SOUND, type QueueMusic, type QueueMusicListener } from "../../agent/media/queue-music.ts";
import type { CallbackSettings } from "../../agent/routing/model.ts";
import type { ProxyCall } from "../../agent/sip/proxy-types.ts";
import type { SipRequest } from "../../agent/sip/types.ts";

const WITH_EVENTS = ["v=0", "o=- 1 1 IN IP4 192.0.2.10", "s=-", "c=IN IP4 192.0.2.10", "t=0 0", "m=audio 4000 RTP/AVP 8 101", "a=rtpmap:101 telephone-event/8000", ""].join("\r\n");
const NO_EVENTS = ["v=0", "o=- 1 1 IN IP4 192.0.2.10", "s=-", "c=IN IP4 192.0.2.10", "t=0 0", "m=audio 4000 RTP/AVP 8", ""].join("\r\n");

function call(id: string, sdp = WITH_EVENTS): ProxyCall {
  const request = { callId: `${id}@x`, body: Buffer.from(sdp), headers: [{ name: "content-type", value: "application/sdp" }] } as unknown as SipRequest;
  return { id, request } as unknown as ProxyCall;
}

function setup(opts: { settings?: CallbackSettings | undefined; callable?: boolean } = {}) {
  const settings = "settings" in opts ? opts.settings : { enabled: true, offerAfterS: 20, retries: 2, retryDelayS: 60 };
  let listener: QueueMusicListener | undefined;
  const journal: string[] = [];
  const sessions = new Map<string, string>();
  const music = {
    listen: (l: QueueMusicListener) => void (listener = l),
    enter: (pc: ProxyCall) => {
      journal.push(`music ${pc.id}`);
      sessions.set(pc.id, `m-${pc.id}`);
    },
    leave: (pc: ProxyCall) => {
      journal.push(`leave ${pc.id}`);
      sessions.delete(pc.id);
    },
    sessionOf: (id: string) => sessions.get(id),
    // The music this caller hears: the shipped tune here (a group's own music would be named).
    musicOf: (id: string) => (sessions.has(id) ? HOLD_SOUND : undefined),
  } as unknown as QueueMusic;
  const media = { has: () => true, play: (id: string, sound: string, loop: boolean) => void journal.push(`play ${id} ${sound}${loop ? " loop" : ""}`) };
  const timers: Array<{ fn: () => void; at: number; live: boolean }> = [];
  let now = 0;
  const accepted: string[] = [];
  const offer = new CallbackOffer({
    music,
    media,
    settings: (g) => (g === "sales" ? settings : undefined),
    callable: () => opts.callable ?? true,
    onAccepted: (pc, g) => void accepted.push(`${pc.id} ${g}`),
    log: createLogger("silent"),
    timers: {
      setTimeout: (fn, ms) => {
        const t = { fn, at: now + ms, live: true };
        timers.push(t);
        return t;
      },
      clearTimeout: (h) => void ((h as { live: boolean }).live = false),
    },
  });
  const advance = (ms: number): void => {
    now += ms;
    for (const t of timers) if (t.live && t.at <= now) (t.live = false), t.fn();
  };
  return { offer, journal, accepted, advance, digit: (pc: ProxyCall, d: string) => listener!.onDigit!(pc, d), ended: (pc: ProxyCall, s: string) => listener!.onPlayEnded!(pc, s), timers };
}

const SALES = { groupId: "sales", position: () => 1 };

describe("callback offer", () => {
  it("after offerAfterS the offer replaces the music; the music resumes after it; 1 plays the confirmation; its end accepts", () => {
    const s = setup();
    const pc = call("c1");
    s.offer.enter(pc, SALES);
    assert.deepEqual(s.journal, ["music c1"]);
    s.advance(19_999);
    assert.deepEqual(s.journal, ["music c1"]);
    s.digit(pc, "1"); // before the offer: not an answer to it
    s.advance(1);
    assert.deepEqual(s.journal, ["music c1", `play m-c1 ${OFFER_SOUND}`]);
    assert.equal(s.ended(pc, OFFER_SOUND), true);
    assert.deepEqual(s.journal.at(-1), `play m-c1 ${HOLD_SOUND} loop`);
    for (const d of ["2", "*", "#"]) s.digit(pc, d);
    assert.equal(s.journal.length, 3, "other digits do nothing");
    s.digit(pc, "1");
    assert.deepEqual(s.journal.at(-1), `play m-c1 ${CONFIRM_SOUND}`);
    s.digit(pc, "1"); // pressed again: one confirmation
    assert.equal(s.journal.length, 4);
    assert.equal(s.ended(pc, CONFIRM_SOUND), true);
    assert.deepEqual(s.accepted, ["c1 sales"]);
    assert.equal(s.offer.activeCount(), 0);
    s.advance(CONFIRM_MAX_MS);
    assert.deepEqual(s.accepted, ["c1 sales"], "accepted once");
    // Other sounds (the queue announcement) are QueueMusic's business.
    assert.equal(s.ended(pc, "queue-welcome"), false);
  });

  it("the answer by SIP INFO in the queue's early dialog: garbage refused and ignored, 1 accepted; a call with no offer is not its business", () => {
    const s = setup();
    const pc = call("c5");
    const info = (ct: string | undefined, body: string): { handled: boolean; status: number | undefined } => {
      let status: number | undefined;
      const req = { method: "INFO", headers: ct === undefined ? [] : [{ name: "content-type", value: ct }], body: Buffer.from(body) } as unknown as SipRequest;
      const handled = s.offer.info(pc, req, (st) => void (status = st));
      return { handled, status };
    };
    assert.deepEqual(info("application/dtmf-relay", "Signal=1\r\n"), { handled: false, status: undefined }, "not queued with an offer yet");
    s.offer.enter(pc, SALES);
    s.advance(20_000);
    assert.deepEqual(s.journal.at(-1), `play m-c5 ${OFFER_SOUND}`);
    assert.deepEqual(info("text/plain", "1"), { handled: true, status: 415 });
    assert.deepEqual(info("application/dtmf-relay", "Signal=E"), { handled: true, status: 400 });
    assert.deepEqual(info("application/dtmf-relay", "Signal=2"), { handled: true, status: 200 });
    assert.equal(s.journal.length, 2, "garbage and other keys change nothing");
    assert.deepEqual(info("application/dtmf-relay", "Signal=1\r\nDuration=160\r\n"), { handled: true, status: 200 });
    assert.deepEqual(s.journal.at(-1), `play m-c5 ${CONFIRM_SOUND}`);
    assert.equal(s.ended(pc, CONFIRM_SOUND), true);
    assert.deepEqual(s.accepted, ["c5 sales"]);
  });

  it("a confirmation that never reports its end (replaced by the periodic announcement) accepts after CONFIRM_MAX_MS", () => {
    const s = setup();
    const pc = call("c2");
    s.offer.enter(pc, SALES);
    s.advance(20_000);
    s.digit(pc, "1");
    s.advance(CONFIRM_MAX_MS - 1);
    assert.deepEqual(s.accepted, []);
    s.advance(1);
    assert.deepEqual(s.accepted, ["c2 sales"]);
  });

  it("no offer: group without callback, disabled, caller without telephone-event, caller not callable, no group", () => {
    const cases = [
      setup({ settings: undefined }),
      setup({ settings: { enabled: false, offerAfterS: 20, retries: 2, retryDelayS: 60 } }),
      setup({ callable: false }),
    ];
    for (const s of cases) {
      s.offer.enter(call("x"), SALES);
      s.advance(60_000);
      assert.deepEqual(s.journal, ["music x"]);
    }
    const s = setup();
    s.offer.enter(call("y", NO_EVENTS), SALES);
    s.offer.enter(call("z"));
    s.advance(60_000);
    assert.deepEqual(s.journal, ["music y", "music z"]);
  });

  it("leaving the queue before the offer, or while it plays, stops everything; a later digit does nothing", () => {
    const s = setup();
    const a = call("a");
    const b = call("b");
    s.offer.enter(a, SALES);
    s.offer.enter(b, SALES);
    s.offer.leave(a);
    s.advance(20_000);
    assert.deepEqual(s.journal, ["music a", "music b", "leave a", `play m-b ${OFFER_SOUND}`]);
    s.offer.leave(b);
    s.digit(b, "1");
    assert.equal(s.ended(b, OFFER_SOUND), false);
    assert.deepEqual(s.accepted, []);
    assert.equal(s.offer.activeCount(), 0);
  });
});
