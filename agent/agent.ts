// The agent: wires the mechanisms (transport, transactions, location, registrar, presence,
// store) together and dispatches requests by method. The place to read first to see how a
// request flows; docs/architecture.md tells the same story in prose.
import path from "node:path";
import { EventBus } from "./bus.ts";
import type { Settings } from "./config.ts";
import { parseHostPort } from "./config.ts";
import type { Logger } from "./log.ts";
import { PresenceTracker } from "./presence/presence.ts";
import { Store } from "./store/store.ts";
import type { BindingRecord, DeviceRecord } from "./store/schema.ts";
import { DigestAuthenticator } from "./sip/digest.ts";
import { AuthGuard } from "./sip/guard.ts";
import { LocationService, type Binding, type BindingChange } from "./sip/location.ts";
import { Registrar } from "./sip/registrar.ts";
import { StatefulProxy } from "./sip/proxy.ts";
import type { ProxyStats } from "./sip/proxy-types.ts";
import { buildRequest, hostPort } from "./sip/requests.ts";
import { createResponse, serialize } from "./sip/serialize.ts";
import { TransactionLayer, type InviteServerTransaction } from "./sip/transaction.ts";
import { SipTransport } from "./sip/transport.ts";
import { checkRequest } from "./sip/validate.ts";
import type { Flow, SipRequest, SipResponse } from "./sip/types.ts";
import { ControlServer } from "./console/control.ts";
import { agentCommands, type AgentView } from "./console/commands.ts";
import { SiteService, formatSiteErrors, readSiteFile } from "./site/site.ts";
import type { SiteRecord } from "./site/types.ts";

/** Methods this element understands; anything else is answered 501 (RFC 3261 §21.5.2). */
const SUPPORTED_METHODS: ReadonlySet<string> = new Set(["REGISTER", "OPTIONS", "INVITE", "ACK", "CANCEL", "BYE", "INFO", "UPDATE", "PRACK", "NOTIFY", "SUBSCRIBE", "MESSAGE", "REFER", "PUBLISH"]);
/** Option tags we implement (RFC 3261 §8.2.2.3); Require with any other gets 420. */
const SUPPORTED_EXTENSIONS: ReadonlySet<string> = new Set(["path", "outbound", "gruu", "replaces", "timer", "100rel"]);
const ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, INFO, UPDATE, NOTIFY";

export interface AgentStatus {
  siteId: string;
  pid: number;
  startedAt: string;
  uptimeS: number;
  sip: Array<{ transport: string; address: string; port: number }>;
  devices: { total: number; physical: number; soft: number; registered: number; online: number };
  bindings: number;
  /** Live transactions, and requests absorbed by one (retransmissions, ACKs for non-2xx; RFC 3261 §17.2.3) since start. */
  transactions: { server: number; client: number; absorbed: number };
  transport: ReturnType<SipTransport["stats"]>;
  guard: ReturnType<AuthGuard["stats"]>;
  /** The forking proxy: calls ringing, dialogs up, branches alive (agent/sip/proxy.ts). */
  proxy: ProxyStats;
  store: { file: string; pendingWrites: boolean };
  /** The applied site configuration; null before the first site file or console push. */
  site: { version: number; source: "file" | "console"; appliedAt: string; hash: string; users: number; groups: number } | null;
  /** Bytes, from process.memoryUsage() (rss, heapTotal, heapUsed, external, arrayBuffers). */
  memory: NodeJS.MemoryUsage;
}

export class Agent {
  readonly bus = new EventBus();
  store!: Store;
  transport!: SipTransport;
  transactions!: TransactionLayer;
  location!: LocationService;
  registrar!: Registrar;
  proxy!: StatefulProxy;
  /**
   * New INVITEs (outside any dialog) go here once set; unset, they get 404. Set in-process only
   * (the routing engine, or a test fixture): no setting or message can turn it on.
   */
  onInvite: ((tx: InviteServerTransaction, req: SipRequest, flow: Flow) => void) | undefined;
  presence!: PresenceTracker;
  guard!: AuthGuard;
  /** The applied site configuration (users, groups, settings) and its routing lookups. */
  site!: SiteService;
  private control: ControlServer | undefined;
  private readonly startedAt = Date.now();
  /** Devices keyed by SIP username: the registrar's credential lookup, rebuilt on change. */
  private devicesByUsername = new Map<string, DeviceRecord>();
  /** Requests matched to an existing server transaction: answered by it, never seen by the TU. */
  private absorbedRequests = 0;

