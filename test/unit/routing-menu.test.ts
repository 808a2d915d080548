// Greetings and menus: the site model (shape, references, afterLast loops, prompt files checked
// at apply time) and the pure decision core (agent/routing/menu.ts), event by event.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { indexSite, parseSite, type ValidationError } from "../../agent/routing/model.ts";
import type { Greeting, Menu, MenuTarget } from "../../agent/routing/menu-model.ts";
import { MAX_MENU_HOPS, PROMPT_WATCHDOG_MS, decide, enter, fallback, silentTarget, startGreeting, type IvrContext, type IvrState, type IvrStep } from "../../agent/routing/menu.ts";
import { inboundRoute, resolveDestination } from "../../agent/routing/classify.ts";
import { SiteService, checkSiteConfig } from "../../agent/site/site.ts";
import { Store } from "../../agent/store/store.ts";
import { validCommand } from "../../agent/media/protocol.ts";
import { tempDir } from "../tmpdir.ts";

const users = [
  { id: "anna", extension: "201", name: "Anna", availability: "available" },
  { id: "ben", extension: "2015", name: "Ben", availability: "available" },
];
const groups = [
  { id: "sales", number: "600", name: "Sales", strategy: "simultaneous", members: ["anna"], ringCount: 2, checkAvailability: false, noAnswer: { kind: "hangup" } },
  { id: "support", number: "61", name: "Support", strategy: "simultaneous", members: ["ben"], ringCount: 2, checkAvailability: false, noAnswer: { kind: "voicemail", uri: "sip:vm@127.0.0.1" } },
];
const menu = (id: string, extra: Record<string, unknown> = {}): Record<string, unknown> => ({ id, options: [{ digit: "1", target: { kind: "group", groupId: "sales" } }], afterLast: { kind: "hangup" }, ...extra });

function parse(extra: Record<string, unknown>): ReturnType<typeof parseSite> {
  return parseSite({ users, devices: [], groups, ...extra });
}
function errorsOf(extra: Record<string, unknown>): Array<[string, string]> {
  const r = parse(extra);
  assert.equal(r.ok, false, "must be refused");
  return (r as { errors: ValidationError[] }).errors.map((e) => [e.code, e.path]);
}

