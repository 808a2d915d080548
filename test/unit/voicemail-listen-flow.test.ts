// The listening flow (voicemail/listen.ts) over fakes of the proxy, the UAS dialog and the media
// service, with a real mailbox store holding a real message: what is refused before the answer,
// the summary → message → options sequence, digits by RFC 4733 (media) and SIP INFO (dialog)
// applied to the store (voicemail.changed follows), a digit that means nothing leaving the
// goodbye alone, options unanswered, the caller hanging up mid-message (the message stays new),
// and that every path closes its media session and drops the message from the worker.
import { describe, test } from "node:test";
import { createHash } from "node:crypto";
import assert from "node:assert/strict";
import fs from "node:fs";
import { EventBus, type AgentEvents } from "../../agent/bus.ts";
import { createLogger } from "../../agent/log.ts";
import { MAILBOX_DEFAULTS } from "../../agent/routing/model.ts";
import { parseDatagram } from "../../agent/sip/message.ts";
import type { ProxyCall } from "../../agent/sip/proxy-types.ts";
import type { SessionEvents } from "../../agent/media/service.ts";
import { fakeAnswering } from "./fakes.ts";
import { encodeWav } from "../../agent/media/wav.ts";
import { validCommand } from "../../agent/media/protocol.ts";
import { VoicemailListening } from "../../agent/voicemail/listen.ts";
import { VoicemailStore } from "../../agent/voicemail/store.ts";
import { until } from "../e2e/harness.ts";
import { removeTempDir, tempDir } from "../tmpdir.ts";

const FLOW = { transport: "udp" as const, remoteAddress: "192.0.2.7", remotePort: 5062, localAddress: "127.0.0.1", localPort: 5060 };
const SDP = "v=0\r\no=- 1 1 IN IP4 192.0.2.7\r\ns=-\r\nc=IN IP4 192.0.2.7\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";
const ANNA = { kind: "user" as const, id: "anna" };

let n = 0;
function call(body: string | null = SDP): ProxyCall & { finished: boolean } {
  const b = body ?? "";
  const text = ["INVITE sip:*97@127.0.0.1 SIP/2.0", `Via: SIP/2.0/UDP 192.0.2.7:5062;branch=z9hG4bKl${++n}`, "Max-Forwards: 70", "From: <sip:anna@192.0.2.7>;tag=c1", "To: <sip:*97@127.0.0.1>", `Call-ID: lis-${n}@test`, "CSeq: 2 INVITE", "Contact: <sip:anna@192.0.2.7:5062>", ...(body !== null ? ["Content-Type: application/sdp"] : []), `Content-Length: ${Buffer.byteLength(b)}`, "", b].join("\r\n");
  const r = parseDatagram(Buffer.from(text));
  assert.ok(r.ok && r.message.kind === "request");
  return { id: `pc${n}`, request: r.message, flow: FLOW, receivedAt: 0, firstForkAt: undefined, branches: [], answered: undefined, finished: false };
}

