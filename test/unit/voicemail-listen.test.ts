// Listening to voicemail, the pure parts: who may listen to which mailbox
// (agent/voicemail/access.ts) and the menu's decision core (agent/voicemail/listen-menu.ts):
// what plays next and which store operation follows each digit, timeout and end of playback.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { indexSite, parseSite, type SiteIndex } from "../../agent/routing/model.ts";
import { listenableMailboxes, mailboxesOfUser, mayListen, type ListenCaller } from "../../agent/voicemail/access.ts";
import { initialState, listenQueue, listenStep, MAX_PROMPTS, type ListenAction, type ListenInput, type ListenMessage, type ListenState, type StoreOp } from "../../agent/voicemail/listen-menu.ts";
import type { MailboxOwner } from "../../agent/voicemail/types.ts";

function site(): SiteIndex {
  const r = parseSite({
    users: [
      { id: "anna", extension: "1001", name: "A", availability: "available", callLimit: 0 },
      { id: "ben", extension: "1002", name: "B", availability: "available", callLimit: 0 },
    ],
    devices: [],
    groups: [
      { id: "sales", number: "601", name: "Sales", strategy: "simultaneous", members: ["anna", "ben"], ringCount: 2, checkAvailability: false, noAnswer: { kind: "hangup" } },
      { id: "night", number: "602", name: "Night", strategy: "simultaneous", members: ["ben"], ringCount: 2, checkAvailability: false, noAnswer: { kind: "hangup" } },
    ],
  });
  if (!r.ok) throw new Error("fixture");
  return indexSite(r.site);
}

const ANNA: MailboxOwner = { kind: "user", id: "anna" };
const BEN: MailboxOwner = { kind: "user", id: "ben" };
const SALES: MailboxOwner = { kind: "group", id: "sales" };
const NIGHT: MailboxOwner = { kind: "group", id: "night" };

describe("who may listen (access.ts)", () => {
  const index = site();
  const anna: ListenCaller = { kind: "device", authenticated: true, userId: "anna" };
  it("the owner's own authenticated device: their own mailbox and their groups' mailboxes, in that order", () => {
    assert.equal(mayListen(anna, ANNA, index), true);
    assert.equal(mayListen(anna, SALES, index), true);
    assert.deepEqual(listenableMailboxes(anna, index), [ANNA, SALES]);
    assert.deepEqual(mailboxesOfUser("ben", index), [BEN, SALES, NIGHT]);
  });
  it("nobody else's: another user's mailbox, a group they are not in, a group that does not exist", () => {
    assert.equal(mayListen(anna, BEN, index), false);
    assert.equal(mayListen(anna, NIGHT, index), false);
    assert.equal(mayListen(anna, { kind: "group", id: "ghost" }, index), false);
  });
  it("strangers reach no mailbox: unauthenticated, ownerless or unknown-owner devices, the trunk, unknown sources, nonsense input", () => {
    const strangers: ListenCaller[] = [
      { kind: "device", authenticated: false, userId: "anna" },
      { kind: "device", authenticated: true },
      { kind: "device", authenticated: true, userId: "ghost" },
      { kind: "trunk", authenticated: true, userId: "anna" },
      { kind: "unknown", authenticated: false },
      { kind: "device", authenticated: "yes", userId: "anna" } as unknown as ListenCaller,
      null as unknown as ListenCaller,
    ];
    for (const c of strangers) {
      assert.equal(mayListen(c, ANNA, index), false, JSON.stringify(c));
      assert.deepEqual(listenableMailboxes(c, index), [], JSON.stringify(c));
    }
    assert.equal(mayListen(anna, { kind: "robot", id: "anna" } as unknown as MailboxOwner, index), false);
    assert.equal(mayListen(anna, null as unknown as MailboxOwner, index), false);
  });
});

const msg = (mailbox: MailboxOwner, id: string, status: "new" | "saved", receivedAt: number): ListenMessage => ({ mailbox, id, status, receivedAt });

describe("listenQueue: new first, own mailbox before the groups', oldest first", () => {
  it("orders and drops what is not in the caller's mailboxes or has no known status", () => {
    const all = [
      msg(SALES, "s-new", "new", 5),
      msg(ANNA, "a-saved", "saved", 1),
      msg(ANNA, "a-new-2", "new", 9),
      msg(NIGHT, "n-new", "new", 1),
      msg(ANNA, "a-new-1", "new", 3),
      msg(SALES, "s-saved", "saved", 0),
      { ...msg(ANNA, "weird", "new", 0), status: "deleted" } as unknown as ListenMessage,
    ];
    assert.deepEqual(listenQueue([ANNA, SALES], all).map((m) => m.id), ["a-new-1", "a-new-2", "s-new", "a-saved", "s-saved"]);
    assert.deepEqual(listenQueue([], all), []);
  });
});

/** Runs inputs from the start; returns every action and store operation, and the last state. */
function run(queue: ListenMessage[], inputs: ListenInput[]): { actions: ListenAction[]; store: StoreOp[]; state: ListenState } {
  let state = initialState(queue);
  const actions: ListenAction[] = [];
  const store: StoreOp[] = [];
  for (const input of [{ kind: "start" } as ListenInput, ...inputs]) {
    const s = listenStep(state, input);
    state = s.state;
    actions.push(...s.actions);
    store.push(...s.store);
  }
  return { actions, store, state };
}
const kinds = (a: ListenAction[]): string[] => a.map((x) => (x.kind === "play-message" ? `msg:${x.message.id}` : x.kind));
const played: ListenInput = { kind: "played" };
const digit = (d: string): ListenInput => ({ kind: "digit", digit: d });
const timeout: ListenInput = { kind: "timeout" };

