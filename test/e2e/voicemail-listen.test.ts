// Listening to voicemail end to end (issue 13): the real agent on a site file. A trunk caller
// (raw UDP, rtp-caller.ts, with an RTP socket of its own written here) gets no answer, hears the
// greeting, leaves a known tone; the owner's desk phone (callsim.ts Phone, registered with
// digest) is subscribed to message-summary and gets a NOTIFY with Voice-Message 1/0; it dials
// the voicemail code (*97) with an SDP offer, proves its password (407, UDP), is answered by
// the appliance and hears "You have one new message" and then the message — the test decodes
// the RTP and correlates it with what was recorded —, presses 3 (RFC 4733) to delete it, hears
// the appliance hang up, and the lamp goes off (NOTIFY 0/0). Another user's phone dialling the
// code with the owner's extension is refused 403 before anything is answered, and dialling the
// code alone hears only its own (empty) mailboxes. A group mailbox lights every member's lamp; a
// member saves its message with a digit sent as SIP INFO and both lamps follow.
// A trunk number's menu whose key is a user's voicemail takes the caller to that mailbox.
import assert from "node:assert/strict";
import dgram from "node:dgram";
import fs from "node:fs";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { decodeG711, encodeG711 } from "../../agent/media/g711.ts";
import { buildRtp, parseRtp, type RtpPacket } from "../../agent/media/rtp.ts";
import { decodeWav } from "../../agent/media/wav.ts";
import { CallScene, TRUNK_CALLER_IP, simUser, startRoutingAgent, writeSiteFile, type Phone } from "./callsim.ts";
import { ROOT, freePort, tempDir, until, type RunningAgent } from "./harness.ts";
import { Caller, correlationAtStart, decodeStream, writeSweepWav } from "./rtp-caller.ts";
import { Subscriber, type HeldSubscription, type SeenNotify } from "./subscriber.ts";

const ACCEPT = "Accept: application/simple-message-summary";
const box = { enabled: true, maxMessageS: 30, silenceS: 0 };
const anna = simUser("anna", "3201", ["physical"], { voicemail: box });
const ben = simUser("ben", "3202", ["physical"]);
let agent: RunningAgent;
const scene = new CallScene(() => agent);
const dataDir = tempDir("ringedge-vm-listen-");

function sound(file: string): Int16Array {
  const r = decodeWav(fs.readFileSync(path.join(ROOT, "audio", file)));
  if (!r.ok) throw new Error(r.reason);
  return r.samples;
}

before(async () => {
  const media = 40000 + 2 * Math.floor(Math.random() * 10000);
  const file = writeSiteFile(tempDir("ringedge-site-"), {
    settings: { pickupCode: "*8", trunk: { host: "127.0.0.1", port: await freePort(), transport: "udp", allowedSources: [TRUNK_CALLER_IP] } },
    users: [anna.user, ben.user],
    devices: [...anna.devices, ...ben.devices],
    groups: [
      // Nobody answers: after one short ring the call goes to anna's own mailbox.
      { id: "desk", number: "700", strategy: "sequential", members: ["anna"], ringCount: 1, noAnswer: { kind: "voicemail", mailbox: "user/anna" } },
      { id: "front", number: "701", strategy: "sequential", members: ["anna", "ben"], ringCount: 1, noAnswer: { kind: "voicemail" }, voicemail: box },
    ],
  });
  // A trunk number with a short greeting and a menu whose 9 is anna's mailbox (docs/menus.md).
  const doc = JSON.parse(fs.readFileSync(file, "utf8")) as Record<string, unknown>;
  const promptDir = tempDir("ringedge-vm-listen-prompts-");
  writeSweepWav(path.join(promptDir, "greet.wav"), 300, 1200, 0.3);
  writeSweepWav(path.join(promptDir, "menu.wav"), 1500, 500, 3);
  doc.inbound = [{ number: "4900", greeting: { prompt: path.join(promptDir, "greet.wav"), then: { kind: "menu", menuId: "vm" } } }];
  doc.menus = [{ id: "vm", prompt: path.join(promptDir, "menu.wav"), options: [{ digit: "9", target: { kind: "voicemail", owner: { kind: "user", id: "anna" } } }], timeoutS: 5, repeats: 1, afterLast: { kind: "hangup" } }];
  fs.writeFileSync(file, JSON.stringify(doc));
  agent = await startRoutingAgent(file, { ringUnitMs: 200, dataDir, env: { RINGEDGE_MEDIA_PORTS: `${media}-${media + 39}`, RINGEDGE_QUEUE_MUSIC: "false", RINGEDGE_SUBSCRIBE_MIN_EXPIRES: "1" } });
});

