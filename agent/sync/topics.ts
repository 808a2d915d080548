// Topic names of the console contract (docs/mqtt.md): everything of one site lives under
// ringedge/v1/<siteId>/, so one broker ACL line (pattern readwrite ringedge/v1/%u/#) confines
// a site to its own subtree. Pure functions; no MQTT here.

export const TOPIC_ROOT = "ringedge/v1";

/** Site ids and console ids: the characters an ACL pattern and a topic level can carry safely. */
export const SITE_ID_RE = /^[a-z0-9-]{1,64}$/;
export const CONSOLE_ID_RE = /^[A-Za-z0-9_-]{1,64}$/;
export const COMMAND_NAMES = ["resync", "get-status", "republish", "voicemail-fetch"] as const;
export type CommandName = (typeof COMMAND_NAMES)[number];

export type SiteTopic = "desired" | "reported" | "ack" | "status" | "presence" | "events" | "statistics";

export function siteTopic(siteId: string, leaf: SiteTopic): string {
  return `${TOPIC_ROOT}/${siteId}/${leaf}`;
}

export function commandTopic(siteId: string, name: string): string {
  return `${TOPIC_ROOT}/${siteId}/cmd/${name}`;
}

export function replyTopic(siteId: string, consoleId: string): string {
  return `${TOPIC_ROOT}/${siteId}/reply/${consoleId}`;
}

/** What the agent subscribes to, every connect. */
/**
 * The console's own birth/death (retained, console → all sites): when a console comes back
 * online every agent republishes its state, so a console that lost its view rebuilds it
 * (Sparkplug's host STATE). Outside the site subtree: the per-site ACL grants it
 * read-only (docs/mqtt.md).
 */
export const CONSOLE_STATE_TOPIC = `${TOPIC_ROOT}/_console/state`;

export function agentSubscriptions(siteId: string): string[] {
  return [siteTopic(siteId, "desired"), `${TOPIC_ROOT}/${siteId}/cmd/+`, CONSOLE_STATE_TOPIC];
}

export type ParsedTopic =
  | { kind: "site"; siteId: string; leaf: SiteTopic }
  | { kind: "cmd"; siteId: string; name: string }
  | { kind: "reply"; siteId: string; consoleId: string }
  | { kind: "console-state" }
  | { kind: "foreign"; topic: string };

const LEAVES: ReadonlySet<string> = new Set(["desired", "reported", "ack", "status", "presence", "events", "statistics"]);

/** Classifies a topic; anything outside the contract is "foreign". Never throws. */
export function parseTopic(topic: string): ParsedTopic {
  if (topic === CONSOLE_STATE_TOPIC) return { kind: "console-state" };
  const parts = topic.split("/");
  if (parts.length < 4 || `${parts[0]}/${parts[1]}` !== TOPIC_ROOT) return { kind: "foreign", topic };
  const siteId = parts[2]!;
  if (!SITE_ID_RE.test(siteId)) return { kind: "foreign", topic };
  if (parts.length === 4 && LEAVES.has(parts[3]!)) return { kind: "site", siteId, leaf: parts[3] as SiteTopic };
  if (parts.length === 5 && parts[3] === "cmd" && parts[4] !== "") return { kind: "cmd", siteId, name: parts[4]! };
  if (parts.length === 5 && parts[3] === "reply" && CONSOLE_ID_RE.test(parts[4]!)) return { kind: "reply", siteId, consoleId: parts[4]! };
  return { kind: "foreign", topic };
}

/**
 * A command's MQTT 5 responseTopic is accepted only inside the site's own reply subtree: a
 * reply published anywhere else would be denied by the per-site ACL (and must not be used to
 * make the agent write to other sites' topics).
 */
export function isOwnReplyTopic(siteId: string, topic: string): boolean {
  const p = parseTopic(topic);
  return p.kind === "reply" && p.siteId === siteId;
}
