// Greetings with extension dialling, and menus, end to end (docs/menus.md): the real agent with
// a site whose trunk numbers have greetings, registered operator phones (callsim.ts Phone), and
// a trunk caller (rtp-caller.ts) with its own RTP receiver. What the caller hears is decoded
// and matched by correlation against the prompt files (talkspurts: each marker bit starts a
// file); keys go as RFC 4733 telephone-events and as SIP INFO in the 183's early dialog; where
// the call went is seen at the phones. Then hostile input: garbage INFO bodies, keys out of
// range, malformed RTP, a flood of keys.
import assert from "node:assert/strict";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { CallScene, DEVICE_PASSWORD, TRUNK_CALLER_IP, sippPhones, startRoutingAgent, writeSiteFile, type Phone, SimRoster } from "./callsim.ts";
import { Caller, shippedSound, talkspurts, writeSweepWav } from "./rtp-caller.ts";
import { freePort, sleep, tempDir, until, type RunningAgent } from "./harness.ts";
import { busyPorts, freeMediaPorts } from "../media-ports.ts";
import fs from "node:fs";

const UNIT = 200;
const roster = new SimRoster();
const { users, devices } = roster;
const op1 = roster.add("op1", "3101");
const op2 = roster.add("op2", "3102");
const op3 = roster.add("op3", "3103");
/** A desk phone played by SIPp (registers, answers with 180 then 200). */
const op4 = roster.add("op4", "3104");

const greetingWav = shippedSound("ivr-greeting.wav");
const invalidWav = shippedSound("ivr-invalid.wav");
const dir = tempDir("ringedge-ivr-");
const greetTone = writeSweepWav(path.join(dir, "greet.wav"), 300, 1200, 0.4);
const menuTone = writeSweepWav(path.join(dir, "menu.wav"), 1500, 500, 0.6);
const REFS = { greeting: greetingWav, invalid: invalidWav, greetTone, menuTone };

let agent: RunningAgent;
let mediaMin: number;
let phones: Phone[];
const scene = new CallScene(() => agent);

before(async () => {
  mediaMin = (await freeMediaPorts(10)).min;
  const file = writeSiteFile(dir, {
    settings: { pickupCode: "*8", trunk: { host: "127.0.0.1", port: await freePort(), transport: "udp", allowedSources: [TRUNK_CALLER_IP] } },
    users,
    devices,
    groups: [
      { id: "sales", number: "600", strategy: "simultaneous", members: ["op1"], ringCount: 60, noAnswer: { kind: "hangup" } },
      { id: "support", number: "61", strategy: "simultaneous", members: ["op2"], ringCount: 60, noAnswer: { kind: "hangup" } },
      { id: "field", number: "62", strategy: "simultaneous", members: ["op4"], ringCount: 60, noAnswer: { kind: "hangup" } },
    ],
  });
  const doc = JSON.parse(fs.readFileSync(file, "utf8")) as Record<string, unknown>;
  doc.inbound = [
    // The shipped greeting; a group number or extension may be dialled while it plays.
    { number: "4000", greeting: { then: { kind: "group", groupId: "support" }, extensionDialling: { maxDigits: 4, interDigitS: 2 } } },
    // A short greeting of the site's own, then a menu.
    { number: "5000", greeting: { prompt: path.join(dir, "greet.wav"), then: { kind: "menu", menuId: "main" } } },
    // Every other number the trunk sends: the default route.
    { greeting: { prompt: path.join(dir, "greet.wav"), then: { kind: "group", groupId: "support" } } },
  ];
  doc.menus = [
    {
      id: "main",
      prompt: path.join(dir, "menu.wav"),
      options: [
        { digit: "1", target: { kind: "group", groupId: "sales" } },
        { digit: "2", target: { kind: "user", userId: "op3" } },
      ],
      timeoutS: 1,
      repeats: 1,
      afterLast: { kind: "group", groupId: "support" },
    },
  ];
  fs.writeFileSync(file, JSON.stringify(doc));
  agent = await startRoutingAgent(file, { ringUnitMs: UNIT, env: { RINGEDGE_MEDIA_PORTS: `${mediaMin}-${mediaMin + 9}` } });
  await agent.waitForLog(/sound loaded sound=ivr-greeting/, 60_000);
  await agent.waitForLog(/sound loaded sound=ivr-invalid/, 60_000);
  await agent.waitForLog(/sound loaded sound=file-/, 60_000);
  phones = await scene.register([op1, op2, op3]);
});

