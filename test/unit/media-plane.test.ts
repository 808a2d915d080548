// The media worker over real UDP on loopback: a session plays a WAV file paced at 20 ms with
// correct RTP headers, latches to where the peer's packets come from (symmetric RTP), reports
// RFC 4733 digits, survives hostile datagrams and commands, and frees its ports on close.
import { after, afterEach, describe, it } from "node:test";
import assert from "node:assert/strict";
import dgram from "node:dgram";
import fs from "node:fs";
import path from "node:path";
import { decodeG711 } from "../../agent/media/g711.ts";
import { buildRtp, parseRtcp, parseRtp, type RtpPacket } from "../../agent/media/rtp.ts";
import { MediaService } from "../../agent/media/service.ts";
import { encodeWav } from "../../agent/media/wav.ts";
import { createLogger } from "../../agent/log.ts";
import { until } from "../e2e/harness.ts";
import { tempDir } from "../tmpdir.ts";

const dir = tempDir("ringedge-media-");
const wavPath = path.join(dir, "tone.wav");
// 1 s of a 440 Hz tone with a rising envelope, so every frame differs.
const source = Int16Array.from({ length: 8000 }, (_, i) => Math.round((2000 + i * 2) * Math.sin((2 * Math.PI * 440 * i) / 8000)));
fs.writeFileSync(wavPath, encodeWav(source));
fs.writeFileSync(path.join(dir, "bad.wav"), "this is not a WAV file at all, only text");

const warnings: string[] = [];
const log = createLogger("warn", "media", (l) => void warnings.push(l));

export { freeMediaRange } from "../media-ports.ts";
import { freeMediaRange } from "../media-ports.ts";

interface Receiver {
  sock: dgram.Socket;
  port: number;
  packets: Array<{ pkt: RtpPacket; at: number; from: dgram.RemoteInfo }>;
  rtcp: Buffer[];
  close(): void;
}

async function receiver(): Promise<Receiver> {
  const sock = dgram.createSocket("udp4");
  await new Promise<void>((r) => sock.bind(0, "127.0.0.1", r));
  const port = sock.address().port;
  const rtcpSock = dgram.createSocket("udp4");
  await new Promise<void>((r, j) => {
    rtcpSock.once("error", j);
    rtcpSock.bind(port + 1, "127.0.0.1", r);
  }).catch(() => undefined);
  const rec: Receiver = {
    sock,
    port,
    packets: [],
    rtcp: [],
    close: () => {
      sock.close();
      try {
        rtcpSock.close();
      } catch {
        // not bound
      }
    },
  };
  sock.on("message", (b, from) => {
    const p = parseRtp(b);
    if (p.ok) rec.packets.push({ pkt: { ...p.value, payload: Uint8Array.from(p.value.payload) }, at: performance.now(), from });
  });
  rtcpSock.on("message", (b) => rec.rtcp.push(b));
  return rec;
}

