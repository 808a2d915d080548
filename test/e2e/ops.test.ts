// Operations seams of the command line, against the real agent process: a misspelt option
// (--dryrun) never applies a site, live or offline; mistyped commands and sub-commands are
// refused naming the word; --version; every --json the help lists gives JSON; status shows the
// version, draining (and a drain left past its timeout), the console link and the provisioning
// URL, which names the advertised address and never the 0.0.0.0 the server listens on.
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { ROOT, agentEnv, freePort, runCli, startAgent, tempDir, until, type RunningAgent } from "./harness.ts";

const EXAMPLE = path.join(ROOT, "examples/site.json");
const VERSION = (JSON.parse(fs.readFileSync(path.join(ROOT, "package.json"), "utf8")) as { version: string }).version;
/** TEST-NET-1 (RFC 5737): advertised in URLs only, never contacted. */
const ADVERTISED = "192.0.2.10";

const cleanups: Array<() => unknown> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

describe("a misspelt option or command changes nothing", () => {
  test("site apply --dryrun is refused (exit 2, naming it) with no agent: no store is created", async () => {
    const dir = tempDir("ringedge-ops-offline-");
    cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
    const env = agentEnv(path.join(dir, "data"), await freePort());
    const r = await runCli(["site", "apply", EXAMPLE, "--dryrun"], env);
    assert.equal(r.code, 2);
    assert.equal(r.stdout, "");
    assert.equal(r.stderr, "ringedge: unknown option '--dryrun' for 'site' (did you mean '--dry-run'?) (see ringedge site --help)\n");
    assert.ok(!fs.existsSync(path.join(dir, "data")), "nothing was opened, let alone applied");
  });

  describe("with a running agent", () => {
    let agent: RunningAgent;
    before(async () => {
      agent = await startAgent();
      cleanups.push(() => agent.kill());
    });

    test("site apply --dryrun (and friends) never apply the site live", async () => {
      const cases: Array<[string[], string]> = [
        [["site", "apply", EXAMPLE, "--dryrun"], "'--dryrun'"],
        [["site", "apply", EXAMPLE, "--dry_run"], "'--dry_run'"],
        [["site", "apply", EXAMPLE, "--dry-run=no"], "'--dry-run' takes no value"],
        [["site", "apply", EXAMPLE, "-n"], "'-n'"],
        [["site", "aply", EXAMPLE, "--dry-run"], "'aply'"],
      ];
      for (const [args, named] of cases) {
        const r = await agent.cli(args);
        assert.equal(r.code, 2, `ringedge ${args.join(" ")}: ${r.stdout}${r.stderr}`);
        assert.equal(r.stdout, "", args.join(" "));
        assert.ok(r.stderr.includes(named), `names ${named}: ${r.stderr}`);
      }
      const shown = JSON.parse((await agent.cli(["site", "show", "--json"])).stdout) as { applied?: unknown; version?: unknown } | null;
      const status = JSON.parse((await agent.cli(["status", "--json"])).stdout) as { site: unknown };
      assert.equal(status.site, null, `no site was applied; site show: ${JSON.stringify(shown)}`);
      const real = await agent.cli(["site", "apply", EXAMPLE, "--dry-run"]);
      assert.equal(real.code, 0, real.stderr);
      assert.match(real.stdout, /dry run/);
      assert.equal((JSON.parse((await agent.cli(["status", "--json"])).stdout) as { site: unknown }).site, null, "the dry run applied nothing either");
    });

    test("unknown commands, sub-commands, stray arguments and options: exit 2, the word named, a near one suggested", async () => {
      const cases: Array<[string[], string]> = [
        [["stauts"], "ringedge: unknown command 'stauts' (did you mean 'status'?) (see ringedge --help)\n"],
        [["device", "lsit"], "ringedge: unknown device command 'lsit' (did you mean 'list'?); one of: add, list, show, remove\n"],
        [["status", "now"], "ringedge: 'status' takes no argument 'now' (see ringedge status --help)\n"],
        [["status", "--jsno"], "ringedge: unknown option '--jsno' for 'status' (did you mean '--json'?) (see ringedge status --help)\n"],
        [["drain", "--timeout", "5", "--force"], "ringedge: unknown option '--force' for 'drain' (see ringedge drain --help)\n"],
        [["health", "--json=yes"], "ringedge: option '--json' takes no value (got 'yes')\n"],
        [["--frobnicate"], "ringedge: unknown option '--frobnicate'\n"],
        [["device", "list", "-v"], "ringedge: unknown option '-v' (options are spelt --name; see ringedge --help)\n"],
      ];
      for (const [args, expected] of cases) {
        const r = await agent.cli(args);
        assert.equal(r.code, 2, `ringedge ${args.join(" ")}`);
        assert.equal(r.stderr.split("\n")[0] + "\n", expected, `ringedge ${args.join(" ")}`);
      }
      const drainState = JSON.parse((await agent.cli(["status", "--json"])).stdout) as { drain: { draining: boolean } };
      assert.equal(drainState.drain.draining, false, "the refused drain did not start");
    });
  });
});

