import { test } from "node:test";
import assert from "node:assert/strict";
import { loadProfiles, type ModelProfile, type Profile } from "../../provisioning/profiles.ts";
import {
  compileTemplate,
  escapeValue,
  normaliseMac,
  renderConfig,
  renderTemplate,
  standardOffsetMinutes,
  type CompiledTemplate,
  type DeviceInput,
  type LineKeyInput,
  type RenderConfigInput,
  type SiteInput,
} from "../../provisioning/render.ts";
import { checkXml, findAll, ownText, type XmlElement } from "../../provisioning/xmlcheck.ts";
import { one, textOf } from "./provisioning-fixtures.ts";

const { profiles, errors } = loadProfiles("device-profiles");

const SIP_PASSWORD = "Sip-s3cret!pw";
const device: DeviceInput = {
  mac: "00:15:65:aa:bb:cc",
  extension: "201",
  displayName: "Ann Example",
  sipUsername: "u201",
  sipPassword: SIP_PASSWORD,
  provisioningUser: "prov-001565aabbcc",
  provisioningPassword: "Pw.9f8e7d6c",
};
const site: SiteInput = {
  sipServer: "10.0.0.5",
  sipPort: 5060,
  transport: "udp",
  ntpServer: "ntp.example.net",
  timeZone: "Europe/Berlin",
  provisioningUrl: "https://10.0.0.5/prov/",
  resyncIntervalMin: 1440,
  firmwareBaseUrl: "http://10.0.0.5/firmware",
};
const lineKeys: LineKeyInput[] = [
  { label: "Me", extension: "201", type: "line" },
  { label: "Bob", extension: "202", type: "blf" },
  { label: "Desk", extension: "0301234", type: "speeddial" },
  { label: "Carol", extension: "203", type: "blf" },
];

function profile(vendor: string): Profile {
  const p = profiles.get(vendor);
  assert.ok(p, `profile ${vendor} loaded (errors: ${JSON.stringify(errors)})`);
  return p;
}
function model(p: Profile, id: string): ModelProfile {
  const m = p.models.find((x) => x.id === id);
  assert.ok(m, `model ${id}`);
  return m;
}
function render(p: Profile, m: ModelProfile, over: Partial<RenderConfigInput> = {}): string {
  const r = renderConfig({ profile: p, model: m, fileKind: "mac-config", device, site, lineKeys, bootstrap: false, ...over });
  assert.ok(r.ok, `render ${p.vendor} ${m.id}: ${r.ok ? "" : r.error.message}`);
  return r.body;
}
function xml(body: string): XmlElement {
  const r = checkXml(body);
  assert.ok(r.ok, `well-formed XML: ${r.ok ? "" : `${r.error} at ${r.offset}: ${JSON.stringify(body.slice(Math.max(0, r.offset - 40), r.offset + 40))}`}`);
  return r.root;
}
/** Yealink `key = value` lines (comments and the version header skipped); duplicate keys fail. */
function kv(body: string): Map<string, string> {
  const lines = body.split("\n");
  assert.equal(lines[0], "#!version:1.0.0.1", "Yealink header on the first line");
  const out = new Map<string, string>();
  for (const line of lines.slice(1)) {
    if (line.trim() === "" || line.startsWith("#") || /^include:config "[A-Za-z0-9._-]+"$/.test(line)) continue;
    const m = /^([A-Za-z0-9_.]+) = (.*)$/.exec(line);
    assert.ok(m, `key = value line: ${JSON.stringify(line)}`);
    assert.ok(!out.has(m[1]!), `duplicate key ${m[1]}`);
    out.set(m[1]!, m[2]!);
  }
  return out;
}

test("all six vendor profiles load", () => {
  assert.deepEqual(errors, []);
  assert.deepEqual([...profiles.keys()].sort(), ["cisco", "fanvil", "grandstream", "poly", "snom", "yealink"]);
});

// --- the template language ---------------------------------------------------------------

