import { test, describe } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import {
  loadSettings,
  loadSettingsDetailed,
  defaultSettings,
  parseHostPort,
  tryParseHostPort,
  envName,
  renderSettingsDoc,
  SETTINGS_DOC,
  SETTING_NAMES,
  SettingsError,
  type LoadOptions,
} from "../../agent/config.ts";
import { tempDir } from "../tmpdir.ts";

const NO_FILE = { defaultConfigPath: null } as const;

function writeConfig(content: string | object, mode?: number): string {
  const dir = tempDir("ringedge-conf-");
  const file = path.join(dir, "ringedge.conf.json");
  fs.writeFileSync(file, typeof content === "string" ? content : JSON.stringify(content));
  if (mode !== undefined) fs.chmodSync(file, mode);
  return file;
}

/** Asserts loadSettings throws a SettingsError whose message matches every pattern. */
function rejects(opts: LoadOptions, ...patterns: Array<RegExp | string>): SettingsError {
  let caught: unknown;
  try {
    loadSettings({ ...NO_FILE, ...opts });
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof SettingsError, `expected SettingsError, got ${String(caught)}`);
  for (const p of patterns) {
    if (typeof p === "string") assert.ok(caught.message.includes(p), `message ${JSON.stringify(caught.message)} lacks ${JSON.stringify(p)}`);
    else assert.match(caught.message, p);
  }
  return caught;
}

describe("defaults", () => {
  test("every setting has its documented default; realm follows siteId", () => {
    const s = loadSettings(NO_FILE);
    assert.deepEqual(s, defaultSettings());
    assert.equal(s.dataDir, "./data");
    assert.deepEqual(s.sipListen, ["0.0.0.0:5060"]);
    assert.deepEqual(s.sipTransports, ["udp", "tcp"]);
    assert.equal(s.httpListen, "0.0.0.0:8080");
    assert.equal(s.mqttUrl, "");
    assert.equal(s.siteId, "site-1");
    assert.equal(s.realm, "site-1");
    assert.deepEqual([s.minExpires, s.maxExpires, s.defaultExpires], [60, 3600, 3600]);
    assert.deepEqual([s.keepaliveIntervalS, s.keepaliveMisses, s.nonceTtlS], [30, 3, 300]);
    assert.equal(s.logLevel, "info");
    assert.deepEqual(s.authAlgorithms, ["SHA-256", "MD5"]);
    assert.equal(s.maxMessageBytes, 65535);
    assert.deepEqual(s.guardAllowlist, []);
    const realm = loadSettings({ ...NO_FILE, env: { RINGEDGE_SITE_ID: "branch-9" } }).realm;
    assert.equal(realm, "branch-9");
  });

  test("defaults are fresh copies", () => {
    const a = loadSettings(NO_FILE);
    a.sipListen.push("127.0.0.1:1");
    assert.deepEqual(loadSettings(NO_FILE).sipListen, ["0.0.0.0:5060"]);
  });

  test("a missing default settings file is fine; an existing one is read", () => {
    assert.equal(loadSettingsDetailed({ defaultConfigPath: "/nonexistent/ringedge.json" }).configFile, null);
    const file = writeConfig({ siteId: "from-default-path" });
    const r = loadSettingsDetailed({ defaultConfigPath: file });
    assert.equal(r.configFile, file);
    assert.equal(r.settings.siteId, "from-default-path");
  });
});

