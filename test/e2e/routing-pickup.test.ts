// Call distribution end to end, operators' state and pickup: the real agent (site file, ring
// unit 200 ms), a SIPp caller entering as the trunk, and registered phones (callsim.ts Phone).
// Covers members at their call limit (busy in a call answered through the agent) being
// skipped, group pickup (*8) and directed pickup (*8<extension>): the picker's phone gets a new
// INVITE with the auto-answer headers, answers it, the caller is connected to the picker and
// the phones still ringing get CANCEL with the RFC 3326 "Call completed elsewhere" Reason.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  Phone,
  RING,
  TRUNK_CALLER_IP,
  answerAfter,
  callIdOf,
  loggedCall,
  registerPhones,
  sippCall,
  startRoutingAgent,
  writeSiteFile,
  type SimDevice,
  type SippPeer,
  assertSippOk,
  CallScene,
  SimRoster,
} from "./callsim.ts";
import { freePort, tempDir, until, type RunningAgent } from "./harness.ts";

const UNIT = 200;
const ANSWERED_ELSEWHERE = 'SIP;cause=200;text="Call completed elsewhere"';

const roster = new SimRoster();
const { users, devices } = roster;

const b1 = roster.add("b1", "4001", { callLimit: 1 });
const b2 = roster.add("b2", "4002", { callLimit: 1 });
const b3 = roster.add("b3", "4003", { callLimit: 1 });
const pk1 = roster.add("pk1", "4011");
const pk2 = roster.add("pk2", "4012");
const pk3 = roster.add("pk3", "4013");
const dp1 = roster.add("dp1", "4021");
const dp2 = roster.add("dp2", "4022");
const dx = roster.add("dx", "4029");

let agent: RunningAgent;
let dataDir: string;
const scene = new CallScene(() => agent);
const { phones, peers } = scene;

before(async () => {
  dataDir = tempDir("ringedge-routing-pk-");
  const file = writeSiteFile(tempDir("ringedge-site-"), {
    settings: { pickupCode: "*8", trunk: { host: "127.0.0.1", port: await freePort(), transport: "udp", allowedSources: [TRUNK_CALLER_IP] } },
    users,
    devices,
    groups: [
      { id: "busy", number: "720", strategy: "sequential", members: ["b1", "b2"], ringCount: 5, noAnswer: { kind: "hangup" } },
      { id: "busysim", number: "721", strategy: "simultaneous", members: ["b1", "b3"], ringCount: 5, noAnswer: { kind: "hangup" } },
      // pk3 is last in line: with ringCount 10 only pk1 rings while pk3 picks up.
      { id: "pick", number: "730", strategy: "cumulative", members: ["pk1", "pk2", "pk3"], ringCount: 10, noAnswer: { kind: "hangup" }, pickup: { enabled: true } },
      { id: "dpick", number: "731", strategy: "simultaneous", members: ["dp1", "dp2"], ringCount: 10, noAnswer: { kind: "hangup" }, pickup: { enabled: true } },
    ],
  });
  agent = await startRoutingAgent(file, { ringUnitMs: UNIT, dataDir });
});

after(() => scene.close());

const register = (devs: readonly SimDevice[], answering = RING): Promise<Phone[]> => scene.register(devs, answering);


