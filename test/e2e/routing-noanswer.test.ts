// Call distribution end to end, no-answer actions: the real agent (site file, ring unit 200 ms)
// between a SIPp caller entering as the trunk, registered phones (callsim.ts Phone) and SIPp
// peers standing in for the voicemail box and the trunk gateway. Covers voicemail,
// forward-mobile and forward-number through the trunk, hangup with its configured status (and
// the missed call in the call log with who was offered), overflow to another group after the
// group's steps and at once when every member is offline, and wait-for-operator: 182 Queued,
// then the first member whose call ends gets the waiting call.
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
  sippServer,
  startRoutingAgent,
  statusesOf,
  writeSiteFile,
  type SimDevice,
  type SimGroup,
  type SippPeer,
  assertSippOk,
  assertAfter,
  CallScene,
  SimRoster,
} from "./callsim.ts";
import { freePort, sleep, tempDir, until, type RunningAgent } from "./harness.ts";

const UNIT = 200;

const roster = new SimRoster();
const { users, devices } = roster;

const vm1 = roster.add("vm1", "3001");
const fm1 = roster.add("fm1", "3011", { mobile: "+491701000011" });
const fn1 = roster.add("fn1", "3021");
const h1 = roster.add("h1", "3031");
const h2 = roster.add("h2", "3032");
const ov1 = roster.add("ov1", "3041");
const ov2 = roster.add("ov2", "3042");
roster.add("off1", "3051");
const off2 = roster.add("off2", "3052");
const w1 = roster.add("w1", "3061", { callLimit: 1 });
const w2 = roster.add("w2", "3062", { callLimit: 1 });

let vmPort: number;
let trunkPort: number;
let agent: RunningAgent;
let dataDir: string;
const scene = new CallScene(() => agent);
const { phones, peers } = scene;

function groups(): SimGroup[] {
  return [
    { id: "vm", number: "710", strategy: "sequential", members: ["vm1"], ringCount: 1, noAnswer: { kind: "voicemail", uri: `sip:vm-box@127.0.0.1:${vmPort}` } },
    { id: "fm", number: "711", strategy: "sequential", members: ["fm1"], ringCount: 1, noAnswer: { kind: "forward-mobile" } },
    { id: "fn", number: "712", strategy: "sequential", members: ["fn1"], ringCount: 1, noAnswer: { kind: "forward-number", number: "0301234567" } },
    { id: "hang", number: "713", strategy: "simultaneous", members: ["h1", "h2"], ringCount: 1, noAnswer: { kind: "hangup", status: 603 } },
    { id: "ov", number: "714", strategy: "sequential", members: ["ov1"], ringCount: 2, noAnswer: { kind: "overflow-group", groupId: "ovt" } },
    { id: "ovt", number: "715", strategy: "simultaneous", members: ["ov2"], ringCount: 5, noAnswer: { kind: "hangup" } },
    { id: "off", number: "716", strategy: "sequential", members: ["off1"], ringCount: 5, noAnswer: { kind: "overflow-group", groupId: "offt" } },
    { id: "offt", number: "717", strategy: "sequential", members: ["off2"], ringCount: 5, noAnswer: { kind: "hangup" } },
    { id: "wait", number: "718", strategy: "sequential", members: ["w1", "w2"], ringCount: 2, noAnswer: { kind: "wait-for-operator", maxWaitS: 10, then: { kind: "hangup" } } },
  ];
}

before(async () => {
  vmPort = await freePort();
  trunkPort = await freePort();
  dataDir = tempDir("ringedge-routing-na-");
  const file = writeSiteFile(tempDir("ringedge-site-"), {
    settings: { pickupCode: "*8", trunk: { host: "127.0.0.1", port: trunkPort, transport: "udp", allowedSources: [TRUNK_CALLER_IP] } },
    users,
    devices,
    groups: groups(),
  });
  agent = await startRoutingAgent(file, { ringUnitMs: UNIT, dataDir });
});

