// The status page in a real headless browser (Debian's chromium driven by playwright-core,
// which never downloads a browser of its own): log in with the installer password, watch a
// phone go online when it registers, a member ringing during a test call, and the call in the
// missed list after; screenshots go to .tmp/artefacts/status-page/. A wrong password, no
// session and cross-site requests are refused.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium, type BrowserContext, type Page } from "playwright-core";
import { hashInstallerPassword } from "../../agent/appliance/password.ts";
import { CallScene, RING, TRUNK_CALLER_IP, callIdOf, loggedCall, simUser, sippCall, startRoutingAgent, writeSiteFile, type SimDevice, type SimUser } from "./callsim.ts";
import { ROOT, freePort, tempDir, type RunningAgent } from "./harness.ts";

const CHROMIUM = "/usr/bin/chromium";
const PASSWORD = "Installer-Pass-2026";
const ARTEFACTS = path.join(ROOT, ".tmp/artefacts/status-page");
const UNIT = 1500;

const users: SimUser[] = [];
const devices: SimDevice[] = [];
for (const [id, ext] of [["s1", "6001"], ["s2", "6002"]] as const) {
  const u = simUser(id, ext, ["physical"]);
  users.push(u.user);
  devices.push(...u.devices);
}

let agent: RunningAgent;
let base: string;
let dataDir: string;
let profile: string;
let browser: BrowserContext;
const siteDir = tempDir("ringedge-status-site-");
const scene = new CallScene(() => agent);

before(async () => {
  fs.mkdirSync(ARTEFACTS, { recursive: true });
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  dataDir = tempDir("ringedge-status-");
  const file = writeSiteFile(siteDir, {
    settings: { pickupCode: "*8", trunk: { host: "127.0.0.1", port: await freePort(), transport: "udp", allowedSources: [TRUNK_CALLER_IP] } },
    users,
    devices,
    groups: [{ id: "front", number: "760", strategy: "simultaneous", members: ["s1", "s2"], ringCount: 2, noAnswer: { kind: "hangup", status: 480 } }],
  });
  agent = await startRoutingAgent(file, {
    ringUnitMs: UNIT,
    dataDir,
    env: { RINGEDGE_STATUS_PAGE_ENABLED: "true", RINGEDGE_STATUS_PAGE_LISTEN: `127.0.0.1:${port}`, RINGEDGE_SERIAL_PASSWORD: await hashInstallerPassword(PASSWORD) },
  });
  await agent.waitForLog(/status page listening/);
  profile = fs.mkdtempSync(path.join(os.tmpdir(), "ringedge-chromium-"));
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1100, height: 900 },
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"],
    timeout: 30_000,
  });
});

after(async () => {
  await browser?.close();
  await scene.close();
  for (const d of [dataDir, siteDir, profile]) if (d) fs.rmSync(d, { recursive: true, force: true });
});

async function shot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: path.join(ARTEFACTS, `${name}.png`), fullPage: true });
}

