// Location service (RFC 3261 §10, Kamailio's usrloc): the bindings of each address-of-record
// to the contacts and flows its device registered from. In memory for the hot path; the
// store persists it write-behind so bindings survive a restart.
import type { Flow } from "./types.ts";

export interface Binding {
  deviceId: string;
  /** Address-of-record key: the device's SIP username. */
  aor: string;
  /** Contact URI exactly as registered, URI parameters included (RFC 4475 cparam02, regescrt). */
  contact: string;
  expiresAt: number;
  callId: string;
  cseq: number;
  q: number | undefined;
  /** Where the REGISTER came from: requests to the phone go here (NAT, RFC 3581 / RFC 5626). */
  flow: Flow;
  userAgent: string | undefined;
  instance: string | undefined;
}

export type BindingChange = { aor: string; deviceId: string; bindings: readonly Binding[]; reason: "register" | "expired" | "removed" | "restored" };

export class LocationService {
  /** Bindings keyed by AOR (device username), each list in registration order. */
  private readonly byAor = new Map<string, Binding[]>();
  private sweepTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly onChange: (change: BindingChange) => void,
    private readonly now: () => number = Date.now,
  ) {}

  lookup(aor: string): readonly Binding[] {
    const list = this.byAor.get(aor);
    if (!list) return [];
    const t = this.now();
    return list.filter((b) => b.expiresAt > t);
  }

  /** Replace the AOR's whole binding set after a REGISTER was accepted. */
  replace(aor: string, deviceId: string, bindings: Binding[], reason: BindingChange["reason"] = "register"): void {
    if (bindings.length === 0) this.byAor.delete(aor);
    else this.byAor.set(aor, bindings);
    this.onChange({ aor, deviceId, bindings, reason });
  }

  /** Drop every binding of a device (device removed by the installer). */
  removeDevice(deviceId: string): void {
    for (const [aor, list] of this.byAor) {
      if (list.some((b) => b.deviceId === deviceId)) this.replace(aor, deviceId, [], "removed");
    }
  }

  all(): Binding[] {
    return [...this.byAor.values()].flat();
  }

  count(): number {
    let n = 0;
    for (const list of this.byAor.values()) n += list.length;
    return n;
  }

  /** Load persisted bindings at start; already expired ones are skipped. */
  restore(bindings: readonly Binding[]): void {
    const t = this.now();
    const grouped = new Map<string, Binding[]>();
    for (const b of bindings) {
      if (b.expiresAt <= t) continue;
      const list = grouped.get(b.aor) ?? [];
      list.push(b);
      grouped.set(b.aor, list);
    }
    for (const [aor, list] of grouped) this.replace(aor, list[0]!.deviceId, list, "restored");
  }

  /** Remove expired bindings once a second: one timer for all, not one per binding. */
  startSweeping(intervalMs = 1000): void {
    this.stopSweeping();
    this.sweepTimer = setInterval(() => this.sweep(), intervalMs);
    this.sweepTimer.unref();
  }

  stopSweeping(): void {
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.sweepTimer = undefined;
  }

  sweep(): void {
    const t = this.now();
    for (const [aor, list] of this.byAor) {
      const live = list.filter((b) => b.expiresAt > t);
      if (live.length !== list.length) this.replace(aor, list[0]!.deviceId, live, "expired");
    }
  }
}
