// A logger whose level can change while the agent runs (SIGHUP reload), for every child
// logger already handed out. The lines themselves come from log.ts's createLogger.
import { createLogger, type LogOutput, type Logger, type LogLevel } from "../log.ts";

const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 };

export interface SwitchableLogger {
  log: Logger;
  setLevel(level: LogLevel): void;
  level(): LogLevel;
}

export function createSwitchableLogger(level: LogLevel, write?: (line: string) => void, output: LogOutput = {}): SwitchableLogger {
  const state = { level };
  // The inner logger writes everything; this wrapper decides what passes.
  const wrap = (inner: Logger): Logger => {
    const on = (l: LogLevel): boolean => ORDER[l] >= ORDER[state.level];
    return {
      debug: (m, f) => (on("debug") ? inner.debug(m, f) : undefined),
      info: (m, f) => (on("info") ? inner.info(m, f) : undefined),
      warn: (m, f) => (on("warn") ? inner.warn(m, f) : undefined),
      error: (m, f) => (on("error") ? inner.error(m, f) : undefined),
      child: (s) => wrap(inner.child(s)),
      enabled: on,
    };
  };
  return { log: wrap(createLogger("debug", "agent", write, output)), setLevel: (l) => void (state.level = l), level: () => state.level };
}
