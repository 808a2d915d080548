// Operators' own state (issue 14): feature code parsing, the site's code checks, what a code
// does to the state, the later-change-wins merge of site snapshots, routing's use of the state,
// the service (store, bus) and hostile input at every door.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import { EventBus, type AgentEvents } from "../../agent/bus.ts";
import { admit, resolveDestination } from "../../agent/routing/classify.ts";
import { indexSite, type DeviceRef, type Group, type User } from "../../agent/routing/model.ts";
import {
  DEFAULT_FEATURE_CODES,
  applyOperatorCode,
  checkFeatureCodes,
  codeInEffect,
  mergeSnapshot,
  parseOperatorCode,
  sameOperatorStates,
  type OperatorCode,
  type OperatorState,
  type SnapshotUser,
} from "../../agent/routing/operator-state.ts";
import { groupAllOffline, planStep, selectFreeOperator, startCall, type PresenceSnapshot } from "../../agent/routing/plan.ts";
import { OperatorStates } from "../../agent/presence/operators.ts";
import { BlfNotifier } from "../../agent/presence/blf.ts";
import type { EventPackage } from "../../agent/sip/subscriptions.ts";
import { checkSiteConfig, SiteService } from "../../agent/site/site.ts";
import { Store } from "../../agent/store/store.ts";
import { validatePayload } from "../../agent/contract.ts";
import { tempDir } from "../tmpdir.ts";

const T0 = 1_700_000_000_000;
const EXAMPLE = JSON.parse(fs.readFileSync(new URL("../../examples/site.json", import.meta.url), "utf8")) as Record<string, any>;

function user(id: string, extension: string, over: Partial<User> = {}): User {
  return { id, extension, name: `User ${id}`, availability: "available", callLimit: 0, ...over };
}
function group(id: string, number: string, members: string[], over: Partial<Group> = {}): Group {
  return { id, number, name: id, strategy: "sequential", members, ringCount: 1, checkAvailability: false, noAnswer: { kind: "hangup" }, ...over };
}
const ok = (code: OperatorCode | undefined): Extract<OperatorCode, { ok: true }> => {
  assert.ok(code !== undefined && code.ok, `a valid code: ${JSON.stringify(code)}`);
  return code;
};
function state(userId: string, over: Partial<OperatorState> = {}): OperatorState {
  return { userId, availability: "available", loggedOutOf: [], changedAt: T0, source: "file", pushed: { availability: "available", loggedOutOf: [] }, ...over };
}

describe("feature codes: parsing", () => {
  test("the default codes, with and without a group number", () => {
    assert.deepEqual(parseOperatorCode("*41"), { ok: true, action: "away" });
    assert.deepEqual(parseOperatorCode("*42"), { ok: true, action: "back" });
    assert.deepEqual(parseOperatorCode("*78"), { ok: true, action: "dndOn" });
    assert.deepEqual(parseOperatorCode("*79"), { ok: true, action: "dndOff" });
    assert.deepEqual(parseOperatorCode("*45"), { ok: true, action: "login" });
    assert.deepEqual(parseOperatorCode("*46601"), { ok: true, action: "logout", groupNumber: "601" });
    assert.deepEqual(parseOperatorCode("*457"), { ok: true, action: "login", groupNumber: "7" });
  });

  test("anything that is not a code is left to routing", () => {
    for (const s of ["601", "1001", "+4930123", "*8", "*81001", "*4", "*7", "", "#", "*99"]) assert.equal(parseOperatorCode(s), undefined, s);
  });

  test("a code followed by what it does not take is refused, not routed", () => {
    const r = parseOperatorCode("*419");
    assert.equal(r?.ok, false);
    assert.match(r!.ok ? "" : r!.reason, /\*41 takes nothing after it/);
    for (const s of ["*4512345", "*45*601", "*45#", "*46abc", "*7801"]) assert.equal(parseOperatorCode(s)?.ok, false, s);
  });

  test("site codes replace the defaults one by one", () => {
    const codes = { away: "#1", login: "##7" };
    assert.deepEqual(parseOperatorCode("#1", codes), { ok: true, action: "away" });
    assert.deepEqual(parseOperatorCode("##7602", codes), { ok: true, action: "login", groupNumber: "602" });
    assert.equal(parseOperatorCode("*41", codes), undefined, "the replaced default no longer works");
    assert.deepEqual(parseOperatorCode("*78", codes), { ok: true, action: "dndOn" }, "the others keep their defaults");
  });

  test("the Request-URI reaches the code; trunks and ownerless devices may not use it", () => {
    const idx = indexSite({ users: [user("a", "201")], devices: [], groups: [group("g", "601", ["a"])] });
    const d = resolveDestination("sip:*46601@10.0.0.1", idx, "*8");
    assert.deepEqual(d, { kind: "operator", code: { ok: true, action: "logout", groupNumber: "601" } });
    assert.deepEqual(resolveDestination("sip:%2A78@10.0.0.1", idx, "*8"), { kind: "operator", code: { ok: true, action: "dndOn" } }, "escaped * (RFC 3261 §19.1.2)");
    assert.equal(resolveDestination("sip:*78@10.0.0.1", idx, "*8", undefined, { dndOn: "*70" }).kind, "outbound", "a replaced default dials out");
    assert.deepEqual(admit({ kind: "trunk" }, d), { ok: false, status: 403, reason: "Not relaying" });
    assert.equal(admit({ kind: "device", deviceId: "x", username: "x", userId: undefined, proof: "flow" }, d).ok, false);
    assert.deepEqual(admit({ kind: "device", deviceId: "x", username: "x", userId: "a", proof: "flow" }, d), { ok: true });
  });
});

