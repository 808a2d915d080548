// Listening to voicemail, the wiring decisions: who dialling the voicemail code is refused with
// what before anything is answered (voicemail/access.ts decideListen), what the summary prompt
// says (voicemail/listen.ts), and the voicemail code (an agent setting) checked against the
// site's feature codes when a site is applied.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import { indexSite, parseSite, mailboxOf, type SiteIndex } from "../../agent/routing/model.ts";
import { checkFeatureCodes } from "../../agent/routing/operator-state.ts";
import { checkSiteConfig } from "../../agent/site/site.ts";
import { decideListen, type ListenCaller } from "../../agent/voicemail/access.ts";
import { LISTEN_PROMPTS, promptSounds, summarySounds } from "../../agent/voicemail/listen.ts";

const box = { enabled: true, maxMessageS: 60, maxMessages: 5, retentionDays: 30, silenceS: 5, noAnswerS: 10 };
function site(): SiteIndex {
  const r = parseSite({
    users: [
      { id: "anna", extension: "1001", name: "A", availability: "available", callLimit: 0, voicemail: box },
      { id: "ben", extension: "1002", name: "B", availability: "available", callLimit: 0, voicemail: box },
      { id: "carl", extension: "1003", name: "C", availability: "available", callLimit: 0 },
    ],
    devices: [],
    groups: [
      { id: "sales", number: "601", name: "Sales", strategy: "simultaneous", members: ["anna", "carl"], ringCount: 2, checkAvailability: false, noAnswer: { kind: "hangup" }, voicemail: box },
      { id: "night", number: "602", name: "Night", strategy: "simultaneous", members: ["ben"], ringCount: 2, checkAvailability: false, noAnswer: { kind: "hangup" } },
    ],
  });
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return indexSite(r.site);
}

describe("decideListen: who dialling the voicemail code hears what, or is refused with what", () => {
  const index = site();
  const enabled = (o: { kind: "user" | "group"; id: string }) => mailboxOf(index, o) !== undefined;
  const dev = (userId: string | undefined): ListenCaller => ({ kind: "device", authenticated: true, userId });

  it("the code alone: the caller's enabled mailboxes, own first; the code and a number: that one", () => {
    assert.deepEqual(decideListen(dev("anna"), "", index, enabled), { ok: true, mailboxes: [{ kind: "user", id: "anna" }, { kind: "group", id: "sales" }] });
    assert.deepEqual(decideListen(dev("carl"), "", index, enabled), { ok: true, mailboxes: [{ kind: "group", id: "sales" }] }, "carl has no own mailbox");
    assert.deepEqual(decideListen(dev("anna"), "601", index, enabled), { ok: true, mailboxes: [{ kind: "group", id: "sales" }] });
    assert.deepEqual(decideListen(dev("anna"), "1001", index, enabled), { ok: true, mailboxes: [{ kind: "user", id: "anna" }] });
  });

  it("refusals: not a phone, unauthenticated, no owner, an unknown owner, another's mailbox, no such mailbox, not enabled, none at all", () => {
    const cases: Array<[ListenCaller, string, number, string]> = [
      [{ kind: "trunk", authenticated: true, userId: "anna" }, "", 403, "Voicemail only from a phone of the site"],
      [{ kind: "unknown", authenticated: false }, "", 403, "Voicemail only from a phone of the site"],
      [null as unknown as ListenCaller, "", 403, "Voicemail only from a phone of the site"],
      [{ kind: "device", authenticated: false, userId: "anna" }, "", 403, "Phone not authenticated"],
      [dev(undefined), "", 403, "Phone has no owner"],
      [dev("ghost"), "", 403, "Phone has no owner"],
      [dev("anna"), "1002", 403, "Not your mailbox"],
      [dev("anna"), "602", 403, "Not your mailbox"],
      [dev("anna"), "9999", 404, "No such mailbox"],
      [dev("anna"), "*#", 404, "No such mailbox"],
      [dev("anna"), 7 as unknown as string, 404, "No such mailbox"],
      [dev("ben"), "602", 404, "Mailbox not enabled"],
      [dev("carl"), "1003", 404, "Mailbox not enabled"],
    ];
    for (const [caller, sel, status, reason] of cases) assert.deepEqual(decideListen(caller, sel, index, enabled), { ok: false, status, reason }, `${JSON.stringify(caller)} ${String(sel)}`);
    assert.deepEqual(decideListen(dev("carl"), "", index, () => false), { ok: false, status: 404, reason: "No mailbox" });
  });
});

