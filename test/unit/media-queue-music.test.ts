// QueueMusic, the policy between the routing engine's queue and the media plane, against a fake
// proxy and a fake media service: what the caller is sent (183 with an SDP answer on the
// proxy's own tag, ringing held back), when the music starts and stops, and that nothing is
// left behind however the call leaves the queue — including before its port was even bound.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { createLogger } from "../../agent/log.ts";
import { ANNOUNCEMENT_SOUND, HOLD_SOUND, QueueMusic, queueProgramme } from "../../agent/media/queue-music.ts";
import { numberSound, POSITION_SOUND } from "../../agent/media/queue-position.ts";
import type { MediaService, OpenRequest, SessionEvents } from "../../agent/media/service.ts";
import type { ProxyCall, StatefulProxyApi } from "../../agent/sip/proxy-types.ts";
import type { SipRequest } from "../../agent/sip/types.ts";

const OFFER = ["v=0", "o=- 1 1 IN IP4 192.0.2.10", "s=-", "c=IN IP4 192.0.2.10", "t=0 0", "m=audio 4000 RTP/AVP 0 8 101", "a=rtpmap:101 telephone-event/8000", ""].join("\r\n");

function call(id: string, body = OFFER, ct = "application/sdp"): ProxyCall {
  const request = { callId: `${id}@x`, body: Buffer.from(body), headers: [{ name: "content-type", value: ct }] } as unknown as SipRequest;
  return { id, request, flow: { transport: "udp", remoteAddress: "192.0.2.10", remotePort: 5060, localAddress: "127.0.0.1", localPort: 5060 }, finished: false } as unknown as ProxyCall;
}

function fakes() {
  const sent: Array<{ status: number; headers: unknown; body?: { contentType: string; body: Buffer } }> = [];
  const suppressed = new Map<string, boolean>();
  const proxy = {
    provisional: (pc: ProxyCall, status: number, _r: string, headers?: unknown, body?: { contentType: string; body: Buffer }) => void sent.push({ status, headers, ...(body ? { body } : {}) }),
    suppressRinging: (pc: ProxyCall, on: boolean) => void suppressed.set(pc.id, on),
  } as unknown as StatefulProxyApi;
  const opens: Array<{ req: OpenRequest; events: SessionEvents; resolve: (r: { ok: true; id: string; port: number } | { ok: false; reason: string }) => void }> = [];
  const plays: Array<[string, string, boolean]> = [];
  const closed: string[] = [];
  const loaded = new Set([HOLD_SOUND, ANNOUNCEMENT_SOUND]);
  const media = {
    has: (s: string) => loaded.has(s),
    running: () => true,
    start: () => undefined,
    openSession: (req: OpenRequest, events: SessionEvents) => new Promise((resolve) => opens.push({ req, events, resolve })),
    play: (id: string, sound: string, loop: boolean) => void plays.push([id, sound, loop]),
    // A sequence is recorded as its sounds joined by "+", the flag being loopLast.
    sequence: (id: string, sounds: string[], loopLast: boolean) => void plays.push([id, sounds.join("+"), loopLast]),
    close: (id: string) => void closed.push(id),
  } as unknown as MediaService;
  return { sent, suppressed, proxy, media, opens, plays, closed, loaded };
}

const log = createLogger("silent");
const flush = (): Promise<void> => new Promise((r) => setImmediate(r));

