// Callbacks for impatient callers end to end: the real agent, a group whose only operator is
// busy (wait-for-operator with a callback offer after 1 s), registered operator phones
// (callsim.ts Phone), a caller entering as the trunk over raw UDP with its own RTP socket, and
// the test acting as the trunk the callback goes out through. The caller's RTP is decoded
// (G.711 A-law) and the offer and the confirmation prompts are found in it by correlation with
// audio/callback-offer.wav and callback-confirm.wav; the caller answers with an RFC 4733
// digit 1. Then the call ends (480), the callback waits at the caller's place, the operator
// frees, their phone gets the INVITE first (no SDP, From "Callback <number>"), answers with its
// offer, the trunk gets the INVITE to the caller's number carrying that offer, answers, the
// operator's ACK carries the trunk's answer (RFC 3725 flow I), and a BYE from the trunk side
// reaches the operator. A second test restarts the agent with a callback pending.
import assert from "node:assert/strict";
import dgram from "node:dgram";
import fs from "node:fs";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { after, afterEach, before, describe, test } from "node:test";
import { decodeG711 } from "../../agent/media/g711.ts";
import { buildRtp, parseRtp, type RtpPacket } from "../../agent/media/rtp.ts";
import { CallScene, TRUNK_CALLER_IP, parseSimMessage, startRoutingAgent, writeSiteFile, type SimMessage, SimRoster } from "./callsim.ts";
import { freePort, tempDir, until, type RunningAgent } from "./harness.ts";
import { makeBusy, mediaOf, shippedSound } from "./rtp-caller.ts";

const UNIT = 200;
const roster = new SimRoster();
const { users, devices } = roster;
const op1 = roster.add("op1", "3201", { callLimit: 1 });
const op2 = roster.add("op2", "3202", { callLimit: 1 });
const other = roster.add("x1", "3299");

let agent: RunningAgent;
let siteFile: string;
let trunkPort: number;
let mediaMin: number;
const scene = new CallScene(() => agent);

const offerPrompt = shippedSound("callback-offer.wav");
const confirmPrompt = shippedSound("callback-confirm.wav");

async function mediaRange(): Promise<number> {
  const free = (p: number): Promise<boolean> =>
    new Promise((resolve) => {
      const s = dgram.createSocket("udp4");
      s.once("error", () => resolve(false));
      s.bind(p, "127.0.0.1", () => s.close(() => resolve(true)));
    });
  for (let i = 0; i < 50; i++) {
    const min = 40000 + 2 * Math.floor(Math.random() * 10000);
    let ok = true;
    for (let p = min; p < min + 10 && ok; p++) ok = await free(p);
    if (ok) return min;
  }
  throw new Error("no free media range");
}

function start(dataDir?: string, port?: number): Promise<RunningAgent> {
  return startRoutingAgent(siteFile, { ringUnitMs: UNIT, ...(dataDir !== undefined ? { dataDir } : {}), ...(port !== undefined ? { port } : {}), env: { RINGEDGE_MEDIA_PORTS: `${mediaMin}-${mediaMin + 9}` } });
}

before(async () => {
  mediaMin = await mediaRange();
  trunkPort = await freePort();
  const callback = { enabled: true, offerAfterS: 1, retries: 1, retryDelayS: 1 };
  const wait = { kind: "wait-for-operator", maxWaitS: 60, then: { kind: "hangup" } };
  siteFile = writeSiteFile(tempDir("ringedge-site-"), {
    settings: { pickupCode: "*8", trunk: { host: "127.0.0.1", port: trunkPort, transport: "udp", allowedSources: [TRUNK_CALLER_IP] } },
    users,
    devices,
    groups: [
      { id: "cbq", number: "795", strategy: "sequential", members: ["op1"], ringCount: 10, noAnswer: wait, callback },
      { id: "cbr", number: "796", strategy: "sequential", members: ["op2"], ringCount: 10, noAnswer: wait, callback },
    ],
  } as never);
  agent = await start();
  await agent.waitForLog(/sound loaded sound=callback-confirm/, 60_000);
});

after(async () => {
  await scene.close();
});