after(() => scene.close());

/** An RTP end of our own: receives what the appliance sends, sends audio and RFC 4733 digits. */
class RtpEnd {
  readonly packets: Array<{ at: number; pkt: RtpPacket }> = [];
  private seq = randomBytes(2).readUInt16BE(0);
  private ts = randomBytes(4).readUInt32BE(0);
  to: { address: string; port: number } | undefined;
  private constructor(readonly sock: dgram.Socket) {
    sock.on("message", (b) => {
      const p = parseRtp(b);
      if (p.ok) this.packets.push({ at: performance.now(), pkt: { ...p.value, payload: Uint8Array.from(p.value.payload) } });
    });
  }
  static async open(address: string): Promise<RtpEnd> {
    const s = dgram.createSocket("udp4");
    await new Promise<void>((r) => s.bind(0, address, () => r()));
    return new RtpEnd(s);
  }
  get port(): number {
    return this.sock.address().port;
  }
  offer(address: string): string {
    return ["v=0", `o=- 5 5 IN IP4 ${address}`, "s=-", `c=IN IP4 ${address}`, "t=0 0", `m=audio ${this.port} RTP/AVP 0 101`, "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-15", "a=sendrecv", ""].join("\r\n");
  }
  /** The appliance's address from an SDP answer. */
  answer(sdp: string): void {
    const c = /^c=IN IP4 (\S+)/m.exec(sdp);
    const m = /^m=audio (\d+) RTP\/AVP/m.exec(sdp);
    assert.ok(c && m, `SDP answer: ${sdp}`);
    this.to = { address: c[1]!, port: Number(m[1]) };
  }
  private send(pkt: Uint8Array): Promise<void> {
    return new Promise((r) => this.sock.send(pkt, this.to!.port, this.to!.address, () => r()));
  }
  async sendAudio(pcm: Int16Array): Promise<void> {
    for (let off = 0; off + 160 <= pcm.length; off += 160) {
      await this.send(buildRtp({ marker: off === 0, payloadType: 0, sequence: this.seq++ & 0xffff, timestamp: this.ts >>> 0, ssrc: 0x5eed }, encodeG711("PCMU", pcm.subarray(off, off + 160))));
      this.ts = (this.ts + 160) >>> 0;
      await new Promise((r) => setTimeout(r, 4));
    }
  }
  /** An RFC 4733 digit: start, then three end packets, one timestamp. */
  async sendDigit(digit: "#" | "3" | "9"): Promise<void> {
    const event = digit === "#" ? 11 : Number(digit);
    for (let i = 0; i < 4; i++) await this.send(buildRtp({ marker: i === 0, payloadType: 101, sequence: this.seq++ & 0xffff, timestamp: this.ts, ssrc: 0x5eed }, Uint8Array.from([event, (i > 0 ? 0x80 : 0) | 10, 0x03, 0x20])));
    this.ts = (this.ts + 800) >>> 0;
  }
  /** Samples received (PCMU) laid out by timestamp. */
  heard(): { samples: Int16Array; got: Uint8Array } {
    if (!this.packets.some((p) => p.pkt.payloadType === 0)) return { samples: new Int16Array(0), got: new Uint8Array(0) };
    return decodeStream(this.packets.map((p) => p.pkt).filter((p) => p.payloadType === 0), "PCMU");
  }
  async quiet(ms: number, timeoutMs = 20_000): Promise<void> {
    await until(() => (this.packets.length > 0 && performance.now() - this.packets.at(-1)!.at > ms) || undefined, timeoutMs, 20);
  }
  close(): void {
    this.sock.close();
  }
}

