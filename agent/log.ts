// A small levelled logger: one line per record on stderr, "time level scope message k=v".
// Writes are fire-and-forget so the SIP hot path never waits on a slow console.
import fs from "node:fs";

export type LogLevel = "debug" | "info" | "warn" | "error" | "silent";
const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 };

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(scope: string): Logger;
  enabled(level: LogLevel): boolean;
}

export function isLogLevel(s: string): s is LogLevel {
  return Object.prototype.hasOwnProperty.call(ORDER, s);
}

function fmt(v: unknown): string {
  if (typeof v === "string") return /[\s"=]/.test(v) || v === "" ? JSON.stringify(v) : v;
  if (v instanceof Error) return JSON.stringify(v.message);
  return typeof v === "object" && v !== null ? JSON.stringify(v) : String(v);
}

/** How lines are written: format text or json; `journal` prefixes each with its syslog priority. */
export interface LogOutput {
  format?: "text" | "json";
  journal?: boolean;
}

/** sd-daemon(3) priority prefixes journald reads from a service's stderr (SyslogLevelPrefix=). */
const JOURNAL_PRIORITY: Record<LogLevel, string> = { debug: "<7>", info: "<6>", warn: "<4>", error: "<3>", silent: "" };

/**
 * True when stderr is the journal's stream: systemd.exec(5) sets JOURNAL_STREAM to the
 * "device:inode" of that stream, which only counts while fd 2 is still that stream.
 */
export function stderrIsJournal(env: NodeJS.ProcessEnv = process.env, fstat: () => { dev: number; ino: number } = () => fs.fstatSync(2)): boolean {
  const m = /^(\d+):(\d+)$/.exec(env.JOURNAL_STREAM ?? "");
  if (!m) return false;
  try {
    const st = fstat();
    return String(st.dev) === m[1] && String(st.ino) === m[2];
  } catch {
    return false;
  }
}

/** Field names whose values are secrets: never written, whatever logged them. */
const SECRET_KEY = /pass(word|wd)?$|secret|authori[sz]ation|^token$|credential|digest/i;

/**
 * Scrubs secrets out of a logged string: digest response/cnonce values and provisioning URL
 * tokens (/p/<token>/). Cheap when neither appears (two substring tests).
 */
export function scrubSecrets(s: string): string {
  let out = s;
  if (out.includes('response=') || out.includes("Digest ")) out = out.replace(/\b(response|cnonce|nonce|opaque)\s*=\s*("[^"]*"|[^,\s]+)/gi, "$1=<redacted>");
  if (out.includes("/p/")) out = out.replace(/\/p\/[A-Za-z0-9_-]{8,}(\/|$)/g, "/p/<token>$1");
  return out;
}

function safeValue(k: string, v: unknown): unknown {
  if (SECRET_KEY.test(k) && v !== "" && v !== undefined && v !== null && typeof v !== "boolean") return "<redacted>";
  return typeof v === "string" ? scrubSecrets(v) : v instanceof Error ? scrubSecrets(v.message) : v;
}

export function createLogger(level: LogLevel, scope = "agent", write: (line: string) => void = (l) => process.stderr.write(l), output: LogOutput = {}): Logger {
  const min = ORDER[level];
  const json = output.format === "json";
  const out = (lvl: LogLevel, msg: string, fields?: Record<string, unknown>): void => {
    if (ORDER[lvl] < min) return;
    const prefix = output.journal ? JOURNAL_PRIORITY[lvl] : "";
    const text = scrubSecrets(msg);
    if (json) {
      const rec: Record<string, unknown> = {};
      if (fields) for (const [k, v] of Object.entries(fields)) if (v !== undefined) rec[k] = safeValue(k, v);
      let line: string;
      try {
        line = JSON.stringify({ ...rec, time: new Date().toISOString(), level: lvl, scope, msg: text });
      } catch {
        line = JSON.stringify({ time: new Date().toISOString(), level: lvl, scope, msg: text, fields: "<not serialisable>" });
      }
      write(prefix + line + "\n");
      return;
    }
    let line = `${prefix}${new Date().toISOString()} ${lvl.padEnd(5)} ${scope} ${text}`;
    if (fields) for (const [k, v] of Object.entries(fields)) if (v !== undefined) line += ` ${k}=${fmt(safeValue(k, v))}`;
    write(line + "\n");
  };
  return {
    debug: (m, f) => out("debug", m, f),
    info: (m, f) => out("info", m, f),
    warn: (m, f) => out("warn", m, f),
    error: (m, f) => out("error", m, f),
    child: (s) => createLogger(level, `${scope}.${s}`, write, output),
    enabled: (l) => ORDER[l] >= min,
  };
}
