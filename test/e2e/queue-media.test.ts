// The queue end to end, heard and counted: the real agent with a console broker (Mosquitto),
// registered operator phones (callsim.ts) and trunk callers with their own RTP receivers
// (rtp-caller.ts). What each caller hears is decoded (G.711 A-law) and every file start (marker
// bit) is matched by correlation against the shipped or site-named source WAV:
// - position: three callers queue behind a busy operator and hear "you are caller number 1/2/3";
//   the third hangs up; the operator frees and gets the oldest caller (arrival order); at the
//   next periodic announcement the remaining caller hears that it is number 1; it is served next.
//   The figures (joined, answered with median/longest wait, abandoned, waiting) are then checked
//   in `ringedge status`, in the MQTT statistics and in the Prometheus metrics.
// - a site's own sounds: a group names its prompt by URL + SHA-256 (served by the test over
//   loopback HTTP, fetched and cached at apply time) and its music by file path; the caller hears
//   that prompt and then that music, and the maximum wait is counted. A site naming a broken WAV
//   or a URL with the wrong SHA-256 is refused at its JSON path and nothing changes.
// - a console push (MQTT) naming music by URL is acked only once the file is cached; bad ones
//   are rejected with the reason; restarted with the sound server gone, the agent plays the
//   sounds from its cache.
import assert from "node:assert/strict";
import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { after, afterEach, before, describe, test } from "node:test";
import { connect, type MqttClient } from "mqtt";
import { numberSound, POSITION_SOUND } from "../../agent/media/queue-position.ts";
import { sha256Of } from "../../agent/media/site-sounds.ts";
import { decodeWav, encodeWav } from "../../agent/media/wav.ts";
import type { RtpPacket } from "../../agent/media/rtp.ts";
import { busyPorts, freeMediaPorts } from "../media-ports.ts";
import { CallScene, TRUNK_CALLER_IP, startRoutingAgent, writeSiteFile, type Phone, type SimSite, SimRoster } from "./callsim.ts";
import { freePort, sleep, tempDir, until, type RunningAgent } from "./harness.ts";
import { ConsoleClient, desiredFrom } from "../../agent/sync/console-cli.ts";
import { startBroker, type Broker } from "./mosquitto.ts";
import { Caller, correlationAtStart, decodeStream, makeBusy, shippedSound } from "./rtp-caller.ts";

const UNIT = 200;
const SITE_ID = "queue-e2e";
const roster = new SimRoster({ callLimit: 1 });
const { users, devices } = roster;
const op1 = roster.add("op1", "3101");
const op2 = roster.add("op2", "3102");
const other = roster.add("x1", "3199");

const SOUNDS: Record<string, Int16Array> = {
  hold: shippedSound("hold.wav"),
  "queue-welcome": shippedSound("queue-welcome.wav"),
  [POSITION_SOUND]: shippedSound("queue-position.wav"),
  [numberSound(1)]: shippedSound("numbers/1.wav"),
  [numberSound(2)]: shippedSound("numbers/2.wav"),
  [numberSound(3)]: shippedSound("numbers/3.wav"),
};
// The site's own sounds: a prompt (a falling chirp) served over HTTP, music (a two-tone pattern) on disk.
const ownPrompt = Int16Array.from({ length: 8000 }, (_, i) => Math.round(7000 * Math.sin(2 * Math.PI * (900 - (500 * i) / 8000) * (i / 8000))));
const ownMusic = Int16Array.from({ length: 12000 }, (_, i) => Math.round(5000 * Math.sin((2 * Math.PI * (Math.floor(i / 1000) % 2 === 0 ? 523 : 659) * i) / 8000)));
SOUNDS.ownPrompt = ownPrompt;
SOUNDS.ownMusic = ownMusic;
const promptWav = encodeWav(ownPrompt);
const promptSha = sha256Of(promptWav);
/** Music a console push names by URL. */
const pushedWav = encodeWav(Int16Array.from({ length: 6000 }, (_, i) => Math.round(4000 * Math.sin((2 * Math.PI * 440 * i) / 8000))));
const pushedSha = sha256Of(pushedWav);
const pushedDecoded = decodeWav(pushedWav);
if (pushedDecoded.ok) SOUNDS.pushed = pushedDecoded.samples;

