// Exhaustive, pure tests of the routing decision core: no sockets, no timers, time is a number.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import type { DeviceRef, Group, Site, User, ValidationError } from "../../agent/routing/model.ts";
import { MAX_REPORTED_ERRORS, indexSite, parseSite, validateSite } from "../../agent/routing/model.ts";
import type { CallState, PlanInput, PresenceSnapshot, RingPlan, RingingCall } from "../../agent/routing/plan.ts";
import {
  findPickupTarget,
  groupAllOffline,
  parsePickupCode,
  pickNoAnswer,
  planStep,
  selectFreeOperator,
  startCall,
  stepLengthMs,
  withMemberEnded,
} from "../../agent/routing/plan.ts";

// --- fixtures ------------------------------------------------------------------------------

const UNIT = 100; // ms per ring in tests
const T0 = 1_700_000_000_000;

function user(id: string, extension: string, over: Partial<User> = {}): User {
  return { id, extension, name: `User ${id}`, availability: "available", callLimit: 1, ...over };
}
function phone(id: string, ownerId: string): DeviceRef {
  return { id, ownerId, kind: "physical" };
}
function soft(id: string, ownerId: string): DeviceRef {
  return { id, ownerId, kind: "soft" };
}
function group(over: Partial<Group> = {}): Group {
  return {
    id: "g1",
    number: "100",
    name: "Sales",
    strategy: "sequential",
    members: [],
    ringCount: 3,
    checkAvailability: false,
    noAnswer: { kind: "hangup" },
    ...over,
  };
}

/** A site of users u1..uN, each with one desk phone p<i>, all online unless said otherwise. */
interface World {
  users: User[];
  devices: DeviceRef[];
  online: Set<string>;
  activeCalls: Map<string, number>;
  lastOffered: Map<string, number>;
}
function world(n: number, opts: { soft?: boolean; phonesEach?: number } = {}): World {
  const users: User[] = [];
  const devices: DeviceRef[] = [];
  for (let i = 1; i <= n; i++) {
    users.push(user(`u${i}`, String(200 + i)));
    const each = opts.phonesEach ?? 1;
    for (let k = 1; k <= each; k++) devices.push(phone(each === 1 ? `p${i}` : `p${i}.${k}`, `u${i}`));
    if (opts.soft) devices.push(soft(`s${i}`, `u${i}`));
  }
  return { users, devices, online: new Set(devices.map((d) => d.id)), activeCalls: new Map(), lastOffered: new Map() };
}
function ids(n: number, from = 1): string[] {
  return Array.from({ length: n }, (_, i) => `u${i + from}`);
}
function inputFor(w: World, g: Group, call: CallState, now: number, maxPhysical?: number): PlanInput {
  const idx = indexSite({ users: w.users, devices: w.devices, groups: [g] });
  const presence: PresenceSnapshot = { onlineDevices: w.online, activeCalls: w.activeCalls };
  const input: PlanInput = {
    group: g,
    usersById: idx.usersById,
    devicesByOwner: idx.devicesByOwner,
    presence,
    evenlyLastOffered: w.lastOffered,
    call,
    now,
    ringUnitMs: UNIT,
  };
  if (maxPhysical !== undefined) input.maxPhysical = maxPhysical;
  return input;
}
function step(w: World, g: Group, call: CallState, now: number, maxPhysical?: number): RingPlan {
  return planStep(inputFor(w, g, call, now, maxPhysical));
}
/** Runs a call to exhaustion, each step at nextStepAt, applying evenly bookkeeping like the engine. */
function runCall(w: World, g: Group, start = T0): RingPlan[] {
  const plans: RingPlan[] = [];
  let call = startCall(start);
  let now = start;
  for (let guard = 0; guard < 1000; guard++) {
    const p = step(w, g, call, now);
    plans.push(p);
    for (const m of p.offeredMembers) w.lastOffered.set(m, now);
    if (p.exhausted) return plans;
    assert.ok(p.nextStepAt !== undefined && p.nextStepAt > now);
    now = p.nextStepAt;
    call = p.call;
  }
  throw new Error("call never exhausted");
}
const ringed = (p: RingPlan) => p.ring.map((r) => r.memberId);
const devicesRung = (p: RingPlan) => p.ring.flatMap((r) => r.deviceIds);

// --- validateSite / parseSite --------------------------------------------------------------

function validSite(): Site {
  return {
    users: [user("u1", "201", { mobile: "+4915112345678" }), user("u2", "202"), user("u3", "203")],
    devices: [phone("p1", "u1"), soft("s1", "u1"), phone("p2", "u2"), phone("p3", "u3")],
    groups: [
      group({ id: "g1", number: "100", members: ["u1", "u2"], noAnswer: { kind: "overflow-group", groupId: "g2" } }),
      group({ id: "g2", number: "101", members: ["u2", "u3"], noAnswer: { kind: "wait-for-operator", maxWaitS: 60, then: { kind: "voicemail", uri: "sip:vm@pbx" } } }),
      group({ id: "g3", number: "9", members: ["u1"], noAnswer: { kind: "forward-mobile", memberId: "u1" }, pickup: { enabled: true } }),
    ],
  };
}
/** Deep copy as plain JSON, the way a pushed payload arrives. */
function json(v: unknown): any {
  return JSON.parse(JSON.stringify(v));
}
function codes(errors: ValidationError[]): string[] {
  return errors.map((e) => `${e.code}@${e.path}`);
}