describe("site model: inbound greetings and menus", () => {
  it("a valid site keeps them, defaults filled, and indexes them by number and id", () => {
    const r = parse({
      inbound: [
        { number: "+4930123456", greeting: { then: { kind: "menu", menuId: "main" }, extensionDialling: { maxDigits: 4 } } },
        { greeting: { prompt: "/var/lib/ringedge/hello.wav", then: { kind: "group", groupId: "sales" } } },
      ],
      menus: [
        menu("main", { options: [{ digit: "1", target: { kind: "group", groupId: "sales" } }, { digit: "2", target: { kind: "menu", menuId: "more" } }, { digit: "9", target: { kind: "voicemail", owner: { kind: "group", id: "support" } } }, { digit: "#", target: { kind: "hangup" } }], afterLast: { kind: "group", groupId: "sales" } }),
        // A key back to the main menu is a cycle by choice: allowed.
        menu("more", { options: [{ digit: "0", target: { kind: "menu", menuId: "main" } }, { digit: "1", target: { kind: "user", userId: "anna" } }], timeoutS: 8, repeats: 0, afterLast: { kind: "menu", menuId: "main" } }),
      ],
    });
    assert.ok(r.ok, JSON.stringify(!r.ok && r.errors));
    const site = r.site;
    assert.deepEqual(site.inbound?.[0]?.greeting.extensionDialling, { maxDigits: 4, interDigitS: 3 });
    assert.equal(site.menus?.[0]?.timeoutS, 5);
    assert.equal(site.menus?.[0]?.repeats, 2);
    assert.equal(site.menus?.[1]?.repeats, 0);
    const index = indexSite(site);
    assert.equal(index.menus?.inboundByNumber.get("+4930123456")?.greeting.then.kind, "menu");
    assert.equal(index.menus?.defaultInbound?.greeting.prompt, "/var/lib/ringedge/hello.wav");
    assert.equal(index.menus?.menusById.get("more")?.timeoutS, 8);
    // No inbound / menus: nothing indexed, as before.
    const plain = parse({});
    assert.ok(plain.ok);
    assert.equal(indexSite(plain.site).menus, undefined);
  });

  it("targets that name nothing are refused at their path", () => {
    assert.deepEqual(
      errorsOf({
        inbound: [{ greeting: { then: { kind: "group", groupId: "nope" } } }],
        menus: [menu("m", { options: [{ digit: "1", target: { kind: "user", userId: "ghost" } }, { digit: "2", target: { kind: "menu", menuId: "missing" } }, { digit: "3", target: { kind: "voicemail", owner: { kind: "user", id: "ghost" } } }], afterLast: { kind: "group", groupId: "gone" } })],
      }),
      [
        ["unknown-menu-target", "menus[0].afterLast.groupId"],
        ["unknown-menu-target", "menus[0].options[0].target.userId"],
        ["unknown-menu-target", "menus[0].options[1].target.menuId"],
        ["unknown-menu-target", "menus[0].options[2].target.owner.id"],
        ["unknown-menu-target", "inbound[0].greeting.then.groupId"],
      ],
    );
  });

  it("a chain of afterLast that comes back round is a loop (reported once, at the first menu); a cycle by keys is not", () => {
    const errs = errorsOf({
      menus: [
        menu("a", { afterLast: { kind: "menu", menuId: "b" } }),
        menu("b", { afterLast: { kind: "menu", menuId: "c" } }),
        menu("c", { afterLast: { kind: "menu", menuId: "a" } }),
        menu("self", { afterLast: { kind: "menu", menuId: "self" } }),
        // Leads into the a-b-c cycle without being on it: only the cycle is reported.
        menu("into", { afterLast: { kind: "menu", menuId: "a" } }),
      ],
    });
    assert.deepEqual(errs, [["menu-loop", "menus[0].afterLast"], ["menu-loop", "menus[3].afterLast"]]);
    const r = parse({ menus: [menu("a", { afterLast: { kind: "menu", menuId: "b" } })] });
    assert.equal(r.ok, false);
    const msg = (parse({ menus: [menu("a", { afterLast: { kind: "menu", menuId: "b" } }), menu("b", { afterLast: { kind: "menu", menuId: "a" } })] }) as { errors: ValidationError[] }).errors[0]!.message;
    assert.match(msg, /a → b → a/);
    // Keys between two menus both ways, each with a way out: fine.
    const ok = parse({ menus: [menu("a", { options: [{ digit: "2", target: { kind: "menu", menuId: "b" } }] }), menu("b", { options: [{ digit: "0", target: { kind: "menu", menuId: "a" } }] })] });
    assert.ok(ok.ok);
  });

  it("bad keys, timeouts, repeats, numbers, prompts and shapes each get their code and path; nothing is applied", () => {
    const errs = errorsOf({
      inbound: [
        { number: "12a", greeting: { then: { kind: "group", groupId: "sales" } } },
        { number: "+491", greeting: { then: { kind: "hangup" } } },
        { number: "+491", greeting: { then: { kind: "group", groupId: "sales" }, extensionDialling: { maxDigits: 5 } } },
        { greeting: { then: { kind: "group", groupId: "sales" }, extensionDialling: { maxDigits: 2, interDigitS: 0 } } },
        { greeting: { then: { kind: "group", groupId: "sales" }, prompt: "relative.wav" } },
        { number: "7", greeting: "hello" },
      ],
      menus: [
        menu("m1", { options: [{ digit: "12", target: { kind: "hangup" } }, { digit: "x", target: { kind: "hangup" } }, { digit: "5", target: { kind: "dance" } }, { digit: "5", target: { kind: "hangup" } }] }),
        menu("m2", { timeoutS: 0, repeats: 6, prompt: "/bad\u0000path", invalidPrompt: 7 }),
        menu("m3", { timeoutS: 61, options: [] }),
        menu("m1"),
        "not a menu",
      ],
    });
    const codes = new Map(errs.map(([c, p]) => [p, c]));
    assert.equal(codes.get("menus[0].options[0].digit"), "invalid-menu-digit");
    assert.equal(codes.get("menus[0].options[1].digit"), "invalid-menu-digit");
    assert.equal(codes.get("menus[0].options[2].target.kind"), "invalid-menu-target");
    assert.equal(codes.get("menus[0].options[3].digit"), "duplicate-menu-digit", "5 is already options[2]");
    assert.equal(codes.get("menus[1].timeoutS"), "invalid-menu-timeout");
    assert.equal(codes.get("menus[1].repeats"), "invalid-menu-repeats");
    assert.equal(codes.get("menus[1].prompt"), "invalid-prompt");
    assert.equal(codes.get("menus[1].invalidPrompt"), "invalid-prompt");
    assert.equal(codes.get("menus[2].timeoutS"), "invalid-menu-timeout");
    assert.equal(codes.get("menus[2].options"), "invalid-menu");
    assert.equal(codes.get("menus[3].id"), "duplicate-id");
    assert.equal(codes.get("menus[4]"), "invalid-menu");
    assert.equal(codes.get("inbound[0].number"), "invalid-inbound-number");
    assert.equal(codes.get("inbound[1].greeting.then.kind"), "invalid-menu-target", "a greeting leads to a group, user or menu");
    assert.equal(codes.get("inbound[2].number"), "duplicate-inbound-number");
    assert.equal(codes.get("inbound[2].greeting.extensionDialling.maxDigits"), "invalid-extension-dialling");
    assert.equal(codes.get("inbound[3].greeting.extensionDialling.interDigitS"), "invalid-extension-dialling");
    assert.equal(codes.get("inbound[4]"), "duplicate-default-route");
    assert.equal(codes.get("inbound[4].greeting.prompt"), "invalid-prompt");
    assert.equal(codes.get("inbound[5].greeting"), "invalid-menu");
  });

  it("a duplicate key is reported at the second one", () => {
    assert.deepEqual(errorsOf({ menus: [menu("m", { options: [{ digit: "5", target: { kind: "hangup" } }, { digit: "5", target: { kind: "hangup" } }] })] }), [["duplicate-menu-digit", "menus[0].options[1].digit"]]);
  });

  it("not arrays, or too many: refused without looking further", () => {
    assert.deepEqual(errorsOf({ inbound: {}, menus: "x" }), [["invalid-type", "menus"], ["invalid-type", "inbound"]]);
    assert.deepEqual(errorsOf({ menus: Array.from({ length: 101 }, (_, i) => menu(`m${i}`)) }), [["too-many", "menus"]]);
  });
});

