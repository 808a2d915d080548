// Picking a ringing call up from a BLF key: every vendor's per-device config carries the site's
// pickup code (settings.pickupCode) and the vendor's BLF-pickup settings, still parses in the
// vendor's format, and the code comes from the site, never from the template.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createLogger } from "../../agent/log.ts";
import { SiteService } from "../../agent/site/site.ts";
import { DEFAULT_PICKUP_CODE } from "../../agent/site/types.ts";
import { Store } from "../../agent/store/store.ts";
import { MemoryDirectory } from "../../provisioning/directory.ts";
import { FirmwareStore } from "../../provisioning/firmware.ts";
import { loadProfiles, type ModelProfile, type Profile } from "../../provisioning/profiles.ts";
import { renderConfig, type LineKeyInput, type RenderConfigInput, type SiteInput } from "../../provisioning/render.ts";
import { ProvisioningServer } from "../../provisioning/server.ts";
import { StoreDirectory } from "../../provisioning/store-directory.ts";
import { findAll, ownText } from "../../provisioning/xmlcheck.ts";
import { FEATURE_DEVICE, FEATURE_SITE, VENDORS, foundModel, one, renderMacConfig, testEachModel, textOf, xmlRoot, yealinkKv } from "./provisioning-fixtures.ts";

const { profiles } = loadProfiles("device-profiles");
/** Not the default "*8": a template that hard-coded the code would not produce it. */
const CODE = "**7";

const site: SiteInput = { ...FEATURE_SITE, pickupCode: CODE };
// Key 1 watches Ben (BLF), key 2 is a speed dial: only the BLF key picks up.
const lineKeys: LineKeyInput[] = [
  { type: "blf", label: "Ben", extension: "1002" },
  { type: "speeddial", label: "Desk", extension: "0301234" },
];

const found = (vendor: string, modelId: string): { profile: Profile; model: ModelProfile } => foundModel(profiles, vendor, modelId);

const device = FEATURE_DEVICE;
const render = (vendor: string, modelId: string, over: Partial<RenderConfigInput> = {}): string => renderMacConfig(profiles, vendor, modelId, { device, site, lineKeys, ...over });

/** Where each vendor's phones read the pickup code and the BLF-pickup switches (device-profiles/README.md). */
const pickupChecks: Record<string, (body: string, modelId: string) => void> = {
  yealink(body) {
    const kv = yealinkKv(body);
    assert.equal(kv.get("account.1.dialoginfo_callpickup"), "1", "pickup by INVITE with Replaces from the dialog-info");
    assert.equal(kv.get("account.1.direct_pickup_code"), CODE);
    assert.equal(kv.get("features.pickup.direct_pickup_enable"), "1");
    assert.equal(kv.get("features.pickup.direct_pickup_code"), CODE);
    assert.equal(kv.get("features.pickup.blf_visual_enable"), "1");
    assert.equal(kv.get("features.pickup.blf_audio_enable"), "1");
    assert.equal(kv.get("linekey.1.type"), "16");
    assert.equal(kv.get("linekey.1.value"), "1002");
    assert.equal(kv.get("linekey.1.pickup_value"), CODE);
    assert.equal(kv.get("linekey.2.type"), "13");
    assert.equal(kv.get("linekey.2.pickup_value"), undefined, "a speed dial key has no pickup code");
  },
  poly(body) {
    const root = xmlRoot(body);
    const call = one(root, "call").attrs;
    assert.equal(call.get("call.directedCallPickupMethod"), "legacy", "dial the code + extension");
    assert.equal(call.get("call.directedCallPickupString"), CODE);
    assert.equal(one(root, "feature").attrs.get("feature.directedCallPickup.enabled"), "1");
    const att = one(root, "attendant").attrs;
    assert.equal(att.get("attendant.behaviors.display.spontaneousCallAppearances.normal"), "1");
    assert.equal(att.get("attendant.behaviors.display.remoteCallerID.normal"), "1");
    assert.equal(att.get("attendant.resourceList.1.address"), "sip:1002@10.0.0.5");
  },
  snom(body) {
    const root = xmlRoot(body);
    assert.equal(textOf(root, "callpickup_dialoginfo"), "on", "pickup by INVITE with Replaces from the dialog-info");
    assert.equal(textOf(root, "pickup_indication"), "on");
    assert.equal(textOf(root, "fkey", ["idx", "0"]), `blf sip:1002@10.0.0.5|${CODE}`);
    assert.equal(textOf(root, "fkey", ["idx", "1"]), "speed 0301234");
  },
  grandstream(body, modelId) {
    const root = xmlRoot(body);
    if (modelId.startsWith("GXP")) {
      assert.equal(textOf(root, "P1347"), CODE, "BLF call-pickup prefix");
      assert.equal(textOf(root, "P6752"), "0", "BLF call-pickup not forced to the prefix");
      assert.equal(textOf(root, "P23000"), "1", "key 1 is a BLF MPK");
      assert.equal(textOf(root, "P23003"), "1002");
    } else {
      assert.equal(textOf(root, "item", ["name", "account.1.sip.blf.callPickup.prefix"]), CODE);
      assert.equal(textOf(root, "item", ["name", "account.1.sip.blf.callPickup.forcePrefix"]), "Auto", "BLF call-pickup on, not forced to the prefix");
      assert.equal(textOf(root, "item", ["name", "pks.vpk.1.keyMode"]), "BLF");
      assert.equal(textOf(root, "item", ["name", "pks.vpk.1.value"]), "1002");
    }
  },
  cisco(body) {
    const root = xmlRoot(body);
    assert.equal(textOf(root, "Call_Pickup_Code"), CODE);
    assert.equal(textOf(root, "Attendant_Console_Call_Pickup_Code"), `${CODE}#`, "the code a BLF key with cp dials; # stands for the monitored user");
    assert.equal(textOf(root, "Extended_Function_1_"), "fnc=blf+sd+cp;sub=1002@10.0.0.5;ext=1002@10.0.0.5");
  },
  fanvil(body) {
    const root = xmlRoot(body);
    const values = findAll(root, "Value").map(ownText);
    assert.deepEqual(values, [`1002@1/ba${CODE}1002`, "0301234@1/s"], "BLF key picks up with code + extension; speed dial unchanged");
  },
};

