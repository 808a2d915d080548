// The installer console on the appliance's serial port (settings.serialDevice, 8N1): a
// password login with lock-out, a prompt with line editing (lineedit.ts), and the installer
// commands of the CLI (the same command table, agent/console/commands.ts) with output that
// fits 80 columns of plain ASCII.
//
// The port is untrusted and unreliable: the cable is pulled and plugged back (the device
// disappears and reappears: reopened with back-off), line noise arrives, lines are endless.
// Nothing here blocks the event loop: port I/O is asynchronous, output is dropped rather than
// queued without bound, and password checks run scrypt in the thread pool.
import fs from "node:fs";
import type { Logger } from "../log.ts";
import type { Settings } from "../config.ts";
import { runCommand, type CommandTable } from "./control.ts";
import { LineEditor } from "./lineedit.ts";
import { checkInstallerPassword, hashInstallerPassword, verifyInstallerPassword } from "../appliance/password.ts";

export const WIDTH = 80;
/** Longest line accepted; longer input rings the bell once and is refused at Enter. */
export const MAX_LINE = 512;
/** Output waiting for a slow or stuck terminal beyond this is dropped, not buffered. */
const MAX_PENDING_OUTPUT = 64 * 1024;
/** Longest lock-out, however many in a row. */
const MAX_LOCKOUT_MS = 86_400_000;

/** What the console needs of a serial port (SerialPort satisfies it; tests may fake it). */
export interface PortLike {
  write(data: string): unknown;
  close(cb?: (err?: Error | null) => void): void;
  on(event: "data", fn: (chunk: Buffer) => void): unknown;
  on(event: "close" | "error", fn: (err?: Error | null) => void): unknown;
  readonly writableLength: number;
}

export type OpenPort = (path: string, baudRate: number) => Promise<PortLike>;

export type ConsoleSettings = Pick<Settings, "siteId" | "serialDevice" | "serialBaud" | "serialPassword" | "serialLockoutFailures" | "serialLockoutS" | "serialIdleTimeoutS">;

/**
 * Keeps a new installer password hash (the agent writes it to the settings file as
 * serialPassword and applies it live). Given, a console with no password set lets the first
 * login at the port choose one: after a factory reset that is the way back in.
 */
export type SavePassword = (hash: string) => Promise<void>;

// ---------------------------------------------------------------------------------------------
// Lock-out: survives unplugging and every session (pulling the cable must not reset it).

export class LoginGuard {
  private failures = 0;
  private lockouts = 0;
  private until = 0;

  constructor(private readonly settings: ConsoleSettings, private readonly now: () => number = Date.now) {}

  /** Ms left of a lock-out, 0 when logins are allowed. */
  lockedForMs(): number {
    return Math.max(0, this.until - this.now());
  }

  /** A wrong password; returns the lock-out just started (ms), or 0. */
  failed(): number {
    this.failures++;
    if (this.failures < this.settings.serialLockoutFailures) return 0;
    // 5 failures → 60 s, then 120 s, 240 s ... until a login succeeds.
    const ms = Math.min(MAX_LOCKOUT_MS, this.settings.serialLockoutS * 1000 * 2 ** Math.min(this.lockouts, 30));
    this.lockouts++;
    this.failures = 0;
    this.until = this.now() + ms;
    return ms;
  }

  succeeded(): void {
    this.failures = 0;
    this.lockouts = 0;
    this.until = 0;
  }
}

// ---------------------------------------------------------------------------------------------
// Output formatting: plain ASCII, at most WIDTH columns.

/** Printable ASCII only: names from the store or the console could hold anything. */
export function ascii(s: unknown): string {
  return String(s ?? "").replace(/[^\x20-\x7e]/g, "?");
}

export function clip(s: string, width: number): string {
  return s.length <= width ? s : width <= 1 ? s.slice(0, width) : s.slice(0, width - 1) + "~";
}

