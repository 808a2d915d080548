// Installer CSV: RFC 4180 quoting, spreadsheet habits (BOM, ';'), row-by-row errors with line
// numbers, duplicates inside the file, formula-safe export that round-trips.
import { test } from "node:test";
import assert from "node:assert/strict";
import { parseCsv, parsePhoneCsv, phonesToCsv } from "../../provisioning/csv.ts";
import { loadProfiles } from "../../provisioning/profiles.ts";

const { profiles } = loadProfiles("device-profiles");

test("good rows: any MAC notation, model aliases, quoted names with commas and quotes, BOM and CRLF", () => {
  const text = '\uFEFFMAC,Model,Ext,Name,Owner\r\n00:15:65:AA:BB:01,SIP-T46U,201,"Smith, Ann ""Desk""",u-1\r\n0004.f2aa.bb02,vvx_411,202,,\r\n';
  const r = parsePhoneCsv(text, profiles);
  assert.deepEqual(r.errors, []);
  assert.deepEqual(r.rows.map((x) => [x.line, x.mac, x.model, x.vendor, x.extension, x.name, x.owner]), [
    [2, "001565aabb01", "yealink/T46U", "yealink", "201", 'Smith, Ann "Desk"', "u-1"],
    [3, "0004f2aabb02", "poly/VVX411", "poly", "202", undefined, undefined],
  ]);
  assert.equal(parsePhoneCsv("mac;model;extension\n001565aabb01;T46U;201\n", profiles).rows.length, 1, "';' separator");
});

test("bad rows are reported by line and column; duplicates inside the file name the other line", () => {
  const text = [
    "mac,model,extension,name",
    "001565aabb01,T46U,201,Ann",
    "not-a-mac,T46U,202,Bob",
    "011565aabb03,T46U,203,group MAC",
    "001565aabb04,Nope,204,Unknown model",
    "001565aabb05,T46U,20 5,Bad ext",
    "001565aabb01,T46U,206,Dup MAC",
    "001565aabb07,T46U,201,Dup ext",
    "001565aabb08,T46U",
    "001565aabb09,T46U,209,=HYPERLINK(\"x\")",
  ].join("\n");
  const r = parsePhoneCsv(text, profiles);
  assert.deepEqual(r.rows.map((x) => x.line), [2, 10]);
  assert.deepEqual(r.errors.map((e) => [e.line, e.column]), [[3, "mac"], [4, "mac"], [5, "model"], [6, "extension"], [7, "mac"], [8, "extension"], [9, undefined]]);
  assert.match(r.errors[4]!.message, /also on line 2/);
  assert.equal(r.total, 9);
});

test("header problems, unclosed quotes, binary and oversized input give one clear error", () => {
  assert.match(parsePhoneCsv("mac,model\n001565aabb01,T46U\n", profiles).errors[0]!.message, /missing column 'extension'/);
  assert.match(parsePhoneCsv("mac,model,extension,colour\n", profiles).errors[0]!.message, /unknown column 'colour'/);
  assert.match(parsePhoneCsv('mac,model,extension\n"001565aabb01,T46U,201\n', profiles).errors[0]!.message, /never closed/);
  assert.match(parsePhoneCsv(Buffer.from([0xff, 0xfe, 0x00, 0x41]), profiles).errors[0]!.message, /not UTF-8|NUL/);
  assert.match(parsePhoneCsv("", profiles).errors[0]!.message, /empty/);
  assert.match(parsePhoneCsv("x".repeat(3 * 1024 * 1024), profiles).errors[0]!.message, /larger than/);
  assert.deepEqual(parseCsv('a,"b\nc",d\n').records, [{ line: 1, fields: ["a", "b\nc", "d"] }]);
});

test("export is CSV that imports back, with spreadsheet formulas defused", () => {
  const csv = phonesToCsv([{ mac: "001565aabb01", model: "T46U", extension: "201", name: 'Smith, "Ann"' }, { mac: "001565aabb02", model: "T46U", extension: "202", name: "=cmd|' /C calc'!A0" }]);
  const back = parsePhoneCsv(csv, profiles);
  assert.deepEqual(back.errors, []);
  assert.equal(back.rows[0]!.name, 'Smith, "Ann"');
  assert.match(csv, /,'=cmd/, "formula prefixed with a quote in the file");
  assert.equal(back.rows[1]!.name, "=cmd|' /C calc'!A0", "and the quote taken off again on import");
});
