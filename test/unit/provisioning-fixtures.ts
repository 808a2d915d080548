// Shared by the provisioning unit and end-to-end tests: each vendor's boot sequence as its
// phones request it, with real User-Agent strings (as the vendors document them), and
// readers that parse a config in the vendor's own format and pull out the values that matter.
import assert from "node:assert/strict";
import { test } from "node:test";
import { findModel, type ModelProfile, type Profile } from "../../provisioning/profiles.ts";
import { renderConfig, type DeviceInput, type RenderConfigInput, type SiteInput } from "../../provisioning/render.ts";
import { checkXml, findAll, ownText, type XmlElement } from "../../provisioning/xmlcheck.ts";

export interface ConfigValues {
  sipPassword: string | undefined;
  sipServer: string | undefined;
  sipUser: string | undefined;
  provisioningUser: string | undefined;
}

export interface VendorCase {
  vendor: string;
  model: string;
  mac: string;
  userAgent: string;
  /** Files fetched before the per-device config, with the status each gets for an adopted phone. */
  before: Array<{ file: string; status: number }>;
  /** The per-device config file (bootstrap first, then full behind credentials). */
  config: string;
  /** Files fetched after it. */
  after: Array<{ file: string; status: number }>;
  read(body: string): ConfigValues;
}

/** Yealink `key = value` lines; the version header first, duplicate keys fail. */
export function yealinkKv(body: string): Map<string, string> {
  const lines = body.split("\n");
  assert.equal(lines[0], "#!version:1.0.0.1", "Yealink header on the first line");
  const out = new Map<string, string>();
  for (const line of lines.slice(1)) {
    if (line.trim() === "" || line.startsWith("#")) continue;
    if (line.startsWith("include:config")) continue;
    const m = /^([A-Za-z0-9_.]+) = (.*)$/.exec(line);
    assert.ok(m, `Yealink line is key = value: ${JSON.stringify(line)}`);
    assert.ok(!out.has(m[1]!), `duplicate key ${m[1]}`);
    out.set(m[1]!, m[2]!);
  }
  return out;
}

export function xmlRoot(body: string): XmlElement {
  const r = checkXml(body);
  assert.ok(r.ok, `well-formed XML: ${r.ok ? "" : `${r.error} at ${r.offset}`}`);
  return r.root;
}

/** A vendor's model among the loaded profiles (the test fails when it is not there). */
/** A site for feature-by-feature config tests; each test sets what it checks (a code, a port) on top. */
export const FEATURE_SITE: SiteInput = {
  sipServer: "10.0.0.5",
  sipPort: 5060,
  transport: "udp",
  ntpServer: "10.0.0.1",
  timeZone: "Europe/Berlin",
  provisioningUrl: "http://10.0.0.5/prov",
  resyncIntervalMin: 1440,
  firmwareBaseUrl: "http://10.0.0.5/firmware",
};

/** The device of those tests: extension 1001, Anna (sipUsername 1001 unless a test sets another). */
export const FEATURE_DEVICE: DeviceInput = { mac: "0c383e000001", extension: "1001", displayName: "Anna", sipUsername: "1001", sipPassword: "s3cret-pw", provisioningUser: "p0c383e000001", provisioningPassword: "provpw-0001" };

export function foundModel(profiles: ReadonlyMap<string, Profile>, vendor: string, modelId: string): { profile: Profile; model: ModelProfile } {
  const f = findModel(profiles, modelId, vendor);
  assert.ok(f, `${vendor}/${modelId} loaded`);
  return f;
}

/** A device's full per-device config (mac-config, not the bootstrap variant) for that model; the test fails when it does not render. */
export function renderMacConfig(profiles: ReadonlyMap<string, Profile>, vendor: string, modelId: string, input: Omit<RenderConfigInput, "profile" | "model" | "fileKind" | "bootstrap"> & Partial<RenderConfigInput>): string {
  const { profile, model } = foundModel(profiles, vendor, modelId);
  const r = renderConfig({ profile, model, fileKind: "mac-config", bootstrap: false, ...input });
  assert.ok(r.ok, `${vendor}/${modelId}: ${r.ok ? "" : r.error.message}`);
  return r.body;
}

/** The one element `name` (with attribute `attr`) under root; none or several fail the test. */
export function one(root: XmlElement, name: string, attr?: [string, string]): XmlElement {
  const all = findAll(root, name, attr);
  assert.equal(all.length, 1, `exactly one <${name}${attr ? ` ${attr[0]}="${attr[1]}"` : ""}>`);
  return all[0]!;
}

/** The text of the one element `name` (with attribute `attr`) under root. */
export function textOf(root: XmlElement, name: string, attr?: [string, string]): string {
  return ownText(one(root, name, attr));
}

function text(root: XmlElement, name: string, attr?: [string, string]): string | undefined {
  const el = findAll(root, name, attr)[0];
  return el ? ownText(el) : undefined;
}

function attr(root: XmlElement, el: string, name: string): string | undefined {
  for (const e of findAll(root, el)) if (e.attrs.has(name)) return e.attrs.get(name);
  return undefined;
}

