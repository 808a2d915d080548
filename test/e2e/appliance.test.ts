// The firmware hooks against the real agent process: drain with a SIPp call up (the call ends
// normally, new calls get 503 with Retry-After, a too-short drain fails), SIGHUP reload,
// post-upgrade migration of a hand-written version-1 store with its backup kept, rollback
// when the new version fails its health check, boot refusing a damaged store (and recovering
// with the policy flag), health exit codes, factory reset with and without confirmation.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { after, describe, test } from "node:test";
import { ROOT, agentEnv, freePort, runCli, runProgram, runSipp, startAgent, tempDir, until, type ProgramResult, type RunningAgent } from "./harness.ts";
import { Phone, answerAfter } from "./callsim.ts";

const HOOKS = path.join(ROOT, "firmware-hooks");
const cleanups: Array<() => unknown> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

function hook(name: string, args: string[], env: NodeJS.ProcessEnv, stdin = "", timeoutMs = 120_000): Promise<ProgramResult> {
  // The hooks run the sources under test (not a dist/ bundle a developer may have built earlier).
  const withBin = { RINGEDGE_BIN: `${process.execPath} ${path.join(ROOT, "bin", "ringedge.js")}`, ...env };
  return runProgram(path.join(HOOKS, name), args, withBin, { stdin, timeoutMs });
}

