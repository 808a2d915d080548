// Site configuration without a console, end to end through the real `ringedge` command: a site
// file checked and applied with and without a running agent (through its control socket the
// agent switches live), dry runs, a bad file listing every error by path with exit 1 and the
// store unchanged, group/user views, and RINGEDGE_SITE_FILE applied (or refused) at start-up.
import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { agentEnv, freePort, ROOT, runCli, startAgent, tempDir, type RunningAgent } from "./harness.ts";

const EXAMPLE = path.join(ROOT, "examples/site.json");
const INVALID = path.join(ROOT, "examples/site-invalid.json");

const running: RunningAgent[] = [];
after(async () => {
  await Promise.all(running.map((a) => a.stop()));
});

/** A copy of the example with changes, written to a temp file. */
function variant(dir: string, name: string, change: (s: Record<string, any>) => void): string {
  const s = JSON.parse(fs.readFileSync(EXAMPLE, "utf8")) as Record<string, any>;
  change(s);
  const file = path.join(dir, name);
  fs.writeFileSync(file, JSON.stringify(s, null, 2));
  return file;
}

const storeText = (dir: string): string => fs.readFileSync(path.join(dir, "ringedge.json"), "utf8");

/** The error lines the example's invalid file must produce, each as "path: ...". */
const INVALID_PATHS = [
  "settings.pickupCode",
  "settings.trunk.host",
  "users[1].availability",
  "users[1].extension",
  "devices[1].mac",
  "devices[2].owner",
  "devices[3].username",
  "groups[0].strategy",
  "groups[0].members[1]",
  "groups[0].members[2]",
  "groups[0].noAnswer.groupId",
  "groups[1].number",
  "groups[1].ringCount",
];

