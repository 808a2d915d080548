// Working hours, wrap-up, the responsible operator first, and "why": the pure parts (issue 14).
// Time is a number; zones come from Node's ICU data.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { formatLocal, instantOf, isOpen, isRealDate, timeZoneProblem, type Schedule } from "../../agent/routing/hours.ts";
import { indexSite, parseSite, type DeviceRef, type Group, type User, type ValidationError } from "../../agent/routing/model.ts";
import { pickNoAnswer, planStep, selectFreeOperator, startCall, type PassedGroup, type PlanInput, type RingPlan } from "../../agent/routing/plan.ts";
import { LastAnswered, normalizeCallerNumber, numberOfUri, responsibleFor } from "../../agent/routing/callers.ts";
import { WhyLog, involves, renderWhy, whyRecord, type CallTrace } from "../../agent/routing/why.ts";
import { checkSiteConfig } from "../../agent/site/site.ts";
import { validatePayload } from "../../agent/contract.ts";
import { Store } from "../../agent/store/store.ts";
import { tempDir } from "../tmpdir.ts";
import { ConsoleSession, LoginGuard } from "../../agent/console/serial.ts";
import { hashInstallerPassword } from "../../agent/appliance/password.ts";
import { defaultSettings } from "../../agent/config.ts";
import { createLogger } from "../../agent/log.ts";

const Z = (iso: string): number => Date.parse(iso);
const iso = (t: number | undefined): string | undefined => (t === undefined ? undefined : new Date(t).toISOString());
const ALL: Schedule["weekly"][number]["days"] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

function at(schedule: Schedule, zone: string, when: string): { open: boolean; until: string | undefined } {
  const r = isOpen(schedule, zone, Z(when));
  return { open: r.open, until: iso(r.until) };
}

describe("isOpen: a weekly schedule in the site's zone", () => {
  const office: Schedule = { weekly: [{ days: ["mon", "tue", "wed", "thu", "fri"], from: "08:00", to: "18:00" }] };

  it("open inside a range until its end; closed after it until the next opening (over a weekend)", () => {
    // Thursday 2026-12-03 11:00 CET.
    assert.deepEqual(at(office, "Europe/Berlin", "2026-12-03T10:00:00Z"), { open: true, until: "2026-12-03T17:00:00.000Z" });
    // Friday 18:30 CET: closed until Monday 08:00 CET.
    assert.deepEqual(at(office, "Europe/Berlin", "2026-12-04T17:30:00Z"), { open: false, until: "2026-12-07T07:00:00.000Z" });
    // The boundary itself: [from, to).
    assert.deepEqual(at(office, "Europe/Berlin", "2026-12-03T07:00:00Z"), { open: true, until: "2026-12-03T17:00:00.000Z" });
    assert.deepEqual(at(office, "Europe/Berlin", "2026-12-03T17:00:00Z"), { open: false, until: "2026-12-04T07:00:00.000Z" });
    // The same wall-clock schedule in New York is five hours later.
    assert.deepEqual(at(office, "America/New_York", "2026-12-03T10:00:00Z"), { open: false, until: "2026-12-03T13:00:00.000Z" });
  });

  it("ranges that touch across midnight (24:00, then 00:00) are one open stretch", () => {
    const s: Schedule = { weekly: [{ days: ["mon"], from: "08:00", to: "24:00" }, { days: ["tue"], from: "00:00", to: "12:00" }] };
    assert.deepEqual(at(s, "UTC", "2026-12-07T20:00:00Z"), { open: true, until: "2026-12-08T12:00:00.000Z" });
  });

  it("a schedule with no hours is closed with no opening in reach", () => {
    assert.deepEqual(at({ weekly: [] }, "Europe/Berlin", "2026-12-03T10:00:00Z"), { open: false, until: undefined });
  });

  it("a holiday closes a weekday all day; a short day has its own hours", () => {
    const s: Schedule = { ...office, exceptions: [{ date: "2026-12-24", ranges: [{ from: "08:00", to: "12:00" }] }, { date: "2026-12-25", ranges: [] }] };
    // Christmas Eve (Thursday) 11:00 CET: open until 12:00 CET.
    assert.deepEqual(at(s, "Europe/Berlin", "2026-12-24T10:00:00Z"), { open: true, until: "2026-12-24T11:00:00.000Z" });
    // 12:30 CET: closed; the 25th (Friday) is a holiday and the 26th/27th a weekend: Monday.
    assert.deepEqual(at(s, "Europe/Berlin", "2026-12-24T11:30:00Z"), { open: false, until: "2026-12-28T07:00:00.000Z" });
    assert.deepEqual(at(s, "Europe/Berlin", "2026-12-25T09:00:00Z"), { open: false, until: "2026-12-28T07:00:00.000Z" });
    // Without the exceptions the 25th would be an ordinary Friday.
    assert.deepEqual(at(office, "Europe/Berlin", "2026-12-25T09:00:00Z"), { open: true, until: "2026-12-25T17:00:00.000Z" });
  });
});

