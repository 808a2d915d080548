// Prometheus metrics (text exposition format 0.0.4) on their own HTTP listener (settings
// metricsEnabled / metricsListen). Counters and histograms are fed from the event bus; gauges read
// O(1) figures the agent already keeps, at scrape time. Nothing here runs on the SIP hot path
// beyond a counter increment in a bus listener, and a scrape is a few hundred lines of text
// built in one go on the event loop (no I/O wait, no lock the SIP path could block on).
//
// prom-client (npm) writes the exposition format, escapes label values, and brings the
// standard process and Node.js metrics (process_cpu_seconds_total, process_resident_memory_bytes,
// nodejs_eventloop_lag_seconds from perf_hooks' event-loop delay histogram) that Prometheus
// dashboards already know; writing those by hand would be a second, less tested copy.
import http from "node:http";
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { EventBus } from "../bus.ts";
import type { Logger } from "../log.ts";
import { hostPort } from "../sip/requests.ts";

/** Figures read at scrape time (all cheap, all kept by the agent anyway). */
export interface MetricsSources {
  /** Calls the routing engine holds and calls waiting for a free operator. */
  calls(): { active: number; queued: number };
  /** Calls waiting now per wait-for-operator group, 0 included (absent: the series is not exposed). */
  queueLengths?: () => ReadonlyMap<string, number>;
  /** Registered contacts (bindings). */
  registrations(): number;
  /** Devices by kind, and how many of them are online. */
  devices(): Array<{ kind: string; total: number; online: number }>;
  /** Overload control: refusing new requests now, and how many were refused with 503 since start. */
  overload?: () => { active: boolean; shed: number };
  /** The console link; absent when no broker is configured (then its series are not exposed). */
  console?: () => { connected: boolean; outboxPending: number };
}

/** First-fork latency buckets, seconds: the 2 ms budget sits in the middle. */
export const FIRST_FORK_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1];
/** Time to answer (includes time in the queue), seconds. */
const ANSWER_BUCKETS = [1, 2, 5, 10, 15, 20, 30, 45, 60, 120, 300];
/** Time waited in a queue before an operator answered, seconds. */
const QUEUE_WAIT_BUCKETS = [1, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600];
/** Store writes, seconds. */
const SAVE_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

/** Calls are counted once per Call-ID; this many in progress are remembered at most. */
const MAX_TRACKED_CALLS = 10_000;
/** Label values from the network are cut to this many characters (bounded series names). */
const LABEL_MAX = 64;

const label = (v: string | undefined, none = "none"): string => (v === undefined || v === "" ? none : v.replace(/[\x00-\x1f\x7f]/g, "").slice(0, LABEL_MAX));

/** The metrics registry and its bus listeners, without the HTTP side (unit-testable). */
export class AgentMetrics {
  readonly registry = new Registry();
  private readonly off: Array<() => void> = [];
  /** Call-IDs already counted as offered (a call is offered to several members in turn). */
  private readonly offeredCalls = new Set<string>();

