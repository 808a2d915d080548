// Mailboxes in the site model (issue 13): user and group mailboxes, the voicemail action's
// three forms (URI, the group's own mailbox, a named mailbox), defaults, and every kind of bad
// input reported at its JSON path by both the contract schema and the model.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import { validatePayload } from "../../agent/contract.ts";
import { checkSiteConfig } from "../../agent/site/site.ts";
import { indexSite, mailboxOf, parseSite, MAILBOX_DEFAULTS } from "../../agent/routing/model.ts";
import { pickNoAnswer } from "../../agent/routing/plan.ts";

const EXAMPLE = JSON.parse(fs.readFileSync(new URL("../../examples/site.json", import.meta.url), "utf8")) as Record<string, any>;

function site(edit: (s: Record<string, any>) => void): Record<string, any> {
  const s = structuredClone(EXAMPLE);
  edit(s);
  return s;
}

function errorsOf(s: Record<string, any>): string[] {
  const r = checkSiteConfig(s, []);
  return r.ok ? [] : r.errors.map((e) => `${e.code}@${e.path}`);
}

describe("mailboxes in the site", () => {
  test("a group's own mailbox, a named user mailbox and the URI form are all valid; defaults are filled", () => {
    const s = site((s) => {
      s.groups[1].voicemail = { enabled: true, maxMessages: 3 };
      s.groups[1].noAnswer = { kind: "voicemail" };
      s.users[0].voicemail = { enabled: true, maxMessageS: 60, retentionDays: 0, greeting: "anna.wav" };
      s.groups[3].noAnswer = { kind: "voicemail", mailbox: "user/anna" };
      s.groups[4].noAnswer = { kind: "voicemail", uri: "sip:vm@127.0.0.1" };
    });
    assert.deepEqual(errorsOf(s), []);
    const r = checkSiteConfig(s, []);
    assert.ok(r.ok);
    const parsed = r.value.site;
    const index = indexSite(parsed);
    assert.deepEqual(mailboxOf(index, { kind: "group", id: "sales" }), { enabled: true, maxMessageS: MAILBOX_DEFAULTS.maxMessageS, maxMessages: 3, retentionDays: MAILBOX_DEFAULTS.retentionDays, silenceS: MAILBOX_DEFAULTS.silenceS, noAnswerS: MAILBOX_DEFAULTS.noAnswerS });
    assert.deepEqual(mailboxOf(index, { kind: "user", id: "anna" }), { enabled: true, maxMessageS: 60, maxMessages: MAILBOX_DEFAULTS.maxMessages, retentionDays: 0, silenceS: MAILBOX_DEFAULTS.silenceS, noAnswerS: MAILBOX_DEFAULTS.noAnswerS, greeting: "anna.wav" });
    assert.equal(mailboxOf(index, { kind: "user", id: "ben" }), undefined);
    // The decisions: the group's own mailbox, the named one, the URI.
    const decide = (id: string) => {
      const group = index.groupsById.get(id)!;
      return pickNoAnswer({ group, groupsById: index.groupsById, usersById: index.usersById, devicesByOwner: index.devicesByOwner, presence: { online: () => true } as never, allOffline: false, now: 0 });
    };
    assert.deepEqual(decide("sales"), { kind: "voicemail", mailbox: { kind: "group", id: "sales" }, fromGroupId: "sales" });
    assert.deepEqual(decide("backoffice"), { kind: "voicemail", mailbox: { kind: "user", id: "anna" }, fromGroupId: "backoffice" });
    assert.deepEqual(decide("hotline"), { kind: "voicemail", uri: "sip:vm@127.0.0.1", fromGroupId: "hotline" });
  });

  test("a voicemail action without a mailbox needs the group's mailbox enabled", () => {
    assert.deepEqual(errorsOf(site((s) => (s.groups[1].noAnswer = { kind: "voicemail" }))), ["mailbox-disabled@groups[1].noAnswer"]);
    assert.deepEqual(
      errorsOf(site((s) => {
        s.groups[1].voicemail = { enabled: false };
        s.groups[1].noAnswer = { kind: "wait-for-operator", maxWaitS: 30, then: { kind: "voicemail" } };
      })),
      ["mailbox-disabled@groups[1].noAnswer.then"],
    );
  });

  test("a named mailbox must exist and be enabled", () => {
    assert.deepEqual(errorsOf(site((s) => (s.groups[1].noAnswer = { kind: "voicemail", mailbox: "user/nobody" }))), ["unknown-mailbox@groups[1].noAnswer.mailbox"]);
    assert.deepEqual(errorsOf(site((s) => (s.groups[1].noAnswer = { kind: "voicemail", mailbox: "group/support" }))), ["mailbox-disabled@groups[1].noAnswer.mailbox"]);
  });

  test("bad mailbox settings and references are refused at their path, by schema and model alike", () => {
    const cases: Array<[(s: Record<string, any>) => void, string]> = [
      [(s) => (s.groups[1].noAnswer = { kind: "voicemail", mailbox: "room/1" }), "groups[1].noAnswer.mailbox"],
      [(s) => (s.groups[1].noAnswer = { kind: "voicemail", mailbox: "user/../../etc" }), "groups[1].noAnswer.mailbox"],
      [(s) => (s.users[0].voicemail = { enabled: "yes" }), "users[0].voicemail.enabled"],
      [(s) => (s.users[0].voicemail = { enabled: true, maxMessageS: 2 }), "users[0].voicemail.maxMessageS"],
      [(s) => (s.users[0].voicemail = { enabled: true, maxMessages: 0 }), "users[0].voicemail.maxMessages"],
      [(s) => (s.users[0].voicemail = { enabled: true, retentionDays: -1 }), "users[0].voicemail.retentionDays"],
      [(s) => (s.users[0].voicemail = { enabled: true, greeting: "../secret.wav" }), "users[0].voicemail.greeting"],
      [(s) => (s.users[0].voicemail = { enabled: true, greeting: "/etc/passwd" }), "users[0].voicemail.greeting"],
      [(s) => (s.groups[0].voicemail = { enabled: true, colour: "red" }), "groups[0].voicemail.colour"],
      [(s) => (s.groups[0].voicemail = "on"), "groups[0].voicemail"],
    ];
    for (const [edit, path] of cases) {
      const s = site(edit);
      const shape = validatePayload("siteConfig", s);
      assert.equal(shape.ok, false, path);
      const r = checkSiteConfig(s, []);
      assert.equal(r.ok, false, path);
      assert.ok(!r.ok && r.errors.some((e) => e.path === path), `${path} in ${JSON.stringify(!r.ok && r.errors)}`);
      // The model alone says the same (a console push goes through both).
      const model = parseSite({ users: s.users, devices: s.devices.map((d: any) => ({ id: d.id, ownerId: d.owner, kind: d.kind })), groups: s.groups, settings: s.settings });
      assert.equal(model.ok, false, path);
    }
  });

  test("uri and mailbox together are refused", () => {
    const s = site((s) => (s.groups[1].noAnswer = { kind: "voicemail", uri: "sip:vm@127.0.0.1", mailbox: "group/sales" }));
    assert.equal(validatePayload("siteConfig", s).ok, false);
    assert.equal(checkSiteConfig(s, []).ok, false);
  });
});
