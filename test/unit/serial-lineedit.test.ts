// The serial console's line editor and session, without a port: CR/LF/CRLF, BS/DEL, Ctrl-C,
// Ctrl-D, escape sequences, garbage, the length cap; login, lock-out doubling, commands.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { LineEditor } from "../../agent/console/lineedit.ts";
import { ConsoleSession, LoginGuard, WIDTH, splitWords, table } from "../../agent/console/serial.ts";
import { hashInstallerPassword, verifyInstallerPassword } from "../../agent/appliance/password.ts";
import { planReload } from "../../agent/appliance/reload.ts";
import { DrainController } from "../../agent/appliance/drain.ts";
import { defaultSettings } from "../../agent/config.ts";
import { createLogger } from "../../agent/log.ts";

const bytes = (s: string): Buffer => Buffer.from(s, "latin1");
const lines = (ed: LineEditor, s: string): string[] => ed.feed(bytes(s)).events.flatMap((e) => (e.kind === "line" ? [e.text] : []));

describe("line editor", () => {
  test("CR, LF and CRLF each end exactly one line; LF CR LF gives two", () => {
    const ed = new LineEditor();
    assert.deepEqual(lines(ed, "a\rb\nc\r\nd\n\r\n"), ["a", "b", "c", "d", ""]);
    // A CRLF split across two reads is still one line end.
    assert.deepEqual(lines(ed, "x\r"), ["x"]);
    assert.deepEqual(lines(ed, "\ny\r"), ["y"]);
  });

  test("backspace (0x08) and DEL (0x7f) erase, with a visual erase echoed; nothing to erase echoes nothing", () => {
    const ed = new LineEditor();
    const r = ed.feed(bytes("abc\x08\x7fd\r"));
    assert.deepEqual(r.events, [{ kind: "line", text: "ad", truncated: false }]);
    assert.equal(r.echo, "abc\b \b\b \bd\r\n");
    assert.equal(ed.feed(bytes("\x7f\x08")).echo, "");
  });

  test("Ctrl-C clears the line; Ctrl-D ends the session only on an empty line; Ctrl-U erases", () => {
    const ed = new LineEditor();
    assert.deepEqual(ed.feed(bytes("rm -rf\x03")).events, [{ kind: "interrupt" }]);
    assert.equal(ed.pending, "");
    assert.deepEqual(ed.feed(bytes("ab\x04")).events, []);
    assert.deepEqual(ed.feed(bytes("\x15\x04")).events, [{ kind: "eof" }]);
  });

  test("garbage: controls, escape sequences (arrows, F-keys) and bytes >= 0x80 are never stored or echoed raw", () => {
    const ed = new LineEditor();
    const r = ed.feed(Buffer.from([0x00, 0x01, 0x1b, 0x5b, 0x41, 0x68, 0x1b, 0x4f, 0x50, 0xff, 0xc3, 0xa9, 0x69, 0x1b, 0x5b, 0x31, 0x35, 0x7e, 0x09, 0x0d]));
    assert.deepEqual(r.events, [{ kind: "line", text: "hi", truncated: false }]);
    assert.equal(r.echo, "hi\r\n");
    assert.ok([...r.echo].every((c) => c === "\r" || c === "\n" || (c >= " " && c <= "~")));
  });

  test("a 10 KB line is capped at maxLength with one bell, and reported truncated", () => {
    const ed = new LineEditor(512);
    const r = ed.feed(bytes("x".repeat(10_000) + "\r"));
    const ev = r.events[0];
    assert.ok(ev && ev.kind === "line");
    assert.equal(ev.text.length, 512);
    assert.equal(ev.truncated, true);
    assert.equal(r.echo.split("\x07").length - 1, 1);
    assert.equal(r.echo.length, 512 + 1 + 2);
    assert.deepEqual(ed.feed(bytes("ok\r")).events, [{ kind: "line", text: "ok", truncated: false }]);
  });

  test("password echo modes: masked or silent", () => {
    const ed = new LineEditor();
    ed.echoMode = "mask";
    assert.equal(ed.feed(bytes("pw")).echo, "**");
    ed.echoMode = "none";
    assert.equal(ed.feed(bytes("x\x7f")).echo, "");
  });
});

describe("formatting", () => {
  test("tables never exceed 80 columns and are ASCII", () => {
    const out = table(["A", "B", "C"], [["x".repeat(100), "ünïcode\u0007", "y".repeat(200)]], [10, 10]);
    for (const l of out) {
      assert.ok(l.length <= WIDTH, l);
      assert.match(l, /^[\x20-\x7e]*$/);
    }
  });
  test("words: quotes group a name", () => {
    assert.deepEqual(splitWords('phone add 805ec0100001 T46U 1001 "Anna Berg"'), ["phone", "add", "805ec0100001", "T46U", "1001", "Anna Berg"]);
  });
});

