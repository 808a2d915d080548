// Addresses we advertise in Via / Record-Route: never a wildcard.
import { test } from "node:test";
import assert from "node:assert/strict";
import { advertisedAddress, makeAdvertiser, primaryAddress } from "../../agent/sip/advertise.ts";
import type { Flow } from "../../agent/sip/types.ts";

const flow = (local: string, remote: string): Flow => ({ transport: "udp", localAddress: local, localPort: 5060, remoteAddress: remote, remotePort: 5062 });

test("a concrete local address is advertised as is", () => {
  assert.equal(advertisedAddress(flow("192.168.1.10", "192.168.1.20"), ""), "192.168.1.10");
  assert.equal(makeAdvertiser("")(flow("::1", "::1")), "[::1]:5060");
});

test("a wildcard socket advertises the configured address of the right family", () => {
  assert.equal(advertisedAddress(flow("0.0.0.0", "10.0.0.7"), "10.0.0.1"), "10.0.0.1");
  assert.equal(makeAdvertiser("10.0.0.1")(flow("0.0.0.0", "10.0.0.7")), "10.0.0.1:5060");
  // An IPv4 setting is not used for an IPv6 flow.
  assert.notEqual(advertisedAddress(flow("::", "2001:db8::7"), "10.0.0.1"), "10.0.0.1");
});

test("a wildcard socket answering a loopback peer advertises loopback", () => {
  assert.equal(advertisedAddress(flow("0.0.0.0", "127.0.0.9"), ""), "127.0.0.1");
  assert.equal(advertisedAddress(flow("::", "::1"), ""), "::1");
});

test("without a setting, the first non-internal address of the family, else loopback", () => {
  const ifaces = {
    lo: [{ address: "127.0.0.1", family: "IPv4", internal: true }],
    eth0: [
      { address: "fe80::1", family: "IPv6", internal: false },
      { address: "192.0.2.10", family: "IPv4", internal: false },
      { address: "2001:db8::10", family: "IPv6", internal: false },
    ],
  } as unknown as ReturnType<typeof import("node:os").networkInterfaces>;
  assert.equal(primaryAddress(4, ifaces), "192.0.2.10");
  assert.equal(primaryAddress(6, ifaces), "2001:db8::10");
  assert.equal(primaryAddress(4, {}), "127.0.0.1");
  assert.equal(primaryAddress(6, {}), "::1");
});

test("a provisioning URL's host: the bound address, else the configured one, else a real interface; never a wildcard", async () => {
  const { advertisedHost } = await import("../../agent/sip/advertise.ts");
  const ifaces = {
    lo: [{ address: "127.0.0.1", netmask: "255.0.0.0", family: "IPv4", mac: "00:00:00:00:00:00", internal: true, cidr: "127.0.0.1/8" }],
    eth0: [{ address: "192.168.5.2", netmask: "255.255.255.0", family: "IPv4", mac: "02:00:00:00:00:01", internal: false, cidr: "192.168.5.2/24" }],
  } as unknown as ReturnType<typeof import("node:os").networkInterfaces>;
  assert.equal(advertisedHost("10.1.1.1", "192.0.2.10", ifaces), "10.1.1.1", "a concrete bound address is what phones reach");
  assert.equal(advertisedHost("0.0.0.0", "192.0.2.10", ifaces), "192.0.2.10");
  assert.equal(advertisedHost("0.0.0.0", "", ifaces), "192.168.5.2");
  assert.equal(advertisedHost("", "", ifaces), "192.168.5.2");
  assert.equal(advertisedHost("0.0.0.0", "2001:db8::1", ifaces), "192.168.5.2", "an IPv6 setting is not an IPv4 URL host");
  assert.equal(advertisedHost("::", "192.0.2.10", ifaces), "192.0.2.10", "a dual-stack socket takes the configured IPv4 address");
  assert.equal(advertisedHost("0.0.0.0", "", { lo: ifaces.lo }), "127.0.0.1", "no other interface: loopback, still not a wildcard");
});

test("the provisioning base URL phones are given (phone show, PnP, status): never the wildcard the server is bound to", async () => {
  const { phoneBaseUrl } = await import("../../provisioning/service.ts");
  const ifaces = {
    eth0: [{ address: "192.168.5.2", netmask: "255.255.255.0", family: "IPv4", mac: "02:00:00:00:00:01", internal: false, cidr: "192.168.5.2/24" }],
  } as unknown as ReturnType<typeof import("node:os").networkInterfaces>;
  assert.equal(phoneBaseUrl("http", "10.1.1.1", 8080, "192.0.2.10", "", ifaces), "http://10.1.1.1:8080", "bound to an address: that one");
  assert.equal(phoneBaseUrl("http", "0.0.0.0", 8080, "192.0.2.10", "", ifaces), "http://192.0.2.10:8080", "the advertised address");
  assert.equal(phoneBaseUrl("http", "0.0.0.0", 80, "", "", ifaces), "http://192.168.5.2", "else a real interface");
  // PnP: the interface the phone multicast on, unless that is itself a wildcard.
  assert.equal(phoneBaseUrl("http", "0.0.0.0", 8080, "192.0.2.10", "192.168.5.2", ifaces), "http://192.168.5.2:8080");
  assert.equal(phoneBaseUrl("http", "0.0.0.0", 8080, "192.0.2.10", "0.0.0.0", ifaces), "http://192.0.2.10:8080");
  assert.equal(phoneBaseUrl("https", "::", 443, "2001:db8::5", "", ifaces), "https://[2001:db8::5]");
});
