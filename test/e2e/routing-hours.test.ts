// Routing that knows the business, end to end (issue 14): the real agent on a site file (ring
// unit 200 ms) with registered phones (callsim.ts Phone), a SIPp caller entering as the trunk
// (its From is +4930111222) and a SIPp voicemail box. A call to a group out of its working hours
// takes the out-of-hours action at once; a known caller rings the responsible operator alone
// first, then the group; wrap-up holds an operator back from the group's next call for N
// seconds; `ringedge why` names the reason a member was skipped; `ringedge group show` says
// whether a group is open.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  answerAfter,
  assertAfter,
  assertSippOk,
  callIdOf,
  CallScene,
  loggedCall,
  RING,
  sippCall,
  sippServer,
  startRoutingAgent,
  TRUNK_CALLER_IP,
  writeSiteFile,
  type SimGroup,
  SimRoster,
} from "./callsim.ts";
import { freePort, tempDir, until, type RunningAgent } from "./harness.ts";

const UNIT = 200;
const WRAP_UP_S = 2;
/** The SIPp caller's number (test/sipp/route-caller.xml From), as the console's directory lists it. */
const CALLER = "+4930111222";
/** A date three days ahead (in Berlin it is the same date or the next one; either is days away). */
const HOLIDAY = new Date(Date.now() + 3 * 86_400_000).toISOString().slice(0, 10);

const roster = new SimRoster();
const { users, devices } = roster;
const c1 = roster.add("c1", "3101");
const r1 = roster.add("r1", "3111");
const r2 = roster.add("r2", "3112");
const r3 = roster.add("r3", "3113");
const wu1 = roster.add("wu1", "3121");
const wu2 = roster.add("wu2", "3122");

let vmPort: number;
let agent: RunningAgent;
let dataDir: string;
const scene = new CallScene(() => agent);

function groups(): SimGroup[] {
  return [
    // No weekly hours at all: always closed; the out-of-hours action is the voicemail box.
    {
      id: "closed", number: "720", strategy: "sequential", members: ["c1"], ringCount: 5, noAnswer: { kind: "hangup" },
      hours: { weekly: [], exceptions: [{ date: "2026-12-25", ranges: [] }] },
      outOfHours: { kind: "voicemail", uri: `sip:vm-box@127.0.0.1:${vmPort}` },
    },
    // Open around the clock except on a holiday three days ahead: open now, until that day starts.
    {
      id: "open", number: "723", strategy: "sequential", members: [], ringCount: 1, noAnswer: { kind: "hangup" },
      hours: { weekly: [{ days: ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], from: "00:00", to: "24:00" }], exceptions: [{ date: HOLIDAY, ranges: [] }] },
      outOfHours: { kind: "hangup" },
    },
    { id: "resp", number: "721", strategy: "sequential", members: ["r2", "r3"], ringCount: 1, noAnswer: { kind: "hangup" }, responsibleFirst: { ringCount: 1 } },
    { id: "wrap", number: "722", strategy: "sequential", members: ["wu1", "wu2"], ringCount: 5, noAnswer: { kind: "hangup" }, wrapUpS: WRAP_UP_S },
  ];
}

before(async () => {
  vmPort = await freePort();
  dataDir = tempDir("ringedge-routing-hours-");
  const file = writeSiteFile(tempDir("ringedge-site-"), {
    settings: { pickupCode: "*8", timeZone: "Europe/Berlin", trunk: { host: "127.0.0.1", port: await freePort(), transport: "udp", allowedSources: [TRUNK_CALLER_IP] } },
    users,
    devices,
    groups: groups(),
    knownCallers: [{ number: CALLER, userId: "r1" }],
  });
  agent = await startRoutingAgent(file, { ringUnitMs: UNIT, dataDir });
});

after(() => scene.close());