describe("feature codes: the site's settings", () => {
  const numbers = { extensions: ["1001", "1002"], groupNumbers: ["600", "601"] };

  test("the defaults clash with nothing, the pickup code *8 included", () => {
    assert.deepEqual(checkFeatureCodes(undefined, "*8", numbers), []);
    assert.deepEqual(checkFeatureCodes({ away: "*30", back: "*31" }, "*8", numbers), []);
  });

  test("equal codes, a code starting another, the pickup code starting a code: each named by path", () => {
    assert.deepEqual(checkFeatureCodes({ back: "*41" }, "*8", numbers), [{ path: "settings.featureCodes.back", message: "*41 is also the default away code *41" }]);
    const prefix = checkFeatureCodes({ away: "*4" }, "*8", numbers);
    assert.deepEqual(prefix.map((p) => p.path), ["settings.featureCodes.back", "settings.featureCodes.login", "settings.featureCodes.logout"]);
    assert.match(prefix[1]!.message, /\*45 starts with away code \*4/);
    const pickup = checkFeatureCodes({ dndOn: "*80" }, "*8", numbers);
    assert.deepEqual(pickup, [{ path: "settings.featureCodes.dndOn", message: "*80 starts with the pickup code: a phone dialling it could not be told apart" }]);
    const longPickup = checkFeatureCodes(undefined, "*411", numbers);
    assert.deepEqual(longPickup.map((p) => p.path), ["settings.featureCodes.away"]);
    assert.match(longPickup[0]!.message, /is the start of the pickup code/);
  });

  test("malformed codes, and codes equal to a number", () => {
    const bad = checkFeatureCodes({ away: "41", back: "*", dndOn: "*123456789", login: 45 as unknown as string }, "*8", numbers);
    assert.deepEqual(bad.map((p) => p.path), ["settings.featureCodes.away", "settings.featureCodes.back", "settings.featureCodes.dndOn", "settings.featureCodes.login"]);
    // Codes start with * or #, numbers are digits: the check holds whatever numbering a caller hands it.
    assert.deepEqual(checkFeatureCodes(undefined, "*8", { extensions: ["*42"], groupNumbers: ["*45"] }), [
      { path: "settings.featureCodes.back", message: "*42 is a user's extension" },
      { path: "settings.featureCodes.login", message: "*45 is a group number" },
    ]);
  });

  test("a site snapshot with clashing codes is refused by path; nothing is applied", async () => {
    const bad = structuredClone(EXAMPLE);
    bad.settings.featureCodes = { away: "*80", dndOn: "*42" };
    const r = checkSiteConfig(bad, []);
    assert.equal(r.ok, false);
    const errors = r.ok ? [] : r.errors;
    assert.deepEqual(errors.map((e) => [e.code, e.path]), [["feature-code-clash", "settings.featureCodes.away"], ["feature-code-clash", "settings.featureCodes.dndOn"]]);
    const shape = structuredClone(EXAMPLE);
    shape.settings.featureCodes = { away: "41", snooze: "*12" };
    const s = checkSiteConfig(shape, []);
    assert.deepEqual(s.ok ? [] : s.errors.map((e) => [e.code, e.path]).sort(), [["schema", "settings.featureCodes.away"], ["schema", "settings.featureCodes.snooze"]]);
    const store = await Store.open(tempDir("ringedge-opstate-"));
    const svc = new SiteService({ store });
    svc.start();
    const applied = await svc.apply(bad, "file");
    assert.equal(applied.ok, false);
    assert.equal(store.site, null);
    await store.close();
  });

  test("users[].loggedOutOf names groups the user is a member of", () => {
    const cfg = structuredClone(EXAMPLE);
    cfg.users[0].loggedOutOf = ["reception", "sales", "nowhere"];
    cfg.users[1].stateChangedAt = -1;
    const r = checkSiteConfig(cfg, []);
    assert.deepEqual(r.ok ? [] : r.errors.map((e) => [e.code, e.path]), [
      ["schema", "users[1].stateChangedAt"],
      ["logged-out-not-member", "users[0].loggedOutOf[1]"],
      ["logged-out-not-member", "users[0].loggedOutOf[2]"],
    ]);
    cfg.users[0].loggedOutOf = ["reception", "backoffice"];
    cfg.users[1].stateChangedAt = T0;
    assert.equal(checkSiteConfig(cfg, []).ok, true);
  });
});

