// A phone's unauthenticated bootstrap (it carries the phone's provisioning credentials) is
// handed out once, and a restart of the agent does not open it again.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { Store } from "../../agent/store/store.ts";
import { StoreDirectory } from "../../provisioning/store-directory.ts";
import { BootstrapGate } from "../../provisioning/server.ts";
import { tempDir } from "../tmpdir.ts";

test("bootstrap used once survives a restart (new gate, reopened store); the installer can reopen it", async () => {
  const dir = tempDir("ringedge-bootstrap-");
  const mac = "805ec0100042";
  let store = await Store.open(dir);
  const added = store.addDevice({ username: "1042", password: "phone-pass-1042", kind: "physical", mac, model: "T46U" });
  assert.ok(added.ok);
  const id = added.value.id;
  const now = () => Date.now();
  const gateFor = (d: StoreDirectory) => new BootstrapGate(24 * 3600_000, now, (dev, at) => d.setBootstrapClosed(dev, at));

  let directory = new StoreDirectory(store);
  const first = gateFor(directory);
  assert.equal(first.claim(directory.phoneByMac(mac)!), true, "the first fetch gets the bootstrap");
  assert.equal(first.claim(directory.phoneByMac(mac)!), false, "a second fetch does not");

  // The agent restarts: a new gate, the store read back from disk.
  await store.close();
  store = await Store.open(dir);
  directory = new StoreDirectory(store);
  const afterRestart = gateFor(directory);
  const phone = directory.phoneByMac(mac)!;
  assert.ok(phone.provisioning?.bootstrapClosedAt, "the closed bootstrap is on disk");
  assert.equal(afterRestart.isOpen(phone), false);
  assert.equal(afterRestart.claim(phone), false);

  // A replaced phone: the installer re-opens it (ringedge phone rebootstrap).
  afterRestart.reopen(id);
  assert.equal(directory.phoneByMac(mac)!.provisioning?.bootstrapClosedAt, undefined);
  assert.equal(afterRestart.claim(directory.phoneByMac(mac)!), true);
  await store.close();
});

test("a phone that authenticated has no bootstrap any more, across restarts too", async () => {
  const dir = tempDir("ringedge-bootstrap-");
  const store = await Store.open(dir);
  const added = store.addDevice({ username: "1043", password: "phone-pass-1043", kind: "physical", mac: "805ec0100043" });
  assert.ok(added.ok);
  const directory = new StoreDirectory(store);
  const gate = new BootstrapGate(24 * 3600_000, Date.now, (dev, at) => directory.setBootstrapClosed(dev, at));
  gate.noteAuthenticated(added.value.id);
  const again = new BootstrapGate(24 * 3600_000, Date.now);
  assert.equal(again.isOpen(directory.phoneByMac("805ec0100043")!), false);
  await store.close();
});
