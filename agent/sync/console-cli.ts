// Reference console: what the central console does, small enough to read, so an operator can
// drive a site without writing code and tests can too. `ringedge console push|watch|status|resync`.
// It speaks the same contract as the agent (docs/mqtt.md) and validates what it sends.
import { createHash, randomBytes } from "node:crypto";
import * as fs from "node:fs";
import type { IClientOptions, MqttClient } from "mqtt";
import type { Settings } from "../config.ts";
import { validatePayload } from "../contract.ts";
import { configHash, DEFAULT_MAX_PAYLOAD_BYTES, DESIRED_SCHEMA, type AckPayload, type SyncError } from "./mqtt-sync.ts";
import { commandTopic, COMMAND_NAMES, replyTopic, SITE_ID_RE, siteTopic, TOPIC_ROOT } from "./topics.ts";

export interface ConsoleOptions {
  url: string;
  consoleId?: string;
  username?: string;
  password?: string;
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
  connectTimeoutMs?: number;
}

export interface CommandReply {
  command: string;
  status: "ok" | "error" | "not-available";
  result?: unknown;
  errors?: SyncError[];
}

/** A desired envelope from a file holding either the envelope or a bare site snapshot. */
export function desiredFrom(siteId: string, doc: unknown): { ok: true; desired: Record<string, unknown>; version: number } | { ok: false; errors: SyncError[] } {
  if (typeof doc !== "object" || doc === null || Array.isArray(doc)) return { ok: false, errors: [{ code: "schema", path: "$", message: "must be a JSON object (a site snapshot or a desired envelope)" }] };
  const o = doc as Record<string, unknown>;
  const desired = o.schema === DESIRED_SCHEMA ? { ...o, siteId } : { schema: DESIRED_SCHEMA, siteId, version: o.version, hash: configHash(o), config: o };
  const check = validatePayload("desired", desired);
  if (!check.ok) return { ok: false, errors: check.errors };
  return { ok: true, desired, version: desired.version as number };
}

/**
 * Why a push of `bytes` cannot go to a site that reads at most `limit` bytes (undefined: it
 * fits). Pure. A larger push is rejected by the agent (too-large) or, over its MQTT maximum
 * packet size, dropped by the broker without a word — the console would wait for an ack that
 * never comes.
 */
export function pushTooLarge(bytes: number, limit: number, limitFrom: string): string | undefined {
  if (bytes <= limit) return undefined;
  return `the push is ${bytes} bytes, over the site's limit of ${limit} bytes (${limitFrom}); not sent`;
}

/** The limit a site announced in its reported state (maxDesiredBytes), if it did. */
export function reportedLimit(reported: unknown): number | undefined {
  const v = typeof reported === "object" && reported !== null ? (reported as { maxDesiredBytes?: unknown }).maxDesiredBytes : undefined;
  return Number.isSafeInteger(v) && (v as number) > 0 ? (v as number) : undefined;
}

export class ConsoleClient {
  readonly consoleId: string;
  /** Desired messages not yet acknowledged, by "<site>\0<version>": republished after a reconnect (the broker may have lost retained state). */
  private pendingPushes = new Map<string, { topic: string; payload: string }>();

  private constructor(
    readonly client: MqttClient,
    consoleId: string,
  ) {
    this.consoleId = consoleId;
    // One listener per outstanding push or command (a fleet push has hundreds at once).
    client.setMaxListeners(0);
    client.on("connect", () => {
      (client.stream as { setNoDelay?: (on: boolean) => void }).setNoDelay?.(true);
      for (const p of this.pendingPushes.values()) client.publish(p.topic, p.payload, { qos: 1, retain: true });
    });
  }

