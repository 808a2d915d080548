// The agent: wires the mechanisms (transport, transactions, location, registrar, presence,
// store) together and dispatches requests by method. The place to read first to see how a
// request flows; docs/architecture.md tells the same story in prose.
import path from "node:path";
import { EventBus } from "./bus.ts";
import type { Settings } from "./config.ts";
import { parseHostPort } from "./config.ts";
import type { Logger } from "./log.ts";
import { PresenceTracker, type PresenceOptions } from "./presence/presence.ts";
import { Store } from "./store/store.ts";
import type { BindingRecord, DeviceRecord } from "./store/schema.ts";
import { DigestAuthenticator } from "./sip/digest.ts";
import { AuthGuard } from "./sip/guard.ts";
import { OverloadControl, type OverloadLimits, type OverloadStats } from "./sip/overload.ts";
import { IdleCollector, exposedGc } from "./appliance/idle-gc.ts";
import { deviceRef, isTrunkSource, normalizeAddress } from "./routing/classify.ts";
import { mailboxOf } from "./routing/model.ts";
import { LocationService, type Binding, type BindingChange } from "./sip/location.ts";
import { Registrar } from "./sip/registrar.ts";
import { StatefulProxy } from "./sip/proxy.ts";
import { UasDialogs } from "./sip/uas-session.ts";
import type { ProxyStats } from "./sip/proxy-types.ts";
import { buildRequest, hostPort } from "./sip/requests.ts";
import { advertisedAddress, makeAdvertiser } from "./sip/advertise.ts";
import { createResponse, serialize } from "./sip/serialize.ts";
import { TransactionLayer, type InviteServerTransaction } from "./sip/transaction.ts";
import { SipTransport } from "./sip/transport.ts";
import { checkRequest } from "./sip/validate.ts";
import type { Flow, SipRequest, SipResponse } from "./sip/types.ts";
import { ControlServer } from "./console/control.ts";
import { agentCommands, type AgentView } from "./console/commands.ts";
import { ProvisioningService } from "../provisioning/service.ts";
import { consoleResyncHandler } from "../provisioning/resync.ts";
import { SiteService, formatSiteErrors, readSiteFile } from "./site/site.ts";
import { MqttSync, readTlsFiles, siteApplier } from "./sync/mqtt-sync.ts";
import { DEFAULT_PICKUP_CODE } from "./site/types.ts";
import { RoutingEngine, type EngineStats } from "./routing/engine.ts";
import { OperatorStates } from "./presence/operators.ts";
import type { SiteRecord } from "./site/types.ts";
import { DrainController, type DrainReport } from "./appliance/drain.ts";
import { LatencyWatch, judgeHealth, type HealthReport, type LatencyVerdict } from "./appliance/health.ts";
import type { DrainState } from "./appliance/drain.ts";
import { VERSION } from "./version.ts";
import { planReload, type ReloadPlan } from "./appliance/reload.ts";
import { applianceCommands } from "./console/appliance-commands.ts";
import { SerialConsole } from "./console/serial.ts";
import { writeSetting } from "./appliance/settings-file.ts";
import { CallsNow, callCommands } from "./console/calls-now.ts";
import { promises as fsp } from "node:fs";
import { CpuLatencyRequest, type CpuLatencyStatus } from "./appliance/cpu-latency.ts";
import { currentScheduling, type Scheduling } from "./appliance/scheduling.ts";
import type { Settings as LiveSettings } from "./config.ts";
import type { GuardLimits, SourceQuota } from "./sip/guard.ts";
import { SubscriptionManager, type SubscriptionLimits } from "./sip/subscriptions.ts";
import { BlfNotifier } from "./presence/blf.ts";
import { MwiNotifier, NO_MAILBOXES } from "./presence/mwi.ts";
import type { VoicemailCounts } from "./voicemail/types.ts";
import { startObservability, type Observability } from "./observe/observe.ts";
import { AuditLog, auditedCommands } from "./observe/audit.ts";
import { startMedia, type MediaPlaneHandle } from "./media/setup.ts";
import { startCallMenus, type CallMenuHandle } from "./media/call-menu.ts";
import { prepareSiteSounds } from "./media/site-sounds.ts";
import type { QueueFigures } from "./routing/queue-stats.ts";
import { startVoicemail, type VoicemailHandle } from "./voicemail/setup.ts";
import { voicemailCommands } from "./console/voicemail-commands.ts";
import { fetchRecording } from "./voicemail/fetch.ts";
import { wireCallbacks, type CallbackWiring } from "./routing/callback-setup.ts";

/** Methods this element understands; anything else is answered 501 (RFC 3261 §21.5.2). */
const SUPPORTED_METHODS: ReadonlySet<string> = new Set(["REGISTER", "OPTIONS", "INVITE", "ACK", "CANCEL", "BYE", "INFO", "UPDATE", "PRACK", "NOTIFY", "SUBSCRIBE", "MESSAGE", "REFER", "PUBLISH"]);
/** Option tags we implement (RFC 3261 §8.2.2.3); Require with any other gets 420. */
const SUPPORTED_EXTENSIONS: ReadonlySet<string> = new Set(["path", "outbound", "gruu", "replaces", "timer", "100rel"]);
const ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, INFO, UPDATE, NOTIFY, SUBSCRIBE";