async function world(opts: { messages?: number; optionsWaitMs?: number; maxListenMs?: number } = {}) {
  const dataDir = tempDir("ringedge-listen-");
  const bus = new EventBus();
  const changed: Array<AgentEvents["voicemail.changed"]> = [];
  bus.on("voicemail.changed", (e) => changed.push(e));
  const mailbox = (o: { kind: string; id: string }) => (o.id === "anna" ? { enabled: true, ...MAILBOX_DEFAULTS } : undefined);
  const store = new VoicemailStore({ dataDir, mailbox, bus });
  store.start();
  for (let i = 0; i < (opts.messages ?? 1); i++) {
    const b = await store.begin(ANNA, { caller: "+4930", callId: `c${i}` });
    assert.ok(b.ok);
    const wav = encodeWav(new Int16Array(8000).fill(500));
    fs.writeFileSync(b.pending.finalPath, wav);
    await store.complete(b.pending, { samples: 8000, bytes: wav.length, sha256: createHash("sha256").update(wav).digest("hex") });
  }
  changed.length = 0;
  const log: string[] = [];
  const sessions = new Map<string, SessionEvents>();
  const media = {
    has: () => true,
    load: async (sound: string, file: string) => {
      if (sound.startsWith("vm-listen-")) log.push(`load ${fs.existsSync(file) ? "message" : "missing"}`);
      return { ok: true as const };
    },
    openSession: async (_req: unknown, ev: SessionEvents) => {
      sessions.set("m1", ev);
      return { ok: true as const, id: "m1", port: 30000 };
    },
    sequence: (_id: string, sounds: string[]) => log.push(sounds.map((s) => (s.startsWith("vm-listen-") ? "MESSAGE" : s)).join(" ")),
    stopPlaying: () => log.push("stop"),
    close: (id: string) => {
      log.push(`close ${id}`);
      sessions.delete(id);
    },
    unload: (sound: string) => log.push(`unload ${sound.startsWith("vm-listen-") ? "message" : sound}`),
  };
  const answering = fakeAnswering();
  const { rejected, call: uas } = answering;
  const listening = new VoicemailListening({
    proxy: answering.proxy,
    uas: answering.uas,
    media: media as never,
    store,
    mediaAddress: () => "127.0.0.1",
    contact: () => "<sip:127.0.0.1:5060>",
    shippedAudio: (f) => f,
    log: createLogger("silent"),
    ...(opts.optionsWaitMs !== undefined ? { optionsWaitMs: opts.optionsWaitMs } : {}),
    ...(opts.maxListenMs !== undefined ? { maxListenMs: opts.maxListenMs } : {}),
  });
  const ev = () => sessions.get("m1") ?? [...sessions.values()][0]!;
  /** The worker reports the end of the last sound of what it was last told to play. */
  const ended = (): void => {
    const last = log.filter((l) => !/^(stop|close|load|unload)/.test(l)).at(-1)!.split(" ").at(-1)!;
    ev().onPlayEnded?.(last === "MESSAGE" ? [...(listening as unknown as { active: Map<string, { msgSound: string }> }).active.values()][0]!.msgSound : last);
  };
  const cleanup = () => {
    store.stop();
    removeTempDir(dataDir);
  };
  return { store, changed, log, listening, rejected, uas, uasEvents: () => answering.events.at(-1)!, ev, ended, cleanup };
}

const settle = () => new Promise((r) => setImmediate(r));