describe("the listening prompts", () => {
  it("the summary: counts said with the shipped numbers, singular and plural, no for zero, saved only when there are some", () => {
    assert.deepEqual(summarySounds(1, 0), ["vm-you-have", "number-1", "vm-new-message"]);
    assert.deepEqual(summarySounds(0, 2), ["vm-you-have", "vm-no", "vm-new-messages", "vm-and", "number-2", "vm-saved-messages"]);
    assert.deepEqual(summarySounds(23, 1), ["vm-you-have", "number-20", "number-3", "vm-new-messages", "vm-and", "number-1", "vm-saved-message"]);
    assert.deepEqual(summarySounds(150, 0), ["vm-you-have", "vm-new-messages"], "a count the numbers cannot say is left out");
  });

  it("every prompt sound is a file shipped in audio/", () => {
    for (const file of Object.values(LISTEN_PROMPTS)) assert.ok(fs.existsSync(new URL(`../../audio/${file}`, import.meta.url)), file);
    const kinds = ["play-options", "play-invalid", "play-deleted", "play-saved", "play-no-more", "play-empty", "play-goodbye"] as const;
    for (const kind of kinds) for (const s of promptSounds({ kind })!) assert.ok(s in LISTEN_PROMPTS, `${kind}: ${s}`);
    for (const s of summarySounds(0, 1)) assert.ok(s in LISTEN_PROMPTS || s.startsWith("number-"), s);
    assert.equal(promptSounds({ kind: "hang-up" }), undefined);
  });
});

describe("the voicemail code against the site's feature codes", () => {
  const numbers = { extensions: ["1001"], groupNumbers: ["601"] };
  const vm = [{ label: "the voicemail code (setting voicemailCode)", code: "*97" }];

  it("a site code equal to, starting, or the start of the voicemail code is refused at the site's path", () => {
    assert.deepEqual(checkFeatureCodes(undefined, "*8", numbers, vm), [], "the defaults do not clash with *97");
    assert.deepEqual(checkFeatureCodes({ dndOn: "*97" }, "*8", numbers, vm), [{ path: "settings.featureCodes.dndOn", message: "*97 is also the voicemail code (setting voicemailCode)" }]);
    assert.deepEqual(checkFeatureCodes({ away: "*971" }, "*8", numbers, vm).map((p) => p.path), ["settings.featureCodes.away"]);
    assert.deepEqual(checkFeatureCodes(undefined, "*9", numbers, vm), [{ path: "settings.pickupCode", message: "*9 is the start of the voicemail code (setting voicemailCode): a phone dialling it could not be told apart" }]);
  });

  it("checkSiteConfig with the agent's codes refuses such a site; without them it passes", () => {
    const EXAMPLE = JSON.parse(fs.readFileSync(new URL("../../examples/site.json", import.meta.url), "utf8")) as Record<string, any>;
    const cfg = structuredClone(EXAMPLE);
    cfg.settings.featureCodes = { ...(cfg.settings.featureCodes ?? {}), back: "*97" };
    assert.equal(checkSiteConfig(cfg, []).ok, true);
    const r = checkSiteConfig(cfg, [], undefined, vm);
    assert.deepEqual(r.ok ? [] : r.errors.map((e) => [e.code, e.path]), [["feature-code-clash", "settings.featureCodes.back"]]);
  });
});
