// The deposit flow (voicemail/deposit.ts) over fakes of the proxy, the UAS dialogs and the
// media service, with a real mailbox store: what is refused before the answer and with which
// status, the greeting → tone → recording sequence and its parameters, # skipping the greeting,
// the caller hanging up at each stage, a cancel while the media session is being opened, a
// full mailbox, and that every path closes its media session and leaves no stray file.
import { describe, test } from "node:test";
import { createHash } from "node:crypto";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { EventBus } from "../../agent/bus.ts";
import { createLogger } from "../../agent/log.ts";
import { MAILBOX_DEFAULTS, type MailboxConfig } from "../../agent/routing/model.ts";
import { parseDatagram } from "../../agent/sip/message.ts";
import type { ProxyCall } from "../../agent/sip/proxy-types.ts";
import type { SessionEvents } from "../../agent/media/service.ts";
import { fakeAnswering } from "./fakes.ts";
import { BEEP_SOUND, FULL_SOUND, GREETING_SOUND, VoicemailDeposits } from "../../agent/voicemail/deposit.ts";
import { VoicemailStore } from "../../agent/voicemail/store.ts";
import { encodeWav } from "../../agent/media/wav.ts";
import { until } from "../e2e/harness.ts";
import { tempDir } from "../tmpdir.ts";

const FLOW = { transport: "udp" as const, remoteAddress: "192.0.2.7", remotePort: 5062, localAddress: "127.0.0.1", localPort: 5060 };
const SDP = "v=0\r\no=- 1 1 IN IP4 192.0.2.7\r\ns=-\r\nc=IN IP4 192.0.2.7\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";

let n = 0;
function call(body: string | null = SDP): ProxyCall & { finished: boolean } {
  const b = body ?? "";
  const text = [
    "INVITE sip:700@127.0.0.1 SIP/2.0",
    "Via: SIP/2.0/UDP 192.0.2.7:5062;branch=z9hG4bKd" + ++n,
    "Max-Forwards: 70",
    "From: <sip:+4930@192.0.2.7>;tag=c1",
    "To: <sip:700@127.0.0.1>",
    `Call-ID: dep-${n}@test`,
    "CSeq: 1 INVITE",
    "Contact: <sip:c@192.0.2.7:5062>",
    ...(body !== null ? ["Content-Type: application/sdp"] : []),
    `Content-Length: ${Buffer.byteLength(b)}`,
    "",
    b,
  ].join("\r\n");
  const r = parseDatagram(Buffer.from(text));
  assert.ok(r.ok && r.message.kind === "request");
  return { id: `pc${n}`, request: r.message, flow: FLOW, receivedAt: 0, firstForkAt: undefined, branches: [], answered: undefined, finished: false };
}

