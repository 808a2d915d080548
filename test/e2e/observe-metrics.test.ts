// The metrics endpoint end to end: the real agent with metricsEnabled on a free loopback port,
// registered phones, SIPp callers entering as the trunk. Every scrape must parse as Prometheus
// text exposition format, and the call counters must move as calls are answered, missed and
// abandoned.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import fs from "node:fs";
import path from "node:path";
import { CallScene, RING, TRUNK_CALLER_IP, answerAfter, assertSippOk, callIdOf, loggedCall, simUser, sippCall, startRoutingAgent, writeSiteFile, type SimDevice, type SimUser } from "./callsim.ts";
import { ROOT, agentEnv, freePort, runCli, startAgent, tempDir, until, type RunningAgent } from "./harness.ts";
import { parseExposition, type Exposition } from "./promtext.ts";

const UNIT = 200;
const users: SimUser[] = [];
const devices: SimDevice[] = [];
for (const [id, ext] of [["m1", "4001"], ["m2", "4002"]] as const) {
  const u = simUser(id, ext, ["physical"]);
  users.push(u.user);
  devices.push(...u.devices);
}

let agent: RunningAgent;
let metricsPort: number;
let dataDir: string;
const siteDir = tempDir("ringedge-metrics-site-");
const scene = new CallScene(() => agent);

const ARTEFACTS = path.join(ROOT, ".tmp/artefacts");

async function scrape(): Promise<Exposition> {
  const res = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
  const text = await res.text();
  // The last scrape is kept as a test artefact.
  fs.mkdirSync(ARTEFACTS, { recursive: true });
  fs.writeFileSync(path.join(ARTEFACTS, "metrics.txt"), text);
  return parseExposition(text);
}

before(async () => {
  metricsPort = await freePort();
  dataDir = tempDir("ringedge-metrics-");
  const file = writeSiteFile(siteDir, {
    settings: { pickupCode: "*8", trunk: { host: "127.0.0.1", port: await freePort(), transport: "udp", allowedSources: [TRUNK_CALLER_IP] } },
    users,
    devices,
    groups: [{ id: "sales", number: "740", strategy: "simultaneous", members: ["m1", "m2"], ringCount: 2, noAnswer: { kind: "hangup", status: 480 } }],
  });
  agent = await startRoutingAgent(file, { ringUnitMs: UNIT, dataDir, env: { RINGEDGE_METRICS_ENABLED: "true", RINGEDGE_METRICS_LISTEN: `127.0.0.1:${metricsPort}` } });
});

after(async () => {
  await scene.close();
  for (const d of [dataDir, siteDir]) fs.rmSync(d, { recursive: true, force: true });
});