describe("validateSite", () => {
  it("accepts a valid site and returns no errors", () => {
    assert.deepEqual(validateSite(json(validSite())), []);
  });

  it("parseSite normalises: callLimit defaults to 1, pickup to disabled, unknown properties dropped", () => {
    const raw = json(validSite());
    delete raw.users[1].callLimit;
    delete raw.groups[0].pickup;
    raw.users[0].extra = "x";
    raw.groups[0].evil = { deep: true };
    const r = parseSite(raw);
    assert.ok(r.ok);
    assert.equal(r.site.users[1]?.callLimit, 1);
    assert.deepEqual(r.site.groups[0]?.pickup, { enabled: false });
    assert.equal("extra" in (r.site.users[0] as object), false);
    assert.equal("evil" in (r.site.groups[0] as object), false);
  });

  it("never throws on hostile shapes and says what is wrong", () => {
    for (const bad of [null, undefined, 42, "site", [], { users: null, devices: 1, groups: "x" }, { users: [null, 1, "u"], devices: [[]], groups: [null] }]) {
      const errors = validateSite(bad);
      assert.ok(errors.length > 0, JSON.stringify(bad));
      for (const e of errors) assert.ok(e.code && e.path && e.message);
    }
    assert.deepEqual(codes(validateSite(null)), ["invalid-type@$"]);
    assert.deepEqual(codes(validateSite({ users: null, devices: [], groups: [] })), ["invalid-type@users"]);
    const proto = JSON.parse('{"users":[],"devices":[],"groups":[],"__proto__":{"polluted":true}}');
    assert.deepEqual(validateSite(proto), []);
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
  });

  it("reports duplicate user, device and group ids at the later occurrence", () => {
    const s = json(validSite());
    s.users.push(user("u1", "299"));
    s.devices.push(phone("p1", "u2"));
    s.groups.push(group({ id: "g1", number: "102" }));
    assert.deepEqual(codes(validateSite(s)), ["duplicate-id@users[3].id", "duplicate-id@devices[4].id", "duplicate-id@groups[3].id"]);
  });

  it("checks extensions: digits only, at most 6, unique among users", () => {
    const s = json(validSite());
    s.users[0].extension = "1234567";
    s.users[1].extension = "20a";
    s.users[2].extension = "";
    s.users.push(user("u4", "203"), user("u5", "203"));
    const r = codes(validateSite(s));
    assert.deepEqual(r, [
      "invalid-extension@users[0].extension",
      "invalid-extension@users[1].extension",
      "invalid-extension@users[2].extension",
      "duplicate-extension@users[4].extension",
    ]);
  });

  it("accepts a 6-digit extension", () => {
    const s = json(validSite());
    s.users[0].extension = "123456";
    assert.deepEqual(validateSite(s), []);
  });

  it("checks group numbers: 1 to 4 digits, unique among groups and user extensions", () => {
    const s = json(validSite());
    s.groups[0].number = "12345";
    s.groups[1].number = "";
    s.groups[2].number = "201"; // u1's extension
    s.groups.push(group({ id: "g4", number: "9" }), group({ id: "g5", number: "9" }));
    assert.deepEqual(codes(validateSite(s)), [
      "invalid-group-number@groups[0].number",
      "invalid-group-number@groups[1].number",
      "duplicate-number@groups[2].number",
      "duplicate-number@groups[4].number",
    ]);
  });

  it("checks user fields: mobile, availability, callLimit, id and name", () => {
    const s = json(validSite());
    s.users[0].mobile = "call me";
    s.users[1].availability = "busy";
    s.users[2].callLimit = -1;
    s.users.push({ id: "", extension: "204", name: "x".repeat(200), availability: "away" });
    s.users.push({ id: "u6", extension: "206", name: "n", availability: "away", callLimit: 1.5 });
    assert.deepEqual(codes(validateSite(s)), [
      "invalid-mobile@users[0].mobile",
      "invalid-availability@users[1].availability",
      "invalid-call-limit@users[2].callLimit",
      "invalid-type@users[3].id",
      "too-long@users[3].name",
      "invalid-call-limit@users[4].callLimit",
    ]);
  });

  it("checks devices: kind and owner", () => {
    const s = json(validSite());
    s.devices[0].kind = "desk";
    s.devices[1].ownerId = "nobody";
    assert.deepEqual(codes(validateSite(s)), ["invalid-device-kind@devices[0].kind", "unknown-owner@devices[1].ownerId"]);
  });

  it("checks members exist and are not listed twice", () => {
    const s = json(validSite());
    s.groups[0].members = ["u1", "ghost", "u1", 7];
    const r = codes(validateSite(s));
    assert.deepEqual(r, ["invalid-type@groups[0].members[3]"]);
    s.groups[0].members = ["u1", "ghost", "u1"];
    assert.deepEqual(codes(validateSite(s)), ["unknown-member@groups[0].members[1]", "duplicate-member@groups[0].members[2]"]);
  });

  it("allows an empty member list and a user in many groups", () => {
    const s = json(validSite());
    s.groups[0].members = [];
    s.groups[1].members = ["u1", "u2", "u3"];
    s.groups[2].members = ["u1", "u2", "u3"];
    assert.deepEqual(validateSite(s), []);
  });

  it("checks strategy, ringCount 1..60 and checkAvailability", () => {
    const s = json(validSite());
    s.groups[0].strategy = "random";
    s.groups[1].ringCount = 0;
    s.groups[2].ringCount = 61;
    s.groups[2].checkAvailability = "yes";
    assert.deepEqual(codes(validateSite(s)), [
      "invalid-strategy@groups[0].strategy",
      "invalid-ring-count@groups[1].ringCount",
      "invalid-ring-count@groups[2].ringCount",
      "invalid-type@groups[2].checkAvailability",
    ]);
    s.groups[0].strategy = "evenly";
    s.groups[1].ringCount = 1;
    s.groups[2].ringCount = 60;
    s.groups[2].checkAvailability = true;
    assert.deepEqual(validateSite(s), []);
    s.groups[1].ringCount = 2.5;
    assert.deepEqual(codes(validateSite(s)), ["invalid-ring-count@groups[1].ringCount"]);
  });

  it("checks every no-answer action's fields", () => {
    const s = json(validSite());
    const cases: Array<[unknown, string]> = [
      [{ kind: "teleport" }, "invalid-no-answer@groups[0].noAnswer.kind"],
      [null, "invalid-no-answer@groups[0].noAnswer"],
      [{ kind: "voicemail", uri: "vm box" }, "invalid-voicemail-uri@groups[0].noAnswer.uri"],
      [{ kind: "forward-number", number: "12-34" }, "invalid-forward-number@groups[0].noAnswer.number"],
      [{ kind: "hangup", status: 404 }, "invalid-hangup-status@groups[0].noAnswer.status"],
      [{ kind: "overflow-group", groupId: "nope" }, "unknown-overflow-target@groups[0].noAnswer.groupId"],
      [{ kind: "wait-for-operator", maxWaitS: 0, then: { kind: "hangup" } }, "invalid-wait-time@groups[0].noAnswer.maxWaitS"],
      [{ kind: "wait-for-operator", maxWaitS: 30, then: { kind: "wait-for-operator", maxWaitS: 5, then: { kind: "hangup" } } }, "nested-wait@groups[0].noAnswer.then"],
      [{ kind: "wait-for-operator", maxWaitS: 30, then: { kind: "overflow-group", groupId: "nope" } }, "unknown-overflow-target@groups[0].noAnswer.then.groupId"],
      [{ kind: "forward-mobile", memberId: "u3" }, "mobile-member-not-in-group@groups[0].noAnswer.memberId"],
      [{ kind: "forward-mobile", memberId: "u2" }, "mobile-member-has-no-mobile@groups[0].noAnswer.memberId"],
    ];
    for (const [action, expected] of cases) {
      s.groups[0].noAnswer = action;
      assert.deepEqual(codes(validateSite(s)), [expected], JSON.stringify(action));
    }
    for (const ok of [{ kind: "hangup", status: 603 }, { kind: "forward-number", number: "+4930123" }, { kind: "forward-mobile" }, { kind: "voicemail", uri: "tel:+4930999" }]) {
      s.groups[0].noAnswer = ok;
      assert.deepEqual(validateSite(s), [], JSON.stringify(ok));
    }
  });

  it("detects an overflow group pointing at itself", () => {
    const s = json(validSite());
    s.groups[2].noAnswer = { kind: "overflow-group", groupId: "g3" };
    assert.deepEqual(validateSite(s), [{ code: "overflow-loop", path: "groups[2].noAnswer.groupId", message: "overflow chain loops: g3 → g3" }]);
  });

  it("detects a three-group loop once, reported at the first group listed, including a hop through a wait", () => {
    const s = json(validSite());
    // g1 → g2 (after its wait) → g3 → g1
    s.groups[1].noAnswer = { kind: "wait-for-operator", maxWaitS: 10, then: { kind: "overflow-group", groupId: "g3" } };
    s.groups[2].noAnswer = { kind: "overflow-group", groupId: "g1" };
    assert.deepEqual(validateSite(s), [{ code: "overflow-loop", path: "groups[0].noAnswer.groupId", message: "overflow chain loops: g1 → g2 → g3 → g1" }]);
  });

  it("reports the path at the wait's then when the first group of the loop waits first", () => {
    const s = json(validSite());
    s.groups[0].noAnswer = { kind: "wait-for-operator", maxWaitS: 10, then: { kind: "overflow-group", groupId: "g2" } };
    s.groups[1].noAnswer = { kind: "overflow-group", groupId: "g1" };
    assert.deepEqual(codes(validateSite(s)), ["overflow-loop@groups[0].noAnswer.then.groupId"]);
  });

  it("reports each of two separate loops, and not a chain that merely ends in one", () => {
    const s = json(validSite());
    s.groups.push(group({ id: "g4", number: "104", noAnswer: { kind: "overflow-group", groupId: "g5" } }));
    s.groups.push(group({ id: "g5", number: "105", noAnswer: { kind: "overflow-group", groupId: "g4" } }));
    s.groups[2].noAnswer = { kind: "overflow-group", groupId: "g3" };
    s.groups[1].noAnswer = { kind: "overflow-group", groupId: "g4" }; // g1 → g2 → g4 ⟲: g1, g2 are not in a loop
    const errors = validateSite(s);
    assert.deepEqual(codes(errors), ["overflow-loop@groups[2].noAnswer.groupId", "overflow-loop@groups[3].noAnswer.groupId"]);
    assert.equal(errors[1]?.message, "overflow chain loops: g4 → g5 → g4");
  });

  it("accepts a long chain without a loop", () => {
    const s = json(validSite());
    for (let i = 4; i <= 20; i++) s.groups.push(group({ id: `g${i}`, number: String(100 + i), noAnswer: i < 20 ? { kind: "overflow-group", groupId: `g${i + 1}` } : { kind: "hangup" } }));
    s.groups[2].noAnswer = { kind: "overflow-group", groupId: "g4" };
    assert.deepEqual(validateSite(s), []);
  });

  it("rejects groups over the member limit and stops listing after the error cap", () => {
    const s = json(validSite());
    s.groups[0].members = Array.from({ length: 1001 }, (_, i) => `x${i}`);
    assert.deepEqual(codes(validateSite(s)), ["too-many@groups[0].members"]);
    const flood = { users: Array.from({ length: 2000 }, () => ({})), devices: [], groups: [] };
    const errors = validateSite(flood);
    assert.equal(errors.length, MAX_REPORTED_ERRORS + 1);
    assert.equal(errors.at(-1)?.code, "too-many-errors");
  });

  it("indexSite builds the lookups", () => {
    const r = parseSite(json(validSite()));
    assert.ok(r.ok);
    const idx = indexSite(r.site);
    assert.deepEqual(idx.devicesByOwner.get("u1")?.map((d) => d.id), ["p1", "s1"]);
    assert.equal(idx.groupsByNumber.get("9")?.id, "g3");
    assert.equal(idx.usersByExtension.get("202")?.id, "u2");
    assert.equal(idx.groupsById.get("g2")?.number, "101");
    assert.equal(idx.usersById.get("u3")?.extension, "203");
  });
});