describe("isOpen across daylight-saving changes (RFC 5545 §3.3.5 rules)", () => {
  it("Europe/Berlin, spring forward (2026-03-29, 02:00 CET → 03:00 CEST)", () => {
    // A day range around the change lasts one hour less in real time.
    const night: Schedule = { weekly: [{ days: ["sun"], from: "00:00", to: "06:00" }] };
    assert.deepEqual(at(night, "Europe/Berlin", "2026-03-29T00:30:00Z"), { open: true, until: "2026-03-29T04:00:00.000Z" });
    // 02:30 does not exist that day: read with the offset before the gap (CET): 01:30Z = 03:30 CEST.
    assert.equal(iso(instantOf("Europe/Berlin", Date.UTC(2026, 2, 29, 2, 30))), "2026-03-29T01:30:00.000Z");
    const gap: Schedule = { weekly: [{ days: ["sun"], from: "02:30", to: "04:00" }] };
    assert.deepEqual(at(gap, "Europe/Berlin", "2026-03-29T01:20:00Z"), { open: false, until: "2026-03-29T01:30:00.000Z" });
    assert.deepEqual(at(gap, "Europe/Berlin", "2026-03-29T01:45:00Z"), { open: true, until: "2026-03-29T02:00:00.000Z" });
    // The week after, 02:30 exists again (CEST): 00:30Z.
    assert.deepEqual(at(gap, "Europe/Berlin", "2026-04-05T00:10:00Z"), { open: false, until: "2026-04-05T00:30:00.000Z" });
  });

  it("Europe/Berlin, fall back (2026-10-25, 03:00 CEST → 02:00 CET): 02:30 is its first occurrence", () => {
    const early: Schedule = { weekly: [{ days: ALL, from: "00:00", to: "02:30" }] };
    assert.equal(iso(instantOf("Europe/Berlin", Date.UTC(2026, 9, 25, 2, 30))), "2026-10-25T00:30:00.000Z");
    // 02:10 CEST (first pass): open until the first 02:30.
    assert.deepEqual(at(early, "Europe/Berlin", "2026-10-25T00:10:00Z"), { open: true, until: "2026-10-25T00:30:00.000Z" });
    // 02:10 CET (the repeated hour): stays closed; opens at Monday 00:00 CET.
    assert.equal(formatLocal("Europe/Berlin", Z("2026-10-25T01:10:00Z")), "2026-10-25 02:10 (UTC+01:00)");
    assert.deepEqual(at(early, "Europe/Berlin", "2026-10-25T01:10:00Z"), { open: false, until: "2026-10-25T23:00:00.000Z" });
    // A range from 02:30 opens at the first 02:30 and lasts to 05:00 CET: 3.5 h of real time.
    const late: Schedule = { weekly: [{ days: ["sun"], from: "02:30", to: "05:00" }] };
    assert.deepEqual(at(late, "Europe/Berlin", "2026-10-25T00:45:00Z"), { open: true, until: "2026-10-25T04:00:00.000Z" });
  });

  it("America/New_York, spring forward (2026-03-08, 02:00 EST → 03:00 EDT)", () => {
    const s: Schedule = { weekly: [{ days: ["sun"], from: "01:00", to: "03:30" }] };
    assert.deepEqual(at(s, "America/New_York", "2026-03-08T06:59:00Z"), { open: true, until: "2026-03-08T07:30:00.000Z" });
    assert.deepEqual(at(s, "America/New_York", "2026-03-08T07:00:00Z"), { open: true, until: "2026-03-08T07:30:00.000Z" });
    // A closing time in the gap (02:30) is read with EST: 07:30Z, i.e. 03:30 EDT.
    const gapEnd: Schedule = { weekly: [{ days: ["sun"], from: "00:00", to: "02:30" }] };
    assert.deepEqual(at(gapEnd, "America/New_York", "2026-03-08T06:30:00Z"), { open: true, until: "2026-03-08T07:30:00.000Z" });
  });

  it("America/New_York, fall back (2026-11-01, 02:00 EDT → 01:00 EST): 01:30 is the EDT one", () => {
    const s: Schedule = { weekly: [{ days: ["sun"], from: "01:30", to: "09:00" }] };
    assert.deepEqual(at(s, "America/New_York", "2026-11-01T05:15:00Z"), { open: false, until: "2026-11-01T05:30:00.000Z" });
    assert.deepEqual(at(s, "America/New_York", "2026-11-01T05:45:00Z"), { open: true, until: "2026-11-01T14:00:00.000Z" });
    // 01:15 EST (the repeated hour, after 01:30 EDT passed): open, it is inside the stretch.
    assert.deepEqual(at(s, "America/New_York", "2026-11-01T06:15:00Z"), { open: true, until: "2026-11-01T14:00:00.000Z" });
  });
});