function compile(src: string, name = "t.tpl"): CompiledTemplate {
  const r = compileTemplate(name, src);
  assert.ok(r.ok, r.ok ? "" : r.error.message);
  return r.template;
}

test("template: values, #each with item scope and outer fallback, #if", () => {
  const t = compile("a={{a}}\n{{#each items}}\n{{n}}@{{host}}\n{{/each}}\n{{#if on}}on{{/if}}{{#if off}}off{{/if}}\n");
  const r = renderTemplate(t, { a: "1", host: "h", items: [{ n: "x" }, { n: "y", host: "inner" }], on: true, off: false }, "yealink-kv");
  assert.deepEqual(r, { ok: true, text: "a=1\nx@h\ny@inner\non\n" });
});

test("template: block tags alone on a line leave no blank line; inline blocks keep the line", () => {
  const t = compile("start\n  {{#if x}}\n  middle\n  {{/if}}\nend [{{#if x}}in{{/if}}]\n");
  assert.deepEqual(renderTemplate(t, { x: true }, "xml"), { ok: true, text: "start\n  middle\nend [in]\n" });
  assert.deepEqual(renderTemplate(t, { x: false }, "xml"), { ok: true, text: "start\nend []\n" });
});

test("template: syntax errors name the template and line", () => {
  const cases: Array<[string, RegExp]> = [
    ["x\n{{#each a}}", /never closed/],
    ["{{/if}}", /without an opening/],
    ["{{#if a}}{{/each}}", /closes/],
    ["{{a", /without a closing/],
    ["{{> partial}}", /unsupported tag/],
    ["{{a.b}}", /unsupported tag/],
    ["{{#unless a}}{{/unless}}", /unsupported tag/],
  ];
  for (const [src, re] of cases) {
    const r = compileTemplate("bad.tpl", src);
    assert.equal(r.ok, false, src);
    if (!r.ok) {
      assert.match(r.error.message, re, src);
      assert.equal(r.error.template, "bad.tpl");
      assert.match(r.error.message, /^bad\.tpl:\d+:/);
    }
  }
});

test("template: an unknown variable fails the render, naming template and variable", () => {
  const t = compile("account.1.password = {{sipPasword}}\n", "device.cfg");
  const r = renderTemplate(t, { sipPassword: "x" }, "yealink-kv");
  assert.equal(r.ok, false);
  if (!r.ok) {
    assert.equal(r.error.code, "unknown-variable");
    assert.equal(r.error.template, "device.cfg");
    assert.equal(r.error.variable, "sipPasword");
  }
  // Also inside an #if and an #each, and for the list name itself.
  for (const src of ["{{#if nope}}x{{/if}}", "{{#each nope}}x{{/each}}", "{{#each l}}{{nope}}{{/each}}"]) {
    const r2 = renderTemplate(compile(src), { l: [{ a: "1" }] }, "xml");
    assert.equal(r2.ok, false, src);
    if (!r2.ok) assert.equal(r2.error.variable, "nope");
  }
});

test("template: flags and lists cannot be printed; #each needs a list", () => {
  for (const [src, ctx] of [["{{f}}", { f: true }], ["{{l}}", { l: [] }], ["{{#each s}}{{/each}}", { s: "x" }]] as const) {
    const r = renderTemplate(compile(src), ctx, "xml");
    assert.equal(r.ok, false, src);
    if (!r.ok) assert.equal(r.error.code, "type-mismatch");
  }
});

test("escaping: XML escapes markup and whitespace controls, rejects forbidden characters", () => {
  assert.deepEqual(escapeValue("xml", `a<b>&"c'\n`), { ok: true, text: "a&lt;b&gt;&amp;&quot;c&apos;&#10;" });
  assert.equal(escapeValue("xml", "a\u0001b").ok, false);
  assert.equal(escapeValue("xml", "a\uD800b").ok, false);
  assert.deepEqual(escapeValue("xml", "Zoë 😀"), { ok: true, text: "Zoë 😀" });
});

