import { test } from "node:test";
import assert from "node:assert/strict";
import { SystemdNotifier, mergeFields, pingIntervalMs, readNotifyEnv, statusLine } from "../../agent/observe/notify.ts";
import { createLogger } from "../../agent/log.ts";

const quiet = createLogger("silent");

test("readNotifyEnv: inert without NOTIFY_SOCKET; watchdog only for this PID; bad values switch it off", () => {
  assert.deepEqual(readNotifyEnv({}, 42), { socket: undefined, watchdogUsec: undefined });
  assert.deepEqual(readNotifyEnv({ WATCHDOG_USEC: "30000000" }, 42), { socket: undefined, watchdogUsec: undefined });
  assert.deepEqual(readNotifyEnv({ NOTIFY_SOCKET: "/run/systemd/notify", WATCHDOG_USEC: "30000000" }, 42), { socket: "/run/systemd/notify", watchdogUsec: 30_000_000 });
  assert.equal(readNotifyEnv({ NOTIFY_SOCKET: "/s", WATCHDOG_USEC: "30000000", WATCHDOG_PID: "7" }, 42).watchdogUsec, undefined);
  assert.equal(readNotifyEnv({ NOTIFY_SOCKET: "/s", WATCHDOG_USEC: "30000000", WATCHDOG_PID: "42" }, 42).watchdogUsec, 30_000_000);
  for (const bad of ["", "0", "-5", "1e6", "abc", "99999999999999999999"]) assert.equal(readNotifyEnv({ NOTIFY_SOCKET: "/s", WATCHDOG_USEC: bad }, 1).watchdogUsec, undefined, bad);
  // A socket path longer than sun_path (108 bytes) cannot be used.
  assert.equal(readNotifyEnv({ NOTIFY_SOCKET: "/" + "x".repeat(200) }, 1).socket, undefined);
});

test("ping interval is half the watchdog interval, never below 100 ms; status line", () => {
  assert.equal(pingIntervalMs(30_000_000), 15_000);
  assert.equal(pingIntervalMs(1000), 100);
  assert.equal(statusLine({ calls: 1, phonesOnline: 3, phonesTotal: 5, link: "up" }), "1 call, 3/5 phones online, console up");
  assert.equal(statusLine({ calls: 0, phonesOnline: 0, phonesTotal: 0, link: "off" }), "0 calls, 0/0 phones online, console off");
});

test("mergeFields keeps every variable once, the newer value winning", () => {
  assert.deepEqual(mergeFields(["READY=1", "STATUS=a"], ["WATCHDOG=1", "STATUS=b"]).sort(), ["READY=1", "STATUS=b", "WATCHDOG=1"]);
});

test("notifier: one message in flight, later ones coalesced without losing READY=1; inert outside systemd", async () => {
  const sent: string[][] = [];
  let release: (() => void) | undefined;
  const send = (_s: string, f: string[]): Promise<boolean> => {
    sent.push(f);
    return new Promise((r) => (release = () => r(true)));
  };
  let calls = 0;
  const n = new SystemdNotifier({ env: { socket: "/x", watchdogUsec: undefined }, status: () => ({ calls: calls++, phonesOnline: 0, phonesTotal: 0, link: "off" }), log: quiet, send });
  n.ready();
  n.ping();
  n.ping();
  assert.equal(sent.length, 1);
  assert.ok(sent[0]!.includes("READY=1"));
  release!();
  await new Promise((r) => setImmediate(r));
  assert.equal(sent.length, 2);
  assert.deepEqual(sent[1]!.sort(), ["STATUS=2 calls, 0/0 phones online, console off", "WATCHDOG=1"]);
  release!();
  const off = new SystemdNotifier({ env: { socket: undefined, watchdogUsec: undefined }, status: () => ({ calls: 0, phonesOnline: 0, phonesTotal: 0, link: "off" }), log: quiet, send });
  off.ready();
  off.ping();
  await off.stopping();
  assert.equal(sent.length, 2);
});