// --- planStep: sequential ------------------------------------------------------------------

describe("planStep sequential", () => {
  it("rings members one at a time in list order, each for ringCount × unit, then exhausts", () => {
    const w = world(3);
    const g = group({ members: ["u2", "u1", "u3"], ringCount: 3 });
    const plans = runCall(w, g);
    assert.deepEqual(plans.map(ringed), [["u2"], ["u1"], ["u3"], []]);
    assert.deepEqual(plans.map((p) => p.stop), [[], ["u2"], ["u1"], ["u3"]]);
    assert.deepEqual(plans.map((p) => p.nextStepAt), [T0 + 300, T0 + 600, T0 + 900, undefined]);
    assert.deepEqual(plans.map((p) => p.exhausted), [false, false, false, true]);
    assert.equal(plans[3]?.allOffline, false);
    assert.deepEqual(plans[0]?.ring, [{ memberId: "u2", deviceIds: ["p2"], physical: 1 }]);
    assert.deepEqual(plans.map((p) => p.offeredMembers), [["u2"], ["u1"], ["u3"], []]);
  });

  it("skips offline, busy and unknown members with the reason, and never goes back to them", () => {
    const w = world(4);
    w.online.delete("p2");
    w.activeCalls.set("u3", 1);
    const g = group({ members: ["u1", "u2", "ghost", "u3", "u4"] });
    let p = step(w, g, startCall(T0), T0);
    assert.deepEqual(ringed(p), ["u1"]);
    assert.deepEqual(p.skipped, []);
    // u2 comes online during u1's turn; its turn comes next, so it rings.
    w.online.add("p2");
    p = step(w, g, p.call, T0 + 300);
    assert.deepEqual(ringed(p), ["u2"]);
    p = step(w, g, p.call, T0 + 600);
    assert.deepEqual(ringed(p), ["u4"]);
    assert.deepEqual(p.skipped, [{ memberId: "ghost", reason: "unknown-user" }, { memberId: "u3", reason: "busy" }]);
    // u3 is free now, but its turn has passed.
    w.activeCalls.delete("u3");
    p = step(w, g, p.call, T0 + 900);
    assert.equal(p.exhausted, true);
    assert.deepEqual(p.stop, ["u4"]);
  });

  it("a member offline at their turn is passed over even if they come back later", () => {
    const w = world(3);
    w.online.delete("p1");
    const g = group({ members: ["u1", "u2", "u3"] });
    let p = step(w, g, startCall(T0), T0);
    assert.deepEqual(ringed(p), ["u2"]);
    assert.deepEqual(p.skipped, [{ memberId: "u1", reason: "offline" }]);
    w.online.add("p1");
    p = step(w, g, p.call, T0 + 300);
    assert.deepEqual(ringed(p), ["u3"]);
    p = step(w, g, p.call, T0 + 600);
    assert.equal(p.exhausted, true);
  });

  it("moves on early when the engine calls before nextStepAt, and times the new step from now", () => {
    const w = world(2);
    const g = group({ members: ["u1", "u2"], ringCount: 4 });
    const p0 = step(w, g, startCall(T0), T0);
    const p1 = step(w, g, p0.call, T0 + 50); // u1 declined at 50 ms
    assert.deepEqual(ringed(p1), ["u2"]);
    assert.deepEqual(p1.stop, ["u1"]);
    assert.equal(p1.nextStepAt, T0 + 50 + 400);
  });

  it("rings every online device of a member, physical and soft, and leaves offline ones out", () => {
    const w = world(0);
    w.users.push(user("a", "300"));
    w.devices.push(phone("a-desk", "a"), soft("a-app", "a"), phone("a-desk2", "a"), soft("a-web", "a"));
    w.online = new Set(["a-desk", "a-app", "a-web"]);
    const p = step(w, group({ members: ["a"] }), startCall(T0), T0);
    assert.deepEqual(p.ring, [{ memberId: "a", deviceIds: ["a-desk", "a-app", "a-web"], physical: 1 }]);
  });

  it("a member with 12 desk phones rings on the first 10 plus every soft device", () => {
    const w = world(1, { phonesEach: 12, soft: true });
    const p = step(w, group({ members: ["u1"] }), startCall(T0), T0);
    assert.equal(p.ring[0]?.physical, 10);
    assert.deepEqual(p.ring[0]?.deviceIds, [...Array.from({ length: 10 }, (_, k) => `p1.${k + 1}`), "s1"]);
  });

  it("does not mutate the call state it was given", () => {
    const w = world(2);
    const g = group({ members: ["u1", "u2"] });
    const c0 = startCall(T0);
    const p0 = step(w, g, c0, T0);
    const snapshot = { passed: [...p0.call.passed], ringing: [...p0.call.ringing] };
    step(w, g, p0.call, T0 + 300);
    assert.deepEqual({ passed: [...p0.call.passed], ringing: [...p0.call.ringing] }, snapshot);
    assert.equal(c0.passed.size, 0);
    assert.equal(c0.steps, 0);
  });

  it("an exhausted call stays exhausted", () => {
    const w = world(1);
    const g = group({ members: ["u1"] });
    const plans = runCall(w, g);
    const last = plans.at(-1) as RingPlan;
    const again = step(w, g, last.call, T0 + 10_000);
    assert.equal(again.exhausted, true);
    assert.deepEqual(again.ring, []);
    assert.deepEqual(again.stop, []);
    assert.equal(again.call, last.call);
  });
});

