// Call distribution end to end, strategies: the real agent (child process, site file, ring unit
// 200 ms) between a SIPp caller entering as the trunk and registered phones (raw-UDP user
// agents from callsim.ts, and SIPp phones). Shows the order and timing of ringing for
// sequential, simultaneous, evenly (across an agent restart) and cumulative; the 10-phone cap
// with 12 physical + 2 soft devices; first answer wins with RFC 3326 Reason on the others'
// CANCEL; and that the caller's CANCEL cancels every branch.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  DEVICE_PASSWORD,
  Phone,
  RING,
  TRUNK_CALLER_IP,
  answerAfter,
  callIdOf,
  loggedCall,
  registerPhones,
  simUser,
  sippCall,
  sippPhones,
  startRoutingAgent,
  statusesOf,
  writeSiteFile,
  type SimDevice,
  type SimGroup,
  type SimSite,
  type SimUser,
  type SippPeer,
  assertSippOk,
  assertAfter,
  CallScene,
} from "./callsim.ts";
import { freePort, tempDir, until, type RunningAgent } from "./harness.ts";

const UNIT = 200;
/** A step of ringCount 2. */
const STEP = 2 * UNIT;
/** Timing tolerance: timers may fire late on a loaded 2-core machine, never early. */
const ANSWERED_ELSEWHERE = 'SIP;cause=200;text="Call completed elsewhere"';

const users: SimUser[] = [];
const devices: SimDevice[] = [];
function add(id: string, ext: string, kinds: Array<"physical" | "soft"> = ["physical"]): SimDevice[] {
  const u = simUser(id, ext, kinds);
  users.push(u.user);
  devices.push(...u.devices);
  return u.devices;
}

// sequential / cumulative / evenly / simultaneous (answer) groups: one user, one physical phone each.
const seq = [add("seq1", "2001"), add("seq2", "2002"), add("seq3", "2003")].flat();
const cum = [add("cum1", "2011"), add("cum2", "2012"), add("cum3", "2013")].flat();
const even = [add("even1", "2021"), add("even2", "2022"), add("even3", "2023")].flat();
const simA = [add("sima1", "2031"), add("sima2", "2032"), add("sima3", "2033")].flat();
const simSipp = add("sima4", "2034");
// The cap: 12 members with a desk phone each; member 2 and member 12 also have a soft client.
const cap: SimDevice[][] = [];
for (let i = 1; i <= 12; i++) cap.push(add(`cap${i}`, String(2100 + i), i === 2 || i === 12 ? ["physical", "soft"] : ["physical"]));

const groups: SimGroup[] = [
  { id: "seq", number: "700", strategy: "sequential", members: ["seq1", "seq2", "seq3"], ringCount: 2, noAnswer: { kind: "hangup", status: 486 } },
  { id: "cum", number: "701", strategy: "cumulative", members: ["cum1", "cum2", "cum3"], ringCount: 2, noAnswer: { kind: "hangup", status: 480 } },
  { id: "even", number: "702", strategy: "evenly", members: ["even1", "even2", "even3"], ringCount: 2, noAnswer: { kind: "hangup" } },
  { id: "sima", number: "703", strategy: "simultaneous", members: ["sima1", "sima2", "sima3", "sima4"], ringCount: 10, noAnswer: { kind: "hangup" } },
  { id: "cap", number: "704", strategy: "simultaneous", members: cap.map((_, i) => `cap${i + 1}`), ringCount: 10, noAnswer: { kind: "hangup" } },
];

let agent: RunningAgent;
let siteFile: string;
let dataDir: string;
const scene = new CallScene(() => agent);
const { phones, peers } = scene;

before(async () => {
  dataDir = tempDir("ringedge-routing-strat-");
  const site: SimSite = {
    settings: { pickupCode: "*8", trunk: { host: "127.0.0.1", port: await freePort(), transport: "udp", allowedSources: [TRUNK_CALLER_IP] } },
    users,
    devices,
    groups,
  };
  siteFile = writeSiteFile(tempDir("ringedge-site-"), site);
  agent = await startRoutingAgent(siteFile, { ringUnitMs: UNIT, dataDir });
});

after(() => scene.close());

const register = (devs: readonly SimDevice[], answering = RING): Promise<Phone[]> => scene.register(devs, answering);