describe("state transitions from a phone", () => {
  const sales = group("sales", "601", ["a", "b"]);
  const support = group("support", "602", ["a"]);
  const other = group("other", "603", ["b"]);
  const byNumber = new Map([sales, support, other].map((g) => [g.number, g]));
  const ctx = { groupsByNumber: byNumber, groupsOf: [sales, support], deviceId: "desk-a", now: T0 + 1000 };
  const run = (s: OperatorState, dialled: string) => applyOperatorCode(s, ok(parseOperatorCode(dialled)), ctx);

  test("away, back, DND on and off: one three-way availability", () => {
    const away = run(state("a"), "*41");
    assert.ok(away.ok && away.changed);
    assert.deepEqual(away.ok && { availability: away.state.availability, source: away.state.source, deviceId: away.state.deviceId, changedAt: away.state.changedAt, text: away.text }, { availability: "away", source: "phone", deviceId: "desk-a", changedAt: T0 + 1000, text: "Away" });
    const dnd = run(away.ok ? away.state : state("a"), "*78");
    assert.equal(dnd.ok && dnd.state.availability, "dnd");
    const off = run(dnd.ok ? dnd.state : state("a"), "*79");
    assert.equal(off.ok && off.state.availability, "available");
    const back = run(state("a", { availability: "dnd" }), "*42");
    assert.equal(back.ok && back.state.availability, "available", "back also ends DND");
  });

  test("repeating a code changes nothing (same state object, no new time)", () => {
    const s = state("a", { availability: "away" });
    const r = run(s, "*41");
    assert.ok(r.ok);
    assert.equal(r.changed, false);
    assert.equal(r.state, s);
  });

  test("log out of one group, of all; log back in to one, to all", () => {
    const one = run(state("a"), "*46601");
    assert.deepEqual(one.ok && [one.state.loggedOutOf, one.text], [["sales"], "Logged out: group 601"]);
    const all = run(one.ok ? one.state : state("a"), "*46");
    assert.deepEqual(all.ok && all.state.loggedOutOf, ["sales", "support"]);
    const inOne = run(all.ok ? all.state : state("a"), "*45602");
    assert.deepEqual(inOne.ok && inOne.state.loggedOutOf, ["sales"]);
    const inAll = run(inOne.ok ? inOne.state : state("a"), "*45");
    assert.deepEqual(inAll.ok && [inAll.state.loggedOutOf, inAll.text], [[], "Logged in: all groups"]);
  });

  test("refusals: unknown group 404, another's group 403, no group at all 403; the state is untouched", () => {
    const s = state("a");
    const snapshot = structuredClone(s);
    assert.deepEqual(run(s, "*46999"), { ok: false, status: 404, text: "No group 999" });
    assert.deepEqual(run(s, "*45603"), { ok: false, status: 403, text: "Not a member of group 603" });
    assert.deepEqual(applyOperatorCode(s, ok(parseOperatorCode("*46")), { ...ctx, groupsOf: [] }), { ok: false, status: 403, text: "Not a member of any group" });
    assert.deepEqual(s, snapshot);
  });
});

