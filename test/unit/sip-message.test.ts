import { test } from "node:test";
import { execFileSync } from "node:child_process";
import assert from "node:assert/strict";
import {
  DEFAULT_LIMITS,
  frameStream,
  getHeader,
  getHeaders,
  headerParams,
  isKeepAlive,
  parseDatagram,
  parseNameAddr,
  parseStreamMessage,
  parseVia,
  splitList,
  type FrameResult,
  type ParseResult,
} from "../../agent/sip/message.ts";
import { detached } from "../../agent/strings.ts";
import { createResponse, encodeResponse, forwardRequest, serialize, setViaReceived, withHeaders } from "../../agent/sip/serialize.ts";
import type { SipMessage, SipRequest, SipResponse } from "../../agent/sip/types.ts";
import { loadRfc4475 as load, rfc4475Files } from "../fixtures/rfc4475.ts";


function ok(result: ParseResult): SipMessage {
  if (!result.ok) assert.fail(`parse failed: ${result.error.status} ${result.error.reason}`);
  return result.message;
}
function req(result: ParseResult): SipRequest {
  const m = ok(result);
  assert.equal(m.kind, "request");
  return m as SipRequest;
}
function err(result: ParseResult) {
  if (result.ok) assert.fail("expected a parse error");
  return result.error;
}

const INVITE = [
  "INVITE sip:bob@biloxi.example.com SIP/2.0",
  "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnashds8",
  "Max-Forwards: 70",
  "To: Bob <sip:bob@biloxi.example.com>",
  'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774',
  "Call-ID: a84b4c76e66710",
  "CSeq: 314159 INVITE",
  "Contact: <sip:alice@pc33.atlanta.example.com>",
  "Content-Type: application/sdp",
];
/** A message from header lines; contentLength null leaves the header out. */
function message(lines: string[], body = "", contentLength: number | null = Buffer.byteLength(body)): Buffer {
  const cl = contentLength === null ? "" : `Content-Length: ${contentLength}\r\n`;
  return Buffer.from(`${lines.join("\r\n")}\r\n${cl}\r\n${body}`);
}

// --- RFC 4475 details beyond the status table (see sip-validate.test.ts) -----------------

test("wsinv: folding, odd spacing, compact names, leading zeros, escaped quotes", () => {
  const m = req(parseDatagram(load("wsinv.dat")));
  assert.equal(m.uri, "sip:vivekg@chair-dnrc.example.com;unknownparam");
  assert.equal(m.maxForwards, 68);
  assert.deepEqual(m.cseq, { seq: 9, method: "INVITE" });
  assert.deepEqual(m.via.map((v) => [v.transport, v.host, v.branch]), [
    ["UDP", "192.0.2.2", "390skdjuw"],
    ["TCP", "spindle.example.com", "z9hG4bK9ikj8"],
    ["UDP", "192.168.255.111", "z9hG4bK30239"],
  ]);
  assert.equal(m.from.displayName, 'J Rosenberg \\"');
  assert.equal(m.from.tag, "98asjd8");
  assert.equal(m.to.uri, "sip:vivekg@chair-dnrc.example.com");
  assert.equal(m.to.tag, "1918181833n");
  assert.equal(getHeader(m, "subject"), "");
  assert.equal(getHeader(m, "NewFangledHeader"), "newfangled value continued newfangled value");
  const contact = parseNameAddr(getHeaders(m, "contact")[0]!);
  assert.equal(contact?.displayName, 'Quoted string ""');
  assert.deepEqual([...contact!.params], [["newparam", "newvalue"], ["secondparam", null], ["q", "0.33"]]);
  assert.equal(m.body.length, 150);
});

test("intmeth: token method, NUL and controls in a quoted display name, UTF-8 values", () => {
  const m = req(parseDatagram(load("intmeth.dat")));
  assert.equal(m.method, "!interesting-Method0123456789_*+`.%indeed'~");
  assert.equal(m.to.displayName, "BEL:\x07 NUL:\x00 DEL:\x7f");
  assert.equal(m.from.displayName, "token1~` token2'+_ token3*%!.-");
  assert.equal(m.from.tag, "_token~1'+`*%!-.");
  assert.equal(m.from.params.get("fromparam''~+*_!.-%"), '"работающий"');
  assert.equal(getHeader(m, "extensionHeader-!.%*+_`'~"), "大停電");
  assert.equal(m.callId, "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{");
});

test("esc02: C%6Fntact is another header, so two Contact values; %Z%45 display name literal", () => {
  const m = req(parseDatagram(load("esc02.dat")));
  assert.deepEqual(getHeaders(m, "contact"), ["<sip:alias1@host1.example.com>", "<sip:alias3@host3.example.com>"]);
  assert.equal(getHeader(m, "c%6fntact"), "<sip:alias2@host2.example.com>");
  assert.equal(m.to.displayName, "%Z%45");
});

test("longreq: 34 Via values across v/V/Via spellings with space before the colon", () => {
  const m = req(parseDatagram(load("longreq.dat")));
  assert.equal(m.via.length, 34);
  assert.equal(m.via[0]!.host, "sip33.example.com");
  assert.equal(m.via[33]!.params.get("received"), "192.0.2.5");
  assert.ok(m.to.displayName!.startsWith("I have a user name of extreme"));
  assert.ok(m.from.tag!.length > 100);
});