export interface AgentStatus {
  siteId: string;
  pid: number;
  startedAt: string;
  uptimeS: number;
  sip: Array<{ transport: string; address: string; port: number }>;
  devices: { total: number; physical: number; soft: number; registered: number; online: number };
  bindings: number;
  /** Live transactions, and requests absorbed by one (retransmissions, ACKs for non-2xx; RFC 3261 §17.2.3) since start. */
  /** throttled: new requests dropped because their source was over its quota. */
  transactions: { server: number; client: number; absorbed: number; throttled: number };
  transport: ReturnType<SipTransport["stats"]>;
  guard: ReturnType<AuthGuard["stats"]>;
  /** The forking proxy: calls ringing, dialogs up, branches alive (agent/sip/proxy.ts). */
  proxy: ProxyStats;
  /** Overload control: whether new requests are being refused with 503, why, and how many were (agent/sip/overload.ts). */
  overload: OverloadStats;
  /** Routing engine: calls in hand, queued calls, INVITE → first-fork latency (issue 3). */
  routing: EngineStats & { queues: QueueFigures[] };
  /** Pending callbacks in queue order (routing/callback.ts); `calling`: the operator being called for it now. */
  callbacks: Array<{ id: string; groupId: string; number: string; place: string; attempts: number; calling: string | null; notBefore: string | null }>;
  store: { file: string; pendingWrites: boolean };
  /** The applied site configuration; null before the first site file or console push. */
  site: { version: number; source: "file" | "console"; appliedAt: string; hash: string; users: number; groups: number } | null;
  /** Bytes, from process.memoryUsage() (rss, heapTotal, heapUsed, external, arrayBuffers). */
  memory: NodeJS.MemoryUsage;
  /** Full collections run in a quiet spell after a burst (appliance/idle-gc.ts); null where gc() is not exposed (the sources through tsx). */
  idleCollections: number | null;
  /** How long the last idle collection held the event loop, ms; null before the first. */
  idleCollectionPauseMs: number | null;
  /** The PM QoS CPU wake-up latency request (setting cpuWakeLatencyUs); null when not asked for. */
  cpuLatency: CpuLatencyStatus | null;
  /** How the kernel schedules the agent (policy, real-time priority, nice); null where unknown. */
  scheduling: Scheduling | null;
  /** package.json's version of the running agent. */
  version: string;
  /** Refusing new calls (pre-upgrade, SIGTERM), for how long, and whether past the drain's timeout. */
  drain: DrainState;
  /** The console link; null when mqttUrl is not set. */
  mqtt: { connected: boolean; outboxPending: number } | null;
  /** Base URLs phones are given (the advertised address, never a wildcard). */
  provisioningUrls: string[];
  /** The last judged first-fork latency window (appliance/health.ts); null before the first. */
  latencyWindow: LatencyVerdict | null;
  /** Things someone should look at; none of them fails `ringedge health`. */
  warnings: string[];
}

export class Agent {
  readonly bus = new EventBus();
  store!: Store;
  transport!: SipTransport;
  transactions!: TransactionLayer;
  location!: LocationService;
  registrar!: Registrar;
  proxy!: StatefulProxy;
  /** Calls the appliance answered itself (voicemail): their dialogs (sip/uas-session.ts). */
  uas!: UasDialogs;
  /**
   * New INVITEs (outside any dialog) go here once set; unset, they get 404. Set in-process only
   * (the routing engine, or a test fixture): no setting or message can turn it on.
   */
  onInvite: ((tx: InviteServerTransaction, req: SipRequest, flow: Flow) => void) | undefined;
  presence!: PresenceTracker;
  guard!: AuthGuard;
  /** Refuses new dialog-creating requests with 503 past the agent's capacity (sip/overload.ts). */
  overload!: OverloadControl;
  /** The applied site configuration (users, groups, settings) and its routing lookups. */
  site!: SiteService;
  /** Operators' own state (availability, logins) from their phones' feature codes and the site. */
  operators!: OperatorStates;
  /** Call-distribution policy: admits new INVITEs and drives the proxy's branches. */
  engine!: RoutingEngine;
  /** Media plane (music on hold, voicemail); its worker starts only when a call needs it. */
  media: MediaPlaneHandle | undefined;
  /** Greetings and menus for trunk calls (docs/menus.md). */
  callMenus!: CallMenuHandle;
  /** Mailboxes on the appliance: the store and deposits (voicemail/). */
  voicemail: VoicemailHandle | undefined;
  /** Callbacks for impatient callers (routing/callback-service.ts) and the calls the agent places (sip/originate.ts). */
  callbacks: CallbackWiring | undefined;
  /** SUBSCRIBE/NOTIFY (RFC 6665) for the event packages below. */
  subscriptions!: SubscriptionManager;
  /** BLF: the dialog event package (RFC 4235). */
  blf!: BlfNotifier;
  /** Message lamps: the message-summary event package (RFC 3842). */
  mwi!: MwiNotifier;
  /** Mailbox counts for the lamps: the mailbox store (voicemail/) once started. */
  voicemailCounts: VoicemailCounts = NO_MAILBOXES;
  private control: ControlServer | undefined;
  /** Console sync over MQTT; only when mqttUrl is set. */
  sync: MqttSync | undefined;
  provisioning: ProvisioningService | undefined;
  private readonly startedAt = Date.now();
  /** Graceful drain (pre-upgrade hook, SIGTERM): refuses new INVITEs with 503 while set. */
  readonly drainer: DrainController;
  /** The PM QoS request held while running (setting cpuWakeLatencyUs ≥ 0). */
  private cpuLatency: CpuLatencyRequest | undefined;
  /** Installer console on settings.serialDevice, when set. */
  serial: SerialConsole | undefined;
  /** The settings file this agent was started from (set by `ringedge run`); the serial console's first login writes its password there. */
  settingsFile: string | undefined;
  /** Calls ringing now, from the engine's events (installer console `calls`). */
  readonly callsNow = new CallsNow();
  /** Judges first-fork latency over windows of calls: over budget is a warning (appliance/health.ts). */
  private latencyWatch: LatencyWatch | undefined;
  /** Option objects shared with running features, changed in place by reload() (SIGHUP). */
  private readonly live = {
    perSource: { maxFailures: 0, windowMs: 0, banMs: 0 } as GuardLimits,
    perAccount: { maxFailures: 0, windowMs: 0, banMs: 0 } as GuardLimits,
    rate: { max: 0, windowMs: 0 },
    quota: { ratePerS: 1, burst: 1, maxInFlight: 1, banMs: 0 } as SourceQuota,
    presence: { intervalMs: 0, misses: 0 },
    subscribe: { maxPerDevice: 0, rateMax: 0, rateWindowMs: 0, minExpires: 0, maxExpires: 0 } as SubscriptionLimits,
    overload: { loopBusyPct: 0, lagMs: 0, queueDelayMs: 0, maxCallsSetup: 0, maxServerTransactions: 0, clearPct: 100, retryAfterS: 1 } as OverloadLimits,
  };
  /** Devices keyed by SIP username: the registrar's credential lookup, rebuilt on change. */
  private devicesByUsername = new Map<string, DeviceRecord>();
  /** Requests matched to an existing server transaction: answered by it, never seen by the TU. */
  private absorbedRequests = 0;
  /** New requests dropped because their source was over its quota (guard.ts admitRequest). */
  private throttledRequests = 0;
  /** The transaction layer's admission check: the source's quota (allocated once, hot path). */
  private readonly admitSource = (source: string, inFlight: number): boolean => {
    // The site's trunk (its configured source addresses) carries every caller's calls: its rate
    // is the site's call rate, not one source's, so it is not held to a single source's quota.
    const trunk = this.site.current().record?.settings.trunk;
    if (trunk !== undefined && isTrunkSource(trunk, source)) return true;
    return this.guard.admitRequest(source, inFlight) === "ok";
  };
  /** The same for a live registered phone's flow: its rate counts, a ban of its address does not. */
  private readonly admitDeviceFlow = (source: string, inFlight: number): boolean => this.guard.admitRequest(source, inFlight, true) === "ok";
  /**
   * The transaction layer's admission of a new request: the source's quota (a flooder is dropped
   * silently), then overload control (new dialog-creating requests are shed with a stateless
   * 503 past capacity; in-dialog ones, ACK, CANCEL, BYE and REGISTERs always pass).
   */
  private readonly admitNew = (source: string, inFlight: number, req: SipRequest): boolean | "shed" =>
    this.admitSource(source, inFlight) && (this.overload.admit(req.method, req.to.tag !== undefined, false, req) || "shed");
  private readonly admitNewFromDevice = (source: string, inFlight: number, req: SipRequest): boolean | "shed" =>
    this.admitDeviceFlow(source, inFlight) && (this.overload.admit(req.method, req.to.tag !== undefined, true, req) || "shed");
  /** A full garbage collection when the signalling is quiet after a burst (appliance/idle-gc.ts). */
  private idleGc: IdleCollector | undefined;
  /** Metrics endpoint and status page (agent/observe/). */
  observe: Observability | undefined;
  /** One info line per change, call, provisioning fetch and ban (agent/observe/audit.ts). */
  private readonly audit: AuditLog;