/** What makeBusy() left up; afterEach frees it. */
const held: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const release of held.splice(0)) await release();
});


// --- a trunk caller with its own RTP socket ---------------------------------------------------------

class Caller {
  readonly responses: SimMessage[] = [];
  readonly rtp: Array<{ pkt: RtpPacket; from: string }> = [];
  readonly callId = `cb-${randomBytes(6).toString("hex")}@trunk`;
  private readonly fromTag = randomBytes(4).toString("hex");
  private readonly branch = `z9hG4bK${randomBytes(6).toString("hex")}`;
  private constructor(
    private readonly sip: dgram.Socket,
    readonly media: dgram.Socket,
    private readonly agentPort: number,
    readonly number: string,
  ) {
    sip.on("message", (b) => {
      const m = parseSimMessage(b.toString("utf8"));
      if (m?.status !== undefined) this.responses.push(m);
    });
    media.on("message", (b, r) => {
      const p = parseRtp(b);
      if (p.ok) this.rtp.push({ pkt: { ...p.value, payload: Uint8Array.from(p.value.payload) }, from: `${r.address}:${r.port}` });
    });
  }

  static async open(agentPort: number, number = "+4930555123"): Promise<Caller> {
    const bind = async (): Promise<dgram.Socket> => {
      const s = dgram.createSocket("udp4");
      await new Promise<void>((r) => s.bind(0, TRUNK_CALLER_IP, () => r()));
      return s;
    };
    return new Caller(await bind(), await bind(), agentPort, number);
  }

  /** ACK of the operator's 2xx (§13.2.2.4, new branch, to its Contact), then BYE on the same dialog. */
  ackAndBye(ok: SimMessage): void {
    const target = /<([^>]+)>/.exec(ok.header("contact") ?? "")?.[1] ?? this.uri;
    const routes = ok.all("record-route").flatMap((v) => v.split(/,(?=\s*<)/).map((r) => r.trim())).reverse();
    const to = ok.header("to") ?? "";
    const hop = (method: string, cseq: string): string[] => [
      `${method} ${target} SIP/2.0`,
      `Via: SIP/2.0/UDP ${TRUNK_CALLER_IP}:${this.sip.address().port};branch=z9hG4bK${randomBytes(6).toString("hex")};rport`,
      "Max-Forwards: 70",
      `From: <sip:${this.number}@${TRUNK_CALLER_IP}>;tag=${this.fromTag}`,
      `To: ${to}`,
      `Call-ID: ${this.callId}`,
      `CSeq: ${cseq}`,
      ...(routes.length > 0 ? [`Route: ${routes.join(", ")}`] : []),
      "Content-Length: 0",
      "",
      "",
    ];
    this.send(hop("ACK", "1 ACK"));
    this.send(hop("BYE", "2 BYE"));
  }

  private send(lines: string[]): void {
    this.sip.send(Buffer.from(lines.join("\r\n")), this.agentPort, "127.0.0.1");
  }

  private head(method: string, cseq: string, to: string, uri: string): string[] {
    return [`${method} ${uri} SIP/2.0`, `Via: SIP/2.0/UDP ${TRUNK_CALLER_IP}:${this.sip.address().port};branch=${this.branch};rport`, "Max-Forwards: 70", `From: <sip:${this.number}@${TRUNK_CALLER_IP}>;tag=${this.fromTag}`, `To: ${to}`, `Call-ID: ${this.callId}`, `CSeq: ${cseq}`];
  }

  invite(group: string): void {
    const uri = `sip:${group}@127.0.0.1:${this.agentPort}`;
    const sdp = ["v=0", `o=- 7 7 IN IP4 ${TRUNK_CALLER_IP}`, "s=-", `c=IN IP4 ${TRUNK_CALLER_IP}`, "t=0 0", `m=audio ${this.media.address().port} RTP/AVP 8 0 101`, "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-15", "a=sendrecv", ""].join("\r\n");
    this.send([...this.head("INVITE", "1 INVITE", `<${uri}>`, uri), `Contact: <sip:trunk@${TRUNK_CALLER_IP}:${this.sip.address().port}>`, "Content-Type: application/sdp", `Content-Length: ${Buffer.byteLength(sdp)}`, "", sdp]);
    this.uri = uri;
  }

