// The console's side of voicemail over a real broker (mosquitto): a message left in a mailbox
// reaches the console as a `voicemail.message` event, and the console downloads the recording
// with cmd/voicemail-fetch in chunks — each chunk's SHA-256 and the whole file's checked, the
// reassembled WAV byte for byte the stored one (also with `ringedge console voicemail-fetch`).
// A damaged recording and bad arguments get an error reply and no audio.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { connect, type MqttClient } from "mqtt";
import { EventBus } from "../../agent/bus.ts";
import { createLogger } from "../../agent/log.ts";
import { encodeWav } from "../../agent/media/wav.ts";
import { MAILBOX_DEFAULTS } from "../../agent/routing/model.ts";
import { SiteService } from "../../agent/site/site.ts";
import { Store } from "../../agent/store/store.ts";
import { MqttSync, siteApplier } from "../../agent/sync/mqtt-sync.ts";
import { siteTopic } from "../../agent/sync/topics.ts";
import { fetchRecording } from "../../agent/voicemail/fetch.ts";
import { VoicemailStore } from "../../agent/voicemail/store.ts";
import { startBroker, type Broker } from "./mosquitto.ts";
import { agentEnv, runCli, tempDir, until } from "./harness.ts";

const SITE = "site-vm";
let broker: Broker;
let store: Store;
let sync: MqttSync;
let vm: VoicemailStore;
let consoleClient: MqttClient;
const bus = new EventBus();
const inbox: Array<{ topic: string; payload: Record<string, unknown>; correlation: string | undefined }> = [];

before(async () => {
  broker = await startBroker();
  const dataDir = tempDir("ringedge-vm-console-");
  store = await Store.open(dataDir, { siteId: SITE, saveDelayMs: 1 });
  const site = new SiteService({ store, bus });
  site.start();
  vm = new VoicemailStore({ dataDir, mailbox: (o) => (o.id === "sales" ? { enabled: true, ...MAILBOX_DEFAULTS } : undefined), bus });
  vm.start();
  sync = new MqttSync({
    siteId: SITE,
    url: broker.url,
    dataDir,
    statsIntervalS: 3600,
    outboxMax: 1000,
    bus,
    site: siteApplier(site),
    status: () => ({ siteId: SITE }),
    presence: () => [],
    log: createLogger("silent"),
    timers: { publishTimeoutMs: 2000, reconnectMinMs: 50, reconnectMaxMs: 400, connectTimeoutMs: 2000, presenceDebounceMs: 20, consoleBirthJitterMs: 100 },
  });
  sync.setVoicemailFetchHandler((args) => fetchRecording(vm, args));
  sync.start();
  consoleClient = connect(broker.url, { protocolVersion: 5, clientId: "console-vm", reconnectPeriod: 50 });
  consoleClient.on("message", (topic, buf, packet) => {
    const c = packet.properties?.correlationData;
    inbox.push({ topic, payload: JSON.parse(buf.toString()) as Record<string, unknown>, correlation: c === undefined ? undefined : Buffer.from(c).toString() });
  });
  await new Promise<void>((resolve) => consoleClient.once("connect", () => resolve()));
  await consoleClient.subscribeAsync([siteTopic(SITE, "events"), `ringedge/v1/${SITE}/reply/console-vm`], { qos: 1 });
  await until(() => sync.syncStatus().connected || undefined, 10_000, 20);
});

after(async () => {
  await consoleClient?.endAsync();
  await sync?.stop();
  vm?.stop();
  await store?.close();
  await broker?.stop();
});

let seq = 0;
async function command(args: Record<string, unknown>): Promise<Record<string, unknown>> {
  const correlation = `c${++seq}`;
  await consoleClient.publishAsync(`ringedge/v1/${SITE}/cmd/voicemail-fetch`, JSON.stringify({ args }), { qos: 1, properties: { responseTopic: `ringedge/v1/${SITE}/reply/console-vm`, correlationData: Buffer.from(correlation) } });
  return (await until(() => inbox.find((m) => m.correlation === correlation), 10_000, 10)).payload;
}

describe("voicemail towards the console over MQTT", () => {
  test("a message left → voicemail.message event → the recording fetched in checked chunks equals the stored file", async () => {
    const b = await vm.begin({ kind: "group", id: "sales" }, { caller: "+4930555111", callId: "vm-1@trunk" });
    assert.ok(b.ok);
    // 40 s of audio: 640 KB, three chunks.
    const wav = encodeWav(Int16Array.from({ length: 40 * 8000 }, (_, i) => Math.round(6000 * Math.sin(i / 5))));
    fs.writeFileSync(b.pending.finalPath, wav);
    const m = (await vm.complete(b.pending, { samples: 40 * 8000, bytes: wav.length, sha256: createHash("sha256").update(wav).digest("hex") }))!;
    bus.emit("voicemail.message", { id: m.id, mailbox: { kind: "group", id: "sales" }, caller: m.caller, callId: m.callId, receivedAt: m.receivedAt, durationMs: m.durationMs, bytes: m.bytes, sha256: m.sha256, at: Date.now() });
    const event = await until(() => inbox.find((x) => x.topic.endsWith("/events") && x.payload.type === "voicemail.message"), 10_000, 10);
    const data = event.payload.data as Record<string, unknown>;
    assert.deepEqual(data, { id: m.id, mailbox: "group/sales", caller: "+4930555111", callId: "vm-1@trunk", receivedAt: m.receivedAt, durationMs: 40_000, bytes: wav.length, sha256: m.sha256 });

    const parts: Buffer[] = [];
    let offset = 0;
    for (let i = 0; i < 10; i++) {
      const reply = await command({ id: data.id, offset });
      assert.equal(reply.status, "ok", JSON.stringify(reply).slice(0, 500));
      const r = reply.result as { data: string; chunkSha256: string; sha256: string; bytes: number; offset: number; done: boolean };
      const chunk = Buffer.from(r.data, "base64");
      assert.equal(createHash("sha256").update(chunk).digest("hex"), r.chunkSha256);
      assert.equal(r.sha256, data.sha256);
      assert.equal(r.offset, offset);
      parts.push(chunk);
      offset += chunk.length;
      if (r.done) break;
    }
    assert.ok(parts.length >= 3, `${parts.length} chunks`);
    const whole = Buffer.concat(parts);
    assert.equal(createHash("sha256").update(whole).digest("hex"), data.sha256);
    assert.ok(whole.equals(wav));

    // The reference console CLI does the same and writes the file only once it is verified.
    const out = path.join(tempDir("ringedge-vm-fetch-"), "m.wav");
    const env = agentEnv(tempDir("ringedge-vm-cli-"), 5060);
    const r = await runCli(["console", "voicemail-fetch", SITE, String(data.id), "--out", out, "--url", broker.url], env);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(fs.readFileSync(out).equals(wav));
    const again = await runCli(["console", "voicemail-fetch", SITE, String(data.id), "--out", out, "--url", broker.url], env);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /not overwritten/);
  });

  test("bad arguments and a damaged recording get an error reply and no audio", async () => {
    const bad = await command({ id: "../../etc/passwd" });
    assert.equal(bad.status, "error");
    assert.equal(bad.result, undefined);
    const [m] = vm.list();
    assert.ok(m);
    const file = vm.audioPath(m);
    const bytes = fs.readFileSync(file);
    bytes[1000] = (bytes[1000] ?? 0) ^ 0x40;
    fs.writeFileSync(file, bytes);
    const damaged = await command({ id: m.id });
    assert.equal(damaged.status, "error");
    assert.match(JSON.stringify(damaged.errors), /damaged/);
    assert.equal(damaged.result, undefined);
  });
});
