// Phone trust at first boot: the bootstrap window, rotation on rebootstrap, a second client
// claiming a phone (refused, credentials rotated, installer told), factory device certificates
// required per vendor (test CAs and device certificates made with the openssl CLI), and the
// Digest challenge order each vendor's HTTP client gets.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import fs from "node:fs";
import https from "node:https";
import os from "node:os";
import path from "node:path";
import { EventBus } from "../../agent/bus.ts";
import { defaultSettings } from "../../agent/config.ts";
import { createLogger } from "../../agent/log.ts";
import { computeAuthorization } from "../../agent/sip/digest.ts";
import { Store } from "../../agent/store/store.ts";
import { checkDeviceCertificate, loadDeviceCas, namesMac, parsePemCertificates } from "../../provisioning/devicecert.ts";
import { MemoryDirectory, type PhoneRecord } from "../../provisioning/directory.ts";
import { FirmwareStore } from "../../provisioning/firmware.ts";
import { phoneCommands, type PhoneView } from "../../provisioning/installer.ts";
import { loadProfiles, type Profile } from "../../provisioning/profiles.ts";
import { ProvisioningServer, type ClaimConflict, type ProvisioningRequest, type ProvisioningResponse } from "../../provisioning/server.ts";
import { ProvisioningService } from "../../provisioning/service.ts";
import { StoreDirectory } from "../../provisioning/store-directory.ts";
import { yealinkKv } from "./provisioning-fixtures.ts";
import { tempDir } from "../tmpdir.ts";

const { profiles } = loadProfiles("device-profiles");
const logs: string[] = [];
const log = createLogger("debug", "test", (l) => void logs.push(l));
const WINDOW = 30 * 60_000;
const site = () => ({ sipPort: 5060, transport: "udp" as const, ntpServer: "pool.ntp.org", timeZone: "UTC", resyncIntervalMin: 60 });
const T46U = (mac: string) => ({ userAgent: `Yealink SIP-T46U 108.86.0.75 ${mac}` });