describe("time zones and dates", () => {
  it("IANA names and links pass; offsets, wrong case and unknown names are refused with a reason", () => {
    for (const z of ["Europe/Berlin", "America/New_York", "UTC", "Asia/Kolkata", "US/Eastern"]) assert.equal(timeZoneProblem(z), undefined, z);
    assert.match(timeZoneProblem("Europe/berlin") ?? "", /"Europe\/Berlin".*case-sensitive/);
    assert.match(timeZoneProblem("Mars/Olympus_Mons") ?? "", /not a time zone/);
    for (const z of ["+01:00", "", 42, null, "x".repeat(65), "Europe/Berlin\n"]) assert.notEqual(timeZoneProblem(z), undefined, String(z));
  });

  it("real calendar dates only", () => {
    for (const d of ["2028-02-29", "2000-02-29", "0000-02-29", "2026-12-31", "2026-04-30"]) assert.equal(isRealDate(d), true, d);
    for (const d of ["2026-02-29", "1900-02-29", "2026-02-30", "2026-04-31", "2026-13-01", "2026-00-10", "2026-01-00", "2026-1-1", "26-01-01"]) assert.equal(isRealDate(d), false, d);
  });
});

// --- validation --------------------------------------------------------------------------------

function baseSite(): any {
  return {
    settings: { timeZone: "Europe/Berlin" },
    users: [
      { id: "anna", extension: "201", name: "Anna", availability: "available" },
      { id: "ben", extension: "202", name: "Ben", availability: "available" },
    ],
    devices: [{ id: "p-anna", ownerId: "anna", kind: "physical" }],
    groups: [
      {
        id: "sales", number: "600", name: "Sales", strategy: "sequential", members: ["anna", "ben"], ringCount: 2, checkAvailability: false,
        noAnswer: { kind: "hangup" },
        hours: { weekly: [{ days: ["mon", "tue"], from: "08:00", to: "12:00" }, { days: ["mon"], from: "13:00", to: "18:00" }], exceptions: [{ date: "2026-12-25", ranges: [] }] },
        outOfHours: { kind: "voicemail", uri: "sip:vm@192.0.2.9" },
        wrapUpS: 30,
        responsibleFirst: { ringCount: 2 },
      },
      { id: "support", number: "601", name: "Support", strategy: "simultaneous", members: ["ben"], ringCount: 2, checkAvailability: false, noAnswer: { kind: "hangup" } },
    ],
    knownCallers: [{ number: "+4930123456", userId: "anna" }],
  };
}
function errorsOf(mutate: (s: any) => void): string[] {
  const s = baseSite();
  mutate(s);
  const r = parseSite(s);
  return r.ok ? [] : r.errors.map((e: ValidationError) => `${e.code}@${e.path}`);
}