/** Kills an agent a hook started in the background (pid file), if still alive. */
function killPidFile(dataDir: string): void {
  try {
    process.kill(Number(fs.readFileSync(path.join(dataDir, "agent.pid"), "utf8")), "SIGKILL");
  } catch {
    // gone already
  }
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

// Independent scenarios (own data directories and ports) run side by side to keep the file short.
describe("firmware hooks against the real agent", { concurrency: true }, () => {
  describe("drain (pre-upgrade hook and SIGTERM)", { concurrency: true }, () => {
    test("a connected SIPp call survives the drain and ends with BYE; new calls get 503 + Retry-After; a short drain fails", async () => {
      const dir = tempDir("ringedge-drain-");
      const site = path.join(dir, "site.json");
      fs.writeFileSync(
        site,
        JSON.stringify({
          schema: "ringedge.site/1",
          version: 1,
          settings: { trunk: { host: "127.0.0.1", port: 5070, transport: "udp", allowedSources: ["127.0.0.1"] } },
          users: [{ id: "anna", extension: "1001", name: "Anna", availability: "available" }],
          devices: [{ id: "desk-anna", owner: "anna", kind: "physical", username: "1001", password: "drain-Secret-1001" }],
          groups: [],
        }),
      );
      const agent = await startAgent({ dataDir: path.join(dir, "data"), env: { RINGEDGE_SITE_FILE: site, RINGEDGE_AUTH_ALGORITHMS: "MD5,SHA-256", RINGEDGE_DRAIN_RETRY_AFTER_S: "77" } });
      cleanups.push(() => agent.kill());
      const env = agentEnv(agent.dataDir, agent.port);

      // Every step waits for a state, never for a clock: the call stays up until the test hangs
      // it up, so a slow (loaded) machine only makes the steps slower, never reorders them.
      const phone = await Phone.register(agent.port, "1001", "drain-Secret-1001", answerAfter(0));
      cleanups.push(() => phone.close());
      // The call: a trunk caller (SIPp) answered by the desk phone; it ends when the phone hangs up.
      const caller = runSipp(["-sf", "route-caller-held.xml", "-s", "1001", "-i", "127.0.0.1", "-p", String(await freePort()), "-m", "1", "-nd", "-timeout", "90", "-timeout_error", `127.0.0.1:${agent.port}`], 95_000);
      cleanups.push(() => caller.proc.kill("SIGKILL"));
      const connected = await until(() => phone.acks[0], 30_000, 20);
      await until(async () => {
        const s = JSON.parse((await agent.cli(["status", "--json"])).stdout) as { proxy: { dialogs: number } };
        return s.proxy.dialogs === 1;
      }, 30_000, 100);

      // Too short: the hook fails, naming the call still up; the agent now refuses new calls.
      const short = await hook("pre-upgrade", ["--timeout", "1"], env);
      assert.equal(short.code, 1, short.stdout + short.stderr);
      assert.match(short.stdout, /not drained after \d+ ms: 0 ringing, 1 connected, 0 queued/);
      assert.match(short.stderr, /calls are still up/);

      let drainedSettled = false;
      const drained = hook("pre-upgrade", ["--timeout", "60"], env, "", 150_000).finally(() => (drainedSettled = true));
      const refused = await runSipp(["-sf", "drain-uac-refused.xml", "-s", "1001", "-i", "127.0.0.1", "-p", String(await freePort()), "-m", "1", "-nd", "-timeout", "30", "-timeout_error", `127.0.0.1:${agent.port}`], 35_000);
      assert.equal(refused.code, 0, `new call not refused with 503: ${refused.stdout.slice(-800)} ${refused.stderr.slice(-800)}`);
      assert.equal(drainedSettled, false, "the drain cannot end while the call is up");
      assert.equal(phone.byes.length, 0, "the call survived the drain so far");

      // The phone hangs up: the BYE crosses the draining agent to the caller, and the drain ends.
      assert.equal(await phone.hangup(connected.callId), 200);
      const c = await caller;
      assert.equal(c.code, 0, `caller (BYE through the draining agent): ${c.stdout.slice(-1200)}`);
      const d = await drained;
      assert.equal(d.code, 0, d.stdout + d.stderr);
      assert.match(d.stdout, /drained in \d+ ms: no calls, store flushed; safe to stop \(1 new calls refused\)/);
      assert.match(d.stdout, /pre-upgrade: safe to stop/);
      assert.match(agent.log(), /draining: new calls are refused with 503/);

      // SIGTERM on an agent already drained stops cleanly, its own drain finding no call.
      assert.equal(await agent.stop(), 0);
      assert.match(agent.log(), /SIGTERM: draining before stop[\s\S]*drained; stopping[\s\S]*ringedge stopped/);
      assert.doesNotMatch(agent.log(), /drain timed out; stopping with calls up/);
    });
  });

  describe("SIGHUP", { concurrency: true }, () => {
    test("reloads live settings, reports those needing a restart, keeps running and refuses an invalid file", async () => {
      const dir = tempDir("ringedge-hup-");
      const conf = path.join(dir, "ringedge.conf.json");
      fs.writeFileSync(conf, JSON.stringify({ keepaliveIntervalS: 30 }));
      const agent = await startAgent({ dataDir: path.join(dir, "data"), env: { RINGEDGE_CONFIG: conf } });
      cleanups.push(() => agent.kill());
      assert.equal((await agent.cli(["device", "add", "1001", "--password", "hup-Secret-1"])).code, 0);
      fs.writeFileSync(conf, JSON.stringify({ keepaliveIntervalS: 5, guardBanS: 600, maxHeaders: 50 }));
      agent.proc.kill("SIGHUP");
      await agent.waitForLog(/settings reloaded applied=keepaliveIntervalS,guardBanS needRestart=maxHeaders/);
      await agent.waitForLog(/SIGHUP: these settings changed but need a restart settings=maxHeaders/);
      fs.writeFileSync(conf, "{ not json");
      agent.proc.kill("SIGHUP");
      await agent.waitForLog(/SIGHUP: settings not reloaded, they are invalid/);
      fs.writeFileSync(conf, JSON.stringify({ keepaliveIntervalS: 5 }));
      const st = await agent.cli(["status", "--json"]);
      assert.equal(st.code, 0);
      assert.equal((JSON.parse(st.stdout) as { devices: { total: number } }).devices.total, 1);

      // console-password --write: only a scrypt hash lands in the file, and the agent reloads it.
      const envConf = agentEnv(agent.dataDir, agent.port, { RINGEDGE_CONFIG: conf });
      const short = await hook("../bin/ringedge.js", ["console-password"], envConf, "short\n");
      assert.equal(short.code, 1);
      assert.match(short.stderr, /8-128 characters/);
      const set = await hook("../bin/ringedge.js", ["console-password", "--write"], envConf, "install-3r-Secret\n");
      assert.equal(set.code, 0, set.stderr);
      assert.match(set.stdout, /serialPassword written to .*\nagent \(pid \d+\) told to reload/);
      const written = JSON.parse(fs.readFileSync(conf, "utf8")) as { keepaliveIntervalS: number; serialPassword: string };
      assert.equal(written.keepaliveIntervalS, 5, "other settings kept");
      assert.match(written.serialPassword, /^scrypt\$16384\$8\$1\$/);
      assert.ok(!fs.readFileSync(conf, "utf8").includes("install-3r-Secret"));
      await agent.waitForLog(/settings reloaded applied=guardBanS,serialPassword/);
      assert.equal(await agent.stop(), 0);
    });
  });

  /** A version-1 store file, written by hand: canonical data (keys sorted), its sha256, the envelope. */
  function writeV1Store(dataDir: string): Buffer {
    fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    const data =
      '{"bindings":[],"devices":[{"createdAt":"2024-05-01T08:00:00.000Z","id":"dev-1001","kind":"physical","password":"v1-Secret-1001","username":"1001"}],' +
      '"meta":{"createdAt":"2024-05-01T08:00:00.000Z","siteId":"site-1"},"routing":{"evenlyLastOffered":{}}}';
    const sha = createHash("sha256").update(data).digest("hex");
    const text = `{\n  "format": "ringedge-store",\n  "schemaVersion": 1,\n  "savedAt": "2024-05-01T08:00:00.000Z",\n  "sha256": "${sha}",\n  "data": ${data}\n}\n`;
    fs.writeFileSync(path.join(dataDir, "ringedge.json"), text, { mode: 0o600 });
    return Buffer.from(text);
  }

  describe("post-upgrade", { concurrency: true }, () => {
    test("migrates a version-1 store, keeps the backup, proves the new version healthy and leaves it stopped", async () => {
      const dataDir = path.join(tempDir("ringedge-upgrade-"), "data");
      const original = writeV1Store(dataDir);
      const env = agentEnv(dataDir, await freePort());
      cleanups.push(() => killPidFile(dataDir));
      const r = await hook("post-upgrade", ["--wait", "20"], env);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      const m = /backup of ringedge\.json in (\S+)/.exec(r.stdout);
      assert.ok(m, r.stdout);
      assert.deepEqual(fs.readFileSync(path.join(m[1]!, "ringedge.json")), original, "backup is the pre-upgrade file, byte for byte");
      assert.match(r.stdout, /post-upgrade: OK: sip listening/);
      assert.match(r.stdout, /upgrade done; backup kept/);
      const check = JSON.parse((await hook("health", ["--json"], env)).stdout) as { ok: boolean };
      assert.equal(check.ok, false, "the trial agent was stopped again");
      const store = JSON.parse(fs.readFileSync(path.join(dataDir, "ringedge.json"), "utf8")) as { schemaVersion: number; data: { devices: Array<{ username: string; origin?: string }>; site: unknown } };
      assert.equal(store.schemaVersion, 3);
      assert.deepEqual(store.data.devices.map((d) => [d.username, d.origin]), [["1001", "local"]]);
      assert.equal(store.data.site, null);
    });

    test("rolls back to the backup and exits 1 when the new version fails its health check", async () => {
      const dir = tempDir("ringedge-rollback-");
      const dataDir = path.join(dir, "data");
      const original = writeV1Store(dataDir);
      // The "new version": the real agent whose health check fails (as a broken build would).
      const wrapper = path.join(dir, "ringedge-broken");
      fs.writeFileSync(wrapper, `#!/usr/bin/env bash\nif [ "$1" = health ]; then echo "FAIL: simulated broken build"; exit 1; fi\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(path.join(ROOT, "bin/ringedge.js"))} "$@"\n`, { mode: 0o755 });
      const env = { ...agentEnv(dataDir, await freePort()), RINGEDGE_BIN: wrapper };
      cleanups.push(() => killPidFile(dataDir));
      const r = await hook("post-upgrade", ["--wait", "3"], env);
      assert.equal(r.code, 1, r.stdout + r.stderr);
      assert.match(r.stderr, /not healthy after 3 s: FAIL: simulated broken build/);
      assert.match(r.stderr, /upgrade failed: the new version is not healthy; restoring the backup/);
      assert.deepEqual(fs.readFileSync(path.join(dataDir, "ringedge.json")), original, "the version-1 store is back, byte for byte");
      assert.ok(fs.readdirSync(path.join(dataDir, "backup")).some((n) => n.startsWith("pre-upgrade-")));
      assert.equal(fs.existsSync(path.join(dataDir, "control.sock")), false, "the trial agent is gone");
    });

    test("refuses to run while an agent is up", async () => {
      const agent = await startAgent();
      cleanups.push(() => agent.kill());
      const r = await hook("post-upgrade", [], agentEnv(agent.dataDir, agent.port));
      assert.equal(r.code, 2);
      assert.match(r.stderr, /stop it \(pre-upgrade --stop\) before post-upgrade/);
      await agent.stop();
    });
  });

  describe("boot, health, factory reset", { concurrency: true }, () => {
    test("boot starts a healthy agent; health exit codes; a damaged store is refused unless the policy recovers it", async () => {
      const dataDir = path.join(tempDir("ringedge-boot-"), "data");
      const env = agentEnv(dataDir, await freePort());
      cleanups.push(() => killPidFile(dataDir));
      const down = await hook("health", [], env);
      assert.equal(down.code, 1);
      assert.match(down.stdout, /^FAIL: no agent answers/);

      const b = await hook("boot", ["--wait", "20"], env);
      assert.equal(b.code, 0, b.stdout + b.stderr);
      const up = await hook("health", [], env);
      assert.equal(up.code, 0, up.stdout);
      assert.match(up.stdout, /^OK: sip listening udp:127\.0\.0\.1:\d+ tcp:127\.0\.0\.1:\d+; store writable; hot path 0\/0 recent calls over 2ms \(too few to judge\); sip answered OPTIONS 200 in \d+ ms\n$/);
      assert.match((await hook("boot", [], env)).stdout, /agent already running/);
      // Two writes so that a last good copy (.bak) exists.
      for (const u of ["1001", "1002"]) assert.equal((await runCli(["device", "add", u, "--password", `boot-Secret-${u}`], env)).code, 0);
      const pid = Number(fs.readFileSync(path.join(dataDir, "agent.pid"), "utf8"));
      const stop = await hook("pre-upgrade", ["--stop"], env);
      assert.equal(stop.code, 0, stop.stdout + stop.stderr);
      assert.equal(alive(pid), false);

      // Power cut mid-write, as the checksum sees it: a truncated file.
      const file = path.join(dataDir, "ringedge.json");
      fs.writeFileSync(file, fs.readFileSync(file).subarray(0, 40));
      const refused = await hook("boot", ["--wait", "5"], env);
      assert.equal(refused.code, 3, refused.stdout + refused.stderr);
      assert.match(refused.stderr, /store damaged: refusing to start/);
      const recovered = await hook("boot", ["--wait", "20", "--auto-recover"], env);
      assert.equal(recovered.code, 0, recovered.stdout + recovered.stderr);
      assert.match(recovered.stderr, /recovering from the last good copy/);
      assert.equal((await hook("health", [], env)).code, 0);
      const stopped = await hook("pre-upgrade", ["--stop"], env);
      assert.equal(stopped.code, 0);
    });

    test("factory reset refuses without confirmation, then stops the agent and wipes data and secrets", async () => {
      const dir = tempDir("ringedge-reset-");
      const conf = path.join(dir, "ringedge.conf.json");
      fs.writeFileSync(conf, JSON.stringify({ siteId: "lab-7", serialPassword: "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=" }));
      const agent: RunningAgent = await startAgent({ dataDir: path.join(dir, "data"), env: { RINGEDGE_CONFIG: conf } });
      cleanups.push(() => agent.kill());
      assert.equal((await agent.cli(["device", "add", "1001", "--password", "reset-Secret-1"])).code, 0);
      const env = agentEnv(agent.dataDir, agent.port, { RINGEDGE_CONFIG: conf });

      for (const answer of ["", "site-1\n", "yes\n"]) {
        const r = await hook("factory-reset", [], env, answer);
        assert.equal(r.code, 1, `answer ${JSON.stringify(answer)}`);
        assert.match(r.stderr, /Type the site id to confirm: [\s\S]*not confirmed: nothing erased/);
      }
      assert.equal(agent.proc.exitCode, null, "the agent still runs");
      assert.ok(fs.existsSync(path.join(agent.dataDir, "ringedge.json")));

      const r = await hook("factory-reset", [], env, "lab-7\n");
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.match(r.stdout, /agent stopped[\s\S]*secrets removed[\s\S]*site lab-7 erased/);
      await until(() => agent.proc.exitCode !== null, 5000, 50);
      assert.deepEqual(fs.readdirSync(agent.dataDir), []);
      assert.deepEqual(JSON.parse(fs.readFileSync(conf, "utf8")), { siteId: "lab-7" });

      const again = await hook("factory-reset", ["--yes"], env);
      assert.equal(again.code, 0, "with --yes and no agent");
    });
  });
});