  constructor(readonly settings: Settings, readonly log: Logger) {}

  async start(): Promise<void> {
    const s = this.settings;
    // The store takes the data directory's lock: one agent (or offline CLI command) at a time.
    this.store = await Store.open(s.dataDir, {
      siteId: s.siteId,
      onError: (err) => this.log.error("store write failed; retrying", { err: err.message }),
    });
    this.site = new SiteService({
      store: this.store,
      bus: this.bus,
      log: this.log.child("site"),
      onDevicesChanged: (voided) => {
        for (const id of voided) this.location?.removeDevice(id);
        this.refreshDevices();
      },
    });
    this.site.start();
    if (s.siteFile !== "") await this.applySiteFile(s.siteFile);
    this.refreshDevices();

    this.guard = new AuthGuard({
      perSource: { maxFailures: s.guardSourceMaxFailures, windowMs: s.guardWindowS * 1000, banMs: s.guardBanS * 1000 },
      perAccount: { maxFailures: s.guardAccountMaxFailures, windowMs: s.guardWindowS * 1000, banMs: s.guardBanS * 1000 },
      perSourceRequestRate: { max: s.guardRequestRateMax, windowMs: s.guardRequestRateWindowS * 1000 },
      allowlist: s.guardAllowlist,
      maxTracked: 100_000,
    });
    this.guard.onBan = (source, until) => {
      this.log.warn("source banned after repeated authentication failures", { source, until: new Date(until).toISOString() });
      this.bus.emit("auth.ban", { source, until });
    };

    this.location = new LocationService((change) => this.onBindings(change));
    this.presence = new PresenceTracker({
      intervalMs: s.keepaliveIntervalS * 1000,
      misses: s.keepaliveMisses,
      bus: this.bus,
      location: this.location,
      probe: (b) => this.probe(b),
      username: (id) => this.store.getDevice(id)?.username,
      log: this.log.child("presence"),
    });

    this.transport = new SipTransport(
      {
        listen: s.sipListen.map((a) => parseHostPort(a)),
        transports: s.sipTransports,
        limits: { maxMessageBytes: s.maxMessageBytes, maxHeaders: s.maxHeaders },
        acceptSource: (addr) => !this.guard.isBanned(addr),
        log: this.log.child("sip"),
      },
      { onRequest: (req, flow) => this.onRequest(req, flow), onResponse: (res, flow) => this.onResponse(res, flow) },
    );
    // RFC 3261 §17.1.1.1: T1 is configurable; T2/T4 keep their defaults.
    this.transactions = new TransactionLayer({ transport: this.transport, timers: { T1: s.sipT1Ms } });
    this.proxy = new StatefulProxy({
      transactions: this.transactions,
      transport: this.transport,
      supportedMethods: SUPPORTED_METHODS,
      supportedExtensions: SUPPORTED_EXTENSIONS,
      isOwnAddress: (host, port) => this.transport.addresses().some((a) => a.port === port && a.address === host),
      log: this.log.child("proxy"),
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
      bus: this.bus,
      log: this.log.child("registrar"),
    });

    // Bindings survive restarts: restore what was stored, then keep-alives confirm them.
    this.location.restore(this.store.listBindings().map(fromRecord));
    await this.transport.start();
    this.location.startSweeping();
    this.presence.start();

    this.control = new ControlServer(path.join(s.dataDir, "control.sock"), agentCommands(this.view()), this.log.child("control"));
    await this.control.start();
    const addrs = this.transport.addresses().map((a) => `${a.transport}:${hostPort(a.address, a.port)}`).join(" ");
    this.log.info("ringedge started", { site: s.siteId, sip: addrs, data: s.dataDir, devices: this.devicesByUsername.size });
  }

