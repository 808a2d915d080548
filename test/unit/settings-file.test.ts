// Writes to the settings file (console-password --write, settings unset, the serial console's
// first login) keep its owner and mode, and refuse a file that is not a JSON object of settings
// without touching it; files a root process writes go to the owner of their directory.
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import { writeSettings } from "../../agent/appliance/settings-file.ts";
import { ownerToKeep } from "../../agent/store/ownership.ts";
import { main } from "../../agent/cli.ts";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ringedge-settings-file-"));
after(() => fs.rmSync(dir, { recursive: true, force: true }));
const root = process.getuid?.() === 0;

test("keys set and removed, the others kept; owner and mode of the old file kept", () => {
  const f = path.join(dir, "a.json");
  fs.writeFileSync(f, JSON.stringify({ siteId: "x", serialPassword: "h", mqttPassword: "p" }));
  fs.chmodSync(f, 0o640);
  if (root) fs.chownSync(f, 65534, 65534);
  writeSettings(f, { serialPassword: undefined, mqttPassword: undefined, logLevel: "debug" });
  assert.deepEqual(JSON.parse(fs.readFileSync(f, "utf8")), { siteId: "x", logLevel: "debug" });
  const st = fs.statSync(f);
  assert.equal(st.mode & 0o777, 0o640);
  if (root) assert.deepEqual([st.uid, st.gid], [65534, 65534]);
  assert.deepEqual(fs.readdirSync(dir).filter((n) => n.includes(".tmp-")), [], "no temp file left");
});

test("a new file: mode 0600, the owner of the reference directory when run as root", () => {
  const ref = path.join(dir, "data");
  fs.mkdirSync(ref);
  if (root) fs.chownSync(ref, 65534, 65534);
  const f = path.join(dir, "etc", "new.json");
  writeSettings(f, { siteId: "y" }, ref);
  const st = fs.statSync(f);
  assert.equal(st.mode & 0o777, 0o600);
  if (root) assert.deepEqual([st.uid, st.gid], [65534, 65534]);
  assert.deepEqual(root ? ownerToKeep(ref) : null, root ? { uid: 65534, gid: 65534 } : null);
  assert.equal(ownerToKeep(dir), null, "a root-owned directory (or not running as root): nothing to hand over");
  assert.equal(ownerToKeep(path.join(dir, "missing")), null);
});

test("a file that is not a JSON object of settings is refused and left as it was", () => {
  for (const text of ["[1,2]", "null", "{ broken", '"text"']) {
    const f = path.join(dir, "bad.json");
    fs.writeFileSync(f, text);
    assert.throws(() => writeSettings(f, { siteId: "z" }), /bad\.json is not (valid JSON|a JSON object of settings).*; not changed/);
    assert.equal(fs.readFileSync(f, "utf8"), text);
    assert.deepEqual(fs.readdirSync(dir).filter((n) => n.includes(".tmp-")), []);
  }
});

test("ringedge settings unset: unknown names refused (exit 2) naming them, the file unchanged; known ones removed", async () => {
  const f = path.join(dir, "conf.json");
  const original = JSON.stringify({ siteId: "lab-3", mqttPassword: "p" });
  fs.writeFileSync(f, original);
  let out = "";
  let err = "";
  const run = (...args: string[]): Promise<number> => main([...args, "--config", f], (s) => (out += s), (s) => (err += s));
  assert.equal(await run("settings", "unset", "mqttPasword"), 2);
  assert.match(err, /unknown setting 'mqttPasword' \(did you mean 'mqttPassword'\?\)/);
  assert.equal(fs.readFileSync(f, "utf8"), original);
  assert.equal(await run("settings", "unset"), 2);
  assert.match(err, /settings unset needs at least one setting name/);
  assert.equal(await run("settings", "unset", "mqttPassword"), 0);
  assert.match(out, /mqttPassword removed from /);
  assert.deepEqual(JSON.parse(fs.readFileSync(f, "utf8")), { siteId: "lab-3" });
});
