import { test } from "node:test";
import assert from "node:assert/strict";
import { loadProfiles } from "../../provisioning/profiles.ts";
import { identify, requestedFileName, type Identification, type IdentifyInput } from "../../provisioning/identify.ts";
import { renderConfig } from "../../provisioning/render.ts";

const { profiles, errors } = loadProfiles("device-profiles");

function id(input: IdentifyInput): Identification {
  assert.deepEqual(errors, []);
  return identify(profiles, input);
}
function expectIdentified(r: Identification, want: Partial<Identification>): void {
  assert.equal(r.identified, true, `identified (reason: ${r.reason} ${r.detail})`);
  for (const [k, v] of Object.entries(want)) assert.deepEqual(r[k as keyof Identification], v, k);
}

// User-Agent strings as phones send them (provisioning.md §2-3 and vendor docs).
const UA = {
  yealinkColons: "Yealink SIP-T46U 108.86.0.75 00:15:65:5c:60:82",
  yealinkPlain: "Yealink SIP-T54W 96.86.0.70 001565aabbcc",
  yealinkDocExample: "Yealink SIP-T48G 35.72.0.6 00:15:65:5c:60:82",
  poly: "FileTransport PolycomVVX-VVX_411-UA/6.4.6.2240 Type/Application",
  polyDocExample: "FileTransport PolycomVVX-VVX_400-UA/4.1.4.7430 Type/Application",
  polyEdge: "FileTransport PolyEdge-Edge_E350-UA/8.1.5.0152 Type/Application",
  snom: "Mozilla/4.0 (compatible; snomD785-SIP 10.1.33.33 1.1.5-IFX-26.11.09 000413922D24 SXM:0 UXM:0 UXMC:0)",
  grandstream: "Grandstream Model HW GXP2170 SW 1.0.11.85 DevId 000b82865e6a",
  grandstreamGrp: "Grandstream Model HW GRP2614 SW 1.0.5.15 DevId c074ad0b63ee",
  cisco3pcc: "Cisco-CP-8841-3PCC/12.0.4 (00562b043615)",
  cisco3pccDocExample: "Cisco-CP-7832-3PCC/11.0.1 (00562b043615)",
  ciscoSpa: "Cisco/SPA508G-7.4.4 (0002FDFF2103)(CCQ162306EA)",
  fanvil: "Fanvil X4U 2.12.16.17 0c383e557eb1",
  fanvilDocExample: "Fanvil X5U-V2 2.12.16.17 0c383e557eb1",
};

test("Yealink with colons in the MAC: MAC file, model, firmware, exact", () => {
  expectIdentified(id({ path: "/prov/0015655c6082.cfg", userAgent: UA.yealinkColons }), {
    vendor: "yealink", model: "T46U", mac: "0015655c6082", firmware: "108.86.0.75",
    fileKind: "mac-config", template: "device.cfg", bootstrapTemplate: "bootstrap.cfg", confidence: "exact",
  });
  expectIdentified(id({ path: "/prov/0015655C6082.boot", userAgent: UA.yealinkColons }), { fileKind: "mac-boot", template: "mac.boot", mac: "0015655c6082" });
});

test("Yealink without colons (T5x) and the hw common file", () => {
  expectIdentified(id({ path: "/y000000000096.cfg", userAgent: UA.yealinkPlain }), {
    vendor: "yealink", model: "T54W", mac: "001565aabbcc", fileKind: "common", template: "common.cfg", confidence: "exact",
  });
  expectIdentified(id({ path: "/y000000000000.boot", userAgent: UA.yealinkPlain }), { fileKind: "boot", model: "T54W" });
  // The doc example names a model this profile does not list: vendor and MAC still known.
  expectIdentified(id({ path: "/0015655c6082.cfg", userAgent: UA.yealinkDocExample }), { vendor: "yealink", model: undefined, rawModel: "SIP-T48G", mac: "0015655c6082", confidence: "high" });
});

test("the path alone can pin a model (Yealink hw id) but gives low confidence", () => {
  expectIdentified(id({ path: "/y000000000108.cfg" }), { vendor: "yealink", model: "T46U", fileKind: "common", confidence: "low" });
});

test("Poly FileTransport: no MAC in the User-Agent, MAC from the path", () => {
  expectIdentified(id({ path: "/0004f2abcdef-ringedge.cfg", userAgent: UA.poly }), {
    vendor: "poly", model: "VVX411", mac: "0004f2abcdef", firmware: "6.4.6.2240", fileKind: "mac-config", template: "device.xml", confidence: "exact",
  });
  expectIdentified(id({ path: "/000000000000.cfg", userAgent: UA.poly }), { vendor: "poly", fileKind: "boot", mac: undefined, confidence: "high" });
  expectIdentified(id({ path: "/0004f2abcdef.cfg", userAgent: UA.polyEdge }), { vendor: "poly", model: "EdgeE350", fileKind: "mac-boot" });
  expectIdentified(id({ path: "/0004f2abcdef.cfg", userAgent: UA.polyDocExample }), { vendor: "poly", model: undefined, rawModel: "VVX_400", firmware: "4.1.4.7430" });
});

