// The serial installer console of the real agent, driven through a socat pty pair (the agent
// opens ttyA as its serial device; the test is the installer's terminal on ttyB): login with
// wrong passwords and the lock-out, commands and their 80-column output, garbage bytes, a 10 KB
// line, then the cable pulled (socat killed: the device disappears) and plugged back (socat
// again on the same names): the console works again; and a device node that disappears while
// the pty itself stays open is noticed by the console's device watch.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { after, test } from "node:test";
import { SerialPort } from "serialport";
import { hashInstallerPassword } from "../../agent/appliance/password.ts";
import { startAgent, tempDir, until, type RunningAgent } from "./harness.ts";

const PASSWORD = "install-3r-Secret";
const dir = tempDir("ringedge-serial-");
const ttyA = path.join(dir, "ttyA");
const ttyB = path.join(dir, "ttyB");
let socat: ChildProcess | undefined;
let agent: RunningAgent | undefined;
let term: Terminal | undefined;

after(async () => {
  await term?.close();
  await agent?.stop();
  socat?.kill("SIGKILL");
});

async function plugIn(): Promise<void> {
  socat = spawn("socat", ["-d", "-d", `pty,raw,echo=0,link=${ttyA}`, `pty,raw,echo=0,link=${ttyB}`], { stdio: "ignore" });
  await until(() => fs.existsSync(ttyA) && fs.existsSync(ttyB), 5000, 20);
}

async function unplug(): Promise<void> {
  const p = socat!;
  const exited = new Promise((r) => p.once("exit", r));
  p.kill("SIGTERM");
  await exited;
  await until(() => !fs.existsSync(ttyA), 3000, 20);
}

/** The installer's terminal on ttyB: everything received, and waits on it. */
class Terminal {
  private rx = Buffer.alloc(0);
  private mark = 0;
  private constructor(private readonly port: SerialPort) {
    port.on("data", (d: Buffer) => (this.rx = Buffer.concat([this.rx, d])));
  }

  static open(): Promise<Terminal> {
    return new Promise((resolve, reject) => {
      const port = new SerialPort({ path: ttyB, baudRate: 115200, autoOpen: false, lock: false });
      port.open((err) => (err ? reject(err) : resolve(new Terminal(port))));
    });
  }

  get all(): Buffer {
    return this.rx;
  }

  send(data: string | Buffer): void {
    this.port.write(data);
  }

  /** Waits for re in what arrived since the last expect; returns that text and moves past it. */
  async expect(re: RegExp, timeoutMs = 5000): Promise<string> {
    const text = await until(() => {
      const t = this.rx.subarray(this.mark).toString("latin1");
      const m = re.exec(t);
      if (!m) return undefined;
      this.mark += m.index + m[0].length;
      return t.slice(0, m.index + m[0].length);
    }, timeoutMs, 10).catch(() => {
      throw new Error(`terminal never showed ${re}; got ${JSON.stringify(this.rx.subarray(this.mark).toString("latin1").slice(-600))}`);
    });
    return text;
  }

  close(): Promise<void> {
    return new Promise((r) => (this.port.isOpen ? this.port.close(() => r()) : r()));
  }
}

const PROMPT = /ringedge:site-1> $/;

