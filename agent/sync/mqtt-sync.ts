// Central console sync over MQTT 5: one feature with start()/stop(), listening on the agent's
// bus (Zigbee2MQTT's extension shape). The contract is docs/mqtt.md and $defs in
// contract/ringedge.schema.json; every payload is validated in both directions.
//
// Flows (shadow model, docs/mqtt.md):
//   desired (retained) → validate → version > applied ? SiteService.apply (persisted with fsync
//   before it returns) → ack applied + reported (retained) : ack unchanged + reported.
//   A bad message gets a rejected ack listing every error and changes nothing.
//   Events (presence, calls) → persistent outbox (fsync'd) → events topic, in seq order, removed
//   on PUBACK. Presence snapshot retained; statistics every statsIntervalS; status birth on every
//   connect, last will offline, offline published before a clean end().
//   Commands cmd/<name> with MQTT 5 responseTopic + correlationData → reply/<consoleId>.
import { randomBytes, createHash } from "node:crypto";
import * as fs from "node:fs";
// Types only: the mqtt package costs ~23 MB of RSS when loaded, so it is imported on the
// first connect — an agent without a console never loads it.
import type { IClientOptions, IClientPublishOptions, IPublishPacket, MqttClient } from "mqtt";
import type { EventBus } from "../bus.ts";
import { validatePayload, type PayloadResult } from "../contract.ts";
import type { Logger } from "../log.ts";
import { noteSiteConfigValid, snapshotHash, versionStanding } from "../site/site.ts";
import { canonicalJson } from "../store/atomic-file.ts";
import { Outbox, type OutboxEvent } from "./outbox.ts";
import { CallStatistics } from "./stats.ts";
import { agentSubscriptions, isOwnReplyTopic, parseTopic, siteTopic, type CommandName } from "./topics.ts";

export const DESIRED_SCHEMA = "ringedge.desired/1";

/** One problem with a console message (contract $defs/syncError). */
export interface SyncError {
  code: string;
  path: string;
  message: string;
}

export type AckStatus = "applied" | "rejected" | "unchanged";

export interface AckPayload {
  version: number | null;
  status: AckStatus;
  errors: SyncError[];
  appliedVersion?: number;
  at?: number;
}

export interface ReportedPayload {
  appliedVersion: number;
  appliedHash: string | null;
  bootId: string;
  /** Largest desired payload read (maxPayloadBytes): consoles refuse to send a larger push. */
  maxDesiredBytes?: number;
  lastResult?: { version: number | null; status: AckStatus; at?: number };
}

export interface StatusPayload {
  online: boolean;
  bootId: string;
  connSeq: number;
  at?: number;
  reason?: string;
}

/** The result SiteService.apply returns (agent/site/site.ts). */
export type ApplyOutcome = { ok: true; version: number; changed: boolean } | { ok: false; errors: SyncError[] };

/**
 * What sync needs of the site service: apply a snapshot atomically (persisted before it
 * resolves) and tell what is applied now. SiteService satisfies it.
 */
export interface SiteApplier {
  apply(input: unknown, source: "console"): Promise<ApplyOutcome> | ApplyOutcome;
  /** The applied snapshot's version and hash (sha256 hex of its canonical JSON), if any. */
  applied(): { version: number; hash: string } | undefined;
}

/** Adapts the site service (agent/site/site.ts), whose current().record holds the applied snapshot. */
export function siteApplier(site: {
  apply(input: unknown, source: "console"): Promise<ApplyOutcome>;
  current(): { record: { version: number; hash: string } | null };
}): SiteApplier {
  return {
    apply: (input, source) => site.apply(input, source),
    applied: () => {
      const r = site.current().record;
      return r ? { version: r.version, hash: r.hash } : undefined;
    },
  };
}

export interface PresenceEntry {
  deviceId: string;
  online: boolean;
  registered: boolean;
  lastSeen?: number | undefined;
}

/** Handler of cmd/resync (provided by provisioning); its result goes into the reply. */
export type ResyncHandler = (args: Record<string, unknown>) => Promise<unknown> | unknown;

export interface MqttSyncOptions {
  siteId: string;
  url: string;
  dataDir: string;
  clientId?: string;
  username?: string;
  password?: string;
  /** PEM contents (already read from the files named in the settings). */
  ca?: string | Buffer;
  cert?: string | Buffer;
  key?: string | Buffer;
  statsIntervalS: number;
  outboxMax: number;
  bus: EventBus;
  site: SiteApplier;
  status: () => unknown;
  presence: () => PresenceEntry[];
  /** Operators' own state now, carried in the retained presence snapshot (absent: not carried). */
  operators?: () => Array<{ userId: string; availability: string; loggedOutOf: readonly string[] }>;
  /** Calls waiting now per group (routing engine), for the statistics' queue lengths. */
  queueLengths?: () => ReadonlyMap<string, number>;
  log: Logger;
  bootId?: string;
  timers?: Partial<SyncTimers>;
  /** Largest desired/command payload handled, bytes; larger ones are rejected unread. */
  maxPayloadBytes?: number;
  now?: () => number;
}