describe("precedence: defaults < file < env < overrides", () => {
  test("each layer wins over the one below and sources are reported", () => {
    const file = writeConfig({ siteId: "file-site", logLevel: "debug", sipListen: ["127.0.0.1:5070", "[::1]:5070"], maxExpires: 7200, realm: "file-realm" });
    const env = { RINGEDGE_LOG_LEVEL: "warn", RINGEDGE_MAX_EXPIRES: "1800" };
    const r = loadSettingsDetailed({ configPath: file, env, overrides: { maxExpires: 900, defaultExpires: 600 } });
    assert.equal(r.settings.siteId, "file-site");
    assert.equal(r.settings.realm, "file-realm");
    assert.deepEqual(r.settings.sipListen, ["127.0.0.1:5070", "[::1]:5070"]);
    assert.equal(r.settings.logLevel, "warn");
    assert.equal(r.settings.maxExpires, 900);
    assert.equal(r.sources.siteId, "file");
    assert.equal(r.sources.logLevel, "env");
    assert.equal(r.sources.maxExpires, "override");
    assert.equal(r.sources.dataDir, "default");
  });

  test("RINGEDGE_CONFIG names the file; --config wins over it", () => {
    const a = writeConfig({ siteId: "aaa" });
    const b = writeConfig({ siteId: "bbb" });
    assert.equal(loadSettings({ ...NO_FILE, env: { RINGEDGE_CONFIG: a } }).siteId, "aaa");
    assert.equal(loadSettings({ ...NO_FILE, env: { RINGEDGE_CONFIG: a }, configPath: b }).siteId, "bbb");
  });

  test("env lists are comma-separated, trimmed; enums are case-insensitive", () => {
    const s = loadSettings({
      ...NO_FILE,
      env: { RINGEDGE_SIP_LISTEN: "127.0.0.1:5060, [::1]:5060", RINGEDGE_AUTH_ALGORITHMS: "md5,sha-256", RINGEDGE_SIP_TRANSPORTS: "tcp", RINGEDGE_GUARD_ALLOWLIST: "" },
    });
    assert.deepEqual(s.sipListen, ["127.0.0.1:5060", "[::1]:5060"]);
    assert.deepEqual(s.authAlgorithms, ["MD5", "SHA-256"]);
    assert.deepEqual(s.sipTransports, ["tcp"]);
    assert.deepEqual(s.guardAllowlist, []);
  });

  test("env names are UPPER_SNAKE_CASE of the setting", () => {
    assert.equal(envName("dataDir"), "RINGEDGE_DATA_DIR");
    assert.equal(envName("keepaliveIntervalS"), "RINGEDGE_KEEPALIVE_INTERVAL_S");
    assert.equal(envName("sipListen"), "RINGEDGE_SIP_LISTEN");
    const s = loadSettings({ ...NO_FILE, env: { RINGEDGE_DATA_DIR: "/var/lib/ringedge", RINGEDGE_KEEPALIVE_INTERVAL_S: "15", RINGEDGE_MQTT_URL: "mqtts://user:pw@console.example:8883" } });
    assert.equal(s.dataDir, "/var/lib/ringedge");
    assert.equal(s.keepaliveIntervalS, 15);
    assert.equal(s.mqttUrl, "mqtts://user:pw@console.example:8883");
  });

  test("an unknown RINGEDGE_ variable close to a setting gives a warning, not an error", () => {
    const r = loadSettingsDetailed({ ...NO_FILE, env: { RINGEDGE_SIP_LISTN: "127.0.0.1:5060", RINGEDGE_NO_NETNS: "1" } });
    assert.deepEqual(r.warnings, ['RINGEDGE_SIP_LISTN is not a ringedge setting (did you mean "RINGEDGE_SIP_LISTEN"?); ignored']);
  });
});