  static async connect(opts: ConsoleOptions): Promise<ConsoleClient> {
    // Loaded on use: the agent process, which imports this module through the CLI, never pays for it.
    const { connect } = await import("mqtt");
    const consoleId = opts.consoleId ?? `console-${randomBytes(4).toString("hex")}`;
    const options: IClientOptions = {
      protocolVersion: 5,
      clientId: consoleId,
      clean: true,
      reconnectPeriod: 200,
      connectTimeout: opts.connectTimeoutMs ?? 5000,
      reconnectOnConnackError: true,
      ...(opts.username ? { username: opts.username } : {}),
      ...(opts.password ? { password: opts.password } : {}),
      ...(opts.ca ? { ca: opts.ca } : {}),
      ...(opts.cert ? { cert: opts.cert } : {}),
      ...(opts.key ? { key: opts.key } : {}),
    };
    const client = connect(opts.url, options);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        client.end(true);
        reject(new Error(`cannot reach the broker at ${opts.url}`));
      }, opts.connectTimeoutMs ?? 5000);
      client.once("connect", () => {
        clearTimeout(t);
        (client.stream as { setNoDelay?: (on: boolean) => void }).setNoDelay?.(true);
        resolve(new ConsoleClient(client, consoleId));
      });
      client.on("error", () => undefined);
    });
  }

  /**
   * The site's retained reported state, or undefined when the broker holds none (a site that
   * never connected): the broker sends retained messages right after the SUBACK, so this waits
   * only `waitMs` past it.
   */
  async reported(siteId: string, waitMs = 500): Promise<Record<string, unknown> | undefined> {
    const topic = siteTopic(siteId, "reported");
    let onMessage: ((t: string, buf: Buffer, packet: { retain?: boolean }) => void) | undefined;
    const got = new Promise<Record<string, unknown> | undefined>((resolve) => {
      onMessage = (t, buf, packet) => {
        if (t !== topic || !packet.retain) return;
        try {
          const v = JSON.parse(buf.toString()) as unknown;
          if (typeof v === "object" && v !== null && !Array.isArray(v)) resolve(v as Record<string, unknown>);
        } catch {
          /* not JSON: as if none */
        }
      };
      this.client.on("message", onMessage);
    });
    let timer: NodeJS.Timeout | undefined;
    try {
      await this.client.subscribeAsync(topic, { qos: 1 });
      return await Promise.race([got, new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), waitMs)))]);
    } finally {
      clearTimeout(timer);
      this.client.removeListener("message", onMessage!);
      await this.client.unsubscribeAsync(topic).catch(() => undefined);
    }
  }

  /**
   * Publishes a desired envelope (retained, QoS 1) and waits for the site's ack of that version.
   * Republished on every reconnect until acknowledged. Refuses (nothing sent) a payload over
   * `maxBytes`; rejects when no ack came within `timeoutMs` (the desired message stays retained:
   * the site applies it when it connects).
   */
  async pushDesired(siteId: string, desired: Record<string, unknown> | string | Buffer, version: number | null, timeoutMs = 10_000, maxBytes?: number): Promise<AckPayload> {
    const ackTopic = siteTopic(siteId, "ack");
    const topic = siteTopic(siteId, "desired");
    const payload = typeof desired === "string" || Buffer.isBuffer(desired) ? desired.toString() : JSON.stringify(desired);
    const tooLarge = maxBytes === undefined ? undefined : pushTooLarge(Buffer.byteLength(payload), maxBytes, "maxBytes");
    if (tooLarge) throw new Error(tooLarge);
    const key = `${siteId}\u0000${version}\u0000${randomBytes(4).toString("hex")}`;
    const started = Date.now();
    await this.client.subscribeAsync(ackTopic, { qos: 1 });
    return new Promise<AckPayload>((resolve, reject) => {
      const onMessage = (t: string, buf: Buffer): void => {
        if (t !== ackTopic) return;
        let ack: AckPayload;
        try {
          ack = JSON.parse(buf.toString()) as AckPayload;
        } catch {
          return;
        }
        if (!validatePayload("ack", ack).ok) return;
        if (ack.version !== version && !(version === null || ack.version === null)) return;
        done();
        resolve(ack);
      };
      const done = (): void => {
        clearTimeout(timer);
        this.pendingPushes.delete(key);
        this.client.removeListener("message", onMessage);
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`no ack for version ${version} from site ${siteId} within ${timeoutMs} ms: the site is offline or did not receive the push (ringedge console status ${siteId}); the push stays retained on the broker and is applied when the site connects`));
      }, Math.max(0, timeoutMs - (Date.now() - started)));
      this.client.on("message", onMessage);
      this.pendingPushes.set(key, { topic, payload });
      this.client.publish(topic, payload, { qos: 1, retain: true });
    });
  }

  /** Sends cmd/<name> with responseTopic + correlationData and waits for the reply. */
  async command(siteId: string, name: string, args: Record<string, unknown> = {}, timeoutMs = 10_000): Promise<CommandReply> {
    const rt = replyTopic(siteId, this.consoleId);
    const correlation = randomBytes(8);
    await this.client.subscribeAsync(rt, { qos: 1 });
    return new Promise((resolve, reject) => {
      const onMessage = (t: string, buf: Buffer, packet: { properties?: { correlationData?: Buffer } }): void => {
        if (t !== rt || !packet.properties?.correlationData?.equals(correlation)) return;
        clearTimeout(timer);
        this.client.removeListener("message", onMessage);
        try {
          resolve(JSON.parse(buf.toString()) as CommandReply);
        } catch (err) {
          reject(err as Error);
        }
      };
      const timer = setTimeout(() => {
        this.client.removeListener("message", onMessage);
        reject(new Error(`no reply to ${name} from site ${siteId} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.client.on("message", onMessage);
      this.client.publish(commandTopic(siteId, name), JSON.stringify({ args }), { qos: 1, properties: { responseTopic: rt, correlationData: correlation } });
    });
  }

  /** Everything a site publishes (status, reported, presence, events, acks, statistics). */
  async watch(siteId: string, onMessage: (leaf: string, payload: unknown, retained: boolean) => void): Promise<void> {
    const prefix = `${TOPIC_ROOT}/${siteId}/`;
    this.client.on("message", (t, buf, packet) => {
      if (!t.startsWith(prefix)) return;
      const leaf = t.slice(prefix.length);
      if (leaf === "desired" || leaf.startsWith("cmd/") || leaf.startsWith("reply/")) return;
      let v: unknown;
      try {
        v = JSON.parse(buf.toString());
      } catch {
        v = buf.toString();
      }
      onMessage(leaf, v, packet.retain);
    });
    await this.client.subscribeAsync(["status", "reported", "presence", "events", "ack", "statistics"].map((l) => `${prefix}${l}`), { qos: 1 });
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.client.end(false, {}, () => resolve()));
  }
}

// --- the CLI -------------------------------------------------------------------------------

export const CONSOLE_HELP = `usage:
  ringedge console push <site> <config.json> [--url mqtt://host:1883] [--timeout <ms>] [--max-bytes <n>]
  ringedge console watch <site> [--url ...] [--count <n>]
  ringedge console status <site> [--url ...]
  ringedge console resync <site> [<device id>...] [--url ...]
  ringedge console republish <site> [--url ...]
  ringedge console voicemail-fetch <site> <message id> --out <file.wav> [--url ...]

A reference central console. push publishes the snapshot (a site file, or a full desired
envelope) as the site's retained desired config, waits for the agent's ack and prints it
(exit 1 when rejected, or no ack within --timeout, default 10000 ms). A push larger than the
site's limit (maxDesiredBytes in its retained reported state; --max-bytes, default ${DEFAULT_MAX_PAYLOAD_BYTES},
for a site that has not reported one) is refused before it is sent. watch prints one line per presence snapshot, event, ack and status.
voicemail-fetch downloads a recording (cmd/voicemail-fetch, docs/voicemail.md) chunk by chunk,
checks every chunk's SHA-256 and the whole file's, and writes it only then (never over a file).
--url defaults to the mqttUrl setting; --username/--password/--ca/--cert/--key as the mqtt*
settings.`;

type Out = (s: string) => void;

/** The broker settings the console CLI reads (the agent's own, from config.ts). */
export type ConsoleCliSettings = Pick<Settings, "mqttUrl" | "mqttUsername" | "mqttPassword" | "mqttCa" | "mqttCert" | "mqttKey">;

export const CONSOLE_VALUE_FLAGS = ["url", "timeout", "count", "username", "password", "ca", "cert", "key", "max-bytes"] as const;

/**
 * A recording over cmd/voicemail-fetch: chunks in order, each checked against its SHA-256, the
 * whole against the message's; at most 4,096 chunks (a gigabyte: far past any recording).
 */
export async function fetchVoicemail(c: Pick<ConsoleClient, "command">, site: string, id: string, timeoutMs: number): Promise<{ ok: true; bytes: Buffer; sha256: string; mailbox: string } | { ok: false; error: string }> {
  const parts: Buffer[] = [];
  let offset = 0;
  for (let i = 0; i < 4096; i++) {
    const reply = await c.command(site, "voicemail-fetch", { id, offset }, timeoutMs);
    if (reply.status !== "ok") return { ok: false, error: `${reply.status}: ${(reply.errors ?? []).map((e) => e.message).join("; ")}` };
    const r = reply.result as { data?: unknown; chunkSha256?: unknown; sha256?: unknown; mailbox?: unknown; offset?: unknown; done?: unknown };
    if (typeof r?.data !== "string" || typeof r.sha256 !== "string" || r.offset !== offset) return { ok: false, error: "the site's reply is not a voicemail-fetch chunk" };
    const chunk = Buffer.from(r.data, "base64");
    if (createHash("sha256").update(chunk).digest("hex") !== r.chunkSha256) return { ok: false, error: `chunk at ${offset} does not match its SHA-256; nothing written` };
    parts.push(chunk);
    offset += chunk.length;
    if (r.done === true) {
      const bytes = Buffer.concat(parts);
      const sha = createHash("sha256").update(bytes).digest("hex");
      if (sha !== r.sha256) return { ok: false, error: `the recording's SHA-256 ${sha} is not ${r.sha256}; nothing written` };
      return { ok: true, bytes, sha256: sha, mailbox: String(r.mailbox) };
    }
    if (chunk.length === 0) return { ok: false, error: "the site sent an empty chunk before the end" };
  }
  return { ok: false, error: "too many chunks" };
}

/** `ringedge console <sub> ...`: returns the exit code. */
export async function consoleCommand(sub: string | undefined, rest: string[], flags: Map<string, string | true>, settings: ConsoleCliSettings, out: Out, err: Out): Promise<number> {
  const flag = (name: string, fallback = ""): string => {
    const v = flags.get(name);
    return typeof v === "string" ? v : fallback;
  };
  const site = rest[0];
  if (!sub || !["push", "watch", "status", "resync", "republish", "voicemail-fetch"].includes(sub) || !site) {
    err(CONSOLE_HELP + "\n");
    return 2;
  }
  if (!SITE_ID_RE.test(site)) {
    err(`ringedge: site id "${site}" must be 1-64 characters of a-z, 0-9 and -\n`);
    return 2;
  }
  const url = flag("url", settings.mqttUrl);
  if (!url) {
    err("ringedge: no broker: pass --url mqtt://host:port or set mqttUrl\n");
    return 2;
  }
  const readPem = (name: string, setting: string): Buffer | undefined => {
    const p = flag(name, setting);
    return p ? fs.readFileSync(p) : undefined;
  };
  const timeoutMs = Number(flag("timeout", "10000"));
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) {
    err("ringedge: --timeout must be a positive number of ms\n");
    return 2;
  }
  const maxBytesFlag = flag("max-bytes");
  const maxBytes = maxBytesFlag === "" ? DEFAULT_MAX_PAYLOAD_BYTES : Number(maxBytesFlag);
  if (!Number.isSafeInteger(maxBytes) || maxBytes <= 0) {
    err("ringedge: --max-bytes must be a positive whole number of bytes\n");
    return 2;
  }

  // Validate the push before touching the network.
  let push: { desired: Record<string, unknown>; version: number } | undefined;
  if (sub === "push") {
    const file = rest[1];
    if (!file) {
      err("ringedge: console push needs <site> <config.json>\n");
      return 2;
    }
    let doc: unknown;
    try {
      doc = JSON.parse(fs.readFileSync(file, "utf8"));
    } catch (e) {
      err(`ringedge: ${file}: ${(e as Error).message}\n`);
      return 1;
    }
    const d = desiredFrom(site, doc);
    if (!d.ok) {
      err(`ringedge: ${file} is not a valid site snapshot; not sent:\n${d.errors.map((e) => `  ${e.path}: ${e.message}`).join("\n")}\n`);
      return 1;
    }
    push = d;
  }

  const tls = { ca: readPem("ca", settings.mqttCa), cert: readPem("cert", settings.mqttCert), key: readPem("key", settings.mqttKey) };
  const c = await ConsoleClient.connect({
    url,
    username: flag("username", settings.mqttUsername),
    password: flag("password", settings.mqttPassword),
    ...(tls.ca ? { ca: tls.ca } : {}),
    ...(tls.cert ? { cert: tls.cert } : {}),
    ...(tls.key ? { key: tls.key } : {}),
  });
  try {
    switch (sub) {
      case "push": {
        // The site's own limit wins; the flag (default: the agent's default) covers a site that never reported one.
        const announced = reportedLimit(await c.reported(site));
        const limit = announced ?? maxBytes;
        const why = pushTooLarge(Buffer.byteLength(JSON.stringify(push!.desired)), limit, announced !== undefined ? "reported by the site" : maxBytesFlag ? "--max-bytes" : "the agent's default; the site has not reported its own");
        if (why) {
          err(`ringedge: ${why}\n`);
          return 1;
        }
        const ack = await c.pushDesired(site, push!.desired, push!.version, timeoutMs, limit);
        out(JSON.stringify(ack, null, 2) + "\n");
        return ack.status === "rejected" ? 1 : 0;
      }
      case "status":
      case "republish":
      case "resync": {
        const name = sub === "status" ? "get-status" : sub;
        const args = sub === "resync" && rest.length > 1 ? { devices: rest.slice(1) } : {};
        if (!(COMMAND_NAMES as readonly string[]).includes(name)) throw new Error(`unknown command ${name}`);
        const reply = await c.command(site, name, args, timeoutMs);
        out(JSON.stringify(reply, null, 2) + "\n");
        return reply.status === "ok" ? 0 : 1;
      }
      case "voicemail-fetch": {
        const id = rest[1];
        const file = flag("out");
        if (id === undefined || file === "") {
          err("ringedge: console voicemail-fetch needs <site> <message id> --out <file.wav>\n");
          return 2;
        }
        const got = await fetchVoicemail(c, site, id, timeoutMs);
        if (!got.ok) {
          err(`ringedge: ${got.error}\n`);
          return 1;
        }
        try {
          fs.writeFileSync(file, got.bytes, { flag: "wx", mode: 0o640 });
        } catch (e) {
          err(`ringedge: ${file}: ${(e as NodeJS.ErrnoException).code === "EEXIST" ? "exists; not overwritten" : (e as Error).message}\n`);
          return 1;
        }
        out(`${file}: ${got.bytes.length} bytes from ${got.mailbox}, SHA-256 ${got.sha256} verified\n`);
        return 0;
      }
      case "watch": {
        const max = Number(flag("count", "0"));
        let seen = 0;
        await new Promise<void>((resolve) => {
          void c.watch(site, (leaf, v, retained) => {
            out(formatWatchLine(leaf, v, retained) + "\n");
            if (max > 0 && ++seen >= max) resolve();
          });
          process.once("SIGINT", () => resolve());
          process.once("SIGTERM", () => resolve());
        });
        return 0;
      }
    }
    return 2;
  } finally {
    await c.close();
  }
}

/** One line per message, for `console watch`. */
export function formatWatchLine(leaf: string, v: unknown, retained: boolean): string {
  const o = (typeof v === "object" && v !== null ? v : {}) as Record<string, any>;
  const r = retained ? " (retained)" : "";
  switch (leaf) {
    case "events":
      return `event #${o.seq} ${o.type} ${JSON.stringify(o.data)}`;
    case "presence": {
      const devs = (Array.isArray(o.devices) ? o.devices : []) as Array<{ deviceId: string; online: boolean }>;
      return `presence${r} ${devs.filter((d) => d.online).length}/${devs.length} online: ${devs.map((d) => `${d.deviceId}=${d.online ? "on" : "off"}`).join(" ")}`;
    }
    case "status":
      return `status${r} ${o.online ? "online" : "offline"} boot ${o.bootId} conn ${o.connSeq}${o.reason ? ` (${o.reason})` : ""}`;
    case "reported":
      return `reported${r} version ${o.appliedVersion} ${o.appliedHash ?? ""}`.trimEnd();
    case "ack":
      return `ack version ${o.version} ${o.status}${Array.isArray(o.errors) && o.errors.length ? ": " + o.errors.map((e: SyncError) => `${e.path} ${e.message}`).join("; ") : ""}`;
    default:
      return `${leaf}${r} ${JSON.stringify(v)}`;
  }
}