test("the all-zero Poly master file is not taken for a MAC file of another vendor", () => {
  expectIdentified(id({ path: "/000000000000.cfg" }), { vendor: "poly", fileKind: "boot", confidence: "low" });
});

test("Snom Mozilla/4.0 compatible User-Agent, uppercase MAC in the path", () => {
  expectIdentified(id({ path: "/snomD785-000413922D24.htm", userAgent: UA.snom }), {
    vendor: "snom", model: "D785", mac: "000413922d24", firmware: "10.1.33.33", fileKind: "mac-config", confidence: "exact",
  });
  expectIdentified(id({ path: "/snomD785.htm", userAgent: UA.snom }), { vendor: "snom", fileKind: "common", mac: "000413922d24", model: "D785" });
  expectIdentified(id({ path: "/snomD785.htm", userAgent: UA.snom, dhcpVendorClass: "snomD785" }), { confidence: "exact" });
});

test("Grandstream: legacy binary file recognised but not served; GRP gets its own template", () => {
  expectIdentified(id({ path: "/cfg000b82865e6a", userAgent: UA.grandstream }), {
    vendor: "grandstream", model: "GXP2170", mac: "000b82865e6a", fileKind: "mac-config", template: undefined, confidence: "exact",
  });
  expectIdentified(id({ path: "/cfg000b82865e6a.xml", userAgent: UA.grandstream }), { template: "gxp.xml", bootstrapTemplate: "gxp-bootstrap.xml" });
  expectIdentified(id({ path: "/cfgc074ad0b63ee.xml", userAgent: UA.grandstreamGrp }), { model: "GRP2614", template: "grp.xml", bootstrapTemplate: "grp-bootstrap.xml" });
  expectIdentified(id({ path: "/cfggrp2614.xml", userAgent: UA.grandstreamGrp }), { fileKind: "common", template: "grp-common.xml" });
  expectIdentified(id({ path: "/cfg000b82865e6a.xml" }), { vendor: "grandstream", confidence: "low" });
});

test("Cisco 3PCC and SPA User-Agents", () => {
  expectIdentified(id({ path: "/8841.xml", userAgent: UA.cisco3pcc }), { vendor: "cisco", model: "CP-8841-3PCC", fileKind: "boot", mac: "00562b043615", confidence: "exact" });
  expectIdentified(id({ path: "/00562b043615.xml", userAgent: UA.cisco3pcc }), { fileKind: "mac-config", template: "device.xml", mac: "00562b043615" });
  expectIdentified(id({ path: "/00562b043615.xml", userAgent: UA.cisco3pccDocExample }), { vendor: "cisco", model: undefined, rawModel: "CP-7832-3PCC", firmware: "11.0.1" });
  expectIdentified(id({ path: "/spa508G.cfg", userAgent: UA.ciscoSpa }), { vendor: "cisco", model: "SPA508G", mac: "0002fdff2103", firmware: "7.4.4", fileKind: "boot" });
  expectIdentified(id({ path: "/00562b043615.xml", userAgent: UA.cisco3pcc, dhcpVendorClass: "CP-8841-3PCC" }), { confidence: "exact", model: "CP-8841-3PCC" });
});

test("Fanvil: User-Agent with MAC; per-model common file", () => {
  expectIdentified(id({ path: "/0c383e557eb1.cfg", userAgent: UA.fanvil }), { vendor: "fanvil", model: "X4U", mac: "0c383e557eb1", firmware: "2.12.16.17", fileKind: "mac-config", confidence: "exact" });
  expectIdentified(id({ path: "/0c383e557eb1.cfg", userAgent: UA.fanvilDocExample }), { vendor: "fanvil", model: undefined, rawModel: "X5U-V2", confidence: "high" });
  expectIdentified(id({ path: "/F0V00X5S0000.cfg", userAgent: "Fanvil X5S 1.12.2 0c383e557eb1" }), { vendor: "fanvil", model: "X5S", fileKind: "common" });
});

test("{mac}.cfg alone is ambiguous (Yealink, Poly, Fanvil); the User-Agent settles it", () => {
  const r = id({ path: "/001565aabbcc.cfg" });
  assert.equal(r.identified, false);
  assert.equal(r.reason, "ambiguous-path");
  assert.equal(r.confidence, "none");
  expectIdentified(id({ path: "/001565aabbcc.cfg", userAgent: "Fanvil X6U 2.12.16.17 001565aabbcc" }), { vendor: "fanvil", model: "X6U" });
});