export interface SyncTimers {
  /** A QoS 1 publish not acknowledged within this is given up. */
  publishTimeoutMs: number;
  /** Reconnect back-off: base, doubled per failed attempt up to max, then jittered. */
  reconnectMinMs: number;
  reconnectMaxMs: number;
  connectTimeoutMs: number;
  keepaliveS: number;
  /** Presence snapshots are coalesced: at most one per this many ms. */
  presenceDebounceMs: number;
  /**
   * Events published and not yet acknowledged at once (order is kept: one topic, one
   * connection); lowered on each connect to the broker's Receive Maximum less CONTROL_SLOTS.
   */
  eventWindow: number;
  /** Outbox fsync batching. */
  outboxBatchMs: number;
  /** On a console's birth, republish after a random delay up to this (10,000 sites must not answer at once). */
  consoleBirthJitterMs: number;
}

const DEFAULT_TIMERS: SyncTimers = {
  publishTimeoutMs: 10_000,
  // 1 s doubling to 60 s, with ±50 % jitter: 10,000 sites losing one broker must not come back
  // in lock-step (reconnect storms are the real scaling risk).
  reconnectMinMs: 1_000,
  reconnectMaxMs: 60_000,
  connectTimeoutMs: 10_000,
  keepaliveS: 30,
  presenceDebounceMs: 250,
  eventWindow: 64,
  outboxBatchMs: 2,
  consoleBirthJitterMs: 30_000,
};

/**
 * QoS 1 slots of the broker's Receive Maximum (MQTT 5 §3.2.2.3.3, §4.9) left to status,
 * reported, presence, acks and replies: events take at most receiveMaximum − CONTROL_SLOTS.
 */
export const CONTROL_SLOTS = 4;

/** The events window on a connection: the configured one, within what the broker can receive. */
export function eventWindowFor(configured: number, receiveMaximum: number | undefined): number {
  // Absent, Receive Maximum is 65,535 (MQTT 5 §3.2.2.3.3).
  const rm = receiveMaximum ?? 65_535;
  return Math.max(1, Math.min(configured, rm - CONTROL_SLOTS));
}

/** 1 MB: budget for a full site snapshot with room to spare (a 500-user site is ~150 KB). */
export const DEFAULT_MAX_PAYLOAD_BYTES = 1 << 20;

export interface SyncStatus {
  connected: boolean;
  connSeq: number;
  bootId: string;
  appliedVersion: number;
  /** Events in flight allowed on this connection (eventWindowFor). */
  eventWindow: number;
  /** The broker's Receive Maximum on this connection, and the most QoS 1 publishes ever in flight at once. */
  receiveMaximum: number;
  peakInFlight: number;
  outbox: ReturnType<Outbox["stats"]>;
  rejectedMessages: number;
  invalidOutgoing: number;
}

/** sha256 of the canonical JSON of a value, in the contract's "sha256:<hex>" form. */
export function configHash(config: unknown): string {
  if (typeof config === "object" && config !== null) return "sha256:" + snapshotHash(config);
  return "sha256:" + createHash("sha256").update(canonicalJson(config)).digest("hex");
}

/** Jittered exponential back-off: attempt 0 → about min; each failure doubles, capped at max; ×[0.5, 1.5). */
export function backoffMs(attempt: number, minMs: number, maxMs: number, random: () => number = Math.random): number {
  const base = Math.min(maxMs, minMs * 2 ** Math.min(attempt, 30));
  return Math.max(1, Math.round(base * (0.5 + random())));
}

/**
 * Reads a desired message as far as it can and says what to do. Pure: the caller applies.
 * `kind: "apply"` carries the config; "unchanged" when the version is older, or the applied
 * version with the applied content; "reject" with every error found — the applied version with
 * other content is a `version-conflict` (an "unchanged" would tell a console waiting for its
 * version that it is done while the site runs something else). Never throws.
 */
export function judgeDesired(
  payload: Buffer,
  ctx: { siteId: string; appliedVersion: number; appliedHash: string | null; maxBytes: number },
  validate: (def: string, v: unknown) => PayloadResult = validatePayload,
): { kind: "apply"; version: number; hash: string; config: Record<string, unknown> } | { kind: "unchanged"; version: number } | { kind: "reject"; version: number | null; errors: SyncError[] } {
  if (payload.length > ctx.maxBytes) {
    return { kind: "reject", version: null, errors: [{ code: "too-large", path: "$", message: `payload of ${payload.length} bytes exceeds the limit of ${ctx.maxBytes}` }] };
  }
  let value: unknown;
  try {
    value = JSON.parse(payload.toString("utf8"));
  } catch (err) {
    return { kind: "reject", version: null, errors: [{ code: "bad-json", path: "$", message: `not valid JSON: ${(err as Error).message}` }] };
  }
  const obj = typeof value === "object" && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
  const claimed = obj && Number.isSafeInteger(obj.version) && (obj.version as number) >= 0 ? (obj.version as number) : null;
  const errors: SyncError[] = [];
  // Another site's id is refused first and on its own: nothing else of it matters here.
  if (obj && typeof obj.siteId === "string" && obj.siteId !== ctx.siteId) {
    return { kind: "reject", version: claimed, errors: [{ code: "site-mismatch", path: "siteId", message: `for site "${obj.siteId.slice(0, 64)}", this is "${ctx.siteId}"` }] };
  }
  const schema = validate("desired", value);
  if (!schema.ok) errors.push(...schema.errors);
  if (errors.length > 0 || !obj) return { kind: "reject", version: claimed, errors };
  const version = obj.version as number;
  const config = obj.config as Record<string, unknown>;
  // `desired` holds `config` as $defs/siteConfig: the site check need not validate it again.
  if (validate === validatePayload) noteSiteConfigValid(config);
  if (config.version !== version) errors.push({ code: "version-mismatch", path: "config.version", message: `config.version ${String(config.version)} differs from version ${version}` });
  const hash = configHash(config);
  if (typeof obj.hash === "string" && obj.hash !== hash) errors.push({ code: "hash-mismatch", path: "hash", message: `config hashes to ${hash}` });
  if (errors.length > 0) return { kind: "reject", version, errors };
  const standing = versionStanding(ctx.appliedVersion > 0 ? { version: ctx.appliedVersion, hash: ctx.appliedHash } : null, { version, hash });
  if (standing === "conflict") {
    return { kind: "reject", version, errors: [{ code: "version-conflict", path: "version", message: `version ${version} is already applied with content ${ctx.appliedHash ?? "of unknown hash"}; this push's content is ${hash}: raise "version" to apply it` }] };
  }
  if (standing !== "newer") return { kind: "unchanged", version };
  return { kind: "apply", version, hash, config };
}