/** A known tone: 440 Hz + 660 Hz with a rising envelope, so every frame differs. */
function tone(samples: number): Int16Array {
  return Int16Array.from({ length: samples }, (_, i) => Math.round((3000 + i / 4) * (Math.sin((2 * Math.PI * 440 * i) / 8000) + 0.5 * Math.sin((2 * Math.PI * 660 * i) / 8000))));
}

/** Where in `x` (received samples) `ref` is found best: coarse by frames, then sample by sample. */
function find(x: { samples: Int16Array; got: Uint8Array }, ref: Int16Array): { lag: number; r: number } {
  const at = (lag: number): number => {
    let xy = 0;
    let xx = 0;
    let yy = 0;
    for (let i = 0; i < ref.length && lag + i < x.samples.length; i++) {
      if (!x.got[lag + i]) continue;
      const a = x.samples[lag + i]!;
      xy += a * ref[i]!;
      xx += a * a;
      yy += ref[i]! * ref[i]!;
    }
    return xy / Math.sqrt(xx * yy || 1);
  };
  let best = { lag: 0, r: -1 };
  for (let lag = 0; lag + 160 < x.samples.length; lag += 160) {
    const r = at(lag);
    if (r > best.r) best = { lag, r };
  }
  const coarse = best.lag;
  for (let lag = Math.max(0, coarse - 160); lag < coarse + 160; lag++) {
    const r = at(lag);
    if (r > best.r) best = { lag, r };
  }
  return best;
}

/** The summary lines of a message-summary NOTIFY body (RFC 3842 §5). */
function summary(n: SeenNotify): Record<string, string> {
  return Object.fromEntries(n.msg.body.trimEnd().split("\r\n").map((l) => [l.slice(0, l.indexOf(":")), l.slice(l.indexOf(":") + 1).trim()]));
}

async function lamp(w: Subscriber, sub: HeldSubscription, voice: string): Promise<SeenNotify> {
  return w.waitNotify(sub, (n) => summary(n)["Voice-Message"]?.startsWith(voice) === true, 15_000);
}