describe("site apply: the contract and prompt files", () => {
  const base = { schema: "ringedge.site/1", version: 1, settings: {}, users, devices: [], groups };

  it("a prompt file that cannot be played is refused at apply time with its path; a real WAV passes", () => {
    const dir = tempDir("ringedge-menu-");
    const good = path.join(dir, "hello.wav");
    fs.copyFileSync(path.resolve(import.meta.dirname, "../../audio/ivr-menu.wav"), good);
    const bad = path.join(dir, "bad.wav");
    fs.writeFileSync(bad, "RIFF nonsense");
    const r = checkSiteConfig({ ...base, inbound: [{ greeting: { prompt: bad, then: { kind: "menu", menuId: "m" } } }], menus: [menu("m", { prompt: good, invalidPrompt: path.join(dir, "missing.wav") })] }, []);
    assert.equal(r.ok, false);
    const errs = (r as { errors: Array<{ code: string; path: string; message: string }> }).errors;
    assert.deepEqual(errs.map((e) => [e.code, e.path]), [["unplayable-prompt", "inbound[0].greeting.prompt"], ["unplayable-prompt", "menus[0].invalidPrompt"]]);
    assert.match(errs[1]!.message, /ENOENT/);
    // A device or a directory is never read (/dev/zero would never end).
    const dev = checkSiteConfig({ ...base, menus: [menu("m", { prompt: "/dev/zero", invalidPrompt: dir })] }, []);
    assert.deepEqual((dev as { errors: Array<{ code: string; path: string; message: string }> }).errors.map((e) => [e.code, e.path, e.message]), [
      ["unplayable-prompt", "menus[0].prompt", "/dev/zero is not a regular file"],
      ["unplayable-prompt", "menus[0].invalidPrompt", `${dir} is not a regular file`],
    ]);
    const ok = checkSiteConfig({ ...base, inbound: [{ greeting: { prompt: good, then: { kind: "menu", menuId: "m" } } }], menus: [menu("m", { prompt: good })] }, []);
    assert.ok(ok.ok, JSON.stringify(!ok.ok && ok.errors));
  });

  it("the JSON Schema refuses unknown fields and wrong kinds; cross-references still reported", () => {
    const r = checkSiteConfig({ ...base, inbound: [{ greeting: { then: { kind: "group", groupId: "nope" } }, extra: 1 }], menus: [menu("m", { afterLast: { kind: "menu", menuId: "m" } })] }, []);
    assert.equal(r.ok, false);
    const errs = (r as { errors: Array<{ code: string; path: string }> }).errors;
    assert.ok(errs.some((e) => e.code === "schema"), JSON.stringify(errs));
    assert.ok(errs.some((e) => e.code === "unknown-menu-target" && e.path === "inbound[0].greeting.then.groupId"), JSON.stringify(errs));
    assert.ok(errs.some((e) => e.code === "menu-loop" && e.path === "menus[0].afterLast"), JSON.stringify(errs));
  });
});

