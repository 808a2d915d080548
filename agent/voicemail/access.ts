// Who may see and hear which mailbox: PURE functions of the caller and the site, shared by the
// message lamps (agent/presence/mwi.ts sums the same mailboxes) and the listening menu
// (listen-menu.ts).
//
// Decisions:
// - A user's mailboxes are their own and the mailbox of every group they are a member of (site
//   order). A group mailbox lights every member's lamp, so every member may listen to it:
//   whoever of them hears, saves or deletes a message does so for all of them.
// - Only a device of the site that proved who it is (a registered flow or a digest challenge
//   answered, as for any call from a phone) and has an owner may listen; a user's mailbox only
//   to that user, a group's only to its members. Nobody reaches another user's mailbox; a trunk
//   caller or an unknown source reaches none.
import type { SiteIndex } from "../routing/model.ts";
import type { MailboxOwner } from "./types.ts";

/** A user's mailboxes: their own, then each group they are a member of (site order). */
export function mailboxesOfUser(userId: string, index: SiteIndex): MailboxOwner[] {
  const out: MailboxOwner[] = [{ kind: "user", id: userId }];
  for (const g of index.groupsById.values()) if (g.members.includes(userId)) out.push({ kind: "group", id: g.id });
  return out;
}

/** The caller as the routing engine identified it (routing/classify.ts): a device of the site or not. */
export interface ListenCaller {
  kind: "device" | "trunk" | "unknown";
  /** The device proved who it is (a registered flow or a digest challenge answered). */
  authenticated: boolean;
  /** The device's owner; undefined for a device without one. */
  userId?: string | undefined;
}

function listener(caller: ListenCaller, index: SiteIndex): string | undefined {
  if (caller === null || typeof caller !== "object") return undefined;
  if (caller.kind !== "device" || caller.authenticated !== true || typeof caller.userId !== "string") return undefined;
  return index.usersById.has(caller.userId) ? caller.userId : undefined;
}

/** May this caller listen to this mailbox? */
export function mayListen(caller: ListenCaller, mailbox: MailboxOwner, index: SiteIndex): boolean {
  const userId = listener(caller, index);
  if (userId === undefined || mailbox === null || typeof mailbox !== "object") return false;
  if (mailbox.kind === "user") return mailbox.id === userId;
  if (mailbox.kind === "group") return index.groupsById.get(mailbox.id)?.members.includes(userId) === true;
  return false;
}

/** The mailboxes the voicemail code opens for a caller, in the order they play; none for a stranger. */
export function listenableMailboxes(caller: ListenCaller, index: SiteIndex): MailboxOwner[] {
  const userId = listener(caller, index);
  return userId === undefined ? [] : mailboxesOfUser(userId, index);
}

/** What the voicemail code decides before anything is answered (the routing engine answers a refusal). */
export type ListenDecision = { ok: true; mailboxes: MailboxOwner[] } | { ok: false; status: 403 | 404; reason: string };

/**
 * The voicemail code dialled (`selector`: what followed it; "" for the code alone, else an
 * extension or a group number naming one mailbox). Refused before any answer:
 * - 403 not a device of the site, not authenticated, no owner (or an owner the site does not
 *   know), or a mailbox that is not the caller's (another user's, a group they are not in);
 * - 404 a selector that names no user or group, a mailbox not enabled, or a caller none of
 *   whose mailboxes is enabled.
 * Otherwise the mailboxes that play, in order: the code alone opens every enabled one of the
 * caller's (listenableMailboxes), the code and a number that one.
 */
export function decideListen(caller: ListenCaller, selector: string, index: SiteIndex, enabled: (o: MailboxOwner) => boolean): ListenDecision {
  if (caller === null || typeof caller !== "object" || caller.kind !== "device") return { ok: false, status: 403, reason: "Voicemail only from a phone of the site" };
  if (caller.authenticated !== true) return { ok: false, status: 403, reason: "Phone not authenticated" };
  if (typeof caller.userId !== "string" || !index.usersById.has(caller.userId)) return { ok: false, status: 403, reason: "Phone has no owner" };
  if (typeof selector !== "string") return { ok: false, status: 404, reason: "No such mailbox" };
  if (selector === "") {
    const mine = listenableMailboxes(caller, index).filter((o) => enabled(o));
    return mine.length > 0 ? { ok: true, mailboxes: mine } : { ok: false, status: 404, reason: "No mailbox" };
  }
  const user = index.usersByExtension.get(selector);
  const group = user === undefined ? index.groupsByNumber.get(selector) : undefined;
  const owner: MailboxOwner | undefined = user !== undefined ? { kind: "user", id: user.id } : group !== undefined ? { kind: "group", id: group.id } : undefined;
  if (owner === undefined) return { ok: false, status: 404, reason: "No such mailbox" };
  if (!mayListen(caller, owner, index)) return { ok: false, status: 403, reason: "Not your mailbox" };
  if (!enabled(owner)) return { ok: false, status: 404, reason: "Mailbox not enabled" };
  return { ok: true, mailboxes: [owner] };
}
