// Operators' own state from their phones (issue 14), end to end: the real agent (site file,
// ring unit 200 ms, console sync to a real Mosquitto), registered phones (callsim.ts Phone)
// dialling the feature codes, and a SIPp caller entering as the trunk. An operator dials the
// away code and is skipped where the group checks availability; the DND code keeps them off
// every group and their extension; a logged-out operator is skipped in that group and rings
// again after logging back in; a site change that repeats values leaves a phone's change, one
// that changes a value wins; the state survives an agent restart; `ringedge user list` shows it
// and the console receives every change as an operator.state event. Bad input: a code with a
// suffix it does not take, an unknown group, a group of others, the trunk and an unknown source
// dialling a code, a phone proving itself by digest from another socket.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { connect, type MqttClient } from "mqtt";
import { computeAuthorization } from "../../agent/sip/digest.ts";
import { siteTopic } from "../../agent/sync/topics.ts";
import {
  DEVICE_PASSWORD,
  TRUNK_CALLER_IP,
  CallScene,
  answerAfter,
  assertSippOk,
  callIdOf,
  loggedCall,
  sippCall,
  startRoutingAgent,
  statusesOf,
  writeSiteFile,
  type Phone,
  type SimSite,
  type SimUser,
  SimRoster,
} from "./callsim.ts";
import { freePort, tempDir, until, type RunningAgent } from "./harness.ts";
import { startBroker, type Broker } from "./mosquitto.ts";
import { SipClient, randomBranch } from "./sipclient.ts";
import { Subscriber, parseDialogInfo, type HeldSubscription } from "./subscriber.ts";

const UNIT = 200;
const SITE_ID = "site-opstate";

const roster = new SimRoster();
const { users, devices } = roster;
const op1 = roster.add("op1", "5001");
const op2 = roster.add("op2", "5002");
const op3 = roster.add("op3", "5003");

let trunkPort: number;
const site = (): SimSite => ({
  settings: { pickupCode: "*8", trunk: { host: "127.0.0.1", port: trunkPort, transport: "udp", allowedSources: [TRUNK_CALLER_IP] } },
  users: structuredClone(users),
  devices,
  groups: [
    { id: "checked", number: "650", strategy: "simultaneous", members: ["op1", "op2"], ringCount: 3, checkAvailability: true, noAnswer: { kind: "hangup" } },
    { id: "open", number: "651", strategy: "simultaneous", members: ["op1", "op2"], ringCount: 3, noAnswer: { kind: "hangup" } },
    { id: "solo", number: "652", strategy: "sequential", members: ["op3"], ringCount: 3, noAnswer: { kind: "hangup" } },
  ],
});

let agent: RunningAgent;
let broker: Broker;
let dataDir: string;
let siteDir: string;
let siteFile: string;
let port: number;
let p1: Phone;
let p2: Phone;
let p3: Phone;
let events: MqttClient;
const received: any[] = [];
/** Retained presence snapshots as they arrive (devices and operators). */
const presence: any[] = [];
const scene = new CallScene(() => agent);

async function start(): Promise<void> {
  agent = await startRoutingAgent(siteFile, { ringUnitMs: UNIT, dataDir, port, env: { RINGEDGE_SITE_ID: SITE_ID, RINGEDGE_MQTT_URL: broker.url } });
}

before(async () => {
  trunkPort = await freePort();
  port = await freePort();
  dataDir = tempDir("ringedge-opstate-");
  siteDir = tempDir("ringedge-opstate-site-");
  siteFile = writeSiteFile(siteDir, site());
  broker = await startBroker();
  events = connect(broker.url, { protocolVersion: 5, clientId: `opstate-${process.pid}`, reconnectPeriod: 50 });
  events.on("message", (topic, buf) => (topic.endsWith("/presence") ? presence : received).push(JSON.parse(buf.toString())));
  events.on("error", () => undefined);
  await new Promise<void>((resolve, reject) => events.once("connect", () => events.subscribe([siteTopic(SITE_ID, "events"), siteTopic(SITE_ID, "presence")], { qos: 1 }, (err) => (err ? reject(err) : resolve()))));
  await start();
  const phones = await scene.register([op1, op2, op3], answerAfter(30));
  [p1, p2, p3] = [phones[0]!, phones[1]!, phones[2]!];
});

after(async () => {
  await scene.close();
  await new Promise<void>((resolve) => events.end(true, {}, () => resolve()));
  await broker.kill();
});