describe("ringedge site apply without an agent", () => {
  test("dry run, invalid file, apply, re-apply; group and user views", async () => {
    const dir = tempDir("ringedge-site-e2e-");
    const env = agentEnv(dir, await freePort());
    const cli = (args: string[]) => runCli(args, env, 20_000);

    const dry = await cli(["site", "apply", EXAMPLE, "--dry-run"]);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, /valid; version 1 would be applied \(dry run/);
    assert.match((await cli(["site", "show"])).stdout, /no site applied yet/);
    const before = storeText(dir);

    const bad = await cli(["site", "apply", INVALID]);
    assert.equal(bad.code, 1);
    const lines = bad.stderr.trim().split("\n");
    for (const p of INVALID_PATHS) assert.ok(lines.some((l) => l.startsWith(`${p}: `)), `${p} listed in:\n${bad.stderr}`);
    assert.match(bad.stderr, /13 errors; nothing was applied/);
    assert.equal(storeText(dir), before, "store unchanged by a bad file");
    const badJson = await cli(["site", "apply", INVALID, "--json", "--dry-run"]);
    assert.equal(badJson.code, 1);
    assert.equal((JSON.parse(badJson.stdout) as { errors: unknown[] }).errors.length, 13);

    const applied = await cli(["site", "apply", EXAMPLE, "--json"]);
    assert.equal(applied.code, 0, applied.stderr);
    const r = JSON.parse(applied.stdout) as { ok: boolean; version: number; changed: boolean; devices: { added: string[] } };
    assert.deepEqual([r.ok, r.version, r.changed, r.devices.added.length], [true, 1, true, 9]);
    const again = await cli(["site", "apply", EXAMPLE]);
    assert.equal(again.code, 0);
    assert.match(again.stdout, /version 1 is already applied; nothing changed/);

    const groups = JSON.parse((await cli(["group", "list", "--json"])).stdout) as Array<{ id: string; number: string; strategy: string; noAnswer: string; pickup: boolean; online?: number }>;
    assert.deepEqual(groups.map((g) => `${g.number} ${g.strategy}`), ["600 simultaneous", "601 sequential", "602 evenly", "603 cumulative", "604 sequential"]);
    assert.equal(groups.find((g) => g.id === "support")?.pickup, true);
    assert.equal(groups[0]?.online, undefined, "no online state without an agent");
    const show = await cli(["group", "show", "602"]);
    assert.equal(show.code, 0);
    assert.match(show.stdout, /1\. 1002\s+Ben Okafor\s+available 1002\/physical, ben-mobile\/soft/);
    const byId = JSON.parse((await cli(["group", "show", "support", "--json"])).stdout) as { members: Array<{ id: string; extension: string; devices: unknown[] }> };
    assert.deepEqual(byId.members.map((m) => `${m.id}:${m.extension}:${m.devices.length}`), ["ben:1002:2", "eva:1005:1", "felix:1006:1", "greta:1007:1"]);
    const missing = await cli(["group", "show", "999"]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /no group '999'/);
    const users = await cli(["user", "list"]);
    assert.match(users.stdout, /1004\s+david\s+David Moreau\s+away/);
    const devices = JSON.parse((await cli(["device", "list", "--json"])).stdout) as Array<{ username: string }>;
    assert.deepEqual(devices.map((d) => d.username).sort(), ["1001", "1002", "1003", "1004", "1005", "1006", "1007", "anna-soft", "ben-mobile"]);
    const help = await cli(["site", "--help"]);
    assert.match(help.stdout, /ringedge site apply <file> \[--dry-run\]/);
  });

  test("an unknown vendor or model is refused by path (dry run and apply); a bare model id is stored canonical", async () => {
    const dir = tempDir("ringedge-site-model-");
    const env = agentEnv(dir, await freePort());
    const cli = (args: string[]) => runCli(args, env, 20_000);
    const bad = variant(dir, "bad-models.json", (s) => {
      s.devices[0].model = "acme/T46U";
      s.devices[3].model = "yealink/T99X";
    });
    const dry = await cli(["site", "apply", bad, "--dry-run"]);
    assert.equal(dry.code, 1, dry.stdout);
    assert.match(dry.stderr, /^devices\[0\]\.model: unknown vendor "acme" \(known: cisco, fanvil, grandstream, poly, snom, yealink\)$/m);
    assert.match(dry.stderr, /^devices\[3\]\.model: Yealink has no model "T99X" \(known: yealink\/T46U, /m);
    const json = JSON.parse((await cli(["site", "apply", bad, "--json"])).stdout) as { errors: Array<{ code: string; path: string }> };
    assert.deepEqual(json.errors.map((e) => `${e.code} ${e.path}`), ["unknown-model devices[0].model", "unknown-model devices[3].model"]);
    assert.match((await cli(["site", "show"])).stdout, /no site applied yet/, "nothing applied");
    const bare = variant(dir, "bare-model.json", (s) => {
      s.devices[0].model = "T46U";
    });
    const ok = await cli(["site", "apply", bare]);
    assert.equal(ok.code, 0, ok.stderr);
    const devices = JSON.parse((await cli(["device", "list", "--json"])).stdout) as Array<{ username: string; model?: string }>;
    assert.equal(devices.find((d) => d.username === "1001")?.model, "yealink/T46U");
  });
});

describe("ringedge site apply with a running agent", () => {
  test("RINGEDGE_SITE_FILE at start; a new version is swapped in live; a bad one changes nothing", async () => {
    const dir = tempDir("ringedge-site-e2e-");
    const agent = await startAgent({ dataDir: dir, env: { RINGEDGE_SITE_FILE: EXAMPLE } });
    running.push(agent);
    await agent.waitForLog(/site file applied .*version=1/);
    const status = JSON.parse((await agent.cli(["status", "--json"])).stdout) as { site: { version: number; source: string; groups: number } | null; devices: { total: number } };
    assert.deepEqual([status.site?.version, status.site?.source, status.site?.groups, status.devices.total], [1, "file", 5, 9]);

    // Version 2: Felix leaves support, a new group, Anna's soft client goes.
    const v2 = variant(dir, "site-v2.json", (s) => {
      s.version = 2;
      s.groups[2].members = ["ben", "eva", "greta"];
      s.groups.push({ id: "night", number: "605", name: "Night line", strategy: "sequential", members: ["greta"], ringCount: 2, checkAvailability: false, noAnswer: { kind: "voicemail", uri: "sip:vm-night@127.0.0.1" } });
      s.devices = s.devices.filter((d: { id: string }) => d.id !== "soft-anna");
    });
    const dry = await agent.cli(["site", "apply", v2, "--dry-run"]);
    assert.equal(dry.code, 0, dry.stderr);
    assert.equal((JSON.parse((await agent.cli(["status", "--json"])).stdout) as { site: { version: number } }).site.version, 1, "dry run applied nothing");
    const applied = await agent.cli(["site", "apply", v2]);
    assert.equal(applied.code, 0, applied.stderr);
    assert.match(applied.stdout, /applied site version 2 \(devices: 0 added, 0 updated, 1 removed, 8 unchanged\)/);
    await agent.waitForLog(/site applied .*version=2/);
    const after2 = JSON.parse((await agent.cli(["status", "--json"])).stdout) as { site: { version: number; groups: number }; devices: { total: number } };
    assert.deepEqual([after2.site.version, after2.site.groups, after2.devices.total], [2, 6, 8]);
    const text = await agent.cli(["status"]);
    assert.match(text.stdout, /site\s+version 2 from file \(7 users, 6 groups\)/);
    const support = JSON.parse((await agent.cli(["group", "show", "602", "--json"])).stdout) as { members: Array<{ id: string; online?: boolean; devices: Array<{ online?: boolean; registered?: boolean }> }>; online?: number };
    assert.deepEqual(support.members.map((m) => m.id), ["ben", "eva", "greta"]);
    assert.equal(support.online, 0, "online state shown while the agent runs");
    assert.equal(support.members[0]?.devices[0]?.online, false);
    assert.equal(support.members[0]?.devices[0]?.registered, false);
    const night = await agent.cli(["group", "show", "night"]);
    assert.match(night.stdout, /group\s+605 Night line \(night\)/);

    const bad = await agent.cli(["site", "apply", INVALID]);
    assert.equal(bad.code, 1);
    for (const p of INVALID_PATHS) assert.ok(bad.stderr.includes(`\n${p}: `) || bad.stderr.startsWith(`${p}: `), `${p} listed`);
    const older = await agent.cli(["site", "apply", EXAMPLE]);
    assert.equal(older.code, 0);
    assert.match(older.stdout, /version 1 is older than the applied version 2; nothing changed/);
    const still = JSON.parse((await agent.cli(["status", "--json"])).stdout) as { site: { version: number } };
    assert.equal(still.site.version, 2);

    // A restart keeps version 2 (the start-up file, version 1, is older and changes nothing).
    assert.equal(await agent.stop(), 0);
    const again = await startAgent({ dataDir: dir, env: { RINGEDGE_SITE_FILE: EXAMPLE } });
    running.push(again);
    await again.waitForLog(/site file already applied/);
    assert.equal((JSON.parse((await again.cli(["status", "--json"])).stdout) as { site: { version: number } }).site.version, 2);
  });

  test("a bad RINGEDGE_SITE_FILE stops start-up with every error listed by path", async () => {
    const dir = tempDir("ringedge-site-e2e-");
    const run = await runCli(["run"], agentEnv(dir, await freePort(), { RINGEDGE_SITE_FILE: INVALID }), 20_000);
    assert.equal(run.code, 1);
    assert.match(run.stderr, /cannot start: site file .*site-invalid\.json was not applied/);
    for (const p of INVALID_PATHS) assert.ok(run.stderr.includes(`\n${p}: `), `${p} listed in:\n${run.stderr}`);
    const missing = await runCli(["run"], agentEnv(dir, await freePort(), { RINGEDGE_SITE_FILE: path.join(dir, "nope.json") }), 20_000);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /\$: cannot read .*nope\.json/);
  });
});