describe("installer password and session", () => {
  test("scrypt hash verifies the password only; malformed hashes are false, never a throw", async () => {
    const h = await hashInstallerPassword("install-3r");
    assert.match(h, /^scrypt\$16384\$8\$1\$/);
    assert.ok(!h.includes("install-3r"));
    assert.equal(await verifyInstallerPassword("install-3r", h), true);
    assert.equal(await verifyInstallerPassword("install-3R", h), false);
    for (const bad of ["", "plain", "scrypt$3$8$1$AAAA$AAAA", `scrypt$${2 ** 30}$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAA==`]) assert.equal(await verifyInstallerPassword("x", bad), false);
  });

  test("lock-out after N failures, doubling, reset by a good login", () => {
    let now = 0;
    const s = { ...defaultSettings(), serialLockoutFailures: 3, serialLockoutS: 60 };
    const g = new LoginGuard(s, () => now);
    assert.equal(g.failed(), 0);
    assert.equal(g.failed(), 0);
    assert.equal(g.failed(), 60_000);
    assert.equal(g.lockedForMs(), 60_000);
    now += 60_000;
    assert.equal(g.lockedForMs(), 0);
    g.failed();
    g.failed();
    assert.equal(g.failed(), 120_000);
    now += 120_000;
    g.succeeded();
    g.failed();
    g.failed();
    assert.equal(g.failed(), 60_000);
  });

  test("session: wrong password, login, a command from the table, unknown command, Ctrl-D logs out", async () => {
    const settings = { ...defaultSettings(), siteId: "lab-1", serialPassword: await hashInstallerPassword("install-3r"), serialLockoutFailures: 5, serialLockoutS: 60 };
    let out = "";
    const s = new ConsoleSession({
      settings,
      guard: new LoginGuard(settings),
      table: { "device.list": () => [{ username: "1001", kind: "physical", online: true, registered: true, displayName: "Anna" }] },
      write: (t) => (out += t),
      log: createLogger("silent"),
    });
    s.begin();
    assert.match(out, /Password: $/);
    s.input(bytes("wrong\r"));
    await s.idle();
    assert.match(out, /Login incorrect\r\nPassword: $/);
    assert.ok(!out.includes("wrong"), "password never echoed");
    s.input(bytes("install-3r\r\n"));
    await s.idle();
    assert.equal(s.loggedIn, true);
    assert.match(out, /ringedge:lab-1> $/);
    out = "";
    s.input(bytes("devices\r"));
    await s.idle();
    assert.match(out, /USERNAME +KIND +STATE +NAME\r\n1001 +physical +online +Anna\r\nringedge:lab-1> $/);
    out = "";
    s.input(bytes("frobnicate\r"));
    await s.idle();
    assert.match(out, /unknown command 'frobnicate'/);
    s.input(bytes("\x04"));
    await s.idle();
    assert.equal(s.loggedIn, false);
    assert.match(out, /Logged out\.\r\nPassword: $/);
  });
});

describe("reload, drain (pure parts; health: health.test.ts)", () => {
  test("reload plan: live settings vs restart", () => {
    const a = defaultSettings();
    const b = { ...a, logLevel: "debug" as const, keepaliveIntervalS: 5, sipListen: ["127.0.0.1:5070"], serialPassword: "scrypt$16384$8$1$AA==$AA==" };
    assert.deepEqual(planReload(a, b), { live: ["keepaliveIntervalS", "logLevel", "serialPassword"], restart: ["sipListen"] });
  });
  test("drain waits for calls to end, times out with calls up, and resume calls it off", async () => {
    let calls = { ringing: 1, connected: 0, queued: 0 };
    const d = new DrainController({ activity: () => calls, flushStore: async () => undefined, log: createLogger("silent"), pollMs: 5 });
    const timedOut = await d.drain(30);
    assert.equal(timedOut.drained, false);
    assert.match(timedOut.message, /1 ringing/);
    assert.equal(d.draining, true);
    setTimeout(() => (calls = { ringing: 0, connected: 0, queued: 0 }), 20);
    const ok = await d.drain(2000);
    assert.equal(ok.drained, true);
    calls = { ringing: 0, connected: 1, queued: 0 };
    const pending = d.drain(5000);
    setTimeout(() => d.resume(), 20);
    const off = await pending;
    assert.equal(off.drained, false);
    assert.match(off.message, /called off/);
    assert.equal(d.draining, false);
  });
});
