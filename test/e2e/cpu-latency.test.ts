// The agent with cpuWakeLatencyUs set: it holds the PM QoS request on the real
// /dev/cpu_dma_latency while it runs (where this machine lets it: root, Linux with PM QoS) and
// says so in status; where it cannot, status names the reason and the agent serves anyway.
import assert from "node:assert/strict";
import fs from "node:fs";
import { test } from "node:test";
import { Agent } from "../../agent/agent.ts";
import { PM_QOS_DEVICE } from "../../agent/appliance/cpu-latency.ts";
import { defaultSettings } from "../../agent/config.ts";
import { createLogger } from "../../agent/log.ts";
import { freePort, tempDir } from "./harness.ts";

function writable(p: string): boolean {
  try {
    fs.accessSync(p, fs.constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

test("status reports the CPU wake-up latency request, held on the device or refused with a reason", async () => {
  const port = await freePort();
  const settings = { ...defaultSettings(), dataDir: tempDir("ringedge-cpulat-"), sipListen: [`127.0.0.1:${port}`], sipTransports: ["udp" as const], httpListen: "127.0.0.1:0", cpuWakeLatencyUs: 0 };
  const agent = new Agent(settings, createLogger("silent"));
  await agent.start();
  try {
    const q = agent.status().cpuLatency;
    assert.ok(q !== null);
    assert.equal(q.requestedUs, 0);
    assert.equal(q.device, PM_QOS_DEVICE);
    if (writable(PM_QOS_DEVICE)) {
      assert.equal(q.held, true);
      // Reading the device gives the aggregate request in force: ours (0) is the strictest.
      const fd = fs.openSync(PM_QOS_DEVICE, "r");
      const b = Buffer.alloc(4);
      fs.readSync(fd, b, 0, 4, null);
      fs.closeSync(fd);
      assert.equal(b.readInt32LE(0), 0);
    } else {
      assert.equal(q.held, false);
      assert.ok(!q.held && q.reason.length > 0);
    }
    assert.ok(agent.transport.addresses().length > 0, "the agent serves either way");
  } finally {
    await agent.stop();
  }
  const after = agent.status().cpuLatency;
  assert.equal(after?.held, false);
});

test("without the setting the agent asks nothing of PM QoS (status null)", async () => {
  const port = await freePort();
  const settings = { ...defaultSettings(), dataDir: tempDir("ringedge-cpulat-"), sipListen: [`127.0.0.1:${port}`], sipTransports: ["udp" as const], httpListen: "127.0.0.1:0" };
  const agent = new Agent(settings, createLogger("silent"));
  await agent.start();
  try {
    assert.equal(agent.status().cpuLatency, null);
  } finally {
    await agent.stop();
  }
});
