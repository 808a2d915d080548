// A phone that dies in the middle of a call (stops answering keep-alives): its operator is
// free again, and the caller gets a BYE on its behalf with Reason 480 instead of silence.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Phone, TRUNK_CALLER_IP, answerAfter, assertSippOk, callIdOf, loggedCall, registerPhones, simUser, sippCall, startRoutingAgent, writeSiteFile, type SippPeer, CallScene } from "./callsim.ts";
import { freePort, tempDir, until, type RunningAgent } from "./harness.ts";

const d1 = simUser("dead1", "4601");
const d2 = simUser("dead2", "4602");
let agent: RunningAgent;
let dataDir: string;
const scene = new CallScene(() => agent);
const { phones, peers } = scene;

before(async () => {
  dataDir = tempDir("ringedge-routing-dead-");
  const file = writeSiteFile(tempDir("ringedge-site-"), {
    settings: { pickupCode: "*8", trunk: { host: "127.0.0.1", port: await freePort(), transport: "udp", allowedSources: [TRUNK_CALLER_IP] } },
    users: [{ ...d1.user, callLimit: 1 }, d2.user],
    devices: [...d1.devices, ...d2.devices],
    groups: [{ id: "dead", number: "746", strategy: "sequential", members: ["dead1", "dead2"], ringCount: 5, noAnswer: { kind: "hangup" } }],
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