/** Columns: each cell clipped to its width; the last column takes what is left of 80. */
export function table(headers: string[], rows: unknown[][], widths: number[]): string[] {
  const line = (cells: unknown[]): string => {
    let out = "";
    cells.forEach((c, i) => {
      const last = i === cells.length - 1;
      const w = last ? Math.max(1, WIDTH - out.length) : widths[i] ?? 10;
      const cell = clip(ascii(c), w);
      out += last ? cell : cell.padEnd(w) + " ";
    });
    return clip(out.trimEnd(), WIDTH);
  };
  return [line(headers), ...rows.map(line)];
}

/** key: value lines, wrapped to 80 columns. */
function pairs(obj: Record<string, unknown>): string[] {
  return Object.entries(obj)
    .filter(([, v]) => v !== undefined && v !== null)
    .map(([k, v]) => clip(`${ascii(k).padEnd(12)} ${ascii(typeof v === "object" ? JSON.stringify(v) : v)}`, WIDTH));
}

// ---------------------------------------------------------------------------------------------
// The console commands: words typed → the shared command table → formatted lines.

type Words = string[];
type Exec = (cmd: string, args?: Record<string, unknown>) => Promise<unknown>;

interface ConsoleCommand {
  usage: string;
  help: string;
  run(words: Words, exec: Exec): Promise<string[]>;
}

const state = (online: boolean | undefined, registered: boolean | undefined): string => (online === undefined ? "-" : online ? "online" : registered ? "no-answer" : "offline");

/** Split a command line into words; "double quotes" group words (names with spaces). */
export function splitWords(line: string): Words {
  const words: string[] = [];
  const re = /"([^"]*)"|(\S+)/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(line)) !== null) words.push(m[1] ?? m[2]!);
  return words;
}

