import { test } from "node:test";
import assert from "node:assert/strict";
import { createLogger, scrubSecrets, stderrIsJournal } from "../../agent/log.ts";
import { EventBus, type AgentEvents } from "../../agent/bus.ts";
import { AuditLog, auditedCommands, changeTarget, isChange } from "../../agent/observe/audit.ts";
import { createSwitchableLogger } from "../../agent/appliance/log-level.ts";

function capture(format: "text" | "json", journal = false): { lines: string[]; log: ReturnType<typeof createLogger> } {
  const lines: string[] = [];
  return { lines, log: createLogger("debug", "agent", (l) => lines.push(l), { format, journal }) };
}

test("json format: one object per line with time, level, scope, msg and the fields; reserved keys win", () => {
  const { lines, log } = capture("json");
  log.child("audit").info("call answered", { call: "c1", afterMs: 1200, msg: "spoof", level: "error" });
  assert.equal(lines.length, 1);
  assert.ok(lines[0]!.endsWith("\n"));
  const r = JSON.parse(lines[0]!) as Record<string, unknown>;
  assert.equal(r.scope, "agent.audit");
  assert.equal(r.msg, "call answered");
  assert.equal(r.level, "info");
  assert.equal(r.call, "c1");
  assert.equal(r.afterMs, 1200);
  assert.match(r.time as string, /^\d{4}-\d\d-\d\dT/);
  // A circular field cannot break logging.
  const loop: Record<string, unknown> = {};
  loop.self = loop;
  log.warn("odd", { loop });
  assert.equal((JSON.parse(lines[1]!) as { fields: string }).fields, "<not serialisable>");
});

test("journal: each line starts with its syslog priority (sd-daemon(3)); text and json", () => {
  for (const format of ["text", "json"] as const) {
    const { lines, log } = capture(format, true);
    log.debug("d");
    log.info("i");
    log.warn("w");
    log.error("e");
    assert.deepEqual(lines.map((l) => l.slice(0, 3)), ["<7>", "<6>", "<4>", "<3>"], format);
  }
  const { lines, log } = capture("text", false);
  log.error("e");
  assert.ok(!lines[0]!.startsWith("<"));
});

test("JOURNAL_STREAM counts only while it names stderr's device and inode", () => {
  const st = () => ({ dev: 8, ino: 1234 });
  assert.equal(stderrIsJournal({ JOURNAL_STREAM: "8:1234" }, st), true);
  assert.equal(stderrIsJournal({ JOURNAL_STREAM: "8:999" }, st), false);
  assert.equal(stderrIsJournal({}, st), false);
  for (const bad of ["", "8", "x:y", "8:1234:5", "8:1234\n"]) assert.equal(stderrIsJournal({ JOURNAL_STREAM: bad }, st), false, bad);
  assert.equal(stderrIsJournal({ JOURNAL_STREAM: "8:1234" }, () => { throw new Error("EBADF"); }), false);
});

test("secrets never reach a line: secret-named fields, digest values, provisioning URL tokens", () => {
  for (const format of ["text", "json"] as const) {
    const { lines, log } = capture(format);
    log.info("device added", { username: "frontdesk", password: "S3cret-pass-1", sipPassword: "S3cret-pass-2", authorization: 'Digest username="a", response="abcdef0123"', token: "tok-1234567890abcdef" });
    log.warn('refused Digest username="a1", realm="x", nonce="n1", response="deadbeef00", cnonce="c0ffee"', { path: "/p/AbCdEf0123456789xyz/001565aabb01.cfg", err: new Error('bad response="feedface"') });
    const all = lines.join("");
    for (const s of ["S3cret-pass-1", "S3cret-pass-2", "abcdef0123", "tok-1234567890abcdef", "deadbeef00", "c0ffee", "AbCdEf0123456789xyz", "feedface"]) assert.ok(!all.includes(s), `${format}: ${s} leaked: ${all}`);
    assert.match(all, /frontdesk/);
    assert.match(all, /\/p\/<token>\/001565aabb01\.cfg/);
  }
  assert.equal(scrubSecrets("nothing to see"), "nothing to see");
  // Empty and boolean secret-named fields say only whether something is set.
  const { lines, log } = capture("text");
  log.info("x", { password: "", hasPassword: true });
  assert.match(lines[0]!, /password="" hasPassword=true/);
});

test("switchable logger keeps the output format for every child", () => {
  const lines: string[] = [];
  const sw = createSwitchableLogger("info", (l) => lines.push(l), { format: "json", journal: true });
  sw.log.child("x").info("hello");
  sw.log.debug("hidden");
  assert.equal(lines.length, 1);
  assert.ok(lines[0]!.startsWith("<6>{"));
  assert.equal((JSON.parse(lines[0]!.slice(3)) as { scope: string }).scope, "agent.x");
});

test("audited commands: changes reported with actor and a bounded target; reads, dry runs and failures not", async () => {
  const bus = new EventBus();
  const seen: Array<AgentEvents["audit.change"]> = [];
  bus.on("audit.change", (e) => seen.push(e));
  const table = auditedCommands(
    {
      "device.add": (a) => ({ ok: a.username }),
      "device.list": () => [],
      "site.apply": () => ({ applied: true }),
      "phone.remove": () => {
        throw new Error("no such phone");
      },
    },
    "installer (control socket)",
    bus,
  );
  await table["device.add"]!({ username: "front\x1bdesk", password: "never-logged-1" });
  await table["device.list"]!({});
  await table["site.apply"]!({ dryRun: true });
  await table["site.apply"]!({});
  await assert.rejects(async () => table["phone.remove"]!({ mac: "001565aabb01" }));
  assert.deepEqual(seen.map((e) => [e.actor, e.action, e.target]), [
    ["installer (control socket)", "device.add", "front?desk"],
    ["installer (control socket)", "site.apply", undefined],
  ]);
  assert.equal(changeTarget({ id: "x".repeat(500) })!.length, 64);
  assert.equal(changeTarget({ password: "p", other: 1 }), undefined);
  assert.equal(isChange("phone.resync", {}), true);
  assert.equal(isChange("phone.show", {}), false);
  assert.equal(isChange("drain", {}), true);
});

test("audit log: one info line per bus event, with who and why", () => {
  const bus = new EventBus();
  const { lines, log } = capture("json");
  const a = new AuditLog(bus, log);
  a.start();
  bus.emit("call.missed", { callId: "c9", groupId: "g", caller: "+4930", target: "700", offered: ["m1", "m2"], outcome: "missed", abandoned: true, at: 1 });
  bus.emit("call.missed", { callId: "c10", groupId: "g", caller: "+4930", target: "700", offered: [], outcome: "busy", at: 1 });
  bus.emit("site.applied", { version: 7, source: "console" });
  a.stop();
  bus.emit("auth.ban", { source: "192.0.2.1", until: 0 });
  const rs = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.equal(rs.length, 3);
  assert.deepEqual([rs[0]!.why, rs[0]!.offered, rs[0]!.level], ["caller hung up", "m1,m2", "info"]);
  assert.equal(rs[1]!.why, "everyone busy");
  assert.deepEqual([rs[2]!.actor, rs[2]!.action, rs[2]!.target], ["console (MQTT)", "site.apply", "version 7"]);
});
