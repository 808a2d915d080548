// What the provisioning server, the PnP responder and the installer commands need from the
// agent's store, as a small interface: the mechanisms stay testable without a store file, and
// provisioning/store-directory.ts adapts the real Store to it.

import { randomBytes } from "node:crypto";
import type { ProvisioningCredentials } from "../agent/store/schema.ts";
import type { LineKeyInput } from "./render.ts";

/** A phone an installer added (or the console pushed): a device with a MAC. */
export interface PhoneRecord {
  deviceId: string;
  /** 12 lower-case hex digits. */
  mac: string;
  /** Device-profile model id, when the installer named one. */
  model?: string;
  /** The SIP account: username = extension. */
  extension: string;
  displayName: string;
  sipUsername: string;
  sipPassword: string;
  /** Per-device provisioning credentials (HTTP Digest user/password, URL token) and first-boot trust state. */
  provisioning?: ProvisioningCredentials;
  /** ISO time the device was added: opens its bootstrap window (unless provisioning.bootstrapOpenedAt). */
  createdAt: string;
  owner?: string;
  origin?: "site" | "local";
  /** BLF keys for the colleagues the owner shares groups with (provisioning/linekeys.ts). */
  lineKeys?: LineKeyInput[];
}

/** One phone that fetched from us, keyed by MAC: the store's own record (StoreData.seenPhones). */
export type { SeenPhone } from "../agent/store/schema.ts";
import type { SeenPhone } from "../agent/store/schema.ts";

export type SeenPhoneNote = Pick<SeenPhone, "mac" | "ip"> & Partial<Pick<SeenPhone, "vendor" | "model" | "firmware" | "userAgent">>;

/** Per-site settings the phones' files carry (the console's site record: settings.provisioning, and settings.pickupCode). */
export interface SiteProvisioning {
  ntpServer?: string;
  timeZone?: string;
  resyncIntervalMin?: number;
  /** The site's call pickup code (settings.pickupCode): what a phone dials before the extension of a ringing BLF key. */
  pickupCode?: string;
}

export interface PhoneDirectory {
  phoneByMac(mac: string): PhoneRecord | undefined;
  /** The phone whose provisioning token this is (tokens are 128-bit random, unique). */
  phoneByToken(token: string): PhoneRecord | undefined;
  /** Record a request from a phone (adopted or not): MAC, model, firmware, IP, times. */
  noteSeen(p: SeenPhoneNote): void;
  siteProvisioning(): SiteProvisioning;
  /** Record a phone's first-boot trust state (replacing the old one whole), across restarts. */
  setTrust(deviceId: string, trust: TrustState): void;
  /** New SIP password and provisioning credentials for the phone, with this trust state; the phone after. */
  rotateCredentials(deviceId: string, trust: TrustState): PhoneRecord | undefined;
}

/** The first-boot trust fields of a phone's provisioning record (server.ts BootstrapGate). */
export type TrustState = Pick<ProvisioningCredentials, "bootstrapOpenedAt" | "bootstrapClosedAt" | "claimedBy" | "conflict">;

/** The provisioning record with `trust` in place of its old trust fields (absent ones dropped). */
export function withTrust(p: ProvisioningCredentials, trust: TrustState): ProvisioningCredentials {
  const out: ProvisioningCredentials = { user: p.user, password: p.password, token: p.token };
  for (const k of ["bootstrapOpenedAt", "bootstrapClosedAt", "claimedBy", "conflict"] as const) if (trust[k] !== undefined) (out as unknown as Record<string, unknown>)[k] = trust[k];
  return out;
}

/** An in-memory directory: unit tests and the benchmark. */
export class MemoryDirectory implements PhoneDirectory {
  readonly phones = new Map<string, PhoneRecord>();
  readonly seen = new Map<string, SeenPhone>();
  site: SiteProvisioning = {};
  constructor(private readonly now: () => number = Date.now) {}

  add(p: PhoneRecord): void {
    this.phones.set(p.mac, p);
  }
  phoneByMac(mac: string): PhoneRecord | undefined {
    return this.phones.get(mac);
  }
  phoneByToken(token: string): PhoneRecord | undefined {
    for (const p of this.phones.values()) if (p.provisioning?.token === token) return p;
    return undefined;
  }
  noteSeen(p: SeenPhoneNote): void {
    const at = new Date(this.now()).toISOString();
    const old = this.seen.get(p.mac);
    this.seen.set(p.mac, { ...old, ...p, firstSeen: old?.firstSeen ?? at, lastSeen: at, requests: (old?.requests ?? 0) + 1 });
  }
  siteProvisioning(): SiteProvisioning {
    return this.site;
  }
  private byId(deviceId: string): PhoneRecord | undefined {
    for (const p of this.phones.values()) if (p.deviceId === deviceId) return p;
    return undefined;
  }
  setTrust(deviceId: string, trust: TrustState): void {
    const p = this.byId(deviceId);
    if (p?.provisioning) p.provisioning = withTrust(p.provisioning, trust);
  }
  rotateCredentials(deviceId: string, trust: TrustState): PhoneRecord | undefined {
    const p = this.byId(deviceId);
    if (!p) return undefined;
    p.sipPassword = randomBytes(18).toString("base64url");
    p.provisioning = withTrust({ user: `p${randomBytes(6).toString("hex")}`, password: randomBytes(18).toString("base64url"), token: randomBytes(16).toString("hex") }, trust);
    return p;
  }
}
