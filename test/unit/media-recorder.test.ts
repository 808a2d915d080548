// Recording (media/recorder.ts and the worker's record command): G.711 decoded into a 16-bit
// 8 kHz mono WAV placed by RTP timestamp (loss → silence, late/duplicate dropped), the final
// header, the atomic rename, the stop reasons (maximum length, silence, # by RFC 4733,
// stop-record, close), and refusals of bad commands.
import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import dgram from "node:dgram";
import fs from "node:fs";
import path from "node:path";
import { decodeG711, encodeG711 } from "../../agent/media/g711.ts";
import { validCommand } from "../../agent/media/protocol.ts";
import { WavRecorder } from "../../agent/media/recorder.ts";
import { buildRtp, type RtpPacket } from "../../agent/media/rtp.ts";
import { MediaService } from "../../agent/media/service.ts";
import { decodeWav, wavHeader } from "../../agent/media/wav.ts";
import { createLogger } from "../../agent/log.ts";
import { until } from "../e2e/harness.ts";
import { tempDir } from "../tmpdir.ts";
import { freeMediaRange } from "../media-ports.ts";

const dir = tempDir("ringedge-rec-");
const tone = (n: number, offset = 0): Int16Array => Int16Array.from({ length: n }, (_, i) => Math.round(8000 * Math.sin((2 * Math.PI * 1000 * (i + offset)) / 8000)));

function packet(seq: number, ts: number, payload: Uint8Array, ssrc = 0x1234): RtpPacket {
  return { marker: false, payloadType: 0, sequence: seq, timestamp: ts, ssrc, payload };
}

describe("WavRecorder", () => {
  it("writes decoded samples by timestamp: a lost packet is silence, a late or duplicate one is dropped; finish renames atomically with the right header and hash", () => {
    const tmp = path.join(dir, "a.wav.part");
    const fin = path.join(dir, "a.wav");
    const r = WavRecorder.open(tmp, fin, { law: "PCMU", maxMs: 60_000, silenceMs: 0 });
    assert.ok(!("error" in r));
    const frames = [0, 1, 2, 4, 5].map((k) => ({ k, pcm: tone(160, k * 160) }));
    for (const { k, pcm } of frames) assert.equal(r.push(packet(k, 1000 + k * 160, encodeG711("PCMU", pcm))), undefined);
    r.push(packet(1, 1000 + 160, encodeG711("PCMU", tone(160)))); // duplicate
    r.push(packet(3, 1000 + 3 * 160, encodeG711("PCMU", tone(160, 480)))); // late: its place is already silence
    assert.ok(fs.existsSync(tmp) && !fs.existsSync(fin), "only the temporary file while recording");
    const done = r.finish();
    assert.ok(done.ok);
    assert.equal(done.samples, 6 * 160);
    assert.ok(!fs.existsSync(tmp) && fs.existsSync(fin));
    const bytes = fs.readFileSync(fin);
    assert.equal(done.sha256, createHash("sha256").update(bytes).digest("hex"));
    assert.deepEqual(bytes.subarray(0, 44), wavHeader(960));
    const wav = decodeWav(bytes);
    assert.ok(wav.ok);
    const expect = (k: number) => decodeG711("PCMU", encodeG711("PCMU", tone(160, k * 160)));
    assert.deepEqual(Array.from(wav.samples.subarray(0, 160)), Array.from(expect(0)));
    assert.deepEqual(Array.from(wav.samples.subarray(480, 640)), new Array(160).fill(0), "the lost frame is silence");
    assert.deepEqual(Array.from(wav.samples.subarray(800, 960)), Array.from(expect(5)));
  });

  it("stops at the maximum length and on silence", () => {
    const r = WavRecorder.open(path.join(dir, "m.part"), path.join(dir, "m.wav"), { law: "PCMA", maxMs: 100, silenceMs: 0 });
    assert.ok(!("error" in r));
    const stops = [0, 1, 2, 3, 4, 5].map((k) => r.push(packet(k, k * 160, encodeG711("PCMA", tone(160)))));
    assert.equal(stops.indexOf("max-length"), 4, "800 samples = 100 ms = 5 packets");
    const done = r.finish();
    assert.ok(done.ok && done.samples === 800);
    const s = WavRecorder.open(path.join(dir, "s.part"), path.join(dir, "s.wav"), { law: "PCMA", maxMs: 60_000, silenceMs: 200 });
    assert.ok(!("error" in s));
    assert.equal(s.push(packet(0, 0, encodeG711("PCMA", tone(160)))), undefined);
    const quiet = encodeG711("PCMA", new Int16Array(160));
    const got = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10].map((k) => s.push(packet(k, k * 160, quiet)));
    assert.equal(got.indexOf("silence"), 9, "10 silent packets = 200 ms");
    s.abort();
    assert.ok(!fs.existsSync(path.join(dir, "s.part")) && !fs.existsSync(path.join(dir, "s.wav")), "abort leaves nothing");
  });

  it("never overwrites: a temporary file that exists is refused", () => {
    const tmp = path.join(dir, "x.part");
    fs.writeFileSync(tmp, "someone else's");
    const r = WavRecorder.open(tmp, path.join(dir, "x.wav"), { law: "PCMU", maxMs: 1000, silenceMs: 0 });
    assert.ok("error" in r && r.error.includes("EEXIST"));
    assert.equal(fs.readFileSync(tmp, "utf8"), "someone else's");
  });

  it("record commands are checked", () => {
    const ok = { op: "record", id: "m1", tmpPath: "/tmp/a.part", finalPath: "/tmp/a.wav", maxMs: 1000, silenceMs: 0, stopDigit: "#" };
    assert.equal(validCommand(ok), true);
    for (const bad of [
      { ...ok, tmpPath: "relative.part" },
      { ...ok, finalPath: ok.tmpPath },
      { ...ok, maxMs: 0 },
      { ...ok, maxMs: 1.5 },
      { ...ok, silenceMs: -1 },
      { ...ok, stopDigit: "##" },
      { ...ok, finalPath: "/tmp/a\0.wav" },
      { op: "stop-record" },
    ]) assert.equal(validCommand(bad), false, JSON.stringify(bad));
  });
});

