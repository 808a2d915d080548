// A whole site, as it is deployed, against the real agent process and a real Mosquitto:
// the console pushes a site with one desk phone of each of the six vendors, two groups and the
// BLF keys they imply; every phone boots with its vendor's real request sequence and
// User-Agent, takes its bootstrap, authenticates with the provisioning credentials the
// bootstrap gave it, fetches its full config, registers with the SIP credentials read from that
// config, and subscribes to the dialog state of the colleague on its first BLF key. A trunk
// call rings a group, the watchers' NOTIFYs show the colleague's dialog early then terminated,
// the answer's events and statistics reach the console, and a second push removes one phone:
// its config is no longer served and its registration ends.
//
// Nothing here knows the site's secrets from the inside: the phones learn everything from the
// files they were served, as real phones do.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { computeAuthorization } from "../../agent/sip/digest.ts";
import { ConsoleClient } from "../../agent/sync/console-cli.ts";
import { findAll, ownText, type XmlElement } from "../../provisioning/xmlcheck.ts";
import { VENDORS, parsesAs, xmlRoot, yealinkKv, type VendorCase } from "../unit/provisioning-fixtures.ts";
import { Phone, TRUNK_CALLER_IP, answerAfter, assertSippOk, callIdOf, sippCall, type SippPeer } from "./callsim.ts";
import { Subscriber, parseDialogInfo, type HeldSubscription, type SeenNotify } from "./subscriber.ts";
import { phoneGet as get } from "./phone-http.ts";
import { startAgent, tempDir, until, type RunningAgent } from "./harness.ts";
import { mosquittoAvailable, startBroker, type Broker } from "./mosquitto.ts";

const SITE_ID = "site-lifecycle";


/**
 * What a phone reads from its own files beyond the SIP account: the provisioning password its
 * bootstrap carries, and the extensions its BLF keys watch — each in the vendor's own format.
 */
interface PhoneReader {
  provisioningPassword(bootstrap: string): string | undefined;
  blfExtensions(config: string): string[];
}

const xmlText = (body: string, name: string): string | undefined => {
  const el = findAll(xmlRoot(body), name)[0];
  return el ? ownText(el) : undefined;
};

