// The control-socket protocol and the CLI's argument parsing: hostile or malformed requests
// get a clear error and change nothing.
import { test } from "node:test";
import assert from "node:assert/strict";
import { CommandError, runCommand, type CommandTable } from "../../agent/console/control.ts";
import { parseArgs } from "../../agent/cli.ts";
import { USERNAME_RE, generatePassword } from "../../agent/console/commands.ts";
import { tempDir } from "../tmpdir.ts";

const table: CommandTable = {
  echo: (args) => args,
  fail: () => {
    throw new CommandError("no such device 'x'");
  },
  crash: () => {
    throw new TypeError("boom");
  },
};

test("control requests: valid, unknown, malformed", async () => {
  assert.deepEqual(await runCommand(table, JSON.stringify({ id: 7, cmd: "echo", args: { a: 1 } })), { id: 7, ok: true, result: { a: 1 } });
  assert.deepEqual(await runCommand(table, "{not json"), { ok: false, error: "request is not valid JSON" });
  assert.deepEqual(await runCommand(table, "null"), { ok: false, error: "request needs a string 'cmd'" });
  assert.deepEqual(await runCommand(table, JSON.stringify({ cmd: 42 })), { ok: false, error: "request needs a string 'cmd'" });
  assert.deepEqual(await runCommand(table, JSON.stringify({ cmd: "nope" })), { id: undefined, ok: false, error: "unknown command 'nope'" });
  // Prototype names are not commands.
  assert.equal((await runCommand(table, JSON.stringify({ cmd: "constructor" }))).ok, false);
  assert.equal((await runCommand(table, JSON.stringify({ cmd: "__proto__" }))).ok, false);
  // Non-object args become {}.
  assert.deepEqual(await runCommand(table, JSON.stringify({ cmd: "echo", args: [1, 2] })), { id: undefined, ok: true, result: {} });
});

test("command errors are the user's message; other errors are marked internal", async () => {
  assert.deepEqual(await runCommand(table, JSON.stringify({ cmd: "fail" })), { id: undefined, ok: false, error: "no such device 'x'" });
  assert.deepEqual(await runCommand(table, JSON.stringify({ cmd: "crash" })), { id: undefined, ok: false, error: "internal error: boom" });
});

test("argument parsing: value flags, --x=y, booleans, --", () => {
  const p = parseArgs(["device", "add", "2001", "--password", "p w", "--kind=soft", "--json", "--", "--literal"], new Set(["password", "kind"]));
  assert.deepEqual(p.positional, ["device", "add", "2001", "--literal"]);
  assert.equal(p.flags.get("password"), "p w");
  assert.equal(p.flags.get("kind"), "soft");
  assert.equal(p.flags.get("json"), true);
  assert.equal(parseArgs(["-h"], new Set()).flags.get("help"), true);
  assert.throws(() => parseArgs(["--password"], new Set(["password"])), /--password needs a value/);
});

test("usernames and generated passwords", () => {
  for (const ok of ["2001", "a", "front.desk", "op_1-b"]) assert.match(ok, USERNAME_RE);
  for (const bad of ["", "-x", ".x", "a b", "a@b", "x".repeat(33), "null-%00-null", "ü"]) assert.doesNotMatch(bad, USERNAME_RE);
  const seen = new Set<string>();
  for (let i = 0; i < 100; i++) {
    const p = generatePassword();
    assert.match(p, /^[A-Za-z0-9_-]{24}$/);
    seen.add(p);
  }
  assert.equal(seen.size, 100);
});

test("ringedge settings never prints passwords", async () => {
  const { redactSecrets } = await import("../../agent/cli.ts");
  const { defaultSettings } = await import("../../agent/config.ts");
  const s = { ...defaultSettings(), mqttPassword: "hunter2-secret" } as ReturnType<typeof defaultSettings>;
  const shown = JSON.stringify(redactSecrets(s));
  assert.doesNotMatch(shown, /hunter2/);
  assert.match(shown, /"mqttPassword":"\(set, not shown\)"/);
});

test("calls.list: newest first, limit and group filter checked", async () => {
  const fs = await import("node:fs");
  const os = await import("node:os");
  const path = await import("node:path");
  const { Store } = await import("../../agent/store/store.ts");
  const { agentCommands } = await import("../../agent/console/commands.ts");
  const dir = tempDir("ringedge-calls-");
  const store = await Store.open(dir);
  try {
    for (let i = 0; i < 3; i++) {
      const r = store.appendCall({ id: `c${i}`, at: 1_000 + i, caller: "+4930123", target: "700", groupId: i === 1 ? "support" : "sales", outcome: i === 2 ? "missed" : "answered", offered: ["anna"], ...(i === 2 ? {} : { answeredBy: "anna", answerAfterMs: 1200 }) });
      assert.ok(r.ok, r.ok ? "" : r.error.message);
    }
    const table = agentCommands({ store });
    const all = (await runCommand(table, JSON.stringify({ cmd: "calls.list", args: {} }))) as { ok: true; result: Array<{ id: string }> };
    assert.deepEqual(all.result.map((c) => c.id), ["c2", "c1", "c0"]);
    const sales = (await runCommand(table, JSON.stringify({ cmd: "calls.list", args: { groupId: "sales", limit: 1 } }))) as { ok: true; result: Array<{ id: string }> };
    assert.deepEqual(sales.result.map((c) => c.id), ["c2"]);
    for (const bad of [0, -1, 1.5, "10", 5001]) {
      const r = await runCommand(table, JSON.stringify({ cmd: "calls.list", args: { limit: bad } }));
      assert.equal(r.ok, false, `limit ${JSON.stringify(bad)} refused`);
    }
  } finally {
    await store.close();
  }
});