test("dblreq: octets after Content-Length are ignored", () => {
  const m = req(parseDatagram(load("dblreq.dat")));
  assert.equal(m.method, "REGISTER");
  assert.equal(m.body.length, 0);
  assert.equal(m.callId, "dblreq.0ha0isndaksdj99sdfafnl3lk233412");
});

test("inv2543: no Content-Length on UDP means the rest of the datagram", () => {
  const bytes = load("inv2543.dat");
  const m = req(parseDatagram(bytes));
  const bodyStart = bytes.indexOf("\r\n\r\n") + 4;
  assert.deepEqual(m.body, bytes.subarray(bodyStart));
  assert.equal(m.maxForwards, undefined);
  assert.equal(m.via[0]!.branch, undefined);
  assert.equal(m.from.tag, undefined);
  // On a stream the same message cannot be framed.
  assert.deepEqual(frameStream(bytes), { kind: "error", reason: "missing Content-Length on a stream" });
  assert.equal(err(parseStreamMessage(bytes)).status, 400);
});

test("mpart01: binary body framed by byte count", () => {
  const bytes = load("mpart01.dat");
  const m = req(parseDatagram(bytes));
  assert.equal(m.body.length, 553);
  assert.deepEqual(m.body, bytes.subarray(bytes.length - 553));
  assert.ok(m.body.includes(0));
  assert.equal(m.via[0]!.params.get("rport"), null);
});

test("responses: UTF-8 and empty reason phrases", () => {
  const u = ok(parseDatagram(load("unreason.dat"))) as SipResponse;
  assert.equal(u.status, 200);
  assert.ok(u.reason.startsWith("= 2**3 * 5**2 но"));
  const n = ok(parseDatagram(load("noreason.dat"))) as SipResponse;
  assert.equal(n.status, 100);
  assert.equal(n.reason, "");
});

test("transports: unknown transport tokens are kept", () => {
  const m = req(parseDatagram(load("transports.dat")));
  assert.deepEqual(m.via.map((v) => v.transport), ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]);
});

test("errors carry what could be read, for a stateless answer", () => {
  const insuf = err(parseDatagram(load("insuf.dat")));
  assert.equal(insuf.isRequest, true);
  assert.equal(insuf.partial.via?.[0]?.branch, "z9hG4bKkdj.insuf");
  assert.deepEqual(insuf.partial.cseq, { seq: 193942, method: "INVITE" });
  assert.equal(insuf.partial.callId, undefined);

  const badvers = err(parseDatagram(load("badvers.dat")));
  assert.equal(badvers.status, 505);
  assert.equal(badvers.partial.callId, "badvers.31417@c.example.com");
  assert.equal(badvers.partial.method, "OPTIONS");

  const multi = err(parseDatagram(load("multi01.dat")));
  assert.equal(multi.status, 400);
  assert.equal(multi.partial.callId, "multi01.98asdh@192.0.2.1"); // the first value

  const big = err(parseDatagram(load("bigcode.dat")));
  assert.equal(big.isRequest, false);

  const scalar = err(parseDatagram(load("scalar02.dat")));
  assert.equal(scalar.reason, "Malformed CSeq");
  assert.equal(scalar.partial.to?.uri, "sip:user@example.com");
});

test("every RFC 4475 file frames on a stream as expected", () => {
  const expectFrame: Record<string, FrameResult["kind"]> = {
    "clerr.dat": "need-more", // Content-Length 9999: a stream simply waits
    "baddn.dat": "need-more", // no empty line after the headers
    "ncl.dat": "error",
    "mcl01.dat": "error",
    "inv2543.dat": "error",
  };
  for (const f of rfc4475Files()) {
    const frame = frameStream(load(f));
    assert.equal(frame.kind, expectFrame[f] ?? "message", f);
  }
});

// --- header handling ----------------------------------------------------------------------

test("compact header forms map to canonical long names", () => {
  const compact: Record<string, string> = {
    a: "accept-contact", b: "referred-by", c: "content-type", d: "request-disposition", e: "content-encoding",
    f: "from", i: "call-id", j: "reject-contact", k: "supported", l: "content-length", m: "contact",
    n: "identity-info", o: "event", r: "refer-to", s: "subject", t: "to", u: "allow-events", v: "via",
    x: "session-expires", y: "identity",
  };
  const others = Object.entries(compact)
    .filter(([k]) => !"ftivlc".includes(k))
    .map(([k]) => `${k.toUpperCase()}: value-${k}`);
  const m = req(parseDatagram(message([
    "OPTIONS sip:x@example.com SIP/2.0",
    "v: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1",
    "f: <sip:a@example.com>;tag=1",
    "t: <sip:x@example.com>",
    "i: abc",
    "CSeq: 1 OPTIONS",
    "c: text/plain",
    ...others,
  ], "hi", null)));
  assert.equal(m.callId, "abc");
  for (const [short, long] of Object.entries(compact)) {
    if ("ftivl".includes(short)) continue;
    const value = short === "c" ? "text/plain" : `value-${short}`;
    assert.equal(getHeader(m, long), value, long);
    assert.equal(getHeader(m, short), value, short);
  }
  assert.ok(m.headers.every((h) => h.name.length > 1 && h.name === h.name.toLowerCase()));
});

