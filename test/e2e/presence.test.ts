// Presence from OPTIONS keep-alives, against the real agent process and real SIPp phones on
// loopback UDP. The agent probes every binding each RINGEDGE_KEEPALIVE_INTERVAL_S (1 s here);
// a round whose probe gets no answer within the interval is a miss, and
// RINGEDGE_KEEPALIVE_MISSES (2) misses in a row make the device offline while its
// registration stands. An answer makes it online again without a new REGISTER; a REGISTER
// with Expires: 0 makes it offline at once.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import dgram from "node:dgram";
import { freePort, runSipp, seedDevices, startAgent, tempDir, until, writeUsersCsv, type RunningAgent, type SippResult } from "./harness.ts";

interface DeviceJson {
  username: string;
  registered?: boolean;
  online?: boolean;
  lastSeen?: string;
  contacts?: Array<{ contact: string; via: string; expiresInS: number }>;
}

/** Where a device is bound (contact and flow), without the ticking expiry. */
const bindingsOf = (d: DeviceJson): string[] => (d.contacts ?? []).map((c) => `${c.contact} via ${c.via}`);

interface Status {
  devices: { total: number; registered: number; online: number };
}

function sippFailure(r: SippResult): string {
  return `sipp exited ${r.code}\n${r.stdout.slice(-1500)}\n${r.stderr.slice(-1500)}`;
}

