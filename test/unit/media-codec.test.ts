// The media plane's pure parts: G.711 against ITU-T G.711 reference values, the RTP packetiser
// (sequence numbers, timestamps, SSRC, marker), RTP/RTCP/RFC 4733 parsing of good and hostile
// packets, drift-free pacing on a fake clock, and WAV decoding and resampling.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { decodeG711, encodeG711, G711_SILENCE } from "../../agent/media/g711.ts";
import { framesDue, nextDueMs, type PaceState } from "../../agent/media/pacer.ts";
import { buildBye, buildRtp, buildSenderReport, DigitDetector, dtmfDigit, parseRtcp, parseRtp, parseTelephoneEvent, RtpPacketiser } from "../../agent/media/rtp.ts";
import { WAV_HEADER_BYTES, decodeWav, encodeWav, resample, wavHeader } from "../../agent/media/wav.ts";

describe("G.711", () => {
  it("decodes µ-law code words to the G.711 table values", () => {
    // Code words and their linear values (G.711 Table 2a, 16-bit scale): 0xFF/0x7F are ±0,
    // 0x80 the largest positive, 0x00 the largest negative.
    assert.deepEqual([...decodeG711("PCMU", Uint8Array.of(0xff, 0x7f, 0x80, 0x00, 0xfe, 0xf0, 0xe0, 0x8f))], [0, 0, 32124, -32124, 8, 120, 372, 16764]);
  });

  it("decodes A-law code words to the G.711 table values", () => {
    assert.deepEqual([...decodeG711("PCMA", Uint8Array.of(0xd5, 0x55, 0xaa, 0x2a, 0xd4, 0xc5))], [8, -8, 32256, -32256, 24, 264]);
  });

  it("encodes known samples", () => {
    assert.deepEqual([...encodeG711("PCMU", Int16Array.of(0, -1, 1000, -1000, 32767, -32768))], [0xff, 0x7f, 0xce, 0x4e, 0x80, 0x00]);
    assert.deepEqual([...encodeG711("PCMA", Int16Array.of(0, -1, 1000, -1000, 32767, -32768))], [0xd5, 0x55, 0xfa, 0x7a, 0xaa, 0x2a]);
    assert.equal(G711_SILENCE.PCMU, 0xff);
    assert.equal(G711_SILENCE.PCMA, 0xd5);
  });

  for (const law of ["PCMU", "PCMA"] as const) {
    it(`${law}: every code word survives decode → encode, and a round trip keeps the sample within one quantisation step`, () => {
      for (let b = 0; b < 256; b++) {
        if (law === "PCMU" && b === 0x7f) continue; // µ-law's negative zero decodes to 0, which encodes as 0xFF
        assert.equal(encodeG711(law, decodeG711(law, Uint8Array.of(b)))[0], b, `code word ${b}`);
      }
      for (let s = -32768; s < 32768; s += 37) {
        const back = decodeG711(law, encodeG711(law, Int16Array.of(s)))[0]!;
        // Segment step sizes double per segment: the error is at most ~1/16 of the magnitude (plus the small linear steps).
        assert.ok(Math.abs(back - s) <= Math.abs(s) / 16 + 16, `${law} ${s} → ${back}`);
      }
    });
  }
});

describe("RTP packetiser", () => {
  it("advances sequence number by 1 and timestamp by 160 per packet, wraps both, keeps the SSRC, marks the talkspurt start", () => {
    const p = new RtpPacketiser(8, 160, { ssrc: 0xdeadbeef, sequence: 65534, timestamp: 0xffffff00 });
    const pkts = [0, 1, 2].map(() => parseRtp(p.next(new Uint8Array(160))));
    const v = pkts.map((r) => (assert.ok(r.ok), r.value));
    assert.deepEqual(v.map((x) => x.sequence), [65534, 65535, 0]);
    assert.deepEqual(v.map((x) => x.timestamp), [0xffffff00, 0xffffffa0, 0x40]);
    assert.deepEqual(v.map((x) => x.marker), [true, false, false]);
    assert.ok(v.every((x) => x.ssrc === 0xdeadbeef && x.payloadType === 8 && x.payload.length === 160));
  });

  it("skipped frames move the timestamp on (not the sequence number) and start a new talkspurt", () => {
    const p = new RtpPacketiser(0, 160, { ssrc: 1, sequence: 10, timestamp: 1000 });
    p.next(new Uint8Array(160));
    p.skip(5);
    const r = parseRtp(p.next(new Uint8Array(160)));
    assert.ok(r.ok);
    assert.equal(r.value.sequence, 11);
    assert.equal(r.value.timestamp, 1000 + 160 * 6);
    assert.equal(r.value.marker, true);
    assert.equal(p.packets, 2);
    assert.equal(p.octets, 320);
  });

  it("random initial values differ between streams (RFC 3550 §5.1)", () => {
    const a = new RtpPacketiser(0, 160);
    const b = new RtpPacketiser(0, 160);
    assert.notEqual(a.ssrc, b.ssrc);
  });
});