// --- planStep: simultaneous ----------------------------------------------------------------

describe("planStep simultaneous", () => {
  it("rings everyone at once for ringCount × unit, then stops them all and exhausts", () => {
    const w = world(3, { soft: true });
    w.online.delete("p2");
    const g = group({ strategy: "simultaneous", members: ["u1", "u2", "u3"], ringCount: 5 });
    const plans = runCall(w, g);
    assert.equal(plans.length, 2);
    assert.deepEqual(plans[0]?.ring, [
      { memberId: "u1", deviceIds: ["p1", "s1"], physical: 1 },
      { memberId: "u2", deviceIds: ["s2"], physical: 0 },
      { memberId: "u3", deviceIds: ["p3", "s3"], physical: 1 },
    ]);
    assert.equal(plans[0]?.nextStepAt, T0 + 500);
    assert.deepEqual(plans[1]?.stop, ["u1", "u2", "u3"]);
    assert.equal(plans[1]?.exhausted, true);
    assert.equal(plans[1]?.allOffline, false);
  });

  it("cap: only the first 10 physical phones in member order ring", () => {
    const w = world(12);
    const g = group({ strategy: "simultaneous", members: ids(12).reverse() });
    const p = step(w, g, startCall(T0), T0);
    assert.deepEqual(ringed(p), ids(12).reverse().slice(0, 10));
    assert.deepEqual(p.skipped, [{ memberId: "u2", reason: "cap" }, { memberId: "u1", reason: "cap" }]);
  });

  for (const n of [9, 10, 11, 12, 25]) {
    it(`cap boundary: ${n} members with a desk phone and a soft client → ${Math.min(n, 10)} desk phones, ${n} soft`, () => {
      const w = world(n, { soft: true });
      const g = group({ strategy: "simultaneous", members: ids(n) });
      const p = step(w, g, startCall(T0), T0);
      const all = devicesRung(p);
      assert.equal(all.filter((d) => d.startsWith("p")).length, Math.min(n, 10));
      assert.equal(all.filter((d) => d.startsWith("s")).length, n);
      assert.deepEqual(ringed(p), ids(n), "every member rings: soft clients are never capped");
      assert.deepEqual(all.filter((d) => d.startsWith("p")), ids(Math.min(n, 10)).map((u) => u.replace("u", "p")));
      assert.deepEqual(p.skipped, []);
    });
  }

  it("cap counts devices: a member straddling the cap rings the desk phones that fit", () => {
    const w = world(4, { phonesEach: 3 }); // 3, 3, 3 = 9, then 1 of u4's 3
    const g = group({ strategy: "simultaneous", members: ids(4) });
    const p = step(w, g, startCall(T0), T0);
    assert.deepEqual(p.ring[3], { memberId: "u4", deviceIds: ["p4.1"], physical: 1 });
    assert.equal(p.ring.reduce((n, r) => n + r.physical, 0), 10);
  });

  it("offline desk phones do not take cap slots", () => {
    const w = world(12);
    w.online.delete("p1");
    w.online.delete("p5");
    const p = step(w, group({ strategy: "simultaneous", members: ids(12) }), startCall(T0), T0);
    assert.deepEqual(ringed(p), ids(12).filter((u) => u !== "u1" && u !== "u5"));
  });

  it("a smaller cap can be passed in", () => {
    const w = world(5);
    const p = step(w, group({ strategy: "simultaneous", members: ids(5) }), startCall(T0), T0, 2);
    assert.deepEqual(ringed(p), ["u1", "u2"]);
  });
});