describe("the later change wins: site snapshots and phones", () => {
  const groups = [group("sales", "601", ["a", "b"]), group("support", "602", ["a"])];
  const merge = (states: OperatorState[], users: SnapshotUser[], now = T0 + 5000) => mergeSnapshot({ states: new Map(states.map((s) => [s.userId, s])), users, groups, source: "console", now });

  test("an operator new to the agent takes the snapshot's values (not reported as a change)", () => {
    const r = merge([], [{ id: "a", availability: "away", loggedOutOf: ["support"] }]);
    assert.deepEqual(r.changed, []);
    assert.deepEqual(r.states[0], { userId: "a", availability: "away", loggedOutOf: ["support"], changedAt: T0 + 5000, source: "console", pushed: { availability: "away", loggedOutOf: ["support"] } });
  });

  test("a snapshot repeating an operator's values keeps that state object; any difference makes a new one", () => {
    const first = merge([], [{ id: "a", availability: "available" }, { id: "b", availability: "dnd", loggedOutOf: ["sales"], stateChangedAt: 7 }]);
    const again = merge(first.states, [{ id: "a", availability: "available" }, { id: "b", availability: "dnd", loggedOutOf: ["sales"], stateChangedAt: 7 }], T0 + 9000);
    assert.deepEqual(again.changed, []);
    assert.equal(again.states[0], first.states[0]);
    assert.equal(again.states[1], first.states[1]);
    // Only the pushed values moved (an older stateChangedAt re-asserts nothing): the same
    // routing state in a new object that records them.
    const older = merge(first.states, [{ id: "a", availability: "available" }, { id: "b", availability: "dnd", loggedOutOf: ["sales"], stateChangedAt: 5 }], T0 + 9000);
    assert.deepEqual(older.changed, []);
    assert.equal(older.states[0], first.states[0]);
    assert.notEqual(older.states[1], first.states[1]);
    assert.deepEqual(older.states[1], { ...first.states[1]!, pushed: { availability: "dnd", loggedOutOf: ["sales"], stateChangedAt: 5 } });
    // A snapshot taking the operator out of a group's logged-out list logs them back in: a change.
    const back = merge(first.states, [{ id: "a", availability: "available" }, { id: "b", availability: "dnd", stateChangedAt: 7 }], T0 + 9000);
    assert.deepEqual(back.changed, ["b"]);
    assert.deepEqual(back.states[1]!.loggedOutOf, []);
  });

  test("sameOperatorStates: equal exactly when the saved JSON would be", () => {
    const a = state("a", { availability: "dnd", loggedOutOf: ["sales"], source: "phone", deviceId: "desk-a", changedAt: T0 + 100, pushed: { availability: "available", loggedOutOf: [], stateChangedAt: 50 } });
    const b = state("b");
    const list = [a, b];
    const copy = structuredClone(list);
    assert.equal(sameOperatorStates(list, copy), true);
    assert.equal(JSON.stringify(list), JSON.stringify(copy));
    // A merge that changes nothing gives equal states; any differing field makes them unequal.
    assert.equal(sameOperatorStates(merge(list, [{ id: "a", availability: "available", stateChangedAt: 50 }, { id: "b", availability: "available" }]).states, list.map((s) => (s.userId === "b" ? { ...s, pushed: { availability: "available", loggedOutOf: [] } } : s))), true);
    const variants: OperatorState[] = [
      { ...a, userId: "c" },
      { ...a, availability: "away" },
      { ...a, loggedOutOf: [] },
      { ...a, loggedOutOf: ["support"] },
      { ...a, changedAt: a.changedAt + 1 },
      { ...a, source: "console" },
      { ...a, deviceId: undefined },
      { ...a, pushed: { ...a.pushed, availability: "dnd" } },
      { ...a, pushed: { ...a.pushed, loggedOutOf: ["sales"] } },
      { ...a, pushed: { availability: "available", loggedOutOf: [] } },
    ];
    for (const v of variants) {
      assert.notEqual(JSON.stringify([v, b]), JSON.stringify(list));
      assert.equal(sameOperatorStates([v, b], list), false, JSON.stringify(v));
    }
    assert.equal(sameOperatorStates([b, a], list), false, "order counts");
    assert.equal(sameOperatorStates([a], list), false);
  });

  test("a snapshot repeating its values leaves a phone's change alone", () => {
    const phoneSet = state("a", { availability: "dnd", loggedOutOf: ["sales"], source: "phone", deviceId: "desk-a", changedAt: T0 + 100 });
    const r = merge([phoneSet], [{ id: "a", availability: "available" }]);
    assert.deepEqual(r.changed, []);
    assert.deepEqual(r.states[0], phoneSet);
  });

  test("a snapshot that changed a field wins for that field only", () => {
    const phoneSet = state("a", { availability: "dnd", loggedOutOf: ["sales"], source: "phone", deviceId: "desk-a" });
    const r = merge([phoneSet], [{ id: "a", availability: "away" }]);
    assert.deepEqual(r.changed, ["a"]);
    assert.deepEqual([r.states[0]!.availability, r.states[0]!.loggedOutOf, r.states[0]!.source, r.states[0]!.deviceId], ["away", ["sales"], "console", undefined]);
    // Per group: the snapshot logs the operator out of support; sales stays as the phone set it.
    const g = merge([phoneSet], [{ id: "a", availability: "available", loggedOutOf: ["support"] }]);
    assert.deepEqual(g.states[0]!.loggedOutOf, ["sales", "support"]);
    // ...and a snapshot taking support out again logs them back in there, sales untouched.
    const back = mergeSnapshot({ states: new Map([["a", g.states[0]!]]), users: [{ id: "a", availability: "available" }], groups, source: "console", now: T0 + 6000 });
    assert.deepEqual(back.states[0]!.loggedOutOf, ["sales"]);
  });

  test("a later stateChangedAt re-asserts values the console pushed before; an equal or older one does not", () => {
    const phoneSet = state("a", { availability: "dnd", loggedOutOf: ["sales"], source: "phone", pushed: { availability: "available", loggedOutOf: [], stateChangedAt: 50 } });
    assert.deepEqual(merge([phoneSet], [{ id: "a", availability: "available", stateChangedAt: 50 }]).changed, []);
    assert.deepEqual(merge([phoneSet], [{ id: "a", availability: "available", stateChangedAt: 40 }]).changed, []);
    const r = merge([phoneSet], [{ id: "a", availability: "available", stateChangedAt: 60 }]);
    assert.deepEqual(r.changed, ["a"]);
    assert.deepEqual([r.states[0]!.availability, r.states[0]!.loggedOutOf], ["available", []]);
  });

  test("merging is idempotent; operators and groups that are gone are dropped", () => {
    const first = merge([state("a"), state("z")], [{ id: "a", availability: "away", loggedOutOf: ["sales"] }]);
    assert.deepEqual(first.states.map((s) => s.userId), ["a"]);
    const again = mergeSnapshot({ states: new Map(first.states.map((s) => [s.userId, s])), users: [{ id: "a", availability: "away", loggedOutOf: ["sales"] }], groups, source: "console", now: T0 + 9000 });
    assert.deepEqual(again.changed, []);
    assert.deepEqual(again.states, first.states);
    // sales removed from the site: the logout there goes, silently (routing is the same).
    const pruned = mergeSnapshot({ states: new Map(first.states.map((s) => [s.userId, s])), users: [{ id: "a", availability: "away" }], groups: [groups[1]!], source: "console", now: T0 + 9000 });
    assert.deepEqual(pruned.changed, []);
    assert.deepEqual(pruned.states[0]!.loggedOutOf, []);
    assert.equal(pruned.states[0]!.changedAt, first.states[0]!.changedAt);
  });
});

