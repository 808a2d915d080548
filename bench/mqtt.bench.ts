// Console sync benchmarks against a real Mosquitto on loopback (set_tcp_nodelay true on the
// broker, setNoDelay on every client socket):
//   1. publish → applied ack for a 500-user / 600-phone / 100-group snapshot (~160 KB), including
//      schema + meaning validation and the store's fsync (target p50 ≤ 20 ms);
//   2. events per second through the persistent outbox (append → fsync → publish → PUBACK → removed);
//   3. 200 agents (in-process MqttSync instances, each with its own data dir and store) receiving a
//      fleet-wide push: time until every one has acked (target all within 5 s).
// Run: node --import tsx bench/mqtt.bench.ts   (figures in bench/results/mqtt.json)
import { EventBus } from "../agent/bus.ts";
import { createLogger } from "../agent/log.ts";
import { SiteService } from "../agent/site/site.ts";
import { Store } from "../agent/store/store.ts";
import { ConsoleClient } from "../agent/sync/console-cli.ts";
import { MqttSync, siteApplier } from "../agent/sync/mqtt-sync.ts";
import { tempDir } from "../test/e2e/harness.ts";
import { startBroker } from "../test/e2e/mosquitto.ts";
import { desiredEnvelope, siteSnapshot } from "../test/e2e/mqtt-fixtures.ts";
import { fmt, machine, round, summarize, table, writeResult } from "./lib.ts";

const PUSHES = Number(process.env.BENCH_PUSHES ?? 60);
const EVENTS = Number(process.env.BENCH_EVENTS ?? 20_000);
const FLEET = Number(process.env.BENCH_FLEET ?? 200);
const BIG = { users: 500, devices: 600, groups: 100 };
const silent = createLogger("silent");

async function agent(url: string, siteId: string): Promise<{ sync: MqttSync; bus: EventBus; stop(): Promise<void> }> {
  const dataDir = tempDir("ringedge-bench-");
  const bus = new EventBus();
  const store = await Store.open(dataDir, { siteId, saveDelayMs: 1 });
  const site = new SiteService({ store, bus });
  site.start();
  const sync = new MqttSync({
    siteId,
    url,
    dataDir,
    statsIntervalS: 3600,
    outboxMax: 1_000_000,
    bus,
    site: siteApplier(site),
    status: () => ({}),
    presence: () => [],
    log: silent,
    // The fleet connects at once: spread the (rare) retries, keep the test bounded.
    timers: { reconnectMinMs: 200, reconnectMaxMs: 2000, publishTimeoutMs: 20_000 },
  });
  sync.start();
  return {
    sync,
    bus,
    stop: async () => {
      await sync.stop();
      await store.close();
    },
  };
}

async function waitFor(fn: () => boolean, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!fn()) {
    if (Date.now() > end) throw new Error("bench condition not met in time");
    await new Promise((r) => setTimeout(r, 5));
  }
}

async function main(): Promise<void> {
  const broker = await startBroker({ extra: ["max_connections -1"] });
  try {
    const consoleC = await ConsoleClient.connect({ url: broker.url, consoleId: "bench-console" });

    // 1. push → applied ack
    const one = await agent(broker.url, "bench-one");
    await waitFor(() => one.sync.syncStatus().connected, 5000);
    const sizeBytes = JSON.stringify(desiredEnvelope("bench-one", siteSnapshot(1, BIG))).length;
    const lat: number[] = [];
    for (let v = 1; v <= PUSHES + 3; v++) {
      const env = desiredEnvelope("bench-one", siteSnapshot(v, BIG));
      const t0 = performance.now();
      const ack = await consoleC.pushDesired("bench-one", env, v, 10_000);
      const ms = performance.now() - t0;
      if (ack.status !== "applied") throw new Error(`push ${v}: ${JSON.stringify(ack).slice(0, 300)}`);
      if (v > 3) lat.push(ms); // the first pushes warm up ajv and the store
    }
    const push = summarize(lat);

    // 2. events through the outbox
    const t0 = performance.now();
    for (let i = 0; i < EVENTS; i++) one.bus.emit("device.presence", { deviceId: `dev-${i % 600}`, username: `ph${i % 600}`, online: i % 2 === 0, reason: "keepalive-ok", at: Date.now() });
    const appendedMs = performance.now() - t0;
    await waitFor(() => one.sync.syncStatus().outbox.pending === 0, 120_000);
    const eventsMs = performance.now() - t0;
    await one.stop();

    // 3. fleet-wide push to FLEET agents
    const fleet = await Promise.all(Array.from({ length: FLEET }, (_, i) => agent(broker.url, `bench-fleet-${i}`)));
    await waitFor(() => fleet.every((a) => a.sync.syncStatus().connected), 30_000);
    const fleetConfig = siteSnapshot(1, BIG);
    const f0 = performance.now();
    const acks = await Promise.all(fleet.map((_, i) => consoleC.pushDesired(`bench-fleet-${i}`, desiredEnvelope(`bench-fleet-${i}`, fleetConfig), 1, 60_000).then((ack) => ({ ack, ms: performance.now() - f0 }))));
    const fleetMs = performance.now() - f0;
    const rejected = acks.filter((a) => a.ack.status !== "applied").length;
    const perAgent = summarize(acks.map((a) => a.ms));
    await Promise.all(fleet.map((a) => a.stop()));
    await consoleC.close();

    const result = {
      machine: machine(),
      pushToAck: { configBytes: sizeBytes, users: BIG.users, devices: BIG.devices, groups: BIG.groups, pushes: push.n, p50Ms: round(push.median, 2), p99Ms: round(push.p99, 2), maxMs: round(push.max, 2), targetP50Ms: 20 },
      outbox: { events: EVENTS, appendMs: round(appendedMs, 1), deliveredMs: round(eventsMs, 1), eventsPerS: Math.round(EVENTS / (eventsMs / 1000)) },
      fleet: { agents: FLEET, configBytes: sizeBytes, allAckedMs: round(fleetMs, 1), rejected, p50AckMs: round(perAgent.median, 1), p99AckMs: round(perAgent.p99, 1), targetMs: 5000 },
    };
    const file = writeResult("mqtt", result);
    console.log(
      table(
        ["figure", "value", "target"],
        [
          [`push → applied ack p50 (${fmt(sizeBytes / 1024)} KB, ${BIG.users}/${BIG.devices}/${BIG.groups})`, `${fmt(push.median, 2)} ms`, "≤ 20 ms"],
          ["push → applied ack p99", `${fmt(push.p99, 2)} ms`, ""],
          ["events through the outbox", `${fmt(result.outbox.eventsPerS)} /s`, ""],
          [`fleet push: all ${FLEET} agents acked`, `${fmt(fleetMs)} ms`, "≤ 5000 ms"],
          ["fleet push: per-agent ack p50 / p99", `${fmt(perAgent.median)} / ${fmt(perAgent.p99)} ms`, ""],
        ],
      ),
    );
    console.log(`written ${file}`);
  } finally {
    await broker.kill();
  }
}

await main();
process.exit(0);
