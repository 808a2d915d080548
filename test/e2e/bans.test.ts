// Bans that cannot be turned against phones (issue 11), through the real agent on loopback:
// - an account attacked with wrong passwords from other addresses stays open to its phone's
//   address, also after a restart (where it authenticated from is in the store);
// - a ban of the phone's address (wrong passwords sent from it) does not cut off the phone's
//   registered flow;
// - toll fraud: an INVITE to an outside number from a phone's UDP flow is challenged (407) and
//   reaches the trunk (a SIPp UAS) only with that phone's credentials; local calls are not;
// - a digest whose uri is not the Request-URI is refused (REGISTER and INVITE).
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { computeAuthorization } from "../../agent/sip/digest.ts";
import { DEVICE_PASSWORD, CallScene, Phone, simUser, sippServer, startRoutingAgent, writeSiteFile, answerAfter, assertSippOk } from "./callsim.ts";
import { freePort, tempDir, type RunningAgent } from "./harness.ts";
import { SipClient, buildRegister, pickChallenge, randomBranch, registerSpec, registerWithAuth } from "./sipclient.ts";

/** Failures that ban a source, and lock an account (small, so the test is quick). */
const MAX_FAILURES = 3;

const alice = simUser("alice", "201");
const bob = simUser("bob", "202");

let agent: RunningAgent;
let dataDir: string;
let siteFile: string;
let trunkPort: number;
const scene = new CallScene(() => agent);
const clients: SipClient[] = [];

async function start(port?: number): Promise<RunningAgent> {
  return startRoutingAgent(siteFile, {
    ringUnitMs: 1000,
    dataDir,
    ...(port !== undefined ? { port } : {}),
    env: { RINGEDGE_GUARD_SOURCE_MAX_FAILURES: String(MAX_FAILURES), RINGEDGE_GUARD_ACCOUNT_MAX_FAILURES: String(MAX_FAILURES), RINGEDGE_GUARD_BAN_S: "300", RINGEDGE_GUARD_REQUEST_RATE_MAX: "1000" },
  });
}

before(async () => {
  trunkPort = await freePort();
  dataDir = tempDir("ringedge-bans-");
  siteFile = writeSiteFile(tempDir("ringedge-site-"), {
    settings: { pickupCode: "*8", trunk: { host: "127.0.0.1", port: trunkPort, transport: "udp", allowedSources: ["127.0.0.50"] } },
    users: [alice.user, bob.user],
    devices: [...alice.devices, ...bob.devices],
    groups: [],
  });
  agent = await start();
});

after(async () => {
  for (const c of clients) c.close();
  await scene.close();
});

async function client(address: string): Promise<SipClient> {
  const c = await SipClient.open(agent.port, "udp", address);
  clients.push(c);
  return c;
}

/** Wrong-password REGISTERs for `user` from each address, each refused with 403. */
async function attack(user: string, addresses: readonly string[]): Promise<void> {
  for (const a of addresses) {
    const c = await client(a);
    const r = await registerWithAuth(c, user, { password: "not-the-password" });
    assert.equal(r.final.status, 403, `${a}: wrong password refused`);
    c.close();
  }
}

/** The right password from a fresh address: 403 while the account is locked. */
async function lockedFor(user: string, address: string): Promise<boolean> {
  const c = await client(address);
  const r = await registerWithAuth(c, user, { password: DEVICE_PASSWORD });
  c.close();
  return r.final.status === 403;
}

