import { test } from "node:test";
import assert from "node:assert/strict";
import { cpSync, readFileSync, rmSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { findModel, loadProfiles, modelRef, resolveModel, shownModel, validateAgainstSchema } from "../../provisioning/profiles.ts";
import { tempDir } from "../tmpdir.ts";

const SRC = "device-profiles";
const VENDORS = ["cisco", "fanvil", "grandstream", "poly", "snom", "yealink"];

/** A scratch copy of device-profiles, removed after `fn`. */
function withCopy(fn: (dir: string) => void): void {
  const dir = tempDir("ringedge-profiles-");
  try {
    cpSync(SRC, dir, { recursive: true });
    fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
function editJson(file: string, edit: (j: Record<string, unknown>) => void): void {
  const j = JSON.parse(readFileSync(file, "utf8")) as Record<string, unknown>;
  edit(j);
  writeFileSync(file, JSON.stringify(j, null, 2));
}

test("the shipped profiles all load, each with several models", () => {
  const { profiles, errors } = loadProfiles(SRC);
  assert.deepEqual(errors, []);
  assert.deepEqual([...profiles.keys()].sort(), VENDORS);
  for (const p of profiles.values()) {
    assert.ok(p.models.length >= 3, `${p.vendor} has at least 3 models`);
    assert.ok(p.files.some((f) => f.kind === "mac-config" && f.template && f.bootstrapTemplate), `${p.vendor} has a device config with a bootstrap variant`);
    assert.ok(p.userAgents.length >= 1);
    for (const m of p.models) assert.ok(m.accounts >= 1 && m.physical === true);
  }
  const yealink = profiles.get("yealink")!;
  assert.deepEqual(yealink.models.map((m) => m.hw), ["108", "096", "097", "124"]);
  assert.equal(yealink.resync.event, "check-sync");
  assert.equal(profiles.get("cisco")!.resync.event, "resync");
});

test("resolveModel: <vendor>/<model> canonical from any case or alias; bare only when one vendor knows it; a vendor hint is strict", () => {
  const { profiles } = loadProfiles("device-profiles");
  const ref = (text: unknown, vendor?: string): string => {
    const r = resolveModel(profiles, text, vendor);
    return r.ok ? r.ref : `${r.reason}: ${r.message}`;
  };
  assert.equal(ref("yealink/T46U"), "yealink/T46U");
  assert.equal(ref("YEALINK/sip-t46u"), "yealink/T46U");
  assert.equal(ref("t46u"), "yealink/T46U");
  assert.equal(ref("poly/Edge E350"), "poly/EdgeE350");
  assert.equal(ref("CP-7841-3PCC", "cisco"), "cisco/CP-7841-3PCC");
  assert.equal(ref("cisco/7841", "cisco"), "cisco/CP-7841-3PCC");
  assert.match(ref("snom/D785", "yealink"), /^unknown-model: model "snom\/D785" is not a Yealink model/);
  assert.match(ref("D785", "yealink"), /^unknown-model: Yealink has no model "D785"/);
  assert.match(ref("nokia/3310"), /^unknown-vendor: unknown vendor "nokia"/);
  assert.match(ref(""), /^invalid: model is empty/);
  assert.match(ref(42), /^invalid/);
  assert.match(ref("a/b/c"), /^invalid: .*not of the form <vendor>\/<model>/);
  assert.match(ref("\u001b[31mT46U"), /^invalid/);
  // Every shipped model resolves from its canonical form and from its bare id (no clashes today).
  for (const p of profiles.values()) for (const m of p.models) {
    assert.equal(ref(modelRef(p, m)), modelRef(p, m));
    assert.equal(ref(m.id), modelRef(p, m), `${m.id} is unambiguous`);
  }
  // A name two vendors know is ambiguous bare, fine canonical.
  const two = new Map(profiles);
  two.set("acme", { ...profiles.get("snom")!, vendor: "acme", displayName: "Acme" });
  assert.equal(ref("D785"), "snom/D785");
  const amb = resolveModel(two, "D785");
  assert.deepEqual(amb.ok ? amb.ref : [amb.reason, amb.message], ["ambiguous", 'model "D785" is ambiguous: write one of snom/D785, acme/D785']);
  assert.equal(findModel(two, "acme/d785")?.profile.vendor, "acme");
  assert.equal(findModel(two, "D785"), undefined);
  assert.equal(shownModel(profiles, "sip-t54w"), "yealink/T54W");
  assert.equal(shownModel(profiles, "Legacy-42"), "Legacy-42", "an unknown stored model is shown as stored");
});

test("findModel: by id, alias, case-insensitive, optionally within a vendor", () => {
  const { profiles } = loadProfiles(SRC);
  assert.equal(findModel(profiles, "T46U")?.profile.vendor, "yealink");
  assert.equal(findModel(profiles, "sip-t54w")?.model.id, "T54W");
  assert.equal(findModel(profiles, "VVX_411")?.model.id, "VVX411");
  assert.equal(findModel(profiles, "cp-8841-3pcc")?.model.lineKeys, 10);
  assert.equal(findModel(profiles, "GRP2614", "grandstream")?.model.id, "GRP2614");
  assert.equal(findModel(profiles, "GRP2614", "yealink"), undefined);
  assert.equal(findModel(profiles, "T99Z"), undefined);
  assert.equal(findModel(profiles, ""), undefined);
  assert.equal(findModel(profiles, 7 as never), undefined);
});

test("a broken profile is reported by name and the others still load", () => {
  withCopy((dir) => {
    editJson(join(dir, "snom", "profile.json"), (j) => {
      delete j.resync;
    });
    const { profiles, errors } = loadProfiles(dir);
    assert.deepEqual([...profiles.keys()].sort(), VENDORS.filter((v) => v !== "snom"));
    assert.equal(errors.length, 1);
    assert.equal(errors[0]!.vendor, "snom");
    assert.match(errors[0]!.message, /missing required 'resync'/);
  });
});

test("each kind of breakage is caught and named", () => {
  const cases: Array<{ vendor: string; breakIt: (dir: string) => void; message: RegExp }> = [
    { vendor: "poly", breakIt: (d) => writeFileSync(join(d, "poly", "profile.json"), "{ not json"), message: /profile\.json: .*JSON/ },
    { vendor: "fanvil", breakIt: (d) => editJson(join(d, "fanvil", "profile.json"), (j) => { j.format = "yaml"; }), message: /\/format: must be one of/ },
    { vendor: "cisco", breakIt: (d) => rmSync(join(d, "cisco", "device.xml")), message: /template 'device\.xml' does not exist/ },
    { vendor: "yealink", breakIt: (d) => writeFileSync(join(d, "yealink", "common.cfg"), "{{#if x}}\nno end\n"), message: /common\.cfg:1: .*never closed/ },
    { vendor: "yealink", breakIt: (d) => writeFileSync(join(d, "yealink", "device.cfg"), "#!version:1.0.0.1\naccount.1.password = {{sipPasword}}\n"), message: /template 'device\.cfg'.*unknown variable 'sipPasword'/ },
    // Fail closed at load: a bootstrap or common template must not be able to read the SIP password.
    { vendor: "yealink", breakIt: (d) => writeFileSync(join(d, "yealink", "bootstrap.cfg"), "#!version:1.0.0.1\naccount.1.password = {{sipPassword}}\n"), message: /bootstrap\.cfg' \(mac-config, bootstrap.*unknown variable 'sipPassword'/ },
    { vendor: "snom", breakIt: (d) => writeFileSync(join(d, "snom", "common.xml"), "<settings>{{sipPassword}}{{mac}}</settings>"), message: /common\.xml' \(common.*unknown variable 'sipPassword'/ },
    { vendor: "grandstream", breakIt: (d) => editJson(join(d, "grandstream", "profile.json"), (j) => { j.vendor = "gs"; }), message: /does not match folder name 'grandstream'/ },
    { vendor: "fanvil", breakIt: (d) => editJson(join(d, "fanvil", "profile.json"), (j) => { (j.userAgents as Array<Record<string, string>>)[0]!.regex = "^Fanvil (?<model>"; }), message: /userAgents\/0: invalid regex/ },
    { vendor: "fanvil", breakIt: (d) => editJson(join(d, "fanvil", "profile.json"), (j) => { (j.userAgents as Array<Record<string, string>>)[0]!.example = "Yealink SIP-T46U"; }), message: /does not match its own example/ },
    { vendor: "cisco", breakIt: (d) => editJson(join(d, "cisco", "profile.json"), (j) => { (j.files as Array<Record<string, unknown>>).push({ pattern: "{serial}.cfg", kind: "common", template: "boot.xml", credentials: false }); }), message: /no model defines placeholder \{serial\}/ },
    { vendor: "poly", breakIt: (d) => editJson(join(d, "poly", "profile.json"), (j) => { delete (j.files as Array<Record<string, unknown>>)[2]!.bootstrapTemplate; }), message: /carries credentials but has no bootstrapTemplate/ },
    { vendor: "yealink", breakIt: (d) => editJson(join(d, "yealink", "profile.json"), (j) => { (j.models as Array<Record<string, unknown>>)[1]!.id = "T46U"; }), message: /name 'T46U' is used by another model/ },
    { vendor: "yealink", breakIt: (d) => editJson(join(d, "yealink", "profile.json"), (j) => { delete (j.models as Array<Record<string, unknown>>)[0]!.hw; }), message: /no model defines|unknown variable 'modelHw'/ },
    { vendor: "snom", breakIt: (d) => rmSync(join(d, "snom", "profile.json")), message: /no profile\.json/ },
  ];
  for (const c of cases) {
    withCopy((dir) => {
      c.breakIt(dir);
      const { profiles, errors } = loadProfiles(dir);
      const mine = errors.filter((e) => e.vendor === c.vendor);
      assert.equal(mine.length, 1, `${c.vendor}: one error entry (${JSON.stringify(errors)})`);
      assert.match(mine[0]!.message, c.message);
      assert.equal(profiles.has(c.vendor), false);
      assert.equal(profiles.size, VENDORS.length - 1, "the other vendors load");
    });
  }
});

test("an unreadable or missing profiles folder is an error, not an exception", () => {
  const r = loadProfiles(join(tmpdir(), "ringedge-no-such-dir-" + process.pid));
  assert.equal(r.profiles.size, 0);
  assert.equal(r.errors.length, 1);
  withCopy((dir) => {
    writeFileSync(join(dir, "profile.schema.json"), "[");
    const r2 = loadProfiles(dir);
    assert.equal(r2.profiles.size, 0);
    assert.match(r2.errors[0]!.message, /profile\.schema\.json/);
  });
  withCopy((dir) => {
    mkdirSync(join(dir, "empty-vendor"));
    writeFileSync(join(dir, "README.txt"), "not a folder");
    const r3 = loadProfiles(dir);
    assert.equal(r3.profiles.size, VENDORS.length);
    assert.deepEqual(r3.errors, [{ vendor: "empty-vendor", message: "no profile.json" }]);
  });
});

test("validateAgainstSchema implements the subset the schema uses", () => {
  const schema = {
    type: "object",
    required: ["a"],
    additionalProperties: false,
    properties: {
      a: { type: "integer", minimum: 1, maximum: 3 },
      b: { type: "array", minItems: 1, items: { $ref: "#/$defs/s" } },
      c: { enum: ["x", "y"] },
      d: { type: "object", additionalProperties: { type: "string" } },
    },
    $defs: { s: { type: "string", pattern: "^[a-z]+$", maxLength: 3 } },
  };
  assert.deepEqual(validateAgainstSchema({ a: 2, b: ["ab"], c: "x", d: { k: "v" } }, schema), []);
  const errs = validateAgainstSchema({ a: 1.5, b: ["AB", "abcd"], c: "z", d: { k: 1 }, e: true }, schema);
  assert.ok(errs.some((e) => e.startsWith("/a: must be integer")));
  assert.ok(errs.some((e) => e.startsWith("/b/0:") && e.includes("does not match")));
  assert.ok(errs.some((e) => e.startsWith("/b/1: longer than 3")));
  assert.ok(errs.some((e) => e.startsWith("/c: must be one of")));
  assert.ok(errs.some((e) => e.startsWith("/d/k: must be string")));
  assert.ok(errs.some((e) => e.includes("unexpected property 'e'")));
  assert.deepEqual(validateAgainstSchema({}, schema), ["/: missing required 'a'"]);
  assert.deepEqual(validateAgainstSchema({ a: 1, b: [] }, schema), ["/b: needs at least 1 item(s)"]);
});

test("every shipped profile.json validates against profile.schema.json", () => {
  const schema = JSON.parse(readFileSync(join(SRC, "profile.schema.json"), "utf8"));
  for (const v of VENDORS) {
    const j = JSON.parse(readFileSync(join(SRC, v, "profile.json"), "utf8"));
    assert.deepEqual(validateAgainstSchema(j, schema), [], v);
  }
});
