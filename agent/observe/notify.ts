// systemd service notification (sd_notify(3)): READY=1 once the agent has bound its sockets and
// loaded its store, WATCHDOG=1 from the event loop every WatchdogSec/2 (so a hung loop stops the
// pings and systemd restarts the unit), STATUS= with calls, phones online and the console link,
// and STOPPING=1 on the way out. Outside systemd (no NOTIFY_SOCKET) everything here is inert.
//
// Sending: NOTIFY_SOCKET is a unix datagram socket and Node has no unix dgram sockets. The npm
// packages that send sd_notify (sd-notify, unix-dgram) are native addons, i.e. a compiler and
// libsystemd headers on every build host. systemd ships `systemd-notify` wherever NOTIFY_SOCKET
// can exist, so the agent runs it: one short child per message (every WatchdogSec/2, 15 s with
// the example unit). systemd attributes a notification by the sender's PID; the child is not the
// main PID, so the unit needs NotifyAccess=all, and systemd-notify's default (since v246) waits
// until systemd has read the message (a BARRIER=1 round trip) before exiting, so the message is
// never dropped for coming from an already-dead process.
import { spawn } from "node:child_process";
import type { Logger } from "../log.ts";

/** What systemd told the service through its environment (systemd.exec(5), sd_watchdog_enabled(3)). */
export interface NotifyEnv {
  /** NOTIFY_SOCKET; undefined outside systemd (or a stand-in). */
  socket: string | undefined;
  /** Watchdog interval in µs, when WATCHDOG_USEC is set and meant for this process. */
  watchdogUsec: number | undefined;
}

/** Reads NOTIFY_SOCKET / WATCHDOG_USEC / WATCHDOG_PID. Malformed values switch the feature off. */
export function readNotifyEnv(env: NodeJS.ProcessEnv, pid: number = process.pid): NotifyEnv {
  const socket = env.NOTIFY_SOCKET !== undefined && env.NOTIFY_SOCKET !== "" && env.NOTIFY_SOCKET.length <= 108 ? env.NOTIFY_SOCKET : undefined;
  let watchdogUsec: number | undefined;
  const raw = env.WATCHDOG_USEC;
  if (raw !== undefined && /^[1-9][0-9]{0,15}$/.test(raw)) {
    // sd_watchdog_enabled(3): WATCHDOG_PID, when set, names the process the watchdog is for.
    const forPid = env.WATCHDOG_PID;
    if (forPid === undefined || forPid === String(pid)) watchdogUsec = Number(raw);
  }
  return { socket, watchdogUsec: socket === undefined ? undefined : watchdogUsec };
}

/** Ping period: half the watchdog interval (sd_watchdog_enabled(3) recommends that), at least 100 ms. */
export function pingIntervalMs(watchdogUsec: number): number {
  return Math.max(100, Math.floor(watchdogUsec / 2000));
}

export interface StatusFacts {
  calls: number;
  phonesOnline: number;
  phonesTotal: number;
  /** "up" / "down", or "off" without a broker. */
  link: "up" | "down" | "off";
}

/** The one-line STATUS= text `systemctl status ringedge` shows. No newlines (the protocol is line based). */
export function statusLine(f: StatusFacts): string {
  return `${f.calls} call${f.calls === 1 ? "" : "s"}, ${f.phonesOnline}/${f.phonesTotal} phones online, console ${f.link}`;
}

/** Sends one notification; resolves when done (true = delivered). Replaceable in tests. */
export type NotifySender = (socket: string, fields: string[]) => Promise<boolean>;

/** Runs `systemd-notify VAR=VALUE...` with NOTIFY_SOCKET set; bounded to 5 s. */
export const systemdNotifyCli: NotifySender = (socket, fields) =>
  new Promise((resolve) => {
    let done = false;
    const finish = (ok: boolean): void => {
      if (!done) resolve(ok);
      done = true;
    };
    let child;
    try {
      child = spawn("systemd-notify", fields, { env: { ...process.env, NOTIFY_SOCKET: socket }, stdio: ["ignore", "ignore", "pipe"] });
    } catch {
      finish(false);
      return;
    }
    let err = "";
    child.stderr?.on("data", (d: Buffer) => (err = (err + d.toString()).slice(-500)));
    const t = setTimeout(() => child.kill("SIGKILL"), 5000);
    t.unref();
    child.on("error", () => {
      clearTimeout(t);
      finish(false);
    });
    child.on("close", (code) => {
      clearTimeout(t);
      finish(code === 0);
    });
  });

export interface NotifierOptions {
  env: NotifyEnv;
  status: () => StatusFacts;
  log: Logger;
  send?: NotifySender;
}

export class SystemdNotifier {
  private timer: NodeJS.Timeout | undefined;
  /** One message in flight at a time; a newer one waits in `next` (only the latest is kept). */
  private inFlight = false;
  private next: string[] | undefined;
  private failedOnce = false;
  private readonly send: NotifySender;

  constructor(private readonly o: NotifierOptions) {
    this.send = o.send ?? systemdNotifyCli;
  }

  get enabled(): boolean {
    return this.o.env.socket !== undefined;
  }

  /** READY=1 (call once the sockets are bound and the store is loaded), then the watchdog pings. */
  ready(): void {
    if (!this.enabled) return;
    this.queue(["READY=1", `STATUS=${statusLine(this.o.status())}`]);
    const usec = this.o.env.watchdogUsec;
    if (usec !== undefined) {
      // A timer on the event loop: if the loop hangs, the pings stop and systemd restarts us.
      this.timer = setInterval(() => this.ping(), pingIntervalMs(usec));
      this.timer.unref();
    }
    this.o.log.info("systemd notified", { ready: true, watchdogMs: usec === undefined ? undefined : Math.round(usec / 1000) });
  }

  /** WATCHDOG=1 with a fresh STATUS=. */
  ping(): void {
    if (!this.enabled) return;
    this.queue(["WATCHDOG=1", `STATUS=${statusLine(this.o.status())}`]);
  }

  /** STOPPING=1; stops the pings. */
  async stopping(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (!this.enabled) return;
    this.next = undefined;
    await this.send(this.o.env.socket!, ["STOPPING=1", "STATUS=stopping"]);
  }

  private queue(fields: string[]): void {
    if (this.inFlight) {
      // Coalesce: READY=1 must not be lost behind a newer ping; the newest STATUS= wins.
      this.next = this.next ? mergeFields(this.next, fields) : fields;
      return;
    }
    this.inFlight = true;
    void this.send(this.o.env.socket!, fields).then((ok) => {
      this.inFlight = false;
      if (!ok && !this.failedOnce) {
        this.failedOnce = true;
        this.o.log.warn("systemd notification failed (is systemd-notify installed and NotifyAccess=all set?)", { fields: fields.map((f) => f.split("=")[0]).join(",") });
      }
      const n = this.next;
      this.next = undefined;
      if (n) this.queue(n);
    });
  }
}

/** Joins two notifications into one: variables of `b` override those of `a` (sd_notify(3) takes several per datagram). */
export function mergeFields(a: string[], b: string[]): string[] {
  const m = new Map<string, string>();
  for (const f of [...a, ...b]) m.set(f.slice(0, f.indexOf("=")), f);
  return [...m.values()];
}
