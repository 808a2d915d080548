// Observability features wired to a running agent: Prometheus metrics, the audit log and the
// status page. Each is its own start()/stop() feature on the event bus; this file only reads
// the agent's settings and hands each one the narrow views it needs.
import type { Agent } from "../agent.ts";
import { parseHostPort } from "../config.ts";
// The metrics and the status page are loaded only when enabled (dynamic imports below): an
// agent without them, and every CLI command that loads the agent's modules, skips prom-client.
import type { MetricsServer, MetricsSources } from "./metrics.ts";
import type { StatusPage, StatusSource } from "./status-page.ts";

export interface Observability {
  metrics: MetricsServer | undefined;
  statusPage: StatusPage | undefined;
  stop(): Promise<void>;
}

/** What the metrics read at scrape time, from the agent's own counters. */
export function metricsSources(agent: Agent): MetricsSources {
  return {
    calls: () => {
      const s = agent.engine.stats();
      return { active: s.activeCalls, queued: s.queued };
    },
    queueLengths: () => agent.engine.queueLengths(),
    registrations: () => agent.location.count(),
    overload: () => ({ active: agent.overload.active, shed: agent.overload.shedCount }),
    devices: () => {
      const online = new Set(agent.presence.snapshot().filter((p) => p.online).map((p) => p.deviceId));
      const byKind = new Map<string, { kind: string; total: number; online: number }>();
      for (const k of ["physical", "soft"]) byKind.set(k, { kind: k, total: 0, online: 0 });
      for (const d of agent.store.listDevices()) {
        const row = byKind.get(d.kind) ?? { kind: d.kind, total: 0, online: 0 };
        row.total++;
        if (online.has(d.id)) row.online++;
        byKind.set(d.kind, row);
      }
      return [...byKind.values()];
    },
    ...(agent.sync
      ? {
          console: () => {
            const st = agent.sync!.syncStatus();
            return { connected: st.connected, outboxPending: st.outbox.pending };
          },
        }
      : {}),
  };
}

/** What the status page shows, from the agent's store, presence, site, engine and sync. */
export function statusSource(agent: Agent): StatusSource {
  const startedAt = Date.now() - Math.round(process.uptime() * 1000);
  return {
    siteId: agent.settings.siteId,
    startedAt,
    devices: () => agent.store.listDevices(),
    presence: () => agent.presence.snapshot(),
    bindings: () => agent.location.all().map((b) => ({ deviceId: b.deviceId, remoteAddress: b.flow.remoteAddress, remotePort: b.flow.remotePort, transport: b.flow.transport })),
    seenPhones: () => agent.store.listSeenPhones(),
    site: () => {
      const r = agent.site.current().record;
      return r === null ? null : { users: r.users, groups: r.groups };
    },
    activeCallsOf: (id) => agent.engine.activeCallsOf(id),
    ringing: () => agent.callsNow.list(),
    activeCalls: () => agent.engine.stats().activeCalls,
    recentCalls: (n) => agent.store.listCalls({ limit: n }),
    latency: () => agent.engine.stats().latency,
    link: () => {
      const st = agent.sync?.syncStatus();
      return st === undefined ? "off" : st.connected ? "up" : "down";
    },
  };
}

export async function startObservability(agent: Agent): Promise<Observability> {
  const s = agent.settings;
  const log = agent.log;
  agent.store.onSaved = (ms, ok) => agent.bus.emit("store.saved", { ms, ok, at: Date.now() });
  const stops: Array<() => Promise<void> | void> = [() => void (agent.store.onSaved = undefined)];
  let metricsServer: MetricsServer | undefined;
  const out: Observability = {
    metrics: undefined,
    statusPage: undefined,
    stop: async () => {
      for (const f of stops.splice(0).reverse()) await f();
    },
  };
  try {
    if (s.metricsEnabled) {
      const { AgentMetrics, MetricsServer } = await import("./metrics.ts");
      const metrics = new AgentMetrics(agent.bus, metricsSources(agent));
      metrics.start();
      stops.push(() => metrics.stop());
      const hp = parseHostPort(s.metricsListen);
      metricsServer = new MetricsServer({ host: hp.host, port: hp.port, metrics, log: log.child("metrics") });
      await metricsServer.start();
      stops.push(() => metricsServer!.stop());
      out.metrics = metricsServer;
    }
    if (s.statusPageEnabled) {
      const hp = parseHostPort(s.statusPageListen);
      if (s.serialPassword === "") log.warn("status page: no installer password is set (serialPassword, `ringedge console-password`), so nobody can log in");
      const { StatusPage } = await import("./status-page.ts");
      const page = new StatusPage({
        host: hp.host,
        port: hp.port,
        ...(s.httpsCert !== "" && s.httpsKey !== "" ? { tls: { cert: s.httpsCert, key: s.httpsKey } } : {}),
        // Read at each login: a new password set by SIGHUP applies at once.
        passwordHash: () => agent.settings.serialPassword,
        source: statusSource(agent),
        bus: agent.bus,
        log: log.child("status"),
      });
      await page.start();
      stops.push(() => page.stop());
      out.statusPage = page;
    }
  } catch (e) {
    await out.stop();
    throw e;
  }
  return out;
}