  constructor(private readonly bus: EventBus, sources: MetricsSources) {
    const r = [this.registry];
    collectDefaultMetrics({ register: this.registry, eventLoopMonitoringPrecision: 20 });
    this.offered = new Counter({ name: "ringedge_calls_offered_total", help: "Calls offered to at least one member, by group (none: a direct call).", labelNames: ["group"], registers: r });
    this.answered = new Counter({ name: "ringedge_calls_answered_total", help: "Calls answered by a member, by group.", labelNames: ["group"], registers: r });
    this.missed = new Counter({ name: "ringedge_calls_missed_total", help: "Calls no member answered, by group and outcome (missed, busy, voicemail, forwarded, overflow...).", labelNames: ["group", "outcome"], registers: r });
    this.abandoned = new Counter({ name: "ringedge_calls_abandoned_total", help: "Calls the caller hung up before anyone answered, by group (also counted in missed).", labelNames: ["group"], registers: r });
    this.busy = new Counter({ name: "ringedge_members_busy_total", help: "Members passed over because they were at their call limit, by group.", labelNames: ["group"], registers: r });
    this.firstFork = new Histogram({ name: "ringedge_first_fork_latency_seconds", help: "INVITE received to first forked INVITE sent.", buckets: FIRST_FORK_BUCKETS, registers: r });
    this.answerTime = new Histogram({ name: "ringedge_call_answer_seconds", help: "Time from the INVITE to the answer (ringing plus any wait in the queue), by group.", labelNames: ["group"], buckets: ANSWER_BUCKETS, registers: r });
    this.provisioning = new Counter({ name: "ringedge_provisioning_requests_total", help: "Provisioning HTTP requests answered, by vendor and result (the stage served, firmware, or why not).", labelNames: ["vendor", "result"], registers: r });
    this.authFailures = new Counter({ name: "ringedge_auth_refusals_total", help: "Refused SIP authentications, by reason.", labelNames: ["reason"], registers: r });
    this.bans = new Counter({ name: "ringedge_bans_total", help: "Source addresses banned after repeated failures.", registers: r });
    this.storeSave = new Histogram({ name: "ringedge_store_save_seconds", help: "Duration of each store write.", buckets: SAVE_BUCKETS, registers: r });
    this.storeFailures = new Counter({ name: "ringedge_store_save_failures_total", help: "Store writes that failed (retried).", registers: r });
    this.queueLeft = new Counter({ name: "ringedge_queue_left_total", help: "Calls that left a group's queue, by group and reason (answered, abandoned: the caller hung up while waiting, max-wait: sent to the group's then action, callback: the caller asked to be called back, ended).", labelNames: ["group", "reason"], registers: r });
    this.queueWait = new Histogram({ name: "ringedge_queue_wait_seconds", help: "Time answered calls waited in a group's queue.", labelNames: ["group"], buckets: QUEUE_WAIT_BUCKETS, registers: r });
    this.presence = new Counter({ name: "ringedge_presence_changes_total", help: "Device online/offline transitions.", labelNames: ["state"], registers: r });

    new Gauge({ name: "ringedge_calls_active", help: "Calls the routing engine holds (ringing, queued, forwarded or answered).", registers: r, collect() { this.set(sources.calls().active); } });
    new Gauge({ name: "ringedge_queue_length", help: "Calls waiting for a free operator.", registers: r, collect() { this.set(sources.calls().queued); } });
    const queues = sources.queueLengths;
    if (queues) {
      new Gauge({
        name: "ringedge_queue_waiting", help: "Calls waiting for a free operator now, by group (every wait-for-operator group, 0 when none waits).", labelNames: ["group"], registers: r,
        collect() {
          this.reset();
          for (const [g, n] of queues()) this.set({ group: label(g) }, n);
        },
      });
    }
    new Gauge({ name: "ringedge_registrations", help: "Registered contacts (bindings).", registers: r, collect() { this.set(sources.registrations()); } });
    new Gauge({
      name: "ringedge_devices", help: "Devices by kind and state (online or total).", labelNames: ["kind", "state"], registers: r,
      collect() {
        this.reset();
        for (const d of sources.devices()) {
          this.set({ kind: d.kind, state: "online" }, d.online);
          this.set({ kind: d.kind, state: "total" }, d.total);
        }
      },
    });
    const overload = sources.overload;
    if (overload) {
      new Gauge({ name: "ringedge_overload_active", help: "1 while overload control refuses new requests with 503 (agent/sip/overload.ts), else 0.", registers: r, collect() { this.set(overload().active ? 1 : 0); } });
      new Counter({ name: "ringedge_requests_shed_total", help: "New requests (initial INVITE, SUBSCRIBE, out-of-dialog MESSAGE/OPTIONS, REGISTER from unregistered addresses) refused with 503 by overload control.", registers: r, collect() { this.reset(); this.inc(overload().shed); } });
    }
    const link = sources.console;
    if (link) {
      new Gauge({ name: "ringedge_console_connected", help: "1 when the MQTT link to the console is up, 0 when down.", registers: r, collect() { this.set(link().connected ? 1 : 0); } });
      new Gauge({ name: "ringedge_outbox_depth", help: "Console events waiting in the outbox.", registers: r, collect() { this.set(link().outboxPending); } });
    }
  }

  private readonly offered: Counter<"group">;
  private readonly answered: Counter<"group">;
  private readonly missed: Counter<"group" | "outcome">;
  private readonly abandoned: Counter<"group">;
  private readonly busy: Counter<"group">;
  private readonly firstFork: Histogram;
  private readonly answerTime: Histogram<"group">;
  private readonly provisioning: Counter<"vendor" | "result">;
  private readonly authFailures: Counter<"reason">;
  private readonly bans: Counter;
  private readonly storeSave: Histogram;
  private readonly storeFailures: Counter;
  private readonly presence: Counter<"state">;
  private readonly queueLeft: Counter<"group" | "reason">;
  private readonly queueWait: Histogram<"group">;