after(async () => {
  await scene.close();
});

type Progress = Awaited<ReturnType<Caller["progress"]>>;

/**
 * A trunk call to `number`, up to the appliance's 183 (its early media); `fn` with the caller and
 * that 183; then CANCEL (unless `cancel: false`: the test answered or cancelled the call itself)
 * and the caller's sockets closed.
 */
async function withCall(number: string, fn: (caller: Caller, p: Progress) => Promise<void>, opts: { cancel?: boolean } = {}): Promise<void> {
  const caller = await Caller.open(agent.port);
  try {
    caller.invite(number);
    await fn(caller, await caller.progress());
  } finally {
    if (opts.cancel !== false) await caller.cancel().catch(() => undefined);
    caller.close();
  }
}

/** The sounds heard so far on the call's prompt stream (talkspurts against REFS). */
const heard = (caller: Caller, p: Progress): ReturnType<typeof talkspurts> => talkspurts(caller.from(p.source), REFS);
const soundsOf = (spurts: ReturnType<typeof talkspurts>): Array<string | undefined> => spurts.map((s) => s.sound);

/** At least `n` prompt packets arrived (waited for). */
async function packets(caller: Caller, p: Progress, n: number): Promise<void> {
  await until(() => caller.from(p.source).length >= n || undefined, 10_000, 5);
}

/** The prompt stream's talkspurt `i` (0 first) has 0.2 s of its sound (waited for). */
async function spurtPlaying(caller: Caller, p: Progress, i: number): Promise<void> {
  await until(() => (heard(caller, p)[i]?.samples ?? 0) >= 1600 || undefined, 10_000, 20);
}

/** The phone that got the call's INVITE (waited for), and that no other phone got one. */
async function reached(caller: Caller, phone: Phone, timeoutMs = 5000): Promise<number> {
  await until(() => phone.invitesOf(caller.callId).length > 0 || undefined, timeoutMs, 5);
  const at = performance.now();
  await sleep(200);
  for (const p of phones) assert.equal(p.invitesOf(caller.callId).length, p === phone ? 1 : 0, `only ${phone === phones[0] ? "op1" : phone === phones[1] ? "op2" : "op3"}'s phone rings`);
  return at;
}

/** No registered phone got the call's INVITE. */
function ringsNobody(caller: Caller): void {
  for (const ph of phones) assert.equal(ph.invitesOf(caller.callId).length, 0);
}

/** The RTP source of the call's prompts stops sending and its ports are freed. */
async function mediaGone(caller: Caller, p: Progress): Promise<void> {
  await until(async () => !(await busyPorts(mediaMin, mediaMin + 9)).includes(p.port) || undefined, 5000, 20);
  const n = caller.from(p.source).length;
  await sleep(200);
  assert.equal(caller.from(p.source).length, n, "nothing plays once the call went on");
}

const digitEvent = (d: string): number => (d === "*" ? 10 : d === "#" ? 11 : Number(d));

/** Keys as RFC 4733 telephone-events, `gapMs` apart. */
async function dial(caller: Caller, p: Progress, keys: string, gapMs: number): Promise<void> {
  for (const d of keys) {
    caller.sendRfc4733(digitEvent(d), p);
    await sleep(gapMs);
  }
}

/** A key as a SIP INFO application/dtmf-relay in the 183's early dialog; its final status. */
const infoKey = (caller: Caller, p: Progress, body: string): Promise<number> => caller.sendInfo(p.got.msg, "application/dtmf-relay", body);