describe("QueueMusic", () => {
  it("answers the offer in a 183 with SDP and a Contact, holds back ringing, loops the music; leave() stops it all", async () => {
    const f = fakes();
    const qm = new QueueMusic({ proxy: f.proxy, media: f.media, mediaAddress: () => "127.0.0.1", contact: () => "<sip:127.0.0.1:5060>", log });
    const pc = call("c1");
    qm.enter(pc);
    qm.enter(pc); // twice: still one session
    assert.equal(f.opens.length, 1);
    assert.deepEqual({ ...f.opens[0]!.req }, { address: "127.0.0.1", law: "PCMU", payloadType: 0, telephoneEvent: 101, remoteAddress: "192.0.2.10", remotePort: 4000, direction: "sendrecv" });
    f.opens[0]!.resolve({ ok: true, id: "m1", port: 20000 });
    await flush();
    assert.equal(f.sent.length, 1);
    assert.equal(f.sent[0]!.status, 183);
    assert.deepEqual(f.sent[0]!.headers, [{ name: "contact", value: "<sip:127.0.0.1:5060>" }]);
    assert.equal(f.sent[0]!.body!.contentType, "application/sdp");
    assert.match(f.sent[0]!.body!.body.toString(), /m=audio 20000 RTP\/AVP 0 101\r\n/);
    assert.equal(f.suppressed.get("c1"), true);
    assert.deepEqual(f.plays, [["m1", HOLD_SOUND, true]]);
    assert.equal(qm.activeCount(), 1);
    qm.leave(pc);
    qm.leave(pc);
    assert.deepEqual(f.closed, ["m1"]);
    assert.equal(f.suppressed.get("c1"), false);
    assert.equal(qm.activeCount(), 0);
  });

  it("a call that leaves while its port is being bound gets no 183, and the port is released once bound", async () => {
    const f = fakes();
    const qm = new QueueMusic({ proxy: f.proxy, media: f.media, mediaAddress: () => "127.0.0.1", contact: () => "<sip:x>", log });
    const pc = call("c2");
    qm.enter(pc);
    qm.leave(pc);
    f.opens[0]!.resolve({ ok: true, id: "m2", port: 20002 });
    await flush();
    assert.equal(f.sent.length, 0);
    assert.deepEqual(f.closed, ["m2"]);
    assert.equal(f.plays.length, 0);
    assert.equal(f.suppressed.get("c2"), undefined, "ringing was never held back");
  });

  it("no usable offer, no music loaded, or no port: the caller keeps the 182 only, nothing is held", async () => {
    for (const [pc, loaded] of [
      [call("a", ""), true],
      [call("b", OFFER, "multipart/mixed"), true],
      [call("c", OFFER.replace("RTP/AVP 0 8 101", "RTP/AVP 9")), true],
      [call("d", "v=0\r\nc=IN IP4 pbx.example\r\n"), true],
      [call("e"), false],
    ] as const) {
      const f = fakes();
      if (!loaded) f.loaded.clear();
      const qm = new QueueMusic({ proxy: f.proxy, media: f.media, mediaAddress: () => "127.0.0.1", contact: () => "<sip:x>", log });
      qm.enter(pc);
      assert.equal(f.opens.length, 0, pc.id);
      assert.equal(qm.activeCount(), 0, pc.id);
    }
    const f = fakes();
    const qm = new QueueMusic({ proxy: f.proxy, media: f.media, mediaAddress: () => "127.0.0.1", contact: () => "<sip:x>", log });
    qm.enter(call("f"));
    f.opens[0]!.resolve({ ok: false, reason: "no free port pair" });
    await flush();
    assert.equal(f.sent.length, 0);
    assert.equal(qm.activeCount(), 0);
  });

  it("with announcements: the prompt then the music in one sequence, again on the interval", async () => {
    const f = fakes();
    const qm = new QueueMusic({ proxy: f.proxy, media: f.media, mediaAddress: () => "127.0.0.1", contact: () => "<sip:x>", log, announceFirst: true, announceEveryMs: 60 });
    const pc = call("g");
    qm.enter(pc);
    f.opens[0]!.resolve({ ok: true, id: "m3", port: 20004 });
    await flush();
    assert.deepEqual(f.plays, [["m3", `${ANNOUNCEMENT_SOUND}+${HOLD_SOUND}`, true]]);
    // The prompt has not ended yet when the interval is up: that round is left out, not cut.
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(f.plays.length, 1);
    f.opens[0]!.events.onPlayEnded?.(ANNOUNCEMENT_SOUND);
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(f.plays.at(-1), ["m3", `${ANNOUNCEMENT_SOUND}+${HOLD_SOUND}`, true]);
    assert.equal(f.plays.length, 2);
    qm.leave(pc);
    const n = f.plays.length;
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(f.plays.length, n, "the interval timer stopped with the call");
  });

  it("the caller's position follows the prompt, as it is at each announcement", async () => {
    const f = fakes();
    for (const n of [2, 3, 20, 1]) f.loaded.add(numberSound(n));
    f.loaded.add(POSITION_SOUND);
    const qm = new QueueMusic({ proxy: f.proxy, media: f.media, mediaAddress: () => "127.0.0.1", contact: () => "<sip:x>", log, announceFirst: true, announceEveryMs: 60, announcePosition: true });
    let position: number | undefined = 3;
    qm.enter(call("p"), { groupId: "g1", position: () => position });
    f.opens[0]!.resolve({ ok: true, id: "m4", port: 20006 });
    await flush();
    assert.deepEqual(f.plays, [["m4", [ANNOUNCEMENT_SOUND, POSITION_SOUND, numberSound(3), HOLD_SOUND].join("+"), true]]);
    position = 2;
    f.opens[0]!.events.onPlayEnded?.(ANNOUNCEMENT_SOUND);
    f.opens[0]!.events.onPlayEnded?.(numberSound(3)); // the last spoken sound: the music plays
    await new Promise((r) => setTimeout(r, 90));
    assert.deepEqual(f.plays.at(-1), ["m4", [ANNOUNCEMENT_SOUND, POSITION_SOUND, numberSound(2), HOLD_SOUND].join("+"), true]);
    qm.leave(call("p"));
  });

  it("a group's own music, prompt and position choice win over the settings; unloaded ones fall back", async () => {
    const f = fakes();
    f.loaded.add("site-music-g1").add("site-prompt-g1").add(POSITION_SOUND).add(numberSound(1));
    const own: Record<string, { music?: string; prompt?: string; announcePosition?: boolean }> = {
      g1: { music: "site-music-g1", prompt: "site-prompt-g1", announcePosition: true },
      g2: { music: "site-music-g2" }, // not loaded: the shipped music
      g3: { announcePosition: false },
    };
    const qm = new QueueMusic({ proxy: f.proxy, media: f.media, mediaAddress: () => "127.0.0.1", contact: () => "<sip:x>", log, announcePosition: true, groupOptions: (g) => own[g] });
    for (const g of ["g1", "g2", "g3"]) qm.enter(call(`c-${g}`), { groupId: g, position: () => 1 });
    f.opens.forEach((o, i) => o.resolve({ ok: true, id: `s${i}`, port: 20010 + 2 * i }));
    await flush();
    assert.deepEqual(f.plays, [
      ["s0", ["site-prompt-g1", POSITION_SOUND, numberSound(1), "site-music-g1"].join("+"), true],
      ["s1", [POSITION_SOUND, numberSound(1), HOLD_SOUND].join("+"), true],
      ["s2", HOLD_SOUND, true],
    ]);
  });

  it("queueProgramme: prompt, position and music; a position whose sounds are not all loaded is left out", () => {
    const all = (_: string) => true;
    assert.deepEqual(queueProgramme({ prompt: "p", position: 42, music: "m", has: all }), ["p", POSITION_SOUND, numberSound(40), numberSound(2), "m"]);
    assert.deepEqual(queueProgramme({ prompt: undefined, position: undefined, music: "m", has: all }), ["m"]);
    assert.deepEqual(queueProgramme({ prompt: "p", position: 5, music: "m", has: (x) => x !== numberSound(5) }), ["p", "m"]);
    assert.deepEqual(queueProgramme({ prompt: "p", position: 5, music: "m", has: (x) => x !== "p" }), [POSITION_SOUND, numberSound(5), "m"]);
    assert.deepEqual(queueProgramme({ prompt: undefined, position: 150, music: "m", has: all }), ["m"], "beyond 99 the position is not said");
  });
});