test("header and parameter names in any case read as the canonical names; values trimmed as String.prototype.trim does", () => {
  const m = req(parseDatagram(message([
    "OPTIONS sip:x@example.com SIP/2.0",
    "VIA: SIP/2.0/UDP 192.0.2.1;BRANCH=z9hG4bK1;RPort \t",
    "fROM:<sip:a@example.com>;TAG=Ab1",
    "To:\t<sip:x@example.com>;Tag=x2\u00a0",
    "cALL-id: abc",
    "Cseq: 1 OPTIONS",
    "Max-Forwards : 70",
    "Content-Type\t: text/plain",
    "X-Custom-Header: \u3000kept\u3000",
    "Via-Extra: not a via",
  ], "hi", null)));
  assert.deepEqual(m.headers.map((h) => h.name), ["via", "from", "to", "call-id", "cseq", "max-forwards", "content-type", "x-custom-header", "via-extra"]);
  assert.equal(m.via.length, 1);
  assert.equal(m.via[0]!.branch, "z9hG4bK1");
  assert.deepEqual([...m.via[0]!.params.keys()], ["branch", "rport"]);
  assert.equal(m.from.tag, "Ab1");
  assert.equal(m.to.tag, "x2");
  assert.equal(m.callId, "abc");
  assert.equal(m.maxForwards, 70);
  assert.equal(getHeader(m, "x-custom-header"), "kept");
  assert.equal(getHeader(m, "via-extra"), "not a via");
  assert.equal(m.headers[0]!.value, "SIP/2.0/UDP 192.0.2.1;BRANCH=z9hG4bK1;RPort");
  // A name that only looks like a known one (a non-token character in it) is still refused.
  const bad = err(parseDatagram(message(["OPTIONS sip:x@example.com SIP/2.0", "V\u00eda: x", "v: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1", "f: <sip:a@example.com>;tag=1", "t: <sip:x@example.com>", "i: abc", "CSeq: 1 OPTIONS"], "", null)));
  assert.equal(bad.reason, "Malformed header name");
});

test("folding: continuation lines join with their whitespace, in any header", () => {
  const m = req(parseDatagram(message([
    "OPTIONS sip:x@example.com SIP/2.0",
    "Via: SIP/2.0/UDP",
    "\t192.0.2.1",
    "  ;branch=z9hG4bK1",
    "From:",
    " <sip:a@example.com>",
    " ;tag=9",
    "To: <sip:x@example.com>",
    "Call-ID: abc",
    "CSeq: 1",
    "   OPTIONS",
    "Subject: a",
    " b",
  ])));
  assert.equal(m.via[0]!.host, "192.0.2.1");
  assert.equal(m.via[0]!.branch, "z9hG4bK1");
  assert.equal(m.from.tag, "9");
  assert.equal(m.cseq.method, "OPTIONS");
  assert.equal(getHeader(m, "subject"), "a b");
});

test("Via: IPv6 references, comma lists, quoted commas, rport/received/maddr/ttl", () => {
  const vias = parseVia(
    'SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK1;rport, SIP/2.0/tcp [::1];branch=z9hG4bK2;x="a,b";received=2001:db8::9,' +
      "SIP/2.0/UDP h.example.com:5070;rport=1234;maddr=239.1.1.1;ttl=16;branch=z9hG4bK3",
  );
  assert.ok(vias);
  assert.deepEqual(vias.map((v) => [v.transport, v.host, v.port, v.branch]), [
    ["UDP", "[2001:db8::1]", 5060, "z9hG4bK1"],
    ["TCP", "[::1]", undefined, "z9hG4bK2"],
    ["UDP", "h.example.com", 5070, "z9hG4bK3"],
  ]);
  assert.equal(vias[0]!.params.get("rport"), null);
  assert.equal(vias[1]!.params.get("x"), '"a,b"');
  assert.equal(vias[1]!.params.get("received"), "2001:db8::9");
  assert.equal(vias[2]!.params.get("rport"), "1234");
  assert.equal(vias[2]!.params.get("maddr"), "239.1.1.1");
  assert.equal(vias[2]!.params.get("ttl"), "16");
  assert.equal(vias[0]!.raw, "SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK1;rport");
  for (const bad of ["SIP/2.0/UDP", "SIP/2.0/UDP h;;", "SIP/2.0/UDP h,", "SIP/2.0 h", "SIP/2.0/UDP [zz]", "SIP/2.0/UDP h:99999", "SIP/2.0/UDP h;x=", 'SIP/2.0/UDP h;x="open']) {
    assert.equal(parseVia(bad), undefined, bad);
  }
});

test("name-addr: display names, addr-spec parameters, malformed forms", () => {
  const plain = parseNameAddr("sip:+19725552222@gw1.example.net;unknownparam");
  assert.equal(plain?.uri, "sip:+19725552222@gw1.example.net");
  assert.deepEqual([...plain!.params], [["unknownparam", null]]);
  const inner = parseNameAddr("<sip:+19725552222@gw1.example.net;unknownparam>");
  assert.equal(inner?.uri, "sip:+19725552222@gw1.example.net;unknownparam");
  assert.equal(inner?.params.size, 0);
  assert.equal(parseNameAddr("caller<sip:caller@example.com>;tag=323")?.displayName, "caller");
  assert.equal(parseNameAddr('"a\\"b" <sip:x@y>')?.displayName, 'a"b');
  assert.equal(parseNameAddr("<sip:x@y>;tag=abc;Expires=60")?.params.get("expires"), "60");
  for (const bad of ['"Mr. J. User <sip:j.user@example.com>', "Bell, Alexander <sip:a@b>", "< sip:t@example.org >", "<sip:x@y", "nouri", "<sip:x@y> junk", "<sip:x@y>;", "*"]) {
    assert.equal(parseNameAddr(bad), undefined, bad);
  }
});