let agent: RunningAgent;
let broker: Broker;
let rec: MqttClient;
const statistics: Array<Record<string, any>> = [];
let mediaMin: number;
let http_: http.Server;
let base: string;
const siteDir = tempDir("ringedge-queue-site-");
const musicFile = path.join(siteDir, "own-music.wav");
fs.writeFileSync(musicFile, encodeWav(ownMusic));
const scene = new CallScene(() => agent);

let trunkPort = 0;
function site(ownSounds: Record<string, unknown>): SimSite {
  return {
    settings: { pickupCode: "*8", trunk: { host: "127.0.0.1", port: trunkPort, transport: "udp", allowedSources: [TRUNK_CALLER_IP] } },
    users,
    devices,
    groups: [
      { id: "hotline", number: "790", strategy: "sequential", members: ["op1"], ringCount: 2, noAnswer: { kind: "wait-for-operator", maxWaitS: 60, then: { kind: "hangup" }, announcePosition: true } },
      { id: "own", number: "792", strategy: "sequential", members: ["op2"], ringCount: 2, noAnswer: { kind: "wait-for-operator", maxWaitS: 4, then: { kind: "hangup", status: 480 }, ...ownSounds } },
    ],
  };
}
let siteFile = "";
let metricsPort = 0;
const agentSettings = (): Record<string, string> => ({
  RINGEDGE_METRICS_ENABLED: "true",
  RINGEDGE_METRICS_LISTEN: `127.0.0.1:${metricsPort}`,
  RINGEDGE_MEDIA_PORTS: `${mediaMin}-${mediaMin + 9}`,
  RINGEDGE_QUEUE_ANNOUNCEMENT_INTERVAL_S: "10",
  RINGEDGE_SITE_ID: SITE_ID,
  RINGEDGE_MQTT_URL: broker.url,
  RINGEDGE_STATS_INTERVAL_S: "1",
});
const OWN = { prompt: () => ({ url: `${base}/prompt.wav`, sha256: promptSha }), music: { path: musicFile } };

before(async () => {
  http_ = http.createServer((req, res) => {
    if (req.url === "/prompt.wav") res.writeHead(200, { "content-type": "audio/wav", "content-length": promptWav.length }).end(promptWav);
    else if (req.url === "/pushed.wav") {
      // Slow on purpose: the push's ack must wait for it.
      setTimeout(() => res.writeHead(200, { "content-type": "audio/wav", "content-length": pushedWav.length }).end(pushedWav), 400);
    } else res.writeHead(404).end();
  });
  await new Promise<void>((r) => http_.listen(0, "127.0.0.1", r));
  base = `http://127.0.0.1:${(http_.address() as AddressInfo).port}`;
  broker = await startBroker();
  rec = connect(broker.url, { protocolVersion: 5, clientId: `rec-${process.pid}`, reconnectPeriod: 50 });
  rec.on("message", (_t, buf) => statistics.push(JSON.parse(buf.toString()) as Record<string, any>));
  rec.on("error", () => undefined);
  await new Promise<void>((r) => rec.once("connect", () => r()));
  await rec.subscribeAsync(`ringedge/v1/${SITE_ID}/statistics`, { qos: 1 });
  mediaMin = (await freeMediaPorts(10)).min;
  trunkPort = await freePort();
  metricsPort = await freePort();
  siteFile = writeSiteFile(siteDir, site({ prompt: OWN.prompt(), music: OWN.music }));
  agent = await startRoutingAgent(siteFile, { ringUnitMs: UNIT, env: agentSettings() });
  await agent.waitForLog(/sound loaded sound=number-90/, 60_000);
  await agent.waitForLog(/sound loaded sound=site-music-own/, 60_000);
  await agent.waitForLog(/sound loaded sound=site-prompt-own/, 60_000);
});