describe("invalid values name the setting, origin, value and reason", () => {
  test("the example from the design: port out of range in the environment", () => {
    const e = rejects({ env: { RINGEDGE_SIP_LISTEN: "127.0.0.1:99999" } });
    assert.equal(e.message, 'RINGEDGE_SIP_LISTEN: "127.0.0.1:99999" is not a valid host:port (port must be 1-65535)');
    assert.equal(e.setting, "sipListen");
    assert.equal(e.source, "env");
    assert.equal(e.origin, "RINGEDGE_SIP_LISTEN");
  });

  test("integers: strict parsing and ranges, env and file", () => {
    for (const bad of ["", "abc", "1.5", "1e3", "0x10", " 60", "+60", "60s", "99999999999999999999"]) {
      rejects({ env: { RINGEDGE_MIN_EXPIRES: bad } }, "RINGEDGE_MIN_EXPIRES:", "is not an integer");
    }
    rejects({ env: { RINGEDGE_KEEPALIVE_MISSES: "0" } }, 'RINGEDGE_KEEPALIVE_MISSES: "0" is out of range (must be 1-100)');
    rejects({ env: { RINGEDGE_NONCE_TTL_S: "-5" } }, "is out of range");
    const f1 = writeConfig({ maxMessageBytes: "65535" });
    rejects({ configPath: f1 }, `${f1}: maxMessageBytes: "65535" must be an integer number`);
    const f2 = writeConfig({ keepaliveIntervalS: 2.5 });
    rejects({ configPath: f2 }, "keepaliveIntervalS: 2.5 must be an integer number");
    const f3 = writeConfig({ guardBanS: 10_000_000 });
    const e = rejects({ configPath: f3 }, "guardBanS: 10000000 is out of range");
    assert.equal(e.source, "file");
    assert.equal(e.origin, f3);
  });

  test("host:port lists: every kind of bad address", () => {
    const cases: Array<[string, string]> = [
      ["127.0.0.1", "missing :port"],
      ["127.0.0.1:", "missing port number"],
      ["127.0.0.1:0", "port must be 1-65535"],
      ["127.0.0.1:65536", "port must be 1-65535"],
      ["127.0.0.1:50a", "port must be 1-65535"],
      ["localhost:5060", "names are not resolved"],
      ["256.1.1.1:5060", "host must be an IPv4 address"],
      [":5060", "missing host"],
      ["::1:5060", "in brackets"],
      ["[::1:5060", "missing ']'"],
      ["[::1]5060", "missing :port after ']'"],
      ["[zz::1]:5060", "is not an IPv6 address"],
      ["127.0.0.1:5060,,127.0.0.2:5060", "has an empty item"],
      ["127.0.0.1:5060,127.0.0.1:5060", "is listed twice"],
      [" ", "must name at least one item"],
    ];
    for (const [value, why] of cases) rejects({ env: { RINGEDGE_SIP_LISTEN: value } }, "RINGEDGE_SIP_LISTEN:", why);
    const f = writeConfig({ sipListen: ["127.0.0.1:5060", 5060] });
    rejects({ configPath: f }, "sipListen[1]: 5060 must be a string");
    const f2 = writeConfig({ sipListen: "127.0.0.1:5060" });
    rejects({ configPath: f2 }, 'sipListen: "127.0.0.1:5060" must be a JSON array');
    const f3 = writeConfig({ sipListen: [] });
    rejects({ configPath: f3 }, "sipListen: [] must name at least one item");
  });

  test("httpListen allows port 0 (OS chooses) but still checks the rest", () => {
    assert.equal(loadSettings({ ...NO_FILE, env: { RINGEDGE_HTTP_LISTEN: "127.0.0.1:0" } }).httpListen, "127.0.0.1:0");
    rejects({ env: { RINGEDGE_HTTP_LISTEN: "127.0.0.1:70000" } }, "RINGEDGE_HTTP_LISTEN:", "port must be 0-65535");
    rejects({ env: { RINGEDGE_HTTP_LISTEN: "127.0.0.1:80,127.0.0.1:81" } }, "RINGEDGE_HTTP_LISTEN:");
  });

  test("enums and enum lists", () => {
    rejects({ env: { RINGEDGE_LOG_LEVEL: "verbose" } }, 'RINGEDGE_LOG_LEVEL: "verbose" must be one of debug, info, warn, error, silent');
    rejects({ env: { RINGEDGE_SIP_TRANSPORTS: "udp,tls" } }, 'RINGEDGE_SIP_TRANSPORTS: "tls" must be one of udp, tcp');
    rejects({ env: { RINGEDGE_AUTH_ALGORITHMS: "SHA-1" } }, "must be one of SHA-256, SHA-512-256, MD5");
    rejects({ env: { RINGEDGE_AUTH_ALGORITHMS: "MD5,md5" } }, "is listed twice");
    const f = writeConfig({ logLevel: 3 });
    rejects({ configPath: f }, "logLevel: 3 must be a string");
  });

  test("strings: siteId, realm, dataDir, mqttUrl, allowlist", () => {
    for (const bad of ["", "Site-1", "site_1", "a".repeat(65), "site 1"]) rejects({ env: { RINGEDGE_SITE_ID: bad } }, "RINGEDGE_SITE_ID:", "must be 1-64 characters of a-z, 0-9 and -");
    rejects({ env: { RINGEDGE_REALM: 'bad"realm' } }, "RINGEDGE_REALM:", "must not contain");
    rejects({ env: { RINGEDGE_REALM: "" } }, "must not be empty");
    rejects({ env: { RINGEDGE_DATA_DIR: "" } }, "RINGEDGE_DATA_DIR:", "must not be empty");
    rejects({ env: { RINGEDGE_MQTT_URL: "http://console.example" } }, "RINGEDGE_MQTT_URL:", "must use one of the schemes mqtt, mqtts, ws, wss");
    const noUrl = rejects({ env: { RINGEDGE_MQTT_URL: "mqtt//user:hunter2@broker" } }, "is not a URL");
    const badScheme = rejects({ env: { RINGEDGE_MQTT_URL: "http://user:hunter2@broker" } }, "***@broker");
    assert.ok(!badScheme.message.includes("hunter2"), "password not echoed");
    assert.ok(noUrl.message.length > 0);
    rejects({ env: { RINGEDGE_GUARD_ALLOWLIST: "192.0.2.1,not-an-ip" } }, 'RINGEDGE_GUARD_ALLOWLIST: "not-an-ip" is not an IP address');
    const f = writeConfig({ siteId: null });
    rejects({ configPath: f }, "siteId: null must be a string");
  });

  test("cross-setting rule minExpires <= defaultExpires <= maxExpires blames the explicit one", () => {
    const e = rejects({ env: { RINGEDGE_MIN_EXPIRES: "7200" } }, 'RINGEDGE_MIN_EXPIRES: 7200 must not exceed defaultExpires (default 3600)');
    assert.equal(e.setting, "minExpires");
    const e2 = rejects({ env: { RINGEDGE_MAX_EXPIRES: "30" } }, "RINGEDGE_MAX_EXPIRES: 30 must not be below defaultExpires (default 3600)");
    assert.equal(e2.setting, "maxExpires");
    const f = writeConfig({ defaultExpires: 600 });
    rejects({ configPath: f, env: { RINGEDGE_MAX_EXPIRES: "300" } }, "RINGEDGE_MAX_EXPIRES: 300 must not be below defaultExpires (600 from " + f);
    assert.equal(loadSettings({ ...NO_FILE, env: { RINGEDGE_MAX_EXPIRES: "600", RINGEDGE_DEFAULT_EXPIRES: "600" } }).maxExpires, 600);
  });

  test("TCP limits: ranges, and the per-address cap may not exceed the total", () => {
    rejects({ env: { RINGEDGE_TCP_MAX_CONNECTIONS_PER_ADDRESS: "0" } }, 'RINGEDGE_TCP_MAX_CONNECTIONS_PER_ADDRESS: "0" is out of range');
    rejects({ env: { RINGEDGE_TCP_MESSAGE_TIMEOUT_MS: "50" } }, 'RINGEDGE_TCP_MESSAGE_TIMEOUT_MS: "50" is out of range');
    rejects({ env: { RINGEDGE_TCP_IDLE_TIMEOUT_S: "ten" } }, "RINGEDGE_TCP_IDLE_TIMEOUT_S:");
    const e = rejects({ env: { RINGEDGE_TCP_MAX_CONNECTIONS: "16" } }, "RINGEDGE_TCP_MAX_CONNECTIONS: 16 must not be below tcpMaxConnectionsPerAddress (default 32)");
    assert.equal(e.setting, "tcpMaxConnections");
    const s = loadSettings({ ...NO_FILE, env: { RINGEDGE_TCP_MAX_CONNECTIONS: "16", RINGEDGE_TCP_MAX_CONNECTIONS_PER_ADDRESS: "4" } });
    assert.deepEqual([s.tcpMaxConnections, s.tcpMaxConnectionsPerAddress, s.tcpMessageTimeoutMs, s.tcpIdleTimeoutS], [16, 4, 10_000, 900]);
  });

  test("overrides are validated like the file", () => {
    rejects({ overrides: { sipListen: ["127.0.0.1:99999"] } }, '--sipListen: "127.0.0.1:99999" is not a valid host:port');
    rejects({ overrides: { keepaliveMisses: 0 } }, "--keepaliveMisses: 0 is out of range");
    rejects({ overrides: { sipListn: ["x"] } as never }, 'unknown setting "sipListn" (did you mean "sipListen"?)');
  });
});

