// Logs end to end, in the JSON format: the real agent with a site, an installer adding a device
// and a desk phone over the control socket, the phone fetching its bootstrap and its full config
// behind Digest, phones registering (Digest), an answered and a missed call from SIPp, and a
// source banned after wrong passwords. Then every line must parse as JSON, each audited event
// must have its line, and no SIP password, provisioning password or token, or digest response
// may appear anywhere in what the agent logged.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import dgram from "node:dgram";
import fs from "node:fs";
import http from "node:http";
import { computeAuthorization } from "../../agent/sip/digest.ts";
import { CallScene, DEVICE_PASSWORD, RING, TRUNK_CALLER_IP, answerAfter, assertSippOk, callIdOf, loggedCall, simUser, sippCall, startRoutingAgent, writeSiteFile, type SimDevice, type SimUser } from "./callsim.ts";
import { freePort, tempDir, until, type RunningAgent } from "./harness.ts";

const users: SimUser[] = [];
const devices: SimDevice[] = [];
for (const [id, ext] of [["a1", "5001"], ["a2", "5002"]] as const) {
  const u = simUser(id, ext, ["physical"]);
  users.push(u.user);
  devices.push(...u.devices);
}
const NEW_DEVICE_PASSWORD = "Installer-Typed-Secret-77";

let agent: RunningAgent;
let dataDir: string;
const siteDir = tempDir("ringedge-logs-site-");
const scene = new CallScene(() => agent);

function get(url: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string; challenge: string | undefined }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { headers, agent: false, timeout: 5000 }, (res) => {
      let body = "";
      res.setEncoding("latin1");
      res.on("data", (d: string) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body, challenge: res.rawHeaders.find((_, i) => i % 2 === 1 && res.rawHeaders[i - 1]!.toLowerCase() === "www-authenticate") }));
    });
    req.on("error", reject);
    req.on("timeout", () => req.destroy(new Error("timeout")));
  });
}

/** Every string under a key naming a password or token, anywhere in a JSON value. */
function secretsIn(v: unknown, out: Set<string> = new Set()): Set<string> {
  if (Array.isArray(v)) for (const x of v) secretsIn(x, out);
  else if (typeof v === "object" && v !== null) {
    for (const [k, x] of Object.entries(v)) {
      if (typeof x === "string" && /password|token/i.test(k) && x.length >= 8) out.add(x);
      else secretsIn(x, out);
    }
  }
  return out;
}

/** REGISTERs from `source` with a wrong password until the agent stops answering (banned). */
async function wrongPasswords(port: number, source: string, times: number): Promise<string[]> {
  const sock = dgram.createSocket("udp4");
  await new Promise<void>((r) => sock.bind(0, source, () => r()));
  const auths: string[] = [];
  try {
    for (let i = 0; i < times; i++) {
      const reqFor = (auth?: string): string =>
        [
          `REGISTER sip:127.0.0.1:${port} SIP/2.0`,
          `Via: SIP/2.0/UDP ${source}:${sock.address().port};branch=z9hG4bK-logs-${i}-${auth ? "b" : "a"};rport`,
          "Max-Forwards: 70",
          `From: <sip:a1@127.0.0.1>;tag=logs${i}`,
          "To: <sip:a1@127.0.0.1>",
          `Call-ID: logs-ban-${i}@${source}`,
          `CSeq: ${i * 2 + (auth ? 2 : 1)} REGISTER`,
          `Contact: <sip:a1@${source}:${sock.address().port}>`,
          ...(auth ? [`Authorization: ${auth}`] : []),
          "Content-Length: 0",
          "",
          "",
        ].join("\r\n");
      const answer = (text: string): Promise<string | undefined> =>
        new Promise((resolve) => {
          const t = setTimeout(() => (sock.off("message", on), resolve(undefined)), 1000);
          const on = (b: Buffer): void => (clearTimeout(t), sock.off("message", on), resolve(b.toString()));
          sock.on("message", on);
          sock.send(text, port, "127.0.0.1");
        });
      const ch = await answer(reqFor());
      if (ch === undefined) break; // banned: silence
      const www = /^WWW-Authenticate: (Digest .*)$/im.exec(ch)?.[1];
      if (!www) break;
      const auth = computeAuthorization(www.trim(), { method: "REGISTER", uri: `sip:127.0.0.1:${port}`, username: "a1", password: "not-the-password" }) as string;
      auths.push(auth);
      await answer(reqFor(auth));
    }
  } finally {
    sock.close();
  }
  return auths;
}

before(async () => {
  dataDir = tempDir("ringedge-logs-");
  const file = writeSiteFile(siteDir, {
    settings: { pickupCode: "*8", trunk: { host: "127.0.0.1", port: await freePort(), transport: "udp", allowedSources: [TRUNK_CALLER_IP] } },
    users,
    devices,
    groups: [{ id: "desk", number: "750", strategy: "simultaneous", members: ["a1", "a2"], ringCount: 1, noAnswer: { kind: "hangup", status: 480 } }],
  });
  agent = await startRoutingAgent(file, { ringUnitMs: 200, dataDir, env: { RINGEDGE_LOG_FORMAT: "json", RINGEDGE_LOG_LEVEL: "debug", RINGEDGE_GUARD_SOURCE_MAX_FAILURES: "2" } });
});

after(async () => {
  await scene.close();
  for (const d of [dataDir, siteDir]) fs.rmSync(d, { recursive: true, force: true });
});