describe("validation of hours, wrap-up and known callers, by path", () => {
  it("a valid site keeps them (normalised)", () => {
    const r = parseSite(baseSite());
    assert.ok(r.ok, JSON.stringify(!r.ok && r.errors));
    const g = r.site.groups[0] as Group;
    assert.equal(g.wrapUpS, 30);
    assert.deepEqual(g.responsibleFirst, { ringCount: 2 });
    assert.equal(g.hours?.weekly.length, 2);
    assert.equal(r.site.timeZone, "Europe/Berlin");
    assert.equal(indexSite(r.site).responsibleByNumber.get("+4930123456"), "anna");
  });

  it("bad times, empty and overlapping ranges, bad days", () => {
    assert.deepEqual(errorsOf((s) => (s.groups[0].hours.weekly[0].from = "8:00")), ["invalid-time@groups[0].hours.weekly[0].from"]);
    assert.deepEqual(errorsOf((s) => (s.groups[0].hours.weekly[0].to = "24:30")), ["invalid-time@groups[0].hours.weekly[0].to"]);
    assert.deepEqual(errorsOf((s) => (s.groups[0].hours.weekly[0].from = "24:00")), ["invalid-time@groups[0].hours.weekly[0].from"]);
    assert.deepEqual(errorsOf((s) => (s.groups[0].hours.weekly[0].to = "08:00")), ["empty-range@groups[0].hours.weekly[0]"]);
    assert.deepEqual(errorsOf((s) => (s.groups[0].hours.weekly[1].from = "11:00")), ["overlapping-hours@groups[0].hours.weekly[1]"]);
    assert.deepEqual(errorsOf((s) => (s.groups[0].hours.weekly[0].days = ["mon", "funday"])), ["invalid-day@groups[0].hours.weekly[0].days[1]"]);
    assert.deepEqual(errorsOf((s) => (s.groups[0].hours.weekly[0].days = ["mon", "mon"])), ["invalid-day@groups[0].hours.weekly[0].days[1]"]);
    assert.deepEqual(errorsOf((s) => (s.groups[0].hours.weekly[0].days = [])), ["invalid-day@groups[0].hours.weekly[0].days"]);
    assert.deepEqual(errorsOf((s) => (s.groups[0].hours = "9-5")), ["invalid-hours@groups[0].hours"]);
    assert.deepEqual(errorsOf((s) => (s.groups[0].hours.weekly = Array.from({ length: 51 }, () => ({ days: ["sun"], from: "01:00", to: "02:00" })))), ["too-many@groups[0].hours.weekly"]);
  });

  it("bad and repeated dates, overlapping exception ranges", () => {
    assert.deepEqual(errorsOf((s) => (s.groups[0].hours.exceptions[0].date = "2026-02-30")), ["invalid-date@groups[0].hours.exceptions[0].date"]);
    assert.deepEqual(errorsOf((s) => (s.groups[0].hours.exceptions[0].date = "25.12.2026")), ["invalid-date@groups[0].hours.exceptions[0].date"]);
    assert.deepEqual(errorsOf((s) => s.groups[0].hours.exceptions.push({ date: "2026-12-25", ranges: [] })), ["duplicate-date@groups[0].hours.exceptions[1].date"]);
    assert.deepEqual(
      errorsOf((s) => (s.groups[0].hours.exceptions[0].ranges = [{ from: "08:00", to: "12:00" }, { from: "11:59", to: "13:00" }])),
      ["overlapping-hours@groups[0].hours.exceptions[0].ranges[1]"],
    );
    assert.deepEqual(errorsOf((s) => (s.groups[0].hours.exceptions[0].ranges = "closed")), ["invalid-hours@groups[0].hours.exceptions[0].ranges"]);
  });

  it("the zone: unknown, an alias, or missing while a group has hours", () => {
    assert.deepEqual(errorsOf((s) => (s.settings.timeZone = "Europe/Atlantis")), ["unknown-time-zone@settings.timeZone"]);
    assert.deepEqual(errorsOf((s) => (s.settings.timeZone = "europe/berlin")), ["unknown-time-zone@settings.timeZone"]);
    assert.deepEqual(errorsOf((s) => delete s.settings.timeZone), ["missing-time-zone@groups[0].hours"]);
    // No hours anywhere: no zone needed.
    assert.deepEqual(errorsOf((s) => {
      delete s.settings.timeZone;
      delete s.groups[0].hours;
      delete s.groups[0].outOfHours;
    }), []);
  });

  it("the out-of-hours action: required with hours, refused without, never a wait, checked like no-answer", () => {
    assert.deepEqual(errorsOf((s) => delete s.groups[0].outOfHours), ["missing-out-of-hours@groups[0].outOfHours"]);
    assert.deepEqual(errorsOf((s) => (s.groups[1].outOfHours = { kind: "hangup" })), ["out-of-hours-without-hours@groups[1].outOfHours"]);
    assert.deepEqual(errorsOf((s) => (s.groups[0].outOfHours = { kind: "wait-for-operator", maxWaitS: 5, then: { kind: "hangup" } })), ["invalid-out-of-hours@groups[0].outOfHours.kind"]);
    assert.deepEqual(errorsOf((s) => (s.groups[0].outOfHours = { kind: "overflow-group", groupId: "nowhere" })), ["unknown-overflow-target@groups[0].outOfHours.groupId"]);
    assert.deepEqual(errorsOf((s) => (s.groups[0].outOfHours = { kind: "voicemail", uri: "http://x" })), ["invalid-voicemail-uri@groups[0].outOfHours.uri"]);
  });

  it("overflow loops through out-of-hours edges are refused, at the first group of the loop", () => {
    const errs = errorsOf((s) => {
      s.groups[0].outOfHours = { kind: "overflow-group", groupId: "support" };
      s.groups[1].noAnswer = { kind: "overflow-group", groupId: "sales" };
    });
    assert.deepEqual(errs, ["overflow-loop@groups[0].outOfHours.groupId"]);
    const r = parseSite((() => { const s = baseSite(); s.groups[0].outOfHours = { kind: "overflow-group", groupId: "support" }; s.groups[1].noAnswer = { kind: "overflow-group", groupId: "sales" }; return s; })());
    assert.ok(!r.ok && /sales → support → sales/.test(r.errors[0]!.message));
    // The same two edges without a cycle are fine.
    assert.deepEqual(errorsOf((s) => (s.groups[0].outOfHours = { kind: "overflow-group", groupId: "support" })), []);
  });

  it("wrap-up and responsibleFirst bounds", () => {
    assert.deepEqual(errorsOf((s) => (s.groups[0].wrapUpS = -1)), ["invalid-wrap-up@groups[0].wrapUpS"]);
    assert.deepEqual(errorsOf((s) => (s.groups[0].wrapUpS = 3601)), ["invalid-wrap-up@groups[0].wrapUpS"]);
    assert.deepEqual(errorsOf((s) => (s.groups[0].wrapUpS = 1.5)), ["invalid-wrap-up@groups[0].wrapUpS"]);
    assert.deepEqual(errorsOf((s) => (s.groups[0].responsibleFirst = { ringCount: 0 })), ["invalid-ring-count@groups[0].responsibleFirst.ringCount"]);
    assert.deepEqual(errorsOf((s) => (s.groups[0].responsibleFirst = 2)), ["invalid-type@groups[0].responsibleFirst"]);
  });

  it("known callers: E.164 numbers, unique, known users, bounded", () => {
    assert.deepEqual(errorsOf((s) => (s.knownCallers[0].number = "030123456")), ["invalid-caller-number@knownCallers[0].number"]);
    assert.deepEqual(errorsOf((s) => (s.knownCallers[0].number = "+0123")), ["invalid-caller-number@knownCallers[0].number"]);
    assert.deepEqual(errorsOf((s) => (s.knownCallers[0].number = "+1234567890123456")), ["invalid-caller-number@knownCallers[0].number"]);
    assert.deepEqual(errorsOf((s) => s.knownCallers.push({ number: "+4930123456", userId: "ben" })), ["duplicate-caller@knownCallers[1].number"]);
    assert.deepEqual(errorsOf((s) => (s.knownCallers[0].userId = "zoe")), ["unknown-responsible@knownCallers[0].userId"]);
    assert.deepEqual(errorsOf((s) => (s.knownCallers = { "+4930123456": "anna" })), ["invalid-type@knownCallers"]);
    assert.deepEqual(errorsOf((s) => (s.knownCallers = Array.from({ length: 20001 }, (_, i) => ({ number: `+49${1000000 + i}`, userId: "anna" })))), ["too-many@knownCallers"]);
  });

  it("the site file: the same checks with the site file's paths, and the schema agrees on shape", () => {
    const file = (mutate: (s: any) => void): string[] => {
      const s: any = { schema: "ringedge.site/1", version: 1, ...baseSite() };
      s.devices = [{ id: "p-anna", owner: "anna", kind: "physical" }];
      mutate(s);
      const r = checkSiteConfig(s, []);
      return r.ok ? [] : r.errors.map((e) => `${e.code}@${e.path}`);
    };
    assert.deepEqual(file(() => {}), []);
    assert.deepEqual(file((s) => (s.settings.timeZone = "Nowhere/Land")), ["unknown-time-zone@settings.timeZone"]);
    assert.deepEqual(file((s) => (s.groups[0].hours.weekly[1].from = "11:00")), ["overlapping-hours@groups[0].hours.weekly[1]"]);
    assert.deepEqual(file((s) => (s.knownCallers[0].userId = "zoe")), ["unknown-responsible@knownCallers[0].userId"]);
    // Shape errors come from the schema (and are not repeated by the model).
    assert.deepEqual(file((s) => (s.groups[0].hours.weekly[0].from = "8am")), ["schema@groups[0].hours.weekly[0].from"]);
    assert.deepEqual(file((s) => (s.groups[0].hours.exceptions[0].date = "2026-02-30")), ["invalid-date@groups[0].hours.exceptions[0].date"]);
    assert.equal(validatePayload("group", { id: "g", number: "1", name: "G", strategy: "sequential", members: [], ringCount: 1, checkAvailability: false, noAnswer: { kind: "hangup" }, wrapUpS: 5, hours: { weekly: [] }, outOfHours: { kind: "hangup" } }).ok, true);
  });
});