// --- planStep: evenly ----------------------------------------------------------------------

describe("planStep evenly", () => {
  it("offers the member offered longest ago first; never-offered members first, ties in list order", () => {
    const w = world(4);
    w.lastOffered.set("u1", T0 - 1000);
    w.lastOffered.set("u2", T0 - 5000);
    // u3, u4 never offered.
    const g = group({ strategy: "evenly", members: ids(4) });
    const plans = runCall(w, g);
    assert.deepEqual(plans.map(ringed), [["u3"], ["u4"], ["u2"], ["u1"], []]);
    assert.deepEqual(plans.map((p) => p.stop), [[], ["u3"], ["u4"], ["u2"], ["u1"]]);
  });

  it("rotates across calls: an unanswered offer still moves the member to the end", () => {
    const w = world(3);
    const g = group({ strategy: "evenly", members: ids(3) });
    const firstOffers: string[] = [];
    for (let c = 0; c < 6; c++) {
      const start = T0 + c * 10_000;
      const p = step(w, g, startCall(start), start);
      firstOffers.push(ringed(p)[0] as string);
      for (const m of p.offeredMembers) w.lastOffered.set(m, start); // the engine's bookkeeping
    }
    assert.deepEqual(firstOffers, ["u1", "u2", "u3", "u1", "u2", "u3"]);
  });

  it("returns the offers to record: offeredMembers is the member rung in each step", () => {
    const w = world(2);
    const g = group({ strategy: "evenly", members: ids(2) });
    const p = step(w, g, startCall(T0), T0);
    assert.deepEqual(p.offeredMembers, ["u1"]);
    assert.equal(p.call.lastOffered, "u1");
  });

  it("makes progress within a call even if the engine has not recorded the offers yet", () => {
    const w = world(3);
    const g = group({ strategy: "evenly", members: ids(3) });
    let p = step(w, g, startCall(T0), T0);
    const order = [ringed(p)];
    for (let i = 0; i < 3; i++) {
      p = step(w, g, p.call, T0 + (i + 1) * 300);
      order.push(ringed(p));
    }
    assert.deepEqual(order, [["u1"], ["u2"], ["u3"], []]);
  });

  it("passes over ineligible members ahead in the rotation, but not those behind the chosen one", () => {
    const w = world(3);
    w.lastOffered.set("u1", T0 - 3000); // first in rotation, offline
    w.lastOffered.set("u2", T0 - 2000);
    w.lastOffered.set("u3", T0 - 1000); // last in rotation, offline now
    w.online.delete("p1");
    w.online.delete("p3");
    const g = group({ strategy: "evenly", members: ids(3) });
    let p = step(w, g, startCall(T0), T0);
    assert.deepEqual(ringed(p), ["u2"]);
    assert.deepEqual(p.skipped, [{ memberId: "u1", reason: "offline" }]);
    w.online.add("p1");
    w.online.add("p3");
    p = step(w, g, p.call, T0 + 300);
    assert.deepEqual(ringed(p), ["u3"], "u3's turn had not come, so it rings once back online; u1's had");
  });

  it("an ineligible member listed before the chosen one but behind it in rotation keeps its turn", () => {
    const w = world(3);
    w.lastOffered.set("u1", T0 - 1000); // last in rotation, listed first, offline
    w.lastOffered.set("u2", T0 - 3000);
    w.lastOffered.set("u3", T0 - 2000);
    w.online.delete("p1");
    const g = group({ strategy: "evenly", members: ids(3) });
    let p = step(w, g, startCall(T0), T0);
    assert.deepEqual(ringed(p), ["u2"]);
    assert.deepEqual(p.skipped, []);
    p = step(w, g, p.call, T0 + 300);
    assert.deepEqual(ringed(p), ["u3"]);
    assert.deepEqual(p.skipped, []);
    const whenStillOffline = step(w, g, p.call, T0 + 600);
    assert.equal(whenStillOffline.exhausted, true);
    assert.deepEqual(whenStillOffline.skipped, [{ memberId: "u1", reason: "offline" }]);
    w.online.add("p1");
    assert.deepEqual(ringed(step(w, g, p.call, T0 + 600)), ["u1"]);
  });
});

// --- planStep: cumulative ------------------------------------------------------------------

describe("planStep cumulative", () => {
  it("adds the next member each step while earlier ones keep ringing, then stops all", () => {
    const w = world(3);
    const g = group({ strategy: "cumulative", members: ids(3), ringCount: 2 });
    const plans = runCall(w, g);
    assert.deepEqual(plans.map(ringed), [["u1"], ["u2"], ["u3"], []]);
    assert.deepEqual(plans.map((p) => p.stop), [[], [], [], ["u1", "u2", "u3"]]);
    assert.deepEqual(plans.map((p) => p.nextStepAt), [T0 + 200, T0 + 400, T0 + 600, undefined]);
    assert.deepEqual([...(plans[2]?.call.ringing.keys() ?? [])], ["u1", "u2", "u3"]);
  });

  it("the cap holds at every moment: once 10 desk phones ring, desk-only members are skipped, soft ones still added", () => {
    const w = world(4, { phonesEach: 4 }); // 4 + 4 + 2 of 4 = 10, then u4 has only desk phones
    w.users.push(user("u5", "305"));
    w.devices.push(phone("p5", "u5"), soft("s5", "u5"));
    w.online.add("p5").add("s5");
    const g = group({ strategy: "cumulative", members: ids(5) });
    const plans = runCall(w, g);
    assert.deepEqual(plans.map(ringed), [["u1"], ["u2"], ["u3"], ["u5"], []]);
    assert.deepEqual(plans[2]?.ring[0], { memberId: "u3", deviceIds: ["p3.1", "p3.2"], physical: 2 });
    assert.deepEqual(plans[3]?.skipped, [{ memberId: "u4", reason: "cap" }]);
    assert.deepEqual(plans[3]?.ring[0], { memberId: "u5", deviceIds: ["s5"], physical: 0 });
    for (const p of plans) {
      let ringingPhysical = 0;
      for (const n of p.call.ringing.values()) ringingPhysical += n;
      assert.ok(ringingPhysical <= 10);
    }
  });

  for (const n of [9, 10, 11, 12]) {
    it(`cap boundary: ${n} members with one desk phone and one soft client`, () => {
      const w = world(n, { soft: true });
      const g = group({ strategy: "cumulative", members: ids(n) });
      const plans = runCall(w, g);
      assert.equal(plans.length, n + 1, "every member gets a step: each has a soft client");
      const all = plans.flatMap(devicesRung);
      assert.equal(all.filter((d) => d.startsWith("p")).length, Math.min(n, 10));
      assert.equal(all.filter((d) => d.startsWith("s")).length, n);
      if (n > 10) assert.deepEqual(plans[10]?.ring[0], { memberId: "u11", deviceIds: ["s11"], physical: 0 });
    });
  }

  it("a member whose branches all ended frees their cap share for the next member", () => {
    const w = world(3, { phonesEach: 5 });
    const g = group({ strategy: "cumulative", members: ids(3) });
    let p = step(w, g, startCall(T0), T0);
    p = step(w, g, p.call, T0 + 300); // u1 (5) + u2 (5) = 10
    const ended = withMemberEnded(p.call, "u1"); // u1 rejected with 603
    assert.deepEqual([...ended.ringing.keys()], ["u2"]);
    assert.equal(withMemberEnded(ended, "u1"), ended, "ending a member not ringing changes nothing");
    p = step(w, g, ended, T0 + 600);
    assert.deepEqual(p.ring[0], { memberId: "u3", deviceIds: ["p3.1", "p3.2", "p3.3", "p3.4", "p3.5"], physical: 5 });
    assert.deepEqual(p.stop, []);
  });
});