describe("greeting with extension dialling", () => {
  test("the greeting is heard (decoded, matched to ivr-greeting.wav); 600 dialled as RFC 4733 events cuts it short and reaches the sales group; ports freed", async () => {
    await withCall("4000", async (caller, p) => {
      assert.equal(p.port >= mediaMin && p.port < mediaMin + 10, true, `media port ${p.port} in the range`);
      assert.ok(!caller.statuses().some((s) => s >= 200), "not answered: early media");
      // One second of the greeting.
      await packets(caller, p, 50);
      const firstRtp = caller.rtp.find((r) => r.from === p.source)!;
      console.log(`# ivr: greeting's first RTP ${(firstRtp.at - caller.sentAt).toFixed(1)} ms after the INVITE`);
      const greeting = heard(caller, p);
      assert.equal(greeting[0]?.sound, "greeting", `talkspurts: ${JSON.stringify(greeting)}`);
      await dial(caller, p, "600", 80);
      const at = await reached(caller, phones[0]!);
      await mediaGone(caller, p);
      const spurts = heard(caller, p);
      assert.equal(spurts.length, 1, "nothing else was played");
      assert.ok(spurts[0]!.samples < greetingWav.length - 8000 * 3, `the greeting was cut short: ${spurts[0]!.samples} of ${greetingWav.length} samples`);
      const lastRtp = caller.rtp.filter((r) => r.from === p.source).at(-1)!;
      console.log(`# ivr: the sales phone rang ${(at - lastRtp.at).toFixed(0)} ms after the last prompt packet (keys 80 ms apart)`);
      assert.ok(caller.statuses().includes(180), "the sales phone's ringing reaches the caller");
    });
  });

  test("keys by SIP INFO (application/dtmf-relay and application/dtmf) in the early dialog: the first one stops the prompt at once; 3102 reaches that operator", async () => {
    await withCall("4000", async (caller, p) => {
      await packets(caller, p, 25);
      assert.equal(await infoKey(caller, p, "Signal=3\r\nDuration=160\r\n"), 200);
      const stoppedAt = performance.now();
      // The prompt stops (a frame the worker had already due aside: 150 ms of slack on a busy machine).
      await sleep(400);
      const after = caller.rtp.filter((r) => r.from === p.source && r.at > stoppedAt + 150);
      assert.equal(after.length, 0, `${after.length} prompt packets after the first key`);
      assert.equal(await caller.sendInfo(p.got.msg, "application/dtmf", "1"), 200);
      assert.equal(await infoKey(caller, p, "Signal=0\nDuration=100"), 200);
      assert.equal(phones[1]!.invitesOf(caller.callId).length, 0, "3 1 0: not complete yet");
      assert.equal(await infoKey(caller, p, "Signal=2\r\nDuration=160\r\n"), 200);
      await reached(caller, phones[1]!);
      await mediaGone(caller, p);
    });
  });

  test("a number that is no group and no extension plays the invalid-choice prompt (decoded), then the greeting's default group", async () => {
    await withCall("4000", async (caller, p) => {
      await packets(caller, p, 10);
      await dial(caller, p, "99#", 60);
      await reached(caller, phones[1]!, 10_000);
      const spurts = heard(caller, p);
      assert.deepEqual(soundsOf(spurts), ["greeting", "invalid"], JSON.stringify(spurts));
      assert.ok(Math.abs(spurts[1]!.samples - invalidWav.length) < 1600, `the invalid prompt played to its end: ${spurts[1]!.samples} of ${invalidWav.length}`);
      await mediaGone(caller, p);
    });
  });

  test("the operator reached by extension dialling answers: their 2xx is its own dialog (not the greeting's), ACK and BYE go through", async () => {
    await withCall(
      "4000",
      async (caller, p) => {
        await packets(caller, p, 10);
        caller.sendRfc4733(6, p);
        caller.sendRfc4733(1, p);
        await reached(caller, phones[1]!);
        phones[1]!.answerNow(caller.callId);
        const ok = await until(() => caller.first(200), 5000, 2);
        const tag = (m: typeof ok.msg): string | undefined => /tag=([^;>\s]+)/.exec(m.header("to") ?? "")?.[1];
        assert.notEqual(tag(ok.msg), tag(p.got.msg), "RFC 3261 §13.2.2.4: the phone's dialog, not the greeting's early one");
        assert.doesNotMatch(ok.msg.body, new RegExp(`m=audio ${p.port} `), "the phone's SDP, not the appliance's");
        caller.ack(ok.msg);
        await until(() => phones[1]!.acks.some((x) => x.callId === caller.callId) || undefined, 5000, 5);
        caller.bye();
        await until(() => phones[1]!.byes.some((x) => x.callId === caller.callId) || undefined, 5000, 5);
        await mediaGone(caller, p);
      },
      { cancel: false },
    );
  });

  test("62 dialled during the greeting reaches the field group's SIPp desk phone, which answers: 200 with its SDP, ACK and BYE through the agent", async () => {
    const sipp = await sippPhones(agent, [[op4.username, DEVICE_PASSWORD]], "ivr-phone-answer.xml", 30_000);
    scene.peers.push(sipp);
    await withCall(
      "4000",
      async (caller, p) => {
        await packets(caller, p, 10);
        caller.sendRfc4733(6, p);
        caller.sendRfc4733(2, p);
        const ok = await until(() => caller.first(200), 10_000, 5);
        assert.match(ok.msg.body, /m=audio \d+ RTP\/AVP 0/, "SIPp's SDP");
        caller.ack(ok.msg);
        caller.bye();
        await until(() => caller.responses.find((r) => /BYE/.test(r.msg.header("cseq") ?? "")), 5000, 5);
        sipp.run.proc.kill("SIGTERM");
        await sipp.run;
        const got = sipp.received().filter((e) => e.msg.header("call-id") === caller.callId).map((e) => e.msg.method);
        assert.deepEqual(got, ["INVITE", "ACK", "BYE"], "the SIPp phone got the call, the ACK and the BYE");
        ringsNobody(caller);
        await mediaGone(caller, p);
      },
      { cancel: false },
    );
  });

  test("no key: when the greeting ends the call goes to the default route's group (a number not listed, not local)", async () => {
    await withCall("+4977123456", async (caller, p) => {
      const at = await reached(caller, phones[1]!, 10_000);
      const spurts = heard(caller, p);
      assert.deepEqual(soundsOf(spurts), ["greetTone"], JSON.stringify(spurts));
      const waited = at - p.got.at;
      assert.ok(waited > 300 && waited < 2000, `the group rang ${waited.toFixed(0)} ms after the 183 (prompt 400 ms)`);
      await mediaGone(caller, p);
    });
  });
});

