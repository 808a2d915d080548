// Message lamps from the phones' side: every vendor's per-device config subscribes the line for
// message-summary (RFC 3842) where the vendor has a switch for it, sets the voicemail number /
// message key to the agent's voicemail code (the voicemailCode setting), still parses in the
// vendor's format, and the code comes from the setting, never from the template.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createLogger } from "../../agent/log.ts";
import { DEFAULT_VOICEMAIL_CODE } from "../../agent/presence/mwi.ts";
import { MemoryDirectory } from "../../provisioning/directory.ts";
import { FirmwareStore } from "../../provisioning/firmware.ts";
import { loadProfiles, type ModelProfile, type Profile } from "../../provisioning/profiles.ts";
import { renderConfig, type RenderConfigInput, type SiteInput } from "../../provisioning/render.ts";
import { ProvisioningServer } from "../../provisioning/server.ts";
import { findAll } from "../../provisioning/xmlcheck.ts";
import { FEATURE_DEVICE, FEATURE_SITE, VENDORS, foundModel, one, renderMacConfig, testEachModel, textOf, xmlRoot, yealinkKv } from "./provisioning-fixtures.ts";

const { profiles } = loadProfiles("device-profiles");
/** Not the default "*97": a template that hard-coded the code would not produce it. */
const CODE = "#86";
const SIP_USER = "anna-desk";

const site: SiteInput = { ...FEATURE_SITE, sipPort: 5062, voicemailCode: CODE };

const found = (vendor: string, modelId: string): { profile: Profile; model: ModelProfile } => foundModel(profiles, vendor, modelId);

const device = { ...FEATURE_DEVICE, sipUsername: SIP_USER };

const render = (vendor: string, modelId: string, over: Partial<RenderConfigInput> = {}): string => renderMacConfig(profiles, vendor, modelId, { device, site, lineKeys: [], ...over });

/** Where each vendor's phones read the MWI subscription switch and the voicemail number (device-profiles/README.md). */
const mwiChecks: Record<string, (body: string, modelId: string) => void> = {
  yealink(body) {
    const kv = yealinkKv(body);
    assert.equal(kv.get("account.1.subscribe_mwi"), "1", "subscribe for MWI");
    assert.equal(kv.get("account.1.subscribe_mwi_to_vm"), "0", "to the account itself");
    assert.equal(kv.get("account.1.subscribe_mwi_expires"), "3600");
    assert.equal(kv.get("account.1.display_mwi.enable"), "1");
    assert.equal(kv.get("voice_mail.number.1"), CODE, "the message key dials the voicemail code");
  },
  snom(body) {
    const root = xmlRoot(body);
    assert.equal(textOf(root, "user_mailbox", ["idx", "1"]), CODE, "mailbox: dialled by the retrieve key, subscribed for message-summary");
  },
  grandstream(body, modelId) {
    const root = xmlRoot(body);
    if (modelId.startsWith("GXP")) {
      assert.equal(textOf(root, "P99"), "1", "SUBSCRIBE for MWI");
      assert.equal(textOf(root, "P33"), CODE, "voice mail user ID");
    } else {
      assert.equal(textOf(root, "item", ["name", "account.1.sip.subscribe.forMwi"]), "Yes");
      assert.equal(textOf(root, "item", ["name", "account.1.sip.voicemail.number"]), CODE);
    }
  },
  poly(body) {
    const root = xmlRoot(body);
    const mwi = one(root, "mwi").attrs;
    assert.equal(mwi.get("msg.mwi.1.subscribe"), SIP_USER, "the line subscribes to its own SIP user");
    assert.equal(mwi.get("msg.mwi.1.callBackMode"), "contact");
    assert.equal(mwi.get("msg.mwi.1.callBack"), CODE);
    assert.equal(one(root, "msg").attrs.get("msg.bypassInstantMessage"), "1", "the Messages key goes straight to voicemail");
  },
  cisco(body) {
    const root = xmlRoot(body);
    assert.equal(textOf(root, "Voice_Mail_Server_1_"), "10.0.0.5:5062", "line 1 subscribes for message-summary at the agent");
    assert.equal(textOf(root, "Voice_Mail_Enable_1_"), "Yes");
    assert.equal(textOf(root, "Voice_Mail_Subscribe_Interval_1_"), "3600");
    assert.equal(textOf(root, "Voice_Mail_Number"), CODE);
    assert.equal(findAll(root, "Message_Waiting_1_").length, 0, "the lamp's state is the phone's, not configured");
  },
  fanvil(body) {
    const root = xmlRoot(body);
    const line = one(root, "SIP_Line_List_Entry");
    assert.equal(textOf(line, "MWI_Num"), CODE, "the line's voicemail number");
    assert.equal(textOf(line, "Subscribe"), "1", "subscribe for voice message");
    assert.equal(textOf(line, "Sub_Expire"), "3600");
  },
};

