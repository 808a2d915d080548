// Presence rules: online with a live registration that answers keep-alives; offline after
// the configured misses, on unregister or on expiry; back online on an answer or REGISTER.
import { test } from "node:test";
import assert from "node:assert/strict";
import { EventBus, type AgentEvents } from "../../agent/bus.ts";
import { createLogger } from "../../agent/log.ts";
import { LocationService, type Binding } from "../../agent/sip/location.ts";
import { PresenceTracker } from "../../agent/presence/presence.ts";

function binding(deviceId: string, aor: string, expiresAt: number, port = 5062): Binding {
  return {
    deviceId,
    aor,
    contact: `sip:${aor}@127.0.0.1:${port}`,
    expiresAt,
    callId: `c-${deviceId}-${port}`,
    cseq: 1,
    q: undefined,
    flow: { transport: "udp", remoteAddress: "127.0.0.1", remotePort: port, localAddress: "127.0.0.1", localPort: 5060 },
    userAgent: undefined,
    instance: undefined,
  };
}

function setup(answers: Map<number, boolean>, misses = 3) {
  let now = 1_000_000;
  const bus = new EventBus();
  const events: Array<AgentEvents["device.presence"]> = [];
  bus.on("device.presence", (e) => events.push(e));
  let presence!: PresenceTracker;
  const location = new LocationService((c) => presence.onBindings(c), () => now);
  presence = new PresenceTracker({
    intervalMs: 30_000,
    misses,
    bus,
    location,
    probe: async (b) => answers.get(b.flow.remotePort) ?? false,
    username: (id) => `user-${id}`,
    log: createLogger("silent"),
    now: () => now,
    jitter: false,
  });
  return { bus, events, location, presence, advance: (ms: number) => (now += ms), now: () => now };
}

test("a registration brings a device online and emits one event", () => {
  const s = setup(new Map());
  s.location.replace("201", "d1", [binding("d1", "201", s.now() + 3600_000)]);
  assert.equal(s.presence.isOnline("d1"), true);
  assert.deepEqual(s.events.map((e) => [e.deviceId, e.online, e.reason, e.username]), [["d1", true, "registered", "user-d1"]]);
  // A refresh is not a change.
  s.location.replace("201", "d1", [binding("d1", "201", s.now() + 3600_000)]);
  assert.equal(s.events.length, 1);
});

test("missing keep-alives: offline only after the configured number of silent rounds, back on an answer", async () => {
  const answers = new Map([[5062, true]]);
  const s = setup(answers, 3);
  s.location.replace("201", "d1", [binding("d1", "201", s.now() + 3600_000)]);
  await s.presence.round();
  assert.equal(s.presence.isOnline("d1"), true);
  answers.set(5062, false);
  await s.presence.round();
  await s.presence.round();
  assert.equal(s.presence.isOnline("d1"), true, "two misses of three: still online");
  assert.equal(s.presence.snapshot()[0]!.misses, 2);
  await s.presence.round();
  assert.equal(s.presence.isOnline("d1"), false);
  assert.equal(s.events.at(-1)!.reason, "keepalive-timeout");
  await s.presence.round();
  assert.equal(s.events.filter((e) => !e.online).length, 1, "offline is announced once");
  answers.set(5062, true);
  await s.presence.round();
  assert.equal(s.presence.isOnline("d1"), true);
  assert.equal(s.events.at(-1)!.reason, "keepalive-ok");
  assert.equal(s.presence.snapshot()[0]!.misses, 0);
});

test("a re-registration brings an unanswering device back at once", async () => {
  const s = setup(new Map(), 1);
  s.location.replace("201", "d1", [binding("d1", "201", s.now() + 3600_000)]);
  await s.presence.round();
  assert.equal(s.presence.isOnline("d1"), false);
  s.location.replace("201", "d1", [binding("d1", "201", s.now() + 3600_000)]);
  assert.equal(s.presence.isOnline("d1"), true);
  assert.equal(s.events.at(-1)!.reason, "registered");
});

test("a device with two bindings is online while either answers", async () => {
  const answers = new Map([[5062, false], [5064, true]]);
  const s = setup(answers, 1);
  s.location.replace("201", "d1", [binding("d1", "201", s.now() + 3600_000, 5062), binding("d1", "201", s.now() + 3600_000, 5064)]);
  await s.presence.round();
  assert.equal(s.presence.isOnline("d1"), true);
  answers.set(5064, false);
  await s.presence.round();
  assert.equal(s.presence.isOnline("d1"), false);
});

test("unregister and expiry take a device offline with the right reason", () => {
  const s = setup(new Map());
  s.location.replace("201", "d1", [binding("d1", "201", s.now() + 60_000)]);
  s.location.replace("202", "d2", [binding("d2", "202", s.now() + 3600_000, 5070)]);
  s.location.replace("202", "d2", []);
  assert.equal(s.presence.isOnline("d2"), false);
  assert.equal(s.events.at(-1)!.reason, "unregistered");
  s.advance(61_000);
  s.location.sweep();
  assert.equal(s.presence.isOnline("d1"), false);
  assert.equal(s.events.at(-1)!.reason, "expired");
  assert.equal(s.location.count(), 0);
});

test("restored bindings skip expired ones and mark the rest online as restored", () => {
  const s = setup(new Map());
  s.location.restore([binding("d1", "201", s.now() + 60_000), binding("d2", "202", s.now() - 1)]);
  assert.equal(s.presence.isOnline("d1"), true);
  assert.equal(s.presence.isOnline("d2"), false);
  assert.deepEqual(s.events.map((e) => e.reason), ["restored"]);
  assert.equal(s.location.lookup("202").length, 0);
});

test("removing a device drops its bindings and its presence entry", () => {
  const s = setup(new Map());
  s.location.replace("201", "d1", [binding("d1", "201", s.now() + 60_000)]);
  s.location.removeDevice("d1");
  assert.equal(s.location.count(), 0);
  assert.equal(s.presence.snapshot().length, 0);
  assert.equal(s.events.at(-1)!.online, false);
});

test("a probe that never answers counts as a miss after the interval, not after Timer F", async () => {
  let now = 0;
  const bus = new EventBus();
  let presence!: PresenceTracker;
  const location = new LocationService((c) => presence.onBindings(c), () => now);
  presence = new PresenceTracker({
    intervalMs: 50,
    misses: 1,
    bus,
    location,
    probe: () => new Promise<boolean>(() => undefined), // a dead phone: never settles
    username: () => "x",
    log: createLogger("silent"),
    now: () => now,
    jitter: false,
  });
  location.replace("201", "d1", [binding("d1", "201", 3600_000)]);
  const started = Date.now();
  await presence.round();
  assert.ok(Date.now() - started < 1000, "the round ended with the interval");
  assert.equal(presence.isOnline("d1"), false);
});
