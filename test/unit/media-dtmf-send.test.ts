// RFC 4733 telephone-events sent by the media plane: the packets of one digit (dtmf-send.ts), and
// the plane sending digits over real loopback UDP in place of the audio, decoded by the test:
// one timestamp per event (its start), the marker on its first packet, growing durations, the
// end bit on the last three (§2.5.1.4), sequence numbers running on, the audio resuming after
// with a marker; digits read back once each by the receiving side's detector; bad commands refused.
import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { DTMF_VOLUME, dtmfEvent, encodeTelephoneEvent, eventPackets, validDtmf } from "../../agent/media/dtmf-send.ts";
import { MediaPlane } from "../../agent/media/plane.ts";
import { validCommand, type MediaEvent } from "../../agent/media/protocol.ts";
import { DigitDetector, parseTelephoneEvent, type RtpPacket } from "../../agent/media/rtp.ts";
import { encodeWav } from "../../agent/media/wav.ts";
import { until } from "../e2e/harness.ts";
import { freeMediaPorts } from "../media-ports.ts";
import { RtpSink } from "./rtp-sink.ts";
import { tempDir } from "../tmpdir.ts";

describe("RFC 4733 event packets", () => {
  it("a 100 ms digit: five updates with growing durations, the last with E, then two more end packets", () => {
    const pk = eventPackets(5, 100);
    assert.equal(pk.length, 7);
    const ev = pk.map((p) => parseTelephoneEvent(p.payload)).map((r) => (r.ok ? r.value : assert.fail(r.reason)));
    assert.deepEqual(ev.map((e) => e.duration), [160, 320, 480, 640, 800, 800, 800]);
    assert.deepEqual(ev.map((e) => e.end), [false, false, false, false, true, true, true]);
    assert.deepEqual(pk.map((p) => p.marker), [true, false, false, false, false, false, false]);
    assert.ok(ev.every((e) => e.event === 5 && e.volume === DTMF_VOLUME));
    // The reserved bit is 0 (§2.3.3).
    assert.ok(pk.every((p) => (p.payload[1]! & 0x40) === 0));
    const one = eventPackets(0, 40);
    assert.deepEqual(one.map((p) => [p.marker, (parseTelephoneEvent(p.payload) as { value: { end: boolean; duration: number } }).value.end]), [[true, false], [false, true], [false, true], [false, true]]);
  });

  it("digits and events: 0-9 * # A-D (§3.2); the payload layout", () => {
    assert.deepEqual([..."0123456789*#ABCDabcd"].map(dtmfEvent), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 12, 13, 14, 15]);
    for (const bad of ["", "E", "12", " ", "+", "٣"]) assert.equal(dtmfEvent(bad), undefined, bad);
    assert.deepEqual([...encodeTelephoneEvent({ event: 11, end: true, volume: 10, duration: 0x1234 })], [11, 0x8a, 0x12, 0x34]);
  });

  it("commands: digits 1-32 of 0-9*#A-D, duration 40-5000 ms whole; anything else refused", () => {
    assert.ok(validDtmf("1", 100));
    assert.ok(validDtmf("0123456789*#ABCD", 40));
    for (const [d, ms] of [["", 100], ["1x", 100], ["1".repeat(33), 100], [12, 100], ["1", 39], ["1", 5001], ["1", 100.5], ["1", "100"], ["1", Number.NaN]] as const) {
      assert.equal(validDtmf(d, ms), false, `${String(d)} ${String(ms)}`);
      assert.equal(validCommand({ op: "dtmf", id: "s", digits: d, durationMs: ms }), false);
    }
    assert.equal(validCommand({ op: "dtmf", id: "s", digits: "5", durationMs: 100 }), true);
  });
});

