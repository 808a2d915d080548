// Which address of ours goes into Via, Record-Route and Contact for a flow. A socket bound
// to a wildcard (0.0.0.0, ::) cannot tell which local address a UDP datagram reached
// (Node has no IP_PKTINFO), and "0.0.0.0" in a Record-Route would send in-dialog requests
// nowhere: such flows advertise the configured address, else this host's first
// non-loopback address of the same family.
import net from "node:net";
import os from "node:os";
import type { Flow } from "./types.ts";
import { hostPort } from "./requests.ts";

export function isWildcard(address: string): boolean {
  return address === "" || address === "0.0.0.0" || address === "::";
}

/** This host's first non-internal address of the family, or the loopback one. */
export function primaryAddress(family: 4 | 6, interfaces = os.networkInterfaces()): string {
  for (const list of Object.values(interfaces)) {
    for (const a of list ?? []) {
      if (!a.internal && (a.family === (family === 4 ? "IPv4" : "IPv6")) && !(family === 6 && a.address.startsWith("fe80"))) return a.address;
    }
  }
  return family === 4 ? "127.0.0.1" : "::1";
}

/**
 * The address to give out for a socket bound to `address` (a provisioning URL, PnP's answer):
 * itself, or on a wildcard the configured address (sipAdvertise) when of the same family, else
 * this host's first non-loopback one. Never 0.0.0.0 or ::, which a phone cannot reach.
 */
export function advertisedHost(address: string, configured: string, interfaces = os.networkInterfaces()): string {
  if (!isWildcard(address)) return address;
  const family: 4 | 6 = address === "::" ? 6 : 4;
  if (configured !== "" && (net.isIPv6(configured) ? 6 : 4) === family) return configured;
  // A dual-stack "::" socket also takes IPv4: prefer the configured IPv4 address then.
  if (configured !== "" && family === 6) return configured;
  return primaryAddress(family, interfaces);
}

/** Local address (no port) to advertise for a flow. */
export function advertisedAddress(flow: Flow, configured: string): string {
  if (!isWildcard(flow.localAddress)) return flow.localAddress;
  const family: 4 | 6 = flow.localAddress === "::" || (flow.remoteAddress.indexOf(":") >= 0 && net.isIPv6(flow.remoteAddress)) ? 6 : 4;
  if (configured !== "" && (net.isIPv6(configured) ? 6 : 4) === family) return configured;
  // A loopback peer is answered on loopback: the address it can surely reach.
  if (flow.remoteAddress.startsWith("127.")) return "127.0.0.1";
  if (flow.remoteAddress === "::1") return "::1";
  return primaryAddress(family);
}

/** host:port for Via / Record-Route. */
export function makeAdvertiser(configured: string): (flow: Flow) => string {
  return (flow) => hostPort(advertisedAddress(flow, configured), flow.localPort);
}