// --- planStep: across strategies -----------------------------------------------------------

const STRATEGIES = ["sequential", "simultaneous", "evenly", "cumulative"] as const;

describe("planStep in every strategy", () => {
  for (const strategy of STRATEGIES) {
    it(`${strategy}: an empty group exhausts at once and counts as all offline`, () => {
      const p = step(world(0), group({ strategy, members: [] }), startCall(T0), T0);
      assert.deepEqual({ ring: p.ring, stop: p.stop, exhausted: p.exhausted, allOffline: p.allOffline, nextStepAt: p.nextStepAt }, { ring: [], stop: [], exhausted: true, allOffline: true, nextStepAt: undefined });
    });

    it(`${strategy}: every member offline → exhausted at the first step with allOffline`, () => {
      const w = world(3, { soft: true });
      w.online.clear();
      const p = step(w, group({ strategy, members: ids(3) }), startCall(T0), T0);
      assert.equal(p.exhausted, true);
      assert.equal(p.allOffline, true);
      assert.deepEqual(p.skipped.map((s) => s.reason), ["offline", "offline", "offline"]);
    });

    it(`${strategy}: every member busy → exhausted at once, not all offline`, () => {
      const w = world(3);
      for (const u of ids(3)) w.activeCalls.set(u, 1);
      const p = step(w, group({ strategy, members: ids(3) }), startCall(T0), T0);
      assert.equal(p.exhausted, true);
      assert.equal(p.allOffline, false);
      assert.deepEqual(p.skipped.map((s) => s.reason), ["busy", "busy", "busy"]);
    });

    it(`${strategy}: callLimit 0 is unlimited and callLimit 2 takes a second call`, () => {
      const w = world(2);
      (w.users[0] as User).callLimit = 0;
      (w.users[1] as User).callLimit = 2;
      w.activeCalls.set("u1", 7);
      w.activeCalls.set("u2", 1);
      const plans = runCall(w, group({ strategy, members: ids(2) }));
      assert.deepEqual(plans.flatMap(ringed).sort(), ["u1", "u2"]);
    });

    it(`${strategy}: away members ring unless the group checks availability; dnd members never ring`, () => {
      const w = world(3);
      (w.users[0] as User).availability = "away";
      (w.users[1] as User).availability = "dnd";
      const off = runCall(w, group({ strategy, members: ids(3), checkAvailability: false }));
      assert.deepEqual(off.flatMap(ringed).sort(), ["u1", "u3"]);
      assert.deepEqual(off.flatMap((p) => p.skipped), [{ memberId: "u2", reason: "dnd" }]);
      w.lastOffered.clear();
      const on = runCall(w, group({ strategy, members: ids(3), checkAvailability: true }));
      assert.deepEqual(on.flatMap(ringed), ["u3"]);
      assert.deepEqual(on.flatMap((p) => p.skipped), [{ memberId: "u1", reason: "away" }, { memberId: "u2", reason: "dnd" }]);
    });
  }

  it("a user in many groups is judged the same way in each; a call in one makes them busy in all", () => {
    const w = world(3);
    const sales = group({ id: "sales", members: ["u1", "u2"] });
    const support = group({ id: "support", strategy: "simultaneous", members: ["u3", "u1"] });
    assert.deepEqual(ringed(step(w, sales, startCall(T0), T0)), ["u1"]);
    assert.deepEqual(ringed(step(w, support, startCall(T0), T0)), ["u3", "u1"]);
    w.activeCalls.set("u1", 1); // u1 answered a sales call
    assert.deepEqual(ringed(step(w, sales, startCall(T0), T0)), ["u2"]);
    assert.deepEqual(ringed(step(w, support, startCall(T0), T0)), ["u3"]);
  });

  it("step length is ringCount × 5 s by default", () => {
    assert.equal(stepLengthMs(group({ ringCount: 4 })), 20_000);
    assert.equal(stepLengthMs(group({ ringCount: 4 }), 100), 400);
    assert.equal(stepLengthMs(group({ ringCount: Number.NaN }), 100), 100, "bad ringCount is clamped, never NaN");
    assert.equal(stepLengthMs(group({ ringCount: 1000 }), 1), 60);
  });

  it("groupAllOffline looks at every device of every member", () => {
    const w = world(2, { soft: true });
    const idx = indexSite({ users: w.users, devices: w.devices, groups: [] });
    const g = group({ members: ids(2) });
    const presence = (online: string[]): PresenceSnapshot => ({ onlineDevices: new Set(online), activeCalls: new Map() });
    assert.equal(groupAllOffline(g, idx.devicesByOwner, presence([])), true);
    assert.equal(groupAllOffline(g, idx.devicesByOwner, presence(["s2"])), false);
    assert.equal(groupAllOffline(g, idx.devicesByOwner, presence(["p9"])), true);
  });
});

// --- pickNoAnswer --------------------------------------------------------------------------