test("status page in headless Chromium: login, a phone goes online, a member rings, the call is missed", { timeout: 120_000 }, async () => {
  const page = await browser.newPage();
  page.setDefaultTimeout(15_000);
  await page.goto(`${base}/`);
  await page.waitForSelector("form[action='/login'] input[type=password]");

  // A wrong password is refused and says so.
  await page.fill("#password", "not-the-password");
  const [wrong] = await Promise.all([page.waitForResponse((r) => r.url().endsWith("/login")), page.click("button[type=submit]")]);
  assert.equal(wrong.status(), 401);
  await page.waitForSelector("text=Wrong password.");
  await shot(page, "1-wrong-password");

  await page.fill("#password", PASSWORD);
  await Promise.all([page.waitForURL(`${base}/`), page.click("button[type=submit]")]);
  await page.waitForSelector("#phones tr[data-device='s1'][data-online='false']");
  await page.waitForSelector("[data-group='front'] [data-member='s1'][data-state='logged out']");

  // A phone registers: the page shows it online (pushed over the event stream, no reload).
  const [p1] = await scene.register([devices[0]!], RING);
  await page.waitForSelector("#phones tr[data-device='s1'][data-online='true']");
  await page.waitForSelector("[data-group='front'] [data-member='s1'][data-state='available']");
  const address = await page.textContent("#phones tr[data-device='s1'] td:last-child");
  assert.match(address ?? "", new RegExp(`udp 127\\.0\\.0\\.1:${p1!.port}`));
  await scene.register([devices[1]!], RING);
  await page.waitForSelector("#phones tr[data-device='s2'][data-online='true']");
  await shot(page, "2-phones-online");

  // A call: both members ring (simultaneous); nobody answers; after two rings the group hangs up.
  const caller = await sippCall(agent.port, "route-caller-fail.xml", "760", { timeoutS: 20 });
  scene.peers.push(caller);
  await page.waitForSelector("[data-group='front'] [data-member='s1'][data-state='ringing']");
  await page.waitForSelector("[data-group='front'] [data-member='s2'][data-state='ringing']");
  await page.waitForSelector(`#ringing [data-call='${callIdOf(caller)}']`);
  await shot(page, "3-ringing");
  await caller.run;
  assert.equal((await loggedCall(dataDir, callIdOf(caller))).outcome, "missed");
  await page.waitForSelector("#missed tr[data-caller='+4930111222']");
  await page.waitForSelector("[data-group='front'] [data-member='s1'][data-state='available']");
  const missedRow = await page.textContent("#missed tr[data-caller='+4930111222']");
  assert.match(missedRow ?? "", /760/);
  assert.match(missedRow ?? "", /s1, s2/);
  assert.match((await page.textContent("#latency-summary")) ?? "", /^1 calls? · p50/);
  await shot(page, "4-missed");

  // Phone-sized screen: nothing wider than the viewport except the scrollable tables.
  await page.setViewportSize({ width: 390, height: 844 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `page wider than a phone screen by ${overflow}px`);
  await shot(page, "5-phone-screen");

  // Logging out ends the session.
  const cookies = await browser.cookies(base);
  const session = cookies.find((c) => c.name === "ringedge_session");
  assert.ok(session && session.httpOnly && session.sameSite === "Strict");
  await page.setViewportSize({ width: 1100, height: 900 });
  await Promise.all([page.waitForSelector("form[action='/login']"), page.click("form[action='/logout'] button")]);
  const stale = await fetch(`${base}/api/status`, { headers: { cookie: `ringedge_session=${session.value}` } });
  assert.equal(stale.status, 401);
  await page.close();
});

test("refused: no session, a forged session, cross-site requests, a login without Origin, bad bodies", { timeout: 30_000 }, async () => {
  assert.equal((await fetch(`${base}/api/status`)).status, 401);
  assert.equal((await fetch(`${base}/events`)).status, 401);
  assert.equal((await fetch(`${base}/api/status`, { headers: { cookie: `ringedge_session=${"A".repeat(43)}` } })).status, 401);
  const form = { "content-type": "application/x-www-form-urlencoded" };
  // A cross-site form posting the right password is refused (Origin is another site's).
  const evil = await fetch(`${base}/login`, { method: "POST", headers: { ...form, origin: "http://evil.example" }, body: `password=${PASSWORD}`, redirect: "manual" });
  assert.equal(evil.status, 403);
  assert.equal(evil.headers.get("set-cookie"), null);
  const noOrigin = await fetch(`${base}/login`, { method: "POST", headers: form, body: `password=${PASSWORD}`, redirect: "manual" });
  assert.equal(noOrigin.status, 403);
  // Same origin: a session; then a cross-site read with that session is still refused.
  const ok = await fetch(`${base}/login`, { method: "POST", headers: { ...form, origin: base }, body: `password=${PASSWORD}`, redirect: "manual" });
  assert.equal(ok.status, 303);
  const cookie = /^(ringedge_session=[A-Za-z0-9_-]{43});/.exec(ok.headers.get("set-cookie") ?? "")![1]!;
  assert.equal((await fetch(`${base}/api/status`, { headers: { cookie } })).status, 200);
  assert.equal((await fetch(`${base}/api/status`, { headers: { cookie, "sec-fetch-site": "cross-site", "sec-fetch-mode": "cors" } })).status, 403);
  assert.equal((await fetch(`${base}/events`, { headers: { cookie, "sec-fetch-site": "cross-site" } })).status, 403);
  // Bad login requests change nothing.
  assert.equal((await fetch(`${base}/login`, { method: "POST", headers: { ...form, origin: base }, body: "password=" + "x".repeat(5000) })).status, 400);
  assert.equal((await fetch(`${base}/login`, { method: "POST", headers: { "content-type": "application/json", origin: base }, body: JSON.stringify({ password: PASSWORD }) })).status, 400);
  assert.equal((await fetch(`${base}/api/status`, { method: "DELETE", headers: { cookie } })).status, 405);
  assert.equal((await fetch(`${base}/../../etc/passwd`)).status, 404);
  const page = await fetch(`${base}/`, { headers: { cookie } });
  assert.match(page.headers.get("content-security-policy") ?? "", /default-src 'none'; script-src 'self'/);
  // The assets are the ones compiled into the agent: no external URL anywhere.
  for (const asset of ["/", "/app.js", "/app.css"]) assert.doesNotMatch(await (await fetch(`${base}${asset}`, { headers: { cookie } })).text(), /https?:\/\//, asset);
});
