// The agent's local control socket: one JSON request per line, one JSON reply per line.
// The CLI (and later the serial console) run their commands through it while the agent
// runs, so nothing but the agent ever writes the store. The socket lives in the data
// directory (mode 0700), which is what guards it.
import fs from "node:fs";
import net from "node:net";
import type { Logger } from "../log.ts";

export type CommandHandler = (args: Record<string, unknown>) => unknown | Promise<unknown>;
export type CommandTable = Readonly<Record<string, CommandHandler>>;

export interface ControlRequest {
  id?: number;
  cmd: string;
  args?: Record<string, unknown>;
}
export type ControlReply = { id?: number; ok: true; result: unknown } | { id?: number; ok: false; error: string };

/** Longest request line accepted; a local client has no reason to send more. */
const MAX_LINE = 256 * 1024;

/** An error whose message is meant for the user (bad arguments, unknown device, …). */
export class CommandError extends Error {}

/** A string argument of a command: absent (or required and missing) and wrong types are the user's errors. */
export function argString(args: Record<string, unknown>, key: string, required: true): string;
export function argString(args: Record<string, unknown>, key: string, required?: false): string | undefined;
export function argString(args: Record<string, unknown>, key: string, required = false): string | undefined {
  const v = args[key];
  if (v === undefined || v === null) {
    if (required) throw new CommandError(`missing ${key}`);
    return undefined;
  }
  if (typeof v !== "string") throw new CommandError(`${key} must be a string`);
  return v;
}

export async function runCommand(table: CommandTable, line: string): Promise<ControlReply> {
  let req: ControlRequest;
  try {
    req = JSON.parse(line) as ControlRequest;
  } catch {
    return { ok: false, error: "request is not valid JSON" };
  }
  if (typeof req !== "object" || req === null || typeof req.cmd !== "string") return { ok: false, error: "request needs a string 'cmd'" };
  const id = typeof req.id === "number" ? req.id : undefined;
  const handler = Object.prototype.hasOwnProperty.call(table, req.cmd) ? table[req.cmd] : undefined;
  if (!handler) return { id, ok: false, error: `unknown command '${req.cmd}'` };
  const args = typeof req.args === "object" && req.args !== null && !Array.isArray(req.args) ? req.args : {};
  try {
    return { id, ok: true, result: await handler(args) };
  } catch (err) {
    return { id, ok: false, error: err instanceof CommandError ? err.message : `internal error: ${(err as Error).message}` };
  }
}

export class ControlServer {
  private server: net.Server | undefined;

  constructor(private readonly socketPath: string, private readonly table: CommandTable, private readonly log: Logger) {}

  async start(): Promise<void> {
    // A socket file left by a crash would make listen fail with EADDRINUSE.
    if (fs.existsSync(this.socketPath) && !(await socketAnswers(this.socketPath))) fs.rmSync(this.socketPath, { force: true });
    this.server = net.createServer((sock) => this.serve(sock));
    await new Promise<void>((resolve, reject) => {
      this.server!.once("error", reject);
      this.server!.listen(this.socketPath, () => resolve());
    });
    fs.chmodSync(this.socketPath, 0o600);
  }

  private serve(sock: net.Socket): void {
    let buf = "";
    sock.setEncoding("utf8");
    sock.on("error", () => sock.destroy());
    sock.on("data", (chunk: string) => {
      buf += chunk;
      if (buf.length > MAX_LINE && !buf.includes("\n")) {
        sock.end(JSON.stringify({ ok: false, error: "request too long" }) + "\n");
        return;
      }
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.trim() === "") continue;
        void runCommand(this.table, line).then((reply) => {
          if (!sock.destroyed) sock.write(JSON.stringify(reply) + "\n");
        });
      }
    });
  }

  async stop(): Promise<void> {
    if (!this.server) return;
    await new Promise<void>((r) => this.server!.close(() => r()));
    fs.rmSync(this.socketPath, { force: true });
  }
}

/** True if an agent answers on the socket (used to tell a live agent from a stale file). */
export function socketAnswers(socketPath: string, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect(socketPath);
    const t = setTimeout(() => {
      sock.destroy();
      resolve(false);
    }, timeoutMs);
    sock.once("connect", () => {
      clearTimeout(t);
      sock.destroy();
      resolve(true);
    });
    sock.once("error", () => {
      clearTimeout(t);
      resolve(false);
    });
  });
}

/** Send one command to a running agent. */
export function callAgent(socketPath: string, cmd: string, args: Record<string, unknown> = {}, timeoutMs = 10_000): Promise<ControlReply> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(socketPath);
    let buf = "";
    const t = setTimeout(() => {
      sock.destroy();
      reject(new Error(`agent did not answer '${cmd}' within ${timeoutMs} ms`));
    }, timeoutMs);
    sock.setEncoding("utf8");
    sock.once("connect", () => sock.write(JSON.stringify({ id: 1, cmd, args }) + "\n"));
    sock.on("data", (chunk: string) => {
      buf += chunk;
      const nl = buf.indexOf("\n");
      if (nl < 0) return;
      clearTimeout(t);
      sock.end();
      try {
        resolve(JSON.parse(buf.slice(0, nl)) as ControlReply);
      } catch {
        reject(new Error("agent sent an unreadable reply"));
      }
    });
    sock.once("error", (err) => {
      clearTimeout(t);
      reject(err);
    });
  });
}
