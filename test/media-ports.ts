// Test helper: a range of UDP ports for the agent's media plane, free now on loopback, starting
// at an even port (RTP even, RTCP odd: RFC 3550 §11; bind(0) hands out odd ports on Linux, so a
// port from the OS does not do).
import dgram from "node:dgram";

/** Whether a UDP port can be bound on 127.0.0.1 now. */
export function udpPortFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = dgram.createSocket("udp4");
    s.once("error", () => resolve(false));
    s.bind(port, "127.0.0.1", () => s.close(() => resolve(true)));
  });
}

/** `count` consecutive free ports from an even one. */
export async function freeMediaPorts(count = 10): Promise<{ min: number; max: number }> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const min = 40000 + 2 * Math.floor(Math.random() * 10000);
    let ok = true;
    for (let p = min; p < min + count && ok; p++) ok = await udpPortFree(p);
    if (ok) return { min, max: min + count - 1 };
  }
  throw new Error("no free media port range");
}

/** Ports of [min, max] that something holds now. */
export async function busyPorts(min: number, max: number): Promise<number[]> {
  const busy: number[] = [];
  for (let p = min; p <= max; p++) if (!(await udpPortFree(p))) busy.push(p);
  return busy;
}

/** Six ports from an even one, all free now (one RTP/RTCP pair and room to spare). */
export function freeMediaRange(): Promise<{ min: number; max: number }> {
  return freeMediaPorts(6);
}