after(async () => {
  await scene.close();
  await rec?.endAsync().catch(() => undefined);
  await broker?.stop();
  http_?.closeAllConnections();
  if (http_?.listening) await new Promise<void>((r) => http_.close(() => r()));
});

const held: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const release of held.splice(0)) await release();
});
const busy = (opPhone: Phone, caller: Phone, ext: string): Promise<{ free(): Promise<number> }> => makeBusy(opPhone, caller, ext, held);

/**
 * Which source file starts at each marker bit of the received stream (best correlation over up
 * to 0.5 s from the file's start, at least 0.9), with the time in seconds from the first packet.
 * A marker after a timestamp gap (frames the appliance skipped after a stall of this shared
 * machine, plane.ts) may stand for a file that started inside the gap: every frame of the gap
 * is tried as its start (the correlation counts received samples only); when none matches, the
 * marker only marks the stall. Any other marker that starts no file is listed as unknown.
 */
function fileStarts(pk: readonly RtpPacket[], candidates: readonly string[]): Array<{ sound: string; at: number; r: number }> {
  const { samples, got } = decodeStream(pk, "PCMA");
  const start = pk[0]!.timestamp;
  const out: Array<{ sound: string; at: number; r: number }> = [];
  pk.forEach((p, i) => {
    if (!p.marker) return;
    const at = (p.timestamp - start) >>> 0;
    const prevEnd = i > 0 ? ((pk[i - 1]!.timestamp - start) >>> 0) + 160 : at;
    const afterGap = at > prevEnd;
    let best = { sound: "?", at, r: 0 };
    for (let from = afterGap ? prevEnd : at; from <= at; from += 160) {
      for (const name of candidates) {
        const ref = SOUNDS[name]!;
        const n = Math.min(ref.length, 4000);
        if (from + n > samples.length) continue;
        const r = correlationAtStart(samples.subarray(from, from + n), got.subarray(from, from + n), ref.subarray(0, n));
        if (r > best.r) best = { sound: name, at: from, r };
      }
    }
    if (best.r >= 0.9) out.push({ sound: best.sound, at: best.at / 8000, r: best.r });
    else if (!afterGap) out.push({ sound: `?${best.sound}:${best.r.toFixed(2)}`, at: at / 8000, r: best.r });
  });
  return out;
}

const POSITION_SET = ["hold", "queue-welcome", POSITION_SOUND, numberSound(1), numberSound(2), numberSound(3)];
const names = (s: Array<{ sound: string }>): string[] => s.map((x) => x.sound);

/** Waits until the caller has heard `seconds` of audio from the appliance; its packets. */
async function heard(c: Caller, source: string, seconds: number): Promise<RtpPacket[]> {
  return until(() => {
    const pk = c.from(source);
    return (pk.length > 0 && ((pk.at(-1)!.timestamp - pk[0]!.timestamp) >>> 0) >= seconds * 8000 && pk) || undefined;
  }, 30_000, 20);
}