test("escaping: yealink-kv rejects line breaks and controls, keeps other text as is", () => {
  for (const bad of ["a\nb", "a\rb", "a\u2028b", "a\u0085b", "a\u0000b", "a\tb"]) assert.equal(escapeValue("yealink-kv", bad).ok, false, JSON.stringify(bad));
  assert.deepEqual(escapeValue("yealink-kv", "Ann <A&B> = x"), { ok: true, text: "Ann <A&B> = x" });
});

test("normaliseMac: separators and case; rejects zero, group and malformed addresses", () => {
  assert.equal(normaliseMac("00:15:65:5C:60:82"), "0015655c6082");
  assert.equal(normaliseMac("00-15-65-5c-60-82"), "0015655c6082");
  assert.equal(normaliseMac("0015.655c.6082"), "0015655c6082");
  assert.equal(normaliseMac("0015655C6082"), "0015655c6082");
  for (const bad of ["000000000000", "ffffffffffff", "011565aabbcc", "00:15:65-5c:60:82", "0015655c608", "0015655c60823", "zz15655c6082", 42, undefined]) {
    assert.equal(normaliseMac(bad), undefined, String(bad));
  }
});

test("standard UTC offsets are deterministic and ignore DST", () => {
  assert.equal(standardOffsetMinutes("Europe/Berlin"), 60);
  assert.equal(standardOffsetMinutes("America/New_York"), -300);
  assert.equal(standardOffsetMinutes("Asia/Kolkata"), 330);
  assert.equal(standardOffsetMinutes("Australia/Sydney"), 600);
  assert.equal(standardOffsetMinutes("UTC"), 0);
  assert.equal(standardOffsetMinutes("Mars/Olympus"), undefined);
  assert.equal(standardOffsetMinutes("../../etc"), undefined);
});

// --- every vendor x at least two models, full and bootstrap -------------------------------

