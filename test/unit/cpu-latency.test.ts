// The PM QoS request (agent/appliance/cpu-latency.ts) against a regular file standing in for
// /dev/cpu_dma_latency: what is written, that the descriptor stays open while held (the kernel
// keeps the request exactly that long) and closes on release, and every refusal as a status.
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { CpuLatencyRequest } from "../../agent/appliance/cpu-latency.ts";
import { loadSettings } from "../../agent/config.ts";
import { tempDir } from "../tmpdir.ts";

const dir = tempDir("ringedge-cpulat-");

/** Paths this process has open, from /proc/self/fd. */
function openPaths(): string[] {
  return fs.readdirSync("/proc/self/fd").flatMap((fd) => {
    try {
      return [fs.readlinkSync(`/proc/self/fd/${fd}`)];
    } catch {
      return [];
    }
  });
}

test("hold writes the value as a 32-bit integer and keeps the descriptor open until release", () => {
  const device = path.join(dir, "qos-a");
  fs.writeFileSync(device, "");
  const req = CpuLatencyRequest.hold(75, device);
  assert.deepEqual(req.status, { requestedUs: 75, held: true, device });
  assert.equal(req.held, true);
  const bytes = fs.readFileSync(device);
  assert.equal(bytes.length, 4);
  assert.equal(bytes.readInt32LE(0), 75);
  assert.ok(openPaths().includes(device), "the descriptor is open while held");
  req.release();
  assert.equal(req.held, false);
  assert.ok(!openPaths().includes(device), "release closed it");
  assert.deepEqual(req.status, { requestedUs: 75, held: false, device, reason: "released" });
  req.release(); // idempotent
  assert.equal(req.held, false);
});

test("0 (poll) is a valid request", () => {
  const device = path.join(dir, "qos-0");
  fs.writeFileSync(device, "");
  const req = CpuLatencyRequest.hold(0, device);
  assert.equal(req.held, true);
  assert.equal(fs.readFileSync(device).readInt32LE(0), 0);
  req.release();
});

test("a missing device is reported, not thrown, and nothing is held", () => {
  const device = path.join(dir, "no-such-device");
  const req = CpuLatencyRequest.hold(0, device);
  assert.equal(req.held, false);
  assert.equal(req.status.held, false);
  assert.match((req.status as { reason: string }).reason, /does not exist/);
  assert.equal(fs.existsSync(device), false, "nothing was created");
});

test("a device that cannot be written (a directory) is reported with its error", () => {
  const req = CpuLatencyRequest.hold(10, dir);
  assert.equal(req.held, false);
  assert.match((req.status as { reason: string }).reason, new RegExp(dir.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")));
  assert.ok(!openPaths().includes(dir));
});

test("values that are not a whole number of µs ≥ 0 are refused before opening anything", () => {
  const device = path.join(dir, "qos-bad");
  fs.writeFileSync(device, "");
  for (const v of [-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
    const req = CpuLatencyRequest.hold(v, device);
    assert.equal(req.held, false, String(v));
    assert.match((req.status as { reason: string }).reason, /whole number/);
  }
  assert.equal(fs.readFileSync(device).length, 0, "nothing was written");
});

test("setting cpuWakeLatencyUs: -1 (off) by default, 0..1000000 accepted, anything else named", () => {
  const base = { defaultConfigPath: null };
  assert.equal(loadSettings({ ...base, env: {} }).cpuWakeLatencyUs, -1);
  assert.equal(loadSettings({ ...base, env: { RINGEDGE_CPU_WAKE_LATENCY_US: "0" } }).cpuWakeLatencyUs, 0);
  assert.equal(loadSettings({ ...base, env: { RINGEDGE_CPU_WAKE_LATENCY_US: "20" } }).cpuWakeLatencyUs, 20);
  for (const bad of ["-2", "abc", "1.5", "1000001"]) {
    assert.throws(() => loadSettings({ ...base, env: { RINGEDGE_CPU_WAKE_LATENCY_US: bad } }), (e: Error & { setting?: string }) => e.setting === "cpuWakeLatencyUs", bad);
  }
});