describe("recording in the media worker", () => {
  let svc: MediaService | undefined;
  const socks: dgram.Socket[] = [];
  after(async () => {
    for (const s of socks) s.close();
    await svc?.stop();
  });

  it("records the far end's RTP until # (RFC 4733), then until stop-record and until close; the file holds what was sent", async () => {
    const ports = await freeMediaRange();
    svc = new MediaService({ portMin: ports.min, portMax: ports.max, log: createLogger("error", "media"), openTimeoutMs: 60_000 });
    svc.start();
    const peer = dgram.createSocket("udp4");
    socks.push(peer);
    await new Promise<void>((r) => peer.bind(0, "127.0.0.1", r));
    const results: Array<{ reason: string; path: string; samples: number; sha256: string }> = [];
    const opened = await svc.openSession(
      { address: "127.0.0.1", law: "PCMU", payloadType: 0, telephoneEvent: 101, remoteAddress: "127.0.0.1", remotePort: peer.address().port, direction: "sendrecv" },
      { onRecorded: (r) => results.push(r) },
    );
    assert.ok(opened.ok, opened.ok ? "" : opened.reason);
    const send = (seq: number, ts: number, pt: number, payload: Uint8Array, marker = false): Promise<void> =>
      new Promise((r) => peer.send(buildRtp({ marker, payloadType: pt, sequence: seq, timestamp: ts, ssrc: 77 }, payload), opened.port, "127.0.0.1", () => r()));
    const src = tone(8000);
    const run = async (file: string, frames: number, stop: "digit" | "stop" | "close"): Promise<void> => {
      svc!.record(opened.id, { tmpPath: path.join(dir, `${file}.part`), finalPath: path.join(dir, `${file}.wav`), maxMs: 60_000, silenceMs: 0, stopDigit: "#" });
      // Wait until the worker has the command (its temporary file exists) before sending.
      await until(() => fs.existsSync(path.join(dir, `${file}.part`)) || undefined, 10_000, 5);
      for (let k = 0; k < frames; k++) await send(k, 5000 + k * 160, 0, encodeG711("PCMU", src.subarray(k * 160, k * 160 + 160)));
      await new Promise((r) => setTimeout(r, 50));
      if (stop === "digit") {
        // RFC 4733 event 11 (#), end bit set, three end packets as senders do.
        for (let i = 0; i < 3; i++) await send(frames + i, 5000 + frames * 160, 101, Uint8Array.from([11, 0x80 | 10, 0x03, 0x20]), i === 0);
      } else if (stop === "stop") svc!.stopRecording(opened.id);
      else svc!.close(opened.id);
    };
    await run("digit", 25, "digit");
    await until(() => results.length === 1 || undefined, 10_000, 5);
    assert.equal(results[0]!.reason, "digit");
    await run("stopped", 10, "stop");
    await until(() => results.length === 2 || undefined, 10_000, 5);
    assert.equal(results[1]!.reason, "stopped");
    await run("closed", 5, "close");
    await until(() => results.length === 3 || undefined, 10_000, 5);
    assert.equal(results[2]!.reason, "closed");
    for (const [i, frames] of [25, 10, 5].entries()) {
      const r = results[i]!;
      assert.equal(r.samples, frames * 160);
      const wav = decodeWav(fs.readFileSync(r.path));
      assert.ok(wav.ok);
      const expect = decodeG711("PCMU", encodeG711("PCMU", src.subarray(0, frames * 160)));
      assert.deepEqual(Array.from(wav.samples), Array.from(expect));
      assert.equal(createHash("sha256").update(fs.readFileSync(r.path)).digest("hex"), r.sha256);
    }
    assert.deepEqual(fs.readdirSync(dir).filter((f) => f.endsWith(".part") && f !== "x.part"), [], "no temporary file left");
    await until(() => svc!.sessionCount() === 0 || undefined, 5000, 10);
  });
});
