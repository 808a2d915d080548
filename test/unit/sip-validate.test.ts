// The RFC 4475 torture suite end to end at the message layer: every file goes through
// parseDatagram (and frameStream + parseStreamMessage when it can be framed) and, when it
// parses, through checkRequest for a stated role. The expected outcome is INDEX.md's.
import { test } from "node:test";
import assert from "node:assert/strict";
import { frameStream, parseDatagram, parseStreamMessage, type ParseResult } from "../../agent/sip/message.ts";
import { checkRequest, type ElementRole } from "../../agent/sip/validate.ts";
import type { SipRequest } from "../../agent/sip/types.ts";
import { loadRfc4475, rfc4475Files } from "../fixtures/rfc4475.ts";

const METHODS: ReadonlySet<string> = new Set(["INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "REGISTER", "MESSAGE"]);
const NO_EXTENSIONS: ReadonlySet<string> = new Set();

/** "accept": parses and passes checkRequest; "drop": a response the element discards; a number: the status sent. */
type Outcome = "accept" | "drop" | number;
type Case = { file: string; expect: Array<[ElementRole, Outcome]>; note: string };

const CASES: Case[] = [
  { file: "wsinv.dat", expect: [["uas", "accept"], ["proxy", "accept"]], note: "3.1.1.1 valid" },
  { file: "intmeth.dat", expect: [["uas", 501], ["proxy", "accept"]], note: "3.1.1.2 unknown method: UAS 501, proxy forwards" },
  { file: "esc01.dat", expect: [["uas", "accept"]], note: "3.1.1.3 valid" },
  { file: "escnull.dat", expect: [["registrar", "accept"]], note: "3.1.1.4 valid" },
  { file: "esc02.dat", expect: [["registrar", 501], ["proxy", "accept"]], note: "3.1.1.5 RE%47IST%45R is not REGISTER" },
  { file: "lwsdisp.dat", expect: [["uas", "accept"]], note: "3.1.1.6 valid" },
  { file: "longreq.dat", expect: [["uas", "accept"]], note: "3.1.1.7 valid" },
  { file: "dblreq.dat", expect: [["registrar", "accept"]], note: "3.1.1.8 trailing octets ignored" },
  { file: "semiuri.dat", expect: [["proxy", "accept"], ["uas", "accept"]], note: "3.1.1.9 valid" },
  { file: "transports.dat", expect: [["uas", "accept"]], note: "3.1.1.10 valid" },
  { file: "mpart01.dat", expect: [["proxy", "accept"]], note: "3.1.1.11 valid, framed by Content-Length" },
  { file: "unreason.dat", expect: [["uas", "accept"]], note: "3.1.1.12 response" },
  { file: "noreason.dat", expect: [["uas", "accept"]], note: "3.1.1.13 response" },
  { file: "badinv01.dat", expect: [["uas", 400]], note: "3.1.2.1" },
  { file: "clerr.dat", expect: [["uas", 400]], note: "3.1.2.2" },
  { file: "ncl.dat", expect: [["uas", 400]], note: "3.1.2.3" },
  { file: "scalar02.dat", expect: [["registrar", 400]], note: "3.1.2.4" },
  { file: "scalarlg.dat", expect: [["uas", "drop"]], note: "3.1.2.5 response discarded" },
  { file: "quotbal.dat", expect: [["uas", 400]], note: "3.1.2.6" },
  { file: "ltgtruri.dat", expect: [["uas", 400]], note: "3.1.2.7" },
  { file: "lwsruri.dat", expect: [["uas", 400]], note: "3.1.2.8" },
  { file: "lwsstart.dat", expect: [["uas", 400]], note: "3.1.2.9" },
  { file: "trws.dat", expect: [["uas", 400]], note: "3.1.2.10" },
  { file: "escruri.dat", expect: [["uas", 400], ["proxy", 400]], note: "3.1.2.11 refused by checkRequest" },
  { file: "baddate.dat", expect: [["uas", "accept"]], note: "3.1.2.12 Date is not used: ignored" },
  { file: "regbadct.dat", expect: [["registrar", "accept"]], note: "3.1.2.13 left to the registrar's Contact handling" },
  { file: "badaspec.dat", expect: [["uas", 400]], note: "3.1.2.14" },
  { file: "baddn.dat", expect: [["uas", 400]], note: "3.1.2.15" },
  { file: "badvers.dat", expect: [["uas", 505]], note: "3.1.2.16" },
  { file: "mismatch01.dat", expect: [["uas", 400], ["proxy", 400]], note: "3.1.2.17" },
  { file: "mismatch02.dat", expect: [["proxy", 501], ["uas", 501]], note: "3.1.2.18 501 preferred" },
  { file: "bigcode.dat", expect: [["uas", "drop"]], note: "3.1.2.19 response dropped" },
  { file: "badbranch.dat", expect: [["uas", "accept"]], note: "3.2.1 falls back to RFC 2543 matching" },
  { file: "insuf.dat", expect: [["uas", 400]], note: "3.3.1" },
  { file: "unkscm.dat", expect: [["uas", 416], ["proxy", 416]], note: "3.3.2" },
  { file: "novelsc.dat", expect: [["uas", 416], ["proxy", 416]], note: "3.3.3" },
  { file: "unksm2.dat", expect: [["registrar", 400], ["proxy", "accept"]], note: "3.3.4" },
  { file: "bext01.dat", expect: [["proxy", 420], ["uas", 420]], note: "3.3.5" },
  { file: "invut.dat", expect: [["uas", 415], ["proxy", "accept"]], note: "3.3.6" },
  { file: "regaut01.dat", expect: [["registrar", "accept"], ["proxy", "accept"]], note: "3.3.7 authentication layer answers" },
  { file: "multi01.dat", expect: [["uas", 400]], note: "3.3.8" },
  { file: "mcl01.dat", expect: [["uas", 400]], note: "3.3.9" },
  { file: "bcast.dat", expect: [["proxy", "accept"]], note: "3.3.10 parses; the proxy's response path drops it" },
  { file: "zeromf.dat", expect: [["proxy", 483], ["uas", "accept"]], note: "3.3.11" },
  { file: "cparam01.dat", expect: [["registrar", "accept"]], note: "3.3.12" },
  { file: "cparam02.dat", expect: [["registrar", "accept"]], note: "3.3.13" },
  { file: "regescrt.dat", expect: [["registrar", "accept"]], note: "3.3.14" },
  { file: "sdp01.dat", expect: [["uas", 406]], note: "3.3.15" },
  { file: "inv2543.dat", expect: [["uas", "accept"]], note: "3.4.1 RFC 2543 compatibility" },
  { file: "test.dat", expect: [["uas", 400]], note: "unreferenced, malformed" },
];

function outcome(result: ParseResult, role: ElementRole): { outcome: Outcome; headers?: string[] } {
  if (!result.ok) return { outcome: result.error.isRequest === false ? "drop" : result.error.status };
  if (result.message.kind === "response") return { outcome: "accept" };
  const rejection = checkRequest(result.message as SipRequest, { role, supportedMethods: METHODS, supportedExtensions: NO_EXTENSIONS });
  if (!rejection) return { outcome: "accept" };
  return { outcome: rejection.status, headers: (rejection.headers ?? []).map((h) => `${h.name}: ${h.value}`) };
}

test("the table covers all 50 RFC 4475 files", () => {
  const files = rfc4475Files();
  assert.equal(files.length, 50);
  assert.deepEqual(CASES.map((c) => c.file).sort(), files);
});

for (const c of CASES) {
  test(`RFC 4475 ${c.file} (${c.note})`, () => {
    const bytes = loadRfc4475(c.file);
    for (const [role, expected] of c.expect) {
      const viaDatagram = outcome(parseDatagram(bytes), role);
      assert.equal(viaDatagram.outcome, expected, `${c.file} as ${role} over UDP`);
      // Over a stream the same bytes give the same outcome whenever they can be framed.
      const frame = frameStream(bytes);
      if (frame.kind === "message") {
        const viaStream = outcome(parseStreamMessage(bytes.subarray(0, frame.length)), role);
        assert.equal(viaStream.outcome, expected, `${c.file} as ${role} over TCP`);
      }
    }
  });
}

test("bext01: 420 lists the Proxy-Require tags at a proxy and the Require tags at a UAS", () => {
  const r = parseDatagram(loadRfc4475("bext01.dat"));
  assert.ok(r.ok);
  assert.deepEqual(outcome(r, "proxy").headers, ["unsupported: noProxiesSupportThis, norDoAnyProxiesSupportThis"]);
  assert.deepEqual(outcome(r, "uas").headers, ["unsupported: nothingSupportsThis, nothingSupportsThisEither"]);
  // Supported tags are not listed, and a fully supported Require passes.
  const req = r.message as SipRequest;
  const rej = checkRequest(req, { role: "uas", supportedMethods: METHODS, supportedExtensions: new Set(["nothingSupportsThis"]) });
  assert.deepEqual(rej?.headers, [{ name: "unsupported", value: "nothingSupportsThisEither" }]);
  const ok = checkRequest(req, { role: "uas", supportedMethods: METHODS, supportedExtensions: new Set(["nothingSupportsThis", "nothingSupportsThisEither"]) });
  assert.equal(ok, undefined);
});

test("invut: 415 carries Accept; sdp01: 406 carries a 399 Warning", () => {
  const invut = outcome(parseDatagram(loadRfc4475("invut.dat")), "uas");
  assert.deepEqual(invut.headers, ["accept: application/sdp"]);
  const sdp01 = outcome(parseDatagram(loadRfc4475("sdp01.dat")), "uas");
  assert.equal(sdp01.headers?.length, 1);
  assert.match(sdp01.headers![0]!, /^warning: 399 ringedge "/);
});

test("501 answers carry Allow with the supported methods", () => {
  const r = outcome(parseDatagram(loadRfc4475("intmeth.dat")), "uas");
  assert.deepEqual(r.headers, ["allow: INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, MESSAGE"]);
});

function request(lines: string[], body = ""): SipRequest {
  const text = lines.join("\r\n") + `\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
  const r = parseDatagram(Buffer.from(text));
  assert.ok(r.ok, JSON.stringify(!r.ok && r.error));
  assert.equal(r.message.kind, "request");
  return r.message as SipRequest;
}

const base = (method: string, uri = "sip:bob@example.com", extra: string[] = []): string[] => [
  `${method} ${uri} SIP/2.0`,
  "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKabc",
  "Max-Forwards: 70",
  "From: <sip:alice@example.com>;tag=1",
  "To: <sip:bob@example.com>",
  "Call-ID: c1",
  `CSeq: 1 ${method}`,
  ...extra,
];
const opts = (role: ElementRole) => ({ role, supportedMethods: METHODS, supportedExtensions: NO_EXTENSIONS });

test("ACK is never rejected, CANCEL ignores Require", () => {
  const ack = request([...base("ACK", "nobody:x"), "Require: foo"]);
  assert.equal(checkRequest(ack, opts("uas")), undefined);
  const cancel = request([...base("CANCEL"), "Require: foo"]);
  assert.equal(checkRequest(cancel, opts("uas")), undefined);
  const bye = request([...base("BYE"), "Require: foo"]);
  assert.equal(checkRequest(bye, opts("uas"))?.status, 420);
});

test("tel and sips Request-URIs pass; malformed sip URIs are 400", () => {
  assert.equal(checkRequest(request(base("INVITE", "tel:+15551234")), opts("proxy")), undefined);
  assert.equal(checkRequest(request(base("OPTIONS", "sips:bob@example.com")), opts("uas")), undefined);
  assert.equal(checkRequest(request(base("OPTIONS", "sip:bob@exa%mple.com")), opts("uas"))?.status, 400);
  assert.equal(checkRequest(request(base("OPTIONS", "sip:bob@example.com:99999")), opts("proxy"))?.status, 400);
});

test("Max-Forwards 0 is 483 only at a proxy; 1 still forwards", () => {
  const zero = request(base("INVITE").map((l) => (l.startsWith("Max-Forwards") ? "Max-Forwards: 0" : l)));
  assert.equal(checkRequest(zero, opts("proxy"))?.status, 483);
  assert.equal(checkRequest(zero, opts("uas")), undefined);
  const one = request(base("INVITE").map((l) => (l.startsWith("Max-Forwards") ? "Max-Forwards: 1" : l)));
  assert.equal(checkRequest(one, opts("proxy")), undefined);
});

test("Accept wildcards admit SDP; an empty Accept does not", () => {
  assert.equal(checkRequest(request([...base("INVITE"), "Accept: application/*"]), opts("uas")), undefined);
  assert.equal(checkRequest(request([...base("INVITE"), "Accept: text/plain, */*"]), opts("uas")), undefined);
  assert.equal(checkRequest(request([...base("INVITE"), "Accept:"]), opts("uas"))?.status, 406);
  // Accept only matters for INVITE here.
  assert.equal(checkRequest(request([...base("OPTIONS"), "Accept: text/plain"]), opts("uas")), undefined);
});

test("bodies: accepted types by configuration, parameters ignored, encodings refused", () => {
  const sdp = request([...base("INVITE"), "Content-Type: application/SDP; charset=utf-8"], "v=0\r\n");
  assert.equal(checkRequest(sdp, opts("uas")), undefined);
  const text = request([...base("MESSAGE"), "Content-Type: text/plain"], "hi");
  assert.equal(checkRequest(text, opts("uas"))?.status, 415);
  assert.equal(checkRequest(text, { ...opts("uas"), acceptedContentTypes: new Set(["text/plain"]) }), undefined);
  const untyped = request(base("MESSAGE"), "hi");
  assert.equal(checkRequest(untyped, opts("uas"))?.status, 415);
  const gz = request([...base("INVITE"), "Content-Type: application/sdp", "Content-Encoding: gzip"], "x");
  assert.deepEqual(checkRequest(gz, opts("uas")), { status: 415, reason: "Unsupported Media Type", headers: [{ name: "accept-encoding", value: "identity" }] });
});

test("registrar: To must be sip/sips; other methods are judged by supportedMethods", () => {
  const tel = request(base("REGISTER", "sip:example.com").map((l) => (l.startsWith("To:") ? "To: <tel:+15551234>" : l)));
  assert.equal(checkRequest(tel, opts("registrar"))?.status, 400);
  assert.equal(checkRequest(tel, opts("proxy")), undefined);
  const invite = request(base("INVITE"));
  assert.equal(checkRequest(invite, { ...opts("registrar"), supportedMethods: new Set(["REGISTER"]) })?.status, 501);
});
