// Device presence: a device is online while it has a live registration and answers OPTIONS
// keep-alives; after `misses` unanswered rounds it is offline until it answers again or
// re-registers. One feature, one class with start()/stop(), talking through the event bus.
import type { EventBus, PresenceReason } from "../bus.ts";
import type { Binding, BindingChange, LocationService } from "../sip/location.ts";
import type { Logger } from "../log.ts";

export interface PresenceOptions {
  intervalMs: number;
  misses: number;
  bus: EventBus;
  location: LocationService;
  /** Send one OPTIONS to the binding; resolves true on any response (even 4xx: it is alive). */
  probe: (binding: Binding) => Promise<boolean>;
  username: (deviceId: string) => string | undefined;
  log: Logger;
  now?: () => number;
  /** Spread probes over the interval instead of sending them all at once. */
  jitter?: boolean;
}

export interface DevicePresence {
  deviceId: string;
  online: boolean;
  registered: boolean;
  /** Consecutive keep-alive rounds with no answer from any binding. */
  misses: number;
  /** Last registration or keep-alive answer, epoch ms. */
  lastSeen: number | undefined;
  since: number;
  reason: PresenceReason;
}

export class PresenceTracker {
  /** Presence state keyed by device id (only devices that ever registered). */
  private readonly devices = new Map<string, DevicePresence>();
  private timer: NodeJS.Timeout | undefined;
  private readonly now: () => number;
  private running = false;

  constructor(private readonly o: PresenceOptions) {
    this.now = o.now ?? Date.now;
  }

  /** Feed binding changes from the location service (wired by the agent). */
  onBindings(change: BindingChange): void {
    const now = this.now();
    const has = change.bindings.length > 0;
    const cur = this.devices.get(change.deviceId);
    if (has) {
      const reason: PresenceReason = change.reason === "restored" ? "restored" : "registered";
      if (!cur) {
        // Restored bindings are believed until the first keep-alive round says otherwise.
        this.devices.set(change.deviceId, { deviceId: change.deviceId, online: true, registered: true, misses: 0, lastSeen: now, since: now, reason });
        this.publish(change.deviceId, true, reason);
      } else {
        cur.registered = true;
        cur.misses = 0;
        cur.lastSeen = now;
        if (!cur.online) this.setOnline(cur, true, reason);
      }
      return;
    }
    if (!cur) return;
    cur.registered = false;
    cur.misses = 0;
    const reason: PresenceReason = change.reason === "expired" ? "expired" : "unregistered";
    if (cur.online) this.setOnline(cur, false, reason);
    if (change.reason === "removed") this.devices.delete(change.deviceId);
  }

  isOnline(deviceId: string): boolean {
    return this.devices.get(deviceId)?.online === true;
  }

  snapshot(): DevicePresence[] {
    return [...this.devices.values()].map((d) => ({ ...d }));
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.schedule();
  }

  stop(): void {
    this.running = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private schedule(): void {
    if (!this.running) return;
    this.timer = setTimeout(() => {
      void this.round().finally(() => this.schedule());
    }, this.o.intervalMs);
    this.timer.unref();
  }

  /** One keep-alive round: probe every binding of every registered device. */
  async round(): Promise<void> {
    const byDevice = new Map<string, Binding[]>();
    for (const b of this.o.location.all()) {
      const list = byDevice.get(b.deviceId) ?? [];
      list.push(b);
      byDevice.set(b.deviceId, list);
    }
    const spread = this.o.jitter === false ? 0 : Math.min(this.o.intervalMs / 2, 5000);
    await Promise.all(
      [...byDevice].map(async ([deviceId, bindings]) => {
        if (spread > 0) await new Promise((r) => setTimeout(r, Math.random() * spread).unref());
        // A phone that has gone away would hold the round for the whole of Timer F (32 s):
        // an unanswered probe counts as a miss once the interval is over.
        const answers = await Promise.all(bindings.map((b) => withTimeout(this.o.probe(b).catch(() => false), this.o.intervalMs)));
        this.noteRound(deviceId, answers.some(Boolean));
      }),
    );
  }

  /** Apply one round's outcome for a device (public for tests of the rule itself). */
  noteRound(deviceId: string, answered: boolean): void {
    const cur = this.devices.get(deviceId);
    if (!cur || !cur.registered) return;
    if (answered) {
      cur.misses = 0;
      cur.lastSeen = this.now();
      if (!cur.online) this.setOnline(cur, true, "keepalive-ok");
      return;
    }
    cur.misses++;
    if (cur.online && cur.misses >= this.o.misses) this.setOnline(cur, false, "keepalive-timeout");
  }

  private setOnline(cur: DevicePresence, online: boolean, reason: PresenceReason): void {
    cur.online = online;
    cur.since = this.now();
    cur.reason = reason;
    this.publish(cur.deviceId, online, reason);
  }

  private publish(deviceId: string, online: boolean, reason: PresenceReason): void {
    const username = this.o.username(deviceId) ?? deviceId;
    this.o.log.info(online ? "device online" : "device offline", { device: username, reason });
    this.o.bus.emit("device.presence", { deviceId, username, online, reason, at: this.now() });
  }
}

/** The probe's answer, or false once `ms` have passed without one. */
function withTimeout(p: Promise<boolean>, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(false), ms);
    void p.then((v) => {
      clearTimeout(t);
      resolve(v);
    });
  });
}