after(() => scene.close());

const register = (devs: readonly SimDevice[], answering = RING): Promise<Phone[]> => scene.register(devs, answering);



/** The INVITE a SIPp peer received for a call. */
function inviteAt(peer: SippPeer, callId: string) {
  const inv = peer.received().find((e) => e.msg.method === "INVITE" && e.msg.header("call-id") === callId);
  assert.ok(inv, "the peer got the INVITE");
  return inv;
}

describe("no-answer actions through the real agent", () => {
  test("voicemail: after the group's step the call goes to the voicemail box (a SIPp UAS), which answers", async () => {
    const [p] = await register([vm1]);
    const vm = await sippServer("route-uas-answer.xml", { port: vmPort });
    peers.push(vm);
    const caller = await sippCall(agent.port, "route-caller.xml", "710", { pauseMs: 100 });
    peers.push(caller);
    assertSippOk("caller answered by voicemail", await caller.run);
    assertSippOk("voicemail box", await vm.run);
    const id = callIdOf(caller);
    const inv = inviteAt(vm, id);
    assert.match(inv.msg.uri ?? "", new RegExp(`^sip:vm-box@127\\.0\\.0\\.1:${vmPort}`));
    const rang = p!.invitesOf(id)[0]!;
    assertAfter("voicemail after one step", rang.at, inv.at, UNIT);
    await p!.waitCancel(id);
    const rec = await loggedCall(dataDir, id);
    assert.equal(rec.outcome, "voicemail");
    assert.deepEqual(rec.offered, ["vm1"]);
  });

  test("forward-mobile: the member's mobile is dialled through the trunk (a SIPp UAS at the trunk's host:port)", async () => {
    const [p] = await register([fm1]);
    const trunk = await sippServer("route-uas-answer.xml", { port: trunkPort });
    peers.push(trunk);
    const caller = await sippCall(agent.port, "route-caller.xml", "711", { pauseMs: 100 });
    peers.push(caller);
    assertSippOk("caller answered by the mobile", await caller.run);
    assertSippOk("trunk", await trunk.run);
    const id = callIdOf(caller);
    const inv = inviteAt(trunk, id);
    assert.match(inv.msg.uri ?? "", new RegExp(`^sip:\\+491701000011@127\\.0\\.0\\.1:${trunkPort}`));
    assertAfter("forward after one step", p!.invitesOf(id)[0]!.at, inv.at, UNIT);
    assert.equal((await loggedCall(dataDir, id)).outcome, "forwarded");
  });

  test("forward-number: the configured number is dialled through the trunk", async () => {
    await register([fn1]);
    const trunk = await sippServer("route-uas-answer.xml", { port: trunkPort });
    peers.push(trunk);
    const caller = await sippCall(agent.port, "route-caller.xml", "712", { pauseMs: 100 });
    peers.push(caller);
    assertSippOk("caller answered by the number", await caller.run);
    assertSippOk("trunk", await trunk.run);
    const inv = inviteAt(trunk, callIdOf(caller));
    assert.match(inv.msg.uri ?? "", new RegExp(`^sip:0301234567@127\\.0\\.0\\.1:${trunkPort}`));
  });

  test("hangup: the caller gets the configured status; the missed call is logged with who was offered", async () => {
    const ps = await register([h1, h2]);
    const caller = await sippCall(agent.port, "route-caller-fail.xml", "713");
    peers.push(caller);
    assertSippOk("caller", await caller.run);
    assert.equal(statusesOf(caller).at(-1), 603);
    const id = callIdOf(caller);
    await Promise.all(ps.map((p) => p.waitCancel(id)));
    const rec = await loggedCall(dataDir, id);
    assert.equal(rec.outcome, "missed");
    assert.equal(rec.groupId, "hang");
    assert.equal(rec.caller, "+4930111222");
    assert.deepEqual([...rec.offered].sort(), ["h1", "h2"]);
    assert.equal(rec.answeredBy, undefined);
    // `ringedge status` counts it among the calls the engine measured.
    const st = JSON.parse((await agent.cli(["status", "--json"])).stdout) as { routing: { latency: { count: number } } };
    assert.ok(st.routing.latency.count >= 1);
  });

  test("overflow-group: after the group's steps the call rings the next group", async () => {
    const [p1, p2] = await register([ov1, ov2]);
    p2!.answering = answerAfter(100);
    const caller = await sippCall(agent.port, "route-caller.xml", "714", { pauseMs: 100 });
    peers.push(caller);
    assertSippOk("caller answered in the overflow group", await caller.run);
    const id = callIdOf(caller);
    const [i1, i2] = [p1!.invitesOf(id)[0]!, p2!.invitesOf(id)[0]!];
    assertAfter("overflow after the step (ringCount 2)", i1.at, i2.at, 2 * UNIT);
    const c1 = await p1!.waitCancel(id);
    assert.ok(c1.at <= i2.at + 60, "the first group stops ringing as the overflow starts");
    const rec = await loggedCall(dataDir, id);
    assert.equal(rec.answeredBy, "ov2");
    assert.deepEqual(rec.offered, ["ov1", "ov2"]);
  });

  test("overflow-group at once when every member of the group is offline", async () => {
    const [p2] = await register([off2], answerAfter(100));
    const caller = await sippCall(agent.port, "route-caller.xml", "716", { pauseMs: 100 });
    peers.push(caller);
    assertSippOk("caller answered in the overflow group", await caller.run);
    const id = callIdOf(caller);
    const sent = caller.sent().find((e) => e.msg.method === "INVITE")!;
    const rang = p2!.invitesOf(id)[0]!;
    // The first group's step would be 5 × 200 ms; the overflow must not wait for it.
    assert.ok(rang.at - sent.at < 150, `overflow group rang ${rang.at - sent.at} ms after the caller's INVITE`);
  });

  test("wait-for-operator: with every member busy the caller gets 182 Queued; the first member to hang up gets the call", async () => {
    const [pw1, pw2] = await register([w1, w2], answerAfter(50));
    // Both operators (callLimit 1) take a direct call through the agent and stay on it.
    const held1 = await sippCall(agent.port, "route-caller-held.xml", "3061");
    const held2 = await sippCall(agent.port, "route-caller-held.xml", "3062");
    peers.push(held1, held2);
    const d1 = callIdOf(held1);
    const d2 = callIdOf(held2);
    await until(() => pw1!.acks.some((a) => a.callId === d1) && pw2!.acks.some((a) => a.callId === d2), 5000, 10);
    const caller = await sippCall(agent.port, "route-caller.xml", "718", { pauseMs: 100 });
    peers.push(caller);
    const id = callIdOf(caller);
    await until(() => statusesOf(caller).includes(182) || undefined, 3000, 20).catch(() => undefined);
    await sleep(400);
    assert.equal(pw1!.invitesOf(id).length + pw2!.invitesOf(id).length, 0, "busy operators are not rung");
    // The second operator finishes their call first.
    const freedAt = Date.now();
    assert.equal(await pw2!.hangup(d2), 200);
    assertSippOk("caller answered by the freed operator", await caller.run);
    assert.ok(statusesOf(caller).includes(182), "caller got 182 Queued");
    const got = pw2!.invitesOf(id)[0];
    assert.ok(got, "the freed operator's phone rang");
    assert.ok(got.at - freedAt < 300, `offered ${got.at - freedAt} ms after the hang-up`);
    assert.equal(pw1!.invitesOf(id).length, 0, "the operator still on a call is not rung");
    assertSippOk("held call 2 ended by the phone", await held2.run);
    assert.equal(await pw1!.hangup(d1), 200);
    assertSippOk("held call 1 ended by the phone", await held1.run);
    const rec = await loggedCall(dataDir, id);
    assert.equal(rec.answeredBy, "w2");
  });
});