async function why(args: string[]): Promise<string> {
  const r = await agent.cli(["why", ...args]);
  assert.equal(r.code, 0, `ringedge why ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

describe("working hours, the responsible operator, wrap-up and why, through the real agent", () => {
  test("out of hours: the call goes straight to the out-of-hours action; the member never rings; why and group show say so", async () => {
    const [p] = await scene.register([c1]);
    const vm = await sippServer("route-uas-answer.xml", { port: vmPort });
    scene.peers.push(vm);
    const caller = await sippCall(agent.port, "route-caller.xml", "720", { pauseMs: 100 });
    scene.peers.push(caller);
    assertSippOk("caller answered by voicemail", await caller.run);
    assertSippOk("voicemail box", await vm.run);
    const id = callIdOf(caller);
    const sent = caller.sent().find((e) => e.msg.method === "INVITE")!;
    const inv = vm.received().find((e) => e.msg.method === "INVITE" && e.msg.header("call-id") === id);
    assert.ok(inv, "the voicemail box got the call");
    // The group's step would be 5 × 200 ms; closed means no step at all.
    assert.ok(inv.at - sent.at < 150, `voicemail ${inv.at - sent.at} ms after the caller's INVITE`);
    assert.equal(p!.invitesOf(id).length, 0, "the member of a closed group is not rung");
    const rec = await loggedCall(dataDir, id);
    assert.equal(rec.outcome, "voicemail");
    assert.deepEqual(rec.offered, []);

    const text = await why([id, "--user", "c1"]);
    assert.match(text, /group closed was closed \(out of hours\)/);
    assert.match(text, /c1: not offered: group closed was out of hours/);
    assert.match(text, /then: voicemail sip:vm-box@127\.0\.0\.1:\d+ \(the out-of-hours action\)/);
    // --json (ops.test.ts checks every other command's --json; why needs a recorded call).
    for (const args of [[id, "--json"], ["--last", "--user", "c1", "--json"]]) {
      const j = await agent.cli(["why", ...args]);
      assert.equal(j.code, 0, j.stderr);
      const v = JSON.parse(j.stdout) as { callId: string; lines: string[]; why: unknown };
      assert.equal(v.callId, id);
      assert.ok(v.lines.length > 0 && typeof v.why === "object");
    }
    const show = await agent.cli(["group", "show", "720"]);
    assert.equal(show.code, 0, show.stderr);
    assert.match(show.stdout, /hours\s+CLOSED now, no opening in the schedule's reach, Europe\/Berlin/);
    const json = JSON.parse((await agent.cli(["group", "show", "closed", "--json"])).stdout) as { hours: { open: boolean; timeZone: string } };
    assert.deepEqual({ open: json.hours.open, zone: json.hours.timeZone }, { open: false, zone: "Europe/Berlin" });
    const open = await agent.cli(["group", "show", "723"]);
    assert.match(open.stdout, new RegExp(`hours\\s+OPEN now until ${HOLIDAY} 00:00 \\(UTC\\+0[12]:00\\), Europe/Berlin`));
    const openJson = JSON.parse((await agent.cli(["group", "show", "open", "--json"])).stdout) as { hours: { open: boolean; until: string } };
    assert.equal(openJson.hours.open, true);
    // Local midnight in Berlin is 23:00Z (CET) or 22:00Z (CEST) the day before.
    assert.ok([1, 2].map((h) => Date.parse(`${HOLIDAY}T00:00:00Z`) - h * 3_600_000).includes(Date.parse(openJson.hours.until)), openJson.hours.until);
  });

  test("a known caller rings the responsible operator alone first, then the group's own strategy", async () => {
    const [pr1, pr2, pr3] = await scene.register([r1, r2, r3], RING);
    pr3!.answering = answerAfter(50);
    const caller = await sippCall(agent.port, "route-caller.xml", "721", { pauseMs: 100 });
    scene.peers.push(caller);
    assertSippOk("caller answered by the group", await caller.run);
    const id = callIdOf(caller);
    const first = pr1!.invitesOf(id)[0];
    const second = pr2!.invitesOf(id)[0];
    const third = pr3!.invitesOf(id)[0];
    assert.ok(first && second && third, "the responsible operator, then both members rang");
    // Responsible for 1 ring, then the group: r2 for 1 ring, then r3.
    assertAfter("the group starts after the responsible operator's ring", first.at, second.at, UNIT);
    assertAfter("the second member's turn", second.at, third.at, UNIT);
    const cancel = await pr1!.waitCancel(id);
    assert.ok(cancel.at <= second.at + 60, "the responsible operator stops ringing as the group starts");
    const rec = await loggedCall(dataDir, id);
    assert.equal(rec.answeredBy, "r3");
    assert.deepEqual(rec.offered, ["r1", "r2", "r3"]);
    const text = await why([id]);
    assert.match(text, /responsible operator: r1 \(the console's directory of known callers\)/);
    assert.match(text, /step 1 in group resp \(the responsible operator r1 alone\):\n\s+r1: rang on dev-r1/);
    assert.match((await agent.cli(["site", "show"])).stdout, /known callers 1/);
    const forR2 = await why([id, "--user", "r2"]);
    assert.match(forR2, /r2: not yet: the caller's responsible operator rang first/);
  });

  test("wrap-up holds the operator back from the group's next call for wrapUpS seconds; why names it", async () => {
    const [p1, p2] = await scene.register([wu1, wu2], answerAfter(50));
    // Call 1: wu1 answers; the caller hangs up 100 ms later.
    const call1 = await sippCall(agent.port, "route-caller.xml", "722", { pauseMs: 100 });
    scene.peers.push(call1);
    assertSippOk("call 1", await call1.run);
    const id1 = callIdOf(call1);
    assert.equal((await loggedCall(dataDir, id1)).answeredBy, "wu1");
    const endedAt = Date.now();

    // Call 2 at once: wu1 is in wrap-up, wu2 gets it.
    const call2 = await sippCall(agent.port, "route-caller.xml", "722", { pauseMs: 100 });
    scene.peers.push(call2);
    assertSippOk("call 2", await call2.run);
    const id2 = callIdOf(call2);
    assert.ok(Date.now() - endedAt < WRAP_UP_S * 1000, "call 2 came within the wrap-up time");
    assert.equal(p1!.invitesOf(id2).length, 0, "the operator in wrap-up is not offered the call");
    assert.equal((await loggedCall(dataDir, id2)).answeredBy, "wu2");
    assert.match(await why([id2, "--user", "wu1"]), /wu1: skipped: in wrap-up time after a call through this group/);
    assert.match(await why(["--last", "--user", "wu1"]), new RegExp(`call ${id2.replace(/[.@]/g, "\\$&")}[\\s\\S]*wu1: skipped: in wrap-up`));

    // After the wrap-up: wu1 is offered first again (its own wrap-up after call 2 does not exist).
    await until(() => Date.now() - endedAt > WRAP_UP_S * 1000 + 100 || undefined, WRAP_UP_S * 1000 + 2000, 50);
    const call3 = await sippCall(agent.port, "route-caller.xml", "722", { pauseMs: 100 });
    scene.peers.push(call3);
    assertSippOk("call 3", await call3.run);
    const id3 = callIdOf(call3);
    assert.equal(p1!.invitesOf(id3).length, 1, "after the wrap-up the operator is offered again");
    assert.equal((await loggedCall(dataDir, id3)).answeredBy, "wu1");
    assert.equal(p2!.invitesOf(id3).length, 0);
  });

  test("bad input: why without a call, with both, for an unknown user or call", async () => {
    for (const [args, re] of [
      [[], /name a call/],
      [["x", "--last", "--user", "wu1"], /not both/],
      [["--last"], /--last needs --user/],
      [["--last", "--user", "nobody"], /no user 'nobody'/],
      [["no-such-call"], /no call 'no-such-call'/],
      [["a", "b"], /takes one argument/],
    ] as Array<[string[], RegExp]>) {
      const r = await agent.cli(["why", ...args]);
      assert.notEqual(r.code, 0, args.join(" "));
      assert.match(r.stderr, re, args.join(" "));
    }
  });
});
