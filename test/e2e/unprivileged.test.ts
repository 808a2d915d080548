// The agent as the unit runs it (User=ringedge: here uid/gid 65534) after each tool an installer
// or the firmware runs as root: an offline CLI write to the store, console-password --write,
// store recover, post-upgrade (migration and a trial run as root) and factory-reset. After each,
// every file in the data directory still belongs to the directory's owner, the settings file
// keeps its owner and mode, and the unprivileged agent starts and reloads on SIGHUP.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { after, test } from "node:test";
import { ROOT, agentEnv, freePort, runProgram, startAgent, tempDir, until, type ProgramResult, type RunningAgent } from "./harness.ts";

const USER = { uid: 65534, gid: 65534 };
const cleanups: Array<() => unknown> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

/** Runs a program (a hook, or the CLI through node) as root with stdin; bounded in time. */
function run(cmd: string, args: string[], env: NodeJS.ProcessEnv, stdin = "", timeoutMs = 60_000): Promise<ProgramResult> {
  return runProgram(cmd, args, env, { stdin, timeoutMs });
}

/** Every entry under dir (and dir itself) that does not belong to USER. */
function foreignEntries(dir: string): string[] {
  const bad: string[] = [];
  const walk = (p: string): void => {
    const st = fs.lstatSync(p);
    if (st.uid !== USER.uid || st.gid !== USER.gid) bad.push(`${path.relative(dir, p) || "."} ${st.uid}:${st.gid}`);
    if (st.isDirectory()) for (const n of fs.readdirSync(p)) walk(path.join(p, n));
  };
  walk(dir);
  return bad;
}