/** Per-vendor checks that values land in the right elements of the full config. */
const fullChecks: Record<string, (body: string, m: ModelProfile) => void> = {
  yealink(body, m) {
    const k = kv(body);
    assert.equal(k.get("account.1.sip_server.1.address"), "10.0.0.5");
    assert.equal(k.get("account.1.sip_server.1.port"), "5060");
    assert.equal(k.get("account.1.sip_server.1.transport_type"), "0");
    assert.equal(k.get("account.1.user_name"), "u201");
    assert.equal(k.get("account.1.auth_name"), "u201");
    assert.equal(k.get("account.1.password"), SIP_PASSWORD);
    assert.equal(k.get("account.1.display_name"), "Ann Example");
    assert.equal(k.get("local_time.ntp_server1"), "ntp.example.net");
    assert.equal(k.get("local_time.time_zone"), "+1");
    assert.equal(k.get("static.auto_provision.pnp_enable"), "0");
    assert.equal(k.get("static.auto_provision.server.url"), "https://10.0.0.5/prov/");
    assert.equal(k.get("static.auto_provision.server.username"), device.provisioningUser);
    assert.equal(k.get("static.auto_provision.server.password"), device.provisioningPassword);
    assert.equal(k.get("static.auto_provision.repeat.minutes"), "1440");
    assert.equal(k.get("features.intercom.allow"), "1");
    assert.equal(k.get("static.firmware.url"), `http://10.0.0.5/firmware/${m.firmware!.file}`);
    assert.equal(k.get("linekey.1.type"), "15");
    assert.equal(k.get("linekey.2.type"), "16", "BLF is type 16");
    assert.equal(k.get("linekey.2.value"), "202");
    assert.equal(k.get("linekey.2.label"), "Bob");
  },
  poly(body) {
    const root = xml(body);
    assert.equal(root.name, "polycomConfig");
    const reg = one(root, "reg").attrs;
    assert.equal(reg.get("reg.1.auth.password"), SIP_PASSWORD);
    assert.equal(reg.get("reg.1.auth.userId"), "u201");
    assert.equal(reg.get("reg.1.displayName"), "Ann Example");
    assert.equal(reg.get("reg.1.server.1.address"), "10.0.0.5");
    assert.equal(reg.get("reg.1.server.1.transport"), "UDPOnly");
    const dev = one(root, "device").attrs;
    assert.equal(dev.get("device.prov.user"), device.provisioningUser);
    assert.equal(dev.get("device.prov.password"), device.provisioningPassword);
    assert.equal(dev.get("device.prov.ztpEnabled"), "0");
    assert.equal(one(root, "tcpIpApp").attrs.get("tcpIpApp.sntp.gmtOffset"), "3600");
    assert.equal(one(root, "prov").attrs.get("prov.polling.period"), "86400");
    const att = one(root, "attendant").attrs;
    assert.equal(att.get("attendant.resourceList.2.address"), "sip:202@10.0.0.5");
    assert.equal(att.get("attendant.resourceList.2.label"), "Bob");
    assert.equal(att.get("attendant.resourceList.1.address"), undefined, "a line key is not a BLF resource");
    assert.equal(one(root, "voIpProt").attrs.get("voIpProt.SIP.alertInfo.1.class"), "autoAnswer");
  },
  snom(body, m) {
    const root = xml(body);
    assert.equal(root.name, "settings");
    assert.equal(textOf(root, "user_pass", ["idx", "1"]), SIP_PASSWORD);
    assert.equal(textOf(root, "user_name", ["idx", "1"]), "u201");
    assert.equal(textOf(root, "user_host", ["idx", "1"]), "10.0.0.5");
    assert.equal(textOf(root, "user_outbound", ["idx", "1"]), "10.0.0.5:5060;transport=udp");
    assert.equal(textOf(root, "user_realname", ["idx", "1"]), "Ann Example");
    assert.equal(textOf(root, "ntp_server"), "ntp.example.net");
    assert.equal(textOf(root, "http_client_user"), device.provisioningUser);
    assert.equal(textOf(root, "http_client_pass"), device.provisioningPassword);
    assert.equal(textOf(root, "pnp_config"), "off");
    assert.equal(textOf(root, "setting_server"), `https://10.0.0.5/prov/snom${m.id}-001565AABBCC.htm`);
    const fk = one(root, "fkey", ["idx", "1"]);
    assert.equal(ownText(fk), "blf sip:202@10.0.0.5|*8", "BLF key with the (default) pickup code");
    assert.equal(fk.attrs.get("label"), "Bob");
    assert.equal(textOf(root, "fkey", ["idx", "2"]), "speed 0301234");
  },
  grandstream(body, m) {
    const root = xml(body);
    assert.equal(root.name, "gs_provision");
    assert.equal(textOf(root, "mac"), "001565aabbcc");
    if (m.id.startsWith("GXP")) {
      assert.equal(one(root, "config").attrs.get("version"), "1");
      assert.equal(textOf(root, "P34"), SIP_PASSWORD);
      assert.equal(textOf(root, "P35"), "u201");
      assert.equal(textOf(root, "P47"), "10.0.0.5:5060");
      assert.equal(textOf(root, "P3"), "Ann Example");
      assert.equal(textOf(root, "P1360"), device.provisioningUser);
      assert.equal(textOf(root, "P237"), "10.0.0.5/prov");
      assert.equal(textOf(root, "P1414"), "0");
      assert.equal(textOf(root, "P298"), "1");
      // Key 2 (BLF) is the second MPK block: P23005 mode, P23008 value.
      assert.equal(textOf(root, "P23005"), "1");
      assert.equal(textOf(root, "P23008"), "202");
      assert.equal(findAll(root, "P23000").length, 0, "line type has no MPK code; key 1 left alone");
    } else {
      assert.equal(one(root, "config").attrs.get("version"), "2");
      const item = (n: string): string => textOf(root, "item", ["name", n]);
      assert.equal(item("account.1.sip.subscriber.password"), SIP_PASSWORD);
      assert.equal(item("account.1.sip.server.1.address"), "10.0.0.5:5060");
      assert.equal(item("account.1.sip.transport"), "UDP");
      assert.equal(item("account.1.sip.subscriber.name"), "Ann Example");
      assert.equal(item("provisioning.config.username"), device.provisioningUser);
      assert.equal(item("provisioning.config.protocol"), "HTTPS");
      assert.equal(item("provisioning.3cxAutoProvision"), "No");
      assert.equal(item("pks.vpk.2.keyMode"), "BLF");
      assert.equal(item("pks.vpk.2.value"), "202");
    }
  },
  cisco(body) {
    const root = xml(body);
    assert.equal(root.name, "flat-profile");
    assert.equal(textOf(root, "Password_1_"), SIP_PASSWORD);
    assert.equal(textOf(root, "User_ID_1_"), "u201");
    assert.equal(textOf(root, "Proxy_1_"), "10.0.0.5:5060");
    assert.equal(textOf(root, "SIP_Transport_1_"), "UDP");
    assert.equal(textOf(root, "Display_Name_1_"), "Ann Example");
    assert.equal(textOf(root, "Time_Zone"), "GMT+01:00");
    assert.equal(textOf(root, "Auto_Answer_Page"), "Yes");
    assert.equal(textOf(root, "Profile_Rule"), `[--uid ${device.provisioningUser} --pwd ${device.provisioningPassword}]https://10.0.0.5/prov/$MA.xml`);
    assert.equal(textOf(root, "Extended_Function_2_"), "fnc=blf+sd+cp;sub=202@10.0.0.5;ext=202@10.0.0.5");
    assert.equal(textOf(root, "Extension_2_"), "Disabled");
    assert.equal(textOf(root, "Short_Name_2_"), "Bob");
  },
  fanvil(body) {
    const root = xml(body);
    assert.equal(root.name, "VOIP_CONFIG_FILE");
    assert.equal(textOf(root, "Register_Pswd"), SIP_PASSWORD);
    assert.equal(textOf(root, "Register_User"), "u201");
    assert.equal(textOf(root, "Register_Addr"), "10.0.0.5");
    assert.equal(textOf(root, "Display_Name"), "Ann Example");
    assert.equal(textOf(root, "Download_Username"), device.provisioningUser);
    assert.equal(textOf(root, "PNP_Enable"), "0");
    assert.equal(textOf(root, "Time_Zone"), "4");
    const values = findAll(root, "Value").map(ownText);
    assert.ok(values.includes("202@1/ba*8202"), "BLF key, picking up with the (default) pickup code + extension");
    assert.ok(values.includes("0301234@1/s"), "speed dial key");
  },
};