describe("presence: keep-alive timeout, recovery, de-registration", () => {
  let agent: RunningAgent;
  let dir: string;
  /** SIPp processes still running, killed when the file ends whatever happened. */
  const running = new Set<ReturnType<typeof runSipp>>();

  const sipp = (args: string[], timeoutMs: number): ReturnType<typeof runSipp> => {
    const run = runSipp(args, timeoutMs);
    running.add(run);
    void run.then(() => running.delete(run));
    return run;
  };

  const device = async (username: string): Promise<DeviceJson> => {
    const r = await agent.cli(["device", "show", username, "--json"]);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as DeviceJson;
  };

  const status = async (): Promise<Status> => {
    const r = await agent.cli(["status", "--json"]);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as Status;
  };

  /** Presence log lines about one device, in order. */
  const presenceLines = (username: string): string[] =>
    agent
      .log()
      .split("\n")
      .filter((l) => new RegExp(`device (online|offline) device=${username} `).test(l));

  before(async () => {
    dir = tempDir();
    await seedDevices(dir, [
      ["5001", "secret-5001"],
      ["5002", "secret-5002"],
    ]);
    agent = await startAgent({
      dataDir: dir,
      env: {
        RINGEDGE_KEEPALIVE_INTERVAL_S: "1",
        RINGEDGE_KEEPALIVE_MISSES: "2",
        RINGEDGE_SIP_T1_MS: "50",
        RINGEDGE_AUTH_ALGORITHMS: "MD5,SHA-256",
      },
    });
  });

  after(async () => {
    for (const run of running) run.proc.kill("SIGKILL");
    await Promise.all(running);
    await agent?.stop();
  });

  test("a phone that stops answering goes offline after the misses (still registered) and comes back on a keep-alive answer, without re-registering", async () => {
    const port = String(await freePort());
    const csv = writeUsersCsv(dir, [["5001", "secret-5001"]]);
    // phone-stay registers and then answers keep-alives (-aa) for up to 60 s.
    const phone = sipp(["-sf", "phone-stay.xml", "-aa", "-inf", csv, "-m", "1", "-d", "60000", "-p", port, "-timeout", "70", "-nd", `127.0.0.1:${agent.port}`], 75_000);
    await agent.waitForLog(/device online device=5001 reason=registered/, 10_000);
    const registered = await device("5001");
    assert.equal(registered.online, true);
    assert.equal(registered.contacts?.length, 1);
    const binding = bindingsOf(registered);
    const grantedS = registered.contacts![0]!.expiresInS;
    // At least one keep-alive round answered by the phone: still online, lastSeen moves on.
    // Waits for that state (bounded) rather than for a fixed time a loaded machine may overrun.
    const later = await until(async () => {
      const d = await device("5001");
      return d.lastSeen !== registered.lastSeen ? d : undefined;
    }, 30_000, 200).catch(() => device("5001"));
    assert.equal(later.online, true);
    assert.notEqual(later.lastSeen, registered.lastSeen, "a keep-alive answer moved lastSeen");

    // The phone dies without a word (power cut). A silent socket takes its port, only to
    // count the keep-alive transactions (distinct branches) that go unanswered.
    phone.proc.kill("SIGKILL");
    await phone;
    const silent = dgram.createSocket("udp4");
    const unanswered = new Set<string>();
    silent.on("message", (m) => {
      const branch = /^Via:[^\r\n]*;branch=([^;\s,]+)/im.exec(m.toString("latin1"))?.[1];
      if (m.toString("latin1").startsWith("OPTIONS ") && branch) unanswered.add(branch);
    });
    await new Promise<void>((resolve) => silent.bind(Number(port), "127.0.0.1", resolve));
    let probesBeforeOffline: number;
    try {
      const offline = await agent.waitForLog(/device offline device=5001 /, 15_000);
      probesBeforeOffline = unanswered.size;
      assert.match(offline, /reason=keepalive-timeout/);
    } finally {
      await new Promise<void>((resolve) => silent.close(() => resolve()));
    }
    // Offline after exactly the configured misses (the next round starts only an interval later).
    assert.equal(probesBeforeOffline, 2, "two unanswered keep-alive rounds, then offline");
    const gone = await device("5001");
    assert.equal(gone.online, false);
    assert.equal(gone.registered, true, "a missed keep-alive does not remove the registration");
    assert.deepEqual(bindingsOf(gone), binding, "the binding is kept");
    const s = await status();
    assert.equal(s.devices.registered, 1);
    assert.equal(s.devices.online, 0);

    // The phone is back on the same address but does not re-register: it only answers OPTIONS.
    const answerer = sipp(["-sf", "presence-answer.xml", "-p", port, "-timeout", "30", "-nd"], 35_000);
    await agent.waitForLog(/device online device=5001 reason=keepalive-ok/, 10_000);
    const again = await device("5001");
    assert.equal(again.online, true);
    assert.equal(again.registered, true);
    assert.deepEqual(bindingsOf(again), binding, "same binding");
    // No REGISTER refreshed it: its remaining time kept running down since the registration.
    assert.ok(again.contacts![0]!.expiresInS <= grantedS - 5, `expires in ${again.contacts![0]!.expiresInS} s, granted ${grantedS} s`);
    assert.deepEqual(
      presenceLines("5001").map((l) => /device (\w+) device=5001 reason=([\w-]+)/.exec(l)!.slice(1).join(" ")),
      ["online registered", "offline keepalive-timeout", "online keepalive-ok"],
    );
    answerer.proc.kill("SIGKILL");
    await answerer;
  });

  test("a phone de-registering (Expires: 0) is offline at once, reason unregistered", async () => {
    const port = String(await freePort());
    const csv = writeUsersCsv(dir, [["5002", "secret-5002"]]);
    const run = sipp(["-sf", "presence-unregister.xml", "-aa", "-inf", csv, "-m", "1", "-d", "1500", "-p", port, "-timeout", "15", "-timeout_error", "-nd", `127.0.0.1:${agent.port}`], 20_000);
    await agent.waitForLog(/device online device=5002 reason=registered/, 10_000);
    const r = await run;
    assert.equal(r.code, 0, sippFailure(r));
    const doneAt = Date.now();
    const offline = await agent.waitForLog(/device offline device=5002 /, 3000);
    // At once: well before a keep-alive could have noticed (2 rounds of 3.2 s at least).
    assert.ok(Date.now() - doneAt < 3000, `offline ${Date.now() - doneAt} ms after the 200`);
    assert.match(offline, /reason=unregistered/);
    const d = await device("5002");
    assert.equal(d.online, false);
    assert.equal(d.registered, false);
    assert.deepEqual(d.contacts, []);
  });
});