describe("the media plane sends digits", () => {
  const dir = tempDir("ringedge-dtmf-");
  fs.writeFileSync(path.join(dir, "tone.wav"), encodeWav(Int16Array.from({ length: 8000 }, (_, i) => Math.round(4000 * Math.sin((2 * Math.PI * 500 * i) / 8000)))));
  const events: MediaEvent[] = [];
  const rx = new RtpSink();
  const got = rx.packets;
  let plane: MediaPlane | undefined;
  after(() => {
    plane?.shutdown();
    rx.close();
  });

  it("in place of the music: one timestamp per digit, marker first, E on the last three, sequence numbers on; the music resumes with a marker", async () => {
    await rx.bind();
    const ports = await freeMediaPorts(6);
    plane = new MediaPlane({ config: { portMin: ports.min, portMax: ports.max, cname: "t" }, post: (ev) => void events.push(ev) });
    plane.handle({ op: "load", sound: "tone", path: path.join(dir, "tone.wav") });
    const open = (id: string, te: number | undefined): void =>
      plane!.handle({ op: "open", id, address: "127.0.0.1", law: "PCMU", payloadType: 0, telephoneEvent: te, remoteAddress: "127.0.0.1", remotePort: rx.port, direction: "sendrecv" });
    open("s1", 101);
    await until(() => events.some((e) => e.ev === "opened") || undefined, 5000, 5);
    plane.handle({ op: "play", id: "s1", sound: "tone", loop: true });
    await until(() => got.length >= 5 || undefined, 5000, 5);
    plane.handle({ op: "dtmf", id: "s1", digits: "1#", durationMs: 60 });
    await until(() => events.filter((e) => e.ev === "dtmf-sent").length === 2 || undefined, 5000, 5);
    await until(() => got.filter((p) => p.payloadType === 101).length === 10 && got.at(-1)!.payloadType === 0 || undefined, 5000, 5);
    assert.deepEqual(events.filter((e) => e.ev === "dtmf-sent").map((e) => (e as { digit: string }).digit), ["1", "#"]);

    for (let i = 1; i < got.length; i++) assert.equal(got[i]!.sequence, (got[i - 1]!.sequence + 1) & 0xffff, "one sequence number space for audio and events");
    const first = got.findIndex((p) => p.payloadType === 101);
    const lastAudio = got[first - 1]!;
    const ev = got.slice(first, first + 12);
    // Digit "1": 3 updates (60 ms) + 2 repeats; 2 silent frames; digit "#" likewise.
    const d1 = ev.slice(0, 5);
    const d2 = ev.slice(5, 10);
    assert.ok(d1.concat(d2).every((p) => p.payloadType === 101));
    const te = (p: RtpPacket) => (parseTelephoneEvent(p.payload) as { value: { event: number; end: boolean; duration: number } }).value;
    assert.deepEqual(d1.map((p) => [te(p).event, te(p).end, te(p).duration, p.marker]), [[1, false, 160, true], [1, false, 320, false], [1, true, 480, false], [1, true, 480, false], [1, true, 480, false]]);
    assert.deepEqual(d2.map((p) => [te(p).event, te(p).end, te(p).duration, p.marker]), [[11, false, 160, true], [11, false, 320, false], [11, true, 480, false], [11, true, 480, false], [11, true, 480, false]]);
    // §2.5.1.2: each event's packets carry its start time: the next audio frame's timestamp.
    assert.ok(d1.every((p) => p.timestamp === ((lastAudio.timestamp + 160) >>> 0)));
    assert.ok(d2.every((p) => p.timestamp === ((lastAudio.timestamp + 160 * 8) >>> 0)), "the second starts after 5 frames of the first and 2 silent ones");
    const resumed = got[first + 10]!;
    assert.equal(resumed.payloadType, 0);
    assert.equal(resumed.marker, true, "the music resumes as a new talkspurt");
    assert.equal(resumed.timestamp, (lastAudio.timestamp + 160 * 13) >>> 0, "its clock ran on under the events");
    // The receiving side (the same detector the plane uses for incoming digits) reads each once.
    const det = new DigitDetector();
    assert.deepEqual(ev.flatMap((p) => (p.payloadType === 101 ? [det.push(p)] : [])).filter((d) => d !== undefined), ["1", "#"]);
  });

  it("no telephone-event negotiated, a receive-only stream, or a malformed command: refused, nothing sent", async () => {
    const p = plane!;
    const before = got.length;
    p.handle({ op: "open", id: "s2", address: "127.0.0.1", law: "PCMU", payloadType: 0, telephoneEvent: undefined, remoteAddress: "127.0.0.1", remotePort: rx.port, direction: "sendrecv" });
    p.handle({ op: "open", id: "s3", address: "127.0.0.1", law: "PCMU", payloadType: 0, telephoneEvent: 101, remoteAddress: "127.0.0.1", remotePort: rx.port, direction: "recvonly" });
    await until(() => events.filter((e) => e.ev === "opened").length === 3 || undefined, 5000, 5);
    p.handle({ op: "close", id: "s1" });
    const n = events.length;
    p.handle({ op: "dtmf", id: "s2", digits: "1", durationMs: 100 });
    p.handle({ op: "dtmf", id: "s3", digits: "1", durationMs: 100 });
    p.handle({ op: "dtmf", id: "s2", digits: "X", durationMs: 100 });
    const msgs = events.slice(n).filter((e) => e.ev === "error").map((e) => (e as { message: string }).message);
    assert.equal(msgs.length, 3);
    assert.match(msgs[0]!, /telephone-event was not negotiated/);
    assert.match(msgs[1]!, /does not send \(recvonly\)/);
    assert.match(msgs[2]!, /malformed media command/);
    const sent = got.length;
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(got.slice(Math.max(before, sent)).filter((x) => x.payloadType === 101).length, 0);
  });
});
