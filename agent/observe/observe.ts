// Observability features wired to a running agent: Prometheus metrics, the audit log and the
// status page. Each is its own start()/stop() feature on the event bus; this file only reads
// the agent's settings and hands each one the narrow views it needs.
import type { Agent } from "../agent.ts";
import { parseHostPort } from "../config.ts";
import { AgentMetrics, MetricsServer, type MetricsSources } from "./metrics.ts";

export interface Observability {
  metrics: MetricsServer | undefined;
  stop(): Promise<void>;
}

/** What the metrics read at scrape time, from the agent's own counters. */
export function metricsSources(agent: Agent): MetricsSources {
  return {
    calls: () => {
      const s = agent.engine.stats();
      return { active: s.activeCalls, queued: s.queued };
    },
    registrations: () => agent.location.count(),
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

export async function startObservability(agent: Agent): Promise<Observability> {
  const s = agent.settings;
  const log = agent.log;
  agent.store.onSaved = (ms, ok) => agent.bus.emit("store.saved", { ms, ok, at: Date.now() });
  const stops: Array<() => Promise<void> | void> = [() => void (agent.store.onSaved = undefined)];
  let metricsServer: MetricsServer | undefined;
  const out: Observability = {
    metrics: undefined,
    stop: async () => {
      for (const f of stops.splice(0).reverse()) await f();
    },
  };
  try {
    if (s.metricsEnabled) {
      const metrics = new AgentMetrics(agent.bus, metricsSources(agent));
      metrics.start();
      stops.push(() => metrics.stop());
      const hp = parseHostPort(s.metricsListen);
      metricsServer = new MetricsServer({ host: hp.host, port: hp.port, metrics, log: log.child("metrics") });
      await metricsServer.start();
      stops.push(() => metricsServer!.stop());
      out.metrics = metricsServer;
    }
  } catch (e) {
    await out.stop();
    throw e;
  }
  return out;
}