describe("routing reads the state", () => {
  const users = [user("a", "201"), user("b", "202"), user("c", "203")];
  const devices: DeviceRef[] = users.map((u) => ({ id: `p-${u.id}`, ownerId: u.id, kind: "physical" }));
  const plan = (g: Group, presence: PresenceSnapshot) => {
    const idx = indexSite({ users, devices, groups: [g] });
    return planStep({ group: g, usersById: idx.usersById, devicesByOwner: idx.devicesByOwner, presence, evenlyLastOffered: new Map(), call: startCall(T0), now: T0 });
  };
  const base = { onlineDevices: new Set(devices.map((d) => d.id)), activeCalls: new Map<string, number>() };

  test("a logged-out member is skipped as logged-out in that group only", () => {
    const presence: PresenceSnapshot = { ...base, loggedOut: new Map([["a", new Set(["sales"])]]) };
    const p = plan(group("sales", "601", ["a", "b"], { strategy: "simultaneous" }), presence);
    assert.deepEqual(p.ring.map((r) => r.memberId), ["b"]);
    assert.deepEqual(p.skipped, [{ memberId: "a", reason: "logged-out" }]);
    assert.deepEqual(plan(group("support", "602", ["a"]), presence).ring.map((r) => r.memberId), ["a"]);
  });

  test("the phone's availability overrides the site's: away only where checked, dnd always", () => {
    const presence: PresenceSnapshot = { ...base, availability: new Map([["a", "away"], ["b", "dnd"]]) };
    const open = plan(group("g", "601", ["a", "b", "c"], { strategy: "simultaneous" }), presence);
    assert.deepEqual(open.ring.map((r) => r.memberId), ["a", "c"]);
    assert.deepEqual(open.skipped, [{ memberId: "b", reason: "dnd" }]);
    const checked = plan(group("g", "601", ["a", "b", "c"], { strategy: "simultaneous", checkAvailability: true }), presence);
    assert.deepEqual(checked.ring.map((r) => r.memberId), ["c"]);
    const backAvailable: PresenceSnapshot = { ...base, availability: new Map([["a", "available"]]) };
    const siteAway = [{ ...users[0]!, availability: "away" as const }, users[1]!, users[2]!];
    const idx = indexSite({ users: siteAway, devices, groups: [] });
    const g = group("g", "601", ["a"], { checkAvailability: true });
    assert.equal(selectFreeOperator({ group: g, usersById: idx.usersById, devicesByOwner: idx.devicesByOwner, presence: backAvailable, evenlyLastOffered: new Map() })?.memberId, "a", "back from the phone wins over the site's away");
  });

  test("a group whose members are all logged out counts as all offline (overflow at once)", () => {
    const idx = indexSite({ users, devices, groups: [] });
    const g = group("g", "601", ["a", "b"]);
    assert.equal(groupAllOffline(g, idx.devicesByOwner, base), false);
    assert.equal(groupAllOffline(g, idx.devicesByOwner, { ...base, loggedOut: new Map([["a", new Set(["g"])]]) }), false);
    assert.equal(groupAllOffline(g, idx.devicesByOwner, { ...base, loggedOut: new Map([["a", new Set(["g"])], ["b", new Set(["g"])]]) }), true);
  });
});