describe("queue position announcements", () => {
  test("callers hear their place (1, 2, 3); served oldest first; the remaining caller hears it moved up; the figures follow", async () => {
    const [p1, px] = await scene.register([op1, other]);
    const op = await busy(p1!, px!, "3101");
    const callers: Caller[] = [];
    try {
      const sources: string[] = [];
      for (let i = 0; i < 3; i++) {
        const c = await Caller.open(agent.port);
        callers.push(c);
        c.invite("790");
        sources.push((await c.progress(10_000)).source);
        // Each caller is queued (and hears its number) before the next one calls.
        await heard(c, sources[i]!, 2.8);
      }
      const [a, b, c] = callers as [Caller, Caller, Caller];
      for (const [i, who] of callers.entries()) {
        const starts = fileStarts(who.from(sources[i]!), POSITION_SET);
        assert.deepEqual(names(starts).slice(0, 3), [POSITION_SOUND, numberSound(i + 1), "hold"], `caller ${i + 1} heard ${JSON.stringify(starts)}`);
        assert.equal(starts[0]!.at, 0, "the position is the first thing heard (no prompt configured)");
      }
      // The third caller hangs up: abandoned.
      await c.cancel();
      // The operator frees: the oldest caller, A, is offered — not B.
      assert.equal(await op.free(), 200);
      const offered = await until(() => p1!.invitesOf(a.callId)[0], 10_000, 5);
      assert.ok(offered);
      await sleep(300);
      assert.equal(p1!.invitesOf(b.callId).length, 0, "B waits: A came first");
      p1!.answerNow(a.callId);
      const okA = await until(() => a.first(200), 10_000, 2);
      a.ack(okA.msg);
      // B's periodic announcement (10 s after its music started): the queue prompt, then its
      // place, now number 1.
      const pkB = await heard(b, sources[1]!, 18);
      const startsB = fileStarts(pkB, POSITION_SET);
      assert.deepEqual(names(startsB).slice(0, 7), [POSITION_SOUND, numberSound(2), "hold", "queue-welcome", POSITION_SOUND, numberSound(1), "hold"], `B heard ${JSON.stringify(startsB)}`);
      const again = startsB[3]!.at;
      assert.ok(Math.abs(startsB[4]!.at - again - SOUNDS["queue-welcome"]!.length / 8000) < 0.03, "the place follows the prompt's end");
      assert.ok(again > 9.5 && again < 10.8, `the announcement again after 10 s: ${again}`);
      // A's call ends; the operator gets B.
      a.bye();
      await until(() => p1!.byes.some((x) => x.callId === a.callId) || undefined, 10_000, 5);
      await until(() => p1!.invitesOf(b.callId)[0], 10_000, 5);
      p1!.answerNow(b.callId);
      const okB = await until(() => b.first(200), 10_000, 2);
      b.ack(okB.msg);
      await until(async () => (await busyPorts(mediaMin, mediaMin + 9)).length === 0 || undefined, 5000, 20);
      b.bye();
      await until(() => p1!.byes.some((x) => x.callId === b.callId) || undefined, 10_000, 5);

      // ringedge status: the figures since start.
      const st = await agent.cli(["status", "--json"]);
      assert.equal(st.code, 0, st.stderr);
      const q = (JSON.parse(st.stdout).routing.queues as Array<Record<string, any>>).find((x) => x.groupId === "hotline")!;
      assert.deepEqual({ ...q, waitMedianMs: undefined, waitMaxMs: undefined }, { groupId: "hotline", waiting: 0, joined: 3, answered: 2, abandoned: 1, timedOut: 0, waitMedianMs: undefined, waitMaxMs: undefined });
      assert.ok(q.waitMaxMs > 15_000 && q.waitMaxMs < 40_000, `B waited ${q.waitMaxMs} ms`);
      // The median of two waits is their mean: A waited from its call to the operator's answer.
      assert.ok(q.waitMedianMs > q.waitMaxMs / 2 && q.waitMedianMs < q.waitMaxMs, `median of A's and B's waits: ${q.waitMedianMs}`);
      const text = await agent.cli(["status"]);
      assert.match(text.stdout, /^queue {4}hotline {2}waiting 0 {2}joined 3 {2}answered 2 \(wait median [\d.]+s max [\d.]+s\) {2}abandoned 1 {2}max wait 0$/m);
      // MQTT: the intervals' figures add up to the same.
      const sum = await until(() => {
        const rows = statistics.flatMap((s) => ((s.queues ?? []) as Array<Record<string, any>>).filter((x) => x.groupId === "hotline"));
        const t = { joined: 0, answered: 0, abandoned: 0, timedOut: 0, waitMaxMs: 0 };
        for (const r of rows) {
          t.joined += r.joined;
          t.answered += r.answered;
          t.abandoned += r.abandoned;
          t.timedOut += r.timedOut;
          t.waitMaxMs = Math.max(t.waitMaxMs, r.waitMaxMs ?? 0);
        }
        return (t.answered === 2 && t) || undefined;
      }, 10_000, 50);
      assert.deepEqual(sum, { joined: 3, answered: 2, abandoned: 1, timedOut: 0, waitMaxMs: q.waitMaxMs });
      // Metrics: the same calls leaving, and the answered waits.
      const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      assert.match(metrics, /^ringedge_queue_left_total\{group="hotline",reason="answered"\} 2$/m);
      assert.match(metrics, /^ringedge_queue_left_total\{group="hotline",reason="abandoned"\} 1$/m);
      assert.match(metrics, /^ringedge_queue_wait_seconds_count\{group="hotline"\} 2$/m);
      assert.match(metrics, /^ringedge_queue_waiting\{group="hotline"\} 0$/m);
    } finally {
      for (const c of callers) c.close();
    }
  });
});

