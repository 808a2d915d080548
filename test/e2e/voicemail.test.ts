// Voicemail end to end: the real agent, a group nobody answers (its only member has no phone
// online) whose no-answer action is its own mailbox, and a trunk caller written here over raw
// UDP with its own RTP socket. The caller checks what it hears as audio (G.711 decoded and
// correlated with audio/vm-greeting.wav), sends a known tone as RTP and # as RFC 4733, and the
// stored WAV must hold exactly what it sent (within G.711 quantisation: the same decode).
// `ringedge voicemail list --json` shows the message, `play` copies it out verified, `delete`
// removes it. Then hostile and broken cases: offers that cannot be answered (488), garbage SIP
// INFO bodies (refused, nothing changes) and # by SIP INFO, a BYE before the ACK, a full mailbox (the caller hears so and
// nothing is written), and an agent stopped (the message is kept) or killed (the cut recording
// is removed) in the middle of a recording: the mailbox is consistent after the restart.
// Media ports are free after every call.
import assert from "node:assert/strict";
import dgram from "node:dgram";
import fs from "node:fs";
import path from "node:path";
import { createHash, randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { decodeG711, encodeG711 } from "../../agent/media/g711.ts";
import { buildRtp, parseRtp, type RtpPacket } from "../../agent/media/rtp.ts";
import { decodeWav } from "../../agent/media/wav.ts";
import { TRUNK_CALLER_IP, loggedCall, parseSimMessage, simUser, startRoutingAgent, writeSiteFile, type SimMessage } from "./callsim.ts";
import { ROOT, freePort, tempDir, until, type RunningAgent } from "./harness.ts";

const MEDIA_PORTS = 20;
const member = simUser("op1", "3101", ["physical"]);
let agent: RunningAgent;
let mediaMin: number;
let siteFile: string;
let agentPort: number;
const dataDir = tempDir("ringedge-vm-e2e-");

function sound(file: string): Int16Array {
  const r = decodeWav(fs.readFileSync(path.join(ROOT, "audio", file)));
  if (!r.ok) throw new Error(r.reason);
  return r.samples;
}
const greeting = sound("vm-greeting.wav");
const full = sound("vm-full.wav");

/** An even port with the next MEDIA_PORTS free (bind(0) hands out odd ports). */
async function mediaRange(): Promise<number> {
  for (let i = 0; i < 50; i++) {
    const min = 40000 + 2 * Math.floor(Math.random() * 10000);
    if ((await busyPorts(min, MEDIA_PORTS)).length === 0) return min;
  }
  throw new Error("no free media range");
}

async function busyPorts(min: number, n: number): Promise<number[]> {
  const busy: number[] = [];
  for (let p = min; p < min + n; p++) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = dgram.createSocket("udp4");
      s.once("error", () => resolve(false));
      s.bind(p, "127.0.0.1", () => s.close(() => resolve(true)));
    });
    if (!ok) busy.push(p);
  }
  return busy;
}

const portsFree = (): Promise<true> => until(async () => (await busyPorts(mediaMin, MEDIA_PORTS)).length === 0 || undefined, 10_000, 50);

async function start(): Promise<RunningAgent> {
  return startRoutingAgent(siteFile, { ringUnitMs: 200, dataDir, port: agentPort, env: { RINGEDGE_MEDIA_PORTS: `${mediaMin}-${mediaMin + MEDIA_PORTS - 1}`, RINGEDGE_QUEUE_MUSIC: "false" } });
}

before(async () => {
  mediaMin = await mediaRange();
  agentPort = await freePort();
  siteFile = writeSiteFile(tempDir("ringedge-site-"), {
    settings: { pickupCode: "*8", trunk: { host: "127.0.0.1", port: await freePort(), transport: "udp", allowedSources: [TRUNK_CALLER_IP] } },
    users: [member.user],
    devices: member.devices,
    groups: [
      { id: "sales", number: "700", strategy: "sequential", members: ["op1"], ringCount: 1, noAnswer: { kind: "voicemail" }, voicemail: { enabled: true, maxMessageS: 30, silenceS: 0 } },
      { id: "tiny", number: "701", strategy: "sequential", members: ["op1"], ringCount: 1, noAnswer: { kind: "voicemail" }, voicemail: { enabled: true, maxMessages: 1, silenceS: 0 } },
    ],
  });
  agent = await start();
});

