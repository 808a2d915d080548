// SDP offer/answer for the appliance's audio (RFC 3264, RFC 4566): codec choice in the
// caller's order of preference, telephone-event, direction, rejected streams, and hostile offers.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { buildAnswer, chooseAudio, parseSdp } from "../../agent/media/sdp.ts";
import { offerOf } from "../../agent/media/queue-music.ts";
import type { SipRequest } from "../../agent/sip/types.ts";

const sdp = (...lines: string[]): string => lines.join("\r\n") + "\r\n";
const HEAD = ["v=0", "o=- 1 1 IN IP4 192.0.2.10", "s=-", "c=IN IP4 192.0.2.10", "t=0 0"];

function choose(text: string): ReturnType<typeof chooseAudio> {
  const p = parseSdp(text);
  assert.ok(p.ok, p.ok ? "" : p.reason);
  return chooseAudio(p.value);
}

describe("SDP answer codec choice", () => {
  it("takes the caller's first G.711 format: PCMA before PCMU when offered first", () => {
    const c = choose(sdp(...HEAD, "m=audio 4000 RTP/AVP 8 0 101", "a=rtpmap:101 telephone-event/8000"));
    assert.ok(c.ok);
    assert.equal(c.value.law, "PCMA");
    assert.equal(c.value.payloadType, 8);
    assert.equal(c.value.telephoneEvent, 101);
    assert.equal(c.value.remoteAddress, "192.0.2.10");
    assert.equal(c.value.remotePort, 4000);
  });

  it("skips codecs it does not have (G.722, Opus) and takes PCMU", () => {
    const c = choose(sdp(...HEAD, "m=audio 4000 RTP/AVP 9 96 0", "a=rtpmap:96 opus/48000/2"));
    assert.ok(c.ok);
    assert.equal(c.value.law, "PCMU");
    assert.equal(c.value.telephoneEvent, undefined);
  });

  it("honours a dynamic payload type mapped to PCMU", () => {
    const c = choose(sdp(...HEAD, "m=audio 4000 RTP/AVP 97", "a=rtpmap:97 pcmu/8000"));
    assert.ok(c.ok);
    assert.equal(c.value.payloadType, 97);
  });

  it("a media-level c= wins over the session's; video before audio is skipped and refused in the answer", () => {
    const text = sdp(...HEAD, "m=video 5000 RTP/AVP 96", "a=rtpmap:96 H264/90000", "m=audio 4002 RTP/AVP 0", "c=IN IP4 198.51.100.7", "a=sendonly");
    const p = parseSdp(text);
    assert.ok(p.ok);
    const c = chooseAudio(p.value);
    assert.ok(c.ok);
    assert.equal(c.value.index, 1);
    assert.equal(c.value.remoteAddress, "198.51.100.7");
    assert.equal(c.value.direction, "recvonly", "a sendonly offer is answered recvonly (RFC 3264 §6.1)");
    const answer = buildAnswer(p.value, c.value, { address: "127.0.0.1", port: 20000, sessionId: 42 });
    assert.match(answer, /^v=0\r\n/);
    assert.match(answer, /\r\nm=video 0 RTP\/AVP 96\r\nm=audio 20000 RTP\/AVP 0\r\n/);
    assert.match(answer, /\r\nc=IN IP4 127\.0\.0\.1\r\n/);
    assert.match(answer, /a=rtpmap:0 PCMU\/8000/);
    assert.match(answer, /a=ptime:20/);
    assert.match(answer, /a=recvonly/);
  });

  it("answers with exactly the chosen codec and telephone-event with fmtp 0-15", () => {
    const p = parseSdp(sdp(...HEAD, "m=audio 4000 RTP/AVP 0 8 101", "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-16"));
    assert.ok(p.ok);
    const c = chooseAudio(p.value);
    assert.ok(c.ok);
    const a = buildAnswer(p.value, c.value, { address: "::1", port: 20002, sessionId: 7 });
    assert.match(a, /m=audio 20002 RTP\/AVP 0 101\r\n/);
    assert.match(a, /c=IN IP6 ::1/);
    assert.match(a, /a=fmtp:101 0-15/);
    assert.doesNotMatch(a, /PCMA/);
    assert.match(a, /a=sendrecv/);
  });

  const refusals: Array<[string, string, RegExp]> = [
    ["no G.711", sdp(...HEAD, "m=audio 4000 RTP/AVP 9 18"), /no PCMU or PCMA/],
    ["audio port 0 only", sdp(...HEAD, "m=audio 0 RTP/AVP 0"), /no RTP audio/],
    ["SRTP only (RTP/SAVP)", sdp(...HEAD, "m=audio 4000 RTP/SAVP 0"), /no RTP audio/],
    ["no c= anywhere", sdp("v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "t=0 0", "m=audio 4000 RTP/AVP 0"), /no c= address/],
    ["PCMU at 16 kHz", sdp(...HEAD, "m=audio 4000 RTP/AVP 96", "a=rtpmap:96 PCMU/16000"), /no PCMU or PCMA/],
    ["c=0.0.0.0 (old-style hold)", sdp("v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "c=IN IP4 0.0.0.0", "t=0 0", "m=audio 4000 RTP/AVP 0"), /not a unicast/],
    ["a multicast address", sdp("v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "c=IN IP4 239.1.2.3/127", "t=0 0", "m=audio 4000 RTP/AVP 0"), /not a unicast/],
    ["an IPv6 multicast address", sdp("v=0", "o=- 1 1 IN IP6 ::1", "s=-", "c=IN IP6 ff02::1", "t=0 0", "m=audio 4000 RTP/AVP 0"), /not a unicast/],
  ];
  for (const [name, text, re] of refusals) {
    it(`refuses an offer with ${name}`, () => {
      const c = choose(text);
      assert.equal(c.ok, false);
      if (!c.ok) assert.match(c.reason, re);
    });
  }
});

describe("SDP parser on hostile input", () => {
  const bad: Array<[string, string, RegExp]> = [
    ["empty", "", /empty/],
    ["no v=0 first", sdp("o=- 1 1 IN IP4 1.2.3.4", "v=0"), /v=0/],
    ["a line without =", sdp("v=0", "garbage"), /not <type>=<value>/],
    ["a host name in c=", sdp("v=0", "c=IN IP4 pbx.example.com"), /IP literal/],
    ["IP6 type with an IPv4 address", sdp("v=0", "c=IN IP6 192.0.2.1"), /IP literal/],
    ["a port over 65535", sdp("v=0", "m=audio 70000 RTP/AVP 0"), /m= line malformed/],
    ["a short m= line", sdp("v=0", "m=audio 4000"), /too short/],
    ["a bad rtpmap", sdp("v=0", "m=audio 4000 RTP/AVP 0", "a=rtpmap:300 PCMU/8000"), /rtpmap/],
    ["too many m= lines", sdp("v=0", ...Array.from({ length: 20 }, () => "m=audio 4000 RTP/AVP 0")), /too many m=/],
    ["20 kB", "v=0\r\n" + "a=x\r\n".repeat(5000), /larger than/],
  ];
  for (const [name, text, re] of bad) {
    it(`refuses ${name}`, () => {
      const r = parseSdp(text);
      assert.equal(r.ok, false);
      if (!r.ok) assert.match(r.reason, re);
    });
  }

  it("random bytes never throw", () => {
    for (let i = 0; i < 2000; i++) {
      const b = Buffer.alloc(Math.floor(Math.random() * 200));
      for (let j = 0; j < b.length; j++) b[j] = Math.floor(Math.random() * 128);
      const r = parseSdp(Buffer.concat([Buffer.from("v=0\r\n"), b]));
      if (r.ok) chooseAudio(r.value);
    }
  });
});

describe("the caller's offer in an INVITE", () => {
  const req = (body: string, ct: string | undefined): { request: SipRequest } => ({
    request: { body: Buffer.from(body), headers: ct === undefined ? [] : [{ name: "content-type", value: ct }] } as unknown as SipRequest,
  });
  const good = sdp(...HEAD, "m=audio 4000 RTP/AVP 0");

  it("is read from an application/sdp body (parameters and case ignored)", () => {
    assert.equal(offerOf(req(good, "Application/SDP; charset=utf-8")).ok, true);
  });

  it("is absent from an INVITE without a body (offer in the 2xx) or with another body type", () => {
    const none = offerOf(req("", "application/sdp"));
    assert.ok(!none.ok && /no offer/.test(none.reason));
    const multi = offerOf(req(good, "multipart/mixed;boundary=x"));
    assert.ok(!multi.ok && /not application\/sdp/.test(multi.reason));
  });
});