  start(): void {
    const b = this.bus;
    this.off.push(
      b.on("call.offered", (e) => {
        if (this.offeredCalls.has(e.callId)) return;
        if (this.offeredCalls.size >= MAX_TRACKED_CALLS) this.offeredCalls.delete(this.offeredCalls.values().next().value!);
        this.offeredCalls.add(e.callId);
        this.offered.inc({ group: label(e.groupId) });
      }),
      b.on("call.answered", (e) => {
        this.offeredCalls.delete(e.callId);
        this.answered.inc({ group: label(e.groupId) });
        this.answerTime.observe({ group: label(e.groupId) }, Math.max(0, e.answerAfterMs) / 1000);
      }),
      b.on("call.missed", (e) => {
        this.offeredCalls.delete(e.callId);
        this.missed.inc({ group: label(e.groupId), outcome: label(e.outcome) });
        if (e.abandoned) this.abandoned.inc({ group: label(e.groupId) });
      }),
      b.on("call.busy", (e) => this.busy.inc({ group: label(e.groupId) }, e.memberIds.length)),
      b.on("queue.left", (e) => {
        this.queueLeft.inc({ group: label(e.groupId), reason: e.reason });
        if (e.reason === "answered") this.queueWait.observe({ group: label(e.groupId) }, Math.max(0, e.waitedMs) / 1000);
      }),
      b.on("call.first-fork", (e) => this.firstFork.observe(Math.max(0, e.latencyUs) / 1e6)),
      b.on("provisioning.request", (e) => this.provisioning.inc({ vendor: label(e.vendor, "unknown"), result: label(e.result) })),
      b.on("auth.failure", (e) => this.authFailures.inc({ reason: label(e.reason) })),
      b.on("auth.ban", () => this.bans.inc()),
      b.on("store.saved", (e) => (e.ok ? this.storeSave.observe(e.ms / 1000) : this.storeFailures.inc())),
      b.on("device.presence", (e) => this.presence.inc({ state: e.online ? "online" : "offline" })),
    );
  }

  stop(): void {
    for (const f of this.off.splice(0)) f();
    // Stops the default metrics' event-loop delay monitor.
    this.registry.clear();
  }

  /** The exposition text. */
  text(): Promise<string> {
    return this.registry.metrics();
  }
}

export interface MetricsServerOptions {
  host: string;
  port: number;
  metrics: AgentMetrics;
  log: Logger;
}

/** GET /metrics only; anything else 404/405. Small limits: this listener is for one scraper. */
export class MetricsServer {
  private server: http.Server | undefined;

  constructor(private readonly o: MetricsServerOptions) {}

  async start(): Promise<void> {
    const server = http.createServer({ maxHeaderSize: 8192, requestTimeout: 10_000, headersTimeout: 5_000, keepAliveTimeout: 5_000 }, (req, res) => void this.onRequest(req, res));
    server.maxHeadersCount = 32;
    server.on("clientError", (_e, socket) => socket.destroy());
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.o.port, this.o.host, () => resolve());
    });
    this.server = server;
    this.o.log.info("metrics listening", { url: `http://${hostPort(this.o.host, this.address()!.port)}/metrics` });
  }

  address(): { address: string; port: number } | undefined {
    const a = this.server?.address();
    return a && typeof a === "object" ? { address: a.address, port: a.port } : undefined;
  }

  async stop(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (!s) return;
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }

  private async onRequest(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const path = (req.url ?? "").split("?")[0];
    if (path !== "/metrics") {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found; metrics are at /metrics\n");
      return;
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { "content-type": "text/plain", allow: "GET, HEAD" }).end("method not allowed\n");
      return;
    }
    try {
      const body = await this.o.metrics.text();
      res.writeHead(200, { "content-type": this.o.metrics.registry.contentType, "cache-control": "no-store" });
      res.end(req.method === "HEAD" ? undefined : body);
    } catch (e) {
      this.o.log.error("metrics scrape failed", { err: (e as Error).message });
      res.writeHead(500, { "content-type": "text/plain" }).end("metrics unavailable\n");
    }
  }
}