function world(cfg: Partial<MailboxConfig> | null = {}, openResult: "ok" | "fail" | "manual" = "ok", loadable: (sound: string) => boolean = () => true) {
  const dataDir = tempDir("ringedge-dep-");
  const bus = new EventBus();
  const mailbox = (o: { kind: string; id: string }) => (cfg === null || o.id !== "sales" ? undefined : { enabled: true, ...MAILBOX_DEFAULTS, ...cfg });
  const store = new VoicemailStore({ dataDir, mailbox, bus });
  store.start();
  const log: string[] = [];
  const sessions = new Map<string, SessionEvents>();
  const recording = new Map<string, { tmpPath: string; finalPath: string }>();
  let pendingOpen: ((r: { ok: true; id: string; port: number } | { ok: false; reason: string }) => void) | undefined;
  let seq = 0;
  const media = {
    running: () => true,
    start: () => undefined,
    has: (sound: string) => loadable(sound),
    load: async (sound: string) => (loadable(sound) ? { ok: true as const } : { ok: false as const, reason: "cannot read it" }),
    openSession: (_req: unknown, ev: SessionEvents) =>
      new Promise<{ ok: true; id: string; port: number } | { ok: false; reason: string }>((resolve) => {
        const id = `m${++seq}`;
        const done = (r: { ok: true; id: string; port: number } | { ok: false; reason: string }) => {
          if (r.ok) sessions.set(r.id, ev);
          resolve(r);
        };
        if (openResult === "fail") done({ ok: false, reason: "no free port pair" });
        else if (openResult === "ok") done({ ok: true, id, port: 30000 });
        else pendingOpen = (r) => done(r.ok ? { ...r, id } : r);
      }),
    play: (id: string, sound: string) => log.push(`play ${id} ${sound}`),
    record: (id: string, r: { tmpPath: string; finalPath: string; maxMs: number; silenceMs: number; stopDigit: string | undefined }) => {
      log.push(`record ${id} max=${r.maxMs} silence=${r.silenceMs} stop=${r.stopDigit}`);
      recording.set(id, r);
      fs.writeFileSync(r.tmpPath, "");
    },
    stopRecording: (id: string) => {
      log.push(`stop-record ${id}`);
      finishRecording(id, "stopped");
    },
    close: (id: string) => {
      log.push(`close ${id}`);
      const ev = sessions.get(id);
      if (ev === undefined) return;
      sessions.delete(id);
      queueMicrotask(() => {
        if (recording.has(id)) finishRecording(id, "closed", ev);
        ev.onClosed?.(undefined);
      });
    },
  };
  /** What the worker does when a recording stops: 1.5 s of audio under the final name. */
  const finishRecording = (id: string, reason: string, ev = sessions.get(id)): void => {
    const r = recording.get(id);
    if (r === undefined) return;
    recording.delete(id);
    fs.rmSync(r.tmpPath, { force: true });
    const wav = encodeWav(new Int16Array(12000).fill(1000));
    fs.writeFileSync(r.finalPath, wav);
    ev?.onRecorded?.({ ev: "recorded", id, path: r.finalPath, samples: 12000, bytes: wav.length, sha256: sha256(wav), reason: reason as never });
  };
  const answering = fakeAnswering();
  const { rejected, events: uasEvents, call: uas } = answering;
  const deposits = new VoicemailDeposits({
    proxy: answering.proxy,
    uas: answering.uas,
    media: media as never,
    store,
    mailbox,
    mediaAddress: () => "127.0.0.1",
    contact: () => "<sip:127.0.0.1:5060>",
    shippedAudio: (f) => f,
    bus,
    log: createLogger("silent"),
  });
  const messages: unknown[] = [];
  bus.on("voicemail.message", (e) => messages.push(e));
  const ended: Array<number | undefined> = [];
  let answered = 0;
  const take = (pc: ProxyCall) => deposits.take(pc, { kind: "group", id: "sales" }, "+4930", { answered: () => answered++, ended: (s) => ended.push(s) });
  const box = path.join(dataDir, "voicemail", "boxes", "group", "sales");
  const files = () => (fs.existsSync(box) ? fs.readdirSync(box).sort() : []);
  return { deposits, store, log, sessions, rejected, uasEvents, uas, messages, ended, take, files, answered: () => answered, openNow: (r: { ok: true; id: string; port: number } | { ok: false; reason: string }) => pendingOpen!(r), opening: () => pendingOpen !== undefined };
}

function sha256(b: Buffer): string {
  return createHash("sha256").update(b).digest("hex");
}


