// Provisioning as one feature of the agent, with start() and stop(): loads the device profiles
// (a broken vendor folder is reported by name; the others serve), runs the HTTP(S) server, the
// optional SIP PnP responder, and offers re-sync and the firmware report to the console commands.

import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { Settings } from "../agent/config.ts";
import { parseHostPort } from "../agent/config.ts";
import type { Logger } from "../agent/log.ts";
import type { EventBus } from "../agent/bus.ts";
import type { LocationService } from "../agent/sip/location.ts";
import type { TransactionLayer } from "../agent/sip/transaction.ts";
import type { Store } from "../agent/store/store.ts";
import { FirmwareStore, firmwareReport, type FirmwareReportRow } from "./firmware.ts";
import { PnpResponder, type PnpSubscription } from "./pnp.ts";
import { findModel, loadProfiles, type Profile } from "./profiles.ts";
import { resyncPhones, transactionSender, type ResyncResult } from "./resync.ts";
import { ProvisioningServer, baseUrl, type ProvisioningOutcome } from "./server.ts";
import { StoreDirectory } from "./store-directory.ts";

/** device-profiles/ next to this folder, wherever the process was started from. */
export const DEFAULT_PROFILES_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../device-profiles");

let cachedProfiles: ReadonlyMap<string, Profile> | undefined;
/** Profiles for commands that run without the agent (validation of model ids). */
export function defaultProfiles(): ReadonlyMap<string, Profile> {
  cachedProfiles ??= loadProfiles(DEFAULT_PROFILES_DIR).profiles;
  return cachedProfiles;
}

/** What console commands can ask a running agent's provisioning feature. */
export interface ProvisioningHooks {
  profiles: ReadonlyMap<string, Profile>;
  resync(deviceIds: readonly string[], reboot: boolean): Promise<ResyncResult[]>;
  firmwareReport(): FirmwareReportRow[];
  /** Let a phone fetch its bootstrap once more (replaced or factory-reset phone). */
  reopenBootstrap(deviceId: string): void;
  urls(): string[];
}

export interface ProvisioningServiceDeps {
  settings: Settings;
  store: Store;
  transactions: TransactionLayer;
  location: LocationService;
  /** SIP address phones register to: the first sipListen (unless it is a wildcard). */
  sip: { host?: string; port: number; transport: "udp" | "tcp" };
  log: Logger;
  profilesDir?: string;
  /** Every answered request is published here as "provisioning.request" (metrics, audit log). */
  bus?: EventBus;
}

export class ProvisioningService {
  readonly profiles: ReadonlyMap<string, Profile>;
  readonly directory: StoreDirectory;
  readonly firmware: FirmwareStore;
  server: ProvisioningServer | undefined;
  pnp: PnpResponder | undefined;

  constructor(private readonly deps: ProvisioningServiceDeps) {
    const log = deps.log;
    const loaded = loadProfiles(deps.profilesDir ?? DEFAULT_PROFILES_DIR);
    for (const e of loaded.errors) log.error("device profile not loaded", { vendor: e.vendor, problem: e.message });
    this.profiles = loaded.profiles;
    this.directory = new StoreDirectory(deps.store, (m) => log.warn(m));
    const s = deps.settings;
    this.firmware = new FirmwareStore({ dir: s.firmwareDir === "" ? undefined : s.firmwareDir, onPinsError: (m) => log.warn("firmware pins ignored", { problem: m }) });
    if (s.firmwareDir !== "" && !this.firmware.enabled) log.warn("firmware directory not found; no firmware is served", { dir: s.firmwareDir });
  }

  async start(): Promise<void> {
    const s = this.deps.settings;
    const http = parseHostPort(s.httpListen);
    let https: { host: string; port: number; cert: Buffer; key: Buffer } | undefined;
    if (s.httpsListen !== "") {
      if (s.httpsCert === "" || s.httpsKey === "") throw new Error("httpsListen needs httpsCert and httpsKey");
      const hp = parseHostPort(s.httpsListen);
      https = { host: hp.host, port: hp.port, cert: fs.readFileSync(s.httpsCert), key: fs.readFileSync(s.httpsKey) };
    }
    const sip = this.deps.sip;
    this.server = new ProvisioningServer({
      profiles: this.profiles,
      directory: this.directory,
      firmware: this.firmware,
      site: () => ({ ...(sip.host !== undefined ? { sipHost: sip.host } : {}), sipPort: sip.port, transport: sip.transport, ntpServer: "pool.ntp.org", timeZone: "UTC", resyncIntervalMin: 1440 }),
      log: this.deps.log,
      digestAlgorithms: s.authAlgorithms,
      bootstrapWindowMs: s.provisioningBootstrapWindowS * 1000,
      http: { host: http.host, port: http.port },
      ...(this.deps.bus ? { onRequest: (e: ProvisioningOutcome) => this.deps.bus!.emit("provisioning.request", { ...e, at: Date.now() }) } : {}),
      ...(https ? { https } : {}),
    });
    await this.server.start();
    if (s.pnpEnabled) {
      if (s.pnpInterface === "") {
        this.deps.log.error("pnpEnabled needs pnpInterface (the IPv4 address of the phones' interface); PnP stays off");
      } else {
        const pnp = new PnpResponder({ interfaceAddress: s.pnpInterface, port: s.pnpPort, log: this.deps.log.child("pnp"), t1Ms: s.sipT1Ms, urlFor: (sub) => this.pnpUrl(sub) });
        try {
          await pnp.start();
          this.pnp = pnp;
        } catch (e) {
          // PnP is a convenience: the agent runs on without it (DHCP option 66 still works).
          this.deps.log.error("PnP responder could not start", { err: (e as Error).message });
          await pnp.stop();
        }
      }
    }
  }

  async stop(): Promise<void> {
    await this.pnp?.stop();
    await this.server?.stop();
  }

  /**
   * The URL PnP hands a phone: its per-device token URL while its bootstrap is still open (that
   * hand-out is its one bootstrap), else the base URL on the PnP interface.
   */
  private pnpUrl(sub: PnpSubscription): string | undefined {
    const http = this.server?.addresses().find((a) => a.scheme === "http");
    if (!http) return undefined;
    const base = baseUrl("http", this.deps.settings.pnpInterface, http.port);
    const phone = sub.mac !== undefined ? this.directory.phoneByMac(sub.mac) : undefined;
    if (phone?.provisioning && this.server!.gate.claim(phone)) return `${base}/p/${phone.provisioning.token}/`;
    return `${base}/`;
  }

  hooks(): ProvisioningHooks {
    return {
      profiles: this.profiles,
      resync: (ids, reboot) => this.resync(ids, reboot),
      firmwareReport: () => firmwareReport(this.directory.phones(), this.deps.store.listSeenPhones(), this.profiles, this.firmware, findModel),
      reopenBootstrap: (id) => this.server?.gate.reopen(id),
      urls: () => (this.server?.addresses() ?? []).map((a) => `${baseUrl(a.scheme, a.address, a.port)}/`),
    };
  }

  resync(deviceIds: readonly string[], reboot: boolean): Promise<ResyncResult[]> {
    const store = this.deps.store;
    const phones = deviceIds.flatMap((id) => {
      const d = store.getDevice(id);
      return d ? [{ deviceId: d.id, username: d.username, password: d.password, ...(d.mac ? { mac: d.mac } : {}), ...(d.model ? { model: d.model } : {}) }] : [];
    });
    return resyncPhones(phones, { reboot }, {
      profiles: this.profiles,
      bindings: (u) => this.deps.location.lookup(u),
      send: transactionSender(this.deps.transactions),
    });
  }
}
