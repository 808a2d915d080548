// Message lamps end to end (RFC 3842 message-summary over RFC 6665): the real agent on a site
// file. A SIPp desk phone registers with digest and runs the lamp's life against its own account
// (initial NOTIFY with application/simple-message-summary, refresh, someone else's mailbox
// refused 403, unsubscribe with a terminated NOTIFY). Phones registered from the test's own
// sockets (subscriber.ts) check what else a phone may and may not watch (the voicemail code,
// its group's mailbox, other users and groups), Accept, and expiry. The mailboxes here hold no
// message, so every lamp is off; lamps lit and put out by real messages are in
// test/e2e/voicemail-listen.test.ts, the count-change path in test/unit/mwi.test.ts.
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { CallScene, assertSippOk, startRoutingAgent, writeSiteFile, SimRoster } from "./callsim.ts";
import { freePort, runSipp, tempDir, type RunningAgent } from "./harness.ts";
import { Subscriber, type SeenNotify } from "./subscriber.ts";

const roster = new SimRoster();
const { users, devices } = roster;
const [annaDesk, annaSoft] = roster.addUser("anna", "5101", ["physical", "soft"]);
const [benDesk] = roster.addUser("ben", "5102", ["physical", "soft"]);
const [carlaDesk] = roster.addUser("carla", "5103", ["physical", "soft"]);

const ACCEPT = "Accept: application/simple-message-summary";
let agent: RunningAgent;
const scene = new CallScene(() => agent);

before(async () => {
  const file = writeSiteFile(tempDir("ringedge-site-"), {
    settings: { pickupCode: "*8", trunk: { host: "127.0.0.1", port: await freePort(), transport: "udp", allowedSources: ["127.0.0.2"] } },
    users,
    devices,
    groups: [
      { id: "front", number: "561", strategy: "simultaneous", members: ["anna", "ben"], ringCount: 2, noAnswer: { kind: "hangup" } },
      { id: "night", number: "562", strategy: "simultaneous", members: ["carla"], ringCount: 2, noAnswer: { kind: "hangup" } },
    ],
  });
  agent = await startRoutingAgent(file, { ringUnitMs: 200, dataDir: tempDir("ringedge-mwi-"), env: { RINGEDGE_SUBSCRIBE_MIN_EXPIRES: "1" } });
});

after(() => scene.close());

/** The summary lines of a NOTIFY body (RFC 3842 §5), CRLF-terminated. */
function summary(n: SeenNotify): Record<string, string> {
  const body = n.msg.body;
  assert.ok(body.endsWith("\r\n"), `CRLF lines: ${JSON.stringify(body)}`);
  return Object.fromEntries(body.trimEnd().split("\r\n").map((l) => [l.slice(0, l.indexOf(":")), l.slice(l.indexOf(":") + 1).trim()]));
}

describe("message lamps through the real agent", () => {
  test("a SIPp phone: SUBSCRIBE its own account → 200 + NOTIFY (lamp off), refresh → NOTIFY, another's mailbox → 403, unsubscribe → terminated NOTIFY", async () => {
    const dir = tempDir("ringedge-sipp-mwi-");
    // Its own account as a phone names it: the soft phone's SIP username (not the user id).
    // SIPp injection file: username; password; own extension; another user's extension.
    const csv = path.join(dir, "phone.csv");
    fs.writeFileSync(csv, `SEQUENTIAL\n${annaSoft!.username};${annaSoft!.password};5101;5102\n`);
    const port = await freePort();
    const r = await runSipp(["-sf", "mwi-phone.xml", "-inf", csv, "-i", "127.0.0.1", "-p", String(port), "-m", "1", "-nd", "-timeout", "20", "-timeout_error", "-trace_err", "-error_file", path.join(dir, "sipp-errors.log"), `127.0.0.1:${agent.port}`], 25_000);
    assertSippOk("mwi-phone.xml", r);
    assert.equal(r.successful, 1, r.stdout.slice(-1500));
  });

  test("what a phone may watch: the voicemail code is its own mailbox, a group of its own alone; another user, device or group is 403", async () => {
    const [bp] = await scene.register([benDesk!]);
    const w = new Subscriber(bp!);
    const byCode = await w.subscribe("*97", { event: "message-summary", extra: [ACCEPT] });
    assert.equal(byCode.res.status, 200);
    const first = summary(await w.waitNotify(byCode.sub, () => true));
    assert.equal(first["Messages-Waiting"], "no");
    assert.match(first["Message-Account"] ?? "", /^sip:5102@127\.0\.0\.1:\d+$/, "the own account, not the code");
    assert.equal(first["Voice-Message"], "0/0 (0/0)");

    const group = await w.subscribe("561", { event: "message-summary", extra: [ACCEPT] });
    assert.equal(group.res.status, 200, "ben is a member of front (561)");
    assert.match(summary(await w.waitNotify(group.sub, () => true))["Message-Account"] ?? "", /^sip:561@/);

    for (const target of ["5101", "anna", annaDesk!.username, annaSoft!.username, "562", "5103"]) {
      const { res, sub } = await w.subscribe(target, { event: "message-summary", extra: [ACCEPT] });
      assert.equal(res.status, 403, `${target}: ${res.firstLine}`);
      await new Promise((r) => setTimeout(r, 30));
      assert.equal(w.notifiesOf(sub).length, 0, `${target}: no NOTIFY`);
    }
    const nobody = await w.subscribe("5999", { event: "message-summary", extra: [ACCEPT] });
    assert.equal(nobody.res.status, 404);
    const accept = await w.subscribe("5102", { event: "message-summary", extra: ["Accept: application/dialog-info+xml"] });
    assert.equal(accept.res.status, 406);
    assert.equal(accept.res.header("accept"), "application/simple-message-summary");
  });

  test("expiry: the lamp's subscription ends with a terminated NOTIFY carrying the summary", async () => {
    const [cp] = await scene.register([carlaDesk!]);
    const w = new Subscriber(cp!);
    const { res, sub } = await w.subscribe("5103", { event: "message-summary", extra: [ACCEPT], expires: 2 });
    assert.equal(res.status, 200);
    assert.equal(res.header("expires"), "2");
    await w.waitNotify(sub, (n) => n.state.startsWith("active"));
    const last = await w.waitNotify(sub, (n) => n.state.startsWith("terminated"), 6000);
    assert.equal(last.state, "terminated;reason=timeout");
    assert.equal(summary(last)["Messages-Waiting"], "no");
  });
});
