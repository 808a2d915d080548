// CLI commands for the appliance firmware (firmware-hooks/ call them): drain, resume, health,
// console-password. They speak to the running agent over its control socket.
import dgram from "node:dgram";
import net from "node:net";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { CONFIG_ENV, DEFAULT_CONFIG_PATH, parseHostPort, type Settings } from "../config.ts";
import { callAgent, socketAnswers } from "../console/control.ts";
import type { DrainReport } from "./drain.ts";
import type { HealthReport } from "./health.ts";
import { checkInstallerPassword, hashInstallerPassword } from "./password.ts";
import { writeSetting } from "./settings-file.ts";

export const APPLIANCE_HELP: Record<string, string> = {
  drain: `usage: ringedge drain [--timeout <seconds>] [--json]

Stops the running agent taking new calls (new INVITEs get 503 with Retry-After), waits for
ringing and connected calls to finish (default: the drainTimeoutS setting), then flushes the
store and the console outbox. The agent keeps refusing calls until it stops or 'ringedge
resume'. Exit 0: drained, safe to stop (also when no agent runs); 1: calls still up at the
timeout, or a flush failed; 3: the agent did not answer.`,
  resume: `usage: ringedge resume

Calls off a drain: the agent takes new calls again.`,
  health: `usage: ringedge health [--json]

Watchdog check, one line on stdout: the agent answering its control socket in time, SIP answering
(an OPTIONS from here to the first SIP address) with every socket listening, and the store
writable. Reported as warnings, never failing (a restart cures none of them): first-fork latency
over its budget, a drain left on past its timeout; and the broker link when MQTT is configured.
Exit 0 healthy, 1 not (or no agent running).`,
  "console-password": `usage: ringedge console-password [--write]

Reads the serial console's installer password (typed twice on a terminal, else the first line of
stdin) and prints its scrypt hash for the serialPassword setting. --write puts it into the
settings file (--config, RINGEDGE_CONFIG or ${DEFAULT_CONFIG_PATH}) and tells a running agent to
reload (SIGHUP). The password itself is never stored.`,
};

type Out = (s: string) => void;

function controlPath(s: Settings): string {
  return path.join(s.dataDir, "control.sock");
}

export interface ApplianceCliContext {
  settings: Settings;
  flags: Map<string, string | true>;
  json: boolean;
  out: Out;
  err: Out;
  /** The settings file a --write goes to. */
  configPath: string;
  stdin?: NodeJS.ReadStream;
}

export async function applianceCli(command: string, ctx: ApplianceCliContext): Promise<number> {
  switch (command) {
    case "drain":
      return drainCommand(ctx);
    case "resume": {
      if (!(await socketAnswers(controlPath(ctx.settings)))) {
        ctx.err(`ringedge: no agent is running on data directory ${ctx.settings.dataDir}\n`);
        return 3;
      }
      const r = await callAgent(controlPath(ctx.settings), "resume");
      if (!r.ok) throw new Error(r.error);
      const v = r.result as { resumed: boolean };
      ctx.out(ctx.json ? JSON.stringify(v) + "\n" : v.resumed ? "taking calls again\n" : "was not draining\n");
      return 0;
    }
    case "health":
      return healthCommand(ctx);
    case "console-password":
      return consolePasswordCommand(ctx);
    default:
      return 2;
  }
}

async function drainCommand(ctx: ApplianceCliContext): Promise<number> {
  const t = ctx.flags.get("timeout");
  let timeoutS = ctx.settings.drainTimeoutS;
  if (t !== undefined) {
    if (t === true || !/^\d+(\.\d+)?$/.test(t) || Number(t) > 3600) {
      ctx.err("ringedge: --timeout needs a number of seconds 0-3600\n");
      return 2;
    }
    timeoutS = Number(t);
  }
  const sock = controlPath(ctx.settings);
  if (!(await socketAnswers(sock))) {
    ctx.out(ctx.json ? JSON.stringify({ drained: true, running: false }) + "\n" : `no agent running on ${ctx.settings.dataDir}: nothing to drain; safe to stop\n`);
    return 0;
  }
  let reply;
  try {
    reply = await callAgent(sock, "drain", { timeoutS }, timeoutS * 1000 + 15_000);
  } catch (e) {
    ctx.err(`ringedge: ${(e as Error).message}\n`);
    return 3;
  }
  if (!reply.ok) throw new Error(reply.error);
  const r = reply.result as DrainReport;
  ctx.out(ctx.json ? JSON.stringify(r, null, 2) + "\n" : `${r.message}${r.refused > 0 ? ` (${r.refused} new calls refused)` : ""}\n`);
  return r.drained ? 0 : 1;
}

