// A small levelled logger: one line per record on stderr, "time level scope message k=v".
// Writes are fire-and-forget so the SIP hot path never waits on a slow console.
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

export function createLogger(level: LogLevel, scope = "agent", write: (line: string) => void = (l) => process.stderr.write(l)): Logger {
  const min = ORDER[level];
  const out = (lvl: LogLevel, msg: string, fields?: Record<string, unknown>): void => {
    if (ORDER[lvl] < min) return;
    let line = `${new Date().toISOString()} ${lvl.padEnd(5)} ${scope} ${msg}`;
    if (fields) for (const [k, v] of Object.entries(fields)) if (v !== undefined) line += ` ${k}=${fmt(v)}`;
    write(line + "\n");
  };
  return {
    debug: (m, f) => out("debug", m, f),
    info: (m, f) => out("info", m, f),
    warn: (m, f) => out("warn", m, f),
    error: (m, f) => out("error", m, f),
    child: (s) => createLogger(level, `${scope}.${s}`, write),
    enabled: (l) => ORDER[l] >= min,
  };
}