describe("media worker", () => {
  let svc: MediaService;
  let ports: { min: number; max: number };
  const cleanup: Array<() => void> = [];
  after(async () => {
    for (const c of cleanup) c();
    await svc?.stop();
  });
  // A failed test must not leave sessions (and port pairs) to the next one.
  afterEach(async () => {
    if (svc === undefined) return;
    for (const id of [...(svc as unknown as { open: Map<string, unknown> }).open.keys()]) svc.close(id);
    await until(() => svc.sessionCount() === 0 || undefined, 5000, 10);
  });

  it("starts, loads a WAV file and refuses a bad one", async () => {
    ports = await freeMediaRange();
    svc = new MediaService({ portMin: ports.min, portMax: ports.max, log, openTimeoutMs: 30_000, sounds: { tone: wavPath, broken: path.join(dir, "bad.wav") } });
    svc.start();
    // Loading tsx in the worker takes a while on a busy machine (the shipped bundle does not).
    await until(() => svc.has("tone"), 60_000, 20);
    await until(() => warnings.some((w) => w.includes("sound not loaded") && w.includes("not a RIFF WAVE")) || undefined, 5000, 20);
    assert.equal(svc.has("broken"), false);
  });

  it("plays the file paced at 20 ms: seq +1, timestamp +160, one SSRC, marker where a talkspurt starts, audio equal to the source", async () => {
    const rx = await receiver();
    cleanup.push(() => rx.close());
    const r = await svc.openSession({ address: "127.0.0.1", law: "PCMA", payloadType: 8, telephoneEvent: undefined, remoteAddress: "127.0.0.1", remotePort: rx.port, direction: "sendrecv" }, {});
    assert.ok(r.ok, r.ok ? "" : r.reason);
    assert.ok(r.port >= ports.min && r.port <= ports.max && r.port % 2 === 0, `RTP port ${r.port} even and in range`);
    svc.play(r.id, "tone", false);
    const frameOf = (p: RtpPacket): number => ((p.timestamp - rx.packets[0]!.pkt.timestamp) >>> 0) / 160;
    await until(() => (rx.packets.length > 0 && frameOf(rx.packets.at(-1)!.pkt) >= 49) || undefined, 10_000, 10);
    const pk = rx.packets.map((p) => p.pkt);
    assert.equal(pk[0]!.marker, true);
    assert.ok(pk.every((p) => p.ssrc === pk[0]!.ssrc && p.payloadType === 8 && p.payload.length === 160));
    for (let i = 1; i < pk.length; i++) assert.equal(pk[i]!.sequence, (pk[i - 1]!.sequence + 1) & 0xffff);
    // The timestamp measures sampling time: +160 per frame; a frame the worker was too late for
    // (a stalled machine) is skipped, the timestamp jumps by its 160 samples and the marker is set.
    let skipped = 0;
    for (let i = 1; i < pk.length; i++) {
      const d = (pk[i]!.timestamp - pk[i - 1]!.timestamp) >>> 0;
      assert.ok(d % 160 === 0 && d >= 160, `timestamp step ${d}`);
      assert.equal(pk[i]!.marker, d > 160, "the marker only where a talkspurt starts (after skipped frames)");
      skipped += d / 160 - 1;
    }
    // The audio is the file's, from its first sample (within A-law quantisation).
    let frame = 0;
    for (const p of pk) {
      const at = ((p.timestamp - pk[0]!.timestamp) >>> 0) / 160;
      const decoded = decodeG711("PCMA", p.payload);
      for (let i = 0; i < 160; i++) {
        const s = source[at * 160 + i]!;
        assert.ok(Math.abs(decoded[i]! - s) <= Math.abs(s) / 16 + 16, `frame ${frame} sample ${i}`);
      }
      frame++;
    }
    // Drift-free pacing: frame k goes out at start + 20k ms, so the last frame arrives 20 ms ×
    // its index after the first, whatever each wake-up's lateness (a setTimeout(20) chain would
    // be late by their sum).
    const last = rx.packets.at(-1)!;
    const index = ((last.pkt.timestamp - pk[0]!.timestamp) >>> 0) / 160;
    const span = last.at - rx.packets[0]!.at;
    assert.ok(Math.abs(span - 20 * index) < 40, `${index} frames in ${span.toFixed(1)} ms (skipped ${skipped})`);
    // The 1 s file ends after 50 packets: nothing more is sent.
    await new Promise((res) => setTimeout(res, 200));
    assert.equal(rx.packets.length + skipped, 50);
    svc.close(r.id);
    await until(() => svc.sessionCount() === 0 || undefined, 5000, 10);
    // RTCP: the BYE on close (an SR + SDES + BYE compound) went to RTP port + 1.
    await until(() => rx.rtcp.some((b) => { const p = parseRtcp(b); return p.ok && p.value.includes(203); }) || undefined, 5000, 10);
  });

  it("latches to the peer's source, reports RFC 4733 digits once, and survives hostile datagrams", async () => {
    const rx = await receiver();
    cleanup.push(() => rx.close());
    const digits: string[] = [];
    // The SDP names a port nobody listens on (the peer is behind NAT): packets go there until the peer speaks.
    const r = await svc.openSession({ address: "127.0.0.1", law: "PCMU", payloadType: 0, telephoneEvent: 101, remoteAddress: "127.0.0.1", remotePort: 9, direction: "sendrecv" }, { onDigit: (d) => digits.push(d) });
    assert.ok(r.ok);
    svc.play(r.id, "tone", true);
    const hostile = [
      Buffer.alloc(0),
      Buffer.from("garbage"),
      Buffer.alloc(11, 0x80),
      buildRtp({ marker: false, payloadType: 96, sequence: 1, timestamp: 1, ssrc: 1 }, new Uint8Array(4)), // not negotiated: must not latch
      Buffer.from([0xbf, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), // CSRC list past the end
      Buffer.alloc(2000, 0xff),
    ];
    for (const h of hostile) rx.sock.send(h, r.port, "127.0.0.1");
    // Nothing has latched: no packet reaches the receiver.
    await new Promise((res) => setTimeout(res, 150));
    assert.equal(rx.packets.length, 0);
    // A valid packet from the receiver's socket: the stream moves there (symmetric RTP).
    const ev = (ts: number, end: boolean): Buffer => buildRtp({ marker: false, payloadType: 101, sequence: ts, timestamp: ts, ssrc: 77 }, Uint8Array.of(5, end ? 0x8a : 0x0a, 0, 160));
    rx.sock.send(ev(1000, false), r.port, "127.0.0.1");
    for (let i = 0; i < 3; i++) rx.sock.send(ev(1000, true), r.port, "127.0.0.1");
    await until(() => rx.packets.length >= 5 || undefined, 5000, 10);
    assert.equal(rx.packets[0]!.from.port, r.port, "sent from the port in the SDP (symmetric)");
    await until(() => digits.length >= 1 || undefined, 5000, 10);
    // Another source after latching is ignored (no digit from it).
    const other = dgram.createSocket("udp4");
    await new Promise<void>((res) => other.bind(0, "127.0.0.1", res));
    other.send(buildRtp({ marker: false, payloadType: 101, sequence: 1, timestamp: 5000, ssrc: 78 }, Uint8Array.of(9, 0x8a, 0, 160)), r.port, "127.0.0.1");
    await new Promise((res) => setTimeout(res, 100));
    other.close();
    assert.deepEqual(digits, ["5"]);
    // The worker is alive and still pacing after all that.
    const n = rx.packets.length;
    await until(() => rx.packets.length >= n + 5 || undefined, 5000, 10);
    svc.close(r.id);
    await until(() => svc.sessionCount() === 0 || undefined, 5000, 10);
  });

  it("ignores malformed commands and refuses hostile open requests", async () => {
    const w = (svc as unknown as { worker: { postMessage(m: unknown): void } }).worker;
    for (const m of [null, 42, "x", { op: "open" }, { op: "play", id: 5 }, { op: "load", sound: "x" }, { op: "nope" }]) w.postMessage(m);
    const bad = await svc.openSession({ address: "localhost", law: "PCMU", payloadType: 0, telephoneEvent: undefined, remoteAddress: "127.0.0.1", remotePort: 5004, direction: "sendrecv" }, {});
    assert.equal(bad.ok, false);
    const outOfRange = await svc.openSession({ address: "127.0.0.1", law: "PCMU", payloadType: 999, telephoneEvent: undefined, remoteAddress: "127.0.0.1", remotePort: 5004, direction: "sendrecv" }, {});
    assert.ok(!outOfRange.ok && /malformed open/.test(outOfRange.reason), "an open failing validation is refused at once");
    await until(() => warnings.some((l) => l.includes("malformed media command")) || undefined, 5000, 10);
    const good = await svc.openSession({ address: "127.0.0.1", law: "PCMU", payloadType: 0, telephoneEvent: undefined, remoteAddress: "127.0.0.1", remotePort: 5004, direction: "sendrecv" }, {});
    assert.ok(good.ok, "the worker still works");
    svc.close(good.id);
    await until(() => svc.sessionCount() === 0 || undefined, 5000, 10);
  });

  it("a worker that dies: its sessions are reported closed, the next open starts a new one", async () => {
    let closedWith: unknown = "not yet";
    const r = await svc.openSession({ address: "127.0.0.1", law: "PCMU", payloadType: 0, telephoneEvent: undefined, remoteAddress: "127.0.0.1", remotePort: 5004, direction: "sendrecv" }, { onClosed: (st) => (closedWith = st) });
    assert.ok(r.ok);
    await (svc as unknown as { worker: { terminate(): Promise<number> } }).worker.terminate();
    await until(() => closedWith !== "not yet" || undefined, 5000, 10);
    assert.equal(closedWith, undefined, "closed without stats: the worker is gone");
    assert.equal(svc.sessionCount(), 0);
    await until(() => warnings.some((l) => l.includes("media worker exited")) || undefined, 5000, 10);
    const again = await svc.openSession({ address: "127.0.0.1", law: "PCMU", payloadType: 0, telephoneEvent: undefined, remoteAddress: "127.0.0.1", remotePort: 5004, direction: "sendrecv" }, {});
    assert.ok(again.ok, again.ok ? "" : again.reason);
    await until(() => svc.has("tone") || undefined, 60_000, 20);
    svc.close(again.id);
    await until(() => svc.sessionCount() === 0 || undefined, 5000, 10);
  });

  it("runs out of port pairs cleanly and frees them on close", async () => {
    // The range holds 3 pairs.
    const opened: string[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await svc.openSession({ address: "127.0.0.1", law: "PCMU", payloadType: 0, telephoneEvent: undefined, remoteAddress: "127.0.0.1", remotePort: 5004, direction: "sendrecv" }, {});
      assert.ok(r.ok, r.ok ? "" : r.reason);
      opened.push(r.id);
    }
    const full = await svc.openSession({ address: "127.0.0.1", law: "PCMU", payloadType: 0, telephoneEvent: undefined, remoteAddress: "127.0.0.1", remotePort: 5004, direction: "sendrecv" }, {});
    assert.ok(!full.ok && /no free port pair/.test(full.reason));
    for (const id of opened) svc.close(id);
    await until(() => svc.sessionCount() === 0 || undefined, 5000, 10);
    // Every port of the range can be bound again by someone else.
    for (let p = ports.min; p <= ports.min + 5; p++) {
      const s = dgram.createSocket("udp4");
      await new Promise<void>((res, rej) => {
        s.once("error", rej);
        s.bind(p, "127.0.0.1", () => res());
      });
      s.close();
    }
  });
});