describe("site apply: atomic, and kept across a restart", () => {
  it("a site with greetings and menus is applied and read back after a restart; a bad push changes nothing", async () => {
    const dir = tempDir("ringedge-menu-store-");
    const base = { schema: "ringedge.site/1", settings: {}, users, devices: [], groups };
    const good = { ...base, version: 1, inbound: [{ number: "4000", greeting: { then: { kind: "menu", menuId: "main" }, extensionDialling: { maxDigits: 3 } } }], menus: [menu("main")] };
    let store = await Store.open(dir);
    let svc = new SiteService({ store });
    const r = await svc.apply(good, "console");
    assert.ok(r.ok, JSON.stringify(r));
    assert.equal(svc.current().index.menus?.inboundByNumber.get("4000")?.greeting.extensionDialling?.interDigitS, 3);
    // A push whose menus loop: refused as a whole, the applied site stays.
    const bad = await svc.apply({ ...good, version: 2, groups: [...groups, { ...groups[0]!, id: "new", number: "700" }], menus: [menu("main", { afterLast: { kind: "menu", menuId: "main" } })] }, "console");
    assert.equal(bad.ok, false);
    assert.deepEqual((bad as { errors: Array<{ code: string; path: string }> }).errors.map((e) => [e.code, e.path]), [["menu-loop", "menus[0].afterLast"]]);
    assert.equal(svc.current().record?.version, 1);
    assert.equal(svc.current().index.groupsById.has("new"), false, "nothing of the bad push applied");
    await store.close();
    store = await Store.open(dir);
    svc = new SiteService({ store });
    svc.start();
    const m = svc.current().index.menus;
    assert.equal(m?.inboundByNumber.get("4000")?.greeting.then.kind, "menu");
    assert.equal(m?.menusById.get("main")?.repeats, 2);
    // A newer snapshot without them removes them.
    const r3 = await svc.apply({ ...base, version: 3 }, "file");
    assert.ok(r3.ok);
    assert.equal(svc.current().index.menus, undefined);
    await store.close();
  });
});

describe("which trunk calls get a greeting", () => {
  const r = parse({ inbound: [{ number: "4930123456", greeting: { then: { kind: "group", groupId: "sales" } } }, { number: "600", greeting: { then: { kind: "group", groupId: "support" } } }, { greeting: { then: { kind: "group", groupId: "support" } } }] });
  assert.ok(r.ok);
  const index = indexSite(r.site);
  const route = (uri: string, prefix?: string) => inboundRoute(uri, index, prefix, resolveDestination(uri, index, "*8", prefix));
  it("the listed number (as sent or after the trunk prefix), else the default for numbers that are not local", () => {
    assert.equal(route("sip:4930123456@10.0.0.1")?.number, "4930123456");
    assert.equal(route("sip:94930123456@10.0.0.1", "9")?.number, "4930123456");
    assert.equal(route("sip:600@10.0.0.1")?.number, "600", "a group number listed as an inbound number gets its greeting");
    assert.equal(route("sip:61@10.0.0.1"), undefined, "a local number not listed rings as before");
    assert.equal(route("sip:201@10.0.0.1"), undefined);
    assert.equal(route("sip:+4940999@10.0.0.1")?.number, undefined);
    assert.ok(route("sip:+4940999@10.0.0.1") !== undefined, "other numbers: the default route");
    assert.ok(route("sip:reception@10.0.0.1") !== undefined, "even a name");
    assert.ok(route("sip:%zz@10.0.0.1") !== undefined, "a bad escape: the default route, never a throw");
  });
});

