// The dialog event package (agent/presence/blf.ts): dialog-info XML rendering (a pure
// function: well-formed, escaped), the per-user dialog states kept from the engine's events,
// Request-URI resolution, and the notifier's coalesced flush.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { EventBus } from "../../agent/bus.ts";
import { BlfNotifier, DialogStates, escapeXml, renderDialogInfo, resolveUser } from "../../agent/presence/blf.ts";
import { indexSite, parseSite } from "../../agent/routing/model.ts";
import type { EventPackage } from "../../agent/sip/subscriptions.ts";
import { parseDialogInfo } from "../e2e/subscriber.ts";

const HOST = "10.0.0.1:5060";

describe("renderDialogInfo", () => {
  it("renders RFC 4235 dialog-info: version, state=full, entity, one <dialog> per dialog", () => {
    const xml = renderDialogInfo({
      entity: "sip:201@10.0.0.1:5060",
      version: 7,
      host: HOST,
      dialogs: [
        { id: "d1", callId: "abc@x", localTag: "lt", remoteTag: "rt", direction: "recipient", state: "early", remote: "+4930111222" },
        { id: "d2", callId: "def@y", direction: "initiator", state: "confirmed" },
      ],
    });
    assert.ok(xml.startsWith('<?xml version="1.0" encoding="UTF-8"?>\n'));
    const info = parseDialogInfo(xml);
    assert.deepEqual({ version: info.version, state: info.state, entity: info.entity }, { version: 7, state: "full", entity: "sip:201@10.0.0.1:5060" });
    assert.deepEqual(info.dialogs, [
      { id: "d1", callId: "abc@x", localTag: "lt", remoteTag: "rt", direction: "recipient", state: "early", remoteIdentity: `sip:+4930111222@${HOST}` },
      { id: "d2", callId: "def@y", localTag: undefined, remoteTag: undefined, direction: "initiator", state: "confirmed", remoteIdentity: undefined },
    ]);
  });

  it("no dialogs: an empty full document", () => {
    const info = parseDialogInfo(renderDialogInfo({ entity: "sip:1@h", version: 0, host: HOST, dialogs: [] }));
    assert.deepEqual(info.dialogs, []);
    assert.equal(info.version, 0);
  });

  it("escapes hostile text (caller names, Call-IDs, tags) and drops characters XML cannot carry", () => {
    const evil = `<x a="1">&'\u0000\u0007\ufffe`;
    const xml = renderDialogInfo({ entity: `sip:"e"@h`, version: 1, host: HOST, dialogs: [{ id: "d&1", callId: evil, localTag: evil, remoteTag: evil, direction: "recipient", state: "early", remote: evil }] });
    assert.doesNotMatch(xml, /[\u0000\u0007\ufffe]/);
    const info = parseDialogInfo(xml);
    const d = info.dialogs[0]!;
    assert.equal(d.callId, `<x a="1">&'`);
    assert.equal(d.localTag, `<x a="1">&'`);
    assert.equal(d.id, "d&1");
    assert.equal(info.entity, `sip:"e"@h`);
    // The identity is a URI: the user part is percent-encoded, then XML-escaped.
    assert.match(d.remoteIdentity ?? "", /^sip:%3Cx%20a=%221%22%3E&'@10\.0\.0\.1:5060$/);
    assert.equal(escapeXml(`a<b>&"c'`), "a&lt;b&gt;&amp;&quot;c&apos;");
  });
});

describe("DialogStates: the lamp's state from the engine's events", () => {
  it("a call ringing two members: early for both, the caller's tag as remote-tag, the phone's tag as local-tag; answered → confirmed / terminated; hung up → terminated; swept after", () => {
    const s = new DialogStates();
    assert.deepEqual(s.offered({ callId: "c1", memberId: "u1", caller: "555", callerTag: "f1" }), ["u1"]);
    assert.deepEqual(s.offered({ callId: "c1", memberId: "u2", caller: "555", callerTag: "f1" }), ["u2"]);
    assert.deepEqual(s.offered({ callId: "c1", memberId: "u1", caller: "555", callerTag: "f1" }), [], "a repeated offer changes nothing");
    assert.deepEqual(s.ringing({ callId: "c1", memberId: "u1", calleeTag: "t1" }), ["u1"]);
    assert.deepEqual(s.ringing({ callId: "c1", memberId: "u1", calleeTag: "t9" }), [], "the first tag stays");
    assert.deepEqual(s.dialogsOf("u1").map((d) => [d.direction, d.state, d.remoteTag, d.localTag, d.remote]), [["recipient", "early", "f1", "t1", "555"]]);
    assert.deepEqual(s.answered({ callId: "c1", memberId: "u2", caller: "555" }).sort(), ["u1", "u2"]);
    assert.equal(s.dialogsOf("u1")[0]!.state, "terminated");
    assert.equal(s.dialogsOf("u2")[0]!.state, "confirmed");
    s.sweep("u1");
    assert.deepEqual(s.dialogsOf("u1"), []);
    assert.deepEqual(s.ended({ callId: "c1" }), ["u2"]);
    assert.equal(s.dialogsOf("u2")[0]!.state, "terminated");
    s.sweep("u2");
    assert.deepEqual(s.users(), []);
    assert.deepEqual(s.ended({ callId: "c1" }), [], "nothing left to end");
  });

  it("a user's own outgoing call: initiator, trying, no remote identity, then confirmed when answered; the dialog id is stable", () => {
    const s = new DialogStates();
    assert.deepEqual(s.placed({ callId: "c2", callerTag: "ft", userId: "u3", target: "0301234" }), ["u3"]);
    const [d] = s.dialogsOf("u3");
    assert.deepEqual([d!.direction, d!.state, d!.localTag, d!.remote], ["initiator", "trying", "ft", undefined], "the dialled number is not shown to watchers");
    assert.deepEqual(s.answered({ callId: "c2", memberId: undefined, caller: "u3" }), ["u3"]);
    assert.equal(s.dialogsOf("u3")[0]!.state, "confirmed");
    assert.equal(s.dialogsOf("u3")[0]!.id, d!.id);
    assert.deepEqual(s.placed({ callId: "c3", callerTag: "x", userId: undefined, target: "1" }), [], "a device without an operator is nobody's lamp");
  });

  it("a step that ends stops only that member's lamp; a pickup by someone not offered gives them a confirmed dialog", () => {
    const s = new DialogStates();
    s.offered({ callId: "c4", memberId: "u1", caller: "555", callerTag: "f" });
    assert.deepEqual(s.offerEnded({ callId: "c4", memberId: "u1" }), ["u1"]);
    assert.deepEqual(s.offerEnded({ callId: "c4", memberId: "u1" }), [], "already ended");
    assert.deepEqual(s.offerEnded({ callId: "c4", memberId: "u9" }), [], "never offered");
    s.sweep("u1");
    // Offered again later (a waiting call offered anew): a fresh early dialog.
    assert.deepEqual(s.offered({ callId: "c4", memberId: "u1", caller: "555", callerTag: "f" }), ["u1"]);
    assert.deepEqual(s.answered({ callId: "c4", memberId: "u7", caller: "555" }).sort(), ["u1", "u7"]);
    assert.deepEqual(s.dialogsOf("u7").map((d) => [d.direction, d.state]), [["recipient", "confirmed"]]);
    assert.equal(s.dialogsOf("u1")[0]!.state, "terminated");
  });

  it("a member with several calls in flight: answering or ending one leaves the others; a call placed and offered to the same user keeps both dialogs until both end", () => {
    const s = new DialogStates();
    for (const c of ["a", "b", "c"]) s.offered({ callId: c, memberId: "u1", caller: "555", callerTag: `f${c}` });
    assert.deepEqual(s.answered({ callId: "b", memberId: "u2", caller: "555" }).sort(), ["u1", "u2"]);
    assert.deepEqual(s.dialogsOf("u1").map((d) => [d.callId, d.state]), [["a", "early"], ["b", "terminated"], ["c", "early"]]);
    s.sweep("u1");
    assert.deepEqual(s.dialogsOf("u1").map((d) => d.callId), ["a", "c"]);
    assert.deepEqual(s.ended({ callId: "b" }), ["u2"], "u1 was swept from b");
    // u3 calls a group that rings u3 too: two dialogs of one call, one per direction.
    s.placed({ callId: "d", callerTag: "t", userId: "u3", target: "700" });
    s.offered({ callId: "d", memberId: "u3", caller: "u3", callerTag: "t" });
    assert.deepEqual(s.offerEnded({ callId: "d", memberId: "u3" }), ["u3"]);
    s.sweep("u3");
    assert.deepEqual(s.dialogsOf("u3").map((d) => [d.direction, d.state]), [["initiator", "trying"]], "the recipient side went, the initiator side stays");
    assert.deepEqual(s.ended({ callId: "d" }), ["u3"], "the call is still indexed for u3");
    s.sweep("u3");
    assert.deepEqual(s.users().sort(), ["u1", "u2"]);
  });
});

describe("resolveUser", () => {
  const parsed = parseSite({ users: [{ id: "alice", extension: "201", name: "A", availability: "available", callLimit: 0 }], devices: [], groups: [] });
  if (!parsed.ok) throw new Error("fixture");
  const index = indexSite(parsed.site);
  it("a user's extension or id names the user; the entity is their extension at our address", () => {
    assert.deepEqual(resolveUser("sip:201@10.0.0.1", HOST, index), { resource: "alice", entity: `sip:201@${HOST}` });
    assert.deepEqual(resolveUser("sip:alice@10.0.0.1;transport=udp", HOST, index), { resource: "alice", entity: `sip:201@${HOST}` });
  });
  it("anything else names nobody", () => {
    for (const uri of ["sip:202@10.0.0.1", "sip:10.0.0.1", "tel:201", "sip:%zz@h", "garbage", "sip:ALICE@h"]) assert.equal(resolveUser(uri, HOST, index), undefined, uri);
  });
});

describe("BlfNotifier", () => {
  it("registers the dialog package and notifies each changed user once per burst, after the events (setImmediate)", async () => {
    const bus = new EventBus();
    const changed: string[] = [];
    let pkg: EventPackage | undefined;
    const parsed = parseSite({ users: [{ id: "u1", extension: "201", name: "A", availability: "available", callLimit: 0 }], devices: [], groups: [] });
    if (!parsed.ok) throw new Error("fixture");
    const index = indexSite(parsed.site);
    const blf = new BlfNotifier({ bus, site: () => index, subscriptions: { addPackage: (p) => (pkg = p), changed: (event, r) => changed.push(`${event}:${r}`) } });
    blf.start();
    assert.equal(pkg?.event, "dialog");
    assert.equal(pkg?.contentType, "application/dialog-info+xml");
    assert.equal(pkg?.defaultExpires, 3600);
    bus.emit("call.offered", { callId: "c1", groupId: undefined, memberId: "u1", deviceIds: ["p1"], caller: "555", at: 0, callerTag: "f" });
    bus.emit("call.ringing", { callId: "c1", memberId: "u1", deviceId: "p1", calleeTag: "t", at: 0 });
    assert.deepEqual(changed, [], "nothing is sent from inside the publisher's call");
    // What a NOTIFY would carry now.
    assert.equal(parseDialogInfo(pkg!.render("u1", `sip:201@${HOST}`, 3)).dialogs[0]!.state, "early");
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(changed, ["dialog:u1"]);
    bus.emit("call.ended", { callId: "c1", at: 1 });
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(changed, ["dialog:u1", "dialog:u1"]);
    assert.deepEqual(blf.states.users(), [], "terminated dialogs are dropped once notified");
    blf.stop();
    bus.emit("call.offered", { callId: "c2", groupId: undefined, memberId: "u1", deviceIds: ["p1"], caller: "555", at: 2 });
    await new Promise((r) => setImmediate(r));
    assert.equal(changed.length, 2, "stopped: no more notifications");
  });
});
