// Provisioning as one feature of the agent, with start() and stop(): loads the device profiles
// (a broken vendor folder is reported by name; the others serve), runs the HTTP(S) server, the
// optional SIP PnP responder, and offers re-sync and the firmware report to the console commands.

import type { X509Certificate } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import type { Settings } from "../agent/config.ts";
import { parseHostPort } from "../agent/config.ts";
import type { EventBus } from "../agent/bus.ts";
import type { Logger } from "../agent/log.ts";
import type { LocationService } from "../agent/sip/location.ts";
import type { TransactionLayer } from "../agent/sip/transaction.ts";
import type { Store } from "../agent/store/store.ts";
import { loadDeviceCas } from "./devicecert.ts";
import { FirmwareStore, firmwareReport, type FirmwareReportRow } from "./firmware.ts";
import { PnpResponder, pnpSeenNote, type PnpSubscription } from "./pnp.ts";
import { DEFAULT_PROFILES_DIR, findModel, loadProfiles, type Profile } from "./profiles.ts";
import { resyncPhones, transactionSender, type ResyncResult } from "./resync.ts";
import { ProvisioningServer, baseUrl, type ProvisioningOutcome } from "./server.ts";
import { advertisedHost, isWildcard } from "../agent/sip/advertise.ts";
import { StoreDirectory } from "./store-directory.ts";

// Where the profiles are and the shared copy for commands without the agent (moved next to them).
export { DEFAULT_PROFILES_DIR, defaultProfiles } from "./profiles.ts";

/** What console commands can ask a running agent's provisioning feature. */
export interface ProvisioningHooks {
  profiles: ReadonlyMap<string, Profile>;
  resync(deviceIds: readonly string[], reboot: boolean): Promise<ResyncResult[]>;
  firmwareReport(): FirmwareReportRow[];
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
  /** Where a claim conflict ('provisioning.conflict') and every answered request ('provisioning.request': metrics, audit log) are published. */
  bus?: EventBus;
  /** A phone's SIP password changed under the agent (claim conflict): drop its registrations, reload. */
  credentialsRotated?: (deviceId: string) => void;
}

/**
 * The base URL a phone is given for a server bound to `bound`: that address, or on a wildcard
 * the interface the phone asked on (PnP's pnpInterface) when concrete, else the advertised
 * address (sipAdvertise, else a real interface). Never 0.0.0.0 or ::, which no phone can fetch from.
 */
export function phoneBaseUrl(scheme: "http" | "https", bound: string, port: number, advertise: string, askedOn = "", interfaces?: ReturnType<typeof os.networkInterfaces>): string {
  const host = !isWildcard(bound) ? bound : advertisedHost(askedOn !== "" && !isWildcard(askedOn) ? askedOn : bound, advertise, interfaces);
  return baseUrl(scheme, host, port);
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
    const deviceCas = this.deviceCas();
    if (deviceCas.size > 0 && !https) throw new Error("provisioningDeviceCertVendors needs httpsListen (device certificates are presented over HTTPS)");
    const sip = this.deps.sip;
    this.server = new ProvisioningServer({
      profiles: this.profiles,
      directory: this.directory,
      firmware: this.firmware,
      // voicemailCode is read at each request: a SIGHUP that changes it reaches the next config fetch.
      site: () => ({ ...(sip.host !== undefined ? { sipHost: sip.host } : {}), sipPort: sip.port, transport: sip.transport, ntpServer: "pool.ntp.org", timeZone: "UTC", resyncIntervalMin: 1440, voicemailCode: s.voicemailCode }),
      log: this.deps.log,
      bootstrapWindowMs: s.provisioningBootstrapWindowS * 1000,
      ...(deviceCas.size > 0 ? { deviceCas } : {}),
      onConflict: (c) => {
        this.deps.credentialsRotated?.(c.deviceId);
        this.deps.bus?.emit("provisioning.conflict", { deviceId: c.deviceId, mac: c.mac, claimedIp: c.claimedIp, ip: c.ip, stage: c.stage, at: Date.parse(c.at) });
      },
      http: { host: http.host, port: http.port },
      ...(this.deps.bus ? { onRequest: (e: ProvisioningOutcome) => this.deps.bus!.emit("provisioning.request", { ...e, at: Date.now() }) } : {}),
      ...(https ? { https } : {}),
    });
    await this.server.start();
    if (s.pnpEnabled) {
      if (s.pnpInterface === "") {
        this.deps.log.error("pnpEnabled needs pnpInterface (the IPv4 address of the phones' interface); PnP stays off");
      } else {
        const pnp = new PnpResponder({ interfaceAddress: s.pnpInterface, port: s.pnpPort, log: this.deps.log.child("pnp"), t1Ms: s.sipT1Ms, urlFor: (sub) => {
          // The phone is listed for adoption with the model it announced (canonical when known).
          const seen = pnpSeenNote(this.profiles, sub);
          if (seen) this.directory.noteSeen(seen);
          return this.pnpUrl(sub);
        } });
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
   * The URL PnP hands a phone: the server's base URL on the PnP interface, nothing more. Anyone
   * can send a SUBSCRIBE naming a MAC, so the answer carries no credential (no token URL); the
   * phone then fetches its files there and gets its credentials only in the bootstrap, bound to
   * the window and to the first client that takes it.
   */
  pnpUrl(_sub: PnpSubscription): string | undefined {
    const http = this.server?.addresses().find((a) => a.scheme === "http");
    if (!http) return undefined;
    return `${phoneBaseUrl("http", http.address, http.port, this.deps.settings.sipAdvertise, this.deps.settings.pnpInterface)}/`;
  }

  /** Each vendor that must present a device certificate → its CAs (settings checked against the profiles). */
  private deviceCas(): Map<string, X509Certificate[]> {
    const s = this.deps.settings;
    if (s.provisioningDeviceCertVendors.length === 0) return new Map();
    for (const v of s.provisioningDeviceCertVendors) {
      const p = this.profiles.get(v);
      if (!p) throw new Error(`provisioningDeviceCertVendors: no device profile '${v}' (known: ${[...this.profiles.keys()].join(", ")})`);
      if (!p.deviceCertificate) throw new Error(`provisioningDeviceCertVendors: ${p.displayName} phones present no factory device certificate (vendors that do: ${[...this.profiles.values()].filter((x) => x.deviceCertificate).map((x) => x.vendor).join(", ")})`);
    }
    if (s.provisioningDeviceCaDir === "") throw new Error("provisioningDeviceCertVendors needs provisioningDeviceCaDir (the vendors' CA certificates)");
    return loadDeviceCas(s.provisioningDeviceCaDir, s.provisioningDeviceCertVendors);
  }

  hooks(): ProvisioningHooks {
    return {
      profiles: this.profiles,
      resync: (ids, reboot) => this.resync(ids, reboot),
      firmwareReport: () => firmwareReport(this.directory.phones(), this.deps.store.listSeenPhones(), this.profiles, this.firmware, findModel),
      urls: () => (this.server?.addresses() ?? []).map((a) => `${phoneBaseUrl(a.scheme, a.address, a.port, this.deps.settings.sipAdvertise)}/`),
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