describe("RTP parsing of hostile packets", () => {
  const good = buildRtp({ marker: false, payloadType: 0, sequence: 1, timestamp: 2, ssrc: 3 }, new Uint8Array(20));
  const cases: Array<[string, Uint8Array, RegExp]> = [
    ["empty", new Uint8Array(0), /shorter/],
    ["11 bytes", good.subarray(0, 11), /shorter/],
    ["version 1", Uint8Array.from(good, (b, i) => (i === 0 ? 0x40 : b)), /version/],
    ["RTCP packet type (SR)", Uint8Array.from(good, (b, i) => (i === 1 ? 200 : b)), /RTCP/],
    ["CSRC count past the end", Uint8Array.from(good.subarray(0, 16), (b, i) => (i === 0 ? 0x8f : b)), /CSRC/],
    ["extension past the end", (() => { const b = Buffer.from(good); b[0] = 0x90; b.writeUInt16BE(100, 14); return b; })(), /extension/],
    ["padding longer than the packet", (() => { const b = Buffer.from(good); b[0] = 0xa0; b[b.length - 1] = 200; return b; })(), /padding/],
    ["padding count zero", (() => { const b = Buffer.from(good); b[0] = 0xa0; b[b.length - 1] = 0; return b; })(), /padding/],
  ];
  for (const [name, buf, re] of cases) {
    it(`refuses ${name}`, () => {
      const r = parseRtp(buf);
      assert.equal(r.ok, false);
      if (!r.ok) assert.match(r.reason, re);
    });
  }

  it("reads past CSRCs, a header extension and padding to the payload", () => {
    const b = Buffer.alloc(12 + 4 + 8 + 3 + 4);
    b[0] = 0x80 | 0x20 | 0x10 | 1; // V=2, P, X, CC=1
    b[1] = 0x80 | 8;
    b.writeUInt16BE(7, 2);
    b.writeUInt16BE(1, 12 + 4 + 2); // extension of one word
    b.set([1, 2, 3], 12 + 4 + 8);
    b[b.length - 1] = 4; // 4 padding octets
    const r = parseRtp(b);
    assert.ok(r.ok);
    assert.equal(r.value.marker, true);
    assert.equal(r.value.payloadType, 8);
    assert.deepEqual([...r.value.payload], [1, 2, 3]);
  });

  it("random bytes never throw", () => {
    for (let i = 0; i < 5000; i++) {
      const b = Buffer.alloc(Math.floor(Math.random() * 64));
      for (let j = 0; j < b.length; j++) b[j] = Math.floor(Math.random() * 256);
      parseRtp(b);
      parseRtcp(b);
      parseTelephoneEvent(b);
    }
  });
});

