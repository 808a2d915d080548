// The media plane's play-sequence command (agent/media/plane.ts), driven in-process over real
// loopback UDP: sounds back to back, each a talkspurt of its own (marker bit), timestamps and
// sequence numbers running on across them, the last one looping when asked, play-ended for each;
// and hostile sequence commands refused without changing what plays.
import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { decodeG711 } from "../../agent/media/g711.ts";
import { MediaPlane } from "../../agent/media/plane.ts";
import { validCommand, type MediaEvent } from "../../agent/media/protocol.ts";
import type { RtpPacket } from "../../agent/media/rtp.ts";
import { encodeWav } from "../../agent/media/wav.ts";
import { until } from "../e2e/harness.ts";
import { tempDir } from "../tmpdir.ts";
import { freeMediaPorts } from "../media-ports.ts";
import { RtpSink } from "./rtp-sink.ts";

const dir = tempDir("ringedge-seq-");
/** Distinct sounds: a, 0.3 s at 300 Hz; b, 0.25 s at 900 Hz (not a whole number of frames); c, 0.2 s noise-like. */
const tone = (n: number, f: number, amp: number): Int16Array => Int16Array.from({ length: n }, (_, i) => Math.round(amp * Math.sin((2 * Math.PI * f * i) / 8000)));
const a = tone(2400, 300, 6000);
const b = tone(2000 + 37, 900, 9000);
const c = Int16Array.from({ length: 1600 }, (_, i) => ((i * 7919) % 16000) - 8000);
for (const [n, s] of [["a", a], ["b", b], ["c", c]] as const) fs.writeFileSync(path.join(dir, `${n}.wav`), encodeWav(s));

