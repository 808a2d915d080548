// The provisioning server's decisions, through handle() (no sockets): every vendor's boot
// sequence with real User-Agents, bootstrap without SIP password then full config behind Digest
// or the URL token, unknown MACs recorded as seen, refusals (traversal, size, methods, bodies)
// and the 401/404 burst limit. One test goes over real HTTP and HTTPS on 127.0.0.1.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import https from "node:https";
import os from "node:os";
import path from "node:path";
import { computeAuthorization } from "../../agent/sip/digest.ts";
import { createLogger } from "../../agent/log.ts";
import { MemoryDirectory, type PhoneRecord } from "../../provisioning/directory.ts";
import { FirmwareStore } from "../../provisioning/firmware.ts";
import { loadProfiles, modelToken, resolveModel } from "../../provisioning/profiles.ts";
import { StoreDirectory } from "../../provisioning/store-directory.ts";
import { SiteService } from "../../agent/site/site.ts";
import { Store } from "../../agent/store/store.ts";
import { ProvisioningServer, type ProvisioningRequest, type ProvisioningResponse } from "../../provisioning/server.ts";
import { VENDORS, parsesAs, yealinkKv } from "./provisioning-fixtures.ts";
import { tempDir } from "../tmpdir.ts";

const { profiles } = loadProfiles("device-profiles");
const logs: string[] = [];
const log = createLogger("debug", "test", (l) => void logs.push(l));

const T0 = Date.parse("2025-03-01T10:00:00Z");

function phone(mac: string, model: string, ext: string, over: Partial<PhoneRecord> = {}): PhoneRecord {
  return {
    deviceId: `dev-${ext}`,
    mac,
    model,
    extension: ext,
    displayName: `Phone ${ext}`,
    sipUsername: ext,
    sipPassword: `sip-pw-${ext}-Xy9`,
    provisioning: { user: `prov-${mac}`, password: `provpw${ext}abcdef`, token: `tok${ext}abcdefghijklmnopqrstu` },
    createdAt: new Date(T0).toISOString(),
    ...over,
  };
}

function setup(opts: { firmwareDir?: string; burst?: { max: number; windowMs: number; blockMs: number } } = {}) {
  let now = T0 + 60_000;
  const dir = new MemoryDirectory(() => now);
  const server = new ProvisioningServer({
    profiles,
    directory: dir,
    firmware: new FirmwareStore({ dir: opts.firmwareDir, now: () => now }),
    site: () => ({ sipPort: 5060, transport: "udp", ntpServer: "pool.ntp.org", timeZone: "Europe/Berlin", resyncIntervalMin: 1440 }),
    log,
    bootstrapWindowMs: 3600_000,
    burst: opts.burst ?? { max: 20, windowMs: 10_000, blockMs: 60_000 },
    now: () => now,
  });
  const get = (url: string, over: Partial<ProvisioningRequest> = {}): ProvisioningResponse =>
    server.handle({ method: "GET", url, hasBody: false, source: "10.0.0.20", local: { address: "10.0.0.5", port: 8080, scheme: "http" }, ...over });
  return { dir, server, get, advance: (ms: number) => void (now += ms) };
}

function challengeOf(res: ProvisioningResponse): string {
  const h = res.headers["www-authenticate"];
  const first = Array.isArray(h) ? h[0] : h;
  assert.ok(first, "a WWW-Authenticate challenge");
  return first;
}

function authorize(res: ProvisioningResponse, url: string, username: string, password: string): string {
  const a = computeAuthorization(challengeOf(res), { method: "GET", uri: url, username, password });
  assert.equal(typeof a, "string");
  return a as string;
}