const COMMANDS: Record<string, ConsoleCommand> = {
  status: {
    usage: "status",
    help: "agent status: SIP, devices online, calls",
    async run(_w, exec) {
      const s = (await exec("status")) as Record<string, any>;
      const d = s.devices ?? {};
      const r = s.routing;
      const dr = s.drain;
      const out = [
        `site ${s.siteId}  pid ${s.pid}  up ${s.uptimeS}s  version ${s.version ?? "?"}`,
        ...(dr?.draining ? [`DRAINING for ${dr.forS}s${dr.overdue ? `, past its ${dr.timeoutS}s timeout` : ""}: new calls refused`] : []),
        `console  ${s.mqtt ? `mqtt ${s.mqtt.connected ? "connected" : "disconnected"}` : "not configured"}`,
        `prov     ${((s.provisioningUrls ?? []) as string[]).join(" ") || "-"}`,
        `sip      ${((s.sip ?? []) as Array<{ transport: string; address: string; port: number }>).map((a) => `${a.transport}:${a.address}:${a.port}`).join("  ")}`,
        `devices  ${d.total} (${d.physical} physical, ${d.soft} soft)  registered ${d.registered}  online ${d.online}`,
        `calls    ringing ${s.proxy?.calls ?? 0}  connected ${s.proxy?.dialogs ?? 0}  queued ${r?.queued ?? 0}`,
        `site     ${s.site ? `version ${s.site.version} from ${s.site.source} (${s.site.users} users, ${s.site.groups} groups)` : "none applied"}`,
        `guard    banned sources ${s.guard?.bannedSources ?? 0}`,
      ];
      if (r?.latency) out.push(`latency  first fork p50 ${r.latency.p50Us}us p99 ${r.latency.p99Us}us  over budget ${r.latency.overBudget} of ${r.latency.count}`);
      return out.map((l) => clip(ascii(l), WIDTH));
    },
  },
  devices: {
    usage: "devices",
    help: "SIP devices and their state",
    async run(_w, exec) {
      const list = (await exec("device.list")) as Array<Record<string, any>>;
      return table(["USERNAME", "KIND", "STATE", "NAME"], list.map((d) => [d.username, d.kind, state(d.online, d.registered), d.displayName ?? ""]), [16, 8, 9]);
    },
  },
  phones: {
    usage: "phones",
    help: "desk phones: MAC, extension, model, state",
    async run(_w, exec) {
      const list = (await exec("phone.list")) as Array<Record<string, any>>;
      return table(["MAC", "EXT", "MODEL", "STATE", "NAME"], list.map((p) => [p.mac, p.extension, p.model ?? "", state(p.online, p.registered), p.name ?? ""]), [12, 8, 20, 9]);
    },
  },
  phone: {
    usage: "phone show|add|adopt|remove|seen|resync ...",
    help: "phone show <mac|ext> | add <mac> <vendor/model> <ext> [\"name\"] | adopt <mac> <ext> [vendor/model] | remove <mac|ext> | seen | resync <mac|ext|all>",
    async run(w, exec) {
      const [sub, a, b, c, d] = w;
      switch (sub) {
        case "show":
          if (!a) return ["usage: phone show <mac|extension>"];
          return pairs((await exec("phone.show", { ref: a })) as Record<string, unknown>);
        case "add": {
          if (!a || !b || !c) return ["usage: phone add <mac> <vendor/model> <extension> [\"name\"]"];
          const p = (await exec("phone.add", { mac: a, model: b, extension: c, ...(d ? { name: d } : {}) })) as Record<string, unknown>;
          return [clip(ascii(`added phone ${p.mac} extension ${p.extension} (${p.model})`), WIDTH)];
        }
        case "adopt": {
          if (!a || !b) return ["usage: phone adopt <mac> <extension> [model]"];
          const p = (await exec("phone.adopt", { mac: a, extension: b, ...(c ? { model: c } : {}) })) as Record<string, unknown>;
          return [clip(ascii(`adopted phone ${p.mac} extension ${p.extension} (${p.model})`), WIDTH)];
        }
        case "remove": {
          if (!a) return ["usage: phone remove <mac|extension>"];
          const r = (await exec("phone.remove", { ref: a })) as Record<string, unknown>;
          return [clip(ascii(`removed phone ${r.removed} extension ${r.extension}`), WIDTH)];
        }
        case "seen": {
          const list = (await exec("phone.seen")) as Array<Record<string, any>>;
          if (list.length === 0) return ["no unadopted phones have asked for a configuration"];
          return table(["MAC", "IP", "VENDOR", "MODEL", "LAST SEEN"], list.map((s) => [s.mac, s.ip, s.vendor ?? "", s.model ?? "", s.lastSeen ?? ""]), [12, 15, 10, 20]);
        }
        case "resync": {
          if (!a) return ["usage: phone resync <mac|extension|all>"];
          const ids = (await exec("phone.targets", a === "all" ? { all: true } : { ref: a })) as string[];
          const results = (await exec("phone.resync", { deviceIds: ids })) as Array<Record<string, any>>;
          if (results.length === 0) return ["no phones to re-sync"];
          return table(["PHONE", "RESULT"], results.map((r) => [r.mac ?? r.extension ?? r.deviceId ?? "?", r.ok ? `ok (${r.event ?? "check-sync"})` : `failed: ${r.error ?? "?"}`]), [16]);
        }
        default:
          return [...(sub === undefined ? [] : [clip(`unknown phone command '${ascii(sub)}'`, WIDTH)]), clip(`usage: ${this.help}`, WIDTH)];
      }
    },
  },
  groups: {
    usage: "groups",
    help: "call groups of the applied site",
    async run(_w, exec) {
      const list = (await exec("group.list")) as Array<Record<string, any>>;
      if (list.length === 0) return ["no groups (no site applied?)"];
      return table(["NUMBER", "ID", "STRATEGY", "MEMBERS", "ONLINE", "NAME"], list.map((g) => [g.number, g.id, g.strategy, g.members, g.online ?? "-", g.name]), [6, 14, 12, 7, 6]);
    },
  },
  group: {
    usage: "group <id|number>",
    help: "one group: members and who is online",
    async run(w, exec) {
      if (!w[0]) return ["usage: group <id|number>"];
      const g = (await exec("group.show", { ref: w[0], id: w[0] })) as Record<string, any>;
      const head = [clip(ascii(`${g.number} ${g.name} (${g.id}): ${g.strategy}, ${g.ringCount} rings, no answer: ${g.noAnswer}`), WIDTH)];
      const members = (g.members ?? []) as Array<Record<string, any>>;
      return [...head, ...table(["EXT", "MEMBER", "AVAILABILITY", "ONLINE"], members.map((m) => [m.extension, m.name, m.availability, m.online === undefined ? "-" : m.online ? "yes" : "no"]), [6, 24, 13])];
    },
  },
  why: {
    usage: "why <user> [call-id]",
    help: "why a user's phone rang or not: last call, or one",
    async run(w, exec) {
      if (!w[0] || w.length > 2) return ["usage: why <user id> [call-id]"];
      const v = (await exec("call.why", w[1] !== undefined ? { callId: w[1], user: w[0] } : { last: true, user: w[0] })) as { lines: string[] };
      return v.lines.map((l) => clip(ascii(l), WIDTH));
    },
  },
  calls: {
    usage: "calls",
    help: "calls ringing now",
    async run(_w, exec) {
      const list = (await exec("call.list")) as Array<{ callId: string; caller: string; groupId?: string; offered: string[]; since: number }>;
      if (list.length === 0) return ["no calls ringing"];
      const now = Date.now();
      return table(["FOR S", "CALLER", "GROUP", "OFFERED TO"], list.map((c) => [Math.round((now - c.since) / 1000), c.caller, c.groupId ?? "-", c.offered.join(",")]), [5, 24, 14]);
    },
  },
};

