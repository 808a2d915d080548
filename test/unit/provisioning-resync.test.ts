// Re-sync orchestration without sockets: per-vendor events (Cisco resync, reboot variants),
// per-phone results, digest answer to a challenged NOTIFY, bounded concurrency, progress.
import { test } from "node:test";
import assert from "node:assert/strict";
import { DigestAuthenticator } from "../../agent/sip/digest.ts";
import { loadProfiles } from "../../provisioning/profiles.ts";
import { resyncEventFor, resyncPhones, type ResyncBinding, type ResyncDeps } from "../../provisioning/resync.ts";

const { profiles } = loadProfiles("device-profiles");
const flow = { transport: "udp" as const, remoteAddress: "10.0.0.20", remotePort: 5060, localAddress: "10.0.0.5", localPort: 5060 };

test("events per vendor: check-sync, Cisco resync/reboot, reboot=true where the profile has one", () => {
  assert.deepEqual(resyncEventFor(profiles, "T46U", false), { event: "check-sync", rebootUnsupported: false });
  assert.deepEqual(resyncEventFor(profiles, "T46U", true), { event: "check-sync;reboot=true", rebootUnsupported: false });
  assert.deepEqual(resyncEventFor(profiles, "CP-7841-3PCC", false), { event: "resync", rebootUnsupported: false });
  assert.deepEqual(resyncEventFor(profiles, "CP-7841-3PCC", true), { event: "reboot", rebootUnsupported: false });
  assert.deepEqual(resyncEventFor(profiles, "D785", false), { event: "check-sync;reboot=false", rebootUnsupported: false });
  assert.equal(resyncEventFor(profiles, "VVX411", true).rebootUnsupported, true);
});

test("canonical models (as stored): every vendor gets its own event; Cisco resync, reboot only where the vendor has one", async () => {
  const expected: Array<[string, string, string, boolean]> = [
    ["yealink/T46U", "check-sync", "check-sync;reboot=true", false],
    ["poly/VVX411", "check-sync", "check-sync", true],
    ["snom/D785", "check-sync;reboot=false", "check-sync;reboot=true", false],
    ["grandstream/GXP2170", "check-sync", "check-sync", true],
    ["cisco/CP-7841-3PCC", "resync", "reboot", false],
    ["fanvil/X4U", "check-sync", "check-sync", true],
  ];
  assert.deepEqual(expected.map(([m]) => m.split("/")[0]).sort(), [...profiles.keys()].sort(), "one row per shipped vendor");
  for (const [model, event, rebootEvent, unsupported] of expected) {
    assert.deepEqual(resyncEventFor(profiles, model, false), { event, rebootUnsupported: false }, model);
    assert.deepEqual(resyncEventFor(profiles, model, true), { event: rebootEvent, rebootUnsupported: unsupported }, `${model} reboot`);
    assert.deepEqual(resyncEventFor(profiles, model.toUpperCase(), false).event, event, `${model} in another case`);
  }
  // A model no profile knows: the plain, most widely understood event.
  assert.deepEqual(resyncEventFor(profiles, "acme/Z1", false), { event: "check-sync", rebootUnsupported: false });
  // The NOTIFY itself carries the Cisco event for a phone stored canonically.
  const events: string[] = [];
  const results = await resyncPhones([{ deviceId: "dev-1", username: "201", password: "pw201", model: "cisco/CP-8841-3PCC" }], { reboot: false }, {
    profiles,
    bindings: () => [{ contact: "sip:201@10.0.0.20:5060", flow }],
    send: async (_b, headers) => {
      events.push(headers.find(([n]) => n === "Event")![1]);
      return { status: 200 };
    },
  });
  assert.deepEqual(events, ["resync"]);
  assert.equal(results[0]?.ok, true);
});

test("per-phone results: ok, not registered, no answer, refused; a challenged NOTIFY is re-sent with the phone's credentials", async () => {
  const sent: Array<{ contact: string; headers: Array<[string, string]> }> = [];
  const auth = new DigestAuthenticator({ realm: "phone", algorithms: ["MD5"] });
  const bindings: Record<string, ResyncBinding[]> = {
    "101": [{ contact: "sip:101@10.0.0.20:5060", flow }],
    "102": [{ contact: "sip:102@10.0.0.21:5060", flow }],
    "103": [{ contact: "sip:103@10.0.0.22:5060", flow }],
    "104": [{ contact: "sip:104@10.0.0.23:5060", flow }],
  };
  let inFlight = 0;
  let maxInFlight = 0;
  const deps: ResyncDeps = {
    profiles,
    concurrency: 2,
    bindings: (u) => bindings[u] ?? [],
    send: async (b, headers) => {
      sent.push({ contact: b.contact, headers });
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      await new Promise((r) => setTimeout(r, 5));
      inFlight--;
      if (b.contact.startsWith("sip:102")) return { error: "timeout" };
      if (b.contact.startsWith("sip:103")) return { status: 489 };
      if (b.contact.startsWith("sip:104")) {
        const a = headers.find(([n]) => n === "Authorization");
        if (!a) return { status: 401, challenge: auth.challenge()[0]!.value };
        const v = auth.verify({ method: "NOTIFY", authorization: a[1], lookup: (u) => (u === "104" ? { username: u, password: "pw104" } : undefined) });
        return { status: v.kind === "ok" ? 200 : 403 };
      }
      return { status: 200 };
    },
  };
  const progress: number[] = [];
  const phones = ["101", "102", "103", "104", "105"].map((u) => ({ deviceId: `dev-${u}`, username: u, password: `pw${u}`, model: u === "101" ? "CP-7841-3PCC" : "T46U" }));
  const results = await resyncPhones(phones, { reboot: false }, deps, (done) => progress.push(done));
  assert.deepEqual(results.map((r) => [r.username, r.ok, r.error ?? r.status]), [
    ["101", true, 200],
    ["102", false, "no answer"],
    ["103", false, "phone answered 489"],
    ["104", true, 200],
    ["105", false, "not registered"],
  ]);
  assert.equal(results[0]!.event, "resync", "Cisco gets Event: resync");
  assert.deepEqual(sent[0]!.headers[0], ["Event", "resync"]);
  assert.deepEqual(progress, [1, 2, 3, 4, 5]);
  assert.ok(maxInFlight <= 2, "bounded concurrency");
});
