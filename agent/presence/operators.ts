// Operators' own state, the shell around routing/operator-state.ts: holds every operator's
// availability and the groups they logged out of, answers their phones' feature codes (through
// the routing engine, which admitted the INVITE), merges every applied site snapshot (console
// push or site file) with the later-change-wins rule, keeps it in the store (write-behind), and
// reports each change on the bus ("operator.state": the console sync sends it as an event, the
// routing engine offers waiting calls to an operator who came back).
//
// Routing reads two maps kept here incrementally (PresenceSnapshot.availability / .loggedOut),
// so the next ring plan after a change already sees it; nothing is rebuilt per call.
import type { EventBus } from "../bus.ts";
import type { Logger } from "../log.ts";
import type { Availability, Group, SiteIndex } from "../routing/model.ts";
import { applyOperatorCode, mergeSnapshot, sameOperatorStates, type OperatorCode, type OperatorState, type SnapshotUser } from "../routing/operator-state.ts";
import type { SiteRecord } from "../site/types.ts";
import type { StoreResult } from "../store/store.ts";

export interface OperatorServiceOptions {
  store: {
    listOperatorStates(): readonly Readonly<OperatorState>[];
    setOperatorStates(states: readonly OperatorState[]): StoreResult<number>;
  };
  /** The applied site (record and index), read at each change. */
  site: () => { record: Readonly<SiteRecord> | null; index: SiteIndex };
  bus: EventBus;
  log: Logger;
  now?: () => number;
}

/** The answer to a feature code: the final status and the words for the phone's display. */
export interface CodeAnswer {
  status: number;
  text: string;
}

export class OperatorStates {
  /** Keyed by user id: the operator's availability now (routing reads it). */
  readonly availability = new Map<string, Availability>();
  /** Keyed by user id: ids of the groups the operator is logged out of (only operators with some). */
  readonly loggedOut = new Map<string, Set<string>>();
  /** Keyed by user id: the full state, as stored. */
  private states = new Map<string, OperatorState>();
  private unsubscribe: (() => void) | undefined;
  private readonly now: () => number;

  constructor(private readonly opts: OperatorServiceOptions) {
    this.now = opts.now ?? Date.now;
  }

  /** Loads the stored state and merges the applied site into it (a crash between the two is mended here). */
  start(): void {
    this.states = new Map(this.opts.store.listOperatorStates().map((s) => [s.userId, structuredClone(s) as OperatorState]));
    this.reconcile(false);
    this.unsubscribe = this.opts.bus.on("site.applied", () => this.reconcile(true));
  }

  stop(): void {
    this.unsubscribe?.();
    this.unsubscribe = undefined;
  }

  /** Every operator's state, in site order. */
  list(): OperatorState[] {
    // A copy the caller may change (the sync publishes it with every presence report, after
    // every push): the states are plain JSON, two arrays deep, so spreads copy them whole, at
    // a fraction of structuredClone's cost.
    return [...this.states.values()].map((s) => ({ ...s, loggedOutOf: [...s.loggedOutOf], pushed: { ...s.pushed, loggedOutOf: [...s.pushed.loggedOutOf] } }));
  }

  get(userId: string): Readonly<OperatorState> | undefined {
    return this.states.get(userId);
  }

  /**
   * A feature code dialled by a site device whose owner is `userId` (the engine admitted it).
   * Changes the state at once and answers with what the phone should show.
   */
  onCode(code: OperatorCode, caller: { deviceId: string; userId: string }): CodeAnswer {
    if (!code.ok) return { status: 404, text: code.reason };
    const site = this.opts.site();
    const state = this.states.get(caller.userId);
    if (state === undefined || !site.index.usersById.has(caller.userId)) return { status: 403, text: "Not an operator of this site" };
    const groupsOf: Group[] = [];
    for (const g of site.index.groupsById.values()) if (g.members.includes(caller.userId)) groupsOf.push(g);
    const r = applyOperatorCode(state, code, { groupsByNumber: site.index.groupsByNumber, groupsOf, deviceId: caller.deviceId, now: this.now() });
    if (!r.ok) return { status: r.status, text: r.text };
    if (r.changed) {
      this.states.set(caller.userId, r.state);
      this.index(r.state);
      this.save();
      this.opts.log.info("operator state changed from a phone", { user: caller.userId, device: caller.deviceId, availability: r.state.availability, loggedOutOf: r.state.loggedOutOf.join(",") || undefined });
      this.report(r.state);
    }
    // RFC 3261 §21.4.18 480: "... in a state that precludes communication with the callee, or has
    // activated the 'do not disturb' feature": the code ends here, no call is set up (no media to
    // confirm with); the reason phrase (§7.2, for the human user) says what happened.
    return { status: 480, text: r.text };
  }

  /** Merges the applied site; reports the changes when `report` (not at start-up: nothing is new then but the merge of a crash). */
  private reconcile(report: boolean): void {
    const record = this.opts.site().record;
    const users: readonly SnapshotUser[] = record?.users ?? [];
    const merged = mergeSnapshot({ states: this.states, users, groups: record?.groups ?? [], source: record?.source ?? "file", now: this.now() });
    const before = [...this.states.values()];
    this.states = new Map(merged.states.map((s) => [s.userId, s]));
    this.availability.clear();
    this.loggedOut.clear();
    for (const s of merged.states) this.index(s);
    if (!sameOperatorStates(merged.states, before)) this.save();
    for (const id of merged.changed) {
      const s = this.states.get(id);
      if (s === undefined) continue;
      this.opts.log.info("operator state changed by the site", { user: id, source: s.source, availability: s.availability, loggedOutOf: s.loggedOutOf.join(",") || undefined });
      if (report) this.report(s);
    }
  }

  private index(s: OperatorState): void {
    this.availability.set(s.userId, s.availability);
    if (s.loggedOutOf.length > 0) this.loggedOut.set(s.userId, new Set(s.loggedOutOf));
    else this.loggedOut.delete(s.userId);
  }

  private save(): void {
    const r = this.opts.store.setOperatorStates([...this.states.values()]);
    if (!r.ok) this.opts.log.error("operator state not saved", { reason: r.error.message });
  }

  private report(s: OperatorState): void {
    this.opts.bus.emit("operator.state", {
      userId: s.userId,
      availability: s.availability,
      loggedOutOf: [...s.loggedOutOf],
      source: s.source,
      ...(s.source === "phone" && s.deviceId !== undefined ? { deviceId: s.deviceId } : {}),
      at: s.changedAt,
    });
  }
}