// --- the plan core -------------------------------------------------------------------------------

const UNIT = 100;
const T0 = 1_800_000_000_000;

function user(id: string, ext: string, over: Partial<User> = {}): User {
  return { id, extension: ext, name: id, availability: "available", callLimit: 1, ...over };
}
function group(over: Partial<Group> = {}): Group {
  return { id: "g", number: "600", name: "G", strategy: "sequential", members: ["u1", "u2", "u3"], ringCount: 2, checkAvailability: false, noAnswer: { kind: "hangup" }, ...over };
}
interface World {
  users: User[];
  devices: DeviceRef[];
  online: Set<string>;
  active: Map<string, number>;
}
function world(): World {
  const users = [user("u1", "201"), user("u2", "202"), user("u3", "203"), user("boss", "299")];
  const devices: DeviceRef[] = users.map((u) => ({ id: `p-${u.id}`, ownerId: u.id, kind: "physical" }));
  return { users, devices, online: new Set(devices.map((d) => d.id)), active: new Map() };
}
function input(w: World, g: Group, over: Partial<PlanInput> = {}): PlanInput {
  const idx = indexSite({ users: w.users, devices: w.devices, groups: [g] });
  return { group: g, usersById: idx.usersById, devicesByOwner: idx.devicesByOwner, presence: { onlineDevices: w.online, activeCalls: w.active }, evenlyLastOffered: new Map(), call: startCall(T0), now: T0, ringUnitMs: UNIT, ...over };
}
/** Runs a call to exhaustion. */
function run(w: World, g: Group, over: Partial<PlanInput> = {}): RingPlan[] {
  const plans: RingPlan[] = [];
  let call = startCall(T0);
  let now = T0;
  for (let i = 0; i < 50; i++) {
    const p = planStep(input(w, g, { ...over, call, now }));
    plans.push(p);
    if (p.exhausted) return plans;
    now = p.nextStepAt as number;
    call = p.call;
  }
  throw new Error("never exhausted");
}
const rang = (p: RingPlan): string[] => p.ring.map((r) => r.memberId);