describe("the service: store, bus, site", () => {
  async function setup() {
    const store = await Store.open(tempDir("ringedge-opstate-"));
    const bus = new EventBus();
    const svc = new SiteService({ store, bus });
    svc.start();
    const cfg = structuredClone(EXAMPLE);
    cfg.version = 1;
    assert.equal((await svc.apply(cfg, "console")).ok, true);
    const events: Array<AgentEvents["operator.state"]> = [];
    bus.on("operator.state", (e) => events.push(e));
    let now = T0;
    const ops = new OperatorStates({ store, site: () => svc.current(), bus, log: silentLog, now: () => now });
    ops.start();
    return { store, bus, svc, ops, events, cfg, tick: (ms: number) => (now += ms) };
  }

  test("list: every state, as a copy the caller may change", async () => {
    const { store, ops } = await setup();
    assert.ok(ops.onCode(ok(parseOperatorCode("*46600")), { deviceId: "desk-anna", userId: "anna" }));
    const list = ops.list();
    assert.deepEqual(list, [...store.listOperatorStates()].map((s) => structuredClone(s)));
    assert.deepEqual(list.map((s) => s.userId), store.listOperatorStates().map((s) => s.userId));
    const anna = list.find((s) => s.userId === "anna")!;
    assert.deepEqual(anna.loggedOutOf, ["reception"]);
    anna.loggedOutOf.push("x");
    anna.pushed.loggedOutOf.push("y");
    anna.availability = "away";
    assert.deepEqual(ops.get("anna")?.loggedOutOf, ["reception"]);
    assert.deepEqual(ops.get("anna")?.pushed.loggedOutOf, []);
    assert.equal(ops.get("anna")?.availability, "available");
    await store.close();
  });

  test("a code changes the maps routing reads at once, is stored and reported; refusals change nothing", async () => {
    const { store, ops, events, tick } = await setup();
    assert.equal(ops.availability.get("anna"), "available");
    tick(1000);
    assert.deepEqual(ops.onCode(ok(parseOperatorCode("*78")), { deviceId: "desk-anna", userId: "anna" }), { status: 480, text: "Do Not Disturb on" });
    assert.equal(ops.availability.get("anna"), "dnd");
    assert.deepEqual(events, [{ userId: "anna", availability: "dnd", loggedOutOf: [], source: "phone", deviceId: "desk-anna", at: T0 + 1000 }]);
    assert.equal(store.listOperatorStates().find((s) => s.userId === "anna")?.availability, "dnd");
    assert.deepEqual(ops.onCode(ok(parseOperatorCode("*46600")), { deviceId: "desk-anna", userId: "anna" }), { status: 480, text: "Logged out: group 600" });
    assert.deepEqual([...(ops.loggedOut.get("anna") ?? [])], ["reception"]);
    const before = JSON.stringify(store.listOperatorStates());
    assert.deepEqual(ops.onCode(ok(parseOperatorCode("*46601")), { deviceId: "desk-anna", userId: "anna" }), { status: 403, text: "Not a member of group 601" });
    assert.deepEqual(ops.onCode(parseOperatorCode("*4160")!, { deviceId: "desk-anna", userId: "anna" }), { status: 404, text: "*41 takes nothing after it" });
    assert.deepEqual(ops.onCode(ok(parseOperatorCode("*41")), { deviceId: "x", userId: "nobody" }), { status: 403, text: "Not an operator of this site" });
    assert.equal(JSON.stringify(store.listOperatorStates()), before);
    assert.equal(events.length, 2);
    await store.close();
  });

  test("a push that changes a field overrides the phone; one that repeats it does not; restart keeps the state", async () => {
    const { store, svc, ops, events, cfg } = await setup();
    ops.onCode(ok(parseOperatorCode("*41")), { deviceId: "desk-ben", userId: "ben" });
    const repeat = structuredClone(cfg);
    repeat.version = 2;
    repeat.groups[0].name = "Front desk";
    assert.equal((await svc.apply(repeat, "console")).ok, true);
    assert.equal(ops.availability.get("ben"), "away", "a push that did not touch ben's availability leaves the phone's away");
    const change = structuredClone(repeat);
    change.version = 3;
    change.users[1].availability = "dnd";
    assert.equal((await svc.apply(change, "console")).ok, true);
    assert.equal(ops.availability.get("ben"), "dnd");
    assert.deepEqual(events.map((e) => [e.userId, e.availability, e.source]), [["ben", "away", "phone"], ["ben", "dnd", "console"]]);
    ops.stop();
    const again = new OperatorStates({ store, site: () => svc.current(), bus: new EventBus(), log: silentLog });
    again.start();
    assert.equal(again.availability.get("ben"), "dnd");
    assert.equal(again.get("ben")?.source, "console");
    await store.close();
  });

  test("the store refuses a hostile state as a whole", async () => {
    const { store } = await setup();
    const before = JSON.stringify(store.listOperatorStates());
    const bad = [state("a"), { ...state("b"), availability: "asleep" } as unknown as OperatorState];
    const r = store.setOperatorStates(bad);
    assert.equal(r.ok, false);
    assert.match(r.ok ? "" : r.error.message, /operators\[1\]\.availability must be one of available, away, dnd/);
    assert.equal(store.setOperatorStates([state("a"), state("a")]).ok, false, "a duplicate user");
    assert.equal(store.setOperatorStates([{ ...state("a"), loggedOutOf: ["ok", 7] } as unknown as OperatorState]).ok, false);
    assert.equal(JSON.stringify(store.listOperatorStates()), before);
    await store.close();
  });

  test("the event payload matches the contract", () => {
    const ev = { bootId: "Xq3b9_k1", seq: 1, type: "operator.state", at: T0, data: { userId: "anna", availability: "dnd", loggedOutOf: ["sales"], source: "phone", deviceId: "desk-anna" } };
    assert.deepEqual(validatePayload("event", ev), { ok: true });
    assert.equal(validatePayload("event", { ...ev, data: { ...ev.data, availability: "asleep" } }).ok, false);
    assert.equal(validatePayload("event", { ...ev, data: { userId: "anna" } }).ok, false);
  });

  test("defaults are what the docs say", () => {
    assert.deepEqual({ ...DEFAULT_FEATURE_CODES }, { away: "*41", back: "*42", dndOn: "*78", dndOff: "*79", login: "*45", logout: "*46" });
  });
});

