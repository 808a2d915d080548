// What the provisioning server, the PnP responder and the installer commands need from the
// agent's store, as a small interface: the mechanisms stay testable without a store file, and
// provisioning/store-directory.ts adapts the real Store to it.

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
  /** Per-device provisioning credentials (HTTP Digest user/password, URL token). */
  provisioning?: { user: string; password: string; token: string; bootstrapClosedAt?: string };
  /** ISO time the device was added: opens its bootstrap window. */
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

/** Per-site provisioning settings (the console's site record, settings.provisioning). */
export interface SiteProvisioning {
  ntpServer?: string;
  timeZone?: string;
  resyncIntervalMin?: number;
}

export interface PhoneDirectory {
  phoneByMac(mac: string): PhoneRecord | undefined;
  /** The phone whose provisioning token this is (tokens are 128-bit random, unique). */
  phoneByToken(token: string): PhoneRecord | undefined;
  /** Record a request from a phone (adopted or not): MAC, model, firmware, IP, times. */
  noteSeen(p: SeenPhoneNote): void;
  siteProvisioning(): SiteProvisioning;
  /** Remember that a phone's bootstrap is used up (at: ISO time), or open it again (undefined), across restarts. */
  setBootstrapClosed?(deviceId: string, at: string | undefined): void;
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
}