/** The first SIP address as a client reaches it (a wildcard listen is probed on loopback). */
function probeTarget(s: Settings): { host: string; port: number; family: 4 | 6 } {
  const hp = parseHostPort(s.sipListen[0] ?? "127.0.0.1:5060");
  const host = hp.host === "0.0.0.0" ? "127.0.0.1" : hp.host === "::" ? "::1" : hp.host;
  return { host, port: hp.port, family: hp.family };
}

/** One OPTIONS over UDP (RFC 3261 §11): any response means the SIP stack reads and answers. */
export function sipOptionsProbe(host: string, port: number, family: 4 | 6, timeoutMs = 2000): Promise<{ ok: boolean; detail: string }> {
  return new Promise((resolve) => {
    const sock = dgram.createSocket(family === 6 ? "udp6" : "udp4");
    const callId = `health-${randomBytes(8).toString("hex")}`;
    const started = Date.now();
    let done = false;
    const finish = (ok: boolean, detail: string): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.close();
      resolve({ ok, detail });
    };
    const timer = setTimeout(() => finish(false, `sip udp:${host}:${port} did not answer OPTIONS within ${timeoutMs} ms`), timeoutMs);
    sock.on("error", (e) => finish(false, `sip probe failed: ${e.message}`));
    sock.on("message", (msg) => {
      const text = msg.toString("latin1");
      const status = /^SIP\/2\.0 (\d{3})/.exec(text);
      if (status && text.includes(callId)) finish(true, `sip answered OPTIONS ${status[1]} in ${Date.now() - started} ms`);
    });
    sock.bind(0, family === 6 ? "::1" : "127.0.0.1", () => {
      const local = sock.address();
      const hostPart = family === 6 ? `[${host}]` : host;
      const localPart = family === 6 ? `[${local.address}]` : local.address;
      const req = [
        `OPTIONS sip:${hostPart}:${port} SIP/2.0`,
        `Via: SIP/2.0/UDP ${localPart}:${local.port};branch=z9hG4bK${randomBytes(8).toString("hex")};rport`,
        "Max-Forwards: 70",
        `From: <sip:health@${localPart}>;tag=${randomBytes(4).toString("hex")}`,
        `To: <sip:${hostPart}:${port}>`,
        `Call-ID: ${callId}`,
        "CSeq: 1 OPTIONS",
        "User-Agent: ringedge-health",
        "Content-Length: 0",
        "",
        "",
      ].join("\r\n");
      sock.send(req, port, host);
    });
  });
}

function tcpProbe(host: string, port: number, timeoutMs = 2000): Promise<{ ok: boolean; detail: string }> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    const t = setTimeout(() => (s.destroy(), resolve({ ok: false, detail: `sip tcp:${host}:${port} did not accept within ${timeoutMs} ms` })), timeoutMs);
    s.once("connect", () => (clearTimeout(t), s.destroy(), resolve({ ok: true, detail: `sip tcp:${host}:${port} accepts` })));
    s.once("error", (e) => (clearTimeout(t), resolve({ ok: false, detail: `sip tcp:${host}:${port}: ${e.message}` })));
  });
}