const modelsUnderTest: Record<string, string[]> = {
  yealink: ["T46U", "T54W", "T57W", "T31G"],
  poly: ["VVX411", "VVX450", "EdgeE350"],
  snom: ["D735", "D785", "D865"],
  grandstream: ["GXP2170", "GRP2614", "GRP2615"],
  cisco: ["CP-7841-3PCC", "CP-8841-3PCC", "CP-6851-3PCC"],
  fanvil: ["X4U", "X6U", "X210"],
};

for (const [vendor, ids] of Object.entries(modelsUnderTest)) {
  test(`${vendor}: full configs carry the right values at the right places`, () => {
    const p = profile(vendor);
    for (const id of ids) fullChecks[vendor]!(render(p, model(p, id)), model(p, id));
  });

  test(`${vendor}: bootstrap configs carry provisioning credentials, PnP off, and no SIP password`, () => {
    const p = profile(vendor);
    for (const id of ids) {
      const m = model(p, id);
      const body = render(p, m, { bootstrap: true });
      assert.ok(!body.includes(SIP_PASSWORD), `${id}: no SIP password in bootstrap`);
      assert.ok(body.includes(device.provisioningUser) && body.includes(device.provisioningPassword), `${id}: provisioning credentials`);
      if (p.format === "xml") xml(body);
      else {
        const k = kv(body);
        assert.equal(k.get("static.auto_provision.pnp_enable"), "0");
        assert.equal(k.has("account.1.password"), false);
      }
    }
  });

  test(`${vendor}: every served file renders for every model (XML well-formed)`, () => {
    const p = profile(vendor);
    for (const m of p.models) {
      for (const f of p.files) {
        if (f.template === undefined) continue;
        for (const bootstrap of f.bootstrapTemplate ? [false, true] : [false]) {
          const r = renderConfig({ profile: p, model: m, fileKind: f.kind, file: f, device, site, lineKeys, bootstrap });
          assert.ok(r.ok, `${m.id} ${f.pattern}: ${r.ok ? "" : r.error.message}`);
          if (p.format === "xml") xml(r.body);
          else kv(r.body);
          assert.equal(r.contentType, f.contentType ?? p.contentType);
          if (f.kind !== "mac-config") {
            assert.ok(!r.body.includes(SIP_PASSWORD) && !r.body.includes(device.provisioningPassword), `${m.id} ${f.pattern}: no secrets outside the device config`);
          }
        }
      }
    }
  });
}

