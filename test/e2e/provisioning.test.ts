// Phone provisioning end to end against the real agent process: an installer imports a CSV
// (good and bad rows), each vendor's phone fetches its boot sequence over HTTP with its real
// User-Agent (bootstrap without SIP password, then the full config behind Digest), an unknown
// phone is seen and adopted, firmware is served and reported, PnP answers a multicast
// SUBSCRIBE on loopback, a SIPp phone gets a check-sync NOTIFY, and probes are refused:
// traversal, and a burst of unknown MACs (last: it blocks 127.0.0.1 for a while).
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import dgram from "node:dgram";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { computeAuthorization } from "../../agent/sip/digest.ts";
import { getHeader, parseDatagram } from "../../agent/sip/message.ts";
import { PNP_MULTICAST_GROUP } from "../../provisioning/pnp.ts";
import { loadProfiles } from "../../provisioning/profiles.ts";
import { VENDORS, parsesAs } from "../unit/provisioning-fixtures.ts";
import { phoneGet as get } from "./phone-http.ts";
import { freePort, runSipp, startAgent, tempDir, until, writeUsersCsv, type RunningAgent } from "./harness.ts";

const { profiles } = loadProfiles("device-profiles");


/** A raw request line (the client library would not send some of these as written). */
function raw(port: number, line: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, "127.0.0.1", () => s.write(`${line}\r\nHost: x\r\nConnection: close\r\n\r\n`));
    let out = "";
    s.setEncoding("latin1");
    s.on("data", (d: string) => (out += d));
    s.on("end", () => resolve(out));
    s.on("error", reject);
    s.setTimeout(5000, () => s.destroy(new Error("timeout")));
  });
}

async function cliJson<T>(agent: RunningAgent, args: string[], expectCode = 0): Promise<T> {
  const r = await agent.cli([...args, "--json"]);
  assert.equal(r.code, expectCode, `ringedge ${args.join(" ")}: ${r.stderr}${r.stdout}`);
  return JSON.parse(r.stdout) as T;
}