test("metrics: valid exposition format; counters move as calls are answered, missed and abandoned", { timeout: 60_000 }, async () => {
  const m0 = await scrape();
  for (const name of ["ringedge_calls_offered_total", "ringedge_first_fork_latency_seconds", "ringedge_devices", "ringedge_queue_length", "ringedge_registrations", "process_resident_memory_bytes", "process_cpu_seconds_total", "nodejs_eventloop_lag_seconds", "ringedge_store_save_seconds"]) {
    assert.ok(m0.types.has(name), `${name} is exposed`);
  }
  assert.equal(m0.types.get("ringedge_first_fork_latency_seconds"), "histogram");
  assert.equal(m0.value("ringedge_devices", { kind: "physical", state: "total" }), 2);
  assert.equal(m0.value("ringedge_devices", { kind: "physical", state: "online" }), 0);
  assert.ok(m0.value("process_resident_memory_bytes")! > 10_000_000);
  // Without a broker the console link series are absent.
  assert.equal(m0.samples.some((s) => s.name === "ringedge_console_connected"), false);

  const [p1, p2] = await scene.register(devices, RING);
  const m1 = await until(async () => {
    const m = await scrape();
    return m.value("ringedge_devices", { kind: "physical", state: "online" }) === 2 ? m : undefined;
  }, 10_000);
  assert.ok(m1.value("ringedge_registrations")! >= 2);

  // 1. answered: m1 answers after 100 ms.
  p1!.answering = answerAfter(100);
  const answered = await sippCall(agent.port, "route-caller.xml", "740", { pauseMs: 100 });
  scene.peers.push(answered);
  assertSippOk("answered call", await answered.run);
  await loggedCall(dataDir, callIdOf(answered));
  p1!.answering = RING;

  // 2. missed: nobody answers within two rings, the group hangs up with 480.
  const missed = await sippCall(agent.port, "route-caller-fail.xml", "740");
  scene.peers.push(missed);
  await missed.run;
  assert.equal((await loggedCall(dataDir, callIdOf(missed))).outcome, "missed");

  // 3. abandoned: the caller cancels while the phones ring.
  const gaveUp = await sippCall(agent.port, "route-caller-cancel.xml", "740", { pauseMs: 100 });
  scene.peers.push(gaveUp);
  assertSippOk("abandoned call", await gaveUp.run);
  await loggedCall(dataDir, callIdOf(gaveUp));

  const m2 = await until(async () => {
    const m = await scrape();
    return m.value("ringedge_calls_abandoned_total", { group: "sales" }) === 1 ? m : undefined;
  }, 10_000);
  assert.equal(m2.value("ringedge_calls_offered_total", { group: "sales" }), 3);
  assert.equal(m2.value("ringedge_calls_answered_total", { group: "sales" }), 1);
  assert.equal(m2.value("ringedge_calls_missed_total", { group: "sales", outcome: "missed" }), 2);
  assert.equal(m2.value("ringedge_first_fork_latency_seconds_count"), 3);
  assert.ok(m2.value("ringedge_first_fork_latency_seconds_sum")! > 0);
  assert.equal(m2.value("ringedge_call_answer_seconds_count", { group: "sales" }), 1);
  assert.ok(m2.value("ringedge_store_save_seconds_count")! >= 1, "store writes are timed");
  assert.equal(m2.value("ringedge_calls_active"), 0);
  assert.equal(m2.value("ringedge_queue_length"), 0);
  void p2;
});

test("metrics endpoint: only GET/HEAD /metrics; anything else is refused and changes nothing", { timeout: 20_000 }, async () => {
  const base = `http://127.0.0.1:${metricsPort}`;
  assert.equal((await fetch(`${base}/`)).status, 404);
  assert.equal((await fetch(`${base}/metrics/../etc/passwd`)).status, 404);
  const post = await fetch(`${base}/metrics`, { method: "POST", body: "x" });
  assert.equal(post.status, 405);
  assert.equal(post.headers.get("allow"), "GET, HEAD");
  const head = await fetch(`${base}/metrics`, { method: "HEAD" });
  assert.equal(head.status, 200);
  assert.equal((await head.text()).length, 0);
  // A request with an absurd header is dropped, and the next scrape still works.
  await fetch(`${base}/metrics`, { headers: { "x-big": "a".repeat(20_000) } }).then((r) => assert.equal(r.status, 431), () => undefined);
  parseExposition(await (await fetch(`${base}/metrics`)).text());
});

test("provisioning requests are counted by vendor and result", { timeout: 20_000 }, async () => {
  const url = /provisioning listening scheme=http address=\S+ url=(\S+)/.exec(await agent.waitForLog(/provisioning listening scheme=http/))![1]!;
  assert.equal((await fetch(`${url}no-such-file.txt`)).status, 404);
  const m = await until(async () => {
    const e = await scrape();
    return e.value("ringedge_provisioning_requests_total", { vendor: "unknown", result: "not-found" }) === 1 ? e : undefined;
  }, 5000);
  assert.ok(m);
});

test("a metrics address already in use stops the start with a clear error", { timeout: 30_000 }, async () => {
  const dir = tempDir("ringedge-metrics-busy-");
  try {
    // metricsPort is held by the running agent's endpoint.
    await assert.rejects(
      startAgent({ dataDir: dir, env: { RINGEDGE_METRICS_ENABLED: "true", RINGEDGE_METRICS_LISTEN: `127.0.0.1:${metricsPort}` } }),
      (e: Error) => /exited early with code 1/.test(e.message) && new RegExp(`cannot start: .*EADDRINUSE.*127\\.0\\.0\\.1:${metricsPort}`).test(e.message),
    );
    // A bad address is refused before anything starts.
    const bad = await runCli(["run"], agentEnv(dir, await freePort(), { RINGEDGE_METRICS_LISTEN: "localhost:9464" }));
    assert.equal(bad.code, 78, bad.stderr); // EX_CONFIG (sysexits.h)
    assert.match(bad.stderr, /RINGEDGE_METRICS_LISTEN: "localhost:9464" is not a valid host:port/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