describe("plan: wrap-up", () => {
  it("a member in wrap-up is skipped with reason wrap-up until it ends, then rings", () => {
    const w = world();
    const wrapUpUntil = new Map([["u1", T0 + 10_000]]);
    const plans = run(w, group(), { wrapUpUntil });
    assert.deepEqual(plans.map(rang), [["u2"], ["u3"], []]);
    assert.deepEqual(plans[0]!.skipped, [{ memberId: "u1", reason: "wrap-up" }]);
    const later = planStep(input(w, group(), { wrapUpUntil, now: T0 + 10_000 }));
    assert.deepEqual(rang(later), ["u1"]);
  });

  it("a waiting call is not given to a member in wrap-up", () => {
    const w = world();
    const idx = indexSite({ users: w.users, devices: w.devices, groups: [group()] });
    const base = { group: group(), usersById: idx.usersById, devicesByOwner: idx.devicesByOwner, presence: { onlineDevices: w.online, activeCalls: w.active }, evenlyLastOffered: new Map<string, number>() };
    assert.equal(selectFreeOperator({ ...base, wrapUpUntil: new Map([["u1", T0 + 5]]), now: T0 })?.memberId, "u2");
    assert.equal(selectFreeOperator({ ...base, wrapUpUntil: new Map([["u1", T0 + 5]]), now: T0 + 5 })?.memberId, "u1");
  });

  it("away and dnd are named apart when the group checks availability; offline and busy come first", () => {
    const w = world();
    w.users[0]!.availability = "away";
    w.users[1]!.availability = "dnd";
    w.online.delete("p-u3");
    const p = planStep(input(w, group({ strategy: "simultaneous", checkAvailability: true })));
    assert.deepEqual(p.skipped, [{ memberId: "u1", reason: "away" }, { memberId: "u2", reason: "dnd" }, { memberId: "u3", reason: "offline" }]);
    w.active.set("u1", 1);
    assert.deepEqual(planStep(input(w, group({ strategy: "simultaneous", checkAvailability: true }))).skipped[0], { memberId: "u1", reason: "busy" });
  });
});

describe("plan: the responsible operator first", () => {
  const rf = { responsibleFirst: { ringCount: 3 } };

  it("rings the responsible one alone for responsibleFirst rings, then the group's strategy from the start", () => {
    const w = world();
    const plans = run(w, group(rf), { responsible: "u2" });
    assert.deepEqual(plans.map(rang), [["u2"], ["u1"], ["u2"], ["u3"], []]);
    assert.equal(plans[0]!.responsible, "u2");
    assert.equal(plans[0]!.nextStepAt, T0 + 3 * UNIT);
    assert.deepEqual(plans[1]!.stop, ["u2"]);
    assert.equal(plans[1]!.responsible, undefined);
  });

  it("simultaneous: the responsible one alone, then everyone at once (stop comes before the new ring)", () => {
    const w = world();
    const plans = run(w, group({ ...rf, strategy: "simultaneous" }), { responsible: "u3" });
    assert.deepEqual(plans.map(rang), [["u3"], ["u1", "u2", "u3"], []]);
    assert.deepEqual(plans[1]!.stop, ["u3"]);
  });

  it("a responsible user outside the group rings first too", () => {
    const plans = run(world(), group(rf), { responsible: "boss" });
    assert.deepEqual(plans.map(rang), [["boss"], ["u1"], ["u2"], ["u3"], []]);
  });

  it("not online or busy: the strategy starts at once and the plan says why", () => {
    const w = world();
    w.active.set("u2", 1);
    const busy = run(w, group(rf), { responsible: "u2" });
    assert.deepEqual(busy.map(rang), [["u1"], ["u3"], []]);
    assert.deepEqual(busy[0]!.skipped, [{ memberId: "u2", reason: "busy" }]);
    w.active.clear();
    w.online.delete("p-u2");
    assert.deepEqual(run(w, group(rf), { responsible: "u2" })[0]!.skipped, [{ memberId: "u2", reason: "offline" }]);
  });

  it("without responsibleFirst on the group, or with no responsible user, nothing changes", () => {
    assert.deepEqual(run(world(), group(), { responsible: "u2" }).map(rang), [["u1"], ["u2"], ["u3"], []]);
    assert.deepEqual(run(world(), group(rf)).map(rang), [["u1"], ["u2"], ["u3"], []]);
  });
});

describe("plan: devices left out and closed overflow targets", () => {
  it("an offered member's offline devices and those beyond the cap are named with the reason", () => {
    const w = world();
    w.devices.push({ id: "p-u1-b", ownerId: "u1", kind: "physical" }, { id: "p-u1-c", ownerId: "u1", kind: "physical" });
    w.online.add("p-u1-b").add("p-u1-c");
    w.online.delete("p-u1");
    const p = planStep(input(w, group({ strategy: "simultaneous" }), { maxPhysical: 1 }));
    assert.deepEqual(p.ring.map((r) => r.deviceIds), [["p-u1-b"]]);
    // The plan records the offline device (cheap, rare); the one beyond the cap is derived by why.ts.
    assert.deepEqual(p.leftOut, [{ memberId: "u1", deviceId: "p-u1", reason: "offline" }]);
    assert.deepEqual(p.skipped, [{ memberId: "u2", reason: "cap" }, { memberId: "u3", reason: "cap" }]);
    const idx = indexSite({ users: w.users, devices: w.devices, groups: [] });
    const rec = whyRecord({ callId: "c", startedAt: T0, entries: [{ kind: "step", at: T0, group: group({ strategy: "simultaneous" }), plan: p }] }, 100, (u) => idx.devicesByOwner.get(u));
    assert.deepEqual(rec.steps[0]?.items?.[0], { userId: "u1", devices: ["p-u1-b"], leftOut: [{ deviceId: "p-u1", reason: "offline" }, { deviceId: "p-u1-c", reason: "cap" }] });
    assert.match(renderWhy({ callId: "c", at: T0 }, rec).join("\n"), /u1: rang on p-u1-b; not on p-u1 offline, p-u1-c beyond the 10-phone cap/);
    // Nothing left out: no field at all.
    assert.equal(planStep(input(world(), group())).leftOut, undefined);
  });

  it("an overflow into a closed group takes that group's out-of-hours action at once", () => {
    const w = world();
    const a = group({ id: "a", noAnswer: { kind: "overflow-group", groupId: "b" } });
    const b = group({ id: "b", number: "601", hours: { weekly: [] }, outOfHours: { kind: "voicemail", uri: "sip:vm-b@192.0.2.9" } });
    const idx = indexSite({ users: w.users, devices: w.devices, groups: [a, b] });
    const passed: PassedGroup[] = [];
    const d = pickNoAnswer({ group: a, groupsById: idx.groupsById, usersById: idx.usersById, devicesByOwner: idx.devicesByOwner, presence: { onlineDevices: w.online, activeCalls: w.active }, allOffline: false, now: T0, isClosed: (g) => g.id === "b", passed });
    assert.deepEqual(d, { kind: "voicemail", uri: "sip:vm-b@192.0.2.9", fromGroupId: "b" });
    assert.deepEqual(passed, [{ groupId: "b", reason: "closed" }]);
    const open = pickNoAnswer({ group: a, groupsById: idx.groupsById, usersById: idx.usersById, devicesByOwner: idx.devicesByOwner, presence: { onlineDevices: w.online, activeCalls: w.active }, allOffline: false, now: T0, isClosed: () => false });
    assert.equal(open.kind, "overflow-group");
  });
});