export class MqttSync {
  readonly bootId: string;
  private readonly t: SyncTimers;
  private readonly maxPayload: number;
  private readonly now: () => number;
  private client: MqttClient | undefined;
  private outbox: Outbox | undefined;
  private stats: CallStatistics;
  /** Bus subscriptions to undo on stop. */
  private unsubscribe: Array<() => void> = [];
  private statsTimer: NodeJS.Timeout | undefined;
  /** A republish scheduled after a console birth (at most one pending). */
  private consoleBirthTimer: NodeJS.Timeout | undefined;
  private presenceTimer: NodeJS.Timeout | undefined;
  /** Connection attempts in this boot; carried by the birth and the will (Sparkplug bdSeq). */
  private connSeq = 0;
  /** Failed attempts since the last successful connect, for the back-off. */
  private failures = 0;
  /**
   * The link is up and 'connect' has been handled: events may be pumped. Cleared on 'close',
   * where every unacknowledged publish is failed back to its owner (dropLinkState).
   */
  private linkUp = false;
  /** Events allowed in flight on the current connection. */
  private eventWindow: number;
  /** The broker's Receive Maximum (CONNACK): QoS 1 publishes it takes unacknowledged at once. */
  private receiveMaximum = 65_535;
  /** QoS 1 publishes other than events waiting for their PUBACK (kept across a reconnect: MQTT.js resends them). */
  private controlInFlight = 0;
  /** Publishes other than events waiting for a slot under the Receive Maximum, in order. */
  private controlWaiters: Array<() => void> = [];
  /** Most QoS 1 publishes (events and others) in flight at once. */
  private peakInFlight = 0;
  /** Finishers of events waiting for a PUBACK on the current connection. */
  private eventsAwaiting = new Set<() => void>();
  /** Desired messages are handled one at a time, in arrival order. */
  private desiredChain: Promise<void> = Promise.resolve();
  private lastResult: ReportedPayload["lastResult"];
  private resync: ResyncHandler | undefined;
  private voicemailFetch: ((args: Record<string, unknown>) => unknown) | undefined;
  private rejectedMessages = 0;
  private invalidOutgoing = 0;
  private stopping = false;
  /** stop() was called: a connect still loading the mqtt module must not go ahead. */
  private stopRequested = false;

  constructor(private readonly opts: MqttSyncOptions) {
    this.bootId = opts.bootId ?? randomBytes(6).toString("base64url");
    this.t = { ...DEFAULT_TIMERS, ...opts.timers };
    this.eventWindow = this.t.eventWindow;
    this.maxPayload = opts.maxPayloadBytes ?? DEFAULT_MAX_PAYLOAD_BYTES;
    this.now = opts.now ?? Date.now;
    this.stats = new CallStatistics(this.now());
  }

  /** Installs the cmd/voicemail-fetch handler (voicemail/fetch.ts); without one it replies "not-available". */
  setVoicemailFetchHandler(handler: ((args: Record<string, unknown>) => unknown) | undefined): void {
    this.voicemailFetch = handler;
  }

  /** Installs the cmd/resync handler (provisioning); without one resync replies "not-available". */
  setResyncHandler(handler: ResyncHandler | undefined): void {
    this.resync = handler;
  }

  /** Opens the outbox (draining what a previous run left) and starts connecting; never waits for the broker. */
  start(): void {
    const o = this.opts;
    this.outbox = Outbox.open({
      dataDir: o.dataDir,
      bootId: this.bootId,
      max: o.outboxMax,
      batchMs: this.t.outboxBatchMs,
      onDurable: () => this.pump(),
      onError: (err) => o.log.error("outbox write failed; events kept in memory, retrying", { err: err.message }),
    });
    const left = this.outbox.stats().pending;
    if (left > 0) o.log.info("outbox has undelivered events from an earlier run", { events: left });
    this.listen();
    this.statsTimer = setInterval(() => this.publishStatistics(), o.statsIntervalS * 1000);
    this.statsTimer.unref();
    this.connect();
  }