interface Listed {
  id: string;
  mailbox: string;
  status: string;
  file: string;
}
async function listed(): Promise<Listed[]> {
  const r = await agent.cli(["voicemail", "list", "--json"]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as Listed[];
}

/** A trunk caller reaches `number`, nobody answers, it hears the greeting, skips it (#) and leaves `pcm`. */
async function leaveMessage(number: string, pcm: Int16Array): Promise<{ greetingHeard: number }> {
  const c = await Caller.open(agent.port);
  const rtp = await RtpEnd.open(TRUNK_CALLER_IP);
  try {
    c.invite(number, rtp.offer(TRUNK_CALLER_IP));
    const ok = await until(() => c.first(200), 20_000, 5);
    c.ack(ok.msg);
    rtp.answer(ok.msg.body);
    // About a second of the greeting, then # skips it; the tone follows, then the recording.
    await until(() => rtp.packets.length >= 50 || undefined, 10_000, 10);
    const greetingHeard = correlationAtStart(rtp.heard().samples, rtp.heard().got, sound("vm-greeting.wav"));
    await rtp.sendDigit("#");
    await rtp.quiet(300);
    await new Promise((r) => setTimeout(r, 200));
    await rtp.sendAudio(pcm);
    await rtp.sendDigit("#");
    return { greetingHeard };
  } finally {
    setTimeout(() => {
      c.close();
      rtp.close();
    }, 500);
  }
}

describe("listening to voicemail from the owner's phone", () => {
  test("no answer → greeting → message → lamp on (1/0) → *97 from the owner's phone → hears it → 3 deletes it → BYE → lamp off (0/0)", async () => {
    const [annaPhone, benPhone] = await scene.register([anna.devices[0]!, ben.devices[0]!]);
    const aw = new Subscriber(annaPhone!);
    const { res, sub } = await aw.subscribe("3201", { event: "message-summary", extra: [ACCEPT] });
    assert.equal(res.status, 200);
    await lamp(aw, sub, "0/0");

    const sent = tone(2 * 8000);
    const { greetingHeard } = await leaveMessage("700", sent);
    assert.ok(greetingHeard > 0.9, `the caller heard vm-greeting.wav (correlation ${greetingHeard.toFixed(3)})`);
    const on = await lamp(aw, sub, "1/0");
    assert.equal(summary(on)["Messages-Waiting"], "yes");
    const [m] = await listed();
    assert.equal(m?.mailbox, "user/anna");
    assert.equal(m?.status, "new");

    // Ben may not listen to anna's mailbox: refused before anything is answered.
    const benRtp = await RtpEnd.open("127.0.0.1");
    const refused = await benPhone!.dial("*973201", { sdp: benRtp.offer("127.0.0.1") });
    benRtp.close();
    assert.equal(refused, 403);
    assert.equal(benPhone!.lastFinal?.firstLine, "SIP/2.0 403 Not your mailbox");

    // Anna dials the code from her own phone (a UDP flow: she proves her password first).
    const rtp = await RtpEnd.open("127.0.0.1");
    try {
      const status = await annaPhone!.dial("*97", { sdp: rtp.offer("127.0.0.1") });
      assert.equal(status, 200, annaPhone!.lastFinal?.firstLine);
      assert.equal(annaPhone!.challenges, 1, "challenged once (407) and answered");
      rtp.answer(annaPhone!.lastFinal!.body);
      const callId = annaPhone!.dialled.at(-1)!;
      // "You have" "one" "new message", then the message itself.
      const intro = [...sound("vm-you-have.wav"), ...sound("numbers/1.wav"), ...sound("vm-new-message.wav")];
      const recorded = decodeG711("PCMU", encodeG711("PCMU", sent));
      await until(() => rtp.heard().samples.length >= intro.length + recorded.length + 8000 || undefined, 30_000, 50);
      const heard = rtp.heard();
      const start = correlationAtStart(heard.samples, heard.got, sound("vm-you-have.wav"));
      assert.ok(start > 0.9, `first "You have" (correlation ${start.toFixed(3)})`);
      const msg = find(heard, recorded);
      assert.ok(msg.r > 0.95, `the message heard is the one recorded (correlation ${msg.r.toFixed(3)} at ${msg.lag})`);
      assert.ok(msg.lag >= intro.length - 800, `after the summary (${msg.lag} ≥ ${intro.length})`);
      // While the options play: 3 deletes it; "Message deleted", "No more messages", goodbye, BYE.
      await rtp.sendDigit("3");
      await until(() => annaPhone!.byes.find((b) => b.callId === callId), 20_000, 20);
      const off = await lamp(aw, sub, "0/0");
      assert.equal(summary(off)["Messages-Waiting"], "no");
      assert.deepEqual(await listed(), []);
    } finally {
      rtp.close();
    }
  });

  test("another user's phone dialling the code hears only its own mailboxes (here none with a message)", async () => {
    const [benPhone] = await scene.register([ben.devices[0]!]);
    const rtp = await RtpEnd.open("127.0.0.1");
    try {
      const status = await benPhone!.dial("*97", { sdp: rtp.offer("127.0.0.1") });
      assert.equal(status, 200, benPhone!.lastFinal?.firstLine);
      rtp.answer(benPhone!.lastFinal!.body);
      const callId = benPhone!.dialled.at(-1)!;
      // Ben's only mailbox is the group's (empty): "You have no messages", goodbye, BYE.
      await until(() => benPhone!.byes.find((b) => b.callId === callId), 20_000, 20);
      const heard = rtp.heard();
      const r = correlationAtStart(heard.samples, heard.got, sound("vm-no-messages.wav"));
      assert.ok(r > 0.9, `"You have no messages" (correlation ${r.toFixed(3)})`);
    } finally {
      rtp.close();
    }
  });

  test("a group mailbox lights every member's lamp", async () => {
    const [annaPhone, benPhone] = await scene.register([anna.devices[0]!, ben.devices[0]!]);
    const aw = new Subscriber(annaPhone!);
    const bw = new Subscriber(benPhone!);
    const a = await aw.subscribe("3201", { event: "message-summary", extra: [ACCEPT] });
    const b = await bw.subscribe("3202", { event: "message-summary", extra: [ACCEPT] });
    assert.equal(a.res.status, 200);
    assert.equal(b.res.status, 200);
    await lamp(aw, a.sub, "0/0");
    await lamp(bw, b.sub, "0/0");
    await leaveMessage("701", tone(8000));
    await lamp(aw, a.sub, "1/0");
    await lamp(bw, b.sub, "1/0");
    const l = await listed();
    assert.deepEqual(l.map((m) => m.mailbox), ["group/front"]);
    // Ben (a member) opens the group's mailbox by its number and saves the message with 2 sent
    // as SIP INFO: both lamps show it heard and kept (0/1), and * (INFO) ends the call.
    const rtp = await RtpEnd.open("127.0.0.1");
    try {
      assert.equal(await benPhone!.dial("*97701", { sdp: rtp.offer("127.0.0.1") }), 200, benPhone!.lastFinal?.firstLine);
      rtp.answer(benPhone!.lastFinal!.body);
      const callId = benPhone!.dialled.at(-1)!;
      await until(() => rtp.heard().samples.length >= 8000 || undefined, 10_000, 20).catch(() => assert.fail(`no summary heard: ${rtp.packets.length} packets`));
      assert.equal(await benPhone!.infoPlaced(callId, "1", 10), 200, "1 during the summary starts the message");
      assert.equal(await benPhone!.infoPlaced(callId, "2", 11), 200);
      await lamp(aw, a.sub, "0/1");
      await lamp(bw, b.sub, "0/1");
      assert.deepEqual((await listed()).map((m) => m.status), ["saved"]);
      assert.equal(await benPhone!.infoPlaced(callId, "*", 12), 200);
      await until(() => benPhone!.byes.find((x) => x.callId === callId), 10_000, 20).catch(() => assert.fail(`no BYE after *: ${rtp.packets.length} packets\n${agent.log().split("\n").filter((l) => /listening|INFO|play|session/i.test(l)).slice(-30).join("\n")}`));
    } finally {
      rtp.close();
    }
  });

  test("a menu's voicemail target takes the trunk caller to the user's mailbox on the appliance", async () => {
    const before = (await listed()).length;
    const c = await Caller.open(agent.port);
    const rtp = await RtpEnd.open(TRUNK_CALLER_IP);
    try {
      c.invite("4900", rtp.offer(TRUNK_CALLER_IP));
      const early = await until(() => c.first(183), 10_000, 5);
      rtp.answer(early.msg.body);
      // The greeting (0.3 s), then the menu prompt: 9 picks anna's mailbox.
      await until(() => rtp.packets.length >= 30 || undefined, 10_000, 10);
      await rtp.sendDigit("9");
      const ok = await until(() => c.first(200), 10_000, 5);
      c.ack(ok.msg);
      const answeredAt = rtp.packets.length;
      rtp.answer(ok.msg.body);
      await until(() => rtp.packets.length >= answeredAt + 25 || undefined, 10_000, 10);
      // The mailbox's own stream (its SSRC), not the tail of the menu's.
      const ssrc = rtp.packets.at(-1)!.pkt.ssrc;
      const greeting = decodeStream(rtp.packets.map((p) => p.pkt).filter((p) => p.payloadType === 0 && p.ssrc === ssrc), "PCMU");
      const r = correlationAtStart(greeting.samples, greeting.got, sound("vm-greeting.wav"));
      assert.ok(r > 0.9, `the mailbox's greeting (correlation ${r.toFixed(3)})`);
      await rtp.sendDigit("#");
      await rtp.quiet(300);
      await rtp.sendAudio(tone(8000));
      await rtp.sendDigit("#");
      const l = await until(async () => {
        const x = await listed();
        return x.length > before ? x : undefined;
      }, 10_000, 100);
      assert.deepEqual(l.filter((m) => m.mailbox === "user/anna").length, 1);
    } finally {
      c.close();
      rtp.close();
    }
  });
});