async function healthCommand(ctx: ApplianceCliContext): Promise<number> {
  const sock = controlPath(ctx.settings);
  const fail = (reason: string): number => {
    ctx.out(ctx.json ? JSON.stringify({ ok: false, reason }) + "\n" : reason + "\n");
    return 1;
  };
  if (!(await socketAnswers(sock))) return fail(`FAIL: no agent answers on ${sock}`);
  let report: HealthReport;
  try {
    // A stalled event loop shows up here as a timeout.
    const r = await callAgent(sock, "health", {}, 5000);
    if (!r.ok) return fail(`FAIL: health command refused: ${r.error}`);
    report = r.result as HealthReport;
  } catch (e) {
    return fail(`FAIL: agent did not answer its health check (${(e as Error).message})`);
  }
  const target = probeTarget(ctx.settings);
  const probe = ctx.settings.sipTransports.includes("udp") ? await sipOptionsProbe(target.host, target.port, target.family) : await tcpProbe(target.host, target.port);
  const ok = report.ok && probe.ok;
  const detail = report.reason.replace(/^(OK|FAIL): /, "");
  const reason = `${ok ? "OK" : "FAIL"}: ${probe.ok ? `${detail}; ${probe.detail}` : `${probe.detail}; ${detail}`}`;
  ctx.out(ctx.json ? JSON.stringify({ ...report, ok, reason, probe }, null, 2) + "\n" : reason + "\n");
  return ok ? 0 : 1;
}

// --- console-password -------------------------------------------------------------------------

async function readSecretLines(stdin: NodeJS.ReadStream, count: number, prompts: string[], err: Out): Promise<string[]> {
  if (!stdin.isTTY) {
    // Scripted: the first line of stdin.
    let buf = "";
    for await (const chunk of stdin) {
      buf += String(chunk);
      if (buf.includes("\n") || buf.length > 4096) break;
    }
    const line = buf.split(/\r?\n/)[0] ?? "";
    return Array.from({ length: count }, () => line);
  }
  const lines: string[] = [];
  stdin.setRawMode(true);
  stdin.resume();
  try {
    for (let i = 0; i < count; i++) {
      err(prompts[i] ?? "Password: ");
      lines.push(
        await new Promise<string>((resolve, reject) => {
          let line = "";
          const onData = (d: Buffer): void => {
            for (const b of d) {
              if (b === 0x0d || b === 0x0a) {
                stdin.off("data", onData);
                err("\n");
                return resolve(line);
              }
              if (b === 0x03) {
                stdin.off("data", onData);
                return reject(new Error("cancelled"));
              }
              if (b === 0x7f || b === 0x08) line = line.slice(0, -1);
              else if (b >= 0x20 && b <= 0x7e) line += String.fromCharCode(b);
            }
          };
          stdin.on("data", onData);
        }),
      );
    }
  } finally {
    stdin.setRawMode(false);
    stdin.pause();
  }
  return lines;
}

async function consolePasswordCommand(ctx: ApplianceCliContext): Promise<number> {
  const stdin = ctx.stdin ?? process.stdin;
  let lines: string[];
  try {
    lines = await readSecretLines(stdin, stdin.isTTY ? 2 : 1, ["New installer password: ", "Again: "], ctx.err);
  } catch (e) {
    ctx.err(`ringedge: ${(e as Error).message}\n`);
    return 1;
  }
  const [pw, again] = lines;
  if (pw === undefined || (again !== undefined && again !== pw)) {
    ctx.err("ringedge: the passwords differ\n");
    return 1;
  }
  const why = checkInstallerPassword(pw);
  if (why) {
    ctx.err(`ringedge: ${why}\n`);
    return 1;
  }
  const hash = await hashInstallerPassword(pw);
  if (!ctx.flags.has("write")) {
    ctx.out(`${hash}\n`);
    ctx.err(`put it in the settings file as "serialPassword", or set RINGEDGE_SERIAL_PASSWORD (--write does the first)\n`);
    return 0;
  }
  writeSetting(ctx.configPath, "serialPassword", hash, ctx.settings.dataDir);
  ctx.out(`serialPassword written to ${ctx.configPath}\n`);
  const sock = controlPath(ctx.settings);
  if (await socketAnswers(sock)) {
    const r = await callAgent(sock, "status").catch(() => undefined);
    const pid = r?.ok ? (r.result as { pid?: unknown }).pid : undefined;
    if (typeof pid === "number") {
      process.kill(pid, "SIGHUP");
      ctx.out(`agent (pid ${pid}) told to reload\n`);
    }
  }
  return 0;
}

/** The settings file a --write goes to: --config, else RINGEDGE_CONFIG, else the default path. */
export function settingsFileFor(flag: string | true | undefined, env: NodeJS.ProcessEnv): string {
  if (typeof flag === "string") return flag;
  const e = env[CONFIG_ENV];
  return e !== undefined && e !== "" ? e : DEFAULT_CONFIG_PATH;
}