test("yealink: boot files name the model's common file and the MAC file", () => {
  const p = profile("yealink");
  const r = renderConfig({ profile: p, model: model(p, "T54W"), fileKind: "mac-boot", device, site, bootstrap: false });
  assert.ok(r.ok);
  assert.match(r.body, /^include:config "y000000000096\.cfg"$/m);
  assert.match(r.body, /^include:config "001565aabbcc\.cfg"$/m);
});

test("line keys beyond the model's key count are dropped", () => {
  const p = profile("yealink");
  const many: LineKeyInput[] = Array.from({ length: 40 }, (_, i) => ({ label: `K${i + 1}`, extension: String(300 + i), type: "blf" }));
  const t31 = kv(render(p, model(p, "T31G"), { lineKeys: many }));
  assert.equal(t31.get("linekey.2.value"), "301");
  assert.equal(t31.has("linekey.3.type"), false);
  const t46 = kv(render(p, model(p, "T46U"), { lineKeys: many }));
  assert.equal(t46.get("linekey.27.value"), "326");
  assert.equal(t46.has("linekey.28.type"), false);
  const cisco = profile("cisco");
  const root = xml(render(cisco, model(cisco, "CP-7841-3PCC"), { lineKeys: many }));
  assert.equal(findAll(root, "Extended_Function_4_").length, 1);
  assert.equal(findAll(root, "Extended_Function_5_").length, 0);
});

// --- injection -----------------------------------------------------------------------------

const hostileNames = ['Bob</user_realname><user_pass idx="1">x</user_pass>', 'Bob" reg.1.auth.password="x', "Bob</x>", "Bob\naccount.1.password = x", "O'Brien & <Co>"];

test("injection: XML vendors escape hostile display names and labels; the value survives exactly", () => {
  for (const vendor of ["poly", "snom", "grandstream", "cisco", "fanvil"]) {
    const p = profile(vendor);
    for (const m of p.models.slice(0, 2)) {
      for (const name of hostileNames) {
        const body = render(p, m, { device: { ...device, displayName: name }, lineKeys: [lineKeys[0]!, { label: name, extension: "202", type: "blf" }] });
        const root = xml(body);
        // The hostile text round-trips as data: the element/attribute holding it equals it.
        const holders: Record<string, () => string> = {
          poly: () => one(root, "reg").attrs.get("reg.1.displayName")!,
          snom: () => textOf(root, "user_realname", ["idx", "1"]),
          grandstream: () => (m.id.startsWith("GXP") ? textOf(root, "P3") : textOf(root, "item", ["name", "account.1.sip.subscriber.name"])),
          cisco: () => textOf(root, "Display_Name_1_"),
          fanvil: () => textOf(root, "Display_Name"),
        };
        assert.equal(holders[vendor]!(), name, `${vendor} ${m.id}`);
        // No second password element or attribute appeared.
        if (vendor === "snom") assert.equal(findAll(root, "user_pass").length, 1);
        if (vendor === "poly") assert.equal(one(root, "reg").attrs.get("reg.1.auth.password"), SIP_PASSWORD);
        if (vendor === "cisco") assert.equal(findAll(root, "Password_1_").length, 1);
      }
    }
  }
});