  private listen(): void {
    const bus = this.opts.bus;
    this.unsubscribe.push(
      bus.on("device.presence", (e) => {
        this.event("presence", { deviceId: e.deviceId, username: e.username, online: e.online, reason: e.reason }, e.at);
        this.presenceChanged();
      }),
      // A site file applied locally changes what runs: the console must see it. (A console
      // push is answered by finishDesired, which publishes reported with the ack.)
      bus.on("site.applied", (e) => {
        if (e.source !== "console") void this.publishReported();
        // Operators may have come or gone with the snapshot.
        if (this.opts.operators !== undefined) this.presenceChanged();
      }),
      bus.on("call.offered", (e) => {
        this.stats.offered(e);
        this.event("call.offered", compact({ callId: e.callId, groupId: e.groupId, memberId: e.memberId, deviceIds: e.deviceIds, caller: e.caller }), e.at);
      }),
      bus.on("call.answered", (e) => {
        this.stats.answered(e);
        this.event("call.answered", compact({ callId: e.callId, groupId: e.groupId, memberId: e.memberId, deviceId: e.deviceId, caller: e.caller, answerAfterMs: Math.max(0, Math.round(e.answerAfterMs)), why: e.why }), e.at);
      }),
      bus.on("call.missed", (e) => {
        this.stats.missed(e);
        this.event("call.missed", compact({ callId: e.callId, groupId: e.groupId, caller: e.caller, target: e.target, offered: e.offered, outcome: e.outcome, why: e.why }), e.at);
      }),
      bus.on("queue.joined", (e) => this.stats.queueJoined(e)),
      bus.on("queue.left", (e) => this.stats.queueLeft(e)),
      bus.on("call.busy", (e) => {
        this.stats.busy(e);
        this.event("call.busy", compact({ callId: e.callId, groupId: e.groupId, memberIds: e.memberIds, caller: e.caller }), e.at);
      }),
      bus.on("voicemail.message", (e) => {
        this.stats.voicemail(e);
        this.event("voicemail.message", { id: e.id, mailbox: `${e.mailbox.kind}/${e.mailbox.id}`, caller: e.caller, callId: e.callId, receivedAt: e.receivedAt, durationMs: e.durationMs, bytes: e.bytes, sha256: e.sha256 }, e.at);
      }),
      bus.on("callback.requested", (e) => void this.event("callback.requested", { id: e.id, groupId: e.groupId, number: e.number, place: e.place }, e.at)),
      bus.on("callback.connected", (e) => void this.event("callback.connected", { id: e.id, groupId: e.groupId, number: e.number, memberId: e.memberId, attempts: e.attempts }, e.at)),
      bus.on("callback.missed", (e) => void this.event("callback.missed", { id: e.id, groupId: e.groupId, number: e.number, attempts: e.attempts }, e.at)),
      bus.on("operator.state", (e) => {
        this.event("operator.state", compact({ userId: e.userId, availability: e.availability, loggedOutOf: e.loggedOutOf, source: e.source, deviceId: e.deviceId }), e.at);
        // The retained snapshot carries it too: a console that lost events (a gap) reads it there.
        if (this.opts.operators !== undefined) this.presenceChanged();
      }),
    );
  }

  /** Queues an event for the console: validated, then written to the outbox (published once fsync'd). */
  event(type: string, data: Record<string, unknown>, at = this.now()): OutboxEvent | undefined {
    if (!this.outbox) return undefined;
    const check = validatePayload("event", { bootId: this.bootId, seq: 1, type, at, data });
    if (!check.ok) {
      this.invalidOutgoing++;
      this.opts.log.error("outgoing event does not match the contract; not sent", { type, errors: check.errors });
      return undefined;
    }
    return this.outbox.append(type, data, at);
  }

  // --- connection --------------------------------------------------------------------------

  private statusPayload(online: boolean, reason?: string): StatusPayload {
    return { online, bootId: this.bootId, connSeq: this.connSeq, at: this.now(), ...(reason ? { reason } : {}) };
  }

  private connect(): void {
    const o = this.opts;
    this.connSeq++;
    const options: IClientOptions = {
      protocolVersion: 5,
      clientId: o.clientId || `ringedge-${o.siteId}`,
      clean: true,
      keepalive: this.t.keepaliveS,
      connectTimeout: this.t.connectTimeoutMs,
      reconnectPeriod: backoffMs(0, this.t.reconnectMinMs, this.t.reconnectMaxMs),
      // A refused CONNACK must not stop retries.
      reconnectOnConnackError: true,
      // Subscriptions are made explicitly on every connect (pitfall 9).
      resubscribe: false,
      queueQoSZero: false,
      properties: { sessionExpiryInterval: 0, maximumPacketSize: this.maxPayload * 4 },
      will: { topic: siteTopic(o.siteId, "status"), qos: 1, retain: true, payload: Buffer.from(JSON.stringify(this.statusPayload(false))) },
      ...(o.username ? { username: o.username } : {}),
      ...(o.password ? { password: o.password } : {}),
      ...(o.ca ? { ca: o.ca } : {}),
      ...(o.cert ? { cert: o.cert } : {}),
      ...(o.key ? { key: o.key } : {}),
    };
    void import("mqtt").then(({ connect }) => {
      if (this.stopRequested) return;
      const client = connect(o.url, options);
      this.client = client;
      this.wire(client);
    });
  }

  private wire(client: MqttClient): void {
    const o = this.opts;
    client.on("connect", (connack) => this.onConnect(connack.sessionPresent, connack.properties?.receiveMaximum));
    client.on("close", () => this.dropLinkState(client));
    client.on("message", (topic, payload, packet) => this.onMessage(topic, payload, packet));
    // MQTT.js has no back-off (pitfall 1): its retry timer reads reconnectPeriod when the link
    // drops ('offline' is emitted just before) and when an attempt fails ('close' after the
    // 'reconnect' that started it), so the period is re-drawn at both points.
    client.on("offline", () => {
      client.options.reconnectPeriod = backoffMs(this.failures, this.t.reconnectMinMs, this.t.reconnectMaxMs);
      this.onOffline();
    });
    client.on("reconnect", () => {
      // Each attempt carries a new connSeq, in its will too (the console ignores an older LWT).
      this.connSeq++;
      if (client.options.will) client.options.will.payload = Buffer.from(JSON.stringify(this.statusPayload(false)));
      client.options.reconnectPeriod = backoffMs(++this.failures, this.t.reconnectMinMs, this.t.reconnectMaxMs);
    });
    client.on("error", (err) => o.log.warn("mqtt error", { err: err.message }));
  }