// ---------------------------------------------------------------------------------------------
// One session: from login to logout, over one open port.

type Phase = "password" | "verifying" | "new-password" | "new-again" | "shell" | "closed";

export interface SessionDeps {
  settings: ConsoleSettings;
  table: CommandTable;
  guard: LoginGuard;
  write: (text: string) => void;
  log: Logger;
  savePassword?: SavePassword;
}

export class ConsoleSession {
  private readonly editor = new LineEditor(MAX_LINE);
  private phase: Phase = "password";
  /** Lines are handled one at a time, in order (a command may take a while). */
  private chain: Promise<void> = Promise.resolve();
  /** Logs an idle session out (serialIdleTimeoutS); re-armed by every input. */
  private idleTimer: NodeJS.Timeout | undefined;
  /** The first entry of a new password, until it is typed again. */
  private newPassword: string | undefined;

  constructor(private readonly d: SessionDeps) {}

  begin(): void {
    this.d.write(`\r\nringedge ${ascii(this.d.settings.siteId)} installer console\r\n`);
    this.askPassword();
  }

  get loggedIn(): boolean {
    return this.phase === "shell";
  }

  /** Bytes from the terminal. Never throws. */
  input(bytes: Uint8Array): void {
    this.armIdle();
    const r = this.editor.feed(bytes);
    if (r.echo) this.d.write(r.echo);
    for (const ev of r.events) this.chain = this.chain.then(() => this.handle(ev)).catch((e) => this.d.log.warn("console line failed", { err: (e as Error).message }));
  }

  /** Resolves when every line received so far was handled (tests). */
  idle(): Promise<void> {
    return this.chain;
  }

  close(): void {
    this.phase = "closed";
    this.newPassword = undefined;
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
  }