describe("menus", () => {
  test("greeting, then the menu; key 1 reaches the sales group", async () => {
    await withCall("5000", async (caller, p) => {
      await spurtPlaying(caller, p, 1);
      caller.sendRfc4733(1, p);
      await reached(caller, phones[0]!);
      assert.deepEqual(soundsOf(heard(caller, p)), ["greetTone", "menuTone"]);
      await mediaGone(caller, p);
    });
  });

  test("a wrong key plays the invalid-choice prompt and the menu again; then key 2 (by INFO) reaches the user", async () => {
    await withCall("5000", async (caller, p) => {
      await spurtPlaying(caller, p, 1);
      caller.sendRfc4733(7, p);
      await spurtPlaying(caller, p, 3);
      assert.deepEqual(soundsOf(heard(caller, p)), ["greetTone", "menuTone", "invalid", "menuTone"]);
      assert.equal(await infoKey(caller, p, "Signal=2\r\nDuration=160\r\n"), 200);
      await reached(caller, phones[2]!);
      await mediaGone(caller, p);
    });
  });

  test("no key: the menu plays again after timeoutS, then afterLast (the support group)", async () => {
    await withCall("5000", async (caller, p) => {
      const at = await reached(caller, phones[1]!, 15_000);
      const spurts = heard(caller, p);
      assert.deepEqual(soundsOf(spurts), ["greetTone", "menuTone", "menuTone"], JSON.stringify(spurts));
      // The second menu starts timeoutS (1 s) after the first one ended: 0.6 s prompt + 1 s.
      const gap = (spurts[2]!.at - spurts[1]!.at) / 8000;
      assert.ok(gap > 1.45 && gap < 2.2, `menu again ${gap.toFixed(2)} s after it started`);
      const total = (at - p.got.at) / 1000;
      assert.ok(total > 3 && total < 5.5, `afterLast after ${total.toFixed(2)} s (0.4 + 2 × (0.6 + 1))`);
      await mediaGone(caller, p);
    });
  });
});

