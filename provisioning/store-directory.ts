// The agent's Store seen through the provisioning PhoneDirectory interface.
import type { Store } from "../agent/store/store.ts";
import type { DeviceRecord } from "../agent/store/schema.ts";
import { colleagueKeys } from "./linekeys.ts";
import { withTrust, type PhoneDirectory, type PhoneRecord, type SeenPhoneNote, type SiteProvisioning, type TrustState } from "./directory.ts";

export function phoneRecord(d: Readonly<DeviceRecord>, site?: Store["site"]): PhoneRecord | undefined {
  if (d.mac === undefined) return undefined;
  const p: PhoneRecord = {
    deviceId: d.id,
    mac: d.mac,
    extension: d.username,
    displayName: d.displayName ?? d.username,
    sipUsername: d.username,
    sipPassword: d.password,
    createdAt: d.createdAt,
  };
  if (d.model !== undefined) p.model = d.model;
  if (d.provisioning !== undefined) p.provisioning = { ...d.provisioning };
  if (d.owner !== undefined) p.owner = d.owner;
  if (d.origin !== undefined) p.origin = d.origin;
  const keys = colleagueKeys(d.owner, site);
  if (keys.length > 0) p.lineKeys = keys;
  return p;
}

export class StoreDirectory implements PhoneDirectory {
  constructor(private readonly store: Store, private readonly onError: (message: string) => void = () => undefined) {}

  phoneByMac(mac: string): PhoneRecord | undefined {
    let d = this.store.findDeviceByMac(mac);
    if (d && d.provisioning === undefined) {
      // A phone stored before provisioning credentials existed gets them on first contact.
      const r = this.store.ensureProvisioningCredentials(d.id);
      if (!r.ok) this.onError(r.error.message);
      d = this.store.getDevice(d.id);
    }
    return d ? phoneRecord(d, this.store.site) : undefined;
  }

  phoneByToken(token: string): PhoneRecord | undefined {
    // Linear: tokens are only looked up on the /p/<token>/ path, and a site has hundreds of phones.
    for (const d of this.store.listDevices()) if (d.provisioning?.token === token) return phoneRecord(d, this.store.site);
    return undefined;
  }

  noteSeen(p: SeenPhoneNote): void {
    const r = this.store.noteSeenPhone(p);
    if (!r.ok) this.onError(`seen phone not recorded: ${r.error.message}`);
  }

  setTrust(deviceId: string, trust: TrustState): void {
    const d = this.store.getDevice(deviceId);
    if (!d?.provisioning) return;
    const r = this.store.updateDevice(deviceId, { provisioning: withTrust(d.provisioning, trust) });
    if (!r.ok) this.onError(`bootstrap state not recorded: ${r.error.message}`);
  }

  rotateCredentials(deviceId: string, trust: TrustState): PhoneRecord | undefined {
    const r = this.store.rotateCredentials(deviceId, trust);
    if (!r.ok) {
      this.onError(`credentials not rotated: ${r.error.message}`);
      return undefined;
    }
    // Written now, not after the write-behind delay: the old credentials must not come back.
    this.store.flush().catch((e: Error) => this.onError(`rotated credentials not saved: ${e.message}`));
    return phoneRecord(r.value, this.store.site);
  }

  siteProvisioning(): SiteProvisioning {
    const settings = this.store.site?.settings;
    if (!settings) return {};
    return { ...settings.provisioning, ...(settings.pickupCode ? { pickupCode: settings.pickupCode } : {}) };
  }

  phones(): PhoneRecord[] {
    return this.store.listDevices().flatMap((d) => phoneRecord(d) ?? []);
  }
}