for (const v of VENDORS) {
  test(`${v.vendor} ${v.model}: boot sequence, bootstrap without SIP password, then full config behind Digest`, () => {
    const { dir, get } = setup();
    const ua = { userAgent: v.userAgent };
    // Before adoption: the per-device config is 404 and the phone is listed as seen.
    const unknown = get(`/${v.config}`, ua);
    assert.equal(unknown.status, 404);
    assert.equal(dir.seen.get(v.mac)?.vendor, v.vendor, "recorded as seen with its vendor");
    assert.equal(dir.seen.get(v.mac)?.ip, "10.0.0.20");

    const p = phone(v.mac, v.model, "201");
    dir.add(p);
    for (const f of v.before) {
      const r = get(`/${f.file}`, ua);
      assert.equal(r.status, f.status, `${f.file}: ${r.body}`);
      if (r.status === 200) parsesAs(v.vendor, r.body!);
    }
    // First boot: bootstrap, no SIP password, carries the per-device provisioning user.
    const boot = get(`/${v.config}`, ua);
    assert.equal(boot.status, 200, boot.body);
    assert.equal(boot.headers["cache-control"], "no-store");
    const bv = v.read(boot.body!);
    assert.equal(bv.sipPassword, undefined, "bootstrap has no SIP password");
    assert.ok(!boot.body!.includes(p.sipPassword), "SIP password nowhere in the bootstrap");
    assert.equal(bv.provisioningUser, p.provisioning!.user);
    // Next fetch without credentials: a challenge, not the bootstrap again.
    const again = get(`/${v.config}`, ua);
    assert.equal(again.status, 401);
    const url = `/${v.config}`;
    const full = get(url, { ...ua, authorization: authorize(again, url, p.provisioning!.user, p.provisioning!.password) });
    assert.equal(full.status, 200, full.body);
    const fv = v.read(full.body!);
    assert.equal(fv.sipPassword, p.sipPassword);
    assert.equal(fv.sipServer, "10.0.0.5", "SIP server = the address the phone reached us on");
    assert.equal(fv.sipUser, "201");
    for (const f of v.after) {
      const r = get(`/${f.file}`, ua);
      assert.equal(r.status, f.status, `${f.file}: ${r.body}`);
      if (r.status === 200) parsesAs(v.vendor, r.body!);
    }
  });
}

test("wrong Digest credentials and another phone's credentials get 401; the token path unlocks only its own phone", () => {
  const { dir, get } = setup();
  const a = phone("001565aabb11", "T46U", "301");
  const b = phone("001565aabb12", "T46U", "302");
  dir.add(a);
  dir.add(b);
  const ua = { userAgent: "Yealink SIP-T46U 108.86.0.75 00:15:65:aa:bb:11" };
  const url = "/001565aabb11.cfg";
  assert.equal(get(url, ua).status, 200, "bootstrap");
  const ch = get(url, ua);
  assert.equal(ch.status, 401);
  assert.equal(get(url, { ...ua, authorization: authorize(ch, url, a.provisioning!.user, "wrong") }).status, 401);
  assert.equal(get(url, { ...ua, authorization: authorize(ch, url, b.provisioning!.user, b.provisioning!.password) }).status, 401, "B's credentials do not open A's config");
  const viaToken = get(`/p/${a.provisioning!.token}/001565aabb11.cfg`, ua);
  assert.equal(viaToken.status, 200);
  assert.equal(yealinkKv(viaToken.body!).get("account.1.password"), a.sipPassword);
  assert.equal(get(`/p/${b.provisioning!.token}/001565aabb11.cfg`, ua).status, 404, "B's token does not open A's config");
  assert.equal(get(`/p/${"x".repeat(30)}/001565aabb11.cfg`, ua).status, 404);
});