describe("provisioning end to end", () => {
  let agent: RunningAgent;
  let http: number;
  let pnpPort: number;
  const dir = tempDir("ringedge-prov-e2e-");
  const fwDir = path.join(dir, "firmware");

  before(async () => {
    fs.mkdirSync(fwDir);
    fs.writeFileSync(path.join(fwDir, "T46U-108.86.0.75.rom"), Buffer.alloc(4096, 0x5a));
    pnpPort = await freePort();
    agent = await startAgent({
      env: {
        RINGEDGE_AUTH_ALGORITHMS: "MD5,SHA-256",
        RINGEDGE_FIRMWARE_DIR: fwDir,
        RINGEDGE_PNP_ENABLED: "true",
        RINGEDGE_PNP_INTERFACE: "127.0.0.1",
        RINGEDGE_PNP_PORT: String(pnpPort),
        RINGEDGE_KEEPALIVE_INTERVAL_S: "3600",
        RINGEDGE_SIP_T1_MS: "100",
      },
    });
    const line = await agent.waitForLog(/provisioning listening .*scheme=http /);
    http = Number(/address=127\.0\.0\.1:(\d+)/.exec(line)![1]);
  });
  after(async () => {
    await agent?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test("CSV import: bad rows reported line by line and nothing applied; dry run; --allow-partial applies the good rows", async () => {
    const csv = path.join(dir, "phones.csv");
    const rows = VENDORS.map((v, i) => `${v.mac},${v.model},${201 + i},Desk ${i + 1},`);
    fs.writeFileSync(csv, ["mac,model,extension,name,owner", ...rows, "zz:zz,T46U,290,Bad mac,", "001565aabbf0,NoSuchPhone,291,Bad model,", `${VENDORS[0]!.mac},T46U,292,Duplicate MAC,`].join("\n") + "\n");
    const refused = await cliJson<{ applied: number; errors: Array<{ line: number; message: string }> }>(agent, ["phone", "import", csv], 1);
    assert.equal(refused.applied, 0);
    assert.deepEqual(refused.errors.map((e) => e.line), [8, 9, 10]);
    assert.match(refused.errors[2]!.message, /also on line 2/);
    assert.deepEqual(await cliJson(agent, ["phone", "list"]), [], "nothing applied");
    const text = await agent.cli(["phone", "import", csv, "--dry-run"]);
    assert.equal(text.code, 1);
    assert.match(text.stdout, /line 2: ok +001565aabb01 yealink\/T46U ext 201/, "bare model ids are read canonical");
    assert.match(text.stdout, /line 8: error \(mac\): 'zz:zz' is not a phone's MAC/);
    assert.match(text.stdout, /dry run: 6 of 9 rows valid/);
    const partial = await cliJson<{ applied: number }>(agent, ["phone", "import", csv, "--allow-partial"], 1);
    assert.equal(partial.applied, 6);
    const list = await cliJson<Array<{ mac: string; extension: string; secrets?: unknown }>>(agent, ["phone", "list"]);
    assert.equal(list.length, 6);
    assert.ok(list.every((p) => p.secrets === undefined), "no secrets in the list");
    const again = await cliJson<{ errors: Array<{ message: string }> }>(agent, ["phone", "import", csv, "--dry-run"], 1);
    assert.ok(again.errors.some((e) => /already phone '201'/.test(e.message)), "store-side duplicates reported");
    const exported = await agent.cli(["phone", "export", "--csv"]);
    assert.match(exported.stdout, /^mac,model,extension,name,owner\r\n001565aabb01,yealink\/T46U,201,Desk 1,\r\n/);
    // The exported file re-imports unchanged: every row valid but for the phones being there already.
    const back = path.join(dir, "exported.csv");
    fs.writeFileSync(back, exported.stdout);
    const reimport = await cliJson<{ rows: number; errors: Array<{ message: string }> }>(agent, ["phone", "import", back, "--dry-run"], 1);
    assert.equal(reimport.rows, 6);
    assert.ok(reimport.errors.every((e) => /already phone/.test(e.message)), JSON.stringify(reimport.errors));
  });

  for (const v of VENDORS) {
    test(`${v.vendor}: boot sequence with the real User-Agent, bootstrap, then full config behind Digest`, async () => {
      const ua = { "user-agent": v.userAgent };
      const show = await cliJson<{ extension: string; provisioningUser: string; secrets: { sipPassword: string; provisioningPassword: string } }>(agent, ["phone", "show", v.mac, "--show-secrets"]);
      for (const f of v.before) {
        const r = await get(http, `/${f.file}`, ua);
        assert.equal(r.status, f.status, `${f.file}`);
        if (r.status === 200) parsesAs(v.vendor, r.body);
      }
      const boot = await get(http, `/${v.config}`, ua);
      assert.equal(boot.status, 200);
      assert.equal(v.read(boot.body).sipPassword, undefined);
      assert.ok(!boot.body.includes(show.secrets.sipPassword), "no SIP password in the bootstrap");
      assert.equal(v.read(boot.body).provisioningUser, show.provisioningUser);
      const ch = await get(http, `/${v.config}`, ua);
      assert.equal(ch.status, 401);
      // The vendor's HTTP client, not the SIP authAlgorithms setting (MD5,SHA-256 here), picks them.
      assert.deepEqual(ch.challenges.map((c) => /algorithm=([A-Za-z0-9-]+)/.exec(c)?.[1]), profiles.get(v.vendor)!.httpDigest, "one challenge per algorithm of the profile's httpDigest, in its order (RFC 8760 §2.4)");
      const challenge = ch.challenges[0]!;
      assert.match(challenge, /realm="ringedge-provisioning"/);
      const wrong = computeAuthorization(challenge, { method: "GET", uri: `/${v.config}`, username: show.provisioningUser, password: "guess" }) as string;
      assert.equal((await get(http, `/${v.config}`, { ...ua, authorization: wrong })).status, 401);
      const good = computeAuthorization(challenge, { method: "GET", uri: `/${v.config}`, username: show.provisioningUser, password: show.secrets.provisioningPassword, nc: 2 }) as string;
      const full = await get(http, `/${v.config}`, { ...ua, authorization: good });
      assert.equal(full.status, 200);
      const values = v.read(full.body);
      assert.equal(values.sipPassword, show.secrets.sipPassword);
      assert.equal(values.sipUser, show.extension);
      assert.equal(values.sipServer, "127.0.0.1");
      for (const f of v.after) {
        const r = await get(http, `/${f.file}`, ua);
        assert.equal(r.status, f.status, f.file);
        if (r.status === 200) parsesAs(v.vendor, r.body);
      }
    });
  }

  test("unknown MAC: 404, listed by 'phone seen', adopted with one command, then bootstrapped", async () => {
    const ua = { "user-agent": "Yealink SIP-T54W 96.86.0.70 00:15:65:12:34:56" };
    assert.equal((await get(http, "/001565123456.boot", ua)).status, 404);
    assert.equal((await get(http, "/001565123456.cfg", ua)).status, 404);
    const seen = await cliJson<Array<{ mac: string; model: string; firmware: string; ip: string; requests: number }>>(agent, ["phone", "seen"]);
    const s = seen.find((x) => x.mac === "001565123456");
    assert.ok(s);
    assert.equal(s.model, "yealink/T54W");
    assert.equal(s.ip, "127.0.0.1");
    assert.equal(s.requests, 2);
    assert.ok(!seen.some((x) => x.mac === VENDORS[0]!.mac), "adopted phones are not waiting");
    const adopted = await cliJson<{ model: string; extension: string }>(agent, ["phone", "adopt", "00:15:65:12:34:56", "--extension", "280"]);
    assert.equal(adopted.model, "yealink/T54W", "model taken from what the phone told, canonical");
    assert.equal((await get(http, "/001565123456.cfg", ua)).status, 200);
    await agent.waitForLog(/unknown MAC, waiting for adoption.*001565123456|001565123456.*unknown MAC/);
  });

  test("firmware: served under /firmware/, configs name it, report shows running vs pinned", async () => {
    const r = await get(http, "/firmware/T46U-108.86.0.75.rom");
    assert.equal(r.status, 200);
    assert.equal(r.body.length, 4096);
    assert.equal((await get(http, "/firmware/nope.rom")).status, 404);
    const report = await cliJson<Array<{ mac: string; running?: string; pinned?: string; status: string; installed: boolean }>>(agent, ["phone", "firmware"]);
    const t46 = report.find((x) => x.mac === VENDORS[0]!.mac)!;
    assert.deepEqual([t46.running, t46.pinned, t46.status, t46.installed], ["108.86.0.75", "108.86.0.75", "current", true]);
    const t54 = report.find((x) => x.mac === "001565123456")!;
    assert.equal(t54.installed, false);
  });

  test("PnP: a multicast ua-profile SUBSCRIBE gets 200 and a NOTIFY with the server's URL only (no credential); the phone bootstraps there", async (t) => {
    const add = await agent.cli(["phone", "add", "000413aabbee", "--model", "D735", "--extension", "270"]);
    assert.equal(add.code, 0, add.stderr);
    const sock = dgram.createSocket("udp4");
    await new Promise<void>((r) => sock.bind(0, "127.0.0.1", () => r()));
    t.after(() => new Promise<void>((r) => sock.close(() => r())));
    sock.setMulticastInterface("127.0.0.1");
    sock.setMulticastLoopback(true);
    const port = sock.address().port;
    const got: Array<ReturnType<typeof parseDatagram>> = [];
    sock.on("message", (b) => got.push(parseDatagram(b)));
    const msg = [
      "SUBSCRIBE sip:MAC%3a000413AABBEE@224.0.1.75 SIP/2.0",
      `Via: SIP/2.0/UDP 127.0.0.1:${port};branch=z9hG4bK-e2e-pnp;rport`,
      "From: <sip:MAC%3a000413AABBEE@224.0.1.75>;tag=e2e",
      "To: <sip:MAC%3a000413AABBEE@224.0.1.75>",
      "Call-ID: e2e-pnp@127.0.0.1",
      "CSeq: 1 SUBSCRIBE",
      `Contact: <sip:127.0.0.1:${port}>`,
      'Event: ua-profile;profile-type="device";vendor="snom";model="snomD735";version="10.1.159.12"',
      "Accept: application/url",
      "Expires: 0",
      "Max-Forwards: 70",
      "Content-Length: 0",
      "",
      "",
    ].join("\r\n");
    sock.send(msg, pnpPort, PNP_MULTICAST_GROUP);
    const notify = await until(() => got.map((g) => (g.ok && g.message.kind === "request" && g.message.method === "NOTIFY" ? g.message : undefined)).find(Boolean), 5000, 20);
    assert.ok(got.some((g) => g.ok && g.message.kind === "response" && g.message.status === 200));
    assert.equal(getHeader(notify, "content-type"), "application/url");
    const url = notify.body.toString();
    assert.equal(url, `http://127.0.0.1:${http}/`, "the base URL: a SUBSCRIBE naming a MAC gets no token");
    const cfg = await get(http, "/snomD735-000413AABBEE.htm", { "user-agent": "Mozilla/4.0 (compatible; snomD735-SIP 10.1.159.12 1.1.5 000413AABBEE)" });
    assert.equal(cfg.status, 200);
    assert.doesNotMatch(cfg.body, /<user_pass/, "the bootstrap: provisioning credentials, no SIP password");
    assert.match(cfg.body, /<http_client_user[^>]*>[^<]+<\/http_client_user>/);
  });

  test("PnP from an unknown phone: listed by 'phone seen' with its announced model, canonical; adopted without --model", async (t) => {
    const sock = dgram.createSocket("udp4");
    await new Promise<void>((r) => sock.bind(0, "127.0.0.1", () => r()));
    t.after(() => new Promise<void>((r) => sock.close(() => r())));
    sock.setMulticastInterface("127.0.0.1");
    sock.setMulticastLoopback(true);
    const port = sock.address().port;
    const msg = [
      "SUBSCRIBE sip:MAC001565abcdef@224.0.1.75 SIP/2.0",
      `Via: SIP/2.0/UDP 127.0.0.1:${port};branch=z9hG4bK-e2e-pnp-seen;rport`,
      "From: <sip:MAC001565abcdef@224.0.1.75>;tag=e2e-seen",
      "To: <sip:MAC001565abcdef@224.0.1.75>",
      "Call-ID: e2e-pnp-seen@127.0.0.1",
      "CSeq: 1 SUBSCRIBE",
      `Contact: <sip:127.0.0.1:${port}>`,
      'Event: ua-profile;profile-type="device";vendor="Yealink";model="T57W";version="96.86.0.70"',
      "Accept: application/url",
      "Expires: 0",
      "Max-Forwards: 70",
      "Content-Length: 0",
      "",
      "",
    ].join("\r\n");
    sock.send(msg, pnpPort, PNP_MULTICAST_GROUP);
    const seen = await until(async () => (await cliJson<Array<{ mac: string; vendor?: string; model?: string; firmware?: string }>>(agent, ["phone", "seen"])).find((x) => x.mac === "001565abcdef"), 10_000, 100);
    assert.deepEqual([seen.vendor, seen.model, seen.firmware], ["yealink", "yealink/T57W", "96.86.0.70"]);
    const adopted = await cliJson<{ model: string }>(agent, ["phone", "adopt", "001565abcdef", "--extension", "281"]);
    assert.equal(adopted.model, "yealink/T57W");
  });

  test("re-sync: a SIPp phone registers and answers the check-sync NOTIFY; unregistered phones are reported failed", async (t) => {
    const show = await cliJson<{ extension: string; secrets: { sipPassword: string } }>(agent, ["phone", "show", VENDORS[0]!.mac, "--show-secrets"]);
    const csv = writeUsersCsv(dir, [[show.extension, show.secrets.sipPassword]]);
    const msgFile = path.join(dir, "sipp-checksync.log");
    const sipp = runSipp(["-sf", "phone-stay.xml", "-oocsf", "phone-checksync.xml", "-inf", csv, "-m", "1", "-d", "20000", "-i", "127.0.0.1", "-p", String(await freePort()), "-t", "u1", "-nd", "-timeout", "30", "-trace_msg", "-message_file", msgFile, `127.0.0.1:${agent.port}`], 30_000);
    t.after(() => {
      sipp.proc.kill("SIGKILL");
    });
    await until(async () => (await cliJson<Array<{ mac: string; registered?: boolean }>>(agent, ["phone", "list"])).find((p) => p.mac === VENDORS[0]!.mac)?.registered, 10_000, 200);
    const one = await cliJson<{ results: Array<{ ok: boolean; event: string }> }>(agent, ["phone", "resync", VENDORS[0]!.mac]);
    assert.deepEqual(one.results.map((r) => [r.ok, r.event]), [[true, "check-sync"]]);
    const reboot = await cliJson<{ results: Array<{ ok: boolean; event: string }> }>(agent, ["phone", "resync", VENDORS[0]!.mac, "--reboot"]);
    assert.deepEqual(reboot.results.map((r) => [r.ok, r.event]), [[true, "check-sync;reboot=true"]]);
    const all = await cliJson<{ ok: number; failed: number; results: Array<{ mac: string; ok: boolean; error?: string }> }>(agent, ["phone", "resync", "--all"], 1);
    assert.equal(all.ok, 1);
    assert.ok(all.results.filter((r) => !r.ok).every((r) => r.error === "not registered"));
    const trace = fs.readFileSync(msgFile, "utf8");
    assert.match(trace, /NOTIFY sip:/);
    assert.match(trace, /Event: check-sync/);
  });

  test("refusals over the wire: traversal spellings 400, POST 405; a burst of unknown MACs is rate limited (429)", async () => {
    for (const p of ["/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/firmware/..%2f..%2fetc%2fpasswd", "/..\\..\\windows"]) {
      assert.match(await raw(http, `GET ${p} HTTP/1.1`), /^HTTP\/1\.1 400 /, p);
    }
    assert.match(await raw(http, "POST /y000000000108.cfg HTTP/1.1"), /^HTTP\/1\.1 405 /);
    const statuses: number[] = [];
    for (let i = 0; i < 30; i++) {
      const mac = `001565ff${i.toString(16).padStart(4, "0")}`;
      statuses.push((await get(http, `/${mac}.cfg`, { "user-agent": `Yealink SIP-T46U 108.86.0.75 ${mac}` })).status);
    }
    assert.ok(statuses.includes(429), `statuses: ${statuses.join(",")}`);
    assert.ok(statuses.indexOf(429) <= 20);
    await agent.waitForLog(/provisioning source blocked after a burst/);
    await agent.waitForLog(/provisioning request refused .*status=400/);
  });
});
