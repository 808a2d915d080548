// BLF end to end (RFC 4235 dialog package over RFC 6665): the real agent on a site file, phones
// registered with digest (callsim.ts Phone), a BLF watcher subscribing from its phone's socket
// (subscriber.ts), SIPp callers entering as the trunk. Covers the lamp's life (no dialog →
// early/recipient → confirmed → off), refresh and unsubscribe, expiry, bad requests (489, 400,
// 423, 404, 415, 481), an unknown subscriber challenged (407) and refused (403), the
// per-device cap and rate limit, and picking a ringing call up from the NOTIFY's data with an
// INVITE carrying Replaces (RFC 3891).
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { computeAuthorization } from "../../agent/sip/digest.ts";
import { CallScene, DEVICE_PASSWORD, parseSimMessage, RING, TRUNK_CALLER_IP, answerAfter, assertSippOk, callIdOf, loggedCall, sippCall, startRoutingAgent, writeSiteFile, type SimDevice, SimRoster } from "./callsim.ts";
import { freePort, tempDir, until, type RunningAgent } from "./harness.ts";
import { SipClient } from "./sipclient.ts";
import { Subscriber, parseDialogInfo, type HeldSubscription } from "./subscriber.ts";

const roster = new SimRoster();
const { users, devices } = roster;
const mon = roster.add("mon", "5001");
const watch = roster.add("watch", "5002");
const mon2 = roster.add("mon2", "5003");
const picker = roster.add("picker", "5004");
const bad = roster.add("bad", "5005");
const capped = roster.add("capped", "5006");
const rated = roster.add("rated", "5007");
const outgoing = roster.add("outgoing", "5008");
const callee = roster.add("callee", "5009");

const MAX_PER_DEVICE = 3;
const RATE_MAX = 10;

let agent: RunningAgent;
let dataDir: string;
const scene = new CallScene(() => agent);

before(async () => {
  dataDir = tempDir("ringedge-blf-");
  const file = writeSiteFile(tempDir("ringedge-site-"), {
    settings: { pickupCode: "*8", trunk: { host: "127.0.0.1", port: await freePort(), transport: "udp", allowedSources: [TRUNK_CALLER_IP] } },
    users,
    devices,
    groups: [],
  });
  agent = await startRoutingAgent(file, {
    ringUnitMs: 200,
    dataDir,
    env: {
      RINGEDGE_SUBSCRIBE_MIN_EXPIRES: "1",
      RINGEDGE_SUBSCRIBE_MAX_PER_DEVICE: String(MAX_PER_DEVICE),
      RINGEDGE_SUBSCRIBE_RATE_MAX: String(RATE_MAX),
      RINGEDGE_SUBSCRIBE_RATE_WINDOW_S: "600",
    },
  });
});

after(() => scene.close());

const token = (): string => randomBytes(6).toString("hex");
const infoOf = (n: { msg: { body: string } }) => parseDialogInfo(n.msg.body);

async function watcher(device: SimDevice): Promise<Subscriber> {
  const [p] = await scene.register([device]);
  return new Subscriber(p!);
}