  async stop(): Promise<void> {
    this.presence?.stop();
    this.location?.stopSweeping();
    await this.control?.stop();
    this.transactions?.close();
    await this.transport?.stop();
    await this.store?.close();
    this.log.info("ringedge stopped");
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
        if (removedId) this.location.removeDevice(removedId);
        this.refreshDevices();
        this.site.refresh();
      },
      site: this.site,
    };
  }

  status(): AgentStatus {
    const devices = this.store.listDevices();
    const pres = this.presence.snapshot();
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
      transactions: { ...this.transactions.counts(), absorbed: this.absorbedRequests },
      transport: this.transport.stats(),
      guard: this.guard.stats(),
      proxy: this.proxy.stats(),
      store: { file: this.store.file, pendingWrites: this.store.hasPendingWrites() },
      site: siteStatus(this.site.current().record),
      memory: process.memoryUsage(),
    };
  }

  private refreshDevices(): void {
    this.devicesByUsername = new Map(this.store.listDevices().map((d) => [d.username, d]));
  }

  private onBindings(change: BindingChange): void {
    this.presence.onBindings(change);
    // Write-behind: the REGISTER's 200 never waits for the disk (DESIGN principle 3).
    if (change.reason !== "restored") {
      this.store.setBindings(change.aor, change.bindings.map(toRecord));
      this.store.scheduleSave();
    }
    this.bus.emit("device.bindings", { deviceId: change.deviceId, aor: change.aor, contacts: change.bindings.length, at: Date.now() });
  }

  // --- request dispatch ----------------------------------------------------------------

  private onRequest(req: SipRequest, flow: Flow): void {
    // A source over its REGISTER rate is ignored silently, before any state is created
    // (Kamailio pike-like); the transport already drops sources that are banned.
    if (req.method === "REGISTER" && this.guard.noteRequest(flow.remoteAddress) === "ban") return;
    const r = this.transactions.receiveRequest(req, flow);
    switch (r.kind) {
      case "absorbed":
        this.absorbedRequests++;
        return;
      case "stray-ack":
      case "ack-2xx":
        // The ACK for a 2xx: forwarded statelessly inside its dialog, else dropped (§16.11, §17.1.1.3).
        this.proxy.handleAck(req, flow);
        return;
      case "invalid":
        this.log.debug("request refused by the transaction layer", { reason: r.reason, from: flow.remoteAddress });
        return;
      case "overload":
        this.sendStateless(flow, createResponse(req, 503, "Service Unavailable", { headers: [{ name: "retry-after", value: "5" }] }));
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
    const role = req.method === "REGISTER" ? "registrar" : req.method === "OPTIONS" ? "uas" : "proxy";
    const rejection = checkRequest(req, { role, supportedMethods: SUPPORTED_METHODS, supportedExtensions: SUPPORTED_EXTENSIONS });
    if (rejection) {
      tx.respond(createResponse(req, rejection.status, rejection.reason, { toTag: "rej", headers: rejection.headers }));
      return;
    }
    // Requests inside a dialog (To tag) follow its route set through the proxy (§16.12).
    if (req.to.tag !== undefined && req.method !== "REGISTER") {
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
            ],
          }),
        );
        return;
      default:
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
        req = buildRequest({ method: "OPTIONS", requestUri: b.contact, flow: b.flow, branch: this.transactions.createBranch() });
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

function toRecord(b: Binding): BindingRecord {
  return {
    deviceId: b.deviceId,
    aor: b.aor,
    contact: b.contact,
    expiresAt: b.expiresAt,
    callId: b.callId,
    cseq: b.cseq,
    ...(b.q !== undefined ? { q: b.q } : {}),
    flow: { transport: b.flow.transport, remoteAddress: b.flow.remoteAddress, remotePort: b.flow.remotePort, localAddress: b.flow.localAddress, localPort: b.flow.localPort },
    ...(b.userAgent !== undefined ? { userAgent: b.userAgent } : {}),
    ...(b.instance !== undefined ? { instance: b.instance } : {}),
  };
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