  private onOffline(): void {
    this.opts.log.info("console broker unreachable; working on the last applied config", { retryInMs: this.client?.options.reconnectPeriod });
  }

  /**
   * The connection closed. MQTT.js replays every unacknowledged QoS 1 publish of its store on
   * the next connection before 'connect', and the outbox then pumped the same events again:
   * each event in flight went out twice on the new connection. The outbox owns the events'
   * retransmission, so their publishes are dropped from MQTT.js's store and failed back here
   * (the session was a Clean Start one and ended with the connection, MQTT 5 §3.1.2.4: nothing
   * obliges a resend). Other publishes (acks, replies, status) stay in MQTT.js's store: it sends
   * them once more after the reconnect, so an ack cut off by the crash still reaches the console.
   */
  private dropLinkState(client: MqttClient): void {
    this.linkUp = false;
    const events = siteTopic(this.opts.siteId, "events");
    for (const key of Object.keys(client.outgoing)) {
      const id = Number(key);
      const pending = client.outgoing[id];
      try {
        client.outgoingStore.get({ messageId: id }, (err, packet) => {
          if (err || packet?.cmd !== "publish" || packet.topic !== events) return;
          delete client.outgoing[id];
          client.outgoingStore.del({ messageId: id }, () => undefined);
          pending?.cb(new Error("connection closed before the PUBACK"));
        });
      } catch {
        // The store is already closed (end()): nothing will be resent from it.
      }
    }
    for (const fail of [...this.eventsAwaiting]) fail();
    this.eventsAwaiting.clear();
    this.outbox?.releaseAll();
  }

  private onConnect(sessionPresent: boolean, receiveMaximum: number | undefined): void {
    const client = this.client;
    if (!client || this.stopping) return;
    this.failures = 0;
    this.eventWindow = eventWindowFor(this.t.eventWindow, receiveMaximum);
    this.receiveMaximum = receiveMaximum ?? 65_535;
    this.linkUp = true;
    // Nagle's algorithm alone costs 40-90 ms per push → ack on loopback (docs/mqtt.md).
    const stream = client.stream as { setNoDelay?: (on: boolean) => void };
    stream.setNoDelay?.(true);
    this.opts.log.info("connected to the console broker", { connSeq: this.connSeq, sessionPresent });
    void this.publish("status", siteTopic(this.opts.siteId, "status"), this.statusPayload(true), { retain: true });
    client.subscribe(agentSubscriptions(this.opts.siteId), { qos: 1 }, (err, granted) => {
      if (err) this.opts.log.warn("subscribe failed", { err: err.message });
      else if (granted?.some((g) => g.qos >= 0x80)) this.opts.log.warn("broker refused a subscription (ACL?)", { granted: granted.map((g) => `${g.topic}:${g.qos}`) });
    });
    this.publishReported();
    this.publishPresence();
    // Whatever was in flight on the old connection went back to the outbox on 'close': deliver it again, in order.
    this.pump();
  }

  /** Publishes a validated payload with QoS 1 and a timeout; resolves true on PUBACK. Never throws. */
  private publish(def: string, topic: string, value: unknown, extra: IClientPublishOptions = {}): Promise<boolean> {
    const check = validatePayload(def, value);
    if (!check.ok) {
      this.invalidOutgoing++;
      this.opts.log.error("outgoing payload does not match the contract; not sent (a bug)", { def, topic, errors: check.errors });
      return Promise.resolve(false);
    }
    return this.publishRaw(topic, JSON.stringify(value), { qos: 1, ...extra });
  }

