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