test("injection: Yealink rejects a display name or label that would add a key line", () => {
  const p = profile("yealink");
  const m = model(p, "T46U");
  for (const bad of ["Bob\naccount.1.password = x", "Bob\r\naccount.1.password = x", "Bob\u2028account.1.password = x"]) {
    const r = renderConfig({ profile: p, model: m, fileKind: "mac-config", device: { ...device, displayName: bad }, site, lineKeys, bootstrap: false });
    assert.equal(r.ok, false);
    if (!r.ok) {
      assert.equal(r.error.code, "unsafe-value");
      assert.equal(r.error.variable, "displayName");
      assert.equal(r.error.template, "device.cfg");
    }
    const r2 = renderConfig({ profile: p, model: m, fileKind: "mac-config", device, site, lineKeys: [{ label: bad, extension: "202", type: "blf" }], bootstrap: false });
    assert.equal(r2.ok, false);
    if (!r2.ok) assert.equal(r2.error.variable, "label");
  }
  // Markup characters are harmless in key = value and kept.
  const k = kv(render(p, m, { device: { ...device, displayName: "Bob</x> \"q\" = y" } }));
  assert.equal(k.get("account.1.display_name"), 'Bob</x> "q" = y');
  assert.equal(k.get("account.1.password"), SIP_PASSWORD);
});

// --- input validation (fail closed) -------------------------------------------------------

test("renderConfig refuses bad input with a typed error naming the field", () => {
  const p = profile("yealink");
  const m = model(p, "T46U");
  const base: RenderConfigInput = { profile: p, model: m, fileKind: "mac-config", device, site, lineKeys, bootstrap: false };
  const cases: Array<[Partial<RenderConfigInput>, string]> = [
    [{ device: { ...device, sipPassword: "" } }, "device.sipPassword"],
    [{ device: { ...device, mac: "000000000000" } }, "device.mac"],
    [{ device: { ...device, mac: "not-a-mac" } }, "device.mac"],
    [{ device: { ...device, extension: "20 1" } }, "device.extension"],
    [{ device: { ...device, sipUsername: "u\n1" } }, "device.sipUsername"],
    [{ device: { ...device, provisioningPassword: "p w" } }, "device.provisioningPassword"],
    [{ device: { ...device, provisioningUser: "a]b" } }, "device.provisioningUser"],
    [{ device: undefined }, "device"],
    [{ site: { ...site, sipServer: "evil.example\nx" } }, "site.sipServer"],
    [{ site: { ...site, sipPort: 70000 } }, "site.sipPort"],
    [{ site: { ...site, transport: "sctp" as never } }, "site.transport"],
    [{ site: { ...site, timeZone: "Nowhere/Land" } }, "site.timeZone"],
    [{ site: { ...site, provisioningUrl: "https://user:pw@10.0.0.5/prov" } }, "site.provisioningUrl"],
    [{ site: { ...site, provisioningUrl: "ftp://10.0.0.5/prov" } }, "site.provisioningUrl"],
    [{ site: { ...site, firmwareBaseUrl: "http://10.0.0.5/fw?x=1" } }, "site.firmwareBaseUrl"],
    [{ site: { ...site, resyncIntervalMin: 0 } }, "site.resyncIntervalMin"],
    [{ site: { ...site, caCertificateUrl: "javascript:alert(1)" } }, "site.caCertificateUrl"],
    [{ lineKeys: [{ label: "x", extension: "2 02", type: "blf" }] }, "lineKeys[0].extension"],
    [{ lineKeys: [{ label: "x", extension: "202", type: "park" as never }] }, "lineKeys[0].type"],
  ];
  for (const [over, field] of cases) {
    const r = renderConfig({ ...base, ...over });
    assert.equal(r.ok, false, field);
    if (!r.ok) {
      assert.equal(r.error.code, "invalid-input", field);
      assert.equal(r.error.field, field);
    }
  }
  // Bootstrap needs no SIP password at all.
  assert.equal(renderConfig({ ...base, bootstrap: true, device: { ...device, sipPassword: "" } }).ok, true);
  // Garbage instead of objects does not throw.
  assert.equal(renderConfig({ ...base, lineKeys: [null as never] }).ok, false);
  assert.equal(renderConfig({ ...base, device: "x" as never }).ok, false);
  assert.equal(renderConfig(null as never).ok, false);
});