test("conflicting clues identify nothing", () => {
  const mac = id({ path: "/prov/001565aabbcc.cfg", userAgent: UA.yealinkColons });
  assert.equal(mac.identified, false);
  assert.equal(mac.reason, "mac-conflict");
  assert.equal(mac.vendor, undefined);
  assert.equal(mac.mac, undefined);

  const model = id({ path: "/y000000000096.cfg", userAgent: UA.yealinkColons });
  assert.equal(model.identified, false);
  assert.equal(model.reason, "model-conflict");

  const vendor = id({ path: "/0015655c6082.cfg", userAgent: UA.yealinkColons, dhcpVendorClass: "snomD785" });
  assert.equal(vendor.identified, false);
  assert.equal(vendor.reason, "vendor-conflict");

  const dhcpModel = id({ path: "/00562b043615.xml", userAgent: UA.cisco3pcc, dhcpVendorClass: "CP-7841-3PCC" });
  assert.equal(dhcpModel.identified, false);
  assert.equal(dhcpModel.reason, "model-conflict");
});

test("a User-Agent alone: vendor known, medium confidence, no file", () => {
  expectIdentified(id({ path: "/prov/favicon.ico", userAgent: UA.snom }), { vendor: "snom", fileKind: undefined, template: undefined, confidence: "medium", mac: "000413922d24" });
  const none = id({ path: "/prov/favicon.ico", userAgent: "curl/8.5.0" });
  assert.equal(none.identified, false);
  assert.equal(none.reason, "no-match");
});

test("traversal and weird paths are simply not matched", () => {
  const weird = [
    "/prov/../0015655c6082.cfg",
    "/prov/%2e%2e/0015655c6082.cfg",
    "/prov/0015655c6082.cfg%00",
    "..\\0015655c6082.cfg",
    "/prov//0015655c6082.cfg",
    "/prov/./0015655c6082.cfg",
    "/0015655c6082.cfg/",
    "",
    "/" + "a".repeat(2000),
    "/prov/0015655c6082.cfg\n",
    "/prov/\u0000",
  ];
  for (const path of weird) {
    const r = id({ path, userAgent: UA.yealinkColons });
    assert.equal(r.identified, false, JSON.stringify(path));
    assert.equal(r.reason, "unsafe-path", JSON.stringify(path));
    assert.equal(r.fileKind, undefined);
  }
  assert.equal(requestedFileName("/prov/a.cfg?mac=1"), "a.cfg");
  assert.equal(requestedFileName(42), undefined);
});

test("group (multicast) MACs in a path never match", () => {
  const r = id({ path: "/011565aabbcc.cfg", userAgent: "Fanvil X6U 2.12.16.17 001565aabbcc" });
  expectIdentified(r, { vendor: "fanvil", fileKind: undefined, mac: "001565aabbcc" });
});

test("hostile inputs never throw", () => {
  const inputs: unknown[] = [
    null,
    {},
    { path: 5 },
    { path: "/a.cfg", userAgent: "x".repeat(100_000) },
    { path: "/a.cfg", userAgent: "Yealink SIP-T46U 1.2.3.4 \u0000" },
    { path: "/a.cfg", dhcpVendorClass: "snom" + "D".repeat(10_000) },
  ];
  for (const input of inputs) {
    const r = identify(profiles, input as IdentifyInput);
    assert.equal(typeof r.identified, "boolean");
  }
});

test("identify() feeds renderConfig(): the identified file, model and template are what gets rendered", () => {
  const r = id({ path: "/cfgc074ad0b63ee.xml", userAgent: UA.grandstreamGrp });
  assert.ok(r.identified && r.vendor && r.model && r.fileKind && r.file && r.mac);
  const profile = profiles.get(r.vendor)!;
  const model = profile.models.find((m) => m.id === r.model)!;
  const out = renderConfig({
    profile, model, fileKind: r.fileKind, file: r.file, bootstrap: true,
    device: { mac: r.mac, extension: "201", displayName: "Ann", sipUsername: "u201", sipPassword: "x", provisioningUser: "p201", provisioningPassword: "pw201" },
    site: { sipServer: "10.0.0.5", sipPort: 5060, transport: "udp", ntpServer: "10.0.0.1", timeZone: "UTC", provisioningUrl: "http://10.0.0.5/prov", resyncIntervalMin: 60, firmwareBaseUrl: "http://10.0.0.5/fw" },
  });
  assert.ok(out.ok, out.ok ? "" : out.error.message);
  assert.equal(out.template, r.bootstrapTemplate);
  assert.match(out.body, /<mac>c074ad0b63ee<\/mac>/);
});