describe("RFC 4733 telephone-events", () => {
  const te = (ts: number, event: number, end: boolean, duration: number): ReturnType<typeof parseRtp> =>
    parseRtp(buildRtp({ marker: false, payloadType: 101, sequence: 1, timestamp: ts, ssrc: 9 }, Uint8Array.of(event, (end ? 0x80 : 0) | 10, duration >> 8, duration & 0xff)));

  it("parses event, end bit, volume and duration", () => {
    const r = parseTelephoneEvent(Uint8Array.of(11, 0x80 | 10, 0x03, 0x20));
    assert.deepEqual(r, { ok: true, value: { event: 11, end: true, volume: 10, duration: 800 } });
    assert.equal(dtmfDigit(11), "#");
    assert.equal(dtmfDigit(10), "*");
    assert.equal(dtmfDigit(15), "D");
    assert.equal(dtmfDigit(16), undefined);
  });

  it("refuses payloads of the wrong length", () => {
    assert.equal(parseTelephoneEvent(Uint8Array.of(1, 2, 3)).ok, false);
    assert.equal(parseTelephoneEvent(Uint8Array.of(1, 2, 3, 4, 5)).ok, false);
  });

  it("reports each digit once across its packets and the three end packets; the same digit again is a new event", () => {
    const d = new DigitDetector();
    const seen: string[] = [];
    const feed = (ts: number, ev: number, end: boolean, dur: number): void => {
      const p = te(ts, ev, end, dur);
      assert.ok(p.ok);
      const digit = d.push(p.value);
      if (digit !== undefined) seen.push(digit);
    };
    for (const [dur, end] of [[160, false], [320, false], [480, true], [480, true], [480, true]] as const) feed(1000, 1, end, dur);
    for (const [dur, end] of [[160, false], [320, true], [320, true]] as const) feed(3000, 1, end, dur);
    feed(5000, 20, true, 160); // not DTMF
    feed(6000, 11, true, 160);
    assert.deepEqual(seen, ["1", "1", "#"]);
  });
});

describe("RTCP", () => {
  it("a sender report with CNAME and a BYE are valid compound packets", () => {
    const p = { ssrc: 5, epochMs: Date.UTC(2026, 0, 1), rtpTimestamp: 1234, packets: 10, octets: 1600, cname: "ringedge@1" };
    assert.deepEqual(parseRtcp(buildSenderReport(p)), { ok: true, value: [200, 202] });
    assert.deepEqual(parseRtcp(buildBye(p)), { ok: true, value: [200, 202, 203] });
    const sr = buildSenderReport(p);
    assert.equal(sr.readUInt32BE(8), Math.floor(p.epochMs / 1000) + 2_208_988_800, "NTP seconds since 1900");
    assert.equal(sr.readUInt32BE(16), 1234);
  });

  it("refuses a compound packet not starting with SR/RR, a length past the end, and bad versions", () => {
    assert.equal(parseRtcp(Uint8Array.of(0x81, 202, 0, 0)).ok, false);
    assert.equal(parseRtcp(Uint8Array.of(0x80, 200, 0, 9, 0, 0, 0, 0)).ok, false);
    assert.equal(parseRtcp(Uint8Array.of(0x40, 200, 0, 0)).ok, false);
    assert.equal(parseRtcp(Uint8Array.of(0x80, 100, 0, 0)).ok, false);
  });
});

describe("pacing", () => {
  it("frame n is due at start + 20n ms whatever the wake-up lateness (no drift)", () => {
    const st: PaceState = { startMs: 1000, frames: 0 };
    let sent = 0;
    // A timer that always wakes 1.7 ms late: a setTimeout chain would drift 1.7 ms per frame.
    let t = 1000;
    for (let i = 0; i < 5000; i++) {
      const d = framesDue(st, t, 20);
      assert.equal(d.skip, 0);
      sent += d.send;
      t = nextDueMs(st, 20) + 1.7;
    }
    assert.equal(sent, 5000);
    assert.equal(nextDueMs(st, 20), 1000 + 5000 * 20, "after 5000 frames the schedule is exactly 100 s on");
  });

  it("nothing is due before the start or twice in one frame", () => {
    const st: PaceState = { startMs: 1000, frames: 0 };
    assert.deepEqual(framesDue(st, 999, 20), { send: 0, skip: 0 });
    assert.deepEqual(framesDue(st, 1000, 20), { send: 1, skip: 0 });
    assert.deepEqual(framesDue(st, 1019.9, 20), { send: 0, skip: 0 });
    assert.deepEqual(framesDue(st, 1020, 20), { send: 1, skip: 0 });
  });

  it("a short lateness is caught up; a stall skips the oldest frames instead of bursting", () => {
    const st: PaceState = { startMs: 0, frames: 1 };
    assert.deepEqual(framesDue(st, 45, 20), { send: 2, skip: 0 });
    assert.deepEqual(framesDue(st, 1000, 20, 3), { send: 3, skip: 45 });
    assert.equal(st.frames, 51);
  });
});

