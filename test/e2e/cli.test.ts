// The `ringedge` command line, run as a real process: device commands with no agent (the CLI
// opens the store itself) and with a running agent (through its control socket), their JSON
// shapes, password disclosure, input and usage errors with their exit codes, help for every
// command, and settings that stop start-up naming the culprit.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { SETTING_NAMES } from "../../agent/config.ts";
import { agentEnv, freePort, runCli, startAgent, tempDir, type RunningAgent } from "./harness.ts";
import { registerWithAuth, SipClient } from "./sipclient.ts";

type Cli = (args: string[]) => Promise<{ code: number; stdout: string; stderr: string }>;

const USAGE = 2; // usage errors: missing arguments, unknown command or flag value
const REFUSED = 1; // the command ran and refused its input

interface DeviceJson {
  id: string;
  username: string;
  kind: string;
  createdAt: string;
  displayName?: string;
  owner?: string;
  password?: string;
  registered?: boolean;
  online?: boolean;
  contacts?: unknown[];
}

async function json<T>(cli: Cli, args: string[]): Promise<T> {
  const r = await cli([...args, "--json"]);
  assert.equal(r.code, 0, `ringedge ${args.join(" ")}: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

/**
 * The same installer session on either path. `live` adds what only a running agent knows
 * (registered/online/contacts) to the expected shape.
 */
async function deviceSession(cli: Cli, live: boolean): Promise<void> {
  const liveKeys = live ? ["contacts", "online", "registered"] : [];

  const added = await json<DeviceJson>(cli, ["device", "add", "1001", "--password", "secret-1001", "--kind", "soft", "--name", "Front desk", "--owner", "op-7"]);
  assert.deepEqual(Object.keys(added).sort(), ["createdAt", "displayName", "id", "kind", "owner", "username", ...liveKeys].sort());
  assert.equal(added.id, "dev-1001");
  assert.equal(added.username, "1001");
  assert.equal(added.kind, "soft");
  assert.equal(added.displayName, "Front desk");
  assert.equal(added.owner, "op-7");
  assert.ok(!Number.isNaN(Date.parse(added.createdAt)));
  assert.equal(added.password, undefined, "a password given on the command line is not echoed");

  // A generated password: hidden by default, shown once with --show-password.
  const quiet = await cli(["device", "add", "1002"]);
  assert.equal(quiet.code, 0, quiet.stderr);
  assert.match(quiet.stdout, /^added device 1002 \(physical\) id dev-1002\n$/, quiet.stderr);
  const shown = await json<DeviceJson>(cli, ["device", "add", "1003", "--show-password"]);
  assert.match(shown.password ?? "", /^[A-Za-z0-9_-]{24}$/, "a strong generated password");
  const text = await cli(["device", "add", "1004", "--show-password"]);
  assert.match(text.stdout, /^added device 1004 \(physical\) id dev-1004\npassword: [A-Za-z0-9_-]{24}\n$/, text.stderr);

  const list = await json<DeviceJson[]>(cli, ["device", "list"]);
  assert.deepEqual(list.map((d) => d.username), ["1001", "1002", "1003", "1004"]);
  for (const d of list) {
    assert.equal(d.password, undefined, "list never shows passwords");
    if (live) {
      assert.equal(d.registered, false);
      assert.equal(d.online, false);
      assert.deepEqual(d.contacts, []);
    } else {
      assert.equal(d.registered, undefined, "offline, presence is unknown rather than false");
    }
  }
  const table = await cli(["device", "list"]);
  assert.equal(table.code, 0, table.stderr);
  assert.match(table.stdout, /^USERNAME +KIND +STATE +NAME +ID\n/);
  assert.match(table.stdout, new RegExp(`\\n1001 +soft +${live ? "offline" : "-"} +Front desk +dev-1001\\n`));

  const show = await json<DeviceJson>(cli, ["device", "show", "dev-1003"]);
  assert.equal(show.username, "1003", "show takes an id");
  assert.equal(show.password, undefined);
  const secret = await json<DeviceJson>(cli, ["device", "show", "1003", "--show-password"]);
  assert.equal(secret.password, shown.password, "the shown password is the stored one");

  // Refused input: exit 1, a message naming the problem, nothing changed.
  const dup = await cli(["device", "add", "1001", "--password", "another-secret"]);
  assert.equal(dup.code, REFUSED);
  assert.match(dup.stderr, /username '1001' already exists/);
  const invalid = await cli(["device", "add", "bad name", "--password", "another-secret"]);
  assert.equal(invalid.code, REFUSED);
  assert.match(invalid.stderr, /username 'bad name' is not valid/);
  const kind = await cli(["device", "add", "1005", "--password", "another-secret", "--kind", "robot"]);
  assert.equal(kind.code, REFUSED);
  assert.match(kind.stderr, /kind must be 'physical' or 'soft', not 'robot'/);
  const weak = await cli(["device", "add", "1005", "--password", "short"]);
  assert.equal(weak.code, REFUSED);
  assert.match(weak.stderr, /password must be 8-128/);
  const missing = await cli(["device", "show", "nobody"]);
  assert.equal(missing.code, REFUSED);
  assert.match(missing.stderr, /no device 'nobody'/);
  assert.deepEqual((await json<DeviceJson[]>(cli, ["device", "list"])).map((d) => d.username), ["1001", "1002", "1003", "1004"]);

  const removed = await json<{ removed: string; id: string }>(cli, ["device", "remove", "1002"]);
  assert.deepEqual(removed, { removed: "1002", id: "dev-1002" });
  const again = await cli(["device", "remove", "1002"]);
  assert.equal(again.code, REFUSED);
  assert.match(again.stderr, /no device '1002'/);
  assert.deepEqual((await json<DeviceJson[]>(cli, ["device", "list"])).map((d) => d.username), ["1001", "1003", "1004"]);
}

describe("device commands with no agent running (the CLI opens the store)", () => {
  const dir = tempDir("ringedge-cli-e2e-");
  let env: NodeJS.ProcessEnv;
  before(async () => {
    env = agentEnv(dir, await freePort());
  });

  test("add/list/show/remove, JSON shapes, passwords and refusals", async () => {
    await deviceSession((args) => runCli(args, env), false);
    assert.ok(!fs.existsSync(path.join(dir, "ringedge.json.lock")), "each command releases the store lock");
    assert.ok(!fs.existsSync(path.join(dir, "control.sock")));
  });

  test("status needs a running agent (exit 3)", async () => {
    const r = await runCli(["status", "--json"], env);
    assert.equal(r.code, 3);
    assert.match(r.stderr, new RegExp(`no agent is running on data directory ${dir.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}`));
    assert.equal(r.stdout, "");
  });

  test("an agent started afterwards serves the devices the offline CLI wrote", async () => {
    const agent = await startAgent({ dataDir: dir });
    try {
      const list = await json<DeviceJson[]>(agent.cli, ["device", "list"]);
      assert.deepEqual(list.map((d) => d.username), ["1001", "1003", "1004"]);
      assert.equal(list[0]!.online, false, "now presence is known");
    } finally {
      await agent.stop();
    }
  });
});

describe("device commands with a running agent (through the control socket)", () => {
  let agent: RunningAgent;
  const clients: SipClient[] = [];
  before(async () => {
    agent = await startAgent({ env: { RINGEDGE_AUTH_ALGORITHMS: "MD5" } });
  });
  after(async () => {
    for (const c of clients) c.close();
    await agent?.stop();
  });

  test("add/list/show/remove, JSON shapes, passwords and refusals", async () => {
    await deviceSession(agent.cli, true);
    // The agent holds the store: its lock names the agent, not a CLI process.
    const lock = JSON.parse(fs.readFileSync(path.join(agent.dataDir, "ringedge.json.lock"), "utf8")) as { pid: number };
    assert.equal(lock.pid, agent.proc.pid);
  });

  test("a device added through the CLI registers at once with its generated password; removal unbinds it", async () => {
    const added = await json<DeviceJson>(agent.cli, ["device", "add", "2001", "--show-password"]);
    const c = await SipClient.open(agent.port);
    clients.push(c);
    const x = await registerWithAuth(c, "2001", { password: added.password!, expires: 600 });
    assert.equal(x.final.status, 200);
    const shown = await json<DeviceJson>(agent.cli, ["device", "show", "2001"]);
    assert.equal(shown.registered, true);
    assert.equal(shown.online, true);
    assert.equal(shown.contacts?.length, 1);
    const status = await json<{ bindings: number; devices: { total: number; registered: number } }>(agent.cli, ["status"]);
    assert.equal(status.bindings, 1);
    assert.equal(status.devices.registered, 1);

    await json(agent.cli, ["device", "remove", "2001"]);
    assert.equal((await json<{ bindings: number }>(agent.cli, ["status"])).bindings, 0, "its binding went with it");
    // Its credentials are gone too: the same answer as any wrong password.
    const y = await registerWithAuth(c, "2001", { password: added.password!, expires: 600 });
    assert.equal(y.final.status, 403);
  });

  test("status --json shape and text form", async () => {
    const s = await json<Record<string, unknown>>(agent.cli, ["status"]);
    // AgentStatus may grow; these are the fields installers and scripts rely on.
    for (const key of ["bindings", "devices", "guard", "pid", "sip", "siteId", "startedAt", "store", "transactions", "transport", "uptimeS"]) {
      assert.ok(key in s, `status has ${key}`);
    }
    assert.equal(typeof s.bindings, "number");
    assert.equal(typeof (s.guard as { bannedSources: unknown }).bannedSources, "number");
    assert.equal(s.pid, agent.proc.pid);
    assert.equal(s.siteId, "site-1");
    assert.deepEqual(
      (s.sip as Array<{ transport: string; port: number }>).map((a) => `${a.transport}:${a.port}`).sort(),
      [`tcp:${agent.port}`, `udp:${agent.port}`],
    );
    assert.deepEqual(Object.keys(s.devices as object).sort(), ["online", "physical", "registered", "soft", "total"]);
    assert.equal((s.store as { file: string }).file, path.join(agent.dataDir, "ringedge.json"));
    const text = await agent.cli(["status"]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, new RegExp(`^site site-1  pid ${agent.proc.pid}  up \\d+s\\n`));
    assert.match(text.stdout, /\ndevices  3 \(2 physical, 1 soft\)  registered 0  online 0  bindings 0\n/);
  });
});

describe("usage errors, help and settings", () => {
  const dir = tempDir("ringedge-cli-usage-");
  let env: NodeJS.ProcessEnv;
  before(async () => {
    env = agentEnv(path.join(dir, "data"), await freePort());
  });
  const cli: Cli = (args) => runCli(args, env);

  test("missing arguments, a flag without its value and unknown commands exit 2", async () => {
    const cases: Array<[string[], RegExp]> = [
      [["device", "add"], /device add needs a username/],
      [["device", "show"], /device show needs a username or id/],
      [["device", "remove"], /device remove needs a username or id/],
      [["device", "add", "3001", "--password"], /--password needs a value/],
      [["device", "add", "3001", "--kind"], /--kind needs a value/],
      [["device"], /usage:\n  ringedge device add/],
      [["device", "frobnicate"], /usage:\n  ringedge device add/],
      [["store"], /ringedge store check/],
      [["bogus"], /unknown command 'bogus'/],
      [["bogus", "--help"], /unknown command 'bogus'/],
    ];
    for (const [args, message] of cases) {
      const r = await cli(args);
      assert.equal(r.code, USAGE, `ringedge ${args.join(" ")} → ${r.code}: ${r.stderr}`);
      assert.match(r.stderr, message, `ringedge ${args.join(" ")}`);
    }
    const bare = await cli([]);
    assert.equal(bare.code, USAGE);
    assert.match(bare.stdout, /^ringedge — edge call-routing agent\n\nusage: ringedge <command>/);
    assert.ok(!fs.existsSync(path.join(dir, "data", "ringedge.json")), "no usage error created a store");
  });

  test("--help for the program and for each command", async () => {
    const expected: Record<string, RegExp> = {
      "": /^ringedge — edge call-routing agent\n\nusage: ringedge <command> \[options\]\n[\s\S]*\n  device add\|list\|show\|remove /,
      run: /^usage: ringedge run \[--config <file>\]\n/,
      status: /^usage: ringedge status \[--json\]\n/,
      device: /^usage:\n  ringedge device add <username> \[--password <p>\] \[--kind physical\|soft\][\s\S]*ringedge device remove <username\|id>/,
      store: /^usage:\n  ringedge store check [\s\S]*ringedge store recover /,
      settings: /^usage: ringedge settings/,
    };
    for (const [command, re] of Object.entries(expected)) {
      for (const flag of ["--help", "-h"]) {
        const r = await cli(command === "" ? [flag] : [command, flag]);
        assert.equal(r.code, 0, `ringedge ${command} ${flag}: ${r.stderr}`);
        assert.match(r.stdout, re, `ringedge ${command} ${flag}`);
        assert.equal(r.stderr, "");
      }
    }
    // Help never starts anything: no store was created by `run --help`.
    assert.ok(!fs.existsSync(path.join(dir, "data")));
  });

  test("an invalid setting stops start-up at once, naming the setting; nothing is created", async () => {
    const dataDir = path.join(dir, "never");
    const bad = await runCli(["run"], { ...agentEnv(dataDir, await freePort()), RINGEDGE_SIP_LISTEN: "127.0.0.1:99999" }, 10_000);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /RINGEDGE_SIP_LISTEN/);
    assert.match(bad.stderr, /99999/);
    assert.doesNotMatch(bad.stderr, /ringedge started/);
    assert.ok(!fs.existsSync(dataDir), "the data directory was not even created");

    const conf = path.join(dir, "ringedge.conf.json");
    fs.writeFileSync(conf, JSON.stringify({ siteId: "site-9", sipListn: ["127.0.0.1:5070"] }));
    const unknown = await runCli(["run", "--config", conf], agentEnv(dataDir, await freePort()), 10_000);
    assert.notEqual(unknown.code, 0);
    assert.match(unknown.stderr, /unknown setting "sipListn"/);
    assert.ok(unknown.stderr.includes(conf), "names the file too");
    assert.match(unknown.stderr, /sipListen/, "suggests the setting meant");
    assert.ok(!fs.existsSync(dataDir));

    // A setting an earlier version had: the agent starts, and says it ignored it.
    const retired = path.join(dir, "retired.conf.json");
    fs.writeFileSync(retired, JSON.stringify({ siteId: "site-9", overloadUdpQueuePct: 50 }));
    const upgraded = await runCli(["settings", "--json", "--config", retired], agentEnv(dataDir, await freePort()), 10_000);
    assert.equal(upgraded.code, 0, upgraded.stderr);
    assert.match(upgraded.stderr, /warning: .*overloadUdpQueuePct is no longer a setting \(replaced by overloadQueueDelayMs/);

    const wrongType = await runCli(["device", "list"], { ...agentEnv(dataDir, await freePort()), RINGEDGE_MIN_EXPIRES: "soon" }, 10_000);
    assert.notEqual(wrongType.code, 0, "every command validates the settings, not only run");
    assert.match(wrongType.stderr, /RINGEDGE_MIN_EXPIRES/);
  });

  test("`ringedge settings` lists every setting with its environment variable", async () => {
    const r = await cli(["settings"]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(SETTING_NAMES.length >= 20);
    for (const name of SETTING_NAMES) {
      const env = "RINGEDGE_" + name.replace(/([a-z0-9])([A-Z])/g, "$1_$2").toUpperCase();
      assert.ok(r.stdout.includes(`| \`${name}\` | \`${env}\` |`), `settings lists ${name} as ${env}`);
    }
    for (const env of ["RINGEDGE_SIP_LISTEN", "RINGEDGE_DATA_DIR", "RINGEDGE_NONCE_TTL_S", "RINGEDGE_GUARD_SOURCE_MAX_FAILURES", "RINGEDGE_AUTH_ALGORITHMS"]) {
      assert.ok(r.stdout.includes(`\`${env}\``), env);
    }
  });
});