describe("the listening menu (listen-menu.ts)", () => {
  const q = [msg(ANNA, "m1", "new", 1), msg(SALES, "m2", "new", 2), msg(ANNA, "m3", "saved", 0)];

  it("an empty mailbox: 'no messages', goodbye, hang up; later inputs change nothing", () => {
    const r = run([], [digit("1"), played]);
    assert.deepEqual(kinds(r.actions), ["play-empty", "play-goodbye", "hang-up"]);
    assert.equal(r.state.phase, "done");
    assert.deepEqual(r.store, []);
  });

  it("the summary counts new and saved; listening to the end of each message saves the new ones; after the last: no more, goodbye", () => {
    const r = run(q, [played, played, digit("#"), played, digit("#"), played, digit("#")]);
    assert.deepEqual(r.actions[0], { kind: "play-summary", newCount: 2, savedCount: 1 });
    assert.deepEqual(kinds(r.actions).slice(1), ["msg:m1", "play-options", "msg:m2", "play-options", "msg:m3", "play-options", "play-no-more", "play-goodbye", "hang-up"]);
    assert.deepEqual(r.store, [{ op: "save", mailbox: ANNA, id: "m1" }, { op: "save", mailbox: SALES, id: "m2" }], "the saved message is not saved again; each new one once");
    const third = r.actions.find((a) => a.kind === "play-message" && a.message.id === "m3");
    assert.deepEqual(third && third.kind === "play-message" ? [third.position, third.total] : [], [3, 3]);
  });

  it("1 repeats, 3 deletes and goes on, 2 saves and goes on; a digit during the summary starts the first message", () => {
    const r = run(q, [digit("2"), digit("1"), played, digit("3"), digit("2")]);
    assert.deepEqual(kinds(r.actions), ["play-summary", "msg:m1", "msg:m1", "play-options", "play-deleted", "msg:m2", "play-saved", "msg:m3"]);
    assert.deepEqual(r.store, [{ op: "save", mailbox: ANNA, id: "m1" }, { op: "delete", mailbox: ANNA, id: "m1" }, { op: "save", mailbox: SALES, id: "m2" }]);
  });

  it("deleting a message while it plays (never heard): one delete, no save", () => {
    const r = run(q, [played, digit("3")]);
    assert.deepEqual(r.store, [{ op: "delete", mailbox: ANNA, id: "m1" }]);
  });

  it("skipping with # counts as heard; * ends at once; hanging up mid-message leaves it new (no store operation)", () => {
    assert.deepEqual(run(q, [played, digit("#")]).store, [{ op: "save", mailbox: ANNA, id: "m1" }]);
    const ended = run(q, [played, digit("*")]);
    assert.deepEqual(kinds(ended.actions), ["play-summary", "msg:m1", "play-goodbye", "hang-up"]);
    assert.deepEqual(ended.store, []);
    assert.equal(ended.state.phase, "done");
  });

  it("no choice after a message: the options again, at most MAX_PROMPTS in a row, then goodbye", () => {
    const r = run(q, [played, played, played, timeout, played, timeout, played, timeout, timeout]);
    assert.equal(MAX_PROMPTS, 3);
    assert.deepEqual(kinds(r.actions), ["play-summary", "msg:m1", "play-options", "play-options", "play-options", "play-goodbye", "hang-up"]);
    assert.equal(r.state.phase, "done");
  });

  it("a digit that means nothing: 'invalid' and the options; it counts toward the limit; a valid one resets it", () => {
    const r = run(q, [played, played, digit("7"), digit("9"), digit("1"), played, digit("0"), digit("0"), digit("0")]);
    assert.deepEqual(kinds(r.actions), ["play-summary", "msg:m1", "play-options", "play-invalid", "play-options", "play-invalid", "play-options", "msg:m1", "play-options", "play-invalid", "play-options", "play-invalid", "play-options", "play-invalid", "play-goodbye", "hang-up"]);
  });

  it("hostile or out-of-place inputs change nothing and never throw", () => {
    let state = initialState(q);
    for (const input of [played, timeout, digit("1"), digit(""), digit("12"), { kind: "bogus" } as unknown as ListenInput]) {
      const s = listenStep(state, input);
      assert.deepEqual([s.actions, s.store], [[], []], JSON.stringify(input));
      state = s.state;
    }
    assert.equal(state.phase, "idle");
    const started = listenStep(state, { kind: "start" });
    assert.equal(listenStep(started.state, { kind: "start" }).actions.length, 0, "a second start is ignored");
    // During a message, an unknown digit string is an invalid choice.
    const playing = listenStep(started.state, played).state;
    assert.deepEqual(kinds(listenStep(playing, { kind: "digit", digit: "12" }).actions), ["play-invalid", "play-options"]);
  });

  it("the state is never mutated (the mechanism may keep old states)", () => {
    const s0 = initialState(q);
    const frozen = JSON.stringify(s0);
    const s1 = listenStep(s0, { kind: "start" });
    listenStep(listenStep(s1.state, played).state, digit("3"));
    assert.equal(JSON.stringify(s0), frozen);
  });
});
