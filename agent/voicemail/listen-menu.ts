// Listening to voicemail: the decision core of the menu a user reaches by dialling the voicemail
// code (settings.voicemailCode) from their own phone. Who may listen to which mailbox, and in
// which order the mailboxes play: access.ts.
// PURE: no I/O, no clock, no media. The answered-call mechanism (media engine, DTMF by RFC 4733
// or SIP INFO) feeds it inputs and carries out what it returns: prompts and messages to play,
// operations on the mailbox store, hanging up.
//
// Decisions:
// - What plays (listenQueue): every new message first, then every saved one; the user's own
//   mailbox before their groups' (site order), each mailbox's messages oldest first. The same
//   mailboxes as the lamp sums, so listening to everything turns the lamp off.
// - Digits while a message plays or after it (a digit cuts the prompt or message short):
//     1 repeat it, 2 save it and go on, 3 delete it and go on, # skip to the next (it counts as
//     heard), * end. During the greeting (the count of messages) any of 1 2 3 # starts the
//     first message at once; * ends.
// - A new message becomes saved (heard and kept: store op save) when it has played to its end
//   or the listener moves past it (2 save, # next); hanging up in the middle leaves it new.
//   Each store operation is asked at most once per message; an operation on a message that is
//   gone (a fellow group member deleted it meanwhile) is for the store to ignore.
// - After a message has played: the options prompt, then wait. No digit (timeout) or a digit
//   that means nothing: the options again, at most MAX_PROMPTS times in a row, then goodbye.
// - After the last message: "no more messages", goodbye, hang up. An empty mailbox: "no
//   messages", goodbye, hang up.
import type { MailboxOwner } from "./types.ts";

/** One message as the menu sees it. */
export interface ListenMessage {
  mailbox: MailboxOwner;
  id: string;
  /** new: not heard yet; saved: heard and kept. */
  status: "new" | "saved";
  /** Epoch ms it was left (oldest first within a mailbox). */
  receivedAt: number;
}

/** What the mechanism plays or does next, in order. */
export type ListenAction =
  | { kind: "play-summary"; newCount: number; savedCount: number }
  | { kind: "play-message"; message: ListenMessage; position: number; total: number }
  | { kind: "play-options" }
  | { kind: "play-invalid" }
  | { kind: "play-deleted" }
  | { kind: "play-saved" }
  | { kind: "play-no-more" }
  | { kind: "play-empty" }
  | { kind: "play-goodbye" }
  | { kind: "hang-up" };

/** Operations on the mailbox store: save = heard and kept (status saved); delete = gone. */
export type StoreOp = { op: "save" | "delete"; mailbox: MailboxOwner; id: string };

export type ListenInput =
  | { kind: "start" }
  /** The prompt or message that was playing reached its end. */
  | { kind: "played" }
  | { kind: "digit"; digit: string }
  /** Nothing was dialled within the wait after the options prompt. */
  | { kind: "timeout" };

export type ListenPhase = "idle" | "summary" | "message" | "options" | "done";

export interface ListenState {
  readonly queue: readonly ListenMessage[];
  /** Index of the current message in queue. */
  readonly index: number;
  readonly phase: ListenPhase;
  /** Options prompts in a row without a valid digit. */
  readonly prompts: number;
  /** "<op> <mailbox kind> <mailbox id> <message id>" of the store operations already asked. */
  readonly handled: readonly string[];
}

export interface ListenStep {
  state: ListenState;
  actions: ListenAction[];
  store: StoreOp[];
}

/** Options prompts in a row without a valid choice before the menu says goodbye. */
export const MAX_PROMPTS = 3;

const key = (m: ListenMessage): string => `${m.mailbox.kind} ${m.mailbox.id} ${m.id}`;

/** The order messages play in (see the decisions above); `mailboxes` in the order they rank. */
export function listenQueue(mailboxes: readonly MailboxOwner[], messages: readonly ListenMessage[]): ListenMessage[] {
  const rank = (m: ListenMessage): number => mailboxes.findIndex((o) => o.kind === m.mailbox.kind && o.id === m.mailbox.id);
  return messages
    .filter((m) => rank(m) >= 0 && (m.status === "new" || m.status === "saved"))
    .map((m, i) => ({ m, i }))
    .sort((a, b) => (a.m.status === b.m.status ? 0 : a.m.status === "new" ? -1 : 1) || rank(a.m) - rank(b.m) || a.m.receivedAt - b.m.receivedAt || a.i - b.i)
    .map(({ m }) => m);
}