after(async () => {
  await agent?.stop();
});

// --- a trunk caller with its own RTP socket --------------------------------------------------------

class Caller {
  readonly responses: SimMessage[] = [];
  readonly requests: SimMessage[] = [];
  readonly rtp: Array<{ at: number; pkt: RtpPacket }> = [];
  readonly callId = `vm-${randomBytes(6).toString("hex")}@trunk`;
  private readonly fromTag = randomBytes(4).toString("hex");
  private cseq = 1;
  private seq = randomBytes(2).readUInt16BE(0);
  private ts = randomBytes(4).readUInt32BE(0);
  private to = "";
  private target = "";
  media: { address: string; port: number } | undefined;

  private constructor(
    private readonly sip: dgram.Socket,
    private readonly rtpSock: dgram.Socket,
  ) {
    sip.on("message", (b) => {
      const m = parseSimMessage(b.toString("utf8"));
      if (m === undefined) return;
      if (m.status !== undefined) this.responses.push(m);
      else {
        this.requests.push(m);
        // Every request the appliance sends us (its BYE) is answered 200.
        const copy = ["via", "from", "to", "call-id", "cseq"].flatMap((h) => m.all(h).map((v) => `${h}: ${v}`));
        this.sip.send(Buffer.from(["SIP/2.0 200 OK", ...copy, "Content-Length: 0", "", ""].join("\r\n")), agentPort, "127.0.0.1");
      }
    });
    rtpSock.on("message", (b) => {
      const p = parseRtp(b);
      if (p.ok) this.rtp.push({ at: performance.now(), pkt: { ...p.value, payload: Uint8Array.from(p.value.payload) } });
    });
  }

  static async open(): Promise<Caller> {
    const bind = async (): Promise<dgram.Socket> => {
      const s = dgram.createSocket("udp4");
      await new Promise<void>((r) => s.bind(0, TRUNK_CALLER_IP, () => r()));
      return s;
    };
    return new Caller(await bind(), await bind());
  }

  close(): void {
    this.sip.close();
    this.rtpSock.close();
  }

  private send(lines: string[]): void {
    this.sip.send(Buffer.from(lines.join("\r\n")), agentPort, "127.0.0.1");
  }

  private head(method: string, uri: string, to: string, cseq: number): string[] {
    return [
      `${method} ${uri} SIP/2.0`,
      `Via: SIP/2.0/UDP ${TRUNK_CALLER_IP}:${this.sip.address().port};branch=z9hG4bK${randomBytes(6).toString("hex")};rport`,
      "Max-Forwards: 70",
      `From: <sip:+4930555111@${TRUNK_CALLER_IP}>;tag=${this.fromTag}`,
      `To: ${to}`,
      `Call-ID: ${this.callId}`,
      `CSeq: ${cseq} ${method}`,
    ];
  }

  /** INVITE offering PCMU and telephone-event; resolves with the final response. */
  async invite(number: string, body?: string): Promise<SimMessage> {
    const uri = `sip:${number}@127.0.0.1:${agentPort}`;
    const sdp = body ?? ["v=0", `o=- 9 9 IN IP4 ${TRUNK_CALLER_IP}`, "s=-", `c=IN IP4 ${TRUNK_CALLER_IP}`, "t=0 0", `m=audio ${this.rtpSock.address().port} RTP/AVP 0 101`, "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-15", "a=sendrecv", ""].join("\r\n");
    this.send([...this.head("INVITE", uri, `<${uri}>`, this.cseq), `Contact: <sip:trunk@${TRUNK_CALLER_IP}:${this.sip.address().port}>`, "Content-Type: application/sdp", `Content-Length: ${Buffer.byteLength(sdp)}`, "", sdp]);
    const final = await until(() => this.responses.find((r) => r.status! >= 200 && /INVITE/.test(r.header("cseq") ?? "")), 20_000, 5);
    this.to = final.header("to") ?? "";
    this.target = /<([^>]+)>/.exec(final.header("contact") ?? "")?.[1] ?? uri;
    const c = /^c=IN IP4 (\S+)/m.exec(final.body);
    const m = /^m=audio (\d+) RTP\/AVP/m.exec(final.body);
    if (c && m) this.media = { address: c[1]!, port: Number(m[1]) };
    return final;
  }