  constructor(readonly settings: Settings, readonly log: Logger) {
    this.drainer = new DrainController({
      activity: () => {
        const p = this.proxy?.stats();
        return { ringing: p?.calls ?? 0, connected: p?.dialogs ?? 0, queued: this.engine?.stats().queued ?? 0 };
      },
      flushStore: () => this.store.flush(),
      outbox: () => {
        if (!this.sync) return undefined;
        const st = this.sync.syncStatus();
        return { pending: st.outbox.pending, durable: st.outbox.durable, connected: st.connected };
      },
      log: log.child("drain"),
      defaultTimeoutMs: () => this.settings.drainTimeoutS * 1000,
    });
    this.setLiveOptions(settings);
    this.audit = new AuditLog(this.bus, log.child("audit"));
  }

  async start(): Promise<void> {
    const s = this.settings;
    this.audit.start();
    // The store takes the data directory's lock: one agent (or offline CLI command) at a time.
    this.store = await Store.open(s.dataDir, {
      siteId: s.siteId,
      // Each save costs a few ms of event-loop time on a large site: batch them (principle 3).
      saveDelayMs: s.storeSaveDelayMs,
      onError: (err) => this.log.error("store write failed; retrying", { err: err.message }),
    });
    for (const note of this.store.migrationNotes) this.log.warn("store migration left a value as it was", { fromVersion: this.store.openedFromVersion, note });
    for (const note of this.store.callLogNotes) this.log.warn("call log", { note });
    this.site = new SiteService({
      store: this.store,
      bus: this.bus,
      log: this.log.child("site"),
      onDevicesChanged: (voided) => {
        for (const id of voided) this.forgetDevice(id);
        this.refreshDevices();
      },
      // The sounds a site names are checked, fetched and cached before it is applied.
      prepare: (c) => prepareSiteSounds(c.site.groups, s.dataDir),
      // The voicemail code (an agent setting) must not clash with the site's feature codes.
      agentCodes: () => [{ label: "the voicemail code (setting voicemailCode)", code: this.settings.voicemailCode }],
    });
    this.site.start();
    if (s.siteFile !== "") await this.applySiteFile(s.siteFile);
    this.refreshDevices();
    this.operators = new OperatorStates({ store: this.store, site: () => this.site.current(), bus: this.bus, log: this.log.child("operators") });
    this.operators.start();

    // The guard and presence keep these objects by reference: reload() changes them in place.
    this.guard = new AuthGuard({
      perSource: this.live.perSource,
      perAccount: this.live.perAccount,
      perSourceRequestRate: this.live.rate,
      perSourceQuota: this.live.quota,
      allowlist: s.guardAllowlist,
      maxTracked: 100_000,
      // A registered phone's own address is not banned for failures in its name (guard.ts).
      registeredFrom: (source, account) => {
        const a = normalizeAddress(source);
        return this.location.lookup(account).some((b) => normalizeAddress(b.flow.remoteAddress) === a);
      },
    });
    // Where devices authenticated before the restart keeps them exempt from account locks.
    for (const a of this.store.listAuthSources()) {
      const d = this.store.getDevice(a.deviceId);
      if (d !== undefined) this.guard.restoreKnownGood(a.address, d.username, a.at);
    }
    this.guard.onBan = (source, until, reason) => {
      this.log.warn(reason === "failures" ? "source banned after repeated authentication failures" : "source banned for flooding", { source, until: new Date(until).toISOString() });
      this.bus.emit("auth.ban", { source, until });
    };

    this.location = new LocationService((change) => this.onBindings(change));
    const presenceRest: Omit<PresenceOptions, "intervalMs" | "misses"> = {
      bus: this.bus,
      location: this.location,
      probe: (b) => this.probe(b),
      username: (id) => this.store.getDevice(id)?.username,
      log: this.log.child("presence"),
    };
    this.presence = new PresenceTracker(Object.assign(this.live.presence, presenceRest));

    this.transport = new SipTransport(
      {
        listen: s.sipListen.map((a) => parseHostPort(a)),
        transports: s.sipTransports,
        limits: { maxMessageBytes: s.maxMessageBytes, maxHeaders: s.maxHeaders },
        maxConnections: s.tcpMaxConnections,
        maxConnectionsPerAddress: s.tcpMaxConnectionsPerAddress,
        tcpMessageTimeoutMs: s.tcpMessageTimeoutMs,
        tcpIdleTimeoutMs: s.tcpIdleTimeoutS * 1000,
        // A ban of an address never cuts off a phone registered from it (guard.ts).
        acceptSource: (addr, flow) => !this.guard.isBanned(addr) || (flow !== undefined && this.engine?.isDeviceFlow(flow) === true),
        log: this.log.child("sip"),
      },
      { onRequest: (req, flow) => this.onRequest(req, flow), onResponse: (res, flow) => this.onResponse(res, flow) },
    );
    // RFC 3261 §17.1.1.1: T1 is configurable; T2/T4 keep their defaults.
    this.transactions = new TransactionLayer({ transport: this.transport, timers: { T1: s.sipT1Ms } });
    this.overload = new OverloadControl({
      limits: this.live.overload,
      callsSetup: () => this.proxy.stats().calls,
      serverTransactions: () => this.transactions.counts().server,
      queueProbe: { delayMs: () => this.transport.queueDelayMs(), probe: () => this.transport.probeQueues() },
      onChange: (active, cause, signals) => {
        if (active) this.log.warn("overloaded: refusing new calls and other new requests with 503", { cause: cause ?? undefined, ...signals, loopBusyPct: Math.round(signals.loopBusyPct), lagMs: Math.round(signals.lagMs), queueDelayMs: signals.queueDelayMs === undefined ? undefined : Math.round(signals.queueDelayMs) });
        else this.log.info("overload over: admitting new requests", { shed: this.overload.shedCount });
        this.bus.emit("sip.overload", { active, cause, at: Date.now() });
      },
    });
    this.proxy = new StatefulProxy({
      transactions: this.transactions,
      transport: this.transport,
      supportedMethods: SUPPORTED_METHODS,
      supportedExtensions: SUPPORTED_EXTENSIONS,
      isOwnAddress: (host, port) => this.transport.addresses().some((a) => a.port === port && a.address === host),
      advertise: makeAdvertiser(s.sipAdvertise),
      // onRequest() checks every request before routing it (below).
      requestsChecked: true,
      log: this.log.child("proxy"),
    });
    this.uas = new UasDialogs({
      sendRequest: (req, flow, callbacks) => this.transactions.sendRequest(req, flow, callbacks),
      via: (flow) => this.proxy.viaFor(flow, this.transactions.createBranch()),
      T1: s.sipT1Ms,
      log: this.log.child("uas"),
    });
    this.registrar = new Registrar({
      realm: s.realm,
      minExpires: s.minExpires,
      maxExpires: s.maxExpires,
      defaultExpires: s.defaultExpires,
      maxContactsPerAor: 10,
      authenticator: new DigestAuthenticator({ realm: s.realm, algorithms: s.authAlgorithms, nonceTtlMs: s.nonceTtlS * 1000 }),
      guard: this.guard,
      credentials: (username) => {
        const d = this.devicesByUsername.get(username);
        return d ? { deviceId: d.id, username: d.username, password: d.password } : undefined;
      },
      location: this.location,
      onAuthenticated: (device, flow) => {
        const saved = this.store.noteAuthSource(device.deviceId, flow.remoteAddress, flow.transport, Date.now());
        if (!saved.ok) this.log.warn("authentication source not remembered", { deviceId: device.deviceId, reason: saved.error.message });
      },
      bus: this.bus,
      log: this.log.child("registrar"),
    });

    // Bindings survive restarts: restore what was stored, then keep-alives confirm them.
    this.location.restore(this.store.listBindings().map(fromRecord));
    await this.transport.start();
    this.location.startSweeping();
    this.presence.start();
    this.media = startMedia(s, this.proxy, this.log.child("media"), {
      bus: this.bus,
      hasQueue: () => [...this.site.current().index.groupsById.values()].some((g) => g.noAnswer.kind === "wait-for-operator"),
      groups: () => [...this.site.current().index.groupsById.values()],
    });
    this.callMenus = startCallMenus(s, this.proxy, this.log.child("menus"), {
      bus: this.bus,
      hasGreeting: () => {
        const m = this.site.current().index.menus;
        return m !== undefined && (m.inboundByNumber.size > 0 || m.defaultInbound !== undefined);
      },
      prompts: () => {
        const r = this.site.current().record;
        return [...(r?.inbound ?? []).map((i) => i.greeting.prompt), ...(r?.menus ?? []).flatMap((m) => [m.prompt, m.invalidPrompt])].filter((p): p is string => p !== undefined);
      },
    }, this.media.media);
    // INFO in the proxy's own early dialogs: a greeting's keys, or a queued caller's answer to the callback offer.
    this.proxy.onOwnDialogRequest((pc, req, respond) => this.callMenus.callMenus.info(pc, req, respond) || (this.callbacks?.queueMedia?.info(pc, req, respond) ?? false));
    this.voicemail = startVoicemail(s, { bus: this.bus, proxy: this.proxy, uas: this.uas, media: this.media.media, site: () => this.site.current().index, log: this.log.child("voicemail") });
    // The message lamps (presence/mwi.ts) count what the mailbox store holds.
    this.voicemailCounts = this.voicemail.store;
    this.callbacks = wireCallbacks({
      settings: s,
      media: this.media,
      transactions: this.transactions,
      send: (flow, bytes) => this.transport.send(flow, bytes),
      site: () => {
        const cur = this.site.current();
        return { index: cur.index, settings: cur.record?.settings ?? { pickupCode: DEFAULT_PICKUP_CODE } };
      },
      bus: this.bus,
      log: this.log.child("callback"),
    });
    this.engine = new RoutingEngine({
      proxy: this.proxy,
      site: () => {
        const cur = this.site.current();
        return { index: cur.index, settings: cur.record?.settings ?? { pickupCode: DEFAULT_PICKUP_CODE } };
      },
      location: this.location,
      presence: this.presence,
      devices: {
        username: (id) => this.store.getDevice(id)?.username,
        credentials: (username) => {
          const d = this.devicesByUsername.get(username);
          return d ? { deviceId: d.id, username: d.username, password: d.password } : undefined;
        },
      },
      store: this.store,
      bus: this.bus,
      // RFC 3261 §22.3: a proxy challenges with 407 / Proxy-Authenticate.
      authenticator: new DigestAuthenticator({ realm: s.realm, algorithms: s.authAlgorithms, nonceTtlMs: s.nonceTtlS * 1000, header: "proxy-authenticate" }),
      guard: this.guard,
      log: this.log.child("routing"),
      respondStatelessly: (tx, res) => void this.transactions.respondStatelessly(tx, res),
      ringUnitMs: s.ringUnitMs,
      latencyBudgetMs: s.latencyBudgetMs,
      operators: this.operators,
      ...(this.media?.queueMusic !== undefined ? { queueMedia: this.media.queueMusic } : {}),
      callMenus: this.callMenus.callMenus,
      mailboxes: { take: (pc, mailbox, caller, events) => this.voicemail?.deposits.take(pc, mailbox, caller, events), leave: (pc) => this.voicemail?.deposits.leave(pc) },
      // The callback offer wraps the music on hold when both are on (media/callback-offer.ts).
      ...(this.callbacks?.queueMedia !== undefined ? { queueMedia: this.callbacks.queueMedia } : {}),
      ...(this.callbacks !== undefined ? { callbacks: this.callbacks.service } : {}),
      listen: {
        code: () => this.settings.voicemailCode,
        enabled: (owner) => mailboxOf(this.site.current().index, owner) !== undefined,
        take: (pc, mailboxes) => {
          if (this.voicemail !== undefined) this.voicemail.listening.take(pc, mailboxes);
          else this.proxy.reject(pc, 480, "Temporarily Unavailable", undefined, { exact: true });
        },
      },
    });
    this.engine.start();
    this.callbacks?.service.start(this.engine);
    this.latencyWatch = new LatencyWatch({
      bus: this.bus,
      counters: () => this.engine.stats().latency,
      policy: () => ({ maxOverBudgetPct: this.settings.healthOverBudgetPct, minCalls: 20 }),
      log: this.log.child("latency"),
    });
    this.latencyWatch.start();
    this.onInvite ??= (tx, req, flow) => this.engine.onInvite(tx, req, flow);
    this.subscriptions = new SubscriptionManager({
      sendRequest: (req, flow, callbacks) => this.transactions.sendRequest(req, flow, callbacks),
      createBranch: () => this.transactions.createBranch(),
      advertise: makeAdvertiser(s.sipAdvertise),
      limits: this.live.subscribe,
      log: this.log.child("subscriptions"),
    });
    this.blf = new BlfNotifier({
      bus: this.bus,
      site: () => this.site.current().index,
      subscriptions: this.subscriptions,
      operators: { get: (id) => this.operators.get(id), featureCodes: () => this.site.current().record?.settings.featureCodes },
    });
    this.blf.start();
    this.mwi = new MwiNotifier({
      bus: this.bus,
      site: () => this.site.current().index,
      subscriptions: this.subscriptions,
      counts: { counts: (owner) => this.voicemailCounts.counts(owner) },
      voicemailCode: () => this.settings.voicemailCode,
      deviceOwner: (username) => {
        const d = this.devicesByUsername.get(username);
        return d === undefined ? undefined : deviceRef(this.site.current().index, d.id)?.ownerId;
      },
      log: this.log.child("mwi"),
    });
    this.mwi.start();

    // Phone provisioning (HTTP/S, PnP, re-sync); configs name the SIP address phones register to.
    const sip0 = this.transport.addresses()[0];
    const sipHost = sip0 && sip0.address !== "0.0.0.0" && sip0.address !== "::" ? sip0.address : undefined;
    this.provisioning = new ProvisioningService({ settings: s, store: this.store, transactions: this.transactions, location: this.location, sip: { ...(sipHost !== undefined ? { host: sipHost } : {}), port: sip0?.port ?? 5060, transport: s.sipTransports.includes("udp") ? "udp" : "tcp" }, log: this.log.child("provisioning"), bus: this.bus, credentialsRotated: (id) => {
      // A claim conflict rotated a phone's SIP password: registrations made with the old one go.
      this.forgetDevice(id);
      this.refreshDevices();
    } });
    await this.provisioning.start();

    this.callsNow.start(this.bus);
    const installerCommands = { ...agentCommands(this.view()), ...callCommands(this.callsNow), ...(this.voicemail !== undefined ? voicemailCommands(this.voicemail.store) : {}) };
    this.control = new ControlServer(path.join(s.dataDir, "control.sock"), auditedCommands({ ...installerCommands, ...applianceCommands(this) }, "installer (control socket)", this.bus), this.log.child("control"));
    await this.control.start();
    if (s.serialDevice !== "") {
      // Never awaited for the device: a missing cable must not stop the agent starting.
      const file = this.settingsFile;
      const savePassword = file === undefined ? undefined : async (hash: string): Promise<void> => {
        writeSetting(file, "serialPassword", hash, s.dataDir);
        s.serialPassword = hash;
      };
      this.serial = new SerialConsole({ settings: s, table: auditedCommands(installerCommands, "installer (serial console)", this.bus), log: this.log.child("serial"), ...(savePassword ? { savePassword } : {}) });
      this.serial.start();
    }
    if (s.mqttUrl) {
      // The site keeps working without the console: start() never waits for the broker.
      this.sync = new MqttSync({
        siteId: s.siteId, url: s.mqttUrl, dataDir: s.dataDir, clientId: s.mqttClientId, username: s.mqttUsername, password: s.mqttPassword,
        ...readTlsFiles(s), statsIntervalS: s.statsIntervalS, outboxMax: s.outboxMax, bus: this.bus, site: siteApplier(this.site),
        status: () => this.status(), presence: () => this.presence.snapshot(), operators: () => this.operators.list(), log: this.log.child("sync"),
        queueLengths: () => this.engine.queueLengths(),
      });
      // cmd/resync from the console re-syncs phones through provisioning (check-sync NOTIFY).
      const hooks = this.provisioning?.hooks();
      if (hooks) this.sync.setResyncHandler(consoleResyncHandler((ids, reboot) => hooks.resync(ids, reboot), () => this.store.listDevices()));
      // cmd/voicemail-fetch: the console downloads a recording in checked chunks (voicemail/fetch.ts).
      const vm = this.voicemail;
      if (vm !== undefined) this.sync.setVoicemailFetchHandler((args) => fetchRecording(vm.store, args));
      this.sync.start();
    }
    this.observe = await startObservability(this);
    const addrs = this.transport.addresses().map((a) => `${a.transport}:${hostPort(a.address, a.port)}`).join(" ");
    if (s.cpuWakeLatencyUs >= 0) {
      this.cpuLatency = CpuLatencyRequest.hold(s.cpuWakeLatencyUs);
      const st = this.cpuLatency.status;
      if (st.held) this.log.info("holding CPU wake-up latency request", { us: st.requestedUs, device: st.device });
      else this.log.warn("CPU wake-up latency request not in force", { us: st.requestedUs, reason: st.reason });
    }
    // Sampling starts once start-up's own work (site file, store, modules) is done (sip/overload.ts).
    this.overload.start();
    // The heap a burst left behind goes back once the signalling is quiet (appliance/idle-gc.ts).
    this.idleGc = new IdleCollector({
      messages: () => this.transport.stats().received,
      gc: exposedGc(),
      onCollect: (before, after, ms) => this.log.debug("idle collection", { heapUsedMB: Math.round(before / 1e5) / 10, afterMB: Math.round(after / 1e5) / 10, ms: Math.round(ms) }),
    });
    this.idleGc.start();
    this.log.info("ringedge started", { site: s.siteId, sip: addrs, data: s.dataDir, devices: this.devicesByUsername.size });
  }

