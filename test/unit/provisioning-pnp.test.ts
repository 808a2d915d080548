// SIP PnP: a real ua-profile SUBSCRIBE sent by multicast to 224.0.1.75 on loopback (IP_MULTICAST_LOOP,
// membership on 127.0.0.1; works in the loopback-only test namespace too), answered with 200 OK
// and a NOTIFY carrying the provisioning URL; parser corners without sockets.
import { test } from "node:test";
import assert from "node:assert/strict";
import dgram from "node:dgram";
import { createLogger } from "../../agent/log.ts";
import { getHeader, parseDatagram } from "../../agent/sip/message.ts";
import type { SipMessage, SipRequest } from "../../agent/sip/types.ts";
import { PNP_MULTICAST_GROUP, PnpResponder, notifyTarget, parsePnpSubscribe, type PnpSubscription } from "../../provisioning/pnp.ts";

const log = createLogger("silent");

function subscribe(opts: { port: number; ruri?: string; event?: string; branch?: string; callId?: string }): string {
  return [
    `SUBSCRIBE ${opts.ruri ?? "sip:MAC%3a000413A11FA7@224.0.1.75"} SIP/2.0`,
    `Via: SIP/2.0/UDP 127.0.0.1:${opts.port};branch=${opts.branch ?? "z9hG4bK-pnp-1"};rport`,
    `From: <sip:MAC%3a000413A11FA7@224.0.1.75>;tag=ph1`,
    `To: <sip:MAC%3a000413A11FA7@224.0.1.75>`,
    `Call-ID: ${opts.callId ?? "pnp-call-1"}@127.0.0.1`,
    "CSeq: 1 SUBSCRIBE",
    `Contact: <sip:127.0.0.1:${opts.port}>`,
    `Event: ${opts.event ?? 'ua-profile;profile-type="device";vendor="snom";model="snomD785";version="10.1.159.12"'}`,
    "Accept: application/url",
    "Expires: 0",
    "Max-Forwards: 70",
    "Content-Length: 0",
    "",
    "",
  ].join("\r\n");
}

function parse(text: string): SipRequest {
  const r = parseDatagram(Buffer.from(text));
  assert.ok(r.ok && r.message.kind === "request");
  return r.message;
}

test("parsePnpSubscribe: MAC from the Request-URI in both vendor spellings, clues from Event params", () => {
  const src = { address: "10.0.0.20", port: 5060 };
  const a = parsePnpSubscribe(parse(subscribe({ port: 5060 })), src);
  assert.ok(a.ok);
  assert.equal(a.sub.mac, "000413a11fa7");
  assert.equal(a.sub.vendor, "snom");
  assert.equal(a.sub.model, "snomD785");
  assert.equal(a.sub.firmware, "10.1.159.12");
  const y = parsePnpSubscribe(parse(subscribe({ port: 5060, ruri: "sip:MAC001565f4f9e1@224.0.1.75", event: 'ua-profile;profile-type="device";vendor="Yealink";model="T53W";version="96.87.0.16"' })), src);
  assert.ok(y.ok);
  assert.equal(y.sub.mac, "001565f4f9e1");
  const other = parsePnpSubscribe(parse(subscribe({ port: 5060, event: "presence" })), src);
  assert.equal(other.ok, false);
  assert.equal(!other.ok && other.status, 489);
  const user = parsePnpSubscribe(parse(subscribe({ port: 5060, event: 'ua-profile;profile-type="user"' })), src);
  assert.equal(user.ok, false);
});

test("the NOTIFY goes to the packet's source only, never to a host the message names", () => {
  const req = parse(subscribe({ port: 5070 }).replace("Contact: <sip:127.0.0.1:5070>", "Contact: <sip:192.0.2.99:5099>"));
  assert.deepEqual(notifyTarget(req, { address: "127.0.0.1", port: 40000 }), { address: "127.0.0.1", port: 5070 }, "Via port on the source address");
  const req2 = parse(subscribe({ port: 5070 }));
  assert.deepEqual(notifyTarget(req2, { address: "127.0.0.1", port: 40000 }), { address: "127.0.0.1", port: 5070 });
  assert.deepEqual(notifyTarget(req2, { address: "10.9.9.9", port: 40000 }), { address: "10.9.9.9", port: 40000 });
});

