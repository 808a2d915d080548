// BLF (busy lamp field): the dialog event package, RFC 4235, on the subscription mechanism
// (agent/sip/subscriptions.ts). A phone's BLF key subscribes to a colleague (`SUBSCRIBE
// sip:<extension>@<agent>`, Event: dialog) and its lamp follows the NOTIFYs: an early dialog
// with direction="recipient" blinks (ringing, pick-up possible), a confirmed dialog or one the
// user initiated is steady (busy), none is off.
//
// Decisions:
// - The state comes from the routing engine's bus events, never from polling: call.placed
//   (the user's phone called out: initiator, "trying"), call.offered (ringing: recipient,
//   "early"), call.ringing (the ringing phone's To tag), call.offer-ended (stopped ringing:
//   "terminated"), call.answered ("confirmed" for who answered and for the caller, "terminated"
//   for the others offered), call.ended (everything of the call "terminated").
// - Listeners only update maps; NOTIFYs go out from a setImmediate flush, so nothing on the
//   routing hot path waits for XML or sockets, and a burst of events is one NOTIFY per watcher.
// - Each NOTIFY is the full state (state="full", RFC 4235 §4.1); a dialog that ended is listed
//   once as "terminated" and then dropped.
// - The dialog a phone needs for pickup is the caller's, as the agent (a proxy) sees it: the
//   call's Call-ID, the caller's From tag as remote-tag and the ringing phone's To tag as
//   local-tag, the view of the monitored user's phone. An INVITE with Replaces built from
//   them is matched by the routing engine (engine.ts replacesPickup).
// - <remote><identity> names the caller of a ringing or answered call (phones show who is
//   calling the colleague); a user's own outgoing call shows no number (that stays theirs).
// - Resources are users: `<extension>` or `<user id>` as Request-URI user part.
// - State keys (issue 14): a BLF key on an operator-state code (`*78`, `*45601`...; the site's
//   featureCodes) shows whether that code's state is in effect for the subscribing phone's own
//   operator (operator-state.ts codeInEffect): one "confirmed" dialog (steady lamp) when it is,
//   none (off) when not; pressing the key dials the code. Updated on every operator.state and
//   site change. A code that is malformed, or a device without an operator, gets 404.
import { ChangeBatch } from "./change-batch.ts";
import type { EventBus } from "../bus.ts";
import type { Group, SiteIndex } from "../routing/model.ts";
import { codeInEffect, parseOperatorCode, type FeatureCodes, type OperatorCode, type OperatorState } from "../routing/operator-state.ts";
import type { EventPackage } from "../sip/subscriptions.ts";
import { parseUri, unescapeUser } from "../sip/uri.ts";

export const DIALOG_EVENT = "dialog";
export const DIALOG_INFO_TYPE = "application/dialog-info+xml";

export type DialogStateName = "trying" | "proceeding" | "early" | "confirmed" | "terminated";

/** One <dialog> element (RFC 4235 §4.1.1). */
export interface DialogView {
  id: string;
  callId: string;
  localTag?: string;
  remoteTag?: string;
  direction: "initiator" | "recipient";
  state: DialogStateName;
  /** The other party as people read it (caller's number or name, the number dialled). */
  remote?: string;
}

/** Drops characters XML 1.0 cannot carry at all (§2.2 Char): controls, U+FFFE/FFFF, lone surrogates. */
function xmlChars(text: string): string {
  return text.replace(/[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\u{10000}-\u{10ffff}]/gu, "");
}