  /**
   * An installer who walks away leaves no open shell behind: after serialIdleTimeoutS without
   * input (read when armed, so a SIGHUP applies to the next input) the session is logged out.
   */
  private armIdle(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    const s = this.d.settings.serialIdleTimeoutS;
    if (this.phase === "closed" || !(s > 0)) return;
    this.idleTimer = setTimeout(() => this.idleOut(s), s * 1000);
    this.idleTimer.unref();
  }

  private idleOut(s: number): void {
    this.idleTimer = undefined;
    if (this.phase === "shell") {
      this.d.log.info("serial console session logged out after idling", { idleS: s });
      this.d.write(`\r\nNo input for ${s} s: logged out.\r\n`);
      this.askPassword();
    } else if (this.phase === "new-password" || this.phase === "new-again") {
      this.d.write(`\r\nNo input for ${s} s: no password was set.\r\n`);
      this.askPassword();
    }
  }

  private prompt(): string {
    return `ringedge:${ascii(this.d.settings.siteId)}> `;
  }

  private askPassword(): void {
    this.phase = "password";
    this.newPassword = undefined;
    this.editor.reset();
    this.editor.echoMode = "none";
    this.d.write("Password: ");
  }

  private async handle(ev: { kind: "line"; text: string; truncated: boolean } | { kind: "interrupt" } | { kind: "eof" }): Promise<void> {
    if (this.phase === "closed") return;
    if (this.phase === "password") {
      // Enter alone just asks again (a terminal waking the line); it is no attempt.
      if (ev.kind !== "line" || (ev.text === "" && !ev.truncated)) return this.askPassword();
      return this.login(ev.text, ev.truncated);
    }
    if (this.phase === "new-password" || this.phase === "new-again") {
      if (ev.kind !== "line") {
        this.d.write("No password was set.\r\n");
        return this.askPassword();
      }
      return this.choosePassword(ev.text, ev.truncated);
    }
    if (this.phase !== "shell") return;
    if (ev.kind === "eof") return this.logout();
    if (ev.kind === "interrupt") return this.d.write(this.prompt());
    if (ev.truncated) {
      this.d.write(`line too long (over ${MAX_LINE} characters); ignored\r\n${this.prompt()}`);
      return;
    }
    await this.command(ev.text);
  }

  private async login(pw: string, truncated: boolean): Promise<void> {
    const locked = this.d.guard.lockedForMs();
    if (locked > 0) {
      this.d.write(`Login locked; try again in ${Math.ceil(locked / 1000)} s\r\n`);
      return this.askPassword();
    }
    const hash = this.d.settings.serialPassword;
    if (hash === "") {
      if (this.d.savePassword === undefined) {
        this.d.write("No installer password is set (ringedge console-password on the appliance).\r\n");
        return this.askPassword();
      }
      // None set (a new appliance, or after a factory reset): whoever is at the port chooses it.
      this.d.write("No installer password is set. Choose one now (8-128 printable characters).\r\n");
      return this.askNew("new-password", "New password: ");
    }
    this.phase = "verifying";
    const ok = !truncated && pw !== "" && (await verifyInstallerPassword(pw, hash));
    if (this.phase !== "verifying") return; // unplugged meanwhile
    if (ok) {
      this.d.guard.succeeded();
      this.d.log.info("installer logged in on the serial console");
      this.phase = "shell";
      this.editor.echoMode = "plain";
      this.d.write(`Logged in. Type 'help' for commands.\r\n${this.prompt()}`);
      return;
    }
    const lockMs = this.d.guard.failed();
    this.d.log.warn("wrong installer password on the serial console", lockMs > 0 ? { lockedForS: lockMs / 1000 } : undefined);
    this.d.write(lockMs > 0 ? `Login incorrect. Too many failures: locked for ${Math.ceil(lockMs / 1000)} s\r\n` : "Login incorrect\r\n");
    this.askPassword();
  }

  private askNew(phase: "new-password" | "new-again", prompt: string): void {
    this.phase = phase;
    this.editor.reset();
    this.editor.echoMode = "none";
    this.d.write(prompt);
  }

