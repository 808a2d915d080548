// Message waiting: the message-summary event package, RFC 3842, on the subscription mechanism
// (agent/sip/subscriptions.ts, RFC 6665). A phone's line subscribes to its own mailbox
// (`SUBSCRIBE sip:<its account>@<agent>`, Event: message-summary) and lights its message lamp
// while the NOTIFY says `Messages-Waiting: yes`.
//
// Decisions:
// - Counts come from the mailbox store through VoicemailCounts (voicemail/types.ts), asked at
//   every NOTIFY; changes arrive as voicemail.changed on the bus. Listeners only mark lamps;
//   NOTIFYs go out from a setImmediate flush (a burst of changes is one NOTIFY per watcher).
// - A user's lamp shows the user's own mailbox PLUS the mailboxes of every group the user is a
//   member of (a group mailbox lights every member's lamp): new and old counts are summed over
//   those mailboxes (combineCounts), so the lamp is on while any of them has a new message and
//   the phone's count is what the user can hear with the voicemail code. A mailbox the store
//   does not know (not enabled) counts as empty. The one Message-Account line names the user's
//   own account (RFC 3842 §5: one account per summary).
// - Who may subscribe (RFC 3842 §3.7: the mailbox's owner; RFC 6665 §4.2.1.1 authorization):
//   a device of the site with an owner, to that owner's account. Its Request-URI user part may be
//   the owner's extension or user id, the SIP username of one of the owner's devices (phones
//   subscribe to their own AOR), or the voicemail code (Yealink subscribe_mwi_to_vm, Snom's
//   mailbox: phones that subscribe to the voicemail number). A member may also watch one of its
//   groups' mailboxes alone (group number or id, e.g. a Cisco MWI line key); that watch ends
//   (terminated;reason=rejected) when a site change takes the member out of the group. Any
//   other user, device or group of the site: 403. Anything else: 404.
// - A user is accepted even when no mailbox of theirs is enabled yet: the lamp says "no", and a
//   mailbox enabled later by a console push lights it without the phone having to retry (phones
//   back off for a long time after a 404).
// - Only solicited NOTIFYs (in the subscription's dialog); unsolicited ones are not sent.
import { ChangeBatch } from "./change-batch.ts";
import type { EventBus } from "../bus.ts";
import type { Logger } from "../log.ts";
import type { SiteIndex } from "../routing/model.ts";
import type { EventPackage, SubscribeRefusal, Subscriber } from "../sip/subscriptions.ts";
import { parseUri, unescapeUser } from "../sip/uri.ts";
import { mailboxesOfUser } from "../voicemail/access.ts";
import type { MailboxCounts, MailboxOwner, VoicemailCounts } from "../voicemail/types.ts";
import { uriUser } from "./blf.ts";

export const MESSAGE_SUMMARY_EVENT = "message-summary";
export const SIMPLE_MESSAGE_SUMMARY_TYPE = "application/simple-message-summary";
/** The voicemail feature code when the settings name none (agent/config.ts voicemailCode). */
export const DEFAULT_VOICEMAIL_CODE = "*97";

/** The provider when no mailbox store is wired: every lamp is off. */
export const NO_MAILBOXES: VoicemailCounts = { counts: () => undefined };

/** Largest count put in a summary (a misbehaving store must not produce absurd numbers). */
const MAX_COUNT = 999_999;

function safeCount(n: unknown): number {
  return typeof n === "number" && Number.isSafeInteger(n) && n > 0 ? Math.min(n, MAX_COUNT) : 0;
}

/**
 * The lamp's counts for several mailboxes: new and old summed (each saturating at 999,999);
 * a missing mailbox or a count that is not a non-negative integer counts as 0.
 */
export function combineCounts(mailboxes: ReadonlyArray<MailboxCounts | undefined>): MailboxCounts {
  let newMessages = 0;
  let oldMessages = 0;
  for (const m of mailboxes) {
    if (m === undefined || m === null || typeof m !== "object") continue;
    newMessages = Math.min(MAX_COUNT, newMessages + safeCount(m.newMessages));
    oldMessages = Math.min(MAX_COUNT, oldMessages + safeCount(m.oldMessages));
  }
  return { newMessages, oldMessages };
}