test("getHeaders splits list headers outside quotes, <> and []; others stay whole", () => {
  const m = req(parseDatagram(message([
    ...INVITE.slice(0, 7),
    'Contact: "A, B" <sip:a@h;x=1,2>, <sip:b@[2001:db8::1]>',
    "Contact: sip:c@h",
    "Supported: timer,100rel , path",
    'WWW-Authenticate: Digest realm="a,b", nonce="x"',
  ])));
  assert.deepEqual(getHeaders(m, "m"), ['"A, B" <sip:a@h;x=1,2>', "<sip:b@[2001:db8::1]>", "sip:c@h"]);
  assert.deepEqual(getHeaders(m, "k"), ["timer", "100rel", "path"]);
  assert.deepEqual(getHeaders(m, "www-authenticate"), ['Digest realm="a,b", nonce="x"']);
  assert.deepEqual(getHeaders(m, "x-none"), []);
  assert.deepEqual(splitList(" a ,, b "), ["a", "b"]);
});

test("headerParams reads parameters after the first top-level semicolon", () => {
  assert.deepEqual([...headerParams("multipart/mixed;boundary=7a9cbec02ceef655")], [["boundary", "7a9cbec02ceef655"]]);
  assert.deepEqual([...headerParams('<sip:a@h;lr>;expires=60;+sip.instance="<urn:x;y>"')], [["expires", "60"], ["+sip.instance", '"<urn:x;y>"']]);
  assert.deepEqual([...headerParams("no-params")], []);
  assert.deepEqual([...headerParams("a;ok=1;;bad")], [["ok", "1"]]);
});

test("single-valued headers given twice are 400; identical Content-Length twice is fine", () => {
  for (const dup of ["Call-ID: other", "CSeq: 2 INVITE", "From: <sip:x@y>;tag=2", "To: <sip:z@y>", "Max-Forwards: 9"]) {
    const e = err(parseDatagram(message([...INVITE, dup])));
    assert.equal(e.status, 400, dup);
    assert.match(e.reason, /^Multiple /);
  }
  const m = req(parseDatagram(message([...INVITE, "l: 2"], "hi")));
  assert.equal(m.body.toString(), "hi");
});

test("start-line rules: SP count, version, scheme, status code", () => {
  const withLine = (line: string) => parseDatagram(message([line, ...INVITE.slice(1)]));
  assert.equal(err(withLine("INVITE sip:bob@biloxi.example.com SIP/3.0")).status, 505);
  assert.equal(err(withLine("INVITE sip:bob@biloxi.example.com HTTP/1.1")).status, 400);
  assert.equal(err(withLine("INVITE  sip:bob@biloxi.example.com SIP/2.0")).status, 400);
  assert.equal(err(withLine("INVITE sip:bob@biloxi.example.com SIP/2.0 ")).status, 400);
  assert.equal(err(withLine("INVITE bob@biloxi.example.com SIP/2.0")).status, 400);
  assert.equal(err(withLine("INV ITE sip:bob@biloxi.example.com SIP/2.0")).status, 400);
  assert.equal(req(withLine("INVITE sip:bob@biloxi.example.com sip/2.0")).method, "INVITE");
  assert.equal(err(withLine("SIP/2.0 099 Low")).isRequest, false);
  assert.equal(err(withLine("SIP/2.0 700 High")).isRequest, false);
  assert.equal(err(withLine("SIP/2.0 2000 Long")).isRequest, false);
  assert.equal((ok(withLine("SIP/2.0 180")) as SipResponse).reason, "");
  assert.equal(err(withLine("")).status, 400);
  // CRLFs before the start-line are skipped (RFC 3261 §7.5).
  assert.equal(req(parseDatagram(Buffer.concat([Buffer.from("\r\n\r\n"), message(INVITE)]))).callId, "a84b4c76e66710");
});

test("CSeq and Max-Forwards bounds", () => {
  const withCSeq = (v: string) => parseDatagram(message([...INVITE.filter((l) => !l.startsWith("CSeq")), `CSeq: ${v}`]));
  assert.equal(req(withCSeq("4294967295 INVITE")).cseq.seq, 4294967295);
  assert.equal(req(withCSeq("0 INVITE")).cseq.seq, 0);
  for (const bad of ["4294967296 INVITE", "-1 INVITE", "1INVITE", "1 INVITE x", "INVITE", "1 "]) assert.equal(err(withCSeq(bad)).status, 400, bad);
  const withMf = (v: string) => parseDatagram(message([...INVITE.filter((l) => !l.startsWith("Max-Forwards")), `Max-Forwards: ${v}`]));
  assert.equal(req(withMf("0")).maxForwards, 0);
  assert.equal(err(withMf("-1")).status, 400);
  assert.equal(err(withMf("")).status, 400);
});