testEachModel({
  does: "the line subscribes for message-summary and the voicemail key dials the voicemail code",
  checkName: "an MWI check",
  profiles,
  render,
  checks: mwiChecks,
  defaultCode: DEFAULT_VOICEMAIL_CODE,
  codeFrom: "setting",
});

test("without a voicemail code the phones get the default *97", () => {
  const { voicemailCode: _omit, ...noCode } = site;
  assert.equal(DEFAULT_VOICEMAIL_CODE, "*97");
  assert.equal(yealinkKv(render("yealink", "T46U", { site: noCode })).get("voice_mail.number.1"), "*97");
  assert.equal(textOf(xmlRoot(render("snom", "D785", { site: noCode })), "user_mailbox", ["idx", "1"]), "*97");
});

test("a bad voicemail code is refused with a typed error naming site.voicemailCode (no file)", () => {
  const { profile, model } = found("yealink", "T46U");
  const bad: unknown[] = ["", "97", "*", "1*97", "*97\n", "*97 ", "*97<", "*12345678", "*9;x", 97, null];
  for (const voicemailCode of bad) {
    const r = renderConfig({ profile, model, fileKind: "mac-config", device, site: { ...site, voicemailCode: voicemailCode as string }, lineKeys: [], bootstrap: false });
    assert.equal(r.ok, false, JSON.stringify(voicemailCode));
    if (!r.ok) {
      assert.equal(r.error.code, "invalid-input");
      assert.equal(r.error.field, "site.voicemailCode", JSON.stringify(voicemailCode));
    }
  }
  for (const ok of ["*97", "#9", "*#*#1234"]) assert.equal(yealinkKv(render("yealink", "T46U", { site: { ...site, voicemailCode: ok } })).get("voice_mail.number.1"), ok);
});

test("the server renders the configured voicemail code (SiteDefaults.voicemailCode, read per request) into a served config", () => {
  const dir = new MemoryDirectory();
  dir.add({ deviceId: "dev-1", mac: "000413aabb03", model: "D785", extension: "201", displayName: "Ann", sipUsername: "201", sipPassword: "sip-pw-201", provisioning: { user: "prov-1", password: "provpw-1", token: "tok0123456789abcdef0123456789ab" }, createdAt: new Date().toISOString(), lineKeys: [] });
  let code = "*55";
  const server = new ProvisioningServer({
    profiles,
    directory: dir,
    firmware: new FirmwareStore({ dir: undefined }),
    site: () => ({ sipPort: 5060, transport: "udp", ntpServer: "pool.ntp.org", timeZone: "UTC", resyncIntervalMin: 1440, voicemailCode: code }),
    log: createLogger("error", "test", () => undefined),
    bootstrapWindowMs: 3600_000,
  });
  const ua = VENDORS.find((v) => v.vendor === "snom")!.userAgent;
  const get = () => server.handle({ method: "GET", url: "/p/tok0123456789abcdef0123456789ab/snomD785-000413AABB03.htm", hasBody: false, source: "10.0.0.20", local: { address: "10.0.0.5", port: 8080, scheme: "http" }, userAgent: ua });
  let r = get();
  assert.equal(r.status, 200, r.body);
  assert.equal(textOf(xmlRoot(r.body!), "user_mailbox", ["idx", "1"]), "*55");
  code = "*56"; // a SIGHUP changed the setting: the next fetch carries it
  r = get();
  assert.equal(textOf(xmlRoot(r.body!), "user_mailbox", ["idx", "1"]), "*56");
});