  private publishRaw(topic: string, payload: string | Buffer, opts: IClientPublishOptions): Promise<boolean> {
    const client = this.client;
    // Offline: skip rather than queue inside MQTT.js; status, reported and presence are all
    // published again on connect, and a lost ack is answered again when the retained desired
    // is redelivered (its version is then "unchanged").
    if (!client?.connected) return Promise.resolve(false);
    return new Promise((resolve) => {
      let done = false;
      let holding = false;
      const timer = setTimeout(() => finish(false, "timeout"), this.t.publishTimeoutMs);
      const finish = (ok: boolean, why?: string): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        const waiting = this.controlWaiters.indexOf(send);
        if (waiting >= 0) this.controlWaiters.splice(waiting, 1);
        if (holding) {
          this.controlInFlight--;
          this.pump();
        }
        if (!ok) this.opts.log.debug("publish not acknowledged", { topic, why });
        resolve(ok);
      };
      const send = (): void => {
        const now = this.client;
        if (done) return;
        if (!now?.connected) return finish(false, "offline");
        holding = true;
        this.controlInFlight++;
        this.notePeak();
        try {
          now.publish(topic, payload, opts, (err) => finish(!err, err?.message));
        } catch (err) {
          finish(false, (err as Error).message);
        }
      };
      // Within the broker's Receive Maximum (MQTT 5 §4.9), in order.
      if (this.controlWaiters.length === 0 && this.freeSlots() > 0) send();
      else this.controlWaiters.push(send);
    });
  }

  /** QoS 1 publishes the broker takes now without exceeding its Receive Maximum. */
  private freeSlots(): number {
    return this.receiveMaximum - this.controlInFlight - (this.outbox?.inFlightCount() ?? 0);
  }

  private notePeak(): void {
    this.peakInFlight = Math.max(this.peakInFlight, this.controlInFlight + (this.outbox?.inFlightCount() ?? 0));
  }

  /** Waiting publishes other than events go first when slots free up (acks must not wait behind a backlog of events). */
  private grantControl(): void {
    while (this.controlWaiters.length > 0 && this.freeSlots() > 0 && this.client?.connected) this.controlWaiters.shift()!();
  }

  // --- events ------------------------------------------------------------------------------

  /** Publishes durable outbox events in order while connected, keeping at most eventWindow in flight. */
  private pump(): void {
    this.grantControl();
    const box = this.outbox;
    if (!this.linkUp || !this.client?.connected || !box || this.stopping || this.controlWaiters.length > 0) return;
    const room = Math.min(this.eventWindow - box.inFlightCount(), this.freeSlots());
    if (room <= 0) return;
    const topic = siteTopic(this.opts.siteId, "events");
    const batch = box.take(room);
    this.notePeak();
    for (const ev of batch) {
      void this.publishEvent(topic, ev).then((r) => {
        if (r === "delivered") box.delivered(ev.seq);
        else if (r === "refused") {
          // The broker refused it (PUBACK reason ≥ 0x80, e.g. ACL): it can never be delivered;
          // replaying it forever would stall every later event (pitfall 10).
          this.opts.log.error("broker refused an event; dropped", { seq: ev.seq, type: ev.type });
          box.delivered(ev.seq);
        } else box.release(ev.seq); // the connection closed (dropLinkState released it already)
        this.pump();
      });
    }
  }

  /**
   * One event, QoS 1. No timeout: on a live connection a PUBACK comes or the connection dies
   * (keepalive), and resending on the same connection is not allowed (MQTT 5 §4.4) — it would
   * only duplicate. A closed connection fails it (dropLinkState).
   */
  private publishEvent(topic: string, ev: OutboxEvent): Promise<"delivered" | "refused" | "failed"> {
    const client = this.client;
    if (!client) return Promise.resolve("failed");
    return new Promise((resolve) => {
      let done = false;
      const lost = (): void => finish("failed");
      const finish = (r: "delivered" | "refused" | "failed"): void => {
        if (done) return;
        done = true;
        this.eventsAwaiting.delete(lost);
        resolve(r);
      };
      this.eventsAwaiting.add(lost);
      try {
        client.publish(topic, JSON.stringify(ev), { qos: 1 }, (err) => {
          if (!err) return finish("delivered");
          const code = (err as { code?: unknown }).code;
          finish(typeof code === "number" && code >= 0x80 ? "refused" : "failed");
        });
      } catch {
        finish("failed");
      }
    });
  }

  // --- presence and statistics ---------------------------------------------------------------

  private presenceChanged(): void {
    if (this.presenceTimer) return;
    this.presenceTimer = setTimeout(() => {
      this.presenceTimer = undefined;
      this.publishPresence();
    }, this.t.presenceDebounceMs);
  }

  private publishPresence(): void {
    if (!this.client?.connected) return;
    let devices: PresenceEntry[];
    let operators: ReturnType<NonNullable<MqttSyncOptions["operators"]>> | undefined;
    try {
      devices = this.opts.presence();
      operators = this.opts.operators?.();
    } catch (err) {
      this.opts.log.error("presence snapshot failed", { err: (err as Error).message });
      return;
    }
    const payload = {
      bootId: this.bootId,
      at: this.now(),
      devices: devices.map((d) => ({ deviceId: d.deviceId, online: d.online, registered: d.registered, ...(d.lastSeen !== undefined ? { lastSeen: d.lastSeen } : {}) })),
      ...(operators !== undefined ? { operators: operators.map((o) => ({ userId: o.userId, availability: o.availability, loggedOutOf: [...o.loggedOutOf] })) } : {}),
    };
    void this.publish("presence", siteTopic(this.opts.siteId, "presence"), payload, { retain: true });
  }

  /** Publishes the interval's counters when anything happened; kept (not reset) while offline. */
  publishStatistics(): void {
    if (!this.client?.connected || this.stats.isEmpty()) return;
    const now = this.now();
    const r = this.stats.report(now, this.opts.queueLengths?.());
    this.stats.reset(now);
    void this.publish("statistics", siteTopic(this.opts.siteId, "statistics"), { bootId: this.bootId, intervalS: this.opts.statsIntervalS, ...r });
  }

  // --- inbound -------------------------------------------------------------------------------

  private onMessage(topic: string, payload: Buffer, packet: IPublishPacket): void {
    try {
      const t = parseTopic(topic);
      if (t.kind === "site" && t.siteId === this.opts.siteId && t.leaf === "desired") {
        // An empty retained message clears the topic (the console withdrew it): nothing to do.
        if (payload.length === 0) return;
        this.desiredChain = this.desiredChain.then(() => this.onDesired(payload)).catch((err) => this.opts.log.error("desired handling failed", { err: (err as Error).message }));
        return;
      }
      if (t.kind === "console-state") {
        this.onConsoleState(payload, packet.retain === true);
        return;
      }
      if (t.kind === "cmd" && t.siteId === this.opts.siteId) {
        void this.onCommand(t.name, payload, packet).catch((err) => this.opts.log.error("command handling failed", { err: (err as Error).message }));
        return;
      }
      this.opts.log.debug("message on an unexpected topic ignored", { topic: topic.slice(0, 200) });
    } catch (err) {
      // Hostile input never crashes the agent (DESIGN principle 6).
      this.opts.log.error("message handling threw", { err: (err as Error).message });
    }
  }

  /**
   * A console announced itself online (a live message, not the retained copy every subscribe
   * delivers — the agent has just published its state on connect anyway): republish after a
   * random delay. Anything that is not a valid state payload is ignored.
   */
  private onConsoleState(payload: Buffer, retained: boolean): void {
    if (retained || payload.length > 4096) return;
    let state: unknown;
    try {
      state = JSON.parse(payload.toString("utf8"));
    } catch {
      return;
    }
    if (!validatePayload("consoleState", state).ok || (state as { online: boolean }).online !== true) return;
    if (this.consoleBirthTimer !== undefined) return; // one republish per burst of births
    const delay = Math.floor(Math.random() * this.t.consoleBirthJitterMs);
    this.opts.log.info("console came online; republishing state", { inMs: delay });
    this.consoleBirthTimer = setTimeout(() => {
      this.consoleBirthTimer = undefined;
      void this.republish().catch((err) => this.opts.log.warn("republish after console birth failed", { err: (err as Error).message }));
    }, delay);
    this.consoleBirthTimer.unref();
  }

  private appliedNow(): { version: number; hash: string | null } {
    try {
      const a = this.opts.site.applied();
      return a ? { version: a.version, hash: a.hash.startsWith("sha256:") ? a.hash : `sha256:${a.hash}` } : { version: 0, hash: null };
    } catch {
      return { version: 0, hash: null };
    }
  }

  private async onDesired(payload: Buffer): Promise<void> {
    const applied = this.appliedNow();
    const verdict = judgeDesired(payload, { siteId: this.opts.siteId, appliedVersion: applied.version, appliedHash: applied.hash, maxBytes: this.maxPayload });
    if (verdict.kind === "reject") return this.finishDesired(verdict.version, "rejected", verdict.errors);
    if (verdict.kind === "unchanged") return this.finishDesired(verdict.version, "unchanged", []);
    let outcome: ApplyOutcome;
    try {
      outcome = await this.opts.site.apply(verdict.config, "console");
    } catch (err) {
      outcome = { ok: false, errors: [{ code: "apply-failed", path: "$", message: (err as Error).message }] };
    }
    if (!outcome.ok) {
      // Paths from the site service are relative to the snapshot; the console sent it under "config".
      const errors = outcome.errors.map((e) => ({ code: e.code, path: e.path === "$" || e.path === "" ? "config" : `config.${e.path.replace(/^\$\.?/, "")}`.replace(/\.\[/g, "["), message: e.message }));
      return this.finishDesired(verdict.version, "rejected", errors);
    }
    if (!outcome.changed) {
      // Something else (the local site file) applied this version meanwhile: judge again
      // against what runs now, so the ack never says "applied" for other content.
      const now = this.appliedNow();
      const again = judgeDesired(payload, { siteId: this.opts.siteId, appliedVersion: now.version, appliedHash: now.hash, maxBytes: this.maxPayload });
      if (again.kind === "reject") return this.finishDesired(again.version, "rejected", again.errors);
      return this.finishDesired(verdict.version, "unchanged", []);
    }
    this.opts.log.info("console config applied", { version: outcome.version });
    return this.finishDesired(verdict.version, "applied", []);
  }

  private async finishDesired(version: number | null, status: AckStatus, errors: SyncError[]): Promise<void> {
    if (status === "rejected") {
      this.rejectedMessages++;
      this.opts.log.warn("console config rejected", { version, errors: errors.length, first: errors[0] ? `${errors[0].path}: ${errors[0].message}` : undefined });
    }
    const appliedVersion = this.appliedNow().version;
    this.lastResult = { version, status, at: this.now() };
    const ack: AckPayload = { version, status, errors: errors.slice(0, 1000).map(clipError), appliedVersion, at: this.now() };
    // Ack first: the console waits on it; reported (retained) is the durable truth.
    await Promise.all([this.publish("ack", siteTopic(this.opts.siteId, "ack"), ack), this.publishReported()]);
  }

  private publishReported(): Promise<boolean> {
    const a = this.appliedNow();
    const reported: ReportedPayload = { appliedVersion: a.version, appliedHash: a.hash, bootId: this.bootId, maxDesiredBytes: this.maxPayload, ...(this.lastResult ? { lastResult: this.lastResult } : {}) };
    return this.publish("reported", siteTopic(this.opts.siteId, "reported"), reported, { retain: true });
  }

  private async onCommand(name: string, payload: Buffer, packet: IPublishPacket): Promise<void> {
    const props = packet.properties ?? {};
    const responseTopic = props.responseTopic;
    const correlationData = props.correlationData;
    if (responseTopic === undefined || !isOwnReplyTopic(this.opts.siteId, responseTopic)) {
      // Replies go only to this site's reply subtree; anything else would be a write elsewhere.
      this.rejectedMessages++;
      this.opts.log.warn("command without a reply topic of this site ignored", { command: name.slice(0, 64), responseTopic: responseTopic?.slice(0, 200) });
      return;
    }
    const reply = (status: "ok" | "error" | "not-available", result?: unknown, errors?: SyncError[]): Promise<boolean> =>
      this.publish("commandReply", responseTopic, { command: name.slice(0, 64), status, ...(result !== undefined ? { result } : {}), ...(errors ? { errors } : {}) }, correlationData ? { properties: { correlationData } } : {});
    if (payload.length > this.maxPayload) return void (await reply("error", undefined, [{ code: "too-large", path: "$", message: `payload of ${payload.length} bytes exceeds ${this.maxPayload}` }]));
    let req: unknown = {};
    if (payload.length > 0) {
      try {
        req = JSON.parse(payload.toString("utf8"));
      } catch (err) {
        return void (await reply("error", undefined, [{ code: "bad-json", path: "$", message: (err as Error).message }]));
      }
    }
    const check = validatePayload("commandRequest", req);
    if (!check.ok) return void (await reply("error", undefined, check.errors));
    const args = ((req as { args?: Record<string, unknown> }).args ?? {}) as Record<string, unknown>;
    switch (name as CommandName) {
      case "get-status":
        await reply("ok", this.statusReport());
        return;
      case "republish":
        await this.republish();
        await reply("ok", { republished: ["status", "reported", "presence"] });
        return;
      case "resync": {
        if (!this.resync) return void (await reply("not-available", undefined, [{ code: "not-available", path: "$", message: "this agent has no phone re-sync handler" }]));
        try {
          const result = await this.resync(args);
          await reply("ok", result ?? null);
        } catch (err) {
          await reply("error", undefined, [{ code: "resync-failed", path: "args", message: (err as Error).message }]);
        }
        return;
      }
      case "voicemail-fetch": {
        if (!this.voicemailFetch) return void (await reply("not-available", undefined, [{ code: "not-available", path: "$", message: "this agent has no mailboxes" }]));
        try {
          await reply("ok", await this.voicemailFetch(args));
        } catch (err) {
          await reply("error", undefined, [{ code: "voicemail-fetch-failed", path: "args", message: (err as Error).message }]);
        }
        return;
      }
      default:
        await reply("error", undefined, [{ code: "unknown-command", path: "$", message: `unknown command "${name.slice(0, 64)}" (resync, get-status, republish, voicemail-fetch)` }]);
    }
  }

  /** Birth, reported and presence again (cmd/republish; also useful when a console restarts). */
  async republish(): Promise<void> {
    await Promise.all([this.publish("status", siteTopic(this.opts.siteId, "status"), this.statusPayload(true), { retain: true }), this.publishReported()]);
    this.publishPresence();
  }

  private statusReport(): unknown {
    let agent: unknown;
    try {
      agent = this.opts.status();
    } catch (err) {
      agent = { error: (err as Error).message };
    }
    // JSON round trip: the reply is data only (no functions, no bigint).
    return JSON.parse(JSON.stringify({ agent, sync: this.syncStatus() }));
  }

  syncStatus(): SyncStatus {
    return {
      connected: this.client?.connected ?? false,
      connSeq: this.connSeq,
      bootId: this.bootId,
      appliedVersion: this.appliedNow().version,
      eventWindow: this.eventWindow,
      receiveMaximum: this.receiveMaximum,
      peakInFlight: this.peakInFlight,
      outbox: this.outbox?.stats() ?? { pending: 0, durable: 0, inFlight: 0, peakInFlight: 0, nextSeq: 1, dropped: 0, fileBytes: 0, tornLines: 0 },
      rejectedMessages: this.rejectedMessages,
      invalidOutgoing: this.invalidOutgoing,
    };
  }

  /** Resolves once every desired message received so far has been handled (tests, shutdown). */
  idle(): Promise<void> {
    return this.desiredChain;
  }

  /**
   * Clean stop: offline status (retained) before a normal DISCONNECT, which discards the will
   *; statistics flushed; outbox fsync'd and closed.
   */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopRequested = true;
    for (const u of this.unsubscribe) u();
    this.unsubscribe = [];
    if (this.statsTimer) clearInterval(this.statsTimer);
    if (this.consoleBirthTimer) clearTimeout(this.consoleBirthTimer);
    if (this.presenceTimer) clearTimeout(this.presenceTimer);
    await this.desiredChain;
    const client = this.client;
    if (client?.connected) {
      this.publishStatistics();
      await this.publish("status", siteTopic(this.opts.siteId, "status"), this.statusPayload(false, "shutdown"), { retain: true });
    }
    this.stopping = true;
    // Offline, a normal end() waits for the PUBACKs of publishes left in MQTT.js's store (an ack
    // cut off by the link) — forever: force it, there is no connection to close cleanly.
    if (client) await new Promise<void>((resolve) => client.end(!client.connected, {}, () => resolve()));
    await this.outbox?.close();
  }
}

/** Reads TLS material named by the settings; a missing file is an error naming the setting. */
export function readTlsFiles(paths: { mqttCa: string; mqttCert: string; mqttKey: string }): { ca?: Buffer; cert?: Buffer; key?: Buffer } {
  const out: { ca?: Buffer; cert?: Buffer; key?: Buffer } = {};
  for (const [setting, key] of [["mqttCa", "ca"], ["mqttCert", "cert"], ["mqttKey", "key"]] as const) {
    const p = paths[setting];
    if (!p) continue;
    try {
      out[key] = fs.readFileSync(p);
    } catch (err) {
      throw new Error(`${setting}: cannot read ${p} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
  }
  return out;
}

function compact(o: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(o)) if (v !== undefined) out[k] = v;
  return out;
}

function clipError(e: SyncError): SyncError {
  return { code: e.code.slice(0, 64), path: e.path.slice(0, 1024), message: e.message.slice(0, 2048) };
}