describe("play-sequence", () => {
  const events: MediaEvent[] = [];
  let plane: MediaPlane;
  const rx = new RtpSink();
  const got = rx.packets;
  after(() => {
    plane?.shutdown();
    rx.close();
  });

  it("plays the sounds back to back, each from a marker, the last one looping; play-ended per sound", async () => {
    await rx.bind();
    const ports = await freeMediaPorts(6);
    plane = new MediaPlane({ config: { portMin: ports.min, portMax: ports.max, cname: "t" }, post: (ev) => void events.push(ev) });
    for (const n of ["a", "b", "c"]) plane.handle({ op: "load", sound: n, path: path.join(dir, `${n}.wav`) });
    assert.equal(events.filter((e) => e.ev === "loaded").length, 3);
    plane.handle({ op: "open", id: "s1", address: "127.0.0.1", law: "PCMU", payloadType: 0, telephoneEvent: undefined, remoteAddress: "127.0.0.1", remotePort: rx.port, direction: "sendrecv" });
    await until(() => events.some((e) => e.ev === "opened") || undefined, 5000, 5);
    plane.handle({ op: "sequence", id: "s1", sounds: ["a", "b", "c"], loopLast: true });
    // a (15 frames) + b (13 frames, the last padded) + c (10 frames) twice.
    await until(() => got.length >= 15 + 13 + 20 || undefined, 10_000, 10);
    const pk = got.slice(0, 48);
    for (let i = 1; i < pk.length; i++) {
      assert.equal(pk[i]!.sequence, (pk[i - 1]!.sequence + 1) & 0xffff, "sequence numbers run on");
      assert.equal((pk[i]!.timestamp - pk[i - 1]!.timestamp) >>> 0, 160, "no gap between the sounds");
    }
    assert.deepEqual(pk.flatMap((p, i) => (p.marker ? [i] : [])), [0, 15, 28], "a marker where each sound starts; none when the last one loops");
    const pcm = (from: number, frames: number): Int16Array => {
      const out = new Int16Array(frames * 160);
      for (let i = 0; i < frames; i++) out.set(decodeG711("PCMU", pk[from + i]!.payload), i * 160);
      return out;
    };
    const close = (x: Int16Array, ref: Int16Array, what: string): void => {
      let err = 0;
      let pow = 0;
      for (let i = 0; i < ref.length; i++) {
        err += (x[i]! - ref[i]!) ** 2;
        pow += ref[i]! ** 2;
      }
      assert.ok(err / pow < 0.01, `${what}: relative error ${(err / pow).toFixed(4)}`);
    };
    close(pcm(0, 15), a, "a");
    close(pcm(15, 13), b, "b");
    assert.ok(pcm(15, 13).subarray(b.length).every((v) => Math.abs(v) < 16), "b's last frame is padded with silence");
    close(pcm(28, 10), c, "c");
    close(pcm(38, 10), c, "c looped");
    assert.deepEqual(events.filter((e) => e.ev === "play-ended").map((e) => (e as { sound: string }).sound), ["a", "b"]);
  });

  it("after a stall, frames skipped past the end of a sound are taken from the next: each keeps its time", async () => {
    // A plane on a clock the test moves: frame 0 at t=0, then a 400 ms stall.
    let t = 0;
    const evs: MediaEvent[] = [];
    const rx2 = new RtpSink();
    const pk = rx2.packets;
    await rx2.bind();
    const ports = await freeMediaPorts(6);
    const p2 = new MediaPlane({ config: { portMin: ports.min, portMax: ports.max, cname: "t" }, post: (ev) => void evs.push(ev), now: () => t });
    try {
      for (const n of ["a", "b"]) p2.handle({ op: "load", sound: n, path: path.join(dir, `${n}.wav`) });
      p2.handle({ op: "open", id: "s", address: "127.0.0.1", law: "PCMU", payloadType: 0, telephoneEvent: undefined, remoteAddress: "127.0.0.1", remotePort: rx2.port, direction: "sendrecv" });
      await until(() => evs.some((e) => e.ev === "opened") || undefined, 5000, 5);
      p2.handle({ op: "sequence", id: "s", sounds: ["a", "b"], loopLast: false });
      await until(() => pk.length >= 1 || undefined, 5000, 5);
      t = 400; // frames 1-20 due: 17 skipped (a's last 14 and b's first 3), 3 sent
      await until(() => pk.length >= 4 || undefined, 5000, 5);
      const after = pk.slice(1, 4);
      assert.deepEqual(after.map((p) => ((p.timestamp - pk[0]!.timestamp) >>> 0) / 160), [18, 19, 20]);
      assert.equal(after[0]!.marker, true, "a new talkspurt after the skipped frames");
      const heard = new Int16Array(480);
      after.forEach((p, i) => heard.set(decodeG711("PCMU", p.payload), i * 160));
      const ref = b.subarray(3 * 160, 6 * 160);
      let err = 0;
      let pow = 0;
      for (let i = 0; i < ref.length; i++) {
        err += (heard[i]! - ref[i]!) ** 2;
        pow += ref[i]! ** 2;
      }
      assert.ok(err / pow < 0.01, `frames 18-20 are b's frames 3-5 (relative error ${(err / pow).toFixed(4)})`);
      assert.deepEqual(evs.filter((e) => e.ev === "play-ended").map((e) => (e as { sound: string }).sound), ["a"]);
    } finally {
      p2.shutdown();
      rx2.close();
    }
  });

  it("refuses malformed sequences and one naming a sound not loaded; what plays goes on", async () => {
    for (const bad of [
      { op: "sequence", id: "s1", sounds: [], loopLast: true },
      { op: "sequence", id: "s1", sounds: "a", loopLast: true },
      { op: "sequence", id: "s1", sounds: ["a", 7], loopLast: true },
      { op: "sequence", id: "s1", sounds: Array(33).fill("a"), loopLast: false },
      { op: "sequence", id: "s1", sounds: ["a", "x".repeat(129)], loopLast: false },
      { op: "sequence", id: "s1", sounds: ["a"] },
      { op: "sequence", sounds: ["a"], loopLast: false },
    ]) assert.equal(validCommand(bad), false, JSON.stringify(bad).slice(0, 80));
    const before = events.length;
    plane.handle({ op: "sequence", id: "s1", sounds: [], loopLast: true });
    plane.handle({ op: "sequence", id: "s1", sounds: ["a", "nope"], loopLast: true });
    plane.handle({ op: "sequence", id: "no-such-session", sounds: ["a"], loopLast: true });
    const errs = events.slice(before).filter((e) => e.ev === "error").map((e) => (e as { message: string }).message);
    assert.equal(errs.length, 2);
    assert.match(errs[1]!, /sound nope is not loaded; sequence not played/);
    // c still loops: a marker would show a new sound.
    const n = got.length;
    await until(() => got.length >= n + 15 || undefined, 5000, 10);
    assert.ok(got.slice(n).every((p) => !p.marker), "nothing new started");
  });
});