  async stop(): Promise<void> {
    // Offline status published before a clean disconnect (a normal DISCONNECT discards the will).
    await this.sync?.stop();
    await this.observe?.stop();
    await this.serial?.stop();
    this.callsNow.stop();
    this.blf?.stop();
    this.mwi?.stop();
    this.subscriptions?.stop();
    this.latencyWatch?.stop();
    await this.callbacks?.stop();
    this.engine?.stop();
    this.operators?.stop();
    await this.callMenus?.stop();
    this.voicemail?.stop();
    this.uas?.stopAll();
    await this.media?.stop();
    this.presence?.stop();
    this.location?.stopSweeping();
    await this.control?.stop();
    await this.provisioning?.stop();
    this.overload?.stop();
    this.idleGc?.stop();
    this.transactions?.close();
    await this.transport?.stop();
    await this.store?.close();
    this.cpuLatency?.release();
    this.audit.stop();
    this.log.info("ringedge stopped");
  }

  /** Stop taking new calls and wait for the current ones, up to timeoutMs (then flush). */
  drain(timeoutMs: number = this.settings.drainTimeoutS * 1000): Promise<DrainReport> {
    return this.drainer.drain(timeoutMs);
  }

  /** Watchdog health (firmware-hooks/health): SIP sockets and store fail; latency, drain, broker are reported. */
  async health(): Promise<HealthReport> {
    const s = this.settings;
    const addrs = this.transport.addresses();
    const store = await this.storeWritable();
    const st = this.sync?.syncStatus();
    const latency = this.latencyWatch?.latest();
    return judgeHealth({
      sip: { listening: addrs.length, expected: s.sipListen.length * s.sipTransports.length, addresses: addrs.map((a) => `${a.transport}:${hostPort(a.address, a.port)}`) },
      store,
      ...(latency ? { latency } : {}),
      ...(this.latencyWatch ? { latencyOpen: this.latencyWatch.open() } : {}),
      ...(st ? { broker: { connected: st.connected, outboxPending: st.outbox.pending } } : {}),
      drain: this.drainer.state(),
    });
  }