/** XML 1.0 text/attribute escaping; characters XML cannot carry at all are dropped. */
export function escapeXml(text: string): string {
  return xmlChars(text)
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;")
    .replace(/'/g, "&apos;");
}

/** Percent-encodes what may not stand in a SIP URI user part (RFC 3261 §25.1 user). */
export function uriUser(text: string): string {
  return text.replace(/[^A-Za-z0-9\-_.!~*'()&=+$,;?/]/g, (c) => encodeURIComponent(c));
}

/**
 * The application/dialog-info+xml document (RFC 4235 §4): a pure function of its input.
 * `host` qualifies remote identities (sip:<remote>@<host>).
 */
export function renderDialogInfo(input: { entity: string; version: number; dialogs: readonly DialogView[]; host: string }): string {
  const lines = [
    '<?xml version="1.0" encoding="UTF-8"?>',
    `<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="${input.version}" state="full" entity="${escapeXml(input.entity)}">`,
  ];
  for (const d of input.dialogs) {
    const attrs = [`id="${escapeXml(d.id)}"`, `call-id="${escapeXml(d.callId)}"`];
    if (d.localTag !== undefined && d.localTag !== "") attrs.push(`local-tag="${escapeXml(d.localTag)}"`);
    if (d.remoteTag !== undefined && d.remoteTag !== "") attrs.push(`remote-tag="${escapeXml(d.remoteTag)}"`);
    attrs.push(`direction="${d.direction}"`);
    lines.push(`  <dialog ${attrs.join(" ")}>`);
    lines.push(`    <state>${d.state}</state>`);
    if (d.remote !== undefined && d.remote !== "") {
      const uri = `sip:${uriUser(xmlChars(d.remote))}@${input.host}`;
      lines.push("    <remote>", `      <identity display="${escapeXml(d.remote)}">${escapeXml(uri)}</identity>`, "    </remote>");
    }
    lines.push("  </dialog>");
  }
  lines.push("</dialog-info>", "");
  return lines.join("\n");
}

// --- state from the engine's events -----------------------------------------------------------

const DIRECTIONS: ReadonlyArray<DialogView["direction"]> = ["initiator", "recipient"];

interface Entry extends DialogView {
  readonly userId: string;
}

/**
 * Dialogs per user, kept from the routing engine's events. Pure bookkeeping (no I/O, no
 * clock): each apply returns the user ids whose dialogs changed.
 */
export class DialogStates {
  /** userId → entry key (`callId\ndirection`) → entry. */
  private readonly byUser = new Map<string, Map<string, Entry>>();
  /** callId → user ids with an entry for it. */
  private readonly byCall = new Map<string, Set<string>>();
  /** userId → keys of its entries in state "terminated", not swept yet. */
  private readonly terminated = new Map<string, Set<string>>();
  private nextId = 1;

  dialogsOf(userId: string): DialogView[] {
    const m = this.byUser.get(userId);
    return m === undefined ? [] : [...m.values()].map(({ userId: _u, ...view }) => view);
  }

  /** Users with any dialog (tests, status). */
  users(): string[] {
    return [...this.byUser.keys()];
  }

  placed(e: { callId: string; callerTag: string; userId: string | undefined; target: string }): string[] {
    if (e.userId === undefined) return [];
    // No remote identity: the number a colleague dialled is theirs, not every watcher's.
    this.put(e.userId, e.callId, "initiator", { state: "trying", localTag: e.callerTag });
    return [e.userId];
  }

  offered(e: { callId: string; memberId: string; caller: string; callerTag?: string }): string[] {
    const cur = this.get(e.memberId, e.callId, "recipient");
    if (cur !== undefined && cur.state !== "terminated") return [];
    this.put(e.memberId, e.callId, "recipient", { state: "early", remoteTag: e.callerTag ?? "", remote: e.caller });
    return [e.memberId];
  }

  ringing(e: { callId: string; memberId: string | undefined; calleeTag: string }): string[] {
    if (e.memberId === undefined) return [];
    const cur = this.get(e.memberId, e.callId, "recipient");
    if (cur === undefined || cur.state === "terminated" || (cur.localTag ?? "") !== "") return [];
    cur.localTag = e.calleeTag;
    return [e.memberId];
  }

  offerEnded(e: { callId: string; memberId: string }): string[] {
    const cur = this.get(e.memberId, e.callId, "recipient");
    if (cur === undefined || cur.state !== "early") return [];
    this.terminate(cur);
    return [e.memberId];
  }

  answered(e: { callId: string; memberId: string | undefined; caller: string }): string[] {
    const changed = new Set<string>();
    for (const userId of this.byCall.get(e.callId) ?? []) {
      // A user has at most one entry per call and direction: look them up, never scan the
      // user's other calls (a member of a busy group has dozens in flight).
      for (const direction of DIRECTIONS) {
        const entry = this.get(userId, e.callId, direction);
        if (entry === undefined || entry.state === "terminated") continue;
        const next: DialogStateName = entry.direction === "initiator" || userId === e.memberId ? "confirmed" : "terminated";
        if (entry.state !== next) {
          if (next === "terminated") this.terminate(entry);
          else entry.state = next;
          changed.add(userId);
        }
      }
    }
    // Who answered without having been offered (a pickup) gets their dialog now.
    if (e.memberId !== undefined && this.get(e.memberId, e.callId, "recipient") === undefined) {
      this.put(e.memberId, e.callId, "recipient", { state: "confirmed", remote: e.caller });
      changed.add(e.memberId);
    }
    return [...changed];
  }

  ended(e: { callId: string }): string[] {
    const changed: string[] = [];
    for (const userId of this.byCall.get(e.callId) ?? []) {
      let any = false;
      for (const direction of DIRECTIONS) {
        const entry = this.get(userId, e.callId, direction);
        if (entry !== undefined && entry.state !== "terminated") {
          this.terminate(entry);
          any = true;
        }
      }
      if (any) changed.push(userId);
    }
    return changed;
  }

  /** Drops the user's terminated dialogs (after they were notified once). Visits only those:
   *  a member of a busy group has many live dialogs, and this runs after every notification. */
  sweep(userId: string): void {
    const dead = this.terminated.get(userId);
    if (dead === undefined) return;
    this.terminated.delete(userId);
    const m = this.byUser.get(userId);
    if (m === undefined) return;
    for (const k of dead) {
      const entry = m.get(k);
      if (entry === undefined || entry.state !== "terminated") continue;
      m.delete(k);
      const users = this.byCall.get(entry.callId);
      if (users !== undefined && !DIRECTIONS.some((d) => m.has(`${entry.callId}\n${d}`))) {
        users.delete(userId);
        if (users.size === 0) this.byCall.delete(entry.callId);
      }
    }
    if (m.size === 0) this.byUser.delete(userId);
  }

  private terminate(entry: Entry): void {
    entry.state = "terminated";
    const key = `${entry.callId}\n${entry.direction}`;
    const dead = this.terminated.get(entry.userId);
    if (dead === undefined) this.terminated.set(entry.userId, new Set([key]));
    else dead.add(key);
  }

  private get(userId: string, callId: string, direction: DialogView["direction"]): Entry | undefined {
    return this.byUser.get(userId)?.get(`${callId}\n${direction}`);
  }

  private put(userId: string, callId: string, direction: DialogView["direction"], fields: Pick<DialogView, "state"> & Partial<DialogView>): void {
    let m = this.byUser.get(userId);
    if (m === undefined) this.byUser.set(userId, (m = new Map()));
    m.set(`${callId}\n${direction}`, { id: `d${this.nextId++}`, callId, direction, userId, ...fields });
    let users = this.byCall.get(callId);
    if (users === undefined) this.byCall.set(callId, (users = new Set()));
    users.add(userId);
  }
}

// --- the feature ---------------------------------------------------------------------------------

export interface BlfDeps {
  bus: EventBus;
  /** The current site (users by extension and id). */
  site: () => SiteIndex;
  /** The subscription mechanism: told which users changed. */
  subscriptions: { addPackage(pkg: EventPackage): void; changed(event: string, resource: string): void };
  /** Operators' own state, for BLF keys on state codes. Absent: only users resolve. */
  operators?: {
    get(userId: string): Pick<OperatorState, "availability" | "loggedOutOf"> | undefined;
    featureCodes(): Partial<FeatureCodes> | undefined;
  };
}

/** A BLF key on a state code, for one operator. */
interface StateKey {
  userId: string;
  dialled: string;
  code: Extract<OperatorCode, { ok: true }>;
}

/** The dialog event package: registered on the subscription manager, fed by the bus. */
export class BlfNotifier {
  readonly states = new DialogStates();
  /** Lamps changed in this turn of the event loop, notified once each at the next. */
  private readonly changes: ChangeBatch;
  private readonly unsubscribe: Array<() => void> = [];
  /** Keyed by resource ("<user id> <code>", a space no id has): the state keys subscribed to. */
  private readonly stateKeys = new Map<string, StateKey>();
  /** Keyed by user id: the resources of their state keys. */
  private readonly stateKeysByUser = new Map<string, Set<string>>();

  constructor(private readonly deps: BlfDeps) {
    this.changes = new ChangeBatch((user) => {
      deps.subscriptions.changed(DIALOG_EVENT, user);
      this.states.sweep(user);
    });
  }

  start(): void {
    this.deps.subscriptions.addPackage(this.eventPackage());
    const bus = this.deps.bus;
    const s = this.states;
    this.unsubscribe.push(
      bus.on("call.placed", (e) => this.changes.mark(s.placed(e))),
      bus.on("call.offered", (e) => this.changes.mark(s.offered(e))),
      bus.on("call.ringing", (e) => this.changes.mark(s.ringing(e))),
      bus.on("call.offer-ended", (e) => this.changes.mark(s.offerEnded(e))),
      bus.on("call.answered", (e) => this.changes.mark(s.answered(e))),
      bus.on("call.ended", (e) => this.changes.mark(s.ended(e))),
      bus.on("operator.state", (e) => this.changes.mark([...(this.stateKeysByUser.get(e.userId) ?? [])])),
      // Group numbers and memberships may have changed under a key.
      bus.on("site.applied", () => this.changes.mark([...this.stateKeys.keys()])),
    );
  }

  stop(): void {
    for (const u of this.unsubscribe.splice(0)) u();
    this.changes.clear();
  }

  /** The package the subscription manager serves for Event: dialog. */
  eventPackage(): EventPackage {
    return {
      event: DIALOG_EVENT,
      contentType: DIALOG_INFO_TYPE,
      // RFC 4235 §3.3: the default subscription duration is 3600 s.
      defaultExpires: 3600,
      resolve: (requestUri, host, subscriber) => resolveUser(requestUri, host, this.deps.site()) ?? this.resolveStateKey(requestUri, host, subscriber.userId),
      render: (resource, entity, version) => {
        const key = this.stateKeys.get(resource);
        const dialogs = key === undefined ? this.states.dialogsOf(resource) : this.stateDialogs(key);
        return renderDialogInfo({ entity, version, dialogs, host: hostOfEntity(entity) });
      },
    };
  }

  /** A state code as BLF resource, for the subscriber's own operator. */
  private resolveStateKey(requestUri: string, host: string, userId: string | undefined): { resource: string; entity: string } | undefined {
    const ops = this.deps.operators;
    if (ops === undefined || userId === undefined) return undefined;
    const uri = parseUri(requestUri);
    if (uri === undefined || (uri.scheme !== "sip" && uri.scheme !== "sips") || uri.user === undefined) return undefined;
    let dialled: string;
    try {
      dialled = unescapeUser(uri.user);
    } catch {
      return undefined;
    }
    const code = parseOperatorCode(dialled, ops.featureCodes());
    if (code === undefined || !code.ok) return undefined;
    const resource = `${userId} ${dialled}`;
    if (!this.stateKeys.has(resource)) {
      this.stateKeys.set(resource, { userId, dialled, code });
      let set = this.stateKeysByUser.get(userId);
      if (set === undefined) this.stateKeysByUser.set(userId, (set = new Set()));
      set.add(resource);
    }
    return { resource, entity: `sip:${uriUser(dialled)}@${host}` };
  }

  /** One confirmed dialog while the key's state is in effect, none otherwise. */
  private stateDialogs(key: StateKey): DialogView[] {
    const state = this.deps.operators?.get(key.userId);
    if (state === undefined) return [];
    const index = this.deps.site();
    const groupsOf: Group[] = [];
    for (const g of index.groupsById.values()) if (g.members.includes(key.userId)) groupsOf.push(g);
    if (!codeInEffect(state, key.code, index.groupsByNumber, groupsOf)) return [];
    return [{ id: "state", callId: `state-${key.dialled}`, direction: "initiator", state: "confirmed" }];
  }
}

/** The user a BLF Request-URI names: its user part is an extension or a user id. */
export function resolveUser(requestUri: string, host: string, index: SiteIndex): { resource: string; entity: string } | undefined {
  const uri = parseUri(requestUri);
  if (uri === undefined || (uri.scheme !== "sip" && uri.scheme !== "sips") || uri.user === undefined) return undefined;
  let name: string;
  try {
    name = unescapeUser(uri.user);
  } catch {
    return undefined;
  }
  const user = index.usersByExtension.get(name) ?? index.usersById.get(name);
  if (user === undefined) return undefined;
  return { resource: user.id, entity: `sip:${uriUser(user.extension)}@${host}` };
}

function hostOfEntity(entity: string): string {
  const at = entity.lastIndexOf("@");
  return at < 0 ? "localhost" : entity.slice(at + 1);
}
