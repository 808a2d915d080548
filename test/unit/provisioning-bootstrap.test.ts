// A phone's unauthenticated bootstrap (it carries the phone's provisioning credentials) is
// handed out once, to one client, within its window; a restart of the agent does not open it
// again, because all of that state is in the store.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { Store } from "../../agent/store/store.ts";
import { StoreDirectory } from "../../provisioning/store-directory.ts";
import { BootstrapGate, sameClient } from "../../provisioning/server.ts";
import { tempDir } from "../tmpdir.ts";

const WINDOW = 30 * 60_000;

test("bootstrap used once survives a restart (new gate, reopened store); rebootstrap rotates the credentials and opens a new window", async () => {
  const dir = tempDir("ringedge-bootstrap-");
  const mac = "805ec0100042";
  let store = await Store.open(dir);
  const added = store.addDevice({ username: "1042", password: "phone-pass-1042", kind: "physical", mac, model: "T46U" });
  assert.ok(added.ok);
  const id = added.value.id;
  const phoneClient = { ip: "10.0.0.42" };

  let directory = new StoreDirectory(store);
  const first = new BootstrapGate(WINDOW, Date.now, directory);
  assert.equal(first.claim(directory.phoneByMac(mac)!, phoneClient), true, "the first fetch gets the bootstrap");
  assert.equal(first.claim(directory.phoneByMac(mac)!, phoneClient), false, "a second fetch does not");
  assert.equal(directory.phoneByMac(mac)!.provisioning?.claimedBy?.ip, "10.0.0.42", "the claimant is recorded");

  // The agent restarts: a new gate, the store read back from disk.
  await store.close();
  store = await Store.open(dir);
  directory = new StoreDirectory(store);
  const afterRestart = new BootstrapGate(WINDOW, Date.now, directory);
  const phone = directory.phoneByMac(mac)!;
  assert.ok(phone.provisioning?.bootstrapClosedAt, "the closed bootstrap is on disk");
  assert.equal(phone.provisioning?.claimedBy?.ip, "10.0.0.42", "so is the claimant");
  assert.equal(afterRestart.isOpen(phone), false);
  assert.equal(afterRestart.claim(phone, phoneClient), false);
  assert.ok(afterRestart.rivalOf(phone, { ip: "10.0.0.66" }), "another address is a rival");
  assert.equal(afterRestart.rivalOf(phone, phoneClient), undefined, "the claimant is not");

  // A replaced phone: the installer rebootstraps it (ringedge phone rebootstrap does this).
  const before = store.getDevice(id)!;
  const r = store.rotateCredentials(id, { bootstrapOpenedAt: new Date().toISOString() });
  assert.ok(r.ok);
  const after = store.getDevice(id)!;
  assert.notEqual(after.password, before.password, "new SIP password");
  assert.notEqual(after.provisioning!.password, before.provisioning!.password, "new provisioning password");
  assert.notEqual(after.provisioning!.user, before.provisioning!.user);
  assert.notEqual(after.provisioning!.token, before.provisioning!.token, "new URL token");
  assert.equal(after.provisioning!.bootstrapClosedAt, undefined);
  assert.equal(after.provisioning!.claimedBy, undefined);
  assert.equal(afterRestart.claim(directory.phoneByMac(mac)!, { ip: "10.0.0.43" }), true, "the new phone gets its bootstrap");
  assert.equal(store.rotateCredentials("no-such-device", {}).ok, false, "an unknown device: an error, nothing changed");
  await store.close();
});

test("a phone that authenticated has no bootstrap any more, across restarts too", async () => {
  const dir = tempDir("ringedge-bootstrap-");
  const store = await Store.open(dir);
  const added = store.addDevice({ username: "1043", password: "phone-pass-1043", kind: "physical", mac: "805ec0100043" });
  assert.ok(added.ok);
  const directory = new StoreDirectory(store);
  const gate = new BootstrapGate(WINDOW, Date.now, directory);
  gate.noteAuthenticated(directory.phoneByMac("805ec0100043")!, { ip: "10.0.0.43" });
  const again = new BootstrapGate(WINDOW, Date.now, directory);
  assert.equal(again.isOpen(directory.phoneByMac("805ec0100043")!), false);
  assert.equal(directory.phoneByMac("805ec0100043")!.provisioning?.claimedBy?.ip, "10.0.0.43", "the first client to authenticate claims it");
  await store.close();
});

test("the window: open from add (or rebootstrap) for windowMs, then closed; the rival check lasts a window after the claim", () => {
  let now = Date.parse("2026-01-01T10:00:00Z");
  const trust: Record<string, unknown> = {};
  const dir = { setTrust: (_id: string, t: object) => void Object.assign(trust, t) };
  const gate = new BootstrapGate(WINDOW, () => now, dir);
  const phone = { deviceId: "d1", mac: "805ec0100044", extension: "44", displayName: "x", sipUsername: "44", sipPassword: "pw", createdAt: new Date(now).toISOString(), provisioning: { user: "u", password: "p", token: "t".repeat(32) } };
  now += WINDOW;
  assert.equal(gate.isOpen(phone), true, "open up to the end of the window");
  now += 1;
  assert.equal(gate.isOpen(phone), false, "closed after it");
  assert.equal(gate.claim(phone, { ip: "10.0.0.44" }), false);
  // Rebootstrapped: the window counts from bootstrapOpenedAt.
  const reopened = { ...phone, provisioning: { ...phone.provisioning, bootstrapOpenedAt: new Date(now).toISOString() } };
  assert.equal(gate.isOpen(reopened), true);
  assert.equal(gate.isOpen({ ...phone, createdAt: "garbage" }), false, "an unreadable time opens nothing");
  const claimed = { ...reopened, provisioning: { ...reopened.provisioning, bootstrapClosedAt: new Date(now).toISOString(), claimedBy: { ip: "10.0.0.44", at: new Date(now).toISOString() } } };
  now += WINDOW;
  assert.ok(gate.rivalOf(claimed, { ip: "10.0.0.45" }));
  now += 1;
  assert.equal(gate.rivalOf(claimed, { ip: "10.0.0.45" }), undefined, "after the window a moved phone keeps its credentials");
});

test("sameClient: the verified device certificate decides when both have one, else the address", () => {
  const fp = (c: string) => Array.from({ length: 32 }, () => c).join(":");
  assert.equal(sameClient({ ip: "10.0.0.1" }, { ip: "10.0.0.1" }), true);
  assert.equal(sameClient({ ip: "10.0.0.1" }, { ip: "10.0.0.2" }), false);
  assert.equal(sameClient({ ip: "10.0.0.1", cert: fp("AA") }, { ip: "10.0.0.2", cert: fp("AA") }), true, "same device certificate, new address");
  assert.equal(sameClient({ ip: "10.0.0.1", cert: fp("AA") }, { ip: "10.0.0.1", cert: fp("BB") }), false, "another certificate from the same address");
});