test("a MAC alone never unlocks credentials: bootstrap is served once and only within the window", () => {
  const { dir, get, advance } = setup();
  dir.add(phone("001565aabb21", "T46U", "401"));
  const ua = { userAgent: "Yealink SIP-T46U 108.86.0.75 00:15:65:aa:bb:21" };
  assert.equal(get("/001565aabb21.cfg", { ...ua, method: "HEAD" }).status, 200, "HEAD does not consume the bootstrap");
  assert.equal(get("/001565aabb21.cfg", ua).status, 200);
  assert.equal(get("/001565aabb21.cfg", ua).status, 401, "second unauthenticated fetch: challenge");
  // A phone added long ago never gets a bootstrap.
  dir.add(phone("001565aabb22", "T46U", "402"));
  advance(2 * 3600_000);
  assert.equal(get("/001565aabb22.cfg", { userAgent: "Yealink SIP-T46U 108.86.0.75 00:15:65:aa:bb:22" }).status, 401);
});

test("unknown MAC: 404, listed as seen with model, firmware, IP and times; common files still served", () => {
  const { dir, get } = setup();
  const ua = { userAgent: "Yealink SIP-T54W 96.86.0.70 001565ccdd01" };
  assert.equal(get("/001565ccdd01.boot", ua).status, 404);
  assert.equal(get("/y000000000000.boot", ua).status, 200, "fallback boot file loads only site settings");
  assert.equal(get("/001565ccdd01.cfg", ua).status, 404);
  const s = dir.seen.get("001565ccdd01");
  assert.ok(s);
  assert.equal(s.model, "yealink/T54W", "a known model is kept canonical");
  assert.equal(s.firmware, "96.86.0.70");
  assert.equal(s.requests, 3);
  assert.ok(logs.some((l) => /unknown MAC, waiting for adoption/.test(l) && /001565ccdd01/.test(l)));
});

test("refusals: traversal in every spelling, oversized target, body, methods; each logged", () => {
  const { get } = setup();
  const before = logs.length;
  for (const url of ["/../etc/passwd", "/%2e%2e/etc/passwd", "/%2E%2E%2Fetc", "/firmware/..%2fpins.json", "/a\\..\\b", "/firmware/../../etc/passwd", "//etc/passwd", "/.hidden", "/%00.cfg", "/p/tok/../x.cfg", "relative.cfg"]) {
    assert.equal(get(url).status, 400, url);
  }
  assert.equal(get("/" + "a".repeat(1100)).status, 414);
  assert.equal(get("/y000000000108.cfg", { hasBody: true }).status, 413);
  for (const m of ["POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PROPFIND"]) {
    const r = get("/y000000000108.cfg", { method: m });
    assert.equal(r.status, 405, m);
    assert.equal(r.headers.allow, "GET, HEAD");
  }
  const refusals = logs.slice(before).filter((l) => /provisioning request refused/.test(l));
  assert.equal(refusals.length, 11 + 1 + 1 + 6, "every refusal logged");
});

test("a burst of 404s across many MACs blocks the source (429), other sources unaffected, block expires", () => {
  const { dir, get, advance } = setup({ burst: { max: 20, windowMs: 10_000, blockMs: 30_000 } });
  dir.add(phone("001565aabb31", "T46U", "501"));
  let statuses: number[] = [];
  for (let i = 0; i < 40; i++) {
    const mac = `001565ee${i.toString(16).padStart(4, "0")}`;
    statuses.push(get(`/${mac}.cfg`, { userAgent: `Yealink SIP-T46U 108.86.0.75 ${mac}` }).status);
  }
  assert.equal(statuses.filter((s) => s === 404).length, 20);
  assert.equal(statuses.filter((s) => s === 429).length, 20);
  // Even a good request from the blocked source is refused while blocked.
  const blocked = get("/001565aabb31.cfg", { userAgent: "Yealink SIP-T46U 108.86.0.75 001565aabb31" });
  assert.equal(blocked.status, 429);
  assert.ok(Number(blocked.headers["retry-after"]) > 0);
  assert.equal(get("/001565aabb31.cfg", { userAgent: "Yealink SIP-T46U 108.86.0.75 001565aabb31", source: "10.0.0.21" }).status, 200, "another phone is served");
  advance(31_000);
  statuses = [get("/y000000000108.cfg", { userAgent: "Yealink SIP-T46U 108.86.0.75 001565aabb31" }).status];
  assert.equal(statuses[0], 200, "block over: back to normal answers");
  assert.ok(logs.some((l) => /blocked after a burst/.test(l)));
});

