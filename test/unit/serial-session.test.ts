// Serial console sessions without a port: an idle session is logged out after
// serialIdleTimeoutS (read live), and with no installer password set (a new appliance, a factory
// reset) the first login at the port chooses one: checked, typed twice, saved, then used.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { ConsoleSession, LoginGuard } from "../../agent/console/serial.ts";
import { verifyInstallerPassword, hashInstallerPassword } from "../../agent/appliance/password.ts";
import { defaultSettings } from "../../agent/config.ts";
import { createLogger } from "../../agent/log.ts";
import type { CommandTable } from "../../agent/console/control.ts";

const bytes = (s: string): Buffer => Buffer.from(s, "latin1");

async function until(fn: () => boolean, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function session(settings: ReturnType<typeof defaultSettings>, savePassword?: (hash: string) => Promise<void>, table: CommandTable = {}): { s: ConsoleSession; out: () => string; clear: () => void } {
  let out = "";
  const s = new ConsoleSession({ settings, guard: new LoginGuard(settings), table, write: (t) => (out += t), log: createLogger("silent"), ...(savePassword ? { savePassword } : {}) });
  s.begin();
  return { s, out: () => out, clear: () => (out = "") };
}

describe("idle logout", () => {
  test("a logged-in session with no input for serialIdleTimeoutS is logged out; input keeps it alive", async () => {
    const settings = { ...defaultSettings(), siteId: "lab-1", serialPassword: await hashInstallerPassword("install-3r"), serialIdleTimeoutS: 1 };
    const { s, out, clear } = session(settings);
    s.input(bytes("install-3r\r"));
    await s.idle();
    assert.equal(s.loggedIn, true);
    // Input every 0.5 s for 1.5 s: never idle for a whole second.
    for (let i = 0; i < 3; i++) {
      await new Promise((r) => setTimeout(r, 500));
      s.input(bytes("\r"));
      await s.idle();
      assert.equal(s.loggedIn, true, `still logged in after input ${i + 1}`);
    }
    clear();
    const t0 = Date.now();
    await until(() => !s.loggedIn, 3000);
    assert.ok(Date.now() - t0 >= 900, "not before the timeout");
    assert.equal(out(), "\r\nNo input for 1 s: logged out.\r\nPassword: ");
    s.close();
  });

  test("0 means never; a SIGHUP'd value applies from the next input", async () => {
    const settings = { ...defaultSettings(), serialPassword: await hashInstallerPassword("install-3r"), serialIdleTimeoutS: 0 };
    const { s } = session(settings);
    s.input(bytes("install-3r\r"));
    await s.idle();
    await new Promise((r) => setTimeout(r, 1200));
    assert.equal(s.loggedIn, true, "no timeout with 0");
    settings.serialIdleTimeoutS = 1;
    s.input(bytes("\r"));
    await until(() => !s.loggedIn, 3000);
    s.close();
  });
});

describe("first login with no password set", () => {
  test("chooses the password: too short refused, a mismatch sets nothing, then saved and used to log in", async () => {
    const settings = { ...defaultSettings(), siteId: "lab-1", serialPassword: "" };
    const saved: string[] = [];
    const { s, out, clear } = session(settings, async (hash) => {
      saved.push(hash);
      settings.serialPassword = hash;
    });
    s.input(bytes("\r"));
    await s.idle();
    assert.match(out(), /Password: \r\nPassword: $/, "Enter alone asks again");
    s.input(bytes("anything\r"));
    await s.idle();
    assert.match(out(), /No installer password is set\. Choose one now \(8-128 printable characters\)\.\r\nNew password: $/);
    clear();
    s.input(bytes("short\r"));
    await s.idle();
    assert.equal(out(), "\r\nthe password must be 8-128 characters\r\nNew password: ");
    clear();
    for (const line of ["first-Choice-1\r", "second-Choice-2\r"]) {
      s.input(bytes(line));
      await s.idle();
    }
    assert.equal(out(), "\r\nAgain: \r\nThe passwords differ; no password was set.\r\nPassword: ");
    assert.deepEqual(saved, []);
    assert.ok(!out().includes("Choice"), "never echoed");
    clear();
    for (const line of ["x\r", "site-Installer-7\r", "site-Installer-7\r"]) {
      s.input(bytes(line));
      await s.idle();
    }
    assert.equal(out(), "\r\nNo installer password is set. Choose one now (8-128 printable characters).\r\nNew password: \r\nAgain: \r\nInstaller password set. Log in with it.\r\nPassword: ");
    assert.equal(saved.length, 1);
    assert.equal(await verifyInstallerPassword("site-Installer-7", saved[0]!), true);
    assert.equal(s.loggedIn, false, "choosing is not logging in");
    s.input(bytes("site-Installer-7\r"));
    await s.idle();
    assert.equal(s.loggedIn, true);
    s.close();
  });

  test("a save that fails sets nothing and says why; Ctrl-C abandons; without a saver the old message stays", async () => {
    const settings = { ...defaultSettings(), serialPassword: "" };
    const { s, out, clear } = session(settings, async () => {
      throw new Error("EROFS: read-only file system");
    });
    s.input(bytes("x\rsite-Installer-7\rsite-Installer-7\r"));
    await s.idle();
    assert.match(out(), /Could not save it \(EROFS: read-only file system\); no password was set\.\r\nPassword: $/);
    assert.equal(settings.serialPassword, "");
    clear();
    s.input(bytes("x\r\x03"));
    await s.idle();
    assert.match(out(), /New password: (\^C)?\r?\n?No password was set\.\r\nPassword: $/);
    s.close();

    const plain = session({ ...defaultSettings(), serialPassword: "" });
    plain.s.input(bytes("x\r"));
    await plain.s.idle();
    assert.match(plain.out(), /No installer password is set \(ringedge console-password on the appliance\)\.\r\nPassword: $/);
    plain.s.close();
  });
});

describe("mistyped words at the console", () => {
  test("an unknown command or phone sub-command is named", async () => {
    const settings = { ...defaultSettings(), siteId: "lab-1", serialPassword: await hashInstallerPassword("install-3r") };
    const { s, out, clear } = session(settings);
    s.input(bytes("install-3r\r"));
    await s.idle();
    clear();
    s.input(bytes("phone shwo 301\r"));
    await s.idle();
    assert.match(out(), /unknown phone command 'shwo'\r\nusage: phone show/);
    clear();
    s.input(bytes("stauts\r"));
    await s.idle();
    assert.match(out(), /unknown command 'stauts' \(type 'help'\)/);
    s.close();
  });
});

describe("why at the console", () => {
  test("why <user> asks for the user's last call, why <user> <call-id> for one call; other word counts get the usage and ask nothing", async () => {
    const settings = { ...defaultSettings(), siteId: "lab-1", serialPassword: await hashInstallerPassword("install-3r") };
    const asked: unknown[] = [];
    const table: CommandTable = { "call.why": (args) => (asked.push(args), { lines: ["call c1: answered", "  anna: skipped: away"] }) };
    const { s, out, clear } = session(settings, undefined, table);
    s.input(bytes("install-3r\r"));
    await s.idle();
    for (const bad of ["why", "why anna c1 extra"]) {
      clear();
      s.input(bytes(`${bad}\r`));
      await s.idle();
      assert.match(out(), /usage: why <user id> \[call-id\]/, bad);
    }
    assert.deepEqual(asked, []);
    clear();
    s.input(bytes("why anna\r"));
    await s.idle();
    s.input(bytes("why anna c1\r"));
    await s.idle();
    assert.deepEqual(asked, [{ last: true, user: "anna" }, { callId: "c1", user: "anna" }]);
    assert.match(out(), /anna: skipped: away/);
    s.close();
  });
});
