// Console sync against a real Mosquitto on a free loopback port. In-process agents (real Store,
// SiteService and MqttSync, each with its own data dir) cover the protocol, hostile input and
// broker crashes; a real agent child process covers SIGKILL/restart and the last will.
import { after, before, describe, it, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { connect, type MqttClient } from "mqtt";
import { EventBus } from "../../agent/bus.ts";
import { createLogger } from "../../agent/log.ts";
import { Store } from "../../agent/store/store.ts";
import { SiteService } from "../../agent/site/site.ts";
import { MqttSync, siteApplier, configHash, type AckPayload } from "../../agent/sync/mqtt-sync.ts";
import { ConsoleClient, consoleCommand } from "../../agent/sync/console-cli.ts";
import { siteTopic } from "../../agent/sync/topics.ts";
import { startBroker, mosquittoAvailable, type Broker } from "./mosquitto.ts";
import { desiredEnvelope, siteSnapshot } from "./mqtt-fixtures.ts";
import { tempDir, until, sleep, startAgent, runCli, agentEnv, freePort, type RunningAgent } from "./harness.ts";

// Mosquitto is a real peer these tests need: `make test` installs it (sysdeps). Missing, the
// suite fails saying so — it is never skipped.
test("mosquitto is installed (make sysdeps installs the Debian package)", () => {
  assert.ok(mosquittoAvailable(), "mosquitto not found on PATH or in /usr/sbin: run `make sysdeps` (apt-get install mosquitto)");
});
const quiet = createLogger(process.env.SYNC_TEST_LOG ? "debug" : "silent");

interface LocalAgent {
  siteId: string;
  dataDir: string;
  bus: EventBus;
  store: Store;
  site: SiteService;
  sync: MqttSync;
  stop(): Promise<void>;
}

const FAST = { publishTimeoutMs: 2000, reconnectMinMs: 50, reconnectMaxMs: 400, connectTimeoutMs: 2000, presenceDebounceMs: 20, consoleBirthJitterMs: 100 };

async function localAgent(url: string, siteId: string, dataDir = tempDir("ringedge-sync-")): Promise<LocalAgent> {
  const bus = new EventBus();
  const store = await Store.open(dataDir, { siteId, saveDelayMs: 1 });
  const site = new SiteService({ store, bus });
  site.start();
  const sync = new MqttSync({
    siteId,
    url,
    dataDir,
    statsIntervalS: 3600,
    outboxMax: 10_000,
    bus,
    site: siteApplier(site),
    status: () => ({ siteId, devices: store.listDevices().length }),
    presence: () => store.listDevices().map((d) => ({ deviceId: d.id, online: false, registered: false })),
    log: quiet,
    timers: FAST,
  });
  sync.start();
  return {
    siteId,
    dataDir,
    bus,
    store,
    site,
    sync,
    stop: async () => {
      await sync.stop();
      await store.close();
    },
  };
}

/** A raw MQTT 5 client recording every message on the given filters; resubscribes explicitly on every connect. */
async function recorder(url: string, filters: string[], persistentSession = false): Promise<{ client: MqttClient; messages: Array<{ topic: string; payload: any; retain: boolean; conn: number; dup: boolean }>; subscriptions: () => number }> {
  // A persistent session (kept by a broker with persistence across a clean restart) also gets
  // what was published while it was away.
  const session = persistentSession ? { clean: false, properties: { sessionExpiryInterval: 600 } } : {};
  const client = connect(url, { protocolVersion: 5, clientId: `rec-${Math.random().toString(36).slice(2)}`, reconnectPeriod: 20, resubscribe: false, ...session });
  // conn: which of the recorder's connections carried the message (1 = the first); dup: the
  // broker's own redelivery to this session (MQTT 5 §3.3.1.1), not a second publish by the agent.
  const messages: Array<{ topic: string; payload: any; retain: boolean; conn: number; dup: boolean }> = [];
  let subscriptions = 0;
  let conn = 0;
  client.on("message", (topic, buf, packet) => {
    let payload: unknown;
    try {
      payload = JSON.parse(buf.toString());
    } catch {
      payload = buf.toString();
    }
    messages.push({ topic, payload, retain: packet.retain, conn, dup: packet.dup });
  });
  client.on("error", () => undefined);
  client.on("connect", () => {
    conn++;
    (client.stream as { setNoDelay?: (b: boolean) => void }).setNoDelay?.(true);
    client.subscribe(filters, { qos: 1 }, (err) => {
      if (!err) subscriptions++;
    });
  });
  await until(() => subscriptions > 0, 5000, 10);
  return { client, messages, subscriptions: () => subscriptions };
}

/**
 * A TCP relay in front of the broker that the test can cut and reopen: the agent's link drops
 * (as on a network failure) and stays down until the test says so.
 */
async function gate(brokerPort: () => number): Promise<{ url: string; close(): void; open(): void; hold(): void; shutdown(): Promise<void> }> {
  const socks = new Set<net.Socket>();
  // hold(): what the agent sends stops reaching the broker (a link that went silent).
  const held: Array<() => void> = [];
  let isOpen = true;
  const server = net.createServer((client) => {
    if (!isOpen) return void client.destroy();
    const upstream = net.connect({ host: "127.0.0.1", port: brokerPort() });
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    socks.add(client).add(upstream);
    const drop = (): void => {
      client.destroy();
      upstream.destroy();
      socks.delete(client);
      socks.delete(upstream);
    };
    client.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
    client.pipe(upstream);
    upstream.pipe(client);
    held.push(() => client.unpipe(upstream));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const port = (server.address() as net.AddressInfo).port;
  return {
    url: `mqtt://127.0.0.1:${port}`,
    close: () => {
      isOpen = false;
      for (const s of socks) s.destroy();
      socks.clear();
    },
    open: () => {
      isOpen = true;
    },
    hold: () => {
      for (const h of held.splice(0)) h();
    },
    shutdown: () => new Promise<void>((r) => {
      isOpen = false;
      for (const s of socks) s.destroy();
      server.close(() => r());
    }),
  };
}

const end = (c: MqttClient): Promise<void> => new Promise((r) => c.end(true, {}, () => r()));

describe("console sync over a real Mosquitto", { timeout: 60_000 }, () => {
  let broker: Broker;
  let consoleC: ConsoleClient;
  const cleanups: Array<() => Promise<unknown>> = [];

  before(async () => {
    broker = await startBroker();
    consoleC = await ConsoleClient.connect({ url: broker.url, consoleId: "console-test" });
  });
  after(async () => {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
    await consoleC?.close().catch(() => undefined);
    await broker?.kill();
  });

  it("push → applied ack, retained reported with version and hash; same version → unchanged", async () => {
    const a = await localAgent(broker.url, "site-push");
    cleanups.push(a.stop);
    const config = siteSnapshot(3);
    const ack = await consoleC.pushDesired(a.siteId, desiredEnvelope(a.siteId, config), 3);
    assert.equal(ack.status, "applied");
    assert.deepEqual(ack.errors, []);
    assert.equal(ack.appliedVersion, 3);
    assert.equal(a.store.site?.version, 3, "persisted in the store before the ack");
    const rec = await recorder(broker.url, [siteTopic(a.siteId, "reported")]);
    cleanups.push(() => end(rec.client));
    const reported = await until(() => rec.messages.find((m) => m.retain)?.payload);
    assert.equal(reported.appliedVersion, 3);
    assert.equal(reported.appliedHash, configHash(config));
    assert.equal(reported.bootId, a.sync.bootId);
    const again = await consoleC.pushDesired(a.siteId, desiredEnvelope(a.siteId, config), 3);
    assert.equal(again.status, "unchanged");
    const older = await consoleC.pushDesired(a.siteId, desiredEnvelope(a.siteId, siteSnapshot(2)), 2);
    assert.equal(older.status, "unchanged");
    assert.equal(older.appliedVersion, 3);
    // Version 3 again with other content: a conflict naming both hashes, nothing applied.
    const fileBefore = fs.readFileSync(a.store.file, "utf8");
    const other = siteSnapshot(3);
    (other.users as Array<Record<string, unknown>>)[0]!.name = "Not the applied one";
    const conflict = await consoleC.pushDesired(a.siteId, desiredEnvelope(a.siteId, other), 3);
    assert.equal(conflict.status, "rejected", JSON.stringify(conflict));
    assert.deepEqual(conflict.errors.map((e) => [e.code, e.path]), [["version-conflict", "version"]]);
    assert.ok(conflict.errors[0]!.message.includes(configHash(config)) && conflict.errors[0]!.message.includes(configHash(other)), conflict.errors[0]!.message);
    assert.equal(conflict.appliedVersion, 3);
    assert.equal(fs.readFileSync(a.store.file, "utf8"), fileBefore, "store untouched by the conflicting push");
    const afterConflict = await until(() => rec.messages.filter((m) => m.payload.lastResult?.status === "rejected").at(-1)?.payload);
    assert.equal(afterConflict.appliedHash, configHash(config), "reported still names the applied content");
    // The applied content again is still "unchanged".
    assert.equal((await consoleC.pushDesired(a.siteId, desiredEnvelope(a.siteId, config), 3)).status, "unchanged");
  });

  it("every kind of bad push is rejected with its paths and changes nothing", async () => {
    const a = await localAgent(broker.url, "site-bad");
    cleanups.push(a.stop);
    assert.equal((await consoleC.pushDesired(a.siteId, desiredEnvelope(a.siteId, siteSnapshot(5)), 5)).status, "applied");
    const fileBefore = fs.readFileSync(a.store.file, "utf8");
    const reject = async (payload: Record<string, unknown> | string | Buffer, version: number | null): Promise<AckPayload> => {
      const ack = await consoleC.pushDesired(a.siteId, payload, version);
      assert.equal(ack.status, "rejected", JSON.stringify(ack));
      assert.equal(a.store.site?.version, 5);
      return ack;
    };
    const paths = (ack: AckPayload): string[] => ack.errors.map((e) => e.path);

    const badJson = await reject("{ not json", null);
    assert.deepEqual(badJson.errors.map((e) => [e.code, e.path]), [["bad-json", "$"]]);

    const wrongSchema = await reject({ schema: "ringedge.desired/9", siteId: a.siteId, version: 6, config: { nope: 1 } }, 6);
    assert.ok(paths(wrongSchema).includes("schema"), JSON.stringify(wrongSchema));
    assert.ok(paths(wrongSchema).includes("config.users"));
    assert.ok(paths(wrongSchema).includes("config.nope"));

    const bad = siteSnapshot(7);
    (bad.groups as Array<Record<string, unknown>>)[0]!.members = ["u-0", "ghost"];
    (bad.users as Array<Record<string, unknown>>)[1]!.extension = "1000"; // collides with group 1000
    const semantic = await reject(desiredEnvelope(a.siteId, bad), 7);
    assert.ok(paths(semantic).includes("config.groups[0].members[1]"), JSON.stringify(semantic));
    assert.ok(semantic.errors.some((e) => e.code === "unknown-member"));
    assert.ok(semantic.errors.some((e) => e.code === "duplicate-extension" || e.code === "duplicate-number"), JSON.stringify(semantic));

    const foreign = await reject(desiredEnvelope("site-other", siteSnapshot(8)), 8);
    assert.deepEqual(foreign.errors.map((e) => [e.code, e.path]), [["site-mismatch", "siteId"]]);

    const mismatch = await reject({ ...desiredEnvelope(a.siteId, siteSnapshot(9)), version: 10 }, 10);
    assert.deepEqual(paths(mismatch), ["config.version"]);

    const badHash = await reject({ ...desiredEnvelope(a.siteId, siteSnapshot(11)), hash: "sha256:" + "0".repeat(64) }, 11);
    assert.deepEqual(badHash.errors.map((e) => [e.code, e.path]), [["hash-mismatch", "hash"]]);

    const huge = Buffer.alloc(1_200_000, 0x20);
    huge.write('{"version":12,"x":"', 0);
    const tooLarge = await reject(huge, null);
    assert.deepEqual(tooLarge.errors.map((e) => [e.code, e.path]), [["too-large", "$"]]);

    assert.equal(fs.readFileSync(a.store.file, "utf8"), fileBefore, "store file untouched by every rejected push");
    // Still alive and applying.
    assert.equal((await consoleC.pushDesired(a.siteId, desiredEnvelope(a.siteId, siteSnapshot(13)), 13)).status, "applied");
  });

  it("commands: get-status, republish, resync (not-available, then a handler); foreign reply topics ignored", async () => {
    const a = await localAgent(broker.url, "site-cmd");
    cleanups.push(a.stop);
    await until(() => a.sync.syncStatus().connected);
    const st = await consoleC.command(a.siteId, "get-status");
    assert.equal(st.status, "ok");
    assert.equal((st.result as any).agent.siteId, a.siteId);
    assert.equal((st.result as any).sync.bootId, a.sync.bootId);
    const rs = await consoleC.command(a.siteId, "resync", { devices: ["dev-1"] });
    assert.equal(rs.status, "not-available");
    a.sync.setResyncHandler((args) => ({ resynced: args.devices }));
    const rs2 = await consoleC.command(a.siteId, "resync", { devices: ["dev-1"] });
    assert.deepEqual(rs2, { command: "resync", status: "ok", result: { resynced: ["dev-1"] } });
    const rec = await recorder(broker.url, [siteTopic(a.siteId, "status")]);
    cleanups.push(() => end(rec.client));
    await until(() => rec.messages.length >= 1);
    const rp = await consoleC.command(a.siteId, "republish");
    assert.equal(rp.status, "ok");
    await until(() => rec.messages.filter((m) => !m.retain).length >= 1);
    const unknown = await consoleC.command(a.siteId, "reboot");
    assert.equal(unknown.status, "error");
    assert.equal(unknown.errors?.[0]?.code, "unknown-command");
    // A reply topic outside the site's subtree: no reply, no crash.
    const spy = await recorder(broker.url, ["ringedge/v1/site-victim/#"]);
    cleanups.push(() => end(spy.client));
    await spy.client.publishAsync(`ringedge/v1/${a.siteId}/cmd/get-status`, "{}", { qos: 1, properties: { responseTopic: "ringedge/v1/site-victim/reply/x", correlationData: Buffer.from("c") } });
    const bad = await consoleC.command(a.siteId, "get-status", { x: 1 }).catch((e: Error) => e);
    assert.ok(!(bad instanceof Error));
    await sleep(100);
    assert.equal(spy.messages.length, 0);
    assert.ok(a.sync.syncStatus().rejectedMessages >= 1);
  });

  it("a console coming back online (live birth on _console/state) makes the agent republish; retained or malformed states do not", async () => {
    const a = await localAgent(broker.url, "site-birth");
    cleanups.push(a.stop);
    await until(() => a.sync.syncStatus().connected);
    const rec = await recorder(broker.url, [siteTopic(a.siteId, "status")]);
    cleanups.push(() => end(rec.client));
    await until(() => rec.messages.length >= 1); // the retained birth
    const live = () => rec.messages.filter((m) => !m.retain).length;
    // Malformed or "offline" states change nothing.
    for (const bad of ["not json", JSON.stringify({ online: "yes" }), JSON.stringify({ online: false })]) {
      await rec.client.publishAsync("ringedge/v1/_console/state", bad, { qos: 1 });
    }
    await sleep(400);
    assert.equal(live(), 0);
    await rec.client.publishAsync("ringedge/v1/_console/state", JSON.stringify({ online: true, consoleId: "console-a" }), { qos: 1 });
    await until(() => live() >= 1, 3000);
    assert.equal(rec.messages.filter((m) => !m.retain).at(-1)!.payload.online, true);
  });

  it("events: presence and calls in seq order, retained presence snapshot, statistics per operator and group", async () => {
    const a = await localAgent(broker.url, "site-ev");
    cleanups.push(a.stop);
    assert.equal((await consoleC.pushDesired(a.siteId, desiredEnvelope(a.siteId, siteSnapshot(1)), 1)).status, "applied");
    const rec = await recorder(broker.url, [siteTopic(a.siteId, "events"), siteTopic(a.siteId, "statistics"), siteTopic(a.siteId, "presence")]);
    cleanups.push(() => end(rec.client));
    const t0 = Date.now();
    a.bus.emit("device.presence", { deviceId: "dev-0", username: "ph0", online: true, reason: "registered", at: t0 });
    a.bus.emit("call.offered", { callId: "c1", groupId: "g-0", memberId: "u-0", deviceIds: ["dev-0"], caller: "sip:100@x", at: t0 });
    a.bus.emit("call.offered", { callId: "c1", groupId: "g-0", memberId: "u-1", deviceIds: ["dev-1"], caller: "sip:100@x", at: t0 });
    a.bus.emit("call.answered", { callId: "c1", groupId: "g-0", memberId: "u-1", deviceId: "dev-1", caller: "sip:100@x", answerAfterMs: 1200, at: t0 });
    a.bus.emit("call.missed", { callId: "c2", groupId: "g-0", caller: "sip:100@x", target: "hangup", offered: ["u-0", "u-2"], outcome: "hangup", at: t0 });
    a.bus.emit("call.busy", { callId: "c3", groupId: "g-0", memberIds: ["u-2"], caller: "sip:100@x", at: t0 });
    const events = await until(() => {
      const ev = rec.messages.filter((m) => m.topic.endsWith("/events")).map((m) => m.payload);
      return ev.length >= 6 ? ev : undefined;
    });
    assert.deepEqual(events.map((e) => e.type), ["presence", "call.offered", "call.offered", "call.answered", "call.missed", "call.busy"]);
    const seqs = events.map((e) => e.seq);
    assert.deepEqual(seqs, seqs.map((_, i) => seqs[0] + i));
    assert.ok(events.every((e) => e.bootId === a.sync.bootId));
    const presence = await until(() => rec.messages.find((m) => m.topic.endsWith("/presence") && m.payload.devices.length === 3)?.payload);
    assert.ok(presence.devices.every((d: { deviceId: string }) => /^dev-/.test(d.deviceId)));
    a.sync.publishStatistics();
    const stats = await until(() => rec.messages.find((m) => m.topic.endsWith("/statistics"))?.payload);
    assert.deepEqual(stats.groups, [{ groupId: "g-0", offered: 1, answered: 1, missed: 1, busy: 1, avgAnswerMs: 1200 }]);
    const op = (id: string): unknown => stats.operators.find((o: { userId: string }) => o.userId === id);
    assert.deepEqual(op("u-0"), { userId: "u-0", offered: 1, answered: 0, missed: 1, busy: 0, avgAnswerMs: null });
    assert.deepEqual(op("u-1"), { userId: "u-1", offered: 1, answered: 1, missed: 0, busy: 0, avgAnswerMs: 1200 });
    assert.deepEqual(op("u-2"), { userId: "u-2", offered: 0, answered: 0, missed: 1, busy: 1, avgAnswerMs: null });
    await until(() => a.sync.syncStatus().outbox.pending === 0);
  });

  it("console push (the CLI command, in process) refuses a push over the site's limit and gives up after --timeout", async () => {
    const a = await localAgent(broker.url, "site-limit");
    cleanups.push(a.stop);
    assert.equal((await consoleC.pushDesired(a.siteId, desiredEnvelope(a.siteId, siteSnapshot(1)), 1)).status, "applied");
    const dir = tempDir("ringedge-console-");
    const file = path.join(dir, "site.json");
    const settings = { mqttUrl: broker.url, mqttUsername: "", mqttPassword: "", mqttCa: "", mqttCert: "", mqttKey: "" };
    const run = async (args: string[], flags: Array<[string, string]> = []): Promise<{ code: number; out: string; err: string }> => {
      let out = "";
      let err = "";
      const code = await consoleCommand("push", args, new Map(flags), settings, (t) => (out += t), (t) => (err += t));
      return { code, out, err };
    };
    // Larger than the limit the site reports (maxDesiredBytes in its retained reported): refused, nothing published.
    fs.writeFileSync(file, JSON.stringify(siteSnapshot(2, { users: 6000, devices: 6000, groups: 1 })));
    assert.ok(fs.statSync(file).size > 1 << 20, "the snapshot is over the agent's 1 MB");
    const tooBig = await run([a.siteId, file]);
    assert.equal(tooBig.code, 1, tooBig.err);
    assert.match(tooBig.err, /the push is \d+ bytes, over the site's limit of 1048576 bytes \(reported by the site\); not sent/);
    const desiredRec = await recorder(broker.url, [siteTopic(a.siteId, "desired")]);
    cleanups.push(() => end(desiredRec.client));
    const retained = await until(() => desiredRec.messages.find((m) => m.retain)?.payload);
    assert.equal(retained.version, 1, "the retained desired is still the last push that was sent");
    assert.equal(a.store.site?.version, 1);
    // A site that never reported: --max-bytes (default: the agent's limit) applies.
    fs.writeFileSync(file, JSON.stringify(siteSnapshot(1)));
    const small = await run(["site-nobody", file], [["max-bytes", "100"]]);
    assert.equal(small.code, 1, small.err);
    assert.match(small.err, /over the site's limit of 100 bytes \(--max-bytes\); not sent/);
    for (const bad of ["lots", "0", "-5", "1.5"]) {
      const r = await run(["site-nobody", file], [["max-bytes", bad]]);
      assert.equal(r.code, 2, bad);
      assert.match(r.err, /--max-bytes must be a positive whole number/);
    }
    // Nobody acknowledges: the wait ends after --timeout with a message saying what it means.
    await assert.rejects(run(["site-nobody", file], [["timeout", "300"]]), /no ack for version 1 from site site-nobody within 300 ms: the site is offline or did not receive the push/);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("broker SIGKILLed and restarted during pushes and an event burst: final version applied, events in order with no gap", async () => {
    // The agent reaches the broker through a relay the test cuts before each SIGKILL: the
    // observer (a plain subscriber) must be back and subscribed before the agent is, or it
    // would miss events the broker accepted (a subscriber-side loss no agent can prevent:
    // events are not retained, and Mosquitto without persistence forgets sessions on SIGKILL).
    let broker2 = await startBroker();
    cleanups.push(() => broker2.kill());
    const g = await gate(() => broker2.port);
    cleanups.push(() => g.shutdown());
    const a = await localAgent(g.url, "site-crash");
    cleanups.push(a.stop);
    const c = await ConsoleClient.connect({ url: broker2.url, consoleId: "console-crash" });
    cleanups.push(() => c.close());
    const rec = await recorder(broker2.url, [siteTopic(a.siteId, "events")]);
    cleanups.push(() => end(rec.client));
    assert.equal((await c.pushDesired(a.siteId, desiredEnvelope(a.siteId, siteSnapshot(1)), 1)).status, "applied");

    const N = 600;
    let emitted = 0;
    const burst = setInterval(() => {
      for (let i = 0; i < 20 && emitted < N; i++, emitted++) a.bus.emit("device.presence", { deviceId: `dev-${emitted % 3}`, username: "x", online: emitted % 2 === 0, reason: "keepalive-ok", at: Date.now() });
    }, 5);
    cleanups.push(async () => clearInterval(burst));
    // Pushes racing the crashes, one after the other as a console makes them: the console
    // republishes until acked (retained state is lost on SIGKILL). Only the newest desired is
    // sure of an ack (one retained message per site): a version superseded before the agent
    // saw it is never answered, so pushes that overlap would not all be acknowledged.
    const pushes = (async () => {
      const acks: Array<AckPayload | Error> = [];
      for (const v of [2, 3, 4]) acks.push(await c.pushDesired(a.siteId, desiredEnvelope(a.siteId, siteSnapshot(v)), v, 20_000).catch((e: Error) => e));
      return acks;
    })();
    for (let round = 0; round < 2; round++) {
      await sleep(40);
      g.close();
      await sleep(30);
      const subs = rec.subscriptions();
      await broker2.kill();
      await sleep(50);
      broker2 = await broker2.restart();
      await until(() => rec.subscriptions() > subs, 5000, 10);
      g.open();
    }
    await until(() => emitted >= N, 10_000);
    clearInterval(burst);
    const acks = await pushes;
    for (const ack of acks) assert.ok(!(ack instanceof Error), String(ack));
    assert.deepEqual(acks.map((ack) => (ack as AckPayload).version), [2, 3, 4]);
    const final = await c.pushDesired(a.siteId, desiredEnvelope(a.siteId, siteSnapshot(5)), 5, 20_000);
    assert.equal(final.status, "applied");
    assert.equal(a.store.site?.version, 5);
    await until(() => a.sync.syncStatus().outbox.pending === 0, 20_000);
    const seen = new Set<number>();
    const firsts: number[] = [];
    for (const m of rec.messages) {
      if (!seen.has(m.payload.seq)) firsts.push(m.payload.seq);
      seen.add(m.payload.seq);
    }
    // Every event once at least, first occurrences in increasing order, no gap.
    assert.equal(seen.size, N, `${seen.size} distinct of ${N}`);
    assert.deepEqual(firsts, [...firsts].sort((x, y) => x - y));
    const min = Math.min(...seen);
    assert.deepEqual([...seen].sort((x, y) => x - y), Array.from({ length: N }, (_, i) => min + i));
  });
});

describe("event delivery across broker crashes", { timeout: 90_000 }, () => {
  const cleanups: Array<() => Promise<unknown>> = [];
  after(async () => {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
  });

  it("events keep flowing through broker SIGKILLs: every (bootId, seq) arrives, none twice on one connection, at most one window again per reconnect, window within the broker's Receive Maximum", async () => {
    let broker = await startBroker();
    cleanups.push(() => broker.kill());
    const g = await gate(() => broker.port);
    cleanups.push(() => g.shutdown());
    const a = await localAgent(g.url, "site-dup");
    cleanups.push(a.stop);
    const rec = await recorder(broker.url, [siteTopic(a.siteId, "events")]);
    cleanups.push(() => end(rec.client));
    await until(() => a.sync.syncStatus().connected);
    // Mosquitto grants a Receive Maximum of 20 (max_inflight_messages): events take at most 16.
    assert.equal(a.sync.syncStatus().eventWindow, 16);

    const N = 3000;
    let emitted = 0;
    const burst = setInterval(() => {
      for (let i = 0; i < 40 && emitted < N; i++, emitted++) a.bus.emit("device.presence", { deviceId: `dev-${emitted % 3}`, username: "x", online: emitted % 2 === 0, reason: "keepalive-ok", at: Date.now() });
    }, 2);
    cleanups.push(async () => clearInterval(burst));
    const ROUNDS = 4;
    let reconnects = 0;
    for (let round = 0; round < ROUNDS; round++) {
      // Let events flow on this connection, with some in flight when the link is cut.
      const before = rec.messages.length;
      await until(() => rec.messages.length > before + 50, 10_000, 5);
      g.close();
      const subs = rec.subscriptions();
      await broker.kill();
      broker = await broker.restart();
      await until(() => rec.subscriptions() > subs, 5000, 10);
      g.open();
      await until(() => a.sync.syncStatus().connected, 10_000, 10);
      reconnects++;
    }
    await until(() => emitted >= N, 20_000);
    clearInterval(burst);
    await until(() => a.sync.syncStatus().outbox.pending === 0, 20_000);
    const st = a.sync.syncStatus();
    assert.ok(st.outbox.peakInFlight <= st.eventWindow, `peak ${st.outbox.peakInFlight} in flight, window ${st.eventWindow}`);

    const key = (p: { bootId: string; seq: number }): string => `${p.bootId}/${p.seq}`;
    const perConn = new Map<string, number>();
    const total = new Map<string, number>();
    for (const m of rec.messages) {
      perConn.set(`${m.conn}:${key(m.payload)}`, (perConn.get(`${m.conn}:${key(m.payload)}`) ?? 0) + 1);
      total.set(key(m.payload), (total.get(key(m.payload)) ?? 0) + 1);
    }
    const twiceOnOneConnection = [...perConn].filter(([, n]) => n > 1).map(([k]) => k);
    assert.deepEqual(twiceOnOneConnection, [], "no event is published twice on one connection");
    assert.equal(total.size, N, `${total.size} distinct of ${N}`);
    const seqs = [...total.keys()].map((k) => Number(k.split("/")[1])).sort((x, y) => x - y);
    assert.deepEqual(seqs, Array.from({ length: N }, (_, i) => seqs[0]! + i), "no gap");
    // QoS 1 is at least once: only what was in flight when a link died may come again, once.
    const duplicates = [...total.values()].reduce((n, c) => n + c - 1, 0);
    assert.ok([...total.values()].every((c) => c <= 2), "no event more than twice");
    assert.ok(duplicates <= st.eventWindow * reconnects, `${duplicates} duplicates over ${reconnects} reconnects, window ${st.eventWindow}`);
    console.log(`# ${N} events, ${reconnects} broker kills: ${duplicates} delivered again after a reconnect (bound ${st.eventWindow * reconnects})`);
  });

  it("a broker stopped cleanly (SIGTERM, persistence) and restarted while events flow: every event arrives, and only what was in flight at a stop may come again", async () => {
    let broker = await startBroker({ persistence: true });
    cleanups.push(() => broker.kill());
    const rec = await recorder(broker.url, [siteTopic("site-stop", "events")], true);
    cleanups.push(() => end(rec.client));
    const a = await localAgent(broker.url, "site-stop");
    cleanups.push(a.stop);
    await until(() => a.sync.syncStatus().connected);
    const N = 1500;
    let emitted = 0;
    const burst = setInterval(() => {
      for (let i = 0; i < 20 && emitted < N; i++, emitted++) a.bus.emit("device.presence", { deviceId: `dev-${emitted % 3}`, username: "x", online: emitted % 2 === 0, reason: "keepalive-ok", at: Date.now() });
    }, 2);
    cleanups.push(async () => clearInterval(burst));
    const STOPS = 3;
    for (let round = 0; round < STOPS; round++) {
      const before = rec.messages.length;
      await until(() => rec.messages.length > before + 50, 10_000, 5);
      await broker.stop();
      broker = await broker.restart();
      await until(() => a.sync.syncStatus().connected, 10_000, 10);
    }
    await until(() => emitted >= N, 20_000);
    clearInterval(burst);
    await until(() => a.sync.syncStatus().outbox.pending === 0, 20_000);
    await until(() => new Set(rec.messages.map((m) => m.payload.seq)).size >= N, 10_000);
    const fresh = rec.messages.filter((m) => !m.dup).map((m) => `${m.payload.bootId}/${m.payload.seq}`);
    assert.equal(new Set(fresh).size, N);
    // QoS 1 is at least once (MQTT 5 §4.3.2): a PUBLISH the broker took just before it stopped,
    // whose PUBACK never reached the agent, is rightly sent again on the next connection, and the
    // broker forwards it as a new message. CI saw one such event in 1,500. What the agent must not
    // do is publish again what was acknowledged: at most one in-flight window per stop.
    const again = fresh.length - N;
    const window = a.sync.syncStatus().eventWindow;
    assert.ok(again <= window * STOPS, `${again} events published again after ${STOPS} clean broker stops, bound ${window * STOPS}`);
    console.log(`# ${N} events, ${STOPS} clean broker stops: ${again} published again (bound ${window * STOPS})`);
  });

  it("never more QoS 1 publishes in flight than the broker's Receive Maximum, events and the rest together", async () => {
    const broker = await startBroker({ extra: ["max_inflight_messages 6"] });
    cleanups.push(() => broker.kill());
    const rec = await recorder(broker.url, [siteTopic("site-rm", "events")]);
    cleanups.push(() => end(rec.client));
    const a = await localAgent(broker.url, "site-rm");
    cleanups.push(a.stop);
    await until(() => a.sync.syncStatus().connected);
    assert.equal(a.sync.syncStatus().receiveMaximum, 6);
    assert.equal(a.sync.syncStatus().eventWindow, 2);
    const N = 300;
    for (let i = 0; i < N; i++) a.bus.emit("device.presence", { deviceId: `dev-${i % 3}`, username: "x", online: i % 2 === 0, reason: "keepalive-ok", at: Date.now() });
    const republished = await Promise.all(Array.from({ length: 30 }, () => a.sync.republish().then(() => true)));
    assert.equal(republished.length, 30);
    await until(() => a.sync.syncStatus().outbox.pending === 0, 20_000);
    await until(() => new Set(rec.messages.map((m) => m.payload.seq)).size === N, 10_000);
    const st = a.sync.syncStatus();
    assert.ok(st.peakInFlight <= 6 && st.peakInFlight >= 3, `peak ${st.peakInFlight} in flight, Receive Maximum 6`);
    assert.ok(st.outbox.peakInFlight <= 2, `events peak ${st.outbox.peakInFlight}`);
  });

  it("stop() while offline with a publish the link cut off returns at once (it waited for a PUBACK forever)", async () => {
    const broker = await startBroker();
    cleanups.push(() => broker.kill());
    const g = await gate(() => broker.port);
    cleanups.push(() => g.shutdown());
    const a = await localAgent(g.url, "site-offstop");
    await until(() => a.sync.syncStatus().connected);
    g.hold();
    void a.sync.republish(); // status and reported: handed to MQTT.js at once, into the silent link, never acknowledged
    g.close();
    await until(() => !a.sync.syncStatus().connected);
    const t0 = Date.now();
    const r = await Promise.race([a.stop().then(() => "stopped"), sleep(3000).then(() => "hung")]);
    assert.equal(r, "stopped");
    assert.ok(Date.now() - t0 < 1000, `${Date.now() - t0} ms`);
  });
});

describe("console sync with the real agent process", { timeout: 60_000 }, () => {
  let broker: Broker;
  let agent: RunningAgent | undefined;
  const cleanups: Array<() => Promise<unknown>> = [];
  const siteId = "site-proc";

  before(async () => {
    broker = await startBroker();
  });
  after(async () => {
    await agent?.kill().catch(() => undefined);
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
    await broker?.kill();
  });

  const env = (url: string): Record<string, string> => ({ RINGEDGE_SITE_ID: siteId, RINGEDGE_MQTT_URL: url, RINGEDGE_AUTH_ALGORITHMS: "MD5,SHA-256" });

  it("console push via the CLI; events queued while the broker is down survive an agent SIGKILL and are drained after restart; config kept", async () => {
    const dataDir = tempDir("ringedge-sync-proc-");
    const port = await freePort();
    agent = await startAgent({ dataDir, port, env: env(broker.url) });
    await agent.waitForLog(/connected to the console broker/);
    const file = path.join(dataDir, "..", `site-${process.pid}-${Date.now()}.json`);
    fs.writeFileSync(file, JSON.stringify(siteSnapshot(4)));
    cleanups.push(async () => fs.rmSync(file, { force: true }));
    const push = await runCli(["console", "push", siteId, file, "--url", broker.url], agentEnv(dataDir, port));
    assert.equal(push.code, 0, push.stderr);
    assert.equal(JSON.parse(push.stdout).status, "applied");
    const invalid = siteSnapshot(5);
    delete (invalid as Record<string, unknown>).users;
    fs.writeFileSync(file, JSON.stringify(invalid));
    const refused = await runCli(["console", "push", siteId, file, "--url", broker.url], agentEnv(dataDir, port));
    assert.equal(refused.code, 1, "an invalid snapshot is refused before it is sent");
    assert.match(refused.stderr, /users: is required/);

    // Broker gone: presence events go to the outbox on disk.
    await broker.kill();
    const { SipClient, registerWithAuth } = await import("./sipclient.ts");
    for (const user of ["ph0", "ph1"]) {
      const c = await SipClient.open(port, "udp");
      const x = await registerWithAuth(c, user, { password: `secret-pass-${user.slice(2)}`, expires: 600 });
      c.close();
      assert.equal(x.final.status, 200);
    }
    const outboxFile = path.join(dataDir, "sync-outbox.jsonl");
    await until(() => fs.existsSync(outboxFile) && (fs.readFileSync(outboxFile, "utf8").match(/"k":"e"/g) ?? []).length >= 2, 5000, 20);
    await agent.kill();

    broker = await broker.restart();
    const rec = await recorder(broker.url, [siteTopic(siteId, "events"), siteTopic(siteId, "reported")]);
    cleanups.push(() => end(rec.client));
    agent = await startAgent({ dataDir, port, env: env(broker.url) });
    const events = await until(() => {
      const ev = rec.messages.filter((m) => m.topic.endsWith("/events")).map((m) => m.payload);
      return ev.length >= 2 ? ev : undefined;
    });
    assert.deepEqual(events.slice(0, 2).map((e) => [e.type, e.data.online]), [["presence", true], ["presence", true]]);
    assert.equal(events[1].seq, events[0].seq + 1);
    const reported = await until(() => rec.messages.find((m) => m.topic.endsWith("/reported"))?.payload);
    assert.equal(reported.appliedVersion, 4, "config kept across the SIGKILL");
    assert.notEqual(reported.bootId, events[0].bootId, "the drained events carry the earlier run's bootId");
    await until(() => (fs.readFileSync(outboxFile, "utf8").match(/"k":"d"/g) ?? []).length >= 2 || !/"k":"e"/.test(fs.readFileSync(outboxFile, "utf8")), 5000, 20);
    const st = await runCli(["console", "status", siteId, "--url", broker.url], agentEnv(dataDir, port));
    assert.equal(st.code, 0, st.stderr);
    assert.equal(JSON.parse(st.stdout).result.sync.appliedVersion, 4);
  });

  it("last will on a crash, none on a clean stop (offline with reason shutdown instead)", async () => {
    const rec = await recorder(broker.url, [siteTopic(siteId, "status")]);
    cleanups.push(() => end(rec.client));
    await agent?.kill();
    const will = await until(() => rec.messages.map((m) => m.payload).find((p) => p.online === false && p.reason === undefined));
    assert.equal(typeof will.connSeq, "number");
    const dataDir = tempDir("ringedge-sync-lwt-");
    agent = await startAgent({ dataDir, env: env(broker.url) });
    await agent.waitForLog(/connected to the console broker/);
    const birth = await until(() => rec.messages.map((m) => m.payload).find((p) => p.online === true && p.bootId !== will.bootId));
    const from = rec.messages.length;
    await agent.stop();
    const offline = await until(() => rec.messages.slice(from).map((m) => m.payload).find((p) => p.online === false));
    assert.equal(offline.reason, "shutdown");
    assert.equal(offline.bootId, birth.bootId);
    await sleep(300);
    assert.equal(rec.messages.slice(from).filter((m) => m.payload.online === false).length, 1, "no last will after a clean stop");
    agent = undefined;
  });
});
