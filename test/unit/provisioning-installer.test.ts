// The installer's phone commands on a store (no agent): model ids canonical on the way in and
// out (phone add, adopt, CSV import and export, list/show), extensions that are a group's number
// refused, and an exported CSV that re-imports unchanged.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { hashInstallerPassword } from "../../agent/appliance/password.ts";
import { defaultSettings } from "../../agent/config.ts";
import { ConsoleSession, LoginGuard } from "../../agent/console/serial.ts";
import { createLogger } from "../../agent/log.ts";
import { SiteService } from "../../agent/site/site.ts";
import { Store } from "../../agent/store/store.ts";
import { phonesToCsv, parsePhoneCsv } from "../../provisioning/csv.ts";
import { phoneCommands } from "../../provisioning/installer.ts";
import { loadProfiles } from "../../provisioning/profiles.ts";
import { pnpSeenNote } from "../../provisioning/pnp.ts";
import { tempDir } from "../tmpdir.ts";

const { profiles } = loadProfiles("device-profiles");
const EXAMPLE = JSON.parse(fs.readFileSync(new URL("../../examples/site.json", import.meta.url), "utf8")) as Record<string, unknown>;

async function withStore(fn: (store: Store, run: (cmd: string, args?: Record<string, unknown>) => Promise<any>) => Promise<void>): Promise<void> {
  const dir = tempDir("ringedge-installer-");
  const store = await Store.open(dir);
  const table = phoneCommands({ store });
  const run = async (cmd: string, args: Record<string, unknown> = {}): Promise<any> => table[cmd]!(args);
  try {
    await fn(store, run);
  } finally {
    await store.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

test("phone add: canonical, bare or alias model in any case is stored and shown canonical; unknown and malformed models refused with what is known", async () => {
  await withStore(async (store, run) => {
    assert.equal((await run("phone.add", { mac: "00:15:65:aa:bb:01", model: "yealink/T46U", extension: "201" })).model, "yealink/T46U");
    assert.equal((await run("phone.add", { mac: "0004f2aabb02", model: "VVX_411", extension: "202" })).model, "poly/VVX411");
    assert.equal((await run("phone.add", { mac: "000413aabb03", model: "SNOM/d785", extension: "203" })).model, "snom/D785");
    assert.deepEqual(store.listDevices().map((d) => d.model), ["yealink/T46U", "poly/VVX411", "snom/D785"]);
    assert.deepEqual((await run("phone.list")).map((p: { model: string; vendor: string }) => `${p.vendor} ${p.model}`), ["yealink yealink/T46U", "poly poly/VVX411", "snom snom/D785"]);
    assert.equal((await run("phone.show", { ref: "202" })).model, "poly/VVX411");
    const refused: Array<[string, RegExp]> = [
      ["T99Z", /unknown model "T99Z" \(known: cisco\/CP-7841-3PCC, /],
      ["acme/T46U", /unknown vendor "acme" \(known: cisco, fanvil, grandstream, poly, snom, yealink\)/],
      ["yealink/D785", /Yealink has no model "D785" \(known: yealink\/T46U, /],
      ["yealink/", /not of the form <vendor>\/<model>/],
      ["/T46U", /not of the form/],
      ["yealink/T46U/x", /not of the form/],
      ["T46U\u0000", /not a model name/],
      ["x".repeat(200), /not a model name/],
    ];
    for (const [model, message] of refused) await assert.rejects(run("phone.add", { mac: "001565aabb09", model, extension: "209" }), message, model);
    await assert.rejects(run("phone.add", { mac: "001565aabb09", extension: "209" }), /--model is required \(e\.g\. yealink\/T46U/);
    assert.equal(store.listDevices().length, 3, "nothing stored by a refused add");
  });
});

test("an extension that is a group's number is refused by phone add and by CSV import (row report)", async () => {
  await withStore(async (store, run) => {
    const applied = await new SiteService({ store }).apply(EXAMPLE, "file");
    assert.ok(applied.ok);
    const group = store.site!.groups[0]!;
    await assert.rejects(run("phone.add", { mac: "001565aabb21", model: "yealink/T46U", extension: group.number }), new RegExp(`extension ${group.number} is the number of group '${group.id}'`));
    const before = store.listDevices().length;
    const r = await run("phone.import", {
      rows: [
        { line: 2, mac: "001565aabb22", model: "yealink/T46U", extension: "2201" },
        { line: 3, mac: "001565aabb23", model: "T46U", extension: group.number },
      ],
    });
    assert.deepEqual(r.results.map((x: { line: number; ok: boolean; error?: string }) => [x.line, x.ok, x.error]), [
      [2, true, undefined],
      [3, false, `extension ${group.number} is the number of group '${group.id}'`],
    ]);
    assert.equal(r.applied, 0, "nothing applied while a row is bad");
    assert.equal(store.listDevices().length, before);
    // Hostile rows: not objects, wrong types; each reported, none crashes the import.
    const hostile = await run("phone.import", { rows: [null, 7, { line: 4, mac: 12, model: ["x"], extension: {} }], dryRun: true });
    assert.deepEqual(hostile.results.map((x: { ok: boolean; error?: string }) => [x.ok, x.error]), [[false, "bad MAC"], [false, "bad MAC"], [false, "bad MAC"]]);
  });
});

test("CSV export re-imports unchanged: same rows, same file", async () => {
  await withStore(async (_store, run) => {
    const rows = [
      { line: 2, mac: "001565aabb31", model: "T46U", extension: "301", name: 'Smith, "Ann"', owner: "anna" },
      { line: 3, mac: "00562baabb32", model: "cp-8841-3pcc", extension: "302", name: "=1+2 reception" },
      { line: 4, mac: "000b82aabb33", model: "Grandstream/GRP2614", extension: "303", name: "'-lobby" },
      { line: 5, mac: "0c383eaabb34", model: "fanvil/X4U-Pro", extension: "304" },
    ];
    const r = await run("phone.import", { rows });
    assert.equal(r.applied, 4, JSON.stringify(r.results));
    const exported = await run("phone.export");
    assert.deepEqual(exported.map((p: { model: string }) => p.model), ["yealink/T46U", "cisco/CP-8841-3PCC", "grandstream/GRP2614", "fanvil/X4U"]);
    const csv = phonesToCsv(exported);
    const back = parsePhoneCsv(csv, profiles);
    assert.deepEqual(back.errors, []);
    assert.deepEqual(
      back.rows.map(({ mac, model, extension, name, owner }) => ({ mac, model, extension, ...(name ? { name } : {}), ...(owner ? { owner } : {}) })),
      exported,
      "the parsed file is the exported list",
    );
    assert.equal(phonesToCsv(back.rows), csv, "and writes back to the same bytes");
  });
});

test("phone adopt takes the model a phone announced (PnP or HTTP), canonical", async () => {
  await withStore(async (store, run) => {
    const note = pnpSeenNote(profiles, { mac: "001565f4f9e1", vendor: "Yealink", model: "T54W", firmware: "96.87.0.16", source: { address: "10.0.0.31", port: 5060 } });
    assert.deepEqual(note, { mac: "001565f4f9e1", ip: "10.0.0.31", vendor: "yealink", firmware: "96.87.0.16", model: "yealink/T54W" });
    assert.ok(store.noteSeenPhone(note!).ok);
    const adopted = await run("phone.adopt", { mac: "001565f4f9e1", extension: "401" });
    assert.equal(adopted.model, "yealink/T54W");
    assert.equal(store.findDeviceByMac("001565f4f9e1")?.model, "yealink/T54W");
  });
});

test("pnpSeenNote: vendor in any case, model with or without the vendor's prefix; unknown ones kept as said; no MAC, no note", () => {
  const src = { address: "10.0.0.32", port: 5060 };
  assert.equal(pnpSeenNote(profiles, { mac: "000413a11fa7", vendor: "snom", model: "snomD785", source: src })?.model, "snom/D785");
  assert.equal(pnpSeenNote(profiles, { mac: "000b82a11fa8", vendor: "Grandstream", model: "GXP2170", source: src })?.model, "grandstream/GXP2170");
  assert.equal(pnpSeenNote(profiles, { mac: "0c383ea11fa9", vendor: "FANVIL", model: "X4U-V2", source: src })?.model, "fanvil/X4U");
  // A vendor name no profile uses: the model alone decides when one vendor knows it.
  assert.deepEqual(pnpSeenNote(profiles, { mac: "0004f2a11faa", vendor: "Polycom", model: "VVX_450", source: src }), { mac: "0004f2a11faa", ip: "10.0.0.32", vendor: "poly", model: "poly/VVX450" });
  assert.deepEqual(pnpSeenNote(profiles, { mac: "001565a11fab", vendor: "Yealink", model: "T99Z", source: src }), { mac: "001565a11fab", ip: "10.0.0.32", vendor: "yealink", model: "T99Z" });
  assert.equal(pnpSeenNote(profiles, { mac: "001565a11fac", vendor: "Yealink", model: "snom/D785", source: src })?.model, "snom/D785", "kept as said: not a Yealink model");
  assert.equal(pnpSeenNote(profiles, { vendor: "Yealink", model: "T54W", source: src }), undefined);
});

test("serial console: phone add takes a bare or canonical model and shows it canonical, whole, in the phones table", async () => {
  await withStore(async (store, run) => {
    const settings = { ...defaultSettings(), siteId: "lab-1", serialPassword: await hashInstallerPassword("install-3r"), serialLockoutFailures: 5, serialLockoutS: 60 };
    let out = "";
    const session = new ConsoleSession({ settings, guard: new LoginGuard(settings), table: phoneCommands({ store }), write: (t) => (out += t), log: createLogger("silent") });
    const line = async (text: string): Promise<string> => {
      out = "";
      session.input(new TextEncoder().encode(`${text}\r`));
      await session.idle();
      return out;
    };
    session.begin();
    await line("install-3r");
    assert.equal(session.loggedIn, true);
    assert.match(await line("phone add 00:15:65:aa:bb:41 T46U 501"), /added phone 001565aabb41 extension 501 \(yealink\/T46U\)/);
    assert.match(await line("phone add 000b82aabb42 grandstream/GXP2170 502"), /\(grandstream\/GXP2170\)/);
    assert.match(await line("phone add 000b82aabb43 nokia/3310 503"), /unknown vendor "nokia"/);
    const phones = await line("phones");
    assert.match(phones, /001565aabb41 +501 +yealink\/T46U +/);
    assert.match(phones, /000b82aabb42 +502 +grandstream\/GXP2170 +/, "the longest canonical model is not clipped");
    assert.equal((await run("phone.list")).length, 2);
  });
});
