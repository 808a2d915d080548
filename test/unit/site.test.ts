import { test, describe } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { validatePayload, toJsonPath, payloadNames } from "../../agent/contract.ts";
import { SiteService, checkSiteConfig, readSiteFile, formatSiteErrors, versionStanding } from "../../agent/site/site.ts";
import { Store } from "../../agent/store/store.ts";
import { EventBus } from "../../agent/bus.ts";
import { defaultProfiles } from "../../provisioning/profiles.ts";
import { tempDir } from "../tmpdir.ts";

const FIXED = new Date("2024-05-01T10:00:00.000Z");
const EXAMPLE = JSON.parse(fs.readFileSync(new URL("../../examples/site.json", import.meta.url), "utf8")) as Record<string, any>;
const INVALID = JSON.parse(fs.readFileSync(new URL("../../examples/site-invalid.json", import.meta.url), "utf8")) as Record<string, any>;

function tmpDir(): string {
  return tempDir("ringedge-site-");
}

function site(version: number, over: Record<string, unknown> = {}): Record<string, any> {
  return { ...structuredClone(EXAMPLE), version, ...over };
}

async function service(): Promise<{ store: Store; svc: SiteService; events: Array<{ version: number; source: string }>; voided: string[][] }> {
  const store = await Store.open(tmpDir(), { now: () => FIXED });
  const bus = new EventBus();
  const events: Array<{ version: number; source: string }> = [];
  bus.on("site.applied", (e) => events.push(e));
  const voided: string[][] = [];
  const svc = new SiteService({ store, bus, now: () => FIXED, onDevicesChanged: (v) => voided.push([...v]) });
  svc.start();
  return { store, svc, events, voided };
}

describe("contract", () => {
  test("the example site file is a valid siteConfig; the schema defines its parts", () => {
    assert.deepEqual(validatePayload("siteConfig", EXAMPLE), { ok: true });
    for (const name of ["siteConfig", "settings", "user", "device", "group", "noAnswerAction"]) assert.ok(payloadNames().includes(name), name);
    assert.deepEqual(validatePayload("user", { id: "a", extension: "1", name: "A", availability: "away" }), { ok: true });
  });

  test("ajv instance paths become validateSite-style paths", () => {
    const v = { groups: [{}, {}, { members: ["a"] }], "odd key": { x: 1 } };
    assert.equal(toJsonPath("/groups/2/members/0", v), "groups[2].members[0]");
    assert.equal(toJsonPath("", v), "$");
    assert.equal(toJsonPath("/groups/1", v, "strategy"), "groups[1].strategy");
    assert.equal(toJsonPath("/odd key/x", v), '["odd key"].x');
    assert.equal(toJsonPath("/a~1b", { "a/b": 1 }), '["a/b"]');
  });

  test("schema errors carry exact paths and readable messages; hostile values never throw", () => {
    const bad = site(1);
    bad.groups[1].members[0] = 42;
    bad.groups[2].noAnswer = { kind: "wait-for-operator", maxWaitS: 30, then: { kind: "wait-for-operator", maxWaitS: 5, then: { kind: "hangup" } } };
    bad.groups[3].noAnswer = { kind: "voicemail", uri: 7 };
    bad.users[0].colour = "red";
    delete bad.devices[0].kind;
    bad.settings.trunk.allowedSources = ["127.0.0.1", "127.0.0.1"];
    const r = validatePayload("siteConfig", bad);
    assert.equal(r.ok, false);
    const got = (r as { errors: Array<{ path: string; message: string }> }).errors.map((e) => `${e.path}: ${e.message}`);
    for (const want of [
      "groups[1].members[0]: must be a string",
      'groups[2].noAnswer.then.kind: must be one of "voicemail", "forward-mobile", "forward-number", "overflow-group", "hangup"',
      "groups[3].noAnswer.uri: must be a string",
      "users[0].colour: is not a known property",
      "devices[0].kind: is required",
      "settings.trunk.allowedSources: must not repeat an item (items 0 and 1 are equal)",
    ]) assert.ok(got.includes(want), `${want}\n in ${got.join("\n")}`);
    for (const hostile of [null, 7, "x", [], { schema: "ringedge.site/1", version: -1, users: "no" }, { __proto__: { users: [] } }]) {
      const h = validatePayload("siteConfig", hostile);
      assert.equal(h.ok, false);
    }
    assert.equal(validatePayload("noSuchPayload", {}).ok, false);
  });
});