/** A server over a real store (installer commands see the same phones), requests through handle(). */
async function storeSetup(t: { after(fn: () => void | Promise<void>): void }) {
  const dir = tempDir("ringedge-trust-");
  const store = await Store.open(dir);
  t.after(async () => {
    await store.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const directory = new StoreDirectory(store);
  let now = Date.now();
  const conflicts: ClaimConflict[] = [];
  const server = new ProvisioningServer({ profiles, directory, firmware: new FirmwareStore({ dir: undefined }), site, log, bootstrapWindowMs: WINDOW, now: () => now, onConflict: (c) => void conflicts.push(c) });
  const commands = phoneCommands({ store });
  const get = (url: string, over: Partial<ProvisioningRequest> = {}): ProvisioningResponse =>
    server.handle({ method: "GET", url, hasBody: false, source: "10.0.0.20", local: { address: "10.0.0.5", port: 8080, scheme: "http" }, ...over });
  const add = async (mac: string, ext: string) => (await commands["phone.add"]!({ mac, model: "T46U", extension: ext, showSecrets: true })) as PhoneView;
  const show = async (ref: string) => (await commands["phone.show"]!({ ref, showSecrets: true })) as PhoneView;
  return { store, server, get, add, show, commands, conflicts, advance: (ms: number) => void (now += ms) };
}

function digestFor(res: ProvisioningResponse, url: string, user: string, password: string, index = 0): string {
  const h = res.headers["www-authenticate"];
  const list = Array.isArray(h) ? h : [h];
  return computeAuthorization(list[index]!, { method: "GET", uri: url, username: user, password }) as string;
}

test("the bootstrap window: served right after phone add, refused (401) once the window is over", async (t) => {
  const s = await storeSetup(t);
  await s.add("001565aabb81", "881");
  await s.add("001565aabb82", "882");
  assert.equal(s.get("/001565aabb81.cfg", T46U("001565aabb81")).status, 200, "inside the window");
  s.advance(WINDOW + 1000);
  const late = s.get("/001565aabb82.cfg", T46U("001565aabb82"));
  assert.equal(late.status, 401, "window over: only a challenge");
  assert.ok(!late.body?.includes("auto_provision"), "no credentials in the answer");
});

test("phone rebootstrap rotates SIP and provisioning credentials: the old ones are refused, the new bootstrap is served", async (t) => {
  const s = await storeSetup(t);
  const mac = "001565aabb83";
  const url = `/${mac}.cfg`;
  const before = await s.add(mac, "883");
  assert.equal(s.get(url, T46U(mac)).status, 200, "bootstrap");
  const challenge = s.get(url, T46U(mac));
  assert.equal(challenge.status, 401);
  const oldAuth = digestFor(challenge, url, before.provisioningUser!, before.secrets!.provisioningPassword);
  assert.equal(s.get(url, { ...T46U(mac), authorization: oldAuth }).status, 200, "the old credentials work before");
  assert.equal(s.get(`/p/${before.secrets!.token}/${mac}.cfg`, T46U(mac)).status, 200, "so does the old token");

  const r = (await s.commands["phone.rebootstrap"]!({ ref: mac })) as { rotated: boolean };
  assert.equal(r.rotated, true);
  const after = await s.show(mac);
  assert.notEqual(after.secrets!.sipPassword, before.secrets!.sipPassword);
  assert.notEqual(after.secrets!.provisioningPassword, before.secrets!.provisioningPassword);
  assert.notEqual(after.secrets!.token, before.secrets!.token);
  const again = s.get(url, { ...T46U(mac), authorization: digestFor(challenge, url, before.provisioningUser!, before.secrets!.provisioningPassword) });
  assert.equal(again.status, 401, "old Digest credentials refused");
  assert.equal(s.get(`/p/${before.secrets!.token}/${mac}.cfg`, T46U(mac)).status, 404, "old token refused");
  const boot = s.get(url, T46U(mac));
  assert.equal(boot.status, 200, "a new window: the reset phone gets its bootstrap");
  assert.equal(yealinkKv(boot.body!).get("static.auto_provision.server.username"), after.provisioningUser, "with the new credentials");
  await assert.rejects(async () => s.commands["phone.rebootstrap"]!({ ref: "no-such-phone" }), /no phone 'no-such-phone'/, "an unknown phone: a clear error");
});

test("a second client claiming the same phone: refused, credentials rotated, installer told (log, bus, phone show/list)", async (t) => {
  const s = await storeSetup(t);
  const mac = "001565aabb84";
  const url = `/${mac}.cfg`;
  const added = await s.add(mac, "884");
  // The attacker knows the MAC and is first: it takes the bootstrap...
  assert.equal(s.get(url, { ...T46U(mac), source: "10.0.0.66" }).status, 200);
  // ...then the real phone boots and asks for it from its own address.
  const logsBefore = logs.length;
  const refused = s.get(url, T46U(mac));
  assert.equal(refused.status, 403);
  assert.ok(!refused.body?.includes("auto_provision"), "nothing handed out");
  const rotated = await s.show(mac);
  assert.notEqual(rotated.secrets!.sipPassword, added.secrets!.sipPassword, "SIP password rotated");
  assert.notEqual(rotated.secrets!.provisioningPassword, added.secrets!.provisioningPassword, "provisioning password rotated");
  assert.notEqual(rotated.secrets!.token, added.secrets!.token, "token rotated");
  assert.match(rotated.conflict ?? "", /10\.0\.0\.20 asked for the bootstrap after 10\.0\.0\.66 had claimed the phone; credentials rotated/);
  const list = (await s.commands["phone.list"]!({})) as PhoneView[];
  assert.ok(list.find((p) => p.mac === mac)?.conflict, "visible in phone list");
  assert.deepEqual(s.conflicts.map((c) => [c.mac, c.claimedIp, c.ip, c.stage]), [[mac, "10.0.0.66", "10.0.0.20", "bootstrap"]]);
  assert.ok(logs.slice(logsBefore).some((l) => /WARN/i.test(l) && /second client claimed this phone/.test(l) && l.includes(mac)), "a warning log line");
  // What the attacker took is worthless now: its provisioning credentials are refused.
  const ch = s.get(url, { ...T46U(mac), source: "10.0.0.66" });
  assert.equal(ch.status, 401, "no new bootstrap for anyone until the installer acts");
  assert.equal(s.get(url, { ...T46U(mac), source: "10.0.0.66", authorization: digestFor(ch, url, added.provisioningUser!, added.secrets!.provisioningPassword) }).status, 401);
  assert.equal(s.server.counters.conflicts, 1, "one conflict, not one per later request");
  // The installer lets the real phone in again; the conflict note goes.
  await s.commands["phone.rebootstrap"]!({ ref: mac });
  assert.equal(s.get(url, T46U(mac)).status, 200);
  assert.equal((await s.show(mac)).conflict, undefined);
});

test("a second client fetching the full config with the claimant's credentials: refused and rotated; the claimant itself is served", async (t) => {
  const s = await storeSetup(t);
  const mac = "001565aabb85";
  const url = `/${mac}.cfg`;
  const added = await s.add(mac, "885");
  assert.equal(s.get(url, T46U(mac)).status, 200, "the phone takes its bootstrap");
  const ch = s.get(url, T46U(mac));
  assert.equal(s.get(url, { ...T46U(mac), authorization: digestFor(ch, url, added.provisioningUser!, added.secrets!.provisioningPassword) }).status, 200, "the claimant gets its full config");
  // Someone who sniffed the bootstrap uses the same credentials from elsewhere.
  const stolen = s.get(url, { ...T46U(mac), source: "10.0.0.77", authorization: computeAuthorization(([] as string[]).concat(ch.headers["www-authenticate"] ?? [])[0]!, { method: "GET", uri: url, username: added.provisioningUser!, password: added.secrets!.provisioningPassword, nc: 2 }) as string });
  assert.equal(stolen.status, 403);
  assert.equal(s.conflicts.at(-1)?.stage, "full");
  assert.notEqual((await s.show(mac)).secrets!.sipPassword, added.secrets!.sipPassword);
  // After the window a phone that moved (DHCP) keeps working: no rival check any more.
  const mac2 = "001565aabb86";
  const url2 = `/${mac2}.cfg`;
  const p2 = await s.add(mac2, "886");
  assert.equal(s.get(url2, T46U(mac2)).status, 200);
  s.advance(WINDOW + 1000);
  const ch3 = s.get(url2, { ...T46U(mac2), source: "10.0.0.99" });
  assert.equal(ch3.status, 401);
  assert.equal(s.get(url2, { ...T46U(mac2), source: "10.0.0.99", authorization: digestFor(ch3, url2, p2.provisioningUser!, p2.secrets!.provisioningPassword) }).status, 200);
});

test("the store checks the trust fields it keeps (bad input refused, nothing changed)", async (t) => {
  const dir = tempDir("ringedge-trust-store-");
  const store = await Store.open(dir);
  t.after(async () => {
    await store.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const d = store.addDevice({ username: "887", password: "pw-887-abcdef", kind: "physical", mac: "001565aabb87" });
  assert.ok(d.ok);
  const base = d.value.provisioning!;
  for (const bad of [
    { ...base, bootstrapOpenedAt: "yesterday" },
    { ...base, claimedBy: { ip: "", at: new Date().toISOString() } },
    { ...base, claimedBy: { ip: "10.0.0.1", cert: "not-a-fingerprint", at: new Date().toISOString() } },
    { ...base, conflict: { ip: "10.0.0.1", at: new Date().toISOString(), claimedIp: "10.0.0.2", stage: "other" } },
  ]) {
    const r = store.updateDevice(d.value.id, { provisioning: bad as typeof base });
    assert.equal(r.ok, false, JSON.stringify(bad));
  }
  assert.deepEqual(store.getDevice(d.value.id)!.provisioning, base);
});

// --- factory device certificates --------------------------------------------------------------

function openssl(dir: string, args: string[]): void {
  execFileSync("openssl", args, { cwd: dir, stdio: "ignore" });
}

function makeCa(dir: string, name: string): void {
  openssl(dir, ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", `${name}.key`, "-out", `${name}.pem`, "-days", "2", "-subj", `/CN=${name} test device CA`, "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
}

function makeDevice(dir: string, name: string, ca: string, subject: string, san?: string): void {
  fs.writeFileSync(path.join(dir, `${name}.ext`), ["basicConstraints=CA:FALSE", "extendedKeyUsage=clientAuth", ...(san ? [`subjectAltName=${san}`] : [])].join("\n") + "\n");
  openssl(dir, ["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", subject]);
  openssl(dir, ["x509", "-req", "-in", `${name}.csr`, "-CA", `${ca}.pem`, "-CAkey", `${ca}.key`, "-set_serial", String(Math.floor(Math.random() * 1e9)), "-days", "1", "-out", `${name}.pem`, "-extfile", `${name}.ext`]);
}

function hasOpenssl(): boolean {
  try {
    execFileSync("sh", ["-c", "command -v openssl"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

function fetchTls(port: number, file: string, opts: { ca: Buffer; cert?: Buffer; key?: Buffer; ua: string }): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request({ host: "127.0.0.1", port, path: file, ca: opts.ca, ...(opts.cert ? { cert: opts.cert, key: opts.key } : {}), headers: { "user-agent": opts.ua }, agent: false, timeout: 5000 }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("error", reject);
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.end();
  });
}

test("required device certificate over real HTTPS: a phone with its valid certificate is served; none, another CA, another vendor's CA, another MAC, or plain HTTP are refused", async (t) => {
  assert.ok(hasOpenssl(), "the openssl CLI is needed (make sysdeps installs it)");
  const dir = tempDir("ringedge-devcert-");
  openssl(dir, ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "server.key", "-out", "server.pem", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]);
  makeCa(dir, "yealink-ca");
  makeCa(dir, "poly-ca");
  makeCa(dir, "rogue-ca");
  const mac = "001565aabb91";
  makeDevice(dir, "phone", "yealink-ca", "/O=Yealink/CN=001565AABB91");
  makeDevice(dir, "phone-san", "yealink-ca", "/O=Yealink/CN=device", "URI:urn:dev:mac:00-15-65-aa-bb-91");
  makeDevice(dir, "rogue", "rogue-ca", "/CN=001565AABB91");
  makeDevice(dir, "polyphone", "poly-ca", "/CN=001565AABB91");
  makeDevice(dir, "other", "yealink-ca", "/CN=SEP001565AABB99");
  // The installer's CA directory: <dir>/<vendor>.pem and <dir>/<vendor>/*.pem.
  const caDir = path.join(dir, "device-ca");
  fs.mkdirSync(path.join(caDir, "poly"), { recursive: true });
  fs.copyFileSync(path.join(dir, "yealink-ca.pem"), path.join(caDir, "yealink.pem"));
  fs.copyFileSync(path.join(dir, "poly-ca.pem"), path.join(caDir, "poly", "root.pem"));
  const deviceCas = loadDeviceCas(caDir, ["yealink", "poly"]);
  assert.deepEqual([...deviceCas.keys()], ["yealink", "poly"]);

  const directory = new MemoryDirectory();
  const base = { extension: "891", displayName: "x", sipUsername: "891", sipPassword: "sip-pw-891-abcdef", createdAt: new Date().toISOString() };
  const phoneA: PhoneRecord = { ...base, deviceId: "dev-891", mac, model: "T46U", provisioning: { user: "p891", password: "pw891abcdefgh", token: "t891abcdefghijklmnopq" } };
  directory.add(phoneA);
  const server = new ProvisioningServer({
    profiles,
    directory,
    firmware: new FirmwareStore({ dir: undefined }),
    site,
    log,
    bootstrapWindowMs: WINDOW,
    deviceCas,
    http: { host: "127.0.0.1", port: 0 },
    https: { host: "127.0.0.1", port: 0, cert: fs.readFileSync(path.join(dir, "server.pem")), key: fs.readFileSync(path.join(dir, "server.key")) },
  });
  await server.start();
  t.after(() => server.stop());
  const port = server.addresses().find((a) => a.scheme === "https")!.port;
  const httpPort = server.addresses().find((a) => a.scheme === "http")!.port;
  const ca = fs.readFileSync(path.join(dir, "server.pem"));
  const ua = `Yealink SIP-T46U 108.86.0.75 ${mac}`;
  const withCert = (name: string) => ({ ca, ua, cert: fs.readFileSync(path.join(dir, `${name}.pem`)), key: fs.readFileSync(path.join(dir, `${name}.key`)) });
  const file = `/${mac}.cfg`;

  assert.equal((await fetchTls(port, file, { ca, ua })).status, 403, "no certificate");
  assert.equal((await fetchTls(port, file, withCert("rogue"))).status, 403, "a CA nobody configured");
  assert.equal((await fetchTls(port, file, withCert("polyphone"))).status, 403, "another vendor's CA");
  assert.equal((await fetchTls(port, file, withCert("other"))).status, 403, "the vendor's CA, but another phone's MAC");
  const viaHttp = server.handle({ method: "GET", url: file, userAgent: ua, hasBody: false, source: "127.0.0.1", local: { address: "127.0.0.1", port: httpPort, scheme: "http" } });
  assert.equal(viaHttp.status, 403, "over plain HTTP: refused");
  assert.ok(logs.some((l) => /is not from this vendor's CA/.test(l)), "the reason is logged");
  assert.ok(logs.some((l) => /does not name MAC 001565aabb91/.test(l)));

  const ok = await fetchTls(port, file, withCert("phone"));
  assert.equal(ok.status, 200, "its own certificate: the bootstrap");
  assert.ok(yealinkKv(ok.body).get("static.auto_provision.server.username"));
  const claim = phoneA.provisioning!.claimedBy;
  assert.equal(claim?.cert, new X509Certificate(fs.readFileSync(path.join(dir, "phone.pem"))).fingerprint256, "the claim records the certificate");
  // The MAC in subjectAltName instead of the CN also counts; a second certificate is a rival.
  const second = await fetchTls(port, file, withCert("phone-san"));
  assert.equal(second.status, 403, "another valid certificate for the claimed phone is a second client");
  assert.equal(phoneA.provisioning!.conflict?.stage, "bootstrap");
  // Common files of the vendor need a valid certificate too, but no MAC.
  assert.equal((await fetchTls(port, "/y000000000108.cfg", withCert("other"))).status, 200);
  assert.equal((await fetchTls(port, "/y000000000108.cfg", { ca, ua })).status, 403);
});

test("checkDeviceCertificate and the CA loader: bad input gets a clear reason, never a throw", (t) => {
  assert.ok(hasOpenssl(), "the openssl CLI is needed (make sysdeps installs it)");
  const dir = tempDir("ringedge-devcert-unit-");
  makeCa(dir, "ca");
  makeDevice(dir, "dev", "ca", "/CN=device", "DNS:sep0015.65aa.bb93.example, URI:urn:x");
  const ca = parsePemCertificates(fs.readFileSync(path.join(dir, "ca.pem"), "utf8"), "ca.pem");
  const der = new X509Certificate(fs.readFileSync(path.join(dir, "dev.pem"))).raw;
  const caDer = ca[0]!.raw;
  const ok = checkDeviceCertificate({ authorized: true, chain: [der, caDer] }, ca, "001565aabb93", ["subject-cn", "subject-alt-name"]);
  assert.equal(ok.ok, true, "Cisco-style dotted MAC in subjectAltName");
  const cnOnly = checkDeviceCertificate({ authorized: true, chain: [der] }, ca, "001565aabb93", ["subject-cn"]);
  assert.deepEqual(cnOnly, { ok: false, reason: "device certificate does not name MAC 001565aabb93" }, "only where the profile says");
  assert.equal(checkDeviceCertificate(undefined, ca, undefined, ["subject-cn"]).ok, false);
  assert.equal(checkDeviceCertificate({ authorized: false, authorizationError: "CERT_HAS_EXPIRED", chain: [der] }, ca, undefined, ["subject-cn"]).ok, false);
  const garbage = checkDeviceCertificate({ authorized: true, chain: [Buffer.from("not DER")] }, ca, undefined, ["subject-cn"]);
  assert.equal(garbage.ok, false);
  assert.match((garbage as { reason: string }).reason, /unreadable/);
  for (const text of ["SEP001565AABB93", "URI:urn:dev:mac:00-15-65-aa-bb-93", "00:15:65:AA:BB:93", "DNS:sep0015.65aa.bb93.example"]) assert.equal(namesMac(text, "001565aabb93"), true, text);
  for (const text of ["0001565aabb93", "001565aabb930", "001565aabb94", ""]) assert.equal(namesMac(text, "001565aabb93"), false, text);
  // The loader: a vendor without CA files, a non-CA certificate, an unreadable block.
  assert.throws(() => loadDeviceCas(dir, ["yealink"]), /no device CA certificate for yealink/);
  fs.copyFileSync(path.join(dir, "dev.pem"), path.join(dir, "poly.pem"));
  assert.throws(() => loadDeviceCas(dir, ["poly"]), /is not a CA certificate/);
  fs.writeFileSync(path.join(dir, "cisco.pem"), "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
  assert.throws(() => loadDeviceCas(dir, ["cisco"]), /certificate 1 is not readable/);
});

// --- Digest challenge order per vendor ---------------------------------------------------------

test("Digest challenges follow each vendor's profile httpDigest, not the SIP settings; an algorithm not offered is refused", () => {
  // Every shipped profile names its order; phones' HTTP clients answer MD5.
  for (const p of profiles.values()) assert.deepEqual(p.httpDigest, ["MD5"], p.vendor);
  // A vendor whose HTTP client takes SHA-256 first (a profile saying so).
  const custom = new Map<string, Profile>(profiles);
  custom.set("poly", { ...profiles.get("poly")!, httpDigest: ["SHA-256", "MD5"] });
  const directory = new MemoryDirectory();
  const now = Date.now();
  const mk = (mac: string, model: string, ext: string): PhoneRecord => ({ deviceId: `dev-${ext}`, mac, model, extension: ext, displayName: ext, sipUsername: ext, sipPassword: `sip-${ext}-abcdefgh`, createdAt: new Date(now - 2 * WINDOW).toISOString(), provisioning: { user: `p${ext}`, password: `pw${ext}abcdefgh`, token: `t${ext}abcdefghijklmnopq`, bootstrapClosedAt: new Date(now - WINDOW).toISOString() } });
  directory.add(mk("0004f2aabb95", "VVX411", "895"));
  directory.add(mk("001565aabb96", "T46U", "896"));
  const server = new ProvisioningServer({ profiles: custom, directory, firmware: new FirmwareStore({ dir: undefined }), site, log, bootstrapWindowMs: WINDOW });
  const get = (url: string, ua: string, authorization?: string) => server.handle({ method: "GET", url, userAgent: ua, hasBody: false, source: "10.0.0.20", local: { address: "10.0.0.5", port: 8080, scheme: "http" }, ...(authorization ? { authorization } : {}) });
  const algs = (r: ProvisioningResponse) => ([] as string[]).concat(r.headers["www-authenticate"] ?? []).map((h) => /algorithm=([A-Za-z0-9-]+)/.exec(h)?.[1]);
  const polyUa = "FileTransport PolycomVVX-VVX_411-UA/6.4.3.5018 Type/Application";
  const polyUrl = "/0004f2aabb95-ringedge.cfg";
  const yUa = "Yealink SIP-T46U 108.86.0.75 001565aabb96";
  const yUrl = "/001565aabb96.cfg";
  const polyCh = get(polyUrl, polyUa);
  assert.equal(polyCh.status, 401);
  assert.deepEqual(algs(polyCh), ["SHA-256", "MD5"], "Poly (as configured here): SHA-256 first, then MD5");
  const yCh = get(yUrl, yUa);
  assert.deepEqual(algs(yCh), ["MD5"], "Yealink: MD5 only");
  assert.equal(get(polyUrl, polyUa, digestFor(polyCh, polyUrl, "p895", "pw895abcdefgh", 0)).status, 200, "a SHA-256 answer from the Poly phone");
  // A SHA-256 answer (built from Poly's challenge) to the Yealink phone's file: not offered there.
  const sha = digestFor(polyCh, yUrl, "p896", "pw896abcdefgh", 0);
  assert.equal(get(yUrl, yUa, sha).status, 401);
  assert.equal(get(yUrl, yUa, digestFor(yCh, yUrl, "p896", "pw896abcdefgh")).status, 200, "MD5 works for the Yealink phone");
  // A profile with a duplicate or unknown algorithm does not load.
  const bad = loadProfilesWith((p) => ({ ...p, httpDigest: ["MD5", "MD5"] }));
  assert.match(bad.join("\n"), /httpDigest: an algorithm is listed twice/);
  const unknown = loadProfilesWith((p) => ({ ...p, httpDigest: ["SHA-1"] }));
  assert.match(unknown.join("\n"), /httpDigest/);
});

/** Load a copy of the Snom profile with its profile.json changed; the load problems. */
function loadProfilesWith(change: (p: Record<string, unknown>) => Record<string, unknown>): string[] {
  const dir = tempDir("ringedge-profile-");
  try {
    fs.copyFileSync("device-profiles/profile.schema.json", path.join(dir, "profile.schema.json"));
    fs.cpSync("device-profiles/snom", path.join(dir, "snom"), { recursive: true });
    const file = path.join(dir, "snom", "profile.json");
    fs.writeFileSync(file, JSON.stringify(change(JSON.parse(fs.readFileSync(file, "utf8")) as Record<string, unknown>)));
    return loadProfiles(dir).errors.map((e) => e.message);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

test("the bus hears about a conflict (provisioning.conflict) through the service's onConflict", () => {
  // The service wires onConflict to the bus; here the same wiring on a MemoryDirectory.
  const bus = new EventBus();
  const heard: unknown[] = [];
  bus.on("provisioning.conflict", (e) => void heard.push(e));
  const directory = new MemoryDirectory();
  const mac = "001565aabb97";
  directory.add({ deviceId: "dev-897", mac, model: "T46U", extension: "897", displayName: "x", sipUsername: "897", sipPassword: "sip-897-abcdefgh", createdAt: new Date().toISOString(), provisioning: { user: "p897", password: "pw897abcdefgh", token: "t897abcdefghijklmnopq" } });
  const server = new ProvisioningServer({
    profiles, directory, firmware: new FirmwareStore({ dir: undefined }), site, log, bootstrapWindowMs: WINDOW,
    onConflict: (c) => bus.emit("provisioning.conflict", { deviceId: c.deviceId, mac: c.mac, claimedIp: c.claimedIp, ip: c.ip, stage: c.stage, at: Date.parse(c.at) }),
  });
  const get = (source: string) => server.handle({ method: "GET", url: `/${mac}.cfg`, userAgent: `Yealink SIP-T46U 108.86.0.75 ${mac}`, hasBody: false, source, local: { address: "10.0.0.5", port: 8080, scheme: "http" } });
  assert.equal(get("10.0.0.20").status, 200);
  assert.equal(get("10.0.0.20").status, 401, "the claimant asking again unauthenticated: just a challenge");
  assert.equal(heard.length, 0);
  assert.equal(get("10.0.0.30").status, 403);
  assert.deepEqual(heard.map((e) => { const x = e as { mac: string; claimedIp: string; ip: string; stage: string }; return [x.mac, x.claimedIp, x.ip, x.stage]; }), [[mac, "10.0.0.20", "10.0.0.30", "bootstrap"]]);
  assert.equal(directory.phoneByMac(mac)!.sipPassword === "sip-897-abcdefgh", false, "rotated in the directory");
});

// --- the service: settings checked at start, conflict wiring, PnP answer --------------------------

async function serviceSetup(t: { after(fn: () => void | Promise<void>): void }, over: Partial<import("../../agent/config.ts").Settings>) {
  const dir = tempDir("ringedge-trust-svc-");
  const store = await Store.open(dir);
  const bus = new EventBus();
  const rotated: string[] = [];
  const settings = { ...defaultSettings(), httpListen: "127.0.0.1:0", pnpInterface: "127.0.0.1", ...over };
  const service = new ProvisioningService({ settings, store, transactions: {} as never, location: {} as never, sip: { port: 5060, transport: "udp" }, log, bus, credentialsRotated: (id) => void rotated.push(id) });
  t.after(async () => {
    await service.stop();
    await store.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return { dir, store, bus, rotated, service };
}

test("the service refuses device-certificate settings it cannot honour, with a clear message", async (t) => {
  const cases: Array<[Partial<import("../../agent/config.ts").Settings>, RegExp]> = [
    [{ provisioningDeviceCertVendors: ["nokia"] }, /no device profile 'nokia'/],
    [{ provisioningDeviceCertVendors: ["snom"] }, /Snom phones present no factory device certificate \(vendors that do: .*yealink/],
    [{ provisioningDeviceCertVendors: ["yealink"] }, /needs provisioningDeviceCaDir/],
    [{ provisioningDeviceCertVendors: ["yealink"], provisioningDeviceCaDir: os.tmpdir() + "/ringedge-no-such-ca-dir" }, /no device CA certificate for yealink/],
  ];
  for (const [over, message] of cases) {
    const s = await serviceSetup(t, over);
    await assert.rejects(s.service.start(), message, JSON.stringify(over));
    assert.equal(s.service.server, undefined, "nothing listening");
  }
  // CAs present but no HTTPS server to present the certificates to.
  const s = await serviceSetup(t, {});
  fs.mkdirSync(path.join(s.dir, "ca"));
  makeCa(s.dir, "y");
  fs.copyFileSync(path.join(s.dir, "y.pem"), path.join(s.dir, "ca", "yealink.pem"));
  const noHttps = await serviceSetup(t, { provisioningDeviceCertVendors: ["yealink"], provisioningDeviceCaDir: path.join(s.dir, "ca") });
  await assert.rejects(noHttps.service.start(), /needs httpsListen/);
});

test("the service: a conflict reaches the bus and drops the phone's registrations; PnP hands out the base URL only", async (t) => {
  const s = await serviceSetup(t, {});
  await s.service.start();
  const mac = "001565aabb98";
  const added = s.store.addDevice({ username: "898", password: "sip-898-abcdefgh", kind: "physical", mac, model: "T46U" });
  assert.ok(added.ok);
  const heard: Array<{ mac: string; ip: string; claimedIp: string }> = [];
  s.bus.on("provisioning.conflict", (e) => void heard.push(e));
  const url = s.service.pnpUrl({ mac, source: { address: "127.0.0.1", port: 5060 } });
  const port = s.service.server!.addresses()[0]!.port;
  assert.equal(url, `http://127.0.0.1:${port}/`, "no token, no per-device path");
  assert.equal(s.store.getDevice(added.value.id)!.provisioning!.bootstrapClosedAt, undefined, "and the PnP answer uses up nothing");
  const get = (source: string) => s.service.server!.handle({ method: "GET", url: `/${mac}.cfg`, userAgent: `Yealink SIP-T46U 108.86.0.75 ${mac}`, hasBody: false, source, local: { address: "127.0.0.1", port, scheme: "http" } });
  assert.equal(get("10.0.0.1").status, 200);
  assert.equal(get("10.0.0.2").status, 403);
  assert.deepEqual(heard.map((e) => [e.mac, e.claimedIp, e.ip]), [[mac, "10.0.0.1", "10.0.0.2"]]);
  assert.deepEqual(s.rotated, [added.value.id], "the agent is told to drop registrations made with the old password");
  assert.notEqual(s.store.getDevice(added.value.id)!.password, "sip-898-abcdefgh");
});
