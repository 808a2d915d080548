// The command line refuses what it does not know before doing anything: unknown options (the
// ones a command takes are the ones its help lists), options given a value they do not take,
// unknown commands and sub-commands, stray arguments; each naming the word.
import assert from "node:assert/strict";
import { test } from "node:test";
import { checkUsage, commandFlags, parseArgs } from "../../agent/cli.ts";

const VALUE = new Set(["config", "timeout", "password", "model", "extension", "group", "limit"]);
const check = (...argv: string[]): string | null => checkUsage(parseArgs(argv, VALUE), VALUE)?.message ?? null;

test("what the help lists is accepted", () => {
  assert.equal(check("site", "apply", "f.json", "--dry-run", "--json"), null);
  assert.equal(check("drain", "--timeout", "5", "--json"), null);
  assert.equal(check("console-password", "--write"), null);
  assert.equal(check("status", "--config", "/etc/x.json"), null, "--config goes with every command");
  assert.equal(check("device", "add", "1001", "--password", "p", "--show-password"), null);
  assert.equal(check("phone", "resync", "--all", "--reboot"), null);
  assert.equal(check(), null);
  assert.equal(check("--help"), null);
  assert.equal(check("device", "--help"), null);
  assert.ok(commandFlags("site").has("dry-run"));
  assert.ok(!commandFlags("status").has("dry-run"));
});

test("a misspelt option is refused, naming it and the option meant", () => {
  assert.equal(check("site", "apply", "f.json", "--dryrun"), "unknown option '--dryrun' for 'site' (did you mean '--dry-run'?) (see ringedge site --help)");
  assert.equal(check("status", "--dry-run"), "unknown option '--dry-run' for 'status' (see ringedge status --help)", "an option of another command");
  assert.equal(check("health", "--verbose"), "unknown option '--verbose' for 'health' (see ringedge health --help)", "nothing near: no suggestion");
  assert.equal(check("--jsn"), "unknown option '--jsn'");
  assert.equal(check("site", "apply", "f.json", "--dry-run=false"), "option '--dry-run' takes no value (got 'false')");
  assert.throws(() => parseArgs(["site", "apply", "f", "-n"], VALUE), /unknown option '-n'/);
});

test("unknown commands and sub-commands, and arguments to commands that take none", () => {
  assert.equal(check("stauts"), "unknown command 'stauts' (did you mean 'status'?) (see ringedge --help)");
  assert.equal(check("frobnicate"), "unknown command 'frobnicate' (see ringedge --help)");
  const sub = checkUsage(parseArgs(["site", "aplly", "f.json"], VALUE), VALUE);
  assert.equal(sub?.message, "unknown site command 'aplly' (did you mean 'apply'?); one of: apply, show");
  assert.match(sub?.help ?? "", /^usage:\n  ringedge site apply/, "with the command's usage");
  assert.equal(check("resume", "now"), "'resume' takes no argument 'now' (see ringedge resume --help)");
  assert.equal(check("settings", "unset", "serialPassword"), null);
  assert.equal(check("store", "recover"), null);
});