test("serial console over a socat pty pair: login, lock-out, commands, garbage, long line, unplug and replug", async () => {
  await plugIn();
  agent = await startAgent({
    env: {
      RINGEDGE_SERIAL_DEVICE: ttyA,
      RINGEDGE_SERIAL_PASSWORD: await hashInstallerPassword(PASSWORD),
      RINGEDGE_SERIAL_LOCKOUT_FAILURES: "3",
      RINGEDGE_SERIAL_LOCKOUT_S: "1",
    },
  });
  assert.equal((await agent.cli(["device", "add", "1001", "--password", "serial-Secret-1", "--name", "Front desk"])).code, 0);
  await agent.waitForLog(/serial console open/);
  term = await Terminal.open();

  // Enter wakes the line: a fresh prompt, no attempt counted.
  term.send("\r");
  await term.expect(/Password: $/);
  for (let i = 1; i <= 3; i++) {
    term.send(`wrong-${i}\r`);
    await term.expect(i < 3 ? /Login incorrect\r\nPassword: $/ : /Too many failures: locked for 1 s\r\nPassword: $/);
  }
  assert.ok(!term.all.toString("latin1").includes("wrong-"), "passwords are never echoed");
  term.send(`${PASSWORD}\r`);
  await term.expect(/Login locked; try again in 1 s\r\nPassword: $/);
  await new Promise((r) => setTimeout(r, 1100));
  // CRLF from the terminal: one line, not a login plus an empty one.
  term.send(`${PASSWORD}\r\n`);
  await term.expect(/Logged in\. Type 'help' for commands\.\r\nringedge:site-1> $/);

  term.send("status\r");
  const status = await term.expect(PROMPT);
  assert.match(status, /site site-1 +pid \d+/);
  assert.match(status, /devices +1 \(1 physical, 0 soft\)/);
  term.send("devices\n");
  const devices = await term.expect(PROMPT);
  assert.match(devices, /USERNAME +KIND +STATE +NAME\r\n1001 +physical +offline +Front desk\r\n/);
  term.send("help\r");
  const help = await term.expect(PROMPT);
  for (const l of [status, devices, help].join("").split("\r\n")) assert.ok(l.length <= 80, `over 80 columns: ${l}`);
  assert.match(help, /phones[\s\S]*groups[\s\S]*calls/);
  term.send("calls\r");
  assert.match(await term.expect(PROMPT), /no calls ringing/);

  // Typing errors and line noise: backspace/DEL edit, escape sequences and binary are dropped.
  term.send("devx\x7fices\r");
  assert.match(await term.expect(PROMPT), /USERNAME/);
  term.send(Buffer.from([0x00, 0xff, 0xfe, 0x1b, 0x5b, 0x41, 0x80, 0x9b, 0x07, 0x1b, 0x5b, 0x32, 0x4a, 0x73, 0x74, 0xc3, 0xa9, 0x0d]));
  assert.match(await term.expect(PROMPT), /unknown command 'st'/);
  term.send("half a line\x03");
  await term.expect(/\^C\r\nringedge:site-1> $/);

  // 10 KB without a line end, then Enter: one bell, refused, and the console still answers.
  term.send("x".repeat(10 * 1024) + "\r");
  await term.expect(/line too long \(over 512 characters\); ignored\r\nringedge:site-1> $/);
  term.send("status\r");
  await term.expect(/site site-1[\s\S]*ringedge:site-1> $/);
  const rx = term.all;
  assert.ok(rx.every((b) => (b >= 0x20 && b <= 0x7e) || b === 0x0d || b === 0x0a || b === 0x08 || b === 0x07), "only printable ASCII and line controls are ever sent");
  assert.ok(rx.filter((b) => b === 0x07).length === 1, "one bell for the overlong line");

  // The cable is pulled: the device disappears; the agent keeps running and retries.
  await term.close();
  term = undefined;
  await unplug();
  await agent.waitForLog(/serial console device lost; reopening/);
  assert.equal((await agent.cli(["status", "--json"])).code, 0, "the agent is unaffected");
  // ... and plugged back: same device name, a new session that must log in again.
  await plugIn();
  await until(() => (agent!.log().match(/serial console open/g) ?? []).length >= 2, 15_000, 50);
  term = await Terminal.open();
  term.send("\r");
  await term.expect(/Password: $/);
  term.send(`${PASSWORD}\r`);
  await term.expect(/Logged in\. Type 'help' for commands\.\r\nringedge:site-1> $/);
  term.send("devices\r");
  assert.match(await term.expect(PROMPT), /1001 +physical/);
  term.send("\x04");
  await term.expect(/Logged out\.\r\nPassword: $/);
});

test("a device node that disappears while its pty stays open (a udev link removed) is noticed and reopened when it is back", async () => {
  await agent?.stop();
  agent = undefined;
  if (socat === undefined || socat.exitCode !== null) await plugIn();
  // The agent opens a link of its own to ttyA; removing only the link leaves the pty (and
  // serialport's descriptor) intact, so nothing but the device-node watch can notice.
  const link = path.join(dir, "ttyLink");
  fs.rmSync(link, { force: true });
  fs.symlinkSync(fs.realpathSync(ttyA), link);
  agent = await startAgent({ env: { RINGEDGE_SERIAL_DEVICE: link, RINGEDGE_SERIAL_PASSWORD: await hashInstallerPassword(PASSWORD) } });
  await agent.waitForLog(/serial console open/);
  fs.rmSync(link);
  await agent.waitForLog(/serial console device lost; reopening/);
  fs.symlinkSync(fs.realpathSync(ttyA), link);
  await until(() => (agent!.log().match(/serial console open/g) ?? []).length >= 2, 15_000, 50);
});