test("JSON logs: an audit line for each change, call, provisioning fetch and ban; no secret anywhere", { timeout: 90_000 }, async () => {
  const secrets = new Set<string>([DEVICE_PASSWORD, NEW_DEVICE_PASSWORD]);

  // Installer changes over the control socket.
  const add = await agent.cli(["device", "add", "frontdesk", "--password", NEW_DEVICE_PASSWORD, "--json"]);
  assert.equal(add.code, 0, add.stderr);
  const phone = await agent.cli(["phone", "add", "001565aabb01", "--model", "T46U", "--extension", "5009", "--show-secrets", "--json"]);
  assert.equal(phone.code, 0, phone.stderr);
  for (const s of secretsIn(JSON.parse(phone.stdout))) secrets.add(s);
  const shown = await agent.cli(["phone", "show", "001565aabb01", "--show-secrets", "--json"]);
  const show = JSON.parse(shown.stdout) as { provisioningUser: string; secrets: { sipPassword: string; provisioningPassword: string } };
  for (const s of secretsIn(show)) secrets.add(s);
  assert.ok(secrets.size >= 4, `secrets collected: ${secrets.size}`);

  // The phone fetches its bootstrap, then its full config behind Digest.
  const base = /"url":"(http:\/\/127\.0\.0\.1:\d+\/)"/.exec(await agent.waitForLog(/provisioning listening.*"scheme":"http"|"scheme":"http".*provisioning listening/))![1]!;
  const ua = { "user-agent": "Yealink SIP-T46U 108.86.0.75 00:15:65:aa:bb:01" };
  assert.equal((await get(`${base}001565aabb01.cfg`, ua)).status, 200);
  const ch = await get(`${base}001565aabb01.cfg`, ua);
  assert.equal(ch.status, 401);
  const good = computeAuthorization(ch.challenge!, { method: "GET", uri: "/001565aabb01.cfg", username: show.provisioningUser, password: show.secrets.provisioningPassword, nc: 2 }) as string;
  const full = await get(`${base}001565aabb01.cfg`, { ...ua, authorization: good });
  assert.equal(full.status, 200);
  assert.ok(full.body.includes(show.secrets.sipPassword), "the full config carries the SIP password (and the log must not)");

  // Phones register (Digest), an answered and a missed call.
  const [p1] = await scene.register(devices, RING);
  p1!.answering = answerAfter(100);
  const answered = await sippCall(agent.port, "route-caller.xml", "750", { pauseMs: 100 });
  scene.peers.push(answered);
  assertSippOk("answered call", await answered.run);
  await loggedCall(dataDir, callIdOf(answered));
  p1!.answering = RING;
  const missed = await sippCall(agent.port, "route-caller-fail.xml", "750");
  scene.peers.push(missed);
  await missed.run;
  await loggedCall(dataDir, callIdOf(missed));

  // A source guessing passwords is banned.
  const auths = await wrongPasswords(agent.port, "127.0.0.3", 4);
  assert.ok(auths.length >= 2);
  for (const a of auths) secrets.add(/response="([^"]+)"/.exec(a)![1]!);
  await agent.waitForLog(/"audit":"ban"/);

  await until(() => /"msg":"call missed"/.test(agent.log()), 5000);
  const lines = agent.log().split("\n").filter((l) => l !== "");
  const records = lines.map((l) => {
    try {
      return JSON.parse(l) as Record<string, unknown>;
    } catch {
      throw new Error(`log line is not JSON: ${l}`);
    }
  });
  for (const r of records) {
    assert.equal(typeof r.time, "string");
    assert.ok(["debug", "info", "warn", "error"].includes(r.level as string));
    assert.equal(typeof r.scope, "string");
    assert.equal(typeof r.msg, "string");
  }
  const audit = records.filter((r) => r.audit !== undefined);
  const has = (pred: (r: Record<string, unknown>) => boolean, what: string): void => assert.ok(audit.some(pred), `audit line for ${what}:\n${audit.map((r) => JSON.stringify(r)).join("\n")}`);
  for (const r of audit) assert.equal(r.level, "info");
  has((r) => r.audit === "change" && r.action === "site.apply" && r.actor === "site file", "the site file");
  has((r) => r.audit === "change" && r.action === "device.add" && r.actor === "installer (control socket)" && r.target === "frontdesk", "device add");
  has((r) => r.audit === "change" && r.action === "phone.add" && r.target === "001565aabb01", "phone add");
  has((r) => r.audit === "provisioning" && r.result === "bootstrap" && r.vendor === "yealink" && r.mac === "001565aabb01", "bootstrap fetch");
  has((r) => r.audit === "provisioning" && r.result === "full" && r.vendor === "yealink", "full config fetch");
  has((r) => r.audit === "provisioning" && r.result === "unauthorized", "refused fetch");
  has((r) => r.msg === "call offered" && r.call === callIdOf(answered) && r.group === "desk", "call offered");
  has((r) => r.msg === "call answered" && r.call === callIdOf(answered) && r.by === "a1", "call answered");
  has((r) => r.msg === "call missed" && r.call === callIdOf(missed) && r.why === "no answer" && r.offered === "a1,a2", "call missed");
  has((r) => r.audit === "ban" && r.source === "127.0.0.3", "ban");
  // Reads are not audited.
  assert.ok(!audit.some((r) => r.action === "phone.show"));

  const log = agent.log();
  for (const s of secrets) assert.ok(!log.includes(s), `a secret appears in the log: ${s.slice(0, 4)}…`);
  assert.doesNotMatch(log, /response="/i, "no digest response in the log");
  assert.doesNotMatch(log, /Digest username=/i, "no Authorization header in the log");
});