/** Operator 2 busy (3102), then a trunk call to the "own" queue (792): the caller, and the source of its early media. */
async function callOwnQueue(): Promise<{ caller: Caller; source: string }> {
  const [p2, px] = await scene.register([op2, other]);
  await busy(p2!, px!, "3102");
  const caller = await Caller.open(agent.port);
  try {
    caller.invite("792");
    return { caller, source: (await caller.progress(10_000)).source };
  } catch (e) {
    caller.close();
    throw e;
  }
}

describe("a site's own queue sounds", () => {
  test("the prompt fetched by URL (SHA-256 checked, cached) and the music from the site's file are what the caller hears; the maximum wait is counted", async () => {
    assert.deepEqual(fs.readFileSync(path.join(agent.dataDir, "sounds", `${promptSha}.wav`)), promptWav, "cached under the data directory");
    const { caller, source } = await callOwnQueue();
    try {
      const pk = await heard(caller, source, 2.6);
      const starts = fileStarts(pk, ["hold", POSITION_SOUND, "ownPrompt", "ownMusic"]);
      assert.deepEqual(names(starts).slice(0, 2), ["ownPrompt", "ownMusic"], JSON.stringify(starts));
      assert.ok(starts[0]!.r > 0.99 && starts[1]!.r > 0.99, JSON.stringify(starts));
      assert.ok(Math.abs(starts[1]!.at - 1) < 0.03, `the music follows the 1 s prompt: ${starts[1]!.at}`);
      const final = await until(() => caller.responses.find((r) => r.msg.status! >= 300), 15_000, 10);
      assert.equal(final.msg.status, 480);
      const st = await agent.cli(["status", "--json"]);
      const q = (JSON.parse(st.stdout).routing.queues as Array<Record<string, any>>).find((x) => x.groupId === "own")!;
      assert.equal(q.timedOut, 1);
      assert.equal(q.answered, 0);
      assert.equal(q.waitMaxMs, null);
    } finally {
      caller.close();
    }
  });

  test("a site naming a broken WAV, or a URL whose content has another SHA-256, is refused at the sound's path; nothing changes", async () => {
    const before = JSON.parse((await agent.cli(["status", "--json"])).stdout).site.version as number;
    const broken = path.join(siteDir, "broken.wav");
    fs.writeFileSync(broken, "RIFF....WAVEfmt but nothing a player could use");
    for (const [own, at, why] of [
      [{ music: { path: broken } }, "groups[1].noAnswer.music.path", /not a WAV file the media plane plays/],
      [{ prompt: { url: `${base}/prompt.wav`, sha256: "e".repeat(64) } }, "groups[1].noAnswer.prompt.url", /has SHA-256 [0-9a-f]{64}, not the e{64}/],
      [{ prompt: { url: `${base}/nothing-here.wav`, sha256: "d".repeat(64) } }, "groups[1].noAnswer.prompt.url", /HTTP 404/],
    ] as const) {
      const file = writeSiteFile(tempDir("ringedge-queue-bad-"), site(own), before + 1);
      const r = await agent.cli(["site", "apply", file]);
      assert.notEqual(r.code, 0, r.stdout);
      assert.ok(r.stderr.includes(at) || r.stdout.includes(at), `${at}: ${r.stdout}${r.stderr}`);
      assert.match(r.stdout + r.stderr, why);
      assert.equal(JSON.parse((await agent.cli(["status", "--json"])).stdout).site.version, before, "nothing applied");
    }
  });
});