test("wrong passwords in a burst are rate-limited too (brute force against Digest)", () => {
  const { dir, get } = setup({ burst: { max: 5, windowMs: 10_000, blockMs: 60_000 } });
  const p = phone("001565aabb41", "T46U", "601", { createdAt: new Date(T0 - 7200_000).toISOString() });
  dir.add(p);
  const url = "/001565aabb41.cfg";
  const seen: number[] = [];
  for (let i = 0; i < 8; i++) {
    const ch = get(url);
    if (ch.status !== 401) {
      seen.push(ch.status);
      continue;
    }
    seen.push(get(url, { authorization: authorize(ch, url, p.provisioning!.user, `guess${i}`) }).status);
  }
  assert.ok(seen.includes(429), `rate limited: ${seen.join(",")}`);
});

test("firmware: served from the directory under /firmware/, configs name only installed pinned images, site pins override", () => {
  const fwDir = tempDir("ringedge-fw-");
  fs.writeFileSync(path.join(fwDir, "T46U-108.86.0.75.rom"), Buffer.alloc(1000, 7));
  fs.writeFileSync(path.join(os.tmpdir(), "outside-secret.txt"), "secret");
  fs.symlinkSync(path.join(os.tmpdir(), "outside-secret.txt"), path.join(fwDir, "link.rom"));
  try {
    const { get } = setup({ firmwareDir: fwDir });
    const r = get("/firmware/T46U-108.86.0.75.rom");
    assert.equal(r.status, 200);
    assert.equal(r.file?.size, 1000);
    assert.equal(get("/firmware/link.rom").status, 404, "a link out of the directory is not served");
    assert.equal(get("/firmware/missing.rom").status, 404);
    const common = yealinkKv(get("/y000000000108.cfg", { userAgent: "Yealink SIP-T46U 108.86.0.75 001565aabb51" }).body!);
    assert.equal(common.get("static.firmware.url"), "http://10.0.0.5:8080/firmware/T46U-108.86.0.75.rom");
    const t54 = yealinkKv(get("/y000000000096.cfg", { userAgent: "Yealink SIP-T54W 96.86.0.70 001565aabb52" }).body!);
    assert.equal(t54.get("static.firmware.url"), undefined, "T54W's image is not installed: no firmware URL");
  } finally {
    fs.rmSync(fwDir, { recursive: true, force: true });
    fs.rmSync(path.join(os.tmpdir(), "outside-secret.txt"), { force: true });
  }
  const fwDir2 = tempDir("ringedge-fw-");
  try {
    fs.writeFileSync(path.join(fwDir2, "T46U-108.87.0.1.rom"), "x");
    fs.writeFileSync(path.join(fwDir2, "pins.json"), JSON.stringify({ T46U: { file: "T46U-108.87.0.1.rom", version: "108.87.0.1" } }));
    const { get } = setup({ firmwareDir: fwDir2 });
    const common = yealinkKv(get("/y000000000108.cfg", { userAgent: "Yealink SIP-T46U 108.86.0.75 001565aabb51" }).body!);
    assert.equal(common.get("static.firmware.url"), "http://10.0.0.5:8080/firmware/T46U-108.87.0.1.rom");
    // The canonical key (any case) names the model too, and wins over a bare one.
    fs.writeFileSync(path.join(fwDir2, "T46U-108.87.0.2.rom"), "y");
    fs.writeFileSync(path.join(fwDir2, "pins.json"), JSON.stringify({ T46U: { file: "T46U-108.87.0.1.rom", version: "108.87.0.1" }, "Yealink/T46U": { file: "T46U-108.87.0.2.rom", version: "108.87.0.2" } }));
    const { get: get2 } = setup({ firmwareDir: fwDir2 });
    const common2 = yealinkKv(get2("/y000000000108.cfg", { userAgent: "Yealink SIP-T46U 108.86.0.75 001565aabb51" }).body!);
    assert.equal(common2.get("static.firmware.url"), "http://10.0.0.5:8080/firmware/T46U-108.87.0.2.rom");
  } finally {
    fs.rmSync(fwDir2, { recursive: true, force: true });
  }
});