const READERS: Record<string, PhoneReader> = {
  yealink: {
    provisioningPassword: (b) => yealinkKv(b).get("static.auto_provision.server.password"),
    blfExtensions: (c) => {
      const kv = yealinkKv(c);
      const out: string[] = [];
      for (const [k, v] of kv) {
        const m = /^linekey\.(\d+)\.type$/.exec(k);
        if (m && v === "16") out.push(kv.get(`linekey.${m[1]}.value`) ?? "");
      }
      return out;
    },
  },
  poly: {
    provisioningPassword: (b) => findAll(xmlRoot(b), "device").find((e) => e.attrs.has("device.prov.password"))?.attrs.get("device.prov.password"),
    blfExtensions: (c) => {
      const att = findAll(xmlRoot(c), "attendant")[0];
      if (!att) return [];
      const out: string[] = [];
      for (const [k, v] of att.attrs) {
        const m = /^attendant\.resourceList\.(\d+)\.address$/.exec(k);
        if (m && att.attrs.get(`attendant.resourceList.${m[1]}.type`) === "normal") out.push(/^sip:([^@]+)@/.exec(v)?.[1] ?? "");
      }
      return out;
    },
  },
  snom: {
    provisioningPassword: (b) => xmlText(b, "http_client_pass"),
    blfExtensions: (c) => findAll(xmlRoot(c), "fkey").flatMap((e) => /^blf sip:([^@]+)@/.exec(ownText(e))?.[1] ?? []),
  },
  grandstream: {
    provisioningPassword: (b) => xmlText(b, "P1361"),
    // GXP2170 multi-purpose keys: P23000 + 5·(n-1) is the mode (1 = BLF), +3 the value.
    blfExtensions: (c) => {
      const out: string[] = [];
      for (let n = 0; n < 48; n++) {
        const base = 23000 + 5 * n;
        if (xmlText(c, `P${base}`) === "1") out.push(xmlText(c, `P${base + 3}`) ?? "");
      }
      return out;
    },
  },
  cisco: {
    provisioningPassword: (b) => /--pwd ([^ \]]+)/.exec(xmlText(b, "Profile_Rule") ?? "")?.[1],
    blfExtensions: (c) => {
      const out: string[] = [];
      const walk = (e: XmlElement): void => {
        if (/^Extended_Function_\d+_$/.test(e.name)) {
          const m = /fnc=blf[^;]*;sub=([^@]+)@/.exec(ownText(e));
          if (m) out.push(m[1]!);
        }
        for (const ch of e.children) if (typeof ch !== "string") walk(ch);
      };
      walk(xmlRoot(c));
      return out;
    },
  },
  fanvil: {
    provisioningPassword: (b) => xmlText(b, "Download_Password"),
    blfExtensions: (c) => findAll(xmlRoot(c), "Value").flatMap((e) => /^([^@]+)@1\/ba[*#0-9]+\1$/.exec(ownText(e))?.[1] ?? [] /* BLF that picks up with the site's code + the extension */),
  },
};

/** One user and one desk phone per vendor; two groups of three; a trunk entering from TRUNK_CALLER_IP. */
function siteConfig(version: number, vendors: readonly VendorCase[]): Record<string, unknown> {
  const users = vendors.map((v, i) => ({ id: `u-${v.vendor}`, extension: String(2001 + i), name: `Operator ${v.vendor}`, availability: "available" }));
  const devices = vendors.map((v) => ({ id: `desk-${v.vendor}`, owner: `u-${v.vendor}`, kind: "physical", displayName: `Desk ${v.vendor}`, mac: v.mac, model: `${v.vendor}/${v.model}` }));
  const ids = users.map((u) => u.id);
  const groups = [
    { id: "front", number: "600", name: "Front desk", strategy: "simultaneous", members: ids.filter((_, i) => i < 3), ringCount: 3, checkAvailability: false, noAnswer: { kind: "hangup" } },
    { id: "back", number: "601", name: "Back office", strategy: "simultaneous", members: ids.filter((_, i) => i >= 3), ringCount: 3, checkAvailability: false, noAnswer: { kind: "hangup" } },
  ].map((g) => ({ ...g, members: g.members.filter((m) => ids.includes(m)) }));
  return {
    schema: "ringedge.site/1",
    version,
    settings: { pickupCode: "*8", trunk: { host: "127.0.0.1", port: 5999, transport: "udp", allowedSources: [TRUNK_CALLER_IP] } },
    users,
    devices,
    groups,
  };
}

interface Booted {
  vendor: VendorCase;
  sipUser: string;
  sipPassword: string;
  blf: string[];
  phone: Phone;
  /** The subscription to the colleague on its first BLF key. */
  watch?: { subscriber: Subscriber; sub: HeldSubscription; extension: string };
}

/** The monitored extension's dialogs in one NOTIFY (RFC 4235 body, checked well-formed). */
const dialogsOf = (n: SeenNotify): ReturnType<typeof parseDialogInfo>["dialogs"] => parseDialogInfo(n.msg.body).dialogs;

describe("site lifecycle: console push → provisioning → registration → BLF → call → events → removal", () => {
  let broker: Broker;
  let agent: RunningAgent;
  let consoleClient: ConsoleClient;
  let httpPort: number;
  const dir = tempDir("ringedge-lifecycle-");
  const seen: Array<{ leaf: string; payload: any }> = [];
  const booted = new Map<string, Booted>();
  const peers: SippPeer[] = [];

  before(async () => {
    assert.ok(mosquittoAvailable(), "mosquitto not found: run `make sysdeps`");
    broker = await startBroker();
    agent = await startAgent({
      env: {
        RINGEDGE_SITE_ID: SITE_ID,
        RINGEDGE_MQTT_URL: broker.url,
        RINGEDGE_STATS_INTERVAL_S: "1",
        RINGEDGE_SIP_TRANSPORTS: "udp",
        RINGEDGE_RING_UNIT_MS: "2000",
        RINGEDGE_KEEPALIVE_INTERVAL_S: "3600",
      },
    });
    const line = await agent.waitForLog(/provisioning listening .*scheme=http /);
    httpPort = Number(/address=127\.0\.0\.1:(\d+)/.exec(line)![1]);
    consoleClient = await ConsoleClient.connect({ url: broker.url, consoleId: `lifecycle-${process.pid}` });
    await consoleClient.watch(SITE_ID, (leaf, payload) => seen.push({ leaf, payload }));
  });

  after(async () => {
    for (const b of booted.values()) b.phone.close();
    for (const p of peers) p.run.proc.kill("SIGKILL");
    await consoleClient?.close();
    await agent?.stop();
    await broker?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test("the console pushes the site and it is applied", async () => {
    const ack = await consoleClient.pushDesired(SITE_ID, { schema: "ringedge.desired/1", siteId: SITE_ID, version: 1, config: siteConfig(1, VENDORS) }, 1);
    assert.equal(ack.status, "applied", JSON.stringify(ack.errors));
    const phones = JSON.parse((await agent.cli(["phone", "list", "--json"])).stdout) as Array<{ mac: string; model: string }>;
    assert.deepEqual(phones.map((p) => p.model).sort(), VENDORS.map((v) => `${v.vendor}/${v.model}`).sort(), "every phone shown with its canonical model id");
  });

  for (const v of VENDORS) {
    test(`${v.vendor}: boots with its real request sequence, provisions itself and registers with what it was served`, async () => {
      const ua = { "user-agent": v.userAgent };
      for (const f of v.before) {
        const r = await get(httpPort, `/${f.file}`, ua);
        assert.equal(r.status, f.status, `${v.vendor} ${f.file}`);
        if (r.status === 200) parsesAs(v.vendor, r.body);
      }
      const boot = await get(httpPort, `/${v.config}`, ua);
      assert.equal(boot.status, 200, `${v.vendor} bootstrap: ${boot.body.slice(0, 200)}`);
      const bootValues = v.read(boot.body);
      assert.equal(bootValues.sipPassword, undefined, "no SIP password in the bootstrap");
      const provUser = bootValues.provisioningUser;
      const provPassword = READERS[v.vendor]!.provisioningPassword(boot.body);
      assert.ok(provUser && provPassword, `${v.vendor}: the bootstrap carries provisioning credentials`);

      const challenge = await get(httpPort, `/${v.config}`, ua);
      assert.equal(challenge.status, 401, "after the bootstrap, the full config is behind Digest");
      const auth = computeAuthorization(challenge.challenges[0]!, { method: "GET", uri: `/${v.config}`, username: provUser, password: provPassword });
      assert.equal(typeof auth, "string", String((auth as { error?: string }).error));
      const full = await get(httpPort, `/${v.config}`, { ...ua, authorization: auth as string });
      assert.equal(full.status, 200, `${v.vendor} full config`);
      const values = v.read(full.body);
      assert.ok(values.sipUser && values.sipPassword, `${v.vendor}: SIP account in the full config`);
      assert.equal(values.sipServer, "127.0.0.1", "the SIP server is the agent's address, never a wildcard");
      const blf = READERS[v.vendor]!.blfExtensions(full.body);
      assert.ok(blf.length >= 2, `${v.vendor}: BLF keys for the two colleagues of its group (got ${JSON.stringify(blf)})`);
      for (const f of v.after) {
        const r = await get(httpPort, `/${f.file}`, ua);
        assert.equal(r.status, f.status, `${v.vendor} ${f.file}`);
      }
      const phone = await Phone.register(agent.port, values.sipUser, values.sipPassword, answerAfter(60_000));
      booted.set(v.vendor, { vendor: v, sipUser: values.sipUser, sipPassword: values.sipPassword, blf, phone });
    });
  }

  test("every phone is online for the agent and for the console", async () => {
    await until(async () => {
      const list = JSON.parse((await agent.cli(["device", "list", "--json"])).stdout) as Array<{ id: string; online?: boolean }>;
      return VENDORS.every((v) => list.find((d) => d.id === `desk-${v.vendor}`)?.online === true);
    }, 10_000);
    await until(() => {
      const last = seen.filter((m) => m.leaf === "presence").at(-1)?.payload as { devices?: Array<{ deviceId: string; online: boolean }> } | undefined;
      return VENDORS.every((v) => last?.devices?.find((d) => d.deviceId === `desk-${v.vendor}`)?.online === true);
    }, 10_000);
  });

  test("each phone subscribes to the colleague on its first BLF key and gets the full state at once", async () => {
    for (const b of booted.values()) {
      const subscriber = new Subscriber(b.phone);
      const extension = b.blf[0]!;
      const { res, sub } = await subscriber.subscribe(extension, { expires: 600 });
      assert.equal(res.status, 200, `${b.vendor.vendor} SUBSCRIBE to ${extension}: ${res.firstLine}`);
      const first = await subscriber.waitNotify(sub, (n) => n.state.startsWith("active"));
      assert.equal(first.msg.header("content-type"), "application/dialog-info+xml");
      assert.ok(dialogsOf(first).every((d) => d.state === "terminated"), `${b.vendor.vendor}: the colleague is idle, the lamp off`);
      b.watch = { subscriber, sub, extension };
    }
  });

  test("a trunk call rings the front group; watchers see the colleague's dialog early then terminated; the answer's events and statistics reach the console", async () => {
    const front = ["u-yealink", "u-poly", "u-snom"];
    const byVendor = (id: string): Booted => booted.get(id.slice(2))!;
    const answerer = byVendor("u-snom");
    answerer.phone.answering = answerAfter(1000);
    const frontExts = front.map((id) => byVendor(id).sipUser);
    const watchers = [...booted.values()].filter((b) => frontExts.includes(b.watch!.extension));
    assert.ok(watchers.length >= 3, "every front phone watches a front colleague");

    const caller = await sippCall(agent.port, "route-caller.xml", "600", { pauseMs: 1500 });
    peers.push(caller);
    assertSippOk("trunk caller", await caller.run);
    const callId = callIdOf(caller);
    for (const w of watchers) {
      const { subscriber, sub, extension } = w.watch!;
      const mine = (n: SeenNotify): boolean => dialogsOf(n).some((d) => d.callId !== undefined);
      const early = await subscriber.waitNotify(sub, (n) => mine(n) && dialogsOf(n).some((d) => d.state === "early" && d.direction === "recipient"));
      const ringing = dialogsOf(early).find((d) => d.state === "early")!;
      assert.match(ringing.remoteIdentity ?? "", /\+4930111222/, `${w.vendor.vendor}: the lamp shows who calls ${extension}`);
      const done = await subscriber.waitNotify(sub, (n) => n.at >= early.at && mine(n) && dialogsOf(n).every((d) => d.state === "terminated"));
      assert.ok(done.at >= early.at, "terminated after early");
      if (extension === answerer.sipUser) {
        assert.ok(subscriber.notifiesOf(sub).some((n) => dialogsOf(n).some((d) => d.state === "confirmed")), "the answerer's watcher saw it confirmed");
      }
    }

    const events = (): Array<{ type: string; data: Record<string, unknown> }> => seen.filter((m) => m.leaf === "events").map((m) => m.payload);
    const answered = await until(() => events().find((e) => e.type === "call.answered" && e.data.callId === callId), 10_000);
    assert.equal(answered.data.groupId, "front");
    assert.equal(answered.data.memberId, "u-snom");
    assert.equal(answered.data.deviceId, "desk-snom");
    const offered = events().filter((e) => e.type === "call.offered" && e.data.callId === callId).map((e) => e.data.memberId).sort();
    assert.deepEqual(offered, [...front].sort(), "offered to each front member once");
    const stats = await until(() => seen.filter((m) => m.leaf === "statistics").map((m) => m.payload).find((p) => p.groups?.some((g: { groupId: string; answered: number }) => g.groupId === "front" && g.answered >= 1)), 10_000);
    assert.equal(stats.operators.find((o: { userId: string }) => o.userId === "u-snom")?.answered, 1);
  });

  test("a second push removes one phone: its config is no longer served, its registration and its subscription end", async () => {
    const gone = booted.get("fanvil")!;
    const next = siteConfig(2, VENDORS);
    next.devices = (next.devices as Array<{ id: string }>).filter((d) => d.id !== "desk-fanvil");
    const ack = await consoleClient.pushDesired(SITE_ID, { schema: "ringedge.desired/1", siteId: SITE_ID, version: 2, config: next }, 2);
    assert.equal(ack.status, "applied", JSON.stringify(ack.errors));

    const ua = { "user-agent": gone.vendor.userAgent };
    assert.equal((await get(httpPort, `/${gone.vendor.config}`, ua)).status, 404, "the removed phone's config is not served");
    const list = JSON.parse((await agent.cli(["device", "list", "--json"])).stdout) as Array<{ id: string }>;
    assert.ok(!list.some((d) => d.id === "desk-fanvil"), "the device is gone");
    const { subscriber, sub } = gone.watch!;
    await subscriber.waitNotify(sub, (n) => /^terminated/.test(n.state));
    await assert.rejects(gone.phone.sendRegister(3600), /403/, "its credentials no longer register");
    await until(() => {
      const last = seen.filter((m) => m.leaf === "presence").at(-1)?.payload as { devices?: Array<{ deviceId: string }> } | undefined;
      return last !== undefined && !last.devices?.some((d) => d.deviceId === "desk-fanvil");
    }, 10_000);
    // The others keep working on the new version.
    const still = booted.get("yealink")!;
    await still.phone.sendRegister(3600);
  });
});