describe("settings file problems", () => {
  test("unknown keys are errors, with a suggestion", () => {
    const f = writeConfig({ siteId: "ok", keepaliveIntervalSeconds: 10 });
    const e = rejects({ configPath: f }, `${f}: unknown setting "keepaliveIntervalSeconds"`, 'did you mean "keepaliveIntervalS"?');
    assert.equal(e.setting, "keepaliveIntervalSeconds");
    const f2 = writeConfig({ frobnicate: true });
    const e2 = rejects({ configPath: f2 }, 'unknown setting "frobnicate"');
    assert.ok(!e2.message.includes("did you mean"));
    assert.equal(loadSettings({ ...NO_FILE, configPath: writeConfig({ $schema: "./ringedge.schema.json" }) }).siteId, "site-1");
  });

  test("a retired setting in the file (an upgraded appliance's) is ignored with a warning naming its successor; a misspelt one still stops", () => {
    const file = writeConfig({ siteId: "up-1", overloadUdpQueuePct: 50 });
    const r = loadSettingsDetailed({ ...NO_FILE, configPath: file });
    assert.equal(r.settings.siteId, "up-1");
    assert.equal(r.settings.overloadQueueDelayMs, defaultSettings().overloadQueueDelayMs);
    assert.equal(r.warnings.length, 1);
    assert.match(r.warnings[0]!, /overloadUdpQueuePct is no longer a setting \(replaced by overloadQueueDelayMs/);
    assert.ok(r.warnings[0]!.startsWith(file));
    rejects({ configPath: writeConfig({ overloadUdpQueuePcts: 50 }) }, 'unknown setting "overloadUdpQueuePcts"');
  });

  test("invalid JSON, not an object, missing, unreadable, a store file", () => {
    const bad = writeConfig('{"siteId": "x",}');
    rejects({ configPath: bad }, `${bad}: not valid JSON`);
    rejects({ configPath: writeConfig("[1,2]") }, "must be a JSON object of settings");
    rejects({ configPath: writeConfig("") }, "not valid JSON");
    rejects({ configPath: "/nonexistent/ringedge.conf.json" }, "/nonexistent/ringedge.conf.json: settings file not found");
    rejects({ env: { RINGEDGE_CONFIG: "/nonexistent/x.json" } }, "settings file not found");
    // A directory is unreadable as a file for root and non-root alike.
    const dir = tempDir("ringedge-conf-dir-");
    rejects({ configPath: dir }, `${dir}: cannot read the settings file`);
    rejects({ configPath: writeConfig({ format: "ringedge-store", schemaVersion: 1, data: {} }) }, "this is a ringedge data store, not a settings file");
  });
});

describe("host:port parsing", () => {
  test("IPv4 and IPv6", () => {
    assert.deepEqual(parseHostPort("0.0.0.0:5060"), { host: "0.0.0.0", port: 5060, family: 4 });
    assert.deepEqual(parseHostPort("[::1]:5060"), { host: "::1", port: 5060, family: 6 });
    assert.deepEqual(parseHostPort("[2001:db8::1]:65535"), { host: "2001:db8::1", port: 65535, family: 6 });
    assert.deepEqual(parseHostPort("[::ffff:192.0.2.1]:5060"), { host: "::ffff:192.0.2.1", port: 5060, family: 6 });
    assert.deepEqual(parseHostPort("127.0.0.1:0"), { host: "127.0.0.1", port: 0, family: 4 });
    assert.throws(() => parseHostPort("nope"), SettingsError);
  });

  test("tryParseHostPort never throws on hostile input", () => {
    for (const v of [undefined, null, 5060, {}, "", "[", "]", "[]:1", "1.2.3.4:5:6", "\u0000:1", "[::1]:", "1.2.3.4:00080"]) {
      const r = tryParseHostPort(v);
      assert.equal(r.ok, false, `accepted ${String(v)}`);
    }
  });
});

describe("documentation table", () => {
  test("every setting is documented with env name, type, default and meaning", () => {
    assert.deepEqual(SETTINGS_DOC.map((d) => d.name), SETTING_NAMES);
    for (const d of SETTINGS_DOC) {
      assert.equal(d.env, envName(d.name));
      assert.ok(d.meaning.length > 10, d.name);
      assert.ok(d.type.length > 0, d.name);
    }
    const md = renderSettingsDoc();
    assert.match(md, /\| `sipListen` \| `RINGEDGE_SIP_LISTEN` \| list of host:port \| `0\.0\.0\.0:5060` \|/);
    assert.match(md, /\| `realm` \| `RINGEDGE_REALM` \| string \| `= siteId` \|/);
    assert.match(md, /\| `dataDir` \| `RINGEDGE_DATA_DIR` \| path \| `\.\/data` \|/);
    assert.match(md, /\| `mqttUrl` \| `RINGEDGE_MQTT_URL` \| URL or "" \| `""` \|/);
    assert.equal(md.split("\n").filter((l) => l.startsWith("| `")).length, SETTING_NAMES.length);
  });

  test("documented defaults round-trip through the env parser", () => {
    for (const d of SETTINGS_DOC) {
      if (d.default.startsWith("=")) continue;
      const s = loadSettings({ ...NO_FILE, env: { [d.env]: d.default } });
      assert.deepEqual(s[d.name], defaultSettings()[d.name], d.name);
    }
  });
});