  private uri = "";

  /** §17.1.1.3: the ACK of a non-2xx final response, same branch, the response's To. */
  ackFinal(final: SimMessage): void {
    this.send([...this.head("ACK", "1 ACK", final.header("to") ?? "", this.uri), "Content-Length: 0", "", ""]);
  }

  /** RFC 4733: digit `event` as three packets of one event (the last with E, sent three times, §2.5.1.4). */
  sendDigit(event: number, to: { address: string; port: number }): void {
    const ssrc = 0x1234abcd;
    const ts = 80_000;
    let seq = 7000;
    const block = (end: boolean, duration: number): Uint8Array => Uint8Array.from([event, (end ? 0x80 : 0) | 10, duration >> 8, duration & 0xff]);
    const packets = [buildRtp({ marker: true, payloadType: 101, sequence: seq++, timestamp: ts, ssrc }, block(false, 160)), buildRtp({ marker: false, payloadType: 101, sequence: seq++, timestamp: ts, ssrc }, block(false, 320))];
    for (let i = 0; i < 3; i++) packets.push(buildRtp({ marker: false, payloadType: 101, sequence: seq++, timestamp: ts, ssrc }, block(true, 480)));
    for (const p of packets) this.media.send(p, to.port, to.address);
  }

  final(): SimMessage | undefined {
    return this.responses.find((r) => r.status! >= 300 && /INVITE/.test(r.header("cseq") ?? ""));
  }

  from(source: string): RtpPacket[] {
    return this.rtp.filter((r) => r.from === source).map((r) => r.pkt);
  }

  close(): void {
    this.sip.close();
    this.media.close();
  }
}

/** The stream's audio laid out by RTP timestamp (samples, and which ones arrived). */
function decodeStream(pk: readonly RtpPacket[]): { x: Int16Array; got: Uint8Array } {
  const start = pk[0]!.timestamp;
  const span = ((pk.at(-1)!.timestamp - start) >>> 0) + 160;
  const x = new Int16Array(span);
  const got = new Uint8Array(span);
  for (const p of pk) {
    if (p.payloadType !== 8) continue;
    const at = (p.timestamp - start) >>> 0;
    x.set(decodeG711("PCMA", p.payload), at);
    got.fill(1, at, at + 160);
  }
  return { x, got };
}

/** Where in the stream (a frame boundary, from `from`) a prompt starts: the best normalised correlation of its first second. */
function findPrompt(s: { x: Int16Array; got: Uint8Array }, ref: Int16Array, from = 0): { at: number; r: number } {
  const n = 8000;
  let best = { at: -1, r: -1 };
  for (let at = from; at + n <= s.x.length; at += 160) {
    let xy = 0;
    let xx = 0;
    let yy = 0;
    for (let i = 0; i < n; i++) {
      if (!s.got[at + i]) continue;
      const a = s.x[at + i]!;
      const b = ref[i]!;
      xy += a * b;
      xx += a * a;
      yy += b * b;
    }
    const r = xy / Math.sqrt(xx * yy || 1);
    if (r > best.r) best = { at, r };
  }
  return best;
}

/** The test as the trunk: gets the agent's INVITEs, answers them, sends BYE. */
class Trunk {
  readonly requests: Array<{ msg: SimMessage; from: dgram.RemoteInfo }> = [];
  answering: "answer" | "busy" = "answer";
  private constructor(private readonly sock: dgram.Socket) {
    sock.on("message", (b, r) => {
      const m = parseSimMessage(b.toString("utf8"));
      if (m === undefined || m.method === undefined) return;
      this.requests.push({ msg: m, from: r });
      if (m.method === "INVITE" && this.requests.filter((x) => x.msg.method === "INVITE" && x.msg.header("call-id") === m.header("call-id")).length === 1) {
        if (this.answering === "busy") this.reply(m, r, 486, "Busy Here");
        else {
          this.reply(m, r, 180, "Ringing");
          this.reply(m, r, 200, "OK", this.sdp);
        }
      } else if (m.method === "BYE" || m.method === "CANCEL") this.reply(m, r, 200, "OK");
    });
  }