describe("hostile input during a greeting", () => {
  test("garbage INFO bodies get 400/415 and change nothing; keys out of range and malformed RTP are ignored; a flood of keys routes once", async () => {
    await withCall("4000", async (caller, p) => {
      await packets(caller, p, 10);
      const garbage: Array<[string | undefined, string, number]> = [
        [undefined, "Signal=5", 415],
        ["text/plain", "5", 415],
        ["application/dtmf-relay", "", 400],
        ["application/dtmf-relay", "Signal=E\r\n", 400],
        ["application/dtmf-relay", "Signal=55\r\n", 400],
        ["application/dtmf-relay", "\u0000\u00ff\u0001 nonsense", 400],
        ["application/dtmf-relay", "Signal=5\r\nSignal=6\r\n", 400],
        ["application/dtmf", "x".repeat(300), 400],
      ];
      for (const [ct, body, status] of garbage) assert.equal(await caller.sendInfo(p.got.msg, ct, body), status, `${ct} ${JSON.stringify(body.slice(0, 20))}`);
      // A key for another early dialog (a To tag that is not the appliance's) is no key of this call.
      const otherTag = (p.got.msg.header("to") ?? "").replace(/tag=[^;>\s]+/, "tag=not-ours");
      assert.equal(await caller.sendInfo(p.got.msg, "application/dtmf-relay", "Signal=6\r\n", otherTag), 481);
      // Events beyond the DTMF keys (RFC 4733 §3.2: 16 and up are not keys), A-D, malformed RTP.
      for (const ev of [16, 99, 255, 12, 13]) caller.sendRfc4733(ev, p);
      for (const b of [Buffer.from("garbage"), Buffer.alloc(0), Buffer.from([0x80, 101, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 5]), Buffer.alloc(1400, 0xff)]) caller.sendRaw(b, p);
      await sleep(300);
      assert.equal(heard(caller, p).length, 1, "the greeting still plays, uninterrupted");
      ringsNobody(caller);
      // A flood: 60 keys by INFO and RTP at once. 9999 is no number: invalid prompt, then support.
      const infos: Array<Promise<number>> = [];
      for (let i = 0; i < 30; i++) {
        caller.sendRfc4733(9, p);
        infos.push(infoKey(caller, p, "Signal=9\r\nDuration=100\r\n"));
      }
      const statuses = await Promise.all(infos);
      assert.ok(statuses.every((s) => s === 200 || s === 481), `INFO answers ${[...new Set(statuses)].join(",")}`);
      await reached(caller, phones[1]!, 10_000);
      const spurts = heard(caller, p);
      assert.deepEqual(soundsOf(spurts), ["greeting", "invalid"], JSON.stringify(spurts));
      await mediaGone(caller, p);
      // The greeting is over: a late key in its early dialog is refused, and changes nothing.
      assert.equal(await infoKey(caller, p, "Signal=1\r\n"), 481);
      assert.equal(phones[0]!.invitesOf(caller.callId).length, 0);
      assert.match(agent.log(), /greeting/, "the agent logged the greeting");
      assert.equal(agent.proc.exitCode, null, "the agent is alive");
    });
  });

  test("the caller hanging up during the greeting (CANCEL) frees the ports and rings nobody", async () => {
    await withCall(
      "4000",
      async (caller, p) => {
        await packets(caller, p, 10);
        await caller.cancel();
        assert.ok(caller.statuses().includes(487));
        await mediaGone(caller, p);
        await sleep(300);
        ringsNobody(caller);
        assert.deepEqual(await busyPorts(mediaMin, mediaMin + 9), [], "no media port held");
      },
      { cancel: false },
    );
  });
});