/** A trunk call to a number, answered by whoever rings: the members offered, from the call log. */
async function offered(number: string): Promise<string[]> {
  const caller = await sippCall(agent.port, "route-caller.xml", number, { pauseMs: 30 });
  scene.peers.push(caller);
  assertSippOk(`call to ${number}`, await caller.run);
  return [...(await loggedCall(dataDir, callIdOf(caller))).offered].sort();
}

/** Dials a code on a phone: status, reason phrase and Warning text of the final response. */
async function dial(phone: Phone, code: string): Promise<{ status: number; reason: string; warning: string | undefined }> {
  const status = await phone.dial(code);
  const fin = phone.lastFinal!;
  return { status, reason: fin.firstLine.replace(/^SIP\/2\.0 \d{3} /, ""), warning: fin.header("warning") };
}

const stateEvents = (userId: string): any[] => received.filter((e) => e.type === "operator.state" && e.data.userId === userId);

async function userList(): Promise<Map<string, any>> {
  const r = await agent.cli(["user", "list", "--json"]);
  assert.equal(r.code, 0, r.stderr);
  return new Map((JSON.parse(r.stdout) as any[]).map((u) => [u.id, u]));
}

/** `ringedge why --last --user <id>`: the words for the operator's most recent call. */
async function whyLast(userId: string): Promise<string> {
  const r = await agent.cli(["why", "--last", "--user", userId]);
  assert.equal(r.code, 0, `ringedge why --last --user ${userId}: ${r.stderr}`);
  return r.stdout;
}