describe("voicemail deposit", () => {
  test("refused before the answer: no mailbox 480, no offer 488, no media 480; nothing left behind", async () => {
    const a = world(null);
    a.take(call());
    assert.deepEqual(a.rejected, [480]);
    assert.deepEqual(a.ended, [480]);
    const b = world();
    b.take(call(null));
    assert.deepEqual(b.rejected, [488]);
    assert.deepEqual(b.ended, [488]);
    const c = world({}, "fail");
    c.take(call());
    await until(() => c.ended.length === 1 || undefined, 2000, 5);
    assert.deepEqual(c.rejected, [480]);
    assert.deepEqual(c.ended, [480]);
    await until(() => c.files().length === 0 || undefined, 2000, 5); // the reserved message is released
    assert.equal(c.deposits.activeCount(), 0);
  });

  test("greeting → tone → recording with the mailbox's limits → stored → our BYE, media closed, ended once", async () => {
    const w = world({ maxMessageS: 60, silenceS: 4 });
    w.take(call());
    await until(() => w.answered() === 1 || undefined, 2000, 5);
    assert.deepEqual(w.log, [`play m1 ${GREETING_SOUND}`]);
    const ev = w.sessions.get("m1")!;
    ev.onPlayEnded?.(GREETING_SOUND);
    assert.equal(w.log.at(-1), `play m1 ${BEEP_SOUND}`);
    ev.onPlayEnded?.(BEEP_SOUND);
    assert.equal(w.log.at(-1), "record m1 max=60000 silence=4000 stop=#");
    w.uasEvents[0]!.onDigit?.("#"); // # by SIP INFO
    assert.ok(w.log.includes("stop-record m1"));
    await until(() => w.ended.length === 1 || undefined, 2000, 5);
    assert.deepEqual(w.ended, [undefined]);
    assert.equal(w.uas.hangups, 1);
    assert.ok(w.log.includes("close m1"));
    assert.equal(w.messages.length, 1);
    const list = w.store.list();
    assert.equal(list.length, 1);
    assert.equal(list[0]!.durationMs, 1500);
    assert.equal(list[0]!.caller, "+4930");
    assert.deepEqual(w.files().filter((f) => !f.endsWith(".wav") && !f.endsWith(".json") || f.includes("pending")), []);
    assert.equal(w.deposits.activeCount(), 0);
  });

  test("# during the greeting skips to the tone", async () => {
    const w = world();
    w.take(call());
    await until(() => w.answered() === 1 || undefined, 2000, 5);
    w.sessions.get("m1")!.onDigit?.("#");
    assert.equal(w.log.at(-1), `play m1 ${BEEP_SOUND}`);
    w.sessions.get("m1")!.onDigit?.("5");
    assert.equal(w.log.length, 2, "other digits do nothing");
  });

  test("the caller hangs up during the greeting: no message, nothing left, ended once", async () => {
    const w = world();
    w.take(call());
    await until(() => w.answered() === 1 || undefined, 2000, 5);
    w.uas.state = "ended";
    w.uasEvents[0]!.onEnded?.("bye");
    await until(() => w.ended.length === 1 || undefined, 2000, 5);
    await until(() => w.files().length === 0 || undefined, 2000, 5);
    assert.equal(w.store.list().length, 0);
    assert.ok(w.log.includes("close m1"));
  });

  test("the caller hangs up while recording: what was said is the message", async () => {
    const w = world();
    w.take(call());
    await until(() => w.answered() === 1 || undefined, 2000, 5);
    const ev = w.sessions.get("m1")!;
    ev.onPlayEnded?.(GREETING_SOUND);
    ev.onPlayEnded?.(BEEP_SOUND);
    w.uas.state = "ended";
    w.uasEvents[0]!.onEnded?.("bye");
    await until(() => w.ended.length === 1 || undefined, 2000, 5);
    assert.equal(w.store.list().length, 1);
    assert.equal(w.uas.hangups, 0, "no BYE of ours after theirs");
  });

  test("the caller cancels while the media session is being opened: closed when it opens, never answered, nothing left", async () => {
    const w = world({}, "manual");
    const pc = call();
    w.take(pc);
    await until(() => w.opening() || undefined, 2000, 2);
    pc.finished = true; // the proxy answered the CANCEL with 487
    w.deposits.leave(pc);
    w.openNow({ ok: true, id: "", port: 30000 });
    await until(() => w.log.includes("close m1") || undefined, 2000, 5);
    assert.equal(w.answered(), 0);
    assert.deepEqual(w.ended, [], "the engine finished the call itself");
    await until(() => w.files().length === 0 || undefined, 2000, 5);
    assert.equal(w.deposits.activeCount(), 0);
  });

  test("the caller cancels while the message is being reserved: no media session is opened, nothing left", async () => {
    const w = world({}, "manual");
    const pc = call();
    w.take(pc);
    pc.finished = true;
    w.deposits.leave(pc);
    await until(() => w.deposits.activeCount() === 0 || undefined, 2000, 2);
    await until(() => w.files().length === 0 || undefined, 2000, 5);
    assert.equal(w.opening(), false);
    assert.equal(w.answered(), 0);
  });

  test("a full mailbox: answered, the caller hears so, we hang up; nothing written", async () => {
    const w = world({ maxMessages: 1 });
    const r = await w.store.begin({ kind: "group", id: "sales" }, { caller: "x", callId: "y" });
    assert.ok(r.ok);
    const before = w.files();
    w.take(call());
    await until(() => w.answered() === 1 || undefined, 2000, 5);
    assert.deepEqual(w.log, [`play m1 ${FULL_SOUND}`]);
    w.sessions.get("m1")!.onPlayEnded?.(FULL_SOUND);
    await until(() => w.ended.length === 1 || undefined, 2000, 5);
    assert.equal(w.uas.hangups, 1);
    assert.deepEqual(w.files(), before);
    assert.ok(!w.log.some((l) => l.startsWith("record")));
  });

  test("prompts the worker cannot load are skipped: straight to the recording, never endless silence", async () => {
    const w = world({}, "ok", () => false);
    w.take(call());
    await until(() => w.answered() === 1 || undefined, 2000, 5);
    assert.deepEqual(w.log, ["record m1 max=120000 silence=10000 stop=#"]);
  });
});