describe("version, status and every --json the help lists", () => {
  let agent: RunningAgent;
  let dir: string;
  before(async () => {
    dir = tempDir("ringedge-ops-");
    cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
    agent = await startAgent({ env: { RINGEDGE_HTTP_LISTEN: "0.0.0.0:0", RINGEDGE_SIP_ADVERTISE: ADVERTISED, RINGEDGE_DRAIN_TIMEOUT_S: "1" } });
    cleanups.push(() => agent.kill());
  });

  test("--version prints package.json's version; status carries it", async () => {
    for (const args of [["--version"], ["status", "--version"]]) {
      const r = await agent.cli(args);
      assert.equal(r.code, 0);
      assert.equal(r.stdout, `ringedge ${VERSION}\n`);
    }
    const s = JSON.parse((await agent.cli(["status", "--json"])).stdout) as { version: string };
    assert.equal(s.version, VERSION);
  });

  test("status: version, taking calls or draining (overdue past the timeout), console link, provisioning URL", async () => {
    const text = await agent.cli(["status"]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, new RegExp(`^site \\S+  pid \\d+  up \\d+s\nversion  ${VERSION.replace(/\./g, "\\.")}\n`));
    assert.match(text.stdout, /\ncalls    taking calls\n/);
    assert.match(text.stdout, /\nconsole  not configured \(mqttUrl unset\)\n/);
    const s = JSON.parse((await agent.cli(["status", "--json"])).stdout) as { provisioningUrls: string[]; mqtt: unknown; drain: { draining: boolean }; warnings: string[] };
    assert.equal(s.mqtt, null);
    assert.equal(s.provisioningUrls.length, 1);
    assert.match(s.provisioningUrls[0]!, new RegExp(`^http://${ADVERTISED.replace(/\./g, "\\.")}:\\d+/$`), "the advertised address, not the wildcard");
    assert.ok(text.stdout.includes(`\nprovisioning ${s.provisioningUrls[0]}\n`), text.stdout);
    assert.doesNotMatch(text.stdout + JSON.stringify(s), /0\.0\.0\.0/);
    assert.deepEqual(s.warnings, []);

    // A drain (1 s timeout) left on: draining, then overdue in status and a warning in health,
    // which still passes: a watchdog restart in the middle of an upgrade is no cure.
    const drained = await agent.cli(["drain", "--timeout", "1", "--json"]);
    assert.equal(drained.code, 0, drained.stderr);
    assert.equal((JSON.parse(drained.stdout) as { drained: boolean }).drained, true);
    const overdue = await until(async () => {
      const st = JSON.parse((await agent.cli(["status", "--json"])).stdout) as { drain: { draining: boolean; overdue?: boolean }; warnings: string[] };
      return st.drain.overdue ? st : undefined;
    }, 10_000, 200);
    assert.match(overdue.warnings.join("\n"), /^draining for \d+ s, past its 1 s timeout: new calls are refused$/);
    const t = await agent.cli(["status"]);
    assert.match(t.stdout, /\ncalls    DRAINING for \d+s \(timeout 1s, OVERDUE: 'ringedge resume' takes calls again\)\n/);
    assert.match(t.stdout, /\nWARNING  draining for \d+ s, past its 1 s timeout/);
    const h = await agent.cli(["health"]);
    assert.equal(h.code, 0, h.stdout);
    assert.match(h.stdout, /^OK: warning: draining for \d+ s, past its 1 s timeout/);
    assert.equal((await agent.cli(["resume"])).code, 0);
    const after = JSON.parse((await agent.cli(["status", "--json"])).stdout) as { drain: { draining: boolean }; warnings: string[] };
    assert.deepEqual([after.drain.draining, after.warnings], [false, []]);
  });

  test("every usage line with [--json] in the help prints JSON", async () => {
    // The usage lines that list --json, from the help itself (continuation lines joined).
    const listed = new Set<string>();
    const commands = (await agent.cli(["--help"])).stdout.split("\n").flatMap((l) => /^  ([a-z-]+) /.exec(l)?.[1] ?? []);
    for (const c of new Set(commands)) {
      const help = (await agent.cli([c, "--help"])).stdout.replace(/\n {6,}(?=\[)/g, " ");
      for (const line of help.split("\n")) {
        const m = /^(?:usage: |\s+)ringedge ([a-z-]+)(?: ([a-z-]+))?\b.*\[--json\]/.exec(line);
        if (m) listed.add(m[2] ? `${m[1]} ${m[2]}` : m[1]!);
      }
    }
    const csv = path.join(dir, "phones.csv");
    fs.writeFileSync(csv, "mac,model,extension\n000413aabb02,D735,302\n");
    // Run in this order: each may rely on what the previous ones did.
    const runs: Array<[string, string[], number?]> = [
      ["status", ["status"]],
      ["health", ["health"]],
      ["settings", ["settings"]],
      ["site apply", ["site", "apply", EXAMPLE]],
      ["site show", ["site", "show"]],
      ["group list", ["group", "list"]],
      ["group show", ["group", "show", "support"]],
      ["user list", ["user", "list"]],
      ["calls", ["calls"]],
      ["device add", ["device", "add", "2001", "--password", "ops-Secret-2001"]],
      ["device list", ["device", "list"]],
      ["device show", ["device", "show", "2001"]],
      ["device remove", ["device", "remove", "2001"]],
      ["phone add", ["phone", "add", "000413aabb01", "--model", "D735", "--extension", "301", "--show-secrets"]],
      ["phone list", ["phone", "list"]],
      ["phone show", ["phone", "show", "301", "--show-secrets"]],
      ["phone seen", ["phone", "seen"]],
      ["phone import", ["phone", "import", csv, "--dry-run"]],
      // Not registered: the re-sync fails (exit 1), still reported as JSON.
      ["phone resync", ["phone", "resync", "301"], 1],
      ["phone firmware", ["phone", "firmware"]],
      ["voicemail list", ["voicemail", "list"]],
      // No message with that id: refused (exit 1), still reported as JSON.
      ["voicemail delete", ["voicemail", "delete", "20261203T154233Z-1a2b3c4d"], 1],
      ["drain", ["drain", "--timeout", "0"]],
    ];
    // why needs a recorded group call: routing-hours.test.ts runs both of its --json forms.
    const elsewhere = ["why", "why --last"];
    assert.deepEqual([...listed].filter((c) => !elsewhere.includes(c)).sort(), runs.map((r) => r[0]).sort(), "each listed --json has a run here");
    for (const c of elsewhere) assert.ok(listed.has(c), `the help lists ${c} --json`);
    const results = new Map<string, unknown>();
    for (const [name, args, code] of runs) {
      const r = await agent.cli([...args, "--json"]);
      assert.equal(r.code, code ?? 0, `ringedge ${args.join(" ")} --json: ${r.stdout}${r.stderr}`);
      assert.doesNotThrow(() => results.set(name, JSON.parse(r.stdout)), `ringedge ${args.join(" ")} --json printed ${r.stdout}`);
    }
    assert.equal((await agent.cli(["resume"])).code, 0);
    assert.equal((results.get("health") as { ok: boolean }).ok, true);
    assert.ok(Array.isArray((results.get("settings") as { settings: unknown[] }).settings));
    // The URL a phone is given (phone show --show-secrets) names the advertised address.
    const phone = results.get("phone show") as { urls?: string[] };
    assert.equal(phone.urls?.length, 1, JSON.stringify(phone));
    assert.match(phone.urls![0]!, new RegExp(`^http://${ADVERTISED.replace(/\./g, "\\.")}:\\d+/p/[^/]+/$`));
  });
});

describe("health fails for a hung or dead agent", () => {
  test("stopped (SIGSTOP): FAIL within the control socket's 5 s; continued: OK again; killed: FAIL", { timeout: 60_000 }, async () => {
    const agent = await startAgent();
    cleanups.push(() => agent.kill());
    const ok = await agent.cli(["health"]);
    assert.equal(ok.code, 0, ok.stdout);
    agent.proc.kill("SIGSTOP");
    try {
      const t0 = Date.now();
      const hung = await agent.cli(["health"], 30_000);
      assert.equal(hung.code, 1, hung.stdout);
      assert.match(hung.stdout, /^FAIL: agent did not answer its health check \(agent did not answer 'health' within 5000 ms\)\n$/);
      assert.ok(Date.now() - t0 < 20_000, "bounded");
    } finally {
      agent.proc.kill("SIGCONT");
    }
    const again = await agent.cli(["health"]);
    assert.equal(again.code, 0, again.stdout);
    await agent.kill();
    const dead = await agent.cli(["health", "--json"]);
    assert.equal(dead.code, 1);
    assert.match((JSON.parse(dead.stdout) as { reason: string }).reason, /^FAIL: no agent answers on /);
  });
});