describe("listening flow", () => {
  test("no usable offer: 488 before anything is opened", async () => {
    const w = await world();
    w.listening.take(call(null), [ANNA]);
    assert.deepEqual(w.rejected, [488]);
    assert.deepEqual(w.log, []);
    assert.equal(w.listening.activeCount(), 0);
    w.cleanup();
  });

  test("summary, the message, options; 5 is invalid; 3 (RFC 4733) deletes it and the lamp's counts follow; then no more, goodbye, BYE", async () => {
    const w = await world();
    w.listening.take(call(), [ANNA]);
    await until(() => w.log.length > 0 || undefined, 2000, 2);
    assert.deepEqual(w.log, ["vm-you-have number-1 vm-new-message"]);
    w.ended();
    await until(() => w.log.includes("MESSAGE") || undefined, 2000, 2);
    assert.deepEqual(w.log.slice(1), ["load message", "MESSAGE"]);
    w.ended();
    assert.equal(w.log.at(-1), "vm-options");
    await until(() => w.changed.length === 1 || undefined, 2000, 2);
    assert.deepEqual({ n: w.changed[0]!.newMessages, o: w.changed[0]!.oldMessages }, { n: 0, o: 1 }, "played to its end: heard and kept");
    w.ev().onDigit?.("5");
    assert.deepEqual(w.log.slice(-2), ["stop", "vm-invalid"], "an invalid digit: what plays stops, the invalid-choice prompt");
    w.ended();
    assert.equal(w.log.at(-1), "vm-options", "then the options again");
    w.ev().onDigit?.("3");
    assert.deepEqual(w.log.slice(-2), ["stop", "vm-msg-deleted"]);
    await until(() => w.changed.length === 2 || undefined, 2000, 2);
    assert.deepEqual({ n: w.changed[1]!.newMessages, o: w.changed[1]!.oldMessages }, { n: 0, o: 0 });
    assert.deepEqual(w.store.list(), []);
    w.ended();
    assert.equal(w.log.at(-1), "vm-no-more");
    w.ended();
    assert.equal(w.log.at(-1), "vm-goodbye");
    // A digit now means nothing: the goodbye is not cut.
    w.ev().onDigit?.("3");
    w.uasEvents().onDigit?.("#");
    assert.equal(w.log.at(-1), "vm-goodbye");
    assert.equal(w.uas.hangups, 0);
    w.ended();
    assert.equal(w.uas.hangups, 1, "our BYE");
    assert.deepEqual(w.log.slice(-2), ["close m1", "unload message"]);
    assert.equal(w.listening.activeCount(), 0);
    w.cleanup();
  });

  test("SIP INFO digits: 1 during the summary starts the message, 2 saves it; * ends", async () => {
    const w = await world({ messages: 2 });
    w.listening.take(call(), [ANNA]);
    await until(() => w.log.length > 0 || undefined, 2000, 2);
    assert.equal(w.log[0], "vm-you-have number-2 vm-new-messages");
    w.uasEvents().onDigit?.("9");
    assert.equal(w.log.length, 1, "a digit the summary takes no notice of leaves it playing");
    w.uasEvents().onDigit?.("1");
    await until(() => w.log.includes("MESSAGE") || undefined, 2000, 2);
    w.uasEvents().onDigit?.("2");
    assert.deepEqual(w.log.slice(-2), ["stop", "vm-msg-saved"]);
    await until(() => w.changed.length === 1 || undefined, 2000, 2);
    assert.deepEqual(w.store.list().map((m) => m.status), ["saved", "new"]);
    w.uasEvents().onDigit?.("*");
    assert.equal(w.log.at(-1), "vm-goodbye");
    w.ended();
    assert.equal(w.uas.hangups, 1);
    w.cleanup();
  });

  test("options unanswered: repeated, then goodbye and BYE", async () => {
    const w = await world({ optionsWaitMs: 5 });
    w.listening.take(call(), [ANNA]);
    await until(() => w.log.length > 0 || undefined, 2000, 2);
    w.ended();
    await until(() => w.log.includes("MESSAGE") || undefined, 2000, 2);
    w.ended();
    for (let i = 0; i < 3; i++) {
      w.ended(); // the options prompt ended: the wait starts
      await until(() => w.log.at(-1) !== "vm-options" || w.log.filter((l) => l === "vm-options").length > i + 1 || undefined, 2000, 1);
    }
    assert.equal(w.log.filter((l) => l === "vm-options").length, 3);
    assert.equal(w.log.at(-1), "vm-goodbye");
    w.ended();
    assert.equal(w.uas.hangups, 1);
    w.cleanup();
  });

  test("the caller hangs up mid-message: it stays new, the session is closed", async () => {
    const w = await world();
    w.listening.take(call(), [ANNA]);
    await until(() => w.log.length > 0 || undefined, 2000, 2);
    w.ended();
    await until(() => w.log.includes("MESSAGE") || undefined, 2000, 2);
    w.uasEvents().onEnded?.("bye");
    await settle();
    assert.deepEqual(w.store.list().map((m) => m.status), ["new"]);
    assert.deepEqual(w.log.slice(-2), ["close m1", "unload message"]);
    assert.equal(w.listening.activeCount(), 0);
    assert.equal(w.changed.length, 0);
    w.cleanup();
  });

  test("a prompt whose end never comes: the call ends at its maximum length with our BYE", async () => {
    const w = await world({ maxListenMs: 30 });
    w.listening.take(call(), [ANNA]);
    await until(() => w.uas.hangups === 1 || undefined, 2000, 2);
    assert.deepEqual(w.log.slice(-2), ["close m1", "unload message"]);
    assert.equal(w.listening.activeCount(), 0);
    w.cleanup();
  });

  test("the media worker's command check takes unload with a sound name only", () => {
    assert.equal(validCommand({ op: "unload", sound: "vm-listen-1" }), true);
    assert.equal(validCommand({ op: "unload" }), false);
    assert.equal(validCommand({ op: "unload", sound: 7 }), false);
  });
});