describe("BLF: the dialog event package through the real agent", () => {
  test("subscribe → NOTIFY with no dialog → trunk call rings the user (early, recipient) → answered (confirmed) → hung up (off); refresh and unsubscribe", async () => {
    const [mp] = await scene.register([mon], answerAfter(700));
    const w = await watcher(watch);
    const { res, sub } = await w.subscribe("5001", { expires: 600 });
    assert.equal(res.status, 200);
    assert.equal(res.header("expires"), "600");
    assert.ok(sub.toTag, "the 200 carries the notifier's tag");
    const first = await w.waitNotify(sub, () => true);
    assert.match(first.state, /^active;expires=(600|599)$/);
    assert.equal(first.msg.header("event"), "dialog");
    assert.equal(first.msg.header("content-type"), "application/dialog-info+xml");
    const info0 = infoOf(first);
    assert.equal(info0.version, 0);
    assert.equal(info0.state, "full");
    assert.match(info0.entity, /^sip:5001@127\.0\.0\.1:\d+$/);
    assert.deepEqual(info0.dialogs, []);
    // The NOTIFY is inside the subscription's dialog (RFC 6665 §4.1.2): its From tag is the 200's To tag.
    assert.match(first.msg.header("from") ?? "", new RegExp(`tag=${sub.toTag}`));
    assert.match(first.msg.header("to") ?? "", new RegExp(`tag=${sub.fromTag}`));

    const caller = await sippCall(agent.port, "route-caller.xml", "5001", { pauseMs: 500 });
    scene.peers.push(caller);
    const id = callIdOf(caller);
    const early = await w.waitNotify(sub, (n) => infoOf(n).dialogs.some((d) => d.state === "early"));
    const d = infoOf(early).dialogs.find((x) => x.state === "early")!;
    assert.equal(d.direction, "recipient");
    assert.equal(d.callId, id);
    assert.equal(d.remoteTag, `${caller.run.proc.pid}SIPpTag001`);
    assert.match(d.remoteIdentity ?? "", /^sip:\+4930111222@/);
    const confirmed = await w.waitNotify(sub, (n) => infoOf(n).dialogs.some((x) => x.callId === id && x.state === "confirmed"));
    assertSippOk("caller answered by the monitored phone", await caller.run);
    assert.equal(mp!.invitesOf(id).length, 1);
    const off = await w.waitNotify(sub, (n) => n.at >= confirmed.at && n !== confirmed && infoOf(n).dialogs.every((x) => x.state === "terminated"));
    assert.ok(infoOf(off).dialogs.every((x) => x.callId === id));
    // Versions count this subscription's NOTIFYs one by one (RFC 4235 §4.1).
    assert.deepEqual(w.notifiesOf(sub).map((n) => infoOf(n).version), w.notifiesOf(sub).map((_, i) => i));

    // Refresh in the dialog: 200 and a NOTIFY with the current state (RFC 6665 §4.2.1.2).
    const before = w.notifiesOf(sub).length;
    const refreshed = await w.refresh(sub, 300);
    assert.equal(refreshed.status, 200);
    assert.equal(refreshed.header("expires"), "300");
    const again = await w.waitNotify(sub, (n) => w.notifiesOf(sub).indexOf(n) >= before);
    assert.match(again.state, /^active;expires=(300|299)$/);
    assert.deepEqual(infoOf(again).dialogs, []);

    // Unsubscribe: 200, a final NOTIFY terminated, then the dialog is gone (481).
    assert.equal((await w.refresh(sub, 0)).status, 200);
    await w.waitNotify(sub, (n) => /^terminated/.test(n.state));
    assert.equal((await w.refresh(sub, 300)).status, 481);
  });

  test("the monitored user's own call: an initiator dialog without the dialled number (steady lamp), confirmed when answered, off after", async () => {
    const [op, cp] = await scene.register([outgoing, callee], answerAfter(300));
    const w = await watcher(watch);
    const { res, sub } = await w.subscribe("5008");
    assert.equal(res.status, 200);
    await w.waitNotify(sub, () => true);
    assert.equal(await op!.dial("5009"), 200);
    const id = op!.dialled[0]!;
    const up = await w.waitNotify(sub, (n) => infoOf(n).dialogs.some((d) => d.callId === id && d.state === "confirmed"));
    const firstWithCall = w.notifiesOf(sub).find((n) => infoOf(n).dialogs.length > 0)!;
    const d = infoOf(firstWithCall).dialogs[0]!;
    assert.equal(d.direction, "initiator");
    assert.ok(d.state === "trying" || d.state === "confirmed", d.state);
    assert.equal(d.remoteIdentity, undefined);
    assert.equal(await cp!.hangup(id), 200);
    await w.waitNotify(sub, (n) => n.at >= up.at && n !== up && infoOf(n).dialogs.every((x) => x.state === "terminated"));
  });

  test("pickup from the BLF key: an INVITE with Replaces built from the early NOTIFY takes the ringing call; a Replaces naming nothing gets 481", async () => {
    const [mp] = await scene.register([mon2], RING);
    const w = await watcher(picker);
    const { res, sub } = await w.subscribe("5003");
    assert.equal(res.status, 200);
    await w.waitNotify(sub, () => true);
    const caller = await sippCall(agent.port, "route-caller.xml", "5003", { pauseMs: 300 });
    scene.peers.push(caller);
    const id = callIdOf(caller);
    await mp!.waitInvites(1);
    // Wait for the ringing phone's tag too (local-tag, from its 180).
    const early = await w.waitNotify(sub, (n) => infoOf(n).dialogs.some((d) => d.state === "early" && d.localTag !== undefined));
    const d = infoOf(early).dialogs.find((x) => x.state === "early")!;

    const invite = (replaces: string): string => {
      const branch = `z9hG4bK${token()}`;
      return [
        `INVITE sip:5003@127.0.0.1:${agent.port} SIP/2.0`,
        `Via: SIP/2.0/UDP 127.0.0.1:${w.phone.port};branch=${branch};rport`,
        "Max-Forwards: 70",
        `From: <sip:picker@127.0.0.1>;tag=${token()}`,
        `To: <sip:5003@127.0.0.1:${agent.port}>`,
        `Call-ID: pick-${token()}@sim`,
        "CSeq: 1 INVITE",
        `Contact: <sip:picker@127.0.0.1:${w.phone.port}>`,
        `Replaces: ${replaces}`,
        "Content-Length: 0",
        "",
        "",
      ].join("\r\n");
    };
    const ack = (inv: string, res: { header(n: string): string | undefined }): string =>
      inv.replace(/^INVITE/, "ACK").replace("CSeq: 1 INVITE", "CSeq: 1 ACK").replace(/^To: .*$/m, `To: ${res.header("to")}`).replace(/^Contact: .*\r\n/m, "").replace(/^Replaces: .*\r\n/m, "");

    const nothing = invite(`${id};to-tag=${token()};from-tag=${token()}`);
    const r481 = await w.request(nothing);
    assert.equal(r481.status, 481);
    w.phone.socket.send(Buffer.from(ack(nothing, r481)), agent.port, "127.0.0.1");

    // RFC 3891 §3 as the reference's phones build it: to-tag = remote-tag, from-tag = local-tag.
    const pick = invite(`${d.callId};to-tag=${d.remoteTag};from-tag=${d.localTag}`);
    const r = await w.request(pick);
    assert.ok(r.status! >= 300, `the Replaces INVITE itself ends at once (${r.status}): the call arrives as a new one`);
    w.phone.socket.send(Buffer.from(ack(pick, r)), agent.port, "127.0.0.1");
    assertSippOk("caller connected to the picker", await caller.run);
    const inv = w.phone.invitesOf(id)[0];
    assert.ok(inv, "the picker's phone got the call");
    assert.match(inv.msg.header("call-info") ?? "", /answer-after=0/);
    assert.ok(w.phone.byes.some((b) => b.callId === id), "the caller's BYE reached the picker");
    await mp!.waitCancel(id);
    assert.equal((await loggedCall(dataDir, id)).answeredBy, "picker");
    // The picker's own lamp view: the monitored user's dialog ended.
    await w.waitNotify(sub, (n) => n.at >= early.at && infoOf(n).dialogs.every((x) => x.state === "terminated"));
  });

  test("bad SUBSCRIBEs get a clear error and create nothing", async () => {
    const w = await watcher(bad);
    const cases: Array<[string, Parameters<Subscriber["subscribe"]>, number, RegExp?]> = [
      ["unknown event package", ["5001", { event: "foo" }], 489],
      ["no Event header", ["5001", { event: null }], 400, /Event/],
      ["malformed Event", ["5001", { event: "dia log" }], 400],
      ["malformed Expires", ["5001", { expires: "soon" }], 400, /Expires/],
      ["negative Expires", ["5001", { expires: "-5" }], 400],
      ["unknown target", ["5999", {}], 404],
      ["garbage body", ["5001", { extra: ["Content-Type: application/sdp"], body: "\u0000\u0001garbage" }], 415],
      ["Accept without dialog-info", ["5001", { extra: ["Accept: text/plain"] }], 406],
    ];
    for (const [what, args, status, reason] of cases) {
      const { res, sub } = await w.subscribe(...args);
      assert.equal(res.status, status, `${what}: ${res.firstLine}`);
      if (reason) assert.match(res.firstLine, reason, what);
      if (status === 489) assert.equal(res.header("allow-events"), "dialog, message-summary", "489 lists Allow-Events (RFC 6665 §8.2.1)");
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(w.notifiesOf(sub).length, 0, `${what}: no NOTIFY`);
    }
    const brief = await w.subscribe("5001", { expires: 0.5 as unknown as number });
    assert.equal(brief.res.status, 400, "a fractional Expires is malformed");
    // OPTIONS lists the packages (RFC 6665 §8.2.2).
    const c = await SipClient.open(agent.port);
    try {
      const r = await c.request(["OPTIONS sip:127.0.0.1 SIP/2.0", `Via: SIP/2.0/UDP ${c.localAddress}:${c.localPort};branch=z9hG4bK${token()};rport`, "Max-Forwards: 70", `From: <sip:x@${c.localAddress}>;tag=${token()}`, "To: <sip:127.0.0.1>", `Call-ID: ${token()}`, "CSeq: 1 OPTIONS", "Content-Length: 0", "", ""].join("\r\n"));
      assert.equal(r.header("allow-events"), "dialog, message-summary");
      assert.match(r.header("allow") ?? "", /SUBSCRIBE/);
    } finally {
      c.close();
    }
  });

  test("a subscriber that is not a registered flow is challenged (407), refused with a wrong password (403), accepted with the device's credentials; its NOTIFY answered 481 ends the subscription", async () => {
    const c = await SipClient.open(agent.port);
    try {
      const uri = `sip:5001@127.0.0.1:${agent.port}`;
      const callId = `${token()}@e2e`;
      const fromTag = token();
      const build = (cseq: number, auth?: string): string =>
        [
          `SUBSCRIBE ${uri} SIP/2.0`,
          `Via: SIP/2.0/UDP ${c.localAddress}:${c.localPort};branch=z9hG4bK${token()};rport`,
          "Max-Forwards: 70",
          `From: <sip:watch@127.0.0.1>;tag=${fromTag}`,
          `To: <${uri}>`,
          `Call-ID: ${callId}`,
          `CSeq: ${cseq} SUBSCRIBE`,
          `Contact: <sip:watch@${c.localAddress}:${c.localPort}>`,
          "Event: dialog",
          "Expires: 60",
          ...(auth !== undefined ? [`Proxy-Authorization: ${auth}`] : []),
          "Content-Length: 0",
          "",
          "",
        ].join("\r\n");
      const challenge = await c.request(build(1));
      assert.equal(challenge.status, 407);
      const offer = challenge.all("Proxy-Authenticate").find((v) => /MD5/.test(v)) ?? challenge.header("Proxy-Authenticate")!;
      const wrong = computeAuthorization(offer, { method: "SUBSCRIBE", uri, username: "watch", password: "not-the-password" });
      assert.equal(typeof wrong, "string");
      assert.equal((await c.request(build(2, wrong as string))).status, 403);
      assert.equal(c.other.filter((t) => t.startsWith("NOTIFY")).length, 0, "no NOTIFY for a refused subscriber");
      const challenge2 = await c.request(build(3));
      const offer2 = challenge2.all("Proxy-Authenticate").find((v) => /MD5/.test(v)) ?? challenge2.header("Proxy-Authenticate")!;
      const right = computeAuthorization(offer2, { method: "SUBSCRIBE", uri, username: "watch", password: DEVICE_PASSWORD });
      const ok = await c.request(build(4, right as string));
      assert.equal(ok.status, 200);
      const notifyText = await until(() => c.other.find((t) => t.startsWith("NOTIFY")), 3000, 10);
      // The subscriber answers the NOTIFY 481 (it lost the subscription): that ends it at the
      // notifier too (RFC 6665 §4.2.2), so a refresh in that dialog finds nothing.
      const n = parseSimMessage(notifyText)!;
      c.send([
        "SIP/2.0 481 Call/Transaction Does Not Exist",
        ...n.all("via").map((v) => `Via: ${v}`),
        `From: ${n.header("from")}`,
        `To: ${n.header("to")}`,
        `Call-ID: ${n.header("call-id")}`,
        `CSeq: ${n.header("cseq")}`,
        "Content-Length: 0",
        "",
        "",
      ].join("\r\n"));
      const ourTag = /tag=([^;>\s]+)/.exec(ok.header("To") ?? "")?.[1];
      const refresh = build(5).replace(`To: <${uri}>`, `To: <${uri}>;tag=${ourTag}`);
      await until(async () => (await c.request(refresh.replace(/branch=[^;]+/, `branch=z9hG4bK${token()}`))).status === 481, 3000, 50);
    } finally {
      c.close();
    }
  });

  test("expiry ends the subscription with a NOTIFY terminated;reason=timeout", async () => {
    const w = await watcher(capped);
    const { res, sub } = await w.subscribe("5001", { expires: 1 });
    assert.equal(res.status, 200);
    const first = await w.waitNotify(sub, () => true);
    const last = await w.waitNotify(sub, (n) => /^terminated/.test(n.state), 4000);
    assert.match(last.state, /reason=timeout/);
    assert.ok(last.at - first.at >= 800, `terminated after ${last.at - first.at} ms`);
    assert.equal((await w.refresh(sub, 60)).status, 481, "an expired subscription is gone");
  });

  test("per-device cap and SUBSCRIBE rate limit: 503 with a reason, nothing created", async () => {
    const w = await watcher(capped);
    const subs: HeldSubscription[] = [];
    for (let i = 0; i < MAX_PER_DEVICE; i++) {
      const { res, sub } = await w.subscribe("5002");
      assert.equal(res.status, 200);
      subs.push(sub);
    }
    const over = await w.subscribe("5002");
    assert.equal(over.res.status, 503);
    assert.match(over.res.firstLine, /too many subscriptions/);
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(w.notifiesOf(over.sub).length, 0);
    // One ended makes room again.
    assert.equal((await w.refresh(subs[0]!, 0)).status, 200);
    assert.equal((await w.subscribe("5002")).res.status, 200);

    const r = await watcher(rated);
    const statuses: number[] = [];
    for (let i = 0; i < RATE_MAX + 2; i++) statuses.push((await r.subscribe("5001", { event: i % 2 === 0 ? "dialog" : "foo", expires: 0 })).res.status!);
    assert.deepEqual(statuses.slice(RATE_MAX), [503, 503]);
    assert.ok(statuses.slice(0, RATE_MAX).every((s) => s !== 503));
  });
});
