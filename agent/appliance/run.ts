// `ringedge run`: the agent in the foreground, with the signals a supervisor or the appliance
// firmware sends. SIGTERM drains (new calls 503, current calls finish up to drainTimeoutS,
// store and outbox flushed) and then stops; a second SIGTERM, or SIGINT, stops at once.
// SIGHUP re-reads the settings file and environment and applies what can change live
// (appliance/reload.ts), keeping registrations, calls and sockets.
import { Agent } from "../agent.ts";
import fs from "node:fs";
import { DEFAULT_CONFIG_PATH, loadSettings, type Settings } from "../config.ts";
import { createSwitchableLogger } from "./log-level.ts";
import { settingsFileFor } from "./cli.ts";
import { stderrIsJournal } from "../log.ts";
import { SystemdNotifier, readNotifyEnv, type StatusFacts } from "../observe/notify.ts";

export interface RunOptions {
  /** --config given on the command line (else RINGEDGE_CONFIG or the default path, as at start). */
  configPath?: string;
  env: NodeJS.ProcessEnv;
  err: (s: string) => void;
}

export async function runAgentProcess(settings: Settings, opts: RunOptions): Promise<number> {
  // JSON lines for log shippers (logFormat); syslog priority prefixes when stderr is the journal.
  const logger = createSwitchableLogger(settings.logLevel, undefined, { format: settings.logFormat, journal: stderrIsJournal(opts.env) });
  const log = logger.log;
  const agent = new Agent(settings, log);
  // The file the settings came from, if any: a first login at the serial console saves its password there.
  const file = settingsFileFor(opts.configPath, opts.env);
  if (file !== DEFAULT_CONFIG_PATH || fs.existsSync(file)) agent.settingsFile = file;

  // Handlers go in before start(): a signal that arrives while the agent starts must stop it
  // cleanly (store flushed, lock released), not kill the process by the default action. They
  // act once start() is done.
  let started = false;
  let stopNow!: () => void;
  const stopped = new Promise<void>((resolve) => (stopNow = resolve));
  let draining = false;
  let reloading: Promise<void> = Promise.resolve();
  const onTerm = (): void => {
    if (!started || draining) {
      if (draining) log.warn("second SIGTERM: stopping without waiting for calls");
      stopNow();
      return;
    }
    draining = true;
    log.info("SIGTERM: draining before stop", { timeoutS: agent.settings.drainTimeoutS });
    void agent.drain().then(
      (r) => {
        log.info(r.drained ? "drained; stopping" : "drain timed out; stopping with calls up", { message: r.message });
        stopNow();
      },
      () => stopNow(),
    );
  };
  const onInt = (): void => {
    log.info("stopping", { signal: "SIGINT" });
    stopNow();
  };
  const onHup = (): void => {
    if (!started) return;
    reloading = reloading.then(async () => {
      let next: Settings;
      try {
        next = loadSettings({ env: opts.env, ...(opts.configPath !== undefined ? { configPath: opts.configPath } : {}) });
      } catch (e) {
        log.error("SIGHUP: settings not reloaded, they are invalid; keeping the running ones", { err: (e as Error).message });
        return;
      }
      logger.setLevel(next.logLevel);
      const r = await agent.reload(next);
      if (r.restart.length > 0) log.warn("SIGHUP: these settings changed but need a restart", { settings: r.restart.join(",") });
      for (const e of r.errors) log.error(`SIGHUP: ${e}`);
    });
  };
  process.on("SIGTERM", onTerm);
  process.on("SIGINT", onInt);
  process.on("SIGHUP", onHup);
  const removeHandlers = (): void => {
    process.off("SIGTERM", onTerm);
    process.off("SIGINT", onInt);
    process.off("SIGHUP", onHup);
  };
  try {
    await agent.start();
  } catch (e) {
    removeHandlers();
    opts.err(`ringedge: cannot start: ${(e as Error).message}\n`);
    // Close what was opened before the failure (sockets, timers, the store's lock), or the
    // process would linger with its listeners and never exit.
    await agent.stop().catch(() => undefined);
    return 1;
  }
  started = true;
  // Type=notify: READY=1 now that the sockets are bound and the store is loaded; watchdog pings follow.
  const notifier = new SystemdNotifier({ env: readNotifyEnv(opts.env), status: () => statusFacts(agent), log: log.child("systemd") });
  notifier.ready();
  await stopped;
  await notifier.stopping();
  removeHandlers();
  await reloading.catch(() => undefined);
  await agent.stop();
  return 0;
}

/** What STATUS= shows: calls in hand, phones online, the console link. */
function statusFacts(agent: Agent): StatusFacts {
  const pres = agent.presence.snapshot();
  const st = agent.sync?.syncStatus();
  return { calls: agent.engine.stats().activeCalls, phonesOnline: pres.filter((p) => p.online).length, phonesTotal: agent.store.listDevices().length, link: st === undefined ? "off" : st.connected ? "up" : "down" };
}