test("an unprivileged agent starts and reloads after every tool run as root", { timeout: 240_000 }, async () => {
  assert.equal(process.getuid?.(), 0, "this test runs as root (as CI does): it hands files to another uid");
  const base = tempDir("ringedge-unpriv-");
  cleanups.push(() => fs.rmSync(base, { recursive: true, force: true }));
  fs.chmodSync(base, 0o755);
  const dataDir = path.join(base, "data");
  fs.mkdirSync(dataDir, { mode: 0o700 });
  fs.chownSync(dataDir, USER.uid, USER.gid);
  // /etc/ringedge as the unit has it: a root directory, the file the agent's (0640).
  const etc = path.join(base, "etc");
  fs.mkdirSync(etc, { mode: 0o755 });
  const conf = path.join(etc, "ringedge.conf.json");
  fs.writeFileSync(conf, JSON.stringify({ siteId: "lab-u", mqttPassword: "broker-secret" }), { mode: 0o640 });
  fs.chmodSync(conf, 0o640);
  fs.chownSync(conf, USER.uid, USER.gid);

  const port = await freePort();
  const env = { ...agentEnv(dataDir, port, { RINGEDGE_CONFIG: conf }), RINGEDGE_BIN: `${process.execPath} ${path.join(ROOT, "bin", "ringedge.js")}` };
  const cli = (args: string[], stdin = ""): ReturnType<typeof run> => run(process.execPath, [path.join(ROOT, "bin", "ringedge.js"), ...args], env, stdin);
  const hook = (name: string, args: string[]): ReturnType<typeof run> => run(path.join(ROOT, "firmware-hooks", name), args, env);

  const settingsFileKept = (): void => {
    const st = fs.statSync(conf);
    assert.deepEqual([st.uid, st.gid, st.mode & 0o777], [USER.uid, USER.gid, 0o640], "the settings file keeps its owner and mode");
  };
  /** Starts the agent as USER, proves it healthy and that it reloads on SIGHUP, then stops it. */
  const unprivilegedAgentWorks = async (after: string): Promise<RunningAgent> => {
    assert.deepEqual(foreignEntries(dataDir), [], `after ${after}: files in the data directory not the agent user's`);
    settingsFileKept();
    const agent = await startAgent({ dataDir, port, env: { RINGEDGE_CONFIG: conf }, user: USER }).catch((e: Error) => {
      throw new Error(`after ${after}, the unprivileged agent did not start: ${e.message}`);
    });
    cleanups.push(() => agent.kill());
    const health = await agent.cli(["health"]);
    assert.equal(health.code, 0, `after ${after}: ${health.stdout}${health.stderr}`);
    agent.proc.kill("SIGHUP");
    await agent.waitForLog(/settings reloaded/, 10_000);
    assert.doesNotMatch(agent.log(), /SIGHUP: settings not reloaded|EACCES/, `after ${after}`);
    return agent;
  };

  // 1. An offline CLI write (no agent running): the store, its copy and lock are created by root.
  const added = await cli(["device", "add", "1001", "--password", "unpriv-Secret-1001"]);
  assert.equal(added.code, 0, added.stderr);
  let agent = await unprivilegedAgentWorks("device add (offline)");

  // 2. console-password --write as root while the agent runs: the file is rewritten, the agent told.
  const pw = await cli(["console-password", "--write"], "installer-Secret-9\n");
  assert.equal(pw.code, 0, pw.stderr);
  assert.match(pw.stdout, /serialPassword written to .*agent \(pid \d+\) told to reload/s);
  await until(() => /settings reloaded applied=serialPassword/.test(agent.log()), 10_000, 50);
  settingsFileKept();
  assert.equal(await agent.stop(), 0);
  agent = await unprivilegedAgentWorks("console-password --write");
  assert.equal(await agent.stop(), 0);

  // 3. store recover as root, after the store was damaged.
  fs.writeFileSync(path.join(dataDir, "ringedge.json"), "{ damaged");
  const recovered = await cli(["store", "recover"]);
  assert.equal(recovered.code, 0, recovered.stderr);
  agent = await unprivilegedAgentWorks("store recover");
  assert.equal(await agent.stop(), 0);

  // 4. post-upgrade as root: a version-1 store migrated, a trial agent run as root, its log kept.
  const data =
    '{"bindings":[],"devices":[{"createdAt":"2024-05-01T08:00:00.000Z","id":"dev-1001","kind":"physical","password":"v1-Secret-1001","username":"1001"}],' +
    '"meta":{"createdAt":"2024-05-01T08:00:00.000Z","siteId":"lab-u"},"routing":{"evenlyLastOffered":{}}}';
  const sha = createHash("sha256").update(data).digest("hex");
  fs.writeFileSync(path.join(dataDir, "ringedge.json"), `{"format":"ringedge-store","schemaVersion":1,"savedAt":"2024-05-01T08:00:00.000Z","sha256":"${sha}","data":${data}}\n`);
  const upgraded = await hook("post-upgrade", ["--wait", "30"]);
  assert.equal(upgraded.code, 0, upgraded.stdout + upgraded.stderr);
  assert.ok(fs.existsSync(path.join(dataDir, "ringedge.json.v1.bak")), "the migration kept the version-1 file");
  agent = await unprivilegedAgentWorks("post-upgrade");
  const list = JSON.parse((await agent.cli(["device", "list", "--json"])).stdout) as Array<{ username: string }>;
  assert.deepEqual(list.map((d) => d.username), ["1001"], "the migrated store is the one the agent reads");
  assert.equal(await agent.stop(), 0);

  // 5. factory-reset as root: the data directory is emptied, the secrets leave the settings file.
  const reset = await hook("factory-reset", ["--yes"]);
  assert.equal(reset.code, 0, reset.stdout + reset.stderr);
  assert.deepEqual(JSON.parse(fs.readFileSync(conf, "utf8")), { siteId: "lab-u" });
  agent = await unprivilegedAgentWorks("factory-reset");
  assert.equal(await agent.stop(), 0);

  // 6. The offline voicemail CLI as root on a data directory with no mailbox folders yet: the
  // folders it makes (voicemail/boxes, voicemail/greetings) are the agent user's.
  fs.rmSync(path.join(dataDir, "voicemail"), { recursive: true, force: true });
  const listed = await cli(["voicemail", "list", "--json"]);
  assert.equal(listed.code, 0, listed.stderr);
  assert.ok(fs.existsSync(path.join(dataDir, "voicemail", "boxes")), "the CLI made the mailbox folders");
  agent = await unprivilegedAgentWorks("voicemail list (offline)");
  assert.equal(await agent.stop(), 0);
});
