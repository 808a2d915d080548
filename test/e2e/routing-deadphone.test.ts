// A phone that dies in the middle of a call (stops answering keep-alives): its operator is
// free again, and the other side gets a BYE on its behalf with Reason 480 instead of silence:
// the caller when the answering phone died, the operator's phone when the calling one did.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Phone, TRUNK_CALLER_IP, answerAfter, assertSippOk, callIdOf, loggedCall, registerPhones, simUser, sippCall, startRoutingAgent, writeSiteFile, type SippPeer, CallScene } from "./callsim.ts";
import { freePort, tempDir, until, type RunningAgent } from "./harness.ts";

const d1 = simUser("dead1", "4601");
const d2 = simUser("dead2", "4602");
const d3 = simUser("dead3", "4603");
const d4 = simUser("dead4", "4604");
let agent: RunningAgent;
let dataDir: string;
const scene = new CallScene(() => agent);
const { phones, peers } = scene;

before(async () => {
  dataDir = tempDir("ringedge-routing-dead-");
  const file = writeSiteFile(tempDir("ringedge-site-"), {
    settings: { pickupCode: "*8", trunk: { host: "127.0.0.1", port: await freePort(), transport: "udp", allowedSources: [TRUNK_CALLER_IP] } },
    users: [{ ...d1.user, callLimit: 1 }, d2.user, d3.user, { ...d4.user, callLimit: 1 }],
    devices: [...d1.devices, ...d2.devices, ...d3.devices, ...d4.devices],
    groups: [
      { id: "dead", number: "746", strategy: "sequential", members: ["dead1", "dead2"], ringCount: 5, noAnswer: { kind: "hangup" } },
      { id: "deadin", number: "747", strategy: "simultaneous", members: ["dead4"], ringCount: 5, noAnswer: { kind: "hangup" } },
    ],
  });
  // Keep-alives every second, offline after one unanswered round.
  agent = await startRoutingAgent(file, { ringUnitMs: 200, dataDir, env: { RINGEDGE_KEEPALIVE_INTERVAL_S: "1", RINGEDGE_KEEPALIVE_MISSES: "1", RINGEDGE_SIP_T1_MS: "100" } });
});

after(() => scene.close());

test("the answering phone dies: the caller gets BYE with Reason 480 through the agent, and the operator takes calls again", async () => {
  const [p1] = await registerPhones(agent.port, d1.devices, answerAfter(50));
  const [p2] = await registerPhones(agent.port, d2.devices, answerAfter(50));
  phones.push(p1!, p2!);
  // The caller holds the call until a BYE comes from the callee's side.
  const caller = await sippCall(agent.port, "route-caller-held.xml", "746", { timeoutS: 15 });
  peers.push(caller);
  const id = callIdOf(caller);
  await until(() => p1!.acks.some((a) => a.callId === id), 5000, 20);

  p1!.close(); // pulled from the wall: no BYE, no more keep-alive answers
  assertSippOk("the caller got a BYE and answered it", await caller.run);
  const bye = caller.received().find((e) => e.msg.method === "BYE");
  assert.ok(bye, "BYE reached the caller");
  assert.equal(bye.msg.header("reason"), 'SIP;cause=480;text="Callee unreachable"');
  assert.equal((await loggedCall(dataDir, id)).answeredBy, "dead1");

  // dead1 re-registers (a rebooted phone): with callLimit 1 it is free, so it rings first again.
  const [again] = await registerPhones(agent.port, d1.devices, answerAfter(50));
  phones.push(again!);
  const next = await sippCall(agent.port, "route-caller.xml", "746", { pauseMs: 50 });
  peers.push(next);
  assertSippOk("next call", await next.run);
  assert.equal(again!.invitesOf(callIdOf(next)).length, 1, "the operator of the dead phone is not counted busy");
});

test("the calling phone dies: the operator's phone gets BYE with Reason 480 from the caller's side, and the operator takes calls again", async () => {
  const [op] = await registerPhones(agent.port, d4.devices, answerAfter(50));
  const [callerPhone] = await registerPhones(agent.port, d3.devices);
  phones.push(op!, callerPhone!);
  // A desk phone of the site calls the group from its registered flow, and the operator answers.
  assert.equal(await callerPhone!.dial("747"), 200);
  const id = callerPhone!.dialled.at(-1)!;
  await until(() => op!.acks.some((a) => a.callId === id), 5000, 20);

  callerPhone!.close(); // pulled from the wall: no BYE, no more keep-alive answers
  await until(() => op!.byes.some((b) => b.callId === id), 15_000, 50);
  const bye = op!.byes.find((b) => b.callId === id)!.msg;
  assert.equal(bye.header("reason"), 'SIP;cause=480;text="Caller unreachable"');
  assert.match(bye.header("from") ?? "", /dead3/, "from the caller's side of the dialog");
  assert.equal((await loggedCall(dataDir, id)).answeredBy, "dead4");

  // With callLimit 1 the operator counts as free again: the next call rings that phone.
  const next = await sippCall(agent.port, "route-caller.xml", "747", { pauseMs: 50 });
  peers.push(next);
  assertSippOk("next call", await next.run);
  assert.equal(op!.invitesOf(callIdOf(next)).length, 1, "the operator of the call whose caller died is not counted busy");
});