describe("checkSiteConfig", () => {
  test("the invalid example lists every error by path (schema, meaning and store layers)", () => {
    const r = checkSiteConfig(INVALID, []);
    assert.equal(r.ok, false);
    const got = (r as { errors: Array<{ code: string; path: string }> }).errors.map((e) => `${e.code} ${e.path}`);
    assert.deepEqual(got.sort(), [
      "duplicate-extension users[1].extension",
      "duplicate-mac devices[1].mac",
      "duplicate-member groups[0].members[2]",
      "duplicate-number groups[1].number",
      "duplicate-username devices[3].username",
      "overflow-loop groups[0].noAnswer.groupId",
      "schema groups[0].strategy",
      "schema groups[1].ringCount",
      "schema settings.pickupCode",
      "schema settings.trunk.host",
      "schema users[1].availability",
      "unknown-member groups[0].members[1]",
      "unknown-owner devices[2].owner",
    ]);
  });

  test("default usernames: the owner's extension for the first device, else the id; clashes with local devices", () => {
    const r = checkSiteConfig(site(1), []);
    assert.ok(r.ok);
    assert.deepEqual(r.value.devices.filter((d) => d.owner === "anna").map((d) => d.username), ["1001", "anna-soft"]);
    assert.equal(r.value.settings.pickupCode, "*8");
    assert.match(r.value.hash, /^[0-9a-f]{64}$/);
    const second = site(1);
    delete second.devices[7].username; // anna's second device: defaults to its id
    const r2 = checkSiteConfig(second, []);
    assert.ok(r2.ok);
    assert.equal(r2.value.devices[7]?.username, "soft-anna");
    const local = [{ id: "desk-anna", username: "1002", password: "pw-local-1", kind: "physical" as const, createdAt: FIXED.toISOString(), origin: "local" as const, mac: "805ec0100007" }];
    const r3 = checkSiteConfig(site(1), local);
    assert.equal(r3.ok, false);
    assert.deepEqual((r3 as { errors: Array<{ code: string; path: string }> }).errors.map((e) => `${e.code} ${e.path}`), [
      "local-device-id devices[0].id",
      "duplicate-username devices[1].username",
      "duplicate-mac devices[6].mac",
    ]);
    // Site-origin devices are the snapshot's own: they never clash with it.
    assert.ok(checkSiteConfig(site(1), [{ ...local[0]!, origin: "site" }]).ok);
  });

  test("device models: canonical <vendor>/<model>; a bare or alias name is stored canonical; unknown vendor or model refused at its path", () => {
    const r = checkSiteConfig(site(1), []);
    assert.ok(r.ok);
    assert.deepEqual(r.value.devices.filter((d) => d.model !== undefined).map((d) => d.model), ["yealink/T46U", "yealink/T54W", "snom/D735", "snom/D735", "yealink/T31G", "yealink/T31G", "yealink/T57W"]);
    const loose = site(1);
    loose.devices[0].model = "T46U";
    loose.devices[1].model = "Yealink/sip-t54w";
    loose.devices[2].model = "SNOM/d735";
    const r2 = checkSiteConfig(loose, []);
    assert.ok(r2.ok);
    assert.deepEqual(r2.value.devices.slice(0, 3).map((d) => d.model), ["yealink/T46U", "yealink/T54W", "snom/D735"]);
    const bad = site(1);
    bad.devices[0].model = "acme/T46U";
    bad.devices[3].model = "yealink/T99X";
    bad.devices[4].model = "D735X";
    bad.devices[5].model = "yealink/T46U/x"; // the contract's pattern refuses it: said once, by the schema
    const r3 = checkSiteConfig(bad, []);
    assert.equal(r3.ok, false);
    const errors = (r3 as { errors: Array<{ code: string; path: string; message: string }> }).errors;
    assert.deepEqual(errors.map((e) => `${e.code} ${e.path}`), ["schema devices[5].model", "unknown-model devices[0].model", "unknown-model devices[3].model", "unknown-model devices[4].model"]);
    assert.match(errors[1]!.message, /unknown vendor "acme" \(known: .*yealink/);
    assert.match(errors[2]!.message, /Yealink has no model "T99X" \(known: yealink\/T46U, /);
    assert.match(errors[3]!.message, /unknown model "D735X"/);
    // A bare name two vendors know is refused, naming both canonical forms.
    const profiles = new Map(defaultProfiles());
    profiles.set("acme", { ...profiles.get("yealink")!, vendor: "acme", displayName: "Acme" });
    const twice = site(1);
    twice.devices[0].model = "T46U";
    const r4 = checkSiteConfig(twice, [], profiles);
    assert.deepEqual((r4 as { errors: unknown[] }).errors, [{ code: "ambiguous-model", path: "devices[0].model", message: 'model "T46U" is ambiguous: write one of yealink/T46U, acme/T46U' }]);
    assert.ok(checkSiteConfig(site(1), [], profiles).ok, "the canonical form is never ambiguous");
  });

  test("a group number that is a device's SIP username (local phone, or a file device's explicit username) is refused by path", () => {
    const ex = site(1);
    const number = ex.groups[1].number as string;
    const local = [{ id: `dev-${number}`, username: number, password: "pw-local-1", kind: "physical" as const, createdAt: FIXED.toISOString(), origin: "local" as const, mac: "805ec0100099" }];
    const r = checkSiteConfig(ex, local);
    assert.deepEqual((r as { errors: unknown[] }).errors, [{ code: "duplicate-number", path: "groups[1].number", message: `group number ${number} is the SIP username of local device "dev-${number}"` }]);
    const named = site(1);
    named.devices[7].username = number;
    const r2 = checkSiteConfig(named, []);
    assert.deepEqual((r2 as { errors: unknown[] }).errors, [{ code: "duplicate-number", path: "devices[7].username", message: `SIP username "${number}" is the number of groups[1]` }]);
    // A site device of the file itself, stored earlier, never clashes with its own file.
    assert.ok(checkSiteConfig(site(1), [{ ...local[0]!, origin: "site" }]).ok);
  });

  test("pickup code defaults to *8; a settings-less file is refused with its path", () => {
    const noCode = site(1, { settings: {} });
    const r = checkSiteConfig(noCode, []);
    assert.ok(r.ok);
    assert.deepEqual(r.value.settings, { pickupCode: "*8" });
    const none = site(1);
    delete none.settings;
    assert.deepEqual((checkSiteConfig(none, []) as { errors: unknown[] }).errors, [{ code: "schema", path: "settings", message: "is required" }]);
  });

  test("readSiteFile and formatSiteErrors", () => {
    const dir = tmpDir();
    fs.writeFileSync(path.join(dir, "bad.json"), "{ not json");
    const r = readSiteFile(path.join(dir, "bad.json"));
    assert.equal(r.ok, false);
    assert.match(formatSiteErrors(r.ok ? [] : r.errors), /^\$: .*bad\.json is not valid JSON/);
    assert.equal(readSiteFile(path.join(dir, "missing.json")).ok, false);
  });
});

describe("SiteService", () => {
  test("apply: persists before ok, swaps the index, emits site.applied", async () => {
    const { store, svc, events } = await service();
    assert.equal(svc.current().record, null);
    assert.equal(svc.current().index.groupsById.size, 0);
    const r = await svc.apply(site(1), "file");
    assert.deepEqual({ ...r, devices: undefined }, { ok: true, version: 1, changed: true, devices: undefined });
    assert.equal(store.hasPendingWrites(), false, "on disk before ok");
    const cur = svc.current();
    assert.equal(cur.record?.version, 1);
    assert.equal(cur.index.groupsByNumber.get("602")?.pickup?.enabled, true);
    assert.deepEqual(cur.index.devicesByOwner.get("anna")?.map((d) => d.id), ["desk-anna", "soft-anna"]);
    assert.deepEqual(events, [{ version: 1, source: "file" }]);
    assert.equal(store.findDeviceByUsername("1001")?.origin, "site");
    await store.close();
    const again = await Store.open(store.dataDir);
    assert.equal(again.site?.version, 1);
    assert.equal(again.site?.source, "file");
    await again.close();
  });

  test("versionStanding: newer applies; same version is 'same' only with the same content, else a conflict", () => {
    const applied = { version: 3, hash: "aa" };
    assert.equal(versionStanding(null, { version: 1, hash: "bb" }), "newer");
    assert.equal(versionStanding(applied, { version: 4, hash: "aa" }), "newer");
    assert.equal(versionStanding(applied, { version: 3, hash: "aa" }), "same");
    assert.equal(versionStanding(applied, { version: 3, hash: "bb" }), "conflict");
    assert.equal(versionStanding({ version: 3, hash: null }, { version: 3, hash: "bb" }), "conflict");
    assert.equal(versionStanding(applied, { version: 2, hash: "bb" }), "older");
  });

  test("version ordering: equal or older versions change nothing", async () => {
    const { store, svc, events } = await service();
    assert.equal((await svc.apply(site(3), "console")).ok, true);
    const writes = store.writeCount;
    assert.deepEqual(await svc.apply(site(3), "file"), { ok: true, version: 3, changed: false, note: "version 3 is already applied" });
    const different = site(3);
    different.users[0].name = "Anna B.";
    const same = await svc.apply(different, "file");
    assert.equal(same.ok && same.changed, false);
    assert.match((same as { note: string }).note, /different content; raise "version"/);
    const older = await svc.apply(site(2), "file");
    assert.deepEqual(older, { ok: true, version: 3, changed: false, note: "version 2 is older than the applied version 3" });
    assert.equal(store.writeCount, writes);
    assert.equal(store.site?.source, "console");
    assert.equal(events.length, 1);
    const newer = await svc.apply(different.version === 3 ? { ...different, version: 4 } : different, "file");
    assert.equal(newer.ok && newer.changed, true);
    assert.equal(svc.current().index.usersById.get("anna")?.name, "Anna B.");
    await store.close();
  });

  test("a failing apply changes nothing (store, index, devices)", async () => {
    const { store, svc, events } = await service();
    assert.ok((await svc.apply(site(1), "file")).ok);
    const before = JSON.stringify({ d: store.listDevices(), s: store.site, b: store.listBindings() });
    const index = svc.current();
    const bad = site(2);
    bad.groups[0].members.push("nobody");
    bad.devices.push({ id: "desk-zz", owner: "anna", kind: "physical", mac: "80:5e:c0:10:00:01" });
    const r = await svc.apply(bad, "file");
    assert.equal(r.ok, false);
    assert.deepEqual((r as { errors: Array<{ path: string }> }).errors.map((e) => e.path), ["groups[0].members[3]", "devices[9].mac"]);
    assert.equal(JSON.stringify({ d: store.listDevices(), s: store.site, b: store.listBindings() }), before);
    assert.equal(svc.current(), index, "the same state reference");
    assert.equal(events.length, 1);
    // check() is the dry run: same verdict, nothing applied.
    assert.equal(svc.check(bad).ok, false);
    assert.deepEqual(svc.check(site(2)), { ok: true, version: 2, changed: true });
    assert.equal(store.site?.version, 1);
    await store.close();
  });

  test("a store that cannot save: the apply fails and the previous site stays", async () => {
    let failWrites = false;
    const store = await Store.open(tmpDir(), {
      now: () => FIXED,
      onError: () => undefined,
      retryDelayMs: 60_000,
      onWriteStep: (step) => {
        if (failWrites && step === "tmp-synced") throw new Error("disk full (test)");
      },
    });
    const svc = new SiteService({ store, now: () => FIXED });
    assert.ok((await svc.apply(site(1), "file")).ok);
    const passwordBefore = store.getDevice("desk-anna")?.password;
    failWrites = true;
    const next = site(2);
    next.devices = next.devices.filter((d: { id: string }) => d.id !== "desk-anna");
    const r = await svc.apply(next, "file");
    assert.equal(r.ok, false);
    assert.equal((r as { errors: Array<{ code: string; message: string }> }).errors[0]?.code, "persist-failed");
    assert.match((r as { errors: Array<{ message: string }> }).errors[0]!.message, /disk full \(test\)/);
    assert.equal(store.site?.version, 1);
    assert.equal(store.getDevice("desk-anna")?.password, passwordBefore);
    assert.equal(svc.current().record?.version, 1);
    failWrites = false;
    await store.close();
    const again = await Store.open(store.dataDir);
    assert.equal(again.site?.version, 1);
    assert.ok(again.getDevice("desk-anna"));
    await again.close();
  });

  test("a console push with an unknown model is refused by path and changes nothing; a good one stores models canonical", async () => {
    const { store, svc } = await service();
    const bad = site(1);
    bad.devices[4].model = "yealink/T4";
    const r = await svc.apply(bad, "console");
    assert.deepEqual(r, { ok: false, errors: [{ code: "unknown-model", path: "devices[4].model", message: r.ok ? "" : r.errors[0]!.message }] });
    assert.match(r.ok ? "" : r.errors[0]!.message, /^Yealink has no model "T4" \(known: /);
    assert.equal(store.site, null);
    assert.deepEqual(store.listDevices(), []);
    const good = site(1);
    good.devices[4].model = "sip-t31g";
    assert.ok((await svc.apply(good, "console")).ok);
    assert.equal(store.getDevice("desk-eva")?.model, "yealink/T31G");
    await store.close();
  });

  test("site devices replace only site devices; passwords kept on re-apply unless the file gives one", async () => {
    const { store, svc, voided } = await service();
    assert.ok(store.addDevice({ id: "lobby", username: "lobby-phone", password: "lobby-pw-1", kind: "physical", owner: "anna" }).ok);
    assert.ok((await svc.apply(site(1), "file")).ok);
    assert.deepEqual(svc.current().index.devicesByOwner.get("anna")?.map((d) => d.id), ["lobby", "desk-anna", "soft-anna"], "a local device of a site user rings too");
    const annaPw = store.getDevice("desk-anna")!.password;
    assert.equal(store.getDevice("soft-ben")?.password, "ben-demo-Secret-42");
    const next = site(2);
    next.devices = next.devices.filter((d: { id: string }) => d.id !== "desk-felix");
    next.devices.find((d: { id: string }) => d.id === "soft-ben").password = "ben-new-Secret-43";
    next.devices.find((d: { id: string }) => d.id === "soft-anna").username = "anna-laptop";
    const r = await svc.apply(next, "file");
    assert.ok(r.ok && r.changed);
    assert.deepEqual(r.devices?.removed, ["desk-felix"]);
    assert.deepEqual(r.devices?.updated.sort(), ["soft-anna", "soft-ben"]);
    assert.equal(store.getDevice("desk-anna")?.password, annaPw);
    assert.equal(store.getDevice("soft-ben")?.password, "ben-new-Secret-43");
    assert.equal(store.getDevice("desk-felix"), undefined);
    assert.equal(store.getDevice("lobby")?.password, "lobby-pw-1");
    assert.deepEqual(voided.at(-1)?.sort(), ["desk-felix", "soft-anna"], "removed and renamed devices lose their registrations");
    await store.close();
  });
});
