// The agent's contract validators are generated from contract/ringedge.schema.json at build
// time (contract/generate.ts); these tests keep the two in step and check that the generated
// module behaves as the schema says without the agent ever compiling a schema.
import assert from "node:assert/strict";
import fs from "node:fs";
import { test } from "node:test";
import { generate, GENERATED_FILE, SCHEMA_FILE } from "../../contract/generate.ts";
import { payloadNames, validatePayload } from "../../agent/contract.ts";

test("agent/contract-validators.generated.ts is what contract/generate.ts makes of the schema (run `make contract` after a schema edit)", () => {
  assert.equal(fs.readFileSync(GENERATED_FILE, "utf8"), generate(fs.readFileSync(SCHEMA_FILE, "utf8")));
});

test("every $defs entry of the schema has a generated validator", () => {
  const schema = JSON.parse(fs.readFileSync(SCHEMA_FILE, "utf8")) as { $defs: Record<string, unknown> };
  assert.deepEqual(payloadNames().sort(), Object.keys(schema.$defs).sort());
});

test("the generated validators check formats the way Node parses addresses, and report every error with a path", () => {
  assert.deepEqual(validatePayload("ipAddress", "127.0.0.1"), { ok: true });
  assert.deepEqual(validatePayload("ipAddress", "::1"), { ok: true });
  const bad = validatePayload("ipAddress", "pbx.example.com");
  assert.equal(bad.ok, false);
  const two = validatePayload("user", { id: "", extension: "x" });
  assert.equal(two.ok, false);
  if (!two.ok) assert.ok(two.errors.length >= 2, JSON.stringify(two.errors));
});

test("the agent never loads ajv's compiler: the contract module imports only the generated code", () => {
  const src = fs.readFileSync(new URL("../../agent/contract.ts", import.meta.url), "utf8");
  assert.doesNotMatch(src, /ajv\/dist\/2020|new Ajv/);
  const gen = fs.readFileSync(GENERATED_FILE, "utf8");
  const requires = [...gen.matchAll(/require\("([^"]+)"\)/g)].map((m) => m[1]);
  assert.ok(requires.length > 0 && requires.every((r) => r!.startsWith("ajv/dist/runtime/")), `generated code loads ${[...new Set(requires)].join(", ")}`);
});