test("renderConfig: unserved and missing files are typed errors", () => {
  const gs = profile("grandstream");
  const legacy = gs.files.find((f) => f.pattern === "cfg{mac}")!;
  const r = renderConfig({ profile: gs, model: gs.models[0]!, fileKind: "mac-config", file: legacy, device, site, bootstrap: false });
  assert.equal(r.ok, false);
  if (!r.ok) assert.equal(r.error.code, "not-served");
  const y = profile("yealink");
  const r2 = renderConfig({ profile: y, model: y.models[0]!, fileKind: "firmware-info", device, site, bootstrap: false });
  assert.equal(r2.ok, false);
  if (!r2.ok) assert.equal(r2.error.code, "no-such-file");
});

test("renderConfig fails closed when a loaded template reads a name the context lacks", () => {
  const y = profile("yealink");
  const tpl = compileTemplate("device.cfg", "#!version:1.0.0.1\naccount.1.password = {{sipPassword}}\n");
  assert.ok(tpl.ok);
  // A hand-built profile whose bootstrap template asks for the SIP password: the context
  // of a bootstrap render has no such name, so the render fails instead of emitting "".
  const templates = new Map(y.templates);
  templates.set("bootstrap.cfg", tpl.template);
  const r = renderConfig({ profile: { ...y, templates }, model: y.models[0]!, fileKind: "mac-config", device, site, bootstrap: true });
  assert.equal(r.ok, false);
  if (!r.ok) {
    assert.equal(r.error.code, "unknown-variable");
    assert.equal(r.error.variable, "sipPassword");
  }
});

test("site CA certificate reaches the vendors that install one from a URL", () => {
  const withCa = { ...site, caCertificateUrl: "http://10.0.0.5/ca/site-ca.pem" };
  const y = profile("yealink");
  const k = kv(render(y, model(y, "T54W"), { bootstrap: true, site: withCa }));
  assert.equal(k.get("static.trusted_certificates.url"), "http://10.0.0.5/ca/site-ca.pem");
  const c = profile("cisco");
  const root = xml(render(c, model(c, "CP-8841-3PCC"), { bootstrap: true, site: withCa }));
  assert.equal(textOf(root, "Custom_CA_Rule"), "http://10.0.0.5/ca/site-ca.pem");
  assert.equal(kv(render(y, model(y, "T54W"), { bootstrap: true })).has("static.trusted_certificates.url"), false);
});

test("transport and time zone map to each vendor's codes", () => {
  const tls = { ...site, transport: "tls" as const, timeZone: "Asia/Kolkata" };
  const y = profile("yealink");
  const k = kv(render(y, model(y, "T46U"), { site: tls }));
  assert.equal(k.get("account.1.sip_server.1.transport_type"), "2");
  assert.equal(k.get("local_time.time_zone"), "+5:30");
  const gs = profile("grandstream");
  const grp = xml(render(gs, model(gs, "GRP2614"), { site: tls }));
  assert.equal(textOf(grp, "item", ["name", "account.1.sip.transport"]), "TlsOrTcp");
  assert.equal(textOf(grp, "item", ["name", "dateTime.timezone"]), "UTC-5:30");
  const poly = xml(render(profile("poly"), model(profile("poly"), "VVX450"), { site: { ...site, timeZone: "America/New_York" } }));
  assert.equal(one(poly, "tcpIpApp").attrs.get("tcpIpApp.sntp.gmtOffset"), "-18000");
});
