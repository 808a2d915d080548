// The store's crash and corruption handling, end to end through the real `ringedge` command:
// a damaged ringedge.json stops `ringedge run` at once with a message naming the file and
// `ringedge store recover`, and is left exactly as it was; `store check` reports it; `store
// recover` promotes the last good copy and the agent then starts with its devices. A file
// from a newer release is refused, and a second agent on the same data directory is locked out.
import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { Store } from "../../agent/store/store.ts";
import { agentEnv, freePort, ROOT, runCli, startAgent, tempDir, until, type RunningAgent } from "./harness.ts";

const running: RunningAgent[] = [];
after(async () => {
  await Promise.all(running.map((a) => a.stop()));
});

/**
 * A data directory whose ringedge.json holds devices d1 and d2 and whose last good copy
 * (ringedge.json.bak, rotated on each write) holds d1 only: open writes the empty store,
 * each flush writes once more.
 */
async function goodDataDir(): Promise<{ dir: string; file: string; bak: string }> {
  const dir = tempDir("ringedge-store-e2e-");
  const store = await Store.open(dir, { siteId: "site-1" });
  try {
    for (const username of ["d1", "d2"]) {
      const r = store.addDevice({ username, password: `pw-${username}-secret`, kind: "physical" });
      if (!r.ok) throw new Error(r.error.message);
      await store.flush();
    }
  } finally {
    await store.close();
  }
  const file = path.join(dir, "ringedge.json");
  return { dir, file, bak: `${file}.bak` };
}

async function cli(dir: string, args: string[]) {
  return runCli(args, agentEnv(dir, await freePort()), 15_000);
}

/** Files of the data directory, for "nothing was created or removed" checks. */
const listing = (dir: string): string[] => fs.readdirSync(dir).sort();

const damages: Array<{ name: string; damage: (bytes: Buffer) => Buffer; reason: RegExp }> = [
  {
    name: "bytes flipped inside the data (still valid JSON)",
    damage: (b) => {
      const out = Buffer.from(b);
      const at = out.indexOf("pw-d2-secret") + 3;
      assert.ok(at > 3);
      for (let i = at; i < at + 4; i++) out[i] = out[i]! ^ 0x01; // "d2-s" -> "e3,r": a silent bit rot
      return out;
    },
    reason: /checksum mismatch/,
  },
  { name: "truncated", damage: (b) => b.subarray(0, Math.floor(b.length / 2)), reason: /truncated|ends early/ },
  { name: "empty", damage: () => Buffer.alloc(0), reason: /empty/ },
];

describe("a damaged store stops the agent; store recover promotes the last good copy", () => {
  for (const d of damages) {
    test(`${d.name}: run refuses promptly, check reports, recover restores, the agent starts`, async () => {
      const { dir, file, bak } = await goodDataDir();
      const bakBytes = fs.readFileSync(bak);
      const damaged = d.damage(fs.readFileSync(file));
      fs.writeFileSync(file, damaged);
      const filesBefore = listing(dir);

      const t0 = Date.now();
      const run = await cli(dir, ["run"]);
      assert.ok(Date.now() - t0 < 5000, "exits promptly instead of waiting or serving");
      assert.notEqual(run.code, 0);
      assert.ok(run.stderr.includes(file), `names the file: ${run.stderr}`);
      assert.ok(run.stderr.includes("ringedge store recover"), `names the recover command: ${run.stderr}`);
      assert.match(run.stderr, d.reason);
      assert.doesNotMatch(run.stderr, /ringedge started/);
      assert.deepEqual(fs.readFileSync(file), damaged, "the damaged file is untouched");
      assert.deepEqual(listing(dir), filesBefore, "no lock, socket or new store left behind");

      const check = await cli(dir, ["store", "check"]);
      assert.equal(check.code, 1);
      const report = JSON.parse(check.stdout) as { ok: boolean; file: string; error: string; backup: { usable: boolean } };
      assert.equal(report.ok, false);
      assert.equal(report.file, file);
      assert.match(report.error, d.reason);
      assert.equal(report.backup.usable, true);
      assert.deepEqual(fs.readFileSync(file), damaged, "check reads only");

      const rec = await cli(dir, ["store", "recover"]);
      assert.equal(rec.code, 0, rec.stderr);
      const result = JSON.parse(rec.stdout) as { restoredFrom: string; corruptKeptAs: string };
      assert.equal(result.restoredFrom, bak);
      assert.deepEqual(fs.readFileSync(file), bakBytes, "the last good copy is now the store");
      assert.deepEqual(fs.readFileSync(result.corruptKeptAs), damaged, "the damaged file is kept aside, byte for byte");
      assert.equal((await cli(dir, ["store", "check"])).code, 0);

      const agent = await startAgent({ dataDir: dir });
      running.push(agent);
      const list = await agent.cli(["device", "list", "--json"]);
      assert.equal(list.code, 0, list.stderr);
      assert.deepEqual((JSON.parse(list.stdout) as Array<{ username: string }>).map((x) => x.username), ["d1"], "the devices of the last good copy");
      assert.equal(await agent.stop(), 0, `clean exit; log:\n${agent.log().slice(-3000)}`);
    });
  }

  test("recover with no usable copy refuses and changes nothing", async () => {
    const { dir, file, bak } = await goodDataDir();
    fs.writeFileSync(file, "");
    fs.rmSync(bak);
    const rec = await cli(dir, ["store", "recover"]);
    assert.notEqual(rec.code, 0);
    assert.ok(rec.stderr.includes(file), rec.stderr);
    assert.deepEqual(listing(dir), ["ringedge.json"]);
    assert.equal(fs.readFileSync(file).length, 0);
  });
});

