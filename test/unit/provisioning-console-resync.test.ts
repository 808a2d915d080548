// cmd/resync from the console: arguments checked before anything is sent.
import { test } from "node:test";
import assert from "node:assert/strict";
import { consoleResyncHandler, type ResyncResult } from "../../provisioning/resync.ts";

const devices = [
  { id: "dev-1001", username: "1001", mac: "805ec0100001" },
  { id: "dev-1002", username: "1002", mac: "805ec0100002" },
  { id: "soft-1", username: "anna-soft" },
];

function setup() {
  const calls: Array<[readonly string[], boolean]> = [];
  const handler = consoleResyncHandler(
    async (ids, reboot) => {
      calls.push([ids, reboot]);
      return ids.map((deviceId): ResyncResult => ({ deviceId, username: deviceId, ok: true }));
    },
    () => devices,
  );
  return { calls, handler };
}

test("no devices named: every phone with a MAC, no reboot", async () => {
  const { calls, handler } = setup();
  const r = await handler({});
  assert.deepEqual(calls, [[["dev-1001", "dev-1002"], false]]);
  assert.equal(r.results.length, 2);
});

test("devices by id, username or MAC in any notation; reboot passed on", async () => {
  const { calls, handler } = setup();
  await handler({ devices: ["dev-1001", "1002", "80:5E:C0:10:00:01"], reboot: true });
  assert.deepEqual(calls, [[["dev-1001", "dev-1002", "dev-1001"], true]]);
});

test("hostile or wrong arguments are refused and nothing is sent", async () => {
  const { calls, handler } = setup();
  await assert.rejects(handler({ devices: "dev-1001" }), /list of device ids/);
  await assert.rejects(handler({ devices: [42] }), /list of device ids/);
  await assert.rejects(handler({ devices: ["x".repeat(65)] }), /list of device ids/);
  await assert.rejects(handler({ reboot: "yes" }), /reboot must be true or false/);
  await assert.rejects(handler({ devices: ["dev-1001", "nope"] }), /no device 'nope'/);
  assert.equal(calls.length, 0);
});