  ack(): void {
    this.send([...this.head("ACK", this.target, this.to, this.cseq), "Content-Length: 0", "", ""]);
  }

  /** An in-dialog request; resolves with its final status. */
  async request(method: string, contentType?: string, body = ""): Promise<number> {
    const cseq = ++this.cseq;
    this.send([...this.head(method, this.target, this.to, cseq), ...(contentType !== undefined ? [`Content-Type: ${contentType}`] : []), `Content-Length: ${Buffer.byteLength(body)}`, "", body]);
    const r = await until(() => this.responses.find((x) => x.status! >= 200 && x.header("cseq") === `${cseq} ${method}`), 10_000, 5);
    return r.status!;
  }

  /** Audio as RTP (PCMU, 160 samples a packet), a little faster than real time. */
  async sendAudio(pcm: Int16Array): Promise<void> {
    for (let off = 0; off + 160 <= pcm.length; off += 160) {
      const pkt = buildRtp({ marker: off === 0, payloadType: 0, sequence: this.seq++ & 0xffff, timestamp: this.ts >>> 0, ssrc: 0x5eed, }, encodeG711("PCMU", pcm.subarray(off, off + 160)));
      this.ts = (this.ts + 160) >>> 0;
      await new Promise<void>((r) => this.rtpSock.send(pkt, this.media!.port, this.media!.address, () => r()));
      await new Promise((r) => setTimeout(r, 4));
    }
  }

  /** An RFC 4733 digit: start, then three end packets, one timestamp. */
  async sendDigit(digit: "#" | "5"): Promise<void> {
    const event = digit === "#" ? 11 : 5;
    const ts = this.ts;
    for (let i = 0; i < 4; i++) {
      const end = i > 0;
      const pkt = buildRtp({ marker: i === 0, payloadType: 101, sequence: this.seq++ & 0xffff, timestamp: ts, ssrc: 0x5eed }, Uint8Array.from([event, (end ? 0x80 : 0) | 10, 0x03, 0x20]));
      await new Promise<void>((r) => this.rtpSock.send(pkt, this.media!.port, this.media!.address, () => r()));
    }
    this.ts = (this.ts + 800) >>> 0;
  }

  /** Until nothing came for `ms` (a prompt ended), after at least one packet. */
  async quiet(ms: number, timeoutMs = 20_000): Promise<void> {
    await until(() => (this.rtp.length > 0 && performance.now() - this.rtp.at(-1)!.at > ms) || undefined, timeoutMs, 20);
  }

  /** What the appliance sent, decoded and laid out by timestamp from its first packet. */
  decoded(): Int16Array {
    const pk = this.rtp.map((r) => r.pkt).filter((p) => p.payloadType === 0);
    const t0 = pk[0]!.timestamp;
    const span = ((pk.at(-1)!.timestamp - t0) >>> 0) + 160;
    const out = new Int16Array(span);
    for (const p of pk) out.set(decodeG711("PCMU", p.payload), (p.timestamp - t0) >>> 0);
    return out;
  }

  byeFromAgent(): SimMessage | undefined {
    return this.requests.find((r) => r.method === "BYE");
  }
}

/** The files in a group's mailbox folder (none when it was never made). */
function boxFiles(groupId: string): string[] {
  const dir = path.join(dataDir, "voicemail", "boxes", "group", groupId);
  return fs.existsSync(dir) ? fs.readdirSync(dir).sort() : [];
}