  private async choosePassword(pw: string, truncated: boolean): Promise<void> {
    if (this.phase === "new-password") {
      const why = truncated ? "the password is too long" : checkInstallerPassword(pw);
      if (why) {
        this.d.write(`${why}\r\n`);
        return this.askNew("new-password", "New password: ");
      }
      this.newPassword = pw;
      return this.askNew("new-again", "Again: ");
    }
    const first = this.newPassword;
    this.newPassword = undefined;
    if (truncated || pw !== first) {
      this.d.write("The passwords differ; no password was set.\r\n");
      return this.askPassword();
    }
    // Someone may have set one meanwhile (console-password --write and a SIGHUP): that one wins.
    if (this.d.settings.serialPassword !== "" || this.d.savePassword === undefined) {
      this.d.write("A password was set meanwhile; log in with it.\r\n");
      return this.askPassword();
    }
    this.phase = "verifying";
    try {
      await this.d.savePassword(await hashInstallerPassword(pw));
    } catch (e) {
      this.d.log.error("installer password chosen on the serial console could not be saved", { err: (e as Error).message });
      if (this.phase !== "verifying") return;
      this.d.write(`Could not save it (${clip(ascii((e as Error).message), 50)}); no password was set.\r\n`);
      return this.askPassword();
    }
    if (this.phase !== "verifying") return; // unplugged meanwhile
    this.d.log.warn("installer password set at the serial console (none was set)");
    this.d.write("Installer password set. Log in with it.\r\n");
    this.askPassword();
  }

  private logout(): void {
    this.d.write("Logged out.\r\n");
    this.d.log.info("installer logged out of the serial console");
    this.askPassword();
  }

  private async command(line: string): Promise<void> {
    const words = splitWords(line);
    const [name, ...rest] = words;
    let out: string[] = [];
    if (name === undefined) out = [];
    else if (name === "logout" || name === "exit" || name === "quit") return this.logout();
    else if (name === "help" || name === "?") out = [...Object.values(COMMANDS).map((c) => clip(`  ${c.usage.padEnd(22)} ${c.help}`, WIDTH)), "  logout (or Ctrl-D)      end the session"];
    else {
      const cmd = Object.prototype.hasOwnProperty.call(COMMANDS, name) ? COMMANDS[name] : undefined;
      if (!cmd) out = [clip(`unknown command '${ascii(name)}' (type 'help')`, WIDTH)];
      else {
        try {
          out = await cmd.run(rest, (c, args = {}) => this.exec(c, args));
        } catch (e) {
          out = [clip(`error: ${ascii((e as Error).message)}`, WIDTH)];
        }
      }
    }
    if (this.phase !== "shell") return;
    this.d.write(out.map((l) => l + "\r\n").join("") + this.prompt());
  }

  private async exec(cmd: string, args: Record<string, unknown>): Promise<unknown> {
    const reply = await runCommand(this.d.table, JSON.stringify({ cmd, args }));
    if (!reply.ok) throw new Error(reply.error);
    return reply.result;
  }
}

// ---------------------------------------------------------------------------------------------
// The port: open, reopen with back-off when it disappears, one session per open.

export interface SerialConsoleOptions {
  settings: ConsoleSettings;
  table: CommandTable;
  log: Logger;
  savePassword?: SavePassword;
  openPort?: OpenPort;
  /** Reopen back-off: first wait, doubled per failed attempt up to max. */
  reopenMinMs?: number;
  reopenMaxMs?: number;
  now?: () => number;
}

export const openSerialPort: OpenPort = async (path, baudRate) => {
  const { SerialPort } = await import("serialport");
  return new Promise((resolve, reject) => {
    // 8N1, no flow control (the usual appliance console); no exclusive lock on a pty.
    const port = new SerialPort({ path, baudRate, dataBits: 8, parity: "none", stopBits: 1, rtscts: false, autoOpen: false, lock: false });
    port.open((err) => (err ? reject(err) : resolve(port as unknown as PortLike)));
  });
};