testEachModel({
  does: "a BLF key picks up with the site's pickup code and the vendor's BLF-pickup settings",
  checkName: "a pickup check",
  profiles,
  render,
  checks: pickupChecks,
  defaultCode: DEFAULT_PICKUP_CODE,
  codeFrom: "site",
});

test("without a site pickup code the phones get the default *8", () => {
  const { pickupCode: _omit, ...noCode } = site;
  const body = render("snom", "D785", { site: noCode });
  assert.equal(DEFAULT_PICKUP_CODE, "*8");
  assert.equal(textOf(xmlRoot(body), "fkey", ["idx", "0"]), "blf sip:1002@10.0.0.5|*8");
  assert.equal(yealinkKv(render("yealink", "T46U", { site: noCode })).get("features.pickup.direct_pickup_code"), "*8");
});

test("a bad pickup code is refused with a typed error naming site.pickupCode (no file)", () => {
  const { profile, model } = found("snom", "D785");
  const bad: unknown[] = ["", "8", "*", "1*8", "*8|x", "*8 ", "*8\n", "*8</fkey>", "*12345678", "*8;x=1", 8, null];
  for (const pickupCode of bad) {
    const r = renderConfig({ profile, model, fileKind: "mac-config", device: { mac: "000413000001", extension: "1001", displayName: "A", sipUsername: "1001", sipPassword: "pw-pw-pw", provisioningUser: "p1", provisioningPassword: "pp1" }, site: { ...site, pickupCode: pickupCode as string }, lineKeys, bootstrap: false });
    assert.equal(r.ok, false, JSON.stringify(pickupCode));
    if (!r.ok) {
      assert.equal(r.error.code, "invalid-input");
      assert.equal(r.error.field, "site.pickupCode", JSON.stringify(pickupCode));
    }
  }
  // The longest and the #-led forms the contract allows are fine.
  for (const ok of ["*8", "#9", "*#*#1234", "**7"]) assert.ok(render("snom", "D785", { site: { ...site, pickupCode: ok } }).includes(`|${ok}<`), ok);
});

const log = createLogger("error", "test", () => undefined);

test("the server renders the site's pickup code (directory siteProvisioning) into a served config", () => {
  const dir = new MemoryDirectory();
  dir.site = { pickupCode: "#55" };
  dir.add({ deviceId: "dev-1", mac: "000413aabb03", model: "D785", extension: "201", displayName: "Ann", sipUsername: "201", sipPassword: "sip-pw-201", provisioning: { user: "prov-1", password: "provpw-1", token: "tok0123456789abcdef0123456789ab" }, createdAt: new Date().toISOString(), lineKeys: [{ type: "blf", label: "Ben", extension: "202" }] });
  const server = new ProvisioningServer({
    profiles,
    directory: dir,
    firmware: new FirmwareStore({ dir: undefined }),
    site: () => ({ sipPort: 5060, transport: "udp", ntpServer: "pool.ntp.org", timeZone: "UTC", resyncIntervalMin: 1440 }),
    log,
    bootstrapWindowMs: 3600_000,
  });
  const ua = VENDORS.find((v) => v.vendor === "snom")!.userAgent;
  const r = server.handle({ method: "GET", url: "/p/tok0123456789abcdef0123456789ab/snomD785-000413AABB03.htm", hasBody: false, source: "10.0.0.20", local: { address: "10.0.0.5", port: 8080, scheme: "http" }, userAgent: ua });
  assert.equal(r.status, 200, r.body);
  assert.equal(textOf(xmlRoot(r.body!), "fkey", ["idx", "0"]), "blf sip:202@10.0.0.5|#55");
});

test("an applied site's settings.pickupCode reaches the phones through the store directory", async () => {
  const example = JSON.parse(fs.readFileSync(new URL("../../examples/site.json", import.meta.url), "utf8")) as { settings: Record<string, unknown> };
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "ringedge-pickup-"));
  const store = await Store.open(dataDir);
  try {
    const directory = new StoreDirectory(store);
    assert.equal(directory.siteProvisioning().pickupCode, undefined, "no site yet: the renderer's default applies");
    const applied = await new SiteService({ store }).apply({ ...example, settings: { ...example.settings, pickupCode: "#55" } }, "file");
    assert.ok(applied.ok, JSON.stringify(applied));
    assert.equal(directory.siteProvisioning().pickupCode, "#55");
  } finally {
    await store.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
});
