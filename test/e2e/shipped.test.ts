// The agent as shipped (bin/ringedge running the esbuild bundle on plain node, as `make run`, the
// systemd unit and the firmware hooks start it), which every other test replaces with the
// sources through tsx: the bundle is built here by the Makefile's bin/build.mjs, into a temporary
// tree next to a copy of bin/ringedge, and run. The launcher's settings reach the process
// (--expose-gc for the idle collections, agent/appliance/idle-gc.ts; MALLOC_ARENA_MAX), a phone
// registers, and SIGTERM stops it cleanly.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { ROOT, agentEnv, freePort, removeTempDir, runCli, seedDevices, tempDir, until } from "./harness.ts";
import { SipClient, registerWithAuth } from "./sipclient.ts";

test("the shipped bundle under bin/ringedge: gc exposed for the idle collections, malloc arenas capped, a phone registers, SIGTERM stops it", async (t) => {
  const tree = tempDir("ringedge-shipped-");
  t.after(() => removeTempDir(tree));
  // @ts-expect-error: a plain .mjs script without declarations (the Makefile's build).
  const { buildBundles } = (await import("../../bin/build.mjs")) as { buildBundles: (outDir: string) => Promise<string> };
  await buildBundles(path.join(tree, "dist"));
  fs.mkdirSync(path.join(tree, "bin"));
  fs.copyFileSync(path.join(ROOT, "bin/ringedge"), path.join(tree, "bin/ringedge"));
  fs.chmodSync(path.join(tree, "bin/ringedge"), 0o755);
  fs.symlinkSync(path.join(ROOT, "node_modules"), path.join(tree, "node_modules"));

  const dataDir = tempDir("ringedge-shipped-data-");
  t.after(() => removeTempDir(dataDir));
  await seedDevices(dataDir, [["201", "secret-201"]]);
  const port = await freePort();
  const env: NodeJS.ProcessEnv = { ...agentEnv(dataDir, port), RINGEDGE_NODE: process.execPath };
  delete env.MALLOC_ARENA_MAX;
  const proc = spawn(path.join(tree, "bin/ringedge"), ["run"], { env, stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  proc.stderr!.setEncoding("utf8").on("data", (c: string) => (log += c));
  const exited = new Promise<number | null>((resolve) => proc.on("exit", (code) => resolve(code)));
  t.after(() => proc.exitCode === null && proc.kill("SIGKILL"));
  await until(() => /ringedge started/.test(log) || proc.exitCode !== null, 60_000);
  assert.match(log, /ringedge started/, log.slice(-2000));

  // The process is the bundle on plain node with the launcher's flags and environment.
  const cmdline = fs.readFileSync(`/proc/${proc.pid}/cmdline`, "utf8").split("\0");
  assert.ok(cmdline.includes("--expose-gc") && cmdline.includes("--max-semi-space-size=4"), cmdline.join(" "));
  assert.ok(cmdline.some((a) => a.endsWith(path.join("dist", "ringedge.mjs"))), cmdline.join(" "));
  assert.ok(fs.readFileSync(`/proc/${proc.pid}/environ`, "utf8").split("\0").includes("MALLOC_ARENA_MAX=2"));
  const status = await runCli(["status", "--json"], env);
  assert.equal(status.code, 0, status.stderr);
  const st = JSON.parse(status.stdout) as { idleCollections: number | null; memory: { heapUsed: number } };
  assert.equal(st.idleCollections, 0, "gc() is exposed: the idle collector runs (none yet)");
  assert.ok(st.memory.heapUsed > 0);

  // It serves: a phone registers with digest.
  const phone = await SipClient.open(port);
  try {
    const r = await registerWithAuth(phone, "201", { password: "secret-201" });
    assert.equal(r.final.status, 200, r.final.statusLine);
  } finally {
    phone.close();
  }

  proc.kill("SIGTERM");
  assert.equal(await exited, 0, log.slice(-2000));
});
