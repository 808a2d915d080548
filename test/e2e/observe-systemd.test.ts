// The agent under a NOTIFY_SOCKET stand-in (what systemd hands a Type=notify service): READY=1
// after start, WATCHDOG=1 from the event loop at WatchdogSec/2, STATUS= with calls, phones and
// the console link, STOPPING=1 on the way out. The receiver is a unix datagram socket bound by a
// tiny python3 script (Node has no unix dgram); the agent sends through Debian's systemd-notify.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { startAgent, tempDir, until } from "./harness.ts";

const RECEIVER = `
import socket, sys, json
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print(json.dumps("bound"), flush=True)
while True:
    # recv() takes no ancillary data: the fd of systemd-notify's BARRIER=1 is closed by the
    # kernel, which releases the sender, as systemd does after reading a message.
    print(json.dumps(s.recv(65536).decode("utf-8", "replace")), flush=True)
`;

test("agent under a NOTIFY_SOCKET stand-in sends READY=1, WATCHDOG=1 with STATUS=, and STOPPING=1", { timeout: 60_000 }, async () => {
  const dir = tempDir("ringedge-notify-");
  const sock = path.join(dir, "notify.sock");
  const rx = spawn("python3", ["-c", RECEIVER, sock], { stdio: ["ignore", "pipe", "inherit"] });
  const messages: string[] = [];
  let buf = "";
  rx.stdout!.setEncoding("utf8");
  rx.stdout!.on("data", (d: string) => {
    buf += d;
    let i;
    while ((i = buf.indexOf("\n")) >= 0) {
      messages.push(JSON.parse(buf.slice(0, i)) as string);
      buf = buf.slice(i + 1);
    }
  });
  let agent: Awaited<ReturnType<typeof startAgent>> | undefined;
  try {
    await until(() => messages.includes("bound"), 10_000);
    // WATCHDOG_USEC=600 ms: pings every 300 ms.
    agent = await startAgent({ dataDir: path.join(dir, "data"), env: { NOTIFY_SOCKET: sock, WATCHDOG_USEC: "600000" } });
    const ready = await until(() => messages.find((m) => m.split("\n").includes("READY=1")), 10_000);
    assert.match(ready, /^STATUS=0 calls, 0\/0 phones online, console off$/m);
    // Several pings: the timer keeps running on the event loop.
    await until(() => messages.filter((m) => m.split("\n").includes("WATCHDOG=1")).length >= 3, 10_000);
    const ping = messages.find((m) => m.split("\n").includes("WATCHDOG=1"))!;
    assert.match(ping, /^STATUS=\d+ calls?, \d+\/\d+ phones online, console off$/m);
    // A stopped agent (as a hung event loop) sends no pings: systemd's WatchdogSec would fire.
    const pings = (): number => messages.filter((m) => m.split("\n").includes("WATCHDOG=1")).length;
    agent.proc.kill("SIGSTOP");
    await new Promise((r) => setTimeout(r, 300)); // a ping already in flight lands
    const frozen = pings();
    await new Promise((r) => setTimeout(r, 1200)); // four ping intervals
    assert.equal(pings(), frozen, "no WATCHDOG=1 while the agent cannot run");
    agent.proc.kill("SIGCONT");
    await until(() => pings() > frozen, 10_000);
    assert.equal(await agent.stop(), 0);
    await until(() => messages.some((m) => m.split("\n").includes("STOPPING=1")), 5000);
    assert.match(agent.log(), /systemd notified ready=true watchdogMs=600/);
    assert.doesNotMatch(agent.log(), /systemd notification failed/);
  } finally {
    await agent?.kill();
    rx.kill("SIGKILL");
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("agent without NOTIFY_SOCKET runs as before and sends nothing", { timeout: 30_000 }, async () => {
  const agent = await startAgent();
  try {
    assert.doesNotMatch(agent.log(), /systemd/);
  } finally {
    assert.equal(await agent.stop(), 0);
    fs.rmSync(agent.dataDir, { recursive: true, force: true });
  }
});