test("Content-Length counts bytes, not characters, with UTF-8 in headers and body", () => {
  const body = "v=0\r\ns=Grüße ☎\r\n";
  const bytes = message([...INVITE.slice(0, 3), "To: \"Jürgen ☎\" <sip:j@example.com>", ...INVITE.slice(4)], body);
  const m = req(parseDatagram(bytes));
  assert.equal(m.body.length, Buffer.byteLength(body));
  assert.equal(m.body.toString("utf8"), body);
  assert.equal(m.to.displayName, "Jürgen ☎");
  // A Content-Length one byte past the datagram is refused (RFC 4475 clerr.dat).
  const tooLong = message(INVITE, body, Buffer.byteLength(body) + 1);
  assert.equal(err(parseDatagram(tooLong)).reason, "Content-Length larger than message");
  const frame = frameStream(bytes);
  assert.deepEqual(frame, { kind: "message", length: bytes.length });
});

test("limits: message size, header count and header line length", () => {
  const big = message(INVITE, "x".repeat(2000));
  assert.equal(err(parseDatagram(big, { maxMessageBytes: 1000, maxHeaders: 100 })).status, 513);
  const many = message([...INVITE, ...Array.from({ length: 20 }, (_, i) => `X-H${i}: ${i}`)]);
  assert.equal(err(parseDatagram(many, { maxMessageBytes: 65535, maxHeaders: 15 })).status, 513);
  assert.equal(req(parseDatagram(many, { maxMessageBytes: 65535, maxHeaders: 40 })).headers.length, 29);
  const longLine = message([...INVITE, `X-Long: ${"a".repeat(300)}`]);
  assert.equal(err(parseDatagram(longLine, { maxMessageBytes: 65535, maxHeaders: 100, maxHeaderLineBytes: 200 })).reason, "Header field too long");
  assert.ok(parseDatagram(longLine, DEFAULT_LIMITS).ok);
  // Streams: an oversized header block or declared body is a framing error.
  assert.equal(frameStream(Buffer.from("INVITE sip:x SIP/2.0\r\n" + "X: y\r\n".repeat(300)), { maxMessageBytes: 1000, maxHeaders: 100 }).kind, "error");
  assert.equal(frameStream(message(INVITE, "", 100000)).kind, "error");
});

test("header lines without a colon or with a bad name are errors", () => {
  assert.equal(err(parseDatagram(message([...INVITE, "NoColonHere"]))).status, 400);
  assert.equal(err(parseDatagram(message([...INVITE, "Bad Name: x"]))).status, 400);
  assert.equal(err(parseDatagram(message([...INVITE, ": x"]))).status, 400);
});

// --- stream framing ----------------------------------------------------------------------

/** Feeds chunks like a TCP transport and returns the frames in order. */
function drain(chunks: Buffer[]): Array<{ kind: string; bytes: Buffer }> {
  const out: Array<{ kind: string; bytes: Buffer }> = [];
  let buffer = Buffer.alloc(0);
  for (const chunk of chunks) {
    buffer = Buffer.concat([buffer, chunk]);
    for (;;) {
      const f = frameStream(buffer);
      if (f.kind === "need-more") break;
      if (f.kind === "error") throw new Error(f.reason);
      out.push({ kind: f.kind, bytes: buffer.subarray(0, f.length) });
      buffer = buffer.subarray(f.length);
    }
  }
  assert.equal(buffer.length, 0, "nothing left over");
  return out;
}

test("TCP framing: messages and keep-alives split at every byte boundary", () => {
  const a = message(INVITE, "v=0\r\ns=€\r\n");
  const b = message([...INVITE.slice(0, 5), "Call-ID: second", ...INVITE.slice(6)]);
  const stream = Buffer.concat([Buffer.from("\r\n\r\n"), a, Buffer.from("\r\n\r\n"), b]);
  const summary = (frames: Array<{ kind: string; bytes: Buffer }>) =>
    frames.map((f) => (f.kind === "message" ? req(parseStreamMessage(f.bytes)).callId : f.kind));
  const whole = drain([stream]);
  assert.deepEqual(summary(whole), ["keepalive", "a84b4c76e66710", "keepalive", "second"]);
  assert.equal(whole[0]!.bytes.length, 4);
  for (let cut = 1; cut < stream.length; cut++) {
    const frames = summary(drain([stream.subarray(0, cut), stream.subarray(cut)]));
    // A cut inside a CRLFCRLF ping may split it into two CRLF frames.
    assert.deepEqual(frames.filter((k) => k !== "keepalive"), ["a84b4c76e66710", "second"], `cut at ${cut}`);
  }
  // Byte by byte.
  const bytewise = summary(drain([...stream].map((x) => Buffer.from([x]))));
  assert.deepEqual(bytewise.filter((k) => k !== "keepalive"), ["a84b4c76e66710", "second"]);
});