describe("operators' own state from their phones", () => {
  test("the away code: skipped where the group checks availability, still offered where it does not; the console hears it", async () => {
    assert.deepEqual(await dial(p1, "*41"), { status: 480, reason: "Away", warning: '399 ringedge "Away"' });
    assert.equal(p1.invites.length, 0, "the code rang nothing (not even the dialling phone)");
    assert.deepEqual(await offered("650"), ["op2"]);
    assert.match(await whyLast("op1"), /op1: skipped: away/);
    assert.deepEqual(await offered("651"), ["op1", "op2"]);
    const ev = await until(() => stateEvents("op1")[0], 10_000, 20);
    assert.deepEqual(ev.data, { userId: "op1", availability: "away", loggedOutOf: [], source: "phone", deviceId: "dev-op1" });
    // The retained presence snapshot carries every operator's state now.
    const snap = await until(() => [...presence].reverse().find((p: any) => p.operators?.some((o: any) => o.userId === "op1" && o.availability === "away")), 10_000, 20);
    assert.deepEqual(snap.operators.map((o: any) => o.userId).sort(), ["op1", "op2", "op3"]);
    const u = (await userList()).get("op1");
    assert.equal(u.availability, "away");
    assert.equal(u.stateSource, "phone");
    assert.equal(u.stateDevice, "dev-op1");
    const text = await agent.cli(["user", "list"]);
    assert.match(text.stdout, /^5001 +op1 +User op1 +away +op1\/physical online; set by phone dev-op1 at /m);
  });

  test("the DND code: skipped in every group and for direct calls; DND off makes the operator available", async () => {
    assert.equal((await dial(p1, "*78")).reason, "Do Not Disturb on");
    assert.deepEqual(await offered("651"), ["op2"], "DND skips even where the group does not check availability");
    assert.match(await whyLast("op1"), /op1: skipped: do not disturb/);
    const direct = await sippCall(agent.port, "route-caller-fail.xml", "5001");
    scene.peers.push(direct);
    assertSippOk("direct call to a DND operator", await direct.run);
    assert.deepEqual(statusesOf(direct).filter((s) => s >= 200), [480]);
    assert.equal(p1.invitesOf(callIdOf(direct)).length, 0);
    assert.equal((await dial(p1, "*79")).reason, "Do Not Disturb off");
    assert.deepEqual(await offered("650"), ["op1", "op2"], "available again: offered where availability is checked");
    assert.deepEqual((await until(() => (stateEvents("op1").length >= 3 ? stateEvents("op1") : undefined), 10_000, 20)).map((e) => e.data.availability), ["away", "dnd", "available"]);
  });

  test("log out of one group: skipped there only; log back in: offered again", async () => {
    assert.deepEqual(await dial(p2, "*46651"), { status: 480, reason: "Logged out: group 651", warning: '399 ringedge "Logged out: group 651"' });
    assert.deepEqual(await offered("651"), ["op1"]);
    assert.match(await whyLast("op2"), /op2: skipped: logged out of this group/);
    assert.deepEqual(await offered("650"), ["op1", "op2"], "still logged in to the other group");
    assert.deepEqual((await userList()).get("op2").loggedOutOf, ["open"]);
    const show = await agent.cli(["group", "show", "651"]);
    assert.match(show.stdout, /5002 .*logged out of this group/);
    assert.equal((await dial(p2, "*45")).reason, "Logged in: all groups");
    assert.deepEqual(await offered("651"), ["op1", "op2"]);
    const ev = await until(() => (stateEvents("op2").length >= 2 ? stateEvents("op2") : undefined), 10_000, 20);
    assert.deepEqual(ev.map((e) => e.data.loggedOutOf), [["open"], []]);
  });

  test("bad input: a suffix the code does not take, an unknown group, another's group; nothing changes", async () => {
    const before = JSON.stringify([...(await userList()).values()].map((u) => [u.availability, u.loggedOutOf]));
    const n = received.length;
    assert.deepEqual(await dial(p1, "*419"), { status: 404, reason: "*41 takes nothing after it", warning: '399 ringedge "*41 takes nothing after it"' });
    assert.equal((await dial(p1, "*45abc")).status, 404, "letters after the code: not a group number");
    assert.deepEqual(await dial(p1, "*46999"), { status: 404, reason: "No group 999", warning: '399 ringedge "No group 999"' });
    assert.deepEqual(await dial(p1, "*46652"), { status: 403, reason: "Not a member of group 652", warning: '399 ringedge "Not a member of group 652"' });
    assert.equal(JSON.stringify([...(await userList()).values()].map((u) => [u.availability, u.loggedOutOf])), before);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(received.length, n, "no event for a refused code");
  });

  test("callers that are not the operator's phone: the trunk is refused, an unknown source challenged, a phone's digest from another socket accepted", async () => {
    const invite = (c: SipClient, number: string, cseq: number, auth?: string): string =>
      [
        `INVITE sip:${number}@127.0.0.1:${agent.port} SIP/2.0`,
        `Via: SIP/2.0/UDP ${c.localAddress}:${c.localPort};branch=${randomBranch()};rport`,
        "Max-Forwards: 70",
        `From: <sip:x@${c.localAddress}>;tag=code-caller`,
        `To: <sip:${number}@127.0.0.1>`,
        `Call-ID: code-${c.localPort}@test`,
        `CSeq: ${cseq} INVITE`,
        `Contact: <sip:x@${c.localAddress}:${c.localPort}>`,
        ...(auth !== undefined ? [`Proxy-Authorization: ${auth}`] : []),
        "Content-Length: 0",
        "",
        "",
      ].join("\r\n");
    const trunk = await SipClient.open(agent.port, "udp", TRUNK_CALLER_IP);
    try {
      const r = await trunk.request(invite(trunk, "*78", 1));
      assert.equal(r.status, 403);
    } finally {
      trunk.close();
    }
    const other = await SipClient.open(agent.port, "udp");
    try {
      const challenge = await other.request(invite(other, "*78", 1));
      assert.equal(challenge.status, 407);
      assert.equal((await userList()).get("op3").availability, "available", "a challenge changes nothing");
      const auth = computeAuthorization(challenge.header("proxy-authenticate")!, { method: "INVITE", uri: `sip:*78@127.0.0.1:${agent.port}`, username: "op3", password: DEVICE_PASSWORD });
      assert.equal(typeof auth, "string");
      const r = await other.request(invite(other, "*78", 2, auth as string));
      assert.equal(r.status, 480);
      assert.equal(r.reason, "Do Not Disturb on");
    } finally {
      other.close();
    }
    const u = (await userList()).get("op3");
    assert.equal(u.availability, "dnd");
    assert.equal(u.stateDevice, "dev-op3");
    assert.equal((await dial(p3, "*42")).reason, "Available");
  });

  test("a BLF key on a state code shows the phone's own operator's state (dialog package: confirmed while in effect)", async () => {
    const w = new Subscriber(p2);
    /** Waits for a NOTIFY of `sub` after the first `from` ones whose lamp is lit / off. */
    const lamp = async (sub: HeldSubscription, lit: boolean, from = 0): Promise<void> => {
      await until(() => w.notifiesOf(sub).slice(from).some((n) => {
        const dialogs = parseDialogInfo(n.msg.body).dialogs;
        return lit ? dialogs.length === 1 && dialogs[0]!.state === "confirmed" && dialogs[0]!.direction === "initiator" : dialogs.length === 0;
      }), 5000, 10);
    };
    const seen = (sub: HeldSubscription): number => w.notifiesOf(sub).length;
    const dnd = await w.subscribe("*78", { expires: 600 });
    assert.equal(dnd.res.status, 200);
    await lamp(dnd.sub, false);
    assert.match(parseDialogInfo(w.notifiesOf(dnd.sub)[0]!.msg.body).entity, /^sip:\*78@127\.0\.0\.1:\d+$/);
    const out = await w.subscribe("*46651", { expires: 600 });
    assert.equal(out.res.status, 200);
    await lamp(out.sub, false);
    assert.equal((await w.subscribe("*419")).res.status, 404, "a malformed code names nothing");
    let n = seen(dnd.sub);
    assert.equal((await dial(p2, "*78")).status, 480);
    await lamp(dnd.sub, true, n);
    n = seen(out.sub);
    assert.equal((await dial(p2, "*46651")).status, 480);
    await lamp(out.sub, true, n);
    // Another operator's change is not this key's: no NOTIFY for it.
    const quiet = seen(dnd.sub);
    assert.equal((await dial(p1, "*41")).status, 480);
    assert.equal((await dial(p1, "*79")).status, 480);
    n = seen(dnd.sub);
    assert.equal(n, quiet, "op1's state changes do not notify op2's key");
    assert.equal((await dial(p2, "*79")).status, 480);
    await lamp(dnd.sub, false, n);
    n = seen(out.sub);
    assert.equal((await dial(p2, "*45")).status, 480);
    await lamp(out.sub, false, n);
    assert.equal((await w.refresh(dnd.sub, 0)).status, 200);
    assert.equal((await w.refresh(out.sub, 0)).status, 200);
  });

  test("a site change repeating the values leaves the phone's state; one changing a value wins", async () => {
    assert.equal((await dial(p1, "*41")).status, 480);
    const repeat = site();
    repeat.groups[2]!.ringCount = 4;
    const v2 = writeSiteFile(siteDir, repeat, 2);
    const a2 = await agent.cli(["site", "apply", v2]);
    assert.equal(a2.code, 0, a2.stderr);
    assert.equal((await userList()).get("op1").availability, "away", "the phone's away stands");
    const change = site();
    change.users.find((u) => u.id === "op1")!.availability = "dnd";
    const v3 = writeSiteFile(siteDir, change, 3);
    const a3 = await agent.cli(["site", "apply", v3]);
    assert.equal(a3.code, 0, a3.stderr);
    const u = (await userList()).get("op1");
    assert.deepEqual([u.availability, u.stateSource], ["dnd", "file"]);
    const ev = await until(() => stateEvents("op1").find((e) => e.data.source === "file"), 10_000, 20);
    assert.equal(ev.data.availability, "dnd");
    assert.equal((await dial(p1, "*79")).reason, "Do Not Disturb off");
    // The console's push (MQTT desired) works the same way: op3 logged out of 652 by the console.
    const pushed = site();
    pushed.users.find((u) => u.id === "op1")!.availability = "dnd";
    (pushed.users.find((u) => u.id === "op3") as SimUser & { loggedOutOf?: string[] }).loggedOutOf = ["solo"];
    const v4 = writeSiteFile(siteDir, pushed, 4);
    const push = await agent.cli(["console", "push", SITE_ID, v4, "--url", broker.url]);
    assert.equal(push.code, 0, push.stderr);
    assert.equal(JSON.parse(push.stdout).status, "applied");
    const op3 = (await userList()).get("op3");
    assert.deepEqual([op3.loggedOutOf, op3.stateSource], [["solo"], "console"]);
    assert.equal((await userList()).get("op1").availability, "available", "v4 repeats v3's dnd for op1: the phone's DND off stands");
    const consoleEv = await until(() => stateEvents("op3").find((e) => e.data.source === "console"), 10_000, 20);
    assert.deepEqual(consoleEv.data.loggedOutOf, ["solo"]);
    assert.equal((await dial(p3, "*45")).reason, "Logged in: all groups");
  });

  test("the state survives an agent restart", async () => {
    assert.equal((await dial(p1, "*41")).reason, "Away");
    assert.equal((await dial(p2, "*46651")).reason, "Logged out: group 651");
    const expected = JSON.stringify([...(await userList()).values()].map((u) => [u.id, u.availability, u.loggedOutOf]));
    assert.equal(await agent.stop(), 0);
    // Same data directory, same site file (version 1, older than the applied 3: nothing applied).
    await start();
    // The phones re-register with the new agent process (their bindings were restored anyway).
    for (const p of [p1, p2, p3]) await p.sendRegister(3600);
    assert.equal(JSON.stringify([...(await userList()).values()].map((u) => [u.id, u.availability, u.loggedOutOf])), expected);
    assert.deepEqual(await offered("650"), ["op2"], "op1 is still away");
    assert.deepEqual(await offered("651"), ["op1"], "op2 is still logged out of 651");
  });
});