/**
 * The application/simple-message-summary body (RFC 3842 §5): `Messages-Waiting` is yes while
 * there is a new message; `Voice-Message: new/old (urgent-new/urgent-old)` — no urgency is
 * kept, so the urgent counts are 0. Lines end in CRLF. A pure function of its input.
 */
export function renderMessageSummary(input: { account: string; counts: MailboxCounts }): string {
  const { newMessages, oldMessages } = combineCounts([input.counts]);
  // The account is a SIP URI we built; a line break in it would start a new header line.
  const account = input.account.replace(/[\r\n]/g, "");
  return [`Messages-Waiting: ${newMessages > 0 ? "yes" : "no"}`, `Message-Account: ${account}`, `Voice-Message: ${newMessages}/${oldMessages} (0/0)`, ""].join("\r\n");
}

/** What a message-summary Request-URI names for a subscriber (pure; see the decisions above). */
export type MailboxResolution = { ok: true; resource: string; account: string } | { ok: false; status: 403 | 404; reason: string };

/**
 * Resource keys (ids have no spaces): "u <user id>" (a user's lamp), "g <group id> <user id>"
 * (one group mailbox as that member watches it: a member who leaves the group loses it).
 */
const userResource = (id: string): string => `u ${id}`;
const groupResource = (groupId: string, userId: string): string => `g ${groupId} ${userId}`;

export function resolveMailbox(
  requestUri: string,
  subscriber: Subscriber,
  index: SiteIndex,
  opts: { voicemailCode: string; deviceOwner?: ((username: string) => string | undefined) | undefined },
): MailboxResolution {
  const notFound = { ok: false, status: 404, reason: "Not Found" } as const;
  const uri = parseUri(requestUri);
  if (uri === undefined || (uri.scheme !== "sip" && uri.scheme !== "sips") || uri.user === undefined) return notFound;
  let name: string;
  try {
    name = unescapeUser(uri.user);
  } catch {
    return notFound;
  }
  const own = subscriber.userId === undefined ? undefined : index.usersById.get(subscriber.userId);
  const forbidden = (what: string) => ({ ok: false, status: 403, reason: `not your mailbox: ${what}` }) as const;
  const mine = (): MailboxResolution => (own === undefined ? notFound : { ok: true, resource: userResource(own.id), account: own.extension });

  if (name !== "" && name === opts.voicemailCode) return mine();
  if (subscriber.username !== undefined && name === subscriber.username) return mine();
  const user = index.usersByExtension.get(name) ?? index.usersById.get(name);
  if (user !== undefined) return own !== undefined && user.id === own.id ? mine() : forbidden("another user's");
  const group = index.groupsByNumber.get(name) ?? index.groupsById.get(name);
  if (group !== undefined) {
    if (own === undefined || !group.members.includes(own.id)) return forbidden("a group you are not a member of");
    return { ok: true, resource: groupResource(group.id, own.id), account: group.number };
  }
  const owner = opts.deviceOwner?.(name);
  if (owner !== undefined) return own !== undefined && owner === own.id ? mine() : forbidden("another user's device");
  return notFound;
}

// --- the feature -------------------------------------------------------------------------------

export interface MwiDeps {
  bus: EventBus;
  /** The current site (users, groups and their members). */
  site: () => SiteIndex;
  /** The subscription mechanism: told which lamps changed. */
  subscriptions: { addPackage(pkg: EventPackage): void; changed(event: string, resource: string): void; endResource(event: string, resource: string): number };
  /** The mailbox store's counts; NO_MAILBOXES until one is wired. */
  counts: VoicemailCounts;
  /** The voicemail feature code (settings.voicemailCode), read at each SUBSCRIBE. */
  voicemailCode: () => string;
  /** Owner (user id) of the site device with this SIP username, if any. */
  deviceOwner?: (username: string) => string | undefined;
  log?: Logger;
}