test("TCP framing: Content-Length is mandatory, numeric and consistent", () => {
  assert.deepEqual(frameStream(message(INVITE, "", null)), { kind: "error", reason: "missing Content-Length on a stream" });
  assert.equal(frameStream(Buffer.from(`${INVITE.join("\r\n")}\r\nContent-Length: abc\r\n\r\n`)).kind, "error");
  assert.equal(frameStream(Buffer.from(`${INVITE.join("\r\n")}\r\nl: 1\r\nContent-Length: 2\r\n\r\nab`)).kind, "error");
  assert.deepEqual(frameStream(Buffer.from(`${INVITE.join("\r\n")}\r\nContent-Length   :\r\n  2\r\n\r\nab`)).kind, "message");
  assert.deepEqual(frameStream(Buffer.from("\r")), { kind: "need-more" });
  assert.deepEqual(frameStream(Buffer.alloc(0)), { kind: "need-more" });
  assert.ok(isKeepAlive(Buffer.from("\r\n\r\n")));
  assert.ok(!isKeepAlive(Buffer.from("\r\nX")));
});

// --- serialisation and builders ----------------------------------------------------------

test("serialize round-trips torture messages and recomputes Content-Length in bytes", () => {
  for (const f of ["wsinv.dat", "intmeth.dat", "mpart01.dat", "longreq.dat", "unreason.dat", "esc01.dat", "inv2543.dat"]) {
    const first = ok(parseDatagram(load(f)));
    const bytes = serialize(first);
    const second = ok(parseStreamMessage(bytes));
    assert.deepEqual(second.headers.filter((h) => h.name !== "content-length"), first.headers.filter((h) => h.name !== "content-length"), f);
    assert.deepEqual(second.body, first.body, f);
    assert.deepEqual(second.via, first.via, f);
    assert.equal(getHeader(second, "content-length"), String(first.body.length), f);
  }
  const m = req(parseDatagram(message(INVITE, "é")));
  const text = serialize({ ...m, body: Buffer.from("€uro") }).toString();
  assert.match(text, /\r\nContent-Length: 6\r\n\r\n€uro$/);
  assert.match(text, /^INVITE sip:bob@biloxi.example.com SIP\/2.0\r\nVia: /);
  assert.match(text, /\r\nCall-ID: a84b4c76e66710\r\nCSeq: 314159 INVITE\r\n/);
  // CR/LF smuggled into a value cannot create a header line.
  const injected = serialize(withHeaders(m, { append: [{ name: "Subject", value: "x\r\nVia: evil" }] })).toString();
  assert.ok(!injected.includes("\r\nVia: evil"));
});

test("createResponse copies Via/From/To/Call-ID/CSeq and tags To except on 100", () => {
  const m = req(parseDatagram(load("wsinv.dat")));
  const notag = req(parseDatagram(message(INVITE)));
  const r = createResponse(notag, 180, "Ringing", { toTag: "t1", headers: [{ name: "contact", value: "<sip:bob@10.0.0.2>" }] });
  assert.equal(r.to.tag, "t1");
  assert.equal(getHeader(r, "to"), "Bob <sip:bob@biloxi.example.com>;tag=t1");
  assert.equal(getHeader(r, "contact"), "<sip:bob@10.0.0.2>");
  const trying = createResponse(notag, 100, "Trying", { toTag: "t1" });
  assert.equal(trying.to.tag, undefined);
  // wsinv already has a To tag and three Via values on two lines: all kept as received.
  const ok200 = createResponse(m, 200, "OK", { toTag: "other", body: Buffer.from("v=0\r\n"), contentType: "application/sdp" });
  assert.equal(ok200.to.tag, "1918181833n");
  assert.deepEqual(getHeaders(ok200, "via"), getHeaders(m, "via"));
  const parsed = ok(parseStreamMessage(serialize(ok200))) as SipResponse;
  assert.equal(parsed.status, 200);
  assert.deepEqual(parsed.via.map((v) => v.branch), m.via.map((v) => v.branch));
  assert.equal(parsed.callId, m.callId);
  assert.deepEqual(parsed.cseq, m.cseq);
  assert.equal(getHeader(parsed, "content-type"), "application/sdp");
  assert.equal(parsed.body.toString(), "v=0\r\n");
  // Timestamp is echoed in 100 Trying only (RFC 3261 §8.2.6.1).
  const ts = req(parseDatagram(message([...INVITE, "Timestamp: 54"])));
  assert.equal(getHeader(createResponse(ts, 100, "Trying"), "timestamp"), "54");
  assert.equal(getHeader(createResponse(ts, 180, "Ringing"), "timestamp"), undefined);
  assert.ok(encodeResponse(notag, 486, "Busy Here").toString().startsWith("SIP/2.0 486 Busy Here\r\n"));
});