describe("pickNoAnswer", () => {
  function setup(groups: Group[], w = world(4)) {
    const idx = indexSite({ users: w.users, devices: w.devices, groups });
    const presence: PresenceSnapshot = { onlineDevices: w.online, activeCalls: w.activeCalls };
    return { w, idx, base: { groupsById: idx.groupsById, usersById: idx.usersById, devicesByOwner: idx.devicesByOwner, presence, now: T0 } };
  }

  it("resolves the terminal actions", () => {
    const { base } = setup([]);
    const g = (noAnswer: Group["noAnswer"]) => group({ members: ["u1"], noAnswer });
    assert.deepEqual(pickNoAnswer({ ...base, group: g({ kind: "voicemail", uri: "sip:vm@x" }), allOffline: false }), { kind: "voicemail", uri: "sip:vm@x", fromGroupId: "g1" });
    assert.deepEqual(pickNoAnswer({ ...base, group: g({ kind: "forward-number", number: "+4930" }), allOffline: false }), { kind: "forward", number: "+4930", source: "number", fromGroupId: "g1" });
    assert.deepEqual(pickNoAnswer({ ...base, group: g({ kind: "hangup" }), allOffline: false }), { kind: "hangup", status: 480, cause: "configured", fromGroupId: "g1" });
    assert.deepEqual(pickNoAnswer({ ...base, group: g({ kind: "hangup", status: 603 }), allOffline: false }), { kind: "hangup", status: 603, cause: "configured", fromGroupId: "g1" });
  });

  it("forward-mobile: designated member, else the member offered last, else the first with a mobile", () => {
    const w = world(3);
    (w.users[0] as User).mobile = "+491511";
    (w.users[2] as User).mobile = "+491513";
    const { base } = setup([], w);
    const designated = group({ members: ids(3), noAnswer: { kind: "forward-mobile", memberId: "u3" } });
    assert.deepEqual(pickNoAnswer({ ...base, group: designated, allOffline: false }), { kind: "forward", number: "+491513", source: "mobile", memberId: "u3", fromGroupId: "g1" });

    const g = group({ members: ids(3), noAnswer: { kind: "forward-mobile" } });
    const plans = runCall(w, g); // u1, u2, u3 offered in turn; u3 last
    const call = plans.at(-1)?.call as CallState;
    assert.equal(call.lastOffered, "u3");
    assert.equal(pickNoAnswer({ ...base, group: g, call, allOffline: false }).kind, "forward");
    assert.deepEqual(pickNoAnswer({ ...base, group: g, call: { ...call, lastOffered: "u2" }, allOffline: false }), { kind: "forward", number: "+491511", source: "mobile", memberId: "u1", fromGroupId: "g1" }, "u2 has no mobile: first member with one");
    assert.deepEqual(pickNoAnswer({ ...base, group: g, allOffline: true }), { kind: "forward", number: "+491511", source: "mobile", memberId: "u1", fromGroupId: "g1" });
    const noMobiles = group({ members: ["u2"], noAnswer: { kind: "forward-mobile" } });
    assert.deepEqual(pickNoAnswer({ ...base, group: noMobiles, allOffline: false }), { kind: "hangup", status: 480, cause: "no-mobile", fromGroupId: "g1" });
  });

  it("wait-for-operator holds the caller until now + maxWaitS, and the engine resolves `then` afterwards", () => {
    const { base } = setup([]);
    const g = group({ members: ["u1"], noAnswer: { kind: "wait-for-operator", maxWaitS: 30, then: { kind: "voicemail", uri: "sip:vm@x" } } });
    const d = pickNoAnswer({ ...base, group: g, allOffline: false });
    assert.deepEqual(d, { kind: "wait-for-operator", until: T0 + 30_000, then: { kind: "voicemail", uri: "sip:vm@x" }, fromGroupId: "g1" });
    assert.ok(d.kind === "wait-for-operator");
    assert.deepEqual(pickNoAnswer({ ...base, group: g, allOffline: false, action: d.then, now: d.until }), { kind: "voicemail", uri: "sip:vm@x", fromGroupId: "g1" });
  });

  it("wait-for-operator is skipped at once when every member is offline", () => {
    const { base } = setup([]);
    const g = group({ members: ["u1"], noAnswer: { kind: "wait-for-operator", maxWaitS: 30, then: { kind: "hangup", status: 486 } } });
    assert.deepEqual(pickNoAnswer({ ...base, group: g, allOffline: true }), { kind: "hangup", status: 486, cause: "configured", fromGroupId: "g1" });
  });

  it("overflow to a group with someone online hands the call over with the visited set", () => {
    const a = group({ id: "a", members: ["u1"], noAnswer: { kind: "overflow-group", groupId: "b" } });
    const b = group({ id: "b", number: "101", members: ["u2"], noAnswer: { kind: "hangup" } });
    const { base } = setup([a, b]);
    const d = pickNoAnswer({ ...base, group: a, allOffline: false });
    assert.ok(d.kind === "overflow-group");
    assert.equal(d.groupId, "b");
    assert.deepEqual([...d.visited].sort(), ["a", "b"]);
  });

  it("overflow goes straight through groups whose members are all offline", () => {
    const a = group({ id: "a", members: ["u1"], noAnswer: { kind: "overflow-group", groupId: "b" } });
    const b = group({ id: "b", number: "101", members: ["u2"], noAnswer: { kind: "wait-for-operator", maxWaitS: 60, then: { kind: "overflow-group", groupId: "c" } } });
    const c = group({ id: "c", number: "102", members: ["u3"], noAnswer: { kind: "voicemail", uri: "sip:vm-c@x" } });
    const { w, base } = setup([a, b, c]);
    w.online.delete("p2");
    w.online.delete("p3");
    assert.deepEqual(pickNoAnswer({ ...base, group: a, allOffline: false }), { kind: "voicemail", uri: "sip:vm-c@x", fromGroupId: "c" });
    w.online.add("p3");
    const d = pickNoAnswer({ ...base, group: a, allOffline: false });
    assert.equal(d.kind === "overflow-group" && d.groupId, "c");
  });

  it("run-time loop guard: a chain that comes back ends the call with 480, even through offline groups", () => {
    const a = group({ id: "a", members: ["u1"], noAnswer: { kind: "overflow-group", groupId: "b" } });
    const b = group({ id: "b", number: "101", members: ["u2"], noAnswer: { kind: "overflow-group", groupId: "a" } });
    const { w, base } = setup([a, b]);
    w.online.clear();
    assert.deepEqual(pickNoAnswer({ ...base, group: a, allOffline: true }), { kind: "hangup", status: 480, cause: "overflow-loop", fromGroupId: "b" });
    // Across distributions: the call went a → b, b exhausted; b's overflow back to a is a loop.
    w.online.add("p1");
    const first = pickNoAnswer({ ...base, group: a, allOffline: false });
    assert.ok(first.kind === "hangup"); // b all offline → b's action → a already visited
    w.online.add("p2");
    const toB = pickNoAnswer({ ...base, group: a, allOffline: false });
    assert.ok(toB.kind === "overflow-group");
    assert.deepEqual(pickNoAnswer({ ...base, group: b, allOffline: false, visited: toB.visited }), { kind: "hangup", status: 480, cause: "overflow-loop", fromGroupId: "b" });
    const self = group({ id: "self", members: ["u1"], noAnswer: { kind: "overflow-group", groupId: "self" } });
    assert.equal((pickNoAnswer({ ...setup([self]).base, group: self, allOffline: false }) as { cause?: string }).cause, "overflow-loop");
  });

  it("an overflow target removed by a config push ends the call with 480", () => {
    const a = group({ id: "a", members: ["u1"], noAnswer: { kind: "overflow-group", groupId: "gone" } });
    const { base } = setup([a]);
    assert.deepEqual(pickNoAnswer({ ...base, group: a, allOffline: false }), { kind: "hangup", status: 480, cause: "unknown-group", fromGroupId: "a" });
  });
});