/** The message-summary event package: registered on the subscription manager, fed by the bus. */
export class MwiNotifier {
  /** Lamps changed in this turn of the event loop, notified once each at the next. */
  private readonly changes: ChangeBatch;
  private readonly unsubscribe: Array<() => void> = [];
  /** Group resources handed out (bounded by members × groups): re-checked when the site changes. */
  private readonly groupWatches = new Set<string>();

  constructor(private readonly deps: MwiDeps) {
    this.changes = new ChangeBatch((r) => deps.subscriptions.changed(MESSAGE_SUMMARY_EVENT, r));
  }

  start(): void {
    this.deps.subscriptions.addPackage(this.eventPackage());
    const bus = this.deps.bus;
    this.unsubscribe.push(
      bus.on("voicemail.changed", (e) => this.changes.mark(this.affected(e.mailbox))),
      bus.on("site.applied", () => this.siteChanged()),
    );
  }

  /**
   * Memberships may have changed: every lamp is sent again (it may now include or leave out a
   * group mailbox); a watch on a group mailbox whose watcher is no longer a member (or whose
   * group is gone) ends, `terminated;reason=rejected`.
   */
  private siteChanged(): void {
    const index = this.deps.site();
    for (const r of [...this.groupWatches]) {
      const [, groupId, userId] = r.split(" ");
      if (index.groupsById.get(groupId!)?.members.includes(userId!) === true) continue;
      this.groupWatches.delete(r);
      this.deps.subscriptions.endResource(MESSAGE_SUMMARY_EVENT, r);
    }
    this.changes.mark([...[...index.usersById.keys()].map(userResource), ...this.groupWatches]);
  }

  stop(): void {
    for (const u of this.unsubscribe.splice(0)) u();
    this.changes.clear();
  }

  /** The counts a resource's NOTIFY carries now. */
  countsOf(resource: string): MailboxCounts {
    const [kind, id, watcher] = resource.split(" ");
    const index = this.deps.site();
    let owners: MailboxOwner[];
    if (kind === "g") owners = index.groupsById.get(id!)?.members.includes(watcher!) === true ? [{ kind: "group", id: id! }] : [];
    else owners = mailboxesOfUser(id!, index);
    return combineCounts(owners.map((o) => this.ask(o)));
  }

  /** The package the subscription manager serves for Event: message-summary. */
  eventPackage(): EventPackage {
    return {
      event: MESSAGE_SUMMARY_EVENT,
      contentType: SIMPLE_MESSAGE_SUMMARY_TYPE,
      // RFC 3842 §3.4: the default subscription duration is one hour.
      defaultExpires: 3600,
      resolve: (requestUri, host, subscriber): { resource: string; entity: string } | SubscribeRefusal | undefined => {
        const r = resolveMailbox(requestUri, subscriber, this.deps.site(), { voicemailCode: this.deps.voicemailCode(), deviceOwner: this.deps.deviceOwner });
        if (!r.ok) return r.status === 403 ? { refuse: 403, reason: r.reason } : undefined;
        if (r.resource.startsWith("g ")) this.groupWatches.add(r.resource);
        return { resource: r.resource, entity: `sip:${uriUser(r.account)}@${host}` };
      },
      render: (resource, entity) => renderMessageSummary({ account: entity, counts: this.countsOf(resource) }),
    };
  }

  /** The lamps a mailbox shows on: its user's, or every member's (and members' watches of it alone). */
  private affected(mailbox: MailboxOwner): string[] {
    if (mailbox === null || typeof mailbox !== "object" || typeof mailbox.id !== "string") return [];
    if (mailbox.kind === "user") return [userResource(mailbox.id)];
    if (mailbox.kind !== "group") return [];
    const members = this.deps.site().groupsById.get(mailbox.id)?.members ?? [];
    return members.flatMap((m) => [userResource(m), groupResource(mailbox.id, m)]);
  }

  private ask(owner: MailboxOwner): MailboxCounts | undefined {
    try {
      return this.deps.counts.counts(owner);
    } catch (err) {
      // A failing store shows an empty mailbox rather than ending the phone's subscription.
      this.deps.log?.warn("voicemail counts unavailable", { kind: owner.kind, id: owner.id, err: (err as Error).message });
      return undefined;
    }
  }
}
