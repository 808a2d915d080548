// The control-socket protocol and the CLI's argument parsing: hostile or malformed requests
// get a clear error and change nothing.
import { test } from "node:test";
import assert from "node:assert/strict";
import { CommandError, runCommand, type CommandTable } from "../../agent/console/control.ts";
import { parseArgs } from "../../agent/cli.ts";
import { USERNAME_RE, generatePassword } from "../../agent/console/commands.ts";

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