describe("strategies through the real agent", () => {
  test("sequential: members ring one after another, each for ringCount × unit; the earlier one is cancelled as the next starts", async () => {
    const [p1, p2, p3] = await register(seq);
    const caller = await sippCall(agent.port, "route-caller-fail.xml", "700");
    peers.push(caller);
    assertSippOk("caller gets the configured 486", await caller.run);
    assert.equal(statusesOf(caller).at(-1), 486);
    const id = callIdOf(caller);
    const [i1, i2, i3] = [p1!.invitesOf(id)[0], p2!.invitesOf(id)[0], p3!.invitesOf(id)[0]];
    assert.ok(i1 && i2 && i3, "each member's phone got the INVITE");
    assert.equal(p1!.invitesOf(id).length + p2!.invitesOf(id).length + p3!.invitesOf(id).length, 3, "one INVITE each");
    assertAfter("member 2 starts", i1.at, i2.at, STEP);
    assertAfter("member 3 starts", i1.at, i3.at, 2 * STEP);
    const [c1, c2, c3] = await Promise.all([p1!.waitCancel(id), p2!.waitCancel(id), p3!.waitCancel(id)]);
    // Each member stops when the next starts (and the last when the group gives up).
    assert.ok(Math.abs(c1.at - i2.at) < 60, `member 1 cancelled as member 2 starts (${c1.at - i2.at} ms)`);
    assert.ok(Math.abs(c2.at - i3.at) < 60, `member 2 cancelled as member 3 starts (${c2.at - i3.at} ms)`);
    assertAfter("member 3 cancelled at the end of its step", i3.at, c3.at, STEP);
    // A step ending is not "answered elsewhere": no cause=200 that would hide a missed call.
    for (const c of [c1, c2, c3]) assert.ok(c.msg.header("reason") === undefined || /^SIP;cause=/.test(c.msg.header("reason")!), `CANCEL Reason well-formed: ${c.msg.header("reason")}`);
    const rec = await loggedCall(dataDir, id);
    assert.equal(rec.outcome, "missed");
    assert.equal(rec.groupId, "seq");
    assert.deepEqual(rec.offered, ["seq1", "seq2", "seq3"]);
  });

  test("cumulative: earlier members keep ringing while the next is added; all stop together", async () => {
    const [p1, p2, p3] = await register(cum);
    const caller = await sippCall(agent.port, "route-caller-fail.xml", "701");
    peers.push(caller);
    assertSippOk("caller gets 480", await caller.run);
    assert.equal(statusesOf(caller).at(-1), 480);
    const id = callIdOf(caller);
    const [i1, i2, i3] = [p1!.invitesOf(id)[0]!, p2!.invitesOf(id)[0]!, p3!.invitesOf(id)[0]!];
    assertAfter("member 2 added", i1.at, i2.at, STEP);
    assertAfter("member 3 added", i1.at, i3.at, 2 * STEP);
    const cancels = await Promise.all([p1!.waitCancel(id), p2!.waitCancel(id), p3!.waitCancel(id)]);
    for (const [k, c] of cancels.entries()) {
      // Nobody was cancelled before the group's last step ran out.
      assertAfter(`member ${k + 1} cancelled only at the end`, i3.at, c.at, STEP);
    }
  });

  test("simultaneous: all ring at once; first answer wins, the others (a SIPp phone among them) get CANCEL with Reason cause=200", async () => {
    const [p1, p2, p3] = await register(simA);
    p2!.answering = answerAfter(300);
    const sipp = await sippPhones(agent, [[simSipp[0]!.username, DEVICE_PASSWORD]], "route-phone-ring.xml", 6000);
    peers.push(sipp);
    const caller = await sippCall(agent.port, "route-caller.xml", "703", { pauseMs: 200 });
    peers.push(caller);
    assertSippOk("caller connected, ACK and BYE through the agent", await caller.run);
    const id = callIdOf(caller);
    const inv = [p1!, p2!, p3!].map((p) => p.invitesOf(id)[0]!);
    const t0 = Math.min(...inv.map((i) => i.at));
    for (const i of inv) assert.ok(i.at - t0 < 60, "all ring at once");
    const [c1, c3] = await Promise.all([p1!.waitCancel(id), p3!.waitCancel(id)]);
    assert.equal(c1.msg.header("reason"), ANSWERED_ELSEWHERE);
    assert.equal(c3.msg.header("reason"), ANSWERED_ELSEWHERE);
    assert.equal(p2!.cancels.length, 0, "the answering phone is not cancelled");
    assert.ok(p2!.byes.some((b) => b.callId === id), "the caller's BYE reached the answering phone");
    sipp.run.proc.kill("SIGTERM");
    await sipp.run;
    const sippInvite = sipp.received().find((e) => e.msg.method === "INVITE" && e.msg.header("call-id") === id);
    const sippCancel = sipp.received().find((e) => e.msg.method === "CANCEL" && e.msg.header("call-id") === id);
    assert.ok(sippInvite && sippInvite.at - t0 < 60, "the SIPp phone rang with the others");
    assert.equal(sippCancel?.msg.header("reason"), ANSWERED_ELSEWHERE);
    const rec = await loggedCall(dataDir, id);
    assert.equal(rec.outcome, "answered");
    assert.equal(rec.answeredBy, "sima2");
  });

  test("the cap: 12 desk phones + 2 soft clients (SIPp phones): the first 10 desk phones in member order and both soft ones ring; the caller's CANCEL cancels them all", async () => {
    // One SIPp process per device: the forks of one call share its Call-ID, and one SIPp
    // process keys its calls by Call-ID, so it could not ring as two phones at once.
    // Each stays registered 60 s (they are stopped below): starting 14 SIPp processes on a busy
    // machine took longer than a shorter stay, and the first phones had unregistered before the call.
    const sipps = await Promise.all(cap.flat().map((d) => sippPhones(agent, [[d.username, DEVICE_PASSWORD]], "route-phone-ring.xml", 60_000)));
    peers.push(...sipps);
    const caller = await sippCall(agent.port, "route-caller-cancel.xml", "704", { pauseMs: 400 });
    peers.push(caller);
    assertSippOk("caller cancels and gets 487", await caller.run);
    const id = callIdOf(caller);
    // Wait (bounded) until every phone the call reached has seen its CANCEL and the ACK for its
    // 487 (SIPp writes its message trace as it goes), then read what they saw.
    const seen = (p: (typeof sipps)[number], method: string): boolean => p.received().some((e) => e.msg.method === method && e.msg.header("call-id") === id);
    // (The 12 that should ring are awaited; on a timeout the assertions below say what was seen.)
    await until(() => sipps.filter((p) => seen(p, "INVITE")).length >= 12 && sipps.every((p) => !seen(p, "INVITE") || (seen(p, "CANCEL") && seen(p, "ACK"))), 20_000, 50).catch(() => undefined);
    for (const p of sipps) p.run.proc.kill("SIGTERM");
    await Promise.all(sipps.map((p) => p.run));
    const rang: string[] = [];
    let cancelled = 0;
    for (const [k, d] of cap.flat().entries()) {
      const got = sipps[k]!.received().filter((e) => e.msg.header("call-id") === id);
      const invites = got.filter((e) => e.msg.method === "INVITE");
      assert.ok(invites.length <= 1, `${d.username}: one INVITE, no retransmission needed`);
      if (invites.length === 1) rang.push(d.username);
      if (got.some((e) => e.msg.method === "CANCEL")) cancelled++;
    }
    const expected = [...cap.slice(0, 10).map((d) => d[0]!.username), cap[1]![1]!.username, cap[11]![1]!.username];
    assert.deepEqual([...rang].sort(), [...expected].sort(), "10 desk phones in member order + the 2 soft clients");
    assert.ok(!rang.includes("cap11") && !rang.includes("cap12"), "desk phones 11 and 12 stay silent");
    assert.equal(cancelled, 12, "every ringing branch got the caller's CANCEL");
  });

  test("evenly: the member offered longest ago goes first, across consecutive calls and an agent restart", async () => {
    const ps = await register(even, answerAfter(50));
    const first: string[] = [];
    const call = async (): Promise<void> => {
      const caller = await sippCall(agent.port, "route-caller.xml", "702");
      peers.push(caller);
      assertSippOk("caller answered", await caller.run);
      const id = callIdOf(caller);
      const k = ps.findIndex((p) => p.invitesOf(id).length > 0);
      assert.ok(k >= 0);
      assert.equal(ps.filter((p) => p.invitesOf(id).length > 0).length, 1, "one member per step, and the first answers");
      first.push(even[k]!.username);
    };
    await call();
    await call();
    // Restart: the rotation is in the store (write-behind, flushed on SIGTERM).
    const port = agent.port;
    await agent.stop();
    agent = await startRoutingAgent(siteFile, { ringUnitMs: UNIT, dataDir, port });
    await call();
    await call();
    assert.deepEqual(first, ["even1", "even2", "even3", "even1"]);
  });
});