  readonly tag = randomBytes(4).toString("hex");
  readonly sdp = ["v=0", "o=- 9 9 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0", "m=audio 41000 RTP/AVP 0", "a=rtpmap:0 PCMU/8000", ""].join("\r\n");

  static async open(port: number): Promise<Trunk> {
    const s = dgram.createSocket("udp4");
    await new Promise<void>((r) => s.bind(port, "127.0.0.1", () => r()));
    return new Trunk(s);
  }

  private reply(req: SimMessage, r: dgram.RemoteInfo, status: number, reason: string, sdp?: string): void {
    const to = req.header("to") ?? "";
    const lines = [
      `SIP/2.0 ${status} ${reason}`,
      ...req.all("via").map((v) => `Via: ${v}`),
      `From: ${req.header("from")}`,
      `To: ${/;tag=/.test(to) ? to : `${to};tag=${this.tag}`}`,
      `Call-ID: ${req.header("call-id")}`,
      `CSeq: ${req.header("cseq")}`,
      ...(req.method === "INVITE" && status < 300 ? [`Contact: <sip:gw@127.0.0.1:${this.sock.address().port}>`] : []),
      ...(sdp !== undefined ? ["Content-Type: application/sdp"] : []),
      `Content-Length: ${Buffer.byteLength(sdp ?? "")}`,
      "",
      sdp ?? "",
    ];
    this.sock.send(Buffer.from(lines.join("\r\n")), r.port, r.address);
  }

  of(method: string): SimMessage[] {
    return this.requests.filter((x) => x.msg.method === method).map((x) => x.msg);
  }

  /** BYE inside the dialog of `invite` (we are its UAS): From is its To with our tag, To its From. */
  bye(invite: SimMessage, agentPort: number): void {
    const target = /<([^>]+)>/.exec(invite.header("contact") ?? "")?.[1] ?? `sip:127.0.0.1:${agentPort}`;
    const lines = [
      `BYE ${target} SIP/2.0`,
      `Via: SIP/2.0/UDP 127.0.0.1:${this.sock.address().port};branch=z9hG4bK${randomBytes(6).toString("hex")};rport`,
      "Max-Forwards: 70",
      `From: ${invite.header("to")};tag=${this.tag}`,
      `To: ${invite.header("from")}`,
      `Call-ID: ${invite.header("call-id")}`,
      "CSeq: 1 BYE",
      "Content-Length: 0",
      "",
      "",
    ];
    this.sock.send(Buffer.from(lines.join("\r\n")), agentPort, "127.0.0.1");
  }

  close(): void {
    this.sock.close();
  }
}

interface StatusCallback {
  id: string;
  groupId: string;
  number: string;
  place: string;
  attempts: number;
  calling: string | null;
}

async function pendingCallbacks(a: RunningAgent): Promise<StatusCallback[]> {
  const r = await a.cli(["status", "--json"]);
  assert.equal(r.code, 0, r.stderr);
  return (JSON.parse(r.stdout) as { callbacks: StatusCallback[] }).callbacks;
}

/** Queues a caller, hears the offer, presses 1, hears the confirmation, and sees the call end; returns what it heard. */
async function acceptCallback(group: string, number?: string): Promise<{ caller: Caller; offerR: number; confirmR: number }> {
  const caller = await Caller.open(agent.port, number);
  caller.invite(group);
  const progress = await until(() => caller.responses.find((r) => r.status === 183), 5000, 2).catch((e: Error) => {
    throw new Error(`${e.message}: responses ${caller.responses.map((r) => r.firstLine).join(" | ")}\n${agent.log().split("\n").slice(-15).join("\n")}`);
  });
  const media = mediaOf(progress);
  const source = `${media.address}:${media.port}`;
  // The offer comes after offerAfterS (1 s): wait until it has played for a second, then press 1.
  let offer = { at: -1, r: -1 };
  await until(() => {
    const pk = caller.from(source);
    if (pk.length < 120) return undefined;
    offer = findPrompt(decodeStream(pk), offerPrompt);
    return offer.r > 0.9 && decodeStream(pk).x.length >= offer.at + 8000 ? true : undefined;
  }, 15_000, 100);
  caller.sendDigit(1, media);
  // The confirmation follows the digit; then the call ends.
  const final = await until(() => caller.final(), 20_000, 20);
  assert.equal(final.status, 480);
  assert.match(final.firstLine, /Callback Requested/);
  caller.ackFinal(final);
  const heard = decodeStream(caller.from(source));
  const confirm = findPrompt(heard, confirmPrompt, offer.at + 160);
  return { caller, offerR: offer.r, confirmR: confirm.r };
}