test("setViaReceived: received when sent-by differs, rport filled (RFC 3261 §18.2.1, RFC 3581 §4)", () => {
  const natted = req(parseDatagram(message(["INVITE sip:b@h SIP/2.0", "Via: SIP/2.0/UDP 10.0.0.5:5060;rport;branch=z9hG4bK77, SIP/2.0/UDP p.example.com;branch=z9hG4bK1", ...INVITE.slice(2)])));
  setViaReceived(natted, "198.51.100.7", 40123);
  assert.equal(natted.via[0]!.params.get("received"), "198.51.100.7");
  assert.equal(natted.via[0]!.params.get("rport"), "40123");
  assert.equal(natted.via[0]!.raw, "SIP/2.0/UDP 10.0.0.5:5060;rport=40123;branch=z9hG4bK77;received=198.51.100.7");
  assert.equal(getHeader(natted, "via"), "SIP/2.0/UDP 10.0.0.5:5060;rport=40123;branch=z9hG4bK77;received=198.51.100.7, SIP/2.0/UDP p.example.com;branch=z9hG4bK1");
  const response = ok(parseDatagram(serialize(createResponse(natted, 200, "OK"))));
  assert.equal(response.via[0]!.params.get("rport"), "40123");
  assert.equal(response.via.length, 2);

  const same = req(parseDatagram(message(["INVITE sip:b@h SIP/2.0", "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1", ...INVITE.slice(2)])));
  const before = getHeader(same, "via");
  setViaReceived(same, "192.0.2.1", 5060);
  assert.equal(getHeader(same, "via"), before);
  assert.equal(same.via[0]!.params.has("received"), false);

  // rport forces received even when the address matches; IPv6 compares without brackets.
  const v6 = req(parseDatagram(message(["INVITE sip:b@h SIP/2.0", "Via: SIP/2.0/UDP [2001:db8::5];rport;branch=z9hG4bK1", ...INVITE.slice(2)])));
  setViaReceived(v6, "2001:db8::5", 5062);
  assert.equal(v6.via[0]!.params.get("received"), "2001:db8::5");
  assert.equal(v6.via[0]!.params.get("rport"), "5062");
});

test("forwardRequest: a Via given parsed goes out byte for byte as the same Via given as text", () => {
  const m = req(parseDatagram(message([...INVITE, "Record-Route: <sip:earlier.example.com;lr>"], "v=0\r\n")));
  const text = "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKfwd2;rport";
  const parsed = parseVia(text)![0]!;
  const opts = { requestUri: "sip:bob@10.0.0.9:5062", recordRoute: "<sip:10.0.0.1;lr>" };
  const a = forwardRequest(m, { via: text, ...opts });
  const b = forwardRequest(m, { via: parsed, ...opts });
  assert.deepEqual(serialize(b), serialize(a));
  assert.equal(b.via[0], parsed);
  assert.deepEqual(b.via.map((v) => v.branch), ["z9hG4bKfwd2", "z9hG4bKnashds8"]);
  assert.throws(() => forwardRequest(m, { via: "SIP/2.0/UDP a;branch=1, SIP/2.0/UDP b;branch=2", ...opts }), TypeError);
});

test("forwardRequest: Via on top, Max-Forwards, Request-URI, Record-Route, Route pop (RFC 3261 §16.6)", () => {
  const m = req(parseDatagram(message([
    ...INVITE,
    "Route: <sip:proxy.example.com;lr>, <sip:next.example.com;lr>",
    "Route: <sip:last.example.com;lr>",
    "Record-Route: <sip:earlier.example.com;lr>",
  ], "v=0\r\n")));
  const f = forwardRequest(m, {
    via: "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKfwd1;rport",
    requestUri: "sip:bob@10.0.0.9:5062",
    recordRoute: "<sip:10.0.0.1;lr>",
    popRoute: true,
  });
  assert.equal(f.uri, "sip:bob@10.0.0.9:5062");
  assert.equal(f.maxForwards, 69);
  assert.deepEqual(f.via.map((v) => v.branch), ["z9hG4bKfwd1", "z9hG4bKnashds8"]);
  const again = req(parseStreamMessage(serialize(f)));
  assert.equal(again.uri, "sip:bob@10.0.0.9:5062");
  assert.equal(again.maxForwards, 69);
  assert.deepEqual(again.via.map((v) => v.branch), ["z9hG4bKfwd1", "z9hG4bKnashds8"]);
  assert.deepEqual(getHeaders(again, "route"), ["<sip:next.example.com;lr>", "<sip:last.example.com;lr>"]);
  assert.deepEqual(getHeaders(again, "record-route"), ["<sip:10.0.0.1;lr>", "<sip:earlier.example.com;lr>"]);
  assert.equal(again.body.toString(), "v=0\r\n");
  // The original is untouched.
  assert.equal(m.maxForwards, 70);
  assert.equal(getHeaders(m, "route").length, 3);

  const old = req(parseDatagram(load("inv2543.dat")));
  const g = forwardRequest(old, { via: "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKx", recordRoute: "<sip:10.0.0.1;lr>", popRoute: true });
  const parsed = req(parseDatagram(serialize(g)));
  assert.equal(parsed.maxForwards, 70);
  assert.equal(parsed.via[0]!.branch, "z9hG4bKx");
  assert.deepEqual(getHeaders(parsed, "record-route"), ["<sip:10.0.0.1;lr>", "<sip:UserB@example.com;maddr=ss1.example.com>"]);
  assert.deepEqual(parsed.headers.slice(0, 3).map((h) => h.name), ["via", "via", "max-forwards"]);
  assert.throws(() => forwardRequest(old, { via: "not a via" }), TypeError);
});

test("withHeaders removes and appends header lines without touching the original", () => {
  const m = req(parseDatagram(message([...INVITE, "Proxy-Authorization: Digest x", "Proxy-Authorization: Digest y"])));
  const n = withHeaders(m, { remove: ["proxy-authorization"], append: [{ name: "Path", value: "<sip:p@h;lr>" }] });
  assert.equal(getHeader(n, "proxy-authorization"), undefined);
  assert.equal(getHeader(n, "path"), "<sip:p@h;lr>");
  assert.equal(getHeaders(m, "proxy-authorization").length, 2);
});

// --- robustness --------------------------------------------------------------------------

