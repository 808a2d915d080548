// The serial console of the real agent over a socat pty pair, around a factory reset: an idle
// session is logged out after serialIdleTimeoutS; factory-reset removes the installer password
// from the settings file; the agent started again lets the first login at the port choose a new
// one, writes its hash to the settings file (owner and mode kept), and that password logs in.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { after, test } from "node:test";
import { SerialPort } from "serialport";
import { hashInstallerPassword, verifyInstallerPassword } from "../../agent/appliance/password.ts";
import { ROOT, agentEnv, startAgent, tempDir, until, type RunningAgent } from "./harness.ts";

const dir = tempDir("ringedge-serial-reset-");
const ttyA = path.join(dir, "ttyA");
const ttyB = path.join(dir, "ttyB");
const cleanups: Array<() => unknown> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** The installer's terminal on ttyB: what arrived since the last expect, waited for with a deadline. */
async function openTerminal(): Promise<{ send(s: string): void; expect(re: RegExp, timeoutMs?: number): Promise<string>; close(): Promise<void> }> {
  const port = new SerialPort({ path: ttyB, baudRate: 115200, autoOpen: false, lock: false });
  await new Promise<void>((resolve, reject) => port.open((err) => (err ? reject(err) : resolve())));
  let rx = "";
  port.on("data", (d: Buffer) => (rx += d.toString("latin1")));
  return {
    send: (s) => void port.write(s),
    expect: async (re, timeoutMs = 5000) => {
      const m = await until(() => re.exec(rx) ?? undefined, timeoutMs, 10).catch(() => {
        throw new Error(`terminal never showed ${re}; got ${JSON.stringify(rx.slice(-400))}`);
      });
      const seen = rx.slice(0, m.index + m[0].length);
      rx = rx.slice(m.index + m[0].length);
      return seen;
    },
    close: () => new Promise((r) => (port.isOpen ? port.close(() => r()) : r())),
  };
}

function factoryReset(env: NodeJS.ProcessEnv): Promise<{ code: number; out: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(path.join(ROOT, "firmware-hooks", "factory-reset"), ["--yes"], { env: { ...env, RINGEDGE_BIN: `${process.execPath} ${path.join(ROOT, "bin", "ringedge.js")}` }, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    p.stdout.on("data", (d) => (out += d));
    p.stderr.on("data", (d) => (out += d));
    const t = setTimeout(() => (p.kill("SIGKILL"), reject(new Error(`factory-reset timed out: ${out}`))), 40_000);
    p.on("close", (code) => (clearTimeout(t), resolve({ code: code ?? -1, out })));
  });
}

test("idle logout, then a factory reset: the first login at the port chooses the new password", { timeout: 120_000 }, async () => {
  const socat: ChildProcess = spawn("socat", [`pty,raw,echo=0,link=${ttyA}`, `pty,raw,echo=0,link=${ttyB}`], { stdio: "ignore" });
  cleanups.push(() => socat.kill("SIGKILL"));
  await until(() => fs.existsSync(ttyA) && fs.existsSync(ttyB), 5000, 20);

  const conf = path.join(dir, "ringedge.conf.json");
  fs.writeFileSync(conf, JSON.stringify({ siteId: "lab-9", serialDevice: ttyA, serialIdleTimeoutS: 2, serialPassword: await hashInstallerPassword("old-Installer-1") }), { mode: 0o640 });
  const dataDir = path.join(dir, "data");
  let agent: RunningAgent = await startAgent({ dataDir, env: { RINGEDGE_CONFIG: conf } });
  cleanups.push(() => agent.kill());
  await agent.waitForLog(/serial console open/);
  const term = await openTerminal();
  cleanups.push(() => term.close());

  term.send("\r");
  await term.expect(/Password: $/);
  term.send("old-Installer-1\r");
  await term.expect(/Logged in\. Type 'help' for commands\.\r\nringedge:lab-9> $/);
  const t0 = Date.now();
  await term.expect(/\r\nNo input for 2 s: logged out\.\r\nPassword: $/, 6000);
  assert.ok(Date.now() - t0 >= 1500, "logged out at the timeout, not before");
  await agent.waitForLog(/serial console session logged out after idling/);

  // Factory reset: the agent stops, the password leaves the settings file (its mode stays).
  const reset = await factoryReset(agentEnv(dataDir, agent.port, { RINGEDGE_CONFIG: conf }));
  assert.equal(reset.code, 0, reset.out);
  await until(() => agent.proc.exitCode !== null, 10_000, 50);
  assert.equal(JSON.parse(fs.readFileSync(conf, "utf8")).serialPassword, undefined);
  assert.equal(fs.statSync(conf).mode & 0o777, 0o640);

  agent = await startAgent({ dataDir, port: agent.port, env: { RINGEDGE_CONFIG: conf } });
  cleanups.push(() => agent.kill());
  await agent.waitForLog(/serial console open/);
  term.send("old-Installer-1\r");
  await term.expect(/No installer password is set\. Choose one now \(8-128 printable characters\)\.\r\nNew password: $/);
  term.send("new-Installer-2\r");
  await term.expect(/Again: $/);
  term.send("new-Installer-2\r");
  await term.expect(/Installer password set\. Log in with it\.\r\nPassword: $/);
  const saved = JSON.parse(fs.readFileSync(conf, "utf8")) as { serialPassword?: string; siteId: string };
  assert.equal(saved.siteId, "lab-9", "the other settings stay");
  assert.equal(await verifyInstallerPassword("new-Installer-2", saved.serialPassword ?? ""), true);
  assert.equal(fs.statSync(conf).mode & 0o777, 0o640, "the settings file keeps its mode");
  term.send("old-Installer-1\r");
  await term.expect(/Login incorrect\r\nPassword: $/);
  term.send("new-Installer-2\r");
  await term.expect(/Logged in\. Type 'help' for commands\.\r\nringedge:lab-9> $/);
  term.send("status\r");
  assert.match(await term.expect(/ringedge:lab-9> $/), /site lab-9 +pid \d+/);
  assert.equal(await agent.stop(), 0);
});