// --- callers ---------------------------------------------------------------------------------------

describe("known callers", () => {
  it("numbers are normalised to E.164; anything else is no number", () => {
    assert.equal(normalizeCallerNumber("+49 (30) 123-456"), "+4930123456");
    assert.equal(normalizeCallerNumber("004930123456"), "+4930123456");
    assert.equal(normalizeCallerNumber("030123456", "49"), "+4930123456");
    assert.equal(normalizeCallerNumber("030123456"), undefined);
    for (const bad of ["", "anonymous", "+49abc", "+0301234", "1234", "+".padEnd(40, "1")]) assert.equal(normalizeCallerNumber(bad, "49"), undefined, bad);
    assert.equal(numberOfUri("sip:+4930123456@trunk;user=phone"), "+4930123456");
    assert.equal(numberOfUri("<tel:+49-30-123456>"), "+49-30-123456");
    assert.equal(numberOfUri("sip:%ZZ@x"), undefined);
  });

  it("the directory wins over the memory; the memory expires and stays bounded", () => {
    const mem = new LastAnswered(2);
    mem.remember("+491", "ben", T0);
    const dir = new Map([["+492", "anna"]]);
    assert.deepEqual(responsibleFor("+492", dir, mem, 60_000, T0), { userId: "anna", source: "directory" });
    assert.deepEqual(responsibleFor("+491", dir, mem, 60_000, T0 + 59_999), { userId: "ben", source: "memory" });
    assert.equal(responsibleFor("+491", dir, mem, 60_000, T0 + 60_000), undefined);
    assert.equal(responsibleFor("+491", dir, mem, 0, T0), undefined);
    mem.remember("+493", "u1", T0);
    mem.remember("+494", "u2", T0);
    mem.remember("+495", "u3", T0);
    assert.equal(mem.size, 2);
    assert.equal(mem.lookup("+493", T0, 1000), undefined);
    mem.forget("u3");
    assert.equal(mem.lookup("+495", T0, 1000), undefined);
  });
});

// --- why ---------------------------------------------------------------------------------------------