export function initialState(queue: readonly ListenMessage[]): ListenState {
  return { queue: [...queue], index: 0, phase: "idle", prompts: 0, handled: [] };
}

/** One step of the menu. Never throws; an input that makes no sense in the phase changes nothing. */
export function listenStep(state: ListenState, input: ListenInput): ListenStep {
  const out: ListenStep = { state, actions: [], store: [] };
  if (state.phase === "done") return out;
  switch (input.kind) {
    case "start": {
      if (state.phase !== "idle") return out;
      if (state.queue.length === 0) return finish(state, out, [{ kind: "play-empty" }]);
      const newCount = state.queue.filter((m) => m.status === "new").length;
      out.state = { ...state, phase: "summary" };
      out.actions.push({ kind: "play-summary", newCount, savedCount: state.queue.length - newCount });
      return out;
    }
    case "played": {
      if (state.phase === "summary") return playCurrent(state, out);
      if (state.phase === "message") {
        // Played to its end: heard.
        const heard = markHeard(state, out);
        out.state = { ...heard, phase: "options", prompts: 1 };
        out.actions.push({ kind: "play-options" });
        return out;
      }
      return out; // the options prompt ended: waiting for a digit or the timeout
    }
    case "timeout": {
      if (state.phase !== "options") return out;
      return reprompt(state, out, []);
    }
    case "digit": {
      const d = input.digit;
      if (d === "*") return finish(state, out, []);
      if (state.phase === "summary") return ["1", "2", "3", "#"].includes(d) ? playCurrent(state, out) : out;
      if (state.phase !== "message" && state.phase !== "options") return out;
      const current = state.queue[state.index];
      if (current === undefined) return finish(state, out, [{ kind: "play-no-more" }]);
      switch (d) {
        case "1":
          return playCurrent({ ...state, prompts: 0 }, out);
        case "2": {
          const s = apply(state, out, "save", current);
          out.actions.push({ kind: "play-saved" });
          return next(s, out);
        }
        case "3": {
          const s = apply(state, out, "delete", current);
          out.actions.push({ kind: "play-deleted" });
          return next(s, out);
        }
        case "#":
          return next(markHeard(state, out), out);
        default:
          return reprompt(state, out, [{ kind: "play-invalid" }]);
      }
    }
  }
  return out; // an input of no known kind
}

function playCurrent(state: ListenState, out: ListenStep): ListenStep {
  const message = state.queue[state.index];
  if (message === undefined) return finish(state, out, [{ kind: "play-no-more" }]);
  out.state = { ...state, phase: "message" };
  out.actions.push({ kind: "play-message", message, position: state.index + 1, total: state.queue.length });
  return out;
}

function next(state: ListenState, out: ListenStep): ListenStep {
  return playCurrent({ ...state, index: state.index + 1, prompts: 0 }, out);
}

function reprompt(state: ListenState, out: ListenStep, before: ListenAction[]): ListenStep {
  if (state.prompts >= MAX_PROMPTS) return finish(state, out, before);
  out.state = { ...state, phase: "options", prompts: state.prompts + 1 };
  out.actions.push(...before, { kind: "play-options" });
  return out;
}

function finish(state: ListenState, out: ListenStep, before: ListenAction[]): ListenStep {
  out.state = { ...state, phase: "done" };
  out.actions.push(...before, { kind: "play-goodbye" }, { kind: "hang-up" });
  return out;
}

/** A new current message counts as heard: saved (once). */
function markHeard(state: ListenState, out: ListenStep): ListenState {
  const m = state.queue[state.index];
  return m === undefined ? state : apply(state, out, "save", m);
}

/** Asks the store once per message: nothing after a delete, no save of a saved message. */
function apply(state: ListenState, out: ListenStep, op: StoreOp["op"], m: ListenMessage): ListenState {
  const k = key(m);
  if (state.handled.includes(`delete ${k}`)) return state;
  if (op === "save" && (m.status === "saved" || state.handled.includes(`save ${k}`))) return state;
  out.store.push({ op, mailbox: m.mailbox, id: m.id });
  return { ...state, handled: [...state.handled, `${op} ${k}`] };
}