describe("account locks and bans do not shut out the phone", () => {
  test("an account attacked from other addresses stays open to its phone's address, also after a restart", async () => {
    const [phone] = await scene.register(alice.devices);
    assert.ok(phone);
    await attack("alice", ["127.0.0.88", "127.0.0.89", "127.0.0.90"]);
    assert.equal(await lockedFor("alice", "127.0.0.91"), true, "the account is locked for other addresses");
    await phone.sendRegister(3600); // throws unless 200

    // Wrong passwords in alice's name from alice's own address, another port: that address is
    // banned, but the phone's registered flow on it is still served.
    const guesser = await client("127.0.0.1");
    for (let i = 0; i < MAX_FAILURES; i++) {
      const r = await registerWithAuth(guesser, "alice", { password: `guess-${i}`, cseq: 10 * i + 1 });
      assert.equal(r.final.status, 403);
    }
    await assert.rejects(guesser.request(buildRegister(registerSpec(guesser, "alice")), 700), "the guesser's port gets no answer");
    await phone.sendRegister(3600);
    // A failure naming nobody registered from 127.0.0.92 still bans that address (the rule is narrow).
    await attack("nobody", ["127.0.0.92", "127.0.0.92", "127.0.0.92"]);
    const banned = await client("127.0.0.92");
    await assert.rejects(banned.request(buildRegister(registerSpec(banned, "alice")), 700), "a banned source gets no answer");

    // Unregister, so only the stored authentication sources (no binding) can vouch after the restart.
    await phone.unregister();
    const port = agent.port;
    assert.equal(await agent.stop(), 0);
    agent = await start(port);
    await attack("alice", ["127.0.0.93", "127.0.0.94", "127.0.0.95"]);
    assert.equal(await lockedFor("alice", "127.0.0.96"), true, "locked again after the restart");
    const again = await Phone.register(agent.port, "alice", DEVICE_PASSWORD);
    scene.phones.push(again);
    await again.sendRegister(3600);
  });
});

describe("toll fraud: calls to the trunk from a phone's UDP flow need its credentials", () => {
  test("407 first; with the phone's credentials the call reaches the trunk; local calls are not challenged", async () => {
    const [a, b] = await scene.register([...alice.devices, ...bob.devices], answerAfter(50));
    assert.ok(a && b);
    // Local: extension 202 from alice's flow, no challenge.
    assert.equal(await a.dial("202"), 200);
    assert.equal(a.challenges, 0);
    assert.equal(await b.hangup(a.dialled.at(-1)!), 200);

    // Outside number without answering the challenge: 407 with Proxy-Authenticate.
    assert.equal(await a.dial("0301234567", { answer407: false }), 407);
    assert.equal(a.challenges, 1);

    // Answered with a digest computed for another number: refused.
    assert.equal(await a.dial("0301234567", { authUri: `sip:0900666@127.0.0.1:${agent.port}` }), 403);

    // Answered properly: to the trunk.
    const trunk = await sippServer("route-uas-answer.xml", { port: trunkPort });
    scene.peers.push(trunk);
    assert.equal(await a.dial("0301234567"), 200);
    const id = a.dialled.at(-1)!;
    const inv = trunk.received().find((e) => e.msg.method === "INVITE" && e.msg.header("call-id") === id);
    assert.ok(inv, "the trunk got the INVITE");
    assert.match(inv.msg.uri ?? "", new RegExp(`^sip:0301234567@127\\.0\\.0\\.1:${trunkPort}`));
    assert.equal(inv.msg.header("proxy-authorization"), undefined, "credentials are not passed to the trunk");
    assert.equal(await a.hangupPlaced(id), 200);
    assertSippOk("trunk", await trunk.run);
  });
});

describe("digest uri must be the Request-URI", () => {
  test("a REGISTER whose digest uri names another resource is refused (403) and counted", async () => {
    const c = await client("127.0.0.97");
    const spec = registerSpec(c, "bob");
    const challenge = await c.request(buildRegister(spec));
    assert.equal(challenge.status, 401);
    const offer = pickChallenge(challenge);
    assert.ok(offer);
    const auth = computeAuthorization(offer, { method: "REGISTER", uri: "sip:127.0.0.1:9", username: "bob", password: DEVICE_PASSWORD });
    assert.equal(typeof auth, "string");
    const r = await c.request(buildRegister({ ...spec, cseq: 2, branch: randomBranch(), authorization: auth as string }));
    assert.equal(r.status, 403);
    await agent.waitForLog(/uri does not match Request-URI/);
    // The same client with the right uri registers.
    const ok = await registerWithAuth(c, "bob", { password: DEVICE_PASSWORD, cseq: 10 });
    assert.equal(ok.final.status, 200);
  });
});