export const VENDORS: VendorCase[] = [
  {
    vendor: "yealink",
    model: "T46U",
    mac: "001565aabb01",
    userAgent: "Yealink SIP-T46U 108.86.0.75 00:15:65:aa:bb:01",
    before: [
      { file: "001565aabb01.boot", status: 200 },
      { file: "y000000000108.cfg", status: 200 },
    ],
    config: "001565aabb01.cfg",
    after: [],
    read: (body) => {
      const kv = yealinkKv(body);
      return { sipPassword: kv.get("account.1.password"), sipServer: kv.get("account.1.sip_server.1.address"), sipUser: kv.get("account.1.user_name"), provisioningUser: kv.get("static.auto_provision.server.username") };
    },
  },
  {
    vendor: "poly",
    model: "VVX411",
    mac: "0004f2aabb02",
    userAgent: "FileTransport PolycomVVX-VVX_411-UA/6.4.6.2240 Type/Application",
    before: [{ file: "0004f2aabb02.cfg", status: 200 }],
    config: "0004f2aabb02-ringedge.cfg",
    after: [],
    read: (body) => {
      const root = xmlRoot(body);
      return { sipPassword: attr(root, "reg", "reg.1.auth.password"), sipServer: attr(root, "reg", "reg.1.server.1.address"), sipUser: attr(root, "reg", "reg.1.auth.userId"), provisioningUser: attr(root, "device", "device.prov.user") };
    },
  },
  {
    vendor: "snom",
    model: "D785",
    mac: "000413aabb03",
    userAgent: "Mozilla/4.0 (compatible; snomD785-SIP 10.1.159.12 1.1.5-IFX-26.11.09 000413AABB03 SXM:0 UXM:0 UXMC:0)",
    before: [{ file: "snomD785.htm", status: 200 }],
    config: "snomD785-000413AABB03.htm",
    after: [{ file: "snomD785-firmware.xml", status: 200 }],
    read: (body) => {
      const root = xmlRoot(body);
      return { sipPassword: text(root, "user_pass"), sipServer: text(root, "user_host"), sipUser: text(root, "user_name"), provisioningUser: text(root, "http_client_user") };
    },
  },
  {
    vendor: "grandstream",
    model: "GXP2170",
    mac: "000b82aabb04",
    userAgent: "Grandstream Model HW GXP2170 SW 1.0.11.85 DevId 000b82aabb04",
    before: [{ file: "cfg000b82aabb04", status: 404 }],
    config: "cfg000b82aabb04.xml",
    after: [
      { file: "cfggxp2170.xml", status: 200 },
      { file: "cfg.xml", status: 200 },
    ],
    read: (body) => {
      const root = xmlRoot(body);
      const p47 = text(root, "P47");
      return { sipPassword: text(root, "P34"), sipServer: p47?.split(":")[0], sipUser: text(root, "P35"), provisioningUser: text(root, "P1360") };
    },
  },
  {
    vendor: "cisco",
    model: "CP-7841-3PCC",
    mac: "00562baabb05",
    userAgent: "Cisco-CP-7841-3PCC/12.0.4 (00562baabb05)",
    before: [{ file: "7841.xml", status: 200 }],
    config: "00562baabb05.xml",
    after: [],
    read: (body) => {
      const root = xmlRoot(body);
      const rule = text(root, "Profile_Rule");
      return { sipPassword: text(root, "Password_1_"), sipServer: text(root, "Proxy_1_")?.split(":")[0], sipUser: text(root, "User_ID_1_"), provisioningUser: /--uid ([^ \]]+)/.exec(rule ?? "")?.[1] };
    },
  },
  {
    vendor: "fanvil",
    model: "X4U",
    mac: "0c383eaabb06",
    userAgent: "Fanvil X4U-V2 2.12.16.17 0c383eaabb06",
    before: [],
    config: "0c383eaabb06.cfg",
    after: [],
    read: (body) => {
      const root = xmlRoot(body);
      return { sipPassword: text(root, "Register_Pswd"), sipServer: text(root, "Register_Addr"), sipUser: text(root, "Register_User"), provisioningUser: text(root, "Download_Username") };
    },
  },
];

/** Check a non-device file parses in the vendor's format (XML well-formed / Yealink key = value). */
export function parsesAs(vendor: string, body: string): void {
  if (vendor === "yealink") yealinkKv(body);
  else xmlRoot(body);
}

/** The models every per-vendor config test covers: each vendor's boot-sequence model (VENDORS) and three of other families. */
const MODEL_CASES: ReadonlyArray<[string, string]> = [...VENDORS.map((v): [string, string] => [v.vendor, v.model]), ["grandstream", "GRP2614"], ["yealink", "T57W"], ["cisco", "CP-8841-3PCC"]];

/**
 * A test per model of MODEL_CASES, named `vendor/model: does`: its per-device config (render)
 * parses in the vendor's format, passes that vendor's check, and holds no `defaultCode` (the code
 * comes from `codeFrom`); and a test that every loaded vendor has a check (`checkName`).
 */
export function testEachModel(o: {
  does: string;
  checkName: string;
  profiles: ReadonlyMap<string, Profile>;
  render: (vendor: string, modelId: string) => string;
  checks: Record<string, (body: string, modelId: string) => void>;
  defaultCode: string;
  codeFrom: string;
}): void {
  for (const [vendor, modelId] of MODEL_CASES) {
    test(`${vendor}/${modelId}: ${o.does}`, () => {
      const body = o.render(vendor, modelId);
      parsesAs(vendor, body);
      o.checks[vendor]!(body, modelId);
      assert.ok(!body.includes(o.defaultCode), `no default code left in the file: it comes from the ${o.codeFrom}`);
    });
  }
  test(`every vendor has ${o.checkName} (a new profile needs one)`, () => {
    assert.deepEqual([...o.profiles.keys()].sort(), Object.keys(o.checks).sort());
  });
}