// --- the decision core ----------------------------------------------------------------------------

const sales: MenuTarget = { kind: "group", groupId: "sales" };
function ctxWith(menus: Menu[], numbers: Record<string, MenuTarget & { kind: "group" | "user" }> = {}): IvrContext {
  return {
    menus: new Map(menus.map((m) => [m.id, m])),
    dial: (digits) => ({ target: numbers[digits], longer: Object.keys(numbers).some((n) => n.length > digits.length && n.startsWith(digits)) }),
  };
}
const numbers = { "600": { kind: "group", groupId: "sales" }, "61": { kind: "group", groupId: "support" }, "201": { kind: "user", userId: "anna" }, "2015": { kind: "user", userId: "ben" } } as const;
const greeting: Greeting = { then: sales, extensionDialling: { maxDigits: 4, interDigitS: 3 } };

/** Runs events from a step; returns every step. */
function run(first: IvrStep, events: Array<string | "end" | "timeout">, ctx: IvrContext): IvrStep[] {
  const steps = [first];
  let s: IvrState = first.state;
  for (const e of events) {
    const step = decide(s, e === "end" ? { kind: "prompt-ended" } : e === "timeout" ? { kind: "timeout" } : { kind: "digit", digit: e }, ctx);
    steps.push(step);
    s = step.state;
  }
  return steps;
}

describe("decision core: greeting with extension dialling", () => {
  const ctx = ctxWith([], { ...numbers });

  it("the greeting plays with a watchdog; ending without digits goes to `then` at once", () => {
    const s0 = startGreeting(greeting);
    assert.deepEqual(s0.play, { kind: "greeting" });
    assert.equal(s0.timerMs, PROMPT_WATCHDOG_MS);
    const [, end] = run(s0, ["end"], ctx);
    assert.deepEqual(end!.route, sales);
    assert.equal(end!.state.kind, "done");
    // A site prompt file is named.
    assert.deepEqual(startGreeting({ ...greeting, prompt: "/x.wav" }).play, { kind: "greeting", file: "/x.wav" });
  });

  it("a first digit cuts the prompt short and starts the inter-digit timer; a complete unique number routes at once", () => {
    const steps = run(startGreeting(greeting), ["6", "1"], ctx);
    assert.equal(steps[1]!.stop, true, "the first key stops the prompt");
    assert.equal(steps[1]!.timerMs, 3000);
    assert.equal(steps[1]!.route, undefined, "6 could be 600 or 61");
    assert.deepEqual(steps[2]!.route, { kind: "group", groupId: "support" }, "61 is complete: no longer number starts with it");
    assert.equal(steps[2]!.stop, undefined, "the prompt was already stopped");
  });

  it("a number that a longer one extends waits for the inter-digit timeout or #; maxDigits routes at once", () => {
    const t = run(startGreeting(greeting), ["2", "0", "1", "timeout"], ctx);
    assert.equal(t[3]!.route, undefined, "201 may become 2015");
    assert.deepEqual(t[4]!.route, { kind: "user", userId: "anna" });
    const h = run(startGreeting(greeting), ["2", "0", "1", "#"], ctx);
    assert.deepEqual(h[4]!.route, { kind: "user", userId: "anna" });
    const m = run(startGreeting(greeting), ["2", "0", "1", "5"], ctx);
    assert.deepEqual(m[4]!.route, { kind: "user", userId: "ben" });
  });

  it("an unknown number plays the invalid-choice prompt, then `then`; keys during it are ignored", () => {
    const steps = run(startGreeting(greeting), ["9", "9", "9", "9", "5", "end"], ctx);
    assert.deepEqual(steps[4]!.play, { kind: "invalid" });
    assert.equal(steps[4]!.route, undefined);
    assert.equal(steps[5]!.play, undefined, "a key during the invalid prompt changes nothing");
    assert.equal(steps[5]!.timerMs, undefined, "and keeps the timer");
    assert.deepEqual(steps[6]!.route, sales);
    // The watchdog on the invalid prompt does the same.
    assert.deepEqual(run(startGreeting(greeting), ["9", "9", "9", "9", "timeout"], ctx)[5]!.route, sales);
  });

  it("* and A-D are ignored; # with nothing typed is ignored; a late prompt end after digits is ignored", () => {
    const steps = run(startGreeting(greeting), ["*", "A", "#", "6", "end", "0", "0"], ctx);
    for (const i of [1, 2, 3]) {
      assert.equal(steps[i]!.state.kind, "greeting");
      assert.equal(steps[i]!.timerMs, undefined);
      assert.equal(steps[i]!.stop, undefined);
    }
    assert.equal(steps[5]!.route, undefined, "prompt-ended after a digit: the timer decides");
    assert.deepEqual(steps[7]!.route, { kind: "group", groupId: "sales" });
  });

  it("with extension dialling off, keys are ignored and the greeting runs to its end", () => {
    const off: Greeting = { then: sales };
    const steps = run(startGreeting(off), ["6", "0", "0", "end"], ctx);
    assert.ok(steps.slice(1, 4).every((s) => s.route === undefined && s.stop === undefined));
    assert.deepEqual(steps[4]!.route, sales);
  });

  it("a digit flood: routed after at most maxDigits keys, everything after is ignored", () => {
    const flood = Array.from({ length: 500 }, (_, i) => String(i % 10));
    const steps = run(startGreeting({ then: sales, extensionDialling: { maxDigits: 2, interDigitS: 3 } }), flood, ctx);
    const routedAt = steps.findIndex((s) => s.route !== undefined || (s.play?.kind === "invalid"));
    assert.ok(routedAt > 0 && routedAt <= 2, `decided after ${routedAt} keys`);
    assert.ok(steps.slice(routedAt + 1).every((s) => s.route === undefined && s.play === undefined));
  });
});