describe("busy operators and pickup through the real agent", () => {
  test("a member at their call limit (in a call answered through the agent) is skipped: sequential and simultaneous", async () => {
    const [p1, p2, p3] = await register([b1, b2, b3], answerAfter(50));
    const held = await sippCall(agent.port, "route-caller-held.xml", "4001");
    peers.push(held);
    const heldId = callIdOf(held);
    await until(() => p1!.acks.some((a) => a.callId === heldId), 5000, 10);

    const seq = await sippCall(agent.port, "route-caller.xml", "720", { pauseMs: 50 });
    peers.push(seq);
    assertSippOk("sequential call answered by the free member", await seq.run);
    const seqId = callIdOf(seq);
    const sent = seq.sent().find((e) => e.msg.method === "INVITE")!;
    assert.equal(p1!.invitesOf(seqId).length, 0, "the busy member's phone never rang");
    const rang = p2!.invitesOf(seqId)[0]!;
    // Not after a step (5 × 200 ms) of ringing nobody: the busy member is passed over at once.
    assert.ok(rang.at - sent.at < 150, `second member rang ${rang.at - sent.at} ms after the INVITE`);
    assert.deepEqual((await loggedCall(dataDir, seqId)).offered, ["b2"]);

    const sim = await sippCall(agent.port, "route-caller.xml", "721", { pauseMs: 50 });
    peers.push(sim);
    assertSippOk("simultaneous call answered by the free member", await sim.run);
    const simId = callIdOf(sim);
    assert.equal(p1!.invitesOf(simId).length, 0, "the busy member's phone never rang");
    assert.equal(p3!.invitesOf(simId).length, 1);
    assert.equal((await loggedCall(dataDir, simId)).answeredBy, "b3");

    // Once the held call ends the member rings again.
    assert.equal(await p1!.hangup(heldId), 200);
    assertSippOk("held call", await held.run);
    const again = await sippCall(agent.port, "route-caller.xml", "720", { pauseMs: 50 });
    peers.push(again);
    assertSippOk("call after the member is free", await again.run);
    assert.equal(p1!.invitesOf(callIdOf(again)).length, 1, "the freed member rings first again");
  });

  test("group pickup *8: the picker's phone gets an auto-answer INVITE, the caller is connected to it, the ringing phone is cancelled with Reason cause=200", async () => {
    const [p1, , p3] = await register([pk1, pk2, pk3]);
    const caller = await sippCall(agent.port, "route-caller.xml", "730", { pauseMs: 200 });
    peers.push(caller);
    const id = callIdOf(caller);
    await p1!.waitInvites(1);
    const status = await p3!.dial("*8");
    // The *8 request itself ends at once (the picked call arrives as a new INVITE, see engine.ts).
    assert.ok(status >= 300, `*8 answered with a final status (${status})`);
    assertSippOk("caller connected to the picker", await caller.run);
    const inv = p3!.invitesOf(id)[0];
    assert.ok(inv, "the picker's phone got the call");
    assert.match(inv.msg.header("call-info") ?? "", /answer-after=0/);
    assert.match(inv.msg.header("alert-info") ?? "", /auto ?answer/i);
    assert.ok(p3!.acks.some((a) => a.callId === id), "the caller's ACK reached the picker");
    assert.ok(p3!.byes.some((b) => b.callId === id), "the caller's BYE reached the picker");
    const c1 = await p1!.waitCancel(id);
    assert.equal(c1.msg.header("reason"), ANSWERED_ELSEWHERE);
    const rec = await loggedCall(dataDir, id);
    assert.equal(rec.answeredBy, "pk3");
  });

  test("directed pickup *8<extension>: a non-member takes the call ringing at that extension", async () => {
    const [p1, p2, px] = await register([dp1, dp2, dx]);
    const caller = await sippCall(agent.port, "route-caller.xml", "731", { pauseMs: 200 });
    peers.push(caller);
    const id = callIdOf(caller);
    await Promise.all([p1!.waitInvites(1), p2!.waitInvites(1)]);
    assert.equal(await px!.dial("*84099"), 404, "an unknown extension is refused");
    const status = await px!.dial("*84021");
    assert.ok(status >= 300);
    assertSippOk("caller connected to the picker", await caller.run);
    assert.match(px!.invitesOf(id)[0]?.msg.header("call-info") ?? "", /answer-after=0/);
    const [c1, c2] = await Promise.all([p1!.waitCancel(id), p2!.waitCancel(id)]);
    assert.equal(c1.msg.header("reason"), ANSWERED_ELSEWHERE);
    assert.equal(c2.msg.header("reason"), ANSWERED_ELSEWHERE);
    assert.equal((await loggedCall(dataDir, id)).answeredBy, "dx");
  });
});