describe("refusals that protect the data", () => {
  test("a store written by a newer release (future schemaVersion) is refused with a clear message", async () => {
    const { dir, file } = await goodDataDir();
    // The checksum covers "data" only, so this is a well-formed file from schema version 99.
    const future = fs.readFileSync(file, "utf8").replace(/"schemaVersion": \d+/, '"schemaVersion": 99');
    fs.writeFileSync(file, future);
    const run = await cli(dir, ["run"]);
    assert.notEqual(run.code, 0);
    assert.ok(run.stderr.includes(file), run.stderr);
    assert.match(run.stderr, /schemaVersion 99/);
    assert.match(run.stderr, /newer release/);
    assert.equal(fs.readFileSync(file, "utf8"), future, "not downgraded or rewritten");
    const check = await cli(dir, ["store", "check"]);
    assert.equal(check.code, 1);
    const report = JSON.parse(check.stdout) as { ok: boolean; schemaVersion: number };
    assert.equal(report.ok, false);
    assert.equal(report.schemaVersion, 99);
    // The older copy is no way round it either: recover refuses while the file is not damaged.
    const rec = await cli(dir, ["store", "recover"]);
    assert.notEqual(rec.code, 0);
    assert.equal(fs.readFileSync(file, "utf8"), future);
  });

  test("a second agent on the same data directory is refused while the first runs", async () => {
    const { dir, file } = await goodDataDir();
    const first = await startAgent({ dataDir: dir });
    running.push(first);
    const second = await cli(dir, ["run"]);
    assert.notEqual(second.code, 0);
    assert.ok(second.stderr.includes(file), second.stderr);
    assert.match(second.stderr, new RegExp(`in use by process ${first.proc.pid}`));
    // Recovering under a running agent is refused too; the agent keeps serving.
    const rec = await first.cli(["store", "recover"]);
    assert.notEqual(rec.code, 0);
    assert.match(rec.stderr, /stop the agent/);
    const status = await first.cli(["status", "--json"]);
    assert.equal(status.code, 0);
    assert.equal((JSON.parse(status.stdout) as { pid: number }).pid, first.proc.pid);
    assert.equal(await first.stop(), 0, `clean exit; log:\n${first.log().slice(-3000)}`);
    // Once it is gone the lock is released and the next agent starts.
    const next = await startAgent({ dataDir: dir });
    running.push(next);
    assert.equal(await next.stop(), 0, `clean exit; log:\n${next.log().slice(-3000)}`);
  });

  test("SIGTERM while the agent is still starting stops it cleanly once started (store closed, lock released)", async () => {
    // Before the fix the signal handlers were installed only after start(): a SIGTERM in that
    // window (a supervisor stopping a slow start, or one sent the moment "started" is logged)
    // killed the process by the default action, leaving the lock and unsaved changes behind.
    const dir = tempDir("ringedge-store-e2e-");
    const store = await Store.open(dir, { siteId: "site-1" });
    for (let i = 0; i < 3000; i++) store.addDevice({ username: `s${i}`, password: `pw-s${i}-secret`, kind: "physical" });
    await store.close(); // a big store: start() spends a while reading and checking it
    const lock = path.join(dir, "ringedge.json.lock");
    const proc = spawn(process.execPath, [path.join(ROOT, "bin/ringedge.js"), "run"], { env: agentEnv(dir, await freePort()), cwd: ROOT, stdio: ["ignore", "ignore", "pipe"] });
    let log = "";
    proc.stderr!.on("data", (d) => (log += d));
    const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => proc.on("exit", (code, signal) => resolve({ code, signal })));
    const guard = setTimeout(() => proc.kill("SIGKILL"), 15_000);
    try {
      // Store.open takes the lock first thing in start(): from then on the agent is starting.
      await until(() => fs.existsSync(lock), 10_000, 1);
      assert.doesNotMatch(log, /ringedge started/, "the signal goes in during start-up");
      proc.kill("SIGTERM");
      const end = await exited;
      assert.deepEqual(end, { code: 0, signal: null }, `clean exit; log:\n${log}`);
      assert.match(log, /ringedge started/, "start-up completed before the stop");
      assert.match(log, /ringedge stopped/);
      assert.ok(!fs.existsSync(lock), "the store lock was released");
    } finally {
      clearTimeout(guard);
      proc.kill("SIGKILL");
    }
  });
});
