// The status page server over HTTPS (a certificate is configured): login sets a Secure cookie,
// the event stream sends a snapshot at once and another after a bus event, within the debounce.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import https from "node:https";
import os from "node:os";
import path from "node:path";
import { EventBus } from "../../agent/bus.ts";
import { createLogger } from "../../agent/log.ts";
import { hashInstallerPassword } from "../../agent/appliance/password.ts";
import { StatusPage, type StatusSource } from "../../agent/observe/status-page.ts";

const source: StatusSource = {
  siteId: "https-site",
  startedAt: Date.now(),
  devices: () => [],
  presence: () => [],
  bindings: () => [],
  seenPhones: () => [],
  site: () => null,
  activeCallsOf: () => 0,
  ringing: () => [],
  activeCalls: () => 0,
  recentCalls: () => [],
  latency: () => ({ p50Us: 0, p99Us: 0, count: 0, overBudget: 0, budgetUs: 2000 }),
  link: () => "off",
};

function request(url: string, ca: Buffer, opts: https.RequestOptions = {}, body?: string): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request(url, { ca, agent: false, timeout: 5000, ...opts }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => (text += d));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
    });
    req.on("error", reject);
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.end(body);
  });
}

test("status page over HTTPS: Secure session cookie, SSE snapshot now and after a bus event", { timeout: 30_000 }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ringedge-status-tls-"));
  const bus = new EventBus();
  const hash = await hashInstallerPassword("tls-Installer-1");
  const page = new StatusPage({
    host: "127.0.0.1",
    port: 0,
    tls: { cert: path.join(dir, "cert.pem"), key: path.join(dir, "key.pem") },
    passwordHash: () => hash,
    source,
    bus,
    log: createLogger("silent"),
  });
  try {
    execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", path.join(dir, "key.pem"), "-out", path.join(dir, "cert.pem"), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"], { stdio: "ignore" });
    const ca = fs.readFileSync(path.join(dir, "cert.pem"));
    await page.start();
    const base = `https://127.0.0.1:${page.address()!.port}`;
    assert.match((await request(`${base}/`, ca)).body, /Installer password/);
    const login = await request(`${base}/login`, ca, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded", origin: base } }, "password=tls-Installer-1");
    assert.equal(login.status, 303);
    const setCookie = String(login.headers["set-cookie"]);
    assert.match(setCookie, /; HttpOnly; SameSite=Strict; Max-Age=28800; Secure/);
    // An http:// Origin is another origin than https:// (RFC 6454 §4): refused.
    assert.equal((await request(`${base}/login`, ca, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded", origin: base.replace("https", "http") } }, "password=tls-Installer-1")).status, 403);
    const cookie = setCookie.split(";")[0]!;

    const events = await new Promise<string[]>((resolve, reject) => {
      const got: string[] = [];
      const req = https.request(`${base}/events`, { ca, agent: false, headers: { cookie } }, (res) => {
        assert.equal(res.statusCode, 200);
        assert.match(String(res.headers["content-type"]), /^text\/event-stream/);
        let buf = "";
        res.setEncoding("utf8");
        res.on("data", (d: string) => {
          buf += d;
          let i;
          while ((i = buf.indexOf("\n\n")) >= 0) {
            const ev = buf.slice(0, i);
            buf = buf.slice(i + 2);
            const data = ev.split("\n").find((l) => l.startsWith("data: "));
            if (data) got.push(data.slice(6));
            if (got.length === 1) bus.emit("device.presence", { deviceId: "d", username: "u", online: true, reason: "registered", at: 0 });
            if (got.length === 2) {
              req.destroy();
              resolve(got);
            }
          }
        });
      });
      req.on("error", (e) => (got.length >= 2 ? undefined : reject(e)));
      req.setTimeout(5000, () => req.destroy(new Error("no second event within 5 s")));
      req.end();
    });
    for (const e of events) assert.equal((JSON.parse(e) as { siteId: string }).siteId, "https-site");
  } finally {
    await page.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