/** How often an open console checks that its device node is still there. */
const DEVICE_WATCH_MS = 1000;

export class SerialConsole {
  readonly guard: LoginGuard;
  private port: PortLike | undefined;
  private session: ConsoleSession | undefined;
  private timer: NodeJS.Timeout | undefined;
  /** Checks that the open device node still exists (see open()). */
  private watch: NodeJS.Timeout | undefined;
  private attempts = 0;
  private running = false;
  private droppedOutput = 0;
  /** Opens done (a test waits for the reopen after a replug). */
  opens = 0;

  constructor(private readonly o: SerialConsoleOptions) {
    this.guard = new LoginGuard(o.settings, o.now);
  }

  start(): void {
    this.running = true;
    void this.open();
  }

  get current(): ConsoleSession | undefined {
    return this.session;
  }

  async stop(): Promise<void> {
    this.running = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.watch) clearInterval(this.watch);
    this.watch = undefined;
    this.session?.close();
    const p = this.port;
    this.port = undefined;
    if (p) await new Promise<void>((r) => p.close(() => r()));
  }

  private async open(): Promise<void> {
    if (!this.running) return;
    const { serialDevice: path, serialBaud: baud } = this.o.settings;
    let port: PortLike;
    try {
      // The device node comes and goes with USB adapters and ptys: wait for it to exist.
      await fs.promises.access(path);
      port = await (this.o.openPort ?? openSerialPort)(path, baud);
    } catch (e) {
      if (this.attempts === 0) this.o.log.warn("serial console device not available; retrying", { device: path, err: (e as Error).message });
      this.retry();
      return;
    }
    if (!this.running) {
      port.close();
      return;
    }
    this.attempts = 0;
    this.opens++;
    this.port = port;
    this.o.log.info("serial console open", { device: path, baud });
    const session = new ConsoleSession({ settings: this.o.settings, table: this.o.table, guard: this.guard, write: (t) => this.write(port, t), log: this.o.log, ...(this.o.savePassword ? { savePassword: this.o.savePassword } : {}) });
    this.session = session;
    let gone = false;
    const lost = (err?: Error | null): void => {
      if (gone) return;
      gone = true;
      if (this.watch) clearInterval(this.watch);
      this.watch = undefined;
      session.close();
      if (this.port === port) this.port = undefined;
      if (this.session === session) this.session = undefined;
      if (!this.running) return;
      this.o.log.warn("serial console device lost; reopening", { device: path, err: err?.message });
      port.close(() => undefined);
      this.retry();
    };
    port.on("data", (chunk) => session.input(chunk));
    port.on("error", (err) => lost(err));
    port.on("close", (err) => lost(err));
    // serialport reports a hang-up as close or error; a device node that disappears (a USB
    // adapter pulled, a pty pair gone) is also caught here, once a second, in case nothing
    // in the poller noticed.
    this.watch = setInterval(() => {
      fs.promises.access(path).catch((e: Error) => lost(e));
    }, DEVICE_WATCH_MS);
    this.watch.unref();
    session.begin();
  }

  private retry(): void {
    if (!this.running) return;
    const min = this.o.reopenMinMs ?? 500;
    const max = this.o.reopenMaxMs ?? 10_000;
    const delay = Math.min(max, min * 2 ** Math.min(this.attempts, 20));
    this.attempts++;
    this.timer = setTimeout(() => void this.open(), delay);
    this.timer.unref();
  }

  private write(port: PortLike, text: string): void {
    if (this.port !== port) return;
    if (port.writableLength > MAX_PENDING_OUTPUT) {
      if (this.droppedOutput++ === 0) this.o.log.warn("serial console output dropped: the terminal does not read");
      return;
    }
    try {
      port.write(text);
    } catch {
      // a write on a port closing under us: the close handler reopens
    }
  }
}