function request(url: string, opts: https.RequestOptions & { body?: string } = {}): Promise<{ status: number; body: string; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const mod = url.startsWith("https:") ? https : http;
    const req = mod.request(url, { ...opts, timeout: 5000 }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
    });
    req.on("error", reject);
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.end(opts.body);
  });
}

test("over real HTTP and HTTPS on 127.0.0.1: served, oversized headers refused with 431", async (t) => {
  const dir = tempDir("ringedge-tls-");
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", path.join(dir, "key.pem"), "-out", path.join(dir, "cert.pem"), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"], { stdio: "ignore" });
  const directory = new MemoryDirectory();
  directory.add(phone("001565aabb61", "T46U", "701", { createdAt: new Date().toISOString() }));
  const server = new ProvisioningServer({
    profiles,
    directory,
    firmware: new FirmwareStore({ dir: undefined }),
    site: () => ({ sipPort: 5060, transport: "udp", ntpServer: "pool.ntp.org", timeZone: "UTC", resyncIntervalMin: 60 }),
    log,
    bootstrapWindowMs: 3600_000,
    http: { host: "127.0.0.1", port: 0 },
    https: { host: "127.0.0.1", port: 0, cert: fs.readFileSync(path.join(dir, "cert.pem")), key: fs.readFileSync(path.join(dir, "key.pem")) },
  });
  await server.start();
  t.after(() => server.stop());
  const addrs = server.addresses();
  const h = addrs.find((a) => a.scheme === "http")!;
  const s = addrs.find((a) => a.scheme === "https")!;
  const ua = { "user-agent": "Yealink SIP-T46U 108.86.0.75 00:15:65:aa:bb:61" };
  const boot = await request(`https://127.0.0.1:${s.port}/001565aabb61.cfg`, { headers: ua, ca: fs.readFileSync(path.join(dir, "cert.pem")) });
  assert.equal(boot.status, 200);
  assert.equal(yealinkKv(boot.body).get("static.auto_provision.server.url"), `https://127.0.0.1:${s.port}/`, "URLs point back over HTTPS");
  const challenged = await request(`http://127.0.0.1:${h.port}/001565aabb61.cfg`, { headers: ua });
  assert.equal(challenged.status, 401);
  assert.ok(Array.isArray(challenged.headers["www-authenticate"]) || typeof challenged.headers["www-authenticate"] === "string");
  const big = await request(`http://127.0.0.1:${h.port}/y000000000108.cfg`, { headers: { ...ua, "x-pad": "a".repeat(9000) } });
  assert.equal(big.status, 431);
  const post = await request(`http://127.0.0.1:${h.port}/y000000000108.cfg`, { method: "POST", headers: ua, body: "x=1" });
  assert.equal(post.status, 405);
});

test("every vendor: a phone stored with its canonical model (<vendor>/<model>) gets its config; another vendor's model gets 404 with the reason", () => {
  for (const v of VENDORS) {
    const { dir, get } = setup();
    dir.add(phone(v.mac, `${v.vendor}/${v.model}`, "201"));
    const ua = { userAgent: v.userAgent };
    const boot = get(`/${v.config}`, ua);
    assert.equal(boot.status, 200, `${v.vendor}: ${boot.body}`);
    assert.equal(v.read(boot.body!).provisioningUser, `prov-${v.mac}`);
    const other = VENDORS.find((x) => x.vendor !== v.vendor)!;
    const { dir: dir2, get: get2 } = setup();
    dir2.add(phone(v.mac, `${other.vendor}/${other.model}`, "202"));
    logs.length = 0;
    assert.equal(get2(`/${v.config}`, ua).status, 404);
    assert.ok(logs.some((l) => l.includes(`registered as model '${other.vendor}/${other.model}'`)), `${v.vendor}: the log says why`);
  }
});