// --- selectFreeOperator --------------------------------------------------------------------

describe("selectFreeOperator", () => {
  function pick(w: World, g: Group, exclude?: string[]) {
    const idx = indexSite({ users: w.users, devices: w.devices, groups: [g] });
    return selectFreeOperator({
      group: g,
      usersById: idx.usersById,
      devicesByOwner: idx.devicesByOwner,
      presence: { onlineDevices: w.online, activeCalls: w.activeCalls },
      evenlyLastOffered: w.lastOffered,
      ...(exclude ? { exclude: new Set(exclude) } : {}),
    });
  }

  it("gives the waiting call to the first free member in list order", () => {
    const w = world(4, { soft: true });
    w.activeCalls.set("u1", 1);
    w.online.delete("p2");
    w.online.delete("s2");
    assert.deepEqual(pick(w, group({ members: ids(4) })), { memberId: "u3", deviceIds: ["p3", "s3"], physical: 1 });
    assert.equal(pick(w, group({ members: ids(4) }), ["u3"])?.memberId, "u4");
  });

  it("respects away only when the group checks availability, dnd always", () => {
    const w = world(2);
    (w.users[0] as User).availability = "away";
    assert.equal(pick(w, group({ members: ids(2) }))?.memberId, "u1");
    assert.equal(pick(w, group({ members: ids(2), checkAvailability: true }))?.memberId, "u2");
    (w.users[0] as User).availability = "dnd";
    assert.equal(pick(w, group({ members: ids(2) }))?.memberId, "u2");
  });

  it("evenly: the free member offered longest ago", () => {
    const w = world(3);
    w.lastOffered.set("u1", T0 - 10);
    w.lastOffered.set("u2", T0 - 30);
    w.lastOffered.set("u3", T0 - 20);
    assert.equal(pick(w, group({ strategy: "evenly", members: ids(3) }))?.memberId, "u2");
    w.activeCalls.set("u2", 1);
    assert.equal(pick(w, group({ strategy: "evenly", members: ids(3) }))?.memberId, "u3");
  });

  it("nobody free → undefined", () => {
    const w = world(2);
    for (const u of ids(2)) w.activeCalls.set(u, 1);
    assert.equal(pick(w, group({ members: ids(2) })), undefined);
    assert.equal(pick(world(0), group({ members: [] })), undefined);
  });
});

// --- pickup --------------------------------------------------------------------------------

describe("call pickup", () => {
  const users = [user("u1", "201"), user("u2", "202"), user("u3", "203"), user("u4", "204")];
  const sales = group({ id: "sales", number: "100", members: ["u1", "u2", "u3"], pickup: { enabled: true } });
  const support = group({ id: "support", number: "101", members: ["u3", "u4"], pickup: { enabled: true } });
  const closed = group({ id: "closed", number: "102", members: ["u1", "u4"], pickup: { enabled: false } });
  const idx = indexSite({ users, devices: [], groups: [sales, support, closed] });
  const calls: RingingCall[] = [
    { callId: "c-support", groupId: "support", ringingMembers: ["u4"], startedAt: T0 + 10 },
    { callId: "c-sales-new", groupId: "sales", ringingMembers: ["u2"], startedAt: T0 + 20 },
    { callId: "c-sales-old", groupId: "sales", ringingMembers: ["u1"], startedAt: T0 + 5 },
    { callId: "c-closed", groupId: "closed", ringingMembers: ["u4"], startedAt: T0 },
    { callId: "c-direct", groupId: undefined, ringingMembers: ["u2"], startedAt: T0 + 1 },
  ];
  const find = (pickerUserId: string, targetExtension?: string, ringingCalls = calls) =>
    findPickupTarget({ ringingCalls, pickerUserId, ...(targetExtension ? { targetExtension } : {}), groupsById: idx.groupsById, groupsByNumber: idx.groupsByNumber, usersByExtension: idx.usersByExtension });
  const picked = (r: ReturnType<typeof find>) => (r.ok ? r.call.callId : r.reason);

  it("parses *8 and *8<ext>", () => {
    assert.deepEqual(parsePickupCode("*8"), { kind: "group" });
    assert.deepEqual(parsePickupCode("*8202"), { kind: "directed", extension: "202" });
    assert.equal(parsePickupCode("*8abc"), undefined);
    assert.equal(parsePickupCode("*81234567"), undefined);
    assert.equal(parsePickupCode("202"), undefined);
    assert.deepEqual(parsePickupCode("##5", "##"), { kind: "directed", extension: "5" });
  });

  it("group pickup takes the oldest call ringing in one of the picker's groups with pickup enabled", () => {
    assert.equal(picked(find("u1")), "c-sales-old", "u1 is in sales and closed; closed has pickup off");
    assert.equal(picked(find("u3")), "c-sales-old", "u3 is in sales and support: oldest of both");
    assert.equal(picked(find("u4")), "c-support");
    assert.equal(picked(find("u4", undefined, calls.filter((c) => c.groupId !== "support"))), "nothing-to-pick-up");
    assert.equal(picked(find("stranger")), "nothing-to-pick-up");
  });

  it("directed pickup to a user's extension takes calls ringing at that user, direct or via a pickup group", () => {
    assert.equal(picked(find("u4", "202")), "c-direct", "oldest of c-direct (T0+1) and c-sales-new (T0+20)");
    assert.equal(picked(find("u1", "204")), "c-support", "c-closed rings u4 too, but closed has pickup off");
  });

  it("directed pickup to a group number takes that group's oldest call when pickup is on", () => {
    assert.equal(picked(find("u4", "100")), "c-sales-old");
    assert.equal(picked(find("u4", "102")), "nothing-to-pick-up");
    assert.equal(picked(find("u4", "999")), "unknown-extension");
  });

  it("ties on start time go to the call listed first", () => {
    const tied: RingingCall[] = [
      { callId: "x", groupId: "sales", ringingMembers: ["u1"], startedAt: T0 },
      { callId: "y", groupId: "sales", ringingMembers: ["u1"], startedAt: T0 },
    ];
    assert.equal(picked(find("u2", undefined, tied)), "x");
  });
});