  private async storeWritable(): Promise<{ writable: boolean; error?: string }> {
    const probe = path.join(this.settings.dataDir, ".health-probe");
    const within = <T>(p: Promise<T>, what: string): Promise<T> =>
      Promise.race([p, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`${what} took over 2 s`)), 2000).unref())]);
    try {
      await within(fsp.writeFile(probe, String(Date.now()), { mode: 0o600 }), "probe write");
      await fsp.rm(probe, { force: true });
      await within(this.store.flush(), "store flush");
      return { writable: true };
    } catch (e) {
      return { writable: false, error: (e as Error).message };
    }
  }

  /**
   * SIGHUP: takes the settings that can change live (appliance/reload.ts), keeps registrations,
   * calls and sockets; the others are reported and wait for a restart.
   */
  async reload(next: LiveSettings): Promise<ReloadPlan & { errors: string[] }> {
    const plan = planReload(this.settings, next);
    const errors: string[] = [];
    const mutable = this.settings as unknown as Record<string, unknown>;
    for (const name of plan.live) mutable[name] = structuredClone(next[name]);
    this.setLiveOptions(this.settings);
    if (plan.live.includes("siteFile") && this.settings.siteFile !== "") {
      const read = readSiteFile(this.settings.siteFile);
      const r = read.ok ? await this.site.apply(read.value, "file") : read;
      if (!r.ok) errors.push(`site file ${this.settings.siteFile} was not applied:\n${formatSiteErrors(r.errors)}`);
      else this.refreshDevices();
    }
    this.log.info("settings reloaded", { applied: plan.live.join(",") || "none", needRestart: plan.restart.join(",") || undefined });
    return { ...plan, errors };
  }

  private setLiveOptions(s: Settings): void {
    Object.assign(this.live.perSource, { maxFailures: s.guardSourceMaxFailures, windowMs: s.guardWindowS * 1000, banMs: s.guardBanS * 1000 });
    Object.assign(this.live.perAccount, { maxFailures: s.guardAccountMaxFailures, windowMs: s.guardWindowS * 1000, banMs: s.guardBanS * 1000 });
    Object.assign(this.live.rate, { max: s.guardRequestRateMax, windowMs: s.guardRequestRateWindowS * 1000 });
    Object.assign(this.live.quota, { ratePerS: s.guardSourceRatePerS, burst: s.guardSourceBurst, maxInFlight: s.guardSourceMaxTransactions, banMs: s.guardFloodBanS * 1000 });
    Object.assign(this.live.presence, { intervalMs: s.keepaliveIntervalS * 1000, misses: s.keepaliveMisses });
    Object.assign(this.live.overload, { loopBusyPct: s.overloadLoopBusyPct, lagMs: s.overloadLagMs, queueDelayMs: s.overloadQueueDelayMs, maxCallsSetup: s.overloadMaxCallsSetup, maxServerTransactions: s.overloadMaxServerTransactions, clearPct: s.overloadClearPct, retryAfterS: s.overloadRetryAfterS });
    Object.assign(this.live.subscribe, { maxPerDevice: s.subscribeMaxPerDevice, rateMax: s.subscribeRateMax, rateWindowMs: s.subscribeRateWindowS * 1000, minExpires: s.subscribeMinExpires, maxExpires: s.subscribeMaxExpires });
  }

  /** Applies the configured site file at start-up; a bad file stops the start, listing every error. */
  private async applySiteFile(file: string): Promise<void> {
    const read = readSiteFile(file);
    const r = read.ok ? await this.site.apply(read.value, "file") : read;
    if (!r.ok) {
      await this.store.close();
      throw new Error(`site file ${file} was not applied:\n${formatSiteErrors(r.errors)}`);
    }
    this.log.info(r.changed ? "site file applied" : "site file already applied", { file, version: r.version, note: r.changed ? undefined : r.note });
  }

  /** The read/write surface the console commands get (CLI over the control socket). */
  view(): AgentView {
    return {
      store: this.store,
      status: () => this.status(),
      presence: () => this.presence.snapshot(),
      bindings: () => this.location.all(),
      devicesChanged: (removedId) => {
        if (removedId) this.forgetDevice(removedId);
        this.refreshDevices();
        this.site.refresh();
      },
      site: this.site,
      ...(this.provisioning ? { provisioning: this.provisioning.hooks() } : {}),
      ...(this.engine ? { why: this.engine.why } : {}),
    };
  }

  status(): AgentStatus {
    const devices = this.store.listDevices();
    const pres = this.presence.snapshot();
    const drain = this.drainer.state();
    const sync = this.sync?.syncStatus();
    const latencyWarning = this.latencyWatch?.warning() ?? null;
    return {
      siteId: this.settings.siteId,
      pid: process.pid,
      startedAt: new Date(this.startedAt).toISOString(),
      uptimeS: Math.round((Date.now() - this.startedAt) / 1000),
      sip: this.transport.addresses().map((a) => ({ transport: a.transport, address: a.address, port: a.port })),
      devices: {
        total: devices.length,
        physical: devices.filter((d) => d.kind === "physical").length,
        soft: devices.filter((d) => d.kind === "soft").length,
        registered: pres.filter((p) => p.registered).length,
        online: pres.filter((p) => p.online).length,
      },
      bindings: this.location.count(),
      transactions: { ...this.transactions.counts(), absorbed: this.absorbedRequests, throttled: this.throttledRequests },
      transport: this.transport.stats(),
      guard: this.guard.stats(),
      proxy: this.proxy.stats(),
      overload: this.overload.stats(),
      routing: { ...this.engine.stats(), queues: this.engine.queueFigures() },
      callbacks: this.callbacks?.service.list().map((c) => ({ id: c.id, groupId: c.groupId, number: c.number, place: new Date(c.place).toISOString(), attempts: c.attempts, calling: c.operator ?? null, notBefore: c.notBefore > 0 ? new Date(c.notBefore).toISOString() : null })) ?? [],
      store: { file: this.store.file, pendingWrites: this.store.hasPendingWrites() },
      site: siteStatus(this.site.current().record),
      memory: process.memoryUsage(),
      idleCollections: this.idleGc?.available === true ? this.idleGc.count : null,
      idleCollectionPauseMs: this.idleGc?.lastPauseMs === undefined ? null : Math.round(this.idleGc.lastPauseMs * 10) / 10,
      cpuLatency: this.cpuLatency === undefined ? null : this.cpuLatency.status,
      scheduling: currentScheduling() ?? null,
      version: VERSION,
      drain,
      mqtt: sync ? { connected: sync.connected, outboxPending: sync.outbox.pending } : null,
      provisioningUrls: this.provisioning?.hooks().urls() ?? [],
      latencyWindow: this.latencyWatch?.latest() ?? null,
      warnings: [
        ...(drain.draining && drain.overdue ? [`draining for ${drain.forS} s, past its ${drain.timeoutS} s timeout: new calls are refused`] : []),
        ...(latencyWarning !== null ? [latencyWarning] : []),
      ],
    };
  }

  /**
   * A device removed (or its credentials rotated, or its username changed): what it held with
   * the old identity ends — its registrations and its subscriptions (BLF lamps).
   */
  private forgetDevice(id: string): void {
    this.location?.removeDevice(id);
    this.subscriptions?.endDevice(id);
  }

  private refreshDevices(): void {
    this.devicesByUsername = new Map(this.store.listDevices().map((d) => [d.username, d]));
  }

  private onBindings(change: BindingChange): void {
    this.presence.onBindings(change);
    // Write-behind: the REGISTER's 200 never waits for the disk (DESIGN principle 3).
    if (change.reason !== "restored") {
      const saved = this.store.setBindings(change.aor, change.bindings);
      if (!saved.ok) this.log.error("bindings not persisted", { aor: change.aor, reason: saved.error.message });
      this.store.scheduleSave();
    }
    this.bus.emit("device.bindings", { deviceId: change.deviceId, aor: change.aor, contacts: change.bindings.length, at: Date.now() });
  }

  // --- request dispatch ----------------------------------------------------------------

  private onRequest(req: SipRequest, flow: Flow): void {
    // A source over its REGISTER rate is ignored silently, before any state is created
    // (Kamailio pike-like); the transport already drops sources that are banned.
    if (req.method === "REGISTER" && this.guard.noteRequest(flow.remoteAddress) === "ban" && this.engine?.isDeviceFlow(flow) !== true) return;
    // Every method: a source over its quota of new requests or live transactions is dropped
    // silently before a transaction exists for it; retransmissions are absorbed first, so
    // they never count (guard.ts admitRequest). A live registered flow is held to the rate but
    // never to a ban of its address (guard.ts: bans cannot be turned against phones).
    const r = this.transactions.receiveRequest(req, flow, this.engine?.isDeviceFlow(flow) === true ? this.admitNewFromDevice : this.admitNew);
    switch (r.kind) {
      case "refused":
        this.throttledRequests++;
        return;
      case "absorbed":
        this.absorbedRequests++;
        return;
      case "stray-ack":
        // No transaction state, but a stream of ACKs is a flood like any other: it counts
        // against the source's quota (one per call for a real phone), so a flooder is banned.
        if (this.uas.handleAck(req)) return;
        if (this.admitSource(flow.remoteAddress, 0)) this.proxy.handleAck(req, flow);
        else this.throttledRequests++;
        return;
      case "ack-2xx":
        // The ACK for a 2xx: ours when the appliance answered (uas-session.ts), else forwarded
        // statelessly inside its dialog, else dropped (§16.11, §17.1.1.3).
        if (!this.uas.handleAck(req)) this.proxy.handleAck(req, flow);
        return;
      case "invalid":
        this.log.debug("request refused by the transaction layer", { reason: r.reason, from: flow.remoteAddress });
        return;
      case "overload":
        this.sendStateless(flow, createResponse(req, 503, "Service Unavailable", { headers: [{ name: "retry-after", value: "5" }] }));
        return;
      case "shed":
        // Past capacity (sip/overload.ts): RFC 3261 §21.5.4 503 with Retry-After (§20.33), sent
        // once and statelessly, before any transaction or call record exists; the caller or
        // trunk retries later or elsewhere. A retransmission is judged again.
        this.sendStateless(flow, createResponse(req, 503, "Service Unavailable", { toTag: "ovl", headers: [{ name: "retry-after", value: String(this.overload.retryAfter()) }] }));
        return;
      case "cancel": {
        if (this.proxy.handleCancel(r.tx, r.inviteTx, req)) return;
        // No call is proxied before the routing issue lands: nothing to cancel but the answer.
        r.tx.respond(createResponse(req, r.inviteTx ? 200 : 481, r.inviteTx ? "OK" : "Call/Transaction Does Not Exist", { toTag: "cancel" }));
        return;
      }
      case "new":
        break;
    }
    const tx = r.tx;
    // Only methods we implement are routed anywhere (RFC 3261 §8.2.1; RFC 4475 intmeth, esc02).
    if (!SUPPORTED_METHODS.has(req.method)) {
      tx.respond(createResponse(req, 501, "Not Implemented", { toTag: "ni", headers: [{ name: "allow", value: ALLOW }] }));
      return;
    }
    // The agent is the registrar for REGISTER and the UAS for OPTIONS; everything else it
    // would route onward, so it checks those as a proxy (no 415/406 on others' bodies).
    const role = req.method === "REGISTER" ? "registrar" : req.method === "OPTIONS" || req.method === "SUBSCRIBE" ? "uas" : "proxy";
    const rejection = checkRequest(req, { role, supportedMethods: SUPPORTED_METHODS, supportedExtensions: SUPPORTED_EXTENSIONS });
    if (rejection) {
      tx.respond(createResponse(req, rejection.status, rejection.reason, { toTag: "rej", headers: rejection.headers }));
      return;
    }
    // A SUBSCRIBE with a To tag refreshes one of our subscriptions (RFC 6665 §4.2.1.2); one
    // that is not ours goes the proxy's way (a proxied dialog, else 481).
    if (req.method === "SUBSCRIBE" && req.to.tag !== undefined && this.subscriptions.handleInDialog(tx, req, flow)) return;
    // Requests inside a dialog (To tag) follow its route set through the proxy (§16.12).
    if (req.to.tag !== undefined && req.method !== "REGISTER") {
      // Dialogs the appliance answered itself (voicemail) are its own, not proxied.
      if (this.uas.handleRequest(tx, req, flow)) return;
      // Dialogs of calls the agent placed itself (callbacks, sip/originate.ts) are answered here.
      if (this.callbacks?.originator.handleInDialog(tx, req) === true) return;
      this.proxy.handleInDialog(tx, req, flow);
      return;
    }
    switch (req.method) {
      case "REGISTER": {
        tx.respond(this.registrar.handle(req, flow));
        return;
      }
      case "OPTIONS":
        // RFC 3261 §11.2: capabilities. Phones use it as a keep-alive toward us too.
        tx.respond(
          createResponse(req, 200, "OK", {
            toTag: "opt",
            headers: [
              { name: "allow", value: ALLOW },
              { name: "accept", value: "application/sdp" },
              { name: "supported", value: "path, outbound" },
              // RFC 6665 §8.2.2: the event packages we are a notifier for.
              { name: "allow-events", value: this.subscriptions.allowEvents() },
            ],
          }),
        );
        return;
      case "SUBSCRIBE": {
        // BLF and other event packages: registered or digest-proven devices only, the same
        // way the engine admits a phone's INVITE (routing/classify.ts, 407 challenge).
        const device = this.engine.identifyDevice(tx, req, flow);
        if (device !== undefined) this.subscriptions.handleSubscribe(tx, req, flow, device);
        return;
      }
      default:
        if (req.method === "INVITE" && this.drainer.draining) {
          // Draining for an upgrade or stop: RFC 3261 §21.5.4 503 with Retry-After (§20.33),
          // so a trunk or phone retries elsewhere or later; calls in progress are untouched.
          this.drainer.noteRefused();
          tx.respond(createResponse(req, 503, "Service Unavailable", { toTag: "drain", headers: [{ name: "retry-after", value: String(this.settings.drainRetryAfterS) }] }));
          return;
        }
        if (req.method === "INVITE" && tx.kind === "invite" && this.onInvite !== undefined) {
          this.onInvite(tx, req, flow);
          return;
        }
        // Calls to groups and users arrive with the routing issue; until then nothing is routable.
        tx.respond(createResponse(req, 404, "Not Found", { toTag: "nf" }));
    }
  }

  private onResponse(res: SipResponse, flow: Flow): void {
    // Responses to our client transactions (keep-alives, proxy branches); stray ones are
    // dropped and counted (RFC 6026 §7.2 replaced §16.7's stateless forwarding of stray 2xx).
    if (this.transactions.receiveResponse(res, flow).kind === "stray") this.proxy.strayResponse(res, flow);
  }

  private sendStateless(flow: Flow, res: SipResponse): void {
    this.transport.send(flow, serialize(res));
  }

  /** OPTIONS keep-alive to a binding, over the flow it registered from. */
  private probe(b: Binding): Promise<boolean> {
    return new Promise((resolve) => {
      let req: SipRequest;
      try {
        req = buildRequest({ method: "OPTIONS", requestUri: b.contact, flow: b.flow, localAddress: advertisedAddress(b.flow, this.settings.sipAdvertise), branch: this.transactions.createBranch() });
      } catch {
        resolve(false);
        return;
      }
      let settled = false;
      const done = (ok: boolean): void => {
        if (!settled) resolve(ok);
        settled = true;
      };
      this.transactions.sendRequest(req, b.flow, {
        onProvisional: () => undefined,
        onFinal: () => done(true),
        onTimeout: () => done(false),
        onTransportError: () => done(false),
      });
    });
  }
}

function fromRecord(r: BindingRecord): Binding {
  return {
    deviceId: r.deviceId,
    aor: r.aor,
    contact: r.contact,
    expiresAt: r.expiresAt,
    callId: r.callId,
    cseq: r.cseq,
    q: r.q,
    flow: { ...r.flow },
    userAgent: r.userAgent,
    instance: r.instance,
  };
}

function siteStatus(r: Readonly<SiteRecord> | null): AgentStatus["site"] {
  return r === null ? null : { version: r.version, source: r.source, appliedAt: r.appliedAt, hash: r.hash, users: r.users.length, groups: r.groups.length };
}