/** Normalised correlation of x with the start of ref. */
function correlation(x: Int16Array, ref: Int16Array): number {
  let xy = 0;
  let xx = 0;
  let yy = 0;
  for (let i = 0; i < x.length && i < ref.length; i++) {
    xy += x[i]! * ref[i]!;
    xx += x[i]! * x[i]!;
    yy += ref[i]! * ref[i]!;
  }
  return xy / Math.sqrt(xx * yy || 1);
}

/** A known tone: 440 Hz + 660 Hz with a rising envelope, so every frame differs. */
function tone(samples: number): Int16Array {
  return Int16Array.from({ length: samples }, (_, i) => Math.round((3000 + i / 4) * (Math.sin((2 * Math.PI * 440 * i) / 8000) + 0.5 * Math.sin((2 * Math.PI * 660 * i) / 8000))));
}

interface Listed {
  id: string;
  mailbox: string;
  caller: string;
  callId: string;
  durationMs: number;
  sha256: string;
  status: string;
  file: string;
}

async function listed(mailbox?: string): Promise<Listed[]> {
  const r = await agent.cli(["voicemail", "list", "--json", ...(mailbox !== undefined ? ["--mailbox", mailbox] : [])]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as Listed[];
}

/** Answered by the mailbox of `number`; # skips the greeting; the tone has played: recording from here. */
async function toRecording(c: Caller, number: string): Promise<void> {
  assert.equal((await c.invite(number)).status, 200);
  c.ack();
  await until(() => c.rtp.length >= 5 || undefined, 10_000, 10);
  await c.sendDigit("#");
  await c.quiet(300);
  await new Promise((r) => setTimeout(r, 200));
}

/** A quick message: # skips the greeting, the tone plays, then `seconds` of audio and #. */
async function leaveQuickMessage(number: string, seconds: number): Promise<Caller> {
  const c = await Caller.open();
  await toRecording(c, number);
  await c.sendAudio(tone(seconds * 8000));
  await c.sendDigit("#");
  await until(() => c.byeFromAgent(), 10_000, 10);
  return c;
}

describe("voicemail", () => {
  test("no answer → greeting heard → tone → the caller's audio and # → the stored WAV is what was sent → list, play, delete", async () => {
    const c = await Caller.open();
    try {
      const final = await c.invite("700");
      assert.equal(final.status, 200, "the mailbox answers");
      assert.equal(final.header("content-type"), "application/sdp");
      assert.ok(c.media && c.media.port >= mediaMin && c.media.port < mediaMin + MEDIA_PORTS, `media port in the range: ${final.body}`);
      assert.match(final.header("contact") ?? "", /^<sip:127\.0\.0\.1:\d+>$/);
      c.ack();
      // The greeting plays in full (about 7.5 s), then the tone; then nothing until we speak.
      await c.quiet(400, 30_000);
      const heard = c.decoded();
      const r = correlation(heard, greeting);
      assert.ok(r > 0.9, `what the caller heard is vm-greeting.wav (correlation ${r.toFixed(3)})`);
      assert.ok(heard.length >= greeting.length + 0.35 * 8000, "and the tone after it");
      await new Promise((r2) => setTimeout(r2, 200));
      const sent = tone(3 * 8000);
      await c.sendAudio(sent);
      await c.sendDigit("#");
      // The appliance hangs up (its BYE, answered 200 by the caller).
      const bye = await until(() => c.byeFromAgent(), 10_000, 10);
      assert.equal(bye.uri, `sip:trunk@${TRUNK_CALLER_IP}:${(c as unknown as { sip: dgram.Socket }).sip.address().port}`, "BYE to the caller's Contact");
      const [m] = await until(async () => {
        const l = await listed("group/sales");
        return l.length === 1 ? l : undefined;
      }, 10_000, 100);
      assert.equal(m!.mailbox, "group/sales");
      assert.equal(m!.caller, "+4930555111");
      assert.equal(m!.callId, c.callId);
      assert.equal(m!.status, "new");
      assert.equal(m!.durationMs, 3000);
      // The stored audio is exactly what was sent, through the same G.711 round trip.
      const wav = decodeWav(fs.readFileSync(m!.file));
      assert.ok(wav.ok);
      assert.deepEqual(Array.from(wav.samples), Array.from(decodeG711("PCMU", encodeG711("PCMU", sent))));
      // play copies it out, verified; never over an existing file.
      const out = path.join(tempDir("ringedge-vm-out-"), "m.wav");
      const played = await agent.cli(["voicemail", "play", m!.id, "--out", out]);
      assert.equal(played.code, 0, played.stderr);
      assert.equal(createHash("sha256").update(fs.readFileSync(out)).digest("hex"), m!.sha256);
      const again = await agent.cli(["voicemail", "play", m!.id, "--out", out]);
      assert.equal(again.code, 1);
      assert.match(again.stderr, /exists; not overwritten/);
      // The call log says voicemail.
      assert.equal((await loggedCall(dataDir, c.callId)).outcome, "voicemail");
      await portsFree();
      const del = await agent.cli(["voicemail", "delete", m!.id]);
      assert.equal(del.code, 0, del.stderr);
      assert.deepEqual(await listed(), []);
      const bad = await agent.cli(["voicemail", "delete", "../../etc/passwd"]);
      assert.equal(bad.code, 1);
      assert.match(bad.stderr, /not a message id/);
      const badBox = await agent.cli(["voicemail", "list", "--mailbox", "room/1"]);
      assert.equal(badBox.code, 1);
    } finally {
      c.close();
    }
  });

  test("hostile INFO bodies are refused and change nothing; # by SIP INFO ends the recording", async () => {
    const c = await Caller.open();
    try {
      assert.equal((await c.invite("700")).status, 200);
      c.ack();
      await until(() => c.rtp.length >= 5 || undefined, 10_000, 10);
      assert.equal(await c.request("INFO", "application/dtmf-relay", "Signal=#\r\nDuration=100\r\n"), 200, "# skips the greeting");
      await c.quiet(300);
      await new Promise((r) => setTimeout(r, 200));
      const sent = tone(8000);
      await c.sendAudio(sent);
      assert.equal(await c.request("INFO", "application/dtmf-relay", "Signal=\x00\xff<script>\r\n"), 400);
      assert.equal(await c.request("INFO", "text/plain", "#"), 415);
      assert.equal(await c.request("INFO", "application/dtmf-relay", "Signal=1\r\nSignal=#\r\n"), 400);
      assert.equal(await c.request("UPDATE"), 488);
      assert.equal(c.byeFromAgent(), undefined, "the call is still up");
      assert.equal(await c.request("INFO", "application/dtmf", "#"), 200);
      await until(() => c.byeFromAgent(), 10_000, 10);
      const l = await until(async () => {
        const x = await listed("group/sales");
        return x.length === 1 ? x : undefined;
      }, 10_000, 100);
      assert.equal(l[0]!.durationMs, 1000);
      await portsFree();
      assert.equal((await agent.cli(["voicemail", "delete", l[0]!.id])).code, 0);
    } finally {
      c.close();
    }
  });

  test("a malformed recording request: offers the appliance cannot answer get 488, nothing is stored", async () => {
    const offers = [
      // G.729 only.
      ["v=0", `o=- 1 1 IN IP4 ${TRUNK_CALLER_IP}`, "s=-", `c=IN IP4 ${TRUNK_CALLER_IP}`, "t=0 0", "m=audio 4000 RTP/AVP 18", "a=rtpmap:18 G729/8000", ""].join("\r\n"),
      // A host name instead of an address (never resolved), and garbage lines.
      ["v=0", "o=- 1 1 IN IP4 x", "s=-", "c=IN IP4 attacker.example", "t=0 0", "m=audio 4000 RTP/AVP 0", "\x00\xff garbage", ""].join("\r\n"),
      // Not SDP at all.
      "<script>alert(1)</script>",
    ];
    for (const body of offers) {
      const c = await Caller.open();
      try {
        const final = await c.invite("700", body);
        assert.equal(final.status, 488, `offer ${JSON.stringify(body.slice(0, 40))}`);
      } finally {
        c.close();
      }
    }
    assert.deepEqual(await listed(), []);
    assert.deepEqual(boxFiles("sales"), []);
    await portsFree();
  });

  test("a BYE before the ACK: 200, the session ends, nothing is stored, ports are freed", async () => {
    const c = await Caller.open();
    try {
      assert.equal((await c.invite("700")).status, 200);
      assert.equal(await c.request("BYE"), 200);
      await portsFree();
      assert.deepEqual(await listed(), []);
      assert.deepEqual(boxFiles("sales"), [], "no file of the deposit is left");
    } finally {
      c.close();
    }
  });

  test("a full mailbox: the caller hears so, the appliance hangs up, nothing is written", async () => {
    (await leaveQuickMessage("701", 1)).close();
    const kept = await until(async () => {
      const x = await listed("group/tiny");
      return x.length === 1 ? x : undefined;
    }, 10_000, 100);
    const box = path.join(dataDir, "voicemail", "boxes", "group", "tiny");
    const before = fs.readdirSync(box).sort();
    const c = await Caller.open();
    try {
      assert.equal((await c.invite("701")).status, 200);
      c.ack();
      await until(() => c.byeFromAgent(), 20_000, 20);
      const r = correlation(c.decoded(), full);
      assert.ok(r > 0.9, `the caller heard vm-full.wav (correlation ${r.toFixed(3)})`);
      assert.deepEqual(fs.readdirSync(box).sort(), before, "nothing written");
      assert.deepEqual((await listed("group/tiny")).map((m) => m.id), kept.map((m) => m.id));
      await portsFree();
      assert.equal((await agent.cli(["voicemail", "delete", kept[0]!.id])).code, 0);
    } finally {
      c.close();
    }
  });

  test("the agent stopped (SIGTERM) in the middle of a recording: the caller gets BYE and the message is there after the restart", async () => {
    const c = await Caller.open();
    try {
      await toRecording(c, "700");
      const sent = tone(2 * 8000);
      await c.sendAudio(sent);
      await agent.stop();
      assert.ok(c.byeFromAgent(), "the appliance hung up on its way down");
      // With no agent running the CLI works on the mailbox folders (and finishes the commit).
      const offline = await agent.cli(["voicemail", "list", "--json"]);
      assert.equal(offline.code, 0, offline.stderr);
      assert.deepEqual((JSON.parse(offline.stdout) as Listed[]).map((m) => m.callId), [c.callId]);
      agent = await start();
      const l = await listed("group/sales");
      assert.equal(l.length, 1, "the recording was kept");
      assert.equal(l[0]!.callId, c.callId);
      const wav = decodeWav(fs.readFileSync(l[0]!.file));
      assert.ok(wav.ok);
      assert.deepEqual(Array.from(wav.samples), Array.from(decodeG711("PCMU", encodeG711("PCMU", sent))));
      assert.equal((await agent.cli(["voicemail", "delete", l[0]!.id])).code, 0);
    } finally {
      c.close();
    }
  });

  test("the agent killed in the middle of a recording: after the restart the mailbox is consistent", async () => {
    const c = await Caller.open();
    try {
      await toRecording(c, "700");
      await c.sendAudio(tone(8000));
      const box = path.join(dataDir, "voicemail", "boxes", "group", "sales");
      await until(() => fs.readdirSync(box).some((f) => f.endsWith(".wav.part")) || undefined, 5000, 20);
      await agent.kill();
      assert.ok(fs.readdirSync(box).some((f) => f.endsWith(".pending.json")), "the deposit was cut");
      agent = await start();
      assert.deepEqual(fs.readdirSync(box), [], "the cut recording was removed");
      assert.deepEqual(await listed(), []);
    } finally {
      c.close();
    }
  });
});