describe("why: the core's reasons kept and said in plain words", () => {
  function traced(): CallTrace {
    const w = world();
    w.users[2]!.availability = "dnd";
    const g = group({ checkAvailability: true, responsibleFirst: { ringCount: 1 } });
    const trace: CallTrace = { callId: "c1", startedAt: T0, responsible: { userId: "u2", source: "directory" }, entries: [] };
    for (const plan of run(w, g, { responsible: "u2", wrapUpUntil: new Map([["u1", T0 + 1e9]]) })) trace.entries.push({ kind: "step", at: T0, group: g, plan });
    return trace;
  }

  it("the record keeps each step's offered and skipped operators with their reasons", () => {
    const rec = whyRecord(traced());
    assert.deepEqual(rec.responsible, { userId: "u2", source: "directory" });
    assert.deepEqual(rec.steps[0]?.responsible, "u2");
    assert.deepEqual(rec.steps[0]?.items, [{ userId: "u2", devices: ["p-u2"] }]);
    const skipped = rec.steps.flatMap((s) => s.items ?? []).filter((i) => i.reason !== undefined);
    assert.deepEqual(skipped, [{ userId: "u1", reason: "wrap-up" }, { userId: "u3", reason: "dnd" }]);
    assert.equal(validatePayload("why", JSON.parse(JSON.stringify(rec))).ok, true);
  });

  it("renders plain words, and for one user only what concerns them", () => {
    const rec = whyRecord(traced());
    const all = renderWhy({ callId: "c1", at: T0 }, rec).join("\n");
    assert.match(all, /u1: skipped: in wrap-up time/);
    assert.match(all, /u3: skipped: do not disturb/);
    assert.match(all, /step 1 in group g \(the responsible operator u2 alone\)/);
    const members = (): readonly string[] => ["u1", "u2", "u3"];
    const u1 = renderWhy({ callId: "c1", at: T0 }, rec, { userId: "u1", membersOf: members }).join("\n");
    assert.match(u1, /u1: not yet: the caller's responsible operator rang first/);
    assert.match(u1, /u1: skipped: in wrap-up time/);
    assert.doesNotMatch(u1, /u3/);
    assert.equal(involves(rec, "u3"), true);
    assert.equal(involves(rec, "boss", members), false);
  });

  it("a closed group and the action taken are said too; the record stays bounded", () => {
    const g = group({ hours: { weekly: [] }, outOfHours: { kind: "hangup" } });
    const trace: CallTrace = { callId: "c2", startedAt: T0, entries: [
      { kind: "closed", at: T0, group: g, until: T0 + 3_600_000 },
      { kind: "action", at: T0, group: g, decision: { kind: "hangup", status: 480, cause: "configured", fromGroupId: "g" }, outOfHours: true, passed: undefined },
    ] };
    const lines = renderWhy({ callId: "c2", at: T0 }, whyRecord(trace), { userId: "u1", membersOf: () => ["u1"] }).join("\n");
    assert.match(lines, /group g was closed \(out of hours\); it opens/);
    assert.match(lines, /u1: not offered: group g was out of hours/);
    assert.match(lines, /then: hung up \(480\) \(the out-of-hours action\)/);
    const big = group({ strategy: "simultaneous", members: Array.from({ length: 300 }, (_, i) => `x${i}`) });
    const bigTrace: CallTrace = { callId: "c3", startedAt: T0, entries: [{ kind: "step", at: T0, group: big, plan: planStep(input(world(), big)) }] };
    const rec = whyRecord(bigTrace, 100);
    assert.equal(rec.steps[0]?.items?.length, 100);
    assert.equal(rec.truncated, 200);
  });

  it("the record rides on the console's call events and survives in the call log across a restart", async () => {
    const rec = whyRecord(traced());
    const event = { bootId: "b1", seq: 1, type: "call.missed", at: T0, data: { callId: "c1", groupId: "g", caller: "+4930111222", target: "600", offered: ["u2"], outcome: "missed", why: rec } };
    assert.deepEqual(validatePayload("event", JSON.parse(JSON.stringify(event))), { ok: true });
    const bad = structuredClone(event) as any;
    bad.data.why.steps[0].kind = "guess";
    assert.equal(validatePayload("event", bad).ok, false);
    const dir = tempDir("ringedge-why-store-");
    const store = await Store.open(dir);
    assert.equal(store.appendCall({ id: "c1", at: T0, caller: "+4930111222", target: "600", outcome: "missed", offered: ["u2"], groupId: "g", why: rec }).ok, true);
    // A damaged why is refused, not stored.
    assert.equal(store.appendCall({ id: "c2", at: T0, caller: "x", target: "600", outcome: "missed", offered: [], why: { steps: "all" } as any }).ok, false);
    await store.flush();
    await store.close();
    const again = await Store.open(dir);
    assert.deepEqual(again.listCalls()[0]?.why, rec);
    await again.close();
  });

  it("the in-memory log keeps the most recent calls only", () => {
    const log = new WhyLog(2);
    for (const id of ["a", "b", "c"]) log.close(log.open(id, T0), { caller: "x", target: "600", outcome: "missed" });
    assert.equal(log.get("a"), undefined);
    assert.deepEqual(log.recent().map((e) => e.trace.callId), ["c", "b"]);
    assert.equal(log.get("c")?.outcome, "missed");
  });
});

describe("why on the serial console", () => {
  it("why <user> asks for the user's last call, why <user> <call> for one; bad input gets usage or the error", async () => {
    const settings = { ...defaultSettings(), serialPassword: await hashInstallerPassword("install-3r"), serialIdleTimeoutS: 0 };
    const asked: unknown[] = [];
    const table = {
      "call.why": (args: Record<string, unknown>) => {
        asked.push(args);
        if (args.user === "zoe") throw new Error("no user 'zoe' (see ringedge user list)");
        return { lines: ["call c9 at 2026-12-03T10:00:00.000Z", "  step 1 in group sales:", `    ${String(args.user)}: skipped: in wrap-up time after a call through this group`] };
      },
    };
    let out = "";
    const s = new ConsoleSession({ settings, guard: new LoginGuard(settings), table, write: (t) => (out += t), log: createLogger("silent") });
    s.begin();
    s.input(Buffer.from("install-3r\r", "latin1"));
    await s.idle();
    out = "";
    for (const line of ["why ben", "why ben c9", "why", "why a b c", "why zoe"]) s.input(Buffer.from(`${line}\r`, "latin1"));
    await s.idle();
    assert.deepEqual(asked, [{ last: true, user: "ben" }, { callId: "c9", user: "ben" }, { last: true, user: "zoe" }]);
    assert.match(out, /ben: skipped: in wrap-up time after a call through this group\r\n/);
    assert.equal(out.match(/usage: why <user id> \[call-id\]/g)?.length, 2);
    assert.match(out, /error: no user 'zoe'/);
    s.close();
  });
});
