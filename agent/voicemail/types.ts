// Voicemail's shared vocabulary: the mailbox store (voicemail deposits, listening, the CLI) and
// the message-waiting notifier (RFC 3842) meet here and nowhere else.

/** Whose mailbox: a user's own, or a group's (a group mailbox lights every member's lamp). */
export interface MailboxOwner {
  kind: "user" | "group";
  id: string;
}

/** New (unheard) and old (heard, saved) messages in one mailbox. */
export interface MailboxCounts {
  newMessages: number;
  oldMessages: number;
}

/** What the notifier asks the mailbox store at SUBSCRIBE time; changes arrive as voicemail.changed. */
export interface VoicemailCounts {
  /** undefined: no such mailbox (not enabled in the applied site). */
  counts(owner: MailboxOwner): MailboxCounts | undefined;
}