test("PnP by multicast on loopback: 200 OK, then NOTIFY ua-profile with the application/url body; retransmission gets no second NOTIFY", async (t) => {
  // The responder's port: any free one (5060 in production).
  const probe = dgram.createSocket("udp4");
  await new Promise<void>((r) => probe.bind(0, "127.0.0.1", () => r()));
  const port = probe.address().port;
  await new Promise<void>((r) => probe.close(() => r()));

  const asked: PnpSubscription[] = [];
  const pnp = new PnpResponder({
    interfaceAddress: "127.0.0.1",
    port,
    log,
    t1Ms: 50,
    urlFor: (sub) => {
      asked.push(sub);
      return sub.mac === "000413a11fa7" ? "http://127.0.0.1:8080/p/tok123/" : "http://127.0.0.1:8080/";
    },
  });
  // The suite runs in a loopback-only namespace where multicast on lo works (make test); a
  // host without it fails here with the reason rather than skipping the test.
  await pnp.start();
  t.after(() => pnp.stop());

  const phone = dgram.createSocket("udp4");
  await new Promise<void>((r) => phone.bind(0, "127.0.0.1", () => r()));
  t.after(() => new Promise<void>((r) => phone.close(() => r())));
  phone.setMulticastInterface("127.0.0.1");
  phone.setMulticastLoopback(true);
  const phonePort = phone.address().port;
  const received: SipMessage[] = [];
  const waiters: Array<() => void> = [];
  phone.on("message", (buf, rinfo) => {
    const r = parseDatagram(buf);
    if (!r.ok) return;
    received.push(r.message);
    if (r.message.kind === "request" && r.message.method === "NOTIFY") {
      // The phone answers the NOTIFY so the responder stops retransmitting.
      const res = [
        "SIP/2.0 200 OK",
        ...r.message.headers.filter((h) => ["via", "from", "to", "call-id", "cseq"].includes(h.name)).map((h) => `${h.name}: ${h.value}`),
        "Content-Length: 0",
        "",
        "",
      ].join("\r\n");
      phone.send(res, rinfo.port, rinfo.address);
    }
    for (const w of waiters.splice(0)) w();
  });
  const until = async (pred: () => boolean, ms = 2000): Promise<void> => {
    const end = Date.now() + ms;
    while (!pred()) {
      if (Date.now() > end) throw new Error(`timed out; received ${received.length} messages`);
      await new Promise<void>((r) => {
        waiters.push(r);
        setTimeout(r, 50);
      });
    }
  };

  phone.send(subscribe({ port: phonePort }), port, PNP_MULTICAST_GROUP);
  await until(() => received.some((m) => m.kind === "request" && m.method === "NOTIFY"));
  const ok = received.find((m) => m.kind === "response");
  assert.ok(ok && ok.kind === "response");
  assert.equal(ok.status, 200);
  assert.equal(getHeader(ok, "expires"), "0");
  const notify = received.find((m): m is SipRequest => m.kind === "request" && m.method === "NOTIFY")!;
  assert.match(getHeader(notify, "event")!, /^ua-profile/);
  assert.equal(getHeader(notify, "subscription-state"), "terminated;reason=timeout");
  assert.equal(getHeader(notify, "content-type"), "application/url");
  assert.equal(notify.body.toString(), "http://127.0.0.1:8080/p/tok123/");
  assert.equal(notify.callId, "pnp-call-1@127.0.0.1", "NOTIFY is in the SUBSCRIBE's dialog");
  assert.equal(notify.to.tag, "ph1");
  assert.equal(notify.from.tag, ok.to.tag, "From tag = the 200's To tag");
  assert.equal(asked[0]?.mac, "000413a11fa7");
  assert.equal(asked[0]?.model, "snomD785");
  await until(() => pnp.stats.acknowledged === 1);

  // A retransmission of the same SUBSCRIBE: a 200 again, but no second NOTIFY.
  const before = received.length;
  phone.send(subscribe({ port: phonePort }), port, PNP_MULTICAST_GROUP);
  await until(() => received.length > before);
  await new Promise((r) => setTimeout(r, 150));
  assert.equal(received.filter((m) => m.kind === "request" && m.method === "NOTIFY").length, 1);

  // Other events are refused with 489.
  phone.send(subscribe({ port: phonePort, event: "presence", branch: "z9hG4bK-pnp-2", callId: "pnp-call-2" }), port, PNP_MULTICAST_GROUP);
  await until(() => received.some((m) => m.kind === "response" && m.status === 489));
});