/** A User-Agent of `vendor`'s phones (the fixture's), for another model and MAC. */
function userAgentFor(vendor: string, modelId: string, mac: string): string {
  const f = VENDORS.find((x) => x.vendor === vendor);
  assert.ok(f, `a User-Agent fixture for vendor ${vendor}`);
  const colons = (m: string): string => m.match(/../g)!.join(":");
  let ua = f.userAgent;
  for (const [from, to] of [[f.mac, mac], [f.mac.toUpperCase(), mac.toUpperCase()], [colons(f.mac), colons(mac)]] as const) ua = ua.split(from).join(to);
  return ua.split(f.model).join(modelId);
}

test("examples/site.json: every desk phone's model resolves to a vendor profile and the server serves its config (not 404)", async () => {
  const example = JSON.parse(fs.readFileSync(new URL("../../examples/site.json", import.meta.url), "utf8")) as { devices: Array<{ id: string; kind: string; mac?: string; model?: string }> };
  const desk = example.devices.filter((d) => d.kind === "physical");
  assert.ok(desk.length >= 7);
  const dataDir = tempDir("ringedge-example-");
  const store = await Store.open(dataDir);
  try {
    const applied = await new SiteService({ store }).apply(example, "file");
    assert.ok(applied.ok, JSON.stringify(applied));
    const server = new ProvisioningServer({
      profiles,
      directory: new StoreDirectory(store),
      firmware: new FirmwareStore({ dir: undefined }),
      site: () => ({ sipPort: 5060, transport: "udp", ntpServer: "pool.ntp.org", timeZone: "UTC", resyncIntervalMin: 1440 }),
      log,
      bootstrapWindowMs: 3600_000,
      burst: { max: 100, windowMs: 10_000, blockMs: 60_000 },
    });
    for (const d of desk) {
      assert.ok(d.mac && d.model, `${d.id} has a MAC and a model`);
      const found = resolveModel(profiles, d.model);
      assert.ok(found.ok, `${d.id}: ${found.ok ? "" : found.message}`);
      assert.equal(found.ref, d.model, `${d.id}: the example writes the canonical form`);
      const stored = store.getDevice(d.id);
      assert.equal(stored?.model, found.ref);
      const file = found.profile.files.find((f) => f.kind === "mac-config" && f.template !== undefined);
      assert.ok(file, `${found.profile.vendor} serves a per-device config`);
      const mac = stored!.mac!;
      const name = file.pattern.replace(/\{([A-Za-z]+)\}/g, (_, n: string) => (n === "mac" ? mac : n === "MAC" ? mac.toUpperCase() : modelToken(found.model, n)!));
      const ua = userAgentFor(found.profile.vendor, found.model.id, mac);
      const boot = server.handle({ method: "GET", url: `/${name}`, hasBody: false, source: "10.0.0.21", local: { address: "10.0.0.5", port: 8080, scheme: "http" }, userAgent: ua });
      assert.equal(boot.status, 200, `${d.id} (${d.model}) /${name}: ${boot.body}`);
      parsesAs(found.profile.vendor, boot.body!);
      const full = server.handle({ method: "GET", url: `/p/${stored!.provisioning!.token}/${name}`, hasBody: false, source: "10.0.0.21", local: { address: "10.0.0.5", port: 8080, scheme: "http" }, userAgent: ua });
      assert.equal(full.status, 200, `${d.id}: full config by token`);
      assert.ok(full.body!.includes(stored!.password), `${d.id}: the full config carries its SIP password`);
    }
  } finally {
    await store.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
});