describe("callback for impatient callers", () => {
  test("offer heard → digit 1 → confirmation → call ends → operator frees → operator rung first → caller rung through the trunk with the operator's offer → joined → BYE relayed", async () => {
    const trunk = await Trunk.open(trunkPort);
    const [p1, px] = await scene.register([op1, other]);
    const op = await makeBusy(p1!, px!, "3201", held);
    try {
      const { caller, offerR, confirmR } = await acceptCallback("795");
      caller.close();
      console.log(`# callback: offer prompt correlation ${offerR.toFixed(4)}, confirmation ${confirmR.toFixed(4)}`);
      assert.ok(offerR > 0.95, `offer prompt found in the caller's audio (r=${offerR.toFixed(4)})`);
      assert.ok(confirmR > 0.95, `confirmation found after it (r=${confirmR.toFixed(4)})`);
      // Pending at the caller's place while the operator is busy; nothing rang yet.
      const pending = await until(async () => {
        const l = await pendingCallbacks(agent);
        return l.length === 1 ? l : undefined;
      }, 5000, 100);
      assert.equal(pending[0]!.number, caller.number);
      assert.equal(pending[0]!.groupId, "cbq");
      assert.equal(pending[0]!.calling, null);
      assert.equal(trunk.of("INVITE").length, 0);
      assert.ok(fs.existsSync(path.join(agent.dataDir, "callbacks.json")), "persisted");
      const text = await agent.cli(["status"]);
      assert.match(text.stdout, /\ncallbacks 1 pending\n  \+4930555123 +group cbq  in queue since \d{4}-\d\d-\d\dT[\d:.]+Z  attempts 0\n/);

      // The operator frees: their phone gets the callback INVITE first, without SDP.
      const before = p1!.invites.length;
      assert.equal(await op.free(), 200);
      const inv = await until(() => p1!.invites[before], 5000, 10);
      assert.match(inv.msg.header("from") ?? "", new RegExp(`^"Callback \\${caller.number}"`), "the operator sees it is a callback to the number");
      assert.equal(inv.msg.body, "", "RFC 3725 flow I: no offer to the operator");
      assert.equal(trunk.of("INVITE").length, 0, "the caller is not rung before the operator answers");
      p1!.answerNow(inv.callId);
      // The trunk gets the INVITE to the caller's number carrying the operator's offer.
      const out = await until(() => trunk.of("INVITE")[0], 5000, 10);
      assert.match(out.uri ?? "", new RegExp(`^sip:\\${caller.number}@127\\.0\\.0\\.1:${trunkPort}`));
      assert.match(out.body, /m=audio 40000 RTP\/AVP 0/, "the operator's SDP goes to the caller");
      // The operator's ACK carries the caller's answer; the trunk's 2xx is ACKed.
      const ack = await until(() => p1!.acks.find((a) => a.callId === inv.callId), 5000, 10);
      assert.match(ack.msg.body, /m=audio 41000 RTP\/AVP 0/, "the caller's answer in the operator's ACK");
      await until(() => trunk.of("ACK").find((a) => a.header("call-id") === out.header("call-id")), 5000, 10);
      assert.deepEqual(await pendingCallbacks(agent), [], "connected: no longer pending");
      // BYE from the caller's side reaches the operator.
      trunk.bye(out, agent.port);
      await until(() => p1!.byes.find((b) => b.callId === inv.callId), 5000, 10);
      await until(() => trunk.requests.length > 0 && agent.log().includes("callback connected") || undefined, 2000, 20);
    } finally {
      trunk.close();
    }
  });

  test("ordering: a callback waits behind a caller who came earlier and goes before one who came later", async () => {
    const trunk = await Trunk.open(trunkPort);
    const [p1, px] = await scene.register([op1, other]);
    const op = await makeBusy(p1!, px!, "3201", held);
    const early = await Caller.open(agent.port, "+4930555001");
    let late: Caller | undefined;
    try {
      early.invite("795");
      await until(() => early.responses.find((r) => r.status === 183), 5000, 5);
      // A second caller accepts a callback; it keeps its place behind the early caller.
      const { caller: cb } = await acceptCallback("795", "+4930555002");
      cb.close();
      late = await Caller.open(agent.port, "+4930555003");
      late.invite("795");
      await until(() => late!.responses.find((r) => r.status === 183), 5000, 5);
      const seen = p1!.invites.length;
      // op1 frees: the early caller's own INVITE rings them, not the callback.
      assert.equal(await op.free(), 200);
      const first = await until(() => p1!.invites[seen], 5000, 10);
      assert.equal(first.callId, early.callId, "the earlier waiting caller first");
      p1!.answerNow(first.callId);
      const ok = await until(() => early.responses.find((r) => r.status === 200), 5000, 5);
      early.ackAndBye(ok);
      // op1 frees again: now the callback, ahead of the later caller.
      const second = await until(() => p1!.invites[seen + 1], 5000, 10);
      assert.match(second.msg.header("from") ?? "", /^"Callback \+4930555002"/, "the callback before the later caller");
      assert.equal(p1!.invitesOf(late.callId).length, 0);
      p1!.answerNow(second.callId);
      const out = await until(() => trunk.of("INVITE").find((i) => /\+4930555002/.test(i.uri ?? "")), 5000, 10);
      await until(() => p1!.acks.find((a) => a.callId === second.callId), 5000, 10);
      trunk.bye(out, agent.port);
      // The callback call over, op1 gets the later caller.
      const third = await until(() => p1!.invites[seen + 2], 5000, 10);
      assert.equal(third.callId, late.callId);
    } finally {
      early.close();
      late?.close();
      trunk.close();
    }
  });

  test("a pending callback survives a restart with its place, and is served after it", async () => {
    // op2 busy: the caller waits, accepts the callback, and it stays pending.
    const [p2, px] = await scene.register([op2, other]);
    await makeBusy(p2!, px!, "3202", held);
    const { caller } = await acceptCallback("796");
    caller.close();
    const before = await until(async () => {
      const l = (await pendingCallbacks(agent)).filter((c) => c.groupId === "cbr");
      return l.length === 1 ? l : undefined;
    }, 5000, 100);
    assert.equal(before[0]!.calling, null, "op2 is busy: nobody is called yet");
    const invitesBefore = p2!.invites.length;
    const { dataDir, port } = agent;
    assert.equal(await agent.stop(), 0);
    agent = await start(dataDir, port);
    // The restarted agent does not know op2's old call: op2 counts as free, so the callback
    // (still at the caller's place, same id, number and attempts) is served at once: op2's
    // phone (its binding restored from the store) is rung with the callback's display name.
    const after = (await pendingCallbacks(agent)).filter((c) => c.groupId === "cbr");
    assert.deepEqual(after.map((c) => [c.id, c.number, c.place, c.attempts]), before.map((c) => [c.id, c.number, c.place, c.attempts]));
    const inv = await until(() => p2!.invites[invitesBefore], 10_000, 20);
    assert.match(inv.msg.header("from") ?? "", /^"Callback \+4930555123"/);
    // Unanswered (ringCount 10 × 200 ms): cancelled, and the callback keeps waiting at its place.
    await until(() => p2!.cancels.find((c) => c.callId === inv.callId), 10_000, 20);
    const still = await until(async () => {
      const l = (await pendingCallbacks(agent)).filter((c) => c.groupId === "cbr" && c.calling === null);
      return l.length === 1 ? l : undefined;
    }, 5000, 100);
    assert.equal(still[0]!.attempts, 0, "the operator not answering is not an attempt to reach the caller");
  });
});
