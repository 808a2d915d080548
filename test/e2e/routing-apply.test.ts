// Issue 5: "Calls ringing during an apply are not dropped". A call rings at two phones; a new
// site version is applied through the running agent (as a console push or `site apply` does);
// the call goes on ringing, is answered, and the other phone is cancelled as usual.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Phone, RING, TRUNK_CALLER_IP, callIdOf, loggedCall, registerPhones, simUser, sippCall, startRoutingAgent, writeSiteFile, type SimSite, type SippPeer, CallScene } from "./callsim.ts";
import { freePort, tempDir, type RunningAgent } from "./harness.ts";

// 20 rings of 1 s: the call rings well past the apply, however slow the CLI is on a busy machine.
const UNIT = 1000;
const a1 = simUser("ap1", "4501");
const a2 = simUser("ap2", "4502");
const late = simUser("ap3", "4503");

let agent: RunningAgent;
let dataDir: string;
let siteDir: string;
let site: SimSite;
const scene = new CallScene(() => agent);
const { phones, peers } = scene;

before(async () => {
  dataDir = tempDir("ringedge-routing-apply-");
  siteDir = tempDir("ringedge-site-");
  site = {
    settings: { pickupCode: "*8", trunk: { host: "127.0.0.1", port: await freePort(), transport: "udp", allowedSources: [TRUNK_CALLER_IP] } },
    users: [a1.user, a2.user],
    devices: [...a1.devices, ...a2.devices],
    groups: [{ id: "front", number: "745", strategy: "simultaneous", members: ["ap1", "ap2"], ringCount: 20, noAnswer: { kind: "hangup" } }],
  };
  agent = await startRoutingAgent(writeSiteFile(siteDir, site, 1), { ringUnitMs: UNIT, dataDir });
});

after(() => scene.close());

test("a new site version applied while a call rings: the call is not dropped, it is answered and the other phone cancelled", async () => {
  const [p1] = await registerPhones(agent.port, a1.devices, RING);
  // p2 answers when the test says so, after the apply was checked: no race with the CLI's speed.
  const [p2] = await registerPhones(agent.port, a2.devices, RING);
  phones.push(p1!, p2!);
  const caller = await sippCall(agent.port, "route-caller.xml", "745", { pauseMs: 50, timeoutS: 30 });
  peers.push(caller);
  const id = callIdOf(caller);
  await p1!.waitInvites(1);
  await p2!.waitInvites(1);

  // Version 2 changes the ringing group (pickup on, another no-answer action) and adds an operator.
  const v2: SimSite = {
    ...site,
    users: [...site.users, late.user],
    devices: [...site.devices, ...late.devices],
    groups: [{ ...site.groups[0]!, pickup: { enabled: true }, noAnswer: { kind: "hangup", status: 486 } }],
  };
  const applied = await agent.cli(["site", "apply", writeSiteFile(siteDir, v2, 2), "--json"]);
  assert.equal(applied.code, 0, applied.stderr);
  const status = JSON.parse((await agent.cli(["status", "--json"])).stdout) as { site: { version: number } };
  assert.equal(status.site.version, 2, "the new version is live");
  assert.equal(p1!.cancels.length, 0, "nothing was cancelled by the apply");
  assert.equal(p2!.cancels.length, 0, "nothing was cancelled by the apply");
  p2!.answerNow(id);

  const r = await caller.run;
  assert.equal(r.code, 0, `the caller was connected: SIPp exit ${r.code}\n${r.stdout.slice(-1200)}`);
  const cancel = await p1!.waitCancel(id);
  assert.equal(cancel.msg.header("reason"), 'SIP;cause=200;text="Call completed elsewhere"');
  const logged = await loggedCall(dataDir, id);
  assert.equal(logged.answeredBy, "ap2");
  assert.equal(logged.outcome, "answered");
});