describe("WAV", () => {
  const tone = (n: number, rate: number, hz: number): Int16Array => Int16Array.from({ length: n }, (_, i) => Math.round(8000 * Math.sin((2 * Math.PI * hz * i) / rate)));

  it("reads 8 kHz mono 16-bit as is", () => {
    const s = tone(800, 8000, 440);
    const r = decodeWav(encodeWav(s));
    assert.ok(r.ok);
    assert.deepEqual([...r.samples], [...s]);
  });

  it("converts 16 kHz and 44.1 kHz to 8 kHz keeping the tone", () => {
    for (const rate of [16000, 44100]) {
      const r = decodeWav(encodeWav(tone(rate, rate, 440), rate));
      assert.ok(r.ok, rate.toString());
      assert.equal(r.samples.length, 8000);
      const ref = tone(8000, 8000, 440);
      let dot = 0, a = 0, b = 0;
      for (let i = 100; i < 7900; i++) {
        dot += r.samples[i]! * ref[i]!;
        a += r.samples[i]! ** 2;
        b += ref[i]! ** 2;
      }
      assert.ok(dot / Math.sqrt(a * b) > 0.95, `correlation at ${rate} Hz`);
    }
  });

  it("writes the 44-byte header of 16-bit mono PCM (the recorder's and encodeWav's)", () => {
    const h = wavHeader(960, 16000);
    assert.equal(h.length, WAV_HEADER_BYTES);
    assert.equal(h.toString("latin1", 0, 4), "RIFF");
    assert.equal(h.readUInt32LE(4), 36 + 1920);
    assert.equal(h.toString("latin1", 8, 16), "WAVEfmt ");
    assert.deepEqual([h.readUInt32LE(16), h.readUInt16LE(20), h.readUInt16LE(22), h.readUInt32LE(24), h.readUInt32LE(28), h.readUInt16LE(32), h.readUInt16LE(34)], [16, 1, 1, 16000, 32000, 2, 16]);
    assert.equal(h.toString("latin1", 36, 40), "data");
    assert.equal(h.readUInt32LE(40), 1920);
    assert.equal(wavHeader(0).readUInt32LE(24), 8000, "8 kHz by default");
    const file = encodeWav(Int16Array.of(1, -2, 3), 16000);
    assert.deepEqual(file.subarray(0, WAV_HEADER_BYTES), wavHeader(3, 16000));
    assert.deepEqual([file.readInt16LE(44), file.readInt16LE(46), file.readInt16LE(48)], [1, -2, 3]);
  });

  it("downmixes stereo", () => {
    const b = encodeWav(Int16Array.of(100, 300, -100, -300), 8000);
    b.writeUInt16LE(2, 22); // channels
    b.writeUInt16LE(4, 32); // block align
    const r = decodeWav(b);
    assert.ok(r.ok);
    assert.deepEqual([...r.samples], [200, -200]);
  });

  const base = (): Buffer => encodeWav(tone(160, 8000, 440));
  const bad: Array<[string, () => Uint8Array, RegExp]> = [
    ["not RIFF", () => Buffer.from("hello world, this is not a wav"), /RIFF/],
    ["too short", () => Buffer.from("RIFF"), /short/],
    ["µ-law format", () => { const b = base(); b.writeUInt16LE(7, 20); return b; }, /not linear PCM/],
    ["8-bit", () => { const b = base(); b.writeUInt16LE(8, 34); return b; }, /8-bit/],
    ["6 channels", () => { const b = base(); b.writeUInt16LE(6, 22); return b; }, /channels/],
    ["96 kHz", () => { const b = base(); b.writeUInt32LE(96000, 24); return b; }, /sample rate/],
    ["a data chunk cut short", () => base().subarray(0, 100), /past the end/],
    ["no data chunk", () => base().subarray(0, 36), /no data/],
    ["an empty data chunk", () => { const b = base().subarray(0, 44); b.writeUInt32LE(0, 40); return b; }, /no audio/],
  ];
  for (const [name, make, re] of bad) {
    it(`refuses ${name} with a reason`, () => {
      const r = decodeWav(make());
      assert.equal(r.ok, false);
      if (!r.ok) assert.match(r.reason, re);
    });
  }

  it("resample of an empty input does not throw", () => {
    assert.equal(resample(new Float32Array(0), 16000, 8000).length, 1);
  });
});