describe("a console push naming a sound by URL", () => {
  test("acked applied only once the sound is fetched, verified and cached; a wrong SHA-256 or an unreachable URL is rejected with the reason at its path", async () => {
    const console_ = await ConsoleClient.connect({ url: broker.url, consoleId: "queue-test" });
    try {
      let version = JSON.parse((await agent.cli(["status", "--json"])).stdout).site.version as number;
      const push = async (own: Record<string, unknown>): Promise<{ ack: Awaited<ReturnType<ConsoleClient["pushDesired"]>>; ms: number }> => {
        version++;
        const doc = JSON.parse(fs.readFileSync(writeSiteFile(tempDir("ringedge-queue-push-"), site(own), version), "utf8")) as unknown;
        const d = desiredFrom(SITE_ID, doc);
        assert.ok(d.ok, JSON.stringify(d));
        const t0 = performance.now();
        const ack = await console_.pushDesired(SITE_ID, d.desired, d.version, 20_000);
        return { ack, ms: performance.now() - t0 };
      };
      const cached = path.join(agent.dataDir, "sounds", `${pushedSha}.wav`);
      assert.equal(fs.existsSync(cached), false);
      const good = await push({ music: { url: `${base}/pushed.wav`, sha256: pushedSha }, prompt: OWN.prompt() });
      assert.equal(good.ack.status, "applied", JSON.stringify(good.ack));
      assert.ok(good.ms >= 400, `the ack waited for the fetch (${good.ms.toFixed(0)} ms)`);
      assert.deepEqual(fs.readFileSync(cached), pushedWav, "in place when acked");
      await agent.waitForLog(/sound loaded sound=site-music-own frames=38/, 10_000);

      const wrong = await push({ music: { url: `${base}/pushed.wav`, sha256: "a".repeat(64) } });
      assert.equal(wrong.ack.status, "rejected");
      assert.deepEqual(wrong.ack.errors.map((e) => e.path), ["config.groups[1].noAnswer.music.url"], "the path within the desired envelope");
      assert.match(wrong.ack.errors[0]!.message, new RegExp(`has SHA-256 ${pushedSha}, not the a{64}`));
      const gone = await push({ prompt: { url: `http://127.0.0.1:${await freePort()}/p.wav`, sha256: "b".repeat(64) } });
      assert.equal(gone.ack.status, "rejected");
      assert.match(gone.ack.errors[0]!.message, /cannot fetch .*ECONNREFUSED/);
      assert.equal(JSON.parse((await agent.cli(["status", "--json"])).stdout).site.version, version - 2, "the rejected pushes changed nothing");
      assert.ok(fs.existsSync(cached), "the applied site's sound stays cached");
    } finally {
      await console_.close();
    }
  });

  test("restarted while the server of its sounds is gone: the queue plays them from the cache", async () => {
    http_.closeAllConnections();
    await new Promise<void>((r) => http_.close(() => r()));
    const dataDir = agent.dataDir;
    await agent.stop();
    agent = await startRoutingAgent(siteFile, { ringUnitMs: UNIT, dataDir, env: agentSettings() });
    await agent.waitForLog(/sound loaded sound=site-music-own frames=38/, 60_000);
    await agent.waitForLog(/sound loaded sound=site-prompt-own/, 60_000);
    const { caller, source } = await callOwnQueue();
    try {
      const starts = fileStarts(await heard(caller, source, 1.8), ["hold", "ownPrompt", "ownMusic", "pushed"]);
      assert.deepEqual(names(starts).slice(0, 2), ["ownPrompt", "pushed"], JSON.stringify(starts));
      await caller.cancel();
    } finally {
      caller.close();
    }
  });
});