describe("BLF keys on state codes", () => {
  const sales = group("sales", "601", ["a", "b"]);
  const support = group("support", "602", ["a"]);
  const byNumber = new Map([sales, support].map((g) => [g.number, g]));
  const lit = (s: Partial<OperatorState>, dialled: string, groupsOf = [sales, support]) => codeInEffect({ ...state("a"), ...s }, ok(parseOperatorCode(dialled)), byNumber, groupsOf);

  test("which code's state is in effect", () => {
    assert.deepEqual(["*41", "*42", "*78", "*79"].map((c) => lit({ availability: "away" }, c)), [true, false, false, true]);
    assert.deepEqual(["*41", "*42", "*78", "*79"].map((c) => lit({ availability: "dnd" }, c)), [false, false, true, false]);
    assert.deepEqual(["*45", "*45601", "*46", "*46601", "*46602"].map((c) => lit({ loggedOutOf: ["sales"] }, c)), [false, false, false, true, false]);
    assert.deepEqual(["*45", "*46"].map((c) => lit({ loggedOutOf: ["sales", "support"] }, c)), [false, true]);
    assert.deepEqual(["*45", "*46", "*45601"].map((c) => lit({}, c, [])), [false, false, false], "in no group: neither lamp");
    assert.equal(lit({}, "*45999"), false, "an unknown group");
  });

  test("the dialog package resolves a state code for the subscriber's operator, renders it, and is told when it changes", async () => {
    const bus = new EventBus();
    const index = indexSite({ users: [user("a", "201"), user("b", "202")], devices: [], groups: [sales, support] });
    let pkg: EventPackage | undefined;
    const changed: string[] = [];
    const states = new Map<string, OperatorState>([["a", state("a")], ["b", state("b")]]);
    const blf = new BlfNotifier({ bus, site: () => index, subscriptions: { addPackage: (p) => (pkg = p), changed: (_e, r) => changed.push(r) }, operators: { get: (id) => states.get(id), featureCodes: () => ({ dndOn: "#9" }) } });
    blf.start();
    const host = "192.0.2.1:5060";
    const key = pkg!.resolve(`sip:%239@${host}`, host, { deviceId: "desk-a", userId: "a" });
    assert.deepEqual(key, { resource: "a #9", entity: `sip:%239@${host}` });
    assert.equal(pkg!.resolve(`sip:*78@${host}`, host, { deviceId: "desk-a", userId: "a" }), undefined, "the replaced default is no code");
    assert.equal(pkg!.resolve(`sip:#9x@${host}`, host, { deviceId: "desk-a", userId: "a" }), undefined);
    assert.equal(pkg!.resolve(`sip:#9@${host}`, host, { deviceId: "nobody's" }), undefined, "a device without an operator");
    assert.deepEqual(pkg!.resolve(`sip:202@${host}`, host, { deviceId: "desk-a", userId: "a" }), { resource: "b", entity: `sip:202@${host}` }, "users still resolve");
    assert.doesNotMatch(pkg!.render("a #9", key!.entity, 0), /<dialog /);
    states.set("a", state("a", { availability: "dnd" }));
    bus.emit("operator.state", { userId: "b", availability: "dnd", loggedOutOf: [], source: "phone", at: T0 });
    bus.emit("operator.state", { userId: "a", availability: "dnd", loggedOutOf: [], source: "phone", at: T0 });
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(changed, ["a #9"], "only the keys of the operator who changed");
    const xml = pkg!.render("a #9", key!.entity, 1);
    assert.match(xml, /<dialog id="state" call-id="state-#9" direction="initiator">\s*<state>confirmed<\/state>/);
    bus.emit("site.applied", { version: 2, source: "console" });
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(changed, ["a #9", "a #9"]);
    blf.stop();
  });
});

const silentLog = {
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
  child: () => silentLog,
  enabled: () => false,
};