describe("decision core: menus", () => {
  const main: Menu = { id: "main", options: [{ digit: "1", target: sales }, { digit: "2", target: { kind: "menu", menuId: "sub" } }, { digit: "#", target: { kind: "hangup" } }], timeoutS: 5, repeats: 2, afterLast: { kind: "user", userId: "anna" } };
  const sub: Menu = { id: "sub", prompt: "/sub.wav", invalidPrompt: "/oops.wav", options: [{ digit: "0", target: { kind: "menu", menuId: "main" } }], timeoutS: 2, repeats: 0, afterLast: { kind: "hangup" } };
  const ctx = ctxWith([main, sub]);
  const into = (m: string): IvrStep => enter({ kind: "menu", menuId: m }, 0, ctx);

  it("entering a menu plays its prompt; the prompt's end starts timeoutS; a listed key routes", () => {
    const s0 = into("main");
    assert.deepEqual(s0.play, { kind: "menu" });
    const steps = run(s0, ["end", "1"], ctx);
    assert.equal(steps[1]!.timerMs, 5000);
    assert.deepEqual(steps[2]!.route, sales);
    // A key during the prompt cuts it short just the same.
    assert.deepEqual(run(into("main"), ["#"], ctx)[1]!.route, { kind: "hangup" });
  });

  it("a key to another menu plays that menu (its own prompts); a key back is fine", () => {
    const steps = run(into("main"), ["2", "0"], ctx);
    assert.deepEqual(steps[1]!.play, { kind: "menu", file: "/sub.wav" });
    assert.equal(steps[1]!.state.kind === "menu" && steps[1]!.state.menu.id, "sub");
    assert.deepEqual(steps[2]!.play, { kind: "menu" });
    assert.equal(steps[2]!.state.kind === "menu" && steps[2]!.state.hops, 3);
  });

  it("no key: the menu plays again `repeats` times, then afterLast", () => {
    const steps = run(into("main"), ["end", "timeout", "end", "timeout", "end", "timeout"], ctx);
    assert.deepEqual(steps[2]!.play, { kind: "menu" });
    assert.deepEqual(steps[4]!.play, { kind: "menu" });
    assert.deepEqual(steps[6]!.route, { kind: "user", userId: "anna" });
    // repeats 0: straight to afterLast.
    assert.deepEqual(run(into("sub"), ["end", "timeout"], ctx)[2]!.route, { kind: "hangup" });
  });

  it("a wrong key plays the invalid-choice prompt then the menu again; after the last try, afterLast", () => {
    const steps = run(into("main"), ["7", "end", "end", "9", "end", "end", "x", "end"], ctx);
    assert.deepEqual(steps[1]!.play, { kind: "invalid" });
    assert.deepEqual(steps[2]!.play, { kind: "menu" }, "the menu again");
    assert.equal(steps[3]!.timerMs, 5000);
    assert.deepEqual(steps[4]!.play, { kind: "invalid" });
    assert.deepEqual(steps[7]!.play, { kind: "invalid" }, "the third wrong key still hears why");
    assert.deepEqual(steps[8]!.route, { kind: "user", userId: "anna" });
    assert.deepEqual(run(into("sub"), ["5"], ctx)[1]!.play, { kind: "invalid", file: "/oops.wav" });
  });

  it("a key during the invalid-choice prompt is a new choice", () => {
    assert.deepEqual(run(into("main"), ["7", "1"], ctx)[2]!.route, sales);
  });

  it("a flood of wrong keys ends the menu after 1 + repeats of them; later keys are ignored", () => {
    const steps = run(into("main"), Array.from({ length: 300 }, () => "5"), ctx);
    const routed = steps.findIndex((s) => s.route !== undefined);
    assert.equal(routed, -1, "the last wrong key still plays the invalid prompt");
    assert.equal(steps[3]!.state.kind === "menu" && steps[3]!.state.afterInvalid, "last");
    const end = decide(steps.at(-1)!.state, { kind: "prompt-ended" }, ctx);
    assert.deepEqual(end.route, { kind: "user", userId: "anna" });
    assert.equal(decide(end.state, { kind: "digit", digit: "1" }, ctx).route, undefined, "done ignores everything");
  });

  it("keys round a cycle of menus are bounded: more than MAX_MENU_HOPS menus hang up", () => {
    let step = into("main");
    let n = 0;
    while (step.route === undefined && n < 100) {
      const key = step.state.kind === "menu" && step.state.menu.id === "main" ? "2" : "0";
      step = decide(step.state, { kind: "digit", digit: key }, ctx);
      n++;
    }
    assert.deepEqual(step.route, { kind: "hangup" });
    assert.equal(n, MAX_MENU_HOPS);
  });

  it("a menu removed by a push under a live call: hang-up, never a throw", () => {
    assert.deepEqual(enter({ kind: "menu", menuId: "gone" }, 0, ctx).route, { kind: "hangup" });
  });

  it("the silent caller's way out: afterLast followed to a non-menu target", () => {
    const chain: Menu[] = [{ ...main, id: "a", afterLast: { kind: "menu", menuId: "b" } }, { ...main, id: "b", afterLast: sales }];
    const c = ctxWith(chain);
    assert.deepEqual(silentTarget({ kind: "menu", menuId: "a" }, c.menus), sales);
    assert.deepEqual(fallback(startGreeting({ then: { kind: "menu", menuId: "a" } }).state, c), sales);
    // A loop that validation would refuse still ends (hang-up).
    const loop = ctxWith([{ ...main, id: "x", afterLast: { kind: "menu", menuId: "x" } }]);
    assert.deepEqual(silentTarget({ kind: "menu", menuId: "x" }, loop.menus), { kind: "hangup" });
  });
});

describe("media worker: the stop command", () => {
  it("is a valid command with an id; malformed ones are refused", () => {
    assert.equal(validCommand({ op: "stop", id: "m1" }), true);
    assert.equal(validCommand({ op: "stop" }), false);
    assert.equal(validCommand({ op: "stop", id: "" }), false);
    assert.equal(validCommand({ op: "stop", id: "x".repeat(200) }), false);
  });
});
