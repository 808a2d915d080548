// The RFC 4475 messages in test/fixtures/rfc4475/ are byte-exact: every .dat file matches its
// line in SHA256SUMS, and SHA256SUMS lists exactly those files. A checkout that rewrote line
// ends (a missing -text in .gitattributes, core.autocrlf) or lost a file fails here by name.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import { RFC4475_COUNT, RFC4475_DIR, loadRfc4475, rfc4475Files } from "../fixtures/rfc4475.ts";

function sums(): Map<string, string> {
  const text = readFileSync(path.join(RFC4475_DIR, "SHA256SUMS"), "utf8");
  const out = new Map<string, string>();
  for (const line of text.split("\n").filter((l) => l.trim() !== "")) {
    const m = /^([0-9a-f]{64}) [ *]([A-Za-z0-9_.-]+)$/.exec(line);
    assert.ok(m, `SHA256SUMS line not in sha256sum format: ${JSON.stringify(line)}`);
    out.set(m[2]!, m[1]!);
  }
  return out;
}

test("SHA256SUMS lists exactly the 50 .dat files", () => {
  const files = rfc4475Files();
  assert.equal(files.length, RFC4475_COUNT);
  assert.deepEqual([...sums().keys()].sort(), files);
});

test("every RFC 4475 message is byte-identical to its published checksum", () => {
  const expected = sums();
  const wrong = rfc4475Files().filter((f) => createHash("sha256").update(loadRfc4475(f)).digest("hex") !== expected.get(f));
  assert.deepEqual(wrong, [], `bytes changed in: ${wrong.join(", ")}`);
});

test("line ends are CRLF as published (a text checkout would turn them into LF)", () => {
  // wsinv.dat is all CRLF; mpart01.dat carries bare CR and LF bytes inside its binary body.
  const wsinv = loadRfc4475("wsinv.dat");
  assert.equal(wsinv.toString("latin1").split("\r\n").length - 1, wsinv.toString("latin1").split("\n").length - 1, "no bare LF in wsinv.dat");
  assert.ok(wsinv.includes("\r\n\r\n"), "wsinv.dat ends its headers with CRLF CRLF");
});

test("the loader refuses names that are not fixture files", () => {
  assert.throws(() => loadRfc4475("../rfc4475.ts"), /not an RFC 4475 fixture name/);
  assert.throws(() => loadRfc4475("INDEX.md"), /not an RFC 4475 fixture name/);
  assert.throws(() => loadRfc4475("no-such-file.dat"), /ENOENT/);
});