/** Small deterministic PRNG (mulberry32) so failures reproduce. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

test("random mutations and truncations of the torture files never throw and stay fast", () => {
  const files = rfc4475Files().map(load);
  const rand = rng(4475);
  const pick = (n: number) => Math.floor(rand() * n);
  const interesting = Buffer.from('\r\n\t :;,"<>[]\\%@=/0\x00\xff');
  const started = process.hrtime.bigint();
  let parsedOk = 0;
  for (let round = 0; round < 4000; round++) {
    let b = Buffer.from(files[pick(files.length)]!);
    const edits = 1 + pick(4);
    for (let e = 0; e < edits; e++) {
      const at = pick(b.length + 1);
      switch (pick(6)) {
        case 0: // truncate
          b = b.subarray(0, at);
          break;
        case 1: // flip a byte
          if (at < b.length) b[at] = pick(256);
          break;
        case 2: // insert a syntax character
          b = Buffer.concat([b.subarray(0, at), Buffer.from([interesting[pick(interesting.length)]!]), b.subarray(at)]);
          break;
        case 3: // delete a run
          b = Buffer.concat([b.subarray(0, at), b.subarray(at + 1 + pick(20))]);
          break;
        case 4: // duplicate a run (repeated headers, folded lines)
          b = Buffer.concat([b.subarray(0, at), b.subarray(at, at + pick(80)), b.subarray(at)]);
          break;
        default: // overwrite a digit run with a huge number
          b = Buffer.concat([b.subarray(0, at), Buffer.from("99999999999999999999"), b.subarray(at)]);
      }
    }
    const d = parseDatagram(b);
    if (d.ok) parsedOk++;
    else {
      assert.equal(typeof d.error.status, "number");
      assert.ok(!/[\r\n]/.test(d.error.reason));
    }
    const f = frameStream(b);
    if (f.kind === "message") {
      assert.ok(f.length <= b.length);
      parseStreamMessage(b.subarray(0, f.length));
    } else if (f.kind === "keepalive") assert.ok(f.length > 0);
    if (d.ok) serialize(d.message);
  }
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  assert.ok(parsedOk > 100, `some mutations still parse (${parsedOk})`);
  assert.ok(ms < 5000, `4000 mutations took ${ms.toFixed(0)} ms`);
});

test("pathological inputs finish quickly", () => {
  const cases = [
    Buffer.concat([Buffer.from("INVITE sip:a@b SIP/2.0\r\nVia: "), Buffer.from("SIP/2.0/UDP h;branch=x,".repeat(2500)), Buffer.from("\r\n\r\n")]),
    Buffer.from("INVITE sip:a@b SIP/2.0\r\nTo: " + '"'.repeat(60000) + "\r\n\r\n"),
    Buffer.from("INVITE sip:a@b SIP/2.0\r\n" + "X:\r\n ".repeat(10000) + "\r\n\r\n"),
    Buffer.from("\r\n".repeat(30000)),
    Buffer.alloc(65535, 0x41),
    // Lines without a colon and one far away: colon search must stay within each line.
    Buffer.from("INVITE sip:a@b SIP/2.0\r\n" + "c\r\n".repeat(20000) + "X: y\r\n\r\n"),
  ];
  const generous = { maxMessageBytes: 1 << 20, maxHeaders: 1 << 20 };
  for (const b of cases) {
    const started = process.hrtime.bigint();
    parseDatagram(b);
    parseDatagram(b, generous);
    frameStream(b);
    frameStream(b, generous);
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    assert.ok(ms < 200, `took ${ms} ms`);
  }
});

test("detached: the same text, and a kept value no longer holds the message it was read from", () => {
  const res = parseDatagram(Buffer.from("SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK-1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=a-long-callee-tag-8f2e1c\r\nCall-ID: c1@h\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"));
  assert.ok(res.ok);
  const tag = (res.message as SipResponse).to.tag!;
  for (const s of [tag, "short", "", "unicode → §", "x".repeat(5000)]) assert.equal(detached(s), s);
  // Retention, measured in a child with gc exposed: 500 tags kept from 20 KB messages.
  const script = `
    const { detached } = await import(${JSON.stringify(new URL("../../agent/strings.ts", import.meta.url).href)});
    const keep = (f) => {
      const out = [];
      for (let i = 0; i < 500; i++) {
        const msg = ("To: <sip:b@h>;tag=a-long-callee-tag-" + i + "\\r\\n" + "X".repeat(20000)).slice(0);
        out.push(f(msg.slice(msg.indexOf("tag=") + 4, msg.indexOf("\\r\\n"))));
      }
      return out;
    };
    const grown = (f) => { gc(); const base = process.memoryUsage().heapUsed; const kept = keep(f); gc(); const d = process.memoryUsage().heapUsed - base; return kept.length > 0 ? d : 0; };
    console.log(JSON.stringify({ sliced: grown((s) => s), detached: grown(detached) }));
  `;
  const out = execFileSync(process.execPath, ["--expose-gc", "--import", "tsx", "--input-type=module", "-e", script], { encoding: "utf8", timeout: 30_000 });
  const { sliced, detached: copied } = JSON.parse(out) as { sliced: number; detached: number };
  assert.ok(sliced > 5_000_000, `the slices hold their messages (${sliced} B)`);
  assert.ok(copied < 1_000_000, `the copies do not (${copied} B)`);
});
